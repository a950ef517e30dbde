/* plot_internal.h - what the plots share with the text and tick layout of plot_text.c. */
#ifndef DDPM_REPORT_PLOT_INTERNAL_H
#define DDPM_REPORT_PLOT_INTERNAL_H

#include "core/internal.h"

#include <cairo.h>

#define FONT_FACE "DejaVu Sans"

typedef struct {
    double r, g, b;
} rgb;

static inline void set_rgb(cairo_t *cr, rgb c, double alpha) {
    cairo_set_source_rgba(cr, c.r, c.g, c.b, alpha);
}

static inline double cap_height(double size) { return 0.73 * size; }

/* Horizontal alignment of plot_draw_text. */
enum { AL_LEFT, AL_CENTER, AL_RIGHT };

#define MAX_TICKS 64
#define MAX_MINOR 128

typedef struct {
    int n;
    double v[MAX_TICKS];
    char label[MAX_TICKS][32];
    int n_minor;
    double minor[MAX_MINOR];
    int exp10; /* labels are v / 10^exp10; a "x10^k" note goes by the axis when non-zero */
} ticks;

double plot_text_width(cairo_t *cr, const char *text, double size, int bold);
/* Draws text with its baseline at y, aligned on x. */
void plot_draw_text(cairo_t *cr, const char *text, double size, int bold, double x, double y,
                    int align, rgb c);
/* The largest size <= size at which text fits in max_w pixels (at least 7). */
double plot_fit_size(cairo_t *cr, const char *text, double size, int bold, double max_w);
/* "x10^{k}" (with a real times and minus sign) for a ticks' shared factor. */
void plot_factor_text(const ticks *t, char *buf, size_t cap);
double plot_max_label_width(cairo_t *cr, const ticks *t, double font);
/* Ticks for [lo, hi] over len_px pixels about every spacing_px pixels: widened (1-2-5) until
 * the labels keep apart, narrowed while fewer than 3 ticks show and narrower labels still fit. */
void plot_choose_linear(cairo_t *cr, double lo, double hi, double len_px, double spacing_px,
                        int horizontal, double font, ticks *t);
/* Ticks for a log10 axis over [lo, hi] (both > 0). */
void plot_choose_log(cairo_t *cr, double lo, double hi, double len_px, double font, ticks *t);

#endif

/* plot_text.c - the plots' text and axis ticks: runs of text with sub- and superscripts set in
 * DejaVu Sans through cairo, and 1-2-5 / log tick choices whose labels never collide. */
#include "report/plot_internal.h"

#include <ctype.h>
#include <math.h>

/* ------------------------------------------------------------------------------------------ */
/* Text with sub- and superscripts: "_{...}", "_" + digits or one letter, and "^{...}"          */
/* ------------------------------------------------------------------------------------------ */

/* 1 if a subscript starts at p, 2 if a superscript does, else 0. */
static int script_at(const char *p) {
    if (p[0] == '^') return p[1] == '{' && strchr(p + 2, '}') ? 2 : 0;
    if (p[0] != '_') return 0;
    if (p[1] == '{') return strchr(p + 2, '}') != NULL;
    if (isdigit((unsigned char)p[1])) return 1;
    /* a single letter: "x_t" but not "model_final" */
    return isalpha((unsigned char)p[1]) && !isalnum((unsigned char)p[2]);
}

/* The next run of text; *kind is 0 (normal), 1 (subscript) or 2 (superscript). Returns its
 * length and advances *pp; 0 at the end (or for an empty "_{}", which still advances). */
static size_t next_span(const char **pp, const char **start, int *kind) {
    const char *p = *pp;
    if (!*p) return 0;
    int k = script_at(p);
    *kind = k;
    if (k) {
        if (p[1] == '{') {
            const char *e = strchr(p + 2, '}');
            *start = p + 2;
            *pp = e + 1;
            return (size_t)(e - (p + 2));
        }
        const char *e = p + 2;
        while (isdigit((unsigned char)p[1]) && isdigit((unsigned char)*e)) e++;
        *start = p + 1;
        *pp = e;
        return (size_t)(e - (p + 1));
    }
    const char *e = p + 1;
    while (*e && !script_at(e)) e++;
    *start = p;
    *pp = e;
    return (size_t)(e - p);
}

static void set_font(cairo_t *cr, double size, int bold) {
    cairo_select_font_face(cr, FONT_FACE, CAIRO_FONT_SLANT_NORMAL,
                           bold ? CAIRO_FONT_WEIGHT_BOLD : CAIRO_FONT_WEIGHT_NORMAL);
    cairo_set_font_size(cr, size);
}

/* Walks the spans of text; draws them from (x, y) if draw, returns the total advance. */
static double text_run(cairo_t *cr, const char *text, double size, int bold, double x, double y,
                       int draw) {
    const char *p = text ? text : "", *s = p;
    int kind = 0;
    size_t len;
    double adv = 0;
    char buf[512];
    while ((len = next_span(&p, &s, &kind)) > 0 || *p) {
        if (len == 0) continue; /* "_{}" */
        if (len >= sizeof buf) len = sizeof buf - 1;
        memcpy(buf, s, len);
        buf[len] = 0;
        double fs = kind ? size * 0.72 : size;
        double dy = kind == 1 ? size * 0.24 : kind == 2 ? -size * 0.42 : 0;
        set_font(cr, fs, bold);
        cairo_text_extents_t te;
        cairo_text_extents(cr, buf, &te);
        if (draw) {
            cairo_move_to(cr, x + adv, y + dy);
            cairo_show_text(cr, buf);
        }
        adv += te.x_advance;
    }
    return adv;
}

double plot_text_width(cairo_t *cr, const char *text, double size, int bold) {
    return text_run(cr, text, size, bold, 0, 0, 0);
}


/* Draws text with its baseline at y, aligned on x. */
void plot_draw_text(cairo_t *cr, const char *text, double size, int bold, double x, double y,
                    int align, rgb c) {
    double w = plot_text_width(cr, text, size, bold);
    double x0 = align == AL_LEFT ? x : align == AL_CENTER ? x - w / 2 : x - w;
    set_rgb(cr, c, 1.0);
    text_run(cr, text, size, bold, x0, y, 1);
}

/* The largest size <= size at which text fits in max_w pixels (at least 7). */
double plot_fit_size(cairo_t *cr, const char *text, double size, int bold, double max_w) {
    double w = plot_text_width(cr, text, size, bold);
    if (w <= max_w || w <= 0) return size;
    double s = size * max_w / w;
    return s < 7 ? 7 : s;
}

/* Height of digits / capitals above the baseline (DejaVu Sans: 0.73 em). */

/* ------------------------------------------------------------------------------------------ */
/* Ticks                                                                                        */
/* ------------------------------------------------------------------------------------------ */


/* The smallest of 1, 2, 5 x 10^k that is >= raw. */
static double nice_at_least(double raw) {
    double e = floor(log10(raw));
    double m = pow(10.0, e), f = raw / m;
    return (f <= 1.0 + 1e-9 ? 1.0 : f <= 2.0 + 1e-9 ? 2.0 : f <= 5.0 + 1e-9 ? 5.0 : 10.0) * m;
}

/* The nice number after step: 1 -> 2 -> 5 -> 10. */
static double nice_next(double step) {
    double e = floor(log10(step) + 1e-9);
    double m = pow(10.0, e), f = step / m;
    return (f < 1.5 ? 2.0 : f < 3.5 ? 5.0 : 10.0) * m;
}

/* Tick labels use a real minus sign (U+2212), as typeset plots do. */
static void minus_sign(char *label, size_t cap) {
    if (label[0] != '-') return;
    size_t len = strlen(label);
    if (len + 2 >= cap) return;
    memmove(label + 3, label + 1, len); /* moves the NUL too */
    label[0] = (char)0xE2;
    label[1] = (char)0x88;
    label[2] = (char)0x92;
}

/* Ticks at the multiples of step in [lo, hi]. Labels get the decimals the step needs; when the
 * values are large (>= 1e6) or the step small (< 1e-3) they are written as v / 10^k with the
 * factor 10^k shown once by the axis (as matplotlib does). */
static void linear_ticks(double lo, double hi, double step, ticks *t) {
    t->n = 0;
    t->n_minor = 0;
    t->exp10 = 0;
    double k0 = ceil(lo / step - 1e-9), k1 = floor(hi / step + 1e-9);
    for (double k = k0; k <= k1 && t->n < MAX_TICKS; k++) t->v[t->n++] = k * step;
    double amax = 0;
    for (int i = 0; i < t->n; i++) {
        if (fabs(t->v[i]) < step * 1e-6) t->v[i] = 0.0;
        amax = fmax(amax, fabs(t->v[i]));
    }
    int e = amax > 0 ? (int)floor(log10(amax) + 1e-9) : 0;
    if (amax >= 1e6 || (amax > 0 && step < 1e-3)) t->exp10 = e;
    double scale = pow(10.0, -t->exp10);
    int dec = (int)-floor(log10(step * scale) + 1e-9);
    dec = dec < 0 ? 0 : dec > 9 ? 9 : dec;
    for (int i = 0; i < t->n; i++) {
        snprintf(t->label[i], sizeof t->label[i], "%.*f", dec, t->v[i] * scale);
        minus_sign(t->label[i], sizeof t->label[i]);
    }
}

/* "x10^{k}" (with a real times and minus sign) for a ticks' shared factor. */
void plot_factor_text(const ticks *t, char *buf, size_t cap) {
    snprintf(buf, cap,
             "\xC3\x97"
             "10^{%s%d}",
             t->exp10 < 0 ? "\xE2\x88\x92" : "", abs(t->exp10));
}

double plot_max_label_width(cairo_t *cr, const ticks *t, double font) {
    double w = 0;
    for (int i = 0; i < t->n; i++) w = fmax(w, plot_text_width(cr, t->label[i], font, 0));
    return w;
}

/* The nice number before step: 1 -> 0.5 -> 0.2 -> 0.1. */
static double nice_prev(double step) {
    double e = floor(log10(step) + 1e-9);
    double m = pow(10.0, e), f = step / m;
    return (f < 1.5 ? 0.5 : f < 3.5 ? 1.0 : 2.0) * m;
}

/* Whether neighbouring tick labels keep apart: horizontal labels by their width plus a gap,
 * vertical ones by twice the font size. */
static int ticks_fit(cairo_t *cr, const ticks *t, double step, double lo, double hi, double len_px,
                     int horizontal, double font) {
    double px = step / (hi - lo) * len_px;
    double need = horizontal ? plot_max_label_width(cr, t, font) + 0.9 * font : 2.0 * font;
    return px >= need;
}

/* Ticks for [lo, hi] over len_px pixels about every spacing_px pixels: widened (1-2-5) until
 * the labels keep apart, narrowed while fewer than 3 ticks show and narrower labels still fit. */
void plot_choose_linear(cairo_t *cr, double lo, double hi, double len_px, double spacing_px,
                        int horizontal, double font, ticks *t) {
    double target = fmax(1.0, len_px / spacing_px);
    double step = nice_at_least((hi - lo) / target);
    for (int it = 0; it < 30; it++) {
        linear_ticks(lo, hi, step, t);
        if (ticks_fit(cr, t, step, lo, hi, len_px, horizontal, font) || t->n <= 2) break;
        step = nice_next(step);
    }
    for (int it = 0; it < 4 && t->n < 3; it++) {
        ticks finer;
        double s2 = nice_prev(step);
        linear_ticks(lo, hi, s2, &finer);
        if (!ticks_fit(cr, &finer, s2, lo, hi, len_px, horizontal, font)) break;
        *t = finer;
        step = s2;
    }
}

/* Ticks for a log10 axis over [lo, hi] (both > 0). */
void plot_choose_log(cairo_t *cr, double lo, double hi, double len_px, double font, ticks *t) {
    t->n = 0;
    t->n_minor = 0;
    t->exp10 = 0;
    double llo = log10(lo), lhi = log10(hi);
    int e0 = (int)ceil(llo - 1e-9), e1 = (int)floor(lhi + 1e-9);
    int ndec = e1 - e0 + 1;
    int maxt = (int)fmax(2.0, len_px / (2.2 * font));
    if (ndec >= 2) {
        int every = (ndec + maxt - 1) / maxt;
        for (int e = e0; e <= e1 && t->n < MAX_TICKS; e++)
            if ((e - e0) % every == 0) t->v[t->n++] = pow(10.0, e);
        if (every == 1)
            for (int e = e0 - 1; e <= e1; e++)
                for (int m = 2; m <= 9 && t->n_minor < MAX_MINOR; m++) {
                    double v = m * pow(10.0, e);
                    if (v >= lo && v <= hi) t->minor[t->n_minor++] = v;
                }
    } else {
        static const int mant[3] = {1, 2, 5};
        for (int e = e0 - 1; e <= e1; e++)
            for (int k = 0; k < 3 && t->n < MAX_TICKS; k++) {
                double v = mant[k] * pow(10.0, e);
                if (v >= lo * (1 - 1e-9) && v <= hi * (1 + 1e-9)) t->v[t->n++] = v;
            }
        if (t->n < 2) { /* a narrow range: linear steps, placed on the log scale */
            plot_choose_linear(cr, lo, hi, len_px, 3.0 * font, 0, font, t);
            return;
        }
        for (int e = e0 - 1; e <= e1; e++)
            for (int m = 2; m <= 9 && t->n_minor < MAX_MINOR; m++) {
                double v = m * pow(10.0, e);
                if (m != 2 && m != 5 && v >= lo && v <= hi) t->minor[t->n_minor++] = v;
            }
    }
    /* Plain numbers from 0.001 to 10000, powers of ten ("10^{-5}") beyond. */
    int plain = 1;
    for (int i = 0; i < t->n; i++)
        if (t->v[i] < 1e-3 * (1 - 1e-9) || t->v[i] > 1e4 * (1 + 1e-9)) plain = 0;
    for (int i = 0; i < t->n; i++) {
        double l = log10(t->v[i]);
        int e = (int)lround(l);
        if (plain || fabs(l - e) > 1e-6) {
            snprintf(t->label[i], sizeof t->label[i], "%.4g", t->v[i]);
        } else {
            snprintf(t->label[i], sizeof t->label[i], "10^{%s%d}", e < 0 ? "\xE2\x88\x92" : "",
                     abs(e));
        }
    }
}

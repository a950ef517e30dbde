/* plot.c - scientific plots of point sets and curves with cairo, written as PNG.
 *
 * A small matplotlib-like layer: a frame (axes rectangle + data limits, optionally log y), "nice"
 * ticks in 1-2-5 steps that widen until their labels do not collide, grid lines, spines with
 * outward ticks, axis labels, titles with simple subscripts, and a legend placed in the corner
 * where it covers the fewest data. Everything is drawn on a white ARGB32 image surface, encoded
 * to PNG in memory and written atomically. The text with sub- and superscripts and the tick
 * choices are in plot_text.c. */
#include "report/plot_internal.h"

#include <cairo.h>
#include <ctype.h>
#include <math.h>

#ifndef M_PI
#define M_PI 3.14159265358979323846
#endif

#include <fontconfig/fontconfig.h>

/* cairo's toy font faces keep fontconfig patterns in process-wide caches that are never freed
 * (valgrind and LeakSanitizer report them as lost). Resetting cairo's static data and then
 * fontconfig releases them; programs call this once, after their last plot. */
void ddpm_release_caches(void) {
    cairo_debug_reset_static_data();
    FcFini();
}

#define MAX_SIDE 16384


static const rgb C_TEXT = {0.10, 0.10, 0.10};
static const rgb C_SPINE = {0.20, 0.20, 0.20};
static const rgb C_GRID = {0.88, 0.88, 0.88};
static const rgb C_SET_A = {0.839, 0.153, 0.157}; /* matplotlib tab:red (the tutorial's red) */
static const rgb C_SET_B = {0.122, 0.467, 0.706}; /* tab:blue */
static const rgb TAB10[10] = {{0.122, 0.467, 0.706}, {1.000, 0.498, 0.055}, {0.173, 0.627, 0.173},
                              {0.839, 0.153, 0.157}, {0.580, 0.404, 0.741}, {0.549, 0.337, 0.294},
                              {0.890, 0.467, 0.761}, {0.498, 0.498, 0.498}, {0.737, 0.741, 0.133},
                              {0.090, 0.745, 0.812}};

/* ------------------------------------------------------------------------------------------ */
/* Frames: an axes rectangle with data limits                                                   */
/* ------------------------------------------------------------------------------------------ */

typedef struct {
    double x0, y0, w, h;           /* pixels */
    double xmin, xmax, ymin, ymax; /* data limits (log10 of them on a log y axis) */
    int log_y;
} frame;

static double fx(const frame *f, double v) {
    return f->x0 + (v - f->xmin) / (f->xmax - f->xmin) * f->w;
}
static double fy(const frame *f, double v) {
    if (f->log_y) v = log10(v);
    return f->y0 + f->h - (v - f->ymin) / (f->ymax - f->ymin) * f->h;
}

/* Pixel centre of a 1-pixel line at coordinate v (crisp lines). */
static double crisp(double v) { return floor(v) + 0.5; }

#define TICK_LEN 5.0
#define TICK_FONT 12.0
#define LABEL_FONT 14.0
#define TITLE_FONT 17.0

static void frame_background(cairo_t *cr, const frame *f, const ticks *xt, const ticks *yt) {
    cairo_set_source_rgb(cr, 1, 1, 1);
    cairo_rectangle(cr, f->x0, f->y0, f->w, f->h);
    cairo_fill(cr);
    set_rgb(cr, C_GRID, 1.0);
    cairo_set_line_width(cr, 1.0);
    for (int i = 0; i < xt->n; i++) {
        double x = crisp(fx(f, xt->v[i]));
        cairo_move_to(cr, x, f->y0);
        cairo_line_to(cr, x, f->y0 + f->h);
    }
    for (int i = 0; i < yt->n; i++) {
        double y = crisp(fy(f, yt->v[i]));
        cairo_move_to(cr, f->x0, y);
        cairo_line_to(cr, f->x0 + f->w, y);
    }
    cairo_stroke(cr);
}

/* Spines, outward ticks and (optionally) their labels. */
static void frame_axes(cairo_t *cr, const frame *f, const ticks *xt, const ticks *yt, int label_x,
                       int label_y) {
    set_rgb(cr, C_SPINE, 1.0);
    cairo_set_line_width(cr, 1.0);
    double l = crisp(f->x0), r = crisp(f->x0 + f->w), t = crisp(f->y0), b = crisp(f->y0 + f->h);
    cairo_rectangle(cr, l, t, r - l, b - t);
    cairo_stroke(cr);
    for (int i = 0; i < xt->n; i++) {
        double x = crisp(fx(f, xt->v[i]));
        cairo_move_to(cr, x, b);
        cairo_line_to(cr, x, b + TICK_LEN);
    }
    for (int i = 0; i < yt->n; i++) {
        double y = crisp(fy(f, yt->v[i]));
        cairo_move_to(cr, l, y);
        cairo_line_to(cr, l - TICK_LEN, y);
    }
    cairo_stroke(cr);
    if (yt->n_minor) {
        for (int i = 0; i < yt->n_minor; i++) {
            double y = crisp(fy(f, yt->minor[i]));
            cairo_move_to(cr, l, y);
            cairo_line_to(cr, l - TICK_LEN * 0.6, y);
        }
        cairo_stroke(cr);
    }
    if (label_x)
        for (int i = 0; i < xt->n; i++)
            plot_draw_text(cr, xt->label[i], TICK_FONT, 0, fx(f, xt->v[i]),
                      b + TICK_LEN + 4 + cap_height(TICK_FONT), AL_CENTER, C_TEXT);
    if (label_y)
        for (int i = 0; i < yt->n; i++)
            plot_draw_text(cr, yt->label[i], TICK_FONT, 0, l - TICK_LEN - 4,
                      fy(f, yt->v[i]) + cap_height(TICK_FONT) / 2, AL_RIGHT, C_TEXT);
    char factor[48];
    if (label_x && xt->exp10) {
        plot_factor_text(xt, factor, sizeof factor);
        plot_draw_text(cr, factor, TICK_FONT, 0, r,
                  b + TICK_LEN + 4 + cap_height(TICK_FONT) + TICK_FONT * 1.5, AL_RIGHT, C_TEXT);
    }
    if (label_y && yt->exp10) {
        plot_factor_text(yt, factor, sizeof factor);
        plot_draw_text(cr, factor, TICK_FONT, 0, l, t - 6, AL_LEFT, C_TEXT);
    }
}

static void draw_text_vertical(cairo_t *cr, const char *text, double size, double x, double y,
                               rgb c) {
    cairo_save(cr);
    cairo_translate(cr, x, y);
    cairo_rotate(cr, -M_PI / 2);
    plot_draw_text(cr, text, size, 0, 0, 0, AL_CENTER, c);
    cairo_restore(cr);
}

/* ------------------------------------------------------------------------------------------ */
/* Legend                                                                                       */
/* ------------------------------------------------------------------------------------------ */

typedef struct {
    const char *label;
    rgb color;
    int line; /* 0: a marker, 1: a line */
    double alpha, width;
} legend_entry;

/* Places the legend inside the frame in the corner covering the fewest of the pixel positions
 * avoid[2 * n_avoid] (ties: top right, top left, bottom right, bottom left). */
static void draw_legend(cairo_t *cr, const frame *f, const legend_entry *e, int n,
                        const double *avoid, size_t n_avoid) {
    if (n == 0) return;
    const double font = 13.0, pad = 8.0, sym = 22.0, row = font * 1.5;
    double tw = 0;
    for (int i = 0; i < n; i++) tw = fmax(tw, plot_text_width(cr, e[i].label, font, 0));
    double bw = pad + sym + 6 + tw + pad, bh = pad + n * row - (row - font) + pad;
    double inset = 10;
    double cx[4] = {f->x0 + f->w - inset - bw, f->x0 + inset, f->x0 + f->w - inset - bw,
                    f->x0 + inset};
    double cy[4] = {f->y0 + inset, f->y0 + inset, f->y0 + f->h - inset - bh,
                    f->y0 + f->h - inset - bh};
    int best = 0;
    size_t best_count = SIZE_MAX;
    for (int c = 0; c < 4; c++) {
        size_t count = 0;
        for (size_t i = 0; i < n_avoid; i++) {
            double x = avoid[2 * i], y = avoid[2 * i + 1];
            if (x >= cx[c] && x <= cx[c] + bw && y >= cy[c] && y <= cy[c] + bh) count++;
        }
        if (count < best_count) {
            best_count = count;
            best = c;
        }
    }
    double x = floor(cx[best]) + 0.5, y = floor(cy[best]) + 0.5;
    cairo_set_source_rgba(cr, 1, 1, 1, 0.88);
    cairo_rectangle(cr, x, y, bw, bh);
    cairo_fill_preserve(cr);
    cairo_set_source_rgb(cr, 0.8, 0.8, 0.8);
    cairo_set_line_width(cr, 1.0);
    cairo_stroke(cr);
    for (int i = 0; i < n; i++) {
        double base = y + pad + cap_height(font) + i * row;
        double mid = base - cap_height(font) / 2;
        if (e[i].line) {
            set_rgb(cr, e[i].color, e[i].alpha);
            cairo_set_line_width(cr, e[i].width);
            cairo_move_to(cr, x + pad, mid);
            cairo_line_to(cr, x + pad + sym, mid);
            cairo_stroke(cr);
        } else {
            set_rgb(cr, e[i].color, 0.9);
            cairo_arc(cr, x + pad + sym / 2, mid, 4.5, 0, 2 * M_PI);
            cairo_fill(cr);
        }
        plot_draw_text(cr, e[i].label, font, 0, x + pad + sym + 6, base, AL_LEFT, C_TEXT);
    }
}

/* ------------------------------------------------------------------------------------------ */
/* Points                                                                                       */
/* ------------------------------------------------------------------------------------------ */

/* Plotted coordinates of point i: (x0, x1), or (i, x0) for 1-D points. */
static inline void point_xy(const ddpm_points *p, size_t i, double *x, double *y) {
    if (p->dim == 1) {
        *x = (double)i;
        *y = p->x[i];
    } else {
        *x = p->x[i * (size_t)p->dim];
        *y = p->x[i * (size_t)p->dim + 1];
    }
}

/* Extends b = {xmin, xmax, ymin, ymax} by the finite points of p. */
static void extend_bounds(const ddpm_points *p, double *b) {
    for (size_t i = 0; i < p->n; i++) {
        double x, y;
        point_xy(p, i, &x, &y);
        if (!isfinite(x) || !isfinite(y)) continue;
        b[0] = fmin(b[0], x);
        b[1] = fmax(b[1], x);
        b[2] = fmin(b[2], y);
        b[3] = fmax(b[3], y);
    }
}

/* Pads a range by frac of its width on each side; a degenerate or empty range gets a width. */
static void pad_range(double *lo, double *hi, double frac) {
    if (!(*lo <= *hi)) { /* no finite data */
        *lo = -1;
        *hi = 1;
        return;
    }
    double w = *hi - *lo;
    if (w <= 0 || w < 1e-12 * fmax(fabs(*lo), fabs(*hi))) {
        double h = fabs(*lo) > 0 ? fabs(*lo) * 0.1 : 0.5;
        *lo -= h;
        *hi += h;
        return;
    }
    *lo -= w * frac;
    *hi += w * frac;
}

/* Marker radius and opacity for n points on an axes of side px: small and translucent for big
 * sets so that density shows. */
static void marker_style(size_t n, double px, double *r, double *alpha) {
    double s = fmin(fmax(px / 560.0, 0.45), 1.6);
    if (n > 5000) {
        *r = 1.5 * s;
        *alpha = 0.30;
    } else if (n > 1000) {
        *r = 2.0 * s;
        *alpha = 0.45;
    } else if (n > 200) {
        *r = 2.6 * s;
        *alpha = 0.65;
    } else {
        *r = 3.2 * s;
        *alpha = 0.85;
    }
    if (*r < 0.8) *r = 0.8;
}

static void draw_points(cairo_t *cr, const frame *f, const ddpm_points *p, rgb c, double r,
                        double alpha) {
    cairo_save(cr);
    cairo_rectangle(cr, f->x0, f->y0, f->w, f->h);
    cairo_clip(cr);
    set_rgb(cr, c, alpha);
    for (size_t i = 0; i < p->n; i++) {
        double x, y;
        point_xy(p, i, &x, &y);
        if (!isfinite(x) || !isfinite(y)) continue;
        double px = fx(f, x), py = fy(f, y);
        if (px < f->x0 - r || px > f->x0 + f->w + r || py < f->y0 - r || py > f->y0 + f->h + r)
            continue;
        cairo_new_sub_path(cr);
        cairo_arc(cr, px, py, r, 0, 2 * M_PI);
        cairo_fill(cr);
    }
    cairo_restore(cr);
}

/* Appends up to `limit` pixel positions of p (evenly strided) to avoid. */
static void sample_positions(const frame *f, const ddpm_points *p, size_t limit, double *avoid,
                             size_t *n_avoid) {
    if (!p || p->n == 0) return;
    size_t stride = p->n / limit + 1;
    for (size_t i = 0; i < p->n; i += stride) {
        double x, y;
        point_xy(p, i, &x, &y);
        if (!isfinite(x) || !isfinite(y)) continue;
        avoid[2 * *n_avoid] = fx(f, x);
        avoid[2 * *n_avoid + 1] = fy(f, y);
        (*n_avoid)++;
    }
}

/* ------------------------------------------------------------------------------------------ */
/* Output                                                                                       */
/* ------------------------------------------------------------------------------------------ */

typedef struct {
    unsigned char *data;
    size_t len, cap;
    int failed;
} membuf;

static cairo_status_t write_mem(void *closure, const unsigned char *data, unsigned int length) {
    membuf *m = closure;
    if (m->len + length > m->cap) {
        size_t nc = m->cap ? m->cap * 2 : 65536;
        while (nc < m->len + length) nc *= 2;
        unsigned char *d = realloc(m->data, nc);
        if (!d) {
            m->failed = 1;
            return CAIRO_STATUS_NO_MEMORY;
        }
        m->data = d;
        m->cap = nc;
    }
    memcpy(m->data + m->len, data, length);
    m->len += length;
    return CAIRO_STATUS_SUCCESS;
}

/* Creates a white W x H canvas. */
static int canvas_new(const char *path, int W, int H, cairo_surface_t **s, cairo_t **cr) {
    *s = cairo_image_surface_create(CAIRO_FORMAT_ARGB32, W, H);
    if (cairo_surface_status(*s) != CAIRO_STATUS_SUCCESS) {
        int rc = ddpm_fail(DDPM_ERR_NOMEM, "%s: cannot create a %d x %d image: %s", path, W, H,
                           cairo_status_to_string(cairo_surface_status(*s)));
        cairo_surface_destroy(*s);
        *s = NULL;
        return rc;
    }
    *cr = cairo_create(*s);
    cairo_set_source_rgb(*cr, 1, 1, 1);
    cairo_paint(*cr);
    return DDPM_OK;
}

/* Encodes the canvas as PNG, writes it atomically, and destroys the canvas. */
static int canvas_finish(const char *path, cairo_surface_t *s, cairo_t *cr) {
    cairo_status_t st = cairo_status(cr);
    cairo_destroy(cr);
    if (st != CAIRO_STATUS_SUCCESS) {
        cairo_surface_destroy(s);
        return ddpm_fail(DDPM_ERR_NOMEM, "%s: drawing failed: %s", path,
                         cairo_status_to_string(st));
    }
    cairo_surface_flush(s);
    membuf m = {0};
    st = cairo_surface_write_to_png_stream(s, write_mem, &m);
    cairo_surface_destroy(s);
    if (st != CAIRO_STATUS_SUCCESS || m.failed) {
        free(m.data);
        return ddpm_fail(DDPM_ERR_NOMEM, "%s: PNG encoding failed: %s", path,
                         cairo_status_to_string(st));
    }
    const void *parts[1] = {m.data};
    size_t sizes[1] = {m.len};
    int rc = ddpm_write_file_atomic(path, parts, sizes, 1);
    free(m.data);
    if (rc) {
        char why[600];
        snprintf(why, sizeof why, "%s", ddpm_last_error());
        return ddpm_fail(rc, "cannot write plot %s: %s", path, why);
    }
    return DDPM_OK;
}

static int check_points(const char *path, const char *what, const ddpm_points *p) {
    if (!p || p->dim < 1 || (p->n && !p->x))
        return ddpm_fail(DDPM_ERR_INVALID, "%s: %s is not a valid point set", path, what);
    return DDPM_OK;
}

static int check_size(const char *path, int *w, int *h, int dw, int dh) {
    if (*w == 0) *w = dw;
    if (*h == 0) *h = dh;
    if (*w < 200 || *h < 200 || *w > MAX_SIDE || *h > MAX_SIDE)
        return ddpm_fail(DDPM_ERR_INVALID, "%s: plot size %d x %d (each side must be 200..%d)",
                         path, *w, *h, MAX_SIDE);
    return DDPM_OK;
}

/* ------------------------------------------------------------------------------------------ */
/* Single-axes layout (scatter and lines)                                                       */
/* ------------------------------------------------------------------------------------------ */

/* Lays out one axes in a W x H figure with a title, axis labels and tick labels; sets the frame
 * rectangle and the ticks. Limits in f must be set (ymin/ymax as log10 for log_y); with equal,
 * the limits are widened so that one data unit spans as many pixels on x as on y. */
static void layout_single(cairo_t *cr, int W, int H, int has_title, int has_xlabel, int has_ylabel,
                          int equal, frame *f, ticks *xt, ticks *yt) {
    double top = has_title ? 14 + TITLE_FONT * 1.2 + 14 : 20;
    double bottom = 12 + TICK_LEN + 4 + TICK_FONT + (has_xlabel ? 10 + LABEL_FONT : 0) + 8;
    double right = 24;
    double left_fixed = 14 + (has_ylabel ? LABEL_FONT + 12 : 0) + TICK_LEN + 4;
    double label_w = 30;
    double xmin0 = f->xmin, xmax0 = f->xmax, ymin0 = f->ymin, ymax0 = f->ymax;
    for (int pass = 0; pass < 3; pass++) {
        f->x0 = left_fixed + label_w;
        f->y0 = top;
        f->w = W - f->x0 - right;
        f->h = H - top - bottom;
        f->xmin = xmin0;
        f->xmax = xmax0;
        f->ymin = ymin0;
        f->ymax = ymax0;
        if (equal) {
            double upp = fmax((xmax0 - xmin0) / f->w, (ymax0 - ymin0) / f->h);
            double cx = 0.5 * (xmin0 + xmax0), cy = 0.5 * (ymin0 + ymax0);
            f->xmin = cx - upp * f->w / 2;
            f->xmax = cx + upp * f->w / 2;
            f->ymin = cy - upp * f->h / 2;
            f->ymax = cy + upp * f->h / 2;
        }
        if (f->log_y)
            plot_choose_log(cr, pow(10.0, f->ymin), pow(10.0, f->ymax), f->h, TICK_FONT, yt);
        else
            plot_choose_linear(cr, f->ymin, f->ymax, f->h, 55, 0, TICK_FONT, yt);
        double need = plot_max_label_width(cr, yt, TICK_FONT);
        if (fabs(need - label_w) < 1) break;
        label_w = need;
    }
    plot_choose_linear(cr, f->xmin, f->xmax, f->w, 90, 1, TICK_FONT, xt);
}

/* Title, axis labels and ticks around a laid-out single frame. */
static void decorate_single(cairo_t *cr, int W, const frame *f, const ticks *xt, const ticks *yt,
                            const char *title, const char *xlabel, const char *ylabel) {
    frame_axes(cr, f, xt, yt, 1, 1);
    if (title && *title) {
        double size = plot_fit_size(cr, title, TITLE_FONT, 1, W - 20);
        plot_draw_text(cr, title, size, 1, f->x0 + f->w / 2, 14 + cap_height(TITLE_FONT) + 2, AL_CENTER,
                  C_TEXT);
    }
    if (xlabel && *xlabel)
        plot_draw_text(cr, xlabel, LABEL_FONT, 0, f->x0 + f->w / 2,
                  f->y0 + f->h + TICK_LEN + 4 + TICK_FONT + 10 + cap_height(LABEL_FONT), AL_CENTER,
                  C_TEXT);
    if (ylabel && *ylabel) {
        double lw = plot_max_label_width(cr, yt, TICK_FONT);
        double x = f->x0 - TICK_LEN - 4 - lw - 12 - (LABEL_FONT - cap_height(LABEL_FONT));
        draw_text_vertical(cr, ylabel, LABEL_FONT, x, f->y0 + f->h / 2, C_TEXT);
    }
}

/* ------------------------------------------------------------------------------------------ */
/* Scatter                                                                                      */
/* ------------------------------------------------------------------------------------------ */

int ddpm_plot_scatter(const char *png_path, const char *title, const ddpm_points *a,
                      const char *label_a, const ddpm_points *b, const char *label_b, int width,
                      int height) {
    int rc;
    if (!png_path) return ddpm_fail(DDPM_ERR_INVALID, "plot: no output path");
    if ((rc = check_points(png_path, "the first point set", a))) return rc;
    if (b && (rc = check_points(png_path, "the second point set", b))) return rc;
    if (b && (a->dim == 1) != (b->dim == 1))
        return ddpm_fail(DDPM_ERR_INVALID,
                         "%s: cannot overlay a %d-D and a %d-D point set (both 1-D or both >= 2-D)",
                         png_path, a->dim, b->dim);
    if ((rc = check_size(png_path, &width, &height, 720, 720))) return rc;

    cairo_surface_t *s;
    cairo_t *cr;
    if ((rc = canvas_new(png_path, width, height, &s, &cr))) return rc;

    double bd[4] = {INFINITY, -INFINITY, INFINITY, -INFINITY};
    extend_bounds(a, bd);
    if (b) extend_bounds(b, bd);
    pad_range(&bd[0], &bd[1], 0.05);
    pad_range(&bd[2], &bd[3], 0.05);
    int one_d = a->dim == 1;
    frame f = {0};
    f.xmin = bd[0];
    f.xmax = bd[1];
    f.ymin = bd[2];
    f.ymax = bd[3];
    ticks xt, yt;
    const char *xl = one_d ? "point index" : a->dim == 2 ? "x" : "x[0]";
    const char *yl = one_d ? "value" : a->dim == 2 ? "y" : "x[1]";
    layout_single(cr, width, height, title && *title, 1, 1, !one_d, &f, &xt, &yt);
    frame_background(cr, &f, &xt, &yt);

    size_t n_all = a->n + (b ? b->n : 0);
    double r, alpha;
    marker_style(n_all, fmin(f.w, f.h), &r, &alpha);
    draw_points(cr, &f, a, C_SET_A, r, alpha);
    if (b) draw_points(cr, &f, b, C_SET_B, r, alpha);
    decorate_single(cr, width, &f, &xt, &yt, title, xl, yl);

    legend_entry le[2];
    int nl = 0;
    if (label_a || (b && label_b)) {
        le[nl++] = (legend_entry){label_a ? label_a : "a", C_SET_A, 0, 1, 1};
        if (b) le[nl++] = (legend_entry){label_b ? label_b : "b", C_SET_B, 0, 1, 1};
    }
    if (nl) {
        double *avoid = malloc(2 * 4100 * sizeof(double));
        size_t na = 0;
        if (avoid) {
            sample_positions(&f, a, 2000, avoid, &na);
            if (b) sample_positions(&f, b, 2000, avoid, &na);
        }
        draw_legend(cr, &f, le, nl, avoid, na);
        free(avoid);
    }
    return canvas_finish(png_path, s, cr);
}

/* ------------------------------------------------------------------------------------------ */
/* Grid of scatter panels                                                                       */
/* ------------------------------------------------------------------------------------------ */

int ddpm_plot_scatter_grid(const char *png_path, const char *title, const ddpm_points *panels,
                           const char *const *panel_titles, int n_panels, int n_cols,
                           const float *limits, int panel_px) {
    int rc;
    if (!png_path) return ddpm_fail(DDPM_ERR_INVALID, "plot: no output path");
    if (!panels || n_panels < 1 || n_cols < 1)
        return ddpm_fail(DDPM_ERR_INVALID,
                         "%s: a grid needs >= 1 panel and >= 1 column (got %d, %d)", png_path,
                         n_panels, n_cols);
    if (panel_px == 0) panel_px = 200;
    if (panel_px < 80 || panel_px > 4000)
        return ddpm_fail(DDPM_ERR_INVALID, "%s: panel size %d px (must be 80..4000)", png_path,
                         panel_px);
    for (int k = 0; k < n_panels; k++) {
        char what[48];
        snprintf(what, sizeof what, "panel %d", k);
        if ((rc = check_points(png_path, what, &panels[k]))) return rc;
        if ((panels[k].dim == 1) != (panels[0].dim == 1))
            return ddpm_fail(DDPM_ERR_INVALID, "%s: panels mix 1-D and %d-D point sets", png_path,
                             panels[k].dim == 1 ? panels[0].dim : panels[k].dim);
    }
    if (n_cols > n_panels) n_cols = n_panels;
    int n_rows = (n_panels + n_cols - 1) / n_cols;
    int one_d = panels[0].dim == 1;

    /* Shared limits. */
    double bd[4];
    if (limits) {
        for (int k = 0; k < 4; k++) bd[k] = limits[k];
        if (!(bd[0] < bd[1]) || !(bd[2] < bd[3]) || !isfinite(bd[0]) || !isfinite(bd[1]) ||
            !isfinite(bd[2]) || !isfinite(bd[3]))
            return ddpm_fail(DDPM_ERR_INVALID,
                             "%s: limits must be finite with xmin < xmax and ymin < ymax",
                             png_path);
    } else {
        bd[0] = bd[2] = INFINITY;
        bd[1] = bd[3] = -INFINITY;
        for (int k = 0; k < n_panels; k++) extend_bounds(&panels[k], bd);
        pad_range(&bd[0], &bd[1], 0.05);
        pad_range(&bd[2], &bd[3], 0.05);
        if (!one_d) { /* square panels, equal scales: a square box */
            double half = 0.5 * fmax(bd[1] - bd[0], bd[3] - bd[2]);
            double cx = 0.5 * (bd[0] + bd[1]), cy = 0.5 * (bd[2] + bd[3]);
            bd[0] = cx - half;
            bd[1] = cx + half;
            bd[2] = cy - half;
            bd[3] = cy + half;
        }
    }

    /* A scratch surface to measure text before the figure size is known. */
    cairo_surface_t *ms = cairo_image_surface_create(CAIRO_FORMAT_ARGB32, 8, 8);
    cairo_t *mc = cairo_create(ms);
    double P = panel_px;
    ticks xt, yt;
    plot_choose_linear(mc, bd[0], bd[1], P, 70, 1, TICK_FONT, &xt);
    plot_choose_linear(mc, bd[2], bd[3], P, 55, 0, TICK_FONT, &yt);
    double ylw = plot_max_label_width(mc, &yt, TICK_FONT);
    cairo_destroy(mc);
    cairo_surface_destroy(ms);

    const double ptitle_font = 14.0, gtitle_font = 20.0;
    double ptitle_h = panel_titles ? ptitle_font * 1.25 + 8 : 6;
    double top = (title && *title) ? 14 + gtitle_font * 1.2 + 10 : 10;
    double left = 14 + ylw + 4 + TICK_LEN;
    double xlab_h = TICK_LEN + 4 + TICK_FONT + 6; /* the x tick labels under a panel */
    double hgap = 22, vgap = xlab_h; /* rows keep room for tick labels of a panel above a gap */
    double right = 18, bottom = xlab_h + 12;
    double Wd = left + n_cols * P + (n_cols - 1) * hgap + right;
    double Hd = top + n_rows * (ptitle_h + P) + (n_rows - 1) * vgap + bottom;
    if (Wd > MAX_SIDE || Hd > MAX_SIDE)
        return ddpm_fail(DDPM_ERR_INVALID, "%s: the grid would be %.0f x %.0f pixels (max %d)",
                         png_path, Wd, Hd, MAX_SIDE);
    int W = (int)ceil(Wd), H = (int)ceil(Hd);

    cairo_surface_t *s;
    cairo_t *cr;
    if ((rc = canvas_new(png_path, W, H, &s, &cr))) return rc;

    if (title && *title) {
        double size = plot_fit_size(cr, title, gtitle_font, 1, W - 20);
        plot_draw_text(cr, title, size, 1, W / 2.0, 14 + cap_height(gtitle_font) + 2, AL_CENTER, C_TEXT);
    }
    for (int k = 0; k < n_panels; k++) {
        int row = k / n_cols, col = k % n_cols;
        frame f = {0};
        f.x0 = floor(left + col * (P + hgap));
        f.y0 = floor(top + row * (ptitle_h + P + vgap) + ptitle_h);
        f.w = P;
        f.h = P;
        f.xmin = bd[0];
        f.xmax = bd[1];
        f.ymin = bd[2];
        f.ymax = bd[3];
        frame_background(cr, &f, &xt, &yt);
        double r, alpha;
        marker_style(panels[k].n, P, &r, &alpha);
        draw_points(cr, &f, &panels[k], C_SET_A, r, alpha);
        int label_x = k + n_cols >= n_panels; /* nothing below this panel */
        frame_axes(cr, &f, &xt, &yt, label_x, col == 0);
        if (panel_titles && panel_titles[k]) {
            double size = plot_fit_size(cr, panel_titles[k], ptitle_font, 0, P + hgap - 4);
            plot_draw_text(cr, panel_titles[k], size, 0, f.x0 + P / 2, f.y0 - 8, AL_CENTER, C_TEXT);
        }
    }
    return canvas_finish(png_path, s, cr);
}

/* ------------------------------------------------------------------------------------------ */
/* Line plot                                                                                    */
/* ------------------------------------------------------------------------------------------ */

int ddpm_plot_lines(const char *png_path, const char *title, const char *xlabel, const char *ylabel,
                    const float *x, const float *const *ys, const char *const *labels, int n_series,
                    size_t n, int log_y, int width, int height) {
    int rc;
    if (!png_path) return ddpm_fail(DDPM_ERR_INVALID, "plot: no output path");
    if (n_series < 1 || !ys)
        return ddpm_fail(DDPM_ERR_INVALID, "%s: a line plot needs at least one series", png_path);
    for (int k = 0; k < n_series; k++)
        if (!ys[k] && n)
            return ddpm_fail(DDPM_ERR_INVALID, "%s: series %d has no data", png_path, k);
    if ((rc = check_size(png_path, &width, &height, 900, 540))) return rc;

    /* Limits over the plottable points. */
    double xmin = INFINITY, xmax = -INFINITY, ymin = INFINITY, ymax = -INFINITY;
    for (size_t i = 0; i < n; i++) {
        double xv = x ? x[i] : (double)i;
        if (!isfinite(xv)) continue;
        for (int k = 0; k < n_series; k++) {
            double yv = ys[k][i];
            if (!isfinite(yv) || (log_y && yv <= 0)) continue;
            xmin = fmin(xmin, xv);
            xmax = fmax(xmax, xv);
            ymin = fmin(ymin, yv);
            ymax = fmax(ymax, yv);
        }
    }
    int empty = !(xmin <= xmax);
    if (empty) {
        xmin = 0;
        xmax = 1;
        ymin = log_y ? 0.1 : 0;
        ymax = 1;
    }
    pad_range(&xmin, &xmax, 0.02);
    frame f = {0};
    f.log_y = log_y;
    if (log_y) {
        double lo = log10(ymin), hi = log10(ymax);
        pad_range(&lo, &hi, 0.05);
        f.ymin = lo;
        f.ymax = hi;
    } else {
        pad_range(&ymin, &ymax, 0.05);
        f.ymin = ymin;
        f.ymax = ymax;
    }
    f.xmin = xmin;
    f.xmax = xmax;

    cairo_surface_t *s;
    cairo_t *cr;
    if ((rc = canvas_new(png_path, width, height, &s, &cr))) return rc;
    ticks xt, yt;
    layout_single(cr, width, height, title && *title, xlabel && *xlabel, ylabel && *ylabel, 0, &f,
                  &xt, &yt);
    frame_background(cr, &f, &xt, &yt);

    legend_entry le[16];
    int nl = 0;
    size_t limit = 4000 / (size_t)n_series + 1, na = 0;
    double *avoid = malloc(2 * (4000 + 2 * (size_t)n_series) * sizeof(double));
    cairo_save(cr);
    cairo_rectangle(cr, f.x0, f.y0, f.w, f.h);
    cairo_clip(cr);
    cairo_set_line_join(cr, CAIRO_LINE_JOIN_ROUND);
    for (int k = 0; k < n_series; k++) {
        rgb c = TAB10[k % 10];
        double a = (n_series > 1 && k == 0) ? 0.45 : 1.0;
        double lw = (n_series > 1 && k == 0) ? 1.0 : n_series > 1 ? 2.0 : 1.5;
        set_rgb(cr, c, a);
        cairo_set_line_width(cr, lw);
        int pen = 0;
        size_t stride = n / limit + 1;
        for (size_t i = 0; i < n; i++) {
            double xv = x ? x[i] : (double)i, yv = ys[k][i];
            if (!isfinite(xv) || !isfinite(yv) || (log_y && yv <= 0)) {
                pen = 0;
                continue;
            }
            double px = fx(&f, xv), py = fy(&f, yv);
            if (pen)
                cairo_line_to(cr, px, py);
            else
                cairo_move_to(cr, px, py);
            /* A lone point (between gaps) still shows as a dot with round caps. */
            pen = 1;
            if (avoid && i % stride == 0) {
                avoid[2 * na] = px;
                avoid[2 * na + 1] = py;
                na++;
            }
        }
        cairo_set_line_cap(cr, CAIRO_LINE_CAP_ROUND);
        cairo_stroke(cr);
        if (labels && labels[k] && nl < 16)
            le[nl++] = (legend_entry){labels[k], c, 1, a, fmax(lw, 2.0)};
    }
    cairo_restore(cr);
    decorate_single(cr, width, &f, &xt, &yt, title, xlabel, ylabel);
    if (empty)
        plot_draw_text(cr, "no finite data", 14, 0, f.x0 + f.w / 2, f.y0 + f.h / 2, AL_CENTER,
                  (rgb){0.5, 0.5, 0.5});
    draw_legend(cr, &f, le, nl, avoid, na);
    free(avoid);
    return canvas_finish(png_path, s, cr);
}

/* test_plot.c - scatter plots, scatter grids and line plots written as PNG. Each image is read
 * back with cairo and checked: its size, that data were drawn (pixels of the series' colours),
 * and that the axes are there (long dark spine lines with tick labels beside them). */
#include "testutil.h"

#include <cairo/cairo.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Under ASan's leak check, cairo's and fontconfig's process-wide caches would show as leaks
 * unless ddpm_release_caches frees them (main calls it last); this executable has no leak
 * suppressions of its own, so a leak report here means report/plot.c leaks or that call broke. */

typedef struct {
    cairo_surface_t *s;
    int w, h, stride;
    const unsigned char *px;
} image;

static void load_png(const char *path, image *im) {
    im->s = cairo_image_surface_create_from_png(path);
    if (cairo_surface_status(im->s) != CAIRO_STATUS_SUCCESS)
        fail_msg("%s is not a readable PNG: %s", path,
                 cairo_status_to_string(cairo_surface_status(im->s)));
    im->w = cairo_image_surface_get_width(im->s);
    im->h = cairo_image_surface_get_height(im->s);
    im->stride = cairo_image_surface_get_stride(im->s);
    cairo_surface_flush(im->s);
    im->px = cairo_image_surface_get_data(im->s);
}

static void rgb_at(const image *im, int x, int y, int *r, int *g, int *b) {
    uint32_t v;
    memcpy(&v, im->px + (size_t)y * im->stride + 4 * (size_t)x, 4);
    *r = (v >> 16) & 255;
    *g = (v >> 8) & 255;
    *b = v & 255;
}

static int is_dark(const image *im, int x, int y) {
    int r, g, b;
    rgb_at(im, x, y, &r, &g, &b);
    return r < 90 && g < 90 && b < 90;
}

/* Any text or line pixel (antialiased glyphs are mostly grey). */
static int is_ink(const image *im, int x, int y) {
    int r, g, b;
    rgb_at(im, x, y, &r, &g, &b);
    return r < 160 && g < 160 && b < 160;
}

/* Pixels that are clearly red (the first set / panels) or blue (the second set). */
static size_t count_red(const image *im) {
    size_t c = 0;
    for (int y = 0; y < im->h; y++)
        for (int x = 0; x < im->w; x++) {
            int r, g, b;
            rgb_at(im, x, y, &r, &g, &b);
            c += r > g + 40 && r > b + 40;
        }
    return c;
}
static size_t count_blue(const image *im) {
    size_t c = 0;
    for (int y = 0; y < im->h; y++)
        for (int x = 0; x < im->w; x++) {
            int r, g, b;
            rgb_at(im, x, y, &r, &g, &b);
            c += b > r + 40 && b > g + 10;
        }
    return c;
}
static size_t count_orange(const image *im) {
    size_t c = 0;
    for (int y = 0; y < im->h; y++)
        for (int x = 0; x < im->w; x++) {
            int r, g, b;
            rgb_at(im, x, y, &r, &g, &b);
            c += r > 200 && g > 90 && g < 170 && b < 60;
        }
    return c;
}

static int longest_dark_run_col(const image *im, int x) {
    int best = 0, run = 0;
    for (int y = 0; y < im->h; y++) {
        run = is_dark(im, x, y) ? run + 1 : 0;
        if (run > best) best = run;
    }
    return best;
}
static int longest_dark_run_row(const image *im, int y) {
    int best = 0, run = 0;
    for (int x = 0; x < im->w; x++) {
        run = is_dark(im, x, y) ? run + 1 : 0;
        if (run > best) best = run;
    }
    return best;
}

/* Counts groups of adjacent columns whose longest dark run is in [lo, hi] pixels. */
static int count_vertical_lines(const image *im, int lo, int hi, int *first_x) {
    int groups = 0, prev = 0;
    *first_x = -1;
    for (int x = 0; x < im->w; x++) {
        int run = longest_dark_run_col(im, x);
        int on = run >= lo && run <= hi;
        if (on && !prev) {
            groups++;
            if (*first_x < 0) *first_x = x;
        }
        prev = on;
    }
    return groups;
}

/* A single-axes plot: a left spine (a dark vertical line over most of the height) with tick
 * labels to its left, and a bottom spine with tick labels under it. */
static void check_single_axes(const image *im) {
    int spine_x = -1, spine_y = -1;
    for (int x = 0; x < im->w / 3 && spine_x < 0; x++)
        if (longest_dark_run_col(im, x) > im->h / 2) spine_x = x;
    for (int y = im->h - 1; y > im->h * 2 / 3 && spine_y < 0; y--)
        if (longest_dark_run_row(im, y) > im->w / 2) spine_y = y;
    if (spine_x < 0) fail_msg("no y axis (left spine) found");
    if (spine_y < 0) fail_msg("no x axis (bottom spine) found");
    size_t left_ink = 0, below_ink = 0;
    for (int y = 0; y < im->h; y++)
        for (int x = 0; x < spine_x - 7; x++) left_ink += is_ink(im, x, y);
    for (int y = spine_y + 7; y < im->h; y++)
        for (int x = 0; x < im->w; x++) below_ink += is_ink(im, x, y);
    if (left_ink < 100) fail_msg("no y tick labels left of the axis (%zu dark pixels)", left_ink);
    if (below_ink < 100) fail_msg("no x tick labels below the axis (%zu dark pixels)", below_ink);
}

static void expect_ok(int rc) {
    if (rc != DDPM_OK) fail_msg("plot failed (%d): %s", rc, ddpm_last_error());
}

static ddpm_points curve(const char *name, size_t n, uint64_t seed) {
    ddpm_points p;
    if (ddpm_points_generate(name, n, seed, &p)) fail_msg("%s", ddpm_last_error());
    return p;
}

static void test_scatter(void **state) {
    (void)state;
    ddpm_points a = curve("s-curve", 10000, 1);
    const char *path = tu_tmp("scatter.png");
    expect_ok(ddpm_plot_scatter(path, "S-curve (10,000 points)", &a, NULL, NULL, NULL, 0, 0));
    image im;
    load_png(path, &im);
    assert_int_equal(im.w, 720);
    assert_int_equal(im.h, 720);
    size_t red = count_red(&im);
    if (red < 5000) fail_msg("only %zu red pixels: the points were not drawn", red);
    if (count_blue(&im) > 50) fail_msg("blue pixels in a one-set plot");
    check_single_axes(&im);
    cairo_surface_destroy(im.s);

    /* a custom size */
    expect_ok(ddpm_plot_scatter(path, NULL, &a, NULL, NULL, NULL, 640, 400));
    load_png(path, &im);
    assert_int_equal(im.w, 640);
    assert_int_equal(im.h, 400);
    check_single_axes(&im);
    cairo_surface_destroy(im.s);
    ddpm_points_free(&a);
}

static void test_scatter_overlay(void **state) {
    (void)state;
    ddpm_points a = curve("moons", 3000, 1), b = curve("circles", 2000, 2);
    const char *path = tu_tmp("overlay.png");
    expect_ok(ddpm_plot_scatter(path, "data and samples", &a, "data", &b, "samples", 600, 600));
    image im;
    load_png(path, &im);
    assert_int_equal(im.w, 600);
    size_t red = count_red(&im), blue = count_blue(&im);
    if (red < 2000 || blue < 2000)
        fail_msg("red %zu, blue %zu pixels: a set is missing", red, blue);
    check_single_axes(&im);
    cairo_surface_destroy(im.s);
    ddpm_points_free(&a);
    ddpm_points_free(&b);
}

static void test_scatter_odd_inputs(void **state) {
    (void)state;
    /* 1-D points (value against index), a single point, and non-finite values (skipped). */
    float v[6] = {0.5f, -1.0f, NAN, 2.0f, INFINITY, 1.0f};
    ddpm_points one = {v, 6, 1};
    const char *path = tu_tmp("odd.png");
    expect_ok(ddpm_plot_scatter(path, "1-D", &one, "values", NULL, NULL, 400, 300));
    image im;
    load_png(path, &im);
    assert_int_equal(im.w, 400);
    assert_int_equal(im.h, 300);
    check_single_axes(&im);
    if (count_red(&im) < 20) fail_msg("the 1-D points were not drawn");
    cairo_surface_destroy(im.s);

    float p1[2] = {3.0f, 3.0f};
    ddpm_points single = {p1, 1, 2};
    expect_ok(ddpm_plot_scatter(path, "one point", &single, NULL, NULL, NULL, 300, 300));
    ddpm_points empty = {NULL, 0, 2};
    expect_ok(ddpm_plot_scatter(path, "no points", &empty, NULL, NULL, NULL, 300, 300));
    float p3[6] = {1, 2, 3, 4, 5, 6};
    ddpm_points three = {p3, 2, 3};
    expect_ok(ddpm_plot_scatter(path, "3-D: first two dims", &three, NULL, NULL, NULL, 300, 300));
}

static void test_scatter_errors(void **state) {
    (void)state;
    ddpm_points a = curve("moons", 100, 1);
    const char *bad = "/nonexistent-ddpm-dir/plot.png";
    assert_int_equal(ddpm_plot_scatter(bad, "t", &a, NULL, NULL, NULL, 0, 0), DDPM_ERR_IO);
    if (!strstr(ddpm_last_error(), bad))
        fail_msg("message '%s' does not name the path", ddpm_last_error());
    const char *path = tu_tmp("err.png");
    assert_int_equal(ddpm_plot_scatter(path, "t", &a, NULL, NULL, NULL, 50, 50), DDPM_ERR_INVALID);
    assert_int_equal(ddpm_plot_scatter(path, "t", NULL, NULL, NULL, NULL, 0, 0), DDPM_ERR_INVALID);
    float v[3] = {1, 2, 3};
    ddpm_points one = {v, 3, 1};
    assert_int_equal(ddpm_plot_scatter(path, "t", &a, "a", &one, "b", 0, 0), DDPM_ERR_INVALID);
    assert_int_equal(
        ddpm_plot_lines(bad, "t", "x", "y", NULL, (const float *const[]){v}, NULL, 1, 3, 0, 0, 0),
        DDPM_ERR_IO);
    if (!strstr(ddpm_last_error(), bad))
        fail_msg("message '%s' does not name the path", ddpm_last_error());
    assert_int_equal(ddpm_plot_scatter_grid(bad, "t", &a, NULL, 1, 1, NULL, 0), DDPM_ERR_IO);
    assert_int_equal(ddpm_plot_scatter_grid(path, "t", &a, NULL, 0, 1, NULL, 0), DDPM_ERR_INVALID);
    const float badlim[4] = {1, 0, 0, 1};
    assert_int_equal(ddpm_plot_scatter_grid(path, "t", &a, NULL, 1, 1, badlim, 0),
                     DDPM_ERR_INVALID);
    ddpm_points_free(&a);
}

static void test_grid(void **state) {
    (void)state;
    /* The tutorial's forward process figure: 20 panels in 2 rows of 10. */
    enum { NP = 20, NC = 10, N = 2000, PX = 160 };
    ddpm_points panels[NP];
    char names[NP][32];
    const char *titles[NP];
    ddpm_points base = curve("s-curve", N, 1);
    for (int k = 0; k < NP; k++) {
        assert_int_equal(ddpm_points_init(&panels[k], N, 2), DDPM_OK);
        float *z = malloc(2 * N * sizeof(float));
        ddpm_randn(5, DDPM_STREAM_USER, (uint64_t)k, 0, z, 2 * N);
        double a = 1.0 - k / (double)NP;
        for (size_t i = 0; i < 2 * N; i++)
            panels[k].x[i] = (float)(sqrt(a) * base.x[i] + sqrt(1 - a) * z[i]);
        free(z);
        snprintf(names[k], sizeof names[k], "q(x_%d)", 5 * k);
        titles[k] = names[k];
    }
    const char *path = tu_tmp("grid.png");
    expect_ok(ddpm_plot_scatter_grid(path, "Forward process q(x_t | x_0)", panels, titles, NP, NC,
                                     NULL, PX));
    image im;
    load_png(path, &im);
    if (im.w < NC * PX || im.w > NC * PX + 600)
        fail_msg("grid width %d for 10 panels of %d", im.w, PX);
    if (im.h < 2 * PX || im.h > 2 * PX + 300) fail_msg("grid height %d for 2 rows of %d", im.h, PX);
    /* Every panel has a left and a right spine: 2 x 10 vertical lines of about PX pixels. */
    int first_x;
    int lines = count_vertical_lines(&im, PX - 2, PX + 8, &first_x);
    if (lines != 2 * NC) fail_msg("found %d panel spines, expected %d", lines, 2 * NC);
    size_t left_ink = 0;
    for (int y = 0; y < im.h; y++)
        for (int x = 0; x < first_x - 7; x++) left_ink += is_ink(&im, x, y);
    if (left_ink < 50) fail_msg("no y tick labels left of the first column");
    if (count_red(&im) < 20 * 300) fail_msg("the panels' points were not drawn");
    cairo_surface_destroy(im.s);

    /* 10 panels in one row with given limits, no titles, one partial row of 3 + 1 */
    const float lim[4] = {-1, 1, -1, 1};
    expect_ok(ddpm_plot_scatter_grid(path, NULL, panels, NULL, 10, 10, lim, 0));
    load_png(path, &im);
    lines = count_vertical_lines(&im, 198, 208, &first_x);
    if (lines != 20) fail_msg("found %d panel spines in a row of 10, expected 20", lines);
    cairo_surface_destroy(im.s);
    expect_ok(ddpm_plot_scatter_grid(path, "4 panels", panels, titles, 4, 3, NULL, 100));
    load_png(path, &im);
    /* panel 3 sits under panel 0 (same spine columns): 3 columns of panels, 2 rows */
    lines = count_vertical_lines(&im, 98, 108, &first_x);
    if (lines != 6) fail_msg("found %d spine columns for 4 panels in rows of 3, expected 6", lines);
    if (im.h < 2 * 100 || im.h > 2 * 100 + 250) fail_msg("height %d for 2 rows of 100", im.h);
    cairo_surface_destroy(im.s);
    for (int k = 0; k < NP; k++) ddpm_points_free(&panels[k]);
    ddpm_points_free(&base);
}

static void test_lines(void **state) {
    (void)state;
    enum { N = 3000 };
    float *x = malloc(N * sizeof(float)), *y = malloc(N * sizeof(float)),
          *sm = malloc(N * sizeof(float));
    double e = 0;
    for (int i = 0; i < N; i++) {
        float z;
        ddpm_randn(3, DDPM_STREAM_USER, (uint64_t)i, 0, &z, 1);
        x[i] = (float)(i * 10);
        y[i] = (float)((0.3 + 0.7 * exp(-i / 400.0)) * (1.0 + 0.2 * z));
        e = i ? 0.98 * e + 0.02 * y[i] : y[i];
        sm[i] = (float)e;
    }
    const float *ys[2] = {y, sm};
    const char *labels[2] = {"loss", "smoothed"};
    const char *path = tu_tmp("loss.png");
    for (int log_y = 0; log_y <= 1; log_y++) {
        expect_ok(ddpm_plot_lines(path, "Training loss", "step", "loss", x, ys, labels, 2, N, log_y,
                                  0, 0));
        image im;
        load_png(path, &im);
        assert_int_equal(im.w, 900);
        assert_int_equal(im.h, 540);
        check_single_axes(&im);
        if (count_blue(&im) < 2000) fail_msg("log_y %d: the raw series was not drawn", log_y);
        if (count_orange(&im) < 500) fail_msg("log_y %d: the smoothed series was not drawn", log_y);
        cairo_surface_destroy(im.s);
    }
    /* gaps (NaN), non-positive values on a log axis, x = index, one series, tiny and huge values */
    y[10] = NAN;
    y[20] = -1.0f;
    y[30] = 0.0f;
    expect_ok(ddpm_plot_lines(path, NULL, NULL, NULL, NULL, ys, NULL, 1, N, 1, 400, 300));
    expect_ok(
        ddpm_plot_lines(path, "linear with NaN", "i", "y", NULL, ys, labels, 1, N, 0, 400, 300));
    for (int i = 0; i < N; i++) y[i] = 1e-7f * (float)(i + 1);
    expect_ok(ddpm_plot_lines(path, "tiny", "i", "y", NULL, ys, NULL, 1, N, 0, 400, 300));
    expect_ok(ddpm_plot_lines(path, "many decades", "i", "y", NULL, ys, NULL, 1, N, 1, 400, 300));
    for (int i = 0; i < N; i++) y[i] = 5e7f + (float)i;
    expect_ok(ddpm_plot_lines(path, "huge", "i", "y", NULL, ys, NULL, 1, N, 0, 400, 300));
    for (int i = 0; i < N; i++) y[i] = NAN;
    expect_ok(ddpm_plot_lines(path, "nothing finite", "i", "y", NULL, ys, NULL, 1, N, 0, 400, 300));
    expect_ok(ddpm_plot_lines(path, "no points", "i", "y", NULL, ys, NULL, 1, 0, 1, 400, 300));
    assert_int_equal(ddpm_plot_lines(path, "t", "x", "y", x, ys, labels, 0, N, 0, 0, 0),
                     DDPM_ERR_INVALID);
    free(x);
    free(y);
    free(sm);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_scatter),
        cmocka_unit_test(test_scatter_overlay),
        cmocka_unit_test(test_scatter_odd_inputs),
        cmocka_unit_test(test_scatter_errors),
        cmocka_unit_test(test_grid),
        cmocka_unit_test(test_lines),
    };
    int failed = cmocka_run_group_tests(tests, NULL, NULL);
    ddpm_release_caches(); /* so LeakSanitizer sees no cairo/fontconfig caches */
    return failed;
}

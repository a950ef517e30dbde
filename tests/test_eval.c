/* test_eval.c - sliced Wasserstein-1 and RBF MMD^2 between point sets. */
#include "testutil.h"

#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static ddpm_points gen(const char *name, size_t n, uint64_t seed) {
    ddpm_points p;
    if (ddpm_points_generate(name, n, seed, &p)) fail_msg("%s", ddpm_last_error());
    return p;
}

static double swd(const ddpm_points *a, const ddpm_points *b, int proj, uint64_t seed) {
    double v;
    int rc = ddpm_sliced_wasserstein(a, b, proj, seed, &v);
    if (rc) fail_msg("sliced Wasserstein failed (%d): %s", rc, ddpm_last_error());
    return v;
}

static double mmd(const ddpm_points *a, const ddpm_points *b, double bw, size_t maxp, uint64_t seed,
                  double *bw_used) {
    double v;
    int rc = ddpm_mmd_rbf(a, b, bw, maxp, seed, &v, bw_used);
    if (rc) fail_msg("MMD failed (%d): %s", rc, ddpm_last_error());
    return v;
}

static ddpm_points copy_points(const ddpm_points *p) {
    ddpm_points c;
    assert_int_equal(ddpm_points_init(&c, p->n, p->dim), DDPM_OK);
    memcpy(c.x, p->x, p->n * (size_t)p->dim * sizeof(float));
    return c;
}

/* ---- sliced Wasserstein ---- */

static void test_swd_self_and_symmetry(void **state) {
    (void)state;
    ddpm_points a = gen("s-curve", 3000, 1), b = gen("moons", 2000, 2);
    assert_true(swd(&a, &a, 128, 7) == 0.0);
    double ab = swd(&a, &b, 128, 7), ba = swd(&b, &a, 128, 7);
    if (!(ab > 0.05)) fail_msg("SWD(s-curve, moons) = %g, expected clearly positive", ab);
    if (fabs(ab - ba) > 1e-12 * ab) fail_msg("SWD not symmetric: %.17g vs %.17g", ab, ba);
    /* a set against itself with every point duplicated: the same empirical distribution */
    ddpm_points d;
    assert_int_equal(ddpm_points_init(&d, 2 * a.n, 2), DDPM_OK);
    memcpy(d.x, a.x, a.n * 2 * sizeof(float));
    memcpy(d.x + a.n * 2, a.x, a.n * 2 * sizeof(float));
    double dup = swd(&a, &d, 64, 3);
    if (dup > 1e-7) fail_msg("SWD(a, a twice) = %g, expected 0", dup);
    ddpm_points_free(&d);
    ddpm_points_free(&a);
    ddpm_points_free(&b);
}

/* Shifting by s along x: every projection moves by <u, s>, so the SWD is |s| mean_k |u_k,x|
 * exactly (the directions are normalised randn(seed, EVAL, k, 0)), and about 2 |s| / pi. */
static void test_swd_shift(void **state) {
    (void)state;
    const int P = 1024;
    const double s = 0.3;
    ddpm_points a = gen("s-curve", 2000, 1), b = copy_points(&a);
    for (size_t i = 0; i < b.n; i++) b.x[2 * i] += (float)s;
    double got = swd(&a, &b, P, 11);
    double mean_abs = 0;
    for (int k = 0; k < P; k++) {
        float g[2];
        ddpm_randn(11, DDPM_STREAM_EVAL, (uint64_t)k, 0, g, 2);
        mean_abs += fabs(g[0]) / hypot(g[0], g[1]);
    }
    mean_abs /= P;
    double exact = s * mean_abs;
    if (fabs(got - exact) > 2e-4 * exact)
        fail_msg("SWD of a shift: %.8g, expected %.8g (|s| mean|u_x|)", got, exact);
    double theory = 2.0 * s / M_PI; /* sd of the mean over 1024 directions: 1% */
    if (fabs(got - theory) > 0.04 * theory)
        fail_msg("SWD of a shift: %.6g, expected about 2|s|/pi = %.6g", got, theory);
    ddpm_points_free(&a);
    ddpm_points_free(&b);
}

/* Unequal sizes use the quantile form: {0, 1} vs {0, 0.5, 1} in 1-D is 1/6. */
static void test_swd_unequal_exact(void **state) {
    (void)state;
    float xa[2] = {1, 0}, xb[3] = {0.5f, 1, 0};
    ddpm_points a = {xa, 2, 1}, b = {xb, 3, 1};
    double v = swd(&a, &b, 16, 1);
    if (fabs(v - 1.0 / 6.0) > 1e-7) fail_msg("W1({0,1}, {0,.5,1}) = %.9g, expected 1/6", v);
    /* equal sizes: mean |a_(i) - b_(i)| of the sorted values: {0, 3} vs {1, 1} -> (1 + 2) / 2 */
    float xc[2] = {3, 0}, xd[2] = {1, 1};
    ddpm_points c = {xc, 2, 1}, d = {xd, 2, 1};
    v = swd(&c, &d, 4, 1);
    if (fabs(v - 1.5) > 1e-7) fail_msg("W1({0,3}, {1,1}) = %.9g, expected 1.5", v);
    /* one point each: the distance between the points projected, 1-D: |3 - 1| */
    ddpm_points e = {xc, 1, 1}, f = {xd, 1, 1};
    v = swd(&e, &f, 4, 1);
    if (fabs(v - 2.0) > 1e-7) fail_msg("W1({3}, {1}) = %.9g, expected 2", v);
}

/* Three ways to differ from the S-curve: scaled by 1.25, blurred by noise of sd 0.05 (a
 * quarter of its height), and mirrored left-right. Fills the three sets from seeds 3, 4, 5. */
static void altered_s_curves(ddpm_points *scaled, ddpm_points *noisy, ddpm_points *mirrored) {
    *scaled = gen("s-curve", 10000, 3);
    *noisy = gen("s-curve", 10000, 4);
    *mirrored = gen("s-curve", 10000, 5);
    for (size_t i = 0; i < 2 * scaled->n; i++) scaled->x[i] *= 1.25f;
    for (size_t i = 0; i < 2 * noisy->n; i++) {
        float z;
        ddpm_randn(9, DDPM_STREAM_USER, i, 0, &z, 1);
        noisy->x[i] += 0.05f * z;
    }
    for (size_t i = 0; i < mirrored->n; i++) mirrored->x[2 * i] = -mirrored->x[2 * i];
}

static void test_swd_discriminates(void **state) {
    (void)state;
    ddpm_points a = gen("s-curve", 10000, 1), b = gen("s-curve", 10000, 2);
    ddpm_points scaled, noisy, mirrored;
    altered_s_curves(&scaled, &noisy, &mirrored);
    double same = swd(&a, &b, 0, 1), vs_scaled = swd(&a, &scaled, 0, 1);
    double vs_noisy = swd(&a, &noisy, 0, 1), vs_mirror = swd(&a, &mirrored, 0, 1);
    print_message("SWD: independent draws %.5f, scaled %.5f, +noise %.5f, mirrored %.5f\n", same,
                  vs_scaled, vs_noisy, vs_mirror);
    if (!(same < 0.005)) fail_msg("SWD of two draws of the S-curve is %g (expected < 0.005)", same);
    if (!(vs_scaled > 6 * same)) fail_msg("SWD: scaled %g not >> same %g", vs_scaled, same);
    if (!(vs_noisy > 3 * same)) fail_msg("SWD: noisy %g not >> same %g", vs_noisy, same);
    if (!(vs_mirror > 3 * same)) fail_msg("SWD: mirrored %g not >> same %g", vs_mirror, same);
    /* deterministic for a seed, independent of the thread count, changes with the seed */
    int threads = omp_get_max_threads();
    omp_set_num_threads(1);
    double one = swd(&a, &b, 200, 5);
    omp_set_num_threads(2);
    double two = swd(&a, &b, 200, 5);
    omp_set_num_threads(threads);
    if (one != two) fail_msg("SWD differs between 1 and 2 threads: %.17g vs %.17g", one, two);
    if (swd(&a, &b, 200, 6) == one) fail_msg("SWD does not depend on the seed");
    ddpm_points_free(&a);
    ddpm_points_free(&b);
    ddpm_points_free(&scaled);
    ddpm_points_free(&noisy);
    ddpm_points_free(&mirrored);
}

static void test_swd_errors(void **state) {
    (void)state;
    ddpm_points a = gen("moons", 10, 1);
    float v3[6] = {0};
    ddpm_points b3 = {v3, 2, 3}, empty = {NULL, 0, 2};
    double out = 1;
    assert_int_equal(ddpm_sliced_wasserstein(&a, &b3, 0, 1, &out), DDPM_ERR_INVALID);
    assert_true(isnan(out));
    assert_non_null(strstr(ddpm_last_error(), "dims 2 and 3"));
    assert_int_equal(ddpm_sliced_wasserstein(&a, &empty, 0, 1, &out), DDPM_ERR_INVALID);
    assert_int_equal(ddpm_sliced_wasserstein(&a, &a, -1, 1, &out), DDPM_ERR_INVALID);
    ddpm_points c = copy_points(&a);
    c.x[7] = NAN;
    assert_int_equal(ddpm_sliced_wasserstein(&a, &c, 0, 1, &out), DDPM_ERR_NUMERIC);
    assert_non_null(strstr(ddpm_last_error(), "set b"));
    assert_non_null(strstr(ddpm_last_error(), "point 3"));
    ddpm_points_free(&a);
    ddpm_points_free(&c);
}

/* ---- MMD ---- */

static double k_rbf(const float *x, const float *y, int d, double h) {
    double s = 0;
    for (int k = 0; k < d; k++) s += ((double)x[k] - y[k]) * ((double)x[k] - y[k]);
    return exp(-s / (2 * h * h));
}

/* The unbiased estimator written out directly. */
static double mmd_reference(const ddpm_points *a, const ddpm_points *b, double h) {
    int d = a->dim;
    double saa = 0, sbb = 0, sab = 0;
    for (size_t i = 0; i < a->n; i++)
        for (size_t j = 0; j < a->n; j++)
            if (i != j) saa += k_rbf(a->x + i * d, a->x + j * d, d, h);
    for (size_t i = 0; i < b->n; i++)
        for (size_t j = 0; j < b->n; j++)
            if (i != j) sbb += k_rbf(b->x + i * d, b->x + j * d, d, h);
    for (size_t i = 0; i < a->n; i++)
        for (size_t j = 0; j < b->n; j++) sab += k_rbf(a->x + i * d, b->x + j * d, d, h);
    double m = (double)a->n, n = (double)b->n;
    return saa / (m * (m - 1)) + sbb / (n * (n - 1)) - 2 * sab / (m * n);
}

static int cmp_double(const void *p, const void *q) {
    double a = *(const double *)p, b = *(const double *)q;
    return (a > b) - (a < b);
}

static double median_pairwise(const ddpm_points *a, const ddpm_points *b) {
    size_t m = a->n + b->n, c = 0;
    double *d = malloc(m * (m - 1) / 2 * sizeof(double));
    for (size_t i = 0; i < m; i++)
        for (size_t j = i + 1; j < m; j++) {
            const float *x = i < a->n ? a->x + 2 * i : b->x + 2 * (i - a->n);
            const float *y = j < a->n ? a->x + 2 * j : b->x + 2 * (j - a->n);
            d[c++] = hypot((double)x[0] - y[0], (double)x[1] - y[1]);
        }
    qsort(d, c, sizeof(double), cmp_double);
    double med = c % 2 ? d[c / 2] : 0.5 * (d[c / 2 - 1] + d[c / 2]);
    free(d);
    return med;
}

static void test_mmd_matches_reference(void **state) {
    (void)state;
    ddpm_points a = gen("moons", 60, 1), b = gen("8-gaussians", 45, 2);
    for (int t = 0; t < 3; t++) {
        double h = t == 0 ? 0.1 : t == 1 ? 0.5 : 2.0, used;
        double got = mmd(&a, &b, h, 0, 1, &used), want = mmd_reference(&a, &b, h);
        assert_true(used == h);
        if (fabs(got - want) > 1e-9 + 1e-9 * fabs(want))
            fail_msg("MMD with bandwidth %g: %.12g, reference %.12g", h, got, want);
    }
    /* median heuristic: an even (161 points: 12880 pairs) and an odd (162: 13041) pair count */
    for (int extra = 0; extra <= 1; extra++) {
        ddpm_points c = gen("moons", 101, 3), d = gen("circles", 60 + (size_t)extra, 4);
        double used;
        double got = mmd(&c, &d, 0, 0, 1, &used);
        double med = median_pairwise(&c, &d);
        if (fabs(used - med) > 1e-12 * med)
            fail_msg("median heuristic bandwidth %.9g, expected %.9g", used, med);
        double want = mmd_reference(&c, &d, med);
        if (fabs(got - want) > 1e-8) fail_msg("MMD (median) %.12g, reference %.12g", got, want);
        ddpm_points_free(&c);
        ddpm_points_free(&d);
    }
    ddpm_points_free(&a);
    ddpm_points_free(&b);
}

static void test_mmd_identical_and_independent(void **state) {
    (void)state;
    /* identical sets of m points: the unbiased estimate is 2 (mean_{i!=j} k - 1) / m in [-2/m, 0]
     */
    ddpm_points a = gen("s-curve", 1000, 1);
    double self = mmd(&a, &a, 0, 0, 1, NULL);
    if (!(self <= 0 && self >= -2.0 / 1000))
        fail_msg("MMD(a, a) = %g, expected in [-2/m, 0]", self);
    ddpm_points_free(&a);

    ddpm_points x = gen("s-curve", 10000, 1), y = gen("s-curve", 10000, 2);
    ddpm_points scaled, noisy, mirrored;
    altered_s_curves(&scaled, &noisy, &mirrored);
    double bw;
    double same = mmd(&x, &y, 0, 0, 1, &bw), vs_scaled = mmd(&x, &scaled, 0, 0, 1, NULL);
    double vs_mirror = mmd(&x, &mirrored, 0, 0, 1, NULL);
    /* Noise is a small-scale change: the median bandwidth (the size of the whole S) barely sees
     * it, a bandwidth of 0.02 does. */
    double same_02 = mmd(&x, &y, 0.02, 0, 1, NULL), vs_noisy_02 = mmd(&x, &noisy, 0.02, 0, 1, NULL);
    print_message("MMD^2 (median bandwidth %.4f): independent draws %.6f, scaled %.6f, mirrored "
                  "%.6f; bandwidth 0.02: independent %.6f, +noise %.6f\n",
                  bw, same, vs_scaled, vs_mirror, same_02, vs_noisy_02);
    if (!(fabs(same) < 0.0015)) fail_msg("MMD of two draws of the S-curve is %g", same);
    if (!(fabs(same_02) < 0.0015))
        fail_msg("MMD (h 0.02) of two draws of the S-curve is %g", same_02);
    if (!(vs_scaled > 0.005 && vs_scaled > 10 * fabs(same)))
        fail_msg("MMD: scaled %g not >> same %g", vs_scaled, same);
    if (!(vs_mirror > 0.0015 && vs_mirror > 2.5 * fabs(same)))
        fail_msg("MMD: mirrored %g not >> same %g", vs_mirror, same);
    if (!(vs_noisy_02 > 0.01 && vs_noisy_02 > 10 * fabs(same_02)))
        fail_msg("MMD (h 0.02): noisy %g not >> same %g", vs_noisy_02, same_02);
    ddpm_points_free(&scaled);
    ddpm_points_free(&noisy);
    ddpm_points_free(&mirrored);
    /* deterministic, thread-count independent, subsampling follows the seed */
    int threads = omp_get_max_threads();
    omp_set_num_threads(1);
    double one = mmd(&x, &y, 0, 500, 5, NULL);
    omp_set_num_threads(2);
    double two = mmd(&x, &y, 0, 500, 5, NULL);
    omp_set_num_threads(threads);
    if (one != two) fail_msg("MMD differs between 1 and 2 threads: %.17g vs %.17g", one, two);
    if (mmd(&x, &y, 0, 500, 6, NULL) == one) fail_msg("MMD subsample does not depend on the seed");
    ddpm_points_free(&x);
    ddpm_points_free(&y);
}

static void test_mmd_errors(void **state) {
    (void)state;
    ddpm_points a = gen("moons", 10, 1);
    float v[3] = {0, 1, 2};
    ddpm_points one_pt = {v, 1, 2}, d1 = {v, 3, 1};
    double out = 0;
    assert_int_equal(ddpm_mmd_rbf(&a, &one_pt, 0, 0, 1, &out, NULL), DDPM_ERR_INVALID);
    assert_true(isnan(out));
    assert_int_equal(ddpm_mmd_rbf(&a, &d1, 0, 0, 1, &out, NULL), DDPM_ERR_INVALID);
    assert_int_equal(ddpm_mmd_rbf(&a, &a, INFINITY, 0, 1, &out, NULL), DDPM_ERR_INVALID);
    assert_int_equal(ddpm_mmd_rbf(&a, &a, 0, 1, 1, &out, NULL), DDPM_ERR_INVALID);
    ddpm_points c = copy_points(&a);
    c.x[0] = INFINITY;
    assert_int_equal(ddpm_mmd_rbf(&c, &a, 0, 0, 1, &out, NULL), DDPM_ERR_NUMERIC);
    assert_non_null(strstr(ddpm_last_error(), "set a"));
    /* all points equal: the median distance is 0 and the bandwidth falls back to 1 */
    float z[8] = {0};
    ddpm_points zeros = {z, 4, 2};
    double bw;
    assert_int_equal(ddpm_mmd_rbf(&zeros, &zeros, 0, 0, 1, &out, &bw), DDPM_OK);
    assert_true(bw == 1.0);
    assert_true(fabs(out) < 1e-12);
    ddpm_points_free(&a);
    ddpm_points_free(&c);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_swd_self_and_symmetry),
        cmocka_unit_test(test_swd_shift),
        cmocka_unit_test(test_swd_unequal_exact),
        cmocka_unit_test(test_swd_discriminates),
        cmocka_unit_test(test_swd_errors),
        cmocka_unit_test(test_mmd_matches_reference),
        cmocka_unit_test(test_mmd_identical_and_independent),
        cmocka_unit_test(test_mmd_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

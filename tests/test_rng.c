/* test_rng.c - Philox known answers, distribution checks, addressing and thread independence. */
#include "testutil.h"

#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

/* Known-answer vectors of the Random123 distribution (kat_vectors, philox4x32 10 rounds). */
static void test_philox_known_answers(void **state) {
    (void)state;
    const uint32_t cases[3][10] = {
        {0, 0, 0, 0, 0, 0, 0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8},
        {0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff, 0x408f276d,
         0x41c83b0e, 0xa20bc7c6, 0x6d5451fd},
        {0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344, 0xa4093822, 0x299f31d0, 0xd16cfe09,
         0x94fdcceb, 0x5001e420, 0x24126ea1},
    };
    for (int i = 0; i < 3; i++) {
        uint32_t out[4];
        ddpm_philox4x32_10(cases[i], cases[i] + 4, out);
        for (int j = 0; j < 4; j++) assert_int_equal(out[j], cases[i][6 + j]);
    }
}

static void test_normal_moments(void **state) {
    (void)state;
    const size_t n = 1 << 20;
    float *z = malloc(n * sizeof *z);
    ddpm_randn(42, DDPM_STREAM_USER, 7, 3, z, n);
    double m1 = 0, m2 = 0, m4 = 0, lag = 0;
    size_t beyond3 = 0;
    for (size_t i = 0; i < n; i++) {
        m1 += z[i];
        m2 += (double)z[i] * z[i];
        m4 += (double)z[i] * z[i] * z[i] * z[i];
        if (i) lag += (double)z[i] * z[i - 1];
        if (fabsf(z[i]) > 3) beyond3++;
    }
    m1 /= n;
    m2 /= n;
    m4 /= n;
    lag /= n - 1;
    const double se = 1 / sqrt((double)n);
    assert_true(fabs(m1) < 5 * se);
    assert_true(fabs(m2 - 1) < 5 * sqrt(2.0) * se);
    assert_true(fabs(m4 - 3) < 5 * sqrt(96.0) * se);
    assert_true(fabs(lag) < 5 * se);
    /* P(|z| > 3) = 0.0026998 */
    assert_true(fabs((double)beyond3 / n - 0.0026998) < 5 * sqrt(0.0027 / n));
    free(z);
}

static void test_uniform_chi2(void **state) {
    (void)state;
    const size_t n = 1 << 20;
    float *u = malloc(n * sizeof *u);
    ddpm_randu(1, DDPM_STREAM_USER, 0, 0, u, n);
    size_t bins[64] = {0};
    for (size_t i = 0; i < n; i++) {
        assert_true(u[i] >= 0.0f && u[i] < 1.0f);
        bins[(int)(u[i] * 64)]++;
    }
    double chi2 = 0, e = n / 64.0;
    for (int b = 0; b < 64; b++) chi2 += (bins[b] - e) * (bins[b] - e) / e;
    /* 63 degrees of freedom: the 99.99th percentile is about 116. */
    assert_true(chi2 < 116);
    free(u);
    /* rand_below is unbiased over a small range. */
    size_t c[3] = {0};
    for (uint64_t i = 0; i < 30000; i++) c[ddpm_rand_below(5, DDPM_STREAM_USER, i, 0, 3)]++;
    for (int b = 0; b < 3; b++) assert_true(fabs(c[b] - 10000.0) < 5 * sqrt(30000 * 2.0 / 9));
}

/* Different items, steps, streams and seeds give uncorrelated sequences. */
static void test_independence(void **state) {
    (void)state;
    const size_t n = 1 << 16;
    float *a = malloc(n * sizeof *a), *b = malloc(n * sizeof *b);
    struct {
        uint64_t seed;
        uint32_t stream;
        uint64_t item;
        uint32_t step;
    } v[] = {{1, 1, 0, 0}, {1, 1, 1, 0}, {1, 1, 0, 1}, {1, 2, 0, 0}, {2, 1, 0, 0},
             {1, 1, 1ull << 32, 0}};
    for (size_t i = 0; i < sizeof v / sizeof v[0]; i++)
        for (size_t j = i + 1; j < sizeof v / sizeof v[0]; j++) {
            ddpm_randn(v[i].seed, v[i].stream, v[i].item, v[i].step, a, n);
            ddpm_randn(v[j].seed, v[j].stream, v[j].item, v[j].step, b, n);
            double c = 0;
            for (size_t k = 0; k < n; k++) c += (double)a[k] * b[k];
            assert_true(fabs(c / n) < 5 / sqrt((double)n));
        }
    free(a);
    free(b);
}

/* Draw k does not depend on how many draws were asked for. */
static void test_prefix(void **state) {
    (void)state;
    float a[1001], b[7];
    ddpm_randn(9, DDPM_STREAM_USER, 5, 6, a, 1001);
    ddpm_randn(9, DDPM_STREAM_USER, 5, 6, b, 7);
    assert_memory_equal(a, b, sizeof b);
    uint32_t u[9], w[3];
    ddpm_rand_u32(9, DDPM_STREAM_USER, 5, 6, u, 9);
    ddpm_rand_u32(9, DDPM_STREAM_USER, 5, 6, w, 3);
    assert_memory_equal(u, w, sizeof w);
}

/* Per-item noise filled by one or two threads is the same. */
static void fill(float *x, int items, size_t d, int threads) {
#pragma omp parallel for num_threads(threads) schedule(dynamic, 1)
    for (int i = 0; i < items; i++) ddpm_randn(123, DDPM_STREAM_SAMPLE_STEP, (uint64_t)i, 17, x + (size_t)i * d, d);
}

static void test_threads(void **state) {
    (void)state;
    const int items = 64;
    const size_t d = 257;
    float *a = malloc(items * d * sizeof *a), *b = malloc(items * d * sizeof *b);
    fill(a, items, d, 1);
    fill(b, items, d, 2);
    assert_memory_equal(a, b, items * d * sizeof *a);
    free(a);
    free(b);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_philox_known_answers), cmocka_unit_test(test_normal_moments),
        cmocka_unit_test(test_uniform_chi2),         cmocka_unit_test(test_independence),
        cmocka_unit_test(test_prefix),               cmocka_unit_test(test_threads),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

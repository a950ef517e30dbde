/* test_schedule.c - every buffer of every schedule against PyTorch, the formulas, bad input. */
#include "testutil.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static ddpm_safetensors fx;

static int setup(void **state) {
    (void)state;
    tu_load_fixture("schedule.safetensors", &fx);
    return 0;
}
static int teardown(void **state) {
    (void)state;
    ddpm_safetensors_free(&fx);
    return 0;
}

static void check_against_fixture(ddpm_schedule_kind kind, int T, double a, double b) {
    ddpm_schedule_config c;
    ddpm_schedule_config_default(&c, kind, T);
    if (a > 0) {
        c.beta_start = a;
        c.beta_end = b;
    }
    ddpm_schedule s;
    assert_int_equal(ddpm_schedule_init(&s, &c), DDPM_OK);
    for (int i = 0; i < DDPM_SCHEDULE_NUM_BUFFERS; i++) {
        char name[128];
        snprintf(name, sizeof name, "%s/%d/%s", ddpm_schedule_kind_name(kind), T,
                 ddpm_schedule_buffer_name(i));
        float *ref = tu_tensor(&fx, name, (size_t)s.n, NULL);
        /* Both sides compute in double and round to float: they agree to float precision. */
        tu_assert_close(ddpm_schedule_buffer(&s, i), ref, (size_t)s.n, 2e-6, 1e-12, name);
        for (int t = 0; t < s.n; t++) assert_true(isfinite(ddpm_schedule_buffer(&s, i)[t]));
        free(ref);
    }
    ddpm_schedule_free(&s);
}

static void test_linear(void **state) {
    (void)state;
    check_against_fixture(DDPM_SCHEDULE_LINEAR, 1000, 0, 0);
    check_against_fixture(DDPM_SCHEDULE_LINEAR, 10, 1e-3, 0.2);
}
static void test_linear_course(void **state) {
    (void)state;
    check_against_fixture(DDPM_SCHEDULE_LINEAR_COURSE, 500, 0, 0);
    ddpm_schedule_config c;
    ddpm_schedule_config_default(&c, DDPM_SCHEDULE_LINEAR_COURSE, 500);
    ddpm_schedule s;
    assert_int_equal(ddpm_schedule_init(&s, &c), DDPM_OK);
    assert_int_equal(s.n, 501);
    assert_int_equal(s.t0, 1);
    assert_true(s.alphas_cumprod[0] == 1.0f);
    /* The course keeps a_0 in the product: ab_1 = (1 - b_0)(1 - b_1). */
    assert_float_equal(s.alphas_cumprod[1], (1 - 1e-4) * (1 - (1e-4 + (0.02 - 1e-4) / 500)), 1e-7);
    assert_float_equal(s.betas[500], 0.02f, 1e-9);
    ddpm_schedule_free(&s);
}
static void test_cosine(void **state) {
    (void)state;
    check_against_fixture(DDPM_SCHEDULE_COSINE, 1000, 0, 0);
    check_against_fixture(DDPM_SCHEDULE_COSINE, 50, 0, 0);
    /* Against the formula: abar_t = f(t + 1) / f(0), f(u) = cos((u/T + s)/(1 + s) pi/2)^2, where
     * no beta was clipped. */
    const int T = 1000;
    const double s_ = 0.008;
    ddpm_schedule_config c;
    ddpm_schedule_config_default(&c, DDPM_SCHEDULE_COSINE, T);
    ddpm_schedule s;
    assert_int_equal(ddpm_schedule_init(&s, &c), DDPM_OK);
    double f0 = pow(cos(s_ / (1 + s_) * M_PI / 2), 2);
    for (int t = 0; t < T - 20; t += 7) {
        double f = pow(cos(((t + 1.0) / T + s_) / (1 + s_) * M_PI / 2), 2);
        assert_float_equal(s.alphas_cumprod[t], f / f0, 2e-6);
    }
    for (int t = 0; t < T; t++) assert_true(s.betas[t] <= 0.999f);
    assert_float_equal(s.betas[T - 1], 0.999f, 1e-7); /* the last beta is clipped */
    ddpm_schedule_free(&s);
}
static void test_sigmoid(void **state) {
    (void)state;
    check_against_fixture(DDPM_SCHEDULE_SIGMOID, 1000, 0, 0);
    const int T = 1000;
    ddpm_schedule_config c;
    ddpm_schedule_config_default(&c, DDPM_SCHEDULE_SIGMOID, T);
    ddpm_schedule s;
    assert_int_equal(ddpm_schedule_init(&s, &c), DDPM_OK);
    double vs = 1 / (1 + exp(3.0)), ve = 1 / (1 + exp(-3.0));
    double g0 = (ve - 1 / (1 + exp(3.0))) / (ve - vs);
    for (int t = 0; t < T - 20; t += 7) {
        double u = (t + 1.0) / T;
        double g = (ve - 1 / (1 + exp(-(u * 6 - 3)))) / (ve - vs);
        assert_float_equal(s.alphas_cumprod[t], g / g0, 2e-6);
    }
    ddpm_schedule_free(&s);
}
static void test_sigmoid_2d(void **state) {
    (void)state;
    check_against_fixture(DDPM_SCHEDULE_SIGMOID_2D, 100, 0, 0);
    ddpm_schedule_config c;
    ddpm_schedule_config_default(&c, DDPM_SCHEDULE_SIGMOID_2D, 100);
    ddpm_schedule s;
    assert_int_equal(ddpm_schedule_init(&s, &c), DDPM_OK);
    /* sigmoid(-6) * (5e-3 - 1e-5) + 1e-5 */
    assert_float_equal(s.betas[0], 1.0 / (1 + exp(6.0)) * (0.5e-2 - 1e-5) + 1e-5, 1e-10);
    ddpm_schedule_free(&s);
}

static void test_identities(void **state) {
    (void)state;
    for (int k = 0; k < DDPM_SCHEDULE_CUSTOM; k++) {
        ddpm_schedule_config c;
        ddpm_schedule_config_default(&c, (ddpm_schedule_kind)k, 200);
        ddpm_schedule s;
        assert_int_equal(ddpm_schedule_init(&s, &c), DDPM_OK);
        /* every step from t0, the course's first one too (its abar_1 keeps a_0 in the product,
         * and the posterior there is still x_0 itself) */
        for (int t = s.t0; t < s.n; t++) {
            double ab = s.alphas_cumprod[t];
            assert_float_equal(s.sqrt_alphas_cumprod[t] * s.sqrt_alphas_cumprod[t], ab, 1e-6);
            assert_float_equal(s.sqrt_one_minus_alphas_cumprod[t] * s.sqrt_one_minus_alphas_cumprod[t],
                               1 - ab, 1e-6);
            /* posterior mean coefficients reproduce x_0 when x_t is noiseless: c1 + c2 sqrt(ab) = sqrt(ab_prev) */
            double lhs = s.posterior_mean_coef1[t] + s.posterior_mean_coef2[t] * s.sqrt_alphas_cumprod[t];
            assert_float_equal(lhs, sqrt(s.alphas_cumprod_prev[t]), 2e-5);
            assert_true(s.posterior_variance[t] >= 0 && s.posterior_variance[t] <= s.betas[t] * 1.000001);
        }
        /* The first usable step: variance 0, finite clipped log variance, posterior = x_0. */
        assert_true(s.posterior_variance[s.t0] == 0.0f);
        assert_true(isfinite(s.posterior_log_variance_clipped[s.t0]));
        assert_float_equal(s.posterior_log_variance_clipped[s.t0], s.posterior_log_variance_clipped[s.t0 + 1], 0);
        ddpm_schedule_free(&s);
    }
}

static void test_custom_and_file(void **state) {
    (void)state;
    const char *path = tu_tmp("betas.txt");
    FILE *f = fopen(path, "w");
    fprintf(f, "# my betas\n0.1, 0.2\n0.3 0.4\n");
    fclose(f);
    double *b;
    int n;
    assert_int_equal(ddpm_betas_read(path, &b, &n), DDPM_OK);
    assert_int_equal(n, 4);
    ddpm_schedule_config c;
    ddpm_schedule_config_default(&c, DDPM_SCHEDULE_CUSTOM, n);
    c.betas = b;
    ddpm_schedule s;
    assert_int_equal(ddpm_schedule_init(&s, &c), DDPM_OK);
    free(b);
    assert_float_equal(s.alphas_cumprod[3], 0.9 * 0.8 * 0.7 * 0.6, 1e-7);
    ddpm_schedule_free(&s);
}

static void expect_error(int rc, int code, const char *needle) {
    assert_int_equal(rc, code);
    if (!strstr(ddpm_last_error(), needle))
        fail_msg("error message '%s' does not mention '%s'", ddpm_last_error(), needle);
}

static void test_bad_input(void **state) {
    (void)state;
    ddpm_schedule s;
    ddpm_schedule_config c;
    ddpm_schedule_config_default(&c, DDPM_SCHEDULE_LINEAR, 1);
    expect_error(ddpm_schedule_init(&s, &c), DDPM_ERR_INVALID, "at least 2");
    ddpm_schedule_config_default(&c, DDPM_SCHEDULE_LINEAR, 10);
    c.beta_start = 0;
    expect_error(ddpm_schedule_init(&s, &c), DDPM_ERR_INVALID, "beta-start");
    ddpm_schedule_config_default(&c, DDPM_SCHEDULE_LINEAR, 10);
    c.beta_end = 1.0;
    expect_error(ddpm_schedule_init(&s, &c), DDPM_ERR_INVALID, "beta-end");
    ddpm_schedule_config_default(&c, DDPM_SCHEDULE_LINEAR, 10);
    c.beta_start = 0.5;
    c.beta_end = 0.1;
    expect_error(ddpm_schedule_init(&s, &c), DDPM_ERR_INVALID, "smaller");
    double bad[3] = {0.1, 1.5, 0.2};
    ddpm_schedule_config_default(&c, DDPM_SCHEDULE_CUSTOM, 3);
    c.betas = bad;
    expect_error(ddpm_schedule_init(&s, &c), DDPM_ERR_INVALID, "outside (0, 1)");
    ddpm_schedule_kind k;
    expect_error(ddpm_schedule_kind_parse("quadratic", &k), DDPM_ERR_INVALID, "quadratic");

    double *b;
    int n;
    expect_error(ddpm_betas_read(tu_tmp("nope.txt"), &b, &n), DDPM_ERR_IO, "nope.txt");
    const char *path = tu_tmp("bad.txt");
    FILE *f = fopen(path, "w");
    fprintf(f, "0.1\n0.2\n0.3x\n");
    fclose(f);
    expect_error(ddpm_betas_read(path, &b, &n), DDPM_ERR_FORMAT, "bad.txt:3");
    f = fopen(path, "w");
    fprintf(f, "0.1\n2\n");
    fclose(f);
    expect_error(ddpm_betas_read(path, &b, &n), DDPM_ERR_FORMAT, "bad.txt:2");
    f = fopen(path, "w");
    fclose(f);
    expect_error(ddpm_betas_read(path, &b, &n), DDPM_ERR_FORMAT, "found 0 betas");
    /* A NUL byte ended the parse silently: "0.1\n0.2\0" "0.3\n0.4\n" read as two betas
     * (issue 11; tests/fixtures/regress/, also in the fuzz corpus). It names the line and the
     * offset; so does one inside a comment. */
    char fixture[4096];
    snprintf(fixture, sizeof fixture, "%s", tu_fixture_path("regress/betas-nul-byte.txt"));
    expect_error(ddpm_betas_read(fixture, &b, &n), DDPM_ERR_FORMAT,
                 "betas-nul-byte.txt:2: a NUL byte at offset 7: not a text file of betas");
    assert_null(b);
    tu_write_file(path, "0.1 0.2 # end\0 0.3\n", 19);
    expect_error(ddpm_betas_read(path, &b, &n), DDPM_ERR_FORMAT, "bad.txt:1: a NUL byte at offset 13");
}

/* Schedules whose float buffers would hold NaN or inf are refused, naming the buffer, the step
 * and the cause (issue 11, finding 10: `ddpm schedule --timesteps 40000` printed inf and exited
 * 0; betas of 1e-20 gave NaN log variances). A zero-terminal-SNR schedule keeps its two
 * infinities at the last step, and long schedules whose abar stays representable still build. */
static void test_non_finite(void **state) {
    (void)state;
    ddpm_schedule s;
    ddpm_schedule_config c;
    ddpm_schedule_config_default(&c, DDPM_SCHEDULE_LINEAR, 40000);
    expect_error(ddpm_schedule_init(&s, &c), DDPM_ERR_INVALID,
                 "the linear schedule of 40000 steps gives sqrt_recip_alphas_cumprod = inf at t = ");
    assert_non_null(strstr(ddpm_last_error(), " there underflows float; use fewer timesteps or smaller betas"));
    assert_null(s.storage_); /* nothing left allocated */
    const double tiny[3] = {1e-20, 1e-20, 1e-20};
    ddpm_schedule_config_default(&c, DDPM_SCHEDULE_CUSTOM, 3);
    c.betas = tiny;
    expect_error(ddpm_schedule_init(&s, &c), DDPM_ERR_INVALID,
                 "the custom schedule of 3 steps gives posterior_log_variance_clipped = NaN at t = 0");
    assert_non_null(strstr(ddpm_last_error(), ": 1 - abar rounds to 0 there, the betas are too small"));
    /* Betas of 1 - 1e-8: abar underflows even in double by t = 40 */
    double big[60];
    for (int i = 0; i < 60; i++) big[i] = 1.0 - 1e-8;
    ddpm_schedule_config_default(&c, DDPM_SCHEDULE_CUSTOM, 60);
    c.betas = big;
    expect_error(ddpm_schedule_init(&s, &c), DDPM_ERR_INVALID, "sqrt_recip_alphas_cumprod = inf");
    /* what still builds, every buffer finite: 17000 linear steps (abar_T ~ 2e-75, 0 in float)
     * and the longest cosine schedule; zero terminal SNR with inf only where abar = 0 */
    const int ok_T[2] = {17000, 1000000};
    const ddpm_schedule_kind ok_kind[2] = {DDPM_SCHEDULE_LINEAR, DDPM_SCHEDULE_COSINE};
    for (int k = 0; k < 2; k++) {
        ddpm_schedule_config_default(&c, ok_kind[k], ok_T[k]);
        if (ddpm_schedule_init(&s, &c)) fail_msg("%s", ddpm_last_error());
        for (int b = 0; b < DDPM_SCHEDULE_NUM_BUFFERS; b++)
            for (int i = 0; i < s.n; i++) assert_true(isfinite(ddpm_schedule_buffer(&s, b)[i]));
        ddpm_schedule_free(&s);
    }
    ddpm_schedule_config_default(&c, DDPM_SCHEDULE_COSINE, 1000);
    c.zero_terminal_snr = 1;
    if (ddpm_schedule_init(&s, &c)) fail_msg("%s", ddpm_last_error());
    for (int b = 0; b < DDPM_SCHEDULE_NUM_BUFFERS; b++)
        for (int i = 0; i < s.n; i++) {
            const float *v = ddpm_schedule_buffer(&s, b);
            const int inf_ok = i == 999 && (v == s.sqrt_recip_alphas_cumprod ||
                                            v == s.sqrt_recipm1_alphas_cumprod);
            assert_true(inf_ok ? isinf(v[i]) : isfinite(v[i]));
        }
    ddpm_schedule_free(&s);
}

/* Schedule configs from a checkpoint's metadata: timesteps 1e74 (tests/fixtures/regress/) was
 * converted to int unchecked (undefined behaviour; UBSan float-cast-overflow); a custom list of
 * betas was read with cJSON_GetArrayItem per index, quadratic in T (200,000 betas took
 * 40 s; now milliseconds, the bound leaves room for a loaded sanitizer run). */
static void test_schedule_json_bad(void **state) {
    (void)state;
    unsigned char *text;
    size_t size;
    char path[4096];
    snprintf(path, sizeof path, "%s", tu_fixture_path("regress/schedule-timesteps-1e74.json"));
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    text = calloc(1, 256);
    size = fread(text, 1, 255, f);
    fclose(f);
    assert_true(size > 0);
    ddpm_schedule s;
    expect_error(ddpm_schedule_from_json((const char *)text, &s), DDPM_ERR_FORMAT,
                 "\"timesteps\" is 1e+74, not an integer in 2..1000000");
    free(text);
    expect_error(ddpm_schedule_from_json("{\"kind\":\"cosine\",\"timesteps\":10.5}", &s),
                 DDPM_ERR_FORMAT, "not an integer");

    enum { T = 200000 };
    char *json = malloc((size_t)T * 8 + 100);
    assert_non_null(json);
    size_t k = (size_t)sprintf(json, "{\"kind\":\"custom\",\"timesteps\":%d,\"betas\":[", T);
    for (int i = 0; i < T; i++) k += (size_t)sprintf(json + k, i ? ",0.0001" : "0.0001");
    strcpy(json + k, "]}");
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    assert_int_equal(ddpm_schedule_from_json(json, &s), DDPM_OK);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    free(json);
    assert_int_equal(s.n, T);
    ddpm_schedule_free(&s);
    const double secs = (double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec);
    if (secs > 10.0) fail_msg("a custom schedule of %d betas took %.1f s to parse", T, secs);
}

static void check_timesteps(ddpm_spacing sp, int T, int K) {
    char name[96];
    snprintf(name, sizeof name, "timesteps/%s/%d/%d", ddpm_spacing_name(sp), T, K);
    const ddpm_tensor *ref = ddpm_safetensors_find(&fx, name);
    if (!ref) fail_msg("missing %s", name);
    assert_int_equal(ref->numel, K);
    ddpm_schedule_config c;
    ddpm_schedule_config_default(&c, DDPM_SCHEDULE_LINEAR, T);
    ddpm_schedule s;
    assert_int_equal(ddpm_schedule_init(&s, &c), DDPM_OK);
    int ts[1000];
    assert_int_equal(ddpm_timesteps(&s, K, sp, ts), DDPM_OK);
    for (int k = 0; k < K; k++) {
        int64_t want;
        memcpy(&want, (const char *)ref->data + 8 * k, 8);
        if (ts[k] != want) fail_msg("%s[%d] = %d, diffusers gives %lld", name, k, ts[k], (long long)want);
    }
    ddpm_schedule_free(&s);
}

static void test_timesteps(void **state) {
    (void)state;
    const int cases[][2] = {{1000, 50}, {1000, 7}, {500, 25}, {10, 10}, {10, 3}};
    for (int i = 0; i < 5; i++)
        for (int sp = 0; sp < 3; sp++) check_timesteps((ddpm_spacing)sp, cases[i][0], cases[i][1]);
    /* The course schedule's steps are 1..T. */
    ddpm_schedule_config c;
    ddpm_schedule_config_default(&c, DDPM_SCHEDULE_LINEAR_COURSE, 500);
    ddpm_schedule s;
    assert_int_equal(ddpm_schedule_init(&s, &c), DDPM_OK);
    int ts[500];
    assert_int_equal(ddpm_timesteps(&s, 500, DDPM_SPACING_LEADING, ts), DDPM_OK);
    assert_int_equal(ts[0], 500);
    assert_int_equal(ts[499], 1);
    expect_error(ddpm_timesteps(&s, 501, DDPM_SPACING_LEADING, ts), DDPM_ERR_INVALID, "1..500");
    expect_error(ddpm_timesteps(&s, 0, DDPM_SPACING_LEADING, ts), DDPM_ERR_INVALID, "got 0");
    ddpm_schedule_free(&s);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_linear),          cmocka_unit_test(test_linear_course),
        cmocka_unit_test(test_cosine),          cmocka_unit_test(test_sigmoid),
        cmocka_unit_test(test_sigmoid_2d),      cmocka_unit_test(test_identities),
        cmocka_unit_test(test_custom_and_file), cmocka_unit_test(test_bad_input),
        cmocka_unit_test(test_timesteps),      cmocka_unit_test(test_schedule_json_bad),
        cmocka_unit_test(test_non_finite),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}

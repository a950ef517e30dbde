/* test_samplers.c - the sigma-space samplers (DPM-Solver++ 2M / 2M SDE / 3M, Euler, Euler
 * ancestral, Heun), the karras and logsnr spacings and dynamic thresholding: each step against
 * its formula, whole runs against numpy references of the published update rules
 * (scripts/fixtures/gen_samplers.py -> tests/fixtures/samplers.safetensors), first-order
 * DPM-Solver++ and Euler against DDIM, and on the exact analytic Gaussian model: convergence to
 * the data distribution and the error's order as the number of steps grows. */
#include "testutil.h"

#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static ddpm_safetensors fx;

static int setup(void **state) {
    (void)state;
    tu_load_fixture("samplers.safetensors", &fx);
    return 0;
}
static int teardown(void **state) {
    (void)state;
    ddpm_safetensors_free(&fx);
    return 0;
}

static void make_schedule(ddpm_schedule *s, ddpm_schedule_kind kind, int T) {
    ddpm_schedule_config c;
    ddpm_schedule_config_default(&c, kind, T);
    assert_int_equal(ddpm_schedule_init(s, &c), DDPM_OK);
}

static double alpha_of(double sigma) { return 1.0 / sqrt(1.0 + sigma * sigma); }

/* ---- names and timesteps ---------------------------------------------------------------- */

static void test_names(void **state) {
    (void)state;
    for (int i = 0; i < DDPM_SAMPLER_COUNT; i++) {
        ddpm_sampler v = DDPM_SAMPLER_DDPM;
        assert_int_equal(ddpm_sampler_parse(ddpm_sampler_name((ddpm_sampler)i), &v), DDPM_OK);
        assert_int_equal(v, i);
    }
    for (int i = 0; i < DDPM_SPACING_COUNT; i++) {
        ddpm_spacing v = DDPM_SPACING_LEADING;
        assert_int_equal(ddpm_spacing_parse(ddpm_spacing_name((ddpm_spacing)i), &v), DDPM_OK);
        assert_int_equal(v, i);
    }
    assert_string_equal(ddpm_sampler_name(DDPM_SAMPLER_DPMPP_2M_SDE), "dpmpp-2m-sde");
    assert_string_equal(ddpm_spacing_name(DDPM_SPACING_KARRAS), "karras");
    ddpm_sampler v = DDPM_SAMPLER_HEUN;
    assert_int_equal(ddpm_sampler_parse("pndm", &v), DDPM_ERR_INVALID);
    assert_int_equal(v, DDPM_SAMPLER_HEUN);
    assert_non_null(strstr(ddpm_last_error(), "unknown sampler 'pndm' (expected ddpm, ddim"));
    assert_int_equal(ddpm_sampler_parse("unipc", &v), DDPM_OK);
    assert_int_equal(v, DDPM_SAMPLER_UNIPC);
    ddpm_unipc_variant uv = DDPM_UNIPC_BH2;
    assert_int_equal(ddpm_unipc_variant_parse("bh1", &uv), DDPM_OK);
    assert_int_equal(uv, DDPM_UNIPC_BH1);
    assert_string_equal(ddpm_unipc_variant_name(DDPM_UNIPC_BH2), "bh2");
    assert_int_equal(ddpm_unipc_variant_parse("bh3", &uv), DDPM_ERR_INVALID);
    ddpm_solver_type st;
    ddpm_final_sigma fs;
    assert_int_equal(ddpm_solver_type_parse("heun", &st), DDPM_OK);
    assert_int_equal(st, DDPM_SOLVER_HEUN);
    assert_int_equal(ddpm_final_sigma_parse("sigma-min", &fs), DDPM_OK);
    assert_int_equal(fs, DDPM_FINAL_SIGMA_MIN);
    assert_int_equal(ddpm_final_sigma_parse("min", &fs), DDPM_ERR_INVALID);
}

static void test_sigma_spacings(void **state) {
    (void)state;
    ddpm_schedule s;
    make_schedule(&s, DDPM_SCHEDULE_LINEAR, 1000);
    /* K = 10 against diffusers' _convert_to_karras / use_lu_lambdas + _sigma_to_t, rounded. */
    const char *names[] = {"leading", "karras", "logsnr", "trailing", "linspace"};
    const ddpm_spacing sp[] = {DDPM_SPACING_LEADING, DDPM_SPACING_KARRAS, DDPM_SPACING_LOGSNR,
                               DDPM_SPACING_TRAILING, DDPM_SPACING_LINSPACE};
    for (int q = 0; q < 5; q++) {
        char name[64];
        snprintf(name, sizeof name, "ts/%s", names[q]);
        int *ref = tu_tensor_int(&fx, name, 10), ts[10];
        assert_int_equal(ddpm_timesteps(&s, 10, sp[q], ts), DDPM_OK);
        for (int k = 0; k < 10; k++) assert_int_equal(ts[k], ref[k]);
        free(ref);
    }
    /* Every K: from T-1 down to t0, strictly decreasing (rounding collisions near t0 moved
     * apart), and K = T takes every step. Karras puts more steps at low noise than logsnr. */
    int *ts = malloc(sizeof(int) * 1000);
    for (int q = 1; q < 3; q++)
        for (int K = 1; K <= 1000; K += K < 20 ? 1 : 97) {
            assert_int_equal(ddpm_timesteps(&s, K, sp[q], ts), DDPM_OK);
            assert_int_equal(ts[0], 999);
            if (K > 1) assert_int_equal(ts[K - 1], 0);
            for (int k = 1; k < K; k++) assert_true(ts[k] < ts[k - 1]);
        }
    assert_int_equal(ddpm_timesteps(&s, 1000, DDPM_SPACING_KARRAS, ts), DDPM_OK);
    for (int k = 0; k < 1000; k++) assert_int_equal(ts[k], 999 - k);
    assert_int_equal(ddpm_timesteps(&s, 1001, DDPM_SPACING_KARRAS, ts), DDPM_ERR_INVALID);
    free(ts);
    ddpm_schedule_free(&s);

    /* The course's schedule starts at t0 = 1. */
    make_schedule(&s, DDPM_SCHEDULE_LINEAR_COURSE, 500);
    int c[12];
    assert_int_equal(ddpm_timesteps(&s, 12, DDPM_SPACING_LOGSNR, c), DDPM_OK);
    assert_int_equal(c[0], 500);
    assert_int_equal(c[11], 1);
    ddpm_schedule_free(&s);
}

static void test_sample_timesteps(void **state) {
    (void)state;
    ddpm_schedule s;
    make_schedule(&s, DDPM_SCHEDULE_COSINE, 100);
    ddpm_sample_opts o;
    ddpm_sample_opts_default(&o);
    int ts[100];
    double sig[101];
    /* DDPM: every step, ending at sigma 0. */
    assert_int_equal(ddpm_sample_num_steps(&s, &o), 100);
    assert_int_equal(ddpm_sample_timesteps(&s, &o, ts, sig), DDPM_OK);
    assert_int_equal(ts[0], 99);
    assert_int_equal(ts[99], 0);
    assert_true(sig[100] == 0.0);
    assert_float_equal(sig[0], sqrt((1.0 - s.alphas_cumprod[99]) / s.alphas_cumprod[99]), 1e-12);
    /* A sigma-space sampler ending at sigma_min: K + 1 levels, the last sigma(t0). DDIM always
     * ends at x_0. */
    o.sampler = DDPM_SAMPLER_EULER;
    o.steps = 7;
    o.spacing = DDPM_SPACING_TRAILING;
    o.final_sigma = DDPM_FINAL_SIGMA_MIN;
    assert_int_equal(ddpm_sample_num_steps(&s, &o), 7);
    assert_int_equal(ddpm_sample_timesteps(&s, &o, ts, sig), DDPM_OK);
    for (int k = 0; k < 7; k++) assert_true(sig[k] == ddpm_sigma(&s, ts[k]));
    assert_true(sig[7] == ddpm_sigma(&s, 0) && sig[7] > 0.0);
    o.sampler = DDPM_SAMPLER_DDIM;
    assert_int_equal(ddpm_sample_timesteps(&s, &o, ts, sig), DDPM_OK);
    assert_true(sig[7] == 0.0);
    /* Heun: one correction per step that does not end at 0: 2K - 1, or 2K with sigma-min
     * (trailing does not end at t0, so its last step moves). */
    o.sampler = DDPM_SAMPLER_HEUN;
    assert_int_equal(ddpm_sample_num_evals(&s, &o), 14);
    o.final_sigma = DDPM_FINAL_SIGMA_ZERO;
    assert_int_equal(ddpm_sample_num_evals(&s, &o), 13);
    o.sampler = DDPM_SAMPLER_DPMPP_3M;
    assert_int_equal(ddpm_sample_num_evals(&s, &o), 7);
    o.steps = 101;
    assert_int_equal(ddpm_sample_timesteps(&s, &o, ts, sig), DDPM_ERR_INVALID);
    ddpm_schedule_free(&s);
}

/* ---- single steps against their formulas ------------------------------------------------- */

#define N 8

static void fill(float *v, uint64_t stream, double scale) {
    ddpm_randn(31, DDPM_STREAM_USER, stream, 0, v, N);
    for (int i = 0; i < N; i++) v[i] = (float)(v[i] * scale);
}

static void test_euler_heun_steps(void **state) {
    (void)state;
    float x[N], x0[N], x0b[N], z[N], out[N];
    fill(x, 0, 1.0);
    fill(x0, 1, 0.5);
    fill(x0b, 2, 0.5);
    fill(z, 3, 1.0);
    const double pairs[][2] = {{80.0, 12.0}, {3.0, 2.5}, {0.5, 0.1}, {0.2, 0.0}, {1.0, 1.0}};
    for (int p = 0; p < 5; p++) {
        const double sg = pairs[p][0], sn = pairs[p][1];
        const double a = alpha_of(sg), an = alpha_of(sn);
        /* Euler: x_ve' = x_ve + (sn - sg) (x_ve - x0) / sg, x = alpha x_ve. */
        ddpm_step_euler(sg, sn, x, x0, N, out);
        for (int i = 0; i < N; i++) {
            const double xv = x[i] / a, want = an * (xv + (sn - sg) * (xv - x0[i]) / sg);
            assert_float_equal(out[i], want, 1e-5 * (1 + fabs(want)));
        }
        /* Euler ancestral: k-diffusion's get_ancestral_step with eta 1. */
        ddpm_step_euler_ancestral(sg, sn, x, x0, z, N, out);
        const double up = fmin(sn, sqrt(sn * sn * (sg * sg - sn * sn) / (sg * sg)));
        const double down = sqrt(sn * sn - up * up);
        for (int i = 0; i < N; i++) {
            const double xv = x[i] / a;
            const double want = an * (xv + (down - sg) * (xv - x0[i]) / sg + up * z[i]);
            assert_float_equal(out[i], want, 1e-5 * (1 + fabs(want)));
        }
        if (sn == 0.0) continue;
        /* Heun: the mean of the slopes at x and at the Euler predictor. */
        ddpm_step_heun(sg, sn, x, x0, x0b, N, out);
        for (int i = 0; i < N; i++) {
            const double xv = x[i] / a, d1 = (xv - x0[i]) / sg;
            const double x2 = xv + (sn - sg) * d1, d2 = (x2 - x0b[i]) / sn;
            const double want = an * (xv + (sn - sg) * 0.5 * (d1 + d2));
            assert_float_equal(out[i], want, 1e-5 * (1 + fabs(want)));
        }
    }
    /* With the same x_0 estimate at both ends the ODE's solution is x_ve - x0 proportional to
     * sigma, which Euler already follows exactly: the correction changes nothing. */
    float e[N];
    ddpm_step_heun(3.0, 1.0, x, x0, x0, N, out);
    ddpm_step_euler(3.0, 1.0, x, x0, N, e);
    for (int i = 0; i < N; i++) assert_float_equal(out[i], e[i], 1e-5);
}

/* DPM-Solver++ of order 1 is DDIM with eta 0 (Lu et al. 2022, section 4.1), to sigma 0 too. */
static void test_dpm_first_order_is_ddim(void **state) {
    (void)state;
    for (int kind = 0; kind < DDPM_SCHEDULE_CUSTOM; kind++) {
        ddpm_schedule s;
        make_schedule(&s, (ddpm_schedule_kind)kind, 200);
        float x[N], out[N], a[N], b[N], x0[N];
        fill(x, 4, 1.0);
        fill(out, 5, 1.0);
        for (int p = 0; p < 3; p++) {
            ddpm_step_opts o = {.prediction = (ddpm_prediction)p, .variance = DDPM_VAR_SMALL, .clip_x0 = p == 1};
            for (int t = s.t0 + 3; t < s.n; t += 37) {
                const int prevs[] = {t - 1, t - 3, s.t0, s.t0 - 1};
                for (int q = 0; q < 4; q++) {
                    ddpm_step_ddim(&s, &o, t, prevs[q], 0.0f, x, out, NULL, 1, N, a, x0);
                    const double sig = ddpm_sigma(&s, t);
                    const float *m[1] = {x0};
                    ddpm_step_dpmpp(1, DDPM_SOLVER_MIDPOINT, 0, &sig, ddpm_sigma(&s, prevs[q]), x,
                                    m, NULL, N, b);
                    /* DDIM takes sqrt(1 - abar_prev) from the float abar, whose rounding (6e-8)
                     * is relative 3e-8 / (1 - abar_prev) in it: near t = 0 of the tiny-beta
                     * schedules, times a large eps (clipped x_0), that is the difference. */
                    const double abp = prevs[q] >= s.t0 ? s.alphas_cumprod[prevs[q]] : 1.0;
                    const double slack = abp < 1.0 ? 6e-8 / sqrt(1.0 - abp) : 0.0;
                    const double ab = s.alphas_cumprod[t];
                    float tol[N];
                    for (int i = 0; i < N; i++) {
                        const double e = (x[i] - sqrt(ab) * x0[i]) / sqrt(1.0 - ab);
                        tol[i] = (float)(2e-5 * (1 + fabsf(a[i])) + slack * fabs(e));
                        assert_float_equal(b[i], a[i], tol[i]);
                    }
                    /* Euler in sigma space is the same step. */
                    ddpm_step_euler(sig, ddpm_sigma(&s, prevs[q]), x, x0, N, b);
                    for (int i = 0; i < N; i++) assert_float_equal(b[i], a[i], tol[i]);
                }
            }
        }
        ddpm_schedule_free(&s);
    }
}

/* The order-2 steps (ODE and SDE, both forms), the SDE's first-order step and Euler ancestral
 * on fixed inputs and noise against gen_samplers.py's values. */
static void test_steps_against_reference(void **state) {
    (void)state;
    ddpm_schedule s;
    make_schedule(&s, DDPM_SCHEDULE_LINEAR, 1000);
    float *x = tu_tensor(&fx, "step/x", N, NULL), *m0 = tu_tensor(&fx, "step/m0", N, NULL);
    float *m1 = tu_tensor(&fx, "step/m1", N, NULL), *z = tu_tensor(&fx, "step/z", N, NULL);
    const double sig[2] = {ddpm_sigma(&s, 500), ddpm_sigma(&s, 600)}, sn = ddpm_sigma(&s, 400);
    const float *m[2] = {m0, m1};
    float out[N];
    for (int sde = 0; sde < 2; sde++)
        for (int form = 0; form < 2; form++) {
            char name[64];
            snprintf(name, sizeof name, "step/dpmpp-2m%s/%s", sde ? "-sde" : "",
                     form ? "heun" : "midpoint");
            float *ref = tu_tensor(&fx, name, N, NULL);
            ddpm_step_dpmpp(2, (ddpm_solver_type)form, sde, sig, sn, x, m, z, N, out);
            tu_assert_close(out, ref, N, 2e-6, 2e-6, name);
            free(ref);
        }
    float *ref = tu_tensor(&fx, "step/dpmpp-2m-sde/first", N, NULL);
    ddpm_step_dpmpp(1, DDPM_SOLVER_MIDPOINT, 1, sig, sn, x, m, z, N, out);
    tu_assert_close(out, ref, N, 2e-6, 2e-6, "2M SDE first order");
    free(ref);
    ref = tu_tensor(&fx, "step/euler-ancestral", N, NULL);
    ddpm_step_euler_ancestral(sig[0], sn, x, m0, z, N, out);
    tu_assert_close(out, ref, N, 2e-6, 2e-6, "Euler ancestral");
    free(ref);
    free(x);
    free(m0);
    free(m1);
    free(z);
    ddpm_schedule_free(&s);
}

/* UniPC's predictor and corrector of orders 1..3, both variants, against gen_samplers.py's
 * transcription of diffusers' R/b system; and the predictor of order 1 is DPM-Solver++'s first
 * order step (DDIM) whatever the variant. */
static void test_unipc_steps_against_reference(void **state) {
    (void)state;
    ddpm_schedule s;
    make_schedule(&s, DDPM_SCHEDULE_LINEAR, 1000);
    float *x = tu_tensor(&fx, "step/x", N, NULL), *m0 = tu_tensor(&fx, "step/m0", N, NULL);
    float *m1 = tu_tensor(&fx, "step/m1", N, NULL), *m2 = tu_tensor(&fx, "step/m2", N, NULL);
    float *mt = tu_tensor(&fx, "step/mt", N, NULL);
    const double sig[3] = {ddpm_sigma(&s, 500), ddpm_sigma(&s, 600), ddpm_sigma(&s, 700)};
    const double sn = ddpm_sigma(&s, 400);
    const float *m[3] = {m0, m1, m2};
    float out[N], ddim[N];
    for (int v = 0; v < 2; v++)
        for (int order = 1; order <= 3; order++)
            for (int corr = 0; corr < 2; corr++) {
                char name[64];
                snprintf(name, sizeof name, "step/unipc-%c/%s/%d", corr ? 'c' : 'p',
                         ddpm_unipc_variant_name((ddpm_unipc_variant)v), order);
                float *ref = tu_tensor(&fx, name, N, NULL);
                if (corr)
                    ddpm_step_unipc_correct(order, (ddpm_unipc_variant)v, sig, sn, x, m, mt, N,
                                            out);
                else
                    ddpm_step_unipc_predict(order, (ddpm_unipc_variant)v, sig, sn, x, m, N, out);
                tu_assert_close(out, ref, N, 2e-6, 2e-6, name);
                free(ref);
            }
    for (int v = 0; v < 2; v++) {
        ddpm_step_unipc_predict(1, (ddpm_unipc_variant)v, sig, sn, x, m, N, out);
        ddpm_step_dpmpp(1, DDPM_SOLVER_MIDPOINT, 0, sig, sn, x, m, NULL, N, ddim);
        tu_assert_close(out, ddim, N, 1e-6, 1e-6, "UniP-1 = DDIM");
        /* To sigma 0 the predictor lands on the estimate; a zero-length step keeps x. */
        ddpm_step_unipc_predict(1, (ddpm_unipc_variant)v, sig, 0.0, x, m, N, out);
        assert_memory_equal(out, m0, sizeof out);
        ddpm_step_unipc_predict(3, (ddpm_unipc_variant)v, sig, sig[0], x, m, N, out);
        assert_memory_equal(out, x, sizeof out);
    }
    /* The corrector with the predictor's own estimate at x_t (mt = m0, a constant x_0 along the
     * step) changes nothing at order 1: the extra difference is zero. */
    ddpm_step_unipc_predict(1, DDPM_UNIPC_BH2, sig, sn, x, m, N, ddim);
    ddpm_step_unipc_correct(1, DDPM_UNIPC_BH2, sig, sn, x, m, m0, N, out);
    tu_assert_close(out, ddim, N, 1e-6, 1e-6, "UniC-1 with no change in x_0");
    free(x);
    free(m0);
    free(m1);
    free(m2);
    free(mt);
    ddpm_schedule_free(&s);
}

/* ---- whole runs ---------------------------------------------------------------------------- */

/* diffusers' scheduler-test model: eps = x t / (t + 1). */
static int linear_model(void *ctx, const float *x, int B, int t, const float *x0_prev, float *out) {
    (void)x0_prev;
    int *calls = ctx;
    ++*calls;
    for (int i = 0; i < B * 4; i++) out[i] = (float)((double)x[i] * t / (t + 1));
    return 0;
}

/* Ten steps of each deterministic sampler against the numpy run of the published rules. */
static void test_runs_against_reference(void **state) {
    (void)state;
    ddpm_schedule s;
    make_schedule(&s, DDPM_SCHEDULE_LINEAR, 1000);
    const struct {
        const char *name;
        ddpm_sampler sampler;
        ddpm_solver_type type;
        ddpm_spacing spacing;
        ddpm_final_sigma final;
        int lof, calls;
        int unipc_order;
        ddpm_unipc_variant variant;
    } runs[] = {
        {"dpmpp-2m/leading/zero", DDPM_SAMPLER_DPMPP_2M, DDPM_SOLVER_MIDPOINT, DDPM_SPACING_LEADING, DDPM_FINAL_SIGMA_ZERO, 1, 10, 0, DDPM_UNIPC_BH2},
        {"dpmpp-2m-heun/leading/zero", DDPM_SAMPLER_DPMPP_2M, DDPM_SOLVER_HEUN, DDPM_SPACING_LEADING, DDPM_FINAL_SIGMA_ZERO, 1, 10, 0, DDPM_UNIPC_BH2},
        {"dpmpp-2m/logsnr/sigma-min", DDPM_SAMPLER_DPMPP_2M, DDPM_SOLVER_MIDPOINT, DDPM_SPACING_LOGSNR, DDPM_FINAL_SIGMA_MIN, 1, 10, 0, DDPM_UNIPC_BH2},
        {"dpmpp-3m/karras/sigma-min/no-lof", DDPM_SAMPLER_DPMPP_3M, DDPM_SOLVER_MIDPOINT, DDPM_SPACING_KARRAS, DDPM_FINAL_SIGMA_MIN, 0, 10, 0, DDPM_UNIPC_BH2},
        {"dpmpp-3m/karras/zero", DDPM_SAMPLER_DPMPP_3M, DDPM_SOLVER_MIDPOINT, DDPM_SPACING_KARRAS, DDPM_FINAL_SIGMA_ZERO, 1, 10, 0, DDPM_UNIPC_BH2},
        {"euler/leading/zero", DDPM_SAMPLER_EULER, DDPM_SOLVER_MIDPOINT, DDPM_SPACING_LEADING, DDPM_FINAL_SIGMA_ZERO, 1, 10, 0, DDPM_UNIPC_BH2},
        {"heun/karras/zero", DDPM_SAMPLER_HEUN, DDPM_SOLVER_MIDPOINT, DDPM_SPACING_KARRAS, DDPM_FINAL_SIGMA_ZERO, 1, 19, 0, DDPM_UNIPC_BH2},
        {"heun/karras/sigma-min", DDPM_SAMPLER_HEUN, DDPM_SOLVER_MIDPOINT, DDPM_SPACING_KARRAS, DDPM_FINAL_SIGMA_MIN, 1, 19, 0, DDPM_UNIPC_BH2},
        {"unipc/bh2/2/leading/zero", DDPM_SAMPLER_UNIPC, DDPM_SOLVER_MIDPOINT, DDPM_SPACING_LEADING, DDPM_FINAL_SIGMA_ZERO, 1, 10, 2, DDPM_UNIPC_BH2},
        {"unipc/bh2/3/karras/sigma-min/no-lof", DDPM_SAMPLER_UNIPC, DDPM_SOLVER_MIDPOINT, DDPM_SPACING_KARRAS, DDPM_FINAL_SIGMA_MIN, 0, 10, 3, DDPM_UNIPC_BH2},
        {"unipc/bh1/3/logsnr/zero", DDPM_SAMPLER_UNIPC, DDPM_SOLVER_MIDPOINT, DDPM_SPACING_LOGSNR, DDPM_FINAL_SIGMA_ZERO, 1, 10, 3, DDPM_UNIPC_BH1},
        {"unipc/bh2/1/trailing/zero", DDPM_SAMPLER_UNIPC, DDPM_SOLVER_MIDPOINT, DDPM_SPACING_TRAILING, DDPM_FINAL_SIGMA_ZERO, 1, 10, 1, DDPM_UNIPC_BH2},
        {"unipc/bh1/2/linspace/sigma-min", DDPM_SAMPLER_UNIPC, DDPM_SOLVER_MIDPOINT, DDPM_SPACING_LINSPACE, DDPM_FINAL_SIGMA_MIN, 1, 10, 2, DDPM_UNIPC_BH1},
        {"unipc/bh2/3/trailing/zero/no-lof", DDPM_SAMPLER_UNIPC, DDPM_SOLVER_MIDPOINT, DDPM_SPACING_TRAILING, DDPM_FINAL_SIGMA_ZERO, 0, 10, 3, DDPM_UNIPC_BH2},
        {"unipc/bh2/3/leading/sigma-min", DDPM_SAMPLER_UNIPC, DDPM_SOLVER_MIDPOINT, DDPM_SPACING_LEADING, DDPM_FINAL_SIGMA_MIN, 1, 10, 3, DDPM_UNIPC_BH2},
    };
    float *xT = tu_tensor(&fx, "x_T", N, NULL);
    for (size_t r = 0; r < sizeof runs / sizeof *runs; r++) {
        ddpm_sample_opts o;
        ddpm_sample_opts_default(&o);
        o.sampler = runs[r].sampler;
        o.solver_type = runs[r].type;
        o.spacing = runs[r].spacing;
        o.final_sigma = runs[r].final;
        o.lower_order_final = runs[r].lof;
        if (runs[r].unipc_order) o.unipc_order = runs[r].unipc_order;
        o.unipc_variant = runs[r].variant;
        o.steps = 10;
        o.x_is_init = 1;
        float x[N];
        memcpy(x, xT, sizeof x);
        int calls = 0;
        assert_int_equal(ddpm_sample_loop(&s, &o, linear_model, &calls, 2, 4, x), DDPM_OK);
        assert_int_equal(calls, runs[r].calls);
        assert_int_equal(ddpm_sample_num_evals(&s, &o), runs[r].calls);
        char name[96];
        snprintf(name, sizeof name, "run/%s", runs[r].name);
        float *ref = tu_tensor(&fx, name, N, NULL);
        tu_assert_close(x, ref, N, 1e-5, 1e-5, name);
        free(ref);
    }
    free(xT);
    ddpm_schedule_free(&s);
}

/* ---- the exact analytic Gaussian model ---------------------------------------------------- */

/* Data ~ N(mu, sd^2) per coordinate: E[eps | x_t] = sqrt(1 - ab) (x_t - sqrt(ab) mu) /
 * (ab sd^2 + 1 - ab), in the prediction type asked for. */
typedef struct {
    const ddpm_schedule *s;
    double mu, sd;
    ddpm_prediction pred;
    int d, calls;
} gauss_model;

static int gauss_denoise(void *ctx, const float *x, int B, int t, const float *x0_prev,
                         float *out) {
    (void)x0_prev;
    gauss_model *m = ctx;
    m->calls++;
    /* abar from the sampler's own sigma: the float abar's rounding near t = 0 would otherwise
     * put a floor under the order measurements. */
    const double sg = ddpm_sigma(m->s, t), ab = 1.0 / (1.0 + sg * sg);
    for (int i = 0; i < B * m->d; i++) {
        const double e = sqrt(1 - ab) * (x[i] - sqrt(ab) * m->mu) / (ab * m->sd * m->sd + 1 - ab);
        const double x0 = (x[i] - sqrt(1 - ab) * e) / sqrt(ab);
        out[i] = (float)(m->pred == DDPM_PRED_EPS  ? e
                         : m->pred == DDPM_PRED_X0 ? x0
                                                   : sqrt(ab) * e - sqrt(1 - ab) * x0);
    }
    return 0;
}

/* Every new sampler, from x_T ~ N(0, 1), ends at N(mu, sd^2), for every prediction type: the
 * second-order ones in 25 steps; the first-order ones (Euler, Euler ancestral) in 150, while at
 * 25 their spread shrinks as DDIM's does (each coarse step leans on E[x_0 | x_t], whose variance
 * is below the data's; measured sd 0.273 and 0.257 for eps). */
static void test_gaussian_converges(void **state) {
    (void)state;
    ddpm_schedule s;
    /* Cosine: abar_T ~ 0, so x_T ~ N(0, 1) is the right start. */
    make_schedule(&s, DDPM_SCHEDULE_COSINE, 200);
    const int n = 2000, d = 2;
    float *x = malloc(sizeof(float) * n * d);
    for (int sm = DDPM_SAMPLER_DPMPP_2M; sm < DDPM_SAMPLER_COUNT; sm++)
        for (int p = 0; p < 3; p++)
            for (int few = 0; few < 2; few++) {
                const int first_order =
                    sm == DDPM_SAMPLER_EULER || sm == DDPM_SAMPLER_EULER_ANCESTRAL;
                if (!few && !first_order) continue;
                gauss_model m = {&s, 0.7, 0.3, (ddpm_prediction)p, d, 0};
                ddpm_sample_opts o;
                ddpm_sample_opts_default(&o);
                o.sampler = (ddpm_sampler)sm;
                o.steps = few ? 25 : 150;
                o.spacing = DDPM_SPACING_TRAILING;
                o.step.prediction = (ddpm_prediction)p;
                o.seed = 10 + (uint64_t)p;
                assert_int_equal(ddpm_sample_loop(&s, &o, gauss_denoise, &m, n, (size_t)d, x),
                                 DDPM_OK);
                assert_int_equal(m.calls, ddpm_sample_num_evals(&s, &o));
                double s1 = 0, s2 = 0;
                for (int i = 0; i < n * d; i++) {
                    s1 += x[i];
                    s2 += (double)x[i] * x[i];
                }
                const double mean = s1 / (n * d), sdev = sqrt(s2 / (n * d) - mean * mean);
                /* 4000 draws: the mean's standard error is 0.005, the sd's 0.0034. */
                const double sd_lo = few && first_order ? 0.22 : first_order ? 0.28 : 0.285;
                const double sd_hi = first_order ? 0.3 : 0.315;
                if (fabs(mean - 0.7) > 0.02 || sdev < sd_lo || sdev > sd_hi)
                    fail_msg("%s, %s, %d steps: mean %.4f sd %.4f (want 0.7, sd in %.3f..%.3f)",
                             ddpm_sampler_name((ddpm_sampler)sm), ddpm_prediction_name(m.pred),
                             o.steps, mean, sdev, sd_lo, sd_hi);
            }
    free(x);
    ddpm_schedule_free(&s);
}

/* The exact probability-flow ODE solution for the Gaussian: x_ve - mu scales with
 * sqrt(sd^2 + sigma^2), so from x_T at sigma_a the ODE reaches, at sigma_b (in the x_t scale),
 * alpha_b (mu + (x_T / alpha_a - mu) sqrt(sd^2 + sigma_b^2) / sqrt(sd^2 + sigma_a^2)). */
static double pf_exact(double xT, double mu, double sd, double sa, double sb) {
    return alpha_of(sb) * (mu + (xT / alpha_of(sa) - mu) * sqrt(sd * sd + sb * sb) /
                                    sqrt(sd * sd + sa * sa));
}

/* What a convergence run varies: sampler, spacing, final sigma, DPM-Solver++'s form, UniPC's
 * order (0 = its default) and variant. */
typedef struct {
    const char *what;
    ddpm_sampler sm;
    ddpm_spacing sp;
    ddpm_final_sigma fin;
    ddpm_solver_type type;
    double lo, hi;
    int unipc_order;
    ddpm_unipc_variant variant;
} conv_case;

static void conv_opts(const conv_case *c, int K, ddpm_sample_opts *o) {
    ddpm_sample_opts_default(o);
    o->sampler = c->sm;
    o->steps = K;
    o->spacing = c->sp;
    o->final_sigma = c->fin;
    o->solver_type = c->type;
    if (c->unipc_order) o->unipc_order = c->unipc_order;
    o->unipc_variant = c->variant;
    o->lower_order_final = 0;
}

/* The largest deviation from the exact ODE solution of a K-step deterministic run. */
static double pf_error(const ddpm_schedule *s, const conv_case *c, int K) {
    enum { D = 9 };
    gauss_model m = {s, 0.4, 0.3, DDPM_PRED_EPS, D, 0};
    ddpm_sample_opts o;
    conv_opts(c, K, &o);
    o.x_is_init = 1;
    float x[D], xT[D];
    for (int i = 0; i < D; i++) xT[i] = x[i] = (float)(-2.0 + 0.5 * i);
    assert_int_equal(ddpm_sample_loop(s, &o, gauss_denoise, &m, 1, D, x), DDPM_OK);
    int ts[1000];
    double sig[1001];
    assert_int_equal(ddpm_sample_timesteps(s, &o, ts, sig), DDPM_OK);
    double err = 0;
    for (int i = 0; i < D; i++)
        err = fmax(err, fabs(x[i] - pf_exact(xT[i], m.mu, m.sd, sig[0], sig[K])));
    return err;
}

/* The log-log slope of the error against the number of steps over K = k0, 2 k0, 4 k0, 8 k0
 * (a least-squares fit), printed with the errors. */
static double order_slope(const ddpm_schedule *s, const conv_case *c, int k0) {
    double sx = 0, sy = 0, sxx = 0, sxy = 0;
    printf("  %-28s", c->what);
    for (int j = 0; j < 4; j++) {
        const int K = k0 << j;
        const double e = pf_error(s, c, K);
        printf(" K=%d %.2e", K, e);
        const double lx = log(K), ly = log(e);
        sx += lx, sy += ly, sxx += lx * lx, sxy += lx * ly;
    }
    const double slope = -(4 * sxy - sx * sy) / (4 * sxx - sx * sx);
    printf("  order %.2f\n", slope);
    return slope;
}

/* The error falls at the solver's order (the slope of log error against log K, K = 20..160).
 * The second-order runs space steps uniformly in log-SNR and end at sigma_min: the last step is
 * then t0, so the final step moves nothing, where ending at 0 would force a first-order last
 * step whose error (set by sigma at t0, not by K) would be what is measured. DDIM and Euler are
 * first order all the way to 0 (trailing: the last step shrinks with K). Measured: DDIM and
 * Euler 0.95 (1.02 log-SNR spaced), DPM-Solver++ 2M 1.96 (Heun form 2.04), Heun 2.11, 3M 2.52.
 * 3M is held to "at least second order": its first step is first order (the multistep warm-up,
 * as diffusers does it), and that one step's O(h^2) error bounds the global order at 2 as K
 * grows; it is small where the first step starts (sigma >> sd, x_0 estimate ~ mu), so the slope
 * over these K is 2.5 (2.46 on cosine schedules of 1000 to 16000 steps, not a rounding effect). */
static void test_order_of_convergence(void **state) {
    (void)state;
    ddpm_schedule s;
    make_schedule(&s, DDPM_SCHEDULE_LINEAR, 1000);
    const conv_case c[] = {
        {"ddim (trailing, to 0)", DDPM_SAMPLER_DDIM, DDPM_SPACING_TRAILING, DDPM_FINAL_SIGMA_ZERO, DDPM_SOLVER_MIDPOINT, 0.8, 1.2, 0, DDPM_UNIPC_BH2},
        {"euler (trailing, to 0)", DDPM_SAMPLER_EULER, DDPM_SPACING_TRAILING, DDPM_FINAL_SIGMA_ZERO, DDPM_SOLVER_MIDPOINT, 0.8, 1.2, 0, DDPM_UNIPC_BH2},
        {"euler", DDPM_SAMPLER_EULER, DDPM_SPACING_LOGSNR, DDPM_FINAL_SIGMA_MIN, DDPM_SOLVER_MIDPOINT, 0.8, 1.2, 0, DDPM_UNIPC_BH2},
        {"dpmpp-2m midpoint", DDPM_SAMPLER_DPMPP_2M, DDPM_SPACING_LOGSNR, DDPM_FINAL_SIGMA_MIN, DDPM_SOLVER_MIDPOINT, 1.75, 2.3, 0, DDPM_UNIPC_BH2},
        {"dpmpp-2m heun", DDPM_SAMPLER_DPMPP_2M, DDPM_SPACING_LOGSNR, DDPM_FINAL_SIGMA_MIN, DDPM_SOLVER_HEUN, 1.75, 2.3, 0, DDPM_UNIPC_BH2},
        {"heun", DDPM_SAMPLER_HEUN, DDPM_SPACING_LOGSNR, DDPM_FINAL_SIGMA_MIN, DDPM_SOLVER_MIDPOINT, 1.75, 2.3, 0, DDPM_UNIPC_BH2},
        {"dpmpp-3m", DDPM_SAMPLER_DPMPP_3M, DDPM_SPACING_LOGSNR, DDPM_FINAL_SIGMA_MIN, DDPM_SOLVER_MIDPOINT, 2.2, 3.6, 0, DDPM_UNIPC_BH2},
    };
    for (size_t i = 0; i < sizeof c / sizeof *c; i++) {
        const double p = order_slope(&s, &c[i], 20);
        if (p < c[i].lo || p > c[i].hi)
            fail_msg("%s: order %.2f, expected %.2f..%.2f", c[i].what, p, c[i].lo, c[i].hi);
    }
    ddpm_schedule_free(&s);
}

/* A two-component Gaussian mixture per coordinate (weights 1/2, means +-mu, sd): E[x_0 | x_t]
 * is nonlinear in x_t, exact, and given as eps. */
typedef struct {
    const ddpm_schedule *s;
    double mu, sd;
    int d;
} mixture_model;

static int mixture_denoise(void *ctx, const float *x, int B, int t, const float *x0_prev,
                           float *out) {
    (void)x0_prev;
    const mixture_model *m = ctx;
    const double sg = ddpm_sigma(m->s, t), a = 1.0 / sqrt(1.0 + sg * sg), sn = sg * a;
    const double var = a * a * m->sd * m->sd + sn * sn, gain = a * m->sd * m->sd / var;
    for (int i = 0; i < B * m->d; i++) {
        const double xi = x[i];
        /* responsibilities of the +mu and -mu components, and each one's posterior mean */
        const double lp = -(xi - a * m->mu) * (xi - a * m->mu) / (2 * var);
        const double ln = -(xi + a * m->mu) * (xi + a * m->mu) / (2 * var);
        const double wp = 1.0 / (1.0 + exp(ln - lp));
        const double x0 = wp * (m->mu + gain * (xi - a * m->mu)) +
                          (1 - wp) * (-m->mu + gain * (xi + a * m->mu));
        out[i] = (float)((xi - a * x0) / sn);
    }
    return 0;
}

/* One deterministic run from the fixed x_T, ending at sigma(t0) (linspace spacing, so the grid
 * is uniform in t and, at K = T, every step). */
static void conv_run(const ddpm_schedule *s, ddpm_sampler sm, int order, int K, ddpm_spacing sp,
                     ddpm_denoise_fn f, void *ctx, int d, const float *xT, double *out) {
    ddpm_sample_opts o;
    ddpm_sample_opts_default(&o);
    o.sampler = sm;
    o.steps = K;
    o.spacing = sp;
    o.final_sigma = DDPM_FINAL_SIGMA_MIN;
    o.unipc_order = order;
    o.lower_order_final = 0;
    o.x_is_init = 1;
    float x[16];
    memcpy(x, xT, sizeof(float) * (size_t)d);
    assert_int_equal(ddpm_sample_loop(s, &o, f, ctx, 1, (size_t)d, x), DDPM_OK);
    for (int i = 0; i < d; i++) out[i] = x[i];
}

static double max_diff(const double *a, const double *b, int d) {
    double e = 0;
    for (int i = 0; i < d; i++) e = fmax(e, fabs(a[i] - b[i]));
    return e;
}

/* UniPC converges faster than DDIM as the steps grow, ending at sigma(t0):
 *  - the Gaussian, against the exact ODE solution, on a cosine schedule of 4000 steps spaced in
 *    log-SNR (finer than the 1000-step linear one, whose last steps near t0 stay 3, 2, 1, 0 for
 *    every large K and so put a floor under the error): the slope of log error against log K
 *    over K = 20..160. UniC adds one order: measured DDIM's step (Euler) 0.98, UniPC-1 1.95,
 *    UniPC-2 2.84, UniPC-3 2.99 (its errors 9.8e-3, 2.2e-6 (a cancellation), 3.0e-5, 4.1e-6);
 *  - the nonlinear Gaussian mixture on a linear schedule of T = 1001 steps, against the
 *    many-step DDIM solution: the DDIM step (sigma-space Euler, equal to DDIM eta 0:
 *    test_dpm_first_order_is_ddim) at every step and at every other (linspace: uniform grids in
 *    t), Richardson-extrapolated (2 E_T - E_{T/2}; the two differ by 2.2e-3; on the Gaussian the
 *    extrapolated value is 1.5e-5 from the exact one). Measured at K = 10, 20, 40 (log-SNR):
 *    DDIM 8.9e-2, 4.4e-2, 2.2e-2; UniPC-2 4.0e-2, 3.5e-3, 3.8e-4. */
static void test_unipc_convergence(void **state) {
    (void)state;
    ddpm_schedule s;
    make_schedule(&s, DDPM_SCHEDULE_LINEAR, 1001);
    enum { D = 9 };
    float xT[D];
    for (int i = 0; i < D; i++) xT[i] = (float)(-2.0 + 0.5 * i);
    const int Ks[] = {20, 40, 80, 160}, Km[] = {10, 20, 40};
    const ddpm_sampler sms[] = {DDPM_SAMPLER_EULER, DDPM_SAMPLER_UNIPC, DDPM_SAMPLER_UNIPC,
                                DDPM_SAMPLER_UNIPC};
    const int orders[] = {2, 1, 2, 3};
    const double lo[] = {0.85, 1.75, 2.6, 2.6}, hi[] = {1.2, 2.3, 3.3, 4.5};
    ddpm_schedule sc;
    make_schedule(&sc, DDPM_SCHEDULE_COSINE, 4000);
    gauss_model g = {&sc, 0.4, 0.3, DDPM_PRED_EPS, D, 0};
    for (int c = 0; c < 4; c++) {
        double sx = 0, sy = 0, sxx = 0, sxy = 0;
        printf("  gaussian %s-%d:", ddpm_sampler_name(sms[c]), orders[c]);
        for (int j = 0; j < 4; j++) {
            double x[D], want[D];
            conv_run(&sc, sms[c], orders[c], Ks[j], DDPM_SPACING_LOGSNR, gauss_denoise, &g, D, xT, x);
            for (int i = 0; i < D; i++)
                want[i] = pf_exact(xT[i], g.mu, g.sd, ddpm_sigma(&sc, sc.n - 1), ddpm_sigma(&sc, 0));
            const double e = max_diff(x, want, D);
            printf(" K=%d %.2e", Ks[j], e);
            sx += log(Ks[j]), sy += log(e), sxx += log(Ks[j]) * log(Ks[j]), sxy += log(Ks[j]) * log(e);
        }
        const double slope = -(4 * sxy - sx * sy) / (4 * sxx - sx * sx);
        printf("  order %.2f\n", slope);
        if (slope < lo[c] || slope > hi[c])
            fail_msg("gaussian %s-%d: order %.2f, expected %.2f..%.2f",
                     ddpm_sampler_name(sms[c]), orders[c], slope, lo[c], hi[c]);
    }
    /* The extrapolated many-step reference, checked where the limit is known: the Gaussian. */
    {
        gauss_model g1 = {&s, 0.4, 0.3, DDPM_PRED_EPS, D, 0};
        double a[D], b[D], want[D];
        conv_run(&s, DDPM_SAMPLER_EULER, 2, 1001, DDPM_SPACING_LINSPACE, gauss_denoise, &g1, D, xT, a);
        conv_run(&s, DDPM_SAMPLER_EULER, 2, 501, DDPM_SPACING_LINSPACE, gauss_denoise, &g1, D, xT, b);
        for (int i = 0; i < D; i++) {
            want[i] = pf_exact(xT[i], g1.mu, g1.sd, ddpm_sigma(&s, s.n - 1), ddpm_sigma(&s, 0));
            a[i] = 2 * a[i] - b[i];
        }
        printf("  gaussian: extrapolated many-step DDIM vs the exact solution %.2e\n",
               max_diff(a, want, D));
        assert_true(max_diff(a, want, D) < 2e-5);
    }
    mixture_model mx = {&s, 0.5, 0.15, D};
    double eT[D], eH[D], ref[D];
    conv_run(&s, DDPM_SAMPLER_EULER, 2, 1001, DDPM_SPACING_LINSPACE, mixture_denoise, &mx, D, xT, eT);
    conv_run(&s, DDPM_SAMPLER_EULER, 2, 501, DDPM_SPACING_LINSPACE, mixture_denoise, &mx, D, xT, eH);
    for (int i = 0; i < D; i++) ref[i] = 2 * eT[i] - eH[i];
    printf("  mixture: DDIM every step vs every other %.2e\n", max_diff(eT, eH, D));
    double prev_ddim = 0, prev_unipc = 0;
    for (int j = 0; j < 3; j++) {
        double a[D], b[D];
        conv_run(&s, DDPM_SAMPLER_EULER, 2, Km[j], DDPM_SPACING_LOGSNR, mixture_denoise, &mx, D, xT, a);
        conv_run(&s, DDPM_SAMPLER_UNIPC, 2, Km[j], DDPM_SPACING_LOGSNR, mixture_denoise, &mx, D, xT, b);
        const double ed = max_diff(a, ref, D), eu = max_diff(b, ref, D);
        printf("  mixture K=%d: DDIM %.2e UniPC-2 %.2e\n", Km[j], ed, eu);
        /* UniPC below DDIM at every K (5x from K = 20), and falling over twice as fast with
         * each doubling. */
        if (!(eu < (j ? 0.2 : 1.0) * ed)) fail_msg("K=%d: UniPC %.2e not below DDIM %.2e", Km[j], eu, ed);
        if (j > 0 && !(prev_unipc / eu > 2.0 * (prev_ddim / ed)))
            fail_msg("K=%d: UniPC's error fell %.2fx, DDIM's %.2fx", Km[j], prev_unipc / eu,
                     prev_ddim / ed);
        prev_ddim = ed, prev_unipc = eu;
    }
    ddpm_schedule_free(&s);
    ddpm_schedule_free(&sc);
}

/* ---- dynamic thresholding ------------------------------------------------------------------ */

static void test_threshold_formula(void **state) {
    (void)state;
    /* |x| sorted: 0.5 1 2 3 4. ratio 0.5: q = 2; ratio 0.9: q = 3 + 0.6 (4 - 3) = 3.6 (linear
     * interpolation at 0.9 (5 - 1)), capped by max_value; an item inside [-1, 1] keeps s = 1. */
    const float item[5] = {3, -0.5f, 2, -4, 1}, small[5] = {0.2f, -0.9f, 0.5f, 0, 0.99f};
    const struct {
        float ratio, max, s;
    } c[] = {{0.5f, 10, 2}, {0.9f, 10, 3.6f}, {0.9f, 3, 3}, {1.0f, 10, 4}, {0.9f, 1, 1}};
    for (size_t q = 0; q < sizeof c / sizeof *c; q++) {
        float x[10], scratch[5];
        memcpy(x, item, sizeof item);
        memcpy(x + 5, small, sizeof small);
        ddpm_threshold_x0(x, 2, 5, c[q].ratio, c[q].max, scratch);
        for (int j = 0; j < 5; j++) {
            assert_float_equal(x[j], fminf(fmaxf(item[j], -c[q].s), c[q].s) / c[q].s, 1e-6);
            assert_float_equal(x[5 + j], small[j], 0);
        }
    }
}

typedef struct {
    double maxabs;
} x0_watch;

static int watch_x0(void *ctx, int k, int steps, int t, const float *x, const float *x0) {
    (void)k, (void)steps, (void)t, (void)x;
    x0_watch *w = ctx;
    for (int i = 0; i < 4 * 8; i++) w->maxabs = fmax(w->maxabs, fabsf(x0[i]));
    return 0;
}

/* Thresholding with max value 1 is clipping; above 1 it rescales instead of clamping, and every
 * x_0 estimate stays in [-1, 1]. For DDIM (through its x_0-prediction path) and the sigma-space
 * samplers alike. */
static void test_threshold_in_loop(void **state) {
    (void)state;
    ddpm_schedule s;
    make_schedule(&s, DDPM_SCHEDULE_COSINE, 100);
    /* Data far outside [-1, 1], so the x_0 estimates need it. */
    gauss_model m = {&s, 1.5, 0.8, DDPM_PRED_EPS, 8, 0};
    const ddpm_sampler sms[] = {DDPM_SAMPLER_DDIM, DDPM_SAMPLER_DDPM, DDPM_SAMPLER_DPMPP_2M,
                                DDPM_SAMPLER_EULER, DDPM_SAMPLER_UNIPC};
    for (int q = 0; q < 5; q++) {
        ddpm_sample_opts o;
        ddpm_sample_opts_default(&o);
        o.sampler = sms[q];
        o.steps = 10;
        o.seed = 3;
        float clip[32], thr[32], big[32];
        o.step.clip_x0 = 1;
        assert_int_equal(ddpm_sample_loop(&s, &o, gauss_denoise, &m, 4, 8, clip), DDPM_OK);
        o.step.clip_x0 = 0;
        o.threshold = 1;
        assert_int_equal(ddpm_sample_loop(&s, &o, gauss_denoise, &m, 4, 8, thr), DDPM_OK);
        tu_assert_close(thr, clip, 32, 1e-4, 1e-4, ddpm_sampler_name(sms[q]));
        x0_watch w = {0};
        o.threshold_max = 3.0f;
        o.threshold_ratio = 0.9f;
        o.progress = watch_x0;
        o.progress_ctx = &w;
        assert_int_equal(ddpm_sample_loop(&s, &o, gauss_denoise, &m, 4, 8, big), DDPM_OK);
        assert_true(w.maxabs <= 1.0);
        assert_true(tu_max_rel_err(big, clip, 32, 1.0) > 1e-2);
        o.threshold_ratio = 0.0f;
        assert_int_equal(ddpm_sample_loop(&s, &o, gauss_denoise, &m, 4, 8, big), DDPM_ERR_INVALID);
        assert_non_null(strstr(ddpm_last_error(), "thresholding"));
    }
    ddpm_schedule_free(&s);
}

/* ---- noise streams, errors ------------------------------------------------------------------ */

/* The stochastic samplers draw each item's noise from its own stream: a sample does not depend on
 * the batch it was drawn in nor on the thread count. */
static void test_batch_and_threads(void **state) {
    (void)state;
    ddpm_schedule s;
    make_schedule(&s, DDPM_SCHEDULE_LINEAR, 200);
    const ddpm_sampler sms[] = {DDPM_SAMPLER_DPMPP_2M_SDE, DDPM_SAMPLER_EULER_ANCESTRAL,
                                DDPM_SAMPLER_HEUN, DDPM_SAMPLER_UNIPC};
    for (int q = 0; q < 4; q++) {
        gauss_model m = {&s, 0.1, 0.5, DDPM_PRED_V, 5, 0};
        ddpm_sample_opts o;
        ddpm_sample_opts_default(&o);
        o.sampler = sms[q];
        o.steps = 12;
        o.spacing = DDPM_SPACING_KARRAS;
        o.step.prediction = DDPM_PRED_V;
        o.seed = 77;
        float all[8 * 5], part[8 * 5], thr[8 * 5];
        assert_int_equal(ddpm_sample_loop(&s, &o, gauss_denoise, &m, 8, 5, all), DDPM_OK);
        assert_int_equal(ddpm_sample_loop(&s, &o, gauss_denoise, &m, 3, 5, part), DDPM_OK);
        o.first_item = 3;
        assert_int_equal(ddpm_sample_loop(&s, &o, gauss_denoise, &m, 5, 5, part + 15), DDPM_OK);
        assert_memory_equal(all, part, sizeof all);
        o.first_item = 0;
        const int saved = omp_get_max_threads();
        omp_set_num_threads(1);
        assert_int_equal(ddpm_sample_loop(&s, &o, gauss_denoise, &m, 8, 5, thr), DDPM_OK);
        omp_set_num_threads(saved);
        assert_memory_equal(all, thr, sizeof all);
        /* Another seed, other noise (and x_T). */
        o.seed = 78;
        assert_int_equal(ddpm_sample_loop(&s, &o, gauss_denoise, &m, 8, 5, thr), DDPM_OK);
        assert_true(memcmp(all, thr, sizeof all) != 0);
    }
    ddpm_schedule_free(&s);
}

/* The noise of step k is item i's stream at that step's t, randn(seed, SAMPLE_STEP,
 * first_item + i, t), as for DDPM and DDIM: two Euler ancestral steps redone by hand. */
static void test_noise_streams(void **state) {
    (void)state;
    ddpm_schedule s;
    make_schedule(&s, DDPM_SCHEDULE_LINEAR, 100);
    gauss_model m = {&s, 0.2, 0.5, DDPM_PRED_EPS, 4, 0};
    ddpm_sample_opts o;
    ddpm_sample_opts_default(&o);
    o.sampler = DDPM_SAMPLER_EULER_ANCESTRAL;
    o.steps = 2;
    o.spacing = DDPM_SPACING_TRAILING;
    o.final_sigma = DDPM_FINAL_SIGMA_MIN;
    o.seed = 5;
    o.first_item = 7;
    float x[8], want[8], out[8], x0[8], z[8];
    assert_int_equal(ddpm_sample_loop(&s, &o, gauss_denoise, &m, 2, 4, x), DDPM_OK);
    int ts[2];
    double sig[3];
    assert_int_equal(ddpm_sample_timesteps(&s, &o, ts, sig), DDPM_OK);
    for (int i = 0; i < 2; i++)
        ddpm_randn(5, DDPM_STREAM_SAMPLE_INIT, 7 + (uint64_t)i, 0, want + 4 * i, 4);
    for (int k = 0; k < 2; k++) {
        gauss_denoise(&m, want, 2, ts[k], NULL, out);
        ddpm_predict_x0(&s, &o, ts[k], want, out, 2, 4, x0, NULL);
        for (int i = 0; i < 2; i++)
            ddpm_randn(5, DDPM_STREAM_SAMPLE_STEP, 7 + (uint64_t)i, (uint32_t)ts[k], z + 4 * i, 4);
        ddpm_step_euler_ancestral(sig[k], sig[k + 1], want, x0, z, 8, want);
    }
    assert_memory_equal(x, want, sizeof x);
    ddpm_schedule_free(&s);
}

/* Fails at the n-th network call. */
static int fail_at(void *ctx, const float *x, int B, int t, const float *x0_prev, float *out) {
    int *left = ctx;
    if (--*left == 0) return ddpm_fail(DDPM_ERR_NUMERIC, "model failed at t=%d", t);
    for (int i = 0; i < B * 4; i++) out[i] = 0.5f * x[i];
    (void)x0_prev;
    return 0;
}

static int stop_at_3(void *ctx, int k, int steps, int t, const float *x, const float *x0) {
    (void)ctx, (void)steps, (void)t, (void)x, (void)x0;
    return k == 3;
}

static void test_errors(void **state) {
    (void)state;
    ddpm_schedule s;
    make_schedule(&s, DDPM_SCHEDULE_LINEAR, 50);
    ddpm_sample_opts o;
    ddpm_sample_opts_default(&o);
    float x[8];
    /* A failure in Heun's second call of a step (call 2) comes back as it is. */
    o.sampler = DDPM_SAMPLER_HEUN;
    o.steps = 5;
    int left = 2;
    assert_int_equal(ddpm_sample_loop(&s, &o, fail_at, &left, 2, 4, x), DDPM_ERR_NUMERIC);
    assert_int_equal(left, 0);
    o.sampler = DDPM_SAMPLER_DPMPP_3M;
    left = 4;
    assert_int_equal(ddpm_sample_loop(&s, &o, fail_at, &left, 2, 4, x), DDPM_ERR_NUMERIC);
    left = 100;
    o.progress = stop_at_3;
    assert_int_equal(ddpm_sample_loop(&s, &o, fail_at, &left, 2, 4, x), DDPM_ERR_INTERRUPTED);
    assert_int_equal(left, 97);
    /* UniPC: a failure at the third call (after a corrector's input was made), an order outside
     * 1..3 */
    o.sampler = DDPM_SAMPLER_UNIPC;
    o.unipc_order = 3;
    left = 3;
    o.progress = NULL;
    assert_int_equal(ddpm_sample_loop(&s, &o, fail_at, &left, 2, 4, x), DDPM_ERR_NUMERIC);
    o.unipc_order = 4;
    assert_int_equal(ddpm_sample_loop(&s, &o, fail_at, &left, 2, 4, x), DDPM_ERR_INVALID);
    assert_non_null(strstr(ddpm_last_error(), "UniPC order must be 1, 2 or 3 (got 4)"));
    o.unipc_order = 2;
    o.sampler = DDPM_SAMPLER_DPMPP_3M;
    o.steps = 51;
    assert_int_equal(ddpm_sample_loop(&s, &o, fail_at, &left, 2, 4, x), DDPM_ERR_INVALID);
    o.steps = 5;
    o.sampler = (ddpm_sampler)DDPM_SAMPLER_COUNT;
    assert_int_equal(ddpm_sample_loop(&s, &o, fail_at, &left, 2, 4, x), DDPM_ERR_INVALID);
    ddpm_schedule_free(&s);
    /* (An infinite sigma_max, refused by the sigma-space samplers, now comes only from a
     * zero-terminal-SNR schedule: test_train_options.c. A schedule whose abar underflows is
     * refused when it is built: test_schedule.c.) */
}

/* A network whose output holds a NaN at element 5 (item 1); counts its calls in *ctx. */
static int blow_up(void *ctx, const float *x, int B, int t, const float *x0_prev, float *out) {
    int *calls = ctx;
    ++*calls;
    for (int i = 0; i < B * 4; i++) out[i] = i == 5 ? NAN : 0.5f * x[i];
    (void)t, (void)x0_prev;
    return 0;
}

/* A NaN or inf in x stops every sampler at the step that made it, with DDPM_ERR_NUMERIC and a
 * message naming the sampler, the step and the item (issue 11, finding 10: a --guidance of
 * 1e300 gave NaN samples and exit 0). DDIM's eta must lie in [0, 1]. */
static void test_non_finite(void **state) {
    (void)state;
    ddpm_schedule s;
    make_schedule(&s, DDPM_SCHEDULE_LINEAR, 50);
    ddpm_sample_opts o;
    ddpm_sample_opts_default(&o);
    o.steps = 5;
    o.first_item = 10;
    float x[8];
    const ddpm_sampler all[] = {DDPM_SAMPLER_DDPM, DDPM_SAMPLER_DDIM, DDPM_SAMPLER_DPMPP_2M,
                                DDPM_SAMPLER_EULER, DDPM_SAMPLER_HEUN, DDPM_SAMPLER_UNIPC};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) {
        o.sampler = all[i];
        int calls = 0;
        assert_int_equal(ddpm_sample_loop(&s, &o, blow_up, &calls, 2, 4, x), DDPM_ERR_NUMERIC);
        char want[64];
        snprintf(want, sizeof want, "sampler %s: item 11 holds NaN after step 1 of ",
                 ddpm_sampler_name(all[i]));
        if (!strstr(ddpm_last_error(), want))
            fail_msg("'%s' lacks '%s'", ddpm_last_error(), want);
        assert_non_null(strstr(ddpm_last_error(), "guidance or eta is too large"));
        assert_int_equal(calls, all[i] == DDPM_SAMPLER_HEUN ? 2 : 1); /* stopped at once */
    }
    o.sampler = DDPM_SAMPLER_DDIM;
    o.eta = 1.5f;
    int calls = 0;
    assert_int_equal(ddpm_sample_loop(&s, &o, blow_up, &calls, 2, 4, x), DDPM_ERR_INVALID);
    assert_non_null(strstr(ddpm_last_error(), "eta must be in [0, 1] (got 1.5)"));
    o.eta = 1.0f;
    assert_int_equal(ddpm_sample_loop(&s, &o, blow_up, &calls, 2, 4, x), DDPM_ERR_NUMERIC);
    ddpm_schedule_free(&s);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_names),
        cmocka_unit_test(test_sigma_spacings),
        cmocka_unit_test(test_sample_timesteps),
        cmocka_unit_test(test_euler_heun_steps),
        cmocka_unit_test(test_dpm_first_order_is_ddim),
        cmocka_unit_test(test_steps_against_reference),
        cmocka_unit_test(test_unipc_steps_against_reference),
        cmocka_unit_test(test_runs_against_reference),
        cmocka_unit_test(test_gaussian_converges),
        cmocka_unit_test(test_order_of_convergence),
        cmocka_unit_test(test_unipc_convergence),
        cmocka_unit_test(test_threshold_formula),
        cmocka_unit_test(test_threshold_in_loop),
        cmocka_unit_test(test_batch_and_threads),
        cmocka_unit_test(test_noise_streams),
        cmocka_unit_test(test_errors),
        cmocka_unit_test(test_non_finite),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}

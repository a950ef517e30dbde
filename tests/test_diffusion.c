/* test_diffusion.c - the forward process, target conversions, posterior, sampler steps and the
 * sampling loop, checked against their formulas and with analytic models. */
#include "testutil.h"

#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#define B 6
#define D 5

static void make_schedule(ddpm_schedule *s, ddpm_schedule_kind kind, int T) {
    ddpm_schedule_config c;
    ddpm_schedule_config_default(&c, kind, T);
    assert_int_equal(ddpm_schedule_init(s, &c), DDPM_OK);
}

static void random_batch(float *x0, float *eps, int *t, const ddpm_schedule *s, uint64_t seed) {
    ddpm_randn(seed, DDPM_STREAM_USER, 0, 0, x0, B * D);
    for (int i = 0; i < B * D; i++) x0[i] *= 0.5f;
    ddpm_randn(seed, DDPM_STREAM_USER, 1, 0, eps, B * D);
    for (int i = 0; i < B; i++) t[i] = s->t0 + (int)ddpm_rand_below(seed, DDPM_STREAM_USER, (uint64_t)i, 2, (uint32_t)(s->n - s->t0));
    t[0] = s->t0;
    t[1] = s->n - 1;
}

static void test_q_sample_and_conversions(void **state) {
    (void)state;
    for (int k = 0; k < DDPM_SCHEDULE_CUSTOM; k++) {
        ddpm_schedule s;
        make_schedule(&s, (ddpm_schedule_kind)k, 100);
        float x0[B * D], eps[B * D], xt[B * D], a[B * D], b[B * D], v[B * D];
        int t[B];
        random_batch(x0, eps, t, &s, 11 + k);
        ddpm_q_sample(&s, x0, eps, t, B, D, xt);
        for (int i = 0; i < B; i++)
            for (int j = 0; j < D; j++) {
                double ab = s.alphas_cumprod[t[i]];
                double want = sqrt(ab) * x0[i * D + j] + sqrt(1 - ab) * eps[i * D + j];
                assert_float_equal(xt[i * D + j], want, 3e-6); /* the buffers are float */
            }
        /* eps -> x0 and x0 -> eps recover the other (loose where abar ~ 1 or ~ 0 amplifies
         * rounding: x0 from eps divides by sqrt(abar), eps from x0 by sqrt(1 - abar)). */
        ddpm_x0_from_eps(&s, xt, eps, t, B, D, a);
        ddpm_eps_from_x0(&s, xt, x0, t, B, D, b);
        for (int i = 0; i < B; i++)
            for (int j = 0; j < D; j++) {
                double ab = s.alphas_cumprod[t[i]];
                assert_float_equal(a[i * D + j], x0[i * D + j], 1e-5 / sqrt(ab));
                assert_float_equal(b[i * D + j], eps[i * D + j], 1e-5 / sqrt(1 - ab));
            }
        /* v: definition, then back to x0 and eps. */
        ddpm_v_from_x0_eps(&s, x0, eps, t, B, D, v);
        ddpm_x0_from_v(&s, xt, v, t, B, D, a);
        ddpm_eps_from_v(&s, xt, v, t, B, D, b);
        for (int i = 0; i < B * D; i++) {
            int ti = t[i / D];
            assert_float_equal(v[i], s.sqrt_alphas_cumprod[ti] * eps[i] - s.sqrt_one_minus_alphas_cumprod[ti] * x0[i], 1e-6);
            assert_float_equal(a[i], x0[i], 1e-5);
            assert_float_equal(b[i], eps[i], 1e-5);
        }
        /* split_prediction from each target type gives the same x0 and eps. */
        for (int p = 0; p < 3; p++) {
            float out[B * D], e2[B * D], x2[B * D];
            ddpm_target(&s, (ddpm_prediction)p, x0, eps, t, B, D, out);
            ddpm_split_prediction(&s, (ddpm_prediction)p, xt, out, t, B, D, 0, e2, x2);
            for (int i = 0; i < B * D; i++) {
                double ab = s.alphas_cumprod[t[i / D]];
                assert_float_equal(x2[i], x0[i], 2e-6 / sqrt(ab) + 2e-5);
                assert_float_equal(e2[i], eps[i], 2e-6 / sqrt(1 - ab) + 2e-5);
            }
        }
        ddpm_schedule_free(&s);
    }
}

static void test_clip(void **state) {
    (void)state;
    ddpm_schedule s;
    make_schedule(&s, DDPM_SCHEDULE_LINEAR, 100);
    float xt[D] = {3, -3, 0.5f, 0, 1}, out[D] = {0, 0, 0, 0, 0}, e[D], x0[D];
    int t = 10;
    ddpm_split_prediction(&s, DDPM_PRED_EPS, xt, out, &t, 1, D, 1, e, x0);
    for (int j = 0; j < D; j++) {
        assert_true(x0[j] >= -1 && x0[j] <= 1);
        /* eps is re-derived so that x_t = sqrt(ab) x0 + sqrt(1-ab) eps still holds */
        assert_float_equal(s.sqrt_alphas_cumprod[t] * x0[j] + s.sqrt_one_minus_alphas_cumprod[t] * e[j], xt[j], 1e-5);
    }
    ddpm_schedule_free(&s);
}

/* The DDPM step fed the true noise gives the posterior mean of the true x_0 (plus sigma z). */
static void test_ddpm_step_true_noise(void **state) {
    (void)state;
    for (int k = 0; k < DDPM_SCHEDULE_CUSTOM; k++) {
        ddpm_schedule s;
        make_schedule(&s, (ddpm_schedule_kind)k, 50);
        float x0[B * D], eps[B * D], xt[B * D], z[B * D], xp[B * D], mean[B * D], x0hat[B * D];
        int t[B];
        random_batch(x0, eps, t, &s, 5);
        ddpm_randn(5, DDPM_STREAM_USER, 9, 0, z, B * D);
        for (int tt = k == DDPM_SCHEDULE_LINEAR_COURSE ? 2 : s.t0; tt < s.n; tt++) {
            for (int i = 0; i < B; i++) t[i] = tt;
            ddpm_q_sample(&s, x0, eps, t, B, D, xt);
            ddpm_q_posterior(&s, x0, xt, t, B, D, mean, NULL, NULL);
            for (int var = 0; var < 2; var++)
                for (int clip = 0; clip < 2; clip++) {
                    ddpm_step_opts o = {.prediction = DDPM_PRED_EPS, .variance = (ddpm_variance)var, .clip_x0 = clip};
                    ddpm_step_ddpm(&s, &o, tt, xt, eps, z, B, D, xp, x0hat);
                    double sigma = tt == s.t0 ? 0 : var ? sqrt(s.betas[tt]) : sqrt(s.posterior_variance[tt]);
                    for (int i = 0; i < B * D; i++) {
                        if (!clip) assert_float_equal(x0hat[i], x0[i], 1e-3);
                        if (clip && fabsf(x0[i]) < 0.99f) assert_float_equal(xp[i] - sigma * z[i], mean[i], 1e-3);
                        if (!clip) assert_float_equal(xp[i] - sigma * z[i], mean[i], 1e-3);
                    }
                }
        }
        /* At the first step the result is x_0 itself, with no noise: with clipping (the
         * posterior mean) for every schedule, the course's included; without (the eps form,
         * Algorithm 2) for all but the course's, whose quirk (abar_1 = a_0 a_1) leaves
         * 0.0065 eps in its own sampler's last step. */
        for (int i = 0; i < B; i++) t[i] = s.t0;
        for (int i = 0; i < B * D; i++) x0[i] = fmaxf(-1.0f, fminf(1.0f, x0[i]));
        ddpm_q_sample(&s, x0, eps, t, B, D, xt);
        for (int clip = 0; clip < 2; clip++) {
            ddpm_step_opts o = {.prediction = DDPM_PRED_EPS, .variance = DDPM_VAR_SMALL, .clip_x0 = clip};
            ddpm_step_ddpm(&s, &o, s.t0, xt, eps, NULL, B, D, xp, NULL);
            if (clip || k != DDPM_SCHEDULE_LINEAR_COURSE)
                for (int i = 0; i < B * D; i++) assert_float_equal(xp[i], x0[i], 1e-4);
        }
        ddpm_schedule_free(&s);
    }
}

/* The tutorials' formula: mean = (x - beta / sqrt(1 - abar) eps) / sqrt(alpha), sigma = sqrt(beta). */
static void test_ddpm_step_tutorial_formula(void **state) {
    (void)state;
    ddpm_schedule s;
    make_schedule(&s, DDPM_SCHEDULE_LINEAR_COURSE, 500);
    float xt[B * D], eps[B * D], z[B * D], xp[B * D];
    ddpm_randn(3, DDPM_STREAM_USER, 0, 0, xt, B * D);
    ddpm_randn(3, DDPM_STREAM_USER, 1, 0, eps, B * D);
    ddpm_randn(3, DDPM_STREAM_USER, 2, 0, z, B * D);
    ddpm_step_opts o = {.prediction = DDPM_PRED_EPS, .variance = DDPM_VAR_LARGE, .clip_x0 = 0};
    const int ts[] = {500, 250, 2, 1};
    for (int q = 0; q < 4; q++) {
        int t = ts[q];
        ddpm_step_ddpm(&s, &o, t, xt, eps, z, B, D, xp, NULL);
        for (int i = 0; i < B * D; i++) {
            double a = s.alphas[t], ab = s.alphas_cumprod[t], b = s.betas[t];
            double want = (xt[i] - eps[i] * ((1 - a) / sqrt(1 - ab))) / sqrt(a) + (t > 1 ? sqrt(b) * z[i] : 0);
            assert_float_equal(xp[i], want, 2e-5);
        }
    }
    /* --no-noise: the mean only. */
    o.no_noise = 1;
    ddpm_step_ddpm(&s, &o, 300, xt, eps, NULL, B, D, xp, NULL);
    for (int i = 0; i < B * D; i++) {
        double a = s.alphas[300], ab = s.alphas_cumprod[300];
        assert_float_equal(xp[i], (xt[i] - eps[i] * ((1 - a) / sqrt(1 - ab))) / sqrt(a), 2e-5);
    }
    ddpm_schedule_free(&s);
}

/* DDIM with eta = 0 fed the true noise recovers x_0 from any t, and lands on q_sample(t_prev). */
static void test_ddim_true_noise(void **state) {
    (void)state;
    for (int k = 0; k < DDPM_SCHEDULE_CUSTOM; k++) {
        ddpm_schedule s;
        make_schedule(&s, (ddpm_schedule_kind)k, 200);
        float x0[B * D], eps[B * D], xt[B * D], xp[B * D], want[B * D];
        int t[B], tp[B];
        random_batch(x0, eps, t, &s, 8);
        ddpm_step_opts o = {.prediction = DDPM_PRED_EPS, .variance = DDPM_VAR_SMALL, .clip_x0 = 0};
        for (int tt = s.t0; tt < s.n; tt += 13) {
            for (int i = 0; i < B; i++) t[i] = tt;
            ddpm_q_sample(&s, x0, eps, t, B, D, xt);
            ddpm_step_ddim(&s, &o, tt, s.t0 - 1, 0.0f, xt, eps, NULL, B, D, xp, NULL);
            for (int i = 0; i < B * D; i++) assert_float_equal(xp[i], x0[i], 1e-3);
            if (tt > s.t0 + 5) {
                int prev = tt - 5;
                for (int i = 0; i < B; i++) tp[i] = prev;
                ddpm_step_ddim(&s, &o, tt, prev, 0.0f, xt, eps, NULL, B, D, xp, NULL);
                ddpm_q_sample(&s, x0, eps, tp, B, D, want);
                for (int i = 0; i < B * D; i++) assert_float_equal(xp[i], want[i], 1e-4);
            }
        }
        ddpm_schedule_free(&s);
    }
}

/* DDIM with eta = 1 between consecutive steps is the DDPM step with the posterior variance. */
static void test_ddim_eta1_is_ddpm(void **state) {
    (void)state;
    ddpm_schedule s;
    make_schedule(&s, DDPM_SCHEDULE_COSINE, 100);
    float xt[B * D], out[B * D], z[B * D], a[B * D], b[B * D];
    ddpm_randn(4, DDPM_STREAM_USER, 0, 0, xt, B * D);
    ddpm_randn(4, DDPM_STREAM_USER, 1, 0, out, B * D);
    ddpm_randn(4, DDPM_STREAM_USER, 2, 0, z, B * D);
    for (int p = 0; p < 3; p++) {
        ddpm_step_opts o = {.prediction = (ddpm_prediction)p, .variance = DDPM_VAR_SMALL, .clip_x0 = 0};
        for (int t = 1; t < 99; t += 7) {
            ddpm_step_ddim(&s, &o, t, t - 1, 1.0f, xt, out, z, B, D, a, NULL);
            ddpm_step_ddpm(&s, &o, t, xt, out, z, B, D, b, NULL);
            for (int i = 0; i < B * D; i++) assert_float_equal(a[i], b[i], 1e-4 * (1 + fabsf(b[i])));
        }
    }
    ddpm_schedule_free(&s);
}

/* ---- the sampling loop with analytic models --------------------------------------------- */

/* Data ~ N(mu, sd^2) per coordinate: the exact eps predictor is
 * E[eps | x_t] = sqrt(1 - ab) (x_t - sqrt(ab) mu) / (ab sd^2 + 1 - ab). */
typedef struct {
    const ddpm_schedule *s;
    float mu, sd;
    ddpm_prediction pred;
    int calls;
} gauss_model;

static int gauss_denoise(void *ctx, const float *x, int n, int t, const float *x0_prev, float *out) {
    (void)x0_prev;
    gauss_model *m = ctx;
    m->calls++;
    double ab = m->s->alphas_cumprod[t];
    for (int i = 0; i < n * D; i++) {
        double e = sqrt(1 - ab) * (x[i] - sqrt(ab) * m->mu) / (ab * m->sd * m->sd + 1 - ab);
        double x0 = (x[i] - sqrt(1 - ab) * e) / sqrt(ab);
        out[i] = (float)(m->pred == DDPM_PRED_EPS ? e : m->pred == DDPM_PRED_X0 ? x0 : sqrt(ab) * e - sqrt(1 - ab) * x0);
    }
    return 0;
}

static void sample_stats(ddpm_sample_opts *o, ddpm_prediction pred, double *mean, double *sd) {
    /* Cosine: abar_T ~ 0, so x_T ~ N(0, 1) is the right start (a 200-step linear schedule ends
     * at abar ~ 0.13 and biases every sampler). */
    ddpm_schedule s;
    make_schedule(&s, DDPM_SCHEDULE_COSINE, 200);
    const int n = 4000;
    float *x = malloc(sizeof(float) * n * D);
    gauss_model m = {&s, 0.7f, 0.3f, pred, 0};
    o->step.prediction = pred;
    assert_int_equal(ddpm_sample_loop(&s, o, gauss_denoise, &m, n, D, x), DDPM_OK);
    assert_int_equal(m.calls, o->sampler == DDPM_SAMPLER_DDIM ? o->steps : 200);
    double s1 = 0, s2 = 0;
    for (int i = 0; i < n * D; i++) {
        s1 += x[i];
        s2 += (double)x[i] * x[i];
    }
    *mean = s1 / (n * D);
    *sd = sqrt(s2 / (n * D) - *mean * *mean);
    free(x);
    ddpm_schedule_free(&s);
}

static void test_sample_loop_gaussian(void **state) {
    (void)state;
    for (int p = 0; p < 3; p++) {
        ddpm_sample_opts o;
        double mean, sd;
        /* DDPM with the posterior variance. */
        ddpm_sample_opts_default(&o);
        o.seed = 1;
        sample_stats(&o, (ddpm_prediction)p, &mean, &sd);
        assert_float_equal(mean, 0.7, 0.02);
        assert_float_equal(sd, 0.3, 0.02);
        /* DDIM over every step, deterministic and with eta = 1. */
        for (int eta = 0; eta < 2; eta++) {
            ddpm_sample_opts_default(&o);
            o.sampler = DDPM_SAMPLER_DDIM;
            o.steps = 200;
            o.eta = (float)eta;
            o.seed = 2;
            sample_stats(&o, (ddpm_prediction)p, &mean, &sd);
            assert_float_equal(mean, 0.7, 0.02);
            assert_float_equal(sd, 0.3, 0.015);
        }
        /* 20 trailing steps: the mean is right; the spread shrinks a little because each coarse
         * step leans on E[x_0 | x_t], whose variance is below the data's (measured 0.27 with
         * eta = 0 and 0.245 with eta = 1). */
        ddpm_sample_opts_default(&o);
        o.sampler = DDPM_SAMPLER_DDIM;
        o.steps = 20;
        o.spacing = DDPM_SPACING_TRAILING;
        o.seed = 3;
        sample_stats(&o, (ddpm_prediction)p, &mean, &sd);
        assert_float_equal(mean, 0.7, 0.02);
        assert_true(sd > 0.25 && sd < 0.3);
        o.eta = 1.0f;
        sample_stats(&o, (ddpm_prediction)p, &mean, &sd);
        assert_float_equal(mean, 0.7, 0.02);
        assert_true(sd > 0.22 && sd < 0.3);
    }
    /* Without noise the DDPM sampler collapses towards the mean: the tutorials' lesson. */
    ddpm_sample_opts o;
    ddpm_sample_opts_default(&o);
    o.step.no_noise = 1;
    double mean, sd;
    sample_stats(&o, DDPM_PRED_EPS, &mean, &sd);
    assert_true(sd < 0.1);
}

/* A sample depends only on (seed, item): not on the batch it is in nor on the thread count. */
static void test_sample_loop_batch_and_threads(void **state) {
    (void)state;
    ddpm_schedule s;
    make_schedule(&s, DDPM_SCHEDULE_LINEAR, 50);
    gauss_model m = {&s, 0.1f, 0.5f, DDPM_PRED_EPS, 0};
    ddpm_sample_opts o;
    ddpm_sample_opts_default(&o);
    o.seed = 77;
    float all[8 * D], part[8 * D], thr[8 * D];
    assert_int_equal(ddpm_sample_loop(&s, &o, gauss_denoise, &m, 8, D, all), DDPM_OK);
    assert_int_equal(ddpm_sample_loop(&s, &o, gauss_denoise, &m, 3, D, part), DDPM_OK);
    o.first_item = 3;
    assert_int_equal(ddpm_sample_loop(&s, &o, gauss_denoise, &m, 5, D, part + 3 * D), DDPM_OK);
    assert_memory_equal(all, part, sizeof all);
    o.first_item = 0;
    int saved = omp_get_max_threads();
    omp_set_num_threads(1);
    assert_int_equal(ddpm_sample_loop(&s, &o, gauss_denoise, &m, 8, D, thr), DDPM_OK);
    omp_set_num_threads(saved);
    assert_memory_equal(all, thr, sizeof all);
    /* A given x_T with DDIM eta 0 is fully deterministic. */
    o.sampler = DDPM_SAMPLER_DDIM;
    o.steps = 10;
    o.x_is_init = 1;
    float a[8 * D], b[8 * D];
    ddpm_randn(5, DDPM_STREAM_USER, 0, 0, a, 8 * D);
    memcpy(b, a, sizeof a);
    o.seed = 1;
    assert_int_equal(ddpm_sample_loop(&s, &o, gauss_denoise, &m, 8, D, a), DDPM_OK);
    o.seed = 2;
    assert_int_equal(ddpm_sample_loop(&s, &o, gauss_denoise, &m, 8, D, b), DDPM_OK);
    assert_memory_equal(a, b, sizeof a);
    ddpm_schedule_free(&s);
}

static int failing_denoise(void *ctx, const float *x, int n, int t, const float *x0_prev, float *out) {
    (void)ctx, (void)x, (void)n, (void)x0_prev, (void)out;
    return ddpm_fail(DDPM_ERR_NUMERIC, "model failed at t=%d", t);
}

static void test_sample_loop_errors(void **state) {
    (void)state;
    ddpm_schedule s;
    make_schedule(&s, DDPM_SCHEDULE_LINEAR, 50);
    ddpm_sample_opts o;
    ddpm_sample_opts_default(&o);
    float x[2 * D];
    assert_int_equal(ddpm_sample_loop(&s, &o, failing_denoise, NULL, 2, D, x), DDPM_ERR_NUMERIC);
    o.sampler = DDPM_SAMPLER_DDIM;
    o.steps = 51;
    assert_int_equal(ddpm_sample_loop(&s, &o, failing_denoise, NULL, 2, D, x), DDPM_ERR_INVALID);
    ddpm_schedule_free(&s);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_q_sample_and_conversions),
        cmocka_unit_test(test_clip),
        cmocka_unit_test(test_ddpm_step_true_noise),
        cmocka_unit_test(test_ddpm_step_tutorial_formula),
        cmocka_unit_test(test_ddim_true_noise),
        cmocka_unit_test(test_ddim_eta1_is_ddpm),
        cmocka_unit_test(test_sample_loop_gaussian),
        cmocka_unit_test(test_sample_loop_batch_and_threads),
        cmocka_unit_test(test_sample_loop_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

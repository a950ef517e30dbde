/* test_editing.c - image editing in the library (src/diffusion/editing.c): img2img's strength
 * mapping and its two ends (strength 0 gives the input, strength 1 plain sampling, bit for bit),
 * RePaint's resampling schedule against RePaint's published walk (scripts/fixtures/gen_editing.py
 * -> tests/fixtures/editing.safetensors), its known region and its harmonising of the unknown one,
 * DDIM inversion against the exact probability-flow ODE and its reconstruction error as the steps
 * grow, and slerp. The model is the exact analytic Gaussian (as test_samplers.c uses), here with
 * pairs of coordinates that may be correlated, so that inpainting has something to infer. */
#include "testutil.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static ddpm_safetensors fx;

static void make_schedule(ddpm_schedule *s, ddpm_schedule_kind kind, int T) {
    ddpm_schedule_config c;
    ddpm_schedule_config_default(&c, kind, T);
    assert_int_equal(ddpm_schedule_init(s, &c), DDPM_OK);
}

/* ---- the exact analytic Gaussian model ---------------------------------------------------- */

/* Data: pairs (x_2k, x_2k+1) ~ N((mu, mu), sd^2 [[1, rho], [rho, 1]]), pairs independent. Then
 * x_t ~ N(sqrt(ab) mu, M) with M = ab sd^2 [[1, rho], [rho, 1]] + (1 - ab) I, and E[eps | x_t] =
 * sqrt(1 - ab) M^-1 (x_t - sqrt(ab) mu), in the prediction type asked for. */
typedef struct {
    const ddpm_schedule *s;
    double mu, sd, rho;
    ddpm_prediction pred;
    int d, calls, first_t;
} gauss_model;

static int gauss_denoise(void *ctx, const float *x, int B, int t, const float *x0_prev,
                         float *out) {
    (void)x0_prev;
    gauss_model *m = ctx;
    if (m->calls++ == 0) m->first_t = t;
    const double sg = ddpm_sigma(m->s, t), ab = 1.0 / (1.0 + sg * sg);
    const double v = ab * m->sd * m->sd, c = v * m->rho, dg = v + 1 - ab;
    const double det = dg * dg - c * c;
    for (int i = 0; i < B * m->d; i += 2) {
        const double u0 = x[i] - sqrt(ab) * m->mu, u1 = x[i + 1] - sqrt(ab) * m->mu;
        const double e[2] = {sqrt(1 - ab) * (dg * u0 - c * u1) / det,
                             sqrt(1 - ab) * (dg * u1 - c * u0) / det};
        for (int j = 0; j < 2; j++) {
            const double x0 = (x[i + j] - sqrt(1 - ab) * e[j]) / sqrt(ab);
            out[i + j] = (float)(m->pred == DDPM_PRED_EPS  ? e[j]
                                 : m->pred == DDPM_PRED_X0 ? x0
                                                           : sqrt(ab) * e[j] - sqrt(1 - ab) * x0);
        }
    }
    return 0;
}

static void opts_for(ddpm_sample_opts *o, ddpm_sampler sm, int steps, uint64_t seed) {
    ddpm_sample_opts_default(o);
    o->sampler = sm;
    o->steps = steps;
    o->spacing = DDPM_SPACING_TRAILING;
    o->seed = seed;
}

static void mean_sd(const float *x, size_t n, size_t stride, double *mean, double *sd) {
    double s1 = 0, s2 = 0;
    for (size_t i = 0; i < n; i++) {
        s1 += x[i * stride];
        s2 += (double)x[i * stride] * x[i * stride];
    }
    *mean = s1 / n;
    *sd = sqrt(fmax(s2 / n - *mean * *mean, 0.0));
}

/* ---- img2img ------------------------------------------------------------------------------ */

/* The strength picks how many of the run's K steps run (floor(K S), as diffusers), the image is
 * noised to the first of them, and the model's first call is at that t. */
static void test_img2img_start(void **state) {
    (void)state;
    ddpm_schedule s;
    make_schedule(&s, DDPM_SCHEDULE_LINEAR, 100);
    ddpm_sample_opts o;
    opts_for(&o, DDPM_SAMPLER_DDIM, 10, 0);
    o.spacing = DDPM_SPACING_LEADING; /* 90, 80, ..., 0 */
    int skip, t0;
    assert_int_equal(ddpm_img2img_start(&s, &o, 0.7, &skip, &t0), DDPM_OK);
    assert_int_equal(skip, 3); /* 7 of 10 steps run: 60, 50, ..., 0 */
    assert_int_equal(t0, 60);
    assert_int_equal(ddpm_img2img_start(&s, &o, 1.0, &skip, &t0), DDPM_OK);
    assert_int_equal(skip, 0);
    assert_int_equal(t0, 90);
    assert_int_equal(ddpm_img2img_start(&s, &o, 0.09, &skip, &t0), DDPM_OK);
    assert_int_equal(skip, 10);
    assert_int_equal(t0, -1);
    /* DDPM runs every step: K = T, t_start = floor(T S) - 1. */
    o.sampler = DDPM_SAMPLER_DDPM;
    assert_int_equal(ddpm_img2img_start(&s, &o, 0.5, &skip, &t0), DDPM_OK);
    assert_int_equal(skip, 50);
    assert_int_equal(t0, 49);
    /* The sigma-space samplers start at the sigma of that step's t. */
    o.sampler = DDPM_SAMPLER_EULER;
    o.spacing = DDPM_SPACING_KARRAS;
    int ts[10];
    assert_int_equal(ddpm_sample_timesteps(&s, &o, ts, NULL), DDPM_OK);
    assert_int_equal(ddpm_img2img_start(&s, &o, 0.45, &skip, &t0), DDPM_OK);
    assert_int_equal(skip, 6);
    assert_int_equal(t0, ts[6]);
    for (int bad = 0; bad < 3; bad++) {
        const double v[] = {-0.01, 1.01, NAN};
        assert_int_equal(ddpm_img2img_start(&s, &o, v[bad], &skip, &t0), DDPM_ERR_INVALID);
        assert_non_null(strstr(ddpm_last_error(), "strength must be in [0, 1]"));
    }
    /* Each sampler's run: n_run network calls (Heun: its own count), the first at t_start. */
    enum { N = 4, D = 6 };
    float init[N * D], x[N * D];
    for (int i = 0; i < N * D; i++) init[i] = (float)(0.1 * i - 1.0);
    for (int sm = 0; sm < DDPM_SAMPLER_COUNT; sm++) {
        opts_for(&o, (ddpm_sampler)sm, 10, 3);
        if (sm == DDPM_SAMPLER_HEUN) continue; /* two calls a step: counted in the CLI test */
        gauss_model m = {&s, 0.3, 0.4, 0.0, DDPM_PRED_EPS, D, 0, -1};
        assert_int_equal(ddpm_img2img_start(&s, &o, 0.6, &skip, &t0), DDPM_OK);
        assert_int_equal(ddpm_img2img(&s, &o, 0.6, gauss_denoise, &m, N, D, init, x), DDPM_OK);
        assert_int_equal(m.calls, ddpm_sample_num_steps(&s, &o) - skip);
        assert_int_equal(m.first_t, t0);
    }
    /* The loop's first_step itself: in range, and only with a given x. */
    opts_for(&o, DDPM_SAMPLER_DDIM, 10, 3);
    gauss_model m = {&s, 0.3, 0.4, 0.0, DDPM_PRED_EPS, D, 0, -1};
    o.first_step = 10, o.x_is_init = 1;
    assert_int_equal(ddpm_sample_loop(&s, &o, gauss_denoise, &m, N, D, x), DDPM_ERR_INVALID);
    o.sampler = DDPM_SAMPLER_DPMPP_2M;
    assert_int_equal(ddpm_sample_loop(&s, &o, gauss_denoise, &m, N, D, x), DDPM_ERR_INVALID);
    o.first_step = 2, o.x_is_init = 0;
    assert_int_equal(ddpm_sample_loop(&s, &o, gauss_denoise, &m, N, D, x), DDPM_ERR_INVALID);
    assert_non_null(strstr(ddpm_last_error(), "only with a given x_t"));
    assert_int_equal(m.calls, 0);
    ddpm_schedule_free(&s);
}

/* Strength 0 (and any strength below 1/K) gives the input back bit for bit; strength 1 gives
 * plain sampling's samples bit for bit, for DDPM, DDIM (eta 0 and 1) and the others alike. */
static void test_img2img_ends(void **state) {
    (void)state;
    ddpm_schedule s;
    make_schedule(&s, DDPM_SCHEDULE_COSINE, 60);
    enum { N = 5, D = 8 };
    float init[N * D], x[N * D], plain[N * D];
    ddpm_randn(9, DDPM_STREAM_USER, 0, 0, init, N * D);
    for (int sm = 0; sm < DDPM_SAMPLER_COUNT; sm++)
        for (int eta = 0; eta < 2; eta++) {
            if (eta && sm != DDPM_SAMPLER_DDIM) continue;
            for (int p = 0; p < 3; p++) {
                ddpm_sample_opts o;
                opts_for(&o, (ddpm_sampler)sm, 12, 77);
                o.eta = (float)eta;
                o.step.prediction = (ddpm_prediction)p;
                o.first_item = 4;
                gauss_model m = {&s, 0.2, 0.5, 0.5, (ddpm_prediction)p, D, 0, -1};
                assert_int_equal(ddpm_img2img(&s, &o, 0.0, gauss_denoise, &m, N, D, init, x), 0);
                assert_memory_equal(x, init, sizeof x);
                const double below = 0.5 / ddpm_sample_num_steps(&s, &o); /* no step runs */
                assert_int_equal(ddpm_img2img(&s, &o, below, gauss_denoise, &m, N, D, init, x), 0);
                assert_memory_equal(x, init, sizeof x);
                assert_int_equal(m.calls, 0);
                assert_int_equal(ddpm_img2img(&s, &o, 1.0, gauss_denoise, &m, N, D, init, x), 0);
                assert_int_equal(ddpm_sample_loop(&s, &o, gauss_denoise, &m, N, D, plain), 0);
                assert_memory_equal(x, plain, sizeof x);
                /* and in place (x aliasing the image) */
                memcpy(x, init, sizeof x);
                assert_int_equal(ddpm_img2img(&s, &o, 0.5, gauss_denoise, &m, N, D, x, x), 0);
                assert_int_equal(ddpm_img2img(&s, &o, 0.5, gauss_denoise, &m, N, D, init, plain), 0);
                assert_memory_equal(x, plain, sizeof x);
            }
        }
    ddpm_schedule_free(&s);
}

/* With the exact model, img2img of images far from the data (every pixel at -1.5; data N(0.7,
 * 0.3^2)) moves them toward the data the more the higher the strength, and at strength 1 the
 * result is the data distribution; a low strength keeps much of the image: at S = 0.1 the result
 * is nearer the image than the data (the posterior mean from t_start ~ 19 is about -1.0). */
static void test_img2img_moves_toward_data(void **state) {
    (void)state;
    ddpm_schedule s;
    make_schedule(&s, DDPM_SCHEDULE_COSINE, 200);
    enum { N = 1000, D = 2 };
    float *init = malloc(sizeof(float) * N * D), *x = malloc(sizeof(float) * N * D);
    for (int i = 0; i < N * D; i++) init[i] = -1.5f;
    const ddpm_sampler sms[] = {DDPM_SAMPLER_DDPM, DDPM_SAMPLER_DDIM, DDPM_SAMPLER_DPMPP_2M,
                                DDPM_SAMPLER_EULER_ANCESTRAL};
    for (int q = 0; q < 4; q++) {
        double prev = INFINITY;
        printf("  %-16s", ddpm_sampler_name(sms[q]));
        const double S[] = {0.1, 0.3, 0.6, 1.0};
        for (int k = 0; k < 4; k++) {
            ddpm_sample_opts o;
            opts_for(&o, sms[q], 25, 5);
            gauss_model m = {&s, 0.7, 0.3, 0.0, DDPM_PRED_EPS, D, 0, -1};
            assert_int_equal(ddpm_img2img(&s, &o, S[k], gauss_denoise, &m, N, D, init, x), 0);
            double mean, sd;
            mean_sd(x, N * D, 1, &mean, &sd);
            printf(" S=%.1f mean %.3f sd %.3f", S[k], mean, sd);
            const double dist = fabs(mean - 0.7);
            if (!(dist < prev)) fail_msg("%s: strength %.1f is no nearer the data", ddpm_sampler_name(sms[q]), S[k]);
            prev = dist;
            if (k == 0 && !(mean < (0.7 - 1.5) / 2)) fail_msg("strength 0.1 keeps too little of the image (mean %.3f)", mean);
            /* 2000 draws: standard errors 0.007 (mean) and 0.005 (sd). 25 coarse first-order
             * steps shrink the spread (as test_samplers.c measures): DDIM 0.274, Euler
             * ancestral 0.249. */
            if (k == 3 && (fabs(mean - 0.7) > 0.03 || sd < 0.22 || sd > 0.33))
                fail_msg("%s at strength 1: mean %.3f sd %.3f (want 0.7, 0.3)", ddpm_sampler_name(sms[q]), mean, sd);
        }
        printf("\n");
    }
    free(init);
    free(x);
    ddpm_schedule_free(&s);
}

/* ---- RePaint ------------------------------------------------------------------------------ */

static void test_repaint_schedule(void **state) {
    (void)state;
    const int cases[][3] = {{250, 10, 10}, {20, 3, 2}, {25, 5, 3}, {12, 1, 4}, {7, 10, 3}, {30, 10, 1}};
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        char name[64];
        snprintf(name, sizeof name, "jump/%d_%d_%d", cases[c][0], cases[c][1], cases[c][2]);
        const ddpm_tensor *t = ddpm_safetensors_find(&fx, name);
        if (!t) fail_msg("fixture %s missing", name);
        int *ref = tu_tensor_int(&fx, name, (int)t->numel), *got = NULL, len = 0;
        assert_int_equal(ddpm_repaint_schedule(cases[c][0], cases[c][1], cases[c][2], &got, &len), 0);
        assert_int_equal(len, (int)t->numel);
        for (int i = 0; i < len; i++)
            if (got[i] != ref[i]) fail_msg("%s: entry %d is %d, RePaint's is %d", name, i, got[i], ref[i]);
        free(ref);
        free(got);
    }
    int *got = (int *)1, len = 5;
    assert_int_equal(ddpm_repaint_schedule(10, 0, 2, &got, &len), DDPM_ERR_INVALID);
    assert_null(got);
    assert_int_equal(len, 0);
    assert_int_equal(ddpm_repaint_schedule(10, 2, 0, &got, &len), DDPM_ERR_INVALID);
    assert_int_equal(ddpm_repaint_schedule(0, 2, 2, &got, &len), DDPM_ERR_INVALID);
}

/* The known region ends equal to the image (the last move sets it to the image itself); the
 * unknown coordinate of each correlated pair is drawn from the right conditional distribution
 * once RePaint resamples, where a single pass (no jumps) leaves it biased toward the prior:
 * data pairs with rho 0.9, the first coordinate known at 0.8, so the second should be
 * N(rho 0.8, 0.5^2 (1 - rho^2)) = N(0.72, 0.218^2). */
static void test_repaint_inpaints(void **state) {
    (void)state;
    ddpm_schedule s;
    make_schedule(&s, DDPM_SCHEDULE_COSINE, 100);
    enum { N = 2000, D = 2 };
    float *known = malloc(sizeof(float) * N * D), *mask = malloc(sizeof(float) * N * D);
    float *x = malloc(sizeof(float) * N * D);
    for (int i = 0; i < N; i++) {
        known[2 * i] = 0.8f, known[2 * i + 1] = -3.0f; /* the second is to be regenerated */
        mask[2 * i] = 1.0f, mask[2 * i + 1] = 0.0f;
    }
    double err[2];
    for (int r = 0; r < 2; r++) {
        for (int p = 0; p < 3; p++) {
            ddpm_sample_opts o;
            opts_for(&o, DDPM_SAMPLER_DDPM, 0, 21);
            o.step.prediction = (ddpm_prediction)p;
            gauss_model m = {&s, 0.0, 0.5, 0.9, (ddpm_prediction)p, D, 0, -1};
            const int J = r ? 10 : 1, R = r ? 10 : 1;
            assert_int_equal(ddpm_repaint(&s, &o, J, R, gauss_denoise, &m, N, D, known, mask, x), 0);
            int *sched, len, down = 0;
            assert_int_equal(ddpm_repaint_schedule(100, J, R, &sched, &len), DDPM_OK);
            for (int j = 0; j + 1 < len; j++) down += sched[j + 1] < sched[j];
            free(sched);
            assert_int_equal(m.calls, down);
            for (int i = 0; i < N; i++) assert_float_equal(x[2 * i], 0.8f, 1e-6);
            double mean, sd;
            mean_sd(x + 1, N, 2, &mean, &sd);
            printf("  RePaint %s, jump length %d, %d samples: unknown mean %.3f sd %.3f (want 0.72, 0.218)\n",
                   ddpm_prediction_name(m.pred), J, R, mean, sd);
            if (p == 0) err[r] = fabs(mean - 0.72);
            /* Measured with T = 100, J = R = 10: mean 0.680, sd 0.223 (one pass: 0.494, 0.269);
             * RePaint approaches the conditional, it is not exact. 2000 draws: standard errors
             * 0.005 (mean), 0.004 (sd). */
            if (r && (fabs(mean - 0.72) > 0.06 || fabs(sd - 0.218) > 0.03))
                fail_msg("RePaint's unknown coordinate: mean %.3f sd %.3f", mean, sd);
        }
    }
    if (!(err[1] < 0.25 * err[0])) fail_msg("resampling does not help: %.3f vs %.3f", err[1], err[0]);
    /* A mask of all ones gives the image back; other samplers are refused. */
    for (int i = 0; i < N * D; i++) mask[i] = 1.0f;
    ddpm_sample_opts o;
    opts_for(&o, DDPM_SAMPLER_DDPM, 0, 1);
    gauss_model m = {&s, 0.0, 0.5, 0.9, DDPM_PRED_EPS, D, 0, -1};
    assert_int_equal(ddpm_repaint(&s, &o, 5, 2, gauss_denoise, &m, 4, D, known, mask, x), 0);
    assert_memory_equal(x, known, sizeof(float) * 4 * D);
    o.sampler = DDPM_SAMPLER_DDIM;
    assert_int_equal(ddpm_repaint(&s, &o, 5, 2, gauss_denoise, &m, 4, D, known, mask, x),
                     DDPM_ERR_INVALID);
    assert_non_null(strstr(ddpm_last_error(), "RePaint runs with the DDPM sampler (got ddim)"));
    free(known);
    free(mask);
    free(x);
    ddpm_schedule_free(&s);
}

/* ---- DDIM inversion ----------------------------------------------------------------------- */

static double alpha_of(double sigma) { return 1.0 / sqrt(1.0 + sigma * sigma); }

/* The exact probability-flow ODE for independent coordinates (rho 0): x_ve - mu scales with
 * sqrt(sd^2 + sigma^2); from x at sigma_a to sigma_b, in the x_t scale. */
static double pf_exact(double x, double mu, double sd, double sa, double sb) {
    return alpha_of(sb) * (mu + (x / alpha_of(sa) - mu) * sqrt(sd * sd + sb * sb) /
                                    sqrt(sd * sd + sa * sa));
}

/* Inverting K steps, then sampling back with DDIM (eta 0, the same K): the inverted x_T tends to
 * the exact ODE's, and the round trip's error falls with K at first order (slope of log error
 * against log K, K = 10..80), for every prediction type. */
static void test_ddim_inversion(void **state) {
    (void)state;
    ddpm_schedule s;
    make_schedule(&s, DDPM_SCHEDULE_LINEAR, 1000);
    enum { D = 10 };
    float img[D], xT[D], back[D];
    for (int i = 0; i < D; i++) img[i] = (float)(-0.9 + 0.2 * i);
    for (int p = 0; p < 3; p++) {
        double sx = 0, sy = 0, sxx = 0, sxy = 0, prev = INFINITY, prev_inv = INFINITY;
        printf("  inversion, %s:", ddpm_prediction_name((ddpm_prediction)p));
        for (int j = 0; j < 4; j++) {
            const int K = 10 << j;
            ddpm_sample_opts o;
            opts_for(&o, DDPM_SAMPLER_DDIM, K, 0);
            o.step.prediction = (ddpm_prediction)p;
            gauss_model m = {&s, 0.1, 0.4, 0.0, (ddpm_prediction)p, D, 0, -1};
            assert_int_equal(ddpm_ddim_invert(&s, &o, gauss_denoise, &m, 1, D, img, xT), DDPM_OK);
            assert_int_equal(m.calls, K);
            int ts[80];
            assert_int_equal(ddpm_sample_timesteps(&s, &o, ts, NULL), DDPM_OK);
            double inv_err = 0, rec = 0;
            for (int i = 0; i < D; i++)
                inv_err = fmax(inv_err, fabs(xT[i] - pf_exact(img[i], 0.1, 0.4, 0.0, ddpm_sigma(&s, ts[0]))));
            memcpy(back, xT, sizeof back);
            o.x_is_init = 1;
            assert_int_equal(ddpm_sample_loop(&s, &o, gauss_denoise, &m, 1, D, back), DDPM_OK);
            for (int i = 0; i < D; i++) rec = fmax(rec, fabs(back[i] - img[i]));
            printf(" K=%d x_T %.2e round trip %.2e", K, inv_err, rec);
            if (!(rec < prev && inv_err < prev_inv)) fail_msg("errors did not fall at K = %d", K);
            prev = rec, prev_inv = inv_err;
            sx += log(K), sy += log(rec), sxx += log(K) * log(K), sxy += log(K) * log(rec);
            if (j == 3 && !(inv_err < 0.03)) fail_msg("inverted x_T off the exact ODE by %.3g", inv_err);
        }
        const double slope = -(4 * sxy - sx * sy) / (4 * sxx - sx * sx);
        printf("  order %.2f\n", slope);
        if (slope < 0.8 || slope > 1.3) fail_msg("round-trip error falls at order %.2f, not 1", slope);
    }
    /* In place, and with batches: each item inverted alone gives the same bits. */
    ddpm_sample_opts o;
    opts_for(&o, DDPM_SAMPLER_DDIM, 7, 0);
    gauss_model m = {&s, 0.1, 0.4, 0.0, DDPM_PRED_V, 2, 0, -1};
    o.step.prediction = DDPM_PRED_V;
    float two[D], one[2];
    memcpy(two, img, sizeof(float) * D);
    assert_int_equal(ddpm_ddim_invert(&s, &o, gauss_denoise, &m, D / 2, 2, two, two), DDPM_OK);
    assert_int_equal(ddpm_ddim_invert(&s, &o, gauss_denoise, &m, 1, 2, img + 4, one), DDPM_OK);
    assert_memory_equal(one, two + 4, sizeof one);
    o.steps = 1001;
    assert_int_equal(ddpm_ddim_invert(&s, &o, gauss_denoise, &m, 1, 2, img, one), DDPM_ERR_INVALID);
    ddpm_schedule_free(&s);
}

/* ---- non-finite values ---------------------------------------------------------------------- */

/* A network whose output is NaN at element 3 (item 1 of items of 2). */
static int nan_net(void *ctx, const float *x, int B, int t, const float *x0_prev, float *out) {
    (void)ctx, (void)t, (void)x0_prev;
    for (int i = 0; i < B * 2; i++) out[i] = i == 3 ? NAN : 0.1f * x[i];
    return 0;
}

/* A NaN from the network stops RePaint, DDIM inversion and img2img at the first step, with
 * DDPM_ERR_NUMERIC naming the loop, the step and the item, instead of a NaN result. */
static void test_non_finite(void **state) {
    (void)state;
    ddpm_schedule s;
    make_schedule(&s, DDPM_SCHEDULE_LINEAR, 20);
    const float known[4] = {0.5f, -0.5f, 0.25f, 0.0f}, mask[4] = {1, 0, 1, 0};
    float x[4];
    ddpm_sample_opts o;
    opts_for(&o, DDPM_SAMPLER_DDPM, 0, 1);
    tu_expect_status(ddpm_repaint(&s, &o, 5, 2, nan_net, NULL, 2, 2, known, mask, x),
                     DDPM_ERR_NUMERIC, NULL, "RePaint: item 1 holds NaN after step 1 of ");
    opts_for(&o, DDPM_SAMPLER_DDIM, 5, 1);
    tu_expect_status(ddpm_ddim_invert(&s, &o, nan_net, NULL, 2, 2, known, x), DDPM_ERR_NUMERIC,
                     NULL, "DDIM inversion: item 1 holds NaN after step 1 of 5");
    tu_expect_status(ddpm_img2img(&s, &o, 0.6, nan_net, NULL, 2, 2, known, x), DDPM_ERR_NUMERIC,
                     NULL, "sampler ddim: item 1 holds NaN after step 3 of 5");
    ddpm_schedule_free(&s);
}

/* ---- slerp -------------------------------------------------------------------------------- */

static double norm(const float *v, size_t n) {
    double s = 0;
    for (size_t i = 0; i < n; i++) s += (double)v[i] * v[i];
    return sqrt(s);
}

static void test_slerp(void **state) {
    (void)state;
    enum { N = 4096 };
    float *a = malloc(sizeof(float) * N), *b = malloc(sizeof(float) * N), *o = malloc(sizeof(float) * N);
    ddpm_randn(1, DDPM_STREAM_USER, 0, 0, a, N);
    ddpm_randn(1, DDPM_STREAM_USER, 1, 0, b, N);
    ddpm_slerp(a, b, 0.0, N, o);
    assert_memory_equal(o, a, sizeof(float) * N);
    ddpm_slerp(a, b, 1.0, N, o);
    assert_memory_equal(o, b, sizeof(float) * N);
    /* Two Gaussian draws are nearly orthogonal with nearly equal norms: slerp keeps the norm
     * along the way (to the norms' own difference), where the straight line sags to 1/sqrt(2). */
    const double na = norm(a, N), nb = norm(b, N);
    for (int k = 1; k < 8; k++) {
        const double w = k / 8.0;
        ddpm_slerp(a, b, w, N, o);
        const double want = (1 - w) * na + w * nb;
        if (fabs(norm(o, N) / want - 1) > 0.01) fail_msg("w %.3f: norm %.2f, ends %.2f %.2f", w, norm(o, N), na, nb);
    }
    /* Exactly orthogonal unit vectors: the midpoint is (a + b) / sqrt(2), of norm 1. */
    float e1[2] = {1, 0}, e2[2] = {0, 1}, mid[2];
    ddpm_slerp(e1, e2, 0.5, 2, mid);
    assert_float_equal(mid[0], (float)M_SQRT1_2, 1e-7);
    assert_float_equal(mid[1], (float)M_SQRT1_2, 1e-7);
    /* Parallel vectors: the straight line (which is the arc). */
    float p1[2] = {1, 2}, p2[2] = {2, 4};
    ddpm_slerp(p1, p2, 0.25, 2, mid);
    assert_float_equal(mid[0], 1.25f, 1e-6);
    assert_float_equal(mid[1], 2.5f, 1e-6);
    free(a);
    free(b);
    free(o);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_img2img_start),
        cmocka_unit_test(test_img2img_ends),
        cmocka_unit_test(test_img2img_moves_toward_data),
        cmocka_unit_test(test_repaint_schedule),
        cmocka_unit_test(test_repaint_inpaints),
        cmocka_unit_test(test_ddim_inversion),
        cmocka_unit_test(test_slerp),
        cmocka_unit_test(test_non_finite),
    };
    tu_use_fixture("editing.safetensors", &fx);
    return cmocka_run_group_tests(tests, tu_fixture_setup, tu_fixture_teardown);
}

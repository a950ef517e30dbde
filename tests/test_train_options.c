/* test_train_options.c - the training options of the tutorials' code: the P2 loss weight (against
 * its formula), offset noise (a per-channel constant on top of the plain noise, reproducible),
 * their checkpoint round trip, and their validation. */
#include "testutil.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static void test_p2_weights(void **state) {
    (void)state;
    ddpm_schedule s;
    ddpm_schedule_config sc;
    ddpm_schedule_config_default(&sc, DDPM_SCHEDULE_LINEAR, 1000);
    assert_int_equal(ddpm_schedule_init(&s, &sc), DDPM_OK);
    const int t[4] = {0, 10, 500, 999};
    float w[4] = {1, 1, 1, 2};
    ddpm_p2_weights(&s, 1.0f, 1.0f, t, 4, w);
    for (int i = 0; i < 4; i++) {
        /* lucidrains: (k + alphas_cumprod / (1 - alphas_cumprod)) ** -gamma, with abar from the
         * linear betas in double */
        double abar = 1.0;
        for (int k = 0; k <= t[i]; k++) abar *= 1.0 - (1e-4 + (0.02 - 1e-4) * k / 999.0);
        const double want = (i == 3 ? 2.0 : 1.0) / (1.0 + abar / (1.0 - abar));
        assert_float_equal(w[i], want, 1e-3 * want); /* float abar near 1 */
    }
    ddpm_schedule_free(&s);
}

typedef struct {
    ddpm_model *m;
    ddpm_schedule s;
    ddpm_trainer tr;
    float *x;
} run;

static void run_init(run *r, float offset, float p2_gamma) {
    assert_int_equal(ddpm_model_create("{\"kind\":\"unet\",\"in_channels\":2,\"height\":8,\"base_channels\":8,"
                                       "\"channel_mult\":[1,2],\"num_res_blocks\":1,\"groups\":4,"
                                       "\"heads\":2,\"dim_head\":8,\"num_timesteps\":50}",
                                       3, &r->m),
                     DDPM_OK);
    ddpm_schedule_config sc;
    ddpm_schedule_config_default(&sc, DDPM_SCHEDULE_LINEAR, 50);
    assert_int_equal(ddpm_schedule_init(&r->s, &sc), DDPM_OK);
    const size_t n = 12, d = r->m->sample_numel;
    r->x = malloc(sizeof(float) * n * d);
    ddpm_randn(2, DDPM_STREAM_USER, 0, 0, r->x, n * d);
    ddpm_train_config tc;
    ddpm_train_config_default(&tc);
    tc.batch_size = 4;
    tc.offset_noise = offset;
    tc.p2_gamma = p2_gamma;
    ddpm_train_data td = {.x = r->x, .n = n};
    assert_int_equal(ddpm_trainer_init(&r->tr, r->m, &r->s, &tc, &td), DDPM_OK);
}
static void run_free(run *r) {
    ddpm_trainer_free(&r->tr);
    ddpm_schedule_free(&r->s);
    ddpm_model_free(r->m);
    free(r->x);
}

/* With offset noise the step's eps is the plain eps plus one constant per (item, channel), of
 * about S in size; the same seed gives the same run. */
static void test_offset_noise(void **state) {
    (void)state;
    run a, b, c;
    run_init(&a, 0.0f, 0.0f);
    run_init(&b, 0.5f, 0.0f);
    run_init(&c, 0.5f, 0.0f);
    assert_int_equal(ddpm_trainer_step(&a.tr), DDPM_OK);
    assert_int_equal(ddpm_trainer_step(&b.tr), DDPM_OK);
    assert_int_equal(ddpm_trainer_step(&c.tr), DDPM_OK);
    const int C = 2;
    const size_t plane = 64;
    double sumsq = 0;
    for (int i = 0; i < 4; i++)
        for (int ch = 0; ch < C; ch++) {
            const float *ea = a.tr.eps_ + ((size_t)i * C + ch) * plane;
            const float *eb = b.tr.eps_ + ((size_t)i * C + ch) * plane;
            const float off = eb[0] - ea[0];
            for (size_t j = 1; j < plane; j++) assert_float_equal(eb[j] - ea[j], off, 1e-5);
            sumsq += (double)off * off;
        }
    const double rms = sqrt(sumsq / (4 * C));
    assert_true(rms > 0.1 && rms < 1.5); /* 8 draws of 0.5 z */
    assert_memory_equal(b.m->params, c.m->params, sizeof(float) * b.m->n_params);
    assert_true(memcmp(a.m->params, b.m->params, sizeof(float) * a.m->n_params) != 0);
    run_free(&a);
    run_free(&b);
    run_free(&c);
}

/* P2 weights enter the loss: the weighted loss is below the plain one (weights < 1 for SNR > 0),
 * and the options survive a checkpoint. */
static void test_p2_loss_and_checkpoint(void **state) {
    (void)state;
    run a, b;
    run_init(&a, 0.0f, 0.0f);
    run_init(&b, 0.25f, 1.0f);
    assert_int_equal(ddpm_trainer_step(&a.tr), DDPM_OK);
    assert_int_equal(ddpm_trainer_step(&b.tr), DDPM_OK);
    assert_true(b.tr.last_loss < a.tr.last_loss);
    const char *path = tu_tmp("options.safetensors");
    assert_int_equal(ddpm_checkpoint_save(path, &b.tr, "{}", NULL, NULL, 0), DDPM_OK);
    ddpm_checkpoint ck;
    if (ddpm_checkpoint_load(path, &ck)) fail_msg("%s", ddpm_last_error());
    assert_float_equal(ck.train.p2_gamma, 1.0f, 0);
    assert_float_equal(ck.train.p2_k, 1.0f, 0);
    assert_float_equal(ck.train.offset_noise, 0.25f, 0);
    ddpm_checkpoint_free(&ck);
    run_free(&a);
    run_free(&b);
}

static void test_bad_options(void **state) {
    (void)state;
    ddpm_model *m;
    assert_int_equal(ddpm_model_create("{\"kind\":\"mlp\",\"dim\":2,\"num_timesteps\":50}", 1, &m), DDPM_OK);
    ddpm_schedule s;
    ddpm_schedule_config sc;
    ddpm_schedule_config_default(&sc, DDPM_SCHEDULE_LINEAR, 50);
    assert_int_equal(ddpm_schedule_init(&s, &sc), DDPM_OK);
    float x[20] = {0};
    ddpm_train_data td = {.x = x, .n = 10};
    ddpm_train_config tc;
    ddpm_trainer tr;
    ddpm_train_config_default(&tc);
    tc.p2_k = 0.0f;
    assert_int_equal(ddpm_trainer_init(&tr, m, &s, &tc, &td), DDPM_ERR_INVALID);
    ddpm_train_config_default(&tc);
    tc.offset_noise = -1.0f;
    assert_int_equal(ddpm_trainer_init(&tr, m, &s, &tc, &td), DDPM_ERR_INVALID);
    ddpm_schedule_free(&s);
    ddpm_model_free(m);
}

/* Zero terminal SNR (Lin et al. 2023, Algorithm 1): abar ends at 0, sqrt(abar) is the original's
 * shifted and scaled (an affine map: checked at every step), its first value kept; the buffers
 * are finite where the samplers read them; eps networks and sigma-space samplers are refused,
 * a v network samples with DDIM over trailing steps without NaN. */
static int v_zero(void *ctx, const float *x, int B, int t, const float *x0_prev, float *out) {
    (void)ctx, (void)x, (void)t, (void)x0_prev;
    memset(out, 0, sizeof(float) * (size_t)B * 4);
    return 0;
}
static void test_zero_terminal_snr(void **state) {
    (void)state;
    ddpm_schedule a, z;
    ddpm_schedule_config sc;
    ddpm_schedule_config_default(&sc, DDPM_SCHEDULE_LINEAR, 1000);
    assert_int_equal(ddpm_schedule_init(&a, &sc), DDPM_OK);
    sc.zero_terminal_snr = 1;
    assert_int_equal(ddpm_schedule_init(&z, &sc), DDPM_OK);
    assert_true(z.alphas_cumprod[999] == 0.0f && z.betas[999] == 1.0f && z.snr[999] == 0.0f);
    assert_float_equal(z.alphas_cumprod[0], a.alphas_cumprod[0], 1e-7);
    const double r0 = sqrt((double)a.alphas_cumprod[0]), rT = sqrt((double)a.alphas_cumprod[999]);
    for (int t = 0; t < 1000; t += 37) {
        const double want = (sqrt((double)a.alphas_cumprod[t]) - rT) * r0 / (r0 - rT);
        assert_float_equal(z.sqrt_alphas_cumprod[t], want, 2e-6);
        assert_true(isfinite(z.posterior_mean_coef1[t]) && isfinite(z.posterior_variance[t]));
    }
    assert_true(isfinite(z.posterior_mean_coef1[999]) && isfinite(z.posterior_log_variance_clipped[999]));
    /* JSON round trip keeps the flag */
    char *j = ddpm_schedule_config_json(&z);
    ddpm_schedule back;
    assert_int_equal(ddpm_schedule_from_json(j, &back), DDPM_OK);
    assert_memory_equal(back.alphas_cumprod, z.alphas_cumprod, sizeof(float) * 1000);
    free(j);
    ddpm_schedule_free(&back);
    /* sampling: v + DDIM trailing from t = 999 is finite; eps or Euler are refused */
    ddpm_sample_opts o;
    ddpm_sample_opts_default(&o);
    o.sampler = DDPM_SAMPLER_DDIM;
    o.steps = 10;
    assert_int_equal(ddpm_spacing_parse("trailing", &o.spacing), DDPM_OK);
    o.step.prediction = DDPM_PRED_V;
    float x[8];
    assert_int_equal(ddpm_sample_loop(&z, &o, v_zero, NULL, 2, 4, x), DDPM_OK);
    for (int i = 0; i < 8; i++) assert_true(isfinite(x[i]));
    o.step.prediction = DDPM_PRED_EPS;
    assert_int_equal(ddpm_sample_loop(&z, &o, v_zero, NULL, 2, 4, x), DDPM_ERR_INVALID);
    o.step.prediction = DDPM_PRED_V;
    o.sampler = DDPM_SAMPLER_EULER;
    assert_int_equal(ddpm_sample_loop(&z, &o, v_zero, NULL, 2, 4, x), DDPM_ERR_INVALID);
    assert_non_null(strstr(ddpm_last_error(), "not finite"));
    /* the course's schedule has no rescaled form */
    ddpm_schedule c;
    ddpm_schedule_config_default(&sc, DDPM_SCHEDULE_LINEAR_COURSE, 500);
    sc.zero_terminal_snr = 1;
    assert_int_equal(ddpm_schedule_init(&c, &sc), DDPM_ERR_INVALID);
    ddpm_schedule_free(&a);
    ddpm_schedule_free(&z);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_p2_weights),
        cmocka_unit_test(test_offset_noise),
        cmocka_unit_test(test_p2_loss_and_checkpoint),
        cmocka_unit_test(test_bad_options),
        cmocka_unit_test(test_zero_terminal_snr),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

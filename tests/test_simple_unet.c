/* test_simple_unet.c - the tutorial's SimpleUnet against PyTorch (scripts/fixtures/gen_course_nets.py):
 * forward, every parameter gradient and the updated running statistics in training mode, the
 * forward in eval mode, three Adam steps; loading by name and its errors, config errors, no
 * allocation in steady state, thread-count independence, checkpoints and the trainer.
 *
 * The checks shared with test_context_unet.c are in tests/support/netcheck.c. Tolerance against the
 * float64 PyTorch references, per tensor:
 *   |got - ref| <= 1e-4 |ref| + 1e-5 max|ref| + 5e-6 G
 * where G is the largest gradient of the whole case (a floor for gradients that are ~0). Losses
 * and gradient norms of the Adam steps: relative 1e-5. */
#include "netcheck.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CFG "{\"kind\":\"simple-unet\",\"in_channels\":3,\"height\":16,\"channels\":[8,16,32],\"time_emb_dim\":32,\"num_timesteps\":300}"

static nc_suite S = {.tag = "simple-unet", .file = "simple_unet.safetensors"};

/* ---- against PyTorch ---------------------------------------------------------------------------- */

static void test_vs_pytorch(void **state) {
    (void)state;
    /* 4 blocks, 2 batch norms each, mean and var */
    nc_check_forward_backward(&S, CFG, "su/", 2, 4 * 2 * 2);
}

static void test_adam_steps_vs_pytorch(void **state) {
    (void)state;
    assert_true(nc_check_adam_steps(&S, CFG, "su/", 2) > 0); /* the clipping did something */
}

/* ---- loading by name ---------------------------------------------------------------------------- */

/* Writes the fixture's "su/w." tensors (without the prefix) to path, leaving out those whose names
 * start with skip (NULL: none), plus one `extra` tensor (a copy of output.bias). */
static void write_weights(const char *path, const char *skip, const char *extra) {
    nc_write_weights(&S, path, "su/", skip, extra, "output.bias");
}

static void test_load_errors(void **state) {
    (void)state;
    const char *full = tu_tmp("full.safetensors");
    write_weights(full, NULL, NULL);
    ddpm_model *m = nc_create(CFG, 7);
    assert_int_equal(nc_load_file(m, full), DDPM_OK);
    const ddpm_param_info *p = ddpm_model_find(m, "ups.0.transform.weight");
    assert_non_null(p);
    float *ref = tu_tensor(&S.fx, "su/w.ups.0.transform.weight", p->numel, NULL);
    assert_memory_equal(ddpm_model_tensor_data(m, p), ref, p->numel * sizeof(float));
    free(ref);

    struct {
        const char *cfg, *error;
    } cases[] = {
        {"{\"kind\":\"simple-unet\",\"height\":16,\"channels\":[16,32,64]}",
         "'conv0.weight' has shape [8, 3, 3, 3], the model expects [16, 3, 3, 3]"},
        {"{\"kind\":\"simple-unet\",\"height\":16,\"channels\":[8,16,32],\"time_emb_dim\":16}",
         "'time_mlp.1.weight' has shape [32, 32], the model expects [16, 16]"},
        {"{\"kind\":\"simple-unet\",\"height\":16,\"channels\":[8,16,32,64]}",
         "'downs.2.time_mlp.weight' of the simple-unet model is missing"},
        {"{\"kind\":\"simple-unet\",\"height\":16,\"channels\":[8,16]}",
         "'ups.0.time_mlp.weight' has shape [16, 32], the model expects [8, 32]"},
        {"{\"kind\":\"simple-unet\",\"in_channels\":1,\"height\":16,\"channels\":[8,16,32]}",
         "'conv0.weight' has shape [8, 3, 3, 3], the model expects [8, 1, 3, 3]"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        ddpm_model *o = nc_create(cases[i].cfg, 7);
        nc_expect_load_error(o, full, cases[i].error);
        ddpm_model_free(o);
    }
    const char *missing = tu_tmp("missing.safetensors");
    write_weights(missing, "ups.1.bnorm2.running_var", NULL);
    nc_expect_load_error(m, missing, "'ups.1.bnorm2.running_var' of the simple-unet model is missing");
    const char *extra = tu_tmp("extra.safetensors");
    write_weights(extra, NULL, "ups.2.conv1.weight");
    nc_expect_load_error(m, extra, "'ups.2.conv1.weight' is not part of the simple-unet model");
    ddpm_model_free(m);
}

/* ---- configuration -------------------------------------------------------------------------- */

static void test_config(void **state) {
    (void)state;
    nc_expect_bad_config("{\"kind\":\"simple-unet\",\"height\":40}",
               "\"height\" must be divisible by 2^4 = 16 for 5 \"channels\"");
    nc_expect_bad_config("{\"kind\":\"simple-unet\",\"height\":18,\"channels\":[8,16,32]}",
               "\"height\" must be divisible by 2^2 = 4");
    nc_expect_bad_config("{\"kind\":\"simple-unet\",\"height\":-64}", "\"height\"");
    nc_expect_bad_config("{\"kind\":\"simple-unet\",\"channels\":[64]}", "\"channels\" needs at least 2 entries");
    nc_expect_bad_config("{\"kind\":\"simple-unet\",\"channels\":[8,0,32]}", "\"channels\"[1] must be in 1..65536");
    nc_expect_bad_config("{\"kind\":\"simple-unet\",\"channels\":[8,-16]}", "\"channels\"[1]");
    nc_expect_bad_config("{\"kind\":\"simple-unet\",\"channels\":8}", "\"channels\" must be a list");
    nc_expect_bad_config("{\"kind\":\"simple-unet\",\"time_emb_dim\":31}", "\"time_emb_dim\" must be even");
    nc_expect_bad_config("{\"kind\":\"simple-unet\",\"time_emb_dim\":2}", "\"time_emb_dim\"");
    nc_expect_bad_config("{\"kind\":\"simple-unet\",\"in_channels\":-3}", "\"in_channels\"");
    nc_expect_bad_config("{\"kind\":\"simple-unet\",\"num_timesteps\":0}", "\"num_timesteps\"");
    nc_expect_bad_config("{\"kind\":\"simple-unet\",\"n_feat\":64}", "unknown key \"n_feat\" for simple-unet");

    /* every default but the channel list (the default network is 62,438,883 parameters, as the
     * tutorial's); the stored config lists every key */
    ddpm_model *m = nc_create("{\"kind\":\"simple-unet\",\"channels\":[8,16,32]}", 7);
    assert_string_equal(m->config_json,
                        "{\"kind\":\"simple-unet\",\"in_channels\":3,\"height\":64,"
                        "\"channels\":[8,16,32],\"time_emb_dim\":32,\"num_timesteps\":300}");
    nc_check_shape(m, "simple-unet", 3, 64, 0, 300);
    /* PyTorch's SimpleUnet with these channels has 61,467 parameters */
    assert_int_equal(nc_count_weights(m), 61467);
    assert_string_equal(m->tensors[0].name, "time_mlp.1.weight");
    assert_string_equal(m->tensors[4].name, "downs.0.time_mlp.weight");
    assert_string_equal(m->tensors[m->n_tensors - 1].name, "output.bias");
    const nc_bound bounds[] = {{"time_mlp.1.weight", 1 / sqrt(32.0)},
                  {"conv0.bias", 1 / sqrt(27.0)},
                  {"downs.1.transform.weight", 1 / sqrt(32.0 * 16)},
                  {"ups.0.conv1.weight", 1 / sqrt(64.0 * 9)},
                  {"ups.0.transform.weight", 1 / sqrt(16.0 * 16)}, /* ConvTranspose2d: C_out k k */
                  {"ups.1.transform.bias", 1 / sqrt(8.0 * 16)},
                  {"output.weight", 1 / sqrt(8.0)}};
    nc_check_init_bounds(m, bounds, sizeof bounds / sizeof bounds[0], 0.7);
    const char *const ones[] = {"downs.0.bnorm1.weight", "ups.1.bnorm2.running_var"};
    nc_check_ones(m, ones, 2);
    ddpm_model *again = nc_create(m->config_json, 7);
    assert_string_equal(again->config_json, m->config_json);
    assert_memory_equal(again->params, m->params, m->n_params * sizeof(float));
    ddpm_model_free(again);
    ddpm_model_free(m);
}

/* ---- inputs, memory, threads ---------------------------------------------------------------- */

static void test_inputs(void **state) {
    (void)state;
    ddpm_model *m = nc_load(&S, CFG, "su/");
    const int B = 2;
    const size_t n = B * m->sample_numel;
    float *x = tu_tensor(&S.fx, "su/x", n, NULL);
    float *o1 = malloc(sizeof(float) * n), *o2 = malloc(sizeof(float) * n);
    int t[2] = {0, 299};
    assert_int_equal(ddpm_model_reserve(m, B), DDPM_OK);
    /* eval forwards run in chunks of items (here 1 + 1): the same outputs */
    ddpm_model_input in = {.x = x, .t = t, .B = B, .train = 0};
    nc_check_eval_chunks(m, &in, 1, o1, o2);
    /* a context is ignored: the network is unconditional */
    float c[2] = {1, 1};
    in.cond = c;
    assert_int_equal(m->ops->forward(m, &in, o2), DDPM_OK);
    assert_memory_equal(o1, o2, n * sizeof(float));
    /* the integer timestep goes into the embedding */
    t[1] = 298;
    assert_int_equal(m->ops->forward(m, &in, o2), DDPM_OK);
    assert_memory_equal(o1, o2, m->sample_numel * sizeof(float));
    assert_memory_not_equal(o1 + m->sample_numel, o2 + m->sample_numel, m->sample_numel * sizeof(float));
    t[1] = 300;
    assert_int_equal(m->ops->forward(m, &in, o2), DDPM_ERR_INVALID);
    nc_expect_error("timestep 300 outside 0..299");
    t[1] = -1;
    assert_int_equal(m->ops->forward(m, &in, o2), DDPM_ERR_INVALID);
    t[1] = 0;
    in.B = 3;
    assert_int_equal(m->ops->forward(m, &in, o2), DDPM_ERR_INVALID);
    nc_expect_error("batch of 3");
    assert_int_equal(m->ops->backward(m, o1), DDPM_ERR_INVALID);
    nc_expect_error("backward without a training forward");
    free(x);
    free(o1);
    free(o2);
    ddpm_model_free(m);
}

static void test_steady_state_allocates_nothing(void **state) {
    (void)state;
    nc_check_steady_state(&S, CFG, "su/", 2, 1, 0, 40);
}

static void test_threads(void **state) {
    (void)state;
    nc_check_threads(&S, CFG, "su/", 2);
}

/* ---- with the trainer and checkpoints -------------------------------------------------------- */

static void test_trainer_and_checkpoint(void **state) {
    (void)state;
    ddpm_schedule s;
    ddpm_schedule_config sc;
    ddpm_schedule_config_default(&sc, DDPM_SCHEDULE_LINEAR, 300);
    assert_int_equal(ddpm_schedule_init(&s, &sc), DDPM_OK);
    ddpm_model *m = nc_create("{\"kind\":\"simple-unet\",\"in_channels\":1,\"height\":8,\"channels\":[4,8],\"time_emb_dim\":8}", 7);
    enum { N = 10 };
    float data[N * 64];
    ddpm_randn(3, DDPM_STREAM_USER, 0, 0, data, N * 64);
    ddpm_train_config tc;
    ddpm_train_config_default(&tc);
    tc.batch_size = 4;
    tc.total_steps = 3;
    tc.loss = DDPM_LOSS_L1; /* as the tutorial */
    ddpm_train_data td = {.x = data, .n = N, .hflip = 1};
    ddpm_trainer tr;
    nc_train(&tr, m, &s, &tc, &td, 3);
    ddpm_checkpoint ck;
    nc_checkpoint_roundtrip(&tr, "su_ck.safetensors", &ck);
    /* a short DDIM run through the sampler callback */
    ddpm_model_sampler ms;
    assert_int_equal(ddpm_model_sampler_init(&ms, ck.model, 3), DDPM_OK);
    ddpm_sample_opts so;
    ddpm_sample_opts_default(&so);
    so.sampler = DDPM_SAMPLER_DDIM;
    so.steps = 5;
    float x[3 * 64];
    assert_int_equal(ddpm_sample_loop(&s, &so, ddpm_model_denoise, &ms, 3, 64, x), DDPM_OK);
    for (int i = 0; i < 3 * 64; i++) assert_true(isfinite(x[i]));
    ddpm_model_sampler_free(&ms);
    ddpm_checkpoint_free(&ck);
    ddpm_trainer_free(&tr);
    ddpm_model_free(m);
    ddpm_schedule_free(&s);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_vs_pytorch),
        cmocka_unit_test(test_adam_steps_vs_pytorch),
        cmocka_unit_test(test_load_errors),
        cmocka_unit_test(test_config),
        cmocka_unit_test(test_inputs),
        cmocka_unit_test(test_steady_state_allocates_nothing),
        cmocka_unit_test(test_threads),
        cmocka_unit_test(test_trainer_and_checkpoint),
    };
    nc_use_suite(&S);
    return cmocka_run_group_tests(tests, nc_group_setup, nc_group_teardown);
}

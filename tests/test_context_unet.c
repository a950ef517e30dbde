/* test_context_unet.c - the course's ContextUnet against PyTorch (scripts/fixtures/gen_course_nets.py):
 * forward, every parameter gradient and the updated running statistics in training mode, the
 * forward in eval mode, three Adam steps; loading by name and its errors, config errors, no
 * allocation in steady state, thread-count independence, checkpoints and the trainer.
 *
 * The checks shared with test_simple_unet.c are in tests/support/netcheck.c. Tolerance against the
 * float64 PyTorch references, per tensor:
 *   |got - ref| <= 1e-4 |ref| + 1e-5 max|ref| + 5e-6 G
 * where G is the largest gradient of the whole case (the floor for tensors whose true gradient is
 * 0: the conv biases in front of a training-mode batch norm). Losses and gradient norms of the
 * Adam steps: relative 1e-5. */
#include "netcheck.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CFG "{\"kind\":\"context-unet\",\"in_channels\":3,\"n_feat\":8,\"n_cfeat\":5,\"height\":16,\"num_timesteps\":501}"
#define CFG28 "{\"kind\":\"context-unet\",\"in_channels\":1,\"n_feat\":8,\"n_cfeat\":10,\"height\":28,\"num_timesteps\":501}"

static nc_suite S = {.tag = "context-unet", .file = "context_unet.safetensors"};

/* ---- against PyTorch ---------------------------------------------------------------------------- */

static void test_sprites_vs_pytorch(void **state) {
    (void)state;
    /* 9 blocks, 2 batch norms each, mean and var */
    nc_check_forward_backward(&S, CFG, "cu/", 3, 2 * 18);
}

static void test_fashion_mnist_vs_pytorch(void **state) {
    (void)state;
    nc_check_forward_backward(&S, CFG28, "cu28/", 2, 2 * 18);
}

/* Three optimizer steps: MSE, clip_grad_norm_(1.0), Adam(lr 1e-3), as PyTorch. */
static void test_adam_steps_vs_pytorch(void **state) {
    (void)state;
    /* the clipping did something in every step */
    assert_int_equal(nc_check_adam_steps(&S, CFG, "cu/", 3), 3);
}

/* ---- loading by name ---------------------------------------------------------------------------- */

/* Writes the fixture's "cu/w." tensors (without the prefix) to path, leaving out those whose names
 * start with skip (NULL: none), plus one `extra` tensor (a copy of out.3.bias). */
static void write_weights(const char *path, const char *skip, const char *extra) {
    nc_write_weights(&S, path, "cu/", skip, extra, "out.3.bias");
}

static void test_load_errors(void **state) {
    (void)state;
    /* the exported file, without a prefix, loads (num_batches_tracked included: ignored) */
    const char *full = tu_tmp("full.safetensors");
    write_weights(full, NULL, NULL);
    ddpm_model *m = nc_create(CFG, 7);
    assert_int_equal(nc_load_file(m, full), DDPM_OK);
    const ddpm_param_info *p = ddpm_model_find(m, "up0.0.weight");
    assert_non_null(p);
    assert_int_equal(p->shape[2], 4); /* ConvTranspose2d(2nf, 2nf, h/4, h/4) */
    float *ref = tu_tensor(&S.fx, "cu/w.up0.0.weight", p->numel, NULL);
    assert_memory_equal(ddpm_model_tensor_data(m, p), ref, p->numel * sizeof(float));
    free(ref);
    p = ddpm_model_find(m, "down2.model.1.conv2.1.running_var");
    assert_non_null(p);
    assert_true(p->is_buffer);
    ref = tu_tensor(&S.fx, "cu/w.down2.model.1.conv2.1.running_var", p->numel, NULL);
    assert_memory_equal(ddpm_model_tensor_data(m, p), ref, p->numel * sizeof(float));
    free(ref);

    /* n_feat 8 weights into an n_feat 16 model: the first tensor already differs */
    ddpm_model *wide = nc_create("{\"kind\":\"context-unet\",\"in_channels\":3,\"n_feat\":16,\"n_cfeat\":5,\"height\":16}", 7);
    nc_expect_load_error(wide, full, "'init_conv.conv1.0.weight' has shape [8, 3, 3, 3], the model expects [16, 3, 3, 3]");
    ddpm_model_free(wide);
    /* another height changes only up0's kernel */
    ddpm_model *tall = nc_create("{\"kind\":\"context-unet\",\"in_channels\":3,\"n_feat\":8,\"n_cfeat\":5,\"height\":24}", 7);
    nc_expect_load_error(tall, full, "'up0.0.weight' has shape [16, 16, 4, 4], the model expects [16, 16, 6, 6]");
    ddpm_model_free(tall);
    /* another context width */
    ddpm_model *ctx = nc_create("{\"kind\":\"context-unet\",\"in_channels\":3,\"n_feat\":8,\"n_cfeat\":10,\"height\":16}", 7);
    nc_expect_load_error(ctx, full, "'contextembed1.model.0.weight' has shape [16, 5]");
    ddpm_model_free(ctx);

    /* a file missing one tensor */
    const char *missing = tu_tmp("missing.safetensors");
    write_weights(missing, "up1.model.2.conv1.1.running_mean", NULL);
    nc_expect_load_error(m, missing, "'up1.model.2.conv1.1.running_mean' of the context-unet model is missing");
    /* a file with one tensor too many */
    const char *extra = tu_tmp("extra.safetensors");
    write_weights(extra, NULL, "up3.model.0.bias");
    nc_expect_load_error(m, extra, "'up3.model.0.bias' is not part of the context-unet model");

    /* a course state_dict has no learned shortcut: the default model names the tensor ... */
    const char *course = tu_tmp("course.safetensors");
    write_weights(course, "init_conv.shortcut.", NULL);
    nc_expect_load_error(m, course, "'init_conv.shortcut.weight' of the context-unet model is missing");
    /* ... and "shortcut": "none" loads it: the block is then conv2 / 1.414, which is the learned
     * model with a zero shortcut */
    ddpm_model *none = nc_create("{\"kind\":\"context-unet\",\"in_channels\":3,\"n_feat\":8,\"n_cfeat\":5,\"height\":16,\"shortcut\":\"none\"}", 7);
    assert_null(ddpm_model_find(none, "init_conv.shortcut.weight"));
    assert_int_equal(none->n_tensors + 2, m->n_tensors);
    assert_int_equal(nc_load_file(none, course), DDPM_OK);
    nc_expect_load_error(none, full, "'init_conv.shortcut.bias' is not part of the context-unet model");
    assert_int_equal(nc_load_file(m, full), DDPM_OK);
    for (const char *s = "init_conv.shortcut.weight"; s; s = strcmp(s, "init_conv.shortcut.bias") ? "init_conv.shortcut.bias" : NULL) {
        const ddpm_param_info *q = ddpm_model_find(m, s);
        memset(ddpm_model_tensor_data(m, q), 0, q->numel * sizeof(float));
    }
    const int B = 3;
    float *x = tu_tensor(&S.fx, "cu/x", B * m->sample_numel, NULL);
    float *c = tu_tensor(&S.fx, "cu/c", B * 5, NULL);
    int *t = tu_tensor_int(&S.fx, "cu/t", B);
    float *o1 = malloc(sizeof(float) * B * m->sample_numel), *o2 = malloc(sizeof(float) * B * m->sample_numel);
    assert_int_equal(ddpm_model_reserve(m, B), DDPM_OK);
    assert_int_equal(ddpm_model_reserve(none, B), DDPM_OK);
    ddpm_model_input in = {.x = x, .t = t, .cond = c, .B = B, .train = 0};
    assert_int_equal(m->ops->forward(m, &in, o1), DDPM_OK);
    assert_int_equal(none->ops->forward(none, &in, o2), DDPM_OK);
    tu_assert_close(o2, o1, B * m->sample_numel, 1e-6, 1e-7, "shortcut none vs zero shortcut");
    free(x);
    free(c);
    free(t);
    free(o1);
    free(o2);
    ddpm_model_free(none);
    ddpm_model_free(m);
}

/* ---- configuration -------------------------------------------------------------------------- */

static void test_config(void **state) {
    (void)state;
    nc_expect_bad_config("{\"kind\":\"context-unet\",\"height\":18}", "\"height\" must be divisible by 4 (got 18)");
    nc_expect_bad_config("{\"kind\":\"context-unet\",\"height\":2}", "\"height\"");
    nc_expect_bad_config("{\"kind\":\"context-unet\",\"n_feat\":-64}", "\"n_feat\"");
    nc_expect_bad_config("{\"kind\":\"context-unet\",\"n_feat\":12}", "\"n_feat\" must be a multiple of 8");
    nc_expect_bad_config("{\"kind\":\"context-unet\",\"n_feat\":64.5}", "\"n_feat\" must be an integer");
    nc_expect_bad_config("{\"kind\":\"context-unet\",\"n_cfeat\":-1}", "\"n_cfeat\"");
    nc_expect_bad_config("{\"kind\":\"context-unet\",\"in_channels\":0}", "\"in_channels\"");
    nc_expect_bad_config("{\"kind\":\"context-unet\",\"num_timesteps\":1}", "\"num_timesteps\"");
    nc_expect_bad_config("{\"kind\":\"context-unet\",\"shortcut\":\"random\"}", "\"shortcut\" must be learned or none");
    nc_expect_bad_config("{\"kind\":\"context-unet\",\"height\":\"16\"}", "\"height\" must be an integer");
    nc_expect_bad_config("{\"kind\":\"context-unet\",\"nfeat\":32}", "unknown key \"nfeat\" for context-unet");

    /* the defaults are the course's sprites network; the stored config lists every key */
    ddpm_model *m = nc_create("{\"kind\":\"context-unet\"}", 7);
    assert_string_equal(m->config_json,
                        "{\"kind\":\"context-unet\",\"in_channels\":3,\"n_feat\":64,\"n_cfeat\":5,"
                        "\"height\":16,\"num_timesteps\":501,\"shortcut\":\"learned\"}");
    nc_check_shape(m, "context-unet", 3, 16, 5, 501);
    /* the course's ContextUnet(3, 64, 5, 16) has 1,480,771 parameters; the learned shortcut adds
     * 64 x 3 + 64 */
    assert_int_equal(nc_count_weights(m), 1480771 + 64 * 3 + 64);
    assert_string_equal(m->tensors[0].name, "init_conv.conv1.0.weight");
    assert_string_equal(m->tensors[m->n_tensors - 1].name, "out.3.bias");
    /* PyTorch's initialisation: U(+-1/sqrt(fan_in)); ConvTranspose2d's fan_in is C_out k k;
     * norms 1 and 0; running var 1 */
    const nc_bound bounds[] = {{"init_conv.conv1.0.weight", 1 / sqrt(27.0)},
                  {"init_conv.shortcut.bias", 1 / sqrt(3.0)},
                  {"timeembed1.model.0.weight", 1.0},
                  {"contextembed2.model.2.weight", 1 / sqrt(64.0)},
                  {"up0.0.weight", 1 / sqrt(128.0 * 16)},
                  {"up1.model.0.weight", 1 / sqrt(64.0 * 4)},
                  {"up2.model.0.bias", 1 / sqrt(64.0 * 4)}};
    nc_check_init_bounds(m, bounds, sizeof bounds / sizeof bounds[0], 0.8);
    const char *const ones[] = {"down1.model.0.conv1.1.weight", "up0.1.weight", "out.1.weight",
                                "down2.model.1.conv2.1.running_var"};
    nc_check_ones(m, ones, 4);
    ddpm_model_free(m);
    /* the stored config rebuilds the same network */
    m = nc_create(CFG28, 7);
    ddpm_model *again = nc_create(m->config_json, 7);
    assert_string_equal(again->config_json, m->config_json);
    assert_int_equal(again->n_params, m->n_params);
    assert_memory_equal(again->params, m->params, m->n_params * sizeof(float)); /* same seed */
    assert_int_equal(m->channels, 1);
    assert_int_equal(m->cond_dim, 10);
    ddpm_model_free(again);
    ddpm_model_free(m);
}

/* ---- inputs, memory, threads ---------------------------------------------------------------- */

static void test_inputs(void **state) {
    (void)state;
    ddpm_model *m = nc_load(&S, CFG, "cu/");
    const int B = 3;
    const size_t n = B * m->sample_numel;
    float *x = tu_tensor(&S.fx, "cu/x", n, NULL);
    float *o1 = malloc(sizeof(float) * n), *o2 = malloc(sizeof(float) * n);
    float zeros[3 * 5] = {0};
    int t[3] = {0, 250, 500};
    assert_int_equal(ddpm_model_reserve(m, B), DDPM_OK);
    /* eval forwards run in chunks of items (here 2 + 1): the same outputs */
    ddpm_model_input inc = {.x = x, .t = t, .cond = zeros, .B = B, .train = 0};
    nc_check_eval_chunks(m, &inc, 2, o1, o2);
    /* a NULL context is the all-zero (unconditional) one */
    ddpm_model_input in = {.x = x, .t = t, .cond = zeros, .B = B, .train = 0};
    assert_int_equal(m->ops->forward(m, &in, o1), DDPM_OK);
    in.cond = NULL;
    assert_int_equal(m->ops->forward(m, &in, o2), DDPM_OK);
    assert_memory_equal(o1, o2, n * sizeof(float));
    /* the time input matters: t / (num_timesteps - 1) */
    t[0] = 1;
    assert_int_equal(m->ops->forward(m, &in, o2), DDPM_OK);
    assert_memory_not_equal(o1, o2, m->sample_numel * sizeof(float));
    assert_memory_equal(o1 + m->sample_numel, o2 + m->sample_numel, 2 * m->sample_numel * sizeof(float));
    /* errors */
    t[0] = 501;
    assert_int_equal(m->ops->forward(m, &in, o2), DDPM_ERR_INVALID);
    nc_expect_error("timestep 501 outside 0..500");
    t[0] = 0;
    in.B = 4;
    assert_int_equal(m->ops->forward(m, &in, o2), DDPM_ERR_INVALID);
    nc_expect_error("batch of 4");
    in.B = 3;
    assert_int_equal(m->ops->backward(m, o1), DDPM_ERR_INVALID);
    nc_expect_error("backward without a training forward");
    free(x);
    free(o1);
    free(o2);
    ddpm_model_free(m);

    /* n_cfeat 0: an unconditional network (ddpm only), trainable */
    m = nc_create("{\"kind\":\"context-unet\",\"in_channels\":1,\"n_feat\":8,\"n_cfeat\":0,\"height\":8}", 7);
    assert_int_equal(m->cond_dim, 0);
    assert_null(ddpm_model_find(m, "contextembed1.model.0.weight"));
    assert_non_null(ddpm_model_find(m, "contextembed1.model.0.bias"));
    float xs[2 * 64], os[2 * 64], ds[2 * 64];
    int ts[2] = {3, 400};
    ddpm_randn(1, DDPM_STREAM_USER, 0, 0, xs, 128);
    ddpm_randn(1, DDPM_STREAM_USER, 1, 0, ds, 128);
    assert_int_equal(ddpm_model_reserve(m, 2), DDPM_OK);
    ddpm_model_input in0 = {.x = xs, .t = ts, .B = 2, .train = 1};
    assert_int_equal(m->ops->forward(m, &in0, os), DDPM_OK);
    memset(m->grads, 0, sizeof(float) * m->n_params);
    assert_int_equal(m->ops->backward(m, ds), DDPM_OK);
    /* the context embeddings are learned constants: GELU(bias 0) = 0 feeds the second Linear,
     * whose bias alone gets a gradient at initialisation */
    const ddpm_param_info *p = ddpm_model_find(m, "contextembed2.model.2.bias");
    assert_true(tu_maxabs(m->grads + p->offset, p->numel) > 0);
    ddpm_model_free(m);
}

static void test_steady_state_allocates_nothing(void **state) {
    (void)state;
    nc_check_steady_state(&S, CFG, "cu/", 3, 2, 2, 60); /* 71 nodes: batch norm + GELU are one */
}

static void test_threads(void **state) {
    (void)state;
    nc_check_threads(&S, CFG, "cu/", 3);
}

/* ---- with the trainer and checkpoints -------------------------------------------------------- */

static void test_trainer_and_checkpoint(void **state) {
    (void)state;
    ddpm_schedule s;
    ddpm_schedule_config sc;
    ddpm_schedule_config_default(&sc, DDPM_SCHEDULE_LINEAR_COURSE, 500);
    assert_int_equal(ddpm_schedule_init(&s, &sc), DDPM_OK);
    assert_int_equal(s.n, 501);
    ddpm_model *m = nc_create("{\"kind\":\"context-unet\",\"in_channels\":1,\"n_feat\":8,\"n_cfeat\":3,\"height\":8,\"num_timesteps\":501}", 7);
    enum { N = 12 };
    float data[N * 64], cond[N * 3] = {0};
    ddpm_randn(3, DDPM_STREAM_USER, 0, 0, data, N * 64);
    for (int i = 0; i < N; i++) cond[i * 3 + i % 3] = 1.0f;
    ddpm_train_config tc;
    ddpm_train_config_default(&tc);
    tc.batch_size = 4;
    tc.total_steps = 3;
    tc.cond_drop_prob = 0.1f;
    ddpm_train_data td = {.x = data, .cond = cond, .n = N};
    ddpm_trainer tr;
    nc_train(&tr, m, &s, &tc, &td, 3);
    ddpm_checkpoint ck;
    nc_checkpoint_roundtrip(&tr, "cu_ck.safetensors", &ck);
    /* the sampler callback, with classifier-free guidance (a batch of 2B) */
    ddpm_model_sampler ms;
    assert_int_equal(ddpm_model_sampler_init(&ms, ck.model, 2), DDPM_OK);
    ms.cond = cond;
    ms.guidance = 2.0f;
    float out[2 * 64];
    assert_int_equal(ddpm_model_denoise(&ms, data, 2, 250, NULL, out), DDPM_OK);
    for (int i = 0; i < 128; i++) assert_true(isfinite(out[i]));
    ddpm_model_sampler_free(&ms);
    ddpm_checkpoint_free(&ck);
    ddpm_trainer_free(&tr);
    ddpm_model_free(m);
    ddpm_schedule_free(&s);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sprites_vs_pytorch),
        cmocka_unit_test(test_fashion_mnist_vs_pytorch),
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

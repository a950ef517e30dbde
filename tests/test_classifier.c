/* test_classifier.c - the image classifier (src/models/classifier.c) and its loss and training
 * (src/ops/loss.c, src/train/classifier_train.c) against PyTorch (scripts/fixtures/gen_classifier.py):
 * logits, every parameter gradient and the running statistics in training mode, logits and
 * features in eval mode, three training steps (cross-entropy, clipping, Adam), the cross-entropy
 * against PyTorch and finite differences, config and loading errors, threads, no allocation in
 * steady state, and a short training run on synthetic images that must reach 95% accuracy.
 *
 * Tolerances as every network test (tests/support/netcheck.h): per tensor
 *   |got - ref| <= 1e-4 |ref| + 1e-5 max|ref| + 5e-6 G   (G: the case's largest gradient);
 * losses and gradient norms of the training steps: relative 1e-5. */
#include "netcheck.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CFG "{\"kind\":\"classifier\",\"in_channels\":1,\"height\":13,\"channels\":[4,6],\"features\":8,\"classes\":5}"
#define B_CASE 3

static nc_suite S = {.tag = "classifier", .file = "classifier.safetensors"};

/* ---- the network against PyTorch ------------------------------------------------------------- */

static void test_vs_pytorch(void **state) {
    (void)state;
    nc_check_forward_backward(&S, CFG, "cls/", B_CASE, 2 * 2); /* 2 batch norms, mean and var */
}

/* The eval-mode features and logits through ddpm_classifier_forward_eval, after the training
 * forward that updated the running statistics (as the fixture's model). */
static void test_features_vs_pytorch(void **state) {
    (void)state;
    ddpm_model *m = nc_load(&S, CFG, "cls/");
    assert_int_equal(m->n_classes, 5);
    assert_int_equal(ddpm_classifier_feature_dim(m), 8);
    assert_int_equal(ddpm_model_out_numel(m), 5);
    float *x = nc_tensor(&S.fx, "cls/", "x", (size_t)B_CASE * 169);
    float logits[B_CASE * 5], feats[B_CASE * 8], logits2[B_CASE * 5];
    assert_int_equal(ddpm_model_reserve(m, B_CASE), DDPM_OK);
    ddpm_model_input in = {.x = x, .B = B_CASE, .train = 1};
    assert_int_equal(m->ops->forward(m, &in, logits), DDPM_OK);
    assert_int_equal(ddpm_classifier_forward_eval(m, x, B_CASE, feats, logits), DDPM_OK);
    float *want = nc_tensor(&S.fx, "cls/", "feat_eval", B_CASE * 8);
    nc_cmp(&S, feats, want, B_CASE * 8, 0, "cls/feat_eval");
    free(want);
    want = nc_tensor(&S.fx, "cls/", "out_eval", B_CASE * 5);
    nc_cmp(&S, logits, want, B_CASE * 5, 0, "cls/out_eval (forward_eval)");
    /* logits alone, and one item at a time: the same numbers */
    assert_int_equal(ddpm_classifier_forward_eval(m, x, B_CASE, NULL, logits2), DDPM_OK);
    assert_memory_equal(logits, logits2, sizeof logits);
    for (int b = 0; b < B_CASE; b++) {
        float f1[8];
        assert_int_equal(ddpm_classifier_forward_eval(m, x + b * 169, 1, f1, NULL), DDPM_OK);
        tu_assert_close(f1, feats + b * 8, 8, 1e-6, 1e-6, "features of one item");
    }
    free(want);
    free(x);
    /* a denoiser is not a classifier */
    ddpm_model *u = nc_create("{\"kind\":\"simple-unet\",\"in_channels\":1,\"height\":8,\"channels\":[4,8]}", 1);
    assert_int_equal(ddpm_classifier_forward_eval(u, logits, 1, feats, NULL), DDPM_ERR_INVALID);
    nc_expect_error("simple-unet is not a classifier");
    assert_int_equal(ddpm_classifier_feature_dim(u), 0);
    /* and a classifier cannot sample or train as a diffusion model */
    ddpm_model_sampler ms;
    assert_int_equal(ddpm_model_sampler_init(&ms, m, 2), DDPM_ERR_INVALID);
    nc_expect_error("not a diffusion model");
    ddpm_model_sampler_free(&ms);
    ddpm_model_free(u);
    ddpm_model_free(m);
}

/* Three steps as PyTorch's loop: cross-entropy of a training forward, gradients from zero,
 * clip_grad_norm_(1.0), Adam(lr 1e-3). */
static void test_training_steps_vs_pytorch(void **state) {
    (void)state;
    ddpm_model *m = nc_load(&S, CFG, "cls/");
    ddpm_train_config cfg;
    ddpm_train_config_default(&cfg);
    float *am = calloc(m->n_params, sizeof(float)), *av = calloc(m->n_params, sizeof(float));
    float logits[B_CASE * 5], probs[B_CASE * 5], dl[B_CASE * 5];
    assert_int_equal(ddpm_model_reserve(m, B_CASE), DDPM_OK);
    for (int k = 1; k <= 3; k++) {
        char name[64];
        snprintf(name, sizeof name, "opt/x%d", k);
        float *x = nc_tensor(&S.fx, "cls/", name, B_CASE * 169);
        snprintf(name, sizeof name, "opt/y%d", k);
        int *y = nc_tensor_int(&S.fx, "cls/", name, B_CASE);
        ddpm_model_input in = {.x = x, .B = B_CASE, .train = 1};
        assert_int_equal(m->ops->forward(m, &in, logits), DDPM_OK);
        const double loss = ddpm_cross_entropy_forward(probs, logits, y, B_CASE, 5);
        memset(dl, 0, sizeof dl);
        ddpm_cross_entropy_backward(dl, 1.0f, probs, y, B_CASE, 5);
        memset(m->grads, 0, sizeof(float) * m->n_params);
        assert_int_equal(m->ops->backward(m, dl), DDPM_OK);
        const float norm = ddpm_clip_grad_norm(m->grads, m->n_params, 1.0f);
        ddpm_adam_update(m->params, m->grads, am, av, m->n_params, &cfg, 1e-3f, k);
        snprintf(name, sizeof name, "cls/opt/loss%d", k);
        const double want_loss = tu_scalar(&S.fx, name);
        snprintf(name, sizeof name, "cls/opt/norm%d", k);
        const double want_norm = tu_scalar(&S.fx, name);
        printf("[classifier] step %d: loss %.8f (PyTorch %.8f), grad norm %.6f (PyTorch %.6f)\n",
               k, loss, want_loss, norm, want_norm);
        assert_true(fabs(loss - want_loss) <= 1e-5 * want_loss);
        assert_true(fabs(norm - want_norm) <= 1e-5 * want_norm);
        free(x);
        free(y);
    }
    free(am);
    free(av);
    ddpm_model_free(m);
}

/* ---- the cross-entropy --------------------------------------------------------------------- */

static void test_cross_entropy(void **state) {
    (void)state;
    enum { B = 6, K = 5 };
    float *z = tu_tensor(&S.fx, "ce/logits", B * K, NULL);
    int *y = tu_tensor_int(&S.fx, "ce/labels", B);
    float *want = tu_tensor(&S.fx, "ce/grad", B * K, NULL);
    const double want_loss = tu_scalar(&S.fx, "ce/loss");
    float probs[B * K], g[B * K];
    const double loss = ddpm_cross_entropy_forward(probs, z, y, B, K);
    printf("[cross-entropy] loss %.10f (PyTorch %.10f)\n", loss, want_loss);
    assert_true(isfinite(loss) && loss > 20.0); /* the +-60 row's term is ~120 / 6 */
    assert_true(fabs(loss - want_loss) <= 1e-6 * want_loss);
    for (int i = 0; i < B * K; i++) g[i] = 0.25f; /* backward accumulates */
    ddpm_cross_entropy_backward(g, 1.0f, probs, y, B, K);
    for (int i = 0; i < B * K; i++) g[i] -= 0.25f;
    tu_assert_close(g, want, B * K, 1e-5, 1e-7, "d cross-entropy / d logits vs PyTorch");
    /* rows of softmax sum to 1 */
    for (int b = 0; b < B; b++) {
        double s = 0;
        for (int k = 0; k < K; k++) s += probs[b * K + k];
        assert_true(fabs(s - 1.0) < 1e-6);
    }
    /* finite differences on the logits (central, h = 1e-2: the loss is computed in double) */
    double worst = 0;
    for (int i = 0; i < B * K; i++) {
        const float z0 = z[i], h = 1e-2f;
        z[i] = z0 + h;
        const double lp = ddpm_cross_entropy_forward(NULL, z, y, B, K);
        z[i] = z0 - h;
        const double lm = ddpm_cross_entropy_forward(NULL, z, y, B, K);
        z[i] = z0;
        const double fd = (lp - lm) / (2.0 * h);
        worst = fmax(worst, fabs(fd - g[i]));
        assert_true(fabs(fd - g[i]) <= 1e-4);
    }
    printf("[cross-entropy] finite differences: max |fd - backward| = %.3g\n", worst);
    /* dloss scales the gradient */
    float g2[B * K];
    memset(g2, 0, sizeof g2);
    ddpm_cross_entropy_backward(g2, 0.5f, probs, y, B, K);
    for (int i = 0; i < B * K; i++) assert_true(fabs(g2[i] - 0.5f * g[i]) <= 1e-7);
    free(z);
    free(y);
    free(want);
}

/* ---- configuration, loading, threads, memory ------------------------------------------------ */

static void test_config_and_loading(void **state) {
    (void)state;
    ddpm_model *m = nc_create("{\"kind\":\"classifier\"}", 3);
    ddpm_classifier_config c;
    ddpm_classifier_config_default(&c);
    char *json = ddpm_classifier_config_json(&c);
    assert_string_equal(m->config_json, json);
    assert_string_equal(json, "{\"kind\":\"classifier\",\"in_channels\":1,\"height\":28,"
                              "\"channels\":[32,64,64],\"features\":128,\"classes\":10}");
    free(json);
    assert_int_equal(m->sample_numel, 784);
    assert_int_equal(m->cond_dim, 0);
    /* 28 -> 14 -> 7 -> 3: fc takes 64 * 3 * 3 */
    const size_t want = 32 * 9 + 64 * 32 * 9 + 64 * 64 * 9 + 2 * (32 + 64 + 64) + 576 * 128 + 128 +
                        128 * 10 + 10;
    assert_int_equal(ddpm_model_weight_count(m), want);
    assert_int_equal(nc_count_weights(m), want);
    const nc_bound bounds[] = {{"blocks.0.0.weight", 1.0 / 3.0}, {"blocks.1.0.weight", 1.0 / sqrt(288.0)},
                               {"fc.weight", 1.0 / 24.0}, {"head.bias", 1.0 / sqrt(128.0)}};
    nc_check_init_bounds(m, bounds, sizeof bounds / sizeof bounds[0], 0.9);
    const char *ones[] = {"blocks.0.1.weight", "blocks.2.1.running_var"};
    nc_check_ones(m, ones, 2);
    ddpm_model_free(m);

    nc_expect_bad_config("{\"kind\":\"classifier\",\"chanels\":[4]}", "chanels");
    nc_expect_bad_config("{\"kind\":\"classifier\",\"height\":7,\"channels\":[4,4,4]}",
                         "\"height\" 7 is too small for 3 blocks");
    nc_expect_bad_config("{\"kind\":\"classifier\",\"classes\":1}", "classes");
    nc_expect_bad_config("{\"kind\":\"classifier\",\"channels\":[4,0]}", "\"channels\"[1]");

    /* the fixture's weights into a model of another shape: the error names the tensor */
    const char *full = tu_tmp("cls.safetensors");
    nc_write_weights(&S, full, "cls/", NULL, NULL, NULL);
    ddpm_model *ok = nc_create(CFG, 1);
    assert_int_equal(nc_load_file(ok, full), DDPM_OK);
    ddpm_model_free(ok);
    ddpm_model *o = nc_create("{\"kind\":\"classifier\",\"in_channels\":1,\"height\":13,\"channels\":[4,6],\"features\":8,\"classes\":10}", 1);
    nc_expect_load_error(o, full, "'head.weight' has shape [5, 8], the model expects [10, 8]");
    ddpm_model_free(o);
}

static void test_threads(void **state) {
    (void)state;
    nc_check_threads(&S, CFG, "cls/", B_CASE);
}

static void test_steady_state_allocates_nothing(void **state) {
    (void)state;
    nc_check_steady_state(&S, CFG, "cls/", B_CASE, 2, 1, 10);
}

/* ---- training ------------------------------------------------------------------------------- */

/* Synthetic 4-class images, 12 x 12: class k is a bright 4 x 4 square in quadrant k of a noisy
 * background, at a random offset within the quadrant. */
static void synth(float *x, int *y, int n, uint64_t seed) {
    for (int i = 0; i < n; i++) {
        float u[3];
        ddpm_randu(seed, DDPM_STREAM_USER, (uint64_t)i, 0, u, 3);
        const int k = (int)(u[0] * 4) & 3, oy = (k / 2) * 6 + (int)(u[1] * 3),
                  ox = (k % 2) * 6 + (int)(u[2] * 3);
        float *img = x + (size_t)i * 144;
        ddpm_randn(seed, DDPM_STREAM_USER, (uint64_t)i, 1, img, 144);
        for (int p = 0; p < 144; p++) img[p] = 0.3f * img[p] - 0.5f;
        for (int r = 0; r < 4; r++)
            for (int c = 0; c < 4; c++) img[(oy + r) * 12 + ox + c] += 1.0f;
        y[i] = k;
    }
}

static void test_short_training_run(void **state) {
    (void)state;
    enum { N = 512, NT = 256 };
    float *x = malloc(sizeof(float) * N * 144), *xt = malloc(sizeof(float) * NT * 144);
    int y[N], yt[NT], pred[NT];
    synth(x, y, N, 1);
    synth(xt, yt, NT, 2);
    ddpm_model *m = nc_create("{\"kind\":\"classifier\",\"in_channels\":1,\"height\":12,\"channels\":[8,8],\"features\":16,\"classes\":4}", 5);
    ddpm_train_config cfg;
    ddpm_train_config_default(&cfg);
    cfg.batch_size = 32;
    cfg.lr = 3e-3;
    cfg.seed = 9;
    ddpm_classifier_trainer tr;
    assert_int_equal(ddpm_classifier_trainer_init(&tr, m, &cfg, x, y, N), DDPM_OK);
    assert_int_equal(ddpm_classifier_steps_per_epoch(&tr), N / 32);
    assert_int_equal(ddpm_classifier_predict(m, xt, NT, pred), DDPM_OK);
    int correct0 = 0;
    for (int i = 0; i < NT; i++) correct0 += pred[i] == yt[i];
    float first = 0;
    for (int s = 0; s < 60; s++) {
        assert_int_equal(ddpm_classifier_trainer_step(&tr), DDPM_OK);
        if (s == 0) first = tr.last_loss;
    }
    assert_int_equal(ddpm_classifier_predict(m, xt, NT, pred), DDPM_OK);
    int correct = 0;
    for (int i = 0; i < NT; i++) correct += pred[i] == yt[i];
    printf("[classifier] 60 steps: loss %.4f -> %.4f, held-out accuracy %.3f (before %.3f)\n",
           first, tr.last_loss, correct / (double)NT, correct0 / (double)NT);
    assert_true(correct >= 0.95 * NT);
    assert_true(tr.last_loss < 0.5f * first);
    ddpm_classifier_trainer_free(&tr);

    /* bad labels and a denoiser are refused */
    y[7] = 4;
    assert_int_equal(ddpm_classifier_trainer_init(&tr, m, &cfg, x, y, N), DDPM_ERR_INVALID);
    nc_expect_error("label 4 of image 7 outside 0..3");
    ddpm_model *u = nc_create("{\"kind\":\"simple-unet\",\"in_channels\":1,\"height\":8,\"channels\":[4,8]}", 1);
    assert_int_equal(ddpm_classifier_trainer_init(&tr, u, &cfg, x, y, N), DDPM_ERR_INVALID);
    ddpm_trainer dt;
    ddpm_schedule sched;
    ddpm_schedule_config sc;
    ddpm_schedule_config_default(&sc, DDPM_SCHEDULE_LINEAR, 10);
    assert_int_equal(ddpm_schedule_init(&sched, &sc), DDPM_OK);
    ddpm_train_data td = {.x = x, .n = N};
    assert_int_equal(ddpm_trainer_init(&dt, m, &sched, &cfg, &td), DDPM_ERR_INVALID);
    nc_expect_error("not a diffusion model");
    ddpm_schedule_free(&sched);
    ddpm_model_free(u);
    ddpm_model_free(m);
    free(x);
    free(xt);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_vs_pytorch),
        cmocka_unit_test(test_features_vs_pytorch),
        cmocka_unit_test(test_training_steps_vs_pytorch),
        cmocka_unit_test(test_cross_entropy),
        cmocka_unit_test(test_config_and_loading),
        cmocka_unit_test(test_threads),
        cmocka_unit_test(test_steady_state_allocates_nothing),
        cmocka_unit_test(test_short_training_run),
    };
    nc_use_suite(&S);
    return cmocka_run_group_tests(tests, nc_group_setup, nc_group_teardown);
}

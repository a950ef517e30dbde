/* test_train_images.c - a short Fashion-MNIST training run with a tiny class-conditional U-Net
 * (base 8 channels, multipliers 1,2, one res block a level, attention at 14x14), through the
 * same trainer `ddpm train` uses: the loss must fall from its start (about 1: an untrained
 * eps-predictor outputs ~0 against unit-variance noise) to below a measured threshold.
 *
 * Measured (1000 training images, batch 16, lr 3e-3, 80 steps, seed 0; 1 and 2 threads alike):
 * mean loss 0.80 over the first 10 steps, 0.165 over the last 20. Threshold: below 0.30 and a
 * 2.5x drop. With lr 1e-7 (a model that does not learn) the same run gives 1.00 -> 1.00.
 *
 * Then class-conditional DDIM sampling from the trained model gives the requested shape and
 * finite values in [-1, 1] (clipped x_0). Needs Debian's dataset-fashion-mnist
 * (scripts/install-deps.sh installs it). */
#include "testutil.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define FMNIST_DIR "/usr/share/datasets/fashion-mnist"
#define STEPS 80
#define BATCH 16

static void test_fashion_mnist_loss_falls(void **state) {
    (void)state;
    ddpm_image_dataset ds;
    if (ddpm_dataset_fashion_mnist(FMNIST_DIR, 1, 1000, &ds) != DDPM_OK)
        fail_msg("cannot read Fashion-MNIST (%s); run scripts/install-deps.sh", ddpm_last_error());
    assert_int_equal(ds.n, 1000);
    assert_int_equal(ds.c, 1);
    assert_int_equal(ds.h, 28);
    assert_int_equal(ds.n_classes, 10);
    assert_non_null(ds.cond);

    ddpm_model *m = NULL;
    assert_int_equal(ddpm_model_create("{\"kind\":\"unet\",\"in_channels\":1,\"height\":28,"
                                       "\"base_channels\":8,\"channel_mult\":[1,2],"
                                       "\"num_res_blocks\":1,\"heads\":2,\"dim_head\":8,"
                                       "\"attn_resolutions\":[14],\"num_classes\":10,"
                                       "\"num_timesteps\":200}",
                                       0, &m),
                     DDPM_OK);
    ddpm_schedule_config sc;
    ddpm_schedule_config_default(&sc, DDPM_SCHEDULE_LINEAR, 200);
    ddpm_schedule sch;
    assert_int_equal(ddpm_schedule_init(&sch, &sc), DDPM_OK);
    ddpm_train_config cfg;
    ddpm_train_config_default(&cfg);
    cfg.batch_size = BATCH;
    cfg.lr = 3e-3;
    cfg.total_steps = STEPS;
    cfg.cond_drop_prob = 0.1f;
    ddpm_train_data data = {.x = ds.x, .cond = ds.cond, .n = (size_t)ds.n};
    ddpm_trainer tr;
    assert_int_equal(ddpm_trainer_init(&tr, m, &sch, &cfg, &data), DDPM_OK);
    double first = 0, last = 0;
    for (int s = 0; s < STEPS; s++) {
        assert_int_equal(ddpm_trainer_step(&tr), DDPM_OK);
        if (s < 10) first += tr.last_loss / 10;
        if (s >= STEPS - 20) last += tr.last_loss / 20;
    }
    printf("fashion-mnist tiny unet: loss %.3f (first 10 steps) -> %.3f (last 20 of %d)\n", first,
           last, STEPS);
    assert_true(last < 0.30);
    assert_true(first > 2.5 * last);

    /* class-conditional DDIM from the EMA-free weights: 10 items, one per class */
    const int B = 10;
    ddpm_model_sampler ms;
    assert_int_equal(ddpm_model_sampler_init(&ms, m, B), DDPM_OK);
    float onehot[10 * 10] = {0};
    for (int i = 0; i < B; i++) onehot[i * 10 + i] = 1.0f;
    ms.cond = onehot;
    ddpm_sample_opts o;
    ddpm_sample_opts_default(&o);
    o.sampler = DDPM_SAMPLER_DDIM;
    o.steps = 10;
    o.step.clip_x0 = 1;
    const size_t n = (size_t)B * m->sample_numel;
    assert_int_equal(m->sample_numel, 28 * 28);
    float *x = malloc(n * sizeof(float));
    assert_non_null(x);
    assert_int_equal(ddpm_sample_loop(&sch, &o, ddpm_model_denoise, &ms, B, m->sample_numel, x),
                     DDPM_OK);
    for (size_t i = 0; i < n; i++) assert_true(isfinite(x[i]) && fabsf(x[i]) <= 1.0f + 1e-5f);
    free(x);
    ddpm_model_sampler_free(&ms);
    ddpm_trainer_free(&tr);
    ddpm_schedule_free(&sch);
    ddpm_model_free(m);
    ddpm_dataset_free(&ds);
}

int main(void) {
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_fashion_mnist_loss_falls)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}

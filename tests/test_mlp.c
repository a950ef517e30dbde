/* test_mlp.c - the tutorial MLP against PyTorch (forward, every gradient) and finite differences;
 * Adam, AdamW, clipping and EMA against PyTorch; checkpoints and exact resume. */
#include "testutil.h"
#include "core/internal.h" /* ddpm_read_file, ddpm_test_fail_writes_after */

#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <sys/wait.h>
#include <unistd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static ddpm_safetensors fx;

static int setup(void **state) {
    (void)state;
    tu_load_fixture("mlp.safetensors", &fx);
    return 0;
}
static int teardown(void **state) {
    (void)state;
    ddpm_safetensors_free(&fx);
    return 0;
}

static int *fixture_t(const char *name, int n) {
    const ddpm_tensor *t = ddpm_safetensors_find(&fx, name);
    assert_non_null(t);
    assert_int_equal(t->numel, n);
    int *v = malloc(sizeof(int) * n);
    for (int i = 0; i < n; i++) {
        int64_t x;
        memcpy(&x, (const char *)t->data + 8 * i, 8);
        v[i] = (int)x;
    }
    return v;
}

static ddpm_model *model_from_fixture(const char *config, const char *prefix) {
    ddpm_model *m;
    assert_int_equal(ddpm_model_create(config, 99, &m), DDPM_OK);
    char pre[64];
    snprintf(pre, sizeof pre, "%sw.", prefix);
    if (ddpm_model_load_tensors(m, &fx, pre, "mlp.safetensors")) fail_msg("%s", ddpm_last_error());
    return m;
}

/* Forward and every parameter gradient against PyTorch autograd. */
static void check_model(const char *config, const char *prefix, int B, int D) {
    ddpm_model *m = model_from_fixture(config, prefix);
    char name[160];
    snprintf(name, sizeof name, "%sx", prefix);
    float *x = tu_tensor(&fx, name, (size_t)B * D, NULL);
    snprintf(name, sizeof name, "%st", prefix);
    int *t = fixture_t(name, B);
    snprintf(name, sizeof name, "%sout", prefix);
    float *want = tu_tensor(&fx, name, (size_t)B * D, NULL);
    snprintf(name, sizeof name, "%sdout", prefix);
    float *dout = tu_tensor(&fx, name, (size_t)B * D, NULL);
    float *out = malloc(sizeof(float) * B * D);
    assert_int_equal(ddpm_model_reserve(m, B), DDPM_OK);
    ddpm_model_input in = {.x = x, .t = t, .B = B, .train = 1};
    assert_int_equal(m->ops->forward(m, &in, out), DDPM_OK);
    tu_assert_close(out, want, (size_t)B * D, 1e-4, 1e-6, "MLP forward");
    memset(m->grads, 0, sizeof(float) * m->n_params);
    assert_int_equal(m->ops->backward(m, dout), DDPM_OK);
    for (size_t i = 0; i < m->n_tensors; i++) {
        snprintf(name, sizeof name, "%sgrad.%s", prefix, m->tensors[i].name);
        float *g = tu_tensor(&fx, name, m->tensors[i].numel, NULL);
        tu_assert_close(m->grads + m->tensors[i].offset, g, m->tensors[i].numel, 1e-4, 1e-6, name);
        free(g);
    }
    free(x);
    free(t);
    free(want);
    free(dout);
    free(out);
    ddpm_model_free(m);
}

static void test_mlp_vs_pytorch(void **state) {
    (void)state;
    check_model("{\"kind\":\"mlp\",\"dim\":2,\"hidden\":128,\"depth\":3,\"num_timesteps\":100}", "mlp/", 16, 2);
}

static void test_mlp_sinusoidal_vs_pytorch(void **state) {
    (void)state;
    check_model("{\"kind\":\"mlp\",\"dim\":3,\"hidden\":64,\"depth\":3,\"num_timesteps\":1000,"
                "\"time_embedding\":\"sinusoidal\"}", "sin/", 5, 3);
}

/* sum(out * dout) in double, for finite differences */
static double objective(ddpm_model *m, const ddpm_model_input *in, const float *dout, float *out, size_t n) {
    assert_int_equal(m->ops->forward(m, in, out), DDPM_OK);
    double s = 0;
    for (size_t i = 0; i < n; i++) s += (double)out[i] * dout[i];
    return s;
}

/* Central differences on every tensor (a sample of entries in the large ones). The tolerance was
 * checked to reject a gradient off by 5%. */
static void test_mlp_finite_differences(void **state) {
    (void)state;
    const char *configs[] = {
        "{\"kind\":\"mlp\",\"dim\":2,\"hidden\":16,\"depth\":3,\"num_timesteps\":10}",
        "{\"kind\":\"mlp\",\"dim\":3,\"hidden\":8,\"depth\":2,\"num_timesteps\":50,\"time_embedding\":\"sinusoidal\"}",
    };
    for (int c = 0; c < 2; c++) {
        ddpm_model *m;
        assert_int_equal(ddpm_model_create(configs[c], 5, &m), DDPM_OK);
        const int B = 7, D = m->dim;
        float x[7 * 3], dout[7 * 3], out[7 * 3];
        int t[7] = {0, 1, 2, 3, 9, 5, 1};
        ddpm_randn(1, DDPM_STREAM_USER, 0, 0, x, (size_t)B * D);
        ddpm_randn(1, DDPM_STREAM_USER, 1, 0, dout, (size_t)B * D);
        assert_int_equal(ddpm_model_reserve(m, B), DDPM_OK);
        ddpm_model_input in = {.x = x, .t = t, .B = B, .train = 1};
        objective(m, &in, dout, out, (size_t)B * D);
        memset(m->grads, 0, sizeof(float) * m->n_params);
        assert_int_equal(m->ops->backward(m, dout), DDPM_OK);
        int checked = 0, bad = 0, bad_if_wrong = 0;
        for (size_t ti = 0; ti < m->n_tensors; ti++) {
            const ddpm_param_info *p = &m->tensors[ti];
            for (size_t k = 0; k < p->numel; k += 1 + p->numel / 40) {
                float *w = m->params + p->offset + k;
                const float w0 = *w, h = 1e-3f;
                *w = w0 + h;
                double lp = objective(m, &in, dout, out, (size_t)B * D);
                *w = w0 - h;
                double lm = objective(m, &in, dout, out, (size_t)B * D);
                *w = w0;
                const double fd = (lp - lm) / (2.0 * h), an = m->grads[p->offset + k];
                const double tol = 2e-3 + 2e-2 * fabs(fd);
                if (fabs(fd - an) > tol) {
                    bad++;
                    print_message("%s[%zu]: finite difference %g, backward %g\n", p->name, k, fd, an);
                }
                if (fabs(fd - 1.05 * an) > tol) bad_if_wrong++;
                checked++;
            }
        }
        assert_int_equal(bad, 0);
        /* The check has teeth: a 5% error in the gradients would fail many entries. */
        assert_true(bad_if_wrong > checked / 4);
        ddpm_model_free(m);
    }
}

static void test_optimizers_vs_pytorch(void **state) {
    (void)state;
    const size_t n = 1000;
    float *p0 = tu_tensor(&fx, "opt/p0", n, NULL), *g[2];
    g[0] = tu_tensor(&fx, "opt/g1", n, NULL);
    g[1] = tu_tensor(&fx, "opt/g2", n, NULL);
    struct {
        const char *name;
        ddpm_optimizer opt;
        double lr, wd, b1, b2, eps;
    } cases[] = {{"adam", DDPM_OPT_ADAM, 1e-3, 0, 0.9, 0.999, 1e-8},
                 {"adam_wd", DDPM_OPT_ADAM, 1e-2, 0.01, 0.8, 0.99, 1e-6},
                 {"adamw", DDPM_OPT_ADAMW, 1e-2, 0.05, 0.9, 0.999, 1e-8}};
    for (int c = 0; c < 3; c++) {
        ddpm_train_config cfg;
        ddpm_train_config_default(&cfg);
        cfg.optimizer = cases[c].opt;
        cfg.weight_decay = cases[c].wd;
        cfg.beta1 = cases[c].b1;
        cfg.beta2 = cases[c].b2;
        cfg.adam_eps = cases[c].eps;
        float *p = malloc(n * 4), *m = calloc(n, 4), *v = calloc(n, 4);
        memcpy(p, p0, n * 4);
        for (int k = 0; k < 2; k++) {
            ddpm_adam_update(p, g[k], m, v, n, &cfg, (float)cases[c].lr, k + 1);
            char name[64];
            snprintf(name, sizeof name, "opt/%s/p%d", cases[c].name, k + 1);
            float *want = tu_tensor(&fx, name, n, NULL);
            tu_assert_close(p, want, n, 1e-6, 1e-7, name);
            free(want);
            snprintf(name, sizeof name, "opt/%s/m%d", cases[c].name, k + 1);
            want = tu_tensor(&fx, name, n, NULL);
            tu_assert_close(m, want, n, 1e-6, 1e-9, name);
            free(want);
            snprintf(name, sizeof name, "opt/%s/v%d", cases[c].name, k + 1);
            want = tu_tensor(&fx, name, n, NULL);
            tu_assert_close(v, want, n, 1e-6, 1e-12, name);
            free(want);
        }
        free(p);
        free(m);
        free(v);
    }
    /* clip_grad_norm_ */
    const char *clips[2] = {"clip", "noclip"};
    const float maxn[2] = {1.0f, 1000.0f};
    for (int c = 0; c < 2; c++) {
        float gr[377];
        memcpy(gr, g[0], sizeof gr);
        float norm = ddpm_clip_grad_norm(gr, 377, maxn[c]);
        char name[64];
        snprintf(name, sizeof name, "%s/norm", clips[c]);
        assert_float_equal(norm, tu_scalar(&fx, name), 1e-4);
        snprintf(name, sizeof name, "%s/grads", clips[c]);
        float *want = tu_tensor(&fx, name, 377, NULL);
        tu_assert_close(gr, want, 377, 1e-5, 1e-8, name);
        free(want);
    }
    /* EMA, the tutorial's way (mu = 0.01 is the weight of the new value) */
    float ema[1000], cur[1000];
    memcpy(ema, p0, sizeof ema);
    for (int k = 0; k < 2; k++) {
        for (size_t i = 0; i < n; i++) cur[i] = p0[i] + g[k][i];
        ddpm_ema_update(ema, cur, n, 0.99f);
    }
    float *want = tu_tensor(&fx, "ema/result", n, NULL);
    tu_assert_close(ema, want, n, 1e-6, 1e-7, "EMA");
    free(want);
    /* EMA warm-up and learning-rate schedule formulas */
    ddpm_train_config cfg;
    ddpm_train_config_default(&cfg);
    assert_float_equal(ddpm_ema_decay_at(&cfg, 1), 2.0 / 11.0, 1e-7);
    assert_float_equal(ddpm_ema_decay_at(&cfg, 100000), 0.999, 1e-7);
    cfg.warmup_steps = 10;
    cfg.total_steps = 110;
    cfg.decay = DDPM_LR_COSINE;
    cfg.min_lr = 1e-4;
    assert_float_equal(ddpm_lr_at(&cfg, 0), 1e-4, 1e-9);
    assert_float_equal(ddpm_lr_at(&cfg, 9), 1e-3, 1e-9);
    assert_float_equal(ddpm_lr_at(&cfg, 60), 1e-4 + 0.9e-3 * 0.5, 1e-8);
    assert_float_equal(ddpm_lr_at(&cfg, 110), 1e-4, 1e-9);
    cfg.decay = DDPM_LR_LINEAR;
    assert_float_equal(ddpm_lr_at(&cfg, 60), (1e-3 + 1e-4) / 2, 1e-8);
    free(p0);
    free(g[0]);
    free(g[1]);
}

static void test_loss(void **state) {
    (void)state;
    float out[6] = {1, 2, 3, 4, 5, 6}, tgt[6] = {0, 2, 4, 4, 3, 6}, w[2] = {1, 0.5f}, d[6];
    /* L2: mean over items of w_i * mean_j r^2 = (1*(1+0+1)/3 + 0.5*(0+4+0)/3) / 2 */
    double l = ddpm_loss_and_grad(DDPM_LOSS_L2, out, tgt, w, 2, 3, d);
    assert_float_equal(l, (2.0 / 3 + 0.5 * 4.0 / 3) / 2, 1e-7);
    assert_float_equal(d[0], 2 * 1.0 / 6, 1e-7);
    assert_float_equal(d[4], 2 * 0.5 * 2.0 / 6, 1e-7);
    l = ddpm_loss_and_grad(DDPM_LOSS_L1, out, tgt, NULL, 2, 3, d);
    assert_float_equal(l, 4.0 / 6, 1e-7);
    assert_float_equal(d[2], -1.0 / 6, 1e-7);
    assert_float_equal(d[1], 0, 0);
    /* min-SNR-gamma: eps weight min(snr, 5)/snr, x0 weight min(snr, 5), v weight min(snr,5)/(snr+1) */
    ddpm_schedule s;
    ddpm_schedule_config c;
    ddpm_schedule_config_default(&c, DDPM_SCHEDULE_LINEAR, 1000);
    assert_int_equal(ddpm_schedule_init(&s, &c), DDPM_OK);
    int t[2] = {0, 999};
    float ww[2];
    ddpm_min_snr_weights(&s, DDPM_PRED_EPS, 5, t, 2, ww);
    assert_float_equal(ww[0], 5.0 / s.snr[0], 1e-6);
    assert_float_equal(ww[1], 1.0, 1e-6);
    ddpm_min_snr_weights(&s, DDPM_PRED_V, 5, t, 2, ww);
    assert_float_equal(ww[1], s.snr[999] / (s.snr[999] + 1), 1e-6);
    ddpm_schedule_free(&s);
}

/* ---- training: determinism, checkpoints, exact resume ---------------------------------------- */

typedef struct {
    ddpm_schedule s;
    ddpm_model *m;
    ddpm_trainer tr;
    float data[300 * 2];
} run;

static void run_init(run *r) {
    ddpm_schedule_config c;
    ddpm_schedule_config_default(&c, DDPM_SCHEDULE_SIGMOID_2D, 100);
    assert_int_equal(ddpm_schedule_init(&r->s, &c), DDPM_OK);
    assert_int_equal(ddpm_model_create("{\"kind\":\"mlp\",\"dim\":2,\"hidden\":32,\"num_timesteps\":100}", 3, &r->m), DDPM_OK);
    ddpm_randn(8, DDPM_STREAM_USER, 0, 0, r->data, 600);
    ddpm_train_config tc;
    ddpm_train_config_default(&tc);
    tc.batch_size = 64; /* 300 items: 5 steps an epoch, the last with 44 */
    tc.total_steps = 40;
    tc.seed = 11;
    tc.warmup_steps = 5;
    tc.decay = DDPM_LR_COSINE;
    tc.min_snr_gamma = 5;
    ddpm_train_data td = {.x = r->data, .n = 300};
    assert_int_equal(ddpm_trainer_init(&r->tr, r->m, &r->s, &tc, &td), DDPM_OK);
}

static void run_free(run *r) {
    ddpm_trainer_free(&r->tr);
    ddpm_model_free(r->m);
    ddpm_schedule_free(&r->s);
}

/* Checkpoints whose "step" metadata is not a count >= 0 (tests/fixtures/regress/): "-100" once
 * resumed at a negative step and read outside the heap, "garbage" silently resumed at step 0. */
static void test_checkpoint_bad_step(void **state) {
    (void)state;
    const char *files[] = {"regress/checkpoint-step-negative.safetensors",
                           "regress/checkpoint-step-garbage.safetensors"};
    for (int i = 0; i < 2; i++) {
        char path[4096];
        snprintf(path, sizeof path, "%s", tu_fixture_path(files[i]));
        ddpm_checkpoint ck;
        tu_expect_status(ddpm_checkpoint_load(path, &ck), DDPM_ERR_FORMAT, path,
                         "not a step count >= 0");
    }
}

/* Checkpoints that must be refused before anything uses them (tests/fixtures/regress/, made from
 * a 4-wide MLP checkpoint): non-finite weights, a transposed EMA copy and a negative Adam second
 * moment (Adam takes its square root) once loaded silently; a metadata-only file once built a
 * 50M-weight model, and a U-Net of 4097 x 4097 items reserved memory for them, before any tensor
 * was checked; a training config's batch size of 1e74 was converted to int. Each error names the
 * file and the tensor, the limit or the key. */
static void test_checkpoint_bad_tensors(void **state) {
    (void)state;
    const struct {
        const char *file, *fragment;
    } cases[] = {
        {"regress/checkpoint-nan-weight.safetensors", "'linears.0.weight' holds NaN at element 1"},
        {"regress/checkpoint-inf-ema.safetensors", "'ema.linears.2.bias' holds an infinity"},
        {"regress/checkpoint-ema-transposed.safetensors", "'ema.linears.0.weight' is of the wrong shape"},
        {"regress/checkpoint-negative-adam-v.safetensors",
         "'adam_v.linears.0.bias' holds -0.25 at element 2 (a second moment must be >= 0)"},
        {"regress/checkpoint-huge-model.safetensors",
         "describes 50495490 weights, more than the 0 float values the file holds"},
        {"regress/checkpoint-huge-item.safetensors", "items of 16785409 values, more than the 16777216"},
        /* converted to int unchecked: undefined behaviour (UBSan), INT_MIN on x86 */
        {"regress/checkpoint-train-batch-1e74.safetensors",
         "training config: \"batch_size\" is 1e+74, not an integer in 1..2147483647"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char path[4096];
        snprintf(path, sizeof path, "%s", tu_fixture_path(cases[i].file));
        ddpm_checkpoint ck;
        tu_expect_status(ddpm_checkpoint_load(path, &ck), DDPM_ERR_FORMAT, path, cases[i].fragment);
    }
}

/* Adding context to the last error (ddpm_fail(rc, "%s: %s", path, ddpm_last_error())) keeps the
 * inner message whole: it once formatted the buffer into itself, which garbled it. */
static void test_error_context(void **state) {
    (void)state;
    ddpm_fail(DDPM_ERR_FORMAT, "inner message %d", 42);
    ddpm_fail(DDPM_ERR_FORMAT, "%s: %s", "outer.safetensors", ddpm_last_error());
    assert_string_equal(ddpm_last_error(), "outer.safetensors: inner message 42");
}

static void test_exact_resume(void **state) {
    (void)state;
    run a, b;
    run_init(&a);
    for (int i = 0; i < 40; i++) assert_int_equal(ddpm_trainer_step(&a.tr), DDPM_OK);
    assert_true(a.tr.last_loss > 0 && isfinite(a.tr.last_loss));

    run_init(&b);
    for (int i = 0; i < 23; i++) assert_int_equal(ddpm_trainer_step(&b.tr), DDPM_OK);
    const char *path = tu_tmp("resume.safetensors");
    assert_int_equal(ddpm_checkpoint_save(path, &b.tr, "{\"name\":\"gauss\"}", NULL, NULL, 0), DDPM_OK);
    run_free(&b);

    ddpm_checkpoint ck;
    if (ddpm_checkpoint_load(path, &ck)) fail_msg("%s", ddpm_last_error());
    assert_int_equal(ck.step, 23);
    assert_true(ck.has_train);
    assert_int_equal(ck.train.batch_size, 64);
    assert_int_equal(ck.train.seed, 11);
    assert_string_equal(ck.data_json, "{\"name\":\"gauss\"}");
    assert_int_equal(ck.schedule.n, 100);
    /* A fresh trainer built from the checkpoint's configuration continues the run. */
    run c;
    c.s = ck.schedule; /* borrowed: freed with the checkpoint */
    c.m = ck.model;
    ddpm_randn(8, DDPM_STREAM_USER, 0, 0, c.data, 600);
    ddpm_train_data td = {.x = c.data, .n = 300};
    assert_int_equal(ddpm_trainer_init(&c.tr, c.m, &c.s, &ck.train, &td), DDPM_OK);
    assert_int_equal(ddpm_trainer_restore(&c.tr, &ck), DDPM_OK);
    for (int i = 23; i < 40; i++) assert_int_equal(ddpm_trainer_step(&c.tr), DDPM_OK);
    assert_memory_equal(a.m->params, c.m->params, sizeof(float) * a.m->n_params);
    assert_memory_equal(a.tr.ema, c.tr.ema, sizeof(float) * a.m->n_params);
    assert_memory_equal(a.tr.adam_v, c.tr.adam_v, sizeof(float) * a.m->n_params);
    ddpm_trainer_free(&c.tr);
    ddpm_checkpoint_free(&ck);
    run_free(&a);
}

static void test_diverging_loss(void **state) {
    (void)state;
    run r;
    run_init(&r);
    r.data[5] = NAN;
    int rc = DDPM_OK;
    for (int i = 0; i < 10 && rc == DDPM_OK; i++) rc = ddpm_trainer_step(&r.tr);
    assert_int_equal(rc, DDPM_ERR_NUMERIC);
    assert_non_null(strstr(ddpm_last_error(), "diverged"));
    run_free(&r);
}

static void test_checkpoint_errors(void **state) {
    (void)state;
    run r;
    run_init(&r);
    const char *path = tu_tmp("ck.safetensors");
    assert_int_equal(ddpm_checkpoint_save(path, &r.tr, NULL, NULL, NULL, 0), DDPM_OK);
    ddpm_checkpoint ck;
    /* a plain weights file is not a checkpoint */
    const char *plain = tu_tmp("plain.safetensors");
    ddpm_tensor t = {.name = "linears.0.weight", .dtype = DDPM_DT_F32, .ndim = 1, .shape = {1}, .data = r.m->params};
    assert_int_equal(ddpm_safetensors_write(plain, &t, 1, NULL, NULL, 0), DDPM_OK);
    assert_int_equal(ddpm_checkpoint_load(plain, &ck), DDPM_ERR_FORMAT);
    assert_non_null(strstr(ddpm_last_error(), "not a ddpm checkpoint"));
    /* another model configuration: the weights of a wider MLP do not load */
    ddpm_model *wide;
    assert_int_equal(ddpm_model_create("{\"kind\":\"mlp\",\"dim\":2,\"hidden\":64,\"num_timesteps\":100}", 1, &wide), DDPM_OK);
    ddpm_safetensors st;
    assert_int_equal(ddpm_safetensors_read(path, &st), DDPM_OK);
    assert_int_equal(ddpm_model_load_tensors(wide, &st, NULL, path), DDPM_ERR_FORMAT);
    assert_non_null(strstr(ddpm_last_error(), "linears.0.weight"));
    assert_non_null(strstr(ddpm_last_error(), "[32, 2]"));
    ddpm_model *deep;
    assert_int_equal(ddpm_model_create("{\"kind\":\"mlp\",\"dim\":2,\"hidden\":32,\"depth\":4,\"num_timesteps\":100}", 1, &deep), DDPM_OK);
    assert_int_equal(ddpm_model_load_tensors(deep, &st, NULL, path), DDPM_ERR_FORMAT);
    assert_non_null(strstr(ddpm_last_error(), "linears.6.weight")); /* [2, 32] in the file */
    /* a file with a tensor the model does not have */
    ddpm_tensor extra[16];
    size_t ne = 0;
    for (size_t i = 0; i < r.m->n_tensors; i++, ne++) {
        const ddpm_param_info *p = &r.m->tensors[i];
        extra[ne] = (ddpm_tensor){.name = (char *)p->name, .dtype = DDPM_DT_F32, .ndim = p->ndim, .data = r.m->params + p->offset};
        memcpy(extra[ne].shape, p->shape, sizeof p->shape);
    }
    extra[ne++] = (ddpm_tensor){.name = "linears.8.weight", .dtype = DDPM_DT_F32, .ndim = 1, .shape = {1}, .data = r.m->params};
    const char *more = tu_tmp("more.safetensors");
    assert_int_equal(ddpm_safetensors_write(more, extra, ne, NULL, NULL, 0), DDPM_OK);
    ddpm_safetensors st2;
    assert_int_equal(ddpm_safetensors_read(more, &st2), DDPM_OK);
    assert_int_equal(ddpm_model_load_tensors(r.m, &st2, NULL, more), DDPM_ERR_FORMAT);
    assert_non_null(strstr(ddpm_last_error(), "'linears.8.weight' is not part of the mlp model"));
    ddpm_safetensors_free(&st2);
    ddpm_safetensors_free(&st);
    ddpm_model_free(wide);
    ddpm_model_free(deep);
    /* bad model configs name the key */
    ddpm_model *m;
    assert_int_equal(ddpm_model_create("{\"kind\":\"mlp\",\"hidden\":-3}", 1, &m), DDPM_ERR_INVALID);
    assert_non_null(strstr(ddpm_last_error(), "hidden"));
    assert_int_equal(ddpm_model_create("{\"kind\":\"transformer\"}", 1, &m), DDPM_ERR_INVALID);
    assert_non_null(strstr(ddpm_last_error(), "transformer"));
    run_free(&r);
}

/* The files in the test's directory whose names start with prefix. */
static int count_files(const char *prefix) {
    DIR *d = opendir(tu_tmpdir());
    assert_non_null(d);
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)))
        if (strncmp(e->d_name, prefix, strlen(prefix)) == 0) n++;
    closedir(d);
    return n;
}

/* A disk that fills up part way through a checkpoint (a write failing with ENOSPC after 1, 4096
 * and all but one byte of the file; the library's test hook): the save fails with an I/O error
 * naming the file and the reason, the previous checkpoint stays byte for byte, and no temporary
 * file is left. */
static void test_checkpoint_disk_full(void **state) {
    (void)state;
    run r;
    run_init(&r);
    const char *path = tu_tmp("full.safetensors");
    assert_int_equal(ddpm_checkpoint_save(path, &r.tr, NULL, NULL, NULL, 0), DDPM_OK);
    unsigned char *before, *after;
    size_t n_before, n_after;
    assert_int_equal(ddpm_read_file(path, &before, &n_before), DDPM_OK);
    for (int i = 0; i < 5; i++) assert_int_equal(ddpm_trainer_step(&r.tr), DDPM_OK);
    const long long cuts[3] = {1, 4096, (long long)n_before - 1};
    for (int k = 0; k < 3; k++) {
        ddpm_test_fail_writes_after(cuts[k], ENOSPC);
        const int rc = ddpm_checkpoint_save(path, &r.tr, NULL, NULL, NULL, 0);
        ddpm_test_fail_writes_after(-1, 0);
        tu_expect_status(rc, DDPM_ERR_IO, path, "No space left on device");
        assert_null(strchr(ddpm_last_error(), '\n'));
        assert_int_equal(ddpm_read_file(path, &after, &n_after), DDPM_OK);
        assert_int_equal(n_after, n_before);
        assert_memory_equal(after, before, n_before);
        free(after);
        assert_int_equal(count_files("full.safetensors.tmp."), 0);
    }
    /* the hook off, the same save goes through and differs (five more steps) */
    assert_int_equal(ddpm_checkpoint_save(path, &r.tr, NULL, NULL, NULL, 0), DDPM_OK);
    assert_int_equal(ddpm_read_file(path, &after, &n_after), DDPM_OK);
    assert_true(n_after != n_before || memcmp(after, before, n_before) != 0);
    free(after);
    free(before);
    run_free(&r);
}

/* The pid of a process that has exited (and been reaped). */
static long dead_pid(void) {
    const pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) _exit(0);
    int status;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    return (long)pid;
}

/* Temporary files left by an atomic write whose process died are removed; those of a live
 * process (this one's parent, and this one), other files and names that only look alike stay. */
static void test_stale_temporaries(void **state) {
    (void)state;
    char name[128];
    const char *path = tu_tmp("stale.safetensors");
    const long dead = dead_pid();
    snprintf(name, sizeof name, "stale.safetensors.tmp.%ld", dead);
    tu_write_text(tu_tmp(name), "half a checkpoint");
    snprintf(name, sizeof name, "stale.safetensors.tmp.%ld", (long)getppid());
    tu_write_text(tu_tmp(name), "a live writer's");
    snprintf(name, sizeof name, "stale.safetensors.tmp.%ld", (long)getpid());
    tu_write_text(tu_tmp(name), "our own");
    snprintf(name, sizeof name, "stale.safetensors.tmp.%ldx", dead);
    tu_write_text(tu_tmp(name), "not a pid");
    snprintf(name, sizeof name, "other.safetensors.tmp.%ld", dead);
    tu_write_text(tu_tmp(name), "another file's");
    tu_write_text(path, "the checkpoint");
    int removed = -1;
    assert_int_equal(ddpm_remove_stale_temporaries(path, &removed), DDPM_OK);
    assert_int_equal(removed, 1);
    snprintf(name, sizeof name, "stale.safetensors.tmp.%ld", dead);
    assert_int_equal(access(tu_tmp(name), F_OK), -1);
    assert_int_equal(count_files("stale.safetensors.tmp."), 3);
    assert_int_equal(count_files("other.safetensors.tmp."), 1);
    assert_int_equal(access(path, F_OK), 0);
    /* again: nothing left to remove; a directory that does not exist has nothing either */
    assert_int_equal(ddpm_remove_stale_temporaries(path, &removed), DDPM_OK);
    assert_int_equal(removed, 0);
    assert_int_equal(ddpm_remove_stale_temporaries(tu_tmp("no/such/dir/x"), &removed), DDPM_OK);
    assert_int_equal(removed, 0);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_mlp_vs_pytorch),
        cmocka_unit_test(test_mlp_sinusoidal_vs_pytorch),
        cmocka_unit_test(test_mlp_finite_differences),
        cmocka_unit_test(test_optimizers_vs_pytorch),
        cmocka_unit_test(test_loss),
        cmocka_unit_test(test_exact_resume),
        cmocka_unit_test(test_checkpoint_bad_step),
        cmocka_unit_test(test_checkpoint_bad_tensors),
        cmocka_unit_test(test_error_context),
        cmocka_unit_test(test_diverging_loss),
        cmocka_unit_test(test_checkpoint_errors),
        cmocka_unit_test(test_checkpoint_disk_full),
        cmocka_unit_test(test_stale_temporaries),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}

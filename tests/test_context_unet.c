/* test_context_unet.c - the course's ContextUnet against PyTorch (scripts/fixtures/gen_course_nets.py):
 * forward, every parameter gradient and the updated running statistics in training mode, the
 * forward in eval mode, three Adam steps; loading by name and its errors, config errors, no
 * allocation in steady state, thread-count independence, checkpoints and the trainer.
 *
 * Tolerance against the float64 PyTorch references, per tensor:
 *   |got - ref| <= 1e-4 |ref| + 1e-5 max|ref| + 5e-6 G
 * where G is the largest gradient of the whole case (the floor for tensors whose true gradient is
 * 0: the conv biases in front of a training-mode batch norm). Losses and gradient norms of the
 * Adam steps: relative 1e-5. */
#include "testutil.h"

#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define RTOL 1e-4
#define ATOL_REL 1e-5
#define FLOOR_REL 5e-6

#define CFG "{\"kind\":\"context-unet\",\"in_channels\":3,\"n_feat\":8,\"n_cfeat\":5,\"height\":16,\"num_timesteps\":501}"
#define CFG28 "{\"kind\":\"context-unet\",\"in_channels\":1,\"n_feat\":8,\"n_cfeat\":10,\"height\":28,\"num_timesteps\":501}"

static ddpm_safetensors fx;
static double worst = 0, worst_zero = 0, worst_tol = 0;
static char worst_what[160], worst_zero_what[160];

static int setup(void **state) {
    (void)state;
    tu_load_fixture("context_unet.safetensors", &fx);
    return 0;
}

static int teardown(void **state) {
    (void)state;
    ddpm_safetensors_free(&fx);
    printf("[context-unet] worst error vs PyTorch: max|got-ref| / max|ref| = %.3g (%s); "
           "zero gradients: max|got| / G = %.3g (%s); %.2f of the tolerance used\n",
           worst, worst_what, worst_zero, worst_zero_what, worst_tol);
    return 0;
}

static double maxabs(const float *v, size_t n) {
    double m = 0;
    for (size_t i = 0; i < n; i++) m = fmax(m, fabs((double)v[i]));
    return m;
}

/* floor_abs: the absolute tolerance floor (FLOOR_REL G for gradients, else 0). Reported: the
 * worst max|got - ref| / max|ref| over tensors whose reference is not ~0, and the worst
 * max|got - ref| / G over gradients that are ~0 (max|ref| < 1e-6 G). */
static void cmp(const float *got, const float *ref, size_t n, double floor_abs, const char *what) {
    const double scale = maxabs(ref, n), atol = ATOL_REL * scale + floor_abs;
    double err = 0, frac = 0;
    for (size_t i = 0; i < n; i++) {
        const double e = fabs((double)got[i] - ref[i]);
        err = fmax(err, e);
        frac = fmax(frac, e / (RTOL * fabs((double)ref[i]) + atol));
    }
    const double G = floor_abs / FLOOR_REL;
    const int zero = floor_abs > 0 && scale < 1e-6 * G;
    const double norm = zero ? err / G : err / fmax(scale, 1e-30);
    if (getenv("DDPM_TEST_VERBOSE"))
        printf("  %-50s max|ref| %-9.3g err %-9.3g %s %-9.3g tol used %.3f\n", what, scale, err,
               zero ? "/G" : "rel", norm, frac);
    double *w = zero ? &worst_zero : &worst;
    if (norm > *w) {
        *w = norm;
        snprintf(zero ? worst_zero_what : worst_what, sizeof worst_what, "%s", what);
    }
    worst_tol = fmax(worst_tol, frac);
    tu_assert_close(got, ref, n, RTOL, atol, what);
}

static float *fxf(const char *prefix, const char *name, size_t n) {
    char key[320];
    snprintf(key, sizeof key, "%s%s", prefix, name);
    return tu_tensor(&fx, key, n, NULL);
}

static int *fxi(const char *prefix, const char *name, int n) {
    char key[320];
    snprintf(key, sizeof key, "%s%s", prefix, name);
    const ddpm_tensor *t = ddpm_safetensors_find(&fx, key);
    if (!t) fail_msg("fixture tensor %s missing", key);
    assert_int_equal(t->dtype, DDPM_DT_I64);
    assert_int_equal(t->numel, n);
    int *v = malloc(sizeof(int) * n);
    for (int i = 0; i < n; i++) {
        int64_t x;
        memcpy(&x, (const char *)t->data + 8 * i, 8);
        v[i] = (int)x;
    }
    return v;
}

static ddpm_model *create(const char *cfg) {
    ddpm_model *m;
    if (ddpm_model_create(cfg, 7, &m)) fail_msg("%s", ddpm_last_error());
    return m;
}

static ddpm_model *load(const char *cfg, const char *prefix) {
    ddpm_model *m = create(cfg);
    char pre[64];
    snprintf(pre, sizeof pre, "%sw.", prefix);
    if (ddpm_model_load_tensors(m, &fx, pre, "context_unet.safetensors"))
        fail_msg("%s", ddpm_last_error());
    return m;
}

static ddpm_tape *tape_of(ddpm_model *m) { return *(ddpm_tape **)m->impl; }

/* ---- against PyTorch ---------------------------------------------------------------------------- */

static void check_case(const char *cfg, const char *prefix, int B) {
    ddpm_model *m = load(cfg, prefix);
    const size_t d = m->sample_numel, n = (size_t)B * d;
    float *x = fxf(prefix, "x", n), *c = fxf(prefix, "c", (size_t)B * m->cond_dim);
    float *dout = fxf(prefix, "dout", n), *out = malloc(sizeof(float) * n);
    int *t = fxi(prefix, "t", B);
    assert_int_equal(ddpm_model_reserve(m, B), DDPM_OK);
    ddpm_model_input in = {.x = x, .t = t, .cond = c, .B = B, .train = 1};
    assert_int_equal(m->ops->forward(m, &in, out), DDPM_OK);
    float *want = fxf(prefix, "out_train", n);
    char what[200];
    snprintf(what, sizeof what, "%sout_train", prefix);
    cmp(out, want, n, 0, what);
    free(want);

    memset(m->grads, 0, sizeof(float) * m->n_params);
    assert_int_equal(m->ops->backward(m, dout), DDPM_OK);
    /* G: the largest reference gradient of the case */
    double G = 0;
    size_t n_grads = 0, n_buffers = 0;
    for (size_t i = 0; i < m->n_tensors; i++) {
        const ddpm_param_info *p = &m->tensors[i];
        if (p->is_buffer) continue;
        snprintf(what, sizeof what, "grad.%s", p->name);
        float *ref = fxf(prefix, what, p->numel);
        G = fmax(G, maxabs(ref, p->numel));
        free(ref);
    }
    for (size_t i = 0; i < m->n_tensors; i++) {
        const ddpm_param_info *p = &m->tensors[i];
        snprintf(what, sizeof what, "%s.%s", p->is_buffer ? "after" : "grad", p->name);
        float *ref = fxf(prefix, what, p->numel);
        const float *got = p->is_buffer ? m->buffers + p->offset : m->grads + p->offset;
        snprintf(what, sizeof what, "%s%s.%s", prefix, p->is_buffer ? "after" : "grad", p->name);
        cmp(got, ref, p->numel, p->is_buffer ? 0 : FLOOR_REL * G, what);
        free(ref);
        n_buffers += p->is_buffer;
        n_grads += !p->is_buffer;
    }
    /* every gradient and running statistic of the fixture was compared */
    size_t fx_grads = 0, fx_after = 0, plen = strlen(prefix);
    for (size_t i = 0; i < fx.n_tensors; i++) {
        const char *name = fx.tensors[i].name;
        if (strncmp(name, prefix, plen) != 0) continue;
        fx_grads += strncmp(name + plen, "grad.", 5) == 0;
        fx_after += strncmp(name + plen, "after.", 6) == 0;
    }
    assert_int_equal(fx_grads, n_grads);
    assert_int_equal(fx_after, n_buffers);
    assert_true(n_buffers == 2 * 18); /* 9 blocks, 2 batch norms each, mean and var */

    /* eval mode: the running statistics as the training forward left them */
    in.train = 0;
    assert_int_equal(m->ops->forward(m, &in, out), DDPM_OK);
    want = fxf(prefix, "out_eval", n);
    snprintf(what, sizeof what, "%sout_eval", prefix);
    cmp(out, want, n, 0, what);
    free(want);
    /* an eval forward records nothing: backward refuses */
    assert_int_equal(m->ops->backward(m, dout), DDPM_ERR_INVALID);
    free(x);
    free(c);
    free(t);
    free(dout);
    free(out);
    ddpm_model_free(m);
}

static void test_sprites_vs_pytorch(void **state) {
    (void)state;
    check_case(CFG, "cu/", 3);
}

static void test_fashion_mnist_vs_pytorch(void **state) {
    (void)state;
    check_case(CFG28, "cu28/", 2);
}

/* Three optimizer steps: MSE, clip_grad_norm_(1.0), Adam(lr 1e-3), as PyTorch. */
static void test_adam_steps_vs_pytorch(void **state) {
    (void)state;
    ddpm_model *m = load(CFG, "cu/");
    const int B = 3;
    const size_t d = m->sample_numel, n = B * d;
    float *am = calloc(m->n_params, sizeof(float)), *av = calloc(m->n_params, sizeof(float));
    float *out = malloc(sizeof(float) * n), *dout = malloc(sizeof(float) * n);
    ddpm_train_config cfg;
    ddpm_train_config_default(&cfg);
    cfg.optimizer = DDPM_OPT_ADAM;
    cfg.weight_decay = 0;
    cfg.beta1 = 0.9;
    cfg.beta2 = 0.999;
    cfg.adam_eps = 1e-8;
    assert_int_equal(ddpm_model_reserve(m, B), DDPM_OK);
    for (int k = 1; k <= 3; k++) {
        char name[64];
        snprintf(name, sizeof name, "opt/x%d", k);
        float *x = fxf("cu/", name, n);
        snprintf(name, sizeof name, "opt/c%d", k);
        float *c = fxf("cu/", name, (size_t)B * 5);
        snprintf(name, sizeof name, "opt/target%d", k);
        float *target = fxf("cu/", name, n);
        snprintf(name, sizeof name, "opt/t%d", k);
        int *t = fxi("cu/", name, B);
        ddpm_model_input in = {.x = x, .t = t, .cond = c, .B = B, .train = 1};
        assert_int_equal(m->ops->forward(m, &in, out), DDPM_OK);
        const double loss = ddpm_loss_and_grad(DDPM_LOSS_L2, out, target, NULL, B, d, dout);
        memset(m->grads, 0, sizeof(float) * m->n_params);
        assert_int_equal(m->ops->backward(m, dout), DDPM_OK);
        const float norm = ddpm_clip_grad_norm(m->grads, m->n_params, 1.0f);
        ddpm_adam_update(m->params, m->grads, am, av, m->n_params, &cfg, 1e-3f, k);
        snprintf(name, sizeof name, "cu/opt/loss%d", k);
        const double want_loss = tu_scalar(&fx, name);
        snprintf(name, sizeof name, "cu/opt/norm%d", k);
        const double want_norm = tu_scalar(&fx, name);
        printf("[context-unet] step %d: loss %.8f (PyTorch %.8f, rel %.2g), grad norm %.6f "
               "(PyTorch %.6f, rel %.2g)\n",
               k, loss, want_loss, fabs(loss - want_loss) / want_loss, norm, want_norm,
               fabs(norm - want_norm) / want_norm);
        assert_true(fabs(loss - want_loss) <= 1e-5 * want_loss);
        assert_true(fabs(norm - want_norm) <= 1e-5 * want_norm);
        assert_true(want_norm > 1.0); /* the clipping did something */
        free(x);
        free(c);
        free(target);
        free(t);
    }
    free(am);
    free(av);
    free(out);
    free(dout);
    ddpm_model_free(m);
}

/* ---- loading by name ---------------------------------------------------------------------------- */

/* Writes the fixture's "cu/w." tensors (without the prefix) to path, leaving out `skip` (NULL:
 * none) and tensors under init_conv.shortcut. when no_shortcut, plus one `extra` tensor. */
static void write_weights(const char *path, const char *skip, int no_shortcut, const char *extra) {
    ddpm_tensor *ts = calloc(fx.n_tensors + 1, sizeof *ts);
    size_t k = 0;
    for (size_t i = 0; i < fx.n_tensors; i++) {
        const char *name = fx.tensors[i].name;
        if (strncmp(name, "cu/w.", 5) != 0) continue;
        if (skip && strcmp(name + 5, skip) == 0) continue;
        if (no_shortcut && strncmp(name + 5, "init_conv.shortcut.", 19) == 0) continue;
        ts[k] = fx.tensors[i];
        ts[k++].name = (char *)name + 5;
    }
    if (extra) {
        ts[k] = *ddpm_safetensors_find(&fx, "cu/w.out.3.bias");
        ts[k++].name = (char *)extra;
    }
    if (ddpm_safetensors_write(path, ts, k, NULL, NULL, 0)) fail_msg("%s", ddpm_last_error());
    free(ts);
}

static int load_file(ddpm_model *m, const char *path) {
    ddpm_safetensors st;
    if (ddpm_safetensors_read(path, &st)) fail_msg("%s", ddpm_last_error());
    int rc = ddpm_model_load_tensors(m, &st, NULL, path);
    ddpm_safetensors_free(&st);
    return rc;
}

static void expect_error(const char *needle) {
    if (!strstr(ddpm_last_error(), needle))
        fail_msg("expected '%s' in the error, got: %s", needle, ddpm_last_error());
}

static void test_load_errors(void **state) {
    (void)state;
    /* the exported file, without a prefix, loads (num_batches_tracked included: ignored) */
    const char *full = tu_tmp("full.safetensors");
    write_weights(full, NULL, 0, NULL);
    ddpm_model *m = create(CFG);
    assert_int_equal(load_file(m, full), DDPM_OK);
    const ddpm_param_info *p = ddpm_model_find(m, "up0.0.weight");
    assert_non_null(p);
    assert_int_equal(p->shape[2], 4); /* ConvTranspose2d(2nf, 2nf, h/4, h/4) */
    float *ref = fxf("cu/", "w.up0.0.weight", p->numel);
    assert_memory_equal(ddpm_model_tensor_data(m, p), ref, p->numel * sizeof(float));
    free(ref);
    p = ddpm_model_find(m, "down2.model.1.conv2.1.running_var");
    assert_non_null(p);
    assert_true(p->is_buffer);
    ref = fxf("cu/", "w.down2.model.1.conv2.1.running_var", p->numel);
    assert_memory_equal(ddpm_model_tensor_data(m, p), ref, p->numel * sizeof(float));
    free(ref);

    /* n_feat 8 weights into an n_feat 16 model: the first tensor already differs */
    ddpm_model *wide = create("{\"kind\":\"context-unet\",\"in_channels\":3,\"n_feat\":16,\"n_cfeat\":5,\"height\":16}");
    assert_int_equal(load_file(wide, full), DDPM_ERR_FORMAT);
    expect_error("'init_conv.conv1.0.weight' has shape [8, 3, 3, 3], the model expects [16, 3, 3, 3]");
    ddpm_model_free(wide);
    /* another height changes only up0's kernel */
    ddpm_model *tall = create("{\"kind\":\"context-unet\",\"in_channels\":3,\"n_feat\":8,\"n_cfeat\":5,\"height\":24}");
    assert_int_equal(load_file(tall, full), DDPM_ERR_FORMAT);
    expect_error("'up0.0.weight' has shape [16, 16, 4, 4], the model expects [16, 16, 6, 6]");
    ddpm_model_free(tall);
    /* another context width */
    ddpm_model *ctx = create("{\"kind\":\"context-unet\",\"in_channels\":3,\"n_feat\":8,\"n_cfeat\":10,\"height\":16}");
    assert_int_equal(load_file(ctx, full), DDPM_ERR_FORMAT);
    expect_error("'contextembed1.model.0.weight' has shape [16, 5]");
    ddpm_model_free(ctx);

    /* a file missing one tensor */
    const char *missing = tu_tmp("missing.safetensors");
    write_weights(missing, "up1.model.2.conv1.1.running_mean", 0, NULL);
    assert_int_equal(load_file(m, missing), DDPM_ERR_FORMAT);
    expect_error("'up1.model.2.conv1.1.running_mean' of the context-unet model is missing");
    /* a file with one tensor too many */
    const char *extra = tu_tmp("extra.safetensors");
    write_weights(extra, NULL, 0, "up3.model.0.bias");
    assert_int_equal(load_file(m, extra), DDPM_ERR_FORMAT);
    expect_error("'up3.model.0.bias' is not part of the context-unet model");

    /* a course state_dict has no learned shortcut: the default model names the tensor ... */
    const char *course = tu_tmp("course.safetensors");
    write_weights(course, NULL, 1, NULL);
    assert_int_equal(load_file(m, course), DDPM_ERR_FORMAT);
    expect_error("'init_conv.shortcut.weight' of the context-unet model is missing");
    /* ... and "shortcut": "none" loads it: the block is then conv2 / 1.414, which is the learned
     * model with a zero shortcut */
    ddpm_model *none = create("{\"kind\":\"context-unet\",\"in_channels\":3,\"n_feat\":8,\"n_cfeat\":5,\"height\":16,\"shortcut\":\"none\"}");
    assert_null(ddpm_model_find(none, "init_conv.shortcut.weight"));
    assert_int_equal(none->n_tensors + 2, m->n_tensors);
    assert_int_equal(load_file(none, course), DDPM_OK);
    assert_int_equal(load_file(none, full), DDPM_ERR_FORMAT);
    expect_error("'init_conv.shortcut.bias' is not part of the context-unet model");
    assert_int_equal(load_file(m, full), DDPM_OK);
    for (const char *s = "init_conv.shortcut.weight"; s; s = strcmp(s, "init_conv.shortcut.bias") ? "init_conv.shortcut.bias" : NULL) {
        const ddpm_param_info *q = ddpm_model_find(m, s);
        memset(ddpm_model_tensor_data(m, q), 0, q->numel * sizeof(float));
    }
    const int B = 3;
    float *x = fxf("cu/", "x", B * m->sample_numel), *c = fxf("cu/", "c", B * 5);
    int *t = fxi("cu/", "t", B);
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

static void expect_bad(const char *cfg, const char *needle) {
    ddpm_model *m = (ddpm_model *)1;
    assert_int_equal(ddpm_model_create(cfg, 1, &m), DDPM_ERR_INVALID);
    assert_null(m);
    expect_error(needle);
}

static void test_config(void **state) {
    (void)state;
    expect_bad("{\"kind\":\"context-unet\",\"height\":18}", "\"height\" must be divisible by 4 (got 18)");
    expect_bad("{\"kind\":\"context-unet\",\"height\":2}", "\"height\"");
    expect_bad("{\"kind\":\"context-unet\",\"n_feat\":-64}", "\"n_feat\"");
    expect_bad("{\"kind\":\"context-unet\",\"n_feat\":12}", "\"n_feat\" must be a multiple of 8");
    expect_bad("{\"kind\":\"context-unet\",\"n_feat\":64.5}", "\"n_feat\" must be an integer");
    expect_bad("{\"kind\":\"context-unet\",\"n_cfeat\":-1}", "\"n_cfeat\"");
    expect_bad("{\"kind\":\"context-unet\",\"in_channels\":0}", "\"in_channels\"");
    expect_bad("{\"kind\":\"context-unet\",\"num_timesteps\":1}", "\"num_timesteps\"");
    expect_bad("{\"kind\":\"context-unet\",\"shortcut\":\"random\"}", "\"shortcut\" must be learned or none");
    expect_bad("{\"kind\":\"context-unet\",\"height\":\"16\"}", "\"height\" must be an integer");
    expect_bad("{\"kind\":\"context-unet\",\"nfeat\":32}", "unknown key \"nfeat\" for context-unet");

    /* the defaults are the course's sprites network; the stored config lists every key */
    ddpm_model *m = create("{\"kind\":\"context-unet\"}");
    assert_string_equal(m->config_json,
                        "{\"kind\":\"context-unet\",\"in_channels\":3,\"n_feat\":64,\"n_cfeat\":5,"
                        "\"height\":16,\"num_timesteps\":501,\"shortcut\":\"learned\"}");
    assert_int_equal(m->channels, 3);
    assert_int_equal(m->height, 16);
    assert_int_equal(m->width, 16);
    assert_int_equal(m->sample_numel, 3 * 16 * 16);
    assert_int_equal(m->cond_dim, 5);
    assert_int_equal(m->num_timesteps, 501);
    assert_int_equal(m->self_cond, 0);
    assert_string_equal(m->ops->kind, "context-unet");
    /* the course's ContextUnet(3, 64, 5, 16) has 1,480,771 parameters; the learned shortcut adds
     * 64 x 3 + 64 */
    size_t n = 0;
    for (size_t i = 0; i < m->n_tensors; i++)
        if (!m->tensors[i].is_buffer) n += m->tensors[i].numel;
    assert_int_equal(n, 1480771 + 64 * 3 + 64);
    assert_string_equal(m->tensors[0].name, "init_conv.conv1.0.weight");
    assert_string_equal(m->tensors[m->n_tensors - 1].name, "out.3.bias");
    /* PyTorch's initialisation: U(+-1/sqrt(fan_in)); ConvTranspose2d's fan_in is C_out k k;
     * norms 1 and 0; running var 1 */
    struct {
        const char *name;
        double bound;
    } bounds[] = {{"init_conv.conv1.0.weight", 1 / sqrt(27.0)},
                  {"init_conv.shortcut.bias", 1 / sqrt(3.0)},
                  {"timeembed1.model.0.weight", 1.0},
                  {"contextembed2.model.2.weight", 1 / sqrt(64.0)},
                  {"up0.0.weight", 1 / sqrt(128.0 * 16)},
                  {"up1.model.0.weight", 1 / sqrt(64.0 * 4)},
                  {"up2.model.0.bias", 1 / sqrt(64.0 * 4)}};
    for (size_t i = 0; i < sizeof bounds / sizeof bounds[0]; i++) {
        const ddpm_param_info *p = ddpm_model_find(m, bounds[i].name);
        assert_non_null(p);
        const double got = maxabs(ddpm_model_tensor_data(m, p), p->numel);
        if (!(got <= bounds[i].bound && got > 0.8 * bounds[i].bound))
            fail_msg("%s: max |w| %g, bound %g", bounds[i].name, got, bounds[i].bound);
    }
    const char *ones[] = {"down1.model.0.conv1.1.weight", "up0.1.weight", "out.1.weight",
                          "down2.model.1.conv2.1.running_var"};
    for (int i = 0; i < 4; i++) {
        const ddpm_param_info *p = ddpm_model_find(m, ones[i]);
        for (size_t k = 0; k < p->numel; k++) assert_true(ddpm_model_tensor_data(m, p)[k] == 1.0f);
    }
    ddpm_model_free(m);
    /* the stored config rebuilds the same network */
    m = create(CFG28);
    ddpm_model *again = create(m->config_json);
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
    ddpm_model *m = load(CFG, "cu/");
    const int B = 3;
    const size_t n = B * m->sample_numel;
    float *x = fxf("cu/", "x", n), *o1 = malloc(sizeof(float) * n), *o2 = malloc(sizeof(float) * n);
    float zeros[3 * 5] = {0};
    int t[3] = {0, 250, 500};
    assert_int_equal(ddpm_model_reserve(m, B), DDPM_OK);
    /* eval forwards run in chunks of items (here 2 + 1): the same outputs */
    ddpm_model_input inc = {.x = x, .t = t, .cond = zeros, .B = B, .train = 0};
    assert_int_equal(m->ops->forward(m, &inc, o1), DDPM_OK);
    setenv("DDPM_EVAL_CHUNK", "2", 1);
    assert_int_equal(m->ops->forward(m, &inc, o2), DDPM_OK);
    unsetenv("DDPM_EVAL_CHUNK");
    tu_assert_close(o2, o1, n, 1e-6, 1e-6, "eval forward in chunks of 2 items");
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
    expect_error("timestep 501 outside 0..500");
    t[0] = 0;
    in.B = 4;
    assert_int_equal(m->ops->forward(m, &in, o2), DDPM_ERR_INVALID);
    expect_error("batch of 4");
    in.B = 3;
    assert_int_equal(m->ops->backward(m, o1), DDPM_ERR_INVALID);
    expect_error("backward without a training forward");
    free(x);
    free(o1);
    free(o2);
    ddpm_model_free(m);

    /* n_cfeat 0: an unconditional network (ddpm only), trainable */
    m = create("{\"kind\":\"context-unet\",\"in_channels\":1,\"n_feat\":8,\"n_cfeat\":0,\"height\":8}");
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
    assert_true(maxabs(m->grads + p->offset, p->numel) > 0);
    ddpm_model_free(m);
}

static void test_steady_state_allocates_nothing(void **state) {
    (void)state;
    ddpm_model *m = load(CFG, "cu/");
    const int B = 3;
    const size_t n = B * m->sample_numel;
    float *x = fxf("cu/", "x", n), *c = fxf("cu/", "c", B * 5), *dout = fxf("cu/", "dout", n);
    float *out = malloc(sizeof(float) * n);
    int *t = fxi("cu/", "t", B);
    assert_int_equal(ddpm_model_reserve(m, B), DDPM_OK);
    ddpm_model_input in = {.x = x, .t = t, .cond = c, .B = B, .train = 1};
    ddpm_tape_stats s0, s1;
    for (int it = 0; it < 3; it++) {
        in.train = 1;
        in.B = B;
        assert_int_equal(m->ops->forward(m, &in, out), DDPM_OK);
        assert_int_equal(m->ops->backward(m, dout), DDPM_OK);
        in.train = 0;
        assert_int_equal(m->ops->forward(m, &in, out), DDPM_OK);
        in.B = 2; /* a smaller batch reuses the same memory */
        assert_int_equal(m->ops->forward(m, &in, out), DDPM_OK);
        in.B = 3; /* so does an eval forward in chunks */
        setenv("DDPM_EVAL_CHUNK", "2", 1);
        assert_int_equal(m->ops->forward(m, &in, out), DDPM_OK);
        unsetenv("DDPM_EVAL_CHUNK");
        in.B = 2;
        in.train = 1;
        assert_int_equal(m->ops->forward(m, &in, out), DDPM_OK);
        assert_int_equal(m->ops->backward(m, dout), DDPM_OK);
        ddpm_tape_get_stats(tape_of(m), it == 0 ? &s0 : &s1);
    }
    printf("[context-unet] tape: %zu allocations, %zu arena bytes (%zu used by the last step), %zu nodes\n",
           s1.n_allocs, s1.arena_bytes, s1.arena_used, s1.n_nodes);
    assert_int_equal(s1.n_allocs, s0.n_allocs);
    assert_int_equal(s1.arena_bytes, s0.arena_bytes);
    assert_true(s1.n_nodes > 80);
    free(x);
    free(c);
    free(dout);
    free(out);
    free(t);
    ddpm_model_free(m);
}

static void test_threads(void **state) {
    (void)state;
    const int B = 3;
    float *res[2][3];
    size_t n = 0, np = 0;
    for (int r = 0; r < 2; r++) {
        omp_set_num_threads(r + 1);
        ddpm_model *m = load(CFG, "cu/");
        n = B * m->sample_numel;
        np = m->n_params;
        float *x = fxf("cu/", "x", n), *c = fxf("cu/", "c", B * 5), *dout = fxf("cu/", "dout", n);
        int *t = fxi("cu/", "t", B);
        for (int k = 0; k < 2; k++) res[r][k] = malloc(sizeof(float) * n);
        res[r][2] = malloc(sizeof(float) * np);
        assert_int_equal(ddpm_model_reserve(m, B), DDPM_OK);
        ddpm_model_input in = {.x = x, .t = t, .cond = c, .B = B, .train = 1};
        assert_int_equal(m->ops->forward(m, &in, res[r][0]), DDPM_OK);
        memset(m->grads, 0, sizeof(float) * np);
        assert_int_equal(m->ops->backward(m, dout), DDPM_OK);
        memcpy(res[r][2], m->grads, sizeof(float) * np);
        in.train = 0;
        assert_int_equal(m->ops->forward(m, &in, res[r][1]), DDPM_OK);
        free(x);
        free(c);
        free(dout);
        free(t);
        ddpm_model_free(m);
    }
    omp_set_num_threads(2);
    const char *what[3] = {"train forward, 1 vs 2 threads", "eval forward, 1 vs 2 threads",
                           "gradients, 1 vs 2 threads"};
    for (int k = 0; k < 3; k++) {
        const size_t len = k == 2 ? np : n;
        const double scale = maxabs(res[0][k], len);
        double err = 0;
        for (size_t i = 0; i < len; i++) err = fmax(err, fabs((double)res[0][k][i] - res[1][k][i]));
        printf("[context-unet] %s: max difference %.3g (max |value| %.3g)\n", what[k], err, scale);
        tu_assert_close(res[1][k], res[0][k], len, 1e-5, 1e-5 * scale, what[k]);
        for (int r = 0; r < 2; r++) free(res[r][k]);
    }
}

/* ---- with the trainer and checkpoints -------------------------------------------------------- */

static void test_trainer_and_checkpoint(void **state) {
    (void)state;
    ddpm_schedule s;
    ddpm_schedule_config sc;
    ddpm_schedule_config_default(&sc, DDPM_SCHEDULE_LINEAR_COURSE, 500);
    assert_int_equal(ddpm_schedule_init(&s, &sc), DDPM_OK);
    assert_int_equal(s.n, 501);
    ddpm_model *m = create("{\"kind\":\"context-unet\",\"in_channels\":1,\"n_feat\":8,\"n_cfeat\":3,\"height\":8,\"num_timesteps\":501}");
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
    if (ddpm_trainer_init(&tr, m, &s, &tc, &td)) fail_msg("%s", ddpm_last_error());
    for (int i = 0; i < 3; i++) assert_int_equal(ddpm_trainer_step(&tr), DDPM_OK);
    assert_true(isfinite(tr.last_loss) && tr.last_loss > 0);
    const char *path = tu_tmp("cu_ck.safetensors");
    assert_int_equal(ddpm_checkpoint_save(path, &tr, NULL, NULL, NULL, 0), DDPM_OK);
    ddpm_checkpoint ck;
    if (ddpm_checkpoint_load(path, &ck)) fail_msg("%s", ddpm_last_error());
    assert_string_equal(ck.model->config_json, m->config_json);
    assert_memory_equal(ck.model->params, m->params, m->n_params * sizeof(float));
    assert_memory_equal(ck.model->buffers, m->buffers, m->n_buffers * sizeof(float));
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
    return cmocka_run_group_tests(tests, setup, teardown);
}

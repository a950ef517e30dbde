/* test_simple_unet.c - the tutorial's SimpleUnet against PyTorch (scripts/fixtures/gen_course_nets.py):
 * forward, every parameter gradient and the updated running statistics in training mode, the
 * forward in eval mode, three Adam steps; loading by name and its errors, config errors, no
 * allocation in steady state, thread-count independence, checkpoints and the trainer.
 *
 * Tolerance against the float64 PyTorch references, per tensor:
 *   |got - ref| <= 1e-4 |ref| + 1e-5 max|ref| + 5e-6 G
 * where G is the largest gradient of the whole case (a floor for gradients that are ~0). Losses
 * and gradient norms of the Adam steps: relative 1e-5. */
#include "testutil.h"

#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define RTOL 1e-4
#define ATOL_REL 1e-5
#define FLOOR_REL 5e-6

#define CFG "{\"kind\":\"simple-unet\",\"in_channels\":3,\"height\":16,\"channels\":[8,16,32],\"time_emb_dim\":32,\"num_timesteps\":300}"

static ddpm_safetensors fx;
static double worst = 0, worst_zero = 0, worst_tol = 0;
static char worst_what[160], worst_zero_what[160];

static int setup(void **state) {
    (void)state;
    tu_load_fixture("simple_unet.safetensors", &fx);
    return 0;
}

static int teardown(void **state) {
    (void)state;
    ddpm_safetensors_free(&fx);
    printf("[simple-unet] worst error vs PyTorch: max|got-ref| / max|ref| = %.3g (%s); "
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
    if (ddpm_model_load_tensors(m, &fx, pre, "simple_unet.safetensors"))
        fail_msg("%s", ddpm_last_error());
    return m;
}

static ddpm_tape *tape_of(ddpm_model *m) { return *(ddpm_tape **)m->impl; }

/* ---- against PyTorch ---------------------------------------------------------------------------- */

static void test_vs_pytorch(void **state) {
    (void)state;
    const char *prefix = "su/";
    const int B = 2;
    ddpm_model *m = load(CFG, prefix);
    const size_t d = m->sample_numel, n = (size_t)B * d;
    float *x = fxf(prefix, "x", n), *dout = fxf(prefix, "dout", n), *out = malloc(sizeof(float) * n);
    int *t = fxi(prefix, "t", B);
    assert_int_equal(ddpm_model_reserve(m, B), DDPM_OK);
    ddpm_model_input in = {.x = x, .t = t, .B = B, .train = 1};
    assert_int_equal(m->ops->forward(m, &in, out), DDPM_OK);
    float *want = fxf(prefix, "out_train", n);
    cmp(out, want, n, 0, "su/out_train");
    free(want);

    memset(m->grads, 0, sizeof(float) * m->n_params);
    assert_int_equal(m->ops->backward(m, dout), DDPM_OK);
    char what[200];
    double G = 0;
    for (size_t i = 0; i < m->n_tensors; i++) {
        const ddpm_param_info *p = &m->tensors[i];
        if (p->is_buffer) continue;
        snprintf(what, sizeof what, "grad.%s", p->name);
        float *ref = fxf(prefix, what, p->numel);
        G = fmax(G, maxabs(ref, p->numel));
        free(ref);
    }
    size_t n_grads = 0, n_buffers = 0;
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
    size_t fx_grads = 0, fx_after = 0;
    for (size_t i = 0; i < fx.n_tensors; i++) {
        fx_grads += strncmp(fx.tensors[i].name, "su/grad.", 8) == 0;
        fx_after += strncmp(fx.tensors[i].name, "su/after.", 9) == 0;
    }
    assert_int_equal(fx_grads, n_grads);
    assert_int_equal(fx_after, n_buffers);
    assert_int_equal(n_buffers, 4 * 2 * 2); /* 4 blocks, 2 batch norms each, mean and var */

    in.train = 0;
    assert_int_equal(m->ops->forward(m, &in, out), DDPM_OK);
    want = fxf(prefix, "out_eval", n);
    cmp(out, want, n, 0, "su/out_eval");
    free(want);
    assert_int_equal(m->ops->backward(m, dout), DDPM_ERR_INVALID);
    free(x);
    free(t);
    free(dout);
    free(out);
    ddpm_model_free(m);
}

static void test_adam_steps_vs_pytorch(void **state) {
    (void)state;
    ddpm_model *m = load(CFG, "su/");
    const int B = 2;
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
    int clipped = 0;
    for (int k = 1; k <= 3; k++) {
        char name[64];
        snprintf(name, sizeof name, "opt/x%d", k);
        float *x = fxf("su/", name, n);
        snprintf(name, sizeof name, "opt/target%d", k);
        float *target = fxf("su/", name, n);
        snprintf(name, sizeof name, "opt/t%d", k);
        int *t = fxi("su/", name, B);
        ddpm_model_input in = {.x = x, .t = t, .B = B, .train = 1};
        assert_int_equal(m->ops->forward(m, &in, out), DDPM_OK);
        const double loss = ddpm_loss_and_grad(DDPM_LOSS_L2, out, target, NULL, B, d, dout);
        memset(m->grads, 0, sizeof(float) * m->n_params);
        assert_int_equal(m->ops->backward(m, dout), DDPM_OK);
        const float norm = ddpm_clip_grad_norm(m->grads, m->n_params, 1.0f);
        ddpm_adam_update(m->params, m->grads, am, av, m->n_params, &cfg, 1e-3f, k);
        snprintf(name, sizeof name, "su/opt/loss%d", k);
        const double want_loss = tu_scalar(&fx, name);
        snprintf(name, sizeof name, "su/opt/norm%d", k);
        const double want_norm = tu_scalar(&fx, name);
        printf("[simple-unet] step %d: loss %.8f (PyTorch %.8f, rel %.2g), grad norm %.6f "
               "(PyTorch %.6f, rel %.2g)\n",
               k, loss, want_loss, fabs(loss - want_loss) / want_loss, norm, want_norm,
               fabs(norm - want_norm) / want_norm);
        assert_true(fabs(loss - want_loss) <= 1e-5 * want_loss);
        assert_true(fabs(norm - want_norm) <= 1e-5 * want_norm);
        clipped += want_norm > 1.0;
        free(x);
        free(target);
        free(t);
    }
    assert_true(clipped > 0); /* the clipping did something */
    free(am);
    free(av);
    free(out);
    free(dout);
    ddpm_model_free(m);
}

/* ---- loading by name ---------------------------------------------------------------------------- */

/* Writes the fixture's "su/w." tensors (without the prefix) to path, leaving out `skip` (NULL:
 * none), plus one `extra` tensor. */
static void write_weights(const char *path, const char *skip, const char *extra) {
    ddpm_tensor *ts = calloc(fx.n_tensors + 1, sizeof *ts);
    size_t k = 0;
    for (size_t i = 0; i < fx.n_tensors; i++) {
        const char *name = fx.tensors[i].name;
        if (strncmp(name, "su/w.", 5) != 0) continue;
        if (skip && strcmp(name + 5, skip) == 0) continue;
        ts[k] = fx.tensors[i];
        ts[k++].name = (char *)name + 5;
    }
    if (extra) {
        ts[k] = *ddpm_safetensors_find(&fx, "su/w.output.bias");
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
    const char *full = tu_tmp("full.safetensors");
    write_weights(full, NULL, NULL);
    ddpm_model *m = create(CFG);
    assert_int_equal(load_file(m, full), DDPM_OK);
    const ddpm_param_info *p = ddpm_model_find(m, "ups.0.transform.weight");
    assert_non_null(p);
    float *ref = fxf("su/", "w.ups.0.transform.weight", p->numel);
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
        ddpm_model *o = create(cases[i].cfg);
        assert_int_equal(load_file(o, full), DDPM_ERR_FORMAT);
        expect_error(cases[i].error);
        ddpm_model_free(o);
    }
    const char *missing = tu_tmp("missing.safetensors");
    write_weights(missing, "ups.1.bnorm2.running_var", NULL);
    assert_int_equal(load_file(m, missing), DDPM_ERR_FORMAT);
    expect_error("'ups.1.bnorm2.running_var' of the simple-unet model is missing");
    const char *extra = tu_tmp("extra.safetensors");
    write_weights(extra, NULL, "ups.2.conv1.weight");
    assert_int_equal(load_file(m, extra), DDPM_ERR_FORMAT);
    expect_error("'ups.2.conv1.weight' is not part of the simple-unet model");
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
    expect_bad("{\"kind\":\"simple-unet\",\"height\":40}",
               "\"height\" must be divisible by 2^4 = 16 for 5 \"channels\"");
    expect_bad("{\"kind\":\"simple-unet\",\"height\":18,\"channels\":[8,16,32]}",
               "\"height\" must be divisible by 2^2 = 4");
    expect_bad("{\"kind\":\"simple-unet\",\"height\":-64}", "\"height\"");
    expect_bad("{\"kind\":\"simple-unet\",\"channels\":[64]}", "\"channels\" needs at least 2 entries");
    expect_bad("{\"kind\":\"simple-unet\",\"channels\":[8,0,32]}", "\"channels\"[1] must be in 1..65536");
    expect_bad("{\"kind\":\"simple-unet\",\"channels\":[8,-16]}", "\"channels\"[1]");
    expect_bad("{\"kind\":\"simple-unet\",\"channels\":8}", "\"channels\" must be a list");
    expect_bad("{\"kind\":\"simple-unet\",\"time_emb_dim\":31}", "\"time_emb_dim\" must be even");
    expect_bad("{\"kind\":\"simple-unet\",\"time_emb_dim\":2}", "\"time_emb_dim\"");
    expect_bad("{\"kind\":\"simple-unet\",\"in_channels\":-3}", "\"in_channels\"");
    expect_bad("{\"kind\":\"simple-unet\",\"num_timesteps\":0}", "\"num_timesteps\"");
    expect_bad("{\"kind\":\"simple-unet\",\"n_feat\":64}", "unknown key \"n_feat\" for simple-unet");

    /* every default but the channel list (the default network is 62,438,883 parameters, as the
     * tutorial's); the stored config lists every key */
    ddpm_model *m = create("{\"kind\":\"simple-unet\",\"channels\":[8,16,32]}");
    assert_string_equal(m->config_json,
                        "{\"kind\":\"simple-unet\",\"in_channels\":3,\"height\":64,"
                        "\"channels\":[8,16,32],\"time_emb_dim\":32,\"num_timesteps\":300}");
    assert_int_equal(m->channels, 3);
    assert_int_equal(m->height, 64);
    assert_int_equal(m->width, 64);
    assert_int_equal(m->sample_numel, 3 * 64 * 64);
    assert_int_equal(m->cond_dim, 0);
    assert_int_equal(m->num_timesteps, 300);
    assert_string_equal(m->ops->kind, "simple-unet");
    /* PyTorch's SimpleUnet with these channels has 61,467 parameters */
    size_t n = 0;
    for (size_t i = 0; i < m->n_tensors; i++)
        if (!m->tensors[i].is_buffer) n += m->tensors[i].numel;
    assert_int_equal(n, 61467);
    assert_string_equal(m->tensors[0].name, "time_mlp.1.weight");
    assert_string_equal(m->tensors[4].name, "downs.0.time_mlp.weight");
    assert_string_equal(m->tensors[m->n_tensors - 1].name, "output.bias");
    struct {
        const char *name;
        double bound;
    } bounds[] = {{"time_mlp.1.weight", 1 / sqrt(32.0)},
                  {"conv0.bias", 1 / sqrt(27.0)},
                  {"downs.1.transform.weight", 1 / sqrt(32.0 * 16)},
                  {"ups.0.conv1.weight", 1 / sqrt(64.0 * 9)},
                  {"ups.0.transform.weight", 1 / sqrt(16.0 * 16)}, /* ConvTranspose2d: C_out k k */
                  {"ups.1.transform.bias", 1 / sqrt(8.0 * 16)},
                  {"output.weight", 1 / sqrt(8.0)}};
    for (size_t i = 0; i < sizeof bounds / sizeof bounds[0]; i++) {
        const ddpm_param_info *p = ddpm_model_find(m, bounds[i].name);
        assert_non_null(p);
        const double got = maxabs(ddpm_model_tensor_data(m, p), p->numel);
        if (!(got <= bounds[i].bound && got > 0.7 * bounds[i].bound))
            fail_msg("%s: max |w| %g, bound %g", bounds[i].name, got, bounds[i].bound);
    }
    const char *ones[] = {"downs.0.bnorm1.weight", "ups.1.bnorm2.running_var"};
    for (int i = 0; i < 2; i++) {
        const ddpm_param_info *p = ddpm_model_find(m, ones[i]);
        for (size_t k = 0; k < p->numel; k++) assert_true(ddpm_model_tensor_data(m, p)[k] == 1.0f);
    }
    ddpm_model *again = create(m->config_json);
    assert_string_equal(again->config_json, m->config_json);
    assert_memory_equal(again->params, m->params, m->n_params * sizeof(float));
    ddpm_model_free(again);
    ddpm_model_free(m);
}

/* ---- inputs, memory, threads ---------------------------------------------------------------- */

static void test_inputs(void **state) {
    (void)state;
    ddpm_model *m = load(CFG, "su/");
    const int B = 2;
    const size_t n = B * m->sample_numel;
    float *x = fxf("su/", "x", n), *o1 = malloc(sizeof(float) * n), *o2 = malloc(sizeof(float) * n);
    int t[2] = {0, 299};
    assert_int_equal(ddpm_model_reserve(m, B), DDPM_OK);
    ddpm_model_input in = {.x = x, .t = t, .B = B, .train = 0};
    assert_int_equal(m->ops->forward(m, &in, o1), DDPM_OK);
    /* eval forwards run in chunks of items (here 1 + 1): the same outputs */
    setenv("DDPM_EVAL_CHUNK", "1", 1);
    assert_int_equal(m->ops->forward(m, &in, o2), DDPM_OK);
    unsetenv("DDPM_EVAL_CHUNK");
    tu_assert_close(o2, o1, n, 1e-6, 1e-6, "eval forward in chunks of 1 item");
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
    expect_error("timestep 300 outside 0..299");
    t[1] = -1;
    assert_int_equal(m->ops->forward(m, &in, o2), DDPM_ERR_INVALID);
    t[1] = 0;
    in.B = 3;
    assert_int_equal(m->ops->forward(m, &in, o2), DDPM_ERR_INVALID);
    expect_error("batch of 3");
    assert_int_equal(m->ops->backward(m, o1), DDPM_ERR_INVALID);
    expect_error("backward without a training forward");
    free(x);
    free(o1);
    free(o2);
    ddpm_model_free(m);
}

static void test_steady_state_allocates_nothing(void **state) {
    (void)state;
    ddpm_model *m = load(CFG, "su/");
    const int B = 2;
    const size_t n = B * m->sample_numel;
    float *x = fxf("su/", "x", n), *dout = fxf("su/", "dout", n), *out = malloc(sizeof(float) * n);
    int *t = fxi("su/", "t", B);
    assert_int_equal(ddpm_model_reserve(m, B), DDPM_OK);
    ddpm_model_input in = {.x = x, .t = t, .B = B, .train = 1};
    ddpm_tape_stats s0, s1;
    for (int it = 0; it < 3; it++) {
        in.train = 1;
        in.B = B;
        assert_int_equal(m->ops->forward(m, &in, out), DDPM_OK);
        assert_int_equal(m->ops->backward(m, dout), DDPM_OK);
        in.train = 0;
        assert_int_equal(m->ops->forward(m, &in, out), DDPM_OK);
        in.B = 1;
        assert_int_equal(m->ops->forward(m, &in, out), DDPM_OK);
        in.train = 1;
        assert_int_equal(m->ops->forward(m, &in, out), DDPM_OK);
        assert_int_equal(m->ops->backward(m, dout), DDPM_OK);
        ddpm_tape_get_stats(tape_of(m), it == 0 ? &s0 : &s1);
    }
    printf("[simple-unet] tape: %zu allocations, %zu arena bytes (%zu used by the last step), %zu nodes\n",
           s1.n_allocs, s1.arena_bytes, s1.arena_used, s1.n_nodes);
    assert_int_equal(s1.n_allocs, s0.n_allocs);
    assert_int_equal(s1.arena_bytes, s0.arena_bytes);
    assert_true(s1.n_nodes > 40);
    free(x);
    free(dout);
    free(out);
    free(t);
    ddpm_model_free(m);
}

static void test_threads(void **state) {
    (void)state;
    const int B = 2;
    float *res[2][3];
    size_t n = 0, np = 0;
    for (int r = 0; r < 2; r++) {
        omp_set_num_threads(r + 1);
        ddpm_model *m = load(CFG, "su/");
        n = B * m->sample_numel;
        np = m->n_params;
        float *x = fxf("su/", "x", n), *dout = fxf("su/", "dout", n);
        int *t = fxi("su/", "t", B);
        for (int k = 0; k < 2; k++) res[r][k] = malloc(sizeof(float) * n);
        res[r][2] = malloc(sizeof(float) * np);
        assert_int_equal(ddpm_model_reserve(m, B), DDPM_OK);
        ddpm_model_input in = {.x = x, .t = t, .B = B, .train = 1};
        assert_int_equal(m->ops->forward(m, &in, res[r][0]), DDPM_OK);
        memset(m->grads, 0, sizeof(float) * np);
        assert_int_equal(m->ops->backward(m, dout), DDPM_OK);
        memcpy(res[r][2], m->grads, sizeof(float) * np);
        in.train = 0;
        assert_int_equal(m->ops->forward(m, &in, res[r][1]), DDPM_OK);
        free(x);
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
        printf("[simple-unet] %s: max difference %.3g (max |value| %.3g)\n", what[k], err, scale);
        tu_assert_close(res[1][k], res[0][k], len, 1e-5, 1e-5 * scale, what[k]);
        for (int r = 0; r < 2; r++) free(res[r][k]);
    }
}

/* ---- with the trainer and checkpoints -------------------------------------------------------- */

static void test_trainer_and_checkpoint(void **state) {
    (void)state;
    ddpm_schedule s;
    ddpm_schedule_config sc;
    ddpm_schedule_config_default(&sc, DDPM_SCHEDULE_LINEAR, 300);
    assert_int_equal(ddpm_schedule_init(&s, &sc), DDPM_OK);
    ddpm_model *m = create("{\"kind\":\"simple-unet\",\"in_channels\":1,\"height\":8,\"channels\":[4,8],\"time_emb_dim\":8}");
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
    if (ddpm_trainer_init(&tr, m, &s, &tc, &td)) fail_msg("%s", ddpm_last_error());
    for (int i = 0; i < 3; i++) assert_int_equal(ddpm_trainer_step(&tr), DDPM_OK);
    assert_true(isfinite(tr.last_loss) && tr.last_loss > 0);
    const char *path = tu_tmp("su_ck.safetensors");
    assert_int_equal(ddpm_checkpoint_save(path, &tr, NULL, NULL, NULL, 0), DDPM_OK);
    ddpm_checkpoint ck;
    if (ddpm_checkpoint_load(path, &ck)) fail_msg("%s", ddpm_last_error());
    assert_string_equal(ck.model->config_json, m->config_json);
    assert_memory_equal(ck.model->params, m->params, m->n_params * sizeof(float));
    assert_memory_equal(ck.model->buffers, m->buffers, m->n_buffers * sizeof(float));
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
    return cmocka_run_group_tests(tests, setup, teardown);
}

/* test_unet.c - the DDPM U-Net against its PyTorch reference (scripts/fixtures/gen_unet.py):
 * forward and every parameter gradient in training and eval mode, three Adam steps, state_dict
 * names; weight loading errors; configuration errors; determinism (dropout masks, thread
 * counts); steady-state memory; sampling; a short training run that must learn.
 *
 * Tolerance against PyTorch (float64 references from the same float32 inputs and weights):
 * |got - ref| <= 1e-4 |ref| + 1e-5 max|ref| per tensor. The worst error is printed at the end as
 * max |got - ref| / (|ref| + 1e-3 max|ref|). */
#include "netcheck.h"

#include "core/test_hooks.h"
#include "kernels/kernels.h"

#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define RTOL 1e-4
#define ATOL_REL 1e-5


static ddpm_safetensors FX;
static tu_worst worst, worst_norm;

static int setup(void **state) {
    tu_fixture_setup(state);
    /* One thread, except where a test says otherwise: the results do not depend on it
     * (test_steady_state_and_threads), and on a busy 2-core machine every parallel region can
     * cost a scheduler time slice, which would make the run time depend on the machine's load. */
    omp_set_num_threads(1);
    return 0;
}

static int teardown(void **state) {
    tu_worst_print("unet", &worst);
    printf("[unet] worst error vs PyTorch relative to the tensor (max |got-ref| / max|ref|): %.3g (%s)\n",
           worst_norm.err, worst_norm.what);
    return tu_fixture_teardown(state);
}

static double maxdiff(const float *a, const float *b, size_t n) {
    double m = 0;
    for (size_t i = 0; i < n; i++) m = fmax(m, fabs((double)a[i] - b[i]));
    return m;
}

/* got against fixture tensor `key` with the file's tolerance; tracks the worst errors. */
static void cmp_ref(const char *key, const float *got, size_t n) {
    float *ref = tu_tensor(&FX, key, n, NULL);
    tu_worst_note(&worst_norm, maxdiff(got, ref, n) / (tu_maxabs(ref, n) + 1e-30), key);
    tu_cmp_torch(&worst, key, got, ref, n, RTOL, ATOL_REL);
    free(ref);
}

static float *fx(const char *prefix, const char *name, size_t n) {
    return nc_tensor(&FX, prefix, name, n);
}

static int *fx_int(const char *prefix, const char *name, int n) {
    return nc_tensor_int(&FX, prefix, name, n);
}

static const char *meta(const char *key) {
    const char *v = ddpm_safetensors_meta(&FX, key);
    if (!v) fail_msg("fixture has no metadata '%s'", key);
    return v;
}

static ddpm_model *create(const char *json) { return nc_create(json, 1); }

/* The model of fixture case prefix ("a/" or "b/") with its weights, reserved for B. */
static ddpm_model *fixture_model(const char *prefix, int B, const char *extra_key, double extra) {
    char key[64];
    snprintf(key, sizeof key, "%sconfig", prefix);
    char json[1024];
    snprintf(json, sizeof json, "%s", meta(key));
    if (extra_key) /* e.g. a dropout: "...}" -> "..., \"dropout\": 0.3}" */
        snprintf(strrchr(json, '}'), 64, ", \"%s\": %g}", extra_key, extra);
    ddpm_model *m = create(json);
    snprintf(key, sizeof key, "%sw.", prefix);
    if (ddpm_model_load_tensors(m, &FX, key, "unet.safetensors")) fail_msg("%s", ddpm_last_error());
    assert_int_equal(ddpm_model_reserve(m, B), DDPM_OK);
    return m;
}

/* The fixture's inputs of case prefix. */
typedef struct {
    int B;
    size_t d;
    float *x, *cond, *sc, *dout;
    int *t;
} inputs;

static inputs fixture_inputs(const char *prefix, const ddpm_model *m, int B) {
    inputs in = {.B = B, .d = m->sample_numel};
    in.x = fx(prefix, "x", B * in.d);
    in.dout = fx(prefix, "dout", B * in.d);
    in.t = fx_int(prefix, "t", B);
    if (m->cond_dim) in.cond = fx(prefix, "cond", (size_t)B * m->cond_dim);
    if (m->self_cond) in.sc = fx(prefix, "self_cond", B * in.d);
    return in;
}

static void inputs_free(inputs *in) {
    free(in->x);
    free(in->cond);
    free(in->sc);
    free(in->dout);
    free(in->t);
}

/* ---- against PyTorch ------------------------------------------------------------------------ */

static void check_vs_pytorch(const char *prefix, int B) {
    ddpm_model *m = fixture_model(prefix, B, NULL, 0);
    /* every tensor, in state_dict order */
    char key[64];
    snprintf(key, sizeof key, "%snames", prefix);
    const char *names = meta(key);
    size_t pos = 0;
    for (size_t i = 0; i < m->n_tensors; i++) {
        const size_t len = strlen(m->tensors[i].name);
        if (strncmp(names + pos, m->tensors[i].name, len) != 0 || (names[pos + len] != ',' && names[pos + len]))
            fail_msg("tensor %zu is '%s', PyTorch's state_dict has '%.60s...'", i, m->tensors[i].name, names + pos);
        pos += len + (names[pos + len] == ',');
    }
    assert_int_equal(names[pos], '\0');

    inputs in = fixture_inputs(prefix, m, B);
    const size_t n = (size_t)B * in.d;
    float *out = malloc(sizeof(float) * n);
    ddpm_model_input mi = {.x = in.x, .t = in.t, .cond = in.cond, .self_cond = in.sc, .B = B,
                           .train = 1, .seed = 3, .step = 9};
    /* one thread, then two (the batch split into one slice per thread, see models/tape_net.c) */
    for (int threads = 1; threads <= 2; threads++) {
        omp_set_num_threads(threads);
        assert_int_equal(m->ops->forward(m, &mi, out), DDPM_OK);
        snprintf(key, sizeof key, "%sout", prefix);
        cmp_ref(key, out, n);
        memset(m->grads, 0, sizeof(float) * m->n_params);
        assert_int_equal(m->ops->backward(m, in.dout), DDPM_OK);
        for (size_t i = 0; i < m->n_tensors; i++) {
            char g[200];
            snprintf(g, sizeof g, "%sgrad.%s", prefix, m->tensors[i].name);
            cmp_ref(g, m->grads + m->tensors[i].offset, m->tensors[i].numel);
        }
        /* backward replays once */
        assert_int_equal(m->ops->backward(m, in.dout), DDPM_ERR_INVALID);
    }
    omp_set_num_threads(1);

    /* eval mode: the same function (group norm has no running statistics, dropout is 0) */
    memset(out, 0, sizeof(float) * n);
    mi.train = 0;
    assert_int_equal(m->ops->forward(m, &mi, out), DDPM_OK);
    snprintf(key, sizeof key, "%sout", prefix);
    cmp_ref(key, out, n);
    assert_int_equal(m->ops->backward(m, in.dout), DDPM_ERR_INVALID);
    assert_non_null(strstr(ddpm_last_error(), "without a training forward"));
    if (m->self_cond) { /* absent self-conditioning input = zeros */
        mi.self_cond = NULL;
        assert_int_equal(m->ops->forward(m, &mi, out), DDPM_OK);
        snprintf(key, sizeof key, "%sout_nosc", prefix);
        cmp_ref(key, out, n);
    }
    free(out);
    inputs_free(&in);
    ddpm_model_free(m);
}

static void test_vs_pytorch_a(void **s) {
    (void)s;
    check_vs_pytorch("a/", 2);
}

/* classes (with an unconditional row), self-conditioning, dim_head 0, attention at 12 and 6 */
static void test_vs_pytorch_b(void **s) {
    (void)s;
    check_vs_pytorch("b/", 3);
}

/* non-square 16x24: 8x12 and 4x6 below, attention at the level of height 8 and in the middle */
static void test_vs_pytorch_nonsquare(void **s) {
    (void)s;
    check_vs_pytorch("c/", 2);
    ddpm_model *m = fixture_model("c/", 2, NULL, 0);
    assert_int_equal(m->height, 16);
    assert_int_equal(m->width, 24);
    assert_int_equal(m->sample_numel, 2 * 16 * 24);
    assert_non_null(strstr(m->config_json, "\"height\":16,\"width\":24"));
    ddpm_model_free(m);
}

/* Three optimizer steps as PyTorch takes them: MSE, clip_grad_norm_(1.0), Adam(lr=1e-3). */
static void check_adam_steps(const char *prefix, int B) {
    ddpm_model *m = fixture_model(prefix, B, NULL, 0);
    inputs in = fixture_inputs(prefix, m, B);
    const size_t n = (size_t)B * in.d;
    float *losses = fx(prefix, "losses", 3), *norms = fx(prefix, "norms", 3);
    nc_adam a;
    nc_adam_init(&a, m, B);
    for (int k = 0; k < 3; k++) {
        char name[32];
        snprintf(name, sizeof name, "step%d/x", k);
        float *x = fx(prefix, name, n);
        snprintf(name, sizeof name, "step%d/target", k);
        float *target = fx(prefix, name, n);
        snprintf(name, sizeof name, "step%d/t", k);
        int *t = fx_int(prefix, name, B);
        ddpm_model_input mi = {.x = x, .t = t, .cond = in.cond, .self_cond = k == 1 ? in.sc : NULL,
                               .B = B, .train = 1};
        float norm;
        const double loss = nc_adam_step(&a, &mi, target, &norm);
        printf("[unet] %sstep %d: loss %.8f (PyTorch %.8f), grad norm %.6f (PyTorch %.6f)\n", prefix,
               k + 1, loss, losses[k], norm, norms[k]);
        const double le = fabs(loss - losses[k]) / losses[k], ne = fabs(norm - norms[k]) / norms[k];
        char what[64];
        snprintf(what, sizeof what, "%slosses[%d]", prefix, k);
        tu_worst_note(&worst, le, what);
        if (le > 1e-5 || ne > 1e-4)
            fail_msg("%sstep %d: loss %.9g vs %.9g, norm %.9g vs %.9g", prefix, k + 1, loss,
                     losses[k], norm, norms[k]);
        free(x);
        free(target);
        free(t);
    }
    /* a sample of the updated weights (Adam moves each weight by about lr per step) */
    const char *sample[] = {"temb.dense.0.weight", "conv_in.weight", "conv_out.weight"};
    double after_err = 0;
    for (int i = 0; i < 3; i++) {
        const ddpm_param_info *p = ddpm_model_find(m, sample[i]);
        char key[128];
        snprintf(key, sizeof key, "%safter.%s", prefix, sample[i]);
        float *want = tu_tensor(&FX, key, p->numel, NULL);
        tu_assert_close(ddpm_model_tensor_data(m, p), want, p->numel, 0, 1e-6, key);
        after_err = fmax(after_err, maxdiff(ddpm_model_tensor_data(m, p), want, p->numel));
        free(want);
    }
    printf("[unet] %sweights after 3 steps: largest difference %.3g\n", prefix, after_err);
    nc_adam_free(&a);
    free(losses);
    free(norms);
    inputs_free(&in);
    ddpm_model_free(m);
}

static void test_adam_steps(void **s) {
    (void)s;
    check_adam_steps("a/", 2);
    check_adam_steps("b/", 3);
    check_adam_steps("c/", 2);
}

/* ---- configuration -------------------------------------------------------------------------- */

static void test_default_config(void **s) {
    (void)s;
    ddpm_model *m = create("{\"kind\":\"unet\"}");
    assert_string_equal(m->config_json,
                        "{\"kind\":\"unet\",\"in_channels\":1,\"height\":28,\"base_channels\":32,"
                        "\"channel_mult\":[1,2,2],\"num_res_blocks\":2,\"attn_resolutions\":[7],"
                        "\"heads\":4,\"dim_head\":32,\"dropout\":0,\"groups\":8,\"num_classes\":0,"
                        "\"self_cond\":false,\"num_timesteps\":1000}");
    assert_int_equal(m->channels, 1);
    assert_int_equal(m->height, 28);
    assert_int_equal(m->width, 28);
    assert_int_equal(m->sample_numel, 784);
    assert_int_equal(m->cond_dim, 0);
    assert_int_equal(m->self_cond, 0);
    assert_int_equal(m->num_timesteps, 1000);
    /* the PyTorch module's names and parameter count for the same configuration */
    const char *names = meta("default/names");
    size_t numel = 0, pos = 0;
    for (size_t i = 0; i < m->n_tensors; i++) {
        const size_t len = strlen(m->tensors[i].name);
        assert_true(strncmp(names + pos, m->tensors[i].name, len) == 0);
        pos += len + 1;
        numel += m->tensors[i].numel;
    }
    assert_int_equal(pos - 1, strlen(names));
    assert_int_equal(numel, strtoull(meta("default/n_params"), NULL, 10));
    printf("[unet] default 28x28 model: %zu tensors, %zu parameters\n", m->n_tensors, numel);
    /* initialisation: zero where the paper's code starts at zero, PyTorch's bounds elsewhere */
    const ddpm_param_info *p = ddpm_model_find(m, "conv_out.weight");
    assert_true(tu_maxabs(ddpm_model_tensor_data(m, p), p->numel) == 0);
    p = ddpm_model_find(m, "down.0.block.1.conv2.weight");
    assert_true(tu_maxabs(ddpm_model_tensor_data(m, p), p->numel) == 0);
    p = ddpm_model_find(m, "mid.attn_1.proj_out.bias");
    assert_true(tu_maxabs(ddpm_model_tensor_data(m, p), p->numel) == 0);
    p = ddpm_model_find(m, "down.1.block.0.conv1.weight"); /* fan_in 32 * 9 */
    const double mx = tu_maxabs(ddpm_model_tensor_data(m, p), p->numel);
    assert_true(mx <= 1.0 / sqrt(288.0) && mx > 0.95 / sqrt(288.0));
    p = ddpm_model_find(m, "up.2.block.0.norm1.weight");
    assert_true(ddpm_model_tensor_data(m, p)[5] == 1.0f);
    /* the canonical JSON builds the same model */
    ddpm_model *m2 = create(m->config_json);
    assert_string_equal(m2->config_json, m->config_json);
    assert_int_equal(m2->n_params, m->n_params);
    ddpm_model_free(m2);
    ddpm_model_free(m);

    /* 32x32 RGB: attention defaults to the lowest level, 8x8 */
    m = create("{\"kind\":\"unet\",\"in_channels\":3,\"height\":32,\"num_classes\":10,\"self_cond\":true}");
    assert_non_null(strstr(m->config_json, "\"attn_resolutions\":[8]"));
    assert_int_equal(m->cond_dim, 10);
    assert_int_equal(m->self_cond, 1);
    assert_int_equal(m->sample_numel, 3072);
    p = ddpm_model_find(m, "conv_in.weight");
    assert_int_equal(p->shape[1], 6);
    p = ddpm_model_find(m, "class_emb.weight");
    assert_int_equal(p->shape[0], 10);
    assert_int_equal(p->shape[1], 128);
    ddpm_model_free(m);
}

static void test_bad_configs(void **s) {
    (void)s;
    const struct {
        const char *json, *needle;
    } cases[] = {
        {"{\"kind\":\"unet\",\"height\":30}", "\"height\" 30 does not fit 3 levels"},
        {"{\"kind\":\"unet\",\"height\":28,\"channel_mult\":[1,2,2,2]}", "level 2 has odd height 7"},
        {"{\"kind\":\"unet\",\"height\":28,\"width\":30}", "\"width\" 30 does not fit 3 levels"},
        {"{\"kind\":\"unet\",\"height\":16,\"width\":20,\"channel_mult\":[1,2,2,2]}", "level 2 has odd width 5"},
        {"{\"kind\":\"unet\",\"height\":16,\"width\":24,\"attn_resolutions\":[12]}", "lists 12, which is not the resolution (height) of a level (16, 8, 4)"},
        {"{\"kind\":\"unet\",\"width\":0}", "\"width\""},
        {"{\"kind\":\"unet\",\"groups\":3}", "\"groups\" 3 does not divide the 32 channels"},
        {"{\"kind\":\"unet\",\"base_channels\":12,\"channel_mult\":[1,3],\"groups\":8}", "\"groups\" 8"},
        {"{\"kind\":\"unet\",\"heads\":3,\"dim_head\":0}", "\"heads\" 3 does not divide the 64 channels"},
        {"{\"kind\":\"unet\",\"heads\":0}", "\"heads\""},
        {"{\"kind\":\"unet\",\"dim_head\":-1}", "\"dim_head\""},
        {"{\"kind\":\"unet\",\"attn_resolutions\":[16]}", "\"attn_resolutions\" lists 16"},
        {"{\"kind\":\"unet\",\"attn_resolutions\":\"7\"}", "\"attn_resolutions\""},
        {"{\"kind\":\"unet\",\"base_channels\":7}", "\"base_channels\" must be even"},
        {"{\"kind\":\"unet\",\"base_channels\":2}", "\"base_channels\""},
        {"{\"kind\":\"unet\",\"channel_mult\":[1,0]}", "\"channel_mult\"[1]"},
        {"{\"kind\":\"unet\",\"channel_mult\":[]}", "\"channel_mult\""},
        /* refused by range before the conversion to int (1e74 was undefined behaviour) */
        {"{\"kind\":\"unet\",\"channel_mult\":[1,1e74]}", "\"channel_mult\"[1] must be a non-negative integer up to"},
        {"{\"kind\":\"unet\",\"num_res_blocks\":0}", "\"num_res_blocks\""},
        {"{\"kind\":\"unet\",\"dropout\":1}", "\"dropout\""},
        {"{\"kind\":\"unet\",\"self_cond\":\"yes\"}", "\"self_cond\""},
        {"{\"kind\":\"unet\",\"in_channels\":0}", "\"in_channels\""},
        {"{\"kind\":\"unet\",\"num_classes\":-1}", "\"num_classes\""},
        {"{\"kind\":\"unet\",\"num_timesteps\":0}", "\"num_timesteps\""},
        {"{\"kind\":\"unet\",\"base_channel\":64}", "unknown key \"base_channel\""},
        {"{\"kind\":\"unet\",\"groups\":4,\"groups\":8}", "\"groups\" appears twice"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        nc_expect_bad_config(cases[i].json, cases[i].needle);
    /* an empty attention list leaves the middle block's attention only */
    ddpm_model *m = create("{\"kind\":\"unet\",\"attn_resolutions\":[]}");
    assert_null(ddpm_model_find(m, "down.2.attn.0.qkv.weight"));
    assert_non_null(ddpm_model_find(m, "mid.attn_1.qkv.weight"));
    ddpm_model_free(m);
}

/* ---- loading weights -------------------------------------------------------------------------- */

/* Writes the model's tensors (minus `drop`, plus an `extra` one if given) to a file. */
static const char *write_weights(ddpm_model *m, const char *file, const char *drop, const char *extra) {
    ddpm_tensor *t = calloc(m->n_tensors + 1, sizeof *t);
    size_t n = 0;
    for (size_t i = 0; i < m->n_tensors; i++) {
        const ddpm_param_info *p = &m->tensors[i];
        if (drop && strcmp(p->name, drop) == 0) continue;
        t[n] = (ddpm_tensor){.name = (char *)p->name, .dtype = DDPM_DT_F32, .ndim = p->ndim,
                             .data = ddpm_model_tensor_data(m, p)};
        memcpy(t[n].shape, p->shape, sizeof p->shape);
        n++;
    }
    if (extra)
        t[n++] = (ddpm_tensor){.name = (char *)extra, .dtype = DDPM_DT_F32, .ndim = 1, .shape = {4},
                               .data = m->params};
    const char *path = tu_tmp(file);
    assert_int_equal(ddpm_safetensors_write(path, t, n, NULL, NULL, 0), DDPM_OK);
    free(t);
    return path;
}

/* A small configuration with a given width and extra keys ("" or ",\"key\":value"). */
static ddpm_model *small(int base, int blocks, const char *extra) {
    char json[512];
    snprintf(json, sizeof json,
             "{\"kind\":\"unet\",\"in_channels\":1,\"height\":8,\"base_channels\":%d,"
             "\"channel_mult\":[1,2],\"num_res_blocks\":%d,\"heads\":2,\"dim_head\":4,\"groups\":4%s}",
             base, blocks, extra);
    return create(json);
}

static void test_load_errors(void **s) {
    (void)s;
    ddpm_model *m = small(8, 1, "");
    const char *full = write_weights(m, "full.safetensors", NULL, NULL);
    /* the round trip works */
    assert_int_equal(nc_load_file(m, full), DDPM_OK);
    /* a missing tensor, an extra tensor */
    nc_expect_load_error(m, write_weights(m, "missing.safetensors", "mid.attn_1.qkv.weight", NULL),
                         "tensor 'mid.attn_1.qkv.weight' of the unet model is missing");
    nc_expect_load_error(m, write_weights(m, "extra.safetensors", NULL, "up.1.block.2.conv1.weight"),
                         "'up.1.block.2.conv1.weight' is not part of the unet model");
    /* other configurations: wider (the first tensor differs), self-conditioned (conv_in takes
     * two images), class-conditional (one more tensor), more blocks (more tensors) */
    ddpm_model *o = small(16, 1, "");
    nc_expect_load_error(o, full, "tensor 'temb.dense.0.weight' has shape [32, 8], the model expects [64, 16]");
    ddpm_model_free(o);
    o = small(8, 1, ",\"self_cond\":true");
    nc_expect_load_error(o, full, "tensor 'conv_in.weight' has shape [8, 1, 3, 3], the model expects [8, 2, 3, 3]");
    const char *sc = write_weights(o, "sc.safetensors", NULL, NULL);
    nc_expect_load_error(m, sc, "tensor 'conv_in.weight' has shape [8, 2, 3, 3], the model expects [8, 1, 3, 3]");
    ddpm_model_free(o);
    o = small(8, 1, ",\"num_classes\":10");
    nc_expect_load_error(o, full, "tensor 'class_emb.weight' of the unet model is missing");
    nc_expect_load_error(m, write_weights(o, "classes.safetensors", NULL, NULL),
                         "'class_emb.weight' is not part of the unet model");
    ddpm_model_free(o);
    o = small(8, 2, "");
    nc_expect_load_error(o, full, "tensor 'down.0.block.1.norm1.weight' of the unet model is missing");
    nc_expect_load_error(m, write_weights(o, "blocks.safetensors", NULL, NULL),
                         "tensor 'up.1.block.1.norm1.weight' has shape [32], the model expects [24]");
    ddpm_model_free(o);
    ddpm_model_free(m);
}

/* ---- determinism, memory, errors ----------------------------------------------------------------- */

/* A model large enough to run on several threads (the tiny ones run on one), with dropout and
 * random weights (the initial ones have zeros where the paper's code starts at zero). */
static ddpm_model *threaded_model(int B) {
    ddpm_model *m = create("{\"kind\":\"unet\",\"in_channels\":1,\"height\":12,\"base_channels\":16,"
                           "\"channel_mult\":[1,2],\"num_res_blocks\":1,\"heads\":2,\"dim_head\":8,"
                           "\"groups\":4,\"dropout\":0.2}");
    ddpm_randn(2, DDPM_STREAM_USER, 0, 0, m->params, m->n_params);
    for (size_t i = 0; i < m->n_params; i++) m->params[i] *= 0.1f;
    assert_int_equal(ddpm_model_reserve(m, B), DDPM_OK);
    return m;
}

/* The statistics of every tape of the model, added up. */
static void tapes_stats(ddpm_model *m, ddpm_tape_stats *sum) {
    memset(sum, 0, sizeof *sum);
    ddpm_tape *tp;
    for (int k = 0; (tp = ddpm_model_tape(m, k)); k++) {
        ddpm_tape_stats st;
        ddpm_tape_get_stats(tp, &st);
        sum->n_nodes += st.n_nodes;
        sum->arena_bytes += st.arena_bytes;
        sum->arena_used += st.arena_used;
        sum->n_allocs += st.n_allocs;
    }
}

/* After the first step at a batch shape (and thread count), nothing is allocated; repeated runs
 * with a thread count are bitwise the same (dropout masks included), and runs with 1 and 2
 * threads agree to rounding. */
static void test_steady_state_and_threads(void **s) {
    (void)s;
    enum { B = 3 };
    ddpm_model *m = threaded_model(B);
    const size_t n = (size_t)B * m->sample_numel;
    float *x = malloc(sizeof(float) * n), *dout = malloc(sizeof(float) * n);
    float *out = malloc(sizeof(float) * n), *ev = malloc(sizeof(float) * n);
    float *out0 = malloc(sizeof(float) * n), *ev0 = malloc(sizeof(float) * n);
    float *g0 = malloc(sizeof(float) * m->n_params), *g1 = malloc(sizeof(float) * m->n_params);
    float *out1 = malloc(sizeof(float) * n);
    ddpm_randn(3, DDPM_STREAM_USER, 0, 0, x, n);
    ddpm_randn(3, DDPM_STREAM_USER, 1, 0, dout, n);
    int t[B] = {0, 500, 999};
    assert_non_null(ddpm_model_tape(m, 0));
    ddpm_model_input mi = {.x = x, .t = t, .B = B, .seed = 1, .step = 2};
    const int threads[3] = {2, 1, 2};
    size_t allocs_before = 0;
    for (int r = 0; r < 3; r++) {
        omp_set_num_threads(threads[r]);
        ddpm_tape_stats first = {0}, st;
        for (int step = 0; step < 2; step++) {
            mi.train = 1;
            assert_int_equal(m->ops->forward(m, &mi, out), DDPM_OK);
            memset(m->grads, 0, sizeof(float) * m->n_params);
            assert_int_equal(m->ops->backward(m, dout), DDPM_OK);
            mi.train = 0;
            assert_int_equal(m->ops->forward(m, &mi, ev), DDPM_OK);
            tapes_stats(m, &st);
            assert_int_equal(omp_get_max_threads(), threads[r]); /* the model leaves it alone */
            if (step == 0) {
                first = st;
                /* back to 2 threads: the tapes have seen both splits, nothing new */
                if (r == 2) assert_int_equal(st.n_allocs, allocs_before);
            } else {
                assert_int_equal(st.n_allocs, first.n_allocs);
                assert_int_equal(st.arena_bytes, first.arena_bytes);
                assert_int_equal(st.arena_used, first.arena_used);
            }
            if (r == 0 && step == 0) {
                memcpy(out0, out, sizeof(float) * n);
                memcpy(ev0, ev, sizeof(float) * n);
                memcpy(g0, m->grads, sizeof(float) * m->n_params);
            } else if (threads[r] == 2) {
                /* the same thread count: bitwise the same */
                assert_memory_equal(out0, out, sizeof(float) * n);
                assert_memory_equal(ev0, ev, sizeof(float) * n);
                assert_memory_equal(g0, m->grads, sizeof(float) * m->n_params);
            } else {
                if (step == 0) {
                    memcpy(out1, out, sizeof(float) * n);
                    memcpy(g1, m->grads, sizeof(float) * m->n_params);
                }
                assert_memory_equal(out1, out, sizeof(float) * n);
                assert_memory_equal(g1, m->grads, sizeof(float) * m->n_params);
                /* another thread count: the same to rounding (the batch is split differently,
                 * so the per-slice gradient sums are grouped differently) */
                tu_assert_close(out, out0, n, 1e-5, 1e-6 * tu_maxabs(out0, n), "outputs with 1 and 2 threads");
                tu_assert_close(ev, ev0, n, 1e-5, 1e-6 * tu_maxabs(ev0, n), "eval outputs with 1 and 2 threads");
                tu_assert_close(m->grads, g0, m->n_params, 1e-5, 1e-6 * tu_maxabs(g0, m->n_params),
                                "gradients with 1 and 2 threads");
            }
        }
        allocs_before = st.n_allocs;
    }
    omp_set_num_threads(1);
    printf("[unet] 1 vs 2 threads: largest output difference %.3g (of max %.3g), gradient difference "
           "%.3g (of max %.3g)\n", maxdiff(out1, out0, n), tu_maxabs(out0, n), maxdiff(g1, g0, m->n_params),
           tu_maxabs(g0, m->n_params));
    assert_true(memcmp(out0, ev0, sizeof(float) * n) != 0); /* dropout is on in training only */
    /* errors */
    int bad_t[B] = {0, 1000, 1};
    mi.t = bad_t;
    assert_int_equal(m->ops->forward(m, &mi, out), DDPM_ERR_INVALID);
    assert_non_null(strstr(ddpm_last_error(), "timestep 1000 outside the model's 0..999"));
    mi.t = t;
    mi.B = B + 1;
    assert_int_equal(m->ops->forward(m, &mi, out), DDPM_ERR_INVALID);
    assert_non_null(strstr(ddpm_last_error(), "reserved 3"));
    free(x);
    free(dout);
    free(out);
    free(ev);
    free(out0);
    free(ev0);
    free(g0);
    free(g1);
    free(out1);
    ddpm_model_free(m);
}

/* Eval forwards run in chunks of 8 items (per thread): a batch of 70 gives, with 1 and with 2
 * threads, what the training forward of the whole batch gives, item by item, bit for bit; so
 * does one item alone on 2 threads (on a CPU with AVX2 + FMA: the own kernels). */
static void test_eval_chunks(void **s) {
    (void)s;
    enum { B = 70 };
    ddpm_model *m = fixture_model("b/", B, NULL, 0);
    const size_t d = m->sample_numel;
    float *x = malloc(sizeof(float) * B * d), *sc = malloc(sizeof(float) * B * d);
    float *cond = calloc(B * 3, sizeof(float)), *a = malloc(sizeof(float) * B * d);
    float *b = malloc(sizeof(float) * B * d), *c = malloc(sizeof(float) * B * d);
    int t[B];
    ddpm_randn(4, DDPM_STREAM_USER, 0, 0, x, B * d);
    ddpm_randn(4, DDPM_STREAM_USER, 1, 0, sc, B * d);
    for (int i = 0; i < B; i++) {
        t[i] = (i * 37) % 500;
        if (i % 4) cond[i * 3 + i % 3] = 1.0f;
    }
    ddpm_model_input mi = {.x = x, .t = t, .cond = cond, .self_cond = sc, .B = B, .train = 0};
    assert_int_equal(m->ops->forward(m, &mi, a), DDPM_OK); /* 8 chunks of 8, one of 6 */
    omp_set_num_threads(2);
    assert_int_equal(m->ops->forward(m, &mi, c), DDPM_OK); /* 2 slices of 35: 4 x 8 + 3 */
    omp_set_num_threads(1);
    mi.train = 1;
    assert_int_equal(m->ops->forward(m, &mi, b), DDPM_OK);
    /* The same bits per item: every product an item's output depends on is computed by the own
     * kernel, row by row (OpenBLAS's sgemm rounded a row by where it fell in its blocking, and
     * by its thread count: last-bit differences on Zen 3) */
    printf("[unet] eval chunks and slices vs one forward: largest difference %.3g, %.3g (of max %.3g)\n",
           maxdiff(a, b, B * d), maxdiff(c, b, B * d), tu_maxabs(b, B * d));
    if (!ddpm_mk_fast()) { /* the BLAS attention: to rounding */
        tu_assert_close(a, b, B * d, 1e-5, 1e-6, "eval in chunks vs one training forward");
        tu_assert_close(c, b, B * d, 1e-5, 1e-6, "eval on 2 threads vs one training forward");
        goto done;
    }
    assert_memory_equal(a, b, sizeof(float) * B * d);
    assert_memory_equal(c, b, sizeof(float) * B * d);
    /* and one item alone on 2 threads (one slice: the ops use both threads) */
    omp_set_num_threads(2);
    ddpm_model_input one = {.x = x + 5 * d, .t = t + 5, .cond = cond + 5 * 3, .self_cond = sc + 5 * d,
                            .B = 1, .train = 0};
    assert_int_equal(m->ops->forward(m, &one, c), DDPM_OK);
    omp_set_num_threads(1);
    assert_memory_equal(c, a + 5 * d, sizeof(float) * d);
done:
    free(x);
    free(sc);
    free(cond);
    free(a);
    free(b);
    free(c);
    ddpm_model_free(m);
}

/* sum(out * dout) in double */
static double objective(ddpm_model *m, const ddpm_model_input *mi, const float *dout, float *out, size_t n) {
    assert_int_equal(m->ops->forward(m, mi, out), DDPM_OK);
    double acc = 0;
    for (size_t i = 0; i < n; i++) acc += (double)out[i] * dout[i];
    return acc;
}

/* The non-square network's gradient against finite differences (every third tensor, three
 * entries each; float32 central differences with h = 1e-2). */
static void test_nonsquare_finite_differences(void **s) {
    (void)s;
    enum { B = 2 };
    ddpm_model *m = fixture_model("c/", B, NULL, 0);
    inputs in = fixture_inputs("c/", m, B);
    const size_t n = (size_t)B * in.d;
    float *o1 = malloc(sizeof(float) * n);
    ddpm_model_input mi = {.x = in.x, .t = in.t, .B = B, .train = 1};
    objective(m, &mi, in.dout, o1, n);
    memset(m->grads, 0, sizeof(float) * m->n_params);
    assert_int_equal(m->ops->backward(m, in.dout), DDPM_OK);
    int checked = 0, bad = 0, bad_if_wrong = 0;
    for (size_t ti = 0; ti < m->n_tensors; ti += 3) {
        const ddpm_param_info *p = &m->tensors[ti];
        for (size_t k = 0; k < p->numel; k += 1 + p->numel / 3) {
            float *w = m->params + p->offset + k;
            const float w0 = *w, h = 1e-2f;
            *w = w0 + h;
            const double lp = objective(m, &mi, in.dout, o1, n);
            *w = w0 - h;
            const double lm = objective(m, &mi, in.dout, o1, n);
            *w = w0;
            const double fd = (lp - lm) / (2.0 * h), an = m->grads[p->offset + k];
            const double tol = 2e-3 + 2e-2 * fabs(fd);
            if (fabs(fd - an) > tol) {
                bad++;
                print_message("%s[%zu]: finite difference %g, backward %g\n", p->name, k, fd, an);
            }
            bad_if_wrong += fabs(fd - 1.1 * an) > tol;
            checked++;
        }
    }
    printf("[unet] 16x24: %d finite-difference checks, %d off\n", checked, bad);
    assert_int_equal(bad, 0);
    assert_true(bad_if_wrong > checked / 4); /* a 10% error would show */
    free(o1);
    inputs_free(&in);
    ddpm_model_free(m);
}

/* Dropout: masks are a function of (seed, step, item), off in eval mode; the gradient through
 * it agrees with finite differences. */
static void test_dropout(void **s) {
    (void)s;
    enum { B = 2 };
    ddpm_model *m = fixture_model("a/", B, "dropout", 0.3);
    assert_non_null(strstr(m->config_json, "\"dropout\":0.3"));
    inputs in = fixture_inputs("a/", m, B);
    const size_t n = (size_t)B * in.d;
    float *o1 = malloc(sizeof(float) * n), *o2 = malloc(sizeof(float) * n);
    ddpm_model_input mi = {.x = in.x, .t = in.t, .B = B, .train = 1, .seed = 5, .step = 7};
    assert_int_equal(m->ops->forward(m, &mi, o1), DDPM_OK);
    assert_int_equal(m->ops->forward(m, &mi, o2), DDPM_OK);
    assert_memory_equal(o1, o2, sizeof(float) * n);
    mi.step = 8;
    assert_int_equal(m->ops->forward(m, &mi, o2), DDPM_OK);
    assert_true(memcmp(o1, o2, sizeof(float) * n) != 0);
    mi.step = 7;
    mi.seed = 6;
    assert_int_equal(m->ops->forward(m, &mi, o2), DDPM_OK);
    assert_true(memcmp(o1, o2, sizeof(float) * n) != 0);
    /* eval: no dropout, PyTorch's output of the same weights */
    mi.train = 0;
    assert_int_equal(m->ops->forward(m, &mi, o2), DDPM_OK);
    cmp_ref("a/out", o2, n);
    assert_true(memcmp(o1, o2, sizeof(float) * n) != 0);

    /* finite differences through the masks (fixed by seed and step) */
    mi.train = 1;
    mi.seed = 5;
    objective(m, &mi, in.dout, o1, n);
    memset(m->grads, 0, sizeof(float) * m->n_params);
    assert_int_equal(m->ops->backward(m, in.dout), DDPM_OK);
    int checked = 0, bad = 0, bad_if_wrong = 0;
    for (size_t ti = 0; ti < m->n_tensors; ti += 3) {
        const ddpm_param_info *p = &m->tensors[ti];
        for (size_t k = 0; k < p->numel; k += 1 + p->numel / 3) {
            float *w = m->params + p->offset + k;
            const float w0 = *w, h = 1e-2f;
            *w = w0 + h;
            const double lp = objective(m, &mi, in.dout, o1, n);
            *w = w0 - h;
            const double lm = objective(m, &mi, in.dout, o1, n);
            *w = w0;
            const double fd = (lp - lm) / (2.0 * h), an = m->grads[p->offset + k];
            const double tol = 2e-3 + 2e-2 * fabs(fd);
            if (fabs(fd - an) > tol) {
                bad++;
                print_message("%s[%zu]: finite difference %g, backward %g\n", p->name, k, fd, an);
            }
            bad_if_wrong += fabs(fd - 1.1 * an) > tol;
            checked++;
        }
    }
    printf("[unet] dropout 0.3: %d finite-difference checks, %d off\n", checked, bad);
    assert_int_equal(bad, 0);
    assert_true(bad_if_wrong > checked / 4); /* a 10% error would show */
    free(o1);
    free(o2);
    inputs_free(&in);
    ddpm_model_free(m);
}

/* ---- training and sampling ----------------------------------------------------------------------- */

/* 8x8 patterns: stripes both ways, a checkerboard, a centred square; class = pattern. */
static void patterns(float *x, float *cond, int n) {
    for (int i = 0; i < n; i++) {
        const int k = i % 4;
        for (int r = 0; r < 8; r++)
            for (int c = 0; c < 8; c++) {
                int on = k == 0 ? r % 2 : k == 1 ? c % 2 : k == 2 ? (r + c) % 2 : (r >= 2 && r < 6 && c >= 2 && c < 6);
                x[(size_t)i * 64 + r * 8 + c] = on ? 0.9f : -0.9f;
            }
        if (cond)
            for (int j = 0; j < 4; j++) cond[i * 4 + j] = j == k ? 1.0f : 0.0f;
    }
}

static void train_run(const char *json, int self_cond, double *first, double *last) {
    enum { N = 64, STEPS = 200 };
    ddpm_schedule_config sc;
    ddpm_schedule_config_default(&sc, DDPM_SCHEDULE_LINEAR, 200);
    sc.beta_end = 0.05; /* 200 steps: abar_T ~ 0.007 */
    ddpm_schedule sch;
    assert_int_equal(ddpm_schedule_init(&sch, &sc), DDPM_OK);
    ddpm_model *m = create(json);
    float *x = malloc(sizeof(float) * N * 64), *cond = malloc(sizeof(float) * N * 4);
    patterns(x, cond, N);
    ddpm_train_config tc;
    ddpm_train_config_default(&tc);
    tc.batch_size = 8;
    tc.lr = 2e-3;
    tc.total_steps = STEPS;
    tc.seed = 7;
    tc.ema_decay = 0;
    tc.self_cond = self_cond;
    tc.cond_drop_prob = m->cond_dim ? 0.2f : 0.0f;
    ddpm_train_data td = {.x = x, .cond = m->cond_dim ? cond : NULL, .n = N};
    ddpm_trainer tr;
    if (ddpm_trainer_init(&tr, m, &sch, &tc, &td)) fail_msg("%s", ddpm_last_error());
    *first = *last = 0;
    for (int i = 0; i < STEPS; i++) {
        if (ddpm_trainer_step(&tr)) fail_msg("step %d: %s", i, ddpm_last_error());
        if (i < 10) *first += tr.last_loss / 10.0;
        if (i >= STEPS - 50) *last += tr.last_loss / 50.0;
    }
    /* sampling from the trained model: guided, self-conditioned, a few DDIM steps */
    ddpm_model_sampler ms;
    assert_int_equal(ddpm_model_sampler_init(&ms, m, 4), DDPM_OK);
    ms.cond = cond;
    ms.guidance = m->cond_dim ? 1.0f : 0.0f;
    ddpm_sample_opts so;
    ddpm_sample_opts_default(&so);
    so.sampler = DDPM_SAMPLER_DDIM;
    so.steps = 10;
    float xs[4 * 64];
    assert_int_equal(ddpm_sample_loop(&sch, &so, ddpm_model_denoise, &ms, 4, 64, xs), DDPM_OK);
    for (int i = 0; i < 4 * 64; i++) assert_true(isfinite(xs[i]));
    ddpm_model_sampler_free(&ms);
    /* a checkpoint of it reloads as the same model */
    ddpm_checkpoint ck;
    nc_checkpoint_roundtrip(&tr, "unet_ckpt.safetensors", &ck);
    ddpm_checkpoint_free(&ck);
    ddpm_trainer_free(&tr);
    ddpm_model_free(m);
    ddpm_schedule_free(&sch);
    free(x);
    free(cond);
}

static void test_training_learns(void **s) {
    (void)s;
    double first, last;
    train_run("{\"kind\":\"unet\",\"in_channels\":1,\"height\":8,\"base_channels\":8,"
              "\"channel_mult\":[1,2],\"num_res_blocks\":1,\"heads\":2,\"dim_head\":8,\"groups\":4,"
              "\"num_timesteps\":200,\"num_classes\":4,\"self_cond\":true,\"dropout\":0.1}",
              1, &first, &last);
    printf("[unet] training (classes, self-conditioning, dropout): mean loss of the first 10 steps "
           "%.4f, of the last 50 %.4f\n", first, last);
    assert_true(first > 0.7);
    assert_true(last < 0.35 * first);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_vs_pytorch_a),
        cmocka_unit_test(test_vs_pytorch_b),
        cmocka_unit_test(test_vs_pytorch_nonsquare),
        cmocka_unit_test(test_nonsquare_finite_differences),
        cmocka_unit_test(test_adam_steps),
        cmocka_unit_test(test_default_config),
        cmocka_unit_test(test_bad_configs),
        cmocka_unit_test(test_load_errors),
        cmocka_unit_test(test_steady_state_and_threads),
        cmocka_unit_test(test_eval_chunks),
        cmocka_unit_test(test_dropout),
        cmocka_unit_test(test_training_learns),
    };
    tu_use_fixture("unet.safetensors", &FX);
    return cmocka_run_group_tests(tests, setup, teardown);
}

/* test_tape.c - the tape: composite networks against PyTorch (forward, every parameter and
 * input gradient, batch-norm running statistics, eval mode), a finite-difference check through
 * the ops the composites do not use, memory reuse, sticky errors and grad bookkeeping.
 *
 * Tolerance against PyTorch (float64 references): |got - ref| <= 1e-4 |ref| + 1e-5 max|ref|. */
#include "testutil.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define RTOL 1e-4
#define ATOL_REL 1e-5

static ddpm_safetensors FX;
static tu_worst worst;

static int teardown_fx(void **state) {
    tu_worst_print("tape", &worst);
    return tu_fixture_teardown(state);
}

static void cmp_fixture(const char *cs, const char *name, const float *got, size_t n) {
    char key[128];
    snprintf(key, sizeof key, "%s/%s", cs, name);
    float *ref = tu_tensor(&FX, key, n, NULL);
    tu_cmp_torch(&worst, key, got, ref, n, RTOL, ATOL_REL);
    free(ref);
}

static float *fx(const char *cs, const char *name, size_t n) {
    char key[128];
    snprintf(key, sizeof key, "%s/%s", cs, name);
    return tu_tensor(&FX, key, n, NULL);
}

/* ---- a model's parameters: one table drives the views, the loading and the checks ---- */

typedef struct {
    const char *name;
    int ndim;
    int shape[4];
} pspec;

typedef struct {
    float *params, *grads; /* one contiguous buffer each, same layout */
    size_t total;
    ddpm_param p[24];
    int n;
} model;

static size_t spec_numel(const pspec *s) {
    size_t n = 1;
    for (int i = 0; i < s->ndim; i++) n *= (size_t)s->shape[i];
    return n;
}

/* Views into two contiguous buffers; values from fixture case cs (or random if cs is NULL). */
static void model_init(model *m, const pspec *specs, int n, const char *cs) {
    memset(m, 0, sizeof *m);
    assert_true(n <= 24);
    for (int i = 0; i < n; i++) m->total += spec_numel(&specs[i]);
    m->params = calloc(m->total, sizeof(float));
    m->grads = calloc(m->total, sizeof(float));
    assert_true(m->params && m->grads);
    size_t off = 0;
    for (int i = 0; i < n; i++) {
        const size_t k = spec_numel(&specs[i]);
        ddpm_param *p = &m->p[i];
        p->w = m->params + off;
        p->g = m->grads + off;
        p->ndim = specs[i].ndim;
        memcpy(p->shape, specs[i].shape, sizeof p->shape);
        if (cs) {
            char key[128];
            snprintf(key, sizeof key, "%s/%s", cs, specs[i].name);
            float *v = tu_tensor(&FX, key, k, NULL);
            memcpy(p->w, v, k * sizeof(float));
            free(v);
        }
        off += k;
    }
    m->n = n;
}

static void model_free(model *m) {
    free(m->params);
    free(m->grads);
}

/* zero_like_scale: for a gradient that is zero in exact arithmetic (a conv bias feeding a
 * training-mode batch norm, whose batch mean cancels it), the absolute scale it is measured
 * against: relative error means nothing there. */
static void check_grads(const model *m, const pspec *specs, const char *cs, int zero_param,
                        double zero_like_scale) {
    for (int i = 0; i < m->n; i++) {
        char nm[64];
        snprintf(nm, sizeof nm, "d_%s", specs[i].name);
        if (i == zero_param) {
            float *ref = fx(cs, nm, spec_numel(&specs[i]));
            assert_true(tu_maxabs(ref, spec_numel(&specs[i])) < 1e-12);
            tu_assert_close(m->p[i].g, ref, spec_numel(&specs[i]), 0, 1e-5 * zero_like_scale, nm);
            free(ref);
            continue;
        }
        cmp_fixture(cs, nm, m->p[i].g, spec_numel(&specs[i]));
    }
}

/* ---- composite A: conv -> groupnorm -> silu -> residual -> time embedding -> attention ---- */

enum { A_W1, A_B1, A_G1, A_BE1, A_WL, A_BL, A_WQKV, A_BQKV, A_WOUT, A_BOUT };
static const pspec SPEC_A[] = {
    {"w1", 4, {8, 3, 3, 3}}, {"b1", 1, {8}},   {"g1", 1, {8}},       {"be1", 1, {8}},
    {"wl", 2, {8, 16}},      {"bl", 1, {8}},   {"wqkv", 2, {24, 8}}, {"bqkv", 1, {24}},
    {"wout", 2, {8, 8}},     {"bout", 1, {8}},
};

static ddpm_var *net_a(ddpm_tape *t, const model *m, const float *x, const float *ts,
                       ddpm_var **in) {
    const ddpm_param *P = m->p;
    *in = ddpm_tape_input(t, x, 4, (int[]){2, 3, 6, 5}, 1);
    ddpm_var *h1 = ddpm_tape_conv2d(t, *in, &P[A_W1], &P[A_B1], 1, 1);
    ddpm_var *h = ddpm_tape_silu(t, ddpm_tape_groupnorm(t, h1, 4, &P[A_G1], &P[A_BE1]));
    h = ddpm_tape_add(t, h, h1);
    ddpm_var *temb = ddpm_tape_timestep_embedding(t, ts, 2, 16);
    temb = ddpm_tape_silu(t, ddpm_tape_linear(t, temb, &P[A_WL], &P[A_BL]));
    ddpm_var *h4 = ddpm_tape_channel_add(t, h, temb);
    ddpm_var *h5 = ddpm_tape_attention(t, h4, &P[A_WQKV], &P[A_BQKV], &P[A_WOUT], &P[A_BOUT], 2);
    return ddpm_tape_mean(t, ddpm_tape_add(t, h5, h4));
}

static void test_composite_a(void **s) {
    (void)s;
    model m;
    model_init(&m, SPEC_A, 10, "tape_a");
    float *x = fx("tape_a", "x", 2 * 3 * 6 * 5), *ts = fx("tape_a", "t", 2);
    float *dout = fx("tape_a", "dout", 1);
    ddpm_tape *t = ddpm_tape_new();
    assert_non_null(t);
    ddpm_tape_reset(t);
    ddpm_var *in;
    ddpm_var *out = net_a(t, &m, x, ts, &in);
    assert_non_null(out);
    assert_int_equal(out->numel, 1);
    cmp_fixture("tape_a", "out", out->data, 1);
    assert_int_equal(ddpm_tape_backward(t, out, dout), DDPM_OK);
    check_grads(&m, SPEC_A, "tape_a", -1, 0);
    /* The input's gradient arrives through the conv, whose output feeds two branches. */
    assert_non_null(in->grad);
    cmp_fixture("tape_a", "d_x", in->grad, 180);
    ddpm_tape_free(t);
    free(x);
    free(ts);
    free(dout);
    model_free(&m);
}

/* ---- composite B: a ContextUnet-like chain over the remaining ops ---- */

enum {
    B_WA,
    B_BA,
    B_GA,
    B_BEA,
    B_WB,
    B_BB,
    B_WC,
    B_BC,
    B_WL,
    B_BL,
    B_WT,
    B_BT,
    B_WD,
    B_BD,
    B_WE,
    B_BE
};
static const pspec SPEC_B[] = {
    {"wa", 4, {4, 1, 3, 3}},  {"ba", 1, {4}}, {"ga", 1, {4}},          {"bea", 1, {4}},
    {"wb", 4, {6, 4, 4, 4}},  {"bb", 1, {6}}, {"wc", 4, {6, 6, 2, 2}}, {"bc", 1, {6}},
    {"wl", 2, {6, 3}},        {"bl", 1, {6}}, {"wt", 2, {6, 8}},       {"bt", 1, {6}},
    {"wd", 4, {12, 4, 4, 4}}, {"bd", 1, {4}}, {"we", 4, {2, 5, 1, 1}}, {"be", 1, {2}},
};

typedef struct {
    ddpm_var *x, *c, *out;
} net_b_vars;

static net_b_vars net_b(ddpm_tape *t, const model *m, const float *x, const float *c,
                        const float *ts, float *rm, float *rv) {
    const ddpm_param *P = m->p;
    net_b_vars v;
    v.x = ddpm_tape_input(t, x, 4, (int[]){2, 1, 8, 8}, 1);
    v.c = ddpm_tape_input(t, c, 2, (int[]){2, 3}, 1);
    ddpm_var *h = ddpm_tape_conv2d(t, v.x, &P[B_WA], &P[B_BA], 1, 1);
    h = ddpm_tape_gelu(t, ddpm_tape_batchnorm(t, h, &P[B_GA], &P[B_BEA], rm, rv));
    ddpm_var *d = ddpm_tape_maxpool2d(t, h, 2, 0);
    ddpm_var *e = ddpm_tape_relu(t, ddpm_tape_conv2d(t, d, &P[B_WB], &P[B_BB], 2, 1));
    ddpm_var *vv = ddpm_tape_gelu(t, ddpm_tape_avgpool2d(t, e, 2, 2));
    ddpm_var *u = ddpm_tape_relu(t, ddpm_tape_conv_transpose2d(t, vv, &P[B_WC], &P[B_BC], 2, 0));
    ddpm_var *cemb = ddpm_tape_linear(t, v.c, &P[B_WL], &P[B_BL]);
    ddpm_var *temb =
        ddpm_tape_linear(t, ddpm_tape_timestep_embedding(t, ts, 2, 8), &P[B_WT], &P[B_BT]);
    temb = ddpm_tape_reshape(t, temb, 4, (int[]){2, 6, 1, 1});
    ddpm_var *u2 = ddpm_tape_channel_add(t, ddpm_tape_channel_mul(t, u, cemb), temb);
    ddpm_var *u3 =
        ddpm_tape_conv_transpose2d(t, ddpm_tape_concat(t, u2, e), &P[B_WD], &P[B_BD], 2, 1);
    ddpm_var *r = ddpm_tape_scale(t, ddpm_tape_add(t, u3, d), 1.0f / 1.414f);
    ddpm_var *up = ddpm_tape_upsample_nearest(t, r, 2);
    ddpm_var *sl = ddpm_tape_slice_channels(t, ddpm_tape_concat(t, up, h), 2, 5);
    v.out = ddpm_tape_conv2d(t, sl, &P[B_WE], &P[B_BE], 1, 0);
    return v;
}

static void test_composite_b(void **s) {
    (void)s;
    model m;
    model_init(&m, SPEC_B, 16, "tape_b");
    float *x = fx("tape_b", "x", 128), *c = fx("tape_b", "c", 6), *ts = fx("tape_b", "t", 2);
    float *rm = fx("tape_b", "rm0", 4), *rv = fx("tape_b", "rv0", 4);
    float *dout = fx("tape_b", "dout", 2 * 2 * 8 * 8);
    ddpm_tape *t = ddpm_tape_new();
    ddpm_tape_reset(t);
    net_b_vars v = net_b(t, &m, x, c, ts, rm, rv);
    assert_non_null(v.out);
    assert_int_equal(v.out->ndim, 4);
    assert_int_equal(v.out->shape[1], 2);
    cmp_fixture("tape_b", "out", v.out->data, v.out->numel);
    cmp_fixture("tape_b", "rm", rm, 4);
    cmp_fixture("tape_b", "rv", rv, 4);
    assert_int_equal(ddpm_tape_backward(t, v.out, dout), DDPM_OK);
    check_grads(&m, SPEC_B, "tape_b", B_BA, tu_maxabs(m.p[B_WA].g, 36));
    cmp_fixture("tape_b", "d_x", v.x->grad, 128);
    cmp_fixture("tape_b", "d_c", v.c->grad, 6);

    /* Eval mode: running statistics, nothing recorded, no gradient possible. */
    ddpm_tape_set_training(t, 0);
    ddpm_tape_reset(t);
    float rm2[4], rv2[4];
    memcpy(rm2, rm, sizeof rm2);
    memcpy(rv2, rv, sizeof rv2);
    v = net_b(t, &m, x, c, ts, rm, rv);
    assert_non_null(v.out);
    cmp_fixture("tape_b", "out_eval", v.out->data, v.out->numel);
    assert_memory_equal(rm, rm2, sizeof rm2); /* eval leaves the running statistics alone */
    assert_memory_equal(rv, rv2, sizeof rv2);
    ddpm_tape_stats st;
    ddpm_tape_get_stats(t, &st);
    assert_int_equal(st.n_nodes, 0);
    assert_false(v.out->requires_grad);
    assert_int_equal(ddpm_tape_backward(t, v.out, dout), DDPM_ERR_INVALID);
    assert_non_null(strstr(ddpm_last_error(), "does not require grad"));

    ddpm_tape_free(t);
    free(x);
    free(c);
    free(ts);
    free(rm);
    free(rv);
    free(dout);
    model_free(&m);
}

/* After the first training step with a batch shape the tape allocates nothing, and every step
 * gives the same answer (gradients zeroed in one memset: the contiguous buffer). */
static void test_no_allocation_after_first_step(void **s) {
    (void)s;
    model m;
    model_init(&m, SPEC_B, 16, "tape_b");
    float *x = fx("tape_b", "x", 128), *c = fx("tape_b", "c", 6), *ts = fx("tape_b", "t", 2);
    float *dout = fx("tape_b", "dout", 256);
    float rm[4] = {0}, rv[4] = {1, 1, 1, 1};
    float *g1 = malloc(m.total * sizeof(float));
    ddpm_tape *t = ddpm_tape_new();
    ddpm_tape_stats first = {0}, st;
    for (int step = 0; step < 4; step++) {
        memset(m.grads, 0, m.total * sizeof(float));
        ddpm_tape_reset(t);
        net_b_vars v = net_b(t, &m, x, c, ts, rm, rv);
        assert_non_null(v.out);
        assert_int_equal(ddpm_tape_backward(t, v.out, dout), DDPM_OK);
        ddpm_tape_get_stats(t, &st);
        if (step == 0) {
            first = st;
            memcpy(g1, m.grads, m.total * sizeof(float));
        } else {
            assert_int_equal(st.n_allocs, first.n_allocs);
            assert_int_equal(st.arena_used, first.arena_used);
            assert_int_equal(st.arena_bytes, first.arena_bytes);
            assert_int_equal(st.n_nodes, first.n_nodes);
            /* Only the running statistics differ between steps; the batch statistics and
             * therefore the gradients do not. */
            assert_memory_equal(g1, m.grads, m.total * sizeof(float));
        }
    }
    ddpm_tape_free(t);
    free(g1);
    free(x);
    free(c);
    free(ts);
    free(dout);
    model_free(&m);
}

/* Activations larger than one arena block: earlier vars stay valid while the arena grows. And
 * the backward recycles the gradients of intermediate vars: 20 activations, not 20 gradients. */
static void test_arena_growth(void **s) {
    (void)s;
    const int B = 2, C = 8, H = 48, W = 40;
    const size_t n = (size_t)B * C * H * W; /* 123 KB per var: 20 vars span several blocks */
    float *x = malloc(n * sizeof(float));
    for (size_t i = 0; i < n; i++) x[i] = (float)((i * 7919) % 1000) / 500.0f - 1.0f;
    ddpm_tape *t = ddpm_tape_new();
    for (int rep = 0; rep < 2; rep++) {
        ddpm_tape_reset(t);
        ddpm_var *vars[20];
        vars[0] = ddpm_tape_input(t, x, 4, (int[]){B, C, H, W}, 1);
        for (int i = 1; i < 20; i++) vars[i] = ddpm_tape_scale(t, vars[i - 1], 0.5f);
        ddpm_var *out = ddpm_tape_mean(t, vars[19]);
        assert_non_null(out);
        for (int i = 0; i < 20; i++) {
            const float f = ldexpf(1.0f, -i);
            for (size_t k = 0; k < n; k += 997) assert_true(vars[i]->data[k] == x[k] * f);
        }
        assert_int_equal(ddpm_tape_backward(t, out, NULL), DDPM_OK);
        const float g = ldexpf(1.0f, -19) / (float)n;
        for (size_t k = 0; k < n; k += 991) assert_true(fabsf(vars[0]->grad[k] - g) <= 1e-6f * g);
    }
    ddpm_tape_stats st;
    ddpm_tape_get_stats(t, &st);
    assert_true(st.arena_bytes > ((size_t)1 << 20));
    assert_true(st.arena_used >= 20 * n * sizeof(float));
    assert_true(st.arena_used < 24 * n * sizeof(float));
    free(x);
    ddpm_tape_free(t);
}

/* The fused batch norm + GELU equals the two ops bit for bit: output, running statistics, and
 * every gradient, in training and in eval mode (odd sizes: the vector loops' tails too). */
static void test_batchnorm_gelu_fused(void **s) {
    (void)s;
    enum { B = 3, C = 5, H = 6, W = 7, N = B * C * H * W };
    float x[N], dout[N], gam[C], bet[C];
    for (int i = 0; i < N; i++) {
        x[i] = (float)((i * 7919) % 1013) / 300.0f - 1.5f + 0.2f * (float)((i / (H * W)) % C);
        dout[i] = (float)((i * 104729) % 997) / 500.0f - 1.0f;
    }
    for (int c = 0; c < C; c++) gam[c] = 0.5f + 0.3f * c, bet[c] = 0.1f * c - 0.2f;
    for (int training = 0; training < 2; training++) {
        float out[2][N], dx[2][N], dg[2][C], db[2][C], rm[2][C], rv[2][C];
        for (int fused = 0; fused < 2; fused++) {
            for (int c = 0; c < C; c++) dg[fused][c] = db[fused][c] = 0, rm[fused][c] = 0.1f * c, rv[fused][c] = 1.0f + 0.2f * c;
            ddpm_param pg = {gam, dg[fused], 1, {C}}, pb = {bet, db[fused], 1, {C}};
            ddpm_tape *t = ddpm_tape_new();
            ddpm_tape_set_training(t, training);
            ddpm_tape_set_grad(t, 1);
            ddpm_var *in = ddpm_tape_input(t, x, 4, (int[]){B, C, H, W}, 1);
            ddpm_var *y = fused ? ddpm_tape_batchnorm_gelu(t, in, &pg, &pb, rm[fused], rv[fused])
                                : ddpm_tape_gelu(t, ddpm_tape_batchnorm(t, in, &pg, &pb, rm[fused], rv[fused]));
            assert_non_null(y);
            memcpy(out[fused], y->data, sizeof out[fused]);
            assert_int_equal(ddpm_tape_backward(t, y, dout), DDPM_OK);
            memcpy(dx[fused], in->grad, sizeof dx[fused]);
            ddpm_tape_free(t);
        }
        assert_memory_equal(out[0], out[1], sizeof out[0]);
        assert_memory_equal(dx[0], dx[1], sizeof dx[0]);
        assert_memory_equal(dg[0], dg[1], sizeof dg[0]);
        assert_memory_equal(db[0], db[1], sizeof db[0]);
        assert_memory_equal(rm[0], rm[1], sizeof rm[0]);
        assert_memory_equal(rv[0], rv[1], sizeof rv[0]);
        float nz = 0;
        for (int i = 0; i < N; i++) nz += fabsf(dx[1][i]);
        assert_true(nz > 0); /* the gradient is not trivially zero */
    }
}

/* The fused group norm + SiLU equals the two ops bit for bit: output and every gradient (odd
 * sizes, 2 groups of 3 channels, eps 1e-6 as diffusers'). */
static void test_groupnorm_silu_fused(void **s) {
    (void)s;
    enum { B = 3, C = 6, H = 5, W = 7, N = B * C * H * W };
    float x[N], dout[N], gam[C], bet[C];
    for (int i = 0; i < N; i++) {
        x[i] = (float)((i * 7919) % 1013) / 300.0f - 1.5f + 0.3f * (float)((i / (H * W)) % C);
        dout[i] = (float)((i * 104729) % 997) / 500.0f - 1.0f;
    }
    for (int c = 0; c < C; c++) gam[c] = 0.5f + 0.3f * c, bet[c] = 0.1f * c - 0.2f;
    float out[2][N], dx[2][N], dg[2][C], db[2][C];
    for (int fused = 0; fused < 2; fused++) {
        for (int c = 0; c < C; c++) dg[fused][c] = db[fused][c] = 0;
        ddpm_param pg = {gam, dg[fused], 1, {C}}, pb = {bet, db[fused], 1, {C}};
        ddpm_tape *t = ddpm_tape_new();
        ddpm_var *in = ddpm_tape_input(t, x, 4, (int[]){B, C, H, W}, 1);
        ddpm_var *y = fused ? ddpm_tape_groupnorm_silu(t, in, 2, 1e-6f, &pg, &pb)
                            : ddpm_tape_silu(t, ddpm_tape_groupnorm_eps(t, in, 2, 1e-6f, &pg, &pb));
        assert_non_null(y);
        memcpy(out[fused], y->data, sizeof out[fused]);
        assert_int_equal(ddpm_tape_backward(t, y, dout), DDPM_OK);
        memcpy(dx[fused], in->grad, sizeof dx[fused]);
        ddpm_tape_free(t);
    }
    assert_memory_equal(out[0], out[1], sizeof out[0]);
    assert_memory_equal(dx[0], dx[1], sizeof dx[0]);
    assert_memory_equal(dg[0], dg[1], sizeof dg[0]);
    assert_memory_equal(db[0], db[1], sizeof db[0]);
    float nz = 0;
    for (int i = 0; i < N; i++) nz += fabsf(dx[1][i]);
    assert_true(nz > 0);
}

/* ---- errors and bookkeeping ---- */

static void test_sticky_errors(void **s) {
    (void)s;
    float w[4 * 3 * 3 * 3] = {0}, g[4 * 3 * 3 * 3], x[2 * 5 * 4 * 4] = {0};
    ddpm_param P = {w, g, 4, {4, 3, 3, 3}};
    ddpm_tape *t = ddpm_tape_new();
    ddpm_tape_reset(t);
    ddpm_var *in = ddpm_tape_input(t, x, 4, (int[]){2, 5, 4, 4}, 0);
    assert_non_null(in);
    ddpm_var *h = ddpm_tape_conv2d(t, in, &P, NULL, 1, 1);
    assert_null(h);
    assert_int_equal(ddpm_tape_status(t), DDPM_ERR_INVALID);
    assert_non_null(strstr(ddpm_last_error(), "5 channels"));
    char first[256];
    snprintf(first, sizeof first, "%s", ddpm_last_error());
    /* Later ops pass the failure along and keep the first message. */
    h = ddpm_tape_silu(t, h);
    assert_null(h);
    assert_null(ddpm_tape_groupnorm(t, in, 3, NULL, NULL));
    assert_string_equal(ddpm_last_error(), first);
    assert_int_equal(ddpm_tape_backward(t, h, NULL), DDPM_ERR_INVALID);
    /* A reset clears it. */
    ddpm_tape_reset(t);
    assert_int_equal(ddpm_tape_status(t), DDPM_OK);
    in = ddpm_tape_input(t, x, 4, (int[]){2, 5, 4, 4}, 0);
    assert_null(ddpm_tape_groupnorm(t, in, 3, NULL, NULL));
    assert_non_null(strstr(ddpm_last_error(), "groups"));
    ddpm_tape_reset(t);
    in = ddpm_tape_input(t, x, 4, (int[]){2, 5, 4, 4}, 0);
    ddpm_param bad_bias = {w, g, 1, {3}};
    P.shape[1] = 5;
    assert_null(ddpm_tape_conv2d(t, in, &P, &bad_bias, 1, 1));
    assert_non_null(strstr(ddpm_last_error(), "bias has shape [3], expected [4]"));
    ddpm_tape_reset(t);
    in = ddpm_tape_input(t, x, 4, (int[]){2, 5, 4, 4}, 0);
    assert_null(ddpm_tape_add(t, in, ddpm_tape_maxpool2d(t, in, 2, 0)));
    assert_non_null(strstr(ddpm_last_error(), "add: shapes [2, 5, 4, 4] and [2, 5, 2, 2] differ"));
    ddpm_tape_reset(t);
    in = ddpm_tape_input(t, x, 4, (int[]){1, 5, 4, 4}, 0);
    ddpm_tape_set_training(t, 1);
    assert_null(ddpm_tape_batchnorm(t, ddpm_tape_avgpool2d(t, in, 4, 0), NULL, NULL, NULL, NULL));
    assert_non_null(strstr(ddpm_last_error(), "more than 1 value per channel"));
    ddpm_tape_reset(t);
    in = ddpm_tape_input(t, x, 4, (int[]){2, 5, 4, 4}, 0);
    assert_null(ddpm_tape_dropout(t, in, 1.0f));
    ddpm_tape_free(t);
}

/* Inputs without requires_grad get no gradient; frozen params (g NULL) are left alone;
 * the timestep embedding is a constant. */
static void test_grad_bookkeeping(void **s) {
    (void)s;
    float w[6 * 3] = {0}, gw[6 * 3] = {0}, b[6] = {0}, x[2 * 3 * 2 * 2];
    for (int i = 0; i < 18; i++) w[i] = 0.1f * (float)(i - 9);
    for (int i = 0; i < 24; i++) x[i] = 0.05f * (float)(i - 11);
    ddpm_param W = {w, gw, 4, {6, 3, 1, 1}}, Bf = {b, NULL, 1, {6}};
    ddpm_tape *t = ddpm_tape_new();
    ddpm_tape_reset(t);
    ddpm_var *in = ddpm_tape_input(t, x, 4, (int[]){2, 3, 2, 2}, 0);
    ddpm_var *emb = ddpm_tape_timestep_embedding(t, (const float[]){1, 2}, 2, 6);
    assert_false(emb->requires_grad);
    ddpm_var *h = ddpm_tape_conv2d(t, in, &W, &Bf, 1, 0);
    assert_true(h->requires_grad);
    ddpm_var *out = ddpm_tape_mean(t, ddpm_tape_channel_add(t, h, emb));
    assert_int_equal(ddpm_tape_backward(t, out, NULL), DDPM_OK);
    assert_null(in->grad);
    assert_null(emb->grad);
    double sum = 0;
    for (int i = 0; i < 18; i++) sum += fabsf(gw[i]);
    assert_true(sum > 0);
    /* A constant-only graph cannot be differentiated. */
    ddpm_tape_reset(t);
    in = ddpm_tape_input(t, x, 4, (int[]){2, 3, 2, 2}, 0);
    out = ddpm_tape_mean(t, ddpm_tape_silu(t, in));
    assert_int_equal(ddpm_tape_backward(t, out, NULL), DDPM_ERR_INVALID);
    ddpm_tape_free(t);
}

/* Dropout on the tape: the k-th dropout op draws item ((k + 1) << 32) + first_item + b; eval
 * mode returns x itself. */
static void test_dropout_on_tape(void **s) {
    (void)s;
    enum { B = 2, N = 50 };
    float x[B * N], ref[B * N], mask[B * N];
    for (int i = 0; i < B * N; i++) x[i] = 1.0f + 0.01f * (float)i;
    ddpm_tape *t = ddpm_tape_new();
    ddpm_tape_set_rng(t, 77, 12, 1000);
    ddpm_tape_reset(t);
    ddpm_var *in = ddpm_tape_input(t, x, 2, (int[]){B, N}, 1);
    ddpm_var *d0 = ddpm_tape_dropout(t, in, 0.25f);
    ddpm_var *d1 = ddpm_tape_dropout(t, d0, 0.25f);
    assert_non_null(d1);
    ddpm_dropout_forward(ref, mask, x, B, N, 0.25f, 77, (1ull << 32) + 1000, 12);
    assert_memory_equal(d0->data, ref, sizeof ref);
    ddpm_dropout_forward(ref, mask, d0->data, B, N, 0.25f, 77, (2ull << 32) + 1000, 12);
    assert_memory_equal(d1->data, ref, sizeof ref);
    assert_int_equal(ddpm_tape_backward(t, d1, NULL), DDPM_OK);
    /* d(d1)/dx = mask0 * mask1 elementwise: zero where dropped, 1/0.75^2 where kept twice. */
    for (int i = 0; i < B * N; i++) {
        const float g = in->grad[i];
        assert_true(g == 0.0f || fabsf(g - 1.0f / (0.75f * 0.75f)) < 1e-6f);
        assert_true((g == 0.0f) == (d1->data[i] == 0.0f));
    }
    /* Same rng: same masks. */
    float first[B * N];
    memcpy(first, d1->data, sizeof first);
    ddpm_tape_reset(t);
    in = ddpm_tape_input(t, x, 2, (int[]){B, N}, 1);
    d1 = ddpm_tape_dropout(t, ddpm_tape_dropout(t, in, 0.25f), 0.25f);
    assert_memory_equal(first, d1->data, sizeof first);
    /* Eval: the identity. */
    ddpm_tape_set_training(t, 0);
    ddpm_tape_reset(t);
    in = ddpm_tape_input(t, x, 2, (int[]){B, N}, 0);
    assert_ptr_equal(ddpm_tape_dropout(t, in, 0.25f), in);
    ddpm_tape_free(t);
}

/* ---- finite differences through the tape, for what the composites above do not cover:
 * attention without biases, group norm without affine, batch norm in eval mode with gradients
 * on, dropout, reshape, affine. Same criterion as test_ops: 4-point stencil, h = 2^-7,
 * ||fd - an|| <= 2e-3 ||fd||, and the check must reject a 1% scaled gradient. ---- */

enum { C_W1, C_WQKV, C_WOUT, C_GB, C_BB };
static const pspec SPEC_C[] = {
    {"w1", 4, {6, 2, 3, 3}}, {"wqkv", 4, {12, 6, 1, 1}}, {"wout", 4, {6, 4, 1, 1}}, {"gb", 1, {6}},
    {"bb", 1, {6}},
};

static float RM[6] = {0.1f, -0.2f, 0.3f, 0.0f, 0.05f, -0.1f},
             RV[6] = {1.2f, 0.8f, 0.5f, 1.0f, 2.0f, 0.9f};

static ddpm_var *net_c(ddpm_tape *t, const model *m, const float *x, ddpm_var **in) {
    const ddpm_param *P = m->p;
    *in = ddpm_tape_input(t, x, 4, (int[]){1, 2, 3, 4}, 1);
    ddpm_var *h = ddpm_tape_conv2d(t, *in, &P[C_W1], NULL, 1, 1);
    h = ddpm_tape_groupnorm(t, h, 3, NULL, NULL);
    h = ddpm_tape_batchnorm(t, h, &P[C_GB], &P[C_BB], RM, RV);
    h = ddpm_tape_dropout(t, h, 0.2f); /* the identity in eval mode: covered in training below */
    h = ddpm_tape_attention(t, h, &P[C_WQKV], NULL, &P[C_WOUT], NULL, 2);
    h = ddpm_tape_reshape(t, h, 2, (int[]){1, 72});
    return ddpm_tape_affine(t, h, 0.7f, 0.1f);
}

static double tape_loss(ddpm_tape *t, const model *m, const float *x, const float *dout) {
    ddpm_var *in;
    ddpm_tape_reset(t);
    ddpm_var *out = net_c(t, m, x, &in);
    assert_non_null(out);
    double L = 0;
    for (size_t i = 0; i < out->numel; i++) L += (double)out->data[i] * dout[i];
    return L;
}

static void fd_compare(const char *what, const double *fd, const double *an, size_t n) {
    double num = 0, den = 0, num2 = 0;
    for (size_t i = 0; i < n; i++) {
        num += (fd[i] - an[i]) * (fd[i] - an[i]);
        num2 += (fd[i] - 1.01 * an[i]) * (fd[i] - 1.01 * an[i]);
        den += fd[i] * fd[i];
    }
    assert_true(den > 0);
    const double err = sqrt(num / den), err_scaled = sqrt(num2 / den);
    printf("[tape] FD %s: ||fd-an||/||fd|| = %.3g\n", what, err);
    if (err > 2e-3) fail_msg("%s: finite-difference mismatch %.3g", what, err);
    assert_true(err_scaled > 2e-3); /* the check is sharp enough to see a 1% error */
}

static void run_fd_c(int training) {
    model m;
    model_init(&m, SPEC_C, 5, NULL);
    for (size_t i = 0; i < m.total; i++)
        m.params[i] = roundf((0.5f * sinf(1.7f * (float)i + 0.3f)) * 4096.0f) / 4096.0f;
    for (int i = 0; i < 6; i++) m.p[C_GB].w[i] = 1.0f + 0.1f * (float)i; /* bn weight near 1 */
    float x[24], dout[72];
    for (int i = 0; i < 24; i++) x[i] = roundf(cosf(0.9f * (float)i) * 4096.0f) / 4096.0f;
    for (int i = 0; i < 72; i++) dout[i] = sinf(0.37f * (float)i + 1.0f);
    ddpm_tape *t = ddpm_tape_new();
    ddpm_tape_set_training(t, training);
    ddpm_tape_set_grad(t, 1);
    ddpm_tape_set_rng(t, 5, 0, 0);
    float rm0[6], rv0[6];
    memcpy(rm0, RM, sizeof rm0);
    memcpy(rv0, RV, sizeof rv0);
    /* Analytic. */
    ddpm_var *in;
    ddpm_tape_reset(t);
    ddpm_var *out = net_c(t, &m, x, &in);
    assert_non_null(out);
    assert_int_equal(ddpm_tape_backward(t, out, dout), DDPM_OK);
    double an_x[24], fd_x[24];
    for (int i = 0; i < 24; i++) an_x[i] = in->grad[i];
    double *an_p = malloc(m.total * sizeof(double)), *fd_p = malloc(m.total * sizeof(double));
    for (size_t i = 0; i < m.total; i++) an_p[i] = m.grads[i];
    /* Numeric: the dropout masks repeat (same rng), the running statistics are restored. */
    const double h = 0.0078125;
    for (size_t i = 0; i < 24 + m.total; i++) {
        float *v = i < 24 ? &x[i] : &m.params[i - 24];
        const float v0 = *v;
        double L[4];
        const double off[4] = {h, -h, 2 * h, -2 * h};
        for (int k = 0; k < 4; k++) {
            *v = v0 + (float)off[k];
            L[k] = tape_loss(t, &m, x, dout);
            memcpy(RM, rm0, sizeof rm0);
            memcpy(RV, rv0, sizeof rv0);
        }
        *v = v0;
        const double d = (8 * (L[0] - L[1]) - (L[2] - L[3])) / (12 * h);
        if (i < 24)
            fd_x[i] = d;
        else
            fd_p[i - 24] = d;
    }
    fd_compare(training ? "net_c (training) dx" : "net_c (eval) dx", fd_x, an_x, 24);
    fd_compare(training ? "net_c (training) dparams" : "net_c (eval) dparams", fd_p, an_p, m.total);
    free(an_p);
    free(fd_p);
    ddpm_tape_free(t);
    model_free(&m);
}

static void test_fd_tape_eval(void **s) {
    (void)s;
    run_fd_c(0);
}

static void test_fd_tape_training(void **s) {
    (void)s;
    run_fd_c(1);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_composite_a),
        cmocka_unit_test(test_composite_b),
        cmocka_unit_test(test_no_allocation_after_first_step),
        cmocka_unit_test(test_arena_growth),
        cmocka_unit_test(test_batchnorm_gelu_fused),
        cmocka_unit_test(test_groupnorm_silu_fused),
        cmocka_unit_test(test_sticky_errors),
        cmocka_unit_test(test_grad_bookkeeping),
        cmocka_unit_test(test_dropout_on_tape),
        cmocka_unit_test(test_fd_tape_eval),
        cmocka_unit_test(test_fd_tape_training),
    };
    tu_use_fixture("ops.safetensors", &FX);
    return cmocka_run_group_tests(tests, tu_fixture_setup, teardown_fx);
}

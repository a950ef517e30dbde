/* test_ops.c - every image operator against PyTorch and against finite differences (the fast
 * convolutions against the naive references are in test_conv_fast.c; dropout's masks and
 * max-pool's ties and NaN in test_ops_semantics.c).
 *
 * PyTorch (tests/fixtures/ops.safetensors, scripts/fixtures/gen_ops.py): references computed in
 * float64 from the same float32 inputs; forward and every gradient of sum(out * dout) for a
 * fixed random dout. Tolerance: |got - ref| <= 1e-4 |ref| + 1e-5 max|ref| per element.
 *
 * Finite differences: a 4-point central stencil (error O(h^4)) on the float forward, h = 2^-7,
 * inputs on a 2^-12 grid so every perturbed value is exact; the loss sum(out * dout) is summed
 * in double. Per input: ||fd - an|| <= 2e-3 ||fd|| and, per element,
 * |fd - an| <= 1e-2 |fd| + 2e-3 max|fd|. The harness also proves it is sharp enough: the
 * analytic gradient scaled by 1.01, or with its smallest element moved by 2% of max|fd|, must
 * fail the same check. Gradient buffers start non-zero, so the += contract is tested too, and
 * each gradient is recomputed alone (the others NULL) and must match. */
#include "testutil.h"
#include "core/internal.h"
#include "core/test_hooks.h"

#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define RTOL 1e-4
#define ATOL_REL 1e-5
#define FD_H 0.0078125 /* 2^-7 */
#define FD_NORM_TOL 2e-3
#define FD_EL_RTOL 1e-2
#define FD_EL_ATOL 2e-3

static ddpm_safetensors FX;
static tu_worst worst_torch;
static double worst_fd = 0;
static char worst_fd_what[128];

static int teardown_fx(void **state) {
    tu_worst_print("ops", &worst_torch);
    printf("[ops] worst finite-difference normwise error ||fd-an||/||fd||: %.3g (%s)\n", worst_fd,
           worst_fd_what);
    return tu_fixture_teardown(state);
}

/* ---- an operator under test: its arrays, dims and a forward/backward pair ---- */

typedef enum {
    K_CONV,
    K_CONVT,
    K_BN,
    K_GN,
    K_GELU,
    K_RELU,
    K_SILU,
    K_SCALE,
    K_ADD,
    K_CMUL,
    K_CADD,
    K_CONCAT,
    K_SLICE,
    K_MAXPOOL,
    K_AVGPOOL,
    K_UPSAMPLE,
    K_PAD,
    K_LINEAR,
    K_ATTN,
    K_DROPOUT
} kind;

#define MAX_IN 5
typedef struct {
    kind k;
    const char *name;
    float *in[MAX_IN]; /* differentiable arrays; NULL = absent slot */
    size_t n[MAX_IN];
    const char *in_name[MAX_IN];
    size_t n_out;
    ddpm_conv_dims cd;
    ddpm_attn_dims ad;
    int B, C, H, W, C2, G, kk, s, training, c0, cnt, scale;
    int pad[4]; /* pad2d: top, bottom, left, right */
    size_t HW;
    float alpha, beta, p;
    float eps; /* group norm */
    int naive;    /* conv: use the reference implementation */
    int track;    /* bn training: update rm/rv */
    float *stats; /* norm statistics */
    float *rm, *rv;
    float *ws, *saved, *mask;
    void *allocs[48];
    int n_allocs;
} opctx;

static void *own(opctx *c, void *p) {
    assert_true(c->n_allocs < 48);
    c->allocs[c->n_allocs++] = p;
    return p;
}

static void op_free(opctx *c) {
    for (int i = 0; i < c->n_allocs; i++) free(c->allocs[i]);
    c->n_allocs = 0;
}

static float *zalloc(opctx *c, size_t n) {
    float *p = calloc(n ? n : 1, sizeof(float));
    assert_non_null(p);
    return own(c, p);
}

static const ddpm_tensor *fx_find(const char *cs, const char *name) {
    char key[128];
    snprintf(key, sizeof key, "%s/%s", cs, name);
    return ddpm_safetensors_find(&FX, key);
}

/* A fixture tensor (owned by c), or NULL if absent and optional. */
static float *fx_get(opctx *c, const char *cs, const char *name, int optional) {
    char key[128];
    snprintf(key, sizeof key, "%s/%s", cs, name);
    if (optional && !ddpm_safetensors_find(&FX, key)) return NULL;
    return own(c, tu_tensor(&FX, key, 0, NULL));
}

static int fx_int(const char *cs, const char *name) {
    char key[128];
    snprintf(key, sizeof key, "%s/%s", cs, name);
    return (int)lround(tu_scalar(&FX, key));
}

static double fx_scalar(const char *cs, const char *name) {
    char key[128];
    snprintf(key, sizeof key, "%s/%s", cs, name);
    return tu_scalar(&FX, key);
}

static void set_in(opctx *c, int slot, const char *cs, const char *name, int optional) {
    const ddpm_tensor *t = fx_find(cs, name);
    c->in_name[slot] = name;
    if (!t && optional) return;
    c->in[slot] = fx_get(c, cs, name, 0);
    c->n[slot] = t->numel;
}

static int dim(const char *cs, const char *name, int i) {
    const ddpm_tensor *t = fx_find(cs, name);
    assert_non_null(t);
    assert_true(i < t->ndim);
    return (int)t->shape[i];
}

static size_t numel_of(const char *cs, const char *name) {
    const ddpm_tensor *t = fx_find(cs, name);
    assert_non_null(t);
    return t->numel;
}

/* Loads fixture case cs as operator k: inputs, dims, state buffers. */
static void op_setup(opctx *c, kind k, const char *cs) {
    memset(c, 0, sizeof *c);
    c->k = k;
    c->name = cs;
    c->n_out = numel_of(cs, "out");
    switch (k) {
    case K_CONV:
    case K_CONVT: {
        set_in(c, 0, cs, "x", 0);
        set_in(c, 1, cs, "w", 0);
        set_in(c, 2, cs, "b", 1);
        const int B = dim(cs, "x", 0), Ci = dim(cs, "x", 1), H = dim(cs, "x", 2),
                  W = dim(cs, "x", 3);
        const int KH = dim(cs, "w", 2), KW = dim(cs, "w", 3);
        const int stride = fx_int(cs, "stride"), pad = fx_int(cs, "pad");
        int rc = k == K_CONV
                     ? ddpm_conv2d_dims(&c->cd, B, Ci, H, W, dim(cs, "w", 0), KH, KW, stride, pad)
                     : ddpm_conv_transpose2d_dims(&c->cd, B, Ci, H, W, dim(cs, "w", 1), KH, KW,
                                                  stride, pad);
        assert_int_equal(rc, DDPM_OK);
        assert_int_equal((size_t)c->cd.B * c->cd.C_out * c->cd.H_out * c->cd.W_out, c->n_out);
        size_t ws =
            k == K_CONV ? ddpm_conv2d_workspace(&c->cd) : ddpm_conv_transpose2d_workspace(&c->cd);
        c->ws = zalloc(c, ws);
        break;
    }
    case K_BN:
    case K_GN:
        set_in(c, 0, cs, "x", 0);
        set_in(c, 1, cs, "w", 0);
        set_in(c, 2, cs, "b", 0);
        c->B = dim(cs, "x", 0);
        c->C = dim(cs, "x", 1);
        c->HW = c->n[0] / ((size_t)c->B * c->C);
        if (k == K_BN) {
            c->training = fx_int(cs, "training");
            c->rm = fx_get(c, cs, "rm0", 0);
            c->rv = fx_get(c, cs, "rv0", 0);
            c->stats = zalloc(c, 2 * (size_t)c->C);
        } else {
            c->G = fx_int(cs, "groups");
            c->stats = zalloc(c, 2 * (size_t)c->B * c->G);
            c->eps = fx_find(cs, "eps") ? (float)fx_scalar(cs, "eps") : DDPM_NORM_EPS;
        }
        break;
    case K_GELU:
    case K_RELU:
    case K_SILU:
    case K_SCALE:
        set_in(c, 0, cs, "x", 0);
        if (k == K_SCALE) {
            c->alpha = (float)tu_scalar(&FX, "scale/alpha");
            c->beta = (float)tu_scalar(&FX, "scale/beta");
        }
        break;
    case K_ADD:
    case K_CONCAT:
        set_in(c, 0, cs, "a", 0);
        set_in(c, 1, cs, "b", 0);
        c->B = dim(cs, "a", 0);
        c->C = dim(cs, "a", 1);
        c->C2 = dim(cs, "b", 1);
        c->HW = c->n[0] / ((size_t)c->B * c->C);
        break;
    case K_CMUL:
    case K_CADD:
        set_in(c, 0, cs, "x", 0);
        set_in(c, 1, cs, "s", 0);
        c->B = dim(cs, "x", 0);
        c->C = dim(cs, "x", 1);
        c->HW = c->n[0] / ((size_t)c->B * c->C);
        break;
    case K_SLICE:
        set_in(c, 0, cs, "x", 0);
        c->B = dim(cs, "x", 0);
        c->C = dim(cs, "x", 1);
        c->HW = c->n[0] / ((size_t)c->B * c->C);
        c->c0 = fx_int(cs, "c0");
        c->cnt = fx_int(cs, "n");
        break;
    case K_MAXPOOL:
    case K_AVGPOOL:
    case K_UPSAMPLE:
        set_in(c, 0, cs, "x", 0);
        c->B = dim(cs, "x", 0);
        c->C = dim(cs, "x", 1);
        c->H = dim(cs, "x", 2);
        c->W = dim(cs, "x", 3);
        if (k == K_UPSAMPLE)
            c->scale = fx_int(cs, "scale");
        else {
            c->kk = fx_int(cs, "k");
            c->s = fx_int(cs, "s");
        }
        break;
    case K_PAD:
        set_in(c, 0, cs, "x", 0);
        c->B = dim(cs, "x", 0);
        c->C = dim(cs, "x", 1);
        c->H = dim(cs, "x", 2);
        c->W = dim(cs, "x", 3);
        c->pad[0] = fx_int(cs, "top");
        c->pad[1] = fx_int(cs, "bottom");
        c->pad[2] = fx_int(cs, "left");
        c->pad[3] = fx_int(cs, "right");
        break;
    case K_LINEAR:
        set_in(c, 0, cs, "x", 0);
        set_in(c, 1, cs, "w", 0);
        set_in(c, 2, cs, "b", 1);
        c->B = dim(cs, "x", 0);
        c->C = dim(cs, "x", 1);  /* in */
        c->C2 = dim(cs, "w", 0); /* out */
        break;
    case K_ATTN: {
        set_in(c, 0, cs, "x", 0);
        set_in(c, 1, cs, "wqkv", 0);
        set_in(c, 2, cs, "bqkv", 1);
        set_in(c, 3, cs, "wout", 0);
        set_in(c, 4, cs, "bout", 1);
        const int heads = fx_int(cs, "heads"), hid = dim(cs, "wqkv", 0) / 3;
        c->ad = (ddpm_attn_dims){dim(cs, "x", 0), dim(cs, "x", 1),
                                 dim(cs, "x", 2) * dim(cs, "x", 3), heads, hid / heads};
        c->saved = zalloc(c, ddpm_attention_saved_size(&c->ad));
        c->ws = zalloc(c, ddpm_attention_workspace(&c->ad));
        break;
    }
    case K_DROPOUT: /* no fixture: see dropout_setup */ fail();
    }
}

static void dropout_setup(opctx *c, int B, size_t per_item, float p) {
    memset(c, 0, sizeof *c);
    c->k = K_DROPOUT;
    c->name = "dropout";
    c->B = B;
    c->HW = per_item;
    c->p = p;
    c->in[0] = own(c, tu_randn_alloc((size_t)B * per_item, 1));
    c->n[0] = (size_t)B * per_item;
    c->in_name[0] = "x";
    c->n_out = c->n[0];
    c->mask = zalloc(c, c->n[0]);
}

static void op_forward(opctx *c, float *out) {
    float **x = c->in;
    switch (c->k) {
    case K_CONV:
        if (c->naive)
            ddpm_conv2d_forward_ref(out, x[0], x[1], x[2], &c->cd);
        else
            ddpm_conv2d_forward(out, x[0], x[1], x[2], &c->cd, c->ws);
        break;
    case K_CONVT:
        if (c->naive)
            ddpm_conv_transpose2d_forward_ref(out, x[0], x[1], x[2], &c->cd);
        else
            ddpm_conv_transpose2d_forward(out, x[0], x[1], x[2], &c->cd, c->ws);
        break;
    case K_BN:
        ddpm_batchnorm_forward(out, c->stats, c->stats + c->C, x[0], x[1], x[2],
                               c->training && !c->track ? NULL : c->rm,
                               c->training && !c->track ? NULL : c->rv, c->training,
                               DDPM_BN_MOMENTUM, c->B, c->C, c->HW);
        break;
    case K_GN:
        if (c->eps == DDPM_NORM_EPS) /* the default entry point */
            ddpm_groupnorm_forward(out, c->stats, c->stats + (size_t)c->B * c->G, x[0], x[1],
                                   x[2], c->B, c->C, c->HW, c->G);
        else
            ddpm_groupnorm_forward_eps(out, c->stats, c->stats + (size_t)c->B * c->G, x[0], x[1],
                                       x[2], c->B, c->C, c->HW, c->G, c->eps);
        break;
    case K_GELU: ddpm_gelu_forward(out, x[0], c->n[0]); break;
    case K_RELU: ddpm_relu_forward(out, x[0], c->n[0]); break;
    case K_SILU: ddpm_silu_forward(out, x[0], c->n[0]); break;
    case K_SCALE: ddpm_scale_forward(out, x[0], c->alpha, c->beta, c->n[0]); break;
    case K_ADD: ddpm_add_forward(out, x[0], x[1], c->n[0]); break;
    case K_CMUL: ddpm_channel_mul_forward(out, x[0], x[1], c->B, c->C, c->HW); break;
    case K_CADD: ddpm_channel_add_forward(out, x[0], x[1], c->B, c->C, c->HW); break;
    case K_CONCAT: ddpm_concat_forward(out, x[0], x[1], c->B, c->C, c->C2, c->HW); break;
    case K_SLICE: ddpm_channel_slice_forward(out, x[0], c->B, c->C, c->HW, c->c0, c->cnt); break;
    case K_MAXPOOL: ddpm_maxpool2d_forward(out, x[0], c->B, c->C, c->H, c->W, c->kk, c->s); break;
    case K_AVGPOOL: ddpm_avgpool2d_forward(out, x[0], c->B, c->C, c->H, c->W, c->kk, c->s); break;
    case K_UPSAMPLE:
        ddpm_upsample_nearest_forward(out, x[0], c->B, c->C, c->H, c->W, c->scale);
        break;
    case K_PAD:
        ddpm_pad2d_forward(out, x[0], c->B, c->C, c->H, c->W, c->pad[0], c->pad[1], c->pad[2],
                           c->pad[3]);
        break;
    case K_LINEAR: ddpm_linear_forward(out, x[0], x[1], x[2], c->B, c->C, c->C2); break;
    case K_ATTN: ddpm_attention_forward(out, c->saved, x[0], x[1], x[2], x[3], x[4], &c->ad); break;
    case K_DROPOUT: ddpm_dropout_forward(out, c->mask, x[0], c->B, c->HW, c->p, 1234, 17, 3); break;
    }
}

/* Accumulates the gradients of sum(out * dout) into g[slot] (NULL slots skipped). Must follow a
 * forward of the same inputs (it reads the saved statistics). */
static void op_backward(opctx *c, const float *dout, float **g) {
    float **x = c->in;
    switch (c->k) {
    case K_CONV:
        if (c->naive)
            ddpm_conv2d_backward_ref(g[0], g[1], g[2], dout, x[0], x[1], &c->cd);
        else
            ddpm_conv2d_backward(g[0], g[1], g[2], dout, x[0], x[1], &c->cd, c->ws);
        break;
    case K_CONVT:
        if (c->naive)
            ddpm_conv_transpose2d_backward_ref(g[0], g[1], g[2], dout, x[0], x[1], &c->cd);
        else
            ddpm_conv_transpose2d_backward(g[0], g[1], g[2], dout, x[0], x[1], &c->cd, c->ws);
        break;
    case K_BN:
        ddpm_batchnorm_backward(g[0], g[1], g[2], dout, x[0], c->stats, c->stats + c->C, x[1],
                                c->training, c->B, c->C, c->HW);
        break;
    case K_GN:
        ddpm_groupnorm_backward(g[0], g[1], g[2], dout, x[0], c->stats,
                                c->stats + (size_t)c->B * c->G, x[1], c->B, c->C, c->HW, c->G);
        break;
    case K_GELU: ddpm_gelu_backward(g[0], dout, x[0], c->n[0]); break;
    case K_RELU: ddpm_relu_backward(g[0], dout, x[0], c->n[0]); break;
    case K_SILU: ddpm_silu_backward(g[0], dout, x[0], c->n[0]); break;
    case K_SCALE: ddpm_scale_backward(g[0], dout, c->alpha, c->n[0]); break;
    case K_ADD: ddpm_add_backward(g[0], g[1], dout, c->n[0]); break;
    case K_CMUL: ddpm_channel_mul_backward(g[0], g[1], dout, x[0], x[1], c->B, c->C, c->HW); break;
    case K_CADD: ddpm_channel_add_backward(g[0], g[1], dout, c->B, c->C, c->HW); break;
    case K_CONCAT: ddpm_concat_backward(g[0], g[1], dout, c->B, c->C, c->C2, c->HW); break;
    case K_SLICE: ddpm_channel_slice_backward(g[0], dout, c->B, c->C, c->HW, c->c0, c->cnt); break;
    case K_MAXPOOL:
        ddpm_maxpool2d_backward(g[0], dout, x[0], c->B, c->C, c->H, c->W, c->kk, c->s);
        break;
    case K_AVGPOOL: ddpm_avgpool2d_backward(g[0], dout, c->B, c->C, c->H, c->W, c->kk, c->s); break;
    case K_UPSAMPLE:
        ddpm_upsample_nearest_backward(g[0], dout, c->B, c->C, c->H, c->W, c->scale);
        break;
    case K_PAD:
        ddpm_pad2d_backward(g[0], dout, c->B, c->C, c->H, c->W, c->pad[0], c->pad[1], c->pad[2],
                            c->pad[3]);
        break;
    case K_LINEAR:
        ddpm_linear_backward(g[0], g[1], g[2], dout, x[0], x[1], c->B, c->C, c->C2);
        break;
    case K_ATTN:
        ddpm_attention_backward(g[0], g[1], g[2], g[3], g[4], dout, x[0], c->saved, x[1], x[3],
                                &c->ad, c->ws);
        break;
    case K_DROPOUT: ddpm_dropout_backward(g[0], dout, c->mask, c->n[0]); break;
    }
}

/* ---- comparison against the fixtures ---- */

static void cmp_ref(const char *what, const float *got, const float *ref, size_t n) {
    tu_cmp_torch(&worst_torch, what, got, ref, n, RTOL, ATOL_REL);
}

static void cmp_fixture(const char *cs, const char *name, const float *got, size_t n) {
    char key[128];
    snprintf(key, sizeof key, "%s/%s", cs, name);
    float *ref = tu_tensor(&FX, key, n, NULL);
    cmp_ref(key, got, ref, n);
    free(ref);
}

/* Forward and every gradient of one case against PyTorch. */
static void torch_case(kind k, const char *cs, int naive) {
    opctx c;
    op_setup(&c, k, cs);
    c.naive = naive;
    c.track = 1;
    float *out = zalloc(&c, c.n_out);
    op_forward(&c, out);
    cmp_fixture(cs, "out", out, c.n_out);
    if (k == K_BN) {
        cmp_fixture(cs, "rm", c.rm, (size_t)c.C);
        cmp_fixture(cs, "rv", c.rv, (size_t)c.C);
    }
    float *dout = fx_get(&c, cs, "dout", 0);
    float *g[MAX_IN] = {0};
    for (int s = 0; s < MAX_IN; s++)
        if (c.in[s]) g[s] = zalloc(&c, c.n[s]);
    op_backward(&c, dout, g);
    for (int s = 0; s < MAX_IN; s++)
        if (c.in[s]) {
            char nm[64];
            snprintf(nm, sizeof nm, "d_%s", c.in_name[s]);
            cmp_fixture(cs, nm, g[s], c.n[s]);
        }
    op_free(&c);
}

static const struct {
    const char *name;
    kind k;
} CASES[] = {
    {"conv_a", K_CONV},
    {"conv_b", K_CONV},
    {"conv_c", K_CONV},
    {"conv_d", K_CONV},
    {"conv_e", K_CONV},
    {"convt_a", K_CONVT},
    {"convt_b", K_CONVT},
    {"convt_c", K_CONVT},
    {"convt_d", K_CONVT},
    {"convt_e", K_CONVT},
    {"bn_train", K_BN},
    {"bn_train_b1", K_BN},
    {"bn_eval", K_BN},
    {"bn_1d", K_BN},
    {"gn_a", K_GN},
    {"gn_b", K_GN},
    {"gn_c", K_GN},
    {"gneps_a", K_GN},
    {"gneps_b", K_GN},
    {"gelu", K_GELU},
    {"relu", K_RELU},
    {"silu", K_SILU},
    {"scale", K_SCALE},
    {"add", K_ADD},
    {"channel_mul", K_CMUL},
    {"channel_add", K_CADD},
    {"concat", K_CONCAT},
    {"slice", K_SLICE},
    {"maxpool_a", K_MAXPOOL},
    {"maxpool_b", K_MAXPOOL},
    {"avgpool_a", K_AVGPOOL},
    {"avgpool_b", K_AVGPOOL},
    {"upsample_a", K_UPSAMPLE},
    {"upsample_b", K_UPSAMPLE},
    {"pad_a", K_PAD},
    {"pad_b", K_PAD},
    {"linear", K_LINEAR},
    {"attn_a", K_ATTN},
    {"attn_b", K_ATTN},
    {"attn_c", K_ATTN},
};
#define N_CASES (sizeof CASES / sizeof CASES[0])

static void run_torch(const char *prefix) {
    int ran = 0;
    for (size_t i = 0; i < N_CASES; i++)
        if (!strncmp(CASES[i].name, prefix, strlen(prefix))) {
            torch_case(CASES[i].k, CASES[i].name, 0);
            ran++;
        }
    assert_true(ran > 0);
}

static void test_torch_conv(void **s) {
    (void)s;
    run_torch("conv_");
}
static void test_torch_convt(void **s) {
    (void)s;
    run_torch("convt_");
}
static void test_torch_batchnorm(void **s) {
    (void)s;
    run_torch("bn_");
}
static void test_torch_groupnorm(void **s) {
    (void)s;
    run_torch("gn_");
    /* eps other than DDPM_NORM_EPS; no finite-difference pass for these: their inputs' spread
     * (1e-3..1e-2) is below the stencil's step, and the backward is gn_'s (it reads the saved
     * rstd, eps never enters it) */
    run_torch("gneps_");
}
static void test_torch_activations(void **s) {
    (void)s;
    run_torch("gelu");
    run_torch("relu");
    run_torch("silu");
    run_torch("scale");
}
static void test_torch_combine(void **s) {
    (void)s;
    run_torch("add");
    run_torch("channel_");
    run_torch("concat");
    run_torch("slice");
}
static void test_torch_pool_upsample(void **s) {
    (void)s;
    run_torch("maxpool_");
    run_torch("avgpool_");
    run_torch("upsample_");
    run_torch("pad_");
}
static void test_torch_linear(void **s) {
    (void)s;
    run_torch("linear");
}
static void test_torch_attention(void **s) {
    (void)s;
    run_torch("attn_");
}

/* The naive references against PyTorch too: they are the yardstick for the fast kernels. */
static void test_torch_conv_naive(void **s) {
    (void)s;
    for (size_t i = 0; i < N_CASES; i++)
        if (CASES[i].k == K_CONV || CASES[i].k == K_CONVT) torch_case(CASES[i].k, CASES[i].name, 1);
}

static void test_torch_timestep_embedding(void **s) {
    (void)s;
    const char *cases[] = {"temb_a", "temb_b"};
    for (int i = 0; i < 2; i++) {
        char key[64];
        size_t B;
        snprintf(key, sizeof key, "%s/t", cases[i]);
        float *t = tu_tensor(&FX, key, 0, &B);
        const int dim = fx_int(cases[i], "dim");
        float *out = malloc(B * dim * sizeof(float));
        ddpm_timestep_embedding(out, t, (int)B, dim);
        snprintf(key, sizeof key, "%s/out", cases[i]);
        float *ref = tu_tensor(&FX, key, B * dim, NULL);
        /* PyTorch's own float32 result, with arguments up to 999 rad: a 1-ulp difference in
         * exp(-k log(1e4) / (half - 1)) moves sin by up to 6e-5. */
        tu_assert_close(out, ref, B * dim, 0, 2e-4, key);
        printf("[ops] %s: max abs error vs PyTorch float32 %.3g\n", key,
               tu_max_rel_err(out, ref, B * dim, 1.0));
        free(t);
        free(out);
        free(ref);
    }
}

/* ---- finite differences ---- */

static double loss_of(opctx *c, float *out, const float *dout) {
    op_forward(c, out);
    double L = 0;
    for (size_t i = 0; i < c->n_out; i++) L += (double)out[i] * dout[i];
    return L;
}

/* Does an analytic gradient pass against fd? (the criterion stated at the top) */
static int fd_passes(const double *fd, const double *an, size_t n, double *norm_err) {
    double num = 0, den = 0, mx = 0;
    for (size_t i = 0; i < n; i++) {
        num += (fd[i] - an[i]) * (fd[i] - an[i]);
        den += fd[i] * fd[i];
        mx = fmax(mx, fabs(fd[i]));
    }
    *norm_err = sqrt(num) / fmax(sqrt(den), 1e-30);
    if (*norm_err > FD_NORM_TOL) return 0;
    for (size_t i = 0; i < n; i++)
        if (fabs(fd[i] - an[i]) > FD_EL_RTOL * fabs(fd[i]) + FD_EL_ATOL * mx) return 0;
    return 1;
}

/* Puts the inputs on a 2^-12 grid so x +- h and x +- 2h are exact in float. */
static void quantise(opctx *c) {
    for (int s = 0; s < MAX_IN; s++)
        for (size_t i = 0; c->in[s] && i < c->n[s]; i++)
            c->in[s][i] = roundf(c->in[s][i] * 4096.0f) / 4096.0f;
}

static void fd_check(opctx *c) {
    quantise(c);
    float *out = zalloc(c, c->n_out);
    float *dout = own(c, tu_randn_alloc(c->n_out, 1));
    op_forward(c, out);
    /* Analytic: all gradients at once into buffers pre-filled with noise r (+= contract). */
    float *g[MAX_IN] = {0}, *r[MAX_IN] = {0};
    for (int s = 0; s < MAX_IN; s++)
        if (c->in[s]) {
            r[s] = own(c, tu_randn_alloc(c->n[s], 1));
            g[s] = zalloc(c, c->n[s]);
            memcpy(g[s], r[s], c->n[s] * sizeof(float));
        }
    op_backward(c, dout, g);
    /* Each gradient alone (the others NULL) must give the same answer. */
    for (int s = 0; s < MAX_IN; s++)
        if (c->in[s]) {
            float *solo[MAX_IN] = {0};
            solo[s] = zalloc(c, c->n[s]);
            memcpy(solo[s], r[s], c->n[s] * sizeof(float));
            op_backward(c, dout, solo);
            char what[96];
            snprintf(what, sizeof what, "%s: d%s computed alone", c->name, c->in_name[s]);
            tu_assert_close(solo[s], g[s], c->n[s], 1e-5, 1e-6 * (1 + tu_maxabs(g[s], c->n[s])),
                            what);
        }
    for (int s = 0; s < MAX_IN; s++) {
        if (!c->in[s]) continue;
        const size_t n = c->n[s];
        double *fd = malloc(n * sizeof(double)), *an = malloc(n * sizeof(double));
        assert_true(fd && an);
        for (size_t j = 0; j < n; j++) {
            an[j] = (double)g[s][j] - (double)r[s][j];
            float *x = c->in[s] + j;
            const float x0 = *x;
            *x = x0 + (float)FD_H;
            const double l1 = loss_of(c, out, dout);
            *x = x0 - (float)FD_H;
            const double m1 = loss_of(c, out, dout);
            *x = x0 + (float)(2 * FD_H);
            const double l2 = loss_of(c, out, dout);
            *x = x0 - (float)(2 * FD_H);
            const double m2 = loss_of(c, out, dout);
            *x = x0;
            fd[j] = (8 * (l1 - m1) - (l2 - m2)) / (12 * FD_H);
        }
        double err, dummy;
        const int ok = fd_passes(fd, an, n, &err);
        if (err > worst_fd) {
            worst_fd = err;
            snprintf(worst_fd_what, sizeof worst_fd_what, "%s d%s", c->name, c->in_name[s]);
        }
        if (!ok) {
            size_t worst = 0;
            for (size_t j = 0; j < n; j++)
                if (fabs(fd[j] - an[j]) > fabs(fd[worst] - an[worst])) worst = j;
            fail_msg("%s: d%s fails the finite-difference check: normwise %.3g; worst [%zu] "
                     "analytic %.9g, fd %.9g",
                     c->name, c->in_name[s], err, worst, an[worst], fd[worst]);
        }
        /* Sharpness: the check must reject a 1% scale error and one wrong element. */
        double fdmax = 0;
        size_t jmin = 0;
        for (size_t j = 0; j < n; j++) {
            fdmax = fmax(fdmax, fabs(fd[j]));
            if (fabs(fd[j]) < fabs(fd[jmin])) jmin = j;
        }
        assert_true(fdmax > 0);
        for (size_t j = 0; j < n; j++) an[j] *= 1.01;
        if (fd_passes(fd, an, n, &dummy))
            fail_msg("%s: d%s: the FD check would accept a gradient 1%% too large", c->name,
                     c->in_name[s]);
        for (size_t j = 0; j < n; j++) an[j] /= 1.01;
        an[jmin] += 0.02 * fdmax;
        if (fd_passes(fd, an, n, &dummy))
            fail_msg("%s: d%s: the FD check would accept one wrong element", c->name,
                     c->in_name[s]);
        free(fd);
        free(an);
    }
}

/* ReLU and max pooling are not differentiable everywhere: keep every input at least 4h from a
 * kink (|x| >= 0.05 for ReLU; window values on a 0.05-spaced shuffled grid for max pooling). */
static void away_from_kinks(opctx *c) {
    float *x = c->in[0];
    const size_t n = c->n[0];
    if (c->k == K_RELU)
        for (size_t i = 0; i < n; i++)
            if (fabsf(x[i]) < 0.05f) x[i] = x[i] < 0 ? -0.05f - x[i] : 0.05f + x[i];
    if (c->k == K_MAXPOOL) {
        for (size_t i = 0; i < n; i++) x[i] = -2.0f + 0.05f * (float)i;
        for (size_t i = n - 1; i > 0; i--) { /* Fisher-Yates */
            size_t j = (size_t)(tu_urand() * (double)(i + 1));
            float tmp = x[i];
            x[i] = x[j];
            x[j] = tmp;
        }
    }
}

static void run_fd(const char *prefix) {
    int ran = 0;
    for (size_t i = 0; i < N_CASES; i++)
        if (!strncmp(CASES[i].name, prefix, strlen(prefix))) {
            opctx c;
            op_setup(&c, CASES[i].k, CASES[i].name);
            away_from_kinks(&c);
            fd_check(&c);
            op_free(&c);
            ran++;
        }
    assert_true(ran > 0);
}

static void test_fd_conv(void **s) {
    (void)s;
    run_fd("conv_");
}
static void test_fd_convt(void **s) {
    (void)s;
    run_fd("convt_");
}
static void test_fd_batchnorm(void **s) {
    (void)s;
    run_fd("bn_");
}
static void test_fd_groupnorm(void **s) {
    (void)s;
    run_fd("gn_");
}
static void test_fd_activations(void **s) {
    (void)s;
    run_fd("gelu");
    run_fd("relu");
    run_fd("silu");
    run_fd("scale");
}
static void test_fd_combine(void **s) {
    (void)s;
    run_fd("add");
    run_fd("channel_");
    run_fd("concat");
    run_fd("slice");
}
static void test_fd_pool_upsample(void **s) {
    (void)s;
    run_fd("maxpool_");
    run_fd("avgpool_");
    run_fd("upsample_");
    run_fd("pad_");
}
static void test_fd_linear(void **s) {
    (void)s;
    run_fd("linear");
}
static void test_fd_attention(void **s) {
    (void)s;
    run_fd("attn_");
}
static void test_fd_dropout(void **s) {
    (void)s;
    opctx c;
    dropout_setup(&c, 2, 30, 0.3f);
    fd_check(&c);
    op_free(&c);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_torch_conv),
        cmocka_unit_test(test_torch_convt),
        cmocka_unit_test(test_torch_conv_naive),
        cmocka_unit_test(test_torch_batchnorm),
        cmocka_unit_test(test_torch_groupnorm),
        cmocka_unit_test(test_torch_activations),
        cmocka_unit_test(test_torch_combine),
        cmocka_unit_test(test_torch_pool_upsample),
        cmocka_unit_test(test_torch_linear),
        cmocka_unit_test(test_torch_attention),
        cmocka_unit_test(test_torch_timestep_embedding),
        cmocka_unit_test(test_fd_conv),
        cmocka_unit_test(test_fd_convt),
        cmocka_unit_test(test_fd_batchnorm),
        cmocka_unit_test(test_fd_groupnorm),
        cmocka_unit_test(test_fd_activations),
        cmocka_unit_test(test_fd_combine),
        cmocka_unit_test(test_fd_pool_upsample),
        cmocka_unit_test(test_fd_linear),
        cmocka_unit_test(test_fd_attention),
        cmocka_unit_test(test_fd_dropout),
    };
    tu_use_fixture("ops.safetensors", &FX);
    return cmocka_run_group_tests(tests, tu_fixture_setup, teardown_fx);
}

/* inception.c - the Inception-v3 of pytorch-fid, whose 2048-d pool features define the standard
 * FID, forward only, on the library's operators (ops/conv.c, ops/resample.c, ops/pad.c).
 *
 * The network is torchvision's Inception3 as pytorch-fid's fid_inception_v3() patches it:
 *   images in [0, 1], gray repeated to RGB -> F.interpolate(299 x 299, bilinear,
 *   align_corners=False) -> 2x - 1 -> Conv2d_1a_3x3 (stride 2), 2a_3x3, 2b_3x3 (pad 1),
 *   maxpool 3/2, 3b_1x1, 4a_3x3, maxpool 3/2, Mixed_5b/5c/5d (FIDInceptionA), Mixed_6a
 *   (InceptionB), Mixed_6b..6e (FIDInceptionC), Mixed_7a (InceptionD), Mixed_7b
 *   (FIDInceptionE_1), Mixed_7c (FIDInceptionE_2) -> adaptive average pool -> [2048].
 * The FID blocks' branch pools average 3x3 windows without the zero padding
 * (count_include_pad=False, as TensorFlow's), except Mixed_7c's, a 3x3 max pool (stride 1, pad 1).
 * Every convolution is a BasicConv2d: conv (no bias), BatchNorm2d(eps 0.001) in eval mode, ReLU.
 *
 * The topology is the tables below; the channel counts are read from the weights (each conv's
 * input width must be what its inputs give), so a twin with every width divided by 16
 * (scripts/fixtures/gen_inception.py, the test's fixture) runs on exactly this code. At load, each
 * batch norm is folded into its conv: w' = w gamma / sqrt(var + eps) per output channel and the
 * bias beta - mean gamma / sqrt(var + eps); a conv is then ddpm_conv2d_forward with that bias and
 * a ReLU pass. The 1x7 / 7x1 / 1x3 / 3x1 convs pad one axis only, which the conv op (one padding
 * for both axes) gets as an explicitly padded copy (ddpm_pad2d_forward) and padding 0.
 *
 * Memory: images go through in chunks of DDPM_INCEPTION_CHUNK. A chunk's block inputs and
 * outputs ping-pong between two buffers; everything a block makes on the way (branch outputs,
 * its pooled input, padded copies, conv workspaces) comes from one scratch arena that is reset
 * after each block. The sizes are found by running the same code with no memory (a planning
 * pass: every take() only counts, every operator is skipped), so they cannot drift from what the
 * forward uses; the buffers are kept across chunks and calls. */
#include "models/model_internal.h"

#include <math.h>

#define OMP_MIN_WORK 32768 /* elements below which one thread is faster (as elem.c) */
#define FID_SIZE 299       /* pytorch-fid resizes every image to 299 x 299 */
#define BN_EPS 0.001       /* torchvision's BasicConv2d: nn.BatchNorm2d(out_channels, eps=0.001) */

/* ---- the topology ---------------------------------------------------------------------------- */

enum { SRC_X = -1, SRC_POOL = -2 }; /* a conv's input: the block's, its pooled one, or conv k's */
typedef enum { POOL_NONE, POOL_AVG_S1, POOL_MAX_S1, POOL_MAX_S2 } pool_kind;

typedef struct {
    const char *name; /* the branch ("branch5x5_2"), or "" for a stem conv named by its block */
    int kh, kw, stride, ph, pw;
    int src;
} conv_spec;

#define MAX_CONVS 10
#define MAX_CAT 6
typedef struct {
    int n_convs;
    conv_spec conv[MAX_CONVS];
    pool_kind pool; /* of the block's input, 3x3: avg/max stride 1 pad 1, or max stride 2 */
    int n_cat;
    int cat[MAX_CAT]; /* torch.cat order: conv indices, or SRC_POOL for the pooled input itself */
} block_spec;

#define CONV1(k, s, p) {"", k, k, s, p, p, SRC_X}
static const block_spec STEM_3x3_S2 = {1, {CONV1(3, 2, 0)}, POOL_NONE, 1, {0}};
static const block_spec STEM_3x3 = {1, {CONV1(3, 1, 0)}, POOL_NONE, 1, {0}};
static const block_spec STEM_3x3_P1 = {1, {CONV1(3, 1, 1)}, POOL_NONE, 1, {0}};
static const block_spec STEM_1x1 = {1, {CONV1(1, 1, 0)}, POOL_NONE, 1, {0}};
static const block_spec MAXPOOL = {0, {{"", 0, 0, 0, 0, 0, 0}}, POOL_MAX_S2, 1, {SRC_POOL}};

/* FIDInceptionA (torchvision's InceptionA with the TF average pool) */
static const block_spec BLOCK_A = {7,
                                   {{"branch1x1", 1, 1, 1, 0, 0, SRC_X},
                                    {"branch5x5_1", 1, 1, 1, 0, 0, SRC_X},
                                    {"branch5x5_2", 5, 5, 1, 2, 2, 1},
                                    {"branch3x3dbl_1", 1, 1, 1, 0, 0, SRC_X},
                                    {"branch3x3dbl_2", 3, 3, 1, 1, 1, 3},
                                    {"branch3x3dbl_3", 3, 3, 1, 1, 1, 4},
                                    {"branch_pool", 1, 1, 1, 0, 0, SRC_POOL}},
                                   POOL_AVG_S1, 4, {0, 2, 5, 6}};
/* InceptionB (Mixed_6a: 35 -> 17) */
static const block_spec BLOCK_B = {4,
                                   {{"branch3x3", 3, 3, 2, 0, 0, SRC_X},
                                    {"branch3x3dbl_1", 1, 1, 1, 0, 0, SRC_X},
                                    {"branch3x3dbl_2", 3, 3, 1, 1, 1, 1},
                                    {"branch3x3dbl_3", 3, 3, 2, 0, 0, 2}},
                                   POOL_MAX_S2, 3, {0, 3, SRC_POOL}};
/* FIDInceptionC */
static const block_spec BLOCK_C = {10,
                                   {{"branch1x1", 1, 1, 1, 0, 0, SRC_X},
                                    {"branch7x7_1", 1, 1, 1, 0, 0, SRC_X},
                                    {"branch7x7_2", 1, 7, 1, 0, 3, 1},
                                    {"branch7x7_3", 7, 1, 1, 3, 0, 2},
                                    {"branch7x7dbl_1", 1, 1, 1, 0, 0, SRC_X},
                                    {"branch7x7dbl_2", 7, 1, 1, 3, 0, 4},
                                    {"branch7x7dbl_3", 1, 7, 1, 0, 3, 5},
                                    {"branch7x7dbl_4", 7, 1, 1, 3, 0, 6},
                                    {"branch7x7dbl_5", 1, 7, 1, 0, 3, 7},
                                    {"branch_pool", 1, 1, 1, 0, 0, SRC_POOL}},
                                   POOL_AVG_S1, 4, {0, 3, 8, 9}};
/* InceptionD (Mixed_7a: 17 -> 8) */
static const block_spec BLOCK_D = {6,
                                   {{"branch3x3_1", 1, 1, 1, 0, 0, SRC_X},
                                    {"branch3x3_2", 3, 3, 2, 0, 0, 0},
                                    {"branch7x7x3_1", 1, 1, 1, 0, 0, SRC_X},
                                    {"branch7x7x3_2", 1, 7, 1, 0, 3, 2},
                                    {"branch7x7x3_3", 7, 1, 1, 3, 0, 3},
                                    {"branch7x7x3_4", 3, 3, 2, 0, 0, 4}},
                                   POOL_MAX_S2, 3, {1, 5, SRC_POOL}};
/* FIDInceptionE_1 and _2: the same convs, an average or a max branch pool */
#define BLOCK_E_CONVS                                                                          \
    {{"branch1x1", 1, 1, 1, 0, 0, SRC_X},       {"branch3x3_1", 1, 1, 1, 0, 0, SRC_X},          \
     {"branch3x3_2a", 1, 3, 1, 0, 1, 1},        {"branch3x3_2b", 3, 1, 1, 1, 0, 1},             \
     {"branch3x3dbl_1", 1, 1, 1, 0, 0, SRC_X},  {"branch3x3dbl_2", 3, 3, 1, 1, 1, 4},           \
     {"branch3x3dbl_3a", 1, 3, 1, 0, 1, 5},     {"branch3x3dbl_3b", 3, 1, 1, 1, 0, 5},          \
     {"branch_pool", 1, 1, 1, 0, 0, SRC_POOL}}
static const block_spec BLOCK_E1 = {9, BLOCK_E_CONVS, POOL_AVG_S1, 6, {0, 2, 3, 6, 7, 8}};
static const block_spec BLOCK_E2 = {9, BLOCK_E_CONVS, POOL_MAX_S1, 6, {0, 2, 3, 6, 7, 8}};

static const struct {
    const char *name; /* the state-dict prefix (the pools have none) */
    const block_spec *spec;
} NET[] = {
    {"Conv2d_1a_3x3", &STEM_3x3_S2}, {"Conv2d_2a_3x3", &STEM_3x3}, {"Conv2d_2b_3x3", &STEM_3x3_P1},
    {"maxpool1", &MAXPOOL},          {"Conv2d_3b_1x1", &STEM_1x1}, {"Conv2d_4a_3x3", &STEM_3x3},
    {"maxpool2", &MAXPOOL},          {"Mixed_5b", &BLOCK_A},       {"Mixed_5c", &BLOCK_A},
    {"Mixed_5d", &BLOCK_A},          {"Mixed_6a", &BLOCK_B},       {"Mixed_6b", &BLOCK_C},
    {"Mixed_6c", &BLOCK_C},          {"Mixed_6d", &BLOCK_C},       {"Mixed_6e", &BLOCK_C},
    {"Mixed_7a", &BLOCK_D},          {"Mixed_7b", &BLOCK_E1},      {"Mixed_7c", &BLOCK_E2},
};
#define N_BLOCKS ((int)(sizeof NET / sizeof NET[0]))

/* ---- the loaded network ---------------------------------------------------------------------- */

typedef struct {
    const float *w, *b; /* [c_out, c_in, kh, kw] and [c_out], batch norm folded in */
    int c_in, c_out;
} incep_conv;

typedef struct {
    incep_conv conv[MAX_CONVS];
    int c_in, c_out;
} incep_block;

struct ddpm_inception {
    incep_block block[N_BLOCKS];
    float *weights; /* every conv's folded weights and bias, 64-byte aligned each */
    size_t n_weights, n_floats;
    int in_channels;
    float *io[2], *scratch; /* kept across chunks and calls */
    size_t io_cap, scratch_cap;
};

static size_t round16(size_t n) { return (n + 15) / 16 * 16; }

/* The output side of a window: PyTorch's (n + 2 pad - k) / s + 1. */
static int out_side(int n, int k, int s, int pad) { return (n + 2 * pad - k) / s + 1; }

/* A conv's input: its channels and size (the block's input, its pooled input or conv k's). */
typedef struct {
    int c, h, w;
} geom;

static geom pooled_geom(pool_kind k, geom x) {
    if (k == POOL_MAX_S2) return (geom){x.c, out_side(x.h, 3, 2, 0), out_side(x.w, 3, 2, 0)};
    return x; /* the 3x3 stride-1 pools pad by 1 */
}

/* Every conv's output geometry in a block whose input is x; returns the block's output. */
static geom block_geom(const block_spec *s, const incep_block *bk, geom x, geom *conv_out) {
    const geom xp = pooled_geom(s->pool, x);
    for (int i = 0; i < s->n_convs; i++) {
        const conv_spec *c = &s->conv[i];
        const geom in = c->src == SRC_X ? x : c->src == SRC_POOL ? xp : conv_out[c->src];
        conv_out[i] = (geom){bk->conv[i].c_out, out_side(in.h, c->kh, c->stride, c->ph),
                             out_side(in.w, c->kw, c->stride, c->pw)};
    }
    geom out = {0, 0, 0};
    for (int j = 0; j < s->n_cat; j++) {
        const geom g = s->cat[j] == SRC_POOL ? xp : conv_out[s->cat[j]];
        out.c += g.c, out.h = g.h, out.w = g.w;
    }
    return out;
}

/* ---- loading --------------------------------------------------------------------------------- */

static int check_tensor(const ddpm_safetensors *st, const char *path, const char *key, int ndim,
                        const int64_t *want, const ddpm_tensor **out) {
    const ddpm_tensor *t = ddpm_safetensors_find(st, key);
    if (!t)
        return ddpm_fail(DDPM_ERR_FORMAT, "%s: no tensor '%s' (not the weights of pytorch-fid's "
                         "Inception-v3, pt_inception-2015-12-05-6726825d.pth?)", path, key);
    if (t->dtype > DDPM_DT_BF16)
        return ddpm_fail(DDPM_ERR_FORMAT, "%s: tensor '%s' is %s, not floats", path, key,
                         ddpm_dtype_name(t->dtype));
    int same = t->ndim == ndim;
    for (int k = 0; same && k < ndim; k++) same = want[k] < 0 || t->shape[k] == want[k];
    if (!same) {
        char a[96], b[96];
        ddpm_shape_str(a, sizeof a, t->ndim, t->shape);
        int k = snprintf(b, sizeof b, "[");
        for (int i = 0; i < ndim; i++)
            k += want[i] < 0 ? snprintf(b + k, sizeof b - (size_t)k, i ? ", C" : "C_out")
                             : snprintf(b + k, sizeof b - (size_t)k, i ? ", %lld" : "%lld",
                                        (long long)want[i]);
        snprintf(b + k, sizeof b - (size_t)k, "]");
        return ddpm_fail(DDPM_ERR_FORMAT, "%s: tensor '%s' has shape %s, expected %s", path, key,
                         a, b);
    }
    if (t->numel > (size_t)1 << 28)
        return ddpm_fail(DDPM_ERR_FORMAT, "%s: tensor '%s' is too large", path, key);
    *out = t;
    return DDPM_OK;
}

/* One BasicConv2d named prefix (".conv.weight", ".bn.*"): checks it takes c_in channels with
 * the spec's kernel; with dst, folds it into dst (weights, then the bias at dst + round16(w)).
 * *c_out receives its width, *floats what it takes in the weights buffer. */
static int load_conv(const ddpm_safetensors *st, const char *path, const char *prefix,
                     const conv_spec *s, int c_in, float *dst, int *c_out, size_t *floats) {
    char key[160];
    const ddpm_tensor *w = NULL, *p[4] = {NULL, NULL, NULL, NULL};
    snprintf(key, sizeof key, "%s.conv.weight", prefix);
    int rc = check_tensor(st, path, key, 4, (const int64_t[]){-1, c_in, s->kh, s->kw}, &w);
    if (rc) return rc;
    const int64_t co = w->shape[0];
    if (co < 1 || co > 65536)
        return ddpm_fail(DDPM_ERR_FORMAT, "%s: tensor '%s' has %lld output channels (1..65536)",
                         path, key, (long long)co);
    static const char *const bn[4] = {"weight", "bias", "running_mean", "running_var"};
    for (int i = 0; i < 4; i++) {
        snprintf(key, sizeof key, "%s.bn.%s", prefix, bn[i]);
        if ((rc = check_tensor(st, path, key, 1, (const int64_t[]){co}, &p[i]))) return rc;
    }
    *c_out = (int)co;
    *floats = round16(w->numel) + round16((size_t)co);
    if (!dst) return DDPM_OK;
    float *bias = dst + round16(w->numel), *v = ddpm_alloc(4 * (size_t)co, sizeof(float));
    if (!v) return DDPM_ERR_NOMEM;
    for (int i = 0; i < 4 && !rc; i++) {
        snprintf(key, sizeof key, "%s.bn.%s", prefix, bn[i]);
        if (!(rc = ddpm_tensor_to_f32(p[i], v + i * co)))
            rc = ddpm_check_finite(v + i * co, (size_t)co, path, key);
    }
    snprintf(key, sizeof key, "%s.conv.weight", prefix);
    if (!rc && !(rc = ddpm_tensor_to_f32(w, dst))) rc = ddpm_check_finite(dst, w->numel, path, key);
    snprintf(key, sizeof key, "%s.bn", prefix);
    const size_t per = w->numel / (size_t)co;
    for (int64_t c = 0; c < co && !rc; c++) {
        const double var = v[3 * co + c];
        if (var < 0) {
            rc = ddpm_fail(DDPM_ERR_FORMAT, "%s: tensor '%s.running_var' holds the negative "
                           "variance %g", path, key, var);
            break;
        }
        const double scale = v[c] / sqrt(var + BN_EPS);
        for (size_t k = 0; k < per; k++) dst[c * per + k] = (float)(dst[c * per + k] * scale);
        bias[c] = (float)(v[co + c] - v[2 * co + c] * scale);
    }
    free(v);
    /* a huge gamma over a tiny variance can overflow the folded values */
    if (!rc) rc = ddpm_check_finite(dst, per * (size_t)co, path, key);
    if (!rc) rc = ddpm_check_finite(bias, (size_t)co, path, key);
    return rc;
}

/* Walks the network checking every conv against its input width; with net->weights set, also
 * folds the weights into it. Returns the floats the weights take in *floats. */
static int load_all(ddpm_inception *net, const ddpm_safetensors *st, const char *path,
                    size_t *floats) {
    size_t off = 0;
    int width = 3; /* RGB */
    char prefix[128];
    for (int b = 0; b < N_BLOCKS; b++) {
        const block_spec *s = NET[b].spec;
        incep_block *bk = &net->block[b];
        bk->c_in = width;
        int c_out[MAX_CONVS] = {0};
        for (int i = 0; i < s->n_convs; i++) {
            const conv_spec *c = &s->conv[i];
            const int c_in = c->src >= 0 ? c_out[c->src] : width;
            if (*c->name) snprintf(prefix, sizeof prefix, "%s.%s", NET[b].name, c->name);
            else snprintf(prefix, sizeof prefix, "%s", NET[b].name);
            size_t n = 0;
            float *dst = net->weights ? net->weights + off : NULL;
            int rc = load_conv(st, path, prefix, c, c_in, dst, &c_out[i], &n);
            if (rc) return rc;
            if (dst) {
                bk->conv[i] = (incep_conv){dst, dst + n - round16((size_t)c_out[i]), c_in, c_out[i]};
                net->n_weights += (size_t)c_out[i] * c_in * c->kh * c->kw;
            }
            off += n;
        }
        int w = 0;
        for (int j = 0; j < s->n_cat; j++) w += s->cat[j] == SRC_POOL ? width : c_out[s->cat[j]];
        if (w > 65536 * 6) return ddpm_fail(DDPM_ERR_FORMAT, "%s: %s is too wide", path, NET[b].name);
        bk->c_out = width = w;
    }
    *floats = off;
    return DDPM_OK;
}

int ddpm_inception_load(const char *path, ddpm_inception **out) {
    *out = NULL;
    ddpm_safetensors st;
    int rc = ddpm_weights_read(path, NULL, &st);
    if (rc) return rc;
    ddpm_inception *net = ddpm_alloc(1, sizeof *net);
    size_t floats = 0;
    if (!net) rc = DDPM_ERR_NOMEM;
    if (!rc) rc = load_all(net, &st, path, &floats); /* shapes first: nothing large yet */
    if (!rc && !(net->weights = ddpm_alloc_aligned(floats, sizeof(float)))) rc = DDPM_ERR_NOMEM;
    if (!rc) rc = load_all(net, &st, path, &floats);
    ddpm_safetensors_free(&st);
    if (rc) {
        ddpm_inception_free(net);
        return rc;
    }
    net->n_floats = floats;
    *out = net;
    return DDPM_OK;
}

void ddpm_inception_free(ddpm_inception *net) {
    if (!net) return;
    free(net->weights);
    free(net->io[0]);
    free(net->io[1]);
    free(net->scratch);
    free(net);
}

int ddpm_inception_feature_dim(const ddpm_inception *net) {
    return net ? net->block[N_BLOCKS - 1].c_out : 0;
}

size_t ddpm_inception_weight_count(const ddpm_inception *net) { return net ? net->n_weights : 0; }

/* ---- the forward ----------------------------------------------------------------------------- */

/* Scratch memory, reset to a mark after each use. With base NULL it only counts (planning). */
typedef struct {
    float *base;
    size_t used, peak;
} arena;

static float *take(arena *a, size_t n) {
    float *p = a->base ? a->base + a->used : NULL;
    a->used += round16(n); /* every piece 64-byte aligned, as the conv kernels like */
    if (a->used > a->peak) a->peak = a->used;
    return p;
}

/* y [nb, c_out, Ho, Wo] = relu(conv(x [nb, c_in, g.h, g.w]) + folded bias). */
static void conv_run(const incep_conv *cv, const conv_spec *s, const float *x, geom g, float *y,
                     int nb, arena *a) {
    const size_t mark = a->used;
    int h = g.h, w = g.w, pad = s->ph;
    if (s->ph != s->pw) { /* one axis padded: an explicit copy, then padding 0 */
        h += 2 * s->ph, w += 2 * s->pw, pad = 0;
        float *xp = take(a, (size_t)nb * cv->c_in * h * w);
        if (a->base) ddpm_pad2d_forward(xp, x, nb, cv->c_in, g.h, g.w, s->ph, s->ph, s->pw, s->pw);
        x = xp;
    }
    ddpm_conv_dims d;
    DDPM_CHECK(ddpm_conv2d_dims(&d, nb, cv->c_in, h, w, cv->c_out, s->kh, s->kw, s->stride, pad) ==
               DDPM_OK);
    float *ws = take(a, ddpm_conv2d_workspace(&d));
    if (a->base) {
        ddpm_conv2d_forward(y, x, cv->w, cv->b, &d, ws);
        ddpm_relu_forward(y, y, (size_t)nb * cv->c_out * d.H_out * d.W_out);
    }
    a->used = mark;
}

/* Channels [c0, c0 + c) of y [nb, c_total, hw] = src [nb, c, hw] (torch.cat along dim 1). */
static void put_channels(float *y, int c_total, int c0, const float *src, int c, int nb,
                         size_t hw) {
    const size_t n = (size_t)c * hw;
#pragma omp parallel for schedule(static) if ((size_t)nb * n > OMP_MIN_WORK)
    for (int b = 0; b < nb; b++)
        memcpy(y + ((size_t)b * c_total + c0) * hw, src + (size_t)b * n, sizeof(float) * n);
}

static void pool_run(pool_kind k, float *y, const float *x, int nb, geom g) {
    if (k == POOL_AVG_S1) ddpm_avgpool2d_pad_forward(y, x, nb, g.c, g.h, g.w, 3, 1, 1);
    else if (k == POOL_MAX_S1) ddpm_maxpool2d_pad_forward(y, x, nb, g.c, g.h, g.w, 3, 1, 1);
    else ddpm_maxpool2d_pad_forward(y, x, nb, g.c, g.h, g.w, 3, 2, 0);
}

/* y [nb, out] = block(x [nb, g]); returns the output geometry. A branch that ends in the
 * output is written straight into its channels when they are contiguous (one item, or one
 * branch); the others go through the arena and are copied in. */
static geom block_run(const incep_block *bk, const block_spec *s, const float *x, geom g,
                      float *y, int nb, arena *a) {
    geom co[MAX_CONVS] = {{0, 0, 0}};
    const geom out = block_geom(s, bk, g, co), gp = pooled_geom(s->pool, g);
    const size_t mark = a->used, hw = (size_t)out.h * out.w;
    const int direct = nb == 1 || s->n_cat == 1;
    float *dst[MAX_CONVS] = {0}, *pooled = NULL;
    int c0[MAX_CAT] = {0}, in_cat[MAX_CONVS], pool_cat = -1;
    for (int i = 0; i < MAX_CONVS; i++) in_cat[i] = -1;
    for (int j = 0, c = 0; j < s->n_cat; j++) {
        c0[j] = c;
        if (s->cat[j] == SRC_POOL) pool_cat = j, c += gp.c;
        else in_cat[s->cat[j]] = j, c += co[s->cat[j]].c;
    }
    if (s->pool != POOL_NONE) {
        pooled = direct && pool_cat >= 0 ? (a->base ? y + c0[pool_cat] * hw : NULL)
                                         : take(a, (size_t)nb * gp.c * gp.h * gp.w);
        if (a->base) pool_run(s->pool, pooled, x, nb, g);
    }
    for (int i = 0; i < s->n_convs; i++) {
        const conv_spec *c = &s->conv[i];
        if (direct && in_cat[i] >= 0) dst[i] = a->base ? y + c0[in_cat[i]] * hw : NULL;
        else dst[i] = take(a, (size_t)nb * co[i].c * co[i].h * co[i].w);
        const float *in = c->src == SRC_X ? x : c->src == SRC_POOL ? pooled : dst[c->src];
        const geom gi = c->src == SRC_X ? g : c->src == SRC_POOL ? gp : co[c->src];
        conv_run(&bk->conv[i], c, in, gi, dst[i], nb, a);
    }
    if (a->base && !direct)
        for (int j = 0; j < s->n_cat; j++) {
            const int k = s->cat[j];
            put_channels(y, out.c, c0[j], k == SRC_POOL ? pooled : dst[k], k == SRC_POOL ? gp.c : co[k].c,
                         nb, hw);
        }
    a->used = mark;
    return out;
}

/* The network on io[0] = [nb, 3, 299, 299] (already 2x - 1): features [nb, F]. With a->base
 * NULL, only plans: *io_floats receives the floats each of the two buffers needs. */
static void net_run(const ddpm_inception *net, float *const io[2], int nb, arena *a,
                    float *features, size_t *io_floats) {
    geom g = {3, FID_SIZE, FID_SIZE};
    size_t need = (size_t)nb * 3 * FID_SIZE * FID_SIZE;
    int cur = 0;
    for (int b = 0; b < N_BLOCKS; b++) {
        g = block_run(&net->block[b], NET[b].spec, io[cur], g, io[1 - cur], nb, a);
        const size_t n = (size_t)nb * g.c * g.h * g.w;
        need = n > need ? n : need;
        cur = 1 - cur;
    }
    *io_floats = need;
    if (!a->base) return;
    /* adaptive average pool to 1 x 1 */
    const size_t hw = (size_t)g.h * g.w;
    const float *x = io[cur];
#pragma omp parallel for schedule(static) if ((size_t)nb * g.c * hw > OMP_MIN_WORK)
    for (int bc = 0; bc < nb * g.c; bc++) {
        double s = 0;
        for (size_t i = 0; i < hw; i++) s += x[(size_t)bc * hw + i];
        features[bc] = (float)(s / (double)hw);
    }
}

/* The two buffers and the arena for chunks of nb images with C input channels. */
static void plan(const ddpm_inception *net, int nb, int C, size_t *io_floats,
                 size_t *scratch_floats) {
    arena a = {0};
    net_run(net, (float *[2]){NULL, NULL}, nb, &a, NULL, io_floats);
    /* the resized input before its channels are repeated lives in io[1] */
    const size_t in = (size_t)nb * C * FID_SIZE * FID_SIZE;
    if (in > *io_floats) *io_floats = in;
    *scratch_floats = a.peak;
}

size_t ddpm_inception_memory(const ddpm_inception *net, int batch) {
    if (!net || batch < 1) return 0;
    size_t io, scratch;
    plan(net, batch, 3, &io, &scratch);
    return sizeof(float) * (net->n_floats + 2 * io + scratch);
}

static int reserve(ddpm_inception *net, int nb, int C) {
    size_t io, scratch;
    plan(net, nb, C, &io, &scratch);
    if (io > net->io_cap) {
        for (int i = 0; i < 2; i++) {
            free(net->io[i]);
            if (!(net->io[i] = ddpm_alloc_aligned(io, sizeof(float)))) {
                net->io_cap = 0;
                return DDPM_ERR_NOMEM;
            }
        }
        net->io_cap = io;
    }
    if (scratch > net->scratch_cap) {
        free(net->scratch);
        if (!(net->scratch = ddpm_alloc_aligned(scratch ? scratch : 16, sizeof(float)))) {
            net->scratch_cap = 0;
            return DDPM_ERR_NOMEM;
        }
        net->scratch_cap = scratch;
    }
    return DDPM_OK;
}

int ddpm_inception_features(ddpm_inception *net, const float *x, size_t n, int C, int H, int W,
                            int signed_range, float *features) {
    if (!net) return ddpm_fail(DDPM_ERR_INVALID, "inception: no network");
    if (C != 1 && C != 3)
        return ddpm_fail(DDPM_ERR_INVALID, "inception: images have %d channels (1 or 3)", C);
    if (H < 1 || W < 1 || H > 1 << 16 || W > 1 << 16)
        return ddpm_fail(DDPM_ERR_INVALID, "inception: images of %dx%d pixels", H, W);
    const int F = ddpm_inception_feature_dim(net);
    const size_t per = (size_t)C * H * W, plane = (size_t)FID_SIZE * FID_SIZE;
    const int chunk = DDPM_INCEPTION_CHUNK;
    int rc = DDPM_OK;
    for (size_t i0 = 0; i0 < n && !rc; i0 += (size_t)chunk) {
        const int nb = n - i0 < (size_t)chunk ? (int)(n - i0) : chunk;
        /* planned per chunk: the conv workspaces depend on the batch and the threads */
        if ((rc = reserve(net, nb, C))) break;
        const size_t m = (size_t)nb * 3 * plane;
        float *in = net->io[0];
        /* pytorch-fid: resize, then 2x - 1; from [-1, 1] the two commute (the bilinear
         * weights sum to 1), so signed input is resized as it is */
        const float alpha = signed_range ? 1.0f : 2.0f, beta = signed_range ? 0.0f : -1.0f;
        if (C == 3) {
            ddpm_resize_bilinear_forward(in, x + i0 * per, nb, 3, H, W, FID_SIZE, FID_SIZE);
            if (!signed_range) ddpm_scale_forward(in, in, alpha, beta, m);
        } else {
            float *g = net->io[1];
            ddpm_resize_bilinear_forward(g, x + i0 * per, nb, 1, H, W, FID_SIZE, FID_SIZE);
#pragma omp parallel for schedule(static) if (m > OMP_MIN_WORK)
            for (int bc = 0; bc < nb * 3; bc++) /* gray repeated to RGB */
                for (size_t k = 0; k < plane; k++)
                    in[(size_t)bc * plane + k] = alpha * g[(size_t)(bc / 3) * plane + k] + beta;
        }
        arena a = {net->scratch, 0, 0};
        size_t io_floats;
        net_run(net, net->io, nb, &a, features + i0 * (size_t)F, &io_floats);
        DDPM_CHECK(io_floats <= net->io_cap && a.peak <= net->scratch_cap);
    }
    return rc;
}

/* unet.c - the DDPM paper's U-Net (Ho et al. 2020), ddpm's default image network.
 *
 * One definition on the tape (unet_net) gives the forward and, through ddpm_tape_backward, the
 * backward. The PyTorch reference is scripts/fixtures/gen_unet.py: same configuration keys, same
 * parameters under the same state_dict names in the same order, same function.
 *
 *   temb = dense.1(SiLU(dense.0(sinusoidal(t, base))))       // [B, 4 base]
 *          (+ cond @ class_emb.weight with num_classes > 0)  // one-hot rows; a zero row adds 0
 *   h    = conv_in(x, or cat(x, self_cond) with self_cond)   // [B, base, H, W]
 *   down: per level i (ch = base mult[i]) num_res_blocks ResnetBlocks (+ AttnBlock at the listed
 *         resolutions), every output saved; stride-2 conv3x3 between levels (its output saved)
 *   mid:  ResnetBlock, AttnBlock, ResnetBlock
 *   up:   per level, deepest first, num_res_blocks + 1 ResnetBlocks, each on cat(h, the last
 *         saved activation); nearest x2 + conv3x3 between levels
 *   out  = conv_out(SiLU(norm_out(h)))                       // [B, in_channels, H, W]
 *
 * H and W may differ (both halve exactly at every level but the last); a level's "resolution",
 * as attn_resolutions lists it, is its height.
 *
 *   ResnetBlock(x) = skip(x) + conv2(Dropout(SiLU(norm2(conv1(SiLU(norm1(x))) + temb_proj(SiLU(temb))))))
 *   AttnBlock(x)   = x + proj_out(MultiHeadAttention(qkv(norm(x))))
 *
 * SiLU(temb) is computed once and shared by every block (PyTorch computes it in each block; the
 * value is the same). The class embedding lookup is cond @ weight, done as a 1x1 transposed
 * convolution, whose weight layout [in, out] is the embedding table's [num_classes, 4 base].
 *
 * Threads and memory: models/tape_net.c runs the batch, split into one slice of items per thread,
 * each recorded on its own tape with single-threaded ops; an eval forward runs in chunks of
 * UNET_EVAL_CHUNK items per slice, so sampling with a large batch needs only a chunk's
 * activations per thread (group norm has no batch statistics, so items are independent). */
#include "core/test_hooks.h"
#include "core/json.h"
#include "models/model_internal.h"

#include <math.h>
#include <stdarg.h>

#define UNET_MAX_LEVELS 8
#define UNET_MAX_RES 16   /* num_res_blocks; the up path has one more per level */
#define UNET_EVAL_CHUNK 8 /* items per eval forward on a tape (measured: 32, 8, 4 equally fast) */

/* Tensors of a ResnetBlock, consecutive in the table from p0 (state_dict order). */
enum { R_N1W, R_N1B, R_C1W, R_C1B, R_TW, R_TB, R_N2W, R_N2B, R_C2W, R_C2B, R_SKW, R_SKB };
/* ... and of an AttnBlock. */
enum { A_NW, A_NB, A_QKVW, A_QKVB, A_OUTW, A_OUTB };

typedef struct {
    int in_channels, height, width, base, mult[UNET_MAX_LEVELS], levels, num_res_blocks;
    int attn_res[UNET_MAX_LEVELS], n_attn, heads, dim_head, groups, num_classes, self_cond;
    int num_timesteps;
    double dropout;
} unet_config;

typedef struct {
    int p0, cin, cout, skip; /* skip: has nin_shortcut (cin != cout) */
} resblock;

typedef struct {
    int p0, ch, hid;
} attnblock;

typedef struct {
    int size, wsize, ch, has_attn, n_blocks; /* size: the level's height (its "resolution") */
    resblock block[UNET_MAX_RES + 1];
    attnblock attn[UNET_MAX_RES + 1];
    int resample; /* downsample / upsample conv weight (bias follows), -1 if none */
} level;

typedef struct {
    ddpm_tape_net tn; /* first: the runtime that runs the network over a batch (tape_net.c) */
    unet_config c;
    int temb;      /* temb.dense.0.weight; .0.bias, .1.weight, .1.bias follow */
    int class_emb; /* -1 without classes */
    int conv_in, norm_out, conv_out;
    level down[UNET_MAX_LEVELS], up[UNET_MAX_LEVELS];
    resblock mid1, mid2;
    attnblock mid_attn;
    float *tf;     /* [max_batch] timesteps as floats */
    float *zeros;  /* [max_batch * max(d, num_classes)] for absent self_cond / cond */
} unet;

/* ---- the network, once --------------------------------------------------------------------- */

static ddpm_var *resblock_fwd(ddpm_tape *tp, const unet *u, const ddpm_param *P0,
                              const resblock *r, ddpm_var *x, ddpm_var *semb) {
    const ddpm_param *P = P0 + r->p0;
    const int G = u->c.groups;
    ddpm_var *h = ddpm_tape_groupnorm_silu(tp, x, G, DDPM_NORM_EPS, &P[R_N1W], &P[R_N1B]);
    h = ddpm_tape_conv2d(tp, h, &P[R_C1W], &P[R_C1B], 1, 1);
    h = ddpm_tape_channel_add(tp, h, ddpm_tape_linear(tp, semb, &P[R_TW], &P[R_TB]));
    h = ddpm_tape_groupnorm_silu(tp, h, G, DDPM_NORM_EPS, &P[R_N2W], &P[R_N2B]);
    h = ddpm_tape_dropout(tp, h, (float)u->c.dropout);
    h = ddpm_tape_conv2d(tp, h, &P[R_C2W], &P[R_C2B], 1, 1);
    ddpm_var *skip = r->skip ? ddpm_tape_conv2d(tp, x, &P[R_SKW], &P[R_SKB], 1, 0) : x;
    return ddpm_tape_add(tp, skip, h);
}

static ddpm_var *attn_fwd(ddpm_tape *tp, const unet *u, const ddpm_param *P0, const attnblock *a,
                          ddpm_var *x) {
    const ddpm_param *P = P0 + a->p0;
    ddpm_var *h = ddpm_tape_groupnorm(tp, x, u->c.groups, &P[A_NW], &P[A_NB]);
    h = ddpm_tape_attention(tp, h, &P[A_QKVW], &P[A_QKVB], &P[A_OUTW], &P[A_OUTB], u->c.heads);
    return ddpm_tape_add(tp, x, h);
}

/* The output [B, in_channels, H, W] for B items; NULL on failure (the tape holds the status). */
static ddpm_var *unet_net(ddpm_tape *tp, const unet *u, const ddpm_param *P, const float *x,
                          const float *sc, const float *cond, const float *tf, int B) {
    const unet_config *c = &u->c;
    const int C = c->in_channels, H = c->height, W = c->width, E = 4 * c->base, L = c->levels;

    // time (and class) embedding [B, 4 base]
    ddpm_var *emb = ddpm_tape_timestep_embedding(tp, tf, B, c->base);
    emb = ddpm_tape_silu(tp, ddpm_tape_linear(tp, emb, &P[u->temb], &P[u->temb + 1]));
    emb = ddpm_tape_linear(tp, emb, &P[u->temb + 2], &P[u->temb + 3]);
    if (c->num_classes > 0) {
        // [B, K, 1, 1] -> [B, 4 base, 1, 1] = cond @ class_emb.weight
        const int K = c->num_classes;
        ddpm_param table = P[u->class_emb];
        table.ndim = 4;
        table.shape[2] = table.shape[3] = 1;
        ddpm_var *y = ddpm_tape_input(tp, cond, 4, (int[]){B, K, 1, 1}, 0);
        y = ddpm_tape_conv_transpose2d(tp, y, &table, NULL, 1, 0);
        emb = ddpm_tape_add(tp, emb, ddpm_tape_reshape(tp, y, 2, (int[]){B, E}));
    }
    ddpm_var *semb = ddpm_tape_silu(tp, emb);

    ddpm_var *h = ddpm_tape_input(tp, x, 4, (int[]){B, C, H, W}, 0);
    if (c->self_cond) h = ddpm_tape_concat(tp, h, ddpm_tape_input(tp, sc, 4, (int[]){B, C, H, W}, 0));
    ddpm_var *hs[1 + UNET_MAX_LEVELS * (UNET_MAX_RES + 1)];
    int n = 0;
    hs[n++] = ddpm_tape_conv2d(tp, h, &P[u->conv_in], &P[u->conv_in + 1], 1, 1);

    for (int i = 0; i < L; i++) {
        const level *lv = &u->down[i];
        for (int j = 0; j < lv->n_blocks; j++) {
            h = resblock_fwd(tp, u, P, &lv->block[j], hs[n - 1], semb);
            if (lv->has_attn) h = attn_fwd(tp, u, P, &lv->attn[j], h);
            hs[n++] = h;
        }
        if (lv->resample >= 0) {
            hs[n] = ddpm_tape_conv2d(tp, hs[n - 1], &P[lv->resample], &P[lv->resample + 1], 2, 1);
            n++;
        }
    }
    h = resblock_fwd(tp, u, P, &u->mid1, hs[n - 1], semb);
    h = attn_fwd(tp, u, P, &u->mid_attn, h);
    h = resblock_fwd(tp, u, P, &u->mid2, h, semb);
    for (int i = L - 1; i >= 0; i--) {
        const level *lv = &u->up[i];
        for (int j = 0; j < lv->n_blocks; j++) {
            h = resblock_fwd(tp, u, P, &lv->block[j], ddpm_tape_concat(tp, h, hs[--n]), semb);
            if (lv->has_attn) h = attn_fwd(tp, u, P, &lv->attn[j], h);
        }
        if (lv->resample >= 0) {
            h = ddpm_tape_upsample_nearest(tp, h, 2);
            h = ddpm_tape_conv2d(tp, h, &P[lv->resample], &P[lv->resample + 1], 1, 1);
        }
    }
    DDPM_CHECK(n == 0);
    h = ddpm_tape_groupnorm_silu(tp, h, c->groups, DDPM_NORM_EPS, &P[u->norm_out], &P[u->norm_out + 1]);
    return ddpm_tape_conv2d(tp, h, &P[u->conv_out], &P[u->conv_out + 1], 1, 1);
}

/* ---- work estimate ------------------------------------------------------------------------- */

/* Multiply-add FLOPs (2 per MAC) of one item's forward: convolutions, linear layers, attention
 * products. Elementwise ops, norms and softmax are not counted. Backward is about twice this. */
static double conv_flops(int cin, int cout, int k, int h, int w) {
    return 2.0 * cin * cout * k * k * (double)h * w;
}

static double res_flops(const resblock *r, int h, int w, int E) {
    return conv_flops(r->cin, r->cout, 3, h, w) + conv_flops(r->cout, r->cout, 3, h, w) +
           2.0 * E * r->cout + (r->skip ? conv_flops(r->cin, r->cout, 1, h, w) : 0.0);
}

static double attn_flops(const attnblock *a, int h, int w) {
    const double N = (double)h * w;
    return 2.0 * N * (3.0 * a->hid * a->ch + a->ch * a->hid) + 4.0 * N * N * a->hid;
}

static double unet_item_flops(const unet *u) {
    const unet_config *c = &u->c;
    const int E = 4 * c->base, L = c->levels;
    double f = 2.0 * c->base * E + 2.0 * E * E + 2.0 * c->num_classes * E;
    f += conv_flops(c->in_channels * (c->self_cond ? 2 : 1), c->base, 3, c->height, c->width);
    for (int i = 0; i < L; i++)
        for (int up = 0; up < 2; up++) {
            const level *lv = up ? &u->up[i] : &u->down[i];
            for (int j = 0; j < lv->n_blocks; j++) {
                f += res_flops(&lv->block[j], lv->size, lv->wsize, E);
                if (lv->has_attn) f += attn_flops(&lv->attn[j], lv->size, lv->wsize);
            }
            /* downsample: stride 2 (output size / 2); upsample: conv at twice the size */
            if (lv->resample >= 0)
                f += up ? conv_flops(lv->ch, lv->ch, 3, 2 * lv->size, 2 * lv->wsize)
                        : conv_flops(lv->ch, lv->ch, 3, lv->size / 2, lv->wsize / 2);
        }
    const int lh = u->down[L - 1].size, lw = u->down[L - 1].wsize;
    f += res_flops(&u->mid1, lh, lw, E) + attn_flops(&u->mid_attn, lh, lw) +
         res_flops(&u->mid2, lh, lw, E);
    f += conv_flops(c->base * c->mult[0], c->in_channels, 3, c->height, c->width);
    return f;
}

/* ---- the model interface -------------------------------------------------------------------
 *
 * The batch runs on models/tape_net.c's runtime in slices of consecutive items, one per thread:
 * items never interact (group norm has no batch statistics; dropout masks are addressed by the
 * item's index in the batch), so each item's output is the same whatever the split. */

/* Items [c0, c0 + n) on tape tp with the handles P (a slice's, or a chunk of it in eval mode). */
static ddpm_var *unet_record(ddpm_model *m, ddpm_tape *tp, const ddpm_param *P,
                             const ddpm_model_input *in, int c0, int n) {
    const unet *u = m->impl;
    const size_t d = m->sample_numel, K = (size_t)u->c.num_classes;
    const float *sc = in->self_cond ? in->self_cond + (size_t)c0 * d : u->zeros;
    const float *cond = in->cond ? in->cond + (size_t)c0 * K : u->zeros;
    return unet_net(tp, u, P, in->x + (size_t)c0 * d, sc, cond, u->tf + c0, n);
}

static int unet_forward(ddpm_model *m, const ddpm_model_input *in, float *out) {
    unet *u = m->impl;
    const int B = in->B;
    /* the U-Net's own wording of the checks (ddpm_tape_net_begin repeats them) */
    u->tn.recorded = 0;
    if (B < 1 || B > m->max_batch)
        return ddpm_fail(DDPM_ERR_INVALID, "unet: batch of %d items (reserved %d)", B, m->max_batch);
    for (int b = 0; b < B; b++) {
        if (in->t[b] < 0 || in->t[b] >= u->c.num_timesteps)
            return ddpm_fail(DDPM_ERR_INVALID, "unet: timestep %d outside the model's 0..%d",
                             in->t[b], u->c.num_timesteps - 1);
        u->tf[b] = (float)in->t[b];
    }
    int rc = ddpm_tape_net_begin(m, in);
    if (rc) return rc;
    return ddpm_tape_net_run(m, in, out, unet_record);
}

static int unet_reserve(ddpm_model *m, int B) {
    unet *u = m->impl;
    const size_t d = m->sample_numel, K = (size_t)u->c.num_classes;
    free(u->tf);
    free(u->zeros);
    u->tf = ddpm_alloc((size_t)B, sizeof(float));
    u->zeros = ddpm_alloc_aligned(ddpm_size_mul((size_t)B, d > K ? d : K), sizeof(float));
    if (!u->tf || !u->zeros) {
        m->max_batch = 0;
        return DDPM_ERR_NOMEM;
    }
    m->max_batch = B;
    return DDPM_OK;
}

static void unet_destroy(ddpm_model *m) {
    if (!m) return;
    unet *u = m->impl;
    if (u) {
        ddpm_tape_net_free(&u->tn);
        free(u->tf);
        free(u->zeros);
        free(u);
    }
    ddpm_model_free_common(m);
}

static const ddpm_model_ops unet_ops = {"unet", unet_forward, ddpm_tape_net_backward, unet_reserve,
                                        unet_destroy};

/* ---- configuration --------------------------------------------------------------------------- */

static const char *const known_keys[] = {
    "kind",   "in_channels", "height",  "width",  "base_channels", "channel_mult",
    "num_res_blocks", "attn_resolutions", "heads", "dim_head", "dropout", "groups",
    "num_classes", "self_cond", "num_timesteps"};

static int bad(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int bad(const char *fmt, ...) {
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return ddpm_fail(DDPM_ERR_INVALID, "model config: %s", msg);
}

/* The attention width at a level of ch channels. */
static int attn_hid(const unet_config *c, int ch) {
    return c->dim_head > 0 ? c->heads * c->dim_head : ch;
}

static int parse_config(const cJSON *j, unet_config *c) {
    memset(c, 0, sizeof *c);
    for (const cJSON *e = j->child; e; e = e->next) {
        int known = 0;
        for (size_t k = 0; k < sizeof known_keys / sizeof known_keys[0]; k++)
            known |= strcmp(e->string, known_keys[k]) == 0;
        if (!known) return bad("unknown key \"%s\" for a unet", e->string);
        for (const cJSON *f = e->next; f; f = f->next)
            if (strcmp(e->string, f->string) == 0) return bad("\"%s\" appears twice", e->string);
    }
    static const int def_mult[3] = {1, 2, 2};
    int rc;
    if ((rc = ddpm_json_int(j, "in_channels", 1, 1, 4096, &c->in_channels)) ||
        (rc = ddpm_json_int(j, "height", 28, 1, 1 << 16, &c->height)) ||
        (rc = ddpm_json_int(j, "width", c->height, 1, 1 << 16, &c->width)) ||
        (rc = ddpm_json_int(j, "base_channels", 32, 4, 4096, &c->base)) ||
        (rc = ddpm_json_int_list(j, "channel_mult", def_mult, 3, UNET_MAX_LEVELS, c->mult, &c->levels)) ||
        (rc = ddpm_json_int(j, "num_res_blocks", 2, 1, UNET_MAX_RES, &c->num_res_blocks)) ||
        (rc = ddpm_json_int(j, "heads", 4, 1, 1024, &c->heads)) ||
        (rc = ddpm_json_int(j, "dim_head", 32, 0, 4096, &c->dim_head)) ||
        (rc = ddpm_json_float(j, "dropout", 0.0, 0.0, 0.99, &c->dropout)) ||
        (rc = ddpm_json_int(j, "groups", 8, 1, 4096, &c->groups)) ||
        (rc = ddpm_json_int(j, "num_classes", 0, 0, 1 << 20, &c->num_classes)) ||
        (rc = ddpm_json_int(j, "num_timesteps", 1000, 1, 1 << 24, &c->num_timesteps)))
        return rc;
    if (c->base % 2)
        return bad("\"base_channels\" must be even (it is the width of the sinusoidal time "
                   "embedding), got %d", c->base);
    const cJSON *sc = cJSON_GetObjectItemCaseSensitive(j, "self_cond");
    if (sc && !cJSON_IsBool(sc) &&
        !(cJSON_IsNumber(sc) && (sc->valuedouble == 0 || sc->valuedouble == 1)))
        return bad("\"self_cond\" must be true or false");
    c->self_cond = sc && (cJSON_IsTrue(sc) || (cJSON_IsNumber(sc) && sc->valuedouble == 1));

    int size = c->height, wsize = c->width;
    for (int i = 0; i < c->levels; i++) {
        if (c->mult[i] < 1 || c->mult[i] > 64)
            return bad("\"channel_mult\"[%d] must be in 1..64 (got %d)", i, c->mult[i]);
        const int ch = c->base * c->mult[i];
        if (ch % c->groups || c->base % c->groups)
            return bad("\"groups\" %d does not divide the %d channels of level %d "
                       "(\"base_channels\" %d x \"channel_mult\"[%d] %d)",
                       c->groups, c->base % c->groups ? c->base : ch, i, c->base, i, c->mult[i]);
        if (i < c->levels - 1) {
            /* A stride-2 conv would round an odd side up and the x2 upsampling would then not
             * match the skip connection: every halving must be exact, on both sides. */
            if (size % 2 || wsize % 2)
                return bad("%s %d does not fit %d levels of \"channel_mult\": every level but "
                           "the last halves the size, and level %d has odd %s %d",
                           size % 2 ? "\"height\"" : "\"width\"",
                           size % 2 ? c->height : c->width, c->levels, i,
                           size % 2 ? "height" : "width", size % 2 ? size : wsize);
            size /= 2;
            wsize /= 2;
        }
    }
    /* attention resolutions: default the lowest level's; an empty list is allowed (attention
     * in the middle only) */
    const cJSON *ar = cJSON_GetObjectItemCaseSensitive(j, "attn_resolutions");
    if (cJSON_IsArray(ar) && cJSON_GetArraySize(ar) == 0) {
        c->n_attn = 0;
    } else {
        const int lowest = size;
        if ((rc = ddpm_json_int_list(j, "attn_resolutions", &lowest, 1, UNET_MAX_LEVELS, c->attn_res,
                                     &c->n_attn)))
            return rc;
    }
    for (int a = 0; a < c->n_attn; a++) {
        int found = 0;
        char sizes[128] = "";
        for (int i = 0, s = c->height; i < c->levels; i++, s /= 2) {
            found |= s == c->attn_res[a];
            snprintf(sizes + strlen(sizes), sizeof sizes - strlen(sizes), i ? ", %d" : "%d", s);
        }
        if (!found)
            return bad("\"attn_resolutions\" lists %d, which is not the resolution (height) of "
                       "a level (%s)", c->attn_res[a], sizes);
    }
    /* attention heads: heads x dim_head wide, or (dim_head 0) the channels split into heads */
    for (int i = 0, s = c->height; i < c->levels; i++, s /= 2) {
        int has = i == c->levels - 1; /* the middle block's attention */
        for (int a = 0; a < c->n_attn; a++) has |= c->attn_res[a] == s;
        const int ch = c->base * c->mult[i];
        if (has && c->dim_head == 0 && ch % c->heads)
            return bad("\"heads\" %d does not divide the %d channels at resolution %d (with "
                       "\"dim_head\" 0 each head gets channels / heads)", c->heads, ch, s);
        if (has && (size_t)attn_hid(c, ch) * 3 > (1u << 20))
            return bad("\"heads\" x \"dim_head\" = %d is too wide", attn_hid(c, ch));
    }
    return DDPM_OK;
}

static char *config_json(const unet_config *c) {
    cJSON *o = cJSON_CreateObject();
    if (!o) return NULL;
    cJSON_AddStringToObject(o, "kind", "unet");
    cJSON_AddNumberToObject(o, "in_channels", c->in_channels);
    cJSON_AddNumberToObject(o, "height", c->height);
    /* square: no "width", so the configurations of square models read as they always did */
    if (c->width != c->height) cJSON_AddNumberToObject(o, "width", c->width);
    cJSON_AddNumberToObject(o, "base_channels", c->base);
    cJSON_AddItemToObject(o, "channel_mult", cJSON_CreateIntArray(c->mult, c->levels));
    cJSON_AddNumberToObject(o, "num_res_blocks", c->num_res_blocks);
    cJSON_AddItemToObject(o, "attn_resolutions", cJSON_CreateIntArray(c->attn_res, c->n_attn));
    cJSON_AddNumberToObject(o, "heads", c->heads);
    cJSON_AddNumberToObject(o, "dim_head", c->dim_head);
    cJSON_AddNumberToObject(o, "dropout", c->dropout);
    cJSON_AddNumberToObject(o, "groups", c->groups);
    cJSON_AddNumberToObject(o, "num_classes", c->num_classes);
    cJSON_AddBoolToObject(o, "self_cond", c->self_cond);
    cJSON_AddNumberToObject(o, "num_timesteps", c->num_timesteps);
    return ddpm_json_print_and_free(o);
}

/* ---- the parameter table, in state_dict order ------------------------------------------------ */

static void decl_res(ddpm_param_table *pt, resblock *r, int temb_ch, const char *pre) {
    const int i = r->cin, o = r->cout;
    r->p0 = DDPM_PARAM(pt, i, 0, 0, 0, "%s.norm1.weight", pre);
    DDPM_PARAM(pt, i, 0, 0, 0, "%s.norm1.bias", pre);
    DDPM_PARAM(pt, o, i, 3, 3, "%s.conv1.weight", pre);
    DDPM_PARAM(pt, o, 0, 0, 0, "%s.conv1.bias", pre);
    DDPM_PARAM(pt, o, temb_ch, 0, 0, "%s.temb_proj.weight", pre);
    DDPM_PARAM(pt, o, 0, 0, 0, "%s.temb_proj.bias", pre);
    DDPM_PARAM(pt, o, 0, 0, 0, "%s.norm2.weight", pre);
    DDPM_PARAM(pt, o, 0, 0, 0, "%s.norm2.bias", pre);
    DDPM_PARAM(pt, o, o, 3, 3, "%s.conv2.weight", pre);
    DDPM_PARAM(pt, o, 0, 0, 0, "%s.conv2.bias", pre);
    r->skip = i != o;
    if (r->skip) {
        DDPM_PARAM(pt, o, i, 1, 1, "%s.nin_shortcut.weight", pre);
        DDPM_PARAM(pt, o, 0, 0, 0, "%s.nin_shortcut.bias", pre);
    }
}

static void decl_attn(ddpm_param_table *pt, attnblock *a, const char *pre) {
    const int C = a->ch, hid = a->hid;
    a->p0 = DDPM_PARAM(pt, C, 0, 0, 0, "%s.norm.weight", pre);
    DDPM_PARAM(pt, C, 0, 0, 0, "%s.norm.bias", pre);
    DDPM_PARAM(pt, 3 * hid, C, 1, 1, "%s.qkv.weight", pre);
    DDPM_PARAM(pt, 3 * hid, 0, 0, 0, "%s.qkv.bias", pre);
    DDPM_PARAM(pt, C, hid, 1, 1, "%s.proj_out.weight", pre);
    DDPM_PARAM(pt, C, 0, 0, 0, "%s.proj_out.bias", pre);
}

static void decl_level(ddpm_param_table *pt, level *lv, int temb_ch, const char *path, int i,
                       const char *resample) {
    char pre[96];
    for (int j = 0; j < lv->n_blocks; j++) {
        snprintf(pre, sizeof pre, "%s.%d.block.%d", path, i, j);
        decl_res(pt, &lv->block[j], temb_ch, pre);
    }
    for (int j = 0; lv->has_attn && j < lv->n_blocks; j++) {
        snprintf(pre, sizeof pre, "%s.%d.attn.%d", path, i, j);
        decl_attn(pt, &lv->attn[j], pre);
    }
    if (lv->resample >= 0) {
        lv->resample = DDPM_PARAM(pt, lv->ch, lv->ch, 3, 3, "%s.%d.%s.conv.weight", path, i, resample);
        DDPM_PARAM(pt, lv->ch, 0, 0, 0, "%s.%d.%s.conv.bias", path, i, resample);
    }
}

/* The channels of every block (the PyTorch module's construction, step by step). */
static void plan(unet *u) {
    const unet_config *c = &u->c;
    const int L = c->levels;
    int skip[1 + UNET_MAX_LEVELS * (UNET_MAX_RES + 1)], n = 0;
    int block_in = c->base, size = c->height, wsize = c->width;
    skip[n++] = block_in;
    for (int i = 0; i < L; i++, size /= 2, wsize /= 2) {
        level *lv = &u->down[i];
        lv->size = size;
        lv->wsize = wsize;
        lv->ch = c->base * c->mult[i];
        lv->n_blocks = c->num_res_blocks;
        for (int a = 0; a < c->n_attn; a++) lv->has_attn |= c->attn_res[a] == size;
        for (int j = 0; j < lv->n_blocks; j++) {
            lv->block[j] = (resblock){.cin = block_in, .cout = lv->ch};
            lv->attn[j] = (attnblock){.ch = lv->ch, .hid = attn_hid(c, lv->ch)};
            block_in = lv->ch;
            skip[n++] = block_in;
        }
        lv->resample = i < L - 1 ? 0 : -1;
        if (i < L - 1) skip[n++] = block_in;
    }
    u->mid1 = u->mid2 = (resblock){.cin = block_in, .cout = block_in};
    u->mid_attn = (attnblock){.ch = block_in, .hid = attn_hid(c, block_in)};
    for (int i = L - 1; i >= 0; i--) {
        level *lv = &u->up[i];
        lv->size = u->down[i].size;
        lv->wsize = u->down[i].wsize;
        lv->ch = u->down[i].ch;
        lv->has_attn = u->down[i].has_attn;
        lv->n_blocks = c->num_res_blocks + 1;
        for (int j = 0; j < lv->n_blocks; j++) {
            lv->block[j] = (resblock){.cin = block_in + skip[--n], .cout = lv->ch};
            lv->attn[j] = (attnblock){.ch = lv->ch, .hid = attn_hid(c, lv->ch)};
            block_in = lv->ch;
        }
        lv->resample = i > 0 ? 0 : -1;
    }
    DDPM_CHECK(n == 0);
}

static void declare(unet *u, ddpm_param_table *pt) {
    const unet_config *c = &u->c;
    const int E = 4 * c->base, L = c->levels;
    u->temb = DDPM_PARAM(pt, E, c->base, 0, 0, "temb.dense.0.weight");
    DDPM_PARAM(pt, E, 0, 0, 0, "temb.dense.0.bias");
    DDPM_PARAM(pt, E, E, 0, 0, "temb.dense.1.weight");
    DDPM_PARAM(pt, E, 0, 0, 0, "temb.dense.1.bias");
    u->class_emb = c->num_classes > 0 ? DDPM_PARAM(pt, c->num_classes, E, 0, 0, "class_emb.weight") : -1;
    const int cin = c->in_channels * (c->self_cond ? 2 : 1);
    u->conv_in = DDPM_PARAM(pt, c->base, cin, 3, 3, "conv_in.weight");
    DDPM_PARAM(pt, c->base, 0, 0, 0, "conv_in.bias");
    for (int i = 0; i < L; i++) decl_level(pt, &u->down[i], E, "down", i, "downsample");
    decl_res(pt, &u->mid1, E, "mid.block_1");
    decl_attn(pt, &u->mid_attn, "mid.attn_1");
    decl_res(pt, &u->mid2, E, "mid.block_2");
    for (int i = 0; i < L; i++) decl_level(pt, &u->up[i], E, "up", i, "upsample");
    const int ch0 = c->base * c->mult[0];
    u->norm_out = DDPM_PARAM(pt, ch0, 0, 0, 0, "norm_out.weight");
    DDPM_PARAM(pt, ch0, 0, 0, 0, "norm_out.bias");
    u->conv_out = DDPM_PARAM(pt, c->in_channels, ch0, 3, 3, "conv_out.weight");
    DDPM_PARAM(pt, c->in_channels, 0, 0, 0, "conv_out.bias");
}

/* ---- initialisation: PyTorch's defaults, and zeros where the paper's code starts at zero ----- */

/* Linear / conv weight and bias ~ U(-1/sqrt(fan_in), 1/sqrt(fan_in)); fan_in from the weight. */
static void init_affine(ddpm_model *m, int w, uint64_t seed) {
    const ddpm_param_info *t = &m->tensors[w];
    const float bound = 1.0f / sqrtf((float)(t->numel / (size_t)t->shape[0]));
    ddpm_init_uniform(m, w, bound, seed);
    ddpm_init_uniform(m, w + 1, bound, seed);
}

static void init_zero(ddpm_model *m, int w) {
    ddpm_init_const(m, w, 0.0f);
    ddpm_init_const(m, w + 1, 0.0f);
}

static void init_norm(ddpm_model *m, int w) {
    ddpm_init_const(m, w, 1.0f);
    ddpm_init_const(m, w + 1, 0.0f);
}

static void init_res(ddpm_model *m, const resblock *r, uint64_t seed) {
    init_norm(m, r->p0 + R_N1W);
    init_affine(m, r->p0 + R_C1W, seed);
    init_affine(m, r->p0 + R_TW, seed);
    init_norm(m, r->p0 + R_N2W);
    init_zero(m, r->p0 + R_C2W);
    if (r->skip) init_affine(m, r->p0 + R_SKW, seed);
}

static void init_attn(ddpm_model *m, const attnblock *a, uint64_t seed) {
    init_norm(m, a->p0 + A_NW);
    init_affine(m, a->p0 + A_QKVW, seed);
    init_zero(m, a->p0 + A_OUTW);
}

static void init_level(ddpm_model *m, const level *lv, uint64_t seed) {
    for (int j = 0; j < lv->n_blocks; j++) {
        init_res(m, &lv->block[j], seed);
        if (lv->has_attn) init_attn(m, &lv->attn[j], seed);
    }
    if (lv->resample >= 0) init_affine(m, lv->resample, seed);
}

static void init_params(ddpm_model *m, const unet *u, uint64_t seed) {
    init_affine(m, u->temb, seed);
    init_affine(m, u->temb + 2, seed);
    if (u->class_emb >= 0) ddpm_init_normal(m, u->class_emb, 1.0f, seed);
    init_affine(m, u->conv_in, seed);
    for (int i = 0; i < u->c.levels; i++) {
        init_level(m, &u->down[i], seed);
        init_level(m, &u->up[i], seed);
    }
    init_res(m, &u->mid1, seed);
    init_attn(m, &u->mid_attn, seed);
    init_res(m, &u->mid2, seed);
    init_norm(m, u->norm_out);
    init_zero(m, u->conv_out);
}

int ddpm_unet_create(const void *config_cjson, uint64_t seed, ddpm_model **out) {
    *out = NULL;
    unet_config c;
    int rc = parse_config(config_cjson, &c);
    if (rc) return rc;
    ddpm_model *m = ddpm_model_new(&unet_ops, sizeof(unet));
    if (!m) return DDPM_ERR_NOMEM;
    unet *u = m->impl;
    u->c = c;
    m->cond_dim = c.num_classes;
    m->self_cond = c.self_cond;
    plan(u);
    ddpm_param_table pt = {0};
    declare(u, &pt);
    rc = ddpm_tape_net_init_image(m, c.in_channels, c.height, c.width, c.num_timesteps,
                                  config_json(&c), &pt);
    if (!rc) rc = unet_reserve(m, 1);
    if (rc) {
        unet_destroy(m);
        return rc;
    }
    init_params(m, u, seed);
    u->tn.sliced = 1;
    u->tn.item_flops = unet_item_flops(u);
    u->tn.eval_chunk_items = UNET_EVAL_CHUNK;
    *out = m;
    return DDPM_OK;
}

/* Forward FLOPs per item (convolutions, linear layers, attention products; 2 per multiply-add),
 * for benchmarks (core/test_hooks.h). */
double ddpm_unet_flops(const ddpm_model *m) {
    return m && m->ops == &unet_ops ? ((const unet *)m->impl)->tn.item_flops : 0.0;
}

/* unet2d.c - diffusers' UNet2DModel as the pixel DDPM checkpoints use it (google/ddpm-cifar10-32,
 * ddpm-celebahq-256 / church / bedroom / cat, every model of diffusers' train_unconditional.py).
 *
 * The configuration is diffusers' own config.json (plus ddpm's "kind": "unet2d"); every key it
 * does not support is refused by name. The parameters carry diffusers' state_dict names
 * (conv_in.weight, time_embedding.linear_1.weight, down_blocks.0.resnets.0.norm1.weight,
 * down_blocks.1.attentions.0.to_q.weight, mid_block.attentions.0.group_norm.weight,
 * up_blocks.0.upsamplers.0.conv.weight, conv_norm_out.weight, conv_out.weight, ...), so its
 * diffusion_pytorch_model.safetensors loads by name and ddpm's own exports are diffusers files.
 * The PyTorch reference with diffusers' module structure is scripts/fixtures/gen_diffusers.py.
 *
 *   x    = 2 x - 1 with center_input_sample
 *   temb = linear_2(SiLU(linear_1(timesteps(t))))             // [B, E], E = time_embedding_dim
 *          (+ cond @ class_embedding.weight with num_class_embeds; cond one-hot)
 *   h    = conv_in(x)                                         // [B, boc[0], H, W]
 *   down: per block i, layers_per_block ResnetBlock2D (each followed by an Attention in an
 *         AttnDownBlock2D), every output saved; then (not the last block) Downsample2D: a
 *         stride-2 conv3x3, after zero padding of the right and bottom with downsample_padding 0
 *   mid:  UNetMidBlock2D: ResnetBlock2D, Attention (unless add_attention is false), ResnetBlock2D,
 *         each output divided by mid_block_scale_factor
 *   up:   per block, layers_per_block + 1 ResnetBlock2D on cat(h, the last saved activation)
 *         (each followed by an Attention in an AttnUpBlock2D); then (not the last) Upsample2D:
 *         nearest x2 + conv3x3
 *   out  = conv_out(SiLU(conv_norm_out(h)))
 *
 *   ResnetBlock2D(x) = shortcut(x) + conv2(Dropout(SiLU(norm2(conv1(SiLU(norm1(x)))
 *                      + time_emb_proj(SiLU(temb))))))    (shortcut: conv_shortcut 1x1 if cin != cout)
 *   Attention(x)     = x + to_out.0(MHA(to_q, to_k, to_v of group_norm(x)))
 *                      heads = C / attention_head_dim (1 head of C without it), scale dim_head^-1/2
 *   timesteps(t)     = cat(sin(t f), cos(t f)) (cos first with flip_sin_to_cos),
 *                      f_k = exp(-ln(10000) k / (half - freq_shift)), in float32 as diffusers
 *
 * Every group norm uses norm_eps (1e-6 in those checkpoints). ddpm's attention operator takes one
 * fused q/k/v weight: to_q, to_k and to_v are declared next to each other (weights, then biases)
 * so that the three tensors are one [3 inner, C] block of the parameter buffer; the attention
 * width must then be a multiple of 16 (every real configuration's is). Runs on tape_net.c like
 * ddpm's unet (sliced: group norm has no batch statistics), so it trains too. */
#include "core/test_hooks.h"
#include "core/json.h"
#include "models/model_internal.h"

#include <math.h>
#include <stdarg.h>

#define U2_MAX_LEVELS 8
#define U2_MAX_LAYERS 16 /* layers_per_block; the up blocks have one more */
#define U2_EVAL_CHUNK 8  /* items per eval forward on a tape (as ddpm's unet) */

/* Tensors of a ResnetBlock2D, consecutive in the table from p0 (state_dict order). */
enum { R_N1W, R_N1B, R_C1W, R_C1B, R_TW, R_TB, R_N2W, R_N2B, R_C2W, R_C2B, R_SKW, R_SKB };
/* ... and of an Attention: to_q, to_k, to_v weights, then their biases (see the top). */
enum { A_NW, A_NB, A_QW, A_KW, A_VW, A_QB, A_KB, A_VB, A_OW, A_OB };

typedef struct {
    int in_channels, size, num_timesteps, center_input, flip_sin_to_cos;
    double freq_shift;
    int boc[U2_MAX_LEVELS], levels, layers;
    int down_attn[U2_MAX_LEVELS], up_attn[U2_MAX_LEVELS]; /* per down block / up block */
    double mid_scale, dropout, eps;
    int downsample_padding, attention_head_dim; /* 0: null (one head of C channels) */
    int groups, attn_groups;                    /* attn_groups: the mid block's attention */
    int add_attention, num_class_embeds, temb_dim, set_temb_dim, set_T;
} u2_config;

typedef struct {
    int p0, cin, cout, skip;
} resblock;

typedef struct {
    int p0, ch, heads, dim_head, groups;
} attnblock;

typedef struct {
    int size, ch, has_attn, n_layers;
    resblock res[U2_MAX_LAYERS + 1];
    attnblock attn[U2_MAX_LAYERS + 1];
    int resample; /* downsampler / upsampler conv weight (bias follows), -1 if none */
} block;

typedef struct {
    ddpm_tape_net tn; /* first: the runtime that runs the network over a batch (tape_net.c) */
    u2_config c;
    int temb;      /* time_embedding.linear_1.weight; .bias, linear_2.weight, .bias follow */
    int class_emb; /* -1 without classes */
    int conv_in, norm_out, conv_out;
    block down[U2_MAX_LEVELS], up[U2_MAX_LEVELS]; /* up[i]: up_blocks.i (deepest first) */
    resblock mid1, mid2;
    attnblock mid_attn;
    float *temb_in; /* [max_batch, boc[0]] the sinusoidal embedding of each item's t */
    float *zeros;   /* [max_batch * num_class_embeds] for an absent cond */
} unet2d;

/* ---- the network, once --------------------------------------------------------------------- */

static ddpm_var *resblock_fwd(ddpm_tape *tp, const unet2d *u, const ddpm_param *P0,
                              const resblock *r, ddpm_var *x, ddpm_var *semb, float out_scale) {
    const ddpm_param *P = P0 + r->p0;
    const int G = u->c.groups;
    const float eps = (float)u->c.eps;
    ddpm_var *h = ddpm_tape_groupnorm_silu(tp, x, G, eps, &P[R_N1W], &P[R_N1B]);
    h = ddpm_tape_conv2d(tp, h, &P[R_C1W], &P[R_C1B], 1, 1);
    h = ddpm_tape_channel_add(tp, h, ddpm_tape_linear(tp, semb, &P[R_TW], &P[R_TB]));
    h = ddpm_tape_groupnorm_silu(tp, h, G, eps, &P[R_N2W], &P[R_N2B]);
    h = ddpm_tape_dropout(tp, h, (float)u->c.dropout);
    h = ddpm_tape_conv2d(tp, h, &P[R_C2W], &P[R_C2B], 1, 1);
    ddpm_var *skip = r->skip ? ddpm_tape_conv2d(tp, x, &P[R_SKW], &P[R_SKB], 1, 0) : x;
    h = ddpm_tape_add(tp, skip, h);
    return out_scale != 1.0f ? ddpm_tape_scale(tp, h, 1.0f / out_scale) : h;
}

static ddpm_var *attn_fwd(ddpm_tape *tp, const unet2d *u, const ddpm_param *P0,
                          const attnblock *a, ddpm_var *x, float out_scale) {
    const ddpm_param *P = P0 + a->p0;
    const int C = a->ch, inner = a->heads * a->dim_head;
    /* the fused views: to_q, to_k, to_v are consecutive in the buffers (checked at creation) */
    ddpm_param wqkv = {P[A_QW].w, P[A_QW].g, 2, {3 * inner, C}};
    ddpm_param bqkv = {P[A_QB].w, P[A_QB].g, 1, {3 * inner}};
    ddpm_var *h = ddpm_tape_groupnorm_eps(tp, x, a->groups, (float)u->c.eps, &P[A_NW], &P[A_NB]);
    h = ddpm_tape_attention(tp, h, &wqkv, &bqkv, &P[A_OW], &P[A_OB], a->heads);
    h = ddpm_tape_add(tp, h, x);
    return out_scale != 1.0f ? ddpm_tape_scale(tp, h, 1.0f / out_scale) : h;
}

/* The output [B, in_channels, H, W] for B items; NULL on failure (the tape holds the status). */
static ddpm_var *unet2d_net(ddpm_tape *tp, const unet2d *u, const ddpm_param *P, const float *x,
                            const float *cond, const float *temb_in, int B) {
    const u2_config *c = &u->c;
    const int C = c->in_channels, H = c->size, E = c->temb_dim, L = c->levels;
    const float ms = (float)c->mid_scale;

    // time (and class) embedding [B, E]
    ddpm_var *emb = ddpm_tape_input(tp, temb_in, 2, (int[]){B, c->boc[0]}, 0);
    emb = ddpm_tape_silu(tp, ddpm_tape_linear(tp, emb, &P[u->temb], &P[u->temb + 1]));
    emb = ddpm_tape_linear(tp, emb, &P[u->temb + 2], &P[u->temb + 3]);
    if (c->num_class_embeds > 0) {
        // [B, K, 1, 1] -> [B, E, 1, 1] = cond @ class_embedding.weight (a one-hot row picks one)
        const int K = c->num_class_embeds;
        ddpm_param table = P[u->class_emb];
        table.ndim = 4;
        table.shape[2] = table.shape[3] = 1;
        ddpm_var *y = ddpm_tape_input(tp, cond, 4, (int[]){B, K, 1, 1}, 0);
        y = ddpm_tape_conv_transpose2d(tp, y, &table, NULL, 1, 0);
        emb = ddpm_tape_add(tp, emb, ddpm_tape_reshape(tp, y, 2, (int[]){B, E}));
    }
    ddpm_var *semb = ddpm_tape_silu(tp, emb); /* each ResnetBlock2D's SiLU(temb), computed once */

    ddpm_var *h = ddpm_tape_input(tp, x, 4, (int[]){B, C, H, H}, 0);
    if (c->center_input) h = ddpm_tape_affine(tp, h, 2.0f, -1.0f);
    ddpm_var *hs[1 + U2_MAX_LEVELS * (U2_MAX_LAYERS + 1)];
    int n = 0;
    hs[n++] = ddpm_tape_conv2d(tp, h, &P[u->conv_in], &P[u->conv_in + 1], 1, 1);

    for (int i = 0; i < L; i++) {
        const block *b = &u->down[i];
        for (int j = 0; j < b->n_layers; j++) {
            h = resblock_fwd(tp, u, P, &b->res[j], hs[n - 1], semb, 1.0f);
            if (b->has_attn) h = attn_fwd(tp, u, P, &b->attn[j], h, 1.0f);
            hs[n++] = h;
        }
        if (b->resample >= 0) {
            h = hs[n - 1];
            const int pad = c->downsample_padding;
            if (pad == 0) h = ddpm_tape_pad2d(tp, h, 0, 1, 0, 1);
            hs[n] = ddpm_tape_conv2d(tp, h, &P[b->resample], &P[b->resample + 1], 2, pad);
            n++;
        }
    }
    h = resblock_fwd(tp, u, P, &u->mid1, hs[n - 1], semb, ms);
    if (c->add_attention) h = attn_fwd(tp, u, P, &u->mid_attn, h, ms);
    h = resblock_fwd(tp, u, P, &u->mid2, h, semb, ms);
    for (int i = 0; i < L; i++) {
        const block *b = &u->up[i];
        for (int j = 0; j < b->n_layers; j++) {
            h = resblock_fwd(tp, u, P, &b->res[j], ddpm_tape_concat(tp, h, hs[--n]), semb, 1.0f);
            if (b->has_attn) h = attn_fwd(tp, u, P, &b->attn[j], h, 1.0f);
        }
        if (b->resample >= 0) {
            h = ddpm_tape_upsample_nearest(tp, h, 2);
            h = ddpm_tape_conv2d(tp, h, &P[b->resample], &P[b->resample + 1], 1, 1);
        }
    }
    DDPM_CHECK(n == 0);
    h = ddpm_tape_groupnorm_silu(tp, h, c->groups, (float)c->eps, &P[u->norm_out], &P[u->norm_out + 1]);
    return ddpm_tape_conv2d(tp, h, &P[u->conv_out], &P[u->conv_out + 1], 1, 1);
}

/* diffusers' get_timestep_embedding in float32: exponent_k = -ln(10000) k / (half - shift),
 * arg = t exp(exponent_k), sin then cos (swapped with flip), a zero column for an odd dim. */
static void timestep_embedding(float *out, const int *t, int B, int dim, double shift, int flip) {
    const int half = dim / 2;
    const float lnp = (float)-log(10000.0), den = (float)((double)half - shift);
    for (int b = 0; b < B; b++) {
        float *o = out + (size_t)b * dim;
        for (int k = 0; k < half; k++) {
            const float f = expf(lnp * (float)k / den);
            const float a = (float)t[b] * f;
            o[flip ? half + k : k] = sinf(a);
            o[flip ? k : half + k] = cosf(a);
        }
        if (dim % 2) o[dim - 1] = 0.0f;
    }
}

/* ---- work estimate ------------------------------------------------------------------------- */

/* Multiply-add FLOPs (2 per MAC) of one item's forward: convolutions, linear layers, attention
 * products (elementwise ops, norms and softmax not counted). */
static double conv_flops(int cin, int cout, int k, int size) {
    return 2.0 * cin * cout * k * k * (double)size * size;
}

static double res_flops(const resblock *r, int size, int E) {
    return conv_flops(r->cin, r->cout, 3, size) + conv_flops(r->cout, r->cout, 3, size) +
           2.0 * E * r->cout + (r->skip ? conv_flops(r->cin, r->cout, 1, size) : 0.0);
}

static double attn_flops(const attnblock *a, int size) {
    const double N = (double)size * size, hid = (double)a->heads * a->dim_head;
    return 2.0 * N * (3.0 * hid * a->ch + a->ch * hid) + 4.0 * N * N * hid;
}

static double item_flops(const unet2d *u) {
    const u2_config *c = &u->c;
    const int E = c->temb_dim, L = c->levels;
    double f = 2.0 * c->boc[0] * E + 2.0 * E * E + 2.0 * c->num_class_embeds * E;
    f += conv_flops(c->in_channels, c->boc[0], 3, c->size);
    for (int i = 0; i < L; i++)
        for (int up = 0; up < 2; up++) {
            const block *b = up ? &u->up[i] : &u->down[i];
            for (int j = 0; j < b->n_layers; j++) {
                f += res_flops(&b->res[j], b->size, E);
                if (b->has_attn) f += attn_flops(&b->attn[j], b->size);
            }
            if (b->resample >= 0) f += conv_flops(b->ch, b->ch, 3, up ? 2 * b->size : b->size / 2);
        }
    const int low = u->down[L - 1].size;
    f += res_flops(&u->mid1, low, E) + res_flops(&u->mid2, low, E);
    if (c->add_attention) f += attn_flops(&u->mid_attn, low);
    f += conv_flops(c->boc[0], c->in_channels, 3, c->size);
    return f;
}

/* ---- the model interface ------------------------------------------------------------------- */

static ddpm_var *unet2d_record(ddpm_model *m, ddpm_tape *tp, const ddpm_param *P,
                               const ddpm_model_input *in, int c0, int n) {
    const unet2d *u = m->impl;
    const size_t d = m->sample_numel, K = (size_t)u->c.num_class_embeds;
    const float *cond = in->cond ? in->cond + (size_t)c0 * K : u->zeros;
    return unet2d_net(tp, u, P, in->x + (size_t)c0 * d, cond,
                      u->temb_in + (size_t)c0 * u->c.boc[0], n);
}

static int unet2d_forward(ddpm_model *m, const ddpm_model_input *in, float *out) {
    unet2d *u = m->impl;
    int rc = ddpm_tape_net_begin(m, in);
    if (rc) return rc;
    timestep_embedding(u->temb_in, in->t, in->B, u->c.boc[0], u->c.freq_shift, u->c.flip_sin_to_cos);
    return ddpm_tape_net_run(m, in, out, unet2d_record);
}

static int unet2d_reserve(ddpm_model *m, int B) {
    unet2d *u = m->impl;
    const size_t K = (size_t)u->c.num_class_embeds;
    free(u->temb_in);
    free(u->zeros);
    u->temb_in = ddpm_alloc_aligned(ddpm_size_mul((size_t)B, (size_t)u->c.boc[0]), sizeof(float));
    u->zeros = ddpm_alloc_aligned(ddpm_size_mul((size_t)B, K ? K : 1), sizeof(float));
    if (!u->temb_in || !u->zeros) {
        m->max_batch = 0;
        return DDPM_ERR_NOMEM;
    }
    m->max_batch = B;
    return DDPM_OK;
}

static void unet2d_destroy(ddpm_model *m) {
    if (!m) return;
    unet2d *u = m->impl;
    if (u) {
        ddpm_tape_net_free(&u->tn);
        free(u->temb_in);
        free(u->zeros);
        free(u);
    }
    ddpm_model_free_common(m);
}

static const ddpm_model_ops unet2d_ops = {"unet2d", unet2d_forward, ddpm_tape_net_backward,
                                          unet2d_reserve, unet2d_destroy};

/* ---- configuration: diffusers' config.json ------------------------------------------------ */

static int bad(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int bad(const char *fmt, ...) {
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return ddpm_fail(DDPM_ERR_INVALID, "UNet2DModel config: %s", msg);
}

/* Every UNet2DModel argument ddpm reads (supported values only, checked below), the keys
 * diffusers writes for information (_class_name, _diffusers_version, _name_or_path) and ddpm's
 * "kind". Anything else is refused by name. */
static const char *const known_keys[] = {
    "kind", "_class_name", "_diffusers_version", "_name_or_path", "sample_size", "in_channels",
    "out_channels", "center_input_sample", "time_embedding_type", "time_embedding_dim",
    "freq_shift", "flip_sin_to_cos", "down_block_types", "mid_block_type", "up_block_types",
    "block_out_channels", "layers_per_block", "mid_block_scale_factor", "downsample_padding",
    "downsample_type", "upsample_type", "dropout", "act_fn", "attention_head_dim",
    "norm_num_groups", "attn_norm_num_groups", "norm_eps", "resnet_time_scale_shift",
    "add_attention", "class_embed_type", "num_class_embeds", "num_train_timesteps"};

static const cJSON *get(const cJSON *j, const char *key) {
    return cJSON_GetObjectItemCaseSensitive(j, key);
}

/* An integer key that may be null (diffusers' None): *out = null_value when null, def when
 * absent. */
static int nullable_int(const cJSON *j, const char *key, int def, int null_value, int lo, int hi,
                        int *out) {
    const cJSON *v = get(j, key);
    if (cJSON_IsNull(v)) {
        *out = null_value;
        return DDPM_OK;
    }
    return ddpm_json_int(j, key, def, lo, hi, out);
}

static int get_bool(const cJSON *j, const char *key, int def, int *out) {
    const cJSON *v = get(j, key);
    if (!v) {
        *out = def;
        return DDPM_OK;
    }
    if (!cJSON_IsBool(v)) return bad("\"%s\" must be true or false", key);
    *out = cJSON_IsTrue(v);
    return DDPM_OK;
}

/* A string key that must take one of the listed values (def when absent; null is refused unless
 * allow_null, which gives *out = NULL). */
static int get_choice(const cJSON *j, const char *key, const char *def, int allow_null,
                      const char *const *ok, int n_ok, const char **out) {
    const cJSON *v = get(j, key);
    if (!v) {
        *out = def;
        return DDPM_OK;
    }
    if (cJSON_IsNull(v) && allow_null) {
        *out = NULL;
        return DDPM_OK;
    }
    if (cJSON_IsString(v))
        for (int i = 0; i < n_ok; i++)
            if (strcmp(v->valuestring, ok[i]) == 0) {
                *out = ok[i];
                return DDPM_OK;
            }
    char list[256] = "";
    for (int i = 0; i < n_ok; i++)
        snprintf(list + strlen(list), sizeof list - strlen(list), i ? ", %s" : "%s", ok[i]);
    return bad("\"%s\" %s is not supported (ddpm supports: %s%s)", key,
               cJSON_IsString(v) ? v->valuestring : "(not a string)", list,
               allow_null ? (n_ok ? ", null" : "null") : "");
}

/* A list of block type names: has_attn[i] = 1 for the attention type. */
static int block_types(const cJSON *j, const char *key, const char *const *def, const char *plain,
                       const char *attn, int *has_attn, int *n) {
    const cJSON *v = get(j, key);
    if (!v) {
        for (*n = 0; *n < 4; (*n)++) has_attn[*n] = strcmp(def[*n], attn) == 0;
        return DDPM_OK;
    }
    if (!cJSON_IsArray(v)) return bad("\"%s\" must be a list of block names", key);
    *n = 0;
    for (const cJSON *e = v->child; e; e = e->next) {
        if (*n >= U2_MAX_LEVELS) return bad("\"%s\" has more than %d blocks", key, U2_MAX_LEVELS);
        if (!cJSON_IsString(e) || (strcmp(e->valuestring, plain) && strcmp(e->valuestring, attn)))
            return bad("\"%s\"[%d] %s is not supported (ddpm supports %s and %s)", key, *n,
                       cJSON_IsString(e) ? e->valuestring : "(not a string)", plain, attn);
        has_attn[(*n)++] = strcmp(e->valuestring, attn) == 0;
    }
    if (*n == 0) return bad("\"%s\" is empty", key);
    return DDPM_OK;
}

static int parse_config(const cJSON *j, u2_config *c) {
    memset(c, 0, sizeof *c);
    int rc;
    if ((rc = ddpm_json_check_keys(j, "UNet2DModel", known_keys,
                                   sizeof known_keys / sizeof known_keys[0])))
        return rc;
    for (const cJSON *e = j->child; e; e = e->next)
        for (const cJSON *f = e->next; f; f = f->next)
            if (strcmp(e->string, f->string) == 0) return bad("\"%s\" appears twice", e->string);
    const cJSON *cls = get(j, "_class_name");
    if (cls && (!cJSON_IsString(cls) || strcmp(cls->valuestring, "UNet2DModel") != 0))
        return bad("\"_class_name\" is %s, not UNet2DModel",
                   cJSON_IsString(cls) ? cls->valuestring : "not a string");

    /* sample_size: an int, or [h, w] with h == w */
    const cJSON *ss = get(j, "sample_size");
    if (!ss || cJSON_IsNull(ss)) return bad("\"sample_size\" is needed (the image size)");
    if (cJSON_IsArray(ss)) {
        const cJSON *a = cJSON_GetArrayItem(ss, 0), *b = cJSON_GetArrayItem(ss, 1);
        if (cJSON_GetArraySize(ss) != 2 || !cJSON_IsNumber(a) || !cJSON_IsNumber(b) ||
            a->valuedouble != b->valuedouble)
            return bad("\"sample_size\" must be one size or [h, w] with h == w (ddpm samples "
                       "square images)");
        ss = a;
    }
    if (!cJSON_IsNumber(ss) || ss->valuedouble != floor(ss->valuedouble) || ss->valuedouble < 1 ||
        ss->valuedouble > 65536)
        return bad("\"sample_size\" must be an integer in 1..65536");
    c->size = (int)ss->valuedouble;

    int out_channels;
    static const char *const pos[] = {"positional"}, *const silu[] = {"silu", "swish"},
                      *const conv[] = {"conv"}, *const midb[] = {"UNetMidBlock2D"},
                      *const dflt[] = {"default"};
    const char *s;
    if ((rc = ddpm_json_int(j, "in_channels", 3, 1, 4096, &c->in_channels)) ||
        (rc = ddpm_json_int(j, "out_channels", 3, 1, 4096, &out_channels)) ||
        (rc = get_bool(j, "center_input_sample", 0, &c->center_input)) ||
        (rc = get_choice(j, "time_embedding_type", "positional", 0, pos, 1, &s)) ||
        (rc = nullable_int(j, "time_embedding_dim", 0, 0, 1, 1 << 16, &c->temb_dim)) ||
        (rc = ddpm_json_float(j, "freq_shift", 0.0, -1e6, 1e6, &c->freq_shift)) ||
        (rc = get_bool(j, "flip_sin_to_cos", 1, &c->flip_sin_to_cos)) ||
        (rc = get_choice(j, "mid_block_type", "UNetMidBlock2D", 0, midb, 1, &s)) ||
        (rc = ddpm_json_int(j, "layers_per_block", 2, 1, U2_MAX_LAYERS, &c->layers)) ||
        (rc = ddpm_json_float(j, "mid_block_scale_factor", 1.0, 1e-6, 1e6, &c->mid_scale)) ||
        (rc = ddpm_json_int(j, "downsample_padding", 1, 0, 1, &c->downsample_padding)) ||
        (rc = get_choice(j, "downsample_type", "conv", 0, conv, 1, &s)) ||
        (rc = get_choice(j, "upsample_type", "conv", 0, conv, 1, &s)) ||
        (rc = ddpm_json_float(j, "dropout", 0.0, 0.0, 0.99, &c->dropout)) ||
        (rc = get_choice(j, "act_fn", "silu", 0, silu, 2, &s)) ||
        (rc = nullable_int(j, "attention_head_dim", 8, 0, 1, 1 << 16, &c->attention_head_dim)) ||
        (rc = ddpm_json_int(j, "norm_num_groups", 32, 1, 4096, &c->groups)) ||
        (rc = nullable_int(j, "attn_norm_num_groups", 0, 0, 1, 4096, &c->attn_groups)) ||
        (rc = ddpm_json_float(j, "norm_eps", 1e-5, 1e-12, 1.0, &c->eps)) ||
        (rc = get_choice(j, "resnet_time_scale_shift", "default", 0, dflt, 1, &s)) ||
        (rc = get_bool(j, "add_attention", 1, &c->add_attention)) ||
        (rc = get_choice(j, "class_embed_type", NULL, 1, NULL, 0, &s)) ||
        (rc = nullable_int(j, "num_class_embeds", 0, 0, 1, 1 << 20, &c->num_class_embeds)) ||
        (rc = nullable_int(j, "num_train_timesteps", 0, 0, 2, 1 << 24, &c->num_timesteps)))
        return rc;
    if (out_channels != c->in_channels)
        return bad("\"out_channels\" %d differs from \"in_channels\" %d: ddpm's networks predict a "
                   "sample-shaped eps, x_0 or v (a learned variance is not supported)",
                   out_channels, c->in_channels);
    const cJSON *nng = get(j, "norm_num_groups");
    if (cJSON_IsNull(nng)) return bad("\"norm_num_groups\" null is not supported");
    c->set_temb_dim = c->temb_dim > 0;
    c->set_T = c->num_timesteps > 0;
    if (!c->set_T) c->num_timesteps = 1000;

    static const int def_boc[4] = {224, 448, 672, 896};
    if ((rc = ddpm_json_int_list(j, "block_out_channels", def_boc, 4, U2_MAX_LEVELS, c->boc, &c->levels)))
        return rc;
    static const char *const def_down[4] = {"DownBlock2D", "AttnDownBlock2D", "AttnDownBlock2D",
                                            "AttnDownBlock2D"};
    static const char *const def_up[4] = {"AttnUpBlock2D", "AttnUpBlock2D", "AttnUpBlock2D",
                                          "UpBlock2D"};
    int nd, nu;
    if ((rc = block_types(j, "down_block_types", def_down, "DownBlock2D", "AttnDownBlock2D",
                          c->down_attn, &nd)) ||
        (rc = block_types(j, "up_block_types", def_up, "UpBlock2D", "AttnUpBlock2D", c->up_attn,
                          &nu)))
        return rc;
    if (nd != c->levels || nu != c->levels)
        return bad("\"block_out_channels\" has %d entries, \"down_block_types\" %d and "
                   "\"up_block_types\" %d: they must be equal", c->levels, nd, nu);
    if (!c->set_temb_dim) c->temb_dim = 4 * c->boc[0];
    if (c->boc[0] < 2) return bad("\"block_out_channels\"[0] must be at least 2 (the width of the "
                                  "sinusoidal time embedding)");
    if ((double)(c->boc[0] / 2) == c->freq_shift)
        return bad("\"freq_shift\" %g is half of \"block_out_channels\"[0] %d: the time embedding's "
                   "frequencies would divide by zero", c->freq_shift, c->boc[0]);
    int size = c->size;
    for (int i = 0; i < c->levels; i++) {
        const int ch = c->boc[i];
        if (ch < 1 || ch > 1 << 14) return bad("\"block_out_channels\"[%d] %d is out of 1..16384", i, ch);
        if (ch % c->groups)
            return bad("\"norm_num_groups\" %d does not divide \"block_out_channels\"[%d] %d",
                       c->groups, i, ch);
        if (i < c->levels - 1) {
            if (size % 2)
                return bad("\"sample_size\" %d does not fit %d blocks: every block but the last "
                           "halves the size, and block %d has odd size %d", c->size, c->levels, i,
                           size);
            size /= 2;
        }
    }
    /* every attention: heads = C / attention_head_dim (one head without it), its width a
     * multiple of 16 (the fused q/k/v block, see the top) */
    for (int i = 0; i <= c->levels; i++) {
        const int mid = i == c->levels;
        const int ch = mid ? c->boc[c->levels - 1] : c->boc[i];
        const int has = mid ? c->add_attention : c->down_attn[i] || c->up_attn[c->levels - 1 - i];
        if (!has) continue;
        const int dh = c->attention_head_dim ? c->attention_head_dim : ch;
        if (ch / dh < 1)
            return bad("\"attention_head_dim\" %d exceeds the %d channels of an attention block",
                       dh, ch);
        if ((ch / dh * dh) % 16)
            return bad("the attention width %d (heads x \"attention_head_dim\") is not a multiple "
                       "of 16, which ddpm's fused q/k/v needs", ch / dh * dh);
        if (mid && c->attn_groups && ch % c->attn_groups)
            return bad("\"attn_norm_num_groups\" %d does not divide the %d channels of the middle "
                       "block", c->attn_groups, ch);
    }
    if (!c->attn_groups) c->attn_groups = c->groups;
    return DDPM_OK;
}

/* The configuration as diffusers' config.json writes it, plus "kind" (every key resolved). */
static char *config_json(const u2_config *c) {
    cJSON *o = cJSON_CreateObject();
    if (!o) return NULL;
    const int L = c->levels;
    const char *down[U2_MAX_LEVELS], *up[U2_MAX_LEVELS];
    for (int i = 0; i < L; i++) {
        down[i] = c->down_attn[i] ? "AttnDownBlock2D" : "DownBlock2D";
        up[i] = c->up_attn[i] ? "AttnUpBlock2D" : "UpBlock2D";
    }
    cJSON_AddStringToObject(o, "kind", "unet2d");
    cJSON_AddStringToObject(o, "_class_name", "UNet2DModel");
    cJSON_AddStringToObject(o, "act_fn", "silu");
    cJSON_AddBoolToObject(o, "add_attention", c->add_attention);
    if (c->attention_head_dim)
        cJSON_AddNumberToObject(o, "attention_head_dim", c->attention_head_dim);
    else
        cJSON_AddNullToObject(o, "attention_head_dim");
    if (c->attn_groups != c->groups)
        cJSON_AddNumberToObject(o, "attn_norm_num_groups", c->attn_groups);
    else
        cJSON_AddNullToObject(o, "attn_norm_num_groups");
    cJSON_AddItemToObject(o, "block_out_channels", cJSON_CreateIntArray(c->boc, L));
    cJSON_AddBoolToObject(o, "center_input_sample", c->center_input);
    cJSON_AddNullToObject(o, "class_embed_type");
    cJSON_AddItemToObject(o, "down_block_types", cJSON_CreateStringArray(down, L));
    cJSON_AddNumberToObject(o, "downsample_padding", c->downsample_padding);
    cJSON_AddStringToObject(o, "downsample_type", "conv");
    cJSON_AddNumberToObject(o, "dropout", c->dropout);
    cJSON_AddBoolToObject(o, "flip_sin_to_cos", c->flip_sin_to_cos);
    cJSON_AddNumberToObject(o, "freq_shift", c->freq_shift);
    cJSON_AddNumberToObject(o, "in_channels", c->in_channels);
    cJSON_AddNumberToObject(o, "layers_per_block", c->layers);
    cJSON_AddNumberToObject(o, "mid_block_scale_factor", c->mid_scale);
    cJSON_AddStringToObject(o, "mid_block_type", "UNetMidBlock2D");
    cJSON_AddNumberToObject(o, "norm_eps", c->eps);
    cJSON_AddNumberToObject(o, "norm_num_groups", c->groups);
    if (c->num_class_embeds)
        cJSON_AddNumberToObject(o, "num_class_embeds", c->num_class_embeds);
    else
        cJSON_AddNullToObject(o, "num_class_embeds");
    cJSON_AddNumberToObject(o, "num_train_timesteps", c->num_timesteps);
    cJSON_AddNumberToObject(o, "out_channels", c->in_channels);
    cJSON_AddStringToObject(o, "resnet_time_scale_shift", "default");
    cJSON_AddNumberToObject(o, "sample_size", c->size);
    if (c->set_temb_dim)
        cJSON_AddNumberToObject(o, "time_embedding_dim", c->temb_dim);
    else
        cJSON_AddNullToObject(o, "time_embedding_dim");
    cJSON_AddStringToObject(o, "time_embedding_type", "positional");
    cJSON_AddItemToObject(o, "up_block_types", cJSON_CreateStringArray(up, L));
    cJSON_AddStringToObject(o, "upsample_type", "conv");
    return ddpm_json_print_and_free(o);
}

/* ---- the parameter table ------------------------------------------------------------------ */

static void decl_res(ddpm_param_table *pt, resblock *r, int E, const char *pre) {
    const int i = r->cin, o = r->cout;
    r->p0 = DDPM_PARAM(pt, i, 0, 0, 0, "%s.norm1.weight", pre);
    DDPM_PARAM(pt, i, 0, 0, 0, "%s.norm1.bias", pre);
    DDPM_PARAM(pt, o, i, 3, 3, "%s.conv1.weight", pre);
    DDPM_PARAM(pt, o, 0, 0, 0, "%s.conv1.bias", pre);
    DDPM_PARAM(pt, o, E, 0, 0, "%s.time_emb_proj.weight", pre);
    DDPM_PARAM(pt, o, 0, 0, 0, "%s.time_emb_proj.bias", pre);
    DDPM_PARAM(pt, o, 0, 0, 0, "%s.norm2.weight", pre);
    DDPM_PARAM(pt, o, 0, 0, 0, "%s.norm2.bias", pre);
    DDPM_PARAM(pt, o, o, 3, 3, "%s.conv2.weight", pre);
    DDPM_PARAM(pt, o, 0, 0, 0, "%s.conv2.bias", pre);
    r->skip = i != o;
    if (r->skip) {
        DDPM_PARAM(pt, o, i, 1, 1, "%s.conv_shortcut.weight", pre);
        DDPM_PARAM(pt, o, 0, 0, 0, "%s.conv_shortcut.bias", pre);
    }
}

static void decl_attn(ddpm_param_table *pt, attnblock *a, const char *pre) {
    const int C = a->ch, inner = a->heads * a->dim_head;
    a->p0 = DDPM_PARAM(pt, C, 0, 0, 0, "%s.group_norm.weight", pre);
    DDPM_PARAM(pt, C, 0, 0, 0, "%s.group_norm.bias", pre);
    DDPM_PARAM(pt, inner, C, 0, 0, "%s.to_q.weight", pre);
    DDPM_PARAM(pt, inner, C, 0, 0, "%s.to_k.weight", pre);
    DDPM_PARAM(pt, inner, C, 0, 0, "%s.to_v.weight", pre);
    DDPM_PARAM(pt, inner, 0, 0, 0, "%s.to_q.bias", pre);
    DDPM_PARAM(pt, inner, 0, 0, 0, "%s.to_k.bias", pre);
    DDPM_PARAM(pt, inner, 0, 0, 0, "%s.to_v.bias", pre);
    DDPM_PARAM(pt, C, inner, 0, 0, "%s.to_out.0.weight", pre);
    DDPM_PARAM(pt, C, 0, 0, 0, "%s.to_out.0.bias", pre);
}

/* diffusers registers a block's attentions before its resnets (state_dict order). */
static void decl_block(ddpm_param_table *pt, block *b, int E, const char *path, int i,
                       const char *resample) {
    char pre[96];
    for (int j = 0; b->has_attn && j < b->n_layers; j++) {
        snprintf(pre, sizeof pre, "%s.%d.attentions.%d", path, i, j);
        decl_attn(pt, &b->attn[j], pre);
    }
    for (int j = 0; j < b->n_layers; j++) {
        snprintf(pre, sizeof pre, "%s.%d.resnets.%d", path, i, j);
        decl_res(pt, &b->res[j], E, pre);
    }
    if (b->resample >= 0) {
        b->resample = DDPM_PARAM(pt, b->ch, b->ch, 3, 3, "%s.%d.%s.0.conv.weight", path, i, resample);
        DDPM_PARAM(pt, b->ch, 0, 0, 0, "%s.%d.%s.0.conv.bias", path, i, resample);
    }
}

static attnblock attn_of(const u2_config *c, int ch, int groups) {
    const int dh = c->attention_head_dim ? c->attention_head_dim : ch;
    return (attnblock){.ch = ch, .heads = ch / dh, .dim_head = dh, .groups = groups};
}

/* The channels of every block, as UNet2DModel's constructor computes them. */
static void plan(unet2d *u) {
    const u2_config *c = &u->c;
    const int L = c->levels;
    int skip[1 + U2_MAX_LEVELS * (U2_MAX_LAYERS + 1)], n = 0, size = c->size;
    int out = c->boc[0];
    skip[n++] = out;
    for (int i = 0; i < L; i++, size /= 2) {
        block *b = &u->down[i];
        const int in = out;
        out = c->boc[i];
        b->size = size;
        b->ch = out;
        b->has_attn = c->down_attn[i];
        b->n_layers = c->layers;
        for (int j = 0; j < b->n_layers; j++) {
            b->res[j] = (resblock){.cin = j ? out : in, .cout = out};
            b->attn[j] = attn_of(c, out, c->groups);
            skip[n++] = out;
        }
        b->resample = i < L - 1 ? 0 : -1;
        if (i < L - 1) skip[n++] = out;
    }
    const int low = c->boc[L - 1];
    u->mid1 = u->mid2 = (resblock){.cin = low, .cout = low};
    u->mid_attn = attn_of(c, low, c->attn_groups);
    out = c->boc[L - 1];
    for (int i = 0; i < L; i++) {
        block *b = &u->up[i];
        const int prev = out, lvl = L - 1 - i;
        out = c->boc[lvl];
        const int in = c->boc[lvl > 0 ? lvl - 1 : 0]; /* reversed[min(i + 1, L - 1)] */
        b->size = u->down[lvl].size;
        b->ch = out;
        b->has_attn = c->up_attn[i];
        b->n_layers = c->layers + 1;
        for (int j = 0; j < b->n_layers; j++) {
            const int res_skip = j == b->n_layers - 1 ? in : out;
            b->res[j] = (resblock){.cin = (j ? out : prev) + res_skip, .cout = out};
            b->attn[j] = attn_of(c, out, c->groups);
            DDPM_CHECK(skip[--n] == res_skip); /* the saved activation it is concatenated with */
        }
        b->resample = i < L - 1 ? 0 : -1;
    }
    DDPM_CHECK(n == 0);
}

static void declare(unet2d *u, ddpm_param_table *pt) {
    const u2_config *c = &u->c;
    const int E = c->temb_dim, L = c->levels, c0 = c->boc[0];
    u->conv_in = DDPM_PARAM(pt, c0, c->in_channels, 3, 3, "conv_in.weight");
    DDPM_PARAM(pt, c0, 0, 0, 0, "conv_in.bias");
    u->temb = DDPM_PARAM(pt, E, c0, 0, 0, "time_embedding.linear_1.weight");
    DDPM_PARAM(pt, E, 0, 0, 0, "time_embedding.linear_1.bias");
    DDPM_PARAM(pt, E, E, 0, 0, "time_embedding.linear_2.weight");
    DDPM_PARAM(pt, E, 0, 0, 0, "time_embedding.linear_2.bias");
    u->class_emb = c->num_class_embeds > 0
                       ? DDPM_PARAM(pt, c->num_class_embeds, E, 0, 0, "class_embedding.weight")
                       : -1;
    for (int i = 0; i < L; i++) decl_block(pt, &u->down[i], E, "down_blocks", i, "downsamplers");
    if (c->add_attention) decl_attn(pt, &u->mid_attn, "mid_block.attentions.0");
    decl_res(pt, &u->mid1, E, "mid_block.resnets.0");
    decl_res(pt, &u->mid2, E, "mid_block.resnets.1");
    for (int i = 0; i < L; i++) decl_block(pt, &u->up[i], E, "up_blocks", i, "upsamplers");
    u->norm_out = DDPM_PARAM(pt, c0, 0, 0, 0, "conv_norm_out.weight");
    DDPM_PARAM(pt, c0, 0, 0, 0, "conv_norm_out.bias");
    u->conv_out = DDPM_PARAM(pt, c->in_channels, c0, 3, 3, "conv_out.weight");
    DDPM_PARAM(pt, c->in_channels, 0, 0, 0, "conv_out.bias");
}

/* to_q, to_k, to_v of an attention must be one block of the buffer (the fused view). */
static int fused(const ddpm_model *m, const attnblock *a) {
    const ddpm_param_info *t = m->tensors + a->p0;
    return t[A_KW].offset == t[A_QW].offset + t[A_QW].numel &&
           t[A_VW].offset == t[A_KW].offset + t[A_KW].numel &&
           t[A_KB].offset == t[A_QB].offset + t[A_QB].numel &&
           t[A_VB].offset == t[A_KB].offset + t[A_KB].numel;
}

static int all_fused(const ddpm_model *m, const unet2d *u) {
    int ok = !u->c.add_attention || fused(m, &u->mid_attn);
    for (int i = 0; i < u->c.levels; i++)
        for (int j = 0; j < U2_MAX_LAYERS + 1; j++) {
            if (u->down[i].has_attn && j < u->down[i].n_layers) ok &= fused(m, &u->down[i].attn[j]);
            if (u->up[i].has_attn && j < u->up[i].n_layers) ok &= fused(m, &u->up[i].attn[j]);
        }
    return ok;
}

/* ---- initialisation: PyTorch's defaults (diffusers adds no initialisation of its own) ------ */

static void init_norm(ddpm_model *m, int w) {
    ddpm_init_const(m, w, 1.0f);
    ddpm_init_const(m, w + 1, 0.0f);
}

static void init_res(ddpm_model *m, const resblock *r, uint64_t seed) {
    init_norm(m, r->p0 + R_N1W);
    ddpm_init_fan_in(m, r->p0 + R_C1W, r->p0 + R_C1B, seed);
    ddpm_init_fan_in(m, r->p0 + R_TW, r->p0 + R_TB, seed);
    init_norm(m, r->p0 + R_N2W);
    ddpm_init_fan_in(m, r->p0 + R_C2W, r->p0 + R_C2B, seed);
    if (r->skip) ddpm_init_fan_in(m, r->p0 + R_SKW, r->p0 + R_SKB, seed);
}

static void init_attn(ddpm_model *m, const attnblock *a, uint64_t seed) {
    init_norm(m, a->p0 + A_NW);
    for (int k = 0; k < 3; k++) ddpm_init_fan_in(m, a->p0 + A_QW + k, a->p0 + A_QB + k, seed);
    ddpm_init_fan_in(m, a->p0 + A_OW, a->p0 + A_OB, seed);
}

static void init_block(ddpm_model *m, const block *b, uint64_t seed) {
    for (int j = 0; j < b->n_layers; j++) {
        init_res(m, &b->res[j], seed);
        if (b->has_attn) init_attn(m, &b->attn[j], seed);
    }
    if (b->resample >= 0) ddpm_init_fan_in(m, b->resample, b->resample + 1, seed);
}

static void init_params(ddpm_model *m, const unet2d *u, uint64_t seed) {
    ddpm_init_fan_in(m, u->conv_in, u->conv_in + 1, seed);
    ddpm_init_fan_in(m, u->temb, u->temb + 1, seed);
    ddpm_init_fan_in(m, u->temb + 2, u->temb + 3, seed);
    if (u->class_emb >= 0) ddpm_init_normal(m, u->class_emb, 1.0f, seed);
    for (int i = 0; i < u->c.levels; i++) {
        init_block(m, &u->down[i], seed);
        init_block(m, &u->up[i], seed);
    }
    init_res(m, &u->mid1, seed);
    if (u->c.add_attention) init_attn(m, &u->mid_attn, seed);
    init_res(m, &u->mid2, seed);
    init_norm(m, u->norm_out);
    ddpm_init_fan_in(m, u->conv_out, u->conv_out + 1, seed);
}

int ddpm_unet2d_create(const void *config_cjson, uint64_t seed, ddpm_model **out) {
    *out = NULL;
    u2_config c;
    int rc = parse_config(config_cjson, &c);
    if (rc) return rc;
    ddpm_model *m = ddpm_model_new(&unet2d_ops, sizeof(unet2d));
    if (!m) return DDPM_ERR_NOMEM;
    unet2d *u = m->impl;
    u->c = c;
    m->cond_dim = c.num_class_embeds;
    plan(u);
    ddpm_param_table pt = {0};
    declare(u, &pt);
    rc = ddpm_tape_net_init_image(m, c.in_channels, c.size, c.size, c.num_timesteps, config_json(&c), &pt);
    if (!rc) rc = unet2d_reserve(m, 1);
    if (!rc && !all_fused(m, u))
        rc = ddpm_fail(DDPM_ERR_INVALID, "unet2d: the q/k/v tensors are not contiguous");
    if (rc) {
        unet2d_destroy(m);
        return rc;
    }
    init_params(m, u, seed);
    u->tn.sliced = 1;
    u->tn.item_flops = item_flops(u);
    u->tn.eval_chunk_items = U2_EVAL_CHUNK;
    *out = m;
    return DDPM_OK;
}

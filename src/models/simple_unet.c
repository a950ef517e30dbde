/* simple_unet.c - the "diffusion models from scratch" tutorial's SimpleUnet, written once on
 * the tape: the forward below is also the backward.
 *
 *   temb = relu(Linear(sinusoidal(t)))                  time_mlp.1            [B, E]
 *   x    = conv0(x)                                      3x3, C -> ch[0]       [B, ch[0], H, W]
 *   for i in 0..L-1:  x = downs[i](x, temb), saved       Block(ch[i], ch[i+1])  halves H, W
 *   for i in 0..L-1:  x = ups[i](cat(x, saved.pop()), temb)  Block(up = True)   doubles H, W
 *   out  = output(x)                                     1x1, ch[0] -> C
 *
 * Block(in, out, E, up):
 *   h = bnorm1(relu(conv1(x)))                conv1: 3x3, in (2 in when up) -> out
 *   h = h + relu(time_mlp(temb))[:, :, None, None]
 *   h = bnorm2(relu(conv2(h)))                conv2: 3x3, out -> out
 *   return transform(h)                       Conv2d(out, out, 4, 2, 1), or ConvTranspose2d when up
 *
 * channels = down_channels (the tutorial's (64, 128, 256, 512, 1024)); up_channels is its
 * reverse; L = len(channels) - 1 levels, so height must be divisible by 2^L. t is the integer
 * schedule index (0..num_timesteps-1) as the tutorial feeds it. The tutorial hard-codes 3 image
 * channels; here they are in_channels. Parameter names and their order are the PyTorch module's
 * state_dict (without the batch norms' num_batches_tracked, which loading ignores). */
#include "core/json.h"
#include "models/model_internal.h"

#define SU_MAX_LEVELS 8

typedef struct {
    int in_channels, height, time_emb_dim, num_timesteps;
    int channels[SU_MAX_LEVELS + 1];
    int n_channels; /* L + 1 */
} su_config;

typedef struct {
    int w, b;
} su_affine;

typedef struct {
    su_affine time_mlp, conv1, transform, conv2;
    ddpm_bn_tensors bnorm1, bnorm2;
    int up;
} su_block;

/* The tape net comes first (see models/model_internal.h). */
typedef struct {
    ddpm_tape_net tn;
    su_config cfg;
    su_affine time_lin, conv0, output;
    su_block downs[SU_MAX_LEVELS], ups[SU_MAX_LEVELS];
    float *tbuf; /* [max_batch] timesteps as floats */
} su_net;

/* The activations one item keeps in an eval forward, as network() creates them. */
static size_t eval_item_floats(const su_config *c) {
    const int L = c->n_channels - 1, H = c->height;
    const int *ch = c->channels;
    size_t n = (size_t)c->in_channels * H * H * 2 + (size_t)ch[0] * H * H; /* x, out, conv0 */
    size_t r = (size_t)H;
    for (int i = 0; i < L; i++) { /* conv1, relu, bn, + temb, conv2, relu, bn; transform */
        n += 7 * (size_t)ch[i + 1] * r * r + (size_t)ch[i + 1] * (r / 2) * (r / 2);
        r /= 2;
    }
    for (int i = 0; i < L; i++) { /* concat, then the same at r, transform to 2r */
        const size_t in = (size_t)ch[L - i], out = (size_t)ch[L - i - 1];
        n += 2 * in * r * r + 7 * out * r * r + out * 4 * r * r;
        r *= 2;
    }
    return n;
}

/* ---- the parameter table, in the PyTorch module's state_dict order --------------------------- */

static su_affine decl(ddpm_param_table *pt, int d0, int d1, int d2, int d3, int nb,
                      const char *name) {
    su_affine a;
    a.w = DDPM_PARAM(pt, d0, d1, d2, d3, "%s.weight", name);
    a.b = DDPM_PARAM(pt, nb, 0, 0, 0, "%s.bias", name);
    return a;
}

/* Block.__init__ registers time_mlp, conv1, transform, conv2, bnorm1, bnorm2 in that order. */
static su_block decl_block(ddpm_param_table *pt, int in, int out, int E, int up,
                           const char *prefix) {
    char name[96];
    su_block k;
    k.up = up;
    snprintf(name, sizeof name, "%s.time_mlp", prefix);
    k.time_mlp = decl(pt, out, E, 0, 0, out, name);
    snprintf(name, sizeof name, "%s.conv1", prefix);
    k.conv1 = decl(pt, out, up ? 2 * in : in, 3, 3, out, name);
    snprintf(name, sizeof name, "%s.transform", prefix);
    k.transform = decl(pt, out, out, 4, 4, out, name); /* [C_out, C_in] or [C_in, C_out]: same */
    snprintf(name, sizeof name, "%s.conv2", prefix);
    k.conv2 = decl(pt, out, out, 3, 3, out, name);
    snprintf(name, sizeof name, "%s.bnorm1", prefix);
    k.bnorm1 = ddpm_pt_batchnorm(pt, out, name);
    snprintf(name, sizeof name, "%s.bnorm2", prefix);
    k.bnorm2 = ddpm_pt_batchnorm(pt, out, name);
    return k;
}

static void declare(su_net *p, ddpm_param_table *pt) {
    const su_config *c = &p->cfg;
    const int E = c->time_emb_dim, L = c->n_channels - 1;
    const int *ch = c->channels;
    char name[32];
    p->time_lin = decl(pt, E, E, 0, 0, E, "time_mlp.1");
    p->conv0 = decl(pt, ch[0], c->in_channels, 3, 3, ch[0], "conv0");
    for (int i = 0; i < L; i++) {
        snprintf(name, sizeof name, "downs.%d", i);
        p->downs[i] = decl_block(pt, ch[i], ch[i + 1], E, 0, name);
    }
    for (int i = 0; i < L; i++) { /* up_channels[i] = ch[L - i] */
        snprintf(name, sizeof name, "ups.%d", i);
        p->ups[i] = decl_block(pt, ch[L - i], ch[L - i - 1], E, 1, name);
    }
    p->output = decl(pt, c->in_channels, ch[0], 1, 1, c->in_channels, "output");
}

/* ---- PyTorch's default initialisation -------------------------------------------------------- */

/* Conv2d, ConvTranspose2d and Linear (ddpm_init_fan_in). */
static void init_affine(ddpm_model *m, su_affine a, uint64_t seed) {
    ddpm_init_fan_in(m, a.w, a.b, seed);
}

static void init_all(ddpm_model *m, su_net *p, uint64_t seed) {
    const int L = p->cfg.n_channels - 1;
    init_affine(m, p->time_lin, seed);
    init_affine(m, p->conv0, seed);
    for (int s = 0; s < 2; s++)
        for (int i = 0; i < L; i++) {
            const su_block *k = s ? &p->ups[i] : &p->downs[i];
            init_affine(m, k->time_mlp, seed);
            init_affine(m, k->conv1, seed);
            init_affine(m, k->transform, seed);
            init_affine(m, k->conv2, seed);
            ddpm_init_batchnorm(m, k->bnorm1);
            ddpm_init_batchnorm(m, k->bnorm2);
        }
    init_affine(m, p->output, seed);
}

/* ---- the forward, on the tape ---------------------------------------------------------------- */

/* What the network records with: a tape and its parameter handles (a micro-batch's own, or
 * slice 0's), and the network's layout. */
typedef struct {
    const su_net *n;
    ddpm_tape *t;
    const ddpm_param *prm;
} su_rec;

static ddpm_var *conv(const su_rec *p, ddpm_var *x, su_affine a, int stride, int pad) {
    return ddpm_tape_conv2d(p->t, x, &p->prm[a.w], &p->prm[a.b], stride, pad);
}

static ddpm_var *bn(const su_rec *p, ddpm_var *x, ddpm_bn_tensors n) {
    return ddpm_tape_batchnorm(p->t, x, &p->prm[n.w], &p->prm[n.b], p->prm[n.rm].w,
                               p->prm[n.rv].w);
}

/* Block.forward */
static ddpm_var *block(const su_rec *p, ddpm_var *x, ddpm_var *temb, const su_block *k) {
    ddpm_tape *t = p->t;
    ddpm_var *h = bn(p, ddpm_tape_relu(t, conv(p, x, k->conv1, 1, 1)), k->bnorm1);
    ddpm_var *te = ddpm_tape_relu(t, ddpm_tape_linear(t, temb, &p->prm[k->time_mlp.w],
                                                      &p->prm[k->time_mlp.b]));
    h = ddpm_tape_channel_add(t, h, te);
    h = bn(p, ddpm_tape_relu(t, conv(p, h, k->conv2, 1, 1)), k->bnorm2);
    if (k->up)
        return ddpm_tape_conv_transpose2d(t, h, &p->prm[k->transform.w],
                                          &p->prm[k->transform.b], 2, 1);
    return conv(p, h, k->transform, 2, 1);
}

/* x [B, C, H, H], tt [B] timesteps -> [B, C, H, H] */
static ddpm_var *network(const su_rec *r, const float *x, const float *tt, int B) {
    const su_net *p = r->n;
    const su_config *c = &p->cfg;
    ddpm_tape *t = r->t;
    const int L = c->n_channels - 1, H = c->height;
    ddpm_var *xin = ddpm_tape_input(t, x, 4, (int[]){B, c->in_channels, H, H}, 0);
    ddpm_var *temb = ddpm_tape_timestep_embedding(t, tt, B, c->time_emb_dim);
    temb = ddpm_tape_relu(t, ddpm_tape_linear(t, temb, &r->prm[p->time_lin.w],
                                              &r->prm[p->time_lin.b]));
    ddpm_var *h = conv(r, xin, p->conv0, 1, 1);
    ddpm_var *residual[SU_MAX_LEVELS];
    for (int i = 0; i < L; i++) residual[i] = h = block(r, h, temb, &p->downs[i]);
    for (int i = 0; i < L; i++)
        h = block(r, ddpm_tape_concat(t, h, residual[L - 1 - i]), temb, &p->ups[i]);
    return conv(r, h, p->output, 1, 0);
}

/* ---- the model interface --------------------------------------------------------------------- */

static int su_reserve(ddpm_model *m, int B) {
    su_net *p = m->impl;
    float *tb = ddpm_alloc_aligned((size_t)B, sizeof(float));
    if (!tb) return DDPM_ERR_NOMEM;
    free(p->tbuf);
    p->tbuf = tb;
    /* Activations live in the tape's arena, which grows during the first forward/backward of
     * the largest batch and is reused afterwards. */
    m->max_batch = B;
    return DDPM_OK;
}

/* Items [b0, b0 + nb) of the batch, from the timesteps su_forward converted. */
static ddpm_var *su_record(ddpm_model *m, ddpm_tape *tp, const ddpm_param *prm,
                          const ddpm_model_input *in, int b0, int nb) {
    su_net *p = m->impl;
    const su_rec r = {p, tp, prm};
    return network(&r, in->x + (size_t)b0 * m->sample_numel, p->tbuf + b0, nb);
}

static int su_forward(ddpm_model *m, const ddpm_model_input *in, float *out) {
    su_net *p = m->impl;
    int rc = ddpm_tape_net_begin(m, in);
    if (rc) return rc;
    for (int b = 0; b < in->B; b++) p->tbuf[b] = (float)in->t[b];
    return ddpm_tape_net_run(m, in, out, su_record);
}

static void su_destroy(ddpm_model *m) {
    if (!m) return;
    su_net *p = m->impl;
    if (p) {
        ddpm_tape_net_free(&p->tn);
        free(p->tbuf);
        free(p);
    }
    ddpm_model_free_common(m);
}

static const ddpm_model_ops su_ops = {"simple-unet", su_forward, ddpm_tape_net_backward,
                                      su_reserve, su_destroy};

static int read_config(const cJSON *j, su_config *c) {
    static const char *const known[] = {"kind",     "in_channels",  "height",
                                        "channels", "time_emb_dim", "num_timesteps"};
    static const int def[5] = {64, 128, 256, 512, 1024};
    int rc;
    if ((rc = ddpm_json_check_keys(j, "simple-unet", known, sizeof known / sizeof known[0])) ||
        (rc = ddpm_json_int(j, "in_channels", 3, 1, 4096, &c->in_channels)) ||
        (rc = ddpm_json_int(j, "height", 64, 2, 1 << 14, &c->height)) ||
        (rc = ddpm_json_int(j, "time_emb_dim", 32, 4, 1 << 16, &c->time_emb_dim)) ||
        (rc = ddpm_json_int(j, "num_timesteps", 300, 1, 1 << 24, &c->num_timesteps)) ||
        (rc = ddpm_json_int_list(j, "channels", def, 5, SU_MAX_LEVELS + 1, c->channels,
                                 &c->n_channels)))
        return rc;
    if (c->n_channels < 2)
        return ddpm_fail(DDPM_ERR_INVALID,
                         "model config: \"channels\" needs at least 2 entries (one level down and "
                         "up), got 1");
    for (int i = 0; i < c->n_channels; i++)
        if (c->channels[i] < 1 || c->channels[i] > 65536)
            return ddpm_fail(DDPM_ERR_INVALID,
                             "model config: \"channels\"[%d] must be in 1..65536 (got %d)", i,
                             c->channels[i]);
    if (c->time_emb_dim % 2)
        return ddpm_fail(DDPM_ERR_INVALID,
                         "model config: \"time_emb_dim\" must be even for the sinusoidal "
                         "embedding (got %d)",
                         c->time_emb_dim);
    const int L = c->n_channels - 1;
    if (c->height % (1 << L))
        return ddpm_fail(DDPM_ERR_INVALID,
                         "model config: \"height\" must be divisible by 2^%d = %d for %d "
                         "\"channels\" (%d levels, each halving it; got %d)",
                         L, 1 << L, c->n_channels, L, c->height);
    return DDPM_OK;
}

/* The config as stored in checkpoints: every field, in this order. */
static char *config_json(const su_config *c) {
    cJSON *o = cJSON_CreateObject();
    if (!o) return NULL;
    cJSON_AddStringToObject(o, "kind", "simple-unet");
    cJSON_AddNumberToObject(o, "in_channels", c->in_channels);
    cJSON_AddNumberToObject(o, "height", c->height);
    cJSON_AddItemToObject(o, "channels", cJSON_CreateIntArray(c->channels, c->n_channels));
    cJSON_AddNumberToObject(o, "time_emb_dim", c->time_emb_dim);
    cJSON_AddNumberToObject(o, "num_timesteps", c->num_timesteps);
    return ddpm_json_print_and_free(o);
}

int ddpm_simple_unet_create(const void *config_cjson, uint64_t seed, ddpm_model **out) {
    *out = NULL;
    su_config c;
    int rc = read_config(config_cjson, &c);
    if (rc) return rc;
    ddpm_model *m = ddpm_model_new(&su_ops, sizeof(su_net));
    if (!m) return DDPM_ERR_NOMEM;
    su_net *p = m->impl;
    p->cfg = c;
    ddpm_param_table pt = {0};
    declare(p, &pt);
    rc = ddpm_tape_net_init_image(m, c.in_channels, c.height, c.height, c.num_timesteps, config_json(&c), &pt);
    if (rc) {
        su_destroy(m);
        return rc;
    }
    p->tn.eval_item_floats = eval_item_floats(&c);
    init_all(m, p, seed);
    rc = su_reserve(m, 1);
    if (rc) {
        su_destroy(m);
        return rc;
    }
    *out = m;
    return DDPM_OK;
}

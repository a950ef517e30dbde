/* context_unet.c - the DeepLearning.AI course's ContextUnet ("How Diffusion Models Work"),
 * written once on the tape: the forward below is also the backward.
 *
 *   x0  = init_conv(x)                        ResidualConvBlock(C, nf, is_res)   [B, nf, h, h]
 *   d1  = down1(x0)                           UnetDown(nf, nf)                   [B, nf, h/2]
 *   d2  = down2(d1)                           UnetDown(nf, 2nf)                  [B, 2nf, h/4]
 *   hv  = gelu(avgpool(d2, h/4))              to_vec                             [B, 2nf, 1, 1]
 *   u1  = relu(gn8(convT(hv, k = s = h/4)))   up0                                [B, 2nf, h/4]
 *   u2  = up1(cemb1 * u1 + temb1, d2)         UnetUp(4nf, nf)                    [B, nf, h/2]
 *   u3  = up2(cemb2 * u2 + temb2, d1)         UnetUp(2nf, nf)                    [B, nf, h]
 *   out = conv3(relu(gn8(conv3(cat(u3, x0)))))                                   [B, C, h, h]
 *
 * ResidualConvBlock = (conv3x3 - BatchNorm - GELU) x 2, with is_res (init_conv only) the sum
 * (shortcut(x) + h) / 1.414. UnetDown = two blocks + MaxPool2d(2); UnetUp = ConvTranspose2d(in,
 * out, 2, 2) of cat(x, skip) + two blocks; EmbedFC = Linear - GELU - Linear, of t (timeembed1/2,
 * 1 -> 2nf / nf) and of the context vector c (contextembed1/2, n_cfeat -> 2nf / nf).
 *
 * Differences from the course (docs/networks-course.md):
 *  - The course's init_conv builds a NEW randomly initialised 1x1 convolution on every call when
 *    in_channels != n_feat (never trained, different at every step). Here it is a learned 1x1
 *    convolution, init_conv.shortcut.{weight,bias} ("shortcut": "learned", the default), or, with
 *    "shortcut": "none", left out: (h) / 1.414 alone, the expectation of the course's zero-mean
 *    random shortcut, which loads a course state_dict as it is.
 *  - Time: the course feeds t / T as a float with t in 1..T of its T+1-point schedule; ddpm
 *    passes the schedule index t (0..num_timesteps-1), and t / (num_timesteps - 1) is fed.
 *  - The course's AvgPool2d(4) is AvgPool2d(height / 4), as its comment for 28x28 data says.
 *  - n_cfeat 0 (ddpm only) is an unconditional network: contextembed's first Linear has no
 *    weight (PyTorch's Linear(0, .) holds an empty one), so the context embeddings are learned
 *    constants, as PyTorch computes them for an empty input.
 * Parameter names and their order are the PyTorch module's state_dict (without the batch norms'
 * num_batches_tracked, which loading ignores). */
#include "core/json.h"
#include "models/model_internal.h"

typedef struct {
    int in_channels, n_feat, n_cfeat, height, num_timesteps;
    int learned_shortcut;
} cu_config;

typedef struct {
    int w, b; /* tensor indices; w = -1 for an empty Linear(0, .) weight */
} cu_affine;

typedef struct {
    cu_affine conv1, conv2, shortcut; /* shortcut.w = -1: none (same channels, or "none") */
    ddpm_bn_tensors bn1, bn2;
    int is_res, same;
} cu_block;

typedef struct {
    cu_affine l0, l2;
} cu_embed;

/* The tape net comes first (see models/model_internal.h). */
typedef struct {
    ddpm_tape_net tn;
    cu_config cfg;
    cu_block init_conv, down1[2], down2[2], up1[2], up2[2];
    cu_affine up1_ct, up2_ct, up0_ct, up0_gn, out0, out1, out3;
    cu_embed te1, te2, ce1, ce2;
    ddpm_param zero_w[2]; /* n_cfeat 0: frozen zero weights [2nf, 1] and [nf, 1] */
    float *zeros;         /* their data: 2nf floats */
    float *tbuf, *cbuf;   /* [max_batch] t / (T - 1); [max_batch, max(n_cfeat, 1)] context */
} cu_net;

#define INV_1414 (1.0f / 1.414f)

/* ---- the parameter table, in the PyTorch module's state_dict order --------------------------- */

static cu_affine decl_conv(ddpm_param_table *pt, int cout, int cin, int k, const char *name) {
    cu_affine a;
    a.w = DDPM_PARAM(pt, cout, cin, k, k, "%s.weight", name);
    a.b = DDPM_PARAM(pt, cout, 0, 0, 0, "%s.bias", name);
    return a;
}

/* ConvTranspose2d weights are [C_in, C_out, k, k]. */
static cu_affine decl_convt(ddpm_param_table *pt, int cin, int cout, int k, const char *name) {
    cu_affine a;
    a.w = DDPM_PARAM(pt, cin, cout, k, k, "%s.weight", name);
    a.b = DDPM_PARAM(pt, cout, 0, 0, 0, "%s.bias", name);
    return a;
}

static cu_affine decl_linear(ddpm_param_table *pt, int out, int in, const char *name) {
    cu_affine a;
    a.w = in > 0 ? DDPM_PARAM(pt, out, in, 0, 0, "%s.weight", name) : -1;
    a.b = DDPM_PARAM(pt, out, 0, 0, 0, "%s.bias", name);
    return a;
}

static cu_affine decl_norm(ddpm_param_table *pt, int c, const char *name) {
    cu_affine a;
    a.w = DDPM_PARAM(pt, c, 0, 0, 0, "%s.weight", name);
    a.b = DDPM_PARAM(pt, c, 0, 0, 0, "%s.bias", name);
    return a;
}

/* ResidualConvBlock: conv1 = Sequential(Conv2d, BatchNorm2d, GELU), conv2 likewise; the learned
 * shortcut is registered after them (the fixture's module does the same). */
static cu_block decl_block(ddpm_param_table *pt, int cin, int cout, int is_res, int learned,
                           const char *prefix) {
    char name[96];
    cu_block k;
    k.is_res = is_res;
    k.same = cin == cout;
    snprintf(name, sizeof name, "%s.conv1.0", prefix);
    k.conv1 = decl_conv(pt, cout, cin, 3, name);
    snprintf(name, sizeof name, "%s.conv1.1", prefix);
    k.bn1 = ddpm_pt_batchnorm(pt, cout, name);
    snprintf(name, sizeof name, "%s.conv2.0", prefix);
    k.conv2 = decl_conv(pt, cout, cout, 3, name);
    snprintf(name, sizeof name, "%s.conv2.1", prefix);
    k.bn2 = ddpm_pt_batchnorm(pt, cout, name);
    k.shortcut.w = k.shortcut.b = -1;
    if (is_res && !k.same && learned) {
        snprintf(name, sizeof name, "%s.shortcut", prefix);
        k.shortcut = decl_conv(pt, cout, cin, 1, name);
    }
    return k;
}

static cu_embed decl_embed(ddpm_param_table *pt, int in, int emb, const char *prefix) {
    char name[96];
    cu_embed e;
    snprintf(name, sizeof name, "%s.model.0", prefix);
    e.l0 = decl_linear(pt, emb, in, name);
    snprintf(name, sizeof name, "%s.model.2", prefix);
    e.l2 = decl_linear(pt, emb, emb, name);
    return e;
}

static void declare(cu_net *p, ddpm_param_table *pt) {
    const cu_config *c = &p->cfg;
    const int nf = c->n_feat, C = c->in_channels, h4 = c->height / 4, ls = c->learned_shortcut;
    p->init_conv = decl_block(pt, C, nf, 1, ls, "init_conv");
    p->down1[0] = decl_block(pt, nf, nf, 0, ls, "down1.model.0");
    p->down1[1] = decl_block(pt, nf, nf, 0, ls, "down1.model.1");
    p->down2[0] = decl_block(pt, nf, 2 * nf, 0, ls, "down2.model.0");
    p->down2[1] = decl_block(pt, 2 * nf, 2 * nf, 0, ls, "down2.model.1");
    p->te1 = decl_embed(pt, 1, 2 * nf, "timeembed1");
    p->te2 = decl_embed(pt, 1, nf, "timeembed2");
    p->ce1 = decl_embed(pt, c->n_cfeat, 2 * nf, "contextembed1");
    p->ce2 = decl_embed(pt, c->n_cfeat, nf, "contextembed2");
    p->up0_ct = decl_convt(pt, 2 * nf, 2 * nf, h4, "up0.0");
    p->up0_gn = decl_norm(pt, 2 * nf, "up0.1");
    p->up1_ct = decl_convt(pt, 4 * nf, nf, 2, "up1.model.0");
    p->up1[0] = decl_block(pt, nf, nf, 0, ls, "up1.model.1");
    p->up1[1] = decl_block(pt, nf, nf, 0, ls, "up1.model.2");
    p->up2_ct = decl_convt(pt, 2 * nf, nf, 2, "up2.model.0");
    p->up2[0] = decl_block(pt, nf, nf, 0, ls, "up2.model.1");
    p->up2[1] = decl_block(pt, nf, nf, 0, ls, "up2.model.2");
    p->out0 = decl_conv(pt, nf, 2 * nf, 3, "out.0");
    p->out1 = decl_norm(pt, nf, "out.1");
    p->out3 = decl_conv(pt, C, nf, 3, "out.3");
}

/* ---- PyTorch's default initialisation -------------------------------------------------------- */

/* Conv2d, ConvTranspose2d and Linear: ddpm_init_fan_in; an empty Linear(0, .) gives bound 0
 * (PyTorch's reset_parameters). */
static void init_affine(ddpm_model *m, cu_affine a, uint64_t seed) {
    if (a.w < 0)
        ddpm_init_const(m, a.b, 0.0f);
    else
        ddpm_init_fan_in(m, a.w, a.b, seed);
}

static void init_norm(ddpm_model *m, cu_affine a) {
    ddpm_init_const(m, a.w, 1.0f);
    ddpm_init_const(m, a.b, 0.0f);
}


static void init_block(ddpm_model *m, const cu_block *k, uint64_t seed) {
    init_affine(m, k->conv1, seed);
    ddpm_init_batchnorm(m, k->bn1);
    init_affine(m, k->conv2, seed);
    ddpm_init_batchnorm(m, k->bn2);
    if (k->shortcut.w >= 0) init_affine(m, k->shortcut, seed);
}

static void init_all(ddpm_model *m, cu_net *p, uint64_t seed) {
    const cu_block *blocks[] = {&p->init_conv, &p->down1[0], &p->down1[1], &p->down2[0],
                                &p->down2[1],  &p->up1[0],   &p->up1[1],   &p->up2[0],
                                &p->up2[1]};
    for (size_t i = 0; i < sizeof blocks / sizeof blocks[0]; i++) init_block(m, blocks[i], seed);
    const cu_embed *embeds[] = {&p->te1, &p->te2, &p->ce1, &p->ce2};
    for (int i = 0; i < 4; i++) {
        init_affine(m, embeds[i]->l0, seed);
        init_affine(m, embeds[i]->l2, seed);
    }
    init_affine(m, p->up0_ct, seed);
    init_norm(m, p->up0_gn);
    init_affine(m, p->up1_ct, seed);
    init_affine(m, p->up2_ct, seed);
    init_affine(m, p->out0, seed);
    init_norm(m, p->out1);
    init_affine(m, p->out3, seed);
}

/* ---- the forward, on the tape ---------------------------------------------------------------- */

/* What the network records with: a tape and its parameter handles (a micro-batch's own, or
 * slice 0's), and the network's layout. */
typedef struct {
    const cu_net *n;
    ddpm_tape *t;
    const ddpm_param *prm;
} cu_rec;

static const ddpm_param *P(const cu_rec *p, int i) { return i >= 0 ? &p->prm[i] : NULL; }

static ddpm_var *conv(const cu_rec *p, ddpm_var *x, cu_affine a, int stride, int pad) {
    return ddpm_tape_conv2d(p->t, x, P(p, a.w), P(p, a.b), stride, pad);
}

static ddpm_var *convt(const cu_rec *p, ddpm_var *x, cu_affine a, int stride) {
    return ddpm_tape_conv_transpose2d(p->t, x, P(p, a.w), P(p, a.b), stride, 0);
}

/* gelu(bn(conv3x3(x))), one pass over the output in eval mode */
static ddpm_var *conv_bn_gelu(const cu_rec *p, ddpm_var *x, cu_affine a, ddpm_bn_tensors n) {
    return ddpm_tape_conv2d_bn_gelu(p->t, x, P(p, a.w), P(p, a.b), 1, 1, P(p, n.w),
                                    P(p, n.b), p->prm[n.rm].w, p->prm[n.rv].w);
}

/* ResidualConvBlock.forward */
static ddpm_var *block(const cu_rec *p, ddpm_var *x, const cu_block *k) {
    ddpm_tape *t = p->t;
    ddpm_var *h = conv_bn_gelu(p, conv_bn_gelu(p, x, k->conv1, k->bn1), k->conv2, k->bn2);
    if (!k->is_res) return h;
    if (!k->same && k->shortcut.w < 0) return ddpm_tape_scale(t, h, INV_1414); /* "none" */
    ddpm_var *s = k->same ? x : conv(p, x, k->shortcut, 1, 0);
    return ddpm_tape_scale(t, ddpm_tape_add(t, s, h), INV_1414);
}

/* UnetDown.forward */
static ddpm_var *down(const cu_rec *p, ddpm_var *x, const cu_block k[2]) {
    return ddpm_tape_maxpool2d(p->t, block(p, block(p, x, &k[0]), &k[1]), 2, 0);
}

/* UnetUp.forward */
static ddpm_var *up(const cu_rec *p, ddpm_var *x, ddpm_var *skip, cu_affine ct, const cu_block k[2]) {
    ddpm_var *h = convt(p, ddpm_tape_concat(p->t, x, skip), ct, 2);
    return block(p, block(p, h, &k[0]), &k[1]);
}

/* EmbedFC.forward; zero_w stands in for an empty Linear(0, .) weight (its input is [B, 1] of
 * zeros then). */
static ddpm_var *embed(const cu_rec *p, ddpm_var *x, const cu_embed *e, const ddpm_param *zero_w) {
    ddpm_tape *t = p->t;
    ddpm_var *h = ddpm_tape_linear(t, x, e->l0.w >= 0 ? P(p, e->l0.w) : zero_w, P(p, e->l0.b));
    return ddpm_tape_linear(t, ddpm_tape_gelu(t, h), P(p, e->l2.w), P(p, e->l2.b));
}

/* x [B, C, h, h], tt [B] = t / (T - 1), cv [B, max(n_cfeat, 1)] -> [B, C, h, h] */
static ddpm_var *network(const cu_rec *r, const float *x, const float *tt, const float *cv, int B) {
    const cu_net *p = r->n;
    const cu_config *c = &p->cfg;
    ddpm_tape *t = r->t;
    const int h = c->height, kc = c->n_cfeat > 0 ? c->n_cfeat : 1;
    ddpm_var *xin = ddpm_tape_input(t, x, 4, (int[]){B, c->in_channels, h, h}, 0);
    ddpm_var *tin = ddpm_tape_input(t, tt, 2, (int[]){B, 1}, 0);
    ddpm_var *cin = ddpm_tape_input(t, cv, 2, (int[]){B, kc}, 0);

    ddpm_var *x0 = block(r, xin, &p->init_conv);
    ddpm_var *d1 = down(r, x0, p->down1);
    ddpm_var *d2 = down(r, d1, p->down2);
    ddpm_var *hv = ddpm_tape_gelu(t, ddpm_tape_avgpool2d(t, d2, h / 4, 0));

    ddpm_var *cemb1 = embed(r, cin, &p->ce1, &p->zero_w[0]);
    ddpm_var *temb1 = embed(r, tin, &p->te1, NULL);
    ddpm_var *cemb2 = embed(r, cin, &p->ce2, &p->zero_w[1]);
    ddpm_var *temb2 = embed(r, tin, &p->te2, NULL);

    ddpm_var *u1 = convt(r, hv, p->up0_ct, h / 4);
    u1 = ddpm_tape_relu(t, ddpm_tape_groupnorm(t, u1, 8, P(r, p->up0_gn.w), P(r, p->up0_gn.b)));
    u1 = ddpm_tape_channel_add(t, ddpm_tape_channel_mul(t, u1, cemb1), temb1);
    ddpm_var *u2 = up(r, u1, d2, p->up1_ct, p->up1);
    u2 = ddpm_tape_channel_add(t, ddpm_tape_channel_mul(t, u2, cemb2), temb2);
    ddpm_var *u3 = up(r, u2, d1, p->up2_ct, p->up2);

    ddpm_var *o = conv(r, ddpm_tape_concat(t, u3, x0), p->out0, 1, 1);
    o = ddpm_tape_relu(t, ddpm_tape_groupnorm(t, o, 8, P(r, p->out1.w), P(r, p->out1.b)));
    return conv(r, o, p->out3, 1, 1);
}

/* ---- the model interface --------------------------------------------------------------------- */

static int cu_reserve(ddpm_model *m, int B) {
    cu_net *p = m->impl;
    const size_t kc = (size_t)(p->cfg.n_cfeat > 0 ? p->cfg.n_cfeat : 1);
    float *tb = ddpm_alloc_aligned((size_t)B, sizeof(float));
    float *cb = ddpm_alloc_aligned(ddpm_size_mul((size_t)B, kc), sizeof(float));
    if (!tb || !cb) {
        free(tb);
        free(cb);
        return DDPM_ERR_NOMEM;
    }
    free(p->tbuf);
    free(p->cbuf);
    p->tbuf = tb;
    p->cbuf = cb;
    /* Activations live in the tape's arena, which grows during the first forward/backward of
     * the largest batch and is reused afterwards. */
    m->max_batch = B;
    return DDPM_OK;
}

/* Items [b0, b0 + nb) of the batch, from the inputs cu_forward prepared. */
static ddpm_var *cu_record(ddpm_model *m, ddpm_tape *tp, const ddpm_param *prm,
                          const ddpm_model_input *in, int b0, int nb) {
    cu_net *p = m->impl;
    const size_t d = m->sample_numel, kc = (size_t)(p->cfg.n_cfeat > 0 ? p->cfg.n_cfeat : 1);
    const cu_rec r = {p, tp, prm};
    return network(&r, in->x + (size_t)b0 * d, p->tbuf + b0, p->cbuf + (size_t)b0 * kc, nb);
}

static int cu_forward(ddpm_model *m, const ddpm_model_input *in, float *out) {
    cu_net *p = m->impl;
    const cu_config *c = &p->cfg;
    const int B = in->B;
    int rc = ddpm_tape_net_begin(m, in);
    if (rc) return rc;
    const double T1 = (double)(c->num_timesteps - 1);
    for (int b = 0; b < B; b++)
        p->tbuf[b] = (float)(in->t[b] / T1); /* the course's t / T, correctly rounded */
    const size_t kc = (size_t)(c->n_cfeat > 0 ? c->n_cfeat : 1);
    if (in->cond && c->n_cfeat > 0)
        memcpy(p->cbuf, in->cond, (size_t)B * kc * sizeof(float));
    else
        memset(p->cbuf, 0, (size_t)B * kc * sizeof(float)); /* no context: the zero vector */
    return ddpm_tape_net_run(m, in, out, cu_record);
}

static void cu_destroy(ddpm_model *m) {
    if (!m) return;
    cu_net *p = m->impl;
    if (p) {
        ddpm_tape_net_free(&p->tn);
        free(p->zeros);
        free(p->tbuf);
        free(p->cbuf);
        free(p);
    }
    ddpm_model_free_common(m);
}

static const ddpm_model_ops cu_ops = {"context-unet", cu_forward, ddpm_tape_net_backward,
                                      cu_reserve, cu_destroy};

static int read_config(const cJSON *j, cu_config *c) {
    static const char *const known[] = {"kind",   "in_channels",   "n_feat",  "n_cfeat",
                                        "height", "num_timesteps", "shortcut"};
    const char *shortcut;
    int rc;
    if ((rc = ddpm_json_check_keys(j, "context-unet", known, sizeof known / sizeof known[0])) ||
        (rc = ddpm_json_int(j, "in_channels", 3, 1, 4096, &c->in_channels)) ||
        (rc = ddpm_json_int(j, "n_feat", 64, 8, 8192, &c->n_feat)) ||
        (rc = ddpm_json_int(j, "n_cfeat", 5, 0, 1 << 20, &c->n_cfeat)) ||
        (rc = ddpm_json_int(j, "height", 16, 4, 1 << 14, &c->height)) ||
        (rc = ddpm_json_int(j, "num_timesteps", 501, 2, 1 << 24, &c->num_timesteps)) ||
        (rc = ddpm_json_string(j, "shortcut", "learned", &shortcut)))
        return rc;
    if (c->n_feat % 8)
        return ddpm_fail(DDPM_ERR_INVALID,
                         "model config: \"n_feat\" must be a multiple of 8 for "
                         "GroupNorm(8, n_feat) (got %d)",
                         c->n_feat);
    if (c->height % 4)
        return ddpm_fail(DDPM_ERR_INVALID,
                         "model config: \"height\" must be divisible by 4 (got %d): the network "
                         "halves it twice and pools the rest with AvgPool2d(height / 4), e.g. 16 "
                         "for sprites, 28 for Fashion-MNIST",
                         c->height);
    if (strcmp(shortcut, "learned") != 0 && strcmp(shortcut, "none") != 0)
        return ddpm_fail(DDPM_ERR_INVALID,
                         "model config: \"shortcut\" must be learned or none (got '%s')", shortcut);
    c->learned_shortcut = strcmp(shortcut, "learned") == 0;
    return DDPM_OK;
}

/* The config as stored in checkpoints: every field, in this order. */
static char *config_json(const cu_config *c) {
    cJSON *o = cJSON_CreateObject();
    if (!o) return NULL;
    cJSON_AddStringToObject(o, "kind", "context-unet");
    cJSON_AddNumberToObject(o, "in_channels", c->in_channels);
    cJSON_AddNumberToObject(o, "n_feat", c->n_feat);
    cJSON_AddNumberToObject(o, "n_cfeat", c->n_cfeat);
    cJSON_AddNumberToObject(o, "height", c->height);
    cJSON_AddNumberToObject(o, "num_timesteps", c->num_timesteps);
    cJSON_AddStringToObject(o, "shortcut", c->learned_shortcut ? "learned" : "none");
    return ddpm_json_print_and_free(o);
}

int ddpm_context_unet_create(const void *config_cjson, uint64_t seed, ddpm_model **out) {
    *out = NULL;
    cu_config c;
    int rc = read_config(config_cjson, &c);
    if (rc) return rc;
    ddpm_model *m = ddpm_model_new(&cu_ops, sizeof(cu_net));
    if (!m) return DDPM_ERR_NOMEM;
    cu_net *p = m->impl;
    p->cfg = c;
    m->cond_dim = c.n_cfeat;
    ddpm_param_table pt = {0};
    declare(p, &pt);
    rc = ddpm_tape_net_init_image(m, c.in_channels, c.height, c.height, c.num_timesteps, config_json(&c), &pt);
    if (!rc) {
        p->zeros = ddpm_alloc_aligned((size_t)2 * c.n_feat, sizeof(float));
        if (!p->zeros) rc = DDPM_ERR_NOMEM;
    }
    if (rc) {
        cu_destroy(m);
        return rc;
    }
    for (int k = 0; k < 2; k++)
        p->zero_w[k] = (ddpm_param){.w = p->zeros, .g = NULL, .ndim = 2,
                                    .shape = {(2 - k) * c.n_feat, 1}};
    /* the activations of one item in an eval forward: about 56 maps of n_feat x h x h (counted
     * from network(): 9 + 12 at full size in init_conv and down1, 6 in down2, 3.5 in up1, 13 in
     * up2, 5 in out, and the pooled ones) */
    p->tn.eval_item_floats = (size_t)56 * c.n_feat * c.height * c.height;
    init_all(m, p, seed);
    rc = cu_reserve(m, 1);
    if (rc) {
        cu_destroy(m);
        return rc;
    }
    *out = m;
    return DDPM_OK;
}

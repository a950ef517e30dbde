/* mlp.c - the 2-D tutorial's MLPDiffusion with a hand-written backward pass.
 *
 *   h_0 = x                                   // [B, D]
 *   h_l = relu(h_{l-1} W_l^T + b_l + E_l[t])  // [B, H], l = 1..depth
 *   out = h_depth W_out^T + b_out             // [B, D]
 *
 * E_l is a learned table [T, H] (step_embeddings.{l-1}) or, with the sinusoidal option, a
 * projection of a fixed sinusoidal embedding of t (time_proj.{l-1}). The PyTorch module keeps its
 * Linear and ReLU layers in one ModuleList, hence the even indices linears.0, .2, .4, .6. */
#include "model_internal.h"

#include <math.h>

typedef struct {
    ddpm_mlp_config cfg;
    int w_idx[17], b_idx[17]; /* linears: depth + 1 of them */
    int emb_idx[16];          /* step_embeddings.l or time_proj.l weight */
    int embb_idx[16];         /* time_proj.l bias (sinusoidal) */
    /* activations for the reserved batch */
    float *x;     /* [B, D] copy of the input */
    float *h;     /* [depth, B, H] post-ReLU */
    float *temb;  /* [B, H] sinusoidal embedding (sinusoidal option) */
    float *dh;    /* [2, B, H] ping-pong gradients */
    float *tproj; /* [B, H] scratch for the projection */
    int *t;       /* [B] */
    int B;        /* items in the last forward */
    int recorded; /* the last forward had train = 1 */
} mlp;

static int mlp_reserve(ddpm_model *m, int B) {
    mlp *p = m->impl;
    const int H = p->cfg.hidden, D = p->cfg.dim, L = p->cfg.depth;
    free(p->x);
    free(p->h);
    free(p->temb);
    free(p->dh);
    free(p->tproj);
    free(p->t);
    p->x = ddpm_alloc_aligned((size_t)B * D, sizeof(float));
    p->h = ddpm_alloc_aligned((size_t)L * B * H, sizeof(float));
    p->temb = ddpm_alloc_aligned((size_t)B * H, sizeof(float));
    p->dh = ddpm_alloc_aligned((size_t)2 * B * H, sizeof(float));
    p->tproj = ddpm_alloc_aligned((size_t)B * H, sizeof(float));
    p->t = ddpm_alloc((size_t)B, sizeof(int));
    if (!p->x || !p->h || !p->temb || !p->dh || !p->tproj || !p->t) return DDPM_ERR_NOMEM;
    m->max_batch = B;
    return DDPM_OK;
}

/* The DDPM U-Net's embedding: half = H/2, f_k = exp(-log(10000) k / (half - 1)),
 * emb = [sin(t f), cos(t f)]. */
static void sinusoidal(float *out, const int *t, int B, int H) {
    const int half = H / 2;
    const double scale = half > 1 ? log(10000.0) / (half - 1) : 0.0;
    for (int b = 0; b < B; b++)
        for (int k = 0; k < half; k++) {
            double a = t[b] * exp(-scale * k);
            out[(size_t)b * H + k] = (float)sin(a);
            out[(size_t)b * H + half + k] = (float)cos(a);
        }
}

static int mlp_forward(ddpm_model *m, const ddpm_model_input *in, float *out) {
    mlp *p = m->impl;
    const int B = in->B, H = p->cfg.hidden, D = p->cfg.dim, L = p->cfg.depth;
    if (B > m->max_batch)
        return ddpm_fail(DDPM_ERR_INVALID, "batch of %d exceeds the reserved %d", B, m->max_batch);
    for (int b = 0; b < B; b++)
        if (in->t[b] < 0 || in->t[b] >= p->cfg.num_timesteps)
            return ddpm_fail(DDPM_ERR_INVALID, "timestep %d outside the model's 0..%d", in->t[b],
                             p->cfg.num_timesteps - 1);
    memcpy(p->x, in->x, sizeof(float) * (size_t)B * D);
    memcpy(p->t, in->t, sizeof(int) * (size_t)B);
    if (p->cfg.sinusoidal) sinusoidal(p->temb, p->t, B, H);
    const float *prev = p->x;
    int fan_in = D;
    for (int l = 0; l < L; l++) {
        float *h = p->h + (size_t)l * B * H;
        ddpm_linear_forward(h, prev, ddpm_w(m, p->w_idx[l]), ddpm_w(m, p->b_idx[l]), B, fan_in, H);
        if (p->cfg.sinusoidal) {
            ddpm_linear_forward(p->tproj, p->temb, ddpm_w(m, p->emb_idx[l]),
                                ddpm_w(m, p->embb_idx[l]), B, H, H);
            for (size_t k = 0; k < (size_t)B * H; k++) h[k] += p->tproj[k];
        } else {
            const float *E = ddpm_w(m, p->emb_idx[l]);
            for (int b = 0; b < B; b++) {
                const float *e = E + (size_t)p->t[b] * H;
                float *hb = h + (size_t)b * H;
                for (int j = 0; j < H; j++) hb[j] += e[j];
            }
        }
        for (size_t k = 0; k < (size_t)B * H; k++) h[k] = h[k] > 0.0f ? h[k] : 0.0f;
        prev = h;
        fan_in = H;
    }
    ddpm_linear_forward(out, prev, ddpm_w(m, p->w_idx[L]), ddpm_w(m, p->b_idx[L]), B, H, D);
    p->B = B;
    p->recorded = in->train;
    return DDPM_OK;
}

static int mlp_backward(ddpm_model *m, const float *dout) {
    mlp *p = m->impl;
    if (!p->recorded) return ddpm_fail(DDPM_ERR_INVALID, "backward without a training forward");
    const int B = p->B, H = p->cfg.hidden, D = p->cfg.dim, L = p->cfg.depth;
    float *dh = p->dh, *dprev = p->dh + (size_t)B * H;
    memset(dh, 0, sizeof(float) * (size_t)B * H);
    const float *hL = p->h + (size_t)(L - 1) * B * H;
    ddpm_linear_backward(dh, ddpm_g(m, p->w_idx[L]), ddpm_g(m, p->b_idx[L]), dout, hL,
                         ddpm_w(m, p->w_idx[L]), B, H, D);
    for (int l = L - 1; l >= 0; l--) {
        const float *h = p->h + (size_t)l * B * H;
        /* through the ReLU: its output is positive exactly where it let the gradient pass */
        for (size_t k = 0; k < (size_t)B * H; k++)
            if (h[k] <= 0.0f) dh[k] = 0.0f;
        if (p->cfg.sinusoidal) {
            ddpm_linear_backward(NULL, ddpm_g(m, p->emb_idx[l]), ddpm_g(m, p->embb_idx[l]), dh,
                                 p->temb, ddpm_w(m, p->emb_idx[l]), B, H, H);
        } else {
            float *dE = ddpm_g(m, p->emb_idx[l]);
            for (int b = 0; b < B; b++) {
                float *de = dE + (size_t)p->t[b] * H;
                const float *d = dh + (size_t)b * H;
                for (int j = 0; j < H; j++) de[j] += d[j];
            }
        }
        const float *prev = l > 0 ? p->h + (size_t)(l - 1) * B * H : p->x;
        const int fan_in = l > 0 ? H : D;
        if (l > 0) memset(dprev, 0, sizeof(float) * (size_t)B * H);
        ddpm_linear_backward(l > 0 ? dprev : NULL, ddpm_g(m, p->w_idx[l]), ddpm_g(m, p->b_idx[l]),
                             dh, prev, ddpm_w(m, p->w_idx[l]), B, fan_in, H);
        float *tmp = dh;
        dh = dprev;
        dprev = tmp;
    }
    return DDPM_OK;
}

static void mlp_destroy(ddpm_model *m) {
    if (!m) return;
    mlp *p = m->impl;
    if (p) {
        free(p->x);
        free(p->h);
        free(p->temb);
        free(p->dh);
        free(p->tproj);
        free(p->t);
        free(p);
    }
    ddpm_model_free_common(m);
}

static const ddpm_model_ops mlp_ops = {"mlp", mlp_forward, mlp_backward, mlp_reserve, mlp_destroy};

char *ddpm_mlp_config_json(const ddpm_mlp_config *c) {
    char *s = malloc(256);
    if (s)
        snprintf(s, 256,
                 "{\"kind\":\"mlp\",\"dim\":%d,\"hidden\":%d,\"depth\":%d,\"num_timesteps\":%d,"
                 "\"time_embedding\":\"%s\"}",
                 c->dim, c->hidden, c->depth, c->num_timesteps,
                 c->sinusoidal ? "sinusoidal" : "learned");
    return s;
}

int ddpm_mlp_create(const void *config_cjson, uint64_t seed, ddpm_model **out) {
    const cJSON *j = config_cjson;
    ddpm_mlp_config c;
    const char *emb;
    int rc;
    if ((rc = ddpm_json_int(j, "dim", 2, 1, 1 << 20, &c.dim)) ||
        (rc = ddpm_json_int(j, "hidden", 128, 1, 1 << 16, &c.hidden)) ||
        (rc = ddpm_json_int(j, "depth", 3, 1, 16, &c.depth)) ||
        (rc = ddpm_json_int(j, "num_timesteps", 100, 1, 1000000, &c.num_timesteps)) ||
        (rc = ddpm_json_string(j, "time_embedding", "learned", &emb)))
        return rc;
    if (strcmp(emb, "learned") != 0 && strcmp(emb, "sinusoidal") != 0)
        return ddpm_fail(DDPM_ERR_INVALID,
                         "model config: \"time_embedding\" must be learned or sinusoidal (got '%s')", emb);
    c.sinusoidal = strcmp(emb, "sinusoidal") == 0;
    if (c.sinusoidal && c.hidden % 2)
        return ddpm_fail(DDPM_ERR_INVALID, "model config: a sinusoidal embedding needs an even width");

    ddpm_model *m = ddpm_alloc(1, sizeof *m);
    mlp *p = ddpm_alloc(1, sizeof *p);
    if (!m || !p) {
        free(m);
        free(p);
        return DDPM_ERR_NOMEM;
    }
    m->ops = &mlp_ops;
    m->impl = p;
    p->cfg = c;
    m->dim = c.dim;
    m->sample_numel = (size_t)c.dim;
    m->num_timesteps = c.num_timesteps;
    m->config_json = ddpm_mlp_config_json(&c);

    ddpm_param_table pt = {0};
    const int L = c.depth, H = c.hidden, D = c.dim;
    for (int l = 0; l <= L; l++) {
        const int fin = l == 0 ? D : H, fout = l == L ? D : H;
        p->w_idx[l] = DDPM_PARAM(&pt, fout, fin, 0, 0, "linears.%d.weight", 2 * l);
        p->b_idx[l] = DDPM_PARAM(&pt, fout, 0, 0, 0, "linears.%d.bias", 2 * l);
    }
    for (int l = 0; l < L; l++) {
        if (c.sinusoidal) {
            p->emb_idx[l] = DDPM_PARAM(&pt, H, H, 0, 0, "time_proj.%d.weight", l);
            p->embb_idx[l] = DDPM_PARAM(&pt, H, 0, 0, 0, "time_proj.%d.bias", l);
        } else {
            p->emb_idx[l] = DDPM_PARAM(&pt, c.num_timesteps, H, 0, 0, "step_embeddings.%d.weight", l);
        }
    }
    rc = ddpm_model_alloc_params(m, &pt);
    if (!rc && !m->config_json) rc = ddpm_fail(DDPM_ERR_NOMEM, "out of memory");
    if (rc) {
        mlp_destroy(m);
        return rc;
    }
    for (int l = 0; l <= L; l++) {
        const float bound = 1.0f / sqrtf((float)(l == 0 ? D : H));
        ddpm_init_uniform(m, p->w_idx[l], bound, seed);
        ddpm_init_uniform(m, p->b_idx[l], bound, seed);
    }
    for (int l = 0; l < L; l++) {
        if (c.sinusoidal) {
            ddpm_init_uniform(m, p->emb_idx[l], 1.0f / sqrtf((float)H), seed);
            ddpm_init_uniform(m, p->embb_idx[l], 1.0f / sqrtf((float)H), seed);
        } else {
            ddpm_init_normal(m, p->emb_idx[l], 1.0f, seed); /* nn.Embedding: N(0, 1) */
        }
    }
    rc = mlp_reserve(m, 1);
    if (rc) {
        mlp_destroy(m);
        return rc;
    }
    *out = m;
    return DDPM_OK;
}

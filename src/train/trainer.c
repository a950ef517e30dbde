/* trainer.c - the training loop shared by every model: batches from a per-epoch shuffle, the
 * forward process, the loss, Adam/AdamW, gradient clipping and EMA, each one loop over the
 * model's contiguous buffers.
 *
 * Every random choice of a step is addressed by the global index of the item drawn
 * (epoch * n + position), so a run resumed from a checkpoint at step k is bitwise the run that
 * never stopped. */
#include "core/names.h"
#include "kernels/kernels.h"
#include "models/model_internal.h"

#include <math.h>
#include <omp.h>

static const char *const opt_names[] = {"adam", "adamw"};
static const char *const decay_names[] = {"constant", "cosine", "linear"};
static const char *const loss_names[] = {"l2", "l1"};

DDPM_DEFINE_ENUM_NAMES(ddpm_optimizer, ddpm_optimizer, "optimizer", opt_names)
DDPM_DEFINE_ENUM_NAMES(ddpm_lr_decay, ddpm_lr_decay, "learning-rate decay", decay_names)
DDPM_DEFINE_ENUM_NAMES(ddpm_loss, ddpm_loss, "loss", loss_names)

void ddpm_train_config_default(ddpm_train_config *c) {
    memset(c, 0, sizeof *c);
    c->prediction = DDPM_PRED_EPS;
    c->loss = DDPM_LOSS_L2;
    c->optimizer = DDPM_OPT_ADAM;
    c->lr = 1e-3;
    c->beta1 = 0.9;
    c->beta2 = 0.999;
    c->adam_eps = 1e-8;
    c->weight_decay = 0.0;
    c->decay = DDPM_LR_CONSTANT;
    c->grad_clip = 1.0f;
    c->p2_k = 1.0f;
    c->ema_decay = 0.999f;
    c->ema_warmup = 1;
    c->batch_size = 128;
    c->total_steps = 1000;
}

/* ---- the pieces of a step -------------------------------------------------------------------- */

float ddpm_lr_at(const ddpm_train_config *c, int64_t step) {
    if (c->warmup_steps > 0 && step < c->warmup_steps)
        return (float)(c->lr * (double)(step + 1) / (double)c->warmup_steps);
    if (c->decay == DDPM_LR_CONSTANT) return (float)c->lr;
    int64_t span = c->total_steps - c->warmup_steps;
    double p = span > 0 ? (double)(step - c->warmup_steps) / (double)span : 1.0;
    p = p < 0 ? 0 : p > 1 ? 1 : p;
    if (c->decay == DDPM_LR_COSINE)
        return (float)(c->min_lr + (c->lr - c->min_lr) * 0.5 * (1.0 + cos(M_PI * p)));
    return (float)(c->lr + (c->min_lr - c->lr) * p);
}

/* The optimizer's loops run in NCHUNK fixed pieces (boundaries at multiples of 16 elements), on
 * however many threads: element-wise updates do not care, and the gradient norm adds the pieces'
 * partial sums in piece order, so every result is the same for any thread count. */
#define NCHUNK 64

static void chunk_range(size_t n, int k, size_t *lo, size_t *hi) {
    const size_t cs = ((n + NCHUNK - 1) / NCHUNK + 15) / 16 * 16;
    *lo = (size_t)k * cs < n ? (size_t)k * cs : n;
    *hi = (size_t)(k + 1) * cs < n ? (size_t)(k + 1) * cs : n;
}

/* Threads for an optimizer pass over n parameters: an Adam element costs two divisions, a square
 * root and ~40 bytes of memory traffic, about what ~60 flops of GEMM work cost (measured: 72k
 * parameters take ~40 us on one core), so the tutorial MLP's 72k parameters use 2 threads. */
static int optim_threads(size_t n) { return ddpm_mk_threads(60.0 * (double)n); }

static void adam_args(ddpm_mk_adam_args *a, const ddpm_train_config *c, float lr, int64_t step) {
    /* As torch.optim.Adam / AdamW (PyTorch 1.13, single-tensor path): Python-float scalars are
     * combined in double and enter the float32 kernels rounded once. */
    memset(a, 0, sizeof *a);
    a->b1 = (float)c->beta1;
    a->b2 = (float)c->beta2;
    a->eps = (float)c->adam_eps;
    a->one_m_b1 = (float)(1.0 - c->beta1);
    a->one_m_b2 = (float)(1.0 - c->beta2);
    a->wd = (float)c->weight_decay;
    const double bc1 = 1.0 - pow(c->beta1, (double)step);
    const double bc2 = 1.0 - pow(c->beta2, (double)step);
    a->step_size = (float)(lr / bc1);
    a->bc2_sqrt = (float)sqrt(bc2);
    a->adamw = c->optimizer == DDPM_OPT_ADAMW;
    a->decay_w = (float)(1.0 - (double)lr * c->weight_decay);
}

static void adam_pass(float *params, float *grads, float *m, float *v, size_t n,
                      const ddpm_mk_adam_args *a) {
    const int nt = optim_threads(n);
#pragma omp parallel for schedule(static) num_threads(nt) if (nt > 1)
    for (int k = 0; k < NCHUNK; k++) {
        size_t lo, hi;
        chunk_range(n, k, &lo, &hi);
        ddpm_mk_adam(params, grads, m, v, lo, hi, a);
    }
}

void ddpm_adam_update(float *params, const float *grads, float *m, float *v, size_t n,
                      const ddpm_train_config *c, float lr, int64_t step) {
    ddpm_mk_adam_args a;
    adam_args(&a, c, lr, step);
    adam_pass(params, (float *)grads, m, v, n, &a); /* grads are only written when clipping */
}

/* torch: clip_coef = max_norm / (norm + 1e-6), clamped at 1; 0 = leave the gradients alone. */
static float clip_coef(float norm, float max_norm) {
    if (max_norm > 0.0f && isfinite(norm)) {
        const float coef = max_norm / (norm + 1e-6f);
        if (coef < 1.0f) return coef;
    }
    return 0.0f;
}

static float grad_norm(const float *grads, size_t n) {
    double part[NCHUNK];
    const int nt = optim_threads(n);
#pragma omp parallel for schedule(static) num_threads(nt) if (nt > 1)
    for (int k = 0; k < NCHUNK; k++) {
        size_t lo, hi;
        chunk_range(n, k, &lo, &hi);
        part[k] = ddpm_mk_sumsq(grads, lo, hi);
    }
    double ss = 0.0;
    for (int k = 0; k < NCHUNK; k++) ss += part[k];
    return (float)sqrt(ss);
}

float ddpm_clip_grad_norm(float *grads, size_t n, float max_norm) {
    const float norm = grad_norm(grads, n);
    const float coef = clip_coef(norm, max_norm);
    if (coef > 0.0f) {
        const int nt = optim_threads(n / 4);
#pragma omp parallel for schedule(static) num_threads(nt) if (nt > 1)
        for (int k = 0; k < NCHUNK; k++) {
            size_t lo, hi;
            chunk_range(n, k, &lo, &hi);
            for (size_t i = lo; i < hi; i++) grads[i] *= coef;
        }
    }
    return norm;
}

void ddpm_ema_update(float *ema, const float *params, size_t n, float decay) {
    const float one_m = 1.0f - decay;
    const int nt = optim_threads(n / 4); /* a quarter of an Adam element's cost */
#pragma omp parallel for schedule(static) num_threads(nt) if (nt > 1)
    for (int k = 0; k < NCHUNK; k++) {
        size_t lo, hi;
        chunk_range(n, k, &lo, &hi);
        for (size_t i = lo; i < hi; i++) ema[i] = decay * ema[i] + one_m * params[i];
    }
}

float ddpm_ema_decay_at(const ddpm_train_config *c, int64_t step) {
    if (!c->ema_warmup) return c->ema_decay;
    float w = (float)(1.0 + (double)step) / (float)(10.0 + (double)step);
    return w < c->ema_decay ? w : c->ema_decay;
}

/* The loss of n items as a part of a batch of B: sum over the items of w_i * mean_j l, over B;
 * dout gets the gradient of that. ddpm_loss_and_grad is the whole batch (n = B). */
static double loss_part(ddpm_loss loss, const float *out, const float *target, const float *w,
                        int n, size_t d, int B, float *dout) {
    double total = 0.0;
    const double inv = 1.0 / ((double)B * (double)d);
    for (int i = 0; i < n; i++) {
        const float wi = w ? w[i] : 1.0f;
        const float g = (float)(wi * inv);
        double s = 0.0;
        for (size_t j = 0; j < d; j++) {
            const size_t k = (size_t)i * d + j;
            const float r = out[k] - target[k];
            if (loss == DDPM_LOSS_L1) {
                s += fabsf(r);
                if (dout) dout[k] = r > 0.0f ? g : r < 0.0f ? -g : 0.0f;
            } else {
                s += (double)r * r;
                if (dout) dout[k] = 2.0f * g * r;
            }
        }
        total += wi * s;
    }
    return total * inv;
}

double ddpm_loss_and_grad(ddpm_loss loss, const float *out, const float *target, const float *w,
                          int B, size_t d, float *dout) {
    return loss_part(loss, out, target, w, B, d, B, dout);
}

void ddpm_p2_weights(const ddpm_schedule *s, float gamma, float k, const int *t, int B, float *w) {
    for (int i = 0; i < B; i++) w[i] *= (float)pow((double)k + s->snr[t[i]], -(double)gamma);
}

void ddpm_min_snr_weights(const ddpm_schedule *s, ddpm_prediction p, float gamma, const int *t,
                          int B, float *w) {
    for (int i = 0; i < B; i++) {
        const double snr = s->snr[t[i]];
        const double clipped = snr < gamma ? snr : gamma;
        w[i] = (float)(p == DDPM_PRED_EPS ? clipped / snr
                       : p == DDPM_PRED_X0 ? clipped
                                           : clipped / (snr + 1.0));
    }
}

/* ---- the trainer ----------------------------------------------------------------------------- */

/* Items of the whole data set: over all ranks when each holds only its shard. */
static size_t data_items(const ddpm_trainer *tr) {
    return tr->data.n_total > 0 ? tr->data.n_total : tr->data.n;
}

int64_t ddpm_steps_per_epoch(const ddpm_trainer *tr) {
    return ((int64_t)data_items(tr) + tr->cfg.batch_size - 1) / tr->cfg.batch_size;
}

void ddpm_trainer_free(ddpm_trainer *tr) {
    if (!tr) return;
    free(tr->adam_m);
    free(tr->adam_v);
    free(tr->ema);
    free(tr->x0_);
    free(tr->eps_);
    free(tr->xt_);
    free(tr->target_);
    free(tr->out_);
    free(tr->dout_);
    free(tr->cond_);
    free(tr->w_);
    free(tr->sc_);
    free(tr->t_);
    free(tr->perm_);
    free(tr->src_);
    free(tr->gexact_);
    free(tr->mbloss_);
    free(tr->mbbuf_);
    free(tr->buf0_);
    memset(tr, 0, sizeof *tr);
}

int ddpm_trainer_init(ddpm_trainer *tr, ddpm_model *model, const ddpm_schedule *schedule,
                      const ddpm_train_config *cfg, const ddpm_train_data *data) {
    memset(tr, 0, sizeof *tr);
    if (cfg->batch_size < 1)
        return ddpm_fail(DDPM_ERR_INVALID, "batch size must be at least 1 (got %d)", cfg->batch_size);
    if (data->n < 1) return ddpm_fail(DDPM_ERR_INVALID, "no training data");
    if (model->n_classes > 0) /* logits, not a denoiser's output: see ddpm_classifier_train_step */
        return ddpm_fail(DDPM_ERR_INVALID, "a %s is not a diffusion model", model->ops->kind);
    if (data->n > UINT32_MAX) return ddpm_fail(DDPM_ERR_INVALID, "too many training items");
    if (data->n_total > 0 && (data->n_total < data->n || data->n_total > UINT32_MAX))
        return ddpm_fail(DDPM_ERR_INVALID, "a shard of %zu items of a data set of %zu", data->n,
                         data->n_total);
    if (!(cfg->lr > 0.0)) return ddpm_fail(DDPM_ERR_INVALID, "learning rate must be positive");
    if (!(cfg->ema_decay >= 0.0f && cfg->ema_decay < 1.0f))
        return ddpm_fail(DDPM_ERR_INVALID, "EMA decay must be in [0, 1) (got %g)", cfg->ema_decay);
    if (!(cfg->beta1 >= 0 && cfg->beta1 < 1 && cfg->beta2 >= 0 && cfg->beta2 < 1))
        return ddpm_fail(DDPM_ERR_INVALID, "Adam betas must be in [0, 1)");
    if (!(cfg->cond_drop_prob >= 0 && cfg->cond_drop_prob <= 1))
        return ddpm_fail(DDPM_ERR_INVALID, "conditioning drop probability must be in [0, 1]");
    if (schedule->n != model->num_timesteps)
        return ddpm_fail(DDPM_ERR_INVALID,
                         "the model embeds %d timesteps but the schedule has %d entries",
                         model->num_timesteps, schedule->n);
    if (!(cfg->p2_gamma >= 0.0f && cfg->p2_k > 0.0f && cfg->offset_noise >= 0.0f))
        return ddpm_fail(DDPM_ERR_INVALID, "p2 gamma and offset noise must be >= 0 and p2 k > 0");
    if (cfg->microbatch < 0)
        return ddpm_fail(DDPM_ERR_INVALID, "micro-batch size must be >= 0 (got %d)", cfg->microbatch);
    if (cfg->microbatch > 0 &&
        (cfg->batch_size + cfg->microbatch - 1) / cfg->microbatch > DDPM_EXACT_MAX_ADDENDS)
        return ddpm_fail(DDPM_ERR_INVALID,
                         "%d micro-batches per step: at most %d (micro-batches of at least %d items)",
                         (cfg->batch_size + cfg->microbatch - 1) / cfg->microbatch,
                         DDPM_EXACT_MAX_ADDENDS,
                         (cfg->batch_size + DDPM_EXACT_MAX_ADDENDS - 1) / DDPM_EXACT_MAX_ADDENDS);
    if (schedule->alphas_cumprod[schedule->n - 1] == 0.0f && cfg->prediction == DDPM_PRED_EPS)
        return ddpm_fail(DDPM_ERR_INVALID,
                         "a zero-terminal-SNR schedule needs --prediction v or x0 (an eps network "
                         "cannot give x_0 at its last step, where abar = 0)");
    if (cfg->self_cond && !model->self_cond)
        return ddpm_fail(DDPM_ERR_INVALID, "self-conditioning needs a model built with it");
    tr->model = model;
    tr->schedule = schedule;
    tr->cfg = *cfg;
    tr->data = *data;
    tr->perm_epoch_ = -1;
    const size_t np = model->n_params, d = model->sample_numel, B = (size_t)cfg->batch_size;
    const size_t cd = model->cond_dim > 0 ? (size_t)model->cond_dim : 1;
    tr->adam_m = ddpm_alloc_aligned(np, sizeof(float));
    tr->adam_v = ddpm_alloc_aligned(np, sizeof(float));
    tr->ema = cfg->ema_decay > 0 ? ddpm_alloc_aligned(np, sizeof(float)) : NULL;
    tr->x0_ = ddpm_alloc_aligned(B * d, sizeof(float));
    tr->eps_ = ddpm_alloc_aligned(B * d, sizeof(float));
    tr->xt_ = ddpm_alloc_aligned(B * d, sizeof(float));
    tr->target_ = ddpm_alloc_aligned(B * d, sizeof(float));
    tr->out_ = ddpm_alloc_aligned(B * d, sizeof(float));
    tr->dout_ = ddpm_alloc_aligned(B * d, sizeof(float));
    tr->sc_ = ddpm_alloc_aligned(B * d, sizeof(float));
    tr->cond_ = ddpm_alloc(B * cd, sizeof(float));
    tr->w_ = ddpm_alloc(B, sizeof(float));
    tr->t_ = ddpm_alloc(B, sizeof(int));
    tr->perm_ = ddpm_alloc(data->n, sizeof(uint32_t));
    tr->src_ = ddpm_alloc(B, sizeof(uint32_t));
    if (cfg->microbatch > 0) {
        tr->gexact_ = ddpm_alloc_aligned(2 * (np + 1), sizeof(int64_t));
        const size_t kmax = B / (size_t)cfg->microbatch + 2, nbuf = model->n_buffers;
        tr->mbloss_ = ddpm_alloc(kmax, sizeof(double));
        tr->mbbuf_ = nbuf ? ddpm_alloc(kmax * nbuf, sizeof(double)) : NULL;
        tr->buf0_ = nbuf ? ddpm_alloc(nbuf, sizeof(float)) : NULL;
        if (!tr->gexact_ || !tr->mbloss_ || (nbuf && (!tr->mbbuf_ || !tr->buf0_))) {
            ddpm_trainer_free(tr);
            return DDPM_ERR_NOMEM;
        }
    }
    if (!tr->adam_m || !tr->adam_v || (cfg->ema_decay > 0 && !tr->ema) || !tr->x0_ || !tr->eps_ ||
        !tr->xt_ || !tr->target_ || !tr->out_ || !tr->dout_ || !tr->sc_ || !tr->cond_ || !tr->w_ ||
        !tr->t_ || !tr->perm_ || !tr->src_) {
        ddpm_trainer_free(tr);
        return DDPM_ERR_NOMEM;
    }
    if (tr->ema) memcpy(tr->ema, model->params, np * sizeof(float));
    int rc = ddpm_model_reserve(model, cfg->batch_size);
    if (rc) ddpm_trainer_free(tr);
    return rc;
}

/* The epoch's order: Fisher-Yates driven by (seed, SHUFFLE, position, epoch). */
/* The order of an epoch: a Fisher-Yates shuffle of the data's items. A shard's epochs (its own
 * pass over its items) draw from the same stream at positions salted by the rank. */
static void shuffle_for_epoch(ddpm_trainer *tr, int64_t epoch) {
    const size_t n = tr->data.n;
    const uint64_t salt = tr->data.n_total > 0 ? ((uint64_t)tr->dist.rank + 1) << 40 : 0;
    for (size_t i = 0; i < n; i++) tr->perm_[i] = (uint32_t)i;
    for (size_t i = n - 1; i > 0; i--) {
        uint32_t j = ddpm_rand_below(tr->cfg.seed, DDPM_STREAM_SHUFFLE, salt + i, (uint32_t)epoch,
                                     (uint32_t)(i + 1));
        uint32_t tmp = tr->perm_[i];
        tr->perm_[i] = tr->perm_[j];
        tr->perm_[j] = tmp;
    }
    tr->perm_epoch_ = epoch;
}

static void hflip(float *x, int C, int H, int W) {
    for (int c = 0; c < C; c++)
        for (int y = 0; y < H; y++) {
            float *row = x + ((size_t)c * H + y) * W;
            for (int a = 0, b = W - 1; a < b; a++, b--) {
                float tmp = row[a];
                row[a] = row[b];
                row[b] = tmp;
            }
        }
}

/* Items i0..i1-1 of the step's batch (which starts at position `start` of the epoch's order;
 * src_ holds each one's row of the data). */
static void assemble_items(ddpm_trainer *tr, int64_t epoch, size_t start, int i0, int i1) {
    const ddpm_model *m = tr->model;
    const ddpm_schedule *s = tr->schedule;
    const ddpm_train_config *c = &tr->cfg;
    const size_t d = m->sample_numel, n = data_items(tr), cd = (size_t)m->cond_dim;
    const uint32_t usable = (uint32_t)(s->n - s->t0);
    for (int i = i0; i < i1; i++) {
        const uint64_t item = (uint64_t)epoch * n + start + (size_t)i;
        const size_t src = tr->src_[i];
        memcpy(tr->x0_ + (size_t)i * d, tr->data.x + src * d, sizeof(float) * d);
        if (tr->data.hflip && m->width > 1) {
            float u;
            ddpm_randu(c->seed, DDPM_STREAM_AUGMENT, item, 0, &u, 1);
            if (u < 0.5f) hflip(tr->x0_ + (size_t)i * d, m->channels, m->height, m->width);
        }
        tr->t_[i] = s->t0 + (int)ddpm_rand_below(c->seed, DDPM_STREAM_TRAIN_T, item, 0, usable);
        float *eps = tr->eps_ + (size_t)i * d;
        ddpm_randn(c->seed, DDPM_STREAM_TRAIN_NOISE, item, 0, eps, d);
        if (c->offset_noise > 0.0f) {
            /* offset noise (Guttenberg 2023): a per-channel constant added to eps, drawn from the
             * item's noise stream at counter 1 (eps itself is counter 0) */
            const int C = m->channels > 0 ? m->channels : 1;
            const size_t plane = d / (size_t)C;
            float z[64];
            for (int c0 = 0; c0 < C; c0 += 64) {
                const int nz = C - c0 < 64 ? C - c0 : 64;
                ddpm_randn(c->seed, DDPM_STREAM_TRAIN_NOISE, item, 1 + (uint32_t)c0 / 64, z, (size_t)nz);
                for (int ch = 0; ch < nz; ch++)
                    for (size_t j = 0; j < plane; j++)
                        eps[(size_t)(c0 + ch) * plane + j] += c->offset_noise * z[ch];
            }
        }
        if (cd) {
            float *ci = tr->cond_ + (size_t)i * cd;
            if (tr->data.cond)
                memcpy(ci, tr->data.cond + src * cd, sizeof(float) * cd);
            else
                memset(ci, 0, sizeof(float) * cd);
            if (c->cond_drop_prob > 0.0f) {
                float u;
                ddpm_randu(c->seed, DDPM_STREAM_DROPOUT, item, 0, &u, 1);
                if (u < c->cond_drop_prob) memset(ci, 0, sizeof(float) * cd);
            }
        }
    }
}

/* The optimizer part of a step: the gradient norm, then clipping, Adam and the EMA in one pass
 * over the buffers (the operations of ddpm_clip_grad_norm, ddpm_adam_update and ddpm_ema_update one
 * after the other), all in one parallel region. Returns the norm; when it is not finite nothing
 * is touched. */
static float optimizer_step(ddpm_trainer *tr, float lr) {
    ddpm_model *m = tr->model;
    const ddpm_train_config *c = &tr->cfg;
    const size_t n = m->n_params;
    double part[NCHUNK];
    float norm = 0.0f;
    ddpm_mk_adam_args a;
    adam_args(&a, c, lr, tr->step + 1);
    a.ema = tr->ema;
    a.ema_decay = tr->ema ? ddpm_ema_decay_at(c, tr->step + 1) : 0.0f;
    static _Thread_local ddpm_mk_gov gov;
    const int nt = ddpm_mk_gov_begin(&gov, 60.0 * (double)n);
#pragma omp parallel num_threads(nt) if (nt > 1)
    {
#pragma omp for schedule(static)
        for (int k = 0; k < NCHUNK; k++) {
            size_t lo, hi;
            chunk_range(n, k, &lo, &hi);
            part[k] = ddpm_mk_sumsq(m->grads, lo, hi);
        }
#pragma omp single
        {
            double ss = 0.0;
            for (int k = 0; k < NCHUNK; k++) ss += part[k];
            norm = (float)sqrt(ss);
            a.clip_coef = clip_coef(norm, c->grad_clip);
            a.clip = a.clip_coef > 0.0f;
        }
        if (isfinite(norm)) {
#pragma omp for schedule(static)
            for (int k = 0; k < NCHUNK; k++) {
                size_t lo, hi;
                chunk_range(n, k, &lo, &hi);
                ddpm_mk_adam(m->params, m->grads, tr->adam_m, tr->adam_v, lo, hi, &a);
            }
        }
    }
    ddpm_mk_gov_end(&gov);
    return norm;
}

/* A step's micro-batches: K of B items (cfg.microbatch items each, the last smaller; K = 1
 * without micro-batches); this rank's are [k0, k1), its items [i0, i1). */
typedef struct {
    int B, M, K, k0, k1, i0, i1;
} step_split;

static step_split split_step(const ddpm_trainer *tr, int B) {
    step_split p = {.B = B, .M = tr->cfg.microbatch > 0 ? tr->cfg.microbatch : B};
    p.K = (B + p.M - 1) / p.M;
    const int r = tr->dist.size > 1 ? tr->dist.rank : 0, n = tr->dist.size > 1 ? tr->dist.size : 1;
    p.k0 = (int)((long long)p.K * r / n);
    p.k1 = (int)((long long)p.K * (r + 1) / n);
    p.i0 = p.k0 * p.M;
    p.i1 = p.k1 * p.M < B ? p.k1 * p.M : B;
    if (p.i0 > B) p.i0 = B;
    return p;
}

/* Micro-batch k's items [*a, *b). */
static void micro_items(const step_split *p, int k, int *a, int *b) {
    *a = k * p->M;
    *b = (k + 1) * p->M < p->B ? (k + 1) * p->M : p->B;
}

/* The batch size of a step: the last batch of an epoch is smaller, except with a sharded data
 * set, whose ranks each stream through their own part (every batch is full). */
static int batch_at(const ddpm_trainer *tr, int64_t step) {
    const int64_t spe = ddpm_steps_per_epoch(tr);
    const size_t n = data_items(tr), B = (size_t)tr->cfg.batch_size;
    const size_t start = (size_t)(step % spe) * B;
    return (int)(tr->data.n_total > 0 || n - start >= B ? B : n - start);
}

/* The data rows of this rank's items of the step: from the epoch's shuffle (every rank holds the
 * data set); or, with a sharded data set, the next rows of this rank's own stream of shuffled
 * passes over its part: it takes the same number of items every step, so the rows follow from
 * the step number alone and a resume with the same process count is exact. */
static void step_sources(ddpm_trainer *tr, size_t start, const step_split *p) {
    if (tr->data.n_total == 0) {
        for (int i = p->i0; i < p->i1; i++) tr->src_[i] = tr->perm_[start + (size_t)i];
        return;
    }
    const size_t n = tr->data.n;
    uint64_t pos = (uint64_t)tr->step * (uint64_t)(p->i1 - p->i0);
    for (int i = p->i0; i < p->i1; i++, pos++) {
        const int64_t pass = (int64_t)(pos / n);
        if (tr->perm_epoch_ != pass) shuffle_for_epoch(tr, pass);
        tr->src_[i] = tr->perm_[pos % n];
    }
}

/* The accumulator of n elements in a buffer of 2 (n + 1) int64: the lo limbs, then the hi ones;
 * slot n counts refused elements. */
static ddpm_exact_acc exact_acc(int64_t *buf, size_t n) {
    return (ddpm_exact_acc){buf, buf + n + 1};
}

/* m->grads added exactly into the accumulator (the trainer's loop for models without native
 * micro-batches); refused elements are counted in its last slot. */
static void exact_add_grads(ddpm_trainer *tr) {
    ddpm_model *m = tr->model;
    const size_t n = m->n_params;
    const ddpm_exact_acc acc = exact_acc(tr->gexact_, n);
    int64_t bad[NCHUNK];
    const int nt = optim_threads(n / 16); /* ~16 elements per vector step: cheap next to Adam */
#pragma omp parallel for schedule(static) num_threads(nt) if (nt > 1)
    for (int k = 0; k < NCHUNK; k++) {
        size_t lo, hi;
        chunk_range(n, k, &lo, &hi);
        bad[k] = ddpm_mk_exact_add(acc, m->grads, lo, hi);
    }
    for (int k = 0; k < NCHUNK; k++) acc.lo[n] += bad[k];
}

/* Forward, loss and backward of this rank's items with micro-batches: the gradient ends as the
 * exact sum in tr->gexact_, the loss parts in tr->mbloss_[k]. */
static int micro_batches_grad(ddpm_trainer *tr, const step_split *p, ddpm_model_input *in,
                              const float *w) {
    ddpm_model *m = tr->model;
    const ddpm_train_config *c = &tr->cfg;
    const size_t d = m->sample_numel, cd = (size_t)m->cond_dim;
    memset(tr->gexact_, 0, sizeof(int64_t) * 2 * (m->n_params + 1));
    int rc;
    if (m->microbatch_native) {
        /* Calls of one micro-batch per thread: the activations of only that many micro-batches
         * are alive at a time (so --microbatch also bounds memory), and as every micro-batch's
         * gradient is summed exactly, how they are grouped into calls changes nothing. */
        const int per_call = omp_get_max_threads();
        const size_t nbuf = m->n_buffers;
        for (int c0 = p->k0; c0 < p->k1; c0 += per_call) {
            const int c1 = c0 + per_call < p->k1 ? c0 + per_call : p->k1;
            int a, b, e;
            micro_items(p, c0, &a, &e);
            micro_items(p, c1 - 1, &e, &b);
            ddpm_model_input ic = *in;
            ic.x = tr->xt_ + (size_t)a * d;
            ic.t = tr->t_ + a;
            ic.cond = in->cond ? tr->cond_ + (size_t)a * cd : NULL;
            ic.self_cond = in->self_cond ? tr->sc_ + (size_t)a * d : NULL;
            ic.B = b - a;
            ic.item0 = a;
            if ((rc = m->ops->forward(m, &ic, tr->out_ + (size_t)a * d))) return rc;
            if (nbuf)
                for (size_t i = 0; i < (size_t)(c1 - c0) * nbuf; i++)
                    tr->mbbuf_[(size_t)c0 * nbuf + i] = m->mb_buffers[i];
            for (int k = c0; k < c1; k++) {
                int ka, kb;
                micro_items(p, k, &ka, &kb);
                const size_t o = (size_t)ka * d;
                tr->mbloss_[k] = loss_part(c->loss, tr->out_ + o, tr->target_ + o,
                                           w ? w + ka : NULL, kb - ka, d, p->B, tr->dout_ + o);
            }
            m->grad_exact = tr->gexact_;
            rc = m->ops->backward(m, tr->dout_ + (size_t)a * d);
            m->grad_exact = NULL;
            if (rc) return rc;
        }
        return DDPM_OK;
    }
    /* Batch-norm running statistics: each micro-batch updates them from the step's starting
     * values; the step's result is their mean over the micro-batches (reduce_micro_batches), the
     * same for any split of the micro-batches over processes. */
    const size_t nbuf = m->n_buffers;
    if (nbuf) memcpy(tr->buf0_, m->buffers, sizeof(float) * nbuf);
    for (int k = p->k0; k < p->k1; k++) {
        int a, b;
        micro_items(p, k, &a, &b);
        if (nbuf) memcpy(m->buffers, tr->buf0_, sizeof(float) * nbuf);
        ddpm_model_input ik = *in;
        ik.x = tr->xt_ + (size_t)a * d;
        ik.t = tr->t_ + a;
        ik.cond = in->cond ? tr->cond_ + (size_t)a * cd : NULL;
        ik.self_cond = in->self_cond ? tr->sc_ + (size_t)a * d : NULL;
        ik.B = b - a;
        ik.item0 = a;
        ik.microbatch = 0;
        const size_t o = (size_t)a * d;
        if ((rc = m->ops->forward(m, &ik, tr->out_ + o))) return rc;
        tr->mbloss_[k] = loss_part(c->loss, tr->out_ + o, tr->target_ + o, w ? w + a : NULL,
                                   b - a, d, p->B, tr->dout_ + o);
        memset(m->grads, 0, sizeof(float) * m->n_params);
        if ((rc = m->ops->backward(m, tr->dout_ + o))) return rc;
        exact_add_grads(tr);
        for (size_t i = 0; i < nbuf; i++) tr->mbbuf_[(size_t)k * nbuf + i] = m->buffers[i];
    }
    return DDPM_OK;
}

/* After the micro-batches: the reductions over ranks (the gradient's integers; the loss parts and
 * the stop flag in one small sum, where each slot has one rank's value and zeros: exact), then the
 * loss as the sum of its parts in micro-batch order and the gradient rounded once to float. */
static int reduce_micro_batches(ddpm_trainer *tr, const step_split *p, double *loss) {
    ddpm_model *m = tr->model;
    const size_t n = m->n_params;
    const ddpm_exact_acc acc = exact_acc(tr->gexact_, n);
    for (int k = 0; k < p->K; k++)
        if (k < p->k0 || k >= p->k1) tr->mbloss_[k] = 0.0;
    tr->mbloss_[p->K] = tr->stop_request ? 1.0 : 0.0;
    const size_t nbuf = m->n_buffers;
    if (nbuf && p->k1 > p->k0) {
        memset(tr->mbbuf_, 0, sizeof(double) * (size_t)p->k0 * nbuf);
        memset(tr->mbbuf_ + (size_t)p->k1 * nbuf, 0, sizeof(double) * (size_t)(p->K - p->k1) * nbuf);
    } else if (nbuf) {
        memset(tr->mbbuf_, 0, sizeof(double) * (size_t)p->K * nbuf);
    }
    if (tr->dist.size > 1) {
        int rc = tr->dist.allreduce_i64(tr->dist.ctx, tr->gexact_, 2 * (n + 1));
        if (!rc) rc = tr->dist.allreduce_sum(tr->dist.ctx, tr->mbloss_, (size_t)p->K + 1);
        if (!rc && nbuf) rc = tr->dist.allreduce_sum(tr->dist.ctx, tr->mbbuf_, (size_t)p->K * nbuf);
        if (rc) return rc;
    }
    for (size_t i = 0; i < nbuf; i++) {
        double sum = 0.0;
        for (int k = 0; k < p->K; k++) sum += tr->mbbuf_[(size_t)k * nbuf + i];
        m->buffers[i] = (float)(sum / p->K);
    }
    double total = 0.0;
    for (int k = 0; k < p->K; k++) total += tr->mbloss_[k];
    *loss = total;
    tr->stop_all = tr->mbloss_[p->K] > 0.0;
    if (acc.lo[n] != 0)
        return ddpm_fail(DDPM_ERR_NUMERIC,
                         "%lld gradient elements are not finite or beyond 2^%d at step %lld: "
                         "training diverged",
                         (long long)acc.lo[n], DDPM_EXACT_MAX_LOG2, (long long)tr->step + 1);
    const int nt = optim_threads(n / 8);
#pragma omp parallel for schedule(static) num_threads(nt) if (nt > 1)
    for (int k = 0; k < NCHUNK; k++) {
        size_t lo, hi;
        chunk_range(n, k, &lo, &hi);
        ddpm_mk_exact_to_f32(m->grads, acc, lo, hi);
    }
    return DDPM_OK;
}

static int trainer_step(ddpm_trainer *tr) {
    ddpm_model *m = tr->model;
    const ddpm_schedule *s = tr->schedule;
    const ddpm_train_config *c = &tr->cfg;
    const size_t d = m->sample_numel;
    const size_t cd = (size_t)m->cond_dim;
    const int64_t spe = ddpm_steps_per_epoch(tr);
    const int B = batch_at(tr, tr->step);
    /* Every draw of an item (t, noise, dropout, flip) is addressed by epoch n + start + i: its
     * place in the run. A sharded run has no epochs of its own: item step B + i. */
    const int sharded = tr->data.n_total > 0;
    const int64_t epoch = sharded ? 0 : tr->step / spe;
    const size_t start = (size_t)(sharded ? tr->step : tr->step % spe) * (size_t)c->batch_size;
    if (!sharded && tr->perm_epoch_ != epoch) shuffle_for_epoch(tr, epoch);
    const step_split p = split_step(tr, B);
    const int i0 = p.i0, nloc = p.i1 - p.i0;
    step_sources(tr, sharded ? 0 : start, &p);

    /* This rank's items of the batch: x_0 from the shuffle, t, eps, conditioning (with dropout),
     * flips. Every draw is addressed by its item, so threads can fill disjoint items. */
    static _Thread_local ddpm_mk_gov gov;
    const int nt = ddpm_mk_gov_begin(&gov, 2e4 * (double)nloc * (double)(d < 64 ? 1 : d / 64));
#pragma omp parallel num_threads(nt) if (nt > 1)
    {
const int tid = omp_get_thread_num(), nth = omp_get_num_threads();
        int a, b;
        ddpm_mk_split(nloc, nth, tid, 1, &a, &b);
        assemble_items(tr, epoch, start, i0 + a, i0 + b);
    }
    ddpm_mk_gov_end(&gov);
    const size_t o = (size_t)i0 * d;
    ddpm_q_sample(s, tr->x0_ + o, tr->eps_ + o, tr->t_ + i0, nloc, d, tr->xt_ + o);
    ddpm_target(s, c->prediction, tr->x0_ + o, tr->eps_ + o, tr->t_ + i0, nloc, d, tr->target_ + o);

    ddpm_model_input in = {.x = tr->xt_ + o, .t = tr->t_ + i0,
                           .cond = cd ? tr->cond_ + (size_t)i0 * cd : NULL, .B = nloc, .train = 1,
                           .seed = c->seed, .step = (uint64_t)tr->step, .item0 = i0,
                           .microbatch = c->microbatch > 0 ? c->microbatch : 0};
    int rc;
    if (m->self_cond) {
        memset(tr->sc_ + o, 0, sizeof(float) * (size_t)nloc * d);
        float u = 0.0f;
        ddpm_randu(c->seed, DDPM_STREAM_DROPOUT, (uint64_t)tr->step, 1, &u, 1);
        if (c->self_cond && u < 0.5f && nloc > 0) {
            /* Half of the steps: condition on the network's own (detached) x_0 estimate. */
            in.self_cond = tr->sc_ + o;
            in.train = 0;
            if ((rc = m->ops->forward(m, &in, tr->out_ + o))) return rc;
            ddpm_split_prediction(s, c->prediction, tr->xt_ + o, tr->out_ + o, tr->t_ + i0, nloc,
                                  d, 1, NULL, tr->sc_ + o);
            in.train = 1;
        }
        in.self_cond = tr->sc_ + o;
    }
    const float *w = NULL;
    if (c->min_snr_gamma > 0.0f || c->p2_gamma > 0.0f) {
        if (c->min_snr_gamma > 0.0f)
            ddpm_min_snr_weights(s, c->prediction, c->min_snr_gamma, tr->t_ + i0, nloc, tr->w_ + i0);
        else
            for (int i = 0; i < nloc; i++) tr->w_[i0 + i] = 1.0f;
        if (c->p2_gamma > 0.0f) ddpm_p2_weights(s, c->p2_gamma, c->p2_k, tr->t_ + i0, nloc, tr->w_ + i0);
        w = tr->w_;
    }
    double loss;
    if (c->microbatch > 0) {
        if (nloc > 0 && (rc = micro_batches_grad(tr, &p, &in, w))) return rc;
        if (nloc == 0) memset(tr->gexact_, 0, sizeof(int64_t) * 2 * (m->n_params + 1));
        if ((rc = reduce_micro_batches(tr, &p, &loss))) return rc;
        if (!isfinite(loss))
            return ddpm_fail(DDPM_ERR_NUMERIC, "loss is %g at step %lld: training diverged", loss,
                             (long long)tr->step + 1);
    } else {
        if ((rc = m->ops->forward(m, &in, tr->out_))) return rc;
        loss = ddpm_loss_and_grad(c->loss, tr->out_, tr->target_, w, B, d, tr->dout_);
        tr->stop_all = tr->stop_request;
        if (!isfinite(loss))
            return ddpm_fail(DDPM_ERR_NUMERIC, "loss is %g at step %lld: training diverged", loss,
                             (long long)tr->step + 1);
        memset(m->grads, 0, sizeof(float) * m->n_params);
        if ((rc = m->ops->backward(m, tr->dout_))) return rc;
    }
    const float lr = ddpm_lr_at(c, tr->step);
    const float norm = optimizer_step(tr, lr);
    if (!isfinite(norm))
        return ddpm_fail(DDPM_ERR_NUMERIC, "gradient norm is %g at step %lld: training diverged",
                         norm, (long long)tr->step + 1);
    tr->step++;
    tr->last_loss = (float)loss;
    tr->last_grad_norm = norm;
    tr->last_lr = lr;
    return DDPM_OK;
}

int ddpm_trainer_set_dist(ddpm_trainer *tr, const ddpm_train_dist *dist) {
    if (dist->size > 1) {
        if (tr->cfg.microbatch < 1)
            return ddpm_fail(DDPM_ERR_INVALID,
                             "training over %d processes needs micro-batches (--deterministic or "
                             "--microbatch M): they fix how the batch is split, whatever the "
                             "process count",
                             dist->size);
        if (!dist->allreduce_i64 || !dist->allreduce_sum || dist->rank < 0 ||
            dist->rank >= dist->size)
            return ddpm_fail(DDPM_ERR_INVALID, "incomplete process-group description");
    }
    tr->dist = *dist;
    return DDPM_OK;
}

int ddpm_trainer_step(ddpm_trainer *tr) {
    /* One thread governor for the whole step: the batch, the forward and backward passes and the
     * optimizer all run with the thread count it picks (the results are the same for any). */
    static _Thread_local ddpm_mk_gov gov;
    ddpm_mk_gov_begin_all(&gov);
    const int rc = trainer_step(tr);
    ddpm_mk_gov_end(&gov);
    return rc;
}

/* classifier_train.c - training the image classifier (models/classifier.c) on labelled images:
 * shuffled batches, the cross-entropy loss (ops/loss.c), gradient clipping and Adam/AdamW with the
 * learning-rate schedule of the diffusion trainer (train/trainer.c's pieces), and its accuracy.
 * Kept apart from ddpm_trainer, whose step is the diffusion objective (noise, timesteps, EMA). */
#include "core/internal.h"

#include <math.h>

void ddpm_classifier_trainer_free(ddpm_classifier_trainer *tr) {
    free(tr->adam_m);
    free(tr->adam_v);
    free(tr->xb_);
    free(tr->logits_);
    free(tr->probs_);
    free(tr->dlogits_);
    free(tr->yb_);
    free(tr->perm_);
    memset(tr, 0, sizeof *tr);
}

int ddpm_classifier_trainer_init(ddpm_classifier_trainer *tr, ddpm_model *model,
                                 const ddpm_train_config *cfg, const float *x, const int *labels,
                                 size_t n) {
    memset(tr, 0, sizeof *tr);
    if (model->n_classes <= 0)
        return ddpm_fail(DDPM_ERR_INVALID, "a %s is not a classifier", model->ops->kind);
    if (cfg->batch_size < 2) /* batch norm needs two items */
        return ddpm_fail(DDPM_ERR_INVALID, "classifier batch size must be at least 2 (got %d)",
                         cfg->batch_size);
    if (n < 2) return ddpm_fail(DDPM_ERR_INVALID, "classifier: fewer than 2 training images");
    if (n > UINT32_MAX) return ddpm_fail(DDPM_ERR_INVALID, "too many training items");
    if (!(cfg->lr > 0.0)) return ddpm_fail(DDPM_ERR_INVALID, "learning rate must be positive");
    for (size_t i = 0; i < n; i++)
        if (labels[i] < 0 || labels[i] >= model->n_classes)
            return ddpm_fail(DDPM_ERR_INVALID, "label %d of image %zu outside 0..%d", labels[i], i,
                             model->n_classes - 1);
    tr->model = model;
    tr->cfg = *cfg;
    tr->x = x;
    tr->labels = labels;
    tr->n = n;
    tr->perm_epoch_ = -1;
    const size_t B = (size_t)cfg->batch_size, K = (size_t)model->n_classes;
    tr->adam_m = ddpm_alloc_aligned(model->n_params, sizeof(float));
    tr->adam_v = ddpm_alloc_aligned(model->n_params, sizeof(float));
    tr->xb_ = ddpm_alloc(B * model->sample_numel, sizeof(float));
    tr->logits_ = ddpm_alloc(B * K, sizeof(float));
    tr->probs_ = ddpm_alloc(B * K, sizeof(float));
    tr->dlogits_ = ddpm_alloc(B * K, sizeof(float));
    tr->yb_ = ddpm_alloc(B, sizeof(int));
    tr->perm_ = ddpm_alloc(n, sizeof(uint32_t));
    int rc = DDPM_OK;
    if (!tr->adam_m || !tr->adam_v || !tr->xb_ || !tr->logits_ || !tr->probs_ || !tr->dlogits_ ||
        !tr->yb_ || !tr->perm_)
        rc = DDPM_ERR_NOMEM;
    if (!rc) rc = ddpm_model_reserve(model, cfg->batch_size);
    if (rc) ddpm_classifier_trainer_free(tr);
    return rc;
}

/* The epoch's order: a Fisher-Yates shuffle drawn from (seed, DDPM_STREAM_SHUFFLE, i, epoch). */
static void shuffle(ddpm_classifier_trainer *tr, int64_t epoch) {
    for (size_t i = 0; i < tr->n; i++) tr->perm_[i] = (uint32_t)i;
    for (size_t i = tr->n - 1; i > 0; i--) {
        const uint32_t j = ddpm_rand_below(tr->cfg.seed, DDPM_STREAM_SHUFFLE, i, (uint32_t)epoch,
                                           (uint32_t)(i + 1));
        const uint32_t t = tr->perm_[i];
        tr->perm_[i] = tr->perm_[j];
        tr->perm_[j] = t;
    }
    tr->perm_epoch_ = epoch;
}

int64_t ddpm_classifier_steps_per_epoch(const ddpm_classifier_trainer *tr) {
    /* the last incomplete batch is dropped: a batch of one item has no batch statistics */
    return (int64_t)(tr->n / (size_t)tr->cfg.batch_size);
}

int ddpm_classifier_trainer_step(ddpm_classifier_trainer *tr) {
    ddpm_model *m = tr->model;
    const ddpm_train_config *c = &tr->cfg;
    const int B = c->batch_size, K = m->n_classes;
    const size_t d = m->sample_numel;
    const int64_t spe = ddpm_classifier_steps_per_epoch(tr);
    const int64_t epoch = tr->step / spe;
    const size_t start = (size_t)(tr->step % spe) * (size_t)B;
    if (tr->perm_epoch_ != epoch) shuffle(tr, epoch);
    for (int b = 0; b < B; b++) {
        const size_t i = tr->perm_[start + (size_t)b];
        memcpy(tr->xb_ + (size_t)b * d, tr->x + i * d, sizeof(float) * d);
        tr->yb_[b] = tr->labels[i];
    }
    ddpm_model_input in = {.x = tr->xb_, .B = B, .train = 1, .seed = c->seed,
                           .step = (uint64_t)tr->step};
    int rc = m->ops->forward(m, &in, tr->logits_);
    if (rc) return rc;
    const double loss = ddpm_cross_entropy_forward(tr->probs_, tr->logits_, tr->yb_, B, K);
    if (!isfinite(loss))
        return ddpm_fail(DDPM_ERR_NUMERIC, "classifier loss is %g at step %lld: training diverged",
                         loss, (long long)tr->step + 1);
    int correct = 0;
    for (int b = 0; b < B; b++) {
        const float *z = tr->logits_ + (size_t)b * K;
        int best = 0;
        for (int k = 1; k < K; k++) best = z[k] > z[best] ? k : best;
        correct += best == tr->yb_[b];
    }
    memset(tr->dlogits_, 0, sizeof(float) * (size_t)B * K);
    ddpm_cross_entropy_backward(tr->dlogits_, 1.0f, tr->probs_, tr->yb_, B, K);
    memset(m->grads, 0, sizeof(float) * m->n_params);
    if ((rc = m->ops->backward(m, tr->dlogits_))) return rc;
    const float norm = ddpm_clip_grad_norm(m->grads, m->n_params, c->grad_clip);
    if (!isfinite(norm))
        return ddpm_fail(DDPM_ERR_NUMERIC, "gradient norm is %g at step %lld: training diverged",
                         norm, (long long)tr->step + 1);
    const float lr = ddpm_lr_at(c, tr->step);
    ddpm_adam_update(m->params, m->grads, tr->adam_m, tr->adam_v, m->n_params, c, lr,
                     tr->step + 1);
    tr->step++;
    tr->last_loss = (float)loss;
    tr->last_accuracy = (float)correct / (float)B;
    tr->last_lr = lr;
    return DDPM_OK;
}

int ddpm_classifier_run(ddpm_model *m, const float *x, size_t n, float *features, int *pred) {
    if (m->n_classes <= 0) return ddpm_fail(DDPM_ERR_INVALID, "a %s is not a classifier", m->ops->kind);
    const int K = m->n_classes, F = ddpm_classifier_feature_dim(m);
    const size_t chunk = 500; /* bounds the logits buffer and the reserved batch */
    float *logits = ddpm_alloc(chunk * (size_t)K, sizeof(float));
    if (!logits) return DDPM_ERR_NOMEM;
    int rc = DDPM_OK;
    for (size_t i0 = 0; i0 < n && !rc; i0 += chunk) {
        const size_t nb = n - i0 < chunk ? n - i0 : chunk;
        rc = ddpm_classifier_forward_eval(m, x + i0 * m->sample_numel, (int)nb,
                                          features ? features + i0 * (size_t)F : NULL, logits);
        for (size_t b = 0; pred && b < nb && !rc; b++) {
            const float *z = logits + b * (size_t)K;
            int best = 0;
            for (int k = 1; k < K; k++) best = z[k] > z[best] ? k : best;
            pred[i0 + b] = best;
        }
    }
    free(logits);
    return rc;
}

int ddpm_classifier_predict(ddpm_model *m, const float *x, size_t n, int *pred) {
    return ddpm_classifier_run(m, x, n, NULL, pred);
}

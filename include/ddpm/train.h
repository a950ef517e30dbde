/* ddpm/train.h - the trainer (loss, Adam/AdamW, clipping, EMA, schedules of the learning rate) and checkpoints of its whole state.
 * Part of the public API; include "ddpm.h" for all of it. */
#ifndef DDPM_TRAIN_H
#define DDPM_TRAIN_H

#include "ddpm/model.h"
#include "ddpm/report.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- training ---- */

typedef enum { DDPM_OPT_ADAM = 0, DDPM_OPT_ADAMW } ddpm_optimizer;
typedef enum { DDPM_LR_CONSTANT = 0, DDPM_LR_COSINE, DDPM_LR_LINEAR } ddpm_lr_decay;
typedef enum { DDPM_LOSS_L2 = 0, DDPM_LOSS_L1 } ddpm_loss;

typedef struct {
    ddpm_prediction prediction; /* target: eps (default), x0 or v */
    ddpm_loss loss;             /* L2 (default) or L1, mean over all elements */
    float min_snr_gamma;        /* > 0: min-SNR-gamma loss weighting (Hang et al., gamma = 5) */
    float p2_gamma, p2_k;       /* p2_gamma > 0: the P2 weight (k + SNR_t)^-gamma (Choi et al. 2022,
                                   lucidrains' p2_loss_weight_gamma / _k; k default 1) */
    float offset_noise;         /* > 0: eps += S * z, z one normal draw per (item, channel) */
    ddpm_optimizer optimizer;
    double lr, beta1, beta2, adam_eps, weight_decay; /* doubles, as PyTorch holds them */
    int warmup_steps;           /* linear warm-up from 0 */
    ddpm_lr_decay decay;        /* after warm-up, down to min_lr at total_steps */
    double min_lr;
    float grad_clip;            /* max global gradient norm; 0 = off (default 1.0) */
    float ema_decay;            /* 0 = no EMA */
    int ema_warmup;             /* decay_t = min(ema_decay, (1 + t) / (10 + t)) */
    int batch_size;
    int64_t total_steps;
    uint64_t seed;
    float cond_drop_prob;       /* probability of zeroing an item's conditioning */
    int self_cond;              /* train with self-conditioning on half of the steps */
    int microbatch;             /* > 0: a step's batch is split into micro-batches of this many
                                   items whose gradients are summed exactly: the result does not
                                   depend on the thread or process count (0: one batch, float) */
} ddpm_train_config;
void ddpm_train_config_default(ddpm_train_config *c);
const char *ddpm_optimizer_name(ddpm_optimizer o);
int ddpm_optimizer_parse(const char *name, ddpm_optimizer *out);
const char *ddpm_lr_decay_name(ddpm_lr_decay d);
int ddpm_lr_decay_parse(const char *name, ddpm_lr_decay *out);
const char *ddpm_loss_name(ddpm_loss l);
int ddpm_loss_parse(const char *name, ddpm_loss *out);

/* The training data as the trainer sees it: n items of the model's sample_numel floats. */
typedef struct {
    const float *x;    /* [n, d] */
    const float *cond; /* [n, cond_dim] or NULL */
    size_t n;
    int hflip;         /* images: random horizontal flips */
    /* A sharded data set (each rank holds a static part of it): the items over all ranks; 0 =
     * every rank holds all n items. The epochs then count n_total items, and each rank draws
     * its share of every batch from its own shuffled passes over its part. */
    size_t n_total;
} ddpm_train_data;

/* Data-parallel training (the library knows no MPI: the caller supplies the reductions). With
 * size > 1, rank r computes the gradients of micro-batches [K r / size, K (r + 1) / size) of each
 * step's K; every rank then runs the same clipping, Adam and EMA on the same reduced gradients. */
typedef struct {
    int rank, size;
    void *ctx;
    /* Sums n int64 over all ranks, in place (the exact gradient's fixed-point limbs). */
    int (*allreduce_i64)(void *ctx, int64_t *v, size_t n);
    /* Sums n doubles over all ranks, in place (used only where one rank holds each non-zero). */
    int (*allreduce_sum)(void *ctx, double *v, size_t n);
} ddpm_train_dist;

/* Optimizer state lives in buffers parallel to the model's params: Adam's m and v, EMA weights.
 * Every step is a pure function of (weights, optimizer state, step, seed): resuming from a
 * checkpoint at step k gives bitwise the same run. */
typedef struct {
    ddpm_model *model;
    const ddpm_schedule *schedule;
    ddpm_train_config cfg;
    ddpm_train_data data;
    float *adam_m, *adam_v, *ema; /* n_params each */
    int64_t step;                 /* optimizer steps taken */
    /* the last step */
    float last_loss, last_grad_norm, last_lr;
    /* data parallelism (zeroed = one process); stop_request: this rank wants to stop (Ctrl-C),
     * stop_all: some rank asked, as known after the last step (it rides on the step's reduction) */
    ddpm_train_dist dist;
    int stop_request, stop_all;
    /* private working memory */
    float *x0_, *eps_, *xt_, *target_, *out_, *dout_, *cond_, *w_, *sc_;
    int *t_;
    int64_t *gexact_; /* the exact gradient sum's limbs, 2 (n_params + 1) (cfg.microbatch > 0) */
    double *mbloss_; /* per micro-batch loss parts, + 1 slot for the stop flag */
    double *mbbuf_;  /* per micro-batch running statistics (models with buffers) */
    float *buf0_;    /* the running statistics at the step's start */
    uint32_t *perm_;
    uint32_t *src_;  /* the data row of each item of the step's batch */
    int64_t perm_epoch_;
} ddpm_trainer;

int ddpm_trainer_init(ddpm_trainer *tr, ddpm_model *model, const ddpm_schedule *schedule,
                      const ddpm_train_config *cfg, const ddpm_train_data *data);
void ddpm_trainer_free(ddpm_trainer *tr);
/* Makes the trainer one rank of a data-parallel group (after init; refused without micro-batches).
 * With micro-batches, batch norm normalises each micro-batch by its own statistics (as PyTorch's
 * DDP does per process without SyncBatchNorm) and the step's running statistics are the mean of
 * what each micro-batch's update from the step's starting values gives. */
int ddpm_trainer_set_dist(ddpm_trainer *tr, const ddpm_train_dist *dist);
/* One optimizer step on the next batch. Returns DDPM_ERR_NUMERIC (without touching the weights)
 * if the loss or the gradient is NaN or inf. */
int ddpm_trainer_step(ddpm_trainer *tr);
/* The learning rate at a step (warm-up and decay applied). */
float ddpm_lr_at(const ddpm_train_config *c, int64_t step);
/* Items and batches: steps per epoch = ceil(n / batch_size); the last batch is smaller. */
int64_t ddpm_steps_per_epoch(const ddpm_trainer *tr);

/* The pieces of a step, exposed for tests against PyTorch: */
/* One Adam/AdamW update at step number `step` (1-based) over n parameters. */
void ddpm_adam_update(float *params, const float *grads, float *m, float *v, size_t n,
                      const ddpm_train_config *c, float lr, int64_t step);
/* Scales grads so their global L2 norm is at most max_norm (as torch.nn.utils.clip_grad_norm_);
 * returns the norm before clipping. */
float ddpm_clip_grad_norm(float *grads, size_t n, float max_norm);
/* ema = decay * ema + (1 - decay) * params */
void ddpm_ema_update(float *ema, const float *params, size_t n, float decay);
/* The EMA decay used at a step (with warm-up if enabled). */
float ddpm_ema_decay_at(const ddpm_train_config *c, int64_t step);
/* Loss and its gradient for B items of d floats with per-item weights w (NULL = 1):
 * returns mean over items of w_i * mean_j l(out - target); dout may be NULL. */
double ddpm_loss_and_grad(ddpm_loss loss, const float *out, const float *target, const float *w,
                          int B, size_t d, float *dout);
/* Per-item P2 weights (k + SNR_t)^-gamma, multiplied into w. */
void ddpm_p2_weights(const ddpm_schedule *s, float gamma, float k, const int *t, int B, float *w);
/* Per-item min-SNR-gamma weights for prediction type p. */
void ddpm_min_snr_weights(const ddpm_schedule *s, ddpm_prediction p, float gamma, const int *t,
                          int B, float *w);

/* ---- training the image classifier (src/train/classifier_train.c) ---- */

/* Trains a classifier model (ddpm_model.n_classes > 0) on n labelled images: each step a batch of
 * cfg.batch_size items from the epoch's shuffle (the last incomplete batch of an epoch is
 * dropped), the cross-entropy of the logits, gradients from zero, clipping to cfg.grad_clip (0:
 * off) and one Adam/AdamW update at ddpm_lr_at(cfg, step). Uses cfg's optimizer fields, lr
 * schedule, batch_size and seed (no EMA, no diffusion fields). x [n, sample_numel] and
 * labels [n] (each in 0..n_classes-1) are borrowed and must outlive the trainer. */
typedef struct {
    ddpm_model *model;
    ddpm_train_config cfg;
    const float *x;
    const int *labels;
    size_t n;
    float *adam_m, *adam_v; /* n_params each */
    int64_t step;
    float last_loss, last_accuracy, last_lr; /* of the last batch (training mode) */
    /* private working memory */
    float *xb_, *logits_, *probs_, *dlogits_;
    int *yb_;
    uint32_t *perm_;
    uint32_t *src_;  /* the data row of each item of the step's batch */
    int64_t perm_epoch_;
} ddpm_classifier_trainer;
int ddpm_classifier_trainer_init(ddpm_classifier_trainer *tr, ddpm_model *model,
                                 const ddpm_train_config *cfg, const float *x, const int *labels,
                                 size_t n);
void ddpm_classifier_trainer_free(ddpm_classifier_trainer *tr);
int ddpm_classifier_trainer_step(ddpm_classifier_trainer *tr);
int64_t ddpm_classifier_steps_per_epoch(const ddpm_classifier_trainer *tr);
/* Eval mode over n images [n, C, H, W] (in chunks): the features [n, feature_dim] and the class
 * of highest logit pred[n]; either may be NULL. */
int ddpm_classifier_run(ddpm_model *m, const float *x, size_t n, float *features, int *pred);
/* The class of highest logit of each of n images (eval mode), into pred[n]. */
int ddpm_classifier_predict(ddpm_model *m, const float *x, size_t n, int *pred);

/* ---- sample quality of a model (src/train/image_quality.c) ----
 * What a training loop calls every few steps and `ddpm eval` of a checkpoint: c->n samples of
 * the denoiser (c->sampler's settings and seed; item i's noise from its index, so the samples do
 * not depend on c->batch), their features in the classifier, and against real_features
 * [n_real, feature_dim] (e.g. ddpm_classifier_run of real images, computed once) the Frechet
 * distance, KID and precision/recall (*q, ddpm_image_quality_compute with c->metrics). With
 * c->wanted, *class_accuracy (may be NULL) is the fraction of samples classified as the class
 * they were asked for (else -1). samples_out [n, C, H, W] (may be NULL) keeps the samples. */
typedef struct {
    ddpm_sample_opts sampler;
    size_t n;
    int batch;              /* items sampled at once (0: 100) */
    const float *cond;      /* [n, cond_dim] per sample, or NULL: unconditional */
    float guidance;         /* classifier-free guidance weight */
    const int *wanted;      /* [n] the class of each sample's condition, or NULL */
    ddpm_image_quality_opts metrics;
} ddpm_image_eval_config;
int ddpm_image_quality_of_model(ddpm_model *denoiser, const ddpm_schedule *s,
                                const ddpm_image_eval_config *c, ddpm_model *classifier,
                                const ddpm_points *real_features, ddpm_image_quality *q,
                                double *class_accuracy, float *samples_out);

/* ---- checkpoints ---- */

/* Writes model weights, EMA weights, Adam moments and metadata (model, schedule and training
 * config as JSON, step, data description) atomically. extra_keys/values: more metadata. */
int ddpm_checkpoint_save(const char *path, const ddpm_trainer *tr, const char *data_json,
                         const char *const *extra_keys, const char *const *extra_values,
                         size_t n_extra);

/* Removes what an interrupted atomic write of path left behind: the files PATH.tmp.PID (every
 * file this library writes goes through such a temporary file) in path's directory whose
 * process PID no longer runs; a live process's temporary file is left alone. *removed (if not
 * NULL) gets how many went. Errors: DDPM_ERR_IO naming the file that could not be removed (a
 * missing directory is no error: nothing to clean). */
int ddpm_remove_stale_temporaries(const char *path, int *removed);

/* A loaded checkpoint: the model (built from its stored config, weights loaded), the schedule and
 * the training state. */
typedef struct {
    ddpm_model *model;
    ddpm_schedule schedule;
    ddpm_train_config train;
    int has_train;        /* the file had training state (not a plain weights export) */
    int64_t step;
    float *ema;           /* n_params or NULL */
    float *adam_m, *adam_v;
    char *data_json;      /* the data description, or NULL */
    ddpm_safetensors st;  /* the file (for extra metadata) */
} ddpm_checkpoint;
/* Reads and validates a checkpoint; errors name the file and the problem (missing, truncated,
 * corrupted, wrong tensor names or shapes, unknown model kind). */
int ddpm_checkpoint_load(const char *path, ddpm_checkpoint *ck);
void ddpm_checkpoint_free(ddpm_checkpoint *ck);
/* diffusers folders (io/diffusers.c): a UNet2DModel and its scheduler, in the pipeline layout
 * (unet/config.json, unet/diffusion_pytorch_model.safetensors, scheduler/scheduler_config.json)
 * or flat (config.json, diffusion_pytorch_model.safetensors, scheduler_config.json if any).
 * What the scheduler config says about sampling, for the caller to use unless told otherwise: */
typedef struct {
    char scheduler[32];    /* "DDPMScheduler", "DDIMScheduler", "PNDMScheduler"; "" if the flat
                              folder has no scheduler_config.json (DDPMScheduler's defaults) */
    ddpm_sampler sampler;  /* DDPM for DDPMScheduler, DDIM for DDIMScheduler and PNDMScheduler */
    ddpm_variance variance;/* variance_type fixed_small / fixed_large */
    ddpm_spacing spacing;  /* timestep_spacing */
    int clip_x0;           /* clip_sample (off when thresholding) */
    float clip_range;      /* clip_sample_range */
    int threshold;         /* thresholding, with dynamic_thresholding_ratio, sample_max_value */
    float threshold_ratio, threshold_max;
    int steps_offset;      /* steps_offset (leading spacing) */
    int final_abar_t0;     /* DDIMScheduler with set_alpha_to_one false */
} ddpm_diffusers_sampling;
/* Sets the diffusers scheduler rules of smp in o (clip range, steps_offset, DDIMScheduler's step:
 * the network's eps kept beside a clipped x_0, the previous timestep t - T / K, the final alpha). */
void ddpm_diffusers_sample_opts(const ddpm_diffusers_sampling *smp, ddpm_sample_opts *o);
/* Loads folder dir into ck (the unet2d model with its weights, the schedule, the prediction type
 * in ck->train.prediction; no EMA) and the scheduler's sampling settings into smp. Every config
 * key ddpm does not map is refused by name; errors name the file. */
int ddpm_diffusers_load(const char *dir, ddpm_checkpoint *ck, ddpm_diffusers_sampling *smp);
/* The parsers beneath it, for a config file's text (path names it in errors): a
 * scheduler_config.json into a schedule (initialised; free it), a prediction type and the
 * sampling settings; a UNet2DModel config.json into the config of ddpm's unet2d network for T
 * timesteps (malloc'd JSON). */
int ddpm_diffusers_scheduler_parse(const char *json, size_t len, const char *path,
                                   ddpm_schedule *s, ddpm_prediction *pred,
                                   ddpm_diffusers_sampling *smp);
int ddpm_diffusers_model_config(const char *json, size_t len, const char *path, int T, char **out);
/* Writes a unet2d model (or a unet, converted), its schedule (as a DDPMScheduler: fixed_small, clip_sample) and its
 * prediction type as a pipeline folder that UNet2DModel.from_pretrained and
 * DDPMPipeline.from_pretrained read (model_index.json too); dir is created if needed. */
int ddpm_diffusers_save(const char *dir, const ddpm_model *m, const ddpm_schedule *s,
                        ddpm_prediction pred);
/* ddpm's "unet" (the DDPM paper's U-Net) as the unet2d model of the same function, when it maps:
 * channel_mult starting at 1, no self-conditioning, and every attention heads x head dim = its
 * channels with one head dim (diffusers' attention_head_dim); ddpm_diffusers_save converts a
 * unet with it. The error names what does not map. */
int ddpm_diffusers_from_unet(const ddpm_model *unet, ddpm_model **out);

/* Restores a trainer's state (weights, moments, EMA, step) from a loaded checkpoint. */
int ddpm_trainer_restore(ddpm_trainer *tr, const ddpm_checkpoint *ck);

/* Schedule config as JSON and back (stored in checkpoints). */
char *ddpm_schedule_config_json(const ddpm_schedule *s);
int ddpm_schedule_from_json(const char *json, ddpm_schedule *s);

#ifdef __cplusplus
}
#endif
#endif /* DDPM_TRAIN_H */

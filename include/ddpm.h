/*
 * ddpm.h - the public API of libddpm: denoising diffusion models on the CPU.
 *
 * Conventions
 *  - Every exported symbol starts with ddpm_ / DDPM_.
 *  - Functions that can fail on user input return a ddpm_status (0 = DDPM_OK) and leave a
 *    message for ddpm_last_error(); only the CLI decides to exit.
 *  - Arrays are float32, row-major; image tensors are NCHW. Shapes are written in comments in
 *    PyTorch order, e.g. // [B, C, H, W].
 *  - Timesteps t index the schedule's entries 0..n-1 (zero-based, as in PyTorch code): the
 *    usable steps are t0..n-1 (t0 = 0 except for the course's T+1-point schedule, where it is 1).
 *  - Randomness is explicit: every random draw is a pure function of (seed, stream, item, step),
 *    so results do not depend on batch size or thread count.
 */
#ifndef DDPM_H
#define DDPM_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define DDPM_VERSION "0.1.0"

/* ------------------------------------------------------------------------------------------ */
/* Status and errors                                                                           */
/* ------------------------------------------------------------------------------------------ */

typedef enum {
    DDPM_OK = 0,
    DDPM_ERR_INVALID = 1,     /* a bad argument or bad user input (a flag, a value, a config) */
    DDPM_ERR_IO = 2,          /* a file could not be opened, read or written */
    DDPM_ERR_FORMAT = 3,      /* a file was read but its content is malformed */
    DDPM_ERR_NOMEM = 4,       /* an allocation failed */
    DDPM_ERR_NUMERIC = 5,     /* a NaN or inf appeared (e.g. a diverging loss) */
    DDPM_ERR_INTERRUPTED = 6, /* the user asked to stop (SIGINT) */
} ddpm_status;

/* The message of the most recent failure on this thread ("" if none). */
const char *ddpm_last_error(void);
/* Records a printf-style message as the last error and returns code (for `return ddpm_fail(...)`). */
int ddpm_fail(int code, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;
/* Short name of a status code ("invalid input", "I/O error", ...). */
const char *ddpm_status_name(int code);

/* ------------------------------------------------------------------------------------------ */
/* Random numbers: Philox4x32-10, counter based                                                 */
/* ------------------------------------------------------------------------------------------ */

/* One Philox4x32-10 block: out = philox(ctr, key). Matches the Random123 reference. */
void ddpm_philox4x32_10(const uint32_t ctr[4], const uint32_t key[2], uint32_t out[4]);

/* Streams separate the purposes random numbers are drawn for, so they never overlap. */
enum {
    DDPM_STREAM_SAMPLE_INIT = 1, /* x_T of the reverse process */
    DDPM_STREAM_SAMPLE_STEP = 2, /* the noise added at each reverse step */
    DDPM_STREAM_TRAIN_NOISE = 3, /* eps of the forward process during training */
    DDPM_STREAM_TRAIN_T = 4,     /* the random timestep of each training item */
    DDPM_STREAM_SHUFFLE = 5,     /* the per-epoch permutation of the data */
    DDPM_STREAM_DATA = 6,        /* built-in data generators */
    DDPM_STREAM_INIT = 7,        /* parameter initialisation */
    DDPM_STREAM_DROPOUT = 8,     /* dropout masks and context dropout */
    DDPM_STREAM_AUGMENT = 9,     /* data augmentation (flips) */
    DDPM_STREAM_EVAL = 10,       /* evaluation (random projections, fresh data draws) */
    DDPM_STREAM_USER = 64        /* first stream free for applications */
};

/* n standard normal draws for (seed, stream, item, step). Draw k of the sequence is the same
 * whatever n is, so a prefix of a longer request equals a shorter request. */
void ddpm_randn(uint64_t seed, uint32_t stream, uint64_t item, uint32_t step, float *out, size_t n);
/* n uniform draws in [0, 1) with 24 random bits each (same addressing as ddpm_randn). */
void ddpm_randu(uint64_t seed, uint32_t stream, uint64_t item, uint32_t step, float *out, size_t n);
/* n raw 32-bit draws (same addressing as ddpm_randn). */
void ddpm_rand_u32(uint64_t seed, uint32_t stream, uint64_t item, uint32_t step, uint32_t *out,
                   size_t n);
/* One uniform integer in [0, bound) (bound > 0), unbiased (Lemire's method). */
uint32_t ddpm_rand_below(uint64_t seed, uint32_t stream, uint64_t item, uint32_t step,
                         uint32_t bound);

/* ------------------------------------------------------------------------------------------ */
/* Beta schedules and every derived buffer                                                      */
/* ------------------------------------------------------------------------------------------ */

typedef enum {
    DDPM_SCHEDULE_LINEAR = 0,    /* betas = linspace(beta_start, beta_end, T) (Ho et al.) */
    DDPM_SCHEDULE_LINEAR_COURSE, /* DeepLearning.AI course: T+1 points linspace(beta_start,
                                    beta_end, T+1), abar = exp(cumsum(log(1-beta))), abar_0 = 1;
                                    usable steps 1..T */
    DDPM_SCHEDULE_COSINE,        /* Nichol & Dhariwal, s = 0.008, betas clipped at 0.999 */
    DDPM_SCHEDULE_SIGMOID,       /* abar from a sigmoid (start -3, end 3, tau 1), clipped 0.999 */
    DDPM_SCHEDULE_SIGMOID_2D,    /* the 2-D tutorial: sigmoid(linspace(-6, 6, T)) *
                                    (beta_end - beta_start) + beta_start, with 1e-5, 5e-3 */
    DDPM_SCHEDULE_CUSTOM,        /* a user-supplied list of T betas */
    DDPM_SCHEDULE_COUNT
} ddpm_schedule_kind;

typedef struct {
    ddpm_schedule_kind kind;
    int timesteps;                   /* T >= 2 */
    double beta_start, beta_end;     /* linear, linear-course, sigmoid-2d */
    double cosine_s;                 /* cosine offset s */
    double sigmoid_start, sigmoid_end, sigmoid_tau; /* sigmoid */
    const double *betas;             /* custom: T values in (0, 1); copied by ddpm_schedule_init */
} ddpm_schedule_config;

/* Fills c with the usual defaults for kind and T (linear 1e-4..0.02, course 1e-4..0.02,
 * sigmoid-2d 1e-5..5e-3, cosine s = 0.008, sigmoid -3..3 tau 1). */
void ddpm_schedule_config_default(ddpm_schedule_config *c, ddpm_schedule_kind kind, int T);
/* "linear", "linear-course", "cosine", "sigmoid", "sigmoid-2d", "custom". */
const char *ddpm_schedule_kind_name(ddpm_schedule_kind kind);
/* Parses a name as above; returns DDPM_ERR_INVALID with a message listing the names. */
int ddpm_schedule_kind_parse(const char *name, ddpm_schedule_kind *out);

/* All buffers are computed in double and stored as float; each has n entries. */
typedef struct {
    ddpm_schedule_config config; /* config.betas is NULL after init (custom betas live below) */
    int n;                       /* number of entries: T, or T + 1 for linear-course */
    int t0;                      /* first usable step (0, or 1 for linear-course) */
    float *betas;
    float *alphas;                          /* 1 - beta */
    float *alphas_cumprod;                  /* abar_t */
    float *alphas_cumprod_prev;             /* abar_{t-1}, 1 at the first entry */
    float *sqrt_alphas_cumprod;             /* sqrt(abar) */
    float *sqrt_one_minus_alphas_cumprod;   /* sqrt(1 - abar) */
    float *log_one_minus_alphas_cumprod;    /* log(1 - abar); 1 - abar floored at 1e-20 */
    float *sqrt_recip_alphas_cumprod;       /* sqrt(1 / abar) */
    float *sqrt_recipm1_alphas_cumprod;     /* sqrt(1 / abar - 1) */
    float *posterior_variance;              /* beta (1 - abar_prev) / (1 - abar) */
    float *posterior_log_variance_clipped;  /* log of it, entry t0 taken from entry t0+1 */
    float *posterior_mean_coef1;            /* beta sqrt(abar_prev) / (1 - abar): x_0's */
    float *posterior_mean_coef2;            /* (1 - abar_prev) sqrt(alpha) / (1 - abar): x_t's */
    float *snr;                             /* abar / (1 - abar) */
    double *betas_f64;                      /* the betas in double, as the schedule was built */
    float *storage_;                        /* one allocation behind every buffer */
} ddpm_schedule;

/* Number of named buffers and their names, in the order `ddpm schedule` prints them. */
#define DDPM_SCHEDULE_NUM_BUFFERS 14
const char *ddpm_schedule_buffer_name(int i);
const float *ddpm_schedule_buffer(const ddpm_schedule *s, int i);

/* Builds a schedule. Fails with DDPM_ERR_INVALID (and a message) for T < 2, betas outside
 * (0, 1), beta_start > beta_end, and the like. */
int ddpm_schedule_init(ddpm_schedule *s, const ddpm_schedule_config *c);
void ddpm_schedule_free(ddpm_schedule *s);
/* Reads a custom beta list: numbers separated by commas, spaces or newlines ('#' comments).
 * On success *betas is malloc'd and *count set. Errors name the file and the line. */
int ddpm_betas_read(const char *path, double **betas, int *count);

/* ------------------------------------------------------------------------------------------ */
/* The forward process, prediction targets and the posterior                                    */
/* All take B items of d floats each with a per-item timestep t[B] (values in t0..n-1).         */
/* ------------------------------------------------------------------------------------------ */

typedef enum {
    DDPM_PRED_EPS = 0, /* the network predicts the noise eps */
    DDPM_PRED_X0,      /* ... the clean sample x_0 */
    DDPM_PRED_V,       /* ... the velocity v = sqrt(abar) eps - sqrt(1 - abar) x_0 */
} ddpm_prediction;
const char *ddpm_prediction_name(ddpm_prediction p); /* "eps", "x0", "v" */
int ddpm_prediction_parse(const char *name, ddpm_prediction *out);

/* x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps */
void ddpm_q_sample(const ddpm_schedule *s, const float *x0, const float *eps, const int *t, int B,
                   size_t d, float *xt);
/* x_0 = sqrt(1/abar) x_t - sqrt(1/abar - 1) eps */
void ddpm_x0_from_eps(const ddpm_schedule *s, const float *xt, const float *eps, const int *t,
                      int B, size_t d, float *x0);
/* eps = (sqrt(1/abar) x_t - x_0) / sqrt(1/abar - 1) */
void ddpm_eps_from_x0(const ddpm_schedule *s, const float *xt, const float *x0, const int *t,
                      int B, size_t d, float *eps);
/* v = sqrt(abar) eps - sqrt(1 - abar) x_0 */
void ddpm_v_from_x0_eps(const ddpm_schedule *s, const float *x0, const float *eps, const int *t,
                        int B, size_t d, float *v);
/* x_0 = sqrt(abar) x_t - sqrt(1 - abar) v */
void ddpm_x0_from_v(const ddpm_schedule *s, const float *xt, const float *v, const int *t, int B,
                    size_t d, float *x0);
/* eps = sqrt(1 - abar) x_t + sqrt(abar) v */
void ddpm_eps_from_v(const ddpm_schedule *s, const float *xt, const float *v, const int *t, int B,
                     size_t d, float *eps);
/* The training target for prediction type p (eps, x_0 or v) given x_0 and eps. */
void ddpm_target(const ddpm_schedule *s, ddpm_prediction p, const float *x0, const float *eps,
                 const int *t, int B, size_t d, float *target);
/* From a network output of type p, the implied eps and x_0 (either may be NULL). With clip,
 * x_0 is clamped to [-1, 1] and eps re-derived from the clamped x_0. */
void ddpm_split_prediction(const ddpm_schedule *s, ddpm_prediction p, const float *xt,
                           const float *out, const int *t, int B, size_t d, int clip, float *eps,
                           float *x0);
/* The posterior q(x_{t-1} | x_t, x_0): mean (B*d), variance and clipped log variance (B each;
 * either may be NULL). */
void ddpm_q_posterior(const ddpm_schedule *s, const float *x0, const float *xt, const int *t,
                      int B, size_t d, float *mean, float *var, float *log_var);

/* ------------------------------------------------------------------------------------------ */
/* Samplers: one reverse step, the timestep sequences, and the whole loop                       */
/* ------------------------------------------------------------------------------------------ */

typedef enum { DDPM_VAR_SMALL = 0, DDPM_VAR_LARGE } ddpm_variance; /* posterior / beta */
typedef enum { DDPM_SAMPLER_DDPM = 0, DDPM_SAMPLER_DDIM } ddpm_sampler;
typedef enum { DDPM_SPACING_LEADING = 0, DDPM_SPACING_TRAILING, DDPM_SPACING_LINSPACE } ddpm_spacing;
const char *ddpm_variance_name(ddpm_variance v);
int ddpm_variance_parse(const char *name, ddpm_variance *out);
const char *ddpm_sampler_name(ddpm_sampler s);
int ddpm_sampler_parse(const char *name, ddpm_sampler *out);
const char *ddpm_spacing_name(ddpm_spacing s);
int ddpm_spacing_parse(const char *name, ddpm_spacing *out);

typedef struct {
    ddpm_prediction prediction; /* what the network outputs */
    ddpm_variance variance;     /* DDPM: posterior variance ("small") or beta ("large") */
    int clip_x0;                /* clamp the predicted x_0 to [-1, 1] */
    int no_noise;               /* DDPM: add no noise at any step (shows why noise is needed) */
} ddpm_step_opts;

/* One DDPM ancestral step from x_t to x_{t-1} at a shared t for all B items:
 * x_{t-1} = (x_t - beta_t / sqrt(1 - abar_t) eps_hat) / sqrt(alpha_t) + sigma_t z (Ho et al.'s
 * Algorithm 2; with clip_x0, the posterior mean of the clamped x0_hat instead), with no noise at
 * the last step (t == t0). sigma_t^2 is the posterior variance ("small") or beta_t ("large").
 * noise holds B*d standard normal draws (unused, and may be NULL, when no noise is added).
 * x0_out (optional) receives the predicted x_0. x_prev may alias xt. */
void ddpm_step_ddpm(const ddpm_schedule *s, const ddpm_step_opts *o, int t, const float *xt,
                    const float *model_out, const float *noise, int B, size_t d, float *x_prev,
                    float *x0_out);
/* One DDIM step from x_t to x_{t_prev} (t_prev < t; t_prev < t0 means "to x_0", abar = 1):
 * sigma = eta sqrt((1 - abar_prev) / (1 - abar) (1 - abar / abar_prev)),
 * x_prev = sqrt(abar_prev) x0_hat + sqrt(1 - abar_prev - sigma^2) eps_hat + sigma z. */
void ddpm_step_ddim(const ddpm_schedule *s, const ddpm_step_opts *o, int t, int t_prev, float eta,
                    const float *xt, const float *model_out, const float *noise, int B, size_t d,
                    float *x_prev, float *x0_out);

/* K decreasing timesteps in t0..n-1 for a K-step sampler (as diffusers' schedulers space them):
 * leading: k * (T / K) (integer ratio), trailing: round(T - k T/K) - 1, linspace:
 * round(linspace(0, T - 1, K)), each then offset by t0 (T = n - t0). Fails if K < 1 or K > T. */
int ddpm_timesteps(const ddpm_schedule *s, int K, ddpm_spacing spacing, int *out);

/* The network as the sampler sees it: out[B*d] = f(x[B*d], t) for B items at a shared step t.
 * x0_prev is the previous step's x_0 estimate (NULL at the first step) for self-conditioning.
 * Returns a ddpm_status. */
typedef int (*ddpm_denoise_fn)(void *ctx, const float *x, int B, int t, const float *x0_prev,
                               float *out);
/* Called after each step (k = 1..steps) with the current x and x_0 estimate; return non-zero to
 * stop. t is the step just taken. */
typedef int (*ddpm_progress_fn)(void *ctx, int k, int steps, int t, const float *x,
                                const float *x0);

typedef struct {
    ddpm_sampler sampler;
    int steps;             /* DDIM: number of steps (DDPM always uses every step) */
    ddpm_spacing spacing;  /* DDIM timestep spacing */
    float eta;             /* DDIM: 0 = deterministic, 1 = DDPM-like */
    ddpm_step_opts step;
    uint64_t seed;
    uint64_t first_item;   /* global index of the first of the B items (for the noise streams) */
    int x_is_init;         /* x already holds x_T; otherwise x_T is drawn from the seed */
    ddpm_progress_fn progress;
    void *progress_ctx;
} ddpm_sample_opts;

void ddpm_sample_opts_default(ddpm_sample_opts *o);
/* Runs the reverse process on B items of d floats: x [B*d] holds x_T on entry if x_is_init and
 * the sample on return. The noise of item i at step t is randn(seed, SAMPLE_STEP, first_item+i, t),
 * so a sample does not depend on the batch it was drawn in. Returns a ddpm_status. */
int ddpm_sample_loop(const ddpm_schedule *s, const ddpm_sample_opts *o, ddpm_denoise_fn f,
                     void *ctx, int B, size_t d, float *x);

/* ------------------------------------------------------------------------------------------ */
/* safetensors files (checkpoints, weights, fixtures)                                           */
/* ------------------------------------------------------------------------------------------ */

typedef enum {
    DDPM_DT_F32 = 0, DDPM_DT_F64, DDPM_DT_F16, DDPM_DT_BF16, DDPM_DT_I64, DDPM_DT_I32,
    DDPM_DT_U8, DDPM_DT_I8, DDPM_DT_BOOL, DDPM_DT_COUNT
} ddpm_dtype;
const char *ddpm_dtype_name(ddpm_dtype t); /* "F32", ... as safetensors spells them */
size_t ddpm_dtype_size(ddpm_dtype t);

#define DDPM_MAX_DIMS 8
typedef struct {
    char *name;
    ddpm_dtype dtype;
    int ndim;
    int64_t shape[DDPM_MAX_DIMS];
    size_t numel;
    size_t nbytes;
    const void *data; /* points into the file's data section (reader) or the caller's (writer) */
} ddpm_tensor;

typedef struct {
    ddpm_tensor *tensors;
    size_t n_tensors;
    char **meta_keys, **meta_values; /* the __metadata__ map (string to string) */
    size_t n_meta;
    unsigned char *file_;            /* the whole file */
    size_t file_size_;
} ddpm_safetensors;

/* Reads and validates a safetensors file: header length, JSON, every dtype, shape and offset
 * within the file, the data section fully covered, and the "ddpm.crc32" checksum of the data
 * when the metadata has one. Errors name the file and the problem. */
int ddpm_safetensors_read(const char *path, ddpm_safetensors *st);
void ddpm_safetensors_free(ddpm_safetensors *st);
const ddpm_tensor *ddpm_safetensors_find(const ddpm_safetensors *st, const char *name);
/* The metadata value for key, or NULL. */
const char *ddpm_safetensors_meta(const ddpm_safetensors *st, const char *key);
/* Converts a float tensor (F32, F64, F16, BF16) to float32 into dst[numel]. */
int ddpm_tensor_to_f32(const ddpm_tensor *t, float *dst);

/* Writes tensors and metadata (n_meta key/value pairs) atomically: a temporary file in the same
 * directory, fsync, rename, fsync of the directory. Adds the "ddpm.crc32" checksum. */
int ddpm_safetensors_write(const char *path, const ddpm_tensor *tensors, size_t n_tensors,
                           const char *const *meta_keys, const char *const *meta_values,
                           size_t n_meta);

/* ==== SECTION: models and training (2-D issue) ==== */

/* ---- the fully connected layer (shared by every network) ---- */
/* out [B, O] = inp [B, I] @ weight^T + bias; weight [O, I] as nn.Linear; bias may be NULL. */
void ddpm_linear_forward(float *out, const float *inp, const float *weight, const float *bias,
                         int B, int in_features, int out_features);
/* Backward of ddpm_linear_forward. ACCUMULATES (+=) into dinp [B, I], dweight [O, I] and
 * dbias [O]; any of the three may be NULL to skip it. */
void ddpm_linear_backward(float *dinp, float *dweight, float *dbias, const float *dout,
                          const float *inp, const float *weight, int B, int in_features,
                          int out_features);

/* ---- models: one interface for every network ---- */

/* One named tensor of a model (a PyTorch state_dict key): a view into the model's contiguous
 * params (and grads) buffer, or into its buffers array for non-trained state (batch-norm running
 * statistics). */
typedef struct {
    char name[128];
    int ndim;
    int64_t shape[4];
    size_t offset; /* into params/grads, or into buffers if is_buffer */
    size_t numel;
    int is_buffer;
} ddpm_param_info;

/* What a network is given for B items. */
typedef struct {
    const float *x;         /* [B, d] noisy samples x_t (d = sample_numel) */
    const int *t;           /* [B] timestep indices into the schedule */
    const float *cond;      /* [B, cond_dim] class one-hot or context vector; NULL = none.
                               An all-zero row means "unconditional" (context dropout). */
    const float *self_cond; /* [B, d] previous x_0 estimate for self-conditioning, or NULL */
    int B;
    int train;              /* 1: record for backward, batch statistics, dropout on */
    uint64_t seed;          /* for dropout masks */
    uint64_t step;          /* for dropout masks */
} ddpm_model_input;

typedef struct ddpm_model ddpm_model;
typedef struct {
    const char *kind; /* "mlp", "context-unet", "simple-unet", "unet" */
    /* out [B, d] = network(input). Fails if B exceeds the reserved batch size. */
    int (*forward)(ddpm_model *m, const ddpm_model_input *in, float *out);
    /* Backward of the last forward (which had train = 1): ACCUMULATES into m->grads. */
    int (*backward)(ddpm_model *m, const float *dout);
    /* Plans activation memory for batches of up to B items (nothing is allocated in a step). */
    int (*reserve)(ddpm_model *m, int B);
    void (*destroy)(ddpm_model *m);
} ddpm_model_ops;

struct ddpm_model {
    const ddpm_model_ops *ops;
    void *impl;
    char *config_json;     /* the network's configuration, as stored in checkpoints */
    size_t sample_numel;   /* floats per item: D for points, C*H*W for images */
    int dim;               /* points: D */
    int channels, height, width; /* images (0 for points) */
    int cond_dim;          /* 0: unconditional network */
    int self_cond;         /* 1: the network takes a self-conditioning input */
    int num_timesteps;     /* schedule entries the network embeds (its t input range) */
    float *params, *grads; /* contiguous, n_params each, 64-byte aligned */
    size_t n_params;       /* floats, incl. each tensor's padding to 16 (see ddpm_model_weight_count) */
    float *buffers;        /* contiguous non-trained state (may be NULL) */
    size_t n_buffers;
    ddpm_param_info *tensors; /* every named tensor: parameters first, then buffers */
    size_t n_tensors;
    int max_batch;         /* reserved batch size */
};

/* Builds a model from its JSON configuration ({"kind": "mlp", ...}); parameters are initialised
 * as PyTorch initialises the equivalent module (from seed, with DDPM_STREAM_INIT). Errors name the
 * offending key. */
int ddpm_model_create(const char *config_json, uint64_t seed, ddpm_model **out);
void ddpm_model_free(ddpm_model *m);
int ddpm_model_reserve(ddpm_model *m, int B);
const ddpm_param_info *ddpm_model_find(const ddpm_model *m, const char *name);
/* The number of trained weights (the sum of the parameter tensors' sizes, as PyTorch counts
 * them; n_params also holds each tensor's padding). */
size_t ddpm_model_weight_count(const ddpm_model *m);
/* Pointer to a tensor's values (params or buffers). */
float *ddpm_model_tensor_data(ddpm_model *m, const ddpm_param_info *p);
/* Loads tensors by name from a safetensors file (model keys exactly, or prefix + key). Every
 * model tensor must be present with the same shape and the file must hold no other tensor with
 * that prefix; the error names the first mismatching tensor. */
int ddpm_model_load_tensors(ddpm_model *m, const ddpm_safetensors *st, const char *prefix,
                            const char *path_for_errors);

/* Registers a model kind (the U-Nets register themselves from their own files). */
typedef int (*ddpm_model_factory)(const void *config_cjson, uint64_t seed, ddpm_model **out);
int ddpm_model_register(const char *kind, ddpm_model_factory factory);

/* ---- the tutorial MLP (2-D points) ---- */
/* Linear(D,H)-ReLU-[Linear(H,H)-ReLU] x (depth-1)-Linear(H,D), with a learned embedding table
 * step_embeddings.i [T, H] per hidden layer whose row t is added after each hidden Linear (the
 * tutorial's MLPDiffusion), or with "time_embedding": "sinusoidal", a fixed sinusoidal embedding
 * of t projected per layer (time_proj.i, Linear(H, H)). State-dict names as in PyTorch:
 * linears.0.weight, linears.0.bias, linears.2.weight, ..., step_embeddings.0.weight, ... */
typedef struct {
    int dim;           /* D >= 1 */
    int hidden;        /* H, default 128 */
    int depth;         /* hidden layers, default 3 */
    int num_timesteps; /* T of the embedding table */
    int sinusoidal;    /* 0: learned tables (tutorial), 1: sinusoidal + projections */
} ddpm_mlp_config;
/* {"kind":"mlp","dim":2,"hidden":128,"depth":3,"num_timesteps":100,"time_embedding":"learned"} */
char *ddpm_mlp_config_json(const ddpm_mlp_config *c); /* malloc'd */

/* ---- training ---- */

typedef enum { DDPM_OPT_ADAM = 0, DDPM_OPT_ADAMW } ddpm_optimizer;
typedef enum { DDPM_LR_CONSTANT = 0, DDPM_LR_COSINE, DDPM_LR_LINEAR } ddpm_lr_decay;
typedef enum { DDPM_LOSS_L2 = 0, DDPM_LOSS_L1 } ddpm_loss;

typedef struct {
    ddpm_prediction prediction; /* target: eps (default), x0 or v */
    ddpm_loss loss;             /* L2 (default) or L1, mean over all elements */
    float min_snr_gamma;        /* > 0: min-SNR-gamma loss weighting (Hang et al., gamma = 5) */
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
} ddpm_train_data;

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
    /* private working memory */
    float *x0_, *eps_, *xt_, *target_, *out_, *dout_, *cond_, *w_, *sc_;
    int *t_;
    uint32_t *perm_;
    int64_t perm_epoch_;
} ddpm_trainer;

int ddpm_trainer_init(ddpm_trainer *tr, ddpm_model *model, const ddpm_schedule *schedule,
                      const ddpm_train_config *cfg, const ddpm_train_data *data);
void ddpm_trainer_free(ddpm_trainer *tr);
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
/* Per-item min-SNR-gamma weights for prediction type p. */
void ddpm_min_snr_weights(const ddpm_schedule *s, ddpm_prediction p, float gamma, const int *t,
                          int B, float *w);

/* ---- checkpoints ---- */

/* Writes model weights, EMA weights, Adam moments and metadata (model, schedule and training
 * config as JSON, step, data description) atomically. extra_keys/values: more metadata. */
int ddpm_checkpoint_save(const char *path, const ddpm_trainer *tr, const char *data_json,
                         const char *const *extra_keys, const char *const *extra_values,
                         size_t n_extra);

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
/* Restores a trainer's state (weights, moments, EMA, step) from a loaded checkpoint. */
int ddpm_trainer_restore(ddpm_trainer *tr, const ddpm_checkpoint *ck);

/* Schedule config as JSON and back (stored in checkpoints). */
char *ddpm_schedule_config_json(const ddpm_schedule *s);
int ddpm_schedule_from_json(const char *json, ddpm_schedule *s);

/* ---- sampling with a model ---- */

/* The sampler callback for a model: ctx is a ddpm_model_sampler. With guidance w != 0 and a
 * condition, eps = (1 + w) eps(x, c) - w eps(x, none) (classifier-free guidance). */
typedef struct {
    ddpm_model *model;
    const float *cond;  /* [B, cond_dim] per item, or NULL */
    float guidance;
    float *buf_;        /* private: [2B, d] and [2B, cond_dim] work space */
    float *cbuf_;
    int *tbuf_;
    int capacity_;
} ddpm_model_sampler;
int ddpm_model_sampler_init(ddpm_model_sampler *ms, ddpm_model *m, int B);
void ddpm_model_sampler_free(ddpm_model_sampler *ms);
int ddpm_model_denoise(void *ctx, const float *x, int B, int t, const float *x0_prev, float *out);
/* ==== END SECTION: models and training ==== */

/* ==== SECTION: data, plots and evaluation (2-D issue) ==== */

/* A set of n points of dim floats each, row-major: x[i * dim + j]. // [n, dim] */
typedef struct {
    float *x;
    size_t n;
    int dim;
} ddpm_points;

/* Allocates n zeroed points of dim floats (n may be 0; dim >= 1). Free with ddpm_points_free. */
int ddpm_points_init(ddpm_points *p, size_t n, int dim);
/* Frees p->x and zeroes *p (safe on a zeroed struct and twice in a row). */
void ddpm_points_free(ddpm_points *p);

/* The built-in 2-D data sets, as one string for messages and --help:
 * "s-curve, swiss-roll, moons, circles, 8-gaussians, checkerboard". */
const char *ddpm_points_dataset_names(void);
/* Draws n points of the named 2-D data set. Point i uses only the draws (seed, DDPM_STREAM_DATA,
 * item i, steps 0 and 1), so the same seed gives the same first k points whatever n is.
 *   s-curve      the tutorial's data: sklearn make_s_curve(n, noise=0.1), columns x and z, / 10.
 *                About [-0.1, 0.1] x [-0.2, 0.2] (noise sd 0.01 after scaling).
 *   swiss-roll   sklearn make_swiss_roll(noise=0.5) columns x and z (t cos t, t sin t,
 *                t = 1.5 pi (1 + 2U)), / 15: about [-1, 1]^2.
 *   moons        sklearn make_moons(noise=0.05), a uniformly random position along each moon
 *                (even points on the upper moon, odd on the lower one), centred by (-0.5, -0.25)
 *                and scaled by 2/3: about [-1, 1] x [-0.5, 0.5], mean ~ 0.
 *   circles      sklearn make_circles(factor=0.5, noise=0.05): even points on the unit circle,
 *                odd on radius 0.5, uniformly random angle; not rescaled (about [-1.1, 1.1]^2).
 *   8-gaussians  FFJORD's toy data / 4: centres (4 (cos, sin) of k pi/4) / 1.414 / 4, i.e. on
 *                radius 0.7072, sd 0.5 / 1.414 / 4 = 0.0884, uniformly chosen: about [-1, 1]^2.
 *   checkerboard FFJORD's toy data / 4: uniform on the 8 dark squares of a 4x4 board covering
 *                [-1, 1)^2 (cells of side 0.5 whose floor(2x) + floor(2y) is even).
 * An unknown name fails with DDPM_ERR_INVALID and a message listing the names. On success out
 * owns a new allocation (dim 2); free it with ddpm_points_free. */
int ddpm_points_generate(const char *name, size_t n, uint64_t seed, ddpm_points *out);

/* Reads a CSV of N rows x D numbers (any D >= 1, the same on every row). Fields are separated by
 * a comma (spaces around it allowed) or by spaces/tabs; blank lines and '#' comments are skipped;
 * CRLF line ends, a UTF-8 BOM and numbers in double quotes are accepted. The first row is a header, and skipped, when none
 * of its fields is a number. Errors name the file and the line: DDPM_ERR_IO if the file cannot be
 * read; DDPM_ERR_FORMAT for a field that is not a number ("points.csv:17: column 2: 'abc' is not
 * a number"), NaN or inf, an empty field, a ragged row ("points.csv:9: 3 columns, expected 2 as
 * on line 1") or no data rows. On success out owns a new allocation. */
int ddpm_points_read_csv(const char *path, ddpm_points *out);
/* Writes p as CSV: a header "x0,x1,..." and one row per point, each value with 9 significant
 * digits (floats round-trip exactly). The file is replaced atomically. */
int ddpm_points_write_csv(const char *path, const ddpm_points *p);

/* Plots (cairo, PNG). Only the first two coordinates of each point are drawn; a 1-D point set is
 * drawn as value (y) against point index (x). Non-finite values are skipped. Text (titles,
 * labels) may contain subscripts, "_{...}", "_" + digits or "_" + one letter ("q(x_{t-1})",
 * "q(x_5)", "x_t"; "model_final" stays as is), and superscripts "^{...}". Ticks are 1-2-5 steps
 * whose labels never collide; very large or small values get a shared "x10^k" factor. Text uses
 * the "DejaVu Sans" font through fontconfig. Files are replaced atomically; an unwritable path
 * fails with DDPM_ERR_IO naming it. ASan builds: fontconfig and cairo's toy fonts leak ~1 KB once
 * per process, so the library then defines a weak __lsan_default_suppressions returning
 * "leak:libfontconfig.so\n" (a program's own definition replaces it). */

/* Frees the plotting libraries' process-wide caches (cairo, fontconfig) so leak checkers see a
 * clean exit. Call once at the end of a program that plotted, after its last plot. */
void ddpm_release_caches(void);

/* A scatter plot of a (label_a, red) and optionally b (label_b, blue) overlaid, with equal x and
 * y scales, ticks, a title and a legend (when either label is non-NULL). width/height in pixels
 * (0 = 720); at least 200. a and b must both have dim 1 or both dim >= 2. */
int ddpm_plot_scatter(const char *png_path, const char *title, const ddpm_points *a,
                      const char *label_a, const ddpm_points *b, const char *label_b, int width,
                      int height);
/* A grid of n_panels scatter panels in rows of n_cols, each with its title (panel_titles may be
 * NULL), under an overall title (may be NULL). All panels share the same axis limits:
 * limits = {xmin, xmax, ymin, ymax} as given, or NULL for the smallest square box (5% margin)
 * around every panel's finite points. Tick labels are drawn on the left column and under the
 * last panel of each column only. panel_px is the
 * side of each panel in pixels (0 = 200; at least 80). The tutorial's forward process is 20
 * panels, n_cols 10, titled "q(x_0)", "q(x_5)", ...; its reverse process 10 panels. */
int ddpm_plot_scatter_grid(const char *png_path, const char *title, const ddpm_points *panels,
                           const char *const *panel_titles, int n_panels, int n_cols,
                           const float *limits, int panel_px);
/* A line plot of n_series series ys[k][0..n-1] against x[0..n-1] (x NULL: 0, 1, ..., n-1), e.g.
 * a loss curve and its smoothed version. labels (may be NULL, or hold NULLs) feed the legend.
 * With several series the first is drawn lighter (the raw curve under its smoothing). log_y
 * uses a base-10 y axis (values <= 0 are skipped). width/height 0 = 900 x 540. */
int ddpm_plot_lines(const char *png_path, const char *title, const char *xlabel,
                    const char *ylabel, const float *x, const float *const *ys,
                    const char *const *labels, int n_series, size_t n, int log_y, int width,
                    int height);

/* Sample-quality metrics between two point sets of the same dim (sizes may differ). Both fail
 * with DDPM_ERR_INVALID for an empty set or a dim mismatch and DDPM_ERR_NUMERIC for a NaN/inf
 * coordinate (naming the set and the point). Results do not depend on the thread count. */

/* Sliced Wasserstein-1 distance: the mean over n_projections random unit directions u_k
 * (0 = 256; normal draws (seed, DDPM_STREAM_EVAL, item k, step 0), normalised) of the exact
 * W1 distance between the projected 1-D empirical distributions, int_0^1 |F^-1 - G^-1| (for
 * equal sizes the mean |a_(i) - b_(i)| of the sorted projections). Shifting a set by s changes
 * it by |s| E|<u, s/|s|>| (2|s|/pi in 2-D). Parallel over projections (OpenMP). */
int ddpm_sliced_wasserstein(const ddpm_points *a, const ddpm_points *b, int n_projections,
                            uint64_t seed, double *out);
/* Unbiased squared MMD (Gretton et al. 2012, eq. 3) with the RBF kernel
 * k(x, y) = exp(-|x - y|^2 / (2 bandwidth^2)):
 *   mean_{i!=j} k(a_i, a_j) + mean_{i!=j} k(b_i, b_j) - 2 mean_{i,j} k(a_i, b_j).
 * Zero in expectation for two samples of one distribution, so it can be slightly negative
 * (about -1/m to 1/m); identical sets of m points give a small negative value. A set larger
 * than max_points (0 = 2000) is first subsampled without replacement (partial Fisher-Yates with
 * (seed, DDPM_STREAM_EVAL, item k, step 1 for a / 2 for b)). bandwidth <= 0 selects the median
 * heuristic: the median distance over all pairs of a pool of up to 500 evenly strided points of
 * each (subsampled) set (1 if that median is 0). *bandwidth_used (may be NULL) receives the bandwidth.
 * Needs at least 2 points per set. Parallel over rows (OpenMP); 2000 x 2000 takes ~0.1 s. */
int ddpm_mmd_rbf(const ddpm_points *a, const ddpm_points *b, double bandwidth, size_t max_points,
                 uint64_t seed, double *mmd2, double *bandwidth_used);

/* ==== END SECTION: data, plots and evaluation ==== */

/* ==== SECTION: image operators (image networks issue) ==== */

/* ------------------------------------------------------------------------------------------ */
/* Image operators: paired forward/backward functions over float32 NCHW arrays                 */
/*                                                                                              */
/*  - ddpm_<op>_forward(out, ..., inp, weights, dims) writes (=) its outputs.                   */
/*  - ddpm_<op>_backward(dinp, dweight, ..., dout, inp, weights, dims) ACCUMULATES (+=) into    */
/*    every gradient it is given: the caller zeroes them once, and a tensor used twice (a       */
/*    residual branch, a shared input) simply receives both contributions. Any gradient         */
/*    pointer may be NULL to skip that gradient (and its cost).                                 */
/*  - Nothing allocates: ops that need scratch memory take a caller-provided workspace whose    */
/*    size (in floats) a *_workspace function gives. Large loops run on OpenMP threads.          */
/*  - Shape arguments are validated by the tape (below); the raw ops trust them.                */
/*  - Normalisation eps is DDPM_NORM_EPS (1e-5, as PyTorch); batch-norm momentum is a parameter  */
/*    (PyTorch's default is DDPM_BN_MOMENTUM).                                                  */
/* ------------------------------------------------------------------------------------------ */

#define DDPM_NORM_EPS 1e-5f
#define DDPM_BN_MOMENTUM 0.1f

/* Geometry of a 2-D convolution or transposed convolution (same stride and padding along H and
 * W, any kernel KH x KW). Filled and validated by ddpm_conv2d_dims / ddpm_conv_transpose2d_dims.
 *   conv2d:            weight [C_out, C_in, KH, KW], H_out = (H + 2 pad - KH) / stride + 1
 *   conv_transpose2d:  weight [C_in, C_out, KH, KW], H_out = (H - 1) stride - 2 pad + KH
 *   (PyTorch's nn.Conv2d / nn.ConvTranspose2d layouts, dilation 1, groups 1, output_padding 0) */
typedef struct {
    int B;             /* batch */
    int C_in, H, W;    /* input  [B, C_in, H, W] */
    int C_out, KH, KW; /* kernel size */
    int stride, pad;
    int H_out, W_out;  /* output [B, C_out, H_out, W_out] */
    int transposed;    /* set by the dims function; the ops check it */
} ddpm_conv_dims;

/* Fill d and validate (positive sizes, stride >= 1, pad >= 0, a non-empty output). Return
 * DDPM_ERR_INVALID with a message naming the problem. */
int ddpm_conv2d_dims(ddpm_conv_dims *d, int B, int C_in, int H, int W, int C_out, int KH, int KW,
                     int stride, int pad);
int ddpm_conv_transpose2d_dims(ddpm_conv_dims *d, int B, int C_in, int H, int W, int C_out,
                               int KH, int KW, int stride, int pad);
/* Workspace (in floats) needed by the fast forward and backward, for the current
 * omp_get_max_threads() (query again after changing the thread count). Where the CPU has AVX2 +
 * FMA, conv2d runs on the library's own GEMM kernel with an implicit im2col (the forward at any
 * stride, the gradients of stride-1 convs): padded copies of the input per thread and packed
 * panel buffers. Otherwise, and for the rest, OpenBLAS per batch item: with B >= 2 the items
 * run concurrently, one per thread, each with its own working matrices and weight/bias gradient
 * partial sums; with B = 1 one set and threaded BLAS. A stride-1 conv2d whose output fits in L2
 * runs as one GEMM per kernel row on shifted copies of the zero-padded input; otherwise
 * im2col + sgemm (C_in KH KW x H_out W_out for conv2d, C_out KH KW x H W for the transposed
 * one). */
size_t ddpm_conv2d_workspace(const ddpm_conv_dims *d);
size_t ddpm_conv_transpose2d_workspace(const ddpm_conv_dims *d);

/* conv2d (see above). bias may be NULL. The forward does not depend on the thread count; the
 * gradients' partials are summed in thread order, so they may differ in the last bits between
 * thread counts.
 * out [B, C_out, H_out, W_out] = conv(inp [B, C_in, H, W], weight [C_out, C_in, KH, KW]) + bias [C_out] */
void ddpm_conv2d_forward(float *out, const float *inp, const float *weight, const float *bias,
                         const ddpm_conv_dims *d, float *ws);
/* GELU(conv2d(inp, weight) * scale[c] + shift[c]) per output channel c, with the scale, shift
 * and GELU applied to each block of the output while the kernel has it in cache: an eval-mode
 * conv -> batch norm -> GELU in one pass over the output (scale = gamma / sqrt(running_var +
 * eps), shift = beta + (bias - running_mean) scale). Same workspace as ddpm_conv2d_forward. */
void ddpm_conv2d_scale_gelu_forward(float *out, const float *inp, const float *weight,
                                    const float *scale, const float *shift,
                                    const ddpm_conv_dims *d, float *ws);
/* dinp [B, C_in, H, W], dweight [C_out, C_in, KH, KW], dbias [C_out] += ... (each may be NULL) */
void ddpm_conv2d_backward(float *dinp, float *dweight, float *dbias, const float *dout,
                          const float *inp, const float *weight, const ddpm_conv_dims *d,
                          float *ws);
/* Transposed conv2d (the adjoint of conv2d's input gradient), sgemm + col2im per item.
 * out [B, C_out, H_out, W_out] from inp [B, C_in, H, W], weight [C_in, C_out, KH, KW], bias [C_out] */
void ddpm_conv_transpose2d_forward(float *out, const float *inp, const float *weight,
                                   const float *bias, const ddpm_conv_dims *d, float *ws);
void ddpm_conv_transpose2d_backward(float *dinp, float *dweight, float *dbias, const float *dout,
                                    const float *inp, const float *weight,
                                    const ddpm_conv_dims *d, float *ws);
/* Naive references (direct loops, no workspace; the forwards sum in double): for the tests. */
void ddpm_conv2d_forward_ref(float *out, const float *inp, const float *weight,
                             const float *bias, const ddpm_conv_dims *d);
void ddpm_conv2d_backward_ref(float *dinp, float *dweight, float *dbias, const float *dout,
                              const float *inp, const float *weight, const ddpm_conv_dims *d);
void ddpm_conv_transpose2d_forward_ref(float *out, const float *inp, const float *weight,
                                       const float *bias, const ddpm_conv_dims *d);
void ddpm_conv_transpose2d_backward_ref(float *dinp, float *dweight, float *dbias,
                                        const float *dout, const float *inp, const float *weight,
                                        const ddpm_conv_dims *d);

/* Batch norm over [B, C, HW...] (HW = 1 for a [B, C] input, i.e. BatchNorm1d). weight (gamma)
 * and bias (beta) [C] may be NULL (affine=False).
 * training: normalise with the batch mean and biased variance, and (when running_mean and
 *   running_var are not NULL) update them as PyTorch does: r = (1 - momentum) r + momentum s,
 *   with the UNBIASED batch variance (x B HW / (B HW - 1)) for running_var. Needs B HW > 1.
 * eval: normalise with running_mean / running_var (required), which are left unchanged.
 * mean, rstd [C] receive the statistics used (1 / sqrt(var + eps)); backward needs them. */
void ddpm_batchnorm_forward(float *out, float *mean, float *rstd, const float *inp,
                            const float *weight, const float *bias, float *running_mean,
                            float *running_var, int training, float momentum, int B, int C,
                            size_t HW);
/* training: the full gradient through the batch statistics; eval: the statistics are
 * constants. dinp [B, C, HW], dweight [C], dbias [C] += ... */
void ddpm_batchnorm_backward(float *dinp, float *dweight, float *dbias, const float *dout,
                             const float *inp, const float *mean, const float *rstd,
                             const float *weight, int training, int B, int C, size_t HW);

/* Group norm: G groups of C / G consecutive channels (C % G == 0), statistics over each group
 * of each item, biased variance, then per-channel affine weight/bias [C] (either may be NULL).
 * mean, rstd [B, G] receive the statistics for backward. */
void ddpm_groupnorm_forward(float *out, float *mean, float *rstd, const float *inp,
                            const float *weight, const float *bias, int B, int C, size_t HW,
                            int G);
void ddpm_groupnorm_backward(float *dinp, float *dweight, float *dbias, const float *dout,
                             const float *inp, const float *mean, const float *rstd,
                             const float *weight, int B, int C, size_t HW, int G);

/* Elementwise activations over n floats (any shape); out may alias inp in the forward.
 * GELU is the exact form x Phi(x) = x (1 + erf(x / sqrt 2)) / 2 (nn.GELU()). ReLU's gradient at
 * 0 is 0 (as PyTorch). SiLU = x sigmoid(x). */
void ddpm_gelu_forward(float *out, const float *inp, size_t n);
void ddpm_gelu_backward(float *dinp, const float *dout, const float *inp, size_t n);
void ddpm_relu_forward(float *out, const float *inp, size_t n);
void ddpm_relu_backward(float *dinp, const float *dout, const float *inp, size_t n);
void ddpm_silu_forward(float *out, const float *inp, size_t n);
void ddpm_silu_backward(float *dinp, const float *dout, const float *inp, size_t n);

/* out = alpha inp + beta (scale by a constant: the course's / 1.414; lucidrains' scale + 1). */
void ddpm_scale_forward(float *out, const float *inp, float alpha, float beta, size_t n);
void ddpm_scale_backward(float *dinp, const float *dout, float alpha, size_t n);

/* Inverted dropout over B items of per_item floats: item b draws
 * ddpm_randu(seed, DDPM_STREAM_DROPOUT, first_item + b, step, ., per_item) and keeps element k
 * when u_k >= p, scaled by 1 / (1 - p); mask [B, per_item] receives 0 or 1 / (1 - p) (needed by
 * backward). 0 <= p < 1. An item's mask does not depend on the batch it is in. */
void ddpm_dropout_forward(float *out, float *mask, const float *inp, int B, size_t per_item,
                          float p, uint64_t seed, uint64_t first_item, uint32_t step);
void ddpm_dropout_backward(float *dinp, const float *dout, const float *mask, size_t n);

/* Residual add: out = a + b (n floats; out may alias a or b). */
void ddpm_add_forward(float *out, const float *a, const float *b, size_t n);
void ddpm_add_backward(float *da, float *db, const float *dout, size_t n);

/* Per-channel broadcast: out [B, C, HW] = inp [B, C, HW] * s [B, C] (s may be [B, C, 1, 1]):
 * the course's cemb * up; with channel_add, lucidrains' x * (scale + 1) + shift. */
void ddpm_channel_mul_forward(float *out, const float *inp, const float *s, int B, int C,
                              size_t HW);
/* dinp += dout * s; ds [B, C] += sum over HW of dout * inp */
void ddpm_channel_mul_backward(float *dinp, float *ds, const float *dout, const float *inp,
                               const float *s, int B, int C, size_t HW);
/* out [B, C, HW] = inp [B, C, HW] + s [B, C]: the course's + temb. */
void ddpm_channel_add_forward(float *out, const float *inp, const float *s, int B, int C,
                              size_t HW);
void ddpm_channel_add_backward(float *dinp, float *ds, const float *dout, int B, int C,
                               size_t HW);

/* Concatenation along channels: out [B, Ca + Cb, HW] = cat(a [B, Ca, HW], b [B, Cb, HW], 1). */
void ddpm_concat_forward(float *out, const float *a, const float *b, int B, int Ca, int Cb,
                         size_t HW);
void ddpm_concat_backward(float *da, float *db, const float *dout, int B, int Ca, int Cb,
                          size_t HW);
/* Channels c0 .. c0 + n - 1 of inp [B, C, HW] into out [B, n, HW] (torch.chunk / narrow). */
void ddpm_channel_slice_forward(float *out, const float *inp, int B, int C, size_t HW, int c0,
                                int n);
void ddpm_channel_slice_backward(float *dinp, const float *dout, int B, int C, size_t HW, int c0,
                                 int n);

/* Pooling, PyTorch semantics without padding (ceil_mode False): window k x k, stride s,
 * out [B, C, (H - k) / s + 1, (W - k) / s + 1]; trailing rows/columns that do not fill a window
 * are dropped. Max pooling sends the gradient to the first maximum of each window (as PyTorch,
 * NaN counts as the maximum); its backward re-scans inp instead of storing indices. */
void ddpm_maxpool2d_forward(float *out, const float *inp, int B, int C, int H, int W, int k,
                            int s);
void ddpm_maxpool2d_backward(float *dinp, const float *dout, const float *inp, int B, int C,
                             int H, int W, int k, int s);
void ddpm_avgpool2d_forward(float *out, const float *inp, int B, int C, int H, int W, int k,
                            int s);
void ddpm_avgpool2d_backward(float *dinp, const float *dout, int B, int C, int H, int W, int k,
                             int s);

/* Nearest-neighbour upsampling by an integer factor: out [B, C, H scale, W scale]. */
void ddpm_upsample_nearest_forward(float *out, const float *inp, int B, int C, int H, int W,
                                   int scale);
void ddpm_upsample_nearest_backward(float *dinp, const float *dout, int B, int C, int H, int W,
                                    int scale);

/* Sinusoidal timestep embedding (DDPM U-Net, lucidrains' SinusoidalPosEmb): half = dim / 2,
 * f_k = exp(-log(10000) k / (half - 1)), out [B, dim] = cat(sin(t f), cos(t f)). dim even, >= 4.
 * Computed in float as PyTorch does. No gradient (t is not trained). */
void ddpm_timestep_embedding(float *out, const float *t, int B, int dim);

/* Multi-head self-attention over the N = H W positions of x [B, C, H, W] (the DDPM U-Net's
 * AttnBlock without its GroupNorm and residual; lucidrains' Attention):
 *   qkv [B, 3 hid, N] = Wqkv [3 hid, C] x + bqkv; q, k, v = its three channel thirds, each
 *   split into heads of dim_head channels (channel h dim_head + c is head h, hid = heads dim_head);
 *   P = softmax(q^T k / sqrt(dim_head)) per head [N, N]; o [B, hid, N] = v P^T;
 *   out [B, C, N] = Wout [C, hid] o + bout.
 * bqkv [3 hid] and bout [C] may be NULL. */
typedef struct {
    int B, C, N;         /* x [B, C, N] */
    int heads, dim_head; /* hid = heads * dim_head */
} ddpm_attn_dims;
/* Floats that forward saves for backward (qkv, P and o): B (4 hid N + heads N^2). */
size_t ddpm_attention_saved_size(const ddpm_attn_dims *d);
/* Workspace (floats) for backward: 4 hid N + N^2. */
size_t ddpm_attention_workspace(const ddpm_attn_dims *d);
void ddpm_attention_forward(float *out, float *saved, const float *inp, const float *wqkv,
                            const float *bqkv, const float *wout, const float *bout,
                            const ddpm_attn_dims *d);
/* dinp [B, C, N], dwqkv [3 hid, C], dbqkv [3 hid], dwout [C, hid], dbout [C] += ... */
void ddpm_attention_backward(float *dinp, float *dwqkv, float *dbqkv, float *dwout, float *dbout,
                             const float *dout, const float *inp, const float *saved,
                             const float *wqkv, const float *wout, const ddpm_attn_dims *d,
                             float *ws);

/* ------------------------------------------------------------------------------------------ */
/* The tape: write a network's forward once, get its backward                                  */
/*                                                                                              */
/*   ddpm_tape_reset(tape);                                                                     */
/*   ddpm_var *x = ddpm_tape_input(tape, images, 4, (int[]){B, 3, 32, 32}, 0);                  */
/*   ddpm_var *h = ddpm_tape_conv2d(tape, x, &m->conv1_w, &m->conv1_b, 1, 1);                   */
/*   h = ddpm_tape_groupnorm(tape, h, 8, &m->gn_w, &m->gn_b);                                   */
/*   h = ddpm_tape_silu(tape, h); ...                                                           */
/*   if (!out) return ddpm_tape_status(tape);           // one check at the end                 */
/*   ... loss and dout ...                                                                      */
/*   ddpm_tape_backward(tape, out, dout);               // grads += into every ddpm_param.g     */
/*                                                                                              */
/* Each op computes its forward at once and, when gradients are on, records a node;             */
/* ddpm_tape_backward replays the nodes in reverse. Errors are sticky: the first failing op     */
/* (bad shape, out of memory) sets the tape's status and message and returns NULL, and every    */
/* later op given NULL returns NULL, so a network checks once at the end.                       */
/* Activations, saved statistics and (lazily, during backward) the vars' gradients live in an   */
/* arena owned by the tape: a list of blocks kept across ddpm_tape_reset, so once a forward and */
/* backward of a given batch shape has run, later ones allocate nothing. Every var is valid    */
/* until the next ddpm_tape_reset.                                                              */
/* ------------------------------------------------------------------------------------------ */

/* A trained tensor: views into the model's one contiguous parameter buffer (w) and the parallel
 * gradient buffer of the same layout (g; NULL freezes the parameter). Shapes in PyTorch order:
 * conv weight [C_out, C_in, KH, KW], transposed conv weight [C_in, C_out, KH, KW], linear
 * weight [out, in], biases and norm weights [C]. The tape copies the handle, so it may be a
 * temporary. */
typedef struct {
    float *w;
    float *g;
    int ndim;
    int shape[4];
} ddpm_param;

/* A tensor on the tape. Read-only for the caller except grad after backward. */
typedef struct {
    float *data;       /* [numel] */
    float *grad;       /* [numel] once backward has reached it, else NULL */
    size_t numel;
    int ndim;          /* 1..4 */
    int shape[4];      /* PyTorch order: [B, C, H, W], [B, F] or [1] */
    int requires_grad; /* a gradient flows to it (a marked input, or it depends on a trained param) */
} ddpm_var;

typedef struct ddpm_tape ddpm_tape;

/* A new tape (training mode, gradients on); NULL with the error set if out of memory. */
ddpm_tape *ddpm_tape_new(void);
void ddpm_tape_free(ddpm_tape *t); /* NULL is fine */
/* Forgets every node and var (their memory is kept for the next forward) and clears the status. */
void ddpm_tape_reset(ddpm_tape *t);
/* training 1 (default): batch norm uses batch statistics and updates the running ones, dropout
 * is active, nodes are recorded. training 0 (sampling, evaluation): batch norm uses the running
 * statistics, dropout is the identity, and no node is recorded (as torch.no_grad + eval()). */
void ddpm_tape_set_training(ddpm_tape *t, int training);
/* Overrides node recording alone (default: on in training, off in eval), e.g. for gradients of
 * an eval-mode network. */
void ddpm_tape_set_grad(ddpm_tape *t, int enabled);
/* The randomness of the next forward's dropout: the k-th dropout op (k = 0, 1, ... in call
 * order) of item b draws from (seed, DDPM_STREAM_DROPOUT, item ((k + 1) << 32) + first_item + b,
 * step); item high word 0 is left to the model (e.g. context dropout). first_item + B < 2^32. */
void ddpm_tape_set_rng(ddpm_tape *t, uint64_t seed, uint32_t step, uint64_t first_item);
/* DDPM_OK, or the status of the first failed op since the last reset (ddpm_last_error() holds
 * its message). */
int ddpm_tape_status(const ddpm_tape *t);

typedef struct {
    size_t n_nodes;      /* nodes recorded since the last reset */
    size_t arena_bytes;  /* bytes reserved in arena blocks and scratch */
    size_t arena_used;   /* bytes handed out since the last reset */
    size_t n_allocs;     /* allocations the tape has made since it was created */
} ddpm_tape_stats;
void ddpm_tape_get_stats(const ddpm_tape *t, ddpm_tape_stats *s);

/* A leaf var holding a copy of data (numel = product of shape). requires_grad: backward also
 * computes its gradient (var->grad). */
ddpm_var *ddpm_tape_input(ddpm_tape *t, const float *data, int ndim, const int *shape,
                          int requires_grad);

/* conv2d: x [B, C_in, H, W], w [C_out, C_in, KH, KW], b [C_out] or NULL. */
ddpm_var *ddpm_tape_conv2d(ddpm_tape *t, ddpm_var *x, const ddpm_param *w, const ddpm_param *b,
                           int stride, int pad);
/* Transposed conv2d: x [B, C_in, H, W], w [C_in, C_out, KH, KW], b [C_out] or NULL. */
ddpm_var *ddpm_tape_conv_transpose2d(ddpm_tape *t, ddpm_var *x, const ddpm_param *w,
                                     const ddpm_param *b, int stride, int pad);
/* Linear (ddpm_linear_forward): x [B, ...] flattened to [B, in], w [out, in], b [out] or NULL;
 * out [B, out]. */
ddpm_var *ddpm_tape_linear(ddpm_tape *t, ddpm_var *x, const ddpm_param *w, const ddpm_param *b);
/* gelu(batchnorm(conv2d(x))), the ResidualConvBlock's unit: the three ops above, recorded as
 * such when the tape keeps gradients; otherwise (eval mode, nothing recorded) one pass through
 * ddpm_conv2d_scale_gelu_forward. The arguments are those of the two calls. */
ddpm_var *ddpm_tape_conv2d_bn_gelu(ddpm_tape *t, ddpm_var *x, const ddpm_param *w,
                                   const ddpm_param *b, int stride, int pad,
                                   const ddpm_param *gamma, const ddpm_param *beta,
                                   float *running_mean, float *running_var);
/* Batch norm (momentum DDPM_BN_MOMENTUM): x [B, C, ...]; gamma, beta [C] (either may be NULL);
 * running_mean, running_var [C]: the model's buffers (not trained), updated in training mode,
 * used in eval mode. */
ddpm_var *ddpm_tape_batchnorm(ddpm_tape *t, ddpm_var *x, const ddpm_param *gamma,
                              const ddpm_param *beta, float *running_mean, float *running_var);
/* Group norm: x [B, C, ...], C % groups == 0; gamma, beta [C] (either may be NULL). */
ddpm_var *ddpm_tape_groupnorm(ddpm_tape *t, ddpm_var *x, int groups, const ddpm_param *gamma,
                              const ddpm_param *beta);
/* Elementwise, any shape. */
ddpm_var *ddpm_tape_gelu(ddpm_tape *t, ddpm_var *x);
ddpm_var *ddpm_tape_relu(ddpm_tape *t, ddpm_var *x);
ddpm_var *ddpm_tape_silu(ddpm_tape *t, ddpm_var *x);
/* alpha x (e.g. 1 / 1.414) and alpha x + beta. */
ddpm_var *ddpm_tape_scale(ddpm_tape *t, ddpm_var *x, float alpha);
ddpm_var *ddpm_tape_affine(ddpm_tape *t, ddpm_var *x, float alpha, float beta);
/* Dropout with probability p over x [B, ...] (see ddpm_tape_set_rng); the identity (x itself)
 * in eval mode or for p == 0. */
ddpm_var *ddpm_tape_dropout(ddpm_tape *t, ddpm_var *x, float p);
/* a + b, same shape. */
ddpm_var *ddpm_tape_add(ddpm_tape *t, ddpm_var *a, ddpm_var *b);
/* x [B, C, H, W] times / plus s [B, C] or [B, C, 1, 1] broadcast over H, W. */
ddpm_var *ddpm_tape_channel_mul(ddpm_tape *t, ddpm_var *x, ddpm_var *s);
ddpm_var *ddpm_tape_channel_add(ddpm_tape *t, ddpm_var *x, ddpm_var *s);
/* cat((a, b), dim=1) of [B, Ca, ...] and [B, Cb, ...] with the same trailing shape. */
ddpm_var *ddpm_tape_concat(ddpm_tape *t, ddpm_var *a, ddpm_var *b);
/* Channels c0 .. c0 + count - 1 of x [B, C, ...] (x.chunk(2, dim=1) is two slices). */
ddpm_var *ddpm_tape_slice_channels(ddpm_tape *t, ddpm_var *x, int c0, int count);
/* Pooling of x [B, C, H, W] with a k x k window and stride s (s = 0 means s = k). */
ddpm_var *ddpm_tape_maxpool2d(ddpm_tape *t, ddpm_var *x, int k, int s);
ddpm_var *ddpm_tape_avgpool2d(ddpm_tape *t, ddpm_var *x, int k, int s);
/* Nearest upsampling of x [B, C, H, W] by an integer factor. */
ddpm_var *ddpm_tape_upsample_nearest(ddpm_tape *t, ddpm_var *x, int scale);
/* Multi-head self-attention (ddpm_attention_forward) of x [B, C, H, W]: wqkv [3 hid, C] (or
 * [3 hid, C, 1, 1]), bqkv [3 hid] or NULL, wout [C, hid] (or [C, hid, 1, 1]), bout [C] or NULL;
 * hid must be a multiple of heads. Output [B, C, H, W]. */
ddpm_var *ddpm_tape_attention(ddpm_tape *t, ddpm_var *x, const ddpm_param *wqkv,
                              const ddpm_param *bqkv, const ddpm_param *wout,
                              const ddpm_param *bout, int heads);
/* Sinusoidal embedding [B, dim] of B timesteps t[B] (a constant: no gradient). */
ddpm_var *ddpm_tape_timestep_embedding(ddpm_tape *t, const float *timesteps, int B, int dim);
/* The same data under another shape of the same numel (.view), e.g. [B, C] -> [B, C, 1, 1]. */
ddpm_var *ddpm_tape_reshape(ddpm_tape *t, ddpm_var *x, int ndim, const int *shape);
/* The mean of all elements, shape [1]. */
ddpm_var *ddpm_tape_mean(ddpm_tape *t, ddpm_var *x);

/* Backpropagates from out with gradient dout [out->numel] (NULL means ones, e.g. for a scalar
 * loss): replays the recorded nodes in reverse, ACCUMULATING (+=) into every trained param's g
 * and into var->grad of the vars that require grad. Call at most once per forward; zero the
 * parameter gradients yourself between steps. Returns the tape's status. */
int ddpm_tape_backward(ddpm_tape *t, ddpm_var *out, const float *dout);

/* ==== END SECTION: image operators ==== */

/* ==== SECTION: image I/O and datasets (image diffusion issue) ==== */

/* ---- NumPy .npy files ---------------------------------------------------------------------- */

/* An array read from a .npy file. dtype is the kind and size without the byte order: "f4", "f8",
 * "f2", "u1", "i1", "b1", "i2", "u2", "i4", "u4", "i8", "u8" (the file must be little-endian or
 * byte-sized). data holds numel items in C order, malloc'd and aligned for the dtype. */
typedef struct {
    int ndim;                     /* 0 (a scalar) .. DDPM_MAX_DIMS */
    int64_t shape[DDPM_MAX_DIMS];
    char dtype[4];
    size_t itemsize;              /* bytes per item */
    size_t numel;
    void *data;
} ddpm_npy;

/* Reads a .npy file of format version 1.0, 2.0 or 3.0. Fails (DDPM_ERR_IO for a missing or
 * unreadable file, DDPM_ERR_FORMAT otherwise, the message naming the file) on a bad magic, a
 * malformed header dict, fortran_order True, a big-endian or unsupported dtype (structured arrays
 * included), or data shorter or longer than the shape needs. Free with ddpm_npy_free. */
int ddpm_npy_read(const char *path, ddpm_npy *out);
void ddpm_npy_free(ddpm_npy *a);
/* Converts every element of a to float32 into dst[a->numel] (bool -> 0/1). */
int ddpm_npy_to_f32(const ddpm_npy *a, float *dst);
/* Write a C-order float32 ('<f4') or uint8 ('|u1') array of any rank 0..DDPM_MAX_DIMS as a
 * version 1.0 .npy file (header padded to 64 bytes as numpy does), atomically. */
int ddpm_npy_write_f32(const char *path, const float *data, int ndim, const int64_t *shape);
int ddpm_npy_write_u8(const char *path, const uint8_t *data, int ndim, const int64_t *shape);

/* ---- Image output: PNG, grids, animated GIF -------------------------------------------------- */

/* Maps a model-space value in [-1, 1] to a pixel: round((x + 1) / 2 * 255), clamped to 0..255
 * (NaN -> 0). */
uint8_t ddpm_pixel_from_unit(float x);

/* Writes an 8-bit PNG atomically. pixels: h rows of w * channels bytes, interleaved; channels 1
 * (gray), 2 (gray + alpha), 3 (RGB) or 4 (RGBA). Errors name the path. */
int ddpm_png_write(const char *path, const uint8_t *pixels, int w, int h, int channels);

/* Lays N images [N, C, H, W] with values in [-1, 1] out in a grid as torchvision's make_grid does:
 * ncol = min(nrow, N) images per row, ceil(N / ncol) rows, `padding` pixels of value pad_value
 * (0..255) around and between the images. Each image is first enlarged scale times (nearest
 * neighbour; padding is not scaled). C must be 1 (the grid is gray) or 3 (RGB).
 * On success *pixels_out (malloc'd, interleaved, C bytes per pixel) is *h_out rows of *w_out
 * pixels: w = ncol * (W * scale + padding) + padding, likewise h. */
int ddpm_image_grid(const float *images, int N, int C, int H, int W, int nrow, int padding,
                    int pad_value, int scale, uint8_t **pixels_out, int *w_out, int *h_out);
/* ddpm_image_grid with padding 2 and pad value 0, written as a PNG. */
int ddpm_grid_write_png(const char *path, const float *images, int N, int C, int H, int W,
                        int nrow, int scale);

/* An animated GIF being written (frames are kept in memory; the file appears on close). */
typedef struct ddpm_gif ddpm_gif;
/* Starts an animated GIF of w x h frames with channels 1 (gray: a 256-level gray palette) or 3
 * (RGB: each frame gets its own palette, exact when the frame has at most 256 colours, otherwise
 * a 256-colour median-cut palette with nearest-colour mapping). delay_cs: the delay of each frame
 * in centiseconds. The GIF loops forever (NETSCAPE2.0 extension) and holds its last frame longer
 * (see ddpm_gif_set_final_delay). Fails if the directory of path does not exist. */
int ddpm_gif_open(const char *path, int w, int h, int channels, int delay_cs, ddpm_gif **out);
/* The delay of the last frame in centiseconds (default max(200, delay_cs)). */
void ddpm_gif_set_final_delay(ddpm_gif *g, int delay_cs);
/* Appends a frame: h rows of w * channels bytes (the layout ddpm_image_grid produces). */
int ddpm_gif_add_frame(ddpm_gif *g, const uint8_t *pixels);
/* Encodes the last frame and writes the file atomically (temporary name, then rename); frees g
 * whatever happens. Fails if no frame was added. */
int ddpm_gif_close(ddpm_gif *g);
/* Frees g without writing anything (for error paths). NULL is fine. */
void ddpm_gif_discard(ddpm_gif *g);

/* ---- Image input ----------------------------------------------------------------------------- */

/* File name extensions (lower case) the image reader recognises: .png .jpg .jpeg .bmp .gif .tga
 * .psd .hdr .pic .ppm .pgm .pnm (whatever stb_image decodes; a GIF gives its first frame). */
int ddpm_image_ext_supported(const char *path);

/* Reads one image file into dst [channels, size, size] with values in [-1, 1]:
 *  - transparency is composited onto white (so transparent sprite backgrounds become white);
 *  - channels 3 gives RGB (gray files are replicated), channels 1 gives the luminance
 *    0.299 R + 0.587 G + 0.114 B (exact for gray pixels);
 *  - the image is scaled so its shorter side is `size` and the centre size x size square is kept
 *    (torchvision's Resize(size) + CenterCrop(size)), resampling in 8-bit value space with an area
 *    average (box filter) when shrinking and bilinear interpolation when enlarging; when the
 *    shorter side already equals size the pixels are copied exactly (integer centre crop).
 * Errors: DDPM_ERR_IO if the file cannot be read, DDPM_ERR_FORMAT with stb_image's reason if it
 * cannot be decoded (truncated, corrupt, unknown format); messages name the file. */
int ddpm_image_read(const char *path, int size, int channels, float *dst);

/* ---- Image datasets -------------------------------------------------------------------------- */

/* Images as float32 [n, c, h, w] in [-1, 1], with optional labels.
 *  - class labels: labels[n] (class index, or -1 for an image with no class) and n_classes > 0;
 *    cond is then the one-hot matrix [n, n_classes] (a zero row for label -1), cond_dim =
 *    n_classes, and class_names has n_classes strings;
 *  - context vectors that are not one-hot (multi-hot or real-valued, e.g. from a .npy): cond
 *    [n, cond_dim] only, labels NULL, n_classes 0, class_names NULL;
 *  - unlabelled: cond, labels and class_names NULL, n_classes = cond_dim = 0. */
typedef struct {
    float *x;          /* [n, c, h, w] */
    int n, c, h, w;
    int n_classes;     /* 0 = no class labels */
    int cond_dim;      /* K of the context vectors; n_classes for class labels; 0 = none */
    float *cond;       /* [n, cond_dim] or NULL */
    int *labels;       /* [n] or NULL */
    char **class_names;/* [n_classes] or NULL */
} ddpm_image_dataset;

/* Where Debian's dataset-fashion-mnist package installs the data. */
#define DDPM_FASHION_MNIST_DIR "/usr/share/datasets/fashion-mnist"

/* Fashion-MNIST (or any IDX pair with the same file names, e.g. MNIST): reads
 * {train,t10k}-images-idx3-ubyte[.gz] and {train,t10k}-labels-idx1-ubyte[.gz] from dir
 * (DDPM_FASHION_MNIST_DIR if NULL), gzip'd or not. Validates the magic numbers (0x00000803 for
 * images, 0x00000801 for labels), equal counts, sane dimensions, labels 0..9 and the data length.
 * Gives [n, 1, 28, 28] with 10 classes named "T-shirt/top", "Trouser", ... "Ankle boot".
 * max_items > 0 keeps only the first max_items images (0 = all). */
int ddpm_dataset_fashion_mnist(const char *dir, int train, int max_items, ddpm_image_dataset *out);

/* Every image file under dir (recursively; names starting with '.' are skipped; files in sorted
 * byte order of their paths, so the order is deterministic), each read with ddpm_image_read at
 * image_size x image_size with channels 1 or 3. With labels_from_subdirs, the class of an image
 * is its first-level sub-folder: the sub-folders holding images, in sorted order, are classes
 * 0, 1, ... with their names as class names; images directly in dir get label -1.
 * Errors: a missing directory (DDPM_ERR_IO), no images ("DIR: no images found (looked for .png
 * .jpg ...)", DDPM_ERR_INVALID), an unreadable image (the file and stb_image's reason). */
int ddpm_dataset_folder(const char *dir, int image_size, int channels, int labels_from_subdirs,
                        ddpm_image_dataset *out);

/* Images from a .npy array: [N, H, W, C] (C = 1 or 3; the course's sprites layout), [N, H, W]
 * (gray), or [N, C, H, W] when the last dimension is not 1 or 3 but the second is. Values:
 * uint8 (and other integer types) must lie in 0..255 and map to [-1, 1]; float arrays in [0, 1]
 * are mapped to [-1, 1], float arrays with a negative minimum are taken as [-1, 1] already (and
 * must lie in it), float arrays in [0, 255] are taken as 8-bit values; anything else fails.
 * Optional labels (labels_path not NULL): a vector [N] (or [N, 1]) of non-negative integer class
 * indices (n_classes = max + 1, class names "0", "1", ...), or a matrix [N, K] of context
 * vectors (float or int): when every row is one-hot they are also class labels (n_classes = K),
 * otherwise they are kept as context only. Errors name the file: wrong rank or dtype, values out
 * of range, and a count mismatch ("labels.npy has 100 rows but images.npy has 1788 images"). */
int ddpm_dataset_npy(const char *images_path, const char *labels_path, ddpm_image_dataset *out);

/* Frees everything a dataset holds and zeroes it. NULL and zeroed datasets are fine. */
void ddpm_dataset_free(ddpm_image_dataset *d);

/* Random horizontal flips, deterministic: item b of the batch [B, C, H, W] is flipped when
 * ddpm_randu(seed, DDPM_STREAM_AUGMENT, item, epoch) < 0.5, where item = first_item + b. */
void ddpm_images_hflip_random(float *batch, int B, int C, int H, int W, uint64_t seed,
                              uint64_t first_item, uint32_t epoch);
/* The same with the dataset index of every batch item given (items[B]), for shuffled batches. */
void ddpm_images_hflip_random_items(float *batch, int B, int C, int H, int W, uint64_t seed,
                                    const uint64_t *items, uint32_t epoch);

/* ==== END SECTION: image I/O and datasets ==== */

#ifdef __cplusplus
}
#endif
#endif /* DDPM_H */

/* job.h - the CLI's drivers shared by several subcommands: training data described as JSON (and
 * stored in checkpoints), the training run with progress, checkpoints, loss log and Ctrl-C,
 * image sampling, and the 2-D point jobs (forward panels, reverse trajectory, evaluation). */
#ifndef DDPM_JOB_H
#define DDPM_JOB_H

#include "cli.h"

/* Training data loaded from a description such as {"type":"points","name":"s-curve","n":10000,
 * "seed":0} or {"type":"points","path":"my.csv"}. */
typedef struct {
    float *x;     /* [n, d] */
    float *cond;  /* [n, cond_dim] or NULL */
    size_t n;
    int dim;      /* points: D */
    int channels, height, width; /* images */
    int cond_dim;
    int n_classes;      /* class labels (one-hot cond) or 0 */
    char **class_names; /* n_class_names names, or NULL */
    int n_class_names;
    int hflip;
    char *json;   /* the description (malloc'd) */
} job_data;

/* Builds the description from --data and friends: a built-in name or a CSV path. */
char *job_points_json(const char *data, size_t n, uint64_t seed);
int job_data_load(const char *json, job_data *d);
/* A fresh draw of the same built-in data set with another seed (for evaluation); fails for files. */
int job_data_fresh_points(const char *json, size_t n, uint64_t seed, ddpm_points *out);
void job_data_free(job_data *d);

typedef struct {
    const char *out_dir;   /* run directory: ckpt.safetensors, loss.csv, loss.png */
    int save_every;        /* steps between checkpoints (0: only at the end) */
    int log_every;         /* steps between plain progress lines when stderr is not a terminal */
    int quiet;
    int sample_every;      /* images: a sample grid every N steps (0: never) */
    int sample_n;          /* images in that grid */
} job_run_opts;

/* Trains tr for its remaining steps with progress on stderr, the loss log, checkpoints every
 * save_every steps and at the end, and a clean stop on Ctrl-C (checkpoint saved, status
 * DDPM_ERR_INTERRUPTED). Returns a ddpm_status. */
int job_train(ddpm_trainer *tr, const job_data *data, const job_run_opts *o);

/* A grid of n samples (25 DDIM steps, x_0 clipped) from weights (e.g. the EMA copy; NULL: the
 * model's own), written to png. With a conditional model, sample i gets class i % cond_dim
 * (one-hot), so each row of nrow = cond_dim shows one class per column... */
int job_sample_grid(ddpm_model *m, const ddpm_schedule *s, ddpm_prediction pred,
                    const float *weights, int n, uint64_t seed, const char *png);

/* Reads DIR/loss.csv and draws DIR/loss.png (the raw loss and a smoothed curve, log scale). */
int job_plot_loss(const char *dir, int quiet);

/* Creates a directory and its parents (like mkdir -p). */
int job_mkdirs(const char *path);
/* Joins dir and name into a static rotating buffer. */
const char *job_path(const char *dir, const char *name);
/* Prints "  wrote PATH" (the user sees every output file). */
void job_wrote(const char *path, const char *what);

/* Samples n items from a model: chunks of at most batch items, each item's noise addressed by its
 * global index so the result does not depend on the chunking. x_init (may be NULL): x_T.
 * progress: a callback per step of each chunk (may be NULL). */
int job_sample(ddpm_model *m, const ddpm_schedule *s, const ddpm_sample_opts *o,
               const float *cond, float guidance, size_t n, int batch, const float *x_init,
               float *out, ddpm_progress_fn progress, void *progress_ctx);

/* Sampler flags shared by `sample`, `eval` and `demo`. */
typedef struct {
    const char *sampler, *variance, *spacing;
    int steps, no_noise, clip, no_ema;
    float eta;
    uint64_t seed;
} sampler_args;

/* Resolves the sampler flags against a checkpoint (prediction type, number of steps); prints a
 * usage error and returns CLI_EXIT_USAGE on a bad value. */
int sampler_args_resolve(const char *cmd, const sampler_args *a, const ddpm_checkpoint *ck,
                         ddpm_sample_opts *o);
/* Puts the checkpoint's EMA weights in place of the raw ones unless no_ema. */
void sampler_use_ema(ddpm_checkpoint *ck, int no_ema, int quiet);

/* The image flags of `ddpm sample`. */
typedef struct {
    int n, class_id, per_class, nrow, scale, gif_every, batch, quiet;
    const char *context, *context_file, *out, *npy, *gif, *x_init;
    float guidance;
} sample_image_args;
/* Samples images from ck (EMA weights already in place) and writes the outputs. */
int sample_images(const sample_image_args *a, ddpm_checkpoint *ck, const ddpm_sample_opts *so);

/* ---- 2-D points ---- */

/* The forward process of a point set at n_panels evenly spaced t (the tutorial's 20 panels,
 * titled q(x_t)), as a grid PNG. Noise from (seed, TRAIN_NOISE stream). */
int job_plot_forward(const char *png, const ddpm_points *data, const ddpm_schedule *s,
                     int n_panels, uint64_t seed);

/* Records the reverse process at n_snap evenly spaced steps (the tutorial's 10 panels). */
typedef struct {
    ddpm_points *snaps;  /* n_snap point sets */
    int *t;              /* the timestep reached at each snapshot */
    int n_snap, taken;
    size_t n, offset;    /* items per chunk and where this chunk starts */
    size_t n_total;
} job_trajectory;
int job_trajectory_init(job_trajectory *tr, int n_snap, size_t n_total, int dim);
void job_trajectory_free(job_trajectory *tr);
int job_trajectory_progress(void *ctx, int k, int steps, int t, const float *x, const float *x0);
int job_trajectory_write(const job_trajectory *tr, const char *dir, const ddpm_schedule *s, int quiet);

/* Sliced W1 and MMD^2 of samples against a fresh draw of the data, next to the same between two
 * fresh draws (the noise floor). Prints a table; returns the two SWD values. */
int job_eval_points(const ddpm_points *samples, const ddpm_points *ref_a, const ddpm_points *ref_b,
                    int projections, uint64_t seed, double *swd_samples, double *swd_floor);

#endif

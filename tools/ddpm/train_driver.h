/* train_driver.h - the training run with progress, checkpoints, loss log, sample grids
 * and Ctrl-C, shared by `ddpm train` and `ddpm demo`. */
#ifndef DDPM_TRAIN_DRIVER_H
#define DDPM_TRAIN_DRIVER_H

#include "data_source.h"

#include <stdio.h>

/* Sample quality during training (train_eval.c): --eval-every and friends. */
typedef struct {
    int every;             /* steps between evaluations (0: never); also at the last step */
    int n;                 /* samples per evaluation (and at most as many real images) */
    int keep_best;         /* keep DIR/best.safetensors, the checkpoint of lowest FD */
    const char *features;  /* classifier file (NULL: the shipped Fashion-MNIST one) */
    ddpm_sample_opts sampler;
    float guidance;
    uint64_t seed;         /* the real subset and KID's subsets (the sampler has its own) */
} job_eval_opts;

typedef struct {
    const char *out_dir;   /* run directory: ckpt.safetensors, loss.csv, loss.png */
    int save_every;        /* steps between checkpoints (0: only at the end) */
    int log_every;         /* steps between plain progress lines when stderr is not a terminal */
    int quiet;
    int sample_every;      /* images: a sample grid every N steps (0: never) */
    int sample_n;          /* images in that grid */
    job_eval_opts eval;
} job_run_opts;

/* Trains tr for its remaining steps with progress on stderr, the loss log, checkpoints every
 * save_every steps and at the end, and a clean stop on Ctrl-C (checkpoint saved, status
 * DDPM_ERR_INTERRUPTED). Returns a ddpm_status. */
int job_train(ddpm_trainer *tr, const job_data *data, const job_run_opts *o);
/* Whether the last job_train failed writing a checkpoint or the loss log (a full disk: a
 * failure at run time, exit 1, where an unwritable --out at the start is bad input, exit 2). */
int job_train_save_failed(void);

/* A grid of n samples (25 DDIM steps, x_0 clipped) from weights (e.g. the EMA copy; NULL: the
 * model's own), written to png. With a conditional model, sample i gets class i % cond_dim
 * (one-hot), so each row of nrow = cond_dim shows one class per column... */
int job_sample_grid(ddpm_model *m, const ddpm_schedule *s, ddpm_prediction pred,
                    const float *weights, int n, uint64_t seed, const char *png);

/* A CSV log of a resumed run (loss.csv, eval.csv), header the first line: the header and the
 * complete rows up to the checkpoint's step, in order; rows of later steps (they are run again)
 * and a row torn by a crash are cut off. Returns it open for appending, or NULL (error set). */
FILE *job_resume_csv(const char *path, int64_t step, const char *header);

/* --eval-every (train_eval.c), on rank 0: the classifier and the real images' features, and
 * DIR/eval.csv new or continued from tr->step. */
typedef struct job_eval job_eval;
int job_eval_open(job_eval **out, const ddpm_trainer *tr, const job_data *data, const job_run_opts *o);
/* One evaluation of tr's EMA weights at tr->step: a row of eval.csv (on disk when it returns)
 * and, with keep_best and a new lowest FD, DIR/best.safetensors (atomically). */
int job_eval_run(job_eval *ev, ddpm_trainer *tr, const job_data *data);
/* eval.csv to the disk (before each checkpoint, so no checkpoint holds a step whose row is lost). */
int job_eval_sync(job_eval *ev);
void job_eval_close(job_eval *ev);
/* Real images of the data (Fashion-MNIST's test files, else the training images): a random
 * subset of at most n (seed) into *x [*n_real, C, H, W] (malloc'd). */
int job_real_images(const job_data *data, size_t n, uint64_t seed, float **x, size_t *n_real);
/* Reads DIR/eval.csv and draws DIR/eval.png (FD against the step). */
int job_plot_eval(const char *dir, int quiet);

/* Reads DIR/loss.csv and draws DIR/loss.png (the raw loss and a smoothed curve, log scale). */
/* The first two columns (step, value) of a run's CSV log (loss.csv, eval.csv), the header
 * skipped: x[n], y[n] malloc'd (both NULL on failure). */
int job_read_csv_curve(const char *csv, float **x, float **y, size_t *n);
int job_plot_loss(const char *dir, int quiet);

#endif

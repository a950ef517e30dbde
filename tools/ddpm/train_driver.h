/* train_driver.h - the training run with progress, checkpoints, loss log, sample grids
 * and Ctrl-C, shared by `ddpm train` and `ddpm demo`. */
#ifndef DDPM_TRAIN_DRIVER_H
#define DDPM_TRAIN_DRIVER_H

#include "data_source.h"

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
/* Whether the last job_train failed writing a checkpoint or the loss log (a full disk: a
 * failure at run time, exit 1, where an unwritable --out at the start is bad input, exit 2). */
int job_train_save_failed(void);

/* A grid of n samples (25 DDIM steps, x_0 clipped) from weights (e.g. the EMA copy; NULL: the
 * model's own), written to png. With a conditional model, sample i gets class i % cond_dim
 * (one-hot), so each row of nrow = cond_dim shows one class per column... */
int job_sample_grid(ddpm_model *m, const ddpm_schedule *s, ddpm_prediction pred,
                    const float *weights, int n, uint64_t seed, const char *png);

/* Reads DIR/loss.csv and draws DIR/loss.png (the raw loss and a smoothed curve, log scale). */
int job_plot_loss(const char *dir, int quiet);

#endif

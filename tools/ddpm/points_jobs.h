/* points_jobs.h - what the 2-D subcommands share: forward-process panels, the
 * reverse-process trajectory, and evaluation against the noise floor. */
#ifndef DDPM_POINTS_JOBS_H
#define DDPM_POINTS_JOBS_H

#include "cli.h"

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

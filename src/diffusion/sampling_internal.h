/* sampling_internal.h - what the two sampling loops share: DDPM and DDIM run in process.c, the
 * sigma-space samplers (DPM-Solver++, Euler, Euler ancestral, Heun, UniPC) in samplers_sigma.c; both
 * draw x_T and each step's noise from the same per-item streams. */
#ifndef DDPM_DIFFUSION_SAMPLING_INTERNAL_H
#define DDPM_DIFFUSION_SAMPLING_INTERNAL_H

#include "core/internal.h"

/* x_T of item i: randn(seed, SAMPLE_INIT, first_item + i, 0), d floats each. */
void ddpm_sample_draw_init(const ddpm_sample_opts *o, int B, size_t d, float *x);
/* The noise of the step at timestep t: randn(seed, SAMPLE_STEP, first_item + i, t). */
void ddpm_sample_draw_noise(const ddpm_sample_opts *o, int t, int B, size_t d, float *noise);
/* DDPM_ERR_NUMERIC unless x[0..B*d) is finite after step k of K (at timestep t) of `what`
 * (NULL: the sampler o->sampler): a NaN or inf would run through every later step and be written
 * out as the sample. The message names the sampler, the step and the item, and the likely
 * causes. */
int ddpm_sample_check_finite(const char *what, const ddpm_sample_opts *o, int k, int K, int t,
                             const float *x, int B, size_t d);
/* Fails (DDPM_ERR_INVALID, with a message) if thresholding is on with a ratio outside (0, 1] or
 * a max value below 1. */
int ddpm_sample_check_threshold(const ddpm_sample_opts *o);
/* ddpm_sample_loop for the sigma-space samplers (o->sampler other than DDPM and DDIM). */
int ddpm_sample_loop_sigma(const ddpm_schedule *s, const ddpm_sample_opts *o, ddpm_denoise_fn f,
                           void *ctx, int B, size_t d, float *x);

/* ddpm_split_prediction with clamping to [-clip, clip] (clip 0: none); with keep_eps, eps stays
 * the network's when x_0 is clamped (DDIMScheduler's rule). */
void ddpm_split_prediction_range(const ddpm_schedule *s, ddpm_prediction p, const float *xt,
                                 const float *out, const int *t, int B, size_t d, float clip,
                                 int keep_eps, float *eps, float *x0);
/* The clamp range of step options o: 0 without clip_x0, else clip_range (0 means 1). */
float ddpm_step_clip(const ddpm_step_opts *o);

#endif

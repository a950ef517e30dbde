/* sample_driver.h - sampling shared by `sample`, `eval` and `demo`: the sampler flags,
 * the EMA weights, sampling in chunks, and the image outputs of `ddpm sample`. */
#ifndef DDPM_SAMPLE_DRIVER_H
#define DDPM_SAMPLE_DRIVER_H

#include "cli.h"

/* Samples n items from a model: chunks of at most batch items, each item's noise addressed by its
 * global index so the result does not depend on the chunking. x_init (may be NULL): x_T.
 * progress: a callback per step of each chunk (may be NULL). */
int job_sample(ddpm_model *m, const ddpm_schedule *s, const ddpm_sample_opts *o,
               const float *cond, float guidance, size_t n, int batch, const float *x_init,
               float *out, ddpm_progress_fn progress, void *progress_ctx);

/* Sampler flags shared by `sample`, `eval` and `demo` (the DPM-Solver++, UniPC and thresholding
 * ones only `sample` sets; NULL solver_type / final_sigma mean the library's defaults). */
typedef struct {
    const char *sampler, *variance, *spacing;
    int steps, no_noise, clip, no_ema;
    float eta;
    uint64_t seed;
    const char *solver_type, *final_sigma;
    int no_lower_order_final, threshold;
    int solver_order; /* UniPC's order; 0 = the library's default */
    float threshold_ratio, threshold_max;
} sampler_args;

/* Resolves the sampler flags against a checkpoint (prediction type, number of steps); prints a
 * usage error and returns CLI_EXIT_USAGE on a bad value. */
int sampler_args_resolve(const char *cmd, const sampler_args *a, const ddpm_checkpoint *ck,
                         ddpm_sample_opts *o);
/* Prints the run's timesteps and noise levels (sample --verbose). */
int sampler_print_timesteps(const ddpm_schedule *s, const ddpm_sample_opts *o);
/* Puts the checkpoint's EMA weights in place of the raw ones unless no_ema. */
void sampler_use_ema(ddpm_checkpoint *ck, int no_ema, int quiet);

/* The ranges of --eta and --guidance (every command that takes them). DDIM's eta runs from 0
 * (deterministic) to 1 (DDPM's posterior variance); above 1 its noise exceeds what the step leaves
 * room for (1 - abar_prev - sigma^2 < 0), and 1e30 gave samples of 1e30. Guidance W gives
 * eps = (1 + W) eps_cond - W eps_uncond: -1 is the unconditional model, and papers use W up to
 * about 10; 100 is far past any use, and a W of 1e30 made NaN or garbage samples. */
#define SAMPLE_ETA_MAX 1.0
#define SAMPLE_GUIDANCE_MIN -1.0
#define SAMPLE_GUIDANCE_MAX 100.0

/* The most samples one `ddpm sample` draws (-n, --per-class x classes, --context-file rows). */
enum { SAMPLE_MAX_N = 1000000 };

/* The image flags of `ddpm sample`. */
typedef struct {
    int n, class_id, per_class, nrow, scale, gif_every, batch, quiet;
    const char *context, *context_file, *out, *npy, *gif, *x_init;
    float guidance;
    int n_given; /* -n was given (else --x-init and --init-image set N) */
    /* editing (edit_images.c): img2img with --strength, RePaint with --mask */
    const char *init_image, *mask;
    double strength;
    int set_strength, jump_length, jump_n_sample, set_jump;
} sample_image_args;
/* Samples images from ck (EMA weights already in place) and writes the outputs. */
int sample_images(const sample_image_args *a, ddpm_checkpoint *ck, const ddpm_sample_opts *so);

#endif

/* ddpm/diffusion.h - beta schedules, the forward process, prediction targets, sampler steps and the sampling loop (no network: the loop takes it as a callback).
 * Part of the public API; include "ddpm.h" for all of it. */
#ifndef DDPM_DIFFUSION_H
#define DDPM_DIFFUSION_H

#include "ddpm/core.h"

#ifdef __cplusplus
extern "C" {
#endif

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
    int zero_terminal_snr;           /* rescale so that abar at the last step is 0 (Lin et al. 2023,
                                        diffusers' rescale_betas_zero_snr): sqrt(abar) shifted and
                                        scaled to end at 0 and keep its first value. Needs an x0 or
                                        v network, and sampling with ddpm or ddim. */
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
 * (0, 1), beta_start > beta_end, and the like, and for a schedule any of whose buffers is not
 * finite in float (abar underflowing over many steps, or 1 - abar rounding to 0 for tiny betas;
 * the message names the buffer and the step). The only infinities kept are those of
 * zero_terminal_snr at the last step: sqrt(1 / abar) and sqrt(1 / abar - 1) where abar = 0. */
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
/* Names: "ddpm", "ddim", "dpmpp-2m", "dpmpp-2m-sde", "dpmpp-3m", "euler", "euler-ancestral",
 * "heun", "unipc". All but DDPM and DDIM work in sigma space (sigma = sqrt((1 - abar) / abar)). */
typedef enum {
    DDPM_SAMPLER_DDPM = 0,
    DDPM_SAMPLER_DDIM,
    DDPM_SAMPLER_DPMPP_2M,     /* DPM-Solver++ multistep, second order (Lu et al. 2022) */
    DDPM_SAMPLER_DPMPP_2M_SDE, /* ... its SDE variant (noise at every step) */
    DDPM_SAMPLER_DPMPP_3M,     /* ... third order (the ODE form) */
    DDPM_SAMPLER_EULER,        /* Euler on the probability-flow ODE (Karras et al. 2022) */
    DDPM_SAMPLER_EULER_ANCESTRAL, /* Euler with ancestral noise (k-diffusion, eta 1) */
    DDPM_SAMPLER_HEUN,         /* Heun's second-order method (Karras et al. 2022, Algorithm 1) */
    DDPM_SAMPLER_UNIPC,        /* UniPC predictor-corrector, order 1..3 (Zhao et al. 2023) */
    DDPM_SAMPLER_COUNT
} ddpm_sampler;
/* Names: "leading", "trailing", "linspace", "karras", "logsnr". */
typedef enum {
    DDPM_SPACING_LEADING = 0,
    DDPM_SPACING_TRAILING,
    DDPM_SPACING_LINSPACE,
    DDPM_SPACING_KARRAS, /* Karras et al.'s sigmas (rho = 7) from sigma_max to sigma_min */
    DDPM_SPACING_LOGSNR, /* uniform in log-SNR (= uniform in log sigma) */
    DDPM_SPACING_COUNT
} ddpm_spacing;
/* DPM-Solver++ 2M's second-order term: "midpoint" (diffusers' default) or "heun". */
typedef enum { DDPM_SOLVER_MIDPOINT = 0, DDPM_SOLVER_HEUN } ddpm_solver_type;
/* UniPC's B(h): "bh2" (B(h) = e^h - 1, diffusers' default) or "bh1" (B(h) = h). */
typedef enum { DDPM_UNIPC_BH2 = 0, DDPM_UNIPC_BH1 } ddpm_unipc_variant;
/* Where the sigma-space samplers end: "zero" (x_0, as DDIM does) or "sigma-min" (sigma at t0,
 * diffusers' final_sigmas_type). */
typedef enum { DDPM_FINAL_SIGMA_ZERO = 0, DDPM_FINAL_SIGMA_MIN } ddpm_final_sigma;
const char *ddpm_variance_name(ddpm_variance v);
int ddpm_variance_parse(const char *name, ddpm_variance *out);
const char *ddpm_sampler_name(ddpm_sampler s);
int ddpm_sampler_parse(const char *name, ddpm_sampler *out);
const char *ddpm_spacing_name(ddpm_spacing s);
int ddpm_spacing_parse(const char *name, ddpm_spacing *out);
const char *ddpm_solver_type_name(ddpm_solver_type s);
int ddpm_solver_type_parse(const char *name, ddpm_solver_type *out);
const char *ddpm_unipc_variant_name(ddpm_unipc_variant v);
int ddpm_unipc_variant_parse(const char *name, ddpm_unipc_variant *out);
const char *ddpm_final_sigma_name(ddpm_final_sigma f);
int ddpm_final_sigma_parse(const char *name, ddpm_final_sigma *out);

typedef struct {
    ddpm_prediction prediction; /* what the network outputs */
    ddpm_variance variance;     /* DDPM: posterior variance ("small") or beta ("large") */
    int clip_x0;                /* clamp the predicted x_0 to [-1, 1] */
    int no_noise;               /* DDPM: add no noise at any step (shows why noise is needed) */
    float clip_range;           /* clip_x0 clamps to [-r, r] (diffusers' clip_sample_range);
                                   0 means 1 */
    int ddim_keep_eps;          /* DDIM with clip_x0 (or thresholding in the loop): step with the
                                   network's own eps, as diffusers' DDIMScheduler does
                                   (use_clipped_model_output false), instead of the eps re-derived
                                   from the clipped x_0 (ddpm's default) */
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

/* Learned variances (Nichol & Dhariwal 2021; improved-diffusion's learn_sigma with the "learned
 * range" parameterisation, src/diffusion/learned_variance.c): a network that learns its variance
 * outputs, besides its eps / x0 / v prediction, d values v per item, and the reverse step's log
 * variance is frac log beta_t + (1 - frac) log posterior_variance_t (clipped), frac = (v + 1) / 2.
 * log_var [B*d] for B items of d values v with per-item t. */
void ddpm_learned_log_variance(const ddpm_schedule *s, const float *v, const int *t, int B,
                               size_t d, float *log_var);
/* The variational-bound term L_t of the hybrid loss (improved-diffusion's _vb_terms_bpd with the
 * mean frozen, in bits per dimension: the mean over the d values, / ln 2): for t > t0 the KL of
 * the posterior q(x_{t-1} | x_t, x_0) from the model's Gaussian, for t = t0 the negative
 * log-likelihood of x_0's 8-bit bin (width 2/255, the edge bins open) under it, with its tanh
 * approximation of the normal CDF. The model's mean is the posterior mean of its unclipped x_0
 * estimate from model_out (prediction p); its log variance is the learned range of v. vb [B]
 * receives L_t per item; dvb_dv [B*d] (optional) d vb_i / d v: the only gradient of the term
 * (the mean's is stopped), so the hybrid loss L_simple + lambda L_vlb (improved-diffusion's
 * RESCALED_MSE: lambda T L_t with lambda = 1e-3) trains the variance from it alone. */
void ddpm_vlb_terms(const ddpm_schedule *s, ddpm_prediction p, const float *x0, const float *xt,
                    const float *model_out, const float *v, const int *t, int B, size_t d,
                    float *vb, float *dvb_dv);
/* The DDPM step of a model with learned variances: ddpm_step_ddpm's mean (o: prediction,
 * clipping; o->variance unused) plus exp(log_var / 2) noise with the learned range of v (no
 * noise at t0 or with o->no_noise). x_prev may alias xt, not v. */
void ddpm_step_ddpm_learned(const ddpm_schedule *s, const ddpm_step_opts *o, int t,
                            const float *xt, const float *model_out, const float *v,
                            const float *noise, int B, size_t d, float *x_prev, float *x0_out);

/* K decreasing timesteps in t0..n-1 for a K-step sampler (as diffusers' schedulers space them):
 * leading: k * (T / K) (integer ratio), trailing: round(T - k T/K) - 1, linspace:
 * round(linspace(0, T - 1, K)), each then offset by t0 (T = n - t0). karras and logsnr space K
 * sigmas from sigma(n-1) to sigma(t0) (Karras: (smax^(1/7) + k/(K-1) (smin^(1/7) -
 * smax^(1/7)))^7; logsnr: uniform in log sigma) and take the nearest t of each (interpolating
 * log sigma over t, as diffusers' _sigma_to_t, then rounding), moved where needed so that the K
 * steps are distinct. Fails if K < 1 or K > T. */
int ddpm_timesteps(const ddpm_schedule *s, int K, ddpm_spacing spacing, int *out);
/* sigma(t) = sqrt((1 - abar_t) / abar_t) (the schedule's sqrt_recipm1_alphas_cumprod); 0 for
 * t < t0. */
double ddpm_sigma(const ddpm_schedule *s, int t);

/* Dynamic thresholding (Imagen; diffusers' thresholding=True): for each of B items of d floats,
 * s = the ratio quantile of |x0| (linear interpolation, as torch.quantile), clamped to
 * [1, max_value]; then x0 = clamp(x0, -s, s) / s. scratch holds d floats. */
void ddpm_threshold_x0(float *x0, int B, size_t d, float ratio, float max_value, float *scratch);

/* The sigma-space steps below move n floats of a sample x (in the usual variance-preserving
 * scale: x = x_ve / sqrt(1 + sigma^2), x_ve = x_0 + sigma eps) from noise level sigma to
 * sigma_next < sigma, given x_0 estimates; sigma_next = 0 lands on x_0. x_next may alias x. */

/* One DPM-Solver++ multistep step (Lu et al. 2022, data prediction, as diffusers'
 * DPMSolverMultistepScheduler) of order 1, 2 or 3: sig[j] and x0[j] are the noise level and
 * x_0 estimate of the current step (j = 0) and of the previous ones (j = 1, 2; order entries).
 * With lambda = -log sigma, h = lambda_next - lambda_0, alpha = 1 / sqrt(1 + sigma^2) and
 * s = sigma alpha: order 1 is x' = (s'/s_0) x + alpha' (1 - e^-h) x0[0] (DDIM with eta 0); order
 * 2 adds D1 = (h / h_0) (x0[0] - x0[1]) in the midpoint or Heun form; order 3 the published
 * third-order terms. sde: the SDE variant (order 1 or 2): x' = (s'/s_0) e^-h x +
 * alpha' (1 - e^-2h) (D0 + ...) + s' sqrt(1 - e^-2h) noise (noise: n standard normals; unused,
 * may be NULL, when sigma_next = 0). Order > 1 needs sigma_next > 0. */
void ddpm_step_dpmpp(int order, ddpm_solver_type type, int sde, const double *sig,
                     double sigma_next, const float *x, const float *const *x0, const float *noise,
                     size_t n, float *x_next);
/* UniPC (Zhao et al. 2023, as diffusers' UniPCMultistepScheduler with predict_x0 and no
 * solver_p), in the data-prediction form: with lambda = -log sigma, h = lambda_t - lambda_s0 > 0,
 * alpha = 1 / sqrt(1 + sigma^2), s = sigma alpha, B(h) = e^-h - 1 (bh2) or -h (bh1), ratios
 * r_i = (lambda_si - lambda_s0) / h and differences D_i = (x0[i] - x0[0]) / r_i of the earlier
 * estimates, and the coefficients rho from the order conditions (the Vandermonde system of the
 * r_i against b_k = k! h phi_{k+1}(h) / B(h) in diffusers' recursion):
 *   x_t = (s_t / s_0) x - alpha_t (e^-h - 1) x0[0] - alpha_t B(h) sum_i rho_i D_i.
 * The predictor (UniP) of order p moves x from sig[0] to sigma_next with the estimates at sig[0],
 * sig[1], .. sig[p-1] (newest first; rho = 1/2 at order 2 as diffusers, the 2x2 system at 3);
 * sigma_next = 0 lands on x0[0] (order 1 only). */
void ddpm_step_unipc_predict(int order, ddpm_unipc_variant v, const double *sig,
                             double sigma_next, const float *x, const float *const *x0, size_t n,
                             float *x_next);
/* The corrector (UniC) of order p after a predictor step from x_last at sig[0] to sigma_t > 0:
 * the same update from x_last, with the estimates at sig[0..p-1] (x0[0..p-1], newest first) and
 * x0_t, the estimate at the predicted x_t, as one more difference (r = 1); rho solves the full
 * p x p system (1/2 at p = 1). Gives the corrected x_t; the estimate x0_t is not recomputed. */
void ddpm_step_unipc_correct(int order, ddpm_unipc_variant v, const double *sig, double sigma_t,
                             const float *x_last, const float *const *x0, const float *x0_t,
                             size_t n, float *x_corr);
/* One Euler step of the probability-flow ODE dx_ve/dsigma = (x_ve - x0) / sigma (Karras et al.
 * 2022; k-diffusion's sample_euler): x_ve' = x_ve + (sigma_next - sigma) (x_ve - x0) / sigma. */
void ddpm_step_euler(double sigma, double sigma_next, const float *x, const float *x0, size_t n,
                     float *x_next);
/* One Euler ancestral step (k-diffusion's sample_euler_ancestral with eta 1, diffusers'
 * EulerAncestralDiscreteScheduler): sigma_up = sqrt(sigma_next^2 (sigma^2 - sigma_next^2) /
 * sigma^2), sigma_down = sqrt(sigma_next^2 - sigma_up^2), an Euler step to sigma_down, then
 * x_ve += sigma_up noise (noise: n standard normals; unused, may be NULL, if sigma_next = 0). */
void ddpm_step_euler_ancestral(double sigma, double sigma_next, const float *x, const float *x0,
                               const float *noise, size_t n, float *x_next);
/* Heun's correction (Karras et al. 2022, Algorithm 1 with no churn): x0_pred is the x_0
 * estimate at the Euler predictor ddpm_step_euler(sigma, sigma_next, x, x0) (at sigma_next > 0);
 * x_ve' = x_ve + (sigma_next - sigma) (d + d') / 2 with d, d' the slopes at x and the predictor. */
void ddpm_step_heun(double sigma, double sigma_next, const float *x, const float *x0,
                    const float *x0_pred, size_t n, float *x_next);

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
    int steps;             /* all but DDPM: number of steps (DDPM always uses every step) */
    ddpm_spacing spacing;  /* all but DDPM: timestep spacing */
    float eta;             /* DDIM: 0 = deterministic, 1 = DDPM-like; in [0, 1] */
    ddpm_solver_type solver_type; /* DPM-Solver++ 2M (and its SDE): midpoint or Heun form */
    int lower_order_final; /* DPM-Solver++ below 15 steps, UniPC at any number: the last steps
                              of lower order (diffusers' lower_order_final, on by default) */
    int unipc_order;       /* UniPC: the predictor's order 1..3 (diffusers' solver_order, default
                              2); the corrector raises the accuracy by one */
    ddpm_unipc_variant unipc_variant; /* UniPC: bh2 (default) or bh1 */
    ddpm_final_sigma final_sigma; /* sigma-space samplers: end at sigma 0 (default) or sigma(t0) */
    ddpm_step_opts step;
    /* Dynamic thresholding (Saharia et al. 2022) in place of step.clip_x0, for every sampler:
     * see ddpm_threshold_x0. DDPM and DDIM get the thresholded x_0 as an x_0 prediction. */
    int threshold;
    float threshold_ratio; /* the percentile of |x_0| (default 0.995, as diffusers) */
    float threshold_max;   /* the largest threshold (default 1, diffusers' sample_max_value) */
    uint64_t seed;
    uint64_t first_item;   /* global index of the first of the B items (for the noise streams) */
    int x_is_init;         /* x already holds x_T; otherwise x_T is drawn from the seed */
    int first_step;        /* start at step first_step of the run's steps (0 = all; img2img):
                              x must hold x_t at that step's timestep, and x_is_init be set */
    ddpm_progress_fn progress;
    void *progress_ctx;
    /* diffusers' scheduler settings (a diffusers folder's scheduler_config.json): */
    int steps_offset;      /* leading spacing, every sampler but DDPM: added to each timestep */
    int ddim_prev_by_ratio;/* DDIM: the step after t lands at t - T / K (integer division), as
                              DDIMScheduler.step, instead of at the next listed timestep (the two
                              differ for trailing or linspace spacing when K does not divide T) */
    int ddim_final_abar_t0;/* DDIM: below t0 the step lands at abar(t0), not at 1 (diffusers'
                              set_alpha_to_one false) */
} ddpm_sample_opts;

void ddpm_sample_opts_default(ddpm_sample_opts *o);
/* The x_0 estimate of the sigma-space samplers at a shared step t: split from the network output
 * of type o->step.prediction, then clamped to [-1, 1] (o->step.clip_x0) or dynamically
 * thresholded (o->threshold; scratch: d floats, else unused and may be NULL). x0 may alias
 * model_out. */
void ddpm_predict_x0(const ddpm_schedule *s, const ddpm_sample_opts *o, int t, const float *xt,
                     const float *model_out, int B, size_t d, float *x0, float *scratch);
/* The number of steps of a run (progress calls): every step for DDPM, o->steps otherwise. */
int ddpm_sample_num_steps(const ddpm_schedule *s, const ddpm_sample_opts *o);
/* The number of network evaluations of a run: the steps, and for Heun one more per step that
 * moves to a sigma above 0; -1 if the run's steps are invalid (as ddpm_sample_timesteps says). */
int ddpm_sample_num_evals(const ddpm_schedule *s, const ddpm_sample_opts *o);
/* The steps a run takes: ts (room for ddpm_sample_num_steps) receives the K timesteps at which
 * the network is called, in order; sigmas (optional, K + 1 entries) the noise levels the run
 * moves through, sigma(ts[k]) and then the final one (0, or sigma(t0) for a sigma-space
 * sampler with DDPM_FINAL_SIGMA_MIN). Fails as ddpm_timesteps does. */
int ddpm_sample_timesteps(const ddpm_schedule *s, const ddpm_sample_opts *o, int *ts,
                          double *sigmas);
/* Runs the reverse process on B items of d floats: x [B*d] holds x_T on entry if x_is_init and
 * the sample on return. The noise of item i at step t is randn(seed, SAMPLE_STEP, first_item+i, t),
 * so a sample does not depend on the batch it was drawn in. The sigma-space samplers start from
 * the same x_T (their x_ve is x_T sqrt(1 + sigma_max^2)) and call the network on the usual
 * x_t at integer t. Returns a ddpm_status: DDPM_ERR_NUMERIC (naming the step and the item) as
 * soon as a step leaves a NaN or inf in x (as do the editing loops below). */
int ddpm_sample_loop(const ddpm_schedule *s, const ddpm_sample_opts *o, ddpm_denoise_fn f,
                     void *ctx, int B, size_t d, float *x);

/* ------------------------------------------------------------------------------------------ */
/* Editing: img2img (SDEdit), RePaint inpainting, DDIM inversion, spherical interpolation       */
/* (src/diffusion/editing.c). Images are B items of d floats in [-1, 1], like samples.          */
/* ------------------------------------------------------------------------------------------ */

/* Where img2img with strength S in [0, 1] starts in a run of K = ddpm_sample_num_steps steps
 * (as diffusers' img2img pipelines): the last n_run = floor(K S) of the run's timesteps are run,
 * so *skip = K - n_run steps are skipped and the image is noised to *t_start = ts[*skip] (the
 * first timestep that runs; DDPM: K = T, so t_start = t0 + floor(T S) - 1; the sigma-space
 * samplers: the timestep whose sigma they start from). n_run = 0 (S < 1/K): nothing runs,
 * *t_start = -1. Fails for S outside [0, 1] or a bad run (as ddpm_sample_timesteps). */
int ddpm_img2img_start(const ddpm_schedule *s, const ddpm_sample_opts *o, double strength,
                       int *skip, int *t_start);
/* img2img / SDEdit (Meng et al. 2022): x = q_sample(init, z, t_start) with z the item's x_T draw
 * (randn(seed, SAMPLE_INIT, first_item + i, 0)), then the run's last n_run steps with any sampler
 * (o->first_step = skip). S = 1 starts from z itself (pure noise, as plain sampling: the same
 * samples bit for bit); n_run = 0 returns init unchanged. init [B*d]; x [B*d] receives the
 * result (it may alias init). o->x_is_init and o->first_step are ignored. */
int ddpm_img2img(const ddpm_schedule *s, const ddpm_sample_opts *o, double strength,
                 ddpm_denoise_fn f, void *ctx, int B, size_t d, const float *init, float *x);

/* RePaint's resampling schedule (Lugmayr et al. 2022, get_schedule_jump with one sample per step
 * and no second or third jump level): from t = T walking down, at every t = 0, J, 2J, ... below
 * T - J it jumps J steps back up (R - 1 times per such t), and ends with -1. The list holds the
 * times 0..T-1 (then -1) in the order visited; consecutive entries differ by 1. *out is malloc'd
 * (*len entries). Fails for T < 1, J < 1 or R < 1. */
int ddpm_repaint_schedule(int T, int jump_length, int jump_n_sample, int **out, int *len);
/* RePaint inpainting (Algorithm 1 with the resampling schedule above over the schedule's steps
 * t0..n-1): x_T from the item's SAMPLE_INIT draw; each move down from t to t-1 is the DDPM step
 * of the model (o->step: prediction, variance, clipping; o->threshold) for the unknown region
 * and q_sample(known, z, t-1) for the known one (known itself at the last step, so the result
 * equals known where mask is 1), blended as mask known + (1 - mask) unknown; each move up from
 * t-1 to t ("undo") is x_t = sqrt(1 - beta_t) x_{t-1} + sqrt(beta_t) z. known, mask [B*d] (mask
 * 1 = keep the known pixel, 0 = regenerate it; values between blend); x [B*d] receives the
 * result. Noise at schedule position j: the DDPM step's randn(seed, SAMPLE_STEP, item, j), the
 * known region's and the undo's randn(seed, EDIT, item, j). o->sampler must be DDPM; progress is
 * called after each of the len - 1 moves. */
int ddpm_repaint(const ddpm_schedule *s, const ddpm_sample_opts *o, int jump_length,
                 int jump_n_sample, ddpm_denoise_fn f, void *ctx, int B, size_t d,
                 const float *known, const float *mask, float *x);

/* DDIM inversion: the deterministic DDIM update run forwards over the run's timesteps (o->steps,
 * o->spacing; as DDIM sampling with eta 0 uses them, in reverse), from x_0 = images [B*d] to
 * x_T [B*d] at ts[0], the x_T that DDIM sampling with the same steps starts from. Each move from
 * level a (x_0 first, abar = 1) to the next timestep b calls the network at (x_a, b) (the usual
 * approximation eps(x_b, b) ~ eps(x_a, b)), splits its output at b into eps (eps, x0 and v
 * models alike, ddpm_split_prediction, no clipping) and sets x_b = sqrt(abar_b) x0_hat +
 * sqrt(1 - abar_b) eps with x0_hat = (x_a - sqrt(1 - abar_a) eps) / sqrt(abar_a). For eps
 * models this is diffusers' DDIMInverseScheduler. xT may alias images. */
int ddpm_ddim_invert(const ddpm_schedule *s, const ddpm_sample_opts *o, ddpm_denoise_fn f,
                     void *ctx, int B, size_t d, const float *images, float *xT);

/* ---- the likelihood bound (src/diffusion/likelihood.c) ----
 * The DDPM paper's variational bound on -log p(x_0) in bits per dimension, as improved-diffusion's
 * calc_bpd_loop (its fixed variances; the model's x_0 estimate clamped to [-1, 1] with clip, as
 * its image_nll default). Data are images scaled to [-1, 1] from 256 levels. */
/* KL(N(mean1, exp(logvar1)) || N(mean2, exp(logvar2))) in nats. */
double ddpm_normal_kl(double mean1, double logvar1, double mean2, double logvar2);
/* log P(x) of the bin of x (width 2/255; the end bins reach -inf / +inf) under N(mean,
 * exp(log_scale)^2), with the tanh approximation of the normal CDF of the DDPM code. */
double ddpm_discretized_gaussian_log_likelihood(double x, double mean, double log_scale);
/* The bound's term at step t for B items, from x_0, x_t and the network's output there
 * (prediction type pred), averaged over the d dimensions, in bits: for t > t0 the KL of
 * q(x_{t-1} | x_t, x_0) from p(x_{t-1} | x_t) (mean: the posterior mean of the model's x_0,
 * log variance: the clipped posterior one (DDPM_VAR_SMALL) or log beta_t (LARGE; at t0 the next
 * step's posterior variance)); at t0 -log p(x_0 | x_t) of the discretized Gaussian decoder. */
int ddpm_vb_terms_bpd(const ddpm_schedule *s, ddpm_prediction pred, ddpm_variance var, int clip,
                      int t, const float *x0, const float *xt, const float *model_out, int B,
                      size_t d, double *out);
/* KL(q(x_T | x_0) || N(0, I)) per item, averaged over dimensions, in bits. */
void ddpm_prior_bpd(const ddpm_schedule *s, const float *x0, int B, size_t d, double *out);
/* The whole bound per item, bpd[B] (prior[B], may be NULL: its prior term): the prior plus the
 * terms of every step t0..n-1, x_t drawn with eps = randn(seed, DDPM_STREAM_EVAL, first_item + i,
 * 1000000 + t) (so an item's figure does not depend on its batch). n - t0 network calls. */
int ddpm_nll_bpd(const ddpm_schedule *s, ddpm_prediction pred, ddpm_variance var, int clip,
                 ddpm_denoise_fn f, void *ctx, const float *x0, int B, size_t d, uint64_t seed,
                 uint64_t first_item, double *bpd, double *prior);

/* Spherical interpolation of n floats: out = sin((1 - w) theta) / sin(theta) a + sin(w theta) /
 * sin(theta) b, theta the angle between a and b (computed in double; linear where theta is
 * below 1e-4). w = 0 gives a and w = 1 gives b exactly. out may alias neither input. */
void ddpm_slerp(const float *a, const float *b, double w, size_t n, float *out);

/* ------------------------------------------------------------------------------------------ */

#ifdef __cplusplus
}
#endif
#endif /* DDPM_DIFFUSION_H */

/* process.c - the forward process, conversions between prediction targets, the posterior, one
 * step of each sampler and the reverse-process loop. None of it knows about networks: the loop
 * takes the network as a callback, so it can be tested with an analytic model. */
#include "core/names.h"
#include "diffusion/sampling_internal.h"

#include <math.h>

/* ---- names ---------------------------------------------------------------------------------- */

static const char *const pred_names[] = {"eps", "x0", "v"};
static const char *const var_names[] = {"small", "large"};
static const char *const sampler_names[] = {"ddpm",     "ddim",  "dpmpp-2m",        "dpmpp-2m-sde",
                                            "dpmpp-3m", "euler", "euler-ancestral", "heun",
                                            "unipc"};
static const char *const spacing_names[] = {"leading", "trailing", "linspace", "karras", "logsnr"};
static const char *const solver_names[] = {"midpoint", "heun"};
static const char *const final_sigma_names[] = {"zero", "sigma-min"};
static const char *const unipc_variant_names[] = {"bh2", "bh1"};

DDPM_DEFINE_ENUM_NAMES(ddpm_prediction, ddpm_prediction, "prediction type", pred_names)
DDPM_DEFINE_ENUM_NAMES(ddpm_variance, ddpm_variance, "variance", var_names)
DDPM_DEFINE_ENUM_NAMES(ddpm_sampler, ddpm_sampler, "sampler", sampler_names)
DDPM_DEFINE_ENUM_NAMES(ddpm_spacing, ddpm_spacing, "timestep spacing", spacing_names)
DDPM_DEFINE_ENUM_NAMES(ddpm_solver_type, ddpm_solver_type, "solver type", solver_names)
DDPM_DEFINE_ENUM_NAMES(ddpm_final_sigma, ddpm_final_sigma, "final sigma", final_sigma_names)
DDPM_DEFINE_ENUM_NAMES(ddpm_unipc_variant, ddpm_unipc_variant, "UniPC variant", unipc_variant_names)
_Static_assert(sizeof sampler_names / sizeof *sampler_names == DDPM_SAMPLER_COUNT,
               "a name for every sampler");
_Static_assert(sizeof spacing_names / sizeof *spacing_names == DDPM_SPACING_COUNT,
               "a name for every spacing");

/* ---- forward process and conversions (per-item t) --------------------------------------------- */

/* out = a[t] x + b[t] y (or, with minus, a[t] x - b[t] y) over B items of d floats: most
 * conversions have this shape. */
static void axpby_per_t(const float *a, const float *b, int minus, const float *x,
                        const float *y, const int *t, int B, size_t d, float *out) {
    for (int i = 0; i < B; i++) {
        const float ai = a[t[i]], bi = b[t[i]];
        const float *xi = x + (size_t)i * d, *yi = y + (size_t)i * d;
        float *oi = out + (size_t)i * d;
        if (minus)
            for (size_t j = 0; j < d; j++) oi[j] = ai * xi[j] - bi * yi[j];
        else
            for (size_t j = 0; j < d; j++) oi[j] = ai * xi[j] + bi * yi[j];
    }
}

void ddpm_q_sample(const ddpm_schedule *s, const float *x0, const float *eps, const int *t, int B,
                   size_t d, float *xt) {
    axpby_per_t(s->sqrt_alphas_cumprod, s->sqrt_one_minus_alphas_cumprod, 0, x0, eps, t, B, d,
                xt);
}

void ddpm_x0_from_eps(const ddpm_schedule *s, const float *xt, const float *eps, const int *t,
                      int B, size_t d, float *x0) {
    axpby_per_t(s->sqrt_recip_alphas_cumprod, s->sqrt_recipm1_alphas_cumprod, 1, xt, eps, t, B,
                d, x0);
}

void ddpm_eps_from_x0(const ddpm_schedule *s, const float *xt, const float *x0, const int *t,
                      int B, size_t d, float *eps) {
    for (int i = 0; i < B; i++) {
        const float a = s->sqrt_recip_alphas_cumprod[t[i]], b = s->sqrt_recipm1_alphas_cumprod[t[i]];
        for (size_t j = 0; j < d; j++) {
            size_t k = (size_t)i * d + j;
            eps[k] = (a * xt[k] - x0[k]) / b;
        }
    }
}

void ddpm_v_from_x0_eps(const ddpm_schedule *s, const float *x0, const float *eps, const int *t,
                        int B, size_t d, float *v) {
    axpby_per_t(s->sqrt_alphas_cumprod, s->sqrt_one_minus_alphas_cumprod, 1, eps, x0, t, B, d,
                v);
}

void ddpm_x0_from_v(const ddpm_schedule *s, const float *xt, const float *v, const int *t, int B,
                    size_t d, float *x0) {
    axpby_per_t(s->sqrt_alphas_cumprod, s->sqrt_one_minus_alphas_cumprod, 1, xt, v, t, B, d,
                x0);
}

void ddpm_eps_from_v(const ddpm_schedule *s, const float *xt, const float *v, const int *t, int B,
                     size_t d, float *eps) {
    axpby_per_t(s->sqrt_one_minus_alphas_cumprod, s->sqrt_alphas_cumprod, 0, xt, v, t, B, d,
                eps);
}

void ddpm_target(const ddpm_schedule *s, ddpm_prediction p, const float *x0, const float *eps,
                 const int *t, int B, size_t d, float *target) {
    size_t n = (size_t)B * d;
    switch (p) {
    case DDPM_PRED_EPS: memcpy(target, eps, n * sizeof(float)); break;
    case DDPM_PRED_X0: memcpy(target, x0, n * sizeof(float)); break;
    case DDPM_PRED_V: ddpm_v_from_x0_eps(s, x0, eps, t, B, d, target); break;
    default: DDPM_CHECK(!"unknown prediction type");
    }
}

float ddpm_step_clip(const ddpm_step_opts *o) {
    return !o->clip_x0 ? 0.0f : o->clip_range > 0.0f ? o->clip_range : 1.0f;
}

void ddpm_split_prediction(const ddpm_schedule *s, ddpm_prediction p, const float *xt,
                           const float *out, const int *t, int B, size_t d, int clip, float *eps,
                           float *x0) {
    ddpm_split_prediction_range(s, p, xt, out, t, B, d, clip ? 1.0f : 0.0f, 0, eps, x0);
}

void ddpm_split_prediction_range(const ddpm_schedule *s, ddpm_prediction p, const float *xt,
                                 const float *out, const int *t, int B, size_t d, float clip,
                                 int keep_eps, float *eps, float *x0) {
    for (int i = 0; i < B; i++) {
        const int ti = t[i];
        const float sa = s->sqrt_alphas_cumprod[ti], s1m = s->sqrt_one_minus_alphas_cumprod[ti];
        const float ra = s->sqrt_recip_alphas_cumprod[ti], rm1 = s->sqrt_recipm1_alphas_cumprod[ti];
        for (size_t j = 0; j < d; j++) {
            const size_t k = (size_t)i * d + j;
            float e, x;
            switch (p) {
            case DDPM_PRED_EPS: e = out[k]; x = ra * xt[k] - rm1 * e; break;
            /* abar = 0 (a zero-terminal-SNR schedule's last step): x_t is eps itself */
            case DDPM_PRED_X0: x = out[k]; e = sa == 0.0f ? xt[k] : (ra * xt[k] - x) / rm1; break;
            default: x = sa * xt[k] - s1m * out[k]; e = s1m * xt[k] + sa * out[k]; break;
            }
            if (clip > 0.0f) {
                float xc = x < -clip ? -clip : x > clip ? clip : x;
                if (xc != x && !keep_eps) e = sa == 0.0f ? xt[k] : (ra * xt[k] - xc) / rm1;
                x = xc;
            }
            if (eps) eps[k] = e;
            if (x0) x0[k] = x;
        }
    }
}

void ddpm_q_posterior(const ddpm_schedule *s, const float *x0, const float *xt, const int *t,
                      int B, size_t d, float *mean, float *var, float *log_var) {
    if (mean) axpby_per_t(s->posterior_mean_coef1, s->posterior_mean_coef2, 0, x0, xt, t, B, d, mean);
    for (int i = 0; i < B; i++) {
        if (var) var[i] = s->posterior_variance[t[i]];
        if (log_var) log_var[i] = s->posterior_log_variance_clipped[t[i]];
    }
}

/* ---- one reverse step ---------------------------------------------------------------------- */

void ddpm_step_ddpm(const ddpm_schedule *s, const ddpm_step_opts *o, int t, const float *xt,
                    const float *model_out, const float *noise, int B, size_t d, float *x_prev,
                    float *x0_out) {
    DDPM_CHECK(t >= s->t0 && t < s->n);
    /* Without clipping the mean is Ho et al.'s Algorithm 2, as both tutorials write it:
     * (x_t - beta_t / sqrt(1 - abar_t) eps) / sqrt(alpha_t). With clipping it is the posterior
     * mean of the clipped x_0. The two agree for every schedule whose abar is the product of its
     * alphas; the course's T+1-point schedule is not (abar_1 keeps a_0), and its own sampler uses
     * the first form. */
    /* at t0 the coefficients are 1 and 0 (the schedule sets them so): the mean is x_0 itself */
    const float c1 = s->posterior_mean_coef1[t], c2 = s->posterior_mean_coef2[t];
    const float ra = 1.0f / sqrtf(s->alphas[t]);
    const float ce = s->betas[t] / s->sqrt_one_minus_alphas_cumprod[t];
    float sigma = 0.0f;
    if (t > s->t0 && !o->no_noise)
        sigma = o->variance == DDPM_VAR_LARGE ? sqrtf(s->betas[t])
                                              : expf(0.5f * s->posterior_log_variance_clipped[t]);
    DDPM_CHECK(sigma == 0.0f || noise != NULL);
#pragma omp parallel for schedule(static) if ((size_t)B * d > 65536)
    for (int i = 0; i < B; i++) {
        const size_t off = (size_t)i * d;
        float e[256], x0[256];
        for (size_t j0 = 0; j0 < d; j0 += 256) {
            const size_t len = d - j0 < 256 ? d - j0 : 256;
            ddpm_split_prediction_range(s, o->prediction, xt + off + j0, model_out + off + j0,
                                        &t, 1, len, ddpm_step_clip(o), 0, e, x0);
            for (size_t j = 0; j < len; j++) {
                const size_t k = off + j0 + j;
                float m = o->clip_x0 ? c1 * x0[j] + c2 * xt[k] : ra * (xt[k] - ce * e[j]);
                if (x0_out) x0_out[k] = x0[j];
                x_prev[k] = sigma != 0.0f ? m + sigma * noise[k] : m;
            }
        }
    }
}

/* A DDIM step from t to a point of alphas_cumprod ab_prev (ab_prev >= abar_t). eps_net, if
 * given, is the eps to step with (the network's, when the loop thresholds x_0 and
 * o->ddim_keep_eps is set); otherwise eps comes from the output as o says. */
static void ddim_step_to(const ddpm_schedule *s, const ddpm_step_opts *o, int t, double ab_prev,
                         float eta, const float *xt, const float *model_out, const float *eps_net,
                         const float *noise, int B, size_t d, float *x_prev, float *x0_out) {
    const double ab = s->alphas_cumprod[t];
    const double sig = ab_prev == ab ? 0.0 : eta * sqrt((1.0 - ab_prev) / (1.0 - ab) * (1.0 - ab / ab_prev));
    const double c2 = 1.0 - ab_prev - sig * sig;
    const float a = (float)sqrt(ab_prev), c = (float)sqrt(c2 > 0.0 ? c2 : 0.0), sigma = (float)sig;
    DDPM_CHECK(sigma == 0.0f || noise != NULL);
    const float clip = ddpm_step_clip(o);
#pragma omp parallel for schedule(static) if ((size_t)B * d > 65536)
    for (int i = 0; i < B; i++) {
        const size_t off = (size_t)i * d;
        float e[256], x0[256];
        for (size_t j0 = 0; j0 < d; j0 += 256) {
            const size_t len = d - j0 < 256 ? d - j0 : 256;
            ddpm_split_prediction_range(s, o->prediction, xt + off + j0, model_out + off + j0,
                                        &t, 1, len, clip, o->ddim_keep_eps, e, x0);
            for (size_t j = 0; j < len; j++) {
                const size_t k = off + j0 + j;
                float v = a * x0[j] + c * (eps_net ? eps_net[k] : e[j]);
                if (sigma != 0.0f) v += sigma * noise[k];
                if (x0_out) x0_out[k] = x0[j];
                x_prev[k] = v;
            }
        }
    }
}

void ddpm_step_ddim(const ddpm_schedule *s, const ddpm_step_opts *o, int t, int t_prev, float eta,
                    const float *xt, const float *model_out, const float *noise, int B, size_t d,
                    float *x_prev, float *x0_out) {
    DDPM_CHECK(t >= s->t0 && t < s->n && t_prev < t);
    const double ab_prev = t_prev >= s->t0 ? s->alphas_cumprod[t_prev] : 1.0;
    ddim_step_to(s, o, t, ab_prev, eta, xt, model_out, NULL, noise, B, d, x_prev, x0_out);
}

double ddpm_sigma(const ddpm_schedule *s, int t) {
    /* sqrt(1 / abar - 1) was rounded to float from the double abar: near t = 0, where 1 - abar
     * is ~1e-5, recomputing it from the float abar would lose three digits. */
    return t < s->t0 ? 0.0 : (double)s->sqrt_recipm1_alphas_cumprod[t];
}

/* Karras or log-SNR spacing: K sigmas from sigma(n-1) down to sigma(t0), each mapped to the
 * nearest step. The network only knows the integer steps it was trained at (the denoise callback
 * takes an int t), so each sigma is rounded to a step and the samplers then use that step's own
 * sigma: the update and the network agree on the noise level, where diffusers keeps the
 * unrounded sigma for the update. Rounding can merge neighbours where the schedule's sigmas are
 * far apart (near t0 for many steps); a merged step moves to the next free step below, and no
 * step goes so low that the rest would not fit above t0, so K distinct steps remain. */
static void sigma_spaced(const ddpm_schedule *s, int K, ddpm_spacing spacing, int *out) {
    const int lo_t = s->t0, hi_t = s->n - 1;
    const double smin = ddpm_sigma(s, lo_t), smax = ddpm_sigma(s, hi_t);
    for (int k = 0; k < K; k++) {
        const double r = K == 1 ? 0.0 : (double)k / (K - 1);
        double sg;
        if (spacing == DDPM_SPACING_KARRAS) {
            const double rho = 7.0, a = pow(smax, 1.0 / rho), b = pow(smin, 1.0 / rho);
            sg = pow(a + r * (b - a), rho);
        } else {
            sg = exp(log(smax) + r * (log(smin) - log(smax)));
        }
        /* _sigma_to_t: interpolate t linearly in log sigma between the bracketing steps. */
        const double ls = log(sg);
        int i = lo_t;
        while (i + 1 < hi_t && log(ddpm_sigma(s, i + 1)) <= ls) i++;
        const double l0 = log(ddpm_sigma(s, i)), l1 = log(ddpm_sigma(s, i + 1));
        double w = l1 > l0 ? (ls - l0) / (l1 - l0) : 0.0;
        w = w < 0.0 ? 0.0 : w > 1.0 ? 1.0 : w;
        int t = (int)rint(i + w);
        const int floor_t = lo_t + (K - 1 - k), ceil_t = k == 0 ? hi_t : out[k - 1] - 1;
        t = t < floor_t ? floor_t : t;
        out[k] = t > ceil_t ? ceil_t : t;
    }
}

int ddpm_timesteps(const ddpm_schedule *s, int K, ddpm_spacing spacing, int *out) {
    const int T = s->n - s->t0;
    if (K < 1 || K > T)
        return ddpm_fail(DDPM_ERR_INVALID, "number of sampling steps must be in 1..%d (got %d)", T,
                         K);
    const int by_sigma = spacing == DDPM_SPACING_KARRAS || spacing == DDPM_SPACING_LOGSNR;
    if (by_sigma) sigma_spaced(s, K, spacing, out);
    for (int k = 0; !by_sigma && k < K; k++) {
        double v;
        switch (spacing) {
        case DDPM_SPACING_LEADING: v = (double)(K - 1 - k) * (T / K); break;
        case DDPM_SPACING_TRAILING: v = rint(T - k * ((double)T / K)) - 1.0; break;
        case DDPM_SPACING_LINSPACE:
            v = K == 1 ? 0.0 : rint((double)(K - 1 - k) * (T - 1) / (K - 1));
            break;
        default: return ddpm_fail(DDPM_ERR_INVALID, "unknown timestep spacing %d", (int)spacing);
        }
        out[k] = (int)v + s->t0;
    }
    for (int k = 0; k < K; k++)
        DDPM_CHECK(out[k] >= s->t0 && out[k] < s->n && (k == 0 || out[k] < out[k - 1]));
    return DDPM_OK;
}

/* ---- the reverse-process loop ---------------------------------------------------------------- */

void ddpm_sample_opts_default(ddpm_sample_opts *o) {
    memset(o, 0, sizeof *o);
    o->sampler = DDPM_SAMPLER_DDPM;
    o->steps = 50;
    o->spacing = DDPM_SPACING_LEADING;
    o->eta = 0.0f;
    o->lower_order_final = 1;
    o->unipc_order = 2;
    o->unipc_variant = DDPM_UNIPC_BH2;
    o->step.prediction = DDPM_PRED_EPS;
    o->step.variance = DDPM_VAR_SMALL;
    o->threshold_ratio = 0.995f;
    o->threshold_max = 1.0f;
    o->seed = 0;
}

int ddpm_sample_num_steps(const ddpm_schedule *s, const ddpm_sample_opts *o) {
    return o->sampler == DDPM_SAMPLER_DDPM ? s->n - s->t0 : o->steps;
}

/* DDPM and DDIM end at x_0 (abar = 1); the sigma-space samplers at their final sigma. */
static int is_sigma_sampler(ddpm_sampler sm) {
    return sm != DDPM_SAMPLER_DDPM && sm != DDPM_SAMPLER_DDIM;
}

int ddpm_sample_timesteps(const ddpm_schedule *s, const ddpm_sample_opts *o, int *ts,
                          double *sigmas) {
    if ((int)o->sampler < 0 || o->sampler >= DDPM_SAMPLER_COUNT)
        return ddpm_fail(DDPM_ERR_INVALID, "unknown sampler %d", (int)o->sampler);
    const int K = ddpm_sample_num_steps(s, o);
    if (o->sampler == DDPM_SAMPLER_DDPM) {
        for (int k = 0; k < K; k++) ts[k] = s->n - 1 - k;
    } else {
        int rc = ddpm_timesteps(s, K, o->spacing, ts);
        if (rc) return rc;
        /* diffusers' steps_offset moves leading timesteps only (its set_timesteps) */
        if (o->steps_offset != 0 && o->spacing == DDPM_SPACING_LEADING) {
            if (o->steps_offset < 0 || ts[0] + o->steps_offset >= s->n)
                return ddpm_fail(DDPM_ERR_INVALID,
                                 "steps_offset %d moves the first of %d leading timesteps (%d) "
                                 "past the schedule's last step %d", o->steps_offset, K, ts[0],
                                 s->n - 1);
            for (int k = 0; k < K; k++) ts[k] += o->steps_offset;
        }
    }
    if (sigmas) {
        for (int k = 0; k < K; k++) sigmas[k] = ddpm_sigma(s, ts[k]);
        sigmas[K] = is_sigma_sampler(o->sampler) && o->final_sigma == DDPM_FINAL_SIGMA_MIN
                        ? ddpm_sigma(s, s->t0)
                        : 0.0;
    }
    return DDPM_OK;
}

int ddpm_sample_num_evals(const ddpm_schedule *s, const ddpm_sample_opts *o) {
    const int K = ddpm_sample_num_steps(s, o);
    if (o->sampler != DDPM_SAMPLER_HEUN) return K;
    int *ts = ddpm_alloc(K > 0 ? (size_t)K : 1, sizeof(int));
    double *sig = ddpm_alloc((size_t)(K > 0 ? K : 0) + 1, sizeof(double));
    int evals = -1;
    if (ts && sig && ddpm_sample_timesteps(s, o, ts, sig) == DDPM_OK) {
        evals = K;
        /* The samplers' rule: a correction for every step that moves to a sigma above 0. */
        for (int k = 0; k < K; k++) evals += sig[k + 1] > 0.0 && sig[k + 1] < sig[k];
    }
    free(ts);
    free(sig);
    return evals;
}

void ddpm_sample_draw_init(const ddpm_sample_opts *o, int B, size_t d, float *x) {
    for (int i = 0; i < B; i++)
        ddpm_randn(o->seed, DDPM_STREAM_SAMPLE_INIT, o->first_item + (uint64_t)i, 0,
                   x + (size_t)i * d, d);
}

void ddpm_sample_draw_noise(const ddpm_sample_opts *o, int t, int B, size_t d, float *noise) {
    /* Philox + Box-Muller is compute bound (tens of ns a number): worth threads at a much
     * smaller size than the memory-bound steps. */
#pragma omp parallel for schedule(static) if ((size_t)B * d > 8192 && B > 1)
    for (int i = 0; i < B; i++)
        ddpm_randn(o->seed, DDPM_STREAM_SAMPLE_STEP, o->first_item + (uint64_t)i, (uint32_t)t,
                   noise + (size_t)i * d, d);
}

int ddpm_sample_check_finite(const char *what, const ddpm_sample_opts *o, int k, int K, int t,
                             const float *x, int B, size_t d) {
    /* one pass over the batch per step: cheap beside the network call that precedes it */
    const size_t n = (size_t)B * d;
    size_t i = 0;
    while (i < n && isfinite(x[i])) i++;
    if (i == n) return DDPM_OK;
    return ddpm_fail(DDPM_ERR_NUMERIC,
                     "%s%s: item %llu holds %s after step %d of %d (t = %d): the network's output "
                     "is not finite or too large (a diverged model?), or the guidance or eta is too "
                     "large", what ? "" : "sampler ", what ? what : ddpm_sampler_name(o->sampler),
                     (unsigned long long)(o->first_item + i / d),
                     isnan(x[i]) ? "NaN" : "an infinity", k, K, t);
}

int ddpm_sample_loop(const ddpm_schedule *s, const ddpm_sample_opts *o, ddpm_denoise_fn f,
                     void *ctx, int B, size_t d, float *x) {
    if (B < 1 || d < 1) return ddpm_fail(DDPM_ERR_INVALID, "nothing to sample (B=%d, d=%zu)", B, d);
    if ((int)o->sampler < 0 || o->sampler >= DDPM_SAMPLER_COUNT)
        return ddpm_fail(DDPM_ERR_INVALID, "unknown sampler %d", (int)o->sampler);
    if (is_sigma_sampler(o->sampler)) return ddpm_sample_loop_sigma(s, o, f, ctx, B, d, x);
    /* zero terminal SNR (the sigma-space samplers refuse its infinite sigma themselves) */
    if (s->alphas_cumprod[s->n - 1] == 0.0f) {
        if (o->step.prediction == DDPM_PRED_EPS)
            return ddpm_fail(DDPM_ERR_INVALID,
                             "an eps network cannot give x_0 where abar = 0 (the last step of a "
                             "zero-terminal-SNR schedule): train with --prediction v or x0");
    }
    if (ddpm_sample_check_threshold(o)) return DDPM_ERR_INVALID;
    const size_t n = ddpm_size_mul((size_t)B, d);
    const int ddim = o->sampler == DDPM_SAMPLER_DDIM;
    /* above 1 the step's noise would exceed its variance (1 - abar_prev - sigma^2 < 0) */
    if (ddim && !(o->eta >= 0.0f && o->eta <= 1.0f))
        return ddpm_fail(DDPM_ERR_INVALID, "DDIM's eta must be in [0, 1] (got %g)", o->eta);
    const int K = ddpm_sample_num_steps(s, o);
    int *ts = ddpm_alloc((size_t)K > 0 ? (size_t)K : 1, sizeof(int));
    float *out = ddpm_alloc_aligned(n, sizeof(float));
    float *x0 = ddpm_alloc_aligned(n, sizeof(float));
    float *noise = ddpm_alloc_aligned(n, sizeof(float));
    float *scratch = o->threshold ? ddpm_alloc(d, sizeof(float)) : NULL;
    /* DDIMScheduler thresholds x_0 and keeps the network's eps: that eps, before thresholding */
    const int eps_kept = ddim && o->threshold && o->step.ddim_keep_eps;
    float *eps_net = eps_kept ? ddpm_alloc_aligned(n, sizeof(float)) : NULL;
    int rc = (!ts || !out || !x0 || !noise || (o->threshold && !scratch) || (eps_kept && !eps_net))
                 ? DDPM_ERR_NOMEM
                 : DDPM_OK;
    if (!rc) rc = ddpm_sample_timesteps(s, o, ts, NULL);
    /* With thresholding the steps get the thresholded x_0 as an x_0 prediction. Clipping it
     * changes no value (it lies in [-1, 1]) but gives DDPM's step the posterior mean of that
     * x_0, as with plain clipping. */
    ddpm_step_opts step = o->step;
    if (o->threshold) step.prediction = DDPM_PRED_X0, step.clip_x0 = 1, step.clip_range = 1.0f;
    if (!rc && (o->first_step < 0 || o->first_step >= K || (o->first_step > 0 && !o->x_is_init)))
        rc = ddpm_fail(DDPM_ERR_INVALID,
                       "the first step (%d) must be in 0..%d, and above 0 only with a given x_t",
                       o->first_step, K - 1);
    if (!rc && !o->x_is_init) ddpm_sample_draw_init(o, B, d, x);
    for (int k = o->first_step; !rc && k < K; k++) {
        const int t = ts[k];
        int t_prev = k + 1 < K ? ts[k + 1] : s->t0 - 1;
        if (ddim && o->ddim_prev_by_ratio) t_prev = t - (s->n - s->t0) / K;
        rc = f(ctx, x, B, t, k > o->first_step ? x0 : NULL, out);
        if (rc) break;
        if (eps_kept)
            ddpm_split_prediction(s, o->step.prediction, x, out, (int[]){t}, 1, n, 0, eps_net, NULL);
        if (o->threshold) ddpm_predict_x0(s, o, t, x, out, B, d, out, scratch);
        int need_noise = ddim ? (o->eta > 0.0f && (t_prev >= s->t0 || o->ddim_final_abar_t0))
                              : (t > s->t0 && !o->step.no_noise);
        if (need_noise) ddpm_sample_draw_noise(o, t, B, d, noise);
        if (ddim) {
            const double ab_prev = t_prev >= s->t0          ? s->alphas_cumprod[t_prev]
                                   : o->ddim_final_abar_t0 ? s->alphas_cumprod[s->t0]
                                                           : 1.0;
            ddim_step_to(s, &step, t, ab_prev, o->eta, x, out, eps_kept ? eps_net : NULL, noise,
                         B, d, x, x0);
        } else {
            ddpm_step_ddpm(s, &step, t, x, out, noise, B, d, x, x0);
        }
        rc = ddpm_sample_check_finite(NULL, o, k + 1, K, t, x, B, d);
        if (!rc && o->progress && o->progress(o->progress_ctx, k + 1, K, t, x, x0))
            rc = ddpm_fail(DDPM_ERR_INTERRUPTED, "sampling stopped at step %d of %d", k + 1, K);
    }
    free(ts);
    free(out);
    free(x0);
    free(noise);
    free(scratch);
    free(eps_net);
    return rc;
}

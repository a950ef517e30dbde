/* learned_variance.c - learned reverse-process variances (Nichol & Dhariwal 2021, "Improved
 * Denoising Diffusion Probabilistic Models", improved-diffusion's learn_sigma): the "learned
 * range" interpolation between the posterior variance and beta in the log domain, the
 * variational-bound term L_t of the hybrid loss L_simple + lambda L_vlb with the mean's gradient
 * stopped (so only the variance channels learn from it), and the DDPM step with that variance.
 * The formulas are improved-diffusion's (normal_kl, discretized_gaussian_log_likelihood with its
 * tanh approximation of the normal CDF, _vb_terms_bpd), in double. */
#include "core/internal.h"

#include <math.h>

/* min_log, max_log of step t: the clipped log posterior variance and log beta. */
static void log_range(const ddpm_schedule *s, int t, double *lo, double *hi) {
    *lo = s->posterior_log_variance_clipped[t];
    *hi = log(s->betas_f64[t]);
}

void ddpm_learned_log_variance(const ddpm_schedule *s, const float *v, const int *t, int B,
                               size_t d, float *log_var) {
    for (int i = 0; i < B; i++) {
        double lo, hi;
        log_range(s, t[i], &lo, &hi);
        for (size_t j = 0; j < d; j++) {
            const double frac = (v[(size_t)i * d + j] + 1.0) / 2.0;
            log_var[(size_t)i * d + j] = (float)(frac * hi + (1.0 - frac) * lo);
        }
    }
}

/* improved-diffusion's approx_standard_normal_cdf and its derivative. */
static const double GELU_K = 0.7978845608028654; /* sqrt(2 / pi) */
static double approx_cdf(double u) {
    return 0.5 * (1.0 + tanh(GELU_K * (u + 0.044715 * u * u * u)));
}
static double approx_pdf(double u) {
    const double th = tanh(GELU_K * (u + 0.044715 * u * u * u));
    return 0.5 * (1.0 - th * th) * GELU_K * (1.0 + 3.0 * 0.044715 * u * u);
}

/* log p(x) of the 8-bit bin of x under N(mean, exp(2 ls)) (the edge bins open-ended), and its
 * derivative in ls; as discretized_gaussian_log_likelihood, with its clamps at 1e-12. */
static double bin_log_prob(double x, double mean, double ls, double *dls) {
    const double inv = exp(-ls), c = x - mean;
    const double up = inv * (c + 1.0 / 255.0), dn = inv * (c - 1.0 / 255.0);
    /* d up / d ls = -up, d dn / d ls = -dn */
    if (x < -0.999) {
        const double p = approx_cdf(up);
        *dls = p > 1e-12 ? approx_pdf(up) * -up / p : 0.0;
        return log(p > 1e-12 ? p : 1e-12);
    }
    if (x > 0.999) {
        const double p = 1.0 - approx_cdf(dn);
        *dls = p > 1e-12 ? -approx_pdf(dn) * -dn / p : 0.0;
        return log(p > 1e-12 ? p : 1e-12);
    }
    const double p = approx_cdf(up) - approx_cdf(dn);
    *dls = p > 1e-12 ? (approx_pdf(up) * -up - approx_pdf(dn) * -dn) / p : 0.0;
    return log(p > 1e-12 ? p : 1e-12);
}

void ddpm_vlb_terms(const ddpm_schedule *s, ddpm_prediction p, const float *x0, const float *xt,
                    const float *model_out, const float *v, const int *t, int B, size_t d,
                    float *vb, float *dvb_dv) {
    float mean[256], x0_hat[256], true_mean[256];
    const double inv_d_ln2 = 1.0 / ((double)d * log(2.0));
    for (int i = 0; i < B; i++) {
        const int ti = t[i];
        DDPM_CHECK(ti >= s->t0 && ti < s->n);
        double lo, hi;
        log_range(s, ti, &lo, &hi);
        const double true_lv = s->posterior_log_variance_clipped[ti];
        double acc = 0.0;
        for (size_t j0 = 0; j0 < d; j0 += 256) {
            const size_t len = d - j0 < 256 ? d - j0 : 256, off = (size_t)i * d + j0;
            /* The model's mean: the posterior mean of its (unclipped) x_0 estimate; constant
             * here (stop-gradient), as improved-diffusion's frozen_out. */
            ddpm_split_prediction(s, p, xt + off, model_out + off, &ti, 1, len, 0, NULL, x0_hat);
            ddpm_q_posterior(s, x0_hat, xt + off, &ti, 1, len, mean, NULL, NULL);
            ddpm_q_posterior(s, x0 + off, xt + off, &ti, 1, len, true_mean, NULL, NULL);
            for (size_t j = 0; j < len; j++) {
                const double frac = (v[off + j] + 1.0) / 2.0;
                const double lv = frac * hi + (1.0 - frac) * lo, dlv_dv = 0.5 * (hi - lo);
                double term, dterm_dlv;
                if (ti == s->t0) {
                    /* the decoder: -log p(x_0 | x_1) of x_0's 8-bit bin, log scale lv / 2 */
                    double dls;
                    term = -bin_log_prob(x0[off + j], mean[j], 0.5 * lv, &dls);
                    dterm_dlv = -0.5 * dls;
                } else {
                    /* KL(q(x_{t-1} | x_t, x_0) || p(x_{t-1} | x_t)) of two Gaussians */
                    const double dm = (double)true_mean[j] - mean[j];
                    term = 0.5 * (-1.0 + lv - true_lv + exp(true_lv - lv) + dm * dm * exp(-lv));
                    dterm_dlv = 0.5 * (1.0 - exp(true_lv - lv) - dm * dm * exp(-lv));
                }
                acc += term;
                if (dvb_dv) dvb_dv[off + j] = (float)(dterm_dlv * dlv_dv * inv_d_ln2);
            }
        }
        vb[i] = (float)(acc * inv_d_ln2);
    }
}

void ddpm_step_ddpm_learned(const ddpm_schedule *s, const ddpm_step_opts *o, int t,
                            const float *xt, const float *model_out, const float *v,
                            const float *noise, int B, size_t d, float *x_prev, float *x0_out) {
    /* The mean exactly as the DDPM step computes it (clipping included), then the noise at the
     * learned standard deviation (none at the last step). */
    ddpm_step_opts mean_only = *o;
    mean_only.no_noise = 1;
    ddpm_step_ddpm(s, &mean_only, t, xt, model_out, NULL, B, d, x_prev, x0_out);
    if (t == s->t0 || o->no_noise) return;
    DDPM_CHECK(noise != NULL);
    double lo, hi;
    log_range(s, t, &lo, &hi);
    for (size_t k = 0; k < (size_t)B * d; k++) {
        const double frac = (v[k] + 1.0) / 2.0;
        x_prev[k] += (float)exp(0.5 * (frac * hi + (1.0 - frac) * lo)) * noise[k];
    }
}

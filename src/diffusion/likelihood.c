/* likelihood.c - the variational bound on the negative log-likelihood in bits per dimension (Ho
 * et al. 2020, eq. 5; as improved-diffusion's calc_bpd_loop): the prior term KL(q(x_T | x_0) ||
 * N(0, I)), for t > t0 the KL between the true posterior q(x_{t-1} | x_t, x_0) and the model's
 * p(x_{t-1} | x_t), and at t0 the discretized Gaussian decoder's -log p(x_0 | x_1) over 256
 * bins. Everything in double; the network is the sampler's callback. */
#include "core/internal.h"

#include <math.h>

double ddpm_normal_kl(double mean1, double logvar1, double mean2, double logvar2) {
    return 0.5 * (-1.0 + logvar2 - logvar1 + exp(logvar1 - logvar2) +
                  (mean1 - mean2) * (mean1 - mean2) * exp(-logvar2));
}

/* the tanh approximation of the standard normal CDF the DDPM code uses (kept for equal figures) */
static double approx_cdf(double x) {
    return 0.5 * (1.0 + tanh(sqrt(2.0 / M_PI) * (x + 0.044715 * x * x * x)));
}

double ddpm_discretized_gaussian_log_likelihood(double x, double mean, double log_scale) {
    const double c = x - mean, inv = exp(-log_scale);
    const double cdf_plus = approx_cdf(inv * (c + 1.0 / 255.0));
    const double cdf_min = approx_cdf(inv * (c - 1.0 / 255.0));
    if (x < -0.999) return log(fmax(cdf_plus, 1e-12));        /* the lowest bin reaches -inf */
    if (x > 0.999) return log(fmax(1.0 - cdf_min, 1e-12));    /* the highest, +inf */
    return log(fmax(cdf_plus - cdf_min, 1e-12));
}

/* The model's log variance at step t: the clipped posterior one ("small") or log beta_t ("large",
 * whose first entry is the posterior variance of the next step, as improved-diffusion). */
static double model_log_var(const ddpm_schedule *s, ddpm_variance v, int t) {
    if (v == DDPM_VAR_SMALL) return s->posterior_log_variance_clipped[t];
    return t == s->t0 ? log(s->posterior_variance[s->t0 + 1]) : log(s->betas_f64[t]);
}

int ddpm_vb_terms_bpd(const ddpm_schedule *s, ddpm_prediction pred, ddpm_variance var, int clip,
                      int t, const float *x0, const float *xt, const float *model_out, int B,
                      size_t d, double *out) {
    if (t < s->t0 || t >= s->n || s->n - s->t0 < 2)
        return ddpm_fail(DDPM_ERR_INVALID, "vb terms: step %d outside %d..%d", t, s->t0, s->n - 1);
    const size_t n = (size_t)B * d;
    float *x0_hat = ddpm_alloc(n, sizeof(float)), *mean_m = ddpm_alloc(n, sizeof(float));
    float *mean_q = ddpm_alloc(n, sizeof(float)), *lv_q = ddpm_alloc((size_t)B, sizeof(float));
    int *ts = ddpm_alloc((size_t)B, sizeof(int));
    int rc = x0_hat && mean_m && mean_q && lv_q && ts ? DDPM_OK : DDPM_ERR_NOMEM;
    if (!rc) {
        for (int i = 0; i < B; i++) ts[i] = t;
        ddpm_split_prediction(s, pred, xt, model_out, ts, B, d, clip, NULL, x0_hat);
        ddpm_q_posterior(s, x0_hat, xt, ts, B, d, mean_m, NULL, NULL);
        ddpm_q_posterior(s, x0, xt, ts, B, d, mean_q, NULL, lv_q);
        const double lv_m = model_log_var(s, var, t);
        for (int i = 0; i < B; i++) {
            double acc = 0;
            for (size_t j = 0; j < d; j++) {
                const size_t k = (size_t)i * d + j;
                acc += t == s->t0 ? -ddpm_discretized_gaussian_log_likelihood(x0[k], mean_m[k], 0.5 * lv_m)
                                  : ddpm_normal_kl(mean_q[k], lv_q[i], mean_m[k], lv_m);
            }
            out[i] = acc / (double)d / M_LN2;
        }
    }
    free(x0_hat), free(mean_m), free(mean_q), free(lv_q), free(ts);
    return rc;
}

void ddpm_prior_bpd(const ddpm_schedule *s, const float *x0, int B, size_t d, double *out) {
    const int T = s->n - 1;
    const double a = s->sqrt_alphas_cumprod[T], lv = s->log_one_minus_alphas_cumprod[T];
    for (int i = 0; i < B; i++) {
        double acc = 0;
        for (size_t j = 0; j < d; j++) acc += ddpm_normal_kl(a * x0[(size_t)i * d + j], lv, 0.0, 0.0);
        out[i] = acc / (double)d / M_LN2;
    }
}

int ddpm_nll_bpd(const ddpm_schedule *s, ddpm_prediction pred, ddpm_variance var, int clip,
                 ddpm_denoise_fn f, void *ctx, const float *x0, int B, size_t d, uint64_t seed,
                 uint64_t first_item, double *bpd, double *prior) {
    const size_t n = (size_t)B * d;
    float *eps = ddpm_alloc(n, sizeof(float)), *xt = ddpm_alloc(n, sizeof(float));
    float *out = ddpm_alloc(n, sizeof(float));
    double *term = ddpm_alloc((size_t)B, sizeof(double));
    int *ts = ddpm_alloc((size_t)B, sizeof(int));
    int rc = eps && xt && out && term && ts ? DDPM_OK : DDPM_ERR_NOMEM;
    if (!rc) {
        ddpm_prior_bpd(s, x0, B, d, bpd);
        if (prior)
            for (int i = 0; i < B; i++) prior[i] = bpd[i];
    }
    for (int t = s->n - 1; !rc && t >= s->t0; t--) {
        for (int i = 0; i < B; i++) {
            ts[i] = t;
            ddpm_randn(seed, DDPM_STREAM_EVAL, first_item + (uint64_t)i, (uint32_t)t + 1000000u,
                       eps + (size_t)i * d, d);
        }
        ddpm_q_sample(s, x0, eps, ts, B, d, xt);
        if ((rc = f(ctx, xt, B, t, NULL, out))) break;
        if ((rc = ddpm_vb_terms_bpd(s, pred, var, clip, t, x0, xt, out, B, d, term))) break;
        for (int i = 0; i < B; i++) bpd[i] += term[i];
    }
    free(eps), free(xt), free(out), free(term), free(ts);
    return rc;
}

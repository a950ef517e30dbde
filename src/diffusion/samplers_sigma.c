/* samplers_sigma.c - the samplers that work in sigma space on the discrete schedule (sigma_t =
 * sqrt((1 - abar_t) / abar_t), x_ve = x_0 + sigma eps = x_t / sqrt(abar_t), as k-diffusion and
 * diffusers' Euler/Heun schedulers do): Euler, Euler ancestral and Heun (Karras et al. 2022), the
 * x_0 estimate with clipping or dynamic thresholding, and the loop that drives them,
 * DPM-Solver++ (samplers_dpm.c) and UniPC (samplers_unipc.c). The loop keeps x in the usual scale x_t, so the network, the
 * progress callback and x_T are the same as for DDIM. */
#include "diffusion/sampling_internal.h"

#include <math.h>

/* ---- x_0 estimates -------------------------------------------------------------------------- */

static int cmp_float(const void *a, const void *b) {
    const float x = *(const float *)a, y = *(const float *)b;
    return (x > y) - (x < y);
}

void ddpm_threshold_x0(float *x0, int B, size_t d, float ratio, float max_value, float *scratch) {
    DDPM_CHECK(ratio > 0.0f && ratio <= 1.0f && max_value >= 1.0f && d > 0);
    for (int i = 0; i < B; i++) {
        float *xi = x0 + (size_t)i * d;
        for (size_t j = 0; j < d; j++) scratch[j] = fabsf(xi[j]);
        qsort(scratch, d, sizeof *scratch, cmp_float);
        /* torch.quantile: linear interpolation between the order statistics around ratio (d - 1). */
        const double pos = (double)ratio * (double)(d - 1);
        const size_t lo = (size_t)pos, hi = lo + 1 < d ? lo + 1 : lo;
        const double q = scratch[lo] + (pos - (double)lo) * (scratch[hi] - scratch[lo]);
        const float th = (float)(q < 1.0 ? 1.0 : q > max_value ? max_value : q);
        for (size_t j = 0; j < d; j++) xi[j] = fminf(fmaxf(xi[j], -th), th) / th;
    }
}

void ddpm_predict_x0(const ddpm_schedule *s, const ddpm_sample_opts *o, int t, const float *xt,
                     const float *model_out, int B, size_t d, float *x0, float *scratch) {
    for (int i = 0; i < B; i++)
        ddpm_split_prediction_range(s, o->step.prediction, xt + (size_t)i * d,
                                    model_out + (size_t)i * d, &t, 1, d,
                                    o->threshold ? 0.0f : ddpm_step_clip(&o->step), 0, NULL,
                                    x0 + (size_t)i * d);
    if (o->threshold) ddpm_threshold_x0(x0, B, d, o->threshold_ratio, o->threshold_max, scratch);
}

int ddpm_sample_check_threshold(const ddpm_sample_opts *o) {
    if (o->threshold && !(o->threshold_ratio > 0.0f && o->threshold_ratio <= 1.0f &&
                          o->threshold_max >= 1.0f))
        return ddpm_fail(DDPM_ERR_INVALID, "dynamic thresholding needs a ratio in (0, 1] and a "
                         "max value >= 1 (got %g and %g)", o->threshold_ratio, o->threshold_max);
    return DDPM_OK;
}

/* ---- one step ------------------------------------------------------------------------------ */

/* alpha = sqrt(abar) = 1 / sqrt(1 + sigma^2): x_t = alpha x_ve. */
static double alpha_of(double sigma) { return 1.0 / sqrt(1.0 + sigma * sigma); }

void ddpm_step_euler(double sigma, double sigma_next, const float *x, const float *x0, size_t n,
                     float *x_next) {
    DDPM_CHECK(sigma > 0.0 && sigma_next >= 0.0 && sigma_next <= sigma);
    /* x_ve' = x_ve + (sigma' - sigma) (x_ve - x0) / sigma = (sigma'/sigma) x_ve + (1 - sigma'/sigma)
     * x0, in the x_t scale: x' = alpha' x_ve'. */
    const double r = sigma_next / sigma, a = alpha_of(sigma), an = alpha_of(sigma_next);
    const float cx = (float)(an * r / a), c0 = (float)(an * (1.0 - r));
#pragma omp parallel for schedule(static) if (n > 65536)
    for (size_t i = 0; i < n; i++) x_next[i] = cx * x[i] + c0 * x0[i];
}

void ddpm_step_euler_ancestral(double sigma, double sigma_next, const float *x, const float *x0,
                               const float *noise, size_t n, float *x_next) {
    DDPM_CHECK(sigma > 0.0 && sigma_next >= 0.0 && sigma_next <= sigma);
    double up = sqrt(sigma_next * sigma_next * (sigma * sigma - sigma_next * sigma_next) /
                     (sigma * sigma));
    if (up > sigma_next) up = sigma_next;
    const double down = sqrt(sigma_next * sigma_next - up * up);
    const double r = down / sigma, a = alpha_of(sigma), an = alpha_of(sigma_next);
    const float cx = (float)(an * r / a), c0 = (float)(an * (1.0 - r)), cz = (float)(an * up);
    DDPM_CHECK(cz == 0.0f || noise != NULL);
#pragma omp parallel for schedule(static) if (n > 65536)
    for (size_t i = 0; i < n; i++) {
        float v = cx * x[i] + c0 * x0[i];
        if (cz != 0.0f) v += cz * noise[i];
        x_next[i] = v;
    }
}

void ddpm_step_heun(double sigma, double sigma_next, const float *x, const float *x0,
                    const float *x0_pred, size_t n, float *x_next) {
    DDPM_CHECK(sigma > 0.0 && sigma_next > 0.0 && sigma_next <= sigma);
    const double a = alpha_of(sigma), an = alpha_of(sigma_next), dt = sigma_next - sigma;
#pragma omp parallel for schedule(static) if (n > 65536)
    for (size_t i = 0; i < n; i++) {
        const double xv = x[i] / a;
        const double dx = (xv - x0[i]) / sigma;
        const double x2 = xv + dt * dx;
        const double dx2 = (x2 - x0_pred[i]) / sigma_next;
        x_next[i] = (float)(an * (xv + dt * 0.5 * (dx + dx2)));
    }
}

/* ---- the loop -------------------------------------------------------------------------------- */

/* The order of DPM-Solver++'s step k of K, as diffusers picks it: first order until there is a
 * history, and, with lower_order_final below 15 steps, first and second order at the last two
 * steps (few-step runs are more stable so); always first order for the step to sigma 0 (the
 * higher-order terms divide by h, which is infinite there). */
static int dpm_order(const ddpm_sample_opts *o, int max_order, int k, int K, double sigma_next) {
    const int small = o->lower_order_final && K < 15;
    const int hist = k - o->first_step; /* earlier x_0 estimates of this run */
    if (hist < 1 || (k == K - 1 && (small || sigma_next == 0.0))) return 1;
    if (max_order == 2 || hist < 2 || (k == K - 2 && small)) return 2;
    return 3;
}

/* UniPC's predictor order at step k of K, as diffusers' UniPCMultistepScheduler: the configured
 * order, lower while the history is short (warm-up), and with lower_order_final min(order, K - k)
 * at every K (diffusers has no 15-step threshold here); always first order for the step to sigma
 * 0, where h is infinite (diffusers without lower_order_final would give NaN there). */
static int unipc_order(const ddpm_sample_opts *o, int k, int K, double sigma_next) {
    int order = o->unipc_order;
    const int hist = k - o->first_step + 1;
    if (order > hist) order = hist;
    if (o->lower_order_final && order > K - k) order = K - k;
    return sigma_next == 0.0 ? 1 : order;
}

int ddpm_sample_loop_sigma(const ddpm_schedule *s, const ddpm_sample_opts *o, ddpm_denoise_fn f,
                           void *ctx, int B, size_t d, float *x) {
    const ddpm_sampler sm = o->sampler;
    const int dpm = sm == DDPM_SAMPLER_DPMPP_2M || sm == DDPM_SAMPLER_DPMPP_2M_SDE ||
                    sm == DDPM_SAMPLER_DPMPP_3M;
    const int unipc = sm == DDPM_SAMPLER_UNIPC;
    const int max_order = sm == DDPM_SAMPLER_DPMPP_3M ? 3 : 2;
    if (unipc && (o->unipc_order < 1 || o->unipc_order > 3))
        return ddpm_fail(DDPM_ERR_INVALID, "the UniPC order must be 1, 2 or 3 (got %d)",
                         o->unipc_order);
    if (unipc && (int)o->unipc_variant != DDPM_UNIPC_BH1 && o->unipc_variant != DDPM_UNIPC_BH2)
        return ddpm_fail(DDPM_ERR_INVALID, "unknown UniPC variant %d", (int)o->unipc_variant);
    /* x_0 estimates kept: the multistep history (UniPC's corrector of order p also needs the one
     * p steps back besides the new one). */
    const int n_hist = dpm ? max_order : unipc ? o->unipc_order + 1 : 1;
    const int noisy = sm == DDPM_SAMPLER_DPMPP_2M_SDE || sm == DDPM_SAMPLER_EULER_ANCESTRAL;
    const int heun = sm == DDPM_SAMPLER_HEUN;
    const int K = o->steps;
    const size_t n = ddpm_size_mul((size_t)B, d);
    if (K < 1 || K > s->n - s->t0)
        return ddpm_fail(DDPM_ERR_INVALID, "number of sampling steps must be in 1..%d (got %d)",
                         s->n - s->t0, K);
    if (ddpm_sample_check_threshold(o)) return DDPM_ERR_INVALID;
    int *ts = ddpm_alloc((size_t)K, sizeof(int));
    double *sig = ddpm_alloc((size_t)K + 1, sizeof(double));
    float *out = ddpm_alloc_aligned(n, sizeof(float));
    float *hist[4] = {NULL, NULL, NULL, NULL}; /* up to UniPC-3's four estimates */
    int rc = ts && sig && out ? DDPM_OK : DDPM_ERR_NOMEM;
    for (int j = 0; j < n_hist; j++)
        if (!(hist[j] = ddpm_alloc_aligned(n, sizeof(float)))) rc = DDPM_ERR_NOMEM;
    float *noise = noisy ? ddpm_alloc_aligned(n, sizeof(float)) : NULL;
    float *xp = heun ? ddpm_alloc_aligned(n, sizeof(float)) : NULL;
    float *x0p = heun ? ddpm_alloc_aligned(n, sizeof(float)) : NULL;
    float *scratch = o->threshold ? ddpm_alloc(d, sizeof(float)) : NULL;
    float *last = unipc ? ddpm_alloc_aligned(n, sizeof(float)) : NULL; /* x before UniP's step */
    int last_order = 0;                                               /* ... and its order */
    if ((noisy && !noise) || (heun && (!xp || !x0p)) || (o->threshold && !scratch) ||
        (unipc && !last))
        rc = DDPM_ERR_NOMEM;
    if (!rc) rc = ddpm_sample_timesteps(s, o, ts, sig);
    for (int k = 0; !rc && k < K; k++)
        if (!isfinite(sig[k]))
            rc = ddpm_fail(DDPM_ERR_INVALID, "the schedule's sigma at t = %d is not finite (abar "
                           "is 0 there: a zero-terminal-SNR schedule): sample with ddpm or ddim",
                           ts[k]);
        else if (!(sig[k + 1] < sig[k] || (k == K - 1 && sig[k + 1] == sig[k])))
            rc = ddpm_fail(DDPM_ERR_INVALID,
                           "the schedule's noise levels at t = %d and the next step are not "
                           "distinct (%g, %g)", ts[k], sig[k], sig[k + 1]);
    if (!rc && (o->first_step < 0 || o->first_step >= K || (o->first_step > 0 && !o->x_is_init)))
        rc = ddpm_fail(DDPM_ERR_INVALID,
                       "the first step (%d) must be in 0..%d, and above 0 only with a given x_t",
                       o->first_step, K - 1);
    if (!rc && !o->x_is_init) ddpm_sample_draw_init(o, B, d, x);
    for (int k = o->first_step; !rc && k < K; k++) {
        const int t = ts[k];
        const double sg = sig[k], sn = sig[k + 1];
        float *x0 = hist[k % n_hist];
        rc = f(ctx, x, B, t, k > o->first_step ? hist[(k - 1) % n_hist] : NULL, out);
        if (rc) break;
        ddpm_predict_x0(s, o, t, x, out, B, d, x0, scratch);
        if (noisy && sn > 0.0) ddpm_sample_draw_noise(o, t, B, d, noise);
        if (unipc) {
            double sj[3];
            const float *mj[3];
            if (last_order > 0) {
                /* UniC: redo the last step from the sample before it, with the estimate at the
                 * predicted x (this step's network call, which is also the history's entry). */
                for (int j = 0; j < last_order; j++) {
                    sj[j] = sig[k - 1 - j];
                    mj[j] = hist[(k - 1 - j) % n_hist];
                }
                ddpm_step_unipc_correct(last_order, o->unipc_variant, sj, sg, last, mj, x0, n, x);
            }
            const int order = unipc_order(o, k, K, sn);
            for (int j = 0; j < order; j++) {
                sj[j] = sig[k - j];
                mj[j] = hist[(k - j) % n_hist];
            }
            memcpy(last, x, n * sizeof(float));
            ddpm_step_unipc_predict(order, o->unipc_variant, sj, sn, x, mj, n, x);
            last_order = order;
        } else if (dpm) {
            const int order = dpm_order(o, max_order, k, K, sn);
            double sj[3];
            const float *mj[3];
            for (int j = 0; j < order; j++) {
                sj[j] = sig[k - j];
                mj[j] = hist[(k - j) % n_hist];
            }
            ddpm_step_dpmpp(order, o->solver_type, sm == DDPM_SAMPLER_DPMPP_2M_SDE, sj, sn, x, mj,
                            noise, n, x);
        } else if (sm == DDPM_SAMPLER_EULER_ANCESTRAL) {
            ddpm_step_euler_ancestral(sg, sn, x, x0, noise, n, x);
        } else if (heun && sn > 0.0 && sn < sg) {
            /* The predictor lands on sigma_next, the noise level of the next step's t (or of t0
             * for the sigma-min ending), so the network is called at an integer t here too. */
            const int tn = k + 1 < K ? ts[k + 1] : s->t0;
            ddpm_step_euler(sg, sn, x, x0, n, xp);
            rc = f(ctx, xp, B, tn, x0, out);
            if (rc) break;
            ddpm_predict_x0(s, o, tn, xp, out, B, d, x0p, scratch);
            ddpm_step_heun(sg, sn, x, x0, x0p, n, x);
        } else {
            /* Euler, and Heun's last step to sigma 0 (Karras et al.'s Algorithm 1 does the same:
             * the correction would divide by sigma_next). */
            ddpm_step_euler(sg, sn, x, x0, n, x);
        }
        rc = ddpm_sample_check_finite(NULL, o, k + 1, K, t, x, B, d);
        if (!rc && o->progress && o->progress(o->progress_ctx, k + 1, K, t, x, x0))
            rc = ddpm_fail(DDPM_ERR_INTERRUPTED, "sampling stopped at step %d of %d", k + 1, K);
    }
    free(ts);
    free(sig);
    free(out);
    for (int j = 0; j < 4; j++) free(hist[j]);
    free(noise);
    free(xp);
    free(x0p);
    free(scratch);
    free(last);
    return rc;
}

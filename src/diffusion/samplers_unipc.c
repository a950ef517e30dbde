/* samplers_unipc.c - UniPC (Zhao et al. 2023, "UniPC: A Unified Predictor-Corrector Framework
 * for Fast Sampling of Diffusion Models"): the multistep predictor UniP and the corrector UniC in
 * the data-prediction form with B(h) = e^h - 1 (bh2) or h (bh1), as diffusers'
 * UniPCMultistepScheduler computes them. The loop that keeps the estimates, the sample before
 * each predictor step and the orders is in samplers_sigma.c. */
#include "core/internal.h"

#include <math.h>

/* Both updates are x' = cx x + sum_j c[j] x0[j] (+ ct x0_t) with coefficients fixed for the
 * step; computed in double once and applied in float. */
typedef struct {
    double cx, c[3], ct;
} unipc_coefs;

/* Solves the p x p system a rho = b (p <= 3) by Gaussian elimination with partial pivoting. The
 * systems are Vandermonde in distinct ratios r_i < 0 and 1, so they are never singular. */
static void solve_small(int p, double a[3][3], double *b, double *rho) {
    for (int c = 0; c < p; c++) {
        int piv = c;
        for (int r = c + 1; r < p; r++)
            if (fabs(a[r][c]) > fabs(a[piv][c])) piv = r;
        if (piv != c) {
            for (int j = 0; j < p; j++) {
                const double t = a[c][j];
                a[c][j] = a[piv][j], a[piv][j] = t;
            }
            const double t = b[c];
            b[c] = b[piv], b[piv] = t;
        }
        for (int r = c + 1; r < p; r++) {
            const double f = a[r][c] / a[c][c];
            for (int j = c; j < p; j++) a[r][j] -= f * a[c][j];
            b[r] -= f * b[c];
        }
    }
    for (int r = p - 1; r >= 0; r--) {
        double v = b[r];
        for (int j = r + 1; j < p; j++) v -= a[r][j] * rho[j];
        rho[r] = v / a[r][r];
    }
}

/* The coefficients of the predictor (corrector = 0) or the corrector of order p from sig[0]
 * (the estimates at sig[0..p-1]) to sigma_t in (0, sig[0]). */
static unipc_coefs unipc_coefficients(int p, ddpm_unipc_variant v, int corrector, const double *sig,
                                      double sigma_t) {
    unipc_coefs k = {0};
    const double a_t = 1.0 / sqrt(1.0 + sigma_t * sigma_t), s_t = sigma_t * a_t;
    const double s_0 = sig[0] / sqrt(1.0 + sig[0] * sig[0]);
    const double h = log(sig[0] / sigma_t); /* lambda_t - lambda_s0, lambda = -log sigma */
    const double hh = -h;                    /* data prediction integrates in -h */
    const double h_phi_1 = expm1(hh);
    const double B_h = v == DDPM_UNIPC_BH1 ? hh : h_phi_1;
    /* The ratios of the earlier steps (r_i < 0) and, last, 1 (the new estimate's). */
    double r[3];
    const int n_prev = p - 1;
    for (int i = 0; i < n_prev; i++) r[i] = log(sig[0] / sig[i + 1]) / h;
    r[n_prev] = 1.0;
    /* b_k = k! h phi_{k+1}(h) / B(h), by diffusers' recursion h phi_{k+1} = h phi_k / hh - 1 / k!. */
    double b[3], h_phi_k = h_phi_1 / hh - 1.0, fact = 1.0;
    for (int i = 1; i <= p; i++) {
        b[i - 1] = h_phi_k * fact / B_h;
        fact *= i + 1;
        h_phi_k = h_phi_k / hh - 1.0 / fact;
    }
    /* rho: the predictor uses the first p - 1 conditions on the earlier ratios (1/2 at p = 2, as
     * diffusers simplifies it), the corrector all p on the earlier ratios and 1 (1/2 at p = 1). */
    double rho[3] = {0, 0, 0};
    const int m = corrector ? p : p - 1;
    if (m == 1) {
        rho[0] = 0.5;
    } else if (m > 1) {
        double a[3][3], bb[3];
        for (int row = 0; row < m; row++) {
            bb[row] = b[row];
            for (int j = 0; j < m; j++) a[row][j] = pow(r[j], row);
        }
        solve_small(m, a, bb, rho);
    }
    /* x' = (s_t / s_0) x - a_t h_phi_1 m0 - a_t B_h (sum_{i<p-1} rho_i (m_{i+1} - m0) / r_i
     *      [+ rho_{p-1} (m_t - m0)] for the corrector). */
    k.cx = s_t / s_0;
    k.c[0] = -a_t * h_phi_1;
    const double g = -a_t * B_h;
    for (int i = 0; i < n_prev; i++) {
        k.c[i + 1] += g * rho[i] / r[i];
        k.c[0] -= g * rho[i] / r[i];
    }
    if (corrector) {
        k.ct = g * rho[p - 1];
        k.c[0] -= g * rho[p - 1];
    }
    return k;
}

static void apply(const unipc_coefs *k, int p, const float *x, const float *const *x0,
                  const float *x0_t, size_t n, float *out) {
    const float cx = (float)k->cx, c0 = (float)k->c[0], c1 = (float)k->c[1];
    const float c2 = (float)k->c[2], ct = (float)k->ct;
    const float *m0 = x0[0], *m1 = p > 1 ? x0[1] : NULL, *m2 = p > 2 ? x0[2] : NULL;
#pragma omp parallel for schedule(static) if (n > 65536)
    for (size_t i = 0; i < n; i++) {
        float v = cx * x[i] + c0 * m0[i];
        if (m1) v += c1 * m1[i];
        if (m2) v += c2 * m2[i];
        if (x0_t) v += ct * x0_t[i];
        out[i] = v;
    }
}

static void check_sigmas(int order, const double *sig) {
    DDPM_CHECK(order >= 1 && order <= 3 && sig[0] > 0.0);
    for (int j = 1; j < order; j++) DDPM_CHECK(sig[j] > sig[j - 1]);
}

void ddpm_step_unipc_predict(int order, ddpm_unipc_variant v, const double *sig,
                             double sigma_next, const float *x, const float *const *x0, size_t n,
                             float *x_next) {
    check_sigmas(order, sig);
    DDPM_CHECK(sigma_next >= 0.0 && sigma_next <= sig[0]);
    DDPM_CHECK(order == 1 || sigma_next > 0.0);
    if (sigma_next == 0.0) {
        /* h = infinity: x_t -> x0[0] (s_t = 0, alpha_t = 1, e^-h = 0). */
        if (x_next != x0[0]) memmove(x_next, x0[0], n * sizeof(float));
        return;
    }
    if (sigma_next == sig[0]) {
        /* h = 0 (a run ending at sigma_min whose last step is t0): nothing moves. */
        if (x_next != x) memmove(x_next, x, n * sizeof(float));
        return;
    }
    const unipc_coefs k = unipc_coefficients(order, v, 0, sig, sigma_next);
    apply(&k, order, x, x0, NULL, n, x_next);
}

void ddpm_step_unipc_correct(int order, ddpm_unipc_variant v, const double *sig, double sigma_t,
                             const float *x_last, const float *const *x0, const float *x0_t,
                             size_t n, float *x_corr) {
    check_sigmas(order, sig);
    DDPM_CHECK(sigma_t > 0.0 && sigma_t < sig[0]);
    const unipc_coefs k = unipc_coefficients(order, v, 1, sig, sigma_t);
    apply(&k, order, x_last, x0, x0_t, n, x_corr);
}

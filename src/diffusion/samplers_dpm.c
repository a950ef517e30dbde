/* samplers_dpm.c - DPM-Solver++ (Lu et al. 2022, "DPM-Solver++: Fast Solver for Guided Sampling of
 * Diffusion Probabilistic Models"): the multistep update of order 1, 2 (midpoint and Heun forms,
 * ODE and SDE) and 3, in the data-prediction form diffusers' DPMSolverMultistepScheduler uses.
 * The loop that keeps the previous x_0 estimates and picks the order is in samplers_sigma.c. */
#include "core/internal.h"

#include <math.h>

/* The step is x' = cx x + c[0] x0[0] + c[1] x0[1] + c[2] x0[2] + cz noise with coefficients
 * fixed for the step: the published update expanded over the x_0 estimates (D0, D1, D2 are
 * linear in them), computed in double once. */
typedef struct {
    double cx, c[3], cz;
} dpm_coefs;

static dpm_coefs dpm_coefficients(int order, ddpm_solver_type type, int sde, const double *sig,
                                  double sigma_next) {
    dpm_coefs k = {0};
    /* alpha = 1 / sqrt(1 + sigma^2), s = sigma alpha (the VP noise scale), lambda = -log sigma. */
    const double a_t = 1.0 / sqrt(1.0 + sigma_next * sigma_next), s_t = sigma_next * a_t;
    const double s_0 = sig[0] / sqrt(1.0 + sig[0] * sig[0]);
    const double h = log(sig[0] / sigma_next);
    if (!sde) {
        /* A = alpha_t (1 - e^-h): order 1 is x' = (s_t / s_0) x + A D0. */
        const double A = -a_t * expm1(-h);
        k.cx = s_t / s_0;
        if (order == 1) {
            k.c[0] = A;
        } else if (order == 2) {
            /* D1 = (1 / r0) (m0 - m1), 1 / r0 = h / h_0. Midpoint: - 0.5 alpha_t (e^-h - 1) D1;
             * Heun: + alpha_t ((e^-h - 1) / h + 1) D1. */
            const double inv_r0 = h / log(sig[1] / sig[0]);
            const double b = type == DDPM_SOLVER_MIDPOINT ? 0.5 * A : a_t * (expm1(-h) / h + 1.0);
            k.c[0] = A + b * inv_r0;
            k.c[1] = -b * inv_r0;
        } else {
            /* D1_0 = (m0 - m1) / r0, D1_1 = (m1 - m2) / r1, D1 = D1_0 + r0 / (r0 + r1) (D1_0 -
             * D1_1), D2 = (D1_0 - D1_1) / (r0 + r1);
             * x' = cx x + A D0 + alpha_t ((e^-h - 1) / h + 1) D1
             *          - alpha_t ((e^-h - 1 + h) / h^2 - 0.5) D2. */
            const double r0 = log(sig[1] / sig[0]) / h, r1 = log(sig[2] / sig[1]) / h;
            const double a = 1.0 / r0, bb = 1.0 / r1, p = r0 / (r0 + r1), q = 1.0 / (r0 + r1);
            const double Bc = a_t * (expm1(-h) / h + 1.0);
            const double C = a_t * ((expm1(-h) + h) / (h * h) - 0.5);
            k.c[0] = A + Bc * (1.0 + p) * a - C * q * a;
            k.c[1] = -Bc * (a + p * (a + bb)) + C * q * (a + bb);
            k.c[2] = Bc * p * bb - C * q * bb;
        }
    } else {
        /* The SDE: x' = (s_t / s_0) e^-h x + alpha_t (1 - e^-2h) D0 + ... + s_t sqrt(1 - e^-2h) z.
         * Second order: midpoint + 0.5 alpha_t (1 - e^-2h) D1, Heun + alpha_t ((1 - e^-2h) /
         * (-2h) + 1) D1. */
        const double A = -a_t * expm1(-2.0 * h);
        k.cx = s_t / s_0 * exp(-h);
        k.cz = s_t * sqrt(-expm1(-2.0 * h));
        k.c[0] = A;
        if (order == 2) {
            const double inv_r0 = h / log(sig[1] / sig[0]);
            const double b =
                type == DDPM_SOLVER_MIDPOINT ? 0.5 * A : a_t * (expm1(-2.0 * h) / (2.0 * h) + 1.0);
            k.c[0] += b * inv_r0;
            k.c[1] = -b * inv_r0;
        }
    }
    return k;
}

void ddpm_step_dpmpp(int order, ddpm_solver_type type, int sde, const double *sig,
                     double sigma_next, const float *x, const float *const *x0, const float *noise,
                     size_t n, float *x_next) {
    DDPM_CHECK(order >= 1 && order <= (sde ? 2 : 3));
    DDPM_CHECK(sigma_next >= 0.0 && sigma_next <= sig[0] && sig[0] > 0.0);
    for (int j = 1; j < order; j++) DDPM_CHECK(sig[j] > sig[j - 1]);
    DDPM_CHECK(order == 1 || sigma_next > 0.0);
    if (sigma_next == 0.0) {
        /* h = infinity: every form's limit is the x_0 estimate itself. */
        if (x_next != x0[0]) memmove(x_next, x0[0], n * sizeof(float));
        return;
    }
    if (sigma_next == sig[0]) {
        /* h = 0 (e.g. the last step of leading spacing ending at sigma_min): nothing moves. */
        if (x_next != x) memmove(x_next, x, n * sizeof(float));
        return;
    }
    DDPM_CHECK(!sde || noise != NULL);
    const dpm_coefs k = dpm_coefficients(order, type, sde, sig, sigma_next);
    const float cx = (float)k.cx, c0 = (float)k.c[0], c1 = (float)k.c[1], c2 = (float)k.c[2];
    const float cz = (float)k.cz;
    const float *m0 = x0[0], *m1 = order > 1 ? x0[1] : NULL, *m2 = order > 2 ? x0[2] : NULL;
#pragma omp parallel for schedule(static) if (n > 65536)
    for (size_t i = 0; i < n; i++) {
        float v = cx * x[i] + c0 * m0[i];
        if (m1) v += c1 * m1[i];
        if (m2) v += c2 * m2[i];
        if (sde) v += cz * noise[i];
        x_next[i] = v;
    }
}

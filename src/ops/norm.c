/* norm.c - batch norm and group norm, forward and backward.
 *
 * Statistics are accumulated row by row: a float SIMD partial sum over one contiguous row of HW
 * values (the omp simd reduction lets the compiler vectorise without -ffast-math), added into a
 * double. The variance is the two-pass sum of squared deviations, not E[x^2] - E[x]^2, which
 * cancels catastrophically for inputs with a large mean. */
#include "core/internal.h"

#include <math.h>

#include "core/vmath.h"

#define OMP_MIN_WORK 32768

static inline float row_sum(const float *x, size_t n) {
    float s = 0;
#pragma omp simd reduction(+ : s)
    for (size_t i = 0; i < n; i++) s += x[i];
    return s;
}

static inline float row_sqdev(const float *x, size_t n, float m) {
    float s = 0;
#pragma omp simd reduction(+ : s)
    for (size_t i = 0; i < n; i++) s += (x[i] - m) * (x[i] - m);
    return s;
}

/* sum dy and sum dy * xhat over one row, xhat = (x - m) r. */
static inline void row_dsums(const float *dy, const float *x, size_t n, float m, float r,
                             double *s_dy, double *s_dyx) {
    float a = 0, b = 0;
#pragma omp simd reduction(+ : a, b)
    for (size_t i = 0; i < n; i++) {
        a += dy[i];
        b += dy[i] * (x[i] - m) * r;
    }
    *s_dy += a;
    *s_dyx += b;
}

/* ---- batch norm: statistics per channel over (B, HW) ---- */

/* GELU(h) = h Phi(h), the expression of ddpm_gelu_forward (so the fused op equals the two). */
static inline float gelu_of(float h) {
    float g;
    return h * ddpm_vphi(h, &g);
}

/* Batch norm, then GELU when gelu is set, in the same pass over the output. */
static void batchnorm_forward(float *out, float *mean, float *rstd, const float *inp,
                              const float *weight, const float *bias, float *running_mean,
                              float *running_var, int training, float momentum, int B, int C,
                              size_t HW, int gelu) {
    const size_t M = (size_t)B * HW;
    if (training)
        DDPM_CHECK(M > 1 || !running_var);
    else
        DDPM_CHECK(running_mean && running_var);
#pragma omp parallel for schedule(static) if ((size_t)C * M > OMP_MIN_WORK)
    for (int c = 0; c < C; c++) {
        float m, r;
        if (training) {
            double s = 0;
            for (int b = 0; b < B; b++) s += row_sum(inp + ((size_t)b * C + c) * HW, HW);
            const double mu = s / (double)M;
            double v = 0;
            for (int b = 0; b < B; b++)
                v += row_sqdev(inp + ((size_t)b * C + c) * HW, HW, (float)mu);
            const double var = v / (double)M;
            m = (float)mu;
            r = (float)(1.0 / sqrt(var + (double)DDPM_NORM_EPS));
            if (running_mean)
                running_mean[c] = (1.0f - momentum) * running_mean[c] + momentum * (float)mu;
            if (running_var)
                running_var[c] =
                    (1.0f - momentum) * running_var[c] + momentum * (float)(v / (double)(M - 1));
        } else {
            m = running_mean[c];
            r = (float)(1.0 / sqrt((double)running_var[c] + (double)DDPM_NORM_EPS));
        }
        mean[c] = m;
        rstd[c] = r;
        const float g = weight ? weight[c] * r : r, sh = bias ? bias[c] : 0.0f;
        for (int b = 0; b < B; b++) {
            const float *x = inp + ((size_t)b * C + c) * HW;
            float *y = out + ((size_t)b * C + c) * HW;
            if (gelu) {
#pragma omp simd
                for (size_t i = 0; i < HW; i++) y[i] = gelu_of((x[i] - m) * g + sh);
            } else {
                for (size_t i = 0; i < HW; i++) y[i] = (x[i] - m) * g + sh;
            }
        }
    }
}

void ddpm_batchnorm_forward(float *out, float *mean, float *rstd, const float *inp,
                            const float *weight, const float *bias, float *running_mean,
                            float *running_var, int training, float momentum, int B, int C,
                            size_t HW) {
    batchnorm_forward(out, mean, rstd, inp, weight, bias, running_mean, running_var, training,
                      momentum, B, C, HW, 0);
}

void ddpm_batchnorm_gelu_forward(float *out, float *mean, float *rstd, const float *inp,
                                 const float *weight, const float *bias, float *running_mean,
                                 float *running_var, int training, float momentum, int B, int C,
                                 size_t HW) {
    batchnorm_forward(out, mean, rstd, inp, weight, bias, running_mean, running_var, training,
                      momentum, B, C, HW, 1);
}

void ddpm_batchnorm_backward(float *dinp, float *dweight, float *dbias, const float *dout,
                             const float *inp, const float *mean, const float *rstd,
                             const float *weight, int training, int B, int C, size_t HW) {
    const size_t M = (size_t)B * HW;
#pragma omp parallel for schedule(static) if ((size_t)C * M > OMP_MIN_WORK)
    for (int c = 0; c < C; c++) {
        const float m = mean[c], r = rstd[c];
        double s_dy = 0, s_dyx = 0;
        for (int b = 0; b < B; b++) {
            const size_t o = ((size_t)b * C + c) * HW;
            row_dsums(dout + o, inp + o, HW, m, r, &s_dy, &s_dyx);
        }
        if (dweight) dweight[c] += (float)s_dyx;
        if (dbias) dbias[c] += (float)s_dy;
        if (!dinp) continue;
        const float g = (weight ? weight[c] : 1.0f) * r;
        /* Training: x enters the mean and the variance too, which removes the gradient's
         * component along 1 and along xhat. Eval: the statistics are constants. */
        const float a = training ? (float)(s_dy / (double)M) : 0.0f;
        const float k = training ? (float)(s_dyx / (double)M) : 0.0f;
        for (int b = 0; b < B; b++) {
            const size_t o = ((size_t)b * C + c) * HW;
            const float *x = inp + o, *dy = dout + o;
            float *dx = dinp + o;
            for (size_t i = 0; i < HW; i++) dx[i] += g * (dy[i] - a - (x[i] - m) * r * k);
        }
    }
}

/* The batch norm's output h is recomputed from its input and statistics exactly as the forward
 * computed it, its gradient dh = dy GELU'(h) (ddpm_gelu_backward's expression) written to dh,
 * and the batch norm's backward run on dh: the same values as the two ops' backwards, without
 * keeping h. */
void ddpm_batchnorm_gelu_backward(float *dinp, float *dweight, float *dbias, const float *dout,
                                  const float *inp, const float *mean, const float *rstd,
                                  const float *weight, const float *bias, int training, int B,
                                  int C, size_t HW, float *dh) {
    const float inv_sqrt_2pi = 0.3989422804014327f;
#pragma omp parallel for schedule(static) if ((size_t)B * C * HW > OMP_MIN_WORK)
    for (int c = 0; c < C; c++) {
        const float m = mean[c], r = rstd[c];
        const float g = weight ? weight[c] * r : r, sh = bias ? bias[c] : 0.0f;
        for (int b = 0; b < B; b++) {
            const size_t o = ((size_t)b * C + c) * HW;
            const float *x = inp + o, *dy = dout + o;
            float *d = dh + o;
#pragma omp simd
            for (size_t i = 0; i < HW; i++) {
                const float h = (x[i] - m) * g + sh;
                float e;
                const float cdf = ddpm_vphi(h, &e);
                d[i] = dy[i] * (cdf + h * inv_sqrt_2pi * e);
            }
        }
    }
    ddpm_batchnorm_backward(dinp, dweight, dbias, dh, inp, mean, rstd, weight, training, B, C, HW);
}

/* ---- group norm: statistics per (item, group); a group's channels are contiguous ---- */

void ddpm_groupnorm_forward(float *out, float *mean, float *rstd, const float *inp,
                            const float *weight, const float *bias, int B, int C, size_t HW,
                            int G) {
    ddpm_groupnorm_forward_eps(out, mean, rstd, inp, weight, bias, B, C, HW, G, DDPM_NORM_EPS);
}

/* Group norm, then SiLU when silu is set, in the same pass over the output. eps is only in the
 * forward: the backward reads the rstd it saved. */
static void groupnorm_forward(float *out, float *mean, float *rstd, const float *inp,
                              const float *weight, const float *bias, int B, int C, size_t HW,
                              int G, float eps, int silu) {
    const int Cg = C / G;
    DDPM_CHECK(Cg * G == C);
    const size_t n = (size_t)Cg * HW;
#pragma omp parallel for schedule(static) if ((size_t)B * C * HW > OMP_MIN_WORK)
    for (int bg = 0; bg < B * G; bg++) {
        const float *x = inp + (size_t)bg * n; /* [b, g*Cg .. (g+1)*Cg) x HW is one block */
        float *y = out + (size_t)bg * n;
        double s = 0, v = 0;
        for (int c = 0; c < Cg; c++) s += row_sum(x + c * HW, HW);
        const double mu = s / (double)n;
        for (int c = 0; c < Cg; c++) v += row_sqdev(x + c * HW, HW, (float)mu);
        const float m = (float)mu, r = (float)(1.0 / sqrt(v / (double)n + (double)eps));
        mean[bg] = m;
        rstd[bg] = r;
        const int c0 = (bg % G) * Cg;
        for (int c = 0; c < Cg; c++) {
            const float g = weight ? weight[c0 + c] * r : r, sh = bias ? bias[c0 + c] : 0.0f;
            const float *xr = x + c * HW;
            float *yr = y + c * HW;
            if (silu) {
#pragma omp simd
                for (size_t i = 0; i < HW; i++) {
                    const float h = (xr[i] - m) * g + sh;
                    yr[i] = h * ddpm_vsigmoidf(h); /* ddpm_silu_forward's expression */
                }
            } else {
                for (size_t i = 0; i < HW; i++) yr[i] = (xr[i] - m) * g + sh;
            }
        }
    }
}

void ddpm_groupnorm_forward_eps(float *out, float *mean, float *rstd, const float *inp,
                                const float *weight, const float *bias, int B, int C, size_t HW,
                                int G, float eps) {
    groupnorm_forward(out, mean, rstd, inp, weight, bias, B, C, HW, G, eps, 0);
}

void ddpm_groupnorm_silu_forward(float *out, float *mean, float *rstd, const float *inp,
                                 const float *weight, const float *bias, int B, int C, size_t HW,
                                 int G, float eps) {
    groupnorm_forward(out, mean, rstd, inp, weight, bias, B, C, HW, G, eps, 1);
}

/* As ddpm_batchnorm_gelu_backward: the group norm's output recomputed, dh = dy SiLU'(h) (the
 * expression of ddpm_silu_backward), then the group norm's backward on dh. */
void ddpm_groupnorm_silu_backward(float *dinp, float *dweight, float *dbias, const float *dout,
                                  const float *inp, const float *mean, const float *rstd,
                                  const float *weight, const float *bias, int B, int C, size_t HW,
                                  int G, float *dh) {
    const int Cg = C / G;
    DDPM_CHECK(Cg * G == C);
#pragma omp parallel for schedule(static) if ((size_t)B * C * HW > OMP_MIN_WORK)
    for (int bc = 0; bc < B * C; bc++) {
        const int c = bc % C, bg = bc / C * G + c / Cg;
        const float r = rstd[bg], m = mean[bg];
        const float g = weight ? weight[c] * r : r, sh = bias ? bias[c] : 0.0f;
        const float *x = inp + (size_t)bc * HW, *dy = dout + (size_t)bc * HW;
        float *d = dh + (size_t)bc * HW;
#pragma omp simd
        for (size_t i = 0; i < HW; i++) {
            const float h = (x[i] - m) * g + sh;
            const float sg = ddpm_vsigmoidf(h);
            d[i] = dy[i] * sg * (1.0f + h * (1.0f - sg));
        }
    }
    ddpm_groupnorm_backward(dinp, dweight, dbias, dh, inp, mean, rstd, weight, B, C, HW, G);
}

void ddpm_groupnorm_backward(float *dinp, float *dweight, float *dbias, const float *dout,
                             const float *inp, const float *mean, const float *rstd,
                             const float *weight, int B, int C, size_t HW, int G) {
    const int Cg = C / G;
    DDPM_CHECK(Cg * G == C);
    const size_t n = (size_t)Cg * HW;
    const size_t work = (size_t)B * C * HW;
    if (dinp) {
#pragma omp parallel for schedule(static) if (work > OMP_MIN_WORK)
        for (int bg = 0; bg < B * G; bg++) {
            const size_t o = (size_t)bg * n;
            const float m = mean[bg], r = rstd[bg];
            const int c0 = (bg % G) * Cg;
            /* With dxhat = dy * gamma: dx = r (dxhat - mean(dxhat) - xhat mean(dxhat xhat)). */
            double s_dxh = 0, s_dxhx = 0;
            for (int c = 0; c < Cg; c++) {
                double a = 0, b = 0;
                row_dsums(dout + o + c * HW, inp + o + c * HW, HW, m, r, &a, &b);
                const double g = weight ? weight[c0 + c] : 1.0;
                s_dxh += g * a;
                s_dxhx += g * b;
            }
            const float a = (float)(s_dxh / (double)n), k = (float)(s_dxhx / (double)n);
            for (int c = 0; c < Cg; c++) {
                const float g = weight ? weight[c0 + c] : 1.0f;
                const float *x = inp + o + c * HW, *dy = dout + o + c * HW;
                float *dx = dinp + o + c * HW;
                for (size_t i = 0; i < HW; i++) dx[i] += r * (g * dy[i] - a - (x[i] - m) * r * k);
            }
        }
    }
    if (dweight || dbias) {
        /* Separate pass over channels so each thread owns its dweight/dbias entries. */
#pragma omp parallel for schedule(static) if (work > OMP_MIN_WORK)
        for (int c = 0; c < C; c++) {
            const int g = c / Cg;
            double s_dy = 0, s_dyx = 0;
            for (int b = 0; b < B; b++) {
                const size_t o = ((size_t)b * C + c) * HW;
                row_dsums(dout + o, inp + o, HW, mean[b * G + g], rstd[b * G + g], &s_dy, &s_dyx);
            }
            if (dweight) dweight[c] += (float)s_dyx;
            if (dbias) dbias[c] += (float)s_dy;
        }
    }
}

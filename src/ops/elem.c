/* elem.c - elementwise and data-movement image operators: activations, scale, dropout,
 * residual add, per-channel broadcasts, concatenation and slicing along channels, pooling,
 * nearest upsampling and the sinusoidal timestep embedding.
 *
 * These are memory bound: each is one pass, parallel over whole rows or planes so that a thread
 * never writes an element another thread writes (backward accumulates with +=). */
#include "core/internal.h"

#include <math.h>

#include "core/vmath.h"

#define OMP_MIN_WORK 32768

/* ---- activations ---- */

/* GELU(x) = x Phi(x), with the vectorisable Phi of core/vmath.h (libm's erff was 11% of a ContextUnet
 * training step). */
void ddpm_gelu_forward(float *out, const float *inp, size_t n) {
#pragma omp parallel for simd schedule(static) if (n > OMP_MIN_WORK)
    for (size_t i = 0; i < n; i++) {
        float g;
        out[i] = inp[i] * ddpm_vphi(inp[i], &g);
    }
}

/* GELU'(x) = Phi(x) + x phi(x), phi the standard normal density exp(-x^2/2) / sqrt(2 pi). */
void ddpm_gelu_backward(float *dinp, const float *dout, const float *inp, size_t n) {
    const float inv_sqrt_2pi = 0.3989422804014327f;
#pragma omp parallel for simd schedule(static) if (n > OMP_MIN_WORK)
    for (size_t i = 0; i < n; i++) {
        const float x = inp[i];
        float g;
        const float cdf = ddpm_vphi(x, &g);
        dinp[i] += dout[i] * (cdf + x * inv_sqrt_2pi * g);
    }
}

void ddpm_relu_forward(float *out, const float *inp, size_t n) {
#pragma omp parallel for schedule(static) if (n > OMP_MIN_WORK)
    for (size_t i = 0; i < n; i++) out[i] = inp[i] > 0.0f ? inp[i] : 0.0f;
}

void ddpm_relu_backward(float *dinp, const float *dout, const float *inp, size_t n) {
#pragma omp parallel for schedule(static) if (n > OMP_MIN_WORK)
    for (size_t i = 0; i < n; i++)
        if (inp[i] > 0.0f) dinp[i] += dout[i];
}

void ddpm_silu_forward(float *out, const float *inp, size_t n) {
#pragma omp parallel for simd schedule(static) if (n > OMP_MIN_WORK)
    for (size_t i = 0; i < n; i++) out[i] = inp[i] * ddpm_vsigmoidf(inp[i]);
}

void ddpm_silu_backward(float *dinp, const float *dout, const float *inp, size_t n) {
#pragma omp parallel for simd schedule(static) if (n > OMP_MIN_WORK)
    for (size_t i = 0; i < n; i++) {
        const float s = ddpm_vsigmoidf(inp[i]);
        dinp[i] += dout[i] * s * (1.0f + inp[i] * (1.0f - s));
    }
}

/* ---- scale, dropout, add ---- */

void ddpm_scale_forward(float *out, const float *inp, float alpha, float beta, size_t n) {
#pragma omp parallel for schedule(static) if (n > OMP_MIN_WORK)
    for (size_t i = 0; i < n; i++) out[i] = alpha * inp[i] + beta;
}

void ddpm_scale_backward(float *dinp, const float *dout, float alpha, size_t n) {
#pragma omp parallel for schedule(static) if (n > OMP_MIN_WORK)
    for (size_t i = 0; i < n; i++) dinp[i] += alpha * dout[i];
}

void ddpm_dropout_forward(float *out, float *mask, const float *inp, int B, size_t per_item,
                          float p, uint64_t seed, uint64_t first_item, uint32_t step) {
    DDPM_CHECK(p >= 0.0f && p < 1.0f);
    const float keep_scale = 1.0f / (1.0f - p);
#pragma omp parallel for schedule(static) if ((size_t)B * per_item > OMP_MIN_WORK)
    for (int b = 0; b < B; b++) {
        float *m = mask + (size_t)b * per_item;
        const float *x = inp + (size_t)b * per_item;
        float *y = out + (size_t)b * per_item;
        /* Draw straight into the mask, then turn each uniform into 0 or the keep scale. */
        ddpm_randu(seed, DDPM_STREAM_DROPOUT, first_item + (uint64_t)b, step, m, per_item);
        for (size_t i = 0; i < per_item; i++) {
            m[i] = m[i] >= p ? keep_scale : 0.0f;
            y[i] = x[i] * m[i];
        }
    }
}

void ddpm_dropout_backward(float *dinp, const float *dout, const float *mask, size_t n) {
#pragma omp parallel for schedule(static) if (n > OMP_MIN_WORK)
    for (size_t i = 0; i < n; i++) dinp[i] += dout[i] * mask[i];
}

void ddpm_add_forward(float *out, const float *a, const float *b, size_t n) {
#pragma omp parallel for schedule(static) if (n > OMP_MIN_WORK)
    for (size_t i = 0; i < n; i++) out[i] = a[i] + b[i];
}

void ddpm_add_backward(float *da, float *db, const float *dout, size_t n) {
#pragma omp parallel for schedule(static) if (n > OMP_MIN_WORK)
    for (size_t i = 0; i < n; i++) {
        if (da) da[i] += dout[i];
        if (db) db[i] += dout[i];
    }
}

/* ---- per-channel broadcasts: one scalar per (item, channel) row ---- */

void ddpm_channel_mul_forward(float *out, const float *inp, const float *s, int B, int C,
                              size_t HW) {
    const size_t rows = (size_t)B * C;
#pragma omp parallel for schedule(static) if (rows * HW > OMP_MIN_WORK)
    for (size_t r = 0; r < rows; r++) {
        const float v = s[r];
        for (size_t i = 0; i < HW; i++) out[r * HW + i] = inp[r * HW + i] * v;
    }
}

void ddpm_channel_mul_backward(float *dinp, float *ds, const float *dout, const float *inp,
                               const float *s, int B, int C, size_t HW) {
    const size_t rows = (size_t)B * C;
#pragma omp parallel for schedule(static) if (rows * HW > OMP_MIN_WORK)
    for (size_t r = 0; r < rows; r++) {
        const float *dy = dout + r * HW, *x = inp + r * HW;
        if (ds) {
            float acc = 0;
#pragma omp simd reduction(+ : acc)
            for (size_t i = 0; i < HW; i++) acc += dy[i] * x[i];
            ds[r] += acc;
        }
        if (dinp) {
            const float v = s[r];
            for (size_t i = 0; i < HW; i++) dinp[r * HW + i] += dy[i] * v;
        }
    }
}

void ddpm_channel_add_forward(float *out, const float *inp, const float *s, int B, int C,
                              size_t HW) {
    const size_t rows = (size_t)B * C;
#pragma omp parallel for schedule(static) if (rows * HW > OMP_MIN_WORK)
    for (size_t r = 0; r < rows; r++) {
        const float v = s[r];
        for (size_t i = 0; i < HW; i++) out[r * HW + i] = inp[r * HW + i] + v;
    }
}

void ddpm_channel_add_backward(float *dinp, float *ds, const float *dout, int B, int C, size_t HW) {
    const size_t rows = (size_t)B * C;
#pragma omp parallel for schedule(static) if (rows * HW > OMP_MIN_WORK)
    for (size_t r = 0; r < rows; r++) {
        const float *dy = dout + r * HW;
        if (ds) {
            float acc = 0;
#pragma omp simd reduction(+ : acc)
            for (size_t i = 0; i < HW; i++) acc += dy[i];
            ds[r] += acc;
        }
        if (dinp)
            for (size_t i = 0; i < HW; i++) dinp[r * HW + i] += dy[i];
    }
}

/* ---- concatenation and slicing along channels ---- */

void ddpm_concat_forward(float *out, const float *a, const float *b, int B, int Ca, int Cb,
                         size_t HW) {
    const size_t na = (size_t)Ca * HW, nb = (size_t)Cb * HW;
    for (int i = 0; i < B; i++) {
        memcpy(out + i * (na + nb), a + i * na, na * sizeof(float));
        memcpy(out + i * (na + nb) + na, b + i * nb, nb * sizeof(float));
    }
}

void ddpm_concat_backward(float *da, float *db, const float *dout, int B, int Ca, int Cb,
                          size_t HW) {
    const size_t na = (size_t)Ca * HW, nb = (size_t)Cb * HW;
#pragma omp parallel for schedule(static) if ((size_t)B * (na + nb) > OMP_MIN_WORK)
    for (int i = 0; i < B; i++) {
        const float *d = dout + i * (na + nb);
        if (da)
            for (size_t k = 0; k < na; k++) da[i * na + k] += d[k];
        if (db)
            for (size_t k = 0; k < nb; k++) db[i * nb + k] += d[na + k];
    }
}

void ddpm_channel_slice_forward(float *out, const float *inp, int B, int C, size_t HW, int c0,
                                int n) {
    for (int b = 0; b < B; b++)
        memcpy(out + (size_t)b * n * HW, inp + ((size_t)b * C + c0) * HW,
               (size_t)n * HW * sizeof(float));
}

void ddpm_channel_slice_backward(float *dinp, const float *dout, int B, int C, size_t HW, int c0,
                                 int n) {
    const size_t m = (size_t)n * HW;
#pragma omp parallel for schedule(static) if ((size_t)B * m > OMP_MIN_WORK)
    for (int b = 0; b < B; b++) {
        float *dx = dinp + ((size_t)b * C + c0) * HW;
        const float *dy = dout + (size_t)b * m;
        for (size_t k = 0; k < m; k++) dx[k] += dy[k];
    }
}

/* ---- pooling and upsampling: parallel over (item, channel) planes ---- */

/* Index within the plane of the first maximum of window (oh, ow), with PyTorch's rule: a NaN
 * wins (so it propagates), ties keep the earliest element. */
static inline size_t window_argmax(const float *x, int W, int k, int s, int oh, int ow) {
    size_t best = (size_t)(oh * s) * W + (size_t)(ow * s);
    float bv = -INFINITY;
    for (int ki = 0; ki < k; ki++)
        for (int kj = 0; kj < k; kj++) {
            const size_t idx = (size_t)(oh * s + ki) * W + (size_t)(ow * s + kj);
            const float v = x[idx];
            if (v > bv || isnan(v)) {
                bv = v;
                best = idx;
            }
        }
    return best;
}

void ddpm_maxpool2d_forward(float *out, const float *inp, int B, int C, int H, int W, int k,
                            int s) {
    const int Ho = (H - k) / s + 1, Wo = (W - k) / s + 1;
    const size_t planes = (size_t)B * C;
#pragma omp parallel for schedule(static) if (planes * H * W > OMP_MIN_WORK)
    for (size_t p = 0; p < planes; p++) {
        const float *x = inp + p * H * W;
        float *y = out + p * Ho * Wo;
        for (int oh = 0; oh < Ho; oh++)
            for (int ow = 0; ow < Wo; ow++) y[oh * Wo + ow] = x[window_argmax(x, W, k, s, oh, ow)];
    }
}

void ddpm_maxpool2d_backward(float *dinp, const float *dout, const float *inp, int B, int C, int H,
                             int W, int k, int s) {
    const int Ho = (H - k) / s + 1, Wo = (W - k) / s + 1;
    const size_t planes = (size_t)B * C;
#pragma omp parallel for schedule(static) if (planes * H * W > OMP_MIN_WORK)
    for (size_t p = 0; p < planes; p++) {
        const float *x = inp + p * H * W;
        const float *dy = dout + p * Ho * Wo;
        float *dx = dinp + p * H * W;
        for (int oh = 0; oh < Ho; oh++)
            for (int ow = 0; ow < Wo; ow++)
                dx[window_argmax(x, W, k, s, oh, ow)] += dy[oh * Wo + ow];
    }
}

void ddpm_avgpool2d_forward(float *out, const float *inp, int B, int C, int H, int W, int k,
                            int s) {
    const int Ho = (H - k) / s + 1, Wo = (W - k) / s + 1;
    const float inv = 1.0f / (float)(k * k);
    const size_t planes = (size_t)B * C;
#pragma omp parallel for schedule(static) if (planes * H * W > OMP_MIN_WORK)
    for (size_t p = 0; p < planes; p++) {
        const float *x = inp + p * H * W;
        float *y = out + p * Ho * Wo;
        for (int oh = 0; oh < Ho; oh++)
            for (int ow = 0; ow < Wo; ow++) {
                float acc = 0;
                for (int ki = 0; ki < k; ki++)
                    for (int kj = 0; kj < k; kj++)
                        acc += x[(size_t)(oh * s + ki) * W + ow * s + kj];
                y[oh * Wo + ow] = acc * inv;
            }
    }
}

void ddpm_avgpool2d_backward(float *dinp, const float *dout, int B, int C, int H, int W, int k,
                             int s) {
    const int Ho = (H - k) / s + 1, Wo = (W - k) / s + 1;
    const float inv = 1.0f / (float)(k * k);
    const size_t planes = (size_t)B * C;
#pragma omp parallel for schedule(static) if (planes * H * W > OMP_MIN_WORK)
    for (size_t p = 0; p < planes; p++) {
        const float *dy = dout + p * Ho * Wo;
        float *dx = dinp + p * H * W;
        for (int oh = 0; oh < Ho; oh++)
            for (int ow = 0; ow < Wo; ow++) {
                const float g = dy[oh * Wo + ow] * inv;
                for (int ki = 0; ki < k; ki++)
                    for (int kj = 0; kj < k; kj++) dx[(size_t)(oh * s + ki) * W + ow * s + kj] += g;
            }
    }
}

void ddpm_upsample_nearest_forward(float *out, const float *inp, int B, int C, int H, int W,
                                   int scale) {
    const int Ho = H * scale, Wo = W * scale;
    const size_t planes = (size_t)B * C;
#pragma omp parallel for schedule(static) if (planes * Ho * Wo > OMP_MIN_WORK)
    for (size_t p = 0; p < planes; p++) {
        const float *x = inp + p * H * W;
        float *y = out + p * Ho * Wo;
        for (int oh = 0; oh < Ho; oh++) {
            const float *xr = x + (size_t)(oh / scale) * W;
            float *yr = y + (size_t)oh * Wo;
            for (int ow = 0; ow < Wo; ow++) yr[ow] = xr[ow / scale];
        }
    }
}

void ddpm_upsample_nearest_backward(float *dinp, const float *dout, int B, int C, int H, int W,
                                    int scale) {
    const int Ho = H * scale, Wo = W * scale;
    const size_t planes = (size_t)B * C;
#pragma omp parallel for schedule(static) if (planes * Ho * Wo > OMP_MIN_WORK)
    for (size_t p = 0; p < planes; p++) {
        const float *dy = dout + p * Ho * Wo;
        float *dx = dinp + p * H * W;
        for (int oh = 0; oh < Ho; oh++) {
            float *dxr = dx + (size_t)(oh / scale) * W;
            const float *dyr = dy + (size_t)oh * Wo;
            for (int ow = 0; ow < Wo; ow++) dxr[ow / scale] += dyr[ow];
        }
    }
}

/* ---- sinusoidal timestep embedding ---- */

void ddpm_timestep_embedding(float *out, const float *t, int B, int dim) {
    const int half = dim / 2;
    DDPM_CHECK(half >= 2 && half * 2 == dim);
    /* Float arithmetic in PyTorch's order: arange(half) * -(log(10000) / (half - 1)), exp, then
     * t * freq. At t ~ 1000 the argument's float rounding is ~6e-5 rad, so computing it any other
     * way would not reproduce PyTorch's embedding to 1e-4. */
    const float e = (float)(-log(10000.0) / (half - 1));
    for (int b = 0; b < B; b++) {
        float *o = out + (size_t)b * dim;
        for (int k = 0; k < half; k++) {
            const float arg = t[b] * expf((float)k * e);
            o[k] = sinf(arg);
            o[half + k] = cosf(arg);
        }
    }
}

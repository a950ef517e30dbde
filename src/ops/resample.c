/* resample.c - forward-only image operators the Inception-v3 of pytorch-fid needs beyond the
 * training ones: bilinear resizing (F.interpolate(mode="bilinear", align_corners=False)) and
 * pooling with zero padding (avg_pool2d with count_include_pad=False, and max_pool2d whose
 * padding never wins). Parallel over planes; each output element is written by one thread. */
#include "core/internal.h"

#include <math.h>

#define OMP_MIN_WORK 32768 /* elements below which one thread is faster (as elem.c) */

void ddpm_resize_bilinear_forward(float *out, const float *inp, int B, int C, int H, int W, int Ho,
                                  int Wo) {
    /* PyTorch's half-pixel mapping: src = (dst + 0.5) * in / out - 0.5, clamped below at 0 */
    const double sh = (double)H / Ho, sw = (double)W / Wo;
    const size_t planes = (size_t)B * C;
#pragma omp parallel for schedule(static) if (planes * Ho * Wo > OMP_MIN_WORK)
    for (size_t p = 0; p < planes; p++) {
        const float *x = inp + p * H * W;
        float *y = out + p * Ho * Wo;
        for (int oh = 0; oh < Ho; oh++) {
            double fy = (oh + 0.5) * sh - 0.5;
            if (fy < 0) fy = 0;
            const int y0 = (int)fy, y1 = y0 + (y0 < H - 1);
            const float ly = (float)(fy - y0), hy = 1.0f - ly;
            for (int ow = 0; ow < Wo; ow++) {
                double fx = (ow + 0.5) * sw - 0.5;
                if (fx < 0) fx = 0;
                const int x0 = (int)fx, x1 = x0 + (x0 < W - 1);
                const float lx = (float)(fx - x0), hx = 1.0f - lx;
                y[oh * Wo + ow] = hy * (hx * x[y0 * W + x0] + lx * x[y0 * W + x1]) +
                                  ly * (hx * x[y1 * W + x0] + lx * x[y1 * W + x1]);
            }
        }
    }
}

/* Output size of a padded pooling window (PyTorch, ceil_mode False). */
static int pooled(int n, int k, int s, int pad) { return (n + 2 * pad - k) / s + 1; }

void ddpm_avgpool2d_pad_forward(float *out, const float *inp, int B, int C, int H, int W, int k,
                                int s, int pad) {
    const int Ho = pooled(H, k, s, pad), Wo = pooled(W, k, s, pad);
    const size_t planes = (size_t)B * C;
#pragma omp parallel for schedule(static) if (planes * H * W > OMP_MIN_WORK)
    for (size_t p = 0; p < planes; p++) {
        const float *x = inp + p * H * W;
        float *y = out + p * Ho * Wo;
        for (int oh = 0; oh < Ho; oh++)
            for (int ow = 0; ow < Wo; ow++) {
                float acc = 0;
                int cnt = 0; /* count_include_pad=False: the mean of the pixels inside */
                for (int i = oh * s - pad; i < oh * s - pad + k; i++)
                    for (int j = ow * s - pad; j < ow * s - pad + k; j++)
                        if (i >= 0 && i < H && j >= 0 && j < W) acc += x[i * W + j], cnt++;
                y[oh * Wo + ow] = cnt ? acc / (float)cnt : 0.0f;
            }
    }
}

void ddpm_maxpool2d_pad_forward(float *out, const float *inp, int B, int C, int H, int W, int k,
                                int s, int pad) {
    const int Ho = pooled(H, k, s, pad), Wo = pooled(W, k, s, pad);
    const size_t planes = (size_t)B * C;
#pragma omp parallel for schedule(static) if (planes * H * W > OMP_MIN_WORK)
    for (size_t p = 0; p < planes; p++) {
        const float *x = inp + p * H * W;
        float *y = out + p * Ho * Wo;
        for (int oh = 0; oh < Ho; oh++)
            for (int ow = 0; ow < Wo; ow++) {
                float best = -INFINITY; /* padding is -inf in PyTorch's max pooling */
                for (int i = oh * s - pad; i < oh * s - pad + k; i++)
                    for (int j = ow * s - pad; j < ow * s - pad + k; j++)
                        if (i >= 0 && i < H && j >= 0 && j < W) {
                            const float v = x[i * W + j];
                            if (v > best || isnan(v)) best = v;
                            if (isnan(v)) break;
                        }
                y[oh * Wo + ow] = best;
            }
    }
}

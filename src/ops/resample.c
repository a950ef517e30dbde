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

/* The max of a and v where NaN wins (as PyTorch's max pooling: once NaN, it stays). */
static inline float max_nan(float a, float v) { return v > a || isnan(v) ? v : a; }

/* acc folded with the pixels xr[j0 .. j0 + k) of one input row that lie inside [0, W). */
static inline float window_row(float acc, const float *xr, int W, int j0, int k, int is_max) {
    const int lo = j0 < 0 ? 0 : j0, hi = j0 + k > W ? W : j0 + k;
    for (int j = lo; j < hi; j++) acc = is_max ? max_nan(acc, xr[j]) : acc + xr[j];
    return acc;
}

/* One padded pooling of every plane: the average of the pixels inside each window (avg,
 * count_include_pad=False) or their maximum (max; padding never wins). Each output row is its
 * own accumulator: the window's input rows are folded into it one at a time, each row's pixels in
 * order, which is the order of a per-window loop (the same sums, bit for bit), while the loop over
 * output columns has no window loop around it; the columns whose window lies inside the image
 * take 3-wide windows (the Inception-v3's) unrolled, which vectorises. */
static void pool2d_pad(float *out, const float *inp, int B, int C, int H, int W, int k, int s,
                       int pad, int is_max) {
    const int Ho = pooled(H, k, s, pad), Wo = pooled(W, k, s, pad);
    /* the output columns [lo, hi) whose window [ow s - pad, ow s - pad + k) is inside [0, W) */
    int lo = (pad + s - 1) / s, hi = W + pad - k >= 0 ? (W + pad - k) / s + 1 : 0;
    hi = hi < Wo ? hi : Wo;
    lo = lo < hi ? lo : hi;
    const size_t planes = (size_t)B * C;
#pragma omp parallel for schedule(static) if (planes * H * W > OMP_MIN_WORK)
    for (size_t p = 0; p < planes; p++) {
        const float *x = inp + p * H * W;
        float *y = out + p * Ho * Wo;
        for (int oh = 0; oh < Ho; oh++) {
            float *yr = y + (size_t)oh * Wo;
            const int i0 = oh * s - pad < 0 ? 0 : oh * s - pad;
            const int i1 = oh * s - pad + k > H ? H : oh * s - pad + k;
            for (int ow = 0; ow < Wo; ow++) yr[ow] = is_max ? -INFINITY : 0.0f;
            for (int i = i0; i < i1; i++) {
                const float *xr = x + (size_t)i * W;
                for (int ow = 0; ow < lo; ow++) yr[ow] = window_row(yr[ow], xr, W, ow * s - pad, k, is_max);
                if (k == 3 && is_max)
                    for (int ow = lo; ow < hi; ow++) {
                        const float *q = xr + (ow * s - pad);
                        yr[ow] = max_nan(max_nan(max_nan(yr[ow], q[0]), q[1]), q[2]);
                    }
                else if (k == 3)
                    for (int ow = lo; ow < hi; ow++) {
                        const float *q = xr + (ow * s - pad);
                        yr[ow] = ((yr[ow] + q[0]) + q[1]) + q[2];
                    }
                else
                    for (int ow = lo; ow < hi; ow++) yr[ow] = window_row(yr[ow], xr, W, ow * s - pad, k, is_max);
                for (int ow = hi; ow < Wo; ow++) yr[ow] = window_row(yr[ow], xr, W, ow * s - pad, k, is_max);
            }
            if (is_max) continue;
            for (int ow = 0; ow < Wo; ow++) {
                const int j0 = ow * s - pad < 0 ? 0 : ow * s - pad;
                const int j1 = ow * s - pad + k > W ? W : ow * s - pad + k;
                const int cnt = (i1 - i0) * (j1 - j0);
                yr[ow] = cnt > 0 ? yr[ow] / (float)cnt : 0.0f;
            }
        }
    }
}

void ddpm_avgpool2d_pad_forward(float *out, const float *inp, int B, int C, int H, int W, int k,
                                int s, int pad) {
    pool2d_pad(out, inp, B, C, H, W, k, s, pad, 0);
}

void ddpm_maxpool2d_pad_forward(float *out, const float *inp, int B, int C, int H, int W, int k,
                                int s, int pad) {
    pool2d_pad(out, inp, B, C, H, W, k, s, pad, 1);
}

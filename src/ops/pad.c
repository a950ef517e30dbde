/* pad.c - zero padding of an image batch by a different amount on each side.
 *
 * A separate operator rather than an option of the convolutions: diffusers' Downsample2D with
 * padding 0 pads only the right and bottom before a stride-2 convolution without padding, and
 * the convolution kernels take one symmetric padding. Memory bound, one pass, parallel over
 * planes (each thread writes its own planes; the backward accumulates with +=). */
#include "core/internal.h"

#define OMP_MIN_WORK 32768

void ddpm_pad2d_forward(float *out, const float *inp, int B, int C, int H, int W, int top,
                        int bottom, int left, int right) {
    const int Ho = H + top + bottom, Wo = W + left + right;
    const size_t planes = (size_t)B * C;
#pragma omp parallel for schedule(static) if (planes * Ho * Wo > OMP_MIN_WORK)
    for (size_t p = 0; p < planes; p++) {
        const float *x = inp + p * H * W;
        float *y = out + p * Ho * Wo;
        memset(y, 0, sizeof(float) * (size_t)Ho * Wo);
        for (int h = 0; h < H; h++)
            memcpy(y + (size_t)(h + top) * Wo + left, x + (size_t)h * W, sizeof(float) * (size_t)W);
    }
}

void ddpm_pad2d_backward(float *dinp, const float *dout, int B, int C, int H, int W, int top,
                         int bottom, int left, int right) {
    const int Ho = H + top + bottom, Wo = W + left + right;
    const size_t planes = (size_t)B * C;
#pragma omp parallel for schedule(static) if (planes * Ho * Wo > OMP_MIN_WORK)
    for (size_t p = 0; p < planes; p++) {
        const float *dy = dout + p * Ho * Wo;
        float *dx = dinp + p * H * W;
        for (int h = 0; h < H; h++) {
            const float *dyr = dy + (size_t)(h + top) * Wo + left;
            float *dxr = dx + (size_t)h * W;
            for (int w = 0; w < W; w++) dxr[w] += dyr[w];
        }
    }
}

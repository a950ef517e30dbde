/* conv_internal.h - what the conv2d / transposed conv2d files share (not installed).
 *
 * conv.c holds the public entry points and the one dispatch (conv_choose_algorithm); each
 * algorithm sits in its own file:
 *   conv_im2col.c   im2col/col2im + BLAS sgemm, one item per slot (and the transposed conv)
 *   conv_shifted.c  stride-1 conv2d as one BLAS GEMM per kernel row on shifted padded copies
 *   conv_direct.c   the library's own 6 x 16 GEMM kernel with an implicit im2col: forward
 *                   (any stride, optionally with the fused scale + GELU epilogue), and for
 *                   stride 1 the input and weight gradients
 *   conv_winograd.c 3x3 stride-1 conv2d forward and input gradient by Winograd F(4x4, 3x3),
 *                   the products as 36 GEMMs on the own kernel
 *   conv_pointwise.c the 1x1 stride-1 conv as plain GEMMs on the own kernel, no copies
 *   conv_patch.c    the transposed conv with kernel == stride, padding 0 (non-overlapping
 *                   patches): the whole batch as one GEMM on the own kernel
 *   conv_naive.c    the naive direct-loop references the tests compare every path with
 * The shape predicates and workspace sizes below are pure functions of the shape: the
 * process-global switches (ddpm_conv_use_shifted / ddpm_conv_use_direct) and the CPU's kernel
 * choice are read in conv.c only. */
#ifndef DDPM_CONV_INTERNAL_H
#define DDPM_CONV_INTERNAL_H

#include "core/internal.h"
#include "core/vmath.h"

#include <stddef.h>

#define OMP_MIN_WORK 32768

/* ---- small helpers more than one path uses ---- */

/* dst [H + 2 pad, W + 2 pad] = the plane src [H, W] with a border of pad zeros. */
static inline void pad_plane(float *dst, const float *src, int H, int W, int pad) {
    const int Wp = W + 2 * pad;
    memset(dst, 0, sizeof(float) * ((size_t)pad * Wp));
    for (int h = 0; h < H; h++) {
        float *row = dst + (size_t)(h + pad) * Wp;
        for (int w = 0; w < pad; w++) row[w] = 0.0f;
        memcpy(row + pad, src + (size_t)h * W, sizeof(float) * W);
        for (int w = pad + W; w < Wp; w++) row[w] = 0.0f;
    }
    memset(dst + (size_t)(H + pad) * Wp, 0, sizeof(float) * ((size_t)pad * Wp));
}

/* dbias [C] += sum over positions of dy [C, N] (one item). */
static inline void bias_backward_item(float *dbias, const float *dy, int C, size_t N) {
    for (int c = 0; c < C; c++) {
        const float *p = dy + (size_t)c * N;
        float s = 0;
#pragma omp simd reduction(+ : s)
        for (size_t i = 0; i < N; i++) s += p[i];
        dbias[c] += s;
    }
}

/* The fused epilogue on an mr x nl block of C (in L1 right after the kernel wrote it). */
static inline void scale_gelu_rows(float *c, ptrdiff_t ldc, int mr, int nl, const float *scale,
                                   const float *shift) {
    for (int r = 0; r < mr; r++) {
        float *row = c + r * ldc;
        const float a = scale[r], sh = shift[r];
#pragma omp simd
        for (int l = 0; l < nl; l++) {
            const float x = row[l] * a + sh;
            float g;
            row[l] = x * ddpm_vphi(x, &g);
        }
    }
}

/* Runs item(job, b, slot, par) for the B items of a call on `slots` threads (static schedule,
 * slot = the thread's number) with par = 0, or with one slot in order on the caller's thread
 * with par = 1 (the item may then use threads itself). */
typedef void (*conv_item_fn)(const void *job, int b, int slot, int par);
void conv_for_each_item(const void *job, int B, int slots, conv_item_fn item);

/* A backward's weight and bias gradients are sums over the items. So that they do not depend on
 * the thread count, the B items fall into conv_groups(B) groups of consecutive items (fixed by B
 * alone: group g holds items [B g / G, B (g + 1) / G)); one thread sums a group's items in order
 * into the group's own partial (with one group: straight into the outputs), and the partials are
 * added in group order. conv_for_each_group runs item(job, b, slot, group, par) so: the groups on
 * up to `slots` threads (slot = the thread's number, for its scratch buffers) with par = 0, or
 * everything in order on the caller's thread with par = 1 when slots is 1. */
enum { CONV_GROUPS_MAX = 8 };
static inline int conv_groups(int B) {
    return B < 1 ? 1 : B < CONV_GROUPS_MAX ? B : CONV_GROUPS_MAX;
}
typedef void (*conv_group_item_fn)(const void *job, int b, int slot, int group, int par);
void conv_for_each_group(const void *job, int B, int slots, conv_group_item_fn item);

/* ---- conv_im2col.c ---- */
size_t conv_im2col_workspace(const ddpm_conv_dims *d); /* conv2d and transposed */
void conv_im2col_forward(float *out, const float *inp, const float *weight, const float *bias,
                         const ddpm_conv_dims *d, float *ws);
void conv_im2col_backward(float *dinp, float *dweight, float *dbias, const float *dout,
                          const float *inp, const float *weight, const ddpm_conv_dims *d,
                          float *ws);
void conv_transpose_im2col_forward(float *out, const float *inp, const float *weight,
                                   const float *bias, const ddpm_conv_dims *d, float *ws);
void conv_transpose_im2col_backward(float *dinp, float *dweight, float *dbias, const float *dout,
                                    const float *inp, const float *weight,
                                    const ddpm_conv_dims *d, float *ws);

/* ---- conv_shifted.c ---- */
/* Stride-1, not pointwise, and the output block fits in L2 (see SHIFT_MAX_BLOCK). */
int conv_shifted_fits(const ddpm_conv_dims *d);
size_t conv_shifted_workspace(const ddpm_conv_dims *d);
void conv_shifted_forward(float *out, const float *inp, const float *weight, const float *bias,
                          const ddpm_conv_dims *d, float *ws);
void conv_shifted_backward(float *dinp, float *dweight, float *dbias, const float *dout,
                           const float *inp, const float *weight, const ddpm_conv_dims *d,
                           float *ws);

/* ---- conv_direct.c ---- */
/* The forward: not transposed, and the phase planes' offsets fit in an int. */
int conv_direct_fits(const ddpm_conv_dims *d);
size_t conv_direct_workspace(const ddpm_conv_dims *d);
/* out = conv2d(inp) + bias, or with acc: out += conv2d(inp) (bias NULL), or with scale:
 * out = gelu(conv2d(inp) scale + shift) (bias NULL, no acc). */
void conv_direct_forward(float *out, const float *inp, const float *weight, const float *bias,
                         const ddpm_conv_dims *d, float *ws, int acc, const float *scale,
                         const float *shift);
/* The input gradient as a conv (stride 1, same padding on both axes): its dims in dd, or 0. */
int conv_direct_dx_dims(ddpm_conv_dims *dd, const ddpm_conv_dims *d);
size_t conv_direct_dx_workspace(const ddpm_conv_dims *d);
void conv_direct_dx(float *dinp, const float *dout, const float *weight, const ddpm_conv_dims *d,
                    float *ws);
/* The weight gradient: stride 1 and its channels-last copy's offsets fit in an int. */
int conv_direct_dw_fits(const ddpm_conv_dims *d);
size_t conv_direct_dw_workspace(const ddpm_conv_dims *d);
void conv_direct_dw(float *dweight, const float *dout, const float *inp, const ddpm_conv_dims *d,
                    float *ws);

/* ---- conv_winograd.c ---- */
/* 3x3, stride 1, padding <= 2, C_in and C_out >= 16 (and not too wide), outputs >= 2x2. */
int conv_winograd_fits(const ddpm_conv_dims *d);
/* The weight gradient (dweight +=), from its own workspace. */
int conv_winograd_dw_fits(const ddpm_conv_dims *d);
size_t conv_winograd_dw_workspace(const ddpm_conv_dims *d);
void conv_winograd_dw(float *dweight, const float *dout, const float *inp, const ddpm_conv_dims *d,
                      float *ws);
size_t conv_winograd_workspace(const ddpm_conv_dims *d); /* forward and dx alike */
void conv_winograd_forward(float *out, const float *inp, const float *weight, const float *bias,
                           const ddpm_conv_dims *d, float *ws);
/* dinp += the input gradient */
void conv_winograd_dx(float *dinp, const float *dout, const float *weight,
                      const ddpm_conv_dims *d, float *ws);

/* ---- conv_pointwise.c ---- */
/* 1 x 1, stride 1, padding 0, and the indices fit an int. */
int conv_pointwise_fits(const ddpm_conv_dims *d);
size_t conv_pointwise_workspace(const ddpm_conv_dims *d); /* the weight gradient's */
void conv_pointwise_forward(float *out, const float *inp, const float *weight, const float *bias,
                            const ddpm_conv_dims *d);
void conv_pointwise_dx(float *dinp, const float *dout, const float *weight,
                       const ddpm_conv_dims *d); /* dinp += */
void conv_pointwise_dw(float *dweight, const float *dout, const float *inp,
                       const ddpm_conv_dims *d, float *ws); /* dweight += */

/* ---- conv_patch.c ---- */
/* Transposed, kernel == stride on both axes, padding 0, and its matrices' indices fit an int. */
int conv_patch_fits(const ddpm_conv_dims *d);
size_t conv_patch_workspace(const ddpm_conv_dims *d); /* forward and backward alike */
void conv_patch_forward(float *out, const float *inp, const float *weight, const float *bias,
                        const ddpm_conv_dims *d, float *ws);
/* dinp += and dweight += (either may be NULL); the bias gradient is the caller's. */
void conv_patch_backward(float *dinp, float *dweight, const float *dout, const float *inp,
                         const float *weight, const ddpm_conv_dims *d, float *ws);

#endif

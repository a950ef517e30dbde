/* conv_pointwise.c - the 1 x 1 stride-1 convolution without padding (the U-Nets' residual
 * shortcuts where the channels change) as plain GEMMs on the library's own kernel, item by item
 * with no copy of the activations:
 *   forward   y_b [C_out, HW]  = W [C_out, C_in] @ x_b [C_in, HW] + bias
 *   input     dx_b [C_in, HW] += W^T @ dy_b [C_out, HW]            (A = W read transposed)
 *   weight    dW [C_out, C_in] += sum_b dy_b @ x_b^T                (x_b^T packed into panels)
 * The implicit-im2col path (conv_direct.c) runs these through padded copies and gathered panels
 * meant for larger kernels, and its weight gradient through a channels-last copy: for 1 x 1 it
 * measured 50-100 GFLOP/s on Zen 5 (one thread), below OpenBLAS.
 *
 * Threads split the items' 16-column panels (and the weight gradient's panels of C_in), never a
 * sum: each output element is one fixed sequence of fused multiply-adds, the weight gradient's
 * over the items in order (the accumulator carried through dW between items, which is exact),
 * so results do not depend on the thread count. */
#include "ops/conv_internal.h"
#include "kernels/kernels.h"

#include <limits.h>
#include <omp.h>

#define PW_MIN_FLOPS 2e6 /* below: one thread */
#define PW_ROWS 96       /* rows of C per task in the weight gradient */

int conv_pointwise_fits(const ddpm_conv_dims *d) {
    if (d->transposed || d->KH != 1 || d->KW != 1 || d->stride != 1 || d->pad) return 0;
    const size_t HW = (size_t)d->H * d->W;
    return ddpm_size_mul(HW, (size_t)(d->C_in > d->C_out ? d->C_in : d->C_out)) < INT_MAX / 2 &&
           ddpm_size_mul((size_t)d->B, ddpm_mk_packed_size((int)HW, d->C_in)) < INT_MAX / 2;
}

/* The weight gradient's packed x^T: every item's panels. */
size_t conv_pointwise_workspace(const ddpm_conv_dims *d) {
    if (!conv_pointwise_fits(d)) return 0;
    return (size_t)d->B * ddpm_mk_packed_size(d->H * d->W, d->C_in);
}

/* Runs the GEMM g of item 0 for every item (item b's B at g->b + b sb, its C at g->c + b sc)
 * over the items' 16-column panels of C, all rows, shared out statically. Inside a parallel
 * region. */
static void items_by_panel(const ddpm_mk_gemm *g, int B, ptrdiff_t sb, ptrdiff_t sc) {
    const int panels = (g->N + DDPM_MK_NR - 1) / DDPM_MK_NR;
#pragma omp for schedule(static)
    for (int t = 0; t < B * panels; t++) {
        const int b = t / panels, p = t % panels;
        ddpm_mk_gemm gb = *g;
        gb.b = g->b + b * sb;
        gb.c = g->c + b * sc;
        const int n0 = p * DDPM_MK_NR, n1 = n0 + DDPM_MK_NR < g->N ? n0 + DDPM_MK_NR : g->N;
        ddpm_mk_gemm_run(&gb, 0, g->M, n0, n1);
    }
}

void conv_pointwise_forward(float *out, const float *inp, const float *weight, const float *bias,
                            const ddpm_conv_dims *d) {
    const int HW = d->H * d->W;
    const ddpm_mk_gemm g = {.M = d->C_out, .N = HW, .K = d->C_in, .a = weight, .sam = d->C_in,
                            .sak = 1, .b = inp, .ldb = HW, .c = out, .ldc = HW, .bias_m = bias};
    const double flops = 2.0 * d->B * HW * d->C_in * d->C_out;
#pragma omp parallel if (flops > PW_MIN_FLOPS)
    items_by_panel(&g, d->B, (ptrdiff_t)d->C_in * HW, (ptrdiff_t)d->C_out * HW);
}

void conv_pointwise_dx(float *dinp, const float *dout, const float *weight,
                       const ddpm_conv_dims *d) {
    const int HW = d->H * d->W;
    const ddpm_mk_gemm g = {.M = d->C_in, .N = HW, .K = d->C_out, .a = weight, .sam = 1,
                            .sak = d->C_in, .b = dout, .ldb = HW, .c = dinp, .ldc = HW,
                            .accumulate = 1};
    const double flops = 2.0 * d->B * HW * d->C_in * d->C_out;
#pragma omp parallel if (flops > PW_MIN_FLOPS)
    items_by_panel(&g, d->B, (ptrdiff_t)d->C_out * HW, (ptrdiff_t)d->C_in * HW);
}

void conv_pointwise_dw(float *dweight, const float *dout, const float *inp,
                       const ddpm_conv_dims *d, float *ws) {
    const int HW = d->H * d->W, panels = (d->C_in + DDPM_MK_NR - 1) / DDPM_MK_NR;
    const int rblocks = (d->C_out + PW_ROWS - 1) / PW_ROWS;
    const size_t per = ddpm_mk_packed_size(HW, d->C_in);
    const double flops = 2.0 * d->B * HW * d->C_in * d->C_out;
#pragma omp parallel if (flops > PW_MIN_FLOPS)
    {
        /* x_b^T [HW, C_in] as panels: B(k = position, n = input channel) */
#pragma omp for schedule(static)
        for (int t = 0; t < d->B * panels; t++)
            ddpm_mk_pack_b_t(ws + (t / panels) * per, inp + (size_t)(t / panels) * d->C_in * HW,
                             HW, HW, d->C_in, t % panels, t % panels + 1);
#pragma omp for schedule(static)
        for (int t = 0; t < panels * rblocks; t++) {
            const int p = t / rblocks, r = t % rblocks;
            const int n0 = p * DDPM_MK_NR, n1 = n0 + DDPM_MK_NR < d->C_in ? n0 + DDPM_MK_NR : d->C_in;
            const int m0 = r * PW_ROWS, m1 = m0 + PW_ROWS < d->C_out ? m0 + PW_ROWS : d->C_out;
            for (int b = 0; b < d->B; b++) {
                const ddpm_mk_gemm g = {.M = d->C_out, .N = d->C_in, .K = HW,
                                        .a = dout + (size_t)b * d->C_out * HW, .sam = HW, .sak = 1,
                                        .b = ws + b * per, .b_packed = 1, .c = dweight,
                                        .ldc = d->C_in, .accumulate = 1};
                ddpm_mk_gemm_run(&g, m0, m1, n0, n1);
            }
        }
    }
}

/* conv_patch.c - the transposed convolution whose kernel equals its stride, padding 0 (the
 * ContextUnet's 2 x 2 stride-2 up-sampling and its 4 x 4 stride-4 (7 x 7 stride-7) "up0"), on
 * the library's own GEMM kernel.
 *
 * With kernel == stride the windows do not overlap: input pixel (h, w) of item b paints the
 * s x s patch of the output at (h s, w s) alone,
 *   y[b, co, h s + i, w s + j] = bias[co] + sum_ci x[b, ci, h, w] W[ci, co, i, j],
 * so the whole batch is one GEMM, pixels against the weight read as a [C_in, C_out s s] matrix
 * (its layout as stored):
 *   P [M, Ng] = X [M, C_in] @ W [C_in, Ng],  M = B H W pixels, Ng = C_out s s,
 * with X(m, ci) read in place from a channel-major copy of the batch (xc [C_in, M]: whole
 * planes copied side by side) and P scattered into the output's patches. The im2col path runs
 * this as one small sgemm per item instead (M = H W: 1 for the 1 x 1 input of up0), and its
 * col2im adds into zeros.
 *
 * The backward gathers dy into G [M, Ng] (the patches back as rows), then
 *   dW [C_in, Ng] += xc [C_in, M] @ G [M, Ng]   (a sum over pixels of the whole batch),
 *   dX [M, C_in]   = G @ W^T                    (then added, transposed, into dx),
 * the bias gradient is conv.c's (the same for every path). Every output element is one fixed
 * sequence of fused multiply-adds whatever the threads (they split rows and 16-column panels,
 * never the sum), and the sums over K run in K blocks that carry the accumulator through C,
 * which is exact: blocking changes no bits, only what stays in cache. */
#include "ops/conv_internal.h"
#include "kernels/kernels.h"

#include <limits.h>
#include <omp.h>

#define PATCH_MIN_FLOPS 2e6 /* below: one thread (a parallel region costs more) */
#define PATCH_ROWS 96       /* rows of C a task takes: 8 AVX-512 or 16 AVX2 register tiles */
#define PATCH_KBLOCK 256    /* rows of B (K) a pass holds in cache */

typedef struct {
    int M, Ng, Ci, HW, s;
} patch_geom;

static patch_geom geom_of(const ddpm_conv_dims *d) {
    return (patch_geom){.M = d->B * d->H * d->W, .Ng = d->C_out * d->stride * d->stride,
                        .Ci = d->C_in, .HW = d->H * d->W, .s = d->stride};
}

int conv_patch_fits(const ddpm_conv_dims *d) {
    if (!d->transposed || d->pad || d->KH != d->stride || d->KW != d->stride) return 0;
    /* every matrix's size (and so every index the kernel forms) below INT_MAX */
    const size_t M = (size_t)d->B * d->H * d->W, Ng = (size_t)d->C_out * d->KH * d->KW;
    const size_t lim = INT_MAX / 2;
    return M < lim && Ng < lim && ddpm_size_mul(M, Ng) < lim &&
           ddpm_size_mul(M, (size_t)d->C_in) < lim && ddpm_size_mul(Ng, (size_t)d->C_in) < lim;
}

/* xc [C_in, M], then P or G [M, Ng], then the forward's bias row [Ng] or the backward's
 * dX [M, C_in] and packed W^T. */
size_t conv_patch_workspace(const ddpm_conv_dims *d) {
    if (!conv_patch_fits(d)) return 0;
    const patch_geom g = geom_of(d);
    const size_t xc = (size_t)g.Ci * g.M, p = (size_t)g.M * g.Ng;
    const size_t bwd = (size_t)g.M * g.Ci + ddpm_mk_packed_size(g.Ng, g.Ci);
    return xc + p + (bwd > (size_t)g.Ng ? bwd : (size_t)g.Ng);
}

/* This thread's share of C [M, N] (gemm g), inside a parallel region: C falls into tasks of
 * PATCH_ROWS rows by one 16-column panel, row-major (a thread's consecutive tasks share their
 * rows of A, which stay in cache across the panels), the threads take equal runs of them, and
 * the sum over K runs in blocks of PATCH_KBLOCK rows of B, the outer loop, accumulating through
 * C after the first (exact, see the top): each thread's part of A's and B's blocks is read
 * once from memory. No barrier: each thread writes only its own tasks. */
static void gemm_share(const ddpm_mk_gemm *g) {
    const int panels = (g->N + DDPM_MK_NR - 1) / DDPM_MK_NR;
    const int rblocks = (g->M + PATCH_ROWS - 1) / PATCH_ROWS, tasks = panels * rblocks;
    const int T = omp_get_num_threads(), me = omp_get_thread_num();
    const int t0 = (int)((long long)tasks * me / T), t1 = (int)((long long)tasks * (me + 1) / T);
    const int kb = g->b_packed ? g->K : PATCH_KBLOCK; /* packed panels are contiguous already */
    for (int k0 = 0; k0 < g->K; k0 += kb) {
        ddpm_mk_gemm blk = *g;
        blk.K = g->K - k0 < kb ? g->K - k0 : kb;
        blk.a = g->a + k0 * g->sak;
        blk.b = g->b + k0 * g->ldb;
        if (k0) {
            blk.accumulate = 1;
            blk.bias = NULL;
        }
        for (int t = t0; t < t1; t++) {
            const int r = t / panels, p = t % panels;
            const int n0 = p * DDPM_MK_NR, n1 = n0 + DDPM_MK_NR < g->N ? n0 + DDPM_MK_NR : g->N;
            const int m0 = r * PATCH_ROWS, m1 = m0 + PATCH_ROWS < g->M ? m0 + PATCH_ROWS : g->M;
            ddpm_mk_gemm_run(&blk, m0, m1, n0, n1);
        }
    }
}

/* xc [C_in, M]: plane ci of item b at xc + ci M + b HW. */
static void copy_channel_major(float *xc, const float *x, const ddpm_conv_dims *d,
                               const patch_geom *g) {
#pragma omp for schedule(static)
    for (int bc = 0; bc < d->B * g->Ci; bc++) {
        const int b = bc / g->Ci, ci = bc % g->Ci;
        memcpy(xc + (size_t)ci * g->M + (size_t)b * g->HW, x + (size_t)bc * g->HW,
               sizeof(float) * g->HW);
    }
}

/* Between the output's patches and the rows of P [M, Ng], one output plane (b, co) per
 * iteration: to_rows 0 writes the output dst from P = src, to_rows 1 gathers G = dst from the
 * output gradient src. */
static void patches(float *dst, const float *src, int to_rows, const ddpm_conv_dims *d,
                    const patch_geom *g) {
    const int s = g->s, Wo = d->W * s, ss = s * s;
#pragma omp for schedule(static)
    for (int bc = 0; bc < d->B * d->C_out; bc++) {
        const int b = bc / d->C_out, co = bc % d->C_out;
        for (int h = 0; h < d->H; h++)
            for (int i = 0; i < s; i++) {
                const size_t img = ((size_t)bc * d->H * s + (size_t)h * s + i) * Wo;
                size_t row = ((size_t)b * g->HW + (size_t)h * d->W) * g->Ng + co * ss + i * s;
                for (int w = 0; w < d->W; w++, row += g->Ng)
                    for (int j = 0; j < s; j++) {
                        const size_t y = img + (size_t)w * s + j;
                        if (to_rows)
                            dst[row + j] = src[y];
                        else
                            dst[y] = src[row + j];
                    }
            }
    }
}

void conv_patch_forward(float *out, const float *inp, const float *weight, const float *bias,
                        const ddpm_conv_dims *d, float *ws) {
    const patch_geom g = geom_of(d);
    float *xc = ws, *P = xc + (size_t)g.Ci * g.M, *brow = P + (size_t)g.M * g.Ng;
    const ddpm_mk_gemm gm = {.M = g.M, .N = g.Ng, .K = g.Ci, .a = xc, .sam = 1, .sak = g.M,
                             .b = weight, .ldb = g.Ng, .c = P, .ldc = g.Ng,
                             .bias = bias ? brow : NULL};
    const double flops = 2.0 * g.M * g.Ng * g.Ci;
#pragma omp parallel if (flops > PATCH_MIN_FLOPS)
    {
        copy_channel_major(xc, inp, d, &g);
        if (bias) {
#pragma omp for schedule(static)
            for (int n = 0; n < g.Ng; n++) brow[n] = bias[n / (g.s * g.s)];
        }
        gemm_share(&gm);
#pragma omp barrier
        patches(out, P, 0, d, &g);
    }
}

void conv_patch_backward(float *dinp, float *dweight, const float *dout, const float *inp,
                         const float *weight, const ddpm_conv_dims *d, float *ws) {
    if (!dinp && !dweight) return;
    const patch_geom g = geom_of(d);
    float *xc = ws, *G = xc + (size_t)g.Ci * g.M, *dX = G + (size_t)g.M * g.Ng;
    float *wt = dX + (size_t)g.M * g.Ci;
    const int wpanels = (g.Ci + DDPM_MK_NR - 1) / DDPM_MK_NR;
    const ddpm_mk_gemm gw = {.M = g.Ci, .N = g.Ng, .K = g.M, .a = xc, .sam = g.M, .sak = 1,
                             .b = G, .ldb = g.Ng, .c = dweight, .ldc = g.Ng, .accumulate = 1};
    const ddpm_mk_gemm gx = {.M = g.M, .N = g.Ci, .K = g.Ng, .a = G, .sam = g.Ng, .sak = 1,
                             .b = wt, .b_packed = 1, .c = dX, .ldc = g.Ci};
    const double flops = 2.0 * g.M * g.Ng * g.Ci * (!!dinp + !!dweight);
#pragma omp parallel if (flops > PATCH_MIN_FLOPS)
    {
        if (dweight) copy_channel_major(xc, inp, d, &g);
        patches(G, dout, 1, d, &g);
        if (dinp) {
#pragma omp for schedule(static)
            for (int p = 0; p < wpanels; p++)
                ddpm_mk_pack_b_t(wt, weight, g.Ng, g.Ng, g.Ci, p, p + 1);
        }
        if (dweight) gemm_share(&gw);
        if (dinp) {
            gemm_share(&gx);
#pragma omp barrier
#pragma omp for schedule(static)
            for (int bc = 0; bc < d->B * g.Ci; bc++) {
                const int b = bc / g.Ci, ci = bc % g.Ci;
                float *dx = dinp + (size_t)bc * g.HW;
                const float *src = dX + (size_t)b * g.HW * g.Ci + ci;
                for (int p = 0; p < g.HW; p++) dx[p] += src[(size_t)p * g.Ci];
            }
        }
    }
}

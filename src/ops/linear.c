/* linear.c - the fully connected layer y = x W^T + b (PyTorch's nn.Linear layout).
 *
 * The forward runs on the library's own GEMM kernel: each output is one fixed sequence of
 * fused multiply-adds over the inputs, so an item's output does not depend on which other items
 * share its call. OpenBLAS does not promise that: on Zen 3 (its Haswell kernels) sgemm gives
 * rows 0-3 of a 7-row call other roundings than the same rows alone, so a sample split over two
 * processes (or two threads' slices) differed from the one-process sample in the last bit. The
 * backward's products sum over the batch anyway; they stay on BLAS. */
#include "core/internal.h"
#include "kernels/kernels.h"

#include <cblas.h>

#define OMP_MIN_FLOPS 1000000 /* multiply-adds below which one thread is faster */

void ddpm_linear_forward(float *out, const float *inp, const float *weight, const float *bias,
                         int B, int in_features, int out_features) {
    // out [B, O] = inp [B, I] @ weight^T [I, O] + bias [O]
    const int panels = (out_features + DDPM_MK_NR - 1) / DDPM_MK_NR;
    float *wt = ddpm_alloc_aligned(ddpm_mk_packed_size(in_features, out_features), sizeof(float));
    if (!wt) { /* out of memory for the packed weights (a few hundred KB): BLAS needs none */
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, B, out_features, in_features, 1.0f,
                    inp, in_features, weight, in_features, 0.0f, out, out_features);
        if (bias)
            for (int b = 0; b < B; b++)
                for (int j = 0; j < out_features; j++) out[(size_t)b * out_features + j] += bias[j];
        return;
    }
    const ddpm_mk_gemm g = {.M = B, .N = out_features, .K = in_features, .a = inp,
                            .sam = in_features, .sak = 1, .b = wt, .b_packed = 1, .c = out,
                            .ldc = out_features, .bias = bias};
    const double work = (double)B * in_features * out_features;
#pragma omp parallel if (work > OMP_MIN_FLOPS)
    {
#pragma omp for schedule(static)
        for (int p = 0; p < panels; p++)
            ddpm_mk_pack_b_t(wt, weight, in_features, in_features, out_features, p, p + 1);
#pragma omp for schedule(static)
        for (int p = 0; p < panels; p++) {
            const int n1 = (p + 1) * DDPM_MK_NR < out_features ? (p + 1) * DDPM_MK_NR : out_features;
            ddpm_mk_gemm_run(&g, 0, B, p * DDPM_MK_NR, n1);
        }
    }
    free(wt);
}

void ddpm_linear_backward(float *dinp, float *dweight, float *dbias, const float *dout,
                          const float *inp, const float *weight, int B, int in_features,
                          int out_features) {
    // dinp [B, I] += dout [B, O] @ weight [O, I]
    if (dinp)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, B, in_features, out_features, 1.0f,
                    dout, out_features, weight, in_features, 1.0f, dinp, in_features);
    // dweight [O, I] += dout^T [O, B] @ inp [B, I]
    if (dweight)
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, out_features, in_features, B, 1.0f,
                    dout, out_features, inp, in_features, 1.0f, dweight, in_features);
    // dbias [O] += sum_b dout [b, :]
    if (dbias)
        for (int b = 0; b < B; b++) {
            const float *d = dout + (size_t)b * out_features;
            for (int j = 0; j < out_features; j++) dbias[j] += d[j];
        }
}

/* linear.c - the fully connected layer y = x W^T + b (PyTorch's nn.Linear layout), through BLAS. */
#include "core/internal.h"

#include <cblas.h>

void ddpm_linear_forward(float *out, const float *inp, const float *weight, const float *bias,
                         int B, int in_features, int out_features) {
    // out [B, O] = inp [B, I] @ weight^T [I, O] + bias [O]
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, B, out_features, in_features, 1.0f, inp,
                in_features, weight, in_features, 0.0f, out, out_features);
    if (bias)
        for (int b = 0; b < B; b++) {
            float *o = out + (size_t)b * out_features;
            for (int j = 0; j < out_features; j++) o[j] += bias[j];
        }
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

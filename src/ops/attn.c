/* attn.c - multi-head self-attention over the spatial positions of an image.
 *
 * Every product is an sgemm on channel-major [channels, N] matrices, the layout the image is
 * already in, so nothing is transposed in memory: a head's q, k and v are consecutive row blocks
 * of qkv. The attention matrix P [N, N] per head is saved for backward; at the 16x16 and 8x8
 * resolutions the DDPM U-Net uses attention at, it is small (N^2 = 65536 floats).
 *
 * Where the CPU has AVX2 + FMA the forward runs on the library's own GEMM kernel, parallel over
 * items and then over (item, head) pairs, each product one call: every output is one fixed
 * sequence of operations, whatever the threads. OpenBLAS's threads split its products by a
 * thread-count dependent partition that rounds differently on Zen 3, so a sample of one image
 * on two threads differed in the last bits from the same image sampled on one; and at the
 * U-Net's 7x7 attention (N = 49, 32 channels a head) each sgemm call is mostly overhead. The
 * backward (training, where the U-Net's slices run their ops on one thread) stays on BLAS. */
#include "core/internal.h"
#include "kernels/kernels.h"

#include <cblas.h>
#include <math.h>
#include <omp.h>

#define OMP_MIN_WORK 32768

static size_t per_item_saved(const ddpm_attn_dims *d) {
    const size_t hid = (size_t)d->heads * d->dim_head, N = (size_t)d->N;
    return 4 * hid * N + (size_t)d->heads * N * N; /* qkv [3 hid, N], o [hid, N], P [heads, N, N] */
}

size_t ddpm_attention_saved_size(const ddpm_attn_dims *d) {
    return ddpm_size_mul((size_t)d->B, per_item_saved(d));
}

size_t ddpm_attention_workspace(const ddpm_attn_dims *d) {
    const size_t hid = (size_t)d->heads * d->dim_head, N = (size_t)d->N;
    return 4 * hid * N + N * N; /* dO [hid, N], dqkv [3 hid, N], dP [N, N] */
}

/* y [M, N] = W [M, K] @ x [K, N] + bias [M] */
static void project(float *y, const float *W, const float *bias, const float *x, int M, int K,
                    int N) {
    for (int m = 0; m < M; m++) {
        const float v = bias ? bias[m] : 0.0f;
        for (int n = 0; n < N; n++) y[(size_t)m * N + n] = v;
    }
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, M, N, K, 1.0f, W, K, x, N, 1.0f, y, N);
}

static void softmax_rows(float *P, int N) {
#pragma omp parallel for schedule(static) if ((size_t)N * N > OMP_MIN_WORK)
    for (int i = 0; i < N; i++) {
        float *row = P + (size_t)i * N;
        float mx = row[0];
        for (int j = 1; j < N; j++) mx = row[j] > mx ? row[j] : mx;
        float s = 0;
        for (int j = 0; j < N; j++) {
            row[j] = expf(row[j] - mx);
            s += row[j];
        }
        const float inv = 1.0f / s;
        for (int j = 0; j < N; j++) row[j] *= inv;
    }
}

/* y [M, N] = W [M, K] @ x [K, N] + bias [M] on the own kernel. */
static void project_mk(float *y, const float *W, const float *bias, const float *x, int M, int K,
                       int N) {
    const ddpm_mk_gemm g = {.M = M, .N = N, .K = K, .a = W, .sam = K, .sak = 1, .b = x, .ldb = N,
                            .c = y, .ldc = N, .bias_m = bias};
    ddpm_mk_gemm_run(&g, 0, M, 0, N);
}

/* One head of one item on the own kernel: P = softmax(scale q^T k), o_h = v P^T; pt is room for
 * P^T in the kernel's panels. */
static void head_mk(float *o, float *P, const float *q, const float *k, const float *v, int N,
                    int dh, float scale, float *pt) {
    const ddpm_mk_gemm s = {.M = N, .N = N, .K = dh, .a = q, .sam = 1, .sak = N, .b = k, .ldb = N,
                            .c = P, .ldc = N};
    ddpm_mk_gemm_run(&s, 0, N, 0, N);
    for (int i = 0; i < N; i++) { /* softmax(scale S) row by row */
        float *row = P + (size_t)i * N;
        float mx = row[0];
        for (int j = 1; j < N; j++) mx = row[j] > mx ? row[j] : mx;
        float sum = 0;
        for (int j = 0; j < N; j++) {
            row[j] = expf((row[j] - mx) * scale);
            sum += row[j];
        }
        const float inv = 1.0f / sum;
        for (int j = 0; j < N; j++) row[j] *= inv;
    }
    const int panels = (N + DDPM_MK_NR - 1) / DDPM_MK_NR;
    ddpm_mk_pack_b_t(pt, P, N, N, N, 0, panels);
    const ddpm_mk_gemm og = {.M = dh, .N = N, .K = N, .a = v, .sam = N, .sak = 1, .b = pt,
                             .b_packed = 1, .c = o, .ldc = N};
    ddpm_mk_gemm_run(&og, 0, dh, 0, N);
}

/* Returns 0, having done nothing, when the packing buffers cannot be had. */
static int attention_forward_mk(float *out, float *saved, const float *inp, const float *wqkv,
                                const float *bqkv, const float *wout, const float *bout,
                                 const ddpm_attn_dims *d) {
    const int N = d->N, C = d->C, dh = d->dim_head, hid = d->heads * d->dim_head, B = d->B;
    const float scale = 1.0f / sqrtf((float)dh);
    const size_t per = per_item_saved(d);
    const double flops = 2.0 * B * N * ((double)4 * hid * C + 2.0 * hid * N);
    const int T = flops > 2e6 ? omp_get_max_threads() : 1;
    float *pts = malloc(sizeof(float) * (size_t)T * ddpm_mk_packed_size(N, N));
    if (!pts) return 0; /* a few MB at most; the BLAS loop needs none */
#pragma omp parallel num_threads(T) if (T > 1)
    {
#pragma omp for schedule(static)
        for (int b = 0; b < B; b++)
            project_mk(saved + b * per, wqkv, bqkv, inp + (size_t)b * C * N, 3 * hid, C, N);
#pragma omp for schedule(static)
        for (int bh = 0; bh < B * d->heads; bh++) {
            const int b = bh / d->heads, h = bh % d->heads;
            float *qkv = saved + b * per, *o = qkv + (size_t)3 * hid * N, *P = o + (size_t)hid * N;
            head_mk(o + (size_t)h * dh * N, P + (size_t)h * N * N, qkv + (size_t)h * dh * N,
                    qkv + (size_t)(hid + h * dh) * N, qkv + (size_t)(2 * hid + h * dh) * N, N, dh,
                    scale, pts + (size_t)omp_get_thread_num() * ddpm_mk_packed_size(N, N));
        }
#pragma omp for schedule(static)
        for (int b = 0; b < B; b++) {
            const float *o = saved + b * per + (size_t)3 * hid * N;
            project_mk(out + (size_t)b * C * N, wout, bout, o, C, hid, N);
        }
    }
    free(pts);
    return 1;
}

void ddpm_attention_forward(float *out, float *saved, const float *inp, const float *wqkv,
                            const float *bqkv, const float *wout, const float *bout,
                            const ddpm_attn_dims *d) {
    if (ddpm_mk_fast() && attention_forward_mk(out, saved, inp, wqkv, bqkv, wout, bout, d)) return;
    const int N = d->N, C = d->C, dh = d->dim_head, hid = d->heads * d->dim_head;
    const float scale = 1.0f / sqrtf((float)dh);
    for (int b = 0; b < d->B; b++) {
        const float *x = inp + (size_t)b * C * N;
        float *qkv = saved + b * per_item_saved(d);
        float *o = qkv + (size_t)3 * hid * N;
        float *P = o + (size_t)hid * N;
        project(qkv, wqkv, bqkv, x, 3 * hid, C, N); // qkv [3 hid, N]
        for (int h = 0; h < d->heads; h++) {
            const float *q = qkv + (size_t)h * dh * N;
            const float *k = qkv + (size_t)(hid + h * dh) * N;
            const float *v = qkv + (size_t)(2 * hid + h * dh) * N;
            float *Ph = P + (size_t)h * N * N;
            // S [N, N] = scale q^T k
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, N, N, dh, scale, q, N, k, N, 0.0f,
                        Ph, N);
            softmax_rows(Ph, N);
            // o_h [dh, N] = v [dh, N] @ P^T
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, dh, N, N, 1.0f, v, N, Ph, N, 0.0f,
                        o + (size_t)h * dh * N, N);
        }
        project(out + (size_t)b * C * N, wout, bout, o, C, hid, N); // out [C, N]
    }
}

/* dbias [M] += row sums of dy [M, N] */
static void bias_grad(float *dbias, const float *dy, int M, int N) {
    for (int m = 0; m < M; m++) {
        float s = 0;
        for (int n = 0; n < N; n++) s += dy[(size_t)m * N + n];
        dbias[m] += s;
    }
}

void ddpm_attention_backward(float *dinp, float *dwqkv, float *dbqkv, float *dwout, float *dbout,
                             const float *dout, const float *inp, const float *saved,
                             const float *wqkv, const float *wout, const ddpm_attn_dims *d,
                             float *ws) {
    const int N = d->N, C = d->C, dh = d->dim_head, hid = d->heads * d->dim_head;
    const float scale = 1.0f / sqrtf((float)dh);
    float *dO = ws, *dqkv = ws + (size_t)hid * N, *dP = dqkv + (size_t)3 * hid * N;
    for (int b = 0; b < d->B; b++) {
        const float *x = inp + (size_t)b * C * N;
        const float *dy = dout + (size_t)b * C * N;
        const float *qkv = saved + b * per_item_saved(d);
        const float *o = qkv + (size_t)3 * hid * N;
        const float *P = o + (size_t)hid * N;
        if (dbout) bias_grad(dbout, dy, C, N);
        // dwout [C, hid] += dy [C, N] @ o^T [N, hid]
        if (dwout)
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, C, hid, N, 1.0f, dy, N, o, N, 1.0f,
                        dwout, hid);
        if (!dinp && !dwqkv && !dbqkv) continue;
        // dO [hid, N] = wout^T [hid, C] @ dy [C, N]
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, hid, N, C, 1.0f, wout, hid, dy, N,
                    0.0f, dO, N);
        for (int h = 0; h < d->heads; h++) {
            const float *q = qkv + (size_t)h * dh * N;
            const float *k = qkv + (size_t)(hid + h * dh) * N;
            const float *v = qkv + (size_t)(2 * hid + h * dh) * N;
            const float *Ph = P + (size_t)h * N * N;
            const float *dOh = dO + (size_t)h * dh * N;
            float *dq = dqkv + (size_t)h * dh * N;
            float *dk = dqkv + (size_t)(hid + h * dh) * N;
            float *dv = dqkv + (size_t)(2 * hid + h * dh) * N;
            // dv [dh, N] = dO_h [dh, N] @ P [N, N]
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, dh, N, N, 1.0f, dOh, N, Ph, N,
                        0.0f, dv, N);
            // dP [N, N] = dO_h^T @ v
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, N, N, dh, 1.0f, dOh, N, v, N, 0.0f,
                        dP, N);
            // softmax backward, row by row: dS = P * (dP - sum_j P dP)
#pragma omp parallel for schedule(static) if ((size_t)N * N > OMP_MIN_WORK)
            for (int i = 0; i < N; i++) {
                const float *pr = Ph + (size_t)i * N;
                float *gr = dP + (size_t)i * N;
                float dot = 0;
                for (int j = 0; j < N; j++) dot += pr[j] * gr[j];
                for (int j = 0; j < N; j++) gr[j] = pr[j] * (gr[j] - dot);
            }
            // S = scale q^T k: dq [dh, N] = scale k @ dS^T, dk [dh, N] = scale q @ dS
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, dh, N, N, scale, k, N, dP, N, 0.0f,
                        dq, N);
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, dh, N, N, scale, q, N, dP, N,
                        0.0f, dk, N);
        }
        if (dbqkv) bias_grad(dbqkv, dqkv, 3 * hid, N);
        // dwqkv [3 hid, C] += dqkv [3 hid, N] @ x^T [N, C]
        if (dwqkv)
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, 3 * hid, C, N, 1.0f, dqkv, N, x, N,
                        1.0f, dwqkv, C);
        // dx [C, N] += wqkv^T [C, 3 hid] @ dqkv [3 hid, N]
        if (dinp)
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, C, N, 3 * hid, 1.0f, wqkv, C, dqkv,
                        N, 1.0f, dinp + (size_t)b * C * N, N);
    }
}

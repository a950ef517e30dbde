/* conv.c - conv2d and transposed conv2d, forward and backward: the public entry points and
 * the one place that decides which algorithm runs (conv_choose_algorithm).
 *
 * Where the CPU has AVX2 + FMA, conv2d runs on the library's own register-tiled GEMM kernel
 * (kernels/) with an implicit im2col: the forward for any stride, and for stride-1
 * convolutions the input gradient (itself a conv) and the weight gradient; the kernel's panels
 * are gathered straight from padded copies of the input (conv_direct.c). The BLAS paths, one
 * batch item at a time, take everything else: im2col + sgemm (conv_im2col.c), and for stride-1
 * convolutions with small outputs one GEMM per kernel row on shifted copies of the zero-padded
 * input (conv_shifted.c). The transposed convolution is the adjoint of conv2d's input
 * gradient, so it reuses the same im2col/col2im pair with the roles of input and output
 * swapped; with kernel == stride and no padding its windows do not overlap and the whole batch
 * is one GEMM on the own kernel (conv_patch.c). Naive direct-loop references sit in conv_naive.c; the tests compare every path
 * with them. */
#include "ops/conv_internal.h"
#include "kernels/kernels.h"

#include <stdatomic.h>

/* The process-global switches (tests and benchmarks): relaxed atomics, so flipping them while
 * other threads run convolutions is well defined; a call reads them when it decides. */
static _Atomic int shifted_enabled = 1;
static _Atomic int direct_enabled = 1;
static _Atomic int winograd_enabled = 1;

void ddpm_conv_use_shifted(int on) {
    atomic_store_explicit(&shifted_enabled, on, memory_order_relaxed);
}
void ddpm_conv_use_direct(int on) {
    atomic_store_explicit(&direct_enabled, on, memory_order_relaxed);
}
void ddpm_conv_use_winograd(int on) {
    atomic_store_explicit(&winograd_enabled, on, memory_order_relaxed);
}
static int winograd_on(void) {
    return atomic_load_explicit(&winograd_enabled, memory_order_relaxed);
}
static int shifted_on(void) { return atomic_load_explicit(&shifted_enabled, memory_order_relaxed); }
static int direct_on(void) { return atomic_load_explicit(&direct_enabled, memory_order_relaxed); }

static int check_common(const char *op, int B, int C_in, int H, int W, int C_out, int KH, int KW,
                        int stride, int pad) {
    if (B < 1 || C_in < 1 || H < 1 || W < 1 || C_out < 1 || KH < 1 || KW < 1)
        return ddpm_fail(DDPM_ERR_INVALID,
                         "%s: sizes must be positive (B %d, C_in %d, H %d, W %d, C_out %d, "
                         "kernel %dx%d)",
                         op, B, C_in, H, W, C_out, KH, KW);
    if (stride < 1) return ddpm_fail(DDPM_ERR_INVALID, "%s: stride %d < 1", op, stride);
    if (pad < 0) return ddpm_fail(DDPM_ERR_INVALID, "%s: padding %d < 0", op, pad);
    return DDPM_OK;
}

int ddpm_conv2d_dims(ddpm_conv_dims *d, int B, int C_in, int H, int W, int C_out, int KH, int KW,
                     int stride, int pad) {
    int rc = check_common("conv2d", B, C_in, H, W, C_out, KH, KW, stride, pad);
    if (rc) return rc;
    /* long long: H + 2 pad cannot overflow int here for any size that fits in memory, but a
     * wild pad from a config file could. */
    long long hp = (long long)H + 2LL * pad, wp = (long long)W + 2LL * pad;
    if (hp < KH || wp < KW)
        return ddpm_fail(DDPM_ERR_INVALID,
                         "conv2d: kernel %dx%d is larger than the padded input %lldx%lld", KH, KW,
                         hp, wp);
    *d = (ddpm_conv_dims){B, C_in, H, W, C_out, KH, KW, stride, pad, 0, 0, 0};
    d->H_out = (int)((hp - KH) / stride + 1);
    d->W_out = (int)((wp - KW) / stride + 1);
    return DDPM_OK;
}

int ddpm_conv_transpose2d_dims(ddpm_conv_dims *d, int B, int C_in, int H, int W, int C_out, int KH,
                               int KW, int stride, int pad) {
    int rc = check_common("conv_transpose2d", B, C_in, H, W, C_out, KH, KW, stride, pad);
    if (rc) return rc;
    long long ho = ((long long)H - 1) * stride - 2LL * pad + KH;
    long long wo = ((long long)W - 1) * stride - 2LL * pad + KW;
    if (ho < 1 || wo < 1 || ho > 1 << 30 || wo > 1 << 30)
        return ddpm_fail(DDPM_ERR_INVALID,
                         "conv_transpose2d: output would be %lldx%lld (input %dx%d, kernel "
                         "%dx%d, stride %d, padding %d)",
                         ho, wo, H, W, KH, KW, stride, pad);
    *d = (ddpm_conv_dims){B, C_in, H, W, C_out, KH, KW, stride, pad, (int)ho, (int)wo, 1};
    return DDPM_OK;
}

typedef enum {
    CONV_IM2COL,  /* im2col/col2im + BLAS sgemm, item by item (conv_im2col.c) */
    CONV_SHIFTED, /* one BLAS GEMM per kernel row on shifted padded copies (conv_shifted.c) */
    CONV_DIRECT,  /* the library's own GEMM kernel, implicit im2col (conv_direct.c) */
    CONV_WINOGRAD, /* F(4x4, 3x3): 36 GEMMs on the own kernel (conv_winograd.c) */
    CONV_POINTWISE, /* 1x1 stride 1: plain GEMMs on the own kernel (conv_pointwise.c) */
} conv_algo;

typedef enum {
    CONV_PASS_FORWARD, /* y = conv(x) + bias; also the fused scale + GELU forward */
    CONV_PASS_DX,      /* the input gradient */
    CONV_PASS_DW,      /* the weight gradient */
    CONV_PASS_DBIAS,   /* the bias gradient: the BLAS choice every BLAS backward takes */
} conv_pass;

/* Which algorithm runs a pass of a convolution of shape d:
 *  - transposed conv: im2col, every pass (kernel == stride with padding 0 never gets here: it
 *    runs on the own kernel, conv_patch.c, when ddpm_conv_use_direct is on and the CPU fast).
 *  - every pass but the bias gradient of a 1x1 stride-1 conv without padding: plain GEMMs on
 *    the own kernel when it is on and the CPU fast (conv_pointwise.c; no copies).
 *  - forward and input gradient of a 3x3 stride-1 conv with 16 or more channels in and out:
 *    Winograd F(4x4, 3x3) when it and the own kernel are on (ddpm_conv_use_winograd): 36
 *    multiplications a 4x4 tile instead of 144 (Zen 4, 1 thread: the U-Net's training step
 *    in 0.88x the direct kernel's time, the ContextUnet's in 0.80x).
 *  - forward: the own kernel if it is on (ddpm_conv_use_direct), the CPU has AVX2 + FMA and
 *    the padded phase planes' offsets fit in an int: any stride, and it drops the copies,
 *    BLAS's packing and the bias pass. Else the shifted GEMMs if they are on
 *    (ddpm_conv_use_shifted), the conv has stride 1 and a kernel larger than 1x1, the output
 *    block (max(C_in, C_out) x H_out (W + 2 pad) floats) fits in L2 (SHIFT_MAX_BLOCK) and
 *    C_in >= 16: KH KW GEMMs with K = C_in lose to one im2col GEMM when C_in is a few image
 *    channels (measured on the ContextUnet's first conv, C_in 3). Else im2col. The fused
 *    scale + GELU forward makes the same choice; only the own kernel fuses the epilogue, the
 *    BLAS paths run it as a pass over the output.
 *  - input gradient: the own kernel (on, AVX2 + FMA) for stride 1 with the same padding on
 *    both axes, pad <= KH - 1 (dx is then a stride-1 conv of dy with padding KH - 1 - pad) and
 *    int offsets. Else the BLAS choice below.
 *  - weight gradient: the own kernel (on, AVX2 + FMA) for stride 1 with int offsets in its
 *    channels-last copy. Else the BLAS choice below.
 *  - the BLAS choice for the backward (the bias gradient's pass): shifted when on and the
 *    shape fits as for the forward, whatever C_in; else im2col. The bias gradient never runs
 *    on the own kernel: ddpm_conv2d_backward sums it on its own when either other gradient
 *    does, and otherwise computes it in the BLAS pass's per-item loop with the gradients that
 *    go there. */
static conv_algo conv_choose_algorithm(const ddpm_conv_dims *d, conv_pass pass) {
    if (d->transposed) return CONV_IM2COL;
    const int own = direct_on() && ddpm_mk_fast();
    const int shifted = shifted_on() && conv_shifted_fits(d);
    ddpm_conv_dims dd;
    const int winograd = own && winograd_on() && conv_winograd_fits(d);
    if (own && conv_pointwise_fits(d) && pass != CONV_PASS_DBIAS) return CONV_POINTWISE;
    switch (pass) {
    case CONV_PASS_FORWARD:
        if (winograd) return CONV_WINOGRAD;
        if (own && conv_direct_fits(d)) return CONV_DIRECT;
        return shifted && d->C_in >= 16 ? CONV_SHIFTED : CONV_IM2COL;
    case CONV_PASS_DX:
        if (winograd) return CONV_WINOGRAD;
        if (own && conv_direct_dx_dims(&dd, d)) return CONV_DIRECT;
        break;
    case CONV_PASS_DW:
        if (winograd && conv_winograd_dw_fits(d)) return CONV_WINOGRAD;
        if (own && conv_direct_dw_fits(d)) return CONV_DIRECT;
        break;
    case CONV_PASS_DBIAS:
        break;
    }
    return shifted ? CONV_SHIFTED : CONV_IM2COL;
}

/* The largest of what every path the dispatch may pick needs; the own kernel's whether or not
 * the CPU takes it, but only while its switch is on, so set the switches before sizing. */
size_t ddpm_conv2d_workspace(const ddpm_conv_dims *d) {
    size_t w = conv_im2col_workspace(d);
    const int direct = direct_on();
    const size_t more[] = {shifted_on() && conv_shifted_fits(d) ? conv_shifted_workspace(d) : 0,
                           direct ? conv_direct_workspace(d) : 0,
                           direct ? conv_direct_dx_workspace(d) : 0,
                           direct ? conv_direct_dw_workspace(d) : 0,
                           direct && winograd_on() ? conv_winograd_workspace(d) : 0,
                           direct && winograd_on() ? conv_winograd_dw_workspace(d) : 0,
                           direct ? conv_pointwise_workspace(d) : 0};
    for (int i = 0; i < 7; i++) w = more[i] > w ? more[i] : w;
    return w;
}
/* The own kernel's transposed conv (conv_patch.c) where it fits and the kernel is fast. */
static int patch_on(const ddpm_conv_dims *d) {
    return direct_on() && ddpm_mk_fast() && conv_patch_fits(d);
}

size_t ddpm_conv_transpose2d_workspace(const ddpm_conv_dims *d) {
    const size_t w = conv_im2col_workspace(d), p = patch_on(d) ? conv_patch_workspace(d) : 0;
    return p > w ? p : w;
}

/* The forward on a BLAS path. */
static void blas_forward(conv_algo a, float *out, const float *inp, const float *weight,
                         const float *bias, const ddpm_conv_dims *d, float *ws) {
    if (a == CONV_SHIFTED)
        conv_shifted_forward(out, inp, weight, bias, d, ws);
    else
        conv_im2col_forward(out, inp, weight, bias, d, ws);
}

void ddpm_conv2d_forward(float *out, const float *inp, const float *weight, const float *bias,
                         const ddpm_conv_dims *d, float *ws) {
    DDPM_CHECK(!d->transposed);
    const conv_algo a = conv_choose_algorithm(d, CONV_PASS_FORWARD);
    if (a == CONV_WINOGRAD)
        conv_winograd_forward(out, inp, weight, bias, d, ws);
    else if (a == CONV_POINTWISE)
        conv_pointwise_forward(out, inp, weight, bias, d);
    else if (a == CONV_DIRECT)
        conv_direct_forward(out, inp, weight, bias, d, ws, 0, NULL, NULL);
    else
        blas_forward(a, out, inp, weight, bias, d, ws);
}

void ddpm_conv2d_scale_gelu_forward(float *out, const float *inp, const float *weight,
                                    const float *scale, const float *shift,
                                    const ddpm_conv_dims *d, float *ws) {
    DDPM_CHECK(!d->transposed);
    const conv_algo a = conv_choose_algorithm(d, CONV_PASS_FORWARD);
    if (a == CONV_DIRECT) {
        conv_direct_forward(out, inp, weight, NULL, d, ws, 0, scale, shift);
        return;
    }
    /* Winograd, pointwise and BLAS: the epilogue as a pass over the output */
    if (a == CONV_WINOGRAD)
        conv_winograd_forward(out, inp, weight, NULL, d, ws);
    else if (a == CONV_POINTWISE)
        conv_pointwise_forward(out, inp, weight, NULL, d);
    else
        blas_forward(a, out, inp, weight, NULL, d, ws);
    const size_t N = (size_t)d->H_out * d->W_out;
#pragma omp parallel for schedule(static) if ((size_t)d->B * d->C_out * N > OMP_MIN_WORK)
    for (int bc = 0; bc < d->B * d->C_out; bc++)
        scale_gelu_rows(out + (size_t)bc * N, 0, 1, (int)N, scale + bc % d->C_out,
                        shift + bc % d->C_out);
}

/* dbias [C_out] += dy summed over items and positions: each channel's sum is its items' sums
 * in order, whatever the threads. */
static void dbias_all(float *dbias, const float *dout, const ddpm_conv_dims *d) {
    const size_t P = (size_t)d->H_out * d->W_out;
#pragma omp parallel for schedule(static) if ((size_t)d->B * d->C_out * P > OMP_MIN_WORK)
    for (int co = 0; co < d->C_out; co++) {
        float tot = 0;
        for (int b = 0; b < d->B; b++) {
            const float *q = dout + ((size_t)b * d->C_out + co) * P;
            float s = 0;
#pragma omp simd reduction(+ : s)
            for (size_t i = 0; i < P; i++) s += q[i];
            tot += s;
        }
        dbias[co] += tot;
    }
}

/* The BLAS paths: shifted GEMMs or im2col, every requested gradient in one pass over the
 * items. */
static void blas_backward(conv_algo a, float *dinp, float *dweight, float *dbias,
                          const float *dout, const float *inp, const float *weight,
                          const ddpm_conv_dims *d, float *ws) {
    if (a == CONV_SHIFTED)
        conv_shifted_backward(dinp, dweight, dbias, dout, inp, weight, d, ws);
    else
        conv_im2col_backward(dinp, dweight, dbias, dout, inp, weight, d, ws);
}

void ddpm_conv2d_backward(float *dinp, float *dweight, float *dbias, const float *dout,
                          const float *inp, const float *weight, const ddpm_conv_dims *d,
                          float *ws) {
    DDPM_CHECK(!d->transposed);
    const conv_algo dx_algo = dinp ? conv_choose_algorithm(d, CONV_PASS_DX) : CONV_IM2COL;
    const int own_dx = dinp && dx_algo != CONV_IM2COL && dx_algo != CONV_SHIFTED;
    const conv_algo dw_algo = dweight ? conv_choose_algorithm(d, CONV_PASS_DW) : CONV_IM2COL;
    const int own_dw = dw_algo != CONV_IM2COL && dw_algo != CONV_SHIFTED;
    const conv_algo blas = conv_choose_algorithm(d, CONV_PASS_DBIAS);
    if (!own_dx && !own_dw) {
        blas_backward(blas, dinp, dweight, dbias, dout, inp, weight, d, ws);
        return;
    }
    /* one after the other: the paths share the workspace */
    if (!own_dx && dinp) blas_backward(blas, dinp, NULL, NULL, dout, inp, weight, d, ws);
    if (!own_dw && dweight) blas_backward(blas, NULL, dweight, NULL, dout, inp, weight, d, ws);
    if (dw_algo == CONV_WINOGRAD) conv_winograd_dw(dweight, dout, inp, d, ws);
    if (dw_algo == CONV_DIRECT) conv_direct_dw(dweight, dout, inp, d, ws);
    if (dw_algo == CONV_POINTWISE) conv_pointwise_dw(dweight, dout, inp, d, ws);
    if (dbias) dbias_all(dbias, dout, d);
    if (own_dx && dx_algo == CONV_WINOGRAD) conv_winograd_dx(dinp, dout, weight, d, ws);
    if (own_dx && dx_algo == CONV_DIRECT) conv_direct_dx(dinp, dout, weight, d, ws);
    if (own_dx && dx_algo == CONV_POINTWISE) conv_pointwise_dx(dinp, dout, weight, d);
}

/* The transposed conv: non-overlapping patches (kernel == stride, padding 0) on the own kernel,
 * the rest through im2col. */
void ddpm_conv_transpose2d_forward(float *out, const float *inp, const float *weight,
                                   const float *bias, const ddpm_conv_dims *d, float *ws) {
    DDPM_CHECK(d->transposed);
    if (patch_on(d))
        conv_patch_forward(out, inp, weight, bias, d, ws);
    else
        conv_transpose_im2col_forward(out, inp, weight, bias, d, ws);
}

void ddpm_conv_transpose2d_backward(float *dinp, float *dweight, float *dbias, const float *dout,
                                    const float *inp, const float *weight, const ddpm_conv_dims *d,
                                    float *ws) {
    DDPM_CHECK(d->transposed);
    if (patch_on(d)) {
        conv_patch_backward(dinp, dweight, dout, inp, weight, d, ws);
        if (dbias) dbias_all(dbias, dout, d);
    } else {
        conv_transpose_im2col_backward(dinp, dweight, dbias, dout, inp, weight, d, ws);
    }
}

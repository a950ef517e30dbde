/* ops_conv.c - conv2d and transposed conv2d, forward and backward.
 *
 * Where the CPU has AVX2 + FMA, conv2d runs on the library's own register-tiled GEMM kernel
 * (mlp_kernels.c) with an implicit im2col: the forward for any stride, and for stride-1
 * convolutions the input gradient (itself a conv) and the weight gradient; the kernel's panels
 * are gathered straight from padded copies of the input (see "the library's own GEMM kernel"
 * below). The BLAS paths, one batch item at a time, take everything else: im2col + sgemm, and
 * for stride-1 convolutions with small outputs one GEMM per kernel row on shifted copies of the
 * zero-padded input (see "shifted GEMMs"). The transposed convolution is the adjoint of
 * conv2d's input gradient, so it reuses the same im2col/col2im pair with the roles of input and
 * output swapped. Naive direct-loop references sit at the end; the tests compare every path
 * with them. */
#include "core/internal.h"
#include "kernels/kernels.h"
#include "core/vmath.h"

#include <cblas.h>
#include <omp.h>

#define OMP_MIN_WORK 32768

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

static int is_pointwise(const ddpm_conv_dims *d) {
    return !d->transposed && d->KH == 1 && d->KW == 1 && d->stride == 1 && d->pad == 0;
}

/* How a call is split. With B >= 2 the items run concurrently, one parallel region per call and
 * a single-threaded sgemm on each thread (OpenBLAS runs single-threaded inside an OpenMP
 * region): one region costs one wake-up of the team, whereas a threaded sgemm per item costs
 * one per GEMM, and on a loaded 2-core machine each wake-up can cost a scheduler time slice
 * (measured: 110 ms instead of 7 ms for 8 items of a 64-channel 28x28 conv). Each slot has its
 * own column matrix and, for backward, its own dweight/dbias partial sums, reduced at the end
 * so the result does not depend on scheduling. With one item, BLAS's threads and a parallel
 * im2col share the work instead. */
typedef struct {
    int slots;   /* items in flight: min(B, threads) */
    size_t col;  /* floats of one column matrix */
    size_t part; /* floats of one slot's dweight + dbias partial (0 with one slot) */
} conv_plan;

static conv_plan plan_of(const ddpm_conv_dims *d) {
    conv_plan p;
    const int T = omp_get_max_threads();
    p.slots = d->B < T ? d->B : T;
    if (p.slots < 1) p.slots = 1;
    if (d->transposed)
        p.col = (size_t)d->C_out * d->KH * d->KW * d->H * d->W;
    else
        p.col = is_pointwise(d) ? 0 : (size_t)d->C_in * d->KH * d->KW * d->H_out * d->W_out;
    p.part = p.slots > 1 ? (size_t)d->C_out * d->C_in * d->KH * d->KW + d->C_out : 0;
    return p;
}

static size_t workspace_of(const ddpm_conv_dims *d) {
    const conv_plan p = plan_of(d);
    return ddpm_size_mul((size_t)p.slots, p.col + p.part);
}

static size_t shift_workspace(const ddpm_conv_dims *d);
static int is_shifted(const ddpm_conv_dims *d);
static size_t direct_workspace(const ddpm_conv_dims *d);
static size_t direct_dx_workspace(const ddpm_conv_dims *d);
static size_t direct_dw_workspace(const ddpm_conv_dims *d);
size_t ddpm_conv2d_workspace(const ddpm_conv_dims *d) {
    size_t w = workspace_of(d);
    const size_t more[] = {is_shifted(d) ? shift_workspace(d) : 0, direct_workspace(d),
                           direct_dx_workspace(d), direct_dw_workspace(d)};
    for (int i = 0; i < 4; i++) w = more[i] > w ? more[i] : w;
    return w;
}
size_t ddpm_conv_transpose2d_workspace(const ddpm_conv_dims *d) { return workspace_of(d); }

/* The geometry im2col/col2im work in: an image [C, Hi, Wi] seen through a KH x KW window at
 * stride s and padding p, giving Ho x Wo positions. For conv2d the image is the input; for the
 * transposed conv it is the output (the transposed conv's input plays the positions). */
typedef struct {
    int C, Hi, Wi, KH, KW, s, p, Ho, Wo;
} geom;

/* col [C KH KW, Ho Wo]: row (c, ki, kj) holds img[c, oh s - p + ki, ow s - p + kj] (0 outside).
 * par: split the rows over threads (only when the caller is not already parallel). */
static void im2col(float *col, const float *img, const geom *g, int par) {
    const int rows = g->C * g->KH * g->KW;
    const size_t N = (size_t)g->Ho * g->Wo;
#pragma omp parallel for schedule(static) if (par && (size_t)rows * N > OMP_MIN_WORK)
    for (int r = 0; r < rows; r++) {
        const int c = r / (g->KH * g->KW), ki = r / g->KW % g->KH, kj = r % g->KW;
        const float *src = img + (size_t)c * g->Hi * g->Wi;
        float *dst = col + (size_t)r * N;
        for (int oh = 0; oh < g->Ho; oh++) {
            const int ih = oh * g->s - g->p + ki;
            float *drow = dst + (size_t)oh * g->Wo;
            if (ih < 0 || ih >= g->Hi) {
                memset(drow, 0, (size_t)g->Wo * sizeof(float));
                continue;
            }
            const float *srow = src + (size_t)ih * g->Wi;
            if (g->s == 1) {
                /* Contiguous run: zeros, a copy of the row's valid part, zeros. */
                int lo = g->p - kj, hi = g->Wi + g->p - kj; /* ow range with iw in [0, Wi) */
                if (lo < 0) lo = 0;
                if (hi > g->Wo) hi = g->Wo;
                if (hi < lo) hi = lo;
                for (int ow = 0; ow < lo; ow++) drow[ow] = 0;
                if (hi > lo)
                    memcpy(drow + lo, srow + lo - g->p + kj, (size_t)(hi - lo) * sizeof(float));
                for (int ow = hi; ow < g->Wo; ow++) drow[ow] = 0;
            } else {
                for (int ow = 0; ow < g->Wo; ow++) {
                    const int iw = ow * g->s - g->p + kj;
                    drow[ow] = (iw >= 0 && iw < g->Wi) ? srow[iw] : 0.0f;
                }
            }
        }
    }
}

/* img [C, Hi, Wi] += the adjoint of im2col applied to col. Parallel over channels: every row of
 * channel c writes only into plane c, so threads never share an output element. */
static void col2im_add(float *img, const float *col, const geom *g, int par) {
    const size_t N = (size_t)g->Ho * g->Wo;
    const size_t work = (size_t)g->C * g->KH * g->KW * N;
#pragma omp parallel for schedule(static) if (par && work > OMP_MIN_WORK && g->C > 1)
    for (int c = 0; c < g->C; c++) {
        float *dst = img + (size_t)c * g->Hi * g->Wi;
        for (int ki = 0; ki < g->KH; ki++)
            for (int kj = 0; kj < g->KW; kj++) {
                const float *src = col + ((size_t)(c * g->KH + ki) * g->KW + kj) * N;
                for (int oh = 0; oh < g->Ho; oh++) {
                    const int ih = oh * g->s - g->p + ki;
                    if (ih < 0 || ih >= g->Hi) continue;
                    float *drow = dst + (size_t)ih * g->Wi;
                    const float *srow = src + (size_t)oh * g->Wo;
                    for (int ow = 0; ow < g->Wo; ow++) {
                        const int iw = ow * g->s - g->p + kj;
                        if (iw >= 0 && iw < g->Wi) drow[iw] += srow[ow];
                    }
                }
            }
    }
}

/* dbias [C] += sum over positions of dy [C, N] (one item). */
static void bias_backward_item(float *dbias, const float *dy, int C, size_t N) {
    for (int c = 0; c < C; c++) {
        const float *p = dy + (size_t)c * N;
        float s = 0;
#pragma omp simd reduction(+ : s)
        for (size_t i = 0; i < N; i++) s += p[i];
        dbias[c] += s;
    }
}

/* out [C, N] = bias broadcast (or 0): the GEMM then accumulates onto it with beta = 1. */
static void fill_bias(float *out, const float *bias, int C, size_t N) {
    for (int c = 0; c < C; c++) {
        float *o = out + (size_t)c * N;
        const float v = bias ? bias[c] : 0.0f;
        for (size_t i = 0; i < N; i++) o[i] = v;
    }
}

/* Everything one call's items need; each op's per-item work is a function of (job, item, slot,
 * par), where slot picks the thread's workspace and par says whether the item may use threads. */
typedef struct {
    const ddpm_conv_dims *d;
    conv_plan p;
    geom g;
    int K; /* conv2d: C_in KH KW; transposed: C_out KH KW */
    int N; /* positions of the column matrix */
    size_t in_sz, out_sz, nw;
    const float *inp, *weight, *bias, *dout;
    float *out, *dinp, *dweight, *dbias, *ws;
} conv_job;

static conv_job job_of(const ddpm_conv_dims *d, float *ws) {
    conv_job j;
    memset(&j, 0, sizeof j);
    j.d = d;
    j.p = plan_of(d);
    j.ws = ws;
    j.in_sz = (size_t)d->C_in * d->H * d->W;
    j.out_sz = (size_t)d->C_out * d->H_out * d->W_out;
    if (d->transposed) {
        /* The output is the "image" the window slides over; the input's H x W the positions. */
        j.g = (geom){d->C_out, d->H_out, d->W_out, d->KH, d->KW, d->stride, d->pad, d->H, d->W};
        j.K = d->C_out * d->KH * d->KW;
        j.N = d->H * d->W;
        j.nw = (size_t)d->C_in * j.K;
    } else {
        j.g = (geom){d->C_in, d->H, d->W, d->KH, d->KW, d->stride, d->pad, d->H_out, d->W_out};
        j.K = d->C_in * d->KH * d->KW;
        j.N = d->H_out * d->W_out;
        j.nw = (size_t)d->C_out * j.K;
    }
    return j;
}

static float *slot_col(const conv_job *j, int slot) {
    return j->ws + slot * (j->p.col + j->p.part);
}
/* Backward's dweight/dbias targets: this slot's partials with several slots, else the outputs. */
static float *slot_dw(const conv_job *j, int slot) {
    return j->p.part ? slot_col(j, slot) + j->p.col : j->dweight;
}
static float *slot_db(const conv_job *j, int slot) {
    return j->p.part ? slot_col(j, slot) + j->p.col + j->nw : j->dbias;
}

typedef void (*item_fn)(const conv_job *j, int b, int slot, int par);

static void run_items(const conv_job *j, item_fn item) {
    if (j->p.slots > 1) {
#pragma omp parallel for schedule(static) num_threads(j->p.slots)
        for (int b = 0; b < j->d->B; b++) item(j, b, omp_get_thread_num(), 0);
    } else {
        for (int b = 0; b < j->d->B; b++) item(j, b, 0, 1);
    }
}

static void partials_zero(const conv_job *j) {
    if (!j->p.part) return;
    for (int t = 0; t < j->p.slots; t++)
        memset(slot_col(j, t) + j->p.col, 0, j->p.part * sizeof(float));
}

/* dweight, dbias += the sum of every slot's partials, in slot order. */
static void partials_reduce(const conv_job *j) {
    if (!j->p.part) return;
    const size_t part = j->p.part;
#pragma omp parallel for schedule(static) if (part > OMP_MIN_WORK)
    for (size_t i = 0; i < part; i++) {
        float s = 0;
        for (int t = 0; t < j->p.slots; t++) s += slot_col(j, t)[j->p.col + i];
        if (i < j->nw) {
            if (j->dweight) j->dweight[i] += s;
        } else if (j->dbias) {
            j->dbias[i - j->nw] += s;
        }
    }
}

static void conv_fwd_item(const conv_job *j, int b, int slot, int par) {
    const ddpm_conv_dims *d = j->d;
    const float *x = j->inp + b * j->in_sz;
    float *y = j->out + b * j->out_sz;
    const float *src = x;
    if (j->p.col) {
        float *col = slot_col(j, slot);
        im2col(col, x, &j->g, par);
        src = col;
    }
    fill_bias(y, j->bias, d->C_out, (size_t)j->N);
    // y [C_out, N] += weight [C_out, K] @ col [K, N]
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, d->C_out, j->N, j->K, 1.0f, j->weight,
                j->K, src, j->N, 1.0f, y, j->N);
}

static void conv_bwd_item(const conv_job *j, int b, int slot, int par) {
    const ddpm_conv_dims *d = j->d;
    const int K = j->K, N = j->N;
    const float *x = j->inp + b * j->in_sz;
    const float *dy = j->dout + b * j->out_sz;
    float *col = slot_col(j, slot);
    if (j->dbias) bias_backward_item(slot_db(j, slot), dy, d->C_out, (size_t)N);
    if (j->dweight) {
        const float *src = x;
        if (j->p.col) {
            im2col(col, x, &j->g, par);
            src = col;
        }
        // dweight [C_out, K] += dy [C_out, N] @ col^T [N, K]
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, d->C_out, K, N, 1.0f, dy, N, src, N,
                    1.0f, slot_dw(j, slot), K);
    }
    if (j->dinp) {
        float *dx = j->dinp + b * j->in_sz;
        if (!j->p.col) {
            // pointwise: dx [C_in, N] += weight^T [C_in, C_out] @ dy [C_out, N]
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, K, N, d->C_out, 1.0f, j->weight, K,
                        dy, N, 1.0f, dx, N);
        } else {
            // dcol [K, N] = weight^T @ dy, then scattered back onto the input positions
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, K, N, d->C_out, 1.0f, j->weight, K,
                        dy, N, 0.0f, col, N);
            col2im_add(dx, col, &j->g, par);
        }
    }
}

static void convt_fwd_item(const conv_job *j, int b, int slot, int par) {
    const ddpm_conv_dims *d = j->d;
    float *col = slot_col(j, slot);
    float *y = j->out + b * j->out_sz;
    // col [C_out KH KW, N] = weight^T [K, C_in] @ x [C_in, N]   (weight viewed as [C_in, K])
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, j->K, j->N, d->C_in, 1.0f, j->weight, j->K,
                j->inp + b * j->in_sz, j->N, 0.0f, col, j->N);
    fill_bias(y, j->bias, d->C_out, (size_t)d->H_out * d->W_out);
    col2im_add(y, col, &j->g, par);
}

static void convt_bwd_item(const conv_job *j, int b, int slot, int par) {
    const ddpm_conv_dims *d = j->d;
    const int K = j->K, N = j->N;
    float *col = slot_col(j, slot);
    const float *dy = j->dout + b * j->out_sz;
    if (j->dbias) bias_backward_item(slot_db(j, slot), dy, d->C_out, (size_t)d->H_out * d->W_out);
    if (!j->dinp && !j->dweight) return;
    im2col(col, dy, &j->g, par); // dcol [K, N]
    if (j->dinp)
        // dx [C_in, N] += weight [C_in, K] @ dcol [K, N]
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, d->C_in, N, K, 1.0f, j->weight, K,
                    col, N, 1.0f, j->dinp + b * j->in_sz, N);
    if (j->dweight)
        // dweight [C_in, K] += x [C_in, N] @ dcol^T [N, K]
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, d->C_in, K, N, 1.0f,
                    j->inp + b * j->in_sz, N, col, N, 1.0f, slot_dw(j, slot), K);
}

/* dst [H + 2 pad, W + 2 pad] = the plane src [H, W] with a border of pad zeros. */
static void pad_plane(float *dst, const float *src, int H, int W, int pad) {
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

/* ---- stride-1 convolutions as shifted GEMMs (no im2col) ----
 *
 * With stride 1, tap (ki, kj) of the kernel reads the zero-padded input shifted by
 * ki Wp + kj, where Wp = W + 2 pad: if the output is computed at the padded width (Wp columns a
 * row, the last KW - 1 of them junk), every tap's input is one contiguous window of each padded
 * channel plane. So instead of im2col's KH KW copies of the input, KW copies suffice, each plane
 * shifted by kj (rows (c, kj) of `xs`), and kernel row ki is one GEMM on a window of them:
 *   y_pad [C_out, H_out Wp] += W_ki [C_out, C_in KW] @ xs[:, ki Wp : ki Wp + H_out Wp].
 * Measured on the ContextUnet (16x16, 64 channels) against im2col's single GEMM: forward -7%,
 * forward + backward -16%; one GEMM per tap (K = C_in, no copy at all) was as fast in training
 * but slower in the forward. The junk columns of the output gradient are zeroed, so backward uses
 * the same windows: dweight one GEMM per kernel row, dinput W_ki^T @ dy accumulated into the
 * windows of a gradient `xs`, whose KW shifted rows are then summed back into each plane. */

static int shifted_enabled = 1;
void ddpm_conv_use_shifted(int on) { shifted_enabled = on; }

/* Each kernel row's GEMM reads and writes the whole output block (C x H_out Wp floats): worth
 * it while that block stays in L2 (512 KB a core here). At 64x64 with 64 channels (SimpleUnet's
 * first level) it does not, and im2col's single GEMM was measured faster for the network. */
#define SHIFT_MAX_BLOCK 65536

static int is_shifted(const ddpm_conv_dims *d) {
    if (!shifted_enabled || d->transposed || d->stride != 1 || d->KH * d->KW == 1) return 0;
    const size_t C = d->C_in > d->C_out ? d->C_in : d->C_out;
    return C * d->H_out * (size_t)(d->W + 2 * d->pad) <= SHIFT_MAX_BLOCK;
}

typedef struct {
    int slots, Hp, Wp, K;  /* K = C_in KW: the inner dimension of each row's GEMM */
    size_t ls;   /* floats of a row of xs: Hp Wp */
    size_t Np;   /* output positions at the padded width: H_out Wp */
    size_t nw;   /* weights */
    size_t slot; /* floats per slot: xs [C_in KW, ls], y_pad [C_out, Np],
                  * partial [KH, C_out, C_in KW] + [C_out] */
} shift_plan;

static shift_plan shift_plan_of(const ddpm_conv_dims *d) {
    shift_plan p;
    const int T = omp_get_max_threads();
    p.slots = d->B < T ? d->B : T;
    if (p.slots < 1) p.slots = 1;
    p.Hp = d->H + 2 * d->pad;
    p.Wp = d->W + 2 * d->pad;
    p.K = d->C_in * d->KW;
    p.ls = (size_t)p.Hp * p.Wp;
    p.Np = (size_t)d->H_out * p.Wp;
    p.nw = (size_t)d->C_out * d->C_in * d->KH * d->KW;
    p.slot = (size_t)p.K * p.ls + (size_t)d->C_out * p.Np + p.nw + d->C_out;
    return p;
}

/* Workspace: the weights regrouped by kernel row [KH, C_out, C_in KW], then one block per slot. */
static size_t shift_workspace(const ddpm_conv_dims *d) {
    const shift_plan p = shift_plan_of(d);
    const size_t per = ddpm_size_mul((size_t)p.slots, p.slot);
    return per == SIZE_MAX || per > SIZE_MAX - p.nw ? SIZE_MAX : per + p.nw;
}

typedef struct {
    const ddpm_conv_dims *d;
    shift_plan p;
    const float *inp, *weight, *bias, *dout, *wt;
    float *out, *dinp, *ws;
    int want_dw, want_db;
} shift_job;

/* A slot's buffers. */
typedef struct {
    float *xs, *yp, *part;
} shift_bufs;

static shift_bufs shift_slot(const shift_job *j, int slot) {
    const ddpm_conv_dims *d = j->d;
    shift_bufs b;
    b.xs = j->ws + j->p.nw + slot * j->p.slot;
    b.yp = b.xs + (size_t)j->p.K * j->p.ls;
    b.part = b.yp + (size_t)d->C_out * j->p.Np;
    return b;
}

/* xs [C_in KW, ls]: row (c, kj) is channel c's zero-padded plane shifted left by kj (row
 * (c, 0) is the padded plane itself; past its end the shifted rows read zeros). */
static void shifted_rows(float *xs, const float *x, const ddpm_conv_dims *d, const shift_plan *p) {
    for (int c = 0; c < d->C_in; c++) {
        float *dst = xs + (size_t)c * d->KW * p->ls;
        pad_plane(dst, x + (size_t)c * d->H * d->W, d->H, d->W, d->pad);
        for (int kj = 1; kj < d->KW; kj++) {
            float *row = dst + (size_t)kj * p->ls;
            memcpy(row, dst + kj, sizeof(float) * (p->ls - kj));
            memset(row + p->ls - kj, 0, sizeof(float) * kj);
        }
    }
}

static void shift_fwd_item(const shift_job *j, int b, int slot) {
    const ddpm_conv_dims *d = j->d;
    const shift_plan *p = &j->p;
    const shift_bufs s = shift_slot(j, slot);
    shifted_rows(s.xs, j->inp + (size_t)b * d->C_in * d->H * d->W, d, p);
    for (int ki = 0; ki < d->KH; ki++)
        // y_pad [C_out, Np] (+)= W_ki [C_out, C_in KW] @ window [C_in KW, Np] (rows ls apart)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, d->C_out, (int)p->Np, p->K, 1.0f,
                    j->wt + (size_t)ki * d->C_out * p->K, p->K, s.xs + (size_t)ki * p->Wp,
                    (int)p->ls, ki ? 1.0f : 0.0f, s.yp, (int)p->Np);
    float *y = j->out + (size_t)b * d->C_out * d->H_out * d->W_out;
    for (int co = 0; co < d->C_out; co++) {
        const float bv = j->bias ? j->bias[co] : 0.0f;
        for (int oh = 0; oh < d->H_out; oh++) {
            const float *src = s.yp + (size_t)co * p->Np + (size_t)oh * p->Wp;
            float *dst = y + ((size_t)co * d->H_out + oh) * d->W_out;
            for (int ow = 0; ow < d->W_out; ow++) dst[ow] = src[ow] + bv;
        }
    }
}

static void shift_bwd_item(const shift_job *j, int b, int slot) {
    const ddpm_conv_dims *d = j->d;
    const shift_plan *p = &j->p;
    const shift_bufs s = shift_slot(j, slot);
    const float *dy = j->dout + (size_t)b * d->C_out * d->H_out * d->W_out;
    /* dy at the padded width, junk columns zero */
    for (int co = 0; co < d->C_out; co++)
        for (int oh = 0; oh < d->H_out; oh++) {
            const float *src = dy + ((size_t)co * d->H_out + oh) * d->W_out;
            float *dst = s.yp + (size_t)co * p->Np + (size_t)oh * p->Wp;
            for (int ow = 0; ow < d->W_out; ow++) dst[ow] = src[ow];
            for (int ow = d->W_out; ow < p->Wp; ow++) dst[ow] = 0.0f;
        }
    if (j->want_db) bias_backward_item(s.part + p->nw, dy, d->C_out, (size_t)d->H_out * d->W_out);
    if (j->want_dw) {
        shifted_rows(s.xs, j->inp + (size_t)b * d->C_in * d->H * d->W, d, p);
        for (int ki = 0; ki < d->KH; ki++)
            // dW_ki [C_out, C_in KW] += dy_pad [C_out, Np] @ window^T [Np, C_in KW]
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, d->C_out, p->K, (int)p->Np,
                        1.0f, s.yp, (int)p->Np, s.xs + (size_t)ki * p->Wp, (int)p->ls, 1.0f,
                        s.part + (size_t)ki * d->C_out * p->K, p->K);
    }
    if (j->dinp) {
        memset(s.xs, 0, sizeof(float) * p->K * p->ls);
        for (int ki = 0; ki < d->KH; ki++)
            // window of dxs [C_in KW, Np] += W_ki^T [C_in KW, C_out] @ dy_pad [C_out, Np]
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, p->K, (int)p->Np, d->C_out,
                        1.0f, j->wt + (size_t)ki * d->C_out * p->K, p->K, s.yp, (int)p->Np, 1.0f,
                        s.xs + (size_t)ki * p->Wp, (int)p->ls);
        /* dx_pad[i + kj] += dxs row (c, kj)[i]: the interior back into dx */
        float *dx = j->dinp + (size_t)b * d->C_in * d->H * d->W;
        for (int c = 0; c < d->C_in; c++)
            for (int kj = 0; kj < d->KW; kj++) {
                const float *src = s.xs + ((size_t)c * d->KW + kj) * p->ls;
                for (int h = 0; h < d->H; h++) {
                    float *dst = dx + ((size_t)c * d->H + h) * d->W;
                    /* padded position (h + pad, w + pad) is row index i + kj */
                    const long base = (long)(h + d->pad) * p->Wp + d->pad - kj;
                    const int w0 = base < 0 ? (int)-base : 0;
                    for (int w = w0; w < d->W; w++) dst[w] += src[base + w];
                }
            }
    }
}

/* wt [KH, C_out, C_in KW] = weight [C_out, C_in, KH, KW] regrouped by kernel row. */
static void regroup_weights(float *wt, const float *weight, const ddpm_conv_dims *d) {
    const int KK = d->KH * d->KW;
    for (int ki = 0; ki < d->KH; ki++)
        for (int co = 0; co < d->C_out; co++)
            for (int ci = 0; ci < d->C_in; ci++)
                memcpy(wt + (((size_t)ki * d->C_out + co) * d->C_in + ci) * d->KW,
                       weight + ((size_t)co * d->C_in + ci) * KK + (size_t)ki * d->KW,
                       sizeof(float) * d->KW);
}

static void run_shift(const shift_job *j, void (*fn)(const shift_job *, int, int)) {
    if (j->p.slots > 1) {
#pragma omp parallel for schedule(static) num_threads(j->p.slots)
        for (int b = 0; b < j->d->B; b++) fn(j, b, omp_get_thread_num());
    } else {
        for (int b = 0; b < j->d->B; b++) fn(j, b, 0);
    }
}

static void shift_forward(float *out, const float *inp, const float *weight, const float *bias,
                          const ddpm_conv_dims *d, float *ws) {
    shift_job j = {d, shift_plan_of(d), inp, weight, bias, NULL, ws, out, NULL, ws, 0, 0};
    regroup_weights(ws, weight, d);
    run_shift(&j, shift_fwd_item);
}

static void shift_backward(float *dinp, float *dweight, float *dbias, const float *dout,
                           const float *inp, const float *weight, const ddpm_conv_dims *d,
                           float *ws) {
    shift_job j = {d, shift_plan_of(d), inp, weight, NULL, dout, ws, NULL, dinp, ws,
                   dweight != NULL, dbias != NULL};
    if (dinp) regroup_weights(ws, weight, d);
    const size_t part = j.p.nw + d->C_out;
    for (int t = 0; t < j.p.slots; t++) memset(shift_slot(&j, t).part, 0, sizeof(float) * part);
    run_shift(&j, shift_bwd_item);
    /* dweight [C_out, C_in, KH, KW], dbias += the slots' partials [KH, C_out, C_in KW] +
     * [C_out], in slot order */
    const int KW = d->KW, KK = d->KH * d->KW;
    const size_t row = (size_t)d->C_out * j.p.K;
#pragma omp parallel for schedule(static) if (part > OMP_MIN_WORK)
    for (size_t i = 0; i < part; i++) {
        float s = 0;
        for (int t = 0; t < j.p.slots; t++) s += shift_slot(&j, t).part[i];
        if (i < j.p.nw) {
            if (!dweight) continue;
            const size_t ki = i / row, r = i % row; /* r = co C_in KW + ci KW + kj */
            const size_t co = r / j.p.K, cikj = r % j.p.K, ci = cikj / KW, kj = cikj % KW;
            dweight[(co * d->C_in + ci) * KK + ki * KW + kj] += s;
        } else if (dbias) {
            dbias[i - j.p.nw] += s;
        }
    }
}

/* ---- conv2d forward on the library's own GEMM kernel (implicit im2col) ----
 *
 * y [C_out, N] = W [C_out, K] @ col [K, N] + bias runs on the 6 x 16 register-tiled kernel of
 * mlp_kernels.c, and col is never built: each 16-position panel of it is gathered, one block of
 * DIRECT_KC rows at a time, straight from a zero-padded copy of the input just before the kernel
 * consumes it from L1. The copy is split into stride x stride phase planes,
 *   xq[c, pi, pj, hq, wq] = x_pad[c, hq stride + pi, wq stride + pj]   (Hq x Wq each),
 * so that tap (ki, kj) of output (oh, ow) is xq[c, ki % s, kj % s, oh + ki / s, ow + kj / s]:
 * row k = (c, ki, kj) of col is the phase plane at offset off[k] read at oh Wq + ow, and the 16
 * positions of a panel are runs of consecutive floats for any stride (with stride 1 the copy is
 * just the padded input). The kernel reads the weights in place and writes the bias-added
 * outputs straight into y. Against im2col or the shifted GEMMs through OpenBLAS this
 * drops the copies, BLAS's packing of both operands (11% of the forward in a profile) and the
 * bias pass, and computes no junk columns at small resolutions. Results do not depend on the
 * thread count: each output is one fixed sequence of fmas. */

static int direct_enabled = 1;
void ddpm_conv_use_direct(int on) { direct_enabled = on; }

#define DIRECT_KC 256
#define DIRECT_GUARD 16 /* zeros before and after the padded copy: the gather reads around runs */

static int direct_fits(const ddpm_conv_dims *d) {
    if (d->transposed) return 0;
    const long long s = d->stride, hq = (d->H + 2LL * d->pad + s - 1) / s,
                    wq = (d->W + 2LL * d->pad + s - 1) / s;
    return hq * wq * s * s * d->C_in < (1LL << 30); /* offsets are ints */
}

static int is_direct(const ddpm_conv_dims *d) {
    return direct_enabled && direct_fits(d) && ddpm_mk_fast();
}

/* Chunks of up to DIRECT_CH panels share each row tile of the weights: the kernel runs one
 * (6 x DIRECT_KC) tile, from L1, over all of them before moving to the next, so the weights
 * stream from L2 or memory once per chunk instead of once per panel. That matters when
 * there are many weights and few positions (SimpleUnet's 1024 channels at 4x4: 37 MB of
 * weights for one panel an image), so at low resolution a chunk takes panels from several
 * items: G items (a group) are copied and chunked together. */
#define DIRECT_CH 8

typedef struct {
    int slots;   /* groups in flight: min(groups, threads) */
    int G;       /* items per group */
    int T;       /* threads (panel buffers) */
    int Hq, Wq, K, N, panels; /* panels: per item */
    size_t off;  /* floats reserved for the K row offsets (ints) */
    size_t xp;   /* floats of one item's padded copy with its guards */
    size_t buf;  /* floats of one thread's chunk of packed panels */
} direct_plan;

static direct_plan direct_plan_of(const ddpm_conv_dims *d) {
    direct_plan p;
    p.T = omp_get_max_threads();
    if (p.T < 1) p.T = 1;
    const int s = d->stride;
    p.Hq = (d->H + 2 * d->pad + s - 1) / s;
    p.Wq = (d->W + 2 * d->pad + s - 1) / s;
    p.K = d->C_in * d->KH * d->KW;
    p.N = d->H_out * d->W_out;
    p.panels = (p.N + DDPM_MK_NR - 1) / DDPM_MK_NR;
    const int per_thread = (d->B + p.T - 1) / p.T;
    p.G = p.panels >= DIRECT_CH ? 1 : DIRECT_CH / p.panels;
    if (p.G > per_thread) p.G = per_thread;
    const int groups = (d->B + p.G - 1) / p.G;
    p.slots = groups < p.T ? groups : p.T;
    p.off = ((size_t)p.K + 15) / 16 * 16;
    p.xp = ((size_t)d->C_in * s * s * p.Hq * p.Wq + 2 * DIRECT_GUARD + 15) / 16 * 16;
    p.buf = (size_t)DIRECT_CH * DIRECT_KC * DDPM_MK_NR;
    return p;
}

/* Sized whether or not the CPU takes the path (the kernels' choice can be overridden later):
 * the offsets, then each thread's panel chunk, then each slot's G padded copies. */
static size_t direct_workspace(const ddpm_conv_dims *d) {
    if (!direct_enabled || !direct_fits(d)) return 0;
    const direct_plan p = direct_plan_of(d);
    const size_t copies = ddpm_size_mul((size_t)p.slots * p.G, p.xp),
                 fixed = p.off + (size_t)p.T * p.buf;
    return copies == SIZE_MAX || copies > SIZE_MAX - fixed ? SIZE_MAX : copies + fixed;
}

typedef struct {
    const ddpm_conv_dims *d;
    direct_plan p;
    const int *off;
    const float *weight, *bias;
    int acc; /* add to y instead of overwriting it */
    float *bufs, *copies;
    const float *scale, *shift; /* the fused epilogue, or NULL */
} direct_job;

/* C [M, columns] (+)= A [M, K] @ B [K, columns] where B is gathered (ddpm_mk_pack_gather):
 * B(k, column) = src[off[k] + pos] for the column's pos. The forward's columns are output
 * positions (off: the taps), the weight gradient's are taps (off: the positions). */
typedef struct {
    const float *a;
    ptrdiff_t lda;
    const int *off;
    int M, K;
    ptrdiff_t ldc;
    const float *bias; /* per row of C, added when not accumulating */
    int acc;           /* add to C instead of overwriting it */
    const float *scale, *shift; /* if set: C = gelu(C scale + shift) per row, at the end */
} gathered_gemm;

/* The fused epilogue on an mr x nl block of C (in L1 right after the kernel wrote it). */
static void scale_gelu_rows(float *c, ptrdiff_t ldc, int mr, int nl, const float *scale,
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

/* One panel of a chunk: nl <= 16 columns of C starting at c, gathered from src at pos[]. */
typedef struct {
    const float *src;
    float *c;
    int nl;
    int pos[DDPM_MK_NR];
} direct_panel;

/* The columns of np <= DIRECT_CH panels, packed into buf one block of K at a time. */
static void gathered_chunk(const gathered_gemm *gg, const direct_panel *ps, int np, float *buf) {
    const int M = gg->M, K = gg->K;
    const size_t stride = (size_t)DIRECT_KC * DDPM_MK_NR;
    for (int k0 = 0; k0 < K; k0 += DIRECT_KC) {
        const int kc = K - k0 < DIRECT_KC ? K - k0 : DIRECT_KC;
        for (int i = 0; i < np; i++)
            ddpm_mk_pack_gather(buf + i * stride, ps[i].src, gg->off + k0, kc, ps[i].pos,
                                ps[i].nl);
        for (int m0 = 0, mr; m0 < M; m0 += mr) {
            mr = ddpm_mk_tile_rows(M - m0);
            for (int i = 0; i < np; i++) {
                const ddpm_mk_gemm g = {
                    .M = mr, .N = ps[i].nl, .K = kc, .a = gg->a + m0 * gg->lda + k0,
                    .sam = gg->lda, .sak = 1, .b = buf + i * stride, .b_packed = 1,
                    .c = ps[i].c + m0 * gg->ldc, .ldc = gg->ldc, .accumulate = k0 > 0 || gg->acc,
                    .bias_m = k0 > 0 || !gg->bias ? NULL : gg->bias + m0};
                ddpm_mk_gemm_run(&g, 0, mr, 0, ps[i].nl);
                if (gg->scale && k0 + kc == K)
                    scale_gelu_rows(g.c, gg->ldc, mr, ps[i].nl, gg->scale + m0, gg->shift + m0);
            }
        }
    }
}

/* Output positions 16 p .. of an item: where they sit in its padded planes. */
static void panel_at(direct_panel *pn, const direct_job *j, const float *planes, float *y, int p) {
    const int n0 = p * DDPM_MK_NR;
    pn->src = planes;
    pn->c = y + n0;
    pn->nl = j->p.N - n0 < DDPM_MK_NR ? j->p.N - n0 : DDPM_MK_NR;
    for (int l = 0; l < pn->nl; l++)
        pn->pos[l] = (n0 + l) / j->d->W_out * j->p.Wq + (n0 + l) % j->d->W_out;
}

static void direct_chunk(const direct_job *j, const direct_panel *ps, int np, float *buf) {
    const gathered_gemm gg = {j->weight, j->p.K, j->off,   j->d->C_out, j->p.K,
                              j->p.N,    j->bias, j->acc, j->scale,    j->shift};
    gathered_chunk(&gg, ps, np, buf);
}

/* xp: the guards and the zero-padded phase planes xq of one item's input x [C_in, H, W];
 * returns the first plane. */
static float *direct_pad(float *xp, const float *x, const ddpm_conv_dims *d, const direct_plan *p) {
    const int s = d->stride, pad = d->pad;
    const size_t plane = (size_t)p->Hq * p->Wq, planes_n = (size_t)d->C_in * s * s * plane;
    memset(xp, 0, sizeof(float) * DIRECT_GUARD);
    float *planes = xp + DIRECT_GUARD;
    memset(planes + planes_n, 0, sizeof(float) * DIRECT_GUARD);
    if (s == 1) {
        for (int c = 0; c < d->C_in; c++)
            pad_plane(planes + c * plane, x + (size_t)c * d->H * d->W, d->H, d->W, pad);
        return planes;
    }
    memset(planes, 0, sizeof(float) * planes_n);
    for (int c = 0; c < d->C_in; c++)
        for (int h = 0; h < d->H; h++) {
            const int hp = h + pad; /* padded row hp = hq s + pi */
            const float *src = x + ((size_t)c * d->H + h) * d->W;
            float *row = planes + ((size_t)c * s + hp % s) * s * plane + (size_t)(hp / s) * p->Wq;
            for (int w = 0; w < d->W; w++) {
                const int wp = w + pad;
                row[(size_t)(wp % s) * plane + wp / s] = src[w];
            }
        }
    return planes;
}

/* out = conv2d(inp) + bias, or with acc: out += conv2d(inp) (bias NULL), or with scale:
 * out = gelu(conv2d(inp) scale + shift) (bias NULL, no acc). */
static void direct_forward(float *out, const float *inp, const float *weight, const float *bias,
                           const ddpm_conv_dims *d, float *ws, int acc, const float *scale,
                           const float *shift) {
    direct_job j = {d,    direct_plan_of(d), (const int *)ws, weight, bias, acc,
                    NULL, NULL,              scale,           shift};
    j.bufs = ws + j.p.off;
    j.copies = j.bufs + (size_t)j.p.T * j.p.buf;
    int *off = (int *)ws;
    const int s = d->stride, plane = j.p.Hq * j.p.Wq;
    for (int c = 0, k = 0; c < d->C_in; c++)
        for (int ki = 0; ki < d->KH; ki++)
            for (int kj = 0; kj < d->KW; kj++)
                off[k++] = ((c * s + ki % s) * s + kj % s) * plane + ki / s * j.p.Wq + kj / s;
    const size_t in_sz = (size_t)d->C_in * d->H * d->W, out_sz = (size_t)d->C_out * j.p.N;
    const int P = j.p.panels;
    if (d->B > 1 || j.p.T == 1) {
        /* groups of G items in parallel, each slot with its own copies and panel chunk; a
         * group's panels (item by item) go through the kernel DIRECT_CH at a time */
        const int groups = (d->B + j.p.G - 1) / j.p.G;
#pragma omp parallel for schedule(static) num_threads(j.p.slots) if (j.p.slots > 1)
        for (int gi = 0; gi < groups; gi++) {
            const int t = omp_get_thread_num(), b0 = gi * j.p.G;
            const int nb = d->B - b0 < j.p.G ? d->B - b0 : j.p.G;
            float *copies = j.copies + (size_t)t * j.p.G * j.p.xp;
            direct_panel ps[DIRECT_CH];
            int np = 0;
            for (int i = 0; i < nb; i++) {
                const float *planes =
                    direct_pad(copies + i * j.p.xp, inp + (b0 + i) * in_sz, d, &j.p);
                for (int p = 0; p < P; p++) {
                    panel_at(&ps[np++], &j, planes, out + (b0 + i) * out_sz, p);
                    if (np == DIRECT_CH) {
                        direct_chunk(&j, ps, np, j.bufs + t * j.p.buf);
                        np = 0;
                    }
                }
            }
            if (np) direct_chunk(&j, ps, np, j.bufs + t * j.p.buf);
        }
        return;
    }
    /* one item: its chunks in parallel */
    const int chunks = (P + DIRECT_CH - 1) / DIRECT_CH;
    const float *planes = direct_pad(j.copies, inp, d, &j.p);
#pragma omp parallel for schedule(static) if (chunks > 1)
    for (int c = 0; c < chunks; c++) {
        direct_panel ps[DIRECT_CH];
        int np = 0;
        for (int p = c * DIRECT_CH; p < P && p < (c + 1) * DIRECT_CH; p++)
            panel_at(&ps[np++], &j, planes, out, p);
        direct_chunk(&j, ps, np, j.bufs + omp_get_thread_num() * j.p.buf);
    }
}

/* The input gradient of a stride-1 conv is itself a stride-1 conv, run on the same kernel:
 * dx [C_in, H, W] += conv2d(dy [C_out, H_out, W_out]) with the weights transposed and rotated
 * by 180 degrees, w'[ci, co, ki, kj] = w[co, ci, KH-1-ki, KW-1-kj], and padding KH-1-pad (which
 * gives back H: H_out + 2 (KH-1-pad) - KH + 1 = H). The padding is one number for both axes,
 * so KH - 1 - pad and KW - 1 - pad must agree and not be negative. */
static int direct_dx_dims(ddpm_conv_dims *dd, const ddpm_conv_dims *d) {
    const int p = d->KH - 1 - d->pad;
    if (!direct_enabled || d->transposed || d->stride != 1 || p < 0 || d->KW - 1 - d->pad != p)
        return 0;
    /* valid whenever d is (the result is H x W), so this cannot set an error */
    return ddpm_conv2d_dims(dd, d->B, d->C_out, d->H_out, d->W_out, d->C_in, d->KH, d->KW, 1,
                            p) == DDPM_OK &&
           direct_fits(dd);
}

static size_t direct_dx_workspace(const ddpm_conv_dims *d) {
    ddpm_conv_dims dd;
    if (!direct_dx_dims(&dd, d)) return 0;
    const size_t nw = ((size_t)d->C_out * d->C_in * d->KH * d->KW + 15) / 16 * 16,
                 w = direct_workspace(&dd);
    return w > SIZE_MAX - nw ? SIZE_MAX : w + nw;
}

static void direct_dx(float *dinp, const float *dout, const float *weight, const ddpm_conv_dims *d,
                      float *ws) {
    ddpm_conv_dims dd;
    DDPM_CHECK(direct_dx_dims(&dd, d));
    const int KH = d->KH, KW = d->KW;
    const size_t nw = ((size_t)d->C_out * d->C_in * KH * KW + 15) / 16 * 16;
    for (int ci = 0; ci < d->C_in; ci++)
        for (int co = 0; co < d->C_out; co++)
            for (int ki = 0; ki < KH; ki++)
                for (int kj = 0; kj < KW; kj++)
                    ws[(((size_t)ci * d->C_out + co) * KH + ki) * KW + kj] =
                        weight[(((size_t)co * d->C_in + ci) * KH + KH - 1 - ki) * KW + KW - 1 - kj];
    direct_forward(dinp, dout, ws, NULL, &dd, ws + nw, 1, NULL, NULL);
}

void ddpm_conv2d_forward(float *out, const float *inp, const float *weight, const float *bias,
                         const ddpm_conv_dims *d, float *ws) {
    DDPM_CHECK(!d->transposed);
    if (is_direct(d)) {
        direct_forward(out, inp, weight, bias, d, ws, 0, NULL, NULL);
        return;
    }
    /* Forward: KH KW GEMMs with K = C_in lose to one im2col GEMM when C_in is a few image
     * channels (measured on the ContextUnet's first conv, C_in 3). */
    if (is_shifted(d) && d->C_in >= 16) {
        shift_forward(out, inp, weight, bias, d, ws);
        return;
    }
    conv_job j = job_of(d, ws);
    j.out = out;
    j.inp = inp;
    j.weight = weight;
    j.bias = bias;
    run_items(&j, conv_fwd_item);
}

void ddpm_conv2d_scale_gelu_forward(float *out, const float *inp, const float *weight,
                                    const float *scale, const float *shift,
                                    const ddpm_conv_dims *d, float *ws) {
    DDPM_CHECK(!d->transposed);
    if (is_direct(d)) {
        direct_forward(out, inp, weight, NULL, d, ws, 0, scale, shift);
        return;
    }
    ddpm_conv2d_forward(out, inp, weight, NULL, d, ws);
    const size_t N = (size_t)d->H_out * d->W_out;
#pragma omp parallel for schedule(static) if ((size_t)d->B * d->C_out * N > OMP_MIN_WORK)
    for (int bc = 0; bc < d->B * d->C_out; bc++)
        scale_gelu_rows(out + (size_t)bc * N, 0, 1, (int)N, scale + bc % d->C_out,
                        shift + bc % d->C_out);
}

/* ---- the weight gradient of stride-1 convolutions on the same kernel ----
 *
 * Per item, dW [C_out, taps] += dy [C_out, P] @ col^T [P, taps], with the taps in the order
 * (ki, kj, c) and col^T gathered from a channels-last padded copy xt [Hp Wp, C_in] of the
 * input: tap (ki, kj, c) of position (oh, ow) is xt[((oh + ki) Wp + ow + kj) C_in + c], so a
 * panel's 16 taps are consecutive channels of one pixel (one run of the gather) and its rows
 * the positions (off[p] = (oh Wp + ow) C_in). Each slot sums its items into its own partial
 * [C_out, taps]; the partials are added in slot order into dweight's [C_out, C_in, KH, KW]. */

static int direct_dw_fits(const ddpm_conv_dims *d) {
    if (!direct_enabled || d->transposed || d->stride != 1) return 0;
    const long long hp = d->H + 2LL * d->pad, wp = d->W + 2LL * d->pad;
    return hp * wp * d->C_in < (1LL << 30) &&
           (long long)d->C_out * d->KH * d->KW * d->C_in < (1LL << 30);
}

typedef struct {
    int slots, T, Wp, taps, P;
    size_t ints; /* floats reserved for the P position and taps tap offsets (ints) */
    size_t xt;   /* floats of one channels-last copy with its guards */
    size_t part; /* floats of one slot's partial dW */
    size_t buf;  /* floats of one thread's chunk of packed panels */
} dw_plan;

static size_t round16(size_t n) { return (n + 15) / 16 * 16; }

static dw_plan dw_plan_of(const ddpm_conv_dims *d) {
    dw_plan p;
    p.T = omp_get_max_threads();
    if (p.T < 1) p.T = 1;
    p.slots = d->B < p.T ? d->B : p.T;
    p.Wp = d->W + 2 * d->pad;
    p.taps = d->KH * d->KW * d->C_in;
    p.P = d->H_out * d->W_out;
    p.ints = round16((size_t)p.P + p.taps);
    p.xt = round16((size_t)(d->H + 2 * d->pad) * p.Wp * d->C_in + 2 * DIRECT_GUARD);
    p.part = round16((size_t)d->C_out * p.taps);
    p.buf = (size_t)DIRECT_CH * DIRECT_KC * DDPM_MK_NR;
    return p;
}

static size_t direct_dw_workspace(const ddpm_conv_dims *d) {
    if (!direct_dw_fits(d)) return 0;
    const dw_plan p = dw_plan_of(d);
    const size_t per = ddpm_size_mul((size_t)p.slots, p.xt + p.part),
                 fixed = p.ints + (size_t)p.T * p.buf;
    return per == SIZE_MAX || per > SIZE_MAX - fixed ? SIZE_MAX : per + fixed;
}

/* xt: zero guards and padding around x [C_in, H, W] stored channels-last; returns the first
 * pixel. */
static float *dw_channels_last(float *xt, const float *x, const ddpm_conv_dims *d,
                               const dw_plan *p) {
    /* zeros where the copy below does not write: the guards and the padding */
    float *px = xt + DIRECT_GUARD;
    const int C = d->C_in, pad = d->pad;
    const size_t row = (size_t)p->Wp * C, top = (size_t)pad * row,
                 end = (size_t)(d->H + pad) * row; /* the bottom padding starts here */
    memset(xt, 0, sizeof(float) * (DIRECT_GUARD + top));
    for (int h = 0; h < d->H; h++) {
        float *r = px + (size_t)(h + pad) * row;
        memset(r, 0, sizeof(float) * pad * C);
        memset(r + (size_t)(pad + d->W) * C, 0, sizeof(float) * pad * C);
    }
    memset(px + end, 0, sizeof(float) * (p->xt - DIRECT_GUARD - end));
    for (int c = 0; c < C; c++)
        for (int h = 0; h < d->H; h++) {
            const float *src = x + ((size_t)c * d->H + h) * d->W;
            float *dst = px + ((size_t)(h + d->pad) * p->Wp + d->pad) * C + c;
            for (int w = 0; w < d->W; w++) dst[(size_t)w * C] = src[w];
        }
    return px;
}

/* Tap panels [c0, c1) (chunks of DIRECT_CH panels) of one item into part. */
static void dw_chunks(const gathered_gemm *gg, const int *tapoff, int taps, const float *xt,
                      float *part, int c0, int c1, float *buf) {
    for (int c = c0; c < c1; c++) {
        direct_panel ps[DIRECT_CH];
        int np = 0;
        for (int t0 = c * DIRECT_CH * DDPM_MK_NR; t0 < taps && np < DIRECT_CH;
             t0 += DDPM_MK_NR, np++) {
            ps[np].src = xt;
            ps[np].c = part + t0;
            ps[np].nl = taps - t0 < DDPM_MK_NR ? taps - t0 : DDPM_MK_NR;
            memcpy(ps[np].pos, tapoff + t0, sizeof(int) * ps[np].nl);
        }
        gathered_chunk(gg, ps, np, buf);
    }
}

static void direct_dw(float *dweight, const float *dout, const float *inp, const ddpm_conv_dims *d,
                      float *ws) {
    const dw_plan p = dw_plan_of(d);
    int *posoff = (int *)ws, *tapoff = posoff + p.P;
    for (int oh = 0; oh < d->H_out; oh++)
        for (int ow = 0; ow < d->W_out; ow++)
            posoff[oh * d->W_out + ow] = (oh * p.Wp + ow) * d->C_in;
    for (int ki = 0, t = 0; ki < d->KH; ki++)
        for (int kj = 0; kj < d->KW; kj++)
            for (int c = 0; c < d->C_in; c++) tapoff[t++] = (ki * p.Wp + kj) * d->C_in + c;
    float *bufs = ws + p.ints, *slot0 = bufs + (size_t)p.T * p.buf;
    for (int t = 0; t < p.slots; t++)
        memset(slot0 + t * (p.xt + p.part) + p.xt, 0, sizeof(float) * p.part);
    const size_t in_sz = (size_t)d->C_in * d->H * d->W, out_sz = (size_t)d->C_out * p.P;
    const int chunks = (p.taps + DIRECT_CH * DDPM_MK_NR - 1) / (DIRECT_CH * DDPM_MK_NR);
    if (d->B > 1 || p.T == 1) {
        /* items in parallel, each slot summing into its own partial */
#pragma omp parallel for schedule(static) num_threads(p.slots) if (p.slots > 1)
        for (int b = 0; b < d->B; b++) {
            const int t = omp_get_thread_num();
            float *xt = slot0 + t * (p.xt + p.part);
            const gathered_gemm gg = {dout + b * out_sz, p.P, posoff, d->C_out, p.P, p.taps,
                                      NULL, 1, NULL, NULL};
            dw_chunks(&gg, tapoff, p.taps, dw_channels_last(xt, inp + b * in_sz, d, &p),
                      xt + p.xt, 0, chunks, bufs + t * p.buf);
        }
    } else {
        /* one item: its tap chunks (disjoint columns of the partial) in parallel */
        const float *xt = dw_channels_last(slot0, inp, d, &p);
        const gathered_gemm gg = {dout, p.P, posoff, d->C_out, p.P, p.taps, NULL, 1, NULL, NULL};
#pragma omp parallel for schedule(static) if (chunks > 1)
        for (int c = 0; c < chunks; c++)
            dw_chunks(&gg, tapoff, p.taps, xt, slot0 + p.xt, c, c + 1,
                      bufs + omp_get_thread_num() * p.buf);
    }
    /* dweight [co, c, ki, kj] += the partials' [co, (ki, kj, c)], in slot order */
    const int KK = d->KH * d->KW;
#pragma omp parallel for schedule(static) if ((size_t)d->C_out * p.taps > OMP_MIN_WORK)
    for (int co = 0; co < d->C_out; co++)
        for (int t = 0; t < p.taps; t++) {
            float s = 0;
            for (int sl = 0; sl < p.slots; sl++)
                s += slot0[sl * (p.xt + p.part) + p.xt + (size_t)co * p.taps + t];
            const int kk = t / d->C_in, c = t % d->C_in;
            dweight[((size_t)co * d->C_in + c) * KK + kk] += s;
        }
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

/* The BLAS paths: shifted GEMMs or im2col. */
static void blas_backward(float *dinp, float *dweight, float *dbias, const float *dout,
                          const float *inp, const float *weight, const ddpm_conv_dims *d,
                          float *ws) {
    if (is_shifted(d)) {
        shift_backward(dinp, dweight, dbias, dout, inp, weight, d, ws);
        return;
    }
    conv_job j = job_of(d, ws);
    j.dinp = dinp;
    j.dweight = dweight;
    j.dbias = dbias;
    j.dout = dout;
    j.inp = inp;
    j.weight = weight;
    partials_zero(&j);
    run_items(&j, conv_bwd_item);
    partials_reduce(&j);
}

void ddpm_conv2d_backward(float *dinp, float *dweight, float *dbias, const float *dout,
                          const float *inp, const float *weight, const ddpm_conv_dims *d,
                          float *ws) {
    DDPM_CHECK(!d->transposed);
    ddpm_conv_dims dd;
    const int fast = ddpm_mk_fast();
    const int own_dx = dinp && fast && direct_dx_dims(&dd, d);
    const int own_dw = dweight && fast && direct_dw_fits(d);
    if (!own_dx && !own_dw) {
        blas_backward(dinp, dweight, dbias, dout, inp, weight, d, ws);
        return;
    }
    /* one after the other: the paths share the workspace */
    if (!own_dx && dinp) blas_backward(dinp, NULL, NULL, dout, inp, weight, d, ws);
    if (!own_dw && dweight) blas_backward(NULL, dweight, NULL, dout, inp, weight, d, ws);
    if (own_dw) direct_dw(dweight, dout, inp, d, ws);
    if (dbias) dbias_all(dbias, dout, d);
    if (own_dx) direct_dx(dinp, dout, weight, d, ws);
}

void ddpm_conv_transpose2d_forward(float *out, const float *inp, const float *weight,
                                   const float *bias, const ddpm_conv_dims *d, float *ws) {
    DDPM_CHECK(d->transposed);
    conv_job j = job_of(d, ws);
    j.out = out;
    j.inp = inp;
    j.weight = weight;
    j.bias = bias;
    run_items(&j, convt_fwd_item);
}

void ddpm_conv_transpose2d_backward(float *dinp, float *dweight, float *dbias, const float *dout,
                                    const float *inp, const float *weight, const ddpm_conv_dims *d,
                                    float *ws) {
    DDPM_CHECK(d->transposed);
    conv_job j = job_of(d, ws);
    j.dinp = dinp;
    j.dweight = dweight;
    j.dbias = dbias;
    j.dout = dout;
    j.inp = inp;
    j.weight = weight;
    partials_zero(&j);
    run_items(&j, convt_bwd_item);
    partials_reduce(&j);
}

/* ---- naive references ---- */

/* Calls f(b, co, ci, oh, ow, ih, iw, ki, kj) for every in-bounds tap of a conv2d geometry. The
 * same loop nest serves conv2d (x at ih/iw, y at oh/ow) and, with the roles swapped, the
 * transposed conv, so the references share one index convention that is easy to read. */
#define FOR_EACH_TAP(d, body)                                                                      \
    for (int b = 0; b < (d)->B; b++)                                                               \
        for (int co = 0; co < (d)->C_out; co++)                                                    \
            for (int ci = 0; ci < (d)->C_in; ci++)                                                 \
                for (int ki = 0; ki < (d)->KH; ki++)                                               \
                    for (int kj = 0; kj < (d)->KW; kj++)                                           \
                        for (int oh = 0; oh < Hy; oh++)                                            \
                            for (int ow = 0; ow < Wy; ow++) {                                      \
                                const int ih = oh * (d)->stride - (d)->pad + ki;                   \
                                const int iw = ow * (d)->stride - (d)->pad + kj;                   \
                                if (ih < 0 || ih >= Hx || iw < 0 || iw >= Wx) continue;            \
                                body                                                               \
                            }

void ddpm_conv2d_forward_ref(float *out, const float *inp, const float *weight, const float *bias,
                             const ddpm_conv_dims *d) {
    DDPM_CHECK(!d->transposed);
    const int Hx = d->H, Wx = d->W, Hy = d->H_out, Wy = d->W_out;
    for (int b = 0; b < d->B; b++)
        for (int co = 0; co < d->C_out; co++)
            for (int oh = 0; oh < Hy; oh++)
                for (int ow = 0; ow < Wy; ow++) {
                    double s = bias ? bias[co] : 0.0;
                    for (int ci = 0; ci < d->C_in; ci++)
                        for (int ki = 0; ki < d->KH; ki++)
                            for (int kj = 0; kj < d->KW; kj++) {
                                const int ih = oh * d->stride - d->pad + ki;
                                const int iw = ow * d->stride - d->pad + kj;
                                if (ih < 0 || ih >= Hx || iw < 0 || iw >= Wx) continue;
                                s += (double)
                                         weight[((co * d->C_in + ci) * d->KH + ki) * d->KW + kj] *
                                     inp[(((size_t)b * d->C_in + ci) * Hx + ih) * Wx + iw];
                            }
                    out[(((size_t)b * d->C_out + co) * Hy + oh) * Wy + ow] = (float)s;
                }
}

void ddpm_conv2d_backward_ref(float *dinp, float *dweight, float *dbias, const float *dout,
                              const float *inp, const float *weight, const ddpm_conv_dims *d) {
    DDPM_CHECK(!d->transposed);
    const int Hx = d->H, Wx = d->W, Hy = d->H_out, Wy = d->W_out;
    FOR_EACH_TAP(d, {
        const size_t xi = (((size_t)b * d->C_in + ci) * Hx + ih) * Wx + iw;
        const size_t yi = (((size_t)b * d->C_out + co) * Hy + oh) * Wy + ow;
        const size_t wi = (((size_t)co * d->C_in + ci) * d->KH + ki) * d->KW + kj;
        if (dinp) dinp[xi] += weight[wi] * dout[yi];
        if (dweight) dweight[wi] += inp[xi] * dout[yi];
    })
    if (dbias)
        for (int b = 0; b < d->B; b++)
            for (int co = 0; co < d->C_out; co++)
                for (int i = 0; i < Hy * Wy; i++)
                    dbias[co] += dout[((size_t)b * d->C_out + co) * Hy * Wy + i];
}

void ddpm_conv_transpose2d_forward_ref(float *out, const float *inp, const float *weight,
                                       const float *bias, const ddpm_conv_dims *d) {
    DDPM_CHECK(d->transposed);
    /* In conv2d terms the transposed conv's output is the image (ih, iw) and its input the
     * positions (oh, ow): out[b, co, ih, iw] += x[b, ci, oh, ow] w[ci, co, ki, kj]. */
    const int Hx = d->H_out, Wx = d->W_out, Hy = d->H, Wy = d->W;
    const size_t per = (size_t)Hx * Wx;
    for (int b = 0; b < d->B; b++)
        for (int co = 0; co < d->C_out; co++)
            for (size_t i = 0; i < per; i++)
                out[((size_t)b * d->C_out + co) * per + i] = bias ? bias[co] : 0.0f;
    FOR_EACH_TAP(d, {
        out[(((size_t)b * d->C_out + co) * Hx + ih) * Wx + iw] +=
            inp[(((size_t)b * d->C_in + ci) * Hy + oh) * Wy + ow] *
            weight[(((size_t)ci * d->C_out + co) * d->KH + ki) * d->KW + kj];
    })
}

void ddpm_conv_transpose2d_backward_ref(float *dinp, float *dweight, float *dbias,
                                        const float *dout, const float *inp, const float *weight,
                                        const ddpm_conv_dims *d) {
    DDPM_CHECK(d->transposed);
    const int Hx = d->H_out, Wx = d->W_out, Hy = d->H, Wy = d->W;
    FOR_EACH_TAP(d, {
        const size_t yi = (((size_t)b * d->C_out + co) * Hx + ih) * Wx + iw; /* out */
        const size_t xi = (((size_t)b * d->C_in + ci) * Hy + oh) * Wy + ow;  /* inp */
        const size_t wi = (((size_t)ci * d->C_out + co) * d->KH + ki) * d->KW + kj;
        if (dinp) dinp[xi] += weight[wi] * dout[yi];
        if (dweight) dweight[wi] += inp[xi] * dout[yi];
    })
    if (dbias)
        for (int b = 0; b < d->B; b++)
            for (int co = 0; co < d->C_out; co++)
                for (size_t i = 0; i < (size_t)Hx * Wx; i++)
                    dbias[co] += dout[((size_t)b * d->C_out + co) * Hx * Wx + i];
}

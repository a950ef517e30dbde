/* conv_im2col.c - conv2d and transposed conv2d through im2col/col2im and BLAS sgemm.
 *
 * One batch item at a time: conv2d's forward is im2col + one sgemm (a pointwise conv needs no
 * copy), its backward one sgemm for dweight on the same columns and one for the column
 * gradient, scattered back by col2im. The transposed convolution is the adjoint of conv2d's
 * input gradient, so it reuses the same im2col/col2im pair with the roles of input and output
 * swapped. */
#include "ops/conv_internal.h"

#include <cblas.h>
#include <omp.h>

static int is_pointwise(const ddpm_conv_dims *d) {
    return !d->transposed && d->KH == 1 && d->KW == 1 && d->stride == 1 && d->pad == 0;
}

/* How a call is split. With B >= 2 the items run concurrently, one parallel region per call and
 * a single-threaded sgemm on each thread (OpenBLAS runs single-threaded inside an OpenMP
 * region): one region costs one wake-up of the team, whereas a threaded sgemm per item costs
 * one per GEMM, and on a loaded 2-core machine each wake-up can cost a scheduler time slice
 * (measured: 110 ms instead of 7 ms for 8 items of a 64-channel 28x28 conv). Each slot (thread)
 * has its own column matrix; the backward's dweight/dbias partial sums belong to item groups
 * fixed by B (conv_groups), reduced in group order, so the result depends neither on scheduling
 * nor on the thread count. With one item, BLAS's threads and a parallel im2col share the work
 * instead. */
typedef struct {
    int slots;   /* items in flight: min(B, threads) */
    int groups;  /* the backward's item groups (conv_groups) */
    size_t col;  /* floats of one column matrix */
    size_t part; /* floats of one group's dweight + dbias partial (0 with one group) */
} conv_plan;

static conv_plan plan_of(const ddpm_conv_dims *d) {
    conv_plan p;
    const int T = omp_get_max_threads();
    p.slots = d->B < T ? d->B : T;
    if (p.slots < 1) p.slots = 1;
    p.groups = conv_groups(d->B);
    if (d->transposed)
        p.col = (size_t)d->C_out * d->KH * d->KW * d->H * d->W;
    else
        p.col = is_pointwise(d) ? 0 : (size_t)d->C_in * d->KH * d->KW * d->H_out * d->W_out;
    p.part = p.groups > 1 ? (size_t)d->C_out * d->C_in * d->KH * d->KW + d->C_out : 0;
    return p;
}

/* The slots' column matrices, then the groups' partials. */
size_t conv_im2col_workspace(const ddpm_conv_dims *d) {
    const conv_plan p = plan_of(d);
    const size_t cols = ddpm_size_mul((size_t)p.slots, p.col),
                 parts = ddpm_size_mul((size_t)p.groups, p.part);
    return cols == SIZE_MAX || parts > SIZE_MAX - cols ? SIZE_MAX : cols + parts;
}

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

static float *slot_col(const conv_job *j, int slot) { return j->ws + slot * j->p.col; }
static float *group_part(const conv_job *j, int group) {
    return j->ws + (size_t)j->p.slots * j->p.col + group * j->p.part;
}
/* Backward's dweight/dbias targets: this group's partials with several groups, else the outputs. */
static float *group_dw(const conv_job *j, int group) {
    return j->p.part ? group_part(j, group) : j->dweight;
}
static float *group_db(const conv_job *j, int group) {
    return j->p.part ? group_part(j, group) + j->nw : j->dbias;
}

static void partials_zero(const conv_job *j) {
    if (!j->p.part) return;
    memset(group_part(j, 0), 0, (size_t)j->p.groups * j->p.part * sizeof(float));
}

/* dweight, dbias += the sum of every group's partials, in group order. */
static void partials_reduce(const conv_job *j) {
    if (!j->p.part) return;
    const size_t part = j->p.part;
#pragma omp parallel for schedule(static) if (part > OMP_MIN_WORK)
    for (size_t i = 0; i < part; i++) {
        float s = 0;
        for (int g = 0; g < j->p.groups; g++) s += group_part(j, g)[i];
        if (i < j->nw) {
            if (j->dweight) j->dweight[i] += s;
        } else if (j->dbias) {
            j->dbias[i - j->nw] += s;
        }
    }
}

static void conv_fwd_item(const void *job, int b, int slot, int par) {
    const conv_job *j = job;
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

static void conv_bwd_item(const void *job, int b, int slot, int group, int par) {
    const conv_job *j = job;
    const ddpm_conv_dims *d = j->d;
    const int K = j->K, N = j->N;
    const float *x = j->inp + b * j->in_sz;
    const float *dy = j->dout + b * j->out_sz;
    float *col = slot_col(j, slot);
    if (j->dbias) bias_backward_item(group_db(j, group), dy, d->C_out, (size_t)N);
    if (j->dweight) {
        const float *src = x;
        if (j->p.col) {
            im2col(col, x, &j->g, par);
            src = col;
        }
        // dweight [C_out, K] += dy [C_out, N] @ col^T [N, K]
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, d->C_out, K, N, 1.0f, dy, N, src, N,
                    1.0f, group_dw(j, group), K);
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

static void convt_fwd_item(const void *job, int b, int slot, int par) {
    const conv_job *j = job;
    const ddpm_conv_dims *d = j->d;
    float *col = slot_col(j, slot);
    float *y = j->out + b * j->out_sz;
    // col [C_out KH KW, N] = weight^T [K, C_in] @ x [C_in, N]   (weight viewed as [C_in, K])
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, j->K, j->N, d->C_in, 1.0f, j->weight, j->K,
                j->inp + b * j->in_sz, j->N, 0.0f, col, j->N);
    fill_bias(y, j->bias, d->C_out, (size_t)d->H_out * d->W_out);
    col2im_add(y, col, &j->g, par);
}

static void convt_bwd_item(const void *job, int b, int slot, int group, int par) {
    const conv_job *j = job;
    const ddpm_conv_dims *d = j->d;
    const int K = j->K, N = j->N;
    float *col = slot_col(j, slot);
    const float *dy = j->dout + b * j->out_sz;
    if (j->dbias) bias_backward_item(group_db(j, group), dy, d->C_out, (size_t)d->H_out * d->W_out);
    if (!j->dinp && !j->dweight) return;
    im2col(col, dy, &j->g, par); // dcol [K, N]
    if (j->dinp)
        // dx [C_in, N] += weight [C_in, K] @ dcol [K, N]
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, d->C_in, N, K, 1.0f, j->weight, K,
                    col, N, 1.0f, j->dinp + b * j->in_sz, N);
    if (j->dweight)
        // dweight [C_in, K] += x [C_in, N] @ dcol^T [N, K]
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, d->C_in, K, N, 1.0f,
                    j->inp + b * j->in_sz, N, col, N, 1.0f, group_dw(j, group), K);
}

void conv_for_each_item(const void *job, int B, int slots, conv_item_fn item) {
    if (slots > 1) {
#pragma omp parallel for schedule(static) num_threads(slots)
        for (int b = 0; b < B; b++) item(job, b, omp_get_thread_num(), 0);
    } else {
        for (int b = 0; b < B; b++) item(job, b, 0, 1);
    }
}

void conv_for_each_group(const void *job, int B, int slots, conv_group_item_fn item) {
    const int G = conv_groups(B), nt = slots < G ? slots : G;
    if (nt > 1) {
#pragma omp parallel for schedule(static) num_threads(nt)
        for (int g = 0; g < G; g++)
            for (int b = B * g / G; b < B * (g + 1) / G; b++) item(job, b, omp_get_thread_num(), g, 0);
    } else {
        for (int g = 0; g < G; g++)
            for (int b = B * g / G; b < B * (g + 1) / G; b++) item(job, b, 0, g, 1);
    }
}

/* Both passes of both convolutions: the job's arrays, then every item (the backward's weight
 * and bias gradients in per-group partials, reduced in group order). */
static void run_forward(const ddpm_conv_dims *d, float *ws, float *out, const float *inp,
                        const float *weight, const float *bias, conv_item_fn item) {
    conv_job j = job_of(d, ws);
    j.out = out;
    j.inp = inp;
    j.weight = weight;
    j.bias = bias;
    conv_for_each_item(&j, d->B, j.p.slots, item);
}

static void run_backward(const ddpm_conv_dims *d, float *ws, float *dinp, float *dweight,
                         float *dbias, const float *dout, const float *inp, const float *weight,
                         conv_group_item_fn item) {
    conv_job j = job_of(d, ws);
    j.dinp = dinp;
    j.dweight = dweight;
    j.dbias = dbias;
    j.dout = dout;
    j.inp = inp;
    j.weight = weight;
    partials_zero(&j);
    conv_for_each_group(&j, d->B, j.p.slots, item);
    partials_reduce(&j);
}

void conv_im2col_forward(float *out, const float *inp, const float *weight, const float *bias,
                         const ddpm_conv_dims *d, float *ws) {
    run_forward(d, ws, out, inp, weight, bias, conv_fwd_item);
}

void conv_im2col_backward(float *dinp, float *dweight, float *dbias, const float *dout,
                          const float *inp, const float *weight, const ddpm_conv_dims *d,
                          float *ws) {
    run_backward(d, ws, dinp, dweight, dbias, dout, inp, weight, conv_bwd_item);
}

void conv_transpose_im2col_forward(float *out, const float *inp, const float *weight,
                                   const float *bias, const ddpm_conv_dims *d, float *ws) {
    run_forward(d, ws, out, inp, weight, bias, convt_fwd_item);
}

void conv_transpose_im2col_backward(float *dinp, float *dweight, float *dbias, const float *dout,
                                    const float *inp, const float *weight,
                                    const ddpm_conv_dims *d, float *ws) {
    run_backward(d, ws, dinp, dweight, dbias, dout, inp, weight, convt_bwd_item);
}

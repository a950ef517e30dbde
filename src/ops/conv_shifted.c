/* conv_shifted.c - stride-1 convolutions as shifted GEMMs (no im2col).
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
#include "ops/conv_internal.h"

#include <cblas.h>
#include <omp.h>

/* Each kernel row's GEMM reads and writes the whole output block (C x H_out Wp floats): worth
 * it while that block stays in L2 (512 KB a core here). At 64x64 with 64 channels (SimpleUnet's
 * first level) it does not, and im2col's single GEMM was measured faster for the network. */
#define SHIFT_MAX_BLOCK 65536

int conv_shifted_fits(const ddpm_conv_dims *d) {
    if (d->transposed || d->stride != 1 || d->KH * d->KW == 1) return 0;
    const size_t C = d->C_in > d->C_out ? d->C_in : d->C_out;
    return C * d->H_out * (size_t)(d->W + 2 * d->pad) <= SHIFT_MAX_BLOCK;
}

typedef struct {
    int slots, groups, Hp, Wp, K; /* K = C_in KW: the inner dimension of each row's GEMM */
    size_t ls;   /* floats of a row of xs: Hp Wp */
    size_t Np;   /* output positions at the padded width: H_out Wp */
    size_t nw;   /* weights */
    size_t slot; /* floats per slot: xs [C_in KW, ls], y_pad [C_out, Np] */
    size_t part; /* floats per item group (conv_groups): [KH, C_out, C_in KW] + [C_out] */
} shift_plan;

static shift_plan shift_plan_of(const ddpm_conv_dims *d) {
    shift_plan p;
    const int T = omp_get_max_threads();
    p.slots = d->B < T ? d->B : T;
    if (p.slots < 1) p.slots = 1;
    p.groups = conv_groups(d->B);
    p.Hp = d->H + 2 * d->pad;
    p.Wp = d->W + 2 * d->pad;
    p.K = d->C_in * d->KW;
    p.ls = (size_t)p.Hp * p.Wp;
    p.Np = (size_t)d->H_out * p.Wp;
    p.nw = (size_t)d->C_out * d->C_in * d->KH * d->KW;
    p.slot = (size_t)p.K * p.ls + (size_t)d->C_out * p.Np;
    p.part = p.nw + d->C_out;
    return p;
}

/* Workspace: the weights regrouped by kernel row [KH, C_out, C_in KW], one block per slot, then
 * one partial per item group. */
size_t conv_shifted_workspace(const ddpm_conv_dims *d) {
    const shift_plan p = shift_plan_of(d);
    const size_t per = ddpm_size_mul((size_t)p.slots, p.slot),
                 parts = ddpm_size_mul((size_t)p.groups, p.part);
    if (per == SIZE_MAX || parts == SIZE_MAX || per > SIZE_MAX - p.nw - parts) return SIZE_MAX;
    return per + parts + p.nw;
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

/* group_part: a group's partial. */
static float *group_part(const shift_job *j, int group) {
    return j->ws + j->p.nw + (size_t)j->p.slots * j->p.slot + (size_t)group * j->p.part;
}

static shift_bufs shift_slot(const shift_job *j, int slot, int group) {
    shift_bufs b;
    b.xs = j->ws + j->p.nw + slot * j->p.slot;
    b.yp = b.xs + (size_t)j->p.K * j->p.ls;
    b.part = group_part(j, group);
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

static void shift_fwd_item(const void *job, int b, int slot, int par) {
    const shift_job *j = job;
    (void)par; /* the copies are serial; BLAS threads the GEMMs as it can */
    const ddpm_conv_dims *d = j->d;
    const shift_plan *p = &j->p;
    const shift_bufs s = shift_slot(j, slot, 0); /* the forward uses no partial */
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

static void shift_bwd_item(const void *job, int b, int slot, int group, int par) {
    const shift_job *j = job;
    (void)par;
    const ddpm_conv_dims *d = j->d;
    const shift_plan *p = &j->p;
    const shift_bufs s = shift_slot(j, slot, group);
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

void conv_shifted_forward(float *out, const float *inp, const float *weight, const float *bias,
                          const ddpm_conv_dims *d, float *ws) {
    shift_job j = {d, shift_plan_of(d), inp, weight, bias, NULL, ws, out, NULL, ws, 0, 0};
    regroup_weights(ws, weight, d);
    conv_for_each_item(&j, d->B, j.p.slots, shift_fwd_item);
}

void conv_shifted_backward(float *dinp, float *dweight, float *dbias, const float *dout,
                           const float *inp, const float *weight, const ddpm_conv_dims *d,
                           float *ws) {
    shift_job j = {d, shift_plan_of(d), inp, weight, NULL, dout, ws, NULL, dinp, ws,
                   dweight != NULL, dbias != NULL};
    if (dinp) regroup_weights(ws, weight, d);
    const size_t part = j.p.part;
    memset(group_part(&j, 0), 0, sizeof(float) * part * (size_t)j.p.groups);
    conv_for_each_group(&j, d->B, j.p.slots, shift_bwd_item);
    /* dweight [C_out, C_in, KH, KW], dbias += the groups' partials [KH, C_out, C_in KW] +
     * [C_out], in group order */
    const int KW = d->KW, KK = d->KH * d->KW;
    const size_t row = (size_t)d->C_out * j.p.K;
#pragma omp parallel for schedule(static) if (part > OMP_MIN_WORK)
    for (size_t i = 0; i < part; i++) {
        float s = 0;
        for (int g = 0; g < j.p.groups; g++) s += group_part(&j, g)[i];
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

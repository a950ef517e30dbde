/* conv_direct.c - conv2d on the library's own GEMM kernel (implicit im2col).
 *
 * The forward (any stride) first, then the input gradient of stride-1 convs as a conv on the
 * same kernel, then their weight gradient.
 *
 * y [C_out, N] = W [C_out, K] @ col [K, N] + bias runs on the 6 x 16 register-tiled kernel of
 * kernels/kernels.c, and col is never built: each 16-position panel of it is gathered, one
 * block of DIRECT_KC rows at a time, straight from a zero-padded copy of the input just before
 * the kernel consumes it from L1. The copy is split into stride x stride phase planes,
 *   xq[c, pi, pj, hq, wq] = x_pad[c, hq stride + pi, wq stride + pj]   (Hq x Wq each),
 * so that tap (ki, kj) of output (oh, ow) is xq[c, ki % s, kj % s, oh + ki / s, ow + kj / s]:
 * row k = (c, ki, kj) of col is the phase plane at offset off[k] read at oh Wq + ow, and the 16
 * positions of a panel are runs of consecutive floats for any stride (with stride 1 the copy is
 * just the padded input). The kernel reads the weights in place and writes the bias-added
 * outputs straight into y. Against im2col or the shifted GEMMs through OpenBLAS this
 * drops the copies, BLAS's packing of both operands (11% of the forward in a profile) and the
 * bias pass, and computes no junk columns at small resolutions. Results do not depend on the
 * thread count: each output is one fixed sequence of fmas. */
#include "ops/conv_internal.h"
#include "kernels/kernels.h"

#include <omp.h>

#define DIRECT_KC 256
#define DIRECT_GUARD 16 /* zeros before and after the padded copy: the gather reads around runs */

int conv_direct_fits(const ddpm_conv_dims *d) {
    if (d->transposed) return 0;
    const long long s = d->stride, hq = (d->H + 2LL * d->pad + s - 1) / s,
                    wq = (d->W + 2LL * d->pad + s - 1) / s;
    return hq * wq * s * s * d->C_in < (1LL << 30); /* offsets are ints */
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

/* Sized whether or not the CPU takes the path (the kernels' choice can be overridden later;
 * conv.c counts it only while ddpm_conv_use_direct is on): the offsets, then each thread's
 * panel chunk, then each slot's G padded copies. */
size_t conv_direct_workspace(const ddpm_conv_dims *d) {
    if (!conv_direct_fits(d)) return 0;
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
void conv_direct_forward(float *out, const float *inp, const float *weight, const float *bias,
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
int conv_direct_dx_dims(ddpm_conv_dims *dd, const ddpm_conv_dims *d) {
    const int p = d->KH - 1 - d->pad;
    if (d->transposed || d->stride != 1 || p < 0 || d->KW - 1 - d->pad != p)
        return 0;
    /* valid whenever d is (the result is H x W), so this cannot set an error */
    return ddpm_conv2d_dims(dd, d->B, d->C_out, d->H_out, d->W_out, d->C_in, d->KH, d->KW, 1,
                            p) == DDPM_OK &&
           conv_direct_fits(dd);
}

size_t conv_direct_dx_workspace(const ddpm_conv_dims *d) {
    ddpm_conv_dims dd;
    if (!conv_direct_dx_dims(&dd, d)) return 0;
    const size_t nw = ((size_t)d->C_out * d->C_in * d->KH * d->KW + 15) / 16 * 16,
                 w = conv_direct_workspace(&dd);
    return w > SIZE_MAX - nw ? SIZE_MAX : w + nw;
}

void conv_direct_dx(float *dinp, const float *dout, const float *weight, const ddpm_conv_dims *d,
                    float *ws) {
    ddpm_conv_dims dd;
    DDPM_CHECK(conv_direct_dx_dims(&dd, d));
    const int KH = d->KH, KW = d->KW;
    const size_t nw = ((size_t)d->C_out * d->C_in * KH * KW + 15) / 16 * 16;
    for (int ci = 0; ci < d->C_in; ci++)
        for (int co = 0; co < d->C_out; co++)
            for (int ki = 0; ki < KH; ki++)
                for (int kj = 0; kj < KW; kj++)
                    ws[(((size_t)ci * d->C_out + co) * KH + ki) * KW + kj] =
                        weight[(((size_t)co * d->C_in + ci) * KH + KH - 1 - ki) * KW + KW - 1 - kj];
    conv_direct_forward(dinp, dout, ws, NULL, &dd, ws + nw, 1, NULL, NULL);
}

/* ---- the weight gradient of stride-1 convolutions on the same kernel ----
 *
 * Per item, dW [C_out, taps] += dy [C_out, P] @ col^T [P, taps], with the taps in the order
 * (ki, kj, c) and col^T gathered from a channels-last padded copy xt [Hp Wp, C_in] of the
 * input: tap (ki, kj, c) of position (oh, ow) is xt[((oh + ki) Wp + ow + kj) C_in + c], so a
 * panel's 16 taps are consecutive channels of one pixel (one run of the gather) and its rows
 * the positions (off[p] = (oh Wp + ow) C_in). Each item group (conv_groups) is summed in item
 * order by one thread into its own partial [C_out, taps]; the partials are added in group order
 * into dweight's [C_out, C_in, KH, KW], so the result does not depend on the thread count. */

int conv_direct_dw_fits(const ddpm_conv_dims *d) {
    if (d->transposed || d->stride != 1) return 0;
    const long long hp = d->H + 2LL * d->pad, wp = d->W + 2LL * d->pad;
    return hp * wp * d->C_in < (1LL << 30) &&
           (long long)d->C_out * d->KH * d->KW * d->C_in < (1LL << 30);
}

typedef struct {
    int slots, groups, T, Wp, taps, P;
    size_t ints; /* floats reserved for the P position and taps tap offsets (ints) */
    size_t xt;   /* floats of one channels-last copy with its guards */
    size_t part; /* floats of one group's partial dW */
    size_t buf;  /* floats of one thread's chunk of packed panels */
} dw_plan;

static size_t round16(size_t n) { return (n + 15) / 16 * 16; }

static dw_plan dw_plan_of(const ddpm_conv_dims *d) {
    dw_plan p;
    p.T = omp_get_max_threads();
    if (p.T < 1) p.T = 1;
    p.slots = d->B < p.T ? d->B : p.T;
    p.groups = conv_groups(d->B);
    p.Wp = d->W + 2 * d->pad;
    p.taps = d->KH * d->KW * d->C_in;
    p.P = d->H_out * d->W_out;
    p.ints = round16((size_t)p.P + p.taps);
    p.xt = round16((size_t)(d->H + 2 * d->pad) * p.Wp * d->C_in + 2 * DIRECT_GUARD);
    p.part = round16((size_t)d->C_out * p.taps);
    p.buf = (size_t)DIRECT_CH * DIRECT_KC * DDPM_MK_NR;
    return p;
}

size_t conv_direct_dw_workspace(const ddpm_conv_dims *d) {
    if (!conv_direct_dw_fits(d)) return 0;
    const dw_plan p = dw_plan_of(d);
    const size_t xts = ddpm_size_mul((size_t)p.slots, p.xt),
                 parts = ddpm_size_mul((size_t)p.groups, p.part),
                 fixed = p.ints + (size_t)p.T * p.buf;
    if (xts == SIZE_MAX || parts == SIZE_MAX || xts > SIZE_MAX - fixed - parts) return SIZE_MAX;
    return xts + parts + fixed;
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

void conv_direct_dw(float *dweight, const float *dout, const float *inp, const ddpm_conv_dims *d,
                    float *ws) {
    const dw_plan p = dw_plan_of(d);
    int *posoff = (int *)ws, *tapoff = posoff + p.P;
    for (int oh = 0; oh < d->H_out; oh++)
        for (int ow = 0; ow < d->W_out; ow++)
            posoff[oh * d->W_out + ow] = (oh * p.Wp + ow) * d->C_in;
    for (int ki = 0, t = 0; ki < d->KH; ki++)
        for (int kj = 0; kj < d->KW; kj++)
            for (int c = 0; c < d->C_in; c++) tapoff[t++] = (ki * p.Wp + kj) * d->C_in + c;
    float *bufs = ws + p.ints, *xt0 = bufs + (size_t)p.T * p.buf,
          *part0 = xt0 + (size_t)p.slots * p.xt;
    memset(part0, 0, sizeof(float) * p.part * (size_t)p.groups);
    const size_t in_sz = (size_t)d->C_in * d->H * d->W, out_sz = (size_t)d->C_out * p.P;
    const int chunks = (p.taps + DIRECT_CH * DDPM_MK_NR - 1) / (DIRECT_CH * DDPM_MK_NR);
    const int B = d->B, G = p.groups, nt = p.slots < G ? p.slots : G;
    if (G > 1) {
        /* item groups in parallel, each summed in item order into its own partial */
#pragma omp parallel for schedule(static) num_threads(nt) if (nt > 1)
        for (int g = 0; g < G; g++) {
            const int t = omp_get_thread_num();
            float *xt = xt0 + t * p.xt;
            for (int b = B * g / G; b < B * (g + 1) / G; b++) {
                const gathered_gemm gg = {dout + b * out_sz, p.P, posoff, d->C_out, p.P, p.taps,
                                          NULL, 1, NULL, NULL};
                dw_chunks(&gg, tapoff, p.taps, dw_channels_last(xt, inp + b * in_sz, d, &p),
                          part0 + (size_t)g * p.part, 0, chunks, bufs + t * p.buf);
            }
        }
    } else {
        /* one item: its tap chunks (disjoint columns of the partial) in parallel */
        const float *xt = dw_channels_last(xt0, inp, d, &p);
        const gathered_gemm gg = {dout, p.P, posoff, d->C_out, p.P, p.taps, NULL, 1, NULL, NULL};
#pragma omp parallel for schedule(static) if (chunks > 1)
        for (int c = 0; c < chunks; c++)
            dw_chunks(&gg, tapoff, p.taps, xt, part0, c, c + 1,
                      bufs + omp_get_thread_num() * p.buf);
    }
    /* dweight [co, c, ki, kj] += the partials' [co, (ki, kj, c)], in group order */
    const int KK = d->KH * d->KW;
#pragma omp parallel for schedule(static) if ((size_t)d->C_out * p.taps > OMP_MIN_WORK)
    for (int co = 0; co < d->C_out; co++)
        for (int t = 0; t < p.taps; t++) {
            float s = 0;
            for (int g = 0; g < G; g++) s += part0[(size_t)g * p.part + (size_t)co * p.taps + t];
            const int kk = t / d->C_in, c = t % d->C_in;
            dweight[((size_t)co * d->C_in + c) * KK + kk] += s;
        }
}

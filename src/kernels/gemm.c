/* gemm.c - the 6 x 16 register-tiled GEMM micro-kernel that every convolution and the fully
 * connected networks use, the packing of B panels (transposed, plain, or gathered through an
 * offset table), the row dot products, the bias column sums and the embedding row scatter: each
 * as a plain C reference and an AVX2 + FMA twin, and the entry points that pick one.
 *
 * The tutorial MLP multiplies 128 x 128 matrices: too small for a BLAS library to amortise its
 * packing, threading and dispatch, big enough that a register-tiled kernel runs near the FMA
 * units' peak. The GEMM kernel holds a 6 x 16 tile of C in 12 AVX2 registers and streams A
 * (broadcast, any strides) and B (rows of 16 floats: a packed panel or a row-major matrix), with
 * the bias, the embedding row, the ReLU and the ReLU's backward mask applied while the tile is in
 * registers. Each _ref function is the plain C statement of what its fast twin computes, with the
 * same operations in the same order (fmaf for each fused multiply-add), so the two agree exactly.
 * The fast versions are compiled for AVX2 + FMA whatever the build flags and chosen at run time.
 */
#include "kernels/kernels.h"

#include "core/internal.h"
#include "kernels/kernels_internal.h"

#include <math.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <omp.h>

/* ---- references ------------------------------------------------------------------------------ */

static inline float b_at(const ddpm_mk_gemm *g, int k, int n) {
    if (g->b_packed)
        return g->b[(ptrdiff_t)(n / DDPM_MK_NR) * g->K * DDPM_MK_NR + (ptrdiff_t)k * DDPM_MK_NR +
                    n % DDPM_MK_NR];
    return g->b[(ptrdiff_t)k * g->ldb + n];
}

void ddpm_mk_gemm_ref(const ddpm_mk_gemm *g, int m0, int m1, int n0, int n1) {
    for (int m = m0; m < m1; m++) {
        const float *arow = g->a + (ptrdiff_t)m * g->sam;
        const float *addrow =
            g->add ? g->add + (ptrdiff_t)(g->add_idx ? g->add_idx[m] : m) * g->ld_add : NULL;
        float *crow = g->c + (ptrdiff_t)m * g->ldc;
        for (int n = n0; n < n1; n++) {
            float acc = g->accumulate ? crow[n]
                        : g->bias     ? g->bias[n]
                        : g->bias_m   ? g->bias_m[m]
                                      : 0.0f;
            if (addrow) acc += addrow[n];
            for (int k = 0; k < g->K; k++)
                acc = fmaf(arow[(ptrdiff_t)k * g->sak], b_at(g, k, n), acc);
            if (g->relu) acc = acc > 0.0f ? acc : 0.0f;
            if (g->mask) acc = g->mask[(ptrdiff_t)m * g->ld_mask + n] > 0.0f ? acc : 0.0f;
            crow[n] = acc;
        }
    }
}

size_t ddpm_mk_packed_size(int K, int N) {
    return (size_t)(N + DDPM_MK_NR - 1) / DDPM_MK_NR * DDPM_MK_NR * (size_t)(K > 0 ? K : 1);
}

static void pack_t_ref(float *dst, const float *w, ptrdiff_t ldw, int K, int N, int p0, int p1) {
    for (int p = p0; p < p1; p++) {
        float *panel = dst + (ptrdiff_t)p * K * DDPM_MK_NR;
        for (int k = 0; k < K; k++)
            for (int j = 0; j < DDPM_MK_NR; j++) {
                const int n = p * DDPM_MK_NR + j;
                panel[(ptrdiff_t)k * DDPM_MK_NR + j] = n < N ? w[(ptrdiff_t)n * ldw + k] : 0.0f;
            }
    }
}

static void pack_n_ref(float *dst, const float *w, ptrdiff_t ldw, int K, int N, int p0, int p1) {
    for (int p = p0; p < p1; p++) {
        float *panel = dst + (ptrdiff_t)p * K * DDPM_MK_NR;
        for (int k = 0; k < K; k++)
            for (int j = 0; j < DDPM_MK_NR; j++) {
                const int n = p * DDPM_MK_NR + j;
                panel[(ptrdiff_t)k * DDPM_MK_NR + j] = n < N ? w[(ptrdiff_t)k * ldw + n] : 0.0f;
            }
    }
}

void ddpm_mk_pack_gather_ref(float *panel, const float *src, const int *off, int K,
                             const int *pos, int nl) {
    for (int k = 0; k < K; k++)
        for (int l = 0; l < DDPM_MK_NR; l++)
            panel[(ptrdiff_t)k * DDPM_MK_NR + l] = l < nl ? src[(ptrdiff_t)off[k] + pos[l]] : 0.0f;
}

/* The lane reduction of the dot kernel: ((l0 + l4) + (l2 + l6)) + ((l1 + l5) + (l3 + l7)). */
static inline float lanes_sum(const float l[8]) {
    const float s0 = l[0] + l[4], s1 = l[1] + l[5], s2 = l[2] + l[6], s3 = l[3] + l[7];
    return (s0 + s2) + (s1 + s3);
}

void ddpm_mk_dot_rows_ref(float *c, ptrdiff_t ldc, const float *a, ptrdiff_t lda, const float *w,
                          ptrdiff_t ldw, const float *bias, int K, int N, int m0, int m1) {
    for (int m = m0; m < m1; m++)
        for (int n = 0; n < N; n++) {
            float l[8] = {0};
            for (int k0 = 0; k0 < K; k0 += 8)
                for (int j = 0; j < 8; j++) {
                    const int k = k0 + j;
                    const float x = k < K ? a[(ptrdiff_t)m * lda + k] : 0.0f;
                    const float y = k < K ? w[(ptrdiff_t)n * ldw + k] : 0.0f;
                    l[j] = fmaf(x, y, l[j]);
                }
            c[(ptrdiff_t)m * ldc + n] = lanes_sum(l) + (bias ? bias[n] : 0.0f);
        }
}

static void colsum_ref(float *dbias, const float *G, ptrdiff_t ld, int B, int n0, int n1) {
    for (int b = 0; b < B; b++)
        for (int n = n0; n < n1; n++) dbias[n] += G[(ptrdiff_t)b * ld + n];
}

static void scatter_ref(float *dE, ptrdiff_t lde, const int *idx, const float *G, ptrdiff_t ld,
                        int B, int n0, int n1) {
    for (int b = 0; b < B; b++) {
        float *e = dE + (ptrdiff_t)idx[b] * lde;
        for (int n = n0; n < n1; n++) e[n] += G[(ptrdiff_t)b * ld + n];
    }
}
/* ---- AVX2 + FMA ------------------------------------------------------------------------------ */
#if MK_X86

/* Lanes j < count set. */
MK_AI __m256i lane_mask(int count) {
    const __m256i idx = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    return _mm256_cmpgt_epi32(_mm256_set1_epi32(count), idx);
}

/* Epilogue and prologue helpers of one row r of a tile: the init (C, bias or 0, plus the add row)
 * and the store (ReLU, mask). The last of the NV vectors is lane-masked when MASKED. */
#define MK_LD(p, v) (MASKED && (v) == NV - 1 ? _mm256_maskload_ps((p), lm) : _mm256_loadu_ps(p))

MK_AI __m256 init_vec(const ddpm_mk_gemm *g, const float *crow, const float *addrow, int m, int n,
                      int v, const int NV, const int MASKED, __m256i lm) {
    __m256 x = g->accumulate ? MK_LD(crow + 8 * v, v)
               : g->bias     ? MK_LD(g->bias + n + 8 * v, v)
               : g->bias_m   ? _mm256_broadcast_ss(g->bias_m + m)
                             : _mm256_setzero_ps();
    if (addrow) x = _mm256_add_ps(x, MK_LD(addrow + 8 * v, v));
    return x;
}

MK_AI void init_row(const ddpm_mk_gemm *g, int m, int n, const int NV, const int MASKED, __m256i lm,
                    __m256 *x0, __m256 *x1) {
    const float *crow = g->c + (ptrdiff_t)m * g->ldc + n;
    const float *addrow =
        g->add ? g->add + (ptrdiff_t)(g->add_idx ? g->add_idx[m] : m) * g->ld_add + n : NULL;
    *x0 = init_vec(g, crow, addrow, m, n, 0, NV, MASKED, lm);
    if (NV == 2) *x1 = init_vec(g, crow, addrow, m, n, 1, NV, MASKED, lm);
}

MK_AI __m256 finish_vec(const ddpm_mk_gemm *g, __m256 x, const float *mrow, int v, const int NV,
                        const int MASKED, __m256i lm) {
    const __m256 zero = _mm256_setzero_ps();
    if (g->relu) x = _mm256_max_ps(x, zero); /* NaN and -0 give the second operand: +0 */
    if (mrow) x = _mm256_and_ps(x, _mm256_cmp_ps(MK_LD(mrow + 8 * v, v), zero, _CMP_GT_OQ));
    return x;
}

MK_AI void store_row(const ddpm_mk_gemm *g, int m, int n, const int NV, const int MASKED,
                     __m256i lm, __m256 x0, __m256 x1) {
    float *crow = g->c + (ptrdiff_t)m * g->ldc + n;
    const float *mrow = g->mask ? g->mask + (ptrdiff_t)m * g->ld_mask + n : NULL;
    x0 = finish_vec(g, x0, mrow, 0, NV, MASKED, lm);
    if (NV == 1) {
        if (MASKED)
            _mm256_maskstore_ps(crow, lm, x0);
        else
            _mm256_storeu_ps(crow, x0);
        return;
    }
    x1 = finish_vec(g, x1, mrow, 1, NV, MASKED, lm);
    _mm256_storeu_ps(crow, x0);
    if (MASKED)
        _mm256_maskstore_ps(crow + 8, lm, x1);
    else
        _mm256_storeu_ps(crow + 8, x1);
}

/* One MR x (8 NV) tile of C at (m, n), the accumulators in named registers (an array of them
 * ends up on the stack). MASKED: the last vector has only `tail` valid columns. */
MK_AI void tile(const ddpm_mk_gemm *g, int m, int n, const int MR, const int NV, const int MASKED,
                int tail) {
    const int K = g->K;
    const __m256i lm = lane_mask(MASKED ? tail : 8);
    const __m256 zero = _mm256_setzero_ps();
    __m256 c00 = zero, c01 = zero, c10 = zero, c11 = zero, c20 = zero, c21 = zero;
    __m256 c30 = zero, c31 = zero, c40 = zero, c41 = zero, c50 = zero, c51 = zero;
    init_row(g, m, n, NV, MASKED, lm, &c00, &c01);
    if (MR > 1) init_row(g, m + 1, n, NV, MASKED, lm, &c10, &c11);
    if (MR > 2) init_row(g, m + 2, n, NV, MASKED, lm, &c20, &c21);
    if (MR > 3) init_row(g, m + 3, n, NV, MASKED, lm, &c30, &c31);
    if (MR > 4) init_row(g, m + 4, n, NV, MASKED, lm, &c40, &c41);
    if (MR > 5) init_row(g, m + 5, n, NV, MASKED, lm, &c50, &c51);

    /* A rows are addressed from two moving pointers, p (rows 0-2) and q (rows 3-5), plus 1 or 2
     * row strides: 3 pointer updates per k instead of 6. */
    const ptrdiff_t sb = g->sam * (ptrdiff_t)sizeof(float);
    // clang-format off
#define MK_AROW(p, j) ((const float *)((const char *)(p) + (j) * sb))
#define MK_FMA_ROW(r, ptr)                                                                         \
    if (MR > r) {                                                                                  \
        const __m256 av = _mm256_broadcast_ss(ptr);                                                \
        c##r##0 = _mm256_fmadd_ps(av, b0, c##r##0);                                                \
        if (NV == 2) c##r##1 = _mm256_fmadd_ps(av, b1, c##r##1);                                   \
    }
#define MK_FMA_ALL(p, q)                                                                           \
    MK_FMA_ROW(0, p) MK_FMA_ROW(1, MK_AROW(p, 1)) MK_FMA_ROW(2, MK_AROW(p, 2))                     \
    MK_FMA_ROW(3, q) MK_FMA_ROW(4, MK_AROW(q, 1)) MK_FMA_ROW(5, MK_AROW(q, 2))
    // clang-format on

    const ptrdiff_t sak = g->sak;
    const float *pa = g->a + (ptrdiff_t)m * g->sam; /* row 0 of the tile */
    const float *qa = MR > 3 ? pa + 3 * g->sam : pa; /* row 3 */
    if (g->b_packed || !MASKED) {
        const float *bp =
            g->b_packed ? g->b + (ptrdiff_t)(n / DDPM_MK_NR) * K * DDPM_MK_NR : g->b + n;
        const ptrdiff_t bs = g->b_packed ? DDPM_MK_NR : g->ldb;
        for (int k = 0; k < K; k++, bp += bs, pa += sak, qa += sak) {
            const __m256 b0 = _mm256_loadu_ps(bp);
            const __m256 b1 = NV == 2 ? _mm256_loadu_ps(bp + 8) : zero;
            MK_FMA_ALL(pa, qa)
        }
    } else {
        /* an unpacked B at the right edge: do not read past its last column */
        const float *bp = g->b + n;
        for (int k = 0; k < K; k++, bp += g->ldb, pa += sak, qa += sak) {
            const __m256 b0 = MK_LD(bp, 0);
            const __m256 b1 = NV == 2 ? MK_LD(bp + 8, 1) : zero;
            MK_FMA_ALL(pa, qa)
        }
    }
#undef MK_FMA_ALL
#undef MK_FMA_ROW
#undef MK_AROW

    store_row(g, m, n, NV, MASKED, lm, c00, c01);
    if (MR > 1) store_row(g, m + 1, n, NV, MASKED, lm, c10, c11);
    if (MR > 2) store_row(g, m + 2, n, NV, MASKED, lm, c20, c21);
    if (MR > 3) store_row(g, m + 3, n, NV, MASKED, lm, c30, c31);
    if (MR > 4) store_row(g, m + 4, n, NV, MASKED, lm, c40, c41);
    if (MR > 5) store_row(g, m + 5, n, NV, MASKED, lm, c50, c51);
}
#undef MK_LD

// clang-format off
typedef void (*tile_fn)(const ddpm_mk_gemm *g, int m, int n, int tail);
#define MK_TILE(MR, NV, MASKED)                                                                    \
    MK_TGT __attribute__((noinline)) static void tile_##MR##_##NV##_##MASKED(                     \
        const ddpm_mk_gemm *g, int m, int n, int tail) {                                          \
        tile(g, m, n, MR, NV, MASKED, tail);                                                      \
    }
#define MK_TILES(MR) MK_TILE(MR, 2, 0) MK_TILE(MR, 2, 1) MK_TILE(MR, 1, 0) MK_TILE(MR, 1, 1)
MK_TILES(1)
MK_TILES(2)
MK_TILES(3)
MK_TILES(4)
MK_TILES(5)
MK_TILES(6)
#define MK_ROW(MR) {tile_##MR##_2_0, tile_##MR##_2_1, tile_##MR##_1_0, tile_##MR##_1_1}
static const tile_fn tiles[6][4] = {MK_ROW(1), MK_ROW(2), MK_ROW(3),
                                    MK_ROW(4), MK_ROW(5), MK_ROW(6)};
// clang-format on

MK_TGT static void gemm_avx2(const ddpm_mk_gemm *g, int m0, int m1, int n0, int n1) {
    for (int m = m0; m < m1;) {
        const int rem = m1 - m;
        const int mr = ddpm_mk_tile_rows_max(rem, DDPM_MK_MR_AVX2);
        for (int n = n0; n < n1; n += DDPM_MK_NR) {
            const int nc = n1 - n < DDPM_MK_NR ? n1 - n : DDPM_MK_NR;
            const int kind = nc == 16 ? 0 : nc > 8 ? 1 : nc == 8 ? 2 : 3;
            tiles[mr - 1][kind](g, m, n, nc > 8 ? nc - 8 : nc);
        }
        m += mr;
    }
}

MK_AI void transpose8(__m256 r[8]) {
    const __m256 t0 = _mm256_unpacklo_ps(r[0], r[1]), t1 = _mm256_unpackhi_ps(r[0], r[1]);
    const __m256 t2 = _mm256_unpacklo_ps(r[2], r[3]), t3 = _mm256_unpackhi_ps(r[2], r[3]);
    const __m256 t4 = _mm256_unpacklo_ps(r[4], r[5]), t5 = _mm256_unpackhi_ps(r[4], r[5]);
    const __m256 t6 = _mm256_unpacklo_ps(r[6], r[7]), t7 = _mm256_unpackhi_ps(r[6], r[7]);
    const __m256 s0 = _mm256_shuffle_ps(t0, t2, 0x44), s1 = _mm256_shuffle_ps(t0, t2, 0xEE);
    const __m256 s2 = _mm256_shuffle_ps(t1, t3, 0x44), s3 = _mm256_shuffle_ps(t1, t3, 0xEE);
    const __m256 s4 = _mm256_shuffle_ps(t4, t6, 0x44), s5 = _mm256_shuffle_ps(t4, t6, 0xEE);
    const __m256 s6 = _mm256_shuffle_ps(t5, t7, 0x44), s7 = _mm256_shuffle_ps(t5, t7, 0xEE);
    r[0] = _mm256_permute2f128_ps(s0, s4, 0x20);
    r[1] = _mm256_permute2f128_ps(s1, s5, 0x20);
    r[2] = _mm256_permute2f128_ps(s2, s6, 0x20);
    r[3] = _mm256_permute2f128_ps(s3, s7, 0x20);
    r[4] = _mm256_permute2f128_ps(s0, s4, 0x31);
    r[5] = _mm256_permute2f128_ps(s1, s5, 0x31);
    r[6] = _mm256_permute2f128_ps(s2, s6, 0x31);
    r[7] = _mm256_permute2f128_ps(s3, s7, 0x31);
}

MK_TGT static void pack_t_avx2(float *dst, const float *w, ptrdiff_t ldw, int K, int N, int p0,
                               int p1) {
    for (int p = p0; p < p1; p++) {
        if ((p + 1) * DDPM_MK_NR > N || K % 8) {
            pack_t_ref(dst, w, ldw, K, N, p, p + 1);
            continue;
        }
        float *panel = dst + (ptrdiff_t)p * K * DDPM_MK_NR;
        for (int h = 0; h < 2; h++) {
            const float *src = w + (ptrdiff_t)(p * DDPM_MK_NR + 8 * h) * ldw;
            for (int k = 0; k < K; k += 8) {
                __m256 r[8];
                for (int i = 0; i < 8; i++) r[i] = _mm256_loadu_ps(src + (ptrdiff_t)i * ldw + k);
                transpose8(r);
                for (int i = 0; i < 8; i++)
                    _mm256_storeu_ps(panel + (ptrdiff_t)(k + i) * DDPM_MK_NR + 8 * h, r[i]);
            }
        }
    }
}

MK_TGT static void pack_n_avx2(float *dst, const float *w, ptrdiff_t ldw, int K, int N, int p0,
                               int p1) {
    for (int p = p0; p < p1; p++) {
        if ((p + 1) * DDPM_MK_NR > N) {
            pack_n_ref(dst, w, ldw, K, N, p, p + 1);
            continue;
        }
        float *panel = dst + (ptrdiff_t)p * K * DDPM_MK_NR;
        const float *src = w + p * DDPM_MK_NR;
        for (int k = 0; k < K; k++) {
            _mm256_storeu_ps(panel + (ptrdiff_t)k * DDPM_MK_NR,
                             _mm256_loadu_ps(src + (ptrdiff_t)k * ldw));
            _mm256_storeu_ps(panel + (ptrdiff_t)k * DDPM_MK_NR + 8,
                             _mm256_loadu_ps(src + (ptrdiff_t)k * ldw + 8));
        }
    }
}

/* Each run of consecutive positions pos[l0..l1) reads, for vector v (lanes 8v..8v+7), the 8
 * floats at src + off[k] + pos[l0] - l0 + 8v, whose lane i is position pos[l0] + (8v + i - l0),
 * and keeps the run's lanes. Outputs at small resolutions have a run per output row, so a vector
 * is usually one or two runs: that case is two loads, a blend and a mask per vector and k. */
MK_TGT static void pack_gather_avx2(float *panel, const float *src, const int *off, int K,
                                    const int *pos, int nl) {
    ptrdiff_t base[2][DDPM_MK_NR];
    __m256 keep[2][DDPM_MK_NR];
    int loads[2] = {0, 0};
    for (int l0 = 0, l1; l0 < nl; l0 = l1) {
        for (l1 = l0 + 1; l1 < nl && pos[l1] == pos[l1 - 1] + 1; l1++) {
        }
        for (int v = 0; v < 2; v++) {
            const int a = l0 > 8 * v ? l0 : 8 * v, b = l1 < 8 * v + 8 ? l1 : 8 * v + 8;
            if (a >= b) continue;
            const __m256i idx = _mm256_add_epi32(_mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7),
                                                 _mm256_set1_epi32(8 * v));
            const __m256i in = _mm256_and_si256(_mm256_cmpgt_epi32(idx, _mm256_set1_epi32(a - 1)),
                                                _mm256_cmpgt_epi32(_mm256_set1_epi32(b), idx));
            base[v][loads[v]] = (ptrdiff_t)pos[l0] - l0 + 8 * v;
            keep[v][loads[v]++] = _mm256_castsi256_ps(in);
        }
    }
    if (loads[0] <= 2 && loads[1] <= 2) {
        /* x_v = (load b_v0, or load b_v1 in its run's lanes) and the valid lanes */
        ptrdiff_t b[2][2];
        __m256 second[2], valid[2];
        for (int v = 0; v < 2; v++) {
            b[v][0] = loads[v] ? base[v][0] : 0;
            b[v][1] = loads[v] == 2 ? base[v][1] : b[v][0];
            second[v] = loads[v] == 2 ? keep[v][1] : _mm256_setzero_ps();
            valid[v] = loads[v] == 2   ? _mm256_or_ps(keep[v][0], keep[v][1])
                       : loads[v] == 1 ? keep[v][0]
                                       : _mm256_setzero_ps();
        }
        for (int k = 0; k < K; k++) {
            const float *s = src + off[k];
            const __m256 x0 = _mm256_blendv_ps(_mm256_loadu_ps(s + b[0][0]),
                                               _mm256_loadu_ps(s + b[0][1]), second[0]);
            const __m256 x1 = _mm256_blendv_ps(_mm256_loadu_ps(s + b[1][0]),
                                               _mm256_loadu_ps(s + b[1][1]), second[1]);
            _mm256_storeu_ps(panel + (ptrdiff_t)k * DDPM_MK_NR, _mm256_and_ps(x0, valid[0]));
            _mm256_storeu_ps(panel + (ptrdiff_t)k * DDPM_MK_NR + 8, _mm256_and_ps(x1, valid[1]));
        }
        return;
    }
    for (int k = 0; k < K; k++) {
        const float *s = src + off[k];
        for (int v = 0; v < 2; v++) {
            __m256 x = _mm256_setzero_ps();
            for (int i = 0; i < loads[v]; i++)
                x = _mm256_blendv_ps(x, _mm256_loadu_ps(s + base[v][i]), keep[v][i]);
            _mm256_storeu_ps(panel + (ptrdiff_t)k * DDPM_MK_NR + 8 * v, x);
        }
    }
}

MK_AI float hsum(__m256 v) {
    /* ((l0 + l4) + (l2 + l6)) + ((l1 + l5) + (l3 + l7)) */
    const __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    const __m128 t = _mm_add_ps(s, _mm_movehl_ps(s, s));
    return _mm_cvtss_f32(_mm_add_ss(t, _mm_shuffle_ps(t, t, 1)));
}

/* R rows x up to 2 outputs (n, n + 1) of the dot kernel. */
MK_AI void dot_tile(float *c, ptrdiff_t ldc, const float *a, ptrdiff_t lda, const float *w,
                    ptrdiff_t ldw, const float *bias, int K, int m, int n, const int R,
                    const int NN) {
    __m256 acc[4][2];
    for (int r = 0; r < R; r++)
        for (int j = 0; j < NN; j++) acc[r][j] = _mm256_setzero_ps();
    const float *w0 = w + (ptrdiff_t)n * ldw, *w1 = w0 + ldw;
    int k = 0;
    for (; k + 8 <= K; k += 8) {
        const __m256 y0 = _mm256_loadu_ps(w0 + k);
        const __m256 y1 = NN == 2 ? _mm256_loadu_ps(w1 + k) : y0;
        for (int r = 0; r < R; r++) {
            const __m256 x = _mm256_loadu_ps(a + (ptrdiff_t)(m + r) * lda + k);
            acc[r][0] = _mm256_fmadd_ps(x, y0, acc[r][0]);
            if (NN == 2) acc[r][1] = _mm256_fmadd_ps(x, y1, acc[r][1]);
        }
    }
    if (k < K) {
        const __m256i lm = lane_mask(K - k);
        const __m256 y0 = _mm256_maskload_ps(w0 + k, lm);
        const __m256 y1 = NN == 2 ? _mm256_maskload_ps(w1 + k, lm) : y0;
        for (int r = 0; r < R; r++) {
            const __m256 x = _mm256_maskload_ps(a + (ptrdiff_t)(m + r) * lda + k, lm);
            acc[r][0] = _mm256_fmadd_ps(x, y0, acc[r][0]);
            if (NN == 2) acc[r][1] = _mm256_fmadd_ps(x, y1, acc[r][1]);
        }
    }
    for (int r = 0; r < R; r++)
        for (int j = 0; j < NN; j++)
            c[(ptrdiff_t)(m + r) * ldc + n + j] = hsum(acc[r][j]) + (bias ? bias[n + j] : 0.0f);
}

MK_TGT static void dot_avx2(float *c, ptrdiff_t ldc, const float *a, ptrdiff_t lda, const float *w,
                            ptrdiff_t ldw, const float *bias, int K, int N, int m0, int m1) {
    int m = m0;
    for (; m + 4 <= m1; m += 4) {
        int n = 0;
        for (; n + 2 <= N; n += 2) dot_tile(c, ldc, a, lda, w, ldw, bias, K, m, n, 4, 2);
        if (n < N) dot_tile(c, ldc, a, lda, w, ldw, bias, K, m, n, 4, 1);
    }
    for (; m < m1; m++) {
        int n = 0;
        for (; n + 2 <= N; n += 2) dot_tile(c, ldc, a, lda, w, ldw, bias, K, m, n, 1, 2);
        if (n < N) dot_tile(c, ldc, a, lda, w, ldw, bias, K, m, n, 1, 1);
    }
}

MK_TGT static void colsum_avx2(float *dbias, const float *G, ptrdiff_t ld, int B, int n0, int n1) {
    int n = n0;
    for (; n + 32 <= n1; n += 32) {
        __m256 s0 = _mm256_loadu_ps(dbias + n), s1 = _mm256_loadu_ps(dbias + n + 8);
        __m256 s2 = _mm256_loadu_ps(dbias + n + 16), s3 = _mm256_loadu_ps(dbias + n + 24);
        for (int b = 0; b < B; b++) {
            const float *g = G + (ptrdiff_t)b * ld + n;
            s0 = _mm256_add_ps(s0, _mm256_loadu_ps(g));
            s1 = _mm256_add_ps(s1, _mm256_loadu_ps(g + 8));
            s2 = _mm256_add_ps(s2, _mm256_loadu_ps(g + 16));
            s3 = _mm256_add_ps(s3, _mm256_loadu_ps(g + 24));
        }
        _mm256_storeu_ps(dbias + n, s0);
        _mm256_storeu_ps(dbias + n + 8, s1);
        _mm256_storeu_ps(dbias + n + 16, s2);
        _mm256_storeu_ps(dbias + n + 24, s3);
    }
    for (; n + 8 <= n1; n += 8) {
        __m256 s = _mm256_loadu_ps(dbias + n);
        for (int b = 0; b < B; b++)
            s = _mm256_add_ps(s, _mm256_loadu_ps(G + (ptrdiff_t)b * ld + n));
        _mm256_storeu_ps(dbias + n, s);
    }
    if (n < n1) colsum_ref(dbias, G, ld, B, n, n1);
}

MK_TGT static void scatter_avx2(float *dE, ptrdiff_t lde, const int *idx, const float *G,
                                ptrdiff_t ld, int B, int n0, int n1) {
    const int n8 = n0 + (n1 - n0) / 8 * 8;
    for (int b = 0; b < B; b++) {
        float *e = dE + (ptrdiff_t)idx[b] * lde;
        const float *g = G + (ptrdiff_t)b * ld;
        for (int n = n0; n < n8; n += 8)
            _mm256_storeu_ps(e + n, _mm256_add_ps(_mm256_loadu_ps(e + n), _mm256_loadu_ps(g + n)));
        for (int n = n8; n < n1; n++) e[n] += g[n];
    }
}

#endif /* MK_X86 */

/* ---- entry points ---------------------------------------------------------------------------- */

void ddpm_mk_gemm_run(const ddpm_mk_gemm *g, int m0, int m1, int n0, int n1) {
    if (m0 >= m1 || n0 >= n1) return;
#if MK_X86
    const ddpm_isa isa = ddpm_mk_isa();
    if (isa >= DDPM_ISA_AVX512) {
        ddpm_mk_gemm_avx512(g, m0, m1, n0, n1);
        return;
    }
    if (isa >= DDPM_ISA_AVX2) {
        gemm_avx2(g, m0, m1, n0, n1);
        return;
    }
#endif
    ddpm_mk_gemm_ref(g, m0, m1, n0, n1);
}

void ddpm_mk_pack_b_t(float *dst, const float *w, ptrdiff_t ldw, int K, int N, int p0, int p1) {
#if MK_X86
    if (ddpm_mk_fast()) {
        pack_t_avx2(dst, w, ldw, K, N, p0, p1);
        return;
    }
#endif
    pack_t_ref(dst, w, ldw, K, N, p0, p1);
}

void ddpm_mk_pack_b_n(float *dst, const float *w, ptrdiff_t ldw, int K, int N, int p0, int p1) {
#if MK_X86
    if (ddpm_mk_fast()) {
        pack_n_avx2(dst, w, ldw, K, N, p0, p1);
        return;
    }
#endif
    pack_n_ref(dst, w, ldw, K, N, p0, p1);
}

void ddpm_mk_pack_gather(float *panel, const float *src, const int *off, int K, const int *pos,
                         int nl) {
#if MK_X86
    if (ddpm_mk_fast()) {
        pack_gather_avx2(panel, src, off, K, pos, nl);
        return;
    }
#endif
    ddpm_mk_pack_gather_ref(panel, src, off, K, pos, nl);
}

void ddpm_mk_dot_rows(float *c, ptrdiff_t ldc, const float *a, ptrdiff_t lda, const float *w,
                      ptrdiff_t ldw, const float *bias, int K, int N, int m0, int m1) {
#if MK_X86
    if (ddpm_mk_fast()) {
        dot_avx2(c, ldc, a, lda, w, ldw, bias, K, N, m0, m1);
        return;
    }
#endif
    ddpm_mk_dot_rows_ref(c, ldc, a, lda, w, ldw, bias, K, N, m0, m1);
}

void ddpm_mk_colsum(float *dbias, const float *G, ptrdiff_t ld, int B, int n0, int n1) {
#if MK_X86
    if (ddpm_mk_fast()) {
        colsum_avx2(dbias, G, ld, B, n0, n1);
        return;
    }
#endif
    colsum_ref(dbias, G, ld, B, n0, n1);
}

void ddpm_mk_scatter_rows(float *dE, ptrdiff_t lde, const int *idx, const float *G, ptrdiff_t ld,
                          int B, int n0, int n1) {
#if MK_X86
    if (ddpm_mk_fast()) {
        scatter_avx2(dE, lde, idx, G, ld, B, n0, n1);
        return;
    }
#endif
    scatter_ref(dE, lde, idx, G, ld, B, n0, n1);
}

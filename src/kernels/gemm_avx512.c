/* gemm_avx512.c - the GEMM micro-kernel of gemm.c for CPUs with AVX-512: the same contract
 * (kernels.h, ddpm_mk_gemm) and the same floating-point operations in the same order, so its
 * results are bit for bit those of the AVX2 kernel and of ddpm_mk_gemm_ref.
 *
 * A row of a 16-column B panel is one 512-bit register, so a tile of up to 12 rows x 16 columns
 * holds its accumulators in 12 registers (of 32): per k, one load of B and 12 fused multiply-adds
 * with A broadcast from memory. Twelve independent accumulators cover the FMA latency on a core
 * that issues two 512-bit FMAs a cycle (Zen 5, Intel server cores) as well as on one that splits
 * them into 256-bit halves (Zen 4). Column tails use a lane mask instead of the AVX2 kernel's
 * separate half-width tiles.
 */
#include "kernels/kernels_internal.h"

#if MK_X86

/* The row's start value: C, the bias (per column or per row) or 0, plus the add row. */
MK_AI512 __m512 init_row512(const ddpm_mk_gemm *g, int m, int n, __mmask16 km) {
    const float *crow = g->c + (ptrdiff_t)m * g->ldc + n;
    __m512 x = g->accumulate ? _mm512_maskz_loadu_ps(km, crow)
               : g->bias     ? _mm512_maskz_loadu_ps(km, g->bias + n)
               : g->bias_m   ? _mm512_set1_ps(g->bias_m[m])
                             : _mm512_setzero_ps();
    if (g->add) {
        const ptrdiff_t r = g->add_idx ? g->add_idx[m] : m;
        x = _mm512_add_ps(x, _mm512_maskz_loadu_ps(km, g->add + r * g->ld_add + n));
    }
    return x;
}

/* ReLU (NaN and -0 give +0, as max's second operand), the ReLU-backward mask, the store. */
MK_AI512 void store_row512(const ddpm_mk_gemm *g, int m, int n, __mmask16 km, __m512 x) {
    const __m512 zero = _mm512_setzero_ps();
    if (g->relu) x = _mm512_max_ps(x, zero);
    if (g->mask) {
        const __m512 mv = _mm512_maskz_loadu_ps(km, g->mask + (ptrdiff_t)m * g->ld_mask + n);
        x = _mm512_maskz_mov_ps(_mm512_cmp_ps_mask(mv, zero, _CMP_GT_OQ), x);
    }
    _mm512_mask_storeu_ps(g->c + (ptrdiff_t)m * g->ldc + n, km, x);
}

/* One MR x 16 tile of C at (m, n), its accumulators in named registers. km: the valid columns
 * (all 16 unless at the right edge). A rows are addressed from four moving pointers (rows 0, 3,
 * 6, 9) plus 1 or 2 row strides. */
MK_AI512 void tile512(const ddpm_mk_gemm *g, int m, int n, const int MR, __mmask16 km) {
    const int K = g->K;
    const __m512 zero = _mm512_setzero_ps();
    __m512 c0 = zero, c1 = zero, c2 = zero, c3 = zero, c4 = zero, c5 = zero;
    __m512 c6 = zero, c7 = zero, c8 = zero, c9 = zero, c10 = zero, c11 = zero;
    // clang-format off
#define MK_INIT(r) if (MR > r) c##r = init_row512(g, m + r, n, km);
    MK_INIT(0) MK_INIT(1) MK_INIT(2) MK_INIT(3) MK_INIT(4) MK_INIT(5)
    MK_INIT(6) MK_INIT(7) MK_INIT(8) MK_INIT(9) MK_INIT(10) MK_INIT(11)
#undef MK_INIT
    const ptrdiff_t sb = g->sam * (ptrdiff_t)sizeof(float), sak = g->sak;
#define MK_AROW(p, j) ((const float *)((const char *)(p) + (j) * sb))
#define MK_FMA(r, ptr) if (MR > r) c##r = _mm512_fmadd_ps(_mm512_set1_ps(*(ptr)), b, c##r);
#define MK_FMA3(r0, r1, r2, p) MK_FMA(r0, p) MK_FMA(r1, MK_AROW(p, 1)) MK_FMA(r2, MK_AROW(p, 2))
    // clang-format on
    const float *p0 = g->a + (ptrdiff_t)m * g->sam;
    const float *p3 = MR > 3 ? MK_AROW(p0, 3) : p0, *p6 = MR > 6 ? MK_AROW(p0, 6) : p0;
    const float *p9 = MR > 9 ? MK_AROW(p0, 9) : p0;
    const int full = km == (__mmask16)0xFFFF;
    const float *bp = g->b_packed ? g->b + (ptrdiff_t)(n / DDPM_MK_NR) * K * DDPM_MK_NR : g->b + n;
    const ptrdiff_t bs = g->b_packed ? DDPM_MK_NR : g->ldb;
    for (int k = 0; k < K; k++, bp += bs, p0 += sak, p3 += sak, p6 += sak, p9 += sak) {
        /* packed panels are zero-padded to 16 columns; an unpacked B's last columns are not */
        const __m512 b = g->b_packed || full ? _mm512_loadu_ps(bp) : _mm512_maskz_loadu_ps(km, bp);
        MK_FMA3(0, 1, 2, p0) MK_FMA3(3, 4, 5, p3) MK_FMA3(6, 7, 8, p6) MK_FMA3(9, 10, 11, p9)
    }
#undef MK_FMA3
#undef MK_FMA
#undef MK_AROW
    // clang-format off
#define MK_STORE(r) if (MR > r) store_row512(g, m + r, n, km, c##r);
    MK_STORE(0) MK_STORE(1) MK_STORE(2) MK_STORE(3) MK_STORE(4) MK_STORE(5)
    MK_STORE(6) MK_STORE(7) MK_STORE(8) MK_STORE(9) MK_STORE(10) MK_STORE(11)
#undef MK_STORE
    // clang-format on
}

// clang-format off
typedef void (*tile512_fn)(const ddpm_mk_gemm *g, int m, int n, __mmask16 km);
#define MK_TILE512(MR)                                                                             \
    MK_TGT512 __attribute__((noinline)) static void tile512_##MR(const ddpm_mk_gemm *g, int m,   \
                                                                 int n, __mmask16 km) {          \
        tile512(g, m, n, MR, km);                                                                 \
    }
MK_TILE512(1) MK_TILE512(2) MK_TILE512(3) MK_TILE512(4) MK_TILE512(5) MK_TILE512(6)
MK_TILE512(7) MK_TILE512(8) MK_TILE512(9) MK_TILE512(10) MK_TILE512(11) MK_TILE512(12)
static const tile512_fn tiles512[DDPM_MK_MR_AVX512] = {
    tile512_1, tile512_2, tile512_3, tile512_4, tile512_5, tile512_6,
    tile512_7, tile512_8, tile512_9, tile512_10, tile512_11, tile512_12};
// clang-format on

MK_TGT512 void ddpm_mk_gemm_avx512(const ddpm_mk_gemm *g, int m0, int m1, int n0, int n1) {
    for (int m = m0; m < m1;) {
        const int mr = ddpm_mk_tile_rows_max(m1 - m, DDPM_MK_MR_AVX512);
        for (int n = n0; n < n1; n += DDPM_MK_NR) {
            const int nc = n1 - n < DDPM_MK_NR ? n1 - n : DDPM_MK_NR;
            tiles512[mr - 1](g, m, n, (__mmask16)((1u << nc) - 1u));
        }
        m += mr;
    }
}

#endif /* MK_X86 */

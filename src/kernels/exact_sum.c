/* exact_sum.c - gradients summed exactly, so that the sum of a batch's micro-batch gradients does
 * not depend on how the micro-batches were spread over threads or processes.
 *
 * Floating-point addition is not associative: two threads or two MPI ranks that each add half of
 * the micro-batches and then add their halves get a different float than one thread adding them
 * all in order. Integer addition is associative. So each micro-batch's float gradient becomes a
 * fixed-point number with its lowest bit worth 2^-DDPM_EXACT_FRAC_BITS (2^-80), held as two
 * signed 64-bit limbs, value = hi * 2^40 + lo, with lazy carries: an addend's lo part is below
 * 2^40 and its hi part below 2^(DDPM_EXACT_MAX_LOG2 + 40), so DDPM_EXACT_MAX_ADDENDS of them
 * add up in each limb without overflow, and limbs of different ranks are summed with a plain
 * MPI_SUM over int64. The sum is rounded once to float (through double: a fixed rule, the same
 * on every rank). A float |g| >= 2^-(80 - 23) = 2^-57 converts exactly; smaller ones are rounded
 * to the grid (round half up in magnitude). Elements with |g| >= 2^DDPM_EXACT_MAX_LOG2, NaN or
 * inf are not added but counted; callers add the count into the accumulator's extra last slot,
 * which rides through the same reduction, so the step is reported as diverged on every rank.
 *
 * The AVX-512 loop computes exactly the integers of the scalar one (tests/test_microbatch.c
 * compares them). */
#include "core/internal.h"
#include "kernels/kernels.h"
#include "kernels/kernels_internal.h"

#include <string.h>

#define LIMB 40
#define LO_MASK ((((int64_t)1) << LIMB) - 1)

/* One float's limbs (hi, lo); returns 0, or 1 if the element is refused. */
static inline int split_one(float x, int64_t *hi, int64_t *lo) {
    uint32_t u;
    memcpy(&u, &x, sizeof u);
    const int e = (int)((u >> 23) & 0xff);
    const int64_t mant = (int64_t)((u & 0x7fffffu) | (e ? 0x800000u : 0u));
    *hi = *lo = 0;
    if (e == 0xff || (e ? e : 1) - 127 >= DDPM_EXACT_MAX_LOG2) return 1;
    /* |x| = mant * 2^(max(e,1) - 150), in grid units mant * 2^shift */
    const int shift = (e ? e : 1) - 150 + DDPM_EXACT_FRAC_BITS;
    int64_t h = 0, l = 0;
    if (shift >= LIMB) {
        h = mant << (shift - LIMB);
    } else if (shift >= 0) {
        h = mant >> (LIMB - shift);
        l = (mant << shift) & LO_MASK;
    } else if (shift > -25) {
        l = (mant + ((int64_t)1 << (-shift - 1))) >> -shift;
    }
    if (u >> 31) {
        h = -h;
        l = -l;
    }
    *hi = h;
    *lo = l;
    return 0;
}

static int64_t exact_add_ref(ddpm_exact_acc acc, const float *g, size_t lo, size_t hi) {
    int64_t bad = 0;
    for (size_t i = lo; i < hi; i++) {
        int64_t h, l;
        bad += split_one(g[i], &h, &l);
        acc.hi[i] += h;
        acc.lo[i] += l;
    }
    return bad;
}

#if MK_X86
#include <immintrin.h>

/* Eight floats (as 32-bit lanes of a 256-bit vector) added into eight limb pairs. */
MK_TGT512 static inline int add8_avx512(int64_t *hi, int64_t *lo, __m256i u) {
    const __m512i uq = _mm512_cvtepu32_epi64(u);
    const __m512i e = _mm512_and_si512(_mm512_srli_epi64(uq, 23), _mm512_set1_epi64(0xff));
    const __mmask8 normal = _mm512_cmpneq_epi64_mask(e, _mm512_setzero_si512());
    const __m512i e1 = _mm512_mask_blend_epi64(normal, _mm512_set1_epi64(1), e);
    const __m512i mant = _mm512_mask_or_epi64(_mm512_and_si512(uq, _mm512_set1_epi64(0x7fffff)),
                                              normal, _mm512_and_si512(uq, _mm512_set1_epi64(0x7fffff)),
                                              _mm512_set1_epi64(0x800000));
    const __mmask8 badm = _mm512_cmpeq_epi64_mask(e, _mm512_set1_epi64(0xff)) |
                          _mm512_cmpge_epi64_mask(e1, _mm512_set1_epi64(127 + DDPM_EXACT_MAX_LOG2));
    const __m512i shift = _mm512_sub_epi64(e1, _mm512_set1_epi64(150 - DDPM_EXACT_FRAC_BITS));
    const __m512i limb = _mm512_set1_epi64(LIMB);
    const __mmask8 big = _mm512_cmpge_epi64_mask(shift, limb);
    const __mmask8 mid = _mm512_cmpge_epi64_mask(shift, _mm512_setzero_si512()) & (__mmask8)~big;
    const __mmask8 small = _mm512_cmpgt_epi64_mask(shift, _mm512_set1_epi64(-25)) & (__mmask8)~big &
                           (__mmask8)~mid;
    /* big: h = mant << (shift - 40); mid: h = mant >> (40 - shift), l = (mant << shift) & mask */
    __m512i h = _mm512_maskz_sllv_epi64(big, mant, _mm512_sub_epi64(shift, limb));
    h = _mm512_mask_srlv_epi64(h, mid, mant, _mm512_sub_epi64(limb, shift));
    __m512i l = _mm512_maskz_and_epi64(mid, _mm512_sllv_epi64(mant, shift), _mm512_set1_epi64(LO_MASK));
    /* small: l = (mant + 2^(r-1)) >> r, r = -shift in 1..24 */
    const __m512i r = _mm512_sub_epi64(_mm512_setzero_si512(), shift);
    const __m512i half = _mm512_sllv_epi64(_mm512_set1_epi64(1), _mm512_sub_epi64(r, _mm512_set1_epi64(1)));
    l = _mm512_mask_srlv_epi64(l, small, _mm512_add_epi64(mant, half), r);
    const __mmask8 keep = (__mmask8)~badm;
    const __mmask8 neg = _mm512_test_epi64_mask(uq, _mm512_set1_epi64(0x80000000LL));
    h = _mm512_mask_sub_epi64(h, neg, _mm512_setzero_si512(), h);
    l = _mm512_mask_sub_epi64(l, neg, _mm512_setzero_si512(), l);
    _mm512_storeu_si512(hi, _mm512_add_epi64(_mm512_loadu_si512(hi), _mm512_maskz_mov_epi64(keep, h)));
    _mm512_storeu_si512(lo, _mm512_add_epi64(_mm512_loadu_si512(lo), _mm512_maskz_mov_epi64(keep, l)));
    return __builtin_popcount((unsigned)badm);
}

MK_TGT512 static int64_t exact_add_avx512(ddpm_exact_acc acc, const float *g, size_t lo, size_t hi) {
    int64_t bad = 0;
    size_t i = lo;
    for (; i + 8 <= hi; i += 8)
        bad += add8_avx512(acc.hi + i, acc.lo + i, _mm256_loadu_si256((const __m256i *)(g + i)));
    return bad + exact_add_ref(acc, g, i, hi);
}
#endif

int64_t ddpm_mk_exact_add(ddpm_exact_acc acc, const float *g, size_t lo, size_t hi) {
#if MK_X86
    if (ddpm_mk_isa() >= DDPM_ISA_AVX512) return exact_add_avx512(acc, g, lo, hi);
#endif
    return exact_add_ref(acc, g, lo, hi);
}

int64_t ddpm_mk_exact_add_ref(ddpm_exact_acc acc, const float *g, size_t lo, size_t hi) {
    return exact_add_ref(acc, g, lo, hi);
}

void ddpm_mk_exact_to_f32(float *g, ddpm_exact_acc acc, size_t lo, size_t hi) {
    for (size_t i = lo; i < hi; i++)
        g[i] = (float)(((double)acc.hi[i] * 0x1p40 + (double)acc.lo[i]) * 0x1p-80);
}

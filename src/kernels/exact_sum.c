/* exact_sum.c - gradients summed exactly, so that the sum of a batch's micro-batch gradients does
 * not depend on how the micro-batches were spread over threads or processes.
 *
 * Floating-point addition is not associative: two threads or two MPI ranks that each add half of
 * the micro-batches and then add their halves get a different float than one thread adding them
 * all in order. Integer addition is associative. So each micro-batch's float gradient is turned
 * into a 128-bit fixed-point number with its lowest bit worth 2^-DDPM_EXACT_FRAC_BITS, the
 * integers are added (in any order, on any number of threads or ranks, with wrap-around two's
 * complement addition: the final sum is right whenever it fits), and the sum is rounded once to
 * float. A float |g| >= 2^-(DDPM_EXACT_FRAC_BITS - 23) converts exactly; smaller ones are rounded
 * to the fixed-point grid (2^-100 ~ 8e-31, far below anything Adam's epsilon lets matter).
 * Elements of |g| >= 2^DDPM_EXACT_MAX_LOG2 (or NaN, inf) are not added but counted; callers
 * add the count into the accumulator's extra last slot, which rides through the same reduction,
 * so the step is reported as diverged on every rank alike. */
#include "core/internal.h"
#include "kernels/kernels.h"

#include <math.h>
#include <string.h>

int64_t ddpm_mk_exact_add(ddpm_i128 *acc, const float *g, size_t lo, size_t hi) {
    int64_t bad = 0;
    for (size_t i = lo; i < hi; i++) {
        uint32_t u;
        memcpy(&u, &g[i], sizeof u);
        const int e = (int)((u >> 23) & 0xff);
        const uint32_t mant = (u & 0x7fffffu) | (e ? 0x800000u : 0u);
        if (mant == 0) continue;
        /* |g| = mant * 2^(max(e,1) - 150); in grid units: mant * 2^(max(e,1) - 150 + FRAC) */
        const int shift = (e ? e : 1) - 150 + DDPM_EXACT_FRAC_BITS;
        if (e == 0xff || (e ? e : 1) - 127 >= DDPM_EXACT_MAX_LOG2) {
            bad++;
            continue;
        }
        ddpm_i128 v;
        if (shift >= 0)
            v = (ddpm_i128)mant << shift;
        else if (shift > -25) /* round half up in magnitude: a fixed rule, the same everywhere */
            v = (ddpm_i128)((mant + (1u << (-shift - 1))) >> -shift);
        else
            v = 0;
        acc[i] = (ddpm_i128)((ddpm_u128)acc[i] + (ddpm_u128)((u >> 31) ? -v : v));
    }
    return bad;
}

void ddpm_mk_exact_to_f32(float *g, const ddpm_i128 *acc, size_t lo, size_t hi) {
    const float unit = ldexpf(1.0f, -DDPM_EXACT_FRAC_BITS);
    /* (float) of a 128-bit integer rounds to nearest (libgcc's __floattisf); the scaling by a
     * power of two is exact for normal results. */
    for (size_t i = lo; i < hi; i++) g[i] = (float)acc[i] * unit;
}

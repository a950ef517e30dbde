/* optim.c - the optimizer's loops: the Adam / AdamW step (with gradient clipping, L2 weight
 * decay and the EMA update fused in) and the double-precision sum of squares used for the
 * gradient norm, each as a plain C reference and an AVX2 + FMA twin doing the same operations in
 * the same order, and the entry points that pick one at run time.
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


void ddpm_mk_adam_ref(float *params, float *grads, float *m, float *v, size_t i0, size_t i1,
                      const ddpm_mk_adam_args *a) {
    const float one_m_ema = 1.0f - a->ema_decay;
    for (size_t i = i0; i < i1; i++) {
        float g = grads[i];
        if (a->clip) {
            g *= a->clip_coef;
            grads[i] = g;
        }
        float p = params[i];
        if (a->adamw)
            p *= a->decay_w;
        else if (a->wd != 0.0f)
            g += a->wd * p;
        const float mi = a->b1 * m[i] + a->one_m_b1 * g;
        const float vi = a->b2 * v[i] + a->one_m_b2 * g * g;
        m[i] = mi;
        v[i] = vi;
        p = p - a->step_size * (mi / (sqrtf(vi) / a->bc2_sqrt + a->eps));
        params[i] = p;
        if (a->ema) a->ema[i] = a->ema_decay * a->ema[i] + one_m_ema * p;
    }
}

/* The reduction of the 16 partial sums of ddpm_mk_sumsq: pairs (j, j + 8), then (j, j + 4), ... */
static inline double lanes16_sum(const double s[16]) {
    double t[8];
    for (int j = 0; j < 8; j++) t[j] = s[j] + s[j + 8];
    for (int j = 0; j < 4; j++) t[j] = t[j] + t[j + 4];
    return (t[0] + t[2]) + (t[1] + t[3]);
}

double ddpm_mk_sumsq_ref(const float *x, size_t i0, size_t i1) {
    double s[16] = {0};
    for (size_t i = i0; i < i1; i++) s[(i - i0) % 16] += (double)x[i] * x[i];
    return lanes16_sum(s);
}

/* ---- AVX2 + FMA ------------------------------------------------------------------------------ */
#if MK_X86

/* The optimizer step, 8 elements at a time: the operations of ddpm_mk_adam_ref, in its order. */
MK_TGT static void adam_avx2(float *params, float *grads, float *m, float *v, size_t i0, size_t i1,
                             const ddpm_mk_adam_args *a) {
    const __m256 b1 = _mm256_set1_ps(a->b1), b2 = _mm256_set1_ps(a->b2);
    const __m256 omb1 = _mm256_set1_ps(a->one_m_b1), omb2 = _mm256_set1_ps(a->one_m_b2);
    const __m256 eps = _mm256_set1_ps(a->eps), wd = _mm256_set1_ps(a->wd);
    const __m256 decay_w = _mm256_set1_ps(a->decay_w), step = _mm256_set1_ps(a->step_size);
    const __m256 bc2 = _mm256_set1_ps(a->bc2_sqrt), coef = _mm256_set1_ps(a->clip_coef);
    const __m256 ed = _mm256_set1_ps(a->ema_decay), omed = _mm256_set1_ps(1.0f - a->ema_decay);
    const int l2 = !a->adamw && a->wd != 0.0f;
    size_t i = i0;
    for (; i + 8 <= i1; i += 8) {
        __m256 g = _mm256_loadu_ps(grads + i);
        if (a->clip) {
            g = _mm256_mul_ps(g, coef);
            _mm256_storeu_ps(grads + i, g);
        }
        __m256 p = _mm256_loadu_ps(params + i);
        if (a->adamw)
            p = _mm256_mul_ps(p, decay_w);
        else if (l2)
            g = _mm256_add_ps(g, _mm256_mul_ps(wd, p));
        const __m256 mi =
            _mm256_add_ps(_mm256_mul_ps(b1, _mm256_loadu_ps(m + i)), _mm256_mul_ps(omb1, g));
        const __m256 vi = _mm256_add_ps(_mm256_mul_ps(b2, _mm256_loadu_ps(v + i)),
                                        _mm256_mul_ps(_mm256_mul_ps(omb2, g), g));
        _mm256_storeu_ps(m + i, mi);
        _mm256_storeu_ps(v + i, vi);
        const __m256 den = _mm256_add_ps(_mm256_div_ps(_mm256_sqrt_ps(vi), bc2), eps);
        p = _mm256_sub_ps(p, _mm256_mul_ps(step, _mm256_div_ps(mi, den)));
        _mm256_storeu_ps(params + i, p);
        if (a->ema)
            _mm256_storeu_ps(a->ema + i,
                             _mm256_add_ps(_mm256_mul_ps(ed, _mm256_loadu_ps(a->ema + i)),
                                           _mm256_mul_ps(omed, p)));
    }
    if (i < i1) ddpm_mk_adam_ref(params, grads, m, v, i, i1, a);
}

MK_TGT static double sumsq_avx2(const float *x, size_t i0, size_t i1) {
    /* four accumulators of 4 doubles: s0 holds lanes 0-3, s1 lanes 4-7, s2 lanes 8-11, ... */
    __m256d s0 = _mm256_setzero_pd(), s1 = s0, s2 = s0, s3 = s0;
    size_t i = i0;
    for (; i + 16 <= i1; i += 16) {
        const __m256d x0 = _mm256_cvtps_pd(_mm_loadu_ps(x + i));
        const __m256d x1 = _mm256_cvtps_pd(_mm_loadu_ps(x + i + 4));
        const __m256d x2 = _mm256_cvtps_pd(_mm_loadu_ps(x + i + 8));
        const __m256d x3 = _mm256_cvtps_pd(_mm_loadu_ps(x + i + 12));
        s0 = _mm256_add_pd(s0, _mm256_mul_pd(x0, x0));
        s1 = _mm256_add_pd(s1, _mm256_mul_pd(x1, x1));
        s2 = _mm256_add_pd(s2, _mm256_mul_pd(x2, x2));
        s3 = _mm256_add_pd(s3, _mm256_mul_pd(x3, x3));
    }
    double s[16];
    _mm256_storeu_pd(s, s0);
    _mm256_storeu_pd(s + 4, s1);
    _mm256_storeu_pd(s + 8, s2);
    _mm256_storeu_pd(s + 12, s3);
    for (size_t j = 0; i < i1; i++, j++) s[j] += (double)x[i] * x[i];
    return lanes16_sum(s);
}

#endif /* MK_X86 */

/* ---- entry points ---------------------------------------------------------------------------- */

void ddpm_mk_adam(float *params, float *grads, float *m, float *v, size_t i0, size_t i1,
                  const ddpm_mk_adam_args *a) {
#if MK_X86
    if (ddpm_mk_fast()) {
        adam_avx2(params, grads, m, v, i0, i1, a);
        return;
    }
#endif
    ddpm_mk_adam_ref(params, grads, m, v, i0, i1, a);
}

double ddpm_mk_sumsq(const float *x, size_t i0, size_t i1) {
#if MK_X86
    if (ddpm_mk_fast()) return sumsq_avx2(x, i0, i1);
#endif
    return ddpm_mk_sumsq_ref(x, i0, i1);
}

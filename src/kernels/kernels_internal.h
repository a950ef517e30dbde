/* kernels_internal.h - private to src/kernels: the compile-time switch between the vector code
 * paths and the plain ones, and the attributes that compile a function for AVX2 + FMA or for
 * AVX-512 whatever the build flags (the fast versions are chosen at run time, see ddpm_mk_isa).
 */
#ifndef DDPM_KERNELS_INTERNAL_H
#define DDPM_KERNELS_INTERNAL_H

#if defined(__x86_64__) && defined(__GNUC__)
#define MK_X86 1
#include <immintrin.h>
#define MK_TGT __attribute__((target("avx2,fma")))
#define MK_AI static inline __attribute__((always_inline)) MK_TGT
/* The AVX-512 twins (gemm_avx512.c), chosen at run time on CPUs with AVX-512F. */
#define MK_TGT512 __attribute__((target("avx512f,avx2,fma")))
#define MK_AI512 static inline __attribute__((always_inline)) MK_TGT512
#else
#define MK_X86 0
#endif

#include "kernels/kernels.h"

/* The AVX-512 GEMM (same contract and results as ddpm_mk_gemm_run's AVX2 kernel; gemm_avx512.c). */
void ddpm_mk_gemm_avx512(const ddpm_mk_gemm *g, int m0, int m1, int n0, int n1);

#endif /* DDPM_KERNELS_INTERNAL_H */

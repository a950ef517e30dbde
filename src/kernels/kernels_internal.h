/* kernels_internal.h - private to src/kernels: the compile-time switch between the AVX2 + FMA
 * code paths and the plain ones, and the attributes that compile a function for AVX2 + FMA
 * whatever the build flags (the fast versions are chosen at run time, see ddpm_mk_fast).
 */
#ifndef DDPM_KERNELS_INTERNAL_H
#define DDPM_KERNELS_INTERNAL_H

#if defined(__x86_64__) && defined(__GNUC__)
#define MK_X86 1
#include <immintrin.h>
#define MK_TGT __attribute__((target("avx2,fma")))
#define MK_AI static inline __attribute__((always_inline)) MK_TGT
#else
#define MK_X86 0
#endif

#endif /* DDPM_KERNELS_INTERNAL_H */

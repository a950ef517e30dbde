/* fma_peak.c - this machine's single-precision FMA peak, measured: the yardstick the network
 * benchmarks quote their GFLOP/s against (run_course_nets.sh, run_unet.sh), instead of a figure
 * from another machine.
 *
 * Each thread runs 12 independent chains of vector FMAs (enough to cover the FMA latency on two
 * pipes: 4 cycles x 2 pipes = 8 in flight, with room to spare) at the widest ISA the library's
 * kernels use here (AVX-512, else AVX2 + FMA; DDPM_ISA forces one), for about half a second after
 * a warm-up, and reports 2 FLOPs x lanes x FMAs / second over all threads, the best of 3.
 *
 * Usage: fma_peak [threads]   (default: OMP_NUM_THREADS or all cores; prints one JSON line) */
#include "kernels/kernels.h"

#include <immintrin.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>

#define CHAINS 12

__attribute__((target("avx2,fma"))) static float chains_avx2(long iters) {
    __m256 acc[CHAINS];
    const __m256 a = _mm256_set1_ps(0.999999f), b = _mm256_set1_ps(1e-7f);
    for (int i = 0; i < CHAINS; i++) acc[i] = _mm256_set1_ps((float)i);
    for (long n = 0; n < iters; n++)
        for (int i = 0; i < CHAINS; i++) acc[i] = _mm256_fmadd_ps(acc[i], a, b);
    float s = 0, out[8];
    for (int i = 0; i < CHAINS; i++) {
        _mm256_storeu_ps(out, acc[i]);
        s += out[0];
    }
    return s; /* used, so the loop is not dropped */
}

__attribute__((target("avx512f"))) static float chains_avx512(long iters) {
    __m512 acc[CHAINS];
    const __m512 a = _mm512_set1_ps(0.999999f), b = _mm512_set1_ps(1e-7f);
    for (int i = 0; i < CHAINS; i++) acc[i] = _mm512_set1_ps((float)i);
    for (long n = 0; n < iters; n++)
        for (int i = 0; i < CHAINS; i++) acc[i] = _mm512_fmadd_ps(acc[i], a, b);
    float s = 0;
    for (int i = 0; i < CHAINS; i++) s += _mm512_reduce_add_ps(acc[i]);
    return s;
}

/* GFLOP/s of T threads each running iters rounds of the chains */
static double measure(int T, int wide, long iters, float *sink) {
    double t0 = 0, t1 = 0;
    float s = 0;
#pragma omp parallel num_threads(T) reduction(+ : s)
    {
#pragma omp barrier
#pragma omp master
        t0 = omp_get_wtime();
        s += wide ? chains_avx512(iters) : chains_avx2(iters);
#pragma omp barrier
#pragma omp master
        t1 = omp_get_wtime();
    }
    *sink += s;
    const double lanes = wide ? 16 : 8;
    return 2.0 * lanes * CHAINS * (double)iters * T / (t1 - t0) * 1e-9;
}

int main(int argc, char **argv) {
    const int T = argc > 1 ? atoi(argv[1]) : omp_get_max_threads();
    if (T < 1) {
        fprintf(stderr, "fma_peak: threads must be >= 1 (got %s)\n", argv[1]);
        return 2;
    }
    const ddpm_isa isa = ddpm_mk_isa();
    if (isa < DDPM_ISA_AVX2) {
        fprintf(stderr, "fma_peak: this CPU (or DDPM_ISA) has no AVX2 + FMA: no vector FMA peak\n");
        return 2;
    }
    const int wide = isa == DDPM_ISA_AVX512;
    float sink = 0;
    long iters = 1000000;
    /* warm-up, then size the run to ~0.5 s */
    double g = measure(T, wide, iters, &sink);
    iters = (long)(iters * (0.5 / (2.0 * (wide ? 16 : 8) * CHAINS * iters * T / (g * 1e9))));
    if (iters < 1000) iters = 1000;
    double best = 0;
    for (int r = 0; r < 3; r++) {
        g = measure(T, wide, iters, &sink);
        if (g > best) best = g;
    }
    printf("{\"fma_peak_gflops\":%.1f,\"threads\":%d,\"isa\":\"%s\",\"sink\":%g}\n", best, T,
           wide ? "avx512" : "avx2", (double)sink);
    return 0;
}

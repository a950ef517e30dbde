/* cpu.c - the run-time choice between the AVX-512 and AVX2 + FMA kernels and their plain
 * references (CPU feature detection, the DDPM_ISA and DDPM_KERNELS overrides), the thread count
 * for a kernel call of a given size, and the thread governor of the training step, which times
 * calls and probes whether fewer threads run them faster.
 */
#include "kernels/kernels.h"

#include "core/internal.h"
#include "kernels/kernels_internal.h"

#include <math.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <omp.h>


/* ---- selection and threads ------------------------------------------------------------------- */

static atomic_int mk_choice = -1; /* a ddpm_isa, or -1: not decided yet */

ddpm_isa ddpm_mk_isa_cpu(void) {
#if MK_X86
    __builtin_cpu_init();
    /* GCC's checks include the OS's support (XCR0) for the AVX and AVX-512 register state. */
    if (!__builtin_cpu_supports("avx2") || !__builtin_cpu_supports("fma")) return DDPM_ISA_REF;
    return __builtin_cpu_supports("avx512f") ? DDPM_ISA_AVX512 : DDPM_ISA_AVX2;
#else
    return DDPM_ISA_REF;
#endif
}

const char *ddpm_mk_isa_name(ddpm_isa isa) {
    return isa == DDPM_ISA_AVX512 ? "avx512" : isa == DDPM_ISA_AVX2 ? "avx2" : "ref";
}

/* The CPU's best, capped by DDPM_ISA (or DDPM_KERNELS=ref). An unknown DDPM_ISA value is said
 * once on stderr and ignored: the library has no other channel before its first call. */
static int mk_default(void) {
    const int cpu = ddpm_mk_isa_cpu();
    const char *k = getenv("DDPM_KERNELS");
    if (k && strcmp(k, "ref") == 0) return DDPM_ISA_REF;
    const char *e = getenv("DDPM_ISA");
    if (!e || !*e) return cpu;
    int cap = -1;
    for (int i = DDPM_ISA_REF; i <= DDPM_ISA_AVX512; i++)
        if (strcmp(e, ddpm_mk_isa_name((ddpm_isa)i)) == 0) cap = i;
    if (cap < 0) {
        fprintf(stderr, "ddpm: DDPM_ISA=%s is not ref, avx2 or avx512; using %s\n", e,
                ddpm_mk_isa_name((ddpm_isa)cpu));
        return cpu;
    }
    return cap < cpu ? cap : cpu;
}

ddpm_isa ddpm_mk_isa(void) {
    int c = atomic_load_explicit(&mk_choice, memory_order_relaxed);
    if (c < 0) {
        c = mk_default();
        atomic_store_explicit(&mk_choice, c, memory_order_relaxed);
    }
    return (ddpm_isa)c;
}

int ddpm_mk_fast(void) { return ddpm_mk_isa() >= DDPM_ISA_AVX2; }

const char *ddpm_kernel_isa(void) { return ddpm_mk_isa_name(ddpm_mk_isa()); }

void ddpm_mk_set_isa(int isa) {
    const int cpu = ddpm_mk_isa_cpu();
    atomic_store_explicit(&mk_choice, isa < 0 ? -1 : isa < cpu ? isa : cpu, memory_order_relaxed);
}

void ddpm_mk_set_fast(int on) {
    atomic_store_explicit(&mk_choice, on < 0 ? -1 : on ? mk_default() : 0, memory_order_relaxed);
}

int ddpm_mk_tile_rows(int rem) {
    return ddpm_mk_tile_rows_max(rem, ddpm_mk_isa() >= DDPM_ISA_AVX512 ? DDPM_MK_MR_AVX512
                                                                       : DDPM_MK_MR_AVX2);
}

int ddpm_mk_threads(double flops) {
    if (omp_in_parallel()) return 1;
    const int max = omp_get_max_threads();
    /* A fork and a barrier cost a microsecond or two on an idle machine; give each thread at
     * least ~1 MFLOP (~10 us of one core) or stay serial. */
    const double per = flops / 1e6;
    const int by_work = per < 1.0 ? 1 : per > 1024.0 ? 1024 : (int)per;
    return max < by_work ? max : by_work;
}

static double mk_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static atomic_int mk_adapt = -1;

static int adapt_enabled(void) {
    int a = atomic_load_explicit(&mk_adapt, memory_order_relaxed);
    if (a < 0) {
        const char *e = getenv("DDPM_THREADS_ADAPT");
        a = !(e && strcmp(e, "0") == 0);
        atomic_store_explicit(&mk_adapt, a, memory_order_relaxed);
    }
    return a;
}

void ddpm_mk_set_adapt(int on) {
    atomic_store_explicit(&mk_adapt, on < 0 ? -1 : !!on, memory_order_relaxed);
}

/* > 0 while an outer governor (ddpm_mk_gov_begin_all) holds this thread's thread count */
static _Thread_local int tls_cap;

static int gov_start(ddpm_mk_gov *g, int n, double flops) {
    g->active = n > 1 && adapt_enabled();
    if (!g->active) return n;
    if (g->wait == 0.0) { /* first use: one thread (safe on a busy machine), then try all */
        g->cur = 0;
        g->wait = 0.02;
    }
    g->used = g->probing ? !g->cur : g->cur;
    g->call_flops = flops > 1.0 ? flops : 1.0;
    g->t0 = mk_now();
    return g->used ? n : 1;
}

int ddpm_mk_gov_begin(ddpm_mk_gov *g, double flops) {
    const int n = ddpm_mk_threads(flops);
    g->outer = 0;
    if (tls_cap > 0) {
        g->active = 0;
        return n < tls_cap ? n : tls_cap;
    }
    return gov_start(g, n, flops);
}

int ddpm_mk_gov_begin_all(ddpm_mk_gov *g) {
    g->outer = 0;
    if (tls_cap > 0) {
        g->active = 0;
        return tls_cap;
    }
    const int n = ddpm_mk_threads(1e300);
    const int nt = gov_start(g, n, 1.0);
    tls_cap = nt;
    g->outer = 1;
    return nt;
}

void ddpm_mk_gov_end(ddpm_mk_gov *g) {
    if (g->outer) {
        tls_cap = 0;
        g->outer = 0;
    }
    if (!g->active) return;
    g->time += mk_now() - g->t0;
    g->flops += g->call_flops;
    g->calls++;
    /* A probe far behind the current choice has lost: under heavy load one call that waits at a
     * barrier for a preempted thread costs tens of milliseconds, so do not insist. */
    const double ref = g->rate[g->cur];
    const int lost = g->probing && ref > 0.0 && g->time > 3.0 * ref * g->flops + 0.002;
    /* Otherwise a window is at least 4 calls and 20 ms: longer than a scheduler time slice, so
     * that a window with a preempted thread is not compared with one without. */
    if (!lost && (g->calls < 4 || g->time < 0.02)) return;
    const double rate = g->time / g->flops, spent = g->time, before = g->rate[g->used];
    g->rate[g->used] = rate;
    g->calls = 0;
    g->time = g->flops = 0.0;
    if (g->probing) {
        g->probing = 0;
        g->since = 0.0;
        if (!lost && rate < ref) {
            g->cur = g->used;
            g->wait = 0.02;
        } else {
            /* the next probe after at least 20x what this one cost, and twice the last wait */
            g->wait = 2.0 * g->wait > 20.0 * spent ? 2.0 * g->wait : 20.0 * spent;
            if (g->wait > 10.0) g->wait = 10.0;
        }
    } else {
        g->since += spent;
        if ((g->cur == 1 && before > 0.0 && rate > 2.0 * before) || g->since >= g->wait)
            g->probing = 1; /* all threads got twice as slow (load arrived), or it is time */
    }
}


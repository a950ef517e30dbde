/* cpu.c - the run-time choice between the AVX2 + FMA kernels and their plain references (CPU
 * feature detection, DDPM_* overrides), the thread count for a kernel call of a given size, and
 * the thread governor of the training step, which times calls and probes whether fewer threads
 * run them faster.
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


/* ---- selection and threads ------------------------------------------------------------------- */

static atomic_int mk_choice = -1; /* -1: not decided yet */

static int mk_default(void) {
#if MK_X86
    const char *e = getenv("DDPM_KERNELS");
    if (e && strcmp(e, "ref") == 0) return 0;
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#else
    return 0;
#endif
}

int ddpm_mk_fast(void) {
    int c = atomic_load_explicit(&mk_choice, memory_order_relaxed);
    if (c < 0) {
        c = mk_default();
        atomic_store_explicit(&mk_choice, c, memory_order_relaxed);
    }
    return c;
}

void ddpm_mk_set_fast(int on) {
    atomic_store_explicit(&mk_choice, on < 0 ? -1 : on ? mk_default() : 0, memory_order_relaxed);
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


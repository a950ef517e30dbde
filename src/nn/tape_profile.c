/* tape_profile.c - where a tape network's time goes: with DDPM_PROFILE=1 in the environment,
 * every recorded op's forward and every node's backward is timed, summed per op kind (and per
 * kernel size and stride for convolutions), and the table is printed to stderr at exit.
 *
 * The forward time of an op is the time since the previous op was recorded on the same tape
 * (or since its reset): it includes what the model does between two ops, which is little (a
 * view, a pointer). Times are summed over threads, so with micro-batches running concurrently
 * the shares are of CPU time, not of wall time. Off (the default) it costs one load per op. */
#include "nn/tape_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#define PROF_KEYS 64 * 64

static const char *const op_names[] = {
    [OP_CONV2D] = "conv2d",       [OP_CONVT2D] = "conv_transpose2d", [OP_LINEAR] = "linear",
    [OP_BATCHNORM] = "batchnorm",  [OP_BN_GELU] = "batchnorm_gelu", [OP_GROUPNORM] = "groupnorm", [OP_GN_SILU] = "groupnorm_silu",      [OP_GELU] = "gelu",
    [OP_RELU] = "relu",           [OP_SILU] = "silu",                [OP_SCALE] = "scale",
    [OP_DROPOUT] = "dropout",     [OP_ADD] = "add",                  [OP_CHANNEL_MUL] = "channel_mul",
    [OP_CHANNEL_ADD] = "channel_add", [OP_CONCAT] = "concat",       [OP_SLICE] = "slice",
    [OP_MAXPOOL] = "maxpool",     [OP_AVGPOOL] = "avgpool",          [OP_UPSAMPLE] = "upsample",
    [OP_ATTENTION] = "attention", [OP_RESHAPE] = "reshape",          [OP_MEAN] = "mean",
    [OP_PAD] = "pad",
};

static struct {
    double fwd, bwd;
    long calls;
} table[PROF_KEYS];
static int prof_state = -1; /* -1: environment not read yet */

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + 1e-9 * ts.tv_nsec;
}

static void print_table(void) {
    double total = 0;
    for (int k = 0; k < PROF_KEYS; k++) total += table[k].fwd + table[k].bwd;
    if (total <= 0) return;
    fprintf(stderr, "ddpm profile (DDPM_PROFILE=1): tape ops, seconds summed over threads\n");
    fprintf(stderr, "  %-26s %9s %10s %10s %7s\n", "op", "calls", "forward", "backward", "share");
    for (;;) { /* largest first; each printed row is cleared */
        int best = -1;
        for (int k = 0; k < PROF_KEYS; k++)
            if (table[k].calls && (best < 0 || table[k].fwd + table[k].bwd >
                                                   table[best].fwd + table[best].bwd))
                best = k;
        if (best < 0) break;
        char name[48];
        const int op = best / 64, v = best % 64;
        if (v) snprintf(name, sizeof name, "%s %dx%d s%d", op_names[op], v / 8, v / 8, v % 8);
        else snprintf(name, sizeof name, "%s", op_names[op]);
        fprintf(stderr, "  %-26s %9ld %10.3f %10.3f %6.1f%%\n", name, table[best].calls,
                table[best].fwd, table[best].bwd,
                100.0 * (table[best].fwd + table[best].bwd) / total);
        table[best].calls = 0;
    }
    fprintf(stderr, "  %-26s %9s %21.3f\n", "total", "", total);
}

static int prof_on(void) {
    int s = __atomic_load_n(&prof_state, __ATOMIC_RELAXED);
    if (s >= 0) return s;
#pragma omp critical(ddpm_tape_profile)
    if (prof_state < 0) {
        const char *e = getenv("DDPM_PROFILE");
        s = e && *e && *e != '0';
        if (s) atexit(print_table);
        __atomic_store_n(&prof_state, s, __ATOMIC_RELAXED);
    }
    return __atomic_load_n(&prof_state, __ATOMIC_RELAXED);
}

/* Convolutions by kernel size and stride (capped at 7); other ops by kind alone. */
static int key_of(int op, int kernel, int stride) {
    if (kernel <= 0) return op * 64;
    return op * 64 + (kernel > 7 ? 7 : kernel) * 8 + (stride > 7 ? 7 : stride);
}

static void add_time(int key, double s, int backward) {
#pragma omp atomic
    table[key].calls += !backward;
    if (backward) {
#pragma omp atomic
        table[key].bwd += s;
    } else {
#pragma omp atomic
        table[key].fwd += s;
    }
}

void tape_profile_reset(ddpm_tape *t) {
    if (prof_on()) t->prof_mark = now_s();
}

void tape_profile_forward(ddpm_tape *t, int op, int kernel, int stride) {
    if (!prof_on()) return;
    const double s = now_s();
    if (t->prof_mark > 0) add_time(key_of(op, kernel, stride), s - t->prof_mark, 0);
    t->prof_mark = s;
}

double tape_profile_start(void) { return prof_on() ? now_s() : 0.0; }

void tape_profile_backward(int op, int kernel, int stride, double start) {
    if (start > 0) add_time(key_of(op, kernel, stride), now_s() - start, 1);
}

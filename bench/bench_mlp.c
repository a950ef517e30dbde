/* bench_mlp.c - throughput of the tutorial MLP: training steps/s at batch 128 and sampling
 * points*steps/s (10,000 points x 100 DDPM steps), and the fused kernels against their plain
 * references and OpenBLAS. Prints one JSON line per measurement so the comparison script can read
 * it.
 *
 * Usage: bench_mlp [train_steps] [repeats] [what]
 *   train_steps  steps per timed block (default 2000); one warm-up block, then `repeats` blocks
 *   repeats      timed blocks / sampling runs (default 5); median and min are reported
 *   what         all (default: train + sample), train, sample, kernels
 * Threads: OMP_NUM_THREADS (the kernels use at most that many). DDPM_KERNELS=ref selects the
 * reference (BLAS) path of the MLP. */
#include "ddpm.h"
#include "kernels/kernels.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#ifdef _OPENMP
#include <omp.h>
#endif

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static int cmp(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static int threads(void) {
#ifdef _OPENMP
    return omp_get_max_threads();
#else
    return 1;
#endif
}

static const char *env_or_null(const char *name, char *buf, size_t n) {
    const char *v = getenv(name);
    if (!v) return "null";
    snprintf(buf, n, "\"%s\"", v);
    return buf;
}

/* The common tail of every JSON line: threads and the environment that decides them. */
static void print_ctx(void) {
    char a[64], b[64], c[64];
    printf("\"threads\":%d,\"kernels\":\"%s\",\"env\":{\"OMP_NUM_THREADS\":%s,"
           "\"OPENBLAS_NUM_THREADS\":%s,\"OPENBLAS_CORETYPE\":%s}}\n",
           threads(), ddpm_mk_fast() ? "avx2" : "ref", env_or_null("OMP_NUM_THREADS", a, sizeof a),
           env_or_null("OPENBLAS_NUM_THREADS", b, sizeof b),
           env_or_null("OPENBLAS_CORETYPE", c, sizeof c));
}

/* Median and min of ms per call of fn over `repeats` blocks of `reps` calls (one warm-up block). */
typedef void (*bench_fn)(void *ctx);
static void time_fn(bench_fn fn, void *ctx, int reps, int repeats, double *median, double *min) {
    double *ms = malloc(sizeof(double) * (repeats + 1));
    for (int r = 0; r <= repeats; r++) {
        double t0 = now();
        for (int i = 0; i < reps; i++) fn(ctx);
        ms[r] = (now() - t0) * 1e3 / reps;
    }
    qsort(ms + 1, repeats, sizeof(double), cmp);
    *median = ms[1 + repeats / 2];
    *min = ms[1];
    free(ms);
}

/* ---- kernels: one 128 x 128 x 128 layer, fused kernel vs reference vs OpenBLAS --------------- */

typedef struct {
    ddpm_mk_gemm g;
    int ref;
    float *x, *w, *bias, *out;
    int B, I, O;
} gemm_ctx;

static void run_gemm(void *p) {
    gemm_ctx *c = p;
    if (c->ref)
        ddpm_mk_gemm_ref(&c->g, 0, c->g.M, 0, c->g.N);
    else
        ddpm_mk_gemm_run(&c->g, 0, c->g.M, 0, c->g.N);
}

static void run_blas(void *p) {
    gemm_ctx *c = p;
    ddpm_linear_forward(c->out, c->x, c->w, c->bias, c->B, c->I, c->O);
}

typedef struct {
    float *p, *g, *m, *v, *ema;
    size_t n;
    ddpm_mk_adam_args a;
    int ref;
} adam_ctx;

static void run_adam(void *p) {
    adam_ctx *c = p;
    if (c->ref)
        ddpm_mk_adam_ref(c->p, c->g, c->m, c->v, 0, c->n, &c->a);
    else
        ddpm_mk_adam(c->p, c->g, c->m, c->v, 0, c->n, &c->a);
}

static void run_sumsq(void *p) {
    adam_ctx *c = p;
    volatile double s = ddpm_mk_sumsq(c->g, 0, c->n);
    (void)s;
}

static void print_kernel(const char *what, const char *kernel, double med, double mn,
                         double flops) {
    printf("{\"impl\":\"ddpm\",\"what\":\"%s\",\"kernel\":\"%s\",\"median\":%.3f,\"min\":%.3f,",
           what, kernel, med * 1e3, mn * 1e3);
    if (flops > 0) printf("\"gflops\":%.1f,", flops / (mn * 1e-3) * 1e-9);
    print_ctx();
}

/* The GEMM shapes of one training step of the tutorial MLP (B = H = 128, one thread), the fused
 * kernel against its plain reference and OpenBLAS (ddpm_linear_forward: sgemm + bias), and the
 * optimizer pass over the MLP's 72,066 parameters. */
static void bench_kernels(int repeats) {
    const int B = 128, H = 128, ld = 144;
    float *x = malloc(sizeof(float) * B * ld), *w = malloc(sizeof(float) * H * H);
    float *bias = malloc(sizeof(float) * H), *out = malloc(sizeof(float) * B * ld);
    float *dh = malloc(sizeof(float) * B * ld), *dw = calloc((size_t)H * H, sizeof(float));
    float *wt = malloc(sizeof(float) * ddpm_mk_packed_size(H, H));
    float *wn = malloc(sizeof(float) * ddpm_mk_packed_size(H, H));
    ddpm_randn(1, DDPM_STREAM_USER, 0, 0, x, (size_t)B * ld);
    ddpm_randn(1, DDPM_STREAM_USER, 1, 0, w, (size_t)H * H);
    ddpm_randn(1, DDPM_STREAM_USER, 2, 0, bias, H);
    ddpm_randn(1, DDPM_STREAM_USER, 3, 0, dh, (size_t)B * ld);
    ddpm_mk_pack_b_t(wt, w, H, H, H, 0, H / DDPM_MK_NR);
    ddpm_mk_pack_b_n(wn, w, H, H, H, 0, H / DDPM_MK_NR);
    const double flops = 2.0 * B * H * H;
    double med, mn;
    /* forward: relu(x W^T + b), W^T packed */
    gemm_ctx c = {.g = {.M = B,
                        .N = H,
                        .K = H,
                        .a = x,
                        .sam = ld,
                        .sak = 1,
                        .b = wt,
                        .b_packed = 1,
                        .c = out,
                        .ldc = ld,
                        .bias = bias,
                        .relu = 1},
                  .x = x,
                  .w = w,
                  .bias = bias,
                  .out = out,
                  .B = B,
                  .I = H,
                  .O = H};
    time_fn(run_gemm, &c, 2000, repeats, &med, &mn);
    print_kernel("kernel_forward_128x128x128_us", "fused_avx2", med, mn, flops);
    c.ref = 1;
    time_fn(run_gemm, &c, 10, repeats, &med, &mn);
    print_kernel("kernel_forward_128x128x128_us", "fused_ref", med, mn, flops);
    c.ref = 0;
    time_fn(run_blas, &c, 2000, repeats, &med, &mn);
    print_kernel("kernel_forward_128x128x128_us", "openblas_sgemm+bias", med, mn, flops);
    /* input gradient: (dh W) * (x > 0), W packed */
    c.g = (ddpm_mk_gemm){.M = B,
                         .N = H,
                         .K = H,
                         .a = dh,
                         .sam = ld,
                         .sak = 1,
                         .b = wn,
                         .b_packed = 1,
                         .c = out,
                         .ldc = ld,
                         .mask = x,
                         .ld_mask = ld};
    time_fn(run_gemm, &c, 2000, repeats, &med, &mn);
    print_kernel("kernel_input_grad_128x128x128_us", "fused_avx2", med, mn, flops);
    /* weight gradient: dW += dh^T x (A transposed, B unpacked) */
    c.g = (ddpm_mk_gemm){.M = H,
                         .N = H,
                         .K = B,
                         .a = dh,
                         .sam = 1,
                         .sak = ld,
                         .b = x,
                         .ldb = ld,
                         .c = dw,
                         .ldc = H,
                         .accumulate = 1};
    time_fn(run_gemm, &c, 2000, repeats, &med, &mn);
    print_kernel("kernel_weight_grad_128x128x128_us", "fused_avx2", med, mn, flops);
    /* optimizer */
    adam_ctx ac = {.n = 72066};
    ac.p = calloc(ac.n, sizeof(float));
    ac.g = calloc(ac.n, sizeof(float));
    ac.m = calloc(ac.n, sizeof(float));
    ac.v = calloc(ac.n, sizeof(float));
    ac.ema = calloc(ac.n, sizeof(float));
    ddpm_randn(1, DDPM_STREAM_USER, 4, 0, ac.g, ac.n);
    ac.a = (ddpm_mk_adam_args){.b1 = 0.9f,
                               .b2 = 0.999f,
                               .one_m_b1 = 0.1f,
                               .one_m_b2 = 0.001f,
                               .eps = 1e-8f,
                               .step_size = 1e-3f,
                               .bc2_sqrt = 0.5f,
                               .decay_w = 1.0f,
                               .ema = ac.ema,
                               .ema_decay = 0.999f};
    time_fn(run_adam, &ac, 200, repeats, &med, &mn);
    print_kernel("kernel_adam_ema_72066_us", "avx2", med, mn, 0);
    ac.ref = 1;
    time_fn(run_adam, &ac, 200, repeats, &med, &mn);
    print_kernel("kernel_adam_ema_72066_us", "ref", med, mn, 0);
    time_fn(run_sumsq, &ac, 200, repeats, &med, &mn);
    print_kernel("kernel_sumsq_72066_us", ddpm_mk_fast() ? "avx2" : "ref", med, mn, 0);
    free(ac.p);
    free(ac.g);
    free(ac.m);
    free(ac.v);
    free(ac.ema);
    free(x);
    free(w);
    free(bias);
    free(out);
    free(dh);
    free(dw);
    free(wt);
    free(wn);
}

/* ---- the model ------------------------------------------------------------------------------- */

int main(int argc, char **argv) {
    const int steps = argc > 1 ? atoi(argv[1]) : 2000;
    const int repeats = argc > 2 ? atoi(argv[2]) : 5;
    const char *what = argc > 3 ? argv[3] : "all";
    if (steps < 1 || repeats < 1 ||
        (strcmp(what, "all") && strcmp(what, "train") && strcmp(what, "sample") &&
         strcmp(what, "kernels"))) {
        fprintf(stderr, "usage: bench_mlp [train_steps] [repeats] [all|train|sample|kernels]\n");
        return 2;
    }
    if (strcmp(what, "kernels") == 0) {
        bench_kernels(repeats);
        return 0;
    }
    const int do_train = strcmp(what, "sample") != 0, do_sample = strcmp(what, "train") != 0;
    ddpm_schedule_config sc;
    ddpm_schedule_config_default(&sc, DDPM_SCHEDULE_SIGMOID_2D, 100);
    ddpm_schedule s;
    ddpm_points data;
    ddpm_model *m;
    if (ddpm_schedule_init(&s, &sc) || ddpm_points_generate("s-curve", 10000, 0, &data) ||
        ddpm_model_create(
            "{\"kind\":\"mlp\",\"dim\":2,\"hidden\":128,\"depth\":3,\"num_timesteps\":100}", 0,
            &m)) {
        fprintf(stderr, "bench_mlp: %s\n", ddpm_last_error());
        return 1;
    }
    ddpm_train_config tc;
    ddpm_train_config_default(&tc);
    tc.total_steps = (int64_t)steps * (repeats + 1);
    ddpm_train_data td = {.x = data.x, .n = data.n};
    ddpm_trainer tr;
    if (ddpm_trainer_init(&tr, m, &s, &tc, &td)) return 1;
    double *ms = malloc(sizeof(double) * (repeats + 1));
    if (do_train) {
        for (int r = 0; r <= repeats; r++) { /* r = 0 warms up */
            double t0 = now();
            for (int i = 0; i < steps; i++)
                if (ddpm_trainer_step(&tr)) {
                    fprintf(stderr, "bench_mlp: %s\n", ddpm_last_error());
                    return 1;
                }
            ms[r] = (now() - t0) * 1e3 / steps;
        }
        qsort(ms + 1, repeats, sizeof(double), cmp);
        printf("{\"impl\":\"ddpm\",\"what\":\"train_step_ms\",\"batch\":128,\"median\":%.5f,"
               "\"min\":%.5f,\"loss\":%.5f,",
               ms[1 + repeats / 2], ms[1], tr.last_loss);
        print_ctx();
        fflush(stdout);
    }
    if (do_sample) {
        /* sampling: 10,000 points x 100 steps, DDPM */
        ddpm_model_sampler smp;
        if (ddpm_model_sampler_init(&smp, m, 10000)) return 1;
        float *x = malloc(sizeof(float) * 20000);
        ddpm_sample_opts so;
        ddpm_sample_opts_default(&so);
        for (int r = 0; r <= repeats; r++) {
            double t0 = now();
            if (ddpm_sample_loop(&s, &so, ddpm_model_denoise, &smp, 10000, 2, x)) return 1;
            ms[r] = (now() - t0) * 1e3;
        }
        qsort(ms + 1, repeats, sizeof(double), cmp);
        printf("{\"impl\":\"ddpm\",\"what\":\"sample_10000x100_ms\",\"median\":%.3f,\"min\":%.3f,",
               ms[1 + repeats / 2], ms[1]);
        print_ctx();
        free(x);
        ddpm_model_sampler_free(&smp);
    }
    free(ms);
    ddpm_trainer_free(&tr);
    ddpm_model_free(m);
    ddpm_points_free(&data);
    ddpm_schedule_free(&s);
    return 0;
}

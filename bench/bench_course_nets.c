/* bench_course_nets.c - forward and forward+backward time of the two tutorial networks at their
 * tutorial sizes, with the FLOPs of every convolution and linear layer counted analytically (the
 * same count as bench/torch_course_nets.py). Prints one JSON line per measurement; the comparison
 * with PyTorch is bench/run_course_nets.sh.
 *
 *   sprites  context-unet, 16x16x3, n_feat 64, n_cfeat 5 (the course), batch 100
 *   fmnist   context-unet, 28x28x1, n_feat 64, n_cfeat 10 (Fashion-MNIST), batch 100
 *   simple   simple-unet, 64x64x3, channels 64..1024, time_emb_dim 32 (the tutorial), batch 8
 *
 * fwd: eval mode (running statistics, nothing recorded: torch.no_grad() + eval() in PyTorch);
 * fwd+bwd: training mode (batch statistics), the forward and the backward of a fixed random
 * upstream gradient into the zeroed parameter gradients (no optimizer step).
 * FLOPs: 2 x multiply-adds of every conv, transposed conv and linear layer; the backward counts
 * twice the forward (input and weight gradients) minus the input gradients of layers fed by an
 * input that needs none (the first convolutions on x, the embeddings' first Linear).
 *
 * Usage: bench_course_nets [net] [mode] [repeats] [batch]
 *   net      sprites, fmnist, simple or all (default all)
 *   mode     fwd, fwdbwd or all (default all)
 *   repeats  timed iterations after one warm-up (default 5); the median is reported
 *   batch    overrides the batch size
 * Threads: OMP_NUM_THREADS. */
#include "core/test_hooks.h"
#include "ddpm.h"

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

/* FLOPs of one item: forward, and the backward's input gradients that are not computed. */
typedef struct {
    double fwd, no_dinput;
} flops;

static void conv(flops *f, int cin, int cout, int k, int hout, int first) {
    const double v = 2.0 * cin * cout * k * k * hout * hout;
    f->fwd += v;
    if (first) f->no_dinput += v;
}

/* a transposed conv: every input position does cin x cout x k x k multiply-adds */
static void convt(flops *f, int cin, int cout, int k, int hin) {
    f->fwd += 2.0 * cin * cout * k * k * hin * hin;
}

static void linear(flops *f, int in, int out, int first) {
    f->fwd += 2.0 * in * out;
    if (first) f->no_dinput += 2.0 * in * out;
}

static flops context_unet_flops(int C, int nf, int ncf, int h) {
    flops f = {0, 0};
    conv(&f, C, nf, 3, h, 1); /* init_conv */
    conv(&f, nf, nf, 3, h, 0);
    conv(&f, C, nf, 1, h, 1); /* its learned shortcut */
    for (int i = 0; i < 4; i++) conv(&f, nf, nf, 3, h, 0); /* down1 */
    conv(&f, nf, 2 * nf, 3, h / 2, 0);                      /* down2 */
    for (int i = 0; i < 3; i++) conv(&f, 2 * nf, 2 * nf, 3, h / 2, 0);
    linear(&f, 1, 2 * nf, 1); /* timeembed1, 2, contextembed1, 2 */
    linear(&f, 2 * nf, 2 * nf, 0);
    linear(&f, 1, nf, 1);
    linear(&f, nf, nf, 0);
    linear(&f, ncf, 2 * nf, 1);
    linear(&f, 2 * nf, 2 * nf, 0);
    linear(&f, ncf, nf, 1);
    linear(&f, nf, nf, 0);
    convt(&f, 2 * nf, 2 * nf, h / 4, 1); /* up0 */
    convt(&f, 4 * nf, nf, 2, h / 4);     /* up1 */
    for (int i = 0; i < 4; i++) conv(&f, nf, nf, 3, h / 2, 0);
    convt(&f, 2 * nf, nf, 2, h / 2); /* up2 */
    for (int i = 0; i < 4; i++) conv(&f, nf, nf, 3, h, 0);
    conv(&f, 2 * nf, nf, 3, h, 0); /* out */
    conv(&f, nf, C, 3, h, 0);
    return f;
}

static flops simple_unet_flops(int C, const int *ch, int n, int E, int H) {
    flops f = {0, 0};
    const int L = n - 1;
    linear(&f, E, E, 1);
    conv(&f, C, ch[0], 3, H, 1);
    int r = H;
    for (int i = 0; i < L; i++) {
        linear(&f, E, ch[i + 1], 0);
        conv(&f, ch[i], ch[i + 1], 3, r, 0);
        conv(&f, ch[i + 1], ch[i + 1], 3, r, 0);
        conv(&f, ch[i + 1], ch[i + 1], 4, r / 2, 0);
        r /= 2;
    }
    for (int i = 0; i < L; i++) {
        const int in = ch[L - i], out = ch[L - i - 1];
        linear(&f, E, out, 0);
        conv(&f, 2 * in, out, 3, r, 0);
        conv(&f, out, out, 3, r, 0);
        convt(&f, out, out, 4, r);
        r *= 2;
    }
    conv(&f, ch[0], C, 1, H, 0);
    return f;
}

typedef struct {
    const char *name, *config;
    int B, C, H, ncf;
    flops f;
} net;

static void run(const net *n, const char *mode, int repeats) {
    ddpm_model *m;
    if (ddpm_model_create(n->config, 1, &m) || ddpm_model_reserve(m, n->B)) {
        fprintf(stderr, "bench_course_nets: %s\n", ddpm_last_error());
        exit(1);
    }
    const size_t d = m->sample_numel, N = (size_t)n->B * d;
    float *x = malloc(sizeof(float) * N), *out = malloc(sizeof(float) * N);
    float *dout = malloc(sizeof(float) * N);
    float *cond = n->ncf ? calloc((size_t)n->B * n->ncf, sizeof(float)) : NULL;
    int *t = malloc(sizeof(int) * n->B);
    ddpm_randn(1, DDPM_STREAM_USER, 0, 0, x, N);
    ddpm_randn(1, DDPM_STREAM_USER, 1, 0, dout, N);
    for (int b = 0; b < n->B; b++) {
        t[b] = (int)ddpm_rand_below(1, DDPM_STREAM_USER, 2, (uint32_t)b,
                                    (uint32_t)m->num_timesteps);
        if (cond) cond[(size_t)b * n->ncf + b % n->ncf] = 1.0f;
    }
    for (int bwd = 0; bwd < 2; bwd++) {
        if (strcmp(mode, "all") != 0 && strcmp(mode, bwd ? "fwdbwd" : "fwd") != 0) continue;
        ddpm_model_input in = {.x = x, .t = t, .cond = cond, .B = n->B, .train = bwd};
        double *ms = malloc(sizeof(double) * (repeats + 1));
        for (int r = 0; r <= repeats; r++) { /* r = 0: warm-up (the tape's arena grows) */
            const double t0 = now();
            int rc = m->ops->forward(m, &in, out);
            if (!rc && bwd) {
                memset(m->grads, 0, sizeof(float) * m->n_params);
                rc = m->ops->backward(m, dout);
            }
            if (rc) {
                fprintf(stderr, "bench_course_nets: %s\n", ddpm_last_error());
                exit(1);
            }
            ms[r] = (now() - t0) * 1e3;
        }
        qsort(ms + 1, repeats, sizeof(double), cmp);
        const double med = ms[1 + repeats / 2];
        const double gflop = n->B * (bwd ? 3 * n->f.fwd - n->f.no_dinput : n->f.fwd) * 1e-9;
        const double gflops = gflop / (med * 1e-3);
        int threads = 1;
#ifdef _OPENMP
        threads = omp_get_max_threads();
#endif
        ddpm_tape_stats ts;
        ddpm_tape_get_stats(ddpm_model_tape(m, 0), &ts);
        printf("{\"impl\":\"ddpm\",\"net\":\"%s\",\"mode\":\"%s\",\"B\":%d,\"median_ms\":%.3f,"
               "\"min_ms\":%.3f,\"ms_per_image\":%.4f,\"gflop\":%.4f,\"gflops\":%.2f,"
               "\"threads\":%d,\"tape_mb\":%.1f}\n",
               n->name, bwd ? "fwdbwd" : "fwd", n->B, med, ms[1], med / n->B, gflop, gflops,
               threads, ts.arena_bytes / 1048576.0);
        fflush(stdout);
        free(ms);
    }
    free(x);
    free(out);
    free(dout);
    free(cond);
    free(t);
    ddpm_model_free(m);
}

void ddpm_conv_use_shifted(int on); /* ops/conv.c (internal) */
void ddpm_conv_use_direct(int on);  /* ops/conv.c (internal) */

int main(int argc, char **argv) {
    /* DDPM_CONV_SHIFTED=0: stride-1 convolutions through im2col instead (for comparison) */
    if (getenv("DDPM_CONV_SHIFTED")) ddpm_conv_use_shifted(atoi(getenv("DDPM_CONV_SHIFTED")));
    if (getenv("DDPM_CONV_DIRECT")) ddpm_conv_use_direct(atoi(getenv("DDPM_CONV_DIRECT")));
    const char *which = argc > 1 ? argv[1] : "all", *mode = argc > 2 ? argv[2] : "all";
    const int repeats = argc > 3 ? atoi(argv[3]) : 5, B = argc > 4 ? atoi(argv[4]) : 0;
    if (repeats < 1 || (strcmp(mode, "all") && strcmp(mode, "fwd") && strcmp(mode, "fwdbwd"))) {
        fprintf(stderr, "usage: bench_course_nets [sprites|fmnist|simple|all] [fwd|fwdbwd|all] "
                        "[repeats] [batch]\n");
        return 2;
    }
    static const int ch[5] = {64, 128, 256, 512, 1024};
    net nets[3] = {
        {"sprites",
         "{\"kind\":\"context-unet\",\"in_channels\":3,\"n_feat\":64,\"n_cfeat\":5,\"height\":16,"
         "\"num_timesteps\":501}",
         100, 3, 16, 5, context_unet_flops(3, 64, 5, 16)},
        {"fmnist",
         "{\"kind\":\"context-unet\",\"in_channels\":1,\"n_feat\":64,\"n_cfeat\":10,\"height\":28,"
         "\"num_timesteps\":501}",
         100, 1, 28, 10, context_unet_flops(1, 64, 10, 28)},
        {"simple",
         "{\"kind\":\"simple-unet\",\"in_channels\":3,\"height\":64,"
         "\"channels\":[64,128,256,512,1024],\"time_emb_dim\":32,\"num_timesteps\":300}",
         8, 3, 64, 0, simple_unet_flops(3, ch, 5, 32, 64)},
    };
    int any = 0;
    for (int i = 0; i < 3; i++) {
        if (strcmp(which, "all") != 0 && strcmp(which, nets[i].name) != 0) continue;
        if (B > 0) nets[i].B = B;
        run(&nets[i], mode, repeats);
        any = 1;
    }
    if (!any) {
        fprintf(stderr, "bench_course_nets: unknown net '%s' (sprites, fmnist, simple, all)\n",
                which);
        return 2;
    }
    return 0;
}

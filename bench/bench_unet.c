/* bench_unet.c - time of the default small U-Net (base 32, mult 1,2,2, 2 blocks, attention at the
 * lowest level) per image: forward (eval mode, as when sampling) and forward + backward (training
 * mode, gradients zeroed each time, as a training step without the optimizer), at 28x28x1 with
 * batch 64 and 32x32x3 with batch 32. Prints one JSON line per measurement with every timed
 * repetition, for bench/run_unet.sh, which interleaves runs with bench/torch_unet.py.
 * Usage: bench_unet [reps] [28|32] */
#include "core/test_hooks.h"
#include "ddpm.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>


static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static int run(int size, int reps) {
    const int C = size == 28 ? 1 : 3, B = size == 28 ? 64 : 32;
    char json[256];
    snprintf(json, sizeof json, "{\"kind\":\"unet\",\"in_channels\":%d,\"height\":%d}", C, size);
    ddpm_model *m;
    if (ddpm_model_create(json, 0, &m) || ddpm_model_reserve(m, B)) {
        fprintf(stderr, "bench_unet: %s\n", ddpm_last_error());
        return 1;
    }
    /* random weights: the initial ones have exact zeros where the paper's code starts at zero */
    ddpm_randn(1, DDPM_STREAM_USER, 0, 0, m->params, m->n_params);
    for (size_t i = 0; i < m->n_params; i++) m->params[i] *= 0.05f;
    const size_t n = (size_t)B * m->sample_numel;
    float *x = malloc(sizeof(float) * n), *out = malloc(sizeof(float) * n);
    float *dout = malloc(sizeof(float) * n);
    int *t = malloc(sizeof(int) * B);
    ddpm_randn(1, DDPM_STREAM_USER, 1, 0, x, n);
    ddpm_randn(1, DDPM_STREAM_USER, 2, 0, dout, n);
    for (int b = 0; b < B; b++) t[b] = (b * 997) % 1000;
    double *ms = malloc(sizeof(double) * reps);
    const double flops = ddpm_unet_flops(m);
    for (int train = 0; train <= 1; train++) {
        ddpm_model_input in = {.x = x, .t = t, .B = B, .train = train, .seed = 1};
        for (int r = -1; r < reps; r++) { /* r = -1 warms up (and grows the tape's arena) */
            const double t0 = now();
            if (train) memset(m->grads, 0, sizeof(float) * m->n_params);
            int rc = m->ops->forward(m, &in, out);
            if (!rc && train) rc = m->ops->backward(m, dout);
            if (rc) {
                fprintf(stderr, "bench_unet: %s\n", ddpm_last_error());
                return 1;
            }
            if (r >= 0) ms[r] = (now() - t0) * 1e3;
        }
        size_t arena = 0;
        ddpm_tape *tp;
        for (int k = 0; (tp = ddpm_model_tape(m, k)); k++) {
            ddpm_tape_stats st;
            ddpm_tape_get_stats(tp, &st);
            arena += st.arena_bytes;
        }
        printf("{\"impl\":\"ddpm\",\"config\":\"%dx%dx%d\",\"batch\":%d,\"what\":\"%s\","
               "\"fwd_flops_per_image\":%.0f,\"arena_mb\":%.1f,\"times_ms\":[",
               size, size, C, B, train ? "fwd+bwd" : "fwd", flops, arena / 1048576.0);
        for (int r = 0; r < reps; r++) printf(r ? ",%.3f" : "%.3f", ms[r]);
        printf("]}\n");
        fflush(stdout);
    }
    free(ms);
    free(x);
    free(out);
    free(dout);
    free(t);
    ddpm_model_free(m);
    return 0;
}

void ddpm_conv_use_shifted(int on); /* ops/conv.c (internal) */
void ddpm_conv_use_direct(int on);  /* ops/conv.c (internal) */

int main(int argc, char **argv) {
    /* DDPM_CONV_SHIFTED=0: stride-1 convolutions through im2col instead (for comparison) */
    if (getenv("DDPM_CONV_SHIFTED")) ddpm_conv_use_shifted(atoi(getenv("DDPM_CONV_SHIFTED")));
    if (getenv("DDPM_CONV_DIRECT")) ddpm_conv_use_direct(atoi(getenv("DDPM_CONV_DIRECT")));
    const int reps = argc > 1 ? atoi(argv[1]) : 5;
    const int only = argc > 2 ? atoi(argv[2]) : 0;
    if (reps < 1) return 2;
    if ((!only || only == 28) && run(28, reps)) return 1;
    if ((!only || only == 32) && run(32, reps)) return 1;
    return 0;
}

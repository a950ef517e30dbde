/* bench_mlp.c - throughput of the tutorial MLP: training steps/s at batch 128 and sampling
 * points*steps/s (10,000 points x 100 DDPM steps). Prints one JSON line per measurement so the
 * comparison script can read it. Usage: bench_mlp [train_steps] [repeats] */
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

static int cmp(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

int main(int argc, char **argv) {
    const int steps = argc > 1 ? atoi(argv[1]) : 2000;
    const int repeats = argc > 2 ? atoi(argv[2]) : 5;
    ddpm_schedule_config sc;
    ddpm_schedule_config_default(&sc, DDPM_SCHEDULE_SIGMOID_2D, 100);
    ddpm_schedule s;
    ddpm_points data;
    ddpm_model *m;
    if (ddpm_schedule_init(&s, &sc) || ddpm_points_generate("s-curve", 10000, 0, &data) ||
        ddpm_model_create("{\"kind\":\"mlp\",\"dim\":2,\"hidden\":128,\"depth\":3,\"num_timesteps\":100}", 0, &m)) {
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
    printf("{\"impl\":\"ddpm\",\"what\":\"train_step_ms\",\"batch\":128,\"median\":%.5f,\"min\":%.5f}\n",
           ms[1 + repeats / 2], ms[1]);
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
    printf("{\"impl\":\"ddpm\",\"what\":\"sample_10000x100_ms\",\"median\":%.3f,\"min\":%.3f}\n",
           ms[1 + repeats / 2], ms[1]);
    free(x);
    free(ms);
    ddpm_model_sampler_free(&smp);
    ddpm_trainer_free(&tr);
    ddpm_model_free(m);
    ddpm_points_free(&data);
    ddpm_schedule_free(&s);
    return 0;
}

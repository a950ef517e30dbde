/* bench_images.c - the image workflow in images per second: training, DDPM sampling and DDIM
 * sampling of the course's ContextUnet and of the default DDPM U-Net, through the library's own
 * trainer and sampler (what `ddpm train` and `ddpm sample` run). One JSON line per measurement;
 * bench/torch_images.py does the same work in PyTorch and bench/run_images.sh interleaves the two.
 *
 *   sprites  context-unet 16x16x3, n_feat 64, n_cfeat 5 (the course), linear-course T = 500, B 100
 *   fmnist   context-unet 28x28x1, n_feat 64, n_cfeat 10 (Fashion-MNIST), same schedule, B 100
 *   unet     the default "unet" at 28x28x1 with 10 classes, linear T = 1000, B 64
 *
 * train: ddpm_trainer_step on N = 2000 random images in [-1, 1] with one-hot conditioning
 *        (item i has class i % K), Adam lr 1e-3, grad clip 1, EMA 0.999, context dropout 0.1.
 *        One warm-up step, then `repeats` timed blocks of k steps (default 5): B k / seconds.
 * ddim:  ddpm_sample_loop, 25 steps (leading spacing), eta 0, class-conditional (item i has
 *        class i % K), guidance 0, from x_T drawn by the loop; the whole run is timed:
 *        B / seconds. One warm-up forward of B items first.
 * ddpm:  a full DDPM run is T network calls (minutes), so the real DDPM loop (ddpm_sample_loop,
 *        every step, posterior variance, conditional as above) is stopped by its progress callback
 *        after k + 1 steps (default k = 20) and the k steps between the callbacks of step 1 and
 *        step k + 1 are timed: images/s = B / (T x seconds per step), extrapolated (the JSON says
 *        so: "extrapolated": true, "timed_steps": k). The per-step work does not depend on t.
 *
 * Usage: bench_images NET WHAT [repeats] [batch] [k]
 *   repeats  timed blocks (train) or runs (ddpm, ddim), default 3; the median is reported
 *   batch    overrides the batch size (smoke tests)
 *   k        train: steps per timed block (default 5); ddpm: timed steps (default 20)
 * Threads: OMP_NUM_THREADS. */
#include "ddpm.h"
#include "kernels/kernels.h" /* the instruction set the kernels run at, for the record */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#define N_DATA 2000
#define DDIM_STEPS 25

typedef struct {
    const char *name, *config;
    ddpm_schedule_kind schedule;
    int T, B, K; /* schedule steps, batch, classes / context size */
} net_def;

static const net_def NETS[] = {
    {"sprites",
     "{\"kind\":\"context-unet\",\"in_channels\":3,\"n_feat\":64,\"n_cfeat\":5,\"height\":16,"
     "\"num_timesteps\":501}",
     DDPM_SCHEDULE_LINEAR_COURSE, 500, 100, 5},
    {"fmnist",
     "{\"kind\":\"context-unet\",\"in_channels\":1,\"n_feat\":64,\"n_cfeat\":10,\"height\":28,"
     "\"num_timesteps\":501}",
     DDPM_SCHEDULE_LINEAR_COURSE, 500, 100, 10},
    {"unet",
     "{\"kind\":\"unet\",\"in_channels\":1,\"height\":28,\"num_classes\":10,"
     "\"num_timesteps\":1000}",
     DDPM_SCHEDULE_LINEAR, 1000, 64, 10},
};

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static int cmp(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double load1(void) {
    double l = -1.0;
    FILE *f = fopen("/proc/loadavg", "r");
    if (f) {
        if (fscanf(f, "%lf", &l) != 1) l = -1.0;
        fclose(f);
    }
    return l;
}

static void die(const char *what) {
    fprintf(stderr, "bench_images: %s: %s\n", what, ddpm_last_error());
    exit(1);
}

/* One-hot rows: row i has a 1 at i % K. */
static float *one_hot(int n, int K) {
    float *c = calloc((size_t)n * K, sizeof(float));
    if (!c) die("out of memory");
    for (int i = 0; i < n; i++) c[(size_t)i * K + i % K] = 1.0f;
    return c;
}

/* The DDPM timing: the callback notes the time at step 1 and stops the loop at step k + 1. */
typedef struct {
    int stop_at;
    double t_first, t_last;
} step_timer;

static int time_steps(void *ctx, int k, int steps, int t, const float *x, const float *x0) {
    (void)steps, (void)t, (void)x, (void)x0;
    step_timer *st = ctx;
    if (k == 1) st->t_first = now();
    if (k == st->stop_at) {
        st->t_last = now();
        return 1;
    }
    return 0;
}

static int usage(void) {
    fprintf(stderr, "usage: bench_images sprites|fmnist|unet train|ddpm|ddim [repeats] [batch] "
                    "[k]\n");
    return 2;
}

int main(int argc, char **argv) {
    if (argc < 3) return usage();
    const net_def *nd = NULL;
    for (size_t i = 0; i < sizeof NETS / sizeof NETS[0]; i++)
        if (strcmp(argv[1], NETS[i].name) == 0) nd = &NETS[i];
    const char *what = argv[2];
    const int train = strcmp(what, "train") == 0, ddim = strcmp(what, "ddim") == 0,
              ddpm = strcmp(what, "ddpm") == 0;
    const int repeats = argc > 3 ? atoi(argv[3]) : 3;
    const int B = argc > 4 && atoi(argv[4]) > 0 ? atoi(argv[4]) : nd ? nd->B : 0;
    int k = argc > 5 ? atoi(argv[5]) : train ? 5 : 20;
    if (!nd || !(train || ddim || ddpm) || repeats < 1 || k < 1) return usage();
    if (ddpm && k > nd->T - 1) k = nd->T - 1;

    int threads = 1;
#ifdef _OPENMP
    threads = omp_get_max_threads();
#endif
    const double load_before = load1();
    ddpm_schedule_config sc;
    ddpm_schedule_config_default(&sc, nd->schedule, nd->T); /* beta 1e-4 .. 0.02 */
    ddpm_schedule sched;
    ddpm_model *m;
    if (ddpm_schedule_init(&sched, &sc)) die("schedule");
    if (ddpm_model_create(nd->config, 0, &m)) die("model");
    const size_t d = m->sample_numel;
    double *rate = malloc(sizeof(double) * repeats); /* images per second of each run */
    if (!rate) die("out of memory");

    if (train) {
        float *x = malloc(sizeof(float) * N_DATA * d);
        float *cond = one_hot(N_DATA, nd->K);
        if (!x) die("out of memory");
        ddpm_randu(1, DDPM_STREAM_USER, 0, 0, x, (size_t)N_DATA * d);
        for (size_t i = 0; i < (size_t)N_DATA * d; i++) x[i] = 2.0f * x[i] - 1.0f;
        ddpm_train_config tc;
        ddpm_train_config_default(&tc);
        tc.batch_size = B;
        tc.lr = 1e-3;
        tc.grad_clip = 1.0f;
        tc.ema_decay = 0.999f;
        tc.cond_drop_prob = 0.1f;
        tc.total_steps = 1000000;
        /* DDPM_BENCH_MICROBATCH=M: micro-batches of M items summed exactly (--microbatch) */
        const char *mb = getenv("DDPM_BENCH_MICROBATCH");
        tc.microbatch = mb ? atoi(mb) : 0;
        ddpm_train_data td = {.x = x, .cond = cond, .n = N_DATA, .hflip = 0};
        ddpm_trainer tr;
        if (ddpm_trainer_init(&tr, m, &sched, &tc, &td)) die("trainer");
        if (ddpm_trainer_step(&tr)) die("warm-up step"); /* the tapes' arenas grow here */
        for (int r = 0; r < repeats; r++) {
            const double t0 = now();
            for (int s = 0; s < k; s++)
                if (ddpm_trainer_step(&tr)) die("training step");
            rate[r] = (double)B * k / (now() - t0);
        }
        fprintf(stderr, "bench_images: %s train: final loss %.4f\n", nd->name, tr.last_loss);
        ddpm_trainer_free(&tr);
        free(x);
        free(cond);
    } else {
        float *cond = one_hot(B, nd->K);
        float *x = malloc(sizeof(float) * (size_t)B * d), *out = malloc(sizeof(float) * B * d);
        if (!x || !out) die("out of memory");
        ddpm_model_sampler ms;
        if (ddpm_model_sampler_init(&ms, m, B)) die("sampler");
        ms.cond = cond;
        ms.guidance = 0.0f;
        /* warm-up: one sampling forward of B items (grows the tapes' arenas) */
        ddpm_randn(1, DDPM_STREAM_USER, 0, 0, x, (size_t)B * d);
        if (ddpm_model_denoise(&ms, x, B, sched.n - 1, NULL, out)) die("warm-up forward");
        ddpm_sample_opts so;
        ddpm_sample_opts_default(&so);
        so.sampler = ddim ? DDPM_SAMPLER_DDIM : DDPM_SAMPLER_DDPM;
        so.steps = DDIM_STEPS;
        so.eta = 0.0f;
        so.step.variance = DDPM_VAR_SMALL;
        step_timer st = {.stop_at = k + 1};
        if (ddpm) {
            so.progress = time_steps;
            so.progress_ctx = &st;
        }
        for (int r = 0; r < repeats; r++) {
            so.seed = (uint64_t)r;
            const double t0 = now();
            const int rc = ddpm_sample_loop(&sched, &so, ddpm_model_denoise, &ms, B, d, x);
            const double t1 = now();
            if (ddpm) {
                if (rc != DDPM_ERR_INTERRUPTED) die("DDPM sampling (expected to be stopped)");
                rate[r] = (double)B / ((double)nd->T * (st.t_last - st.t_first) / k);
            } else {
                if (rc) die("DDIM sampling");
                rate[r] = (double)B / (t1 - t0);
            }
        }
        ddpm_model_sampler_free(&ms);
        free(x);
        free(out);
        free(cond);
    }

    double *sorted = malloc(sizeof(double) * repeats);
    if (!sorted) die("out of memory");
    memcpy(sorted, rate, sizeof(double) * repeats);
    qsort(sorted, repeats, sizeof(double), cmp);
    const double med = repeats % 2 ? sorted[repeats / 2]
                                   : 0.5 * (sorted[repeats / 2 - 1] + sorted[repeats / 2]);
    printf("{\"impl\":\"ddpm\",\"net\":\"%s\",\"what\":\"%s\",\"B\":%d,"
           "\"images_per_s_median\":%.4f,\"images_per_s_min\":%.4f,\"runs\":[",
           nd->name, what, B, med, sorted[0]);
    for (int r = 0; r < repeats; r++) printf(r ? ",%.4f" : "%.4f", rate[r]);
    /* trained parameters (m->n_params also counts the padding that aligns every tensor to 16) */
    size_t params = 0;
    for (size_t i = 0; i < m->n_tensors; i++)
        if (!m->tensors[i].is_buffer) params += m->tensors[i].numel;
    printf("],\"threads\":%d,\"params\":%zu,\"params_padded\":%zu,\"T\":%d", threads, params,
           m->n_params, nd->T);
    if (train) printf(",\"steps_per_block\":%d,\"microbatch\":%d", k, getenv("DDPM_BENCH_MICROBATCH") ? atoi(getenv("DDPM_BENCH_MICROBATCH")) : 0);
    if (ddim) printf(",\"sampling_steps\":%d,\"extrapolated\":false", DDIM_STEPS);
    if (ddpm) printf(",\"sampling_steps\":%d,\"extrapolated\":true,\"timed_steps\":%d", nd->T, k);
    printf(",\"isa\":\"%s\",\"load_before\":%.2f,\"load_after\":%.2f}\n",
           ddpm_mk_isa_name(ddpm_mk_isa()), load_before, load1());
    fflush(stdout);
    free(sorted);
    free(rate);
    ddpm_model_free(m);
    ddpm_schedule_free(&sched);
    return 0;
}

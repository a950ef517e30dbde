/* train_eval.c - sample quality measured while training (`ddpm train --eval-every N`): every N
 * steps (and at the last one) --eval-n samples of the EMA weights, their Frechet distance, KID
 * and, for labelled data, class accuracy in a classifier's feature space against real images,
 * one row of DIR/eval.csv per evaluation, DIR/eval.png at the end, and with --keep-best the
 * checkpoint of lowest FD so far in DIR/best.safetensors. Runs on rank 0 only (the other ranks
 * of a job wait at the next agreement): a measurement, not training, so it need not be split. */
#include "train_driver.h"
#include "image_sets.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#ifndef DDPM_SHIPPED_CLASSIFIER
#define DDPM_SHIPPED_CLASSIFIER "models/fmnist-classifier.safetensors"
#endif

#define EVAL_HEADER "step,fd,kid,kid_std,class_acc,seconds\n"

struct job_eval {
    job_eval_opts o;
    ddpm_model *cls;
    ddpm_points real;   /* the real images' features [n_real, F] */
    float *cond;        /* [n, K] one-hot conditions of a labelled model, or NULL */
    int *wanted;        /* [n] their classes */
    FILE *csv;
    char *csv_path, *best_path;
    double best_fd;     /* lowest FD in eval.csv so far (INFINITY: none) */
};

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* The lowest FD of the rows a resumed eval.csv kept (so --keep-best goes on comparing with them). */
static double lowest_fd(const char *path) {
    double best = INFINITY;
    FILE *f = fopen(path, "r");
    if (!f) return best;
    char line[512];
    while (fgets(line, sizeof line, f)) {
        long long st;
        double fd;
        if (sscanf(line, "%lld,%lf", &st, &fd) == 2 && fd < best) best = fd;
    }
    fclose(f);
    return best;
}

/* Real images to compare with: the data's test split where it has one (Fashion-MNIST's t10k
 * files), else the training images themselves; a random subset of at most n (seed). */
int job_real_images(const job_data *data, size_t n, uint64_t seed, float **x, size_t *n_real) {
    const size_t d = (size_t)data->channels * data->height * data->width;
    image_set test = {0};
    const float *src = data->x;
    size_t avail = data->n;
    if (data->json && strstr(data->json, "\"source\":\"fashion-mnist\"")) {
        int rc = image_set_load("fashion-mnist", SPLIT_TEST, 0, data->height, data->channels, NULL, &test);
        if (rc) return rc;
        if ((size_t)test.c * test.h * test.w != d) {
            image_set_free(&test);
            return ddpm_fail(DDPM_ERR_INVALID, "the Fashion-MNIST test images do not match the training images");
        }
        src = test.x;
        avail = (size_t)test.n;
    }
    const size_t m = n < avail ? n : avail;
    uint32_t *perm = malloc(sizeof(uint32_t) * (avail ? avail : 1));
    *x = malloc(sizeof(float) * d * (m ? m : 1));
    int rc = perm && *x ? DDPM_OK : ddpm_fail(DDPM_ERR_NOMEM, "out of memory");
    for (size_t i = 0; !rc && i < avail; i++) perm[i] = (uint32_t)i;
    /* a partial Fisher-Yates shuffle: the first m of a random permutation */
    for (size_t i = 0; !rc && i < m; i++) {
        const uint32_t j = (uint32_t)i + ddpm_rand_below(seed, DDPM_STREAM_EVAL, i, 11, (uint32_t)(avail - i));
        const uint32_t t = perm[i];
        perm[i] = perm[j], perm[j] = t;
        memcpy(*x + i * d, src + (size_t)perm[i] * d, sizeof(float) * d);
    }
    free(perm);
    image_set_free(&test);
    *n_real = m;
    return rc;
}

int job_eval_open(job_eval **out, const ddpm_trainer *tr, const job_data *data, const job_run_opts *o) {
    *out = NULL;
    const ddpm_model *m = tr->model;
    if (m->channels <= 0) return ddpm_fail(DDPM_ERR_INVALID, "--eval-every measures images; the data are points");
    job_eval *ev = calloc(1, sizeof *ev);
    if (!ev) return ddpm_fail(DDPM_ERR_NOMEM, "out of memory");
    ev->o = o->eval;
    ev->best_fd = INFINITY;
    ev->csv_path = strdup(cli_path(o->out_dir, "eval.csv"));
    ev->best_path = strdup(cli_path(o->out_dir, "best.safetensors"));
    int rc = ev->csv_path && ev->best_path ? DDPM_OK : ddpm_fail(DDPM_ERR_NOMEM, "out of memory");
    const char *features = ev->o.features;
    if (!rc && !features) {
        const char *env = getenv("DDPM_CLASSIFIER");
        if (!(m->channels == 1 && m->height == 28 && m->width == 28))
            rc = ddpm_fail(DDPM_ERR_INVALID, "--eval-every: the images are %dx%dx%d; the shipped classifier takes 1x28x28 (Fashion-MNIST): give --eval-features CLS.safetensors (ddpm classifier train)",
                           m->channels, m->height, m->width);
        features = env && *env ? env : DDPM_SHIPPED_CLASSIFIER;
    }
    if (!rc) rc = ddpm_classifier_load(features, &ev->cls, NULL);
    if (!rc && (ev->cls->channels != m->channels || ev->cls->height != m->height || ev->cls->width != m->width))
        rc = ddpm_fail(DDPM_ERR_INVALID, "%s: the classifier takes %dx%dx%d images, the model makes %dx%dx%d",
                       features, ev->cls->channels, ev->cls->height, ev->cls->width, m->channels, m->height, m->width);
    const size_t n = (size_t)ev->o.n;
    const int K = m->cond_dim;
    if (!rc && K > 0 && data->n_classes > 0) {
        /* labelled data: sample i asks for class i % K, measured by the class accuracy */
        if (data->n_classes > ev->cls->n_classes)
            rc = ddpm_fail(DDPM_ERR_INVALID, "%s: %d classes, the data have %d", features, ev->cls->n_classes, data->n_classes);
        ev->cond = calloc(n * (size_t)K, sizeof(float));
        ev->wanted = malloc(sizeof(int) * n);
        if (!rc && (!ev->cond || !ev->wanted)) rc = ddpm_fail(DDPM_ERR_NOMEM, "out of memory");
        for (size_t i = 0; !rc && i < n; i++) {
            ev->wanted[i] = (int)(i % (size_t)K);
            ev->cond[i * K + i % (size_t)K] = 1.0f;
        }
    }
    float *rx = NULL;
    size_t nr = 0;
    if (!rc) rc = job_real_images(data, n, ev->o.seed, &rx, &nr);
    if (!rc && nr < 4) rc = ddpm_fail(DDPM_ERR_INVALID, "--eval-every: %zu real images; the metrics need at least 4", nr);
    if (!rc) rc = ddpm_points_init(&ev->real, nr, ddpm_classifier_feature_dim(ev->cls));
    if (!rc) rc = ddpm_classifier_run(ev->cls, rx, nr, ev->real.x, NULL);
    free(rx);
    /* eval.csv: new, or continued from the checkpoint's step like loss.csv */
    if (!rc) {
        if (tr->step > 0) {
            ev->csv = job_resume_csv(ev->csv_path, tr->step, EVAL_HEADER);
            if (!ev->csv) rc = DDPM_ERR_IO;
            else ev->best_fd = lowest_fd(ev->csv_path);
        } else if (!(ev->csv = fopen(ev->csv_path, "w"))) {
            rc = ddpm_fail(DDPM_ERR_IO, "%s: cannot write: %s", ev->csv_path, strerror(errno));
        } else {
            fputs(EVAL_HEADER, ev->csv);
        }
    }
    if (rc) {
        job_eval_close(ev);
        return rc;
    }
    *out = ev;
    return DDPM_OK;
}

int job_eval_sync(job_eval *ev) {
    if (ev && ev->csv && (fflush(ev->csv) != 0 || fsync(fileno(ev->csv)) != 0))
        return ddpm_fail(DDPM_ERR_IO, "%s: write failed: %s", ev->csv_path, strerror(errno));
    return DDPM_OK;
}

int job_eval_run(job_eval *ev, ddpm_trainer *tr, const job_data *data) {
    ddpm_model *m = tr->model;
    const size_t np = m->n_params;
    float *saved = tr->ema ? malloc(sizeof(float) * np) : NULL;
    if (tr->ema && !saved) return ddpm_fail(DDPM_ERR_NOMEM, "out of memory");
    if (saved) { /* the EMA weights, as `ddpm sample` uses */
        memcpy(saved, m->params, sizeof(float) * np);
        memcpy(m->params, tr->ema, sizeof(float) * np);
    }
    const double t0 = now();
    ddpm_image_eval_config c = {.sampler = ev->o.sampler, .n = (size_t)ev->o.n, .cond = ev->cond,
                                .guidance = ev->o.guidance, .wanted = ev->wanted};
    const size_t half = c.n / 2;
    c.metrics.kid_subset_size = half < 1000 ? (half > 2 ? half : 2) : 1000;
    c.metrics.seed = ev->o.seed;
    ddpm_image_quality q;
    double acc = -1;
    int rc = ddpm_image_quality_of_model(m, tr->schedule, &c, ev->cls, &ev->real, &q, &acc, NULL);
    if (saved) {
        memcpy(m->params, saved, sizeof(float) * np);
        free(saved);
    }
    if (rc) return rc;
    const double secs = now() - t0;
    char a[32] = "";
    if (acc >= 0) snprintf(a, sizeof a, "%.6f", acc);
    fprintf(ev->csv, "%lld,%.7g,%.7g,%.7g,%s,%.3f\n", (long long)tr->step, q.fd, q.kid, q.kid_std, a, secs);
    if ((rc = job_eval_sync(ev))) return rc;
    if (ev->o.keep_best && q.fd < ev->best_fd) {
        char st[32], fd[32];
        snprintf(st, sizeof st, "%lld", (long long)tr->step);
        snprintf(fd, sizeof fd, "%.7g", q.fd);
        const char *keys[2] = {"eval_step", "eval_fd"}, *vals[2] = {st, fd};
        if ((rc = ddpm_checkpoint_save(ev->best_path, tr, data->json, keys, vals, 2))) return rc;
    }
    if (q.fd < ev->best_fd) ev->best_fd = q.fd;
    return DDPM_OK;
}

void job_eval_close(job_eval *ev) {
    if (!ev) return;
    if (ev->csv) fclose(ev->csv);
    ddpm_model_free(ev->cls);
    ddpm_points_free(&ev->real);
    free(ev->cond);
    free(ev->wanted);
    free(ev->csv_path);
    free(ev->best_path);
    free(ev);
}

/* ---- the FD curve ------------------------------------------------------------------------ */

int job_plot_eval(const char *dir, int quiet) {
    const char *csv = cli_path(dir, "eval.csv"), *png = cli_path(dir, "eval.png");
    float *x, *y;
    size_t n;
    int rc = job_read_csv_curve(csv, &x, &y, &n);
    if (!rc && n > 0) {
        const float *ys[1] = {y};
        const char *labels[1] = {"FD (EMA weights)"};
        rc = ddpm_plot_lines(png, "Frechet distance of samples during training", "step", "FD", x, ys,
                             labels, 1, n, 1, 0, 0);
        if (!rc && !quiet) cli_wrote(png, "FD over training steps");
    }
    free(x);
    free(y);
    return rc;
}

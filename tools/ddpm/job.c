/* job.c - drivers shared by the subcommands: data descriptions, the training run, sampling in
 * chunks, and small file helpers. */
#include "job.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* ---- paths ------------------------------------------------------------------------------------ */

int job_mkdirs(const char *path) {
    char buf[4096];
    snprintf(buf, sizeof buf, "%s", path);
    for (char *p = buf + 1; *p; p++) {
        if (*p != '/') continue;
        *p = 0;
        if (mkdir(buf, 0755) != 0 && errno != EEXIST)
            return ddpm_fail(DDPM_ERR_IO, "%s: cannot create directory: %s", buf, strerror(errno));
        *p = '/';
    }
    if (mkdir(buf, 0755) != 0 && errno != EEXIST)
        return ddpm_fail(DDPM_ERR_IO, "%s: cannot create directory: %s", buf, strerror(errno));
    return DDPM_OK;
}

const char *job_path(const char *dir, const char *name) {
    static char bufs[8][4096];
    static int k;
    char *b = bufs[k++ & 7];
    snprintf(b, 4096, "%s/%s", dir, name);
    return b;
}

void job_wrote(const char *path, const char *what) { printf("  wrote %-40s %s\n", path, what); }

/* ---- data ------------------------------------------------------------------------------------- */

char *job_points_json(const char *data, size_t n, uint64_t seed) {
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "type", "points");
    const char *dot = strrchr(data, '.');
    if (dot && (strcmp(dot, ".csv") == 0 || strcmp(dot, ".txt") == 0)) {
        cJSON_AddStringToObject(o, "path", data);
    } else {
        char sd[32];
        snprintf(sd, sizeof sd, "%llu", (unsigned long long)seed);
        cJSON_AddStringToObject(o, "name", data);
        cJSON_AddNumberToObject(o, "n", (double)n);
        cJSON_AddStringToObject(o, "seed", sd);
    }
    char *s = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    return s;
}

static const char *jstr(const cJSON *o, const char *k) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

void job_data_free(job_data *d) {
    free(d->x);
    free(d->cond);
    free(d->json);
    for (int i = 0; d->class_names && i < d->n_class_names; i++) free(d->class_names[i]);
    free(d->class_names);
    memset(d, 0, sizeof *d);
}

/* Images: {"type":"images","source":"fashion-mnist"|"folder"|"npy", ...}. */
static int load_images(const cJSON *o, job_data *d) {
    const char *src = jstr(o, "source");
    const cJSON *v;
    ddpm_image_dataset ds;
    int rc;
    if (!src) return ddpm_fail(DDPM_ERR_INVALID, "image data description names no source");
    if (strcmp(src, "fashion-mnist") == 0) {
        v = cJSON_GetObjectItemCaseSensitive(o, "max_items");
        rc = ddpm_dataset_fashion_mnist(jstr(o, "dir"), 1, cJSON_IsNumber(v) ? (int)v->valuedouble : 0, &ds);
    } else if (strcmp(src, "folder") == 0) {
        const cJSON *size = cJSON_GetObjectItemCaseSensitive(o, "image_size");
        const cJSON *ch = cJSON_GetObjectItemCaseSensitive(o, "channels");
        rc = ddpm_dataset_folder(jstr(o, "path") ? jstr(o, "path") : "",
                                 cJSON_IsNumber(size) ? (int)size->valuedouble : 32,
                                 cJSON_IsNumber(ch) ? (int)ch->valuedouble : 3,
                                 cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(o, "labels_from_dirs")), &ds);
    } else if (strcmp(src, "npy") == 0) {
        rc = ddpm_dataset_npy(jstr(o, "path") ? jstr(o, "path") : "", jstr(o, "labels"), &ds);
    } else {
        return ddpm_fail(DDPM_ERR_INVALID, "unknown image source '%s'", src);
    }
    if (rc) return rc;
    d->x = ds.x;
    d->cond = ds.cond;
    d->n = (size_t)ds.n;
    d->channels = ds.c;
    d->height = ds.h;
    d->width = ds.w;
    d->dim = ds.c * ds.h * ds.w;
    d->cond_dim = ds.cond ? ds.cond_dim : 0;
    d->n_classes = ds.n_classes;
    d->class_names = ds.class_names;
    d->n_class_names = ds.n_classes;
    ds.x = NULL; /* moved */
    ds.cond = NULL;
    ds.class_names = NULL;
    ds.n_classes = 0;
    ddpm_dataset_free(&ds);
    v = cJSON_GetObjectItemCaseSensitive(o, "hflip");
    d->hflip = cJSON_IsBool(v) ? cJSON_IsTrue(v) : strcmp(src, "folder") == 0;
    return DDPM_OK;
}

int job_data_load(const char *json, job_data *d) {
    memset(d, 0, sizeof *d);
    cJSON *o = cJSON_Parse(json);
    if (!o) return ddpm_fail(DDPM_ERR_FORMAT, "data description is not JSON: %s", json);
    const char *type = jstr(o, "type"), *name = jstr(o, "name"), *path = jstr(o, "path");
    int rc = DDPM_OK;
    ddpm_points p = {0};
    if (type && strcmp(type, "images") == 0) {
        rc = load_images(o, d);
    } else if (!type || strcmp(type, "points") != 0) {
        rc = ddpm_fail(DDPM_ERR_INVALID, "unknown data type in %s", json);
    } else if (path) {
        rc = ddpm_points_read_csv(path, &p);
    } else if (name) {
        const cJSON *n = cJSON_GetObjectItemCaseSensitive(o, "n");
        const char *seed = jstr(o, "seed");
        rc = ddpm_points_generate(name, cJSON_IsNumber(n) ? (size_t)n->valuedouble : 10000,
                                  seed ? strtoull(seed, NULL, 10) : 0, &p);
    } else {
        rc = ddpm_fail(DDPM_ERR_INVALID, "data description names no data set: %s", json);
    }
    cJSON_Delete(o);
    if (rc) {
        job_data_free(d);
        return rc;
    }
    if (p.x) {
        d->x = p.x;
        d->n = p.n;
        d->dim = p.dim;
    }
    d->json = strdup(json);
    if (!d->json) {
        job_data_free(d);
        return ddpm_fail(DDPM_ERR_NOMEM, "out of memory");
    }
    return DDPM_OK;
}

int job_data_fresh_points(const char *json, size_t n, uint64_t seed, ddpm_points *out) {
    cJSON *o = cJSON_Parse(json);
    const char *name = o ? jstr(o, "name") : NULL;
    int rc = name ? ddpm_points_generate(name, n, seed, out)
                  : ddpm_fail(DDPM_ERR_INVALID, "the training data is a file, not a built-in "
                                                "generator: pass --reference FILE.csv");
    cJSON_Delete(o);
    return rc;
}

/* ---- training ------------------------------------------------------------------------------ */

static volatile sig_atomic_t interrupted;

static void on_sigint(int sig) {
    (void)sig;
    interrupted = 1;
    signal(SIGINT, SIG_DFL); /* a second Ctrl-C stops at once */
}

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void fmt_duration(char *buf, size_t n, double s) {
    if (!isfinite(s) || s < 0) s = 0;
    long t = (long)(s + 0.5);
    if (t >= 3600)
        snprintf(buf, n, "%ld:%02ld:%02ld", t / 3600, t / 60 % 60, t % 60);
    else
        snprintf(buf, n, "%ld:%02ld", t / 60, t % 60);
}

static int save(ddpm_trainer *tr, const job_data *data, const char *path) {
    return ddpm_checkpoint_save(path, tr, data->json, NULL, NULL, 0);
}

int job_train(ddpm_trainer *tr, const job_data *data, const job_run_opts *o) {
    int rc = job_mkdirs(o->out_dir);
    if (rc) return rc;
    const char *ckpt = job_path(o->out_dir, "ckpt.safetensors");
    const char *log_path = job_path(o->out_dir, "loss.csv");
    /* The loss log: a fresh run starts it, a resumed run appends to it. */
    FILE *log = fopen(log_path, tr->step > 0 ? "a" : "w");
    if (!log) return ddpm_fail(DDPM_ERR_IO, "%s: cannot write: %s", log_path, strerror(errno));
    if (tr->step == 0) fprintf(log, "step,loss,lr,grad_norm\n");

    const int tty = isatty(STDERR_FILENO) && !o->quiet;
    if (o->sample_every > 0 && (rc = job_mkdirs(job_path(o->out_dir, "samples")))) {
        fclose(log);
        return rc;
    }
    const int64_t total = tr->cfg.total_steps, first = tr->step;
    interrupted = 0;
    void (*old)(int) = signal(SIGINT, on_sigint);
    double t0 = now(), last_draw = 0, smooth = NAN;
    while (tr->step < total) {
        if ((rc = ddpm_trainer_step(tr))) break;
        fprintf(log, "%lld,%.7g,%.7g,%.7g\n", (long long)tr->step, tr->last_loss, tr->last_lr,
                tr->last_grad_norm);
        smooth = isnan(smooth) ? tr->last_loss : 0.98 * smooth + 0.02 * tr->last_loss;
        const double t = now();
        const double rate = (tr->step - first) / (t - t0 > 1e-9 ? t - t0 : 1e-9);
        const int done = tr->step == total;
        if (tty && (t - last_draw > 0.1 || done)) {
            char eta[32];
            fmt_duration(eta, sizeof eta, (total - tr->step) / rate);
            int filled = (int)(30.0 * tr->step / total);
            char bar[31];
            for (int i = 0; i < 30; i++) bar[i] = i < filled ? '#' : '-';
            bar[30] = 0;
            fprintf(stderr, "\r[%s] %lld/%lld  loss %.4f  %.0f steps/s  ETA %s   ", bar,
                    (long long)tr->step, (long long)total, smooth, rate, eta);
            if (done) fputc('\n', stderr);
            last_draw = t;
        } else if (!tty && !o->quiet && o->log_every > 0 &&
                   (tr->step % o->log_every == 0 || done)) {
            char eta[32];
            fmt_duration(eta, sizeof eta, (total - tr->step) / rate);
            fprintf(stderr, "step %lld/%lld  loss %.4f  lr %.3g  %.0f steps/s  ETA %s\n",
                    (long long)tr->step, (long long)total, smooth, tr->last_lr, rate, eta);
        }
        if (o->save_every > 0 && tr->step % o->save_every == 0 && tr->step < total &&
            (rc = save(tr, data, ckpt)))
            break;
        if (o->sample_every > 0 && (tr->step % o->sample_every == 0 || done)) {
            char name[64];
            snprintf(name, sizeof name, "samples/step_%07lld.png", (long long)tr->step);
            if ((rc = job_sample_grid(tr->model, tr->schedule, tr->cfg.prediction, tr->ema,
                                      o->sample_n, tr->cfg.seed, job_path(o->out_dir, name))))
                break;
        }
        if (interrupted) {
            if (tty) fputc('\n', stderr);
            rc = save(tr, data, ckpt);
            if (!rc) {
                fprintf(stderr, "interrupted at step %lld: saved %s (resume with --resume %s)\n",
                        (long long)tr->step, ckpt, ckpt);
                rc = ddpm_fail(DDPM_ERR_INTERRUPTED, "interrupted at step %lld", (long long)tr->step);
            }
            break;
        }
    }
    signal(SIGINT, old == SIG_ERR ? SIG_DFL : old);
    if (fclose(log) != 0 && !rc) rc = ddpm_fail(DDPM_ERR_IO, "%s: write failed", log_path);
    if (rc) {
        if (tty) fputc('\n', stderr);
        if (rc == DDPM_ERR_NUMERIC)
            fprintf(stderr, "training stopped; the last good checkpoint (if any) is %s\n", ckpt);
        return rc;
    }
    return save(tr, data, ckpt);
}

/* ---- sampling in chunks ------------------------------------------------------------------- */

int job_sample(ddpm_model *m, const ddpm_schedule *s, const ddpm_sample_opts *o,
               const float *cond, float guidance, size_t n, int batch, const float *x_init,
               float *out, ddpm_progress_fn progress, void *progress_ctx) {
    const size_t d = m->sample_numel;
    ddpm_model_sampler ms;
    int B = (size_t)batch < n ? batch : (int)n;
    int rc = ddpm_model_sampler_init(&ms, m, B);
    if (rc) return rc;
    ms.guidance = guidance;
    for (size_t start = 0; start < n && !rc; start += (size_t)B) {
        const int b = (int)(n - start < (size_t)B ? n - start : (size_t)B);
        ddpm_sample_opts so = *o;
        so.first_item = o->first_item + start;
        so.progress = progress;
        so.progress_ctx = progress_ctx;
        if (x_init) {
            memcpy(out + start * d, x_init + start * d, sizeof(float) * b * d);
            so.x_is_init = 1;
        }
        ms.cond = cond ? cond + start * (size_t)m->cond_dim : NULL;
        rc = ddpm_sample_loop(s, &so, ddpm_model_denoise, &ms, b, d, out + start * d);
    }
    ddpm_model_sampler_free(&ms);
    return rc;
}

/* ---- the loss curve ------------------------------------------------------------------------ */

int job_plot_loss(const char *dir, int quiet) {
    const char *csv = job_path(dir, "loss.csv"), *png = job_path(dir, "loss.png");
    FILE *f = fopen(csv, "r");
    if (!f) return ddpm_fail(DDPM_ERR_IO, "%s: cannot open: %s", csv, strerror(errno));
    size_t cap = 4096, n = 0;
    float *x = malloc(cap * sizeof *x), *y = malloc(cap * sizeof *y);
    char line[256];
    int rc = (x && y) ? DDPM_OK : ddpm_fail(DDPM_ERR_NOMEM, "out of memory");
    while (!rc && fgets(line, sizeof line, f)) {
        long long step;
        float loss;
        if (sscanf(line, "%lld,%f", &step, &loss) != 2) continue; /* the header */
        if (n == cap) {
            cap *= 2;
            float *nx = realloc(x, cap * sizeof *x), *ny = realloc(y, cap * sizeof *y);
            if (nx) x = nx;
            if (ny) y = ny;
            if (!nx || !ny) rc = ddpm_fail(DDPM_ERR_NOMEM, "out of memory");
        }
        if (!rc) {
            x[n] = (float)step;
            y[n++] = loss;
        }
    }
    fclose(f);
    if (!rc && n > 0) {
        /* An exponential moving average with a window of about 1% of the run. */
        float *sm = malloc(n * sizeof *sm);
        if (!sm) {
            rc = ddpm_fail(DDPM_ERR_NOMEM, "out of memory");
        } else {
            const double a = 1.0 / (1.0 + n / 100.0);
            double v = y[0];
            for (size_t i = 0; i < n; i++) sm[i] = (float)(v = (1 - a) * v + a * y[i]);
            const float *ys[2] = {y, sm};
            const char *labels[2] = {"loss", "smoothed"};
            rc = ddpm_plot_lines(png, "training loss", "step", "loss", x, ys, labels, 2, n, 1, 0, 0);
            if (!rc && !quiet) job_wrote(png, "loss curve");
            free(sm);
        }
    }
    free(x);
    free(y);
    return rc;
}

/* ---- sampler flags -------------------------------------------------------------------- */

int sampler_args_resolve(const char *cmd, const sampler_args *a, const ddpm_checkpoint *ck,
                         ddpm_sample_opts *o) {
    ddpm_sample_opts_default(o);
    if (ddpm_sampler_parse(a->sampler, &o->sampler) || ddpm_variance_parse(a->variance, &o->step.variance) ||
        ddpm_spacing_parse(a->spacing, &o->spacing))
        return cli_usage_error(cmd, "%s", ddpm_last_error());
    const int T = ck->schedule.n - ck->schedule.t0;
    o->steps = a->steps > 0 ? a->steps : (o->sampler == DDPM_SAMPLER_DDIM ? (T < 50 ? T : 50) : T);
    if (o->sampler == DDPM_SAMPLER_DDIM && (o->steps < 1 || o->steps > T))
        return cli_usage_error(cmd, "--steps must be in 1..%d for this schedule (got %d)", T, o->steps);
    if (o->sampler == DDPM_SAMPLER_DDPM && a->steps > 0 && a->steps != T)
        return cli_usage_error(cmd, "the DDPM sampler takes every one of the %d steps; use --sampler ddim for fewer", T);
    if (!(a->eta >= 0.0f)) return cli_usage_error(cmd, "--eta must be >= 0");
    o->eta = a->eta;
    o->step.prediction = ck->train.prediction;
    o->step.no_noise = a->no_noise;
    o->step.clip_x0 = a->clip;
    o->seed = a->seed;
    return 0;
}

/* Puts the EMA weights in place unless told otherwise. */
void sampler_use_ema(ddpm_checkpoint *ck, int no_ema, int quiet) {
    if (ck->ema && !no_ema) {
        memcpy(ck->model->params, ck->ema, sizeof(float) * ck->model->n_params);
        if (!quiet) printf("using the EMA weights (--no-ema for the raw ones)\n");
    }
}


/* ---- sample grids during training -------------------------------------------------------- */

int job_sample_grid(ddpm_model *m, const ddpm_schedule *s, ddpm_prediction pred,
                    const float *weights, int n, uint64_t seed, const char *png) {
    const size_t d = m->sample_numel, np = m->n_params;
    float *saved = weights ? malloc(sizeof(float) * np) : NULL;
    float *x = malloc(sizeof(float) * (size_t)n * d);
    float *cond = m->cond_dim > 0 ? calloc((size_t)n * m->cond_dim, sizeof(float)) : NULL;
    int rc = (x && (!weights || saved) && (m->cond_dim == 0 || cond)) ? DDPM_OK
                                                                     : ddpm_fail(DDPM_ERR_NOMEM, "out of memory");
    if (!rc && weights) {
        memcpy(saved, m->params, sizeof(float) * np);
        memcpy(m->params, weights, sizeof(float) * np);
    }
    for (int i = 0; cond && i < n; i++) cond[(size_t)i * m->cond_dim + i % m->cond_dim] = 1.0f;
    ddpm_sample_opts o;
    ddpm_sample_opts_default(&o);
    o.sampler = DDPM_SAMPLER_DDIM;
    o.steps = 25 < s->n - s->t0 ? 25 : s->n - s->t0;
    o.step.prediction = pred;
    o.step.clip_x0 = 1;
    o.seed = seed;
    if (!rc) rc = job_sample(m, s, &o, cond, 0.0f, (size_t)n, n, NULL, x, NULL, NULL);
    if (!rc) {
        const int nrow = m->cond_dim > 0 && m->cond_dim <= 16 ? m->cond_dim : 10;
        rc = ddpm_grid_write_png(png, x, n, m->channels, m->height, m->width, nrow,
                                 m->height < 32 ? 2 : 1);
    }
    if (saved) {
        memcpy(m->params, saved, sizeof(float) * np);
        free(saved);
    }
    free(x);
    free(cond);
    return rc;
}

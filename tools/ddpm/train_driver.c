/* train_driver.c - a training run as the user sees it: progress on stderr, the loss log,
 * checkpoints, sample grids, Ctrl-C, and the loss curve at the end. */
#include "train_driver.h"
#include "dist.h"
#include "sample_driver.h"

#include <errno.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define LOSS_HEADER "step,loss,lr,grad_norm\n"

static volatile sig_atomic_t interrupted; /* the signal that asked to stop, or 0 */
static int save_failed;

int job_train_save_failed(void) { return save_failed; }

static void on_sigint(int sig) {
    interrupted = sig;
    signal(sig, SIG_DFL); /* a second one stops at once */
}

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* Decimals for a rate: three significant digits below 100 steps/s (a U-Net runs ~1). */
static int rate_digits(double r) { return r >= 100 ? 0 : r >= 10 ? 1 : r >= 1 ? 2 : 3; }

static void fmt_duration(char *buf, size_t n, double s) {
    if (!isfinite(s) || s < 0) s = 0;
    long t = (long)(s + 0.5);
    if (t >= 3600)
        snprintf(buf, n, "%ld:%02ld:%02ld", t / 3600, t / 60 % 60, t % 60);
    else
        snprintf(buf, n, "%ld:%02ld", t / 60, t % 60);
}

/* The loss log reaches the disk before each checkpoint does, so a checkpoint never holds a step
 * whose row the log could lose. */
static int save(ddpm_trainer *tr, const job_data *data, const char *path, FILE *log,
                const char *log_path, job_eval *ev) {
    int rc = log && (fflush(log) != 0 || fsync(fileno(log)) != 0)
                 ? ddpm_fail(DDPM_ERR_IO, "%s: write failed: %s", log_path, strerror(errno))
                 : job_eval_sync(ev);
    if (!rc) rc = ddpm_checkpoint_save(path, tr, data->json, NULL, NULL, 0);
    if (rc) save_failed = 1; /* a run-time failure (a full disk), not bad input: exit 1 */
    return rc;
}

/* A resumed run's log: the header and the complete rows up to the checkpoint's step, in order;
 * rows written after that checkpoint by the run that stopped (they are trained again) and a row
 * torn by a crash are cut off. Returns the log open for appending, or NULL (error set). */
FILE *job_resume_csv(const char *path, int64_t step, const char *header) {
    FILE *f = fopen(path, "r+");
    if (!f && errno == ENOENT) { /* the log was removed: start a new one */
        if (!(f = fopen(path, "w"))) {
            ddpm_fail(DDPM_ERR_IO, "%s: cannot write: %s", path, strerror(errno));
            return NULL;
        }
        fputs(header, f);
        return f;
    }
    if (!f) {
        ddpm_fail(DDPM_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
        return NULL;
    }
    char line[512];
    long keep = 0;
    long long last = -1;
    while (fgets(line, sizeof line, f)) {
        const size_t len = strlen(line);
        if (len == 0 || line[len - 1] != '\n') break; /* torn (or absurdly long) */
        char *end;
        const long long st = strtoll(line, &end, 10);
        if (end != line && *end == ',') {
            if (st > step || st <= last) break;
            last = st;
        } else if (keep != 0) {
            break; /* only the first line may be the header */
        }
        keep = ftell(f);
    }
    if (fflush(f) != 0 || ftruncate(fileno(f), keep) != 0 || fseek(f, 0, SEEK_END) != 0) {
        ddpm_fail(DDPM_ERR_IO, "%s: cannot truncate: %s", path, strerror(errno));
        fclose(f);
        return NULL;
    }
    if (keep == 0) fputs(header, f);
    return f;
}

/* The run directory and the loss log (rank 0 only: the other ranks of a job write nothing). */
static int open_run(ddpm_trainer *tr, const job_run_opts *o, const char *ckpt,
                    const char *log_path, FILE **log) {
    *log = NULL;
    if (!dist_lead()) return DDPM_OK;
    int rc = cli_mkdirs(o->out_dir), removed = 0;
    if (rc) return rc;
    /* a run killed while saving left its temporary checkpoint (as large as the checkpoint) */
    if ((rc = ddpm_remove_stale_temporaries(ckpt, &removed))) return rc;
    if (removed && !o->quiet)
        fprintf(stderr, "removed %d temporary file%s of an interrupted save (%s.tmp.*)\n", removed,
                removed == 1 ? "" : "s", ckpt);
    /* The loss log: a fresh run starts it, a resumed run continues it from its checkpoint. */
    FILE *f = tr->step > 0 ? job_resume_csv(log_path, tr->step, LOSS_HEADER) : fopen(log_path, "w");
    if (!f) return tr->step > 0 ? DDPM_ERR_IO
                                : ddpm_fail(DDPM_ERR_IO, "%s: cannot write: %s", log_path,
                                            strerror(errno));
    if (tr->step == 0) fputs(LOSS_HEADER, f);
    if (o->sample_every > 0 && (rc = cli_mkdirs(cli_path(o->out_dir, "samples")))) {
        fclose(f);
        return rc;
    }
    *log = f;
    return DDPM_OK;
}

/* Steps between the ranks' comparison of their weights (a job of several processes). */
#define DIST_CHECK_EVERY 100

int job_train(ddpm_trainer *tr, const job_data *data, const job_run_opts *o) {
    const char *ckpt = cli_path(o->out_dir, "ckpt.safetensors");
    const char *log_path = cli_path(o->out_dir, "loss.csv");
    FILE *log;
    job_eval *ev = NULL;
    save_failed = 0;
    int rc = open_run(tr, o, ckpt, log_path, &log);
    if (!rc && o->eval.every > 0 && dist_lead()) rc = job_eval_open(&ev, tr, data, o);
    if ((rc = dist_agree(rc))) {
        if (log) fclose(log);
        job_eval_close(ev);
        dist_set_agreed();
        return rc;
    }
    const int lead = dist_lead();
    const int tty = isatty(STDERR_FILENO) && !o->quiet;
    const int64_t total = tr->cfg.total_steps, first = tr->step;
    interrupted = 0;
    /* Ctrl-C, a kill (SIGTERM: schedulers, systemd) and a closed terminal (SIGHUP) all save a
     * checkpoint and stop; a second one stops at once. */
    void (*old)(int) = signal(SIGINT, on_sigint);
    void (*old_term)(int) = signal(SIGTERM, on_sigint);
    void (*old_hup)(int) = signal(SIGHUP, on_sigint);
    double t0 = now(), last_draw = 0, smooth = NAN;
    int agreed = 1; /* every rank leaves the loop at the same step with the same status */
    while (tr->step < total) {
        tr->stop_request = interrupted;
        if ((rc = ddpm_trainer_step(tr))) {
            /* a step's numeric failure is found after the reductions: the same on every rank */
            agreed = rc == DDPM_ERR_NUMERIC;
            break;
        }
        if (log)
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
            fprintf(stderr, "\r[%s] %lld/%lld  smoothed loss %.4f  %.*f steps/s  ETA %s   ", bar,
                    (long long)tr->step, (long long)total, smooth, rate_digits(rate), rate, eta);
            if (done) fputc('\n', stderr);
            last_draw = t;
        } else if (!tty && !o->quiet && o->log_every > 0 &&
                   (tr->step % o->log_every == 0 || done)) {
            char eta[32];
            fmt_duration(eta, sizeof eta, (total - tr->step) / rate);
            fprintf(stderr, "step %lld/%lld  smoothed loss %.4f  lr %.3g  %.*f steps/s  ETA %s\n",
                    (long long)tr->step, (long long)total, smooth, tr->last_lr, rate_digits(rate),
                    rate, eta);
        }
        if (dist_size() > 1 && tr->step % DIST_CHECK_EVERY == 0 &&
            (rc = dist_check_weights(tr)))
            break;
        /* before the checkpoint of this step, so a resumed run has its row */
        if (o->eval.every > 0 && (tr->step % o->eval.every == 0 || done) &&
            (rc = dist_agree(lead ? job_eval_run(ev, tr, data) : 0)))
            break;
        if (o->save_every > 0 && tr->step % o->save_every == 0 && tr->step < total &&
            (rc = dist_agree(lead ? save(tr, data, ckpt, log, log_path, ev) : 0)))
            break;
        if (o->sample_every > 0 && (tr->step % o->sample_every == 0 || done)) {
            char name[64];
            snprintf(name, sizeof name, "samples/step_%07lld.png", (long long)tr->step);
            if ((rc = dist_agree(lead ? job_sample_grid(tr->model, tr->schedule, tr->cfg.prediction,
                                                        tr->ema, o->sample_n, tr->cfg.seed,
                                                        cli_path(o->out_dir, name))
                                      : 0)))
                break;
        }
        /* one process stops at once; a job stops when the step's reduction says some rank
         * was interrupted (stop_all), every rank at the same step */
        if (dist_size() > 1 ? tr->stop_all : interrupted) {
            if (tty) fputc('\n', stderr);
            rc = dist_agree(lead ? save(tr, data, ckpt, log, log_path, ev) : 0);
            if (!rc && lead)
                fprintf(stderr, "interrupted at step %lld: saved %s (resume with --resume %s)\n",
                        (long long)tr->step, ckpt, ckpt);
            /* exit 128 + the signal, on every rank of a job (the signalled one's) */
            const int sig = dist_max(interrupted);
            if (sig) cli_set_stop_signal(sig);
            if (!rc) {
                rc = ddpm_fail(DDPM_ERR_INTERRUPTED, "interrupted at step %lld", (long long)tr->step);
            }
            break;
        }
    }
    signal(SIGINT, old == SIG_ERR ? SIG_DFL : old);
    signal(SIGTERM, old_term == SIG_ERR ? SIG_DFL : old_term);
    signal(SIGHUP, old_hup == SIG_ERR ? SIG_DFL : old_hup);
    int rc_log = DDPM_OK;
    if (log && (fflush(log) != 0 || fsync(fileno(log)) != 0))
        rc_log = ddpm_fail(DDPM_ERR_IO, "%s: write failed: %s", log_path, strerror(errno));
    if (log && fclose(log) != 0 && !rc_log)
        rc_log = ddpm_fail(DDPM_ERR_IO, "%s: write failed", log_path);
    if (!agreed) {
        job_eval_close(ev);
        return rc; /* this rank alone failed: dist_finish ends the others */
    }
    if (!rc) rc = rc_log;
    if (!rc) rc = lead ? save(tr, data, ckpt, NULL, log_path, ev) : 0;
    job_eval_close(ev);
    rc = dist_agree(rc);
    dist_set_agreed();
    if (rc) {
        if (tty) fputc('\n', stderr);
        if (rc == DDPM_ERR_NUMERIC && lead) {
            if (access(ckpt, F_OK) == 0)
                fprintf(stderr, "training stopped; the last good checkpoint is %s\n", ckpt);
            else
                fprintf(stderr, "training stopped before its first checkpoint (none written)\n");
        }
    }
    return rc;
}

/* ---- the loss curve ------------------------------------------------------------------------ */

int job_read_csv_curve(const char *csv, float **x_out, float **y_out, size_t *n_out) {
    *x_out = *y_out = NULL;
    *n_out = 0;
    FILE *f = fopen(csv, "r");
    if (!f) return ddpm_fail(DDPM_ERR_IO, "%s: cannot open: %s", csv, strerror(errno));
    size_t cap = 1024, n = 0;
    float *x = malloc(cap * sizeof *x), *y = malloc(cap * sizeof *y);
    char line[512];
    int rc = (x && y) ? DDPM_OK : ddpm_fail(DDPM_ERR_NOMEM, "out of memory");
    while (!rc && fgets(line, sizeof line, f)) {
        long long step;
        float v;
        if (sscanf(line, "%lld,%f", &step, &v) != 2) continue; /* the header */
        if (n == cap) {
            cap *= 2;
            float *nx = realloc(x, cap * sizeof *x), *ny = realloc(y, cap * sizeof *y);
            if (nx) x = nx;
            if (ny) y = ny;
            if (!nx || !ny) rc = ddpm_fail(DDPM_ERR_NOMEM, "out of memory");
        }
        if (!rc) {
            x[n] = (float)step;
            y[n++] = v;
        }
    }
    fclose(f);
    if (rc) {
        free(x);
        free(y);
        return rc;
    }
    *x_out = x, *y_out = y, *n_out = n;
    return DDPM_OK;
}

int job_plot_loss(const char *dir, int quiet) {
    const char *csv = cli_path(dir, "loss.csv"), *png = cli_path(dir, "loss.png");
    float *x, *y;
    size_t n;
    int rc = job_read_csv_curve(csv, &x, &y, &n);
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
            if (!rc && !quiet) cli_wrote(png, "loss curve");
            free(sm);
        }
    }
    free(x);
    free(y);
    return rc;
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

/* points_jobs.c - what the 2-D subcommands share: forward-process panels, the reverse-process
 * trajectory, and evaluation against the noise floor. */
#include "points_jobs.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int job_plot_forward(const char *png, const ddpm_points *data, const ddpm_schedule *s,
                     int n_panels, uint64_t seed) {
    ddpm_points *panels = calloc((size_t)n_panels, sizeof *panels);
    char (*titles)[32] = calloc((size_t)n_panels, sizeof *titles);
    const char **tp = calloc((size_t)n_panels, sizeof *tp);
    int *tt = malloc(sizeof(int) * data->n);
    float *eps = malloc(sizeof(float) * data->n * (size_t)data->dim);
    int rc = (panels && titles && tp && tt && eps) ? DDPM_OK : ddpm_fail(DDPM_ERR_NOMEM, "out of memory");
    const int T = s->n - s->t0;
    for (int i = 0; i < n_panels && !rc; i++) {
        /* The tutorial: t = i * num_steps // num_shows, starting from the data itself. */
        const int t = s->t0 + i * T / n_panels;
        if ((rc = ddpm_points_init(&panels[i], data->n, data->dim))) break;
        for (size_t k = 0; k < data->n; k++) {
            tt[k] = t;
            ddpm_randn(seed, DDPM_STREAM_TRAIN_NOISE, k, (uint32_t)t, eps + k * data->dim, (size_t)data->dim);
        }
        ddpm_q_sample(s, data->x, eps, tt, (int)data->n, (size_t)data->dim, panels[i].x);
        snprintf(titles[i], sizeof titles[i], "q(x_{%d})", t);
        tp[i] = titles[i];
    }
    if (!rc)
        rc = ddpm_plot_scatter_grid(png, "forward process q(x_t | x_0)", panels, tp, n_panels,
                                    n_panels > 10 ? (n_panels + 1) / 2 : n_panels, NULL, 0);
    for (int i = 0; panels && i < n_panels; i++) ddpm_points_free(&panels[i]);
    free(panels);
    free(titles);
    free(tp);
    free(tt);
    free(eps);
    return rc;
}

int job_trajectory_init(job_trajectory *tr, int n_snap, size_t n_total, int dim) {
    memset(tr, 0, sizeof *tr);
    tr->snaps = calloc((size_t)n_snap, sizeof *tr->snaps);
    tr->t = calloc((size_t)n_snap, sizeof(int));
    if (!tr->snaps || !tr->t) return ddpm_fail(DDPM_ERR_NOMEM, "out of memory");
    tr->n_snap = n_snap;
    tr->n_total = n_total;
    for (int i = 0; i < n_snap; i++) {
        int rc = ddpm_points_init(&tr->snaps[i], n_total, dim);
        if (rc) return rc;
    }
    return DDPM_OK;
}

void job_trajectory_free(job_trajectory *tr) {
    for (int i = 0; tr->snaps && i < tr->n_snap; i++) ddpm_points_free(&tr->snaps[i]);
    free(tr->snaps);
    free(tr->t);
    memset(tr, 0, sizeof *tr);
}

/* Snapshot i (1..n_snap) is taken after step k = i * steps / n_snap. The callback sees one chunk of
 * items at a time: tr->offset and tr->n say which. */
int job_trajectory_progress(void *ctx, int k, int steps, int t, const float *x, const float *x0) {
    (void)x0;
    job_trajectory *tr = ctx;
    for (int i = 1; i <= tr->n_snap; i++)
        if (k == i * steps / tr->n_snap && (i == 1 || k != (i - 1) * steps / tr->n_snap)) {
            ddpm_points *p = &tr->snaps[i - 1];
            memcpy(p->x + tr->offset * p->dim, x, sizeof(float) * tr->n * p->dim);
            tr->t[i - 1] = t - 1; /* x now holds x_{t-1} */
        }
    return 0;
}

int job_trajectory_write(const job_trajectory *tr, const char *dir_in, const ddpm_schedule *s, int quiet) {
    char dir[4096]; /* dir_in may itself live in cli_path's rotating buffers */
    snprintf(dir, sizeof dir, "%s", dir_in);
    int rc = cli_mkdirs(dir);
    if (rc) return rc;
    char (*titles)[32] = calloc((size_t)tr->n_snap, sizeof *titles);
    const char **tp = calloc((size_t)tr->n_snap, sizeof *tp);
    if (!titles || !tp) {
        free(titles);
        free(tp);
        return ddpm_fail(DDPM_ERR_NOMEM, "out of memory");
    }
    for (int i = 0; i < tr->n_snap && !rc; i++) {
        const int t = tr->t[i] < s->t0 ? s->t0 - 1 : tr->t[i];
        snprintf(titles[i], sizeof titles[i], "x_{%d}", t < 0 ? 0 : t);
        tp[i] = titles[i];
        char name[64];
        snprintf(name, sizeof name, "x_%03d.csv", t < 0 ? 0 : t);
        rc = ddpm_points_write_csv(cli_path(dir, name), &tr->snaps[i]);
    }
    if (!rc) rc = ddpm_plot_scatter_grid(cli_path(dir, "reverse.png"), "reverse process p(x_{t-1} | x_t)",
                                         tr->snaps, tp, tr->n_snap, tr->n_snap, NULL, 0);
    if (!rc && !quiet) {
        cli_wrote(cli_path(dir, "reverse.png"), "the reverse process (10 panels)");
        cli_wrote(cli_path(dir, "x_*.csv"), "the points at each panel");
    }
    free(titles);
    free(tp);
    return rc;
}

int job_eval_points(const ddpm_points *samples, const ddpm_points *ref_a, const ddpm_points *ref_b,
                    int projections, uint64_t seed, double *swd_samples, double *swd_floor) {
    double swd_s, swd_f, mmd_s, mmd_f, bw;
    int rc;
    if ((rc = ddpm_sliced_wasserstein(samples, ref_a, projections, seed, &swd_s)) ||
        (rc = ddpm_sliced_wasserstein(ref_b, ref_a, projections, seed, &swd_f)) ||
        (rc = ddpm_mmd_rbf(samples, ref_a, 0, 0, seed, &mmd_s, &bw)) ||
        (rc = ddpm_mmd_rbf(ref_b, ref_a, bw, 0, seed, &mmd_f, NULL)))
        return rc;
    printf("                           sliced W1     MMD^2 (RBF, bandwidth %.3g)\n", bw);
    printf("  samples vs data        %10.5f    %10.6f\n", swd_s, mmd_s);
    printf("  data vs data (floor)   %10.5f    %10.6f\n", swd_f, mmd_f);
    printf("  sliced W1 / floor      %10.2fx\n", swd_s / swd_f);
    if (swd_samples) *swd_samples = swd_s;
    if (swd_floor) *swd_floor = swd_f;
    return DDPM_OK;
}

/* sample_driver.c - sampling as the subcommands share it: the sampler flags resolved against a
 * checkpoint, the EMA weights, and sampling any number of items in chunks. */
#include "sample_driver.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- sampler flags -------------------------------------------------------------------- */

int sampler_args_resolve(const char *cmd, const sampler_args *a, const ddpm_checkpoint *ck,
                         ddpm_sample_opts *o) {
    ddpm_sample_opts_default(o);
    if (ddpm_sampler_parse(a->sampler, &o->sampler))
        return cli_usage_error(cmd, "--sampler: %s", ddpm_last_error());
    if (ddpm_variance_parse(a->variance, &o->step.variance))
        return cli_usage_error(cmd, "--variance: %s", ddpm_last_error());
    if (ddpm_spacing_parse(a->spacing, &o->spacing))
        return cli_usage_error(cmd, "--spacing: %s", ddpm_last_error());
    /* --solver-type names DPM-Solver++'s form or, as diffusers' solver_type, UniPC's B(h). */
    const int unipc = o->sampler == DDPM_SAMPLER_UNIPC;
    if (a->solver_type && !unipc && ddpm_solver_type_parse(a->solver_type, &o->solver_type))
        return cli_usage_error(cmd, "--solver-type: %s", ddpm_last_error());
    if (a->solver_type && unipc && ddpm_unipc_variant_parse(a->solver_type, &o->unipc_variant))
        return cli_usage_error(cmd, "--solver-type: %s (for --sampler unipc)", ddpm_last_error());
    if (a->solver_order && !unipc)
        return cli_usage_error(cmd, "--solver-order is for --sampler unipc (got --sampler %s)",
                               a->sampler);
    if (a->solver_order && (a->solver_order < 1 || a->solver_order > 3))
        return cli_usage_error(cmd, "--solver-order must be 1, 2 or 3 (got %d)", a->solver_order);
    if (a->solver_order) o->unipc_order = a->solver_order;
    if (a->final_sigma && ddpm_final_sigma_parse(a->final_sigma, &o->final_sigma))
        return cli_usage_error(cmd, "--final-sigma: %s", ddpm_last_error());
    const int T = ck->schedule.n - ck->schedule.t0;
    const int every = o->sampler == DDPM_SAMPLER_DDPM;
    o->steps = a->steps > 0 ? a->steps : (!every ? (T < 50 ? T : 50) : T);
    if (!every && (o->steps < 1 || o->steps > T))
        return cli_usage_error(cmd, "--steps must be in 1..%d for this schedule (got %d)", T, o->steps);
    if (every && a->steps > 0 && a->steps != T)
        return cli_usage_error(cmd, "the DDPM sampler takes every one of the %d steps; use --sampler ddim for fewer", T);
    if (!(a->eta >= 0.0f && a->eta <= SAMPLE_ETA_MAX))
        return cli_usage_error(cmd, "--eta must be in 0..%g (got %g)", SAMPLE_ETA_MAX, a->eta);
    o->eta = a->eta;
    o->lower_order_final = !a->no_lower_order_final;
    if (a->threshold) {
        if (!(a->threshold_ratio > 0.0f && a->threshold_ratio <= 1.0f))
            return cli_usage_error(cmd, "--threshold-ratio must be in (0, 1] (got %g)", a->threshold_ratio);
        if (!(a->threshold_max >= 1.0f))
            return cli_usage_error(cmd, "--threshold-max must be >= 1 (got %g)", a->threshold_max);
        o->threshold = 1;
        o->threshold_ratio = a->threshold_ratio;
        o->threshold_max = a->threshold_max;
    }
    o->step.prediction = ck->train.prediction;
    o->step.no_noise = a->no_noise;
    o->step.clip_x0 = a->clip;
    o->seed = a->seed;
    return 0;
}

int sampler_print_timesteps(const ddpm_schedule *s, const ddpm_sample_opts *o) {
    const int K = ddpm_sample_num_steps(s, o);
    int *ts = malloc(sizeof(int) * (size_t)K);
    double *sig = malloc(sizeof(double) * ((size_t)K + 1));
    int rc = ts && sig ? ddpm_sample_timesteps(s, o, ts, sig) : ddpm_fail(DDPM_ERR_NOMEM, "out of memory");
    if (!rc) {
        printf("%s: %d steps, %d network evaluations\ntimesteps:", ddpm_sampler_name(o->sampler), K,
               ddpm_sample_num_evals(s, o));
        for (int k = 0; k < K; k++) printf(" %d", ts[k]);
        printf("\nsigmas:");
        for (int k = 0; k <= K; k++) printf(" %.4g", sig[k]);
        printf("\n");
    }
    free(ts);
    free(sig);
    return rc;
}

/* Puts the EMA weights in place unless told otherwise. */
void sampler_use_ema(ddpm_checkpoint *ck, int no_ema, int quiet) {
    if (ck->ema && !no_ema) {
        memcpy(ck->model->params, ck->ema, sizeof(float) * ck->model->n_params);
        if (!quiet) printf("using the EMA weights (--no-ema for the raw ones)\n");
    }
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


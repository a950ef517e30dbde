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


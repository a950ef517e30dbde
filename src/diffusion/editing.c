/* editing.c - editing existing images with a trained model, the network as the same callback the
 * samplers take: img2img / SDEdit (noise the image part way, denoise with any sampler), RePaint
 * inpainting (DDPM steps with the known region put back and the resampling "undo" steps), DDIM
 * inversion (the deterministic DDIM update run forwards, images to x_T) and spherical
 * interpolation between two x_T. */
#include "diffusion/sampling_internal.h"

#include <math.h>

/* ---- img2img / SDEdit ------------------------------------------------------------------------ */

int ddpm_img2img_start(const ddpm_schedule *s, const ddpm_sample_opts *o, double strength,
                       int *skip, int *t_start) {
    if (!(strength >= 0.0 && strength <= 1.0))
        return ddpm_fail(DDPM_ERR_INVALID, "strength must be in [0, 1] (got %g)", strength);
    const int K = ddpm_sample_num_steps(s, o);
    if (K < 1) return ddpm_fail(DDPM_ERR_INVALID, "number of sampling steps must be at least 1");
    int *ts = ddpm_alloc((size_t)K, sizeof(int));
    if (!ts) return DDPM_ERR_NOMEM;
    int rc = ddpm_sample_timesteps(s, o, ts, NULL);
    if (!rc) {
        /* diffusers: init_timestep = min(int(K * strength), K), t_start = K - init_timestep. The
         * product in double, as Python computes it (0.7 * 10 is 7 there, and here). */
        int n_run = (int)floor((double)K * strength);
        n_run = n_run > K ? K : n_run;
        *skip = K - n_run;
        *t_start = n_run > 0 ? ts[K - n_run] : -1;
    }
    free(ts);
    return rc;
}

int ddpm_img2img(const ddpm_schedule *s, const ddpm_sample_opts *o, double strength,
                 ddpm_denoise_fn f, void *ctx, int B, size_t d, const float *init, float *x) {
    if (B < 1 || d < 1) return ddpm_fail(DDPM_ERR_INVALID, "nothing to edit (B=%d, d=%zu)", B, d);
    int skip = 0, t_start = -1;
    int rc = ddpm_img2img_start(s, o, strength, &skip, &t_start);
    if (rc) return rc;
    const size_t n = ddpm_size_mul((size_t)B, d);
    if (t_start < 0) {
        if (x != init) memmove(x, init, n * sizeof(float));
        return DDPM_OK;
    }
    ddpm_sample_opts run = *o;
    run.x_is_init = 1;
    run.first_step = skip;
    if (skip == 0) {
        /* Strength 1: every step runs, from pure noise (SDEdit's t = 1), so the result is plain
         * sampling's; diffusers would keep sqrt(abar_T) of the image (0.006 for linear T = 1000). */
        ddpm_sample_draw_init(o, B, d, x);
    } else {
        float *z = ddpm_alloc_aligned(n, sizeof(float));
        int *tv = ddpm_alloc((size_t)B, sizeof(int));
        if (!z || !tv) rc = DDPM_ERR_NOMEM;
        if (!rc) {
            for (int i = 0; i < B; i++) tv[i] = t_start;
            ddpm_sample_draw_init(o, B, d, z);
            ddpm_q_sample(s, init, z, tv, B, d, x);
        }
        free(z);
        free(tv);
        if (rc) return rc;
    }
    return ddpm_sample_loop(s, &run, f, ctx, B, d, x);
}

/* ---- RePaint ----------------------------------------------------------------------------------- */

int ddpm_repaint_schedule(int T, int jump_length, int jump_n_sample, int **out, int *len) {
    *out = NULL;
    *len = 0;
    if (T < 1 || jump_length < 1 || jump_n_sample < 1)
        return ddpm_fail(DDPM_ERR_INVALID, "RePaint needs T >= 1, jump length >= 1 and jump "
                         "samples >= 1 (got %d, %d, %d)", T, jump_length, jump_n_sample);
    /* jumps[j] = R - 1 for j in range(0, T - J, J): the times from which the walk goes back up. */
    const long long points = T > jump_length ? (T - jump_length + jump_length - 1) / jump_length : 0;
    const long long total = (long long)T + 1 + 2LL * jump_length * (jump_n_sample - 1) * points;
    if (total > 100000000LL)
        return ddpm_fail(DDPM_ERR_INVALID, "RePaint schedule of %lld moves is too long (T %d, jump "
                         "length %d, jump samples %d)", total, T, jump_length, jump_n_sample);
    int *jumps = ddpm_alloc((size_t)T, sizeof(int));
    int *ts = ddpm_alloc((size_t)total, sizeof(int));
    if (!jumps || !ts) {
        free(jumps);
        free(ts);
        return DDPM_ERR_NOMEM;
    }
    for (int j = 0; j < T - jump_length; j += jump_length) jumps[j] = jump_n_sample - 1;
    long long k = 0;
    int t = T;
    while (t >= 1) {
        ts[k++] = --t;
        if (jumps[t] > 0) {
            jumps[t]--;
            for (int i = 0; i < jump_length; i++) ts[k++] = ++t;
        }
    }
    ts[k++] = -1;
    DDPM_CHECK(k == total);
    free(jumps);
    *out = ts;
    *len = (int)total;
    return DDPM_OK;
}

int ddpm_repaint(const ddpm_schedule *s, const ddpm_sample_opts *o, int jump_length,
                 int jump_n_sample, ddpm_denoise_fn f, void *ctx, int B, size_t d,
                 const float *known, const float *mask, float *x) {
    if (B < 1 || d < 1) return ddpm_fail(DDPM_ERR_INVALID, "nothing to inpaint (B=%d, d=%zu)", B, d);
    if (o->sampler != DDPM_SAMPLER_DDPM)
        return ddpm_fail(DDPM_ERR_INVALID, "RePaint runs with the DDPM sampler (got %s)",
                         ddpm_sampler_name(o->sampler));
    if (ddpm_sample_check_threshold(o)) return DDPM_ERR_INVALID;
    int *sched = NULL, len = 0;
    int rc = ddpm_repaint_schedule(s->n - s->t0, jump_length, jump_n_sample, &sched, &len);
    if (rc) return rc;
    const size_t n = ddpm_size_mul((size_t)B, d);
    float *out = ddpm_alloc_aligned(n, sizeof(float));
    float *x0 = ddpm_alloc_aligned(n, sizeof(float));
    float *noise = ddpm_alloc_aligned(n, sizeof(float));
    float *kn = ddpm_alloc_aligned(n, sizeof(float));
    float *scratch = o->threshold ? ddpm_alloc(d, sizeof(float)) : NULL;
    int *tv = ddpm_alloc((size_t)B, sizeof(int));
    if (!out || !x0 || !noise || !kn || !tv || (o->threshold && !scratch)) rc = DDPM_ERR_NOMEM;
    /* As in the sampling loop: thresholding hands the DDPM step a clipped x_0 prediction. */
    ddpm_step_opts step = o->step;
    if (o->threshold) step.prediction = DDPM_PRED_X0, step.clip_x0 = 1, step.clip_range = 1.0f;
    if (!rc) ddpm_sample_draw_init(o, B, d, x);
    int have_x0 = 0;
    for (int j = 0; !rc && j + 1 < len; j++) {
        const int a = sched[j] + s->t0, b = sched[j + 1] + s->t0;
        if (b < a) {
            /* Down from a to a - 1: the model's DDPM step for the unknown region... */
            rc = f(ctx, x, B, a, have_x0 ? x0 : NULL, out);
            if (rc) break;
            if (o->threshold) ddpm_predict_x0(s, o, a, x, out, B, d, out, scratch);
            if (a > s->t0 && !o->step.no_noise)
                for (int i = 0; i < B; i++)
                    ddpm_randn(o->seed, DDPM_STREAM_SAMPLE_STEP, o->first_item + (uint64_t)i,
                               (uint32_t)j, noise + (size_t)i * d, d);
            ddpm_step_ddpm(s, &step, a, x, out, noise, B, d, x, x0);
            have_x0 = 1;
            /* ...and the image noised to a - 1 for the known one (the image itself at the end). */
            if (b >= s->t0) {
                for (int i = 0; i < B; i++) {
                    tv[i] = b;
                    ddpm_randn(o->seed, DDPM_STREAM_EDIT, o->first_item + (uint64_t)i, (uint32_t)j,
                               noise + (size_t)i * d, d);
                }
                ddpm_q_sample(s, known, noise, tv, B, d, kn);
            } else {
                memcpy(kn, known, n * sizeof(float));
            }
            for (size_t k = 0; k < n; k++) x[k] = mask[k] * kn[k] + (1.0f - mask[k]) * x[k];
        } else {
            /* Up from b - 1 to b: one forward step q(x_b | x_{b-1}). */
            DDPM_CHECK(b == a + 1 && b < s->n);
            const float ca = sqrtf(1.0f - s->betas[b]), cb = sqrtf(s->betas[b]);
            for (int i = 0; i < B; i++) {
                float *xi = x + (size_t)i * d, *zi = noise + (size_t)i * d;
                ddpm_randn(o->seed, DDPM_STREAM_EDIT, o->first_item + (uint64_t)i, (uint32_t)j, zi, d);
                for (size_t k = 0; k < d; k++) xi[k] = ca * xi[k] + cb * zi[k];
            }
        }
        rc = ddpm_sample_check_finite("RePaint", o, j + 1, len - 1, a, x, B, d);
        if (!rc && o->progress && o->progress(o->progress_ctx, j + 1, len - 1, a, x, x0))
            rc = ddpm_fail(DDPM_ERR_INTERRUPTED, "inpainting stopped at move %d of %d", j + 1,
                           len - 1);
    }
    free(sched);
    free(out);
    free(x0);
    free(noise);
    free(kn);
    free(scratch);
    free(tv);
    return rc;
}

/* ---- DDIM inversion ---------------------------------------------------------------------------- */

int ddpm_ddim_invert(const ddpm_schedule *s, const ddpm_sample_opts *o, ddpm_denoise_fn f,
                     void *ctx, int B, size_t d, const float *images, float *xT) {
    if (B < 1 || d < 1) return ddpm_fail(DDPM_ERR_INVALID, "nothing to invert (B=%d, d=%zu)", B, d);
    ddpm_sample_opts run = *o;
    run.sampler = DDPM_SAMPLER_DDIM;
    const int K = run.steps;
    const size_t n = ddpm_size_mul((size_t)B, d);
    int *ts = ddpm_alloc(K > 0 ? (size_t)K : 1, sizeof(int));
    int *tv = ddpm_alloc((size_t)B, sizeof(int));
    float *out = ddpm_alloc_aligned(n, sizeof(float));
    float *eps = ddpm_alloc_aligned(n, sizeof(float));
    float *x0 = ddpm_alloc_aligned(n, sizeof(float));
    int rc = ts && tv && out && eps && x0 ? DDPM_OK : DDPM_ERR_NOMEM;
    if (!rc) rc = ddpm_sample_timesteps(s, &run, ts, NULL);
    if (!rc && xT != images) memmove(xT, images, n * sizeof(float));
    for (int k = K - 1; !rc && k >= 0; k--) {
        const int b = ts[k], a = k + 1 < K ? ts[k + 1] : s->t0 - 1;
        rc = f(ctx, xT, B, b, k < K - 1 ? x0 : NULL, out);
        if (rc) break;
        for (int i = 0; i < B; i++) tv[i] = b;
        ddpm_split_prediction(s, o->step.prediction, xT, out, tv, B, d, 0, eps, NULL);
        const double ab_a = a >= s->t0 ? s->alphas_cumprod[a] : 1.0, ab_b = s->alphas_cumprod[b];
        const float ra = (float)sqrt(ab_a), sa = (float)sqrt(1.0 - ab_a);
        const float rb = (float)sqrt(ab_b), sb = (float)sqrt(1.0 - ab_b);
        for (size_t j = 0; j < n; j++) {
            x0[j] = (xT[j] - sa * eps[j]) / ra;
            xT[j] = rb * x0[j] + sb * eps[j];
        }
        rc = ddpm_sample_check_finite("DDIM inversion", o, K - k, K, b, xT, B, d);
        if (!rc && o->progress && o->progress(o->progress_ctx, K - k, K, b, xT, x0))
            rc = ddpm_fail(DDPM_ERR_INTERRUPTED, "inversion stopped at step %d of %d", K - k, K);
    }
    free(ts);
    free(tv);
    free(out);
    free(eps);
    free(x0);
    return rc;
}

/* ---- spherical interpolation -------------------------------------------------------------------- */

void ddpm_slerp(const float *a, const float *b, double w, size_t n, float *out) {
    double ab = 0, aa = 0, bb = 0;
    for (size_t i = 0; i < n; i++) {
        ab += (double)a[i] * b[i];
        aa += (double)a[i] * a[i];
        bb += (double)b[i] * b[i];
    }
    double ca = 1.0 - w, cb = w;
    if (aa > 0.0 && bb > 0.0) {
        double c = ab / sqrt(aa * bb);
        c = c > 1.0 ? 1.0 : c < -1.0 ? -1.0 : c;
        const double theta = acos(c), st = sin(theta);
        /* Nearly parallel (or opposite) vectors: the sines vanish, and the linear form is the
         * limit (or as good as anything for opposite ones). */
        if (theta > 1e-4 && st > 1e-6) {
            ca = sin((1.0 - w) * theta) / st;
            cb = sin(w * theta) / st;
        }
    }
    for (size_t i = 0; i < n; i++) out[i] = (float)(ca * a[i] + cb * b[i]);
}

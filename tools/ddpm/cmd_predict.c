/* cmd_predict.c - `ddpm predict`: the network evaluated once, out = f(x_t, t, condition), the raw
 * output (eps, x_0 or v, as the model predicts) written as .npy: to compare ddpm's network with
 * any other implementation on the same weights and inputs. */
#include "model_source.h"
#include "sample_driver.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* "1,0,0.5" -> K floats; non-zero if it does not hold exactly K numbers. */
static int parse_floats(const char *s, float *v, int K) {
    const char *p = s;
    for (int k = 0; k < K; k++) {
        char *end;
        v[k] = strtof(p, &end);
        if (end == p || (k + 1 < K ? *end != ',' : *end != '\0')) return -1;
        p = end + 1;
    }
    return 0;
}

/* The condition rows [n, K] of --class, --context or --context-file (NULL: unconditional). */
static int read_condition(const char *cls, const char *context, const char *file, int n, int K,
                          float **out) {
    *out = NULL;
    const int given = (cls != NULL) + (context != NULL) + (file != NULL);
    if (!given) return 0;
    if (given > 1) return cli_usage_error("predict", "give one of --class, --context or --context-file");
    if (K == 0) return cli_usage_error("predict", "the model is unconditional: --class and --context do not apply");
    float *c = calloc((size_t)n * K, sizeof(float));
    if (!c) return cli_fail("predict", ddpm_fail(DDPM_ERR_NOMEM, "out of memory"));
    int rc = 0;
    if (cls) {
        char *end;
        const long k = strtol(cls, &end, 10);
        if (end == cls || *end || k < 0 || k >= K)
            rc = cli_usage_error("predict", "--class must be 0..%d (got '%s')", K - 1, cls);
        for (int i = 0; !rc && i < n; i++) c[(size_t)i * K + k] = 1.0f;
    } else if (context) {
        if (parse_floats(context, c, K))
            rc = cli_usage_error("predict", "--context needs %d comma-separated numbers (got '%s')", K, context);
        for (int i = 1; !rc && i < n; i++) memcpy(c + (size_t)i * K, c, sizeof(float) * K);
    } else {
        ddpm_npy a = {0};
        int r = ddpm_npy_read(file, &a);
        if (!r && (a.ndim != 2 || a.shape[0] != n || a.shape[1] != K))
            r = ddpm_fail(DDPM_ERR_INVALID, "%s: must be an array [%d, %d] (one condition per item of --x)", file, n, K);
        if (!r) r = ddpm_npy_to_f32(&a, c);
        ddpm_npy_free(&a);
        if (r) rc = cli_fail("predict", r);
    }
    if (rc) free(c);
    else *out = c;
    return rc;
}

int cmd_predict(int argc, char **argv) {
    const char *ckpt = NULL, *diffusers = NULL, *xfile = NULL, *out = NULL;
    const char *cls = NULL, *context = NULL, *context_file = NULL;
    int t = -1, set_t = 0, no_ema = 0, quiet = 0, threads = 0;
    weights_args wa;
    weights_args_init(&wa);
    const cli_opt own[] = {
        {"ckpt", CLI_STRING, &ckpt, "FILE", "checkpoint written by ddpm train (its EMA weights unless --no-ema)", NULL},
        {"diffusers", CLI_STRING, &diffusers, "DIR", "a diffusers UNet2DModel folder", NULL},
        {"x", CLI_STRING, &xfile, "FILE.npy", "the network's input x_t: images [N, C, H, W], points [N, D]", NULL},
        {"t", CLI_INT, &t, "T", "the timestep, as the schedule counts it (0..T-1; the course's 1..T)", &set_t},
        {"class", CLI_STRING, &cls, "K", "condition every item on class K (one-hot)", NULL},
        {"context", CLI_STRING, &context, "V", "condition every item on this context vector, e.g. 1,0,0,0,0", NULL},
        {"context-file", CLI_STRING, &context_file, "FILE.npy", "one condition row per item [N, K]", NULL},
        {"out", CLI_STRING, &out, "FILE.npy", "the raw network output, the shape of --x (float32)", NULL},
        {"no-ema", CLI_FLAG, &no_ema, NULL, "a checkpoint's raw weights instead of its EMA weights", NULL},
        {"threads", CLI_INT, &threads, "N", "threads (default: OMP_NUM_THREADS or every core)", NULL, 1, 4096},
        {"quiet", CLI_FLAG, &quiet, NULL, "print nothing but errors", NULL},
    };
    enum { N_OWN = sizeof own / sizeof own[0] };
    cli_opt opts[N_OWN + WEIGHTS_OPTS_N + MODEL_FLAGS_N];
    memcpy(opts, own, sizeof own);
    weights_args_options(&wa, opts + N_OWN);
    int rc = cli_parse("predict",
                       "Evaluates the network once on given inputs and writes its raw output (what it predicts: eps, "
                       "x_0 or v), to compare it with another implementation of the same network and weights. "
                       "Batch norm and dropout run in evaluation mode, as when sampling.",
                       argc, argv, opts, (int)(sizeof opts / sizeof opts[0]));
    if (rc) return rc < 0 ? 0 : rc;
    if (threads > 0) ddpm_set_threads(threads);
    if ((ckpt != NULL) + (wa.weights != NULL) + (diffusers != NULL) != 1)
        return cli_usage_error("predict", "give one of --ckpt FILE, --diffusers DIR or --weights FILE with --model");
    if (!xfile || !out || !set_t) return cli_usage_error("predict", "--x FILE.npy, --t T and --out FILE.npy are required");
    ddpm_checkpoint ck;
    if (ckpt) {
        if ((rc = ddpm_checkpoint_load(ckpt, &ck))) return cli_fail("predict", rc);
        sampler_use_ema(&ck, no_ema, 1);
    } else if (diffusers) {
        ddpm_diffusers_sampling smp;
        if ((rc = ddpm_diffusers_load(diffusers, &ck, &smp))) return cli_fail("predict", rc);
    } else if ((rc = weights_args_load("predict", &wa, &ck))) {
        return rc;
    }
    ddpm_model *m = ck.model;
    const size_t d = m->sample_numel;
    ddpm_npy xa = {0};
    float *x = NULL, *y = NULL, *cond = NULL;
    int n = 0;
    if (t < ck.schedule.t0 || t >= ck.schedule.n) {
        rc = cli_usage_error("predict", "--t %d is outside the schedule's steps %d..%d", t, ck.schedule.t0, ck.schedule.n - 1);
        goto done;
    }
    int r = ddpm_npy_read(xfile, &xa);
    const int want = m->height > 0 ? 4 : 2;
    const int64_t want_shape[4] = {0, m->height > 0 ? m->channels : (int64_t)d, m->height, m->width};
    int shape_ok = !r && xa.ndim == want && xa.shape[0] >= 1 && xa.shape[0] <= SAMPLE_MAX_N;
    for (int k = 1; shape_ok && k < want; k++) shape_ok = xa.shape[k] == want_shape[k];
    if (!r && !shape_ok)
        r = m->height > 0 ? ddpm_fail(DDPM_ERR_INVALID, "%s: --x must be an array [N, %d, %d, %d] (N x C x H x W)", xfile, m->channels, m->height, m->width)
                          : ddpm_fail(DDPM_ERR_INVALID, "%s: --x must be an array [N, %zu] (N x D)", xfile, d);
    if (!r) {
        n = (int)xa.shape[0];
        x = malloc(sizeof(float) * (size_t)n * d);
        y = malloc(sizeof(float) * (size_t)n * d);
        r = x && y ? ddpm_npy_to_f32(&xa, x) : ddpm_fail(DDPM_ERR_NOMEM, "out of memory");
    }
    if (r) {
        rc = cli_fail("predict", r);
        goto done;
    }
    if ((rc = read_condition(cls, context, context_file, n, m->cond_dim, &cond))) goto done;
    ddpm_model_sampler ms;
    r = ddpm_model_sampler_init(&ms, m, n);
    if (!r) {
        ms.cond = cond;
        r = ddpm_model_denoise(&ms, x, n, t, NULL, y);
        ddpm_model_sampler_free(&ms);
    }
    if (!r) r = ddpm_npy_write_f32(out, y, xa.ndim, xa.shape);
    if (r) {
        rc = cli_fail("predict", r);
        goto done;
    }
    if (!quiet) {
        printf("%s network, %d item%s at t = %d%s: its %s prediction\n", m->ops->kind, n, n == 1 ? "" : "s", t,
               cond ? ", conditioned" : "", ddpm_prediction_name(ck.train.prediction));
        cli_wrote(out, "network output");
    }
done:
    ddpm_npy_free(&xa);
    free(x);
    free(y);
    free(cond);
    ddpm_checkpoint_free(&ck);
    return rc;
}

/* eval_nll.c - `ddpm eval --nll`: the DDPM paper's variational bound on the negative
 * log-likelihood in bits per dimension (ddpm_nll_bpd, as improved-diffusion's image_nll) of a
 * checkpoint's EMA weights on --nll-n images of its data's test split (Fashion-MNIST's t10k
 * files; the training images for a source without test files). One network call per diffusion
 * step per image: T x N calls. */
#include "sample_driver.h"
#include "train_driver.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int eval_nll(int argc, char **argv) {
    const char *ckpt = NULL, *variance = "large";
    int nll = 0, n = 100, batch = 50, no_ema = 0, no_clip = 0;
    uint64_t seed = 0;
    const cli_opt opts[] = {
        {"nll", CLI_FLAG, &nll, NULL, "the likelihood bound in bits per dimension", NULL},
        {"ckpt", CLI_STRING, &ckpt, "FILE", "the image model", NULL},
        {"nll-n", CLI_INT, &n, "N", "test images (default 100)", NULL, 1, 10000000},
        {"variance", CLI_STRING, &variance, "KIND", "the model's fixed variance: large (beta, improved-diffusion's default) or small (the posterior's)", NULL},
        {"no-clip", CLI_FLAG, &no_clip, NULL, "do not clamp the model's x_0 estimate to [-1, 1]", NULL},
        {"batch", CLI_INT, &batch, "B", "images per network call (default 50)", NULL, 1, 100000},
        {"no-ema", CLI_FLAG, &no_ema, NULL, "use the raw weights", NULL},
        {"seed", CLI_U64, &seed, "S", "seed of the test subset and the noise (default 0)", NULL},
    };
    int rc = cli_parse("eval",
                       "--nll: the variational bound on -log p(x) in bits per dimension (Ho et al. "
                       "2020; improved-diffusion's calc_bpd_loop with a fixed variance and the "
                       "discretized Gaussian decoder) of a checkpoint on its data's test images.",
                       argc, argv, opts, (int)(sizeof opts / sizeof opts[0]));
    if (rc) return rc < 0 ? 0 : rc;
    if (!ckpt) return cli_usage_error("eval", "--nll needs --ckpt FILE");
    ddpm_variance var;
    if (ddpm_variance_parse(variance, &var)) return cli_usage_error("eval", "--variance: %s", ddpm_last_error());
    ddpm_checkpoint ck = {0};
    job_data data = {0};
    float *x = NULL;
    double *bpd = NULL, *prior = NULL;
    ddpm_model_sampler ms = {0};
    if ((rc = ddpm_checkpoint_load(ckpt, &ck))) return cli_fail("eval", rc);
    ddpm_model *m = ck.model;
    size_t nr = 0;
    if (m->channels <= 0) {
        rc = ddpm_fail(DDPM_ERR_INVALID, "%s: --nll measures image models; this one makes points", ckpt);
        goto done;
    }
    if (ck.schedule.n - ck.schedule.t0 < 2) {
        rc = ddpm_fail(DDPM_ERR_INVALID, "%s: the bound needs at least 2 diffusion steps", ckpt);
        goto done;
    }
    sampler_use_ema(&ck, no_ema, 1);
    if ((rc = job_data_load(ck.data_json ? ck.data_json : "{}", &data))) goto done;
    if ((rc = job_real_images(&data, (size_t)n, seed, &x, &nr))) goto done;
    const size_t d = m->sample_numel;
    bpd = malloc(sizeof(double) * nr);
    prior = malloc(sizeof(double) * nr);
    if (!bpd || !prior) { rc = ddpm_fail(DDPM_ERR_NOMEM, "out of memory"); goto done; }
    const int B = batch < (int)nr ? batch : (int)nr;
    if ((rc = ddpm_model_sampler_init(&ms, m, B))) goto done;
    /* a conditional model is measured unconditionally (its learnt null condition) */
    printf("%s: %zu test image%s, %d steps each (%s variance%s)\n", ckpt, nr, nr == 1 ? "" : "s",
           ck.schedule.n - ck.schedule.t0, ddpm_variance_name(var), no_clip ? "" : ", x_0 clamped");
    for (size_t s = 0; !rc && s < nr; s += (size_t)B) {
        const int b = (int)(nr - s < (size_t)B ? nr - s : (size_t)B);
        rc = ddpm_nll_bpd(&ck.schedule, ck.train.prediction, var, !no_clip, ddpm_model_denoise, &ms,
                          x + s * d, b, d, seed, s, bpd + s, prior + s);
    }
    if (!rc) {
        double mean = 0, pm = 0, sq = 0;
        for (size_t i = 0; i < nr; i++) mean += bpd[i], pm += prior[i];
        mean /= nr, pm /= nr;
        for (size_t i = 0; i < nr; i++) sq += (bpd[i] - mean) * (bpd[i] - mean);
        const double se = nr > 1 ? sqrt(sq / (nr - 1) / nr) : NAN;
        printf("NLL bound  %.4f bits/dim +- %.4f (standard error over %zu images; prior term %.2g)\n",
               mean, se, nr, pm);
    }
done:
    ddpm_model_sampler_free(&ms);
    free(x), free(bpd), free(prior);
    job_data_free(&data);
    ddpm_checkpoint_free(&ck);
    return cli_fail("eval", rc);
}

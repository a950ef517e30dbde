/* cmd_eval.c - `ddpm eval`: sample quality against the data, next to the data's own noise floor. */
#include "data_source.h"
#include "points_jobs.h"
#include "sample_driver.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>


/* Is --samples (or --samples=) an image input (.npy or a folder)? Then eval_images.c runs. */
static int wants_images(int argc, char **argv) {
    for (int i = 1; i < argc; i++) {
        const char *v = NULL;
        if (strcmp(argv[i], "--samples") == 0 && i + 1 < argc) v = argv[i + 1];
        else if (strncmp(argv[i], "--samples=", 10) == 0) v = argv[i] + 10;
        if (v) return eval_is_images(v);
    }
    return 0;
}

int cmd_eval(int argc, char **argv) {
    for (int i = 1; i < argc; i++)
        if (strcmp(argv[i], "--nll") == 0) return eval_nll(argc, argv);
    if (wants_images(argc, argv)) return eval_images(argc, argv);
    const char *ckpt = NULL, *samples_path = NULL, *reference = NULL;
    int n = 10000, projections = 256;
    sampler_args sa = {.sampler = "ddpm", .variance = "small", .spacing = "leading"};
    const cli_opt opts[] = {
        {"ckpt", CLI_STRING, &ckpt, "FILE", "checkpoint to sample from and whose data to compare with", NULL},
        {"samples", CLI_STRING, &samples_path, "FILE.csv", "evaluate these samples instead of drawing new ones", NULL},
        {"reference", CLI_STRING, &reference, "FILE.csv", "reference points (default: fresh draws of the checkpoint's built-in data)", NULL},
        {"n", CLI_INT, &n, "N", "samples and reference points (default 10000)", NULL, 2, 10000000},
        {"projections", CLI_INT, &projections, "P", "random projections of the sliced Wasserstein distance (default 256)", NULL, 1, 100000},
        {"sampler", CLI_STRING, &sa.sampler, "NAME", "ddpm (default) or any of ddpm sample's samplers", NULL},
        {"steps", CLI_INT, &sa.steps, "K", "steps of every sampler but ddpm", NULL},
        {"eta", CLI_FLOAT, &sa.eta, "E", "DDIM eta (0..1)", NULL, 0, SAMPLE_ETA_MAX},
        {"spacing", CLI_STRING, &sa.spacing, "KIND", "timestep spacing (as for ddpm sample)", NULL},
        {"variance", CLI_STRING, &sa.variance, "KIND", "DDPM variance: small or large", NULL},
        {"no-ema", CLI_FLAG, &sa.no_ema, NULL, "use the raw weights", NULL},
        {"seed", CLI_U64, &sa.seed, "S", "sampling and evaluation seed (default 0)", NULL},
    };
    int rc = cli_parse("eval",
                       "Reports the sliced Wasserstein-1 distance and RBF-kernel MMD^2 between samples "
                       "and a fresh draw of the data, next to the same two numbers between two fresh "
                       "draws of the data (the noise floor). Images: ddpm eval --samples FILE.npy|DIR "
                       "(see ddpm eval --samples x.npy --help).",
                       argc, argv, opts, (int)(sizeof opts / sizeof opts[0]));
    if (rc) return rc < 0 ? 0 : rc;
    if (!ckpt && !(samples_path && reference))
        return cli_usage_error("eval", "give --ckpt FILE (or --samples and --reference)");
    if (n < 2 || projections < 1) return cli_usage_error("eval", "-n must be >= 2 and --projections >= 1");
    if (reference && !samples_path && !ckpt) return cli_usage_error("eval", "nothing to evaluate");

    ddpm_checkpoint ck = {0};
    ddpm_points samples = {0}, ra = {0}, rb = {0};
    int have_ck = 0;
    if (ckpt) {
        if ((rc = ddpm_checkpoint_load(ckpt, &ck))) return cli_fail("eval", rc);
        have_ck = 1;
        if (ck.model->channels > 0) {
            ddpm_checkpoint_free(&ck);
            return cli_usage_error("eval", "%s is an image model: sample it (ddpm sample --ckpt %s --per-class 100 --out s.npy), then ddpm eval --samples s.npy --per-class 100 (or ddpm eval --nll --ckpt %s)", ckpt, ckpt, ckpt);
        }
    }
    if (samples_path) {
        rc = ddpm_points_read_csv(samples_path, &samples);
    } else {
        ddpm_sample_opts so;
        if ((rc = sampler_args_resolve("eval", &sa, &ck, &so))) {
            ddpm_checkpoint_free(&ck);
            return rc;
        }
        sampler_use_ema(&ck, sa.no_ema, 0);
        rc = ddpm_points_init(&samples, (size_t)n, (int)ck.model->sample_numel);
        if (!rc) {
            printf("sampling %d points (%s)\n", n, ddpm_sampler_name(so.sampler));
            rc = job_sample(ck.model, &ck.schedule, &so, NULL, 0, (size_t)n, n, NULL, samples.x, NULL, NULL);
        }
    }
    if (!rc && reference) {
        /* A file: split it in two halves for the noise floor. */
        ddpm_points all = {0};
        rc = ddpm_points_read_csv(reference, &all);
        if (!rc && all.n < 4) rc = ddpm_fail(DDPM_ERR_FORMAT, "%s: need at least 4 reference points", reference);
        if (!rc) rc = ddpm_points_init(&ra, all.n / 2, all.dim);
        if (!rc) rc = ddpm_points_init(&rb, all.n - all.n / 2, all.dim);
        if (!rc) {
            memcpy(ra.x, all.x, sizeof(float) * ra.n * ra.dim);
            memcpy(rb.x, all.x + ra.n * ra.dim, sizeof(float) * rb.n * rb.dim);
        }
        ddpm_points_free(&all);
    } else if (!rc) {
        /* Two fresh draws with seeds the training data did not use. */
        rc = job_data_fresh_points(ck.data_json ? ck.data_json : "{}", samples.n, 1000003 + sa.seed, &ra);
        if (!rc) rc = job_data_fresh_points(ck.data_json, samples.n, 2000003 + sa.seed, &rb);
    }
    if (!rc) {
        printf("%zu samples against %zu reference points\n", samples.n, ra.n);
        rc = job_eval_points(&samples, &ra, &rb, projections, sa.seed, NULL, NULL);
    }
    ddpm_points_free(&samples);
    ddpm_points_free(&ra);
    ddpm_points_free(&rb);
    if (have_ck) ddpm_checkpoint_free(&ck);
    return cli_fail("eval", rc);
}

/* cmd_sample.c - `ddpm sample`: draw samples from a checkpoint with DDPM or DDIM. */
#include "job.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int cmd_sample(int argc, char **argv) {
    const char *ckpt = NULL, *out = NULL, *traj = NULL, *plot = NULL;
    int n = 1000, quiet = 0;
    sampler_args sa = {.sampler = "ddpm", .variance = "small", .spacing = "leading"};
    const cli_opt opts[] = {
        {"ckpt", CLI_STRING, &ckpt, "FILE", "checkpoint written by ddpm train (required)", NULL},
        {"n", CLI_INT, &n, "N", "number of samples (default 1000)", NULL},
        {"sampler", CLI_STRING, &sa.sampler, "NAME", "ddpm (every step, default) or ddim", NULL},
        {"steps", CLI_INT, &sa.steps, "K", "DDIM steps (default min(50, T))", NULL},
        {"eta", CLI_FLOAT, &sa.eta, "E", "DDIM eta: 0 deterministic (default), 1 DDPM-like", NULL},
        {"spacing", CLI_STRING, &sa.spacing, "KIND", "DDIM timesteps: leading (default), trailing or linspace", NULL},
        {"variance", CLI_STRING, &sa.variance, "KIND", "DDPM variance: small (posterior, default) or large (beta)", NULL},
        {"no-noise", CLI_FLAG, &sa.no_noise, NULL, "DDPM without the added noise (to see why it is needed)", NULL},
        {"clip", CLI_FLAG, &sa.clip, NULL, "clamp the predicted x_0 to [-1, 1]", NULL},
        {"no-ema", CLI_FLAG, &sa.no_ema, NULL, "use the raw weights instead of the EMA weights", NULL},
        {"seed", CLI_U64, &sa.seed, "S", "sampling seed (default 0)", NULL},
        {"out", CLI_STRING, &out, "FILE", "samples as .csv or .npy (required)", NULL},
        {"trajectory", CLI_STRING, &traj, "DIR", "write the reverse process (10 snapshots and a plot)", NULL},
        {"plot", CLI_STRING, &plot, "FILE.png", "scatter plot of the samples over the data", NULL},
        {"quiet", CLI_FLAG, &quiet, NULL, "print nothing but errors", NULL},
    };
    int rc = cli_parse("sample", "Draws samples from a trained model; the checkpoint carries the model, schedule and prediction type.",
                       argc, argv, opts, (int)(sizeof opts / sizeof opts[0]));
    if (rc) return rc < 0 ? 0 : rc;
    if (!ckpt) return cli_usage_error("sample", "--ckpt FILE is required");
    if (!out) return cli_usage_error("sample", "--out FILE is required (.csv or .npy)");
    if (n < 1) return cli_usage_error("sample", "-n must be at least 1");
    const char *ext = strrchr(out, '.');
    if (!ext || (strcmp(ext, ".csv") != 0 && strcmp(ext, ".npy") != 0))
        return cli_usage_error("sample", "--out must end in .csv or .npy (got '%s')", out);

    ddpm_checkpoint ck;
    if ((rc = ddpm_checkpoint_load(ckpt, &ck))) return cli_fail("sample", rc);
    ddpm_sample_opts so;
    if ((rc = sampler_args_resolve("sample", &sa, &ck, &so))) {
        ddpm_checkpoint_free(&ck);
        return rc;
    }
    sampler_use_ema(&ck, sa.no_ema, quiet);
    ddpm_model *m = ck.model;
    const size_t d = m->sample_numel;
    ddpm_points samples = {0};
    job_trajectory tj = {0};
    rc = ddpm_points_init(&samples, (size_t)n, (int)d);
    if (!rc && traj) {
        rc = job_trajectory_init(&tj, 10, (size_t)n, (int)d);
        tj.n = (size_t)n;
    }
    if (!rc) {
        if (!quiet)
            printf("sampling %d points with %s (%d steps)\n", n, ddpm_sampler_name(so.sampler),
                   so.sampler == DDPM_SAMPLER_DDIM ? so.steps : ck.schedule.n - ck.schedule.t0);
        rc = job_sample(m, &ck.schedule, &so, NULL, 0.0f, (size_t)n, n, NULL, samples.x,
                        traj ? job_trajectory_progress : NULL, &tj);
    }
    if (!rc) {
        if (strcmp(ext, ".csv") == 0) {
            rc = ddpm_points_write_csv(out, &samples);
        } else {
            int64_t shape[2] = {n, (int64_t)d};
            rc = ddpm_npy_write_f32(out, samples.x, 2, shape);
        }
        if (!rc && !quiet) job_wrote(out, "samples");
    }
    if (!rc && traj) rc = job_trajectory_write(&tj, traj, &ck.schedule, quiet);
    if (!rc && plot) {
        job_data data;
        rc = job_data_load(ck.data_json ? ck.data_json : "{}", &data);
        if (!rc) {
            ddpm_points dp = {.x = data.x, .n = data.n, .dim = data.dim};
            rc = ddpm_plot_scatter(plot, "samples over the training data", &dp, "data", &samples,
                                   "samples", 0, 0);
            job_data_free(&data);
        }
        if (!rc && !quiet) job_wrote(plot, "samples over the data");
    }
    job_trajectory_free(&tj);
    ddpm_points_free(&samples);
    ddpm_checkpoint_free(&ck);
    return cli_fail("sample", rc);
}

/* cmd_noise.c - `ddpm noise`: the forward process of a data set, drawn. */
#include "data_source.h"
#include "points_jobs.h"

#include <stdio.h>
#include <stdlib.h>

int cmd_noise(int argc, char **argv) {
    const char *data = "s-curve", *out = NULL, *schedule = "sigmoid-2d";
    int n = 10000, T = 100, panels = 20, set_bs = 0, set_be = 0;
    double bs = 0, be = 0;
    uint64_t seed = 0;
    const cli_opt opts[] = {
        {"data", CLI_STRING, &data, "NAME|FILE.csv", "built-in data set or CSV of points (default s-curve)", NULL},
        {"n-points", CLI_INT, &n, "N", "points of a built-in data set (default 10000)", NULL},
        {"schedule", CLI_STRING, &schedule, "NAME", "beta schedule (default sigmoid-2d)", NULL},
        {"timesteps", CLI_INT, &T, "T", "diffusion steps (default 100)", NULL},
        {"beta-start", CLI_DOUBLE, &bs, "A", "first beta", &set_bs},
        {"beta-end", CLI_DOUBLE, &be, "B", "last beta", &set_be},
        {"panels", CLI_INT, &panels, "K", "number of panels (default 20, as the tutorial)", NULL},
        {"seed", CLI_U64, &seed, "S", "seed of the data and the noise (default 0)", NULL},
        {"out", CLI_STRING, &out, "FILE.png", "where to draw (required)", NULL},
    };
    int rc = cli_parse("noise", "Draws the forward (noising) process q(x_t | x_0) at evenly spaced t.",
                       argc, argv, opts, (int)(sizeof opts / sizeof opts[0]));
    if (rc) return rc < 0 ? 0 : rc;
    if (!out) return cli_usage_error("noise", "--out FILE.png is required");
    if (panels < 1 || panels > 100) return cli_usage_error("noise", "--panels must be in 1..100");
    if (n < 1) return cli_usage_error("noise", "--n-points must be at least 1");
    ddpm_schedule_kind kind;
    if (ddpm_schedule_kind_parse(schedule, &kind) || kind == DDPM_SCHEDULE_CUSTOM)
        return cli_usage_error("noise", "%s", kind == DDPM_SCHEDULE_CUSTOM ? "custom schedules are not supported here" : ddpm_last_error());
    ddpm_schedule_config sc;
    ddpm_schedule_config_default(&sc, kind, T);
    if (set_bs) sc.beta_start = bs;
    if (set_be) sc.beta_end = be;
    ddpm_schedule s;
    if ((rc = ddpm_schedule_init(&s, &sc))) return cli_fail("noise", rc);
    job_data d;
    char *dj = job_points_json(data, (size_t)n, seed);
    rc = job_data_load(dj, &d);
    free(dj);
    if (!rc) {
        ddpm_points p = {.x = d.x, .n = d.n, .dim = d.dim};
        rc = job_plot_forward(out, &p, &s, panels, seed);
        if (!rc) cli_wrote(out, "the forward process");
        job_data_free(&d);
    }
    ddpm_schedule_free(&s);
    return cli_fail("noise", rc);
}

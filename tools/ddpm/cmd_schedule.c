/* cmd_schedule.c - `ddpm schedule`: every buffer of a schedule, one row per step. */
#include "cli.h"

#include <stdio.h>
#include <stdlib.h>

int cmd_schedule(int argc, char **argv) {
    const char *kind_name = "linear", *betas_path = NULL;
    int T = 1000, csv = 0, T_set = 0, bs_set = 0, be_set = 0;
    double beta_start = 0, beta_end = 0, cosine_s = 0.008;
    const cli_opt opts[] = {
        {"schedule", CLI_STRING, &kind_name, "NAME",
         "linear, linear-course, cosine, sigmoid, sigmoid-2d or custom (default linear)", NULL},
        {"timesteps", CLI_INT, &T, "T", "number of diffusion steps (default 1000)", &T_set},
        {"beta-start", CLI_DOUBLE, &beta_start, "A", "first beta (linear, linear-course, sigmoid-2d)", &bs_set},
        {"beta-end", CLI_DOUBLE, &beta_end, "B", "last beta (linear, linear-course, sigmoid-2d)", &be_set},
        {"cosine-s", CLI_DOUBLE, &cosine_s, "S", "offset s of the cosine schedule (default 0.008)", NULL},
        {"betas", CLI_STRING, &betas_path, "FILE", "custom schedule: a file of betas (sets T)", NULL},
        {"csv", CLI_FLAG, &csv, NULL, "print comma-separated values", NULL},
    };
    int rc = cli_parse("schedule", "Prints every buffer of a beta schedule, one row per step t.",
                       argc, argv, opts, (int)(sizeof opts / sizeof opts[0]));
    if (rc) return rc < 0 ? 0 : rc;

    ddpm_schedule_kind kind;
    if (ddpm_schedule_kind_parse(kind_name, &kind)) return cli_usage_error("schedule", "%s", ddpm_last_error());
    double *betas = NULL;
    if (kind == DDPM_SCHEDULE_CUSTOM || betas_path) {
        if (!betas_path) return cli_usage_error("schedule", "--schedule custom needs --betas FILE");
        int count;
        if ((rc = ddpm_betas_read(betas_path, &betas, &count))) return cli_fail("schedule", rc);
        if (T_set && T != count) {
            free(betas);
            return cli_usage_error("schedule", "--timesteps %d does not match the %d betas in %s", T,
                                   count, betas_path);
        }
        kind = DDPM_SCHEDULE_CUSTOM;
        T = count;
    }
    ddpm_schedule_config cfg;
    ddpm_schedule_config_default(&cfg, kind, T);
    if (bs_set) cfg.beta_start = beta_start;
    if (be_set) cfg.beta_end = beta_end;
    cfg.cosine_s = cosine_s;
    cfg.betas = betas;
    ddpm_schedule s;
    rc = ddpm_schedule_init(&s, &cfg);
    free(betas);
    if (rc) return cli_fail("schedule", rc);

    const char *sep = csv ? "," : " ";
    printf(csv ? "t" : "%5s", "t");
    for (int b = 0; b < DDPM_SCHEDULE_NUM_BUFFERS; b++) {
        if (csv)
            printf("%s%s", sep, ddpm_schedule_buffer_name(b));
        else
            printf(" %15.15s", ddpm_schedule_buffer_name(b));
    }
    printf("\n");
    for (int t = 0; t < s.n; t++) {
        printf(csv ? "%d" : "%5d", t);
        for (int b = 0; b < DDPM_SCHEDULE_NUM_BUFFERS; b++) {
            double v = ddpm_schedule_buffer(&s, b)[t];
            if (csv)
                printf(",%.9g", v);
            else
                printf(" %15.8g", v);
        }
        printf("\n");
    }
    if (!csv)
        fprintf(stderr, "# schedule %s, T = %d, %d entries, usable steps %d..%d\n",
                ddpm_schedule_kind_name(kind), T, s.n, s.t0, s.n - 1);
    ddpm_schedule_free(&s);
    return 0;
}

/* cmd_invert.c - `ddpm invert`: images to the x_T that DDIM sampling (eta 0, the same steps) takes
 * back to them (DDIM inversion), written as the .npy that `ddpm sample --x-init` reads; with
 * --reconstruct, the round trip and its error. */
#include "edit_images.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int cmd_invert(int argc, char **argv) {
    const char *ckpt = NULL, *images = NULL, *out = NULL, *recon = NULL, *context = NULL;
    int quiet = 0, threads = 0, batch = 0, class_id = -1, clip = 0, scale = 0, nrow = 0;
    float guidance = 0.0f;
    sampler_args sa = {.sampler = "ddim", .variance = "small", .spacing = "leading"};
    const cli_opt opts[] = {
        {"ckpt", CLI_STRING, &ckpt, "FILE", "checkpoint written by ddpm train", NULL},
        {"images", CLI_STRING, &images, "FILE|DIR", "the images: one file of the model's size, a folder of them or a .npy", NULL},
        {"steps", CLI_INT, &sa.steps, "K", "DDIM steps (default min(50, T)); sample back with the same --steps", NULL},
        {"spacing", CLI_STRING, &sa.spacing, "KIND", "timesteps: leading (default), trailing, linspace, karras or logsnr (as ddpm sample)", NULL},
        {"out", CLI_STRING, &out, "XT.npy", "x_T [N, C, H, W] float32, for ddpm sample --x-init", NULL},
        {"reconstruct", CLI_STRING, &recon, "FILE", "also sample x_T back with DDIM (eta 0, same steps, no clipping) into FILE (.png: each image beside its reconstruction, or .npy) and print the error", NULL},
        {"clip", CLI_FLAG, &clip, NULL, "--reconstruct: clamp the predicted x_0 as sample does by default (the inversion never clamps, so the round trip is then no longer its inverse)", NULL},
        {"class", CLI_INT, &class_id, "K", "conditional models: invert under class K", NULL, -1, 1000000},
        {"context", CLI_STRING, &context, "V", "conditional models: invert under this context vector", NULL},
        {"guidance", CLI_FLOAT, &guidance, "W", "classifier-free guidance during inversion and reconstruction, -1..100 (default 0)", NULL, SAMPLE_GUIDANCE_MIN, SAMPLE_GUIDANCE_MAX},
        {"no-ema", CLI_FLAG, &sa.no_ema, NULL, "use the raw weights instead of the EMA weights", NULL},
        {"batch", CLI_INT, &batch, "B", "images per forward pass (default 100)", NULL, 0, 65536},
        {"scale", CLI_INT, &scale, "S", "--reconstruct .png: pixel scale (default 2 below 32 pixels)", NULL, 0, 64},
        {"nrow", CLI_INT, &nrow, "R", "--reconstruct .png: images per row (default: all, up to 10)", NULL, 0, 10000},
        {"threads", CLI_INT, &threads, "N", "threads (results do not depend on it)", NULL, 1, 4096},
        {"quiet", CLI_FLAG, &quiet, NULL, "print nothing but errors", NULL},
    };
    int rc = cli_parse("invert",
                       "DDIM inversion: runs the deterministic DDIM update forwards from the images to "
                       "x_T and writes it as .npy; `ddpm sample --x-init XT.npy --sampler ddim "
                       "--steps K` (eta 0, the same K and spacing) takes it back to the images, up to "
                       "an error that falls as K grows.",
                       argc, argv, opts, (int)(sizeof opts / sizeof opts[0]));
    if (rc) return rc < 0 ? 0 : rc;
    if (threads > 0) ddpm_set_threads(threads);
    if (!ckpt) return cli_usage_error("invert", "give --ckpt FILE");
    if (!images) return cli_usage_error("invert", "give --images FILE|DIR (the images to invert)");
    if (!out && !recon) return cli_usage_error("invert", "give --out XT.npy (and/or --reconstruct FILE)");
    if (out && (!strstr(out, ".npy")))
        return cli_usage_error("invert", "--out must be a .npy file (got '%s')", out);
    ddpm_checkpoint ck;
    if ((rc = ddpm_checkpoint_load(ckpt, &ck))) return cli_fail("invert", rc);
    ddpm_sample_opts so;
    if ((rc = sampler_args_resolve("invert", &sa, &ck, &so))) {
        ddpm_checkpoint_free(&ck);
        return rc;
    }
    so.step.clip_x0 = 0;
    ddpm_model *m = ck.model;
    const size_t d = m->sample_numel;
    edit_images im = {0};
    float *cond = NULL, *xT = NULL, *back = NULL;
    rc = edit_images_read("images", images, m, &im);
    if (!rc) rc = edit_cond(m, "class", class_id, "context", context, im.n, &cond);
    if (!rc && guidance != 0.0f && !cond)
        rc = ddpm_fail(DDPM_ERR_INVALID, "--guidance needs --class or --context");
    if (!rc && !(xT = malloc(sizeof(float) * d * (size_t)im.n))) rc = ddpm_fail(DDPM_ERR_NOMEM, "out of memory");
    if (!rc) {
        sampler_use_ema(&ck, sa.no_ema, quiet);
        if (!quiet)
            printf("inverting %d images %dx%dx%d with DDIM (%d steps, %s spacing)\n", im.n, m->channels,
                   m->height, m->width, so.steps, ddpm_spacing_name(so.spacing));
        rc = edit_invert_job(m, &ck.schedule, &so, cond, guidance, (size_t)im.n, batch > 0 ? batch : 100,
                             im.x, xT, NULL, NULL);
    }
    if (!rc && out) {
        int64_t shape[4] = {im.n, m->channels, m->height, m->width};
        rc = ddpm_npy_write_f32(out, xT, 4, shape);
        if (!rc && !quiet) cli_wrote(out, "x_T [N, C, H, W] for ddpm sample --x-init");
    }
    if (!rc && recon) {
        if (!(back = malloc(sizeof(float) * d * (size_t)im.n))) rc = ddpm_fail(DDPM_ERR_NOMEM, "out of memory");
        so.step.clip_x0 = clip;
        so.eta = 0.0f;
        if (!rc) rc = job_sample(m, &ck.schedule, &so, cond, guidance, (size_t)im.n, batch > 0 ? batch : 100,
                                 xT, back, NULL, NULL);
        if (!rc) {
            double se = 0, mx = 0;
            for (size_t i = 0; i < d * (size_t)im.n; i++) {
                const double e = fabs((double)back[i] - im.x[i]);
                se += e * e;
                mx = e > mx ? e : mx;
            }
            /* Always printed (even with --quiet): it is what --reconstruct is asked for. */
            printf("round trip (%d steps): rmse %.4g, max abs error %.4g (pixels in [-1, 1])\n", so.steps,
                   sqrt(se / ((double)d * im.n)), mx);
        }
        if (!rc && strstr(recon, ".png")) {
            /* each image beside its reconstruction, pairs_per_row pairs a row */
            const int pairs = nrow > 0 ? nrow : (im.n < 5 ? im.n : 5);
            float *grid = malloc(sizeof(float) * d * (size_t)im.n * 2);
            if (!grid) rc = ddpm_fail(DDPM_ERR_NOMEM, "out of memory");
            for (int i = 0; !rc && i < im.n; i++) {
                memcpy(grid + d * (size_t)(2 * i), im.x + d * (size_t)i, sizeof(float) * d);
                memcpy(grid + d * (size_t)(2 * i + 1), back + d * (size_t)i, sizeof(float) * d);
            }
            if (!rc) rc = ddpm_grid_write_png(recon, grid, 2 * im.n, m->channels, m->height, m->width,
                                              2 * pairs, scale > 0 ? scale : m->height < 32 ? 2 : 1);
            free(grid);
            if (!rc && !quiet) cli_wrote(recon, "each image beside its reconstruction");
        } else if (!rc) {
            int64_t shape[4] = {im.n, m->channels, m->height, m->width};
            rc = ddpm_npy_write_f32(recon, back, 4, shape);
            if (!rc && !quiet) cli_wrote(recon, "reconstructions [N, C, H, W]");
        }
    }
    free(back);
    free(xT);
    free(cond);
    edit_images_free(&im);
    ddpm_checkpoint_free(&ck);
    return cli_fail("invert", rc);
}

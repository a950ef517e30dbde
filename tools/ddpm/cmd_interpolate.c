/* cmd_interpolate.c - `ddpm interpolate`: samples along a path between two x_T (spherical
 * interpolation; the x_T drawn from two seeds or inverted from two images) and, for conditional
 * models, between two conditions (linear in the context vector), written as a strip PNG, a GIF
 * that runs there and back, and optionally .npy. */
#include "edit_images.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* "A,B" -> two unsigned integers. */
static int parse_seeds(const char *s, uint64_t *a, uint64_t *b) {
    char *end;
    *a = strtoull(s, &end, 10);
    if (end == s || *end != ',') return -1;
    const char *p = end + 1;
    *b = strtoull(p, &end, 10);
    return end == p || *end ? -1 : 0;
}

int cmd_interpolate(int argc, char **argv) {
    const char *ckpt = NULL, *seeds = NULL, *images = NULL, *out = NULL, *gif = NULL, *npy = NULL;
    const char *ctx_a = NULL, *ctx_b = NULL;
    int frames = 8, quiet = 0, threads = 0, no_clip = 0, scale = 0, class_a = -1, class_b = -1;
    int gif_delay = 12;
    float guidance = 0.0f;
    sampler_args sa = {.sampler = "ddim", .variance = "small", .spacing = "leading"};
    const cli_opt opts[] = {
        {"ckpt", CLI_STRING, &ckpt, "FILE", "checkpoint written by ddpm train", NULL},
        {"seeds", CLI_STRING, &seeds, "A,B", "the two ends: the x_T of `ddpm sample --seed A` and --seed B (default 0,1)", NULL},
        {"images", CLI_STRING, &images, "A.png,B.png", "the two ends: two images (of the model's size), DDIM-inverted with --steps", NULL},
        {"frames", CLI_INT, &frames, "N", "images along the path, ends included (default 8)", NULL, 2, 1000},
        {"class-a", CLI_INT, &class_a, "K", "conditional models: the class at the first end", NULL, -1, 1000000},
        {"class-b", CLI_INT, &class_b, "K", "... at the last end (default: class-a)", NULL, -1, 1000000},
        {"context-a", CLI_STRING, &ctx_a, "V", "conditional models: the context vector at the first end", NULL},
        {"context-b", CLI_STRING, &ctx_b, "V", "... at the last end (default: context-a)", NULL},
        {"guidance", CLI_FLOAT, &guidance, "W", "classifier-free guidance, -1..100 (default 0)", NULL, SAMPLE_GUIDANCE_MIN, SAMPLE_GUIDANCE_MAX},
        {"sampler", CLI_STRING, &sa.sampler, "NAME", "ddim (default) or any of ddpm sample's samplers", NULL},
        {"steps", CLI_INT, &sa.steps, "K", "sampler (and inversion) steps (default min(50, T))", NULL},
        {"spacing", CLI_STRING, &sa.spacing, "KIND", "timestep spacing (as ddpm sample)", NULL},
        {"eta", CLI_FLOAT, &sa.eta, "E", "DDIM eta, 0..1 (default 0; the same noise for every frame)", NULL, 0, SAMPLE_ETA_MAX},
        {"no-clip", CLI_FLAG, &no_clip, NULL, "do not clamp the predicted x_0", NULL},
        {"no-ema", CLI_FLAG, &sa.no_ema, NULL, "use the raw weights instead of the EMA weights", NULL},
        {"seed", CLI_U64, &sa.seed, "S", "the noise of stochastic samplers (default 0)", NULL},
        {"out", CLI_STRING, &out, "STRIP.png", "the frames in one row", NULL},
        {"gif", CLI_STRING, &gif, "FILE.gif", "the frames as an animation, there and back", NULL},
        {"gif-delay", CLI_INT, &gif_delay, "CS", "GIF frame time in 1/100 s (default 12)", NULL, 1, 10000},
        {"npy", CLI_STRING, &npy, "FILE.npy", "the frames [N, C, H, W]", NULL},
        {"scale", CLI_INT, &scale, "S", "pixel scale (default 2 below 32 pixels)", NULL, 0, 64},
        {"threads", CLI_INT, &threads, "N", "threads (results do not depend on it)", NULL, 1, 4096},
        {"quiet", CLI_FLAG, &quiet, NULL, "print nothing but errors", NULL},
    };
    int rc = cli_parse("interpolate",
                       "Samples along a path between two starting noises x_T (spherical interpolation, "
                       "which keeps the norm of a Gaussian draw, where a straight line would pass "
                       "through low-norm x_T the model never saw) and, for conditional models, "
                       "between two classes or context vectors (linear).",
                       argc, argv, opts, (int)(sizeof opts / sizeof opts[0]));
    if (rc) return rc < 0 ? 0 : rc;
    if (threads > 0) ddpm_set_threads(threads);
    if (!ckpt) return cli_usage_error("interpolate", "give --ckpt FILE");
    if (!out && !gif && !npy) return cli_usage_error("interpolate", "give --out STRIP.png, --gif FILE.gif or --npy FILE.npy");
    if (seeds && images) return cli_usage_error("interpolate", "--seeds and --images exclude each other");
    uint64_t seed_a = 0, seed_b = 1;
    if (seeds && parse_seeds(seeds, &seed_a, &seed_b))
        return cli_usage_error("interpolate", "--seeds needs two integers A,B (got '%s')", seeds);
    char *img_a = NULL, *img_b = NULL;
    if (images) {
        const char *comma = strchr(images, ',');
        if (!comma || comma == images || !comma[1] || strchr(comma + 1, ','))
            return cli_usage_error("interpolate", "--images needs two files A.png,B.png (got '%s')", images);
        img_a = strndup(images, (size_t)(comma - images));
        img_b = strdup(comma + 1);
    }
    if ((class_a >= 0 || class_b >= 0) && (ctx_a || ctx_b)) {
        free(img_a), free(img_b);
        return cli_usage_error("interpolate", "give classes (--class-a/-b) or context vectors (--context-a/-b), not both");
    }
    if (class_b >= 0 && class_a < 0) class_a = class_b;
    if (class_a >= 0 && class_b < 0) class_b = class_a;
    if (ctx_b && !ctx_a) ctx_a = ctx_b;
    if (ctx_a && !ctx_b) ctx_b = ctx_a;

    ddpm_checkpoint ck;
    if ((rc = ddpm_checkpoint_load(ckpt, &ck))) {
        free(img_a), free(img_b);
        return cli_fail("interpolate", rc);
    }
    ddpm_model *m = ck.model;
    const size_t d = m->sample_numel;
    ddpm_sample_opts so;
    sa.clip = !no_clip;
    if ((rc = sampler_args_resolve("interpolate", &sa, &ck, &so))) {
        free(img_a), free(img_b);
        ddpm_checkpoint_free(&ck);
        return rc;
    }
    if (m->height <= 0) rc = ddpm_fail(DDPM_ERR_INVALID, "interpolate makes images; this model makes points");
    float *ca = NULL, *cb = NULL, *cond = NULL, *ends = NULL, *xT = NULL, *x = NULL;
    const int K = m->cond_dim;
    if (!rc) rc = edit_cond(m, "class-a", class_a, "context-a", ctx_a, 1, &ca);
    if (!rc) rc = edit_cond(m, "class-b", class_b, "context-b", ctx_b, 1, &cb);
    if (!rc && guidance != 0.0f && !ca) rc = ddpm_fail(DDPM_ERR_INVALID, "--guidance needs a class or a context");
    if (!rc && (!(ends = malloc(sizeof(float) * 2 * d)) || !(xT = malloc(sizeof(float) * d * frames)) ||
                !(x = malloc(sizeof(float) * d * frames))))
        rc = ddpm_fail(DDPM_ERR_NOMEM, "out of memory");
    if (!rc && ca && !(cond = malloc(sizeof(float) * (size_t)K * frames))) rc = ddpm_fail(DDPM_ERR_NOMEM, "out of memory");
    if (!rc) sampler_use_ema(&ck, sa.no_ema, quiet);
    /* The two ends: the seeds' x_T exactly as `ddpm sample --seed S` draws its first image's, or
     * the DDIM inversions of the two images (under the end's own condition). */
    for (int e = 0; !rc && e < 2; e++) {
        if (images) {
            edit_images im;
            rc = edit_images_read("images", e ? img_b : img_a, m, &im);
            if (!rc && im.n != 1)
                rc = ddpm_fail(DDPM_ERR_INVALID, "--images: %s holds %d images, not one", e ? img_b : img_a, im.n);
            if (!rc) rc = edit_invert_job(m, &ck.schedule, &so, e ? cb : ca, guidance, 1, 1, im.x,
                                          ends + (size_t)e * d, NULL, NULL);
            edit_images_free(&im);
        } else {
            ddpm_randn(e ? seed_b : seed_a, DDPM_STREAM_SAMPLE_INIT, 0, 0, ends + (size_t)e * d, d);
        }
    }
    if (!rc && !quiet)
        printf("interpolating %d frames between %s%s with %s (%d steps)\n", frames,
               images ? "the inverted images " : "the x_T of seeds ", images ? images : seeds ? seeds : "0,1",
               ddpm_sampler_name(so.sampler), ddpm_sample_num_steps(&ck.schedule, &so));
    for (int f = 0; !rc && f < frames; f++) {
        const double w = (double)f / (frames - 1);
        ddpm_slerp(ends, ends + d, w, d, xT + (size_t)f * d);
        for (int k = 0; cond && k < K; k++)
            cond[(size_t)f * K + k] = (float)((1.0 - w) * ca[k] + w * cb[k]);
        /* One frame at a time as item 0, so a stochastic sampler adds the same noise to each. */
        rc = job_sample(m, &ck.schedule, &so, cond ? cond + (size_t)f * K : NULL, guidance, 1, 1,
                        xT + (size_t)f * d, x + (size_t)f * d, NULL, NULL);
    }
    const int sc = scale > 0 ? scale : m->height < 32 ? 2 : 1;
    if (!rc && out) {
        rc = ddpm_grid_write_png(out, x, frames, m->channels, m->height, m->width, frames, sc);
        if (!rc && !quiet) cli_wrote(out, "the interpolation strip");
    }
    if (!rc && npy) {
        int64_t shape[4] = {frames, m->channels, m->height, m->width};
        rc = ddpm_npy_write_f32(npy, x, 4, shape);
        if (!rc && !quiet) cli_wrote(npy, "the frames [N, C, H, W]");
    }
    if (!rc && gif) {
        ddpm_gif *g = NULL;
        for (int k = 0; !rc && k < 2 * frames - 2; k++) {
            const int f = k < frames ? k : 2 * frames - 2 - k; /* there and back */
            uint8_t *px = NULL;
            int w = 0, h = 0;
            rc = ddpm_image_grid(x + (size_t)f * d, 1, m->channels, m->height, m->width, 1, 0, 0, sc * 2, &px, &w, &h);
            if (!rc && !g) rc = ddpm_gif_open(gif, w, h, m->channels == 1 ? 1 : 3, gif_delay, &g);
            if (!rc) rc = ddpm_gif_add_frame(g, px);
            free(px);
        }
        if (g) {
            if (rc) ddpm_gif_discard(g);
            else rc = ddpm_gif_close(g);
        }
        if (!rc && !quiet) cli_wrote(gif, "the interpolation, there and back");
    }
    free(ca), free(cb), free(cond), free(ends), free(xT), free(x);
    free(img_a), free(img_b);
    ddpm_checkpoint_free(&ck);
    return cli_fail("interpolate", rc);
}

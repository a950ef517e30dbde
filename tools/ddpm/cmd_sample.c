/* cmd_sample.c - `ddpm sample`: draw samples from a checkpoint with DDPM or DDIM. */
#include "data_source.h"
#include "points_jobs.h"
#include "sample_driver.h"
#include "dist.h"
#include "model_source.h"
#include "memory_check.h"

#include <cjson/cJSON.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* A diffusers folder: the network, schedule and prediction type from its files; the scheduler's
 * sampler, variance, spacing, clipping and thresholding unless a flag says otherwise. */
static int load_diffusers(const char *dir, int quiet, const int *set, sampler_args *sa,
                          int *clip, ddpm_checkpoint *ck, ddpm_diffusers_sampling *smp_out) {
    ddpm_diffusers_sampling smp = {0};
    int rc = ddpm_diffusers_load(dir, ck, &smp);
    *smp_out = smp;
    if (rc) return cli_fail("sample", rc);
    if (!set[0]) sa->sampler = ddpm_sampler_name(smp.sampler);
    if (!set[1]) sa->variance = ddpm_variance_name(smp.variance);
    if (!set[2]) sa->spacing = ddpm_spacing_name(smp.spacing);
    if (smp.threshold && !sa->threshold) {
        sa->threshold = 1;
        sa->threshold_ratio = smp.threshold_ratio;
        sa->threshold_max = smp.threshold_max;
    }
    *clip = smp.clip_x0;
    if (!quiet)
        printf("diffusers folder %s: UNet2DModel, %d timesteps, %s%s (sampler %s, variance %s, "
               "spacing %s, %s)\n", dir, ck->schedule.n, smp.scheduler[0] ? smp.scheduler : "no scheduler config: DDPMScheduler's defaults",
               strcmp(smp.scheduler, "PNDMScheduler") == 0 ? " (its schedule; PNDM itself is not a ddpm sampler)" : "",
               sa->sampler, sa->variance, sa->spacing, smp.threshold ? "thresholding" : smp.clip_x0 ? "clip_sample" : "no clipping");
    return 0;
}

int cmd_sample(int argc, char **argv) {
    const char *ckpt = NULL, *traj = NULL, *plot = NULL, *diffusers = NULL, *preset = NULL;
    int set_sampler[3] = {0, 0, 0}; /* --sampler, --variance, --spacing given */
    int quiet = 0, no_clip = 0, verbose = 0, threads = 0, allow_large_memory = 0;
    sampler_args sa = {.sampler = "ddpm", .variance = "small", .spacing = "leading",
                       .threshold_ratio = 0.995f, .threshold_max = 1.0f};
    sample_image_args ia = {.n = 1000, .class_id = -1, .jump_length = 10, .jump_n_sample = 10};
    weights_args wa;
    weights_args_init(&wa);
    int set_n = 0;
    const cli_opt sample_opts[] = {
        {"ckpt", CLI_STRING, &ckpt, "FILE", "checkpoint written by ddpm train (carries model, schedule and prediction type)", NULL},
        {"diffusers", CLI_STRING, &diffusers, "DIR", "a diffusers UNet2DModel folder (unet/ + scheduler/, or config.json at the top); its scheduler sets the sampler defaults", NULL},
        {"n", CLI_INT, &ia.n, "N", "number of samples (default 1000; images 40, or one per --per-class, --x-init or --init-image item)", &set_n, 1, SAMPLE_MAX_N},
        {"preset", CLI_STRING, &preset, "NAME", "a tutorial's own sampler settings, under any flag given: course (DeepLearning.AI: its DDIM is --sampler ddim --spacing trailing, its DDPM --variance large; --no-clip) or simple-unet (the from-scratch tutorial: --variance small --no-clip)", NULL},
        {"sampler", CLI_STRING, &sa.sampler, "NAME", "ddpm (every step, default), ddim, dpmpp-2m, dpmpp-2m-sde, dpmpp-3m, euler, euler-ancestral, heun or unipc", &set_sampler[0]},
        {"steps", CLI_INT, &sa.steps, "K", "steps of every sampler but ddpm (default min(50, T))", NULL},
        {"eta", CLI_FLOAT, &sa.eta, "E", "DDIM eta in 0..1: 0 deterministic (default), 1 DDPM-like", NULL, 0, SAMPLE_ETA_MAX},
        {"spacing", CLI_STRING, &sa.spacing, "KIND", "timesteps: leading (default), trailing, linspace, karras (sigmas, rho 7) or logsnr (uniform in log-SNR)", &set_sampler[2]},
        {"solver-type", CLI_STRING, &sa.solver_type, "KIND", "dpmpp-2m(-sde): midpoint (default) or heun; unipc: bh2 (default) or bh1", NULL},
        {"solver-order", CLI_INT, &sa.solver_order, "P", "unipc: the predictor's order 1, 2 (default) or 3", NULL, 1, 3},
        {"final-sigma", CLI_STRING, &sa.final_sigma, "KIND", "dpmpp, euler, heun, unipc: end at zero (default) or sigma-min", NULL},
        {"no-lower-order-final", CLI_FLAG, &sa.no_lower_order_final, NULL, "dpmpp below 15 steps, unipc: keep the full order in the last steps", NULL},
        {"thresholding", CLI_FLAG, &sa.threshold, NULL, "dynamic thresholding of x_0 (Imagen) instead of clipping", NULL},
        {"threshold-ratio", CLI_FLOAT, &sa.threshold_ratio, "P", "thresholding: percentile of |x_0| (default 0.995)", NULL},
        {"threshold-max", CLI_FLOAT, &sa.threshold_max, "M", "thresholding: largest threshold (default 1)", NULL},
        {"variance", CLI_STRING, &sa.variance, "KIND", "DDPM variance: small (posterior, default) or large (beta)", &set_sampler[1]},
        {"no-noise", CLI_FLAG, &sa.no_noise, NULL, "DDPM without the added noise (to see why it is needed)", NULL},
        {"clip", CLI_FLAG, &sa.clip, NULL, "points: clamp the predicted x_0 to [-1, 1] (images always do unless --no-clip)", NULL},
        {"no-clip", CLI_FLAG, &no_clip, NULL, "images: do not clamp the predicted x_0", NULL},
        {"no-ema", CLI_FLAG, &sa.no_ema, NULL, "use the raw weights instead of the EMA weights", NULL},
        {"seed", CLI_U64, &sa.seed, "S", "sampling seed (default 0)", NULL},
        {"out", CLI_STRING, &ia.out, "FILE", "points: .csv or .npy; images: a grid .png or the samples .npy", NULL},
        {"trajectory", CLI_STRING, &traj, "DIR", "points: write the reverse process (10 snapshots and a plot)", NULL},
        {"plot", CLI_STRING, &plot, "FILE.png", "points: scatter plot of the samples over the data", NULL},
        {"class", CLI_INT, &ia.class_id, "K", "images: sample class K (0-based)", NULL, -1, 1000000},
        {"per-class", CLI_INT, &ia.per_class, "K", "images: K samples of every class, one row per class", NULL, 0, 1000000},
        {"context", CLI_STRING, &ia.context, "V", "images: a context vector for every sample, e.g. 1,0,0.6,0,0", NULL},
        {"context-file", CLI_STRING, &ia.context_file, "FILE.npy", "images: one context vector per sample [N, K]", NULL},
        {"guidance", CLI_FLOAT, &ia.guidance, "W", "classifier-free guidance: eps = (1 + W) eps_cond - W eps_uncond, W in -1..100 (default 0)", NULL, SAMPLE_GUIDANCE_MIN, SAMPLE_GUIDANCE_MAX},
        {"nrow", CLI_INT, &ia.nrow, "R", "images per grid row", NULL, 0, 10000},
        {"scale", CLI_INT, &ia.scale, "S", "grid pixel scale (default 2 below 32 pixels)", NULL, 0, 64},
        {"npy", CLI_STRING, &ia.npy, "FILE", "images: also write the samples [N, C, H, W] as .npy", NULL},
        {"gif", CLI_STRING, &ia.gif, "FILE.gif", "images: the denoising process as an animated GIF", NULL},
        {"gif-every", CLI_INT, &ia.gif_every, "K", "a GIF frame every K steps (default: 25 frames)", NULL, 0, 1000000},
        {"x-init", CLI_STRING, &ia.x_init, "FILE.npy", "start from this x_T: images [N, C, H, W], points [N, D] (N from it unless -n)", NULL},
        {"init-image", CLI_STRING, &ia.init_image, "FILE|DIR", "images: edit these (an image of the model's size, a folder of them or a .npy): img2img, or inpainting with --mask", NULL},
        {"strength", CLI_DOUBLE, &ia.strength, "S", "img2img: 0 keeps the image, 1 is pure noise; runs the last floor(S K) of the K steps (default 0.8)", &ia.set_strength, 0, 1},
        {"mask", CLI_STRING, &ia.mask, "MASK.png", "inpaint --init-image with RePaint (--sampler ddpm): white = keep, black = regenerate", NULL},
        {"jump-length", CLI_INT, &ia.jump_length, "J", "RePaint: steps each resampling jump goes back up (default 10)", &ia.set_jump, 1, 100000},
        {"jump-n-sample", CLI_INT, &ia.jump_n_sample, "R", "RePaint: passes over each jump (default 10; 1 = no resampling)", &ia.set_jump, 1, 100000},
        {"batch", CLI_INT, &ia.batch, "B", "images per forward pass (default 100)", NULL, 0, 65536},
        {"quiet", CLI_FLAG, &quiet, NULL, "print nothing but errors", NULL},
        {"threads", CLI_INT, &threads, "N", "threads (default: OMP_NUM_THREADS or every core); results do not depend on it", NULL, 1, 4096},
        {"verbose", CLI_FLAG, &verbose, NULL, "print the sampler's timesteps and noise levels, and the memory estimate", NULL},
        {"allow-large-memory", CLI_FLAG, &allow_large_memory, NULL, "start even if the memory estimate exceeds the memory available", NULL},
    };
    enum { N_SAMPLE = sizeof sample_opts / sizeof sample_opts[0] };
    cli_opt opts[N_SAMPLE + WEIGHTS_OPTS_N + MODEL_FLAGS_N];
    memcpy(opts, sample_opts, sizeof sample_opts);
    weights_args_options(&wa, opts + N_SAMPLE);
    int rc = cli_parse("sample",
                       "Draws samples from a trained model with DDPM, DDIM, DPM-Solver++, Euler or Heun. With --weights (a plain "
                       "state dict), --model and the network flags after it say which network it is.",
                       argc, argv, opts, (int)(sizeof opts / sizeof opts[0]));
    if (rc) return rc < 0 ? 0 : rc;
    if (threads > 0) ddpm_set_threads(threads);
    if ((ckpt != NULL) + (wa.weights != NULL) + (diffusers != NULL) != 1)
        return cli_usage_error("sample", "give one of --ckpt FILE, --diffusers DIR or --weights FILE with --model");
    if (ia.n < 1) return cli_usage_error("sample", "-n must be at least 1");
    /* outputs that cannot be written are refused before sampling (which can take minutes) */
    if ((ia.out && (rc = cli_check_out_file("sample", "--out", ia.out))) ||
        (ia.npy && (rc = cli_check_out_file("sample", "--npy", ia.npy))) ||
        (ia.gif && (rc = cli_check_out_file("sample", "--gif", ia.gif))) ||
        (plot && (rc = cli_check_out_file("sample", "--plot", plot))))
        return rc;

    ddpm_checkpoint ck;
    int folder_clip = 1;
    ddpm_diffusers_sampling smp = {0};
    if (ckpt) {
        if ((rc = ddpm_checkpoint_load(ckpt, &ck))) return cli_fail("sample", rc);
    } else if (diffusers) {
        if ((rc = load_diffusers(diffusers, quiet, set_sampler, &sa, &folder_clip, &ck, &smp))) return rc;
    } else if ((rc = weights_args_load("sample", &wa, &ck))) {
        return rc;
    }
    /* the tutorials' samplers, as their code runs them (tests/test_tutorial_recipes.c) */
    if (preset && strcmp(preset, "course") == 0) {
        if (!set_sampler[1]) sa.variance = "large";   /* sample_ddpm adds sqrt(beta_t) z */
        if (!set_sampler[2]) sa.spacing = "trailing"; /* sample_ddim: range(T, 0, -T // n) */
        no_clip = 1;
    } else if (preset && strcmp(preset, "simple-unet") == 0) {
        if (!set_sampler[1]) sa.variance = "small"; /* sample_timestep: posterior_variance */
        no_clip = 1;
    } else if (preset) {
        ddpm_checkpoint_free(&ck);
        return cli_usage_error("sample", "unknown --preset '%s' (expected course or simple-unet)", preset);
    }
    const int images = ck.model->height > 0;
    if (images) sa.clip = !no_clip && folder_clip;
    ddpm_sample_opts so;
    if ((rc = sampler_args_resolve("sample", &sa, &ck, &so))) {
        ddpm_checkpoint_free(&ck);
        return rc;
    }
    if (diffusers) ddpm_diffusers_sample_opts(&smp, &so); /* the scheduler's own rules */
    if (verbose && (rc = sampler_print_timesteps(&ck.schedule, &so))) {
        ddpm_checkpoint_free(&ck);
        return cli_fail("sample", rc);
    }
    sampler_use_ema(&ck, sa.no_ema, quiet);
    /* The memory the samples (and a GIF's frames of all of them) will take, before sampling */
    {
        const ddpm_model *m = ck.model;
        const size_t n_all = !images ? (size_t)ia.n
                             : ia.per_class > 0 && m->cond_dim > 0 ? (size_t)ia.per_class * (size_t)m->cond_dim
                             : set_n ? (size_t)ia.n : 40;
        size_t frames = 0;
        if (images && ia.gif) {
            const int steps = ddpm_sample_num_steps(&ck.schedule, &so);
            const int every = ia.gif_every > 0 ? (ia.gif_every < steps ? ia.gif_every : steps) : (steps + 24) / 25;
            frames = every > 0 ? (size_t)((steps + every - 1) / every) : 0;
        }
        memory_need need;
        rc = memory_need_sample(ck.model, n_all, images ? (ia.batch > 0 ? ia.batch : 100) : (int)n_all,
                                frames, &need);
        if (!rc) rc = dist_agree(memory_check(&need, allow_large_memory,
                                              "sample fewer (-n), or without --gif"));
        if (rc) {
            ddpm_checkpoint_free(&ck);
            return cli_fail("sample", rc);
        }
        if (verbose && dist_lead()) memory_print(&need);
    }
    if (images) {
        if (!set_n) ia.n = 40;
        ia.n_given = set_n;
        ia.quiet = quiet || !dist_lead();
        rc = sample_images(&ia, &ck, &so);
        ddpm_checkpoint_free(&ck);
        return rc;
    }
    int n = ia.n;
    const char *out = ia.out;
    if (!out) {
        ddpm_checkpoint_free(&ck);
        return cli_usage_error("sample", "--out FILE is required (.csv or .npy)");
    }
    const char *ext = strrchr(out, '.');
    if (!ext || (strcmp(ext, ".csv") != 0 && strcmp(ext, ".npy") != 0)) {
        ddpm_checkpoint_free(&ck);
        return cli_usage_error("sample", "--out must end in .csv or .npy (got '%s')", out);
    }
    ddpm_model *m = ck.model;
    const size_t d = m->sample_numel;
    ddpm_points samples = {0};
    job_trajectory tj = {0};
    /* points from a given x_T [N, D] (N from it unless -n says it) */
    float *x_init = NULL;
    if (ia.x_init) {
        ddpm_npy xi = {0};
        rc = ddpm_npy_read(ia.x_init, &xi);
        if (!rc && !set_n && xi.ndim == 2 && xi.shape[0] >= 1 && xi.shape[0] <= SAMPLE_MAX_N)
            n = (int)xi.shape[0];
        if (!rc && (xi.ndim != 2 || xi.shape[0] != n || xi.shape[1] != (int64_t)d))
            rc = ddpm_fail(DDPM_ERR_INVALID, "%s: x_T must be an array [%d, %zu] (N x D)", ia.x_init, n, d);
        if (!rc && !(x_init = malloc(sizeof(float) * (size_t)n * d))) rc = ddpm_fail(DDPM_ERR_NOMEM, "out of memory");
        if (!rc) rc = ddpm_npy_to_f32(&xi, x_init);
        ddpm_npy_free(&xi);
        if (rc) {
            free(x_init);
            ddpm_checkpoint_free(&ck);
            return cli_fail("sample", rc);
        }
    }
    rc = ddpm_points_init(&samples, (size_t)n, (int)d);
    if (!rc && traj) {
        rc = job_trajectory_init(&tj, 10, (size_t)n, (int)d);
        tj.n = (size_t)n;
    }
    if (!rc) {
        if (!quiet)
            printf("sampling %d points with %s (%d steps)\n", n, ddpm_sampler_name(so.sampler),
                   ddpm_sample_num_steps(&ck.schedule, &so));
        if (dist_size() > 1 && traj) {
            rc = ddpm_fail(DDPM_ERR_INVALID, "--trajectory is written by one process: run it without mpirun");
        } else {
            /* the ranks of a job each take a share of the indices; rank 0 gathers and writes */
            size_t lo, hi;
            dist_share((size_t)n, &lo, &hi);
            ddpm_sample_opts sl = so;
            sl.first_item = so.first_item + lo;
            if (hi > lo)
                rc = job_sample(m, &ck.schedule, &sl, NULL, 0.0f, hi - lo, (int)(hi - lo),
                                x_init ? x_init + lo * d : NULL, samples.x + lo * d, traj ? job_trajectory_progress : NULL, &tj);
            rc = dist_agree(rc);
            if (!rc) rc = dist_gather_rows(samples.x, (size_t)n, d);
        }
        if (!dist_lead()) {
            quiet = 1;
            plot = NULL;
            out = NULL;
        }
    }
    if (!rc && out) {
        if (strcmp(ext, ".csv") == 0) {
            rc = ddpm_points_write_csv(out, &samples);
        } else {
            int64_t shape[2] = {n, (int64_t)d};
            rc = ddpm_npy_write_f32(out, samples.x, 2, shape);
        }
        if (!rc && !quiet) cli_wrote(out, "samples");
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
        if (!rc && !quiet) cli_wrote(plot, "samples over the data");
    }
    job_trajectory_free(&tj);
    free(x_init);
    ddpm_points_free(&samples);
    ddpm_checkpoint_free(&ck);
    return cli_fail("sample", rc);
}

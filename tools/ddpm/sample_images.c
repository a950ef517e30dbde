/* sample_images.c - the image half of `ddpm sample`: conditioning (class, context vector, file),
 * classifier-free guidance, grids, .npy, the denoising GIF and a given x_T. */
#include "edit_images.h"
#include "sample_driver.h"
#include "dist.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    float *frames;       /* [n_frames, N, d] */
    int every, n_frames;
    int k_offset;        /* img2img: the steps skipped (progress counts from there) */
    size_t n_total, offset, chunk, d;
} gif_recorder;

static int record_frame(void *ctx, int k, int steps, int t, const float *x, const float *x0) {
    (void)t, (void)x0;
    gif_recorder *g = ctx;
    k -= g->k_offset, steps -= g->k_offset;
    if (k % g->every != 0 && k != steps) return 0;
    const int f = (k + g->every - 1) / g->every - 1;
    if (f < 0 || f >= g->n_frames) return 0;
    memcpy(g->frames + ((size_t)f * g->n_total + g->offset) * g->d, x, sizeof(float) * g->chunk * g->d);
    return 0;
}

/* Parses "1,0,0.6" into exactly n floats. */
static int parse_vector(const char *s, float *out, int n) {
    int k = 0;
    const char *p = s;
    while (*p) {
        char *end;
        double v = strtod(p, &end);
        if (end == p || k >= n) return -1;
        out[k++] = (float)v;
        if (*end == ',') end++;
        else if (*end) return -1;
        p = end;
    }
    return k == n ? 0 : -1;
}

int sample_images(const sample_image_args *a, ddpm_checkpoint *ck, const ddpm_sample_opts *so_in) {
    ddpm_model *m = ck->model;
    const size_t d = m->sample_numel;
    const int K = m->cond_dim;
    int n = a->n, rc = DDPM_OK;
    if (!a->out && !a->npy && !a->gif)
        return cli_usage_error("sample", "give --out FILE.png|FILE.npy, --npy or --gif");
    if ((a->class_id >= 0 || a->context || a->context_file || a->per_class > 0) && K == 0)
        return cli_usage_error("sample", "this model is unconditional: --class, --context and --per-class do not apply");
    if (a->class_id >= K && K > 0)
        return cli_usage_error("sample", "--class %d is out of range: the model has %d classes (0..%d)", a->class_id, K, K - 1);
    if (a->guidance != 0.0f && K == 0)
        return cli_usage_error("sample", "--guidance needs a conditional model");
    ddpm_npy ctx_file = {0}, xinit = {0};
    float *cond = NULL, *x_init = NULL, *mask = NULL;
    edit_images init = {0};
    if (a->per_class > 0) {
        if ((long long)a->per_class * K > SAMPLE_MAX_N)
            return cli_usage_error("sample", "--per-class %d x %d classes is more than %d samples", a->per_class, K, SAMPLE_MAX_N);
        n = a->per_class * K;
    }
    if (a->context_file) {
        if ((rc = ddpm_npy_read(a->context_file, &ctx_file))) return cli_fail("sample", rc);
        if (ctx_file.ndim != 2 || ctx_file.shape[1] != K) {
            ddpm_npy_free(&ctx_file);
            return cli_usage_error("sample", "%s must be an array [N, %d] of context vectors", a->context_file, K);
        }
        if (ctx_file.shape[0] > SAMPLE_MAX_N) {
            ddpm_npy_free(&ctx_file);
            return cli_usage_error("sample", "%s holds more than %d context vectors", a->context_file, SAMPLE_MAX_N);
        }
        n = (int)ctx_file.shape[0];
    }
    if (!rc && a->x_init) {
        if ((rc = ddpm_npy_read(a->x_init, &xinit))) goto done;
        /* N from the array's first dimension unless -n (or a class or context count) says it */
        if (xinit.ndim == 4 && !a->n_given && a->per_class <= 0 && !a->context_file &&
            xinit.shape[0] >= 1 && xinit.shape[0] <= SAMPLE_MAX_N)
            n = (int)xinit.shape[0];
        if (xinit.ndim != 4 || xinit.shape[0] != n || xinit.shape[1] != m->channels ||
            xinit.shape[2] != m->height || xinit.shape[3] != m->width) {
            rc = ddpm_fail(DDPM_ERR_INVALID, "%s: x_T must be an array [%d, %d, %d, %d] (N x C x H x W)",
                           a->x_init, n, m->channels, m->height, m->width);
            goto done;
        }
        x_init = malloc(sizeof(float) * (size_t)n * d);
        if (!x_init) rc = ddpm_fail(DDPM_ERR_NOMEM, "out of memory");
        else rc = ddpm_npy_to_f32(&xinit, x_init);
        if (rc) goto done;
    }
    edit_opts eo = {.mode = a->mask ? EDIT_REPAINT : EDIT_IMG2IMG,
                    .strength = a->set_strength ? a->strength : 0.8,
                    .jump_length = a->jump_length, .jump_n_sample = a->jump_n_sample};
    if (!rc && (rc = edit_check_args(a, so_in))) goto done;
    if (!rc && a->init_image) {
        if ((rc = edit_images_read("init-image", a->init_image, m, &init))) goto done;
        if (!a->n_given && a->per_class <= 0 && !a->context_file) n = init.n;
        if (n != init.n && init.n != 1) {
            rc = ddpm_fail(DDPM_ERR_INVALID, "--init-image %s holds %d images but %d samples are "
                           "asked for (-n, --per-class or --context-file)", a->init_image, init.n, n);
            goto done;
        }
        if (a->mask && (rc = edit_mask_read(a->mask, m, &mask))) goto done;
        eo.mask = mask;
    }
    if (n < 1) {
        rc = ddpm_fail(DDPM_ERR_INVALID, "nothing to sample (n = %d)", n);
        goto done;
    }
    if (K > 0) {
        cond = calloc((size_t)n * K, sizeof(float));
        float *vec = calloc((size_t)K, sizeof(float));
        if (!cond || !vec) rc = ddpm_fail(DDPM_ERR_NOMEM, "out of memory");
        else if (a->context && parse_vector(a->context, vec, K)) {
            free(vec);
            rc = ddpm_fail(DDPM_ERR_INVALID, "--context needs %d comma-separated numbers (got '%s')", K, a->context);
            goto done;
        }
        for (int i = 0; !rc && i < n; i++) {
            float *c = cond + (size_t)i * K;
            if (a->per_class > 0) c[i / a->per_class] = 1.0f;
            else if (a->class_id >= 0) c[a->class_id] = 1.0f;
            else if (a->context) memcpy(c, vec, sizeof(float) * K);
        }
        if (!rc && a->context_file) rc = ddpm_npy_to_f32(&ctx_file, cond);
        free(vec);
        /* no class and no context: unconditional samples (zero rows) */
        if (!rc && a->class_id < 0 && !a->context && !a->context_file && a->per_class <= 0) {
            free(cond);
            cond = NULL;
        }
    }
    /* A grid (PNG or GIF) too large to write is refused before sampling, not after it (issue
     * 11: -n 100000 --gif sampled for 69 s first); the size as ddpm_image_grid computes it. */
    if (!rc && ((a->out && strstr(a->out, ".png")) || a->gif)) {
        const int nrow0 = a->nrow > 0 ? a->nrow : a->per_class > 0 ? a->per_class : (n >= 10 ? 10 : n);
        const int scale0 = a->scale > 0 ? a->scale : m->height < 32 ? 2 : 1;
        const long long ncol = nrow0 < n ? nrow0 : n, rows = (n + ncol - 1) / ncol;
        const long long gw = ncol * ((long long)m->width * scale0 + 2) + 2;
        const long long gh = rows * ((long long)m->height * scale0 + 2) + 2;
        if (gw > 65535 || gh > 65535)
            rc = ddpm_fail(DDPM_ERR_INVALID,
                           "%s: a grid of %d samples in rows of %lld is %lld x %lld pixels, more than "
                           "65535 a side: raise --nrow, or write --npy instead",
                           a->gif && !(a->out && strstr(a->out, ".png")) ? a->gif : a->out, n, ncol,
                           gw, gh);
    }
    float *x = rc ? NULL : malloc(sizeof(float) * (size_t)n * d);
    if (!rc && !x) rc = ddpm_fail(DDPM_ERR_NOMEM, "out of memory");
    int steps = ddpm_sample_num_steps(&ck->schedule, so_in);
    gif_recorder gr = {0};
    char edit_what[160] = "";
    if (!rc && init.x) rc = edit_describe(&ck->schedule, so_in, &eo, &steps, &gr.k_offset, edit_what, sizeof edit_what);
    if (!rc && init.x && a->gif && steps == gr.k_offset)
        rc = ddpm_fail(DDPM_ERR_INVALID, "--gif: strength %g runs none of the %d steps", eo.strength, steps);
    if (!rc && a->gif) {
        steps -= gr.k_offset;
        gr.every = a->gif_every > 0 ? (a->gif_every < steps ? a->gif_every : steps) : (steps + 24) / 25;
        gr.n_frames = (steps + gr.every - 1) / gr.every;
        gr.n_total = (size_t)n;
        gr.d = d;
        gr.frames = malloc(sizeof(float) * (size_t)gr.n_frames * n * d);
        if (!gr.frames) rc = ddpm_fail(DDPM_ERR_NOMEM, "out of memory for %d GIF frames", gr.n_frames);
    }
    if (!rc) {
        if (!a->quiet && init.x)
            printf("editing %d images %dx%dx%d: %s%s\n", n, m->channels, m->height, m->width, edit_what,
                   cond ? (a->guidance != 0.0f ? ", conditional with guidance" : ", conditional") : "");
        else if (!a->quiet)
            printf("sampling %d images %dx%dx%d with %s (%d steps)%s%s\n", n, m->channels, m->height,
                   m->width, ddpm_sampler_name(so_in->sampler), steps,
                   cond ? (a->guidance != 0.0f ? ", conditional with guidance" : ", conditional") : "",
                   x_init ? ", from the given x_T" : "");
        /* Chunks of --batch images; each image's noise depends only on its index. The ranks of
         * a job each take a share of the indices; rank 0 gathers them and writes. */
        const int B = a->batch > 0 ? a->batch : 100;
        size_t lo, hi;
        dist_share((size_t)n, &lo, &hi);
        for (int start = (int)lo; !rc && start < (int)hi; start += B) {
            const int b = (int)hi - start < B ? (int)hi - start : B;
            ddpm_sample_opts so = *so_in;
            so.first_item = (uint64_t)start;
            gr.offset = (size_t)start;
            gr.chunk = (size_t)b;
            if (init.x)
                rc = edit_job(m, &ck->schedule, &so, &eo, cond ? cond + (size_t)start * K : NULL,
                              a->guidance, (size_t)b, b, init.n == 1 ? init.x : init.x + (size_t)start * d,
                              init.n == 1, x + (size_t)start * d, a->gif ? record_frame : NULL, &gr);
            else
                rc = job_sample(m, &ck->schedule, &so, cond ? cond + (size_t)start * K : NULL,
                                a->guidance, (size_t)b, b, x_init ? x_init + (size_t)start * d : NULL,
                                x + (size_t)start * d, a->gif ? record_frame : NULL, &gr);
            if (!a->quiet && n > B) fprintf(stderr, "\r%d/%d images", start + b - (int)lo, (int)(hi - lo));
        }
        if (!a->quiet && n > B) fputc('\n', stderr);
        rc = dist_agree(rc);
        if (!rc) rc = dist_gather_rows(x, (size_t)n, d);
        for (int f = 0; !rc && a->gif && f < gr.n_frames; f++)
            rc = dist_gather_rows(gr.frames + (size_t)f * n * d, (size_t)n, d);
    }
    const int writer = dist_lead(); /* rank 0 writes */
    const int nrow = a->nrow > 0 ? a->nrow : a->per_class > 0 ? a->per_class : (n >= 10 ? 10 : n);
    const int scale = a->scale > 0 ? a->scale : m->height < 32 ? 2 : 1;
    if (!rc && writer && a->out && strstr(a->out, ".png")) {
        rc = ddpm_grid_write_png(a->out, x, n, m->channels, m->height, m->width, nrow, scale);
        if (!rc && !a->quiet) cli_wrote(a->out, "sample grid");
    }
    const char *npy = a->npy ? a->npy : (a->out && strstr(a->out, ".npy") ? a->out : NULL);
    if (!rc && writer && npy) {
        int64_t shape[4] = {n, m->channels, m->height, m->width};
        rc = ddpm_npy_write_f32(npy, x, 4, shape);
        if (!rc && !a->quiet) cli_wrote(npy, "samples [N, C, H, W] in [-1, 1]");
    }
    if (!rc && writer && a->gif) {
        uint8_t *px = NULL;
        int w = 0, h = 0;
        ddpm_gif *g = NULL;
        for (int f = 0; !rc && f < gr.n_frames; f++) {
            rc = ddpm_image_grid(gr.frames + (size_t)f * n * d, n, m->channels, m->height, m->width,
                                 nrow, 2, 0, scale, &px, &w, &h);
            if (!rc && f == 0) rc = ddpm_gif_open(a->gif, w, h, m->channels == 1 ? 1 : 3, 8, &g);
            if (!rc) rc = ddpm_gif_add_frame(g, px);
            free(px);
            px = NULL;
        }
        if (g) {
            if (rc) ddpm_gif_discard(g);
            else rc = ddpm_gif_close(g);
        }
        if (!rc && !a->quiet) {
            char what[96];
            snprintf(what, sizeof what, "the denoising process, %d frames (every %d steps)", gr.n_frames, gr.every);
            cli_wrote(a->gif, what);
        }
    }
    free(gr.frames);
    free(x);
done:
    free(cond);
    free(x_init);
    free(mask);
    edit_images_free(&init);
    ddpm_npy_free(&ctx_file);
    ddpm_npy_free(&xinit);
    return cli_fail("sample", rc);
}

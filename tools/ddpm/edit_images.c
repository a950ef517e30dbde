/* edit_images.c - the editing modes' shared parts: init images (file, folder or .npy) and RePaint
 * masks read and checked against the model, and img2img, RePaint and DDIM inversion run in
 * chunks over the library's functions. */
#include "edit_images.h"

#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

/* ---- reading -------------------------------------------------------------------------------- */

/* An image file must have the model's size and, for a gray model, no colour: editing an image of
 * another size would first have to resize it, which the user should see and choose. */
static int check_image(const char *flag, const char *path, const ddpm_model *m) {
    int w, h, c;
    int rc = ddpm_image_info(path, &w, &h, &c);
    if (rc) return rc;
    if (w != m->width || h != m->height)
        return ddpm_fail(DDPM_ERR_INVALID, "--%s %s: the image is %dx%d but the model takes %dx%d "
                         "images", flag, path, w, h, m->width, m->height);
    if (m->channels == 1 && c >= 3)
        return ddpm_fail(DDPM_ERR_INVALID, "--%s %s: the image has colour but the model takes gray "
                         "images (1 channel)", flag, path);
    return DDPM_OK;
}

static int cmp_str(const void *a, const void *b) {
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* The image files directly in dir, sorted. */
static int list_dir(const char *flag, const char *dir, char ***out, int *n) {
    DIR *dh = opendir(dir);
    if (!dh) return ddpm_fail(DDPM_ERR_IO, "--%s %s: cannot open directory: %s", flag, dir, strerror(errno));
    char **names = NULL;
    int k = 0, cap = 0, rc = DDPM_OK;
    struct dirent *e;
    while (!rc && (e = readdir(dh)) != NULL) {
        if (e->d_name[0] == '.' || !ddpm_image_ext_supported(e->d_name)) continue;
        char full[4096];
        if (snprintf(full, sizeof full, "%s/%s", dir, e->d_name) >= (int)sizeof full) {
            rc = ddpm_fail(DDPM_ERR_INVALID, "--%s %s/%s: path too long", flag, dir, e->d_name);
            break;
        }
        struct stat st;
        if (stat(full, &st) != 0 || !S_ISREG(st.st_mode)) continue;
        if (k == cap) {
            cap = cap ? 2 * cap : 16;
            char **nn = realloc(names, sizeof *nn * (size_t)cap);
            if (!nn) {
                rc = ddpm_fail(DDPM_ERR_NOMEM, "out of memory listing %s", dir);
                break;
            }
            names = nn;
        }
        if (!(names[k] = strdup(full))) rc = ddpm_fail(DDPM_ERR_NOMEM, "out of memory");
        else k++;
    }
    closedir(dh);
    if (!rc && k == 0)
        rc = ddpm_fail(DDPM_ERR_INVALID, "--%s %s: no images in the folder (looked for .png .jpg "
                       ".bmp .ppm ...)", flag, dir);
    if (rc) {
        for (int i = 0; i < k; i++) free(names[i]);
        free(names);
        return rc;
    }
    qsort(names, (size_t)k, sizeof *names, cmp_str);
    *out = names;
    *n = k;
    return DDPM_OK;
}

static int read_npy(const char *flag, const char *path, const ddpm_model *m, edit_images *out) {
    ddpm_image_dataset ds;
    int rc = ddpm_dataset_npy(path, NULL, &ds);
    if (rc) return rc;
    if (ds.c != m->channels || ds.h != m->height || ds.w != m->width) {
        rc = ddpm_fail(DDPM_ERR_INVALID, "--%s %s: the images are %dx%dx%d (C x H x W) but the "
                       "model takes %dx%dx%d", flag, path, ds.c, ds.h, ds.w, m->channels,
                       m->height, m->width);
        ddpm_dataset_free(&ds);
        return rc;
    }
    out->x = ds.x;
    out->n = ds.n;
    ds.x = NULL;
    ddpm_dataset_free(&ds);
    return DDPM_OK;
}

int edit_images_read(const char *flag, const char *path, const ddpm_model *m, edit_images *out) {
    memset(out, 0, sizeof *out);
    if (m->height <= 0)
        return ddpm_fail(DDPM_ERR_INVALID, "--%s: this model makes points, not images", flag);
    const char *ext = strrchr(path, '.');
    if (ext && strcmp(ext, ".npy") == 0) return read_npy(flag, path, m, out);
    struct stat st;
    if (stat(path, &st) != 0)
        return ddpm_fail(DDPM_ERR_IO, "--%s %s: %s", flag, path, strerror(errno));
    char **names = NULL, *one[1] = {(char *)path};
    int n = 1, rc = DDPM_OK;
    if (S_ISDIR(st.st_mode) && (rc = list_dir(flag, path, &names, &n))) return rc;
    char **list = names ? names : one;
    const size_t d = m->sample_numel;
    float *x = malloc(sizeof(float) * d * (size_t)n);
    if (!x) rc = ddpm_fail(DDPM_ERR_NOMEM, "out of memory for %d images", n);
    for (int i = 0; !rc && i < n; i++) {
        rc = check_image(flag, list[i], m);
        if (!rc) rc = ddpm_image_read_hw(list[i], m->height, m->width, m->channels, x + (size_t)i * d);
    }
    for (int i = 0; names && i < n; i++) free(names[i]);
    free(names);
    if (rc) {
        free(x);
        return rc;
    }
    out->x = x;
    out->n = n;
    return DDPM_OK;
}

void edit_images_free(edit_images *e) {
    free(e->x);
    memset(e, 0, sizeof *e);
}

int edit_mask_read(const char *path, const ddpm_model *m, float **mask) {
    *mask = NULL;
    int w, h, c;
    int rc = ddpm_image_info(path, &w, &h, &c);
    if (rc) return rc;
    if (w != m->width || h != m->height)
        return ddpm_fail(DDPM_ERR_INVALID, "--mask %s: the mask is %dx%d but the images are %dx%d",
                         path, w, h, m->width, m->height);
    const size_t hw = (size_t)h * (size_t)w;
    float *gray = malloc(sizeof(float) * hw), *out = malloc(sizeof(float) * hw * (size_t)m->channels);
    if (!gray || !out) rc = ddpm_fail(DDPM_ERR_NOMEM, "out of memory");
    if (!rc) rc = ddpm_image_read_hw(path, m->height, m->width, 1, gray);
    if (!rc) {
        size_t kept = 0;
        for (size_t i = 0; i < hw; i++) kept += gray[i] > 0.0f;
        for (int ch = 0; ch < m->channels; ch++)
            for (size_t i = 0; i < hw; i++) out[(size_t)ch * hw + i] = gray[i] > 0.0f ? 1.0f : 0.0f;
        if (kept == hw)
            rc = ddpm_fail(DDPM_ERR_INVALID, "--mask %s: the mask is white everywhere, so nothing "
                           "would be regenerated (white = keep, black = regenerate)", path);
    }
    free(gray);
    if (rc) {
        free(out);
        return rc;
    }
    *mask = out;
    return DDPM_OK;
}

/* ---- the editing flags of `ddpm sample` ------------------------------------------------------- */

int edit_check_args(const sample_image_args *a, const ddpm_sample_opts *so) {
    if (a->mask && !a->init_image)
        return ddpm_fail(DDPM_ERR_INVALID, "--mask needs --init-image (the image to inpaint)");
    if (a->set_strength && !a->init_image)
        return ddpm_fail(DDPM_ERR_INVALID, "--strength needs --init-image (the image to edit)");
    if (a->set_jump && !a->mask)
        return ddpm_fail(DDPM_ERR_INVALID, "--jump-length and --jump-n-sample need --mask (RePaint)");
    if (!a->init_image) return DDPM_OK;
    if (a->x_init)
        return ddpm_fail(DDPM_ERR_INVALID, "--init-image and --x-init exclude each other");
    if (a->mask && a->set_strength)
        return ddpm_fail(DDPM_ERR_INVALID, "--strength does not apply with --mask: RePaint "
                               "regenerates the masked-out region from pure noise");
    if (a->mask && so->sampler != DDPM_SAMPLER_DDPM)
        return ddpm_fail(DDPM_ERR_INVALID, "--mask (RePaint inpainting) runs with --sampler ddpm "
                               "(got %s)", ddpm_sampler_name(so->sampler));
    if (!(a->strength >= 0.0 && a->strength <= 1.0))
        return ddpm_fail(DDPM_ERR_INVALID, "--strength must be in [0, 1] (got %g)", a->strength);
    return DDPM_OK;
}

int edit_describe(const ddpm_schedule *s, const ddpm_sample_opts *so, const edit_opts *e,
                  int *steps, int *k_offset, char *what, size_t what_len) {
    *k_offset = 0;
    if (e->mode == EDIT_REPAINT) {
        int *sched = NULL, len = 0, down = 0;
        int rc = ddpm_repaint_schedule(s->n - s->t0, e->jump_length, e->jump_n_sample, &sched, &len);
        if (rc) return rc;
        for (int j = 0; j + 1 < len; j++) down += sched[j + 1] < sched[j];
        free(sched);
        *steps = len - 1;
        snprintf(what, what_len, "RePaint with ddpm, jump length %d, %d samples: %d moves, %d "
                 "network evaluations", e->jump_length, e->jump_n_sample, len - 1, down);
        return DDPM_OK;
    }
    int skip, t_start;
    int rc = ddpm_img2img_start(s, so, e->strength, &skip, &t_start);
    if (rc) return rc;
    *steps = ddpm_sample_num_steps(s, so);
    *k_offset = skip;
    if (t_start < 0)
        snprintf(what, what_len, "img2img with %s, strength %g: none of the %d steps (the images "
                 "come back as they are)", ddpm_sampler_name(so->sampler), e->strength, *steps);
    else
        snprintf(what, what_len, "img2img with %s, strength %g: the last %d of %d steps, from "
                 "t = %d%s", ddpm_sampler_name(so->sampler), e->strength, *steps - skip, *steps,
                 t_start, skip == 0 ? " (pure noise)" : "");
    return DDPM_OK;
}

int edit_cond(const ddpm_model *m, const char *class_flag, int class_id, const char *context_flag,
              const char *context, int n, float **cond) {
    *cond = NULL;
    const int K = m->cond_dim;
    if (class_id < 0 && !context) return DDPM_OK;
    if (K == 0)
        return ddpm_fail(DDPM_ERR_INVALID, "--%s: this model is unconditional",
                         class_id >= 0 ? class_flag : context_flag);
    if (class_id >= K)
        return ddpm_fail(DDPM_ERR_INVALID, "--%s %d is out of range: the model has %d classes "
                         "(0..%d)", class_flag, class_id, K, K - 1);
    float *c = calloc((size_t)n * (size_t)K, sizeof(float));
    if (!c) return ddpm_fail(DDPM_ERR_NOMEM, "out of memory");
    if (class_id >= 0) {
        for (int i = 0; i < n; i++) c[(size_t)i * K + class_id] = 1.0f;
    } else {
        int k = 0;
        const char *p = context;
        while (*p) {
            char *end;
            const double v = strtod(p, &end);
            if (end == p || k >= K) break;
            c[k++] = (float)v;
            if (*end == ',') end++;
            else if (*end) break;
            p = end;
        }
        if (k != K || *p) {
            free(c);
            return ddpm_fail(DDPM_ERR_INVALID, "--%s needs %d comma-separated numbers (got '%s')",
                             context_flag, K, context);
        }
        for (int i = 1; i < n; i++) memcpy(c + (size_t)i * K, c, sizeof(float) * K);
    }
    *cond = c;
    return DDPM_OK;
}

/* ---- running in chunks ------------------------------------------------------------------------ */

int edit_job(ddpm_model *m, const ddpm_schedule *s, const ddpm_sample_opts *o, const edit_opts *e,
             const float *cond, float guidance, size_t n, int batch, const float *init,
             int init_shared, float *out, ddpm_progress_fn progress, void *progress_ctx) {
    const size_t d = m->sample_numel;
    ddpm_model_sampler ms;
    const int B = (size_t)batch < n ? batch : (int)n;
    int rc = ddpm_model_sampler_init(&ms, m, B);
    if (rc) return rc;
    ms.guidance = guidance;
    /* The library takes a mask and (shared) image per item: repeated over a chunk once. */
    float *mask = NULL, *rep = NULL;
    if (e->mode == EDIT_REPAINT && !(mask = malloc(sizeof(float) * d * (size_t)B)))
        rc = ddpm_fail(DDPM_ERR_NOMEM, "out of memory");
    if (init_shared && !(rep = malloc(sizeof(float) * d * (size_t)B)))
        rc = ddpm_fail(DDPM_ERR_NOMEM, "out of memory");
    for (int i = 0; !rc && i < B; i++) {
        if (mask) memcpy(mask + (size_t)i * d, e->mask, sizeof(float) * d);
        if (rep) memcpy(rep + (size_t)i * d, init, sizeof(float) * d);
    }
    for (size_t start = 0; start < n && !rc; start += (size_t)B) {
        const int b = (int)(n - start < (size_t)B ? n - start : (size_t)B);
        ddpm_sample_opts so = *o;
        so.first_item = o->first_item + start;
        so.progress = progress;
        so.progress_ctx = progress_ctx;
        ms.cond = cond ? cond + start * (size_t)m->cond_dim : NULL;
        const float *x0 = rep ? rep : init + start * d;
        if (e->mode == EDIT_REPAINT)
            rc = ddpm_repaint(s, &so, e->jump_length, e->jump_n_sample, ddpm_model_denoise, &ms, b,
                              d, x0, mask, out + start * d);
        else
            rc = ddpm_img2img(s, &so, e->strength, ddpm_model_denoise, &ms, b, d, x0,
                              out + start * d);
    }
    free(mask);
    free(rep);
    ddpm_model_sampler_free(&ms);
    return rc;
}

int edit_invert_job(ddpm_model *m, const ddpm_schedule *s, const ddpm_sample_opts *o,
                    const float *cond, float guidance, size_t n, int batch, const float *images,
                    float *xT, ddpm_progress_fn progress, void *progress_ctx) {
    const size_t d = m->sample_numel;
    ddpm_model_sampler ms;
    const int B = (size_t)batch < n ? batch : (int)n;
    int rc = ddpm_model_sampler_init(&ms, m, B);
    if (rc) return rc;
    ms.guidance = guidance;
    for (size_t start = 0; start < n && !rc; start += (size_t)B) {
        const int b = (int)(n - start < (size_t)B ? n - start : (size_t)B);
        ddpm_sample_opts so = *o;
        so.progress = progress;
        so.progress_ctx = progress_ctx;
        ms.cond = cond ? cond + start * (size_t)m->cond_dim : NULL;
        rc = ddpm_ddim_invert(s, &so, ddpm_model_denoise, &ms, b, d, images + start * d,
                              xT + start * d);
    }
    ddpm_model_sampler_free(&ms);
    return rc;
}

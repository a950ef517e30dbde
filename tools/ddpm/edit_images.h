/* edit_images.h - what the editing modes of the CLI share (sample --init-image / --mask, invert,
 * interpolate): images and masks read and checked against a model, and edits run in chunks. */
#ifndef DDPM_EDIT_IMAGES_H
#define DDPM_EDIT_IMAGES_H

#include "sample_driver.h"

/* Images to edit, [n, C, H, W] in [-1, 1], from an image file, a folder of them (its image files
 * in sorted order, not recursive) or a .npy (ddpm_dataset_npy's layouts). Every image must have
 * the model's size (H x W) and, for a gray model, no colour; errors name the flag and the file
 * (DDPM_ERR_INVALID, exit 2). */
typedef struct {
    float *x;
    int n;
} edit_images;
int edit_images_read(const char *flag, const char *path, const ddpm_model *m, edit_images *out);
void edit_images_free(edit_images *e);

/* A RePaint mask from an image file of the model's size: mask [C*H*W] is 1 where the mask is
 * white (lighter than mid-grey: keep the init image's pixel) and 0 where it is dark (regenerate
 * it), the same for every channel. */
int edit_mask_read(const char *path, const ddpm_model *m, float **mask);

typedef enum { EDIT_IMG2IMG = 0, EDIT_REPAINT } edit_mode;
typedef struct {
    edit_mode mode;
    double strength;                /* img2img */
    int jump_length, jump_n_sample; /* RePaint */
    const float *mask;              /* RePaint: [d], the same for every item */
} edit_opts;

/* The editing flags of `ddpm sample` checked together: --mask and --strength need
 * --init-image, --jump-* need --mask, RePaint needs the DDPM sampler, --init-image excludes
 * --x-init, the strength lies in [0, 1]. Fails with DDPM_ERR_INVALID and a message. */
int edit_check_args(const sample_image_args *a, const ddpm_sample_opts *so);
/* What an edit will run, for the log line (what), and its progress calls: *steps in all, the
 * first *k_offset of them skipped (img2img). */
int edit_describe(const ddpm_schedule *s, const ddpm_sample_opts *so, const edit_opts *e,
                  int *steps, int *k_offset, char *what, size_t what_len);
/* As job_sample, for an edit of n items of init [n * d] (or, with init_shared, the one image
 * init [d] for every item): chunks of at most batch items, each item's noise addressed by its
 * global index; out [n * d]. */
int edit_job(ddpm_model *m, const ddpm_schedule *s, const ddpm_sample_opts *o, const edit_opts *e,
             const float *cond, float guidance, size_t n, int batch, const float *init,
             int init_shared, float *out, ddpm_progress_fn progress, void *progress_ctx);
/* A condition for every one of n items of a conditional model: the one-hot class class_id
 * (>= 0), or the context vector "1,0,0.5" (K numbers), or NULL (*cond = NULL: unconditional)
 * when neither is given. flag names the flags in errors ("class"/"context" or their -a/-b). */
int edit_cond(const ddpm_model *m, const char *class_flag, int class_id, const char *context_flag,
              const char *context, int n, float **cond);
/* DDIM inversion of n images in chunks: xT [n * d]. */
int edit_invert_job(ddpm_model *m, const ddpm_schedule *s, const ddpm_sample_opts *o,
                    const float *cond, float guidance, size_t n, int batch, const float *images,
                    float *xT, ddpm_progress_fn progress, void *progress_ctx);

#endif

/* image_sets.h - labelled image sets for `ddpm classifier` and `ddpm eval`: Fashion-MNIST's train
 * or test files, a folder of images (classes from sub-folders), or an .npy array (+ labels), with
 * a deterministic held-out split for the sources that have no test files. */
#ifndef DDPM_IMAGE_SETS_H
#define DDPM_IMAGE_SETS_H

#include "cli.h"

typedef enum { SPLIT_ALL = 0, SPLIT_TRAIN, SPLIT_TEST } image_split;

typedef struct {
    float *x;        /* [n, c, h, w] in [-1, 1] */
    int n, c, h, w;
    int *labels;     /* [n] class indices (-1: none), or NULL */
    int n_classes;   /* 0: unlabelled */
    char split_desc[160]; /* how the split was made, for the report */
} image_set;

/* Loads SOURCE: "fashion-mnist" (SPLIT_TRAIN: the train files, SPLIT_TEST: the t10k files,
 * SPLIT_ALL: the t10k files), a directory (read at image_size x image_size with `channels`,
 * labels from first-level sub-folders), or FILE.npy (labels from labels_path, may be NULL).
 * For a folder or .npy, SPLIT_TEST keeps every test_every-th image (items i with
 * i % test_every == test_every - 1) and SPLIT_TRAIN the others. */
int image_set_load(const char *source, image_split split, int test_every, int image_size,
                   int channels, const char *labels_path, image_set *out);
void image_set_free(image_set *s);
/* Is the string an image source (fashion-mnist, a directory, or an .npy file)? */
int image_source_is_images(const char *source);

#endif

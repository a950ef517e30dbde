/* image_sets.c - labelled image sets for `ddpm classifier` and `ddpm eval` (see image_sets.h). */
#include "image_sets.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

void image_set_free(image_set *s) {
    free(s->x);
    free(s->labels);
    memset(s, 0, sizeof *s);
}

int image_source_is_images(const char *source) {
    const char *dot = strrchr(source, '.');
    struct stat st;
    return strcmp(source, "fashion-mnist") == 0 || (dot && strcmp(dot, ".npy") == 0) ||
           (stat(source, &st) == 0 && S_ISDIR(st.st_mode));
}

/* Keeps items i of ds with (i % every == every - 1) == test; moves the arrays into out. */
static int take_split(ddpm_image_dataset *ds, image_split split, int every, image_set *out) {
    const size_t d = (size_t)ds->c * ds->h * ds->w;
    out->c = ds->c, out->h = ds->h, out->w = ds->w;
    out->n_classes = ds->n_classes;
    if (split == SPLIT_ALL || every < 2) {
        out->x = ds->x, out->labels = ds->labels, out->n = ds->n;
        ds->x = NULL, ds->labels = NULL;
        return DDPM_OK;
    }
    const int test = split == SPLIT_TEST;
    int n = 0;
    for (int i = 0; i < ds->n; i++) n += (i % every == every - 1) == test;
    if (n < 1) return ddpm_fail(DDPM_ERR_INVALID, "the %s split is empty (%d images, every %d-th held out)",
                                test ? "test" : "training", ds->n, every);
    out->x = malloc(sizeof(float) * d * (size_t)n);
    out->labels = ds->labels ? malloc(sizeof(int) * (size_t)n) : NULL;
    if (!out->x || (ds->labels && !out->labels)) return ddpm_fail(DDPM_ERR_NOMEM, "out of memory");
    int k = 0;
    for (int i = 0; i < ds->n; i++) {
        if ((i % every == every - 1) != test) continue;
        memcpy(out->x + (size_t)k * d, ds->x + (size_t)i * d, sizeof(float) * d);
        if (out->labels) out->labels[k] = ds->labels[i];
        k++;
    }
    out->n = n;
    return DDPM_OK;
}

int image_set_load(const char *source, image_split split, int test_every, int image_size,
                   int channels, const char *labels_path, image_set *out) {
    memset(out, 0, sizeof *out);
    ddpm_image_dataset ds = {0};
    const char *dot = strrchr(source, '.');
    int rc, fmnist = strcmp(source, "fashion-mnist") == 0;
    if (fmnist) {
        rc = ddpm_dataset_fashion_mnist(NULL, split == SPLIT_TRAIN, 0, &ds);
    } else if (dot && strcmp(dot, ".npy") == 0) {
        rc = ddpm_dataset_npy(source, labels_path, &ds);
    } else {
        struct stat st;
        if (stat(source, &st) != 0 || !S_ISDIR(st.st_mode))
            return ddpm_fail(DDPM_ERR_INVALID,
                             "%s: not an image source (fashion-mnist, a folder of images or FILE.npy)",
                             source);
        rc = ddpm_dataset_folder(source, image_size, channels, 1, &ds);
    }
    if (!rc) rc = take_split(&ds, fmnist ? SPLIT_ALL : split, test_every, out);
    if (!rc) {
        if (fmnist)
            snprintf(out->split_desc, sizeof out->split_desc, "Fashion-MNIST %s files",
                     split == SPLIT_TRAIN ? "train" : "test (t10k)");
        else if (split == SPLIT_ALL)
            snprintf(out->split_desc, sizeof out->split_desc, "all of %s", source);
        else
            snprintf(out->split_desc, sizeof out->split_desc, "%s of %s (every %d-th image %s)",
                     split == SPLIT_TEST ? "held-out split" : "training split", source, test_every,
                     split == SPLIT_TEST ? "kept" : "left out");
    }
    ddpm_dataset_free(&ds);
    if (rc) image_set_free(out);
    return rc;
}

/* fuzz_npy.c - a .npy file through ddpm_npy_read and ddpm_npy_to_f32, then as an image dataset
 * (ddpm_dataset_npy, the --data images.npy path: rank, layout and value-range checks) and as the
 * labels of a fixed dataset of 2 images (the --labels path: class indices or context vectors). */
#include "fuzz_common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const char *path = fuzz_write(0, "input.npy", data, size);
    ddpm_npy a;
    if (fuzz_rc(ddpm_npy_read(path, &a)) != DDPM_OK) return 0;
    size_t numel = 1;
    for (int k = 0; k < a.ndim; k++) numel *= (size_t)a.shape[k];
    FUZZ_CHECK(numel == a.numel && a.itemsize >= 1 && a.itemsize <= 8);
    float *v = malloc(a.numel ? a.numel * sizeof(float) : 1);
    FUZZ_CHECK(v);
    if (ddpm_npy_to_f32(&a, v) == DDPM_OK) fuzz_touch(v, a.numel);
    free(v);
    ddpm_npy_free(&a);
    ddpm_image_dataset d;
    if (fuzz_rc(ddpm_dataset_npy(path, NULL, &d)) == DDPM_OK) {
        FUZZ_CHECK(d.n > 0 && d.c > 0 && d.h > 0 && d.w > 0);
        fuzz_touch(d.x, (size_t)d.n * d.c * d.h * d.w);
        ddpm_dataset_free(&d);
    }
    static const char *images;
    if (!images) {
        static const int64_t shape[4] = {2, 2, 2, 1};
        static const uint8_t px[8] = {0, 64, 128, 255, 1, 2, 3, 4};
        images = fuzz_write(1, "images.npy", "", 0);
        FUZZ_CHECK(ddpm_npy_write_u8(images, px, 4, shape) == DDPM_OK);
    }
    if (fuzz_rc(ddpm_dataset_npy(images, path, &d)) == DDPM_OK) {
        FUZZ_CHECK(d.n == 2 && (d.cond_dim == 0 || d.cond));
        if (d.cond) fuzz_touch(d.cond, (size_t)d.n * (size_t)d.cond_dim);
        for (int i = 0; d.labels && i < d.n; i++)
            FUZZ_CHECK(d.labels[i] >= -1 && d.labels[i] < d.n_classes);
        for (int i = 0; i < d.n_classes; i++) FUZZ_CHECK(d.class_names[i]);
        ddpm_dataset_free(&d);
    }
    return 0;
}

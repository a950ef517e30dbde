/* fuzz_npy.c - a .npy file through ddpm_npy_read and ddpm_npy_to_f32, then as an image dataset
 * (ddpm_dataset_npy, the --data images.npy path: rank, layout and value-range checks). */
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
    return 0;
}

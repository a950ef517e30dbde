/* fuzz_image.c - an image file (PNG, JPEG, BMP, GIF, TGA, PSD, HDR, PIC, PNM: whatever the reader
 * decodes) through ddpm_image_info (the header) and ddpm_image_read: decoding, compositing,
 * resize and centre crop. The last byte of the input picks the output (size 1..64, 1 or 3
 * channels); image formats ignore trailing bytes, so valid files stay valid. */
#include "fuzz_common.h"

#include <math.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const unsigned last = size ? data[size - 1] : 0;
    const int out = 1 + (int)(last & 63), channels = last & 64 ? 3 : 1;
    const char *path = fuzz_write(0, "image.bin", data, size);
    float *dst = malloc(sizeof(float) * (size_t)channels * out * out);
    FUZZ_CHECK(dst);
    int w, h, c;
    if (fuzz_rc(ddpm_image_info(path, &w, &h, &c)) == DDPM_OK)
        FUZZ_CHECK(w >= 1 && h >= 1 && c >= 1 && c <= 4);
    if (fuzz_rc(ddpm_image_read(path, out, channels, dst)) == DDPM_OK)
        for (int i = 0; i < channels * out * out; i++)
            FUZZ_CHECK(dst[i] >= -1.0f && dst[i] <= 1.0f);
    free(dst);
    return 0;
}

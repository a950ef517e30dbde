/* fuzz_idx.c - a Fashion-MNIST IDX pair through ddpm_dataset_fashion_mnist. Input layout: byte 0
 * picks how the files are stored (bit 0: gzip'd by the harness, which fuzzes the reader behind
 * the gzip layer; bit 1 without bit 0: the bytes are written as .gz files as they are, which
 * fuzzes the gzip stream itself); bytes 1-2 (little-endian) are the length of the images file;
 * its bytes follow, and the rest is the labels file. */
#include "fuzz_common.h"

#include <zlib.h>

static const char *IMG = "train-images-idx3-ubyte", *LAB = "train-labels-idx1-ubyte";

/* Writes name (plain) or name.gz (gzip'd by zlib, or raw) holding bytes [p, p + n). */
static void put(const char *name, const uint8_t *p, size_t n, int mode) {
    char gz[128];
    snprintf(gz, sizeof gz, "%s.gz", name);
    fuzz_remove(name);
    fuzz_remove(gz);
    if (mode == 0) {
        fuzz_write(0, name, p, n);
    } else if (mode == 1) {
        uLongf cap = compressBound((uLong)n) + 32;
        unsigned char *buf = malloc(cap);
        FUZZ_CHECK(buf);
        /* a gzip wrapper (windowBits 15 + 16), as gzip(1) writes */
        z_stream z = {0};
        FUZZ_CHECK(deflateInit2(&z, 6, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY) == Z_OK);
        z.next_in = (Bytef *)p;
        z.avail_in = (uInt)n;
        z.next_out = buf;
        z.avail_out = (uInt)cap;
        FUZZ_CHECK(deflate(&z, Z_FINISH) == Z_STREAM_END);
        fuzz_write(0, gz, buf, z.total_out);
        deflateEnd(&z);
        free(buf);
    } else {
        fuzz_write(0, gz, p, n);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 3) return 0;
    const int mode = data[0] & 1 ? 1 : data[0] & 2 ? 2 : 0;
    size_t ni = (size_t)data[1] | (size_t)data[2] << 8;
    if (ni > size - 3) ni = size - 3;
    put(IMG, data + 3, ni, mode);
    put(LAB, data + 3 + ni, size - 3 - ni, mode);
    ddpm_image_dataset d;
    if (fuzz_rc(ddpm_dataset_fashion_mnist(fuzz_dir(), 1, 0, &d)) != DDPM_OK) return 0;
    FUZZ_CHECK(d.n > 0 && d.c == 1 && d.n_classes == 10 && d.labels && d.cond);
    fuzz_touch(d.x, (size_t)d.n * d.h * d.w);
    for (int i = 0; i < d.n; i++) FUZZ_CHECK(d.labels[i] >= 0 && d.labels[i] < 10);
    ddpm_dataset_free(&d);
    return 0;
}

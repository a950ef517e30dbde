/* test_datasets.c - image datasets: Fashion-MNIST IDX files (gzip'd and raw, every validation
 * error, and the real t10k set when installed), folders of images (formats, mixed sizes, labels
 * from sub-folders, hidden files, errors), NumPy arrays (layouts, value ranges, class and context
 * labels, errors) and the deterministic random flips. */
#include "testutil.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wshadow"
#pragma GCC diagnostic ignored "-Wsign-compare"
#pragma GCC diagnostic ignored "-Wunused-function"
#pragma GCC diagnostic ignored "-Wunused-parameter"
#pragma GCC diagnostic ignored "-Wmissing-field-initializers"
#pragma GCC diagnostic ignored "-Wimplicit-fallthrough"
#define STB_IMAGE_WRITE_STATIC
#define STB_IMAGE_WRITE_IMPLEMENTATION
#include <stb/stb_image_write.h>
#pragma GCC diagnostic pop

/* A 12x8 JPEG (quality 90) made once with stb_image_write: its encoder has a signed shift that
 * UBSan rejects, so the test carries the bytes; decoding still runs under the sanitizers. */
static const unsigned char JPEG_12x8[662] = {
    0xff, 0xd8, 0xff, 0xe0, 0x00, 0x10, 0x4a, 0x46, 0x49, 0x46, 0x00, 0x01, 0x01, 0x00, 0x00, 0x01,
    0x00, 0x01, 0x00, 0x00, 0xff, 0xdb, 0x00, 0x84, 0x00, 0x03, 0x02, 0x02, 0x03, 0x02, 0x02, 0x03,
    0x03, 0x03, 0x03, 0x04, 0x03, 0x03, 0x04, 0x05, 0x08, 0x05, 0x05, 0x04, 0x04, 0x05, 0x0a, 0x07,
    0x07, 0x06, 0x08, 0x0c, 0x0a, 0x0c, 0x0c, 0x0b, 0x0a, 0x0b, 0x0b, 0x0d, 0x0e, 0x12, 0x10, 0x0d,
    0x0e, 0x11, 0x0e, 0x0b, 0x0b, 0x10, 0x16, 0x10, 0x11, 0x13, 0x14, 0x15, 0x15, 0x15, 0x0c, 0x0f,
    0x17, 0x18, 0x16, 0x14, 0x18, 0x12, 0x14, 0x15, 0x14, 0x01, 0x03, 0x04, 0x04, 0x05, 0x04, 0x05,
    0x09, 0x05, 0x05, 0x09, 0x14, 0x0d, 0x0b, 0x0d, 0x14, 0x14, 0x14, 0x14, 0x14, 0x14, 0x14, 0x14,
    0x14, 0x14, 0x14, 0x14, 0x14, 0x14, 0x14, 0x14, 0x14, 0x14, 0x14, 0x14, 0x14, 0x14, 0x14, 0x14,
    0x14, 0x14, 0x14, 0x14, 0x14, 0x14, 0x14, 0x14, 0x14, 0x14, 0x14, 0x14, 0x14, 0x14, 0x14, 0x14,
    0x14, 0x14, 0x14, 0x14, 0x14, 0x14, 0x14, 0x14, 0x14, 0x14, 0xff, 0xc0, 0x00, 0x11, 0x08, 0x00,
    0x08, 0x00, 0x0c, 0x03, 0x01, 0x22, 0x00, 0x02, 0x11, 0x01, 0x03, 0x11, 0x01, 0xff, 0xc4, 0x01,
    0xa2, 0x00, 0x00, 0x01, 0x05, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x09, 0x0a, 0x0b, 0x10, 0x00,
    0x02, 0x01, 0x03, 0x03, 0x02, 0x04, 0x03, 0x05, 0x05, 0x04, 0x04, 0x00, 0x00, 0x01, 0x7d, 0x01,
    0x02, 0x03, 0x00, 0x04, 0x11, 0x05, 0x12, 0x21, 0x31, 0x41, 0x06, 0x13, 0x51, 0x61, 0x07, 0x22,
    0x71, 0x14, 0x32, 0x81, 0x91, 0xa1, 0x08, 0x23, 0x42, 0xb1, 0xc1, 0x15, 0x52, 0xd1, 0xf0, 0x24,
    0x33, 0x62, 0x72, 0x82, 0x09, 0x0a, 0x16, 0x17, 0x18, 0x19, 0x1a, 0x25, 0x26, 0x27, 0x28, 0x29,
    0x2a, 0x34, 0x35, 0x36, 0x37, 0x38, 0x39, 0x3a, 0x43, 0x44, 0x45, 0x46, 0x47, 0x48, 0x49, 0x4a,
    0x53, 0x54, 0x55, 0x56, 0x57, 0x58, 0x59, 0x5a, 0x63, 0x64, 0x65, 0x66, 0x67, 0x68, 0x69, 0x6a,
    0x73, 0x74, 0x75, 0x76, 0x77, 0x78, 0x79, 0x7a, 0x83, 0x84, 0x85, 0x86, 0x87, 0x88, 0x89, 0x8a,
    0x92, 0x93, 0x94, 0x95, 0x96, 0x97, 0x98, 0x99, 0x9a, 0xa2, 0xa3, 0xa4, 0xa5, 0xa6, 0xa7, 0xa8,
    0xa9, 0xaa, 0xb2, 0xb3, 0xb4, 0xb5, 0xb6, 0xb7, 0xb8, 0xb9, 0xba, 0xc2, 0xc3, 0xc4, 0xc5, 0xc6,
    0xc7, 0xc8, 0xc9, 0xca, 0xd2, 0xd3, 0xd4, 0xd5, 0xd6, 0xd7, 0xd8, 0xd9, 0xda, 0xe1, 0xe2, 0xe3,
    0xe4, 0xe5, 0xe6, 0xe7, 0xe8, 0xe9, 0xea, 0xf1, 0xf2, 0xf3, 0xf4, 0xf5, 0xf6, 0xf7, 0xf8, 0xf9,
    0xfa, 0x01, 0x00, 0x03, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x09, 0x0a, 0x0b, 0x11, 0x00,
    0x02, 0x01, 0x02, 0x04, 0x04, 0x03, 0x04, 0x07, 0x05, 0x04, 0x04, 0x00, 0x01, 0x02, 0x77, 0x00,
    0x01, 0x02, 0x03, 0x11, 0x04, 0x05, 0x21, 0x31, 0x06, 0x12, 0x41, 0x51, 0x07, 0x61, 0x71, 0x13,
    0x22, 0x32, 0x81, 0x08, 0x14, 0x42, 0x91, 0xa1, 0xb1, 0xc1, 0x09, 0x23, 0x33, 0x52, 0xf0, 0x15,
    0x62, 0x72, 0xd1, 0x0a, 0x16, 0x24, 0x34, 0xe1, 0x25, 0xf1, 0x17, 0x18, 0x19, 0x1a, 0x26, 0x27,
    0x28, 0x29, 0x2a, 0x35, 0x36, 0x37, 0x38, 0x39, 0x3a, 0x43, 0x44, 0x45, 0x46, 0x47, 0x48, 0x49,
    0x4a, 0x53, 0x54, 0x55, 0x56, 0x57, 0x58, 0x59, 0x5a, 0x63, 0x64, 0x65, 0x66, 0x67, 0x68, 0x69,
    0x6a, 0x73, 0x74, 0x75, 0x76, 0x77, 0x78, 0x79, 0x7a, 0x82, 0x83, 0x84, 0x85, 0x86, 0x87, 0x88,
    0x89, 0x8a, 0x92, 0x93, 0x94, 0x95, 0x96, 0x97, 0x98, 0x99, 0x9a, 0xa2, 0xa3, 0xa4, 0xa5, 0xa6,
    0xa7, 0xa8, 0xa9, 0xaa, 0xb2, 0xb3, 0xb4, 0xb5, 0xb6, 0xb7, 0xb8, 0xb9, 0xba, 0xc2, 0xc3, 0xc4,
    0xc5, 0xc6, 0xc7, 0xc8, 0xc9, 0xca, 0xd2, 0xd3, 0xd4, 0xd5, 0xd6, 0xd7, 0xd8, 0xd9, 0xda, 0xe2,
    0xe3, 0xe4, 0xe5, 0xe6, 0xe7, 0xe8, 0xe9, 0xea, 0xf2, 0xf3, 0xf4, 0xf5, 0xf6, 0xf7, 0xf8, 0xf9,
    0xfa, 0xff, 0xda, 0x00, 0x0c, 0x03, 0x01, 0x00, 0x02, 0x11, 0x03, 0x11, 0x00, 0x3f, 0x00, 0xc5,
    0xf0, 0x8f, 0xc6, 0x6f, 0xb9, 0xfb, 0xff, 0x00, 0xd6, 0xbd, 0x6f, 0x4d, 0xf8, 0xcd, 0xfe, 0x88,
    0x9f, 0xbf, 0xfd, 0x6b, 0xe3, 0xcf, 0x08, 0xff, 0x00, 0x05, 0x7a, 0xde, 0x9b, 0xff, 0x00, 0x1e,
    0x89, 0x5f, 0x6b, 0xfe, 0xad, 0x65, 0xff, 0x00, 0xc8, 0x7d, 0xa7, 0x05, 0x70, 0xf6, 0x07, 0xea,
    0xff, 0x00, 0x0f, 0x43, 0xff, 0xd9,
};

static float unit(int p) { return p / 127.5f - 1.0f; }

static void mkdir_p(const char *path) {
    assert_int_equal(tu_system("mkdir -p '%s'", path), 0);
}

static void assert_unit_range(const ddpm_image_dataset *d) {
    const size_t n = (size_t)d->n * d->c * d->h * d->w;
    for (size_t i = 0; i < n; i++)
        if (!(d->x[i] >= -1.0f && d->x[i] <= 1.0f))
            fail_msg("x[%zu] = %g is outside [-1, 1]", i, (double)d->x[i]);
}

/* ---- IDX files ------------------------------------------------------------------------------ */

static void put_be32(unsigned char *p, uint32_t v) {
    p[0] = (unsigned char)(v >> 24);
    p[1] = (unsigned char)(v >> 16);
    p[2] = (unsigned char)(v >> 8);
    p[3] = (unsigned char)v;
}

/* Writes an IDX file: the header (magic and dims) then data; gzip'd if gz. */
static void write_idx(const char *path, int gz, uint32_t magic, const uint32_t *dims, int ndims,
                      const unsigned char *data, size_t n) {
    unsigned char hdr[16];
    put_be32(hdr, magic);
    for (int i = 0; i < ndims; i++) put_be32(hdr + 4 + 4 * i, dims[i]);
    const size_t hl = 4 + 4 * (size_t)ndims;
    if (gz) {
        gzFile f = gzopen(path, "wb");
        assert_non_null(f);
        assert_int_equal(gzwrite(f, hdr, (unsigned)hl), (int)hl);
        if (n) assert_int_equal(gzwrite(f, data, (unsigned)n), (int)n);
        assert_int_equal(gzclose(f), Z_OK);
    } else {
        FILE *f = fopen(path, "wb");
        assert_non_null(f);
        assert_int_equal(fwrite(hdr, 1, hl, f), hl);
        if (n) assert_int_equal(fwrite(data, 1, n, f), n);
        assert_int_equal(fclose(f), 0);
    }
}

/* A small IDX set in dir: n images of rows x cols, pixel (k, i) = (k * 31 + i * 7) % 256, label
 * k % 10. */
static void make_idx_set(const char *dir, const char *prefix, int gz, uint32_t n, uint32_t rows,
                         uint32_t cols) {
    mkdir_p(dir);
    unsigned char *px = malloc((size_t)n * rows * cols), *lab = malloc(n);
    assert_non_null(px);
    assert_non_null(lab);
    for (uint32_t k = 0; k < n; k++) {
        for (uint32_t i = 0; i < rows * cols; i++)
            px[(size_t)k * rows * cols + i] = (unsigned char)((k * 31 + i * 7) % 256);
        lab[k] = (unsigned char)(k % 10);
    }
    char path[1024];
    const uint32_t idims[3] = {n, rows, cols}, ldims[1] = {n};
    snprintf(path, sizeof path, "%s/%s-images-idx3-ubyte%s", dir, prefix, gz ? ".gz" : "");
    write_idx(path, gz, 0x803, idims, 3, px, (size_t)n * rows * cols);
    snprintf(path, sizeof path, "%s/%s-labels-idx1-ubyte%s", dir, prefix, gz ? ".gz" : "");
    write_idx(path, gz, 0x801, ldims, 1, lab, n);
    free(px);
    free(lab);
}

static void check_idx_set(const ddpm_image_dataset *d, int n, int rows, int cols) {
    assert_int_equal(d->n, n);
    assert_int_equal(d->c, 1);
    assert_int_equal(d->h, rows);
    assert_int_equal(d->w, cols);
    assert_int_equal(d->n_classes, 10);
    assert_int_equal(d->cond_dim, 10);
    assert_non_null(d->labels);
    assert_non_null(d->cond);
    assert_string_equal(d->class_names[0], "T-shirt/top");
    assert_string_equal(d->class_names[9], "Ankle boot");
    for (int k = 0; k < n; k++) {
        for (int i = 0; i < rows * cols; i++)
            assert_true(d->x[(size_t)k * rows * cols + i] == unit((k * 31 + i * 7) % 256));
        assert_int_equal(d->labels[k], k % 10);
        for (int j = 0; j < 10; j++)
            assert_true(d->cond[k * 10 + j] == (j == k % 10 ? 1.0f : 0.0f));
    }
}

static void test_idx_small(void **state) {
    (void)state;
    char gzdir[512], rawdir[512];
    snprintf(gzdir, sizeof gzdir, "%s", tu_tmp("idx_gz"));
    snprintf(rawdir, sizeof rawdir, "%s", tu_tmp("idx_raw"));
    make_idx_set(gzdir, "train", 1, 13, 3, 5);
    make_idx_set(gzdir, "t10k", 1, 4, 2, 2);
    make_idx_set(rawdir, "train", 0, 13, 3, 5);
    ddpm_image_dataset d;
    assert_int_equal(ddpm_dataset_fashion_mnist(gzdir, 1, 0, &d), DDPM_OK);
    check_idx_set(&d, 13, 3, 5);
    ddpm_dataset_free(&d);
    assert_null(d.x);
    assert_int_equal(ddpm_dataset_fashion_mnist(gzdir, 0, 0, &d), DDPM_OK);
    check_idx_set(&d, 4, 2, 2);
    ddpm_dataset_free(&d);
    assert_int_equal(ddpm_dataset_fashion_mnist(rawdir, 1, 0, &d), DDPM_OK);
    check_idx_set(&d, 13, 3, 5);
    ddpm_dataset_free(&d);
    /* max_items keeps the first items. */
    assert_int_equal(ddpm_dataset_fashion_mnist(gzdir, 1, 6, &d), DDPM_OK);
    check_idx_set(&d, 6, 3, 5);
    ddpm_dataset_free(&d);
    assert_int_equal(ddpm_dataset_fashion_mnist(gzdir, 1, 1000, &d), DDPM_OK);
    assert_int_equal(d.n, 13);
    ddpm_dataset_free(&d);
    ddpm_dataset_free(&d); /* twice is fine */
}

static void test_idx_errors(void **state) {
    (void)state;
    ddpm_image_dataset d;
    char dir[512], path[1024];
    /* A missing directory / files. */
    snprintf(dir, sizeof dir, "%s", tu_tmp("idx_none"));
    tu_expect_status(ddpm_dataset_fashion_mnist(dir, 1, 0, &d), DDPM_ERR_IO, dir,
                     "train-images-idx3-ubyte");
    assert_null(d.x);

    unsigned char px[2 * 2 * 2] = {0}, lab[2] = {0, 1};
    const uint32_t idims[3] = {2, 2, 2}, ldims[1] = {2};

    /* Images and labels swapped: bad magic. */
    snprintf(dir, sizeof dir, "%s", tu_tmp("idx_magic"));
    mkdir_p(dir);
    snprintf(path, sizeof path, "%s/train-images-idx3-ubyte.gz", dir);
    write_idx(path, 1, 0x801, ldims, 1, lab, 2);
    char ipath[1024];
    snprintf(ipath, sizeof ipath, "%s", path);
    snprintf(path, sizeof path, "%s/train-labels-idx1-ubyte.gz", dir);
    write_idx(path, 1, 0x801, ldims, 1, lab, 2);
    tu_expect_status(ddpm_dataset_fashion_mnist(dir, 1, 0, &d), DDPM_ERR_FORMAT, ipath, "magic");
    write_idx(ipath, 1, 0x803, idims, 3, px, sizeof px);
    write_idx(path, 1, 0x803, idims, 3, px, sizeof px);
    tu_expect_status(ddpm_dataset_fashion_mnist(dir, 1, 0, &d), DDPM_ERR_FORMAT, path, "magic");

    /* Counts differ. */
    const uint32_t ldims3[1] = {3};
    unsigned char lab3[3] = {0, 1, 2};
    write_idx(path, 1, 0x801, ldims3, 1, lab3, 3);
    tu_expect_status(ddpm_dataset_fashion_mnist(dir, 1, 0, &d), DDPM_ERR_FORMAT, path,
                     "has 3 labels but");
    /* A label out of range. */
    unsigned char bad[2] = {0, 10};
    write_idx(path, 1, 0x801, ldims, 1, bad, 2);
    tu_expect_status(ddpm_dataset_fashion_mnist(dir, 1, 0, &d), DDPM_ERR_FORMAT, path, "0..9");
    write_idx(path, 1, 0x801, ldims, 1, lab, 2);
    assert_int_equal(ddpm_dataset_fashion_mnist(dir, 1, 0, &d), DDPM_OK);
    ddpm_dataset_free(&d);

    /* Truncated pixel data (gzip'd, complete stream) and extra data. */
    write_idx(ipath, 1, 0x803, idims, 3, px, sizeof px - 3);
    tu_expect_status(ddpm_dataset_fashion_mnist(dir, 1, 0, &d), DDPM_ERR_FORMAT, ipath,
                     "truncated");
    unsigned char more[9] = {0};
    write_idx(ipath, 1, 0x803, idims, 3, more, sizeof more);
    tu_expect_status(ddpm_dataset_fashion_mnist(dir, 1, 0, &d), DDPM_ERR_FORMAT, ipath,
                     "unexpected data");
    /* A header announcing more than the file can hold is refused before allocating: the
     * reproducer (tests/fixtures/regress/idx-huge-count) is a 60-byte file asking for 2^31 - 1
     * images of 28 x 28 (a 56 GB allocation before the fix). */
    {
        char rdir[1024], rpath[1100];
        snprintf(rdir, sizeof rdir, "%s", tu_fixture_path("regress/idx-huge-count"));
        snprintf(rpath, sizeof rpath, "%s/train-images-idx3-ubyte", rdir);
        tu_expect_status(ddpm_dataset_fashion_mnist(rdir, 1, 0, &d), DDPM_ERR_FORMAT, rpath,
                         "more than the 60-byte file can hold");
        assert_null(d.x);
    }
    /* the same for a gzip'd file: at most deflate's 1032:1 */
    {
        const uint32_t huge[3] = {0x7fffffff, 28, 28};
        write_idx(ipath, 1, 0x803, huge, 3, px, sizeof px);
        tu_expect_status(ddpm_dataset_fashion_mnist(dir, 1, 0, &d), DDPM_ERR_FORMAT, ipath,
                         "more than the");
        write_idx(ipath, 1, 0x803, idims, 3, px, sizeof px);
    }
    /* A gzip stream cut in the middle. */
    unsigned char big[2 * 64 * 64];
    for (size_t i = 0; i < sizeof big; i++) big[i] = (unsigned char)(i * 2654435761u >> 24);
    const uint32_t bdims[3] = {2, 64, 64};
    write_idx(ipath, 1, 0x803, bdims, 3, big, sizeof big);
    struct stat st;
    assert_int_equal(stat(ipath, &st), 0);
    assert_int_equal(truncate(ipath, st.st_size / 2), 0);
    tu_expect_status(ddpm_dataset_fashion_mnist(dir, 1, 0, &d), DDPM_ERR_FORMAT, ipath, NULL);
    /* Implausible dimensions. */
    const uint32_t zdims[3] = {2, 0, 2};
    write_idx(ipath, 0, 0x803, zdims, 3, px, 0);
    tu_expect_status(ddpm_dataset_fashion_mnist(dir, 1, 0, &d), DDPM_ERR_FORMAT, ipath,
                     "dimensions");
    assert_null(d.x);
    tu_expect_status(ddpm_dataset_fashion_mnist(dir, 1, -1, &d), DDPM_ERR_INVALID, NULL, NULL);
}

static void test_fashion_mnist_real(void **state) {
    (void)state;
    struct stat st;
    if (stat(DDPM_FASHION_MNIST_DIR "/t10k-images-idx3-ubyte.gz", &st) != 0) {
        print_message("%s not installed (package dataset-fashion-mnist): skipped\n",
                      DDPM_FASHION_MNIST_DIR);
        skip();
    }
    ddpm_image_dataset d;
    if (ddpm_dataset_fashion_mnist(NULL, 0, 0, &d) != DDPM_OK) fail_msg("%s", ddpm_last_error());
    assert_int_equal(d.n, 10000);
    assert_int_equal(d.c, 1);
    assert_int_equal(d.h, 28);
    assert_int_equal(d.w, 28);
    assert_int_equal(d.n_classes, 10);
    int count[10] = {0};
    for (int i = 0; i < d.n; i++) {
        assert_true(d.labels[i] >= 0 && d.labels[i] <= 9);
        count[d.labels[i]]++;
    }
    for (int k = 0; k < 10; k++) assert_int_equal(count[k], 1000); /* t10k is balanced */
    float lo = 2, hi = -2;
    double mean = 0;
    for (size_t i = 0; i < (size_t)d.n * 784; i++) {
        lo = fminf(lo, d.x[i]);
        hi = fmaxf(hi, d.x[i]);
        mean += d.x[i];
    }
    mean /= (double)d.n * 784;
    assert_true(lo == -1.0f && hi == 1.0f);
    /* Mostly black background: the mean pixel of Fashion-MNIST is about 0.286 in [0, 1]. */
    assert_float_equal(mean, 0.286 * 2 - 1, 0.02);
    ddpm_dataset_free(&d);
}

/* ---- folders ------------------------------------------------------------------------------- */

static void write_png_rgb(const char *path, int w, int h, int seed) {
    unsigned char *px = malloc((size_t)w * h * 3);
    assert_non_null(px);
    for (int i = 0; i < w * h * 3; i++) px[i] = (unsigned char)((i * 13 + seed * 41) % 256);
    assert_int_equal(ddpm_png_write(path, px, w, h, 3), DDPM_OK);
    free(px);
}

static void test_folder(void **state) {
    (void)state;
    char root[512], p[1024];
    snprintf(root, sizeof root, "%s", tu_tmp("folder"));
    snprintf(p, sizeof p, "%s/cats/sub", root);
    mkdir_p(p);
    snprintf(p, sizeof p, "%s/dogs", root);
    mkdir_p(p);
    snprintf(p, sizeof p, "%s/empty", root);
    mkdir_p(p);
    /* cats/a.png: 8x8 RGB, known pixels (the exact check). */
    snprintf(p, sizeof p, "%s/cats/a.png", root);
    write_png_rgb(p, 8, 8, 1);
    /* cats/sub/b.jpg: 12x8 (non-square) JPEG. */
    snprintf(p, sizeof p, "%s/cats/sub/b.jpg", root);
    tu_write_file(p, JPEG_12x8, sizeof JPEG_12x8);
    /* dogs/c.bmp: 16x16 gray (BMP). */
    unsigned char gray[16 * 16];
    for (int i = 0; i < 256; i++) gray[i] = (unsigned char)i;
    snprintf(p, sizeof p, "%s/dogs/c.bmp", root);
    assert_true(stbi_write_bmp(p, 16, 16, 1, gray) != 0);
    /* dogs/d.PNG: 5x9 RGBA, fully transparent: white. */
    unsigned char rgba[5 * 9 * 4] = {0};
    snprintf(p, sizeof p, "%s/dogs/d.PNG", root);
    assert_int_equal(ddpm_png_write(p, rgba, 5, 9, 4), DDPM_OK);
    /* top.png at the root (no class); a hidden broken file and a text file (skipped). */
    snprintf(p, sizeof p, "%s/top.png", root);
    write_png_rgb(p, 8, 8, 2);
    snprintf(p, sizeof p, "%s/cats/._a.png", root);
    tu_write_text(p, "AppleDouble junk");
    snprintf(p, sizeof p, "%s/notes.txt", root);
    tu_write_text(p, "not an image");

    ddpm_image_dataset d;
    if (ddpm_dataset_folder(root, 8, 3, 1, &d) != DDPM_OK) fail_msg("%s", ddpm_last_error());
    assert_int_equal(d.n, 5);
    assert_int_equal(d.c, 3);
    assert_int_equal(d.h, 8);
    assert_int_equal(d.w, 8);
    assert_unit_range(&d);
    /* Sorted paths: cats/a.png, cats/sub/b.jpg, dogs/c.bmp, dogs/d.PNG, top.png. */
    assert_int_equal(d.n_classes, 2);
    assert_int_equal(d.cond_dim, 2);
    assert_string_equal(d.class_names[0], "cats");
    assert_string_equal(d.class_names[1], "dogs");
    const int want_labels[5] = {0, 0, 1, 1, -1};
    for (int i = 0; i < 5; i++) {
        assert_int_equal(d.labels[i], want_labels[i]);
        for (int k = 0; k < 2; k++)
            assert_true(d.cond[i * 2 + k] == (k == want_labels[i] ? 1.0f : 0.0f));
    }
    /* cats/a.png exactly: pixel (y, x) channel c was ((y*8+x)*3+c)*13 + 41 mod 256. */
    for (int c = 0; c < 3; c++)
        for (int i = 0; i < 64; i++)
            assert_true(d.x[c * 64 + i] == unit(((i * 3 + c) * 13 + 41) % 256));
    /* dogs/c.bmp: 16x16 gray averaged in 2x2 blocks, the same in every channel. */
    const float *c3 = d.x + 2 * 3 * 64;
    for (int y = 0; y < 8; y++)
        for (int x = 0; x < 8; x++) {
            float s = 0;
            for (int dy = 0; dy < 2; dy++)
                for (int dx = 0; dx < 2; dx++) s += gray[(2 * y + dy) * 16 + 2 * x + dx];
            for (int c = 0; c < 3; c++)
                assert_float_equal(c3[c * 64 + y * 8 + x], (s / 4) / 127.5f - 1.0f, 1e-4);
        }
    /* dogs/d.PNG: transparent -> white. */
    for (int i = 0; i < 3 * 64; i++) assert_float_equal(d.x[3 * 3 * 64 + i], 1.0f, 1e-6);
    ddpm_dataset_free(&d);

    /* Gray, unlabelled, another size. */
    if (ddpm_dataset_folder(root, 4, 1, 0, &d) != DDPM_OK) fail_msg("%s", ddpm_last_error());
    assert_int_equal(d.n, 5);
    assert_int_equal(d.c, 1);
    assert_int_equal(d.h, 4);
    assert_null(d.labels);
    assert_null(d.cond);
    assert_null(d.class_names);
    assert_int_equal(d.n_classes, 0);
    assert_unit_range(&d);
    ddpm_dataset_free(&d);

    /* Images only at the top level with labels requested: unlabelled. */
    char flat[512];
    snprintf(flat, sizeof flat, "%s", tu_tmp("flat"));
    mkdir_p(flat);
    snprintf(p, sizeof p, "%s/x.png", flat);
    write_png_rgb(p, 3, 3, 5);
    assert_int_equal(ddpm_dataset_folder(flat, 3, 3, 1, &d), DDPM_OK);
    assert_int_equal(d.n, 1);
    assert_null(d.labels);
    assert_int_equal(d.n_classes, 0);
    ddpm_dataset_free(&d);
}

static void test_folder_errors(void **state) {
    (void)state;
    ddpm_image_dataset d;
    char dir[512], p[1024];
    snprintf(dir, sizeof dir, "%s", tu_tmp("nosuchdir"));
    tu_expect_status(ddpm_dataset_folder(dir, 8, 3, 0, &d), DDPM_ERR_IO, dir, NULL);
    /* A file, not a directory. */
    snprintf(p, sizeof p, "%s", tu_tmp("plainfile"));
    tu_write_file(p, NULL, 0);
    tu_expect_status(ddpm_dataset_folder(p, 8, 3, 0, &d), DDPM_ERR_IO, p, "not a directory");
    /* No images (only a text file and an empty sub-folder). */
    snprintf(dir, sizeof dir, "%s", tu_tmp("noimages"));
    snprintf(p, sizeof p, "%s/sub", dir);
    mkdir_p(p);
    snprintf(p, sizeof p, "%s/readme.txt", dir);
    tu_write_text(p, "x");
    tu_expect_status(ddpm_dataset_folder(dir, 8, 3, 0, &d), DDPM_ERR_INVALID, dir,
                     "no images found (looked for .png .jpg .jpeg .bmp .gif");
    /* A truncated PNG among good ones: the message names it. */
    snprintf(dir, sizeof dir, "%s", tu_tmp("broken"));
    mkdir_p(dir);
    snprintf(p, sizeof p, "%s/a.png", dir);
    write_png_rgb(p, 16, 16, 3);
    snprintf(p, sizeof p, "%s/b.png", dir);
    write_png_rgb(p, 16, 16, 4);
    struct stat st;
    assert_int_equal(stat(p, &st), 0);
    assert_int_equal(truncate(p, st.st_size - 40), 0);
    tu_expect_status(ddpm_dataset_folder(dir, 8, 3, 0, &d), DDPM_ERR_FORMAT, p, "cannot decode");
    assert_null(d.x);
    /* Bad arguments. */
    tu_expect_status(ddpm_dataset_folder(dir, 0, 3, 0, &d), DDPM_ERR_INVALID, dir, NULL);
    tu_expect_status(ddpm_dataset_folder(dir, 8, 4, 0, &d), DDPM_ERR_INVALID, dir, NULL);
}

/* ---- NumPy arrays -------------------------------------------------------------------------- */

static void test_npy_sprites(void **state) {
    (void)state;
    /* The course's layout: [N, 16, 16, 3] uint8 with one-hot [N, 5] float labels. */
    enum { N = 6, H = 4, W = 5, C = 3, K = 5 };
    uint8_t img[N * H * W * C];
    for (int i = 0; i < N * H * W * C; i++) img[i] = (uint8_t)(i * 37 % 256);
    const int64_t ishape[4] = {N, H, W, C};
    char ipath[512], lpath[512];
    snprintf(ipath, sizeof ipath, "%s", tu_tmp("sprites.npy"));
    snprintf(lpath, sizeof lpath, "%s", tu_tmp("sprite_labels.npy"));
    assert_int_equal(ddpm_npy_write_u8(ipath, img, 4, ishape), DDPM_OK);
    float onehot[N * K] = {0};
    for (int i = 0; i < N; i++) onehot[i * K + (i * 3) % K] = 1.0f;
    const int64_t lshape[2] = {N, K};
    assert_int_equal(ddpm_npy_write_f32(lpath, onehot, 2, lshape), DDPM_OK);

    ddpm_image_dataset d;
    if (ddpm_dataset_npy(ipath, lpath, &d) != DDPM_OK) fail_msg("%s", ddpm_last_error());
    assert_int_equal(d.n, N);
    assert_int_equal(d.c, C);
    assert_int_equal(d.h, H);
    assert_int_equal(d.w, W);
    for (int n = 0; n < N; n++)
        for (int c = 0; c < C; c++)
            for (int y = 0; y < H; y++)
                for (int x = 0; x < W; x++)
                    assert_true(d.x[((n * C + c) * H + y) * W + x] ==
                                unit(img[((n * H + y) * W + x) * C + c]));
    assert_int_equal(d.n_classes, K);
    assert_int_equal(d.cond_dim, K);
    assert_memory_equal(d.cond, onehot, sizeof onehot);
    for (int i = 0; i < N; i++) assert_int_equal(d.labels[i], (i * 3) % K);
    assert_string_equal(d.class_names[4], "4");
    ddpm_dataset_free(&d);

    /* Multi-hot context: kept as context, no classes. */
    onehot[0 * K + 1] = 1.0f;
    assert_int_equal(ddpm_npy_write_f32(lpath, onehot, 2, lshape), DDPM_OK);
    assert_int_equal(ddpm_dataset_npy(ipath, lpath, &d), DDPM_OK);
    assert_int_equal(d.n_classes, 0);
    assert_int_equal(d.cond_dim, K);
    assert_null(d.labels);
    assert_null(d.class_names);
    assert_memory_equal(d.cond, onehot, sizeof onehot);
    ddpm_dataset_free(&d);

    /* No labels. */
    assert_int_equal(ddpm_dataset_npy(ipath, NULL, &d), DDPM_OK);
    assert_null(d.cond);
    assert_int_equal(d.cond_dim, 0);
    ddpm_dataset_free(&d);

    /* Integer class vector (uint8 written by us): n_classes = max + 1. */
    uint8_t cls[N] = {0, 2, 2, 1, 0, 2};
    const int64_t cshape[1] = {N};
    assert_int_equal(ddpm_npy_write_u8(lpath, cls, 1, cshape), DDPM_OK);
    assert_int_equal(ddpm_dataset_npy(ipath, lpath, &d), DDPM_OK);
    assert_int_equal(d.n_classes, 3);
    assert_int_equal(d.cond_dim, 3);
    for (int i = 0; i < N; i++) {
        assert_int_equal(d.labels[i], cls[i]);
        assert_true(d.cond[i * 3 + cls[i]] == 1.0f);
    }
    ddpm_dataset_free(&d);
}

static void test_npy_layouts(void **state) {
    (void)state;
    ddpm_image_dataset d;
    char p[512];
    /* float [0, 1], gray [N, H, W]. */
    float f01[2 * 3 * 3];
    for (int i = 0; i < 18; i++) f01[i] = (float)i / 17.0f;
    const int64_t s3[3] = {2, 3, 3};
    snprintf(p, sizeof p, "%s", tu_tmp("f01.npy"));
    assert_int_equal(ddpm_npy_write_f32(p, f01, 3, s3), DDPM_OK);
    assert_int_equal(ddpm_dataset_npy(p, NULL, &d), DDPM_OK);
    assert_int_equal(d.c, 1);
    assert_int_equal(d.h, 3);
    for (int i = 0; i < 18; i++) assert_float_equal(d.x[i], f01[i] * 2 - 1, 1e-6);
    ddpm_dataset_free(&d);
    /* float [-1, 1]: kept. */
    for (int i = 0; i < 18; i++) f01[i] = (float)i / 8.5f - 1.0f;
    assert_int_equal(ddpm_npy_write_f32(p, f01, 3, s3), DDPM_OK);
    assert_int_equal(ddpm_dataset_npy(p, NULL, &d), DDPM_OK);
    assert_memory_equal(d.x, f01, sizeof f01);
    ddpm_dataset_free(&d);
    /* float [0, 255]. */
    for (int i = 0; i < 18; i++) f01[i] = (float)(i * 15);
    assert_int_equal(ddpm_npy_write_f32(p, f01, 3, s3), DDPM_OK);
    assert_int_equal(ddpm_dataset_npy(p, NULL, &d), DDPM_OK);
    for (int i = 0; i < 18; i++) assert_true(d.x[i] == unit(i * 15));
    ddpm_dataset_free(&d);
    /* NCHW [N, 3, 2, 5] is recognised (last dimension not 1 or 3). */
    float nchw[2 * 3 * 2 * 5];
    for (int i = 0; i < 60; i++) nchw[i] = (float)(i % 7) / 6.0f;
    const int64_t s4[4] = {2, 3, 2, 5};
    assert_int_equal(ddpm_npy_write_f32(p, nchw, 4, s4), DDPM_OK);
    assert_int_equal(ddpm_dataset_npy(p, NULL, &d), DDPM_OK);
    assert_int_equal(d.c, 3);
    assert_int_equal(d.h, 2);
    assert_int_equal(d.w, 5);
    for (int i = 0; i < 60; i++) assert_float_equal(d.x[i], nchw[i] * 2 - 1, 1e-6);
    ddpm_dataset_free(&d);
}

static void test_npy_errors(void **state) {
    (void)state;
    ddpm_image_dataset d;
    char ip[512], lp[512];
    snprintf(ip, sizeof ip, "%s", tu_tmp("images.npy"));
    snprintf(lp, sizeof lp, "%s", tu_tmp("labels.npy"));
    /* Missing file. */
    tu_expect_status(ddpm_dataset_npy(ip, NULL, &d), DDPM_ERR_IO, ip, NULL);
    /* Wrong rank. */
    float v[12] = {0};
    const int64_t s2[2] = {3, 4};
    assert_int_equal(ddpm_npy_write_f32(ip, v, 2, s2), DDPM_OK);
    tu_expect_status(ddpm_dataset_npy(ip, NULL, &d), DDPM_ERR_FORMAT, ip, "(3, 4)");
    assert_null(d.x);
    /* Wrong channel count. */
    const int64_t s4c[4] = {1, 2, 2, 3};
    const int64_t s4bad[4] = {1, 2, 1, 6};
    assert_int_equal(ddpm_npy_write_f32(ip, v, 4, s4bad), DDPM_OK);
    tu_expect_status(ddpm_dataset_npy(ip, NULL, &d), DDPM_ERR_FORMAT, ip, "channels");
    /* Wrong dtype: bool images. */
    uint8_t b[12] = {0};
    char hdr[128];
    const char *dict = "{'descr': '|b1', 'fortran_order': False, 'shape': (1, 2, 2, 3), }";
    int hl = snprintf(hdr + 10, sizeof hdr - 10, "%-53s\n", dict);
    memcpy(hdr, "\x93NUMPY\x01\x00", 8);
    hdr[8] = (char)hl;
    hdr[9] = 0;
    FILE *f = fopen(ip, "wb");
    fwrite(hdr, 1, (size_t)(10 + hl), f);
    fwrite(b, 1, sizeof b, f);
    fclose(f);
    tu_expect_status(ddpm_dataset_npy(ip, NULL, &d), DDPM_ERR_FORMAT, ip, "dtype");
    /* Float values outside every known range; integer values outside 0..255. */
    v[3] = 300.0f;
    assert_int_equal(ddpm_npy_write_f32(ip, v, 4, s4c), DDPM_OK);
    tu_expect_status(ddpm_dataset_npy(ip, NULL, &d), DDPM_ERR_FORMAT, ip, "span");
    v[3] = NAN;
    assert_int_equal(ddpm_npy_write_f32(ip, v, 4, s4c), DDPM_OK);
    tu_expect_status(ddpm_dataset_npy(ip, NULL, &d), DDPM_ERR_FORMAT, ip, "non-finite");
    v[3] = 0.5f;
    assert_int_equal(ddpm_npy_write_f32(ip, v, 4, s4c), DDPM_OK);
    assert_int_equal(ddpm_dataset_npy(ip, NULL, &d), DDPM_OK);
    ddpm_dataset_free(&d);

    /* Labels: count mismatch with the exact message, missing file, bad rank, negative. */
    uint8_t img[6 * 2 * 2 * 3] = {0};
    const int64_t is[4] = {6, 2, 2, 3};
    assert_int_equal(ddpm_npy_write_u8(ip, img, 4, is), DDPM_OK);
    float lab[5] = {0, 1, 2, 3, 4};
    const int64_t ls[1] = {5};
    assert_int_equal(ddpm_npy_write_f32(lp, lab, 1, ls), DDPM_OK);
    char want[1200];
    snprintf(want, sizeof want, "%s has 5 rows but %s has 6 images", lp, ip);
    tu_expect_status(ddpm_dataset_npy(ip, lp, &d), DDPM_ERR_INVALID, lp, want);
    assert_null(d.x);
    char missing[512];
    snprintf(missing, sizeof missing, "%s", tu_tmp("nolabels.npy"));
    tu_expect_status(ddpm_dataset_npy(ip, missing, &d), DDPM_ERR_IO, missing, NULL);
    float lab3[6 * 2 * 2] = {0};
    const int64_t l3[3] = {6, 2, 2};
    assert_int_equal(ddpm_npy_write_f32(lp, lab3, 3, l3), DDPM_OK);
    tu_expect_status(ddpm_dataset_npy(ip, lp, &d), DDPM_ERR_FORMAT, lp, "(6, 2, 2)");
    float neg[6] = {0, 1, -1, 0, 1, 0};
    const int64_t l1[1] = {6};
    assert_int_equal(ddpm_npy_write_f32(lp, neg, 1, l1), DDPM_OK);
    tu_expect_status(ddpm_dataset_npy(ip, lp, &d), DDPM_ERR_FORMAT, lp, "class index");
    float frac[6] = {0, 1, 1.5f, 0, 1, 0};
    assert_int_equal(ddpm_npy_write_f32(lp, frac, 1, l1), DDPM_OK);
    tu_expect_status(ddpm_dataset_npy(ip, lp, &d), DDPM_ERR_FORMAT, lp, "class index");
}

/* ---- flips ------------------------------------------------------------------------------ */

/* The shards of a data set, put back together in order, are the whole set: same pixels, labels,
 * context and classes (each shard sees every label and pixel range, so numbers them alike). */
static void assert_shards_make_whole(const ddpm_image_dataset *whole, ddpm_image_dataset *parts, int count) {
    const size_t per = (size_t)whole->c * whole->h * whole->w;
    int at = 0;
    for (int k = 0; k < count; k++) {
        const ddpm_image_dataset *p = &parts[k];
        assert_int_equal(p->n_total, whole->n);
        assert_int_equal(p->n, whole->n * (k + 1) / count - whole->n * k / count);
        assert_int_equal(p->c, whole->c);
        assert_int_equal(p->n_classes, whole->n_classes);
        assert_int_equal(p->cond_dim, whole->cond_dim);
        assert_memory_equal(p->x, whole->x + (size_t)at * per, sizeof(float) * per * (size_t)p->n);
        if (whole->cond)
            assert_memory_equal(p->cond, whole->cond + (size_t)at * whole->cond_dim,
                                sizeof(float) * (size_t)whole->cond_dim * (size_t)p->n);
        else
            assert_null(p->cond);
        if (whole->labels)
            assert_memory_equal(p->labels, whole->labels + at, sizeof(int) * (size_t)p->n);
        else
            assert_null(p->labels);
        for (int c = 0; c < whole->n_classes; c++)
            assert_string_equal(p->class_names[c], whole->class_names[c]);
        at += p->n;
    }
    assert_int_equal(at, whole->n);
}

static void test_shards(void **state) {
    (void)state;
    /* .npy floats whose range differs between the shards: the first items lie in [0, 1], the
     * last reach 255, so the whole set is 8-bit values; labels whose largest class is only in
     * the last shard. */
    enum { N = 7, H = 3, W = 2, C = 1 };
    float img[N * H * W * C];
    for (int i = 0; i < N * H * W; i++) img[i] = i < 3 * H * W ? (float)(i % 5) / 4.0f : (float)(i * 7 % 256);
    const int64_t ishape[4] = {N, H, W, C};
    char ipath[512], lpath[512];
    snprintf(ipath, sizeof ipath, "%s", tu_tmp("shard_images.npy"));
    snprintf(lpath, sizeof lpath, "%s", tu_tmp("shard_labels.npy"));
    assert_int_equal(ddpm_npy_write_f32(ipath, img, 4, ishape), DDPM_OK);
    uint8_t cls[N] = {0, 1, 0, 1, 1, 0, 3};
    const int64_t cshape[1] = {N};
    assert_int_equal(ddpm_npy_write_u8(lpath, cls, 1, cshape), DDPM_OK);
    ddpm_image_dataset whole, parts[3];
    assert_int_equal(ddpm_dataset_npy(ipath, lpath, &whole), DDPM_OK);
    assert_int_equal(whole.n_classes, 4);
    for (int count = 1; count <= 3; count++) {
        for (int k = 0; k < count; k++)
            if (ddpm_dataset_npy_shard(ipath, lpath, (ddpm_shard){k, count}, &parts[k]))
                fail_msg("%s", ddpm_last_error());
        assert_shards_make_whole(&whole, parts, count);
        for (int k = 0; k < count; k++) ddpm_dataset_free(&parts[k]);
    }
    /* The same cut of a set read whole (Fashion-MNIST's way). */
    for (int k = 0; k < 3; k++) {
        assert_int_equal(ddpm_dataset_npy(ipath, lpath, &parts[k]), DDPM_OK);
        assert_int_equal(ddpm_dataset_keep_shard(&parts[k], (ddpm_shard){k, 3}), DDPM_OK);
    }
    assert_shards_make_whole(&whole, parts, 3);
    for (int k = 0; k < 3; k++) ddpm_dataset_free(&parts[k]);
    /* Refused: an empty shard, a shard outside the count. */
    assert_int_equal(ddpm_dataset_npy_shard(ipath, lpath, (ddpm_shard){0, 8}, &parts[0]), DDPM_ERR_INVALID);
    assert_non_null(strstr(ddpm_last_error(), "cannot be split into 8 shards"));
    assert_int_equal(ddpm_dataset_npy_shard(ipath, NULL, (ddpm_shard){2, 2}, &parts[0]), DDPM_ERR_INVALID);
    assert_int_equal(ddpm_dataset_keep_shard(&whole, (ddpm_shard){-1, 2}), DDPM_ERR_INVALID);
    ddpm_dataset_free(&whole);

    /* A folder with classes in sub-folders; the last class only in the last shard. */
    char root[512], p[1024];
    snprintf(root, sizeof root, "%s", tu_tmp("shard_folder"));
    const char *files[5] = {"a/1.png", "a/2.png", "b/3.png", "b/4.png", "c/5.png"};
    for (int i = 0; i < 5; i++) {
        snprintf(p, sizeof p, "%s/%c", root, files[i][0]);
        mkdir_p(p);
        snprintf(p, sizeof p, "%s/%s", root, files[i]);
        write_png_rgb(p, 4, 4, i + 1);
    }
    assert_int_equal(ddpm_dataset_folder(root, 4, 3, 1, &whole), DDPM_OK);
    assert_int_equal(whole.n_classes, 3);
    for (int k = 0; k < 2; k++)
        if (ddpm_dataset_folder_shard(root, 4, 4, 3, 1, (ddpm_shard){k, 2}, &parts[k]))
            fail_msg("%s", ddpm_last_error());
    assert_shards_make_whole(&whole, parts, 2);
    for (int k = 0; k < 2; k++) ddpm_dataset_free(&parts[k]);
    ddpm_dataset_free(&whole);
}

static void test_hflip(void **state) {
    (void)state;
    enum { B = 200, C = 2, H = 3, W = 5 };
    const size_t per = C * H * W;
    float *orig = malloc(B * per * sizeof(float)), *a = malloc(B * per * sizeof(float)),
          *b = malloc(B * per * sizeof(float));
    assert_non_null(orig);
    assert_non_null(a);
    assert_non_null(b);
    for (size_t i = 0; i < B * per; i++) orig[i] = (float)i;
    memcpy(a, orig, B * per * sizeof(float));
    ddpm_images_hflip_random(a, B, C, H, W, 42, 1000, 3);
    int flipped = 0;
    for (int n = 0; n < B; n++) {
        float u;
        ddpm_randu(42, DDPM_STREAM_AUGMENT, 1000 + (uint64_t)n, 3, &u, 1);
        const int want = u < 0.5f;
        flipped += want;
        for (int c = 0; c < C; c++)
            for (int y = 0; y < H; y++)
                for (int x = 0; x < W; x++) {
                    const size_t i = n * per + (c * H + y) * W + x;
                    const size_t j = n * per + (c * H + y) * W + (want ? W - 1 - x : x);
                    assert_true(a[i] == orig[j]);
                }
    }
    assert_true(flipped > 70 && flipped < 130);
    /* The same items through the index variant, in two batches: the same result. */
    uint64_t items[B];
    for (int n = 0; n < B; n++) items[n] = 1000 + (uint64_t)n;
    memcpy(b, orig, B * per * sizeof(float));
    ddpm_images_hflip_random_items(b, 50, C, H, W, 42, items, 3);
    ddpm_images_hflip_random_items(b + 50 * per, B - 50, C, H, W, 42, items + 50, 3);
    assert_memory_equal(a, b, B * per * sizeof(float));
    /* Another epoch flips a different set. */
    memcpy(b, orig, B * per * sizeof(float));
    ddpm_images_hflip_random(b, B, C, H, W, 42, 1000, 4);
    assert_true(memcmp(a, b, B * per * sizeof(float)) != 0);
    free(orig);
    free(a);
    free(b);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_idx_small),     cmocka_unit_test(test_idx_errors),
        cmocka_unit_test(test_fashion_mnist_real),
        cmocka_unit_test(test_folder),        cmocka_unit_test(test_folder_errors),
        cmocka_unit_test(test_npy_sprites),   cmocka_unit_test(test_npy_layouts),
        cmocka_unit_test(test_npy_errors),    cmocka_unit_test(test_hflip),
        cmocka_unit_test(test_shards),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

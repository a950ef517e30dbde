/* test_image_crop.c - reading images at a height x width that need not be square
 * (ddpm_image_read_hw, ddpm_dataset_folder_hw): the scale max(H / h, W / w) and the centre crop,
 * exact at scale 1, area averages when shrinking, the square case equal to ddpm_image_read. */
#include "testutil.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static float unit(unsigned char v) { return v / 127.5f - 1.0f; }

/* A w x h gray PNG with g[y * w + x] = f(x, y). */
static const char *gray_png(const char *name, int w, int h, unsigned char *g) {
    const char *p = tu_tmp(name);
    assert_int_equal(ddpm_png_write(p, g, w, h, 1), DDPM_OK);
    return p;
}

static unsigned char pix(int x, int y) { return (unsigned char)(x * 17 + y * 5); }

static void test_exact_crops(void **state) {
    (void)state;
    unsigned char g[12 * 8];
    /* 6 wide, 4 tall at H 4 x W 2: the height sets the scale (1): columns 2..3. */
    for (int y = 0; y < 4; y++)
        for (int x = 0; x < 6; x++) g[y * 6 + x] = pix(x, y);
    const char *p = gray_png("w6h4.png", 6, 4, g);
    float o[4 * 2];
    assert_int_equal(ddpm_image_read_hw(p, 4, 2, 1, o), DDPM_OK);
    for (int y = 0; y < 4; y++)
        for (int x = 0; x < 2; x++) assert_true(o[y * 2 + x] == unit(pix(x + 2, y)));
    /* 3 wide, 6 tall at H 4 x W 3: the width sets the scale (1): rows 1..4. */
    for (int y = 0; y < 6; y++)
        for (int x = 0; x < 3; x++) g[y * 3 + x] = pix(x, y);
    p = gray_png("w3h6.png", 3, 6, g);
    float o2[4 * 3];
    assert_int_equal(ddpm_image_read_hw(p, 4, 3, 1, o2), DDPM_OK);
    for (int y = 0; y < 4; y++)
        for (int x = 0; x < 3; x++) assert_true(o2[y * 3 + x] == unit(pix(x, y + 1)));
    /* RGB at its own non-square size: every value, CHW order. */
    unsigned char rgb[5 * 3 * 3];
    for (int i = 0; i < 45; i++) rgb[i] = (unsigned char)(i * 5);
    p = tu_tmp("rgb53.png");
    assert_int_equal(ddpm_png_write(p, rgb, 5, 3, 3), DDPM_OK);
    float o3[3 * 3 * 5];
    assert_int_equal(ddpm_image_read_hw(p, 3, 5, 3, o3), DDPM_OK);
    for (int c = 0; c < 3; c++)
        for (int y = 0; y < 3; y++)
            for (int x = 0; x < 5; x++)
                assert_true(o3[(c * 3 + y) * 5 + x] == unit(rgb[(y * 5 + x) * 3 + c]));
}

/* Shrinking by 2: each output pixel the average of a 2x2 block of the cropped region. */
static void check_blocks(const unsigned char *g, int w, int x0, int y0, const float *o, int H,
                         int W) {
    for (int by = 0; by < H; by++)
        for (int bx = 0; bx < W; bx++) {
            int s = 0;
            for (int y = 0; y < 2; y++)
                for (int x = 0; x < 2; x++) s += g[(y0 + 2 * by + y) * w + x0 + 2 * bx + x];
            assert_float_equal(o[by * W + bx], (s / 4.0f) / 127.5f - 1.0f, 1e-4);
        }
}

static void test_shrink_and_crop(void **state) {
    (void)state;
    unsigned char g[12 * 8];
    float o[2 * 4];
    /* 8x8 at H 2 x W 4: scale max(2/8, 4/8) = 1/2, the centre 8 x 4 (rows 2..5). */
    for (int i = 0; i < 64; i++) g[i] = (unsigned char)((i % 8) * 30 + (i / 8) * 3);
    const char *p = gray_png("g88.png", 8, 8, g);
    assert_int_equal(ddpm_image_read_hw(p, 2, 4, 1, o), DDPM_OK);
    check_blocks(g, 8, 0, 2, o, 2, 4);
    /* 12 wide, 4 tall at H 2 x W 4: scale 1/2 set by the height, the centre 8 columns (2..9). */
    for (int i = 0; i < 48; i++) g[i] = (unsigned char)((i % 12) * 20 + (i / 12) * 7);
    p = gray_png("g124.png", 12, 4, g);
    assert_int_equal(ddpm_image_read_hw(p, 2, 4, 1, o), DDPM_OK);
    check_blocks(g, 12, 2, 0, o, 2, 4);
    /* Square outputs are ddpm_image_read's, bit for bit (shrinking, enlarging, exact). */
    for (int i = 0; i < 96; i++) g[i] = (unsigned char)(i * 37 % 251);
    p = gray_png("g128.png", 12, 8, g);
    const int sizes[] = {3, 4, 8, 11};
    for (int k = 0; k < 4; k++) {
        const int s = sizes[k];
        float *a = malloc(sizeof(float) * s * s), *b = malloc(sizeof(float) * s * s);
        assert_int_equal(ddpm_image_read(p, s, 1, a), DDPM_OK);
        assert_int_equal(ddpm_image_read_hw(p, s, s, 1, b), DDPM_OK);
        assert_memory_equal(a, b, sizeof(float) * s * s);
        free(a);
        free(b);
    }
    /* Enlarging a constant image to a non-square size keeps it constant. */
    memset(g, 90, 16);
    p = gray_png("c44.png", 4, 4, g);
    float big[6 * 10];
    assert_int_equal(ddpm_image_read_hw(p, 6, 10, 1, big), DDPM_OK);
    for (int i = 0; i < 60; i++) assert_float_equal(big[i], unit(90), 1e-5);
    /* Bad sizes name the file and the size. */
    tu_expect_status(ddpm_image_read_hw(p, 4, 0, 1, o), DDPM_ERR_INVALID, p, "4x0");
}

static void test_folder_hw(void **state) {
    (void)state;
    char dir[512];
    snprintf(dir, sizeof dir, "%s", tu_tmp("nonsquare"));
    mkdir(dir, 0755);
    unsigned char g[48];
    for (int i = 0; i < 48; i++) g[i] = (unsigned char)(i * 5);
    char path[600];
    snprintf(path, sizeof path, "%s/a.png", dir);
    assert_int_equal(ddpm_png_write(path, g, 12, 4, 1), DDPM_OK); /* exact at 4 x 12 */
    snprintf(path, sizeof path, "%s/b.png", dir);
    assert_int_equal(ddpm_png_write(path, g, 6, 8, 1), DDPM_OK);
    ddpm_image_dataset ds;
    assert_int_equal(ddpm_dataset_folder_hw(dir, 4, 12, 3, 0, &ds), DDPM_OK);
    assert_int_equal(ds.n, 2);
    assert_int_equal(ds.c, 3);
    assert_int_equal(ds.h, 4);
    assert_int_equal(ds.w, 12);
    for (int c = 0; c < 3; c++)
        for (int i = 0; i < 48; i++) assert_true(ds.x[c * 48 + i] == unit(g[i]));
    ddpm_dataset_free(&ds);
    assert_int_equal(ddpm_dataset_folder_hw(dir, 4, 0, 3, 0, &ds), DDPM_ERR_INVALID);
    assert_non_null(strstr(ddpm_last_error(), "invalid image size 4x0"));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_exact_crops),
        cmocka_unit_test(test_shrink_and_crop),
        cmocka_unit_test(test_folder_hw),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

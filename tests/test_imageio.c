/* test_imageio.c - PNG writing, image grids (size, padding, placement, scaling), animated GIFs
 * (frame count, size, palette, delays, loop extension) and reading single images (exact values,
 * transparency, gray conversion, crops, resizing, JPEG/BMP/GIF, truncated and missing files). */
#include "testutil.h"
#include "core/internal.h" /* ddpm_read_file */

#include <dirent.h>
#include <gif_lib.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wshadow"
#pragma GCC diagnostic ignored "-Wsign-compare"
#pragma GCC diagnostic ignored "-Wunused-function"
#pragma GCC diagnostic ignored "-Wunused-parameter"
#pragma GCC diagnostic ignored "-Wunused-but-set-variable"
#pragma GCC diagnostic ignored "-Wmissing-field-initializers"
#pragma GCC diagnostic ignored "-Wimplicit-fallthrough"
#define STB_IMAGE_STATIC
#define STB_IMAGE_IMPLEMENTATION
#include <stb/stb_image.h>
__attribute__((unused)) static void stbi_set_unpremultiply_on_load_thread(int flag) {
    stbi__unpremultiply_on_load_thread(flag);
}
#define STB_IMAGE_WRITE_STATIC
#define STB_IMAGE_WRITE_IMPLEMENTATION
#include <stb/stb_image_write.h>
#pragma GCC diagnostic pop

/* JPEG files made once with stb_image_write (its encoder has a signed shift that UBSan rejects,
 * so the tests carry the bytes; decoding still runs under the sanitizers). Pixel (y, x) of the
 * 8x8 image was (x * 32, y * 32, 100). */
static const unsigned char JPEG_8x8[674] = {
    0xff, 0xd8, 0xff, 0xe0, 0x00, 0x10, 0x4a, 0x46, 0x49, 0x46, 0x00, 0x01, 0x01, 0x00, 0x00, 0x01,
    0x00, 0x01, 0x00, 0x00, 0xff, 0xdb, 0x00, 0x84, 0x00, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01,
    0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01,
    0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01,
    0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01,
    0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01,
    0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01,
    0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01,
    0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01,
    0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0x01, 0xff, 0xc0, 0x00, 0x11, 0x08, 0x00,
    0x08, 0x00, 0x08, 0x03, 0x01, 0x11, 0x00, 0x02, 0x11, 0x01, 0x03, 0x11, 0x01, 0xff, 0xc4, 0x01,
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
    0xfa, 0xff, 0xda, 0x00, 0x0c, 0x03, 0x01, 0x00, 0x02, 0x11, 0x03, 0x11, 0x00, 0x3f, 0x00, 0xf9,
    0xd3, 0xf6, 0x51, 0xff, 0x00, 0x82, 0x54, 0xff, 0x00, 0xc8, 0x37, 0xfe, 0x29, 0xbf, 0xf9, 0xe5,
    0xff, 0x00, 0x2e, 0x9f, 0x4f, 0xf6, 0x2b, 0xe3, 0xfc, 0x62, 0xfa, 0x60, 0xff, 0x00, 0xbd, 0x7f,
    0xc2, 0xa7, 0xf3, 0xff, 0x00, 0xcb, 0xef, 0x5f, 0xef, 0x1d, 0x1f, 0xb3, 0x6f, 0xe9, 0xe9, 0xff,
    0x00, 0x22, 0x1f, 0xf8, 0x5a, 0xff, 0x00, 0xa0, 0x6f, 0xf9, 0x88, 0xff, 0x00, 0x0f, 0xf7, 0x8f,
    0xff, 0xd9,
};

/* Reads a PNG back with stb_image at its own channel count. */
static unsigned char *read_png(const char *path, int *w, int *h, int *c) {
    unsigned char *px = stbi_load(path, w, h, c, 0);
    if (!px) fail_msg("cannot read back %s: %s", path, stbi_failure_reason());
    return px;
}

static float unit(int p) { return p / 127.5f - 1.0f; } /* the exact mapping of 8-bit values */

/* ---- PNG -------------------------------------------------------------------------------- */

static void test_pixel_mapping(void **state) {
    (void)state;
    assert_int_equal(ddpm_pixel_from_unit(-1.0f), 0);
    assert_int_equal(ddpm_pixel_from_unit(1.0f), 255);
    assert_int_equal(ddpm_pixel_from_unit(0.0f), 128); /* 127.5 rounds up */
    assert_int_equal(ddpm_pixel_from_unit(-0.5f), 64);  /* 63.75 */
    assert_int_equal(ddpm_pixel_from_unit(-7.0f), 0);
    assert_int_equal(ddpm_pixel_from_unit(3.0f), 255);
    assert_int_equal(ddpm_pixel_from_unit(NAN), 0);
    assert_int_equal(ddpm_pixel_from_unit(INFINITY), 255);
    /* Every 8-bit value survives the round trip through [-1, 1]. */
    for (int p = 0; p < 256; p++) assert_int_equal(ddpm_pixel_from_unit(unit(p)), p);
}

static void test_png_write(void **state) {
    (void)state;
    for (int ch = 1; ch <= 4; ch++) {
        const int w = 5, h = 3;
        unsigned char px[5 * 3 * 4];
        for (int i = 0; i < w * h * ch; i++) px[i] = (unsigned char)(i * 17 + ch);
        char name[32];
        snprintf(name, sizeof name, "png%d.png", ch);
        const char *path = tu_tmp(name);
        assert_int_equal(ddpm_png_write(path, px, w, h, ch), DDPM_OK);
        int rw, rh, rc;
        unsigned char *back = read_png(path, &rw, &rh, &rc);
        assert_int_equal(rw, w);
        assert_int_equal(rh, h);
        assert_int_equal(rc, ch);
        assert_memory_equal(back, px, (size_t)w * h * ch);
        stbi_image_free(back);
    }
    unsigned char px[4] = {0};
    tu_expect_status(ddpm_png_write(tu_tmp("bad.png"), px, 2, 2, 5), DDPM_ERR_INVALID, "bad.png",
                     NULL);
    tu_expect_status(ddpm_png_write(tu_tmp("bad.png"), px, 0, 2, 1), DDPM_ERR_INVALID, "bad.png",
                     NULL);
    const char *nodir = tu_tmp("no/such/dir/x.png");
    tu_expect_status(ddpm_png_write(nodir, px, 2, 2, 1), DDPM_ERR_IO, "no/such/dir/x.png", NULL);
}

/* ---- grids ------------------------------------------------------------------------------- */

/* A distinct value in [-1, 1] for image n, channel c, pixel (y, x) that maps to an exact byte. */
static int cell_byte(int n, int c, int y, int x) {
    return (n * 50 + c * 20 + y * 7 + x * 3 + 9) % 256;
}

static void test_grid_layout(void **state) {
    (void)state;
    const int N = 5, C = 3, H = 2, W = 3;
    float imgs[5 * 3 * 2 * 3];
    for (int n = 0; n < N; n++)
        for (int c = 0; c < C; c++)
            for (int y = 0; y < H; y++)
                for (int x = 0; x < W; x++)
                    imgs[((n * C + c) * H + y) * W + x] = unit(cell_byte(n, c, y, x));
    for (int scale = 1; scale <= 3; scale += 2) {
        uint8_t *px;
        int gw, gh;
        const int pad = 2, nrow = 2, padv = 200;
        assert_int_equal(ddpm_image_grid(imgs, N, C, H, W, nrow, pad, padv, scale, &px, &gw, &gh),
                         DDPM_OK);
        /* 2 columns, 3 rows, as make_grid: ncol * (W*s + pad) + pad. */
        assert_int_equal(gw, 2 * (W * scale + pad) + pad);
        assert_int_equal(gh, 3 * (H * scale + pad) + pad);
        for (int gy = 0; gy < gh; gy++)
            for (int gx = 0; gx < gw; gx++) {
                /* Which cell, if any, covers (gx, gy)? */
                int col = (gx - pad) / (W * scale + pad), row = (gy - pad) / (H * scale + pad);
                int lx = (gx - pad) % (W * scale + pad), ly = (gy - pad) % (H * scale + pad);
                int n = row * nrow + col;
                int inside = gx >= pad && gy >= pad && lx < W * scale && ly < H * scale && n < N;
                for (int c = 0; c < C; c++) {
                    int want = inside ? cell_byte(n, c, ly / scale, lx / scale) : padv;
                    int got = px[((size_t)gy * gw + gx) * C + c];
                    if (got != want)
                        fail_msg("scale %d pixel (%d, %d) channel %d: got %d, expected %d", scale,
                                 gx, gy, c, got, want);
                }
            }
        free(px);
    }
    /* Fewer images than nrow: one row of N; gray images give a gray grid. */
    float g[2 * 1 * 4 * 4];
    for (int i = 0; i < 32; i++) g[i] = i < 16 ? -1.0f : 1.0f;
    uint8_t *px;
    int gw, gh;
    assert_int_equal(ddpm_image_grid(g, 2, 1, 4, 4, 8, 1, 0, 1, &px, &gw, &gh), DDPM_OK);
    assert_int_equal(gw, 2 * 5 + 1);
    assert_int_equal(gh, 6);
    assert_int_equal(px[1 * gw + 1], 0);       /* image 0 */
    assert_int_equal(px[1 * gw + 6], 255);     /* image 1 */
    assert_int_equal(px[1 * gw + 5], 0);       /* padding */
    free(px);
    /* Bad arguments. */
    assert_int_equal(ddpm_image_grid(g, 2, 2, 4, 4, 8, 1, 0, 1, &px, &gw, &gh), DDPM_ERR_INVALID);
    assert_null(px);
    assert_int_equal(ddpm_image_grid(g, 2, 1, 4, 4, 0, 1, 0, 1, &px, &gw, &gh), DDPM_ERR_INVALID);
    assert_int_equal(ddpm_image_grid(g, 2, 1, 4, 4, 2, 1, 0, 0, &px, &gw, &gh), DDPM_ERR_INVALID);
}

static void test_grid_png(void **state) {
    (void)state;
    float imgs[3 * 3 * 4 * 4];
    for (int i = 0; i < 3 * 3 * 16; i++) imgs[i] = sinf((float)i);
    const char *path = tu_tmp("grid.png");
    assert_int_equal(ddpm_grid_write_png(path, imgs, 3, 3, 4, 4, 2, 4), DDPM_OK);
    int w, h, c;
    unsigned char *px = read_png(path, &w, &h, &c);
    assert_int_equal(w, 2 * (16 + 2) + 2);
    assert_int_equal(h, 2 * (16 + 2) + 2);
    assert_int_equal(c, 3);
    assert_int_equal(px[0], 0); /* padding 0 */
    /* Image 0, pixel (0, 0), channel 1 at grid (2, 2) and its 4x4 enlargement. */
    const int want = ddpm_pixel_from_unit(imgs[16]);
    assert_int_equal(px[(2 * w + 2) * 3 + 1], want);
    assert_int_equal(px[(5 * w + 5) * 3 + 1], want);
    stbi_image_free(px);
    tu_expect_status(ddpm_grid_write_png(path, imgs, 3, 2, 4, 4, 2, 4), DDPM_ERR_INVALID,
                     "grid.png", NULL);
}

/* ---- GIF -------------------------------------------------------------------------------- */

typedef struct {
    int frames, w, h, loops;
    int delays[16];
} gif_info;

/* Reads a GIF with giflib and returns its frames as RGB (frame k at rgb + k * w * h * 3). */
static unsigned char *read_gif(const char *path, gif_info *info) {
    int err = 0;
    GifFileType *gf = DGifOpenFileName(path, &err);
    if (!gf) fail_msg("DGifOpenFileName(%s): %s", path, GifErrorString(err));
    if (DGifSlurp(gf) != GIF_OK) fail_msg("DGifSlurp(%s): %s", path, GifErrorString(gf->Error));
    memset(info, 0, sizeof *info);
    info->frames = gf->ImageCount;
    info->w = gf->SWidth;
    info->h = gf->SHeight;
    info->loops = -1;
    /* giflib attaches the extensions before the first image to that image. */
    if (gf->ImageCount > 0) {
        const SavedImage *im0 = &gf->SavedImages[0];
        for (int i = 0; i + 1 < im0->ExtensionBlockCount; i++) {
            const ExtensionBlock *e = &im0->ExtensionBlocks[i];
            if (e->Function == APPLICATION_EXT_FUNC_CODE && e->ByteCount == 11 &&
                memcmp(e->Bytes, "NETSCAPE2.0", 11) == 0) {
                const ExtensionBlock *d = &im0->ExtensionBlocks[i + 1];
                if (d->Function == CONTINUE_EXT_FUNC_CODE && d->ByteCount == 3 &&
                    d->Bytes[0] == 1)
                    info->loops = d->Bytes[1] | d->Bytes[2] << 8;
            }
        }
    }
    const size_t fsz = (size_t)info->w * info->h * 3;
    unsigned char *rgb = malloc(fsz * (size_t)(info->frames ? info->frames : 1));
    assert_non_null(rgb);
    for (int k = 0; k < gf->ImageCount; k++) {
        SavedImage *im = &gf->SavedImages[k];
        assert_int_equal(im->ImageDesc.Width, info->w);
        assert_int_equal(im->ImageDesc.Height, info->h);
        GraphicsControlBlock gcb;
        assert_int_equal(DGifSavedExtensionToGCB(gf, k, &gcb), GIF_OK);
        if (k < 16) info->delays[k] = gcb.DelayTime;
        ColorMapObject *map = im->ImageDesc.ColorMap ? im->ImageDesc.ColorMap : gf->SColorMap;
        assert_non_null(map);
        for (size_t i = 0; i < (size_t)info->w * info->h; i++) {
            int idx = im->RasterBits[i];
            assert_true(idx < map->ColorCount);
            rgb[k * fsz + 3 * i] = map->Colors[idx].Red;
            rgb[k * fsz + 3 * i + 1] = map->Colors[idx].Green;
            rgb[k * fsz + 3 * i + 2] = map->Colors[idx].Blue;
        }
    }
    DGifCloseFile(gf, &err);
    return rgb;
}

/* No temporary files are left next to path's file. */
static void assert_no_temp_files(void) {
    DIR *d = opendir(tu_tmpdir());
    assert_non_null(d);
    struct dirent *e;
    while ((e = readdir(d)))
        if (strstr(e->d_name, ".tmp.")) fail_msg("temporary file %s left behind", e->d_name);
    closedir(d);
}

static void test_gif_gray(void **state) {
    (void)state;
    const int w = 10, h = 7, frames = 3;
    const char *path = tu_tmp("gray.gif");
    ddpm_gif *g;
    assert_int_equal(ddpm_gif_open(path, w, h, 1, 5, &g), DDPM_OK);
    unsigned char px[3][70];
    for (int k = 0; k < frames; k++) {
        for (int i = 0; i < w * h; i++) px[k][i] = (unsigned char)(i * 3 + k * 40);
        assert_int_equal(ddpm_gif_add_frame(g, px[k]), DDPM_OK);
    }
    assert_int_equal(access(path, F_OK), -1); /* nothing before close */
    assert_int_equal(ddpm_gif_close(g), DDPM_OK);
    gif_info info;
    unsigned char *rgb = read_gif(path, &info);
    assert_int_equal(info.frames, frames);
    assert_int_equal(info.w, w);
    assert_int_equal(info.h, h);
    assert_int_equal(info.loops, 0); /* forever */
    assert_int_equal(info.delays[0], 5);
    assert_int_equal(info.delays[1], 5);
    assert_int_equal(info.delays[2], 200); /* the last frame is held */
    for (int k = 0; k < frames; k++)
        for (int i = 0; i < w * h; i++)
            for (int c = 0; c < 3; c++) assert_int_equal(rgb[(k * w * h + i) * 3 + c], px[k][i]);
    free(rgb);
    assert_no_temp_files();
}

static void test_gif_rgb(void **state) {
    (void)state;
    /* Frame 0: few colours (exact palette). Frame 1: a smooth 64x64 gradient with 4096 colours
     * (median cut). Frame 2: the grid of a few sprites. */
    const int w = 64, h = 64;
    const char *path = tu_tmp("rgb.gif");
    ddpm_gif *g;
    assert_int_equal(ddpm_gif_open(path, w, h, 3, 10, &g), DDPM_OK);
    ddpm_gif_set_final_delay(g, 77);
    unsigned char *f0 = malloc(w * h * 3), *f1 = malloc(w * h * 3);
    assert_non_null(f0);
    assert_non_null(f1);
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++) {
            unsigned char *p = f0 + (y * w + x) * 3;
            p[0] = (unsigned char)((x / 8) * 36);
            p[1] = (unsigned char)((y / 8) * 36);
            p[2] = (unsigned char)(((x + y) % 4) * 60); /* 8 * 8 * 4 = 256 colours */
            unsigned char *q = f1 + (y * w + x) * 3;
            q[0] = (unsigned char)(x * 4);
            q[1] = (unsigned char)(y * 4);
            q[2] = (unsigned char)(255 - (x + y) * 2);
        }
    assert_int_equal(ddpm_gif_add_frame(g, f0), DDPM_OK);
    assert_int_equal(ddpm_gif_add_frame(g, f1), DDPM_OK);
    assert_int_equal(ddpm_gif_close(g), DDPM_OK);
    gif_info info;
    unsigned char *rgb = read_gif(path, &info);
    assert_int_equal(info.frames, 2);
    assert_int_equal(info.w, w);
    assert_int_equal(info.h, h);
    assert_int_equal(info.delays[0], 10);
    assert_int_equal(info.delays[1], 77);
    assert_memory_equal(rgb, f0, (size_t)w * h * 3);
    double sum = 0;
    int worst = 0;
    for (int i = 0; i < w * h * 3; i++) {
        int d = abs(rgb[w * h * 3 + i] - f1[i]);
        sum += d;
        if (d > worst) worst = d;
    }
    const double mean = sum / (w * h * 3);
    print_message("gradient frame: mean |error| %.2f, worst %d levels\n", mean, worst);
    assert_true(mean < 4.0);
    assert_true(worst <= 16);
    free(rgb);
    free(f0);
    free(f1);
    assert_no_temp_files();
}

static void test_gif_errors(void **state) {
    (void)state;
    ddpm_gif *g;
    const char *nodir = tu_tmp("no/such/dir/a.gif");
    tu_expect_status(ddpm_gif_open(nodir, 4, 4, 3, 5, &g), DDPM_ERR_IO, "no/such/dir/a.gif", NULL);
    assert_null(g);
    tu_expect_status(ddpm_gif_open(tu_tmp("c2.gif"), 4, 4, 2, 5, &g), DDPM_ERR_INVALID, "c2.gif",
                     NULL);
    tu_expect_status(ddpm_gif_open(tu_tmp("w0.gif"), 0, 4, 1, 5, &g), DDPM_ERR_INVALID, "w0.gif",
                     NULL);
    const char *empty = tu_tmp("empty.gif");
    assert_int_equal(ddpm_gif_open(empty, 4, 4, 1, 5, &g), DDPM_OK);
    tu_expect_status(ddpm_gif_close(g), DDPM_ERR_INVALID, "empty.gif", "no frames");
    assert_int_equal(access(empty, F_OK), -1);
    /* Discarding writes nothing. */
    const char *disc = tu_tmp("discard.gif");
    assert_int_equal(ddpm_gif_open(disc, 4, 4, 3, 5, &g), DDPM_OK);
    unsigned char px[48] = {0};
    assert_int_equal(ddpm_gif_add_frame(g, px), DDPM_OK);
    assert_int_equal(ddpm_gif_add_frame(g, px), DDPM_OK);
    ddpm_gif_discard(g);
    ddpm_gif_discard(NULL);
    assert_int_equal(access(disc, F_OK), -1);
}

/* ---- reading images ---------------------------------------------------------------------- */

static void test_read_exact(void **state) {
    (void)state;
    /* A 3x2 RGB image at its own size: every value exactly p / 127.5 - 1, CHW order. Being
     * non-square, the centre 2x2 (columns 0..1 of 3: offset (3 - 2) / 2 = 0) is kept. */
    const unsigned char rgb[2 * 3 * 3] = {10, 20, 30,  40, 50, 60,  70, 80, 90,
                                          255, 0, 128, 1, 2, 3,    4, 5, 6};
    const char *p = tu_tmp("rgb32.png");
    assert_int_equal(ddpm_png_write(p, rgb, 3, 2, 3), DDPM_OK);
    float out[3 * 2 * 2];
    assert_int_equal(ddpm_image_read(p, 2, 3, out), DDPM_OK);
    for (int c = 0; c < 3; c++)
        for (int y = 0; y < 2; y++)
            for (int x = 0; x < 2; x++)
                assert_true(out[(c * 2 + y) * 2 + x] == unit(rgb[(y * 3 + x) * 3 + c]));
    /* A 4-wide image keeps columns 1..2. */
    unsigned char wide[1 * 4 * 3] = {0, 0, 0, 10, 10, 10, 20, 20, 20, 30, 30, 30};
    p = tu_tmp("wide.png");
    assert_int_equal(ddpm_png_write(p, wide, 4, 1, 3), DDPM_OK);
    float o1[3];
    assert_int_equal(ddpm_image_read(p, 1, 3, o1), DDPM_OK);
    /* 4x1 -> 1x1 at scale 1: integer crop at x0 = (4 - 1) / 2 = 1. */
    assert_true(o1[0] == unit(10));

    /* Gray: replicated to RGB, and luminance of colour pixels for channels 1. */
    const unsigned char gray[4] = {0, 77, 200, 255};
    p = tu_tmp("gray.png");
    assert_int_equal(ddpm_png_write(p, gray, 2, 2, 1), DDPM_OK);
    float g3[12], g1[4];
    assert_int_equal(ddpm_image_read(p, 2, 3, g3), DDPM_OK);
    assert_int_equal(ddpm_image_read(p, 2, 1, g1), DDPM_OK);
    for (int i = 0; i < 4; i++) {
        assert_true(g1[i] == unit(gray[i]));
        for (int c = 0; c < 3; c++) assert_true(g3[c * 4 + i] == unit(gray[i]));
    }
    float l1[4];
    p = tu_tmp("rgb22.png");
    const unsigned char col[12] = {255, 0, 0, 0, 255, 0, 0, 0, 255, 100, 150, 200};
    assert_int_equal(ddpm_png_write(p, col, 2, 2, 3), DDPM_OK);
    assert_int_equal(ddpm_image_read(p, 2, 1, l1), DDPM_OK);
    const float lum[4] = {0.299f * 255, 0.587f * 255, 0.114f * 255,
                          0.299f * 100 + 0.587f * 150 + 0.114f * 200};
    for (int i = 0; i < 4; i++) assert_float_equal(l1[i], lum[i] / 127.5f - 1.0f, 1e-5);

    /* RGBA: composited onto white. Opaque red, transparent black, half-transparent blue. */
    const unsigned char rgba[16] = {255, 0, 0, 255, 0, 0, 0, 0, 0, 0, 255, 128, 10, 20, 30, 255};
    p = tu_tmp("rgba.png");
    assert_int_equal(ddpm_png_write(p, rgba, 2, 2, 4), DDPM_OK);
    float a3[12];
    assert_int_equal(ddpm_image_read(p, 2, 3, a3), DDPM_OK);
    assert_true(a3[0] == 1.0f && a3[4] == -1.0f && a3[8] == -1.0f);       /* red */
    assert_true(a3[1] == 1.0f && a3[5] == 1.0f && a3[9] == 1.0f);         /* white */
    const float half = 255.0f * (1.0f - 128 / 255.0f);                    /* 127 */
    assert_float_equal(a3[2], half / 127.5f - 1.0f, 1e-5);                /* blue over white */
    assert_float_equal(a3[10], 1.0f, 1e-5);
    assert_true(a3[3] == unit(10) && a3[7] == unit(20) && a3[11] == unit(30));
}

static void test_read_resize(void **state) {
    (void)state;
    /* 4x4 -> 2x2 by an area average of each 2x2 block. */
    unsigned char g[16];
    for (int i = 0; i < 16; i++) g[i] = (unsigned char)(i * 16);
    const char *p = tu_tmp("g44.png");
    assert_int_equal(ddpm_png_write(p, g, 4, 4, 1), DDPM_OK);
    float o[4];
    assert_int_equal(ddpm_image_read(p, 2, 1, o), DDPM_OK);
    for (int by = 0; by < 2; by++)
        for (int bx = 0; bx < 2; bx++) {
            int s = 0;
            for (int y = 0; y < 2; y++)
                for (int x = 0; x < 2; x++) s += g[(2 * by + y) * 4 + 2 * bx + x];
            assert_float_equal(o[by * 2 + bx], (s / 4.0f) / 127.5f - 1.0f, 1e-4);
        }
    /* 8x4 (wide) -> 2x2: the centre 4x4 square (columns 2..5), averaged in 2x2 blocks. */
    unsigned char wg[32];
    for (int i = 0; i < 32; i++) wg[i] = (unsigned char)((i % 8) * 30 + (i / 8) * 5);
    p = tu_tmp("g84.png");
    assert_int_equal(ddpm_png_write(p, wg, 8, 4, 1), DDPM_OK);
    assert_int_equal(ddpm_image_read(p, 2, 1, o), DDPM_OK);
    for (int by = 0; by < 2; by++)
        for (int bx = 0; bx < 2; bx++) {
            int s = 0;
            for (int y = 0; y < 2; y++)
                for (int x = 0; x < 2; x++) s += wg[(2 * by + y) * 8 + 2 + 2 * bx + x];
            assert_float_equal(o[by * 2 + bx], (s / 4.0f) / 127.5f - 1.0f, 1e-4);
        }
    /* Enlarging a constant image keeps it constant; a ramp stays within its range and monotone. */
    unsigned char r[4] = {0, 255, 0, 255};
    p = tu_tmp("ramp.png");
    assert_int_equal(ddpm_png_write(p, r, 2, 2, 1), DDPM_OK);
    float big[36];
    assert_int_equal(ddpm_image_read(p, 6, 1, big), DDPM_OK);
    for (int y = 0; y < 6; y++) {
        for (int x = 0; x < 6; x++) {
            assert_true(big[y * 6 + x] >= -1.0f && big[y * 6 + x] <= 1.0f);
            if (x) assert_true(big[y * 6 + x] >= big[y * 6 + x - 1]);
        }
        assert_float_equal(big[y * 6], -1.0f, 1e-5);
        assert_float_equal(big[y * 6 + 5], 1.0f, 1e-5);
    }
}

static void test_read_formats(void **state) {
    (void)state;
    unsigned char px[8 * 8 * 3];
    for (int y = 0; y < 8; y++)
        for (int x = 0; x < 8; x++) {
            px[(y * 8 + x) * 3] = (unsigned char)(x * 32);
            px[(y * 8 + x) * 3 + 1] = (unsigned char)(y * 32);
            px[(y * 8 + x) * 3 + 2] = 100;
        }
    float out[3 * 64];
    /* BMP: lossless. */
    const char *p = tu_tmp("a.bmp");
    assert_true(stbi_write_bmp(p, 8, 8, 3, px) != 0);
    assert_int_equal(ddpm_image_read(p, 8, 3, out), DDPM_OK);
    for (int c = 0; c < 3; c++)
        for (int i = 0; i < 64; i++) assert_true(out[c * 64 + i] == unit(px[i * 3 + c]));
    /* JPEG at quality 100: close. Upper-case extension. */
    p = tu_tmp("a.JPG");
    tu_write_file(p, JPEG_8x8, sizeof JPEG_8x8);
    assert_true(ddpm_image_ext_supported(p));
    assert_int_equal(ddpm_image_read(p, 8, 3, out), DDPM_OK);
    for (int c = 0; c < 3; c++)
        for (int i = 0; i < 64; i++) assert_float_equal(out[c * 64 + i], unit(px[i * 3 + c]), 0.05);
    /* GIF: the first frame (written by our own writer). */
    p = tu_tmp("two.gif");
    ddpm_gif *g;
    unsigned char f0[64], f1[64];
    for (int i = 0; i < 64; i++) {
        f0[i] = (unsigned char)(i * 4);
        f1[i] = 7;
    }
    assert_int_equal(ddpm_gif_open(p, 8, 8, 1, 10, &g), DDPM_OK);
    assert_int_equal(ddpm_gif_add_frame(g, f0), DDPM_OK);
    assert_int_equal(ddpm_gif_add_frame(g, f1), DDPM_OK);
    assert_int_equal(ddpm_gif_close(g), DDPM_OK);
    assert_int_equal(ddpm_image_read(p, 8, 1, out), DDPM_OK);
    for (int i = 0; i < 64; i++) assert_true(out[i] == unit(f0[i]));

    assert_true(ddpm_image_ext_supported("x/y.jpeg"));
    assert_true(ddpm_image_ext_supported("y.Png"));
    assert_false(ddpm_image_ext_supported("y.txt"));
    assert_false(ddpm_image_ext_supported("png"));
    assert_false(ddpm_image_ext_supported("dir.png/file"));
}

static void test_read_errors(void **state) {
    (void)state;
    float out[3 * 16 * 16];
    const char *p = tu_tmp("nothere.png");
    tu_expect_status(ddpm_image_read(p, 16, 3, out), DDPM_ERR_IO, p, NULL);
    /* A truncated PNG. */
    unsigned char px[16 * 16 * 3];
    for (int i = 0; i < (int)sizeof px; i++) px[i] = (unsigned char)(i * 7919 % 251);
    p = tu_tmp("trunc.png");
    assert_int_equal(ddpm_png_write(p, px, 16, 16, 3), DDPM_OK);
    FILE *f = fopen(p, "rb");
    fseek(f, 0, SEEK_END);
    long len = ftell(f);
    fclose(f);
    assert_int_equal(truncate(p, len / 2), 0);
    tu_expect_status(ddpm_image_read(p, 16, 3, out), DDPM_ERR_FORMAT, p, "cannot decode");
    /* Not an image at all. */
    p = tu_tmp("text.png");
    tu_write_text(p, "hello, I am not a PNG\n");
    tu_expect_status(ddpm_image_read(p, 16, 3, out), DDPM_ERR_FORMAT, p, "cannot decode");
    /* An empty file. */
    p = tu_tmp("empty.jpg");
    tu_write_file(p, NULL, 0);
    tu_expect_status(ddpm_image_read(p, 16, 3, out), DDPM_ERR_FORMAT, p, NULL);
    /* Bad arguments. */
    tu_expect_status(ddpm_image_read(p, 16, 2, out), DDPM_ERR_INVALID, p, NULL);
    tu_expect_status(ddpm_image_read(p, 0, 3, out), DDPM_ERR_INVALID, p, NULL);
}

/* Image files that must be refused before decoding (tests/fixtures/regress/): BMPs announcing
 * 32 x 16,777,215 or 8192 x 8192 pixels in 118 bytes (the second was decoded: 7 s and 526 MB;
 * the first asks for 8 GB), BMPs with a side of 0 (accepted; UBSan: -nan converted to int in
 * stb_image_resize.h), and a JPEG whose Huffman table counts sum to 4,080 (stb_image 2.27 writes
 * them past its 257-entry arrays; UBSan: index 257 out of bounds in stbi__build_huffman). Each
 * error names the file. */
static void test_read_refused(void **state) {
    (void)state;
    const struct {
        const char *file, *fragment;
    } cases[] = {
        {"regress/image-bmp-32x16777215.bmp", "32 x 16777215 pixels, more than the limit"},
        {"regress/image-bmp-8192x8192.bmp", "8192 x 8192 pixels, more than the limit"},
        {"regress/image-bmp-zero-width.bmp", "0 x 4 pixels (an empty side)"},
        {"regress/image-bmp-zero-height.bmp", "4 x 0 pixels (an empty side)"},
        /* JPEGs now go to libjpeg-turbo, which refuses the table itself */
        {"regress/image-jpeg-dht-overflow.jpg", "corrupt or truncated JPEG (Bogus Huffman table"},
        /* found by fuzz_image: the same behind 46 0xFF bytes before the SOI marker's 0xD8, which
         * stb_image skipped (libjpeg-turbo refuses the fill bytes) */
        {"regress/image-jpeg-fill-bytes-dht.jpg", "corrupt or truncated JPEG"},
        /* found by fuzz_image in CI (it was in fuzz/open/): a scan using a quantisation table the
         * file never defines; stb_image multiplied by whatever its previous image left there
         * (UBSan: signed integer overflow -62718 * 34308 in stbi__jpeg_decode_block) */
        {"regress/image-jpeg-dc-overflow.jpg", "Quantization table 0x00 was not defined"},
        /* found by fuzz_image (a 12 s timeout under ASan): a TGA header announcing 3840 x 3855
         * pixels, decoded from zeros past the end of the file */
        {"regress/image-tga-51-bytes-15-megapixels.tga",
         "3840 x 3855 pixels, more than a 51-byte file can hold"},
        /* found by fuzz_image: a PPM width of 62222222222222... digits (UBSan: signed integer
         * overflow in stbi__pnm_getinteger) */
        {"regress/image-ppm-long-number.ppm", "corrupt PNM (a header number of more than 9 digits)"},
        /* found by fuzz_image: a 77-byte PNG whose IDAT announces 0x20000014 bytes (stb_image
         * allocated them before reading: 512 MB) */
        {"regress/image-png-idat-512mb.png", "corrupt or truncated PNG"},
        /* truncated files (two thirds of the fuzz seeds): stb_image decoded the missing pixels as
         * zeros (or left TGA rows uninitialised) */
        {"regress/image-truncated-bmp.bmp", "truncated BMP (68 bytes; its headers need at least 101)"},
        {"regress/image-truncated-tga.tga", "truncated TGA (20 bytes; its headers need at least 30)"},
        {"regress/image-truncated-rle.tga", "truncated TGA (40 bytes; its headers need at least 47)"},
        {"regress/image-truncated-ppm.ppm", "truncated PNM (19 bytes; its headers need at least 29)"},
        {"regress/image-truncated-gif.gif", "truncated GIF (28 bytes"},
        {"regress/image-truncated-png.png", "corrupt or truncated PNG (the file ends early"},
        {"regress/image-truncated-jpeg.jpg", "corrupt or truncated JPEG (Premature end of JPEG file)"},
        /* the same for PSD and HDR (the fuzz seeds cut short): zeros, or uninitialised pixels */
        {"regress/image-truncated-psd.psd", "truncated PSD (53 bytes; its headers need at least 58)"},
        {"regress/image-truncated-hdr.hdr", "truncated HDR (55 bytes; its headers need at least 61)"},
        {"regress/image-truncated-rle.hdr", "truncated HDR (76 bytes; its headers need at least 77)"},
    };
    float out[3 * 8 * 8];
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char path[4096];
        snprintf(path, sizeof path, "%s", tu_fixture_path(cases[i].file));
        for (int c = 1; c <= 3; c += 2)
            tu_expect_status(ddpm_image_read(path, 8, c, out), DDPM_ERR_FORMAT, path,
                             cases[i].fragment);
    }
}

/* Found by fuzz_image (a 15 s timeout under ASan): a 62722 x 2 GIF, whose 2 x 2 centre square
 * stb_image_resize filtered across the whole 62722-pixel width; the square is now cut out before
 * resizing. It reads, every value in range. */
static void test_read_wide_gif(void **state) {
    (void)state;
    char path[4096];
    snprintf(path, sizeof path, "%s", tu_fixture_path("regress/image-gif-62722x2-slow-resize.gif"));
    int w, h, c;
    assert_int_equal(ddpm_image_info(path, &w, &h, &c), DDPM_OK);
    assert_int_equal(w, 62722);
    assert_int_equal(h, 2);
    float out[3 * 16 * 16];
    if (ddpm_image_read(path, 16, 3, out)) fail_msg("%s", ddpm_last_error());
    for (int i = 0; i < 3 * 16 * 16; i++) assert_true(out[i] >= -1.0f && out[i] <= 1.0f);
}

/* Big-endian numbers into a byte buffer, for the files built by hand below. */
static void put_be(unsigned char *b, size_t *n, unsigned v, int bytes) {
    for (int k = bytes - 1; k >= 0; k--) b[(*n)++] = (unsigned char)(v >> (8 * k));
}

/* An 8 x 8 RGB PSD of px (interleaved), raw or PackBits-coded (even rows literal, odd rows one
 * run of their first pixel), written by hand after the format's header (stb_image reads it);
 * with alpha, a fourth channel of values between 1 and 254 (alpha(x, y)). */
static unsigned char alpha_at(int y, int x) { return (unsigned char)(1 + (y * 8 + x) * 37 % 254); }
static size_t psd_8x8(unsigned char *b, const unsigned char *px, int rle, int alpha) {
    const int nch = alpha ? 4 : 3;
    size_t n = 0;
    memcpy(b, "8BPS", 4), n = 4;
    put_be(b, &n, 1, 2);                            /* version */
    put_be(b, &n, 0, 4), put_be(b, &n, 0, 2);       /* reserved */
    put_be(b, &n, (unsigned)nch, 2);                /* channels */
    put_be(b, &n, 8, 4), put_be(b, &n, 8, 4);       /* height, width */
    put_be(b, &n, 8, 2), put_be(b, &n, 3, 2);       /* depth, RGB */
    for (int k = 0; k < 3; k++) put_be(b, &n, 0, 4); /* mode data, resources, layers */
    put_be(b, &n, (unsigned)rle, 2);
    if (rle)
        for (int r = 0; r < 8 * nch; r++) put_be(b, &n, r % 2 ? 2 : 9, 2); /* row byte counts */
    for (int c = 0; c < nch; c++)
        for (int y = 0; y < 8; y++) {
            if (rle && y % 2) {
                b[n++] = 257 - 8;
                b[n++] = c == 3 ? alpha_at(y, 0) : px[y * 24 + c];
                continue;
            }
            if (rle) b[n++] = 7;
            for (int x = 0; x < 8; x++) b[n++] = c == 3 ? alpha_at(y, x) : px[(y * 8 + x) * 3 + c];
        }
    return n;
}

/* A Radiance HDR of px: 4 x 2 flat (below 8 wide) or 8 x 8 run-length coded (per row: literal,
 * run, literal + run, and a run of the exponent). */
static size_t hdr_file(unsigned char *b, const unsigned char *px, int rle) {
    size_t n = (size_t)sprintf((char *)b, "#?RADIANCE\nFORMAT=32-bit_rle_rgbe\n\n-Y %d +X %d\n",
                               rle ? 8 : 2, rle ? 8 : 4);
    if (!rle) {
        for (int i = 0; i < 8; i++) {
            memcpy(b + n, px + 3 * i, 3);
            b[n + 3] = 129;
            n += 4;
        }
        return n;
    }
    for (int y = 0; y < 8; y++) {
        const unsigned char *row = px + y * 24;
        b[n++] = 2, b[n++] = 2, put_be(b, &n, 8, 2);
        b[n++] = 8;
        for (int x = 0; x < 8; x++) b[n++] = row[x * 3];
        b[n++] = 128 + 8, b[n++] = row[1];
        b[n++] = 4;
        for (int x = 0; x < 4; x++) b[n++] = row[x * 3 + 2];
        b[n++] = 128 + 4, b[n++] = row[14];
        b[n++] = 128 + 8, b[n++] = 129;
    }
    return n;
}

/* An 8 x 8 Softimage PIC of px: one RGB packet, uncompressed or mixed run-length (per row 4 raw
 * pixels, then a run of 4). */
static size_t pic_8x8(unsigned char *b, const unsigned char *px, int rle) {
    size_t n = 0;
    put_be(b, &n, 0x5380F634u, 4);
    memset(b + n, 0, 84), n += 84; /* version, comment, id */
    memcpy(b + n, "PICT", 4), n += 4;
    put_be(b, &n, 8, 2), put_be(b, &n, 8, 2); /* width, height */
    put_be(b, &n, 0x3F800000u, 4);              /* ratio 1.0 */
    put_be(b, &n, 3, 2), put_be(b, &n, 0, 2);   /* fields, pad */
    b[n++] = 0, b[n++] = 8, b[n++] = rle ? 2 : 0, b[n++] = 0xE0; /* one packet: R, G, B */
    for (int y = 0; y < 8; y++) {
        if (!rle) {
            memcpy(b + n, px + y * 24, 24), n += 24;
            continue;
        }
        b[n++] = 3;
        memcpy(b + n, px + y * 24, 12), n += 12;
        b[n++] = 127 + 4;
        memcpy(b + n, px + y * 24 + 12, 3), n += 3;
    }
    return n;
}

/* Found by fuzz_image (UBSan float-cast-overflow in stb_image.h, reproducer
 * regress/image-psd-alpha-matte.psd): stb_image divides each colour of a PSD with alpha by its
 * alpha and casts the result to 8 bits unclamped. The alpha channel is now left out before
 * stb_image sees the file: a PSD stores colours composited onto white, the image this reader
 * returns. Hand-made raw and PackBits PSDs with alpha below every colour give their colours back;
 * the reproducer reads without undefined behaviour (the sanitized suite runs this). */
static void test_read_psd_alpha(void **state) {
    (void)state;
    unsigned char px[8 * 8 * 3], buf[1024];
    for (int i = 0; i < (int)sizeof px; i++) px[i] = (unsigned char)(255 - i % 7);
    float out[3 * 8 * 8];
    for (int rle = 0; rle < 2; rle++) {
        const char *file = tu_tmp(rle ? "alpha-rle.psd" : "alpha.psd");
        tu_write_file(file, buf, psd_8x8(buf, px, rle, 1));
        int w, h, c;
        assert_int_equal(ddpm_image_info(file, &w, &h, &c), DDPM_OK);
        assert_int_equal(w, 8);
        if (ddpm_image_read(file, 8, 3, out)) fail_msg("%s", ddpm_last_error());
        for (int y = 0; y < 8; y++)
            for (int x = 0; x < 8; x++)
                for (int ch = 0; ch < 3; ch++) {
                    const int src = rle && y % 2 ? y * 8 : y * 8 + x;
                    assert_float_equal(out[(ch * 8 + y) * 8 + x], unit(px[src * 3 + ch]), 1e-6);
                }
    }
    char path[4096];
    snprintf(path, sizeof path, "%s", tu_fixture_path("regress/image-psd-alpha-matte.psd"));
    const int rc = ddpm_image_read(path, 8, 3, out);
    if (rc == DDPM_OK)
        for (int i = 0; i < 3 * 8 * 8; i++) assert_true(out[i] >= -1.0f && out[i] <= 1.0f);
    else
        assert_non_null(strstr(ddpm_last_error(), path));
}

/* Every truncation of a valid file of each format is refused, naming the file: a BMP, an
 * uncompressed and a run-length TGA, a PPM, a PNG, a JPEG, a two-frame GIF, a raw and a PackBits
 * PSD, a flat and a run-length HDR (cut short, stb_image 2.27 read zeros, or uninitialised
 * pixels, or looped for ever on the zeros) and an uncompressed and a run-length PIC (which
 * stb_image refuses itself), each cut to every length from 0 to one byte short. The whole file
 * reads. */
static void test_read_truncated(void **state) {
    (void)state;
    unsigned char px[8 * 8 * 3];
    for (int i = 0; i < (int)sizeof px; i++) px[i] = (unsigned char)(i * 7919 % 251);
    enum { NF = 13 };
    static const char *names[NF] = {"t.bmp", "t.tga",     "t-rle.tga", "t.ppm",     "t.png",
                                    "t.jpg", "t.gif",     "t.psd",     "t-rle.psd", "t.hdr",
                                    "t-rle.hdr", "t.pic", "t-rle.pic"};
    char files[NF][512];
    for (int f = 0; f < NF; f++) snprintf(files[f], sizeof files[f], "%s", tu_tmp(names[f]));
    assert_true(stbi_write_bmp(files[0], 8, 8, 3, px) != 0);
    stbi_write_tga_with_rle = 0;
    assert_true(stbi_write_tga(files[1], 8, 8, 3, px) != 0);
    stbi_write_tga_with_rle = 1;
    assert_true(stbi_write_tga(files[2], 8, 8, 3, px) != 0);
    unsigned char ppm[11 + sizeof px];
    memcpy(ppm, "P6 8 8 255\n", 11);
    memcpy(ppm + 11, px, sizeof px);
    tu_write_file(files[3], ppm, sizeof ppm);
    assert_int_equal(ddpm_png_write(files[4], px, 8, 8, 3), DDPM_OK);
    tu_write_file(files[5], JPEG_8x8, sizeof JPEG_8x8);
    ddpm_gif *g;
    assert_int_equal(ddpm_gif_open(files[6], 8, 8, 1, 10, &g), DDPM_OK);
    assert_int_equal(ddpm_gif_add_frame(g, px), DDPM_OK);
    assert_int_equal(ddpm_gif_add_frame(g, px + 64), DDPM_OK);
    assert_int_equal(ddpm_gif_close(g), DDPM_OK);
    unsigned char buf[1024];
    for (int rle = 0; rle < 2; rle++) {
        tu_write_file(files[7 + rle], buf, psd_8x8(buf, px, rle, 0));
        tu_write_file(files[9 + rle], buf, hdr_file(buf, px, rle));
        tu_write_file(files[11 + rle], buf, pic_8x8(buf, px, rle));
    }
    float out[3 * 8 * 8];
    /* the hand-made PSD and PIC give their pixels back (HDR maps through a gamma curve) */
    for (int f = 7; f < NF; f += f == 8 ? 3 : 1) {
        if (ddpm_image_read(files[f], 8, 3, out)) fail_msg("%s", ddpm_last_error());
        for (int y = 0; y < 8; y++)
            for (int x = 0; x < 8; x++)
                for (int c = 0; c < 3; c++) {
                    const int src = f == 8 && y % 2 ? y * 8 : f == 12 && x >= 4 ? y * 8 + 4 : y * 8 + x;
                    assert_float_equal(out[(c * 8 + y) * 8 + x], unit(px[src * 3 + c]), 1e-6);
                }
    }
    const char *cut = tu_tmp("cut.img");
    for (int f = 0; f < NF; f++) {
        unsigned char *bytes;
        size_t n;
        assert_int_equal(ddpm_read_file(files[f], &bytes, &n), DDPM_OK);
        if (ddpm_image_read(files[f], 8, 3, out)) fail_msg("%s", ddpm_last_error());
        for (size_t len = 0; len < n; len++) {
            tu_write_file(cut, bytes, len);
            const int rc = ddpm_image_read(cut, 8, 3, out);
            if (rc != DDPM_ERR_FORMAT)
                fail_msg("%s cut to %zu of %zu bytes: status %d, not refused", files[f], len, n, rc);
            if (!strstr(ddpm_last_error(), cut)) fail_msg("error without the file: %s", ddpm_last_error());
        }
        free(bytes);
    }
}

/* 16-bit PNM files (maxval > 255): stb_image 2.27 converted them to RGBA as if they were 8-bit,
 * then read twice that buffer converting 16 to 8 bits (found by fuzz_image; ASan:
 * heap-buffer-overflow in stbi__convert_16_to_8, reproducer regress/image-pgm-16bit-overflow.pgm),
 * and it reads their samples in the wrong byte order (a 2 x 2 PGM of 0, 0x4000, 0x8000, 0xffff
 * gave 0, 0, 0, 255): they are refused, naming the file. An 8-bit PGM still reads. */
/* The pixels-per-byte limit leaves real images alone: a flat 2048 x 2048 PNG (4 megapixels in a
 * few KB, about 1000 pixels per byte) still reads. */
static void test_read_flat_large(void **state) {
    (void)state;
    const int n = 2048;
    uint8_t *px = calloc((size_t)n * n, 1);
    assert_non_null(px);
    for (int i = 0; i < n * n; i++) px[i] = 200;
    const char *p = tu_tmp("flat.png");
    assert_int_equal(ddpm_png_write(p, px, n, n, 1), DDPM_OK);
    free(px);
    float out[4 * 4];
    if (ddpm_image_read(p, 4, 1, out)) fail_msg("%s", ddpm_last_error());
    for (int i = 0; i < 16; i++) assert_float_equal(out[i], 200 / 127.5f - 1.0f, 1e-5);
}

static void test_read_pnm16(void **state) {
    (void)state;
    float out[3 * 4];
    const char *files[] = {"regress/image-pgm-16bit.pgm", "regress/image-pgm-16bit-overflow.pgm"};
    for (int i = 0; i < 2; i++) {
        char path[4096];
        snprintf(path, sizeof path, "%s", tu_fixture_path(files[i]));
        for (int c = 1; c <= 3; c += 2)
            tu_expect_status(ddpm_image_read(path, 2, c, out), DDPM_ERR_FORMAT, path,
                             "16-bit PNM images are not supported");
    }
    const char *p = tu_tmp("8bit.pgm");
    tu_write_file(p, "P5 2 2 255\n\x00\x40\x80\xff", 15);
    assert_int_equal(ddpm_image_read(p, 2, 1, out), DDPM_OK);
    const float want[4] = {-1.0f, 64 / 127.5f - 1.0f, 128 / 127.5f - 1.0f, 1.0f};
    for (int i = 0; i < 4; i++) assert_float_equal(out[i], want[i], 1e-6);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_pixel_mapping), cmocka_unit_test(test_png_write),
        cmocka_unit_test(test_grid_layout),   cmocka_unit_test(test_grid_png),
        cmocka_unit_test(test_gif_gray),      cmocka_unit_test(test_gif_rgb),
        cmocka_unit_test(test_gif_errors),    cmocka_unit_test(test_read_exact),
        cmocka_unit_test(test_read_resize),   cmocka_unit_test(test_read_formats),
        cmocka_unit_test(test_read_errors),   cmocka_unit_test(test_read_refused),
        cmocka_unit_test(test_read_pnm16),    cmocka_unit_test(test_read_flat_large),
        cmocka_unit_test(test_read_truncated), cmocka_unit_test(test_read_wide_gif),
        cmocka_unit_test(test_read_psd_alpha),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

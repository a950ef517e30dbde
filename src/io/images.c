/* images.c - images in and out: PNG writing (libpng), image grids, and reading any image
 * stb_image decodes (its header checked first), scaled and centre-cropped to a square. Animated
 * GIFs are in gif.c.
 *
 * stb_image and stb_image_resize are compiled here, static, so their symbols stay private to
 * this file. */
#include "core/internal.h"

#include <errno.h>
#include <libgen.h>
#include <limits.h>
#include <math.h>
#include <png.h>
#include <strings.h>
#include <unistd.h>

#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wshadow"
#pragma GCC diagnostic ignored "-Wsign-compare"
#pragma GCC diagnostic ignored "-Wunused-function"
#pragma GCC diagnostic ignored "-Wunused-parameter"
#pragma GCC diagnostic ignored "-Wunused-but-set-variable"
#pragma GCC diagnostic ignored "-Wmissing-field-initializers"
#pragma GCC diagnostic ignored "-Wimplicit-fallthrough"
#pragma GCC diagnostic ignored "-Wdouble-promotion"
#pragma GCC diagnostic ignored "-Wtype-limits"
#define STB_IMAGE_STATIC
#define STB_IMAGE_IMPLEMENTATION
#define STBI_FAILURE_USERMSG
#include <stb_image.h>
/* stb_image 2.27 declares this but defines it under a misspelt name; with STB_IMAGE_STATIC the
 * missing static definition is an error under -Werror. */
__attribute__((unused)) static void stbi_set_unpremultiply_on_load_thread(int flag) {
    stbi__unpremultiply_on_load_thread(flag);
}
#define STB_IMAGE_RESIZE_STATIC
#define STB_IMAGE_RESIZE_IMPLEMENTATION
#include <stb_image_resize.h>
#pragma GCC diagnostic pop

/* ------------------------------------------------------------------------------------------ */
/* PNG                                                                                          */
/* ------------------------------------------------------------------------------------------ */

uint8_t ddpm_pixel_from_unit(float x) {
    if (!(x > -1.0f)) return 0; /* also NaN */
    if (x >= 1.0f) return 255;
    return (uint8_t)floorf((x + 1.0f) * 127.5f + 0.5f);
}

int ddpm_png_write(const char *path, const uint8_t *pixels, int w, int h, int channels) {
    static const png_uint_32 formats[5] = {0, PNG_FORMAT_GRAY, PNG_FORMAT_GA, PNG_FORMAT_RGB,
                                           PNG_FORMAT_RGBA};
    if (w <= 0 || h <= 0 || channels < 1 || channels > 4)
        return ddpm_fail(DDPM_ERR_INVALID, "%s: cannot write a %dx%d PNG with %d channels", path,
                         w, h, channels);
    png_image img;
    memset(&img, 0, sizeof img);
    img.version = PNG_IMAGE_VERSION;
    img.width = (png_uint_32)w;
    img.height = (png_uint_32)h;
    img.format = formats[channels];
    png_alloc_size_t size = 0;
    const png_int_32 stride = (png_int_32)((size_t)w * (size_t)channels);
    if (!png_image_write_to_memory(&img, NULL, &size, 0, pixels, stride, NULL)) {
        int rc = ddpm_fail(DDPM_ERR_INVALID, "%s: cannot encode PNG: %s", path, img.message);
        png_image_free(&img);
        return rc;
    }
    void *mem = malloc(size ? size : 1);
    if (!mem) return ddpm_fail(DDPM_ERR_NOMEM, "%s: out of memory encoding PNG", path);
    if (!png_image_write_to_memory(&img, mem, &size, 0, pixels, stride, NULL)) {
        int rc = ddpm_fail(DDPM_ERR_INVALID, "%s: cannot encode PNG: %s", path, img.message);
        png_image_free(&img);
        free(mem);
        return rc;
    }
    const void *parts[1] = {mem};
    size_t sizes[1] = {size};
    int rc = ddpm_write_file_atomic(path, parts, sizes, 1);
    free(mem);
    return rc;
}

/* ------------------------------------------------------------------------------------------ */
/* Grids                                                                                        */
/* ------------------------------------------------------------------------------------------ */

int ddpm_image_grid(const float *images, int N, int C, int H, int W, int nrow, int padding,
                    int pad_value, int scale, uint8_t **pixels_out, int *w_out, int *h_out) {
    *pixels_out = NULL;
    *w_out = *h_out = 0;
    if (N < 1 || (C != 1 && C != 3) || H < 1 || W < 1 || nrow < 1 || padding < 0 || scale < 1 ||
        pad_value < 0 || pad_value > 255)
        return ddpm_fail(DDPM_ERR_INVALID,
                         "image grid: invalid arguments (N=%d C=%d H=%d W=%d nrow=%d padding=%d "
                         "pad_value=%d scale=%d; C must be 1 or 3)",
                         N, C, H, W, nrow, padding, pad_value, scale);
    const int ncol = nrow < N ? nrow : N;
    const int rows = (N + ncol - 1) / ncol;
    const int64_t cw = (int64_t)W * scale, ch = (int64_t)H * scale;
    const int64_t gw = ncol * (cw + padding) + padding, gh = rows * (ch + padding) + padding;
    if (gw > 65535 || gh > 65535)
        return ddpm_fail(DDPM_ERR_INVALID, "image grid: %lldx%lld pixels is too large",
                         (long long)gw, (long long)gh);
    uint8_t *px = ddpm_alloc((size_t)gw * (size_t)gh, (size_t)C);
    if (!px) return DDPM_ERR_NOMEM;
    memset(px, pad_value, (size_t)gw * (size_t)gh * (size_t)C);
    const size_t plane = (size_t)H * W;
    for (int n = 0; n < N; n++) {
        const float *img = images + (size_t)n * C * plane; // [C, H, W]
        const int64_t ox = padding + (n % ncol) * (cw + padding);
        const int64_t oy = padding + (n / ncol) * (ch + padding);
        for (int64_t y = 0; y < ch; y++) {
            const int sy = (int)(y / scale);
            uint8_t *row = px + ((size_t)(oy + y) * (size_t)gw + (size_t)ox) * (size_t)C;
            for (int64_t x = 0; x < cw; x++) {
                const int sx = (int)(x / scale);
                for (int c = 0; c < C; c++)
                    row[x * C + c] = ddpm_pixel_from_unit(img[c * plane + (size_t)sy * W + sx]);
            }
        }
    }
    *pixels_out = px;
    *w_out = (int)gw;
    *h_out = (int)gh;
    return DDPM_OK;
}

int ddpm_grid_write_png(const char *path, const float *images, int N, int C, int H, int W,
                        int nrow, int scale) {
    uint8_t *px;
    int w, h;
    int rc = ddpm_image_grid(images, N, C, H, W, nrow, 2, 0, scale, &px, &w, &h);
    if (rc) {
        char msg[512];
        snprintf(msg, sizeof msg, "%s", ddpm_last_error());
        return ddpm_fail(rc, "%s: %s", path, msg);
    }
    rc = ddpm_png_write(path, px, w, h, C);
    free(px);
    return rc;
}

/* ------------------------------------------------------------------------------------------ */
/* Reading images                                                                               */
/* ------------------------------------------------------------------------------------------ */

int ddpm_image_ext_supported(const char *path) {
    static const char *exts[] = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tga",
                                 ".psd", ".hdr", ".pic",  ".ppm", ".pgm", ".pnm"};
    const char *dot = strrchr(path, '.');
    if (!dot || strchr(dot, '/')) return 0;
    for (size_t i = 0; i < sizeof exts / sizeof exts[0]; i++)
        if (strcasecmp(dot, exts[i]) == 0) return 1;
    return 0;
}

/* The most pixels an image file may have: 2^25 (e.g. 5792 x 5792), and at most 4096 per byte of
 * the file. Checked on the dimensions of the file's header before decoding, so a small file
 * announcing a huge image (a decompression bomb: 51 bytes of TGA header announce 15 megapixels,
 * which stb_image then decodes from zeros past the end) is refused before anything is allocated
 * or decoded; the decoded RGBA and the float copy stay below 136 MB and 403 MB. No format packs
 * more pixels per byte in practice: deflate's limit is 1032:1, LZW's about 2730:1, a JPEG needs
 * 2 bits for a flat 8 x 8 block, the RLE formats (TGA, HDR, PSD) at most 64 pixels per byte. */
#define IMAGE_MAX_PIXELS ((size_t)1 << 25)
#define IMAGE_MAX_PIXELS_PER_BYTE 4096

/* Checks the Huffman tables of a JPEG before stb_image sees them: stb_image 2.27 copies a DHT
 * table's 16 code counts without checking that they sum to at most 256, and then writes up to
 * 4,080 entries into its 257-entry arrays (issue 11, finding 8). Walks the marker segments (and
 * the entropy-coded data between them: progressive files define tables between scans); returns
 * NULL if every table is well formed, else why not. Other bytes are left for stb_image to judge. */
static const char *jpeg_check_huffman(const unsigned char *p, size_t n) {
    /* SOI as stb_image finds it: 0xFF, any number of 0xFF fill bytes, 0xD8 */
    size_t i = 1;
    while (i < n && p[i] == 0xFF) i++;
    if (n < 2 || p[0] != 0xFF || i >= n || p[i] != 0xD8) return NULL; /* not a JPEG */
    i++;
    while (i + 1 < n) {
        if (p[i] != 0xFF) { /* entropy-coded data: skip to the next marker */
            i++;
            continue;
        }
        const unsigned m = p[i + 1];
        /* fill bytes, stuffed zeros, restart markers and the standalone markers have no length */
        if (m == 0xFF) {
            i++;
            continue;
        }
        if (m == 0x00 || (m >= 0xD0 && m <= 0xD8) || m == 0x01) {
            i += 2;
            continue;
        }
        if (m == 0xD9) return NULL; /* end of image */
        if (i + 4 > n) return NULL;  /* truncated: stb_image reports it */
        const size_t len = (size_t)p[i + 2] << 8 | p[i + 3];
        if (len < 2) return "bad marker segment length";
        const size_t end = i + 2 + len < n ? i + 2 + len : n;
        if (m == 0xC4) { /* DHT: tables of 1 + 16 + sum(counts) bytes */
            size_t q = i + 4;
            while (q < end) {
                if (q + 17 > end) return "truncated Huffman table";
                size_t count = 0;
                for (int k = 1; k <= 16; k++) count += p[q + k];
                if (count > 256) return "Huffman table with more than 256 codes";
                q += 17 + count;
            }
        }
        i += 2 + len;
    }
    return NULL;
}

/* Checks that every chunk of a PNG fits in the file before stb_image sees it: stb_image 2.27
 * allocates an IDAT chunk's announced length before reading it (found by fuzz_image: a 77-byte
 * file made it allocate 512 MB). Returns NULL if each chunk up to IEND (or the end of the file)
 * fits, else why not. */
static const char *png_check_chunks(const unsigned char *p, size_t n) {
    static const unsigned char sig[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1A, '\n'};
    if (n < 8 || memcmp(p, sig, 8) != 0) return NULL; /* not a PNG */
    size_t i = 8;
    while (i + 8 <= n) {
        const size_t len = (size_t)p[i] << 24 | (size_t)p[i + 1] << 16 | (size_t)p[i + 2] << 8 | p[i + 3];
        if (len > n - i - 8) return "a chunk longer than the rest of the file";
        if (memcmp(p + i + 4, "IEND", 4) == 0) return NULL;
        i += 8 + len + 4; /* length, type, data, CRC */
    }
    return NULL; /* truncated: stb_image reports it */
}

/* Checks the three numbers of a binary PNM header (P5, P6) before stb_image sees them: stb_image
 * 2.27 reads them into an int with no overflow check (found by fuzz_image; UBSan: signed integer
 * overflow in stbi__pnm_getinteger). Skips whitespace and '#' comments as stb_image does; returns
 * NULL if no number has more than 9 digits (stb_image allows sides up to 2^24 and a maximum value
 * up to 65535), else why not. */
static const char *pnm_check_header(const unsigned char *p, size_t n) {
    if (n < 2 || p[0] != 'P' || (p[1] != '5' && p[1] != '6')) return NULL; /* not a PNM */
    size_t i = 2;
    for (int k = 0; k < 3; k++) {
        for (;;) {
            while (i < n && (p[i] == ' ' || (p[i] >= '\t' && p[i] <= '\r'))) i++;
            if (i >= n || p[i] != '#') break;
            while (i < n && p[i] != '\n' && p[i] != '\r') i++;
        }
        size_t digits = 0;
        while (i < n && p[i] >= '0' && p[i] <= '9') i++, digits++;
        if (digits > 9) return "a header number of more than 9 digits";
    }
    return NULL;
}

/* DDPM_ERR_FORMAT naming the file unless a w x h image in a file of fsize bytes is readable: no
 * side of 0 (it would make the crop's scale NaN), at most IMAGE_MAX_PIXELS pixels and at most
 * IMAGE_MAX_PIXELS_PER_BYTE per byte of the file. */
static int check_image_size(const char *path, int w, int h, size_t fsize) {
    if (w < 1 || h < 1)
        return ddpm_fail(DDPM_ERR_FORMAT, "%s: the image is %d x %d pixels (an empty side)", path,
                         w, h);
    const size_t npx = (size_t)w * (size_t)h;
    if (npx > IMAGE_MAX_PIXELS)
        return ddpm_fail(DDPM_ERR_FORMAT,
                         "%s: the image is %d x %d pixels, more than the limit of %zu (2^25)",
                         path, w, h, IMAGE_MAX_PIXELS);
    if (npx > fsize * IMAGE_MAX_PIXELS_PER_BYTE)
        return ddpm_fail(DDPM_ERR_FORMAT,
                         "%s: the header announces %d x %d pixels, more than a %zu-byte file can "
                         "hold (truncated, or a decompression bomb)",
                         path, w, h, fsize);
    return DDPM_OK;
}

static int decode_error(const char *path) {
    const char *why = stbi_failure_reason();
    return ddpm_fail(DDPM_ERR_FORMAT, "%s: cannot decode image: %s", path,
                     why ? why : "unknown error");
}

int ddpm_image_info(const char *path, int *width, int *height, int *channels) {
    unsigned char *file;
    size_t fsize;
    int rc = ddpm_read_file(path, &file, &fsize);
    if (rc) return rc;
    int w = 0, h = 0, comp = 0;
    /* The same header checks as ddpm_image_read, without decoding a pixel. */
    const char *bad_jpeg = fsize > INT_MAX ? NULL : jpeg_check_huffman(file, fsize);
    const char *bad_pnm = fsize > INT_MAX ? NULL : pnm_check_header(file, fsize);
    const char *bad_png = fsize > INT_MAX ? NULL : png_check_chunks(file, fsize);
    if (fsize > INT_MAX)
        rc = ddpm_fail(DDPM_ERR_FORMAT, "%s: image file too large", path);
    else if (bad_jpeg || bad_pnm || bad_png)
        rc = ddpm_fail(DDPM_ERR_FORMAT, "%s: cannot decode image: corrupt %s (%s)", path,
                       bad_jpeg ? "JPEG" : bad_pnm ? "PNM" : "PNG",
                       bad_jpeg ? bad_jpeg : bad_pnm ? bad_pnm : bad_png);
    else if (!stbi_info_from_memory(file, (int)fsize, &w, &h, &comp))
        rc = decode_error(path);
    else
        rc = check_image_size(path, w, h, fsize);
    free(file);
    if (rc) return rc;
    *width = w, *height = h, *channels = comp;
    return DDPM_OK;
}

int ddpm_image_read_hw(const char *path, int out_h, int out_w, int channels, float *dst) {
    if (out_h < 1 || out_h > 16384 || out_w < 1 || out_w > 16384 || (channels != 1 && channels != 3))
        return ddpm_fail(DDPM_ERR_INVALID,
                         "%s: cannot read an image at size %dx%d with %d channels (channels 1 or 3)",
                         path, out_h, out_w, channels);
    unsigned char *file;
    size_t fsize;
    int rc = ddpm_read_file(path, &file, &fsize);
    if (rc) return rc;
    if (fsize > INT_MAX) {
        free(file);
        return ddpm_fail(DDPM_ERR_FORMAT, "%s: image file too large", path);
    }
    /* The header's dimensions first (no pixel is decoded), then the pixels; the decoder's own
     * dimensions are checked again in case they differ from the header's. */
    int w = 0, h = 0, comp;
    stbi_uc *rgba = NULL;
    const char *bad_jpeg = jpeg_check_huffman(file, fsize), *bad_pnm = pnm_check_header(file, fsize);
    const char *bad_png = png_check_chunks(file, fsize);
    if (bad_jpeg || bad_pnm || bad_png)
        rc = ddpm_fail(DDPM_ERR_FORMAT, "%s: cannot decode image: corrupt %s (%s)", path,
                       bad_jpeg ? "JPEG" : bad_pnm ? "PNM" : "PNG",
                       bad_jpeg ? bad_jpeg : bad_pnm ? bad_pnm : bad_png);
    else if (!stbi_info_from_memory(file, (int)fsize, &w, &h, &comp))
        rc = decode_error(path);
    /* stb_image 2.27 reads 16-bit PNM files (maxval > 255) in the wrong byte order, and converts
     * them to RGBA as if they were 8-bit, then reads twice that buffer (found by fuzz_image;
     * ASan: heap-buffer-overflow in stbi__convert_16_to_8) */
    else if (file[0] == 'P' && stbi_is_16_bit_from_memory(file, (int)fsize))
        rc = ddpm_fail(DDPM_ERR_FORMAT,
                       "%s: 16-bit PNM images are not supported (convert it to 8 bits or to PNG)",
                       path);
    else if (!(rc = check_image_size(path, w, h, fsize)) &&
             !(rgba = stbi_load_from_memory(file, (int)fsize, &w, &h, &comp, 4)))
        rc = decode_error(path);
    free(file);
    if (!rc && (rc = check_image_size(path, w, h, fsize))) stbi_image_free(rgba);
    if (rc) return rc;
    /* Composite onto white and convert to the requested channels, as 0..255 floats. */
    const size_t npx = (size_t)w * (size_t)h;
    float *src = malloc(ddpm_size_mul(npx, (size_t)channels * sizeof(float)));
    if (!src) {
        stbi_image_free(rgba);
        return ddpm_fail(DDPM_ERR_NOMEM, "%s: out of memory for a %dx%d image", path, w, h);
    }
    for (size_t i = 0; i < npx; i++) {
        const stbi_uc *p = rgba + 4 * i;
        float rgb[3];
        for (int c = 0; c < 3; c++) {
            if (p[3] == 255) rgb[c] = p[c];
            else {
                const float a = p[3] / 255.0f;
                rgb[c] = p[c] * a + 255.0f * (1.0f - a);
            }
        }
        if (channels == 3) {
            for (int c = 0; c < 3; c++) src[3 * i + c] = rgb[c];
        } else if (p[0] == p[1] && p[1] == p[2]) {
            src[i] = rgb[0]; /* gray stays exactly gray */
        } else {
            src[i] = 0.299f * rgb[0] + 0.587f * rgb[1] + 0.114f * rgb[2];
        }
    }
    stbi_image_free(rgba);
    /* The largest centred region of the output's aspect ratio (the whole height, or the whole
     * width), scaled to out_h x out_w: scaling by max(out_h / h, out_w / w) so the image covers
     * the output, then a centre crop (for a square output torchvision's Resize(size) +
     * CenterCrop(size)). The region's sides as the exact ratios they are, so a square output
     * crops a square of side min(w, h). */
    const int H = out_h, W = out_w;
    const int full_h = (double)H * w >= (double)W * h; /* the height sets the scale */
    const double crop_h = full_h ? h : (double)H * w / W, crop_w = full_h ? (double)W * h / H : w;
    float *sq = src;
    if (full_h ? h == H : w == W) {
        /* Scale 1: an exact integer crop. */
        const int x0 = (w - W) / 2, y0 = (h - H) / 2;
        for (int y = 0; y < H; y++)
            for (int x = 0; x < W; x++)
                for (int c = 0; c < channels; c++)
                    dst[(size_t)c * H * W + (size_t)y * W + x] =
                        src[((size_t)(y0 + y) * w + (size_t)(x0 + x)) * channels + c] / 127.5f -
                        1.0f;
        free(src);
        return DDPM_OK;
    }
    sq = malloc(ddpm_size_mul((size_t)H * W, (size_t)channels * sizeof(float)));
    if (!sq) {
        free(src);
        return ddpm_fail(DDPM_ERR_NOMEM, "%s: out of memory resizing", path);
    }
    const float s0 = (float)((w - crop_w) / 2.0 / w), t0 = (float)((h - crop_h) / 2.0 / h);
    const float s1 = (float)((w + crop_w) / 2.0 / w), t1 = (float)((h + crop_h) / 2.0 / h);
    const stbir_filter filter = crop_h > H ? STBIR_FILTER_BOX : STBIR_FILTER_TRIANGLE;
    int ok = stbir_resize_region(src, w, h, 0, sq, W, H, 0, STBIR_TYPE_FLOAT, channels,
                                 STBIR_ALPHA_CHANNEL_NONE, 0, STBIR_EDGE_CLAMP, STBIR_EDGE_CLAMP,
                                 filter, filter, STBIR_COLORSPACE_LINEAR, NULL, s0, t0, s1, t1);
    free(src);
    if (!ok) {
        free(sq);
        return ddpm_fail(DDPM_ERR_NOMEM, "%s: resizing a %dx%d image to %dx%d failed", path, w, h,
                         W, H);
    }
    for (int c = 0; c < channels; c++)
        for (size_t i = 0; i < (size_t)H * W; i++) {
            float v = sq[i * channels + c] / 127.5f - 1.0f;
            dst[(size_t)c * H * W + i] = v < -1.0f ? -1.0f : v > 1.0f ? 1.0f : v;
        }
    free(sq);
    return DDPM_OK;
}

int ddpm_image_read(const char *path, int size, int channels, float *dst) {
    return ddpm_image_read_hw(path, size, size, channels, dst);
}

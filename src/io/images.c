/* images.c - images in and out: PNG writing (libpng), image grids, and reading image files
 * (JPEG and PNG through image_decode.c, the other formats through stb_image, each header
 * checked first), scaled and centre-cropped to a square. Animated GIFs are in gif.c.
 *
 * stb_image and stb_image_resize are compiled here, static, so their symbols stay private to
 * this file; stb_image without its JPEG and PNG decoders, so it can never be handed one. */
#include "core/internal.h"
#include "io/image_decode.h"

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
#define STBI_NO_JPEG
#define STBI_NO_PNG
#define STBI_SUPPORT_ZLIB /* keeps its zlib functions defined (unused), else only declared */
#include <stb_image.h>
/* With STB_IMAGE_STATIC a declared static function that is never defined is an error under
 * -Werror: these four are PNG options, left out with the PNG decoder (never called). */
__attribute__((unused)) static void stbi_set_unpremultiply_on_load(int flag) { (void)flag; }
__attribute__((unused)) static void stbi_set_unpremultiply_on_load_thread(int flag) { (void)flag; }
__attribute__((unused)) static void stbi_convert_iphone_png_to_rgb(int flag) { (void)flag; }
__attribute__((unused)) static void stbi_convert_iphone_png_to_rgb_thread(int flag) { (void)flag; }
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

/* Header numbers of a binary PNM (P5, P6) as stb_image reads them: whitespace and '#' comments
 * skipped, the three numbers (digits counted), and where the pixel data starts (after the one
 * whitespace byte that ends the maximum value). Returns 0 if it is no PNM or the header ends
 * early (stb_image reports that), else 1 with digits[k] and *data_at set. */
static int pnm_header(const unsigned char *p, size_t n, size_t digits[3], size_t *maxval,
                      size_t *data_at) {
    if (n < 2 || p[0] != 'P' || (p[1] != '5' && p[1] != '6')) return 0;
    size_t i = 2;
    *maxval = 0;
    for (int k = 0; k < 3; k++) {
        for (;;) {
            while (i < n && (p[i] == ' ' || (p[i] >= '\t' && p[i] <= '\r'))) i++;
            if (i >= n || p[i] != '#') break;
            while (i < n && p[i] != '\n' && p[i] != '\r') i++;
        }
        digits[k] = 0;
        while (i < n && p[i] >= '0' && p[i] <= '9') {
            if (k == 2 && digits[k] < 9) *maxval = *maxval * 10 + (size_t)(p[i] - '0');
            i++, digits[k]++;
        }
    }
    *data_at = i + 1;
    return 1;
}

/* The header numbers of a binary PNM, before stb_image sees them: stb_image 2.27 reads them into
 * an int with no overflow check (found by fuzz_image; UBSan: signed integer overflow in
 * stbi__pnm_getinteger). stb_image allows sides up to 2^24 and a maximum value up to 65535, so
 * no number needs more than 9 digits. */
static int pnm_check_numbers(const char *path, const unsigned char *p, size_t n) {
    size_t digits[3], maxval, at;
    if (!pnm_header(p, n, digits, &maxval, &at)) return DDPM_OK;
    for (int k = 0; k < 3; k++)
        if (digits[k] > 9)
            return ddpm_fail(DDPM_ERR_FORMAT,
                             "%s: cannot decode image: corrupt PNM (a header number of more than "
                             "9 digits)",
                             path);
    return DDPM_OK;
}

static size_t le16(const unsigned char *p) { return (size_t)p[0] | (size_t)p[1] << 8; }
static size_t le32(const unsigned char *p) { return le16(p) | le16(p + 2) << 16; }

static int truncated(const char *path, const char *format, size_t need, size_t have) {
    return ddpm_fail(DDPM_ERR_FORMAT,
                     "%s: cannot decode image: truncated %s (%zu bytes; its headers need at least "
                     "%zu)",
                     path, format, have, need);
}

/* stb_image decodes a truncated BMP, TGA, PNM, GIF, PSD or HDR as if the missing bytes were
 * zeros (or, for uncompressed TGA rows and flat HDR pixels, leaves them uninitialised; a
 * run-length HDR cut short loops for ever on the zeros): each is checked here against what its
 * header says the pixel data needs, after the size checks (so w x h is at most 2^25 and every
 * product below fits in a size_t). Formats are told apart by their magic bytes in the order
 * stb_image tries them (BMP, GIF, PSD, PIC, PNM, HDR, then TGA, which has none). PIC needs no
 * check: stb_image tests for the end of the file before every pixel byte it reads. */
static int bmp_check_length(const char *path, const unsigned char *p, size_t n, size_t w,
                            size_t h) {
    const size_t hsz = le32(p + 14);
    if (n < 14 + hsz) return truncated(path, "BMP", 14 + hsz, n);
    const size_t offset = le32(p + 10);
    const size_t bpp = hsz == 12 ? le16(p + 24) : le16(p + 28);
    const size_t compression = hsz == 12 ? 0 : le32(p + 30);
    if ((compression != 0 && compression != 3) || bpp == 0 || bpp > 32)
        return DDPM_OK; /* stb_image refuses them */
    const size_t header_end = 14 + hsz + (hsz == 40 && compression == 3 ? 12 : 0);
    if (offset < header_end)
        return ddpm_fail(DDPM_ERR_FORMAT,
                         "%s: cannot decode image: corrupt BMP (pixel data at byte %zu, inside "
                         "its %zu-byte header)",
                         path, offset, header_end);
    /* rows padded to 4 bytes; the last one may lack its padding */
    const size_t row = (w * bpp + 7) / 8, stride = (w * bpp + 31) / 32 * 4;
    const size_t need = offset + stride * (h - 1) + row;
    return need > n ? truncated(path, "BMP", need, n) : DDPM_OK;
}

static int tga_check_length(const char *path, const unsigned char *p, size_t n, size_t w,
                            size_t h) {
    if (n < 18) return truncated(path, "TGA", 18, n);
    const int indexed = p[1] != 0, rle = p[2] >= 8;
    const size_t pal_start = le16(p + 3), pal_len = le16(p + 5), pal_bits = p[7], bpp = p[16];
    /* bytes per palette entry and per pixel as stb_image reads them (15 and 16 bits: 2 bytes) */
    const size_t pal_entry = pal_bits == 15 || pal_bits == 16 ? 2 : pal_bits / 8;
    const size_t px = indexed ? (bpp == 8 ? 1 : 2) : bpp == 15 || bpp == 16 ? 2 : bpp / 8;
    if (px == 0 || (indexed && pal_entry == 0)) return DDPM_OK; /* stb_image refuses them */
    size_t at = 18 + p[0]; /* the image ID */
    if (indexed) at += pal_start + pal_len * pal_entry;
    const size_t npx = w * h;
    if (!rle) {
        const size_t need = at + npx * px;
        return need > n ? truncated(path, "TGA", need, n) : DDPM_OK;
    }
    /* run-length packets: a count byte, then one pixel (a run) or count pixels (literal) */
    for (size_t done = 0; done < npx;) {
        if (at >= n) return truncated(path, "TGA", at + 1, n);
        const size_t count = (size_t)(p[at] & 127) + 1;
        at += 1 + (p[at] & 128 ? px : count * px);
        done += count;
        if (at > n) return truncated(path, "TGA", at, n);
    }
    return DDPM_OK;
}

static int pnm_check_length(const char *path, const unsigned char *p, size_t n, size_t w,
                            size_t h) {
    size_t digits[3], maxval, at;
    if (!pnm_header(p, n, digits, &maxval, &at)) return DDPM_OK;
    const size_t need = at + w * h * (p[1] == '6' ? 3 : 1) * (maxval > 255 ? 2 : 1);
    return need > n ? truncated(path, "PNM", need, n) : DDPM_OK;
}

/* A GIF's blocks up to its trailer: the colour tables, each extension's and each image's data
 * sub-blocks up to their zero terminator (stb_image returns the first frame, but a file cut in a
 * later frame is truncated all the same). */
static int gif_check_length(const char *path, const unsigned char *p, size_t n) {
    size_t at = 13;
    if (n < at) return truncated(path, "GIF", at, n);
    if (p[10] & 0x80) at += (size_t)3 << ((p[10] & 7) + 1); /* global colour table */
    for (;;) {
        if (at >= n) return truncated(path, "GIF", at + 1, n);
        const unsigned char block = p[at];
        if (block == 0x21) { /* extension: label, then sub-blocks */
            at += 2;
        } else if (block == 0x2C) { /* image: descriptor, local colour table, LZW code size */
            if (at + 10 > n) return truncated(path, "GIF", at + 10, n);
            const unsigned char flags = p[at + 9];
            at += 10 + (flags & 0x80 ? (size_t)3 << ((flags & 7) + 1) : 0) + 1;
        } else {
            return DDPM_OK; /* the trailer (0x3B), or a bad block: stb_image judges it */
        }
        for (;;) { /* data sub-blocks: a length byte, that many bytes; 0 ends them */
            if (at >= n) return truncated(path, "GIF", at + 1, n);
            const size_t len = p[at];
            at += 1 + len;
            if (len == 0) break;
        }
    }
}

static size_t be16(const unsigned char *p) { return (size_t)p[0] << 8 | p[1]; }
static size_t be32(const unsigned char *p) { return be16(p) << 16 | be16(p + 2); }

/* A PSD as stb_image reads it: the 26-byte header, three sections each behind its 4-byte length
 * (colour mode data, image resources, layers and masks), the compression, then every channel
 * (stb_image keeps the first four) raw or PackBits-coded after a table of 2-byte row lengths.
 * *table_at gets the offset of that table (or of the raw pixels), *rgb_end the offset where the
 * fourth channel's data begins (0 when stb_image refuses the file anyway). */
static int psd_check_length(const char *path, const unsigned char *p, size_t n, size_t w,
                            size_t h, size_t *table_at, size_t *rgb_end) {
    size_t at = 26;
    *table_at = *rgb_end = 0;
    for (int k = 0; k < 3; k++) {
        if (at + 4 > n) return truncated(path, "PSD", at + 4, n);
        at += 4 + be32(p + at);
    }
    if (at + 2 > n) return truncated(path, "PSD", at + 2, n);
    const size_t channels = be16(p + 12), depth = be16(p + 22), compression = be16(p + at);
    at += 2;
    *table_at = at;
    const size_t npx = w * h;
    if (compression == 0) {
        const size_t bytes = npx * (depth == 16 ? 2 : 1), need = at + channels * bytes;
        if (channels >= 3) *rgb_end = at + 3 * bytes;
        return need > n ? truncated(path, "PSD", need, n) : DDPM_OK;
    }
    if (compression != 1) return DDPM_OK; /* stb_image refuses it */
    at += h * channels * 2;
    /* PackBits: a count byte c, then c + 1 literal bytes (c < 128), or one byte for 257 - c
     * pixels (c > 128); 128 is a no-op */
    for (size_t c = 0; c < channels; c++) {
        for (size_t done = 0; done < npx;) {
            if (at >= n) return truncated(path, "PSD", at + 1, n);
            const size_t len = p[at++];
            if (len == 128) continue;
            const size_t run = len < 128 ? len + 1 : 257 - len;
            if (run > npx - done) return DDPM_OK; /* stb_image refuses it as bad RLE data */
            at += len < 128 ? run : 1;
            done += run;
            if (at > n) return truncated(path, "PSD", at, n);
        }
        if (c == 2) *rgb_end = at;
    }
    return DDPM_OK;
}

/* A PSD with an alpha channel (4 or more channels) as the same image without it: the header's
 * channel count set to 3, the first three channels' rows and data kept (malloc'd into *out).
 * Why: stb_image 2.27 "removes the white matte" of such files by dividing each colour by alpha
 * and casting the result to an 8-bit sample unclamped, undefined behaviour when a colour exceeds
 * its alpha (found by fuzz_image: UBSan float-cast-overflow at stb_image.h:6225). A PSD stores
 * its colours already composited onto white, which is what ddpm_image_read makes of alpha
 * anyway, so the colours without alpha are the image this reader returns for every format. */
static int psd_drop_alpha(const char *path, const unsigned char *p, size_t h,
                          size_t table_at, size_t rgb_end, unsigned char **out, size_t *out_n) {
    const size_t channels = be16(p + 12);
    const int rle = be16(p + table_at - 2) == 1;
    /* raw: everything up to the fourth channel; PackBits: the header, the first three
     * channels' row lengths, then their data (after the whole table) */
    const size_t rows = rle ? 3 * h * 2 : 0, data_at = table_at + (rle ? channels * h * 2 : 0);
    *out_n = table_at + rows + (rgb_end - data_at);
    if (!(*out = malloc(*out_n)))
        return ddpm_fail(DDPM_ERR_NOMEM, "%s: out of memory reading the PSD", path);
    memcpy(*out, p, table_at);
    (*out)[12] = 0, (*out)[13] = 3;
    memcpy(*out + table_at, p + table_at, rows);
    memcpy(*out + table_at + rows, p + data_at, rgb_end - data_at);
    return DDPM_OK;
}

/* A Radiance HDR as stb_image reads it: header lines up to an empty one, the resolution line,
 * then 4 bytes a pixel, flat (widths below 8 or from 32768) or, per row, 2 2 and the width as
 * 16 bits followed by each of the 4 channels run-length coded (a count above 128: one byte for
 * count - 128 pixels, else count literal bytes). A row without that marker makes stb_image read
 * the rest of the image flat from there (its "goto main_decode_loop"). */
static int hdr_check_length(const char *path, const unsigned char *p, size_t n, size_t w,
                            size_t h) {
    /* through the resolution line, which follows the first empty header line (stb_image reads
     * lines as C strings: one starting with a NUL byte is empty too) */
    size_t at = 0;
    for (int empty_seen = 0, line = 0;; line++) {
        const size_t start = at;
        while (at < n && p[at] != '\n') at++;
        if (at >= n) return truncated(path, "HDR", n + 1, n);
        at++;
        if (empty_seen) break;
        empty_seen = line > 0 && (at - start == 1 || p[start] == 0);
    }
    const size_t npx = w * h;
    if (w < 8 || w >= 32768) {
        const size_t need = at + 4 * npx;
        return need > n ? truncated(path, "HDR", need, n) : DDPM_OK;
    }
    for (size_t y = 0; y < h; y++) {
        if (at + 4 > n) return truncated(path, "HDR", at + 4, n);
        if (p[at] != 2 || p[at + 1] != 2 || (p[at + 2] & 0x80)) {
            const size_t need = at + 4 * npx; /* this pixel, then all but the first, flat */
            return need > n ? truncated(path, "HDR", need, n) : DDPM_OK;
        }
        if (be16(p + at + 2) != w) return DDPM_OK; /* stb_image refuses it */
        at += 4;
        for (int c = 0; c < 4; c++) {
            for (size_t x = 0; x < w;) {
                if (at >= n) return truncated(path, "HDR", at + 1, n);
                const size_t count = p[at++];
                const size_t run = count > 128 ? count - 128 : count;
                if (run > w - x) return DDPM_OK; /* stb_image refuses it as bad RLE data */
                at += count > 128 ? 1 : run;
                x += run;
                if (at > n) return truncated(path, "HDR", at, n);
            }
        }
    }
    return DDPM_OK;
}

/* The file's length against the pixels its header announces; for a PSD, *psd_table and
 * *psd_rgb_end get psd_check_length's offsets (else 0). */
static int stb_check_length(const char *path, const unsigned char *p, size_t n, int w, int h,
                            size_t *psd_table, size_t *psd_rgb_end) {
    static const unsigned char pic[4] = {0x53, 0x80, 0xF6, 0x34};
    *psd_table = *psd_rgb_end = 0;
    if (n >= 18 && p[0] == 'B' && p[1] == 'M') {
        const size_t hsz = le32(p + 14);
        if (hsz == 12 || hsz == 40 || hsz == 56 || hsz == 108 || hsz == 124)
            return bmp_check_length(path, p, n, (size_t)w, (size_t)h);
    }
    if (n >= 6 && memcmp(p, "GIF8", 4) == 0 && (p[4] == '7' || p[4] == '9') && p[5] == 'a')
        return gif_check_length(path, p, n);
    if (n >= 4 && memcmp(p, "8BPS", 4) == 0)
        return psd_check_length(path, p, n, (size_t)w, (size_t)h, psd_table, psd_rgb_end);
    if (n >= 4 && memcmp(p, pic, 4) == 0) return DDPM_OK; /* PIC: stb_image checks it */
    if (n >= 2 && p[0] == 'P' && (p[1] == '5' || p[1] == '6'))
        return pnm_check_length(path, p, n, (size_t)w, (size_t)h);
    if (n >= 2 && p[0] == '#' && p[1] == '?') return hdr_check_length(path, p, n, (size_t)w, (size_t)h);
    return tga_check_length(path, p, n, (size_t)w, (size_t)h);
}

/* DDPM_ERR_FORMAT naming the file unless a w x h image in a file of fsize bytes is readable: no
 * side of 0 (it would make the crop's scale NaN), at most IMAGE_MAX_PIXELS pixels and at most
 * IMAGE_MAX_PIXELS_PER_BYTE per byte of the file. */
int ddpm_image_check_size(const char *path, long long w, long long h, size_t fsize) {
    if (w < 1 || h < 1)
        return ddpm_fail(DDPM_ERR_FORMAT, "%s: the image is %lld x %lld pixels (an empty side)",
                         path, w, h);
    if (w > (long long)IMAGE_MAX_PIXELS || h > (long long)IMAGE_MAX_PIXELS ||
        (size_t)w * (size_t)h > IMAGE_MAX_PIXELS)
        return ddpm_fail(DDPM_ERR_FORMAT,
                         "%s: the image is %lld x %lld pixels, more than the limit of %zu (2^25)",
                         path, w, h, IMAGE_MAX_PIXELS);
    if ((size_t)w * (size_t)h > fsize * IMAGE_MAX_PIXELS_PER_BYTE)
        return ddpm_fail(DDPM_ERR_FORMAT,
                         "%s: the header announces %lld x %lld pixels, more than a %zu-byte file "
                         "can hold (truncated, or a decompression bomb)",
                         path, w, h, fsize);
    return DDPM_OK;
}

static int decode_error(const char *path) {
    const char *why = stbi_failure_reason();
    return ddpm_fail(DDPM_ERR_FORMAT, "%s: cannot decode image: %s", path,
                     why ? why : "unknown error");
}

/* BMP, GIF, TGA, PSD, HDR, PIC, PNM through stb_image: the header checks, the header's size
 * (no pixel decoded yet), the file's length against it, then (if rgba) the pixels; the
 * decoder's own dimensions are checked again in case they differ from the header's. */
static int stb_decode(const char *path, const unsigned char *p, size_t n, int *w, int *h,
                      int *channels, unsigned char **rgba) {
    int rc = pnm_check_numbers(path, p, n);
    if (rc) return rc;
    if (!stbi_info_from_memory(p, (int)n, w, h, channels)) return decode_error(path);
    /* stb_image 2.27 reads 16-bit PNM files (maxval > 255) in the wrong byte order, and converts
     * them to RGBA as if they were 8-bit, then reads twice that buffer (found by fuzz_image;
     * ASan: heap-buffer-overflow in stbi__convert_16_to_8) */
    if (p[0] == 'P' && stbi_is_16_bit_from_memory(p, (int)n))
        return ddpm_fail(DDPM_ERR_FORMAT,
                         "%s: 16-bit PNM images are not supported (convert it to 8 bits or to PNG)",
                         path);
    if ((rc = ddpm_image_check_size(path, *w, *h, n))) return rc;
    size_t psd_table, psd_rgb_end;
    if ((rc = stb_check_length(path, p, n, *w, *h, &psd_table, &psd_rgb_end)) || !rgba) return rc;
    unsigned char *no_alpha = NULL;
    if (psd_rgb_end && be16(p + 12) > 3) {
        size_t len;
        if ((rc = psd_drop_alpha(path, p, (size_t)*h, psd_table, psd_rgb_end, &no_alpha, &len)))
            return rc;
        p = no_alpha, n = len;
    }
    int dw, dh, dc;
    *rgba = stbi_load_from_memory(p, (int)n, &dw, &dh, &dc, 4);
    free(no_alpha);
    if (!*rgba) return decode_error(path);
    if (dw != *w || dh != *h) {
        stbi_image_free(*rgba);
        *rgba = NULL;
        return ddpm_fail(DDPM_ERR_FORMAT,
                         "%s: cannot decode image: its header says %d x %d pixels, its data %d x %d",
                         path, *w, *h, dw, dh);
    }
    return DDPM_OK;
}

/* Any image file held in memory: its size and channels, and with rgba its pixels as 8-bit RGBA
 * (malloc'd; free()). JPEG and PNG go to libjpeg-turbo and libpng, the rest to stb_image. */
static int decode_image(const char *path, const unsigned char *p, size_t n, int *w, int *h,
                        int *channels, unsigned char **rgba) {
    if (rgba) *rgba = NULL;
    if (n > INT_MAX) return ddpm_fail(DDPM_ERR_FORMAT, "%s: image file too large", path);
    if (ddpm_is_jpeg(p, n)) return ddpm_jpeg_decode(path, p, n, w, h, channels, rgba);
    if (ddpm_is_png(p, n)) return ddpm_png_decode(path, p, n, w, h, channels, rgba);
    return stb_decode(path, p, n, w, h, channels, rgba);
}

int ddpm_image_info(const char *path, int *width, int *height, int *channels) {
    unsigned char *file;
    size_t fsize;
    int rc = ddpm_read_file(path, &file, &fsize);
    if (rc) return rc;
    int w = 0, h = 0, comp = 0;
    rc = decode_image(path, file, fsize, &w, &h, &comp, NULL);
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
    int w = 0, h = 0, comp;
    unsigned char *rgba = NULL;
    rc = decode_image(path, file, fsize, &w, &h, &comp, &rgba);
    free(file);
    if (rc) return rc;
    /* Composite onto white and convert to the requested channels, as 0..255 floats. */
    const size_t npx = (size_t)w * (size_t)h;
    float *src = malloc(ddpm_size_mul(npx, (size_t)channels * sizeof(float)));
    if (!src) {
        free(rgba);
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
    free(rgba);
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
    /* The region (its edges may fall between pixels) and a margin of 2 pixels for the filters,
     * copied out first: stb_image_resize computes its filter over the whole input width, so a
     * 62722 x 2 GIF took 15 s to give 2 x 2 pixels (found by fuzz_image). */
    const double rx0 = (w - crop_w) / 2.0, ry0 = (h - crop_h) / 2.0;
    const int cx0 = rx0 - 2 > 0 ? (int)rx0 - 2 : 0, cy0 = ry0 - 2 > 0 ? (int)ry0 - 2 : 0;
    const int cx1 = (int)ceil(rx0 + crop_w) + 2 < w ? (int)ceil(rx0 + crop_w) + 2 : w;
    const int cy1 = (int)ceil(ry0 + crop_h) + 2 < h ? (int)ceil(ry0 + crop_h) + 2 : h;
    const int cw = cx1 - cx0, ch = cy1 - cy0;
    float *crop = malloc(ddpm_size_mul((size_t)cw * (size_t)ch, (size_t)channels * sizeof(float)));
    if (!crop) {
        free(src);
        free(sq);
        return ddpm_fail(DDPM_ERR_NOMEM, "%s: out of memory resizing", path);
    }
    for (int y = 0; y < ch; y++)
        memcpy(crop + (size_t)y * cw * channels, src + ((size_t)(cy0 + y) * w + cx0) * channels,
               sizeof(float) * (size_t)cw * channels);
    const float s0 = (float)((rx0 - cx0) / cw), t0 = (float)((ry0 - cy0) / ch);
    const float s1 = (float)((rx0 + crop_w - cx0) / cw), t1 = (float)((ry0 + crop_h - cy0) / ch);
    const stbir_filter filter = crop_h > H ? STBIR_FILTER_BOX : STBIR_FILTER_TRIANGLE;
    int ok = stbir_resize_region(crop, cw, ch, 0, sq, W, H, 0, STBIR_TYPE_FLOAT, channels,
                                 STBIR_ALPHA_CHANNEL_NONE, 0, STBIR_EDGE_CLAMP, STBIR_EDGE_CLAMP,
                                 filter, filter, STBIR_COLORSPACE_LINEAR, NULL, s0, t0, s1, t1);
    free(crop);
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

/* image_decode.c - JPEG through libjpeg-turbo and PNG through libpng, from memory to 8-bit RGBA,
 * for the image reader (images.c). Both libraries report errors by calling a function that must
 * not return (libjpeg's default one calls exit()): ours longjmp back to the decode call, which
 * frees what it allocated and returns a one-line error naming the file. */
#include "core/internal.h"
#include "io/image_decode.h"

#include <setjmp.h>
#include <stdio.h>

#include <jerror.h>
#include <jpeglib.h>
#include <png.h>

int ddpm_is_jpeg(const unsigned char *p, size_t n) {
    size_t i = 1;
    while (i < n && p[i] == 0xFF) i++;
    return n >= 2 && p[0] == 0xFF && i < n && p[i] == 0xD8;
}

int ddpm_is_png(const unsigned char *p, size_t n) {
    static const unsigned char sig[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1A, '\n'};
    return n >= 8 && memcmp(p, sig, 8) == 0;
}

/* ------------------------------------------------------------------------------------------ */
/* JPEG                                                                                         */
/* ------------------------------------------------------------------------------------------ */

/* A progressive JPEG may hold any number of scans, each a pass over every block of the image:
 * a small file of empty scans is a time bomb (libjpeg-turbo's TurboJPEG API stops at 500 for the
 * same reason). Real encoders write about 10. */
#define JPEG_MAX_SCANS 500

typedef struct {
    struct jpeg_error_mgr mgr; /* first: libjpeg hands back a pointer to it */
    struct jpeg_progress_mgr progress;
    jmp_buf jump;
    char msg[JMSG_LENGTH_MAX + 64];
} jpeg_guard;

static void jpeg_on_error(j_common_ptr ci) {
    jpeg_guard *g = (jpeg_guard *)ci->err;
    char why[JMSG_LENGTH_MAX];
    g->mgr.format_message(ci, why);
    snprintf(g->msg, sizeof g->msg, "%s", why);
    longjmp(g->jump, 1);
}

/* libjpeg carries on after corrupt or missing entropy-coded data with a warning (and gray or
 * zero blocks in the image): those that mean pixels are missing are errors here, so a truncated
 * or damaged file is refused instead of training on made-up blocks. Other warnings (extraneous
 * bytes before a marker, unknown markers, odd JFIF versions) leave the pixels whole and pass. */
static void jpeg_on_message(j_common_ptr ci, int level) {
    if (level >= 0) return; /* trace messages */
    switch (ci->err->msg_code) {
    case JWRN_JPEG_EOF:
    case JWRN_HIT_MARKER:
    case JWRN_HUFF_BAD_CODE:
    case JWRN_MUST_RESYNC:
    case JWRN_NOT_SEQUENTIAL:
    case JWRN_BOGUS_PROGRESSION:
        jpeg_on_error(ci);
        break;
    default:
        ci->err->num_warnings++;
    }
}

static void jpeg_on_progress(j_common_ptr ci) {
    if (!ci->is_decompressor) return;
    j_decompress_ptr d = (j_decompress_ptr)ci;
    if (d->input_scan_number > JPEG_MAX_SCANS) {
        jpeg_guard *g = (jpeg_guard *)ci->err;
        snprintf(g->msg, sizeof g->msg, "more than %d scans", JPEG_MAX_SCANS);
        longjmp(g->jump, 1);
    }
}

int ddpm_jpeg_decode(const char *path, const unsigned char *p, size_t n, int *w, int *h,
                     int *channels, unsigned char **rgba) {
    if (rgba) *rgba = NULL;
    struct jpeg_decompress_struct d;
    jpeg_guard g;
    memset(&g, 0, sizeof g);
    d.err = jpeg_std_error(&g.mgr);
    g.mgr.error_exit = jpeg_on_error;
    g.mgr.emit_message = jpeg_on_message;
    g.progress.progress_monitor = jpeg_on_progress;
    unsigned char *volatile px = NULL;
    JSAMPROW *volatile rows = NULL;
    volatile int rc = DDPM_OK, stop = 0; /* stop: our own early exit (size refused, header only) */
    if (setjmp(g.jump)) {
        jpeg_destroy_decompress(&d);
        free(px);
        free(rows);
        if (stop) return rc; /* DDPM_OK after the header only, or the size check's error */
        return ddpm_fail(DDPM_ERR_FORMAT, "%s: cannot decode image: corrupt or truncated JPEG (%s)",
                         path, g.msg);
    }
    jpeg_create_decompress(&d);
    d.progress = &g.progress;
    jpeg_mem_src(&d, p, (unsigned long)n);
    jpeg_read_header(&d, TRUE); /* with require_image TRUE it returns only with a header */
    *w = (int)d.image_width, *h = (int)d.image_height;
    *channels = d.num_components == 1 ? 1 : 3;
    if ((rc = ddpm_image_check_size(path, d.image_width, d.image_height, n)) || !rgba) {
        stop = 1;
        longjmp(g.jump, 1);
    }
    /* libjpeg-turbo converts gray and YCbCr to RGBA itself; CMYK and YCCK come out as CMYK */
    const int cmyk = d.jpeg_color_space == JCS_CMYK || d.jpeg_color_space == JCS_YCCK;
    d.out_color_space = cmyk ? JCS_CMYK : JCS_EXT_RGBA;
    jpeg_start_decompress(&d);
    if (d.output_width != d.image_width || d.output_height != d.image_height ||
        d.output_components != 4) {
        snprintf(g.msg, sizeof g.msg, "unexpected output layout");
        longjmp(g.jump, 1);
    }
    const size_t stride = (size_t)d.output_width * 4;
    px = malloc(stride * d.output_height);
    rows = malloc(sizeof(JSAMPROW) * d.output_height);
    if (!px || !rows) {
        rc = ddpm_fail(DDPM_ERR_NOMEM, "%s: out of memory for a %dx%d image", path, *w, *h);
        stop = 1;
        longjmp(g.jump, 1);
    }
    for (JDIMENSION y = 0; y < d.output_height; y++) rows[y] = px + y * stride;
    while (d.output_scanline < d.output_height)
        jpeg_read_scanlines(&d, rows + d.output_scanline, d.output_height - d.output_scanline);
    jpeg_finish_decompress(&d);
    if (cmyk) {
        /* Adobe's CMYK JPEGs store inverted inks (libjpeg turns YCCK into the same), so
         * R = C * K / 255 and so on; as stb_image did. */
        for (size_t i = 0; i < stride * d.output_height; i += 4) {
            const unsigned k = px[i + 3];
            for (int c = 0; c < 3; c++) px[i + c] = (unsigned char)((px[i + c] * k + 127) / 255);
            px[i + 3] = 255;
        }
    }
    jpeg_destroy_decompress(&d);
    free(rows);
    *rgba = px;
    return DDPM_OK;
}

/* ------------------------------------------------------------------------------------------ */
/* PNG                                                                                          */
/* ------------------------------------------------------------------------------------------ */

typedef struct {
    const unsigned char *p;
    size_t n, at;
    jmp_buf jump;
    char msg[256];
} png_guard;

static void png_on_error(png_structp png, png_const_charp msg) {
    png_guard *g = png_get_error_ptr(png);
    snprintf(g->msg, sizeof g->msg, "%s", msg);
    longjmp(g->jump, 1);
}

static void png_on_warning(png_structp png, png_const_charp msg) {
    (void)png, (void)msg; /* ancillary chunks with bad CRCs and the like: dropped by libpng */
}

static void png_read_memory(png_structp png, png_bytep out, png_size_t len) {
    png_guard *g = png_get_io_ptr(png);
    if (len > g->n - g->at) png_error(png, "the file ends early (truncated)");
    memcpy(out, g->p + g->at, len);
    g->at += len;
}

int ddpm_png_decode(const char *path, const unsigned char *p, size_t n, int *w, int *h,
                    int *channels, unsigned char **rgba) {
    if (rgba) *rgba = NULL;
    png_guard g;
    memset(&g, 0, sizeof g);
    g.p = p, g.n = n;
    png_structp png = png_create_read_struct(PNG_LIBPNG_VER_STRING, &g, png_on_error,
                                             png_on_warning);
    png_infop info = png ? png_create_info_struct(png) : NULL;
    if (!info) {
        png_destroy_read_struct(&png, NULL, NULL);
        return ddpm_fail(DDPM_ERR_NOMEM, "%s: out of memory for the PNG decoder", path);
    }
    unsigned char *volatile px = NULL;
    png_bytep *volatile rows = NULL;
    volatile int rc = DDPM_OK, stop = 0; /* stop: our own early exit (size refused, header only) */
    if (setjmp(g.jump)) {
        png_destroy_read_struct(&png, &info, NULL);
        free(px);
        free(rows);
        if (stop) return rc;
        return ddpm_fail(DDPM_ERR_FORMAT, "%s: cannot decode image: corrupt or truncated PNG (%s)",
                         path, g.msg);
    }
#ifdef FUZZING_BUILD_MODE_UNSAFE_FOR_PRODUCTION
    /* Fuzzing only: a mutated chunk keeps its old CRC, so checking it would stop nearly every
     * input at the first chunk and the fuzzer would never reach the decoder. */
    png_set_crc_action(png, PNG_CRC_QUIET_USE, PNG_CRC_QUIET_USE);
#endif
    png_set_read_fn(png, &g, png_read_memory);
    png_read_info(png, info);
    const png_uint_32 pw = png_get_image_width(png, info), ph = png_get_image_height(png, info);
    const int type = png_get_color_type(png, info);
    const int trns = png_get_valid(png, info, PNG_INFO_tRNS) != 0;
    *w = (int)pw, *h = (int)ph;
    *channels = type == PNG_COLOR_TYPE_PALETTE ? 3 + trns : png_get_channels(png, info) + trns;
    if ((rc = ddpm_image_check_size(path, pw, ph, n)) || !rgba) {
        stop = 1;
        longjmp(g.jump, 1);
    }
    /* To 8-bit RGBA, with no gamma or colour-space conversion (stb_image applied none either) */
    png_set_expand(png); /* palette to RGB, gray below 8 bits to 8, tRNS to alpha */
    png_set_strip_16(png);
    if (!(type & PNG_COLOR_MASK_COLOR)) png_set_gray_to_rgb(png);
    png_set_add_alpha(png, 0xFF, PNG_FILLER_AFTER);
    png_set_interlace_handling(png);
    png_read_update_info(png, info);
    const size_t stride = (size_t)pw * 4;
    if (png_get_rowbytes(png, info) != stride) {
        snprintf(g.msg, sizeof g.msg, "unexpected output layout");
        longjmp(g.jump, 1);
    }
    px = malloc(stride * ph);
    rows = malloc(sizeof(png_bytep) * ph);
    if (!px || !rows) {
        rc = ddpm_fail(DDPM_ERR_NOMEM, "%s: out of memory for a %dx%d image", path, *w, *h);
        stop = 1;
        longjmp(g.jump, 1);
    }
    for (png_uint_32 y = 0; y < ph; y++) rows[y] = px + y * stride;
    png_read_image(png, rows);
    png_read_end(png, NULL); /* to IEND: a file cut after its image data is truncated too */
    png_destroy_read_struct(&png, &info, NULL);
    free(rows);
    *rgba = px;
    return DDPM_OK;
}

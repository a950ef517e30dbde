/* image_decode.h - JPEG (libjpeg-turbo) and PNG (libpng) decoding for images.c. Private to the io
 * layer. stb_image is not hardened for untrusted input (issue 11, finding 8: out-of-bounds writes
 * in its JPEG decoder; fuzzing found more in its JPEG and PNG code), so these two formats, the
 * common ones in a --data folder, go to the Debian libraries; stb_image keeps the rest. */
#ifndef DDPM_IO_IMAGE_DECODE_H
#define DDPM_IO_IMAGE_DECODE_H

#include <stddef.h>

/* Whether the bytes start like a JPEG (0xFF, any 0xFF fill bytes, 0xD8: SOI) or a PNG (its
 * 8-byte signature). */
int ddpm_is_jpeg(const unsigned char *p, size_t n);
int ddpm_is_png(const unsigned char *p, size_t n);

/* Decodes a JPEG or PNG held in memory (n bytes of the file `path`): its size and channels in
 * the file (1 gray, 2 gray + alpha, 3 RGB, 4 RGBA; a CMYK JPEG counts 3) from the header, which
 * are checked with ddpm_image_check_size before any pixel is decoded; then, if rgba is not NULL,
 * the pixels as 8-bit RGBA (*rgba, w * h * 4 bytes, malloc'd; alpha 255 where the file has
 * none; 16-bit samples keep their high byte, no gamma is applied, as stb_image did). A corrupt
 * or truncated file is DDPM_ERR_FORMAT naming the file and the library's reason. */
int ddpm_jpeg_decode(const char *path, const unsigned char *p, size_t n, int *w, int *h,
                     int *channels, unsigned char **rgba);
int ddpm_png_decode(const char *path, const unsigned char *p, size_t n, int *w, int *h,
                    int *channels, unsigned char **rgba);

/* DDPM_ERR_FORMAT naming the file unless a w x h image in a file of fsize bytes is within the
 * reader's limits (images.c: no empty side, at most 2^25 pixels and 4096 per byte of the file). */
int ddpm_image_check_size(const char *path, long long w, long long h, size_t fsize);

#endif

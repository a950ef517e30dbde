/* internal.h - helpers shared by the library's source files (not installed). */
#ifndef DDPM_INTERNAL_H
#define DDPM_INTERNAL_H

#include "ddpm.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* An invariant that must hold whatever the input; never compiled out (unlike assert). */
#define DDPM_CHECK(cond)                                                                        \
    do {                                                                                        \
        if (!(cond)) {                                                                          \
            fprintf(stderr, "ddpm: internal error: %s (%s:%d)\n", #cond, __FILE__, __LINE__);   \
            abort();                                                                            \
        }                                                                                       \
    } while (0)

/* a * b for sizes, or SIZE_MAX on overflow (which then fails the allocation). */
static inline size_t ddpm_size_mul(size_t a, size_t b) {
    size_t r;
    if (__builtin_mul_overflow(a, b, &r)) return SIZE_MAX;
    return r;
}

/* Allocations that report failure through ddpm_fail; the caller returns DDPM_ERR_NOMEM. */
void *ddpm_alloc(size_t n, size_t size);  /* zeroed; NULL (with the error set) on failure */
/* 64-byte aligned, zeroed; free with free(). */
void *ddpm_alloc_aligned(size_t n, size_t size);

/* Reads a whole file into a malloc'd, NUL-terminated buffer. Errors name the path. */
int ddpm_read_file(const char *path, unsigned char **data, size_t *size);
/* Writes data to path atomically: path.tmp.<pid>, fsync, rename, fsync of the directory. */
/* Tests only (tests/test_safetensors.c): from now on, every atomic write fails with errno err
 * once it has written `after` bytes of its temporary file, as a full disk fails a write part
 * way; after < 0 turns it off. Not in the public API. */
void ddpm_test_fail_writes_after(long long after, int err);
int ddpm_write_file_atomic(const char *path, const void *const *parts, const size_t *sizes,
                           size_t n_parts);

/* ops/conv.c: stride-1 conv2d as shifted GEMMs on the padded input (1, the default) or through
 * im2col (0). For tests and benchmarks; thread-safe (a relaxed atomic): a call running on
 * another thread sees the old or the new setting. Set it before sizing workspaces. */
void ddpm_conv_use_shifted(int on);
/* ops/conv.c: conv2d on the library's own GEMM kernel with an implicit im2col (1, the default,
 * where the CPU has AVX2 + FMA: the forward for any stride, the input and weight gradients for
 * stride 1) or through the BLAS paths (0). Same caveats. */
void ddpm_conv_use_direct(int on);
/* ops/conv.c: 3x3 stride-1 conv2d forward and input gradient by Winograd F(4x4, 3x3) on the
 * own kernel (1, the default, where the own kernel runs) or on the other paths (0). Same
 * caveats. */
void ddpm_conv_use_winograd(int on);

#endif

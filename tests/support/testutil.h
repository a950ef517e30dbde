/* testutil.h - helpers for the cmocka test executables. */
#ifndef DDPM_TESTUTIL_H
#define DDPM_TESTUTIL_H

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "ddpm.h"

/* Path of a fixture file: $DDPM_FIXTURES/name (static buffer). */
const char *tu_fixture_path(const char *name);
/* Loads a fixture safetensors file; fails the test if it cannot. */
void tu_load_fixture(const char *name, ddpm_safetensors *st);
/* A malloc'd float32 copy of tensor `name`; fails the test if it is missing or its element count
 * is not numel (pass 0 to accept any, the count is stored in *numel_out if not NULL). */
float *tu_tensor(const ddpm_safetensors *st, const char *name, size_t numel, size_t *numel_out);
/* Scalar fixture value (a tensor with one element). */
double tu_scalar(const ddpm_safetensors *st, const char *name);

/* Fails the test unless |a - b| <= atol + rtol * |b| for every element; prints the worst index. */
void tu_assert_close_(const float *a, const float *b, size_t n, double rtol, double atol,
                      const char *what, const char *file, int line);
#define tu_assert_close(a, b, n, rtol, atol, what) \
    tu_assert_close_((a), (b), (n), (rtol), (atol), (what), __FILE__, __LINE__)
/* The largest |a - b| / (atol + |b|) style relative error, for reporting. */
double tu_max_rel_err(const float *a, const float *b, size_t n, double floor);

/* A temporary directory for this test process (created on first use, removed by tu_cleanup). */
const char *tu_tmpdir(void);
/* Path inside tu_tmpdir() (static rotating buffers: valid for a few calls). */
const char *tu_tmp(const char *name);
/* Runs a shell command, returns its exit status (or -1). */
int tu_system(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* The ddpm binary ($DDPM_BIN). */
const char *tu_ddpm_bin(void);

#endif

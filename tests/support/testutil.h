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
/* cmocka group setup and teardown for a test file that reads one fixture file: tu_use_fixture
 * (in main, before cmocka_run_group_tests) names it and where it goes; tu_fixture_setup loads it
 * there, tu_fixture_teardown frees it. */
void tu_use_fixture(const char *name, ddpm_safetensors *st);
int tu_fixture_setup(void **state);
int tu_fixture_teardown(void **state);
/* A malloc'd float32 copy of tensor `name`; fails the test if it is missing or its element count
 * is not numel (pass 0 to accept any, the count is stored in *numel_out if not NULL). */
float *tu_tensor(const ddpm_safetensors *st, const char *name, size_t numel, size_t *numel_out);
/* Scalar fixture value (a tensor with one element). */
double tu_scalar(const ddpm_safetensors *st, const char *name);
/* A malloc'd int copy of int64 tensor `name` (timesteps, labels); fails the test if it is
 * missing, of another dtype, or has not n elements. */
int *tu_tensor_int(const ddpm_safetensors *st, const char *name, int n);

/* Fails the test unless |a - b| <= atol + rtol * |b| for every element; prints the worst index. */
void tu_assert_close_(const float *a, const float *b, size_t n, double rtol, double atol,
                      const char *what, const char *file, int line);
#define tu_assert_close(a, b, n, rtol, atol, what) \
    tu_assert_close_((a), (b), (n), (rtol), (atol), (what), __FILE__, __LINE__)
/* The largest |a - b| / (atol + |b|) style relative error, for reporting. */
double tu_max_rel_err(const float *a, const float *b, size_t n, double floor);
/* max |v[i]| (0 for n = 0). */
double tu_maxabs(const float *v, size_t n);
/* A deterministic test RNG, independent of the library's (xorshift64 + Box-Muller; one stream
 * per test process): a uniform double in [0, 1), and n normal floats times scale (malloc'd). */
double tu_urand(void);
float *tu_randn_alloc(size_t n, float scale);

/* The worst error of a series of comparisons and what it was, for the summary a test prints at
 * the end. tu_worst_note keeps err and what if err is larger than the worst so far. */
typedef struct {
    double err;
    char what[160];
} tu_worst;
void tu_worst_note(tu_worst *w, double err, const char *what);
/* Prints the worst tu_cmp_torch error: "[tag] worst error vs PyTorch (...): err (what)". */
void tu_worst_print(const char *tag, const tu_worst *w);

/* got against a float64 PyTorch reference ref (test_ops, test_tape, test_unet): fails the test
 * unless |got - ref| <= rtol |ref| + atol_rel max|ref| + 1e-7 for every element (as
 * tu_assert_close); notes the error max |got - ref| / (|ref| + 1e-3 max|ref|) in *w first. */
void tu_cmp_torch_(tu_worst *w, const char *what, const float *got, const float *ref, size_t n,
                   double rtol, double atol_rel, const char *file, int line);
#define tu_cmp_torch(w, what, got, ref, n, rtol, atol_rel) \
    tu_cmp_torch_((w), (what), (got), (ref), (n), (rtol), (atol_rel), __FILE__, __LINE__)

/* A temporary directory for this test process (created on first use, removed by tu_cleanup). */
const char *tu_tmpdir(void);
/* Path inside tu_tmpdir() (static rotating buffers: valid for a few calls). */
const char *tu_tmp(const char *name);
/* Runs a shell command, returns its exit status (or -1). */
int tu_system(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* The ddpm binary ($DDPM_BIN). */
const char *tu_ddpm_bin(void);

/* Writes n bytes (n = 0: an empty file) or a string to path; fails the test if it cannot. */
void tu_write_file(const char *path, const void *data, size_t n);
void tu_write_text(const char *path, const char *text);
/* Fails the test unless rc is want and ddpm_last_error() names path and contains fragment (each
 * unless NULL). */
void tu_expect_status(int rc, int want, const char *path, const char *fragment);

#endif

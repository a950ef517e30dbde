/* testutil.c - helpers for the cmocka test executables. */
#include "testutil.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

const char *tu_fixture_path(const char *name) {
    static char buf[4096];
    const char *dir = getenv("DDPM_FIXTURES");
    snprintf(buf, sizeof buf, "%s/%s", dir ? dir : "tests/fixtures", name);
    return buf;
}

void tu_load_fixture(const char *name, ddpm_safetensors *st) {
    const char *path = tu_fixture_path(name);
    if (ddpm_safetensors_read(path, st) != DDPM_OK)
        fail_msg("cannot load fixture %s: %s (regenerate with scripts/fixtures/gen_all.sh)", path,
                 ddpm_last_error());
}

static const char *fixture_name;
static ddpm_safetensors *fixture_st;

void tu_use_fixture(const char *name, ddpm_safetensors *st) {
    fixture_name = name;
    fixture_st = st;
}

int tu_fixture_setup(void **state) {
    (void)state;
    tu_load_fixture(fixture_name, fixture_st);
    return 0;
}

int tu_fixture_teardown(void **state) {
    (void)state;
    ddpm_safetensors_free(fixture_st);
    return 0;
}

float *tu_tensor(const ddpm_safetensors *st, const char *name, size_t numel, size_t *numel_out) {
    const ddpm_tensor *t = ddpm_safetensors_find(st, name);
    if (!t) fail_msg("fixture has no tensor '%s'", name);
    if (numel && t->numel != numel)
        fail_msg("fixture tensor '%s' has %zu elements, expected %zu", name, t->numel, numel);
    float *v = malloc((t->numel ? t->numel : 1) * sizeof(float));
    assert_non_null(v);
    if (ddpm_tensor_to_f32(t, v)) fail_msg("%s", ddpm_last_error());
    if (numel_out) *numel_out = t->numel;
    return v;
}

double tu_scalar(const ddpm_safetensors *st, const char *name) {
    float *v = tu_tensor(st, name, 1, NULL);
    double x = v[0];
    free(v);
    return x;
}

int *tu_tensor_int(const ddpm_safetensors *st, const char *name, int n) {
    const ddpm_tensor *t = ddpm_safetensors_find(st, name);
    if (!t) fail_msg("fixture tensor %s missing", name);
    assert_int_equal(t->dtype, DDPM_DT_I64);
    assert_int_equal(t->numel, n);
    int *v = malloc(sizeof(int) * (n > 0 ? n : 1));
    assert_non_null(v);
    for (int i = 0; i < n; i++) {
        int64_t x;
        memcpy(&x, (const char *)t->data + 8 * i, 8);
        v[i] = (int)x;
    }
    return v;
}

double tu_maxabs(const float *v, size_t n) {
    double m = 0;
    for (size_t i = 0; i < n; i++) m = fmax(m, fabs((double)v[i]));
    return m;
}

void tu_worst_note(tu_worst *w, double err, const char *what) {
    if (err > w->err) {
        w->err = err;
        snprintf(w->what, sizeof w->what, "%s", what);
    }
}

void tu_worst_print(const char *tag, const tu_worst *w) {
    printf("[%s] worst error vs PyTorch (max |got-ref| / (|ref| + 1e-3 max|ref|)): %.3g (%s)\n",
           tag, w->err, w->what);
}

void tu_cmp_torch_(tu_worst *w, const char *what, const float *got, const float *ref, size_t n,
                   double rtol, double atol_rel, const char *file, int line) {
    const double scale = tu_maxabs(ref, n);
    double err = 0;
    for (size_t i = 0; i < n; i++)
        err = fmax(err,
                   fabs((double)got[i] - ref[i]) / (fabs((double)ref[i]) + 1e-3 * scale + 1e-30));
    tu_worst_note(w, err, what);
    tu_assert_close_(got, ref, n, rtol, atol_rel * scale + 1e-7, what, file, line);
}

double tu_max_rel_err(const float *a, const float *b, size_t n, double floor) {
    double worst = 0;
    for (size_t i = 0; i < n; i++) {
        double e = fabs((double)a[i] - b[i]) / (fabs(b[i]) > floor ? fabs(b[i]) : floor);
        if (e > worst || isnan(e)) worst = isnan(e) ? INFINITY : e;
    }
    return worst;
}

void tu_assert_close_(const float *a, const float *b, size_t n, double rtol, double atol,
                      const char *what, const char *file, int line) {
    size_t worst = 0, bad = 0;
    double worst_excess = -1;
    for (size_t i = 0; i < n; i++) {
        double diff = fabs((double)a[i] - (double)b[i]);
        double tol = atol + rtol * fabs((double)b[i]);
        double excess = isnan(diff) ? INFINITY : diff - tol;
        if (excess > 0) bad++;
        if (excess > worst_excess) {
            worst_excess = excess;
            worst = i;
        }
    }
    if (bad) {
        print_error("%s: %zu of %zu elements differ; worst at [%zu]: got %.9g, expected %.9g "
                    "(rtol %g, atol %g)\n",
                    what, bad, n, worst, (double)a[worst], (double)b[worst], rtol, atol);
        _fail(file, line); /* longjmps: print first */
    }
}

static char tmpdir[256];

static void cleanup(void) {
    if (tmpdir[0]) {
        char cmd[300];
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
        if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", tmpdir);
    }
}

const char *tu_tmpdir(void) {
    if (!tmpdir[0]) {
        snprintf(tmpdir, sizeof tmpdir, "/tmp/ddpm-test-XXXXXX");
        if (!mkdtemp(tmpdir)) fail_msg("mkdtemp failed");
        atexit(cleanup);
    }
    return tmpdir;
}

const char *tu_tmp(const char *name) {
    static char bufs[8][512];
    static int k;
    char *b = bufs[k++ & 7];
    snprintf(b, 512, "%s/%s", tu_tmpdir(), name);
    return b;
}

int tu_system(const char *fmt, ...) {
    char cmd[8192];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cmd, sizeof cmd, fmt, ap);
    va_end(ap);
    int st = system(cmd);
    if (st == -1 || !WIFEXITED(st)) return -1;
    return WEXITSTATUS(st);
}

const char *tu_ddpm_bin(void) {
    const char *b = getenv("DDPM_BIN");
    return b ? b : "./ddpm";
}

void tu_write_file(const char *path, const void *data, size_t n) {
    FILE *f = fopen(path, "wb");
    if (!f) fail_msg("cannot create %s", path);
    if (n) assert_int_equal(fwrite(data, 1, n, f), n);
    assert_int_equal(fclose(f), 0);
}

void tu_write_text(const char *path, const char *text) {
    tu_write_file(path, text, strlen(text));
}

void tu_expect_status(int rc, int want, const char *path, const char *fragment) {
    const char *msg = ddpm_last_error();
    if (rc != want) fail_msg("expected status %d, got %d (%s)", want, rc, msg);
    if (path && !strstr(msg, path)) fail_msg("message '%s' does not name %s", msg, path);
    if (fragment && !strstr(msg, fragment))
        fail_msg("message '%s' does not mention '%s'", msg, fragment);
}

static uint64_t tu_rng_state = 0x9E3779B97F4A7C15ull;

double tu_urand(void) {
    tu_rng_state ^= tu_rng_state << 13;
    tu_rng_state ^= tu_rng_state >> 7;
    tu_rng_state ^= tu_rng_state << 17;
    return (double)(tu_rng_state >> 11) * (1.0 / 9007199254740992.0);
}

float *tu_randn_alloc(size_t n, float scale) {
    float *v = malloc((n ? n : 1) * sizeof(float));
    assert_non_null(v);
    for (size_t i = 0; i < n; i++) {
        const double u1 = tu_urand() + 1e-12, u2 = tu_urand();
        v[i] = (float)(sqrt(-2 * log(u1)) * cos(6.283185307179586 * u2)) * scale;
    }
    return v;
}

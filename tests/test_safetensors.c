/* test_safetensors.c - round trip, dtype conversion, and every kind of damaged file. */
#include "testutil.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static void write_sample(const char *path) {
    float a[6] = {1, 2, 3, 4, 5, 6};
    double b[2] = {0.5, -0.25};
    ddpm_tensor t[2] = {
        {.name = "layer.weight", .dtype = DDPM_DT_F32, .ndim = 2, .shape = {2, 3}, .data = a},
        {.name = "scale", .dtype = DDPM_DT_F64, .ndim = 1, .shape = {2}, .data = b},
    };
    const char *k[] = {"format", "step"}, *v[] = {"ddpm", "42"};
    assert_int_equal(ddpm_safetensors_write(path, t, 2, k, v, 2), DDPM_OK);
}

static void test_round_trip(void **state) {
    (void)state;
    const char *path = tu_tmp("a.safetensors");
    write_sample(path);
    ddpm_safetensors st;
    assert_int_equal(ddpm_safetensors_read(path, &st), DDPM_OK);
    assert_int_equal(st.n_tensors, 2);
    const ddpm_tensor *w = ddpm_safetensors_find(&st, "layer.weight");
    assert_non_null(w);
    assert_int_equal(w->ndim, 2);
    assert_int_equal(w->shape[1], 3);
    float f[6];
    assert_int_equal(ddpm_tensor_to_f32(w, f), DDPM_OK);
    assert_float_equal(f[5], 6, 0);
    const ddpm_tensor *s = ddpm_safetensors_find(&st, "scale");
    assert_int_equal(ddpm_tensor_to_f32(s, f), DDPM_OK);
    assert_float_equal(f[1], -0.25, 0);
    assert_string_equal(ddpm_safetensors_meta(&st, "step"), "42");
    assert_non_null(ddpm_safetensors_meta(&st, "ddpm.crc32"));
    assert_null(ddpm_safetensors_find(&st, "nope"));
    ddpm_safetensors_free(&st);
    /* No temporary file is left behind. */
    assert_int_equal(tu_system("ls %s | grep -c tmp >/dev/null", tu_tmpdir()), 1);
}

static void test_half_types(void **state) {
    (void)state;
    /* 1.0, -2.0, 0.5, 65504 (max half), a subnormal 2^-24 */
    uint16_t h[5] = {0x3C00, 0xC000, 0x3800, 0x7BFF, 0x0001};
    uint16_t bf[2] = {0x3F80, 0xC040}; /* 1.0, -3.0 */
    ddpm_tensor t[2] = {{.name = "h", .dtype = DDPM_DT_F16, .ndim = 1, .shape = {5}, .data = h},
                        {.name = "bf", .dtype = DDPM_DT_BF16, .ndim = 1, .shape = {2}, .data = bf}};
    const char *path = tu_tmp("h.safetensors");
    assert_int_equal(ddpm_safetensors_write(path, t, 2, NULL, NULL, 0), DDPM_OK);
    ddpm_safetensors st;
    assert_int_equal(ddpm_safetensors_read(path, &st), DDPM_OK);
    float f[5];
    assert_int_equal(ddpm_tensor_to_f32(ddpm_safetensors_find(&st, "h"), f), DDPM_OK);
    assert_float_equal(f[0], 1, 0);
    assert_float_equal(f[1], -2, 0);
    assert_float_equal(f[2], 0.5, 0);
    assert_float_equal(f[3], 65504, 0);
    assert_float_equal(f[4], 5.9604644775390625e-8, 0);
    assert_int_equal(ddpm_tensor_to_f32(ddpm_safetensors_find(&st, "bf"), f), DDPM_OK);
    assert_float_equal(f[1], -3, 0);
    ddpm_safetensors_free(&st);
}

/* The fixture files written by scripts/fixtures/st.py (no checksum) load too. */
static void test_python_written(void **state) {
    (void)state;
    ddpm_safetensors st;
    tu_load_fixture("schedule.safetensors", &st);
    assert_true(st.n_tensors > 50);
    assert_non_null(ddpm_safetensors_meta(&st, "generator"));
    ddpm_safetensors_free(&st);
}

static unsigned char *slurp(const char *path, size_t *n) {
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    fseek(f, 0, SEEK_END);
    *n = (size_t)ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *b = malloc(*n);
    assert_int_equal(fread(b, 1, *n, f), *n);
    fclose(f);
    return b;
}

static void spill(const char *path, const unsigned char *b, size_t n) {
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(b, 1, n, f), n);
    fclose(f);
}

static void expect_bad(const char *path, int code, const char *needle) {
    ddpm_safetensors st;
    int rc = ddpm_safetensors_read(path, &st);
    if (rc != code) fail_msg("%s: expected code %d, got %d (%s)", path, code, rc, ddpm_last_error());
    if (!strstr(ddpm_last_error(), path)) fail_msg("message '%s' does not name the file", ddpm_last_error());
    if (needle && !strstr(ddpm_last_error(), needle))
        fail_msg("message '%s' does not mention '%s'", ddpm_last_error(), needle);
}

static void test_damaged_files(void **state) {
    (void)state;
    const char *good = tu_tmp("good.safetensors"), *bad = tu_tmp("bad.safetensors");
    write_sample(good);
    size_t n;
    unsigned char *b = slurp(good, &n);
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--) hlen = hlen << 8 | b[i];

    expect_bad(tu_tmp("missing.safetensors"), DDPM_ERR_IO, "cannot open");
    spill(bad, b, 0);
    expect_bad(bad, DDPM_ERR_FORMAT, "too short");
    spill(bad, b, 5);
    expect_bad(bad, DDPM_ERR_FORMAT, "too short");
    /* truncated: in the header, and in the data */
    spill(bad, b, 8 + hlen / 2);
    expect_bad(bad, DDPM_ERR_FORMAT, "header length");
    spill(bad, b, n - 3);
    expect_bad(bad, DDPM_ERR_FORMAT, NULL);
    /* an absurd header length */
    unsigned char *c = malloc(n);
    memcpy(c, b, n);
    c[6] = 0x7f;
    spill(bad, c, n);
    expect_bad(bad, DDPM_ERR_FORMAT, "header length");
    /* flipped bytes in the JSON header: every position must give an error or a valid file,
     * never a crash; the structural ones must be errors. */
    for (size_t i = 8; i < 8 + hlen; i++) {
        memcpy(c, b, n);
        c[i] ^= 0x5A;
        spill(bad, c, n);
        ddpm_safetensors st;
        if (ddpm_safetensors_read(bad, &st) == DDPM_OK) ddpm_safetensors_free(&st);
    }
    memcpy(c, b, n);
    c[8] = '[';
    spill(bad, c, n);
    expect_bad(bad, DDPM_ERR_FORMAT, "header");
    memcpy(c, b, n);
    c[8 + hlen / 2] = '}';
    spill(bad, c, n);
    expect_bad(bad, DDPM_ERR_FORMAT, NULL);
    /* flipped bytes in the data: the checksum catches them */
    for (size_t i = 8 + hlen; i < n; i += 5) {
        memcpy(c, b, n);
        c[i] ^= 0x01;
        spill(bad, c, n);
        expect_bad(bad, DDPM_ERR_FORMAT, "checksum");
    }
    free(c);
    free(b);
}

/* Offsets that leave a gap, overlap, or run past the end are rejected. */
/* Reproducers found by fuzzing (tests/fixtures/regress/): each once crashed or misbehaved. */
static void test_regressions(void **state) {
    (void)state;
    /* two __metadata__ objects: the second was written into arrays sized for the first (heap
     * buffer overflow) */
    expect_bad(tu_fixture_path("regress/safetensors-two-metadata.safetensors"), DDPM_ERR_FORMAT,
               "more than one __metadata__");
}

static void test_bad_offsets(void **state) {
    (void)state;
    const char *bad = tu_tmp("off.safetensors");
    const char *cases[][2] = {
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},\"b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}", "overlaps"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}", "gap"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,12]}}", "outside"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,8]}}", "do not fit"},
        {"{\"a\":{\"dtype\":\"Q4\",\"shape\":[2],\"data_offsets\":[0,8]}}", "unsupported dtype"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[-2],\"data_offsets\":[0,8]}}", "bad shape"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2]}}", "data_offsets"},
        {"{\"__metadata__\":{\"k\":3},\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", "not a string"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        size_t hl = strlen(cases[i][0]);
        unsigned char buf[512] = {0};
        for (int k = 0; k < 8; k++) buf[k] = (unsigned char)(hl >> (8 * k));
        memcpy(buf + 8, cases[i][0], hl);
        spill(bad, buf, 8 + hl + 8);
        expect_bad(bad, DDPM_ERR_FORMAT, cases[i][1]);
    }
}

static void test_write_errors(void **state) {
    (void)state;
    float a = 1;
    ddpm_tensor t = {.name = "a", .dtype = DDPM_DT_F32, .ndim = 1, .shape = {1}, .data = &a};
    int rc = ddpm_safetensors_write("/nonexistent-dir/x.safetensors", &t, 1, NULL, NULL, 0);
    assert_int_equal(rc, DDPM_ERR_IO);
    assert_non_null(strstr(ddpm_last_error(), "/nonexistent-dir/x.safetensors"));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trip),    cmocka_unit_test(test_half_types),
        cmocka_unit_test(test_python_written), cmocka_unit_test(test_damaged_files),
        cmocka_unit_test(test_regressions),   cmocka_unit_test(test_bad_offsets),   cmocka_unit_test(test_write_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

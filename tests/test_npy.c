/* test_npy.c - .npy reading (versions 1.0/2.0/3.0, every dtype, hand-built headers), conversion
 * to float32, writing (header layout as numpy writes it), and every malformed-file error. */
#include "testutil.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Writes raw bytes to a file in the test directory; returns its path. */
static const char *write_raw(const char *name, const void *data, size_t n) {
    const char *path = tu_tmp(name);
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    if (n) assert_int_equal(fwrite(data, 1, n, f), n);
    assert_int_equal(fclose(f), 0);
    return path;
}

/* An .npy file with the given version and header text (used verbatim: no padding unless pad),
 * followed by nbytes of data. */
static const char *make_npy(const char *name, int major, const char *header, const void *data,
                            size_t nbytes) {
    size_t hl = strlen(header);
    size_t pre = major == 1 ? 10 : 12;
    unsigned char *buf = malloc(pre + hl + nbytes + 1);
    assert_non_null(buf);
    memcpy(buf, "\x93NUMPY", 6);
    buf[6] = (unsigned char)major;
    buf[7] = 0;
    buf[8] = (unsigned char)(hl & 0xff);
    buf[9] = (unsigned char)(hl >> 8);
    if (major != 1) {
        buf[10] = (unsigned char)(hl >> 16);
        buf[11] = (unsigned char)(hl >> 24);
    }
    memcpy(buf + pre, header, hl);
    if (nbytes) memcpy(buf + pre + hl, data, nbytes);
    const char *path = write_raw(name, buf, pre + hl + nbytes);
    free(buf);
    return path;
}

static char *slurp(const char *path, size_t *n) {
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    fseek(f, 0, SEEK_END);
    long len = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *buf = malloc((size_t)len + 1);
    assert_non_null(buf);
    assert_int_equal(fread(buf, 1, (size_t)len, f), (size_t)len);
    fclose(f);
    buf[len] = 0;
    *n = (size_t)len;
    return buf;
}

/* rc must equal want and the message must contain the path and the fragment. */
static void expect_error(int rc, int want, const char *path, const char *fragment) {
    const char *msg = ddpm_last_error();
    if (rc != want) fail_msg("expected status %d, got %d (%s)", want, rc, msg);
    if (!strstr(msg, path)) fail_msg("message '%s' does not name the file %s", msg, path);
    if (fragment && !strstr(msg, fragment))
        fail_msg("message '%s' does not mention '%s'", msg, fragment);
}

static void test_write_read_f32(void **state) {
    (void)state;
    float data[2 * 3 * 4 * 5];
    for (int i = 0; i < 120; i++) data[i] = (float)i * 0.25f - 7.0f;
    const int64_t shape[4] = {2, 3, 4, 5};
    const char *path = tu_tmp("a.npy");
    assert_int_equal(ddpm_npy_write_f32(path, data, 4, shape), DDPM_OK);
    /* The header as numpy writes it: version 1.0, padded with spaces to 64 bytes, '\n' last. */
    size_t n;
    char *raw = slurp(path, &n);
    assert_memory_equal(raw, "\x93NUMPY\x01\x00", 8);
    size_t hl = (unsigned char)raw[8] | (size_t)(unsigned char)raw[9] << 8;
    assert_int_equal((10 + hl) % 64, 0);
    assert_int_equal(n, 10 + hl + sizeof data);
    assert_int_equal(raw[10 + hl - 1], '\n');
    const char *dict = "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3, 4, 5), }";
    assert_memory_equal(raw + 10, dict, strlen(dict));
    for (size_t i = 10 + strlen(dict); i < 10 + hl - 1; i++) assert_int_equal(raw[i], ' ');
    free(raw);

    ddpm_npy a;
    assert_int_equal(ddpm_npy_read(path, &a), DDPM_OK);
    assert_int_equal(a.ndim, 4);
    for (int i = 0; i < 4; i++) assert_int_equal(a.shape[i], shape[i]);
    assert_string_equal(a.dtype, "f4");
    assert_int_equal(a.itemsize, 4);
    assert_int_equal(a.numel, 120);
    assert_memory_equal(a.data, data, sizeof data);
    float back[120];
    assert_int_equal(ddpm_npy_to_f32(&a, back), DDPM_OK);
    assert_memory_equal(back, data, sizeof data);
    ddpm_npy_free(&a);
    assert_null(a.data);
    ddpm_npy_free(&a); /* twice is fine */
}

static void test_write_read_u8_ranks(void **state) {
    (void)state;
    uint8_t v[5] = {0, 1, 127, 200, 255};
    const int64_t s1[1] = {5};
    const char *p1 = tu_tmp("v.npy");
    assert_int_equal(ddpm_npy_write_u8(p1, v, 1, s1), DDPM_OK);
    size_t n;
    char *raw = slurp(p1, &n);
    const char *dict = "{'descr': '|u1', 'fortran_order': False, 'shape': (5,), }";
    assert_memory_equal(raw + 10, dict, strlen(dict));
    assert_int_equal(n, 128 + 5); /* 10 + 58 + 1 bytes of header, padded to 128 */
    free(raw);
    ddpm_npy a;
    assert_int_equal(ddpm_npy_read(p1, &a), DDPM_OK);
    assert_int_equal(a.ndim, 1);
    assert_int_equal(a.shape[0], 5);
    assert_string_equal(a.dtype, "u1");
    assert_memory_equal(a.data, v, 5);
    float f[5];
    ddpm_npy_to_f32(&a, f);
    assert_true(f[4] == 255.0f && f[2] == 127.0f);
    ddpm_npy_free(&a);

    /* A scalar: shape () and one element. */
    float x = 3.5f;
    const char *p0 = tu_tmp("s.npy");
    assert_int_equal(ddpm_npy_write_f32(p0, &x, 0, NULL), DDPM_OK);
    raw = slurp(p0, &n);
    assert_non_null(strstr(raw + 10, "'shape': (), }"));
    free(raw);
    assert_int_equal(ddpm_npy_read(p0, &a), DDPM_OK);
    assert_int_equal(a.ndim, 0);
    assert_int_equal(a.numel, 1);
    assert_true(*(float *)a.data == 3.5f);
    ddpm_npy_free(&a);

    /* Eight dimensions and an empty array. */
    int64_t s8[8] = {1, 2, 1, 2, 1, 2, 1, 2};
    float d8[16];
    for (int i = 0; i < 16; i++) d8[i] = (float)i;
    const char *p8 = tu_tmp("r8.npy");
    assert_int_equal(ddpm_npy_write_f32(p8, d8, 8, s8), DDPM_OK);
    assert_int_equal(ddpm_npy_read(p8, &a), DDPM_OK);
    assert_int_equal(a.ndim, 8);
    assert_int_equal(a.numel, 16);
    assert_memory_equal(a.data, d8, sizeof d8);
    ddpm_npy_free(&a);
    int64_t se[2] = {0, 3};
    const char *pe = tu_tmp("empty.npy");
    assert_int_equal(ddpm_npy_write_f32(pe, NULL, 2, se), DDPM_OK);
    assert_int_equal(ddpm_npy_read(pe, &a), DDPM_OK);
    assert_int_equal(a.numel, 0);
    ddpm_npy_free(&a);

    /* Nine dimensions cannot be written. */
    int64_t s9[9] = {1, 1, 1, 1, 1, 1, 1, 1, 1};
    assert_int_equal(ddpm_npy_write_f32(tu_tmp("r9.npy"), d8, 9, s9), DDPM_ERR_INVALID);
}

/* Hand-built files: other versions, dtypes, key orders, quotes and odd header lengths (so the
 * data is not aligned in the file). */
static void test_hand_built(void **state) {
    (void)state;
    ddpm_npy a;
    float f[6];

    /* 1.0, float64, Python 2 long suffixes, an odd header length, no padding. */
    double d[6] = {1.5, -2.25, 3, 4, 5, 1e30};
    const char *p = make_npy(
        "f8.npy", 1, "{'descr': '<f8', 'fortran_order': False, 'shape': (3L, 2L)}\n", d, sizeof d);
    assert_int_equal(ddpm_npy_read(p, &a), DDPM_OK);
    assert_string_equal(a.dtype, "f8");
    assert_int_equal(a.ndim, 2);
    assert_int_equal(a.shape[0], 3);
    assert_int_equal(a.shape[1], 2);
    assert_int_equal(ddpm_npy_to_f32(&a, f), DDPM_OK);
    assert_true(f[0] == 1.5f && f[1] == -2.25f && f[5] == 1e30f);
    ddpm_npy_free(&a);

    /* 2.0, int64, keys in another order, double quotes, extra spaces. */
    int64_t q[3] = {-7, 0, 123456789};
    p = make_npy("i8.npy", 2,
                 "{ \"shape\" : ( 3 , ) , \"fortran_order\":False,\"descr\":\"<i8\" }  \n", q,
                 sizeof q);
    assert_int_equal(ddpm_npy_read(p, &a), DDPM_OK);
    assert_string_equal(a.dtype, "i8");
    assert_int_equal(a.ndim, 1);
    assert_int_equal(ddpm_npy_to_f32(&a, f), DDPM_OK);
    assert_true(f[0] == -7.0f && f[1] == 0.0f && f[2] == 123456789.0f);
    ddpm_npy_free(&a);

    /* 3.0, int32. */
    int32_t r[4] = {1, -2, 3, 2147483647};
    p = make_npy("i4.npy", 3, "{'descr': '<i4', 'fortran_order': False, 'shape': (2, 2), }\n", r,
                 sizeof r);
    assert_int_equal(ddpm_npy_read(p, &a), DDPM_OK);
    assert_string_equal(a.dtype, "i4");
    assert_int_equal(ddpm_npy_to_f32(&a, f), DDPM_OK);
    assert_true(f[1] == -2.0f && f[3] == 2147483647.0f);
    ddpm_npy_free(&a);

    /* bool, and a float16 (1.0 = 0x3c00, -2.0 = 0xc000, 0.5 = 0x3800). */
    uint8_t b[3] = {0, 1, 1};
    p = make_npy("b1.npy", 1, "{'descr': '|b1', 'fortran_order': False, 'shape': (3,), }\n", b, 3);
    assert_int_equal(ddpm_npy_read(p, &a), DDPM_OK);
    assert_string_equal(a.dtype, "b1");
    ddpm_npy_to_f32(&a, f);
    assert_true(f[0] == 0.0f && f[1] == 1.0f && f[2] == 1.0f);
    ddpm_npy_free(&a);
    uint16_t h[3] = {0x3c00, 0xc000, 0x3800};
    p = make_npy("f2.npy", 1, "{'descr': '<f2', 'fortran_order': False, 'shape': (3,), }\n", h,
                 sizeof h);
    assert_int_equal(ddpm_npy_read(p, &a), DDPM_OK);
    ddpm_npy_to_f32(&a, f);
    assert_true(f[0] == 1.0f && f[1] == -2.0f && f[2] == 0.5f);
    ddpm_npy_free(&a);

    /* A big-endian marker on a byte type is harmless. */
    p = make_npy("u1be.npy", 1, "{'descr': '>u1', 'fortran_order': False, 'shape': (3,), }\n", b,
                 3);
    assert_int_equal(ddpm_npy_read(p, &a), DDPM_OK);
    assert_string_equal(a.dtype, "u1");
    ddpm_npy_free(&a);
}

static void test_errors(void **state) {
    (void)state;
    ddpm_npy a;
    float d[4] = {1, 2, 3, 4};
    const char *p;

    p = tu_tmp("missing.npy");
    expect_error(ddpm_npy_read(p, &a), DDPM_ERR_IO, p, NULL);
    assert_null(a.data);

    p = write_raw("magic.npy", "PK\x03\x04 not numpy at all", 20);
    expect_error(ddpm_npy_read(p, &a), DDPM_ERR_FORMAT, p, "magic");
    p = write_raw("short.npy", "\x93NUMPY", 6);
    expect_error(ddpm_npy_read(p, &a), DDPM_ERR_FORMAT, p, NULL);

    p = make_npy("fortran.npy", 1, "{'descr': '<f4', 'fortran_order': True, 'shape': (2, 2), }\n",
                 d, sizeof d);
    expect_error(ddpm_npy_read(p, &a), DDPM_ERR_FORMAT, p, "fortran_order");

    p = make_npy("be.npy", 1, "{'descr': '>f4', 'fortran_order': False, 'shape': (4,), }\n", d,
                 sizeof d);
    expect_error(ddpm_npy_read(p, &a), DDPM_ERR_FORMAT, p, "big-endian");

    p = make_npy("c8.npy", 1, "{'descr': '<c8', 'fortran_order': False, 'shape': (2,), }\n", d,
                 sizeof d);
    expect_error(ddpm_npy_read(p, &a), DDPM_ERR_FORMAT, p, "unsupported dtype '<c8'");
    p = make_npy("U.npy", 1, "{'descr': '<U3', 'fortran_order': False, 'shape': (1,), }\n", d, 12);
    expect_error(ddpm_npy_read(p, &a), DDPM_ERR_FORMAT, p, "unsupported dtype");
    p = make_npy("rec.npy", 1,
                 "{'descr': [('a', '<f4')], 'fortran_order': False, 'shape': (4,), }\n", d,
                 sizeof d);
    expect_error(ddpm_npy_read(p, &a), DDPM_ERR_FORMAT, p, "structured");

    p = make_npy("trunc.npy", 1, "{'descr': '<f4', 'fortran_order': False, 'shape': (5,), }\n", d,
                 sizeof d);
    expect_error(ddpm_npy_read(p, &a), DDPM_ERR_FORMAT, p, "truncated");
    p = make_npy("extra.npy", 1, "{'descr': '<f4', 'fortran_order': False, 'shape': (3,), }\n", d,
                 sizeof d);
    expect_error(ddpm_npy_read(p, &a), DDPM_ERR_FORMAT, p, "unexpected bytes");

    p = make_npy("nodescr.npy", 1, "{'fortran_order': False, 'shape': (4,), }\n", d, sizeof d);
    expect_error(ddpm_npy_read(p, &a), DDPM_ERR_FORMAT, p, "descr");
    p = make_npy("garbage.npy", 1, "{'descr': '<f4', 'fortran_order': False, 'shape': (4,) 'x'}\n",
                 d, sizeof d);
    expect_error(ddpm_npy_read(p, &a), DDPM_ERR_FORMAT, p, "malformed");
    p = make_npy("badshape.npy", 1, "{'descr': '<f4', 'fortran_order': False, 'shape': (4, x), }\n",
                 d, sizeof d);
    expect_error(ddpm_npy_read(p, &a), DDPM_ERR_FORMAT, p, "shape");
    p = make_npy("neg.npy", 1, "{'descr': '<f4', 'fortran_order': False, 'shape': (-4,), }\n", d,
                 sizeof d);
    expect_error(ddpm_npy_read(p, &a), DDPM_ERR_FORMAT, p, "shape");
    p = make_npy("rank9.npy", 1,
                 "{'descr': '<f4', 'fortran_order': False, 'shape': (1,1,1,1,1,1,1,1,4), }\n", d,
                 sizeof d);
    expect_error(ddpm_npy_read(p, &a), DDPM_ERR_FORMAT, p, "dimensions");
    p = make_npy("huge.npy", 1,
                 "{'descr': '<f8', 'fortran_order': False, 'shape': (4294967296, 4294967296), }\n",
                 d, sizeof d);
    expect_error(ddpm_npy_read(p, &a), DDPM_ERR_FORMAT, p, NULL);
    p = make_npy("key.npy", 1,
                 "{'descr': '<f4', 'fortran_order': False, 'shape': (4,), 'extra': 1}\n", d,
                 sizeof d);
    expect_error(ddpm_npy_read(p, &a), DDPM_ERR_FORMAT, p, "'extra'");
    p = make_npy("v4.npy", 4, "{'descr': '<f4', 'fortran_order': False, 'shape': (4,), }\n", d,
                 sizeof d);
    expect_error(ddpm_npy_read(p, &a), DDPM_ERR_FORMAT, p, "version 4");

    /* A header length running past the end of the file. */
    unsigned char hdr[12] = {0x93, 'N', 'U', 'M', 'P', 'Y', 1, 0, 0xff, 0x7f, '{', '}'};
    p = write_raw("hlen.npy", hdr, sizeof hdr);
    expect_error(ddpm_npy_read(p, &a), DDPM_ERR_FORMAT, p, "header");
    assert_null(a.data);

    /* Writing into a missing directory names the path. */
    const int64_t s[1] = {4};
    p = tu_tmp("no/such/dir/out.npy");
    expect_error(ddpm_npy_write_f32(p, d, 1, s), DDPM_ERR_IO, "no/such/dir/out.npy", NULL);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_write_read_f32),
        cmocka_unit_test(test_write_read_u8_ranks),
        cmocka_unit_test(test_hand_built),
        cmocka_unit_test(test_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

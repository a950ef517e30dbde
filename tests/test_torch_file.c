/* test_torch_file.c - PyTorch files read without Python (src/io/torch_file.c, torch_pickle.c,
 * zip.c): every file torch.save wrote in scripts/fixtures/gen_torch_files.py gives exactly the
 * tensors of its .expected.safetensors (same names, dtypes, shapes and bytes), in both formats,
 * with views, shared storages and nested dicts; ddpm_weights_read tells formats apart by
 * content; and every hostile file is refused with a message that names the file and the reason. */
#include "testutil.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *fx(const char *name) {
    static char buf[4][1024];
    static int k;
    char *b = buf[k++ & 3];
    snprintf(b, sizeof buf[0], "torch/%s", name);
    return tu_fixture_path(b);
}

/* got must hold exactly the tensors of exp named prefix<name>, as <name>, byte for byte. */
static void assert_same_tensors(const ddpm_safetensors *got, const ddpm_safetensors *exp,
                                const char *prefix, const char *what) {
    const size_t pl = strlen(prefix);
    size_t want = 0;
    for (size_t i = 0; i < exp->n_tensors; i++) {
        const ddpm_tensor *e = &exp->tensors[i];
        if (strncmp(e->name, prefix, pl) != 0) continue;
        want++;
        const ddpm_tensor *g = ddpm_safetensors_find(got, e->name + pl);
        if (!g) fail_msg("%s: tensor '%s' missing", what, e->name + pl);
        if (g->dtype != e->dtype || g->ndim != e->ndim || g->numel != e->numel || g->nbytes != e->nbytes)
            fail_msg("%s: tensor '%s': dtype %s ndim %d numel %zu, expected %s %d %zu", what, g->name,
                     ddpm_dtype_name(g->dtype), g->ndim, g->numel, ddpm_dtype_name(e->dtype), e->ndim, e->numel);
        for (int d = 0; d < e->ndim; d++) assert_int_equal(g->shape[d], e->shape[d]);
        if (e->nbytes && memcmp(g->data, e->data, e->nbytes) != 0)
            fail_msg("%s: tensor '%s': values differ", what, g->name);
    }
    if (got->n_tensors != want)
        fail_msg("%s: %zu tensors, expected %zu", what, got->n_tensors, want);
}

static void check_file(const char *file, const char *key, const char *expected, const char *prefix) {
    ddpm_safetensors got, exp;
    if (ddpm_torch_read(fx(file), key, &got) != DDPM_OK) fail_msg("%s: %s", file, ddpm_last_error());
    assert_int_equal(ddpm_safetensors_read(fx(expected), &exp), DDPM_OK);
    assert_same_tensors(&got, &exp, prefix, file);
    for (size_t i = 0; i < got.n_tensors; i++) /* every tensor's bytes lie in the reader's buffer */
        assert_true((const unsigned char *)got.tensors[i].data >= got.file_ &&
                    (const unsigned char *)got.tensors[i].data + got.tensors[i].nbytes <= got.file_ + got.file_size_);
    ddpm_safetensors_free(&exp);
    ddpm_safetensors_free(&got);
}

static void test_dtypes_views_shared(void **state) {
    (void)state;
    check_file("dtypes.pth", NULL, "dtypes.expected.safetensors", "");
    check_file("dtypes_legacy.pth", NULL, "dtypes.expected.safetensors", "");
    check_file("proto4.pth", NULL, "proto4.expected.safetensors", "");
    check_file("proto4_legacy.pth", NULL, "proto4.expected.safetensors", "");
    /* the strided views, spelled out (base = arange(24).reshape(4, 6)) */
    ddpm_safetensors st;
    assert_int_equal(ddpm_torch_read(fx("dtypes.pth"), NULL, &st), DDPM_OK);
    assert_string_equal(st.tensors[0].name, "f32"); /* the state dict's order */
    const ddpm_tensor *s = ddpm_safetensors_find(&st, "slice"), *t = ddpm_safetensors_find(&st, "transposed");
    const ddpm_tensor *e = ddpm_safetensors_find(&st, "every_other"), *sc = ddpm_safetensors_find(&st, "scalar");
    assert_non_null(s);
    assert_non_null(t);
    assert_non_null(e);
    assert_non_null(sc);
    const float want_s[6] = {8, 9, 10, 14, 15, 16}, want_t[4] = {0, 6, 12, 18}, want_e[3] = {0, 2, 4};
    assert_int_equal(s->ndim, 2);
    assert_int_equal(s->shape[0], 2);
    assert_int_equal(s->shape[1], 3);
    assert_memory_equal(s->data, want_s, sizeof want_s);
    assert_int_equal(t->shape[0], 6);
    assert_int_equal(t->shape[1], 4);
    assert_memory_equal(t->data, want_t, sizeof want_t);
    assert_memory_equal(e->data, want_e, sizeof want_e);
    assert_int_equal(sc->ndim, 0);
    assert_int_equal(sc->numel, 1);
    assert_float_equal(*(const float *)sc->data, 2.5f, 0);
    const ddpm_tensor *i64 = ddpm_safetensors_find(&st, "i64");
    assert_int_equal(i64->dtype, DDPM_DT_I64);
    assert_int_equal(((const int64_t *)i64->data)[2], (int64_t)1 << 40);
    assert_int_equal(ddpm_safetensors_find(&st, "empty")->numel, 0);
    ddpm_safetensors_free(&st);
}

static void test_nested_and_modules(void **state) {
    (void)state;
    check_file("nested.pth", "model", "nested.expected.safetensors", "model.");
    check_file("nested.pth", "ema", "nested.expected.safetensors", "ema.");
    check_file("nested.pth", "*", "nested.expected.safetensors", "");
    check_file("nested_legacy.pt", "ema", "nested.expected.safetensors", "ema.");
    check_file("nested_zip64.pth", "model", "nested.expected.safetensors", "model.");
    check_file("nested_legacy.pt", "*", "nested.expected.safetensors", "");
    check_file("module.bin", NULL, "module.expected.safetensors", "");
    check_file("context_unet.pth", NULL, "context_unet.safetensors", "");
}

static void expect_refused(const char *file, const char *key, int code, const char *needle) {
    ddpm_safetensors st;
    int rc = ddpm_torch_read(fx(file), key, &st);
    const char *msg = ddpm_last_error();
    if (rc != code) fail_msg("%s: status %d, expected %d (%s)", file, rc, code, msg);
    if (!strstr(msg, needle)) fail_msg("%s: message '%s' lacks '%s'", file, msg, needle);
    if (!strstr(msg, file)) fail_msg("%s: message '%s' does not name the file", file, msg);
    assert_int_equal(st.n_tensors, 0);
    assert_null(st.tensors);
}

static void test_keys(void **state) {
    (void)state;
    expect_refused("nested.pth", NULL, DDPM_ERR_INVALID, "nested under 'model', 'ema': choose one with --key");
    expect_refused("nested_legacy.pt", NULL, DDPM_ERR_INVALID, "nested under 'model', 'ema'");
    expect_refused("nested.pth", "nope", DDPM_ERR_INVALID, "no key 'nope' (its keys: 'model', 'ema', 'step', 'cfg')");
    expect_refused("nested.pth", "step", DDPM_ERR_FORMAT, "key 'step' is a value, not a dict of tensors");
    expect_refused("nested.pth", "cfg", DDPM_ERR_FORMAT, "no tensors in the selected state dict");
    /* a dotted key walks into nested dicts: "model.conv.weight" is not a dict */
    expect_refused("nested.pth", "model.conv.weight", DDPM_ERR_FORMAT, "is a tensor, not a dict");
}

static void test_hostile_files(void **state) {
    (void)state;
    static const struct {
        const char *file, *needle;
    } cases[] = {
        {"evil_os_system.pth", "refuses the global 'os.system'"},
        {"evil_eval.pth", "refuses the global '__builtin__.eval'"},
        {"evil_reduce_storage.pth", "REDUCE of 'torch.FloatStorage'"},
        {"evil_build.pth", "BUILD on a tensor"},
        {"evil_traversal.pth", "ZIP entry name '../escape' is empty, absolute or leaves the archive"},
        {"evil_truncated.pth", "no ZIP end-of-central-directory record (truncated file?)"},
        {"evil_huge_view.pth", "reads element 1099511627775 of storage '0', which holds 4"},
        {"evil_huge_storage.pth", "has 16 bytes, its 1152921504606846976 F32 elements need"},
        {"evil_short_storage.pth", "reads element 11 of storage '0', which holds 8"},
        {"evil_zip_size.pth", "does not fit the file"},
        {"evil_deflate.pth", "ZIP entry 'archive/data.pkl' is compressed (only stored entries are read"},
        {"evil_duplicate.pth", "ZIP entry 'archive/data/0' appears twice"},
        {"evil_overlap.pth", "ZIP entries 'archive/data.pkl' and 'archive/version' overlap"},
        {"evil_legacy_truncated.pt", "bytes left (truncated or corrupted?)"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        expect_refused(cases[i].file, NULL, DDPM_ERR_FORMAT, cases[i].needle);
}

/* Copies a fixture to the temporary directory, applies edit, returns the copy's path. */
static const char *edited_copy(const char *file, const char *name, void (*edit)(unsigned char *, size_t *)) {
    FILE *f = fopen(fx(file), "rb");
    assert_non_null(f);
    static unsigned char buf[1 << 16];
    size_t n = fread(buf, 1, sizeof buf, f);
    fclose(f);
    assert_true(n > 0 && n < sizeof buf);
    edit(buf, &n);
    const char *path = tu_tmp(name);
    f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(buf, 1, n, f), n);
    fclose(f);
    return path;
}

static void flip_pickle_byte(unsigned char *b, size_t *n) {
    (void)n;
    b[70] ^= 1; /* inside archive/data.pkl, whose data torch aligns to offset 64 */
}
static void no_change(unsigned char *b, size_t *n) { (void)b, (void)n; }
static void legacy_protocol0(unsigned char *b, size_t *n) {
    /* the 4th pickle (the object) starts after the magic, the version and sys_info pickles:
     * find its PROTO 2 + GLOBAL (of OrderedDict) and make that a protocol-0 INT opcode */
    for (size_t i = 100; i + 2 < *n; i++)
        if (b[i] == 0x80 && b[i + 1] == 2 && b[i + 2] == 'c') {
            b[i + 2] = 'I';
            return;
        }
    fail_msg("no object pickle found");
}

static void test_damaged_and_dispatch(void **state) {
    (void)state;
    ddpm_safetensors st;
    const char *p = edited_copy("dtypes.pth", "crc.pth", flip_pickle_byte);
    assert_int_equal(ddpm_torch_read(p, NULL, &st), DDPM_ERR_FORMAT);
    assert_non_null(strstr(ddpm_last_error(), "data.pkl': CRC-32 mismatch"));
    p = edited_copy("dtypes_legacy.pth", "proto0.pth", legacy_protocol0);
    assert_int_equal(ddpm_torch_read(p, NULL, &st), DDPM_ERR_FORMAT);
    assert_non_null(strstr(ddpm_last_error(), "unsupported pickle opcode 0x49"));
    /* content decides, not the name: a .pth under another extension, a safetensors as "x.pth" */
    p = edited_copy("dtypes.pth", "weights.data", no_change);
    assert_int_equal(ddpm_weights_read(p, NULL, &st), DDPM_OK);
    assert_non_null(ddpm_safetensors_find(&st, "bf16"));
    ddpm_safetensors_free(&st);
    p = edited_copy("nested.expected.safetensors", "nested_st.pth", no_change);
    assert_int_equal(ddpm_weights_read(p, "ema", &st), DDPM_OK);
    ddpm_safetensors exp;
    assert_int_equal(ddpm_safetensors_read(fx("nested.expected.safetensors"), &exp), DDPM_OK);
    assert_same_tensors(&st, &exp, "ema.", "safetensors --key ema");
    ddpm_safetensors_free(&st);
    assert_int_equal(ddpm_weights_read(p, "nope", &st), DDPM_ERR_INVALID);
    assert_non_null(strstr(ddpm_last_error(), "no tensors named 'nope.*'"));
    assert_int_equal(ddpm_weights_read(fx("nested_legacy.pt"), "*", &st), DDPM_OK);
    assert_same_tensors(&st, &exp, "", "legacy through ddpm_weights_read");
    ddpm_safetensors_free(&st);
    ddpm_safetensors_free(&exp);
    assert_int_equal(ddpm_weights_read(tu_tmp("missing.pth"), NULL, &st), DDPM_ERR_IO);
    p = edited_copy("module.bin", "text.pth", no_change);
    tu_system("printf 'hello world, not weights' > %s", p);
    assert_int_equal(ddpm_weights_read(p, NULL, &st), DDPM_ERR_FORMAT);
    assert_non_null(strstr(ddpm_last_error(), "not a weights file"));
}

/* Inputs fuzzing found (fuzz/corpus/torch_file/regress-*), each refused cleanly now. */
static void test_regressions(void **state) {
    (void)state;
    ddpm_safetensors st;
    /* MARK then TUPLE on a stack never pushed to: zero items from a NULL stack (UBSan) */
    assert_int_equal(ddpm_torch_read(tu_fixture_path("regress/torch-empty-mark-tuple.pt"), NULL, &st),
                     DDPM_ERR_FORMAT);
    assert_non_null(strstr(ddpm_last_error(), "protocol version is not 1001"));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_dtypes_views_shared), cmocka_unit_test(test_nested_and_modules),
        cmocka_unit_test(test_keys),                cmocka_unit_test(test_hostile_files),
        cmocka_unit_test(test_damaged_and_dispatch), cmocka_unit_test(test_regressions),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

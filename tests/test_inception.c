/* test_inception.c - the Inception-v3 of FID (src/models/inception.c) against its PyTorch twin
 * (scripts/fixtures/gen_inception.py: pytorch-fid's network built from torchvision's blocks,
 * every width divided by 16, random weights and batch norms): the features of gray, RGB and
 * non-square images to 1e-4 (relative, float64 reference); the same from a safetensors copy of
 * the weights and from [-1, 1] input; chunked and one-by-one runs agree; and every bad file or
 * input is refused with a one-line message naming the file and the tensor. */
#include "testutil.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static ddpm_safetensors fx; /* the images and the twin's features */
static tu_worst worst;

static const char *weights(void) { return tu_fixture_path("inception/w16.pth"); }

static ddpm_inception *load_ok(const char *path) {
    ddpm_inception *net = NULL;
    if (ddpm_inception_load(path, &net) != DDPM_OK) fail_msg("%s", ddpm_last_error());
    assert_non_null(net);
    return net;
}

/* The C features of fixture images `name` [n, c, h, w] (values in [0, 1]), malloc'd. */
static float *features_of(ddpm_inception *net, const char *name, int n, int c, int h, int w) {
    float *x = tu_tensor(&fx, name, (size_t)n * c * h * w, NULL);
    float *f = malloc(sizeof(float) * (size_t)n * ddpm_inception_feature_dim(net));
    assert_non_null(f);
    assert_int_equal(ddpm_inception_features(net, x, (size_t)n, c, h, w, 0, f), DDPM_OK);
    free(x);
    return f;
}

static void check_set(ddpm_inception *net, const char *name, int n, int c, int h, int w) {
    const size_t F = (size_t)ddpm_inception_feature_dim(net);
    float *got = features_of(net, name, n, c, h, w);
    char key[64];
    snprintf(key, sizeof key, "%s_features", name);
    float *ref = tu_tensor(&fx, key, (size_t)n * F, NULL);
    double abs_err = 0, scale = tu_maxabs(ref, (size_t)n * F);
    for (size_t i = 0; i < (size_t)n * F; i++) abs_err = fmax(abs_err, fabs((double)got[i] - ref[i]));
    printf("[inception] %s: max |C - PyTorch| %.3g, max |PyTorch| %.4g, relative to it %.3g\n",
           key, abs_err, scale, abs_err / scale);
    assert_true(scale > 0.01); /* the random twin's features are not all zero */
    tu_cmp_torch(&worst, key, got, ref, (size_t)n * F, 1e-4, 1e-4);
    free(got);
    free(ref);
}

static void test_features_vs_pytorch(void **state) {
    (void)state;
    ddpm_inception *net = load_ok(weights());
    assert_int_equal(ddpm_inception_feature_dim(net), 2048 / 16);
    /* the conv weights, counted from the file itself */
    ddpm_safetensors st;
    assert_int_equal(ddpm_weights_read(weights(), NULL, &st), DDPM_OK);
    size_t n = 0;
    for (size_t i = 0; i < st.n_tensors; i++) {
        const char *s = strstr(st.tensors[i].name, ".conv.weight");
        if (s && s[12] == '\0') n += st.tensors[i].numel;
    }
    ddpm_safetensors_free(&st);
    assert_true(n > 50000);
    assert_int_equal(ddpm_inception_weight_count(net), n);
    check_set(net, "gray", 2, 1, 28, 28);
    check_set(net, "rgb", 1, 3, 32, 32);
    check_set(net, "wide", 1, 3, 17, 40);
    assert_true(ddpm_inception_memory(net, DDPM_INCEPTION_CHUNK) > ddpm_inception_memory(net, 1));
    ddpm_inception_free(net);
    tu_worst_print("inception", &worst);
}

/* More images than a chunk, through the batched path (branch outputs copied into place), give
 * the features each has alone (the one-item path writes branches straight into place); and
 * [-1, 1] input gives the features of the same images in [0, 1]. */
static void test_chunks_and_range(void **state) {
    (void)state;
    ddpm_inception *net = load_ok(weights());
    const int F = ddpm_inception_feature_dim(net), N = DDPM_INCEPTION_CHUNK + 3;
    const size_t per = 28 * 28;
    float *g = tu_tensor(&fx, "gray", 2 * per, NULL);
    float *x = malloc(sizeof(float) * per * N), *s = malloc(sizeof(float) * per * N);
    float *all = malloc(sizeof(float) * (size_t)F * N), *one = malloc(sizeof(float) * F);
    assert_true(x && s && all && one);
    for (int i = 0; i < N; i++)
        for (size_t k = 0; k < per; k++) {
            /* item i: one of the two images, its pixels rotated by i so that all differ */
            x[i * per + k] = g[(i % 2) * per + (k + (size_t)i * 29) % per];
            s[i * per + k] = 2 * x[i * per + k] - 1;
        }
    assert_int_equal(ddpm_inception_features(net, x, (size_t)N, 1, 28, 28, 0, all), DDPM_OK);
    const double scale = tu_maxabs(all, (size_t)F * N);
    for (int i = 0; i < N; i++) {
        assert_int_equal(ddpm_inception_features(net, x + i * per, 1, 1, 28, 28, 0, one), DDPM_OK);
        tu_assert_close(one, all + (size_t)i * F, (size_t)F, 1e-5, 1e-6 * scale, "one by one");
    }
    float *sf = malloc(sizeof(float) * (size_t)F * N);
    assert_non_null(sf);
    assert_int_equal(ddpm_inception_features(net, s, (size_t)N, 1, 28, 28, 1, sf), DDPM_OK);
    tu_assert_close(sf, all, (size_t)F * N, 1e-5, 1e-5 * scale, "[-1, 1] input");
    assert_int_equal(ddpm_inception_features(net, x, 0, 1, 28, 28, 0, all), DDPM_OK);
    free(g), free(x), free(s), free(all), free(one), free(sf);
    ddpm_inception_free(net);
}

/* Writes the fixture's tensors to a safetensors file, with tensor `drop` left out and tensor
 * `change` (if not NULL) replaced by *with. */
static const char *rewrite(const char *file, const char *drop, const char *change,
                           const ddpm_tensor *with) {
    ddpm_safetensors st;
    assert_int_equal(ddpm_weights_read(weights(), NULL, &st), DDPM_OK);
    ddpm_tensor *ts = malloc(sizeof *ts * st.n_tensors);
    assert_non_null(ts);
    size_t n = 0;
    for (size_t i = 0; i < st.n_tensors; i++) {
        if (drop && strcmp(st.tensors[i].name, drop) == 0) continue;
        ts[n] = change && strcmp(st.tensors[i].name, change) == 0 ? *with : st.tensors[i];
        ts[n++].name = st.tensors[i].name;
    }
    assert_int_equal(n, st.n_tensors - (drop ? 1 : 0));
    const char *path = tu_tmp(file);
    assert_int_equal(ddpm_safetensors_write(path, ts, n, NULL, NULL, 0), DDPM_OK);
    free(ts);
    ddpm_safetensors_free(&st);
    return path;
}

static void test_safetensors_copy(void **state) {
    (void)state;
    ddpm_inception *a = load_ok(weights()), *b = load_ok(rewrite("same.safetensors", NULL, NULL, NULL));
    float *fa = features_of(a, "rgb", 1, 3, 32, 32), *fb = features_of(b, "rgb", 1, 3, 32, 32);
    assert_memory_equal(fa, fb, sizeof(float) * ddpm_inception_feature_dim(a));
    free(fa), free(fb);
    ddpm_inception_free(a);
    ddpm_inception_free(b);
}

static void expect_refused(const char *path, int want, const char *fragment) {
    ddpm_inception *net = (ddpm_inception *)&net; /* must be reset to NULL */
    tu_expect_status(ddpm_inception_load(path, &net), want, path, fragment);
    assert_null(net);
    assert_null(strchr(ddpm_last_error(), '\n'));
}

static void test_bad_files(void **state) {
    (void)state;
    const char *key = "Mixed_6c.branch7x7dbl_3.bn.running_var";
    expect_refused(rewrite("missing.safetensors", key, NULL, NULL), DDPM_ERR_FORMAT,
                   "no tensor 'Mixed_6c.branch7x7dbl_3.bn.running_var'");
    ddpm_safetensors st;
    assert_int_equal(ddpm_weights_read(weights(), NULL, &st), DDPM_OK);
    /* a 5x5 kernel stored as 3x3 */
    const char *k5 = "Mixed_5b.branch5x5_2.conv.weight";
    ddpm_tensor t = *ddpm_safetensors_find(&st, k5);
    assert_int_equal(t.shape[2], 5);
    t.shape[2] = t.shape[3] = 3;
    t.numel = (size_t)(t.shape[0] * t.shape[1] * 9), t.nbytes = 4 * t.numel;
    expect_refused(rewrite("kernel.safetensors", NULL, k5, &t), DDPM_ERR_FORMAT,
                   "tensor 'Mixed_5b.branch5x5_2.conv.weight' has shape [4, 3, 3, 3], expected [C_out, 3, 5, 5]");
    /* a first conv that takes one channel (the network takes RGB) */
    const char *k1 = "Conv2d_1a_3x3.conv.weight";
    t = *ddpm_safetensors_find(&st, k1);
    t.shape[1] = 1, t.numel /= 3, t.nbytes /= 3;
    expect_refused(rewrite("gray.safetensors", NULL, k1, &t), DDPM_ERR_FORMAT,
                   "tensor 'Conv2d_1a_3x3.conv.weight' has shape [2, 1, 3, 3], expected [C_out, 3, 3, 3]");
    /* a batch norm of the wrong width */
    const char *kb = "Mixed_7c.branch3x3dbl_3a.bn.running_var";
    t = *ddpm_safetensors_find(&st, kb);
    t.shape[0]--, t.numel--, t.nbytes -= 4;
    expect_refused(rewrite("bn.safetensors", NULL, kb, &t), DDPM_ERR_FORMAT,
                   "tensor 'Mixed_7c.branch3x3dbl_3a.bn.running_var' has shape");
    /* a negative running variance */
    t = *ddpm_safetensors_find(&st, kb);
    float *v = malloc(t.nbytes);
    assert_non_null(v);
    memcpy(v, t.data, t.nbytes);
    v[1] = -0.5f;
    t.data = v;
    expect_refused(rewrite("negvar.safetensors", NULL, kb, &t), DDPM_ERR_FORMAT, "negative variance");
    v[1] = NAN;
    expect_refused(rewrite("nan.safetensors", NULL, kb, &t), DDPM_ERR_FORMAT, "NaN");
    free(v);
    /* integers where floats belong */
    t = *ddpm_safetensors_find(&st, "Mixed_6a.branch3x3.bn.num_batches_tracked");
    expect_refused(rewrite("int.safetensors", NULL, "Mixed_6a.branch3x3.bn.bias", &t), DDPM_ERR_FORMAT,
                   "tensor 'Mixed_6a.branch3x3.bn.bias' is I64, not floats");
    ddpm_safetensors_free(&st);
    /* the .pth cut in half, not a weights file, no file */
    unsigned char *bytes = NULL;
    size_t size = 0;
    FILE *f = fopen(weights(), "rb");
    assert_non_null(f);
    fseek(f, 0, SEEK_END);
    size = (size_t)ftell(f);
    rewind(f);
    bytes = malloc(size);
    assert_non_null(bytes);
    assert_int_equal(fread(bytes, 1, size, f), size);
    fclose(f);
    tu_write_file(tu_tmp("half.pth"), bytes, size / 2);
    expect_refused(tu_tmp("half.pth"), DDPM_ERR_FORMAT, NULL);
    free(bytes);
    tu_write_text(tu_tmp("notes.txt"), "Inception weights: see README\n");
    expect_refused(tu_tmp("notes.txt"), DDPM_ERR_FORMAT, "not a weights file");
    expect_refused(tu_tmp("absent.pth"), DDPM_ERR_IO, NULL);
    /* another network's weights */
    expect_refused(tu_fixture_path("torch/context_unet.pth"), DDPM_ERR_FORMAT,
                   "no tensor 'Conv2d_1a_3x3.conv.weight'");
}

static void test_bad_input(void **state) {
    (void)state;
    ddpm_inception *net = load_ok(weights());
    float x[2 * 8 * 8] = {0}, f[2 * 128];
    tu_expect_status(ddpm_inception_features(net, x, 1, 2, 8, 8, 0, f), DDPM_ERR_INVALID, NULL,
                     "2 channels");
    tu_expect_status(ddpm_inception_features(net, x, 1, 1, 0, 8, 0, f), DDPM_ERR_INVALID, NULL,
                     "0x8");
    /* a one-pixel image is fine (resized like any other) */
    assert_int_equal(ddpm_inception_features(net, x, 1, 1, 1, 1, 0, f), DDPM_OK);
    for (int i = 0; i < 128; i++) assert_true(isfinite(f[i]));
    ddpm_inception_free(net);
    ddpm_inception_free(NULL);
    assert_int_equal(ddpm_inception_feature_dim(NULL), 0);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_features_vs_pytorch),
        cmocka_unit_test(test_chunks_and_range),
        cmocka_unit_test(test_safetensors_copy),
        cmocka_unit_test(test_bad_files),
        cmocka_unit_test(test_bad_input),
    };
    tu_use_fixture("inception/w16.safetensors", &fx);
    return cmocka_run_group_tests(tests, tu_fixture_setup, tu_fixture_teardown);
}

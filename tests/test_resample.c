/* test_resample.c - the forward-only operators of the Inception-v3 of FID (src/ops/resample.c)
 * against PyTorch (scripts/fixtures/gen_resample.py): bilinear resizing up to 299 and down, and
 * pooling with padding (average without the padding, maximum); resizing to the same size is the
 * identity and a constant stays constant. */
#include "testutil.h"

#include <math.h>
#include <stdlib.h>

static ddpm_safetensors fx;
enum { B = 2, C = 3, H = 7, W = 5 };

static void cmp(const float *got, const char *name, size_t n) {
    float *ref = tu_tensor(&fx, name, n, NULL);
    for (size_t i = 0; i < n; i++)
        if (!(fabsf(got[i] - ref[i]) <= 1e-5f + 1e-5f * fabsf(ref[i])))
            fail_msg("%s[%zu]: got %.8g, PyTorch %.8g", name, i, got[i], ref[i]);
    free(ref);
}

static void test_bilinear(void **state) {
    (void)state;
    float *x = tu_tensor(&fx, "x", B * C * H * W, NULL);
    const size_t nu = (size_t)299 * 299; /* the first plane to pytorch-fid's size */
    float *up = malloc(sizeof(float) * nu), odd[B * C * 11 * 13], down[B * C * 3 * 4], same[B * C * H * W];
    ddpm_resize_bilinear_forward(up, x, 1, 1, H, W, 299, 299);
    cmp(up, "up", nu);
    ddpm_resize_bilinear_forward(odd, x, B, C, H, W, 11, 13);
    cmp(odd, "up_odd", B * C * 11 * 13);
    ddpm_resize_bilinear_forward(down, x, B, C, H, W, 3, 4);
    cmp(down, "down", B * C * 3 * 4);
    ddpm_resize_bilinear_forward(same, x, B, C, H, W, H, W);
    for (int i = 0; i < B * C * H * W; i++) assert_true(same[i] == x[i]);
    float k[H * W], kr[11 * 13];
    for (int i = 0; i < H * W; i++) k[i] = 0.25f;
    ddpm_resize_bilinear_forward(kr, k, 1, 1, H, W, 11, 13);
    for (int i = 0; i < 11 * 13; i++) assert_true(fabsf(kr[i] - 0.25f) < 1e-7f);
    free(up), free(x);
}

static void test_padded_pools(void **state) {
    (void)state;
    float *x = tu_tensor(&fx, "x", B * C * H * W, NULL);
    float a[B * C * H * W], m[B * C * H * W], a2[B * C * 4 * 3], m2[B * C * 4 * 3];
    ddpm_avgpool2d_pad_forward(a, x, B, C, H, W, 3, 1, 1);
    cmp(a, "avg", B * C * H * W);
    ddpm_maxpool2d_pad_forward(m, x, B, C, H, W, 3, 1, 1);
    cmp(m, "max", B * C * H * W);
    ddpm_avgpool2d_pad_forward(a2, x, B, C, H, W, 3, 2, 1);
    cmp(a2, "avg_s2", B * C * 4 * 3);
    ddpm_maxpool2d_pad_forward(m2, x, B, C, H, W, 3, 2, 1);
    cmp(m2, "max_s2", B * C * 4 * 3);
    free(x);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_bilinear),
        cmocka_unit_test(test_padded_pools),
    };
    tu_use_fixture("resample.safetensors", &fx);
    return cmocka_run_group_tests(tests, tu_fixture_setup, tu_fixture_teardown);
}

/* test_ops_semantics.c - what the PyTorch and finite-difference comparisons of test_ops.c cannot
 * show: dropout's masks (the rate, values 0 or 1/(1-p), a mask addressed by item and step so it
 * does not depend on the batch, the accumulated backward) and max-pool's ties and NaN. */
#include "testutil.h"
#include "core/internal.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* ---- dropout ---- */

static void test_dropout(void **s) {
    (void)s;
    const int B = 3;
    const size_t per = 4000;
    const float p = 0.3f;
    float *x = tu_randn_alloc(B * per, 1), *out = malloc(B * per * sizeof(float));
    float *mask = malloc(B * per * sizeof(float));
    ddpm_dropout_forward(out, mask, x, B, per, p, 99, 10, 5);
    size_t dropped = 0;
    for (size_t i = 0; i < B * per; i++) {
        assert_true(mask[i] == 0.0f || mask[i] == 1.0f / (1.0f - p));
        assert_true(out[i] == x[i] * mask[i]);
        dropped += mask[i] == 0.0f;
    }
    const double frac = (double)dropped / (double)(B * per);
    assert_true(fabs(frac - p) < 5 * sqrt(p * (1 - p) / (double)(B * per)));
    /* An item's mask does not depend on its batch: item 11 alone equals row 1 above. */
    float *out1 = malloc(per * sizeof(float)), *mask1 = malloc(per * sizeof(float));
    ddpm_dropout_forward(out1, mask1, x + per, 1, per, p, 99, 11, 5);
    assert_memory_equal(mask1, mask + per, per * sizeof(float));
    /* Another step draws another mask. */
    ddpm_dropout_forward(out1, mask1, x + per, 1, per, p, 99, 11, 6);
    assert_true(memcmp(mask1, mask + per, per * sizeof(float)) != 0);
    /* Backward is dout * mask, accumulated. */
    float *d = malloc(B * per * sizeof(float));
    for (size_t i = 0; i < B * per; i++) d[i] = 1.0f;
    ddpm_dropout_backward(d, x, mask, B * per);
    for (size_t i = 0; i < B * per; i++) assert_true(d[i] == 1.0f + x[i] * mask[i]);
    free(x);
    free(out);
    free(mask);
    free(out1);
    free(mask1);
    free(d);
}

static void test_maxpool_nan_and_ties(void **s) {
    (void)s;
    /* [1, 1, 2, 4]: window 0 = {1, 3, 3, 2} (tie: the first 3 takes the gradient), window 1 holds
     * a NaN, which must propagate as in PyTorch. */
    const float x[8] = {1, 3, 0, NAN, 3, 2, 5, 4};
    float y[2], dx[8] = {0};
    ddpm_maxpool2d_forward(y, x, 1, 1, 2, 4, 2, 2);
    assert_true(y[0] == 3.0f);
    assert_true(isnan(y[1]));
    const float dy[2] = {1, 1};
    ddpm_maxpool2d_backward(dx, dy, x, 1, 1, 2, 4, 2, 2);
    assert_true(dx[1] == 1.0f && dx[4] == 0.0f && dx[3] == 1.0f);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_dropout),
        cmocka_unit_test(test_maxpool_nan_and_ties),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

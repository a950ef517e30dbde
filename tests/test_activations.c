/* test_activations.c - GELU and SiLU (forward and backward) against their formulas evaluated in
 * double precision with libm, over a dense grid: they use core/vmath.h's vectorised exp and normal CDF
 * instead of libm, and test_ops.c's PyTorch fixtures only cover a few hundred values near 0.
 *
 * Tolerances are relative, per element, against the size of the terms that make up the result
 * (so a derivative that crosses zero is judged against its parts, not against ~0): 8e-6.
 * Measured with FMA (Release, -march=native): 8e-7 worst, at |x| = sqrt 2 where erf's two ranges
 * meet; without FMA (the sanitizer build): 4e-6, as x^2 then rounds before exp(-x^2/2). libm's
 * erff-based form, or Abramowitz-Stegun's erf (PyTorch's), would fail in the lower tail: an absolute
 * error of ~1e-8 to 1e-7 in 1 + erf is 10% or more of Phi(-5) = 2.9e-7. The grid runs to -13, below
 * which Phi(x) is subnormal in float. The grid's length is odd so the vector loops' tails run. */
#include "testutil.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#define N 260001 /* x from -13 to 13 in steps of 1e-4 */

/* One bound for both builds (the library's flags, not this file's, decide whether FMA is used). */
#define TOL 8e-6

static float *grid(void) {
    float *x = malloc(sizeof(float) * N);
    assert_non_null(x);
    for (int i = 0; i < N; i++) x[i] = (float)(-13.0 + 1e-4 * i);
    return x;
}

static double phi(double x) { return 0.5 * erfc(-x / sqrt(2.0)); }
static double gauss(double x) { return exp(-0.5 * x * x) / sqrt(2.0 * M_PI); }

/* Fails unless |got - ref| <= tol * scale + 1e-38 for every element; prints the worst. */
static void check(const char *what, const float *x, const float *got, const double *ref,
                  const double *scale, double tol) {
    double worst = 0;
    int wi = 0;
    for (int i = 0; i < N; i++) {
        const double e = fabs(got[i] - ref[i]) / (scale[i] + 1e-38);
        if (!(e <= worst)) worst = e, wi = i;
    }
    printf("%s: worst relative error %.3g at x = %.5f (got %.9g, want %.9g)\n", what, worst,
           x[wi], got[wi], ref[wi]);
    assert_true(worst <= tol);
}

static void test_gelu(void **state) {
    (void)state;
    float *x = grid(), *y = malloc(sizeof(float) * N), *dx = malloc(sizeof(float) * N);
    float *ones = malloc(sizeof(float) * N);
    double *ref = malloc(sizeof(double) * N), *scale = malloc(sizeof(double) * N);
    for (int i = 0; i < N; i++) ones[i] = 1.0f, dx[i] = 0.0f;
    ddpm_gelu_forward(y, x, N);
    for (int i = 0; i < N; i++) {
        ref[i] = x[i] * phi(x[i]);
        scale[i] = fabs(ref[i]);
    }
    check("gelu forward", x, y, ref, scale, TOL);
    ddpm_gelu_backward(dx, ones, x, N);
    for (int i = 0; i < N; i++) {
        const double p = phi(x[i]), g = x[i] * gauss(x[i]);
        ref[i] = p + g;
        scale[i] = fabs(p) + fabs(g);
    }
    check("gelu backward", x, dx, ref, scale, TOL);
    /* the saturated ends: exactly x above, exactly -0 or 0 below */
    float big[4] = {20.0f, 80.0f, -20.0f, -80.0f}, out[4];
    ddpm_gelu_forward(out, big, 4);
    assert_true(out[0] == 20.0f && out[1] == 80.0f && out[2] == 0.0f && out[3] == 0.0f);
    /* NaN stays NaN */
    float nan_in = NAN, nan_out = 0;
    ddpm_gelu_forward(&nan_out, &nan_in, 1);
    assert_true(isnan(nan_out));
    free(x), free(y), free(dx), free(ones), free(ref), free(scale);
}

static void test_silu(void **state) {
    (void)state;
    float *x = grid(), *y = malloc(sizeof(float) * N), *dx = malloc(sizeof(float) * N);
    float *ones = malloc(sizeof(float) * N);
    double *ref = malloc(sizeof(double) * N), *scale = malloc(sizeof(double) * N);
    for (int i = 0; i < N; i++) ones[i] = 1.0f, dx[i] = 0.0f, x[i] *= 6.0f; /* to +-78 */
    ddpm_silu_forward(y, x, N);
    for (int i = 0; i < N; i++) {
        ref[i] = x[i] / (1.0 + exp(-(double)x[i]));
        scale[i] = fabs(ref[i]);
    }
    check("silu forward", x, y, ref, scale, TOL);
    ddpm_silu_backward(dx, ones, x, N);
    for (int i = 0; i < N; i++) {
        const double s = 1.0 / (1.0 + exp(-(double)x[i]));
        ref[i] = s * (1.0 + x[i] * (1.0 - s));
        scale[i] = s * (1.0 + fabs(x[i]) * (1.0 - s));
    }
    check("silu backward", x, dx, ref, scale, TOL);
    free(x), free(y), free(dx), free(ones), free(ref), free(scale);
}

int main(void) {
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_gelu), cmocka_unit_test(test_silu)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}

/* test_learned_variance.c - learned variances (improved-diffusion's learn_sigma, learned range):
 * the log variance, the vb term of the hybrid loss and its gradient in the variance channels, and
 * the DDPM step with the learned variance, against improved-diffusion's formulas in PyTorch
 * (scripts/fixtures/gen_learned_variance.py -> tests/fixtures/learned_variance.safetensors); the
 * gradient also against finite differences of the C term itself. */
#include "testutil.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { B = 5, D = 6, N = B * D };

static ddpm_safetensors fx;
static ddpm_schedule sched;

static int setup(void **state) {
    (void)state;
    tu_load_fixture("learned_variance.safetensors", &fx);
    ddpm_schedule_config c;
    ddpm_schedule_config_default(&c, DDPM_SCHEDULE_LINEAR, 1000);
    return ddpm_schedule_init(&sched, &c);
}
static int teardown(void **state) {
    (void)state;
    ddpm_safetensors_free(&fx);
    ddpm_schedule_free(&sched);
    return 0;
}

static float *get(const char *name) { return tu_tensor(&fx, name, N, NULL); }

static void test_log_variance(void **state) {
    (void)state;
    int *t = tu_tensor_int(&fx, "t", B);
    float *v = get("v"), *want = get("log_var"), got[N];
    ddpm_learned_log_variance(&sched, v, t, B, D, got);
    tu_assert_close(got, want, N, 1e-5, 1e-6, "learned log variance");
    /* v = -1 is the clipped posterior variance, v = 1 beta (the two fixed choices). */
    float ends[2] = {-1.0f, 1.0f}, lv[2];
    const int t2[2] = {500, 500};
    ddpm_learned_log_variance(&sched, ends, t2, 2, 1, lv);
    assert_float_equal(lv[0], sched.posterior_log_variance_clipped[500], 1e-6);
    assert_float_equal(lv[1], log(sched.betas[500]), 1e-6);
    free(t);
    free(v);
    free(want);
}

static void test_vb_terms(void **state) {
    (void)state;
    int *t = tu_tensor_int(&fx, "t", B);
    float *x0 = get("x0"), *xt = get("xt"), *v = get("v");
    const char *preds[2] = {"eps", "x0"};
    for (int q = 0; q < 2; q++) {
        char name[64];
        snprintf(name, sizeof name, "out_%s", preds[q]);
        float *out = get(name);
        snprintf(name, sizeof name, "vb/%s", preds[q]);
        float *want_vb = tu_tensor(&fx, name, B, NULL);
        snprintf(name, sizeof name, "dvb_dv/%s", preds[q]);
        float *want_g = get(name);
        const ddpm_prediction p = q ? DDPM_PRED_X0 : DDPM_PRED_EPS;
        float vb[B], g[N];
        ddpm_vlb_terms(&sched, p, x0, xt, out, v, t, B, D, vb, g);
        for (int i = 0; i < B; i++) printf("  %s t=%d: vb %.6g (PyTorch %.6g)\n", preds[q], t[i], vb[i], want_vb[i]);
        /* the float32 schedule buffers against PyTorch's float64: relative 1e-4 */
        tu_assert_close(vb, want_vb, B, 1e-4, 1e-6, "vb");
        tu_assert_close(g, want_g, N, 1e-3, 1e-6, "d vb / d v");
        /* finite differences of the C term in v (double-sided, h = 1e-3), where not clamped */
        int checked = 0;
        for (int k = 0; k < N; k++) {
            float vp[N], vm[N], a[B], b[B];
            memcpy(vp, v, sizeof vp);
            memcpy(vm, v, sizeof vm);
            vp[k] += 1e-3f;
            vm[k] -= 1e-3f;
            ddpm_vlb_terms(&sched, p, x0, xt, out, vp, t, B, D, a, NULL);
            ddpm_vlb_terms(&sched, p, x0, xt, out, vm, t, B, D, b, NULL);
            const double fd = (a[k / D] - b[k / D]) / ((double)vp[k] - vm[k]);
            if (fabs(fd - g[k]) > 2e-3 * fabs(g[k]) + 2e-4 * (1 + fabs(vb[k / D])))
                fail_msg("%s: d vb / d v[%d]: finite difference %g, analytic %g", preds[q], k, fd,
                         g[k]);
            checked++;
        }
        printf("  %s: %d finite-difference checks\n", preds[q], checked);
        free(out);
        free(want_vb);
        free(want_g);
    }
    free(t);
    free(x0);
    free(xt);
    free(v);
}

static void test_sample_step(void **state) {
    (void)state;
    int *t = tu_tensor_int(&fx, "t", B);
    float *xt = get("xt"), *out = get("out_eps"), *v = get("v"), *z = get("z");
    float *want = get("sample/eps");
    ddpm_step_opts o = {.prediction = DDPM_PRED_EPS, .variance = DDPM_VAR_SMALL};
    float got[N];
    /* one item at a time: each has its own t */
    for (int i = 0; i < B; i++)
        ddpm_step_ddpm_learned(&sched, &o, t[i], xt + i * D, out + i * D, v + i * D, z + i * D, 1,
                               D, got + i * D, NULL);
    tu_assert_close(got, want, N, 1e-4, 1e-5, "learned-variance DDPM step");
    /* v = -1 is the usual small-variance step, v = 1 the large one */
    for (int e = 0; e < 2; e++) {
        float ends[D], a[D], b[D];
        for (int j = 0; j < D; j++) ends[j] = e ? 1.0f : -1.0f;
        o.variance = e ? DDPM_VAR_LARGE : DDPM_VAR_SMALL;
        ddpm_step_ddpm_learned(&sched, &o, 500, xt, out, ends, z, 1, D, a, NULL);
        ddpm_step_ddpm(&sched, &o, 500, xt, out, z, 1, D, b, NULL);
        tu_assert_close(a, b, D, 1e-5, 1e-6, e ? "v = 1: beta" : "v = -1: posterior variance");
    }
    free(t);
    free(xt);
    free(out);
    free(v);
    free(z);
    free(want);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_log_variance),
        cmocka_unit_test(test_vb_terms),
        cmocka_unit_test(test_sample_step),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}

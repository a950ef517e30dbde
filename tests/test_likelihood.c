/* test_likelihood.c - the variational bound in bits per dimension (src/diffusion/likelihood.c)
 * against PyTorch written from improved-diffusion's definitions (scripts/fixtures/
 * gen_likelihood.py): the normal KL, the discretized Gaussian log-likelihood, each step's term,
 * the prior and the total of a tiny analytic model for both fixed variances; the whole loop
 * equals the prior plus its terms at the noise it documents, per item whatever the batch; the
 * 256 bins hold all the mass; a step outside the schedule is refused; the course schedule's
 * decoder term is the bin of x_0 under the model's x_0. */
#include "testutil.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static ddpm_safetensors fx;
enum { T = 12, B = 3, D = 16 };

static void near(double got, double ref, double rel, const char *what, int i) {
    if (!(fabs(got - ref) <= rel * fabs(ref) + 1e-6))
        fail_msg("%s [%d]: got %.9g, reference %.9g", what, i, got, ref);
}

static void test_normal_kl(void **state) {
    (void)state;
    float *m1 = tu_tensor(&fx, "kl.m1", 4, NULL), *l1 = tu_tensor(&fx, "kl.l1", 4, NULL);
    float *m2 = tu_tensor(&fx, "kl.m2", 4, NULL), *l2 = tu_tensor(&fx, "kl.l2", 4, NULL);
    float *ref = tu_tensor(&fx, "kl.out", 4, NULL);
    for (int i = 0; i < 4; i++) near(ddpm_normal_kl(m1[i], l1[i], m2[i], l2[i]), ref[i], 1e-5, "normal_kl", i);
    assert_true(ddpm_normal_kl(0.3, -1, 0.3, -1) == 0.0); /* a Gaussian against itself */
    free(m1), free(l1), free(m2), free(l2), free(ref);
}

static void test_discretized_gaussian(void **state) {
    (void)state;
    float *x = tu_tensor(&fx, "dgll.x", 8, NULL), *m = tu_tensor(&fx, "dgll.mean", 8, NULL);
    float *ls = tu_tensor(&fx, "dgll.log_scale", 8, NULL), *ref = tu_tensor(&fx, "dgll.out", 8, NULL);
    for (int i = 0; i < 8; i++)
        near(ddpm_discretized_gaussian_log_likelihood(x[i], m[i], ls[i]), ref[i], 1e-4, "dgll", i);
    /* the 256 bins of a Gaussian hold all its mass: the probabilities sum to 1 */
    double sum = 0;
    for (int k = 0; k < 256; k++) sum += exp(ddpm_discretized_gaussian_log_likelihood(k / 127.5 - 1, 0.1, -2.0));
    assert_true(fabs(sum - 1) < 1e-9);
    free(x), free(m), free(ls), free(ref);
}

/* the fixture's model: eps_hat = tanh(x_t W + b t / T) */
typedef struct {
    const float *W, *b;
} toy;
static int toy_denoise(void *ctx, const float *x, int nb, int t, const float *x0_prev, float *out) {
    (void)x0_prev;
    const toy *m = ctx;
    for (int i = 0; i < nb; i++)
        for (int j = 0; j < D; j++) {
            double a = m->b[j] * t / (double)T;
            for (int k = 0; k < D; k++) a += (double)x[i * D + k] * m->W[k * D + j];
            out[i * D + j] = (float)tanh(a);
        }
    return 0;
}

static void schedule_of_fixture(ddpm_schedule *s) {
    float *bf = tu_tensor(&fx, "betas", T, NULL);
    double betas[T];
    for (int i = 0; i < T; i++) betas[i] = bf[i];
    ddpm_schedule_config c;
    ddpm_schedule_config_default(&c, DDPM_SCHEDULE_CUSTOM, T);
    c.betas = betas;
    assert_int_equal(ddpm_schedule_init(s, &c), DDPM_OK);
    free(bf);
}

static void check_variance(ddpm_variance var, const char *name) {
    ddpm_schedule s;
    schedule_of_fixture(&s);
    float *x0 = tu_tensor(&fx, "x0", B * D, NULL), *xt = tu_tensor(&fx, "xt", T * B * D, NULL);
    float *W = tu_tensor(&fx, "W", D * D, NULL), *b = tu_tensor(&fx, "b", D, NULL);
    char key[32];
    snprintf(key, sizeof key, "%s.terms", name);
    float *terms = tu_tensor(&fx, key, T * B, NULL);
    snprintf(key, sizeof key, "%s.total", name);
    float *total = tu_tensor(&fx, key, B, NULL), *prior = tu_tensor(&fx, "prior", B, NULL);
    toy m = {W, b};
    double pr[B], sum[B], got[B];
    float out[B * D];
    ddpm_prior_bpd(&s, x0, B, D, pr);
    for (int i = 0; i < B; i++) near(pr[i], prior[i], 1e-4, "prior", i), sum[i] = pr[i];
    for (int t = T - 1; t >= 0; t--) {
        toy_denoise(&m, xt + (size_t)t * B * D, B, t, NULL, out);
        assert_int_equal(ddpm_vb_terms_bpd(&s, DDPM_PRED_EPS, var, 1, t, x0, xt + (size_t)t * B * D, out, B, D, got), DDPM_OK);
        for (int i = 0; i < B; i++) near(got[i], terms[t * B + i], 2e-4, name, t * B + i), sum[i] += got[i];
    }
    for (int i = 0; i < B; i++) near(sum[i], total[i], 1e-4, "total", i);
    /* the whole loop: the prior and its terms at the x_t of its documented noise */
    double bpd[B], pr2[B], ref[B];
    assert_int_equal(ddpm_nll_bpd(&s, DDPM_PRED_EPS, var, 1, toy_denoise, &m, x0, B, D, 5, 0, bpd, pr2), DDPM_OK);
    for (int i = 0; i < B; i++) ref[i] = pr[i];
    float eps[B * D], x[B * D];
    int ts[B];
    for (int t = T - 1; t >= 0; t--) {
        for (int i = 0; i < B; i++) {
            ts[i] = t;
            ddpm_randn(5, DDPM_STREAM_EVAL, (uint64_t)i, 1000000u + (uint32_t)t, eps + i * D, D);
        }
        ddpm_q_sample(&s, x0, eps, ts, B, D, x);
        toy_denoise(&m, x, B, t, NULL, out);
        assert_int_equal(ddpm_vb_terms_bpd(&s, DDPM_PRED_EPS, var, 1, t, x0, x, out, B, D, got), DDPM_OK);
        for (int i = 0; i < B; i++) ref[i] += got[i];
    }
    for (int i = 0; i < B; i++) {
        near(bpd[i], ref[i], 1e-12, "nll_bpd loop", i);
        assert_true(pr2[i] == pr[i]);
    }
    /* an item's figure does not depend on its batch: item 2 alone, as first_item 2 */
    double one;
    assert_int_equal(ddpm_nll_bpd(&s, DDPM_PRED_EPS, var, 1, toy_denoise, &m, x0 + 2 * D, 1, D, 5, 2, &one, NULL), DDPM_OK);
    near(one, bpd[2], 1e-12, "item 2 alone", 2);
    assert_int_equal(ddpm_vb_terms_bpd(&s, DDPM_PRED_EPS, var, 1, T, x0, x, out, B, D, got), DDPM_ERR_INVALID);
    ddpm_schedule_free(&s);
    free(x0), free(xt), free(W), free(b), free(terms), free(total), free(prior);
}

/* The decoder term of the course's schedule (T + 1 points, t0 = 1, abar_1 = a_0 a_1): with a
 * model whose x_0 estimate is exact, -log p(x_0 | x_1) is the bin of x_0 under N(x_0, the model's
 * variance). The posterior formula's mean there used to be 0.58 x_0 (beta_1 / (1 - abar_1)),
 * which put every black or white pixel 40 bits/dim away (ddpm eval --nll of a course model). */
static int exact_x0(void *ctx, const float *x, int nb, int t, const float *x0_prev, float *out) {
    (void)x, (void)t, (void)x0_prev;
    memcpy(out, ctx, sizeof(float) * (size_t)nb * D);
    return 0;
}
static void test_course_decoder(void **state) {
    (void)state;
    ddpm_schedule_config c;
    ddpm_schedule_config_default(&c, DDPM_SCHEDULE_LINEAR_COURSE, 50);
    ddpm_schedule s;
    assert_int_equal(ddpm_schedule_init(&s, &c), DDPM_OK);
    assert_int_equal(s.t0, 1);
    float x0[B * D], xt[B * D];
    for (int i = 0; i < B * D; i++) x0[i] = (float)((i * 37 % 256) / 127.5 - 1), xt[i] = 0.5f * x0[i];
    x0[0] = -1.0f, x0[1] = 1.0f; /* the end bins */
    for (int v = 0; v < 2; v++) {
        const ddpm_variance var = v ? DDPM_VAR_LARGE : DDPM_VAR_SMALL;
        const double lv = v ? log(s.posterior_variance[2]) : s.posterior_log_variance_clipped[1];
        double got[B], prior[B], bpd[B];
        assert_int_equal(ddpm_vb_terms_bpd(&s, DDPM_PRED_X0, var, 1, 1, x0, xt, x0, B, D, got), DDPM_OK);
        ddpm_prior_bpd(&s, x0, B, D, prior);
        assert_int_equal(ddpm_nll_bpd(&s, DDPM_PRED_X0, var, 1, exact_x0, x0, x0, B, D, 1, 0, bpd, NULL), DDPM_OK);
        for (int i = 0; i < B; i++) {
            double ref = 0;
            for (int j = 0; j < D; j++)
                ref -= ddpm_discretized_gaussian_log_likelihood(x0[i * D + j], x0[i * D + j], 0.5 * lv);
            near(got[i], ref / D / M_LN2, 1e-6, "course decoder", i);
            assert_true(got[i] < 3.0);
            /* the whole bound: with the posterior variance every KL term is 0 (the model's mean
             * is the posterior's), so it is the prior plus the decoder; with beta_t the KLs of
             * the variances add to it (a few bits at T = 50, not 40) */
            if (var == DDPM_VAR_SMALL) near(bpd[i], prior[i] + got[i], 1e-9, "exact model bound", i);
            else if (!(bpd[i] > prior[i] + got[i] && bpd[i] < 5.0)) fail_msg("bound %g bits", bpd[i]);
        }
    }
    ddpm_schedule_free(&s);
}

static void test_bound_small(void **state) { (void)state; check_variance(DDPM_VAR_SMALL, "small"); }
static void test_bound_large(void **state) { (void)state; check_variance(DDPM_VAR_LARGE, "large"); }

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_normal_kl),
        cmocka_unit_test(test_discretized_gaussian),
        cmocka_unit_test(test_bound_small),
        cmocka_unit_test(test_bound_large),
        cmocka_unit_test(test_course_decoder),
    };
    tu_use_fixture("likelihood.safetensors", &fx);
    return cmocka_run_group_tests(tests, tu_fixture_setup, tu_fixture_teardown);
}

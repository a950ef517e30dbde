/* test_image_metrics.c - the feature-space metrics of src/report/image_metrics.c: the Frechet
 * distance (0 for a set against itself; the closed form of two Gaussians, from PyTorch's eigh in
 * scripts/fixtures/gen_classifier.py and from diagonal covariances), KID (against a direct
 * evaluation of its formula; around 0 within its spread for matching sets, far from 0 for a
 * shifted one), precision/recall (1 for a set against itself, a brute-force reference), class
 * accuracy, and the shipped Fashion-MNIST classifier: its class accuracy on the real test images
 * equals the test accuracy stored in the file. */
#include "testutil.h"

#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static ddpm_safetensors FX;

/* n items of dim d: N(mu_j, sd_j^2) per coordinate (mu, sd may be NULL: 0 and 1). */
static ddpm_points gaussian(size_t n, int d, const double *mu, const double *sd, double shift) {
    ddpm_points p;
    assert_int_equal(ddpm_points_init(&p, n, d), DDPM_OK);
    float *z = tu_randn_alloc(n * (size_t)d, 1.0f);
    for (size_t i = 0; i < n; i++)
        for (int j = 0; j < d; j++)
            p.x[i * d + j] = (float)((mu ? mu[j] : 0.0) + shift + (sd ? sd[j] : 1.0) * z[i * d + j]);
    free(z);
    return p;
}

/* ---- Frechet distance ---------------------------------------------------------------------- */

static void test_frechet_self_is_zero(void **state) {
    (void)state;
    ddpm_points a = gaussian(500, 16, NULL, NULL, 0.0);
    for (size_t i = 0; i < a.n * 16; i++) a.x[i] = a.x[i] * a.x[i] + 0.1f * (float)(i % 7); /* not Gaussian */
    double fd = -1;
    assert_int_equal(ddpm_frechet_distance(&a, &a, &fd), DDPM_OK);
    double mean[16], cov[256];
    assert_int_equal(ddpm_feature_stats(&a, mean, cov), DDPM_OK);
    double tr = 0;
    for (int j = 0; j < 16; j++) tr += cov[j * 16 + j];
    printf("[frechet] FD(a, a) = %.3g (tr C = %.3g)\n", fd, tr);
    assert_true(fd >= 0 && fd <= 1e-9 * tr);
    ddpm_points_free(&a);
}

static void test_feature_stats(void **state) {
    (void)state;
    /* three items of dim 2: mean and the unbiased covariance by hand */
    float x[] = {1, 2, 3, 6, 5, 1};
    ddpm_points p = {.x = x, .n = 3, .dim = 2};
    double mean[2], cov[4];
    assert_int_equal(ddpm_feature_stats(&p, mean, cov), DDPM_OK);
    assert_true(fabs(mean[0] - 3) < 1e-12 && fabs(mean[1] - 3) < 1e-12);
    /* deviations (-2,-1), (0,3), (2,-2): sums of products 8, -2 (xy), 14 over n - 1 = 2 */
    assert_true(fabs(cov[0] - 4) < 1e-12 && fabs(cov[1] + 1) < 1e-12 && fabs(cov[2] + 1) < 1e-12 &&
                fabs(cov[3] - 7) < 1e-12);
}

static void test_frechet_closed_form(void **state) {
    (void)state;
    /* non-commuting SPD covariances: the value PyTorch's eigh gives */
    enum { D = 6 };
    float *m1 = tu_tensor(&FX, "fd/mu1", D, NULL), *m2 = tu_tensor(&FX, "fd/mu2", D, NULL);
    float *c1 = tu_tensor(&FX, "fd/cov1", D * D, NULL), *c2 = tu_tensor(&FX, "fd/cov2", D * D, NULL);
    double dm1[D], dm2[D], dc1[D * D], dc2[D * D], fd;
    for (int i = 0; i < D; i++) dm1[i] = m1[i], dm2[i] = m2[i];
    for (int i = 0; i < D * D; i++) dc1[i] = c1[i], dc2[i] = c2[i];
    assert_int_equal(ddpm_frechet_distance_stats(D, dm1, dc1, dm2, dc2, &fd), DDPM_OK);
    const double want = tu_scalar(&FX, "fd/value");
    printf("[frechet] non-commuting covariances: %.9g (PyTorch eigh %.9g)\n", fd, want);
    assert_true(fabs(fd - want) <= 1e-6 * want);
    /* symmetric in its arguments */
    double fd2;
    assert_int_equal(ddpm_frechet_distance_stats(D, dm2, dc2, dm1, dc1, &fd2), DDPM_OK);
    assert_true(fabs(fd2 - fd) <= 1e-9 * fd);
    free(m1), free(m2), free(c1), free(c2);

    /* diagonal covariances: |m1 - m2|^2 + sum (sqrt a_i - sqrt b_i)^2 */
    enum { E = 5 };
    double a[E * E] = {0}, b[E * E] = {0}, ma[E], mb[E], want2 = 0;
    for (int i = 0; i < E; i++) {
        a[i * E + i] = 0.5 + i, b[i * E + i] = 2.0 / (1 + i);
        ma[i] = 0.1 * i, mb[i] = -0.2 * i + 1;
        want2 += (ma[i] - mb[i]) * (ma[i] - mb[i]) +
                 (sqrt(a[i * E + i]) - sqrt(b[i * E + i])) * (sqrt(a[i * E + i]) - sqrt(b[i * E + i]));
    }
    assert_int_equal(ddpm_frechet_distance_stats(E, ma, a, mb, b, &fd), DDPM_OK);
    printf("[frechet] diagonal covariances: %.12g (closed form %.12g)\n", fd, want2);
    assert_true(fabs(fd - want2) <= 1e-10 * want2);

    /* from samples: two Gaussians of 20000 items, near the closed form (bias O(d / n)) */
    const double mu[4] = {0, 1, 0, -1}, sd1[4] = {1, 2, 0.5, 1}, sd2[4] = {1.5, 1, 0.5, 2};
    ddpm_points p = gaussian(20000, 4, mu, sd1, 0.0), q = gaussian(20000, 4, mu, sd2, 0.25);
    double closed = 4 * 0.25 * 0.25;
    for (int j = 0; j < 4; j++) closed += (sd1[j] - sd2[j]) * (sd1[j] - sd2[j]);
    assert_int_equal(ddpm_frechet_distance(&p, &q, &fd), DDPM_OK);
    printf("[frechet] 20000 samples each: %.4f (closed form %.4f)\n", fd, closed);
    assert_true(fabs(fd - closed) <= 0.05 * closed);
    ddpm_points_free(&p);
    ddpm_points_free(&q);
}

/* ---- KID ----------------------------------------------------------------------------------- */

/* The unbiased MMD^2 with the cubic polynomial kernel, term by term in double. */
static double mmd_direct(const ddpm_points *a, const ddpm_points *b) {
    const int d = a->dim;
    double s[3] = {0, 0, 0};
    const ddpm_points *x[3][2] = {{a, a}, {b, b}, {a, b}};
    for (int t = 0; t < 3; t++)
        for (size_t i = 0; i < x[t][0]->n; i++)
            for (size_t j = 0; j < x[t][1]->n; j++) {
                if (t < 2 && i == j) continue;
                double dot = 0;
                for (int k = 0; k < d; k++) dot += (double)x[t][0]->x[i * d + k] * x[t][1]->x[j * d + k];
                s[t] += pow(dot / d + 1.0, 3);
            }
    const double m = (double)a->n;
    return s[0] / (m * (m - 1)) + s[1] / (m * (m - 1)) - 2 * s[2] / (m * m);
}

static void test_kid(void **state) {
    (void)state;
    ddpm_points a = gaussian(200, 8, NULL, NULL, 0.0), b = gaussian(200, 8, NULL, NULL, 0.3);
    double mean, sd;
    /* one subset of all items: the formula on the whole sets (the order does not matter) */
    assert_int_equal(ddpm_kid(&a, &b, 1, 200, 5, &mean, &sd), DDPM_OK);
    const double want = mmd_direct(&a, &b);
    printf("[kid] one subset of all 200: %.10g (direct %.10g)\n", mean, want);
    assert_true(fabs(mean - want) <= 1e-10 * fabs(want) + 1e-14);
    assert_true(sd == 0.0);
    ddpm_points_free(&a);
    ddpm_points_free(&b);

    /* matching sets: around 0 within its spread; a shifted set: far from 0 */
    ddpm_points p = gaussian(2000, 16, NULL, NULL, 0.0), q = gaussian(2000, 16, NULL, NULL, 0.0);
    ddpm_points r = gaussian(2000, 16, NULL, NULL, 0.2);
    assert_int_equal(ddpm_kid(&p, &q, 50, 500, 1, &mean, &sd), DDPM_OK);
    printf("[kid] matching sets: %.3g +- %.3g\n", mean, sd);
    assert_true(sd > 0 && fabs(mean) <= 3 * sd);
    double mean_r, sd_r;
    assert_int_equal(ddpm_kid(&p, &r, 50, 500, 1, &mean_r, &sd_r), DDPM_OK);
    printf("[kid] shifted by 0.2: %.3g +- %.3g\n", mean_r, sd_r);
    assert_true(mean_r > 5 * sd_r && mean_r > 10 * fabs(mean));
    /* the same for a seed, whatever the thread count */
    double m1, s1;
    omp_set_num_threads(1);
    assert_int_equal(ddpm_kid(&p, &q, 50, 500, 1, &m1, &s1), DDPM_OK);
    omp_set_num_threads(2);
    assert_true(m1 == mean && s1 == sd);
    ddpm_points_free(&p);
    ddpm_points_free(&q);
    ddpm_points_free(&r);
}

/* ---- precision and recall ------------------------------------------------------------------ */

/* The definition, by brute force: sorted distances per item. */
static int cmp_d(const void *x, const void *y) {
    const double a = *(const double *)x, b = *(const double *)y;
    return (a > b) - (a < b);
}
static double sqd(const float *x, const float *y, int d) {
    double s = 0;
    for (int k = 0; k < d; k++) s += ((double)x[k] - y[k]) * ((double)x[k] - y[k]);
    return s;
}
static double coverage_direct(const ddpm_points *q, const ddpm_points *p, int k) {
    const int d = p->dim;
    double *rad = malloc(sizeof(double) * p->n), *row = malloc(sizeof(double) * p->n);
    for (size_t j = 0; j < p->n; j++) {
        for (size_t i = 0; i < p->n; i++) row[i] = sqd(p->x + j * d, p->x + i * d, d);
        qsort(row, p->n, sizeof(double), cmp_d);
        rad[j] = row[k]; /* row[0] = 0: the item itself */
    }
    size_t in = 0;
    for (size_t i = 0; i < q->n; i++) {
        int hit = 0;
        for (size_t j = 0; j < p->n && !hit; j++) hit = sqd(q->x + i * d, p->x + j * d, d) <= rad[j];
        in += hit;
    }
    free(rad);
    free(row);
    return (double)in / q->n;
}

static void test_precision_recall(void **state) {
    (void)state;
    ddpm_points a = gaussian(300, 5, NULL, NULL, 0.0);
    double pr, rc;
    assert_int_equal(ddpm_precision_recall(&a, &a, 3, &pr, &rc), DDPM_OK);
    assert_true(pr == 1.0 && rc == 1.0);
    /* against a narrower, shifted set: both below 1, as the definition gives */
    const double sd[5] = {0.5, 0.5, 0.5, 0.5, 0.5};
    ddpm_points b = gaussian(400, 5, NULL, sd, 0.4);
    assert_int_equal(ddpm_precision_recall(&a, &b, 3, &pr, &rc), DDPM_OK);
    const double want_p = coverage_direct(&b, &a, 3), want_r = coverage_direct(&a, &b, 3);
    printf("[precision/recall] narrow shifted fakes: precision %.4f (direct %.4f), recall %.4f (direct %.4f)\n",
           pr, want_p, rc, want_r);
    assert_true(pr == want_p && rc == want_r);
    assert_true(pr > rc); /* a narrow fake set lies inside the real one more than it covers it */
    /* k = 1 and 5 too */
    for (int k = 1; k <= 5; k += 4) {
        assert_int_equal(ddpm_precision_recall(&a, &b, k, &pr, &rc), DDPM_OK);
        assert_true(pr == coverage_direct(&b, &a, k) && rc == coverage_direct(&a, &b, k));
    }
    /* far apart: 0 and 0 */
    ddpm_points c = gaussian(100, 5, NULL, NULL, 100.0);
    assert_int_equal(ddpm_precision_recall(&a, &c, 3, &pr, &rc), DDPM_OK);
    assert_true(pr == 0.0 && rc == 0.0);
    ddpm_points_free(&a);
    ddpm_points_free(&b);
    ddpm_points_free(&c);
}

/* ---- errors and class accuracy ------------------------------------------------------------- */

static void test_errors(void **state) {
    (void)state;
    ddpm_points a = gaussian(10, 4, NULL, NULL, 0.0), b = gaussian(10, 3, NULL, NULL, 0.0);
    ddpm_points one = gaussian(1, 4, NULL, NULL, 0.0);
    double x, y;
    tu_expect_status(ddpm_frechet_distance(&a, &b, &x), DDPM_ERR_INVALID, NULL, "dims 4 and 3");
    tu_expect_status(ddpm_kid(&a, &b, 1, 0, 0, &x, &y), DDPM_ERR_INVALID, NULL, "dims 4 and 3");
    tu_expect_status(ddpm_frechet_distance(&a, &one, &x), DDPM_ERR_INVALID, NULL, "at least 2 items");
    tu_expect_status(ddpm_precision_recall(&a, &one, 3, &x, &y), DDPM_ERR_INVALID, NULL, "at least 4 items");
    a.x[13] = NAN;
    tu_expect_status(ddpm_kid(&a, &a, 1, 0, 0, &x, &y), DDPM_ERR_NUMERIC, NULL, "at item 3");
    ddpm_points_free(&a);
    ddpm_points_free(&b);
    ddpm_points_free(&one);

    const int pred[] = {0, 1, 1, 2, 2, 2}, want[] = {0, 1, 2, 2, 2, 0};
    double per[3], acc;
    size_t cnt[3];
    assert_int_equal(ddpm_class_accuracy(pred, want, 6, 3, per, cnt, &acc), DDPM_OK);
    assert_true(fabs(acc - 4.0 / 6) < 1e-12);
    assert_true(per[0] == 0.5 && per[1] == 1.0 && fabs(per[2] - 2.0 / 3) < 1e-12);
    assert_true(cnt[0] == 2 && cnt[1] == 1 && cnt[2] == 3);
    const int bad[] = {0, 3};
    tu_expect_status(ddpm_class_accuracy(pred, bad, 2, 3, NULL, NULL, &acc), DDPM_ERR_INVALID, NULL,
                     "class 3, outside 0..2");
}

/* The shipped classifier (models/fmnist-classifier.safetensors): the class accuracy of the real
 * Fashion-MNIST test images is the test accuracy its file states. Skipped without the data. */
static void test_shipped_classifier_accuracy(void **state) {
    (void)state;
    struct stat st;
    if (stat(DDPM_FASHION_MNIST_DIR, &st) != 0) {
        printf("[classifier] %s is missing: skipped\n", DDPM_FASHION_MNIST_DIR);
        skip();
    }
    char path[1024];
    snprintf(path, sizeof path, "%s/../../models/fmnist-classifier.safetensors", getenv("DDPM_FIXTURES"));
    ddpm_model *m;
    ddpm_safetensors meta;
    if (ddpm_classifier_load(path, &m, &meta)) fail_msg("%s", ddpm_last_error());
    const char *stored = ddpm_safetensors_meta(&meta, "test_accuracy");
    assert_non_null(stored);
    ddpm_image_dataset ds;
    assert_int_equal(ddpm_dataset_fashion_mnist(NULL, 0, 0, &ds), DDPM_OK);
    int *pred = malloc(sizeof(int) * ds.n);
    assert_int_equal(ddpm_classifier_predict(m, ds.x, (size_t)ds.n, pred), DDPM_OK);
    double per[10], acc;
    size_t cnt[10];
    assert_int_equal(ddpm_class_accuracy(pred, ds.labels, (size_t)ds.n, 10, per, cnt, &acc), DDPM_OK);
    printf("[classifier] shipped: class accuracy of the %d test images %.4f (stored %s)\n", ds.n, acc, stored);
    assert_true(fabs(acc - atof(stored)) < 0.5e-4);
    assert_true(acc >= 0.90);
    free(pred);
    ddpm_dataset_free(&ds);
    ddpm_safetensors_free(&meta);
    ddpm_model_free(m);
}


/* ---- the one call a training loop makes -------------------------------------------------- */

/* ddpm_image_quality_of_model = sampling (whatever the chunking), the classifier's features and
 * ddpm_image_quality_compute, step by step. */
static void test_quality_of_model(void **state) {
    (void)state;
    ddpm_model *den, *cls;
    assert_int_equal(ddpm_model_create("{\"kind\":\"simple-unet\",\"in_channels\":1,\"height\":8,\"channels\":[4,8],\"num_timesteps\":10}", 3, &den), DDPM_OK);
    assert_int_equal(ddpm_model_create("{\"kind\":\"classifier\",\"in_channels\":1,\"height\":8,\"channels\":[4],\"features\":6,\"classes\":3}", 4, &cls), DDPM_OK);
    ddpm_schedule s;
    ddpm_schedule_config sc;
    ddpm_schedule_config_default(&sc, DDPM_SCHEDULE_LINEAR, 10);
    assert_int_equal(ddpm_schedule_init(&s, &sc), DDPM_OK);
    enum { N = 20, NR = 30 };
    float *real = tu_randn_alloc(NR * 64, 0.5f), *rf = malloc(sizeof(float) * NR * 6);
    assert_int_equal(ddpm_classifier_run(cls, real, NR, rf, NULL), DDPM_OK);
    ddpm_points pr = {.x = rf, .n = NR, .dim = 6};
    int wanted[N];
    for (int i = 0; i < N; i++) wanted[i] = i % 3;
    ddpm_image_eval_config c = {.n = N, .batch = 7, .wanted = wanted, .metrics = {.kid_subsets = 5, .kid_subset_size = 10}};
    ddpm_sample_opts_default(&c.sampler);
    c.sampler.sampler = DDPM_SAMPLER_DDIM;
    c.sampler.steps = 4;
    c.sampler.seed = 11;
    ddpm_image_quality q;
    double acc;
    float *x = malloc(sizeof(float) * N * 64), *x2 = malloc(sizeof(float) * N * 64);
    assert_int_equal(ddpm_image_quality_of_model(den, &s, &c, cls, &pr, &q, &acc, x), DDPM_OK);
    /* by hand: one chunk of all N */
    ddpm_model_sampler ms;
    assert_int_equal(ddpm_model_sampler_init(&ms, den, N), DDPM_OK);
    assert_int_equal(ddpm_sample_loop(&s, &c.sampler, ddpm_model_denoise, &ms, N, 64, x2), DDPM_OK);
    ddpm_model_sampler_free(&ms);
    tu_assert_close(x, x2, N * 64, 1e-6, 1e-6, "samples in chunks of 7 vs one chunk");
    float *ff = malloc(sizeof(float) * N * 6);
    int pred[N];
    assert_int_equal(ddpm_classifier_run(cls, x, N, ff, pred), DDPM_OK);
    ddpm_points pf = {.x = ff, .n = N, .dim = 6};
    ddpm_image_quality q2;
    assert_int_equal(ddpm_image_quality_compute(&pf, &pr, &c.metrics, &q2), DDPM_OK);
    printf("[quality of a model] N %zu: FD %.4f KID %.4f +- %.4f precision %.3f recall %.3f class accuracy %.3f\n",
           q.n, q.fd, q.kid, q.kid_std, q.precision, q.recall, acc);
    assert_true(q.n == N && q.n_ref == NR);
    assert_true(fabs(q.fd - q2.fd) <= 1e-6 * (1 + q2.fd) && fabs(q.kid - q2.kid) <= 1e-6 * (1 + fabs(q2.kid)));
    assert_true(q.precision == q2.precision && q.recall == q2.recall);
    int hit = 0;
    for (int i = 0; i < N; i++) hit += pred[i] == wanted[i];
    assert_true(fabs(acc - hit / (double)N) < 1e-12);
    /* the classifier must take the model's images */
    ddpm_model *big;
    assert_int_equal(ddpm_model_create("{\"kind\":\"classifier\",\"height\":28}", 4, &big), DDPM_OK);
    tu_expect_status(ddpm_image_quality_of_model(den, &s, &c, big, &pr, &q, &acc, NULL), DDPM_ERR_INVALID, NULL,
                     "the model makes 1x8x8 images, the classifier takes 1x28x28");
    ddpm_model_free(big);
    free(real), free(rf), free(x), free(x2), free(ff);
    ddpm_schedule_free(&s);
    ddpm_model_free(den);
    ddpm_model_free(cls);
}

static int setup(void **state) {
    (void)state;
    tu_load_fixture("classifier.safetensors", &FX);
    return 0;
}
static int teardown(void **state) {
    (void)state;
    ddpm_safetensors_free(&FX);
    return 0;
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_frechet_self_is_zero),
        cmocka_unit_test(test_feature_stats),
        cmocka_unit_test(test_frechet_closed_form),
        cmocka_unit_test(test_kid),
        cmocka_unit_test(test_precision_recall),
        cmocka_unit_test(test_errors),
        cmocka_unit_test(test_quality_of_model),
        cmocka_unit_test(test_shipped_classifier_accuracy),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}

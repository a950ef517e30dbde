/* test_data2d.c - the built-in 2-D data sets and CSV point files. */
#include "testutil.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const NAMES[] = {"s-curve", "moons",       "swiss-roll",
                                    "circles", "8-gaussians", "checkerboard"};
#define N_NAMES (sizeof NAMES / sizeof NAMES[0])

static void generate(const char *name, size_t n, uint64_t seed, ddpm_points *p) {
    int rc = ddpm_points_generate(name, n, seed, p);
    if (rc) fail_msg("ddpm_points_generate(%s): %s", name, ddpm_last_error());
    assert_int_equal(p->dim, 2);
    assert_int_equal(p->n, n);
    assert_non_null(p->x);
}

/* Fails unless |got - want| <= tol, naming the quantity. */
#define CHECK_NEAR(got, want, tol, what)                                                           \
    do {                                                                                           \
        double g_ = (got), w_ = (want), t_ = (tol);                                                \
        if (!(fabs(g_ - w_) <= t_))                                                                \
            fail_msg("%s: got %.7g, expected %.7g +- %.3g", (what), g_, w_, t_);                   \
    } while (0)

/* ---- generators ---- */

static void test_names_and_unknown(void **state) {
    (void)state;
    const char *names = ddpm_points_dataset_names();
    for (size_t k = 0; k < N_NAMES; k++) assert_non_null(strstr(names, NAMES[k]));
    ddpm_points p = {(float *)1, 5, 5};
    assert_int_equal(ddpm_points_generate("spiral", 10, 1, &p), DDPM_ERR_INVALID);
    assert_null(p.x);
    const char *msg = ddpm_last_error();
    assert_non_null(strstr(msg, "'spiral'"));
    assert_non_null(strstr(msg, "s-curve"));
    assert_non_null(strstr(msg, "checkerboard"));
    assert_int_equal(ddpm_points_generate(NULL, 10, 1, &p), DDPM_ERR_INVALID);
}

static void test_deterministic_and_prefix(void **state) {
    (void)state;
    for (size_t k = 0; k < N_NAMES; k++) {
        ddpm_points a, b, c, d;
        generate(NAMES[k], 300, 42, &a);
        generate(NAMES[k], 300, 42, &b);
        generate(NAMES[k], 600, 42, &c);
        generate(NAMES[k], 300, 43, &d);
        if (memcmp(a.x, b.x, 600 * sizeof(float)) != 0)
            fail_msg("%s: the same seed gave different points", NAMES[k]);
        if (memcmp(a.x, c.x, 600 * sizeof(float)) != 0)
            fail_msg("%s: the first 300 of 600 points differ from 300 points", NAMES[k]);
        size_t same = 0;
        for (size_t i = 0; i < 600; i++) same += a.x[i] == d.x[i];
        if (same > 60) fail_msg("%s: seeds 42 and 43 share %zu of 600 values", NAMES[k], same);
        for (size_t i = 0; i < 600; i++)
            if (!isfinite(a.x[i])) fail_msg("%s: value %zu is not finite", NAMES[k], i);
        ddpm_points_free(&a);
        ddpm_points_free(&b);
        ddpm_points_free(&c);
        ddpm_points_free(&d);
    }
    ddpm_points z;
    assert_int_equal(ddpm_points_generate("moons", 0, 1, &z), DDPM_OK);
    assert_int_equal(z.n, 0);
    ddpm_points_free(&z);
    ddpm_points_free(&z); /* twice is safe */
}

/* S-curve: x = sin t / 10, y = sign(t)(cos t - 1) / 10 with t ~ U(-1.5 pi, 1.5 pi), noise 0.01.
 * Moments (noise included): E x = E y = 0, E x^2 = (0.5 + 0.01) / 100, E y^2 = (1.5 + 2 / (1.5 pi)
 * + 0.01) / 100, E xy = -1 / (3 pi) / 100; the last one catches a missing sign(t). */
static void test_s_curve(void **state) {
    (void)state;
    const size_t n = 40000;
    ddpm_points p;
    generate("s-curve", n, 1, &p);
    double sx = 0, sy = 0, sxx = 0, syy = 0, sxy = 0, maxx = 0, maxy = 0;
    for (size_t i = 0; i < n; i++) {
        double x = p.x[2 * i], y = p.x[2 * i + 1];
        sx += x;
        sy += y;
        sxx += x * x;
        syy += y * y;
        sxy += x * y;
        maxx = fmax(maxx, fabs(x));
        maxy = fmax(maxy, fabs(y));
    }
    sx /= n, sy /= n, sxx /= n, syy /= n, sxy /= n;
    /* The tutorial's scale: [-0.1, 0.1] x [-0.2, 0.2] plus noise of sd 0.01 (6 sd margin). */
    if (maxx > 0.16 || maxy > 0.26) fail_msg("s-curve out of range: |x| %g, |y| %g", maxx, maxy);
    if (maxx < 0.1 || maxy < 0.2) fail_msg("s-curve too small: |x| %g, |y| %g", maxx, maxy);
    CHECK_NEAR(sx, 0, 0.0015, "s-curve mean x");
    CHECK_NEAR(sy, 0, 0.003, "s-curve mean y");
    CHECK_NEAR(sxx, 0.0051, 0.0051 * 0.03, "s-curve E[x^2]");
    double eyy = (1.5 + 2.0 / (1.5 * M_PI) + 0.01) / 100.0;
    CHECK_NEAR(syy, eyy, eyy * 0.03, "s-curve E[y^2]");
    double exy = -1.0 / (3.0 * M_PI) / 100.0;
    CHECK_NEAR(sxy, exy, fabs(exy) * 0.12, "s-curve E[xy]");
    /* Shape: y > 0 exactly where t < 0, so the upper half curls one way: points with y > 0.05
     * have t in (-1.5 pi, -pi/3), mean x = E[sin t] = -0.5 / (7 pi / 6) / 10 = -0.0136
     * (+0.0136 for a mirrored S). */
    double m = 0;
    size_t c = 0;
    for (size_t i = 0; i < n; i++)
        if (p.x[2 * i + 1] > 0.05) m += p.x[2 * i], c++;
    m /= (double)c;
    if (!(m < -0.007)) fail_msg("s-curve upper half has mean x %g (the S is mirrored?)", m);
    ddpm_points_free(&p);
}

static void test_swiss_roll(void **state) {
    (void)state;
    const size_t n = 20000;
    ddpm_points p;
    generate("swiss-roll", n, 3, &p);
    double mr = 0, maxabs = 0;
    size_t on_curve = 0;
    for (size_t i = 0; i < n; i++) {
        double x = p.x[2 * i] * 15.0, y = p.x[2 * i + 1] * 15.0; /* back to sklearn units */
        double r = hypot(x, y);
        mr += r / 15.0;
        maxabs = fmax(maxabs, fmax(fabs(p.x[2 * i]), fabs(p.x[2 * i + 1])));
        /* t cos t, t sin t: the angle equals the radius mod 2 pi (noise of sd 0.5 on the
         * radius: |d| < 1 for 95% of the points; a wrong formula leaves about a third). */
        double d = remainder(atan2(y, x) - r, 2.0 * M_PI);
        if (fabs(d) < 1.0) on_curve++;
    }
    mr /= n;
    if (maxabs > 1.1) fail_msg("swiss-roll exceeds [-1.1, 1.1]: %g", maxabs);
    CHECK_NEAR(mr, 3.0 * M_PI / 15.0, 0.01, "swiss-roll mean radius (E t / 15)");
    if (on_curve < n * 0.85)
        fail_msg("swiss-roll: only %zu of %zu points on the spiral", on_curve, n);
    ddpm_points_free(&p);
}

static void test_moons(void **state) {
    (void)state;
    const size_t n = 20000;
    ddpm_points p;
    generate("moons", n, 4, &p);
    double sx = 0, sy = 0, dev = 0;
    for (size_t i = 0; i < n; i++) {
        double x = p.x[2 * i], y = p.x[2 * i + 1];
        sx += x;
        sy += y;
        if (fabs(x) > 1.15 || fabs(y) > 0.65)
            fail_msg("moons point %zu out of range: %g %g", i, x, y);
        /* back to sklearn units: upper moon on the unit circle, lower around (1, 0.5) */
        double xo = x * 1.5 + 0.5, yo = y * 1.5 + 0.25;
        double r = (i % 2 == 0) ? hypot(xo, yo) : hypot(xo - 1.0, yo - 0.5);
        dev = fmax(dev, fabs(r - 1.0));
        if (i % 2 == 0 && yo < -0.3) fail_msg("moons: upper-moon point %zu at y %g", i, yo);
        if (i % 2 == 1 && yo > 0.8) fail_msg("moons: lower-moon point %zu at y %g", i, yo);
    }
    CHECK_NEAR(sx / n, 0, 0.01, "moons mean x");
    CHECK_NEAR(sy / n, 0, 0.01, "moons mean y");
    if (dev > 0.3) fail_msg("moons: a point is %g off its moon (noise 0.05)", dev);
    ddpm_points_free(&p);
}

static void test_circles(void **state) {
    (void)state;
    const size_t n = 20000;
    ddpm_points p;
    generate("circles", n, 5, &p);
    double r_out = 0, r_in = 0;
    for (size_t i = 0; i < n; i++) {
        double r = hypot(p.x[2 * i], p.x[2 * i + 1]);
        double want = i % 2 == 0 ? 1.0 : 0.5;
        if (fabs(r - want) > 0.3) fail_msg("circles: point %zu at radius %g (want %g)", i, r, want);
        if (i % 2 == 0)
            r_out += r;
        else
            r_in += r;
    }
    CHECK_NEAR(r_out / (n / 2), 1.0, 0.01, "circles outer radius");
    CHECK_NEAR(r_in / (n / 2), 0.5, 0.01, "circles inner radius (factor 0.5)");
    ddpm_points_free(&p);
}

static void test_8gaussians(void **state) {
    (void)state;
    const size_t n = 24000;
    ddpm_points p;
    generate("8-gaussians", n, 6, &p);
    const double R = 1.0 / 1.414, sd = 0.5 / 1.414 / 4.0;
    size_t count[8] = {0};
    double msd = 0;
    for (size_t i = 0; i < n; i++) {
        double x = p.x[2 * i], y = p.x[2 * i + 1];
        int best = 0;
        double bd = INFINITY;
        for (int k = 0; k < 8; k++) {
            double cx = R * cos(k * M_PI / 4), cy = R * sin(k * M_PI / 4);
            double d = (x - cx) * (x - cx) + (y - cy) * (y - cy);
            if (d < bd) bd = d, best = k;
        }
        if (sqrt(bd) > 6 * sd)
            fail_msg("8-gaussians: point %zu is %g from every centre", i, sqrt(bd));
        count[best]++;
        msd += bd;
    }
    for (int k = 0; k < 8; k++)
        if (count[k] < n / 8 * 0.9 || count[k] > n / 8 * 1.1)
            fail_msg("8-gaussians: centre %d has %zu of %zu points", k, count[k], n);
    CHECK_NEAR(msd / n, 2 * sd * sd, 2 * sd * sd * 0.05, "8-gaussians mean squared distance");
    ddpm_points_free(&p);
}

static void test_checkerboard(void **state) {
    (void)state;
    const size_t n = 16000;
    ddpm_points p;
    generate("checkerboard", n, 7, &p);
    size_t cell[4][4] = {{0}};
    for (size_t i = 0; i < n; i++) {
        double x = p.x[2 * i], y = p.x[2 * i + 1];
        if (x < -1 || x >= 1 || y < -1 || y >= 1)
            fail_msg("checkerboard point %zu at %g %g", i, x, y);
        int cx = (int)floor(2 * x), cy = (int)floor(2 * y);
        if ((cx + cy) % 2 != 0)
            fail_msg("checkerboard point %zu (%g, %g) on a light square", i, x, y);
        cell[cx + 2][cy + 2]++;
    }
    for (int a = 0; a < 4; a++)
        for (int b = 0; b < 4; b++)
            if ((a + b) % 2 == 0 && (cell[a][b] < n / 8 * 0.9 || cell[a][b] > n / 8 * 1.1))
                fail_msg("checkerboard square (%d, %d) has %zu of %zu points", a, b, cell[a][b], n);
    ddpm_points_free(&p);
}

/* ---- CSV ---- */

static const char *write_text(const char *name, const char *text, size_t len) {
    const char *path = tu_tmp(name);
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(text, 1, len, f), len);
    fclose(f);
    return path;
}
#define WRITE(name, lit) write_text((name), (lit), sizeof(lit) - 1)

static void test_csv_round_trip(void **state) {
    (void)state;
    ddpm_points a, b;
    generate("swiss-roll", 1000, 9, &a);
    a.x[0] = 1e-30f; /* extremes survive too */
    a.x[1] = -3.4e38f;
    const char *path = tu_tmp("round.csv");
    assert_int_equal(ddpm_points_write_csv(path, &a), DDPM_OK);
    if (ddpm_points_read_csv(path, &b)) fail_msg("%s", ddpm_last_error());
    assert_int_equal(b.n, a.n);
    assert_int_equal(b.dim, 2);
    assert_memory_equal(a.x, b.x, a.n * 2 * sizeof(float));
    ddpm_points_free(&b);
    /* 1-D and 5-D */
    for (int dim = 1; dim <= 5; dim += 4) {
        ddpm_points c, d;
        assert_int_equal(ddpm_points_init(&c, 7, dim), DDPM_OK);
        for (size_t i = 0; i < 7 * (size_t)dim; i++) c.x[i] = (float)i * 0.37f - 1.0f;
        assert_int_equal(ddpm_points_write_csv(path, &c), DDPM_OK);
        if (ddpm_points_read_csv(path, &d)) fail_msg("%s", ddpm_last_error());
        assert_int_equal(d.n, 7);
        assert_int_equal(d.dim, dim);
        assert_memory_equal(c.x, d.x, 7 * (size_t)dim * sizeof(float));
        ddpm_points_free(&c);
        ddpm_points_free(&d);
    }
    ddpm_points_free(&a);
    assert_int_equal(ddpm_points_init(&a, 3, 0), DDPM_ERR_INVALID);
}

static void test_csv_header_and_separators(void **state) {
    (void)state;
    ddpm_points p;
    const char *path = WRITE("h.csv", "x,y\n1,2\n3,4\n");
    assert_int_equal(ddpm_points_read_csv(path, &p), DDPM_OK);
    assert_int_equal(p.n, 2);
    assert_int_equal(p.dim, 2);
    const float want[4] = {1, 2, 3, 4};
    assert_memory_equal(p.x, want, sizeof want);
    ddpm_points_free(&p);

    path = WRITE("noh.csv", "1 2\n3 4\n");
    assert_int_equal(ddpm_points_read_csv(path, &p), DDPM_OK);
    assert_int_equal(p.n, 2);
    assert_memory_equal(p.x, want, sizeof want);
    ddpm_points_free(&p);

    /* BOM, comments, blank lines, CRLF, tabs, ", " separators, no final newline, exponents */
    path = WRITE("mixed.csv", "\xEF\xBB\xBF# my points\n\n  \"a\" , b  # names\r\n"
                              "1.5\t-2.5e-1 # a comment\r\n\r\n   3 , 4\r\n\"5\",6");
    assert_int_equal(ddpm_points_read_csv(path, &p), DDPM_OK);
    assert_int_equal(p.n, 3);
    assert_int_equal(p.dim, 2);
    const float want2[6] = {1.5f, -0.25f, 3, 4, 5, 6};
    assert_memory_equal(p.x, want2, sizeof want2);
    ddpm_points_free(&p);

    path = WRITE("one.csv", "value\n0.5\n-1\n2\n");
    assert_int_equal(ddpm_points_read_csv(path, &p), DDPM_OK);
    assert_int_equal(p.n, 3);
    assert_int_equal(p.dim, 1);
    ddpm_points_free(&p);
}

/* Expects code and a message containing each of the fragments (path first). */
static void expect_error(const char *path, int code, const char *frag1, const char *frag2) {
    ddpm_points p = {(float *)1, 3, 3};
    int rc = ddpm_points_read_csv(path, &p);
    const char *msg = ddpm_last_error();
    if (rc != code) fail_msg("%s: code %d (%s), expected %d", path, rc, msg, code);
    assert_null(p.x);
    assert_int_equal(p.n, 0);
    if (!strstr(msg, path)) fail_msg("message '%s' does not name %s", msg, path);
    if (frag1 && !strstr(msg, frag1)) fail_msg("message '%s' lacks '%s'", msg, frag1);
    if (frag2 && !strstr(msg, frag2)) fail_msg("message '%s' lacks '%s'", msg, frag2);
}

static void test_csv_errors(void **state) {
    (void)state;
    /* a non-numeric value on line 17, column 2 (lines 1-16: a header, comments, rows) */
    char text[1024] = "x,y\n# comment\n\n";
    for (int line = 4; line <= 16; line++) strcat(text, "0.1,0.2\n");
    strcat(text, "0.3,abc\n0.5,0.6\n");
    const char *path = write_text("points.csv", text, strlen(text));
    char want[600];
    snprintf(want, sizeof want, "%s:17: column 2: 'abc' is not a number", path);
    expect_error(path, DDPM_ERR_FORMAT, want, NULL);

    path = WRITE("ragged.csv", "1,2\n3,4\n5,6\n7,8\n9,10\n11,12\n13,14\n15,16\n1,2,3\n");
    snprintf(want, sizeof want, "%s:9: 3 columns, expected 2 as on line 1", path);
    expect_error(path, DDPM_ERR_FORMAT, want, NULL);

    path = WRITE("ragged2.csv", "a,b,c\n1,2,3\n4 5\n");
    expect_error(path, DDPM_ERR_FORMAT, ":3: 2 columns, expected 3 as on line 1", "header");

    path = WRITE("empty.csv", "");
    expect_error(path, DDPM_ERR_FORMAT, "no data rows", NULL);
    path = WRITE("comments.csv", "# nothing\n\n   \n");
    expect_error(path, DDPM_ERR_FORMAT, "no data rows", NULL);
    path = WRITE("header_only.csv", "x,y\n");
    expect_error(path, DDPM_ERR_FORMAT, "no data rows", "header");

    path = WRITE("nan.csv", "1,2\n3,4\n5,nan\n");
    expect_error(path, DDPM_ERR_FORMAT, ":3: column 2: 'nan'", "finite");
    path = WRITE("inf.csv", "1,2\n-inf,4\n");
    expect_error(path, DDPM_ERR_FORMAT, ":2: column 1: '-inf'", "finite");
    path = WRITE("big.csv", "1,2\n1e39,4\n"); /* beyond float */
    expect_error(path, DDPM_ERR_FORMAT, ":2: column 1: '1e39'", "finite");
    path = WRITE("emptyfield.csv", "1,2,3\n4,,6\n");
    expect_error(path, DDPM_ERR_FORMAT, ":2: column 2: empty value", NULL);
    path = WRITE("trailing.csv", "1,2\n3,4,\n");
    expect_error(path, DDPM_ERR_FORMAT, ":2: 3 columns, expected 2", NULL);
    path = WRITE("junk.csv", "1,2\n3,4x\n");
    expect_error(path, DDPM_ERR_FORMAT, ":2: column 2: '4x' is not a number", NULL);
    path = write_text("nul.csv", "1,2\n3,4\0\n", 9);
    expect_error(path, DDPM_ERR_FORMAT, ":2: column 2:", "not a number");

    expect_error(tu_tmp("does-not-exist.csv"), DDPM_ERR_IO, NULL, NULL);
    expect_error(tu_tmpdir(), DDPM_ERR_IO, NULL, NULL); /* a directory */
}

static void test_csv_write_errors(void **state) {
    (void)state;
    ddpm_points p;
    generate("moons", 10, 1, &p);
    const char *bad = "/nonexistent-ddpm-dir/points.csv";
    assert_int_equal(ddpm_points_write_csv(bad, &p), DDPM_ERR_IO);
    assert_non_null(strstr(ddpm_last_error(), bad));
    ddpm_points_free(&p);
    ddpm_points none = {0};
    assert_int_equal(ddpm_points_write_csv(tu_tmp("none.csv"), &none), DDPM_ERR_INVALID);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_names_and_unknown),
        cmocka_unit_test(test_deterministic_and_prefix),
        cmocka_unit_test(test_s_curve),
        cmocka_unit_test(test_swiss_roll),
        cmocka_unit_test(test_moons),
        cmocka_unit_test(test_circles),
        cmocka_unit_test(test_8gaussians),
        cmocka_unit_test(test_checkerboard),
        cmocka_unit_test(test_csv_round_trip),
        cmocka_unit_test(test_csv_header_and_separators),
        cmocka_unit_test(test_csv_errors),
        cmocka_unit_test(test_csv_write_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

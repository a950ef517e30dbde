/* points.c - 2-D point clouds: the built-in toy data sets and CSV files of points.
 *
 * Every generator draws point i from (seed, DDPM_STREAM_DATA, item i): four uniforms at step 0
 * and four normals at step 1 (the two steps keep uniforms and normals from sharing Philox
 * blocks). A point never depends on n, so a prefix of a larger set equals a smaller set. The
 * formulas follow scikit-learn (make_s_curve, make_swiss_roll, make_moons, make_circles) and
 * FFJORD's toy data (rtqichen/ffjord lib/toy_data.py: 8gaussians, checkerboard); where sklearn
 * spaces points evenly along a curve (moons, circles) the position is drawn uniformly instead,
 * which is the same distribution in the limit and keeps points independent of n. */
#include "core/internal.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>

#ifndef M_PI
#define M_PI 3.14159265358979323846
#endif

int ddpm_points_init(ddpm_points *p, size_t n, int dim) {
    p->x = NULL;
    p->n = 0;
    p->dim = 0;
    if (dim < 1) return ddpm_fail(DDPM_ERR_INVALID, "points: dim must be >= 1 (got %d)", dim);
    float *x = ddpm_alloc(ddpm_size_mul(n, (size_t)dim), sizeof(float));
    if (!x) return DDPM_ERR_NOMEM;
    p->x = x;
    p->n = n;
    p->dim = dim;
    return DDPM_OK;
}

void ddpm_points_free(ddpm_points *p) {
    if (!p) return;
    free(p->x);
    p->x = NULL;
    p->n = 0;
    p->dim = 0;
}

/* ------------------------------------------------------------------------------------------ */
/* Generators                                                                                   */
/* ------------------------------------------------------------------------------------------ */

/* u: 4 uniforms in [0, 1), z: 4 standard normals; writes one 2-D point. */
typedef void (*gen_fn)(uint64_t i, const double *u, const double *z, float *out);

/* sklearn make_s_curve(noise=0.1), columns 0 and 2, / 10 (the tutorial's data):
 * t = 3 pi (U - 0.5); x = sin t; y = 2 U' (dropped); z = sign(t) (cos t - 1); noise 0.1 on each.
 * Range about [-0.1, 0.1] x [-0.2, 0.2]. */
static void gen_s_curve(uint64_t i, const double *u, const double *z, float *out) {
    (void)i;
    const double noise = 0.1, scale = 0.1;
    double t = 3.0 * M_PI * (u[0] - 0.5);
    double sgn = (t > 0) - (t < 0); /* np.sign: 0 at 0 */
    double x = sin(t) + noise * z[0];
    double zz = sgn * (cos(t) - 1.0) + noise * z[2];
    out[0] = (float)(x * scale);
    out[1] = (float)(zz * scale);
}

/* sklearn make_swiss_roll(noise=0.5), columns 0 and 2: t = 1.5 pi (1 + 2U),
 * (t cos t, t sin t) + noise; / 15 so that |t| <= 4.5 pi = 14.14 maps to about [-1, 1]. */
static void gen_swiss_roll(uint64_t i, const double *u, const double *z, float *out) {
    (void)i;
    const double noise = 0.5, scale = 1.0 / 15.0;
    double t = 1.5 * M_PI * (1.0 + 2.0 * u[0]);
    out[0] = (float)((t * cos(t) + noise * z[0]) * scale);
    out[1] = (float)((t * sin(t) + noise * z[1]) * scale);
}

/* sklearn make_moons(noise=0.05): upper moon (cos a, sin a), lower moon (1 - cos a,
 * 0.5 - sin a), a in [0, pi]; even points upper, odd lower (sklearn: half each). Then centred
 * at the mean (0.5, 0.25) and scaled by 2/3: x in about [-1, 1], y in about [-0.5, 0.5]. */
static void gen_moons(uint64_t i, const double *u, const double *z, float *out) {
    const double noise = 0.05, scale = 2.0 / 3.0;
    double a = M_PI * u[0], x, y;
    if (i % 2 == 0) {
        x = cos(a);
        y = sin(a);
    } else {
        x = 1.0 - cos(a);
        y = 1.0 - sin(a) - 0.5;
    }
    out[0] = (float)((x + noise * z[0] - 0.5) * scale);
    out[1] = (float)((y + noise * z[1] - 0.25) * scale);
}

/* sklearn make_circles(factor=0.5, noise=0.05): even points on the unit circle, odd on radius
 * 0.5, angle uniform in [0, 2 pi). Not rescaled: about [-1.1, 1.1]^2. */
static void gen_circles(uint64_t i, const double *u, const double *z, float *out) {
    const double noise = 0.05, factor = 0.5;
    double a = 2.0 * M_PI * u[0];
    double r = (i % 2 == 0) ? 1.0 : factor;
    out[0] = (float)(r * cos(a) + noise * z[0]);
    out[1] = (float)(r * sin(a) + noise * z[1]);
}

/* FFJORD 8gaussians: centre c uniformly among the 8 unit vectors at multiples of pi/4 (FFJORD's
 * order), point = (4 c + 0.5 N(0, I)) / 1.414; here further / 4: centres on radius
 * 1 / 1.414 = 0.7072, sd 0.5 / 1.414 / 4 = 0.0884, about [-1, 1]^2. */
static void gen_8gaussians(uint64_t i, const double *u, const double *z, float *out) {
    (void)i;
    const double s2 = 1.0 / sqrt(2.0);
    static const double c[8][2] = {{1, 0}, {-1, 0}, {0, 1},  {0, -1},
                                   {1, 1}, {1, -1}, {-1, 1}, {-1, -1}};
    int k = (int)(u[0] * 8.0);
    if (k > 7) k = 7;
    double cx = c[k][0], cy = c[k][1];
    if (k >= 4) {
        cx *= s2;
        cy *= s2;
    }
    const double scale = 4.0, sd = 0.5, ffjord_div = 1.414, ours = 4.0;
    out[0] = (float)((scale * cx + sd * z[0]) / ffjord_div / ours);
    out[1] = (float)((scale * cy + sd * z[1]) / ffjord_div / ours);
}

/* FFJORD checkerboard: x1 = 4U - 2; x2 = U' - 2 B + (floor(x1) mod 2), B a fair coin; point =
 * 2 (x1, x2); here further / 4, i.e. (x1, x2) / 2: uniform on the squares of side 0.5 in
 * [-1, 1)^2 whose floor(2x) + floor(2y) is even. */
static void gen_checkerboard(uint64_t i, const double *u, const double *z, float *out) {
    (void)i;
    (void)z;
    double x1 = u[0] * 4.0 - 2.0;
    double x2 = u[1] - (u[2] < 0.5 ? 2.0 : 0.0);
    double f = floor(x1);
    x2 += f - 2.0 * floor(f / 2.0); /* Python's floor(x1) % 2, in {0, 1} */
    out[0] = (float)(x1 * 0.5);
    out[1] = (float)(x2 * 0.5);
}

static const struct {
    const char *name;
    gen_fn fn;
} generators[] = {
    {"s-curve", gen_s_curve}, {"swiss-roll", gen_swiss_roll},  {"moons", gen_moons},
    {"circles", gen_circles}, {"8-gaussians", gen_8gaussians}, {"checkerboard", gen_checkerboard},
};
#define N_GENERATORS (sizeof generators / sizeof generators[0])

const char *ddpm_points_dataset_names(void) {
    return "s-curve, swiss-roll, moons, circles, 8-gaussians, checkerboard";
}

int ddpm_points_generate(const char *name, size_t n, uint64_t seed, ddpm_points *out) {
    out->x = NULL;
    out->n = 0;
    out->dim = 0;
    gen_fn fn = NULL;
    for (size_t k = 0; k < N_GENERATORS && name; k++)
        if (strcmp(name, generators[k].name) == 0) fn = generators[k].fn;
    if (!fn)
        return ddpm_fail(DDPM_ERR_INVALID, "unknown data set '%s' (choose one of: %s)",
                         name ? name : "(null)", ddpm_points_dataset_names());
    int rc = ddpm_points_init(out, n, 2);
    if (rc) return rc;
    for (size_t i = 0; i < n; i++) {
        float uf[4], zf[4];
        double u[4], z[4];
        ddpm_randu(seed, DDPM_STREAM_DATA, i, 0, uf, 4);
        ddpm_randn(seed, DDPM_STREAM_DATA, i, 1, zf, 4);
        for (int k = 0; k < 4; k++) {
            u[k] = uf[k];
            z[k] = zf[k];
        }
        fn(i, u, z, out->x + 2 * i);
    }
    return DDPM_OK;
}

/* ------------------------------------------------------------------------------------------ */
/* CSV                                                                                          */
/* ------------------------------------------------------------------------------------------ */

typedef struct {
    const char *start; /* token text (not NUL-terminated) */
    size_t len;
} token;

static int is_space(char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\v' || c == '\f'; }

/* Splits line [p, end) into tokens. Separators: a comma with optional blanks around it, or a run
 * of blanks. An empty field (",," or a leading/trailing comma) is a zero-length token. Returns the
 * number of fields; stores at most cap of them. */
static size_t split_fields(const char *p, const char *end, token *toks, size_t cap) {
    size_t n = 0;
    while (p < end && is_space(*p)) p++;
    if (p == end) return 0;
    for (;;) {
        const char *s = p;
        while (p < end && *p != ',' && !is_space(*p)) p++;
        if (n < cap) toks[n] = (token){s, (size_t)(p - s)};
        n++;
        while (p < end && is_space(*p)) p++;
        if (p == end) break;
        if (*p == ',') {
            p++;
            while (p < end && is_space(*p)) p++;
            if (p == end) { /* trailing comma: one more, empty field */
                if (n < cap) toks[n] = (token){p, 0};
                n++;
                break;
            }
        }
    }
    return n;
}

/* Parses a token as a double. Returns 0 if it is not a number; *v may then be anything. */
static int parse_number(token t, double *v) {
    char buf[128];
    if (t.len >= 2 && t.start[0] == '"' && t.start[t.len - 1] == '"') { /* "1.5" */
        t.start++;
        t.len -= 2;
    }
    if (t.len == 0 || t.len >= sizeof buf) return 0;
    memcpy(buf, t.start, t.len);
    buf[t.len] = 0;
    if (strlen(buf) != t.len) return 0; /* an embedded NUL byte */
    char *e;
    errno = 0;
    *v = strtod(buf, &e);
    if (e != buf + t.len) return 0;
    if (errno == ERANGE && fabs(*v) > 1.0) *v = INFINITY; /* overflow: reported as inf */
    return 1;
}

/* A short, printable rendering of a token for messages. */
static void show_token(token t, char *buf, size_t cap) {
    size_t k = 0;
    for (size_t i = 0; i < t.len && k + 4 < cap; i++) {
        unsigned char c = (unsigned char)t.start[i];
        buf[k++] = isprint(c) ? (char)c : '?';
    }
    if (t.len > 0 && k < t.len && k + 3 < cap) {
        buf[k++] = '.';
        buf[k++] = '.';
        buf[k++] = '.';
    }
    buf[k] = 0;
}

int ddpm_points_read_csv(const char *path, ddpm_points *out) {
    out->x = NULL;
    out->n = 0;
    out->dim = 0;
    unsigned char *data;
    size_t size;
    int rc = ddpm_read_file(path, &data, &size);
    if (rc) return rc;

    const char *p = (const char *)data, *end = p + size;
    if (size >= 3 && data[0] == 0xEF && data[1] == 0xBB && data[2] == 0xBF) p += 3;

    size_t dim = 0, n = 0, cap = 0;
    float *x = NULL;
    long first_line = 0; /* the line that fixed the column count */
    int header = 0, seen_row = 0;
    token *toks = NULL;
    size_t toks_cap = 0;
    rc = DDPM_OK;

    for (long line = 1; p < end; line++) {
        const char *eol = memchr(p, '\n', (size_t)(end - p));
        if (!eol) eol = end;
        const char *hash = memchr(p, '#', (size_t)(eol - p));
        const char *stop = hash ? hash : eol;
        size_t nf = split_fields(p, stop, toks, toks_cap);
        if (nf > toks_cap) {
            size_t nc = nf < 16 ? 16 : nf;
            token *t2 = realloc(toks, nc * sizeof *t2);
            if (!t2) {
                rc = ddpm_fail(DDPM_ERR_NOMEM, "%s: out of memory", path);
                break;
            }
            toks = t2;
            toks_cap = nc;
            split_fields(p, stop, toks, toks_cap);
        }
        p = eol < end ? eol + 1 : end;
        if (nf == 0) continue;

        if (!seen_row) {
            /* The first row is a header when none of its fields is a number. */
            seen_row = 1;
            int any_number = 0;
            for (size_t k = 0; k < nf; k++) {
                double v;
                if (parse_number(toks[k], &v)) any_number = 1;
            }
            if (nf > (size_t)(1 << 20)) {
                rc = ddpm_fail(DDPM_ERR_FORMAT, "%s:%ld: %zu columns (at most %d)", path, line, nf,
                               1 << 20);
                break;
            }
            dim = nf;
            first_line = line;
            if (!any_number) {
                header = 1;
                continue;
            }
        }
        if (nf != dim) {
            rc = ddpm_fail(DDPM_ERR_FORMAT, "%s:%ld: %zu column%s, expected %zu as on line %ld%s",
                           path, line, nf, nf == 1 ? "" : "s", dim, first_line,
                           header ? " (the header)" : "");
            break;
        }
        if (n == cap) {
            size_t nc = cap ? cap * 2 : 1024;
            float *x2 = realloc(x, ddpm_size_mul(ddpm_size_mul(nc, dim), sizeof(float)));
            if (!x2) {
                rc = ddpm_fail(DDPM_ERR_NOMEM, "%s: out of memory after %zu rows", path, n);
                break;
            }
            x = x2;
            cap = nc;
        }
        for (size_t k = 0; k < nf; k++) {
            double v;
            char shown[64];
            if (toks[k].len == 0) {
                rc = ddpm_fail(DDPM_ERR_FORMAT, "%s:%ld: column %zu: empty value", path, line,
                               k + 1);
                break;
            }
            if (!parse_number(toks[k], &v)) {
                show_token(toks[k], shown, sizeof shown);
                rc = ddpm_fail(DDPM_ERR_FORMAT, "%s:%ld: column %zu: '%s' is not a number", path,
                               line, k + 1, shown);
                break;
            }
            if (!isfinite(v) || !isfinite((float)v)) {
                show_token(toks[k], shown, sizeof shown);
                rc = ddpm_fail(DDPM_ERR_FORMAT,
                               "%s:%ld: column %zu: '%s' is not a finite number (NaN, inf or "
                               "beyond float range)",
                               path, line, k + 1, shown);
                break;
            }
            x[n * dim + k] = (float)v;
        }
        if (rc) break;
        n++;
    }
    free(toks);
    free(data);
    if (!rc && n == 0)
        rc = ddpm_fail(DDPM_ERR_FORMAT, "%s: no data rows%s", path,
                       header ? " (only a header)" : " (the file is empty)");
    if (rc) {
        free(x);
        return rc;
    }
    out->x = x;
    out->n = n;
    out->dim = (int)dim;
    return DDPM_OK;
}

int ddpm_points_write_csv(const char *path, const ddpm_points *p) {
    if (!p || p->dim < 1 || (p->n && !p->x))
        return ddpm_fail(DDPM_ERR_INVALID, "%s: no points to write", path);
    size_t dim = (size_t)p->dim;
    /* 16 bytes per value is enough for "%.9g" plus a separator (at most 15 + 1). */
    size_t cap = ddpm_size_mul(ddpm_size_mul(p->n + 1, dim), 18);
    if (cap == SIZE_MAX) return ddpm_fail(DDPM_ERR_NOMEM, "%s: too many points", path);
    char *buf = malloc(cap + 64);
    if (!buf) return ddpm_fail(DDPM_ERR_NOMEM, "%s: out of memory", path);
    size_t len = 0;
    for (size_t k = 0; k < dim; k++)
        len += (size_t)snprintf(buf + len, cap + 64 - len, "%sx%zu", k ? "," : "", k);
    buf[len++] = '\n';
    for (size_t i = 0; i < p->n; i++) {
        for (size_t k = 0; k < dim; k++)
            len += (size_t)snprintf(buf + len, cap + 64 - len, "%s%.9g", k ? "," : "",
                                    (double)p->x[i * dim + k]);
        buf[len++] = '\n';
    }
    DDPM_CHECK(len <= cap + 64);
    const void *parts[1] = {buf};
    size_t sizes[1] = {len};
    int rc = ddpm_write_file_atomic(path, parts, sizes, 1);
    free(buf);
    return rc;
}

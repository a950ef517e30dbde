/* metrics.c - sample-quality metrics between point sets: sliced Wasserstein-1 and RBF-kernel MMD^2.
 *
 * Both are deterministic for a seed: random projections and subsamples come from the counter
 * based RNG (stream DDPM_STREAM_EVAL), per-projection / per-row partial results are stored and
 * summed in a fixed order, so the thread count never changes a result. */
#include "core/internal.h"

#include <math.h>

static int check_sets(const char *what, const ddpm_points *a, const ddpm_points *b, size_t min_n) {
    if (!a || !b || !a->x || !b->x || a->n < min_n || b->n < min_n)
        return ddpm_fail(DDPM_ERR_INVALID,
                         "%s: each point set needs at least %zu point%s (got %zu and %zu)", what,
                         min_n, min_n == 1 ? "" : "s", a ? a->n : 0, b ? b->n : 0);
    if (a->dim < 1 || a->dim != b->dim)
        return ddpm_fail(DDPM_ERR_INVALID, "%s: the point sets have dims %d and %d (must match)",
                         what, a->dim, b->dim);
    const ddpm_points *sets[2] = {a, b};
    for (int s = 0; s < 2; s++) {
        size_t m = sets[s]->n * (size_t)sets[s]->dim;
        for (size_t i = 0; i < m; i++)
            if (!isfinite(sets[s]->x[i]))
                return ddpm_fail(DDPM_ERR_NUMERIC,
                                 "%s: set %c has a non-finite value (%g) at point %zu", what,
                                 s ? 'b' : 'a', (double)sets[s]->x[i], i / (size_t)sets[s]->dim);
    }
    return DDPM_OK;
}

/* ------------------------------------------------------------------------------------------ */
/* Sliced Wasserstein-1                                                                         */
/* ------------------------------------------------------------------------------------------ */

/* Order-preserving map of a float to an unsigned key. */
static inline uint32_t float_key(float f) {
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}
static inline float key_float(uint32_t k) {
    uint32_t u = (k & 0x80000000u) ? (k & 0x7FFFFFFFu) : ~k;
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

/* Sorts v[n] ascending: LSD radix sort over 3 passes of 11 bits on the float keys. tmp holds
 * 2n uint32. */
static void sort_floats(float *v, size_t n, uint32_t *tmp) {
    uint32_t *a = tmp, *b = tmp + n;
    for (size_t i = 0; i < n; i++) a[i] = float_key(v[i]);
    for (int pass = 0; pass < 3; pass++) {
        int shift = pass * 11;
        size_t count[2048] = {0};
        for (size_t i = 0; i < n; i++) count[(a[i] >> shift) & 2047u]++;
        size_t sum = 0;
        for (int k = 0; k < 2048; k++) {
            size_t c = count[k];
            count[k] = sum;
            sum += c;
        }
        for (size_t i = 0; i < n; i++) b[count[(a[i] >> shift) & 2047u]++] = a[i];
        uint32_t *t = a;
        a = b;
        b = t;
    }
    for (size_t i = 0; i < n; i++) v[i] = key_float(a[i]);
}

/* W1 between the empirical distributions of sorted x[n] and y[m]: the integral over q in (0, 1)
 * of |F^-1(q) - G^-1(q)|, walking the merged breakpoints i/n and j/m (in units of 1/(n m)). */
static double w1_sorted(const float *x, size_t n, const float *y, size_t m) {
    if (n == m) {
        double s = 0;
        for (size_t i = 0; i < n; i++) s += fabs((double)x[i] - (double)y[i]);
        return s / (double)n;
    }
    size_t i = 0, j = 0;
    unsigned __int128 prev = 0;
    double s = 0;
    while (i < n && j < m) {
        unsigned __int128 ea = (unsigned __int128)(i + 1) * m, eb = (unsigned __int128)(j + 1) * n;
        unsigned __int128 e = ea < eb ? ea : eb;
        s += (double)(e - prev) * fabs((double)x[i] - (double)y[j]);
        prev = e;
        if (ea == e) i++;
        if (eb == e) j++;
    }
    return s / ((double)n * (double)m);
}

static void project(const ddpm_points *p, const double *u, float *out) {
    size_t d = (size_t)p->dim;
    for (size_t i = 0; i < p->n; i++) {
        const float *x = p->x + i * d;
        double s = 0;
        for (size_t k = 0; k < d; k++) s += u[k] * x[k];
        out[i] = (float)s;
    }
}

int ddpm_sliced_wasserstein(const ddpm_points *a, const ddpm_points *b, int n_projections,
                            uint64_t seed, double *out) {
    *out = NAN;
    int rc = check_sets("sliced Wasserstein", a, b, 1);
    if (rc) return rc;
    if (n_projections < 0)
        return ddpm_fail(DDPM_ERR_INVALID,
                         "sliced Wasserstein: n_projections must be >= 0 (got %d)", n_projections);
    int P = n_projections ? n_projections : 256;
    size_t d = (size_t)a->dim;
    size_t nmax = a->n > b->n ? a->n : b->n;
    double *w = ddpm_alloc((size_t)P, sizeof(double));
    double *dirs = ddpm_alloc(ddpm_size_mul((size_t)P, d), sizeof(double));
    if (!w || !dirs) {
        free(w);
        free(dirs);
        return DDPM_ERR_NOMEM;
    }
    /* Directions: normalised standard normal vectors (uniform on the sphere). */
    float *g = ddpm_alloc(d, sizeof(float));
    if (!g) {
        free(w);
        free(dirs);
        return DDPM_ERR_NOMEM;
    }
    for (int k = 0; k < P; k++) {
        double norm = 0;
        for (uint32_t step = 0; norm < 1e-12; step++) { /* redraw a (practically impossible) 0 */
            ddpm_randn(seed, DDPM_STREAM_EVAL, (uint64_t)k, step, g, d);
            norm = 0;
            for (size_t j = 0; j < d; j++) norm += (double)g[j] * g[j];
        }
        norm = sqrt(norm);
        for (size_t j = 0; j < d; j++) dirs[(size_t)k * d + j] = g[j] / norm;
    }
    free(g);

    int failed = 0;
#pragma omp parallel reduction(| : failed)
    {
        float *pa = malloc(ddpm_size_mul(a->n, sizeof(float)));
        float *pb = malloc(ddpm_size_mul(b->n, sizeof(float)));
        uint32_t *tmp = malloc(ddpm_size_mul(2 * nmax, sizeof(uint32_t)));
        if (!pa || !pb || !tmp) failed = 1;
#pragma omp for schedule(static)
        for (int k = 0; k < P; k++) {
            if (!pa || !pb || !tmp) continue;
            project(a, dirs + (size_t)k * d, pa);
            project(b, dirs + (size_t)k * d, pb);
            sort_floats(pa, a->n, tmp);
            sort_floats(pb, b->n, tmp);
            w[k] = w1_sorted(pa, a->n, pb, b->n);
        }
        free(pa);
        free(pb);
        free(tmp);
    }
    double s = 0;
    for (int k = 0; k < P; k++) s += w[k];
    free(w);
    free(dirs);
    if (failed)
        return ddpm_fail(DDPM_ERR_NOMEM, "sliced Wasserstein: out of memory for %zu points", nmax);
    *out = s / P;
    return DDPM_OK;
}

/* ------------------------------------------------------------------------------------------ */
/* MMD^2 with an RBF kernel                                                                     */
/* ------------------------------------------------------------------------------------------ */

/* Copies m points of p into dst (contiguous [m, d]): all of them when p->n <= m, otherwise a
 * uniformly random subset without replacement (partial Fisher-Yates). */
static int subsample(const ddpm_points *p, size_t m, uint64_t seed, uint32_t step, float *dst) {
    size_t d = (size_t)p->dim;
    if (p->n <= m) {
        memcpy(dst, p->x, p->n * d * sizeof(float));
        return DDPM_OK;
    }
    size_t *idx = ddpm_alloc(p->n, sizeof(size_t));
    if (!idx) return DDPM_ERR_NOMEM;
    for (size_t i = 0; i < p->n; i++) idx[i] = i;
    for (size_t k = 0; k < m; k++) {
        size_t left = p->n - k;
        size_t r;
        if (left <= UINT32_MAX) {
            r = ddpm_rand_below(seed, DDPM_STREAM_EVAL, k, step, (uint32_t)left);
        } else { /* more than 4 billion points: combine two words (bias < 2^-32, irrelevant) */
            uint32_t u[2];
            ddpm_rand_u32(seed, DDPM_STREAM_EVAL, k, step, u, 2);
            r = (size_t)((((uint64_t)u[0] << 32) | u[1]) % left);
        }
        size_t j = k + r, t = idx[k];
        idx[k] = idx[j];
        idx[j] = t;
        memcpy(dst + k * d, p->x + idx[k] * d, d * sizeof(float));
    }
    free(idx);
    return DDPM_OK;
}

static inline double sqdist(const float *x, const float *y, size_t d) {
    double s = 0;
    for (size_t k = 0; k < d; k++) {
        double t = (double)x[k] - (double)y[k];
        s += t * t;
    }
    return s;
}

/* The k-th smallest of v[n] (v is reordered): Hoare's quickselect, median-of-three pivot. */
static double select_kth(double *v, size_t n, size_t k) {
    size_t lo = 0, hi = n - 1;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        double a = v[lo], b = v[mid], c = v[hi];
        double pivot = a < b ? (b < c ? b : (a < c ? c : a)) : (a < c ? a : (b < c ? c : b));
        size_t i = lo, j = hi;
        while (i <= j) {
            while (v[i] < pivot) i++;
            while (v[j] > pivot) j--;
            if (i <= j) {
                double t = v[i];
                v[i] = v[j];
                v[j] = t;
                i++;
                if (j == 0) break;
                j--;
            }
        }
        if (k <= j && j != (size_t)-1)
            hi = j;
        else if (k >= i)
            lo = i;
        else
            return v[k];
    }
    return v[k];
}

/* Median of all pairwise distances among up to 500 evenly strided points of x and of y, pooled
 * (strided rather than the first ones, so that a file sorted along some axis is still covered). */
static int median_distance(const float *x, size_t nx, const float *y, size_t ny, size_t d,
                           double *med) {
    size_t kx = nx < 500 ? nx : 500, ky = ny < 500 ? ny : 500, m = kx + ky;
    const float **pts = ddpm_alloc(m, sizeof(float *));
    double *dist = ddpm_alloc(m * (m - 1) / 2, sizeof(double));
    if (!pts || !dist) {
        free(pts);
        free(dist);
        return DDPM_ERR_NOMEM;
    }
    for (size_t i = 0; i < kx; i++) pts[i] = x + (i * nx / kx) * d;
    for (size_t i = 0; i < ky; i++) pts[kx + i] = y + (i * ny / ky) * d;
    size_t c = 0;
    for (size_t i = 0; i < m; i++)
        for (size_t j = i + 1; j < m; j++) dist[c++] = sqdist(pts[i], pts[j], d);
    /* squared distances: the same order as the distances */
    double hi = sqrt(select_kth(dist, c, c / 2));
    if (c % 2 == 0) {           /* even count: the mean of the two middle distances */
        double below = dist[0]; /* select_kth left the c/2 smaller values in front */
        for (size_t i = 1; i < c / 2; i++) below = dist[i] > below ? dist[i] : below;
        hi = 0.5 * (hi + sqrt(below));
    }
    *med = hi;
    free(pts);
    free(dist);
    return DDPM_OK;
}

/* Sum over i < j of k(x_i, x_j) (within == 1, x == y) or over all i, j of k(x_i, y_j), with
 * k = exp(-g |.|^2). Row sums are kept per row and added in order (thread-count independent). */
static double kernel_sum(const float *x, size_t nx, const float *y, size_t ny, size_t d, double g,
                         int within, double *rows) {
#pragma omp parallel for schedule(dynamic, 16)
    for (size_t i = 0; i < nx; i++) {
        const float *xi = x + i * d;
        double s = 0;
        for (size_t j = within ? i + 1 : 0; j < ny; j++) s += exp(-g * sqdist(xi, y + j * d, d));
        rows[i] = s;
    }
    double total = 0;
    for (size_t i = 0; i < nx; i++) total += rows[i];
    return total;
}

int ddpm_mmd_rbf(const ddpm_points *a, const ddpm_points *b, double bandwidth, size_t max_points,
                 uint64_t seed, double *mmd2, double *bandwidth_used) {
    *mmd2 = NAN;
    if (bandwidth_used) *bandwidth_used = NAN;
    int rc = check_sets("MMD", a, b, 2);
    if (rc) return rc;
    if (!isfinite(bandwidth))
        return ddpm_fail(DDPM_ERR_INVALID, "MMD: the bandwidth must be finite (got %g)", bandwidth);
    size_t cap = max_points ? max_points : 2000;
    if (cap < 2) return ddpm_fail(DDPM_ERR_INVALID, "MMD: max_points must be >= 2 (got %zu)", cap);
    size_t d = (size_t)a->dim;
    size_t na = a->n < cap ? a->n : cap, nb = b->n < cap ? b->n : cap;
    float *xa = ddpm_alloc(ddpm_size_mul(na, d), sizeof(float));
    float *xb = ddpm_alloc(ddpm_size_mul(nb, d), sizeof(float));
    double *rows = ddpm_alloc(na > nb ? na : nb, sizeof(double));
    if (!xa || !xb || !rows) {
        rc = DDPM_ERR_NOMEM;
        goto done;
    }
    if ((rc = subsample(a, na, seed, 1, xa)) || (rc = subsample(b, nb, seed, 2, xb))) goto done;
    double h = bandwidth;
    if (h <= 0) {
        if ((rc = median_distance(xa, na, xb, nb, d, &h))) goto done;
        if (!(h > 0)) h = 1.0;
    }
    double g = 1.0 / (2.0 * h * h);
    double saa = kernel_sum(xa, na, xa, na, d, g, 1, rows);
    double sbb = kernel_sum(xb, nb, xb, nb, d, g, 1, rows);
    double sab = kernel_sum(xa, na, xb, nb, d, g, 0, rows);
    /* i < j sums count each unordered pair once: mean over i != j = 2 S / (n (n - 1)). */
    *mmd2 = 2.0 * saa / ((double)na * (double)(na - 1)) +
            2.0 * sbb / ((double)nb * (double)(nb - 1)) - 2.0 * sab / ((double)na * (double)nb);
    if (bandwidth_used) *bandwidth_used = h;
done:
    free(xa);
    free(xb);
    free(rows);
    return rc;
}

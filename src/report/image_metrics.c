/* image_metrics.c - sample-quality metrics between two sets of image features (the penultimate
 * layer of a classifier, models/classifier.c, or any other network's): the Frechet distance of
 * Gaussians fitted to them (FID's formula), the kernel inception distance (KID), improved
 * precision and recall (k-NN manifolds), and the per-class accuracy of conditional samples.
 *
 * Everything is computed in double: means and covariances (a float sum of 10^4 features loses
 * digits that the Frechet distance, a difference of traces, needs), distances and kernels
 * through OpenBLAS's dgemm, and the matrix square root through LAPACK's symmetric
 * eigendecomposition (dsyevd, which Debian's OpenBLAS ships). Random subsets come from the
 * counter-based RNG (stream DDPM_STREAM_EVAL); per-row results are reduced in a fixed order, so
 * no result depends on the thread count. */
#include "core/internal.h"

#include <cblas.h>
#include <float.h>
#include <math.h>

/* LAPACK (Fortran): the eigenvalues (and vectors, jobz 'V') of a symmetric matrix; the two
 * trailing arguments are the hidden lengths of the character arguments (gfortran's convention). */
extern void dsyevd_(const char *jobz, const char *uplo, const int *n, double *a, const int *lda,
                    double *w, double *work, const int *lwork, int *iwork, const int *liwork,
                    int *info, size_t jobz_len, size_t uplo_len);

static int check_features(const char *what, const ddpm_points *a, const ddpm_points *b,
                          size_t min_n) {
    if (!a || !b || !a->x || !b->x || a->n < min_n || b->n < min_n)
        return ddpm_fail(DDPM_ERR_INVALID, "%s: each feature set needs at least %zu items (got %zu and %zu)",
                         what, min_n, a ? a->n : 0, b ? b->n : 0);
    if (a->dim < 1 || a->dim != b->dim)
        return ddpm_fail(DDPM_ERR_INVALID, "%s: the feature sets have dims %d and %d (must match)",
                         what, a->dim, b->dim);
    const ddpm_points *sets[2] = {a, b};
    for (int s = 0; s < 2; s++) {
        const size_t m = sets[s]->n * (size_t)sets[s]->dim;
        for (size_t i = 0; i < m; i++)
            if (!isfinite(sets[s]->x[i]))
                return ddpm_fail(DDPM_ERR_NUMERIC, "%s: set %c has a non-finite feature (%g) at item %zu",
                                 what, s ? 'b' : 'a', (double)sets[s]->x[i], i / (size_t)sets[s]->dim);
    }
    return DDPM_OK;
}

/* ---- Gaussian statistics and the Frechet distance ------------------------------------------- */

int ddpm_feature_stats(const ddpm_points *f, double *mean, double *cov) {
    if (!f || !f->x || f->n < 2 || f->dim < 1)
        return ddpm_fail(DDPM_ERR_INVALID, "feature statistics need at least 2 items (got %zu)",
                         f ? f->n : 0);
    const size_t n = f->n, d = (size_t)f->dim;
    double *xc = ddpm_alloc(n * d, sizeof(double));
    if (!xc) return DDPM_ERR_NOMEM;
    for (size_t j = 0; j < d; j++) mean[j] = 0.0;
    for (size_t i = 0; i < n; i++)
        for (size_t j = 0; j < d; j++) mean[j] += f->x[i * d + j];
    for (size_t j = 0; j < d; j++) mean[j] /= (double)n;
    for (size_t i = 0; i < n; i++)
        for (size_t j = 0; j < d; j++) xc[i * d + j] = f->x[i * d + j] - mean[j];
    /* cov = xc^T xc / (n - 1) (np.cov's unbiased estimate, as pytorch-fid) */
    cblas_dsyrk(CblasRowMajor, CblasUpper, CblasTrans, (int)d, (int)n, 1.0 / (double)(n - 1), xc,
                (int)d, 0.0, cov, (int)d);
    for (size_t r = 0; r < d; r++)
        for (size_t c = 0; c < r; c++) cov[r * d + c] = cov[c * d + r];
    free(xc);
    return DDPM_OK;
}

/* Eigenvalues w[d] (ascending) and, with vectors, the eigenvectors of the symmetric a [d, d]
 * (overwritten: row-major, so column k of LAPACK's column-major result is row k here). */
static int sym_eig(double *a, int d, double *w, int vectors) {
    const char jobz = vectors ? 'V' : 'N', uplo = 'U';
    int info = 0, lwork = -1, liwork = -1, iw = 0;
    double wq = 0;
    dsyevd_(&jobz, &uplo, &d, a, &d, w, &wq, &lwork, &iw, &liwork, &info, 1, 1);
    if (info) return ddpm_fail(DDPM_ERR_NUMERIC, "dsyevd workspace query failed (info %d)", info);
    lwork = (int)wq;
    liwork = iw;
    double *work = ddpm_alloc((size_t)lwork, sizeof(double));
    int *iwork = ddpm_alloc((size_t)liwork, sizeof(int));
    if (!work || !iwork) {
        free(work);
        free(iwork);
        return DDPM_ERR_NOMEM;
    }
    dsyevd_(&jobz, &uplo, &d, a, &d, w, work, &lwork, iwork, &liwork, &info, 1, 1);
    free(work);
    free(iwork);
    if (info)
        return ddpm_fail(DDPM_ERR_NUMERIC, "the eigendecomposition (dsyevd) did not converge (info %d)", info);
    return DDPM_OK;
}

int ddpm_frechet_distance_stats(int d, const double *mu1, const double *cov1, const double *mu2,
                                const double *cov2, double *out) {
    if (d < 1) return ddpm_fail(DDPM_ERR_INVALID, "Frechet distance: dimension %d", d);
    const size_t dd = (size_t)d * d;
    double *v = ddpm_alloc(dd, sizeof(double)), *s1 = ddpm_alloc(dd, sizeof(double));
    double *t = ddpm_alloc(dd, sizeof(double)), *w = ddpm_alloc((size_t)d, sizeof(double));
    int rc = (!v || !s1 || !t || !w) ? DDPM_ERR_NOMEM : DDPM_OK;
    if (!rc) {
        /* sqrt(C1) = V diag(sqrt(max(w, 0))) V^T; the symmetric matrix is its own transpose, so
         * LAPACK's column-major eigenvectors are the rows of v */
        memcpy(v, cov1, dd * sizeof(double));
        rc = sym_eig(v, d, w, 1);
    }
    if (!rc) {
        /* t = rows of v scaled by sqrt(w)^(1/2): s1 = v^T diag(sqrt w) v = (D^1/2 v)^T (D^1/2 v) */
        for (int k = 0; k < d; k++) {
            const double sk = sqrt(sqrt(w[k] > 0 ? w[k] : 0.0));
            for (int j = 0; j < d; j++) t[(size_t)k * d + j] = sk * v[(size_t)k * d + j];
        }
        cblas_dgemm(CblasRowMajor, CblasTrans, CblasNoTrans, d, d, d, 1.0, t, d, t, d, 0.0, s1, d);
        /* M = S1 C2 S1 (symmetric PSD): its eigenvalues' square roots sum to tr sqrt(C1 C2) */
        cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, d, d, d, 1.0, s1, d, cov2, d, 0.0, t, d);
        cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, d, d, d, 1.0, t, d, s1, d, 0.0, v, d);
        for (int r = 0; r < d; r++) /* symmetrise the rounding */
            for (int c = 0; c < r; c++) {
                const double a = 0.5 * (v[(size_t)r * d + c] + v[(size_t)c * d + r]);
                v[(size_t)r * d + c] = v[(size_t)c * d + r] = a;
            }
        rc = sym_eig(v, d, w, 0);
    }
    if (!rc) {
        double diff = 0, tr = 0, tr_sqrt = 0;
        for (int j = 0; j < d; j++) {
            diff += (mu1[j] - mu2[j]) * (mu1[j] - mu2[j]);
            tr += cov1[(size_t)j * d + j] + cov2[(size_t)j * d + j];
            tr_sqrt += sqrt(w[j] > 0 ? w[j] : 0.0);
        }
        const double fd = diff + tr - 2.0 * tr_sqrt;
        /* rounding can take a distance of ~0 a little below it */
        *out = fd > 0 ? fd : 0.0;
    }
    free(v);
    free(s1);
    free(t);
    free(w);
    return rc;
}

int ddpm_frechet_distance(const ddpm_points *a, const ddpm_points *b, double *out) {
    int rc = check_features("Frechet distance", a, b, 2);
    if (rc) return rc;
    const size_t d = (size_t)a->dim;
    double *m1 = ddpm_alloc(d, sizeof(double)), *m2 = ddpm_alloc(d, sizeof(double));
    double *c1 = ddpm_alloc(d * d, sizeof(double)), *c2 = ddpm_alloc(d * d, sizeof(double));
    rc = (!m1 || !m2 || !c1 || !c2) ? DDPM_ERR_NOMEM : DDPM_OK;
    if (!rc) rc = ddpm_feature_stats(a, m1, c1);
    if (!rc) rc = ddpm_feature_stats(b, m2, c2);
    if (!rc) rc = ddpm_frechet_distance_stats((int)d, m1, c1, m2, c2, out);
    free(m1);
    free(m2);
    free(c1);
    free(c2);
    return rc;
}

/* ---- KID ----------------------------------------------------------------------------------- */

/* The first m of a Fisher-Yates shuffle of 0..n-1 drawn from (seed, DDPM_STREAM_EVAL, item,
 * step), into idx[m] (perm [n] is work space). */
static void subset(size_t n, size_t m, uint64_t seed, uint64_t item, uint32_t step, uint32_t *perm,
                   uint32_t *idx) {
    for (size_t i = 0; i < n; i++) perm[i] = (uint32_t)i;
    for (size_t i = 0; i < m; i++) {
        const size_t j = i + ddpm_rand_below(seed, DDPM_STREAM_EVAL, item, step + (uint32_t)(i << 2),
                                             (uint32_t)(n - i));
        const uint32_t t = perm[i];
        perm[i] = perm[j];
        perm[j] = t;
        idx[i] = perm[i];
    }
}

/* Sum of the kernel (x.y / d + 1)^3 over [m, m] gram g; with skip_diag the diagonal is left out. */
static double kernel_sum(const double *g, size_t m, int d, int skip_diag) {
    double s = 0;
    for (size_t i = 0; i < m; i++) {
        double r = 0;
        for (size_t j = 0; j < m; j++) {
            if (skip_diag && i == j) continue;
            const double k = g[i * m + j] / d + 1.0;
            r += k * k * k;
        }
        s += r;
    }
    return s;
}

int ddpm_kid(const ddpm_points *a, const ddpm_points *b, int n_subsets, size_t subset_size,
             uint64_t seed, double *mean, double *std) {
    int rc = check_features("KID", a, b, 2);
    if (rc) return rc;
    if (n_subsets < 1) n_subsets = 100;
    size_t m = subset_size ? subset_size : 1000;
    if (m > a->n) m = a->n;
    if (m > b->n) m = b->n;
    const int d = a->dim;
    const size_t nmax = a->n > b->n ? a->n : b->n;
    double *xa = ddpm_alloc(m * (size_t)d, sizeof(double)), *xb = ddpm_alloc(m * (size_t)d, sizeof(double));
    double *g = ddpm_alloc(m * m, sizeof(double)), *vals = ddpm_alloc((size_t)n_subsets, sizeof(double));
    uint32_t *perm = ddpm_alloc(nmax, sizeof(uint32_t)), *ia = ddpm_alloc(m, sizeof(uint32_t)),
             *ib = ddpm_alloc(m, sizeof(uint32_t));
    if (!xa || !xb || !g || !vals || !perm || !ia || !ib) rc = DDPM_ERR_NOMEM;
    for (int s = 0; !rc && s < n_subsets; s++) {
        /* as torch-fidelity: each subset draws m items of each set without replacement */
        subset(a->n, m, seed, (uint64_t)s, 1, perm, ia);
        subset(b->n, m, seed, (uint64_t)s, 3, perm, ib);
        for (size_t i = 0; i < m; i++)
            for (int j = 0; j < d; j++) {
                xa[i * d + j] = a->x[(size_t)ia[i] * d + j];
                xb[i * d + j] = b->x[(size_t)ib[i] * d + j];
            }
        const double mm = (double)m;
        cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)m, (int)m, d, 1.0, xa, d, xa, d, 0.0, g, (int)m);
        double v = kernel_sum(g, m, d, 1) / (mm * (mm - 1));
        cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)m, (int)m, d, 1.0, xb, d, xb, d, 0.0, g, (int)m);
        v += kernel_sum(g, m, d, 1) / (mm * (mm - 1));
        cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)m, (int)m, d, 1.0, xa, d, xb, d, 0.0, g, (int)m);
        v -= 2.0 * kernel_sum(g, m, d, 0) / (mm * mm);
        vals[s] = v;
    }
    if (!rc) {
        double mu = 0, var = 0;
        for (int s = 0; s < n_subsets; s++) mu += vals[s];
        mu /= n_subsets;
        for (int s = 0; s < n_subsets; s++) var += (vals[s] - mu) * (vals[s] - mu);
        *mean = mu;
        *std = sqrt(var / n_subsets); /* np.std, as torch-fidelity's kernel_inception_distance_std */
    }
    free(xa);
    free(xb);
    free(g);
    free(vals);
    free(perm);
    free(ia);
    free(ib);
    return rc;
}

/* ---- precision and recall (Kynkaanniemi et al. 2019) ----------------------------------------- */

#define PR_BLOCK 256 /* rows of the distance matrix computed at once */

/* Squared distances between rows [r0, r0 + nr) of x and every row of y: out [nr, ny]. */
static void sq_dists(const double *x, const double *xn, size_t r0, size_t nr, const double *y,
                     const double *yn, size_t ny, int d, double *out) {
    cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)nr, (int)ny, d, -2.0, x + r0 * d, d, y, d,
                0.0, out, (int)ny);
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < nr; i++)
        for (size_t j = 0; j < ny; j++) {
            const double v = out[i * ny + j] + xn[r0 + i] + yn[j];
            out[i * ny + j] = v > 0 ? v : 0.0;
        }
}

static double *to_double(const ddpm_points *p, double *norms) {
    const size_t n = p->n, d = (size_t)p->dim;
    double *x = ddpm_alloc(n * d, sizeof(double));
    if (!x) return NULL;
    for (size_t i = 0; i < n; i++) {
        double s = 0;
        for (size_t j = 0; j < d; j++) {
            x[i * d + j] = p->x[i * d + j];
            s += x[i * d + j] * x[i * d + j];
        }
        norms[i] = s;
    }
    return x;
}

/* The k-th smallest of v[n] (1 <= k <= n, k small: an insertion list of the k smallest). */
static double kth_smallest(const double *v, size_t n, size_t k) {
    double best[64];
    size_t have = 0;
    for (size_t i = 0; i < n; i++) {
        if (have == k && v[i] >= best[k - 1]) continue;
        size_t j = have < k ? have++ : k - 1;
        while (j > 0 && best[j - 1] > v[i]) {
            best[j] = best[j - 1];
            j--;
        }
        best[j] = v[i];
    }
    return best[k - 1];
}

/* radii[i]: the squared distance from item i of x to its k-th nearest other item of x (the
 * item itself, at distance 0, is the 0-th: the reference code's kth_value(k + 1)). */
static int knn_radii(const double *x, const double *xn, size_t n, int d, int k, double *radii,
                     double *block) {
    for (size_t r0 = 0; r0 < n; r0 += PR_BLOCK) {
        const size_t nr = n - r0 < PR_BLOCK ? n - r0 : PR_BLOCK;
        sq_dists(x, xn, r0, nr, x, xn, n, d, block);
#pragma omp parallel for schedule(static)
        for (size_t i = 0; i < nr; i++) {
            block[i * n + r0 + i] = 0.0; /* itself, exactly */
            radii[r0 + i] = kth_smallest(block + i * n, n, (size_t)k + 1);
        }
    }
    return DDPM_OK;
}

/* The fraction of items of q inside the manifold of p: within radius_p(j) of some item j of p. */
static double coverage(const double *q, const double *qn, size_t nq, const double *p,
                       const double *pn, size_t np, int d, const double *radii_p, double *block) {
    size_t inside = 0;
    for (size_t r0 = 0; r0 < nq; r0 += PR_BLOCK) {
        const size_t nr = nq - r0 < PR_BLOCK ? nq - r0 : PR_BLOCK;
        sq_dists(q, qn, r0, nr, p, pn, np, d, block);
        size_t in_block = 0;
#pragma omp parallel for schedule(static) reduction(+ : in_block)
        for (size_t i = 0; i < nr; i++) {
            int hit = 0;
            for (size_t j = 0; j < np && !hit; j++) hit = block[i * np + j] <= radii_p[j];
            in_block += (size_t)hit;
        }
        inside += in_block;
    }
    return (double)inside / (double)nq;
}

int ddpm_precision_recall(const ddpm_points *real, const ddpm_points *fake, int k,
                          double *precision, double *recall) {
    if (k < 1) k = 3;
    if (k > 62) return ddpm_fail(DDPM_ERR_INVALID, "precision/recall: k = %d, at most 62", k);
    int rc = check_features("precision/recall", real, fake, (size_t)k + 1);
    if (rc) return rc;
    const int d = real->dim;
    const size_t nr = real->n, nf = fake->n, nmax = nr > nf ? nr : nf;
    double *rn = ddpm_alloc(nr, sizeof(double)), *fn = ddpm_alloc(nf, sizeof(double));
    double *rad_r = ddpm_alloc(nr, sizeof(double)), *rad_f = ddpm_alloc(nf, sizeof(double));
    double *block = ddpm_alloc((size_t)PR_BLOCK * nmax, sizeof(double));
    double *xr = rn ? to_double(real, rn) : NULL, *xf = fn ? to_double(fake, fn) : NULL;
    if (!rn || !fn || !rad_r || !rad_f || !block || !xr || !xf) rc = DDPM_ERR_NOMEM;
    if (!rc) rc = knn_radii(xr, rn, nr, d, k, rad_r, block);
    if (!rc) rc = knn_radii(xf, fn, nf, d, k, rad_f, block);
    if (!rc) {
        *precision = coverage(xf, fn, nf, xr, rn, nr, d, rad_r, block);
        *recall = coverage(xr, rn, nr, xf, fn, nf, d, rad_f, block);
    }
    free(rn);
    free(fn);
    free(rad_r);
    free(rad_f);
    free(block);
    free(xr);
    free(xf);
    return rc;
}

/* ---- class accuracy ------------------------------------------------------------------------ */

int ddpm_class_accuracy(const int *predicted, const int *wanted, size_t n, int n_classes,
                        double *per_class, size_t *per_class_n, double *overall) {
    if (n < 1 || n_classes < 1)
        return ddpm_fail(DDPM_ERR_INVALID, "class accuracy: %zu items, %d classes", n, n_classes);
    size_t hit = 0, total = 0;
    for (int c = 0; per_class && per_class_n && c < n_classes; c++) {
        per_class[c] = 0;
        per_class_n[c] = 0;
    }
    for (size_t i = 0; i < n; i++) {
        const int y = wanted[i];
        if (y < 0 || y >= n_classes)
            return ddpm_fail(DDPM_ERR_INVALID, "class accuracy: item %zu asks for class %d, outside 0..%d",
                             i, y, n_classes - 1);
        total++;
        hit += predicted[i] == y;
        if (per_class && per_class_n) per_class[y] += predicted[i] == y;
        if (per_class && per_class_n) per_class_n[y]++;
    }
    if (per_class && per_class_n)
        for (int c = 0; c < n_classes; c++)
            per_class[c] = per_class_n[c] ? per_class[c] / (double)per_class_n[c] : NAN;
    *overall = (double)hit / (double)total;
    return DDPM_OK;
}

/* ---- all of them at once -------------------------------------------------------------------- */

int ddpm_image_quality_compute(const ddpm_points *fake, const ddpm_points *real,
                               const ddpm_image_quality_opts *o, ddpm_image_quality *q) {
    const ddpm_image_quality_opts def = {0};
    if (!o) o = &def;
    memset(q, 0, sizeof *q);
    q->n = fake ? fake->n : 0;
    q->n_ref = real ? real->n : 0;
    int rc = ddpm_frechet_distance(fake, real, &q->fd);
    if (!rc) rc = ddpm_kid(fake, real, o->kid_subsets, o->kid_subset_size, o->seed, &q->kid, &q->kid_std);
    if (!rc) rc = ddpm_precision_recall(real, fake, o->k, &q->precision, &q->recall);
    return rc;
}

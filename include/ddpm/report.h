/* ddpm/report.h - plots (cairo, PNG) and sample-quality metrics between point sets and between image features.
 * Part of the public API; include "ddpm.h" for all of it. */
#ifndef DDPM_REPORT_H
#define DDPM_REPORT_H

#include "ddpm/io.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Plots (cairo, PNG). Only the first two coordinates of each point are drawn; a 1-D point set is
 * drawn as value (y) against point index (x). Non-finite values are skipped. Text (titles,
 * labels) may contain subscripts, "_{...}", "_" + digits or "_" + one letter ("q(x_{t-1})",
 * "q(x_5)", "x_t"; "model_final" stays as is), and superscripts "^{...}". Ticks are 1-2-5 steps
 * whose labels never collide; very large or small values get a shared "x10^k" factor. Text uses
 * the "DejaVu Sans" font through fontconfig. Files are replaced atomically; an unwritable path
 * fails with DDPM_ERR_IO naming it. cairo and fontconfig keep process-wide caches
 * (~1 KB) that leak checkers report unless the program calls ddpm_release_caches at its end. */

/* Frees the plotting libraries' process-wide caches (cairo, fontconfig) so leak checkers see a
 * clean exit. Call once at the end of a program that plotted, after its last plot. */
void ddpm_release_caches(void);

/* A scatter plot of a (label_a, red) and optionally b (label_b, blue) overlaid, with equal x and
 * y scales, ticks, a title and a legend (when either label is non-NULL). width/height in pixels
 * (0 = 720); at least 200. a and b must both have dim 1 or both dim >= 2. */
int ddpm_plot_scatter(const char *png_path, const char *title, const ddpm_points *a,
                      const char *label_a, const ddpm_points *b, const char *label_b, int width,
                      int height);
/* A grid of n_panels scatter panels in rows of n_cols, each with its title (panel_titles may be
 * NULL), under an overall title (may be NULL). All panels share the same axis limits:
 * limits = {xmin, xmax, ymin, ymax} as given, or NULL for the smallest square box (5% margin)
 * around every panel's finite points. Tick labels are drawn on the left column and under the
 * last panel of each column only. panel_px is the
 * side of each panel in pixels (0 = 200; at least 80). The tutorial's forward process is 20
 * panels, n_cols 10, titled "q(x_0)", "q(x_5)", ...; its reverse process 10 panels. */
int ddpm_plot_scatter_grid(const char *png_path, const char *title, const ddpm_points *panels,
                           const char *const *panel_titles, int n_panels, int n_cols,
                           const float *limits, int panel_px);
/* A line plot of n_series series ys[k][0..n-1] against x[0..n-1] (x NULL: 0, 1, ..., n-1), e.g.
 * a loss curve and its smoothed version. labels (may be NULL, or hold NULLs) feed the legend.
 * With several series the first is drawn lighter (the raw curve under its smoothing). log_y
 * uses a base-10 y axis (values <= 0 are skipped). width/height 0 = 900 x 540. */
int ddpm_plot_lines(const char *png_path, const char *title, const char *xlabel,
                    const char *ylabel, const float *x, const float *const *ys,
                    const char *const *labels, int n_series, size_t n, int log_y, int width,
                    int height);

/* Sample-quality metrics between two point sets of the same dim (sizes may differ). Both fail
 * with DDPM_ERR_INVALID for an empty set or a dim mismatch and DDPM_ERR_NUMERIC for a NaN/inf
 * coordinate (naming the set and the point). Results do not depend on the thread count. */

/* Sliced Wasserstein-1 distance: the mean over n_projections random unit directions u_k
 * (0 = 256; normal draws (seed, DDPM_STREAM_EVAL, item k, step 0), normalised) of the exact
 * W1 distance between the projected 1-D empirical distributions, int_0^1 |F^-1 - G^-1| (for
 * equal sizes the mean |a_(i) - b_(i)| of the sorted projections). Shifting a set by s changes
 * it by |s| E|<u, s/|s|>| (2|s|/pi in 2-D). Parallel over projections (OpenMP). */
int ddpm_sliced_wasserstein(const ddpm_points *a, const ddpm_points *b, int n_projections,
                            uint64_t seed, double *out);
/* Unbiased squared MMD (Gretton et al. 2012, eq. 3) with the RBF kernel
 * k(x, y) = exp(-|x - y|^2 / (2 bandwidth^2)):
 *   mean_{i!=j} k(a_i, a_j) + mean_{i!=j} k(b_i, b_j) - 2 mean_{i,j} k(a_i, b_j).
 * Zero in expectation for two samples of one distribution, so it can be slightly negative
 * (about -1/m to 1/m); identical sets of m points give a small negative value. A set larger
 * than max_points (0 = 2000) is first subsampled without replacement (partial Fisher-Yates with
 * (seed, DDPM_STREAM_EVAL, item k, step 1 for a / 2 for b)). bandwidth <= 0 selects the median
 * heuristic: the median distance over all pairs of a pool of up to 500 evenly strided points of
 * each (subsampled) set (1 if that median is 0). *bandwidth_used (may be NULL) receives the bandwidth.
 * Needs at least 2 points per set. Parallel over rows (OpenMP); 2000 x 2000 takes ~0.1 s. */
int ddpm_mmd_rbf(const ddpm_points *a, const ddpm_points *b, double bandwidth, size_t max_points,
                 uint64_t seed, double *mmd2, double *bandwidth_used);

/* ---- image sample quality from features (src/report/image_metrics.c) ----
 * Sets of n feature vectors of dim d (a ddpm_points of dim d: e.g. the penultimate layer of the
 * classifier, ddpm_classifier_forward_eval). Everything in double, through OpenBLAS and LAPACK;
 * results do not depend on the thread count. Errors: DDPM_ERR_INVALID for too few items or a dim
 * mismatch, DDPM_ERR_NUMERIC for a non-finite feature (naming the set and the item). Every metric
 * moves with n: compare at equal n, beside the same metric between two real sets of that n. */

/* mean [d] and the unbiased covariance [d, d] (divided by n - 1, as np.cov) of n >= 2 items. */
int ddpm_feature_stats(const ddpm_points *f, double *mean, double *cov);
/* The Frechet distance between N(mu1, cov1) and N(mu2, cov2) (FID's formula):
 *   |mu1 - mu2|^2 + tr(C1) + tr(C2) - 2 tr((C1^1/2 C2 C1^1/2)^1/2),
 * the square roots from symmetric eigendecompositions (LAPACK dsyevd; negative eigenvalues of
 * rounding clamped to 0); a result below 0 by rounding is reported as 0. */
int ddpm_frechet_distance_stats(int d, const double *mu1, const double *cov1, const double *mu2,
                                const double *cov2, double *out);
/* The Frechet distance between the Gaussians fitted to a and b (n >= 2 each). */
int ddpm_frechet_distance(const ddpm_points *a, const ddpm_points *b, double *out);
/* KID (Binkowski et al. 2018, as torch-fidelity): over n_subsets (0 = 100) subsets of m =
 * min(subset_size (0 = 1000), n_a, n_b) items drawn without replacement from each set ((seed,
 * DDPM_STREAM_EVAL, item = subset)), the unbiased MMD^2 with the kernel k(x, y) = (x.y / d + 1)^3:
 *   sum_{i!=j} k(a_i, a_j) / (m (m-1)) + sum_{i!=j} k(b_i, b_j) / (m (m-1)) - 2 sum k(a_i, b_j) / m^2;
 * *mean is their mean, *std their standard deviation (np.std, torch-fidelity's kid_std). Zero in
 * expectation for two samples of one distribution, so it can be negative. */
int ddpm_kid(const ddpm_points *a, const ddpm_points *b, int n_subsets, size_t subset_size,
             uint64_t seed, double *mean, double *std);
/* Improved precision and recall (Kynkaanniemi et al. 2019) with k nearest neighbours (0 = 3,
 * at most 62): the manifold of a set is the union of balls around its items whose radius is the
 * distance to the item's k-th nearest other item; precision = the fraction of fake items inside
 * the real manifold, recall = the fraction of real items inside the fake manifold (exact
 * Euclidean distances, no subsampling: O(n^2 d)). Each set needs more than k items. */
int ddpm_precision_recall(const ddpm_points *real, const ddpm_points *fake, int k,
                          double *precision, double *recall);
/* The Frechet distance, KID and precision/recall of fake against real features in one call
 * (what `ddpm eval` prints and a training loop can log). Zeros in opts (or opts NULL) take each
 * metric's defaults: KID 100 subsets of 1000, k = 3, seed 0. */
typedef struct {
    int kid_subsets;
    size_t kid_subset_size;
    int k;
    uint64_t seed;
} ddpm_image_quality_opts;
typedef struct {
    size_t n, n_ref;      /* items of the fake and real feature sets */
    double fd;            /* Frechet distance */
    double kid, kid_std;  /* KID mean and its standard deviation over subsets */
    double precision, recall;
} ddpm_image_quality;
int ddpm_image_quality_compute(const ddpm_points *fake, const ddpm_points *real,
                               const ddpm_image_quality_opts *opts, ddpm_image_quality *out);
/* The fraction of items whose predicted class is the wanted one, overall and (per_class and
 * per_class_n [n_classes], both or neither NULL) per wanted class (NaN for a class never asked
 * for). A wanted class outside 0..n_classes-1 is DDPM_ERR_INVALID. */
int ddpm_class_accuracy(const int *predicted, const int *wanted, size_t n, int n_classes,
                        double *per_class, size_t *per_class_n, double *overall);

#ifdef __cplusplus
}
#endif
#endif /* DDPM_REPORT_H */

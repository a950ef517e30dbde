/* eval_images.c - the image half of `ddpm eval`: samples (.npy or a folder of images) against a
 * reference (Fashion-MNIST's test files, another .npy or folder) in the feature space of a
 * classifier (`ddpm classifier train`; the shipped Fashion-MNIST one by default) or, with
 * --inception, of pytorch-fid's Inception-v3 (the standard FID): N, the Frechet distance, KID,
 * precision and recall, and (classifier only) the class accuracy of conditional samples, each
 * beside its noise floor, the same metric between two disjoint real sets of the same N. */
#include "image_sets.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#ifndef DDPM_SHIPPED_CLASSIFIER
#define DDPM_SHIPPED_CLASSIFIER "models/fmnist-classifier.safetensors"
#endif

static int is_dir(const char *p) {
    struct stat st;
    return stat(p, &st) == 0 && S_ISDIR(st.st_mode);
}

int eval_is_images(const char *samples) {
    const char *dot = strrchr(samples, '.');
    return (dot && strcmp(dot, ".npy") == 0) || is_dir(samples);
}

/* Images from an .npy array: [N, C, H, W], [N, H, W] (gray) or [N, H, W, C] with C = 1 or 3
 * when the second dimension is not 1 or 3. uint8 maps 0..255 to [-1, 1]; floats are taken as
 * [-1, 1] (what `ddpm sample` writes) and clamped to it, as an 8-bit image of them would be. */
static int npy_images(const char *path, image_set *out) {
    memset(out, 0, sizeof *out);
    ddpm_npy a;
    int rc = ddpm_npy_read(path, &a);
    if (rc) return rc;
    int64_t n = 0, c = 1, h = 0, w = 0;
    int nhwc = 0;
    if (a.ndim == 3) {
        n = a.shape[0], h = a.shape[1], w = a.shape[2];
    } else if (a.ndim == 4 && (a.shape[1] == 1 || a.shape[1] == 3)) {
        n = a.shape[0], c = a.shape[1], h = a.shape[2], w = a.shape[3];
    } else if (a.ndim == 4 && (a.shape[3] == 1 || a.shape[3] == 3)) {
        n = a.shape[0], h = a.shape[1], w = a.shape[2], c = a.shape[3], nhwc = 1;
    } else {
        ddpm_npy_free(&a);
        return ddpm_fail(DDPM_ERR_INVALID, "%s: not an array of images (N x C x H x W with C = 1 or 3, N x H x W, or N x H x W x C)", path);
    }
    const int u8 = strcmp(a.dtype, "u1") == 0;
    if (!u8 && a.dtype[0] != 'f') {
        rc = ddpm_fail(DDPM_ERR_INVALID, "%s: dtype %s; images must be uint8 or float", path, a.dtype);
        ddpm_npy_free(&a);
        return rc;
    }
    if (n > INT32_MAX || h > 65536 || w > 65536) {
        ddpm_npy_free(&a);
        return ddpm_fail(DDPM_ERR_INVALID, "%s: too large", path);
    }
    float *v = malloc(sizeof(float) * (a.numel ? a.numel : 1));
    out->x = malloc(sizeof(float) * (a.numel ? a.numel : 1));
    if (!v || !out->x) rc = ddpm_fail(DDPM_ERR_NOMEM, "out of memory");
    if (!rc) rc = ddpm_npy_to_f32(&a, v);
    size_t clamped = 0;
    for (size_t i = 0; !rc && i < a.numel; i++) {
        float x = u8 ? v[i] / 127.5f - 1.0f : v[i];
        if (!isfinite(x)) {
            rc = ddpm_fail(DDPM_ERR_INVALID, "%s: a non-finite value at element %zu", path, i);
            break;
        }
        if (x < -1.0f || x > 1.0f) clamped++, x = x < -1.0f ? -1.0f : 1.0f;
        /* NHWC to NCHW */
        size_t dst = i;
        if (nhwc) {
            const size_t ch = i % (size_t)c, p = i / (size_t)c, hw = (size_t)h * w;
            dst = (p / hw) * hw * c + ch * hw + p % hw;
        }
        out->x[dst] = x;
    }
    if (!rc && clamped)
        printf("  %s: %zu of %zu values outside [-1, 1] clamped (%.2g%%)\n", path, clamped, a.numel,
               100.0 * clamped / a.numel);
    out->n = (int)n, out->c = (int)c, out->h = (int)h, out->w = (int)w;
    snprintf(out->split_desc, sizeof out->split_desc, "%s", path);
    free(v);
    ddpm_npy_free(&a);
    if (rc) image_set_free(out);
    return rc;
}

/* Samples or a reference: fashion-mnist (test files), .npy, or a folder (read at size x size
 * with `channels`: the classifier's; classes from sub-folders, if any). */
static int load_images(const char *src, int size, int channels, image_set *out) {
    const char *dot = strrchr(src, '.');
    if (dot && strcmp(dot, ".npy") == 0) return npy_images(src, out);
    if (strcmp(src, "fashion-mnist") == 0 || is_dir(src)) {
        int rc = image_set_load(src, SPLIT_ALL, 0, size, channels, NULL, out);
        if (!rc && is_dir(src))
            printf("  %s: %d images read at %dx%d, %d channel%s\n", src, out->n, size, size,
                   channels, channels > 1 ? "s" : "");
        return rc;
    }
    return ddpm_fail(DDPM_ERR_INVALID, "%s: not images (an .npy array, a folder of images, or fashion-mnist)", src);
}

/* --inception: samples and reference of any sizes. A folder is read in RGB at --image-size, or
 * at the size of the other set when that is an .npy or fashion-mnist (the network resizes
 * everything to 299 x 299 anyway). fake may already hold the samples (an .npy). */
static int inception_sets(const char *samples, const char **ref, int size, image_set *fake,
                          image_set *real) {
    if (!*ref) {
        if (!(fake->x && fake->c == 1 && fake->h == 28 && fake->w == 28))
            return ddpm_fail(DDPM_ERR_INVALID, "--ref is required with --inception (the default, "
                             "fashion-mnist, is for 28x28 gray samples)");
        *ref = "fashion-mnist";
    }
    int rc;
    if (!is_dir(*ref) && (rc = load_images(*ref, 0, 3, real))) return rc;
    if (!size) size = fake->x ? fake->h : real->x ? real->h : 0;
    if (!size)
        return ddpm_fail(DDPM_ERR_INVALID, "--image-size S is needed to read two folders for --inception");
    if (!fake->x && (rc = load_images(samples, size, 3, fake))) return rc;
    if (!real->x && (rc = load_images(*ref, size, 3, real))) return rc;
    return DDPM_OK;
}

/* The classifier (--features, $DDPM_CLASSIFIER, or the shipped one for 28x28 gray samples), the
 * samples (unless fake holds them already) and the reference, at its size and channels. */
static int classifier_sets(const char *samples, const char **ref, const char **cls_path,
                           ddpm_model **cls, ddpm_safetensors *meta, image_set *fake,
                           image_set *real) {
    if (!*cls_path) {
        const char *env = getenv("DDPM_CLASSIFIER");
        if (fake->x && !(fake->c == 1 && fake->h == 28 && fake->w == 28))
            return ddpm_fail(DDPM_ERR_INVALID, "%s: images are %dx%dx%d; the shipped classifier takes 1x28x28 (Fashion-MNIST): give --features CLS.safetensors (ddpm classifier train) or --inception FILE",
                             samples, fake->c, fake->h, fake->w);
        *cls_path = env && *env ? env : DDPM_SHIPPED_CLASSIFIER;
    }
    int rc = ddpm_classifier_load(*cls_path, cls, meta);
    if (rc) return rc;
    const ddpm_model *m = *cls;
    if (!fake->x && (rc = load_images(samples, m->height, m->channels, fake))) return rc;
    if (fake->c != m->channels || fake->h != m->height || fake->w != m->width)
        return ddpm_fail(DDPM_ERR_INVALID, "%s: images are %dx%dx%d, the classifier %s takes %dx%dx%d",
                         samples, fake->c, fake->h, fake->w, *cls_path, m->channels, m->height, m->width);
    if (!*ref) {
        if (!(m->channels == 1 && m->height == 28))
            return ddpm_fail(DDPM_ERR_INVALID, "--ref is required (the default, fashion-mnist, is 28x28 gray; %s takes %dx%dx%d)",
                             *cls_path, m->channels, m->height, m->width);
        *ref = "fashion-mnist";
    }
    if ((rc = load_images(*ref, m->height, m->channels, real))) return rc;
    if (real->c != m->channels || real->h != m->height || real->w != m->width)
        return ddpm_fail(DDPM_ERR_INVALID, "%s: reference images are %dx%dx%d, the classifier %s takes %dx%dx%d",
                         *ref, real->c, real->h, real->w, *cls_path, m->channels, m->height, m->width);
    return DDPM_OK;
}

/* The features [n, F] of n images [n, c, h, w] in [-1, 1], and with a classifier each one's
 * predicted class (pred may be NULL). */
static int set_features(ddpm_model *cls, ddpm_inception *inc, const float *x, int n, int c, int h,
                        int w, float *f, int *pred) {
    if (inc) return ddpm_inception_features(inc, x, (size_t)n, c, h, w, 1, f);
    return ddpm_classifier_run(cls, x, (size_t)n, f, pred);
}

/* Wanted classes from --labels: [N] integers or [N, K] one-hot rows. */
static int read_wanted(const char *path, int n, int K, int *wanted) {
    ddpm_npy a;
    int rc = ddpm_npy_read(path, &a);
    if (rc) return rc;
    const int rows = a.ndim >= 1 ? (int)a.shape[0] : 0;
    const int cols = a.ndim == 2 ? (int)a.shape[1] : 1;
    float *v = NULL;
    if (!(a.ndim == 1 || (a.ndim == 2 && (cols == 1 || cols == K))) || rows != n)
        rc = ddpm_fail(DDPM_ERR_INVALID, "%s: expected %d class labels ([%d] or [%d, %d] one-hot), got %s array of %d rows",
                       path, n, n, n, K, a.ndim == 2 ? "a 2-D" : a.ndim == 1 ? "a 1-D" : "an", rows);
    if (!rc && !(v = malloc(sizeof(float) * (a.numel ? a.numel : 1)))) rc = ddpm_fail(DDPM_ERR_NOMEM, "out of memory");
    if (!rc) rc = ddpm_npy_to_f32(&a, v);
    for (int i = 0; !rc && i < n; i++) {
        if (cols == K && cols > 1) {
            int k = -1, ones = 0;
            for (int j = 0; j < K; j++) {
                const float x = v[(size_t)i * K + j];
                if (x == 1.0f) k = j, ones++;
                else if (x != 0.0f) ones = 2;
            }
            if (ones != 1) rc = ddpm_fail(DDPM_ERR_INVALID, "%s: row %d is not one-hot", path, i);
            wanted[i] = k;
        } else {
            const float x = v[i];
            if (!(x >= 0 && x < K && x == floorf(x)))
                rc = ddpm_fail(DDPM_ERR_INVALID, "%s: label %g of item %d is not a class 0..%d", path, x, i, K - 1);
            wanted[i] = (int)x;
        }
    }
    free(v);
    ddpm_npy_free(&a);
    return rc;
}

/* rows idx[0..n) of s into a new image buffer */
static float *gather(const image_set *s, const uint32_t *idx, int n) {
    const size_t d = (size_t)s->c * s->h * s->w;
    float *x = malloc(sizeof(float) * d * (size_t)(n ? n : 1));
    if (!x) return NULL;
    for (int i = 0; i < n; i++) memcpy(x + (size_t)i * d, s->x + (size_t)idx[i] * d, sizeof(float) * d);
    return x;
}

static void print_row(const char *name, const ddpm_image_quality *q, const ddpm_image_quality *f, int which) {
    double a = 0, b = 0, ae = 0, be = 0;
    switch (which) {
    case 0: a = q->fd, b = f->fd; break;
    case 1: a = q->kid, b = f->kid, ae = q->kid_std, be = f->kid_std; break;
    case 2: a = q->precision, b = f->precision; break;
    default: a = q->recall, b = f->recall; break;
    }
    if (which == 1) {
        char x[64], y[64];
        snprintf(x, sizeof x, "%.5f +- %.5f", a, ae);
        snprintf(y, sizeof y, "%.5f +- %.5f", b, be);
        printf("%-20s %-26s %s\n", name, x, y);
    } else {
        printf("%-20s %-26.4f %.4f\n", name, a, b);
    }
}

int eval_images(int argc, char **argv) {
    const char *samples = NULL, *ref = NULL, *features = NULL, *labels = NULL, *inception = NULL;
    int n_max = 0, per_class = 0, kid_subsets = 100, kid_size = 0, k = 3, image_size = 0;
    uint64_t seed = 0;
    const cli_opt opts[] = {
        {"samples", CLI_STRING, &samples, "FILE.npy|DIR", "the images to measure: N x C x H x W .npy (floats in [-1, 1] or uint8) or a folder", NULL},
        {"ref", CLI_STRING, &ref, "SOURCE", "reference images: fashion-mnist (its test files; default for 28x28 gray), FILE.npy or a folder", NULL},
        {"features", CLI_STRING, &features, "CLS.safetensors", "the classifier whose features are compared (default for 28x28 gray: the shipped Fashion-MNIST one)", NULL},
        {"inception", CLI_STRING, &inception, "FILE", "compare in the features of pytorch-fid's Inception-v3 (the standard FID): its weights pt_inception-2015-12-05-6726825d.pth or a safetensors copy", NULL},
        {"image-size", CLI_INT, &image_size, "S", "with --inception: the size folders are read at (default: that of the other set, an .npy or fashion-mnist)", NULL, 1, 4096},
        {"labels", CLI_STRING, &labels, "FILE.npy", "the class each sample was asked for ([N] or one-hot [N, K]): class accuracy", NULL},
        {"per-class", CLI_INT, &per_class, "K", "the samples are K per class in class order (ddpm sample --per-class K): class accuracy", NULL, 1, 1000000},
        {"n", CLI_INT, &n_max, "N", "use the first N samples (default all; at most half the reference)", NULL, 0, 10000000},
        {"kid-subsets", CLI_INT, &kid_subsets, "S", "KID subsets (default 100)", NULL, 1, 100000},
        {"kid-size", CLI_INT, &kid_size, "M", "KID subset size (default min(1000, N / 2), so that the subsets differ and their spread means something)", NULL, 2, 10000000},
        {"k", CLI_INT, &k, "K", "nearest neighbours of precision/recall (default 3)", NULL, 1, 62},
        {"seed", CLI_U64, &seed, "S", "seed of the reference split and KID's subsets (default 0)", NULL},
    };
    int rc = cli_parse("eval",
                       "Images: the Frechet distance of a classifier's penultimate features (with --inception: of "
                       "pytorch-fid's Inception-v3, the standard FID), KID, "
                       "precision/recall and class accuracy of samples against real images, each "
                       "beside its noise floor (the same metric between two disjoint real sets of "
                       "the same N).",
                       argc, argv, opts, (int)(sizeof opts / sizeof opts[0]));
    if (rc) return rc < 0 ? 0 : rc;
    if (!samples) return cli_usage_error("eval", "--samples FILE.npy|DIR is required for images");
    if (labels && per_class) return cli_usage_error("eval", "give --labels or --per-class, not both");
    if (inception && features) return cli_usage_error("eval", "give --features or --inception, not both");
    if (inception && (labels || per_class))
        return cli_usage_error("eval", "--labels and --per-class need a classifier's classes (--features), not --inception");
    if (image_size && !inception) return cli_usage_error("eval", "--image-size is for --inception (folders are read at the classifier's size)");
    image_set fake = {0}, real = {0};
    ddpm_model *cls = NULL;
    ddpm_inception *inc = NULL;
    ddpm_safetensors meta = {0};
    int *wanted = NULL, *pred = NULL, *pred_r = NULL;
    uint32_t *perm = NULL;
    float *fx = NULL, *ra = NULL, *rb = NULL;
    float *ff = NULL, *fa = NULL, *fb = NULL;
    const char *cls_path = features;
    /* the samples first (their shape picks the default classifier) */
    if (eval_is_images(samples) && strrchr(samples, '.') && strcmp(strrchr(samples, '.'), ".npy") == 0) {
        if ((rc = npy_images(samples, &fake))) goto done;
    }
    if (inception) {
        if ((rc = ddpm_inception_load(inception, &inc)) ||
            (rc = inception_sets(samples, &ref, image_size, &fake, &real)))
            goto done;
    } else if ((rc = classifier_sets(samples, &ref, &cls_path, &cls, &meta, &fake, &real))) {
        goto done;
    }
    int n = fake.n;
    if (n_max > 0 && n_max < n) n = n_max;
    if (n < k + 1 || n < 2) {
        rc = ddpm_fail(DDPM_ERR_INVALID, "%s: %d image%s; the metrics need at least %d", samples, n, n == 1 ? "" : "s", k + 1 > 2 ? k + 1 : 2);
        goto done;
    }
    if (2 * n > real.n) {
        const int nn = real.n / 2;
        if (nn < k + 1) {
            rc = ddpm_fail(DDPM_ERR_INVALID, "%s: %d reference images are too few for two disjoint sets", ref, real.n);
            goto done;
        }
        printf("note: the reference has %d images: N = %d (two disjoint real sets of N for the noise floor)\n", real.n, nn);
        n = nn;
    }
    /* class accuracy: the classes asked for */
    const int K = cls ? cls->n_classes : 0;
    const int folder_classes = cls && fake.labels && fake.n_classes > 0; /* class sub-folders */
    if (labels || per_class || folder_classes) {
        if (!(wanted = malloc(sizeof(int) * (size_t)fake.n))) { rc = ddpm_fail(DDPM_ERR_NOMEM, "out of memory"); goto done; }
        if (labels) rc = read_wanted(labels, fake.n, K, wanted);
        else if (per_class) {
            for (int i = 0; i < fake.n; i++) wanted[i] = i / per_class;
            if (wanted[n - 1] >= K) /* only the N measured count */
                rc = ddpm_fail(DDPM_ERR_INVALID, "--per-class %d: %d samples are %d classes, the classifier has %d",
                               per_class, n, (n + per_class - 1) / per_class, K);
        } else {
            for (int i = 0; i < fake.n; i++) wanted[i] = fake.labels[i];
            if (fake.n_classes > K)
                rc = ddpm_fail(DDPM_ERR_INVALID, "%s: %d class folders, the classifier has %d classes", samples, fake.n_classes, K);
        }
        if (rc) goto done;
    }
    /* two disjoint real sets of N: the reference for the samples and for the floor */
    if (!(perm = malloc(sizeof(uint32_t) * (size_t)real.n))) { rc = ddpm_fail(DDPM_ERR_NOMEM, "out of memory"); goto done; }
    for (int i = 0; i < real.n; i++) perm[i] = (uint32_t)i;
    for (int i = real.n - 1; i > 0; i--) {
        const uint32_t j = ddpm_rand_below(seed, DDPM_STREAM_EVAL, (uint64_t)i, 7, (uint32_t)(i + 1));
        const uint32_t t = perm[i];
        perm[i] = perm[j], perm[j] = t;
    }
    const int F = inc ? ddpm_inception_feature_dim(inc) : ddpm_classifier_feature_dim(cls);
    ra = gather(&real, perm, n);
    rb = gather(&real, perm + n, n);
    ff = malloc(sizeof(float) * (size_t)n * F);
    fa = malloc(sizeof(float) * (size_t)n * F);
    fb = malloc(sizeof(float) * (size_t)n * F);
    pred = malloc(sizeof(int) * (size_t)n);
    pred_r = malloc(sizeof(int) * (size_t)n);
    if (!ra || !rb || !ff || !fa || !fb || !pred || !pred_r) { rc = ddpm_fail(DDPM_ERR_NOMEM, "out of memory"); goto done; }
    const char *acc = ddpm_safetensors_meta(&meta, "test_accuracy");
    printf("samples    %s: %d images %dx%dx%d%s\n", samples, n, fake.c, fake.h, fake.w,
           n < fake.n ? " (the first N)" : "");
    printf("reference  %s: two disjoint random sets of %d of its %d images (seed %llu)\n",
           strcmp(ref, "fashion-mnist") == 0 ? "Fashion-MNIST test (t10k) files" : ref, n, real.n,
           (unsigned long long)seed);
    if (inc) {
        printf("features   %s: Inception-v3 of pytorch-fid (%zu conv weights), %d-d pool features of "
               "the images resized to 299x299 (%.0f MB for chunks of %d)\n",
               inception, ddpm_inception_weight_count(inc), F,
               ddpm_inception_memory(inc, DDPM_INCEPTION_CHUNK) / 1048576.0, DDPM_INCEPTION_CHUNK);
        fflush(stdout);
    } else {
        printf("features   %s: %d-d penultimate layer (classifier test accuracy %s)\n", cls_path, F, acc ? acc : "not stored");
    }
    if ((rc = set_features(cls, inc, fake.x, n, fake.c, fake.h, fake.w, ff, pred)) ||
        (rc = set_features(cls, inc, ra, n, real.c, real.h, real.w, fa, NULL)) ||
        (rc = set_features(cls, inc, rb, n, real.c, real.h, real.w, fb, pred_r)))
        goto done;
    ddpm_points pf = {.x = ff, .n = (size_t)n, .dim = F}, pa = {.x = fa, .n = (size_t)n, .dim = F},
                pb = {.x = fb, .n = (size_t)n, .dim = F};
    if (kid_size <= 0 || kid_size > n) kid_size = n / 2 < 1000 ? (n / 2 > 2 ? n / 2 : 2) : 1000;
    ddpm_image_quality_opts qo = {.kid_subsets = kid_subsets, .kid_subset_size = (size_t)kid_size, .k = k, .seed = seed};
    ddpm_image_quality q, fl;
    if ((rc = ddpm_image_quality_compute(&pf, &pa, &qo, &q)) || (rc = ddpm_image_quality_compute(&pb, &pa, &qo, &fl)))
        goto done;
    printf("\n%-20s %-26s %s\n", "metric", "samples vs real", "noise floor (real vs real)");
    printf("%-20s %-26d %d\n", "N", n, n);
    print_row(inc ? "FID (Inception)" : "FD (features)", &q, &fl, 0);
    char kname[48];
    snprintf(kname, sizeof kname, "KID +- sd (%dx%d)", kid_subsets, kid_size);
    print_row(kname, &q, &fl, 1);
    snprintf(kname, sizeof kname, "precision (k=%d)", k);
    print_row(kname, &q, &fl, 2);
    snprintf(kname, sizeof kname, "recall (k=%d)", k);
    print_row(kname, &q, &fl, 3);
    if (wanted) {
        double *per = calloc((size_t)K, sizeof(double)), *per_r = calloc((size_t)K, sizeof(double)), a = 0, ar = NAN;
        size_t *cnt = calloc((size_t)K, sizeof(size_t)), *cnt_r = calloc((size_t)K, sizeof(size_t));
        int *lab_r = real.labels ? malloc(sizeof(int) * (size_t)n) : NULL;
        if (!per || !per_r || !cnt || !cnt_r || (real.labels && !lab_r)) rc = ddpm_fail(DDPM_ERR_NOMEM, "out of memory");
        if (!rc) rc = ddpm_class_accuracy(pred, wanted, (size_t)n, K, per, cnt, &a);
        if (!rc && lab_r) {
            for (int i = 0; i < n; i++) lab_r[i] = real.labels[perm[n + i]];
            rc = ddpm_class_accuracy(pred_r, lab_r, (size_t)n, K, per_r, cnt_r, &ar);
        }
        if (!rc) {
            char r[32] = "(no labels)";
            if (lab_r) snprintf(r, sizeof r, "%.4f", ar);
            printf("%-20s %-26.4f %s (real images, their labels)\n", "class accuracy", a, r);
            for (int c = 0; c < K; c++) {
                if (!cnt[c]) continue;
                char name[32], v[48];
                snprintf(name, sizeof name, "  class %d", c);
                snprintf(v, sizeof v, "%.4f (%zu)", per[c], cnt[c]);
                if (lab_r && cnt_r[c]) snprintf(r, sizeof r, "%.4f (%zu)", per_r[c], cnt_r[c]);
                else snprintf(r, sizeof r, "-");
                printf("%-20s %-26s %s\n", name, v, r);
            }
        }
        free(per), free(per_r), free(cnt), free(cnt_r), free(lab_r);
    }
done:
    image_set_free(&fake);
    image_set_free(&real);
    ddpm_model_free(cls);
    ddpm_inception_free(inc);
    ddpm_safetensors_free(&meta);
    free(wanted), free(pred), free(pred_r), free(perm), free(fx), free(ra), free(rb), free(ff), free(fa), free(fb);
    return cli_fail("eval", rc);
}

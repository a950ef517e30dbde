/* datasets.c - image datasets as float32 [N, C, H, W] in [-1, 1]: Fashion-MNIST (IDX files, gzip'd
 * or not), a folder of images, NumPy arrays; and the random horizontal flip augmentation. */
#include "core/internal.h"

#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <sys/stat.h>
#include <zlib.h>

void ddpm_dataset_free(ddpm_image_dataset *d) {
    if (!d) return;
    free(d->x);
    free(d->cond);
    free(d->labels);
    if (d->class_names)
        for (int i = 0; i < d->n_classes; i++) free(d->class_names[i]);
    free(d->class_names);
    memset(d, 0, sizeof *d);
}

/* Allocates x [n, c, h, w]. */
static int dataset_alloc(ddpm_image_dataset *d, int n, int c, int h, int w) {
    d->n = n;
    d->c = c;
    d->h = h;
    d->w = w;
    size_t numel = ddpm_size_mul(ddpm_size_mul((size_t)n, (size_t)c), (size_t)h * (size_t)w);
    d->x = ddpm_alloc(numel, sizeof(float));
    return d->x ? DDPM_OK : DDPM_ERR_NOMEM;
}

/* Given d->labels [n] and n_classes, fills cond with the one-hot rows (zero rows for -1). */
static int dataset_onehot(ddpm_image_dataset *d, int n_classes) {
    d->n_classes = n_classes;
    d->cond_dim = n_classes;
    d->cond = ddpm_alloc(ddpm_size_mul((size_t)d->n, (size_t)n_classes), sizeof(float));
    if (!d->cond) return DDPM_ERR_NOMEM;
    for (int i = 0; i < d->n; i++)
        if (d->labels[i] >= 0) d->cond[(size_t)i * n_classes + d->labels[i]] = 1.0f;
    return DDPM_OK;
}

/* Class names "0", "1", ... */
static int dataset_numeric_names(ddpm_image_dataset *d) {
    d->class_names = ddpm_alloc((size_t)d->n_classes, sizeof(char *));
    if (!d->class_names) return DDPM_ERR_NOMEM;
    for (int i = 0; i < d->n_classes; i++) {
        char buf[16];
        snprintf(buf, sizeof buf, "%d", i);
        if (!(d->class_names[i] = strdup(buf))) return ddpm_fail(DDPM_ERR_NOMEM, "out of memory");
    }
    return DDPM_OK;
}

/* ------------------------------------------------------------------------------------------ */
/* Fashion-MNIST: IDX files                                                                     */
/* ------------------------------------------------------------------------------------------ */

static const char *const FASHION_NAMES[10] = {"T-shirt/top", "Trouser", "Pullover", "Dress",
                                              "Coat",        "Sandal",  "Shirt",    "Sneaker",
                                              "Bag",         "Ankle boot"};

/* Opens dir/base.gz or else dir/base (gzread reads uncompressed files as they are). */
static int idx_open(const char *dir, const char *base, int default_dir, char *path, size_t cap,
                    gzFile *out, uint64_t *file_size) {
    *out = NULL;
    struct stat st;
    snprintf(path, cap, "%s/%s.gz", dir, base);
    if (stat(path, &st) != 0) {
        snprintf(path, cap, "%s/%s", dir, base);
        if (stat(path, &st) != 0)
            return ddpm_fail(DDPM_ERR_IO, "%s: no %s.gz or %s: %s%s", dir, base, base,
                             strerror(errno),
                             default_dir ? " (install Debian's dataset-fashion-mnist package)"
                                         : "");
    }
    if (!S_ISREG(st.st_mode)) return ddpm_fail(DDPM_ERR_IO, "%s: not a regular file", path);
    gzFile f = gzopen(path, "rb");
    if (!f) return ddpm_fail(DDPM_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    *out = f;
    *file_size = (uint64_t)st.st_size;
    return DDPM_OK;
}

/* The most bytes an IDX file of file_size bytes can hold after its header: the rest of the file
 * if it is stored plainly, else what deflate's best ratio (1032:1) could expand it to. Checked
 * before allocating, so a 60-byte file cannot ask for 56 GB. */
static uint64_t idx_capacity(gzFile f, uint64_t file_size, uint64_t header) {
    if (gzdirect(f)) return file_size > header ? file_size - header : 0;
    return file_size * 1032;
}

/* Reads exactly n bytes; an error names the file (truncated or corrupt). */
static int idx_read(gzFile f, const char *path, void *buf, size_t n, const char *what) {
    unsigned char *p = buf;
    size_t got = 0;
    while (got < n) {
        unsigned chunk = n - got > (1u << 30) ? (1u << 30) : (unsigned)(n - got);
        int r = gzread(f, p + got, chunk);
        if (r < 0) {
            int errnum;
            const char *msg = gzerror(f, &errnum);
            return ddpm_fail(DDPM_ERR_FORMAT, "%s: corrupt file reading %s: %s", path, what,
                             errnum == Z_ERRNO ? strerror(errno) : msg);
        }
        if (r == 0) break;
        got += (size_t)r;
    }
    if (got < n)
        return ddpm_fail(DDPM_ERR_FORMAT, "%s: truncated: %s needs %zu bytes, found %zu", path,
                         what, n, got);
    return DDPM_OK;
}

static uint32_t be32(const unsigned char *p) {
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/* Fails unless the file has nothing after the expected data. */
static int idx_expect_end(gzFile f, const char *path) {
    unsigned char extra;
    int r = gzread(f, &extra, 1);
    if (r < 0) {
        int errnum;
        const char *msg = gzerror(f, &errnum);
        return ddpm_fail(DDPM_ERR_FORMAT, "%s: corrupt file: %s", path, msg);
    }
    if (r > 0)
        return ddpm_fail(DDPM_ERR_FORMAT, "%s: unexpected data after the announced items", path);
    return DDPM_OK;
}

int ddpm_dataset_fashion_mnist(const char *dir, int train, int max_items, ddpm_image_dataset *out) {
    memset(out, 0, sizeof *out);
    const int default_dir = dir == NULL;
    if (!dir) dir = DDPM_FASHION_MNIST_DIR;
    if (max_items < 0) return ddpm_fail(DDPM_ERR_INVALID, "max_items %d < 0", max_items);
    const char *prefix = train ? "train" : "t10k";
    char ipath[4096], lpath[4096], base[64];
    gzFile fi = NULL, fl = NULL;
    unsigned char hdr[16], chunk[64 * 1024];
    unsigned char *lab = NULL;
    snprintf(base, sizeof base, "%s-images-idx3-ubyte", prefix);
    uint64_t isize = 0, lsize = 0;
    int rc = idx_open(dir, base, default_dir, ipath, sizeof ipath, &fi, &isize);
    if (rc) goto done;
    snprintf(base, sizeof base, "%s-labels-idx1-ubyte", prefix);
    rc = idx_open(dir, base, default_dir, lpath, sizeof lpath, &fl, &lsize);
    if (rc) goto done;
    if ((rc = idx_read(fi, ipath, hdr, 16, "the IDX header"))) goto done;
    if (be32(hdr) != 0x00000803) {
        rc = ddpm_fail(DDPM_ERR_FORMAT,
                       "%s: bad IDX magic 0x%08x, expected 0x00000803 (3-D unsigned byte images)",
                       ipath, be32(hdr));
        goto done;
    }
    const uint32_t n = be32(hdr + 4), rows = be32(hdr + 8), cols = be32(hdr + 12);
    if (n == 0 || n > INT32_MAX || rows == 0 || cols == 0 || rows > 4096 || cols > 4096) {
        rc = ddpm_fail(DDPM_ERR_FORMAT, "%s: implausible IDX dimensions %u x %u x %u", ipath, n,
                       rows, cols);
        goto done;
    }
    if ((uint64_t)n * rows * cols > idx_capacity(fi, isize, 16)) {
        rc = ddpm_fail(DDPM_ERR_FORMAT,
                       "%s: the header announces %u images of %u x %u pixels, more than the "
                       "%llu-byte file can hold",
                       ipath, n, rows, cols, (unsigned long long)isize);
        goto done;
    }
    if ((rc = idx_read(fl, lpath, hdr, 8, "the IDX header"))) goto done;
    if (be32(hdr) != 0x00000801) {
        rc = ddpm_fail(DDPM_ERR_FORMAT,
                       "%s: bad IDX magic 0x%08x, expected 0x00000801 (1-D unsigned byte labels)",
                       lpath, be32(hdr));
        goto done;
    }
    if ((uint64_t)n > idx_capacity(fl, lsize, 8)) {
        rc = ddpm_fail(DDPM_ERR_FORMAT,
                       "%s: the header announces %u labels, more than the %llu-byte file can hold",
                       lpath, n, (unsigned long long)lsize);
        goto done;
    }
    if (be32(hdr + 4) != n) {
        rc = ddpm_fail(DDPM_ERR_FORMAT, "%s has %u labels but %s has %u images", lpath,
                       be32(hdr + 4), ipath, n);
        goto done;
    }
    const int count = max_items > 0 && (uint32_t)max_items < n ? max_items : (int)n;
    if ((rc = dataset_alloc(out, count, 1, (int)rows, (int)cols))) goto done;
    /* Pixels, in chunks: u8 v -> v / 127.5 - 1. */
    const size_t total = (size_t)count * rows * cols;
    for (size_t off = 0; off < total;) {
        size_t len = total - off < sizeof chunk ? total - off : sizeof chunk;
        if ((rc = idx_read(fi, ipath, chunk, len, "the pixels"))) {
            char msg[512];
            snprintf(msg, sizeof msg, "%s", ddpm_last_error());
            rc = ddpm_fail(rc, "%s (the header announces %u images of %ux%u)", msg, n, rows, cols);
            goto done;
        }
        for (size_t i = 0; i < len; i++) out->x[off + i] = chunk[i] / 127.5f - 1.0f;
        off += len;
    }
    if (count == (int)n && (rc = idx_expect_end(fi, ipath))) goto done;
    lab = malloc((size_t)count);
    out->labels = ddpm_alloc((size_t)count, sizeof(int));
    if (!lab || !out->labels) {
        rc = ddpm_fail(DDPM_ERR_NOMEM, "out of memory");
        goto done;
    }
    if ((rc = idx_read(fl, lpath, lab, (size_t)count, "the labels"))) goto done;
    if (count == (int)n && (rc = idx_expect_end(fl, lpath))) goto done;
    for (int i = 0; i < count; i++) {
        if (lab[i] > 9) {
            rc = ddpm_fail(DDPM_ERR_FORMAT, "%s: label %d of item %d is outside 0..9", lpath,
                           lab[i], i);
            goto done;
        }
        out->labels[i] = lab[i];
    }
    if ((rc = dataset_onehot(out, 10))) goto done;
    out->class_names = ddpm_alloc(10, sizeof(char *));
    if (!out->class_names) {
        rc = DDPM_ERR_NOMEM;
        goto done;
    }
    for (int i = 0; i < 10; i++)
        if (!(out->class_names[i] = strdup(FASHION_NAMES[i]))) {
            rc = ddpm_fail(DDPM_ERR_NOMEM, "out of memory");
            goto done;
        }
done:
    if (fi) gzclose(fi);
    if (fl) gzclose(fl);
    free(lab);
    if (rc) ddpm_dataset_free(out);
    return rc;
}

/* ------------------------------------------------------------------------------------------ */
/* A folder of images                                                                           */
/* ------------------------------------------------------------------------------------------ */

typedef struct {
    char **paths; /* relative to the root */
    size_t n, cap;
} path_list;

static void path_list_free(path_list *l) {
    for (size_t i = 0; i < l->n; i++) free(l->paths[i]);
    free(l->paths);
    memset(l, 0, sizeof *l);
}

static int path_list_add(path_list *l, const char *s) {
    if (l->n == l->cap) {
        size_t cap = l->cap ? 2 * l->cap : 64;
        char **np = realloc(l->paths, cap * sizeof *np);
        if (!np) return ddpm_fail(DDPM_ERR_NOMEM, "out of memory listing images");
        l->paths = np;
        l->cap = cap;
    }
    if (!(l->paths[l->n] = strdup(s))) return ddpm_fail(DDPM_ERR_NOMEM, "out of memory");
    l->n++;
    return DDPM_OK;
}

/* Appends every image file under root/rel (rel "" for root itself). */
static int collect_images(const char *root, const char *rel, int depth, path_list *l) {
    if (depth > 64) return ddpm_fail(DDPM_ERR_INVALID, "%s/%s: directories nested too deeply "
                                     "(a symbolic link loop?)", root, rel);
    char dpath[4096];
    snprintf(dpath, sizeof dpath, "%s%s%s", root, rel[0] ? "/" : "", rel);
    DIR *dh = opendir(dpath);
    if (!dh) return ddpm_fail(DDPM_ERR_IO, "%s: cannot open directory: %s", dpath, strerror(errno));
    int rc = DDPM_OK;
    struct dirent *e;
    while (!rc && (e = readdir(dh)) != NULL) {
        if (e->d_name[0] == '.') continue; /* ., .., hidden files, macOS ._ files */
        char sub[4096], full[4096];
        int k1 = snprintf(sub, sizeof sub, "%s%s%s", rel, rel[0] ? "/" : "", e->d_name);
        int k2 = snprintf(full, sizeof full, "%s/%s", root, sub);
        if (k1 >= (int)sizeof sub || k2 >= (int)sizeof full) {
            rc = ddpm_fail(DDPM_ERR_INVALID, "%s/%s: path too long", dpath, e->d_name);
            break;
        }
        struct stat st;
        if (stat(full, &st) != 0) continue; /* a dangling link */
        if (S_ISDIR(st.st_mode)) rc = collect_images(root, sub, depth + 1, l);
        else if (S_ISREG(st.st_mode) && ddpm_image_ext_supported(e->d_name))
            rc = path_list_add(l, sub);
    }
    closedir(dh);
    return rc;
}

static int cmp_str(const void *a, const void *b) {
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* Items [lo, hi) of n for a shard (checked by shard_check). */
static void shard_range(size_t n, ddpm_shard sh, size_t *lo, size_t *hi) {
    *lo = n * (size_t)sh.index / (size_t)sh.count;
    *hi = n * ((size_t)sh.index + 1) / (size_t)sh.count;
}

static int shard_check(const char *what, ddpm_shard sh) {
    if (sh.count < 1 || sh.index < 0 || sh.index >= sh.count)
        return ddpm_fail(DDPM_ERR_INVALID, "%s: invalid shard %d of %d", what, sh.index, sh.count);
    return DDPM_OK;
}

static int shard_nonempty(const char *what, size_t n, ddpm_shard sh) {
    size_t lo, hi;
    shard_range(n, sh, &lo, &hi);
    if (hi > lo) return DDPM_OK;
    return ddpm_fail(DDPM_ERR_INVALID, "%s: %zu items cannot be split into %d shards (one would be empty)",
                     what, n, sh.count);
}

/* Keeps rows [lo, hi) of x, cond and labels. */
static int dataset_take_rows(ddpm_image_dataset *d, size_t lo, size_t hi) {
    const size_t per = (size_t)d->c * d->h * d->w, k = (size_t)d->cond_dim, m = hi - lo;
    if (d->x) {
        memmove(d->x, d->x + lo * per, m * per * sizeof(float));
        float *x = realloc(d->x, m * per * sizeof(float));
        if (x) d->x = x;
    }
    if (d->cond) {
        memmove(d->cond, d->cond + lo * k, m * k * sizeof(float));
        float *c = realloc(d->cond, m * k * sizeof(float));
        if (c) d->cond = c;
    }
    if (d->labels) {
        memmove(d->labels, d->labels + lo, m * sizeof(int));
        int *l = realloc(d->labels, m * sizeof(int));
        if (l) d->labels = l;
    }
    d->n = (int)m;
    return DDPM_OK;
}

int ddpm_dataset_keep_shard(ddpm_image_dataset *d, ddpm_shard shard) {
    int rc = shard_check("data set", shard);
    if (!rc) rc = shard_nonempty("data set", (size_t)d->n, shard);
    if (rc) return rc;
    size_t lo, hi;
    shard_range((size_t)d->n, shard, &lo, &hi);
    d->n_total = d->n_total > 0 ? d->n_total : d->n;
    return dataset_take_rows(d, lo, hi);
}

int ddpm_dataset_folder(const char *dir, int image_size, int channels, int labels_from_subdirs,
                        ddpm_image_dataset *out) {
    return ddpm_dataset_folder_hw(dir, image_size, image_size, channels, labels_from_subdirs, out);
}

int ddpm_dataset_folder_hw(const char *dir, int height, int width, int channels,
                           int labels_from_subdirs, ddpm_image_dataset *out) {
    return ddpm_dataset_folder_shard(dir, height, width, channels, labels_from_subdirs,
                                     (ddpm_shard){0, 1}, out);
}

int ddpm_dataset_folder_shard(const char *dir, int height, int width, int channels,
                              int labels_from_subdirs, ddpm_shard shard, ddpm_image_dataset *out) {
    memset(out, 0, sizeof *out);
    if (shard_check(dir, shard)) return DDPM_ERR_INVALID;
    if (height < 1 || height > 4096 || width < 1 || width > 4096 || (channels != 1 && channels != 3))
        return ddpm_fail(DDPM_ERR_INVALID,
                         "%s: invalid image size %dx%d or channels %d (channels 1 or 3)", dir,
                         height, width, channels);
    struct stat st;
    if (stat(dir, &st) != 0)
        return ddpm_fail(DDPM_ERR_IO, "%s: cannot open directory: %s", dir, strerror(errno));
    if (!S_ISDIR(st.st_mode)) return ddpm_fail(DDPM_ERR_IO, "%s: not a directory", dir);
    path_list l = {0};
    char **names = NULL;
    int n_names = 0;
    int rc = collect_images(dir, "", 0, &l);
    if (rc) goto done;
    if (l.n == 0) {
        rc = ddpm_fail(DDPM_ERR_INVALID,
                       "%s: no images found (looked for .png .jpg .jpeg .bmp .gif .tga .psd .hdr "
                       ".pic .ppm .pgm .pnm, recursively)",
                       dir);
        goto done;
    }
    if (l.n > INT32_MAX) {
        rc = ddpm_fail(DDPM_ERR_INVALID, "%s: too many images (%zu)", dir, l.n);
        goto done;
    }
    qsort(l.paths, l.n, sizeof *l.paths, cmp_str);
    if ((rc = shard_nonempty(dir, l.n, shard))) goto done;
    /* A shard decodes only its own files; the classes come from every path, so each shard
     * numbers them alike. */
    size_t lo, hi;
    shard_range(l.n, shard, &lo, &hi);
    if ((rc = dataset_alloc(out, (int)(hi - lo), channels, height, width))) goto done;
    out->n_total = (int)l.n;
    const size_t per = (size_t)channels * height * width;
    for (size_t i = lo; i < hi; i++) {
        char full[8192];
        snprintf(full, sizeof full, "%s/%s", dir, l.paths[i]);
        if ((rc = ddpm_image_read_hw(full, height, width, channels, out->x + (i - lo) * per))) goto done;
    }
    if (labels_from_subdirs) {
        /* The distinct first components of paths that have one, sorted. */
        names = ddpm_alloc(l.n, sizeof *names);
        out->labels = ddpm_alloc(hi - lo, sizeof(int));
        if (!names || !out->labels) {
            rc = DDPM_ERR_NOMEM;
            goto done;
        }
        for (size_t i = 0; i < l.n; i++) {
            const char *slash = strchr(l.paths[i], '/');
            if (!slash) continue;
            size_t len = (size_t)(slash - l.paths[i]);
            if (n_names > 0 && strlen(names[n_names - 1]) == len &&
                memcmp(names[n_names - 1], l.paths[i], len) == 0)
                continue; /* paths sharing a prefix are adjacent once sorted */
            if (!(names[n_names] = strndup(l.paths[i], len))) {
                rc = ddpm_fail(DDPM_ERR_NOMEM, "out of memory");
                goto done;
            }
            n_names++;
        }
        qsort(names, (size_t)n_names, sizeof *names, cmp_str);
        for (size_t i = lo; i < hi; i++) {
            const char *slash = strchr(l.paths[i], '/');
            out->labels[i - lo] = -1;
            if (!slash) continue;
            size_t len = (size_t)(slash - l.paths[i]);
            for (int k = 0; k < n_names; k++)
                if (strlen(names[k]) == len && memcmp(names[k], l.paths[i], len) == 0) {
                    out->labels[i - lo] = k;
                    break;
                }
        }
        if (n_names == 0) {
            /* No sub-folders: unlabelled. */
            free(out->labels);
            out->labels = NULL;
        } else {
            if ((rc = dataset_onehot(out, n_names))) goto done;
            out->class_names = names;
            names = NULL;
        }
    }
done:
    if (names) {
        for (int k = 0; k < n_names; k++) free(names[k]);
        free(names);
    }
    path_list_free(&l);
    if (rc) ddpm_dataset_free(out);
    return rc;
}

/* ------------------------------------------------------------------------------------------ */
/* NumPy arrays                                                                                 */
/* ------------------------------------------------------------------------------------------ */

static int is_float_dtype(const char *d) { return d[0] == 'f'; }
static int is_int_dtype(const char *d) { return d[0] == 'i' || d[0] == 'u'; }

static void shape_str(const ddpm_npy *a, char *buf, size_t cap) {
    size_t k = (size_t)snprintf(buf, cap, "(");
    for (int i = 0; i < a->ndim && k < cap; i++)
        k += (size_t)snprintf(buf + k, cap - k, i ? ", %lld" : "%lld", (long long)a->shape[i]);
    if (k < cap) snprintf(buf + k, cap - k, a->ndim == 1 ? ",)" : ")");
}

/* Reads the labels file into out (after the images: out->n is the image count). */
static int npy_labels(const char *images_path, const char *path, ddpm_image_dataset *out) {
    ddpm_npy a;
    int rc = ddpm_npy_read(path, &a);
    if (rc) return rc;
    char shp[256];
    shape_str(&a, shp, sizeof shp);
    float *v = NULL;
    if (a.ndim < 1 || a.ndim > 2) {
        rc = ddpm_fail(DDPM_ERR_FORMAT,
                       "%s: labels must be a vector [N] of class indices or a matrix [N, K] of "
                       "context vectors, got shape %s",
                       path, shp);
        goto done;
    }
    if (!is_float_dtype(a.dtype) && !is_int_dtype(a.dtype) && strcmp(a.dtype, "b1") != 0) {
        rc = ddpm_fail(DDPM_ERR_FORMAT, "%s: unsupported labels dtype '%s'", path, a.dtype);
        goto done;
    }
    if (a.shape[0] != out->n) {
        rc = ddpm_fail(DDPM_ERR_INVALID, "%s has %lld rows but %s has %d images", path,
                       (long long)a.shape[0], images_path, out->n);
        goto done;
    }
    const size_t n = (size_t)out->n;
    if (!(v = ddpm_alloc(a.numel, sizeof(float)))) {
        rc = DDPM_ERR_NOMEM;
        goto done;
    }
    if ((rc = ddpm_npy_to_f32(&a, v))) goto done;
    for (size_t i = 0; i < a.numel; i++)
        if (!isfinite(v[i])) {
            rc = ddpm_fail(DDPM_ERR_FORMAT, "%s: non-finite value at element %zu", path, i);
            goto done;
        }
    if (a.ndim == 1 || a.shape[1] == 1) {
        /* Class indices. */
        if (!(out->labels = ddpm_alloc(n, sizeof(int)))) {
            rc = DDPM_ERR_NOMEM;
            goto done;
        }
        int maxl = 0;
        for (size_t i = 0; i < n; i++) {
            if (v[i] < 0 || v[i] != floorf(v[i]) || v[i] >= 65536) {
                rc = ddpm_fail(DDPM_ERR_FORMAT,
                               "%s: label %g of item %zu is not a class index (an integer in "
                               "0..65535)",
                               path, (double)v[i], i);
                goto done;
            }
            out->labels[i] = (int)v[i];
            if (out->labels[i] > maxl) maxl = out->labels[i];
        }
        if ((rc = dataset_onehot(out, maxl + 1))) goto done;
        rc = dataset_numeric_names(out);
        goto done;
    }
    /* Context vectors [N, K]. */
    if (a.shape[1] > 65536) {
        rc = ddpm_fail(DDPM_ERR_FORMAT, "%s: %lld context features is too many", path,
                       (long long)a.shape[1]);
        goto done;
    }
    const int K = (int)a.shape[1];
    int onehot = 1;
    for (size_t i = 0; i < n && onehot; i++) {
        int ones = 0;
        for (int k = 0; k < K; k++) {
            float x = v[i * K + k];
            if (x == 1.0f) ones++;
            else if (x != 0.0f) onehot = 0;
        }
        if (ones != 1) onehot = 0;
    }
    out->cond = v;
    out->cond_dim = K;
    v = NULL;
    if (onehot) {
        if (!(out->labels = ddpm_alloc(n, sizeof(int)))) {
            rc = DDPM_ERR_NOMEM;
            goto done;
        }
        for (size_t i = 0; i < n; i++)
            for (int k = 0; k < K; k++)
                if (out->cond[i * K + k] == 1.0f) out->labels[i] = k;
        out->n_classes = K;
        rc = dataset_numeric_names(out);
    }
done:
    free(v);
    ddpm_npy_free(&a);
    return rc;
}

int ddpm_dataset_npy(const char *images_path, const char *labels_path, ddpm_image_dataset *out) {
    return ddpm_dataset_npy_shard(images_path, labels_path, (ddpm_shard){0, 1}, out);
}

int ddpm_dataset_npy_shard(const char *images_path, const char *labels_path, ddpm_shard shard,
                           ddpm_image_dataset *out) {
    memset(out, 0, sizeof *out);
    if (shard_check(images_path, shard)) return DDPM_ERR_INVALID;
    ddpm_npy a;
    int rc = ddpm_npy_read(images_path, &a);
    if (rc) return rc;
    char shp[256];
    shape_str(&a, shp, sizeof shp);
    float *v = NULL;
    /* The layout: NHWC, NHW, or NCHW when only that reading gives 1 or 3 channels. */
    int64_t N, C, H, W;
    int nchw = 0;
    if (a.ndim == 3) {
        N = a.shape[0], H = a.shape[1], W = a.shape[2], C = 1;
    } else if (a.ndim == 4) {
        N = a.shape[0];
        if (a.shape[3] != 1 && a.shape[3] != 3 && (a.shape[1] == 1 || a.shape[1] == 3)) {
            nchw = 1;
            C = a.shape[1], H = a.shape[2], W = a.shape[3];
        } else {
            H = a.shape[1], W = a.shape[2], C = a.shape[3];
        }
    } else {
        rc = ddpm_fail(DDPM_ERR_FORMAT,
                       "%s: expected images of shape [N, H, W, C] or [N, H, W], got shape %s",
                       images_path, shp);
        goto done;
    }
    if (C != 1 && C != 3) {
        rc = ddpm_fail(DDPM_ERR_FORMAT,
                       "%s: images of shape %s have %lld channels; expected 1 (gray) or 3 (RGB)",
                       images_path, shp, (long long)C);
        goto done;
    }
    if (N < 1 || H < 1 || W < 1 || N > INT32_MAX || H > 65536 || W > 65536) {
        rc = ddpm_fail(DDPM_ERR_FORMAT, "%s: implausible image array shape %s", images_path, shp);
        goto done;
    }
    if (!is_float_dtype(a.dtype) && !is_int_dtype(a.dtype)) {
        rc = ddpm_fail(DDPM_ERR_FORMAT,
                       "%s: images have dtype '%s'; expected uint8 (0..255) or float", images_path,
                       a.dtype);
        goto done;
    }
    /* Pass 1: each image's raw values, converted to float, go into its slot of x (so the peak
     * memory is the file plus x) while the value range is found. A shard keeps only its images
     * but looks at every image's range (through one image of scratch), so that every shard maps
     * the values alike. */
    if ((rc = shard_nonempty(images_path, (size_t)N, shard))) goto done;
    size_t first, last;
    shard_range((size_t)N, shard, &first, &last);
    if ((rc = dataset_alloc(out, (int)(last - first), (int)C, (int)H, (int)W))) goto done;
    out->n_total = (int)N;
    const size_t plane = (size_t)H * (size_t)W, per = plane * (size_t)C;
    if (!(v = ddpm_alloc(per, sizeof(float)))) {
        rc = DDPM_ERR_NOMEM;
        goto done;
    }
    float lo = INFINITY, hi = -INFINITY;
    for (size_t n = 0; n < (size_t)N; n++) {
        ddpm_npy slice = a; /* a view of image n */
        slice.data = (unsigned char *)a.data + n * per * a.itemsize;
        slice.numel = per;
        float *dst = n >= first && n < last ? out->x + (n - first) * per : v;
        if ((rc = ddpm_npy_to_f32(&slice, dst))) goto done;
        for (size_t i = 0; i < per; i++) {
            if (!isfinite(dst[i])) {
                rc = ddpm_fail(DDPM_ERR_FORMAT, "%s: non-finite pixel value at element %zu",
                               images_path, n * per + i);
                goto done;
            }
            if (dst[i] < lo) lo = dst[i];
            if (dst[i] > hi) hi = dst[i];
        }
    }
    /* The value range decides the mapping to [-1, 1]: x = v / div + shift, a division so 8-bit
     * values map to p / 127.5 - 1 exactly, as in every other loader. */
    float div, shift;
    if (is_int_dtype(a.dtype)) {
        if (lo < 0 || hi > 255) {
            rc = ddpm_fail(DDPM_ERR_FORMAT,
                           "%s: integer pixel values span [%g, %g], expected 0..255", images_path,
                           (double)lo, (double)hi);
            goto done;
        }
        div = 127.5f, shift = -1.0f;
    } else if (lo >= 0 && hi <= 1) {
        div = 0.5f, shift = -1.0f;
    } else if (lo >= -1 && hi <= 1) {
        div = 1.0f, shift = 0.0f;
    } else if (lo >= 0 && hi <= 255) {
        div = 127.5f, shift = -1.0f;
    } else {
        rc = ddpm_fail(DDPM_ERR_FORMAT,
                       "%s: float pixel values span [%g, %g]; expected [0, 1], [-1, 1] or "
                       "[0, 255]",
                       images_path, (double)lo, (double)hi);
        goto done;
    }
    /* Pass 2: map, and transpose HWC to CHW through one image of scratch. */
    for (size_t n = 0; n < last - first; n++) {
        float *img = out->x + n * per; // [C, H, W] on return
        memcpy(v, img, per * sizeof(float));
        if (nchw) {
            for (size_t i = 0; i < per; i++) img[i] = v[i] / div + shift;
        } else {
            for (size_t q = 0; q < plane; q++)
                for (size_t c = 0; c < (size_t)C; c++)
                    img[c * plane + q] = v[q * (size_t)C + c] / div + shift;
        }
    }
    free(v);
    v = NULL;
    if (labels_path) {
        /* The labels of every image (so every shard finds the same classes), then this shard's. */
        ddpm_image_dataset lab = {.n = (int)N};
        if (!(rc = npy_labels(images_path, labels_path, &lab)) &&
            !(rc = dataset_take_rows(&lab, first, last))) {
            out->cond = lab.cond, out->labels = lab.labels, out->class_names = lab.class_names;
            out->cond_dim = lab.cond_dim, out->n_classes = lab.n_classes;
            lab.cond = NULL, lab.labels = NULL, lab.class_names = NULL, lab.n_classes = 0;
        }
        ddpm_dataset_free(&lab);
    }
done:
    free(v);
    ddpm_npy_free(&a);
    if (rc) ddpm_dataset_free(out);
    return rc;
}

/* ------------------------------------------------------------------------------------------ */
/* Augmentation                                                                                 */
/* ------------------------------------------------------------------------------------------ */

static void hflip_one(float *img, int C, int H, int W) { // [C, H, W]
    for (size_t r = 0; r < (size_t)C * (size_t)H; r++) {
        float *row = img + r * (size_t)W;
        for (int i = 0, j = W - 1; i < j; i++, j--) {
            float t = row[i];
            row[i] = row[j];
            row[j] = t;
        }
    }
}

void ddpm_images_hflip_random_items(float *batch, int B, int C, int H, int W, uint64_t seed,
                                    const uint64_t *items, uint32_t epoch) {
    const size_t per = (size_t)C * (size_t)H * (size_t)W;
    for (int b = 0; b < B; b++) {
        float u;
        ddpm_randu(seed, DDPM_STREAM_AUGMENT, items[b], epoch, &u, 1);
        if (u < 0.5f) hflip_one(batch + (size_t)b * per, C, H, W);
    }
}

void ddpm_images_hflip_random(float *batch, int B, int C, int H, int W, uint64_t seed,
                              uint64_t first_item, uint32_t epoch) {
    const size_t per = (size_t)C * (size_t)H * (size_t)W;
    for (int b = 0; b < B; b++) {
        float u;
        ddpm_randu(seed, DDPM_STREAM_AUGMENT, first_item + (uint64_t)b, epoch, &u, 1);
        if (u < 0.5f) hflip_one(batch + (size_t)b * per, C, H, W);
    }
}

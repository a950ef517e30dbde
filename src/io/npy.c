/* npy.c - NumPy .npy files: read (format 1.0, 2.0, 3.0), convert to float32, write.
 *
 * The format: the magic "\x93NUMPY", a major and minor version byte, the header length (2 bytes
 * little-endian in 1.0, 4 bytes in 2.0 and 3.0), then the header: a Python dict literal such as
 * {'descr': '<f4', 'fortran_order': False, 'shape': (1788, 16, 16, 3), } padded with spaces and
 * ending in '\n', then the raw array data in C order. */
#include "core/internal.h"

#include <math.h>

#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "io/npy.c assumes a little-endian host"
#endif

static const unsigned char NPY_MAGIC[6] = {0x93, 'N', 'U', 'M', 'P', 'Y'};

/* ---- the dtypes ---- */

typedef struct {
    const char *code; /* kind + size, as stored in ddpm_npy.dtype */
    size_t size;
    const char *name;
} npy_type;

static const npy_type NPY_TYPES[] = {
    {"f4", 4, "float32"}, {"f8", 8, "float64"}, {"f2", 2, "float16"}, {"u1", 1, "uint8"},
    {"i1", 1, "int8"},    {"b1", 1, "bool"},    {"i2", 2, "int16"},   {"u2", 2, "uint16"},
    {"i4", 4, "int32"},   {"u4", 4, "uint32"},  {"i8", 8, "int64"},   {"u8", 8, "uint64"},
};
#define NPY_NTYPES (sizeof NPY_TYPES / sizeof NPY_TYPES[0])

static const npy_type *npy_type_find(const char *code) {
    for (size_t i = 0; i < NPY_NTYPES; i++)
        if (strcmp(NPY_TYPES[i].code, code) == 0) return &NPY_TYPES[i];
    return NULL;
}

/* ---- a tiny parser for the header's Python literal dict ---- */

typedef struct {
    const char *p, *end;
} cursor;

static void skip_ws(cursor *c) {
    while (c->p < c->end && (*c->p == ' ' || *c->p == '\t' || *c->p == '\n' || *c->p == '\r'))
        c->p++;
}

static int eat(cursor *c, char ch) {
    skip_ws(c);
    if (c->p < c->end && *c->p == ch) {
        c->p++;
        return 1;
    }
    return 0;
}

/* A quoted string ('...' or "...", no escapes) into buf. */
static int parse_str(cursor *c, char *buf, size_t cap) {
    skip_ws(c);
    if (c->p >= c->end || (*c->p != '\'' && *c->p != '"')) return 0;
    char q = *c->p++;
    size_t n = 0;
    while (c->p < c->end && *c->p != q) {
        if (*c->p == '\\' || n + 1 >= cap) return 0;
        buf[n++] = *c->p++;
    }
    if (c->p >= c->end) return 0;
    c->p++;
    buf[n] = 0;
    return 1;
}

static int parse_word(cursor *c, const char *w) {
    skip_ws(c);
    size_t n = strlen(w);
    if ((size_t)(c->end - c->p) >= n && memcmp(c->p, w, n) == 0) {
        c->p += n;
        return 1;
    }
    return 0;
}

/* A shape tuple "(a, b, c)", "(a,)" or "()"; Python 2 "3L" suffixes accepted. Returns 0 on a
 * syntax error, -1 if there are too many dimensions, -2 for a negative or huge dimension. */
static int parse_shape(cursor *c, int *ndim, int64_t *shape) {
    if (!eat(c, '(')) return 0;
    int n = 0;
    for (;;) {
        if (eat(c, ')')) break;
        skip_ws(c);
        if (c->p >= c->end) return 0;
        if (*c->p == '-') return -2;
        if (*c->p < '0' || *c->p > '9') return 0;
        int64_t v = 0;
        while (c->p < c->end && *c->p >= '0' && *c->p <= '9') {
            if (v > (INT64_MAX - 9) / 10) return -2;
            v = v * 10 + (*c->p++ - '0');
        }
        if (c->p < c->end && (*c->p == 'L' || *c->p == 'l')) c->p++;
        if (n >= DDPM_MAX_DIMS) return -1;
        shape[n++] = v;
        if (eat(c, ',')) continue;
        if (eat(c, ')')) break;
        return 0;
    }
    *ndim = n;
    return 1;
}

/* Parses the header dict into out (ndim, shape, dtype, itemsize). */
static int parse_header(const char *path, const char *h, size_t len, ddpm_npy *out) {
    cursor c = {h, h + len};
    char key[32], descr[32] = "";
    int have_descr = 0, have_fortran = 0, have_shape = 0, fortran = 0;
    if (!eat(&c, '{'))
        return ddpm_fail(DDPM_ERR_FORMAT, "%s: npy header is not a Python dict (no '{')", path);
    for (;;) {
        if (eat(&c, '}')) break;
        if (!parse_str(&c, key, sizeof key) || !eat(&c, ':'))
            return ddpm_fail(DDPM_ERR_FORMAT, "%s: malformed npy header dict near offset %d", path,
                             (int)(c.p - h));
        if (strcmp(key, "descr") == 0) {
            skip_ws(&c);
            if (c.p < c.end && *c.p == '[')
                return ddpm_fail(DDPM_ERR_FORMAT,
                                 "%s: structured dtypes (record arrays) are not supported", path);
            if (!parse_str(&c, descr, sizeof descr))
                return ddpm_fail(DDPM_ERR_FORMAT, "%s: malformed 'descr' in the npy header", path);
            have_descr = 1;
        } else if (strcmp(key, "fortran_order") == 0) {
            if (parse_word(&c, "True")) fortran = 1;
            else if (parse_word(&c, "False")) fortran = 0;
            else
                return ddpm_fail(DDPM_ERR_FORMAT,
                                 "%s: 'fortran_order' in the npy header is not True or False",
                                 path);
            have_fortran = 1;
        } else if (strcmp(key, "shape") == 0) {
            int r = parse_shape(&c, &out->ndim, out->shape);
            if (r == -1)
                return ddpm_fail(DDPM_ERR_FORMAT, "%s: arrays of more than %d dimensions are not "
                                 "supported", path, DDPM_MAX_DIMS);
            if (r == -2)
                return ddpm_fail(DDPM_ERR_FORMAT, "%s: invalid dimension in the npy 'shape'", path);
            if (r == 0)
                return ddpm_fail(DDPM_ERR_FORMAT, "%s: malformed 'shape' in the npy header", path);
            have_shape = 1;
        } else {
            return ddpm_fail(DDPM_ERR_FORMAT, "%s: unexpected key '%s' in the npy header", path,
                             key);
        }
        if (eat(&c, ',')) continue;
        if (eat(&c, '}')) break;
        return ddpm_fail(DDPM_ERR_FORMAT, "%s: malformed npy header dict near offset %d", path,
                         (int)(c.p - h));
    }
    if (!have_descr || !have_fortran || !have_shape)
        return ddpm_fail(DDPM_ERR_FORMAT, "%s: npy header lacks '%s'", path,
                         !have_descr ? "descr" : !have_fortran ? "fortran_order" : "shape");
    if (fortran)
        return ddpm_fail(DDPM_ERR_FORMAT,
                         "%s: fortran_order=True is not supported (save np.ascontiguousarray(a))",
                         path);
    /* descr: byte order ('<' little, '>' big, '|' not applicable, '=' native) + kind + size. */
    const npy_type *t = NULL;
    if (strlen(descr) >= 3 && strchr("<>|=", descr[0])) t = npy_type_find(descr + 1);
    if (!t)
        return ddpm_fail(DDPM_ERR_FORMAT,
                         "%s: unsupported dtype '%s' (supported: float32, float64, float16, uint8, "
                         "int8, bool, int16, uint16, int32, uint32, int64, uint64)",
                         path, descr);
    if (descr[0] == '>' && t->size > 1)
        return ddpm_fail(DDPM_ERR_FORMAT,
                         "%s: big-endian dtype '%s' is not supported (save a.astype('<%s'))", path,
                         descr, descr + 1);
    memcpy(out->dtype, t->code, 3);
    out->itemsize = t->size;
    return DDPM_OK;
}

int ddpm_npy_read(const char *path, ddpm_npy *out) {
    memset(out, 0, sizeof *out);
    unsigned char *buf;
    size_t size;
    int rc = ddpm_read_file(path, &buf, &size);
    if (rc) return rc;
    if (size < 10 || memcmp(buf, NPY_MAGIC, 6) != 0) {
        free(buf);
        return ddpm_fail(DDPM_ERR_FORMAT, "%s: not a NumPy .npy file (bad magic)", path);
    }
    int major = buf[6];
    size_t hlen, off;
    if (major == 1) {
        hlen = (size_t)buf[8] | (size_t)buf[9] << 8;
        off = 10;
    } else if (major == 2 || major == 3) {
        if (size < 12) {
            free(buf);
            return ddpm_fail(DDPM_ERR_FORMAT, "%s: truncated npy header", path);
        }
        hlen = (size_t)buf[8] | (size_t)buf[9] << 8 | (size_t)buf[10] << 16 | (size_t)buf[11] << 24;
        off = 12;
    } else {
        const int minor = buf[7];
        free(buf);
        return ddpm_fail(DDPM_ERR_FORMAT, "%s: unsupported npy format version %d.%d", path, major,
                         minor);
    }
    if (hlen > size - off) {
        free(buf);
        return ddpm_fail(DDPM_ERR_FORMAT, "%s: truncated npy header (%zu bytes announced, %zu "
                         "present)", path, hlen, size - off);
    }
    rc = parse_header(path, (const char *)buf + off, hlen, out);
    if (rc) {
        free(buf);
        memset(out, 0, sizeof *out);
        return rc;
    }
    off += hlen;
    size_t numel = 1;
    for (int i = 0; i < out->ndim; i++) numel = ddpm_size_mul(numel, (size_t)out->shape[i]);
    size_t nbytes = ddpm_size_mul(numel, out->itemsize);
    if (numel == SIZE_MAX || nbytes == SIZE_MAX) {
        free(buf);
        memset(out, 0, sizeof *out);
        return ddpm_fail(DDPM_ERR_FORMAT, "%s: npy shape is too large", path);
    }
    size_t have = size - off;
    if (have < nbytes) {
        free(buf);
        memset(out, 0, sizeof *out);
        return ddpm_fail(DDPM_ERR_FORMAT,
                         "%s: truncated npy data: the shape needs %zu bytes, the file has %zu",
                         path, nbytes, have);
    }
    if (have > nbytes) {
        free(buf);
        memset(out, 0, sizeof *out);
        return ddpm_fail(DDPM_ERR_FORMAT,
                         "%s: %zu unexpected bytes after the npy data (shape needs %zu bytes)",
                         path, have - nbytes, nbytes);
    }
    /* Move the data to the start of the (malloc-aligned) buffer so it is aligned for its type
     * whatever the header length was. */
    memmove(buf, buf + off, nbytes);
    out->data = buf;
    out->numel = numel;
    return DDPM_OK;
}

void ddpm_npy_free(ddpm_npy *a) {
    if (!a) return;
    free(a->data);
    memset(a, 0, sizeof *a);
}

static float half_to_float(uint16_t h) {
    uint32_t sign = (uint32_t)(h >> 15) << 31, ex = (h >> 10) & 0x1f, man = h & 0x3ff, bits;
    if (ex == 0) {
        float v = ldexpf((float)man, -24);
        return sign ? -v : v;
    }
    if (ex == 31) bits = sign | 0x7f800000u | (man << 13);
    else bits = sign | ((ex + 112) << 23) | (man << 13);
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

int ddpm_npy_to_f32(const ddpm_npy *a, float *dst) {
    const unsigned char *p = a->data;
    size_t n = a->numel;
    const char *d = a->dtype;
#define NPY_CONVERT(T)                                                                             \
    do {                                                                                           \
        for (size_t i = 0; i < n; i++) {                                                           \
            T v;                                                                                   \
            memcpy(&v, p + i * sizeof(T), sizeof(T));                                              \
            dst[i] = (float)v;                                                                     \
        }                                                                                          \
    } while (0)
    if (!strcmp(d, "f4")) memcpy(dst, p, n * sizeof(float));
    else if (!strcmp(d, "f8")) NPY_CONVERT(double);
    else if (!strcmp(d, "u1")) NPY_CONVERT(uint8_t);
    else if (!strcmp(d, "i1")) NPY_CONVERT(int8_t);
    else if (!strcmp(d, "b1")) for (size_t i = 0; i < n; i++) dst[i] = p[i] ? 1.0f : 0.0f;
    else if (!strcmp(d, "i2")) NPY_CONVERT(int16_t);
    else if (!strcmp(d, "u2")) NPY_CONVERT(uint16_t);
    else if (!strcmp(d, "i4")) NPY_CONVERT(int32_t);
    else if (!strcmp(d, "u4")) NPY_CONVERT(uint32_t);
    else if (!strcmp(d, "i8")) NPY_CONVERT(int64_t);
    else if (!strcmp(d, "u8")) NPY_CONVERT(uint64_t);
    else if (!strcmp(d, "f2")) {
        for (size_t i = 0; i < n; i++) {
            uint16_t h;
            memcpy(&h, p + 2 * i, 2);
            dst[i] = half_to_float(h);
        }
    } else {
        return ddpm_fail(DDPM_ERR_INVALID, "npy array has unknown dtype '%s'", d);
    }
#undef NPY_CONVERT
    return DDPM_OK;
}

/* Writes a version 1.0 file: header padded with spaces to a multiple of 64 bytes, as numpy does. */
static int npy_write(const char *path, const char *descr, const void *data, size_t itemsize,
                     int ndim, const int64_t *shape) {
    if (ndim < 0 || ndim > DDPM_MAX_DIMS)
        return ddpm_fail(DDPM_ERR_INVALID, "%s: cannot write an npy array of %d dimensions", path,
                         ndim);
    char shp[DDPM_MAX_DIMS * 24 + 8];
    size_t k = 0;
    size_t numel = 1;
    shp[k++] = '(';
    for (int i = 0; i < ndim; i++) {
        if (shape[i] < 0)
            return ddpm_fail(DDPM_ERR_INVALID, "%s: negative dimension %lld", path,
                             (long long)shape[i]);
        numel = ddpm_size_mul(numel, (size_t)shape[i]);
        k += (size_t)snprintf(shp + k, sizeof shp - k, i ? ", %lld" : "%lld", (long long)shape[i]);
    }
    if (ndim == 1) shp[k++] = ',';
    shp[k++] = ')';
    shp[k] = 0;
    size_t nbytes = ddpm_size_mul(numel, itemsize);
    if (nbytes == SIZE_MAX) return ddpm_fail(DDPM_ERR_INVALID, "%s: array too large", path);
    char header[512];
    int hl = snprintf(header + 10, sizeof header - 10,
                      "{'descr': '%s', 'fortran_order': False, 'shape': %s, }", descr, shp);
    size_t total = 10 + (size_t)hl + 1; /* + '\n' */
    size_t padded = (total + 63) / 64 * 64;
    DDPM_CHECK(padded <= sizeof header);
    memset(header + 10 + hl, ' ', padded - total);
    header[padded - 1] = '\n';
    memcpy(header, NPY_MAGIC, 6);
    header[6] = 1;
    header[7] = 0;
    size_t hlen = padded - 10;
    header[8] = (char)(hlen & 0xff);
    header[9] = (char)(hlen >> 8);
    const void *parts[2] = {header, data};
    size_t sizes[2] = {padded, nbytes};
    return ddpm_write_file_atomic(path, parts, sizes, nbytes ? 2 : 1);
}

int ddpm_npy_write_f32(const char *path, const float *data, int ndim, const int64_t *shape) {
    return npy_write(path, "<f4", data, sizeof(float), ndim, shape);
}

int ddpm_npy_write_u8(const char *path, const uint8_t *data, int ndim, const int64_t *shape) {
    return npy_write(path, "|u1", data, 1, ndim, shape);
}

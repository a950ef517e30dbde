/* safetensors.c - the safetensors format: 8-byte little-endian header length, a JSON header
 * {name: {dtype, shape, data_offsets}, "__metadata__": {string: string}}, then the raw data.
 * Everything a file says is checked before it is used, since checkpoints come from disk. */
#include "core/internal.h"

#include <cjson/cJSON.h>
#include <zlib.h>

static const char *const dtype_names[DDPM_DT_COUNT] = {"F32", "F64", "F16", "BF16", "I64",
                                                        "I32", "U8",  "I8",  "BOOL"};
static const size_t dtype_sizes[DDPM_DT_COUNT] = {4, 8, 2, 2, 8, 4, 1, 1, 1};

const char *ddpm_dtype_name(ddpm_dtype t) { return (unsigned)t < DDPM_DT_COUNT ? dtype_names[t] : "?"; }
size_t ddpm_dtype_size(ddpm_dtype t) { return (unsigned)t < DDPM_DT_COUNT ? dtype_sizes[t] : 0; }

#define MAX_HEADER (100u << 20)

void ddpm_safetensors_free(ddpm_safetensors *st) {
    if (!st) return;
    for (size_t i = 0; i < st->n_tensors; i++) free(st->tensors[i].name);
    for (size_t i = 0; i < st->n_meta; i++) {
        free(st->meta_keys[i]);
        free(st->meta_values[i]);
    }
    free(st->tensors);
    free(st->meta_keys);
    free(st->meta_values);
    free(st->file_);
    memset(st, 0, sizeof *st);
}

static int cmp_by_offset(const void *a, const void *b) {
    const ddpm_tensor *x = a, *y = b;
    const unsigned char *px = x->data, *py = y->data;
    return px < py ? -1 : px > py ? 1 : 0;
}

/* Parses the header JSON into st; data section is [data, data + data_size). */
static int parse_header(const char *path, cJSON *root, const unsigned char *data, size_t data_size,
                        ddpm_safetensors *st) {
    if (!cJSON_IsObject(root))
        return ddpm_fail(DDPM_ERR_FORMAT, "%s: safetensors header is not a JSON object", path);
    size_t count = 0;
    for (cJSON *e = root->child; e; e = e->next) count++;
    st->tensors = ddpm_alloc(count, sizeof(ddpm_tensor));
    if (!st->tensors) return DDPM_ERR_NOMEM;
    for (cJSON *e = root->child; e; e = e->next) {
        if (!e->string) return ddpm_fail(DDPM_ERR_FORMAT, "%s: header entry without a name", path);
        if (strcmp(e->string, "__metadata__") == 0) {
            if (!cJSON_IsObject(e))
                return ddpm_fail(DDPM_ERR_FORMAT, "%s: __metadata__ is not an object", path);
            /* cJSON keeps duplicate keys; the arrays below are sized for one metadata object */
            if (st->meta_keys)
                return ddpm_fail(DDPM_ERR_FORMAT, "%s: the header has more than one __metadata__",
                                 path);
            size_t m = 0;
            for (cJSON *k = e->child; k; k = k->next) m++;
            st->meta_keys = ddpm_alloc(m, sizeof(char *));
            st->meta_values = ddpm_alloc(m, sizeof(char *));
            if (!st->meta_keys || !st->meta_values) return DDPM_ERR_NOMEM;
            for (cJSON *k = e->child; k; k = k->next) {
                if (!cJSON_IsString(k))
                    return ddpm_fail(DDPM_ERR_FORMAT, "%s: metadata value '%s' is not a string",
                                     path, k->string);
                st->meta_keys[st->n_meta] = strdup(k->string);
                st->meta_values[st->n_meta] = strdup(k->valuestring);
                st->n_meta++;
                if (!st->meta_keys[st->n_meta - 1] || !st->meta_values[st->n_meta - 1])
                    return ddpm_fail(DDPM_ERR_NOMEM, "out of memory");
            }
            continue;
        }
        const char *name = e->string;
        if (!*name) return ddpm_fail(DDPM_ERR_FORMAT, "%s: a tensor has an empty name", path);
        if (!cJSON_IsObject(e))
            return ddpm_fail(DDPM_ERR_FORMAT, "%s: tensor '%s': entry is not an object", path, name);
        ddpm_tensor *t = &st->tensors[st->n_tensors];
        t->name = strdup(name);
        if (!t->name) return ddpm_fail(DDPM_ERR_NOMEM, "out of memory");
        st->n_tensors++;
        cJSON *dt = cJSON_GetObjectItemCaseSensitive(e, "dtype");
        cJSON *shape = cJSON_GetObjectItemCaseSensitive(e, "shape");
        cJSON *offs = cJSON_GetObjectItemCaseSensitive(e, "data_offsets");
        if (!cJSON_IsString(dt))
            return ddpm_fail(DDPM_ERR_FORMAT, "%s: tensor '%s': missing dtype", path, name);
        int found = -1;
        for (int k = 0; k < DDPM_DT_COUNT; k++)
            if (strcmp(dt->valuestring, dtype_names[k]) == 0) found = k;
        if (found < 0)
            return ddpm_fail(DDPM_ERR_FORMAT, "%s: tensor '%s': unsupported dtype '%s'", path, name,
                             dt->valuestring);
        t->dtype = (ddpm_dtype)found;
        if (!cJSON_IsArray(shape) || cJSON_GetArraySize(shape) > DDPM_MAX_DIMS)
            return ddpm_fail(DDPM_ERR_FORMAT, "%s: tensor '%s': shape missing or of rank > %d",
                             path, name, DDPM_MAX_DIMS);
        t->ndim = cJSON_GetArraySize(shape);
        size_t numel = 1;
        for (int k = 0; k < t->ndim; k++) {
            cJSON *v = cJSON_GetArrayItem(shape, k);
            if (!cJSON_IsNumber(v) || v->valuedouble < 0 || v->valuedouble > 9.0e15 ||
                v->valuedouble != (double)(int64_t)v->valuedouble)
                return ddpm_fail(DDPM_ERR_FORMAT, "%s: tensor '%s': bad shape entry %d", path,
                                 name, k);
            t->shape[k] = (int64_t)v->valuedouble;
            numel = ddpm_size_mul(numel, (size_t)t->shape[k]);
        }
        if (!cJSON_IsArray(offs) || cJSON_GetArraySize(offs) != 2)
            return ddpm_fail(DDPM_ERR_FORMAT, "%s: tensor '%s': data_offsets must be [begin, end]",
                             path, name);
        double b = cJSON_GetArrayItem(offs, 0)->valuedouble;
        double en = cJSON_GetArrayItem(offs, 1)->valuedouble;
        if (!cJSON_IsNumber(cJSON_GetArrayItem(offs, 0)) ||
            !cJSON_IsNumber(cJSON_GetArrayItem(offs, 1)) || b < 0 || en < b ||
            en > (double)data_size || b != (double)(size_t)b || en != (double)(size_t)en)
            return ddpm_fail(DDPM_ERR_FORMAT,
                             "%s: tensor '%s': data_offsets [%.0f, %.0f] outside the data section "
                             "of %zu bytes (truncated or corrupted file?)",
                             path, name, b, en, data_size);
        t->numel = numel;
        t->nbytes = (size_t)en - (size_t)b;
        if (numel == SIZE_MAX || ddpm_size_mul(numel, dtype_sizes[t->dtype]) != t->nbytes)
            return ddpm_fail(DDPM_ERR_FORMAT,
                             "%s: tensor '%s': %zu bytes of data do not fit its shape and dtype",
                             path, name, t->nbytes);
        t->data = data + (size_t)b;
    }
    /* Names are unique, and the tensors tile the data section without gaps or overlaps. */
    ddpm_tensor *sorted = ddpm_alloc(st->n_tensors, sizeof(ddpm_tensor));
    if (!sorted) return DDPM_ERR_NOMEM;
    memcpy(sorted, st->tensors, st->n_tensors * sizeof(ddpm_tensor));
    qsort(sorted, st->n_tensors, sizeof(ddpm_tensor), cmp_by_offset);
    size_t pos = 0;
    int rc = DDPM_OK;
    for (size_t i = 0; i < st->n_tensors && !rc; i++) {
        size_t b = (size_t)((const unsigned char *)sorted[i].data - data);
        if (b != pos)
            rc = ddpm_fail(DDPM_ERR_FORMAT, "%s: tensor '%s' %s (corrupted header?)", path,
                           sorted[i].name, b < pos ? "overlaps another" : "leaves a gap before it");
        pos = b + sorted[i].nbytes;
    }
    if (!rc && pos != data_size)
        rc = ddpm_fail(DDPM_ERR_FORMAT, "%s: %zu bytes after the last tensor (corrupted file?)",
                       path, data_size - pos);
    free(sorted);
    for (size_t i = 0; i < st->n_tensors && !rc; i++)
        for (size_t j = i + 1; j < st->n_tensors && !rc; j++)
            if (strcmp(st->tensors[i].name, st->tensors[j].name) == 0)
                rc = ddpm_fail(DDPM_ERR_FORMAT, "%s: tensor '%s' appears twice", path,
                               st->tensors[i].name);
    return rc;
}

int ddpm_safetensors_read(const char *path, ddpm_safetensors *st) {
    memset(st, 0, sizeof *st);
    unsigned char *buf;
    size_t size;
    int rc = ddpm_read_file(path, &buf, &size);
    if (rc) return rc;
    st->file_ = buf;
    st->file_size_ = size;
    if (size < 8) {
        ddpm_safetensors_free(st);
        return ddpm_fail(DDPM_ERR_FORMAT, "%s: %zu bytes is too short for a safetensors file", path,
                         size);
    }
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--) hlen = (hlen << 8) | buf[i];
    if (hlen > size - 8 || hlen > MAX_HEADER || hlen < 2) {
        ddpm_safetensors_free(st);
        return ddpm_fail(DDPM_ERR_FORMAT,
                         "%s: header length %llu does not fit a file of %zu bytes (truncated, or "
                         "not a safetensors file)",
                         path, (unsigned long long)hlen, size);
    }
    if (buf[8] != '{') {
        ddpm_safetensors_free(st);
        return ddpm_fail(DDPM_ERR_FORMAT, "%s: header does not start with '{'", path);
    }
    cJSON *root = cJSON_ParseWithLength((const char *)buf + 8, (size_t)hlen);
    if (!root) {
        ddpm_safetensors_free(st);
        return ddpm_fail(DDPM_ERR_FORMAT, "%s: header is not valid JSON (corrupted file?)", path);
    }
    const unsigned char *data = buf + 8 + hlen;
    const size_t data_size = size - 8 - (size_t)hlen;
    rc = parse_header(path, root, data, data_size, st);
    cJSON_Delete(root);
    if (!rc) {
        const char *crc = ddpm_safetensors_meta(st, "ddpm.crc32");
        if (crc) {
            unsigned long want = strtoul(crc, NULL, 16);
            unsigned long got = crc32(0L, data, (uInt)0);
            /* zlib's crc32 takes uInt lengths: feed it in chunks. */
            for (size_t off = 0; off < data_size; off += 1u << 30) {
                size_t len = data_size - off < (1u << 30) ? data_size - off : (1u << 30);
                got = crc32(got, data + off, (uInt)len);
            }
            if (want != got)
                rc = ddpm_fail(DDPM_ERR_FORMAT,
                               "%s: data checksum mismatch (stored %08lx, computed %08lx): the "
                               "file is corrupted",
                               path, want, got);
        }
    }
    if (rc) ddpm_safetensors_free(st);
    return rc;
}

const ddpm_tensor *ddpm_safetensors_find(const ddpm_safetensors *st, const char *name) {
    for (size_t i = 0; i < st->n_tensors; i++)
        if (strcmp(st->tensors[i].name, name) == 0) return &st->tensors[i];
    return NULL;
}

const char *ddpm_safetensors_meta(const ddpm_safetensors *st, const char *key) {
    for (size_t i = 0; i < st->n_meta; i++)
        if (strcmp(st->meta_keys[i], key) == 0) return st->meta_values[i];
    return NULL;
}

static float half_to_float(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16, exp = (h >> 10) & 0x1Fu, mant = h & 0x3FFu;
    uint32_t bits;
    if (exp == 0) {
        if (mant == 0) {
            bits = sign;
        } else { /* subnormal: normalise */
            int e = -1;
            do {
                e++;
                mant <<= 1;
            } while (!(mant & 0x400u));
            bits = sign | ((uint32_t)(127 - 15 - e) << 23) | ((mant & 0x3FFu) << 13);
        }
    } else if (exp == 31) {
        bits = sign | 0x7F800000u | (mant << 13);
    } else {
        bits = sign | ((exp + 127 - 15) << 23) | (mant << 13);
    }
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

int ddpm_tensor_to_f32(const ddpm_tensor *t, float *dst) {
    const unsigned char *p = t->data;
    switch (t->dtype) {
    case DDPM_DT_F32: memcpy(dst, p, t->numel * 4); return DDPM_OK;
    case DDPM_DT_F64:
        for (size_t i = 0; i < t->numel; i++) {
            double v;
            memcpy(&v, p + 8 * i, 8);
            dst[i] = (float)v;
        }
        return DDPM_OK;
    case DDPM_DT_F16:
        for (size_t i = 0; i < t->numel; i++) {
            uint16_t h;
            memcpy(&h, p + 2 * i, 2);
            dst[i] = half_to_float(h);
        }
        return DDPM_OK;
    case DDPM_DT_BF16:
        for (size_t i = 0; i < t->numel; i++) {
            uint16_t h;
            memcpy(&h, p + 2 * i, 2);
            uint32_t bits = (uint32_t)h << 16;
            memcpy(&dst[i], &bits, 4);
        }
        return DDPM_OK;
    default:
        return ddpm_fail(DDPM_ERR_FORMAT, "tensor '%s' has dtype %s, expected a float type",
                         t->name, ddpm_dtype_name(t->dtype));
    }
}

int ddpm_safetensors_write(const char *path, const ddpm_tensor *tensors, size_t n_tensors,
                           const char *const *meta_keys, const char *const *meta_values,
                           size_t n_meta) {
    uLong crc = crc32(0L, Z_NULL, 0);
    cJSON *root = cJSON_CreateObject();
    cJSON *meta = cJSON_CreateObject();
    if (!root || !meta) {
        cJSON_Delete(root);
        cJSON_Delete(meta);
        return ddpm_fail(DDPM_ERR_NOMEM, "out of memory");
    }
    cJSON_AddItemToObject(root, "__metadata__", meta);
    for (size_t i = 0; i < n_meta; i++) cJSON_AddStringToObject(meta, meta_keys[i], meta_values[i]);
    size_t off = 0;
    for (size_t i = 0; i < n_tensors; i++) {
        const ddpm_tensor *t = &tensors[i];
        size_t numel = 1;
        for (int k = 0; k < t->ndim; k++) numel = ddpm_size_mul(numel, (size_t)t->shape[k]);
        size_t nbytes = ddpm_size_mul(numel, ddpm_dtype_size(t->dtype));
        cJSON *e = cJSON_CreateObject();
        cJSON_AddStringToObject(e, "dtype", ddpm_dtype_name(t->dtype));
        cJSON *shape = cJSON_AddArrayToObject(e, "shape");
        for (int k = 0; k < t->ndim; k++)
            cJSON_AddItemToArray(shape, cJSON_CreateNumber((double)t->shape[k]));
        cJSON *offs = cJSON_AddArrayToObject(e, "data_offsets");
        cJSON_AddItemToArray(offs, cJSON_CreateNumber((double)off));
        cJSON_AddItemToArray(offs, cJSON_CreateNumber((double)(off + nbytes)));
        cJSON_AddItemToObject(root, t->name, e);
        for (size_t o = 0; o < nbytes; o += 1u << 30) {
            size_t len = nbytes - o < (1u << 30) ? nbytes - o : (1u << 30);
            crc = crc32(crc, (const unsigned char *)t->data + o, (uInt)len);
        }
        off += nbytes;
    }
    char crcs[16];
    snprintf(crcs, sizeof crcs, "%08lx", (unsigned long)crc);
    cJSON_AddStringToObject(meta, "ddpm.crc32", crcs);
    char *json = cJSON_PrintUnformatted(root);
    cJSON_Delete(root);
    if (!json) return ddpm_fail(DDPM_ERR_NOMEM, "out of memory");
    size_t jlen = strlen(json);
    size_t padded = (jlen + 7) / 8 * 8; /* keeps the data 8-byte aligned; spaces are allowed */
    char *header = malloc(8 + padded);
    if (!header) {
        cJSON_free(json);
        return ddpm_fail(DDPM_ERR_NOMEM, "out of memory");
    }
    for (int i = 0; i < 8; i++) header[i] = (char)((uint64_t)padded >> (8 * i));
    memcpy(header + 8, json, jlen);
    memset(header + 8 + jlen, ' ', padded - jlen);
    cJSON_free(json);
    const void **parts = malloc((n_tensors + 1) * sizeof *parts);
    size_t *sizes = malloc((n_tensors + 1) * sizeof *sizes);
    int rc;
    if (!parts || !sizes) {
        rc = ddpm_fail(DDPM_ERR_NOMEM, "out of memory");
    } else {
        parts[0] = header;
        sizes[0] = 8 + padded;
        for (size_t i = 0; i < n_tensors; i++) {
            size_t numel = 1;
            for (int k = 0; k < tensors[i].ndim; k++) numel *= (size_t)tensors[i].shape[k];
            parts[i + 1] = tensors[i].data;
            sizes[i + 1] = numel * ddpm_dtype_size(tensors[i].dtype);
        }
        rc = ddpm_write_file_atomic(path, parts, sizes, n_tensors + 1);
    }
    free(parts);
    free(sizes);
    free(header);
    return rc;
}

/* torch_file.c - PyTorch state dicts (torch.save) read without Python, and the one entry point
 * for weights files, which tells the formats apart by their first bytes:
 *   - safetensors (8-byte header length, then '{'): ddpm_safetensors_read;
 *   - a ZIP archive (torch >= 1.6): <dir>/data.pkl, the pickle, and <dir>/data/<key>, one stored
 *     entry per storage (zip.c reads the archive);
 *   - the legacy stream (torch < 1.6, or _use_new_zipfile_serialization=False): five pickles
 *     (magic number, protocol version 1001, sys_info, the object, the sorted storage keys), then
 *     each storage as an int64 element count and its raw bytes.
 * The pickles go through the restricted unpickler of torch_pickle.c. A contiguous tensor then
 * points at its bytes in the file's buffer (as the safetensors reader's tensors do); a strided
 * view (a transpose, a slice with steps) is copied out contiguously into space appended to that
 * buffer, offsets and strides applied; storages shared by several tensors are read by each. The
 * result is the same ddpm_safetensors the safetensors reader gives. */
#include "core/internal.h"
#include "io/torch_pickle.h"
#include "io/zip.h"

#include <errno.h>

/* The legacy format's first pickle: PROTO 2, LONG1 of 10 bytes 0x1950a86a20f9469cfc6c. */
static const unsigned char legacy_magic[10] = {0x6c, 0xfc, 0x9c, 0x46, 0xf9,
                                               0x20, 0x6a, 0xa8, 0x50, 0x19};

/* Bounds on what the object graph may make us do: its nesting, the values visited while
 * looking for tensors (a graph that shares sub-objects can be exponentially larger than its
 * pickle) and the bytes copied out (views of one storage, stride 0 included, may repeat it). */
#define MAX_DEPTH 32
#define MAX_VISITS (1u << 22)
#define MAX_NAME 1024

/* ---- choosing the tensors ------------------------------------------------------------------ */

typedef struct {
    const char *path;
    tp_state *ps;
    char **names;
    size_t *tensor; /* index into ps->tensors */
    size_t n, cap;
    size_t visits;
} picked;

static int visit(picked *p) {
    if (++p->visits > MAX_VISITS)
        return ddpm_fail(DDPM_ERR_FORMAT, "%s: the pickled objects share sub-objects so often "
                         "that reading them would not end (refused)", p->path);
    return DDPM_OK;
}

/* 1 if v is or holds a tensor (within MAX_DEPTH levels), 0 if not, negative on error. */
static int holds_tensor(picked *p, const tp_value *v, int depth) {
    if (visit(p)) return -1;
    if (v->kind == TP_TENSOR) return 1;
    if (v->kind != TP_DICT && v->kind != TP_LIST && v->kind != TP_TUPLE) return 0;
    if (depth >= MAX_DEPTH) return 0;
    for (size_t i = v->kind == TP_DICT ? 1 : 0; i < v->n; i += v->kind == TP_DICT ? 2 : 1) {
        int h = holds_tensor(p, v->items[i], depth + 1);
        if (h) return h;
    }
    return 0;
}

/* The text of a str or int key (for names and messages). */
static const char *key_text(const tp_value *k, char *buf, size_t cap) {
    if (k->kind == TP_INT) {
        snprintf(buf, cap, "%lld", (long long)k->i);
        return buf;
    }
    if (k->len >= cap) return NULL;
    memcpy(buf, k->s, k->len);
    buf[k->len] = 0;
    return buf;
}

static int add_tensor(picked *p, const char *name, size_t tensor) {
    if (p->n == p->cap) {
        size_t cap = p->cap ? 2 * p->cap : 64;
        char **nn = realloc(p->names, cap * sizeof *nn);
        if (!nn) return ddpm_fail(DDPM_ERR_NOMEM, "out of memory");
        p->names = nn;
        size_t *nt = realloc(p->tensor, cap * sizeof *nt);
        if (!nt) return ddpm_fail(DDPM_ERR_NOMEM, "out of memory");
        p->tensor = nt;
        p->cap = cap;
    }
    if (!(p->names[p->n] = strdup(name))) return ddpm_fail(DDPM_ERR_NOMEM, "out of memory");
    p->tensor[p->n++] = tensor;
    return DDPM_OK;
}

/* Every tensor under v, named prefix.key.key... (list items by their index). */
static int flatten(picked *p, const tp_value *v, const char *prefix, int depth) {
    if (visit(p)) return DDPM_ERR_FORMAT;
    if (v->kind == TP_TENSOR) return add_tensor(p, prefix, (size_t)v->i);
    if (v->kind != TP_DICT && v->kind != TP_LIST && v->kind != TP_TUPLE) return DDPM_OK;
    if (depth >= MAX_DEPTH)
        return ddpm_fail(DDPM_ERR_FORMAT, "%s: objects nested deeper than %d levels", p->path, MAX_DEPTH);
    const int dict = v->kind == TP_DICT;
    for (size_t i = 0; i < v->n; i += dict ? 2 : 1) {
        char k[MAX_NAME], name[MAX_NAME];
        const char *kt = k;
        if (dict)
            kt = key_text(v->items[i], k, sizeof k);
        else
            snprintf(k, sizeof k, "%zu", i);
        const size_t pl = strlen(prefix), kl = kt ? strlen(kt) : 0;
        if (!kt || pl + kl + 2 > sizeof name)
            return ddpm_fail(DDPM_ERR_FORMAT, "%s: a tensor name longer than %d bytes", p->path, MAX_NAME);
        memcpy(name, prefix, pl);
        size_t at = pl;
        if (pl) name[at++] = '.';
        memcpy(name + at, kt, kl + 1);
        int rc = flatten(p, v->items[dict ? i + 1 : i], name, depth + 1);
        if (rc) return rc;
    }
    return DDPM_OK;
}

/* Up to 8 of a dict's keys for which want(value) holds, quoted, comma-separated, into buf. */
static const char *list_keys(picked *p, const tp_value *d, int tensors_only, char *buf, size_t cap) {
    size_t len = 0, shown = 0, more = 0;
    buf[0] = 0;
    for (size_t i = 0; i < d->n; i += 2) {
        if (tensors_only && holds_tensor(p, d->items[i + 1], 1) <= 0) continue;
        if (shown == 8) {
            more++;
            continue;
        }
        char k[64], pk[64];
        const char *kt = d->items[i]->kind == TP_INT ? key_text(d->items[i], k, sizeof k)
                                                     : tp_printable(d->items[i]->s, d->items[i]->len, pk, 48);
        int w = snprintf(buf + len, cap - len, "%s'%s'", shown ? ", " : "", kt);
        if (w < 0 || (size_t)w >= cap - len) break;
        len += (size_t)w;
        shown++;
    }
    if (more && len + 24 < cap) snprintf(buf + len, cap - len, " and %zu more", more);
    return buf;
}

/* The dict a key names: the whole key first, then a dotted path ("a.b": key "a", then "b"). */
static const tp_value *select_key(picked *p, const tp_value *v, const char *key, int depth) {
    if (v->kind != TP_DICT || depth >= MAX_DEPTH) return NULL;
    for (size_t i = 0; i < v->n; i += 2)
        if (tp_is_str(v->items[i], key)) return v->items[i + 1];
    for (size_t i = 0; i < v->n; i += 2) {
        const tp_value *k = v->items[i];
        if (k->kind == TP_STR && k->len < strlen(key) && memcmp(k->s, key, k->len) == 0 &&
            key[k->len] == '.') {
            const tp_value *r = select_key(p, v->items[i + 1], key + k->len + 1, depth + 1);
            if (r) return r;
        }
    }
    return NULL;
}

/* The tensors of the state dict `key` selects: NULL takes the top-level dict, which must hold
 * its tensors directly (non-tensor values such as "step": 5 are skipped); "*" takes every tensor
 * anywhere, with dotted names. */
static int pick(picked *p, const tp_value *root, const char *key) {
    char keys[512];
    if (key && strcmp(key, "*") == 0) return flatten(p, root, "", 0);
    const tp_value *d = root;
    if (key) {
        d = select_key(p, root, key, 0);
        if (!d) {
            if (root->kind != TP_DICT)
                return ddpm_fail(DDPM_ERR_INVALID, "%s: holds a %s, not a dict: there is no key '%s'",
                                 p->path, root->kind == TP_TENSOR ? "single tensor" : "non-dict object", key);
            return ddpm_fail(DDPM_ERR_INVALID, "%s: no key '%s' (its keys: %s)", p->path, key,
                             list_keys(p, root, 0, keys, sizeof keys));
        }
    }
    if (d->kind != TP_DICT)
        return ddpm_fail(DDPM_ERR_FORMAT, "%s: %s%s%s is a %s, not a dict of tensors", p->path,
                         key ? "key '" : "the saved object", key ? key : "", key ? "'" : "",
                         d->kind == TP_TENSOR ? "tensor" : d->kind == TP_LIST ? "list" : "value");
    int nested = 0;
    for (size_t i = 0; i < d->n; i += 2) {
        const tp_value *v = d->items[i + 1];
        if (v->kind == TP_TENSOR) continue;
        int h = holds_tensor(p, v, 1);
        if (h < 0) return DDPM_ERR_FORMAT;
        nested |= h;
    }
    if (nested)
        return ddpm_fail(DDPM_ERR_INVALID, "%s: tensors are nested under %s: choose one with --key "
                         "NAME (or --key '*' for all, with dotted names)", p->path,
                         list_keys(p, d, 1, keys, sizeof keys));
    for (size_t i = 0; i < d->n; i += 2) {
        const tp_value *v = d->items[i + 1];
        if (v->kind != TP_TENSOR) continue;
        char k[MAX_NAME];
        const char *kt = key_text(d->items[i], k, sizeof k);
        if (!kt) return ddpm_fail(DDPM_ERR_FORMAT, "%s: a tensor name longer than %d bytes", p->path, MAX_NAME);
        int rc = add_tensor(p, kt, (size_t)v->i);
        if (rc) return rc;
    }
    return DDPM_OK;
}

static int cmp_str(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* ---- copying the tensors out --------------------------------------------------------------- */

/* Copies the strided view t of src (elements of es bytes) to dst in C order. */
static void copy_view(unsigned char *dst, const unsigned char *src, size_t es, const tp_tensor *t) {
    if (t->numel == 0) return;
    if (t->ndim == 0) {
        memcpy(dst, src + t->offset * es, es);
        return;
    }
    const int last = t->ndim - 1;
    const size_t inner = (size_t)t->shape[last], inner_stride = (size_t)t->stride[last];
    size_t idx[DDPM_MAX_DIMS] = {0};
    for (size_t done = 0; done < t->numel; done += inner) {
        size_t base = t->offset;
        for (int d = 0; d < last; d++) base += idx[d] * (size_t)t->stride[d];
        if (inner_stride == 1) {
            memcpy(dst, src + base * es, inner * es);
        } else {
            for (size_t k = 0; k < inner; k++) memcpy(dst + k * es, src + (base + k * inner_stride) * es, es);
        }
        dst += inner * es;
        for (int d = last - 1; d >= 0; d--) {
            if (++idx[d] < (size_t)t->shape[d]) break;
            idx[d] = 0;
        }
    }
}

/* 1 if the view t reads numel consecutive elements from its offset (dimensions of size 1 may
 * have any stride), so its bytes can be used where they lie in the file. */
static int is_contiguous(const tp_tensor *t) {
    size_t want = 1;
    for (int d = t->ndim - 1; d >= 0; d--) {
        if (t->shape[d] != 1 && (size_t)t->stride[d] != want) return 0;
        want *= (size_t)t->shape[d];
    }
    return 1;
}

/* Builds out from the picked tensors, in the state dict's order. It takes over the file's buffer
 * (*file, set to NULL on success): a contiguous view points into it where its storage lies,
 * every other view is copied out contiguously into space appended to it, 8-byte aligned. So a
 * state dict of plain tensors costs no copy and no memory beyond the file. */
static int materialise(picked *p, unsigned char **file, size_t file_size, ddpm_safetensors *out) {
    if (p->n == 0) return ddpm_fail(DDPM_ERR_FORMAT, "%s: no tensors in the selected state dict", p->path);
    /* a name given twice (a repeated dict key, or "a.b" next to {"a": {"b": ...}} flattened) */
    char **sorted = ddpm_alloc(p->n, sizeof *sorted);
    if (!sorted) return DDPM_ERR_NOMEM;
    memcpy(sorted, p->names, p->n * sizeof *sorted);
    qsort(sorted, p->n, sizeof *sorted, cmp_str);
    int rc = DDPM_OK;
    for (size_t i = 1; i < p->n && !rc; i++)
        if (strcmp(sorted[i], sorted[i - 1]) == 0)
            rc = ddpm_fail(DDPM_ERR_FORMAT, "%s: tensor '%.200s' appears twice", p->path, sorted[i]);
    free(sorted);
    /* where each tensor's bytes will be: in the file, or at the end of the appended space */
    size_t *at = ddpm_alloc(p->n, sizeof *at);
    if (!at) rc = DDPM_ERR_NOMEM;
    const size_t base = (file_size + 7) / 8 * 8;
    size_t extra = 0;
    const size_t limit = ddpm_size_mul(file_size, 16) + (1u << 20);
    for (size_t i = 0; i < p->n && !rc; i++) {
        const tp_tensor *t = &p->ps->tensors[p->tensor[i]];
        const tp_storage *s = &p->ps->storages[t->storage];
        if (!s->data) {
            rc = ddpm_fail(DDPM_ERR_FORMAT, "%s: tensor '%.200s': its storage '%s' is missing from the file",
                           p->path, p->names[i], s->key);
            break;
        }
        const size_t es = ddpm_dtype_size(s->dtype);
        if (is_contiguous(t)) { /* in bounds: the unpickler checked the view against the storage */
            at[i] = (size_t)(s->data - *file) + (t->numel ? t->offset * es : 0);
            continue;
        }
        size_t nb = ddpm_size_mul(t->numel, es);
        size_t padded = nb > SIZE_MAX - 8 ? SIZE_MAX : (nb + 7) / 8 * 8;
        if (padded > limit || extra > limit - padded) {
            rc = ddpm_fail(DDPM_ERR_FORMAT, "%s: the strided views would take more than 16 times "
                           "the file's %zu bytes (views repeating one storage?): refused", p->path, file_size);
            break;
        }
        at[i] = base + extra;
        extra += padded;
    }
    unsigned char *buf = NULL;
    if (!rc) {
        buf = realloc(*file, base + extra + 1);
        if (!buf) rc = ddpm_fail(DDPM_ERR_NOMEM, "out of memory");
        else *file = NULL; /* realloc moved or kept it: buf owns it now */
    }
    if (!rc) {
        out->tensors = ddpm_alloc(p->n, sizeof *out->tensors);
        if (!out->tensors) rc = DDPM_ERR_NOMEM;
    }
    if (rc) {
        if (buf) *file = buf; /* the caller frees it */
        free(at);
        return rc;
    }
    out->file_ = buf;
    out->file_size_ = base + extra;
    for (size_t i = 0; i < p->n; i++) {
        const tp_tensor *t = &p->ps->tensors[p->tensor[i]];
        const tp_storage *s = &p->ps->storages[t->storage];
        ddpm_tensor *o = &out->tensors[i];
        o->name = p->names[i];
        p->names[i] = NULL; /* owned by out now */
        o->dtype = s->dtype;
        o->ndim = t->ndim;
        for (int d = 0; d < t->ndim; d++) o->shape[d] = t->shape[d];
        o->numel = t->numel;
        o->nbytes = t->numel * ddpm_dtype_size(s->dtype);
        o->data = buf + at[i];
        if (at[i] >= base) /* s->data pointed into the old buffer: the same offset in buf */
            copy_view(buf + at[i], buf + s->offset_, ddpm_dtype_size(s->dtype), t);
    }
    out->n_tensors = p->n;
    free(at);
    return DDPM_OK;
}

static void picked_free(picked *p) {
    for (size_t i = 0; i < p->n; i++) free(p->names[i]);
    free(p->names);
    free(p->tensor);
}

/* Picks the tensors of root and fills out. */
static int build(tp_state *ps, const tp_value *root, const char *key, unsigned char **file,
                 size_t file_size, ddpm_safetensors *out) {
    picked p = {.path = ps->path, .ps = ps};
    int rc = pick(&p, root, key);
    for (size_t i = 0; i < ps->n_storages; i++) /* where the storages lie, for after a realloc */
        ps->storages[i].offset_ = ps->storages[i].data ? (size_t)(ps->storages[i].data - *file) : 0;
    if (!rc) rc = materialise(&p, file, file_size, out);
    picked_free(&p);
    return rc;
}

/* ---- the two container formats --------------------------------------------------------------- */

static int read_zip(const char *path, unsigned char **file, size_t size, const char *key,
                    ddpm_safetensors *out) {
    const unsigned char *buf = *file;
    ddpm_zip z;
    int rc = ddpm_zip_open(path, buf, size, &z);
    if (rc) return rc;
    /* the pickle is <dir>/data.pkl, <dir> being "archive" or the saved file's stem */
    const ddpm_zip_entry *pkl = NULL;
    for (size_t i = 0; i < z.n_entries && !rc; i++) {
        const char *n = z.entries[i].name, *slash = strchr(n, '/');
        if (slash && strcmp(slash, "/data.pkl") == 0) {
            if (pkl) rc = ddpm_fail(DDPM_ERR_FORMAT, "%s: the archive holds two data.pkl", path);
            pkl = &z.entries[i];
        }
    }
    if (!rc && !pkl)
        rc = ddpm_fail(DDPM_ERR_FORMAT, "%s: a ZIP archive without <dir>/data.pkl: not a torch.save file",
                       path);
    const size_t dir_len = pkl ? (size_t)(strchr(pkl->name, '/') - pkl->name) : 0;
    char entry[256];
    if (!rc && dir_len > 128) rc = ddpm_fail(DDPM_ERR_FORMAT, "%s: archive folder name too long", path);
    if (!rc) {
        snprintf(entry, sizeof entry, "%.*s/byteorder", (int)dir_len, pkl->name);
        const ddpm_zip_entry *bo = ddpm_zip_find(&z, entry);
        if (bo && !(bo->size == 6 && memcmp(buf + bo->data_offset, "little", 6) == 0))
            rc = ddpm_fail(DDPM_ERR_FORMAT, "%s: saved on a big-endian machine: not supported", path);
    }
    if (!rc) rc = ddpm_zip_check_crc(path, buf, pkl);
    tp_state ps = {.path = path};
    tp_value *root = NULL;
    size_t used = 0;
    if (!rc) rc = tp_load(&ps, buf + pkl->data_offset, pkl->size, &used, &root);
    if (!rc && used != pkl->size)
        rc = ddpm_fail(DDPM_ERR_FORMAT, "%s: %zu bytes after the pickle's STOP in data.pkl", path,
                       pkl->size - used);
    for (size_t i = 0; i < ps.n_storages && !rc; i++) {
        tp_storage *s = &ps.storages[i];
        snprintf(entry, sizeof entry, "%.*s/data/%s", (int)dir_len, pkl->name, s->key);
        const ddpm_zip_entry *e = ddpm_zip_find(&z, entry);
        const size_t nb = s->numel * ddpm_dtype_size(s->dtype); /* checked by the unpickler */
        if (!e)
            rc = ddpm_fail(DDPM_ERR_FORMAT, "%s: storage entry '%s' is missing from the archive", path, entry);
        else if (e->size != nb)
            rc = ddpm_fail(DDPM_ERR_FORMAT, "%s: storage '%s' has %zu bytes, its %zu %s elements "
                           "need %zu (truncated or corrupted?)", path, entry, e->size, s->numel,
                           ddpm_dtype_name(s->dtype), nb);
        else if (!(rc = ddpm_zip_check_crc(path, buf, e)))
            s->data = buf + e->data_offset;
    }
    if (!rc) rc = build(&ps, root, key, file, size, out);
    tp_free(&ps);
    ddpm_zip_free(&z);
    return rc;
}

static int read_legacy(const char *path, unsigned char **file, size_t size, const char *key,
                       ddpm_safetensors *out) {
    const unsigned char *buf = *file;
    tp_state ps = {.path = path};
    tp_value *v[5] = {0};
    size_t pos = 0, used;
    int rc = DDPM_OK;
    for (int i = 0; i < 5 && !rc; i++) {
        ps.legacy = i == 3; /* only the object itself refers to storages */
        rc = tp_load(&ps, buf + pos, size - pos, &used, &v[i]);
        pos += used;
        if (rc) break;
        if (i == 0 && !(v[0]->kind == TP_BIGINT && v[0]->len == 10 && memcmp(v[0]->s, legacy_magic, 10) == 0))
            rc = ddpm_fail(DDPM_ERR_FORMAT, "%s: not a legacy PyTorch file (bad magic number)", path);
        if (i == 1 && !(v[1]->kind == TP_INT && v[1]->i == 1001))
            rc = ddpm_fail(DDPM_ERR_FORMAT, "%s: legacy PyTorch protocol version is not 1001", path);
        if (i == 2) {
            int little = 0;
            if (v[2]->kind == TP_DICT)
                for (size_t k = 0; k < v[2]->n; k += 2)
                    if (tp_is_str(v[2]->items[k], "little_endian"))
                        little = v[2]->items[k + 1]->kind == TP_BOOL && v[2]->items[k + 1]->i;
            if (!little) rc = ddpm_fail(DDPM_ERR_FORMAT, "%s: saved on a big-endian machine: not supported", path);
        }
        if (i == 4 && v[4]->kind != TP_LIST)
            rc = ddpm_fail(DDPM_ERR_FORMAT, "%s: the legacy storage key list is missing", path);
    }
    /* the storages, in the order of the key list: int64 element count, then the bytes */
    for (size_t k = 0; !rc && k < v[4]->n; k++) {
        const tp_value *kv = v[4]->items[k];
        tp_storage *s = NULL;
        for (size_t i = 0; i < ps.n_storages && kv->kind == TP_STR; i++)
            if (tp_is_str(kv, ps.storages[i].key)) s = &ps.storages[i];
        if (!s || s->data) {
            rc = ddpm_fail(DDPM_ERR_FORMAT, "%s: storage list entry %zu names no storage of the "
                           "object (or one twice)", path, k);
            break;
        }
        if (size - pos < 8) {
            rc = ddpm_fail(DDPM_ERR_FORMAT, "%s: truncated before storage '%s'", path, s->key);
            break;
        }
        uint64_t numel = 0;
        for (int b = 7; b >= 0; b--) numel = numel << 8 | buf[pos + (size_t)b];
        pos += 8;
        const size_t nb = s->numel * ddpm_dtype_size(s->dtype);
        if (numel != s->numel || nb > size - pos) {
            rc = ddpm_fail(DDPM_ERR_FORMAT, "%s: storage '%s': %llu elements recorded, %zu "
                           "expected, %zu bytes left (truncated or corrupted?)", path, s->key,
                           (unsigned long long)numel, s->numel, size - pos);
            break;
        }
        s->data = buf + pos;
        pos += nb;
    }
    if (!rc && pos != size)
        rc = ddpm_fail(DDPM_ERR_FORMAT, "%s: %zu bytes after the last storage", path, size - pos);
    if (!rc) rc = build(&ps, v[3], key, file, size, out);
    tp_free(&ps);
    return rc;
}

/* The legacy stream's first pickle: PROTO n, a FRAME at protocol 4 and up, LONG1 of the magic. */
static int is_legacy(const unsigned char *b, size_t n) {
    size_t p = n >= 11 && b[0] == 0x80 && b[2] == 0x95 ? 11 : 2;
    return n >= p + 12 && b[0] == 0x80 && b[p] == 0x8a && b[p + 1] == 10 &&
           memcmp(b + p + 2, legacy_magic, 10) == 0;
}

int ddpm_torch_read(const char *path, const char *key, ddpm_safetensors *out) {
    memset(out, 0, sizeof *out);
    unsigned char *buf;
    size_t size;
    int rc = ddpm_read_file(path, &buf, &size);
    if (rc) return rc;
    if (size >= 4 && memcmp(buf, "PK", 2) == 0)
        rc = read_zip(path, &buf, size, key, out);
    else if (is_legacy(buf, size))
        rc = read_legacy(path, &buf, size, key, out);
    else if (size >= 262 && memcmp(buf + 257, "ustar", 5) == 0)
        rc = ddpm_fail(DDPM_ERR_FORMAT, "%s: a tar archive (torch < 0.4 files): not supported", path);
    else
        rc = ddpm_fail(DDPM_ERR_FORMAT, "%s: not a PyTorch file (neither a torch.save ZIP archive "
                       "nor the legacy format)", path);
    free(buf); /* NULL when out took it over */
    if (rc) ddpm_safetensors_free(out);
    return rc;
}

/* ---- any weights file ---------------------------------------------------------------------- */

/* Keeps the tensors named key.* of a safetensors file, without the prefix. */
static int select_prefix(const char *path, const char *key, ddpm_safetensors *st) {
    const size_t kl = strlen(key);
    size_t kept = 0;
    for (size_t i = 0; i < st->n_tensors; i++) {
        char *n = st->tensors[i].name;
        if (strncmp(n, key, kl) == 0 && n[kl] == '.' && n[kl + 1]) {
            memmove(n, n + kl + 1, strlen(n + kl + 1) + 1);
            st->tensors[kept++] = st->tensors[i];
        } else {
            free(n);
        }
    }
    st->n_tensors = kept;
    if (!kept) return ddpm_fail(DDPM_ERR_INVALID, "%s: no tensors named '%s.*'", path, key);
    return DDPM_OK;
}

int ddpm_weights_read(const char *path, const char *key, ddpm_safetensors *out) {
    memset(out, 0, sizeof *out);
    unsigned char head[32] = {0};
    FILE *f = fopen(path, "rb");
    if (!f) return ddpm_fail(DDPM_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    size_t n = fread(head, 1, sizeof head, f);
    fclose(f);
    if (n >= 4 && memcmp(head, "PK", 2) == 0) return ddpm_torch_read(path, key, out);
    if (is_legacy(head, n)) return ddpm_torch_read(path, key, out);
    if (n >= 9 && head[8] == '{') {
        int rc = ddpm_safetensors_read(path, out);
        if (!rc && key && strcmp(key, "*") != 0) rc = select_prefix(path, key, out);
        if (rc) ddpm_safetensors_free(out);
        return rc;
    }
    int rc = ddpm_torch_read(path, key, out); /* its message says what the file is not */
    if (rc == DDPM_ERR_FORMAT && n < 9 && strstr(ddpm_last_error(), "not a PyTorch file"))
        return ddpm_fail(DDPM_ERR_FORMAT, "%s: %zu bytes is too short for a weights file", path, n);
    if (rc == DDPM_ERR_FORMAT && strstr(ddpm_last_error(), "not a PyTorch file"))
        return ddpm_fail(DDPM_ERR_FORMAT, "%s: not a weights file (expected safetensors or a "
                         "torch.save .pth/.pt/.bin, ZIP or legacy)", path);
    return rc;
}

/* zip.c - a minimal read-only ZIP reader for torch.save archives. torch (through miniz) writes
 * every entry stored (uncompressed), sizes in the central directory (the local headers carry
 * zeros and a data descriptor follows the data) and zip64 records once the archive or an entry
 * passes 4 GB. So this reads the end-of-central-directory record (and the zip64 one), then each
 * central directory entry, then its local header to find where the data starts. Every offset
 * and size from the file is checked against the file's length before it is used. */
#include "core/internal.h"
#include "io/zip.h"

#include <zlib.h>

#define SIG_LOCAL 0x04034b50u
#define SIG_CENTRAL 0x02014b50u
#define SIG_EOCD 0x06054b50u
#define SIG_EOCD64 0x06064b50u
#define SIG_EOCD64_LOC 0x07064b50u

static uint16_t rd16(const unsigned char *p) { return (uint16_t)(p[0] | p[1] << 8); }
static uint32_t rd32(const unsigned char *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}
static uint64_t rd64(const unsigned char *p) { return rd32(p) | (uint64_t)rd32(p + 4) << 32; }

void ddpm_zip_free(ddpm_zip *z) {
    if (!z) return;
    for (size_t i = 0; i < z->n_entries; i++) free(z->entries[i].name);
    free(z->entries);
    memset(z, 0, sizeof *z);
}

/* The end-of-central-directory record: the last one whose comment reaches the end of the file
 * exactly (a comment may itself hold the signature bytes). */
static int find_eocd(const unsigned char *buf, size_t size, size_t *pos) {
    if (size < 22) return 0;
    size_t lo = size - 22 > 65535 ? size - 22 - 65535 : 0;
    for (size_t p = size - 22 + 1; p-- > lo;)
        if (rd32(buf + p) == SIG_EOCD && p + 22 + rd16(buf + p + 20) == size) {
            *pos = p;
            return 1;
        }
    return 0;
}

/* A name that stays inside the archive: relative, no "..", no backslash, no NUL. */
static int name_is_safe(const char *n, size_t len) {
    if (len == 0 || n[0] == '/') return 0;
    for (size_t i = 0; i < len; i++)
        if (n[i] == '\\' || n[i] == 0) return 0;
    for (size_t i = 0; i < len;) {
        size_t j = i;
        while (j < len && n[j] != '/') j++;
        if (j - i == 2 && n[i] == '.' && n[i + 1] == '.') return 0;
        i = j + 1;
    }
    return 1;
}

typedef struct {
    size_t header, end; /* local header offset, end of the data */
    size_t index;
} span;

static int cmp_span(const void *a, const void *b) {
    const span *x = a, *y = b;
    return x->header < y->header ? -1 : x->header > y->header;
}

static int cmp_entry_name(const void *a, const void *b) {
    return strcmp(((const ddpm_zip_entry *)a)->name, ((const ddpm_zip_entry *)b)->name);
}

/* Reads the zip64 extra field of a central entry: the 8-byte values of the fields that are
 * 0xFFFFFFFF in the entry, in the order size, compressed size, header offset. */
static int read_zip64_extra(const unsigned char *ex, size_t ex_len, uint64_t *usize, uint64_t *csize,
                            uint64_t *offset) {
    for (size_t p = 0; p + 4 <= ex_len;) {
        uint16_t id = rd16(ex + p), len = rd16(ex + p + 2);
        if (p + 4 + len > ex_len) return 0;
        if (id == 0x0001) {
            const unsigned char *f = ex + p + 4;
            size_t k = 0;
            uint64_t *fields[3] = {usize, csize, offset};
            for (int i = 0; i < 3; i++) {
                if (*fields[i] != 0xFFFFFFFFu) continue;
                if (k + 8 > len) return 0;
                *fields[i] = rd64(f + k);
                k += 8;
            }
            return 1;
        }
        p += 4 + (size_t)len;
    }
    /* no zip64 field: every value must be a plain 32-bit one */
    return *usize != 0xFFFFFFFFu && *csize != 0xFFFFFFFFu && *offset != 0xFFFFFFFFu;
}

int ddpm_zip_open(const char *path, const unsigned char *buf, size_t size, ddpm_zip *z) {
    memset(z, 0, sizeof *z);
    size_t eocd;
    if (!find_eocd(buf, size, &eocd))
        return ddpm_fail(DDPM_ERR_FORMAT,
                         "%s: no ZIP end-of-central-directory record (truncated file?)", path);
    const unsigned char *e = buf + eocd;
    uint64_t n_entries = rd16(e + 10), cd_size = rd32(e + 12), cd_off = rd32(e + 16);
    if (rd16(e + 4) != 0 || rd16(e + 6) != 0 || rd16(e + 8) != rd16(e + 10))
        return ddpm_fail(DDPM_ERR_FORMAT, "%s: multi-disk ZIP archives are not supported", path);
    size_t cd_limit = eocd; /* the central directory ends where the records after it begin */
    /* torch (miniz) writes the zip64 records whenever it may need them, small files included;
     * when they are there, they are the authority */
    const int has64 = eocd >= 20 && rd32(buf + eocd - 20) == SIG_EOCD64_LOC;
    if (!has64 && (n_entries == 0xFFFF || cd_size == 0xFFFFFFFFu || cd_off == 0xFFFFFFFFu))
        return ddpm_fail(DDPM_ERR_FORMAT, "%s: ZIP zip64 locator missing", path);
    if (has64) {
        uint64_t off64 = rd64(buf + eocd - 20 + 8);
        if (off64 > eocd - 20 || eocd - 20 - off64 < 56 || rd32(buf + off64) != SIG_EOCD64)
            return ddpm_fail(DDPM_ERR_FORMAT, "%s: ZIP zip64 end record outside the file", path);
        const unsigned char *e64 = buf + off64;
        if (rd32(e64 + 16) != 0 || rd32(e64 + 20) != 0 || rd64(e64 + 24) != rd64(e64 + 32))
            return ddpm_fail(DDPM_ERR_FORMAT, "%s: multi-disk ZIP archives are not supported", path);
        n_entries = rd64(e64 + 32);
        cd_size = rd64(e64 + 40);
        cd_off = rd64(e64 + 48);
        cd_limit = (size_t)off64;
    }
    if (cd_off > cd_limit || cd_size != cd_limit - cd_off)
        return ddpm_fail(DDPM_ERR_FORMAT,
                         "%s: ZIP central directory (%llu bytes at %llu) does not end where the end "
                         "record begins (truncated or corrupted file?)",
                         path, (unsigned long long)cd_size, (unsigned long long)cd_off);
    if (n_entries > cd_size / 46)
        return ddpm_fail(DDPM_ERR_FORMAT, "%s: ZIP claims %llu entries in a central directory of "
                         "%llu bytes", path, (unsigned long long)n_entries, (unsigned long long)cd_size);
    z->entries = ddpm_alloc(n_entries ? (size_t)n_entries : 1, sizeof *z->entries);
    span *spans = ddpm_alloc(n_entries ? (size_t)n_entries : 1, sizeof *spans);
    int rc = DDPM_OK;
    if (!z->entries || !spans) rc = DDPM_ERR_NOMEM;
    size_t p = (size_t)cd_off;
    const size_t cd_end = (size_t)(cd_off + cd_size);
    for (uint64_t i = 0; i < n_entries && !rc; i++) {
        if (cd_end - p < 46 || rd32(buf + p) != SIG_CENTRAL) {
            rc = ddpm_fail(DDPM_ERR_FORMAT, "%s: ZIP central directory entry %llu is malformed",
                           path, (unsigned long long)i);
            break;
        }
        const unsigned char *c = buf + p;
        uint16_t flags = rd16(c + 8), method = rd16(c + 10);
        size_t nlen = rd16(c + 28), xlen = rd16(c + 30), clen = rd16(c + 32);
        if (cd_end - p - 46 < nlen + xlen + clen) {
            rc = ddpm_fail(DDPM_ERR_FORMAT, "%s: ZIP central directory entry %llu runs past the "
                           "directory", path, (unsigned long long)i);
            break;
        }
        const char *name = (const char *)c + 46;
        if (!name_is_safe(name, nlen)) {
            rc = ddpm_fail(DDPM_ERR_FORMAT, "%s: ZIP entry name '%.*s' is empty, absolute or "
                           "leaves the archive (refused)", path, (int)(nlen > 200 ? 200 : nlen), name);
            break;
        }
        uint64_t csize = rd32(c + 20), usize = rd32(c + 24), hoff = rd32(c + 42);
        if (!read_zip64_extra(c + 46 + nlen, xlen, &usize, &csize, &hoff)) {
            rc = ddpm_fail(DDPM_ERR_FORMAT, "%s: ZIP entry '%.*s': bad zip64 field", path,
                           (int)nlen, name);
            break;
        }
        if (method != 0 || (flags & 1) || csize != usize) {
            rc = ddpm_fail(DDPM_ERR_FORMAT, "%s: ZIP entry '%.*s' is %s (only stored entries are "
                           "read, as torch.save writes them)", path, (int)nlen, name,
                           (flags & 1) ? "encrypted" : "compressed");
            break;
        }
        /* the local header: its own name and extra field lengths decide where the data starts */
        if (hoff > cd_off || cd_off - hoff < 30 || rd32(buf + hoff) != SIG_LOCAL) {
            rc = ddpm_fail(DDPM_ERR_FORMAT, "%s: ZIP entry '%.*s': local header outside the file "
                           "or malformed", path, (int)nlen, name);
            break;
        }
        const unsigned char *l = buf + hoff;
        size_t lnlen = rd16(l + 26), lxlen = rd16(l + 28);
        size_t data = (size_t)hoff + 30 + lnlen + lxlen;
        if (lnlen != nlen || data > cd_off || memcmp(l + 30, name, nlen) != 0 ||
            usize > cd_off - data) {
            rc = ddpm_fail(DDPM_ERR_FORMAT, "%s: ZIP entry '%.*s' (%llu bytes) does not fit the "
                           "file or disagrees with its local header (truncated or corrupted?)",
                           path, (int)nlen, name, (unsigned long long)usize);
            break;
        }
        ddpm_zip_entry *ze = &z->entries[z->n_entries];
        ze->name = malloc(nlen + 1);
        if (!ze->name) {
            rc = ddpm_fail(DDPM_ERR_NOMEM, "out of memory");
            break;
        }
        memcpy(ze->name, name, nlen);
        ze->name[nlen] = 0;
        ze->data_offset = data;
        ze->size = (size_t)usize;
        ze->crc32 = rd32(c + 16);
        spans[z->n_entries] = (span){(size_t)hoff, data + (size_t)usize, z->n_entries};
        z->n_entries++;
        p += 46 + nlen + xlen + clen;
    }
    /* No two entries share bytes (an overlap is how zip bombs and confused readers start). */
    if (!rc) {
        qsort(spans, z->n_entries, sizeof *spans, cmp_span);
        for (size_t i = 1; i < z->n_entries && !rc; i++)
            if (spans[i].header < spans[i - 1].end)
                rc = ddpm_fail(DDPM_ERR_FORMAT, "%s: ZIP entries '%s' and '%s' overlap (refused)",
                               path, z->entries[spans[i - 1].index].name,
                               z->entries[spans[i].index].name);
    }
    if (!rc) {
        ddpm_zip_entry *sorted = ddpm_alloc(z->n_entries ? z->n_entries : 1, sizeof *sorted);
        if (!sorted) {
            rc = DDPM_ERR_NOMEM;
        } else {
            memcpy(sorted, z->entries, z->n_entries * sizeof *sorted);
            qsort(sorted, z->n_entries, sizeof *sorted, cmp_entry_name);
            for (size_t i = 1; i < z->n_entries && !rc; i++)
                if (strcmp(sorted[i].name, sorted[i - 1].name) == 0)
                    rc = ddpm_fail(DDPM_ERR_FORMAT, "%s: ZIP entry '%s' appears twice", path,
                                   sorted[i].name);
            free(sorted);
        }
    }
    free(spans);
    if (rc) ddpm_zip_free(z);
    return rc;
}

const ddpm_zip_entry *ddpm_zip_find(const ddpm_zip *z, const char *name) {
    for (size_t i = 0; i < z->n_entries; i++)
        if (strcmp(z->entries[i].name, name) == 0) return &z->entries[i];
    return NULL;
}

int ddpm_zip_check_crc(const char *path, const unsigned char *buf, const ddpm_zip_entry *e) {
    uLong crc = crc32(0L, Z_NULL, 0);
    for (size_t off = 0; off < e->size; off += 1u << 30) {
        size_t len = e->size - off < (1u << 30) ? e->size - off : (1u << 30);
        crc = crc32(crc, buf + e->data_offset + off, (uInt)len);
    }
    if ((uint32_t)crc != e->crc32)
        return ddpm_fail(DDPM_ERR_FORMAT, "%s: ZIP entry '%s': CRC-32 mismatch (stored %08x, "
                         "computed %08x): the file is corrupted", path, e->name, e->crc32,
                         (unsigned)crc);
    return DDPM_OK;
}

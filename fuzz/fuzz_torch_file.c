/* fuzz_torch_file.c - PyTorch files through ddpm_weights_read (the zip reader, the restricted
 * unpickler, the legacy stream and the copy of every view). The first byte of an input chooses:
 *   bit 0   0: the rest is the file as it is (a ZIP, a legacy stream, a safetensors file, or
 *              anything); 1: the rest is [u16 n][n bytes of pickle] then records
 *              [u8 key][u16 n][n bytes], and the harness wraps them in a valid torch archive
 *              (archive/data.pkl, archive/data/<key>, correct CRC-32s), so mutations reach the
 *              unpickler and the views instead of dying at a checksum;
 *   bits 1-2  the key: none, "model", "*", "ema".
 * A file it accepts must be safe to use: every tensor's bytes lie in the reader's buffer, sizes
 * agree with shapes and dtypes, and every byte is read. scripts/fuzz-seeds.sh writes the seeds
 * from tests/fixtures/torch/. */
#include "fuzz_common.h"

#include <zlib.h>

static void put16(unsigned char *p, unsigned v) {
    p[0] = (unsigned char)v;
    p[1] = (unsigned char)(v >> 8);
}
static void put32(unsigned char *p, uint32_t v) {
    put16(p, v & 0xFFFF);
    put16(p + 2, v >> 16);
}

/* A stored ZIP of n entries (names[i], data[i], size[i]) in out (malloc'd). */
static unsigned char *build_zip(size_t n, const char *const *names, const uint8_t *const *data,
                                const size_t *sizes, size_t *out_size) {
    size_t total = 22;
    for (size_t i = 0; i < n; i++) total += 30 + 46 + 2 * strlen(names[i]) + sizes[i];
    unsigned char *z = calloc(1, total), *p = z;
    size_t *offs = calloc(n ? n : 1, sizeof *offs);
    FUZZ_CHECK(z && offs);
    for (size_t i = 0; i < n; i++) {
        const size_t nl = strlen(names[i]);
        offs[i] = (size_t)(p - z);
        put32(p, 0x04034b50u);
        put16(p + 4, 20);
        put32(p + 14, (uint32_t)crc32(0, data[i], (uInt)sizes[i]));
        put32(p + 18, (uint32_t)sizes[i]);
        put32(p + 22, (uint32_t)sizes[i]);
        put16(p + 26, (unsigned)nl);
        memcpy(p + 30, names[i], nl);
        if (sizes[i]) memcpy(p + 30 + nl, data[i], sizes[i]);
        p += 30 + nl + sizes[i];
    }
    const size_t cd = (size_t)(p - z);
    for (size_t i = 0; i < n; i++) {
        const size_t nl = strlen(names[i]);
        put32(p, 0x02014b50u);
        put16(p + 4, 20);
        put16(p + 6, 20);
        put32(p + 16, (uint32_t)crc32(0, data[i], (uInt)sizes[i]));
        put32(p + 20, (uint32_t)sizes[i]);
        put32(p + 24, (uint32_t)sizes[i]);
        put16(p + 28, (unsigned)nl);
        put32(p + 42, (uint32_t)offs[i]);
        memcpy(p + 46, names[i], nl);
        p += 46 + nl;
    }
    put32(p, 0x06054b50u);
    put16(p + 8, (unsigned)n);
    put16(p + 10, (unsigned)n);
    put32(p + 12, (uint32_t)((size_t)(p - z) - cd));
    put32(p + 16, (uint32_t)cd);
    p += 22;
    free(offs);
    *out_size = (size_t)(p - z);
    return z;
}

/* Mode 1: the pickle and storage records of the input as a torch archive. */
static unsigned char *wrap(const uint8_t *d, size_t n, size_t *out_size) {
    enum { MAX_ENTRIES = 64 };
    const char *names[MAX_ENTRIES];
    const uint8_t *data[MAX_ENTRIES];
    size_t sizes[MAX_ENTRIES];
    static char keys[MAX_ENTRIES][32];
    size_t k = 0, pos = 0;
    size_t len = n >= 2 ? (size_t)(d[0] | d[1] << 8) : 0;
    pos = n >= 2 ? 2 : n;
    if (len > n - pos) len = n - pos;
    names[k] = "archive/data.pkl";
    data[k] = d + pos;
    sizes[k++] = len;
    pos += len;
    while (k < MAX_ENTRIES && n - pos >= 3) {
        size_t sl = (size_t)(d[pos + 1] | d[pos + 2] << 8);
        snprintf(keys[k], sizeof keys[k], "archive/data/%u", (unsigned)d[pos]);
        pos += 3;
        if (sl > n - pos) sl = n - pos;
        names[k] = keys[k];
        data[k] = d + pos;
        sizes[k++] = sl;
        pos += sl;
    }
    return build_zip(k, names, data, sizes, out_size);
}

/* Where the byte sums go, so the compiler keeps the reads that let ASan check every byte. */
static volatile unsigned sink;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1) return 0;
    static const char *const keys[4] = {NULL, "model", "*", "ema"};
    const char *key = keys[(data[0] >> 1) & 3];
    const char *path;
    if (data[0] & 1) {
        size_t zn;
        unsigned char *z = wrap(data + 1, size - 1, &zn);
        path = fuzz_write(0, "input.pth", z, zn);
        free(z);
    } else {
        path = fuzz_write(0, "input.pth", data + 1, size - 1);
    }
    ddpm_safetensors st;
    if (fuzz_rc(ddpm_weights_read(path, key, &st)) != DDPM_OK) {
        FUZZ_CHECK(st.n_tensors == 0 && st.tensors == NULL && st.file_ == NULL);
        return 0;
    }
    unsigned sum = 0;
    for (size_t i = 0; i < st.n_tensors; i++) {
        const ddpm_tensor *t = &st.tensors[i];
        size_t numel = 1;
        for (int d = 0; d < t->ndim; d++) numel *= (size_t)t->shape[d];
        FUZZ_CHECK(t->name && t->numel == numel && t->nbytes == numel * ddpm_dtype_size(t->dtype));
        FUZZ_CHECK((const uint8_t *)t->data >= st.file_ &&
                   (const uint8_t *)t->data + t->nbytes <= st.file_ + st.file_size_);
        for (size_t b = 0; b < t->nbytes; b++) sum += ((const uint8_t *)t->data)[b];
        if (t->dtype <= DDPM_DT_BF16) {
            float *v = malloc(t->numel ? t->numel * sizeof(float) : 1);
            FUZZ_CHECK(v);
            FUZZ_CHECK(ddpm_tensor_to_f32(t, v) == DDPM_OK);
            fuzz_touch(v, t->numel);
            free(v);
        }
    }
    sink += sum;
    ddpm_safetensors_free(&st);
    return 0;
}

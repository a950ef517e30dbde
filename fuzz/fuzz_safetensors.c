/* fuzz_safetensors.c - ddpm_safetensors_read on any bytes: header length, header JSON, dtypes,
 * shapes, offsets, metadata, checksum. A file it accepts must be safe to use: every tensor's bytes
 * are read back through ddpm_tensor_to_f32 and every metadata string is looked up. */
#include "fuzz_common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const char *path = fuzz_write(0, "input.safetensors", data, size);
    ddpm_safetensors st;
    if (fuzz_rc(ddpm_safetensors_read(path, &st)) != DDPM_OK) return 0;
    for (size_t i = 0; i < st.n_tensors; i++) {
        const ddpm_tensor *t = &st.tensors[i];
        FUZZ_CHECK(ddpm_safetensors_find(&st, t->name) == t);
        FUZZ_CHECK(t->nbytes == t->numel * ddpm_dtype_size(t->dtype));
        FUZZ_CHECK((const uint8_t *)t->data >= st.file_ &&
                   (const uint8_t *)t->data + t->nbytes <= st.file_ + st.file_size_);
        if (t->dtype <= DDPM_DT_BF16) {
            float *v = malloc(t->numel ? t->numel * sizeof(float) : 1);
            FUZZ_CHECK(v);
            FUZZ_CHECK(ddpm_tensor_to_f32(t, v) == DDPM_OK);
            fuzz_touch(v, t->numel);
            free(v);
        }
    }
    for (size_t i = 0; i < st.n_meta; i++)
        FUZZ_CHECK(ddpm_safetensors_meta(&st, st.meta_keys[i]) != NULL);
    ddpm_safetensors_free(&st);
    return 0;
}

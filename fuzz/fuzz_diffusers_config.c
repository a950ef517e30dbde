/* fuzz_diffusers_config.c - a diffusers config file's text through both readers of
 * io/diffusers.c: as scheduler_config.json (ddpm_diffusers_scheduler_parse: the schedule it
 * gives must be valid) and as a UNet2DModel config.json (ddpm_diffusers_model_config, then the
 * unet2d network through the registry, bounded at 1M weights and 64K-value items as a folder's
 * weights file bounds it; a small model must give a finite forward). */
#include "fuzz_common.h"
#include "models/model_internal.h"

#include <math.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    ddpm_schedule s;
    ddpm_prediction pred;
    ddpm_diffusers_sampling smp;
    int rc = fuzz_rc(ddpm_diffusers_scheduler_parse((const char *)data, size, "scheduler_config.json", &s, &pred, &smp));
    if (!rc) {
        FUZZ_CHECK(s.n >= 2 && s.t0 == 0);
        for (int b = 0; b < DDPM_SCHEDULE_NUM_BUFFERS; b++) fuzz_touch(ddpm_schedule_buffer(&s, b), (size_t)s.n);
        FUZZ_CHECK(pred >= DDPM_PRED_EPS && pred <= DDPM_PRED_V && smp.scheduler[0]);
        ddpm_schedule_free(&s);
    } else {
        FUZZ_CHECK(strstr(ddpm_last_error(), "scheduler_config.json"));
    }
    char *json = NULL;
    rc = fuzz_rc(ddpm_diffusers_model_config((const char *)data, size, "config.json", 1000, &json));
    if (rc) {
        FUZZ_CHECK(!json && strstr(ddpm_last_error(), "config.json"));
        return 0;
    }
    ddpm_model *m = NULL;
    rc = fuzz_rc(ddpm_model_create_bounded(json, 1, (size_t)1 << 20, (size_t)1 << 16, "the harness allows", &m));
    free(json);
    if (rc) {
        FUZZ_CHECK(!m && ddpm_last_error()[0]);
        return 0;
    }
    FUZZ_CHECK(strcmp(m->ops->kind, "unet2d") == 0 && m->num_timesteps == 1000);
    ddpm_model *again = NULL; /* the stored config builds the same model (checkpoints, export) */
    FUZZ_CHECK(ddpm_model_create(m->config_json, 1, &again) == DDPM_OK);
    FUZZ_CHECK(again->n_params == m->n_params && strcmp(again->config_json, m->config_json) == 0);
    ddpm_model_free(again);
    if (m->n_params <= 50000 && m->sample_numel <= 4096) {
        float *x = calloc(m->sample_numel, sizeof(float)), *out = calloc(m->sample_numel, sizeof(float));
        float *cond = m->cond_dim > 0 ? calloc((size_t)m->cond_dim, sizeof(float)) : NULL;
        FUZZ_CHECK(x && out && (m->cond_dim <= 0 || cond));
        for (size_t i = 0; i < m->sample_numel; i++) x[i] = (float)((i % 7) - 3) / 3.0f;
        if (cond) cond[0] = 1.0f;
        const int t = 999;
        ddpm_model_input in = {.x = x, .t = &t, .cond = cond, .B = 1};
        FUZZ_CHECK(m->ops->forward(m, &in, out) == DDPM_OK);
        for (size_t i = 0; i < m->sample_numel; i++) FUZZ_CHECK(isfinite(out[i]));
        free(x);
        free(out);
        free(cond);
    }
    ddpm_model_free(m);
    return 0;
}

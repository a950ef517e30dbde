/* fuzz_checkpoint.c - ddpm_checkpoint_load on any bytes: the safetensors layer, then the
 * checkpoint's metadata (format, model config JSON, schedule JSON, training config JSON, step,
 * data JSON), the model built from its config and every tensor loaded into it (model, EMA, Adam
 * moments). A checkpoint it accepts is read back whole: weights, schedule buffers, copies. */
#include "fuzz_common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const char *path = fuzz_write(0, "ckpt.safetensors", data, size);
    ddpm_checkpoint ck;
    if (fuzz_rc(ddpm_checkpoint_load(path, &ck)) != DDPM_OK) return 0;
    const ddpm_model *m = ck.model;
    FUZZ_CHECK(m && ck.step >= 0);
    fuzz_touch(m->params, m->n_params);
    if (m->n_buffers) fuzz_touch(m->buffers, m->n_buffers);
    if (ck.ema) fuzz_touch(ck.ema, m->n_params);
    if (ck.adam_m) fuzz_touch(ck.adam_m, m->n_params);
    if (ck.adam_v) fuzz_touch(ck.adam_v, m->n_params);
    FUZZ_CHECK(ck.schedule.n == m->num_timesteps);
    for (int b = 0; b < DDPM_SCHEDULE_NUM_BUFFERS; b++)
        fuzz_touch(ddpm_schedule_buffer(&ck.schedule, b), (size_t)ck.schedule.n);
    ddpm_checkpoint_free(&ck);
    return 0;
}

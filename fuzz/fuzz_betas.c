/* fuzz_betas.c - a betas file (ddpm_betas_read: numbers separated by spaces, commas or
 * semicolons, '#' comments), then a custom schedule built from what it read: a schedule that
 * builds has every buffer finite. */
#include "fuzz_common.h"

#include <math.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const char *path = fuzz_write(0, "betas.txt", data, size);
    double *betas = NULL;
    int count = 0;
    if (fuzz_rc(ddpm_betas_read(path, &betas, &count)) != DDPM_OK) {
        FUZZ_CHECK(!betas);
        return 0;
    }
    FUZZ_CHECK(count >= 2);
    ddpm_schedule_config c;
    ddpm_schedule_config_default(&c, DDPM_SCHEDULE_CUSTOM, count);
    c.betas = betas;
    ddpm_schedule s;
    if (ddpm_schedule_init(&s, &c) == DDPM_OK) {
        for (int b = 0; b < DDPM_SCHEDULE_NUM_BUFFERS; b++)
            for (int i = 0; i < s.n; i++) FUZZ_CHECK(isfinite(ddpm_schedule_buffer(&s, b)[i]));
        ddpm_schedule_free(&s);
    }
    free(betas);
    return 0;
}

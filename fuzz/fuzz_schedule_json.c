/* fuzz_schedule_json.c - a schedule config JSON (a checkpoint's "schedule" metadata) through
 * ddpm_schedule_from_json, and the JSON it writes back, which must give the same schedule. */
#include "fuzz_common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char *json = fuzz_cstr(data, size);
    ddpm_schedule s;
    int rc = fuzz_rc(ddpm_schedule_from_json(json, &s));
    free(json);
    if (rc) return 0;
    FUZZ_CHECK(s.n >= 2);
    for (int b = 0; b < DDPM_SCHEDULE_NUM_BUFFERS; b++)
        fuzz_touch(ddpm_schedule_buffer(&s, b), (size_t)s.n);
    char *back = ddpm_schedule_config_json(&s);
    FUZZ_CHECK(back);
    ddpm_schedule s2;
    FUZZ_CHECK(ddpm_schedule_from_json(back, &s2) == DDPM_OK);
    FUZZ_CHECK(s2.n == s.n && memcmp(s2.betas, s.betas, sizeof(float) * (size_t)s.n) == 0);
    ddpm_schedule_free(&s2);
    free(back);
    ddpm_schedule_free(&s);
    return 0;
}

/* fuzz_points.c - a CSV of points through ddpm_points_read_csv (header detection, separators,
 * quotes, comments, BOM, ragged rows, numbers). */
#include "fuzz_common.h"

#include <math.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const char *path = fuzz_write(0, "points.csv", data, size);
    ddpm_points p;
    if (fuzz_rc(ddpm_points_read_csv(path, &p)) != DDPM_OK) return 0;
    FUZZ_CHECK(p.n >= 1 && p.dim >= 1);
    for (size_t i = 0; i < p.n * (size_t)p.dim; i++) FUZZ_CHECK(isfinite(p.x[i]));
    ddpm_points_free(&p);
    return 0;
}

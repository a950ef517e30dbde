/* threads.c - the library's thread count (OpenMP's team size), for the CLI's --threads and for
 * programs that embed the library. */
#include "core/internal.h"

#include <omp.h>

int ddpm_set_threads(int n) {
    if (n < 1) return ddpm_fail(DDPM_ERR_INVALID, "threads must be at least 1 (got %d)", n);
    omp_set_num_threads(n);
    return DDPM_OK;
}

int ddpm_threads(void) { return omp_get_max_threads(); }

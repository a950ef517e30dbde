/* ddpm/core.h - status codes, errors and the counter-based random numbers every layer uses.
 * Part of the public API; include "ddpm.h" for all of it. */
#ifndef DDPM_CORE_H
#define DDPM_CORE_H

#include <stddef.h>
#include <stdint.h>

#define DDPM_VERSION "0.1.0"

#ifdef __cplusplus
extern "C" {
#endif

/* ------------------------------------------------------------------------------------------ */
/* Status and errors                                                                           */
/* ------------------------------------------------------------------------------------------ */

typedef enum {
    DDPM_OK = 0,
    DDPM_ERR_INVALID = 1,     /* a bad argument or bad user input (a flag, a value, a config) */
    DDPM_ERR_IO = 2,          /* a file could not be opened, read or written */
    DDPM_ERR_FORMAT = 3,      /* a file was read but its content is malformed */
    DDPM_ERR_NOMEM = 4,       /* an allocation failed */
    DDPM_ERR_NUMERIC = 5,     /* a NaN or inf appeared (e.g. a diverging loss) */
    DDPM_ERR_INTERRUPTED = 6, /* the user asked to stop (SIGINT) */
} ddpm_status;

/* The message of the most recent failure on this thread ("" if none). */
const char *ddpm_last_error(void);
/* Records a printf-style message as the last error and returns code (for `return ddpm_fail(...)`). */
int ddpm_fail(int code, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;
/* Short name of a status code ("invalid input", "I/O error", ...). */
const char *ddpm_status_name(int code);

/* Threads for the library's work from now on (OpenMP's team size; the default is
 * OMP_NUM_THREADS or the machine's cores). Results never depend on it. Fails for n < 1. */
int ddpm_set_threads(int n);
/* The threads the library uses now. */
int ddpm_threads(void);
/* The instruction set the library's kernels run at: "avx512", "avx2" or "ref" (the best the CPU
 * has, capped by the DDPM_ISA environment variable: ref, avx2 or avx512). */
const char *ddpm_kernel_isa(void);

/* ------------------------------------------------------------------------------------------ */
/* Random numbers: Philox4x32-10, counter based                                                 */
/* ------------------------------------------------------------------------------------------ */

/* One Philox4x32-10 block: out = philox(ctr, key). Matches the Random123 reference. */
void ddpm_philox4x32_10(const uint32_t ctr[4], const uint32_t key[2], uint32_t out[4]);

/* Streams separate the purposes random numbers are drawn for, so they never overlap. */
enum {
    DDPM_STREAM_SAMPLE_INIT = 1, /* x_T of the reverse process */
    DDPM_STREAM_SAMPLE_STEP = 2, /* the noise added at each reverse step */
    DDPM_STREAM_TRAIN_NOISE = 3, /* eps of the forward process during training */
    DDPM_STREAM_TRAIN_T = 4,     /* the random timestep of each training item */
    DDPM_STREAM_SHUFFLE = 5,     /* the per-epoch permutation of the data */
    DDPM_STREAM_DATA = 6,        /* built-in data generators */
    DDPM_STREAM_INIT = 7,        /* parameter initialisation */
    DDPM_STREAM_DROPOUT = 8,     /* dropout masks and context dropout */
    DDPM_STREAM_AUGMENT = 9,     /* data augmentation (flips) */
    DDPM_STREAM_EVAL = 10,       /* evaluation (random projections, fresh data draws) */
    DDPM_STREAM_EDIT = 11,       /* image editing: RePaint's known-region and undo noise */
    DDPM_STREAM_USER = 64        /* first stream free for applications */
};

/* n standard normal draws for (seed, stream, item, step). Draw k of the sequence is the same
 * whatever n is, so a prefix of a longer request equals a shorter request. */
void ddpm_randn(uint64_t seed, uint32_t stream, uint64_t item, uint32_t step, float *out, size_t n);
/* n uniform draws in [0, 1) with 24 random bits each (same addressing as ddpm_randn). */
void ddpm_randu(uint64_t seed, uint32_t stream, uint64_t item, uint32_t step, float *out, size_t n);
/* n raw 32-bit draws (same addressing as ddpm_randn). */
void ddpm_rand_u32(uint64_t seed, uint32_t stream, uint64_t item, uint32_t step, uint32_t *out,
                   size_t n);
/* One uniform integer in [0, bound) (bound > 0), unbiased (Lemire's method). */
uint32_t ddpm_rand_below(uint64_t seed, uint32_t stream, uint64_t item, uint32_t step,
                         uint32_t bound);

/* ------------------------------------------------------------------------------------------ */

#ifdef __cplusplus
}
#endif
#endif /* DDPM_CORE_H */

/* rng.c - Philox4x32-10 (Salmon et al., "Parallel random numbers: as easy as 1, 2, 3", 2011).
 *
 * Every draw is addressed by (seed, stream, item, step, k): the key is the 64-bit seed, the
 * counter is {k / 4, step, item low 32 bits, stream << 16 | item bits 32..47}. Nothing is
 * sequential, so a draw never depends on how many draws came before it, on the batch an item was
 * in or on the thread that made it. */
#include "core/internal.h"

#include <math.h>

#define PHILOX_M0 0xD2511F53u
#define PHILOX_M1 0xCD9E8D57u
#define PHILOX_W0 0x9E3779B9u
#define PHILOX_W1 0xBB67AE85u

void ddpm_philox4x32_10(const uint32_t ctr[4], const uint32_t key[2], uint32_t out[4]) {
    uint32_t c0 = ctr[0], c1 = ctr[1], c2 = ctr[2], c3 = ctr[3];
    uint32_t k0 = key[0], k1 = key[1];
    for (int r = 0; r < 10; r++) {
        uint64_t p0 = (uint64_t)PHILOX_M0 * c0;
        uint64_t p1 = (uint64_t)PHILOX_M1 * c2;
        uint32_t hi0 = (uint32_t)(p0 >> 32), lo0 = (uint32_t)p0;
        uint32_t hi1 = (uint32_t)(p1 >> 32), lo1 = (uint32_t)p1;
        c0 = hi1 ^ c1 ^ k0;
        c1 = lo1;
        c2 = hi0 ^ c3 ^ k1;
        c3 = lo0;
        k0 += PHILOX_W0;
        k1 += PHILOX_W1;
    }
    out[0] = c0;
    out[1] = c1;
    out[2] = c2;
    out[3] = c3;
}

static inline void block(uint64_t seed, uint32_t stream, uint64_t item, uint32_t step, uint32_t k4,
                         uint32_t out[4]) {
    const uint32_t key[2] = {(uint32_t)seed, (uint32_t)(seed >> 32)};
    const uint32_t ctr[4] = {k4, step, (uint32_t)item,
                             (stream << 16) | (uint32_t)((item >> 32) & 0xFFFFu)};
    ddpm_philox4x32_10(ctr, key, out);
}

void ddpm_rand_u32(uint64_t seed, uint32_t stream, uint64_t item, uint32_t step, uint32_t *out,
                   size_t n) {
    uint32_t r[4];
    for (size_t i = 0; i < n; i += 4) {
        block(seed, stream, item, step, (uint32_t)(i / 4), r);
        for (size_t j = 0; j < 4 && i + j < n; j++) out[i + j] = r[j];
    }
}

/* 24 random bits -> [0, 1) exactly representable in float. */
static inline float u01(uint32_t x) { return (float)(x >> 8) * (1.0f / 16777216.0f); }

void ddpm_randu(uint64_t seed, uint32_t stream, uint64_t item, uint32_t step, float *out,
                size_t n) {
    uint32_t r[4];
    for (size_t i = 0; i < n; i += 4) {
        block(seed, stream, item, step, (uint32_t)(i / 4), r);
        for (size_t j = 0; j < 4 && i + j < n; j++) out[i + j] = u01(r[j]);
    }
}

/* Box-Muller on two 32-bit words: u1 in (0, 1] keeps log finite. Computed in double so the
 * tails are right; two normals per pair, four per Philox block. */
static inline void box_muller(uint32_t a, uint32_t b, float *z0, float *z1) {
    double u1 = ((double)a + 1.0) * (1.0 / 4294967296.0);
    double u2 = (double)b * (1.0 / 4294967296.0);
    double r = sqrt(-2.0 * log(u1));
    double th = 6.283185307179586 * u2;
    *z0 = (float)(r * cos(th));
    *z1 = (float)(r * sin(th));
}

void ddpm_randn(uint64_t seed, uint32_t stream, uint64_t item, uint32_t step, float *out,
                size_t n) {
    uint32_t r[4];
    float z[4] = {0};
    for (size_t i = 0; i < n; i += 4) {
        block(seed, stream, item, step, (uint32_t)(i / 4), r);
        box_muller(r[0], r[1], &z[0], &z[1]);
        if (n - i > 2) box_muller(r[2], r[3], &z[2], &z[3]); /* the second pair only if needed */
        for (size_t j = 0; j < 4 && i + j < n; j++) out[i + j] = z[j];
    }
}

uint32_t ddpm_rand_below(uint64_t seed, uint32_t stream, uint64_t item, uint32_t step,
                         uint32_t bound) {
    DDPM_CHECK(bound > 0);
    /* Lemire's multiply-shift with rejection; each retry uses the next counter block. */
    uint32_t r[4];
    uint32_t threshold = (uint32_t)(-bound) % bound;
    for (uint32_t k = 0;; k++) {
        block(seed, stream, item, step, k, r);
        for (int j = 0; j < 4; j++) {
            uint64_t m = (uint64_t)r[j] * bound;
            if ((uint32_t)m >= threshold) return (uint32_t)(m >> 32);
        }
    }
}

/* memory_check.c - see memory_check.h. */
#include "memory_check.h"

#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* A "Key:   N kB" line of a /proc file, in bytes (0 if absent). */
static size_t proc_kb(const char *file, const char *key) {
    FILE *f = fopen(file, "r");
    if (!f) return 0;
    char line[256];
    size_t v = 0, klen = strlen(key);
    while (fgets(line, sizeof line, f))
        if (strncmp(line, key, klen) == 0 && line[klen] == ':') {
            v = (size_t)strtoull(line + klen + 1, NULL, 10) * 1024;
            break;
        }
    fclose(f);
    return v;
}

size_t memory_resident(void) { return proc_kb("/proc/self/status", "VmRSS"); }
size_t memory_peak(void) { return proc_kb("/proc/self/status", "VmHWM"); }

/* A number in a one-line file (cgroup v2), or 0 if absent or "max". */
static size_t file_number(const char *path) {
    FILE *f = fopen(path, "r");
    if (!f) return 0;
    char buf[64] = "";
    if (!fgets(buf, sizeof buf, f)) buf[0] = 0;
    fclose(f);
    if (buf[0] < '0' || buf[0] > '9') return 0;
    return (size_t)strtoull(buf, NULL, 10);
}

/* Bytes this process may still take: MemAvailable (the kernel's estimate of what can be given
 * without swapping), or a cgroup v2 limit's headroom if lower; *source names which. */
static size_t available(const char **source) {
    const char *env = getenv("DDPM_MEMORY_AVAILABLE");
    if (env && *env) {
        *source = "DDPM_MEMORY_AVAILABLE";
        return (size_t)strtoull(env, NULL, 10);
    }
    size_t avail = proc_kb("/proc/meminfo", "MemAvailable");
    *source = "MemAvailable in /proc/meminfo";
    if (!avail) {
        const long pages = sysconf(_SC_AVPHYS_PAGES), page = sysconf(_SC_PAGESIZE);
        avail = pages > 0 && page > 0 ? (size_t)pages * (size_t)page : 0;
        *source = "free memory (sysconf)";
    }
    const size_t limit = file_number("/sys/fs/cgroup/memory.max");
    const size_t used = file_number("/sys/fs/cgroup/memory.current");
    if (limit && limit > used && limit - used < avail) {
        avail = limit - used;
        *source = "the cgroup's memory.max";
    }
    return avail;
}

int memory_need_train(ddpm_model *m, const ddpm_train_config *tc, size_t n_data, memory_need *need) {
    memset(need, 0, sizeof *need);
    const size_t P = m->n_params, d = m->sample_numel, B = (size_t)tc->batch_size;
    const size_t cd = m->cond_dim > 0 ? (size_t)m->cond_dim : 1, F = sizeof(float);
    const size_t threads = (size_t)omp_get_max_threads();
    /* as ddpm_trainer_init allocates them: Adam's m and v, the EMA copy, seven [B, d] buffers,
     * the conditions, weights, timesteps and the epoch's order; with micro-batches the exact
     * gradient sum (two int64 limbs a weight) */
    need->state = (2 + (tc->ema_decay > 0)) * P * F + 7 * B * d * F + B * cd * F + 2 * B * F +
                  n_data * sizeof(uint32_t) + (tc->microbatch > 0 ? 16 * (P + 1) : 0);
    size_t item = 0;
    int rc = ddpm_model_item_bytes(m, 1, &item);
    if (rc) return rc;
    /* items recorded at once: the batch, or with micro-batches one micro-batch a thread */
    const size_t M = (size_t)tc->microbatch;
    need->items = M > 0 && M * threads < B ? M * threads : B;
    /* and the gradient buffer of each further thread's slice */
    need->activations = item * need->items + (item ? (threads - 1) * P * F : 0);
    need->in_use = memory_resident();
    return DDPM_OK;
}

int memory_need_sample(ddpm_model *m, size_t n, int batch, size_t gif_frames, memory_need *need) {
    memset(need, 0, sizeof *need);
    const size_t d = m->sample_numel, F = sizeof(float);
    const size_t cd = m->cond_dim > 0 ? (size_t)m->cond_dim : 0;
    const size_t B = batch > 0 && (size_t)batch < n ? (size_t)batch : n;
    size_t item = 0;
    int rc = ddpm_model_item_bytes(m, 0, &item);
    if (rc) return rc;
    need->items = B;
    /* an eval forward runs in chunks of at most 256 MB of activations a thread (tape_net.c) */
    const size_t chunk = (size_t)256 << 20, threads = (size_t)omp_get_max_threads();
    need->activations = item * B < chunk * threads ? item * B : chunk * threads;
    /* the samples, the conditions, the sampler's per-batch buffers (x, eps, x0, noise, ...) and
     * every GIF frame of every sample */
    need->outputs = n * d * F + n * cd * F + 8 * B * d * F + gif_frames * n * d * F;
    need->in_use = memory_resident();
    return DDPM_OK;
}

static double gb(size_t b) { return (double)b / 1e9; }

int memory_check(const memory_need *need, int allow, const char *hint) {
    const char *source;
    const size_t avail = available(&source);
    const size_t more = need->state + need->activations + need->outputs;
    if (allow || !avail || more <= avail) return DDPM_OK;
    return ddpm_fail(DDPM_ERR_INVALID,
                     "this run needs about %.2f GB on top of the %.2f GB in use (%.2f GB optimizer "
                     "state and batch buffers, %.2f GB activations for %zu items, %.2f GB samples), "
                     "more than the %.2f GB available (%s); %s, or give --allow-large-memory to "
                     "try anyway",
                     gb(more), gb(need->in_use), gb(need->state), gb(need->activations),
                     need->items, gb(need->outputs), gb(avail), source, hint);
}

void memory_print(const memory_need *need) {
    printf("memory    about %.3f GB: %.3f in use, %.3f optimizer state and batch buffers, %.3f "
           "activations for %zu items, %.3f samples\n",
           gb(need->in_use + need->state + need->activations + need->outputs), gb(need->in_use),
           gb(need->state), gb(need->activations), need->items, gb(need->outputs));
}

/* memory_check.h - the memory a training or sampling run will need, estimated before it starts
 * and compared with what the machine has, so a run too large for it stops with a one-line error
 * instead of being killed by the kernel's OOM killer part way (issue 11). */
#ifndef DDPM_MEMORY_CHECK_H
#define DDPM_MEMORY_CHECK_H

#include "cli.h"

/* What a run needs beyond the memory in use when it is estimated (the loaded data, the model's
 * weights and gradients, the program itself: this process's resident memory), in bytes. */
typedef struct {
    size_t in_use;      /* resident now (VmRSS) */
    size_t state;       /* training: Adam moments, EMA, the trainer's batch buffers */
    size_t activations; /* the network's activations for the items alive at once */
    size_t outputs;     /* sampling: the samples, GIF frames, conditions */
    size_t items;       /* items whose activations are alive at once */
} memory_need;

/* The estimate of `ddpm train` for a model (reserved at its batch) and a configuration. */
int memory_need_train(ddpm_model *m, const ddpm_train_config *tc, size_t n_data, memory_need *need);
/* The estimate of `ddpm sample`: n samples in batches of batch items, gif_frames frames kept. */
int memory_need_sample(ddpm_model *m, size_t n, int batch, size_t gif_frames, memory_need *need);
/* DDPM_OK if what the run needs on top of in_use fits in what the machine has (MemAvailable, or
 * a cgroup v2 limit's headroom if lower) or allow is set; else DDPM_ERR_INVALID with the
 * estimate, its parts, the limit and how to override it ("...; <hint>, or give
 * --allow-large-memory to try anyway"). DDPM_MEMORY_AVAILABLE=BYTES replaces the machine's
 * figure (for tests). */
int memory_check(const memory_need *need, int allow, const char *hint);
/* Prints the estimate as a "memory ..." line of the run's configuration (stdout). */
void memory_print(const memory_need *need);
/* Resident memory of this process now (bytes; 0 if unknown) and its peak (VmHWM). */
size_t memory_resident(void);
size_t memory_peak(void);

#endif

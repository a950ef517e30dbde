/* dist.c - MPI for data-parallel training and sampling (see dist.h). The library knows no MPI:
 * the trainer takes the two reductions it needs as callbacks (ddpm_train_dist), given here. */
#include "dist.h"
#include "cli.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifdef DDPM_HAVE_MPI
#include <mpi.h>
#endif

static int g_rank = 0, g_size = 1, g_agreed = 0;

int dist_rank(void) { return g_rank; }
int dist_size(void) { return g_size; }
int dist_lead(void) { return g_rank == 0; }
void dist_set_agreed(void) { g_agreed = 1; }

/* FNV-1a over 64-bit words (and the tail bytes): a cheap fingerprint to compare across ranks. */
static uint64_t hash_bytes(uint64_t h, const void *data, size_t n) {
    const unsigned char *p = data;
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        uint64_t w;
        memcpy(&w, p + i, 8);
        h = (h ^ w) * 0x100000001b3ull;
    }
    for (; i < n; i++) h = (h ^ p[i]) * 0x100000001b3ull;
    return h;
}
#define HASH_SEED 0xcbf29ce484222325ull

/* A launcher's process count from its environment (0: not started by one; 1: started by one that
 * does not say how many): mpirun (OpenMPI), Hydra (PMI), srun (Slurm), PMIx launchers. */
static int launcher_size(void) {
    const char *vars[] = {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "SLURM_STEP_NUM_TASKS"};
    for (size_t i = 0; i < sizeof vars / sizeof vars[0]; i++) {
        const char *v = getenv(vars[i]);
        if (v && atoi(v) > 0) return atoi(v);
    }
    return getenv("PMIX_RANK") ? 1 : 0;
}

#ifdef DDPM_HAVE_MPI

static int g_mpi = 0; /* MPI_Init was called */
static int mpi_fail(int err, const char *what) {
    char msg[MPI_MAX_ERROR_STRING];
    int len = 0;
    MPI_Error_string(err, msg, &len);
    return ddpm_fail(DDPM_ERR_IO, "MPI %s failed: %s", what, msg);
}

/* DDPM_DIST_TIMING=1: rank 0 prints the time spent in the gradient reductions at the end. */
static double g_reduce_s = 0.0;
static long g_reduce_calls = 0;

static int allreduce_i64(void *ctx, int64_t *v, size_t n) {
    (void)ctx;
    const double t0 = MPI_Wtime();
    /* in pieces of at most 2^28 elements: MPI counts are ints */
    for (size_t o = 0; o < n; o += (size_t)1 << 28) {
        const size_t k = n - o < ((size_t)1 << 28) ? n - o : (size_t)1 << 28;
        const int err = MPI_Allreduce(MPI_IN_PLACE, v + o, (int)k, MPI_INT64_T, MPI_SUM, MPI_COMM_WORLD);
        if (err != MPI_SUCCESS) return mpi_fail(err, "gradient reduction");
    }
    g_reduce_s += MPI_Wtime() - t0;
    g_reduce_calls++;
    return DDPM_OK;
}

static int allreduce_sum(void *ctx, double *v, size_t n) {
    (void)ctx;
    const int err = MPI_Allreduce(MPI_IN_PLACE, v, (int)n, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD);
    return err == MPI_SUCCESS ? DDPM_OK : mpi_fail(err, "loss reduction");
}

/* Every rank has the same 64-bit value? (compared through its min and max) */
static int same_everywhere(uint64_t v) {
    uint64_t lo = v, hi = v;
    MPI_Allreduce(MPI_IN_PLACE, &lo, 1, MPI_UINT64_T, MPI_MIN, MPI_COMM_WORLD);
    MPI_Allreduce(MPI_IN_PLACE, &hi, 1, MPI_UINT64_T, MPI_MAX, MPI_COMM_WORLD);
    return lo == hi;
}

/* The running binary's fingerprint: ranks must run the same build. */
static uint64_t binary_hash(void) {
    FILE *f = fopen("/proc/self/exe", "rb");
    uint64_t h = HASH_SEED;
    if (!f) return h;
    unsigned char buf[1 << 16];
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, f)) > 0) h = hash_bytes(h, buf, n);
    fclose(f);
    return h;
}

int dist_init(int argc, char **argv) {
    if (launcher_size() < 1) return DDPM_OK;
    int provided;
    if (MPI_Init_thread(NULL, NULL, MPI_THREAD_FUNNELED, &provided) != MPI_SUCCESS)
        return ddpm_fail(DDPM_ERR_IO, "MPI_Init failed");
    g_mpi = 1;
    MPI_Comm_rank(MPI_COMM_WORLD, &g_rank);
    MPI_Comm_size(MPI_COMM_WORLD, &g_size);
    if (g_size < 2) return DDPM_OK;
    uint64_t h = HASH_SEED;
    for (int i = 1; i < argc; i++) h = hash_bytes(h, argv[i], strlen(argv[i]) + 1);
    if (!same_everywhere(h))
        return ddpm_fail(DDPM_ERR_INVALID, "the %d processes were started with different arguments "
                         "(rank %d: a different command line)", g_size, g_rank);
    if (!same_everywhere(binary_hash()))
        return ddpm_fail(DDPM_ERR_INVALID, "the %d processes run different ddpm binaries", g_size);
    return DDPM_OK;
}

void dist_finish(int rc) {
    if (!g_mpi) return;
    const char *timing = getenv("DDPM_DIST_TIMING");
    if (timing && *timing == '1' && g_rank == 0 && g_reduce_calls > 0)
        fprintf(stderr, "dist: %ld gradient reductions, %.3f ms each on average (rank 0's wait "
                "included)\n", g_reduce_calls, 1e3 * g_reduce_s / (double)g_reduce_calls);
    if (rc != 0 && g_size > 1 && !g_agreed) {
        fprintf(stderr, "ddpm: rank %d of %d failed (status %d): ending every rank\n", g_rank,
                g_size, rc);
        fflush(stderr);
        MPI_Abort(MPI_COMM_WORLD, rc);
    }
    MPI_Finalize();
}

int dist_agree(int rc) {
    if (g_size < 2) return rc;
    int worst = rc;
    MPI_Allreduce(&rc, &worst, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
    if (worst != rc) /* another rank failed: its message is on its stderr */
        return ddpm_fail(worst, "another rank failed (status %d); see its message", worst);
    return worst;
}

int dist_max(int v) {
    int m = v;
    if (g_size > 1) MPI_Allreduce(&v, &m, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
    return m;
}

static uint64_t weights_hash(const ddpm_trainer *tr) {
    const ddpm_model *m = tr->model;
    uint64_t h = hash_bytes(HASH_SEED, m->params, sizeof(float) * m->n_params);
    if (tr->ema) h = hash_bytes(h, tr->ema, sizeof(float) * m->n_params);
    return hash_bytes(h, &tr->step, sizeof tr->step);
}

int dist_check_weights(const ddpm_trainer *tr) {
    if (g_size < 2) return DDPM_OK;
    if (!same_everywhere(weights_hash(tr)))
        return ddpm_fail(DDPM_ERR_NUMERIC,
                         "the ranks' weights differ after step %lld: the processes diverged "
                         "(different hardware results or a corrupted process)",
                         (long long)tr->step);
    return DDPM_OK;
}

int dist_join_trainer(ddpm_trainer *tr, size_t n_items) {
    if (g_size < 2) return DDPM_OK;
    const ddpm_model *m = tr->model;
    uint64_t h = hash_bytes(HASH_SEED, m->config_json, strlen(m->config_json));
    h = hash_bytes(h, &n_items, sizeof n_items);
    if (tr->data.n_total == 0) { /* shards differ by design: then the model and the total count */
        h = hash_bytes(h, tr->data.x, sizeof(float) * tr->data.n * m->sample_numel);
        if (tr->data.cond) h = hash_bytes(h, tr->data.cond, sizeof(float) * tr->data.n * (size_t)m->cond_dim);
    }
    if (!same_everywhere(h))
        return ddpm_fail(DDPM_ERR_INVALID,
                         "the %d processes loaded different models or training data (rank %d "
                         "differs): every rank needs the same files",
                         g_size, g_rank);
    if (!same_everywhere(weights_hash(tr)))
        return ddpm_fail(DDPM_ERR_INVALID,
                         "the %d processes start from different weights (a different --resume "
                         "checkpoint?)", g_size);
    const ddpm_train_dist d = {.rank = g_rank, .size = g_size, .allreduce_i64 = allreduce_i64,
                               .allreduce_sum = allreduce_sum};
    return ddpm_trainer_set_dist(tr, &d);
}

int dist_gather_rows(float *x, size_t n, size_t row) {
    if (g_size < 2) return DDPM_OK;
    int *counts = malloc(sizeof(int) * (size_t)g_size), *displs = malloc(sizeof(int) * (size_t)g_size);
    if (!counts || !displs) {
        free(counts);
        free(displs);
        return ddpm_fail(DDPM_ERR_NOMEM, "out of memory");
    }
    for (int r = 0; r < g_size; r++) {
        const size_t lo = n * (size_t)r / (size_t)g_size, hi = n * (size_t)(r + 1) / (size_t)g_size;
        counts[r] = (int)((hi - lo) * row);
        displs[r] = (int)(lo * row);
    }
    int err;
    if (g_rank == 0)
        err = MPI_Gatherv(MPI_IN_PLACE, 0, MPI_FLOAT, x, counts, displs, MPI_FLOAT, 0, MPI_COMM_WORLD);
    else
        err = MPI_Gatherv(x + displs[g_rank], counts[g_rank], MPI_FLOAT, NULL, NULL, NULL,
                          MPI_FLOAT, 0, MPI_COMM_WORLD);
    free(counts);
    free(displs);
    return err == MPI_SUCCESS ? DDPM_OK : mpi_fail(err, "gather of samples");
}

#else /* built without MPI */

int dist_init(int argc, char **argv) {
    (void)argc;
    (void)argv;
    if (launcher_size() > 1)
        return ddpm_fail(DDPM_ERR_INVALID,
                         "started by an MPI launcher with %d processes, but this ddpm was built "
                         "without MPI (install libopenmpi-dev and rebuild)",
                         launcher_size());
    return DDPM_OK;
}
void dist_finish(int rc) {
    (void)rc;
    (void)g_agreed;
}
int dist_agree(int rc) { return rc; }
int dist_max(int v) { return v; }
int dist_check_weights(const ddpm_trainer *tr) {
    (void)tr;
    (void)hash_bytes;
    return DDPM_OK;
}
int dist_join_trainer(ddpm_trainer *tr, size_t n_items) {
    (void)tr;
    (void)n_items;
    return DDPM_OK;
}
int dist_gather_rows(float *x, size_t n, size_t row) {
    (void)x;
    (void)n;
    (void)row;
    return DDPM_OK;
}

#endif

void dist_share(size_t n, size_t *lo, size_t *hi) {
    *lo = n * (size_t)g_rank / (size_t)g_size;
    *hi = n * (size_t)(g_rank + 1) / (size_t)g_size;
}

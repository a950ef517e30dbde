/* test_microbatch.c - exact sums of micro-batch gradients (kernels/exact_sum.c) and the trainer's
 * data parallelism without MPI: a process group simulated by threads, each running its own
 * trainer with in-process reductions, gives the weights of one trainer, bitwise, for every
 * network kind and any thread count. */
#include "kernels/kernels.h"
#include "testutil.h"

#include <math.h>
#include <omp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- the exact sum -------------------------------------------------------------------------- */

typedef struct {
    int64_t *buf;
    ddpm_exact_acc acc;
} acc_buf;
static acc_buf acc_new(size_t n) {
    acc_buf a;
    a.buf = calloc(2 * (n + 1), sizeof(int64_t));
    a.acc = (ddpm_exact_acc){a.buf, a.buf + n + 1};
    return a;
}

/* Sums of floats in any order and split are the same bits, equal to the correctly rounded sum
 * (computed here in long double from values whose sum it holds exactly). */
static void test_exact_sum_order_free(void **state) {
    (void)state;
    enum { N = 257, K = 12 };
    float *g = malloc(sizeof(float) * N * K);
    for (int k = 0; k < K; k++)
        for (int i = 0; i < N; i++) {
            /* element magnitudes from 1e-8 to 1e3, both signs, each with terms 1e-9 times the
             * others: a float sum loses those, and its bits depend on the order */
            const double e = -8.0 + 11.0 * (double)((i * 7) % 97) / 96.0;
            g[k * N + i] = (float)(((i + k) % 3 == 0 ? -1.0 : 1.0) * pow(10.0, e) *
                                   (k % 3 == 1 ? 1e-9 : 1.0) * (1.0 + 0.1 * k));
        }
    acc_buf fwd = acc_new(N), rev = acc_new(N), h1 = acc_new(N), h2 = acc_new(N);
    for (int k = 0; k < K; k++) assert_int_equal(ddpm_mk_exact_add(fwd.acc, g + k * N, 0, N), 0);
    for (int k = K - 1; k >= 0; k--) assert_int_equal(ddpm_mk_exact_add(rev.acc, g + k * N, 0, N), 0);
    for (int k = 0; k < K; k++) ddpm_mk_exact_add(k % 2 ? h2.acc : h1.acc, g + k * N, 0, N); /* two "ranks" */
    for (int i = 0; i < 2 * (N + 1); i++) h1.buf[i] += h2.buf[i]; /* their MPI_SUM */
    float *o1 = malloc(sizeof(float) * N), *o2 = malloc(sizeof(float) * N), *o3 = malloc(sizeof(float) * N);
    ddpm_mk_exact_to_f32(o1, fwd.acc, 0, N);
    ddpm_mk_exact_to_f32(o2, rev.acc, 0, N);
    ddpm_mk_exact_to_f32(o3, h1.acc, 0, N);
    assert_memory_equal(o1, o2, sizeof(float) * N);
    assert_memory_equal(o1, o3, sizeof(float) * N);
    int checked = 0;
    for (int i = 0; i < N; i++) {
        /* terms >= 2^-57 convert exactly; their long double sum (64-bit mantissa) is exact when
         * they span at most 2^38; the result is then that sum rounded to float (or, through
         * double, at most one float ulp from it) */
        long double s = 0;
        float lo = INFINITY, hi = 0;
        for (int k = 0; k < K; k++) {
            s += g[k * N + i];
            lo = fminf(lo, fabsf(g[k * N + i]));
            hi = fmaxf(hi, fabsf(g[k * N + i]));
        }
        if (lo < 0x1p-57f || hi / lo > 0x1p38f) continue;
        const float want = (float)s;
        assert_true(o1[i] == want || o1[i] == nextafterf(want, INFINITY) || o1[i] == nextafterf(want, -INFINITY));
        checked++;
    }
    assert_true(checked > N / 2);
    free(g);
    free(fwd.buf);
    free(rev.buf);
    free(h1.buf);
    free(h2.buf);
    free(o1);
    free(o2);
    free(o3);
}

/* NaN, inf and |g| >= 2^12 are not added but counted (the trainer reports divergence); values
 * below the grid round deterministically. */
static void test_exact_sum_refuses(void **state) {
    (void)state;
    const float g[6] = {1.0f, NAN, INFINITY, 5000.0f, -0.5f, 4095.0f};
    acc_buf a = acc_new(6);
    assert_int_equal(ddpm_mk_exact_add(a.acc, g, 0, 6), 3);
    float out[6];
    ddpm_mk_exact_to_f32(out, a.acc, 0, 6);
    assert_true(out[0] == 1.0f && out[1] == 0.0f && out[2] == 0.0f && out[3] == 0.0f &&
                out[4] == -0.5f && out[5] == 4095.0f);
    const float tiny[3] = {0x1p-126f, 0x1p-149f, 0x1p-81f};
    acc_buf t = acc_new(3);
    assert_int_equal(ddpm_mk_exact_add(t.acc, tiny, 0, 3), 0);
    assert_true(t.acc.lo[0] == 0 && t.acc.lo[1] == 0 && t.acc.lo[2] == 1); /* 2^-81: half up */
    free(a.buf);
    free(t.buf);
}

/* The vector loop (AVX-512 where the CPU has it) computes the integers of the scalar one, on
 * every kind of float: all exponents, both signs, subnormals, the refused ones. */
static void test_exact_sum_fast_equals_ref(void **state) {
    (void)state;
    enum { N = 4099 };
    float *g = malloc(sizeof(float) * N);
    for (int i = 0; i < N; i++) {
        uint32_t u = (uint32_t)i * 2654435761u ^ ((uint32_t)i << 7);
        if (i % 5 == 0) u = (u & 0x807fffffu) | ((uint32_t)(60 + i % 100) << 23); /* useful range */
        memcpy(&g[i], &u, 4);
    }
    acc_buf a = acc_new(N), b = acc_new(N);
    const int64_t bad_a = ddpm_mk_exact_add(a.acc, g, 1, N), bad_b = ddpm_mk_exact_add_ref(b.acc, g, 1, N);
    assert_int_equal(bad_a, bad_b);
    assert_true(bad_a > 0);
    assert_memory_equal(a.buf, b.buf, sizeof(int64_t) * 2 * (N + 1));
    free(g);
    free(a.buf);
    free(b.buf);
}

/* ---- a process group simulated by threads ----------------------------------------------------- */

enum { MAX_RANKS = 4 };
typedef struct {
    int size;
    pthread_barrier_t bar;
    void *slot[MAX_RANKS];
} fake_group;
typedef struct {
    fake_group *g;
    int rank;
} fake_rank;

/* Every rank publishes its buffer; after a barrier each sums all of them (in rank order: the
 * integers make the order irrelevant, the doubles have one non-zero per slot), then a barrier
 * before anyone writes its own buffer back. */
static int fake_allreduce_i64(void *ctx, int64_t *acc, size_t n) {
    fake_rank *r = ctx;
    int64_t *sum = calloc(n, sizeof(int64_t));
    r->g->slot[r->rank] = acc;
    pthread_barrier_wait(&r->g->bar);
    for (int k = 0; k < r->g->size; k++) {
        const int64_t *o = r->g->slot[k];
        for (size_t i = 0; i < n; i++) sum[i] += o[i];
    }
    pthread_barrier_wait(&r->g->bar);
    memcpy(acc, sum, sizeof(int64_t) * n);
    free(sum);
    return DDPM_OK;
}
static int fake_allreduce_sum(void *ctx, double *v, size_t n) {
    fake_rank *r = ctx;
    double *sum = calloc(n, sizeof(double));
    r->g->slot[r->rank] = v;
    pthread_barrier_wait(&r->g->bar);
    for (int k = 0; k < r->g->size; k++)
        for (size_t i = 0; i < n; i++) sum[i] += ((const double *)r->g->slot[k])[i];
    pthread_barrier_wait(&r->g->bar);
    memcpy(v, sum, sizeof(double) * n);
    free(sum);
    return DDPM_OK;
}

typedef struct {
    const char *config;
    int steps, B, M, threads, rank, size;
    fake_group *g;
    float *params; /* out: the weights after the run */
    size_t n_params;
    int rc;
    int shard;     /* each rank holds only its part of the data (ddpm_train_data.n_total) */
    int *drawn;    /* shard: out, the data rows of this rank's items, step after step */
    int n_drawn;
} job;

enum { N_DATA = 40 };

static void *train_job(void *arg) {
    job *j = arg;
    omp_set_num_threads(j->threads);
    ddpm_model *m = NULL;
    ddpm_schedule s;
    ddpm_schedule_config sc;
    j->rc = ddpm_model_create(j->config, 5, &m);
    if (j->rc) return NULL;
    ddpm_schedule_config_default(&sc, DDPM_SCHEDULE_LINEAR, m->num_timesteps);
    j->rc = ddpm_schedule_init(&s, &sc);
    const size_t d = m->sample_numel, n = N_DATA;
    float *x = malloc(sizeof(float) * n * d), *cond = NULL;
    ddpm_randn(3, DDPM_STREAM_USER, 0, 0, x, n * d);
    for (size_t i = 0; i < n; i++) x[i * d] = (float)i; /* the row, readable in x_0 */
    if (m->cond_dim > 0) {
        cond = calloc(n * (size_t)m->cond_dim, sizeof(float));
        for (size_t i = 0; i < n; i++) cond[i * (size_t)m->cond_dim + i % (size_t)m->cond_dim] = 1.0f;
    }
    ddpm_train_config tc;
    ddpm_train_config_default(&tc);
    tc.batch_size = j->B;
    tc.microbatch = j->M;
    tc.seed = 9;
    tc.cond_drop_prob = cond ? 0.2f : 0.0f;
    ddpm_train_data td = {.x = x, .cond = cond, .n = n};
    size_t lo = 0, hi = n;
    if (j->shard) { /* rows [n r / size, n (r + 1) / size) */
        lo = n * (size_t)j->rank / (size_t)j->size, hi = n * (size_t)(j->rank + 1) / (size_t)j->size;
        td = (ddpm_train_data){.x = x + lo * d, .cond = cond ? cond + lo * (size_t)m->cond_dim : NULL,
                               .n = hi - lo, .n_total = n};
        j->drawn = malloc(sizeof(int) * (size_t)j->steps * (size_t)j->B);
    }
    ddpm_trainer tr;
    fake_rank fr = {j->g, j->rank};
    if (!j->rc) j->rc = ddpm_trainer_init(&tr, m, &s, &tc, &td);
    if (!j->rc && j->size > 1) {
        const ddpm_train_dist dist = {.rank = j->rank, .size = j->size, .ctx = &fr,
                                      .allreduce_i64 = fake_allreduce_i64,
                                      .allreduce_sum = fake_allreduce_sum};
        j->rc = ddpm_trainer_set_dist(&tr, &dist);
    }
    for (int i = 0; !j->rc && i < j->steps; i++) {
        j->rc = ddpm_trainer_step(&tr);
        if (j->rc || !j->shard) continue;
        /* this rank's items of the step: micro-batches [K r / size, K (r + 1) / size) */
        const int K = (j->B + j->M - 1) / j->M;
        const int i0 = K * j->rank / j->size * j->M, i1 = K * (j->rank + 1) / j->size * j->M;
        for (int k = i0; k < i1 && k < j->B; k++) j->drawn[j->n_drawn++] = (int)tr.x0_[(size_t)k * d];
    }
    if (!j->rc) {
        j->n_params = m->n_params + m->n_buffers;
        j->params = malloc(sizeof(float) * j->n_params);
        memcpy(j->params, m->params, sizeof(float) * m->n_params);
        if (m->n_buffers) memcpy(j->params + m->n_params, m->buffers, sizeof(float) * m->n_buffers);
    }
    ddpm_trainer_free(&tr);
    ddpm_schedule_free(&s);
    ddpm_model_free(m);
    free(x);
    free(cond);
    return NULL;
}

/* Runs `size` ranks (threads) x `threads` OpenMP threads each; returns rank 0's weights. With
 * `shard`, each rank holds only its part of the data and jobs_out (if not NULL) gets the jobs. */
static float *run_group_sharded(const char *config, int B, int M, int steps, int size, int threads,
                                int shard, job *jobs_out, size_t *n) {
    fake_group g = {.size = size};
    pthread_barrier_init(&g.bar, NULL, (unsigned)size);
    job jobs[MAX_RANKS];
    pthread_t th[MAX_RANKS];
    for (int r = 0; r < size; r++) {
        jobs[r] = (job){config, steps, B, M, threads, r, size, &g, NULL, 0, 0, shard, NULL, 0};
        pthread_create(&th[r], NULL, train_job, &jobs[r]);
    }
    for (int r = 0; r < size; r++) pthread_join(th[r], NULL);
    pthread_barrier_destroy(&g.bar);
    for (int r = 0; r < size; r++)
        if (jobs[r].rc) fail_msg("rank %d: %s", r, ddpm_last_error());
    for (int r = 1; r < size; r++) { /* every rank holds the same weights */
        assert_memory_equal(jobs[0].params, jobs[r].params, sizeof(float) * jobs[0].n_params);
        free(jobs[r].params);
    }
    *n = jobs[0].n_params;
    for (int r = 0; r < size; r++) {
        if (jobs_out) jobs_out[r] = jobs[r];
        else free(jobs[r].drawn);
    }
    return jobs[0].params;
}

static float *run_group(const char *config, int B, int M, int steps, int size, int threads,
                        size_t *n) {
    return run_group_sharded(config, B, M, steps, size, threads, 0, NULL, n);
}

static void check_kind(const char *config, int B, int M, int steps) {
    size_t n1, n;
    float *one = run_group(config, B, M, steps, 1, 1, &n1);
    const int sizes[3][2] = {{1, 2}, {2, 1}, {3, 2}}; /* (ranks, threads) */
    for (int c = 0; c < 3; c++) {
        float *w = run_group(config, B, M, steps, sizes[c][0], sizes[c][1], &n);
        assert_int_equal(n, n1);
        if (memcmp(one, w, sizeof(float) * n) != 0)
            fail_msg("%s: %d ranks x %d threads differ from 1 x 1", config, sizes[c][0], sizes[c][1]);
        free(w);
    }
    free(one);
}

static void test_group_mlp(void **state) {
    (void)state;
    check_kind("{\"kind\":\"mlp\",\"dim\":2,\"hidden\":32,\"depth\":2,\"num_timesteps\":50}", 16, 4, 6);
}
static void test_group_unet(void **state) {
    (void)state;
    check_kind("{\"kind\":\"unet\",\"in_channels\":1,\"height\":8,\"base_channels\":8,"
               "\"channel_mult\":[1,2],\"num_res_blocks\":1,\"groups\":4,\"heads\":2,\"dim_head\":8,"
               "\"num_timesteps\":40,\"dropout\":0.1}",
               10, 3, 3);
}
static void test_group_context_unet(void **state) {
    (void)state;
    check_kind("{\"kind\":\"context-unet\",\"in_channels\":1,\"height\":8,\"n_feat\":8,\"n_cfeat\":3,"
               "\"num_timesteps\":40}",
               10, 4, 3);
}

/* Micro-batches of an MLP (no batch statistics) give the weights of one float batch to float
 * rounding, and without MPI the flag changes nothing else. */
static void test_microbatch_close_to_batch(void **state) {
    (void)state;
    const char *cfg = "{\"kind\":\"mlp\",\"dim\":2,\"hidden\":32,\"depth\":2,\"num_timesteps\":50}";
    size_t n;
    float *a = run_group(cfg, 16, 0, 5, 1, 1, &n), *b = run_group(cfg, 16, 4, 5, 1, 1, &n);
    double num = 0, den = 0;
    for (size_t i = 0; i < n; i++) {
        num += ((double)a[i] - b[i]) * ((double)a[i] - b[i]);
        den += (double)a[i] * a[i];
    }
    assert_true(sqrt(num / den) < 1e-5);
    free(a);
    free(b);
}

/* Without micro-batches (one float batch, the default) the weights are the same for 1, 2 and 3
 * threads too: convolution weight gradients are summed in item groups fixed by the batch, the
 * U-Net's training slices are fixed by the batch (tape_net.c). */
static void test_default_mode_thread_free(void **state) {
    (void)state;
    const char *cfgs[4] = {
        "{\"kind\":\"mlp\",\"dim\":2,\"hidden\":32,\"depth\":2,\"num_timesteps\":50}",
        "{\"kind\":\"unet\",\"in_channels\":1,\"height\":8,\"base_channels\":8,"
        "\"channel_mult\":[1,2],\"num_res_blocks\":1,\"groups\":4,\"heads\":2,\"dim_head\":8,"
        "\"num_timesteps\":40,\"dropout\":0.1}",
        "{\"kind\":\"context-unet\",\"in_channels\":1,\"height\":8,\"n_feat\":8,\"n_cfeat\":3,"
        "\"num_timesteps\":40}",
        "{\"kind\":\"simple-unet\",\"in_channels\":1,\"height\":16,\"channels\":[8,16,16,16,16],"
        "\"time_emb_dim\":8,\"num_timesteps\":40}"};
    for (int c = 0; c < 4; c++) {
        size_t n1, n;
        float *one = run_group(cfgs[c], 20, 0, 3, 1, 1, &n1);
        for (int t = 2; t <= 3; t++) {
            float *w = run_group(cfgs[c], 20, 0, 3, 1, t, &n);
            assert_int_equal(n, n1);
            if (memcmp(one, w, sizeof(float) * n) != 0)
                fail_msg("%s: %d threads differ from 1 without micro-batches", cfgs[c], t);
            free(w);
        }
        free(one);
    }
}

/* --shard-data: each rank draws only rows of its own part, each of its passes over that part
 * takes every row once, and the result still does not depend on the thread count. */
static void test_group_sharded(void **state) {
    (void)state;
    const char *cfg = "{\"kind\":\"mlp\",\"dim\":2,\"hidden\":16,\"depth\":2,\"num_timesteps\":50}";
    enum { B = 12, M = 4, STEPS = 9, SIZE = 3 }; /* 13 or 14 rows a rank, 4 items a step */
    job jobs[SIZE];
    size_t n, n2;
    float *w = run_group_sharded(cfg, B, M, STEPS, SIZE, 1, 1, jobs, &n);
    for (int r = 0; r < SIZE; r++) {
        const int lo = N_DATA * r / SIZE, hi = N_DATA * (r + 1) / SIZE, rows = hi - lo;
        assert_int_equal(jobs[r].n_drawn, STEPS * B / SIZE);
        int seen[N_DATA] = {0};
        for (int i = 0; i < jobs[r].n_drawn; i++) {
            const int row = jobs[r].drawn[i];
            assert_true(row >= lo && row < hi);
            if (i % rows == 0) memset(seen, 0, sizeof seen); /* a new pass */
            assert_int_equal(seen[row], 0);
            seen[row] = 1;
        }
        /* the second pass is another order than the first */
        assert_memory_not_equal(jobs[r].drawn, jobs[r].drawn + rows, sizeof(int) * 8);
        free(jobs[r].drawn);
    }
    float *w2 = run_group_sharded(cfg, B, M, STEPS, SIZE, 2, 1, NULL, &n2);
    assert_int_equal(n, n2);
    assert_memory_equal(w, w2, sizeof(float) * n);
    /* and differs from the unsharded run (other rows in each batch) */
    float *w3 = run_group(cfg, B, M, STEPS, SIZE, 1, &n2);
    assert_memory_not_equal(w, w3, sizeof(float) * n);
    free(w);
    free(w2);
    free(w3);
}

static void test_dist_needs_microbatches(void **state) {
    (void)state;
    ddpm_model *m;
    assert_int_equal(ddpm_model_create("{\"kind\":\"mlp\",\"dim\":2,\"num_timesteps\":50}", 1, &m), DDPM_OK);
    ddpm_schedule s;
    ddpm_schedule_config sc;
    ddpm_schedule_config_default(&sc, DDPM_SCHEDULE_LINEAR, 50);
    assert_int_equal(ddpm_schedule_init(&s, &sc), DDPM_OK);
    float x[40];
    ddpm_randn(1, DDPM_STREAM_USER, 0, 0, x, 40);
    ddpm_train_config tc;
    ddpm_train_config_default(&tc);
    tc.batch_size = 8;
    ddpm_train_data td = {.x = x, .n = 20};
    ddpm_trainer tr;
    assert_int_equal(ddpm_trainer_init(&tr, m, &s, &tc, &td), DDPM_OK);
    const ddpm_train_dist dist = {.rank = 0, .size = 2, .allreduce_i64 = fake_allreduce_i64,
                                  .allreduce_sum = fake_allreduce_sum};
    assert_int_equal(ddpm_trainer_set_dist(&tr, &dist), DDPM_ERR_INVALID);
    assert_non_null(strstr(ddpm_last_error(), "--microbatch"));
    ddpm_trainer_free(&tr);
    ddpm_schedule_free(&s);
    ddpm_model_free(m);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_exact_sum_order_free),
        cmocka_unit_test(test_exact_sum_refuses),
        cmocka_unit_test(test_exact_sum_fast_equals_ref),
        cmocka_unit_test(test_group_mlp),
        cmocka_unit_test(test_group_unet),
        cmocka_unit_test(test_group_context_unet),
        cmocka_unit_test(test_microbatch_close_to_batch),
        cmocka_unit_test(test_dist_needs_microbatches),
        cmocka_unit_test(test_group_sharded),
        cmocka_unit_test(test_default_mode_thread_free),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

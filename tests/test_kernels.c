/* test_kernels.c - the fused MLP kernels against their plain references (bit for bit), the
 * fast MLP against the reference (BLAS) path, and results that do not depend on the thread count.
 */
#include "testutil.h"

#include "kernels/kernels.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#ifdef _OPENMP
#include <omp.h>
#endif

static int have_fast(void) {
    ddpm_mk_set_fast(1);
    if (!ddpm_mk_fast()) {
        print_message("no AVX2/FMA here: the fast kernels fall back to the references\n");
        return 0;
    }
    return 1;
}

static float *rnd(size_t n, uint64_t item) {
    float *x = malloc(sizeof(float) * (n ? n : 1));
    assert_non_null(x);
    ddpm_randn(7, DDPM_STREAM_USER, item, 0, x, n);
    return x;
}

static float *dup(const float *x, size_t n) {
    float *y = malloc(sizeof(float) * (n ? n : 1));
    assert_non_null(y);
    memcpy(y, x, sizeof(float) * n);
    return y;
}

static void set_threads(int n) {
#ifdef _OPENMP
    omp_set_num_threads(n);
#else
    (void)n;
#endif
}

/* ---- GEMM: every epilogue, strides, packed and unpacked B, tails, sub-ranges ----------------- */

enum {
    V_ACC = 1,
    V_BIAS = 2,
    V_ADD = 4,
    V_IDX = 8,
    V_RELU = 16,
    V_MASK = 32,
    V_AT = 64,
    V_PACK = 128,
    V_BIASM = 256 /* a bias per row (the convolutions'); outside the exhaustive 0..255 loop */
};

static void gemm_case(int M, int N, int K, int v, int m0, int m1, int n0, int n1, uint64_t seed) {
    /* A: [M, K] row-major (row stride K + 3) or, with V_AT, a transposed view of [K, M + 2] */
    const ptrdiff_t lda = v & V_AT ? M + 2 : K + 3;
    const size_t a_n = (size_t)(v & V_AT ? K : M) * lda;
    float *a = rnd(a_n, seed);
    /* B: [K, N] with row stride N (reading past the last column would leave the allocation), or
     * packed panels of W^T from W [N, K + 1] */
    float *b, *w = NULL;
    const ptrdiff_t ldw = K + 1;
    if (v & V_PACK) {
        w = rnd((size_t)N * ldw, seed + 1);
        b = malloc(sizeof(float) * ddpm_mk_packed_size(K, N));
        ddpm_mk_pack_b_t(b, w, ldw, K, N, 0, (N + 15) / 16);
    } else {
        b = rnd((size_t)K * N, seed + 1);
    }
    const ptrdiff_t ldc = N + 2, ld_add = N + 1, ld_mask = N + 5;
    float *c0 = rnd((size_t)M * ldc, seed + 2), *c1 = dup(c0, (size_t)M * ldc);
    float *bias = rnd((size_t)N, seed + 3),
          *add = rnd((size_t)5 * ld_add + (size_t)M * ld_add, seed + 4);
    float *mask = rnd((size_t)M * ld_mask, seed + 5);
    int *idx = malloc(sizeof(int) * M);
    for (int m = 0; m < M; m++) idx[m] = (m * 7 + 3) % 5;
    ddpm_mk_gemm g = {.M = M,
                      .N = N,
                      .K = K,
                      .a = a,
                      .sam = v & V_AT ? 1 : lda,
                      .sak = v & V_AT ? lda : 1,
                      .b = b,
                      .ldb = N,
                      .b_packed = !!(v & V_PACK),
                      .c = c0,
                      .ldc = ldc,
                      .accumulate = !!(v & V_ACC),
                      .bias = v & V_BIAS ? bias : NULL,
                      .add = v & V_ADD ? add : NULL,
                      .ld_add = ld_add,
                      .add_idx = v & V_IDX ? idx : NULL,
                      .relu = !!(v & V_RELU),
                      .mask = v & V_MASK ? mask : NULL,
                      .ld_mask = ld_mask,
                      .bias_m = v & V_BIASM ? add : NULL};
    ddpm_mk_gemm_run(&g, m0, m1, n0, n1);
    g.c = c1;
    ddpm_mk_gemm_ref(&g, m0, m1, n0, n1);
    if (memcmp(c0, c1, sizeof(float) * (size_t)M * ldc) != 0) {
        for (size_t i = 0; i < (size_t)M * ldc; i++)
            if (memcmp(&c0[i], &c1[i], sizeof(float)) != 0) {
                fail_msg(
                    "gemm M=%d N=%d K=%d variant %d rows %d..%d cols %d..%d: C[%zu,%zu] = %.9g, "
                    "reference %.9g",
                    M, N, K, v, m0, m1, n0, n1, i / ldc, i % ldc, c0[i], c1[i]);
            }
    }
    free(a);
    free(b);
    free(w);
    free(c0);
    free(c1);
    free(bias);
    free(add);
    free(mask);
    free(idx);
}

static void gemm_shapes(const int (*shapes)[3], size_t n_shapes) {
    uint64_t seed = 100;
    for (size_t s = 0; s < n_shapes; s++) {
        const int M = shapes[s][0], N = shapes[s][1], K = shapes[s][2];
        const int big = (double)M * N * K > 1e5;
        for (int v = 0; v < 256; v += big ? 37 : 1) {
            if ((v & V_IDX) && !(v & V_ADD)) continue;
            gemm_case(M, N, K, v, 0, M, 0, N, seed += 10);
        }
        gemm_case(M, N, K, V_BIASM | V_PACK, 0, M, 0, N, seed += 10);
        gemm_case(M, N, K, V_BIASM | V_ADD | V_RELU | V_AT, 0, M, 0, N, seed += 10);
        /* row and column sub-ranges (as threads split them) */
        gemm_case(M, N, K, V_ACC | V_MASK | V_AT, M / 3, M - M / 4, 0, N, seed += 10);
        if (N > 16) {
            gemm_case(M, N, K, V_BIAS | V_ADD | V_IDX | V_RELU | V_PACK, 0, M, 16, N, seed += 10);
            gemm_case(M, N, K, V_ACC, 1, M, 0, 16, seed += 10);
        }
    }
}

/* At every fast level this CPU has (AVX2, then AVX-512, whose tiles are up to 12 rows: the
 * shapes give every tile height 1..12 and both column tails). */
static void test_gemm_matches_reference(void **state) {
    (void)state;
    if (!have_fast()) return;
    const int shapes[][3] = {{1, 1, 1},     {2, 3, 1},   {6, 16, 2},     {7, 8, 5},
                             {8, 17, 3},    {9, 24, 4},  {13, 31, 16},   {12, 33, 7},
                             {5, 15, 128},  {19, 40, 2}, {64, 128, 128}, {128, 2, 128},
                             {2, 128, 128}, {11, 7, 0},  {3, 20, 9},     {4, 47, 6},
                             {10, 9, 33},   {23, 5, 11}};
    for (int isa = DDPM_ISA_AVX2; isa <= DDPM_ISA_AVX512; isa++) {
        if (isa > (int)ddpm_mk_isa_cpu()) {
            print_message("no %s on this CPU: its GEMM kernel is not tested here\n",
                          ddpm_mk_isa_name((ddpm_isa)isa));
            break;
        }
        ddpm_mk_set_isa(isa);
        assert_int_equal(ddpm_mk_isa(), isa);
        gemm_shapes(shapes, sizeof shapes / sizeof shapes[0]);
    }
    ddpm_mk_set_isa(-1);
}


/* ---- packing, the small-output dot kernel, column sums and scatter-adds ---------------------- */

/* The convolutions' gathered panels: lanes in runs of consecutive positions of every length
 * (1, 3, 4, 8, 16, across the vector boundary, more than two runs a vector), partial panels. */
static void test_pack_gather_matches_reference(void **state) {
    (void)state;
    if (!have_fast()) return;
    enum { GUARD = 16, LEN = 4096, K = 37 };
    float *mem = rnd(LEN + 2 * GUARD, 300), *src = mem + GUARD;
    int off[K];
    for (int k = 0; k < K; k++) off[k] = (k * 97) % 2000;
    const int widths[] = {1, 3, 4, 5, 8, 13, 16, 28, 40};
    float p0[K * 16], p1[K * 16];
    for (size_t w = 0; w < sizeof widths / sizeof widths[0]; w++)
        for (int n0 = 0; n0 < 48; n0 += 5)
            for (int nl = 1; nl <= 16; nl += nl < 4 ? 1 : 5) {
                /* positions n0 .. n0 + nl - 1 of an output `width` wide, rows width + 2 apart */
                int pos[16];
                const int W = widths[w];
                for (int l = 0; l < nl; l++) pos[l] = (n0 + l) / W * (W + 2) + (n0 + l) % W;
                memset(p0, 0xff, sizeof p0);
                ddpm_mk_set_fast(1);
                ddpm_mk_pack_gather(p0, src, off, K, pos, nl);
                ddpm_mk_set_fast(0);
                ddpm_mk_pack_gather(p1, src, off, K, pos, nl);
                assert_memory_equal(p0, p1, sizeof p0);
                for (int l = 0; l < 16; l++)
                    assert_true(p1[16 * (K - 1) + l] == (l < nl ? src[off[K - 1] + pos[l]] : 0.0f));
            }
    ddpm_mk_set_fast(-1);
    free(mem);
}

static void test_pack_matches_reference(void **state) {
    (void)state;
    if (!have_fast()) return;
    const int shapes[][2] = {{1, 1}, {8, 16}, {16, 128}, {128, 128}, {3, 40}, {24, 33}, {130, 17}};
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        const int K = shapes[s][0], N = shapes[s][1], np = (N + 15) / 16;
        const ptrdiff_t ldw = (K > N ? K : N) + 3;
        float *w = rnd((size_t)(K > N ? K : N) * ldw, 200 + s);
        const size_t sz = ddpm_mk_packed_size(K, N);
        float *p0 = calloc(sz, sizeof(float)), *p1 = calloc(sz, sizeof(float));
        for (int t = 0; t < 2; t++) {
            ddpm_mk_set_fast(1);
            if (t == 0)
                ddpm_mk_pack_b_t(p0, w, ldw, K, N, 0, np);
            else
                ddpm_mk_pack_b_n(p0, w, ldw, K, N, 0, np);
            ddpm_mk_set_fast(0);
            if (t == 0)
                ddpm_mk_pack_b_t(p1, w, ldw, K, N, 0, np);
            else
                ddpm_mk_pack_b_n(p1, w, ldw, K, N, 0, np);
            assert_memory_equal(p0, p1, sz * sizeof(float));
            /* and the layout is what the GEMM reference reads */
            for (int k = 0; k < K; k++)
                for (int n = 0; n < N; n++) {
                    const float want = t == 0 ? w[(size_t)n * ldw + k] : w[(size_t)k * ldw + n];
                    assert_true(p0[(size_t)(n / 16) * K * 16 + (size_t)k * 16 + n % 16] == want);
                }
        }
        free(w);
        free(p0);
        free(p1);
    }
    ddpm_mk_set_fast(-1);
}

static void test_dot_colsum_scatter_match_reference(void **state) {
    (void)state;
    if (!have_fast()) return;
    for (int K = 1; K <= 140; K += K < 20 ? 1 : 29)
        for (int N = 1; N <= 5; N++)
            for (int M = 1; M <= 9; M += 4) {
                const ptrdiff_t lda = K + 2, ldw = K + 1, ldc = N + 1;
                float *a = rnd((size_t)M * lda, 300 + K), *w = rnd((size_t)N * ldw, 400 + N);
                float *bias = rnd((size_t)N, 500);
                float *c0 = rnd((size_t)M * ldc, 600), *c1 = dup(c0, (size_t)M * ldc);
                ddpm_mk_dot_rows(c0, ldc, a, lda, w, ldw, N % 2 ? bias : NULL, K, N, 0, M);
                ddpm_mk_dot_rows_ref(c1, ldc, a, lda, w, ldw, N % 2 ? bias : NULL, K, N, 0, M);
                assert_memory_equal(c0, c1, sizeof(float) * (size_t)M * ldc);
                free(a);
                free(w);
                free(bias);
                free(c0);
                free(c1);
            }
    /* column sums and scatter-adds with repeated rows (the order of additions matters) */
    const int B = 37, N = 45;
    const ptrdiff_t ld = 48;
    float *G = rnd((size_t)B * ld, 700);
    int idx[37];
    for (int b = 0; b < B; b++) idx[b] = (b * 5) % 4;
    float *s0 = rnd(N, 701), *s1 = dup(s0, N), *e0 = rnd((size_t)4 * N, 702),
          *e1 = dup(e0, (size_t)4 * N);
    ddpm_mk_set_fast(1);
    ddpm_mk_colsum(s0, G, ld, B, 0, 32);
    ddpm_mk_colsum(s0, G, ld, B, 32, N);
    ddpm_mk_scatter_rows(e0, N, idx, G, ld, B, 0, 16);
    ddpm_mk_scatter_rows(e0, N, idx, G, ld, B, 16, N);
    ddpm_mk_set_fast(0);
    ddpm_mk_colsum(s1, G, ld, B, 0, N);
    ddpm_mk_scatter_rows(e1, N, idx, G, ld, B, 0, N);
    ddpm_mk_set_fast(-1);
    assert_memory_equal(s0, s1, sizeof(float) * N);
    assert_memory_equal(e0, e1, sizeof(float) * 4 * N);
    /* exactly the plain loops */
    float *s2 = rnd(N, 701);
    for (int b = 0; b < B; b++)
        for (int n = 0; n < N; n++) s2[n] += G[(size_t)b * ld + n];
    assert_memory_equal(s0, s2, sizeof(float) * N);
    free(G);
    free(s0);
    free(s1);
    free(s2);
    free(e0);
    free(e1);
}

/* ---- the optimizer loops --------------------------------------------------------------------- */

static void test_adam_sumsq_match_reference(void **state) {
    (void)state;
    if (!have_fast()) return;
    const size_t sizes[] = {1, 7, 8, 9, 16, 31, 100, 72066};
    for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; s++) {
        const size_t n = sizes[s];
        for (int variant = 0; variant < 4; variant++) {
            float *p0 = rnd(n, 800), *g0 = rnd(n, 801), *m0 = rnd(n, 802), *v0 = rnd(n, 803);
            float *e0 = rnd(n, 804);
            for (size_t i = 0; i < n; i++) v0[i] = v0[i] * v0[i] * 1e-3f;
            float *p1 = dup(p0, n), *g1 = dup(g0, n), *m1 = dup(m0, n), *v1 = dup(v0, n),
                  *e1 = dup(e0, n);
            ddpm_mk_adam_args a = {.b1 = 0.9f,
                                   .b2 = 0.999f,
                                   .one_m_b1 = 0.1f,
                                   .one_m_b2 = 0.001f,
                                   .eps = 1e-8f,
                                   .step_size = 1e-3f,
                                   .bc2_sqrt = 0.3f,
                                   .decay_w = 0.99f,
                                   .ema_decay = 0.995f};
            a.adamw = variant == 1;
            a.wd = variant == 2 ? 0.01f : 0.0f;
            a.clip = variant == 3;
            a.clip_coef = 0.25f;
            a.ema = variant % 2 ? NULL : e0;
            ddpm_mk_adam(p0, g0, m0, v0, 0, n, &a);
            a.ema = variant % 2 ? NULL : e1;
            ddpm_mk_adam_ref(p1, g1, m1, v1, 0, n, &a);
            assert_memory_equal(p0, p1, n * sizeof(float));
            assert_memory_equal(g0, g1, n * sizeof(float));
            assert_memory_equal(m0, m1, n * sizeof(float));
            assert_memory_equal(v0, v1, n * sizeof(float));
            assert_memory_equal(e0, e1, n * sizeof(float));
            float *all[] = {p0, g0, m0, v0, e0, p1, g1, m1, v1, e1};
            for (int k = 0; k < 10; k++) free(all[k]);
        }
        float *x = rnd(n, 900);
        const double s0 = ddpm_mk_sumsq(x, 0, n), s1 = ddpm_mk_sumsq_ref(x, 0, n);
        assert_memory_equal(&s0, &s1, sizeof s0);
        double plain = 0;
        for (size_t i = 0; i < n; i++) plain += (double)x[i] * x[i];
        assert_true(fabs(s0 - plain) <= 1e-12 * plain);
        free(x);
    }
}

/* ---- the MLP: fast path against the reference path ------------------------------------------- */

typedef struct {
    float *out, *grads;
    size_t n_out, n_params;
} mlp_result;

static mlp_result run_mlp(const char *config, int B, int train, uint64_t seed) {
    ddpm_model *m;
    assert_int_equal(ddpm_model_create(config, 11, &m), DDPM_OK);
    const size_t D = m->sample_numel;
    float *x = rnd((size_t)B * D, seed), *dout = rnd((size_t)B * D, seed + 1);
    int *t = malloc(sizeof(int) * B);
    for (int b = 0; b < B; b++) t[b] = (b * 37 + 11) % m->num_timesteps;
    mlp_result r = {.out = malloc(sizeof(float) * B * D),
                    .grads = calloc(m->n_params, sizeof(float)),
                    .n_out = (size_t)B * D,
                    .n_params = m->n_params};
    assert_int_equal(ddpm_model_reserve(m, B), DDPM_OK);
    ddpm_model_input in = {.x = x, .t = t, .B = B, .train = train};
    if (m->ops->forward(m, &in, r.out)) fail_msg("%s", ddpm_last_error());
    if (train) {
        memset(m->grads, 0, sizeof(float) * m->n_params);
        assert_int_equal(m->ops->backward(m, dout), DDPM_OK);
        memcpy(r.grads, m->grads, sizeof(float) * m->n_params);
    }
    free(x);
    free(dout);
    free(t);
    ddpm_model_free(m);
    return r;
}

static void free_result(mlp_result *r) {
    free(r->out);
    free(r->grads);
}

static const char *const configs[] = {
    "{\"kind\":\"mlp\",\"dim\":2,\"hidden\":128,\"depth\":3,\"num_timesteps\":100}",
    "{\"kind\":\"mlp\",\"dim\":3,\"hidden\":37,\"depth\":2,\"num_timesteps\":20}",
    "{\"kind\":\"mlp\",\"dim\":9,\"hidden\":48,\"depth\":4,\"num_timesteps\":10}",
    "{\"kind\":\"mlp\",\"dim\":2,\"hidden\":16,\"depth\":1,\"num_timesteps\":5}",
    "{\"kind\":\"mlp\",\"dim\":3,\"hidden\":64,\"depth\":3,\"num_timesteps\":1000,\"time_"
    "embedding\":\"sinusoidal\"}",
};

static void test_mlp_fast_matches_reference_path(void **state) {
    (void)state;
    if (!have_fast()) return;
    const int batches[] = {1, 7, 128, 203};
    for (size_t c = 0; c < sizeof configs / sizeof configs[0]; c++)
        for (size_t bi = 0; bi < sizeof batches / sizeof batches[0]; bi++) {
            const int B = batches[bi];
            ddpm_mk_set_fast(1);
            mlp_result f = run_mlp(configs[c], B, 1, 40 + c);
            mlp_result fi =
                run_mlp(configs[c], B, 0, 40 + c); /* inference: no stored activations */
            ddpm_mk_set_fast(0);
            mlp_result r = run_mlp(configs[c], B, 1, 40 + c);
            ddpm_mk_set_fast(-1);
            char what[96];
            snprintf(what, sizeof what, "forward, config %zu, B=%d", c, B);
            tu_assert_close(f.out, r.out, f.n_out, 1e-4, 1e-5, what);
            assert_memory_equal(f.out, fi.out, sizeof(float) * f.n_out);
            /* gradients: sums over the batch, compared relative to their overall scale */
            double scale = 0;
            for (size_t i = 0; i < r.n_params; i++) scale = fmax(scale, fabs(r.grads[i]));
            snprintf(what, sizeof what, "gradients, config %zu, B=%d", c, B);
            tu_assert_close(f.grads, r.grads, f.n_params, 1e-4, 1e-5 * scale, what);
            free_result(&f);
            free_result(&fi);
            free_result(&r);
        }
}

/* ---- thread counts --------------------------------------------------------------------------- */

static void test_results_independent_of_threads(void **state) {
    (void)state;
    if (!have_fast()) return;
    /* the governor must not choose for us here */
    ddpm_mk_set_adapt(0);
    const int B[] = {128, 203, 1000};
    for (size_t c = 0; c < sizeof configs / sizeof configs[0]; c++)
        for (int bi = 0; bi < 3; bi++) {
            set_threads(1);
            mlp_result a = run_mlp(configs[c], B[bi], bi < 2, 60);
            set_threads(2);
            mlp_result b = run_mlp(configs[c], B[bi], bi < 2, 60);
            set_threads(3);
            mlp_result d = run_mlp(configs[c], B[bi], bi < 2, 60);
            assert_memory_equal(a.out, b.out, sizeof(float) * a.n_out);
            assert_memory_equal(a.out, d.out, sizeof(float) * a.n_out);
            assert_memory_equal(a.grads, b.grads, sizeof(float) * a.n_params);
            assert_memory_equal(a.grads, d.grads, sizeof(float) * a.n_params);
            free_result(&a);
            free_result(&b);
            free_result(&d);
        }
    /* whole training steps (clipping, Adam, EMA included) */
    float *data = rnd(2 * 1000, 61);
    float *params[3], *ema[3], *adam_v[3];
    for (int run = 0; run < 3; run++) {
        set_threads(run + 1);
        ddpm_schedule s;
        ddpm_schedule_config sc;
        ddpm_schedule_config_default(&sc, DDPM_SCHEDULE_SIGMOID_2D, 100);
        assert_int_equal(ddpm_schedule_init(&s, &sc), DDPM_OK);
        ddpm_model *m;
        assert_int_equal(ddpm_model_create(configs[0], 5, &m), DDPM_OK);
        ddpm_train_config tc;
        ddpm_train_config_default(&tc);
        tc.seed = 3;
        ddpm_train_data td = {.x = data, .n = 1000};
        ddpm_trainer tr;
        assert_int_equal(ddpm_trainer_init(&tr, m, &s, &tc, &td), DDPM_OK);
        for (int i = 0; i < 12; i++) assert_int_equal(ddpm_trainer_step(&tr), DDPM_OK);
        params[run] = dup(m->params, m->n_params);
        ema[run] = dup(tr.ema, m->n_params);
        adam_v[run] = dup(tr.adam_v, m->n_params);
        const size_t np = m->n_params;
        ddpm_trainer_free(&tr);
        ddpm_model_free(m);
        ddpm_schedule_free(&s);
        if (run > 0) {
            assert_memory_equal(params[0], params[run], np * sizeof(float));
            assert_memory_equal(ema[0], ema[run], np * sizeof(float));
            assert_memory_equal(adam_v[0], adam_v[run], np * sizeof(float));
        }
    }
    for (int run = 0; run < 3; run++) {
        free(params[run]);
        free(ema[run]);
        free(adam_v[run]);
    }
    free(data);
    set_threads(2);
    ddpm_mk_set_adapt(-1);
}

/* Busy-waits ms milliseconds (a stand-in for parallel work of a known cost). */
static void spin_ms(double ms) {
    struct timespec a, b;
    clock_gettime(CLOCK_MONOTONIC, &a);
    do clock_gettime(CLOCK_MONOTONIC, &b);
    while ((b.tv_sec - a.tv_sec) * 1e3 + (b.tv_nsec - a.tv_nsec) * 1e-6 < ms);
}

/* The governor only ever picks 1 or the allowed count, and follows what it measures. */
static void test_governor(void **state) {
    (void)state;
#ifdef _OPENMP
    ddpm_mk_set_adapt(1);
    set_threads(2);
    for (int faster = 1; faster <= 2; faster++) {
        ddpm_mk_gov g = {0};
        int seen[3] = {0};
        for (int i = 0; i < 600; i++) {
            const int n = ddpm_mk_gov_begin(&g, 1e9);
            assert_true(n == 1 || n == 2);
            seen[n]++;
            spin_ms(n == faster ? 0.1 : 0.3); /* the other choice is 3x slower */
            ddpm_mk_gov_end(&g);
        }
        assert_true(seen[1] > 0 && seen[2] > 0); /* it tried both... */
        assert_int_equal(g.cur, faster - 1);     /* ...and settled on the faster */
        assert_true(seen[faster] > seen[3 - faster]);
    }
    /* an outer governor caps the regions inside its span, whose governors stay idle */
    ddpm_mk_gov outer = {0}, inner = {0};
    for (int i = 0; i < 50; i++) {
        const int cap = ddpm_mk_gov_begin_all(&outer);
        assert_true(cap == 1 || cap == 2);
        assert_true(ddpm_mk_gov_begin(&inner, 1e12) <= cap);
        assert_int_equal(inner.active, 0);
        ddpm_mk_gov_end(&inner);
        spin_ms(0.5);
        ddpm_mk_gov_end(&outer);
    }
    ddpm_mk_set_adapt(0);
    assert_int_equal(ddpm_mk_gov_begin(&inner, 1e12), 2); /* no cap once the span ended */
    ddpm_mk_gov_end(&inner);
    ddpm_mk_set_adapt(-1);
#endif
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_gemm_matches_reference),
        cmocka_unit_test(test_pack_matches_reference),
        cmocka_unit_test(test_pack_gather_matches_reference),
        cmocka_unit_test(test_dot_colsum_scatter_match_reference),
        cmocka_unit_test(test_adam_sumsq_match_reference),
        cmocka_unit_test(test_mlp_fast_matches_reference_path),
        cmocka_unit_test(test_results_independent_of_threads),
        cmocka_unit_test(test_governor),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

/* kernels.h - the CPU kernels shared by every model (internal): the 6 x 16 GEMM micro-kernel
 * with its panel packing and gather, which runs the convolutions (ops/conv.c, on gathered panels)
 * and the fully connected networks (gemm.c); the optimizer's loops (optim.c); the run-time choice
 * of the fast kernels and the thread governor (cpu.c).
 *
 * Every kernel has a plain C reference (`_ref`) that performs exactly the same floating-point
 * operations in the same order (fmaf where the fast kernel fuses), so the fast AVX2/FMA kernels
 * and the references agree bit for bit; tests/test_kernels.c checks that. Results never depend
 * on how rows or columns are split between threads: each output element is computed by one
 * thread, by one fixed sequence of operations.
 */
#ifndef DDPM_KERNELS_H
#define DDPM_KERNELS_H

#include <stddef.h>
#include <stdint.h>

/* ---- exact sums of gradients (exact_sum.c) ---- */

/* Fixed point: the lowest bit is worth 2^-DDPM_EXACT_FRAC_BITS, each value held as two int64
 * limbs (value = hi * 2^40 + lo, carries left lazy: limbs of different accumulators simply add).
 * Elements with |g| >= 2^DDPM_EXACT_MAX_LOG2 are refused (counted), so sums of up to
 * DDPM_EXACT_MAX_ADDENDS of them cannot overflow a limb. */
#define DDPM_EXACT_FRAC_BITS 80
#define DDPM_EXACT_MAX_LOG2 12
#define DDPM_EXACT_MAX_ADDENDS 2048
typedef struct {
    int64_t *lo, *hi;
} ddpm_exact_acc;
/* acc += g exactly for i in [lo, hi); returns how many elements were refused (not finite or too
 * large). The _ref variant is the scalar loop the AVX-512 one must equal. */
int64_t ddpm_mk_exact_add(ddpm_exact_acc acc, const float *g, size_t lo, size_t hi);
int64_t ddpm_mk_exact_add_ref(ddpm_exact_acc acc, const float *g, size_t lo, size_t hi);
/* g[i] = acc[i] rounded to float, for i in [lo, hi). */
void ddpm_mk_exact_to_f32(float *g, ddpm_exact_acc acc, size_t lo, size_t hi);

/* ---- the GEMM micro-kernel, packing and gather (gemm.c) ---- */

/* Columns per B panel and per register tile of the GEMM kernel. */
#define DDPM_MK_NR 16

/* C (+)= A B with a fused epilogue, for rows m0..m1-1 and columns n0..n1-1 of C [M, N]:
 *
 *   acc(m, n) = accumulate ? C(m, n) : bias ? bias[n] : bias_m ? bias_m[m] : 0
 *   if add:     acc += add[(add_idx ? add_idx[m] : m) * ld_add + n]
 *   for k = 0 .. K-1:  acc = fma(A(m, k), B(k, n), acc)
 *   if relu:    acc = acc > 0 ? acc : 0            (NaN -> 0, as the reference ReLU)
 *   if mask:    acc = mask[m * ld_mask + n] > 0 ? acc : 0
 *   C(m, n) = acc
 *
 * A(m, k) = a[m * sam + k * sak] (any strides: row-major A or a transposed view).
 * B(k, n) = b[k * ldb + n] (b_packed = 0), or b holds the panels made by ddpm_mk_pack_b* (b_packed
 * = 1): panel p = n / 16 at b + p * K * 16, B(k, n) at panel[k * 16 + n % 16].
 * C(m, n) = c[m * ldc + n]. n0 must be a multiple of 16 (or equal n1). */
typedef struct {
    int M, N, K;
    const float *a;
    ptrdiff_t sam, sak;
    const float *b;
    ptrdiff_t ldb;
    int b_packed;
    float *c;
    ptrdiff_t ldc;
    int accumulate;
    const float *bias;
    const float *add;
    ptrdiff_t ld_add;
    const int *add_idx;
    int relu;
    const float *mask;
    ptrdiff_t ld_mask;
    const float *bias_m; /* a bias per row instead (convolutions: one per output channel) */
} ddpm_mk_gemm;

void ddpm_mk_gemm_run(const ddpm_mk_gemm *g, int m0, int m1, int n0, int n1);
void ddpm_mk_gemm_ref(const ddpm_mk_gemm *g, int m0, int m1, int n0, int n1);

/* Rows of the register tile the GEMM kernel takes next with `rem` rows left: as few tiles as
 * tiles of at most DDPM_MK_MR_AVX2 (6) rows, or DDPM_MK_MR_AVX512 (12) with the AVX-512 kernel,
 * allow, their rows spread evenly (AVX2, 64 rows: nine of 6 and two of 5; 8 rows: 4 + 4). An
 * AVX2 tile needs 8 accumulators in flight to hide the FMA latency on two pipes: 4-row tiles
 * have exactly 8 and measured slow, 5-row tiles have 10. An AVX-512 tile row is one register
 * (16 columns), so its tiles are twice as tall. Callers that hand the kernel one tile at a time
 * (the convolutions) ask here so each call fills the registers of the kernel that runs. */
#define DDPM_MK_MR_AVX2 6
#define DDPM_MK_MR_AVX512 12
static inline int ddpm_mk_tile_rows_max(int rem, int max_rows) {
    const int tiles = (rem + max_rows - 1) / max_rows;
    return (rem + tiles - 1) / tiles;
}
int ddpm_mk_tile_rows(int rem);

/* Panels for b_packed = 1 (zero-padded to a multiple of 16 columns), panels p0..p1-1 only:
 *  _t:  B = W^T for W [N, K] row-major with row stride ldw: B(k, n) = W[n * ldw + k]
 *       (the forward pass of nn.Linear: x W^T);
 *  _n:  B = W   for W [K, N] row-major with row stride ldw: B(k, n) = W[k * ldw + n]. */
size_t ddpm_mk_packed_size(int K, int N); /* floats */
/* One panel gathered from src (an implicit im2col matrix: the convolutions' B):
 *   panel[k * 16 + l] = src[off[k] + pos[l]] for lanes l < nl (nl <= 16), 0 for l >= nl.
 * The fast version fills each vector from whole-vector loads around the runs of consecutive
 * positions in pos, so src must be readable 16 floats before and after every element it takes. */
void ddpm_mk_pack_gather(float *panel, const float *src, const int *off, int K, const int *pos,
                         int nl);
void ddpm_mk_pack_gather_ref(float *panel, const float *src, const int *off, int K,
                             const int *pos, int nl);
void ddpm_mk_pack_b_t(float *dst, const float *w, ptrdiff_t ldw, int K, int N, int p0, int p1);
void ddpm_mk_pack_b_n(float *dst, const float *w, ptrdiff_t ldw, int K, int N, int p0, int p1);

/* Rows m0..m1-1 of a layer with few outputs (N small, e.g. the MLP's last layer with N = 2):
 *   C(m, n) = dot(A[m, :], W[n, :]) + (bias ? bias[n] : 0)
 * with A [M, K] (row stride lda), W [N, K] (row stride ldw), C row stride ldc. The dot product
 * runs in 8 lanes (lane j takes k = j, j + 8, ... by fma, the last partial chunk padded with
 * zeros), then lanes are added as ((l0 + l4) + (l2 + l6)) + ((l1 + l5) + (l3 + l7)). */
void ddpm_mk_dot_rows(float *c, ptrdiff_t ldc, const float *a, ptrdiff_t lda, const float *w,
                      ptrdiff_t ldw, const float *bias, int K, int N, int m0, int m1);
void ddpm_mk_dot_rows_ref(float *c, ptrdiff_t ldc, const float *a, ptrdiff_t lda, const float *w,
                          ptrdiff_t ldw, const float *bias, int K, int N, int m0, int m1);

/* Column sums and scatter-adds of a gradient G [B, ld] over columns n0..n1-1, rows in order
 * b = 0 .. B-1 (the order of the reference loops, so results match them exactly):
 *   colsum:  dbias[n] += G[b, n]            (bias gradient)
 *   scatter: dE[idx[b] * lde + n] += G[b, n] (embedding-table gradient) */
void ddpm_mk_colsum(float *dbias, const float *G, ptrdiff_t ld, int B, int n0, int n1);
void ddpm_mk_scatter_rows(float *dE, ptrdiff_t lde, const int *idx, const float *G, ptrdiff_t ld,
                          int B, int n0, int n1);

/* ---- the optimizer's loops (every model's training step; optim.c) ---- */

/* Adam / AdamW over elements i0..i1-1, with the operations of ddpm_adam_update's loop in the same
 * order (products and sums rounded separately, no fma), so results are identical:
 *   if clip:   g = grads[i] * clip_coef, written back to grads[i]
 *   adamw:     p *= decay_w;  otherwise if wd != 0: g += wd * p
 *   m = b1 m + (1 - b1) g;  v = b2 v + ((1 - b2) g) g
 *   p = p - step_size (m / (sqrt(v) / bc2_sqrt + eps))
 *   if ema:    ema[i] = ema_decay * ema[i] + (1 - ema_decay) * p  (ddpm_ema_update) */
typedef struct {
    float b1, b2, one_m_b1, one_m_b2, eps, wd, decay_w, step_size, bc2_sqrt;
    int adamw;
    int clip;
    float clip_coef;
    float *ema; /* NULL: no EMA */
    float ema_decay;
} ddpm_mk_adam_args;
void ddpm_mk_adam(float *params, float *grads, float *m, float *v, size_t i0, size_t i1,
                  const ddpm_mk_adam_args *a);
void ddpm_mk_adam_ref(float *params, float *grads, float *m, float *v, size_t i0, size_t i1,
                      const ddpm_mk_adam_args *a);

/* Sum of (double) x[i]^2 over i0..i1-1 in a fixed order: 16 partial sums in double, lane j taking
 * i0 + j, i0 + j + 16, ..., combined as t_j = s_j + s_{j+8}, u_j = t_j + t_{j+4},
 * (u_0 + u_2) + (u_1 + u_3). */
double ddpm_mk_sumsq(const float *x, size_t i0, size_t i1);
double ddpm_mk_sumsq_ref(const float *x, size_t i0, size_t i1);

/* ---- fast-kernel selection and thread policy (cpu.c) ---- */

/* The instruction sets the kernels can run, in order: the plain references, AVX2 + FMA, and
 * AVX-512 (F, with the OS saving its registers) for the GEMM kernel (its other kernels stay
 * AVX2). Every level gives bit-identical results. */
typedef enum { DDPM_ISA_REF = 0, DDPM_ISA_AVX2 = 1, DDPM_ISA_AVX512 = 2 } ddpm_isa;
/* The level the kernels run at: the best this CPU has, capped by the environment (DDPM_ISA=ref,
 * avx2 or avx512; DDPM_KERNELS=ref as before). Read once. */
ddpm_isa ddpm_mk_isa(void);
/* The best level this CPU has, whatever the environment says. */
ddpm_isa ddpm_mk_isa_cpu(void);
const char *ddpm_mk_isa_name(ddpm_isa isa); /* "ref", "avx2", "avx512" */
/* Overrides the choice (tests, benchmarks): a level (capped at what the CPU has), or -1 for the
 * default again. */
void ddpm_mk_set_isa(int isa);
/* 1 if any fast kernel runs (ddpm_mk_isa() >= DDPM_ISA_AVX2). */
int ddpm_mk_fast(void);
/* Overrides the choice (tests, benchmarks): 1 = the default level if it is fast (else the
 * CPU's best), 0 = references, -1 = back to the default. */
void ddpm_mk_set_fast(int on);

/* Threads worth using for `flops` floating-point operations of kernel work (at least 1, at most
 * omp_get_max_threads(); 1 inside a parallel region). */
int ddpm_mk_threads(double flops);

/* A thread governor for one call site of parallel kernels. Results never depend on the thread
 * count, so the count can follow the machine: on an idle machine all threads are faster, but when
 * other processes take the cores a barrier can wait a whole scheduler time slice for a preempted
 * thread, and one thread is several times faster. The governor times windows of calls (at least
 * 4 calls and 20 ms) with its current choice and, now and then, a window with the other (1 thread
 * or ddpm_mk_threads' count), keeping the faster per flop. It starts with one thread and tries
 * all after the first window. A probe that falls 3x behind stops at once; after a losing probe
 * the next waits for twice the previous wait and at least 20x the probe's cost (at most 10 s), so
 * probing costs a few percent at worst; when all threads are in use and get twice as slow, one
 * thread is tried at once. DDPM_THREADS_ADAPT=0 turns it off (always ddpm_mk_threads' count).
 * Keep one zero-initialised governor per call site and calling thread (static _Thread_local). */
typedef struct {
    int cur, probing, used, active, outer, calls;
    double t0, call_flops, time, flops, wait, since;
    double rate[2]; /* seconds per flop of the latest window with 1 thread [0] and all [1] */
} ddpm_mk_gov;
/* Threads for this call; pair with ddpm_mk_gov_end after the parallel work. Inside an outer
 * governor's span the outer choice caps the count and this governor stays idle. */
int ddpm_mk_gov_begin(ddpm_mk_gov *g, double flops);
/* An outer governor over a span of work with many parallel regions (a training step): it times
 * the whole span and its choice caps every ddpm_mk_gov_begin until ddpm_mk_gov_end. */
int ddpm_mk_gov_begin_all(ddpm_mk_gov *g);
void ddpm_mk_gov_end(ddpm_mk_gov *g);
/* Overrides DDPM_THREADS_ADAPT (tests, benchmarks): 1 = adapt, 0 = fixed, -1 = from the
 * environment again. */
void ddpm_mk_set_adapt(int on);

/* ---- work splitting (inline) ---- */

/* [lo, hi) of part i of n equal parts of [0, total), boundaries rounded to multiples of align. */
static inline void ddpm_mk_split(int total, int parts, int i, int align, int *lo, int *hi) {
    const int units = (total + align - 1) / align;
    const int a = (int)((long long)units * i / parts),
              b = (int)((long long)units * (i + 1) / parts);
    *lo = a * align < total ? a * align : total;
    *hi = b * align < total ? b * align : total;
}

#endif /* DDPM_KERNELS_H */

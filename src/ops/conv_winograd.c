/* conv_winograd.c - 3x3 stride-1 convolutions by Winograd's minimal filtering F(4x4, 3x3)
 * (Lavin and Gray 2016): each 4x4 block of outputs ("tile") from a 6x6 patch of the input with
 * 36 multiplications per input/output channel pair instead of 144, the multiplications done as
 * 36 GEMMs on the library's own kernel:
 *
 *   U_xi [C_out, C_in] = (G g G^T)_xi         per filter g [3, 3]        (weights, once a call)
 *   V_xi [C_in, tiles] = (B^T d B)_xi         per input patch d [6, 6]   (in panels for the GEMM)
 *   M_xi [C_out, tiles] = U_xi V_xi           36 GEMMs, xi = 0..35
 *   y [4, 4] = A^T M A (+ bias), per output channel and tile
 *
 * with Lavin and Gray's B^T, G and A^T (in WG_BT, g_times and WG_AT below). Their coefficients
 * reach 8 and 1/24, so the transforms cost some precision: against the double-precision naive
 * convolution the worst error is about 7e-6 of the output's largest magnitude on unit-normal
 * activations (tests/test_conv_fast.c prints it; F(2x2, 3x3) had 4e-7 and was measured slower:
 * 0.94x of the direct kernel's time on the U-Net's training step against 0.88x). The input
 * gradient of a 3x3 stride-1 convolution with padding p is itself one, of dy with the flipped,
 * transposed filters and padding 2 - p, so it runs here too.
 *
 * Tiles are numbered over the whole batch (item, tile row, tile column) and cut into chunks of
 * WG_NT (several items at low resolution): a chunk's V and M stay in L2, V in the GEMM kernel's
 * 16-column panels (a panel's 16 tiles are the vector lanes of both transforms), chunks run on
 * the threads, and every output is computed by one fixed sequence of operations whatever the
 * thread count. (A layout with a tile row's patches read as the even and odd columns of the
 * input rows measured slower: at these resolutions a tile row is 2 to 14 tiles, too short a
 * loop.) */
#include "ops/conv_internal.h"
#include "kernels/kernels.h"

#include "core/test_hooks.h"

#include <omp.h>
#include <stdatomic.h>
#include <stdint.h>

/* Tests: 0 runs the scalar input transform (the reference of the vector loads) at every level. */
static _Atomic int simd_input_enabled = 1;
void ddpm_conv_winograd_simd_input(int on) {
    atomic_store_explicit(&simd_input_enabled, on, memory_order_relaxed);
}

#define WG_NT 32 /* tiles per chunk: 2 panels of 16 */
#define WG_M 4   /* outputs per tile side */
#define WG_P 6   /* input patch side: WG_M + 2 */
#define WG_X 36  /* transform points: WG_P^2, one GEMM each */
#define WG_PF 4  /* channels ahead whose rows the transforms prefetch (measured: 4-6 best, Zen 5) */

/* Prefetches the cache line of p[off] (for a write when w), an integer address: the rows of
 * tiles at an image's edge may start before or end after the tensor, and a prefetch does not
 * fault. */
static inline void prefetch_at(const float *p, ptrdiff_t off, int w) {
    const void *a = (const void *)((uintptr_t)p + (uintptr_t)(off * (ptrdiff_t)sizeof(float)));
    if (w)
        __builtin_prefetch(a, 1, 3);
    else
        __builtin_prefetch(a, 0, 3);
}

/* Floats from one transform point's V (or M) to the next: C x WG_NT plus a cache line, so the
 * 36 rows a transform writes (or reads) per channel do not all fall in one L1 set, as they
 * would a power of two apart. */
static inline size_t xi_stride(int C) { return (size_t)C * WG_NT + 16; }

#if defined(__x86_64__) && defined(__GNUC__)
/* The transforms are 16-lane loops over a panel's tiles: vectorised for AVX2 (this path runs
 * only where the own kernel does, which needs AVX2). */
#define WG_TGT __attribute__((target("avx2,fma")))
#else
#define WG_TGT
#endif

int conv_winograd_fits(const ddpm_conv_dims *d) {
    /* C_in, C_out >= 16: with a few image channels the GEMMs are too thin to pay for the
     * transforms (the first conv of every U-Net stays direct). The weight transforms of very
     * wide layers would not fit in cache beside the chunks. */
    return !d->transposed && d->KH == 3 && d->KW == 3 && d->stride == 1 && d->pad <= 2 &&
           d->C_in >= 16 && d->C_out >= 16 && (long long)d->C_in * d->C_out <= 512 * 512 &&
           d->H_out >= 2 && d->W_out >= 2;
}

/* Floats of a call with C_in channels in, C_out out: U, then each thread's V and M. */
static size_t wg_workspace(int C_in, int C_out) {
    const size_t T = (size_t)(omp_get_max_threads() > 0 ? omp_get_max_threads() : 1);
    return (size_t)WG_X * C_in * C_out + T * (size_t)WG_X * (xi_stride(C_in) + xi_stride(C_out));
}

/* The forward and the input gradient alike (the roles of C_in and C_out swap). */
size_t conv_winograd_workspace(const ddpm_conv_dims *d) {
    return conv_winograd_fits(d) ? wg_workspace(d->C_in, d->C_out) : 0;
}

/* u = G g for one column g of 3 (G of F(4x4, 3x3), Lavin and Gray's). */
static void g_times(const float g[3], float u[6]) {
    /* products with rounded reciprocals, not divisions: the transform of every filter runs at
     * every call, and 45 divisions a filter were 8% of a U-Net training step */
    const float sixth = 1.0f / 6.0f, twelfth = 1.0f / 12.0f, t24 = 1.0f / 24.0f;
    const float even = g[0] + g[2];
    u[0] = 0.25f * g[0];
    u[1] = -sixth * (even + g[1]);
    u[2] = -sixth * (even - g[1]);
    u[3] = t24 * g[0] + twelfth * g[1] + sixth * g[2];
    u[4] = t24 * g[0] - twelfth * g[1] + sixth * g[2];
    u[5] = g[2];
}

/* U_xi[o][i] = (G g G^T)_xi for the filter g = w[o][i] (flip: the dx filters, g[u][v] =
 * w[i][o][2 - u][2 - v] with w [C_out', C_in', 3, 3] and o, i the roles of the gradient). */
static void weight_transform(float *U, const float *w, int n_out, int n_in, int flip) {
    /* 16 filters at a time, so each of the 36 rows of U gets one whole cache line per block:
     * the rows are n_out n_in floats apart, and a power of two apart they share one L1 set
     * (storing filter by filter, 36 lines of a set each time, was 9% of a training step).
     * Threads from 32 x 32 filters (~0.2 MFLOP; the 64 x 64 convs of a ContextUnet ran it on
     * one thread while the other waited: 1% of the step's samples, Zen 5) */
#pragma omp parallel for schedule(static) if ((size_t)n_out * n_in >= 1024)
    for (int o = 0; o < n_out; o++)
        for (int i0 = 0; i0 < n_in; i0 += 16) {
            const int ni = n_in - i0 < 16 ? n_in - i0 : 16;
            float blk[WG_X][16];
            for (int ii = 0; ii < ni; ii++) {
                const int i = i0 + ii;
                float g[3][3];
                for (int u = 0; u < 3; u++)
                    for (int v = 0; v < 3; v++)
                        g[u][v] = flip ? w[((size_t)i * n_out + o) * 9 + (2 - u) * 3 + (2 - v)]
                                       : w[((size_t)o * n_in + i) * 9 + u * 3 + v];
                float t[6][3]; /* G g, column by column */
                for (int v = 0; v < 3; v++) {
                    const float col[3] = {g[0][v], g[1][v], g[2][v]};
                    float u6[6];
                    g_times(col, u6);
                    for (int r = 0; r < 6; r++) t[r][v] = u6[r];
                }
                for (int r = 0; r < 6; r++) { /* (G g) G^T, row by row */
                    float u6[6];
                    g_times(t[r], u6);
                    for (int c = 0; c < 6; c++) blk[r * 6 + c][ii] = u6[c];
                }
            }
            for (int xi = 0; xi < WG_X; xi++)
                memcpy(U + (size_t)xi * n_out * n_in + (size_t)o * n_in + i0, blk[xi],
                       sizeof(float) * ni);
        }
}

typedef struct {
    int C, H, W, pad;  /* the input of the convolution being computed */
    int th, tw, tiles; /* tile rows and columns of an item, tiles of the batch */
} wg_geom;

/* Where the 16 tiles of a panel sit: lane l is tile t0 + l of the batch (l < nl); its input
 * patch starts at in_off[l] of channel 0 (row y0[l], column x0[l] of its item's planes; inside
 * when the whole 4x4 patch is in the image), its 2x2 outputs at out_off[l] (row oy[l], column
 * ox[l]). Worked out once a panel, not once a channel. */
typedef struct {
    int nl;
    ptrdiff_t in_off[16], out_off[16];
    int y0[16], x0[16], inside[16], oy[16], ox[16];
    /* for the AVX-512 input transform: per patch element, the lanes whose element lies in the
     * image (lanes past nl: none) */
    uint16_t kmask[WG_X];
} wg_lanes;

static void lanes_of(wg_lanes *L, const wg_geom *g, int C_out, int Ho, int Wo, int t0, int nl) {
    L->nl = nl;
    const int per_item = g->th * g->tw;
    for (int l = 0; l < nl; l++) {
        const int t = t0 + l, b = t / per_item, r = t % per_item;
        L->oy[l] = WG_M * (r / g->tw);
        L->ox[l] = WG_M * (r % g->tw);
        L->y0[l] = L->oy[l] - g->pad;
        L->x0[l] = L->ox[l] - g->pad;
        L->inside[l] =
            L->y0[l] >= 0 && L->x0[l] >= 0 && L->y0[l] + WG_P <= g->H && L->x0[l] + WG_P <= g->W;
        L->in_off[l] = (ptrdiff_t)b * g->C * g->H * g->W + (ptrdiff_t)L->y0[l] * g->W + L->x0[l];
        L->out_off[l] = (ptrdiff_t)b * C_out * Ho * Wo + (ptrdiff_t)L->oy[l] * Wo + L->ox[l];
    }
    for (int k = 0; k < WG_X; k++) {
        unsigned m = 0;
        for (int l = 0; l < nl; l++) {
            const int yy = L->y0[l] + k / WG_P, xx = L->x0[l] + k % WG_P;
            if (yy >= 0 && yy < g->H && xx >= 0 && xx < g->W) m |= 1u << l;
        }
        L->kmask[k] = (uint16_t)m;
    }
}

/* t = B^T d for 6 rows d[0..5] of 16 lanes (B^T of F(4x4, 3x3)); in place is not allowed. */
#define WG_BT(d, t, l)                                                                             \
    do {                                                                                           \
        const float d0 = (d)[0][l], d1 = (d)[1][l], d2 = (d)[2][l], d3 = (d)[3][l],               \
                    d4 = (d)[4][l], d5 = (d)[5][l];                                                \
        (t)[0][l] = 4.0f * d0 - 5.0f * d2 + d4;                                                    \
        (t)[1][l] = -4.0f * (d1 + d2) + d3 + d4;                                                   \
        (t)[2][l] = 4.0f * (d1 - d2) - d3 + d4;                                                    \
        (t)[3][l] = 2.0f * (d3 - d1) - d2 + d4;                                                    \
        (t)[4][l] = 2.0f * (d1 - d3) - d2 + d4;                                                    \
        (t)[5][l] = 4.0f * d1 - 5.0f * d3 + d5;                                                    \
    } while (0)

/* V for the panel's tiles and every channel: element (channel c, lane l) of V_xi at V + xi *
 * per_xi + c * ld + l (V already at the panel's first lane); lanes past nl are zero. ld = 16:
 * V_xi as GEMM panels (the forward); ld = a chunk's tiles: V_xi row-major [C, tiles] (the weight
 * gradient, whose GEMMs take the tiles as K). */
WG_TGT static void input_transform(float *V, size_t per_xi, size_t ld, const wg_geom *g,
                                   const wg_lanes *L, const float *x) {
    const int C = g->C, W = g->W;
    const size_t plane = (size_t)g->H * W;
    for (int c = 0; c < C; c++) {
        const float *xc = x + c * plane;
        if (c + WG_PF < C) /* as in input_transform_512 */
            for (int l = 0; l < L->nl; l++)
                for (int i = 0; i < WG_P; i++) prefetch_at(xc, WG_PF * plane + L->in_off[l] + i * W, 0);
        float d[WG_X][16]; /* [element][lane] */
        for (int l = 0; l < 16; l++) {
            if (l >= L->nl) {
                for (int k = 0; k < WG_X; k++) d[k][l] = 0.0f;
            } else if (L->inside[l]) {
                const float *s = xc + L->in_off[l];
                for (int i = 0; i < WG_P; i++)
                    for (int j = 0; j < WG_P; j++) d[i * WG_P + j][l] = s[i * W + j];
            } else {
                const float *s = xc + L->in_off[l];
                for (int i = 0; i < WG_P; i++)
                    for (int j = 0; j < WG_P; j++) {
                        const int yy = L->y0[l] + i, xx = L->x0[l] + j;
                        d[i * WG_P + j][l] =
                            yy >= 0 && yy < g->H && xx >= 0 && xx < W ? s[i * W + j] : 0.0f;
                    }
            }
        }
        float s[WG_X][16]; /* B^T d: column j of the patch through B^T */
        for (int j = 0; j < WG_P; j++) {
            float col[6][16], out[6][16];
            for (int i = 0; i < 6; i++)
                for (int l = 0; l < 16; l++) col[i][l] = d[i * WG_P + j][l];
            for (int l = 0; l < 16; l++) WG_BT(col, out, l);
            for (int i = 0; i < 6; i++)
                for (int l = 0; l < 16; l++) s[i * WG_P + j][l] = out[i][l];
        }
        float *dst = V + (size_t)c * ld;
        for (int i = 0; i < WG_P; i++) { /* (B^T d) B: row i through B^T again */
            float out[6][16];
            for (int l = 0; l < 16; l++) WG_BT(&s[i * WG_P], out, l);
            for (int j = 0; j < 6; j++)
                for (int l = 0; l < 16; l++) dst[(size_t)(i * WG_P + j) * per_xi + l] = out[j][l];
        }
    }
}

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
typedef float wg_v16 __attribute__((vector_size(64)));

/* t = B^T d on 16-lane vectors: the same operations in the same order as WG_BT, so both give
 * the same bits (the build does not contract a * b + c into fma). */
__attribute__((target("avx512f"))) static inline void bt_vec(const wg_v16 d[6], wg_v16 t[6]) {
    t[0] = 4.0f * d[0] - 5.0f * d[2] + d[4];
    t[1] = -4.0f * (d[1] + d[2]) + d[3] + d[4];
    t[2] = 4.0f * (d[1] - d[2]) - d[3] + d[4];
    t[3] = 2.0f * (d[3] - d[1]) - d[2] + d[4];
    t[4] = 2.0f * (d[1] - d[3]) - d[2] + d[4];
    t[5] = 4.0f * d[1] - 5.0f * d[3] + d[5];
}

/* The 6 floats (of 8 loaded) of patch row i of all 16 lanes, transposed to one 16-lane vector a
 * patch column: lane l's row is an 8-float masked load (elements outside the image and lanes
 * past nl masked to 0; a masked element is never read, so rows at the image's edges cannot
 * fault), lanes l and l + 8 sharing a 512-bit register, then the usual 8x8 transpose in both
 * 256-bit halves at once: 16 loads and 22 shuffles a row. Addresses are integers (xc plus the
 * row's offset) because an edge row's start may lie before the input's first float. */
__attribute__((target("avx512f"))) static inline void patch_row_512(wg_v16 d[WG_P], uintptr_t xc,
                                                                    const ptrdiff_t off[16],
                                                                    const __mmask16 m[16]) {
    __m512 z[8];
    for (int k = 0; k < 8; k++) {
        z[k] = _mm512_maskz_loadu_ps(m[k], (const void *)(xc + (uintptr_t)(off[k] * 4)));
        z[k] = _mm512_mask_loadu_ps(z[k], (__mmask16)(m[k + 8] << 8),
                                    (const void *)(xc + (uintptr_t)((off[k + 8] - 8) * 4)));
    }
    const __m512 t0 = _mm512_unpacklo_ps(z[0], z[1]), t1 = _mm512_unpackhi_ps(z[0], z[1]),
                 t2 = _mm512_unpacklo_ps(z[2], z[3]), t3 = _mm512_unpackhi_ps(z[2], z[3]),
                 t4 = _mm512_unpacklo_ps(z[4], z[5]), t5 = _mm512_unpackhi_ps(z[4], z[5]),
                 t6 = _mm512_unpacklo_ps(z[6], z[7]), t7 = _mm512_unpackhi_ps(z[6], z[7]);
    const __m512 u0 = _mm512_shuffle_ps(t0, t2, 0x44), u1 = _mm512_shuffle_ps(t0, t2, 0xEE),
                 u2 = _mm512_shuffle_ps(t1, t3, 0x44), u3 = _mm512_shuffle_ps(t1, t3, 0xEE),
                 u4 = _mm512_shuffle_ps(t4, t6, 0x44), u5 = _mm512_shuffle_ps(t4, t6, 0xEE),
                 u6 = _mm512_shuffle_ps(t5, t7, 0x44), u7 = _mm512_shuffle_ps(t5, t7, 0xEE);
    /* column j < 4 from the first 128 bits of each 256-bit half, column j + 4 from the second */
    const __m512i lo = _mm512_setr_epi32(0, 1, 2, 3, 16, 17, 18, 19, 8, 9, 10, 11, 24, 25, 26, 27);
    const __m512i hi = _mm512_setr_epi32(4, 5, 6, 7, 20, 21, 22, 23, 12, 13, 14, 15, 28, 29, 30, 31);
    d[0] = (wg_v16)_mm512_permutex2var_ps(u0, lo, u4);
    d[1] = (wg_v16)_mm512_permutex2var_ps(u1, lo, u5);
    d[2] = (wg_v16)_mm512_permutex2var_ps(u2, lo, u6);
    d[3] = (wg_v16)_mm512_permutex2var_ps(u3, lo, u7);
    d[4] = (wg_v16)_mm512_permutex2var_ps(u0, hi, u4);
    d[5] = (wg_v16)_mm512_permutex2var_ps(u1, hi, u5);
}

/* input_transform on AVX-512: each patch row of the 16 lanes in vector loads (patch_row_512), the
 * transforms on 16-lane vectors. The rows of the channel WG_PF ahead are prefetched: a chunk
 * reads C_in planes at once, too many streams for the hardware prefetcher (measured on the
 * U-Net's training step, Zen 5: the input transform 16% of the step's cycles before, 8% after).
 * The scalar input_transform stays as the reference: the tests compare the two bit for bit. (One
 * masked gather a patch element, the earlier form, measured 5% slower on the whole step.) */
__attribute__((target("avx512f"))) static void input_transform_512(float *V, size_t per_xi,
                                                                  size_t ld, const wg_geom *g,
                                                                  const wg_lanes *L,
                                                                  const float *x) {
    const int C = g->C, W = g->W;
    const size_t plane = (size_t)g->H * W;
    ptrdiff_t off[WG_P][16];
    __mmask16 m[WG_P][16];
    for (int i = 0; i < WG_P; i++)
        for (int l = 0; l < 16; l++) {
            unsigned bits = 0;
            for (int j = 0; j < WG_P; j++) bits |= ((L->kmask[i * WG_P + j] >> l) & 1u) << j;
            m[i][l] = (__mmask16)bits;
            off[i][l] = l < L->nl ? L->in_off[l] + (ptrdiff_t)i * W : 0;
        }
    for (int c = 0; c < C; c++) {
        const uintptr_t xc = (uintptr_t)(x + c * plane);
        if (c + WG_PF < C)
            for (int i = 0; i < WG_P; i++)
                for (int l = 0; l < L->nl; l++) prefetch_at(x + c * plane, WG_PF * plane + off[i][l], 0);
        wg_v16 d[WG_X], s[WG_X];
        for (int i = 0; i < WG_P; i++) patch_row_512(&d[i * WG_P], xc, off[i], m[i]);
        for (int j = 0; j < WG_P; j++) { /* column j through B^T */
            wg_v16 col[6], t[6];
            for (int i = 0; i < 6; i++) col[i] = d[i * WG_P + j];
            bt_vec(col, t);
            for (int i = 0; i < 6; i++) s[i * WG_P + j] = t[i];
        }
        float *dst = V + (size_t)c * ld;
        for (int i = 0; i < WG_P; i++) { /* row i through B^T */
            wg_v16 t[6];
            bt_vec(&s[i * WG_P], t);
            for (int j = 0; j < 6; j++)
                _mm512_storeu_ps(dst + (size_t)(i * WG_P + j) * per_xi, (__m512)t[j]);
        }
    }
}

#endif

/* y = A^T m for 6 rows m[0..5] of 16 lanes (A^T of F(4x4, 3x3)). */
#define WG_AT(m, y, l)                                                                             \
    do {                                                                                           \
        const float m0 = (m)[0][l], m1 = (m)[1][l], m2 = (m)[2][l], m3 = (m)[3][l],               \
                    m4 = (m)[4][l], m5 = (m)[5][l];                                                \
        const float a = m1 + m2, b = m1 - m2, c = m3 + m4, e = m3 - m4;                            \
        (y)[0][l] = m0 + a + c;                                                                    \
        (y)[1][l] = b + 2.0f * e;                                                                  \
        (y)[2][l] = a + 4.0f * c;                                                                  \
        (y)[3][l] = b + 8.0f * e + m5;                                                             \
    } while (0)

/* y = A^T M A (+ bias, or added to y) for the panel's tiles and every output channel, M_xi
 * [C_out, WG_NT] (M already at the panel). */
WG_TGT static void output_transform(float *y, const float *M, const wg_lanes *L, int C_out,
                                    int Ho, int Wo, const float *bias, int acc) {
    const size_t per_xi = xi_stride(C_out), plane = (size_t)Ho * Wo;
    for (int o = 0; o < C_out; o++) {
        const float *m = M + (size_t)o * WG_NT;
        float q[4 * WG_P][16]; /* A^T M: rows 0..3 x columns 0..5, per lane */
        for (int j = 0; j < WG_P; j++) {
            float col[6][16], out[4][16];
            for (int i = 0; i < 6; i++)
                for (int l = 0; l < 16; l++) col[i][l] = m[(size_t)(i * WG_P + j) * per_xi + l];
            for (int l = 0; l < 16; l++) WG_AT(col, out, l);
            for (int i = 0; i < 4; i++)
                for (int l = 0; l < 16; l++) q[i * WG_P + j][l] = out[i][l];
        }
        float r[WG_M * WG_M][16]; /* (A^T M) A: y[i][j] at i * 4 + j */
        const float bo = bias && !acc ? bias[o] : 0.0f;
        for (int i = 0; i < WG_M; i++) {
            float out[4][16];
            for (int l = 0; l < 16; l++) WG_AT(&q[i * WG_P], out, l);
            for (int j = 0; j < WG_M; j++)
                for (int l = 0; l < 16; l++) r[i * WG_M + j][l] = out[j][l] + bo;
        }
        float *yo = y + o * plane;
        if (o + WG_PF < C_out) /* the 4x4 blocks of a channel ahead, for writing */
            for (int l = 0; l < L->nl; l++)
                for (int i = 0; i < WG_M; i++)
                    prefetch_at(yo, WG_PF * plane + L->out_off[l] + i * Wo, 1);
        for (int l = 0; l < L->nl; l++) {
            float *dst = yo + L->out_off[l];
            const int rows = Ho - L->oy[l] < WG_M ? Ho - L->oy[l] : WG_M,
                      cols = Wo - L->ox[l] < WG_M ? Wo - L->ox[l] : WG_M;
            for (int i = 0; i < rows; i++)
                for (int j = 0; j < cols; j++) {
                    if (acc)
                        dst[i * Wo + j] += r[i * WG_M + j][l];
                    else
                        dst[i * Wo + j] = r[i * WG_M + j][l];
                }
        }
    }
}

/* y [B, C_out, Ho, Wo] (=, or += with acc) the 3x3 stride-1 convolution of x [B, C_in, H, W]
 * with padding pad, from the transformed filters U (computed into ws by the caller). */
static void winograd_run(float *y, const float *x, const float *bias, int acc, int B, int C_in,
                         int H, int W, int C_out, int pad, int Ho, int Wo, float *ws) {
    wg_geom g = {C_in, H, W, pad, (Ho + WG_M - 1) / WG_M, (Wo + WG_M - 1) / WG_M, 0};
    g.tiles = B * g.th * g.tw;
    const float *U = ws;
    float *bufs = ws + (size_t)WG_X * C_in * C_out;
    const size_t per_thread = (size_t)WG_X * (xi_stride(C_in) + xi_stride(C_out));
    const int chunks = (g.tiles + WG_NT - 1) / WG_NT;
    const double flops = 2.0 * WG_X * C_in * C_out * (double)g.tiles;
    /* (AVX2 gathers measured no faster than the scalar copies, Zen 4: 1.01x, 0.99x; the vector
     * input transform is AVX-512 only) */
    const int simd_in =
        atomic_load_explicit(&simd_input_enabled, memory_order_relaxed) ? (int)ddpm_mk_isa() : 0;
    int T = ddpm_mk_threads(flops);
    if (T > chunks) T = chunks;
#pragma omp parallel for schedule(static) num_threads(T) if (T > 1)
    for (int k = 0; k < chunks; k++) {
        float *V = bufs + (size_t)omp_get_thread_num() * per_thread;
        float *M = V + (size_t)WG_X * xi_stride(C_in);
        const int t0 = k * WG_NT, nt = g.tiles - t0 < WG_NT ? g.tiles - t0 : WG_NT;
        wg_lanes L[WG_NT / 16];
        for (int p = 0; p * 16 < nt; p++) {
            lanes_of(&L[p], &g, C_out, Ho, Wo, t0 + p * 16, nt - p * 16 < 16 ? nt - p * 16 : 16);
#if defined(__x86_64__) && defined(__GNUC__)
            if (simd_in == DDPM_ISA_AVX512)
                input_transform_512(V + (size_t)p * C_in * 16, xi_stride(C_in), 16, &g, &L[p], x);
            else
#endif
                input_transform(V + (size_t)p * C_in * 16, xi_stride(C_in), 16, &g, &L[p], x);
        }
        for (int xi = 0; xi < WG_X; xi++) {
            const ddpm_mk_gemm gm = {.M = C_out, .N = nt, .K = C_in,
                                     .a = U + (size_t)xi * C_out * C_in, .sam = C_in, .sak = 1,
                                     .b = V + (size_t)xi * xi_stride(C_in), .b_packed = 1,
                                     .c = M + (size_t)xi * xi_stride(C_out), .ldc = WG_NT};
            ddpm_mk_gemm_run(&gm, 0, C_out, 0, nt);
        }
        for (int p = 0; p * 16 < nt; p++)
            output_transform(y, M + p * 16, &L[p], C_out, Ho, Wo, bias, acc);
    }
}

void conv_winograd_forward(float *out, const float *inp, const float *weight, const float *bias,
                           const ddpm_conv_dims *d, float *ws) {
    weight_transform(ws, weight, d->C_out, d->C_in, 0);
    winograd_run(out, inp, bias, 0, d->B, d->C_in, d->H, d->W, d->C_out, d->pad, d->H_out,
                 d->W_out, ws);
}

void conv_winograd_dx(float *dinp, const float *dout, const float *weight,
                      const ddpm_conv_dims *d, float *ws) {
    weight_transform(ws, weight, d->C_in, d->C_out, 1);
    winograd_run(dinp, dout, NULL, 1, d->B, d->C_out, d->H_out, d->W_out, d->C_in, 2 - d->pad,
                 d->H, d->W, ws);
}

/* ---- the weight gradient ----
 *
 * With y = A^T (U (.) V) A per tile and U = G g G^T, the gradient of the filter g is
 *   dg = G^T dU G,  dU_xi [C_out, C_in] = sum over tiles of E_xi [C_out, tile] V_xi [C_in, tile],
 * E = A dy A^T the 4x4 block of dy of the tile taken back through the output transform (zero
 * where the block leaves the output). The sum over tiles is again 36 GEMMs, here with the tiles
 * as K: dU^T_xi [C_in, C_out] += V_xi [C_in, tiles] E_xi [tiles, C_out] per chunk of tiles (V
 * row-major, E tile by C_out), chunks small enough (dw_chunk_tiles) to stay in cache beside
 * dU. The batch's tiles fall into dw_groups groups (fixed by the shape), each summed chunk by
 * chunk into a dU of its own, brought back to 3x3, and the groups' 3x3 partials added in group
 * order (shorter float sums than one over all tiles: 1.0e-5 of the largest element against
 * 4.5e-5 on the 4116-tile test shape). With at least as many groups as threads, each thread
 * takes whole groups (no barrier; measured faster, Zen 5, 2 threads: 10.3 against 11.9 ms at 100
 * x 64 x 28 x 28); with fewer (the 8 x 8 levels of a ContextUnet, 400 tiles, one group), the
 * threads share each chunk: its panels' transforms, then its 36 GEMMs, one transform point per
 * thread. Both sum every dU_xi over the same chunks in the same order, so the result does not
 * depend on the thread count. */

/* Tiles per weight-gradient chunk: its V and E (36 (C_in + C_out) floats a tile) in about 2.5 MB. */
static int dw_chunk_tiles(int C_in, int C_out) {
    const int nt = (int)(2.5e6 / (144.0 * (C_in + C_out))) / 16 * 16;
    return nt < 32 ? 32 : nt > 256 ? 256 : nt;
}

typedef struct {
    int NT;
    size_t per_v, per_e; /* floats from one transform point's V (E) to the next */
} wg_dw_plan;

/* One thread's (or one shared) working set: dU^T, V and E. */
static size_t dw_set_floats(const ddpm_conv_dims *d, const wg_dw_plan *p) {
    return (size_t)WG_X * ((size_t)d->C_in * d->C_out + p->per_v + p->per_e);
}

static wg_dw_plan dw_plan(const ddpm_conv_dims *d) {
    wg_dw_plan p;
    p.NT = dw_chunk_tiles(d->C_in, d->C_out);
    p.per_v = (size_t)d->C_in * p.NT + 16;
    p.per_e = (size_t)p.NT * d->C_out + 16;
    return p;
}

/* Tiles of the whole batch. */
static long long dw_tiles(const ddpm_conv_dims *d) {
    return (long long)d->B * ((d->H_out + WG_M - 1) / WG_M) * ((d->W_out + WG_M - 1) / WG_M);
}

/* Groups of consecutive tiles for the weight gradient: a power of two up to 8 with at least 256
 * tiles each (or 1); fixed by the shape alone, so results do not depend on threads. */
static int dw_groups(const ddpm_conv_dims *d) {
    int G = 1;
    while (G < 8 && dw_tiles(d) / (2 * G) >= 256) G *= 2;
    return G;
}

int conv_winograd_dw_fits(const ddpm_conv_dims *d) {
    /* four panels of tiles at least: with fewer the dU and its transform back cost more than
     * the multiplications saved */
    return conv_winograd_fits(d) && dw_tiles(d) >= 64;
}

size_t conv_winograd_dw_workspace(const ddpm_conv_dims *d) {
    if (!conv_winograd_dw_fits(d)) return 0;
    const wg_dw_plan p = dw_plan(d);
    const size_t T = (size_t)(omp_get_max_threads() > 0 ? omp_get_max_threads() : 1);
    return (size_t)dw_groups(d) * 9 * d->C_in * d->C_out + T * dw_set_floats(d, &p);
}

/* E for the panel's tiles and every output channel: E_xi's rows (tile l, channel o) at
 * E + xi * per_xi + l * C_out + o (E already at the panel); lanes past nl are not written.
 * Channels 16 at a time: their E (36 x 16 tiles each, 36 KB) is written out tile by tile, 16
 * contiguous channels a row (channel by channel, each wrote one float into 576 cache lines). */
WG_TGT static void dy_transform(float *E, size_t per_xi, const wg_lanes *L, const float *dy,
                                int C_out, int Ho, int Wo) {
    const size_t plane = (size_t)Ho * Wo;
    int rows[16], cols[16];
    for (int l = 0; l < 16; l++) {
        rows[l] = l < L->nl ? (Ho - L->oy[l] < WG_M ? Ho - L->oy[l] : WG_M) : 0;
        cols[l] = l < L->nl ? (Wo - L->ox[l] < WG_M ? Wo - L->ox[l] : WG_M) : 0;
    }
    for (int o0 = 0; o0 < C_out; o0 += 16) {
        const int no = C_out - o0 < 16 ? C_out - o0 : 16;
        float e[16][WG_X][16]; /* [channel][transform point][lane] */
        for (int oo = 0; oo < no; oo++) {
            const int o = o0 + oo;
            if (o + WG_PF < C_out) /* the 4x4 blocks of a channel ahead */
                for (int l = 0; l < L->nl; l++)
                    for (int i = 0; i < WG_M; i++)
                        prefetch_at(dy, (o + WG_PF) * plane + L->out_off[l] + i * Wo, 0);
            float d[WG_M * WG_M][16]; /* the 4x4 block, [element][lane] */
            for (int l = 0; l < 16; l++) {
                const float *src = l < L->nl ? dy + o * plane + L->out_off[l] : dy;
                for (int i = 0; i < WG_M; i++)
                    for (int j = 0; j < WG_M; j++)
                        d[i * WG_M + j][l] = i < rows[l] && j < cols[l] ? src[i * Wo + j] : 0.0f;
            }
            float t[WG_P * WG_M][16]; /* A dy: each column of 4 to 6 rows (A = (A^T)^T of WG_AT) */
            for (int j = 0; j < WG_M; j++)
                for (int l = 0; l < 16; l++) {
                    const float d0 = d[j][l], d1 = d[WG_M + j][l], d2 = d[2 * WG_M + j][l],
                                d3 = d[3 * WG_M + j][l];
                    t[0 * WG_M + j][l] = d0;
                    t[1 * WG_M + j][l] = d0 + d1 + d2 + d3;
                    t[2 * WG_M + j][l] = d0 - d1 + d2 - d3;
                    t[3 * WG_M + j][l] = d0 + 2.0f * d1 + 4.0f * d2 + 8.0f * d3;
                    t[4 * WG_M + j][l] = d0 - 2.0f * d1 + 4.0f * d2 - 8.0f * d3;
                    t[5 * WG_M + j][l] = d3;
                }
            for (int r = 0; r < WG_P; r++) /* (A dy) A^T: each row of 4 to 6 columns */
                for (int l = 0; l < 16; l++) {
                    const float a0 = t[r * WG_M][l], a1 = t[r * WG_M + 1][l], a2 = t[r * WG_M + 2][l],
                                a3 = t[r * WG_M + 3][l];
                    e[oo][r * WG_P + 0][l] = a0;
                    e[oo][r * WG_P + 1][l] = a0 + a1 + a2 + a3;
                    e[oo][r * WG_P + 2][l] = a0 - a1 + a2 - a3;
                    e[oo][r * WG_P + 3][l] = a0 + 2.0f * a1 + 4.0f * a2 + 8.0f * a3;
                    e[oo][r * WG_P + 4][l] = a0 - 2.0f * a1 + 4.0f * a2 - 8.0f * a3;
                    e[oo][r * WG_P + 5][l] = a3;
                }
        }
        for (int xi = 0; xi < WG_X; xi++)
            for (int l = 0; l < L->nl; l++) {
                float *dst = E + (size_t)xi * per_xi + (size_t)l * C_out + o0;
                for (int oo = 0; oo < no; oo++) dst[oo] = e[oo][xi][l];
            }
    }
}

/* r = G^T e for one column e of 6 (the adjoint of g_times). */
static void gt_times(const float e[6], float r[3]) {
    const float sixth = 1.0f / 6.0f, twelfth = 1.0f / 12.0f, t24 = 1.0f / 24.0f;
    r[0] = 0.25f * e[0] - sixth * (e[1] + e[2]) + t24 * (e[3] + e[4]);
    r[1] = sixth * (e[2] - e[1]) + twelfth * (e[3] - e[4]);
    r[2] = sixth * (e[3] + e[4] - e[1] - e[2]) + e[5];
}

/* part [C_out, C_in, 3, 3] = G^T dU G for the input channels i0..i1-1, from dU^T_xi
 * [C_in, C_out] (xi = r 6 + s), 16 output channels at a time: their 36 elements are 16
 * contiguous floats of each dU^T_xi (one filter at a time read 36 floats C_in C_out apart, a
 * page apart at 32 channels and more: a fifth of the weight gradient's time at 128 channels). */
static void dw_filters_back(float *part, const float *dUt, int C_in, int C_out, int i0,
                            int i1) {
    const size_t per_xi = (size_t)C_in * C_out;
    for (int i = i0; i < i1; i++)
        for (int o0 = 0; o0 < C_out; o0 += 16) {
            const int n = C_out - o0 < 16 ? C_out - o0 : 16;
            float u[WG_X][16], t[3 * WG_P][16], g[9][16]; /* [element][filter] */
            for (int xi = 0; xi < WG_X; xi++) {
                const float *src = dUt + xi * per_xi + (size_t)i * C_out + o0;
                for (int l = 0; l < 16; l++) u[xi][l] = l < n ? src[l] : 0.0f;
            }
            for (int c = 0; c < WG_P; c++) /* G^T dU, column c: t[k][c] */
                for (int l = 0; l < 16; l++) {
                    const float col[6] = {u[c][l],          u[WG_P + c][l],     u[2 * WG_P + c][l],
                                          u[3 * WG_P + c][l], u[4 * WG_P + c][l], u[5 * WG_P + c][l]};
                    float r[3];
                    gt_times(col, r);
                    for (int k = 0; k < 3; k++) t[k * WG_P + c][l] = r[k];
                }
            for (int k = 0; k < 3; k++) /* (G^T dU) G, row k */
                for (int l = 0; l < 16; l++) {
                    const float row[6] = {t[k * WG_P][l],     t[k * WG_P + 1][l], t[k * WG_P + 2][l],
                                          t[k * WG_P + 3][l], t[k * WG_P + 4][l], t[k * WG_P + 5][l]};
                    float r[3];
                    gt_times(row, r);
                    for (int j = 0; j < 3; j++) g[k * 3 + j][l] = r[j];
                }
            for (int l = 0; l < n; l++) {
                float *dst = part + ((size_t)(o0 + l) * C_in + i) * 9;
                for (int k = 0; k < 9; k++) dst[k] = g[k][l];
            }
        }
}

/* dU^T of the tiles [ta, tb) into dU, chunk by chunk: thread tid of nth does its share of each
 * chunk's panels (their transforms into V and E), then of its 36 GEMMs, each transform point
 * summed over the chunks in order by whichever thread has it. With nth > 1 every thread of the
 * enclosing parallel region calls this, and the barriers keep the phases apart. */
static void dw_group(float *dU, float *V, float *E, wg_lanes *L, const wg_geom *g,
                     const wg_dw_plan *p, int C_out, int Ho, int Wo, const float *inp,
                     const float *dout, int ta, int tb, int simd_in, int tid, int nth) {
    const int C_in = g->C;
    const size_t per_dU = (size_t)C_in * C_out;
    for (int xi = WG_X * tid / nth; xi < WG_X * (tid + 1) / nth; xi++)
        memset(dU + (size_t)xi * per_dU, 0, sizeof(float) * per_dU);
    for (int t0 = ta; t0 < tb; t0 += p->NT) {
        const int nt = tb - t0 < p->NT ? tb - t0 : p->NT, panels = (nt + 15) / 16;
        for (int q = panels * tid / nth; q < panels * (tid + 1) / nth; q++) {
            lanes_of(&L[q], g, C_out, Ho, Wo, t0 + q * 16, nt - q * 16 < 16 ? nt - q * 16 : 16);
#if defined(__x86_64__) && defined(__GNUC__)
            if (simd_in == DDPM_ISA_AVX512)
                input_transform_512(V + (size_t)q * 16, p->per_v, (size_t)p->NT, g, &L[q], inp);
            else
#endif
                input_transform(V + (size_t)q * 16, p->per_v, (size_t)p->NT, g, &L[q], inp);
            dy_transform(E + (size_t)q * 16 * C_out, p->per_e, &L[q], dout, C_out, Ho, Wo);
        }
        if (nth > 1) {
#pragma omp barrier
        }
        for (int xi = WG_X * tid / nth; xi < WG_X * (tid + 1) / nth; xi++) {
            const ddpm_mk_gemm gm = {.M = C_in, .N = C_out, .K = nt,
                                     .a = V + (size_t)xi * p->per_v, .sam = p->NT, .sak = 1,
                                     .b = E + (size_t)xi * p->per_e, .ldb = C_out,
                                     .c = dU + (size_t)xi * per_dU, .ldc = C_out, .accumulate = 1};
            ddpm_mk_gemm_run(&gm, 0, C_in, 0, C_out);
        }
        if (nth > 1) { /* the next chunk's transforms overwrite V and E */
#pragma omp barrier
        }
    }
}

void conv_winograd_dw(float *dweight, const float *dout, const float *inp, const ddpm_conv_dims *d,
                      float *ws) {
    const int C_in = d->C_in, C_out = d->C_out, Ho = d->H_out, Wo = d->W_out, G = dw_groups(d);
    const wg_dw_plan p = dw_plan(d);
    wg_geom g = {C_in, d->H, d->W, d->pad, (Ho + WG_M - 1) / WG_M, (Wo + WG_M - 1) / WG_M, 0};
    g.tiles = d->B * g.th * g.tw;
    const size_t per_dU = (size_t)C_in * C_out, part = 9 * per_dU, set = dw_set_floats(d, &p);
    float *parts = ws, *sets = ws + (size_t)G * part; /* G 3x3 partials, then working sets */
    const int simd_in =
        atomic_load_explicit(&simd_input_enabled, memory_order_relaxed) ? (int)ddpm_mk_isa() : 0;
    const int T = ddpm_mk_threads(2.0 * WG_X * C_in * C_out * (double)g.tiles);
    if (T > 1 && G >= T) {
        /* as many groups as threads: one group per thread at a time, each in its own set */
#pragma omp parallel for schedule(static) num_threads(T)
        for (int grp = 0; grp < G; grp++) {
            float *dU = sets + (size_t)omp_get_thread_num() * set, *V = dU + (size_t)WG_X * per_dU;
            wg_lanes L[256 / 16];
            dw_group(dU, V, V + (size_t)WG_X * p.per_v, L, &g, &p, C_out, Ho, Wo, inp, dout,
                     (int)((long long)g.tiles * grp / G), (int)((long long)g.tiles * (grp + 1) / G),
                     simd_in, 0, 1);
            dw_filters_back(parts + (size_t)grp * part, dU, C_in, C_out, 0, C_in);
        }
    } else {
        /* fewer groups than threads: the threads share each group's chunks */
        float *dU = sets, *V = dU + (size_t)WG_X * per_dU, *E = V + (size_t)WG_X * p.per_v;
        wg_lanes L[256 / 16];
#pragma omp parallel num_threads(T) if (T > 1)
        {
            const int nth = omp_get_num_threads(), tid = omp_get_thread_num();
            for (int grp = 0; grp < G; grp++) {
                dw_group(dU, V, E, L, &g, &p, C_out, Ho, Wo, inp, dout,
                         (int)((long long)g.tiles * grp / G),
                         (int)((long long)g.tiles * (grp + 1) / G), simd_in, tid, nth);
                dw_filters_back(parts + (size_t)grp * part, dU, C_in, C_out, C_in * tid / nth,
                                C_in * (tid + 1) / nth);
                if (nth > 1) { /* the next group clears dU */
#pragma omp barrier
                }
            }
        }
    }
#pragma omp parallel for schedule(static) if (part * G > 32768)
    for (size_t k = 0; k < part; k++) {
        float sum = 0;
        for (int grp = 0; grp < G; grp++) sum += parts[(size_t)grp * part + k];
        dweight[k] += sum;
    }
}

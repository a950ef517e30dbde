/* test_conv_fast.c - the fast convolutions (the own kernel, shifted GEMMs, im2col; every
 * thread count) against the naive references, the fused eval-mode conv -> scale -> GELU, and the
 * convolution's shape validation. Tolerance as test_ops.c: |got - ref| <= 1e-4 |ref| + 1e-5
 * max|ref| per element. */
#include "testutil.h"
#include "core/internal.h"
#include "core/test_hooks.h"
#include "kernels/kernels.h"
#include "ops/conv_internal.h"

#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define RTOL 1e-4
#define ATOL_REL 1e-5

/* ---- the fast convolutions against the naive references ---- */

typedef struct {
    int B, Ci, H, W, Co, KH, KW, s, p;
} conv_shape;

static void fast_vs_naive(const conv_shape *sh, int transposed) {
    ddpm_conv_dims d;
    int rc = transposed ? ddpm_conv_transpose2d_dims(&d, sh->B, sh->Ci, sh->H, sh->W, sh->Co,
                                                     sh->KH, sh->KW, sh->s, sh->p)
                        : ddpm_conv2d_dims(&d, sh->B, sh->Ci, sh->H, sh->W, sh->Co, sh->KH, sh->KW,
                                           sh->s, sh->p);
    assert_int_equal(rc, DDPM_OK);
    const size_t nx = (size_t)d.B * d.C_in * d.H * d.W,
                 ny = (size_t)d.B * d.C_out * d.H_out * d.W_out;
    const size_t nw = (size_t)d.C_in * d.C_out * d.KH * d.KW;
    float *x = tu_randn_alloc(nx, 1), *w = tu_randn_alloc(nw, 0.3f), *b = tu_randn_alloc(d.C_out, 1);
    float *dy = tu_randn_alloc(ny, 1);
    float *y1 = calloc(ny, 4), *y2 = calloc(ny, 4);
    float *dx1 = calloc(nx, 4), *dx2 = calloc(nx, 4), *dw1 = calloc(nw, 4), *dw2 = calloc(nw, 4);
    float *db1 = calloc(d.C_out, 4), *db2 = calloc(d.C_out, 4);
    size_t nws = transposed ? ddpm_conv_transpose2d_workspace(&d) : ddpm_conv2d_workspace(&d);
    float *ws = calloc(nws ? nws : 1, 4);
    if (transposed) {
        ddpm_conv_transpose2d_forward(y1, x, w, b, &d, ws);
        ddpm_conv_transpose2d_forward_ref(y2, x, w, b, &d);
        ddpm_conv_transpose2d_backward(dx1, dw1, db1, dy, x, w, &d, ws);
        ddpm_conv_transpose2d_backward_ref(dx2, dw2, db2, dy, x, w, &d);
    } else {
        ddpm_conv2d_forward(y1, x, w, b, &d, ws);
        ddpm_conv2d_forward_ref(y2, x, w, b, &d);
        ddpm_conv2d_backward(dx1, dw1, db1, dy, x, w, &d, ws);
        ddpm_conv2d_backward_ref(dx2, dw2, db2, dy, x, w, &d);
    }
    char what[160];
    snprintf(what, sizeof what, "%s B%d Ci%d %dx%d Co%d k%dx%d s%d p%d",
             transposed ? "convT" : "conv", sh->B, sh->Ci, sh->H, sh->W, sh->Co, sh->KH, sh->KW,
             sh->s, sh->p);
    tu_assert_close(y1, y2, ny, RTOL, ATOL_REL * tu_maxabs(y2, ny), what);
    tu_assert_close(dx1, dx2, nx, RTOL, ATOL_REL * tu_maxabs(dx2, nx), what);
    tu_assert_close(dw1, dw2, nw, RTOL, ATOL_REL * tu_maxabs(dw2, nw), what);
    tu_assert_close(db1, db2, d.C_out, RTOL, ATOL_REL * tu_maxabs(db2, d.C_out), what);
    free(x);
    free(w);
    free(b);
    free(dy);
    free(y1);
    free(y2);
    free(dx1);
    free(dx2);
    free(dw1);
    free(dw2);
    free(db1);
    free(db2);
    free(ws);
}

/* With 1 thread every item runs serially with threaded BLAS; with 2 or 3, items run
 * concurrently with per-thread partial gradients (B = 1 shapes still take the serial path; odd
 * B leaves the threads uneven shares). */
static void test_fast_vs_naive_conv(void **s) {
    (void)s;
    const int saved_threads = omp_get_max_threads();
    /* stride-1 conv2d: the forward on the own kernel with the shifted GEMMs' backward (the
     * default), shifted GEMMs both ways, and im2col, each against the reference */
    for (int run = 0; run < 9; run++) {
        const int threads = 1 + run % 3;
        ddpm_conv_use_direct(run < 3);
        ddpm_conv_use_shifted(run < 6);
        omp_set_num_threads(threads);
        const conv_shape shapes[] = {
            {2, 32, 12, 10, 16, 3, 3, 1, 1}, /* large enough for the OpenMP im2col path */
            {1, 3, 9, 7, 5, 3, 3, 2, 1},     {3, 5, 8, 8, 6, 4, 4, 2, 1},
            {2, 7, 6, 9, 4, 1, 1, 1, 0}, /* pointwise: no im2col */
            {2, 4, 5, 5, 3, 1, 1, 2, 0}, /* 1x1 but strided: im2col */
            {1, 2, 5, 11, 3, 2, 5, 1, 2},    {2, 3, 10, 6, 2, 5, 3, 3, 0},
            {1, 24, 16, 16, 24, 3, 3, 1, 1}, {7, 6, 4, 4, 5, 3, 3, 1, 1},
            {3, 4, 5, 6, 3, 3, 3, 1, 0},     {2, 3, 4, 7, 5, 2, 4, 1, 3}, /* no pad; pad > kernel */
            {5, 9, 3, 5, 4, 1, 1, 1, 0},     {7, 3, 6, 6, 4, 3, 3, 2, 1},
            /* the own kernel's edges: two blocks of K (K > 256) in one item split by panels,
             * C_out not a multiple of 6 and positions not of 16, output rows of 1 and 3 */
            {1, 40, 9, 13, 7, 3, 3, 1, 1},   {3, 70, 5, 5, 11, 2, 2, 1, 0},
            {2, 3, 17, 1, 8, 3, 1, 1, 1},    {2, 5, 7, 1, 13, 1, 1, 1, 0},
            {1, 33, 11, 9, 14, 3, 3, 2, 1},  {2, 20, 13, 12, 9, 4, 4, 3, 2}, /* strided */
            {3, 5, 12, 12, 7, 3, 3, 1, 1}, /* 9 panels an item: a full chunk and one more */
            /* pointwise on the own kernel (conv_pointwise.c): C_out > 96 (two row blocks of the
             * weight gradient), C_in not a multiple of 16, positions 35 (a 3-column panel) */
            {3, 40, 5, 7, 100, 1, 1, 1, 0}, {4, 17, 7, 7, 12, 1, 1, 1, 0},
        };
        for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++) fast_vs_naive(&shapes[i], 0);
        const conv_shape tshapes[] = {
            {2, 16, 6, 5, 12, 4, 4, 2, 1}, {1, 6, 3, 4, 5, 2, 2, 2, 0},
            {2, 8, 1, 1, 6, 7, 7, 7, 0},   {1, 3, 5, 4, 4, 3, 3, 1, 1},
            {2, 5, 4, 3, 3, 3, 2, 3, 1},   {1, 24, 8, 8, 16, 4, 4, 2, 1},
            {7, 6, 4, 4, 5, 2, 2, 2, 0},   {5, 4, 2, 3, 3, 4, 4, 2, 1},
            /* kernel == stride, padding 0 (conv_patch.c with the own kernel on): up0 of the
             * ContextUnet (1 x 1 in, 4 x 4 and 7 x 7 out), Ng = C_out s s not a multiple of 16,
             * more than one row block (M = B H W > 96) and K block (M > 256 in dW's K, C_in > 256
             * in the forward's), a 3 x 3 stride 3 kernel, 1 x 1 stride 1 */
            {7, 20, 1, 1, 17, 4, 4, 4, 0}, {3, 9, 1, 1, 6, 7, 7, 7, 0},
            {4, 33, 3, 5, 7, 2, 2, 2, 0},  {6, 24, 7, 7, 70, 2, 2, 2, 0},
            {2, 5, 4, 6, 3, 3, 3, 3, 0},   {1, 3, 2, 2, 1, 1, 1, 1, 0},
            {2, 260, 2, 3, 3, 2, 2, 2, 0},
        };
        for (size_t i = 0; i < sizeof tshapes / sizeof tshapes[0]; i++)
            fast_vs_naive(&tshapes[i], 1);
    }
    omp_set_num_threads(saved_threads);
    ddpm_conv_use_shifted(1);
    ddpm_conv_use_direct(1);
}

/* The eval-mode conv -> batch norm -> GELU in one pass: against the naive conv followed by the
 * per-channel affine map and GELU in double, on the own kernel (the epilogue on each block) and
 * through BLAS (a pass after the conv), at 1 and 2 threads. */
static void test_conv_scale_gelu(void **s) {
    (void)s;
    const int saved_threads = omp_get_max_threads();
    const conv_shape shapes[] = {
        {3, 8, 7, 9, 10, 3, 3, 1, 1}, {2, 20, 6, 6, 7, 3, 3, 2, 1}, {1, 5, 4, 5, 13, 1, 1, 1, 0},
        {1, 70, 9, 8, 6, 3, 3, 1, 1}, /* two blocks of K: the epilogue only after the last */
    };
    for (int run = 0; run < 4; run++) {
        ddpm_conv_use_direct(run < 2);
        omp_set_num_threads(1 + run % 2);
        for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++) {
            const conv_shape *sh = &shapes[i];
            ddpm_conv_dims d;
            assert_int_equal(ddpm_conv2d_dims(&d, sh->B, sh->Ci, sh->H, sh->W, sh->Co, sh->KH,
                                              sh->KW, sh->s, sh->p),
                             DDPM_OK);
            const size_t nx = (size_t)d.B * d.C_in * d.H * d.W,
                         ny = (size_t)d.B * d.C_out * d.H_out * d.W_out,
                         nw = (size_t)d.C_in * d.C_out * d.KH * d.KW;
            float *x = tu_randn_alloc(nx, 1), *w = tu_randn_alloc(nw, 0.3f);
            float *scale = tu_randn_alloc(d.C_out, 1), *shift = tu_randn_alloc(d.C_out, 1);
            float *y1 = calloc(ny, 4), *y2 = calloc(ny, 4);
            const size_t nws = ddpm_conv2d_workspace(&d);
            float *ws = calloc(nws ? nws : 1, 4);
            ddpm_conv2d_scale_gelu_forward(y1, x, w, scale, shift, &d, ws);
            ddpm_conv2d_forward_ref(y2, x, w, NULL, &d);
            const size_t N = (size_t)d.H_out * d.W_out;
            for (size_t k = 0; k < ny; k++) {
                const double v = (double)y2[k] * scale[k / N % d.C_out] + shift[k / N % d.C_out];
                y2[k] = (float)(v * 0.5 * erfc(-v / sqrt(2.0)));
            }
            tu_assert_close(y1, y2, ny, RTOL, ATOL_REL * tu_maxabs(y2, ny), "conv scale gelu");
            free(x);
            free(w);
            free(scale);
            free(shift);
            free(y1);
            free(y2);
            free(ws);
        }
    }
    omp_set_num_threads(saved_threads);
    ddpm_conv_use_direct(1);
}

/* The own kernel's convolutions give bit for bit the same results at every instruction-set level
 * (the GEMM kernels perform the same operations in the same order; only the tile heights
 * differ): forward, input and weight gradients on the U-Nets' shapes, AVX2 against AVX-512. */
static void test_conv_same_bits_every_isa(void **s) {
    (void)s;
    if (ddpm_mk_isa_cpu() < DDPM_ISA_AVX512) {
        print_message("no AVX-512 on this CPU: nothing to compare the AVX2 convolutions with\n");
        return;
    }
    const conv_shape shapes[] = {{2, 32, 14, 14, 64, 3, 3, 1, 1}, {3, 5, 12, 12, 7, 3, 3, 1, 1},
                                 {2, 20, 13, 12, 9, 4, 4, 2, 1},  {1, 70, 9, 8, 13, 3, 3, 1, 1}};
    for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++) {
        const conv_shape *sh = &shapes[i];
        ddpm_conv_dims d;
        assert_int_equal(ddpm_conv2d_dims(&d, sh->B, sh->Ci, sh->H, sh->W, sh->Co, sh->KH, sh->KW,
                                          sh->s, sh->p),
                         DDPM_OK);
        const size_t nx = (size_t)d.B * d.C_in * d.H * d.W,
                     ny = (size_t)d.B * d.C_out * d.H_out * d.W_out,
                     nw = (size_t)d.C_in * d.C_out * d.KH * d.KW;
        float *x = tu_randn_alloc(nx, 1), *w = tu_randn_alloc(nw, 0.3f), *b = tu_randn_alloc(d.C_out, 1);
        float *dy = tu_randn_alloc(ny, 1);
        float *out[2][4];
        const size_t nws = ddpm_conv2d_workspace(&d);
        float *ws = calloc(nws ? nws : 1, 4);
        for (int v = 0; v < 2; v++) {
            ddpm_mk_set_isa(v ? DDPM_ISA_AVX512 : DDPM_ISA_AVX2);
            out[v][0] = calloc(ny, 4);
            out[v][1] = calloc(nx, 4);
            out[v][2] = calloc(nw, 4);
            out[v][3] = calloc(d.C_out, 4);
            ddpm_conv2d_forward(out[v][0], x, w, b, &d, ws);
            ddpm_conv2d_backward(out[v][1], out[v][2], out[v][3], dy, x, w, &d, ws);
        }
        ddpm_mk_set_isa(-1);
        const size_t n[4] = {ny, nx, nw, (size_t)d.C_out};
        for (int k = 0; k < 4; k++) {
            assert_memory_equal(out[0][k], out[1][k], n[k] * sizeof(float));
            free(out[0][k]);
            free(out[1][k]);
        }
        free(x);
        free(w);
        free(b);
        free(dy);
        free(ws);
    }
}

/* Winograd F(4x4, 3x3), forward and input gradient, against the naive references (forward in
 * double) and against the own kernel's direct path: paddings 0..2, odd and even outputs, one
 * chunk and many (tiles over 64, across items), 1 to 3 threads, the input gradient added to a
 * non-zero buffer. Inputs like a U-Net's activations after a norm (unit normal) and its weights
 * (scale 1/sqrt(9 C_in)). Prints the worst errors relative to max|ref|. */
static void test_winograd_matches_references(void **s) {
    (void)s;
    if (!ddpm_mk_fast()) {
        print_message("no AVX2/FMA here: Winograd runs only on the own kernel\n");
        return;
    }
    const int saved_threads = omp_get_max_threads();
    const conv_shape shapes[] = {
        {2, 16, 8, 8, 16, 3, 3, 1, 1},   {3, 32, 7, 9, 24, 3, 3, 1, 1},
        {1, 20, 11, 6, 17, 3, 3, 1, 0},  {2, 16, 5, 5, 32, 3, 3, 1, 2},
        {4, 64, 14, 14, 64, 3, 3, 1, 1}, {1, 48, 28, 28, 32, 3, 3, 1, 1},
    };
    double worst_y = 0, worst_dx = 0;
    for (int threads = 1; threads <= 3; threads++) {
        omp_set_num_threads(threads);
        for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++) {
            const conv_shape *sh = &shapes[i];
            ddpm_conv_dims d;
            assert_int_equal(ddpm_conv2d_dims(&d, sh->B, sh->Ci, sh->H, sh->W, sh->Co, 3, 3, 1,
                                              sh->p),
                             DDPM_OK);
            const size_t nx = (size_t)d.B * d.C_in * d.H * d.W,
                         ny = (size_t)d.B * d.C_out * d.H_out * d.W_out,
                         nw = (size_t)d.C_in * d.C_out * 9;
            float *x = tu_randn_alloc(nx, 1), *b = tu_randn_alloc(d.C_out, 0.1f);
            float *w = tu_randn_alloc(nw, (float)(1.0 / sqrt(9.0 * d.C_in)));
            float *dy = tu_randn_alloc(ny, 1);
            float *y_wg = calloc(ny, 4), *y_ref = calloc(ny, 4), *y_dir = calloc(ny, 4);
            float *dx_wg = tu_randn_alloc(nx, 1), *dx_ref = malloc(nx * 4), *dx_dir = malloc(nx * 4);
            memcpy(dx_ref, dx_wg, nx * 4);
            memcpy(dx_dir, dx_wg, nx * 4);
            const size_t nws = ddpm_conv2d_workspace(&d);
            float *ws = calloc(nws ? nws : 1, 4);
            ddpm_conv2d_forward(y_wg, x, w, b, &d, ws);
            ddpm_conv2d_backward(dx_wg, NULL, NULL, dy, x, w, &d, ws);
            ddpm_conv_use_winograd(0);
            ddpm_conv2d_forward(y_dir, x, w, b, &d, ws);
            ddpm_conv2d_backward(dx_dir, NULL, NULL, dy, x, w, &d, ws);
            ddpm_conv_use_winograd(1);
            ddpm_conv2d_forward_ref(y_ref, x, w, b, &d);
            float *dx_add = calloc(nx, 4);
            ddpm_conv2d_backward_ref(dx_add, NULL, NULL, dy, x, w, &d);
            for (size_t k = 0; k < nx; k++) dx_ref[k] += dx_add[k];
            const double my = tu_maxabs(y_ref, ny), mx = tu_maxabs(dx_add, nx);
            char what[96];
            snprintf(what, sizeof what, "winograd B%d Ci%d %dx%d Co%d p%d, %d threads", sh->B,
                     sh->Ci, sh->H, sh->W, sh->Co, sh->p, threads);
            tu_assert_close(y_wg, y_ref, ny, 0, 8e-6 * my, what);
            tu_assert_close(y_wg, y_dir, ny, 0, 8e-6 * my, what);
            for (size_t k = 0; k < ny; k++) {
                const double e = fabs((double)y_wg[k] - y_ref[k]) / my;
                worst_y = e > worst_y ? e : worst_y;
            }
            for (size_t k = 0; k < nx; k++) {
                const double e = fabs((double)dx_wg[k] - dx_ref[k]) / mx;
                worst_dx = e > worst_dx ? e : worst_dx;
            }
            tu_assert_close(dx_wg, dx_ref, nx, 0, 8e-6 * mx, what);
            tu_assert_close(dx_wg, dx_dir, nx, 0, 8e-6 * mx, what);
            free(x);
            free(b);
            free(w);
            free(dy);
            free(y_wg);
            free(y_ref);
            free(y_dir);
            free(dx_wg);
            free(dx_ref);
            free(dx_dir);
            free(dx_add);
            free(ws);
        }
    }
    omp_set_num_threads(saved_threads);
    printf("[conv] winograd F(4x4,3x3) worst |error| / max|ref|: forward %.2g, input gradient %.2g\n",
           worst_y, worst_dx);
}

/* dweight += x (*) dy in double, the reference of the weight gradients. */
static void dw_double(float *dw, const float *x, const float *dy, const ddpm_conv_dims *d) {
    for (int co = 0; co < d->C_out; co++)
        for (int ci = 0; ci < d->C_in; ci++)
            for (int ki = 0; ki < 3; ki++)
                for (int kj = 0; kj < 3; kj++) {
                    double s = 0;
                    for (int b = 0; b < d->B; b++)
                        for (int oh = 0; oh < d->H_out; oh++)
                            for (int ow = 0; ow < d->W_out; ow++) {
                                const int ih = oh - d->pad + ki, iw = ow - d->pad + kj;
                                if (ih < 0 || ih >= d->H || iw < 0 || iw >= d->W) continue;
                                s += (double)x[(((size_t)b * d->C_in + ci) * d->H + ih) * d->W + iw] *
                                     dy[(((size_t)b * d->C_out + co) * d->H_out + oh) * d->W_out + ow];
                            }
                    dw[((co * d->C_in + ci) * 3 + ki) * 3 + kj] += (float)s;
                }
}

/* The Winograd weight gradient against the double-precision reference and the direct kernel's:
 * paddings 0..2, odd and even outputs, 1 to 8 tile groups cut across items, chunks across
 * items and several chunks a group, 1 to 3
 * threads (the same bits at each), added to a non-zero dweight. Prints the worst error relative
 * to max|ref|. */
static void test_winograd_dw_matches_references(void **s) {
    (void)s;
    if (!ddpm_mk_fast()) {
        print_message("no AVX2/FMA here: Winograd runs only on the own kernel\n");
        return;
    }
    const int saved_threads = omp_get_max_threads();
    const conv_shape shapes[] = {
        {2, 48, 28, 28, 32, 3, 3, 1, 1},  {11, 16, 28, 28, 24, 3, 3, 1, 1},
        {2, 20, 27, 25, 17, 3, 3, 1, 0},  {1, 16, 30, 30, 16, 3, 3, 1, 2},
        {64, 32, 7, 7, 40, 3, 3, 1, 1},   {3, 128, 40, 36, 96, 3, 3, 1, 1},
        {84, 16, 28, 28, 16, 3, 3, 1, 1}, /* 4116 tiles: 8 groups, across items */
    };
    double worst = 0;
    for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++) {
        const conv_shape *sh = &shapes[i];
        ddpm_conv_dims d;
        assert_int_equal(ddpm_conv2d_dims(&d, sh->B, sh->Ci, sh->H, sh->W, sh->Co, 3, 3, 1, sh->p),
                         DDPM_OK);
        assert_true(conv_winograd_dw_fits(&d)); /* the path under test runs */
        const size_t nx = (size_t)d.B * d.C_in * d.H * d.W,
                     ny = (size_t)d.B * d.C_out * d.H_out * d.W_out, nw = (size_t)d.C_in * d.C_out * 9;
        float *x = tu_randn_alloc(nx, 1), *dy = tu_randn_alloc(ny, 1);
        float *w = tu_randn_alloc(nw, 0.1f), *dw0 = tu_randn_alloc(nw, 1);
        float *ref = malloc(nw * 4), *dir = malloc(nw * 4), *wg[3];
        memcpy(ref, dw0, nw * 4);
        dw_double(ref, x, dy, &d);
        float *delta = malloc(nw * 4);
        for (size_t k = 0; k < nw; k++) delta[k] = ref[k] - dw0[k];
        const double m = tu_maxabs(delta, nw);
        for (int t = 0; t < 3; t++) {
            omp_set_num_threads(t + 1); /* before sizing: the workspace has a buffer per thread */
            float *ws = calloc(ddpm_conv2d_workspace(&d) + 1, 4);
            wg[t] = malloc(nw * 4);
            memcpy(wg[t], dw0, nw * 4);
            ddpm_conv2d_backward(NULL, wg[t], NULL, dy, x, w, &d, ws);
            if (t == 0) {
                memcpy(dir, dw0, nw * 4);
                ddpm_conv_use_winograd(0);
                ddpm_conv2d_backward(NULL, dir, NULL, dy, x, w, &d, ws);
                ddpm_conv_use_winograd(1);
            }
            free(ws);
        }
        omp_set_num_threads(saved_threads);
        char what[96];
        snprintf(what, sizeof what, "winograd dw B%d Ci%d %dx%d Co%d p%d", sh->B, sh->Ci, sh->H,
                 sh->W, sh->Co, sh->p);
        tu_assert_close(wg[0], ref, nw, 0, 2e-5 * m, what);
        tu_assert_close(dir, ref, nw, 0, 1e-5 * m, what);
        for (size_t k = 0; k < nw; k++) {
            const double e = fabs((double)wg[0][k] - ref[k]) / m;
            worst = e > worst ? e : worst;
        }
        assert_memory_equal(wg[0], wg[1], nw * 4);
        assert_memory_equal(wg[0], wg[2], nw * 4);
        for (int t = 0; t < 3; t++) free(wg[t]);
        free(x);
        free(dy);
        free(w);
        free(dw0);
        free(ref);
        free(dir);
        free(delta);
    }
    printf("[conv] winograd F(4x4,3x3) weight gradient worst |error| / max|ref|: %.2g\n", worst);
}

/* The vector input transform (AVX-512) against the scalar reference copies: the same bits,
 * forward, input gradient and weight gradient, at every level the CPU has (at AVX2 both runs
 * take the copies). */
static void test_winograd_simd_input_same_bits(void **s) {
    (void)s;
    if (!ddpm_mk_fast()) return;
    /* the last two have enough tiles for the Winograd weight gradient */
    const conv_shape shapes[] = {{3, 16, 9, 11, 24, 3, 3, 1, 1}, {2, 32, 14, 14, 16, 3, 3, 1, 2},
                                 {5, 20, 7, 7, 20, 3, 3, 1, 0}, {6, 24, 13, 10, 16, 3, 3, 1, 1},
                                 {8, 16, 16, 16, 24, 3, 3, 1, 2}};
    for (int isa = DDPM_ISA_AVX2; isa <= (int)ddpm_mk_isa_cpu(); isa++) {
        ddpm_mk_set_isa(isa);
        for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++) {
            const conv_shape *sh = &shapes[i];
            ddpm_conv_dims d;
            assert_int_equal(ddpm_conv2d_dims(&d, sh->B, sh->Ci, sh->H, sh->W, sh->Co, 3, 3, 1, sh->p),
                             DDPM_OK);
            const size_t nx = (size_t)d.B * d.C_in * d.H * d.W,
                         ny = (size_t)d.B * d.C_out * d.H_out * d.W_out;
            float *x = tu_randn_alloc(nx, 1), *w = tu_randn_alloc((size_t)d.C_in * d.C_out * 9, 0.2f);
            float *dy = tu_randn_alloc(ny, 1), *ws = calloc(ddpm_conv2d_workspace(&d) + 1, 4);
            const size_t nw = (size_t)d.C_in * d.C_out * 9;
            float *y[2], *dx[2], *dw[2];
            for (int v = 0; v < 2; v++) {
                ddpm_conv_winograd_simd_input(v);
                y[v] = calloc(ny, 4);
                dx[v] = calloc(nx, 4);
                dw[v] = calloc(nw, 4);
                ddpm_conv2d_forward(y[v], x, w, NULL, &d, ws);
                ddpm_conv2d_backward(dx[v], dw[v], NULL, dy, x, w, &d, ws);
            }
            ddpm_conv_winograd_simd_input(1);
            assert_memory_equal(y[0], y[1], ny * 4);
            assert_memory_equal(dx[0], dx[1], nx * 4);
            assert_memory_equal(dw[0], dw[1], nw * 4);
            for (int v = 0; v < 2; v++) {
                free(y[v]);
                free(dx[v]);
                free(dw[v]);
            }
            free(x);
            free(w);
            free(dy);
            free(ws);
        }
    }
    ddpm_mk_set_isa(-1);
}

/* The same call at 1, 2 and 3 threads gives the same bits (chunks do not depend on threads). */
static void test_winograd_same_bits_any_threads(void **s) {
    (void)s;
    if (!ddpm_mk_fast()) return;
    const int saved_threads = omp_get_max_threads();
    ddpm_conv_dims d;
    assert_int_equal(ddpm_conv2d_dims(&d, 5, 32, 14, 14, 32, 3, 3, 1, 1), DDPM_OK);
    const size_t nx = (size_t)d.B * d.C_in * d.H * d.W, ny = (size_t)d.B * d.C_out * d.H_out * d.W_out;
    float *x = tu_randn_alloc(nx, 1), *w = tu_randn_alloc((size_t)d.C_in * d.C_out * 9, 0.1f);
    float *y[3];
    for (int t = 0; t < 3; t++) {
        omp_set_num_threads(t + 1); /* before sizing: the workspace has a buffer per thread */
        float *ws = calloc(ddpm_conv2d_workspace(&d) + 1, 4);
        y[t] = calloc(ny, 4);
        ddpm_conv2d_forward(y[t], x, w, NULL, &d, ws);
        free(ws);
    }
    omp_set_num_threads(saved_threads);
    assert_memory_equal(y[0], y[1], ny * 4);
    assert_memory_equal(y[0], y[2], ny * 4);
    for (int t = 0; t < 3; t++) free(y[t]);
    free(x);
    free(w);
}

/* ---- argument validation and corner cases ---- */

static void test_dims_validation(void **s) {
    (void)s;
    ddpm_conv_dims d;
    assert_int_equal(ddpm_conv2d_dims(&d, 1, 3, 2, 2, 4, 5, 5, 1, 1), DDPM_ERR_INVALID);
    assert_non_null(strstr(ddpm_last_error(), "larger than the padded input"));
    assert_int_equal(ddpm_conv2d_dims(&d, 1, 3, 8, 8, 4, 3, 3, 0, 1), DDPM_ERR_INVALID);
    assert_int_equal(ddpm_conv2d_dims(&d, 1, 3, 8, 8, 4, 3, 3, 1, -1), DDPM_ERR_INVALID);
    assert_int_equal(ddpm_conv2d_dims(&d, 0, 3, 8, 8, 4, 3, 3, 1, 1), DDPM_ERR_INVALID);
    assert_int_equal(ddpm_conv_transpose2d_dims(&d, 1, 3, 1, 1, 4, 2, 2, 1, 1), DDPM_ERR_INVALID);
    /* The DDPM U-Net's shapes. */
    assert_int_equal(ddpm_conv2d_dims(&d, 1, 3, 28, 28, 4, 4, 4, 2, 1), DDPM_OK);
    assert_int_equal(d.H_out, 14);
    assert_int_equal(ddpm_conv2d_dims(&d, 1, 3, 7, 9, 4, 3, 3, 2, 1), DDPM_OK);
    assert_int_equal(d.H_out, 4);
    assert_int_equal(d.W_out, 5);
    assert_int_equal(ddpm_conv_transpose2d_dims(&d, 1, 3, 14, 14, 4, 4, 4, 2, 1), DDPM_OK);
    assert_int_equal(d.H_out, 28);
    assert_int_equal(ddpm_conv_transpose2d_dims(&d, 1, 3, 1, 1, 4, 7, 7, 7, 0), DDPM_OK);
    assert_int_equal(d.H_out, 7);
    /* A single-item pointwise conv through BLAS multiplies the input directly: no workspace
     * (the own kernel's path needs copies and panel buffers). */
    assert_int_equal(ddpm_conv2d_dims(&d, 1, 5, 4, 4, 6, 1, 1, 1, 0), DDPM_OK);
    ddpm_conv_use_direct(0);
    assert_int_equal(ddpm_conv2d_workspace(&d), 0);
    ddpm_conv_use_direct(1);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fast_vs_naive_conv),
        cmocka_unit_test(test_conv_scale_gelu),
        cmocka_unit_test(test_conv_same_bits_every_isa),
        cmocka_unit_test(test_winograd_matches_references),
        cmocka_unit_test(test_winograd_dw_matches_references),
        cmocka_unit_test(test_winograd_same_bits_any_threads),
        cmocka_unit_test(test_winograd_simd_input_same_bits),
        cmocka_unit_test(test_dims_validation),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

/* mlp.c - the 2-D tutorial's MLPDiffusion with a hand-written backward pass.
 *
 *   h_0 = x                                   // [B, D]
 *   h_l = relu(h_{l-1} W_l^T + b_l + E_l[t])  // [B, H], l = 1..depth
 *   out = h_depth W_out^T + b_out             // [B, D]
 *
 * E_l is a learned table [T, H] (step_embeddings.{l-1}) or, with the sinusoidal option, a
 * projection of a fixed sinusoidal embedding of t (time_proj.{l-1}). The PyTorch module keeps its
 * Linear and ReLU layers in one ModuleList, hence the even indices linears.0, .2, .4, .6.
 *
 * Two implementations of the same pass:
 *  - fast (kernels/gemm.c, AVX2 + FMA): each hidden layer is one fused kernel call (x W^T, + bias,
 *    + embedding row, ReLU) on packed W^T panels; the backward masks by the ReLU inside the GEMM
 *    that produces each gradient. OpenMP threads split the batch rows (forward, input gradients)
 *    and the output features (weight, bias and embedding gradients), so every number is computed
 *    by one thread in one fixed order: results do not depend on the thread count.
 *  - reference (ddpm_linear_forward/backward, i.e. BLAS, and plain loops): used when the CPU lacks
 *    AVX2/FMA or DDPM_KERNELS=ref; tests/test_kernels.c checks the two agree. */
#include "kernels/kernels.h"
#include "core/json.h"
#include "models/model_internal.h"

#include <math.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#define MLP_RB 96 /* rows per block of the fast forward (a block stays in L2 through all layers) */

typedef struct {
    ddpm_mlp_config cfg;
    int w_idx[17], b_idx[17]; /* linears: depth + 1 of them */
    int emb_idx[16];          /* step_embeddings.l or time_proj.l weight */
    int embb_idx[16];         /* time_proj.l bias (sinusoidal) */
    int ld;                   /* fast path: row stride of h, temb, dh (H padded, see mlp_ld) */
    /* activations for the reserved batch (the reference path uses row stride H) */
    float *x;     /* [B, D] copy of the input */
    float *h;     /* [depth, B, ld] post-ReLU */
    float *temb;  /* [B, ld] sinusoidal embedding (sinusoidal option) */
    float *dh;    /* [2, B, ld] ping-pong gradients */
    float *tproj; /* [B, H] scratch for the projection (reference path) */
    int *t;       /* [B] */
    /* fast path */
    float *wt;            /* packed panels of W_l^T (forward), time_proj_l^T, W_out^T (D >= 8) */
    size_t wt_off[33];    /* [l] hidden l, [depth] output layer, [depth + 1 + l] time_proj l */
    float *tmp;           /* [D, H] dW_0^T */
    float *scratch;       /* per thread [3, MLP_RB, ld]: inference ping-pong + projection */
    int scratch_threads;
    float *sin_table;     /* [T, H] sinusoidal embeddings (NULL if too big: computed per row) */
    int B;        /* items in the last forward */
    int recorded; /* the last forward had train = 1 */
    int fast;     /* ... and used the fast path */
} mlp;

/* Row stride of the fast path's activations: H rounded up to 16 floats, plus 16 when that is an
 * even number of cache lines, so that walking down a column does not keep hitting the same few
 * L1 sets (H = 128 gives 144). */
static int mlp_ld(int H) {
    int ld = (H + 15) / 16 * 16;
    if ((ld / 16) % 2 == 0) ld += 16;
    return ld;
}

static int max_threads(void) {
#ifdef _OPENMP
    return omp_get_max_threads();
#else
    return 1;
#endif
}

static int mlp_reserve(ddpm_model *m, int B) {
    mlp *p = m->impl;
    const int H = p->cfg.hidden, D = p->cfg.dim, L = p->cfg.depth, ld = p->ld;
    const int nt = max_threads();
    free(p->x);
    free(p->h);
    free(p->temb);
    free(p->dh);
    free(p->tproj);
    free(p->t);
    free(p->scratch);
    p->x = ddpm_alloc_aligned((size_t)B * D, sizeof(float));
    p->h = ddpm_alloc_aligned(ddpm_size_mul((size_t)L * B, (size_t)ld), sizeof(float));
    p->temb = ddpm_alloc_aligned((size_t)B * ld, sizeof(float));
    p->dh = ddpm_alloc_aligned(ddpm_size_mul((size_t)2 * B, (size_t)ld), sizeof(float));
    p->tproj = ddpm_alloc_aligned((size_t)B * H, sizeof(float));
    p->t = ddpm_alloc((size_t)B, sizeof(int));
    p->scratch = ddpm_alloc_aligned((size_t)nt * 3 * MLP_RB * ld, sizeof(float));
    p->scratch_threads = nt;
    if (!p->x || !p->h || !p->temb || !p->dh || !p->tproj || !p->t || !p->scratch)
        return DDPM_ERR_NOMEM;
    m->max_batch = B;
    return DDPM_OK;
}

/* The DDPM U-Net's embedding: half = H/2, f_k = exp(-log(10000) k / (half - 1)),
 * emb = [sin(t f), cos(t f)]. */
static void sinusoidal(float *out, const int *t, int B, int H) {
    const int half = H / 2;
    const double scale = half > 1 ? log(10000.0) / (half - 1) : 0.0;
    for (int b = 0; b < B; b++)
        for (int k = 0; k < half; k++) {
            double a = t[b] * exp(-scale * k);
            out[(size_t)b * H + k] = (float)sin(a);
            out[(size_t)b * H + half + k] = (float)cos(a);
        }
}

/* ---- reference path: BLAS through ddpm_linear_*, activations with row stride H --------------- */

static void mlp_forward_ref(ddpm_model *m, mlp *p, int B, float *out) {
    const int H = p->cfg.hidden, D = p->cfg.dim, L = p->cfg.depth;
    if (p->cfg.sinusoidal) sinusoidal(p->temb, p->t, B, H);
    const float *prev = p->x;
    int fan_in = D;
    for (int l = 0; l < L; l++) {
        float *h = p->h + (size_t)l * B * H;
        ddpm_linear_forward(h, prev, ddpm_w(m, p->w_idx[l]), ddpm_w(m, p->b_idx[l]), B, fan_in, H);
        if (p->cfg.sinusoidal) {
            ddpm_linear_forward(p->tproj, p->temb, ddpm_w(m, p->emb_idx[l]),
                                ddpm_w(m, p->embb_idx[l]), B, H, H);
            for (size_t k = 0; k < (size_t)B * H; k++) h[k] += p->tproj[k];
        } else {
            const float *E = ddpm_w(m, p->emb_idx[l]);
            for (int b = 0; b < B; b++) {
                const float *e = E + (size_t)p->t[b] * H;
                float *hb = h + (size_t)b * H;
                for (int j = 0; j < H; j++) hb[j] += e[j];
            }
        }
        for (size_t k = 0; k < (size_t)B * H; k++) h[k] = h[k] > 0.0f ? h[k] : 0.0f;
        prev = h;
        fan_in = H;
    }
    ddpm_linear_forward(out, prev, ddpm_w(m, p->w_idx[L]), ddpm_w(m, p->b_idx[L]), B, H, D);
}

static void mlp_backward_ref(ddpm_model *m, mlp *p, const float *dout) {
    const int B = p->B, H = p->cfg.hidden, D = p->cfg.dim, L = p->cfg.depth;
    float *dh = p->dh, *dprev = p->dh + (size_t)B * H;
    memset(dh, 0, sizeof(float) * (size_t)B * H);
    const float *hL = p->h + (size_t)(L - 1) * B * H;
    ddpm_linear_backward(dh, ddpm_g(m, p->w_idx[L]), ddpm_g(m, p->b_idx[L]), dout, hL,
                         ddpm_w(m, p->w_idx[L]), B, H, D);
    for (int l = L - 1; l >= 0; l--) {
        const float *h = p->h + (size_t)l * B * H;
        /* through the ReLU: its output is positive exactly where it let the gradient pass */
        for (size_t k = 0; k < (size_t)B * H; k++)
            if (h[k] <= 0.0f) dh[k] = 0.0f;
        if (p->cfg.sinusoidal) {
            ddpm_linear_backward(NULL, ddpm_g(m, p->emb_idx[l]), ddpm_g(m, p->embb_idx[l]), dh,
                                 p->temb, ddpm_w(m, p->emb_idx[l]), B, H, H);
        } else {
            float *dE = ddpm_g(m, p->emb_idx[l]);
            for (int b = 0; b < B; b++) {
                float *de = dE + (size_t)p->t[b] * H;
                const float *d = dh + (size_t)b * H;
                for (int j = 0; j < H; j++) de[j] += d[j];
            }
        }
        const float *prev = l > 0 ? p->h + (size_t)(l - 1) * B * H : p->x;
        const int fan_in = l > 0 ? H : D;
        if (l > 0) memset(dprev, 0, sizeof(float) * (size_t)B * H);
        ddpm_linear_backward(l > 0 ? dprev : NULL, ddpm_g(m, p->w_idx[l]), ddpm_g(m, p->b_idx[l]),
                             dh, prev, ddpm_w(m, p->w_idx[l]), B, fan_in, H);
        float *tmp = dh;
        dh = dprev;
        dprev = tmp;
    }
}

/* ---- fast path: fused kernels, activations with row stride p->ld ----------------------------- */

/* The sinusoidal embedding of rows r0..r1-1 into p->temb. */
static void temb_rows(mlp *p, int r0, int r1) {
    const int H = p->cfg.hidden;
    for (int b = r0; b < r1; b++) {
        float *dst = p->temb + (size_t)b * p->ld;
        if (p->sin_table)
            memcpy(dst, p->sin_table + (size_t)p->t[b] * H, sizeof(float) * H);
        else
            sinusoidal(dst, p->t + b, 1, H);
    }
}

/* Part `tid` of `nth` of the forward's weight packing: W_l^T panels for every layer. */
static void pack_forward(ddpm_model *m, mlp *p, int tid, int nth) {
    const int H = p->cfg.hidden, D = p->cfg.dim, L = p->cfg.depth;
    const int np = (H + DDPM_MK_NR - 1) / DDPM_MK_NR;
    int p0, p1;
    ddpm_mk_split(np, nth, tid, 1, &p0, &p1);
    for (int l = 0; l < L; l++) {
        const int fan_in = l ? H : D;
        ddpm_mk_pack_b_t(p->wt + p->wt_off[l], ddpm_w(m, p->w_idx[l]), fan_in, fan_in, H, p0, p1);
        if (p->cfg.sinusoidal)
            ddpm_mk_pack_b_t(p->wt + p->wt_off[L + 1 + l], ddpm_w(m, p->emb_idx[l]), H, H, H, p0,
                             p1);
    }
    if (D >= 8) {
        ddpm_mk_split((D + DDPM_MK_NR - 1) / DDPM_MK_NR, nth, tid, 1, &p0, &p1);
        ddpm_mk_pack_b_t(p->wt + p->wt_off[L], ddpm_w(m, p->w_idx[L]), H, H, D, p0, p1);
    }
}

/* Rows r0..r1-1 through every layer, MLP_RB rows at a time. With train, h_l goes to p->h (kept
 * for the backward); otherwise through this thread's scratch. */
static void forward_rows(ddpm_model *m, mlp *p, int B, int train, int r0, int r1, float *scr,
                         float *out) {
    const int H = p->cfg.hidden, D = p->cfg.dim, L = p->cfg.depth, ld = p->ld;
    for (int b = r0; b < r1; b += MLP_RB) {
        const int nb = r1 - b < MLP_RB ? r1 - b : MLP_RB;
        const float *prev = p->x + (size_t)b * D;
        ptrdiff_t prev_ld = D;
        if (p->cfg.sinusoidal) temb_rows(p, b, b + nb);
        for (int l = 0; l < L; l++) {
            float *h = train ? p->h + ((size_t)l * B + b) * ld
                             : scr + (size_t)(l % 2) * MLP_RB * ld;
            // h [nb, H] = relu(prev [nb, fan_in] @ W_l^T + b_l + E_l[t])
            ddpm_mk_gemm g = {.M = nb, .N = H, .K = l ? H : D, .a = prev, .sam = prev_ld, .sak = 1,
                              .b = p->wt + p->wt_off[l], .b_packed = 1, .c = h, .ldc = ld,
                              .bias = ddpm_w(m, p->b_idx[l]), .relu = 1};
            if (p->cfg.sinusoidal) {
                // tproj [nb, H] = temb @ time_proj_l^T + bias, added to h's accumulators
                float *tp = scr + (size_t)2 * MLP_RB * ld;
                ddpm_mk_gemm gp = {.M = nb, .N = H, .K = H, .a = p->temb + (size_t)b * ld,
                                   .sam = ld, .sak = 1, .b = p->wt + p->wt_off[L + 1 + l],
                                   .b_packed = 1, .c = tp, .ldc = ld,
                                   .bias = ddpm_w(m, p->embb_idx[l])};
                ddpm_mk_gemm_run(&gp, 0, nb, 0, H);
                g.add = tp;
                g.ld_add = ld;
            } else {
                g.add = ddpm_w(m, p->emb_idx[l]);
                g.ld_add = H;
                g.add_idx = p->t + b;
            }
            ddpm_mk_gemm_run(&g, 0, nb, 0, H);
            prev = h;
            prev_ld = ld;
        }
        // out [nb, D] = h @ W_out^T + b_out
        float *o = out + (size_t)b * D;
        if (D < 8) {
            ddpm_mk_dot_rows(o, D, prev, prev_ld, ddpm_w(m, p->w_idx[L]), H, ddpm_w(m, p->b_idx[L]),
                             H, D, 0, nb);
        } else {
            ddpm_mk_gemm g = {.M = nb, .N = D, .K = H, .a = prev, .sam = prev_ld, .sak = 1,
                              .b = p->wt + p->wt_off[L], .b_packed = 1, .c = o, .ldc = D,
                              .bias = ddpm_w(m, p->b_idx[L])};
            ddpm_mk_gemm_run(&g, 0, nb, 0, D);
        }
    }
}

static void mlp_forward_fast(ddpm_model *m, mlp *p, int B, int train, float *out) {
    const double H = p->cfg.hidden, D = p->cfg.dim, L = p->cfg.depth;
    const double flops =
        2.0 * B * (D * H + (L - 1) * H * H + H * D + (p->cfg.sinusoidal ? L * H * H : 0));
    static _Thread_local ddpm_mk_gov gov;
    int nt = ddpm_mk_gov_begin(&gov, flops);
    if (nt > p->scratch_threads) nt = p->scratch_threads;
#pragma omp parallel num_threads(nt) if (nt > 1)
    {
#ifdef _OPENMP
        const int tid = omp_get_thread_num(), nth = omp_get_num_threads();
#else
        const int tid = 0, nth = 1;
#endif
        pack_forward(m, p, tid, nth);
        if (nth > 1) {
#pragma omp barrier
        }
        int r0, r1;
        ddpm_mk_split(B, nth, tid, 1, &r0, &r1);
        forward_rows(m, p, B, train, r0, r1, p->scratch + (size_t)tid * 3 * MLP_RB * p->ld, out);
    }
    ddpm_mk_gov_end(&gov);
}

static void mlp_backward_fast(ddpm_model *m, mlp *p, const float *dout) {
    const int B = p->B, H = p->cfg.hidden, D = p->cfg.dim, L = p->cfg.depth, ld = p->ld;
    const double flops = 4.0 * B * ((double)(L - 1) * H * H + 2.0 * H * D +
                                    (p->cfg.sinusoidal ? 0.5 * L * H * H : 0.0));
    static _Thread_local ddpm_mk_gov gov;
    const int nt = ddpm_mk_gov_begin(&gov, flops);
#pragma omp parallel num_threads(nt) if (nt > 1)
    {
#ifdef _OPENMP
        const int tid = omp_get_thread_num(), nth = omp_get_num_threads();
#else
        const int tid = 0, nth = 1;
#endif
        int r0, r1, c0, c1;
        ddpm_mk_split(B, nth, tid, 1, &r0, &r1);          /* batch rows: input gradients */
        ddpm_mk_split(H, nth, tid, DDPM_MK_NR, &c0, &c1); /* features: parameter gradients */
        float *dh = p->dh, *dprev = p->dh + (size_t)B * ld;
        const float *hL = p->h + (size_t)(L - 1) * B * ld;
        {
            // dh [B, H] = (dout [B, D] @ W_out [D, H]) * (h_L > 0)
            ddpm_mk_gemm g = {.M = B, .N = H, .K = D, .a = dout, .sam = D, .sak = 1,
                              .b = ddpm_w(m, p->w_idx[L]), .ldb = H, .c = dh, .ldc = ld,
                              .mask = hL, .ld_mask = ld};
            ddpm_mk_gemm_run(&g, r0, r1, 0, H);
            // dW_out [D, H] += dout^T [D, B] @ h_L [B, H]
            ddpm_mk_gemm gw = {.M = D, .N = H, .K = B, .a = dout, .sam = 1, .sak = D, .b = hL,
                               .ldb = ld, .c = ddpm_g(m, p->w_idx[L]), .ldc = H, .accumulate = 1};
            ddpm_mk_gemm_run(&gw, 0, D, c0, c1);
            if (tid == 0) {
                float *db = ddpm_g(m, p->b_idx[L]);
                for (int b = 0; b < B; b++)
                    for (int j = 0; j < D; j++) db[j] += dout[(size_t)b * D + j];
            }
        }
        if (nth > 1) {
#pragma omp barrier
        }
        for (int l = L - 1; l >= 0; l--) {
            const float *prev = l > 0 ? p->h + (size_t)(l - 1) * B * ld : p->x;
            const int fan_in = l > 0 ? H : D;
            const ptrdiff_t prev_ld = l > 0 ? ld : D;
            float *dW = ddpm_g(m, p->w_idx[l]);
            if (l > 0 || D >= 8) {
                // dW_l [H, fan_in] += dh^T [H, B] @ prev [B, fan_in], rows c0..c1
                ddpm_mk_gemm g = {.M = H, .N = fan_in, .K = B, .a = dh, .sam = 1, .sak = ld,
                                  .b = prev, .ldb = prev_ld, .c = dW, .ldc = fan_in,
                                  .accumulate = 1};
                ddpm_mk_gemm_run(&g, c0, c1, 0, fan_in);
            } else {
                // dW_0^T [D, H] = x^T [D, B] @ dh [B, H], columns c0..c1; then dW_0 += it
                ddpm_mk_gemm g = {.M = D, .N = H, .K = B, .a = p->x, .sam = 1, .sak = D, .b = dh,
                                  .ldb = ld, .c = p->tmp, .ldc = H};
                ddpm_mk_gemm_run(&g, 0, D, c0, c1);
                for (int o = c0; o < c1; o++)
                    for (int i = 0; i < D; i++) dW[(size_t)o * D + i] += p->tmp[(size_t)i * H + o];
            }
            ddpm_mk_colsum(ddpm_g(m, p->b_idx[l]), dh, ld, B, c0, c1);
            if (p->cfg.sinusoidal) {
                // d time_proj_l [H, H] += dh^T @ temb, d bias += column sums
                ddpm_mk_gemm g = {.M = H, .N = H, .K = B, .a = dh, .sam = 1, .sak = ld,
                                  .b = p->temb, .ldb = ld, .c = ddpm_g(m, p->emb_idx[l]), .ldc = H,
                                  .accumulate = 1};
                ddpm_mk_gemm_run(&g, c0, c1, 0, H);
                ddpm_mk_colsum(ddpm_g(m, p->embb_idx[l]), dh, ld, B, c0, c1);
            } else {
                ddpm_mk_scatter_rows(ddpm_g(m, p->emb_idx[l]), H, p->t, dh, ld, B, c0, c1);
            }
            if (l > 0) {
                // dh_{l-1} [B, H] = (dh [B, H] @ W_l [H, H]) * (h_{l-1} > 0), rows r0..r1
                // (W_l's rows are B's rows as they are: packing them costs more than it saves)
                ddpm_mk_gemm g = {.M = B, .N = H, .K = H, .a = dh, .sam = ld, .sak = 1,
                                  .b = ddpm_w(m, p->w_idx[l]), .ldb = H, .c = dprev, .ldc = ld,
                                  .mask = prev, .ld_mask = ld};
                ddpm_mk_gemm_run(&g, r0, r1, 0, H);
                if (nth > 1) {
#pragma omp barrier
                }
                float *tmp = dh;
                dh = dprev;
                dprev = tmp;
            }
        }
    }
    ddpm_mk_gov_end(&gov);
}

/* ---- the model interface --------------------------------------------------------------------- */

static int mlp_forward(ddpm_model *m, const ddpm_model_input *in, float *out) {
    mlp *p = m->impl;
    const int B = in->B, D = p->cfg.dim;
    if (B > m->max_batch)
        return ddpm_fail(DDPM_ERR_INVALID, "batch of %d exceeds the reserved %d", B, m->max_batch);
    for (int b = 0; b < B; b++)
        if (in->t[b] < 0 || in->t[b] >= p->cfg.num_timesteps)
            return ddpm_fail(DDPM_ERR_INVALID, "timestep %d outside the model's 0..%d", in->t[b],
                             p->cfg.num_timesteps - 1);
    memcpy(p->x, in->x, sizeof(float) * (size_t)B * D);
    memcpy(p->t, in->t, sizeof(int) * (size_t)B);
    p->fast = ddpm_mk_fast();
    if (p->fast)
        mlp_forward_fast(m, p, B, in->train, out);
    else
        mlp_forward_ref(m, p, B, out);
    p->B = B;
    p->recorded = in->train;
    return DDPM_OK;
}

static int mlp_backward(ddpm_model *m, const float *dout) {
    mlp *p = m->impl;
    if (!p->recorded) return ddpm_fail(DDPM_ERR_INVALID, "backward without a training forward");
    if (p->fast)
        mlp_backward_fast(m, p, dout);
    else
        mlp_backward_ref(m, p, dout);
    return DDPM_OK;
}

static void mlp_destroy(ddpm_model *m) {
    if (!m) return;
    mlp *p = m->impl;
    if (p) {
        free(p->x);
        free(p->h);
        free(p->temb);
        free(p->dh);
        free(p->tproj);
        free(p->t);
        free(p->wt);
        free(p->tmp);
        free(p->scratch);
        free(p->sin_table);
        free(p);
    }
    ddpm_model_free_common(m);
}

static const ddpm_model_ops mlp_ops = {"mlp", mlp_forward, mlp_backward, mlp_reserve, mlp_destroy};

char *ddpm_mlp_config_json(const ddpm_mlp_config *c) {
    cJSON *o = cJSON_CreateObject();
    if (!o) return NULL;
    cJSON_AddStringToObject(o, "kind", "mlp");
    cJSON_AddNumberToObject(o, "dim", c->dim);
    cJSON_AddNumberToObject(o, "hidden", c->hidden);
    cJSON_AddNumberToObject(o, "depth", c->depth);
    cJSON_AddNumberToObject(o, "num_timesteps", c->num_timesteps);
    cJSON_AddStringToObject(o, "time_embedding", c->sinusoidal ? "sinusoidal" : "learned");
    return ddpm_json_print_and_free(o);
}

int ddpm_mlp_create(const void *config_cjson, uint64_t seed, ddpm_model **out) {
    const cJSON *j = config_cjson;
    ddpm_mlp_config c;
    const char *emb;
    int rc;
    if ((rc = ddpm_json_int(j, "dim", 2, 1, 1 << 20, &c.dim)) ||
        (rc = ddpm_json_int(j, "hidden", 128, 1, 1 << 16, &c.hidden)) ||
        (rc = ddpm_json_int(j, "depth", 3, 1, 16, &c.depth)) ||
        (rc = ddpm_json_int(j, "num_timesteps", 100, 1, 1000000, &c.num_timesteps)) ||
        (rc = ddpm_json_string(j, "time_embedding", "learned", &emb)))
        return rc;
    if (strcmp(emb, "learned") != 0 && strcmp(emb, "sinusoidal") != 0)
        return ddpm_fail(DDPM_ERR_INVALID,
                         "model config: \"time_embedding\" must be learned or sinusoidal (got '%s')", emb);
    c.sinusoidal = strcmp(emb, "sinusoidal") == 0;
    if (c.sinusoidal && c.hidden % 2)
        return ddpm_fail(DDPM_ERR_INVALID, "model config: a sinusoidal embedding needs an even width");

    ddpm_model *m = ddpm_alloc(1, sizeof *m);
    mlp *p = ddpm_alloc(1, sizeof *p);
    if (!m || !p) {
        free(m);
        free(p);
        return DDPM_ERR_NOMEM;
    }
    m->ops = &mlp_ops;
    m->impl = p;
    p->cfg = c;
    m->dim = c.dim;
    m->sample_numel = (size_t)c.dim;
    m->num_timesteps = c.num_timesteps;
    m->config_json = ddpm_mlp_config_json(&c);

    ddpm_param_table pt = {0};
    const int L = c.depth, H = c.hidden, D = c.dim;
    for (int l = 0; l <= L; l++) {
        const int fin = l == 0 ? D : H, fout = l == L ? D : H;
        p->w_idx[l] = DDPM_PARAM(&pt, fout, fin, 0, 0, "linears.%d.weight", 2 * l);
        p->b_idx[l] = DDPM_PARAM(&pt, fout, 0, 0, 0, "linears.%d.bias", 2 * l);
    }
    for (int l = 0; l < L; l++) {
        if (c.sinusoidal) {
            p->emb_idx[l] = DDPM_PARAM(&pt, H, H, 0, 0, "time_proj.%d.weight", l);
            p->embb_idx[l] = DDPM_PARAM(&pt, H, 0, 0, 0, "time_proj.%d.bias", l);
        } else {
            p->emb_idx[l] = DDPM_PARAM(&pt, c.num_timesteps, H, 0, 0, "step_embeddings.%d.weight", l);
        }
    }
    rc = ddpm_model_alloc_params(m, &pt);
    if (!rc && !m->config_json) rc = ddpm_fail(DDPM_ERR_NOMEM, "out of memory");
    if (rc) {
        mlp_destroy(m);
        return rc;
    }
    for (int l = 0; l <= L; l++) {
        const float bound = 1.0f / sqrtf((float)(l == 0 ? D : H));
        ddpm_init_uniform(m, p->w_idx[l], bound, seed);
        ddpm_init_uniform(m, p->b_idx[l], bound, seed);
    }
    for (int l = 0; l < L; l++) {
        if (c.sinusoidal) {
            ddpm_init_uniform(m, p->emb_idx[l], 1.0f / sqrtf((float)H), seed);
            ddpm_init_uniform(m, p->embb_idx[l], 1.0f / sqrtf((float)H), seed);
        } else {
            ddpm_init_normal(m, p->emb_idx[l], 1.0f, seed); /* nn.Embedding: N(0, 1) */
        }
    }
    /* the fast path's packed weights (sized by the configuration) and sinusoidal table */
    p->ld = mlp_ld(H);
    size_t nwt = 0;
    for (int l = 0; l < L; l++) {
        p->wt_off[l] = nwt;
        nwt += ddpm_mk_packed_size(l ? H : D, H);
    }
    p->wt_off[L] = nwt;
    if (D >= 8) nwt += ddpm_mk_packed_size(H, D);
    for (int l = 0; c.sinusoidal && l < L; l++) {
        p->wt_off[L + 1 + l] = nwt;
        nwt += ddpm_mk_packed_size(H, H);
    }
    p->wt = ddpm_alloc_aligned(nwt, sizeof(float));
    p->tmp = ddpm_alloc_aligned((size_t)D * H, sizeof(float));
    const int want_table = c.sinusoidal && (size_t)c.num_timesteps * H <= ((size_t)1 << 22);
    if (want_table) {
        p->sin_table = ddpm_alloc_aligned((size_t)c.num_timesteps * H, sizeof(float));
        if (p->sin_table)
            for (int t = 0; t < c.num_timesteps; t++)
                sinusoidal(p->sin_table + (size_t)t * H, &t, 1, H);
    }
    if (!p->wt || !p->tmp || (want_table && !p->sin_table)) {
        mlp_destroy(m);
        return DDPM_ERR_NOMEM;
    }
    rc = mlp_reserve(m, 1);
    if (rc) {
        mlp_destroy(m);
        return rc;
    }
    *out = m;
    return DDPM_OK;
}

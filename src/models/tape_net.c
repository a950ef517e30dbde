/* tape_net.c - the one runtime that runs a network written on the tape over a batch: the
 * context U-Net, the tutorial SimpleUnet and the DDPM U-Net all use it.
 *
 * A network is written once, as a function that records items [b0, b0 + nb) on a tape with a
 * set of parameter handles (ddpm_tape_net_record_fn). This file decides how a batch runs:
 *
 * - Slices (networks whose items never interact, i.e. no batch statistics: the DDPM U-Net): a
 *   batch of B >= 2 items with enough work is split into slices of consecutive items (training:
 *   min(B, DDPM_TAPE_NET_TRAIN_SLICES), whatever the thread count; evaluation: min(threads, B)),
 *   taken round-robin by the threads, each slice on its own tape with single-threaded ops (one
 *   parallel region per forward or backward instead of one per op, and the serial parts of the
 *   ops run concurrently too). Slice k's parameter gradients accumulate into gpart[k] (slice 0's
 *   straight into m->grads), summed into m->grads in slice order after the backward: results do
 *   not depend on scheduling. Each item's output is the same whatever the split (dropout masks
 *   are addressed by the item's index in the batch). Networks with batch norm in training
 *   (context, simple) run one slice: the whole batch on one tape, the ops' own threads.
 * - Small calls (forward FLOPs below DDPM_TAPE_NET_SERIAL_FLOPS) run on one thread: waking a
 *   second thread costs more than it saves (measured on 2 cores: a 21 MFLOP forward + backward of
 *   10 items already runs 1.7x faster on two slices; on a busy machine every wake-up of a second
 *   thread can cost a scheduler time slice).
 * - Memory: a training forward records its whole slice (backward needs it); an eval forward runs
 *   in chunks of items, resetting the tape between them, so a tape's arena holds one chunk's
 *   activations. The arena grows during the first forward/backward of the largest batch and is
 *   reused afterwards.
 * - Micro-batches (training calls with in->microbatch = M > 0, every network): the call's items
 *   form fixed micro-batches of M items, one tape each (batch norm: its own statistics), taken
 *   round-robin by the threads (ops single-threaded). The backward runs them in rounds of one per thread, each into its thread's
 *   gradient buffer, and adds every buffer exactly (kernels/exact_sum.c) into m->grad_exact: the
 *   sum is the same for any thread count, and for any split of the micro-batches over
 *   processes. */
#include "core/test_hooks.h"
#include "kernels/kernels.h"
#include "models/model_internal.h"

#include <omp.h>

/* Calls with less forward work than this (FLOPs, ~0.1 ms on one core) run on one thread. */
#define DDPM_TAPE_NET_SERIAL_FLOPS 5e6

/* Eval-mode forwards without a fixed chunk run in chunks of items whose activations take at most
 * this much of the tape's arena (DDPM_EVAL_CHUNK=N overrides it with N items per chunk). */
#define EVAL_CHUNK_BYTES ((size_t)256 << 20)

static int eval_chunk(const ddpm_tape_net *tn, int B) {
    if (tn->eval_chunk_items > 0) return tn->eval_chunk_items < B ? tn->eval_chunk_items : B;
    const char *env = getenv("DDPM_EVAL_CHUNK");
    long n = env ? strtol(env, NULL, 10) : 0;
    if (n < 1) {
        const size_t item_floats = tn->eval_item_floats ? tn->eval_item_floats : 1;
        n = (long)(EVAL_CHUNK_BYTES / (sizeof(float) * item_floats));
        if (n < 2) n = 2; /* both threads busy in the per-item convolutions */
    }
    return n < B ? (int)n : B;
}

/* Frees slice k's tape, handles and gradient buffer (NULL ones are fine). */
static void free_slice(ddpm_tape_net *tn, int k) {
    ddpm_tape_free(tn->tape[k]);
    free(tn->prm[k]);
    free(tn->gpart[k]);
    tn->tape[k] = NULL;
    tn->prm[k] = NULL;
    tn->gpart[k] = NULL;
}

/* Tapes and handles for T slices, gradient buffers for the first G of them (slice 0's gradients
 * go to m->grads); allocated once, when T or G first grows. */
static int ensure_slices_bufs(ddpm_model *m, ddpm_tape_net *tn, int T, int G) {
    for (int k = tn->n_slices; k < T; k++) {
        tn->tape[k] = ddpm_tape_new();
        tn->prm[k] = ddpm_alloc(m->n_tensors, sizeof(ddpm_param));
        if (!tn->tape[k] || !tn->prm[k]) {
            free_slice(tn, k);
            return ddpm_fail(DDPM_ERR_NOMEM, "%s: out of memory for %d slices", m->ops->kind, T);
        }
        tn->n_slices = k + 1;
    }
    for (int k = 1; k < G && k < tn->n_slices; k++)
        if (!tn->gpart[k] && !(tn->gpart[k] = ddpm_alloc_aligned(m->n_params, sizeof(float))))
            return ddpm_fail(DDPM_ERR_NOMEM, "%s: out of memory for %d threads", m->ops->kind, G);
    return DDPM_OK;
}

static int ensure_slices(ddpm_model *m, ddpm_tape_net *tn, int T) {
    return ensure_slices_bufs(m, tn, T, T);
}

int ddpm_tape_net_init_image(ddpm_model *m, int channels, int height, int width, int num_timesteps,
                             char *config_json, ddpm_param_table *pt) {
    m->channels = channels;
    m->height = height;
    m->width = width;
    m->sample_numel = (size_t)channels * height * width;
    m->num_timesteps = num_timesteps;
    m->config_json = config_json;
    int rc = ddpm_model_alloc_params(m, pt);
    if (!rc && !m->config_json) rc = ddpm_fail(DDPM_ERR_NOMEM, "out of memory");
    ddpm_tape_net *tn = m->impl;
    if (!rc) rc = ensure_slices(m, tn, 1);
    if (rc) return rc;
    ddpm_model_param_handles(m, tn->prm[0], m->grads);
    m->microbatch_native = 1; /* micro-batches run concurrently, one tape each */
    return DDPM_OK;
}

void ddpm_tape_net_free(ddpm_tape_net *tn) {
    for (int k = 0; k < tn->n_slices; k++) free_slice(tn, k);
    tn->n_slices = 0;
    free(tn->mbuf);
    tn->mbuf = NULL;
    tn->mbuf_cap = 0;
}

int ddpm_tape_net_begin(ddpm_model *m, const ddpm_model_input *in) {
    ddpm_tape_net *tn = m->impl;
    const int B = in->B;
    tn->recorded = 0;
    if (B < 1 || B > m->max_batch)
        return ddpm_fail(DDPM_ERR_INVALID, "%s: batch of %d outside the reserved 1..%d",
                         m->ops->kind, B, m->max_batch);
    if (m->n_classes > 0) return DDPM_OK; /* a classifier takes no timestep */
    for (int b = 0; b < B; b++)
        if (in->t[b] < 0 || in->t[b] >= m->num_timesteps)
            return ddpm_fail(DDPM_ERR_INVALID, "%s: timestep %d outside 0..%d", m->ops->kind,
                             in->t[b], m->num_timesteps - 1);
    return DDPM_OK;
}

/* The number of slices for a call of B items (1: one tape, the ops' own threading). A training
 * call's slices sum their gradients, so their number is fixed by B alone (min(B,
 * DDPM_TAPE_NET_TRAIN_SLICES)), taken round-robin by however many threads there are: the
 * gradient does not depend on the thread count. An evaluation call's outputs do not depend on
 * the split: one slice per thread. */
static int slices_for(const ddpm_tape_net *tn, int B, int train) {
    const int nt = omp_get_max_threads();
    if (!tn->sliced || B < 2 || tn->item_flops * B < DDPM_TAPE_NET_SERIAL_FLOPS) return 1;
    if (train) return B < DDPM_TAPE_NET_TRAIN_SLICES ? B : DDPM_TAPE_NET_TRAIN_SLICES;
    if (nt < 2) return 1;
    const int T = B < nt ? B : nt;
    return T < DDPM_TAPE_NET_MAX_SLICES ? T : DDPM_TAPE_NET_MAX_SLICES;
}

/* Threads for T slices. */
static int slice_threads(int T) {
    const int nt = omp_get_max_threads();
    return T < nt ? T : nt;
}

/* A single-slice call small enough to run on one thread (item_flops 0: never). */
static int serial_call(const ddpm_tape_net *tn, int B) {
    return omp_get_max_threads() > 1 && tn->item_flops > 0 &&
           tn->item_flops * B < DDPM_TAPE_NET_SERIAL_FLOPS;
}

/* Items of slice k of T: [start(k), start(k + 1)). */
static int slice_start(int B, int T, int k) { return (int)((long long)B * k / T); }

/* Slice k's forward over items [b0, b0 + nb), in chunks in eval mode. */
static int run_slice(ddpm_model *m, ddpm_tape_net *tn, int k, const ddpm_model_input *in, int b0,
                     int nb, float *out, ddpm_tape_net_record_fn record) {
    const size_t d = ddpm_model_out_numel(m); /* output floats per item */
    ddpm_tape *tp = tn->tape[k];
    ddpm_tape_set_training(tp, in->train);
    ddpm_tape_set_rng(tp, in->seed, (uint32_t)in->step, (uint64_t)in->item0 + (uint64_t)b0);
    const int chunk = in->train ? nb : eval_chunk(tn, nb);
    for (int c0 = b0; c0 < b0 + nb; c0 += chunk) {
        const int n = b0 + nb - c0 < chunk ? b0 + nb - c0 : chunk;
        ddpm_tape_reset(tp);
        ddpm_var *y = record(m, tp, tn->prm[k], in, c0, n);
        const int rc = ddpm_tape_status(tp);
        if (rc) return rc;
        DDPM_CHECK(y && y->numel == (size_t)n * d);
        memcpy(out + (size_t)c0 * d, y->data, sizeof(float) * y->numel);
        tn->out[k] = y;
    }
    return DDPM_OK;
}

/* The first failure among the slices, re-raised on the calling thread (the message of a worker
 * thread's failure lives in that thread's error slot). */
static int slices_status(ddpm_tape_net *tn, int T) {
    for (int k = 0; k < T; k++)
        if (tn->status[k]) return ddpm_fail(tn->status[k], "%s", tn->err[k]);
    return DDPM_OK;
}

static void slice_record(ddpm_tape_net *tn, int k, int rc) {
    tn->status[k] = rc;
    if (rc) snprintf(tn->err[k], sizeof tn->err[k], "%s", ddpm_last_error());
}

/* The gradient buffer of thread j (of a micro-batch call): m->grads for thread 0. */
static float *thread_grads(ddpm_model *m, ddpm_tape_net *tn, int j) {
    return j ? tn->gpart[j] : m->grads;
}

/* A training call in micro-batches of M items: K tapes, taken round-robin by G threads. */
static int run_micro_batches(ddpm_model *m, ddpm_tape_net *tn, const ddpm_model_input *in,
                             float *out, ddpm_tape_net_record_fn record) {
    const int B = in->B, M = in->microbatch, K = (B + M - 1) / M;
    if (K > DDPM_TAPE_NET_MAX_SLICES)
        return ddpm_fail(DDPM_ERR_INVALID,
                         "%s: %d micro-batches of %d items in one call; at most %d (use larger "
                         "micro-batches)",
                         m->ops->kind, K, M, DDPM_TAPE_NET_MAX_SLICES);
    const int nt = omp_get_max_threads();
    const int G = K < nt ? K : nt;
    int rc = ensure_slices_bufs(m, tn, K, G);
    if (rc) return rc;
    /* Batch statistics: each micro-batch is normalised by its own (its tape), and its running
     * statistics update starts from the step's values in a copy of its own, left for the
     * trainer in m->mb_buffers (micro-batch order). */
    const size_t nb = m->n_buffers;
    if (nb && (size_t)K * nb > tn->mbuf_cap) {
        float *grown = ddpm_alloc_aligned((size_t)K * nb, sizeof(float));
        if (!grown) return ddpm_fail(DDPM_ERR_NOMEM, "%s: out of memory", m->ops->kind);
        free(tn->mbuf);
        tn->mbuf = grown;
        tn->mbuf_cap = (size_t)K * nb;
    }
    for (int k = 0; k < K; k++) {
        ddpm_model_param_handles(m, tn->prm[k], thread_grads(m, tn, k % G));
        if (!nb) continue;
        float *own = tn->mbuf + (size_t)k * nb;
        memcpy(own, m->buffers, sizeof(float) * nb);
        for (size_t i = 0; i < m->n_tensors; i++)
            if (m->tensors[i].is_buffer) tn->prm[k][i].w = own + m->tensors[i].offset;
    }
    m->mb_buffers = nb ? tn->mbuf : NULL;
#pragma omp parallel num_threads(G) if (G > 1)
    {
        omp_set_num_threads(1);
        const int me = omp_get_thread_num();
        for (int k = me; k < K; k += G) {
            const int b0 = k * M, items = b0 + M < B ? M : B - b0;
            slice_record(tn, k, run_slice(m, tn, k, in, b0, items, out, record));
        }
    }
    omp_set_num_threads(nt);
    tn->T = K;
    tn->G = G;
    tn->M = M;
    tn->B = B;
    rc = slices_status(tn, K);
    tn->recorded = rc == DDPM_OK;
    return rc;
}

/* The backward of run_micro_batches, in rounds of one micro-batch per thread, each round's
 * gradients added exactly into m->grad_exact by element ranges. */
static int backward_micro_batches(ddpm_model *m, ddpm_tape_net *tn, const float *dout) {
    const int K = tn->T, G = tn->G, M = tn->M;
    const size_t d = ddpm_model_out_numel(m), n = m->n_params;
    if (!m->grad_exact) return ddpm_fail(DDPM_ERR_INVALID, "%s: micro-batch backward without an accumulator",
                               m->ops->kind);
    int64_t *base = m->grad_exact;
    const ddpm_exact_acc acc = {base, base + n + 1}; /* lo limbs, hi limbs (trainer.c) */
    int64_t bad[DDPM_TAPE_NET_MAX_SLICES] = {0};
    const int nt = omp_get_max_threads();
#pragma omp parallel num_threads(G) if (G > 1)
    {
        omp_set_num_threads(1);
        const int me = omp_get_thread_num(), nth = omp_get_num_threads();
        const size_t e0 = n * (size_t)me / (size_t)nth, e1 = n * (size_t)(me + 1) / (size_t)nth;
        for (int r = 0; r * G < K; r++) {
            const int k = r * G + me;
            if (k < K) {
                float *g = thread_grads(m, tn, me);
                memset(g, 0, sizeof(float) * n);
                slice_record(tn, k, ddpm_tape_backward(tn->tape[k], tn->out[k],
                                                       dout + (size_t)k * M * d));
            }
#pragma omp barrier
            const int in_round = K - r * G < G ? K - r * G : G;
            for (int j = 0; j < in_round; j++)
                bad[me] += ddpm_mk_exact_add(acc, thread_grads(m, tn, j), e0, e1);
#pragma omp barrier
        }
    }
    omp_set_num_threads(nt);
    for (int j = 0; j < G; j++) acc.lo[n] += bad[j];
    return slices_status(tn, K);
}

int ddpm_tape_net_run(ddpm_model *m, const ddpm_model_input *in, float *out,
                      ddpm_tape_net_record_fn record) {
    ddpm_tape_net *tn = m->impl;
    const int B = in->B;
    tn->M = 0;
    if (in->train && in->microbatch > 0) return run_micro_batches(m, tn, in, out, record);
    const int T = slices_for(tn, B, in->train);
    int rc = ensure_slices(m, tn, T);
    if (rc) return rc;
    for (int k = 0; k < T; k++) ddpm_model_param_handles(m, tn->prm[k], k ? tn->gpart[k] : m->grads);
    if (T == 1) {
        const int nt = omp_get_max_threads(), serial = serial_call(tn, B);
        if (serial) omp_set_num_threads(1);
        rc = run_slice(m, tn, 0, in, 0, B, out, record);
        if (serial) omp_set_num_threads(nt);
    } else {
#pragma omp parallel num_threads(slice_threads(T))
        {
            omp_set_num_threads(1); /* this thread's ops run single-threaded */
            for (int k = omp_get_thread_num(); k < T; k += omp_get_num_threads()) {
                const int b0 = slice_start(B, T, k);
                slice_record(tn, k, run_slice(m, tn, k, in, b0, slice_start(B, T, k + 1) - b0, out,
                                              record));
            }
        }
        rc = slices_status(tn, T);
    }
    tn->T = T;
    tn->B = B;
    tn->recorded = in->train && rc == DDPM_OK;
    return rc;
}

int ddpm_tape_net_backward(ddpm_model *m, const float *dout) {
    ddpm_tape_net *tn = m->impl;
    if (!tn->recorded)
        return ddpm_fail(DDPM_ERR_INVALID, "%s: backward without a training forward", m->ops->kind);
    tn->recorded = 0; /* a tape replays a forward once */
    if (tn->M > 0) return backward_micro_batches(m, tn, dout);
    const int T = tn->T, B = tn->B;
    if (T == 1) {
        const int nt = omp_get_max_threads(), serial = serial_call(tn, B);
        if (serial) omp_set_num_threads(1);
        const int rc = ddpm_tape_backward(tn->tape[0], tn->out[0], dout);
        if (serial) omp_set_num_threads(nt);
        return rc;
    }
    const size_t d = ddpm_model_out_numel(m), n = m->n_params;
#pragma omp parallel num_threads(slice_threads(T))
    {
        omp_set_num_threads(1);
        const int nth = omp_get_num_threads(), me = omp_get_thread_num();
        for (int k = me; k < T; k += nth) {
            if (k) memset(tn->gpart[k], 0, sizeof(float) * n);
            const size_t b0 = (size_t)slice_start(B, T, k);
            slice_record(tn, k, ddpm_tape_backward(tn->tape[k], tn->out[k], dout + b0 * d));
        }
#pragma omp barrier
        /* m->grads += the other slices' gradients, in slice order; each thread a range */
        const size_t i0 = n * (size_t)me / (size_t)nth, i1 = n * (size_t)(me + 1) / (size_t)nth;
        for (int k = 1; k < T; k++) {
            const float *g = tn->gpart[k];
            float *dst = m->grads;
#pragma omp simd
            for (size_t i = i0; i < i1; i++) dst[i] += g[i];
        }
    }
    return slices_status(tn, T);
}

ddpm_tape *ddpm_model_tape(ddpm_model *m, int k) {
    if (!m || !ddpm_model_is_tape_net(m) || k < 0) return NULL;
    const ddpm_tape_net *tn = m->impl;
    return k < tn->n_slices ? tn->tape[k] : NULL;
}

int ddpm_model_item_bytes(ddpm_model *m, int training, size_t *bytes) {
    *bytes = 0;
    if (!ddpm_model_is_tape_net(m)) return DDPM_OK;
    const size_t d = m->sample_numel, np = m->n_params, nb = m->n_buffers;
    const size_t nout = ddpm_model_out_numel(m), cd = m->cond_dim > 0 ? (size_t)m->cond_dim : 1;
    float *grads = ddpm_alloc_aligned(np, sizeof(float));
    float *buffers = nb ? ddpm_alloc_aligned(nb, sizeof(float)) : NULL;
    /* two items of x, self_cond, out, dout, cond */
    float *x = ddpm_alloc(2 * (2 * d + 2 * nout + cd), sizeof(float));
    if (!grads || (nb && !buffers) || !x) {
        free(grads);
        free(buffers);
        free(x);
        return DDPM_ERR_NOMEM;
    }
    memcpy(grads, m->grads, np * sizeof(float));
    if (nb) memcpy(buffers, m->buffers, nb * sizeof(float));
    const int t[2] = {0, 0};
    int rc = DDPM_OK;
    /* one item; a network that cannot train on one (batch norm over a 1 x 1 map needs two
     * values a channel) is measured on two and halved */
    for (int B = 1; B <= 2; B++) {
        if (m->max_batch < B && (rc = ddpm_model_reserve(m, B))) break;
        const ddpm_model_input in = {.x = x, .t = t, .B = B, .train = training,
                                     .cond = m->cond_dim > 0 ? x + 2 * (2 * d + 2 * nout) : NULL,
                                     .self_cond = m->self_cond ? x + 2 * d : NULL};
        rc = m->ops->forward(m, &in, x + 4 * d);
        if (!rc && training) rc = m->ops->backward(m, x + 4 * d + 2 * nout);
        if (rc) continue;
        size_t used = 0;
        ddpm_tape *tp;
        for (int k = 0; (tp = ddpm_model_tape(m, k)); k++) {
            ddpm_tape_stats st;
            ddpm_tape_get_stats(tp, &st);
            used += st.arena_used;
        }
        *bytes = used / (size_t)B;
        break;
    }
    memcpy(m->grads, grads, np * sizeof(float));
    if (nb) memcpy(m->buffers, buffers, nb * sizeof(float));
    free(grads);
    free(buffers);
    free(x);
    return rc;
}

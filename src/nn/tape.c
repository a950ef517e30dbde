/* tape.c - record image-network forwards and replay them backwards.
 *
 * An op runs its forward immediately (ops/), allocating its output from the tape's arena,
 * and appends a node holding what its backward needs: the input and output vars, copies of the
 * parameter handles, the op's dims and pointers to saved statistics. Backward walks the nodes
 * in reverse; because backward functions accumulate, a var consumed by several ops just
 * receives every contribution in its lazily allocated grad before its producer is reached.
 *
 * Memory: the arena is a list of blocks that survives ddpm_tape_reset. A forward + backward
 * makes the same allocation sequence every time for the same batch shape, so once the blocks
 * exist nothing more is allocated. Pointers stay valid while the arena grows because blocks
 * are never moved, only added. Temporary workspace (im2col, attention backward) lives in one
 * separate scratch buffer that only grows, since it is dead as soon as each op returns. */
#include "nn/tape_internal.h"

#include <math.h>
#include <stdarg.h>

#define ARENA_ALIGN 64
#define ARENA_MIN_BLOCK ((size_t)1 << 20)

/* ---- lifetime, modes, errors ---- */

ddpm_tape *ddpm_tape_new(void) {
    ddpm_tape *t = ddpm_alloc(1, sizeof *t);
    if (!t) return NULL;
    t->training = 1;
    t->grad = 1;
    t->n_allocs = 1;
    return t;
}

void ddpm_tape_free(ddpm_tape *t) {
    if (!t) return;
    for (size_t i = 0; i < t->n_blocks; i++) free(t->blocks[i].base);
    free(t->blocks);
    free(t->nodes);
    free(t->scratch);
    free(t->spare);
    free(t->spare_n);
    free(t);
}

void ddpm_tape_reset(ddpm_tape *t) {
    t->cur = 0;
    t->off = 0;
    t->used = 0;
    t->n_nodes = 0;
    t->n_spare = 0;
    t->n_dropout = 0;
    t->status = DDPM_OK;
    tape_profile_reset(t);
}

void ddpm_tape_set_training(ddpm_tape *t, int training) {
    t->training = training != 0;
    t->grad = training != 0;
}

void ddpm_tape_set_grad(ddpm_tape *t, int enabled) { t->grad = enabled != 0; }

void ddpm_tape_set_rng(ddpm_tape *t, uint64_t seed, uint32_t step, uint64_t first_item) {
    t->seed = seed;
    t->step = step;
    t->first_item = first_item;
}

int ddpm_tape_status(const ddpm_tape *t) { return t->status; }

void ddpm_tape_get_stats(const ddpm_tape *t, ddpm_tape_stats *s) {
    s->n_nodes = t->n_nodes;
    s->arena_bytes = t->scratch_floats * sizeof(float);
    for (size_t i = 0; i < t->n_blocks; i++) s->arena_bytes += t->blocks[i].size;
    s->arena_used = t->used;
    s->n_allocs = t->n_allocs;
}

/* Records the first failure (later ones are consequences) and returns NULL for the op. */
ddpm_var *tape_fail(ddpm_tape *t, int code, const char *fmt, ...) {
    if (t->status == DDPM_OK) {
        char msg[768];
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(msg, sizeof msg, fmt, ap);
        va_end(ap);
        t->status = ddpm_fail(code, "%s", msg);
    }
    return NULL;
}

/* The status of a failed library call (its message is already set). */
ddpm_var *tape_fail_status(ddpm_tape *t, int code) {
    if (t->status == DDPM_OK) t->status = code;
    return NULL;
}

/* An op may run: no earlier failure and every given input exists. */
int tape_ready(ddpm_tape *t, const char *op, const ddpm_var *a, const ddpm_var *b, int n_in) {
    if (t->status != DDPM_OK) return 0;
    if (!a || (n_in > 1 && !b)) {
        tape_fail(t, DDPM_ERR_INVALID, "%s: input var is NULL", op);
        return 0;
    }
    return 1;
}

const char *tape_shape_str(char *buf, size_t n, int ndim, const int *shape) {
    size_t k = (size_t)snprintf(buf, n, "[");
    for (int i = 0; i < ndim && k < n; i++)
        k += (size_t)snprintf(buf + k, n - k, i ? ", %d" : "%d", shape[i]);
    if (k < n) snprintf(buf + k, n - k, "]");
    return buf;
}


/* ---- the arena ---- */

static void *arena_alloc(ddpm_tape *t, size_t bytes) {
    if (bytes > SIZE_MAX - ARENA_ALIGN) {
        tape_fail(t, DDPM_ERR_NOMEM, "tape: allocation of %zu bytes overflows", bytes);
        return NULL;
    }
    bytes = (bytes + ARENA_ALIGN - 1) / ARENA_ALIGN * ARENA_ALIGN;
    if (bytes == 0) bytes = ARENA_ALIGN;
    size_t pos = 0;
    if (t->n_blocks) {
        if (t->blocks[t->cur].size - t->off >= bytes) goto bump;
        if (t->cur + 1 < t->n_blocks && t->blocks[t->cur + 1].size >= bytes) {
            t->cur++;
            t->off = 0;
            goto bump;
        }
        pos = t->cur + 1;
    }
    {
        /* A new block at least as large as all the others together: the block count stays
         * logarithmic in the arena's final size. It goes right after the current block so the
         * blocks after it (from earlier, larger forwards) are still reused in order. */
        size_t total = 0;
        for (size_t i = 0; i < t->n_blocks; i++) total += t->blocks[i].size;
        size_t size = total > ARENA_MIN_BLOCK ? total : ARENA_MIN_BLOCK;
        if (size < bytes) size = bytes;
        if (t->n_blocks == t->cap_blocks) {
            size_t cap = t->cap_blocks ? 2 * t->cap_blocks : 8;
            block *nb = realloc(t->blocks, cap * sizeof *nb);
            if (!nb) {
                tape_fail(t, DDPM_ERR_NOMEM, "tape: out of memory growing the block list");
                return NULL;
            }
            t->n_allocs++;
            t->blocks = nb;
            t->cap_blocks = cap;
        }
        unsigned char *base = aligned_alloc(ARENA_ALIGN, size);
        if (!base) {
            tape_fail(t, DDPM_ERR_NOMEM, "tape: out of memory allocating a %zu-byte arena block", size);
            return NULL;
        }
        t->n_allocs++;
        memmove(t->blocks + pos + 1, t->blocks + pos, (t->n_blocks - pos) * sizeof(block));
        t->blocks[pos] = (block){base, size};
        t->n_blocks++;
        t->cur = pos;
        t->off = 0;
    }
bump:;
    void *p = t->blocks[t->cur].base + t->off;
    t->off += bytes;
    t->used += bytes;
    return p;
}

float *tape_arena_floats(ddpm_tape *t, size_t n) {
    size_t bytes = ddpm_size_mul(n, sizeof(float));
    if (bytes == SIZE_MAX) {
        tape_fail(t, DDPM_ERR_NOMEM, "tape: %zu floats overflow", n);
        return NULL;
    }
    return arena_alloc(t, bytes);
}

float *tape_scratch(ddpm_tape *t, size_t n) {
    if (n < 16) n = 16; /* a usable pointer even for ops that need no workspace */
    if (n > t->scratch_floats) {
        free(t->scratch);
        t->scratch_floats = 0;
        t->scratch = ddpm_alloc_aligned(n, sizeof(float));
        if (!t->scratch) {
            t->status = t->status ? t->status : DDPM_ERR_NOMEM;
            return NULL;
        }
        t->n_allocs++;
        t->scratch_floats = n;
    }
    return t->scratch;
}

/* A var of the given shape with uninitialised data (or none: for views). */
ddpm_var *tape_new_var(ddpm_tape *t, int ndim, const int *shape, int with_data) {
    size_t numel = 1;
    for (int i = 0; i < ndim; i++) {
        if (shape[i] < 1)
            return tape_fail(t, DDPM_ERR_INVALID, "tape: shape dimension %d is %d", i, shape[i]);
        numel = ddpm_size_mul(numel, (size_t)shape[i]);
    }
    ddpm_var *v = arena_alloc(t, sizeof *v);
    if (!v) return NULL;
    memset(v, 0, sizeof *v);
    v->ndim = ndim;
    for (int i = 0; i < ndim; i++) v->shape[i] = shape[i];
    v->numel = numel;
    if (with_data && !(v->data = tape_arena_floats(t, numel))) return NULL;
    return v;
}

ddpm_var *tape_like(ddpm_tape *t, const ddpm_var *x) { return tape_new_var(t, x->ndim, x->shape, 1); }

/* ---- recording ---- */

int tape_wants_grad(const ddpm_tape *t, const ddpm_var *a, const ddpm_var *b,
                    const ddpm_param *const *ps, int n_p) {
    if (!t->grad) return 0;
    if ((a && a->requires_grad) || (b && b->requires_grad)) return 1;
    for (int k = 0; k < n_p; k++)
        if (ps[k] && ps[k]->g) return 1;
    return 0;
}

/* Appends a node for out if it needs one; returns the node (NULL when not recorded: the op's
 * remaining bookkeeping is then skipped) and sets out->requires_grad. */
node *tape_record(ddpm_tape *t, int op, ddpm_var *out, ddpm_var *a, ddpm_var *b,
                  const ddpm_param *const *ps, int n_p) {
    tape_profile_forward(t, op, t->prof_kernel, t->prof_stride);
    t->prof_kernel = t->prof_stride = 0;
    out->requires_grad = tape_wants_grad(t, a, b, ps, n_p);
    if (!out->requires_grad) return NULL;
    if (t->n_nodes == t->cap_nodes) {
        size_t cap = t->cap_nodes ? 2 * t->cap_nodes : 64;
        node *nn = realloc(t->nodes, cap * sizeof *nn);
        if (!nn) {
            tape_fail(t, DDPM_ERR_NOMEM, "tape: out of memory growing the node list");
            return NULL;
        }
        t->n_allocs++;
        t->nodes = nn;
        t->cap_nodes = cap;
    }
    node *n = &t->nodes[t->n_nodes++];
    memset(n, 0, sizeof *n);
    n->op = op;
    n->in[0] = a;
    n->in[1] = b;
    n->out = out;
    for (int k = 0; k < n_p; k++)
        if (ps[k]) n->p[k] = *ps[k];
    return n;
}

/* ---- parameter checks ---- */

static int param_is(const ddpm_param *p, int ndim, const int *shape) {
    if (!p->w) return 0;
    /* Trailing 1s are ignored: a 1x1 conv weight [O, I, 1, 1] is a [O, I] matrix. */
    int pn = p->ndim, n = ndim;
    while (pn > n && p->shape[pn - 1] == 1) pn--;
    if (pn != n) return 0;
    for (int i = 0; i < n; i++)
        if (p->shape[i] != shape[i]) return 0;
    return 1;
}

int tape_check_param(ddpm_tape *t, const char *op, const char *name, const ddpm_param *p,
                       int ndim, const int *shape) {
    if (!p) return 1;
    if (p->ndim < 1 || p->ndim > 4) {
        tape_fail(t, DDPM_ERR_INVALID, "%s: %s has ndim %d", op, name, p->ndim);
        return 0;
    }
    if (param_is(p, ndim, shape)) return 1;
    char a[64], b[64];
    tape_fail(t, DDPM_ERR_INVALID, "%s: %s has shape %s%s, expected %s", op, name,
         tape_shape_str(a, sizeof a, p->ndim, p->shape), p->w ? "" : " and no data",
         tape_shape_str(b, sizeof b, ndim, shape));
    return 0;
}



int tape_need_ndim(ddpm_tape *t, const char *op, const ddpm_var *x, int lo, int hi) {
    if (x->ndim >= lo && x->ndim <= hi) return 1;
    if (lo == hi)
        tape_fail(t, DDPM_ERR_INVALID, "%s: input must be %d-D, got %s", op, lo, SHAPE(x));
    else
        tape_fail(t, DDPM_ERR_INVALID, "%s: input must be %d-D to %d-D, got %s", op, lo, hi, SHAPE(x));
    return 0;
}

/* ---- backward ---- */

/* The gradient buffer of v if a gradient flows to it (zeroed on first use), else NULL. */
/* The smallest spare gradient buffer of at least n floats, taken off the list; NULL if none. */
static float *take_spare(ddpm_tape *t, size_t n) {
    size_t best = t->n_spare;
    for (size_t i = 0; i < t->n_spare; i++)
        if (t->spare_n[i] >= n && (best == t->n_spare || t->spare_n[i] < t->spare_n[best])) best = i;
    if (best == t->n_spare) return NULL;
    float *p = t->spare[best];
    t->n_spare--;
    t->spare[best] = t->spare[t->n_spare];
    t->spare_n[best] = t->spare_n[t->n_spare];
    return p;
}

/* Gives v's gradient buffer back for reuse: called once v's producer has run its backward,
 * after which nothing reads it (every consumer of v comes later on the tape, so its backward
 * ran earlier). A full list only means the buffer is not reused. */
static void give_spare(ddpm_tape *t, ddpm_var *v) {
    if (!v->grad) return;
    if (t->n_spare == t->cap_spare) {
        size_t cap = t->cap_spare ? 2 * t->cap_spare : 64;
        float **np = realloc(t->spare, cap * sizeof *np);
        if (np) t->spare = np;
        size_t *nn = np ? realloc(t->spare_n, cap * sizeof *nn) : NULL;
        if (nn) t->spare_n = nn;
        if (!np || !nn) return;
        t->n_allocs++;
        t->cap_spare = cap;
    }
    t->spare[t->n_spare] = v->grad;
    t->spare_n[t->n_spare++] = v->numel;
    v->grad = NULL;
}

/* memset in parallel pieces for large buffers: an activation's gradient is a few MB, zeroed
 * by the thread walking the tape while the others wait (1% of a ContextUnet training step's
 * samples on one thread, Zen 5, 2 threads) */
static void zero_floats(float *p, size_t n) {
    const size_t piece = (size_t)1 << 16;
    const long long pieces = (long long)((n + piece - 1) / piece);
#pragma omp parallel for schedule(static) if (pieces > 4)
    for (long long k = 0; k < pieces; k++) {
        const size_t a = (size_t)k * piece, len = n - a < piece ? n - a : piece;
        memset(p + a, 0, len * sizeof(float));
    }
}

static float *grad_of(ddpm_tape *t, ddpm_var *v) {
    if (!v || !v->requires_grad) return NULL;
    if (!v->grad) {
        v->grad = take_spare(t, v->numel);
        if (!v->grad) v->grad = tape_arena_floats(t, v->numel);
        if (v->grad) zero_floats(v->grad, v->numel);
    }
    return v->grad;
}

static void backward_node(ddpm_tape *t, node *n) {
    ddpm_var *x = n->in[0], *x2 = n->in[1], *y = n->out;
    const float *dy = y->grad;
    float *dx = grad_of(t, x);
    float *dx2 = x2 ? grad_of(t, x2) : NULL;
    if (t->status) return;
    switch (n->op) {
    case OP_CONV2D:
    case OP_CONVT2D: {
        const ddpm_conv_dims *d = &n->dims.conv;
        float *ws = tape_scratch(t, n->op == OP_CONV2D ? ddpm_conv2d_workspace(d)
                                                  : ddpm_conv_transpose2d_workspace(d));
        if (!ws) return;
        if (n->op == OP_CONV2D)
            ddpm_conv2d_backward(dx, pg(&n->p[0]), pg(&n->p[1]), dy, x->data, n->p[0].w, d, ws);
        else
            ddpm_conv_transpose2d_backward(dx, pg(&n->p[0]), pg(&n->p[1]), dy, x->data, n->p[0].w,
                                           d, ws);
        break;
    }
    case OP_LINEAR:
        ddpm_linear_backward(dx, pg(&n->p[0]), pg(&n->p[1]), dy, x->data, n->p[0].w, n->i[0],
                             n->i[1], n->i[2]);
        break;
    case OP_BATCHNORM: {
        const int C = x->shape[1];
        ddpm_batchnorm_backward(dx, pg(&n->p[0]), pg(&n->p[1]), dy, x->data, n->saved[0],
                                n->saved[0] + C, pw(&n->p[0]), n->i[0], x->shape[0], C, inner(x));
        break;
    }
    case OP_BN_GELU: {
        const int C = x->shape[1];
        float *dh = tape_scratch(t, x->numel);
        if (!dh) return;
        ddpm_batchnorm_gelu_backward(dx, pg(&n->p[0]), pg(&n->p[1]), dy, x->data, n->saved[0],
                                     n->saved[0] + C, pw(&n->p[0]), pw(&n->p[1]), n->i[0],
                                     x->shape[0], C, inner(x), dh);
        break;
    }
    case OP_GROUPNORM: {
        const int B = x->shape[0], G = n->i[0];
        ddpm_groupnorm_backward(dx, pg(&n->p[0]), pg(&n->p[1]), dy, x->data, n->saved[0],
                                n->saved[0] + (size_t)B * G, pw(&n->p[0]), B, x->shape[1], inner(x),
                                G);
        break;
    }
    case OP_GN_SILU: {
        float *dh = tape_scratch(t, x->numel);
        if (!dh) return;
        const int B = x->shape[0], G = n->i[0];
        ddpm_groupnorm_silu_backward(dx, pg(&n->p[0]), pg(&n->p[1]), dy, x->data, n->saved[0],
                                     n->saved[0] + (size_t)B * G, pw(&n->p[0]), pw(&n->p[1]), B,
                                     x->shape[1], inner(x), G, dh);
        break;
    }
    case OP_GELU:
        if (dx) ddpm_gelu_backward(dx, dy, x->data, x->numel);
        break;
    case OP_RELU:
        if (dx) ddpm_relu_backward(dx, dy, x->data, x->numel);
        break;
    case OP_SILU:
        if (dx) ddpm_silu_backward(dx, dy, x->data, x->numel);
        break;
    case OP_SCALE:
        if (dx) ddpm_scale_backward(dx, dy, n->f, x->numel);
        break;
    case OP_DROPOUT:
        if (dx) ddpm_dropout_backward(dx, dy, n->saved[0], x->numel);
        break;
    case OP_ADD: ddpm_add_backward(dx, dx2, dy, x->numel); break;
    case OP_CHANNEL_MUL:
        ddpm_channel_mul_backward(dx, dx2, dy, x->data, x2->data, x->shape[0], x->shape[1],
                                  inner(x));
        break;
    case OP_CHANNEL_ADD:
        ddpm_channel_add_backward(dx, dx2, dy, x->shape[0], x->shape[1], inner(x));
        break;
    case OP_CONCAT:
        ddpm_concat_backward(dx, dx2, dy, x->shape[0], x->shape[1], x2->shape[1], inner(x));
        break;
    case OP_SLICE:
        if (dx)
            ddpm_channel_slice_backward(dx, dy, x->shape[0], x->shape[1], inner(x), n->i[0],
                                        y->shape[1]);
        break;
    case OP_MAXPOOL:
        if (dx)
            ddpm_maxpool2d_backward(dx, dy, x->data, x->shape[0], x->shape[1], x->shape[2],
                                    x->shape[3], n->i[0], n->i[1]);
        break;
    case OP_AVGPOOL:
        if (dx)
            ddpm_avgpool2d_backward(dx, dy, x->shape[0], x->shape[1], x->shape[2], x->shape[3],
                                    n->i[0], n->i[1]);
        break;
    case OP_UPSAMPLE:
        if (dx)
            ddpm_upsample_nearest_backward(dx, dy, x->shape[0], x->shape[1], x->shape[2],
                                           x->shape[3], n->i[0]);
        break;
    case OP_PAD:
        if (dx)
            ddpm_pad2d_backward(dx, dy, x->shape[0], x->shape[1], x->shape[2], x->shape[3],
                                n->i[0], n->i[1], n->i[2], n->i[3]);
        break;
    case OP_ATTENTION: {
        const ddpm_attn_dims *d = &n->dims.attn;
        float *ws = tape_scratch(t, ddpm_attention_workspace(d));
        if (!ws) return;
        ddpm_attention_backward(dx, pg(&n->p[0]), pg(&n->p[1]), pg(&n->p[2]), pg(&n->p[3]), dy,
                                x->data, n->saved[0], n->p[0].w, n->p[2].w, d, ws);
        break;
    }
    case OP_RESHAPE:
        if (dx)
            for (size_t i = 0; i < x->numel; i++) dx[i] += dy[i];
        break;
    case OP_MEAN:
        if (dx) {
            const float g = dy[0] / (float)x->numel;
            for (size_t i = 0; i < x->numel; i++) dx[i] += g;
        }
        break;
    default: DDPM_CHECK(0);
    }
}

int ddpm_tape_backward(ddpm_tape *t, ddpm_var *out, const float *dout) {
    if (t->status) return t->status;
    if (!out) {
        tape_fail(t, DDPM_ERR_INVALID, "tape_backward: output var is NULL");
        return t->status;
    }
    if (!out->requires_grad) {
        tape_fail(t, DDPM_ERR_INVALID,
             "tape_backward: the output does not require grad (eval mode, or no trained "
             "parameter or marked input reaches it)");
        return t->status;
    }
    float *g = grad_of(t, out);
    if (!g) return t->status;
    for (size_t i = 0; i < out->numel; i++) g[i] += dout ? dout[i] : 1.0f;
    for (size_t k = t->n_nodes; k-- > 0 && !t->status;) {
        node *n = &t->nodes[k];
        if (n->out->grad) {
            const int conv = n->op == OP_CONV2D || n->op == OP_CONVT2D;
            const double start = tape_profile_start();
            backward_node(t, n);
            tape_profile_backward(n->op, conv ? n->dims.conv.KH : 0, conv ? n->dims.conv.stride : 0,
                                  start);
        }
        /* the output's gradient is dead now, unless the caller asked for it (out) */
        if (n->out != out) give_spare(t, n->out);
    }
    return t->status;
}

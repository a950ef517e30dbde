/* tape.c - record image-network forwards and replay them backwards.
 *
 * An op runs its forward immediately (ops_*.c), allocating its output from the tape's arena,
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
#include "core/internal.h"

#include <math.h>
#include <stdarg.h>

#define ARENA_ALIGN 64
#define ARENA_MIN_BLOCK ((size_t)1 << 20)

enum {
    OP_CONV2D,
    OP_CONVT2D,
    OP_LINEAR,
    OP_BATCHNORM,
    OP_GROUPNORM,
    OP_GELU,
    OP_RELU,
    OP_SILU,
    OP_SCALE,
    OP_DROPOUT,
    OP_ADD,
    OP_CHANNEL_MUL,
    OP_CHANNEL_ADD,
    OP_CONCAT,
    OP_SLICE,
    OP_MAXPOOL,
    OP_AVGPOOL,
    OP_UPSAMPLE,
    OP_ATTENTION,
    OP_RESHAPE,
    OP_MEAN,
};

typedef struct {
    int op;
    ddpm_var *in[2];
    ddpm_var *out;
    ddpm_param p[4]; /* p[k].w == NULL: absent */
    int i[4];        /* op-specific integers (see each op) */
    float f;         /* op-specific float */
    float *saved[2]; /* statistics / masks / attention state in the arena */
    union {
        ddpm_conv_dims conv;
        ddpm_attn_dims attn;
    } dims;
} node;

typedef struct {
    unsigned char *base;
    size_t size;
} block;

struct ddpm_tape {
    block *blocks;
    size_t n_blocks, cap_blocks;
    size_t cur, off; /* the block being filled and the bytes used in it */
    size_t used;     /* bytes handed out since the last reset */
    node *nodes;
    size_t n_nodes, cap_nodes;
    float *scratch;
    size_t scratch_floats;
    size_t n_allocs;
    int training, grad, status;
    uint64_t seed, first_item;
    uint32_t step, n_dropout;
};

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
    free(t);
}

void ddpm_tape_reset(ddpm_tape *t) {
    t->cur = 0;
    t->off = 0;
    t->used = 0;
    t->n_nodes = 0;
    t->n_dropout = 0;
    t->status = DDPM_OK;
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
static ddpm_var *fail(ddpm_tape *t, int code, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 3, 4)))
#endif
    ;
static ddpm_var *fail(ddpm_tape *t, int code, const char *fmt, ...) {
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
static ddpm_var *fail_status(ddpm_tape *t, int code) {
    if (t->status == DDPM_OK) t->status = code;
    return NULL;
}

/* An op may run: no earlier failure and every given input exists. */
static int ready(ddpm_tape *t, const char *op, const ddpm_var *a, const ddpm_var *b, int n_in) {
    if (t->status != DDPM_OK) return 0;
    if (!a || (n_in > 1 && !b)) {
        fail(t, DDPM_ERR_INVALID, "%s: input var is NULL", op);
        return 0;
    }
    return 1;
}

static const char *shape_str(char *buf, size_t n, int ndim, const int *shape) {
    size_t k = (size_t)snprintf(buf, n, "[");
    for (int i = 0; i < ndim && k < n; i++)
        k += (size_t)snprintf(buf + k, n - k, i ? ", %d" : "%d", shape[i]);
    if (k < n) snprintf(buf + k, n - k, "]");
    return buf;
}

#define SHAPE(v) shape_str((char[64]){0}, 64, (v)->ndim, (v)->shape)

/* ---- the arena ---- */

static void *arena_alloc(ddpm_tape *t, size_t bytes) {
    if (bytes > SIZE_MAX - ARENA_ALIGN) {
        fail(t, DDPM_ERR_NOMEM, "tape: allocation of %zu bytes overflows", bytes);
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
                fail(t, DDPM_ERR_NOMEM, "tape: out of memory growing the block list");
                return NULL;
            }
            t->n_allocs++;
            t->blocks = nb;
            t->cap_blocks = cap;
        }
        unsigned char *base = aligned_alloc(ARENA_ALIGN, size);
        if (!base) {
            fail(t, DDPM_ERR_NOMEM, "tape: out of memory allocating a %zu-byte arena block", size);
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

static float *arena_floats(ddpm_tape *t, size_t n) {
    size_t bytes = ddpm_size_mul(n, sizeof(float));
    if (bytes == SIZE_MAX) {
        fail(t, DDPM_ERR_NOMEM, "tape: %zu floats overflow", n);
        return NULL;
    }
    return arena_alloc(t, bytes);
}

static float *scratch(ddpm_tape *t, size_t n) {
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
static ddpm_var *new_var(ddpm_tape *t, int ndim, const int *shape, int with_data) {
    size_t numel = 1;
    for (int i = 0; i < ndim; i++) {
        if (shape[i] < 1)
            return fail(t, DDPM_ERR_INVALID, "tape: shape dimension %d is %d", i, shape[i]);
        numel = ddpm_size_mul(numel, (size_t)shape[i]);
    }
    ddpm_var *v = arena_alloc(t, sizeof *v);
    if (!v) return NULL;
    memset(v, 0, sizeof *v);
    v->ndim = ndim;
    for (int i = 0; i < ndim; i++) v->shape[i] = shape[i];
    v->numel = numel;
    if (with_data && !(v->data = arena_floats(t, numel))) return NULL;
    return v;
}

static ddpm_var *like(ddpm_tape *t, const ddpm_var *x) { return new_var(t, x->ndim, x->shape, 1); }

/* ---- recording ---- */

static int wants_grad(const ddpm_tape *t, const ddpm_var *a, const ddpm_var *b,
                      const ddpm_param *const *ps, int n_p) {
    if (!t->grad) return 0;
    if ((a && a->requires_grad) || (b && b->requires_grad)) return 1;
    for (int k = 0; k < n_p; k++)
        if (ps[k] && ps[k]->g) return 1;
    return 0;
}

/* Appends a node for out if it needs one; returns the node (NULL when not recorded: the op's
 * remaining bookkeeping is then skipped) and sets out->requires_grad. */
static node *record(ddpm_tape *t, int op, ddpm_var *out, ddpm_var *a, ddpm_var *b,
                    const ddpm_param *const *ps, int n_p) {
    out->requires_grad = wants_grad(t, a, b, ps, n_p);
    if (!out->requires_grad) return NULL;
    if (t->n_nodes == t->cap_nodes) {
        size_t cap = t->cap_nodes ? 2 * t->cap_nodes : 64;
        node *nn = realloc(t->nodes, cap * sizeof *nn);
        if (!nn) {
            fail(t, DDPM_ERR_NOMEM, "tape: out of memory growing the node list");
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

static int check_param(ddpm_tape *t, const char *op, const char *name, const ddpm_param *p,
                       int ndim, const int *shape) {
    if (!p) return 1;
    if (p->ndim < 1 || p->ndim > 4) {
        fail(t, DDPM_ERR_INVALID, "%s: %s has ndim %d", op, name, p->ndim);
        return 0;
    }
    if (param_is(p, ndim, shape)) return 1;
    char a[64], b[64];
    fail(t, DDPM_ERR_INVALID, "%s: %s has shape %s%s, expected %s", op, name,
         shape_str(a, sizeof a, p->ndim, p->shape), p->w ? "" : " and no data",
         shape_str(b, sizeof b, ndim, shape));
    return 0;
}

static float *pw(const ddpm_param *p) { return p && p->w ? p->w : NULL; }
static float *pg(const ddpm_param *p) { return p && p->w ? p->g : NULL; }

/* [B, C, rest...]: C and the product of the rest. */
static size_t inner(const ddpm_var *x) { return x->numel / ((size_t)x->shape[0] * x->shape[1]); }

static int need_ndim(ddpm_tape *t, const char *op, const ddpm_var *x, int lo, int hi) {
    if (x->ndim >= lo && x->ndim <= hi) return 1;
    if (lo == hi)
        fail(t, DDPM_ERR_INVALID, "%s: input must be %d-D, got %s", op, lo, SHAPE(x));
    else
        fail(t, DDPM_ERR_INVALID, "%s: input must be %d-D to %d-D, got %s", op, lo, hi, SHAPE(x));
    return 0;
}

/* ---- ops ---- */

ddpm_var *ddpm_tape_input(ddpm_tape *t, const float *data, int ndim, const int *shape,
                          int requires_grad) {
    if (t->status) return NULL;
    if (ndim < 1 || ndim > 4)
        return fail(t, DDPM_ERR_INVALID, "tape_input: ndim %d not in 1..4", ndim);
    if (!data || !shape) return fail(t, DDPM_ERR_INVALID, "tape_input: data or shape is NULL");
    ddpm_var *v = new_var(t, ndim, shape, 1);
    if (!v) return NULL;
    memcpy(v->data, data, v->numel * sizeof(float));
    v->requires_grad = t->grad && requires_grad;
    return v;
}

/* scale, shift: the fused eval-mode epilogue of ddpm_tape_conv2d_bn_gelu (conv2d only; b NULL),
 * or NULL. */
static ddpm_var *conv_common(ddpm_tape *t, ddpm_var *x, const ddpm_param *w, const ddpm_param *b,
                             int stride, int pad, int transposed, const float *scale,
                             const float *shift) {
    const char *op = transposed ? "conv_transpose2d" : "conv2d";
    if (!ready(t, op, x, NULL, 1) || !need_ndim(t, op, x, 4, 4)) return NULL;
    if (!w || !w->w || w->ndim != 4)
        return fail(t, DDPM_ERR_INVALID, "%s: weight must be a 4-D param", op);
    const int C_in = x->shape[1];
    const int C_out = transposed ? w->shape[1] : w->shape[0];
    const int wc_in = transposed ? w->shape[0] : w->shape[1];
    if (wc_in != C_in) {
        char a[64];
        return fail(t, DDPM_ERR_INVALID,
                    "%s: input %s has %d channels but the weight %s expects %d", op, SHAPE(x), C_in,
                    shape_str(a, sizeof a, 4, w->shape), wc_in);
    }
    if (!check_param(t, op, "bias", b, 1, &C_out)) return NULL;
    ddpm_conv_dims d;
    int rc = transposed
                 ? ddpm_conv_transpose2d_dims(&d, x->shape[0], C_in, x->shape[2], x->shape[3],
                                              C_out, w->shape[2], w->shape[3], stride, pad)
                 : ddpm_conv2d_dims(&d, x->shape[0], C_in, x->shape[2], x->shape[3], C_out,
                                    w->shape[2], w->shape[3], stride, pad);
    if (rc) return fail_status(t, rc);
    ddpm_var *y = new_var(t, 4, (int[]){d.B, d.C_out, d.H_out, d.W_out}, 1);
    float *ws =
        y ? scratch(t, transposed ? ddpm_conv_transpose2d_workspace(&d) : ddpm_conv2d_workspace(&d))
          : NULL;
    if (!ws) return NULL;
    if (transposed)
        ddpm_conv_transpose2d_forward(y->data, x->data, w->w, pw(b), &d, ws);
    else if (scale)
        ddpm_conv2d_scale_gelu_forward(y->data, x->data, w->w, scale, shift, &d, ws);
    else
        ddpm_conv2d_forward(y->data, x->data, w->w, pw(b), &d, ws);
    node *n =
        record(t, transposed ? OP_CONVT2D : OP_CONV2D, y, x, NULL, (const ddpm_param *[]){w, b}, 2);
    if (n) n->dims.conv = d;
    return t->status ? NULL : y;
}

ddpm_var *ddpm_tape_conv2d(ddpm_tape *t, ddpm_var *x, const ddpm_param *w, const ddpm_param *b,
                           int stride, int pad) {
    return conv_common(t, x, w, b, stride, pad, 0, NULL, NULL);
}

ddpm_var *ddpm_tape_conv_transpose2d(ddpm_tape *t, ddpm_var *x, const ddpm_param *w,
                                     const ddpm_param *b, int stride, int pad) {
    return conv_common(t, x, w, b, stride, pad, 1, NULL, NULL);
}

ddpm_var *ddpm_tape_linear(ddpm_tape *t, ddpm_var *x, const ddpm_param *w, const ddpm_param *b) {
    if (!ready(t, "linear", x, NULL, 1)) return NULL;
    if (!w || !w->w || w->ndim != 2)
        return fail(t, DDPM_ERR_INVALID, "linear: weight must be a 2-D param [out, in]");
    const int B = x->shape[0];
    const size_t in = x->numel / (size_t)B;
    if (in != (size_t)w->shape[1])
        return fail(t, DDPM_ERR_INVALID,
                    "linear: input %s has %zu features per item, weight [%d, %d] expects %d",
                    SHAPE(x), in, w->shape[0], w->shape[1], w->shape[1]);
    const int O = w->shape[0];
    if (!check_param(t, "linear", "bias", b, 1, &O)) return NULL;
    ddpm_var *y = new_var(t, 2, (int[]){B, O}, 1);
    if (!y) return NULL;
    ddpm_linear_forward(y->data, x->data, w->w, pw(b), B, (int)in, O);
    node *n = record(t, OP_LINEAR, y, x, NULL, (const ddpm_param *[]){w, b}, 2);
    if (n) {
        n->i[0] = B;
        n->i[1] = (int)in;
        n->i[2] = O;
    }
    return t->status ? NULL : y;
}

ddpm_var *ddpm_tape_batchnorm(ddpm_tape *t, ddpm_var *x, const ddpm_param *gamma,
                              const ddpm_param *beta, float *running_mean, float *running_var) {
    if (!ready(t, "batchnorm", x, NULL, 1) || !need_ndim(t, "batchnorm", x, 2, 4)) return NULL;
    const int B = x->shape[0], C = x->shape[1];
    const size_t HW = inner(x);
    if (!check_param(t, "batchnorm", "weight", gamma, 1, &C) ||
        !check_param(t, "batchnorm", "bias", beta, 1, &C))
        return NULL;
    if (!t->training && (!running_mean || !running_var))
        return fail(t, DDPM_ERR_INVALID, "batchnorm: eval mode needs the running statistics");
    if (t->training && (size_t)B * HW < 2)
        return fail(t, DDPM_ERR_INVALID,
                    "batchnorm: expected more than 1 value per channel when training, got input %s",
                    SHAPE(x));
    ddpm_var *y = like(t, x);
    float *stats = y ? arena_floats(t, 2 * (size_t)C) : NULL;
    if (!stats) return NULL;
    ddpm_batchnorm_forward(y->data, stats, stats + C, x->data, pw(gamma), pw(beta), running_mean,
                           running_var, t->training, DDPM_BN_MOMENTUM, B, C, HW);
    node *n = record(t, OP_BATCHNORM, y, x, NULL, (const ddpm_param *[]){gamma, beta}, 2);
    if (n) {
        n->saved[0] = stats;
        n->i[0] = t->training;
    }
    return t->status ? NULL : y;
}

ddpm_var *ddpm_tape_conv2d_bn_gelu(ddpm_tape *t, ddpm_var *x, const ddpm_param *w,
                                   const ddpm_param *b, int stride, int pad,
                                   const ddpm_param *gamma, const ddpm_param *beta,
                                   float *running_mean, float *running_var) {
    if (t->grad)
        return ddpm_tape_gelu(t, ddpm_tape_batchnorm(t, ddpm_tape_conv2d(t, x, w, b, stride, pad),
                                                     gamma, beta, running_mean, running_var));
    /* Eval mode, nothing recorded: batch norm with the running statistics is a per-channel
     * affine map, folded with the conv's bias into the fused epilogue:
     * (conv + b - mean) g + beta = conv g + (beta + (b - mean) g), g = gamma / sqrt(var + eps). */
    if (!w || !w->w || w->ndim != 4 || t->status)
        return conv_common(t, x, w, b, stride, pad, 0, NULL, NULL); /* reports the problem */
    const int C = w->shape[0];
    if (!check_param(t, "conv2d", "bias", b, 1, &C) ||
        !check_param(t, "batchnorm", "weight", gamma, 1, &C) ||
        !check_param(t, "batchnorm", "bias", beta, 1, &C))
        return NULL;
    if (!running_mean || !running_var)
        return fail(t, DDPM_ERR_INVALID, "batchnorm: eval mode needs the running statistics");
    float *ss = arena_floats(t, 2 * (size_t)C);
    if (!ss) return NULL;
    for (int c = 0; c < C; c++) {
        const float r = (float)(1.0 / sqrt((double)running_var[c] + (double)DDPM_NORM_EPS));
        const float g = gamma ? gamma->w[c] * r : r;
        ss[c] = g;
        ss[C + c] = (beta ? beta->w[c] : 0.0f) + ((b ? b->w[c] : 0.0f) - running_mean[c]) * g;
    }
    return conv_common(t, x, w, NULL, stride, pad, 0, ss, ss + C);
}

ddpm_var *ddpm_tape_groupnorm(ddpm_tape *t, ddpm_var *x, int groups, const ddpm_param *gamma,
                              const ddpm_param *beta) {
    if (!ready(t, "groupnorm", x, NULL, 1) || !need_ndim(t, "groupnorm", x, 2, 4)) return NULL;
    const int B = x->shape[0], C = x->shape[1];
    if (groups < 1 || C % groups)
        return fail(t, DDPM_ERR_INVALID, "groupnorm: %d channels cannot be split into %d groups", C,
                    groups);
    if (!check_param(t, "groupnorm", "weight", gamma, 1, &C) ||
        !check_param(t, "groupnorm", "bias", beta, 1, &C))
        return NULL;
    ddpm_var *y = like(t, x);
    float *stats = y ? arena_floats(t, 2 * (size_t)B * groups) : NULL;
    if (!stats) return NULL;
    ddpm_groupnorm_forward(y->data, stats, stats + (size_t)B * groups, x->data, pw(gamma), pw(beta),
                           B, C, inner(x), groups);
    node *n = record(t, OP_GROUPNORM, y, x, NULL, (const ddpm_param *[]){gamma, beta}, 2);
    if (n) {
        n->saved[0] = stats;
        n->i[0] = groups;
    }
    return t->status ? NULL : y;
}

static ddpm_var *unary(ddpm_tape *t, ddpm_var *x, int op, const char *name, float f) {
    if (!ready(t, name, x, NULL, 1)) return NULL;
    ddpm_var *y = like(t, x);
    if (!y) return NULL;
    switch (op) {
    case OP_GELU: ddpm_gelu_forward(y->data, x->data, x->numel); break;
    case OP_RELU: ddpm_relu_forward(y->data, x->data, x->numel); break;
    case OP_SILU: ddpm_silu_forward(y->data, x->data, x->numel); break;
    default: DDPM_CHECK(0);
    }
    node *n = record(t, op, y, x, NULL, NULL, 0);
    if (n) n->f = f;
    return t->status ? NULL : y;
}

ddpm_var *ddpm_tape_gelu(ddpm_tape *t, ddpm_var *x) { return unary(t, x, OP_GELU, "gelu", 0); }
ddpm_var *ddpm_tape_relu(ddpm_tape *t, ddpm_var *x) { return unary(t, x, OP_RELU, "relu", 0); }
ddpm_var *ddpm_tape_silu(ddpm_tape *t, ddpm_var *x) { return unary(t, x, OP_SILU, "silu", 0); }

ddpm_var *ddpm_tape_affine(ddpm_tape *t, ddpm_var *x, float alpha, float beta) {
    if (!ready(t, "scale", x, NULL, 1)) return NULL;
    ddpm_var *y = like(t, x);
    if (!y) return NULL;
    ddpm_scale_forward(y->data, x->data, alpha, beta, x->numel);
    node *n = record(t, OP_SCALE, y, x, NULL, NULL, 0);
    if (n) n->f = alpha;
    return t->status ? NULL : y;
}

ddpm_var *ddpm_tape_scale(ddpm_tape *t, ddpm_var *x, float alpha) {
    return ddpm_tape_affine(t, x, alpha, 0.0f);
}

ddpm_var *ddpm_tape_dropout(ddpm_tape *t, ddpm_var *x, float p) {
    if (!ready(t, "dropout", x, NULL, 1)) return NULL;
    if (!(p >= 0.0f && p < 1.0f))
        return fail(t, DDPM_ERR_INVALID, "dropout: probability %g is not in [0, 1)", (double)p);
    if (!t->training || p == 0.0f) return x;
    const uint32_t k = t->n_dropout++;
    if (k >= 0xFFFFu)
        return fail(t, DDPM_ERR_INVALID, "dropout: more than 65534 dropout ops in one forward");
    ddpm_var *y = like(t, x);
    float *mask = y ? arena_floats(t, x->numel) : NULL;
    if (!mask) return NULL;
    const int B = x->shape[0];
    const uint64_t item0 = ((uint64_t)(k + 1) << 32) + t->first_item;
    ddpm_dropout_forward(y->data, mask, x->data, B, x->numel / (size_t)B, p, t->seed, item0,
                         t->step);
    node *n = record(t, OP_DROPOUT, y, x, NULL, NULL, 0);
    if (n) n->saved[0] = mask;
    return t->status ? NULL : y;
}

static int same_shape(const ddpm_var *a, const ddpm_var *b) {
    if (a->ndim != b->ndim) return 0;
    for (int i = 0; i < a->ndim; i++)
        if (a->shape[i] != b->shape[i]) return 0;
    return 1;
}

ddpm_var *ddpm_tape_add(ddpm_tape *t, ddpm_var *a, ddpm_var *b) {
    if (!ready(t, "add", a, b, 2)) return NULL;
    if (!same_shape(a, b))
        return fail(t, DDPM_ERR_INVALID, "add: shapes %s and %s differ", SHAPE(a), SHAPE(b));
    ddpm_var *y = like(t, a);
    if (!y) return NULL;
    ddpm_add_forward(y->data, a->data, b->data, a->numel);
    record(t, OP_ADD, y, a, b, NULL, 0);
    return t->status ? NULL : y;
}

static ddpm_var *channel_op(ddpm_tape *t, ddpm_var *x, ddpm_var *s, int op, const char *name) {
    if (!ready(t, name, x, s, 2) || !need_ndim(t, name, x, 2, 4)) return NULL;
    const int B = x->shape[0], C = x->shape[1];
    if (s->numel != (size_t)B * C || s->shape[0] != B || (s->ndim > 1 && s->shape[1] != C))
        return fail(t, DDPM_ERR_INVALID,
                    "%s: the per-channel operand %s does not match [%d, %d] (input %s)", name,
                    SHAPE(s), B, C, SHAPE(x));
    ddpm_var *y = like(t, x);
    if (!y) return NULL;
    if (op == OP_CHANNEL_MUL)
        ddpm_channel_mul_forward(y->data, x->data, s->data, B, C, inner(x));
    else
        ddpm_channel_add_forward(y->data, x->data, s->data, B, C, inner(x));
    record(t, op, y, x, s, NULL, 0);
    return t->status ? NULL : y;
}

ddpm_var *ddpm_tape_channel_mul(ddpm_tape *t, ddpm_var *x, ddpm_var *s) {
    return channel_op(t, x, s, OP_CHANNEL_MUL, "channel_mul");
}

ddpm_var *ddpm_tape_channel_add(ddpm_tape *t, ddpm_var *x, ddpm_var *s) {
    return channel_op(t, x, s, OP_CHANNEL_ADD, "channel_add");
}

ddpm_var *ddpm_tape_concat(ddpm_tape *t, ddpm_var *a, ddpm_var *b) {
    if (!ready(t, "concat", a, b, 2) || !need_ndim(t, "concat", a, 2, 4)) return NULL;
    int ok = a->ndim == b->ndim && a->shape[0] == b->shape[0];
    for (int i = 2; ok && i < a->ndim; i++) ok = a->shape[i] == b->shape[i];
    if (!ok)
        return fail(t, DDPM_ERR_INVALID, "concat: %s and %s differ outside the channel dimension",
                    SHAPE(a), SHAPE(b));
    int shape[4];
    memcpy(shape, a->shape, sizeof shape);
    shape[1] = a->shape[1] + b->shape[1];
    ddpm_var *y = new_var(t, a->ndim, shape, 1);
    if (!y) return NULL;
    ddpm_concat_forward(y->data, a->data, b->data, a->shape[0], a->shape[1], b->shape[1], inner(a));
    record(t, OP_CONCAT, y, a, b, NULL, 0);
    return t->status ? NULL : y;
}

ddpm_var *ddpm_tape_slice_channels(ddpm_tape *t, ddpm_var *x, int c0, int count) {
    if (!ready(t, "slice_channels", x, NULL, 1) || !need_ndim(t, "slice_channels", x, 2, 4))
        return NULL;
    if (c0 < 0 || count < 1 || c0 > x->shape[1] - count)
        return fail(t, DDPM_ERR_INVALID, "slice_channels: channels %d..%d are outside %s", c0,
                    c0 + count - 1, SHAPE(x));
    int shape[4];
    memcpy(shape, x->shape, sizeof shape);
    shape[1] = count;
    ddpm_var *y = new_var(t, x->ndim, shape, 1);
    if (!y) return NULL;
    ddpm_channel_slice_forward(y->data, x->data, x->shape[0], x->shape[1], inner(x), c0, count);
    node *n = record(t, OP_SLICE, y, x, NULL, NULL, 0);
    if (n) n->i[0] = c0;
    return t->status ? NULL : y;
}

static ddpm_var *pool(ddpm_tape *t, ddpm_var *x, int k, int s, int op, const char *name) {
    if (!ready(t, name, x, NULL, 1) || !need_ndim(t, name, x, 4, 4)) return NULL;
    if (s == 0) s = k;
    if (k < 1 || s < 1)
        return fail(t, DDPM_ERR_INVALID, "%s: kernel %d and stride %d must be positive", name, k,
                    s);
    const int B = x->shape[0], C = x->shape[1], H = x->shape[2], W = x->shape[3];
    if (H < k || W < k)
        return fail(t, DDPM_ERR_INVALID, "%s: kernel %d is larger than the input %s", name, k,
                    SHAPE(x));
    ddpm_var *y = new_var(t, 4, (int[]){B, C, (H - k) / s + 1, (W - k) / s + 1}, 1);
    if (!y) return NULL;
    if (op == OP_MAXPOOL)
        ddpm_maxpool2d_forward(y->data, x->data, B, C, H, W, k, s);
    else
        ddpm_avgpool2d_forward(y->data, x->data, B, C, H, W, k, s);
    node *n = record(t, op, y, x, NULL, NULL, 0);
    if (n) {
        n->i[0] = k;
        n->i[1] = s;
    }
    return t->status ? NULL : y;
}

ddpm_var *ddpm_tape_maxpool2d(ddpm_tape *t, ddpm_var *x, int k, int s) {
    return pool(t, x, k, s, OP_MAXPOOL, "maxpool2d");
}

ddpm_var *ddpm_tape_avgpool2d(ddpm_tape *t, ddpm_var *x, int k, int s) {
    return pool(t, x, k, s, OP_AVGPOOL, "avgpool2d");
}

ddpm_var *ddpm_tape_upsample_nearest(ddpm_tape *t, ddpm_var *x, int scale) {
    if (!ready(t, "upsample_nearest", x, NULL, 1) || !need_ndim(t, "upsample_nearest", x, 4, 4))
        return NULL;
    if (scale < 1 || x->shape[2] > (1 << 24) / scale || x->shape[3] > (1 << 24) / scale)
        return fail(t, DDPM_ERR_INVALID, "upsample_nearest: bad scale %d for %s", scale, SHAPE(x));
    const int B = x->shape[0], C = x->shape[1], H = x->shape[2], W = x->shape[3];
    ddpm_var *y = new_var(t, 4, (int[]){B, C, H * scale, W * scale}, 1);
    if (!y) return NULL;
    ddpm_upsample_nearest_forward(y->data, x->data, B, C, H, W, scale);
    node *n = record(t, OP_UPSAMPLE, y, x, NULL, NULL, 0);
    if (n) n->i[0] = scale;
    return t->status ? NULL : y;
}

ddpm_var *ddpm_tape_attention(ddpm_tape *t, ddpm_var *x, const ddpm_param *wqkv,
                              const ddpm_param *bqkv, const ddpm_param *wout,
                              const ddpm_param *bout, int heads) {
    if (!ready(t, "attention", x, NULL, 1) || !need_ndim(t, "attention", x, 4, 4)) return NULL;
    const int C = x->shape[1];
    if (!wqkv || !wqkv->w || !wout || !wout->w)
        return fail(t, DDPM_ERR_INVALID, "attention: wqkv and wout are required");
    const int three_hid = wqkv->shape[0];
    if (heads < 1 || three_hid % (3 * heads))
        return fail(t, DDPM_ERR_INVALID,
                    "attention: wqkv has %d rows, not 3 x a multiple of %d heads", three_hid,
                    heads);
    const int hid = three_hid / 3;
    if (!check_param(t, "attention", "wqkv", wqkv, 2, (int[]){three_hid, C}) ||
        !check_param(t, "attention", "bqkv", bqkv, 1, &three_hid) ||
        !check_param(t, "attention", "wout", wout, 2, (int[]){C, hid}) ||
        !check_param(t, "attention", "bout", bout, 1, &C))
        return NULL;
    ddpm_attn_dims d = {x->shape[0], C, x->shape[2] * x->shape[3], heads, hid / heads};
    ddpm_var *y = like(t, x);
    if (!y) return NULL;
    /* The saved state is only kept when a node will need it; otherwise it is scratch. */
    const int keep = wants_grad(t, x, NULL, (const ddpm_param *[]){wqkv, bqkv, wout, bout}, 4);
    const size_t ns = ddpm_attention_saved_size(&d);
    float *saved = keep ? arena_floats(t, ns) : scratch(t, ns);
    if (!saved) return NULL;
    ddpm_attention_forward(y->data, saved, x->data, wqkv->w, pw(bqkv), wout->w, pw(bout), &d);
    node *n =
        record(t, OP_ATTENTION, y, x, NULL, (const ddpm_param *[]){wqkv, bqkv, wout, bout}, 4);
    if (n) {
        n->dims.attn = d;
        n->saved[0] = saved;
    }
    return t->status ? NULL : y;
}

ddpm_var *ddpm_tape_timestep_embedding(ddpm_tape *t, const float *timesteps, int B, int dim) {
    if (t->status) return NULL;
    if (!timesteps || B < 1 || dim < 4 || dim % 2)
        return fail(
            t, DDPM_ERR_INVALID,
            "timestep_embedding: needs timesteps, B >= 1 and an even dim >= 4 (got B %d, dim %d)",
            B, dim);
    ddpm_var *y = new_var(t, 2, (int[]){B, dim}, 1);
    if (!y) return NULL;
    ddpm_timestep_embedding(y->data, timesteps, B, dim);
    return y;
}

ddpm_var *ddpm_tape_reshape(ddpm_tape *t, ddpm_var *x, int ndim, const int *shape) {
    if (!ready(t, "reshape", x, NULL, 1)) return NULL;
    if (ndim < 1 || ndim > 4 || !shape)
        return fail(t, DDPM_ERR_INVALID, "reshape: ndim %d not in 1..4", ndim);
    ddpm_var *y = new_var(t, ndim, shape, 0);
    if (!y) return NULL;
    if (y->numel != x->numel)
        return fail(t, DDPM_ERR_INVALID, "reshape: %s has %zu elements, the new shape %s has %zu",
                    SHAPE(x), x->numel, SHAPE(y), y->numel);
    y->data = x->data; /* a view: the gradient is copied back in backward */
    record(t, OP_RESHAPE, y, x, NULL, NULL, 0);
    return t->status ? NULL : y;
}

ddpm_var *ddpm_tape_mean(ddpm_tape *t, ddpm_var *x) {
    if (!ready(t, "mean", x, NULL, 1)) return NULL;
    ddpm_var *y = new_var(t, 1, (int[]){1}, 1);
    if (!y) return NULL;
    double s = 0;
    for (size_t i = 0; i < x->numel; i++) s += x->data[i];
    y->data[0] = (float)(s / (double)x->numel);
    record(t, OP_MEAN, y, x, NULL, NULL, 0);
    return t->status ? NULL : y;
}

/* ---- backward ---- */

/* The gradient buffer of v if a gradient flows to it (zeroed on first use), else NULL. */
static float *grad_of(ddpm_tape *t, ddpm_var *v) {
    if (!v || !v->requires_grad) return NULL;
    if (!v->grad) {
        v->grad = arena_floats(t, v->numel);
        if (v->grad) memset(v->grad, 0, v->numel * sizeof(float));
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
        float *ws = scratch(t, n->op == OP_CONV2D ? ddpm_conv2d_workspace(d)
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
    case OP_GROUPNORM: {
        const int B = x->shape[0], G = n->i[0];
        ddpm_groupnorm_backward(dx, pg(&n->p[0]), pg(&n->p[1]), dy, x->data, n->saved[0],
                                n->saved[0] + (size_t)B * G, pw(&n->p[0]), B, x->shape[1], inner(x),
                                G);
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
    case OP_ATTENTION: {
        const ddpm_attn_dims *d = &n->dims.attn;
        float *ws = scratch(t, ddpm_attention_workspace(d));
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
        fail(t, DDPM_ERR_INVALID, "tape_backward: output var is NULL");
        return t->status;
    }
    if (!out->requires_grad) {
        fail(t, DDPM_ERR_INVALID,
             "tape_backward: the output does not require grad (eval mode, or no trained "
             "parameter or marked input reaches it)");
        return t->status;
    }
    float *g = grad_of(t, out);
    if (!g) return t->status;
    for (size_t i = 0; i < out->numel; i++) g[i] += dout ? dout[i] : 1.0f;
    for (size_t k = t->n_nodes; k-- > 0 && !t->status;) {
        node *n = &t->nodes[k];
        if (n->out->grad) backward_node(t, n);
    }
    return t->status;
}

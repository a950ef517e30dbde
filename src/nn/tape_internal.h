/* tape_internal.h - the tape's private layout and the helpers its op recorders share
 * (nn/tape.c: lifetime, arena, recording, backward; nn/tape_ops.c: the ops). */
#ifndef DDPM_NN_TAPE_INTERNAL_H
#define DDPM_NN_TAPE_INTERNAL_H

#include "core/internal.h"

enum {
    OP_CONV2D,
    OP_CONVT2D,
    OP_LINEAR,
    OP_BATCHNORM,
    OP_BN_GELU, /* batch norm + GELU in one op */
    OP_GROUPNORM,
    OP_GN_SILU, /* group norm + SiLU in one op */
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
    OP_PAD,
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
    /* Gradient buffers of vars whose producer's backward has run, free for the next var's
     * gradient (tape.c grad_of): the backward then holds the live gradients, not all of them. */
    float **spare;
    size_t *spare_n, n_spare, cap_spare;
    int training, grad, status;
    double prof_mark;            /* DDPM_PROFILE: when the previous op was recorded */
    int prof_kernel, prof_stride; /* and the next conv's shape (tape_profile.c) */
    uint64_t seed, first_item;
    uint32_t step, n_dropout;
};

/* The op profile (tape_profile.c; all no-ops unless DDPM_PROFILE is set): the forward of op
 * ends now, the tape was reset, a backward node starts (returns 0 when off) and ends. */
void tape_profile_forward(ddpm_tape *t, int op, int kernel, int stride);
void tape_profile_reset(ddpm_tape *t);
double tape_profile_start(void);
void tape_profile_backward(int op, int kernel, int stride, double start);

/* Records the first failure (later ones are consequences) and returns NULL for the op. */
ddpm_var *tape_fail(ddpm_tape *t, int code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* The status of a failed library call (its message is already set). */
ddpm_var *tape_fail_status(ddpm_tape *t, int code);
/* An op may run: no earlier failure and every given input exists. */
int tape_ready(ddpm_tape *t, const char *op, const ddpm_var *a, const ddpm_var *b, int n_in);
const char *tape_shape_str(char *buf, size_t n, int ndim, const int *shape);
#define SHAPE(v) tape_shape_str((char[64]){0}, 64, (v)->ndim, (v)->shape)
/* n floats from the arena (kept until the next reset) / from the per-op scratch buffer. */
float *tape_arena_floats(ddpm_tape *t, size_t n);
float *tape_scratch(ddpm_tape *t, size_t n);
/* A new var of that shape (with data from the arena if with_data), or one shaped like x. */
ddpm_var *tape_new_var(ddpm_tape *t, int ndim, const int *shape, int with_data);
ddpm_var *tape_like(ddpm_tape *t, const ddpm_var *x);
/* Whether an op on a, b (and parameters) needs a node for backward. */
int tape_wants_grad(const ddpm_tape *t, const ddpm_var *a, const ddpm_var *b,
                    const ddpm_param *const *ps, int n_p);
/* Appends a node for op (see tape.c). */
node *tape_record(ddpm_tape *t, int op, ddpm_var *out, ddpm_var *a, ddpm_var *b,
                  const ddpm_param *const *ps, int n_p);
/* Parameter p must exist with the given shape (messages name op and name). */
int tape_check_param(ddpm_tape *t, const char *op, const char *name, const ddpm_param *p,
                     int ndim, const int *shape);
/* x must have lo..hi dimensions. */
int tape_need_ndim(ddpm_tape *t, const char *op, const ddpm_var *x, int lo, int hi);

static inline float *pw(const ddpm_param *p) { return p && p->w ? p->w : NULL; }
static inline float *pg(const ddpm_param *p) { return p && p->w ? p->g : NULL; }
/* [B, C, rest...]: C and the product of the rest. */
static inline size_t inner(const ddpm_var *x) { return x->numel / ((size_t)x->shape[0] * x->shape[1]); }

#endif

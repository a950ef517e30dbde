/* tape_ops.c - the tape's op recorders: each runs its op's forward at once (ops/) and, when
 * gradients are on, records a node with what its backward needs (replayed by nn/tape.c). */
#include "nn/tape_internal.h"

#include <math.h>

/* ---- ops ---- */

ddpm_var *ddpm_tape_input(ddpm_tape *t, const float *data, int ndim, const int *shape,
                          int requires_grad) {
    if (t->status) return NULL;
    if (ndim < 1 || ndim > 4)
        return tape_fail(t, DDPM_ERR_INVALID, "tape_input: ndim %d not in 1..4", ndim);
    if (!data || !shape) return tape_fail(t, DDPM_ERR_INVALID, "tape_input: data or shape is NULL");
    ddpm_var *v = tape_new_var(t, ndim, shape, 1);
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
    if (!tape_ready(t, op, x, NULL, 1) || !tape_need_ndim(t, op, x, 4, 4)) return NULL;
    if (!w || !w->w || w->ndim != 4)
        return tape_fail(t, DDPM_ERR_INVALID, "%s: weight must be a 4-D param", op);
    const int C_in = x->shape[1];
    const int C_out = transposed ? w->shape[1] : w->shape[0];
    const int wc_in = transposed ? w->shape[0] : w->shape[1];
    if (wc_in != C_in) {
        char a[64];
        return tape_fail(t, DDPM_ERR_INVALID,
                    "%s: input %s has %d channels but the weight %s expects %d", op, SHAPE(x), C_in,
                    tape_shape_str(a, sizeof a, 4, w->shape), wc_in);
    }
    if (!tape_check_param(t, op, "bias", b, 1, &C_out)) return NULL;
    ddpm_conv_dims d;
    int rc = transposed
                 ? ddpm_conv_transpose2d_dims(&d, x->shape[0], C_in, x->shape[2], x->shape[3],
                                              C_out, w->shape[2], w->shape[3], stride, pad)
                 : ddpm_conv2d_dims(&d, x->shape[0], C_in, x->shape[2], x->shape[3], C_out,
                                    w->shape[2], w->shape[3], stride, pad);
    if (rc) return tape_fail_status(t, rc);
    ddpm_var *y = tape_new_var(t, 4, (int[]){d.B, d.C_out, d.H_out, d.W_out}, 1);
    float *ws =
        y ? tape_scratch(t, transposed ? ddpm_conv_transpose2d_workspace(&d) : ddpm_conv2d_workspace(&d))
          : NULL;
    if (!ws) return NULL;
    if (transposed)
        ddpm_conv_transpose2d_forward(y->data, x->data, w->w, pw(b), &d, ws);
    else if (scale)
        ddpm_conv2d_scale_gelu_forward(y->data, x->data, w->w, scale, shift, &d, ws);
    else
        ddpm_conv2d_forward(y->data, x->data, w->w, pw(b), &d, ws);
    t->prof_kernel = d.KH;
    t->prof_stride = d.stride;
    node *n =
        tape_record(t, transposed ? OP_CONVT2D : OP_CONV2D, y, x, NULL, (const ddpm_param *[]){w, b}, 2);
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
    if (!tape_ready(t, "linear", x, NULL, 1)) return NULL;
    if (!w || !w->w || w->ndim != 2)
        return tape_fail(t, DDPM_ERR_INVALID, "linear: weight must be a 2-D param [out, in]");
    const int B = x->shape[0];
    const size_t in = x->numel / (size_t)B;
    if (in != (size_t)w->shape[1])
        return tape_fail(t, DDPM_ERR_INVALID,
                    "linear: input %s has %zu features per item, weight [%d, %d] expects %d",
                    SHAPE(x), in, w->shape[0], w->shape[1], w->shape[1]);
    const int O = w->shape[0];
    if (!tape_check_param(t, "linear", "bias", b, 1, &O)) return NULL;
    ddpm_var *y = tape_new_var(t, 2, (int[]){B, O}, 1);
    if (!y) return NULL;
    ddpm_linear_forward(y->data, x->data, w->w, pw(b), B, (int)in, O);
    node *n = tape_record(t, OP_LINEAR, y, x, NULL, (const ddpm_param *[]){w, b}, 2);
    if (n) {
        n->i[0] = B;
        n->i[1] = (int)in;
        n->i[2] = O;
    }
    return t->status ? NULL : y;
}

/* batch norm, followed by GELU in the same op when gelu is set */
static ddpm_var *batchnorm_op(ddpm_tape *t, ddpm_var *x, const ddpm_param *gamma,
                              const ddpm_param *beta, float *running_mean, float *running_var,
                              int gelu) {
    if (!tape_ready(t, "batchnorm", x, NULL, 1) || !tape_need_ndim(t, "batchnorm", x, 2, 4)) return NULL;
    const int B = x->shape[0], C = x->shape[1];
    const size_t HW = inner(x);
    if (!tape_check_param(t, "batchnorm", "weight", gamma, 1, &C) ||
        !tape_check_param(t, "batchnorm", "bias", beta, 1, &C))
        return NULL;
    if (!t->training && (!running_mean || !running_var))
        return tape_fail(t, DDPM_ERR_INVALID, "batchnorm: eval mode needs the running statistics");
    if (t->training && (size_t)B * HW < 2)
        return tape_fail(t, DDPM_ERR_INVALID,
                    "batchnorm: expected more than 1 value per channel when training, got input %s",
                    SHAPE(x));
    ddpm_var *y = tape_like(t, x);
    float *stats = y ? tape_arena_floats(t, 2 * (size_t)C) : NULL;
    if (!stats) return NULL;
    (gelu ? ddpm_batchnorm_gelu_forward : ddpm_batchnorm_forward)(
        y->data, stats, stats + C, x->data, pw(gamma), pw(beta), running_mean, running_var,
        t->training, DDPM_BN_MOMENTUM, B, C, HW);
    node *n = tape_record(t, gelu ? OP_BN_GELU : OP_BATCHNORM, y, x, NULL,
                          (const ddpm_param *[]){gamma, beta}, 2);
    if (n) {
        n->saved[0] = stats;
        n->i[0] = t->training;
    }
    return t->status ? NULL : y;
}

ddpm_var *ddpm_tape_batchnorm(ddpm_tape *t, ddpm_var *x, const ddpm_param *gamma,
                              const ddpm_param *beta, float *running_mean, float *running_var) {
    return batchnorm_op(t, x, gamma, beta, running_mean, running_var, 0);
}

ddpm_var *ddpm_tape_batchnorm_gelu(ddpm_tape *t, ddpm_var *x, const ddpm_param *gamma,
                                   const ddpm_param *beta, float *running_mean,
                                   float *running_var) {
    return batchnorm_op(t, x, gamma, beta, running_mean, running_var, 1);
}

ddpm_var *ddpm_tape_conv2d_bn_gelu(ddpm_tape *t, ddpm_var *x, const ddpm_param *w,
                                   const ddpm_param *b, int stride, int pad,
                                   const ddpm_param *gamma, const ddpm_param *beta,
                                   float *running_mean, float *running_var) {
    if (t->grad)
        return ddpm_tape_batchnorm_gelu(t, ddpm_tape_conv2d(t, x, w, b, stride, pad), gamma, beta,
                                        running_mean, running_var);
    /* Eval mode, nothing recorded: batch norm with the running statistics is a per-channel
     * affine map, folded with the conv's bias into the fused epilogue:
     * (conv + b - mean) g + beta = conv g + (beta + (b - mean) g), g = gamma / sqrt(var + eps). */
    if (!w || !w->w || w->ndim != 4 || t->status)
        return conv_common(t, x, w, b, stride, pad, 0, NULL, NULL); /* reports the problem */
    const int C = w->shape[0];
    if (!tape_check_param(t, "conv2d", "bias", b, 1, &C) ||
        !tape_check_param(t, "batchnorm", "weight", gamma, 1, &C) ||
        !tape_check_param(t, "batchnorm", "bias", beta, 1, &C))
        return NULL;
    if (!running_mean || !running_var)
        return tape_fail(t, DDPM_ERR_INVALID, "batchnorm: eval mode needs the running statistics");
    float *ss = tape_arena_floats(t, 2 * (size_t)C);
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
    return ddpm_tape_groupnorm_eps(t, x, groups, DDPM_NORM_EPS, gamma, beta);
}

/* group norm, followed by SiLU in the same op when silu is set */
static ddpm_var *groupnorm_op(ddpm_tape *t, ddpm_var *x, int groups, float eps,
                              const ddpm_param *gamma, const ddpm_param *beta, int silu) {
    if (!tape_ready(t, "groupnorm", x, NULL, 1) || !tape_need_ndim(t, "groupnorm", x, 2, 4)) return NULL;
    const int B = x->shape[0], C = x->shape[1];
    if (groups < 1 || C % groups)
        return tape_fail(t, DDPM_ERR_INVALID, "groupnorm: %d channels cannot be split into %d groups", C,
                    groups);
    if (!(eps > 0.0f)) return tape_fail(t, DDPM_ERR_INVALID, "groupnorm: eps %g is not positive", eps);
    if (!tape_check_param(t, "groupnorm", "weight", gamma, 1, &C) ||
        !tape_check_param(t, "groupnorm", "bias", beta, 1, &C))
        return NULL;
    ddpm_var *y = tape_like(t, x);
    float *stats = y ? tape_arena_floats(t, 2 * (size_t)B * groups) : NULL;
    if (!stats) return NULL;
    (silu ? ddpm_groupnorm_silu_forward : ddpm_groupnorm_forward_eps)(
        y->data, stats, stats + (size_t)B * groups, x->data, pw(gamma), pw(beta), B, C, inner(x),
        groups, eps);
    node *n = tape_record(t, silu ? OP_GN_SILU : OP_GROUPNORM, y, x, NULL,
                          (const ddpm_param *[]){gamma, beta}, 2);
    if (n) {
        n->saved[0] = stats;
        n->i[0] = groups;
    }
    return t->status ? NULL : y;
}

ddpm_var *ddpm_tape_groupnorm_eps(ddpm_tape *t, ddpm_var *x, int groups, float eps,
                                  const ddpm_param *gamma, const ddpm_param *beta) {
    return groupnorm_op(t, x, groups, eps, gamma, beta, 0);
}

ddpm_var *ddpm_tape_groupnorm_silu(ddpm_tape *t, ddpm_var *x, int groups, float eps,
                                   const ddpm_param *gamma, const ddpm_param *beta) {
    return groupnorm_op(t, x, groups, eps, gamma, beta, 1);
}

static ddpm_var *unary(ddpm_tape *t, ddpm_var *x, int op, const char *name, float f) {
    if (!tape_ready(t, name, x, NULL, 1)) return NULL;
    ddpm_var *y = tape_like(t, x);
    if (!y) return NULL;
    switch (op) {
    case OP_GELU: ddpm_gelu_forward(y->data, x->data, x->numel); break;
    case OP_RELU: ddpm_relu_forward(y->data, x->data, x->numel); break;
    case OP_SILU: ddpm_silu_forward(y->data, x->data, x->numel); break;
    default: DDPM_CHECK(0);
    }
    node *n = tape_record(t, op, y, x, NULL, NULL, 0);
    if (n) n->f = f;
    return t->status ? NULL : y;
}

ddpm_var *ddpm_tape_gelu(ddpm_tape *t, ddpm_var *x) { return unary(t, x, OP_GELU, "gelu", 0); }
ddpm_var *ddpm_tape_relu(ddpm_tape *t, ddpm_var *x) { return unary(t, x, OP_RELU, "relu", 0); }
ddpm_var *ddpm_tape_silu(ddpm_tape *t, ddpm_var *x) { return unary(t, x, OP_SILU, "silu", 0); }

ddpm_var *ddpm_tape_affine(ddpm_tape *t, ddpm_var *x, float alpha, float beta) {
    if (!tape_ready(t, "scale", x, NULL, 1)) return NULL;
    ddpm_var *y = tape_like(t, x);
    if (!y) return NULL;
    ddpm_scale_forward(y->data, x->data, alpha, beta, x->numel);
    node *n = tape_record(t, OP_SCALE, y, x, NULL, NULL, 0);
    if (n) n->f = alpha;
    return t->status ? NULL : y;
}

ddpm_var *ddpm_tape_scale(ddpm_tape *t, ddpm_var *x, float alpha) {
    return ddpm_tape_affine(t, x, alpha, 0.0f);
}

ddpm_var *ddpm_tape_dropout(ddpm_tape *t, ddpm_var *x, float p) {
    if (!tape_ready(t, "dropout", x, NULL, 1)) return NULL;
    if (!(p >= 0.0f && p < 1.0f))
        return tape_fail(t, DDPM_ERR_INVALID, "dropout: probability %g is not in [0, 1)", (double)p);
    if (!t->training || p == 0.0f) return x;
    const uint32_t k = t->n_dropout++;
    if (k >= 0xFFFFu)
        return tape_fail(t, DDPM_ERR_INVALID, "dropout: more than 65534 dropout ops in one forward");
    ddpm_var *y = tape_like(t, x);
    float *mask = y ? tape_arena_floats(t, x->numel) : NULL;
    if (!mask) return NULL;
    const int B = x->shape[0];
    const uint64_t item0 = ((uint64_t)(k + 1) << 32) + t->first_item;
    ddpm_dropout_forward(y->data, mask, x->data, B, x->numel / (size_t)B, p, t->seed, item0,
                         t->step);
    node *n = tape_record(t, OP_DROPOUT, y, x, NULL, NULL, 0);
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
    if (!tape_ready(t, "add", a, b, 2)) return NULL;
    if (!same_shape(a, b))
        return tape_fail(t, DDPM_ERR_INVALID, "add: shapes %s and %s differ", SHAPE(a), SHAPE(b));
    ddpm_var *y = tape_like(t, a);
    if (!y) return NULL;
    ddpm_add_forward(y->data, a->data, b->data, a->numel);
    tape_record(t, OP_ADD, y, a, b, NULL, 0);
    return t->status ? NULL : y;
}

static ddpm_var *channel_op(ddpm_tape *t, ddpm_var *x, ddpm_var *s, int op, const char *name) {
    if (!tape_ready(t, name, x, s, 2) || !tape_need_ndim(t, name, x, 2, 4)) return NULL;
    const int B = x->shape[0], C = x->shape[1];
    if (s->numel != (size_t)B * C || s->shape[0] != B || (s->ndim > 1 && s->shape[1] != C))
        return tape_fail(t, DDPM_ERR_INVALID,
                    "%s: the per-channel operand %s does not match [%d, %d] (input %s)", name,
                    SHAPE(s), B, C, SHAPE(x));
    ddpm_var *y = tape_like(t, x);
    if (!y) return NULL;
    if (op == OP_CHANNEL_MUL)
        ddpm_channel_mul_forward(y->data, x->data, s->data, B, C, inner(x));
    else
        ddpm_channel_add_forward(y->data, x->data, s->data, B, C, inner(x));
    tape_record(t, op, y, x, s, NULL, 0);
    return t->status ? NULL : y;
}

ddpm_var *ddpm_tape_channel_mul(ddpm_tape *t, ddpm_var *x, ddpm_var *s) {
    return channel_op(t, x, s, OP_CHANNEL_MUL, "channel_mul");
}

ddpm_var *ddpm_tape_channel_add(ddpm_tape *t, ddpm_var *x, ddpm_var *s) {
    return channel_op(t, x, s, OP_CHANNEL_ADD, "channel_add");
}

ddpm_var *ddpm_tape_concat(ddpm_tape *t, ddpm_var *a, ddpm_var *b) {
    if (!tape_ready(t, "concat", a, b, 2) || !tape_need_ndim(t, "concat", a, 2, 4)) return NULL;
    int ok = a->ndim == b->ndim && a->shape[0] == b->shape[0];
    for (int i = 2; ok && i < a->ndim; i++) ok = a->shape[i] == b->shape[i];
    if (!ok)
        return tape_fail(t, DDPM_ERR_INVALID, "concat: %s and %s differ outside the channel dimension",
                    SHAPE(a), SHAPE(b));
    int shape[4];
    memcpy(shape, a->shape, sizeof shape);
    shape[1] = a->shape[1] + b->shape[1];
    ddpm_var *y = tape_new_var(t, a->ndim, shape, 1);
    if (!y) return NULL;
    ddpm_concat_forward(y->data, a->data, b->data, a->shape[0], a->shape[1], b->shape[1], inner(a));
    tape_record(t, OP_CONCAT, y, a, b, NULL, 0);
    return t->status ? NULL : y;
}

ddpm_var *ddpm_tape_slice_channels(ddpm_tape *t, ddpm_var *x, int c0, int count) {
    if (!tape_ready(t, "slice_channels", x, NULL, 1) || !tape_need_ndim(t, "slice_channels", x, 2, 4))
        return NULL;
    if (c0 < 0 || count < 1 || c0 > x->shape[1] - count)
        return tape_fail(t, DDPM_ERR_INVALID, "slice_channels: channels %d..%d are outside %s", c0,
                    c0 + count - 1, SHAPE(x));
    int shape[4];
    memcpy(shape, x->shape, sizeof shape);
    shape[1] = count;
    ddpm_var *y = tape_new_var(t, x->ndim, shape, 1);
    if (!y) return NULL;
    ddpm_channel_slice_forward(y->data, x->data, x->shape[0], x->shape[1], inner(x), c0, count);
    node *n = tape_record(t, OP_SLICE, y, x, NULL, NULL, 0);
    if (n) n->i[0] = c0;
    return t->status ? NULL : y;
}

static ddpm_var *pool(ddpm_tape *t, ddpm_var *x, int k, int s, int op, const char *name) {
    if (!tape_ready(t, name, x, NULL, 1) || !tape_need_ndim(t, name, x, 4, 4)) return NULL;
    if (s == 0) s = k;
    if (k < 1 || s < 1)
        return tape_fail(t, DDPM_ERR_INVALID, "%s: kernel %d and stride %d must be positive", name, k,
                    s);
    const int B = x->shape[0], C = x->shape[1], H = x->shape[2], W = x->shape[3];
    if (H < k || W < k)
        return tape_fail(t, DDPM_ERR_INVALID, "%s: kernel %d is larger than the input %s", name, k,
                    SHAPE(x));
    ddpm_var *y = tape_new_var(t, 4, (int[]){B, C, (H - k) / s + 1, (W - k) / s + 1}, 1);
    if (!y) return NULL;
    if (op == OP_MAXPOOL)
        ddpm_maxpool2d_forward(y->data, x->data, B, C, H, W, k, s);
    else
        ddpm_avgpool2d_forward(y->data, x->data, B, C, H, W, k, s);
    node *n = tape_record(t, op, y, x, NULL, NULL, 0);
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
    if (!tape_ready(t, "upsample_nearest", x, NULL, 1) || !tape_need_ndim(t, "upsample_nearest", x, 4, 4))
        return NULL;
    if (scale < 1 || x->shape[2] > (1 << 24) / scale || x->shape[3] > (1 << 24) / scale)
        return tape_fail(t, DDPM_ERR_INVALID, "upsample_nearest: bad scale %d for %s", scale, SHAPE(x));
    const int B = x->shape[0], C = x->shape[1], H = x->shape[2], W = x->shape[3];
    ddpm_var *y = tape_new_var(t, 4, (int[]){B, C, H * scale, W * scale}, 1);
    if (!y) return NULL;
    ddpm_upsample_nearest_forward(y->data, x->data, B, C, H, W, scale);
    node *n = tape_record(t, OP_UPSAMPLE, y, x, NULL, NULL, 0);
    if (n) n->i[0] = scale;
    return t->status ? NULL : y;
}

ddpm_var *ddpm_tape_pad2d(ddpm_tape *t, ddpm_var *x, int top, int bottom, int left, int right) {
    if (!tape_ready(t, "pad2d", x, NULL, 1) || !tape_need_ndim(t, "pad2d", x, 4, 4)) return NULL;
    const int B = x->shape[0], C = x->shape[1], H = x->shape[2], W = x->shape[3];
    const int lim = 1 << 24;
    if (top < 0 || bottom < 0 || left < 0 || right < 0 || top > lim || bottom > lim || left > lim ||
        right > lim || H > lim - top - bottom || W > lim - left - right)
        return tape_fail(t, DDPM_ERR_INVALID, "pad2d: bad padding %d, %d, %d, %d for %s", top, bottom,
                         left, right, SHAPE(x));
    ddpm_var *y = tape_new_var(t, 4, (int[]){B, C, H + top + bottom, W + left + right}, 1);
    if (!y) return NULL;
    ddpm_pad2d_forward(y->data, x->data, B, C, H, W, top, bottom, left, right);
    node *n = tape_record(t, OP_PAD, y, x, NULL, NULL, 0);
    if (n) {
        n->i[0] = top;
        n->i[1] = bottom;
        n->i[2] = left;
        n->i[3] = right;
    }
    return t->status ? NULL : y;
}

ddpm_var *ddpm_tape_attention(ddpm_tape *t, ddpm_var *x, const ddpm_param *wqkv,
                              const ddpm_param *bqkv, const ddpm_param *wout,
                              const ddpm_param *bout, int heads) {
    if (!tape_ready(t, "attention", x, NULL, 1) || !tape_need_ndim(t, "attention", x, 4, 4)) return NULL;
    const int C = x->shape[1];
    if (!wqkv || !wqkv->w || !wout || !wout->w)
        return tape_fail(t, DDPM_ERR_INVALID, "attention: wqkv and wout are required");
    const int three_hid = wqkv->shape[0];
    if (heads < 1 || three_hid % (3 * heads))
        return tape_fail(t, DDPM_ERR_INVALID,
                    "attention: wqkv has %d rows, not 3 x a multiple of %d heads", three_hid,
                    heads);
    const int hid = three_hid / 3;
    if (!tape_check_param(t, "attention", "wqkv", wqkv, 2, (int[]){three_hid, C}) ||
        !tape_check_param(t, "attention", "bqkv", bqkv, 1, &three_hid) ||
        !tape_check_param(t, "attention", "wout", wout, 2, (int[]){C, hid}) ||
        !tape_check_param(t, "attention", "bout", bout, 1, &C))
        return NULL;
    ddpm_attn_dims d = {x->shape[0], C, x->shape[2] * x->shape[3], heads, hid / heads};
    ddpm_var *y = tape_like(t, x);
    if (!y) return NULL;
    /* The saved state is only kept when a node will need it; otherwise it is scratch. */
    const int keep = tape_wants_grad(t, x, NULL, (const ddpm_param *[]){wqkv, bqkv, wout, bout}, 4);
    const size_t ns = ddpm_attention_saved_size(&d);
    float *saved = keep ? tape_arena_floats(t, ns) : tape_scratch(t, ns);
    if (!saved) return NULL;
    ddpm_attention_forward(y->data, saved, x->data, wqkv->w, pw(bqkv), wout->w, pw(bout), &d);
    node *n =
        tape_record(t, OP_ATTENTION, y, x, NULL, (const ddpm_param *[]){wqkv, bqkv, wout, bout}, 4);
    if (n) {
        n->dims.attn = d;
        n->saved[0] = saved;
    }
    return t->status ? NULL : y;
}

ddpm_var *ddpm_tape_timestep_embedding(ddpm_tape *t, const float *timesteps, int B, int dim) {
    if (t->status) return NULL;
    if (!timesteps || B < 1 || dim < 4 || dim % 2)
        return tape_fail(
            t, DDPM_ERR_INVALID,
            "timestep_embedding: needs timesteps, B >= 1 and an even dim >= 4 (got B %d, dim %d)",
            B, dim);
    ddpm_var *y = tape_new_var(t, 2, (int[]){B, dim}, 1);
    if (!y) return NULL;
    ddpm_timestep_embedding(y->data, timesteps, B, dim);
    return y;
}

ddpm_var *ddpm_tape_reshape(ddpm_tape *t, ddpm_var *x, int ndim, const int *shape) {
    if (!tape_ready(t, "reshape", x, NULL, 1)) return NULL;
    if (ndim < 1 || ndim > 4 || !shape)
        return tape_fail(t, DDPM_ERR_INVALID, "reshape: ndim %d not in 1..4", ndim);
    ddpm_var *y = tape_new_var(t, ndim, shape, 0);
    if (!y) return NULL;
    if (y->numel != x->numel)
        return tape_fail(t, DDPM_ERR_INVALID, "reshape: %s has %zu elements, the new shape %s has %zu",
                    SHAPE(x), x->numel, SHAPE(y), y->numel);
    y->data = x->data; /* a view: the gradient is copied back in backward */
    tape_record(t, OP_RESHAPE, y, x, NULL, NULL, 0);
    return t->status ? NULL : y;
}

ddpm_var *ddpm_tape_mean(ddpm_tape *t, ddpm_var *x) {
    if (!tape_ready(t, "mean", x, NULL, 1)) return NULL;
    ddpm_var *y = tape_new_var(t, 1, (int[]){1}, 1);
    if (!y) return NULL;
    double s = 0;
    for (size_t i = 0; i < x->numel; i++) s += x->data[i];
    y->data[0] = (float)(s / (double)x->numel);
    tape_record(t, OP_MEAN, y, x, NULL, NULL, 0);
    return t->status ? NULL : y;
}

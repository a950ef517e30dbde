/* ddpm/nn.h - operators (forward and backward side by side) and the tape that records a network's forward and replays it backwards.
 * Part of the public API; include "ddpm.h" for all of it. */
#ifndef DDPM_NN_H
#define DDPM_NN_H

#include "ddpm/core.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- the fully connected layer (shared by every network) ---- */
/* out [B, O] = inp [B, I] @ weight^T + bias; weight [O, I] as nn.Linear; bias may be NULL. */
void ddpm_linear_forward(float *out, const float *inp, const float *weight, const float *bias,
                         int B, int in_features, int out_features);
/* Backward of ddpm_linear_forward. ACCUMULATES (+=) into dinp [B, I], dweight [O, I] and
 * dbias [O]; any of the three may be NULL to skip it. */
void ddpm_linear_backward(float *dinp, float *dweight, float *dbias, const float *dout,
                          const float *inp, const float *weight, int B, int in_features,
                          int out_features);


/* ------------------------------------------------------------------------------------------ */
/* Image operators: paired forward/backward functions over float32 NCHW arrays                 */
/*                                                                                              */
/*  - ddpm_<op>_forward(out, ..., inp, weights, dims) writes (=) its outputs.                   */
/*  - ddpm_<op>_backward(dinp, dweight, ..., dout, inp, weights, dims) ACCUMULATES (+=) into    */
/*    every gradient it is given: the caller zeroes them once, and a tensor used twice (a       */
/*    residual branch, a shared input) simply receives both contributions. Any gradient         */
/*    pointer may be NULL to skip that gradient (and its cost).                                 */
/*  - Nothing allocates: ops that need scratch memory take a caller-provided workspace whose    */
/*    size (in floats) a *_workspace function gives. Large loops run on OpenMP threads.          */
/*  - Shape arguments are validated by the tape (below); the raw ops trust them.                */
/*  - Normalisation eps is DDPM_NORM_EPS (1e-5, as PyTorch); batch-norm momentum is a parameter  */
/*    (PyTorch's default is DDPM_BN_MOMENTUM).                                                  */
/* ------------------------------------------------------------------------------------------ */

#define DDPM_NORM_EPS 1e-5f
#define DDPM_BN_MOMENTUM 0.1f

/* Geometry of a 2-D convolution or transposed convolution (same stride and padding along H and
 * W, any kernel KH x KW). Filled and validated by ddpm_conv2d_dims / ddpm_conv_transpose2d_dims.
 *   conv2d:            weight [C_out, C_in, KH, KW], H_out = (H + 2 pad - KH) / stride + 1
 *   conv_transpose2d:  weight [C_in, C_out, KH, KW], H_out = (H - 1) stride - 2 pad + KH
 *   (PyTorch's nn.Conv2d / nn.ConvTranspose2d layouts, dilation 1, groups 1, output_padding 0) */
typedef struct {
    int B;             /* batch */
    int C_in, H, W;    /* input  [B, C_in, H, W] */
    int C_out, KH, KW; /* kernel size */
    int stride, pad;
    int H_out, W_out;  /* output [B, C_out, H_out, W_out] */
    int transposed;    /* set by the dims function; the ops check it */
} ddpm_conv_dims;

/* Fill d and validate (positive sizes, stride >= 1, pad >= 0, a non-empty output). Return
 * DDPM_ERR_INVALID with a message naming the problem. */
int ddpm_conv2d_dims(ddpm_conv_dims *d, int B, int C_in, int H, int W, int C_out, int KH, int KW,
                     int stride, int pad);
int ddpm_conv_transpose2d_dims(ddpm_conv_dims *d, int B, int C_in, int H, int W, int C_out,
                               int KH, int KW, int stride, int pad);
/* Workspace (in floats) needed by the fast forward and backward, for the current
 * omp_get_max_threads() (query again after changing the thread count). Where the CPU has AVX2 +
 * FMA, conv2d runs on the library's own GEMM kernel with an implicit im2col (the forward at any
 * stride, the gradients of stride-1 convs): padded copies of the input per thread and packed
 * panel buffers. Otherwise, and for the rest, OpenBLAS per batch item: with B >= 2 the items
 * run concurrently, one per thread, each with its own working matrices, and the weight/bias
 * gradients are summed in min(B, 8) groups of consecutive items (fixed by B, not by the threads);
 * with B = 1 one set and threaded BLAS. A stride-1 conv2d whose output fits in L2
 * runs as one GEMM per kernel row on shifted copies of the zero-padded input; otherwise
 * im2col + sgemm (C_in KH KW x H_out W_out for conv2d, C_out KH KW x H W for the transposed
 * one). */
size_t ddpm_conv2d_workspace(const ddpm_conv_dims *d);
size_t ddpm_conv_transpose2d_workspace(const ddpm_conv_dims *d);

/* conv2d (see above). bias may be NULL. Neither the forward nor the gradients depend on the
 * thread count (the gradients' item groups are fixed by B and summed in group order).
 * out [B, C_out, H_out, W_out] = conv(inp [B, C_in, H, W], weight [C_out, C_in, KH, KW]) + bias [C_out] */
void ddpm_conv2d_forward(float *out, const float *inp, const float *weight, const float *bias,
                         const ddpm_conv_dims *d, float *ws);
/* GELU(conv2d(inp, weight) * scale[c] + shift[c]) per output channel c, with the scale, shift
 * and GELU applied to each block of the output while the kernel has it in cache: an eval-mode
 * conv -> batch norm -> GELU in one pass over the output (scale = gamma / sqrt(running_var +
 * eps), shift = beta + (bias - running_mean) scale). Same workspace as ddpm_conv2d_forward. */
void ddpm_conv2d_scale_gelu_forward(float *out, const float *inp, const float *weight,
                                    const float *scale, const float *shift,
                                    const ddpm_conv_dims *d, float *ws);
/* dinp [B, C_in, H, W], dweight [C_out, C_in, KH, KW], dbias [C_out] += ... (each may be NULL) */
void ddpm_conv2d_backward(float *dinp, float *dweight, float *dbias, const float *dout,
                          const float *inp, const float *weight, const ddpm_conv_dims *d,
                          float *ws);
/* Transposed conv2d (the adjoint of conv2d's input gradient), sgemm + col2im per item.
 * out [B, C_out, H_out, W_out] from inp [B, C_in, H, W], weight [C_in, C_out, KH, KW], bias [C_out] */
void ddpm_conv_transpose2d_forward(float *out, const float *inp, const float *weight,
                                   const float *bias, const ddpm_conv_dims *d, float *ws);
void ddpm_conv_transpose2d_backward(float *dinp, float *dweight, float *dbias, const float *dout,
                                    const float *inp, const float *weight,
                                    const ddpm_conv_dims *d, float *ws);
/* Batch norm over [B, C, HW...] (HW = 1 for a [B, C] input, i.e. BatchNorm1d). weight (gamma)
 * and bias (beta) [C] may be NULL (affine=False).
 * training: normalise with the batch mean and biased variance, and (when running_mean and
 *   running_var are not NULL) update them as PyTorch does: r = (1 - momentum) r + momentum s,
 *   with the UNBIASED batch variance (x B HW / (B HW - 1)) for running_var. Needs B HW > 1.
 * eval: normalise with running_mean / running_var (required), which are left unchanged.
 * mean, rstd [C] receive the statistics used (1 / sqrt(var + eps)); backward needs them. */
void ddpm_batchnorm_forward(float *out, float *mean, float *rstd, const float *inp,
                            const float *weight, const float *bias, float *running_mean,
                            float *running_var, int training, float momentum, int B, int C,
                            size_t HW);
/* training: the full gradient through the batch statistics; eval: the statistics are
 * constants. dinp [B, C, HW], dweight [C], dbias [C] += ... */
void ddpm_batchnorm_backward(float *dinp, float *dweight, float *dbias, const float *dout,
                             const float *inp, const float *mean, const float *rstd,
                             const float *weight, int training, int B, int C, size_t HW);
/* gelu(batchnorm(x)) in one pass: the values of ddpm_batchnorm_forward then ddpm_gelu_forward,
 * bit for bit, without the batch norm's output. Its backward recomputes that output from inp and
 * the statistics; dh [B, C, HW] is workspace. */
void ddpm_batchnorm_gelu_forward(float *out, float *mean, float *rstd, const float *inp,
                                 const float *weight, const float *bias, float *running_mean,
                                 float *running_var, int training, float momentum, int B, int C,
                                 size_t HW);
void ddpm_batchnorm_gelu_backward(float *dinp, float *dweight, float *dbias, const float *dout,
                                  const float *inp, const float *mean, const float *rstd,
                                  const float *weight, const float *bias, int training, int B,
                                  int C, size_t HW, float *dh);

/* Group norm: G groups of C / G consecutive channels (C % G == 0), statistics over each group
 * of each item, biased variance, then per-channel affine weight/bias [C] (either may be NULL).
 * mean, rstd [B, G] receive the statistics for backward. */
void ddpm_groupnorm_forward(float *out, float *mean, float *rstd, const float *inp,
                            const float *weight, const float *bias, int B, int C, size_t HW,
                            int G);
void ddpm_groupnorm_backward(float *dinp, float *dweight, float *dbias, const float *dout,
                             const float *inp, const float *mean, const float *rstd,
                             const float *weight, int B, int C, size_t HW, int G);
/* The same with eps in place of DDPM_NORM_EPS (diffusers' UNet2DModel uses norm_eps 1e-6); the
 * backward above serves both (it reads the saved rstd). */
void ddpm_groupnorm_forward_eps(float *out, float *mean, float *rstd, const float *inp,
                                const float *weight, const float *bias, int B, int C, size_t HW,
                                int G, float eps);
/* silu(groupnorm(x)) in one pass, bit for bit the two ops' values, without the group norm's
 * output; its backward recomputes that from inp and the statistics (dh [B, C, HW]: workspace). */
void ddpm_groupnorm_silu_forward(float *out, float *mean, float *rstd, const float *inp,
                                 const float *weight, const float *bias, int B, int C, size_t HW,
                                 int G, float eps);
void ddpm_groupnorm_silu_backward(float *dinp, float *dweight, float *dbias, const float *dout,
                                  const float *inp, const float *mean, const float *rstd,
                                  const float *weight, const float *bias, int B, int C, size_t HW,
                                  int G, float *dh);

/* Elementwise activations over n floats (any shape); out may alias inp in the forward.
 * GELU is the exact form x Phi(x) = x (1 + erf(x / sqrt 2)) / 2 (nn.GELU()). ReLU's gradient at
 * 0 is 0 (as PyTorch). SiLU = x sigmoid(x). */
void ddpm_gelu_forward(float *out, const float *inp, size_t n);
void ddpm_gelu_backward(float *dinp, const float *dout, const float *inp, size_t n);
void ddpm_relu_forward(float *out, const float *inp, size_t n);
void ddpm_relu_backward(float *dinp, const float *dout, const float *inp, size_t n);
void ddpm_silu_forward(float *out, const float *inp, size_t n);
void ddpm_silu_backward(float *dinp, const float *dout, const float *inp, size_t n);

/* out = alpha inp + beta (scale by a constant: the course's / 1.414; lucidrains' scale + 1). */
void ddpm_scale_forward(float *out, const float *inp, float alpha, float beta, size_t n);
void ddpm_scale_backward(float *dinp, const float *dout, float alpha, size_t n);

/* Inverted dropout over B items of per_item floats: item b draws
 * ddpm_randu(seed, DDPM_STREAM_DROPOUT, first_item + b, step, ., per_item) and keeps element k
 * when u_k >= p, scaled by 1 / (1 - p); mask [B, per_item] receives 0 or 1 / (1 - p) (needed by
 * backward). 0 <= p < 1. An item's mask does not depend on the batch it is in. */
void ddpm_dropout_forward(float *out, float *mask, const float *inp, int B, size_t per_item,
                          float p, uint64_t seed, uint64_t first_item, uint32_t step);
void ddpm_dropout_backward(float *dinp, const float *dout, const float *mask, size_t n);

/* Residual add: out = a + b (n floats; out may alias a or b). */
void ddpm_add_forward(float *out, const float *a, const float *b, size_t n);
void ddpm_add_backward(float *da, float *db, const float *dout, size_t n);

/* Per-channel broadcast: out [B, C, HW] = inp [B, C, HW] * s [B, C] (s may be [B, C, 1, 1]):
 * the course's cemb * up; with channel_add, lucidrains' x * (scale + 1) + shift. */
void ddpm_channel_mul_forward(float *out, const float *inp, const float *s, int B, int C,
                              size_t HW);
/* dinp += dout * s; ds [B, C] += sum over HW of dout * inp */
void ddpm_channel_mul_backward(float *dinp, float *ds, const float *dout, const float *inp,
                               const float *s, int B, int C, size_t HW);
/* out [B, C, HW] = inp [B, C, HW] + s [B, C]: the course's + temb. */
void ddpm_channel_add_forward(float *out, const float *inp, const float *s, int B, int C,
                              size_t HW);
void ddpm_channel_add_backward(float *dinp, float *ds, const float *dout, int B, int C,
                               size_t HW);

/* Concatenation along channels: out [B, Ca + Cb, HW] = cat(a [B, Ca, HW], b [B, Cb, HW], 1). */
void ddpm_concat_forward(float *out, const float *a, const float *b, int B, int Ca, int Cb,
                         size_t HW);
void ddpm_concat_backward(float *da, float *db, const float *dout, int B, int Ca, int Cb,
                          size_t HW);
/* Channels c0 .. c0 + n - 1 of inp [B, C, HW] into out [B, n, HW] (torch.chunk / narrow). */
void ddpm_channel_slice_forward(float *out, const float *inp, int B, int C, size_t HW, int c0,
                                int n);
void ddpm_channel_slice_backward(float *dinp, const float *dout, int B, int C, size_t HW, int c0,
                                 int n);

/* Pooling, PyTorch semantics without padding (ceil_mode False): window k x k, stride s,
 * out [B, C, (H - k) / s + 1, (W - k) / s + 1]; trailing rows/columns that do not fill a window
 * are dropped. Max pooling sends the gradient to the first maximum of each window (as PyTorch,
 * NaN counts as the maximum); its backward re-scans inp instead of storing indices. */
void ddpm_maxpool2d_forward(float *out, const float *inp, int B, int C, int H, int W, int k,
                            int s);
void ddpm_maxpool2d_backward(float *dinp, const float *dout, const float *inp, int B, int C,
                             int H, int W, int k, int s);
void ddpm_avgpool2d_forward(float *out, const float *inp, int B, int C, int H, int W, int k,
                            int s);
void ddpm_avgpool2d_backward(float *dinp, const float *dout, int B, int C, int H, int W, int k,
                             int s);
/* Forward only (src/ops/resample.c; the Inception-v3 of FID): bilinear resizing of [B, C, H, W]
 * to [B, C, Ho, Wo] as F.interpolate(mode="bilinear", align_corners=False); pooling with zero
 * padding pad on every side, out [B, C, (H + 2 pad - k) / s + 1, ...]: the average of the
 * pixels inside the image (count_include_pad=False) and the maximum (padding never wins). */
void ddpm_resize_bilinear_forward(float *out, const float *inp, int B, int C, int H, int W, int Ho,
                                  int Wo);
void ddpm_avgpool2d_pad_forward(float *out, const float *inp, int B, int C, int H, int W, int k,
                                int s, int pad);
void ddpm_maxpool2d_pad_forward(float *out, const float *inp, int B, int C, int H, int W, int k,
                                int s, int pad);

/* Nearest-neighbour upsampling by an integer factor: out [B, C, H scale, W scale]. */
void ddpm_upsample_nearest_forward(float *out, const float *inp, int B, int C, int H, int W,
                                   int scale);
void ddpm_upsample_nearest_backward(float *dinp, const float *dout, int B, int C, int H, int W,
                                    int scale);

/* Zero padding of x [B, C, H, W] by top, bottom, left, right >= 0 rows / columns (F.pad(x,
 * (left, right, top, bottom))): out [B, C, H + top + bottom, W + left + right]. The backward
 * adds the interior of dout into dinp. (diffusers' Downsample2D with padding 0 pads right and
 * bottom only before its stride-2 convolution.) */
void ddpm_pad2d_forward(float *out, const float *inp, int B, int C, int H, int W, int top,
                        int bottom, int left, int right);
void ddpm_pad2d_backward(float *dinp, const float *dout, int B, int C, int H, int W, int top,
                         int bottom, int left, int right);

/* Sinusoidal timestep embedding (DDPM U-Net, lucidrains' SinusoidalPosEmb): half = dim / 2,
 * f_k = exp(-log(10000) k / (half - 1)), out [B, dim] = cat(sin(t f), cos(t f)). dim even, >= 4.
 * Computed in float as PyTorch does. No gradient (t is not trained). */
void ddpm_timestep_embedding(float *out, const float *t, int B, int dim);

/* Multi-head self-attention over the N = H W positions of x [B, C, H, W] (the DDPM U-Net's
 * AttnBlock without its GroupNorm and residual; lucidrains' Attention):
 *   qkv [B, 3 hid, N] = Wqkv [3 hid, C] x + bqkv; q, k, v = its three channel thirds, each
 *   split into heads of dim_head channels (channel h dim_head + c is head h, hid = heads dim_head);
 *   P = softmax(q^T k / sqrt(dim_head)) per head [N, N]; o [B, hid, N] = v P^T;
 *   out [B, C, N] = Wout [C, hid] o + bout.
 * bqkv [3 hid] and bout [C] may be NULL. */
typedef struct {
    int B, C, N;         /* x [B, C, N] */
    int heads, dim_head; /* hid = heads * dim_head */
} ddpm_attn_dims;
/* Floats that forward saves for backward (qkv, P and o): B (4 hid N + heads N^2). */
size_t ddpm_attention_saved_size(const ddpm_attn_dims *d);
/* Workspace (floats) for backward: 4 hid N + N^2. */
size_t ddpm_attention_workspace(const ddpm_attn_dims *d);
void ddpm_attention_forward(float *out, float *saved, const float *inp, const float *wqkv,
                            const float *bqkv, const float *wout, const float *bout,
                            const ddpm_attn_dims *d);
/* dinp [B, C, N], dwqkv [3 hid, C], dbqkv [3 hid], dwout [C, hid], dbout [C] += ... */
void ddpm_attention_backward(float *dinp, float *dwqkv, float *dbqkv, float *dwout, float *dbout,
                             const float *dout, const float *inp, const float *saved,
                             const float *wqkv, const float *wout, const ddpm_attn_dims *d,
                             float *ws);

/* Cross-entropy of class logits (F.cross_entropy, mean over items): logits [B, K], labels [B]
 * in 0..K-1 (the caller checks them). Returns the loss, computed in double with a stable
 * log-softmax; probs [B, K] (may be NULL) receives softmax(logits), which backward needs. */
double ddpm_cross_entropy_forward(float *probs, const float *logits, const int *labels, int B,
                                  int K);
/* dlogits [B, K] += dloss (softmax - onehot(label)) / B. */
void ddpm_cross_entropy_backward(float *dlogits, float dloss, const float *probs,
                                 const int *labels, int B, int K);

/* ------------------------------------------------------------------------------------------ */
/* The tape: write a network's forward once, get its backward                                  */
/*                                                                                              */
/*   ddpm_tape_reset(tape);                                                                     */
/*   ddpm_var *x = ddpm_tape_input(tape, images, 4, (int[]){B, 3, 32, 32}, 0);                  */
/*   ddpm_var *h = ddpm_tape_conv2d(tape, x, &m->conv1_w, &m->conv1_b, 1, 1);                   */
/*   h = ddpm_tape_groupnorm(tape, h, 8, &m->gn_w, &m->gn_b);                                   */
/*   h = ddpm_tape_silu(tape, h); ...                                                           */
/*   if (!out) return ddpm_tape_status(tape);           // one check at the end                 */
/*   ... loss and dout ...                                                                      */
/*   ddpm_tape_backward(tape, out, dout);               // grads += into every ddpm_param.g     */
/*                                                                                              */
/* Each op computes its forward at once and, when gradients are on, records a node;             */
/* ddpm_tape_backward replays the nodes in reverse. Errors are sticky: the first failing op     */
/* (bad shape, out of memory) sets the tape's status and message and returns NULL, and every    */
/* later op given NULL returns NULL, so a network checks once at the end.                       */
/* Activations, saved statistics and (lazily, during backward) the vars' gradients live in an   */
/* arena owned by the tape: a list of blocks kept across ddpm_tape_reset, so once a forward and */
/* backward of a given batch shape has run, later ones allocate nothing. Every var is valid    */
/* until the next ddpm_tape_reset.                                                              */
/* ------------------------------------------------------------------------------------------ */

/* A trained tensor: views into the model's one contiguous parameter buffer (w) and the parallel
 * gradient buffer of the same layout (g; NULL freezes the parameter). Shapes in PyTorch order:
 * conv weight [C_out, C_in, KH, KW], transposed conv weight [C_in, C_out, KH, KW], linear
 * weight [out, in], biases and norm weights [C]. The tape copies the handle, so it may be a
 * temporary. */
typedef struct {
    float *w;
    float *g;
    int ndim;
    int shape[4];
} ddpm_param;

/* A tensor on the tape. Read-only for the caller except grad after backward. */
typedef struct {
    float *data;       /* [numel] */
    float *grad;       /* [numel] once backward has reached it, else NULL */
    size_t numel;
    int ndim;          /* 1..4 */
    int shape[4];      /* PyTorch order: [B, C, H, W], [B, F] or [1] */
    int requires_grad; /* a gradient flows to it (a marked input, or it depends on a trained param) */
} ddpm_var;

typedef struct ddpm_tape ddpm_tape;

/* A new tape (training mode, gradients on); NULL with the error set if out of memory. */
ddpm_tape *ddpm_tape_new(void);
void ddpm_tape_free(ddpm_tape *t); /* NULL is fine */
/* Forgets every node and var (their memory is kept for the next forward) and clears the status. */
void ddpm_tape_reset(ddpm_tape *t);
/* training 1 (default): batch norm uses batch statistics and updates the running ones, dropout
 * is active, nodes are recorded. training 0 (sampling, evaluation): batch norm uses the running
 * statistics, dropout is the identity, and no node is recorded (as torch.no_grad + eval()). */
void ddpm_tape_set_training(ddpm_tape *t, int training);
/* Overrides node recording alone (default: on in training, off in eval), e.g. for gradients of
 * an eval-mode network. */
void ddpm_tape_set_grad(ddpm_tape *t, int enabled);
/* The randomness of the next forward's dropout: the k-th dropout op (k = 0, 1, ... in call
 * order) of item b draws from (seed, DDPM_STREAM_DROPOUT, item ((k + 1) << 32) + first_item + b,
 * step); item high word 0 is left to the model (e.g. context dropout). first_item + B < 2^32. */
void ddpm_tape_set_rng(ddpm_tape *t, uint64_t seed, uint32_t step, uint64_t first_item);
/* DDPM_OK, or the status of the first failed op since the last reset (ddpm_last_error() holds
 * its message). */
int ddpm_tape_status(const ddpm_tape *t);

typedef struct {
    size_t n_nodes;      /* nodes recorded since the last reset */
    size_t arena_bytes;  /* bytes reserved in arena blocks and scratch */
    size_t arena_used;   /* bytes handed out since the last reset */
    size_t n_allocs;     /* allocations the tape has made since it was created */
} ddpm_tape_stats;
void ddpm_tape_get_stats(const ddpm_tape *t, ddpm_tape_stats *s);

/* A leaf var holding a copy of data (numel = product of shape). requires_grad: backward also
 * computes its gradient (var->grad). */
ddpm_var *ddpm_tape_input(ddpm_tape *t, const float *data, int ndim, const int *shape,
                          int requires_grad);

/* conv2d: x [B, C_in, H, W], w [C_out, C_in, KH, KW], b [C_out] or NULL. */
ddpm_var *ddpm_tape_conv2d(ddpm_tape *t, ddpm_var *x, const ddpm_param *w, const ddpm_param *b,
                           int stride, int pad);
/* Transposed conv2d: x [B, C_in, H, W], w [C_in, C_out, KH, KW], b [C_out] or NULL. */
ddpm_var *ddpm_tape_conv_transpose2d(ddpm_tape *t, ddpm_var *x, const ddpm_param *w,
                                     const ddpm_param *b, int stride, int pad);
/* Linear (ddpm_linear_forward): x [B, ...] flattened to [B, in], w [out, in], b [out] or NULL;
 * out [B, out]. */
ddpm_var *ddpm_tape_linear(ddpm_tape *t, ddpm_var *x, const ddpm_param *w, const ddpm_param *b);
/* gelu(batchnorm(conv2d(x))), the ResidualConvBlock's unit: recorded as the conv and one fused
 * batch norm + GELU (ddpm_tape_batchnorm_gelu) when the tape keeps gradients; otherwise (eval
 * mode, nothing recorded) one pass through ddpm_conv2d_scale_gelu_forward. The arguments are
 * those of the two calls. */
ddpm_var *ddpm_tape_conv2d_bn_gelu(ddpm_tape *t, ddpm_var *x, const ddpm_param *w,
                                   const ddpm_param *b, int stride, int pad,
                                   const ddpm_param *gamma, const ddpm_param *beta,
                                   float *running_mean, float *running_var);
/* Batch norm (momentum DDPM_BN_MOMENTUM): x [B, C, ...]; gamma, beta [C] (either may be NULL);
 * running_mean, running_var [C]: the model's buffers (not trained), updated in training mode,
 * used in eval mode. */
ddpm_var *ddpm_tape_batchnorm(ddpm_tape *t, ddpm_var *x, const ddpm_param *gamma,
                              const ddpm_param *beta, float *running_mean, float *running_var);
/* gelu(batchnorm(x)) as one op (ddpm_batchnorm_gelu_forward): the same values as the two ops,
 * one activation less kept for the backward. */
ddpm_var *ddpm_tape_batchnorm_gelu(ddpm_tape *t, ddpm_var *x, const ddpm_param *gamma,
                                   const ddpm_param *beta, float *running_mean,
                                   float *running_var);
/* Group norm: x [B, C, ...], C % groups == 0; gamma, beta [C] (either may be NULL). */
/* group norm with eps in place of DDPM_NORM_EPS */
ddpm_var *ddpm_tape_groupnorm_eps(ddpm_tape *t, ddpm_var *x, int groups, float eps,
                                  const ddpm_param *gamma, const ddpm_param *beta);
ddpm_var *ddpm_tape_groupnorm(ddpm_tape *t, ddpm_var *x, int groups, const ddpm_param *gamma,
                              const ddpm_param *beta);
/* silu(groupnorm(x)) as one op (ddpm_groupnorm_silu_forward): the same values as the two ops,
 * one activation less kept for the backward. */
ddpm_var *ddpm_tape_groupnorm_silu(ddpm_tape *t, ddpm_var *x, int groups, float eps,
                                   const ddpm_param *gamma, const ddpm_param *beta);
/* Elementwise, any shape. */
ddpm_var *ddpm_tape_gelu(ddpm_tape *t, ddpm_var *x);
ddpm_var *ddpm_tape_relu(ddpm_tape *t, ddpm_var *x);
ddpm_var *ddpm_tape_silu(ddpm_tape *t, ddpm_var *x);
/* alpha x (e.g. 1 / 1.414) and alpha x + beta. */
ddpm_var *ddpm_tape_scale(ddpm_tape *t, ddpm_var *x, float alpha);
ddpm_var *ddpm_tape_affine(ddpm_tape *t, ddpm_var *x, float alpha, float beta);
/* Dropout with probability p over x [B, ...] (see ddpm_tape_set_rng); the identity (x itself)
 * in eval mode or for p == 0. */
ddpm_var *ddpm_tape_dropout(ddpm_tape *t, ddpm_var *x, float p);
/* a + b, same shape. */
ddpm_var *ddpm_tape_add(ddpm_tape *t, ddpm_var *a, ddpm_var *b);
/* x [B, C, H, W] times / plus s [B, C] or [B, C, 1, 1] broadcast over H, W. */
ddpm_var *ddpm_tape_channel_mul(ddpm_tape *t, ddpm_var *x, ddpm_var *s);
ddpm_var *ddpm_tape_channel_add(ddpm_tape *t, ddpm_var *x, ddpm_var *s);
/* cat((a, b), dim=1) of [B, Ca, ...] and [B, Cb, ...] with the same trailing shape. */
ddpm_var *ddpm_tape_concat(ddpm_tape *t, ddpm_var *a, ddpm_var *b);
/* Channels c0 .. c0 + count - 1 of x [B, C, ...] (x.chunk(2, dim=1) is two slices). */
ddpm_var *ddpm_tape_slice_channels(ddpm_tape *t, ddpm_var *x, int c0, int count);
/* Pooling of x [B, C, H, W] with a k x k window and stride s (s = 0 means s = k). */
ddpm_var *ddpm_tape_maxpool2d(ddpm_tape *t, ddpm_var *x, int k, int s);
ddpm_var *ddpm_tape_avgpool2d(ddpm_tape *t, ddpm_var *x, int k, int s);
/* Nearest upsampling of x [B, C, H, W] by an integer factor. */
ddpm_var *ddpm_tape_upsample_nearest(ddpm_tape *t, ddpm_var *x, int scale);
/* zero padding of [B, C, H, W] (ddpm_pad2d_forward) */
ddpm_var *ddpm_tape_pad2d(ddpm_tape *t, ddpm_var *x, int top, int bottom, int left, int right);
/* Multi-head self-attention (ddpm_attention_forward) of x [B, C, H, W]: wqkv [3 hid, C] (or
 * [3 hid, C, 1, 1]), bqkv [3 hid] or NULL, wout [C, hid] (or [C, hid, 1, 1]), bout [C] or NULL;
 * hid must be a multiple of heads. Output [B, C, H, W]. */
ddpm_var *ddpm_tape_attention(ddpm_tape *t, ddpm_var *x, const ddpm_param *wqkv,
                              const ddpm_param *bqkv, const ddpm_param *wout,
                              const ddpm_param *bout, int heads);
/* Sinusoidal embedding [B, dim] of B timesteps t[B] (a constant: no gradient). */
ddpm_var *ddpm_tape_timestep_embedding(ddpm_tape *t, const float *timesteps, int B, int dim);
/* The same data under another shape of the same numel (.view), e.g. [B, C] -> [B, C, 1, 1]. */
ddpm_var *ddpm_tape_reshape(ddpm_tape *t, ddpm_var *x, int ndim, const int *shape);
/* The mean of all elements, shape [1]. */
ddpm_var *ddpm_tape_mean(ddpm_tape *t, ddpm_var *x);

/* Backpropagates from out with gradient dout [out->numel] (NULL means ones, e.g. for a scalar
 * loss): replays the recorded nodes in reverse, ACCUMULATING (+=) into every trained param's g
 * and into var->grad of the input vars (ddpm_tape_input) that require grad and of out. The
 * gradients of intermediate vars are recycled as the backward goes (their grad is NULL after
 * it), so it holds only the live ones. Call at most once per forward; zero the parameter
 * gradients yourself between steps. Returns the tape's status. */
int ddpm_tape_backward(ddpm_tape *t, ddpm_var *out, const float *dout);

#ifdef __cplusplus
}
#endif
#endif /* DDPM_NN_H */

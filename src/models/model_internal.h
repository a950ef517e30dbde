/* model_internal.h - what a network implementation needs: a table of named parameters that
 * becomes the model's contiguous buffers, PyTorch-style initialisers and config helpers. */
#ifndef DDPM_MODEL_INTERNAL_H
#define DDPM_MODEL_INTERNAL_H

#include "core/internal.h"

#include <cjson/cJSON.h>

/* Collects named tensors in state_dict order; ddpm_model_alloc_params then lays them out. */
typedef struct {
    ddpm_param_info *v;
    size_t n, cap;
    int failed;
} ddpm_param_table;

/* Adds a tensor; returns its index (or -1 after recording an allocation failure). The name is a
 * printf format. Shapes are given as up to 4 dimensions (unused trailing ones 0). */
int ddpm_pt_add(ddpm_param_table *pt, int is_buffer, int64_t d0, int64_t d1, int64_t d2,
                int64_t d3, const char *fmt, ...) __attribute__((format(printf, 7, 8)));
#define DDPM_PARAM(pt, d0, d1, d2, d3, ...) ddpm_pt_add((pt), 0, (d0), (d1), (d2), (d3), __VA_ARGS__)
#define DDPM_BUFFER(pt, d0, d1, d2, d3, ...) ddpm_pt_add((pt), 1, (d0), (d1), (d2), (d3), __VA_ARGS__)

/* A BatchNorm2d's tensors: weight, bias and the buffers running_mean, running_var (declared in
 * that order, the state_dict's; PyTorch's num_batches_tracked is not kept, loading ignores it). */
typedef struct {
    int w, b, rm, rv;
} ddpm_bn_tensors;
ddpm_bn_tensors ddpm_pt_batchnorm(ddpm_param_table *pt, int c, const char *name);

/* Moves the table into m->tensors and allocates m->params, m->grads and m->buffers, each tensor
 * starting on a 64-byte boundary (padding stays zero, so it is inert for every optimizer loop). */
int ddpm_model_alloc_params(ddpm_model *m, ddpm_param_table *pt);
void ddpm_param_table_free(ddpm_param_table *pt);

/* The values of tensor i (params or buffers) and its gradient (NULL for buffers). */
static inline float *ddpm_w(ddpm_model *m, int i) {
    return (m->tensors[i].is_buffer ? m->buffers : m->params) + m->tensors[i].offset;
}
static inline float *ddpm_g(ddpm_model *m, int i) {
    return m->tensors[i].is_buffer ? NULL : m->grads + m->tensors[i].offset;
}

/* PyTorch's default initialisation of Linear and Conv: weight and bias ~ U(-1/sqrt(fan_in),
 * 1/sqrt(fan_in)) (kaiming_uniform with a = sqrt(5)); Embedding ~ N(0, 1). The draws of tensor i
 * come from (seed, DDPM_STREAM_INIT, item = i). */
void ddpm_init_uniform(ddpm_model *m, int i, float bound, uint64_t seed);
void ddpm_init_normal(ddpm_model *m, int i, float std, uint64_t seed);
void ddpm_init_const(ddpm_model *m, int i, float value);
/* PyTorch's default for Conv2d, ConvTranspose2d and Linear: weight w and bias b ~
 * U(+-1/sqrt(fan_in)), fan_in = weight.size(1) * kernel area (for ConvTranspose2d, whose weight
 * is [C_in, C_out, k, k], that is C_out k k). */
void ddpm_init_fan_in(ddpm_model *m, int w, int b, uint64_t seed);
/* PyTorch's initial BatchNorm2d: weight 1, bias 0, running mean 0, running var 1. */
void ddpm_init_batchnorm(ddpm_model *m, ddpm_bn_tensors n);

/* A key of config o that is not among known[0..n) is a mistake (a typo would otherwise silently
 * give the default): DDPM_ERR_INVALID with a message naming the key, the kind and the known
 * keys. */
int ddpm_json_check_keys(const cJSON *o, const char *kind, const char *const *known, size_t n);
/* Config readers: a missing key takes the default; a present key must have the right type and
 * range, else DDPM_ERR_INVALID with a message naming the key. */
int ddpm_json_int(const cJSON *o, const char *key, int def, int lo, int hi, int *out);
int ddpm_json_float(const cJSON *o, const char *key, double def, double lo, double hi, double *out);
int ddpm_json_string(const cJSON *o, const char *key, const char *def, const char **out);
/* "1,2,2" style int list from a JSON array; count in *n (at most max). */
int ddpm_json_int_list(const cJSON *o, const char *key, const int *def, int n_def, int max,
                       int *out, int *n);

/* ddpm_model_create for configs that come from a file: refuses (DDPM_ERR_FORMAT, before any
 * large allocation) a model with more than max_weights values in its tensors (parameters and
 * buffers) or items of more than max_item floats. why completes "more than the <max_weights>
 * ..." in the message ("float values the file holds": a checkpoint must hold every weight). */
int ddpm_model_create_bounded(const char *config_json, uint64_t seed, size_t max_weights,
                              size_t max_item, const char *why, ddpm_model **out);

/* DDPM_ERR_FORMAT naming path, tensor and element unless every v[0..n) is finite (weights read
 * from a file: a NaN would otherwise surface only as NaN samples). */
int ddpm_check_finite(const float *v, size_t n, const char *path, const char *name);
/* "[2, 3, 4]": a tensor's shape for messages, into buf[n]; returns the characters written. */
int ddpm_shape_str(char *buf, size_t n, int ndim, const int64_t *shape);

/* A new model of the given ops whose m->impl is a zeroed struct of impl_size bytes (both freed by
 * ddpm_model_free_common and free); NULL if out of memory. */
ddpm_model *ddpm_model_new(const ddpm_model_ops *ops, size_t impl_size);
/* Frees what every model owns (tensors, params, grads, buffers, config) and the struct. */
void ddpm_model_free_common(ddpm_model *m);

/* Fills h[0..n_tensors) with a handle per tensor: its values, its gradient in `grads` (m->grads,
 * or a buffer laid out like it; NULL for buffers) and its shape. */
void ddpm_model_param_handles(ddpm_model *m, ddpm_param *h, float *grads);

/* ---- networks recorded on a tape (tape_net.c) -----------------------------------------------
 * A network written once on the tape (models/context_unet.c, models/simple_unet.c,
 * models/unet.c): the forward records it, the backward replays the recording. The model's impl
 * struct starts with a ddpm_tape_net, and its ops use ddpm_tape_net_backward as the backward.
 * tape_net.c's top comment says how a batch runs: slices over threads for networks whose items
 * never interact, one tape for those with batch statistics, eval forwards in chunks. */
#define DDPM_TAPE_NET_MAX_SLICES 64 /* threads that can each run a slice of the batch */
/* Slices of a training batch: a number fixed by the batch (so the gradient, summed in slice
 * order, is the same for any thread count); with more threads than slices the extra threads
 * idle in the sliced phases. 4: on the 2-core Xeon (AVX-512) a U-Net step of batch 64 costs
 * +3% against the old one-slice-per-thread split, 8 slices +12% (whole-process A/B medians). */
#define DDPM_TAPE_NET_TRAIN_SLICES 4
typedef struct {
    /* set by the network after ddpm_tape_net_init */
    int sliced;              /* items never interact, also in training: split batches over threads */
    double item_flops;       /* forward FLOPs per item: small calls run on one thread (0: never) */
    int eval_chunk_items;    /* > 0: items per eval chunk; else eval_item_floats sets the chunk */
    size_t eval_item_floats; /* about the floats an eval forward keeps per item */
    /* per slice: a tape, a handle per tensor (refreshed at each forward; slice 0's gradients go
     * to m->grads, slice k's to gpart[k]), the output of its last chunk, its status */
    int n_slices; /* allocated */
    ddpm_tape *tape[DDPM_TAPE_NET_MAX_SLICES];
    ddpm_param *prm[DDPM_TAPE_NET_MAX_SLICES];
    float *gpart[DDPM_TAPE_NET_MAX_SLICES];
    ddpm_var *out[DDPM_TAPE_NET_MAX_SLICES];
    int status[DDPM_TAPE_NET_MAX_SLICES];
    char err[DDPM_TAPE_NET_MAX_SLICES][256];
    int T, B;     /* slices and items of the last forward */
    int G, M;     /* micro-batch calls (M > 0): threads and items per micro-batch */
    float *mbuf;  /* micro-batch calls: each micro-batch's running statistics [K, n_buffers] */
    size_t mbuf_cap;
    int recorded; /* a training forward is recorded and not yet replayed */
} ddpm_tape_net;

/* Records the network on tape tp with the parameter handles prm for items [b0, b0 + nb) of the
 * batch `in`; returns its output [nb, ddpm_model_out_numel], or NULL (or anything) after an error the
 * tape recorded. Called concurrently for different slices: it may write only per-item state. */
typedef ddpm_var *(*ddpm_tape_net_record_fn)(ddpm_model *m, ddpm_tape *tp, const ddpm_param *prm,
                                             const ddpm_model_input *in, int b0, int nb);

/* What every image network's factory does once its config is read and its tensors declared in
 * pt: the model's image fields (channels x height x width), its config JSON (m owns it
 * from here; NULL means out of memory), the parameter buffers, slice 0's tape and a handle for
 * every tensor. On failure the caller destroys m. */
int ddpm_tape_net_init_image(ddpm_model *m, int channels, int height, int width, int num_timesteps,
                             char *config_json, ddpm_param_table *pt);
/* Frees the tapes, handles and gradient buffers (those never allocated are NULL). */
void ddpm_tape_net_free(ddpm_tape_net *tn);
/* The start of every forward: forgets the last recording, then checks the batch size against the
 * reserved one and (but for a classifier, which takes none) every timestep against
 * 0..num_timesteps-1 (the messages name the kind). */
int ddpm_tape_net_begin(ddpm_model *m, const ddpm_model_input *in);
/* The rest of the forward, once the network's inputs are ready: records the batch (in slices
 * and chunks, see above) and copies the output to out [B, ddpm_model_out_numel]. */
int ddpm_tape_net_run(ddpm_model *m, const ddpm_model_input *in, float *out,
                      ddpm_tape_net_record_fn record);
/* The backward of such a model: replays the last training forward once per slice and sums the
 * slices' parameter gradients into m->grads in slice order. */
int ddpm_tape_net_backward(ddpm_model *m, const float *dout);
static inline int ddpm_model_is_tape_net(const ddpm_model *m) {
    return m->ops->backward == ddpm_tape_net_backward;
}

/* Factories of the built-in networks. */
int ddpm_mlp_create(const void *config_cjson, uint64_t seed, ddpm_model **out);
int ddpm_context_unet_create(const void *config_cjson, uint64_t seed, ddpm_model **out); /* models/context_unet.c */
int ddpm_simple_unet_create(const void *config_cjson, uint64_t seed, ddpm_model **out);  /* models/simple_unet.c */
int ddpm_unet_create(const void *config_cjson, uint64_t seed, ddpm_model **out);         /* models/unet.c */
int ddpm_unet2d_create(const void *config_cjson, uint64_t seed, ddpm_model **out);       /* models/unet2d.c */
int ddpm_classifier_create(const void *config_cjson, uint64_t seed, ddpm_model **out);   /* models/classifier.c */

#endif

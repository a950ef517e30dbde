/* ddpm/model.h - one interface for every network, the tutorial MLP, and sampling with a model (classifier-free guidance).
 * Part of the public API; include "ddpm.h" for all of it. */
#ifndef DDPM_MODEL_H
#define DDPM_MODEL_H

#include "ddpm/diffusion.h"
#include "ddpm/io.h"
#include "ddpm/nn.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- models: one interface for every network ---- */

/* One named tensor of a model (a PyTorch state_dict key): a view into the model's contiguous
 * params (and grads) buffer, or into its buffers array for non-trained state (batch-norm running
 * statistics). */
typedef struct {
    char name[128];
    int ndim;
    int64_t shape[4];
    size_t offset; /* into params/grads, or into buffers if is_buffer */
    size_t numel;
    int is_buffer;
} ddpm_param_info;

/* What a network is given for B items. */
typedef struct {
    const float *x;         /* [B, d] noisy samples x_t (d = sample_numel) */
    const int *t;           /* [B] timestep indices into the schedule */
    const float *cond;      /* [B, cond_dim] class one-hot or context vector; NULL = none.
                               An all-zero row means "unconditional" (context dropout). */
    const float *self_cond; /* [B, d] previous x_0 estimate for self-conditioning, or NULL */
    int B;
    int train;              /* 1: record for backward, batch statistics, dropout on */
    uint64_t seed;          /* for dropout masks */
    uint64_t step;          /* for dropout masks */
    int item0;              /* the batch position of item 0 (dropout masks are addressed by it) */
    int microbatch;         /* train, > 0: the items form micro-batches of this many (the last
                               may be smaller), whose gradients backward adds exactly into
                               m->grad_exact (see ddpm_model.microbatch_native) */
} ddpm_model_input;

typedef struct ddpm_model ddpm_model;
typedef struct {
    const char *kind; /* "mlp", "context-unet", "simple-unet", "unet" */
    /* out [B, d] = network(input). Fails if B exceeds the reserved batch size. */
    int (*forward)(ddpm_model *m, const ddpm_model_input *in, float *out);
    /* Backward of the last forward (which had train = 1): ACCUMULATES into m->grads. */
    int (*backward)(ddpm_model *m, const float *dout);
    /* Plans activation memory for batches of up to B items (nothing is allocated in a step). */
    int (*reserve)(ddpm_model *m, int B);
    void (*destroy)(ddpm_model *m);
} ddpm_model_ops;

struct ddpm_model {
    const ddpm_model_ops *ops;
    void *impl;
    char *config_json;     /* the network's configuration, as stored in checkpoints */
    size_t sample_numel;   /* floats per item: D for points, C*H*W for images */
    int dim;               /* points: D */
    int channels, height, width; /* images (0 for points) */
    int cond_dim;          /* 0: unconditional network */
    int self_cond;         /* 1: the network takes a self-conditioning input */
    int num_timesteps;     /* schedule entries the network embeds (its t input range) */
    float *params, *grads; /* contiguous, n_params each, 64-byte aligned */
    size_t n_params;       /* floats, incl. each tensor's padding to 16 (see ddpm_model_weight_count) */
    float *buffers;        /* contiguous non-trained state (may be NULL) */
    size_t n_buffers;
    ddpm_param_info *tensors; /* every named tensor: parameters first, then buffers */
    size_t n_tensors;
    int max_batch;         /* reserved batch size */
    /* Micro-batches (the trainer's cfg.microbatch): a model with microbatch_native runs a
     * training call's micro-batches itself (concurrently) and its backward adds each one's
     * gradient exactly into grad_exact (2 (n_params + 1) int64: the fixed-point limbs of
     * kernels/exact_sum.c, lo then hi; slot n_params counts refused elements), leaving m->grads as scratch; a training forward leaves
     * in mb_buffers [micro-batches, n_buffers] the running statistics each micro-batch's update
     * gives from the current m->buffers (which it does not change). Other models are called
     * once per micro-batch by the trainer. */
    int microbatch_native;
    void *grad_exact;
    const float *mb_buffers;
    int n_classes;         /* > 0: an image classifier, whose forward gives [B, n_classes] logits
                              (not a denoiser's [B, sample_numel]); 0 for every denoiser */
};

/* Floats per item of forward's output: sample_numel for a denoiser, n_classes for a classifier. */
static inline size_t ddpm_model_out_numel(const ddpm_model *m) {
    return m->n_classes > 0 ? (size_t)m->n_classes : m->sample_numel;
}

/* Builds a model from its JSON configuration ({"kind": "mlp", ...}); parameters are initialised
 * as PyTorch initialises the equivalent module (from seed, with DDPM_STREAM_INIT). Errors name the
 * offending key. */
int ddpm_model_create(const char *config_json, uint64_t seed, ddpm_model **out);
void ddpm_model_free(ddpm_model *m);
int ddpm_model_reserve(ddpm_model *m, int B);
/* The activation memory one item takes in a network that runs on the tape (every image
 * network), measured: the tape bytes of one forward of a single zero item (training: with its
 * backward, i.e. what a training step records per item; else an eval forward, as sampling runs
 * it). The model's gradients and buffers (batch-norm statistics) are restored afterwards, so a
 * run's results do not change. 0 for the MLP, whose activations are allocated by
 * ddpm_model_reserve. For the memory estimate of `ddpm train` and `ddpm sample`. */
int ddpm_model_item_bytes(ddpm_model *m, int training, size_t *bytes);
const ddpm_param_info *ddpm_model_find(const ddpm_model *m, const char *name);
/* The number of trained weights (the sum of the parameter tensors' sizes, as PyTorch counts
 * them; n_params also holds each tensor's padding). */
size_t ddpm_model_weight_count(const ddpm_model *m);
/* Pointer to a tensor's values (params or buffers). */
float *ddpm_model_tensor_data(ddpm_model *m, const ddpm_param_info *p);
/* Loads tensors by name from a safetensors file (model keys exactly, or prefix + key). Every
 * model tensor must be present with the same shape and the file must hold no other tensor with
 * that prefix; the error names the first mismatching tensor. */
int ddpm_model_load_tensors(ddpm_model *m, const ddpm_safetensors *st, const char *prefix,
                            const char *path_for_errors);
/* Writes every tensor of m (parameters as they are now, and buffers such as batch norm's
 * running statistics) by name as float32 to a plain safetensors file with metadata
 * {"format": "pt"}: the state dict a PyTorch module of the same network loads whole. */
int ddpm_model_save_tensors(const char *path, const ddpm_model *m);

/* Registers a model kind beside the built-in ones (a static table in src/models/model.c). */
typedef int (*ddpm_model_factory)(const void *config_cjson, uint64_t seed, ddpm_model **out);
int ddpm_model_register(const char *kind, ddpm_model_factory factory);

/* ---- the tutorial MLP (2-D points) ---- */
/* Linear(D,H)-ReLU-[Linear(H,H)-ReLU] x (depth-1)-Linear(H,D), with a learned embedding table
 * step_embeddings.i [T, H] per hidden layer whose row t is added after each hidden Linear (the
 * tutorial's MLPDiffusion), or with "time_embedding": "sinusoidal", a fixed sinusoidal embedding
 * of t projected per layer (time_proj.i, Linear(H, H)). State-dict names as in PyTorch:
 * linears.0.weight, linears.0.bias, linears.2.weight, ..., step_embeddings.0.weight, ... */
typedef struct {
    int dim;           /* D >= 1 */
    int hidden;        /* H, default 128 */
    int depth;         /* hidden layers, default 3 */
    int num_timesteps; /* T of the embedding table */
    int sinusoidal;    /* 0: learned tables (tutorial), 1: sinusoidal + projections */
} ddpm_mlp_config;
/* {"kind":"mlp","dim":2,"hidden":128,"depth":3,"num_timesteps":100,"time_embedding":"learned"} */
char *ddpm_mlp_config_json(const ddpm_mlp_config *c); /* malloc'd */

/* ---- the image classifier (features for sample-quality metrics; src/models/classifier.c) ----
 * L blocks Conv2d(3x3, pad 1, no bias)-BatchNorm2d-ReLU-MaxPool2d(2), flatten, the feature layer
 * fc = ReLU(Linear(., features)) and the head Linear(features, classes) giving logits. State-dict
 * names as the PyTorch twin (scripts/fixtures/gen_classifier.py): blocks.<i>.0.weight,
 * blocks.<i>.1.{weight,bias,running_mean,running_var}, fc.weight, fc.bias, head.weight, head.bias.
 * The model's forward ignores t and cond; its output is the logits [B, classes]. */
#define DDPM_CLASSIFIER_MAX_BLOCKS 6
typedef struct {
    int in_channels, height;                  /* square images */
    int channels[DDPM_CLASSIFIER_MAX_BLOCKS]; /* per block */
    int n_blocks;
    int features;                             /* the penultimate layer's width */
    int classes;
} ddpm_classifier_config;
/* The defaults for Fashion-MNIST: 1 x 28 x 28, channels 32, 64, 64, 128 features, 10 classes. */
void ddpm_classifier_config_default(ddpm_classifier_config *c);
/* {"kind":"classifier","in_channels":1,"height":28,"channels":[32,64,64],"features":128,
 *  "classes":10} (malloc'd) */
char *ddpm_classifier_config_json(const ddpm_classifier_config *c);
/* Eval mode (running statistics), B items x [B, C, H, W]: the penultimate features [B, features]
 * and the logits [B, classes]; either output may be NULL. Any B >= 1 (reserves as needed; runs in
 * chunks). DDPM_ERR_INVALID if m is not a classifier. */
int ddpm_classifier_forward_eval(ddpm_model *m, const float *x, int B, float *features,
                                 float *logits);
/* The width of the feature layer (0 if m is not a classifier). */
int ddpm_classifier_feature_dim(const ddpm_model *m);
/* Writes the classifier's tensors to a safetensors file atomically, with metadata "format":
 * "ddpm-classifier", its version, "model" (the config JSON) and n_meta more key/value pairs. */
int ddpm_classifier_save(const char *path, const ddpm_model *m, const char *const *keys,
                         const char *const *values, size_t n_meta);
/* Reads a file written by ddpm_classifier_save: the model built from its config, weights loaded.
 * Errors name the file: not a classifier file (a diffusion checkpoint is named as such), another
 * format version, a missing or misshapen tensor. st_out (may be NULL) receives the file for its
 * metadata (free it with ddpm_safetensors_free). */
int ddpm_classifier_load(const char *path, ddpm_model **out, ddpm_safetensors *st_out);

/* ---- the Inception-v3 of pytorch-fid: the standard FID features (src/models/inception.c) ----
 * torchvision's Inception3 with pytorch-fid's FID blocks (Mixed_5b-5d FIDInceptionA, 6b-6e
 * FIDInceptionC, 7b/7c FIDInceptionE_1/_2; branch average pools without the padding, Mixed_7c's
 * branch pool a max pool), eval mode, forward only: images resized to 299 x 299 (bilinear,
 * align_corners=False), 2x - 1, up to the adaptive average pool: [2048] per image. Weights as
 * pytorch-fid's pt_inception-2015-12-05-6726825d.pth names them (Conv2d_1a_3x3.conv.weight,
 * Conv2d_1a_3x3.bn.{weight,bias,running_mean,running_var}, Mixed_5b.branch1x1.conv.weight, ...;
 * other keys such as fc.* and num_batches_tracked are ignored). The channel counts come from the
 * weights (each conv must take what its inputs give), so a narrower twin of the same topology
 * loads too (the tests' fixture). */
typedef struct ddpm_inception ddpm_inception;
/* Images per chunk of ddpm_inception_features (bounds its memory; see ddpm_inception_memory). */
#define DDPM_INCEPTION_CHUNK 8
/* Reads the weights from a .pth (torch.save) or a safetensors file, told apart by content
 * (ddpm_weights_read), and folds each batch norm into its conv. Errors name the file and the
 * missing or misshapen tensor ("...: tensor 'Mixed_5b.branch5x5_2.conv.weight' has shape
 * [64, 47, 5, 5], expected [C_out, 48, 5, 5]"), a negative running variance or a non-finite
 * value. Free with ddpm_inception_free. */
int ddpm_inception_load(const char *path, ddpm_inception **out);
void ddpm_inception_free(ddpm_inception *net); /* NULL is fine */
/* The feature width: 2048 for pytorch-fid's weights (0 for NULL). */
int ddpm_inception_feature_dim(const ddpm_inception *net);
/* The convolution weights (as PyTorch counts them, without the batch norms). */
size_t ddpm_inception_weight_count(const ddpm_inception *net);
/* Bytes a call holds for chunks of `batch` RGB images: the folded weights, two activation
 * buffers and the scratch of the largest block (conv workspaces for the current
 * omp_get_max_threads()). */
size_t ddpm_inception_memory(const ddpm_inception *net, int batch);
/* features [n, F] of n images x [n, C, H, W], C = 1 (gray, repeated to RGB) or 3, any H x W, in
 * chunks of DDPM_INCEPTION_CHUNK. signed_range 0: values in [0, 1] as pytorch-fid takes them;
 * 1: values in [-1, 1] (ddpm's images), the same images after (x + 1) / 2. The buffers are kept
 * for the next call. OpenMP-parallel inside each operator; the result does not depend on n or
 * the chunking to more than float rounding. */
int ddpm_inception_features(ddpm_inception *net, const float *x, size_t n, int C, int H, int W,
                            int signed_range, float *features);

/* ---- sampling with a model ---- */

/* The sampler callback for a model: ctx is a ddpm_model_sampler. With guidance w != 0 and a
 * condition, eps = (1 + w) eps(x, c) - w eps(x, none) (classifier-free guidance). */
typedef struct {
    ddpm_model *model;
    const float *cond;  /* [B, cond_dim] per item, or NULL */
    float guidance;
    float *buf_;        /* private: [2B, d] and [2B, cond_dim] work space */
    float *cbuf_;
    int *tbuf_;
    int capacity_;
} ddpm_model_sampler;
int ddpm_model_sampler_init(ddpm_model_sampler *ms, ddpm_model *m, int B);
void ddpm_model_sampler_free(ddpm_model_sampler *ms);
int ddpm_model_denoise(void *ctx, const float *x, int B, int t, const float *x0_prev, float *out);

#ifdef __cplusplus
}
#endif
#endif /* DDPM_MODEL_H */

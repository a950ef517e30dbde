/* netcheck.h - checks of an image network (a ddpm_model) against its PyTorch fixture, shared by
 * test_context_unet.c, test_simple_unet.c and test_unet.c.
 *
 * A fixture file (scripts/fixtures/gen_course_nets.py, gen_unet.py) holds cases under a prefix
 * such as "cu/": the weights "<prefix>w.<tensor>", the inputs "<prefix>x", "<prefix>t" (int64)
 * and "<prefix>c" (the context, if the network takes one), the upstream gradient "<prefix>dout",
 * and PyTorch's results in float64: the outputs (ddpm_model_out_numel floats per item: a
 * classifier's are its logits), "<prefix>grad.<tensor>" for every parameter,
 * "<prefix>after.<tensor>" for every running statistic, and the optimizer steps' "opt/..." data.
 *
 * The course networks (context-unet, simple-unet) are compared per tensor with
 *   |got - ref| <= NC_RTOL |ref| + NC_ATOL_REL max|ref| + floor
 * where floor is NC_FLOOR_REL G for gradients, G the largest reference gradient of the case (the
 * floor for tensors whose true gradient is 0, such as conv biases in front of a training-mode
 * batch norm), and 0 for everything else. */
#ifndef DDPM_NETCHECK_H
#define DDPM_NETCHECK_H

#include "testutil.h"

#define NC_RTOL 1e-4
#define NC_ATOL_REL 1e-5
#define NC_FLOOR_REL 5e-6

/* One test file's fixture and the worst errors its comparisons have seen. */
typedef struct {
    const char *tag;  /* the network, printed as "[tag]" before every report line */
    const char *file; /* the fixture, under $DDPM_FIXTURES */
    ddpm_safetensors fx;
    /* nc_cmp's worst max|got - ref| / max|ref| over tensors whose reference is not ~0, worst
     * max|got - ref| / G over gradients that are ~0 (max|ref| < 1e-6 G), and the largest
     * fraction of the tolerance used */
    tu_worst worst, worst_zero;
    double worst_tol;
} nc_suite;

/* The cmocka group setup and teardown of a test file: nc_group_setup loads the fixture of the
 * suite given to nc_use_suite (call it in main, before cmocka_run_group_tests); nc_group_teardown
 * frees it and prints the worst errors. */
void nc_use_suite(nc_suite *s);
int nc_group_setup(void **state);
int nc_group_teardown(void **state);

/* Fixture tensor prefix + name as floats (n elements) or ints (int64 in the file); malloc'd. */
float *nc_tensor(const ddpm_safetensors *fx, const char *prefix, const char *name, size_t n);
int *nc_tensor_int(const ddpm_safetensors *fx, const char *prefix, const char *name, int n);

/* The model of a JSON config; fails the test with the config and the error if it cannot. */
ddpm_model *nc_create(const char *json, uint64_t seed);
/* nc_create(json, 7) with the weights of case prefix loaded. */
ddpm_model *nc_load(nc_suite *s, const char *json, const char *prefix);
/* Slice 0's tape of a network that runs on the tape (ddpm_model_tape). */
ddpm_tape *nc_tape_of(ddpm_model *m);

/* got against ref with the tolerance above (floor_abs: the absolute floor, NC_FLOOR_REL G for a
 * gradient, else 0); records the worst errors in s and prints a line per tensor when
 * DDPM_TEST_VERBOSE is set. */
void nc_cmp_(nc_suite *s, const float *got, const float *ref, size_t n, double floor_abs,
             const char *what, const char *file, int line);
#define nc_cmp(s, got, ref, n, floor_abs, what) \
    nc_cmp_((s), (got), (ref), (n), (floor_abs), (what), __FILE__, __LINE__)

/* Case prefix of a course network (json) on its B items, against PyTorch with nc_cmp: the
 * training forward ("out_train"), then every parameter gradient of sum(out * dout) and every
 * running statistic the forward updated; the fixture must have no gradient or statistic that
 * was not compared, and n_stats statistics. Then the eval forward ("out_eval"), after which
 * backward must refuse (an eval forward records nothing). */
void nc_check_forward_backward(nc_suite *s, const char *json, const char *prefix, int B,
                               size_t n_stats);

/* Optimizer steps as PyTorch takes them: the MSE loss of a training forward, gradients from
 * zero, clip_grad_norm_(1.0), Adam(lr 1e-3, betas (0.9, 0.999), eps 1e-8, no weight decay; the
 * library's default training config). */
typedef struct {
    ddpm_model *m;
    ddpm_train_config cfg;
    float *am, *av, *out, *dout; /* Adam's moments; the output and its gradient, B items */
    int k;                       /* steps taken */
} nc_adam;
void nc_adam_init(nc_adam *a, ddpm_model *m, int B);
void nc_adam_free(nc_adam *a);
/* One step on in (B items) towards target; returns the loss, the gradient norm before clipping
 * in *norm. */
double nc_adam_step(nc_adam *a, const ddpm_model_input *in, const float *target, float *norm);

/* Three nc_adam_steps of a course network from the weights of case prefix, on B items of
 * "opt/x<k>", "opt/t<k>", "opt/c<k>" (with a context) towards "opt/target<k>": each loss and
 * gradient norm within relative 1e-5 of PyTorch's "opt/loss<k>" and "opt/norm<k>" (printed).
 * Returns the number of steps in which PyTorch clipped the gradient (norm > 1). */
int nc_check_adam_steps(nc_suite *s, const char *json, const char *prefix, int B);

/* Case prefix's training forward, gradients and eval forward with 1 and with 2 threads agree
 * within relative 1e-5 of the largest value (the differences are printed). Leaves 2 threads. */
void nc_check_threads(nc_suite *s, const char *json, const char *prefix, int B);

/* The eval forward of in (train = 0) in one pass (to whole) and in chunks of `chunk` items
 * (DDPM_EVAL_CHUNK, to chunked) agree within 1e-6. */
void nc_check_eval_chunks(ddpm_model *m, const ddpm_model_input *in, int chunk, float *whole,
                          float *chunked);

/* Case prefix, three times: a training step (forward, backward) on B items, eval forwards of B
 * and of b_small items (and, if eval_chunk > 0, of B items in chunks of eval_chunk), a training
 * step on b_small items. After the first time the tape allocates nothing: its allocations and
 * arena size stay as they were (printed); it must record more than min_nodes nodes. */
void nc_check_steady_state(nc_suite *s, const char *json, const char *prefix, int B, int b_small,
                           int eval_chunk, size_t min_nodes);

/* ---- configuration and initialisation ---- */

/* The model's kind and data shape: images of channels x height x height, cond_dim, the number of
 * timesteps, no self-conditioning. */
void nc_check_shape(const ddpm_model *m, const char *kind, int channels, int height, int cond_dim,
                    int num_timesteps);
/* The number of weights, buffers left out (counted here, not by ddpm_model_weight_count). */
size_t nc_count_weights(const ddpm_model *m);
/* Each named tensor's largest |value| is within (lo bound, bound]: PyTorch's uniform
 * initialisation U(+-bound), drawn. */
typedef struct {
    const char *name;
    double bound;
} nc_bound;
void nc_check_init_bounds(ddpm_model *m, const nc_bound *b, size_t n, double lo);
/* Every element of each named tensor is 1. */
void nc_check_ones(ddpm_model *m, const char *const *names, size_t n);

/* ---- loading weights by name and its errors ---- */

/* Writes case prefix's weights without the "<prefix>w." to a safetensors file at path, leaving
 * out the tensors whose names start with skip (NULL: none), and adding a copy of tensor extra_src
 * named extra (NULL: none). */
void nc_write_weights(nc_suite *s, const char *path, const char *prefix, const char *skip,
                      const char *extra, const char *extra_src);
/* Loads the safetensors file at path into m (no prefix); returns ddpm_model_load_tensors' status. */
int nc_load_file(ddpm_model *m, const char *path);
/* Fails the test unless loading path into m fails with DDPM_ERR_FORMAT and a message containing
 * needle. */
void nc_expect_load_error(ddpm_model *m, const char *path, const char *needle);
/* Fails the test unless the last error message contains needle. */
void nc_expect_error(const char *needle);
/* Fails the test unless creating a model of json fails with DDPM_ERR_INVALID, no model and a
 * message containing needle. */
void nc_expect_bad_config(const char *json, const char *needle);

/* ddpm_trainer_init, then `steps` steps, each of which must succeed; the last loss must be finite
 * and positive. */
void nc_train(ddpm_trainer *tr, ddpm_model *m, const ddpm_schedule *s, const ddpm_train_config *tc,
              const ddpm_train_data *td, int steps);
/* Saves the trainer's state to a temporary checkpoint named file and loads it into *ck (free it
 * with ddpm_checkpoint_free); the loaded model must have the trainer model's config, weights and
 * running statistics. */
void nc_checkpoint_roundtrip(ddpm_trainer *tr, const char *file, ddpm_checkpoint *ck);

#endif

/* model_internal.h - what a network implementation needs: a table of named parameters that
 * becomes the model's contiguous buffers, PyTorch-style initialisers and config helpers. */
#ifndef DDPM_MODEL_INTERNAL_H
#define DDPM_MODEL_INTERNAL_H

#include "internal.h"

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

/* Config readers: a missing key takes the default; a present key must have the right type and
 * range, else DDPM_ERR_INVALID with a message naming the key. */
int ddpm_json_int(const cJSON *o, const char *key, int def, int lo, int hi, int *out);
int ddpm_json_float(const cJSON *o, const char *key, double def, double lo, double hi, double *out);
int ddpm_json_string(const cJSON *o, const char *key, const char *def, const char **out);
/* "1,2,2" style int list from a JSON array; count in *n (at most max). */
int ddpm_json_int_list(const cJSON *o, const char *key, const int *def, int n_def, int max,
                       int *out, int *n);

/* Frees what every model owns (tensors, params, grads, buffers, config) and the struct. */
void ddpm_model_free_common(ddpm_model *m);

/* Factories of the built-in networks. */
int ddpm_mlp_create(const void *config_cjson, uint64_t seed, ddpm_model **out);
int ddpm_context_unet_create(const void *config_cjson, uint64_t seed, ddpm_model **out); /* net_context_unet.c */
int ddpm_simple_unet_create(const void *config_cjson, uint64_t seed, ddpm_model **out);  /* net_simple_unet.c */
int ddpm_unet_create(const void *config_cjson, uint64_t seed, ddpm_model **out);         /* net_unet.c */

#endif

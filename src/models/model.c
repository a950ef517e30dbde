/* model.c - what every network shares: the registry of kinds, the contiguous parameter layout,
 * loading weights by name, and the sampler callback with classifier-free guidance. */
#include "models/model_internal.h"

#include <limits.h>
#include <math.h>
#include <stdarg.h>

/* ---- registry ------------------------------------------------------------------------------ */

typedef struct {
    char kind[32];
    ddpm_model_factory factory;
} registry_entry;

static registry_entry registry[16] = {
    {"mlp", ddpm_mlp_create},
    {"context-unet", ddpm_context_unet_create},
    {"simple-unet", ddpm_simple_unet_create},
    {"unet", ddpm_unet_create},
    {"unet2d", ddpm_unet2d_create},
    {"classifier", ddpm_classifier_create},
};

int ddpm_model_register(const char *kind, ddpm_model_factory factory) {
    for (size_t i = 0; i < sizeof registry / sizeof registry[0]; i++) {
        if (!registry[i].factory || strcmp(registry[i].kind, kind) == 0) {
            snprintf(registry[i].kind, sizeof registry[i].kind, "%s", kind);
            registry[i].factory = factory;
            return DDPM_OK;
        }
    }
    return ddpm_fail(DDPM_ERR_INVALID, "too many model kinds registered");
}

/* Limits on the model ddpm_model_create_bounded may build on this thread, checked by
 * ddpm_model_alloc_params before it allocates (limit_why NULL: no limits). Thread-local rather
 * than a factory argument: the factory signature is public (ddpm_model_register), and the limits
 * hold only for one call. */
static _Thread_local size_t limit_weights, limit_item;
static _Thread_local const char *limit_why;

int ddpm_model_create_bounded(const char *config_json, uint64_t seed, size_t max_weights,
                              size_t max_item, const char *why, ddpm_model **out) {
    limit_weights = max_weights;
    limit_item = max_item;
    limit_why = why ? why : "allowed";
    int rc = ddpm_model_create(config_json, seed, out);
    limit_why = NULL;
    return rc;
}

int ddpm_model_create(const char *config_json, uint64_t seed, ddpm_model **out) {
    *out = NULL;
    cJSON *cfg = cJSON_Parse(config_json);
    if (!cfg || !cJSON_IsObject(cfg)) {
        cJSON_Delete(cfg);
        return ddpm_fail(DDPM_ERR_INVALID, "model config is not a JSON object");
    }
    const cJSON *kind = cJSON_GetObjectItemCaseSensitive(cfg, "kind");
    if (!cJSON_IsString(kind)) {
        cJSON_Delete(cfg);
        return ddpm_fail(DDPM_ERR_INVALID, "model config has no \"kind\"");
    }
    int rc = DDPM_ERR_INVALID;
    int found = 0;
    char known[256] = "";
    for (size_t i = 0; i < sizeof registry / sizeof registry[0] && registry[i].factory; i++) {
        if (strcmp(registry[i].kind, kind->valuestring) == 0) {
            rc = registry[i].factory(cfg, seed, out);
            found = 1;
            break;
        }
        if (known[0]) strncat(known, ", ", sizeof known - strlen(known) - 1);
        strncat(known, registry[i].kind, sizeof known - strlen(known) - 1);
    }
    if (!found)
        rc = ddpm_fail(DDPM_ERR_INVALID, "unknown model kind '%s' (known: %s)", kind->valuestring,
                       known);
    cJSON_Delete(cfg);
    return rc;
}

void ddpm_model_free(ddpm_model *m) {
    if (m) m->ops->destroy(m);
}

int ddpm_model_reserve(ddpm_model *m, int B) {
    if (B < 1) return ddpm_fail(DDPM_ERR_INVALID, "batch size must be at least 1 (got %d)", B);
    if (B <= m->max_batch) return DDPM_OK;
    return m->ops->reserve(m, B);
}

ddpm_model *ddpm_model_new(const ddpm_model_ops *ops, size_t impl_size) {
    ddpm_model *m = ddpm_alloc(1, sizeof *m);
    void *impl = ddpm_alloc(1, impl_size);
    if (!m || !impl) {
        free(m);
        free(impl);
        return NULL;
    }
    m->ops = ops;
    m->impl = impl;
    return m;
}

void ddpm_model_free_common(ddpm_model *m) {
    if (!m) return;
    free(m->tensors);
    free(m->params);
    free(m->grads);
    free(m->buffers);
    free(m->config_json);
    free(m);
}

void ddpm_model_param_handles(ddpm_model *m, ddpm_param *h, float *grads) {
    for (size_t i = 0; i < m->n_tensors; i++) {
        const ddpm_param_info *t = &m->tensors[i];
        h[i].w = ddpm_w(m, (int)i);
        h[i].g = t->is_buffer ? NULL : grads + t->offset;
        h[i].ndim = t->ndim;
        for (int k = 0; k < 4; k++) h[i].shape[k] = k < t->ndim ? (int)t->shape[k] : 0;
    }
}

size_t ddpm_model_weight_count(const ddpm_model *m) {
    size_t n = 0;
    for (size_t i = 0; i < m->n_tensors; i++)
        if (!m->tensors[i].is_buffer) n += m->tensors[i].numel;
    return n;
}

const ddpm_param_info *ddpm_model_find(const ddpm_model *m, const char *name) {
    for (size_t i = 0; i < m->n_tensors; i++)
        if (strcmp(m->tensors[i].name, name) == 0) return &m->tensors[i];
    return NULL;
}

float *ddpm_model_tensor_data(ddpm_model *m, const ddpm_param_info *p) {
    return (p->is_buffer ? m->buffers : m->params) + p->offset;
}

/* ---- parameter tables ----------------------------------------------------------------------- */

int ddpm_pt_add(ddpm_param_table *pt, int is_buffer, int64_t d0, int64_t d1, int64_t d2,
                int64_t d3, const char *fmt, ...) {
    if (pt->failed) return -1;
    if (pt->n == pt->cap) {
        size_t cap = pt->cap ? pt->cap * 2 : 64;
        ddpm_param_info *v = realloc(pt->v, cap * sizeof *v);
        if (!v) {
            pt->failed = 1;
            ddpm_fail(DDPM_ERR_NOMEM, "out of memory");
            return -1;
        }
        pt->v = v;
        pt->cap = cap;
    }
    ddpm_param_info *p = &pt->v[pt->n];
    memset(p, 0, sizeof *p);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(p->name, sizeof p->name, fmt, ap);
    va_end(ap);
    const int64_t d[4] = {d0, d1, d2, d3};
    p->numel = 1;
    for (int k = 0; k < 4 && d[k] > 0; k++) {
        p->shape[p->ndim++] = d[k];
        p->numel *= (size_t)d[k];
    }
    p->is_buffer = is_buffer;
    return (int)pt->n++;
}

ddpm_bn_tensors ddpm_pt_batchnorm(ddpm_param_table *pt, int c, const char *name) {
    ddpm_bn_tensors n;
    n.w = DDPM_PARAM(pt, c, 0, 0, 0, "%s.weight", name);
    n.b = DDPM_PARAM(pt, c, 0, 0, 0, "%s.bias", name);
    n.rm = DDPM_BUFFER(pt, c, 0, 0, 0, "%s.running_mean", name);
    n.rv = DDPM_BUFFER(pt, c, 0, 0, 0, "%s.running_var", name);
    return n;
}

void ddpm_param_table_free(ddpm_param_table *pt) {
    free(pt->v);
    memset(pt, 0, sizeof *pt);
}

int ddpm_model_alloc_params(ddpm_model *m, ddpm_param_table *pt) {
    if (pt->failed) {
        ddpm_param_table_free(pt);
        return DDPM_ERR_NOMEM;
    }
    if (limit_why) {
        size_t weights = 0;
        for (size_t i = 0; i < pt->n; i++) weights += pt->v[i].numel;
        if (weights > limit_weights || m->sample_numel > limit_item) {
            ddpm_param_table_free(pt);
            return weights > limit_weights
                       ? ddpm_fail(DDPM_ERR_FORMAT,
                                   "the %s model config describes %zu weights, more than the %zu %s",
                                   m->ops->kind, weights, limit_weights, limit_why)
                       : ddpm_fail(DDPM_ERR_FORMAT,
                                   "the %s model config describes items of %zu values, more than "
                                   "the %zu a model read from a file may take",
                                   m->ops->kind, m->sample_numel, limit_item);
        }
    }
    size_t np = 0, nb = 0;
    for (size_t i = 0; i < pt->n; i++) {
        size_t *acc = pt->v[i].is_buffer ? &nb : &np;
        pt->v[i].offset = *acc;
        *acc += (pt->v[i].numel + 15) / 16 * 16;
    }
    m->tensors = pt->v;
    m->n_tensors = pt->n;
    pt->v = NULL;
    pt->n = pt->cap = 0;
    m->n_params = np;
    m->n_buffers = nb;
    m->params = ddpm_alloc_aligned(np, sizeof(float));
    m->grads = ddpm_alloc_aligned(np, sizeof(float));
    m->buffers = nb ? ddpm_alloc_aligned(nb, sizeof(float)) : NULL;
    if (!m->params || !m->grads || (nb && !m->buffers)) return DDPM_ERR_NOMEM;
    return DDPM_OK;
}

void ddpm_init_uniform(ddpm_model *m, int i, float bound, uint64_t seed) {
    float *w = ddpm_w(m, i);
    size_t n = m->tensors[i].numel;
    ddpm_randu(seed, DDPM_STREAM_INIT, (uint64_t)i, 0, w, n);
    for (size_t k = 0; k < n; k++) w[k] = (2.0f * w[k] - 1.0f) * bound;
}

void ddpm_init_normal(ddpm_model *m, int i, float std, uint64_t seed) {
    float *w = ddpm_w(m, i);
    size_t n = m->tensors[i].numel;
    ddpm_randn(seed, DDPM_STREAM_INIT, (uint64_t)i, 0, w, n);
    for (size_t k = 0; k < n; k++) w[k] *= std;
}

void ddpm_init_const(ddpm_model *m, int i, float value) {
    float *w = ddpm_w(m, i);
    for (size_t k = 0; k < m->tensors[i].numel; k++) w[k] = value;
}

void ddpm_init_fan_in(ddpm_model *m, int w, int b, uint64_t seed) {
    const ddpm_param_info *t = &m->tensors[w];
    double fan_in = (double)t->shape[1];
    for (int k = 2; k < t->ndim; k++) fan_in *= (double)t->shape[k];
    const float bound = (float)(1.0 / sqrt(fan_in));
    ddpm_init_uniform(m, w, bound, seed);
    ddpm_init_uniform(m, b, bound, seed);
}

void ddpm_init_batchnorm(ddpm_model *m, ddpm_bn_tensors n) {
    ddpm_init_const(m, n.w, 1.0f);
    ddpm_init_const(m, n.b, 0.0f);
    ddpm_init_const(m, n.rm, 0.0f);
    ddpm_init_const(m, n.rv, 1.0f);
}

/* ---- config helpers ------------------------------------------------------------------------- */

int ddpm_json_check_keys(const cJSON *o, const char *kind, const char *const *known, size_t n) {
    for (const cJSON *e = o ? o->child : NULL; e; e = e->next) {
        size_t k = 0;
        while (k < n && strcmp(e->string, known[k]) != 0) k++;
        if (k < n) continue;
        char list[512] = "";
        for (k = 0; k < n; k++) {
            if (k) strncat(list, ", ", sizeof list - strlen(list) - 1);
            strncat(list, known[k], sizeof list - strlen(list) - 1);
        }
        return ddpm_fail(DDPM_ERR_INVALID, "model config: unknown key \"%s\" for %s (known: %s)",
                         e->string, kind, list);
    }
    return DDPM_OK;
}

int ddpm_json_int(const cJSON *o, const char *key, int def, int lo, int hi, int *out) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    if (!v) {
        *out = def;
        return DDPM_OK;
    }
    if (!cJSON_IsNumber(v) || v->valuedouble != floor(v->valuedouble))
        return ddpm_fail(DDPM_ERR_INVALID, "model config: \"%s\" must be an integer", key);
    if (v->valuedouble < lo || v->valuedouble > hi)
        return ddpm_fail(DDPM_ERR_INVALID, "model config: \"%s\" must be in %d..%d (got %g)", key,
                         lo, hi, v->valuedouble);
    *out = (int)v->valuedouble;
    return DDPM_OK;
}

int ddpm_json_float(const cJSON *o, const char *key, double def, double lo, double hi, double *out) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    if (!v) {
        *out = def;
        return DDPM_OK;
    }
    if (!cJSON_IsNumber(v) || !(v->valuedouble >= lo && v->valuedouble <= hi))
        return ddpm_fail(DDPM_ERR_INVALID, "model config: \"%s\" must be a number in [%g, %g]", key,
                         lo, hi);
    *out = v->valuedouble;
    return DDPM_OK;
}

int ddpm_json_string(const cJSON *o, const char *key, const char *def, const char **out) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    if (!v) {
        *out = def;
        return DDPM_OK;
    }
    if (!cJSON_IsString(v))
        return ddpm_fail(DDPM_ERR_INVALID, "model config: \"%s\" must be a string", key);
    *out = v->valuestring;
    return DDPM_OK;
}

int ddpm_json_int_list(const cJSON *o, const char *key, const int *def, int n_def, int max,
                       int *out, int *n) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    if (!v) {
        memcpy(out, def, sizeof(int) * (size_t)n_def);
        *n = n_def;
        return DDPM_OK;
    }
    int k = cJSON_GetArraySize(v);
    if (!cJSON_IsArray(v) || k < 1 || k > max)
        return ddpm_fail(DDPM_ERR_INVALID, "model config: \"%s\" must be a list of 1..%d integers",
                         key, max);
    for (int i = 0; i < k; i++) {
        const cJSON *e = cJSON_GetArrayItem(v, i);
        /* range first: converting 1e74 to int is undefined behaviour */
        if (!cJSON_IsNumber(e) || e->valuedouble < 0 || e->valuedouble > INT_MAX ||
            e->valuedouble != floor(e->valuedouble))
            return ddpm_fail(DDPM_ERR_INVALID,
                             "model config: \"%s\"[%d] must be a non-negative integer up to %d", key,
                             i, INT_MAX);
        out[i] = (int)e->valuedouble;
    }
    *n = k;
    return DDPM_OK;
}

/* ---- loading weights by name ---------------------------------------------------------------- */

int ddpm_check_finite(const float *v, size_t n, const char *path, const char *name) {
    for (size_t i = 0; i < n; i++)
        if (!isfinite(v[i]))
            return ddpm_fail(DDPM_ERR_FORMAT, "%s: tensor '%s' holds %s at element %zu (a diverged "
                             "or corrupted model)", path, name, isnan(v[i]) ? "NaN" : "an infinity", i);
    return DDPM_OK;
}

int ddpm_shape_str(char *buf, size_t n, int ndim, const int64_t *shape) {
    int k = snprintf(buf, n, "[");
    for (int i = 0; i < ndim && (size_t)k < n; i++)
        k += snprintf(buf + k, n - (size_t)k, i ? ", %lld" : "%lld", (long long)shape[i]);
    return (size_t)k < n ? k + snprintf(buf + k, n - (size_t)k, "]") : k;
}

int ddpm_model_load_tensors(ddpm_model *m, const ddpm_safetensors *st, const char *prefix,
                            const char *path) {
    const size_t plen = prefix ? strlen(prefix) : 0;
    char key[300];
    for (size_t i = 0; i < m->n_tensors; i++) {
        const ddpm_param_info *p = &m->tensors[i];
        snprintf(key, sizeof key, "%s%s", prefix ? prefix : "", p->name);
        const ddpm_tensor *t = ddpm_safetensors_find(st, key);
        if (!t) {
            /* PyTorch keeps num_batches_tracked for BatchNorm; tolerate its absence too. */
            return ddpm_fail(DDPM_ERR_FORMAT,
                             "%s: tensor '%s' of the %s model is missing (the file holds %zu "
                             "tensors: is it a checkpoint of another model or configuration?)",
                             path, key, m->ops->kind, st->n_tensors);
        }
        int same = t->ndim == p->ndim;
        for (int k = 0; same && k < p->ndim; k++) same = t->shape[k] == p->shape[k];
        if (!same) {
            char a[96], b[96];
            ddpm_shape_str(a, sizeof a, t->ndim, t->shape);
            ddpm_shape_str(b, sizeof b, p->ndim, p->shape);
            return ddpm_fail(DDPM_ERR_FORMAT, "%s: tensor '%s' has shape %s, the model expects %s",
                             path, key, a, b);
        }
        float *dst = ddpm_model_tensor_data(m, p);
        int rc = ddpm_tensor_to_f32(t, dst);
        if (rc) return ddpm_fail(rc, "%s: %s", path, ddpm_last_error());
        if ((rc = ddpm_check_finite(dst, p->numel, path, key))) return rc;
    }
    /* Every tensor under the prefix must belong to the model. */
    for (size_t i = 0; i < st->n_tensors; i++) {
        const char *name = st->tensors[i].name;
        if (plen ? strncmp(name, prefix, plen) != 0 : strchr(name, ':') != NULL) continue;
        if (!plen && (strncmp(name, "ema.", 4) == 0 || strncmp(name, "adam_m.", 7) == 0 ||
                      strncmp(name, "adam_v.", 7) == 0))
            continue;
        if (!ddpm_model_find(m, name + plen)) {
            const char *suffix = strrchr(name, '.');
            if (suffix && strcmp(suffix, ".num_batches_tracked") == 0) continue;
            return ddpm_fail(DDPM_ERR_FORMAT,
                             "%s: tensor '%s' is not part of the %s model (a checkpoint of another "
                             "model or configuration?)",
                             path, name, m->ops->kind);
        }
    }
    return DDPM_OK;
}

/* ---- sampling callback with guidance ------------------------------------------------------- */

int ddpm_model_sampler_init(ddpm_model_sampler *ms, ddpm_model *m, int B) {
    memset(ms, 0, sizeof *ms);
    ms->model = m;
    if (m->n_classes > 0) /* its output is logits, not a noise prediction */
        return ddpm_fail(DDPM_ERR_INVALID, "a %s is not a diffusion model: it cannot sample", m->ops->kind);
    const int cap = 2 * B;
    int rc = ddpm_model_reserve(m, cap);
    if (rc) return rc;
    /* three [2B, d] regions: inputs, self-conditioning inputs, outputs */
    ms->buf_ = ddpm_alloc_aligned(ddpm_size_mul((size_t)cap, m->sample_numel * 3), sizeof(float));
    ms->cbuf_ = ddpm_alloc((size_t)cap * (size_t)(m->cond_dim > 0 ? m->cond_dim : 1), sizeof(float));
    ms->tbuf_ = ddpm_alloc((size_t)cap, sizeof(int));
    if (!ms->buf_ || !ms->cbuf_ || !ms->tbuf_) {
        ddpm_model_sampler_free(ms);
        return DDPM_ERR_NOMEM;
    }
    ms->capacity_ = B;
    return DDPM_OK;
}

void ddpm_model_sampler_free(ddpm_model_sampler *ms) {
    free(ms->buf_);
    free(ms->cbuf_);
    free(ms->tbuf_);
    memset(ms, 0, sizeof *ms);
}

int ddpm_model_denoise(void *ctx, const float *x, int B, int t, const float *x0_prev, float *out) {
    ddpm_model_sampler *ms = ctx;
    ddpm_model *m = ms->model;
    if (B > ms->capacity_)
        return ddpm_fail(DDPM_ERR_INVALID, "sampler batch %d exceeds its capacity %d", B, ms->capacity_);
    const size_t d = m->sample_numel;
    const int guided = ms->guidance != 0.0f && ms->cond && m->cond_dim > 0;
    const int n = guided ? 2 * B : B;
    for (int i = 0; i < n; i++) ms->tbuf_[i] = t;
    ddpm_model_input in = {.x = x, .t = ms->tbuf_, .B = n, .train = 0};
    const size_t cap = 2 * (size_t)ms->capacity_ * d;
    float *xs = ms->buf_, *sc = ms->buf_ + cap, *both = ms->buf_ + 2 * cap;
    if (m->self_cond) {
        /* Self-conditioning: the previous x_0 estimate, zeros at the first step. */
        for (int r = 0; r < n / B; r++) {
            if (x0_prev)
                memcpy(sc + (size_t)r * B * d, x0_prev, sizeof(float) * B * d);
            else
                memset(sc + (size_t)r * B * d, 0, sizeof(float) * B * d);
        }
        in.self_cond = sc;
    }
    if (m->cond_dim > 0) {
        const size_t cd = (size_t)m->cond_dim;
        if (ms->cond)
            memcpy(ms->cbuf_, ms->cond, sizeof(float) * B * cd);
        else
            memset(ms->cbuf_, 0, sizeof(float) * B * cd);
        if (guided) memset(ms->cbuf_ + (size_t)B * cd, 0, sizeof(float) * B * cd);
        in.cond = ms->cbuf_;
    }
    if (!guided) return m->ops->forward(m, &in, out);
    /* Classifier-free guidance: one batch of 2B, conditional rows then unconditional rows. */
    memcpy(xs, x, sizeof(float) * B * d);
    memcpy(xs + (size_t)B * d, x, sizeof(float) * B * d);
    in.x = xs;
    int rc = m->ops->forward(m, &in, both);
    if (rc) return rc;
    const float w = ms->guidance;
    const float *c = both, *u = both + (size_t)B * d;
    for (size_t k = 0; k < (size_t)B * d; k++) out[k] = (1.0f + w) * c[k] - w * u[k];
    return DDPM_OK;
}

int ddpm_model_save_tensors(const char *path, const ddpm_model *m) {
    ddpm_tensor *ts = ddpm_alloc(m->n_tensors ? m->n_tensors : 1, sizeof(ddpm_tensor));
    if (!ts) return ddpm_fail(DDPM_ERR_NOMEM, "out of memory");
    for (size_t i = 0; i < m->n_tensors; i++) {
        const ddpm_param_info *p = &m->tensors[i];
        ts[i] = (ddpm_tensor){.name = (char *)p->name, .dtype = DDPM_DT_F32, .ndim = p->ndim,
                              .numel = p->numel, .nbytes = p->numel * sizeof(float),
                              .data = (p->is_buffer ? m->buffers : m->params) + p->offset};
        for (int k = 0; k < p->ndim; k++) ts[i].shape[k] = p->shape[k];
    }
    const char *mk[1] = {"format"}, *mv[1] = {"pt"};
    const int rc = ddpm_safetensors_write(path, ts, m->n_tensors, mk, mv, 1);
    free(ts);
    return rc;
}

/* classifier.c - a small image classifier written once on the tape, whose penultimate layer gives
 * the features of the sample-quality metrics (report/image_metrics.c): the Frechet distance, KID
 * and precision/recall of a data set's own classifier (Inception weights cannot be shipped).
 *
 *   for i in 0..L-1:  x = maxpool2(relu(bn_i(conv_i(x))))   blocks.i: Conv2d(3x3, pad 1, no bias)
 *                                                           then BatchNorm2d; H -> floor(H / 2)
 *   f      = relu(fc(flatten(x)))                           fc: Linear(ch[L-1] H_L^2, features)
 *   logits = head(f)                                        head: Linear(features, classes)
 *
 * The convolutions carry no bias (a batch norm follows, which would cancel it). Batch norm in
 * training makes items interact, so a batch runs as one slice (models/tape_net.c); eval forwards
 * run in chunks. Parameter names and order are the PyTorch twin's state_dict
 * (scripts/fixtures/gen_classifier.py; nn.Sequential(conv, bn, ReLU, MaxPool2d) per block). */
#include "core/json.h"
#include "models/model_internal.h"

#include <math.h>

typedef struct {
    int w;
    ddpm_bn_tensors bn;
} cls_block;

/* The tape net comes first (see models/model_internal.h). */
typedef struct {
    ddpm_tape_net tn;
    ddpm_classifier_config cfg;
    cls_block blocks[DDPM_CLASSIFIER_MAX_BLOCKS];
    int fc_w, fc_b, head_w, head_b;
    float *feat_dst; /* eval forwards: where the record function copies the features, or NULL */
} cls_net;

/* The side of the last block's output (each block halves, rounding down). */
static int final_side(const ddpm_classifier_config *c) {
    int h = c->height;
    for (int i = 0; i < c->n_blocks; i++) h /= 2;
    return h;
}

static size_t flat_features(const ddpm_classifier_config *c) {
    const size_t h = (size_t)final_side(c);
    return (size_t)c->channels[c->n_blocks - 1] * h * h;
}

/* The activations one item keeps in an eval forward: per block conv, bn, relu (at H) and the
 * pooled output, then the two linear layers. */
static size_t eval_item_floats(const ddpm_classifier_config *c) {
    size_t n = (size_t)c->in_channels * c->height * c->height, h = (size_t)c->height;
    for (int i = 0; i < c->n_blocks; i++) {
        n += 3 * (size_t)c->channels[i] * h * h;
        h /= 2;
        n += (size_t)c->channels[i] * h * h;
    }
    return n + 2 * (size_t)c->features + (size_t)c->classes;
}

/* Forward multiply-adds x 2 per item: the convolutions and the two linear layers. */
static double item_flops(const ddpm_classifier_config *c) {
    double f = 0, h = c->height;
    int cin = c->in_channels;
    for (int i = 0; i < c->n_blocks; i++) {
        f += 2.0 * 9.0 * cin * c->channels[i] * h * h;
        cin = c->channels[i];
        h = (double)((int)h / 2);
    }
    return f + 2.0 * (double)flat_features(c) * c->features + 2.0 * c->features * c->classes;
}

/* ---- the parameter table, in the PyTorch module's state_dict order --------------------------- */

static void declare(cls_net *p, ddpm_param_table *pt) {
    const ddpm_classifier_config *c = &p->cfg;
    char name[48];
    int cin = c->in_channels;
    for (int i = 0; i < c->n_blocks; i++) {
        p->blocks[i].w = DDPM_PARAM(pt, c->channels[i], cin, 3, 3, "blocks.%d.0.weight", i);
        snprintf(name, sizeof name, "blocks.%d.1", i);
        p->blocks[i].bn = ddpm_pt_batchnorm(pt, c->channels[i], name);
        cin = c->channels[i];
    }
    p->fc_w = DDPM_PARAM(pt, c->features, (int64_t)flat_features(c), 0, 0, "fc.weight");
    p->fc_b = DDPM_PARAM(pt, c->features, 0, 0, 0, "fc.bias");
    p->head_w = DDPM_PARAM(pt, c->classes, c->features, 0, 0, "head.weight");
    p->head_b = DDPM_PARAM(pt, c->classes, 0, 0, 0, "head.bias");
}

/* PyTorch's defaults: Conv2d and Linear U(+-1/sqrt(fan_in)), BatchNorm2d 1, 0, 0, 1. */
static void init_all(ddpm_model *m, cls_net *p, uint64_t seed) {
    for (int i = 0; i < p->cfg.n_blocks; i++) {
        const ddpm_param_info *t = &m->tensors[p->blocks[i].w];
        ddpm_init_uniform(m, p->blocks[i].w, (float)(1.0 / sqrt((double)(t->shape[1] * 9))), seed);
        ddpm_init_batchnorm(m, p->blocks[i].bn);
    }
    ddpm_init_fan_in(m, p->fc_w, p->fc_b, seed);
    ddpm_init_fan_in(m, p->head_w, p->head_b, seed);
}

/* ---- the forward, on the tape ---------------------------------------------------------------- */

/* Items [b0, b0 + nb): the logits [nb, classes]; in eval mode with feat_dst set, the features
 * of these items are copied to their rows of feat_dst. */
static ddpm_var *cls_record(ddpm_model *m, ddpm_tape *t, const ddpm_param *prm,
                            const ddpm_model_input *in, int b0, int nb) {
    cls_net *p = m->impl;
    const ddpm_classifier_config *c = &p->cfg;
    ddpm_var *h = ddpm_tape_input(t, in->x + (size_t)b0 * m->sample_numel, 4,
                                  (int[]){nb, c->in_channels, c->height, c->height}, 0);
    for (int i = 0; i < c->n_blocks; i++) {
        const cls_block *k = &p->blocks[i];
        h = ddpm_tape_conv2d(t, h, &prm[k->w], NULL, 1, 1);
        h = ddpm_tape_batchnorm(t, h, &prm[k->bn.w], &prm[k->bn.b], prm[k->bn.rm].w,
                                prm[k->bn.rv].w);
        h = ddpm_tape_maxpool2d(t, ddpm_tape_relu(t, h), 2, 2);
    }
    ddpm_var *f = ddpm_tape_relu(t, ddpm_tape_linear(t, h, &prm[p->fc_w], &prm[p->fc_b]));
    if (f && !in->train && p->feat_dst)
        memcpy(p->feat_dst + (size_t)b0 * c->features, f->data, sizeof(float) * f->numel);
    return ddpm_tape_linear(t, f, &prm[p->head_w], &prm[p->head_b]);
}

static int cls_forward(ddpm_model *m, const ddpm_model_input *in, float *out) {
    int rc = ddpm_tape_net_begin(m, in);
    if (rc) return rc;
    return ddpm_tape_net_run(m, in, out, cls_record);
}

int ddpm_classifier_forward_eval(ddpm_model *m, const float *x, int B, float *features,
                                 float *logits) {
    if (!m || m->n_classes <= 0)
        return ddpm_fail(DDPM_ERR_INVALID, "%s is not a classifier", m ? m->ops->kind : "(null)");
    if (B < 1) return ddpm_fail(DDPM_ERR_INVALID, "classifier: no images (B = %d)", B);
    int rc = ddpm_model_reserve(m, B);
    if (rc) return rc;
    cls_net *p = m->impl;
    float *out = logits ? logits : ddpm_alloc((size_t)B * m->n_classes, sizeof(float));
    if (!out) return DDPM_ERR_NOMEM;
    ddpm_model_input in = {.x = x, .B = B, .train = 0};
    p->feat_dst = features;
    rc = cls_forward(m, &in, out);
    p->feat_dst = NULL;
    if (out != logits) free(out);
    return rc;
}

int ddpm_classifier_feature_dim(const ddpm_model *m) {
    if (!m || m->n_classes <= 0) return 0;
    const cls_net *p = m->impl;
    return p->cfg.features;
}

/* ---- the model interface --------------------------------------------------------------------- */

static int cls_reserve(ddpm_model *m, int B) {
    /* Activations live in the tape's arena (see models/tape_net.c). */
    m->max_batch = B;
    return DDPM_OK;
}

static void cls_destroy(ddpm_model *m) {
    if (!m) return;
    cls_net *p = m->impl;
    if (p) {
        ddpm_tape_net_free(&p->tn);
        free(p);
    }
    ddpm_model_free_common(m);
}

static const ddpm_model_ops cls_ops = {"classifier", cls_forward, ddpm_tape_net_backward,
                                       cls_reserve, cls_destroy};

void ddpm_classifier_config_default(ddpm_classifier_config *c) {
    memset(c, 0, sizeof *c);
    c->in_channels = 1;
    c->height = 28;
    c->channels[0] = 32;
    c->channels[1] = 64;
    c->channels[2] = 64;
    c->n_blocks = 3;
    c->features = 128;
    c->classes = 10;
}

static int read_config(const cJSON *j, ddpm_classifier_config *c) {
    static const char *const known[] = {"kind", "in_channels", "height", "channels", "features",
                                        "classes"};
    ddpm_classifier_config d;
    ddpm_classifier_config_default(&d);
    int rc;
    if ((rc = ddpm_json_check_keys(j, "classifier", known, sizeof known / sizeof known[0])) ||
        (rc = ddpm_json_int(j, "in_channels", d.in_channels, 1, 4096, &c->in_channels)) ||
        (rc = ddpm_json_int(j, "height", d.height, 2, 1 << 14, &c->height)) ||
        (rc = ddpm_json_int(j, "features", d.features, 1, 1 << 16, &c->features)) ||
        (rc = ddpm_json_int(j, "classes", d.classes, 2, 1 << 16, &c->classes)) ||
        (rc = ddpm_json_int_list(j, "channels", d.channels, d.n_blocks, DDPM_CLASSIFIER_MAX_BLOCKS,
                                 c->channels, &c->n_blocks)))
        return rc;
    if (c->n_blocks < 1)
        return ddpm_fail(DDPM_ERR_INVALID, "model config: \"channels\" needs at least 1 block");
    for (int i = 0; i < c->n_blocks; i++)
        if (c->channels[i] < 1 || c->channels[i] > 65536)
            return ddpm_fail(DDPM_ERR_INVALID,
                             "model config: \"channels\"[%d] must be in 1..65536 (got %d)", i,
                             c->channels[i]);
    if (final_side(c) < 1)
        return ddpm_fail(DDPM_ERR_INVALID,
                         "model config: \"height\" %d is too small for %d blocks (each halves it; "
                         "at least %d)",
                         c->height, c->n_blocks, 1 << c->n_blocks);
    return DDPM_OK;
}

/* The config as stored in files: every field, in this order. */
char *ddpm_classifier_config_json(const ddpm_classifier_config *c) {
    cJSON *o = cJSON_CreateObject();
    if (!o) return NULL;
    cJSON_AddStringToObject(o, "kind", "classifier");
    cJSON_AddNumberToObject(o, "in_channels", c->in_channels);
    cJSON_AddNumberToObject(o, "height", c->height);
    cJSON_AddItemToObject(o, "channels", cJSON_CreateIntArray(c->channels, c->n_blocks));
    cJSON_AddNumberToObject(o, "features", c->features);
    cJSON_AddNumberToObject(o, "classes", c->classes);
    return ddpm_json_print_and_free(o);
}

int ddpm_classifier_create(const void *config_cjson, uint64_t seed, ddpm_model **out) {
    *out = NULL;
    ddpm_classifier_config c;
    int rc = read_config(config_cjson, &c);
    if (rc) return rc;
    ddpm_model *m = ddpm_model_new(&cls_ops, sizeof(cls_net));
    if (!m) return DDPM_ERR_NOMEM;
    cls_net *p = m->impl;
    p->cfg = c;
    m->n_classes = c.classes;
    ddpm_param_table pt = {0};
    declare(p, &pt);
    rc = ddpm_tape_net_init_image(m, c.in_channels, c.height, c.height, 0, ddpm_classifier_config_json(&c),
                                  &pt);
    if (rc) {
        cls_destroy(m);
        return rc;
    }
    p->tn.eval_item_floats = eval_item_floats(&c);
    p->tn.item_flops = item_flops(&c);
    init_all(m, p, seed);
    m->max_batch = 1;
    *out = m;
    return DDPM_OK;
}

/* ---- the classifier file ----------------------------------------------------------------------
 * A safetensors file of the model's tensors (state_dict names) with metadata "format":
 * "ddpm-classifier", "format_version", "model" (the config JSON) and the caller's keys (its test
 * accuracy, data, command). */

#define CLS_FORMAT "ddpm-classifier"
#define CLS_FORMAT_VERSION "1"

int ddpm_classifier_save(const char *path, const ddpm_model *m, const char *const *keys,
                         const char *const *values, size_t n_meta) {
    if (m->n_classes <= 0) return ddpm_fail(DDPM_ERR_INVALID, "a %s is not a classifier", m->ops->kind);
    ddpm_tensor *ts = ddpm_alloc(m->n_tensors, sizeof *ts);
    const char **k = ddpm_alloc(n_meta + 4, sizeof *k), **v = ddpm_alloc(n_meta + 4, sizeof *v);
    int rc = DDPM_OK;
    if (!ts || !k || !v) rc = DDPM_ERR_NOMEM;
    for (size_t i = 0; !rc && i < m->n_tensors; i++) {
        const ddpm_param_info *p = &m->tensors[i];
        ts[i].name = (char *)p->name;
        ts[i].dtype = DDPM_DT_F32;
        ts[i].ndim = p->ndim;
        memcpy(ts[i].shape, p->shape, sizeof(int64_t) * 4);
        ts[i].data = (p->is_buffer ? m->buffers : m->params) + p->offset;
    }
    if (!rc) {
        k[0] = "format", v[0] = CLS_FORMAT;
        k[1] = "format_version", v[1] = CLS_FORMAT_VERSION;
        k[2] = "ddpm_version", v[2] = DDPM_VERSION;
        k[3] = "model", v[3] = m->config_json;
        for (size_t i = 0; i < n_meta; i++) k[4 + i] = keys[i], v[4 + i] = values[i];
        rc = ddpm_safetensors_write(path, ts, m->n_tensors, k, v, n_meta + 4);
    }
    free(ts);
    free(k);
    free(v);
    return rc;
}

int ddpm_classifier_load(const char *path, ddpm_model **out, ddpm_safetensors *st_out) {
    *out = NULL;
    ddpm_safetensors st;
    int rc = ddpm_safetensors_read(path, &st);
    if (rc) return rc;
    const char *format = ddpm_safetensors_meta(&st, "format");
    const char *version = ddpm_safetensors_meta(&st, "format_version");
    const char *model = ddpm_safetensors_meta(&st, "model");
    if (!format || strcmp(format, CLS_FORMAT) != 0 || !model) {
        cJSON *j = model ? cJSON_Parse(model) : NULL;
        const cJSON *kind = j ? cJSON_GetObjectItemCaseSensitive(j, "kind") : NULL;
        if (format && strcmp(format, "ddpm") == 0 && cJSON_IsString(kind))
            rc = ddpm_fail(DDPM_ERR_FORMAT,
                           "%s: a ddpm checkpoint of a diffusion model (%.40s), not a classifier "
                           "(train one with `ddpm classifier train`)",
                           path, kind->valuestring);
        else
            rc = ddpm_fail(DDPM_ERR_FORMAT,
                           "%s: not a ddpm classifier file (no \"format\": \"" CLS_FORMAT
                           "\" metadata; train one with `ddpm classifier train`)",
                           path);
        cJSON_Delete(j);
    } else if (!version || strcmp(version, CLS_FORMAT_VERSION) != 0) {
        rc = ddpm_fail(DDPM_ERR_FORMAT, "%s: classifier format version %s, this ddpm reads %s", path,
                       version ? version : "(none)", CLS_FORMAT_VERSION);
    }
    size_t file_floats = 0;
    for (size_t i = 0; i < st.n_tensors; i++)
        if (st.tensors[i].dtype <= DDPM_DT_BF16) file_floats += st.tensors[i].numel;
    ddpm_model *m = NULL;
    if (!rc && (rc = ddpm_model_create_bounded(model, 0, file_floats, (size_t)1 << 26,
                                               "float values the file holds", &m)))
        rc = ddpm_fail(rc, "%s: %s", path, ddpm_last_error());
    if (!rc && m->n_classes <= 0)
        rc = ddpm_fail(DDPM_ERR_FORMAT, "%s: the model is a %s, not a classifier", path, m->ops->kind);
    if (!rc) rc = ddpm_model_load_tensors(m, &st, NULL, path);
    /* a running variance below 0 would make the eval-mode batch norm NaN */
    for (size_t i = 0; !rc && i < m->n_tensors; i++) {
        const ddpm_param_info *p = &m->tensors[i];
        const float *v = ddpm_model_tensor_data(m, p);
        if (!strstr(p->name, "running_var")) continue;
        for (size_t j = 0; !rc && j < p->numel; j++)
            if (v[j] < 0)
                rc = ddpm_fail(DDPM_ERR_FORMAT, "%s: tensor '%s' holds the negative variance %g", path, p->name, (double)v[j]);
    }
    if (rc || !st_out) ddpm_safetensors_free(&st);
    if (rc) {
        ddpm_model_free(m);
        return rc;
    }
    if (st_out) *st_out = st;
    *out = m;
    return DDPM_OK;
}

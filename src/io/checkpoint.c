/* checkpoint.c - training state in one safetensors file: the model's tensors under their
 * state_dict names, "ema.<name>", "adam_m.<name>", "adam_v.<name>", and metadata holding the model,
 * schedule and training configuration as JSON, so `ddpm sample --ckpt F` needs no other flag and
 * `ddpm train --resume F` continues bitwise where it stopped. */
#include "core/json.h"
#include "models/model_internal.h"

#include <errno.h>
#include <limits.h>
#include <math.h>

#define FORMAT_VERSION "1"
/* The largest item (C * H * W values) a checkpoint's model may take: 2^24, a 4096 x 4096 gray or
 * 2365 x 2365 RGB image, far beyond what trains on a CPU; a config asking for more is refused
 * before the model reserves memory for it. */
#define CHECKPOINT_MAX_ITEM ((size_t)1 << 24)

/* ---- training config as JSON (the schedule's is in diffusion/schedule.c) ---------------------- */

static char *train_config_json(const ddpm_train_config *c) {
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "prediction", ddpm_prediction_name(c->prediction));
    cJSON_AddStringToObject(o, "loss", ddpm_loss_name(c->loss));
    cJSON_AddNumberToObject(o, "min_snr_gamma", c->min_snr_gamma);
    if (c->p2_gamma > 0) {
        cJSON_AddNumberToObject(o, "p2_gamma", c->p2_gamma);
        cJSON_AddNumberToObject(o, "p2_k", c->p2_k);
    }
    if (c->offset_noise > 0) cJSON_AddNumberToObject(o, "offset_noise", c->offset_noise);
    cJSON_AddStringToObject(o, "optimizer", ddpm_optimizer_name(c->optimizer));
    cJSON_AddNumberToObject(o, "lr", c->lr);
    cJSON_AddNumberToObject(o, "beta1", c->beta1);
    cJSON_AddNumberToObject(o, "beta2", c->beta2);
    cJSON_AddNumberToObject(o, "adam_eps", c->adam_eps);
    cJSON_AddNumberToObject(o, "weight_decay", c->weight_decay);
    cJSON_AddNumberToObject(o, "warmup_steps", c->warmup_steps);
    cJSON_AddStringToObject(o, "lr_decay", ddpm_lr_decay_name(c->decay));
    cJSON_AddNumberToObject(o, "min_lr", c->min_lr);
    cJSON_AddNumberToObject(o, "grad_clip", c->grad_clip);
    cJSON_AddNumberToObject(o, "ema_decay", c->ema_decay);
    cJSON_AddBoolToObject(o, "ema_warmup", c->ema_warmup);
    cJSON_AddNumberToObject(o, "batch_size", c->batch_size);
    cJSON_AddNumberToObject(o, "total_steps", (double)c->total_steps);
    char seed[32];
    snprintf(seed, sizeof seed, "%llu", (unsigned long long)c->seed); /* 64 bits: not a double */
    cJSON_AddStringToObject(o, "seed", seed);
    cJSON_AddNumberToObject(o, "cond_drop_prob", c->cond_drop_prob);
    cJSON_AddBoolToObject(o, "self_cond", c->self_cond);
    if (c->microbatch > 0) cJSON_AddNumberToObject(o, "microbatch", c->microbatch);
    return ddpm_json_print_and_free(o);
}

static int train_config_from_json(const char *json, ddpm_train_config *c) {
    ddpm_train_config_default(c);
    cJSON *o = cJSON_Parse(json);
    if (!o || !cJSON_IsObject(o)) {
        cJSON_Delete(o);
        return ddpm_fail(DDPM_ERR_FORMAT, "training config is not a JSON object");
    }
    int rc = DDPM_OK;
    const cJSON *v;
    if (cJSON_IsString(v = cJSON_GetObjectItemCaseSensitive(o, "prediction")))
        rc = rc ? rc : ddpm_prediction_parse(v->valuestring, &c->prediction);
    if (cJSON_IsString(v = cJSON_GetObjectItemCaseSensitive(o, "loss")))
        rc = rc ? rc : ddpm_loss_parse(v->valuestring, &c->loss);
    if (cJSON_IsString(v = cJSON_GetObjectItemCaseSensitive(o, "optimizer")))
        rc = rc ? rc : ddpm_optimizer_parse(v->valuestring, &c->optimizer);
    if (cJSON_IsString(v = cJSON_GetObjectItemCaseSensitive(o, "lr_decay")))
        rc = rc ? rc : ddpm_lr_decay_parse(v->valuestring, &c->decay);
    if (cJSON_IsString(v = cJSON_GetObjectItemCaseSensitive(o, "seed")))
        c->seed = strtoull(v->valuestring, NULL, 10);
    c->min_snr_gamma = (float)ddpm_json_number_or(o, "min_snr_gamma", c->min_snr_gamma);
    c->p2_gamma = (float)ddpm_json_number_or(o, "p2_gamma", c->p2_gamma);
    c->p2_k = (float)ddpm_json_number_or(o, "p2_k", c->p2_k);
    c->offset_noise = (float)ddpm_json_number_or(o, "offset_noise", c->offset_noise);
    c->lr = ddpm_json_number_or(o, "lr", c->lr);
    c->beta1 = ddpm_json_number_or(o, "beta1", c->beta1);
    c->beta2 = ddpm_json_number_or(o, "beta2", c->beta2);
    c->adam_eps = ddpm_json_number_or(o, "adam_eps", c->adam_eps);
    c->weight_decay = ddpm_json_number_or(o, "weight_decay", c->weight_decay);
    int64_t v64 = 0;
    const char *what = "training config";
    if (!rc && !(rc = ddpm_json_integer_or(o, "warmup_steps", c->warmup_steps, 0, INT_MAX, what, &v64)))
        c->warmup_steps = (int)v64;
    c->min_lr = ddpm_json_number_or(o, "min_lr", c->min_lr);
    c->grad_clip = (float)ddpm_json_number_or(o, "grad_clip", c->grad_clip);
    c->ema_decay = (float)ddpm_json_number_or(o, "ema_decay", c->ema_decay);
    c->ema_warmup = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(o, "ema_warmup"));
    if (!rc && !(rc = ddpm_json_integer_or(o, "batch_size", c->batch_size, 1, INT_MAX, what, &v64)))
        c->batch_size = (int)v64;
    /* 2^53: every count up to it is exact in the JSON number */
    if (!rc && !(rc = ddpm_json_integer_or(o, "total_steps", c->total_steps, 0, (int64_t)1 << 53,
                                           what, &v64)))
        c->total_steps = v64;
    c->cond_drop_prob = (float)ddpm_json_number_or(o, "cond_drop_prob", c->cond_drop_prob);
    c->self_cond = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(o, "self_cond"));
    if (!rc && !(rc = ddpm_json_integer_or(o, "microbatch", 0, 0, INT_MAX, what, &v64)))
        c->microbatch = (int)v64;
    cJSON_Delete(o);
    return rc;
}

/* ---- save ------------------------------------------------------------------------------------ */

int ddpm_checkpoint_save(const char *path, const ddpm_trainer *tr, const char *data_json,
                         const char *const *extra_keys, const char *const *extra_values,
                         size_t n_extra) {
    const ddpm_model *m = tr->model;
    size_t n_params = 0;
    for (size_t i = 0; i < m->n_tensors; i++) n_params += !m->tensors[i].is_buffer;
    const size_t n_t = m->n_tensors + n_params * (tr->ema ? 3 : 2);
    ddpm_tensor *ts = ddpm_alloc(n_t, sizeof *ts);
    char (*names)[160] = ddpm_alloc(n_t, sizeof *names);
    char *sched = ddpm_schedule_config_json(tr->schedule);
    char *train = train_config_json(&tr->cfg);
    int rc = DDPM_OK;
    if (!ts || !names || !sched || !train) {
        rc = ddpm_fail(DDPM_ERR_NOMEM, "out of memory");
        goto done;
    }
    size_t k = 0;
    /* The model, then each optimizer-side copy under a prefix. */
    const char *prefixes[4] = {"", "ema.", "adam_m.", "adam_v."};
    const float *sources[4] = {m->params, tr->ema, tr->adam_m, tr->adam_v};
    for (int g = 0; g < 4; g++) {
        if (g > 0 && !sources[g]) continue;
        for (size_t i = 0; i < m->n_tensors; i++) {
            const ddpm_param_info *p = &m->tensors[i];
            if (g > 0 && p->is_buffer) continue;
            snprintf(names[k], sizeof names[k], "%s%s", prefixes[g], p->name);
            ts[k].name = names[k];
            ts[k].dtype = DDPM_DT_F32;
            ts[k].ndim = p->ndim;
            memcpy(ts[k].shape, p->shape, sizeof(int64_t) * 4);
            ts[k].data = (p->is_buffer ? m->buffers : sources[g]) + p->offset;
            k++;
        }
    }
    char step[32], loss[32];
    snprintf(step, sizeof step, "%lld", (long long)tr->step);
    snprintf(loss, sizeof loss, "%.9g", tr->last_loss);
    const char *keys[32] = {"format", "format_version", "ddpm_version", "model", "schedule", "train",
                            "step", "loss", "data"};
    const char *vals[32] = {"ddpm", FORMAT_VERSION, DDPM_VERSION, m->config_json, sched, train,
                            step, loss, data_json ? data_json : "{}"};
    size_t nm = 9;
    for (size_t i = 0; i < n_extra && nm < 32; i++, nm++) {
        keys[nm] = extra_keys[i];
        vals[nm] = extra_values[i];
    }
    rc = ddpm_safetensors_write(path, ts, k, keys, vals, nm);
done:
    free(ts);
    free(names);
    free(sched);
    free(train);
    return rc;
}

/* ---- load ------------------------------------------------------------------------------------ */

void ddpm_checkpoint_free(ddpm_checkpoint *ck) {
    if (!ck) return;
    ddpm_model_free(ck->model);
    ddpm_schedule_free(&ck->schedule);
    free(ck->ema);
    free(ck->adam_m);
    free(ck->adam_v);
    free(ck->data_json);
    ddpm_safetensors_free(&ck->st);
    memset(ck, 0, sizeof *ck);
}

/* Fills dst (n_params, the model's layout) from "<prefix><name>" tensors; *found = 0 if none. */
static int load_copy(const ddpm_checkpoint *ck, const char *prefix, const char *path, float **dst) {
    const ddpm_model *m = ck->model;
    char key[200];
    snprintf(key, sizeof key, "%s%s", prefix, m->tensors[0].name);
    *dst = NULL;
    int any = 0;
    for (size_t i = 0; i < m->n_tensors && !any; i++) {
        snprintf(key, sizeof key, "%s%s", prefix, m->tensors[i].name);
        any = !m->tensors[i].is_buffer && ddpm_safetensors_find(&ck->st, key);
    }
    if (!any) return DDPM_OK;
    float *v = ddpm_alloc_aligned(m->n_params, sizeof(float));
    if (!v) return DDPM_ERR_NOMEM;
    const int second_moment = strcmp(prefix, "adam_v.") == 0;
    for (size_t i = 0; i < m->n_tensors; i++) {
        const ddpm_param_info *p = &m->tensors[i];
        if (p->is_buffer) continue;
        snprintf(key, sizeof key, "%s%s", prefix, p->name);
        const ddpm_tensor *t = ddpm_safetensors_find(&ck->st, key);
        int same = t && t->ndim == p->ndim;
        for (int k = 0; same && k < p->ndim; k++) same = t->shape[k] == p->shape[k];
        if (!same) {
            free(v);
            return ddpm_fail(DDPM_ERR_FORMAT, "%s: tensor '%s' is %s", path, key,
                             t ? "of the wrong shape (not the model's)" : "missing");
        }
        int rc = ddpm_tensor_to_f32(t, v + p->offset);
        if (rc) rc = ddpm_fail(rc, "%s: %s", path, ddpm_last_error());
        if (!rc) rc = ddpm_check_finite(v + p->offset, p->numel, path, key);
        /* Adam's second moment is a running mean of squares: a negative one makes sqrt NaN */
        for (size_t j = 0; !rc && second_moment && j < p->numel; j++)
            if (v[p->offset + j] < 0.0f)
                rc = ddpm_fail(DDPM_ERR_FORMAT, "%s: tensor '%s' holds %g at element %zu (a "
                               "second moment must be >= 0)", path, key, (double)v[p->offset + j], j);
        if (rc) {
            free(v);
            return rc;
        }
    }
    *dst = v;
    return DDPM_OK;
}

/* The "step" metadata: a decimal count >= 0 and nothing else (resuming at a negative or garbled
 * step would index the shuffle and the schedule out of range). */
static int parse_step(const char *path, const char *text, int64_t *out) {
    char *end = NULL;
    errno = 0;
    const long long v = strtoll(text, &end, 10);
    if (end == text || *end || errno == ERANGE || v < 0)
        return ddpm_fail(DDPM_ERR_FORMAT, "%s: metadata \"step\" is \"%.32s\", not a step count >= 0",
                         path, text);
    *out = v;
    return DDPM_OK;
}

int ddpm_checkpoint_load(const char *path, ddpm_checkpoint *ck) {
    memset(ck, 0, sizeof *ck);
    int rc = ddpm_safetensors_read(path, &ck->st);
    if (rc) return rc;
    const char *format = ddpm_safetensors_meta(&ck->st, "format");
    const char *model_json = ddpm_safetensors_meta(&ck->st, "model");
    const char *sched_json = ddpm_safetensors_meta(&ck->st, "schedule");
    if (!format || strcmp(format, "ddpm") != 0 || !model_json || !sched_json) {
        ddpm_checkpoint_free(ck);
        return ddpm_fail(DDPM_ERR_FORMAT,
                         "%s: not a ddpm checkpoint (no ddpm metadata); plain PyTorch weights load "
                         "with --weights and the model and schedule flags",
                         path);
    }
    const char *version = ddpm_safetensors_meta(&ck->st, "format_version");
    if (!version || strcmp(version, FORMAT_VERSION) != 0) {
        rc = ddpm_fail(DDPM_ERR_FORMAT, "%s: checkpoint format version %s, this ddpm reads %s", path,
                       version ? version : "(none)", FORMAT_VERSION);
        ddpm_checkpoint_free(ck);
        return rc;
    }
    /* Every model tensor must be in the file, so it can describe no more weights than the file
     * holds float values: a few hundred bytes of metadata cannot build a 13 GB model. */
    size_t file_floats = 0;
    for (size_t i = 0; i < ck->st.n_tensors; i++)
        if (ck->st.tensors[i].dtype <= DDPM_DT_BF16) file_floats += ck->st.tensors[i].numel;
    if ((rc = ddpm_model_create_bounded(model_json, 0, file_floats, CHECKPOINT_MAX_ITEM,
                                        "float values the file holds", &ck->model))) {
        rc = ddpm_fail(rc, "%s: %s", path, ddpm_last_error());
        ddpm_checkpoint_free(ck);
        return rc;
    }
    if ((rc = ddpm_model_load_tensors(ck->model, &ck->st, NULL, path)) ||
        (rc = ddpm_schedule_from_json(sched_json, &ck->schedule))) {
        if (rc != DDPM_ERR_FORMAT || !strstr(ddpm_last_error(), path))
            rc = ddpm_fail(rc, "%s: %s", path, ddpm_last_error());
        ddpm_checkpoint_free(ck);
        return rc;
    }
    if (ck->schedule.n != ck->model->num_timesteps) {
        rc = ddpm_fail(DDPM_ERR_FORMAT, "%s: the model embeds %d timesteps, the schedule has %d",
                       path, ck->model->num_timesteps, ck->schedule.n);
        ddpm_checkpoint_free(ck);
        return rc;
    }
    const char *train = ddpm_safetensors_meta(&ck->st, "train");
    const char *step = ddpm_safetensors_meta(&ck->st, "step");
    const char *data = ddpm_safetensors_meta(&ck->st, "data");
    ddpm_train_config_default(&ck->train);
    if (train) {
        if ((rc = train_config_from_json(train, &ck->train))) {
            rc = ddpm_fail(rc, "%s: %s", path, ddpm_last_error());
            ddpm_checkpoint_free(ck);
            return rc;
        }
        ck->has_train = 1;
    }
    ck->step = 0;
    if (step && (rc = parse_step(path, step, &ck->step))) {
        ddpm_checkpoint_free(ck);
        return rc;
    }
    if (data && !(ck->data_json = strdup(data))) rc = ddpm_fail(DDPM_ERR_NOMEM, "out of memory");
    if (!rc) rc = load_copy(ck, "ema.", path, &ck->ema);
    if (!rc) rc = load_copy(ck, "adam_m.", path, &ck->adam_m);
    if (!rc) rc = load_copy(ck, "adam_v.", path, &ck->adam_v);
    if (rc) ddpm_checkpoint_free(ck);
    return rc;
}

int ddpm_trainer_restore(ddpm_trainer *tr, const ddpm_checkpoint *ck) {
    ddpm_model *m = tr->model;
    if (m->n_params != ck->model->n_params || strcmp(m->config_json, ck->model->config_json) != 0)
        return ddpm_fail(DDPM_ERR_INVALID, "the checkpoint holds another model configuration");
    if (!ck->adam_m || !ck->adam_v)
        return ddpm_fail(DDPM_ERR_FORMAT, "the checkpoint has no optimizer state to resume from");
    memcpy(m->params, ck->model->params, sizeof(float) * m->n_params);
    if (m->n_buffers) memcpy(m->buffers, ck->model->buffers, sizeof(float) * m->n_buffers);
    memcpy(tr->adam_m, ck->adam_m, sizeof(float) * m->n_params);
    memcpy(tr->adam_v, ck->adam_v, sizeof(float) * m->n_params);
    if (tr->ema) {
        if (!ck->ema) return ddpm_fail(DDPM_ERR_FORMAT, "the checkpoint has no EMA weights");
        memcpy(tr->ema, ck->ema, sizeof(float) * m->n_params);
    }
    tr->step = ck->step;
    return DDPM_OK;
}

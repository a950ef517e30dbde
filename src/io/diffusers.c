/* diffusers.c - diffusers folders in and out: a UNet2DModel with its scheduler, as the pixel DDPM
 * checkpoints ship (google/ddpm-cifar10-32 and the 256-pixel family) and as diffusers'
 * train_unconditional.py saves them.
 *
 * Two layouts load: a pipeline folder (unet/config.json, unet/diffusion_pytorch_model.safetensors
 * or the older diffusion_pytorch_model.bin, scheduler/scheduler_config.json) and the flat one
 * (config.json and the weights at the top,
 * scheduler_config.json beside them if present). The UNet's config.json becomes the config of
 * ddpm's "unet2d" network (models/unet2d.c, which refuses what it does not support by name); the
 * weights load by name, the older attention names (query, key, value, proj_attn) renamed as
 * diffusers renames them; the scheduler config gives the schedule, the prediction type and the
 * sampling defaults (ddpm_diffusers_sampling), every key checked. Writing is the reverse, for a
 * unet2d model: the files UNet2DModel.from_pretrained and DDPMPipeline.from_pretrained read. */
#include "core/json.h"
#include "models/model_internal.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <sys/stat.h>

#define DIFFUSERS_VERSION "0.21.0" /* what an exported config says it was written for */
#define MAX_ITEM ((size_t)1 << 24)

/* ---- small helpers --------------------------------------------------------------------------- */

static char *join(const char *dir, const char *rel) {
    const size_t n = strlen(dir) + strlen(rel) + 2;
    char *p = malloc(n);
    if (p) snprintf(p, n, "%s/%s", dir, rel);
    return p;
}

static int is_file(const char *path) {
    struct stat st;
    return path && stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

/* The JSON object in file path (NULL and the error set on failure). */
static cJSON *read_json(const char *path) {
    unsigned char *data = NULL;
    size_t size = 0;
    if (ddpm_read_file(path, &data, &size)) return NULL;
    cJSON *o = cJSON_ParseWithLength((const char *)data, size);
    free(data);
    if (!cJSON_IsObject(o)) {
        cJSON_Delete(o);
        ddpm_fail(DDPM_ERR_FORMAT, "%s: not a JSON object", path);
        return NULL;
    }
    return o;
}

static int sfail(const char *path, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int sfail(const char *path, const char *fmt, ...) {
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return ddpm_fail(DDPM_ERR_FORMAT, "%s: %s", path, msg);
}

/* ---- the scheduler config --------------------------------------------------------------------- */

/* The keys of DDPMScheduler, DDIMScheduler and PNDMScheduler ddpm maps, and those that are only
 * informational (_class_name, _diffusers_version, tensor_format of the oldest configs,
 * skip_prk_steps: a PNDM detail, its sampler being ddpm's choice). */
static const char *const sched_keys[] = {
    "_class_name", "_diffusers_version", "tensor_format", "num_train_timesteps", "beta_start",
    "beta_end", "beta_schedule", "trained_betas", "variance_type", "clip_sample",
    "clip_sample_range", "prediction_type", "thresholding", "dynamic_thresholding_ratio",
    "sample_max_value", "timestep_spacing", "steps_offset", "set_alpha_to_one",
    "rescale_betas_zero_snr", "skip_prk_steps"};

static int s_number(const cJSON *o, const char *path, const char *key, double def, double lo,
                    double hi, double *out) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    if (!v || cJSON_IsNull(v)) {
        *out = def;
        return DDPM_OK;
    }
    if (!cJSON_IsNumber(v) || !(v->valuedouble >= lo && v->valuedouble <= hi))
        return sfail(path, "\"%s\" must be a number in [%g, %g]", key, lo, hi);
    *out = v->valuedouble;
    return DDPM_OK;
}

static int s_bool(const cJSON *o, const char *path, const char *key, int def, int *out) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    if (!v) {
        *out = def;
        return DDPM_OK;
    }
    if (!cJSON_IsBool(v)) return sfail(path, "\"%s\" must be true or false", key);
    *out = cJSON_IsTrue(v);
    return DDPM_OK;
}

/* The index of o[key] among names[0..n) (def if absent), else an error listing them. */
static int s_choice(const cJSON *o, const char *path, const char *key, int def,
                    const char *const *names, int n, int *out) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    if (!v) {
        *out = def;
        return DDPM_OK;
    }
    for (int i = 0; cJSON_IsString(v) && i < n; i++)
        if (strcmp(v->valuestring, names[i]) == 0) {
            *out = i;
            return DDPM_OK;
        }
    char list[256] = "";
    for (int i = 0; i < n; i++)
        snprintf(list + strlen(list), sizeof list - strlen(list), i ? ", %s" : "%s", names[i]);
    return sfail(path, "\"%s\" %s is not supported (ddpm supports %s)", key,
                 cJSON_IsString(v) ? v->valuestring : "(not a string)", list);
}

static int sched_parse(const cJSON *o, const char *path, ddpm_schedule *s, ddpm_prediction *pred,
                       ddpm_diffusers_sampling *smp) {
    memset(s, 0, sizeof *s);
    int rc;
    for (const cJSON *e = o->child; e; e = e->next) {
        int known = 0;
        for (size_t k = 0; k < sizeof sched_keys / sizeof sched_keys[0]; k++)
            known |= strcmp(e->string, sched_keys[k]) == 0;
        if (!known) return sfail(path, "unknown key \"%s\" (not a setting ddpm maps)", e->string);
        for (const cJSON *f = e->next; f; f = f->next)
            if (strcmp(e->string, f->string) == 0) return sfail(path, "\"%s\" appears twice", e->string);
    }
    static const char *const classes[] = {"DDPMScheduler", "DDIMScheduler", "PNDMScheduler"};
    int cls = 0;
    if ((rc = s_choice(o, path, "_class_name", 0, classes, 3, &cls))) return rc;
    snprintf(smp->scheduler, sizeof smp->scheduler, "%s", classes[cls]);
    smp->sampler = cls == 0 ? DDPM_SAMPLER_DDPM : DDPM_SAMPLER_DDIM;

    double T = 0, bs = 0, be = 0, clip_range = 0, ratio = 0, max_value = 0, offset = 0;
    int kind = 0, var = 0, clip = 0, thr = 0, spacing = 0, pt = 0, alpha_one = 0, zsnr = 0, flag = 0;
    static const char *const kinds[] = {"linear", "scaled_linear", "squaredcos_cap_v2", "sigmoid"};
    static const char *const vars[] = {"fixed_small", "fixed_large"};
    static const char *const spacings[] = {"leading", "trailing", "linspace"};
    static const char *const preds[] = {"epsilon", "sample", "v_prediction"};
    static const char *const formats[] = {"pt", "np", "flax"};
    if ((rc = s_number(o, path, "num_train_timesteps", 1000, 2, 1 << 20, &T)) ||
        (rc = s_number(o, path, "beta_start", 1e-4, 1e-12, 0.999, &bs)) ||
        (rc = s_number(o, path, "beta_end", 0.02, 1e-12, 0.999, &be)) ||
        (rc = s_choice(o, path, "beta_schedule", 0, kinds, 4, &kind)) ||
        (rc = s_choice(o, path, "variance_type", 0, vars, 2, &var)) ||
        (rc = s_bool(o, path, "clip_sample", 1, &clip)) ||
        (rc = s_number(o, path, "clip_sample_range", 1.0, 0.0, 1e30, &clip_range)) ||
        (rc = s_choice(o, path, "prediction_type", 0, preds, 3, &pt)) ||
        (rc = s_bool(o, path, "thresholding", 0, &thr)) ||
        (rc = s_number(o, path, "dynamic_thresholding_ratio", 0.995, 1e-6, 1.0, &ratio)) ||
        (rc = s_number(o, path, "sample_max_value", 1.0, 1.0, 1e30, &max_value)) ||
        (rc = s_choice(o, path, "timestep_spacing", 0, spacings, 3, &spacing)) ||
        (rc = s_number(o, path, "steps_offset", 0, 0, 1e6, &offset)) ||
        (rc = s_bool(o, path, "set_alpha_to_one", cls != 2, &alpha_one)) ||
        (rc = s_bool(o, path, "rescale_betas_zero_snr", 0, &zsnr)) ||
        (rc = s_bool(o, path, "skip_prk_steps", 0, &flag)) ||
        (rc = s_choice(o, path, "tensor_format", 0, formats, 3, &flag)))
        return rc;
    if (T != floor(T)) return sfail(path, "\"num_train_timesteps\" must be an integer");
    if (offset != floor(offset)) return sfail(path, "\"steps_offset\" must be an integer");
    if (clip && !(clip_range > 0.0))
        return sfail(path, "\"clip_sample_range\" must be above 0 with clip_sample");
    ddpm_schedule_config sc;
    double *betas = NULL;
    const cJSON *tb = cJSON_GetObjectItemCaseSensitive(o, "trained_betas");
    if (tb && !cJSON_IsNull(tb)) {
        if (!cJSON_IsArray(tb) || cJSON_GetArraySize(tb) != (int)T)
            return sfail(path, "\"trained_betas\" must be a list of num_train_timesteps (%d) numbers",
                         (int)T);
        ddpm_schedule_config_default(&sc, DDPM_SCHEDULE_CUSTOM, (int)T);
        betas = malloc(sizeof(double) * (size_t)T);
        if (!betas) return ddpm_fail(DDPM_ERR_NOMEM, "out of memory");
        int i = 0;
        for (const cJSON *e = tb->child; e; e = e->next, i++) {
            if (!cJSON_IsNumber(e)) {
                free(betas);
                return sfail(path, "\"trained_betas\"[%d] is not a number", i);
            }
            betas[i] = e->valuedouble;
        }
        sc.betas = betas;
    } else if (kind == 0 || kind == 3) { /* linear, sigmoid: ddpm's own */
        ddpm_schedule_config_default(&sc, kind ? DDPM_SCHEDULE_SIGMOID_2D : DDPM_SCHEDULE_LINEAR, (int)T);
        sc.beta_start = bs;
        sc.beta_end = be;
    } else if (kind == 2) { /* squaredcos_cap_v2 = Nichol & Dhariwal's cosine, s 0.008, cap 0.999 */
        ddpm_schedule_config_default(&sc, DDPM_SCHEDULE_COSINE, (int)T);
    } else { /* scaled_linear: linspace(sqrt(start), sqrt(end), T)^2 as a custom list */
        ddpm_schedule_config_default(&sc, DDPM_SCHEDULE_CUSTOM, (int)T);
        betas = malloc(sizeof(double) * (size_t)T);
        if (!betas) return ddpm_fail(DDPM_ERR_NOMEM, "out of memory");
        const double a = sqrt(bs), b = sqrt(be);
        for (int i = 0; i < (int)T; i++) {
            const double v = a + (b - a) * i / (T - 1);
            betas[i] = v * v;
        }
        sc.betas = betas;
    }
    sc.zero_terminal_snr = zsnr; /* Lin et al.'s rescaling, as diffusers' rescale_zero_terminal_snr */
    rc = ddpm_schedule_init(s, &sc);
    free(betas);
    if (rc) return sfail(path, "%s", ddpm_last_error());
    *pred = pt == 0 ? DDPM_PRED_EPS : pt == 1 ? DDPM_PRED_X0 : DDPM_PRED_V;
    smp->variance = var ? DDPM_VAR_LARGE : DDPM_VAR_SMALL;
    smp->spacing = (ddpm_spacing)(spacing == 0 ? DDPM_SPACING_LEADING
                                   : spacing == 1 ? DDPM_SPACING_TRAILING : DDPM_SPACING_LINSPACE);
    smp->clip_x0 = clip && !thr;
    smp->clip_range = (float)clip_range;
    smp->steps_offset = (int)offset;
    smp->final_abar_t0 = cls == 1 && !alpha_one;
    smp->threshold = thr;
    smp->threshold_ratio = (float)ratio;
    smp->threshold_max = (float)max_value;
    return DDPM_OK;
}

void ddpm_diffusers_sample_opts(const ddpm_diffusers_sampling *smp, ddpm_sample_opts *o) {
    o->step.clip_range = smp->clip_range;
    o->step.ddim_keep_eps = 1;
    o->steps_offset = smp->steps_offset;
    o->ddim_prev_by_ratio = 1;
    o->ddim_final_abar_t0 = smp->final_abar_t0;
}

int ddpm_diffusers_scheduler_parse(const char *json, size_t len, const char *path,
                                   ddpm_schedule *s, ddpm_prediction *pred,
                                   ddpm_diffusers_sampling *smp) {
    memset(s, 0, sizeof *s);
    memset(smp, 0, sizeof *smp);
    cJSON *o = cJSON_ParseWithLength(json, len);
    if (!cJSON_IsObject(o)) {
        cJSON_Delete(o);
        return sfail(path, "not a JSON object");
    }
    int rc = sched_parse(o, path, s, pred, smp);
    cJSON_Delete(o);
    return rc;
}

/* ---- the UNet config ----------------------------------------------------------------------- */

static int model_config(cJSON *o, const char *path, int T, char **out) {
    *out = NULL;
    const cJSON *k = cJSON_GetObjectItemCaseSensitive(o, "kind");
    if (k) return sfail(path, "unknown key \"kind\" (not a UNet2DModel argument)");
    const cJSON *nt = cJSON_GetObjectItemCaseSensitive(o, "num_train_timesteps");
    if (nt && !cJSON_IsNull(nt) && !(cJSON_IsNumber(nt) && nt->valuedouble == T))
        return sfail(path, "\"num_train_timesteps\" differs from the scheduler's %d", T);
    cJSON_DeleteItemFromObjectCaseSensitive(o, "num_train_timesteps");
    if (!cJSON_AddStringToObject(o, "kind", "unet2d") ||
        !cJSON_AddNumberToObject(o, "num_train_timesteps", T) ||
        !(*out = cJSON_PrintUnformatted(o)))
        return ddpm_fail(DDPM_ERR_NOMEM, "out of memory");
    return DDPM_OK;
}

int ddpm_diffusers_model_config(const char *json, size_t len, const char *path, int T,
                                char **out) {
    *out = NULL;
    cJSON *o = cJSON_ParseWithLength(json, len);
    if (!cJSON_IsObject(o)) {
        cJSON_Delete(o);
        return sfail(path, "not a JSON object");
    }
    int rc = model_config(o, path, T, out);
    cJSON_Delete(o);
    return rc;
}

/* ---- loading a folder ---------------------------------------------------------------------- */

/* diffusers' renaming of the older attention blocks' tensors (modeling_utils.py,
 * _convert_deprecated_attention_blocks): <path>.query.* -> <path>.to_q.*, key -> to_k,
 * value -> to_v, proj_attn -> to_out.0, inside "attentions.N". */
static int rename_legacy(ddpm_safetensors *st) {
    static const char *const from[] = {".query.", ".key.", ".value.", ".proj_attn."};
    static const char *const to[] = {".to_q.", ".to_k.", ".to_v.", ".to_out.0."};
    for (size_t i = 0; i < st->n_tensors; i++) {
        char *name = st->tensors[i].name;
        if (!strstr(name, "attentions.")) continue;
        for (int k = 0; k < 4; k++) {
            char *at = strstr(name, from[k]);
            if (!at) continue;
            const size_t n = strlen(name) - strlen(from[k]) + strlen(to[k]) + 1;
            char *nn = malloc(n);
            if (!nn) return ddpm_fail(DDPM_ERR_NOMEM, "out of memory");
            snprintf(nn, n, "%.*s%s%s", (int)(at - name), name, to[k], at + strlen(from[k]));
            free(name);
            st->tensors[i].name = nn;
            break;
        }
    }
    return DDPM_OK;
}

typedef struct {
    char *config, *weights, *bin, *scheduler;
} folder_paths;

static void paths_free(folder_paths *p) {
    free(p->config);
    free(p->weights);
    free(p->bin);
    free(p->scheduler);
}

/* The files of a pipeline folder (unet/, scheduler/) or of a flat one. */
static int find_files(const char *dir, folder_paths *p) {
    memset(p, 0, sizeof *p);
    struct stat st;
    if (stat(dir, &st) != 0 || !S_ISDIR(st.st_mode))
        return ddpm_fail(DDPM_ERR_IO, "%s: not a directory (%s)", dir,
                         errno ? strerror(errno) : "not a folder");
    char *unet = join(dir, "unet/config.json");
    const int pipeline = is_file(unet);
    free(unet);
    const char *sub = pipeline ? "unet/" : "";
    char rel[64];
    snprintf(rel, sizeof rel, "%sconfig.json", sub);
    p->config = join(dir, rel);
    snprintf(rel, sizeof rel, "%sdiffusion_pytorch_model.safetensors", sub);
    p->weights = join(dir, rel);
    snprintf(rel, sizeof rel, "%sdiffusion_pytorch_model.bin", sub);
    p->bin = join(dir, rel);
    p->scheduler = join(dir, pipeline ? "scheduler/scheduler_config.json" : "scheduler_config.json");
    if (!p->config || !p->weights || !p->bin || !p->scheduler) {
        paths_free(p);
        return ddpm_fail(DDPM_ERR_NOMEM, "out of memory");
    }
    if (!is_file(p->config)) {
        int rc = ddpm_fail(DDPM_ERR_IO, "%s: no unet/config.json or config.json (is it a diffusers "
                                        "UNet2DModel folder?)", dir);
        paths_free(p);
        return rc;
    }
    /* the safetensors file if there is one (as diffusers prefers it), else the PyTorch pickle */
    if (!is_file(p->weights)) {
        if (!is_file(p->bin)) {
            int rc = ddpm_fail(DDPM_ERR_IO, "%s: missing (and no diffusion_pytorch_model.bin beside it)",
                               p->weights);
            paths_free(p);
            return rc;
        }
        free(p->weights);
        p->weights = p->bin;
        p->bin = NULL;
    }
    if (pipeline && !is_file(p->scheduler)) {
        int rc = ddpm_fail(DDPM_ERR_IO, "%s: missing (the pipeline folder's scheduler)", p->scheduler);
        paths_free(p);
        return rc;
    }
    if (!pipeline && !is_file(p->scheduler)) {
        free(p->scheduler);
        p->scheduler = NULL;
    }
    return DDPM_OK;
}

int ddpm_diffusers_load(const char *dir, ddpm_checkpoint *ck, ddpm_diffusers_sampling *smp) {
    memset(ck, 0, sizeof *ck);
    memset(smp, 0, sizeof *smp);
    folder_paths p;
    int rc = find_files(dir, &p);
    if (rc) return rc;
    ddpm_train_config_default(&ck->train);
    /* the scheduler first: its num_train_timesteps is the network's t range */
    if (p.scheduler) {
        cJSON *o = read_json(p.scheduler);
        rc = o ? sched_parse(o, p.scheduler, &ck->schedule, &ck->train.prediction, smp) : DDPM_ERR_FORMAT;
        cJSON_Delete(o);
    } else { /* DDPMScheduler's defaults */
        rc = ddpm_diffusers_scheduler_parse("{}", 2, "(default scheduler)", &ck->schedule,
                                            &ck->train.prediction, smp);
        smp->scheduler[0] = '\0';
    }
    char *model_json = NULL;
    if (!rc) {
        cJSON *o = read_json(p.config);
        rc = o ? model_config(o, p.config, ck->schedule.n, &model_json) : DDPM_ERR_FORMAT;
        cJSON_Delete(o);
    }
    /* safetensors or diffusion_pytorch_model.bin (a torch.save state dict), told apart by content */
    if (!rc) rc = ddpm_weights_read(p.weights, NULL, &ck->st);
    if (!rc) {
        /* every model tensor must be in the file: the config can describe no more weights than
         * the file holds values (a few bytes of JSON cannot allocate gigabytes) */
        size_t floats = 0;
        for (size_t i = 0; i < ck->st.n_tensors; i++)
            if (ck->st.tensors[i].dtype <= DDPM_DT_BF16) floats += ck->st.tensors[i].numel;
        rc = ddpm_model_create_bounded(model_json, 0, floats, MAX_ITEM,
                                       "float values the weights file holds", &ck->model);
        if (rc) rc = ddpm_fail(rc, "%s: %s", p.config, ddpm_last_error());
    }
    if (!rc) rc = rename_legacy(&ck->st);
    if (!rc) rc = ddpm_model_load_tensors(ck->model, &ck->st, NULL, p.weights);
    free(model_json);
    paths_free(&p);
    if (rc) ddpm_checkpoint_free(ck);
    return rc;
}

/* ---- writing a folder ------------------------------------------------------------------------ */

static int mkdir_p(const char *path) {
    if (mkdir(path, 0755) != 0 && errno != EEXIST)
        return ddpm_fail(DDPM_ERR_IO, "%s: cannot create the folder (%s)", path, strerror(errno));
    struct stat st;
    if (stat(path, &st) != 0 || !S_ISDIR(st.st_mode))
        return ddpm_fail(DDPM_ERR_IO, "%s: exists and is not a folder", path);
    return DDPM_OK;
}

static int write_json(const char *dir, const char *rel, cJSON *o) {
    char *text = o ? cJSON_Print(o) : NULL;
    cJSON_Delete(o);
    char *path = join(dir, rel);
    int rc;
    if (!text || !path) {
        rc = ddpm_fail(DDPM_ERR_NOMEM, "out of memory");
    } else {
        const void *parts[2] = {text, "\n"};
        const size_t sizes[2] = {strlen(text), 1};
        rc = ddpm_write_file_atomic(path, parts, sizes, 2);
    }
    free(text);
    free(path);
    return rc;
}

/* diffusers' scheduler settings for ddpm's schedule s. */
static cJSON *scheduler_json(const ddpm_schedule *s, ddpm_prediction pred, int *ok) {
    const ddpm_schedule_config *c = &s->config;
    cJSON *o = cJSON_CreateObject();
    *ok = 1;
    cJSON_AddStringToObject(o, "_class_name", "DDPMScheduler");
    cJSON_AddStringToObject(o, "_diffusers_version", DIFFUSERS_VERSION);
    cJSON_AddNumberToObject(o, "num_train_timesteps", c->timesteps);
    cJSON_AddNumberToObject(o, "beta_start", c->beta_start);
    cJSON_AddNumberToObject(o, "beta_end", c->beta_end);
    if (c->kind == DDPM_SCHEDULE_LINEAR || c->kind == DDPM_SCHEDULE_SIGMOID_2D) {
        cJSON_AddStringToObject(o, "beta_schedule", c->kind ? "sigmoid" : "linear");
        cJSON_AddNullToObject(o, "trained_betas");
    } else if (c->kind == DDPM_SCHEDULE_COSINE && fabs(c->cosine_s - 0.008) < 1e-12) {
        cJSON_AddStringToObject(o, "beta_schedule", "squaredcos_cap_v2");
        cJSON_AddNullToObject(o, "trained_betas");
    } else if (s->t0 == 0) { /* any other schedule: its betas */
        cJSON_AddStringToObject(o, "beta_schedule", "linear");
        cJSON_AddItemToObject(o, "trained_betas", cJSON_CreateDoubleArray(s->betas_f64, s->n));
    } else {
        *ok = 0; /* the course's T + 1 entries have no diffusers equivalent */
    }
    cJSON_AddStringToObject(o, "variance_type", "fixed_small");
    cJSON_AddBoolToObject(o, "clip_sample", 1);
    cJSON_AddNumberToObject(o, "clip_sample_range", 1.0);
    cJSON_AddStringToObject(o, "prediction_type", pred == DDPM_PRED_EPS  ? "epsilon"
                                                  : pred == DDPM_PRED_X0 ? "sample"
                                                                         : "v_prediction");
    cJSON_AddStringToObject(o, "timestep_spacing", "leading");
    cJSON_AddNumberToObject(o, "steps_offset", 0);
    /* rescaling is idempotent: betas written rescaled (trained_betas) stay as they are */
    cJSON_AddBoolToObject(o, "rescale_betas_zero_snr", c->zero_terminal_snr);
    return o;
}

/* ---- ddpm's unet as a UNet2DModel ------------------------------------------------------------
 * The DDPM paper's U-Net of models/unet.c is a UNet2DModel with freq_shift 1, flip_sin_to_cos
 * false, downsample_padding 1 and norm_eps 1e-5, when its attention fits diffusers' one
 * attention_head_dim: every attention (the listed resolutions and the middle) heads x head dim
 * = its channels with the same head dim. Its tensors map one to one (qkv is to_q, to_k, to_v
 * stacked, which is how unet2d lays them out). */

/* "<n>." at *p: n, and *p moved past it; -1 (p unchanged) otherwise. */
static int take_index(const char **p) {
    char *end;
    const long v = strtol(*p, &end, 10);
    if (end == *p || *end != '.' || v < 0 || v > 1000) return -1;
    *p = end + 1;
    return (int)v;
}

/* The unet2d name of a unet tensor, for L levels (out: n >= 256 bytes): the block's new prefix, then the tensor's
 * own renames (temb_proj, nin_shortcut, norm, qkv -> the start of to_q, proj_out). */
static void unet_name_map(const char *in, int L, char *out, size_t n) {
    char head[96] = "";
    const char *rest = in;
    const int up = strncmp(in, "up.", 3) == 0;
    if (up || strncmp(in, "down.", 5) == 0) {
        const char *p = in + (up ? 3 : 5);
        const int i = take_index(&p), lvl = up ? L - 1 - i : i;
        const char *blk = up ? "up_blocks" : "down_blocks";
        const char *sample = up ? "upsample." : "downsample.";
        if (i >= 0 && strncmp(p, "block.", 6) == 0) {
            p += 6;
            const int j = take_index(&p);
            if (j >= 0) snprintf(head, sizeof head, "%s.%d.resnets.%d.", blk, lvl, j);
        } else if (i >= 0 && strncmp(p, "attn.", 5) == 0) {
            p += 5;
            const int j = take_index(&p);
            if (j >= 0) snprintf(head, sizeof head, "%s.%d.attentions.%d.", blk, lvl, j);
        } else if (i >= 0 && strncmp(p, sample, strlen(sample)) == 0) {
            p += strlen(sample);
            snprintf(head, sizeof head, "%s.%d.%s.0.", blk, lvl, up ? "upsamplers" : "downsamplers");
        }
        rest = head[0] ? p : in;
    } else {
        static const char *const from[] = {"mid.block_1.", "mid.block_2.", "mid.attn_1.",
                                           "temb.dense.0.", "temb.dense.1.", "class_emb.", "norm_out."};
        static const char *const to[] = {"mid_block.resnets.0.", "mid_block.resnets.1.",
                                         "mid_block.attentions.0.", "time_embedding.linear_1.",
                                         "time_embedding.linear_2.", "class_embedding.", "conv_norm_out."};
        for (int k = 0; k < 7 && !head[0]; k++)
            if (strncmp(in, from[k], strlen(from[k])) == 0) {
                snprintf(head, sizeof head, "%s", to[k]);
                rest = in + strlen(from[k]);
            }
    }
    static const char *const from[] = {"temb_proj.", "nin_shortcut.", "norm.", "qkv.", "proj_out."};
    static const char *const to[] = {"time_emb_proj.", "conv_shortcut.", "group_norm.", "to_q.", "to_out.0."};
    for (int k = 0; k < 5; k++)
        if (head[0] && strncmp(rest, from[k], strlen(from[k])) == 0) {
            snprintf(out, n, "%s%s%s", head, to[k], rest + strlen(from[k]));
            return;
        }
    snprintf(out, n, "%s%s", head, rest); /* conv_in.*, conv_out.*, norm1, conv1, ... */
}

int ddpm_diffusers_from_unet(const ddpm_model *u, ddpm_model **out) {
    *out = NULL;
    if (strcmp(u->ops->kind, "unet") != 0)
        return ddpm_fail(DDPM_ERR_INVALID, "not a unet model (a %s)", u->ops->kind);
    cJSON *c = cJSON_Parse(u->config_json);
    if (!c) return ddpm_fail(DDPM_ERR_NOMEM, "out of memory");
    const int base = (int)ddpm_json_number_or(c, "base_channels", 0);
    const int H = (int)ddpm_json_number_or(c, "height", 0), heads = (int)ddpm_json_number_or(c, "heads", 1);
    const int dim_head = (int)ddpm_json_number_or(c, "dim_head", 0);
    const int R = (int)ddpm_json_number_or(c, "num_res_blocks", 2);
    const cJSON *mult = cJSON_GetObjectItemCaseSensitive(c, "channel_mult");
    const cJSON *attn = cJSON_GetObjectItemCaseSensitive(c, "attn_resolutions");
    const cJSON *sc = cJSON_GetObjectItemCaseSensitive(c, "self_cond");
    const int L = cJSON_GetArraySize(mult);
    int rc = DDPM_OK, boc[8], has[8], ahd = 0;
    if (cJSON_IsTrue(sc)) rc = ddpm_fail(DDPM_ERR_INVALID, "a unet with self_cond has no UNet2DModel equivalent");
    if (!rc && (L < 1 || L > 8 || (int)cJSON_GetArrayItem(mult, 0)->valuedouble != 1))
        rc = ddpm_fail(DDPM_ERR_INVALID, "a unet whose channel_mult does not start at 1 has no "
                                         "UNet2DModel equivalent (its conv_in has base_channels outputs)");
    for (int i = 0, size = H; !rc && i <= L; i++, size /= 2) {
        const int mid = i == L;
        const int ch = base * (int)cJSON_GetArrayItem(mult, mid ? L - 1 : i)->valuedouble;
        if (!mid) boc[i] = ch;
        int a = mid;
        for (const cJSON *e = attn ? attn->child : NULL; e && !mid; e = e->next) a |= (int)e->valuedouble == size;
        if (!mid) has[i] = a;
        if (!a) continue;
        const int dh = dim_head > 0 ? dim_head : ch / heads;
        if (dh * heads != ch || (ahd && dh != ahd))
            rc = ddpm_fail(DDPM_ERR_INVALID, "the unet's attention at %d channels (%d heads of %d) "
                                             "does not fit UNet2DModel's one attention_head_dim: "
                                             "every attention needs heads x dim_head = its channels "
                                             "with one dim_head", ch, heads, dh);
        ahd = dh;
    }
    char *json = NULL;
    if (!rc) {
        cJSON *o = cJSON_CreateObject();
        const char *down[8], *up[8];
        for (int i = 0; i < L; i++) {
            down[i] = has[i] ? "AttnDownBlock2D" : "DownBlock2D";
            up[L - 1 - i] = has[i] ? "AttnUpBlock2D" : "UpBlock2D";
        }
        cJSON_AddStringToObject(o, "kind", "unet2d");
        cJSON_AddNumberToObject(o, "sample_size", H);
        cJSON_AddNumberToObject(o, "in_channels", u->channels);
        cJSON_AddNumberToObject(o, "out_channels", u->channels);
        cJSON_AddItemToObject(o, "block_out_channels", cJSON_CreateIntArray(boc, L));
        cJSON_AddItemToObject(o, "down_block_types", cJSON_CreateStringArray(down, L));
        cJSON_AddItemToObject(o, "up_block_types", cJSON_CreateStringArray(up, L));
        cJSON_AddNumberToObject(o, "layers_per_block", R);
        cJSON_AddNumberToObject(o, "attention_head_dim", ahd);
        cJSON_AddNumberToObject(o, "norm_num_groups", ddpm_json_number_or(c, "groups", 8));
        cJSON_AddNumberToObject(o, "norm_eps", 1e-5);
        cJSON_AddNumberToObject(o, "downsample_padding", 1);
        cJSON_AddBoolToObject(o, "flip_sin_to_cos", 0);
        cJSON_AddNumberToObject(o, "freq_shift", 1);
        cJSON_AddNumberToObject(o, "dropout", ddpm_json_number_or(c, "dropout", 0));
        const int K = (int)ddpm_json_number_or(c, "num_classes", 0);
        if (K > 0) cJSON_AddNumberToObject(o, "num_class_embeds", K);
        cJSON_AddNumberToObject(o, "num_train_timesteps", u->num_timesteps);
        json = ddpm_json_print_and_free(o);
        rc = json ? ddpm_model_create(json, 0, out) : ddpm_fail(DDPM_ERR_NOMEM, "out of memory");
    }
    cJSON_Delete(c);
    free(json);
    for (size_t k = 0; !rc && k < u->n_tensors; k++) {
        const ddpm_param_info *p = &u->tensors[k];
        char name[256]; /* a block prefix (< 96) + a renamed part + the rest of a 128-byte name */
        unet_name_map(p->name, L, name, sizeof name);
        const ddpm_param_info *q = ddpm_model_find(*out, name);
        /* qkv [3 hid, C, 1, 1] fills to_q, to_k, to_v; the rest match in size */
        const size_t numel = q && strstr(p->name, ".qkv.") ? 3 * q->numel : q ? q->numel : 0;
        if (!q || numel != p->numel) {
            rc = ddpm_fail(DDPM_ERR_INVALID, "unet tensor %s has no UNet2DModel counterpart %s of "
                                             "its size", p->name, name);
            break;
        }
        memcpy(ddpm_model_tensor_data(*out, q), (p->is_buffer ? u->buffers : u->params) + p->offset,
               sizeof(float) * p->numel);
    }
    if (!rc && ddpm_model_weight_count(*out) != ddpm_model_weight_count(u))
        rc = ddpm_fail(DDPM_ERR_INVALID, "the unet and its UNet2DModel have different weight counts");
    if (rc) {
        ddpm_model_free(*out);
        *out = NULL;
    }
    return rc;
}

int ddpm_diffusers_save(const char *dir, const ddpm_model *m, const ddpm_schedule *s,
                        ddpm_prediction pred) {
    if (strcmp(m->ops->kind, "unet") == 0) { /* ddpm's own U-Net, when it maps */
        ddpm_model *u2 = NULL;
        int rc = ddpm_diffusers_from_unet(m, &u2);
        if (!rc) rc = ddpm_diffusers_save(dir, u2, s, pred);
        ddpm_model_free(u2);
        return rc;
    }
    if (strcmp(m->ops->kind, "unet2d") != 0)
        return ddpm_fail(DDPM_ERR_INVALID, "a diffusers folder holds a unet2d model (UNet2DModel) "
                                           "or a unet that maps to one, not a %s", m->ops->kind);
    if (s->n != m->num_timesteps)
        return ddpm_fail(DDPM_ERR_INVALID, "the model embeds %d timesteps, the schedule has %d",
                         m->num_timesteps, s->n);
    int ok;
    cJSON *sched = scheduler_json(s, pred, &ok);
    if (!ok) {
        cJSON_Delete(sched);
        return ddpm_fail(DDPM_ERR_INVALID, "the %s schedule has no diffusers equivalent",
                         ddpm_schedule_kind_name(s->config.kind));
    }
    cJSON *cfg = cJSON_Parse(m->config_json);
    if (!cfg) {
        cJSON_Delete(sched);
        return ddpm_fail(DDPM_ERR_NOMEM, "out of memory");
    }
    cJSON_DeleteItemFromObjectCaseSensitive(cfg, "kind");
    cJSON_AddStringToObject(cfg, "_diffusers_version", DIFFUSERS_VERSION);
    cJSON *index = cJSON_CreateObject();
    cJSON_AddStringToObject(index, "_class_name", "DDPMPipeline");
    cJSON_AddStringToObject(index, "_diffusers_version", DIFFUSERS_VERSION);
    const char *sch[2] = {"diffusers", "DDPMScheduler"}, *un[2] = {"diffusers", "UNet2DModel"};
    cJSON_AddItemToObject(index, "scheduler", cJSON_CreateStringArray(sch, 2));
    cJSON_AddItemToObject(index, "unet", cJSON_CreateStringArray(un, 2));

    char *unet = join(dir, "unet"), *schd = join(dir, "scheduler");
    char *weights = join(dir, "unet/diffusion_pytorch_model.safetensors");
    int rc = unet && schd && weights ? DDPM_OK : ddpm_fail(DDPM_ERR_NOMEM, "out of memory");
    if (!rc) rc = mkdir_p(dir);
    if (!rc) rc = mkdir_p(unet);
    if (!rc) rc = mkdir_p(schd);
    if (!rc) rc = ddpm_model_save_tensors(weights, m);
    /* the configs after the weights: a folder with a config always has its weights */
    if (!rc) {
        rc = write_json(dir, "unet/config.json", cfg); /* write_json frees the object */
        cfg = NULL;
    }
    if (!rc) {
        rc = write_json(dir, "scheduler/scheduler_config.json", sched);
        sched = NULL;
    }
    if (!rc) {
        rc = write_json(dir, "model_index.json", index);
        index = NULL;
    }
    cJSON_Delete(cfg);
    cJSON_Delete(sched);
    cJSON_Delete(index);
    free(unet);
    free(schd);
    free(weights);
    return rc;
}

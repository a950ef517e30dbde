/* model_flags.c - the network flags shared by `ddpm train` and `ddpm sample --weights`, each
 * network's tutorial preset, and the model config JSON built from them. */
#include "model_flags.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void model_flags_init(model_flags *f, const char *default_model) {
    memset(f, 0, sizeof *f);
    f->model = default_model;
    f->hidden = 128;
    f->depth = 3;
    f->time_embedding = "learned";
}

void model_flags_options(model_flags *f, cli_opt *opts) {
    const cli_opt o[MODEL_FLAGS_N] = {
        {"model", CLI_STRING, &f->model, "NAME", "network: mlp (2-D points; train's default for points), unet (DDPM paper; train's default for images), context-unet (DeepLearning.AI course), simple-unet (diffusion-from-scratch tutorial), unet2d (diffusers' UNet2DModel; ddpm export --diffusers writes it)", &f->set_model},
        {"hidden", CLI_INT, &f->hidden, "H", "mlp: width (default 128)", NULL},
        {"depth", CLI_INT, &f->depth, "L", "mlp: hidden layers (default 3)", NULL},
        {"time-embedding", CLI_STRING, &f->time_embedding, "KIND", "mlp: learned (tutorial, default) or sinusoidal", NULL},
        {"n-feat", CLI_INT, &f->n_feat, "N", "context-unet: feature width n_feat (default 64)", NULL},
        {"shortcut", CLI_STRING, &f->shortcut, "KIND", "context-unet: first-block shortcut, learned (default) or none (as the course's expected value; weights exported from the course)", NULL},
        {"base-channels", CLI_INT, &f->base_channels, "C", "unet: base channels (default 32)", NULL},
        {"channel-mult", CLI_STRING, &f->channel_mult, "LIST", "unet: per-level channel multipliers (default 1,2,2)", NULL},
        {"num-res-blocks", CLI_INT, &f->num_res_blocks, "N", "unet: residual blocks per level (default 2)", NULL},
        {"attn-resolutions", CLI_STRING, &f->attn_res, "LIST", "unet: resolutions with self-attention (default 7 or 8)", NULL},
        {"heads", CLI_INT, &f->heads, "N", "unet: attention heads (default 4)", NULL},
        {"dim-head", CLI_INT, &f->dim_head, "D", "unet: width of each attention head (default 32; 0 = channels / heads)", &f->set_dim_head},
        {"groups", CLI_INT, &f->groups, "G", "unet: group-norm groups (default 8)", NULL},
        {"dropout", CLI_FLOAT, &f->dropout, "P", "unet: dropout in the residual blocks (default 0)", NULL},
        {"self-cond", CLI_FLAG, &f->self_cond, NULL, "unet: self-conditioning on the previous x_0 estimate", NULL},
        {"unet-channels", CLI_STRING, &f->unet_channels, "LIST", "simple-unet: channels per level (default 64,128,256,512,1024)", NULL},
        {"time-emb-dim", CLI_INT, &f->time_emb_dim, "D", "simple-unet: time embedding width (default 32)", NULL},
        {"block-out-channels", CLI_STRING, &f->block_out_channels, "LIST", "unet2d: channels per level (default 128,256,256,256, ddpm-cifar10-32's)", NULL},
        {"down-block-types", CLI_STRING, &f->down_block_types, "LIST", "unet2d: DownBlock2D or AttnDownBlock2D per level (default: attention at the second level only, as ddpm-cifar10-32)", NULL},
        {"up-block-types", CLI_STRING, &f->up_block_types, "LIST", "unet2d: UpBlock2D or AttnUpBlock2D per level, deepest first (default: the mirror of the down blocks)", NULL},
        {"layers-per-block", CLI_INT, &f->layers_per_block, "N", "unet2d: resnets per down block (up blocks have N + 1; default 2)", NULL},
        {"attention-head-dim", CLI_INT, &f->attention_head_dim, "D", "unet2d: width of each attention head (default: one head per attention, as ddpm-cifar10-32's null)", &f->set_attention_head_dim},
        {"norm-eps", CLI_DOUBLE, &f->norm_eps, "E", "unet2d: group-norm epsilon (default 1e-6, as the pretrained DDPMs); --groups sets norm_num_groups (default 32), --dropout its dropout", &f->set_norm_eps},
    };
    memcpy(opts, o, sizeof o);
}

/* Each network's own tutorial (mlp: the 2-D tutorial; unet: Ho et al.; context-unet: the
 * DeepLearning.AI course, with its linear learning-rate decay; simple-unet: the tutorial, with
 * its L1 loss). */
static const model_preset presets[] = {
    {"mlp", "sigmoid-2d", "constant", "l2", 100, 128, 0, 1e-3},
    {"unet", "linear", "constant", "l2", 1000, 64, 500, 2e-4},
    {"context-unet", "linear-course", "linear", "l2", 500, 100, 0, 1e-3},
    {"simple-unet", "linear", "constant", "l1", 300, 128, 0, 1e-3},
    /* diffusers' train_unconditional.py: lr 1e-4 with 500 warm-up steps (its cosine decay is
     * --lr-decay cosine), batch 16, DDPMScheduler's linear 1000 steps */
    {"unet2d", "linear", "constant", "l2", 1000, 16, 500, 1e-4},
};

const model_preset *model_preset_find(const char *model) {
    for (size_t i = 0; i < sizeof presets / sizeof presets[0]; i++)
        if (strcmp(presets[i].model, model) == 0) return &presets[i];
    return NULL;
}

/* "1,2,2" -> a JSON array of positive integers under key; the error names the flag. */
static int add_int_list(cJSON *o, const char *key, const char *flag, const char *list) {
    cJSON *arr = cJSON_AddArrayToObject(o, key);
    if (!arr) return ddpm_fail(DDPM_ERR_NOMEM, "out of memory");
    const char *p = list;
    do {
        char *end;
        errno = 0;
        long v = strtol(p, &end, 10);
        if (end == p || errno || v < 1 || v > (1L << 20) || (*end && *end != ','))
            return ddpm_fail(DDPM_ERR_INVALID,
                             "--%s takes comma-separated positive integers like 1,2,2 (got '%s')",
                             flag, list);
        cJSON_AddItemToArray(arr, cJSON_CreateNumber((double)v));
        p = *end ? end + 1 : end;
    } while (*p);
    return DDPM_OK;
}

/* "A,B" -> a JSON array of the strings A, B under key. */
static int add_string_list(cJSON *o, const char *key, const char *flag, const char *list) {
    cJSON *arr = cJSON_AddArrayToObject(o, key);
    if (!arr) return ddpm_fail(DDPM_ERR_NOMEM, "out of memory");
    for (const char *p = list;;) {
        const char *end = strchr(p, ',');
        const size_t n = end ? (size_t)(end - p) : strlen(p);
        if (n == 0 || n > 63)
            return ddpm_fail(DDPM_ERR_INVALID, "--%s takes comma-separated names like "
                                               "DownBlock2D,AttnDownBlock2D (got '%s')", flag, list);
        char name[64];
        snprintf(name, sizeof name, "%.*s", (int)n, p);
        cJSON_AddItemToArray(arr, cJSON_CreateString(name));
        if (!end) break;
        p = end + 1;
    }
    return DDPM_OK;
}

/* diffusers' UNet2DModel config (models/unet2d.c checks every value and names what it refuses);
 * without --block-out-channels, ddpm-cifar10-32's layout: 128,256,256,256 with attention at the
 * second level (16x16 at 32 pixels), one head, norm_eps 1e-6, freq_shift 1, no sin/cos flip,
 * downsample_padding 0. */
static int add_unet2d(const model_flags *f, const model_shape *s, cJSON *o) {
    cJSON_DeleteItemFromObjectCaseSensitive(o, "num_timesteps");
    cJSON_AddNumberToObject(o, "num_train_timesteps", s->num_timesteps);
    cJSON_AddNumberToObject(o, "sample_size", s->height);
    cJSON_AddNumberToObject(o, "in_channels", s->in_channels);
    cJSON_AddNumberToObject(o, "out_channels", s->in_channels);
    int rc = add_int_list(o, "block_out_channels", "block-out-channels",
                          f->block_out_channels ? f->block_out_channels : "128,256,256,256");
    const int L = cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(o, "block_out_channels"));
    if (!rc && f->down_block_types) {
        rc = add_string_list(o, "down_block_types", "down-block-types", f->down_block_types);
    } else if (!rc) {
        cJSON *arr = cJSON_AddArrayToObject(o, "down_block_types");
        for (int i = 0; i < L; i++)
            cJSON_AddItemToArray(arr, cJSON_CreateString(i == 1 ? "AttnDownBlock2D" : "DownBlock2D"));
    }
    if (!rc && f->up_block_types) {
        rc = add_string_list(o, "up_block_types", "up-block-types", f->up_block_types);
    } else if (!rc) { /* the mirror: AttnDownBlock2D at level i -> AttnUpBlock2D at L - 1 - i */
        const cJSON *down = cJSON_GetObjectItemCaseSensitive(o, "down_block_types");
        cJSON *arr = cJSON_AddArrayToObject(o, "up_block_types");
        for (int i = cJSON_GetArraySize(down) - 1; i >= 0; i--) {
            const cJSON *t = cJSON_GetArrayItem(down, i);
            const int attn = cJSON_IsString(t) && strcmp(t->valuestring, "AttnDownBlock2D") == 0;
            cJSON_AddItemToArray(arr, cJSON_CreateString(attn ? "AttnUpBlock2D" : "UpBlock2D"));
        }
    }
    cJSON_AddNumberToObject(o, "layers_per_block", f->layers_per_block > 0 ? f->layers_per_block : 2);
    if (f->set_attention_head_dim)
        cJSON_AddNumberToObject(o, "attention_head_dim", f->attention_head_dim);
    else
        cJSON_AddNullToObject(o, "attention_head_dim");
    cJSON_AddNumberToObject(o, "norm_num_groups", f->groups > 0 ? f->groups : 32);
    cJSON_AddNumberToObject(o, "norm_eps", f->set_norm_eps ? f->norm_eps : 1e-6);
    cJSON_AddNumberToObject(o, "downsample_padding", 0);
    cJSON_AddBoolToObject(o, "flip_sin_to_cos", 0);
    cJSON_AddNumberToObject(o, "freq_shift", 1);
    cJSON_AddNumberToObject(o, "dropout", f->dropout);
    if (s->cond_dim > 0) cJSON_AddNumberToObject(o, "num_class_embeds", s->cond_dim);
    return rc;
}

static int add_image_network(const model_flags *f, const model_shape *s, cJSON *o) {
    if (strcmp(f->model, "unet2d") == 0) return add_unet2d(f, s, o);
    cJSON_AddNumberToObject(o, "in_channels", s->in_channels);
    cJSON_AddNumberToObject(o, "height", s->height);
    if (s->width > 0 && s->width != s->height) cJSON_AddNumberToObject(o, "width", s->width);
    int rc = DDPM_OK;
    if (strcmp(f->model, "context-unet") == 0) {
        if (f->n_feat > 0) cJSON_AddNumberToObject(o, "n_feat", f->n_feat);
        cJSON_AddNumberToObject(o, "n_cfeat", s->cond_dim);
        if (f->shortcut) cJSON_AddStringToObject(o, "shortcut", f->shortcut);
    } else if (strcmp(f->model, "simple-unet") == 0) {
        if (f->unet_channels) rc = add_int_list(o, "channels", "unet-channels", f->unet_channels);
        if (f->time_emb_dim > 0) cJSON_AddNumberToObject(o, "time_emb_dim", f->time_emb_dim);
        if (s->cond_dim > 0)
            fprintf(stderr, "note: simple-unet is unconditional; the labels are not used\n");
    } else if (strcmp(f->model, "unet") == 0) {
        if (f->base_channels > 0) cJSON_AddNumberToObject(o, "base_channels", f->base_channels);
        if (f->channel_mult) rc = add_int_list(o, "channel_mult", "channel-mult", f->channel_mult);
        if (f->num_res_blocks > 0) cJSON_AddNumberToObject(o, "num_res_blocks", f->num_res_blocks);
        if (!rc && f->attn_res)
            rc = add_int_list(o, "attn_resolutions", "attn-resolutions", f->attn_res);
        if (f->heads > 0) cJSON_AddNumberToObject(o, "heads", f->heads);
        if (f->set_dim_head) cJSON_AddNumberToObject(o, "dim_head", f->dim_head);
        if (f->groups > 0) cJSON_AddNumberToObject(o, "groups", f->groups);
        cJSON_AddNumberToObject(o, "dropout", f->dropout);
        cJSON_AddNumberToObject(o, "num_classes", s->cond_dim);
        cJSON_AddBoolToObject(o, "self_cond", f->self_cond);
    } else {
        rc = ddpm_fail(DDPM_ERR_INVALID,
                       "unknown --model '%s' for images (expected unet, context-unet, simple-unet or unet2d)",
                       f->model);
    }
    return rc;
}

static int add_point_network(const model_flags *f, const model_shape *s, cJSON *o) {
    if (strcmp(f->model, "mlp") != 0)
        return ddpm_fail(DDPM_ERR_INVALID, "--model %s does not take points (use mlp)", f->model);
    const int sinusoidal = strcmp(f->time_embedding, "sinusoidal") == 0;
    if (!sinusoidal && strcmp(f->time_embedding, "learned") != 0)
        return ddpm_fail(DDPM_ERR_INVALID,
                         "--time-embedding must be learned or sinusoidal (got '%s')",
                         f->time_embedding);
    cJSON_AddNumberToObject(o, "dim", s->dim);
    cJSON_AddNumberToObject(o, "hidden", f->hidden);
    cJSON_AddNumberToObject(o, "depth", f->depth);
    cJSON_AddStringToObject(o, "time_embedding", sinusoidal ? "sinusoidal" : "learned");
    return DDPM_OK;
}

int model_flags_config_json(const model_flags *f, const model_shape *s, char **out) {
    *out = NULL;
    cJSON *o = cJSON_CreateObject();
    if (!o) return ddpm_fail(DDPM_ERR_NOMEM, "out of memory");
    cJSON_AddStringToObject(o, "kind", f->model);
    cJSON_AddNumberToObject(o, "num_timesteps", s->num_timesteps);
    int rc = s->height > 0 ? add_image_network(f, s, o) : add_point_network(f, s, o);
    if (!rc && !(*out = cJSON_PrintUnformatted(o))) rc = ddpm_fail(DDPM_ERR_NOMEM, "out of memory");
    cJSON_Delete(o);
    return rc;
}

/* model_flags.h - every network's command-line flags and tutorial presets, in one place: `ddpm
 * train` builds a new network from them and `ddpm sample --weights` rebuilds the network a plain
 * state dict was exported from. Adding a network means adding its flags, preset and JSON keys
 * here (and its model in src/models/). */
#ifndef DDPM_MODEL_FLAGS_H
#define DDPM_MODEL_FLAGS_H

#include "cli.h"

/* The network flags after parsing. Zero / NULL means "not given": the model's default applies. */
typedef struct {
    const char *model;             /* mlp, unet, context-unet, simple-unet, unet2d */
    int set_model;
    int hidden, depth;             /* mlp */
    const char *time_embedding;    /* mlp: learned or sinusoidal */
    int n_feat;                    /* context-unet */
    const char *shortcut;          /* context-unet: learned or none */
    int base_channels, num_res_blocks, heads, dim_head, set_dim_head, groups, self_cond; /* unet */
    const char *channel_mult, *attn_res;                                                 /* unet */
    float dropout;                                                                       /* unet */
    const char *unet_channels;     /* simple-unet */
    int time_emb_dim;              /* simple-unet */
    const char *block_out_channels, *down_block_types, *up_block_types; /* unet2d */
    int layers_per_block, attention_head_dim, set_attention_head_dim;   /* unet2d */
    double norm_eps;                                                    /* unet2d */
    int set_norm_eps;                                                   /* unet2d */
} model_flags;

enum { MODEL_FLAGS_N = 23 }; /* entries written by model_flags_options */

/* Sets the defaults (model: default_model). */
void model_flags_init(model_flags *f, const char *default_model);
/* Writes the MODEL_FLAGS_N option entries that fill f into opts. */
void model_flags_options(model_flags *f, cli_opt *opts);

/* A network's settings from the tutorial or paper it comes from, used unless a flag says
 * otherwise: the schedule, T, batch size, learning rate and its warm-up and decay, the loss. */
typedef struct {
    const char *model, *schedule, *lr_decay, *loss;
    int timesteps, batch_size, warmup;
    double lr;
} model_preset;
/* The preset of a network, or NULL for an unknown name. */
const model_preset *model_preset_find(const char *model);

/* What the network is built for, from the data (train) or from flags (sample --weights). */
typedef struct {
    int dim;                      /* points: D; 0 for images */
    int in_channels, height;      /* images */
    int width;                    /* images: 0 = height (square) */
    int cond_dim;                 /* context-unet: context size; unet: classes; 0 = none */
    int num_timesteps;
} model_shape;

/* The model config JSON (malloc'd, for ddpm_model_create) of the network f describes for shape s.
 * A network that cannot take that data, or a malformed flag, fails with a message naming the
 * flag. Returns a ddpm_status. */
int model_flags_config_json(const model_flags *f, const model_shape *s, char **out);

#endif

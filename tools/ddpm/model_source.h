/* model_source.h - where `sample` and `predict` get their network: a plain state dict
 * (--weights, safetensors or a PyTorch .pth/.pt/.bin) rebuilt from --model and its flags, with
 * the schedule from flags. (--ckpt and --diffusers load through the library directly.) */
#ifndef DDPM_MODEL_SOURCE_H
#define DDPM_MODEL_SOURCE_H

#include "model_flags.h"

typedef struct {
    const char *weights, *key, *schedule, *prediction;
    model_flags net;
    int n_cfeat, height, width, channels, num_classes, dim, timesteps, set_T;
    double beta_start, beta_end;
    int set_bs, set_be;
} weights_args;

enum { WEIGHTS_OPTS_N = 13 }; /* entries written by weights_args_options (then the model flags) */

/* The defaults (32x32 RGB, 5 context features, 2-D points; --model unet). */
void weights_args_init(weights_args *w);
/* Writes the WEIGHTS_OPTS_N option entries of w, then the MODEL_FLAGS_N network flags. */
void weights_args_options(weights_args *w, cli_opt *opts);
/* Builds the network and schedule w describes and loads its weights into ck (no EMA; the
 * train config's defaults). A course ContextUnet export without --shortcut none gets a hint.
 * Prints the error for command cmd and returns its exit code on failure. */
int weights_args_load(const char *cmd, const weights_args *w, ddpm_checkpoint *ck);

#endif

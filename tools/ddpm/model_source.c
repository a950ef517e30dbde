/* model_source.c - a plain state dict (--weights) as `sample` and `predict` load it: the network
 * from --model and its flags (each network's tutorial preset for the schedule), the weights from
 * safetensors or a torch.save file. */
#include "model_source.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void weights_args_init(weights_args *w) {
    memset(w, 0, sizeof *w);
    w->channels = 3;
    w->height = 32;
    w->n_cfeat = 5;
    w->dim = 2;
    model_flags_init(&w->net, "unet");
}

void weights_args_options(weights_args *w, cli_opt *opts) {
    const cli_opt o[WEIGHTS_OPTS_N] = {
        {"weights", CLI_STRING, &w->weights, "FILE", "a plain state dict: safetensors or a PyTorch .pth/.pt/.bin (with --model and its flags)", NULL},
        {"key", CLI_STRING, &w->key, "NAME", "with --weights: the state dict under this key of a nested file (e.g. model, ema; '*' all, dotted)", NULL},
        {"height", CLI_INT, &w->height, "H", "with --weights: image height (default 32)", NULL},
        {"width", CLI_INT, &w->width, "W", "with --weights: image width (default: the height; unet only may differ)", NULL},
        {"channels", CLI_INT, &w->channels, "C", "with --weights: image channels (default 3)", NULL},
        {"n-cfeat", CLI_INT, &w->n_cfeat, "K", "with --weights: context-unet context size (default 5)", NULL},
        {"num-classes", CLI_INT, &w->num_classes, "K", "with --weights: unet classes", NULL},
        {"dim", CLI_INT, &w->dim, "D", "with --weights: mlp point dimension (default 2)", NULL},
        {"schedule", CLI_STRING, &w->schedule, "NAME", "with --weights: the schedule it was trained with (default: the --model's tutorial's)", NULL},
        {"timesteps", CLI_INT, &w->timesteps, "T", "with --weights: diffusion steps (default: the --model's tutorial's)", &w->set_T},
        {"beta-start", CLI_DOUBLE, &w->beta_start, "A", "with --weights: first beta", &w->set_bs},
        {"beta-end", CLI_DOUBLE, &w->beta_end, "B", "with --weights: last beta", &w->set_be},
        {"prediction", CLI_STRING, &w->prediction, "KIND", "with --weights: what the network predicts (eps, x0, v)", NULL},
    };
    memcpy(opts, o, sizeof o);
    model_flags_options(&w->net, opts + WEIGHTS_OPTS_N);
}

int weights_args_load(const char *cmd, const weights_args *w, ddpm_checkpoint *ck) {
    memset(ck, 0, sizeof *ck);
    if (!w->net.set_model)
        return cli_usage_error(cmd, "--weights needs --model (unet, context-unet, simple-unet, unet2d or mlp)");
    const model_preset *p = model_preset_find(w->net.model);
    if (!p)
        return cli_usage_error(cmd, "unknown --model '%s' (expected mlp, unet, context-unet, simple-unet or unet2d)", w->net.model);
    ddpm_schedule_kind kind;
    if (ddpm_schedule_kind_parse(w->schedule ? w->schedule : p->schedule, &kind) || kind == DDPM_SCHEDULE_CUSTOM)
        return cli_usage_error(cmd, "%s", kind == DDPM_SCHEDULE_CUSTOM ? "--weights takes a named schedule" : ddpm_last_error());
    ddpm_schedule_config sc;
    ddpm_schedule_config_default(&sc, kind, w->set_T ? w->timesteps : p->timesteps);
    if (w->set_bs) sc.beta_start = w->beta_start;
    if (w->set_be) sc.beta_end = w->beta_end;
    int rc = ddpm_schedule_init(&ck->schedule, &sc);
    if (rc) return cli_fail(cmd, rc);
    ddpm_train_config_default(&ck->train);
    if (w->prediction && ddpm_prediction_parse(w->prediction, &ck->train.prediction)) {
        ddpm_checkpoint_free(ck);
        return cli_usage_error(cmd, "%s", ddpm_last_error());
    }
    const int points = strcmp(w->net.model, "mlp") == 0;
    model_shape shape = {.dim = points ? w->dim : 0, .in_channels = w->channels,
                         .height = points ? 0 : w->height, .width = points ? 0 : w->width,
                         .cond_dim = strcmp(w->net.model, "context-unet") == 0 ? w->n_cfeat : w->num_classes,
                         .num_timesteps = ck->schedule.n};
    char *json = NULL;
    rc = model_flags_config_json(&w->net, &shape, &json);
    if (!rc) rc = ddpm_model_create(json, 0, &ck->model);
    free(json);
    /* safetensors or a torch.save file (.pth/.pt/.bin), told apart by content */
    if (!rc) rc = ddpm_weights_read(w->weights, w->key, &ck->st);
    if (!rc) rc = ddpm_model_load_tensors(ck->model, &ck->st, NULL, w->weights);
    /* the course's own ContextUnet has no learned first-block shortcut (docs/networks-course.md) */
    if (rc && strcmp(w->net.model, "context-unet") == 0 && !w->net.shortcut &&
        strstr(ddpm_last_error(), "'init_conv.shortcut.weight'")) {
        char msg[512];
        snprintf(msg, sizeof msg, "%s", ddpm_last_error());
        rc = ddpm_fail(rc, "%s; weights from the course's own ContextUnet have no learned shortcut: "
                           "add --shortcut none", msg);
    }
    if (rc) {
        ddpm_checkpoint_free(ck);
        return cli_fail(cmd, rc);
    }
    return 0;
}

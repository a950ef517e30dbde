/* cmd_export.c - `ddpm export`: a checkpoint's network written in another ecosystem's layout
 * (for now a diffusers folder, which UNet2DModel.from_pretrained and DDPMPipeline read). */
#include "cli.h"

#include <stdio.h>
#include <string.h>

int cmd_export(int argc, char **argv) {
    const char *ckpt = NULL, *diffusers = NULL;
    int no_ema = 0, quiet = 0;
    const cli_opt opts[] = {
        {"ckpt", CLI_STRING, &ckpt, "FILE", "checkpoint written by ddpm train", NULL},
        {"diffusers", CLI_STRING, &diffusers, "DIR", "write a diffusers pipeline folder: model_index.json, unet/config.json + diffusion_pytorch_model.safetensors, scheduler/scheduler_config.json", NULL},
        {"no-ema", CLI_FLAG, &no_ema, NULL, "export the raw weights instead of the EMA weights", NULL},
        {"quiet", CLI_FLAG, &quiet, NULL, "print nothing but errors", NULL},
    };
    int rc = cli_parse("export",
                       "Writes a checkpoint's network for other tools. --diffusers DIR takes a unet2d model "
                       "(diffusers' UNet2DModel: train with --model unet2d or load with sample --diffusers); "
                       "its schedule becomes a DDPMScheduler config.",
                       argc, argv, opts, (int)(sizeof opts / sizeof opts[0]));
    if (rc) return rc < 0 ? 0 : rc;
    if (!ckpt) return cli_usage_error("export", "--ckpt FILE is required");
    if (!diffusers) return cli_usage_error("export", "say what to write: --diffusers DIR");
    ddpm_checkpoint ck;
    if ((rc = ddpm_checkpoint_load(ckpt, &ck))) return cli_fail("export", rc);
    if (ck.ema && !no_ema) {
        memcpy(ck.model->params, ck.ema, sizeof(float) * ck.model->n_params);
        if (!quiet) printf("exporting the EMA weights (--no-ema for the raw ones)\n");
    }
    rc = ddpm_diffusers_save(diffusers, ck.model, &ck.schedule, ck.train.prediction);
    if (!rc && !quiet) cli_wrote(diffusers, "diffusers folder (DDPMPipeline)");
    ddpm_checkpoint_free(&ck);
    return cli_fail("export", rc);
}

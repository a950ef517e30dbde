/* cmd_export.c - `ddpm export`: a checkpoint's network written for other tools: a diffusers
 * folder (which UNet2DModel.from_pretrained and DDPMPipeline read) or a plain state dict. */
#include "cli.h"

#include <stdio.h>
#include <string.h>

int cmd_export(int argc, char **argv) {
    const char *ckpt = NULL, *diffusers = NULL, *weights = NULL;
    int no_ema = 0, ema = 0, quiet = 0;
    const cli_opt opts[] = {
        {"ckpt", CLI_STRING, &ckpt, "FILE", "checkpoint written by ddpm train", NULL},
        {"diffusers", CLI_STRING, &diffusers, "DIR", "write a diffusers pipeline folder: model_index.json, unet/config.json + diffusion_pytorch_model.safetensors, scheduler/scheduler_config.json", NULL},
        {"weights", CLI_STRING, &weights, "FILE.safetensors", "write the plain state dict: every tensor by its PyTorch name, batch-norm running statistics included (sample --weights and a PyTorch module's load_state_dict read it)", NULL},
        {"ema", CLI_FLAG, &ema, NULL, "export the EMA weights (the default when the checkpoint has them; with --ema a checkpoint without them is an error)", NULL},
        {"no-ema", CLI_FLAG, &no_ema, NULL, "export the raw weights instead of the EMA weights", NULL},
        {"quiet", CLI_FLAG, &quiet, NULL, "print nothing but errors", NULL},
    };
    int rc = cli_parse("export",
                       "Writes a checkpoint's network for other tools. --diffusers DIR takes a unet2d model "
                       "(diffusers' UNet2DModel: train with --model unet2d or load with sample --diffusers) "
                       "or a unet that maps to one; its schedule becomes a DDPMScheduler config. --weights "
                       "FILE writes any network's state dict. The checkpoint's ema.* tensors hold only the "
                       "learnable parameters; an export puts the EMA parameters beside the buffers (batch "
                       "norm's running statistics), as sampling uses them.",
                       argc, argv, opts, (int)(sizeof opts / sizeof opts[0]));
    if (rc) return rc < 0 ? 0 : rc;
    if (!ckpt) return cli_usage_error("export", "--ckpt FILE is required");
    if ((diffusers != NULL) + (weights != NULL) != 1)
        return cli_usage_error("export", "say what to write: --diffusers DIR or --weights FILE.safetensors");
    if (ema && no_ema) return cli_usage_error("export", "give --ema or --no-ema, not both");
    const char *ext = weights ? strrchr(weights, '.') : NULL;
    if (weights && (!ext || strcmp(ext, ".safetensors") != 0))
        return cli_usage_error("export", "--weights must end in .safetensors (got '%s')", weights);
    ddpm_checkpoint ck;
    if ((rc = ddpm_checkpoint_load(ckpt, &ck))) return cli_fail("export", rc);
    if (ema && !ck.ema) {
        ddpm_checkpoint_free(&ck);
        return cli_usage_error("export", "--ema: %s has no EMA weights (trained with --ema-decay 0, or a weights export)", ckpt);
    }
    if (ck.ema && !no_ema) {
        memcpy(ck.model->params, ck.ema, sizeof(float) * ck.model->n_params);
        if (!quiet) printf("exporting the EMA weights%s\n", ema ? "" : " (--no-ema for the raw ones)");
    }
    if (diffusers) {
        rc = ddpm_diffusers_save(diffusers, ck.model, &ck.schedule, ck.train.prediction);
        if (!rc && !quiet) cli_wrote(diffusers, "diffusers folder (DDPMPipeline)");
    } else {
        rc = ddpm_model_save_tensors(weights, ck.model);
        if (!rc && !quiet) cli_wrote(weights, "state dict (parameters and buffers)");
    }
    ddpm_checkpoint_free(&ck);
    return cli_fail("export", rc);
}

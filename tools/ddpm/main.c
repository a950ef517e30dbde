/* main.c - the ddpm command-line tool: dispatches to a subcommand. */
#include "cli.h"
#include "dist.h"

#include <stdio.h>
#include <string.h>

typedef struct {
    const char *name;
    int (*run)(int argc, char **argv);
    const char *summary;
} command;

static const command commands[] = {
    {"demo", cmd_demo, "train the tutorial MLP on the S-curve, sample, evaluate and plot"},
    {"train", cmd_train, "train a diffusion model (checkpoints, loss log, resume)"},
    {"sample", cmd_sample, "sample from a checkpoint (or a diffusers folder) with DDPM, DDIM, ..."},
    {"eval", cmd_eval, "measure sample quality: points (sliced Wasserstein, MMD), images (FD, KID, precision/recall, class accuracy)"},
    {"classifier", cmd_classifier, "train or test the image classifier whose features ddpm eval uses"},
    {"noise", cmd_noise, "draw the forward (noising) process of a data set"},
    {"invert", cmd_invert, "DDIM inversion: images to the x_T that sample --x-init takes back to them"},
    {"interpolate", cmd_interpolate, "samples along a slerp between two x_T (seeds or images) and two conditions"},
    {"schedule", cmd_schedule, "print every buffer of a beta schedule, one row per step"},
    {"export", cmd_export, "write a checkpoint's network as a diffusers folder or a plain state dict"},
    {"predict", cmd_predict, "evaluate the network once on given x_t, t (and condition): its raw output as .npy"},
    {"convert", cmd_convert, "write a PyTorch .pth/.pt/.bin state dict as a plain safetensors file"},
};
#define N_COMMANDS (int)(sizeof commands / sizeof commands[0])

static void print_usage(FILE *f) {
    fprintf(f,
            "ddpm %s - denoising diffusion models on the CPU\n\n"
            "usage: ddpm <command> [options]    (ddpm <command> --help for its options)\n\n"
            "commands:\n",
            DDPM_VERSION);
    for (int i = 0; i < N_COMMANDS; i++) fprintf(f, "  %-10s %s\n", commands[i].name, commands[i].summary);
    fprintf(f, "  %-10s %s\n", "help", "this message, or 'ddpm help <command>'");
}

int main(int argc, char **argv) {
    if (argc < 2) {
        print_usage(stderr);
        return CLI_EXIT_USAGE;
    }
    const char *name = argv[1];
    if (strcmp(name, "--version") == 0 || strcmp(name, "version") == 0) {
#ifdef DDPM_HAVE_MPI
        printf("ddpm %s (MPI)\n", DDPM_VERSION);
#else
        printf("ddpm %s\n", DDPM_VERSION);
#endif
        return 0;
    }
    if (strcmp(name, "help") == 0 || strcmp(name, "--help") == 0 || strcmp(name, "-h") == 0) {
        if (argc >= 3) {
            for (int i = 0; i < N_COMMANDS; i++)
                if (strcmp(argv[2], commands[i].name) == 0) {
                    char *args[] = {argv[2], "--help", NULL};
                    return commands[i].run(2, args) == CLI_EXIT_USAGE ? CLI_EXIT_USAGE : 0;
                }
            fprintf(stderr, "ddpm: unknown command '%s' (see 'ddpm help')\n", argv[2]);
            return CLI_EXIT_USAGE;
        }
        print_usage(stdout);
        return 0;
    }
    for (int i = 0; i < N_COMMANDS; i++)
        if (strcmp(name, commands[i].name) == 0) {
            if (dist_init(argc, argv)) {
                fprintf(stderr, "ddpm %s: %s\n", name, ddpm_last_error());
                dist_finish(CLI_EXIT_USAGE);
                return CLI_EXIT_USAGE;
            }
            /* Only train and sample share their work over ranks; any other command would run
             * N times and write the same files N times. */
            if (dist_size() > 1 && strcmp(name, "train") != 0 && strcmp(name, "sample") != 0) {
                if (dist_lead())
                    fprintf(stderr, "ddpm %s: runs in one process; only train and sample run over "
                            "several (started with %d)\n", name, dist_size());
                dist_set_agreed();
                dist_finish(CLI_EXIT_USAGE);
                return CLI_EXIT_USAGE;
            }
            int rc = commands[i].run(argc - 1, argv + 1);
            ddpm_release_caches();
            dist_finish(rc);
            return rc;
        }
    fprintf(stderr, "ddpm: unknown command '%s' (see 'ddpm help')\n", name);
    return CLI_EXIT_USAGE;
}

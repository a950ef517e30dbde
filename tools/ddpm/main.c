/* main.c - the ddpm command-line tool: dispatches to a subcommand. */
#include "cli.h"

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
    {"sample", cmd_sample, "sample from a checkpoint with DDPM or DDIM"},
    {"eval", cmd_eval, "measure sample quality against the data (sliced Wasserstein, MMD)"},
    {"noise", cmd_noise, "draw the forward (noising) process of a data set"},
    {"schedule", cmd_schedule, "print every buffer of a beta schedule, one row per step"},
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
        printf("ddpm %s\n", DDPM_VERSION);
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
            int rc = commands[i].run(argc - 1, argv + 1);
            ddpm_release_caches();
            return rc;
        }
    fprintf(stderr, "ddpm: unknown command '%s' (see 'ddpm help')\n", name);
    return CLI_EXIT_USAGE;
}

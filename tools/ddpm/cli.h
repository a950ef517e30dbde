/* cli.h - the command-line tool's option parser and shared helpers. */
#ifndef DDPM_CLI_H
#define DDPM_CLI_H

#include "ddpm.h"

#include <stdint.h>

typedef enum { CLI_INT, CLI_U64, CLI_FLOAT, CLI_DOUBLE, CLI_STRING, CLI_FLAG } cli_type;

typedef struct {
    const char *name;    /* without the leading "--" */
    cli_type type;
    void *ptr;           /* int*, uint64_t*, float*, double*, const char**, int* */
    const char *metavar; /* e.g. "T"; NULL for flags */
    const char *help;
    int *was_set;        /* optional: set to 1 when the option appears */
    double lo, hi;       /* numbers, when lo < hi: the value must lie in lo..hi (an error names
                          * the flag and the range); both 0: any value of the type */
} cli_opt;

/* Exit codes: 0 success, 1 a failure at run time, 2 bad usage or bad input, 128 + the signal
 * when stopped by one (130 for Ctrl-C, 143 for SIGTERM, 129 for SIGHUP). */
enum { CLI_EXIT_OK = 0, CLI_EXIT_FAIL = 1, CLI_EXIT_USAGE = 2, CLI_EXIT_INTERRUPTED = 130 };
/* The signal that stopped the work (SIGINT unless set): cli_fail's DDPM_ERR_INTERRUPTED exits
 * 128 + it. */
void cli_set_stop_signal(int sig);

/* Parses argv[1..argc) ("--name value" or "--name=value"). Returns -1 after printing help
 * (the caller exits 0), 0 on success, or CLI_EXIT_USAGE after printing a one-line error that names
 * the offending flag. */
int cli_parse(const char *cmd, const char *usage, int argc, char **argv, const cli_opt *opts,
              int n_opts);
/* Prints "ddpm CMD: message" to stderr and returns CLI_EXIT_USAGE. */
int cli_usage_error(const char *cmd, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
/* Prints "ddpm CMD: <last library error>" and maps a ddpm_status to an exit code. */
int cli_fail(const char *cmd, int status);

/* Creates a directory and its parents (like mkdir -p). */
int cli_mkdirs(const char *path);
/* Checked at start, before any work: an output directory (--out DIR) that is an existing file or
 * cannot be created or written, or an output file (FILE) that is a directory or whose directory
 * is missing or not writable, gets a one-line error naming the flag and the path (returns
 * CLI_EXIT_USAGE; 0 if fine). The directory is created if missing. */
int cli_check_out_dir(const char *cmd, const char *flag, const char *dir);
int cli_check_out_file(const char *cmd, const char *flag, const char *file);
/* Joins dir and name into a static rotating buffer. */
const char *cli_path(const char *dir, const char *name);
/* Prints "  wrote PATH" (the user sees every output file). */
void cli_wrote(const char *path, const char *what);

/* The subcommands. */
int cmd_schedule(int argc, char **argv);
int cmd_demo(int argc, char **argv);
int cmd_train(int argc, char **argv);
int cmd_sample(int argc, char **argv);
int cmd_eval(int argc, char **argv);
int cmd_noise(int argc, char **argv);
int cmd_invert(int argc, char **argv);
int cmd_interpolate(int argc, char **argv);
int cmd_export(int argc, char **argv);
int cmd_classifier(int argc, char **argv);
/* eval_images.c: `ddpm eval` of images (samples .npy or a folder), and its input test. */
int eval_images(int argc, char **argv);
int eval_is_images(const char *samples);
/* eval_nll.c: `ddpm eval --nll`, the likelihood bound of a checkpoint on its data's test images. */
int eval_nll(int argc, char **argv);
int cmd_convert(int argc, char **argv);
int cmd_predict(int argc, char **argv);

#endif

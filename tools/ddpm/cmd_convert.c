/* cmd_convert.c - `ddpm convert IN OUT.safetensors`: a PyTorch state dict (.pth/.pt/.bin, ZIP or
 * legacy; or a safetensors file, to pick one key's tensors) written as a plain safetensors file. */
#include "cli.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int ends_with(const char *s, const char *suffix) {
    size_t n = strlen(s), k = strlen(suffix);
    return n >= k && strcmp(s + n - k, suffix) == 0;
}

int cmd_convert(int argc, char **argv) {
    const char *key = NULL;
    int quiet = 0, list = 0;
    const cli_opt opts[] = {
        {"key", CLI_STRING, &key, "NAME", "the state dict under this key of a nested file (e.g. model, ema); '*' takes every tensor, with dotted names", NULL},
        {"list", CLI_FLAG, &list, NULL, "print every tensor's name, dtype and shape", NULL},
        {"quiet", CLI_FLAG, &quiet, NULL, "print nothing but errors", NULL},
    };
    /* the two file names are positional: take them out, hand the options to the parser */
    const char *files[2] = {NULL, NULL};
    int n_files = 0, n_rest = 1;
    char **rest = malloc((size_t)(argc + 1) * sizeof *rest);
    if (!rest) return cli_usage_error("convert", "out of memory");
    rest[0] = argv[0];
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (a[0] != '-' || !a[1]) {
            if (n_files == 2) {
                free(rest);
                return cli_usage_error("convert", "unexpected argument '%s' (give IN and OUT.safetensors)", a);
            }
            files[n_files++] = a;
            continue;
        }
        rest[n_rest++] = argv[i];
        if (strcmp(a, "--key") == 0 && i + 1 < argc) rest[n_rest++] = argv[++i];
    }
    int rc = cli_parse("convert",
                       "ddpm convert IN OUT.safetensors: reads IN, a PyTorch state dict saved by torch.save "
                       "(.pth, .pt, .bin; ZIP or legacy format; no Python needed, and nothing in the file is "
                       "run) or a safetensors file, and writes its tensors as a plain safetensors file.",
                       n_rest, rest, opts, (int)(sizeof opts / sizeof opts[0]));
    free(rest);
    if (rc) return rc < 0 ? 0 : rc;
    if (n_files != 2) return cli_usage_error("convert", "give IN (a .pth/.pt/.bin or .safetensors) and OUT.safetensors");
    if (!ends_with(files[1], ".safetensors"))
        return cli_usage_error("convert", "OUT must end in .safetensors (got '%s')", files[1]);
    ddpm_safetensors st;
    if ((rc = ddpm_weights_read(files[0], key, &st))) return cli_fail("convert", rc);
    size_t bytes = 0;
    for (size_t i = 0; i < st.n_tensors; i++) {
        const ddpm_tensor *t = &st.tensors[i];
        bytes += t->nbytes;
        if (list) {
            printf("  %-48s %-4s [", t->name, ddpm_dtype_name(t->dtype));
            for (int d = 0; d < t->ndim; d++) printf("%s%lld", d ? ", " : "", (long long)t->shape[d]);
            printf("]\n");
        }
    }
    rc = ddpm_safetensors_write(files[1], st.tensors, st.n_tensors, NULL, NULL, 0);
    if (!rc && !quiet) {
        printf("%zu tensors, %zu bytes of data, from %s\n", st.n_tensors, bytes, files[0]);
        cli_wrote(files[1], "safetensors");
    }
    ddpm_safetensors_free(&st);
    return cli_fail("convert", rc);
}

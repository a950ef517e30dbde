/* cmd_demo.c - `ddpm demo`: the main job (filled in by the 2-D issue). */
#include "cli.h"

#include <stdio.h>

int cmd_demo(int argc, char **argv) {
    const cli_opt opts[] = {{"dummy", CLI_FLAG, NULL, NULL, "unused", NULL}};
    int rc = cli_parse("demo", "Trains the tutorial MLP on the S-curve (not yet implemented).",
                       argc, argv, opts, 0);
    if (rc) return rc < 0 ? 0 : rc;
    printf("ddpm demo: not implemented yet\n");
    return 0;
}

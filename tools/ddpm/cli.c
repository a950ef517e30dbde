/* cli.c - option parsing shared by every subcommand. */
#include "cli.h"

#include <errno.h>
#include <float.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

int cli_usage_error(const char *cmd, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "ddpm %s: ", cmd);
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, " (see 'ddpm %s --help')\n", cmd);
    va_end(ap);
    return CLI_EXIT_USAGE;
}

static int stop_signal = 2; /* SIGINT */

void cli_set_stop_signal(int sig) { stop_signal = sig; }

int cli_fail(const char *cmd, int status) {
    if (status == DDPM_OK) return CLI_EXIT_OK;
    fprintf(stderr, "ddpm %s: %s\n", cmd, ddpm_last_error()[0] ? ddpm_last_error()
                                                                 : ddpm_status_name(status));
    switch (status) {
    case DDPM_ERR_INVALID:
    case DDPM_ERR_FORMAT:
    case DDPM_ERR_IO: return CLI_EXIT_USAGE;
    case DDPM_ERR_INTERRUPTED: return 128 + stop_signal;
    default: return CLI_EXIT_FAIL;
    }
}

/* "-" for the one-letter options (-n), else "--". */
static const char *dashes(const cli_opt *o) { return o->name[1] ? "--" : "-"; }

static void print_help(const char *cmd, const char *usage, const cli_opt *opts, int n) {
    printf("usage: ddpm %s [options]\n\n%s\n\noptions:\n", cmd, usage);
    for (int i = 0; i < n; i++) {
        char left[64];
        const char *dash = dashes(&opts[i]);
        if (opts[i].type == CLI_FLAG)
            snprintf(left, sizeof left, "%s%s", dash, opts[i].name);
        else
            snprintf(left, sizeof left, "%s%s %s", dash, opts[i].name,
                     opts[i].metavar ? opts[i].metavar : "VALUE");
        printf("  %-26s %s\n", left, opts[i].help);
    }
    printf("  %-26s %s\n", "--help", "show this help");
}

/* The range error of an option with lo < hi, or 0 when x is inside. */
static int out_of_range(const char *cmd, const cli_opt *o, double x, const char *v) {
    if (!(o->lo < o->hi) || (x >= o->lo && x <= o->hi)) return 0;
    if (o->type == CLI_INT || o->type == CLI_U64)
        return cli_usage_error(cmd, "%s%s must be in %.0f..%.0f (got '%s')", dashes(o), o->name,
                               o->lo, o->hi, v);
    return cli_usage_error(cmd, "%s%s must be in %g..%g (got '%s')", dashes(o), o->name, o->lo,
                           o->hi, v);
}

static int set_value(const char *cmd, const cli_opt *o, const char *v) {
    char *end;
    int rc;
    errno = 0;
    switch (o->type) {
    case CLI_INT: {
        long x = strtol(v, &end, 10);
        if (!*v || *end || errno || x < -2147483647L || x > 2147483647L)
            return cli_usage_error(cmd, "%s%s expects an integer, got '%s'", dashes(o), o->name, v);
        if ((rc = out_of_range(cmd, o, (double)x, v))) return rc;
        *(int *)o->ptr = (int)x;
        break;
    }
    case CLI_U64: {
        if (*v == '-') return cli_usage_error(cmd, "%s%s expects a non-negative integer, got '%s'", dashes(o), o->name, v);
        unsigned long long x = strtoull(v, &end, 10);
        if (!*v || *end || errno)
            return cli_usage_error(cmd, "%s%s expects a non-negative integer, got '%s'", dashes(o), o->name, v);
        if ((rc = out_of_range(cmd, o, (double)x, v))) return rc;
        *(uint64_t *)o->ptr = (uint64_t)x;
        break;
    }
    case CLI_FLOAT:
    case CLI_DOUBLE: {
        double x = strtod(v, &end);
        /* a float flag also refuses what float cannot hold (1e300 would become inf) */
        if (!*v || *end || errno || !isfinite(x) || (o->type == CLI_FLOAT && fabs(x) > FLT_MAX))
            return cli_usage_error(cmd, "%s%s expects a number, got '%s'", dashes(o), o->name, v);
        if ((rc = out_of_range(cmd, o, x, v))) return rc;
        if (o->type == CLI_FLOAT)
            *(float *)o->ptr = (float)x;
        else
            *(double *)o->ptr = x;
        break;
    }
    case CLI_STRING:
        if (!*v) return cli_usage_error(cmd, "%s%s expects a value, got an empty string", dashes(o),
                                     o->name);
        *(const char **)o->ptr = v;
        break;
    case CLI_FLAG: *(int *)o->ptr = 1; break;
    }
    if (o->was_set) *o->was_set = 1;
    return 0;
}

int cli_parse(const char *cmd, const char *usage, int argc, char **argv, const cli_opt *opts,
              int n_opts) {
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            print_help(cmd, usage, opts, n_opts);
            return -1;
        }
        /* "--name", or "-x" for the one-letter options (-n) */
        const int shortopt = a[0] == '-' && a[1] && a[1] != '-' && a[2] == 0;
        if (strncmp(a, "--", 2) != 0 && !shortopt)
            return cli_usage_error(cmd, "unexpected argument '%s'", a);
        const char *name = a + (shortopt ? 1 : 2), *eq = strchr(name, '=');
        size_t len = eq ? (size_t)(eq - name) : strlen(name);
        const cli_opt *o = NULL;
        for (int k = 0; k < n_opts; k++)
            if (strlen(opts[k].name) == len && strncmp(opts[k].name, name, len) == 0) o = &opts[k];
        if (!o) return cli_usage_error(cmd, "unknown option '--%.*s'", (int)len, name);
        const char *value;
        if (o->type == CLI_FLAG) {
            if (eq) return cli_usage_error(cmd, "--%s takes no value", o->name);
            value = "1";
        } else if (eq) {
            value = eq + 1;
        } else {
            if (i + 1 >= argc) return cli_usage_error(cmd, "--%s needs a value", o->name);
            value = argv[++i];
        }
        int rc = set_value(cmd, o, value);
        if (rc) return rc;
    }
    return 0;
}

/* ---- output files ---------------------------------------------------------------------------- */

int cli_mkdirs(const char *path) {
    char buf[4096];
    snprintf(buf, sizeof buf, "%s", path);
    for (char *p = buf + 1; *p; p++) {
        if (*p != '/') continue;
        *p = 0;
        if (mkdir(buf, 0755) != 0 && errno != EEXIST)
            return ddpm_fail(DDPM_ERR_IO, "%s: cannot create directory: %s", buf, strerror(errno));
        *p = '/';
    }
    if (mkdir(buf, 0755) != 0 && errno != EEXIST)
        return ddpm_fail(DDPM_ERR_IO, "%s: cannot create directory: %s", buf, strerror(errno));
    return DDPM_OK;
}

int cli_check_out_dir(const char *cmd, const char *flag, const char *dir) {
    struct stat st;
    if (stat(dir, &st) == 0 && !S_ISDIR(st.st_mode))
        return cli_usage_error(cmd, "%s %s is a file, not a directory", flag, dir);
    if (cli_mkdirs(dir))
        return cli_usage_error(cmd, "%s %s: cannot create it (%s)", flag, dir, ddpm_last_error());
    if (access(dir, W_OK | X_OK) != 0)
        return cli_usage_error(cmd, "%s %s: cannot write there: %s", flag, dir, strerror(errno));
    return 0;
}

int cli_check_out_file(const char *cmd, const char *flag, const char *file) {
    struct stat st;
    if (stat(file, &st) == 0 && S_ISDIR(st.st_mode))
        return cli_usage_error(cmd, "%s %s is a directory, not a file", flag, file);
    char dir[4096];
    snprintf(dir, sizeof dir, "%s", file);
    char *slash = strrchr(dir, '/');
    if (!slash) snprintf(dir, sizeof dir, ".");
    else if (slash == dir) dir[1] = 0; /* a file in / */
    else *slash = 0;
    if (stat(dir, &st) != 0)
        return cli_usage_error(cmd, "%s %s: its directory %s: %s", flag, file, dir, strerror(errno));
    if (!S_ISDIR(st.st_mode))
        return cli_usage_error(cmd, "%s %s: %s is not a directory", flag, file, dir);
    if (access(dir, W_OK | X_OK) != 0)
        return cli_usage_error(cmd, "%s %s: cannot write in %s: %s", flag, file, dir,
                               strerror(errno));
    return 0;
}

const char *cli_path(const char *dir, const char *name) {
    static char bufs[8][4096];
    static int k;
    char *b = bufs[k++ & 7];
    snprintf(b, 4096, "%s/%s", dir, name);
    return b;
}

void cli_wrote(const char *path, const char *what) { printf("  wrote %-40s %s\n", path, what); }

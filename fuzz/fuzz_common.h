/* fuzz_common.h - what every harness in fuzz/ shares: the library takes paths, so each input is
 * written to a file in a per-process directory under /tmp (reused for every input, removed at
 * exit) and the harness calls the public reader on that path.
 *
 * Each harness defines LLVMFuzzerTestOneInput; it is linked either with libFuzzer (DDPM_FUZZ=ON,
 * clang) or with replay_main.c (always), which runs it over the committed corpus in ctest. */
#ifndef DDPM_FUZZ_COMMON_H
#define DDPM_FUZZ_COMMON_H

#include "ddpm.h"

#include <dirent.h>
#include <fcntl.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Aborts with a message: a harness invariant failed (libFuzzer and replay both report it). */
#define FUZZ_CHECK(cond)                                                                      \
    do {                                                                                      \
        if (!(cond)) {                                                                        \
            fprintf(stderr, "fuzz: check failed: %s (%s:%d)\n", #cond, __FILE__, __LINE__);   \
            abort();                                                                          \
        }                                                                                     \
    } while (0)

static char fuzz_dir_[64];

/* Removes the files a harness wrote and its directory. */
static inline void fuzz_cleanup_(void) {
    DIR *d = opendir(fuzz_dir_);
    if (!d) return;
    struct dirent *e;
    char p[512];
    while ((e = readdir(d)))
        if (e->d_name[0] != '.') {
            snprintf(p, sizeof p, "%s/%s", fuzz_dir_, e->d_name);
            unlink(p);
        }
    closedir(d);
    rmdir(fuzz_dir_);
}

/* The harness's directory, /tmp/ddpm-fuzz-<pid> (created on first use). */
static inline const char *fuzz_dir(void) {
    if (!fuzz_dir_[0]) {
        snprintf(fuzz_dir_, sizeof fuzz_dir_, "/tmp/ddpm-fuzz-%ld", (long)getpid());
        if (mkdir(fuzz_dir_, 0700) != 0 && access(fuzz_dir_, W_OK) != 0) {
            perror(fuzz_dir_);
            abort();
        }
        atexit(fuzz_cleanup_);
    }
    return fuzz_dir_;
}

/* Writes n bytes to fuzz_dir()/name and returns the path (a static buffer per slot 0..3). */
static inline const char *fuzz_write(int slot, const char *name, const void *data, size_t n) {
    static char paths[4][512];
    char *p = paths[slot & 3];
    snprintf(p, sizeof paths[0], "%s/%s", fuzz_dir(), name);
    int fd = open(p, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    if (fd < 0) {
        perror(p);
        abort();
    }
    const unsigned char *b = data;
    for (size_t done = 0; done < n;) {
        ssize_t w = write(fd, b + done, n - done);
        if (w <= 0) {
            perror(p);
            abort();
        }
        done += (size_t)w;
    }
    close(fd);
    return p;
}

/* Removes fuzz_dir()/name if it exists (for harnesses whose file set changes between inputs). */
static inline void fuzz_remove(const char *name) {
    char p[512];
    snprintf(p, sizeof p, "%s/%s", fuzz_dir(), name);
    unlink(p);
}

/* The input as a NUL-terminated string (malloc'd), for the readers that take text. */
static inline char *fuzz_cstr(const uint8_t *data, size_t size) {
    char *s = malloc(size + 1);
    FUZZ_CHECK(s);
    if (size) memcpy(s, data, size);
    s[size] = 0;
    return s;
}

/* rc, after printing the library's message when DDPM_FUZZ_VERBOSE is set (to see why the
 * reader refused an input: `DDPM_FUZZ_VERBOSE=1 build/replay_<parser> FILE`). */
static inline int fuzz_rc(int rc) {
    static int verbose = -1;
    if (verbose < 0) verbose = getenv("DDPM_FUZZ_VERBOSE") != NULL;
    if (verbose) fprintf(stderr, rc ? "refused: %s\n" : "accepted%s\n", rc ? ddpm_last_error() : "");
    return rc;
}

/* Reads every float of a successfully loaded array: ASan sees any read outside it. */
static inline float fuzz_touch(const float *v, size_t n) {
    float acc = 0.0f;
    for (size_t i = 0; i < n; i++) acc += v[i] != v[i] ? 1.0f : 0.0f;
    return acc;
}

#endif

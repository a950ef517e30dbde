/* error.c - the thread-local last error message and small allocation and file helpers. */
#include "core/internal.h"

#include <dirent.h>
#include <errno.h>
#include <signal.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdarg.h>
#include <sys/stat.h>
#include <unistd.h>

static _Thread_local char last_error[1024];

const char *ddpm_last_error(void) { return last_error; }

int ddpm_fail(int code, const char *fmt, ...) {
    /* Formatted into a copy first: callers add context with ddpm_fail(rc, "%s: %s", path,
     * ddpm_last_error()), and vsnprintf writing the buffer it reads from is undefined (it
     * garbled those messages: "F: F:  weights, more than ..."). */
    char msg[sizeof last_error];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    memcpy(last_error, msg, sizeof msg);
    return code;
}

const char *ddpm_status_name(int code) {
    switch (code) {
    case DDPM_OK: return "ok";
    case DDPM_ERR_INVALID: return "invalid input";
    case DDPM_ERR_IO: return "I/O error";
    case DDPM_ERR_FORMAT: return "malformed file";
    case DDPM_ERR_NOMEM: return "out of memory";
    case DDPM_ERR_NUMERIC: return "numerical error";
    case DDPM_ERR_INTERRUPTED: return "interrupted";
    default: return "unknown error";
    }
}

void *ddpm_alloc(size_t n, size_t size) {
    if (ddpm_size_mul(n, size) == SIZE_MAX) {
        ddpm_fail(DDPM_ERR_NOMEM, "allocation of %zu x %zu bytes overflows", n, size);
        return NULL;
    }
    void *p = calloc(n ? n : 1, size ? size : 1);
    if (!p) ddpm_fail(DDPM_ERR_NOMEM, "out of memory allocating %zu bytes", n * size);
    return p;
}

void *ddpm_alloc_aligned(size_t n, size_t size) {
    size_t bytes = ddpm_size_mul(n, size);
    if (bytes == SIZE_MAX) {
        ddpm_fail(DDPM_ERR_NOMEM, "allocation of %zu x %zu bytes overflows", n, size);
        return NULL;
    }
    bytes = (bytes + 63) / 64 * 64;
    if (bytes == 0) bytes = 64;
    void *p = aligned_alloc(64, bytes);
    if (!p) {
        ddpm_fail(DDPM_ERR_NOMEM, "out of memory allocating %zu bytes", bytes);
        return NULL;
    }
    memset(p, 0, bytes);
    return p;
}

int ddpm_read_file(const char *path, unsigned char **data, size_t *size) {
    *data = NULL;
    *size = 0;
    FILE *f = fopen(path, "rb");
    if (!f) return ddpm_fail(DDPM_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fileno(f), &st) != 0 || !S_ISREG(st.st_mode)) {
        fclose(f);
        return ddpm_fail(DDPM_ERR_IO, "%s: not a regular file", path);
    }
    size_t n = (size_t)st.st_size;
    unsigned char *buf = malloc(n + 1);
    if (!buf) {
        fclose(f);
        return ddpm_fail(DDPM_ERR_NOMEM, "%s: out of memory reading %zu bytes", path, n);
    }
    if (n && fread(buf, 1, n, f) != n) {
        int e = ferror(f) ? errno : 0;
        free(buf);
        fclose(f);
        return ddpm_fail(DDPM_ERR_IO, "%s: read failed: %s", path, e ? strerror(e) : "short read");
    }
    fclose(f);
    buf[n] = 0;
    *data = buf;
    *size = n;
    return DDPM_OK;
}

static long long fail_writes_after = -1;
static int fail_writes_errno;

void ddpm_test_fail_writes_after(long long after, int err) {
    fail_writes_after = after;
    fail_writes_errno = err;
}

/* write(), or the failure ddpm_test_fail_writes_after asked for once `done` bytes are written. */
static ssize_t write_or_fail(int fd, const void *p, size_t n, long long done) {
    if (fail_writes_after >= 0) {
        if (done >= fail_writes_after) {
            errno = fail_writes_errno;
            return -1;
        }
        if ((long long)n > fail_writes_after - done) n = (size_t)(fail_writes_after - done);
    }
    return write(fd, p, n);
}

int ddpm_write_file_atomic(const char *path, const void *const *parts, const size_t *sizes,
                           size_t n_parts) {
    size_t len = strlen(path);
    char *tmp = malloc(len + 32);
    if (!tmp) return ddpm_fail(DDPM_ERR_NOMEM, "out of memory");
    snprintf(tmp, len + 32, "%s.tmp.%ld", path, (long)getpid());
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0) {
        int rc = ddpm_fail(DDPM_ERR_IO, "%s: cannot create: %s", tmp, strerror(errno));
        free(tmp);
        return rc;
    }
    long long done = 0;
    for (size_t i = 0; i < n_parts; i++) {
        const unsigned char *p = parts[i];
        size_t left = sizes[i];
        while (left > 0) {
            ssize_t w = write_or_fail(fd, p, left, done);
            if (w < 0 && errno == EINTR) continue;
            if (w <= 0) {
                int rc = ddpm_fail(DDPM_ERR_IO, "%s: write failed: %s", tmp,
                                   w < 0 ? strerror(errno) : "no progress");
                close(fd);
                unlink(tmp);
                free(tmp);
                return rc;
            }
            p += w;
            left -= (size_t)w;
            done += w;
        }
    }
    if (fsync(fd) != 0 || close(fd) != 0) {
        int rc = ddpm_fail(DDPM_ERR_IO, "%s: fsync/close failed: %s", tmp, strerror(errno));
        unlink(tmp);
        free(tmp);
        return rc;
    }
    if (rename(tmp, path) != 0) {
        int rc = ddpm_fail(DDPM_ERR_IO, "%s: cannot rename to %s: %s", tmp, path, strerror(errno));
        unlink(tmp);
        free(tmp);
        return rc;
    }
    /* Make the rename itself durable. */
    char *dircopy = strdup(path);
    if (dircopy) {
        int dfd = open(dirname(dircopy), O_RDONLY | O_DIRECTORY);
        if (dfd >= 0) {
            fsync(dfd);
            close(dfd);
        }
        free(dircopy);
    }
    free(tmp);
    return DDPM_OK;
}

int ddpm_remove_stale_temporaries(const char *path, int *removed) {
    if (removed) *removed = 0;
    char *dircopy = strdup(path), *basecopy = strdup(path);
    if (!dircopy || !basecopy) {
        free(dircopy);
        free(basecopy);
        return ddpm_fail(DDPM_ERR_NOMEM, "out of memory");
    }
    const char *dir = dirname(dircopy), *base = basename(basecopy);
    const size_t blen = strlen(base);
    int rc = DDPM_OK;
    DIR *d = opendir(dir);
    struct dirent *e;
    while (d && !rc && (e = readdir(d))) {
        /* BASE.tmp.DIGITS, as ddpm_write_file_atomic names them */
        if (strncmp(e->d_name, base, blen) != 0 || strncmp(e->d_name + blen, ".tmp.", 5) != 0)
            continue;
        const char *digits = e->d_name + blen + 5;
        char *end;
        errno = 0;
        const long pid = strtol(digits, &end, 10);
        if (end == digits || *end || errno || pid <= 0 || pid == (long)getpid()) continue;
        if (kill((pid_t)pid, 0) == 0 || errno != ESRCH) continue; /* alive (or not ours to judge) */
        const size_t n = strlen(dir) + 1 + strlen(e->d_name) + 1;
        char *full = malloc(n);
        if (!full) {
            rc = ddpm_fail(DDPM_ERR_NOMEM, "out of memory");
            break;
        }
        snprintf(full, n, "%s/%s", dir, e->d_name);
        if (unlink(full) != 0 && errno != ENOENT)
            rc = ddpm_fail(DDPM_ERR_IO, "%s: cannot remove a stale temporary file: %s", full,
                           strerror(errno));
        else if (removed)
            (*removed)++;
        free(full);
    }
    if (d) closedir(d);
    free(dircopy);
    free(basecopy);
    return rc;
}

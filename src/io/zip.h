/* zip.h - a minimal read-only ZIP reader over a file held in memory, for PyTorch's torch.save
 * archives (src/io/torch_file.c). Private to the io layer. */
#ifndef DDPM_IO_ZIP_H
#define DDPM_IO_ZIP_H

#include <stddef.h>
#include <stdint.h>

typedef struct {
    char *name;          /* NUL-terminated copy of the entry's name */
    size_t data_offset;  /* where its bytes start in the file */
    size_t size;         /* its length (stored entries: compressed size == size) */
    uint32_t crc32;      /* as the central directory records it */
} ddpm_zip_entry;

typedef struct {
    ddpm_zip_entry *entries;
    size_t n_entries;
} ddpm_zip;

/* Reads the central directory of buf[size] (zip64 records included). Every entry must be stored
 * (method 0, not encrypted), have a local header that agrees with the central directory, lie
 * inside the file before the central directory and not overlap another; names must be unique,
 * relative and free of ".." components and backslashes. Errors name `path` and the entry. */
int ddpm_zip_open(const char *path, const unsigned char *buf, size_t size, ddpm_zip *z);
/* The entry called name, or NULL. */
const ddpm_zip_entry *ddpm_zip_find(const ddpm_zip *z, const char *name);
/* Checks an entry's bytes against its CRC-32; the error names path and the entry. */
int ddpm_zip_check_crc(const char *path, const unsigned char *buf, const ddpm_zip_entry *e);
void ddpm_zip_free(ddpm_zip *z);

#endif

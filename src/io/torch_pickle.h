/* torch_pickle.h - the restricted unpickler behind the PyTorch file reader (torch_file.c).
 * Private to the io layer. It builds a tree of plain values (None, bool, int, float, str, bytes,
 * tuple, list, dict) plus the two things a state dict needs from torch: storage references (the
 * persistent ids) and tensors (storage, offset, shape, strides). Nothing from the file is ever
 * called: the few globals it accepts are names in a table, and REDUCE of one of them is
 * interpreted here. */
#ifndef DDPM_IO_TORCH_PICKLE_H
#define DDPM_IO_TORCH_PICKLE_H

#include "ddpm/io.h"

typedef enum {
    TP_NONE, TP_BOOL, TP_INT, TP_BIGINT, TP_FLOAT, TP_STR, TP_BYTES, TP_TUPLE, TP_LIST, TP_DICT,
    TP_GLOBAL, TP_STORAGE, TP_TENSOR
} tp_kind;

typedef struct tp_value tp_value;
struct tp_value {
    tp_kind kind;
    int64_t i;          /* BOOL, INT; GLOBAL: its row in the table; STORAGE, TENSOR: index */
    double f;           /* FLOAT */
    const char *s;      /* STR, BYTES, BIGINT (little-endian two's complement): into the pickle */
    size_t len;
    tp_value **items;   /* TUPLE, LIST: n items; DICT: n / 2 pairs, key then value */
    size_t n, cap;
    tp_value *next_;    /* every value of a load, for freeing */
};

typedef struct {
    char *key;                 /* the storage's name in the file ("0", "140093212")  */
    ddpm_dtype dtype;
    size_t numel;
    const unsigned char *data; /* numel elements, set by the file reader once it finds them */
    size_t offset_;            /* data's offset in the file (torch_file.c) */
} tp_storage;

typedef struct {
    size_t storage;            /* index into tp_state.storages */
    size_t offset;             /* in elements */
    int ndim;
    int64_t shape[DDPM_MAX_DIMS], stride[DDPM_MAX_DIMS];
    size_t numel;
} tp_tensor;

/* What one file's pickles share: its storages and tensors (a legacy file has several pickles;
 * only the main one refers to storages). */
typedef struct {
    const char *path;          /* for messages */
    tp_value *values_;
    tp_storage *storages;
    size_t n_storages, cap_storages_;
    tp_tensor *tensors;
    size_t n_tensors, cap_tensors_;
    int legacy;                /* persistent ids carry the legacy format's sixth field */
} tp_state;

/* Unpickles one pickle starting at buf[0] (of at most size bytes); *used is set to its length
 * (through STOP). Errors name st->path, the offset and the opcode or global. */
int tp_load(tp_state *st, const unsigned char *buf, size_t size, size_t *used, tp_value **out);
void tp_free(tp_state *st);
/* A str value equal to s. */
int tp_is_str(const tp_value *v, const char *s);
/* Copies at most cap - 1 bytes of s[len] into out, non-printable bytes as '?' (for messages). */
const char *tp_printable(const char *s, size_t len, char *out, size_t cap);

#endif

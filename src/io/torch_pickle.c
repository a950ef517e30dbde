/* torch_pickle.c - a restricted unpickler for torch.save state dicts. It reads the opcodes of
 * pickle protocol 2 that torch (1.x, 2.x: DEFAULT_PROTOCOL 2) emits, plus the few protocol 3/4
 * framing and string opcodes a file saved with a higher pickle_protocol uses, and accepts only
 * the globals a state dict needs:
 *   collections.OrderedDict                 called with () -> an empty dict
 *   torch._utils._rebuild_tensor_v2          (storage, offset, size, stride, requires_grad,
 *                                             hooks[, metadata]) -> a tensor view, bounds-checked
 *   torch._utils._rebuild_parameter          (tensor, requires_grad, hooks) -> the tensor
 *   torch._utils._rebuild_parameter_with_state  (tensor, requires_grad, hooks, state)
 *   torch.{Float,Double,Half,BFloat16,Long,Int,Char,Byte,Bool}Storage
 *                                            only inside a persistent id
 * Everything else (os.system, builtins.eval, any other class or function, REDUCE of a
 * non-callable, BUILD of anything but a dict) is refused with the file, the offset and the name.
 * Nothing is ever executed: REDUCE of an accepted global is interpreted here. The stack, the
 * marks and the memo are bounded, and every length is checked against the bytes left. */
#include "core/internal.h"
#include "io/torch_pickle.h"

#include <ctype.h>

enum { G_ORDERED_DICT, G_REBUILD_TENSOR, G_REBUILD_PARAM, G_REBUILD_PARAM_STATE, G_STORAGE };

static const struct {
    const char *module, *name;
    int what;
    ddpm_dtype dtype;
} globals[] = {
    {"collections", "OrderedDict", G_ORDERED_DICT, DDPM_DT_F32},
    {"torch._utils", "_rebuild_tensor_v2", G_REBUILD_TENSOR, DDPM_DT_F32},
    {"torch._utils", "_rebuild_parameter", G_REBUILD_PARAM, DDPM_DT_F32},
    {"torch._utils", "_rebuild_parameter_with_state", G_REBUILD_PARAM_STATE, DDPM_DT_F32},
    {"torch", "FloatStorage", G_STORAGE, DDPM_DT_F32},
    {"torch", "DoubleStorage", G_STORAGE, DDPM_DT_F64},
    {"torch", "HalfStorage", G_STORAGE, DDPM_DT_F16},
    {"torch", "BFloat16Storage", G_STORAGE, DDPM_DT_BF16},
    {"torch", "LongStorage", G_STORAGE, DDPM_DT_I64},
    {"torch", "IntStorage", G_STORAGE, DDPM_DT_I32},
    {"torch", "CharStorage", G_STORAGE, DDPM_DT_I8},
    {"torch", "ByteStorage", G_STORAGE, DDPM_DT_U8},
    {"torch", "BoolStorage", G_STORAGE, DDPM_DT_BOOL},
};
#define N_GLOBALS (sizeof globals / sizeof globals[0])

/* Legit state dicts stay far below these: torch batches SETITEMS by 1000, nests a few levels. */
#define MAX_STACK (1u << 20)
#define MAX_MARKS 4096u

const char *tp_printable(const char *s, size_t len, char *out, size_t cap) {
    size_t k = 0;
    for (size_t i = 0; i < len && k + 1 < cap; i++)
        out[k++] = isprint((unsigned char)s[i]) ? s[i] : '?';
    out[k] = 0;
    return out;
}

int tp_is_str(const tp_value *v, const char *s) {
    return v && v->kind == TP_STR && v->len == strlen(s) && memcmp(v->s, s, v->len) == 0;
}

void tp_free(tp_state *st) {
    for (tp_value *v = st->values_, *next; v; v = next) {
        next = v->next_;
        free(v->items);
        free(v);
    }
    for (size_t i = 0; i < st->n_storages; i++) free(st->storages[i].key);
    free(st->storages);
    free(st->tensors);
    const char *path = st->path;
    int legacy = st->legacy;
    memset(st, 0, sizeof *st);
    st->path = path;
    st->legacy = legacy;
}

/* ---- one load's machine state ----------------------------------------------------------- */

typedef struct {
    tp_state *st;
    const unsigned char *buf;
    size_t size, pos, op_pos; /* op_pos: where the current opcode began (for messages) */
    int op;
    tp_value **stack;
    size_t sp, stack_cap;
    size_t *marks;
    size_t n_marks, marks_cap;
    tp_value **memo;
    size_t memo_cap, memo_count; /* memo_count: the entries set, as len(memo) in Python */
} machine;

static int bad(machine *m, const char *fmt, const char *detail) {
    char what[512];
    snprintf(what, sizeof what, fmt, detail);
    return ddpm_fail(DDPM_ERR_FORMAT, "%s: pickle offset %zu (opcode 0x%02x): %s", m->st->path,
                     m->op_pos, (unsigned)m->op, what);
}

static const char *kind_name(tp_kind k) {
    static const char *const names[] = {"None", "bool", "int", "int", "float", "str", "bytes",
                                        "tuple", "list", "dict", "global", "storage", "tensor"};
    return (unsigned)k < sizeof names / sizeof names[0] ? names[k] : "?";
}

static tp_value *new_value(machine *m, tp_kind kind) {
    tp_value *v = calloc(1, sizeof *v);
    if (!v) {
        ddpm_fail(DDPM_ERR_NOMEM, "out of memory");
        return NULL;
    }
    v->kind = kind;
    v->next_ = m->st->values_;
    m->st->values_ = v;
    return v;
}

static int push(machine *m, tp_value *v) {
    if (!v) return DDPM_ERR_NOMEM;
    if (m->sp == m->stack_cap) {
        if (m->stack_cap >= MAX_STACK) return bad(m, "%s", "pickle stack deeper than 2^20 entries");
        size_t cap = m->stack_cap ? 2 * m->stack_cap : 256;
        tp_value **s = realloc(m->stack, cap * sizeof *s);
        if (!s) return ddpm_fail(DDPM_ERR_NOMEM, "out of memory");
        m->stack = s;
        m->stack_cap = cap;
    }
    m->stack[m->sp++] = v;
    return DDPM_OK;
}

static tp_value *pop(machine *m) {
    size_t floor = m->n_marks ? m->marks[m->n_marks - 1] : 0;
    if (m->sp <= floor) {
        bad(m, "%s", "pops an empty stack (malformed pickle)");
        return NULL;
    }
    return m->stack[--m->sp];
}

static tp_value *top(machine *m) {
    size_t floor = m->n_marks ? m->marks[m->n_marks - 1] : 0;
    if (m->sp <= floor) {
        bad(m, "%s", "reads an empty stack (malformed pickle)");
        return NULL;
    }
    return m->stack[m->sp - 1];
}

/* The items above the last mark: *first is their index on the stack; the mark is removed. */
static int pop_mark(machine *m, size_t *first) {
    if (!m->n_marks) return bad(m, "%s", "no MARK to pop to (malformed pickle)");
    *first = m->marks[--m->n_marks];
    return DDPM_OK;
}

static int append_items(machine *m, tp_value *seq, tp_value *const *items, size_t n) {
    if (n == 0) return DDPM_OK; /* items and seq->items may be NULL then */
    if (n > SIZE_MAX / 4 - seq->n) return ddpm_fail(DDPM_ERR_NOMEM, "out of memory");
    if (seq->n + n > seq->cap) {
        size_t cap = seq->cap ? seq->cap : 4;
        while (cap < seq->n + n) cap *= 2;
        tp_value **it = realloc(seq->items, cap * sizeof *it);
        if (!it) return ddpm_fail(DDPM_ERR_NOMEM, "out of memory");
        seq->items = it;
        seq->cap = cap;
    }
    memcpy(seq->items + seq->n, items, n * sizeof *items);
    seq->n += n;
    return DDPM_OK;
}

/* Appends the pair (key, val) to d. A repeated key is not looked for here (that would make a
 * dict of n keys cost n^2): torch never writes one, and the reader refuses a repeated name. */
static int dict_set(machine *m, tp_value *d, tp_value *key, tp_value *val) {
    if (d->kind != TP_DICT) return bad(m, "SETITEM on a %s, not a dict", kind_name(d->kind));
    if (key->kind != TP_STR && key->kind != TP_INT)
        return bad(m, "a dict key of type %s (state dicts have str keys)", kind_name(key->kind));
    tp_value *pair[2] = {key, val};
    return append_items(m, d, pair, 2);
}

static int need(machine *m, size_t n) {
    if (m->size - m->pos < n) return bad(m, "%s", "runs past the end of the pickle (truncated?)");
    return DDPM_OK;
}

static uint64_t le(const unsigned char *p, int n) {
    uint64_t v = 0;
    for (int i = n - 1; i >= 0; i--) v = v << 8 | p[i];
    return v;
}

/* ---- opcodes ------------------------------------------------------------------------------ */

static int op_string(machine *m, tp_kind kind, int len_bytes) {
    int rc = need(m, (size_t)len_bytes);
    if (rc) return rc;
    uint64_t len = le(m->buf + m->pos, len_bytes);
    m->pos += (size_t)len_bytes;
    if (len > m->size - m->pos) return bad(m, "%s", "a string runs past the end of the pickle");
    tp_value *v = new_value(m, kind);
    if (!v) return DDPM_ERR_NOMEM;
    v->s = (const char *)m->buf + m->pos;
    v->len = (size_t)len;
    m->pos += (size_t)len;
    return push(m, v);
}

static int op_memo_put(machine *m, uint64_t idx) {
    /* pickle numbers its memo entries 0, 1, 2, ...: an index far beyond the opcodes read so far
     * is not from a pickler and would only make the memo huge */
    if (idx > m->pos + 256) return bad(m, "%s", "memo index beyond anything a pickler writes");
    tp_value *v = top(m);
    if (!v) return DDPM_ERR_FORMAT;
    if (idx >= m->memo_cap) {
        size_t cap = m->memo_cap ? m->memo_cap : 64;
        while (cap <= idx) cap *= 2;
        tp_value **mm = realloc(m->memo, cap * sizeof *mm);
        if (!mm) return ddpm_fail(DDPM_ERR_NOMEM, "out of memory");
        memset(mm + m->memo_cap, 0, (cap - m->memo_cap) * sizeof *mm);
        m->memo = mm;
        m->memo_cap = cap;
    }
    if (!m->memo[idx]) m->memo_count++;
    m->memo[idx] = v;
    return DDPM_OK;
}

static int op_memo_get(machine *m, uint64_t idx) {
    if (idx >= m->memo_cap || !m->memo[idx]) return bad(m, "%s", "memo entry never stored");
    return push(m, m->memo[idx]);
}

/* GLOBAL / STACK_GLOBAL: module and name must be a row of the table. */
static int op_global(machine *m, const char *mod, size_t mod_len, const char *name, size_t name_len) {
    for (size_t g = 0; g < N_GLOBALS; g++)
        if (strlen(globals[g].module) == mod_len && memcmp(globals[g].module, mod, mod_len) == 0 &&
            strlen(globals[g].name) == name_len && memcmp(globals[g].name, name, name_len) == 0) {
            tp_value *v = new_value(m, TP_GLOBAL);
            if (!v) return DDPM_ERR_NOMEM;
            v->i = (int64_t)g;
            return push(m, v);
        }
    char a[96], b[96], full[200];
    snprintf(full, sizeof full, "%s.%s", tp_printable(mod, mod_len, a, sizeof a),
             tp_printable(name, name_len, b, sizeof b));
    return bad(m, "refuses the global '%s': a state dict needs only tensors, storages, "
               "OrderedDict and plain values (nothing in the file is run)", full);
}

static int op_text_global(machine *m) {
    const unsigned char *s = m->buf + m->pos, *end = m->buf + m->size;
    const unsigned char *nl1 = memchr(s, '\n', (size_t)(end - s));
    const unsigned char *nl2 = nl1 ? memchr(nl1 + 1, '\n', (size_t)(end - nl1 - 1)) : NULL;
    if (!nl2) return bad(m, "%s", "GLOBAL without its two lines (truncated?)");
    m->pos = (size_t)(nl2 + 1 - m->buf);
    return op_global(m, (const char *)s, (size_t)(nl1 - s), (const char *)nl1 + 1,
                     (size_t)(nl2 - nl1 - 1));
}

static int is_int(const tp_value *v) { return v->kind == TP_INT; }

/* An int tuple of at most DDPM_MAX_DIMS non-negative entries. */
static int int_tuple(machine *m, const tp_value *t, int64_t *out, int *n, const char *what) {
    if (t->kind != TP_TUPLE) return bad(m, "_rebuild_tensor_v2: %s is not a tuple", what);
    if (t->n > DDPM_MAX_DIMS) return bad(m, "_rebuild_tensor_v2: %s has more than 8 dimensions", what);
    for (size_t i = 0; i < t->n; i++) {
        if (!is_int(t->items[i]) || t->items[i]->i < 0)
            return bad(m, "_rebuild_tensor_v2: %s holds a negative or non-int entry", what);
        out[i] = t->items[i]->i;
    }
    *n = (int)t->n;
    return DDPM_OK;
}

/* _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad, hooks[, metadata]):
 * the view must lie inside its storage. */
static int rebuild_tensor(machine *m, const tp_value *args) {
    if (args->n != 6 && args->n != 7)
        return bad(m, "_rebuild_tensor_v2 with %s arguments (expected 6 or 7)",
                   args->n < 6 ? "too few" : "too many");
    tp_value *const *a = args->items;
    if (a[0]->kind != TP_STORAGE) return bad(m, "_rebuild_tensor_v2 of a %s, not a storage", kind_name(a[0]->kind));
    if (!is_int(a[1]) || a[1]->i < 0) return bad(m, "%s", "_rebuild_tensor_v2: bad storage offset");
    if (a[4]->kind != TP_BOOL) return bad(m, "%s", "_rebuild_tensor_v2: requires_grad is not a bool");
    if (a[5]->kind != TP_DICT) return bad(m, "%s", "_rebuild_tensor_v2: backward hooks are not a dict");
    tp_tensor t = {.storage = (size_t)a[0]->i, .offset = (size_t)a[1]->i};
    int ns = 0, rc;
    if ((rc = int_tuple(m, a[2], t.shape, &t.ndim, "size")) ||
        (rc = int_tuple(m, a[3], t.stride, &ns, "stride")))
        return rc;
    if (ns != t.ndim) return bad(m, "%s", "_rebuild_tensor_v2: size and stride differ in length");
    const tp_storage *s = &m->st->storages[t.storage];
    size_t numel = 1, last = t.offset; /* last: the largest element index the view reads */
    int overflow = 0;
    for (int d = 0; d < t.ndim; d++) {
        overflow |= __builtin_mul_overflow(numel, (size_t)t.shape[d], &numel);
        if (t.shape[d] > 0) {
            size_t span;
            overflow |= __builtin_mul_overflow((size_t)(t.shape[d] - 1), (size_t)t.stride[d], &span);
            overflow |= __builtin_add_overflow(last, span, &last);
        }
    }
    if (overflow) return bad(m, "%s", "_rebuild_tensor_v2: a tensor's size overflows");
    if (numel > 0 && last >= s->numel) {
        char k[64], msg[200];
        snprintf(msg, sizeof msg, "a tensor view reads element %zu of storage '%s', which holds "
                 "%zu: refused", last, tp_printable(s->key, strlen(s->key), k, sizeof k), s->numel);
        return bad(m, "%s", msg);
    }
    t.numel = numel;
    tp_state *st = m->st;
    if (st->n_tensors == st->cap_tensors_) {
        size_t cap = st->cap_tensors_ ? 2 * st->cap_tensors_ : 64;
        tp_tensor *nt = realloc(st->tensors, cap * sizeof *nt);
        if (!nt) return ddpm_fail(DDPM_ERR_NOMEM, "out of memory");
        st->tensors = nt;
        st->cap_tensors_ = cap;
    }
    st->tensors[st->n_tensors] = t;
    tp_value *v = new_value(m, TP_TENSOR);
    if (!v) return DDPM_ERR_NOMEM;
    v->i = (int64_t)st->n_tensors++;
    return push(m, v);
}

static int op_reduce(machine *m) {
    tp_value *args = pop(m), *fn = args ? pop(m) : NULL;
    if (!fn) return DDPM_ERR_FORMAT;
    if (fn->kind != TP_GLOBAL)
        return bad(m, "REDUCE of a %s (only whitelisted torch functions may be called)", kind_name(fn->kind));
    char full[128];
    snprintf(full, sizeof full, "%s.%s", globals[fn->i].module, globals[fn->i].name);
    if (args->kind != TP_TUPLE) return bad(m, "REDUCE of '%s' without an argument tuple", full);
    switch (globals[fn->i].what) {
    case G_ORDERED_DICT:
        if (args->n != 0) return bad(m, "%s", "collections.OrderedDict called with arguments");
        return push(m, new_value(m, TP_DICT));
    case G_REBUILD_TENSOR: return rebuild_tensor(m, args);
    case G_REBUILD_PARAM:
    case G_REBUILD_PARAM_STATE:
        if (args->n != (globals[fn->i].what == G_REBUILD_PARAM ? 3u : 4u) ||
            args->items[0]->kind != TP_TENSOR)
            return bad(m, "'%s' without a tensor and its flags", full);
        return push(m, args->items[0]);
    default: return bad(m, "REDUCE of '%s' (a storage type is not called in a state dict)", full);
    }
}

/* BUILD: only a dict's attributes (an OrderedDict state dict's _metadata) are accepted, and
 * ignored; they say nothing about the tensors. */
static int op_build(machine *m) {
    tp_value *state = pop(m), *obj = state ? top(m) : NULL;
    if (!obj) return DDPM_ERR_FORMAT;
    if (obj->kind != TP_DICT) return bad(m, "BUILD on a %s (only dicts take attributes here)", kind_name(obj->kind));
    if (state->kind != TP_DICT && state->kind != TP_NONE && state->kind != TP_TUPLE)
        return bad(m, "BUILD with a %s state", kind_name(state->kind));
    return DDPM_OK;
}

/* BINPERSID: ('storage', storage_type, key, location, numel[, view_metadata]) -> a storage. */
static int op_persid(machine *m) {
    tp_value *pid = pop(m);
    if (!pid) return DDPM_ERR_FORMAT;
    const size_t want = m->st->legacy ? 6 : 5;
    if (pid->kind != TP_TUPLE || pid->n != want || !tp_is_str(pid->items[0], "storage"))
        return bad(m, "%s", "a persistent id that is not a torch storage reference");
    tp_value *const *a = pid->items;
    if (a[1]->kind != TP_GLOBAL || globals[a[1]->i].what != G_STORAGE)
        return bad(m, "%s", "a storage reference without a storage type");
    if (a[2]->kind != TP_STR || a[2]->len == 0 || a[2]->len > 64 || a[3]->kind != TP_STR)
        return bad(m, "%s", "a storage reference whose key or location is not a short str");
    if (!is_int(a[4]) || a[4]->i < 0) return bad(m, "%s", "a storage reference with a bad size");
    if (m->st->legacy && a[5]->kind != TP_NONE)
        return bad(m, "%s", "a legacy storage view (torch < 1.0 files): not supported");
    for (size_t k = 0; k < a[2]->len; k++)
        if (!isalnum((unsigned char)a[2]->s[k]) && a[2]->s[k] != '_')
            return bad(m, "%s", "a storage key that is not alphanumeric");
    const ddpm_dtype dt = globals[a[1]->i].dtype;
    const size_t numel = (size_t)a[4]->i;
    if (ddpm_size_mul(numel, ddpm_dtype_size(dt)) == SIZE_MAX)
        return bad(m, "%s", "a storage size overflows");
    tp_state *st = m->st;
    size_t idx = st->n_storages;
    for (size_t i = 0; i < st->n_storages; i++)
        if (strlen(st->storages[i].key) == a[2]->len && memcmp(st->storages[i].key, a[2]->s, a[2]->len) == 0) {
            if (st->storages[i].dtype != dt || st->storages[i].numel != numel)
                return bad(m, "storage '%s' is referenced with two dtypes or sizes", st->storages[i].key);
            idx = i;
        }
    if (idx == st->n_storages) {
        if (st->n_storages == st->cap_storages_) {
            size_t cap = st->cap_storages_ ? 2 * st->cap_storages_ : 64;
            tp_storage *ns = realloc(st->storages, cap * sizeof *ns);
            if (!ns) return ddpm_fail(DDPM_ERR_NOMEM, "out of memory");
            st->storages = ns;
            st->cap_storages_ = cap;
        }
        tp_storage *s = &st->storages[st->n_storages];
        s->key = malloc(a[2]->len + 1);
        if (!s->key) return ddpm_fail(DDPM_ERR_NOMEM, "out of memory");
        memcpy(s->key, a[2]->s, a[2]->len);
        s->key[a[2]->len] = 0;
        s->dtype = dt;
        s->numel = numel;
        s->data = NULL;
        st->n_storages++;
    }
    tp_value *v = new_value(m, TP_STORAGE);
    if (!v) return DDPM_ERR_NOMEM;
    v->i = (int64_t)idx;
    return push(m, v);
}

static int op_tuple_n(machine *m, size_t n) {
    size_t floor = m->n_marks ? m->marks[m->n_marks - 1] : 0;
    if (m->sp - floor < n) return bad(m, "%s", "TUPLE of more items than the stack holds");
    tp_value *t = new_value(m, TP_TUPLE);
    if (!t) return DDPM_ERR_NOMEM;
    int rc = n ? append_items(m, t, m->stack + m->sp - n, n) : DDPM_OK;
    if (rc) return rc;
    m->sp -= n;
    return push(m, t);
}

static int op_from_mark(machine *m, int op) {
    size_t first = 0;
    int rc = pop_mark(m, &first);
    if (rc) return rc;
    const size_t n = m->sp - first;
    tp_value **items = n ? m->stack + first : NULL; /* the stack may not exist yet */
    m->sp = first;
    switch (op) {
    case 't': case 'l': {
        tp_value *t = new_value(m, op == 't' ? TP_TUPLE : TP_LIST);
        if (!t) return DDPM_ERR_NOMEM;
        if ((rc = append_items(m, t, items, n))) return rc;
        return push(m, t);
    }
    case 'd': {
        if (n % 2) return bad(m, "%s", "DICT of an odd number of items");
        tp_value *d = new_value(m, TP_DICT);
        if (!d) return DDPM_ERR_NOMEM;
        for (size_t i = 0; i < n && !rc; i += 2) rc = dict_set(m, d, items[i], items[i + 1]);
        return rc ? rc : push(m, d);
    }
    case 'u': {
        if (n % 2) return bad(m, "%s", "SETITEMS of an odd number of items");
        tp_value *d = top(m);
        if (!d) return DDPM_ERR_FORMAT;
        for (size_t i = 0; i < n && !rc; i += 2) rc = dict_set(m, d, items[i], items[i + 1]);
        return rc;
    }
    case 'e': {
        tp_value *l = top(m);
        if (!l) return DDPM_ERR_FORMAT;
        if (l->kind != TP_LIST) return bad(m, "APPENDS to a %s, not a list", kind_name(l->kind));
        return append_items(m, l, items, n);
    }
    default: return DDPM_OK; /* POP_MARK: the items are dropped */
    }
}

static int step(machine *m, int *stop) {
    m->op_pos = m->pos;
    m->op = m->buf[m->pos++];
    int rc;
    tp_value *v;
    switch (m->op) {
    case 0x80: /* PROTO */
        if ((rc = need(m, 1))) return rc;
        if (m->buf[m->pos] < 2 || m->buf[m->pos] > 5) return bad(m, "%s", "pickle protocol outside 2..5");
        m->pos++;
        return DDPM_OK;
    case 0x95: /* FRAME (protocol 4): a length that only helps buffered readers */
        if ((rc = need(m, 8))) return rc;
        m->pos += 8;
        return DDPM_OK;
    case '.': *stop = 1; return DDPM_OK;
    case '(':
        if (m->n_marks == m->marks_cap) {
            if (m->marks_cap >= MAX_MARKS) return bad(m, "%s", "MARKs nested deeper than 4096");
            size_t cap = m->marks_cap ? 2 * m->marks_cap : 32;
            size_t *mk = realloc(m->marks, cap * sizeof *mk);
            if (!mk) return ddpm_fail(DDPM_ERR_NOMEM, "out of memory");
            m->marks = mk;
            m->marks_cap = cap;
        }
        m->marks[m->n_marks++] = m->sp;
        return DDPM_OK;
    case '}': return push(m, new_value(m, TP_DICT));
    case ']': return push(m, new_value(m, TP_LIST));
    case ')': return push(m, new_value(m, TP_TUPLE));
    case 'N': return push(m, new_value(m, TP_NONE));
    case 0x88: case 0x89:
        if (!(v = new_value(m, TP_BOOL))) return DDPM_ERR_NOMEM;
        v->i = m->op == 0x88;
        return push(m, v);
    case 'K': case 'M': case 'J': {
        const int n = m->op == 'K' ? 1 : m->op == 'M' ? 2 : 4;
        if ((rc = need(m, (size_t)n))) return rc;
        if (!(v = new_value(m, TP_INT))) return DDPM_ERR_NOMEM;
        uint64_t u = le(m->buf + m->pos, n);
        v->i = n == 4 ? (int64_t)(int32_t)(uint32_t)u : (int64_t)u;
        m->pos += (size_t)n;
        return push(m, v);
    }
    case 0x8a: { /* LONG1: n bytes of little-endian two's complement */
        if ((rc = need(m, 1))) return rc;
        const size_t n = m->buf[m->pos++];
        if ((rc = need(m, n))) return rc;
        const unsigned char *p = m->buf + m->pos;
        m->pos += n;
        if (n > 8) { /* kept as bytes: the legacy format's magic number is one */
            if (!(v = new_value(m, TP_BIGINT))) return DDPM_ERR_NOMEM;
            v->s = (const char *)p;
            v->len = n;
            return push(m, v);
        }
        if (!(v = new_value(m, TP_INT))) return DDPM_ERR_NOMEM;
        uint64_t u = n ? le(p, (int)n) : 0;
        if (n && n < 8 && (p[n - 1] & 0x80)) u |= ~(uint64_t)0 << (8 * n); /* sign-extend */
        v->i = (int64_t)u;
        return push(m, v);
    }
    case 'G': { /* BINFLOAT: big-endian IEEE double */
        if ((rc = need(m, 8))) return rc;
        uint64_t u = 0;
        for (int i = 0; i < 8; i++) u = u << 8 | m->buf[m->pos + (size_t)i];
        m->pos += 8;
        if (!(v = new_value(m, TP_FLOAT))) return DDPM_ERR_NOMEM;
        memcpy(&v->f, &u, 8);
        return push(m, v);
    }
    case 'X': return op_string(m, TP_STR, 4);     /* BINUNICODE */
    case 0x8c: return op_string(m, TP_STR, 1);    /* SHORT_BINUNICODE */
    case 'T': return op_string(m, TP_STR, 4);     /* BINSTRING (a Python 2 str) */
    case 'U': return op_string(m, TP_STR, 1);     /* SHORT_BINSTRING */
    case 'B': return op_string(m, TP_BYTES, 4);   /* BINBYTES */
    case 'C': return op_string(m, TP_BYTES, 1);   /* SHORT_BINBYTES */
    case 'q':
        if ((rc = need(m, 1))) return rc;
        return op_memo_put(m, m->buf[m->pos++]);
    case 'r':
        if ((rc = need(m, 4))) return rc;
        m->pos += 4;
        return op_memo_put(m, le(m->buf + m->pos - 4, 4));
    case 0x94: return op_memo_put(m, m->memo_count); /* MEMOIZE: index len(memo) */
    case 'h':
        if ((rc = need(m, 1))) return rc;
        return op_memo_get(m, m->buf[m->pos++]);
    case 'j':
        if ((rc = need(m, 4))) return rc;
        m->pos += 4;
        return op_memo_get(m, le(m->buf + m->pos - 4, 4));
    case 'c': return op_text_global(m);
    case 0x93: { /* STACK_GLOBAL */
        tp_value *name = pop(m), *mod = name ? pop(m) : NULL;
        if (!mod) return DDPM_ERR_FORMAT;
        if (mod->kind != TP_STR || name->kind != TP_STR) return bad(m, "%s", "STACK_GLOBAL of non-strings");
        return op_global(m, mod->s, mod->len, name->s, name->len);
    }
    case 'R': return op_reduce(m);
    case 'b': return op_build(m);
    case 'Q': return op_persid(m);
    case 0x85: return op_tuple_n(m, 1);
    case 0x86: return op_tuple_n(m, 2);
    case 0x87: return op_tuple_n(m, 3);
    case 't': case 'l': case 'd': case 'u': case 'e': case '1': return op_from_mark(m, m->op);
    case 's': {
        tp_value *val = pop(m), *key = val ? pop(m) : NULL, *d = key ? top(m) : NULL;
        if (!d) return DDPM_ERR_FORMAT;
        return dict_set(m, d, key, val);
    }
    case 'a': {
        tp_value *val = pop(m), *l = val ? top(m) : NULL;
        if (!l) return DDPM_ERR_FORMAT;
        if (l->kind != TP_LIST) return bad(m, "APPEND to a %s, not a list", kind_name(l->kind));
        return append_items(m, l, &val, 1);
    }
    case '0': return pop(m) ? DDPM_OK : DDPM_ERR_FORMAT;
    case '2':
        if (!(v = top(m))) return DDPM_ERR_FORMAT;
        return push(m, v);
    default: {
        char op[8];
        snprintf(op, sizeof op, "0x%02x", (unsigned)m->op);
        return bad(m, "unsupported pickle opcode %s (not one torch.save writes for a state dict)", op);
    }
    }
}

int tp_load(tp_state *st, const unsigned char *buf, size_t size, size_t *used, tp_value **out) {
    machine m = {.st = st, .buf = buf, .size = size};
    int rc = DDPM_OK, stop = 0;
    *out = NULL;
    while (!rc && !stop) {
        if (m.pos >= m.size) {
            m.op_pos = m.pos;
            rc = bad(&m, "%s", "the pickle ends without STOP (truncated?)");
            break;
        }
        rc = step(&m, &stop);
    }
    if (!rc) {
        if (m.sp != 1 || m.n_marks)
            rc = bad(&m, "%s", "STOP with the stack not holding exactly one object");
        else
            *out = m.stack[0];
        *used = m.pos;
    }
    free(m.stack);
    free(m.marks);
    free(m.memo);
    return rc;
}

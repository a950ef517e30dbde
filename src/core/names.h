/* names.h - the one way enum values are spelled and parsed (schedule kinds, prediction types,
 * samplers, optimizers, ...). Every enum keeps its names in a table indexed by the value. */
#ifndef DDPM_CORE_NAMES_H
#define DDPM_CORE_NAMES_H

/* names[value], or "?" for a value outside the table. */
const char *ddpm_name_of(const char *const *names, int count, int value);
/* Finds name in the table and stores its index in *out; otherwise leaves *out alone and fails
 * with DDPM_ERR_INVALID: "unknown WHAT 'NAME' (expected a, b or c)". */
int ddpm_name_parse(const char *what, const char *const *names, int count, const char *name,
                    int *out);

/* Defines PREFIX_name(TYPE) and PREFIX_parse(const char *, TYPE *) over the table NAMES. */
#define DDPM_DEFINE_ENUM_NAMES(TYPE, PREFIX, WHAT, NAMES)                                        \
    const char *PREFIX##_name(TYPE value) {                                                     \
        return ddpm_name_of(NAMES, (int)(sizeof NAMES / sizeof *NAMES), (int)value);             \
    }                                                                                           \
    int PREFIX##_parse(const char *name, TYPE *out) {                                           \
        int v = 0, rc = ddpm_name_parse(WHAT, NAMES, (int)(sizeof NAMES / sizeof *NAMES), name,  \
                                        &v);                                                    \
        if (rc == DDPM_OK) *out = (TYPE)v;                                                      \
        return rc;                                                                              \
    }

#endif

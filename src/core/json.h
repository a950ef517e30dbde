/* json.h - small cJSON readers shared by the config parsers of every layer. */
#ifndef DDPM_CORE_JSON_H
#define DDPM_CORE_JSON_H

#include "core/internal.h"

#include <cjson/cJSON.h>

/* o[key] if it is a number, else def. */
static inline double ddpm_json_number_or(const cJSON *o, const char *key, double def) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    return cJSON_IsNumber(v) ? v->valuedouble : def;
}

/* The compact text of o (malloc'd: cJSON keeps the default allocator), and o freed; NULL when
 * out of memory (o may be NULL). */
static inline char *ddpm_json_print_and_free(cJSON *o) {
    char *s = o ? cJSON_PrintUnformatted(o) : NULL;
    cJSON_Delete(o);
    return s;
}

/* o[key] as an integer in [lo, hi] into *out (def if the key is absent or not a number);
 * DDPM_ERR_FORMAT naming what and key if it is out of range or fractional. The range is checked on
 * the double, before any conversion: converting 1e74 to an integer is undefined behaviour. */
static inline int ddpm_json_integer_or(const cJSON *o, const char *key, int64_t def, int64_t lo,
                                       int64_t hi, const char *what, int64_t *out) {
    const double v = ddpm_json_number_or(o, key, (double)def);
    if (!(v >= (double)lo && v <= (double)hi) || v != (double)(int64_t)v)
        return ddpm_fail(DDPM_ERR_FORMAT, "%s: \"%s\" is %g, not an integer in %lld..%lld", what, key,
                         v, (long long)lo, (long long)hi);
    *out = (int64_t)v;
    return DDPM_OK;
}

#endif

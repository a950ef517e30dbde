/* json.h - small cJSON readers shared by the config parsers of every layer. */
#ifndef DDPM_CORE_JSON_H
#define DDPM_CORE_JSON_H

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

#endif

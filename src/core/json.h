/* json.h - small cJSON readers shared by the config parsers of every layer. */
#ifndef DDPM_CORE_JSON_H
#define DDPM_CORE_JSON_H

#include <cjson/cJSON.h>

/* o[key] if it is a number, else def. */
static inline double ddpm_json_number_or(const cJSON *o, const char *key, double def) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    return cJSON_IsNumber(v) ? v->valuedouble : def;
}

#endif

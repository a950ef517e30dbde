/* names.c - enum values to names and back, with one error message for an unknown name. */
#include "core/names.h"

#include "core/internal.h"

const char *ddpm_name_of(const char *const *names, int count, int value) {
    return value >= 0 && value < count ? names[value] : "?";
}

int ddpm_name_parse(const char *what, const char *const *names, int count, const char *name,
                    int *out) {
    for (int i = 0; i < count; i++)
        if (strcmp(name, names[i]) == 0) {
            *out = i;
            return DDPM_OK;
        }
    char list[256] = "";
    for (int i = 0; i < count; i++) {
        strncat(list, names[i], sizeof list - strlen(list) - 1);
        if (i + 1 < count) strncat(list, i + 2 == count ? " or " : ", ", sizeof list - strlen(list) - 1);
    }
    return ddpm_fail(DDPM_ERR_INVALID, "unknown %s '%s' (expected %s)", what, name, list);
}

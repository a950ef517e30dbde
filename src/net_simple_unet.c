/* net_simple_unet.c - placeholder until the network lands: creating one fails with a clear message. */
#include "model_internal.h"

int ddpm_simple_unet_create(const void *config_cjson, uint64_t seed, ddpm_model **out) {
    (void)config_cjson, (void)seed;
    *out = NULL;
    return ddpm_fail(DDPM_ERR_INVALID, "the simple_unet network is not implemented yet");
}

/* net_unet.c - placeholder until the network lands: creating one fails with a clear message. */
#include "model_internal.h"

int ddpm_unet_create(const void *config_cjson, uint64_t seed, ddpm_model **out) {
    (void)config_cjson, (void)seed;
    *out = NULL;
    return ddpm_fail(DDPM_ERR_INVALID, "the unet network is not implemented yet");
}

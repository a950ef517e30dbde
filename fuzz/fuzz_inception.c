/* fuzz_inception.c - ddpm_inception_load on any bytes (`ddpm eval --inception`): the weights
 * reader (safetensors or a .pth, by content), then the network's own checks on what it read:
 * every BasicConv2d's tensors present, floats, of the kernel its place in the topology has and
 * taking the width its inputs give, batch norms of the conv's width, no negative variance, no
 * non-finite value before or after folding. A whole network is ~470 tensors, more than a fuzz
 * input holds, so inputs mostly stop at a missing tensor part way; one the loader accepts must
 * give finite-sized features for a small image when its memory is small. */
#include "fuzz_common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const char *path = fuzz_write(0, "inception.weights", data, size);
    ddpm_inception *net = NULL;
    if (fuzz_rc(ddpm_inception_load(path, &net)) != DDPM_OK) {
        FUZZ_CHECK(!net);
        return 0;
    }
    const int F = ddpm_inception_feature_dim(net);
    FUZZ_CHECK(F >= 1 && ddpm_inception_weight_count(net) >= 1);
    if (ddpm_inception_memory(net, 1) <= ((size_t)256 << 20)) {
        float x[16], *f = calloc((size_t)F, sizeof(float));
        FUZZ_CHECK(f);
        for (int i = 0; i < 16; i++) x[i] = (float)(i % 5) / 4.0f;
        FUZZ_CHECK(ddpm_inception_features(net, x, 1, 1, 4, 4, 0, f) == DDPM_OK);
        free(f);
    }
    ddpm_inception_free(net);
    return 0;
}

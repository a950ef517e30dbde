/* loss.c - classification losses, forward and backward side by side: the cross-entropy of class
 * logits (the image classifier's training loss, src/models/classifier.c). The diffusion losses
 * (L2, L1 on the network's output) are in train/trainer.c, next to their weighting. */
#include "core/internal.h"

#include <math.h>

double ddpm_cross_entropy_forward(float *probs, const float *logits, const int *labels, int B,
                                  int K) {
    double total = 0.0;
    for (int b = 0; b < B; b++) {
        const float *z = logits + (size_t)b * K;
        /* log-softmax in double with the maximum subtracted: exact for any logit range */
        double mx = z[0];
        for (int k = 1; k < K; k++) mx = z[k] > mx ? z[k] : mx;
        double s = 0.0;
        for (int k = 0; k < K; k++) s += exp((double)z[k] - mx);
        const double lse = mx + log(s);
        total += lse - (double)z[labels[b]];
        if (probs)
            for (int k = 0; k < K; k++) probs[(size_t)b * K + k] = (float)exp((double)z[k] - lse);
    }
    return total / (double)B;
}

void ddpm_cross_entropy_backward(float *dlogits, float dloss, const float *probs,
                                 const int *labels, int B, int K) {
    const float g = dloss / (float)B;
    for (int b = 0; b < B; b++) {
        const float *p = probs + (size_t)b * K;
        float *d = dlogits + (size_t)b * K;
        for (int k = 0; k < K; k++) d[k] += g * (p[k] - (k == labels[b] ? 1.0f : 0.0f));
    }
}

/* image_quality.c - sample quality of a diffusion model in one call, for a training loop that
 * measures as it trains (--eval-every) and for `ddpm eval`: n samples drawn with the given
 * sampler settings (in chunks, each item's noise addressed by its index), their features in a
 * classifier (models/classifier.c), the Frechet distance, KID and precision/recall against the
 * real features (report/image_metrics.c), and the class accuracy of conditional samples.
 * The train layer calls report/ here (metrics need only core/): train -> report is the one edge
 * this adds to docs/ARCHITECTURE.md's graph. */
#include "core/internal.h"

int ddpm_image_quality_of_model(ddpm_model *denoiser, const ddpm_schedule *s,
                                const ddpm_image_eval_config *c, ddpm_model *classifier,
                                const ddpm_points *real_features, ddpm_image_quality *q,
                                double *class_accuracy, float *samples_out) {
    if (classifier->n_classes <= 0)
        return ddpm_fail(DDPM_ERR_INVALID, "a %s is not a classifier", classifier->ops->kind);
    if (denoiser->channels != classifier->channels || denoiser->height != classifier->height ||
        denoiser->width != classifier->width)
        return ddpm_fail(DDPM_ERR_INVALID, "the model makes %dx%dx%d images, the classifier takes %dx%dx%d",
                         denoiser->channels, denoiser->height, denoiser->width, classifier->channels,
                         classifier->height, classifier->width);
    const int F = ddpm_classifier_feature_dim(classifier);
    if (!real_features || real_features->dim != F)
        return ddpm_fail(DDPM_ERR_INVALID, "the real features have dim %d, the classifier's %d",
                         real_features ? real_features->dim : 0, F);
    if (c->n < 2) return ddpm_fail(DDPM_ERR_INVALID, "image quality: %zu samples (at least 2)", c->n);
    const size_t n = c->n, d = denoiser->sample_numel, K = (size_t)denoiser->cond_dim;
    const int B = c->batch > 0 ? (c->batch < (int)n ? c->batch : (int)n) : (n < 100 ? (int)n : 100);
    float *x = samples_out ? samples_out : ddpm_alloc(n * d, sizeof(float));
    float *feat = ddpm_alloc(n * (size_t)F, sizeof(float));
    int *pred = ddpm_alloc(n, sizeof(int));
    ddpm_model_sampler ms = {0};
    int rc = (!x || !feat || !pred) ? DDPM_ERR_NOMEM : DDPM_OK;
    if (!rc) rc = ddpm_model_sampler_init(&ms, denoiser, B);
    ms.guidance = c->guidance;
    for (size_t start = 0; !rc && start < n; start += (size_t)B) {
        const int b = (int)(n - start < (size_t)B ? n - start : (size_t)B);
        ddpm_sample_opts so = c->sampler;
        so.first_item = c->sampler.first_item + start;
        so.x_is_init = 0;
        ms.cond = c->cond && K ? c->cond + start * K : NULL;
        rc = ddpm_sample_loop(s, &so, ddpm_model_denoise, &ms, b, d, x + start * d);
    }
    ddpm_model_sampler_free(&ms);
    if (!rc) rc = ddpm_classifier_run(classifier, x, n, feat, pred);
    if (!rc) {
        const ddpm_points pf = {.x = feat, .n = n, .dim = F};
        rc = ddpm_image_quality_compute(&pf, real_features, &c->metrics, q);
    }
    if (!rc && class_accuracy) {
        *class_accuracy = -1.0; /* no classes asked for */
        if (c->wanted)
            rc = ddpm_class_accuracy(pred, c->wanted, n, classifier->n_classes, NULL, NULL, class_accuracy);
    }
    if (x != samples_out) free(x);
    free(feat);
    free(pred);
    return rc;
}

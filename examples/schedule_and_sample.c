/* schedule_and_sample.c - libddpm from C: a schedule, and the reverse process driven by an
 * analytic "network" (the exact noise predictor for Gaussian data N(mu, sd^2)).
 *
 *   cc schedule_and_sample.c $(pkg-config --cflags --libs --static ddpm) -o example */
#include <ddpm.h>
#include <math.h>
#include <stdio.h>

typedef struct {
    const ddpm_schedule *s;
    float mu, sd;
} gauss;

/* E[eps | x_t] for x_0 ~ N(mu, sd^2): sqrt(1 - ab) (x_t - sqrt(ab) mu) / (ab sd^2 + 1 - ab) */
static int predict_eps(void *ctx, const float *x, int B, int t, const float *x0_prev, float *out) {
    (void)x0_prev;
    const gauss *g = ctx;
    const double ab = g->s->alphas_cumprod[t];
    for (int i = 0; i < B; i++)
        out[i] = (float)(sqrt(1 - ab) * (x[i] - sqrt(ab) * g->mu) / (ab * g->sd * g->sd + 1 - ab));
    return DDPM_OK;
}

int main(void) {
    ddpm_schedule_config c;
    ddpm_schedule_config_default(&c, DDPM_SCHEDULE_COSINE, 100);
    ddpm_schedule s;
    if (ddpm_schedule_init(&s, &c)) {
        fprintf(stderr, "%s\n", ddpm_last_error());
        return 1;
    }
    gauss g = {&s, 2.0f, 0.5f};
    enum { N = 20000 };
    static float x[N];
    ddpm_sample_opts o;
    ddpm_sample_opts_default(&o);
    o.sampler = DDPM_SAMPLER_DDIM;
    o.steps = 100;
    if (ddpm_sample_loop(&s, &o, predict_eps, &g, N, 1, x)) {
        fprintf(stderr, "%s\n", ddpm_last_error());
        return 1;
    }
    double m = 0, v = 0;
    for (int i = 0; i < N; i++) m += x[i];
    m /= N;
    for (int i = 0; i < N; i++) v += (x[i] - m) * (x[i] - m);
    printf("abar_T = %.3g; samples: mean %.3f (want 2), sd %.3f (want 0.5)\n",
           s.alphas_cumprod[s.n - 1], m, sqrt(v / N));
    ddpm_schedule_free(&s);
    return fabs(m - 2) < 0.05 && fabs(sqrt(v / N) - 0.5) < 0.05 ? 0 : 1;
}

/* conv_naive.c - naive direct-loop references for conv2d and the transposed conv2d, forward
 * and backward, accumulating the forward in double. The tests compare every fast path with
 * them. */
#include "core/internal.h"
#include "core/test_hooks.h"

/* Calls f(b, co, ci, oh, ow, ih, iw, ki, kj) for every in-bounds tap of a conv2d geometry. The
 * same loop nest serves conv2d (x at ih/iw, y at oh/ow) and, with the roles swapped, the
 * transposed conv, so the references share one index convention that is easy to read. */
#define FOR_EACH_TAP(d, body)                                                                      \
    for (int b = 0; b < (d)->B; b++)                                                               \
        for (int co = 0; co < (d)->C_out; co++)                                                    \
            for (int ci = 0; ci < (d)->C_in; ci++)                                                 \
                for (int ki = 0; ki < (d)->KH; ki++)                                               \
                    for (int kj = 0; kj < (d)->KW; kj++)                                           \
                        for (int oh = 0; oh < Hy; oh++)                                            \
                            for (int ow = 0; ow < Wy; ow++) {                                      \
                                const int ih = oh * (d)->stride - (d)->pad + ki;                   \
                                const int iw = ow * (d)->stride - (d)->pad + kj;                   \
                                if (ih < 0 || ih >= Hx || iw < 0 || iw >= Wx) continue;            \
                                body                                                               \
                            }

void ddpm_conv2d_forward_ref(float *out, const float *inp, const float *weight, const float *bias,
                             const ddpm_conv_dims *d) {
    DDPM_CHECK(!d->transposed);
    const int Hx = d->H, Wx = d->W, Hy = d->H_out, Wy = d->W_out;
    for (int b = 0; b < d->B; b++)
        for (int co = 0; co < d->C_out; co++)
            for (int oh = 0; oh < Hy; oh++)
                for (int ow = 0; ow < Wy; ow++) {
                    double s = bias ? bias[co] : 0.0;
                    for (int ci = 0; ci < d->C_in; ci++)
                        for (int ki = 0; ki < d->KH; ki++)
                            for (int kj = 0; kj < d->KW; kj++) {
                                const int ih = oh * d->stride - d->pad + ki;
                                const int iw = ow * d->stride - d->pad + kj;
                                if (ih < 0 || ih >= Hx || iw < 0 || iw >= Wx) continue;
                                s += (double)
                                         weight[((co * d->C_in + ci) * d->KH + ki) * d->KW + kj] *
                                     inp[(((size_t)b * d->C_in + ci) * Hx + ih) * Wx + iw];
                            }
                    out[(((size_t)b * d->C_out + co) * Hy + oh) * Wy + ow] = (float)s;
                }
}

void ddpm_conv2d_backward_ref(float *dinp, float *dweight, float *dbias, const float *dout,
                              const float *inp, const float *weight, const ddpm_conv_dims *d) {
    DDPM_CHECK(!d->transposed);
    const int Hx = d->H, Wx = d->W, Hy = d->H_out, Wy = d->W_out;
    FOR_EACH_TAP(d, {
        const size_t xi = (((size_t)b * d->C_in + ci) * Hx + ih) * Wx + iw;
        const size_t yi = (((size_t)b * d->C_out + co) * Hy + oh) * Wy + ow;
        const size_t wi = (((size_t)co * d->C_in + ci) * d->KH + ki) * d->KW + kj;
        if (dinp) dinp[xi] += weight[wi] * dout[yi];
        if (dweight) dweight[wi] += inp[xi] * dout[yi];
    })
    if (dbias)
        for (int b = 0; b < d->B; b++)
            for (int co = 0; co < d->C_out; co++)
                for (int i = 0; i < Hy * Wy; i++)
                    dbias[co] += dout[((size_t)b * d->C_out + co) * Hy * Wy + i];
}

void ddpm_conv_transpose2d_forward_ref(float *out, const float *inp, const float *weight,
                                       const float *bias, const ddpm_conv_dims *d) {
    DDPM_CHECK(d->transposed);
    /* In conv2d terms the transposed conv's output is the image (ih, iw) and its input the
     * positions (oh, ow): out[b, co, ih, iw] += x[b, ci, oh, ow] w[ci, co, ki, kj]. */
    const int Hx = d->H_out, Wx = d->W_out, Hy = d->H, Wy = d->W;
    const size_t per = (size_t)Hx * Wx;
    for (int b = 0; b < d->B; b++)
        for (int co = 0; co < d->C_out; co++)
            for (size_t i = 0; i < per; i++)
                out[((size_t)b * d->C_out + co) * per + i] = bias ? bias[co] : 0.0f;
    FOR_EACH_TAP(d, {
        out[(((size_t)b * d->C_out + co) * Hx + ih) * Wx + iw] +=
            inp[(((size_t)b * d->C_in + ci) * Hy + oh) * Wy + ow] *
            weight[(((size_t)ci * d->C_out + co) * d->KH + ki) * d->KW + kj];
    })
}

void ddpm_conv_transpose2d_backward_ref(float *dinp, float *dweight, float *dbias,
                                        const float *dout, const float *inp, const float *weight,
                                        const ddpm_conv_dims *d) {
    DDPM_CHECK(d->transposed);
    const int Hx = d->H_out, Wx = d->W_out, Hy = d->H, Wy = d->W;
    FOR_EACH_TAP(d, {
        const size_t yi = (((size_t)b * d->C_out + co) * Hx + ih) * Wx + iw; /* out */
        const size_t xi = (((size_t)b * d->C_in + ci) * Hy + oh) * Wy + ow;  /* inp */
        const size_t wi = (((size_t)ci * d->C_out + co) * d->KH + ki) * d->KW + kj;
        if (dinp) dinp[xi] += weight[wi] * dout[yi];
        if (dweight) dweight[wi] += inp[xi] * dout[yi];
    })
    if (dbias)
        for (int b = 0; b < d->B; b++)
            for (int co = 0; co < d->C_out; co++)
                for (size_t i = 0; i < (size_t)Hx * Wx; i++)
                    dbias[co] += dout[((size_t)b * d->C_out + co) * Hx * Wx + i];
}

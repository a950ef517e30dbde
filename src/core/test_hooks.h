/* test_hooks.h - library functions that exist for the tests and benchmarks only (not installed,
 * not in the public headers). Tests and benchmarks have src/ on their include path. */
#ifndef DDPM_CORE_TEST_HOOKS_H
#define DDPM_CORE_TEST_HOOKS_H

#include "ddpm.h"

/* models/tape_net.c: the k-th tape of a network that runs on the tape (one per slice that has
 * run; NULL past the last, or for the MLP), to read its statistics (ddpm_tape_get_stats). */
ddpm_tape *ddpm_model_tape(ddpm_model *m, int k);
/* models/unet.c: forward FLOPs per item of a DDPM U-Net (0 for other networks). */
double ddpm_unet_flops(const ddpm_model *m);

/* ops/conv_winograd.c: the Winograd input transform in AVX-512 vector loads where the CPU has
 * them (1, the default) or by the scalar reference copies (0); both give the same bits. */
void ddpm_conv_winograd_simd_input(int on);
/* ops/conv_naive.c: naive convolutions (direct loops, no workspace; the forwards sum in
 * double), the references every fast path is tested against. */
void ddpm_conv2d_forward_ref(float *out, const float *inp, const float *weight,
                             const float *bias, const ddpm_conv_dims *d);
void ddpm_conv2d_backward_ref(float *dinp, float *dweight, float *dbias, const float *dout,
                              const float *inp, const float *weight, const ddpm_conv_dims *d);
void ddpm_conv_transpose2d_forward_ref(float *out, const float *inp, const float *weight,
                                       const float *bias, const ddpm_conv_dims *d);
void ddpm_conv_transpose2d_backward_ref(float *dinp, float *dweight, float *dbias,
                                        const float *dout, const float *inp, const float *weight,
                                        const ddpm_conv_dims *d);

#endif

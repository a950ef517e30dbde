/*
 * ddpm.h - the public API of libddpm: denoising diffusion models on the CPU.
 *
 * Conventions
 *  - Every exported symbol starts with ddpm_ / DDPM_.
 *  - Functions that can fail on user input return a ddpm_status (0 = DDPM_OK) and leave a
 *    message for ddpm_last_error(); only the CLI decides to exit.
 *  - Arrays are float32, row-major; image tensors are NCHW. Shapes are written in comments in
 *    PyTorch order, e.g. // [B, C, H, W].
 *  - Timesteps t index the schedule's entries 0..n-1 (zero-based, as in PyTorch code): the
 *    usable steps are t0..n-1 (t0 = 0 except for the course's T+1-point schedule, where it is 1).
 *  - Randomness is explicit: every random draw is a pure function of (seed, stream, item, step),
 *    so results do not depend on batch size or thread count.
 *
 * The API is split by layer into the headers of include/ddpm/ (docs/ARCHITECTURE.md); this header includes
 * them all.
 */
#ifndef DDPM_H
#define DDPM_H

#include "ddpm/core.h"
#include "ddpm/diffusion.h"
#include "ddpm/nn.h"
#include "ddpm/io.h"
#include "ddpm/model.h"
#include "ddpm/train.h"
#include "ddpm/report.h"

#endif /* DDPM_H */

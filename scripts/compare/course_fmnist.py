#!/usr/bin/python3
"""course_fmnist.py - the PyTorch side of README's "ddpm vs the course's own code" comparison.

Trains the DeepLearning.AI course's ContextUnet (the module of scripts/fixtures/gen_course_nets.py,
with its one fix: a learned 1x1 shortcut, as ddpm's default `--shortcut learned`) on the 60,000
Fashion-MNIST training images with the settings of the README's ddpm run, then samples it with the
course's own DDPM loop (`sample_ddpm_context`: t = T..1, the network fed t / T, sigma_t^2 =
beta_t, no clipping) and writes the samples as an .npy that `ddpm eval --samples` measures.

Training, as `ddpm train --model context-unet` does it (src/train/trainer.c):
  - pixels v / 127.5 - 1; batches from a per-epoch permutation; one-hot class labels dropped
    (zeroed) with probability 0.1; t uniform in 1..T of the course's T + 1-point schedule
    (beta linear 1e-4..0.02, abar_0 = 1); eps-MSE; clip_grad_norm_(1.0); Adam lr 1e-3 decaying
    linearly to 0 over the steps (per step); EMA 0.999 with warm-up min(0.999, (1+s)/(10+s)).
  - sampling uses the EMA parameters with the batch-norm running statistics of the raw model
    (what ddpm does: its ema.* hold learnable parameters only).
The random streams differ from ddpm's (torch's generator): the comparison is of quality at equal
settings, over seeds, not of bits.

Usage: /usr/bin/python3 scripts/compare/course_fmnist.py --steps 6000 --out DIR [--n-feat 32]
           [--batch 64] [--seed 0] [--per-class 100] [--threads 2] [--sample-seed 0]
Writes DIR/samples.npy (N x 1 x 28 x 28 in [-1, 1], class i // per_class), DIR/train.log
(loss every 100 steps, wall seconds), DIR/model.pt (raw + EMA state dicts).
"""
import argparse
import gzip
import os
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "fixtures"))
from gen_course_nets import ContextUnet  # noqa: E402

FMNIST = "/usr/share/datasets/fashion-mnist"


def read_idx_images(path):
    with gzip.open(path, "rb") as f:
        b = f.read()
    n, h, w = (int.from_bytes(b[i:i + 4], "big") for i in (4, 8, 12))
    return np.frombuffer(b, np.uint8, offset=16).reshape(n, 1, h, w)


def read_idx_labels(path):
    with gzip.open(path, "rb") as f:
        b = f.read()
    return np.frombuffer(b, np.uint8, offset=8).astype(np.int64)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--n-feat", type=int, default=32)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--per-class", type=int, default=100)
    ap.add_argument("--sample-seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    os.makedirs(a.out, exist_ok=True)
    log = open(os.path.join(a.out, "train.log"), "w")

    x_all = torch.from_numpy(read_idx_images(os.path.join(FMNIST, "train-images-idx3-ubyte.gz")).copy())
    y_all = torch.from_numpy(read_idx_labels(os.path.join(FMNIST, "train-labels-idx1-ubyte.gz")).copy())
    x_all = x_all.float() / 127.5 - 1.0
    N, K, T = x_all.shape[0], 10, 500

    b = torch.linspace(1e-4, 0.02, T + 1, dtype=torch.float64)
    ab = torch.exp(torch.cumsum(torch.log(1 - b), 0))
    ab[0] = 1.0
    b_t, a_t, ab_t = b.float(), (1 - b).float(), ab.float()
    sab, s1mab = ab_t.sqrt(), (1 - ab_t).sqrt()

    model = ContextUnet(in_channels=1, n_feat=a.n_feat, n_cfeat=K, height=28)
    params = list(model.parameters())
    opt = torch.optim.Adam(params, lr=1e-3)
    ema = [p.detach().clone() for p in params]
    perm, pos = torch.randperm(N), 0
    model.train()
    t_start = time.perf_counter()
    smooth = None
    for step in range(a.steps):
        for g in opt.param_groups:
            g["lr"] = 1e-3 * (1.0 - step / a.steps)
        if pos + a.batch > N:
            perm, pos = torch.randperm(N), 0
        idx = perm[pos:pos + a.batch]
        pos += a.batch
        x0 = x_all[idx]
        c = F.one_hot(y_all[idx], K).float()
        c = c * torch.bernoulli(torch.full((a.batch, 1), 0.9))
        t = torch.randint(1, T + 1, (a.batch,))
        eps = torch.randn_like(x0)
        xt = sab[t].view(-1, 1, 1, 1) * x0 + s1mab[t].view(-1, 1, 1, 1) * eps
        loss = F.mse_loss(model(xt, t.float() / T, c), eps)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        d = min(0.999, (1.0 + step) / (10.0 + step))
        with torch.no_grad():
            torch._foreach_mul_(ema, d)
            torch._foreach_add_(ema, params, alpha=1 - d)
        smooth = loss.item() if smooth is None else 0.98 * smooth + 0.02 * loss.item()
        if (step + 1) % 100 == 0 or step + 1 == a.steps:
            print(f"step {step + 1} loss {loss.item():.4f} smoothed {smooth:.4f} "
                  f"wall {time.perf_counter() - t_start:.1f} s", file=log, flush=True)
    train_s = time.perf_counter() - t_start
    raw = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        for p, e in zip(params, ema):
            p.copy_(e)
    torch.save({"model": raw, "ema": model.state_dict()}, os.path.join(a.out, "model.pt"))

    # The course's sample_ddpm_context, batched by class.
    model.eval()
    torch.manual_seed(a.sample_seed)
    n = K * a.per_class
    labels = torch.arange(n) // a.per_class
    ctx = F.one_hot(labels, K).float()
    out = []
    s0 = time.perf_counter()
    with torch.no_grad():
        for lo in range(0, n, 100):
            c = ctx[lo:lo + 100]
            x = torch.randn(c.shape[0], 1, 28, 28)
            for i in range(T, 0, -1):
                tt = torch.full((c.shape[0], 1, 1, 1), i / T)
                z = torch.randn_like(x) if i > 1 else 0
                e = model(x, tt, c=c)
                x = (x - e * ((1 - a_t[i]) / (1 - ab_t[i]).sqrt())) / a_t[i].sqrt() + b_t[i].sqrt() * z
            out.append(x)
    sample_s = time.perf_counter() - s0
    np.save(os.path.join(a.out, "samples.npy"), torch.cat(out).numpy().astype(np.float32))
    np.save(os.path.join(a.out, "labels.npy"), labels.numpy())
    print(f"trained {a.steps} steps in {train_s:.1f} s ({a.steps / train_s:.2f} steps/s), "
          f"sampled {n} images (DDPM {T} steps) in {sample_s:.1f} s; load {os.getloadavg()[0]:.2f}",
          file=log, flush=True)
    print(open(os.path.join(a.out, "train.log")).read().splitlines()[-1])


if __name__ == "__main__":
    main()

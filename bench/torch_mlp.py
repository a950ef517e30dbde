#!/usr/bin/python3
"""torch_mlp.py - the PyTorch side of bench_mlp: the 2-D tutorial's MLPDiffusion trained and
sampled the way ddpm does it, timed the same way, printing the same JSON lines.

  training: batch 128 from a 10,000-point S-curve reshuffled every epoch (torch.randperm and
            index, much cheaper than the tutorial's DataLoader, which is measured with
            --dataloader), the tutorial's loss (antithetic t, eps prediction, mean squared error),
            Adam lr 1e-3, clip_grad_norm_(1.0), then an EMA of the weights with ddpm's decay
            min(0.999, (1 + step) / (10 + step)).
  sampling: 10,000 points x 100 steps of the tutorial's p_sample under torch.no_grad().

Usage: /usr/bin/python3 bench/torch_mlp.py [--threads N] [--steps 1000] [--repeats 5]
                                           [--sample-repeats 3] [--foreach] [--dataloader]
Timings: one warm-up block of `steps` steps, then `repeats` blocks; median and min of ms/step.
"""
import argparse
import json
import math
import os
import statistics
import time

import torch
import torch.nn as nn


class MLPDiffusion(nn.Module):
    """The tutorial's model, unchanged."""

    def __init__(self, n_steps, num_units=128):
        super().__init__()
        self.linears = nn.ModuleList([
            nn.Linear(2, num_units), nn.ReLU(),
            nn.Linear(num_units, num_units), nn.ReLU(),
            nn.Linear(num_units, num_units), nn.ReLU(),
            nn.Linear(num_units, 2),
        ])
        self.step_embeddings = nn.ModuleList([
            nn.Embedding(n_steps, num_units),
            nn.Embedding(n_steps, num_units),
            nn.Embedding(n_steps, num_units),
        ])

    def forward(self, x, t):
        for idx, embedding_layer in enumerate(self.step_embeddings):
            t_embedding = embedding_layer(t)
            x = self.linears[2 * idx](x)
            x += t_embedding
            x = self.linears[2 * idx + 1](x)
        x = self.linears[-1](x)
        return x


def s_curve(n, noise, gen):
    """sklearn.datasets.make_s_curve(n, noise) columns x and z, / 10 (the tutorial's data)."""
    t = 3 * math.pi * (torch.rand(n, generator=gen, dtype=torch.float64) - 0.5)
    x = torch.sin(t)
    y = 2.0 * torch.rand(n, generator=gen, dtype=torch.float64)
    z = torch.sign(t) * (torch.cos(t) - 1)
    X = torch.stack([x, y, z], dim=1) + noise * torch.randn(n, 3, generator=gen, dtype=torch.float64)
    return (X[:, [0, 2]] / 10.0).float()


def diffusion_loss_fn(model, x_0, alphas_bar_sqrt, one_minus_alphas_bar_sqrt, n_steps):
    """The tutorial's loss: antithetic timesteps, eps prediction, mean squared error."""
    batch_size = x_0.shape[0]
    t = torch.randint(0, n_steps, size=(batch_size // 2,))
    t = torch.cat([t, n_steps - 1 - t], dim=0)
    t = t.unsqueeze(-1)
    a = alphas_bar_sqrt[t]
    e = torch.randn_like(x_0)
    aml = one_minus_alphas_bar_sqrt[t]
    x = x_0 * a + e * aml
    output = model(x, t.squeeze(-1))
    return (e - output).square().mean()


def p_sample(model, x, t, betas, one_minus_alphas_bar_sqrt):
    """The tutorial's reverse step."""
    t = torch.tensor(t)
    coeff = betas[t] / one_minus_alphas_bar_sqrt[t]
    eps_theta = model(x, t)
    mean = (1 / (1 - betas[t]).sqrt()) * (x - (coeff * eps_theta))
    z = torch.randn_like(x)
    sigma_t = betas[t].sqrt()
    return mean + sigma_t * z


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: as found)")
    ap.add_argument("--steps", type=int, default=1000, help="training steps per timed block")
    ap.add_argument("--repeats", type=int, default=5, help="timed blocks (after one warm-up block)")
    ap.add_argument("--sample-repeats", type=int, default=3, help="timed sampling runs (after a warm-up)")
    ap.add_argument("--no-sample", action="store_true", help="skip the sampling measurement")
    ap.add_argument("--foreach", action="store_true",
                    help="Adam(foreach=True) and torch._foreach_* for the EMA (multi-tensor kernels)")
    ap.add_argument("--dataloader", action="store_true",
                    help="batches from the tutorial's DataLoader(shuffle=True) instead of randperm")
    args = ap.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    threads = torch.get_num_threads()
    torch.manual_seed(0)

    num_steps = 100
    betas = torch.sigmoid(torch.linspace(-6, 6, num_steps)) * (0.5e-2 - 1e-5) + 1e-5
    alphas_prod = torch.cumprod(1 - betas, 0)
    alphas_bar_sqrt = torch.sqrt(alphas_prod)
    one_minus_alphas_bar_sqrt = torch.sqrt(1 - alphas_prod)

    gen = torch.Generator().manual_seed(0)
    dataset = s_curve(10000, 0.1, gen)
    n = dataset.shape[0]
    batch = 128

    model = MLPDiffusion(num_steps)
    params = list(model.parameters())
    opt = torch.optim.Adam(params, lr=1e-3, foreach=True if args.foreach else None)
    ema = [p.detach().clone() for p in params]

    def batches():
        if args.dataloader:
            loader = torch.utils.data.DataLoader(dataset, batch_size=batch, shuffle=True)
            while True:
                yield from loader
        while True:
            perm = torch.randperm(n)
            for i in range(0, n, batch):
                yield dataset[perm[i:i + batch]]

    it = batches()
    step = 0

    def train(k):
        nonlocal step
        for _ in range(k):
            x0 = next(it)
            loss = diffusion_loss_fn(model, x0, alphas_bar_sqrt, one_minus_alphas_bar_sqrt, num_steps)
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            step += 1
            d = min(0.999, (1.0 + step) / (10.0 + step))
            with torch.no_grad():
                if args.foreach:
                    torch._foreach_mul_(ema, d)
                    torch._foreach_add_(ema, params, alpha=1.0 - d)
                else:
                    for e, p in zip(ema, params):
                        e.mul_(d).add_(p, alpha=1.0 - d)
        return loss

    ms = []
    for r in range(args.repeats + 1):  # r = 0 warms up
        t0 = time.perf_counter()
        loss = train(args.steps)
        ms.append((time.perf_counter() - t0) * 1e3 / args.steps)
    timed = ms[1:]
    env = {"OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"),
           "OPENBLAS_NUM_THREADS": os.environ.get("OPENBLAS_NUM_THREADS"),
           "OPENBLAS_CORETYPE": os.environ.get("OPENBLAS_CORETYPE")}
    common = {"threads": threads, "foreach": args.foreach, "dataloader": args.dataloader,
              "torch": torch.__version__, "env": env}
    print(json.dumps({"impl": "torch", "what": "train_step_ms", "batch": batch,
                      "median": round(statistics.median(timed), 5), "min": round(min(timed), 5),
                      "loss": round(float(loss), 5), **common}), flush=True)

    if args.no_sample:
        return
    model.eval()
    sms = []
    with torch.no_grad():
        for r in range(args.sample_repeats + 1):  # r = 0 warms up
            t0 = time.perf_counter()
            cur_x = torch.randn(10000, 2)
            for i in reversed(range(num_steps)):
                cur_x = p_sample(model, cur_x, i, betas, one_minus_alphas_bar_sqrt)
            sms.append((time.perf_counter() - t0) * 1e3)
    timed = sms[1:]
    print(json.dumps({"impl": "torch", "what": "sample_10000x100_ms",
                      "median": round(statistics.median(timed), 3), "min": round(min(timed), 3),
                      **common}), flush=True)


if __name__ == "__main__":
    main()

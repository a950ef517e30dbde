#!/usr/bin/python3
"""torch_images.py - the PyTorch side of bench_images: the same networks (the course's ContextUnet
and the DDPM U-Net, imported from the reference modules bench/torch_course_nets.py and
bench/torch_unet.py use), the same batches and the same measurements, printing the same JSON lines.

  train  N = 2000 random images in [-1, 1] with one-hot conditioning (item i has class i % K),
         batches from a per-epoch torch.randperm; per step: t uniform over the usable steps, eps,
         x_t = sqrt(abar) x0 + sqrt(1 - abar) eps, context dropout (Bernoulli keep 0.9), MSE on
         eps, backward, clip_grad_norm_(1.0), torch.optim.Adam(lr=1e-3), EMA 0.999 of a copy of
         the parameters (torch._foreach_mul_ / _foreach_add_). One warm-up step, then `repeats`
         timed blocks of k steps (default 5): images/s = B k / seconds.
  ddim   torch.no_grad(), model.eval(): DDIM (Song et al.) with eta 0, 25 steps with leading
         spacing (as ddpm's default), conditional (item i has class i % K), whole run timed.
  ddpm   Ho et al.'s Algorithm 2 (posterior variance, no noise at the last step), conditional;
         the k steps after the first (default k = 20) are timed and images/s = B / (T x seconds
         per step), extrapolated, as bench_images does.

The ContextUnet's time input is t / T as a float (t in 1..T of the course's T + 1-point schedule,
docs/networks-course.md); the U-Net takes the integer t in 0..T-1 and the class as a one-hot row.

Usage: /usr/bin/python3 bench/torch_images.py --net sprites|fmnist|unet --what train|ddpm|ddim
           [--repeats 3] [--threads 2] [--batch B] [--k K] [--label NAME]
"""
import argparse
import json
import os
import statistics
import sys
import time

import torch
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from torch_course_nets import ContextUnet  # noqa: E402  (scripts/fixtures/gen_course_nets.py)
from torch_unet import UNet  # noqa: E402  (scripts/fixtures/gen_unet.py)

N_DATA = 2000
DDIM_STEPS = 25

NETS = {
    "sprites": dict(kind="context", C=3, nf=64, K=5, h=16, T=500, B=100, course=True),
    "fmnist": dict(kind="context", C=1, nf=64, K=10, h=28, T=500, B=100, course=True),
    "unet": dict(kind="unet", C=1, K=10, h=28, T=1000, B=64, course=False),
}


def schedule(cfg):
    """(t0, n, abar[n] float32): the course's T + 1-point linear schedule with abar_0 = 1 (usable
    steps 1..T), or Ho et al.'s linear schedule of T points (steps 0..T-1); betas 1e-4..0.02."""
    T = cfg["T"]
    if cfg["course"]:
        b = torch.linspace(1e-4, 0.02, T + 1, dtype=torch.float64)
        ab = torch.exp(torch.cumsum(torch.log(1 - b), 0))
        ab[0] = 1.0
        return 1, T + 1, ab.float(), b.float()
    b = torch.linspace(1e-4, 0.02, T, dtype=torch.float64)
    return 0, T, torch.cumprod(1 - b, 0).float(), b.float()


def build(cfg):
    if cfg["kind"] == "context":
        model = ContextUnet(in_channels=cfg["C"], n_feat=cfg["nf"], n_cfeat=cfg["K"], height=cfg["h"])
        T = cfg["T"]

        def call(x, t, c):  # t: integer tensor [B]; the course feeds t / T
            return model(x, t.float() / T, c)
    else:
        model = UNet(in_channels=cfg["C"], height=cfg["h"], num_classes=cfg["K"],
                     num_timesteps=cfg["T"])

        def call(x, t, c):
            return model(x, t, c)
    return model, call


def one_hot(n, K):
    c = torch.zeros(n, K)
    c[torch.arange(n), torch.arange(n) % K] = 1.0
    return c


def bench_train(cfg, B, k, repeats):
    model, call = build(cfg)
    t0, n, ab, _ = schedule(cfg)
    sab, s1mab = ab.sqrt(), (1 - ab).sqrt()
    h, C = cfg["h"], cfg["C"]
    data = torch.rand(N_DATA, C, h, h) * 2 - 1
    cond = one_hot(N_DATA, cfg["K"])
    params = [p for p in model.parameters()]
    opt = torch.optim.Adam(params, lr=1e-3)
    ema = [p.detach().clone() for p in params]
    state = {"perm": torch.randperm(N_DATA), "pos": 0}
    model.train()

    def step():
        if state["pos"] + B > N_DATA:
            state["perm"], state["pos"] = torch.randperm(N_DATA), 0
        idx = state["perm"][state["pos"]:state["pos"] + B]
        state["pos"] += B
        x0, c = data[idx], cond[idx]
        t = torch.randint(t0, n, (B,))
        eps = torch.randn_like(x0)
        xt = sab[t].view(-1, 1, 1, 1) * x0 + s1mab[t].view(-1, 1, 1, 1) * eps
        keep = torch.bernoulli(torch.full((B, 1), 0.9))
        loss = F.mse_loss(call(xt, t, c * keep), eps)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        with torch.no_grad():
            torch._foreach_mul_(ema, 0.999)
            torch._foreach_add_(ema, params, alpha=1 - 0.999)
        return loss.item()

    step()  # warm-up
    rates = []
    for _ in range(repeats):
        s = time.perf_counter()
        for _ in range(k):
            loss = step()
        rates.append(B * k / (time.perf_counter() - s))
    print(f"torch_images: train: final loss {loss:.4f}", file=sys.stderr)
    return model, rates


def bench_sample(cfg, B, what, k, repeats):
    model, call = build(cfg)
    model.eval()
    t0, n, ab, betas = schedule(cfg)
    h, C, T = cfg["h"], cfg["C"], cfg["T"]
    c = one_hot(B, cfg["K"])
    abp = torch.cat([torch.ones(1), ab[:-1]])  # abar_{t-1}
    rates = []
    with torch.no_grad():
        call(torch.randn(B, C, h, h), torch.full((B,), n - 1, dtype=torch.long), c)  # warm-up
        for r in range(repeats):
            torch.manual_seed(r)
            if what == "ddim":
                ratio = T // DDIM_STEPS
                ts = [(DDIM_STEPS - 1 - j) * ratio + t0 for j in range(DDIM_STEPS)]
                s = time.perf_counter()
                x = torch.randn(B, C, h, h)
                for j, t in enumerate(ts):
                    tp = ts[j + 1] if j + 1 < len(ts) else t0 - 1
                    a, a_prev = ab[t], (ab[tp] if tp >= t0 else torch.tensor(1.0))
                    eps = call(x, torch.full((B,), t, dtype=torch.long), c)
                    x0 = (x - (1 - a).sqrt() * eps) / a.sqrt()
                    x = a_prev.sqrt() * x0 + (1 - a_prev).sqrt() * eps
                rates.append(B / (time.perf_counter() - s))
            else:  # DDPM, Algorithm 2; time the k steps after the first, then stop
                x = torch.randn(B, C, h, h)
                s = None
                for j, t in enumerate(range(n - 1, t0 - 1, -1)):
                    if j == 1:
                        s = time.perf_counter()
                    if j == k + 1:
                        break
                    eps = call(x, torch.full((B,), t, dtype=torch.long), c)
                    beta, a = betas[t], ab[t]
                    mean = (x - beta / (1 - a).sqrt() * eps) / (1 - beta).sqrt()
                    if t > t0:
                        var = beta * (1 - abp[t]) / (1 - a)  # posterior variance
                        x = mean + var.sqrt() * torch.randn_like(x)
                    else:
                        x = mean
                sec_per_step = (time.perf_counter() - s) / k
                rates.append(B / (T * sec_per_step))
    return model, rates


def load1():
    try:
        return float(open("/proc/loadavg").read().split()[0])
    except (OSError, ValueError):
        return -1.0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--net", required=True, choices=list(NETS))
    ap.add_argument("--what", required=True, choices=["train", "ddpm", "ddim"])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=0)
    ap.add_argument("--k", type=int, default=0, help="train: steps per block (5); ddpm: timed steps (20)")
    ap.add_argument("--label", default="", help="a name for the environment (kept in the JSON)")
    a = ap.parse_args()
    if a.repeats < 1 or a.k < 0 or a.batch < 0:
        ap.error("--repeats must be >= 1, --k and --batch >= 0")
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    cfg = NETS[a.net]
    B = a.batch or cfg["B"]
    k = a.k or (5 if a.what == "train" else 20)
    if a.what == "ddpm":
        k = min(k, cfg["T"] - 1)
    load_before = load1()
    if a.what == "train":
        model, rates = bench_train(cfg, B, k, a.repeats)
    else:
        model, rates = bench_sample(cfg, B, a.what, k, a.repeats)
    row = {"impl": "torch", "net": a.net, "what": a.what, "B": B,
           "images_per_s_median": round(statistics.median(rates), 4),
           "images_per_s_min": round(min(rates), 4), "runs": [round(v, 4) for v in rates],
           "threads": torch.get_num_threads(), "params": sum(p.numel() for p in model.parameters()),
           "T": cfg["T"]}
    if a.what == "train":
        row["steps_per_block"] = k
    elif a.what == "ddim":
        row.update(sampling_steps=DDIM_STEPS, extrapolated=False)
    else:
        row.update(sampling_steps=cfg["T"], extrapolated=True, timed_steps=k)
    row.update(load_before=load_before, load_after=load1(), label=a.label,
               openblas_num_threads=os.environ.get("OPENBLAS_NUM_THREADS", ""),
               torch=torch.__version__)
    print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()

#!/usr/bin/python3
"""torch_course_nets.py - the PyTorch side of bench_course_nets: the same networks (the tutorials'
modules from scripts/fixtures/gen_course_nets.py), batches and measurements, printing the same
JSON lines.

  fwd     model.eval() under torch.no_grad()
  fwdbwd  model.train(), zero_grad(set_to_none=False), out = model(...), out.backward(dout)

FLOPs are counted from the shapes each Conv2d / ConvTranspose2d / Linear sees (forward hooks, one
counting pass): 2 x multiply-adds; the backward counts twice the forward minus the input
gradients of layers whose input needs no gradient. The count equals bench_course_nets.c's.

Usage: /usr/bin/python3 bench/torch_course_nets.py [--net all] [--mode all] [--repeats 5]
                                                   [--threads 2] [--batch B]
"""
import argparse
import json
import os
import statistics
import sys
import time

import torch
import torch.nn as nn

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "scripts", "fixtures"))
from gen_course_nets import ContextUnet, SimpleUnet  # noqa: E402


NETS = {
    "sprites": dict(kind="context", C=3, nf=64, ncf=5, h=16, T=501, B=100),
    "fmnist": dict(kind="context", C=1, nf=64, ncf=10, h=28, T=501, B=100),
    "simple": dict(kind="simple", C=3, ch=(64, 128, 256, 512, 1024), E=32, h=64, T=300, B=8),
}


def count_flops(model, call):
    """(forward FLOPs, input-gradient FLOPs not computed) for one call, from layer shapes."""
    tot = [0.0, 0.0]

    def hook(mod, inp, out):
        x = inp[0]
        if isinstance(mod, nn.Conv2d):
            k = mod.kernel_size[0] * mod.kernel_size[1]
            v = 2.0 * out.numel() * mod.in_channels * k
        elif isinstance(mod, nn.ConvTranspose2d):
            k = mod.kernel_size[0] * mod.kernel_size[1]
            v = 2.0 * x.numel() * mod.out_channels * k
        else:
            v = 2.0 * x.numel() * mod.out_features
        tot[0] += v
        if not x.requires_grad:
            tot[1] += v

    hs = [m.register_forward_hook(hook) for m in model.modules()
          if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear))]
    model.train()
    call()
    for h in hs:
        h.remove()
    return tot


def run(name, cfg, modes, repeats, batch):
    B = batch or cfg["B"]
    g = torch.Generator().manual_seed(1)
    h = cfg["h"]
    x = torch.randn(B, cfg["C"], h, h, generator=g)
    dout = torch.randn(B, cfg["C"], h, h, generator=g)
    t = torch.randint(0, cfg["T"], (B,), generator=g)
    if cfg["kind"] == "context":
        model = ContextUnet(in_channels=cfg["C"], n_feat=cfg["nf"], n_cfeat=cfg["ncf"], height=h)
        c = torch.zeros(B, cfg["ncf"])
        c[torch.arange(B), torch.arange(B) % cfg["ncf"]] = 1.0
        tt = (t.float() / (cfg["T"] - 1)).view(-1, 1, 1, 1)

        def call():
            return model(x, tt, c)
    else:
        model = SimpleUnet(image_channels=cfg["C"], down_channels=cfg["ch"], time_emb_dim=cfg["E"])

        def call():
            return model(x, t)

    f_fwd, f_nodin = count_flops(model, call)
    for mode in modes:
        ms = []
        for r in range(repeats + 1):  # r = 0: warm-up
            if mode == "fwd":
                model.eval()
                t0 = time.perf_counter()
                with torch.no_grad():
                    call()
            else:
                model.train()
                t0 = time.perf_counter()
                model.zero_grad(set_to_none=False)
                call().backward(dout)
            ms.append((time.perf_counter() - t0) * 1e3)
        med = statistics.median(ms[1:])
        gflop = (f_fwd if mode == "fwd" else 3 * f_fwd - f_nodin) * 1e-9
        gflops = gflop / (med * 1e-3)
        print(json.dumps({"impl": "torch", "net": name, "mode": mode, "B": B,
                          "median_ms": round(med, 3), "min_ms": round(min(ms[1:]), 3),
                          "ms_per_image": round(med / B, 4), "gflop": round(gflop, 4),
                          "gflops": round(gflops, 2),
                          "threads": torch.get_num_threads(), "torch": torch.__version__}),
              flush=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--net", default="all", choices=["all"] + list(NETS))
    ap.add_argument("--mode", default="all", choices=["all", "fwd", "fwdbwd"])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=0)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    modes = ["fwd", "fwdbwd"] if a.mode == "all" else [a.mode]
    for name, cfg in NETS.items():
        if a.net in ("all", name):
            run(name, cfg, modes, a.repeats, a.batch)


if __name__ == "__main__":
    main()

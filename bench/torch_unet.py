"""PyTorch side of bench/run_unet.sh: the same U-Net (scripts/fixtures/gen_unet.py's UNet, the
reference module of ddpm's "unet"), same configurations and batches as bench/bench_unet.c, on
OMP_NUM_THREADS threads (default 2). Prints one JSON line per measurement with every timed repetition.

  forward:           model.eval(), torch.no_grad()
  forward+backward:  model.train(), zero_grad(set_to_none=True), out.backward(dout)

Usage: python3 torch_unet.py [reps] [28|32]"""
import json
import os
import sys
import time

import torch
import torch.nn as nn

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "scripts", "fixtures"))
from gen_unet import AttnBlock, UNet, randomize  # noqa: E402


def count_flops(model, x, t):
    """Forward FLOPs per image (2 per multiply-add) of convolutions, linear layers and the
    attention products, from hooks: the same count as ddpm_unet_flops."""
    total = [0]

    def conv(m, inp, out):
        total[0] += 2 * out.numel() * m.in_channels * m.kernel_size[0] * m.kernel_size[1]

    def linear(m, inp, out):
        total[0] += 2 * out.numel() * m.in_features

    def attn(m, inp, out):
        B, C, H, W = inp[0].shape
        total[0] += 4 * B * (H * W) ** 2 * m.heads * m.dim_head  # q^T k and v P^T

    hooks = []
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            hooks.append(m.register_forward_hook(conv))
        elif isinstance(m, nn.Linear):
            hooks.append(m.register_forward_hook(linear))
        elif isinstance(m, AttnBlock):
            hooks.append(m.register_forward_hook(attn))
    with torch.no_grad():
        model(x, t)
    for h in hooks:
        h.remove()
    return total[0] / x.shape[0]


def run(size, reps):
    C, B = (1, 64) if size == 28 else (3, 32)
    torch.manual_seed(0)
    model = UNet(in_channels=C, height=size)
    randomize(model, torch.Generator().manual_seed(1))
    x = torch.randn(B, C, size, size)
    t = torch.arange(B) * 997 % 1000
    dout = torch.randn(B, C, size, size)
    flops = count_flops(model, x, t)
    for what in ("fwd", "fwd+bwd"):
        times = []
        for r in range(-1, reps):  # r = -1 warms up
            t0 = time.perf_counter()
            if what == "fwd":
                model.eval()
                with torch.no_grad():
                    model(x, t)
            else:
                model.train()
                model.zero_grad(set_to_none=True)
                model(x, t).backward(dout)
            if r >= 0:
                times.append((time.perf_counter() - t0) * 1e3)
        print(json.dumps({"impl": "torch", "config": f"{size}x{size}x{C}", "batch": B, "what": what,
                          "fwd_flops_per_image": flops, "times_ms": [round(v, 3) for v in times]}),
              flush=True)


def main():
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))
    reps = int(sys.argv[1]) if len(sys.argv) > 1 else 5
    only = int(sys.argv[2]) if len(sys.argv) > 2 else 0
    for size in (28, 32):
        if only in (0, size):
            run(size, reps)


if __name__ == "__main__":
    main()

#!/usr/bin/env bash
# Data-parallel training on this machine, and a scaling model built from what it measures.
#
#   bench/run_mpi.sh BUILD_DIR [mlp_steps] [unet_steps]
#
# Measured (one line each): training steps/s of `ddpm train` (its own progress figure: the
# training loop only, start-up excluded) for the MLP (s-curve, batch 128) and the default U-Net
# (Fashion-MNIST 28x28, batch 64) as
#   1 process x 2 threads, one float batch (the default)
#   1 process x 2 threads, --deterministic (micro-batches of 16, exact sums)
#   2 processes x 1 thread, --deterministic (mpirun; shared memory between the processes)
# and the mean time of the gradient reduction per step (DDPM_DIST_TIMING=1, rank 0: its wait for
# the other rank included).
# Modelled (printed after): the ring allreduce of the exact 128-bit gradients over 8, 64 and 512
# processes on 10, 25 and 100 Gbit/s networks, the expected efficiency at the README's global
# batch, and the global batch that keeps the efficiency at 90%. The inputs it takes from the
# measurements are said; the network figures are assumptions.
set -euo pipefail
build=${1:?usage: bench/run_mpi.sh BUILD_DIR [mlp_steps] [unet_steps]}
mlp_steps=${2:-3000}
unet_steps=${3:-30}
ddpm="$build/ddpm"
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
mpi=(mpirun --allow-run-as-root --oversubscribe --bind-to none)
echo "# $(date -u +%FT%TZ) $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(nproc) cores, kernels $("$ddpm" train --data s-curve --steps 1 --out "$tmp/isa" 2>/dev/null | sed -n 's/.*thread[s]*, \([a-z0-9]*\) kernels.*/\1/p'), load $(cut -d' ' -f1 /proc/loadavg)"

# run NAME LAYOUT ARGS...: prints steps/s (the last progress line) and the reduction time
run() {
  local name=$1 layout=$2; shift 2
  local log="$tmp/$name-$layout.log"
  case $layout in
    1x2) OMP_NUM_THREADS=2 "$ddpm" train "$@" --out "$tmp/r" --log-every 1000000 >"$log" 2>&1 ;;
    1x2det) OMP_NUM_THREADS=2 "$ddpm" train "$@" --deterministic --out "$tmp/r" --log-every 1000000 >"$log" 2>&1 ;;
    2x1det) DDPM_DIST_TIMING=1 "${mpi[@]}" -np 2 -x OMP_NUM_THREADS=1 -x DDPM_DIST_TIMING \
              "$ddpm" train "$@" --deterministic --out "$tmp/r" --log-every 1000000 >"$log" 2>&1 ;;
  esac
  local sps red params
  sps=$(grep -o '[0-9.]* steps/s' "$log" | tail -1 | cut -d' ' -f1)
  red=$(sed -n 's/.*reductions, \([0-9.]*\) ms each.*/\1/p' "$log")
  params=$(sed -n 's/.*(\([0-9]*\) parameters).*/\1/p' "$log" | head -1)
  echo "{\"net\":\"$name\",\"layout\":\"$layout\",\"steps_per_s\":${sps:-null},\"reduce_ms\":${red:-null},\"params\":${params:-null}}"
}
mlp=(--data s-curve --steps "$mlp_steps" --save-every 0)
unet=(--data fashion-mnist --model unet --steps "$unet_steps" --save-every 0 --sample-every 0)
for layout in 1x2 1x2det 2x1det; do run mlp $layout "${mlp[@]}"; done | tee "$tmp/mlp.jsonl"
for layout in 1x2 1x2det 2x1det; do run unet $layout "${unet[@]}"; done | tee "$tmp/unet.jsonl"

# The model: the U-Net at global batch B = 64 (the README's), t_item from 1 process x 2 threads
# --deterministic (this machine's 2 cores are one "process" of a cluster of such machines).
/usr/bin/python3 - "$tmp/unet.jsonl" <<'PY'
import json, sys
rows = {r["layout"]: r for r in map(json.loads, open(sys.argv[1]))}
det = rows["1x2det"]
params = det["params"]
t_step = 1.0 / det["steps_per_s"]          # s per step of B = 64 on one 2-core machine
t_item = t_step / 64
payload = 16.0 * (params + 1)              # bytes: the exact sum's 128-bit integers
alpha = 20e-6                              # assumed per-message latency (TCP on Ethernet)
print(f"# model inputs: {params} parameters -> {payload / 1e6:.1f} MB per allreduce (16 B each); "
      f"measured {t_step * 1e3:.0f} ms per U-Net step of 64 items on 1 x 2 threads "
      f"({t_item * 1e3:.2f} ms per item); assumed latency {alpha * 1e6:.0f} us per message")
print("| processes | network | ring allreduce | efficiency at B = 64 x N | at B = 64 | global batch for 90% |")
print("| ---: | ---: | ---: | ---: | ---: | ---: |")
for n in (8, 64, 512):
    for gbit in (10, 25, 100):
        bw = gbit * 1e9 / 8
        t_comm = 2 * (n - 1) / n * payload / bw + 2 * (n - 1) * alpha
        def eff(B):
            tc = B / n * t_item
            return tc / (tc + t_comm)
        b90 = 9 * n * t_comm / t_item
        print(f"| {n} | {gbit} Gbit/s | {t_comm * 1e3:.0f} ms | {eff(64 * n) * 100:.0f}% | "
              f"{eff(64) * 100:.0f}% | {b90:,.0f} |")
PY

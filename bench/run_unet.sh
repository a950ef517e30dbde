#!/usr/bin/env bash
# Benchmarks the default small U-Net, ddpm against PyTorch, in the same run: ROUNDS rounds, each
# running bench_unet then torch_unet.py (REPS timed repetitions per measurement after a warm-up),
# so that changes in the machine's load hit both alike; then the median of every repetition.
# Both sides use 2 threads. The medians show the typical time on the machine as it is (a shared
# machine's load hits the two very differently: PyTorch's per-op thread synchronisation suffers
# much more); the minima approximate an idle machine. GFLOP/s counts the convolution, linear and attention products
# (2 FLOPs per multiply-add; forward + backward = 3 x forward; direct-convolution FLOPs, so a
# Winograd layer can show above the peak); the peak is this machine's FMA peak at the thread
# count used, measured first by fma_peak (PEAK_GFLOPS overrides).
#
# Usage: bench/run_unet.sh [BUILD_DIR] [ROUNDS] [REPS]   (default build-unet 5 3)
#        THREADS=1 bench/run_unet.sh ...   (both sides on one thread; default 2)
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${1:-build-unet}
ROUNDS=${2:-5}
REPS=${3:-3}
if [ ! -x "$BUILD/bench_unet" ]; then
  echo "run_unet.sh: $BUILD/bench_unet not found; build first:" >&2
  echo "  cmake -S . -B $BUILD -DCMAKE_BUILD_TYPE=Release && cmake --build $BUILD -j2" >&2
  exit 1
fi
unset OPENBLAS_CORETYPE
export OMP_NUM_THREADS=${THREADS:-2}
echo "threads: $OMP_NUM_THREADS (ddpm OMP_NUM_THREADS, torch.set_num_threads)" >&2
PEAK=${PEAK_GFLOPS:-$("$BUILD/fma_peak" "$OMP_NUM_THREADS" | sed 's/.*"fma_peak_gflops":\([0-9.]*\).*/\1/')}
echo "FMA peak, $OMP_NUM_THREADS threads: $PEAK GFLOP/s ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2-)," \
  "$(grep -q avx512f /proc/cpuinfo && echo AVX-512 || echo 'no AVX-512'))" >&2
OUT=$(mktemp /tmp/run_unet.XXXXXX.jsonl)
trap 'rm -f "$OUT"' EXIT
echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
for r in $(seq 1 "$ROUNDS"); do
  echo "round $r/$ROUNDS" >&2
  "$BUILD/bench_unet" "$REPS" >>"$OUT"
  /usr/bin/python3 bench/torch_unet.py "$REPS" >>"$OUT"
done
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
/usr/bin/python3 - "$OUT" "$PEAK" <<'EOF'
import json, statistics, sys
rows = {}
for line in open(sys.argv[1]):
    d = json.loads(line)
    key = (d["config"], d["batch"], d["what"], d["impl"])
    r = rows.setdefault(key, {"times": [], "flops": d["fwd_flops_per_image"], "arena": d.get("arena_mb")})
    r["times"] += d["times_ms"]
peak = float(sys.argv[2])
print(f"| config | batch | pass | impl | ms/image median | ms/image min | GFLOP/s median | GFLOP/s best "
      f"| best % of {peak:.0f} | ddpm/torch median | ddpm/torch min |")
print("|---|---|---|---|---|---|---|---|---|---|---|")
for (cfg, B, what, impl) in sorted(rows, key=lambda k: (k[0], k[2], k[3])):
    r = rows[(cfg, B, what, impl)]
    med, mn = statistics.median(r["times"]), min(r["times"])
    flops = r["flops"] * B * (3 if what == "fwd+bwd" else 1)
    gf, gfb = flops / (med * 1e-3) * 1e-9, flops / (mn * 1e-3) * 1e-9
    other = rows.get((cfg, B, what, "torch"))
    ratios = ""
    if other and impl == "ddpm":
        ratios = f"{med / statistics.median(other['times']):.2f} | {mn / min(other['times']):.2f}"
    else:
        ratios = " | "
    print(f"| {cfg} | {B} | {what} | {impl} | {med / B:.2f} | {mn / B:.2f} | {gf:.1f} | {gfb:.1f} | "
          f"{100 * gfb / peak:.1f}% | {ratios} |")
flops = {k[0]: (v["flops"], k[3]) for k, v in rows.items()}
for k, v in sorted(rows.items()):
    if k[3] == "ddpm" and k[2] == "fwd":
        t = rows.get((k[0], k[1], k[2], "torch"))
        print(f"{k[0]}: forward MFLOP/image ddpm {v['flops'] / 1e6:.2f}, torch hooks "
              f"{t['flops'] / 1e6 if t else float('nan'):.2f}; tape arena {v['arena']} MB (eval) ")
    if k[3] == "ddpm" and k[2] == "fwd+bwd":
        print(f"{k[0]}: tape arena after training passes {v['arena']} MB")
EOF

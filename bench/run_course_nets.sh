#!/usr/bin/env bash
# run_course_nets.sh - ddpm against PyTorch on the two tutorial networks at their tutorial sizes:
# forward and forward+backward, ms per image, GFLOP/s (direct-convolution FLOPs over time, so a
# Winograd layer can show above the peak) and the fraction of this machine's FMA peak on 2
# threads, measured first by fma_peak (PEAK_GFLOPS overrides). Runs are interleaved (ddpm, PyTorch, PyTorch, ddpm, ... per
# measurement, `rounds` times) so that a busy shared machine slows both alike; the table shows the
# median over rounds of each run's median.
#
# Usage: bench/run_course_nets.sh [build_dir] [rounds] [repeats] [nets]
#   build_dir  where bench_course_nets was built (default build)
#   rounds     interleaved rounds (default 3)
#   repeats    timed iterations per run after one warm-up (default 3)
#   nets       space-separated subset of "sprites fmnist simple" (default all three)
# Environment: 2 threads on both sides (OMP_NUM_THREADS=2, torch.set_num_threads(2)),
# OPENBLAS_CORETYPE unset, and OMP_WAIT_POLICY=passive unless set (both sides use libgomp; on a
# shared, busy machine spinning waiters steal the CPU from descheduled team members and every
# barrier can cost a time slice: measured 2-3x slower for both; OMP_WAIT_POLICY=active measures
# the runtime's spinning). Raw JSON lines are kept in $RESULTS (default a temporary file).
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build}
rounds=${2:-3}
repeats=${3:-3}
nets=${4:-"sprites fmnist simple"}
bin="$build/bench_course_nets"
py=/usr/bin/python3
[ -x "$bin" ] || { echo "run_course_nets.sh: $bin not found (build the project first)" >&2; exit 2; }
$py -c 'import torch' 2>/dev/null || { echo "run_course_nets.sh: $py has no torch (apt-get install python3-torch)" >&2; exit 2; }
export OMP_NUM_THREADS=2
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-passive}
unset OPENBLAS_CORETYPE OPENBLAS_NUM_THREADS
results=${RESULTS:-$(mktemp /tmp/course_nets.XXXXXX.jsonl)}
echo "raw results: $results ($(nproc) CPUs, OMP_WAIT_POLICY=$OMP_WAIT_POLICY," \
  "load before: $(cut -d' ' -f1-3 /proc/loadavg))" >&2

peak=${PEAK_GFLOPS:-$(OMP_NUM_THREADS=2 "$build/fma_peak" 2 | sed 's/.*"fma_peak_gflops":\([0-9.]*\).*/\1/')}
echo "FMA peak, 2 threads: $peak GFLOP/s ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2-)," \
  "$(grep -q avx512f /proc/cpuinfo && echo AVX-512 || echo 'no AVX-512'))" >&2
run_ddpm() { "$bin" "$1" "$2" "$repeats" >>"$results"; }
run_torch() { $py bench/torch_course_nets.py --net "$1" --mode "$2" --repeats "$repeats" --threads 2 >>"$results"; }

for r in $(seq "$rounds"); do
  for net in $nets; do
    for mode in fwd fwdbwd; do
      echo "round $r/$rounds: $net $mode" >&2
      if [ $((r % 2)) -eq 1 ]; then run_ddpm "$net" "$mode"; run_torch "$net" "$mode"
      else run_torch "$net" "$mode"; run_ddpm "$net" "$mode"; fi
    done
  done
done
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)" >&2

$py - "$results" "$peak" <<'EOF'
import json, statistics, sys
peak = float(sys.argv[2])
rows = [json.loads(l) for l in open(sys.argv[1]) if l.startswith("{")]
desc = {"sprites": "context-unet 16x16x3 nf64 (course)", "fmnist": "context-unet 28x28x1 nf64",
        "simple": "simple-unet 64x64x3 64..1024"}
print(f"{'network':36} {'mode':7} {'B':>4} {'impl':6} {'ms/image':>9} {'GFLOP/s':>8} {'of ' + format(peak, '.0f'):>8}"
      f" {'torch/ddpm':>10}  runs")
for net in ["sprites", "fmnist", "simple"]:
    for mode in ["fwd", "fwdbwd"]:
        med = {}
        for impl in ["ddpm", "torch"]:
            sel = [r for r in rows if r["net"] == net and r["mode"] == mode and r["impl"] == impl]
            if sel:
                med[impl] = (statistics.median(r["ms_per_image"] for r in sel),
                             statistics.median(r["gflops"] for r in sel), sel[0]["B"], len(sel))
        for impl, (ms, gf, B, n) in med.items():
            ratio = ""
            if impl == "ddpm" and "torch" in med:
                ratio = f"{med['torch'][0] / ms:.2f}x"
            print(f"{desc[net]:36} {mode:7} {B:>4} {impl:6} {ms:9.2f} {gf:8.1f} {gf / peak:8.1%}"
                  f" {ratio:>10}  {n}")
EOF

#!/usr/bin/env bash
# run_images.sh - the image workflow, ddpm against PyTorch 1.13 in the same run: training images/s
# and DDPM and DDIM sampling images/s of the course's ContextUnet (sprites 16x16x3 and
# Fashion-MNIST 28x28x1, n_feat 64, batch 100) and the default DDPM U-Net (28x28x1, 10 classes,
# batch 64). See bench/bench_images.c and bench/torch_images.py for what each measurement does.
#
# Runs are interleaved per (net, what): ddpm, torch best, torch as found in odd rounds, the
# reverse in even rounds, `rounds` times, so that a busy shared machine slows all alike; the
# table shows the median over rounds of each run's median.
#
# Usage: bench/run_images.sh [build_dir] [rounds] [repeats] [nets] [whats]
#   build_dir  where bench_images was built (default build); this script builds nothing
#   rounds     interleaved rounds (default 3)
#   repeats    timed blocks (train) or sampling runs (ddpm, ddim) per process (default 3)
#   nets       space-separated subset of "sprites fmnist unet" (default all three)
#   whats      space-separated subset of "train ddpm ddim" (default all three)
# Knobs: K (training steps per timed block, default 5), DDPM_STEPS (timed DDPM steps from which a
# full run is extrapolated, default 20), BATCH (overrides every batch size: smoke tests only),
# RESULTS (file for the raw JSON lines, default a temporary file; appended to).
#
# Environment: 2 threads on both sides (OMP_NUM_THREADS=2 for ddpm; torch.set_num_threads(2)),
# OPENBLAS_CORETYPE unset, OMP_WAIT_POLICY=passive unless set (see run_course_nets.sh). PyTorch
# runs twice per measurement: "torch best" with OPENBLAS_NUM_THREADS=1 (Debian's PyTorch calls the
# pthreads OpenBLAS, whose own thread pool otherwise runs next to PyTorch's intra-op threads) and
# "torch as found" with OPENBLAS_NUM_THREADS as it was in the environment. ddpm runs with the
# environment as found (apart from the OMP_* variables and OPENBLAS_CORETYPE).
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build}
rounds=${2:-3}
repeats=${3:-3}
nets=${4:-"sprites fmnist unet"}
whats=${5:-"train ddpm ddim"}
k=${K:-5}
ddpm_steps=${DDPM_STEPS:-20}
batch=${BATCH:-0}
bin="$build/bench_images"
py=/usr/bin/python3
[ -x "$bin" ] || { echo "run_images.sh: $bin not found (build the project first)" >&2; exit 2; }
$py -c 'import torch' 2>/dev/null || { echo "run_images.sh: $py has no torch (apt-get install python3-torch)" >&2; exit 2; }
export OMP_NUM_THREADS=2
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-passive}
unset OPENBLAS_CORETYPE
found_obt=${OPENBLAS_NUM_THREADS-__unset__}
results=${RESULTS:-$(mktemp /tmp/run_images.XXXXXX.jsonl)}
echo "CPU: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2-), family $(grep -m1 'cpu family' /proc/cpuinfo | cut -d: -f2 | tr -d ' ') model $(grep -m1 '^model\s' /proc/cpuinfo | cut -d: -f2 | tr -d ' '), $(grep -q avx512f /proc/cpuinfo && echo AVX-512 || echo 'no AVX-512'); DDPM_ISA=${DDPM_ISA-unset}" >&2
echo "raw results: $results ($(nproc) CPUs, OMP_WAIT_POLICY=$OMP_WAIT_POLICY," \
  "OPENBLAS_NUM_THREADS as found: ${OPENBLAS_NUM_THREADS-unset}," \
  "load before: $(cut -d' ' -f1-3 /proc/loadavg))" >&2

kfor() { if [ "$1" = train ]; then echo "$k"; else echo "$ddpm_steps"; fi; }
run_ddpm() { "$bin" "$1" "$2" "$repeats" "$batch" "$(kfor "$2")" >>"$results"; }
run_torch() { # net what label
  local args=(bench/torch_images.py --net "$1" --what "$2" --repeats "$repeats" --threads 2
              --batch "$batch" --k "$(kfor "$2")" --label "$3")
  if [ "$3" = best ]; then
    OPENBLAS_NUM_THREADS=1 $py "${args[@]}" >>"$results"
  elif [ "$found_obt" = __unset__ ]; then
    env -u OPENBLAS_NUM_THREADS $py "${args[@]}" >>"$results"
  else
    OPENBLAS_NUM_THREADS=$found_obt $py "${args[@]}" >>"$results"
  fi
}

for r in $(seq "$rounds"); do
  for net in $nets; do
    for what in $whats; do
      echo "round $r/$rounds: $net $what ($(cut -d' ' -f1 /proc/loadavg))" >&2
      if [ $((r % 2)) -eq 1 ]; then
        run_ddpm "$net" "$what"; run_torch "$net" "$what" best; run_torch "$net" "$what" found
      else
        run_torch "$net" "$what" found; run_torch "$net" "$what" best; run_ddpm "$net" "$what"
      fi
    done
  done
done
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)" >&2

$py - "$results" <<'EOF'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.startswith("{")]
desc = {"sprites": "ContextUnet 16x16x3 nf64", "fmnist": "ContextUnet 28x28x1 nf64",
        "unet": "DDPM U-Net 28x28x1"}
def key(r):
    return "ddpm" if r["impl"] == "ddpm" else "torch-" + (r.get("label") or "?")
print("| net | what | B | ddpm images/s | torch best images/s | torch as found images/s "
      "| ddpm / torch best | ddpm / torch as found | rounds |")
print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
notes = set()
for net in ["sprites", "fmnist", "unet"]:
    for what in ["train", "ddpm", "ddim"]:
        med, params, n, B = {}, {}, {}, None
        for impl in ["ddpm", "torch-best", "torch-found"]:
            sel = [r for r in rows if r["net"] == net and r["what"] == what and key(r) == impl]
            if sel:
                med[impl] = statistics.median(r["images_per_s_median"] for r in sel)
                params[impl] = {r["params"] for r in sel}
                n[impl] = len(sel)
                B = sel[0]["B"]
                if sel[0].get("extrapolated"):
                    notes.add(f"{net} ddpm: {sel[0]['timed_steps']} timed steps per run, extrapolated "
                              f"to the full {sel[0]['sampling_steps']}-step run")
        if not med:
            continue
        if len(set().union(*params.values())) > 1:
            notes.add(f"WARNING: {net}: parameter counts differ between the sides: {params}")
        f = lambda i: f"{med[i]:.4g}" if i in med else "-"
        ratio = lambda i: f"{med['ddpm'] / med[i]:.2f}x" if "ddpm" in med and i in med else "-"
        label = what + (" (extrapolated)" if what == "ddpm" else "")
        print(f"| {desc[net]} | {label} | {B} | {f('ddpm')} | {f('torch-best')} | {f('torch-found')} "
              f"| {ratio('torch-best')} | {ratio('torch-found')} | {min(n.values())} |")
if notes:
    print()
for s in sorted(notes):
    print(s)
EOF

#!/usr/bin/env bash
# run_memory.sh - peak memory of a training run of each image network, ddpm against PyTorch 1.13:
# the maximum resident set size (GNU time's %M) of one process that builds the network and runs
# bench_images' training blocks (bench/bench_images.c: warm-up, then `repeats` timed blocks of K
# steps), and of torch_images.py doing the same, same batch, both sides 2 threads. The PyTorch
# figure includes the interpreter and the torch libraries (about 0.2-0.3 GB before any tensor);
# the ddpm one is the whole process too.
#
# Usage: bench/run_memory.sh [build_dir] [nets]
#   build_dir  where bench_images was built (default build); this script builds nothing
#   nets       space-separated subset of "sprites fmnist unet" (default all three)
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build}
nets=${2:-"sprites fmnist unet"}
bin="$build/bench_images"
py=/usr/bin/python3
[ -x "$bin" ] || { echo "run_memory.sh: $bin not found (build the project first)" >&2; exit 2; }
[ -x /usr/bin/time ] || { echo "run_memory.sh: /usr/bin/time not found (apt-get install time)" >&2; exit 2; }
$py -c 'import torch' 2>/dev/null || { echo "run_memory.sh: $py has no torch (apt-get install python3-torch)" >&2; exit 2; }
unset OPENBLAS_CORETYPE

peak_kb() { # the command's max RSS in KB (its own output discarded)
  local f; f=$(mktemp)
  /usr/bin/time -o "$f" -f "%M" "$@" >/dev/null 2>&1 || { echo "run_memory.sh: failed: $*" >&2; rm -f "$f"; exit 1; }
  tail -n 1 "$f"; rm -f "$f"
}

echo "CPU:  $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')"
echo "| net | batch | ddpm peak RSS GiB | PyTorch peak RSS GiB | ddpm / PyTorch |"
echo "| --- | ---: | ---: | ---: | ---: |"
for net in $nets; do
  case $net in unet) b=64 ;; *) b=100 ;; esac
  d=$(OMP_NUM_THREADS=2 peak_kb "$bin" "$net" train 1)
  t=$(OPENBLAS_NUM_THREADS=1 peak_kb "$py" bench/torch_images.py --net "$net" --what train --repeats 1 --threads 2)
  awk -v n="$net" -v b="$b" -v d="$d" -v t="$t" \
    'BEGIN { printf "| %s | %d | %.2f | %.2f | %.2f |\n", n, b, d / 1048576, t / 1048576, d / t }'
done

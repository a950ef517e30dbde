#!/usr/bin/env bash
# run_mlp_bench.sh - ddpm against PyTorch on the 2-D tutorial MLP, in one run.
#
#   bench/run_mlp_bench.sh [rounds]
#
# Builds bench_mlp if needed (Release, in $BUILD_DIR, default build-bench), then runs, ROUNDS times
# (default 3) and interleaved (every setting once per round, so a burst of load on a shared machine
# hits all of them alike):
#   ddpm   default          the environment as found (OpenMP threads: all cores, adaptive)
#   ddpm   1 thread         OMP_NUM_THREADS=1
#   ddpm   2 threads fixed  OMP_NUM_THREADS=2 DDPM_THREADS_ADAPT=0 (no adaptation, for reference)
#   torch  as found         the environment as found, torch.set_num_threads(2)
#   torch  best (1 or 2)    OPENBLAS_NUM_THREADS=1, OPENBLAS_CORETYPE unset,
#                           torch.set_num_threads(1) and (2); the faster one is "torch best"
# and prints a table of the medians over rounds: training ms/step at batch 128 and steps/s,
# sampling 10,000 points x 100 DDPM steps, and how many times faster ddpm is than each PyTorch
# setting. Raw JSON lines go to $OUT (default $BUILD_DIR/mlp-bench-<date>.jsonl).
#
# Environment: STEPS (training steps per timed block, default 1000), REPEATS (timed blocks and
# sampling runs per process, default 3), PYTHON (default /usr/bin/python3), BUILD_DIR,
# DDPM_EXCLUDE (passed to cmake, for work-in-progress sources that do not build),
# BASELINE_BENCH (a bench_mlp built from an older tree: also run as "ddpm before", default and
# 1 thread, to compare versions in the same run).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
rounds=${1:-3}
STEPS=${STEPS:-1000}
REPEATS=${REPEATS:-3}
PYTHON=${PYTHON:-/usr/bin/python3}
BUILD_DIR=${BUILD_DIR:-$root/build-bench}
OUT=${OUT:-$BUILD_DIR/mlp-bench-$(date +%Y%m%d-%H%M%S).jsonl}

if [[ ! -x "$BUILD_DIR/bench_mlp" || -n "$(find "$root/src" "$root/bench" "$root/include" -newer "$BUILD_DIR/bench_mlp" -name '*.[ch]' 2>/dev/null | head -1)" ]]; then
    echo "== building bench_mlp in $BUILD_DIR" >&2
    cmake -S "$root" -B "$BUILD_DIR" -DCMAKE_BUILD_TYPE=Release -DDDPM_BUILD_TESTS=OFF \
        ${DDPM_EXCLUDE:+-DDDPM_EXCLUDE="$DDPM_EXCLUDE"} >/dev/null
    cmake --build "$BUILD_DIR" --target bench_mlp -j"$(nproc)" >/dev/null
fi
bench="$BUILD_DIR/bench_mlp"
torch_py="$here/torch_mlp.py"

echo "== $(date -Is) $(uname -n), $(nproc) CPUs: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | xargs)" >&2
echo "== environment as found: OMP_NUM_THREADS=${OMP_NUM_THREADS-<unset>}" \
     "OPENBLAS_NUM_THREADS=${OPENBLAS_NUM_THREADS-<unset>} OPENBLAS_CORETYPE=${OPENBLAS_CORETYPE-<unset>}" >&2
echo "== $rounds rounds; per process: $STEPS steps x (1 warm-up + $REPEATS) blocks, sampling 1 + $REPEATS runs" >&2
: >"$OUT"

# run LABEL CMD...: runs one setting, tags its JSON lines with the label and the round
run() {
    local label=$1 round=$2
    shift 2
    echo "   round $round: $label" >&2
    "$@" | while IFS= read -r line; do
        [[ $line == \{* ]] && printf '{"setting":"%s","round":%d,%s\n' "$label" "$round" "${line#\{}"
    done >>"$OUT"
}

for ((r = 1; r <= rounds; r++)); do
    run "ddpm default" $r "$bench" "$STEPS" "$REPEATS" all
    run "torch as found, 2 threads" $r "$PYTHON" "$torch_py" --threads 2 --steps "$STEPS" --repeats "$REPEATS" --sample-repeats "$REPEATS"
    run "ddpm 1 thread" $r env OMP_NUM_THREADS=1 "$bench" "$STEPS" "$REPEATS" all
    run "torch best candidate, 1 thread" $r env -u OPENBLAS_CORETYPE OPENBLAS_NUM_THREADS=1 "$PYTHON" "$torch_py" --threads 1 --steps "$STEPS" --repeats "$REPEATS" --sample-repeats "$REPEATS"
    run "ddpm 2 threads fixed" $r env OMP_NUM_THREADS=2 DDPM_THREADS_ADAPT=0 "$bench" "$STEPS" "$REPEATS" all
    run "torch best candidate, 2 threads" $r env -u OPENBLAS_CORETYPE OPENBLAS_NUM_THREADS=1 "$PYTHON" "$torch_py" --threads 2 --steps "$STEPS" --repeats "$REPEATS" --sample-repeats "$REPEATS"
    if [[ -n ${BASELINE_BENCH:-} ]]; then
        run "ddpm before, default" $r "$BASELINE_BENCH" "$STEPS" "$REPEATS" all
        run "ddpm before, 1 thread" $r env OMP_NUM_THREADS=1 "$BASELINE_BENCH" "$STEPS" "$REPEATS" all
    fi
done

"$PYTHON" - "$OUT" <<'EOF'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]

def med(setting, what):
    v = [r["median"] for r in rows if r["setting"] == setting and r["what"] == what]
    return statistics.median(v) if v else float("nan")

cands = ["torch best candidate, 1 thread", "torch best candidate, 2 threads"]
best = min(cands, key=lambda s: med(s, "train_step_ms"))
order = ["ddpm default", "ddpm 1 thread", "ddpm 2 threads fixed", "ddpm before, default",
         "ddpm before, 1 thread", "torch as found, 2 threads"] + cands
settings = [s for s in order if any(r["setting"] == s for r in rows)]
ta, tb = med("torch as found, 2 threads", "train_step_ms"), med(best, "train_step_ms")
sa, sb = med("torch as found, 2 threads", "sample_10000x100_ms"), med(best, "sample_10000x100_ms")
rounds = max(r["round"] for r in rows)
print()
print(f"medians over {rounds} rounds; 'x' = PyTorch time / this time (how many times faster);")
print(f"torch(a) = as found, 2 threads; torch best = {best} (*)")
hdr = (f"{'setting':34s} {'train ms/step':>13s} {'steps/s':>8s} {'vs torch(a)':>11s} "
       f"{'vs torch best':>13s}   {'sample ms':>9s} {'vs torch(a)':>11s} {'vs torch best':>13s}")
print(hdr)
print("-" * len(hdr))
for s in settings:
    t, sm = med(s, "train_step_ms"), med(s, "sample_10000x100_ms")
    name = s + (" *" if s == best else "")
    print(f"{name:34s} {t:13.4f} {1000.0 / t:8.0f} {ta / t:10.2f}x {tb / t:12.2f}x   "
          f"{sm:9.1f} {sa / sm:10.2f}x {sb / sm:12.2f}x")
print(f"raw results: {sys.argv[1]}")
EOF

#!/usr/bin/env bash
# Builds the libFuzzer harnesses of fuzz/ with clang (ASan + UBSan, in build-fuzz/) and runs each
# for SECONDS (default 60) on one core, starting from the committed corpus fuzz/corpus/<parser>/.
#   scripts/fuzz.sh [SECONDS] [HARNESS...]   HARNESS: safetensors, checkpoint, image, torch_file, ... (default all)
# New corpus entries go to build-fuzz/corpus/<parser>/ (not committed: add a few small ones to
# fuzz/corpus/ by hand if they cover something new); crashes, leaks, timeouts and out-of-memory
# inputs go to fuzz/crashes/<parser>/ (git-ignored). Exits 1 if any harness found something.
# Extra libFuzzer flags: FUZZ_FLAGS="-max_len=8192" scripts/fuzz.sh 120 image
set -euo pipefail
cd "$(dirname "$0")/.."
secs=60
if [ $# -gt 0 ] && [[ "$1" =~ ^[0-9]+$ ]]; then secs=$1; shift; fi
harnesses=("$@")
if [ ${#harnesses[@]} -eq 0 ]; then
  for f in fuzz/fuzz_*.c; do n=${f#fuzz/fuzz_}; harnesses+=("${n%.c}"); done
fi
for h in "${harnesses[@]}"; do
  [ -f "fuzz/fuzz_$h.c" ] || { echo "fuzz.sh: no harness fuzz/fuzz_$h.c" >&2; exit 2; }
done
bash scripts/install-deps.sh

CC=clang cmake -S . -B build-fuzz -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_C_FLAGS_RELWITHDEBINFO="-O1 -g" \
  -DDDPM_FUZZ=ON -DDDPM_BUILD_TESTS=OFF >/dev/null
targets=(); for h in "${harnesses[@]}"; do targets+=("fuzz_$h"); done
cmake --build build-fuzz -j2 --target "${targets[@]}"

export OMP_NUM_THREADS=1 OMP_WAIT_POLICY=passive
export ASAN_OPTIONS="detect_leaks=1:allocator_may_return_null=1:${ASAN_OPTIONS:-}"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1:${UBSAN_OPTIONS:-}"
found=0
for h in "${harnesses[@]}"; do
  mkdir -p "build-fuzz/corpus/$h" "fuzz/crashes/$h"
  echo "== fuzz_$h for ${secs}s"
  # -malloc_limit_mb: an allocation over 512 MB from an input of a few KB is a finding (a size
  # taken from the file and not checked against the file); -timeout: 10 s for one input is one.
  # ${FUZZ_FLAGS} is left unquoted on purpose: it holds several flags.
  # Images: inputs up to 1 KB, i.e. at most 4 megapixels (the reader allows 4096 pixels per
  # byte): a 4 KB file may legitimately decode 16 megapixels, seconds under ASan, which would
  # spend the run on a few slow inputs.
  extra=(); [ "$h" = image ] && extra=(-max_len=1024)
  # shellcheck disable=SC2086
  if ! build-fuzz/fuzz_$h -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -malloc_limit_mb=512 \
       -max_len=4096 "${extra[@]}" -print_final_stats=1 -artifact_prefix="fuzz/crashes/$h/" ${FUZZ_FLAGS:-} \
       "build-fuzz/corpus/$h" "fuzz/corpus/$h" 2> "build-fuzz/fuzz_$h.log"; then
    found=1
    echo "fuzz_$h: FOUND something, see build-fuzz/fuzz_$h.log and fuzz/crashes/$h/"
  fi
  grep -E "^(#[0-9]+.*DONE|stat::number_of_executed_units|stat::average_exec_per_sec|SUMMARY)" \
    "build-fuzz/fuzz_$h.log" || tail -5 "build-fuzz/fuzz_$h.log"
done
exit $found

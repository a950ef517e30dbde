#!/usr/bin/env bash
# Builds ddpm and runs the whole test suite with ctest.
#   scripts/test.sh              optimised build in build/
#   scripts/test.sh --sanitize   AddressSanitizer + UndefinedBehaviorSanitizer build in build-asan/
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
dir=build; flags=(-DCMAKE_BUILD_TYPE=Release)
if [ "${1:-}" = "--sanitize" ]; then
  dir=build-asan
  # -O1 keeps the sanitized suite fast enough; leak checking stays on (ASAN_OPTIONS below).
  flags=(-DCMAKE_BUILD_TYPE=RelWithDebInfo -DDDPM_SANITIZE=ON -DCMAKE_C_FLAGS_RELWITHDEBINFO="-O1 -g")
  export ASAN_OPTIONS="detect_leaks=1:abort_on_error=0:halt_on_error=1"
  export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1"
  export DDPM_SANITIZED=1
fi
cmake -S . -B "$dir" "${flags[@]}" >/dev/null
cmake --build "$dir" -j"$(nproc)"
cd "$dir"
ctest --output-on-failure -j2 --timeout 600

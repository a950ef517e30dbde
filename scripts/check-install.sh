#!/usr/bin/env bash
# Installs the build into a temporary prefix and compiles and runs examples/ against the installed
# header, library and pkg-config file, as a user of libddpm would.
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build}
prefix=$(mktemp -d)
trap 'rm -rf "$prefix"' EXIT
cmake --install "$build" --prefix "$prefix" >/dev/null
test -x "$prefix/bin/ddpm" && test -f "$prefix/include/ddpm.h"
export PKG_CONFIG_PATH="$prefix/lib/pkgconfig:$prefix/lib/$(gcc -print-multiarch)/pkgconfig:${PKG_CONFIG_PATH:-}"
cc -std=c11 -Wall -Wextra -Werror examples/schedule_and_sample.c $(pkg-config --cflags --libs --static ddpm) -o "$prefix/example"
# The installed tool and the example must load the same OpenBLAS the build linked (the OpenMP one),
# not whatever libopenblas.so.0 the system's alternatives point at.
blas=$(sed -n 's/^OPENBLAS_LIBRARY:FILEPATH=//p' "$build/CMakeCache.txt")
blasdir=$(dirname "$(readlink -f "$blas")")
for exe in "$prefix/bin/ddpm" "$prefix/example"; do
  loaded=$(ldd "$exe" | awk '/libopenblas/ {print $3}')
  [ -z "$loaded" ] && [ "$exe" != "$prefix/bin/ddpm" ] && continue   # linked --as-needed, unused
  if [ "$(dirname "$(readlink -f "$loaded")")" != "$blasdir" ]; then
    echo "check-install: $exe loads $loaded, not the OpenBLAS in $blasdir it was built with" >&2
    exit 1
  fi
done
"$prefix/example"
"$prefix/bin/ddpm" --version
echo "install check passed"

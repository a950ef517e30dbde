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
"$prefix/example"
"$prefix/bin/ddpm" --version
echo "install check passed"

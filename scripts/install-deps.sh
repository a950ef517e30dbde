#!/usr/bin/env bash
# Installs the Debian packages ddpm needs to build, test and run (as root, or with sudo).
# python3-torch, python3-torchvision and python3-numpy are only for regenerating test fixtures and for the
# PyTorch side of the benchmarks; the library and the tests never need Python.
set -euo pipefail
pkgs=(build-essential cmake pkg-config
      libopenblas-openmp-dev libcjson-dev libcmocka-dev libcairo2-dev libfontconfig-dev libpng-dev zlib1g-dev
      libjpeg62-turbo-dev # JPEG decoding (libjpeg-turbo)
      libgif-dev libstb-dev dataset-fashion-mnist valgrind
      clang libclang-rt-14-dev libomp-dev # these three: libFuzzer for scripts/fuzz.sh
      libopenmpi-dev openmpi-bin) # MPI: data-parallel mpirun ddpm train / sample
if [ "${DDPM_WITH_TORCH:-0}" = 1 ]; then pkgs+=(python3-torch python3-torchvision python3-numpy); fi
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
  echo "installing: ${missing[*]}" >&2
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

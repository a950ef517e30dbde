#!/usr/bin/env bash
# Runs the CLI's main paths under valgrind's memcheck on tiny inputs: any definite leak or memory
# error fails. (The ASan build of the test suite checks the same paths with LeakSanitizer.)
set -euo pipefail
cd "$(dirname "$0")/.."
DDPM=${1:-build/ddpm}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
vg=(valgrind --quiet --error-exitcode=99 --leak-check=full --errors-for-leak-kinds=definite
    --show-leak-kinds=definite)
export OMP_NUM_THREADS=1
run() { echo "valgrind: ddpm $*"; "${vg[@]}" "$DDPM" "$@" >/dev/null; }
run schedule --schedule cosine --timesteps 20 --csv
run train --n-points 200 --hidden 16 --batch-size 32 --steps 20 --save-every 10 --out "$tmp/run" --quiet
run train --resume "$tmp/run/ckpt.safetensors" --steps 30 --out "$tmp/run" --quiet
run sample --ckpt "$tmp/run/ckpt.safetensors" -n 50 --out "$tmp/s.csv" --trajectory "$tmp/traj" --plot "$tmp/s.png" --quiet
run sample --ckpt "$tmp/run/ckpt.safetensors" -n 50 --sampler ddim --steps 10 --out "$tmp/s.npy" --quiet
run sample --ckpt "$tmp/run/ckpt.safetensors" -n 50 --sampler dpmpp-3m --steps 8 --spacing karras --thresholding --out "$tmp/s.csv" --quiet
run sample --ckpt "$tmp/run/ckpt.safetensors" -n 50 --sampler heun --steps 4 --verbose --out "$tmp/s.csv" --quiet
run eval --ckpt "$tmp/run/ckpt.safetensors" -n 100 --projections 16
run noise --data moons --n-points 100 --out "$tmp/f.png"
# images: a tiny class-conditional U-Net on a few Fashion-MNIST images, then sampling with a GIF
tiny=(--model unet --base-channels 8 --channel-mult 1,2 --num-res-blocks 1 --groups 4 --heads 2
      --dim-head 8 --timesteps 10)
run train --data fashion-mnist --max-items 8 "${tiny[@]}" --batch-size 4 --steps 2 --sample-every 2 \
  --sample-n 2 --out "$tmp/img" --quiet
run sample --ckpt "$tmp/img/ckpt.safetensors" --per-class 1 --sampler ddim --steps 2 --guidance 1 \
  --out "$tmp/g.png" --npy "$tmp/g.npy" --gif "$tmp/g.gif" --gif-every 1 --quiet
# PyTorch files: a torch.save state dict converted and sampled from, a legacy nested one
t=tests/fixtures/torch
run convert "$t/context_unet.pth" "$tmp/cu.safetensors" --list
run convert "$t/nested_legacy.pt" "$tmp/n.safetensors" --key '*'
run sample --weights "$t/context_unet.pth" --model context-unet --n-feat 8 --n-cfeat 5 --height 16 \
  -n 2 --sampler ddim --steps 2 --out "$tmp/cu.npy" --quiet
rc=0; "${vg[@]}" "$DDPM" convert "$t/evil_os_system.pth" "$tmp/e.safetensors" 2>/dev/null || rc=$?
test $rc -eq 2 || { echo "valgrind: the refused pickle exited $rc, expected 2"; exit 1; }
# failures must not leak either
rc=0; "${vg[@]}" "$DDPM" sample --ckpt "$tmp/nope" --out "$tmp/x.csv" 2>/dev/null || rc=$?
test $rc -eq 2 || { echo "valgrind: the error path exited $rc, expected 2"; exit 1; }
echo "valgrind: no leaks or memory errors"

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
run() { local t0=$SECONDS; "${vg[@]}" "$DDPM" "$@" >/dev/null; echo "valgrind ($((SECONDS - t0)) s): ddpm $*"; }

# Independent chains, run side by side (valgrind runs one thread): the 2-D points with the
# interop readers and the error paths; then, once a tiny image network has been trained and
# sampled, its editing paths, and the image metrics with the Inception-v3.
points_paths() {
run schedule --schedule cosine --timesteps 20 --csv
run train --n-points 200 --hidden 16 --batch-size 32 --steps 20 --save-every 10 --out "$tmp/run" --quiet
run train --resume "$tmp/run/ckpt.safetensors" --steps 30 --out "$tmp/run" --quiet
run sample --ckpt "$tmp/run/ckpt.safetensors" -n 50 --out "$tmp/s.csv" --trajectory "$tmp/traj" --plot "$tmp/s.png" --quiet
run sample --ckpt "$tmp/run/ckpt.safetensors" -n 50 --sampler ddim --steps 10 --out "$tmp/s.npy" --quiet
run sample --ckpt "$tmp/run/ckpt.safetensors" -n 50 --sampler dpmpp-3m --steps 8 --spacing karras --thresholding --out "$tmp/s.csv" --quiet
run sample --ckpt "$tmp/run/ckpt.safetensors" -n 50 --sampler heun --steps 4 --verbose --out "$tmp/s.csv" --quiet
run eval --ckpt "$tmp/run/ckpt.safetensors" -n 100 --projections 16
# a diffusers folder (the fixture of the 256-pixel layout, flat, older attention names)
run sample --diffusers tests/fixtures/diffusers/church -n 1 --steps 2 --out "$tmp/d.png" --quiet
rc=0; "${vg[@]}" "$DDPM" sample --diffusers "$tmp/none" --out "$tmp/x.png" 2>/dev/null || rc=$?
test $rc -eq 2 || { echo "valgrind: the diffusers error path exited $rc, expected 2"; exit 1; }
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
}

image_setup() {
run noise --data moons --n-points 100 --out "$tmp/f.png" # also the wrong-size mask below
# images: a tiny class-conditional U-Net on a few Fashion-MNIST images, then sampling with a GIF
tiny=(--model unet --base-channels 8 --channel-mult 1,2 --num-res-blocks 1 --groups 4 --heads 2
      --dim-head 8 --timesteps 10)
run train --data fashion-mnist --max-items 8 "${tiny[@]}" --batch-size 4 --steps 2 --sample-every 2 \
  --sample-n 2 --out "$tmp/img" --quiet
run sample --ckpt "$tmp/img/ckpt.safetensors" --per-class 1 --sampler ddim --steps 2 --guidance 1 \
  --out "$tmp/g.png" --npy "$tmp/g.npy" --gif "$tmp/g.gif" --gif-every 1 --quiet
}

editing_paths() {
# editing: img2img, RePaint, inversion and back, interpolation, on two samples as the images
# (RePaint's resampling makes ~16 network calls: on ten images that was 130 s of valgrind)
run sample --ckpt "$tmp/img/ckpt.safetensors" -n 2 --class 3 --sampler ddim --steps 2 --out "$tmp/two.npy" --quiet
{ printf 'P5\n28 28\n255\n'; head -c 392 /dev/zero | tr '\0' '\377'; head -c 392 /dev/zero; } > "$tmp/mask.pgm"
run sample --ckpt "$tmp/img/ckpt.safetensors" --init-image "$tmp/two.npy" --strength 0.5 --sampler ddim --steps 4 \
  --out "$tmp/e.npy" --gif "$tmp/e.gif" --quiet
run sample --ckpt "$tmp/img/ckpt.safetensors" --init-image "$tmp/two.npy" --mask "$tmp/mask.pgm" --jump-length 2 \
  --jump-n-sample 2 --class 1 --out "$tmp/r.png" --quiet
run invert --ckpt "$tmp/img/ckpt.safetensors" --images "$tmp/two.npy" --steps 3 --out "$tmp/xT.npy" \
  --reconstruct "$tmp/rec.png" --quiet
run sample --ckpt "$tmp/img/ckpt.safetensors" --x-init "$tmp/xT.npy" --sampler ddim --steps 3 --out "$tmp/b.npy" --quiet
run interpolate --ckpt "$tmp/img/ckpt.safetensors" --seeds 1,2 --frames 3 --steps 2 --class-a 0 --class-b 1 \
  --out "$tmp/i.png" --gif "$tmp/i.gif" --quiet
rc=0; "${vg[@]}" "$DDPM" sample --ckpt "$tmp/img/ckpt.safetensors" --init-image "$tmp/two.npy" --mask "$tmp/f.png" \
  --out "$tmp/x.npy" 2>/dev/null || rc=$?
test $rc -eq 2 || { echo "valgrind: the bad-mask path exited $rc, expected 2"; exit 1; }
}

metric_paths() {
# the image classifier and the image metrics: a tiny classifier, then eval of its training images
run classifier train --data fashion-mnist --max-items 64 --epochs 1 --batch 32 --conv-channels 2,2,2 \
  --features 4 --out "$tmp/cls.safetensors"
run eval --samples "$tmp/g.npy" --features "$tmp/cls.safetensors" --per-class 1 --kid-subsets 5
# the Inception-v3 of FID: the test fixture's narrow twin (~20 s of CPU under valgrind)
run eval --samples "$tmp/g.npy" -n 4 --ref "$tmp/g.npy" --inception tests/fixtures/inception/w16.pth --kid-subsets 5
}

(set -e; points_paths) >"$tmp/points.log" 2>&1 &
jobs=($!)
image_setup
(set -e; editing_paths) >"$tmp/editing.log" 2>&1 &
jobs+=($!)
(set -e; metric_paths) >"$tmp/metrics.log" 2>&1 &
jobs+=($!)
ok=1
for j in "${jobs[@]}"; do wait "$j" || ok=0; done
cat "$tmp/points.log" "$tmp/editing.log" "$tmp/metrics.log"
[ "$ok" = 1 ] || { echo "valgrind: a path failed (see above)"; exit 1; }
echo "valgrind: no leaks or memory errors"

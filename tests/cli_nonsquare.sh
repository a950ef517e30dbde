#!/usr/bin/env bash
# Non-square images end to end through the command line: a folder of mixed-size images read at
# 16 x 24 (height x width) and an .npy of 8 x 12 images train the DDPM U-Net; sampling writes
# grids, .npy, GIFs of that shape, --x-init and the checkpoint carry it; networks that take square
# images only, sizes the U-Net cannot halve, and malformed --image-size give one-line errors.
set -u
DDPM=${1:?usage: cli_nonsquare.sh path/to/ddpm}
. "$(dirname "$0")/cli_lib.sh"
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT

mkdir -p "$tmp/data"
ppm "$tmp/data/exact.ppm" 24 16 200 40 40    # 24 wide, 16 tall: read as it is
ppm "$tmp/data/big.ppm" 48 32 40 200 40      # shrunk by 2
ppm "$tmp/data/square.ppm" 20 20 40 40 200   # scaled to 24 wide, centre 16 rows kept
ppm "$tmp/data/tall.ppm" 12 30 220 220 40    # scaled to 24 wide, centre 16 rows kept

tiny=(--model unet --base-channels 8 --channel-mult 1,2 --num-res-blocks 1 --groups 4 --heads 2
      --dim-head 8 --timesteps 30 --batch-size 4 --quiet)
expect_ok "train on a folder at 16x24" "$DDPM" train --data "$tmp/data" --image-size 16x24 "${tiny[@]}" \
  --steps 6 --sample-every 3 --sample-n 2 --out "$tmp/run"
ck="$tmp/run/ckpt.safetensors"
check "checkpoint" test -s "$ck"
check "the checkpoint's network is 16 x 24" grep -qaF 'height\":16,\"width\":24' "$ck"
check "training sample grids" test -s "$tmp/run/samples/step_0000006.png"
expect_ok "the same with --image-size 16 --image-width 24" "$DDPM" train --data "$tmp/data" --image-size 16 --image-width 24 \
  "${tiny[@]}" --steps 6 --sample-every 0 --out "$tmp/run2"
check "--image-size H --image-width W = --image-size HxW" cmp -s "$tmp/run/ckpt.safetensors" "$tmp/run2/ckpt.safetensors"
expect_ok "resume the non-square run" "$DDPM" train --resume "$ck" --steps 8 --out "$tmp/run" --quiet

for s in ddim unipc dpmpp-2m; do
  expect_ok "sample 16x24 with $s" "$DDPM" sample --ckpt "$ck" -n 3 --sampler $s --steps 6 --nrow 3 \
    --out "$tmp/$s.png" --npy "$tmp/$s.npy" --quiet
  check "$s: npy has shape (3, 3, 16, 24)" grep -qa "'shape': (3, 3, 16, 24)" "$tmp/$s.npy"
done
# the grid: 3 images of 24 x 16 side by side at scale 2 with the grid's padding; its PNG header
# says wider than tall
png_w=$(od -An -tu1 -j16 -N4 "$tmp/ddim.png" | awk '{print $1*16777216+$2*65536+$3*256+$4}')
png_h=$(od -An -tu1 -j20 -N4 "$tmp/ddim.png" | awk '{print $1*16777216+$2*65536+$3*256+$4}')
check "the grid is wider than tall ($png_w x $png_h)" test "$png_w" -gt $((2 * png_h))
expect_ok "DDPM with a GIF" "$DDPM" sample --ckpt "$ck" -n 2 --gif "$tmp/d.gif" --gif-every 10 --out "$tmp/ddpm.png" --quiet
gif_w=$(od -An -tu2 -j6 -N2 --endian=little "$tmp/d.gif" | tr -d ' ')
gif_h=$(od -An -tu2 -j8 -N2 --endian=little "$tmp/d.gif" | tr -d ' ')
check "the GIF is wider than tall ($gif_w x $gif_h)" test "$gif_w" -gt "$gif_h"
expect_ok "--x-init of the model's shape" "$DDPM" sample --ckpt "$ck" --x-init "$tmp/ddim.npy" --sampler ddim --steps 4 \
  --out "$tmp/xi.npy" --quiet
check "--x-init: 3 samples" grep -qa "'shape': (3, 3, 16, 24)" "$tmp/xi.npy"
expect_ok "img2img on a non-square image" "$DDPM" sample --ckpt "$ck" --init-image "$tmp/data/exact.ppm" --strength 0.5 \
  --sampler ddim --steps 6 --out "$tmp/edit.npy" --quiet
check "img2img: one 16x24 image" grep -qa "'shape': (1, 3, 16, 24)" "$tmp/edit.npy"
expect_ok "img2img with strength 0" "$DDPM" sample --ckpt "$ck" --init-image "$tmp/data/exact.ppm" --strength 0 \
  --sampler ddim --steps 6 --out "$tmp/keep.npy" --quiet
if /usr/bin/python3 -c "import numpy" 2>/dev/null; then
  check "strength 0 gives the 24-wide image back, pixel for pixel" /usr/bin/python3 - "$tmp/keep.npy" "$tmp/data/exact.ppm" <<'EOF'
import sys, numpy as np
x = np.load(sys.argv[1])
raw = open(sys.argv[2], "rb").read()
px = np.frombuffer(raw[len(b"P6\n24 16\n255\n"):], np.uint8).reshape(16, 24, 3).transpose(2, 0, 1)
sys.exit(0 if x.shape == (1, 3, 16, 24) and np.array_equal(x[0], px / np.float32(127.5) - 1) else 1)
EOF
fi

# an .npy of N x H x W x C uint8 images, 8 x 12
/usr/bin/python3 - "$tmp/wide.npy" <<'EOF' 2>/dev/null || printf '' > "$tmp/no-numpy"
import sys, numpy as np
x = (np.arange(6 * 8 * 12 * 1) % 251).astype(np.uint8).reshape(6, 8, 12, 1)
np.save(sys.argv[1], x)
EOF
if [ -s "$tmp/wide.npy" ]; then
  expect_ok "train on an 8x12 .npy" "$DDPM" train --data "$tmp/wide.npy" "${tiny[@]}" --steps 4 --sample-every 0 --out "$tmp/npy"
  expect_ok "sample it with unipc" "$DDPM" sample --ckpt "$tmp/npy/ckpt.safetensors" -n 2 --sampler unipc --steps 5 \
    --out "$tmp/n.npy" --quiet
  check "npy model: shape (2, 1, 8, 12)" grep -qa "'shape': (2, 1, 8, 12)" "$tmp/n.npy"
  expect_fail 2 "--x-init of another shape" "ddim.npy: x_T must be an array [3, 1, 8, 12]" "$DDPM" sample --ckpt "$tmp/npy/ckpt.safetensors" \
    --x-init "$tmp/ddim.npy" --sampler ddim --steps 3 --out "$tmp/x.png"
  expect_fail 2 "context-unet on non-square data" "--model context-unet takes square images; the data are 8x12" \
    "$DDPM" train --data "$tmp/wide.npy" --model context-unet --steps 1 --out "$tmp/bad"
else
  echo "note: /usr/bin/python3 has no numpy; the .npy checks are skipped"
fi

expect_fail 2 "a width the U-Net cannot halve" "\"width\" 26 does not fit 3 levels" \
  "$DDPM" train --data "$tmp/data" --image-size 16x26 --model unet --steps 1 --out "$tmp/bad"
expect_fail 2 "malformed --image-size" "--image-size takes S or HxW" \
  "$DDPM" train --data "$tmp/data" --image-size 16x --model unet --steps 1 --out "$tmp/bad"
expect_fail 2 "--image-size and --image-width disagree" "disagree on the width" \
  "$DDPM" train --data "$tmp/data" --image-size 16x24 --image-width 32 --model unet --steps 1 --out "$tmp/bad"
expect_fail 2 "simple-unet on non-square images" "--model simple-unet takes square images" \
  "$DDPM" train --data "$tmp/data" --image-size 16x24 --model simple-unet --steps 1 --out "$tmp/bad"
finish

#!/usr/bin/env bash
# The image workflow through the command line, on a small labelled folder of images the test
# writes itself (PPM and PGM, mixed sizes): train a tiny U-Net, sample per-class grids, .npy, the
# denoising GIF, a given x_T; and each bad input gives a one-line error and exit code 2.
set -u
DDPM=${1:?usage: cli_images.sh path/to/ddpm}
. "$(dirname "$0")/cli_lib.sh"
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT

mkdir -p "$tmp/data/red" "$tmp/data/blue" "$tmp/empty"
for i in 1 2 3 4 5 6; do
  ppm "$tmp/data/red/r$i.ppm" 8 8 $((200 + i * 5)) 40 40
  ppm "$tmp/data/blue/b$i.ppm" 8 8 30 60 $((200 + i * 5))
done
ppm "$tmp/data/red/wide.ppm" 12 8 230 50 50     # non-square: resized and center-cropped
{ printf 'P5\n8 8\n255\n'; head -c 64 /dev/zero | tr '\0' '\200'; } > "$tmp/data/blue/gray.pgm"

tiny=(--model unet --base-channels 8 --channel-mult 1,2 --num-res-blocks 1 --groups 4 --heads 2
      --dim-head 8 --timesteps 40 --batch-size 8 --quiet)
expect_ok "train on a folder" "$DDPM" train --data "$tmp/data" --labels-from-dirs --image-size 8 "${tiny[@]}" \
  --steps 20 --sample-every 10 --sample-n 4 --out "$tmp/run"
ck="$tmp/run/ckpt.safetensors"
check "checkpoint" test -s "$ck"
check "sample grids during training" test -s "$tmp/run/samples/step_0000010.png" -a -s "$tmp/run/samples/step_0000020.png"
expect_ok "sample per class with DDIM, npy and GIF" "$DDPM" sample --ckpt "$ck" --per-class 2 --sampler ddim --steps 20 \
  --out "$tmp/grid.png" --npy "$tmp/s.npy" --gif "$tmp/d.gif" --gif-every 5 --quiet
check "grid written" test -s "$tmp/grid.png"
check "npy has shape (4, 3, 8, 8)" grep -qa "'shape': (4, 3, 8, 8)" "$tmp/s.npy"
frames=$(LC_ALL=C grep -obUaP '\x21\xf9\x04' "$tmp/d.gif" | wc -l)
check "GIF has 20/5 = 4 frames" test "$frames" -eq 4
expect_ok "DDPM sampling with guidance" "$DDPM" sample --ckpt "$ck" --class 1 --guidance 2 -n 3 --out "$tmp/g.npy" --quiet
expect_ok "unconditional sampling of a conditional model" "$DDPM" sample --ckpt "$ck" -n 2 --sampler ddim --steps 5 --out "$tmp/u.png" --quiet
# a given x_T with DDIM and eta 0 fixes the result whatever the seed
{ printf '\x93NUMPY\x01\x00\x76\x00'; printf "%-117s\n" "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3, 8, 8), }"; head -c 1536 /dev/zero; } > "$tmp/xT.npy"
"$DDPM" sample --ckpt "$ck" -n 2 --sampler ddim --steps 10 --x-init "$tmp/xT.npy" --seed 1 --out "$tmp/x1.npy" --quiet
"$DDPM" sample --ckpt "$ck" -n 2 --sampler ddim --steps 10 --x-init "$tmp/xT.npy" --seed 2 --out "$tmp/x2.npy" --quiet
check "x_T fixes the DDIM result" cmp -s "$tmp/x1.npy" "$tmp/x2.npy"
"$DDPM" sample --ckpt "$ck" -n 2 --sampler ddim --steps 10 --seed 1 --out "$tmp/x3.npy" --quiet
check "without x_T the seed matters" bash -c "! cmp -s '$tmp/x1.npy' '$tmp/x3.npy'"
# a sigma-space sampler: the same x_T, its step count in the GIF
expect_ok "sample with Heun and karras steps" "$DDPM" sample --ckpt "$ck" -n 2 --sampler heun --steps 6 --spacing karras --x-init "$tmp/xT.npy" --seed 1 --out "$tmp/h1.npy" --gif "$tmp/h.gif" --gif-every 2 --quiet
"$DDPM" sample --ckpt "$ck" -n 2 --sampler heun --steps 6 --spacing karras --x-init "$tmp/xT.npy" --seed 2 --out "$tmp/h2.npy" --quiet
check "x_T fixes the Heun result" cmp -s "$tmp/h1.npy" "$tmp/h2.npy"
frames=$(LC_ALL=C grep -obUaP '\x21\xf9\x04' "$tmp/h.gif" | wc -l)
check "Heun GIF has 6/2 = 3 frames" test "$frames" -eq 3

# bad input
expect_fail 2 "class out of range" "--class 5 is out of range: the model has 2 classes" "$DDPM" sample --ckpt "$ck" --class 5 --out "$tmp/x.png"
expect_fail 2 "context of the wrong length" "--context needs 2" "$DDPM" sample --ckpt "$ck" --context 1,0,1 --out "$tmp/x.png"
expect_fail 2 "x_T of the wrong shape" "xT.npy: x_T must be an array [3, 3, 8, 8]" "$DDPM" sample --ckpt "$ck" -n 3 --x-init "$tmp/xT.npy" --out "$tmp/x.png"
expect_fail 2 "negative head width" '"dim_head" must be in 0..4096 (got -3)' "$DDPM" train --data "$tmp/data" --image-size 8 "${tiny[@]}" --dim-head -3 --out "$tmp/r2"
expect_fail 2 "directory with no images" "no images found" "$DDPM" train --data "$tmp/empty" "${tiny[@]}" --out "$tmp/r2"
cp -r "$tmp/data" "$tmp/broken"; head -c 100 "$tmp/grid.png" > "$tmp/broken/red/cut.png"
expect_fail 2 "truncated image" "cut.png" "$DDPM" train --data "$tmp/broken" --image-size 8 "${tiny[@]}" --steps 1 --out "$tmp/r2"
printf 'not an image' > "$tmp/broken/blue/b1.ppm"; rm "$tmp/broken/red/cut.png"
expect_fail 2 "unreadable image" "b1.ppm" "$DDPM" train --data "$tmp/broken" --image-size 8 "${tiny[@]}" --steps 1 --out "$tmp/r2"
{ printf '\x93NUMPY\x01\x00\x76\x00'; printf "%-117s\n" "{'descr': '<c8', 'fortran_order': False, 'shape': (2, 8, 8, 3), }"; head -c 1024 /dev/zero; } > "$tmp/c.npy"
expect_fail 2 "npy of the wrong dtype" "c.npy" "$DDPM" train --data "$tmp/c.npy" "${tiny[@]}" --out "$tmp/r2"
{ printf '\x93NUMPY\x01\x00\x76\x00'; printf "%-117s\n" "{'descr': '|u1', 'fortran_order': False, 'shape': (4, 8), }"; head -c 32 /dev/zero; } > "$tmp/rank.npy"
expect_fail 2 "npy of the wrong rank" "rank.npy" "$DDPM" train --data "$tmp/rank.npy" "${tiny[@]}" --out "$tmp/r2"
{ printf '\x93NUMPY\x01\x00\x76\x00'; printf "%-117s\n" "{'descr': '|u1', 'fortran_order': False, 'shape': (4, 8, 8, 3), }"; head -c 768 /dev/zero; } > "$tmp/img.npy"
{ printf '\x93NUMPY\x01\x00\x76\x00'; printf "%-117s\n" "{'descr': '<i8', 'fortran_order': False, 'shape': (3,), }"; head -c 24 /dev/zero; } > "$tmp/lab.npy"
expect_fail 2 "labels count differs" "lab.npy has 3 rows but" "$DDPM" train --data "$tmp/img.npy" --labels "$tmp/lab.npy" "${tiny[@]}" --out "$tmp/r2"
expect_fail 2 "image size the network cannot take" "height" "$DDPM" train --data "$tmp/data" --image-size 10 --model context-unet --n-feat 8 --quiet --out "$tmp/r2"
expect_fail 2 "per-class beyond the sample limit" "--per-class 600000 x 2 classes is more than 1000000 samples" "$DDPM" sample --ckpt "$ck" --per-class 600000 --out "$tmp/x.png"
expect_fail 2 "guidance beyond its range" "--guidance must be in -1..100 (got '1e30')" "$DDPM" sample --ckpt "$ck" --class 1 --guidance 1e30 --out "$tmp/x.png"
expect_fail 2 "guidance beyond float" "--guidance expects a number, got '1e300'" "$DDPM" sample --ckpt "$ck" --class 1 --guidance 1e300 --out "$tmp/x.png"
expect_fail 2 "eta beyond its range" "--eta must be in 0..1 (got '1e30')" "$DDPM" sample --ckpt "$ck" --sampler ddim --eta 1e30 --out "$tmp/x.png"
expect_fail 2 "negative eta" "--eta must be in 0..1 (got '-0.5')" "$DDPM" sample --ckpt "$ck" --sampler ddim --eta -0.5 --out "$tmp/x.png"
expect_fail 2 "interpolate guidance beyond its range" "--guidance must be in -1..100" "$DDPM" interpolate --ckpt "$ck" --seeds 1,2 --guidance 101 --out "$tmp/x.png"
expect_fail 2 "train eval guidance beyond its range" "--eval-guidance must be in -1..100" "$DDPM" train --data "$tmp/data" --image-size 8 "${tiny[@]}" --eval-guidance 1e6 --out "$tmp/r2"
expect_fail 2 "gif-every beyond its range" "--gif-every must be in 0..1000000" "$DDPM" sample --ckpt "$ck" -n 2 --gif "$tmp/x.gif" --gif-every 2147483647
expect_fail 2 "per-class beyond its range (int overflow of the count)" "--per-class must be in 0..1000000 (got '2147483647')" "$DDPM" sample --ckpt "$ck" --per-class 2147483647 --out "$tmp/x.png"
expect_fail 2 "per-class at its limit, times the classes" "--per-class 1000000 x 2 classes is more than 1000000 samples" "$DDPM" sample --ckpt "$ck" --per-class 1000000 --out "$tmp/x.png" --allow-large-memory
# a grid too large for a GIF is refused before sampling (issue 11: -n 100000 --gif sampled first)
out=$("$DDPM" sample --ckpt "$ck" -n 100000 --gif "$tmp/big.gif" --allow-large-memory 2>&1); rc=$?
check "-n 100000 --gif exits 2" test $rc -eq 2
check "-n 100000 --gif names the grid size" grep -qF "big.gif: a grid of 100000 samples in rows of 10 is 182 x 180002 pixels, more than 65535 a side" <<<"$out"
check "-n 100000 --gif is refused before sampling" bash -c '! grep -q "^sampling" <<<"$1"' _ "$out"
check "-n 100000 --gif writes no GIF" test ! -e "$tmp/big.gif"
out=$("$DDPM" sample --ckpt "$ck" -n 100000 --gif "$tmp/big.gif" 2>&1); rc=$?
check "-n 100000 --gif, memory check on: refused before sampling too" bash -c 'test "$2" -eq 2 && ! grep -q "^sampling" <<<"$1"' _ "$out" "$rc"
# --shard-data: images only, and a resumed run shards as its checkpoint says
expect_fail 2 "shard-data with resume" "--shard-data is kept in the checkpoint: --resume shards as the run did" "$DDPM" train --resume "$ck" --shard-data --steps 30 --out "$tmp/r3"
expect_fail 2 "shard-data on points" "--shard-data is for image data (a folder, an .npy file or fashion-mnist), not points" "$DDPM" train --data s-curve --shard-data --steps 1 --out "$tmp/r3" --quiet
expect_fail 2 "weights of another model" "of the context-unet model is missing" "$DDPM" sample --weights "$ck" --model context-unet --n-feat 8 --n-cfeat 2 --height 8 --channels 3 --timesteps 40 --out "$tmp/x.png"
finish

#!/usr/bin/env bash
# The editing modes through the command line, on a tiny U-Net trained here in a second on 8x8
# images the test writes itself: img2img (strength 0 gives the image back, strength 1 plain
# sampling, bit for bit), RePaint (the kept region ends as the image), DDIM inversion into the
# .npy that sample --x-init reads (and sets N from), interpolation (its ends are the seeds'
# samples); and each bad input gives a one-line error naming the flag or file, exit 2.
set -u
DDPM=${1:?usage: cli_editing.sh path/to/ddpm}
. "$(dirname "$0")/cli_lib.sh"
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT

# pgm FILE W H TOP BOTTOM: a gray image, the top half of value TOP, the bottom half BOTTOM
pgm() {
  local f=$1 w=$2 h=$3 top=$4 bot=$5
  { printf 'P5\n%d %d\n255\n' "$w" "$h"
    for ((y = 0; y < h; y++)); do for ((x = 0; x < w; x++)); do
      if ((y < h / 2)); then printf "\\x$(printf %02x "$top")"; else printf "\\x$(printf %02x "$bot")"; fi
    done; done; } > "$f"
}
# floats FILE.npy: the array's values, one a line (the header's length is at bytes 8-9)
floats() {
  local hl; hl=$(od -A n -t u2 -j 8 -N 2 "$1" | tr -d ' ')
  od -A n -v -t f4 -j $((10 + hl)) "$1" | tr -s ' ' '\n' | grep .
}
data_bytes() { # data_bytes FILE.npy SKIP COUNT: COUNT bytes of the array's data from SKIP
  local hl; hl=$(od -A n -t u2 -j 8 -N 2 "$1" | tr -d ' ')
  tail -c +$((10 + hl + $2 + 1)) "$1" | head -c "$3"
}
mkdir -p "$tmp/data/red" "$tmp/data/blue" "$tmp/edit" "$tmp/empty"
for i in 1 2 3 4 5 6; do
  ppm "$tmp/data/red/r$i.ppm" 8 8 $((200 + i * 5)) 40 40
  ppm "$tmp/data/blue/b$i.ppm" 8 8 30 60 $((200 + i * 5))
done
ppm "$tmp/edit/a.ppm" 8 8 255 255 255           # white with a grey square
ppm "$tmp/edit/b.ppm" 8 8 230 40 40
{ printf 'P6\n8 8\n255\n'; head -c 192 /dev/zero | tr '\0' '\377'; } > "$tmp/white.ppm"
ppm "$tmp/big.ppm" 12 12 200 40 40
pgm "$tmp/mask.pgm" 8 8 255 0                    # keep the top half
pgm "$tmp/mask4.pgm" 4 4 255 0
pgm "$tmp/allwhite.pgm" 8 8 255 255
tiny=(--model unet --base-channels 8 --channel-mult 1,2 --num-res-blocks 1 --groups 4 --heads 2
      --dim-head 8 --timesteps 40 --batch-size 8 --quiet)
expect_ok "train a tiny conditional model" "$DDPM" train --data "$tmp/data" --labels-from-dirs --image-size 8 "${tiny[@]}" \
  --steps 20 --out "$tmp/run"
ck="$tmp/run/ckpt.safetensors"
q=(--quiet)

# img2img
expect_ok "img2img of a folder" "$DDPM" sample --ckpt "$ck" --init-image "$tmp/edit" --strength 0.5 --sampler ddim --steps 10 --out "$tmp/i.npy" --gif "$tmp/i.gif" "${q[@]}"
check "one sample per image of the folder" grep -qa "'shape': (2, 3, 8, 8)" "$tmp/i.npy"
frames=$(LC_ALL=C grep -obUaP '\x21\xf9\x04' "$tmp/i.gif" | wc -l)
check "GIF has the 5 steps that run" test "$frames" -eq 5
out=$("$DDPM" sample --ckpt "$ck" --init-image "$tmp/edit/a.ppm" --strength 0.7 --sampler euler --steps 10 -n 3 --out "$tmp/e.npy" 2>&1)
check "one image, -n 3: three variations" grep -qa "'shape': (3, 3, 8, 8)" "$tmp/e.npy"
check "the log says which steps run" grep -q "img2img with euler, strength 0.7: the last 7 of 10 steps, from t = " <<<"$out"
"$DDPM" sample --ckpt "$ck" --init-image "$tmp/white.ppm" --strength 0 --out "$tmp/s0.npy" "${q[@]}"
vals=$(floats "$tmp/s0.npy" | sort | uniq -c | awk '{ print $1 "x" $2 }')
check "strength 0 gives the image back (white: 192 values, every one 1)" test "$vals" = 192x1
"$DDPM" sample --ckpt "$ck" --init-image "$tmp/edit" --strength 0 --sampler heun --steps 5 --out "$tmp/s0b.npy" "${q[@]}"
"$DDPM" sample --ckpt "$ck" --init-image "$tmp/s0b.npy" --strength 0.02 --sampler ddim --steps 10 --out "$tmp/s0c.npy" "${q[@]}"
check "strength below 1/K, from a .npy: the same bits" cmp -s "$tmp/s0b.npy" "$tmp/s0c.npy"
for sm in ddim ddpm dpmpp-2m; do
  steps=(--steps 8); [ "$sm" = ddpm ] && steps=()
  rm -f "$tmp/s1.npy" "$tmp/p1.npy"
  "$DDPM" sample --ckpt "$ck" --init-image "$tmp/edit" --strength 1 --sampler "$sm" "${steps[@]}" --seed 4 --out "$tmp/s1.npy" "${q[@]}"
  "$DDPM" sample --ckpt "$ck" -n 2 --sampler "$sm" "${steps[@]}" --seed 4 --out "$tmp/p1.npy" "${q[@]}"
  check "strength 1 is plain sampling ($sm)" cmp "$tmp/s1.npy" "$tmp/p1.npy"
done
"$DDPM" sample --ckpt "$ck" --init-image "$tmp/edit" --strength 0.6 --sampler ddpm --seed 9 --out "$tmp/r1.npy" "${q[@]}"
"$DDPM" sample --ckpt "$ck" --init-image "$tmp/edit" --strength 0.6 --sampler ddpm --seed 9 --batch 1 --threads 1 --out "$tmp/r2.npy" "${q[@]}"
check "img2img is reproducible (batch, threads)" cmp -s "$tmp/r1.npy" "$tmp/r2.npy"
"$DDPM" sample --ckpt "$ck" --init-image "$tmp/edit" --strength 0.6 --sampler ddpm --seed 10 --out "$tmp/r3.npy" "${q[@]}"
check "... and depends on the seed" bash -c "! cmp -s '$tmp/r1.npy' '$tmp/r3.npy'"
expect_ok "img2img under a class with guidance" "$DDPM" sample --ckpt "$ck" --init-image "$tmp/edit/b.ppm" --class 1 --guidance 1 --strength 0.5 --sampler ddim --steps 10 --out "$tmp/g.png" "${q[@]}"

# RePaint
expect_ok "RePaint" "$DDPM" sample --ckpt "$ck" --init-image "$tmp/white.ppm" --mask "$tmp/mask.pgm" --jump-length 5 --jump-n-sample 3 -n 2 --out "$tmp/rp.npy" --gif "$tmp/rp.gif" "${q[@]}"
# [2, 3, 8, 8]: rows 0-3 of every channel of both images are kept (value 1)
kept=$(floats "$tmp/rp.npy" | awk '{ if (int((NR - 1) / 32) % 2 == 0 && $1 != 1) bad++ } END { print bad + 0 }')
check "the kept (white) half is the image exactly" test "$kept" -eq 0
regen=$(floats "$tmp/rp.npy" | awk '{ if (int((NR - 1) / 32) % 2 == 1 && $1 != 1) n++ } END { print n + 0 }')
check "the black half is regenerated" test "$regen" -gt 100
check "RePaint GIF written" test -s "$tmp/rp.gif"
out=$("$DDPM" sample --ckpt "$ck" --init-image "$tmp/white.ppm" --mask "$tmp/mask.pgm" --jump-length 10 --jump-n-sample 2 --out "$tmp/rp2.npy" 2>&1)
check "RePaint says its moves and evaluations (T 40, J 10, R 2: 100 moves, 70 evaluations)" grep -q "jump length 10, 2 samples: 100 moves, 70 network evaluations" <<<"$out"

# DDIM inversion, --x-init without -n
out=$("$DDPM" invert --ckpt "$ck" --images "$tmp/edit" --steps 10 --out "$tmp/xT.npy" --reconstruct "$tmp/rec.png" 2>&1)
check "x_T written [2, 3, 8, 8]" grep -qa "'shape': (2, 3, 8, 8)" "$tmp/xT.npy"
check "round-trip error printed" grep -q "round trip (10 steps): rmse" <<<"$out"
check "reconstruction grid written" test -s "$tmp/rec.png"
"$DDPM" sample --ckpt "$ck" --x-init "$tmp/xT.npy" --sampler ddim --steps 10 --out "$tmp/back.npy" "${q[@]}"
check "--x-init sets N (2 from the array)" grep -qa "'shape': (2, 3, 8, 8)" "$tmp/back.npy"
"$DDPM" invert --ckpt "$ck" --images "$tmp/edit" --steps 10 --reconstruct "$tmp/back2.npy" "${q[@]}" >/dev/null
"$DDPM" sample --ckpt "$ck" --x-init "$tmp/xT.npy" --sampler ddim --steps 10 --no-clip --out "$tmp/back3.npy" "${q[@]}"
check "invert --reconstruct is sample --x-init --no-clip" cmp -s "$tmp/back2.npy" "$tmp/back3.npy"
"$DDPM" invert --ckpt "$ck" --images "$tmp/edit" --steps 10 --reconstruct "$tmp/back4.npy" --clip "${q[@]}" >/dev/null
check "... and with --clip, sample --x-init" cmp -s "$tmp/back4.npy" "$tmp/back.npy"
expect_ok "inversion under a class" "$DDPM" invert --ckpt "$ck" --images "$tmp/edit/a.ppm" --class 0 --steps 5 --out "$tmp/xc.npy" "${q[@]}"

# interpolation: the ends are the seeds' own samples
expect_ok "interpolate between seeds" "$DDPM" interpolate --ckpt "$ck" --seeds 3,5 --frames 5 --steps 10 --out "$tmp/strip.png" --gif "$tmp/strip.gif" --npy "$tmp/strip.npy" "${q[@]}"
"$DDPM" sample --ckpt "$ck" -n 1 --seed 3 --sampler ddim --steps 10 --out "$tmp/a3.npy" "${q[@]}"
"$DDPM" sample --ckpt "$ck" -n 1 --seed 5 --sampler ddim --steps 10 --out "$tmp/a5.npy" "${q[@]}"
check "first frame = seed 3's sample" cmp -s <(data_bytes "$tmp/strip.npy" 0 768) <(data_bytes "$tmp/a3.npy" 0 768)
check "last frame = seed 5's sample" cmp -s <(data_bytes "$tmp/strip.npy" 3072 768) <(data_bytes "$tmp/a5.npy" 0 768)
data_bytes "$tmp/strip.npy" 1536 768 > "$tmp/mid.bin"
check "the middle frame is neither end" bash -c "! cmp -s '$tmp/mid.bin' <(tail -c 768 '$tmp/a3.npy') && ! cmp -s '$tmp/mid.bin' <(tail -c 768 '$tmp/a5.npy')"
frames=$(LC_ALL=C grep -obUaP '\x21\xf9\x04' "$tmp/strip.gif" | wc -l)
check "GIF there and back: 2 x 5 - 2 frames" test "$frames" -eq 8
expect_ok "interpolate between classes and inverted images" "$DDPM" interpolate --ckpt "$ck" --images "$tmp/edit/a.ppm,$tmp/edit/b.ppm" --class-a 0 --class-b 1 --frames 3 --steps 5 --out "$tmp/s2.png" "${q[@]}"
check "strip written" test -s "$tmp/s2.png"

# bad input
expect_fail 2 "strength above 1" "--strength must be in 0..1" "$DDPM" sample --ckpt "$ck" --init-image "$tmp/white.ppm" --strength 1.5 --out "$tmp/x.npy"
expect_fail 2 "negative strength" "--strength must be in 0..1" "$DDPM" sample --ckpt "$ck" --init-image "$tmp/white.ppm" --strength -0.1 --out "$tmp/x.npy"
expect_fail 2 "strength without an image" "--strength needs --init-image" "$DDPM" sample --ckpt "$ck" --strength 0.5 --out "$tmp/x.npy"
expect_fail 2 "mask of another size" "--mask $tmp/mask4.pgm: the mask is 4x4 but the images are 8x8" "$DDPM" sample --ckpt "$ck" --init-image "$tmp/white.ppm" --mask "$tmp/mask4.pgm" --out "$tmp/x.npy"
expect_fail 2 "mask without an image" "--mask needs --init-image" "$DDPM" sample --ckpt "$ck" --mask "$tmp/mask.pgm" --out "$tmp/x.npy"
expect_fail 2 "mask with another sampler" "--mask (RePaint inpainting) runs with --sampler ddpm (got ddim)" "$DDPM" sample --ckpt "$ck" --init-image "$tmp/white.ppm" --mask "$tmp/mask.pgm" --sampler ddim --out "$tmp/x.npy"
expect_fail 2 "mask with an unknown sampler" "--sampler: unknown sampler 'repaint'" "$DDPM" sample --ckpt "$ck" --init-image "$tmp/white.ppm" --mask "$tmp/mask.pgm" --sampler repaint --out "$tmp/x.npy"
expect_fail 2 "a mask that keeps everything" "the mask is white everywhere" "$DDPM" sample --ckpt "$ck" --init-image "$tmp/white.ppm" --mask "$tmp/allwhite.pgm" --out "$tmp/x.npy"
expect_fail 2 "jumps without a mask" "--jump-length and --jump-n-sample need --mask" "$DDPM" sample --ckpt "$ck" --init-image "$tmp/white.ppm" --jump-n-sample 3 --out "$tmp/x.npy"
expect_fail 2 "strength with a mask" "--strength does not apply with --mask" "$DDPM" sample --ckpt "$ck" --init-image "$tmp/white.ppm" --mask "$tmp/mask.pgm" --strength 0.5 --out "$tmp/x.npy"
expect_fail 2 "init image of another size" "--init-image $tmp/big.ppm: the image is 12x12 but the model takes 8x8 images" "$DDPM" sample --ckpt "$ck" --init-image "$tmp/big.ppm" --out "$tmp/x.npy"
expect_fail 2 "a missing init image" "--init-image $tmp/none.png: No such file" "$DDPM" sample --ckpt "$ck" --init-image "$tmp/none.png" --out "$tmp/x.npy"
expect_fail 2 "empty folder" "no images in the folder" "$DDPM" sample --ckpt "$ck" --init-image "$tmp/empty" --out "$tmp/x.npy"
expect_fail 2 "folder count against -n" "holds 2 images but 3 samples are asked for" "$DDPM" sample --ckpt "$ck" --init-image "$tmp/edit" -n 3 --out "$tmp/x.npy"
expect_fail 2 "init image with x_T" "--init-image and --x-init exclude each other" "$DDPM" sample --ckpt "$ck" --init-image "$tmp/edit" --x-init "$tmp/xT.npy" --out "$tmp/x.npy"
{ printf '\x93NUMPY\x01\x00\x76\x00'; printf "%-117s\n" "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3, 4, 4), }"; head -c 384 /dev/zero; } > "$tmp/small.npy"
expect_fail 2 "npy of another size" "--init-image $tmp/small.npy: the images are 3x4x4 (C x H x W) but the model takes 3x8x8" "$DDPM" sample --ckpt "$ck" --init-image "$tmp/small.npy" --out "$tmp/x.npy"
expect_fail 2 "invert: image of another size" "--images $tmp/big.ppm: the image is 12x12" "$DDPM" invert --ckpt "$ck" --images "$tmp/big.ppm" --out "$tmp/x.npy"
expect_fail 2 "invert: no output" "give --out XT.npy" "$DDPM" invert --ckpt "$ck" --images "$tmp/edit"
expect_fail 2 "invert: too many steps" "--steps must be in 1..40" "$DDPM" invert --ckpt "$ck" --images "$tmp/edit" --steps 41 --out "$tmp/x.npy"
expect_fail 2 "interpolate: one seed" "--seeds needs two integers A,B" "$DDPM" interpolate --ckpt "$ck" --seeds 3 --out "$tmp/x.png"
expect_fail 2 "interpolate: one image" "--images needs two files" "$DDPM" interpolate --ckpt "$ck" --images "$tmp/edit/a.ppm" --out "$tmp/x.png"
expect_fail 2 "interpolate: class out of range" "--class-b 7 is out of range" "$DDPM" interpolate --ckpt "$ck" --class-a 0 --class-b 7 --out "$tmp/x.png"
check "--help says white = keep" bash -c "'$DDPM' sample --help | grep -q 'white = keep'"
finish

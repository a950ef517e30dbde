#!/usr/bin/env bash
# `ddpm classifier` and `ddpm eval` of images through the command line, on a small two-class
# folder of images the test writes itself: train a tiny classifier, test it, measure a folder and
# an .npy against a reference with it; every bad input gives a one-line error and exit code 2.
# With Debian's Fashion-MNIST installed, also `ddpm eval` with the shipped classifier.
set -u
DDPM=${1:?usage: cli_classifier.sh path/to/ddpm}
. "$(dirname "$0")/cli_lib.sh"
FIXTURES="$(cd "$(dirname "$0")" && pwd)/fixtures"
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT

# pgm FILE TOP I: a 12 x 12 gray image, bright in its top half (TOP=1) or bottom half, with a
# pattern that differs per image I
pgm() {
  local f=$1 top=$2 i=$3
  { printf 'P5\n12 12\n255\n'
    for ((y = 0; y < 12; y++)); do for ((x = 0; x < 12; x++)); do
      local v=$(( (i * 7 + x * 3 + y * 5) % 23 ))
      if (( (y < 6) == top )); then v=$((200 + v)); else v=$((20 + v)); fi
      printf "\\x$(printf %02x $v)"
    done; done; } > "$f"
}
mkdir -p "$tmp/data/top" "$tmp/data/bottom" "$tmp/empty"
for i in $(seq 1 12); do pgm "$tmp/data/top/t$i.pgm" 1 "$i"; pgm "$tmp/data/bottom/b$i.pgm" 0 "$i"; done
# npy [N, 1, 12, 12] uint8 of one value: an .npy header padded to 128 bytes, then the pixels
npy() { # npy FILE N BYTE
  { printf '\x93NUMPY\x01\x00\x76\x00'; printf "%-117s\n" "{'descr': '|u1', 'fortran_order': False, 'shape': ($2, 1, 12, 12), }"
    head -c $(($2 * 144)) /dev/zero | tr '\0' "\\$(printf %03o "$3")"; } > "$1"
}
npy "$tmp/gray.npy" 8 128
npy "$tmp/one.npy" 1 128

cls="$tmp/cls.safetensors"
small=(--image-size 12 --conv-channels 4,8 --features 8 --batch 4 --test-every 4 --seed 1)
out=$("$DDPM" classifier train --data "$tmp/data" "${small[@]}" --epochs 15 --lr 5e-3 --out "$cls" 2>&1); rc=$?
check "classifier train exits 0" test $rc -eq 0
check "classifier file written" test -s "$cls"
check "it reports the held-out accuracy" grep -q "test accuracy 1.0000 (6 of 6)" <<<"$out"
check "it says what the split is" grep -q "every 4-th image kept" <<<"$out"
out=$("$DDPM" classifier test --weights "$cls" --data "$tmp/data" --test-every 4 2>&1)
check "classifier test repeats the stored accuracy" grep -q "stored test accuracy 1.0000" <<<"$out"
check "classifier test measures it again" grep -q "test accuracy 1.0000 (6 of 6)" <<<"$out"

out=$("$DDPM" eval --samples "$tmp/data" --ref "$tmp/data" --features "$cls" 2>&1); rc=$?
check "eval of a folder exits 0" test $rc -eq 0
check "eval prints FD beside its noise floor" grep -q "^FD (features)" <<<"$out"
check "eval halves N for two disjoint real sets" grep -q "N = 12" <<<"$out"
check "eval prints precision and recall" grep -q "^recall (k=3)" <<<"$out"
check "class accuracy from the class folders" grep -q "^class accuracy *1.0000" <<<"$out"
mkdir -p "$tmp/flat"; cp "$tmp/data/top/"t[1-6].pgm "$tmp/flat/"
out=$("$DDPM" eval --samples "$tmp/flat" --ref "$tmp/data" --features "$cls" 2>&1); rc=$?
check "eval of a flat folder (no classes) exits 0" test $rc -eq 0
check "a flat folder has no class accuracy" bash -c "! grep -q '^class accuracy' <<<'$out'"
out=$("$DDPM" eval --samples "$tmp/gray.npy" --ref "$tmp/data" --features "$cls" --per-class 4 2>&1); rc=$?
check "eval of an .npy with --per-class exits 0" test $rc -eq 0
check "eval of .npy prints KID" grep -q "^KID" <<<"$out"
check "eval of .npy prints the class accuracy" grep -q "^class accuracy" <<<"$out"

# ddpm sample ... && ddpm eval ...: a tiny class-conditional U-Net of the same folder
tiny=(--model unet --base-channels 8 --channel-mult 1,2 --num-res-blocks 1 --groups 4 --heads 2
      --dim-head 8 --timesteps 20 --batch-size 8 --quiet)
expect_ok "train a tiny image model" "$DDPM" train --data "$tmp/data" --labels-from-dirs --image-size 12 --channels 1 \
  "${tiny[@]}" --steps 2 --sample-every 0 --out "$tmp/run"
expect_ok "sample it per class to .npy" "$DDPM" sample --ckpt "$tmp/run/ckpt.safetensors" --per-class 6 --sampler ddim \
  --steps 3 --out "$tmp/s.npy" --quiet
out=$("$DDPM" eval --samples "$tmp/s.npy" --ref "$tmp/data" --features "$cls" --per-class 6 2>&1); rc=$?
check "eval of ddpm sample's .npy exits 0" test $rc -eq 0
check "it measures the 12 samples" grep -q "^N  *12 " <<<"$out"
expect_fail 2 "eval --ckpt of an image model points to sample + eval" "is an image model: sample it" \
  "$DDPM" eval --ckpt "$tmp/run/ckpt.safetensors"

# bad input
npy8() { { printf '\x93NUMPY\x01\x00\x76\x00'; printf "%-117s\n" "{'descr': '|u1', 'fortran_order': False, 'shape': (8, 1, 8, 8), }"; head -c 512 /dev/zero; } > "$1"; }
npy8 "$tmp/small.npy"
expect_fail 2 "npy of another shape" "small.npy: images are 1x8x8, the classifier $cls takes 1x12x12" \
  "$DDPM" eval --samples "$tmp/small.npy" --ref "$tmp/data" --features "$cls"
expect_fail 2 "a reference of another shape" "small.npy: reference images are 1x8x8, the classifier $cls takes 1x12x12" \
  "$DDPM" eval --samples "$tmp/gray.npy" --ref "$tmp/small.npy" --features "$cls"
expect_fail 2 "not a classifier file" "simple_unet.safetensors: not a ddpm classifier file" \
  "$DDPM" eval --samples "$tmp/gray.npy" --ref "$tmp/data" --features "$FIXTURES/simple_unet.safetensors"
expect_fail 2 "one sample" "one.npy: 1 image; the metrics need at least 4" \
  "$DDPM" eval --samples "$tmp/one.npy" --ref "$tmp/data" --features "$cls"
expect_fail 2 "a folder without images" "empty: no images found" \
  "$DDPM" eval --samples "$tmp/empty" --ref "$tmp/data" --features "$cls"
expect_fail 2 "a reference folder without images" "empty: no images found" \
  "$DDPM" eval --samples "$tmp/gray.npy" --ref "$tmp/empty" --features "$cls"
expect_fail 2 "labels of another count" "expected 8 class labels" \
  "$DDPM" eval --samples "$tmp/gray.npy" --ref "$tmp/data" --features "$cls" --labels "$tmp/one.npy"
expect_fail 2 "more classes than the classifier" "--per-class 1: 8 samples are 8 classes, the classifier has 2" \
  "$DDPM" eval --samples "$tmp/gray.npy" --ref "$tmp/data" --features "$cls" --per-class 1
expect_fail 2 "classifier train without labels" "gray.npy: the images have no class labels" \
  "$DDPM" classifier train --data "$tmp/gray.npy" --out "$tmp/x.safetensors"
expect_fail 2 "classifier train on nothing" "nope: not an image source" \
  "$DDPM" classifier train --data "$tmp/nope" --out "$tmp/x.safetensors"
expect_fail 2 "classifier train without --out" "--out FILE.safetensors is required" \
  "$DDPM" classifier train --data "$tmp/data"
expect_fail 2 "a bad channel list" "--conv-channels '4,x'" \
  "$DDPM" classifier train --data "$tmp/data" --conv-channels 4,x --out "$tmp/x.safetensors"
expect_fail 2 "unknown subcommand" "unknown subcommand 'fit'" "$DDPM" classifier fit
check "nothing written after the failures" test ! -e "$tmp/x.safetensors"
expect_fail 2 "classifier test of a diffusion fixture" "not a ddpm classifier file" \
  "$DDPM" classifier test --weights "$FIXTURES/simple_unet.safetensors"

if [ -d /usr/share/datasets/fashion-mnist ]; then
  # 28x28 gray samples: the shipped classifier and the Fashion-MNIST test files by default
  { printf '\x93NUMPY\x01\x00\x76\x00'; printf "%-117s\n" "{'descr': '|u1', 'fortran_order': False, 'shape': (20, 1, 28, 28), }"
    head -c 15680 /dev/zero; } > "$tmp/fm.npy"
  out=$("$DDPM" eval --samples "$tmp/fm.npy" --per-class 2 2>&1); rc=$?
  check "eval with the shipped classifier exits 0" test $rc -eq 0
  check "it names the shipped classifier" grep -q "fmnist-classifier.safetensors" <<<"$out"
  check "the reference is the Fashion-MNIST test files" grep -q "Fashion-MNIST test (t10k) files" <<<"$out"
fi
finish

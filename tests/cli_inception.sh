#!/usr/bin/env bash
# `ddpm eval --inception`: FID, KID and precision/recall in the features of the Inception-v3 of
# pytorch-fid, here the test fixture's narrow twin (tests/fixtures/inception/w16.pth, every width
# / 16, random weights: the same code path as pytorch-fid's file), on folders and an .npy of small
# images the test writes itself; every bad input gives a one-line error and exit code 2.
set -u
DDPM=${1:?usage: cli_inception.sh path/to/ddpm}
. "$(dirname "$0")/cli_lib.sh"
FIXTURES="$(cd "$(dirname "$0")" && pwd)/fixtures"
INC="$FIXTURES/inception/w16.pth"
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
lacks() { ! grep -q "$1" <<<"$2"; } # lacks PATTERN TEXT

# pgm FILE I B: a 12 x 12 gray image with a pattern that differs per image I, brightness B
pgm() {
  local f=$1 i=$2 b=$3
  { printf 'P5\n12 12\n255\n'
    for ((y = 0; y < 12; y++)); do for ((x = 0; x < 12; x++)); do
      printf "\\x$(printf %02x $(( b + (i * 7 + x * x * 3 + y * 5 + x * y * i) % 60 )))"
    done; done; } > "$f"
}
mkdir -p "$tmp/fake/a" "$tmp/fake/b" "$tmp/real"
for i in $(seq 1 3); do pgm "$tmp/fake/a/f$i.pgm" "$i" 150; pgm "$tmp/fake/b/f$i.pgm" "$((i + 9))" 150; done
for i in $(seq 1 12); do pgm "$tmp/real/r$i.pgm" "$((i + 20))" 40; done
# npy [6, 1, 12, 12] uint8: an .npy header padded to 128 bytes, then the pixels
{ printf '\x93NUMPY\x01\x00\x76\x00'; printf "%-117s\n" "{'descr': '|u1', 'fortran_order': False, 'shape': (6, 1, 12, 12), }"
  for ((i = 0; i < 6 * 144; i++)); do printf "\\x$(printf %02x $(( (i * 37 + (i / 144) * 11) % 200 + 30 )))"; done; } > "$tmp/s.npy"

out=$("$DDPM" eval --samples "$tmp/fake" --ref "$tmp/real" --inception "$INC" --image-size 12 2>&1); rc=$?
check "eval --inception of two folders exits 0" test $rc -eq 0
check "it says the features are Inception's" grep -q "^features .*w16.pth: Inception-v3 of pytorch-fid (.* conv weights), 128-d pool features" <<<"$out"
check "it prints the FID beside its noise floor" grep -Eq "^FID \(Inception\) +[0-9.]+ +[0-9.]+$" <<<"$out"
check "it prints KID" grep -q '^KID' <<<"$out"
check "it prints precision and recall" grep -q '^recall (k=3)' <<<"$out"
check "folders are read in RGB at --image-size" grep -q "fake: 6 images read at 12x12, 3 channels" <<<"$out"
check "class folders give no class accuracy without a classifier" lacks '^class accuracy' "$out"
# dark samples against bright real images are farther apart than two real sets
fid=$(awk '/^FID/ {print $3, $4}' <<<"$out")
check "the samples' FID exceeds the real images' floor" awk -v a="${fid% *}" -v b="${fid#* }" 'BEGIN { exit !(a > b && b >= 0) }'
out=$("$DDPM" eval --samples "$tmp/s.npy" --ref "$tmp/real" --inception "$INC" 2>&1); rc=$?
check "eval --inception of an .npy against a folder exits 0" test $rc -eq 0
check "the folder is read at the .npy's size" grep -q "real: 12 images read at 12x12, 3 channels" <<<"$out"

# bad input
expect_fail 2 "--inception with --features" "give --features or --inception, not both" \
  "$DDPM" eval --samples "$tmp/s.npy" --ref "$tmp/real" --inception "$INC" --features "$FIXTURES/classifier.safetensors"
expect_fail 2 "--inception with --per-class" "need a classifier's classes" \
  "$DDPM" eval --samples "$tmp/s.npy" --ref "$tmp/real" --inception "$INC" --per-class 3
expect_fail 2 "two folders without --image-size" "--image-size S is needed" \
  "$DDPM" eval --samples "$tmp/fake" --ref "$tmp/real" --inception "$INC"
expect_fail 2 "--image-size without --inception" "--image-size is for --inception" \
  "$DDPM" eval --samples "$tmp/fake" --ref "$tmp/real" --image-size 12
expect_fail 2 "12x12 samples need --ref" "--ref is required with --inception" \
  "$DDPM" eval --samples "$tmp/s.npy" --inception "$INC"
echo "not weights" > "$tmp/notes.txt"
expect_fail 2 "a file that is not weights" "notes.txt: not a weights file" \
  "$DDPM" eval --samples "$tmp/s.npy" --ref "$tmp/real" --inception "$tmp/notes.txt"
expect_fail 2 "another network's weights" "context_unet.pth: no tensor 'Conv2d_1a_3x3.conv.weight'" \
  "$DDPM" eval --samples "$tmp/s.npy" --ref "$tmp/real" --inception "$FIXTURES/torch/context_unet.pth"
head -c 3000 "$INC" > "$tmp/cut.pth"
expect_fail 2 "a truncated .pth" "cut.pth" \
  "$DDPM" eval --samples "$tmp/s.npy" --ref "$tmp/real" --inception "$tmp/cut.pth"
expect_fail 2 "a missing file" "absent.pth" \
  "$DDPM" eval --samples "$tmp/s.npy" --ref "$tmp/real" --inception "$tmp/absent.pth"
finish

#!/usr/bin/env bash
# A full disk during a training run (issue 11): on a tmpfs with room for one checkpoint but not
# for the temporary file of the next, the save fails part way with ENOSPC. The run must stop with
# a one-line error naming the file and the reason and exit 1 (a failure at run time, not bad
# input), leave the previous checkpoint intact (resuming it gives the uninterrupted run's
# checkpoint bit for bit) and leave no temporary file. Needs mount -t tmpfs (root): exit 77
# (skipped) where it is not permitted. (The library's side: tests/test_mlp.c, with a write
# failure injected at several offsets.)
set -u
DDPM=${1:?usage: cli_diskfull.sh path/to/ddpm}
. "$(dirname "$0")/cli_lib.sh"
tmp=$(mktemp -d)
mnt="$tmp/mnt"; mkdir -p "$mnt"
cleanup() { umount "$mnt" 2>/dev/null; rm -rf "$tmp"; }
trap cleanup EXIT
small=(--n-points 600 --hidden 32 --batch-size 64 --quiet)

expect_ok "uninterrupted run" "$DDPM" train "${small[@]}" --steps 200 --save-every 100 --out "$tmp/ref"
size=$(stat -c %s "$tmp/ref/ckpt.safetensors")
# room for the checkpoint, the loss log and half of a second checkpoint, in 4 KB pages
kb=$(( (size + size / 2) / 1024 / 4 * 4 + 16 ))
if ! mount -t tmpfs -o size=${kb}k tmpfs "$mnt" 2>/dev/null; then
  echo "skipped: mount -t tmpfs is not permitted here"
  exit 77
fi

err=$("$DDPM" train "${small[@]}" --steps 200 --save-every 100 --out "$mnt/run" 2>&1 >/dev/null); rc=$?
check "disk full: exit 1 (got $rc)" test $rc -eq 1
check "disk full: the error names the checkpoint and the reason ($err)" grep -q "ddpm train: $mnt/run/ckpt.safetensors.tmp.[0-9]*: write failed: No space left on device" <<<"$err"
check "disk full: one line" test "$(printf '%s\n' "$err" | grep -c .)" -eq 1
check "disk full: no temporary file left" bash -c "! ls -a '$mnt/run' | grep -q '\.tmp\.'"
check "disk full: the step-100 checkpoint is still there" test -s "$mnt/run/ckpt.safetensors"
# it is the exact state of step 100: resumed elsewhere it ends where the uninterrupted run did
mkdir -p "$tmp/res" && cp "$mnt/run/ckpt.safetensors" "$tmp/res/"
expect_ok "disk full: the kept checkpoint resumes" "$DDPM" train --resume "$tmp/res/ckpt.safetensors" --steps 200 --out "$tmp/res" --quiet
check "disk full: resumed to step 200 it equals the uninterrupted run" cmp -s "$tmp/res/ckpt.safetensors" "$tmp/ref/ckpt.safetensors"
finish

#!/usr/bin/env bash
# Faults around a training run (issue 11): ten kill -9 at random moments, then --resume, give the
# checkpoint of the run that never stopped and a loss log with every step once; temporary files
# of a killed save are removed on the next start; SIGTERM and SIGHUP save and exit 128 + the
# signal; an --out that cannot be written is refused before any training; a diverging run before
# its first checkpoint does not point at one. (A full disk: cli_diskfull.sh.)
set -u
DDPM=${1:?usage: cli_faults.sh path/to/ddpm}
. "$(dirname "$0")/cli_lib.sh"
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
small=(--n-points 600 --hidden 32 --batch-size 64 --quiet)
steps=40000

# the uninterrupted run
expect_ok "uninterrupted run" "$DDPM" train "${small[@]}" --steps $steps --save-every 1000 --out "$tmp/ref"

# ten kill -9, each at a random moment of a run that starts (or resumes) where the last left:
# 300..2799 logged rows past where the last one was killed (rows are flushed in blocks, so the
# moment also falls anywhere between two rows and between two checkpoints)
rows() { if [ -f "$tmp/k/loss.csv" ]; then wc -l < "$tmp/k/loss.csv"; else echo 0; fi; }
kills=0
for i in $(seq 10); do
  target=$(( $(rows) + 300 + RANDOM % 2500 ))
  if [ -s "$tmp/k/ckpt.safetensors" ]; then
    "$DDPM" train --resume "$tmp/k/ckpt.safetensors" --steps $steps --out "$tmp/k" --quiet 2>/dev/null &
  else
    "$DDPM" train "${small[@]}" --steps $steps --save-every 1000 --out "$tmp/k" 2>/dev/null &
  fi
  pid=$!
  for _ in $(seq 20000); do [ "$(rows)" -ge $target ] && break; kill -0 $pid 2>/dev/null || break; sleep 0.01; done
  kill -9 $pid 2>/dev/null && kills=$((kills + 1))
  wait $pid 2>/dev/null
done
check "ten kill -9 landed (got $kills)" test $kills -eq 10
if [ -s "$tmp/k/ckpt.safetensors" ]; then
  expect_ok "resume after ten kills" "$DDPM" train --resume "$tmp/k/ckpt.safetensors" --steps $steps --out "$tmp/k" --quiet
else
  expect_ok "no checkpoint after the kills: a fresh run" "$DDPM" train "${small[@]}" --steps $steps --save-every 1000 --out "$tmp/k"
fi
check "after ten kill -9 and --resume: the checkpoint equals the uninterrupted run's" cmp -s "$tmp/k/ckpt.safetensors" "$tmp/ref/ckpt.safetensors"
check "after ten kill -9 and --resume: loss.csv has steps 1..$steps once each, in order" awk -F, -v n=$steps 'NR == 1 { next } $1 != NR - 1 { exit 1 } END { exit NR - 1 != n }' "$tmp/k/loss.csv"
check "after ten kill -9 and --resume: loss.csv rows equal the uninterrupted run's steps" test "$(wc -l < "$tmp/k/loss.csv")" -eq $((steps + 1))
check "after ten kill -9 and --resume: no temporary file" bash -c "! ls -a '$tmp/k' | grep -q '\.tmp\.'"

# a temporary checkpoint of a dead process (a kill during a save) goes at the next start; one of
# a live process stays
dead=$(bash -c 'echo $$')
head -c 5000 "$tmp/ref/ckpt.safetensors" > "$tmp/k/ckpt.safetensors.tmp.$dead"
sleep 300 & live=$!
: > "$tmp/k/ckpt.safetensors.tmp.$live"
out=$("$DDPM" train --resume "$tmp/k/ckpt.safetensors" --steps $((steps + 10)) --out "$tmp/k" 2>&1 >/dev/null)
check "the next start says it removed a stale temporary file" grep -q "removed 1 temporary file of an interrupted save" <<<"$out"
check "the dead process's temporary file is gone" test ! -e "$tmp/k/ckpt.safetensors.tmp.$dead"
check "a live process's temporary file stays" test -e "$tmp/k/ckpt.safetensors.tmp.$live"
kill $live; wait $live 2>/dev/null

# SIGTERM and SIGHUP: a checkpoint, then exit 128 + the signal
for sig in TERM HUP INT; do
  "$DDPM" train "${small[@]}" --steps 100000000 --save-every 0 --out "$tmp/sig$sig" 2>"$tmp/sig$sig.err" &
  pid=$!
  for _ in $(seq 100); do [ -s "$tmp/sig$sig/loss.csv" ] && [ "$(wc -l < "$tmp/sig$sig/loss.csv")" -gt 20 ] && break; sleep 0.1; done
  kill -$sig $pid; wait $pid; rc=$?
  want=$((128 + $(kill -l $sig)))
  check "SIG$sig: exit $want (128 + the signal)" test $rc -eq $want
  check "SIG$sig: says where it saved" grep -q "interrupted at step .*: saved" "$tmp/sig$sig.err"
  check "SIG$sig: the checkpoint resumes" "$DDPM" train --resume "$tmp/sig$sig/ckpt.safetensors" --steps $(( $(tail -1 "$tmp/sig$sig/loss.csv" | cut -d, -f1) + 3 )) --out "$tmp/sig$sig" --quiet
done

# an --out that cannot be written is refused at start, before the data is loaded
: > "$tmp/afile"
expect_fail 2 "train --out naming a file" "--out $tmp/afile is a file, not a directory" "$DDPM" train "${small[@]}" --steps 1000000 --log-every 1 --out "$tmp/afile"
expect_fail 2 "train --out under a file" "--out $tmp/afile/run: cannot create it ($tmp/afile/run: cannot create directory: Not a directory)" "$DDPM" train "${small[@]}" --steps 1000000 --log-every 1 --out "$tmp/afile/run"
expect_fail 2 "sample --out in a missing directory" "--out $tmp/nodir/s.csv: its directory $tmp/nodir: No such file or directory" "$DDPM" sample --ckpt "$tmp/ref/ckpt.safetensors" -n 1000000 --out "$tmp/nodir/s.csv"
expect_fail 2 "sample --out naming a directory" "--out $tmp/ref is a directory, not a file" "$DDPM" sample --ckpt "$tmp/ref/ckpt.safetensors" -n 1000000 --out "$tmp/ref"
expect_fail 2 "sample --plot under a file" "--plot $tmp/afile/p.png: $tmp/afile is not a directory" "$DDPM" sample --ckpt "$tmp/ref/ckpt.safetensors" -n 1000000 --out "$tmp/s.csv" --plot "$tmp/afile/p.png"
check "refused sample wrote nothing" test ! -e "$tmp/s.csv"
# read-only directories (root ignores file modes: a read-only mount; skipped where mount fails)
mkdir -p "$tmp/ro"
if mount -t tmpfs -o ro,size=64k tmpfs "$tmp/ro" 2>/dev/null; then
  expect_fail 2 "train --out on a read-only file system" "--out $tmp/ro/run: cannot create it ($tmp/ro/run: cannot create directory: Read-only file system)" "$DDPM" train "${small[@]}" --steps 1000000 --out "$tmp/ro/run"
  expect_fail 2 "sample --out on a read-only file system" "cannot write in $tmp/ro: Read-only file system" "$DDPM" sample --ckpt "$tmp/ref/ckpt.safetensors" -n 1000000 --out "$tmp/ro/s.csv"
  umount "$tmp/ro"
else
  echo "skipped: read-only --out (mount -t tmpfs not permitted here)"
fi

# a run that diverges before its first checkpoint does not point at one
printf '1e30,1e30\n-1e30,2e30\n3e30,1\n' > "$tmp/huge.csv"
expect_fail 1 "diverging before the first checkpoint" "stopped before its first checkpoint (none written)" "$DDPM" train --data "$tmp/huge.csv" --steps 10 --batch-size 2 --out "$tmp/div" --quiet

# the memory estimate: a run that needs more than is available is refused before it starts,
# naming the estimate and the override (the machine's figure replaced by DDPM_MEMORY_AVAILABLE)
expect_fail 2 "train needing more memory than available" "more than the 0.00 GB available (DDPM_MEMORY_AVAILABLE); use a smaller --batch-size" env DDPM_MEMORY_AVAILABLE=1000 "$DDPM" train "${small[@]}" --steps 5 --out "$tmp/mem"
check "refused for memory: no checkpoint" test ! -e "$tmp/mem/ckpt.safetensors"
expect_ok "--allow-large-memory starts it anyway" env DDPM_MEMORY_AVAILABLE=1000 "$DDPM" train "${small[@]}" --steps 5 --out "$tmp/mem" --allow-large-memory
expect_fail 2 "sample needing more memory than available" "GB samples), more than the 0.00 GB available" env DDPM_MEMORY_AVAILABLE=1000 "$DDPM" sample --ckpt "$tmp/ref/ckpt.safetensors" -n 100000 --out "$tmp/m.csv"
out=$("$DDPM" train --n-points 600 --hidden 32 --batch-size 64 --steps 5 --out "$tmp/mem2" 2>&1)
check "train prints its memory estimate and its peak" bash -c "grep -q '^memory    about' <<<\"\$1\" && grep -q 'peak resident memory' <<<\"\$1\"" _ "$out"
finish

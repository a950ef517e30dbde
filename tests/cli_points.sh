#!/usr/bin/env bash
# The 2-D workflow through the command line: train, sample, eval, noise; exact resume; Ctrl-C;
# bad input (each a one-line error naming the file and the problem, exit code 2, never a crash).
set -u
DDPM=${1:?usage: cli_points.sh path/to/ddpm}
. "$(dirname "$0")/cli_lib.sh"
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
small=(--n-points 600 --hidden 32 --batch-size 64 --quiet)

# train -> sample -> eval
expect_ok "train" "$DDPM" train "${small[@]}" --steps 150 --save-every 50 --out "$tmp/run"
check "checkpoint written" test -s "$tmp/run/ckpt.safetensors"
check "loss log has a header and 150 rows" test "$(wc -l < "$tmp/run/loss.csv")" -eq 151
check "loss curve drawn" test -s "$tmp/run/loss.png"
check "no temporary files left" bash -c "! ls '$tmp/run' | grep -q tmp"
expect_ok "sample csv" "$DDPM" sample --ckpt "$tmp/run/ckpt.safetensors" -n 300 --out "$tmp/s.csv" --trajectory "$tmp/traj" --plot "$tmp/s.png" --quiet
check "300 samples and a header" test "$(wc -l < "$tmp/s.csv")" -eq 301
check "trajectory plot" test -s "$tmp/traj/reverse.png"
check "10 trajectory snapshots" test "$(ls "$tmp/traj"/x_*.csv | wc -l)" -eq 10
check "final snapshot equals the samples" cmp -s "$tmp/traj/x_000.csv" "$tmp/s.csv"
expect_ok "sample npy with ddim" "$DDPM" sample --ckpt "$tmp/run/ckpt.safetensors" -n 50 --sampler ddim --steps 10 --out "$tmp/s.npy" --quiet
check "npy magic" bash -c "head -c 6 '$tmp/s.npy' | grep -q NUMPY"
expect_ok "sample with dpmpp-2m" "$DDPM" sample --ckpt "$tmp/run/ckpt.safetensors" -n 50 --sampler dpmpp-2m --steps 10 --spacing karras --out "$tmp/dpm.csv" --quiet
check "dpmpp-2m: 50 samples and a header" test "$(wc -l < "$tmp/dpm.csv")" -eq 51
for sp in leading trailing linspace karras logsnr; do
  expect_ok "sample with unipc ($sp)" "$DDPM" sample --ckpt "$tmp/run/ckpt.safetensors" -n 50 --sampler unipc --steps 8 --spacing "$sp" --out "$tmp/unipc-$sp.csv" --quiet
  check "unipc ($sp): 50 samples and a header" test "$(wc -l < "$tmp/unipc-$sp.csv")" -eq 51
done
expect_ok "unipc bh1 order 3 to sigma-min" "$DDPM" sample --ckpt "$tmp/run/ckpt.safetensors" -n 50 --sampler unipc --solver-type bh1 --solver-order 3 --final-sigma sigma-min --no-lower-order-final --steps 8 --out "$tmp/unipc-bh1.csv" --quiet
check "unipc: bh1 order 3 differs from bh2 order 2" bash -c "! cmp -s '$tmp/unipc-bh1.csv' '$tmp/unipc-leading.csv'"
out=$("$DDPM" sample --ckpt "$tmp/run/ckpt.safetensors" -n 5 --sampler unipc --steps 4 --spacing trailing --verbose --out "$tmp/u.csv" 2>&1)
check "--verbose: unipc makes one network evaluation a step" grep -q "unipc: 4 steps, 4 network evaluations" <<<"$out"
out=$("$DDPM" sample --ckpt "$tmp/run/ckpt.safetensors" -n 5 --sampler heun --steps 5 --verbose --out "$tmp/heun.csv" 2>&1)
check "--verbose prints the timesteps" grep -q "^timesteps: 80 60 40 20 0$" <<<"$out"
check "--verbose counts Heun's network evaluations" grep -q "heun: 5 steps, 9 network evaluations" <<<"$out"
"$DDPM" sample --ckpt "$tmp/run/ckpt.safetensors" -n 20 --seed 4 --out "$tmp/a.csv" --quiet
"$DDPM" sample --ckpt "$tmp/run/ckpt.safetensors" -n 20 --seed 4 --out "$tmp/b.csv" --quiet
check "same seed, same samples" cmp -s "$tmp/a.csv" "$tmp/b.csv"
"$DDPM" sample --ckpt "$tmp/run/ckpt.safetensors" -n 20 --seed 4 --threads 1 --out "$tmp/c.csv" --quiet
check "--threads 1 gives the same samples" cmp -s "$tmp/a.csv" "$tmp/c.csv"
out=$("$DDPM" eval --ckpt "$tmp/run/ckpt.safetensors" -n 300 --projections 32 2>&1)
check "eval prints the noise floor" grep -q "data vs data (floor)" <<<"$out"
expect_ok "noise" "$DDPM" noise --data moons --n-points 300 --out "$tmp/fwd.png"
check "forward plot" test -s "$tmp/fwd.png"

# exact resume: 100 steps + resume to 150 gives the same checkpoint as 150 straight
expect_ok "train 100" "$DDPM" train "${small[@]}" --steps 100 --save-every 0 --out "$tmp/half"
expect_ok "resume to 150" "$DDPM" train --resume "$tmp/half/ckpt.safetensors" --steps 150 --out "$tmp/half" --quiet
check "resumed run is bitwise the straight run" cmp -s "$tmp/half/ckpt.safetensors" "$tmp/run/ckpt.safetensors"
check "resumed loss log continues" test "$(wc -l < "$tmp/half/loss.csv")" -eq 151

# Ctrl-C saves a checkpoint and exits 130; the run resumes from it
"$DDPM" train "${small[@]}" --steps 100000000 --save-every 0 --out "$tmp/int" 2>"$tmp/int.err" &
pid=$!
for _ in $(seq 100); do [ -s "$tmp/int/loss.csv" ] && [ "$(wc -l < "$tmp/int/loss.csv")" -gt 20 ] && break; sleep 0.1; done
kill -INT $pid; wait $pid; rc=$?
check "Ctrl-C exits 130" test $rc -eq 130
check "Ctrl-C says where it saved" grep -q "interrupted at step" "$tmp/int.err"
check "Ctrl-C checkpoint loads" "$DDPM" sample --ckpt "$tmp/int/ckpt.safetensors" -n 5 --out "$tmp/i.csv" --quiet

# a directory named like a built-in data set does not shadow it
mkdir -p "$tmp/shadow/moons" && (cd "$tmp/shadow" && "$DDPM" train --data moons --n-points 200 --steps 5 --save-every 0 --out moons --quiet) >/dev/null 2>&1
check "--data moons beside a moons directory trains on the points" "$DDPM" sample --ckpt "$tmp/shadow/moons/ckpt.safetensors" -n 5 --out "$tmp/shadow/s.csv" --quiet
# kill -9 mid-run, then --resume: the loss log holds every step once (rows after the last
# checkpoint and a torn row are cut; the log is on disk before each checkpoint)
"$DDPM" train "${small[@]}" --steps 100000000 --save-every 25 --out "$tmp/k9" 2>/dev/null &
pid=$!
for _ in $(seq 200); do [ -s "$tmp/k9/ckpt.safetensors" ] && [ "$(wc -l < "$tmp/k9/loss.csv")" -gt 60 ] && break; sleep 0.05; done
kill -9 $pid; wait $pid 2>/dev/null
target=$(( $(wc -l < "$tmp/k9/loss.csv") + 100 ))
expect_ok "resume after kill -9" "$DDPM" train --resume "$tmp/k9/ckpt.safetensors" --steps "$target" --out "$tmp/k9" --quiet
check "loss log after kill -9 + resume: steps 1..$target once each, in order" awk -F, -v n="$target" 'NR == 1 { next } $1 != NR - 1 { exit 1 } END { exit NR - 1 != n }' "$tmp/k9/loss.csv"
# SIGTERM (a scheduler's stop) saves and stops like Ctrl-C
"$DDPM" train "${small[@]}" --steps 100000000 --save-every 0 --out "$tmp/term" 2>"$tmp/term.err" &
pid=$!
for _ in $(seq 100); do [ -s "$tmp/term/loss.csv" ] && [ "$(wc -l < "$tmp/term/loss.csv")" -gt 20 ] && break; sleep 0.1; done
kill -TERM $pid; wait $pid; rc=$?
check "SIGTERM exits 143 (128 + 15) after saving" test $rc -eq 143 -a -s "$tmp/term/ckpt.safetensors"
# bad input
expect_fail 2 "zero threads" "--threads must be in 1..4096 (got '0')" "$DDPM" train --threads 0 --steps 1 --out "$tmp/x"
# counts that would overflow int arithmetic or ask for absurd memory are refused by range
expect_fail 2 "-n beyond the sample limit" "-n must be in 1..1000000 (got '2147483647')" "$DDPM" sample --ckpt "$tmp/run/ckpt.safetensors" -n 2147483647 --out "$tmp/x.csv"
expect_fail 2 "negative grid size" "--sample-n must be in 1..1000 (got '-1')" "$DDPM" train --sample-n -1 --steps 1 --out "$tmp/x"
expect_fail 2 "huge batch" "--batch-size must be in 1..65536" "$DDPM" train --batch-size 2147483647 --steps 1 --out "$tmp/x"
# negative values where they make no sense (issue 11, finding 12: --adam-eps -1 trained to loss 6.9)
for f in adam-eps weight-decay min-lr grad-clip warmup min-snr-gamma; do
  expect_fail 2 "--$f -1 refused" "--$f must be in" "$DDPM" train --$f -1 --steps 1 --out "$tmp/x"
done
expect_fail 2 "float flag beyond float" "--grad-clip expects a number, got '1e300'" "$DDPM" train --grad-clip 1e300 --steps 1 --out "$tmp/x"
cp "$tmp/run/ckpt.safetensors" "$tmp/good.st"
expect_fail 2 "missing checkpoint" "nope.safetensors: cannot open" "$DDPM" sample --ckpt "$tmp/nope.safetensors" --out "$tmp/x.csv"
head -c 100 "$tmp/good.st" > "$tmp/trunc.st"
expect_fail 2 "truncated checkpoint" "trunc.st" "$DDPM" sample --ckpt "$tmp/trunc.st" --out "$tmp/x.csv"
: > "$tmp/empty.st"
expect_fail 2 "empty checkpoint" "too short" "$DDPM" sample --ckpt "$tmp/empty.st" --out "$tmp/x.csv"
cp "$tmp/good.st" "$tmp/hdr.st"; printf 'X' | dd of="$tmp/hdr.st" bs=1 seek=20 conv=notrunc 2>/dev/null
expect_fail 2 "corrupted header" "hdr.st" "$DDPM" sample --ckpt "$tmp/hdr.st" --out "$tmp/x.csv"
size=$(stat -c %s "$tmp/good.st")
cp "$tmp/good.st" "$tmp/data.st"; printf '\x55' | dd of="$tmp/data.st" bs=1 seek=$((size - 100)) conv=notrunc 2>/dev/null
expect_fail 2 "corrupted data" "checksum mismatch" "$DDPM" sample --ckpt "$tmp/data.st" --out "$tmp/x.csv"
printf "\x08\0\0\0\0\0\0\0{}      " > "$tmp/plain.st"
expect_fail 2 "resume from a non-checkpoint" "not a ddpm checkpoint" "$DDPM" train --resume "$tmp/plain.st"
printf 'x,y\n0.1,0.2\n0.3,abc\n' > "$tmp/bad.csv"
expect_fail 2 "non-numeric CSV" "bad.csv:3: column 2: 'abc' is not a number" "$DDPM" train --data "$tmp/bad.csv" --out "$tmp/r2"
printf '0.1,0.2\n0.3,0.4,0.5\n' > "$tmp/rag.csv"
expect_fail 2 "ragged CSV" "rag.csv:2: 3 columns, expected 2" "$DDPM" train --data "$tmp/rag.csv" --out "$tmp/r2"
: > "$tmp/empty.csv"
expect_fail 2 "empty CSV" "empty.csv" "$DDPM" train --data "$tmp/empty.csv" --out "$tmp/r2"
expect_fail 2 "missing CSV" "missing.csv" "$DDPM" train --data "$tmp/missing.csv" --out "$tmp/r2"
expect_fail 2 "unknown data set" "unknown" "$DDPM" train --data spirals --out "$tmp/r2"
expect_fail 2 "sample without --out" "--out" "$DDPM" sample --ckpt "$tmp/good.st"
expect_fail 2 "ddim steps > T" "--steps must be in 1..100" "$DDPM" sample --ckpt "$tmp/good.st" --sampler ddim --steps 101 --out "$tmp/x.csv"
expect_fail 2 "bad sampler" "--sampler: unknown sampler 'pndm'" "$DDPM" sample --ckpt "$tmp/good.st" --sampler pndm --out "$tmp/x.csv"
expect_fail 2 "unipc: bad solver type" "--solver-type: unknown UniPC variant 'midpoint'" "$DDPM" sample --ckpt "$tmp/good.st" --sampler unipc --solver-type midpoint --out "$tmp/x.csv"
expect_fail 2 "unipc: order 4" "--solver-order" "$DDPM" sample --ckpt "$tmp/good.st" --sampler unipc --solver-order 4 --out "$tmp/x.csv"
expect_fail 2 "--solver-order without unipc" "--solver-order is for --sampler unipc" "$DDPM" sample --ckpt "$tmp/good.st" --sampler dpmpp-2m --solver-order 3 --out "$tmp/x.csv"
expect_fail 2 "bad spacing" "--spacing: unknown timestep spacing 'karas'" "$DDPM" sample --ckpt "$tmp/good.st" --sampler euler --spacing karas --out "$tmp/x.csv"
expect_fail 2 "bad solver type" "--solver-type: unknown solver type" "$DDPM" sample --ckpt "$tmp/good.st" --sampler dpmpp-2m --solver-type rk4 --out "$tmp/x.csv"
expect_fail 2 "euler steps > T" "--steps must be in 1..100" "$DDPM" sample --ckpt "$tmp/good.st" --sampler euler --steps 101 --out "$tmp/x.csv"
expect_fail 2 "bad threshold ratio" "--threshold-ratio must be in (0, 1]" "$DDPM" sample --ckpt "$tmp/good.st" --sampler heun --thresholding --threshold-ratio 0 --out "$tmp/x.csv"
expect_fail 2 "bad output type" "--out must end in .csv or .npy" "$DDPM" sample --ckpt "$tmp/good.st" --out "$tmp/x.txt"
# a diverging run stops with an error and writes no checkpoint
printf '1e30,1e30\n-1e30,2e30\n3e30,1\n' > "$tmp/huge.csv"
expect_fail 1 "diverging loss" "diverged" "$DDPM" train --data "$tmp/huge.csv" --steps 10 --batch-size 2 --out "$tmp/div" --quiet
check "no checkpoint from a diverged run" test ! -e "$tmp/div/ckpt.safetensors"
finish

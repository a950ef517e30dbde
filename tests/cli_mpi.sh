#!/usr/bin/env bash
# Data-parallel training and sampling over MPI (mpirun, several processes on this machine): the
# checkpoint of N processes x T threads is the bytes of 1 process x 1 thread for the same global
# batch and micro-batches; a run resumed with another process count continues exactly; sampling
# over 2 processes writes the files of 1; every network (batch norm included); a killed rank ends the job with a clear message and an
# intact checkpoint; mismatched ranks are refused. Skipped (exit 77) on a build without MPI.
set -u
DDPM=${1:?usage: cli_mpi.sh path/to/ddpm}
. "$(dirname "$0")/cli_lib.sh"
if ! "$DDPM" --version | grep -q "MPI"; then echo "skipped: this ddpm was built without MPI"; exit 77; fi
if ! command -v mpirun >/dev/null; then echo "skipped: no mpirun"; exit 77; fi
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
# root in CI; 2 cores: more ranks than cores; no pinning (each rank's OpenMP threads float)
# Under AddressSanitizer, LeakSanitizer would report OpenMPI's own allocations (kept until exit by
# its components) in every rank: leak checking is off for the ranks only; the single-process runs
# here and in the other tests keep it.
run() {
  local np=$1; shift
  ASAN_OPTIONS="${ASAN_OPTIONS:-}:detect_leaks=0" \
    mpirun --allow-run-as-root --oversubscribe --bind-to none -np "$np" "$@"
}
same() { cmp -s "$1" "$2"; }

mlp=(--data s-curve --n-points 2000 --steps 40 --batch-size 64 --microbatch 16 --save-every 0 --quiet)
OMP_NUM_THREADS=1 "$DDPM" train "${mlp[@]}" --out "$tmp/m1" >/dev/null 2>&1
OMP_NUM_THREADS=2 "$DDPM" train "${mlp[@]}" --out "$tmp/m1t2" >/dev/null 2>&1
expect_ok "MLP on 2 processes" run 2 -x OMP_NUM_THREADS=1 "$DDPM" train "${mlp[@]}" --out "$tmp/m2"
check "MLP: 1 thread and 2 threads give the same checkpoint" same "$tmp/m1/ckpt.safetensors" "$tmp/m1t2/ckpt.safetensors"
check "MLP: 2 processes give the checkpoint of 1" same "$tmp/m1/ckpt.safetensors" "$tmp/m2/ckpt.safetensors"
check "MLP: 2 processes give the loss log of 1" same "$tmp/m1/loss.csv" "$tmp/m2/loss.csv"

unet=(--data fashion-mnist --max-items 120 --model unet --base-channels 8 --channel-mult 1,2 --num-res-blocks 1
      --groups 4 --heads 2 --dim-head 8 --timesteps 40 --batch-size 12 --microbatch 4 --sample-every 0 --quiet)
OMP_NUM_THREADS=1 "$DDPM" train "${unet[@]}" --steps 12 --out "$tmp/u1" >/dev/null 2>&1
OMP_NUM_THREADS=2 "$DDPM" train "${unet[@]}" --steps 12 --out "$tmp/u1t2" >/dev/null 2>&1
expect_ok "U-Net on 2 processes" run 2 -x OMP_NUM_THREADS=1 "$DDPM" train "${unet[@]}" --steps 12 --out "$tmp/u2"
expect_ok "U-Net on 3 processes" run 3 -x OMP_NUM_THREADS=1 "$DDPM" train "${unet[@]}" --steps 12 --out "$tmp/u3"
check "U-Net: checkpoint written" test -s "$tmp/u1/ckpt.safetensors"
check "U-Net: 1 thread and 2 threads give the same checkpoint" same "$tmp/u1/ckpt.safetensors" "$tmp/u1t2/ckpt.safetensors"
check "U-Net: 2 processes give the checkpoint of 1" same "$tmp/u1/ckpt.safetensors" "$tmp/u2/ckpt.safetensors"
check "U-Net: 3 processes (3 micro-batches) give the checkpoint of 1" same "$tmp/u1/ckpt.safetensors" "$tmp/u3/ckpt.safetensors"

# batch-norm networks: each micro-batch normalised by its own statistics, running statistics
# averaged over the micro-batches: the same for any split
cu=(--data fashion-mnist --max-items 60 --model context-unet --n-feat 8 --batch-size 12 --microbatch 4 --steps 4
    --sample-every 0 --quiet)
OMP_NUM_THREADS=1 "$DDPM" train "${cu[@]}" --out "$tmp/c1" >/dev/null 2>&1
OMP_NUM_THREADS=2 "$DDPM" train "${cu[@]}" --out "$tmp/c1t2" >/dev/null 2>&1
expect_ok "context-unet on 2 processes" run 2 -x OMP_NUM_THREADS=1 "$DDPM" train "${cu[@]}" --out "$tmp/c2"
check "context-unet: checkpoint written" test -s "$tmp/c1/ckpt.safetensors"
check "context-unet: 1 thread and 2 threads give the same checkpoint" same "$tmp/c1/ckpt.safetensors" "$tmp/c1t2/ckpt.safetensors"
check "context-unet: 2 processes give the checkpoint of 1" same "$tmp/c1/ckpt.safetensors" "$tmp/c2/ckpt.safetensors"
mkdir -p "$tmp/img"
for i in 1 2 3 4 5 6 7 8; do { printf 'P5\n16 16\n255\n'; head -c 256 /dev/urandom; } > "$tmp/img/$i.pgm"; done
su=(--data "$tmp/img" --channels 1 --image-size 16 --model simple-unet --unet-channels 8,16,16,16,16 --time-emb-dim 8
    --batch-size 6 --microbatch 2 --steps 3 --sample-every 0 --quiet)
OMP_NUM_THREADS=2 "$DDPM" train "${su[@]}" --out "$tmp/q1" >/dev/null 2>&1
expect_ok "simple-unet on 3 processes" run 3 -x OMP_NUM_THREADS=1 "$DDPM" train "${su[@]}" --out "$tmp/q3"
check "simple-unet: 3 processes give the checkpoint of 1 (x 2 threads)" same "$tmp/q1/ckpt.safetensors" "$tmp/q3/ckpt.safetensors"

# resume across process counts: 2 -> 1 and 1 -> 2 (with 2 threads) equal the run that never stopped
run 2 -x OMP_NUM_THREADS=1 "$DDPM" train "${unet[@]}" --steps 6 --out "$tmp/r21" >/dev/null 2>&1
OMP_NUM_THREADS=1 "$DDPM" train --resume "$tmp/r21/ckpt.safetensors" --steps 12 --out "$tmp/r21" --quiet >/dev/null 2>&1
check "started on 2 processes, resumed on 1: the uninterrupted checkpoint" same "$tmp/u1/ckpt.safetensors" "$tmp/r21/ckpt.safetensors"
check "started on 2 processes, resumed on 1: the uninterrupted loss log" same "$tmp/u1/loss.csv" "$tmp/r21/loss.csv"
OMP_NUM_THREADS=1 "$DDPM" train "${unet[@]}" --steps 6 --out "$tmp/r12" >/dev/null 2>&1
run 2 -x OMP_NUM_THREADS=2 "$DDPM" train --resume "$tmp/r12/ckpt.safetensors" --steps 12 --out "$tmp/r12" --quiet >/dev/null 2>&1
check "started on 1 process, resumed on 2 (x 2 threads): the uninterrupted checkpoint" same "$tmp/u1/ckpt.safetensors" "$tmp/r12/ckpt.safetensors"

# --shard-data: each rank loads only its part of the images; the run is then its own (not the
# 1-process run) but still independent of the thread count, and resumes exactly on as many ranks
su_loud=(); for a in "${su[@]}"; do [ "$a" = --quiet ] || su_loud+=("$a"); done
run 2 -x OMP_NUM_THREADS=1 "$DDPM" train "${su_loud[@]}" --shard-data --steps 4 --log-every 1 --out "$tmp/sh" >"$tmp/sh.log" 2>&1
check "--shard-data: says each process holds its part" grep -q "each of the 2 processes holds its part of the 8 items (--shard-data; this one 4)" "$tmp/sh.log"
run 2 -x OMP_NUM_THREADS=2 "$DDPM" train "${su[@]}" --shard-data --steps 4 --out "$tmp/sht2" >/dev/null 2>&1
check "--shard-data: 2 threads per rank give the checkpoint of 1" same "$tmp/sh/ckpt.safetensors" "$tmp/sht2/ckpt.safetensors"
run 2 -x OMP_NUM_THREADS=1 "$DDPM" train "${su[@]}" --shard-data --steps 2 --out "$tmp/shr" >/dev/null 2>&1
run 2 -x OMP_NUM_THREADS=1 "$DDPM" train --resume "$tmp/shr/ckpt.safetensors" --steps 4 --out "$tmp/shr" --quiet >/dev/null 2>&1
check "--shard-data: resumed on 2 processes, the uninterrupted checkpoint" same "$tmp/sh/ckpt.safetensors" "$tmp/shr/ckpt.safetensors"
run 2 -x OMP_NUM_THREADS=1 "$DDPM" train "${su[@]}" --steps 4 --out "$tmp/nosh" >/dev/null 2>&1
check "--shard-data: another run than the unsharded one (as documented)" bash -c "! cmp -s '$tmp/sh/ckpt.safetensors' '$tmp/nosh/ckpt.safetensors'"
expect_ok "--shard-data on Fashion-MNIST (read whole, then cut)" run 2 -x OMP_NUM_THREADS=1 "$DDPM" train "${cu[@]}" --shard-data --out "$tmp/shf"
err=$("$DDPM" train --data moons --shard-data --steps 2 --out "$tmp/shp" 2>&1); rc=$?
check "--shard-data with points: refused" test $rc -eq 2
check "--shard-data with points: says so" grep -q "shard-data is for image data" <<<"$err"

# sampling: each rank its share of the indices, rank 0 writes
ck="$tmp/u1/ckpt.safetensors"
"$DDPM" sample --ckpt "$ck" -n 7 --sampler ddim --steps 8 --npy "$tmp/s1.npy" --out "$tmp/s1.png" --gif "$tmp/s1.gif" --quiet
expect_ok "sample on 2 processes" run 2 "$DDPM" sample --ckpt "$ck" -n 7 --sampler ddim --steps 8 --npy "$tmp/s2.npy" --out "$tmp/s2.png" --gif "$tmp/s2.gif" --quiet
check "sample on 2 processes: the .npy of 1" same "$tmp/s1.npy" "$tmp/s2.npy"
check "sample on 2 processes: the grid of 1" same "$tmp/s1.png" "$tmp/s2.png"
check "sample on 2 processes: the GIF of 1" same "$tmp/s1.gif" "$tmp/s2.gif"
"$DDPM" sample --ckpt "$tmp/m1/ckpt.safetensors" -n 9 --out "$tmp/p1.csv" --quiet
run 2 "$DDPM" sample --ckpt "$tmp/m1/ckpt.safetensors" -n 9 --out "$tmp/p2.csv" --quiet >/dev/null 2>&1
check "points sampled on 2 processes: the file of 1" same "$tmp/p1.csv" "$tmp/p2.csv"

# refused: no micro-batches; ranks started with different arguments
err=$(run 2 "$DDPM" train --data s-curve --steps 5 --out "$tmp/e" --quiet 2>&1); rc=$?
check "2 processes without --microbatch: non-zero exit" test $rc -ne 0
check "2 processes without --microbatch: says why" grep -q "needs micro-batches (--deterministic or --microbatch M)" <<<"$err"
err=$(run 1 "$DDPM" train "${mlp[@]}" --out "$tmp/e" : -np 1 "$DDPM" train "${mlp[@]}" --out "$tmp/e" --seed 3 2>&1); rc=$?
check "ranks with different arguments: refused" test $rc -ne 0
check "ranks with different arguments: says so" grep -q "different arguments" <<<"$err"

err=$(run 2 "$DDPM" schedule --schedule linear --timesteps 10 2>&1); rc=$?
check "a command that does not share its work: refused over 2 processes" test $rc -eq 2
check "a command that does not share its work: says so" grep -q "only train and sample run over several" <<<"$err"

# a killed rank ends the whole job promptly, naming the rank; the last checkpoint loads
long=(--data s-curve --n-points 2000 --steps 1000000 --batch-size 64 --microbatch 16 --save-every 50 --quiet)
run 2 -x OMP_NUM_THREADS=1 "$DDPM" train "${long[@]}" --out "$tmp/k" >"$tmp/k.log" 2>&1 &
job=$!
for _ in $(seq 100); do [ -s "$tmp/k/ckpt.safetensors" ] && break; sleep 0.1; done
victim=$(pgrep -f -- "--out $tmp/k" | grep -v "^$job\$" | while read -r p; do
  [ "$(ps -o comm= -p "$p")" = ddpm ] && echo "$p"; done | tail -1)
[ -n "$victim" ] && kill -9 "$victim"
for _ in $(seq 300); do kill -0 $job 2>/dev/null || break; sleep 0.1; done
if kill -0 $job 2>/dev/null; then kill -9 $job; hung=1; else hung=0; fi
wait $job; rc=$?
check "killed rank: the job ended by itself within 30 s" test $hung -eq 0
check "killed rank: non-zero exit" test $rc -ne 0
check "killed rank: the message names the rank" grep -q "process rank [01]" "$tmp/k.log"
check "killed rank: the last checkpoint loads" "$DDPM" sample --ckpt "$tmp/k/ckpt.safetensors" -n 4 --out "$tmp/k.csv" --quiet

# SIGTERM to one rank: every rank stops at the same step, the checkpoint is saved, exit 143 (128 + 15)
run 2 -x OMP_NUM_THREADS=1 "$DDPM" train "${long[@]}" --save-every 1000000 --out "$tmp/t" >"$tmp/t.log" 2>&1 &
job=$!
for _ in $(seq 100); do [ -s "$tmp/t/loss.csv" ] && [ "$(wc -l < "$tmp/t/loss.csv")" -gt 20 ] && break; sleep 0.1; done
victim=$(pgrep -f -- "--out $tmp/t" | while read -r p; do [ "$(ps -o comm= -p "$p")" = ddpm ] && echo "$p"; done | tail -1)
[ -n "$victim" ] && kill -TERM "$victim"
for _ in $(seq 300); do kill -0 $job 2>/dev/null || break; sleep 0.1; done
kill -0 $job 2>/dev/null && kill -9 $job
wait $job; rc=$?
check "SIGTERM on one rank: exit 143 (128 + SIGTERM)" test $rc -eq 143
check "SIGTERM on one rank: 'interrupted at step' and a saved checkpoint" grep -q "interrupted at step .*: saved" "$tmp/t.log"
last=$(tail -1 "$tmp/t/loss.csv" | cut -d, -f1)
expect_ok "SIGTERM on one rank: the run resumes" "$DDPM" train --resume "$tmp/t/ckpt.safetensors" --steps $((last + 5)) --out "$tmp/t" --quiet
finish

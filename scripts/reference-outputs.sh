#!/usr/bin/env bash
# Writes outputs that a refactor must leave bitwise identical: the demo, short Fashion-MNIST
# context-unet / unet / simple-unet runs with their checkpoints and samples, and schedule tables.
#   scripts/reference-outputs.sh BIN OUTDIR     (then: for f in $(cd A; find . -type f ! -name "*.log");
#                                                do cmp -s A/$f B/$f || echo DIFF $f; done)
set -euo pipefail
BIN=$(realpath "$1"); OUT=$2; rm -rf "$OUT"; mkdir -p "$OUT"; cd "$OUT"
export OMP_NUM_THREADS=2
"$BIN" demo --out demo >demo.log 2>&1
"$BIN" train --data fashion-mnist --model context-unet --n-feat 16 --steps 30 --batch-size 16 --max-items 500 --save-every 30 --sample-every 30 --sample-n 4 --out cu --quiet >cu.log 2>&1
"$BIN" train --data fashion-mnist --model unet --base-channels 16 --channel-mult 1,2 --num-res-blocks 1 --steps 30 --batch-size 8 --max-items 500 --save-every 30 --sample-every 0 --out un --quiet >un.log 2>&1
"$BIN" train --data fashion-mnist --model simple-unet --unet-channels 8,16,32 --steps 10 --batch-size 4 --max-items 100 --image-size 32 --save-every 10 --sample-every 0 --out su --quiet >su.log 2>&1 || echo "su failed" 
"$BIN" sample --ckpt cu/ckpt.safetensors -n 8 --sampler ddim --steps 10 --out cu_s.png --npy cu_s.npy >cus.log 2>&1 || echo cus failed
"$BIN" sample --ckpt un/ckpt.safetensors -n 4 --sampler ddim --steps 10 --out un_s.png --npy un_s.npy >uns.log 2>&1 || echo uns failed
for s in linear cosine sigmoid linear-course sigmoid-2d; do "$BIN" schedule --schedule $s --timesteps 50 --csv > sched_$s.csv; done
"$BIN" schedule --schedule linear --timesteps 100 > sched_text.txt

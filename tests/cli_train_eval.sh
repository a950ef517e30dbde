#!/usr/bin/env bash
# `ddpm train --eval-every` on a tiny class-conditional U-Net of a two-class folder the test writes
# itself (and a tiny classifier of it): DIR/eval.csv has one row per evaluation with its columns,
# DIR/best.safetensors is the checkpoint of the row of lowest FD, a resumed run (with rows of a
# killed run after its checkpoint and a torn row) continues eval.csv to the rows of an
# uninterrupted run, and under mpirun (if built with MPI) only rank 0 writes the same rows.
# Then `ddpm eval --nll` of the run: a bound in bits/dim that does not depend on the batch.
set -u
DDPM=${1:?usage: cli_train_eval.sh path/to/ddpm}
. "$(dirname "$0")/cli_lib.sh"
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT

pgm() { # pgm FILE TOP I: a 12 x 12 gray image, bright in its top or bottom half
  local f=$1 top=$2 i=$3
  { printf 'P5\n12 12\n255\n'
    for ((y = 0; y < 12; y++)); do for ((x = 0; x < 12; x++)); do
      local v=$(( (i * 7 + x * 3 + y * 5) % 23 ))
      if (( (y < 6) == top )); then v=$((200 + v)); else v=$((20 + v)); fi
      printf "\\x$(printf %02x $v)"
    done; done; } > "$f"
}
mkdir -p "$tmp/data/top" "$tmp/data/bottom"
for i in $(seq 1 12); do pgm "$tmp/data/top/t$i.pgm" 1 "$i"; pgm "$tmp/data/bottom/b$i.pgm" 0 "$i"; done
cls="$tmp/cls.safetensors"
expect_ok "a tiny classifier" "$DDPM" classifier train --data "$tmp/data" --image-size 12 --conv-channels 4,8 \
  --features 8 --batch 4 --test-every 4 --seed 1 --epochs 15 --lr 5e-3 --out "$cls"

tiny=(--data "$tmp/data" --labels-from-dirs --image-size 12 --channels 1 --model unet --base-channels 8
      --channel-mult 1,2 --num-res-blocks 1 --groups 4 --heads 2 --dim-head 8 --timesteps 20
      --batch-size 8 --lr 3e-3 --sample-every 0 --quiet)
ev=(--eval-every 2 --eval-n 8 --eval-steps 3 --eval-features "$cls" --keep-best)
cols() { cut -d, -f1-5 "$1"; } # every column but the seconds

expect_ok "train with --eval-every" "$DDPM" train "${tiny[@]}" "${ev[@]}" --steps 8 --out "$tmp/a"
check "eval.csv written" test -s "$tmp/a/eval.csv"
check "eval.png written" test -s "$tmp/a/eval.png"
check "best.safetensors written" test -s "$tmp/a/best.safetensors"
check "eval.csv header" test "$(head -1 "$tmp/a/eval.csv")" = "step,fd,kid,kid_std,class_acc,seconds"
check "a row every 2 steps" test "$(tail -n +2 "$tmp/a/eval.csv" | cut -d, -f1 | tr '\n' ' ')" = "2 4 6 8 "
check "6 numeric columns per row, class accuracy in [0, 1]" awk -F, 'NR > 1 { if (NF != 6) exit 1;
  for (i = 2; i <= 6; i++) if ($i !~ /^-?[0-9.e+-]+$/) exit 1; if ($5 < 0 || $5 > 1 || $2 < 0) exit 1 }' "$tmp/a/eval.csv"
best_step=$(tail -n +2 "$tmp/a/eval.csv" | sort -t, -k2,2g | head -1 | cut -d, -f1)
check "best.safetensors holds the step of lowest FD ($best_step)" \
  grep -aq "\"eval_step\":\"$best_step\"" "$tmp/a/best.safetensors"
expect_ok "best.safetensors samples" "$DDPM" sample --ckpt "$tmp/a/best.safetensors" -n 2 --sampler ddim \
  --steps 2 --out "$tmp/best.png" --quiet

# a run stopped at step 4, with rows the killed run wrote after its checkpoint and a torn one
expect_ok "train 4 steps" "$DDPM" train "${tiny[@]}" "${ev[@]}" --steps 4 --out "$tmp/b"
printf '6,1,2,3,0.5,0.1\n7,1,2' >> "$tmp/b/eval.csv"
expect_ok "resume to 8 steps" "$DDPM" train --resume "$tmp/b/ckpt.safetensors" --steps 8 "${ev[@]}" \
  --out "$tmp/b" --quiet
check "the resumed eval.csv has the rows of the uninterrupted run" cmp -s <(cols "$tmp/a/eval.csv") <(cols "$tmp/b/eval.csv")
check "the resumed loss.csv has the rows of the uninterrupted run" cmp -s "$tmp/a/loss.csv" "$tmp/b/loss.csv"
check "the resumed run's best.safetensors is the same step" \
  grep -aq "\"eval_step\":\"$best_step\"" "$tmp/b/best.safetensors"

# ddpm eval --nll: the likelihood bound of the checkpoint on its images, whatever the batch
nll() { "$DDPM" eval --nll --ckpt "$tmp/a/ckpt.safetensors" --nll-n 6 "$@" 2>&1 | grep "^NLL bound"; }
out=$(nll --batch 6)
check "eval --nll prints the bound in bits/dim" grep -q "bits/dim" <<<"$out"
check "the bound is a positive number" awk '{ exit !($3 > 0) }' <<<"$out"
check "the bound does not depend on the batch" test "$out" = "$(nll --batch 4)"
check "the small variance gives another bound" test "$out" != "$(nll --variance small)"
"$DDPM" train --data s-curve --steps 2 --quiet --out "$tmp/p" >/dev/null 2>&1
expect_fail 2 "eval --nll of a points model" "--nll measures image models" \
  "$DDPM" eval --nll --ckpt "$tmp/p/ckpt.safetensors"
expect_fail 2 "eval --nll without a checkpoint" "--nll needs --ckpt FILE" "$DDPM" eval --nll
expect_fail 2 "eval --nll with a bad variance" "--variance" \
  "$DDPM" eval --nll --ckpt "$tmp/a/ckpt.safetensors" --variance huge

# bad input
expect_fail 2 "--keep-best alone" "--keep-best needs --eval-every N" \
  "$DDPM" train "${tiny[@]}" --steps 2 --keep-best --out "$tmp/x"
expect_fail 2 "an unknown eval sampler" "--sampler" \
  "$DDPM" train "${tiny[@]}" --steps 2 --eval-every 1 --eval-features "$cls" --eval-sampler nope --out "$tmp/x"
expect_fail 2 "the shipped classifier does not fit 12x12" "give --eval-features CLS.safetensors" \
  "$DDPM" train "${tiny[@]}" --steps 2 --eval-every 1 --out "$tmp/x"
expect_fail 2 "points" "--eval-every measures images" \
  "$DDPM" train --data s-curve --steps 2 --eval-every 1 --quiet --out "$tmp/x"

if "$DDPM" --version | grep -q "MPI" && command -v mpirun >/dev/null; then
  det=(--microbatch 4)
  OMP_NUM_THREADS=1 "$DDPM" train "${tiny[@]}" "${ev[@]}" "${det[@]}" --steps 4 --out "$tmp/m1" >/dev/null 2>&1
  expect_ok "--eval-every on 2 processes" env ASAN_OPTIONS="${ASAN_OPTIONS:-}:detect_leaks=0" \
    mpirun --allow-run-as-root --oversubscribe --bind-to none -np 2 -x OMP_NUM_THREADS=1 \
    "$DDPM" train "${tiny[@]}" "${ev[@]}" "${det[@]}" --steps 4 --out "$tmp/m2"
  check "2 processes write the eval.csv rows of 1" cmp -s <(cols "$tmp/m1/eval.csv") <(cols "$tmp/m2/eval.csv")
fi
finish

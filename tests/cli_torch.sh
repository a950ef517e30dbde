#!/usr/bin/env bash
# PyTorch files through the command line (fixtures of scripts/fixtures/gen_torch_files.py):
# `sample --weights X.pth` gives the same samples as the same weights in safetensors, `--key`
# picks a nested state dict, `ddpm convert` writes a safetensors file that samples the same, and
# hostile or broken files give a one-line error and exit code 2.
set -u
DDPM=${1:?usage: cli_torch.sh path/to/ddpm}
. "$(dirname "$0")/cli_lib.sh"
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
F=${DDPM_FIXTURES:?}/torch

# The course's ContextUnet (n_feat 8, 16x16 RGB, 5 context features) saved with torch.save.
cu=(--model context-unet --n-feat 8 --n-cfeat 5 --height 16 --channels 3 -n 3 --seed 7 --no-clip --quiet)
expect_ok "sample from the safetensors export" "$DDPM" sample --weights "$F/context_unet.safetensors" "${cu[@]}" \
  --sampler ddim --steps 6 --out "$tmp/st.npy"
expect_ok "sample from the .pth" "$DDPM" sample --weights "$F/context_unet.pth" "${cu[@]}" --sampler ddim --steps 6 \
  --out "$tmp/pth.npy"
check "the .pth samples as its safetensors export does (DDIM)" cmp "$tmp/st.npy" "$tmp/pth.npy"
"$DDPM" sample --weights "$F/context_unet.safetensors" "${cu[@]}" --sampler ddpm --timesteps 20 --out "$tmp/st2.npy"
"$DDPM" sample --weights "$F/context_unet.pth" "${cu[@]}" --sampler ddpm --timesteps 20 --out "$tmp/pth2.npy"
check "the .pth samples as its safetensors export does (DDPM)" cmp "$tmp/st2.npy" "$tmp/pth2.npy"
check "and the samples depend on the weights" bash -c "! cmp -s '$tmp/st.npy' '$tmp/st2.npy'"

expect_ok "convert the .pth" "$DDPM" convert "$F/context_unet.pth" "$tmp/cu.safetensors" --quiet
expect_ok "sample from the converted file" "$DDPM" sample --weights "$tmp/cu.safetensors" "${cu[@]}" --sampler ddim \
  --steps 6 --out "$tmp/conv.npy"
check "the converted file samples the same" cmp "$tmp/st.npy" "$tmp/conv.npy"
check "no temporary file is left" bash -c "! ls '$tmp' | grep -q tmp"

# nested dicts: --key, in sample (a tiny model would not fit these tensors: the error says so) and convert
expect_ok "convert --key model" "$DDPM" convert "$F/nested.pth" "$tmp/model.safetensors" --key model --quiet
expect_ok "convert --key '*' of the legacy file" "$DDPM" convert --key '*' "$F/nested_legacy.pt" "$tmp/all.safetensors" --quiet
out=$("$DDPM" convert "$F/nested_legacy.pt" "$tmp/ema.safetensors" --key ema --list)
check "convert --list names the tensors" grep -q "conv.weight *F32 *\[3\]" <<<"$out"
expect_fail 2 "a nested file without --key" "tensors are nested under 'model', 'ema': choose one with --key" \
  "$DDPM" convert "$F/nested.pth" "$tmp/x.safetensors"
expect_fail 2 "an unknown --key" "no key 'nope' (its keys: 'model', 'ema', 'step', 'cfg')" \
  "$DDPM" convert "$F/nested.pth" "$tmp/x.safetensors" --key nope
expect_fail 2 "sample --weights of a nested file without --key" "nested under 'model', 'ema'" \
  "$DDPM" sample --weights "$F/nested.pth" "${cu[@]}" --out "$tmp/x.npy"
expect_fail 2 "sample --weights --key of the wrong network" "of the context-unet model is missing" \
  "$DDPM" sample --weights "$F/nested.pth" --key model "${cu[@]}" --out "$tmp/x.npy"

# hostile and broken files: refused, nothing written
expect_fail 2 "GLOBAL os.system" "refuses the global 'os.system'" "$DDPM" convert "$F/evil_os_system.pth" "$tmp/e.safetensors"
expect_fail 2 "REDUCE of eval" "refuses the global '__builtin__.eval'" "$DDPM" sample --weights "$F/evil_eval.pth" "${cu[@]}" --out "$tmp/x.npy"
expect_fail 2 "a ZIP entry outside the archive" "leaves the archive" "$DDPM" convert "$F/evil_traversal.pth" "$tmp/e.safetensors"
expect_fail 2 "a truncated ZIP" "truncated" "$DDPM" convert "$F/evil_truncated.pth" "$tmp/e.safetensors"
expect_fail 2 "a view past its storage" "which holds 4: refused" "$DDPM" convert "$F/evil_huge_view.pth" "$tmp/e.safetensors"
check "nothing written for refused files" bash -c "! ls '$tmp' | grep -q '^e\\.'"
expect_fail 2 "a missing file" "missing.pth" "$DDPM" convert "$tmp/missing.pth" "$tmp/e.safetensors"
expect_fail 2 "OUT not .safetensors" "OUT must end in .safetensors" "$DDPM" convert "$F/nested.pth" "$tmp/e.pth"
expect_fail 2 "one file only" "give IN" "$DDPM" convert "$F/nested.pth"
finish

#!/usr/bin/env bash
# CLI checks for diffusers folders: `ddpm sample --diffusers DIR` on the fixture folders of
# scripts/fixtures/gen_diffusers.py (a pipeline folder with a DDPMScheduler, a flat folder with
# the older attention names and a DDIMScheduler), the scheduler's defaults and the flags over
# them, and the one-line errors (exit 2) of malformed folders; `ddpm export --diffusers` is run
# from tests/test_unet2d.c (it needs a checkpoint of a unet2d model).
set -u
DDPM=${1:?usage: cli_diffusers.sh path/to/ddpm}
. "$(dirname "$0")/cli_lib.sh"
FX=${DDPM_FIXTURES:?}/diffusers
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT

expect_ok "sample --help lists --diffusers" bash -c "\"\$1\" sample --help | grep -q -- --diffusers" _ "$DDPM"
out=$("$DDPM" sample --diffusers "$FX/cifar" -n 2 --sampler ddim --steps 3 --out "$tmp/a.png" --npy "$tmp/a.npy" 2>&1)
check "pipeline folder samples" test -s "$tmp/a.npy"
check "it says what the scheduler gives" grep -q "DDPMScheduler (sampler ddim, variance large, spacing leading, clip_sample)" <<<"$out"
out=$("$DDPM" sample --diffusers "$FX/church" -n 1 --steps 2 --out "$tmp/b.png" --verbose 2>&1)
check "flat folder: DDIMScheduler gives ddim" grep -q "sampling 1 images 3x32x32 with ddim (2 steps)" <<<"$out"
check "its leading spacing" grep -q "timesteps: 500 0" <<<"$out"
out=$("$DDPM" sample --diffusers "$FX/church" -n 1 --steps 2 --spacing trailing --out "$tmp/b.png" --verbose 2>&1)
check "--spacing over the folder's" grep -q "timesteps: 999 499" <<<"$out"
"$DDPM" sample --diffusers "$FX/church" -n 2 --sampler dpmpp-2m --steps 3 --npy "$tmp/c.npy" --out "$tmp/c.png" >/dev/null 2>&1
check "any ddpm sampler on top (dpmpp-2m)" test -s "$tmp/c.npy"
"$DDPM" sample --diffusers "$FX/church" -n 2 --steps 3 --npy "$tmp/d1.npy" --out "$tmp/d.png" --threads 1 >/dev/null 2>&1
"$DDPM" sample --diffusers "$FX/church" -n 2 --steps 3 --npy "$tmp/d2.npy" --out "$tmp/d.png" --threads 2 --batch 1 >/dev/null 2>&1
check "same samples with 1 or 2 threads and batches" cmp "$tmp/d1.npy" "$tmp/d2.npy"

"$DDPM" sample --diffusers "$FX/church_bin" -n 2 --steps 3 --npy "$tmp/bin.npy" --out "$tmp/bin.png" >/dev/null 2>&1
check "a .bin folder (torch.save) samples as its safetensors twin" cmp "$tmp/d1.npy" "$tmp/bin.npy"
cp -r "$FX/church" "$tmp/o"
sed -i 's/"steps_offset": 0/"steps_offset": 1/' "$tmp/o/scheduler_config.json"
out=$("$DDPM" sample --diffusers "$tmp/o" -n 1 --steps 2 --out "$tmp/o.png" --verbose 2>&1)
check "steps_offset 1 moves the leading timesteps" grep -q "timesteps: 501 1" <<<"$out"

expect_fail 2 "two sources" "give one of --ckpt FILE, --diffusers DIR" "$DDPM" sample --diffusers "$FX/cifar" --ckpt x.safetensors
expect_fail 2 "not a folder" "no-such-dir: not a directory" "$DDPM" sample --diffusers "$tmp/no-such-dir"
mkdir -p "$tmp/empty"
expect_fail 2 "no config" "no unet/config.json or config.json" "$DDPM" sample --diffusers "$tmp/empty"

cp -r "$FX/church" "$tmp/f"
sed -i 's/"act_fn"/"use_linear_projection": true, "act_fn"/' "$tmp/f/config.json"
expect_fail 2 "unknown config key" "config.json: model config: unknown key \"use_linear_projection\"" "$DDPM" sample --diffusers "$tmp/f" --out "$tmp/x.png"
cp "$FX/church/config.json" "$tmp/f/config.json"
sed -i 's/"layers_per_block": 2/"layers_per_block": 1/' "$tmp/f/config.json"
expect_fail 2 "wrong tensor shape" "diffusion_pytorch_model.safetensors: tensor 'up_blocks.1.resnets.1.norm1.weight' has shape [32], the model expects [24]" "$DDPM" sample --diffusers "$tmp/f" --out "$tmp/x.png"
cp "$FX/church/config.json" "$tmp/f/config.json"
sed -i 's/"norm_eps": 1e-06/"norm_eps": "small"/' "$tmp/f/config.json"
expect_fail 2 "bad value" "\"norm_eps\" must be a number" "$DDPM" sample --diffusers "$tmp/f" --out "$tmp/x.png"
cp "$FX/church/config.json" "$tmp/f/config.json"
sed -i 's/"timestep_spacing"/"timestep_type": "discrete", "timestep_spacing"/' "$tmp/f/scheduler_config.json"
expect_fail 2 "unknown scheduler key" "scheduler_config.json: unknown key \"timestep_type\"" "$DDPM" sample --diffusers "$tmp/f" --out "$tmp/x.png"
cp "$FX/church/scheduler_config.json" "$tmp/f/scheduler_config.json"
printf '{"_class_name": "DDIMScheduler", ' > "$tmp/f/scheduler_config.json"
expect_fail 2 "truncated scheduler config" "scheduler_config.json: not a JSON object" "$DDPM" sample --diffusers "$tmp/f" --out "$tmp/x.png"
rm "$tmp/f/scheduler_config.json"
expect_ok "flat folder without a scheduler: DDPMScheduler's defaults" "$DDPM" sample --diffusers "$tmp/f" -n 1 --sampler ddim --steps 2 --out "$tmp/x.png"
rm "$tmp/f/diffusion_pytorch_model.safetensors"
expect_fail 2 "missing weights" "diffusion_pytorch_model.safetensors: missing" "$DDPM" sample --diffusers "$tmp/f" --out "$tmp/x.png"
cp -r "$FX/cifar" "$tmp/g"
rm "$tmp/g/scheduler/scheduler_config.json"
expect_fail 2 "pipeline folder without its scheduler" "scheduler_config.json: missing" "$DDPM" sample --diffusers "$tmp/g" --out "$tmp/x.png"
head -c 1000 "$FX/cifar/unet/diffusion_pytorch_model.safetensors" > "$tmp/g/unet/diffusion_pytorch_model.safetensors"
cp "$FX/cifar/scheduler/scheduler_config.json" "$tmp/g/scheduler/"
expect_fail 2 "truncated weights" "diffusion_pytorch_model.safetensors" "$DDPM" sample --diffusers "$tmp/g" --out "$tmp/x.png"

# export: ddpm's unet, trained two steps on a few images, as a diffusers folder
mkdir -p "$tmp/img/a" "$tmp/img/b"
for i in 1 2 3 4; do
  { printf 'P6\n8 8\n255\n'; head -c 192 /dev/zero | tr '\0' "\\$((100 + i))"; } > "$tmp/img/a/$i.ppm"
  { printf 'P6\n8 8\n255\n'; head -c 192 /dev/zero | tr '\0' "\\$((20 + i))"; } > "$tmp/img/b/$i.ppm"
done
expect_ok "train a tiny unet" "$DDPM" train --data "$tmp/img" --labels-from-dirs --image-size 8 --model unet \
  --base-channels 8 --channel-mult 1,2 --num-res-blocks 1 --groups 4 --heads 2 --dim-head 8 --timesteps 40 \
  --batch-size 4 --steps 2 --out "$tmp/run" --quiet
expect_ok "export it" "$DDPM" export --ckpt "$tmp/run/ckpt.safetensors" --diffusers "$tmp/exp" --quiet
check "a pipeline folder" test -s "$tmp/exp/model_index.json" -a -s "$tmp/exp/unet/config.json" -a -s "$tmp/exp/unet/diffusion_pytorch_model.safetensors" -a -s "$tmp/exp/scheduler/scheduler_config.json"
check "the unet as UNet2DModel blocks" grep -q '"AttnDownBlock2D"' "$tmp/exp/unet/config.json"
check "diffusers' key names" grep -qa 'down_blocks.1.attentions.0.to_q.weight' "$tmp/exp/unet/diffusion_pytorch_model.safetensors"
expect_ok "the export samples (a class)" "$DDPM" sample --diffusers "$tmp/exp" --class 1 -n 2 --sampler ddim --steps 4 --out "$tmp/e.png" --quiet
expect_fail 2 "a unet that does not map" "attention_head_dim" bash -c "\"\$1\" train --data \"\$2\" --image-size 8 --model unet --base-channels 8 --channel-mult 1,2 --num-res-blocks 1 --groups 4 --heads 4 --dim-head 8 --timesteps 40 --batch-size 4 --steps 1 --out \"\$3\" --quiet && \"\$1\" export --ckpt \"\$3/ckpt.safetensors\" --diffusers \"\$3/exp\"" _ "$DDPM" "$tmp/img" "$tmp/run2"
# train --model unet2d: diffusers' layout from ddpm's flags, exported and sampled back
expect_ok "train a tiny unet2d" "$DDPM" train --data "$tmp/img" --labels-from-dirs --image-size 8 --model unet2d \
  --block-out-channels 16,16 --down-block-types AttnDownBlock2D,DownBlock2D --layers-per-block 1 --groups 4 \
  --attention-head-dim 8 --norm-eps 1e-5 --timesteps 40 --batch-size 4 --steps 2 --out "$tmp/run3" --quiet
expect_ok "export the unet2d" "$DDPM" export --ckpt "$tmp/run3/ckpt.safetensors" --diffusers "$tmp/exp3" --quiet
cfg3=$(tr -d ' \t\n' < "$tmp/exp3/unet/config.json")
check "its block types" grep -q '"down_block_types":\["AttnDownBlock2D","DownBlock2D"\],' <<<"$cfg3"
check "the up blocks mirror them" grep -q '"up_block_types":\["UpBlock2D","AttnUpBlock2D"\],' <<<"$cfg3"
check "the flags' values" grep -q '"attention_head_dim":8,.*"layers_per_block":1,.*"norm_eps":1e-05,"norm_num_groups":4,"num_class_embeds":2,' <<<"$cfg3"
expect_ok "the unet2d export samples" "$DDPM" sample --diffusers "$tmp/exp3" --class 0 -n 2 --sampler ddim --steps 4 --out "$tmp/e3.png" --quiet
expect_fail 2 "a block type unet2d does not know" "CrossAttnDownBlock2D" "$DDPM" train --data "$tmp/img" --image-size 8 --model unet2d \
  --block-out-channels 8,16 --down-block-types CrossAttnDownBlock2D,DownBlock2D --groups 4 --steps 1 --out "$tmp/run4" --quiet
expect_fail 2 "unet2d does not take points" "does not take points" "$DDPM" train --data moons --model unet2d --steps 1 --out "$tmp/run5" --quiet
expect_fail 2 "export needs --ckpt" "--ckpt FILE is required" "$DDPM" export --diffusers "$tmp/e"
expect_fail 2 "export of a missing checkpoint" "nope.safetensors" "$DDPM" export --ckpt "$tmp/nope.safetensors" --diffusers "$tmp/e"
finish

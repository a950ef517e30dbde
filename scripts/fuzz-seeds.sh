#!/usr/bin/env bash
# Regenerates the valid seed files of the fuzz corpus (fuzz/corpus/<parser>/seed-*), small files
# of every format each harness reads. Reproducers of fixed bugs (regress-*) are kept as they are.
#   scripts/fuzz-seeds.sh [BUILD_DIR]   (default build/; needs its ddpm binary, and python3)
set -euo pipefail
cd "$(dirname "$0")/.."
bin="${1:-build}/ddpm"
[ -x "$bin" ] || { echo "fuzz-seeds.sh: build ddpm first ($bin missing)" >&2; exit 2; }
c=fuzz/corpus
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
mkdir -p $c/{safetensors,checkpoint,model_config,schedule_json,betas,npy,points,image,idx,classifier,torch_file,inception}
rm -f $c/*/seed-*

# Checkpoints of the smallest models: an MLP with learned and one with sinusoidal embeddings.
train=(train --data s-curve --n-points 16 --model mlp --hidden 4 --depth 1 --timesteps 8
       --steps 2 --batch-size 4 --save-every 2 --quiet)
"$bin" "${train[@]}" --out "$tmp/a" >/dev/null
"$bin" "${train[@]}" --time-embedding sinusoidal --schedule cosine --no-ema-warmup --out "$tmp/b" >/dev/null
cp "$tmp/a/ckpt.safetensors" $c/checkpoint/seed-mlp-learned.safetensors
cp "$tmp/b/ckpt.safetensors" $c/checkpoint/seed-mlp-sinusoidal.safetensors
cp "$tmp/a/ckpt.safetensors" $c/safetensors/seed-checkpoint.safetensors
# The smallest classifier (a few Fashion-MNIST images), and a diffusion checkpoint it must refuse.
"$bin" classifier train --data fashion-mnist --max-items 64 --epochs 1 --batch 32 --conv-channels 2,2,2 \
  --features 4 --out $c/classifier/seed-tiny.safetensors >/dev/null
cp "$tmp/a/ckpt.safetensors" $c/classifier/seed-checkpoint.safetensors
printf '%s' '{"kind":"classifier","in_channels":1,"height":13,"channels":[2,3],"features":4,"classes":3}' \
  > $c/model_config/seed-classifier.json

python3 - "$c" <<'PY'
import json, struct, sys, zlib, gzip
c = sys.argv[1]
def put(rel, data):
    open(f"{c}/{rel}", "wb").write(data.encode() if isinstance(data, str) else data)

# A checkpoint without its checksum: mutated tensor bytes then reach the value checks.
ck = open(f"{c}/checkpoint/seed-mlp-learned.safetensors", "rb").read()
n = struct.unpack("<Q", ck[:8])[0]
h = json.loads(ck[8:8 + n])
del h["__metadata__"]["ddpm.crc32"]
hj = json.dumps(h, separators=(",", ":")).encode()
hj += b" " * (-len(hj) % 8)
put("checkpoint/seed-mlp-nocrc.safetensors", struct.pack("<Q", len(hj)) + hj + ck[8 + n:])

# safetensors of every dtype, and one with no tensors.
def st(tensors, meta):
    hdr, data = {}, b""
    if meta is not None: hdr["__metadata__"] = meta
    for name, dt, shape, raw in tensors:
        hdr[name] = {"dtype": dt, "shape": shape, "data_offsets": [len(data), len(data) + len(raw)]}
        data += raw
    hj = json.dumps(hdr, separators=(",", ":")).encode()
    return struct.pack("<Q", len(hj)) + hj + data
put("safetensors/seed-dtypes.safetensors", st([
    ("a", "F32", [2, 2], struct.pack("<4f", 1, -2, 0.5, 3)),
    ("b", "F64", [3], struct.pack("<3d", 1e-3, 2, -7)),
    ("c", "F16", [2], struct.pack("<2H", 0x3c00, 0x0001)),
    ("d", "BF16", [1, 2], struct.pack("<2H", 0x3f80, 0xff80)),
    ("e", "I64", [2], struct.pack("<2q", -1, 5)),
    ("f", "I32", [1], struct.pack("<i", 7)),
    ("g", "U8", [3], b"\x00\x01\xff"), ("h", "I8", [1], b"\x80"), ("i", "BOOL", [0], b""),
    ("j", "F32", [], struct.pack("<f", 2.5))], {"k": "v"}))
put("safetensors/seed-empty.safetensors", st([], {}))

# Model configs of each kind, small.
for name, cfg in {
    "mlp": {"kind": "mlp", "dim": 2, "hidden": 8, "depth": 2, "num_timesteps": 10, "time_embedding": "learned"},
    "mlp-sin": {"kind": "mlp", "dim": 3, "hidden": 4, "depth": 1, "num_timesteps": 5, "time_embedding": "sinusoidal"},
    "unet": {"kind": "unet", "in_channels": 1, "height": 8, "width": 8, "base_channels": 4,
             "channel_mult": [1, 2], "num_res_blocks": 1, "attn_resolutions": [4], "heads": 1,
             "dim_head": 4, "groups": 2, "num_classes": 2, "num_timesteps": 10, "dropout": 0.1},
    "unet-selfcond": {"kind": "unet", "in_channels": 2, "height": 4, "base_channels": 4, "channel_mult": [1],
                      "num_res_blocks": 1, "heads": 2, "dim_head": 0, "groups": 1, "num_timesteps": 3, "self_cond": True},
    "context-unet": {"kind": "context-unet", "in_channels": 1, "n_feat": 8, "n_cfeat": 2, "height": 4,
                     "num_timesteps": 5},
    "simple-unet": {"kind": "simple-unet", "in_channels": 1, "height": 4, "time_emb_dim": 4,
                    "num_timesteps": 5, "channels": [4, 8]},
}.items():
    put(f"model_config/seed-{name}.json", json.dumps(cfg))

# Schedules of each kind.
for kind in ["linear", "linear-course", "cosine", "sigmoid", "sigmoid-2d"]:
    put(f"schedule_json/seed-{kind}.json", json.dumps({"kind": kind, "timesteps": 10, "beta_start": 1e-4,
        "beta_end": 0.02, "cosine_s": 0.008, "sigmoid_start": -3, "sigmoid_end": 3, "sigmoid_tau": 1}))
put("schedule_json/seed-custom.json", json.dumps({"kind": "custom", "timesteps": 3, "betas": [0.1, 0.2, 0.3]}))

# Betas files.
put("betas/seed-lines.txt", "# betas\n0.0001\n0.01\n0.02\n")
put("betas/seed-separators.txt", "1e-4, 2e-4; 0.5\t0.9 # end\n")

# .npy arrays: the dtypes and layouts the readers accept, and a version 2.0 header.
def npy(descr, shape, raw, ver=1):
    d = "{'descr': '%s', 'fortran_order': False, 'shape': %s, }" % (descr, repr(tuple(shape)))
    hl = 4 if ver >= 2 else 2
    pad = -(6 + 2 + hl + len(d) + 1) % 64
    d = d + " " * pad + "\n"
    return b"\x93NUMPY" + bytes([ver, 0]) + struct.pack("<I" if hl == 4 else "<H", len(d)) + d.encode() + raw
put("npy/seed-u1-nhwc.npy", npy("|u1", [2, 3, 3, 1], bytes(range(0, 180, 10))))
put("npy/seed-f4-nhw.npy", npy("<f4", [1, 2, 2], struct.pack("<4f", 0, 0.25, 0.5, 1)))
put("npy/seed-f8-nchw.npy", npy("<f8", [1, 3, 2, 2], struct.pack("<12d", *[-1, -.5, 0, .5, 1, 0, 0, 0, .25, .75, -.25, 1])))
put("npy/seed-i2-scalar.npy", npy("<i2", [], struct.pack("<h", 3)))
put("npy/seed-b1-v2.npy", npy("|b1", [3], b"\x00\x01\x01", ver=2))
put("npy/seed-u4-nhwc3.npy", npy("<u4", [1, 1, 2, 3], struct.pack("<6I", 0, 1, 2, 253, 254, 255)))
# labels for the harness's fixed dataset of 2 images: class indices, one-hot rows, context vectors
put("npy/seed-labels-i8.npy", npy("<i8", [2], struct.pack("<2q", 0, 3)))
put("npy/seed-labels-onehot.npy", npy("<f4", [2, 3], struct.pack("<6f", 0, 1, 0, 1, 0, 0)))
put("npy/seed-labels-context.npy", npy("<f4", [2, 2], struct.pack("<4f", 0.5, -1, 2, 0)))

# Points CSVs.
put("points/seed-header.csv", "x,y\n0.1,0.2\n-1.5,3e-2\n")
put("points/seed-spaces.csv", "\ufeff# comment\n1 2 3\r\n4\t5\t6\r\n\n\"7\", 8 ,9\n")

# Images (the harness reads the last byte as size/channel choice: these end in ordinary bytes).
def png(w, h, ctype, rows):
    def chunk(t, d): return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d))
    raw = b"".join(b"\x00" + r for r in rows)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, ctype, 0, 0, 0)) +
            chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))
put("image/seed-rgba.png", png(3, 2, 6, [bytes([255, 0, 0, 255, 0, 255, 0, 128, 0, 0, 255, 0])] * 2))
put("image/seed-gray.png", png(4, 5, 0, [bytes([i * 40 + j for j in range(4)]) for i in range(5)]))
def bmp(w, h, bpp=24):
    row = bytes((x * 60 + c) & 255 for x in range(w) for c in range(bpp // 8))
    row += b"\x00" * (-len(row) % 4)
    data = row * h
    return (b"BM" + struct.pack("<IHHI", 54 + len(data), 0, 0, 54) +
            struct.pack("<IiiHHIIiiII", 40, w, h, 1, bpp, 0, len(data), 2835, 2835, 0, 0) + data)
put("image/seed-24.bmp", bmp(5, 3))
put("image/seed-32.bmp", bmp(2, 2, 32))
put("image/seed.ppm", b"P6\n3 2\n255\n" + bytes(range(18)))
put("image/seed.pgm", b"P5 2 3 255 " + bytes([0, 50, 100, 150, 200, 250]))
put("image/seed.tga", bytes([0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2, 0, 2, 0, 24, 0]) + bytes(range(12)))
put("image/seed.hdr", b"#?RADIANCE\nFORMAT=32-bit_rle_rgbe\n\n-Y 2 +X 2\n" + bytes([128, 64, 32, 129] * 4))
# 8 wide: run-length rows (2 2, the width, then per channel a run of 8 or 8 literal bytes)
put("image/seed-rle.hdr", b"#?RADIANCE\nFORMAT=32-bit_rle_rgbe\n\n-Y 2 +X 8\n" +
    (bytes([2, 2, 0, 8, 8]) + bytes(range(0, 160, 20)) + bytes([136, 64, 136, 32, 136, 129])) * 2)
# PSD: RGB, 8 bits, 3 x 2, raw planes; and PackBits rows (a literal row, a run row per channel)
def psd(w, h, comp, data):
    return (b"8BPS" + struct.pack(">H6xHIIHH", 1, 3, h, w, 8, 3) + struct.pack(">III", 0, 0, 0) +
            struct.pack(">H", comp) + data)
put("image/seed.psd", psd(3, 2, 0, bytes(range(10, 190, 10))))
put("image/seed-rle.psd", psd(3, 2, 1, struct.pack(">6H", 4, 2, 4, 2, 4, 2) +
    b"".join(bytes([2, 10 * c, 10 * c + 5, 10 * c + 9, 254, 40 + c]) for c in range(3))))
# Softimage PIC: 3 x 2, one R G B packet, uncompressed
put("image/seed.pic", struct.pack(">I", 0x5380F634) + bytes(84) + b"PICT" + struct.pack(">HHfHH", 3, 2, 1.0, 3, 0) +
    bytes([0, 8, 0, 0xE0]) + bytes(range(20, 200, 10)))
# A 2x2 GIF: global palette of 4 colours, LZW minimum code size 2, one image.
put("image/seed.gif", b"GIF89a" + struct.pack("<HHBBB", 2, 2, 0x81, 0, 0) +
    bytes([0, 0, 0, 255, 255, 255, 255, 0, 0, 0, 0, 255]) + b"\x2c" + struct.pack("<HHHHB", 0, 0, 2, 2, 0) +
    bytes([2, 3, 0x84, 0x1d, 0x05, 0]) + b"\x3b")

# IDX pairs: mode 0 (plain files) and mode 1 (gzip'd by the harness); 2 images of 3x2.
imgs = struct.pack(">IIII", 0x803, 2, 3, 2) + bytes(range(0, 240, 20))
labs = struct.pack(">II", 0x801, 2) + bytes([3, 9])
for mode in (0, 1):
    put(f"idx/seed-mode{mode}", bytes([mode]) + struct.pack("<H", len(imgs)) + imgs + labs)
# mode 2: gzip streams written as they are
gi, gl = gzip.compress(imgs, mtime=0), gzip.compress(labs, mtime=0)
put("idx/seed-mode2", bytes([2]) + struct.pack("<H", len(gi)) + gi + gl)
PY

# PyTorch files (fuzz_torch_file.c): the small fixtures of tests/fixtures/torch/ as they are
# (first byte: bit 0 = 0, bits 1-2 the key: none, "model", "*", "ema"), and the ZIP ones as a
# pickle plus storage records for the harness to wrap in a valid archive (bit 0 = 1).
python3 - "$c" tests/fixtures/torch <<'PY'
import glob, os, struct, sys, zipfile
c, src = sys.argv[1], sys.argv[2]
for path in sorted(glob.glob(f"{src}/*")):
    name = os.path.basename(path)
    if name.endswith(".safetensors") and name != "nested.expected.safetensors":
        continue
    data = open(path, "rb").read()
    if len(data) > 4000:
        continue
    key = 2 if name.startswith("nested") else 0          # "model" for the nested ones
    open(f"{c}/torch_file/seed-{name}", "wb").write(bytes([key << 1]) + data)
    if data[:2] == b"PK" and not name.startswith("evil_"):
        z = zipfile.ZipFile(path)
        pkl = [n for n in z.namelist() if n.endswith("/data.pkl")][0]
        rec = struct.pack("<H", z.getinfo(pkl).file_size) + z.read(pkl)
        for n in z.namelist():
            parts = n.split("/")
            if len(parts) == 3 and parts[1] == "data" and parts[2].isdigit() and int(parts[2]) < 256:
                d = z.read(n)
                rec += struct.pack("<BH", int(parts[2]), len(d)) + d
        open(f"{c}/torch_file/seed-wrapped-{name}", "wb").write(bytes([1 | key << 1]) + rec)
# the big one wrapped too (its pickle and storages are over 4 KB: keep only the pickle)
z = zipfile.ZipFile(f"{src}/dtypes.pth")
pkl = z.read("dtypes/data.pkl")
rec = struct.pack("<H", len(pkl)) + pkl
for n in z.namelist():
    parts = n.split("/")
    if len(parts) == 3 and parts[1] == "data":
        d = z.read(n)
        rec += struct.pack("<BH", int(parts[2]), len(d)) + d
open(f"{c}/torch_file/seed-wrapped-dtypes.pth", "wb").write(bytes([1]) + rec)
PY

# Inception-v3 (fuzz_inception.c): the stem of the test fixture's narrow twin as safetensors (the
# whole network is ~470 tensors, more than a fuzz input holds; the loader refuses it at the first
# missing tensor after checking the stem's).
"$bin" convert tests/fixtures/inception/w16.pth "$tmp/inception.safetensors" --quiet
python3 - "$c" "$tmp/inception.safetensors" <<'PY'
import json, struct, sys
c, src = sys.argv[1:]
b = open(src, "rb").read()
n = struct.unpack("<Q", b[:8])[0]
h, data = json.loads(b[8:8 + n]), b[8 + n:]
out, raw = {}, b""
for k in h:
    if k.startswith(("Conv2d_1a_3x3.", "Conv2d_2a_3x3.", "Conv2d_2b_3x3.")) and "num_batches" not in k:
        s, e = h[k]["data_offsets"]
        out[k] = {"dtype": h[k]["dtype"], "shape": h[k]["shape"], "data_offsets": [len(raw), len(raw) + e - s]}
        raw += data[s:e]
hj = json.dumps(out, separators=(",", ":")).encode()
hj += b" " * (-len(hj) % 8)
open(f"{c}/inception/seed-stem.safetensors", "wb").write(struct.pack("<Q", len(hj)) + hj + raw)
PY

# The smallest valid JPEG at hand: CPython's test image (PSF licence), if this machine has it.
jpg=$(ls /root/.pyenv/versions/*/lib/python3*/test/imghdrdata/python.jpg /usr/lib/python3*/test/imghdrdata/python.jpg 2>/dev/null | head -1 || true)
if [ -n "$jpg" ]; then cp "$jpg" $c/image/seed-python.jpg; fi
du -sh $c; for d in $c/*/; do echo "$(ls "$d" | wc -l) $d"; done

#!/usr/bin/env bash
# Build everything scripts/gpu/check.sh runs, for a GPU machine that has the NVIDIA driver,
# CUDA's runtime compiler (NVRTC) and Python with PyTorch, but no Rust toolchain and no network.
#
#   scripts/gpu/bundle.sh [DIR]        # default DIR: .device (git-ignored)
#
# DIR gets (about 80 MB; copy the parts a run needs: check.sh skips what is missing):
#   exe.tar.xz     the release `coeff-experiments` and `coeff-bench` built with
#                  `--no-default-features --features cuda` (Burn's fusion and autotune off, the
#                  workspace's default; add `fusion,autotune` to the features to try them)
#   tests.tar.xz   the core crate's test programs built with `test-cuda`
#   cache/         what the few-shot slice reads: DINOv2 ViT-S/14 stored as f16 (half the
#                  bytes of the f32 file; loaded into the f32 model) and the animal
#                  silhouettes, from this machine's asset cache (run `cargo xtask fetch` and
#                  the default experiment once first)
# Then copy the repository with DIR to the GPU machine and run `scripts/gpu/check.sh DIR`.
set -euo pipefail
cd "$(dirname "$0")/../.."
dir=${1:-.device}
cache=${COEFF_TUNING_CACHE:-$HOME/.cache/coeff-tuning}
rm -rf "$dir/stage"
mkdir -p "$dir/stage/tests"

echo "== build (release, cuda)"
cargo build --release -p coeff-experiments -p coeff-bench --no-default-features --features cuda
cp target/release/coeff-experiments target/release/coeff-bench "$dir/stage/"
cargo test --release -p coeff-tuning --features test-cuda --no-run --message-format=json \
    | python3 -c '
import json, sys
for line in sys.stdin:
    try:
        m = json.loads(line)
    except ValueError:
        continue
    if m.get("reason") == "compiler-artifact" and m.get("executable"):
        print(m["executable"])' \
    | while read -r exe; do
        # test programs are named <target>-<hash>; keep the target's name
        base=$(basename "$exe"); cp "$exe" "$dir/stage/tests/${base%-*}"
    done
strip "$dir/stage/coeff-experiments" "$dir/stage/coeff-bench" "$dir"/stage/tests/*
tar -C "$dir/stage" -cJf "$dir/exe.tar.xz" coeff-experiments coeff-bench
# Test programs find their fixtures through the build's absolute path (CARGO_MANIFEST_DIR).
pwd >"$dir/stage/tests/.built-in"
tar -C "$dir/stage" -cJf "$dir/tests.tar.xz" tests
rm -rf "$dir/stage"

echo "== assets for the few-shot slice"
src="$cache/dinov2-vit-s14"
test -s "$src/model.safetensors" || { echo "no $src: run cargo xtask fetch first" >&2; exit 1; }
mkdir -p "$dir/cache/dinov2-vit-s14" "$dir/cache/datasets"
cp "$src/config.json" "$src/.converted" "$dir/cache/dinov2-vit-s14/"
python3 - "$src/model.safetensors" "$dir/cache/dinov2-vit-s14/model.safetensors" <<'EOF'
# f32 -> f16 safetensors with the standard library alone (no numpy).
import json, struct, sys
src, dst = sys.argv[1], sys.argv[2]
raw = open(src, "rb").read()
n = struct.unpack("<Q", raw[:8])[0]
header = json.loads(raw[8:8 + n])
body = memoryview(raw)[8 + n:]
out, off, meta = [], 0, header.pop("__metadata__", None)
new = {}
for name, t in sorted(header.items(), key=lambda kv: kv[1]["data_offsets"][0]):
    a, b = t["data_offsets"]
    if t["dtype"] != "F32":
        sys.exit(f"{src}: {name} is {t['dtype']}, expected F32")
    vals = body[a:b].cast("f")
    data = struct.pack(f"<{len(vals)}e", *vals)
    new[name] = {"dtype": "F16", "shape": t["shape"], "data_offsets": [off, off + len(data)]}
    out.append(data)
    off += len(data)
if meta is not None:
    new["__metadata__"] = meta
h = json.dumps(new).encode()
h += b" " * (-len(h) % 8)
with open(dst, "wb") as f:
    f.write(struct.pack("<Q", len(h)) + h)
    for d in out:
        f.write(d)
EOF
cp -r "$cache/datasets/animal-mnist-0.4" "$dir/cache/datasets/"
du -sh "$dir"/*

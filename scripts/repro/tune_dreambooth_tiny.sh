#!/usr/bin/env bash
# `tune dreambooth` on the tiny SDXL pipeline of the coeff-sdxl fixtures and five real subject
# images (Twitter's cat-face emoji), one run per method; prints step time and peak memory from
# each run's metrics.json, then checks the LoRA export with diffusers when it is installed.
#
#   scripts/repro/tune_dreambooth_tiny.sh OUT [extra tune flags...]
#
# Needs: npm (the emoji package). The diffusers check needs torch, diffusers and peft.
set -euo pipefail
out=${1:?usage: $0 OUT [extra tune flags...]}
shift
root=$(cd "$(dirname "$0")/../.." && pwd)
mkdir -p "$out"
out=$(cd "$out" && pwd)
pipeline="$root/crates/coeff-sdxl/tests/fixtures/sdxl_pipeline_tiny"
xtask() { (cd "$root" && cargo xtask "$@"); }
[ -d "$out/subject" ] || python3 "$root/scripts/data/emoji_folder.py" "$out/subject" --subcategory cat-face --per-class 5
for method in lora lora+coeff coeff; do
    xtask tune dreambooth --pipeline "$pipeline" --instance-data-dir "$out/subject" \
        --instance-prompt "a photo of sks cat" --out "$out/${method/+/-}" --method "$method" \
        --max-train-steps 200 --train-batch-size 2 --learning-rate 1e-3 --checkpointing-steps 100 \
        --validation-prompt "a photo of sks cat" --validation-steps 100 --num-validation-images 4 "$@"
done
python3 - "$out" <<'PY'
import json, sys, pathlib
out = pathlib.Path(sys.argv[1])
print("| method | trainable params | median step ms | train s | cache s | peak RSS MiB | loss first / last 10% |")
print("|---|---|---|---|---|---|---|")
for m in ["lora", "lora-coeff", "coeff"]:
    d = json.loads((out / m / "metrics.json").read_text())
    a, b = d["loss_first_last"]
    print(f"| {d['settings']['method']} | {d['trainable_params']} | {d['step_ms']:.1f} | {d['train_seconds']:.1f} "
          f"| {d['cache_seconds']:.2f} | {d['peak_rss_mib']:.0f} | {a:.4f} / {b:.4f} |")
PY
if python3 -c "import diffusers, peft, torch" 2>/dev/null; then
    check="$root/scripts/fixtures/check_unet_lora_export.py"
    lora="$out/lora/pytorch_lora_weights.safetensors"
    python3 "$check" --unet "$pipeline/unet" --lora "$lora" --make-inputs "$out/unet_inputs.safetensors"
    xtask infer --checkpoint "$pipeline/unet" --adapter "$lora" --input "$out/unet_inputs.safetensors" \
        --output "$out/unet_ours.safetensors"
    python3 "$check" --unet "$pipeline/unet" --lora "$lora" --inputs "$out/unet_inputs.safetensors" \
        --reference "$out/unet_ours.safetensors"
else
    echo "diffusers/peft/torch not importable: skipped the diffusers check of the LoRA export"
fi

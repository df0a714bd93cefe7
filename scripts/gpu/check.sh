#!/usr/bin/env bash
# Everything worth doing in a few minutes on an NVIDIA GPU, written to one report.
#
#   scripts/gpu/check.sh [BUNDLE] [REPORT_DIR]
#   STEPS="tests bench fewshot" scripts/gpu/check.sh ...     # the default: all three
#
# BUNDLE: a directory made by scripts/gpu/bundle.sh, for a GPU machine without Rust (its parts
# can travel separately: a step whose part is missing is reported as skipped). Without BUNDLE,
# cargo builds the cuda programs here. REPORT_DIR (default: $OUT, else runs/gpu) receives
# report.md, tests.log and the benchmarks' and the few-shot slice's summary.json, flat (at most
# 8 files). Each step is time-boxed, so the whole stays under 8 minutes:
#   tests    the core crate's tests on the cuda backend (no fusion / autotune, as the binaries);
#   bench    ViT-B/16 and ViT-S/16 step benchmarks at 224 px, batch 8: none / Coeff / LoRA /
#            LoRA+Coeff interleaved, and PyTorch CUDA on the same shapes in the same invocation;
#   fewshot  a short `--preset full` few-shot slice: DINOv2 ViT-S/14 at 224 px, animals, 4-shot,
#            the paper's recipe, every PEFT method and the linear probe, one seed.
# CUBECL_LOG=1 also writes the tail of CubeCL's compilation / autotune log to cubecl.log.
set -uo pipefail
cd "$(dirname "$0")/../.."
bundle=${1:-}
report=${2:-${OUT:-runs/gpu}}
steps=" ${STEPS:-tests bench fewshot} "
mkdir -p "$report"
report=$(cd "$report" && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
log="$report/report.md"
say() { printf '%s\n' "$*" | tee -a "$log"; }
: >"$log"
# CUDA's runtime compiler (NVRTC) is loaded at run time: add the usual places it lives.
for d in /usr/local/cuda/lib64 \
    "$(python3 -c 'import nvidia.cuda_nvrtc, os; print(os.path.join(nvidia.cuda_nvrtc.__path__[0], "lib"))' 2>/dev/null)" \
    "$(python3 -c 'import nvidia.cu13, os; print(os.path.join(nvidia.cu13.__path__[0], "lib"))' 2>/dev/null)"; do
    if [ -n "$d" ] && [ -d "$d" ]; then export LD_LIBRARY_PATH="$d:${LD_LIBRARY_PATH:-}"; fi
done
if [ "${CUBECL_LOG:-0}" = 1 ]; then
    export CUBECL_DEBUG_LOG="$work/cubecl.log"
    trap 'tail -c 4000000 "$work/cubecl.log" >"$report/cubecl.log" 2>/dev/null; rm -rf "$work"' EXIT
fi
exe=""
bench=""
tests=()
if [ -n "$bundle" ]; then
    for part in exe tests; do
        if [ -f "$bundle/$part.tar.xz" ]; then tar -C "$work" -xJf "$bundle/$part.tar.xz"; fi
    done
    if [ -x "$work/coeff-experiments" ]; then exe="$work/coeff-experiments"; fi
    if [ -x "$work/coeff-bench" ]; then bench="$work/coeff-bench"; fi
    if [ -d "$work/tests" ]; then
        tests=("$work"/tests/*)
        # The test programs look for their fixtures where they were built: point that path here.
        built=$(cat "$work/tests/.built-in")
        if [ ! -e "$built" ]; then mkdir -p "$(dirname "$built")" && ln -s "$PWD" "$built"; fi
    fi
    export COEFF_TUNING_CACHE="$(cd "$bundle" && pwd)/cache"
else
    cargo build --release -p coeff-experiments -p coeff-bench --no-default-features --features cuda \
        || exit 1
    exe=target/release/coeff-experiments
    bench=target/release/coeff-bench
fi

say "# GPU check ($(date -u +%Y-%m-%dT%H:%MZ), steps:$steps)"
say ""
say '```'
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>&1 | tee -a "$log"
python3 -c 'import torch, transformers; print("torch", torch.__version__, "cuda", torch.version.cuda, "transformers", transformers.__version__)' 2>&1 | tail -1 | tee -a "$log"
say '```'

if [[ $steps == *" tests "* ]]; then
    say ""
    say "## Core tests on cuda"
    say ""
    t0=$(date +%s)
    if [ -z "$bundle" ]; then
        timeout 420 cargo test --release -p coeff-tuning --features test-cuda >"$report/tests.log" 2>&1
        say "cargo test -p coeff-tuning --features test-cuda: exit $?"
        grep -E '^test result' "$report/tests.log" | tee -a "$log"
    elif [ ${#tests[@]} -eq 0 ]; then
        say "skipped: no tests.tar.xz in the bundle"
    else
        # The programs run side by side (a GPU machine has cores to spare), each time-boxed.
        for t in "${tests[@]}"; do
            (timeout 150 "$t" >"$work/$(basename "$t").log" 2>&1; echo $? >"$work/$(basename "$t").rc") &
        done
        wait
        pass=0
        fail=0
        for t in "${tests[@]}"; do
            name=$(basename "$t")
            { echo "== $name"; cat "$work/$name.log"; } >>"$report/tests.log"
            if [ "$(cat "$work/$name.rc")" = 0 ]; then
                pass=$((pass + 1))
                r=ok
            else
                fail=$((fail + 1))
                r="FAILED (exit $(cat "$work/$name.rc"))"
            fi
            say "- $name: $r ($(grep -E '^test result' "$work/$name.log" | tail -1))"
        done
        say ""
        say "$pass test programs passed, $fail failed (log: tests.log)."
    fi
    say "($(($(date +%s) - t0)) s)"
fi

if [[ $steps == *" bench "* ]]; then
    for model in vit-b vit-s; do
        say ""
        say "## Step benchmark, $model"
        say ""
        if [ -z "$bench" ]; then
            say "skipped: no coeff-bench (exe.tar.xz) in the bundle"
            continue
        fi
        t0=$(date +%s)
        timeout 150 "$bench" --out "$work/bench-$model" attention --model "$model" --iters 20 \
            >"$work/bench-$model.log" 2>&1
        rc=$?
        if [ -s "$work/bench-$model/results.md" ]; then
            sed 1d "$work/bench-$model/results.md" >>"$log"
            cp "$work/bench-$model/summary.json" "$report/bench-$model.json"
        else
            say "failed (exit $rc):"
            say '```'
            tail -20 "$work/bench-$model.log" | tee -a "$log"
            say '```'
        fi
        say "($(($(date +%s) - t0)) s, exit $rc)"
    done
fi

if [[ $steps == *" fewshot "* ]]; then
    say ""
    say "## Few-shot slice, --preset full"
    say ""
    cache=${COEFF_TUNING_CACHE:-$HOME/.cache/coeff-tuning}
    if [ -z "$exe" ] || [ ! -d "$cache/dinov2-vit-s14" ]; then
        say "skipped: no experiment program or no DINOv2 ViT-S/14 in $cache"
    else
        t0=$(date +%s)
        timeout 200 "$exe" --out "$work/fewshot" fewshot --preset full --backbone dinov2-s14 \
            --datasets animals --shots 4 --seeds 0 \
            --methods linear,coeff,lora,lora+coeff,dora,dora+coeff >"$work/fewshot.log" 2>&1
        rc=$?
        if [ -s "$work/fewshot/results.md" ]; then
            cat "$work/fewshot/results.md" >>"$log"
            cp "$work/fewshot/summary.json" "$report/fewshot.json"
        else
            say "failed (exit $rc):"
            say '```'
            tail -20 "$work/fewshot.log" | tee -a "$log"
            say '```'
        fi
        say "($(($(date +%s) - t0)) s, exit $rc)"
    fi
fi

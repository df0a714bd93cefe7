#!/usr/bin/env bash
# Tiny configurations of every experiment, to check that a refactor reproduces their outputs:
# run with the old and the new coeff-experiments binary, then compare_outputs.py OLD NEW.
# usage: run.sh BIN_EXPERIMENTS OUTDIR   (runs tiny configs of each experiment)
set -euo pipefail
B=$1; O=$2; mkdir -p $O
$B --out $O/toy toy > $O/toy.log 2>&1
$B --out $O/fewshot fewshot --datasets fashion-mnist,animals --shots 1 --seeds 0,1 --methods linear,coeff,lora,lora+coeff --epochs 6 --test-per-class 10 > $O/fewshot.log 2>&1
$B --out $O/vl vl --methods lora,lora+coeff --seeds 1 --steps 16 --train-per-task 16 --test-per-task 8 > $O/vl.log 2>&1
$B --out $O/concept concept --methods lora,lora+coeff,coeff --seeds 1 --base-steps 20 --side 16 --widths 16,32 --base-batch 4 --steps 8 --sample-steps 4 > $O/concept.log 2>&1
echo all-done

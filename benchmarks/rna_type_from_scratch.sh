#!/usr/bin/env bash
# Learning check of the whole fine-tuning pipeline (not of RNA-FM's pretrained quality, which needs the released
# weights): a small RNA-FM initialised at random (4 layers of width 128) is trained from scratch by
# examples/rna_type_classification.py on the 28 RNA types of ../shared/data, and must beat the majority class on
# the test split. Takes about 5 minutes on 2 CPU cores. Writes metrics.json and confusion_matrix.png to the folder
# given (default benchmarks/results/rna-type-from-scratch).
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-benchmarks/results/rna-type-from-scratch}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
python conversion/make_random_checkpoint.py "$work/small.pth" --layers 4 --hidden-size 128 --heads 8 \
    --intermediate-size 512 --seed 0
rnafm-hf convert "$work/small.pth" --output "$work/small"
start=$(date +%s)
python examples/rna_type_classification.py --model "$work/small" --output-dir "$work/run" --epochs 6 \
    --learning-rate 3e-4 --seed 0
echo "training and evaluation: $(( $(date +%s) - start )) s"
mkdir -p "$out"
cp "$work/run/metrics.json" "$work/run/confusion_matrix.png" "$out/"
# The check itself: the classes are balanced (50 per type), so the majority class is chance level, 1/28.
python - "$out/metrics.json" <<'PY'
import json, sys
metrics = json.load(open(sys.argv[1]))
model, majority = metrics["model"], metrics["majority_class_baseline"]
print(f"test accuracy {model['accuracy']:.3f} vs majority class {majority['accuracy']:.3f}")
if not (model["accuracy"] > majority["accuracy"] and model["macro_f1"] > majority["macro_f1"]):
    sys.exit("the from-scratch model did not beat the majority class")
PY

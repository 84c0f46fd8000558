#!/usr/bin/env bash
# Reproduce docs/results.md's "How base.yaml was chosen": train each recipe for each seed and print its
# best validation accuracy. The test set is not touched. About 15 s a run on 2 cores.
#   scripts/compare_recipes.sh [DATA_ROOT] [OUT_DIR]
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
data_root=${1:-$repo/../shared/data/mnist}
out=${2:-$repo/runs/recipes}
# MNIST_TRAIN, else the repository's venv (make train), else mnist-train on the PATH.
train=${MNIST_TRAIN:-$repo/.venv/bin/mnist-train}
if [[ ! -x $train ]]; then
  train=$(command -v mnist-train || true)
fi
if [[ -z $train ]]; then
  echo "compare_recipes.sh: error: no mnist-train found; run 'make train' first, or set" \
       "MNIST_TRAIN=/path/to/mnist-train" >&2
  exit 2
fi
python=$(dirname "$train")/python
[[ -x $python ]] || python=python3

declare -A recipes=(
  [adam-b64]="--set train.optimizer=adam --set train.lr=0.001 --set train.batch_size=64 --set train.weight_decay=0 --set train.warmup_epochs=0"
  [adam-b256]="--set train.optimizer=adam --set train.lr=0.004 --set train.batch_size=256 --set train.weight_decay=0 --set train.warmup_epochs=0"
  [adam-b256-wd]="--set train.optimizer=adam --set train.lr=0.004 --set train.batch_size=256 --set train.weight_decay=0.00005 --set train.warmup_epochs=0"
  [nag-b256-wd]=""  # configs/base.yaml as it is
)

for name in adam-b64 adam-b256 adam-b256-wd nag-b256-wd; do
  for seed in 42 1 2; do
    # shellcheck disable=SC2086  # the recipe is a list of words
    "$train" --config "$repo/configs/base.yaml" --data-root "$data_root" --out "$out/$name-$seed" \
      --force --quiet --set seed="$seed" ${recipes[$name]} >/dev/null
    best=$("$python" -c 'import json,sys; print(max(json.loads(l)["val_accuracy"] for l in open(sys.argv[1])))' \
      "$out/$name-$seed/metrics.jsonl")
    printf '%-14s seed %-3s best validation accuracy %s\n' "$name" "$seed" "$best"
  done
done

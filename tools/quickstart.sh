#!/usr/bin/env bash
# The quickstart: installs what is missing, builds fjord, generates the demo
# base model and instruction data (tools/demo), and LoRA-fine-tunes the demo
# model on CPU (or the GPU if there is one), printing progress, where the PEFT
# adapter is and how much the validation loss fell.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
bash tools/bootstrap.sh
cache=${FJORD_BAZEL_CACHE:-$HOME/.cache/fjord/bazel-disk}
mkdir -p "$cache"
bazel build --disk_cache="$cache" //lora/cli:fjord-train //tools/demo:demo
out=${FJORD_QUICKSTART_OUT:-$HOME/.cache/fjord/quickstart}
demo=$root/bazel-bin/tools/demo/out
exec "$root/bazel-bin/lora/cli/fjord-train" --config "$root/configs/quickstart.yaml" \
  --set "model.path=$demo/model" --set "data.train=$demo/data/train.jsonl" \
  --set "data.validation=$demo/data/valid.jsonl" --set "eval.heldout=$demo/data/heldout.jsonl" \
  --set "output.dir=$out"

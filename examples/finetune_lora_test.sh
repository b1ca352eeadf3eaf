#!/usr/bin/env bash
# Runs examples/finetune_lora on the demo model for a few steps and checks
# that the eval loss fell, that the PEFT adapter it wrote loads onto the
# model, and that the merged checkpoint exists.
#
#   finetune_lora_test.sh FINETUNE_LORA ADAPTER_TOOL DEMO_DIR
# (Bazel passes them; CMake's ctest too, with DEMO_DIR the demo's output.)
set -euo pipefail
bin=$1 adapter_tool=$2 demo=$3
out=$(mktemp -d "${TEST_TMPDIR:-/tmp}/finetune_lora.XXXXXX")
trap 'rm -rf "$out"' EXIT
# One intra-op thread: tests share the machine's cores, and LibTorch's
# spin-waiting OpenMP threads slow down badly when oversubscribed.
export OMP_NUM_THREADS=1

"$bin" "$demo/model" "$demo/data/train.jsonl" "$demo/data/valid.jsonl" "$out" 12 | tee "$out/log"

grep -q '^step 12/12 ' "$out/log" || { echo "FAIL: no step 12/12 line"; exit 1; }
read -r before after < <(awk '/^eval loss/ {print $3, $5}' "$out/log")
awk -v a="$before" -v b="$after" 'BEGIN { exit !(b > 0 && b < a) }' ||
  { echo "FAIL: eval loss did not fall ($before -> $after)"; exit 1; }
for f in adapter/adapter_config.json adapter/adapter_model.safetensors merged/config.json; do
  [ -s "$out/$f" ] || { echo "FAIL: $out/$f missing"; exit 1; }
done
"$adapter_tool" check --model "$demo/model" --adapter "$out/adapter" | tee "$out/check"
grep -q '^ok: ' "$out/check" || { echo "FAIL: the adapter does not load"; exit 1; }
echo "PASS: eval loss $before -> $after; adapter loads"

#!/usr/bin/env bash
# Runs examples/multi_lora on the demo model for a few steps and checks that
# every adapter's training loss fell (mean of its last 5 steps below 0.8 of
# its first 5) and that each PEFT adapter it wrote loads onto the model.
#
#   multi_lora_test.sh MULTI_LORA ADAPTER_TOOL DEMO_DIR
set -euo pipefail
bin=$1 adapter_tool=$2 demo=$3
out=$(mktemp -d "${TEST_TMPDIR:-/tmp}/multi_lora.XXXXXX")
trap 'rm -rf "$out"' EXIT
export OMP_NUM_THREADS=1  # tests share the machine's cores

"$bin" "$demo/model" "$demo/data/train.jsonl" "$out" 30 | tee "$out/log"

grep -q '^step 30/30 ' "$out/log" || { echo "FAIL: no step 30/30 line"; exit 1; }
for k in 0 1 2; do
  awk -v col=$((4 + k)) -v k=$k '/^step / { loss[++n] = $col }
       END {
         if (n < 10) exit 1
         for (i = 1; i <= 5; ++i) { first += loss[i]; last += loss[n - 5 + i] }
         printf "adapter %d: mean loss of the first 5 steps %.4f, of the last 5 %.4f\n", k, first / 5, last / 5
         exit !(last < 0.8 * first)
       }' "$out/log" || { echo "FAIL: adapter $k: the loss did not fall by 20%"; exit 1; }
  "$adapter_tool" check --model "$demo/model" --adapter "$out/adapter-$k" | tee "$out/check-$k"
  grep -q '^ok: ' "$out/check-$k" || { echo "FAIL: adapter $k does not load"; exit 1; }
done
echo "PASS: every adapter's loss fell; every adapter loads"

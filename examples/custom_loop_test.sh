#!/usr/bin/env bash
# Runs examples/custom_loop on the demo model for a few steps and checks that
# the training loss fell (mean of the last 5 steps below the mean of the first
# 5) and that the PEFT adapter it wrote loads onto the model.
#
#   custom_loop_test.sh CUSTOM_LOOP ADAPTER_TOOL DEMO_DIR
# (Bazel passes them; CMake's ctest too, with DEMO_DIR the demo's output.)
set -euo pipefail
bin=$1 adapter_tool=$2 demo=$3
out=$(mktemp -d "${TEST_TMPDIR:-/tmp}/custom_loop.XXXXXX")
trap 'rm -rf "$out"' EXIT
# One intra-op thread: tests share the machine's cores, and LibTorch's
# spin-waiting OpenMP threads slow down badly when oversubscribed.
export OMP_NUM_THREADS=1

"$bin" "$demo/model" "$demo/data/train.jsonl" "$out" 30 | tee "$out/log"

grep -q '^step 30/30 ' "$out/log" || { echo "FAIL: no step 30/30 line"; exit 1; }
awk '/^step / { loss[++n] = $4 }
     END {
       if (n < 10) exit 1
       for (i = 1; i <= 5; ++i) { first += loss[i]; last += loss[n - 5 + i] }
       printf "mean loss of the first 5 steps %.4f, of the last 5 %.4f\n", first / 5, last / 5
       exit !(last < 0.8 * first)
     }' "$out/log" || { echo "FAIL: the loss did not fall by 20%"; exit 1; }
for f in adapter/adapter_config.json adapter/adapter_model.safetensors; do
  [ -s "$out/$f" ] || { echo "FAIL: $out/$f missing"; exit 1; }
done
"$adapter_tool" check --model "$demo/model" --adapter "$out/adapter" | tee "$out/check"
grep -q '^ok: ' "$out/check" || { echo "FAIL: the adapter does not load"; exit 1; }
echo "PASS: the loss fell; adapter loads"

#!/usr/bin/env bash
# End-to-end GPU training benchmark (issue: fused kernels): fjord vs
# transformers + peft (eager) at the Llama-3.2-1B and Llama-3.1-8B shapes,
# bf16, LoRA r=16 on all linear layers, packed rows of 2048 tokens, same
# batch, in one run: tokens/s, peak GPU memory and MFU (train_bench.py's
# docstring says how it is counted).
#   bash tools/bench/e2e_gpu.sh          # after tools/gpu_check.sh built build/cmake
# Writes ${OUT:-build/gpu-check}/e2e.json.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
out=${OUT:-$root/build/gpu-check}
mkdir -p "$out"
export FJORD_BIN_DIR=${FJORD_BIN_DIR:-$root/build/cmake}
exec "${PYTHON:-python3}" "$root/tools/bench/train_bench.py" --preset gpu-1b --preset gpu-8b \
  --json "$out/e2e.json"

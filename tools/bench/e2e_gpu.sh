#!/usr/bin/env bash
# End-to-end GPU training benchmark (issue 23): fjord against transformers +
# peft (SDPA, the baseline), transformers + Liger Kernel + peft and Unsloth,
# same model shape, data and settings, in one run (tools/bench/train_bench.py's
# docstring says how each number is counted, docs/benchmarks.md what ran).
#
#   bash tools/bench/e2e_gpu.sh              # the default cut: Llama-3.1-8B's shape,
#                                            # checkpointing on, the four sides (packed
#                                            # rows: transformers SDPA and fjord)
#   bash tools/bench/e2e_gpu.sh full         # 1B, 8B and Qwen2.5-7B shapes, checkpointing
#                                            # off and on, every side with eager (packed
#                                            # rows: transformers SDPA, fjord, Liger)
#   bash tools/bench/e2e_gpu.sh gpu-8b       # the same for one shape (gpu-1b, gpu-8b, gpu-qwen7b)
#   bash tools/bench/e2e_gpu.sh [PLAN] ARGS  # more train_bench.py flags, e.g.
#                                            # --max-batch 64 or --estimate (prints the plan's
#                                            # estimated time, runs nothing)
#
# After tools/gpu_check.sh built build/cmake. Wheels that tools/fetch_gpu_wheels.sh
# put in .whl/ (Liger, Unsloth, pinned peft) are installed first, without an
# index, into /tmp/fjord-site (FJORD_E2E_INSTALL=0 skips that). Writes
# ${OUT:-build/gpu-check}/e2e.json and e2e.md (the tables, for the docs).
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
out=${OUT:-$root/build/gpu-check}
mkdir -p "$out"
py=${PYTHON:-python3}
export FJORD_BIN_DIR=${FJORD_BIN_DIR:-$root/build/cmake}

case "${1:-}" in
  full) shift; plan=(--preset gpu-1b --preset gpu-8b --preset gpu-qwen7b --checkpointing both
                    --packed-peers "hf-sdpa,fjord,hf-liger") ;;
  gpu-*) plan=(--preset "$1" --checkpointing both --packed-peers "hf-sdpa,fjord,hf-liger"); shift ;;
  *) plan=(--preset gpu-8b --checkpointing on --peers "hf-sdpa,fjord,hf-liger,unsloth"
           --packed-peers "hf-sdpa,fjord") ;;
esac
# The second table: rows of 2048 tokens packing 4 sequences of 512.
plan+=(--packed 4)
# A side that hangs (waiting on a network it cannot reach, say) costs this much.
plan+=(--child-timeout 300)

if [ "${FJORD_E2E_INSTALL:-1}" = 1 ] && ls "$root"/.whl/*.whl >/dev/null 2>&1; then
  site=/tmp/fjord-site
  start=$(date +%s)
  wheels=("$root"/.whl/*.whl)
  "$py" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$site" \
    "${wheels[@]}"
  export PYTHONPATH=$site${PYTHONPATH:+:$PYTHONPATH}
  echo "e2e: installed ${#wheels[@]} wheels from .whl/ into $site in $(( $(date +%s) - start )) s"
fi

exec "$py" "$root/tools/bench/train_bench.py" "${plan[@]}" "$@" \
  --json "$out/e2e.json" --markdown "$out/e2e.md"

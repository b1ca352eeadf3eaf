#!/usr/bin/env bash
# Memory per rank of a frozen base sharded across data-parallel ranks
# (model.shard_base) against the whole base on each rank: a random Llama of
# 155.7 M parameters (hidden 1024, 8 layers, intermediate 2816, 16 heads /
# 4 KV heads, vocab 32000, untied) with the demo's tokenizer and data, LoRA
# r 16 on all linear layers, fp32 on CPU, 2 ranks (--nproc-per-node 2, one
# thread each), STEPS steps of one 256-token row per rank. Prints per run
# the base each rank holds (the start event), rank 0's peak RSS (the last
# step event), the bytes rank 0 received in the base's all-gathers in the
# last step, tokens/s and the last loss. A program, not a test.
#
# The fp32 pair runs twice: with glibc's malloc as it comes, and with
# MALLOC_MMAP_THRESHOLD_=65536, under which every freed block of 64 KiB or
# more goes back to the system at once, so that the peak RSS is the most
# memory the run had in use. As it comes, glibc's threshold for that rises
# with the sizes freed (up to 32 MiB), and its heap then keeps what a run
# freed: a run's peak RSS says as much about its allocation pattern as about
# its use (the all-gathers free a layer's weights each time). A third pair,
# under the same threshold, holds the decoder's linear weights in 4 bits
# (model.quantization nf4), whole on each rank and sharded.
#
#   bazel build //lora/cli:fjord-train //tools/demo:demo
#   bash tools/bench/shard_bench.sh [STEPS]        (default 4)
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$root"
steps=${1:-4}
train=${FJORD_BIN_DIR:-bazel-bin}/lora/cli/fjord-train
demo=${FJORD_BIN_DIR:-bazel-bin}/tools/demo/out
[ -x "$train" ] && [ -d "$demo" ] || { echo "build first: bazel build //lora/cli:fjord-train //tools/demo:demo" >&2; exit 1; }
python=${FJORD_PYTHON:-${FJORD_VENV:-$HOME/.cache/fjord/venv}/bin/python}
work=$(mktemp -d "${TMPDIR:-/tmp}/shard-bench.XXXXXX")
trap 'rm -rf "$work"' EXIT

"$python" - "$work/model" "$demo/model" <<'PY' 2>/dev/null
import shutil, sys, torch
from transformers import LlamaConfig, LlamaForCausalLM
cfg = LlamaConfig(vocab_size=32000, hidden_size=1024, intermediate_size=2816, num_hidden_layers=8,
                  num_attention_heads=16, num_key_value_heads=4, max_position_embeddings=2048,
                  tie_word_embeddings=False)
torch.manual_seed(0)
LlamaForCausalLM(cfg).to(torch.bfloat16).save_pretrained(sys.argv[1], safe_serialization=True)
for f in ("tokenizer.json", "tokenizer_config.json"):
    try:
        shutil.copy(f"{sys.argv[2]}/{f}", f"{sys.argv[1]}/{f}")
    except FileNotFoundError:
        pass
PY

runs="default-none-false default-none-true live-none-false live-none-true live-nf4-false live-nf4-true"
for run in $runs; do
  IFS=- read -r malloc quant shard <<< "$run"
  env $([ "$malloc" = live ] && echo MALLOC_MMAP_THRESHOLD_=65536) OMP_NUM_THREADS=1 \
    "$train" --config configs/quickstart.yaml --progress none --nproc-per-node 2 \
    --set model.path="$work/model" --set model.shard_base="$shard" \
    --set model.quantization="$quant" --set output.dir="$work/out-$run" \
    --set training.max_steps="$steps" --set training.threads=1 --set eval.every_steps=0 \
    --set checkpoint.every_steps=0 --set data.validation= --set eval.heldout= \
    --events "$work/$run.events" 2> "$work/$run.log" || { cat "$work/$run.log" >&2; exit 1; }
done

"$python" - "$work" $runs <<'PY'
import json, re, sys
work = sys.argv[1]
print(f"{'malloc':8} {'base':18} {'base MB per rank':>16} {'rank 0 peak RSS MB':>18} "
      f"{'gathered MB/step':>16} {'tokens/s':>9} {'last loss':>9}")
for run in sys.argv[2:]:
    malloc, quant, shard = run.split("-")
    ev = [json.loads(l) for l in open(f"{work}/{run}.events") if l.strip()]
    start = [e for e in ev if e["type"] == "start"][0]["message"]
    step = [e for e in ev if e["type"] == "step"][-1]
    m = re.search(r"base(?: in nf4)?(?: sharded over the ranks)? \(([\d.]+) MB", start)
    base = float(m.group(1)) if m else 155730944 * 4 / 1e6
    gathered = step.get("base_gather_bytes", 0) / 1e6
    what = ("nf4 " if quant == "nf4" else "fp32 ") + ("sharded" if shard == "true" else "whole on each")
    print(f"{malloc:8} {what:18} {base:16.1f} "
          f"{step['peak_memory_bytes'] / 1e6:18.0f} {gathered:16.1f} "
          f"{step['tokens_per_s']:9.1f} {step['loss']:9.4f}")
PY

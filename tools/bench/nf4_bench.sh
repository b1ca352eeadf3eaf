#!/usr/bin/env bash
# The memory and speed of a 4-bit (NF4) base against the full-precision one:
# a random Llama checkpoint of a mid-size shape (hidden 1024, 8 layers,
# intermediate 2816, 16 heads / 4 KV heads, vocab 32000: 155 M parameters,
# 90 M of them in the decoder's linear layers) saved in bf16, then
# //lora/cli:train_bench on it, LoRA r 16 on all linear layers, with
# --quantization none and nf4, each in its own process, printing per run:
# the base's bytes (4-bit weights as stored), bytes per decoder-linear
# parameter, the process's peak memory right after loading and after the
# training steps (RSS on CPU; the CUDA allocator's peak on a GPU), tokens/s
# and the last loss ("start": the peak before loading: LibTorch itself).
# On CPU the RSS also counts the pages of the checkpoint file that loading
# maps and touches. A program, not a test.
#
#   bazel build //lora/cli:train_bench
#   bash tools/bench/nf4_bench.sh [cpu|cuda] [STEPS]     (default cpu, 3)
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$root"
device=${1:-cpu}
steps=${2:-3}
bench=${FJORD_TRAIN_BENCH:-${FJORD_BIN_DIR:-bazel-bin}/lora/cli/train_bench}  # CMake: build/cmake/train_bench
[ -x "$bench" ] || { echo "build first: bazel build //lora/cli:train_bench" >&2; exit 1; }
python=${FJORD_PYTHON:-${FJORD_VENV:-$HOME/.cache/fjord/venv}/bin/python}
work=$(mktemp -d "${TMPDIR:-/tmp}/nf4-bench.XXXXXX")
trap 'rm -rf "$work"' EXIT

"$python" - "$work/model" <<'PY'
import sys, torch
from transformers import LlamaConfig, LlamaForCausalLM
cfg = LlamaConfig(vocab_size=32000, hidden_size=1024, intermediate_size=2816, num_hidden_layers=8,
                  num_attention_heads=16, num_key_value_heads=4, max_position_embeddings=2048,
                  tie_word_embeddings=False)
torch.manual_seed(0)
m = LlamaForCausalLM(cfg).to(torch.bfloat16)
m.save_pretrained(sys.argv[1], safe_serialization=True)
PY

dtype=float32
[ "$device" = cuda ] && dtype=bfloat16
for q in none nf4; do
  "$bench" --model "$work/model" --device "$device" --dtype "$dtype" --batch 1 --seq 256 --rank 16 \
    --steps "$steps" --warmup 1 --quantization "$q" 2> "$work/$q.log" > "$work/$q.json" \
    || { cat "$work/$q.log" >&2; exit 1; }
done

"$python" - "$work" "$device" <<'PY'
import json, sys
work, device = sys.argv[1], sys.argv[2]
linear = 8 * (1024 * 1024 * 2 + 1024 * 256 * 2 + 3 * 1024 * 2816)  # q, o, k, v, gate, up, down
other = 2 * 32000 * 1024 + 17 * 1024                              # embed, lm_head, norms
r = {q: json.load(open(f"{work}/{q}.json")) for q in ("none", "nf4")}
mem = "RSS" if device == "cpu" else "CUDA peak"
print(f"{'base':6} {'base MB':>8} {'B/linear param':>14} {'start MB':>9} {'load ' + mem + ' MB':>17} "
      f"{'train ' + mem + ' MB':>18} {'tokens/s':>9} {'loss':>7}")
elem = 4 if device == "cpu" else 2  # bytes per element of the run's dtype (fp32 / bf16)
for q, x in r.items():
    # Embeddings, lm_head and norms stay in the run's dtype; the rest is the linear layers.
    per = (x["base_bytes"] - other * elem) / linear
    print(f"{q:6} {x['base_bytes'] / 1e6:8.1f} {per:14.3f} {x['start_peak_bytes'] / 1e6:9.0f} "
          f"{x['load_peak_bytes'] / 1e6:17.0f} "
          f"{x['peak_bytes'] / 1e6:18.0f} {x['tokens_per_s']:9.1f} {x['loss']:7.4f}")
print(f"parameters: {linear + other:,} ({linear:,} in decoder linear layers); "
      f"LoRA parameters: {r['none']['lora_params']:,}")
PY

#!/usr/bin/env bash
# Data-parallel benchmark on CPU: the demo fine-tune (configs/quickstart.yaml)
# for a fixed number of steps with the same global batch (2 micro-batches of
# 256 tokens per step) as
#   1 process  x 2 threads, gradient accumulation 2
#   1 process  x 1 thread,  gradient accumulation 2
#   2 ranks    x 1 thread,  gradient accumulation 1   (--nproc-per-node 2, Gloo on loopback)
#     with the gradients summed in one all-reduce after backward (--bucket-mb 0)
#     and in buckets of 0.1 MB started during backward (--bucket-mb 0.1)
# and prints, for each, the steady training throughput (tokens/s of the last
# step event: steps only, evaluation and checkpoints excluded), the wall time,
# the final loss, and for the ranks the bytes each all-reduces per step (the
# LoRA gradients in fp32 plus two float64 scalars), the buckets, how many
# started during backward, and the milliseconds per step rank 0 waited for
# the sums after its backward; the share of the flat all-reduce's wait that
# the buckets hid behind backward. A program, not a test.
#
#   bazel build //lora/cli:fjord-train //tools/demo:demo
#   bash tools/bench/dp_bench.sh [STEPS]        (default 60)
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$root"
steps=${1:-60}
train=bazel-bin/lora/cli/fjord-train
[ -x "$train" ] || { echo "build first: bazel build //lora/cli:fjord-train //tools/demo:demo" >&2; exit 1; }
work=$(mktemp -d "${TMPDIR:-/tmp}/dp-bench.XXXXXX")
trap 'rm -rf "$work"' EXIT
python=${FJORD_VENV:-$HOME/.cache/fjord/venv}/bin/python

run() {  # name nproc threads accum [bucket-mb]
  local name=$1 nproc=$2 threads=$3 accum=$4 extra=()
  [ "$nproc" -gt 1 ] && extra=(--nproc-per-node "$nproc" --bucket-mb "$5")
  local start=$SECONDS
  OMP_NUM_THREADS=$threads "$train" --config configs/quickstart.yaml --progress none \
    --set output.dir="$work/$name" --set training.max_steps="$steps" \
    --set training.threads="$threads" --set training.gradient_accumulation_steps="$accum" \
    --set eval.every_steps=0 --set checkpoint.every_steps=0 --set data.validation= \
    --set eval.heldout= --events "$work/$name.events" "${extra[@]}" 2> "$work/$name.log" \
    || { cat "$work/$name.log" >&2; exit 1; }
  echo "$name $nproc $threads $accum $((SECONDS - start))" >> "$work/runs"
}

run one-process-2-threads 1 2 2
run one-process-1-thread 1 1 2
run two-ranks-flat 2 1 1 0
run two-ranks-buckets-0.1MB 2 1 1 0.1

"$python" - "$work" <<'EOF'
import json, re, sys
work = sys.argv[1]
print(f"{'run':28} {'ranks':>5} {'threads/rank':>12} {'accum':>5} {'tokens/s':>9} {'wall s':>7} "
      f"{'final loss':>10} {'all-reduce B/step':>17} {'buckets':>7} {'in backward':>11} {'wait ms/step':>12}")
waits = {}
for line in open(f"{work}/runs"):
    name, nproc, threads, accum, wall = line.split()
    ev = [json.loads(l) for l in open(f"{work}/{name}.events") if l.strip()]
    steps = [e for e in ev if e["type"] == "step"]
    start = [e for e in ev if e["type"] == "start"][0]
    params = int(re.search(r"(\d+) trainable parameters", start["message"]).group(1))
    ar = params * 4 + 16 if int(nproc) > 1 else 0
    m = re.search(r"gradient all-reduce: (\d+) bucket\(s\), \d+ bytes per step; (\d+) of (\d+) "
                  r"started during backward; ([\d.]+) ms per step", open(f"{work}/{name}.log").read())
    buckets, started, wait = "-", "-", "-"
    if m:
        buckets, started, wait = m.group(1), f"{m.group(2)}/{m.group(3)}", float(m.group(4))
        waits[name] = wait
    print(f"{name:28} {nproc:>5} {threads:>12} {accum:>5} {steps[-1]['tokens_per_s']:9.0f} {wall:>7} "
          f"{steps[-1]['loss']:10.4f} {ar:17,d} {buckets:>7} {started:>11} {wait if m else '-':>12}")
if waits.get("two-ranks-flat"):
    hidden = 1 - waits["two-ranks-buckets-0.1MB"] / waits["two-ranks-flat"]
    print(f"share of the flat all-reduce's wait hidden behind backward by the buckets: {100 * hidden:.0f}%")
EOF

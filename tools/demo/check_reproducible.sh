#!/usr/bin/env bash
# Checks that the demo (make_demo.py: model, tokenizer, data) comes out the
# same, bit for bit, whatever float kernels the CPU makes PyTorch and MKL pick:
# it generates the demo once per setting below and compares every file's
# SHA-256. Each setting changes the code that runs: ATen's vector width
# (ATEN_CPU_CAPABILITY: scalar/SSE2 "default", AVX2, AVX-512 where the CPU has
# it), MKL's instruction set (MKL_ENABLE_INSTRUCTIONS), oneDNN's
# (DNNL_MAX_CPU_ISA) and the thread count.
#
#   bash tools/demo/check_reproducible.sh [--steps N] [--settings K] [--expect FILE] [--keep DIR]
#     --steps N      pretraining steps (default 500, the real demo: minutes per setting)
#     --settings K   only the first K settings (default all 3)
#     --expect FILE  also compare with the hashes in FILE (sha256sum's format,
#                    paths relative to the output directory)
#     --keep DIR     leave each setting's output under DIR/<n> (default: a temporary directory, removed)
# Exit 0 when every setting (and FILE) agrees; 1 otherwise, with the hashes.
# `bazel test //tools/demo:make_demo_test` runs it with --steps 2 --settings 2.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
python=${FJORD_VENV:-$HOME/.cache/fjord/venv}/bin/python
steps=500 n_settings=3 expect="" keep=""
while [ $# -gt 0 ]; do
  case $1 in
    --steps) steps=$2; shift 2 ;;
    --settings) n_settings=$2; shift 2 ;;
    --expect) expect=$2; shift 2 ;;
    --keep) keep=$2; shift 2 ;;
    *) echo "usage: $0 [--steps N] [--settings K] [--expect FILE] [--keep DIR]" >&2; exit 2 ;;
  esac
done
[ -x "$python" ] || { echo "no $python: run tools/bootstrap.sh (or set FJORD_VENV)" >&2; exit 1; }

settings=(
  "ATEN_CPU_CAPABILITY=default MKL_ENABLE_INSTRUCTIONS=SSE4_2 DNNL_MAX_CPU_ISA=SSE41 FJORD_DEMO_THREADS=1"
  "ATEN_CPU_CAPABILITY=avx2 MKL_ENABLE_INSTRUCTIONS=AVX2 DNNL_MAX_CPU_ISA=AVX2 FJORD_DEMO_THREADS=2"
  "ATEN_CPU_CAPABILITY=avx512 MKL_ENABLE_INSTRUCTIONS=AVX512 DNNL_MAX_CPU_ISA=AVX512_CORE FJORD_DEMO_THREADS=1"
)
work=${keep:-$(mktemp -d "${TEST_TMPDIR:-${TMPDIR:-/tmp}}/demo-repro.XXXXXX")}
[ -n "$keep" ] || trap 'rm -rf "$work"' EXIT
mkdir -p "$work"

hashes() { (cd "$1" && find . -type f | LC_ALL=C sort | xargs sha256sum); }

first=""
status=0
for ((i = 0; i < n_settings && i < ${#settings[@]}; i++)); do
  out=$work/$i
  rm -rf "$out"
  start=$SECONDS
  # shellcheck disable=SC2086
  if ! env ${settings[$i]} FJORD_DEMO_PRETRAIN_STEPS="$steps" "$python" "$here/make_demo.py" "$out" \
      > "$work/$i.log" 2>&1; then
    cat "$work/$i.log" >&2
    exit 1
  fi
  cap=$(env ${settings[$i]} "$python" -c 'import torch; print(torch.backends.cpu.get_cpu_capability())')
  echo "setting $i: ${settings[$i]} (ATen runs $cap) -- $((SECONDS - start)) s"
  hashes "$out" > "$work/$i.sha256"
  if [ -z "$first" ]; then
    first=$work/$i.sha256
    sed 's/^/  /' "$first"
  elif ! diff -u "$first" "$work/$i.sha256"; then
    echo "setting $i differs from setting 0" >&2
    status=1
  fi
done
if [ -n "$expect" ]; then
  if diff -u "$expect" "$first"; then
    echo "the same as $expect"
  else
    echo "differs from $expect (a CPU whose float results differ, or a changed generator or torch/transformers/tokenizers version: regenerate FILE with --keep and review)" >&2
    status=1
  fi
fi
[ $status = 0 ] && echo "all $i settings agree: $steps pretraining steps"
exit $status

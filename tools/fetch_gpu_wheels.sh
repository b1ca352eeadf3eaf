#!/usr/bin/env bash
# Downloads (here, where PyPI is reachable) the Python wheels the end-to-end
# GPU benchmark's peers need and the GPU machine lacks, into .whl/ (ignored
# by git), for Python 3.12 on manylinux x86_64, each pinned and without its
# dependencies (pip download --no-deps: every one the machine lacks is named
# here). tools/bench/e2e_gpu.sh installs them there with --no-index.
#
#   bash tools/fetch_gpu_wheels.sh        # then carry .whl (and .gpu-deps) with the device call
#
# The GPU machine's image already holds torch 2.11, transformers 5.17.0,
# triton, accelerate, numpy, pandas, pyarrow, xxhash, fsspec, safetensors,
# tokenizers, sentencepiece, protobuf, psutil, tqdm, einops and nvidia-ml-py
# (/work/.library/device/KINDS.md). What is left out on purpose, with why,
# is in docs/benchmarks.md ("Running the GPU checks"): the device call carries
# at most 64 MiB, the working tree and .gpu-deps included.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
git check-ignore -q .whl/x 2>/dev/null || echo '/.whl/' >> .git/info/exclude

wheels=(
  liger-kernel==0.8.5        # transformers + Liger Kernel (needs torch, triton: there)
  peft==0.21.2               # the venv's version, for every transformers side
  unsloth==2026.10.9         # needs torch<2.15 and transformers<=5.17.0: the machine's 2.11 and 5.17.0
  unsloth_zoo==2026.10.9
  trl==1.15.0                # unsloth imports it at import time (<=1.15.0)
  datasets==4.8.5            # unsloth_zoo imports it (<5); trl needs >=4.7
  dill==0.4.1                # datasets' (<0.4.2)
  multiprocess==0.70.19      # datasets' (<0.70.20)
  cut_cross_entropy==25.1.1  # unsloth_zoo's
)
mkdir -p .whl
rm -f .whl/*.whl
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d .whl "${wheels[@]}"

# What the device call would carry: the working tree (tracked and untracked
# files git does not ignore), .gpu-deps and .whl, against its 64 MiB.
sum_bytes() { xargs -0 -r du -cb 2>/dev/null | awk '$2 == "total" {s += $1} END {print s + 0}'; }
tree=$(git ls-files -z --cached --others --exclude-standard | sum_bytes)
whl=$(find .whl -type f -name '*.whl' -print0 | sum_bytes)
debs=0; [ -d .gpu-deps ] && debs=$(find .gpu-deps -type f -print0 | sum_bytes)
find .whl -type f -name '*.whl' -printf '  %10s  %p\n' | sort -k2
awk -v w="$whl" -v t="$tree" -v d="$debs" 'BEGIN {
  m = 1048576
  printf "wheels %.1f MiB, working tree %.1f MiB, .gpu-deps %.1f MiB: %.1f MiB of the 64 MiB a device call carries\n",
    w / m, t / m, d / m, (w + t + d) / m
  if (d == 0) print "(no .gpu-deps yet: tools/fetch_gpu_deps.sh fetches about 8.2 MiB)"
  if (w + t + d > 64 * m) { print "too much to carry: over 64 MiB" > "/dev/stderr"; exit 1 }
}'

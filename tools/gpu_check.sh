#!/usr/bin/env bash
# On a machine with an NVIDIA GPU, cmake/ninja and a CUDA PyTorch (no Bazel
# needed): builds fjord with CMake, runs every test (the GPU tests included)
# and the kernel benchmarks, then the end-to-end training benchmark against
# transformers + peft, Liger Kernel and Unsloth, and writes logs to
# ${OUT:-build/gpu-check}.
#
#   bash tools/gpu_check.sh            # build + tests + kernel benchmarks + end-to-end benchmark
#   FJORD_GPU_E2E=0 bash tools/gpu_check.sh   # without the end-to-end benchmark
#   FJORD_GPU_E2E_ARGS="full" bash tools/gpu_check.sh   # e2e_gpu.sh's arguments (default:
#       its cut for one call: Llama-3.1-8B's shape, checkpointing on, four sides)
#   FJORD_GPU_STEPS="e2e" bash tools/gpu_check.sh   # only some steps, in order,
#       of: build test bench e2e (on the same warm machine, whose build/ stays)
# docs/benchmarks.md ("Running the GPU checks") estimates each step's time.
#
# Debian -dev libraries that the machine lacks are taken from .gpu-deps/
# (made by tools/fetch_gpu_deps.sh on a machine with network) and unpacked
# into a private prefix.
set -uo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
out=${OUT:-$root/build/gpu-check}
mkdir -p "$out"
py=${PYTHON:-python3}

if ls .gpu-deps/*.deb >/dev/null 2>&1; then
  prefix=/tmp/fjord-deps
  mkdir -p $prefix
  for f in .gpu-deps/*.deb; do dpkg -x "$f" $prefix; done
  export FJORD_DEPS_PREFIX=$prefix
  export LD_LIBRARY_PATH=$prefix/usr/lib/x86_64-linux-gnu:${LD_LIBRARY_PATH:-}
  export PKG_CONFIG_PATH=$prefix/usr/lib/x86_64-linux-gnu/pkgconfig:$prefix/usr/share/pkgconfig
  # Debian's .pc files say prefix=/usr; point them at the unpacked tree.
  export PKG_CONFIG_SYSROOT_DIR=$prefix
fi

steps=${FJORD_GPU_STEPS:-build test bench$([ "${FJORD_GPU_E2E:-1}" = 1 ] && echo " e2e")}
has() { [[ " $steps " == *" $1 "* ]]; }
stamp() { echo "[$(date +%T)] $*" | tee -a "$out/steps.log"; }
# The device tool brings back at most 8 files from $OUT: the long logs
# (nvidia-smi, cmake, build, ctest) are written beside it and packed into
# $out/logs.tgz whenever the script ends, so $OUT holds at most six files:
# steps.log, bench.log, e2e.log, e2e.json, e2e.md and logs.tgz.
logs=${FJORD_GPU_LOGS:-$root/build/gpu-check-logs}
mkdir -p "$logs"
trap 'tar czf "$out/logs.tgz" -C "$logs" . 2>/dev/null || true' EXIT

nvidia-smi > "$logs/nvidia-smi.txt" 2>&1 || echo "no nvidia-smi" > "$logs/nvidia-smi.txt"
torch_prefix=$($py -c 'import torch;print(torch.utils.cmake_prefix_path)') || { echo "no torch in $py"; exit 1; }
rc=0
if has build; then
  stamp "build"
  nvcc=$(command -v nvcc || ls /usr/local/cuda/bin/nvcc 2>/dev/null) || { echo "no nvcc on PATH or in /usr/local/cuda/bin"; exit 1; }
  cmake -S . -B build/cmake -G Ninja -DCMAKE_PREFIX_PATH="$torch_prefix" \
    -DCMAKE_CUDA_COMPILER="$nvcc" > "$logs/cmake.log" 2>&1 || { tail -30 "$logs/cmake.log"; exit 1; }
  cmake --build build/cmake -j"$(nproc)" > "$logs/build.log" 2>&1 || { grep -B2 -A12 'error' "$logs/build.log" | head -80; exit 1; }
fi
if has test; then
  # CPU tests in parallel, then the GPU ones one at a time (they share the GPU).
  stamp "test"
  (cd build/cmake && ctest -LE gpu -j"$(nproc)" --output-on-failure > "$logs/ctest-cpu.log" 2>&1) || rc=1
  (cd build/cmake && ctest -L gpu --output-on-failure > "$logs/ctest-gpu.log" 2>&1) || rc=1
  tail -n 4 "$logs/ctest-cpu.log" "$logs/ctest-gpu.log"
fi
if has bench; then
  stamp "bench"
  for b in build/cmake/*_bench; do
    [ "$(basename "$b")" = train_bench ] && continue  # needs a model: the e2e step
    [ -x "$b" ] || continue
    echo "== $b ==" >> "$out/bench.log"
    "$b" >> "$out/bench.log" 2>&1 || rc=1
  done
  # attention_bench ran at Llama-3.2-1B's head dim (64); the 8B's is 128.
  if [ -x build/cmake/attention_bench ]; then
    echo "== build/cmake/attention_bench --head_dim=128 ==" >> "$out/bench.log"
    build/cmake/attention_bench --head_dim=128 >> "$out/bench.log" 2>&1 || rc=1
  fi
  # A 4-bit (NF4) base against the bf16 one: CUDA peak memory and tokens/s.
  echo "== tools/bench/nf4_bench.sh cuda ==" >> "$out/bench.log"
  FJORD_TRAIN_BENCH=build/cmake/train_bench FJORD_PYTHON=$py \
    timeout 300 bash tools/bench/nf4_bench.sh cuda 3 >> "$out/bench.log" 2>&1 || rc=1
  tail -30 "$out/bench.log"
fi
if has e2e; then
  # fjord against transformers + peft (SDPA), + Liger Kernel, and Unsloth, with
  # the wheels of .whl/ (tools/fetch_gpu_wheels.sh) installed without an index:
  # e2e.log, e2e.json and e2e.md (the tables, to paste into docs/benchmarks.md).
  stamp "e2e"
  # shellcheck disable=SC2086  # FJORD_GPU_E2E_ARGS is a list of arguments
  OUT=$out PYTHON=$py bash tools/bench/e2e_gpu.sh ${FJORD_GPU_E2E_ARGS:-} > "$out/e2e.log" 2>&1 || rc=1
  tail -25 "$out/e2e.log"
fi
stamp "done rc=$rc"
exit $rc

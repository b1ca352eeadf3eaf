#!/usr/bin/env bash
# On a machine with an NVIDIA GPU, cmake/ninja and a CUDA PyTorch (no Bazel
# needed): builds fjord with CMake, runs every test (the GPU tests included)
# and the kernel benchmarks, and writes logs to ${OUT:-build/gpu-check}.
#
#   bash tools/gpu_check.sh            # build + tests + kernel benchmarks
#   FJORD_GPU_E2E=1 bash tools/gpu_check.sh   # + end-to-end benchmark
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

nvidia-smi > "$out/nvidia-smi.txt" 2>&1 || echo "no nvidia-smi" > "$out/nvidia-smi.txt"
torch_prefix=$($py -c 'import torch;print(torch.utils.cmake_prefix_path)') || { echo "no torch in $py"; exit 1; }
set -o pipefail
cmake -S . -B build/cmake -G Ninja -DCMAKE_PREFIX_PATH="$torch_prefix" \
  -DCMAKE_CUDA_COMPILER=$(command -v nvcc) 2>&1 | tee "$out/cmake.log" | tail -20 || exit 1
cmake --build build/cmake -j"$(nproc)" 2>&1 | tee "$out/build.log" | tail -30 || exit 1
(cd build/cmake && ctest --output-on-failure 2>&1) | tee "$out/ctest.log" | tail -40
test_rc=${PIPESTATUS[0]}
for b in build/cmake/*_bench; do
  [ "$(basename "$b")" = train_bench ] && continue  # needs a model: tools/bench/e2e_gpu.sh
  [ -x "$b" ] || continue
  echo "== $b ==" | tee -a "$out/bench.log"
  "$b" 2>&1 | tee -a "$out/bench.log"
done
if [ "${FJORD_GPU_E2E:-0}" = 1 ] && [ -f tools/bench/e2e_gpu.sh ]; then
  bash tools/bench/e2e_gpu.sh 2>&1 | tee "$out/e2e.log"
fi
exit $test_rc

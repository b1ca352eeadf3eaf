#!/usr/bin/env bash
# On a GPU machine with nvcc, cmake, ninja and a CUDA PyTorch in python3 (no
# Bazel): builds runtime/model (+ io, util, kernels) with gpu_check/CMakeLists.txt
# and runs model_test (CPU) and model_gpu_test. Abseil and GoogleTest come
# from .gpu-deps/kernels/*.deb (see runtime/kernels/gpu_check/run.sh);
# nlohmann/json from the system or from .gpu-deps/model/include (copy
# /usr/include/nlohmann there on a machine that has it).
# Logs go to ${OUT:-build/model-gpu/logs}.
#
#   bash runtime/model/gpu_check/run.sh
set -uo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../../.." && pwd)
cd "$root"
out=${OUT:-$root/build/model-gpu/logs}
mkdir -p "$out"
deps=/tmp/fjord-model-deps
mkdir -p $deps
for f in .gpu-deps/kernels/*.deb; do dpkg -x "$f" $deps || exit 1; done
export LD_LIBRARY_PATH=$deps/usr/lib/x86_64-linux-gnu:${LD_LIBRARY_PATH:-}
json_inc=/usr/include
[ -f /usr/include/nlohmann/json.hpp ] || json_inc=$root/.gpu-deps/model/include

{ nvidia-smi; nvcc --version; python3 -c 'import torch; print("torch", torch.__version__, torch.version.cuda)'; } \
  > "$out/build.log" 2>&1
torch_prefix=$(python3 -c 'import torch;print(torch.utils.cmake_prefix_path)') || { echo "no torch in python3"; exit 1; }
build=$root/build/model-gpu
cmake -S runtime/model/gpu_check -B $build -G Ninja -DCMAKE_BUILD_TYPE=Release \
  -DCMAKE_PREFIX_PATH="$torch_prefix" -DCMAKE_CUDA_ARCHITECTURES="${FJORD_CUDA_ARCHS:-90}" \
  -DTORCH_CUDA_ARCH_LIST="${FJORD_TORCH_ARCHS:-9.0}" -DCMAKE_CUDA_COMPILER="$(command -v nvcc)" \
  -DFJORD_DEPS_PREFIX=$deps -DFJORD_JSON_INCLUDE=$json_inc >> "$out/build.log" 2>&1 \
  || { tail -40 "$out/build.log"; exit 1; }
cmake --build $build -j"$(nproc)" >> "$out/build.log" 2>&1 || { grep -B5 -A20 -m5 "error" "$out/build.log" | head -120; exit 1; }
echo "build ok"

rc=0
for t in model_test model_gpu_test; do
  $build/$t ${FJORD_GTEST_ARGS:-} > "$out/$t.log" 2>&1
  r=$?
  echo "$t: rc=$r $(grep -E '^\[  (PASSED|FAILED|SKIPPED) ' "$out/$t.log" | tr '\n' ' ')"
  [ $r -ne 0 ] && { rc=1; grep -B2 -A12 -E "Failure|FAILED  \]" "$out/$t.log" | head -80; }
done
grep -E "self-test|passed|disabled|family|packed vs|1B shape" "$out/model_gpu_test.log"
exit $rc

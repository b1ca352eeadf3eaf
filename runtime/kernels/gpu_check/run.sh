#!/usr/bin/env bash
# On a GPU machine with nvcc, cmake, ninja and a CUDA PyTorch in python3 (no
# Bazel): builds runtime/kernels + lora/kernels with gpu_check/CMakeLists.txt,
# runs their CPU and GPU tests, then the benchmarks. Debian's Abseil and
# GoogleTest come from .gpu-deps/kernels/*.deb (fetch them where Debian is
# reachable: `apt-get download libabsl-dev libabsl20220623 googletest`).
# Logs go to ${OUT:-build/kernels-gpu/logs} (8 files: build, 5 tests, 2 benchmarks).
#
#   bash runtime/kernels/gpu_check/run.sh            # build, tests, benchmarks
#   FJORD_SKIP_BENCH=1 bash runtime/kernels/gpu_check/run.sh
#   FJORD_SANITIZE=1 ...                               # + compute-sanitizer runs
#   FJORD_CUDA_ARCHS="80;90" ...                       # default: 90
set -uo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../../.." && pwd)
cd "$root"
out=${OUT:-$root/build/kernels-gpu/logs}
mkdir -p "$out"
deps=/tmp/fjord-kernel-deps
mkdir -p $deps
for f in .gpu-deps/kernels/*.deb; do dpkg -x "$f" $deps || exit 1; done
export LD_LIBRARY_PATH=$deps/usr/lib/x86_64-linux-gnu:${LD_LIBRARY_PATH:-}

{ nvidia-smi; nvcc --version; python3 -c 'import torch; print("torch", torch.__version__, torch.version.cuda)'; } \
  > "$out/build.log" 2>&1
torch_prefix=$(python3 -c 'import torch;print(torch.utils.cmake_prefix_path)') || { echo "no torch in python3"; exit 1; }
build=$root/build/kernels-gpu
cmake -S runtime/kernels/gpu_check -B $build -G Ninja -DCMAKE_BUILD_TYPE=Release \
  -DCMAKE_PREFIX_PATH="$torch_prefix" -DCMAKE_CUDA_ARCHITECTURES="${FJORD_CUDA_ARCHS:-90}" \
  -DTORCH_CUDA_ARCH_LIST="${FJORD_TORCH_ARCHS:-9.0}" -DCMAKE_CUDA_COMPILER="$(command -v nvcc)" -DFJORD_DEPS_PREFIX=$deps >> "$out/build.log" 2>&1 \
  || { tail -40 "$out/build.log"; exit 1; }
cmake --build $build -j"$(nproc)" >> "$out/build.log" 2>&1 || { grep -B5 -A20 -m5 "error" "$out/build.log" | head -120; exit 1; }
echo "build ok"

rc=0
for t in reference_test self_test_test lora_ops_test kernels_gpu_test lora_kernels_gpu_test; do
  $build/$t ${FJORD_GTEST_ARGS:-} > "$out/$t.log" 2>&1
  r=$?
  echo "$t: rc=$r $(grep -E '^\[  (PASSED|FAILED) ' "$out/$t.log" | tr '\n' ' ')"
  [ $r -ne 0 ] && { rc=1; grep -B2 -A12 -E "Failure|FAILED  \]" "$out/$t.log" | head -80; }
done
if [ "${FJORD_SANITIZE:-0}" = 1 ]; then
  # compute-sanitizer over the GPU tests: memcheck on all, racecheck and
  # synccheck on the kernels with shared memory and barriers. Appended to
  # the tests' logs.
  for t in kernels_gpu_test lora_kernels_gpu_test; do
    compute-sanitizer --tool memcheck --error-exitcode 9 $build/$t >> "$out/$t.log" 2>&1
    r=$?; echo "memcheck $t: rc=$r $(grep -m1 'ERROR SUMMARY' "$out/$t.log")"; [ $r -ne 0 ] && rc=1
  done
  for tool in racecheck synccheck; do
    compute-sanitizer --tool $tool --error-exitcode 9 $build/kernels_gpu_test \
      --gtest_filter='*RmsNormMatches*:*RmsNormLaunchers*:*CrossEntropyRows*' \
      >> "$out/kernels_gpu_test.log" 2>&1
    r=$?; echo "$tool kernels_gpu_test (RMSNorm, CE rows): rc=$r"; [ $r -ne 0 ] && rc=1
  done
fi
if [ "${FJORD_SKIP_BENCH:-0}" != 1 ]; then
  $build/kernel_bench ${FJORD_BENCH_ARGS:-} > "$out/kernel_bench.log" 2>&1 || rc=1
  $build/lora_kernel_bench ${FJORD_BENCH_ARGS:-} > "$out/lora_kernel_bench.log" 2>&1 || rc=1
  cat "$out/kernel_bench.log" "$out/lora_kernel_bench.log"
fi
exit $rc

# runtime/kernels for CMake builds: include() this file, then compile the
# lists (paths relative to the repository root). Lists are appended to, so
# lora/kernels/sources.cmake can be included after it.
#
#   FJORD_KERNEL_CU_SOURCES   .cu files (nvcc; CUDA and plain C++ headers only)
#   FJORD_KERNEL_CC_SOURCES   library .cc files (g++; LibTorch)
#   FJORD_KERNEL_CPU_TESTS    GoogleTest files that run anywhere
#   FJORD_KERNEL_GPU_TESTS    GoogleTest files that need a GPU (skip without)
#   FJORD_KERNEL_BENCH        benchmark programs (exit 1 without a GPU)
#   FJORD_KERNEL_BENCH_SOURCES  support .cc for the benchmarks
#
# Definitions the library and its users need when the .cu files are built:
#   FJORD_HAVE_CUDA=1        a CUDA toolkit compiled the kernels
#   FJORD_TORCH_HAS_CUDA=1   LibTorch has its CUDA backend (libtorch_cuda)
# Without both, the fused paths compile out and the references run everywhere.
# The .cu files need nvcc's --expt-relaxed-constexpr; link CUDA::cudart and
# CUDA::cublas (the same CUDA major version as LibTorch's).
list(APPEND FJORD_KERNEL_CU_SOURCES
  runtime/kernels/cross_entropy.cu
  runtime/kernels/gemm.cu
  runtime/kernels/nf4.cu
  runtime/kernels/nf4_gemm.cu
  runtime/kernels/rmsnorm.cu
  runtime/kernels/rope.cu
  runtime/kernels/glu.cu
)
list(APPEND FJORD_KERNEL_CC_SOURCES
  runtime/kernels/compare.cc
  runtime/kernels/dispatch.cc
  runtime/kernels/fused_ops.cc
  runtime/kernels/kernel_registry.cc
  runtime/kernels/reference.cc
  runtime/kernels/self_test.cc
)
list(APPEND FJORD_KERNEL_CPU_TESTS
  runtime/kernels/reference_test.cc
  runtime/kernels/self_test_test.cc
)
list(APPEND FJORD_KERNEL_GPU_TESTS
  runtime/kernels/kernels_gpu_test.cc
)
list(APPEND FJORD_KERNEL_BENCH
  runtime/kernels/kernel_bench.cc
)
list(APPEND FJORD_KERNEL_BENCH_SOURCES
  runtime/kernels/bench_util.cc
)

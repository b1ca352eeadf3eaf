# lora/kernels for CMake builds; same variables as
# runtime/kernels/sources.cmake (include that one first: lists are appended).
list(APPEND FJORD_KERNEL_CU_SOURCES
  lora/kernels/lora_dropout.cu
)
list(APPEND FJORD_KERNEL_CC_SOURCES
  lora/kernels/lora_fused.cc
  lora/kernels/lora_ops.cc
)
list(APPEND FJORD_KERNEL_CPU_TESTS
  lora/kernels/lora_ops_test.cc
)
list(APPEND FJORD_KERNEL_GPU_TESTS
  lora/kernels/lora_kernels_gpu_test.cc
)
list(APPEND FJORD_KERNEL_BENCH
  lora/kernels/lora_kernel_bench.cc
)

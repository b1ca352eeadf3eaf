// The process-wide table of fused kernels: each one's self-test and its
// health (untested, passed, disabled). runtime/kernels registers RMSNorm,
// RoPE, SwiGLU, linear+cross-entropy, NF4 dequantization, the fused NF4
// linear forward, GeGLU and Gemma's RMSNorm; lora/kernels registers its LoRA kernels.
// RunKernelSelfTest (self_test.h) runs every registered test; the dispatchers (ops.h, lora_ops.h)
// read the health through FusedAllowed (fused_policy.h).
//
// No LibTorch here. All functions are thread-safe.
#ifndef FJORD_RUNTIME_KERNELS_KERNEL_REGISTRY_H_
#define FJORD_RUNTIME_KERNELS_KERNEL_REGISTRY_H_

#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"

namespace fjord::kernels {

// Kernel names used by runtime/kernels.
inline constexpr char kRmsNormKernel[] = "rms_norm";
inline constexpr char kRopeKernel[] = "rope";
inline constexpr char kSwiGluKernel[] = "swiglu";
inline constexpr char kGeGluKernel[] = "geglu";
inline constexpr char kGemmaRmsNormKernel[] = "gemma_rms_norm";
inline constexpr char kLinearCrossEntropyKernel[] = "linear_cross_entropy";
inline constexpr char kNf4DequantizeKernel[] = "nf4_dequantize";
// Self-tested and reported only: no dispatcher reads its health yet (fused.h
// Nf4LinearForward is for the benchmark and tests until measured).
inline constexpr char kNf4LinearForwardKernel[] = "nf4_linear_forward";

enum class KernelHealth {
  kUntested,  // not self-tested in this process (the default)
  kPassed,    // matched its reference in the self-test
  kDisabled,  // failed its self-test (or disabled by hand): references only
};

// Runs the fused kernel on a small random case on the current CUDA device and
// compares forward and gradients with its reference. Returns OK on a match,
// else an error naming the tensor and the worst element. May throw.
using KernelSelfTest = std::function<absl::Status()>;

// Adds `name` with its self-test, or replaces the test of a name already
// registered. Registration order is the order RunKernelSelfTest runs them.
// Returns true, so it can initialise a static:
//   static const bool registered = RegisterKernel("lora_linear", &Test);
bool RegisterKernel(std::string name, KernelSelfTest test);

// Registered names, in registration order.
std::vector<std::string> RegisteredKernels();

// The self-test of `name`, or an empty function when not registered.
KernelSelfTest GetKernelSelfTest(std::string_view name);

// Health of `name`; kUntested for names never registered or set.
KernelHealth GetKernelHealth(std::string_view name);
void SetKernelHealth(std::string_view name, KernelHealth health);

// Resets every kernel to kUntested (tests).
void ResetKernelHealth();

// "untested", "passed" or "disabled".
const char* KernelHealthName(KernelHealth health);

}  // namespace fjord::kernels

#endif  // FJORD_RUNTIME_KERNELS_KERNEL_REGISTRY_H_

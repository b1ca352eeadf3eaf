// Start-up self-test of the fused CUDA kernels. A training process calls
// RunKernelSelfTest once, before building its model, on the GPU it will use:
// every registered fused kernel (kernel_registry.h: runtime's RMSNorm, RoPE,
// SwiGLU, linear+cross-entropy, and lora/kernels' LoRA kernels when linked)
// runs on a small random case and is compared, forward and gradients, with
// its reference. A kernel that passes is marked kPassed, which
// Backend::kAuto requires before using it; one that fails or throws is
// marked kDisabled, a warning is written to std::cerr, and its reference is
// used from then on.
#ifndef FJORD_RUNTIME_KERNELS_SELF_TEST_H_
#define FJORD_RUNTIME_KERNELS_SELF_TEST_H_

#include <string>

#include "absl/status/status.h"

namespace fjord::kernels {

// Runs the self-test on the current CUDA device. `report` (may be null)
// receives one line per kernel, "<name>: passed" or
// "<name>: disabled (<why>)", or a single line "no CUDA device; references in
// use" (no device visible) / "built without CUDA kernels; references in use".
// Returns OK in all these cases: a failing kernel is not an error for the
// caller, it only falls back to the reference. Returns InternalError when
// the CUDA context itself is broken after a kernel (e.g. an illegal address,
// which poisons every later CUDA call): then every kernel is disabled and
// the process should not train on this GPU. Not for concurrent use with
// other CUDA work (it synchronises the device).
absl::Status RunKernelSelfTest(std::string* report);

}  // namespace fjord::kernels

#endif  // FJORD_RUNTIME_KERNELS_SELF_TEST_H_

// Whether a fused kernel may run, from the process-wide Backend policy
// (ops.h) and the kernel's self-test health (kernel_registry.h). Used by the
// dispatchers of runtime/kernels and lora/kernels; no LibTorch here.
#ifndef FJORD_RUNTIME_KERNELS_FUSED_POLICY_H_
#define FJORD_RUNTIME_KERNELS_FUSED_POLICY_H_

#include <string_view>

namespace fjord::kernels {

// True when this build has the fused kernels and:
//   Backend::kAuto      -> `kernel` passed its self-test in this process;
//   Backend::kFused     -> `kernel` is not disabled (untested is allowed);
//   Backend::kReference -> never.
// The caller still checks the device and dtypes (XSupported). Thread-safe.
bool FusedAllowed(std::string_view kernel);

}  // namespace fjord::kernels

#endif  // FJORD_RUNTIME_KERNELS_FUSED_POLICY_H_

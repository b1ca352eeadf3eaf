// Elementwise comparison of a kernel's output with its reference, for the
// start-up self-test, the GPU tests and the benchmark's spot checks.
#ifndef FJORD_RUNTIME_KERNELS_COMPARE_H_
#define FJORD_RUNTIME_KERNELS_COMPARE_H_

#include <torch/types.h>

#include <functional>
#include <string>
#include <vector>

#include "absl/status/status.h"

namespace fjord::kernels {

// Tolerance |actual − expected| <= atol + rtol·|expected|, elementwise.
struct Tolerance {
  double atol = 0;
  double rtol = 0;
};

// The tolerance fjord's kernel tests use for outputs of `dtype`:
// fp32 {1e-5, 1e-4}, bf16 {2e-2, 2e-2}, fp16 {2e-3, 2e-3}; other dtypes {0, 0}.
// Quantities summed over many terms (GEMM outputs, weight gradients) are
// compared after the caller scales the tolerance to their magnitude.
Tolerance DefaultTolerance(torch::ScalarType dtype);

// OK when `actual` and `expected` have the same shape and every element is
// within `tol` (both compared in float64 on the CPU; NaN or Inf never passes
// unless both are the same Inf). Otherwise InternalError (shape mismatch:
// InvalidArgument) naming `what`, the worst element's index, both values, the
// bound, and how many elements failed.
absl::Status CheckClose(const torch::Tensor& actual, const torch::Tensor& expected, Tolerance tol,
                        const std::string& what);

// A function of tensors returning tensors (the fused or the reference form
// of one op), for CompareWithReference.
using TensorFn = std::function<std::vector<torch::Tensor>(const std::vector<torch::Tensor>&)>;

// Runs `fused` and `reference` on separate leaf copies of `inputs` (each copy
// requires grad iff the input does), checks every output with `out_tol`,
// then back-propagates the same random output gradients (fp32 randn drawn
// on the CPU from LibTorch's default CPU generator, cast to each output's
// dtype and device) through both and
// checks the gradient of every input that requires grad with `grad_tol`.
// Each tensor's atol is multiplied by max(1, max |reference|): outputs of
// GEMMs and gradients summed over many rows carry rounding errors that scale
// with the magnitude of their terms, not with 1.
// Returns the first mismatch (CheckClose's error, prefixed with `what` and
// "output i" or "grad of input i"), or an InternalError carrying any
// exception either function threw.
absl::Status CompareWithReference(const std::string& what, const std::vector<torch::Tensor>& inputs,
                                  const TensorFn& fused, const TensorFn& reference,
                                  Tolerance out_tol, Tolerance grad_tol);

}  // namespace fjord::kernels

#endif  // FJORD_RUNTIME_KERNELS_COMPARE_H_

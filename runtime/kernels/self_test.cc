// RunKernelSelfTest and the self-tests of runtime/kernels' fused kernels.
//
// Each test runs its kernel in fp32 and bf16 on two small shapes (one taking
// the 16-byte vector path, one the scalar fallback) and compares forward and
// gradients with the reference (compare.h). Inputs are drawn on the CPU with
// a fixed seed; the default CPU generator's state is restored afterwards, so
// the self-test does not change a training run's random stream.
// nf4_dequantize (no gradients) runs in fp32, bf16 and fp16 and must match
// its reference exactly. nf4_linear_forward (bf16 only, no gradients) is
// compared with reference::Nf4Dequantize + matmul in fp64 on ragged shapes
// (TestNf4LinearForward states the tolerance).
#include "runtime/kernels/self_test.h"

#include <ATen/CPUGeneratorImpl.h>
#include <torch/cuda.h>
#include <torch/types.h>
#include <torch/utils.h>

#include <cmath>
#include <exception>
#include <iostream>
#include <mutex>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "runtime/kernels/compare.h"
#include "runtime/kernels/fused.h"
#include "runtime/kernels/kernel_registry.h"
#include "runtime/kernels/ops.h"
#include "runtime/util/status_macros.h"

namespace fjord::kernels {
namespace {

using torch::Tensor;
using Tensors = std::vector<Tensor>;

constexpr uint64_t kSelfTestSeed = 20260417;

// randn·scale drawn on the CPU, moved to the current CUDA device as `dtype`.
Tensor Rand(std::vector<int64_t> sizes, torch::ScalarType dtype, double scale = 1.0) {
  return (torch::randn(sizes, torch::kFloat32) * scale).to(torch::kCUDA, dtype);
}

Tolerance Scale(Tolerance t, double factor) { return {t.atol * factor, t.rtol * factor}; }

const char* DTypeName(torch::ScalarType t) {
  return t == torch::kFloat32 ? "fp32" : t == torch::kBFloat16 ? "bf16" : "fp16";
}

const torch::ScalarType kDTypes[] = {torch::kFloat32, torch::kBFloat16};

absl::Status TestRmsNorm() {
  for (torch::ScalarType dt : kDTypes) {
    for (int64_t cols : {96, 33}) {
      Tensor x = Rand({3, 2, cols}, dt).requires_grad_(true);  // (B, T, C)
      Tensor w = (1.0 + Rand({cols}, torch::kFloat32, 0.1)).to(dt).requires_grad_(true);  // (C)
      const Tolerance tol = DefaultTolerance(dt);
      FJORD_RETURN_IF_ERROR(CompareWithReference(
          absl::StrCat("rms_norm ", DTypeName(dt), " C=", cols), {x, w},
          [](const Tensors& in) { return Tensors{fused::RmsNorm(in[0], in[1], 1e-6)}; },
          [](const Tensors& in) { return Tensors{reference::RmsNorm(in[0], in[1], 1e-6)}; }, tol,
          Scale(tol, 2)));
    }
  }
  return absl::OkStatus();
}

absl::Status TestGemmaRmsNorm() {
  for (torch::ScalarType dt : kDTypes) {
    for (int64_t cols : {96, 33}) {
      Tensor x = Rand({3, 2, cols}, dt).requires_grad_(true);                     // (B, T, C)
      Tensor w = Rand({cols}, torch::kFloat32, 0.3).to(dt).requires_grad_(true);  // (C), ~0
      const Tolerance tol = DefaultTolerance(dt);
      FJORD_RETURN_IF_ERROR(CompareWithReference(
          absl::StrCat("gemma_rms_norm ", DTypeName(dt), " C=", cols), {x, w},
          [](const Tensors& in) { return Tensors{fused::GemmaRmsNorm(in[0], in[1], 1e-6)}; },
          [](const Tensors& in) { return Tensors{reference::GemmaRmsNorm(in[0], in[1], 1e-6)}; },
          tol, Scale(tol, 2)));
    }
  }
  return absl::OkStatus();
}

absl::Status TestRope() {
  for (torch::ScalarType dt : kDTypes) {
    for (int64_t d : {16, 6}) {
      // q as q_proj's output viewed (B, T, Hq, D) then transposed: strided.
      Tensor q = Rand({2, 5, 4, d}, dt).transpose(1, 2).requires_grad_(true);  // (B, Hq, T, D)
      Tensor k = Rand({2, 2, 5, d}, dt).requires_grad_(true);                  // (B, Hk, T, D)
      Tensor cos = Rand({2, 5, d}, torch::kFloat32);                           // (B, T, D)
      Tensor sin = Rand({2, 5, d}, torch::kFloat32);
      const Tolerance tol = DefaultTolerance(dt);
      FJORD_RETURN_IF_ERROR(CompareWithReference(
          absl::StrCat("rope ", DTypeName(dt), " D=", d), {q, k, cos, sin},
          [](const Tensors& in) {
            auto [qo, ko] = fused::ApplyRope(in[0], in[1], in[2], in[3]);
            return Tensors{qo, ko};
          },
          [](const Tensors& in) {
            auto [qo, ko] = reference::ApplyRope(in[0], in[1], in[2], in[3]);
            return Tensors{qo, ko};
          },
          Scale(tol, 2), Scale(tol, 2)));
    }
  }
  return absl::OkStatus();
}

absl::Status TestGeGlu() {
  for (torch::ScalarType dt : kDTypes) {
    for (int64_t n : {64, 13}) {
      Tensor g = Rand({3, n}, dt, 3.0).requires_grad_(true);  // (N, I)
      Tensor u = Rand({3, n}, dt).requires_grad_(true);
      const Tolerance tol = DefaultTolerance(dt);
      FJORD_RETURN_IF_ERROR(CompareWithReference(
          absl::StrCat("geglu ", DTypeName(dt), " I=", n), {g, u},
          [](const Tensors& in) { return Tensors{fused::GeGlu(in[0], in[1])}; },
          [](const Tensors& in) { return Tensors{reference::GeGlu(in[0], in[1])}; }, tol, tol));
    }
  }
  return absl::OkStatus();
}

absl::Status TestSwiGlu() {
  for (torch::ScalarType dt : kDTypes) {
    for (int64_t n : {64, 13}) {
      Tensor g = Rand({3, n}, dt, 2.0).requires_grad_(true);  // (N, I)
      Tensor u = Rand({3, n}, dt).requires_grad_(true);
      const Tolerance tol = DefaultTolerance(dt);
      FJORD_RETURN_IF_ERROR(CompareWithReference(
          absl::StrCat("swiglu ", DTypeName(dt), " I=", n), {g, u},
          [](const Tensors& in) { return Tensors{fused::SwiGlu(in[0], in[1])}; },
          [](const Tensors& in) { return Tensors{reference::SwiGlu(in[0], in[1])}; }, tol, tol));
    }
  }
  return absl::OkStatus();
}

absl::Status TestLinearCrossEntropy() {
  for (torch::ScalarType dt : kDTypes) {
    for (int64_t vocab : {56, 51}) {
      Tensor h = Rand({9, 32}, dt, 0.5).requires_grad_(true);      // (N, C)
      Tensor w = Rand({vocab, 32}, dt, 0.2).requires_grad_(true);  // (V, C)
      Tensor labels = torch::randint(0, vocab, {9}, torch::kInt64);
      labels[2] = -100;
      labels[7] = -100;
      labels = labels.to(torch::kCUDA);
      const Tolerance tol = DefaultTolerance(dt);
      FJORD_RETURN_IF_ERROR(CompareWithReference(
          absl::StrCat("linear_cross_entropy ", DTypeName(dt), " V=", vocab), {h, w, labels},
          [](const Tensors& in) {
            return Tensors{fused::LinearCrossEntropySum(in[0], in[1], in[2], 4)};
          },
          [](const Tensors& in) {
            return Tensors{reference::LinearCrossEntropySum(in[0], in[1], in[2], 4)};
          },
          Scale(tol, 4), Scale(tol, 2)));
    }
  }
  return absl::OkStatus();
}

// Exact (tolerance 0) in every dtype: the kernel and the reference both take
// one fp32 product code[q]·absmax, rounded to nearest even with subnormals
// kept, and cast it to the dtype with round to nearest even.
absl::Status TestNf4Dequantize() {
  struct Case {
    int64_t numel;
    int64_t blocksize;
    int64_t offset;  // bytes before `packed` in its buffer: 1 misaligns it
  };
  // Vector steps and a 1-element tail (odd numel); the element-wise path
  // (misaligned packed); per-byte absmax (blocksize not a multiple of 8).
  const Case cases[] = {{1001, 64, 0}, {397, 64, 1}, {203, 6, 0}};
  for (const Case& c : cases) {
    const int64_t bytes = (c.numel + 1) / 2;
    const int64_t blocks = (c.numel + c.blocksize - 1) / c.blocksize;
    Tensor buffer = torch::randint(0, 256, {c.offset + bytes}, torch::kUInt8).to(torch::kCUDA);
    Tensor packed = buffer.narrow(0, c.offset, bytes);  // (ceil(n / 2))
    Tensor absmax = (torch::rand({blocks}, torch::kFloat32) + 0.01).to(torch::kCUDA);  // (blocks)
    Tensor code = torch::randn({16}, torch::kFloat32).to(torch::kCUDA);                // (16)
    for (torch::ScalarType dt : {torch::kFloat32, torch::kBFloat16, torch::kFloat16}) {
      FJORD_RETURN_IF_ERROR(CheckClose(
          fused::Nf4Dequantize(packed, absmax, code, c.numel, c.blocksize, dt),
          reference::Nf4Dequantize(packed, absmax, code, c.numel, c.blocksize, dt), Tolerance{},
          absl::StrCat("nf4_dequantize ", DTypeName(dt), " n=", c.numel, " blocksize ", c.blocksize,
                       c.offset != 0 ? " misaligned" : "")));
    }
  }
  return absl::OkStatus();
}

// nf4_linear_forward against the exact result of its bf16 operands: W from
// reference::Nf4Dequantize to bf16, x, and the bias rounded to bf16,
// multiplied and summed in fp64. The kernel takes the same products (exact
// in fp32), sums them in fp32 and rounds y to bf16 once, so
// |y − ref| <= atol + rtol·|ref| with
//   rtol = 2^-7: twice bf16's unit roundoff (2^-8), y's one rounding;
//   atol = 2^-16·max over y of Σ_k |x_ik·w_ok|: the fp32 sum's rounding
//     error, which scales with its terms. For random signs it is expected
//     near 2^-24·Σ|terms|, and estimated at ~2^-18.5·Σ|terms| for in = 14336
//     even if the tensor cores truncated every partial sum; a single wrong
//     product of average size (Σ|terms| / in) still exceeds atol for any
//     in < 2^16.
// kernels_gpu_test makes the same comparison.
absl::Status CheckNf4LinearForward(const Tensor& y, const Tensor& x, const Tensor& packed,
                                   const Tensor& absmax, const Tensor& code, int64_t out,
                                   int64_t in, int64_t blocksize, const Tensor& bias,
                                   const std::string& what) {
  torch::NoGradGuard no_grad;
  Tensor w = reference::Nf4Dequantize(packed, absmax, code, out * in, blocksize, torch::kBFloat16)
                 .view({out, in})
                 .to(torch::kFloat64);                   // (out, in)
  Tensor x64 = x.reshape({-1, in}).to(torch::kFloat64);  // (N, in)
  Tensor expected = torch::mm(x64, w.t());               // (N, out)
  if (bias.defined()) expected = expected + bias.to(torch::kBFloat16).to(torch::kFloat64);
  Tensor terms = torch::mm(x64.abs(), w.abs().t());  // (N, out): Σ_k |x_ik·w_ok|
  const double scale = terms.numel() > 0 ? terms.max().item<double>() : 0.0;
  return CheckClose(y.reshape({-1, out}), expected, Tolerance{std::ldexp(scale, -16), 0x1p-7},
                    what);
}

// Ragged N and out (partial (64, 64) tiles, two row tiles), several k-steps
// and a partial last one (in % 32 != 0), one absmax per 8-element chunk
// (blocksize 64, 8) and per byte (blocksize 6); with and without bias.
absl::Status TestNf4LinearForward() {
  struct Case {
    int64_t n, out, in, blocksize;
    bool bias;
  };
  const Case cases[] = {{7, 100, 128, 64, true}, {70, 33, 48, 6, false}, {65, 130, 72, 8, true}};
  for (const Case& c : cases) {
    const int64_t numel = c.out * c.in;
    Tensor x = Rand({c.n, c.in}, torch::kBFloat16);  // (N, in)
    Tensor packed =
        torch::randint(0, 256, {numel / 2}, torch::kUInt8).to(torch::kCUDA);  // (out·in / 2)
    Tensor absmax = (torch::rand({numel / c.blocksize}, torch::kFloat32) + 0.01).to(torch::kCUDA);
    Tensor code = torch::randn({16}, torch::kFloat32).to(torch::kCUDA);  // (16)
    Tensor bias = c.bias ? Rand({c.out}, torch::kBFloat16) : Tensor();   // (out)
    Tensor y = fused::Nf4LinearForward(x, packed, absmax, code, c.out, c.in, c.blocksize, bias);
    FJORD_RETURN_IF_ERROR(CheckNf4LinearForward(
        y, x, packed, absmax, code, c.out, c.in, c.blocksize, bias,
        absl::StrCat("nf4_linear_forward N=", c.n, " out=", c.out, " in=", c.in, " blocksize ",
                     c.blocksize, c.bias ? " bias" : "")));
  }
  return absl::OkStatus();
}

[[maybe_unused]] const bool kRegistered = [] {
  RegisterKernel(kRmsNormKernel, &TestRmsNorm);
  RegisterKernel(kRopeKernel, &TestRope);
  RegisterKernel(kSwiGluKernel, &TestSwiGlu);
  RegisterKernel(kLinearCrossEntropyKernel, &TestLinearCrossEntropy);
  RegisterKernel(kNf4DequantizeKernel, &TestNf4Dequantize);
  RegisterKernel(kNf4LinearForwardKernel, &TestNf4LinearForward);
  RegisterKernel(kGeGluKernel, &TestGeGlu);
  RegisterKernel(kGemmaRmsNormKernel, &TestGemmaRmsNorm);
  return true;
}();

// Restores the default CPU generator's state on destruction.
class CpuGeneratorStateGuard {
 public:
  explicit CpuGeneratorStateGuard(uint64_t seed) : gen_(at::detail::getDefaultCPUGenerator()) {
    std::lock_guard<std::mutex> lock(gen_.mutex());
    state_ = gen_.get_state();
    gen_.set_current_seed(seed);
  }
  ~CpuGeneratorStateGuard() {
    std::lock_guard<std::mutex> lock(gen_.mutex());
    gen_.set_state(state_);
  }
  CpuGeneratorStateGuard(const CpuGeneratorStateGuard&) = delete;
  CpuGeneratorStateGuard& operator=(const CpuGeneratorStateGuard&) = delete;

 private:
  at::Generator gen_;
  Tensor state_;
};

// OK when the CUDA context still works after a test.
absl::Status DeviceHealthy() {
  try {
    torch::cuda::synchronize();
    // A trivial kernel and a copy back: fails if the context is poisoned.
    const double v = torch::ones({1}, torch::kCUDA).sum().item<double>();
    if (v != 1.0) return absl::InternalError("CUDA context check returned a wrong value");
    return absl::OkStatus();
  } catch (const std::exception& e) {
    return absl::InternalError(e.what());
  }
}

}  // namespace

absl::Status RunKernelSelfTest(std::string* report) {
  std::string out;
  if (!fused::kBuilt) {
    out = "built without CUDA kernels; references in use\n";
    if (report != nullptr) *report = out;
    return absl::OkStatus();
  }
  if (!torch::cuda::is_available()) {
    out = "no CUDA device; references in use\n";
    if (report != nullptr) *report = out;
    return absl::OkStatus();
  }
  torch::AutoGradMode grad_mode(true);
  CpuGeneratorStateGuard rng(kSelfTestSeed);
  const std::vector<std::string> names = RegisteredKernels();
  for (size_t i = 0; i < names.size(); ++i) {
    const std::string& name = names[i];
    KernelSelfTest test = GetKernelSelfTest(name);
    absl::Status s;
    try {
      s = test ? test() : absl::NotFoundError("no self-test registered");
      if (s.ok()) torch::cuda::synchronize();
    } catch (const std::exception& e) {
      s = absl::InternalError(absl::StrCat("threw: ", e.what()));
    }
    if (s.ok()) {
      SetKernelHealth(name, KernelHealth::kPassed);
      absl::StrAppend(&out, name, ": passed\n");
    } else {
      SetKernelHealth(name, KernelHealth::kDisabled);
      absl::StrAppend(&out, name, ": disabled (", s.message(), ")\n");
      std::cerr << "fjord: WARNING: fused kernel '" << name
                << "' failed its self-test and is disabled; using the reference: " << s.message()
                << std::endl;
    }
    absl::Status device = DeviceHealthy();
    if (!device.ok()) {
      for (size_t j = 0; j < names.size(); ++j) SetKernelHealth(names[j], KernelHealth::kDisabled);
      absl::StrAppend(&out, "CUDA context broken after '", name, "': ", device.message(),
                      "; every fused kernel disabled\n");
      if (report != nullptr) *report = out;
      return absl::InternalError(absl::StrCat("CUDA context broken after the self-test of '", name,
                                              "': ", device.message()));
    }
  }
  if (report != nullptr) *report = out;
  return absl::OkStatus();
}

}  // namespace fjord::kernels

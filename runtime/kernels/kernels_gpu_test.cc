// GPU tests of runtime/kernels' fused CUDA kernels: each against its
// reference, forward and every gradient, on random shapes including odd
// sizes, GQA head counts, N = 0 and N = 1; the launchers' in-place forms; the
// cuBLAS GEMM helper; dispatch; and the start-up self-test (the NF4 kernels:
// nf4_gpu_test.cc). Skipped (with the reason) on a
// machine without a CUDA device or in a build without CUDA.
//
// Tolerance: |fused − reference| <= atol + rtol·|reference| elementwise, with
// fp32 atol 1e-5, rtol 1e-4; bf16 atol 2e-2, rtol 2e-2; fp16 atol 2e-3,
// rtol 2e-3 (compare.h DefaultTolerance), atol multiplied by
// max(1, max |reference|) of each tensor (CompareWithReference). Gradients
// that are sums over many rows (dweight of RMSNorm, dW of linear+CE) have atol
// further scaled by sqrt(rows): the reference rounds each product to the dtype
// before summing, the kernel sums in fp32, and the difference grows like a
// random walk.
//
// Shape legend: N rows/tokens, C hidden, B batch, Hq/Hk heads, T tokens,
// D head dim, V vocab, I intermediate.
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDACachingAllocator.h>
#include <c10/cuda/CUDAFunctions.h>
#include <c10/cuda/CUDAStream.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <torch/cuda.h>
#include <torch/nn/functional/loss.h>
#include <torch/types.h>
#include <torch/utils.h>

#include <cmath>
#include <functional>
#include <stdexcept>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "runtime/kernels/compare.h"
#include "runtime/kernels/fused.h"
#include "runtime/kernels/gpu_test_util.h"
#include "runtime/kernels/kernel_registry.h"
#include "runtime/kernels/launchers.h"
#include "runtime/kernels/ops.h"
#include "runtime/kernels/self_test.h"

namespace fjord::kernels {
namespace {

using namespace gpu_test;  // NOLINT: the shared helpers and fixture

// ---------------------------------------------------------------- RMSNorm

TEST_F(KernelsGpuTest, RmsNormMatchesReference) {
  const std::vector<std::vector<int64_t>> shapes = {
      {0, 64},
      {1, 64},
      {1, 1},
      {7, 33},
      {4, 4096},
      {2, 3, 1000},
      {300, 256},   // more rows than backward blocks: blocks loop over
                    // rows
      {3, 13001},   // dweight partials in global memory, scalar path
      {5, 12800}};  // dweight partials in global memory, vector path
  for (torch::ScalarType dt : kAllDTypes) {
    for (const auto& shape : shapes) {
      for (bool weight_grad : {true, false}) {
        const int64_t cols = shape.back();
        int64_t rows = 1;
        for (size_t i = 0; i + 1 < shape.size(); ++i) rows *= shape[i];
        Tensor x = Randn(shape, dt).requires_grad_(true);
        Tensor w = (1.0 + Randn({cols}, torch::kFloat32, 0.2)).to(dt).requires_grad_(weight_grad);
        const std::string what = absl::StrCat("rms_norm ", Name(dt), " ", rows, "x", cols);
        EXPECT_OK(CompareWithReference(
            what, {x, w},
            [](const Tensors& in) { return Tensors{fused::RmsNorm(in[0], in[1], 1e-5)}; },
            [](const Tensors& in) { return Tensors{reference::RmsNorm(in[0], in[1], 1e-5)}; },
            Tol(dt), Tol(dt, std::max(1.0, std::sqrt(static_cast<double>(rows))))));
      }
    }
  }
}

TEST_F(KernelsGpuTest, GemmaRmsNormMatchesReference) {
  // Weights near 0 as Gemma's are (the scale is 1 + w), rows up to 13001
  // (dweight partials in global memory).
  const std::vector<std::vector<int64_t>> shapes = {{1, 64},    {7, 33},    {4, 1152}, {2, 3, 1000},
                                                    {300, 256}, {3, 13001}, {5, 12800}};
  for (torch::ScalarType dt : kAllDTypes) {
    for (const auto& shape : shapes) {
      const int64_t cols = shape.back();
      int64_t rows = 1;
      for (size_t i = 0; i + 1 < shape.size(); ++i) rows *= shape[i];
      Tensor x = Randn(shape, dt).requires_grad_(true);
      Tensor w = Randn({cols}, torch::kFloat32, 0.3).to(dt).requires_grad_(true);
      EXPECT_OK(CompareWithReference(
          absl::StrCat("gemma_rms_norm ", Name(dt), " ", rows, "x", cols), {x, w},
          [](const Tensors& in) { return Tensors{fused::GemmaRmsNorm(in[0], in[1], 1e-6)}; },
          [](const Tensors& in) { return Tensors{reference::GemmaRmsNorm(in[0], in[1], 1e-6)}; },
          Tol(dt), Tol(dt, std::max(1.0, std::sqrt(static_cast<double>(rows))))));
    }
  }
}

TEST_F(KernelsGpuTest, RmsNormLaunchersAreInPlaceSafe) {
  for (torch::ScalarType dt : kAllDTypes) {
    for (int64_t cols : {4096, 1001}) {
      Tensor x = Randn({9, cols}, dt);
      Tensor w = Randn({cols}, dt);
      Tensor rstd = torch::empty({9}, x.options().dtype(torch::kFloat32));
      Tensor y = torch::empty_like(x);
      cuda::RmsNormForward(x.data_ptr(), w.data_ptr(), y.data_ptr(), rstd.data_ptr<float>(), 9,
                           cols, 1e-6f, TagOf(dt), Stream());
      Tensor inplace = x.clone();
      cuda::RmsNormForward(inplace.data_ptr(), w.data_ptr(), inplace.data_ptr(), nullptr, 9, cols,
                           1e-6f, TagOf(dt), Stream());
      EXPECT_TRUE(torch::equal(inplace, y)) << Name(dt) << " forward, C=" << cols;

      Tensor dy = Randn({9, cols}, dt);
      Tensor dx = torch::empty_like(x);
      cuda::RmsNormBackward(dy.data_ptr(), x.data_ptr(), w.data_ptr(), rstd.data_ptr<float>(),
                            dx.data_ptr(), nullptr, nullptr, 9, cols, TagOf(dt), Stream());
      Tensor dinplace = dy.clone();
      cuda::RmsNormBackward(dinplace.data_ptr(), x.data_ptr(), w.data_ptr(), rstd.data_ptr<float>(),
                            dinplace.data_ptr(), nullptr, nullptr, 9, cols, TagOf(dt), Stream());
      EXPECT_TRUE(torch::equal(dinplace, dx)) << Name(dt) << " backward, C=" << cols;
    }
  }
}

TEST_F(KernelsGpuTest, RmsNormDweightIsZeroForZeroRows) {
  Tensor dw = torch::full({64}, 7.0, torch::dtype(torch::kBFloat16).device(torch::kCUDA));
  Tensor partial = torch::empty({cuda::RmsNormBackwardScratchSize(0, 64)},
                                torch::dtype(torch::kFloat32).device(torch::kCUDA));
  cuda::RmsNormBackward(nullptr, nullptr, nullptr, nullptr, nullptr, dw.data_ptr(),
                        partial.data_ptr<float>(), 0, 64, cuda::DType::kBF16, Stream());
  EXPECT_EQ(dw.abs().sum().item<float>(), 0.0f);
}

// ---------------------------------------------------------------- RoPE

struct RopeCase {
  int64_t b, hq, hk, t, d;
  bool strided_q;    // q as a transposed (B, T, Hq, D) view
  bool cos_batch_1;  // cos/sin (1, T, D) broadcast over the batch
};

TEST_F(KernelsGpuTest, RopeMatchesReference) {
  const std::vector<RopeCase> cases = {
      {2, 32, 8, 17, 128, true, false},  // Llama-3.1-8B heads, GQA 4:1
      {1, 4, 2, 1, 128, false, false},   // one token
      {1, 4, 2, 0, 64, false, false},    // no tokens
      {3, 6, 2, 5, 6, true, false},      // D/2 = 3: scalar path
      {2, 4, 4, 9, 64, false, true},     // broadcast tables
      {1, 5, 1, 7, 80, true, false}};    // odd head counts
  for (torch::ScalarType dt : kAllDTypes) {
    for (const RopeCase& c : cases) {
      Tensor q = c.strided_q ? Randn({c.b, c.t, c.hq, c.d}, dt).transpose(1, 2)
                             : Randn({c.b, c.hq, c.t, c.d}, dt);
      q.requires_grad_(true);
      Tensor k = Randn({c.b, c.hk, c.t, c.d}, dt).requires_grad_(true);
      const int64_t tb = c.cos_batch_1 ? 1 : c.b;
      Tensor angle = Randn({tb, c.t, c.d}, torch::kFloat32, 3.0);
      Tensor cos = angle.cos();
      Tensor sin = angle.sin();
      const std::string what = absl::StrCat("rope ", Name(dt), " B", c.b, " Hq", c.hq, " Hk", c.hk,
                                            " T", c.t, " D", c.d);
      EXPECT_OK(CompareWithReference(
          what, {q, k, cos, sin},
          [](const Tensors& in) {
            auto [qo, ko] = fused::ApplyRope(in[0], in[1], in[2], in[3]);
            return Tensors{qo, ko};
          },
          [](const Tensors& in) {
            auto [qo, ko] = reference::ApplyRope(in[0], in[1], in[2], in[3]);
            return Tensors{qo, ko};
          },
          Tol(dt, 1.5), Tol(dt, 1.5)));
    }
  }
}

TEST_F(KernelsGpuTest, RopeRejectsTablesThatRequireGrad) {
  Tensor q = Randn({1, 2, 3, 8}, torch::kFloat32);
  Tensor cos = Randn({1, 3, 8}, torch::kFloat32).requires_grad_(true);
  EXPECT_FALSE(fused::RopeSupported(q, q, cos, cos));
  EXPECT_FALSE(fused::RopeSupported(
      Randn({1, 2, 3, 7}, torch::kFloat32), Randn({1, 2, 3, 7}, torch::kFloat32),
      Randn({1, 3, 7}, torch::kFloat32), Randn({1, 3, 7}, torch::kFloat32)));
}

// ---------------------------------------------------------------- SwiGLU

TEST_F(KernelsGpuTest, SwiGluMatchesReference) {
  const std::vector<std::vector<int64_t>> shapes = {{0}, {1, 1}, {3, 1001}, {4, 14336}, {2, 3, 40}};
  for (torch::ScalarType dt : kAllDTypes) {
    for (const auto& shape : shapes) {
      Tensor g = Randn(shape, dt, 3.0).requires_grad_(true);
      Tensor u = Randn(shape, dt).requires_grad_(true);
      EXPECT_OK(CompareWithReference(
          absl::StrCat("swiglu ", Name(dt), " numel ", g.numel()), {g, u},
          [](const Tensors& in) { return Tensors{fused::SwiGlu(in[0], in[1])}; },
          [](const Tensors& in) { return Tensors{reference::SwiGlu(in[0], in[1])}; }, Tol(dt),
          Tol(dt)));
    }
  }
}

TEST_F(KernelsGpuTest, GeGluMatchesReference) {
  // Gates up to |g| ~ 9: both tails of the tanh and the region around 0.
  const std::vector<std::vector<int64_t>> shapes = {{0}, {1, 1}, {3, 1001}, {4, 6912}, {2, 3, 40}};
  for (torch::ScalarType dt : kAllDTypes) {
    for (const auto& shape : shapes) {
      Tensor g = Randn(shape, dt, 3.0).requires_grad_(true);
      Tensor u = Randn(shape, dt).requires_grad_(true);
      EXPECT_OK(CompareWithReference(
          absl::StrCat("geglu ", Name(dt), " numel ", g.numel()), {g, u},
          [](const Tensors& in) { return Tensors{fused::GeGlu(in[0], in[1])}; },
          [](const Tensors& in) { return Tensors{reference::GeGlu(in[0], in[1])}; }, Tol(dt),
          Tol(dt)));
    }
  }
}

TEST_F(KernelsGpuTest, SwiGluAcceptsNonContiguousHalvesOfOneProjection) {
  // gate and up as the two halves of one (N, 2I) output: strided views.
  Tensor gu = Randn({5, 2 * 72}, torch::kBFloat16, 2.0);
  std::vector<Tensor> halves = gu.chunk(2, -1);
  Tensor g = halves[0].requires_grad_(false);
  ASSERT_FALSE(g.is_contiguous());
  EXPECT_OK(CheckClose(fused::SwiGlu(halves[0], halves[1]), reference::SwiGlu(halves[0], halves[1]),
                       Tol(torch::kBFloat16), "swiglu strided"));
}

// ------------------------------------------------ Linear + cross-entropy

struct LceCase {
  int64_t n, c, v, chunk;
  bool weight_grad;
  bool all_ignored;
};

TEST_F(KernelsGpuTest, LinearCrossEntropyMatchesReference) {
  const std::vector<LceCase> cases = {
      {37, 64, 1001, 16, true, false},   {37, 64, 1001, 1, false, false},
      {300, 72, 1024, 128, true, false}, {300, 72, 1024, 0, false, false},
      {1, 64, 3, 4096, true, false},     {0, 64, 100, 16, true, false},
      {20, 64, 100, 8, true, true}};
  for (torch::ScalarType dt : {torch::kFloat32, torch::kBFloat16}) {
    for (const LceCase& c : cases) {
      Tensor h = Randn({c.n, c.c}, dt).requires_grad_(true);
      Tensor w = Randn({c.v, c.c}, dt, 0.3).requires_grad_(c.weight_grad);
      Tensor labels =
          torch::randint(0, c.v, {c.n}, torch::dtype(torch::kInt64).device(torch::kCUDA));
      if (c.all_ignored) {
        labels.fill_(-100);
      } else if (c.n > 3) {
        labels.index_put_({torch::indexing::Slice(0, c.n, 3)}, -100);
      }
      const int64_t chunk = c.chunk;
      const std::string what = absl::StrCat("linear_cross_entropy ", Name(dt), " N", c.n, " C", c.c,
                                            " V", c.v, " chunk ", c.chunk);
      EXPECT_OK(CompareWithReference(
          what, {h, w, labels},
          [chunk](const Tensors& in) {
            return Tensors{fused::LinearCrossEntropySum(in[0], in[1], in[2], chunk)};
          },
          [chunk](const Tensors& in) {
            return Tensors{reference::LinearCrossEntropySum(in[0], in[1], in[2], chunk)};
          },
          Tol(dt, 10), Tol(dt, std::max(1.0, std::sqrt(static_cast<double>(c.n))))));
    }
  }
}

TEST_F(KernelsGpuTest, LinearCrossEntropyMatchesFullCrossEntropy) {
  // Independent of reference.cc: LibTorch's cross-entropy over all logits.
  Tensor h = Randn({61, 48}, torch::kFloat32).requires_grad_(true);
  Tensor w = Randn({777, 48}, torch::kFloat32, 0.3).requires_grad_(true);
  Tensor labels = torch::randint(0, 777, {61}, torch::dtype(torch::kInt64).device(torch::kCUDA));
  labels[5] = -100;
  Tensor h2 = h.detach().clone().requires_grad_(true);
  Tensor w2 = w.detach().clone().requires_grad_(true);
  Tensor loss = fused::LinearCrossEntropySum(h, w, labels, 8);
  Tensor full = torch::nn::functional::cross_entropy(
      torch::matmul(h2, w2.t()), labels,
      torch::nn::functional::CrossEntropyFuncOptions().ignore_index(-100).reduction(torch::kSum));
  EXPECT_OK(CheckClose(loss, full, {1e-4, 1e-5}, "loss"));
  loss.backward();
  full.backward();
  EXPECT_OK(CheckClose(h.grad(), h2.grad(), {1e-5, 1e-4}, "dhidden"));
  EXPECT_OK(CheckClose(w.grad(), w2.grad(), {1e-5, 1e-4}, "dweight"));
}

TEST_F(KernelsGpuTest, LinearCrossEntropyWithoutGradMatchesWithGrad) {
  Tensor h = Randn({33, 64}, torch::kBFloat16);
  Tensor w = Randn({500, 64}, torch::kBFloat16, 0.3);
  Tensor labels = torch::randint(0, 500, {33}, torch::dtype(torch::kInt64).device(torch::kCUDA));
  Tensor plain;
  {
    torch::NoGradGuard no_grad;
    plain = fused::LinearCrossEntropySum(h, w, labels, 8);
  }
  Tensor graded = fused::LinearCrossEntropySum(h.clone().requires_grad_(true), w, labels, 8);
  EXPECT_FALSE(plain.requires_grad());
  EXPECT_TRUE(graded.requires_grad());
  EXPECT_TRUE(torch::equal(plain, graded.detach()));
}

TEST_F(KernelsGpuTest, LinearCrossEntropyRejectsOutOfRangeLabels) {
  Tensor h = Randn({3, 16}, torch::kFloat32);
  Tensor w = Randn({10, 16}, torch::kFloat32);
  Tensor labels = torch::tensor({1, 10, -100}, torch::kInt64).to(torch::kCUDA);
  try {
    fused::LinearCrossEntropySum(h, w, labels, 2);
    FAIL() << "expected c10::Error";
  } catch (const c10::Error& e) {
    EXPECT_THAT(e.what(), HasSubstr("every label must be -100 or in [0, 10)"));
  }
}

TEST_F(KernelsGpuTest, CrossEntropyRowsWritesSoftmaxMinusOneHotOnStridedRows) {
  for (torch::ScalarType dt : kAllDTypes) {
    const int64_t rows = 6;
    const int64_t v = 37;
    const int64_t ld = 48;  // padded rows
    Tensor buf = Randn({rows, ld}, dt, 3.0);
    Tensor logits = buf.narrow(1, 0, v).clone();
    Tensor labels = torch::tensor({3, -100, 0, 36, 5, -100}, torch::kInt64).to(torch::kCUDA);
    Tensor loss = torch::empty({rows}, torch::dtype(torch::kFloat32).device(torch::kCUDA));
    Tensor pad_before = buf.narrow(1, v, ld - v).clone();
    cuda::CrossEntropyRows(buf.data_ptr(), ld, labels.data_ptr<int64_t>(), loss.data_ptr<float>(),
                           rows, v, /*write_grad=*/true, -100, TagOf(dt), Stream());
    Tensor lf = logits.to(torch::kFloat32);
    Tensor valid = (labels != -100);
    Tensor safe = torch::where(valid, labels, torch::zeros_like(labels));
    Tensor expected_loss =
        torch::where(valid, torch::logsumexp(lf, 1) - lf.gather(1, safe.unsqueeze(1)).squeeze(1),
                     torch::zeros({rows}, lf.options()));
    Tensor expected_grad = (torch::softmax(lf, 1) - torch::one_hot(safe, v).to(torch::kFloat32)) *
                           valid.unsqueeze(1).to(torch::kFloat32);
    EXPECT_OK(CheckClose(loss, expected_loss, {1e-5, 1e-5}, "loss " + Name(dt)));
    EXPECT_OK(CheckClose(buf.narrow(1, 0, v), expected_grad.to(dt), Tol(dt), "grad " + Name(dt)));
    EXPECT_TRUE(torch::equal(buf.narrow(1, v, ld - v), pad_before)) << "padding was written";
  }
}

// ---------------------------------------------------------------- GEMM

TEST_F(KernelsGpuTest, GemmMatchesMatmulForEveryTransposeAndAccumulates) {
  cublasHandle_t blas = at::cuda::getCurrentCUDABlasHandle();
  const int64_t m = 37, n = 19, k = 45;
  for (torch::ScalarType dt : {torch::kFloat32, torch::kBFloat16}) {
    for (bool ta : {false, true}) {
      for (bool tb : {false, true}) {
        Tensor a = ta ? Randn({k, m}, dt) : Randn({m, k}, dt);  // stored
        Tensor b = tb ? Randn({n, k}, dt) : Randn({k, n}, dt);
        Tensor opa = (ta ? a.t() : a).to(torch::kFloat64);
        Tensor opb = (tb ? b.t() : b).to(torch::kFloat64);
        Tensor expected = torch::matmul(opa, opb);
        for (bool fp32_out : {false, true}) {
          const torch::ScalarType ct = fp32_out ? torch::kFloat32 : dt;
          Tensor c0 = Randn({m, n}, ct);
          Tensor c = c0.clone();
          // C = 0.5·op(A)·op(B) + 1·C
          cuda::Gemm(blas, Stream(), ta, tb, m, n, k, 0.5f, a.data_ptr(), a.size(1), b.data_ptr(),
                     b.size(1), TagOf(dt), 1.0f, c.data_ptr(), n, TagOf(ct));
          const std::string what =
              absl::StrCat("gemm ", Name(dt), " ta", ta, " tb", tb, fp32_out ? " fp32 out" : "");
          EXPECT_OK(CheckClose(c, (0.5 * expected + c0.to(torch::kFloat64)).to(ct), Tol(ct, 10, 1),
                               what));
        }
      }
    }
  }
}

TEST_F(KernelsGpuTest, GemmWithEmptySumWritesZerosOrKeepsC) {
  cublasHandle_t blas = at::cuda::getCurrentCUDABlasHandle();
  Tensor c = Randn({4, 6}, torch::kFloat32);
  Tensor keep = c.clone();
  cuda::Gemm(blas, Stream(), false, false, 4, 6, 0, 1.0f, nullptr, 1, nullptr, 6, cuda::DType::kF32,
             1.0f, c.data_ptr(), 6, cuda::DType::kF32);
  EXPECT_TRUE(torch::equal(c, keep));
  cuda::Gemm(blas, Stream(), false, false, 4, 6, 0, 1.0f, nullptr, 1, nullptr, 6, cuda::DType::kF32,
             0.0f, c.data_ptr(), 6, cuda::DType::kF32);
  EXPECT_EQ(c.abs().sum().item<float>(), 0.0f);
}

// ---------------------------------------------------------------- Dispatch

// Which implementation produced `y`: the fused op's autograd node is named
// after its Function (…RmsNormFn), the reference's is LibTorch's MulBackward0.
bool RanFused(const Tensor& y) {
  return y.grad_fn() != nullptr && y.grad_fn()->name().find("RmsNormFn") != std::string::npos;
}

TEST_F(KernelsGpuTest, DispatchFollowsBackendAndSelfTestHealth) {
  Tensor x = Randn({8, 256}, torch::kBFloat16).requires_grad_(true);
  Tensor w = Randn({256}, torch::kBFloat16);
  ASSERT_TRUE(RanFused(fused::RmsNorm(x, w, 1e-6)));
  ASSERT_FALSE(RanFused(reference::RmsNorm(x, w, 1e-6)));

  // kAuto: reference until the self-test passed.
  EXPECT_FALSE(RanFused(RmsNorm(x, w, 1e-6)));
  SetKernelHealth(kRmsNormKernel, KernelHealth::kPassed);
  EXPECT_TRUE(RanFused(RmsNorm(x, w, 1e-6)));
  // kReference: always the reference.
  SetBackend(Backend::kReference);
  EXPECT_FALSE(RanFused(RmsNorm(x, w, 1e-6)));
  // kFused: fused unless disabled.
  SetBackend(Backend::kFused);
  ResetKernelHealth();
  EXPECT_TRUE(RanFused(RmsNorm(x, w, 1e-6)));
  SetKernelHealth(kRmsNormKernel, KernelHealth::kDisabled);
  EXPECT_FALSE(RanFused(RmsNorm(x, w, 1e-6)));
  // Unsupported arguments (fp32 weight with bf16 x; CPU tensors) take the
  // reference.
  ResetKernelHealth();
  EXPECT_FALSE(RanFused(RmsNorm(x, w.to(torch::kFloat32), 1e-6)));
  EXPECT_FALSE(RanFused(RmsNorm(x.detach().cpu().requires_grad_(true), w.cpu(), 1e-6)));
}

// ---------------------------------------------------------------- Self-test

TEST_F(KernelsGpuTest, SelfTestPassesAndEnablesKernels) {
  std::string report;
  absl::Status s = RunKernelSelfTest(&report);
  ASSERT_TRUE(s.ok()) << s.message() << "\n" << report;
  for (const char* name :
       {kRmsNormKernel, kRopeKernel, kSwiGluKernel, kLinearCrossEntropyKernel, kNf4DequantizeKernel,
        kNf4LinearForwardKernel, kGeGluKernel, kGemmaRmsNormKernel}) {
    EXPECT_THAT(report, HasSubstr(absl::StrCat(name, ": passed\n")));
    EXPECT_EQ(GetKernelHealth(name), KernelHealth::kPassed) << name;
  }
}

TEST_F(KernelsGpuTest, SelfTestDisablesAFailingKernel) {
  RegisterKernel("gpu_test_broken_kernel", [] { return absl::InternalError("planted mismatch"); });
  std::string report;
  ASSERT_TRUE(RunKernelSelfTest(&report).ok()) << report;
  EXPECT_THAT(report, HasSubstr("gpu_test_broken_kernel: disabled (planted mismatch)"));
  EXPECT_EQ(GetKernelHealth("gpu_test_broken_kernel"), KernelHealth::kDisabled);
  EXPECT_EQ(GetKernelHealth(kRmsNormKernel), KernelHealth::kPassed);
  // Neutralise it for any later test in this process.
  RegisterKernel("gpu_test_broken_kernel", [] { return absl::OkStatus(); });
}

}  // namespace
}  // namespace fjord::kernels

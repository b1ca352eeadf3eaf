// GPU tests of the NF4 kernels: dequantization (exact: tolerance 0 in every
// dtype) and the fused NF4 linear forward (bf16, against dequantize + matmul
// in fp64, with the tolerance stated at CheckNf4Linear), their launchers,
// Supported() checks and dispatch. Skipped (with the reason) on a machine
// without a CUDA device or in a build without CUDA.
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

// ---------------------------------------------------------------- NF4

// Random NF4 inputs for `numel` elements in blocks of `blocksize` on the GPU:
// packed bytes (uniform), absmax in [0.01, 2.01), and a random code (any 16
// values: the kernel does not assume NF4's).
struct Nf4Inputs {
  Tensor packed;  // (ceil(n / 2)) uint8
  Tensor absmax;  // (ceil(n / blocksize)) fp32
  Tensor code;    // (16) fp32
};

Nf4Inputs RandomNf4(int64_t numel, int64_t blocksize) {
  const auto cuda = torch::TensorOptions().device(torch::kCUDA);
  const int64_t blocks = (numel + blocksize - 1) / blocksize;
  return {torch::randint(0, 256, {(numel + 1) / 2}, cuda.dtype(torch::kUInt8)),
          torch::rand({blocks}, cuda.dtype(torch::kFloat32)) * 2 + 0.01,
          torch::randn({16}, cuda.dtype(torch::kFloat32))};
}

// Bitwise equality on the device (CheckClose would copy a 4096 x 14336 case to
// the CPU as float64); on a mismatch, the count and the first index.
void ExpectIdentical(const Tensor& actual, const Tensor& expected, const std::string& what) {
  ASSERT_EQ(actual.sizes(), expected.sizes()) << what;
  ASSERT_EQ(actual.scalar_type(), expected.scalar_type()) << what;
  if (torch::equal(actual, expected)) return;
  Tensor bad = (actual != expected).nonzero();
  const int64_t i = bad[0][0].item<int64_t>();
  ADD_FAILURE() << what << ": " << bad.size(0) << " of " << actual.numel()
                << " elements differ; first at " << i << ": got " << actual[i].item<double>()
                << ", expected " << expected[i].item<double>();
}

// Exact in every dtype: both compute one fp32 product code[q]·absmax (nearest
// even, subnormals kept) and cast it to the dtype with round to nearest even.
TEST_F(KernelsGpuTest, Nf4DequantizeMatchesReferenceExactly) {
  struct Case {
    int64_t numel;
    int64_t blocksize;
  };
  // Blocks of 64 around the step (8) and block sizes, odd and not multiples of
  // 64 (4099); whole steps per block with a shift (32, 128, 4096) or a
  // division (24, 40); blocks not a multiple of 8: per-byte absmax (2, 6, 10).
  const std::vector<Case> cases = {
      {0, 64},      {1, 64},      {2, 64},    {7, 64},   {8, 64},    {9, 64},     {63, 64},
      {64, 64},     {65, 64},     {1001, 64}, {200, 64}, {4099, 64}, {5000, 128}, {777, 32},
      {4096, 4096}, {3001, 4096}, {1000, 24}, {999, 40}, {1000, 2},  {1001, 6},   {333, 10}};
  for (torch::ScalarType dt : kAllDTypes) {
    for (const Case& c : cases) {
      Nf4Inputs in = RandomNf4(c.numel, c.blocksize);
      Tensor got = fused::Nf4Dequantize(in.packed, in.absmax, in.code, c.numel, c.blocksize, dt);
      Tensor want =
          reference::Nf4Dequantize(in.packed, in.absmax, in.code, c.numel, c.blocksize, dt);
      EXPECT_EQ(got.dim(), 1);
      EXPECT_FALSE(got.requires_grad());
      ExpectIdentical(got, want,
                      absl::StrCat("nf4 ", Name(dt), " n=", c.numel, " blocksize ", c.blocksize));
    }
  }
}

TEST_F(KernelsGpuTest, Nf4DequantizeMatchesReferenceAtLlamaMlpShape) {
  // gate_proj / up_proj of Llama-3.1-8B: (14336, 4096), blocks of 64.
  const int64_t numel = int64_t{4096} * 14336;
  Nf4Inputs in = RandomNf4(numel, 64);
  for (torch::ScalarType dt : kAllDTypes) {
    ExpectIdentical(fused::Nf4Dequantize(in.packed, in.absmax, in.code, numel, 64, dt),
                    reference::Nf4Dequantize(in.packed, in.absmax, in.code, numel, 64, dt),
                    absl::StrCat("nf4 ", Name(dt), " 4096 x 14336"));
  }
}

TEST_F(KernelsGpuTest, Nf4DequantizeKeepsSubnormalProducts) {
  // code·absmax below FLT_MIN: --use_fast_math must not flush it to zero.
  const auto cuda = torch::TensorOptions().device(torch::kCUDA);
  // 23 elements: two vector steps, then 7 element-wise (the last a lone high
  // nibble).
  Tensor packed = torch::arange(0, 256, 23, torch::kInt32).to(torch::kUInt8).to(torch::kCUDA);
  ASSERT_EQ(packed.numel(), 12);
  Tensor absmax = torch::full({1}, 1e-30, cuda.dtype(torch::kFloat32));
  Tensor code = torch::linspace(-1e-9, 1e-9, 16, cuda.dtype(torch::kFloat32));
  Tensor got = fused::Nf4Dequantize(packed, absmax, code, 23, 64, torch::kFloat32);
  Tensor want = reference::Nf4Dequantize(packed, absmax, code, 23, 64, torch::kFloat32);
  EXPECT_GT(got.abs().min().item<float>(), 0.0f);
  ExpectIdentical(got, want, "nf4 subnormal products");
}

TEST_F(KernelsGpuTest, Nf4LauncherHandlesUnalignedPointersAndWritesOnlyItsElements) {
  // packed at byte offsets 0..3 and out at element offsets 0..1 of larger
  // buffers filled with a sentinel: every combination of the vector and the
  // element-wise path; nothing outside out[0, n) may change.
  for (torch::ScalarType dt : kAllDTypes) {
    for (int64_t numel : {1, 15, 16, 17, 203, 1000}) {
      for (int64_t packed_offset : {0, 1, 2, 3}) {
        for (int64_t out_offset : {0, 1}) {
          Nf4Inputs in = RandomNf4(numel + 2 * packed_offset, 64);
          const int64_t bytes = (numel + 1) / 2;
          Tensor packed = in.packed.narrow(0, packed_offset, bytes);
          Tensor absmax = in.absmax.narrow(0, 0, (numel + 63) / 64);
          Tensor buffer =
              torch::full({numel + out_offset + 16}, -7.0, torch::dtype(dt).device(torch::kCUDA));
          Tensor out = buffer.narrow(0, out_offset, numel);
          cuda::Nf4Dequantize(packed.data_ptr<uint8_t>(), absmax.data_ptr<float>(),
                              in.code.data_ptr<float>(), out.data_ptr(), numel, 64, TagOf(dt),
                              Stream());
          const std::string what = absl::StrCat("nf4 launcher ", Name(dt), " n=", numel,
                                                " packed +", packed_offset, " out +", out_offset);
          ExpectIdentical(out, reference::Nf4Dequantize(packed, absmax, in.code, numel, 64, dt),
                          what);
          Tensor before = buffer.narrow(0, 0, out_offset);
          Tensor after = buffer.narrow(0, out_offset + numel, 16);
          EXPECT_TRUE((before == -7.0).all().item<bool>()) << what << ": wrote before out";
          EXPECT_TRUE((after == -7.0).all().item<bool>()) << what << ": wrote past out";
        }
      }
    }
  }
}

TEST_F(KernelsGpuTest, Nf4LauncherRejectsOddBlocksize) {
  EXPECT_THROW(
      cuda::Nf4Dequantize(nullptr, nullptr, nullptr, nullptr, 8, 7, cuda::DType::kBF16, Stream()),
      std::invalid_argument);
  EXPECT_THROW(
      cuda::Nf4Dequantize(nullptr, nullptr, nullptr, nullptr, 8, 0, cuda::DType::kBF16, Stream()),
      std::invalid_argument);
}

TEST_F(KernelsGpuTest, Nf4DequantizeSupportedChecksEveryArgument) {
  Nf4Inputs in = RandomNf4(130, 64);  // 65 bytes, 3 blocks
  const auto ok = [&](const Tensor& p, const Tensor& a, const Tensor& c, int64_t numel = 130,
                      int64_t blocksize = 64, torch::Dtype dt = torch::kBFloat16) {
    return fused::Nf4DequantizeSupported(p, a, c, numel, blocksize, dt);
  };
  EXPECT_TRUE(ok(in.packed, in.absmax, in.code));
  EXPECT_TRUE(ok(in.packed, in.absmax, in.code, 129));  // odd numel: same bytes and blocks
  EXPECT_FALSE(ok(in.packed, in.absmax, in.code, 131));
  EXPECT_FALSE(ok(in.packed, in.absmax, in.code, 130, 63));  // odd blocksize
  EXPECT_FALSE(ok(in.packed, in.absmax, in.code, 130, 0));
  EXPECT_FALSE(ok(in.packed, in.absmax, in.code, 130, 64, torch::kFloat64));
  EXPECT_FALSE(ok(in.packed.to(torch::kInt8), in.absmax, in.code));
  EXPECT_FALSE(ok(in.packed, in.absmax.to(torch::kBFloat16), in.code));
  EXPECT_FALSE(ok(in.packed, in.absmax, in.code.to(torch::kFloat64)));
  EXPECT_FALSE(ok(in.packed, in.absmax, in.code.narrow(0, 0, 15)));
  EXPECT_FALSE(ok(in.packed, in.absmax.narrow(0, 0, 2), in.code));
  EXPECT_FALSE(ok(in.packed.view({5, 13}), in.absmax, in.code));
  EXPECT_FALSE(ok(in.packed.cpu(), in.absmax, in.code));
  EXPECT_FALSE(ok(in.packed.cpu(), in.absmax.cpu(), in.code.cpu()));
  Tensor strided = torch::randint(0, 256, {130}, in.packed.options()).slice(0, 0, 130, 2);
  ASSERT_FALSE(strided.is_contiguous());
  EXPECT_FALSE(ok(strided, in.absmax, in.code));
  try {
    fused::Nf4Dequantize(in.packed, in.absmax, in.code, 130, 63, torch::kBFloat16);
    FAIL() << "expected c10::Error";
  } catch (const c10::Error& e) {
    EXPECT_THAT(e.what(), HasSubstr("fused Nf4Dequantize: unsupported arguments"));
  }
}

// Bytes LibTorch's CUDA caching allocator held at its peak while `fn` ran,
// above what it held before.
int64_t PeakExtraBytes(const std::function<void()>& fn) {
  namespace alloc = c10::cuda::CUDACachingAllocator;
  const c10::DeviceIndex device = c10::cuda::current_device();
  const size_t agg = 0;  // StatType::AGGREGATE
  torch::cuda::synchronize();
  const int64_t before = alloc::getDeviceStats(device).allocated_bytes[agg].current;
  alloc::resetPeakStats(device);
  fn();
  torch::cuda::synchronize();
  return alloc::getDeviceStats(device).allocated_bytes[agg].peak - before;
}

TEST_F(KernelsGpuTest, Nf4DispatchUsesTheKernelWhenAllowed) {
  // Which implementation ran: the kernel allocates only its output; the
  // reference holds (n) tensors of indices, values and scales besides it.
  const int64_t numel = int64_t{1} << 20;
  Nf4Inputs in = RandomNf4(numel, 64);
  const int64_t out_bytes = numel * 2;  // bf16
  const auto peak = [&] {
    Tensor y;
    const int64_t bytes = PeakExtraBytes(
        [&] { y = Nf4Dequantize(in.packed, in.absmax, in.code, numel, 64, torch::kBFloat16); });
    EXPECT_TRUE(torch::equal(
        y, reference::Nf4Dequantize(in.packed, in.absmax, in.code, numel, 64, torch::kBFloat16)));
    return bytes;
  };
  const auto ran_fused = [&] { return peak() == out_bytes; };
  ASSERT_EQ(PeakExtraBytes([&] {
              fused::Nf4Dequantize(in.packed, in.absmax, in.code, numel, 64, torch::kBFloat16);
            }),
            out_bytes);
  ASSERT_GT(PeakExtraBytes([&] {
              reference::Nf4Dequantize(in.packed, in.absmax, in.code, numel, 64, torch::kBFloat16);
            }),
            out_bytes);

  // kFused: the kernel unless its self-test disabled it.
  SetBackend(Backend::kFused);
  EXPECT_TRUE(ran_fused());
  SetKernelHealth(kNf4DequantizeKernel, KernelHealth::kDisabled);
  EXPECT_FALSE(ran_fused());
  // kAuto: only after a passed self-test.
  SetBackend(Backend::kAuto);
  ResetKernelHealth();
  EXPECT_FALSE(ran_fused());
  SetKernelHealth(kNf4DequantizeKernel, KernelHealth::kPassed);
  EXPECT_TRUE(ran_fused());
  // kReference: never.
  SetBackend(Backend::kReference);
  EXPECT_FALSE(ran_fused());
  // Arguments the kernel does not take (odd blocksize; CPU tensors) go to the
  // reference under kFused.
  SetBackend(Backend::kFused);
  ResetKernelHealth();
  Nf4Inputs odd = RandomNf4(600, 7);
  ASSERT_FALSE(
      fused::Nf4DequantizeSupported(odd.packed, odd.absmax, odd.code, 600, 7, torch::kFloat32));
  EXPECT_TRUE(torch::equal(
      Nf4Dequantize(odd.packed, odd.absmax, odd.code, 600, 7, torch::kFloat32),
      reference::Nf4Dequantize(odd.packed, odd.absmax, odd.code, 600, 7, torch::kFloat32)));
  Tensor cpu =
      Nf4Dequantize(in.packed.cpu(), in.absmax.cpu(), in.code.cpu(), numel, 64, torch::kBFloat16);
  EXPECT_TRUE(cpu.device().is_cpu());
}

// ------------------------------------------------ NF4 linear forward (fused GEMM)

// Whether the device has bf16 tensor cores (fused::Nf4LinearForward needs
// sm_80 or newer).
bool HasBf16TensorCores() { return at::cuda::getCurrentDeviceProperties()->major >= 8; }

// W (out, in) as the fused GEMM sees it: reference::Nf4Dequantize to bf16,
// then fp64 for the expected products.
Tensor DequantizedF64(const Nf4Inputs& q, int64_t out, int64_t in, int64_t blocksize) {
  return reference::Nf4Dequantize(q.packed, q.absmax, q.code, out * in, blocksize, torch::kBFloat16)
      .view({out, in})
      .to(torch::kFloat64);
}

// y of fused::Nf4LinearForward against dequantize + matmul, computed in fp64
// from the same bf16 operands (W from the reference dequantization, x, the
// bias rounded to bf16): exact but for fp64's own rounding. The kernel sums
// the same products in fp32 and rounds y to bf16 once, so
// |y − ref| <= atol + rtol·|ref| with rtol = 2^-7 (twice bf16's unit
// roundoff) and atol = 2^-16·max Σ_k |x_ik·w_ok| (the fp32 sum's rounding
// grows with its terms; self_test.cc's CheckNf4LinearForward explains the
// margin). w64: (out, in) fp64; w64_abs: its absolute values.
absl::Status CheckNf4Linear(const Tensor& y, const Tensor& x, const Tensor& w64,
                            const Tensor& w64_abs, const Tensor& bias, const std::string& what) {
  const int64_t in = w64.size(1);
  Tensor x64 = x.reshape({-1, in}).to(torch::kFloat64);  // (N, in)
  Tensor expected = torch::mm(x64, w64.t());             // (N, out)
  if (bias.defined()) expected = expected + bias.to(torch::kBFloat16).to(torch::kFloat64);
  Tensor terms = torch::mm(x64.abs(), w64_abs.t());  // (N, out)
  const double scale = terms.numel() > 0 ? terms.max().item<double>() : 0.0;
  return CheckClose(y.reshape({-1, w64.size(0)}), expected,
                    Tolerance{std::ldexp(scale, -16), 0x1p-7}, what);
}

TEST_F(KernelsGpuTest, Nf4LinearForwardMatchesDequantizeMatmul) {
  if (!HasBf16TensorCores()) GTEST_SKIP() << "needs sm_80 or newer";
  // Decode (1), ragged (7, 300: partial and several row tiles), one whole
  // tile (64); outputs of half a tile, a ragged 100, Llama's 4096; in from
  // one absmax block to Llama's hidden (4096) and intermediate (14336).
  for (int64_t out : {32, 100, 4096}) {
    for (int64_t in : {64, 4096, 14336}) {
      Nf4Inputs q = RandomNf4(out * in, 64);
      Tensor w64 = DequantizedF64(q, out, in, 64);  // (out, in)
      Tensor w64_abs = w64.abs();
      for (int64_t n : {1, 7, 64, 300}) {
        Tensor x = Randn({n, in}, torch::kBFloat16);  // (N, in)
        for (bool with_bias : {false, true}) {
          Tensor bias = with_bias ? Randn({out}, torch::kBFloat16) : Tensor();  // (out)
          const std::string what = absl::StrCat("nf4_linear_forward N", n, " out", out, " in", in,
                                                with_bias ? " bias" : "");
          Tensor y = fused::Nf4LinearForward(x, q.packed, q.absmax, q.code, out, in, 64, bias);
          ASSERT_EQ(y.sizes(), torch::IntArrayRef({n, out})) << what;
          ASSERT_EQ(y.scalar_type(), torch::kBFloat16) << what;
          EXPECT_OK(CheckNf4Linear(y, x, w64, w64_abs, bias, what));
        }
      }
    }
  }
}

TEST_F(KernelsGpuTest, Nf4LinearForwardHandlesOddBlockSizesAndPartialKSteps) {
  if (!HasBf16TensorCores()) GTEST_SKIP() << "needs sm_80 or newer";
  struct Case {
    int64_t n, out, in, blocksize;
  };
  // in % 32 != 0 (a last k-step of 8, 16 or 24 columns); blocksize a multiple
  // of 8 (one absmax per 8-element chunk: 8, 24, 40, 56) or not (one per
  // byte: 2, 6, 10); a single output column; a single element.
  const std::vector<Case> cases = {{70, 33, 48, 6},  {65, 130, 72, 8}, {129, 65, 40, 40},
                                   {3, 5, 8, 2},     {1, 1, 8, 8},     {33, 64, 120, 10},
                                   {64, 63, 24, 24}, {200, 1, 56, 56}};
  for (const Case& c : cases) {
    Nf4Inputs q = RandomNf4(c.out * c.in, c.blocksize);
    Tensor w64 = DequantizedF64(q, c.out, c.in, c.blocksize);
    Tensor x = Randn({c.n, c.in}, torch::kBFloat16);
    for (bool with_bias : {false, true}) {
      Tensor bias = with_bias ? Randn({c.out}, torch::kFloat32) : Tensor();  // rounded to bf16
      const std::string what =
          absl::StrCat("nf4_linear_forward N", c.n, " out", c.out, " in", c.in, " blocksize ",
                       c.blocksize, with_bias ? " fp32 bias" : "");
      Tensor y =
          fused::Nf4LinearForward(x, q.packed, q.absmax, q.code, c.out, c.in, c.blocksize, bias);
      EXPECT_OK(CheckNf4Linear(y, x, w64, w64.abs(), bias, what));
    }
  }
}

TEST_F(KernelsGpuTest, Nf4LinearForwardTakesBatchedStridedAndMisalignedInputs) {
  if (!HasBf16TensorCores()) GTEST_SKIP() << "needs sm_80 or newer";
  const int64_t out = 72;
  const int64_t in = 256;
  Nf4Inputs q = RandomNf4(out * in, 64);
  Tensor w64 = DequantizedF64(q, out, in, 64);
  Tensor w64_abs = w64.abs();
  const auto forward = [&](const Tensor& x, const Tensor& packed) {
    return fused::Nf4LinearForward(x, packed, q.absmax, q.code, out, in, 64);
  };

  // (B, T, in) -> (B, T, out).
  Tensor x3 = Randn({2, 3, in}, torch::kBFloat16);
  Tensor y3 = forward(x3, q.packed);
  ASSERT_EQ(y3.sizes(), torch::IntArrayRef({2, 3, out}));
  EXPECT_OK(CheckNf4Linear(y3, x3, w64, w64_abs, Tensor(), "batched x"));

  // A strided x (half of a wider row), copied by the wrapper.
  Tensor wide = Randn({5, 2 * in}, torch::kBFloat16);
  Tensor strided = wide.narrow(1, in, in);
  ASSERT_FALSE(strided.is_contiguous());
  EXPECT_OK(
      CheckNf4Linear(forward(strided, q.packed), strided, w64, w64_abs, Tensor(), "strided x"));

  // x and packed at offsets that break the kernel's 16- and 4-byte loads.
  Tensor xbuf = Randn({1 + 4 * in}, torch::kBFloat16);
  Tensor xmis = xbuf.narrow(0, 1, 4 * in).view({4, in});
  ASSERT_NE(reinterpret_cast<uintptr_t>(xmis.data_ptr()) % 16, 0u);
  Tensor pbuf = torch::cat({torch::zeros({1}, q.packed.options()), q.packed});
  Tensor pmis = pbuf.narrow(0, 1, q.packed.size(0));
  ASSERT_NE(reinterpret_cast<uintptr_t>(pmis.data_ptr()) % 4, 0u);
  EXPECT_OK(CheckNf4Linear(forward(xmis, pmis), xmis, w64, w64_abs, Tensor(), "misaligned"));

  // N = 0: an empty (0, out).
  EXPECT_EQ(forward(Randn({0, in}, torch::kBFloat16), q.packed).sizes(),
            torch::IntArrayRef({0, out}));

  // No autograd history, even for an x that requires grad.
  Tensor xg = Randn({3, in}, torch::kBFloat16).requires_grad_(true);
  Tensor yg = forward(xg, q.packed);
  EXPECT_FALSE(yg.requires_grad());
  EXPECT_EQ(yg.grad_fn(), nullptr);

  // in == 0: y is the bias (rounded to bf16), or zeros.
  const auto cuda = torch::TensorOptions().device(torch::kCUDA);
  Tensor empty_packed = torch::empty({0}, cuda.dtype(torch::kUInt8));
  Tensor empty_absmax = torch::empty({0}, cuda.dtype(torch::kFloat32));
  Tensor bias = Randn({out}, torch::kFloat32);
  Tensor x0 = Randn({3, 0}, torch::kBFloat16);
  Tensor y0 = fused::Nf4LinearForward(x0, empty_packed, empty_absmax, q.code, out, 0, 64, bias);
  EXPECT_TRUE(torch::equal(y0, bias.to(torch::kBFloat16).expand({3, out})));
  y0 = fused::Nf4LinearForward(x0, empty_packed, empty_absmax, q.code, out, 0, 64);
  EXPECT_EQ(y0.abs().sum().item<float>(), 0.0f);
}

TEST_F(KernelsGpuTest, Nf4LinearForwardSupportedChecksEveryArgument) {
  const int64_t out = 100;
  const int64_t in = 64;
  Nf4Inputs q = RandomNf4(out * in, 64);
  Tensor x = Randn({7, in}, torch::kBFloat16);
  // o and i default to out and in (a default argument cannot name a local).
  const auto ok = [&](const Tensor& xx, const Tensor& p, const Tensor& a, const Tensor& c,
                      int64_t o = 100, int64_t i = 64, int64_t blocksize = 64,
                      const Tensor& bias = Tensor()) {
    return fused::Nf4LinearForwardSupported(xx, p, a, c, o, i, blocksize, bias);
  };
  EXPECT_EQ(ok(x, q.packed, q.absmax, q.code), HasBf16TensorCores());
  if (!HasBf16TensorCores()) GTEST_SKIP() << "needs sm_80 or newer";
  EXPECT_TRUE(ok(x, q.packed, q.absmax, q.code, out, in, 64, Randn({out}, torch::kFloat32)));
  EXPECT_TRUE(ok(x, q.packed, q.absmax, q.code, out, in, 64, Randn({out}, torch::kBFloat16)));
  EXPECT_TRUE(ok(Randn({2, 3, in}, torch::kBFloat16), q.packed, q.absmax, q.code));
  EXPECT_FALSE(ok(x.to(torch::kFloat32), q.packed, q.absmax, q.code));  // bf16 only
  EXPECT_FALSE(ok(x.to(torch::kFloat16), q.packed, q.absmax, q.code));
  EXPECT_FALSE(ok(x.cpu(), q.packed, q.absmax, q.code));
  EXPECT_FALSE(ok(Randn({7, 72}, torch::kBFloat16), q.packed, q.absmax, q.code));  // x vs in
  EXPECT_FALSE(ok(x, q.packed, q.absmax, q.code, 99));                             // sizes vs out
  EXPECT_FALSE(ok(x, q.packed, q.absmax, q.code, out, in, 63));                    // odd blocksize
  EXPECT_FALSE(ok(x, q.packed, q.absmax, q.code, out, in, 0));
  EXPECT_FALSE(ok(x, q.packed, q.absmax.narrow(0, 0, 50), q.code, out, in, 128));  // in % 128
  EXPECT_FALSE(ok(x, q.packed.to(torch::kInt8), q.absmax, q.code));
  EXPECT_FALSE(ok(x, q.packed, q.absmax.to(torch::kBFloat16), q.code));
  EXPECT_FALSE(ok(x, q.packed, q.absmax, q.code.narrow(0, 0, 15)));
  EXPECT_FALSE(ok(x, q.packed.view({50, 64}), q.absmax, q.code));
  EXPECT_FALSE(ok(x, q.packed.cpu(), q.absmax, q.code));
  EXPECT_FALSE(ok(x, q.packed, q.absmax, q.code, out, in, 64, Randn({99}, torch::kBFloat16)));
  EXPECT_FALSE(ok(x, q.packed, q.absmax, q.code, out, in, 64,
                  torch::zeros({out}, torch::kInt64).to(torch::kCUDA)));
  EXPECT_FALSE(ok(x, q.packed, q.absmax, q.code, out, in, 64, torch::zeros({out})));  // CPU bias
  // in a multiple of blocksize but not of 8: (out 4, in 12, blocksize 6).
  Nf4Inputs q12 = RandomNf4(4 * 12, 6);
  EXPECT_FALSE(ok(Randn({3, 12}, torch::kBFloat16), q12.packed, q12.absmax, q12.code, 4, 12, 6));
  try {
    fused::Nf4LinearForward(x, q.packed, q.absmax, q.code, out, in, 63);
    FAIL() << "expected c10::Error";
  } catch (const c10::Error& e) {
    EXPECT_THAT(e.what(), HasSubstr("fused Nf4LinearForward: unsupported arguments"));
  }
}

TEST_F(KernelsGpuTest, Nf4GemmLauncherRejectsBadArguments) {
  Tensor x = Randn({2, 64}, torch::kBFloat16);
  Tensor y = torch::empty({2, 4}, x.options());
  Nf4Inputs q = RandomNf4(4 * 64, 64);
  const auto launch = [&](const void* xp, const uint8_t* p, int64_t in, int64_t blocksize) {
    cuda::Nf4Gemm(xp, p, q.absmax.data_ptr<float>(), q.code.data_ptr<float>(), nullptr,
                  y.data_ptr(), 2, 4, in, blocksize, Stream());
  };
  const uint8_t* packed = q.packed.data_ptr<uint8_t>();
  EXPECT_THROW(launch(x.data_ptr(), packed, 60, 6), std::invalid_argument);   // in % 8
  EXPECT_THROW(launch(x.data_ptr(), packed, 64, 7), std::invalid_argument);   // odd blocksize
  EXPECT_THROW(launch(x.data_ptr(), packed, 64, 48), std::invalid_argument);  // in % blocksize
  EXPECT_THROW(launch(static_cast<const char*>(x.data_ptr()) + 2, packed, 64, 64),
               std::invalid_argument);  // x not 16-byte aligned
  EXPECT_THROW(launch(x.data_ptr(), packed + 1, 64, 64), std::invalid_argument);  // packed
}

}  // namespace
}  // namespace fjord::kernels

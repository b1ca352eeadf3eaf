// Benchmark of runtime/kernels' fused CUDA kernels against their LibTorch
// references at Llama-3.1-8B shapes (hidden 4096, intermediate 14336, vocab
// 128256, 32 query / 8 key-value heads of dim 128), bf16, batch 1.
//
//   bazel run //runtime/kernels:kernel_bench -- --tokens=2048,8192
//
// For each op, implementation and token count: the median time (CUDA events,
// after warm-up) of the forward and of forward + backward as training runs
// them (inputs that train require grad; frozen weights don't), the caching
// allocator's peak memory above the inputs during forward + backward, and the
// achieved rate: GB/s over the fewest bytes the op must move (memory-bound
// ops) or TFLOP/s over its GEMM work (linear + cross-entropy). Prints a
// table. Exits with status 1 and a message on a machine without a GPU.
//
// linear_cross_entropy computes its gradients during the forward (fused.h),
// so its "fwd" column already holds most of the backward's work.
#include <torch/autograd.h>
#include <torch/types.h>

#include <algorithm>
#include <cstdio>
#include <functional>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "runtime/kernels/bench_util.h"
#include "runtime/kernels/fused.h"
#include "runtime/kernels/ops.h"

ABSL_FLAG(std::string, tokens, "2048,8192", "Token counts N = B·T to run (B = 1).");
ABSL_FLAG(std::string, ops, "rms_norm,rope,swiglu,linear_cross_entropy", "Ops to run.");
ABSL_FLAG(int, warmup, 3, "Untimed calls before timing.");
ABSL_FLAG(int, reps, 10, "Timed calls (the median is reported).");
ABSL_FLAG(int64_t, chunk, 4096, "Tokens per logits chunk for linear_cross_entropy.");

namespace fjord::kernels {
namespace {

using torch::Tensor;
using Tensors = std::vector<Tensor>;
using Fn = std::function<Tensors(const Tensors&)>;

constexpr int64_t kHidden = 4096;
constexpr int64_t kIntermediate = 14336;
constexpr int64_t kVocab = 128256;
constexpr int64_t kHeads = 32;
constexpr int64_t kKvHeads = 8;
constexpr int64_t kHeadDim = 128;
constexpr double kBf16 = 2.0;  // bytes per element

struct Case {
  std::string op;
  std::string shape;
  std::function<Tensors()> make_inputs;
  Fn fused;
  Fn reference;
  double work = 0;     // bytes (memory-bound) or FLOPs of forward + backward
  bool flops = false;  // `work` is FLOPs
};

Tensor Rand(std::vector<int64_t> sizes, double scale = 1.0) {
  return (torch::randn(sizes, torch::dtype(torch::kFloat32).device(torch::kCUDA)) * scale)
      .to(torch::kBFloat16);
}

std::vector<Case> MakeCases(int64_t n, int64_t chunk) {
  std::vector<Case> cases;
  cases.push_back(Case{
      "rms_norm", absl::StrCat("x (", n, ", ", kHidden, ")"),
      [n] { return Tensors{Rand({n, kHidden}).requires_grad_(true), Rand({kHidden})}; },
      [](const Tensors& in) { return Tensors{fused::RmsNorm(in[0], in[1], 1e-5)}; },
      [](const Tensors& in) { return Tensors{reference::RmsNorm(in[0], in[1], 1e-5)}; },
      5.0 * n * kHidden * kBf16});
  cases.push_back(Case{
      "rope", absl::StrCat("q (1,", kHeads, ",", n, ",", kHeadDim, ") k (1,", kKvHeads, ",...)"),
      [n] {
        // As the model makes them: projections viewed (B, T, H, D), transposed.
        Tensor q = Rand({1, n, kHeads, kHeadDim}).transpose(1, 2).requires_grad_(true);
        Tensor k = Rand({1, n, kKvHeads, kHeadDim}).transpose(1, 2).requires_grad_(true);
        Tensor angle = Rand({1, n, kHeadDim}, 3.0);
        return Tensors{q, k, angle.cos(), angle.sin()};
      },
      [](const Tensors& in) {
        auto [q, k] = fused::ApplyRope(in[0], in[1], in[2], in[3]);
        return Tensors{q, k};
      },
      [](const Tensors& in) {
        auto [q, k] = reference::ApplyRope(in[0], in[1], in[2], in[3]);
        return Tensors{q, k};
      },
      (4.0 * (kHeads + kKvHeads) * n * kHeadDim + 4.0 * n * kHeadDim) * kBf16});
  cases.push_back(Case{
      "swiglu", absl::StrCat("gate, up (", n, ", ", kIntermediate, ")"),
      [n] {
        return Tensors{Rand({n, kIntermediate}, 2.0).requires_grad_(true),
                       Rand({n, kIntermediate}).requires_grad_(true)};
      },
      [](const Tensors& in) { return Tensors{fused::SwiGlu(in[0], in[1])}; },
      [](const Tensors& in) { return Tensors{reference::SwiGlu(in[0], in[1])}; },
      8.0 * n * kIntermediate * kBf16});
  cases.push_back(Case{
      "linear_cross_entropy",
      absl::StrCat("h (", n, ", ", kHidden, ") W (", kVocab, ", ", kHidden, ") chunk ", chunk),
      [n] {
        Tensor labels =
            torch::randint(0, kVocab, {n}, torch::dtype(torch::kInt64).device(torch::kCUDA));
        labels.masked_fill_(torch::rand({n}, torch::kCUDA) < 0.1, -100);
        return Tensors{Rand({n, kHidden}).requires_grad_(true), Rand({kVocab, kHidden}, 0.02),
                       labels};
      },
      [chunk](const Tensors& in) {
        return Tensors{fused::LinearCrossEntropySum(in[0], in[1], in[2], chunk)};
      },
      [chunk](const Tensors& in) {
        return Tensors{reference::LinearCrossEntropySum(in[0], in[1], in[2], chunk)};
      },
      4.0 * n * kVocab * kHidden, /*flops=*/true});
  return cases;
}

// Forward, then gradients of the inputs that require grad (not accumulated).
void ForwardBackward(const Fn& fn, const Tensors& inputs, const Tensors& grad_outputs) {
  Tensors outs = fn(inputs);
  Tensors wrt;
  for (const Tensor& t : inputs) {
    if (t.requires_grad()) wrt.push_back(t);
  }
  torch::autograd::grad(outs, wrt, grad_outputs);
}

int Main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  std::string why;
  if (!bench::GpuAvailable(&why)) {
    std::fprintf(stderr, "kernel_bench: needs a CUDA GPU: %s\n", why.c_str());
    return 1;
  }
  std::vector<int64_t> token_counts;
  for (absl::string_view s : absl::StrSplit(absl::GetFlag(FLAGS_tokens), ',')) {
    int64_t n = 0;
    if (!absl::SimpleAtoi(s, &n) || n <= 0) {
      std::fprintf(stderr, "kernel_bench: bad --tokens entry '%s'\n", std::string(s).c_str());
      return 2;
    }
    token_counts.push_back(n);
  }
  const std::vector<std::string> ops = absl::StrSplit(absl::GetFlag(FLAGS_ops), ',');
  const int warmup = absl::GetFlag(FLAGS_warmup);
  const int reps = absl::GetFlag(FLAGS_reps);
  torch::manual_seed(0);

  std::printf("kernel_bench on %s, bf16, warm-up %d, median of %d\n",
              bench::DeviceName().c_str(), warmup, reps);
  std::vector<bench::Row> rows;
  for (int64_t n : token_counts) {
    for (const Case& c : MakeCases(n, absl::GetFlag(FLAGS_chunk))) {
      if (std::find(ops.begin(), ops.end(), c.op) == ops.end()) continue;
      double ref_ms = 0;
      for (const bool fused_impl : {false, true}) {
        const Fn& fn = fused_impl ? c.fused : c.reference;
        Tensors inputs = c.make_inputs();
        Tensors grad_outputs;
        for (const Tensor& o : fn(inputs)) grad_outputs.push_back(torch::randn_like(o));
        bench::Row row;
        row.op = c.op;
        row.impl = fused_impl ? "fused" : "reference";
        row.shape = c.shape;
        row.fwd_ms = bench::TimeCuda([&] { fn(inputs); }, warmup, reps).median_ms;
        row.fwd_bwd_ms =
            bench::TimeCuda([&] { ForwardBackward(fn, inputs, grad_outputs); }, warmup, reps)
                .median_ms;
        row.peak_mib = static_cast<double>(bench::PeakExtraBytes(
                           [&] { ForwardBackward(fn, inputs, grad_outputs); })) /
                       (1 << 20);
        const double per_s = 1e3 / row.fwd_bwd_ms;
        row.rate = c.flops ? absl::StrFormat("%.1f TFLOP/s", c.work * per_s / 1e12)
                           : absl::StrFormat("%.0f GB/s", c.work * per_s / 1e9);
        if (fused_impl) {
          row.speedup = absl::StrFormat("%.2fx", ref_ms / row.fwd_bwd_ms);
        } else {
          ref_ms = row.fwd_bwd_ms;
        }
        rows.push_back(row);
      }
    }
  }
  bench::PrintTable(rows);
  return 0;
}

}  // namespace
}  // namespace fjord::kernels

int main(int argc, char** argv) { return fjord::kernels::Main(argc, argv); }

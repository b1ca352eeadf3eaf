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
//
// NF4 (QLoRA's frozen 4-bit base weights) has no backward: for its rows the
// "fwd+bwd" columns repeat the forward, and the peak memory is the forward's.
//   nf4_dequantize  q_proj (4096, 4096) and gate_proj (14336, 4096) to bf16,
//                   once (no token count); GB/s over the bytes it must move:
//                   0.5 B/param in + 2 B/param out + 4 B per block of 64.
//   qlora_forward   the QLoRA base layer's forward, x·Wᵀ, four ways: "bf16
//                   mm", the matmul on a bf16 W already in memory (the
//                   floor); "reference" and "fused", W dequantized to a bf16
//                   buffer by the reference or the kernel (nf4.cu), then
//                   cuBLAS (torch::mm), as quant::Nf4Linear runs today;
//                   "fused nf4 gemm", the dequantization fused into a
//                   tensor-core GEMM (nf4_gemm.cu, fused::Nf4LinearForward),
//                   no W buffer. TFLOP/s over 2·N·in·out. Lines after the
//                   table give the dequantize overhead as a share of the
//                   layer's time and the fused GEMM against dequantize + mm.
#include <torch/autograd.h>
#include <torch/types.h>

#include <algorithm>
#include <cstdio>
#include <functional>
#include <map>
#include <string>
#include <utility>
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
ABSL_FLAG(std::string, ops,
          "rms_norm,rope,swiglu,geglu,linear_cross_entropy,qlora_forward,nf4_dequantize",
          "Ops to run.");
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
constexpr int64_t kNf4BlockSize = 64;
constexpr char kFusedGemmImpl[] = "fused nf4 gemm";

// The NF4-quantized projections of Llama-3.1-8B the QLoRA rows use: (out, in).
struct Projection {
  const char* name;
  int64_t out;
  int64_t in;
};
constexpr Projection kNf4Projections[] = {{"q_proj", kHidden, kHidden},
                                          {"gate_proj", kIntermediate, kHidden}};

struct Case {
  std::string op;
  std::string shape;
  std::function<Tensors()> make_inputs;
  Fn fused;
  Fn reference;
  double work = 0;            // bytes (memory-bound) or FLOPs of forward + backward
  bool flops = false;         // `work` is FLOPs
  bool forward_only = false;  // no backward (NF4): fwd+bwd repeats fwd
  // An extra row before the reference: another way to the same result (the
  // QLoRA rows' bf16 matmul without dequantization).
  std::string baseline_impl;
  Fn baseline;
  // A second fused way, timed after "fused" with its speedup over the
  // reference (the QLoRA rows' fused NF4 GEMM).
  std::string extra_impl;
  Fn extra;
};

Tensor Rand(std::vector<int64_t> sizes, double scale = 1.0) {
  return (torch::randn(sizes, torch::dtype(torch::kFloat32).device(torch::kCUDA)) * scale)
      .to(torch::kBFloat16);
}

// A random NF4 weight of `numel` parameters: packed bytes (ceil(numel / 2))
// uint8, absmax (blocks) fp32, code (16) fp32.
Tensors RandNf4(int64_t numel) {
  const auto cuda = torch::TensorOptions().device(torch::kCUDA);
  const int64_t blocks = (numel + kNf4BlockSize - 1) / kNf4BlockSize;
  return Tensors{torch::randint(0, 256, {(numel + 1) / 2}, cuda.dtype(torch::kUInt8)),
                 torch::rand({blocks}, cuda.dtype(torch::kFloat32)) * 0.05 + 0.01,
                 torch::linspace(-1.0, 1.0, 16, cuda.dtype(torch::kFloat32))};
}

// Bytes an NF4 dequantization to bf16 must move.
double Nf4Bytes(int64_t numel) {
  const int64_t blocks = (numel + kNf4BlockSize - 1) / kNf4BlockSize;
  return 0.5 * static_cast<double>(numel) + kBf16 * static_cast<double>(numel) + 4.0 * blocks +
         16 * 4.0;
}

std::string ProjectionShape(const Projection& p) {
  return absl::StrCat(p.name, " (", p.out, ", ", p.in, ")");
}

// nf4_dequantize: the weights alone, independent of the token count.
std::vector<Case> MakeNf4Cases() {
  std::vector<Case> cases;
  for (const Projection& p : kNf4Projections) {
    const int64_t numel = p.out * p.in;
    Case c{"nf4_dequantize",
           absl::StrCat(ProjectionShape(p), " -> bf16"),
           [numel] { return RandNf4(numel); },
           [numel](const Tensors& in) {
             return Tensors{
                 fused::Nf4Dequantize(in[0], in[1], in[2], numel, kNf4BlockSize, torch::kBFloat16)};
           },
           [numel](const Tensors& in) {
             return Tensors{reference::Nf4Dequantize(in[0], in[1], in[2], numel, kNf4BlockSize,
                                                     torch::kBFloat16)};
           },
           Nf4Bytes(numel)};
    c.forward_only = true;
    cases.push_back(c);
  }
  return cases;
}

// qlora_forward: y = x·Wᵀ, x (N, in) bf16, W (out, in) dequantized to bf16.
// Inputs: x, packed, absmax, code, and W in bf16 for the baseline.
std::vector<Case> MakeQloraCases(int64_t n) {
  std::vector<Case> cases;
  for (const Projection& p : kNf4Projections) {
    const int64_t out = p.out;
    const int64_t in = p.in;
    const auto with = [out, in](bool fused_dequantize) {
      return [out, in, fused_dequantize](const Tensors& t) {
        Tensor w = fused_dequantize ? fused::Nf4Dequantize(t[1], t[2], t[3], out * in,
                                                           kNf4BlockSize, torch::kBFloat16)
                                    : reference::Nf4Dequantize(t[1], t[2], t[3], out * in,
                                                               kNf4BlockSize, torch::kBFloat16);
        return Tensors{torch::mm(t[0], w.view({out, in}).t())};
      };
    };
    Case c{"qlora_forward",
           absl::StrCat(ProjectionShape(p), ", N ", n),
           [n, out, in] {
             Tensors t = RandNf4(out * in);
             Tensor w =
                 fused::Nf4Dequantize(t[0], t[1], t[2], out * in, kNf4BlockSize, torch::kBFloat16)
                     .view({out, in});
             return Tensors{Rand({n, in}), t[0], t[1], t[2], w};
           },
           with(true),
           with(false),
           2.0 * n * in * out,
           /*flops=*/true};
    c.forward_only = true;
    c.baseline_impl = "bf16 mm";
    c.baseline = [](const Tensors& t) { return Tensors{torch::mm(t[0], t[4].t())}; };
    c.extra_impl = kFusedGemmImpl;
    c.extra = [out, in](const Tensors& t) {
      return Tensors{fused::Nf4LinearForward(t[0], t[1], t[2], t[3], out, in, kNf4BlockSize)};
    };
    cases.push_back(c);
  }
  return cases;
}

std::vector<Case> MakeCases(int64_t n, int64_t chunk) {
  std::vector<Case> cases;
  cases.push_back(
      Case{"rms_norm", absl::StrCat("x (", n, ", ", kHidden, ")"),
           [n] {
             return Tensors{Rand({n, kHidden}).requires_grad_(true), Rand({kHidden})};
           },
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
  cases.push_back(Case{"swiglu", absl::StrCat("gate, up (", n, ", ", kIntermediate, ")"),
                       [n] {
                         return Tensors{Rand({n, kIntermediate}, 2.0).requires_grad_(true),
                                        Rand({n, kIntermediate}).requires_grad_(true)};
                       },
                       [](const Tensors& in) { return Tensors{fused::SwiGlu(in[0], in[1])}; },
                       [](const Tensors& in) { return Tensors{reference::SwiGlu(in[0], in[1])}; },
                       8.0 * n * kIntermediate * kBf16});
  cases.push_back(Case{"geglu", absl::StrCat("gate, up (", n, ", ", kIntermediate, ")"),
                       [n] {
                         return Tensors{Rand({n, kIntermediate}, 2.0).requires_grad_(true),
                                        Rand({n, kIntermediate}).requires_grad_(true)};
                       },
                       [](const Tensors& in) { return Tensors{fused::GeGlu(in[0], in[1])}; },
                       [](const Tensors& in) { return Tensors{reference::GeGlu(in[0], in[1])}; },
                       8.0 * n * kIntermediate * kBf16});
  cases.push_back(
      Case{"linear_cross_entropy",
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
  for (Case& c : MakeQloraCases(n)) cases.push_back(std::move(c));
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

  std::printf("kernel_bench on %s, bf16, warm-up %d, median of %d\n", bench::DeviceName().c_str(),
              warmup, reps);
  std::vector<Case> cases;
  for (int64_t n : token_counts) {
    for (Case& c : MakeCases(n, absl::GetFlag(FLAGS_chunk))) cases.push_back(std::move(c));
  }
  for (Case& c : MakeNf4Cases()) cases.push_back(std::move(c));

  std::vector<bench::Row> rows;
  // qlora_forward's median forward times by shape and implementation.
  std::vector<std::pair<std::string, std::map<std::string, double>>> qlora;
  for (const Case& c : cases) {
    if (std::find(ops.begin(), ops.end(), c.op) == ops.end()) continue;
    std::vector<std::pair<std::string, const Fn*>> impls;
    if (c.baseline) impls.emplace_back(c.baseline_impl, &c.baseline);
    impls.emplace_back("reference", &c.reference);
    impls.emplace_back("fused", &c.fused);
    if (c.extra) impls.emplace_back(c.extra_impl, &c.extra);
    if (c.op == "qlora_forward") qlora.emplace_back(c.shape, std::map<std::string, double>{});
    double ref_ms = 0;
    for (const auto& [impl, fn_ptr] : impls) {
      const Fn& fn = *fn_ptr;
      Tensors inputs = c.make_inputs();
      bench::Row row;
      row.op = c.op;
      row.impl = impl;
      row.shape = c.shape;
      row.fwd_ms = bench::TimeCuda([&] { fn(inputs); }, warmup, reps).median_ms;
      if (c.forward_only) {
        row.fwd_bwd_ms = row.fwd_ms;
        row.peak_mib = static_cast<double>(bench::PeakExtraBytes([&] { fn(inputs); })) / (1 << 20);
      } else {
        Tensors grad_outputs;
        for (const Tensor& o : fn(inputs)) grad_outputs.push_back(torch::randn_like(o));
        row.fwd_bwd_ms =
            bench::TimeCuda([&] { ForwardBackward(fn, inputs, grad_outputs); }, warmup, reps)
                .median_ms;
        row.peak_mib = static_cast<double>(bench::PeakExtraBytes(
                           [&] { ForwardBackward(fn, inputs, grad_outputs); })) /
                       (1 << 20);
      }
      const double per_s = 1e3 / row.fwd_bwd_ms;
      row.rate = c.flops ? absl::StrFormat("%.1f TFLOP/s", c.work * per_s / 1e12)
                         : absl::StrFormat("%.0f GB/s", c.work * per_s / 1e9);
      if (impl == "reference") {
        ref_ms = row.fwd_bwd_ms;
      } else if (impl != c.baseline_impl) {  // "fused" or the extra fused way
        row.speedup = absl::StrFormat("%.2fx", ref_ms / row.fwd_bwd_ms);
      }
      if (c.op == "qlora_forward") qlora.back().second[impl] = row.fwd_ms;
      rows.push_back(row);
    }
  }
  bench::PrintTable(rows);
  for (const auto& [shape, ms] : qlora) {
    const double mm = ms.at("bf16 mm");
    const double fused_ms = ms.at("fused");
    const double ref_ms = ms.at("reference");
    std::printf(
        "qlora_forward %s: bf16 mm %.3f ms; NF4 dequantize + mm %.3f ms with the kernel "
        "(dequantize %.1f%% of it), %.3f ms with the reference (%.1f%%)\n",
        shape.c_str(), mm, fused_ms, 100.0 * (fused_ms - mm) / fused_ms, ref_ms,
        100.0 * (ref_ms - mm) / ref_ms);
    if (ms.count(kFusedGemmImpl) != 0) {
      const double gemm_ms = ms.at(kFusedGemmImpl);
      std::printf(
          "qlora_forward %s: fused NF4 GEMM %.3f ms: %.2fx the speed of dequantize + mm with the "
          "kernel, %.2fx that of bf16 mm\n",
          shape.c_str(), gemm_ms, fused_ms / gemm_ms, mm / gemm_ms);
    }
  }
  return 0;
}

}  // namespace
}  // namespace fjord::kernels

int main(int argc, char** argv) { return fjord::kernels::Main(argc, argv); }

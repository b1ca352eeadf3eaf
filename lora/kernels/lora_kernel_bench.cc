// Benchmark of the fused LoRA linear against its LibTorch reference at
// Llama-3.1-8B shapes (hidden 4096, intermediate 14336, 32/8 heads of 128),
// rank 16, bf16 model with fp32 adapters, no dropout, batch 1.
//
//   bazel run //lora/kernels:lora_kernel_bench -- --tokens=2048,8192
//
// Rows: each projection alone (q, k, o, gate, down), and the grouped forms
// (q+k+v, gate+up) against the reference run once per projection. Times are
// medians over CUDA events after warm-up; fwd+bwd is one forward and the
// gradients of x, A and B (W frozen); peak is the caching allocator's peak
// above the inputs during fwd+bwd; the rate is TFLOP/s of the GEMM work
// (base 4·N·in·out + adapters 6·N·r·(in + out) per projection). Exits with
// status 1 and a message on a machine without a GPU.
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
#include "lora/kernels/lora_fused.h"
#include "lora/kernels/lora_ops.h"
#include "runtime/kernels/bench_util.h"

ABSL_FLAG(std::string, tokens, "2048,8192", "Token counts N = B·T to run (B = 1).");
ABSL_FLAG(int, rank, 16, "LoRA rank r.");
ABSL_FLAG(int, warmup, 3, "Untimed calls before timing.");
ABSL_FLAG(int, reps, 10, "Timed calls (the median is reported).");

namespace fjord::lora::kernels {
namespace {

using torch::Tensor;
using Tensors = std::vector<Tensor>;
namespace bench = ::fjord::kernels::bench;

struct Proj {
  std::string name;
  int64_t in, out;
};

Tensor Rand(std::vector<int64_t> sizes, torch::ScalarType dt, double scale) {
  return (torch::randn(sizes, torch::dtype(torch::kFloat32).device(torch::kCUDA)) * scale).to(dt);
}

LoraProjection MakeProjection(const Proj& p, int64_t r) {
  return {Rand({p.out, p.in}, torch::kBFloat16, 0.02), Tensor(),
          Rand({r, p.in}, torch::kFloat32, 0.02).requires_grad_(true),
          Rand({p.out, r}, torch::kFloat32, 0.02).requires_grad_(true), 2.0};
}

double Flops(const std::vector<Proj>& ps, int64_t n, int64_t r) {
  double f = 0;
  for (const Proj& p : ps) f += 4.0 * n * p.in * p.out + 6.0 * n * r * (p.in + p.out);
  return f;
}

using GroupFn = std::function<Tensors(const Tensor&, const std::vector<LoraProjection>&)>;

void Run(const std::string& op, const std::vector<Proj>& group, int64_t n, int64_t r, int warmup,
         int reps, std::vector<bench::Row>* rows) {
  const int64_t in = group.front().in;
  Tensor x = Rand({n, in}, torch::kBFloat16, 1.0).requires_grad_(true);
  std::vector<LoraProjection> ps;
  for (const Proj& p : group) ps.push_back(MakeProjection(p, r));
  Tensors wrt = {x};
  for (const LoraProjection& p : ps) {
    wrt.push_back(p.a);
    wrt.push_back(p.b);
  }
  const GroupFn fused_fn = [](const Tensor& x, const std::vector<LoraProjection>& ps) {
    if (ps.size() == 1) {
      const LoraProjection& p = ps[0];
      return Tensors{fused::LoraLinear(x, p.weight, p.bias, p.a, p.b, p.scale, 0.0, true)};
    }
    return fused::LoraLinearGrouped(x, ps, 0.0, true);
  };
  const GroupFn ref_fn = [](const Tensor& x, const std::vector<LoraProjection>& ps) {
    return reference::LoraLinearGrouped(x, ps, 0.0, true);
  };
  std::string shape = absl::StrCat("N ", n, " in ", in, " out ");
  for (size_t i = 0; i < group.size(); ++i) absl::StrAppend(&shape, i ? "+" : "", group[i].out);
  absl::StrAppend(&shape, " r ", r);
  double ref_ms = 0;
  for (const bool use_fused : {false, true}) {
    const GroupFn& fn = use_fused ? fused_fn : ref_fn;
    Tensors gouts;
    for (const Tensor& y : fn(x, ps)) gouts.push_back(torch::randn_like(y));
    auto fwd_bwd = [&] { torch::autograd::grad(fn(x, ps), wrt, gouts); };
    bench::Row row;
    row.op = op;
    row.impl = use_fused ? "fused" : "reference";
    row.shape = shape;
    row.fwd_ms = bench::TimeCuda([&] { fn(x, ps); }, warmup, reps).median_ms;
    row.fwd_bwd_ms = bench::TimeCuda(fwd_bwd, warmup, reps).median_ms;
    row.peak_mib = static_cast<double>(bench::PeakExtraBytes(fwd_bwd)) / (1 << 20);
    row.rate = absl::StrFormat("%.1f TFLOP/s", Flops(group, n, r) / (row.fwd_bwd_ms * 1e-3) / 1e12);
    if (use_fused) {
      row.speedup = absl::StrFormat("%.2fx", ref_ms / row.fwd_bwd_ms);
    } else {
      ref_ms = row.fwd_bwd_ms;
    }
    rows->push_back(row);
  }
}

int Main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  std::string why;
  if (!bench::GpuAvailable(&why)) {
    std::fprintf(stderr, "lora_kernel_bench: needs a CUDA GPU: %s\n", why.c_str());
    return 1;
  }
  std::vector<int64_t> token_counts;
  for (absl::string_view s : absl::StrSplit(absl::GetFlag(FLAGS_tokens), ',')) {
    int64_t n = 0;
    if (!absl::SimpleAtoi(s, &n) || n <= 0) {
      std::fprintf(stderr, "lora_kernel_bench: bad --tokens entry '%s'\n", std::string(s).c_str());
      return 2;
    }
    token_counts.push_back(n);
  }
  const int64_t r = absl::GetFlag(FLAGS_rank);
  const int warmup = absl::GetFlag(FLAGS_warmup);
  const int reps = absl::GetFlag(FLAGS_reps);
  torch::manual_seed(0);
  const Proj q{"q_proj", 4096, 4096}, k{"k_proj", 4096, 1024}, v{"v_proj", 4096, 1024},
      o{"o_proj", 4096, 4096}, gate{"gate_proj", 4096, 14336}, up{"up_proj", 4096, 14336},
      down{"down_proj", 14336, 4096};
  std::printf(
      "lora_kernel_bench on %s, bf16 model, fp32 adapters, r %lld, warm-up %d, median of %d\n",
      bench::DeviceName().c_str(), static_cast<long long>(r), warmup, reps);
  std::vector<bench::Row> rows;
  for (int64_t n : token_counts) {
    Run("q_proj", {q}, n, r, warmup, reps, &rows);
    Run("k_proj", {k}, n, r, warmup, reps, &rows);
    Run("o_proj", {o}, n, r, warmup, reps, &rows);
    Run("gate_proj", {gate}, n, r, warmup, reps, &rows);
    Run("down_proj", {down}, n, r, warmup, reps, &rows);
    Run("qkv grouped", {q, k, v}, n, r, warmup, reps, &rows);
    Run("gate+up grouped", {gate, up}, n, r, warmup, reps, &rows);
  }
  bench::PrintTable(rows);
  return 0;
}

}  // namespace
}  // namespace fjord::lora::kernels

int main(int argc, char** argv) { return fjord::lora::kernels::Main(argc, argv); }

// Benchmark of attention over packed rows: one call per segment
// (SegmentedCausalAttention, what CausalLM runs) against one call with the
// block-diagonal causal mask (what it ran before), with plain causal rows
// (no packing semantics at all) as the bound. GQA through enable_gqa.
//
//   bazel run -c opt //runtime/model:attention_bench            # CPU, fp32
//   build/cmake/attention_bench                               # GPU (bf16) when one is visible
//
// Rows are packed first-fit with example lengths drawn uniformly from
// [--min_len, --max_len] (fixed seed), padding at the end of each row as the
// packer leaves it. For each implementation: the median wall time of the
// forward and of forward + backward (q, k, v require grad; synchronised on
// CUDA), and the largest difference of its output from the masked call's.
#include <ATen/ops/scaled_dot_product_attention.h>
#include <torch/autograd.h>
#include <torch/cuda.h>
#include <torch/types.h>

#include <algorithm>
#include <cstdio>
#include <functional>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "runtime/model/bench_util.h"
#include "runtime/model/model.h"

ABSL_FLAG(std::string, device, "auto", "cpu, cuda, or auto (cuda when a device is visible).");
ABSL_FLAG(int64_t, batch, 0, "Rows B (0: 2 on CPU, 4 on CUDA).");
ABSL_FLAG(int64_t, seq, 0, "Tokens per row T (0: 1024 on CPU, 2048 on CUDA).");
ABSL_FLAG(int64_t, heads, 0, "Query heads (0: 8 on CPU, 32 on CUDA).");
ABSL_FLAG(int64_t, kv_heads, 0, "Key/value heads (0: 2 on CPU, 8 on CUDA).");
ABSL_FLAG(int64_t, head_dim, 64, "Head dim D (Llama-3.2-1B: 64, Llama-3.1-8B: 128).");
ABSL_FLAG(int64_t, min_len, 0, "Shortest example (0: 32 on CPU, 64 on CUDA).");
ABSL_FLAG(int64_t, max_len, 0, "Longest example (0: 256 on CPU, 1024 on CUDA).");
ABSL_FLAG(int64_t, window, 0,
          "Sliding window (> 0: also time causal rows within it, the full masked call against "
          "WindowedCausalAttention's blocks; 0: 512 on CUDA, 256 on CPU).");
ABSL_FLAG(int, warmup, 2, "Untimed calls before timing.");
ABSL_FLAG(int, reps, 5, "Timed calls (the median is reported).");

namespace fjord::model {
namespace {

using torch::Tensor;

using bench::MedianMs;

using Impl = std::function<Tensor()>;

// Times each implementation (forward, and forward + backward through q, k,
// v) and prints a markdown table against the first one, which is also the
// reference of the last column.
void Table(const std::vector<std::pair<std::string, Impl>>& impls, const Tensor& q, const Tensor& k,
           const Tensor& v, const Tensor& up, bool cuda) {
  std::printf(
      "| implementation | fwd ms | fwd+bwd ms | vs masked (fwd+bwd) | max |out - masked| "
      "|\n|---|---|---|---|---|\n");
  Tensor reference;
  double masked_ms = 0;
  for (const auto& [name, fn] : impls) {
    Tensor out;
    {
      torch::NoGradGuard g;
      out = fn();
    }
    if (!reference.defined()) reference = out;
    const double diff =
        (out.to(torch::kFloat32) - reference.to(torch::kFloat32)).abs().max().item<double>();
    const double fwd = MedianMs(
        [&] {
          torch::NoGradGuard g;
          (void)fn();
        },
        cuda, absl::GetFlag(FLAGS_warmup), absl::GetFlag(FLAGS_reps));
    const double both = MedianMs(
        [&] {
          Tensor o = fn();
          auto grads = torch::autograd::grad({(o * up).sum()}, {q, k, v});
          (void)grads;
        },
        cuda, absl::GetFlag(FLAGS_warmup), absl::GetFlag(FLAGS_reps));
    if (masked_ms == 0) masked_ms = both;
    std::printf("| %s | %.2f | %.2f | %.2fx | %.3g |\n", name.c_str(), fwd, both, masked_ms / both,
                diff);
  }
}

int Main() {
  const absl::StatusOr<bool> use_cuda = bench::UseCuda(absl::GetFlag(FLAGS_device));
  if (!use_cuda.ok()) {
    std::fprintf(stderr, "attention_bench: %s\n", std::string(use_cuda.status().message()).c_str());
    return use_cuda.status().code() == absl::StatusCode::kInvalidArgument ? 2 : 1;
  }
  const bool cuda = *use_cuda;
  auto pick = [&](int64_t v, int64_t cpu, int64_t gpu) { return v > 0 ? v : (cuda ? gpu : cpu); };
  const int64_t b = pick(absl::GetFlag(FLAGS_batch), 2, 4),
                t = pick(absl::GetFlag(FLAGS_seq), 1024, 2048);
  const int64_t hq = pick(absl::GetFlag(FLAGS_heads), 8, 32),
                hk = pick(absl::GetFlag(FLAGS_kv_heads), 2, 8);
  const int64_t d = absl::GetFlag(FLAGS_head_dim);
  const int64_t lo = pick(absl::GetFlag(FLAGS_min_len), 32, 64),
                hi = pick(absl::GetFlag(FLAGS_max_len), 256, 1024);
  const torch::Device device = cuda ? torch::Device(torch::kCUDA) : torch::Device(torch::kCPU);
  const torch::Dtype dtype = cuda ? torch::kBFloat16 : torch::kFloat32;

  // First-fit packing of random example lengths into B rows of T.
  std::mt19937_64 rng(7);
  std::uniform_int_distribution<int64_t> len(lo, std::min(hi, t));
  std::vector<int64_t> used(static_cast<size_t>(b), 0);
  std::vector<std::vector<int64_t>> rows(static_cast<size_t>(b));
  for (int misses = 0; misses < 8;) {
    const int64_t n = len(rng);
    bool placed = false;
    for (size_t r = 0; r < rows.size() && !placed; ++r) {
      if (used[r] + n <= t) {
        rows[r].push_back(n);
        used[r] += n;
        placed = true;
      }
    }
    misses = placed ? 0 : misses + 1;
  }
  Tensor seg = torch::zeros({b, t}, torch::kInt64);
  int64_t segments = 0;
  for (size_t r = 0; r < rows.size(); ++r) {
    int64_t at = 0, id = 1;
    for (int64_t n : rows[r]) {
      seg[static_cast<int64_t>(r)].narrow(0, at, n).fill_(id++);
      at += n;
      ++segments;
    }
  }
  const AttentionLayout runs = AttentionLayout::FromSegments(seg, device);
  if (runs.segment_lengths.empty()) {
    std::fprintf(stderr, "attention_bench: these lengths give no per-segment layout\n");
    return 1;
  }
  const Tensor mask = BlockDiagonalCausalMask(seg, device);

  torch::manual_seed(0);
  auto opts = torch::TensorOptions(dtype).device(device);
  Tensor q = torch::randn({b, hq, t, d}, opts).requires_grad_(true);
  Tensor k = torch::randn({b, hk, t, d}, opts).requires_grad_(true);
  Tensor v = torch::randn({b, hk, t, d}, opts).requires_grad_(true);
  Tensor up = torch::randn({b, hq, t, d}, opts);
  const bool gqa = hq != hk;
  const std::vector<std::pair<std::string, Impl>> impls = {
      {"masked (block-diagonal)",
       [&] {
         return at::scaled_dot_product_attention(q, k, v, mask, 0.0, false, std::nullopt, gqa);
       }},
      {"per segment (fjord)",
       [&] { return SegmentedCausalAttention(q, k, v, runs.segment_lengths, 0.0); }},
      {"causal rows (no packing)",
       [&] { return at::scaled_dot_product_attention(q, k, v, {}, 0.0, true, std::nullopt, gqa); }},
  };
  std::printf(
      "attention_bench: %s %s, B %ld, T %ld, heads %ld/%ld, D %ld, %ld segments (lengths %ld-%ld, "
      "mean %.0f), "
      "median of %d\n",
      cuda ? "cuda" : "cpu", cuda ? "bf16" : "fp32", static_cast<long>(b), static_cast<long>(t),
      static_cast<long>(hq), static_cast<long>(hk), static_cast<long>(d),
      static_cast<long>(segments), static_cast<long>(lo), static_cast<long>(hi),
      static_cast<double>(std::accumulate(used.begin(), used.end(), int64_t{0})) /
          static_cast<double>(segments),
      absl::GetFlag(FLAGS_reps));
  Table(impls, q, k, v, up, cuda);
  std::printf(
      "(causal rows attend across segments: its difference from the masked call is expected)\n");

  // Sliding-window rows (Mistral v0.1, Phi-3-mini, Gemma 3's local layers):
  // one call with the full (T, T) windowed mask against blocks of `window`
  // queries over the keys they can see.
  const int64_t w = pick(absl::GetFlag(FLAGS_window), 256, 512);
  const Tensor wmask = SlidingWindowMask(b, t, AttentionLayout{}, w, device);
  const std::vector<std::pair<std::string, Impl>> windowed = {
      {"window: full masked call",
       [&] {
         return at::scaled_dot_product_attention(q, k, v, wmask, 0.0, false, std::nullopt, gqa);
       }},
      {"window: blocks (fjord)", [&] { return WindowedCausalAttention(q, k, v, w, 0.0); }},
  };
  std::printf("\nsliding window %ld over causal rows of %ld:\n", static_cast<long>(w),
              static_cast<long>(t));
  Table(windowed, q, k, v, up, cuda);
  return 0;
}

}  // namespace
}  // namespace fjord::model

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  return fjord::model::Main();
}

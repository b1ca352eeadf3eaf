// Benchmark of several LoRA adapters on one base (lora::MultiLora): one
// training step for all K adapters together (every base GEMM once over all
// their rows) against K steps one adapter at a time on the same base
// (Only(k): what one process serving K jobs in turn would do), plus the
// memory that one shared base saves over K processes each holding its own.
//
//   bazel run -c opt //lora:multi_lora_bench                 # CPU, fp32, cpu-30m's shapes
//   bazel run -c opt //lora:multi_lora_bench -- --adapters 8 --rows 1
//   build/cmake/multi_lora_bench                           # GPU (bf16) when one is visible
//
// A step: Hidden, the per-adapter summed cross-entropy (LossSums / LossSum),
// each divided by its own trained tokens, backward. The two ways give the
// same gradients (checked: the largest difference is printed). Reported: the
// median wall time of a step of all K adapters (synchronised on CUDA), and
// trained tokens per second.
#include <ATen/Context.h>
#include <torch/cuda.h>
#include <torch/types.h>

#include <algorithm>
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "lora/multi_lora.h"
#include "runtime/model/bench_util.h"
#include "runtime/model/model.h"

ABSL_FLAG(std::string, device, "auto", "cpu, cuda, or auto (cuda when a device is visible).");
ABSL_FLAG(int, adapters, 4, "K adapters.");
ABSL_FLAG(int64_t, rows, 1, "Rows of each adapter in a step.");
ABSL_FLAG(int64_t, seq, 0, "Tokens per row T (0: 256 on CPU, 2048 on CUDA).");
ABSL_FLAG(int64_t, hidden, 0, "Hidden size (0: 512 on CPU, 2048 on CUDA: Llama-3.2-1B).");
ABSL_FLAG(int64_t, intermediate, 0, "MLP size (0: 1376 on CPU, 8192 on CUDA).");
ABSL_FLAG(int64_t, layers, 0, "Decoder layers (0: 4 on CPU, 16 on CUDA).");
ABSL_FLAG(int64_t, heads, 0, "Query heads (0: 8 on CPU, 32 on CUDA).");
ABSL_FLAG(int64_t, kv_heads, 0, "Key/value heads (0: 8 on CPU, 8 on CUDA).");
ABSL_FLAG(int64_t, vocab, 0, "Vocabulary (0: 32000 on CPU, 128256 on CUDA).");
ABSL_FLAG(int64_t, rank, 16, "LoRA rank of every adapter (all-linear targets).");
ABSL_FLAG(int, warmup, 1, "Untimed steps first.");
ABSL_FLAG(int, reps, 3, "Timed steps (the median is reported).");

namespace fjord {
namespace {

using torch::Tensor;

using bench::MedianMs;

int64_t Or(int64_t flag, int64_t cpu, int64_t gpu, bool cuda) {
  return flag > 0 ? flag : (cuda ? gpu : cpu);
}

int Run() {
  const absl::StatusOr<bool> use_cuda = bench::UseCuda(absl::GetFlag(FLAGS_device));
  if (!use_cuda.ok()) {
    std::fprintf(stderr, "multi_lora_bench: %s\n",
                 std::string(use_cuda.status().message()).c_str());
    return 2;
  }
  const bool cuda = *use_cuda;
  if (!cuda) at::globalContext().setFlushDenormal(true);
  const torch::Device device = cuda ? torch::Device(torch::kCUDA, 0) : torch::Device(torch::kCPU);
  const torch::Dtype dtype = cuda ? torch::kBFloat16 : torch::kFloat32;
  const int k_count = absl::GetFlag(FLAGS_adapters);
  const int64_t rows = absl::GetFlag(FLAGS_rows);
  const int64_t t = Or(absl::GetFlag(FLAGS_seq), 256, 2048, cuda);
  if (k_count < 1 || rows < 1 || t < 2) {
    std::fprintf(stderr, "multi_lora_bench: --adapters, --rows >= 1 and --seq >= 2\n");
    return 2;
  }

  ModelConfig c;
  c.architecture = "LlamaForCausalLM";
  c.model_type = "llama";
  c.hidden_size = Or(absl::GetFlag(FLAGS_hidden), 512, 2048, cuda);
  c.intermediate_size = Or(absl::GetFlag(FLAGS_intermediate), 1376, 8192, cuda);
  c.num_hidden_layers = Or(absl::GetFlag(FLAGS_layers), 4, 16, cuda);
  c.num_attention_heads = Or(absl::GetFlag(FLAGS_heads), 8, 32, cuda);
  c.num_key_value_heads = Or(absl::GetFlag(FLAGS_kv_heads), 8, 8, cuda);
  c.head_dim = c.hidden_size / c.num_attention_heads;
  c.vocab_size = Or(absl::GetFlag(FLAGS_vocab), 32000, 128256, cuda);
  c.max_position_embeddings = std::max<int64_t>(4096, t);
  c.tie_word_embeddings = true;
  std::shared_ptr<CausalLM> lm = CausalLM::RandomInit(c, dtype, device, 0);
  lm->train();

  std::vector<lora::MultiLora::Member> members(static_cast<size_t>(k_count));
  for (int k = 0; k < k_count; ++k) {
    members[k].config.r = absl::GetFlag(FLAGS_rank);
    members[k].config.alpha = 2.0 * static_cast<double>(members[k].config.r);
    members[k].seed = static_cast<uint64_t>(k);
  }
  auto attached = lora::MultiLora::Attach(*lm, members);
  if (!attached.ok()) {
    std::fprintf(stderr, "multi_lora_bench: %s\n", attached.status().ToString().c_str());
    return 1;
  }
  lora::MultiLora& multi = **attached;
  {
    torch::NoGradGuard g;  // B nonzero, so every adapter changes the output
    for (int k = 0; k < k_count; ++k) {
      for (auto& [name, p] : multi.NamedParameters(k)) {
        if (name.find("lora_B") != std::string::npos) p.normal_(0, 0.01);
      }
    }
  }

  const int64_t b = rows * k_count;
  torch::manual_seed(1);
  const Tensor ids = torch::randint(0, c.vocab_size, {b, t}, torch::kInt64).to(device);
  const Tensor targets = torch::randint(0, c.vocab_size, {b, t}, torch::kInt64).to(device);
  const Tensor positions =
      torch::arange(t, torch::kInt64).view({1, t}).expand({b, t}).contiguous().to(device);
  const double tokens_each = static_cast<double>(rows * t);

  auto zero_grads = [&] {
    for (int k = 0; k < k_count; ++k) {
      for (auto& [name, p] : multi.NamedParameters(k)) p.mutable_grad() = Tensor();
    }
  };
  auto grads = [&] {
    std::vector<Tensor> out;
    for (int k = 0; k < k_count; ++k) {
      for (auto& [name, p] : multi.NamedParameters(k)) out.push_back(p.grad().clone());
    }
    return out;
  };
  auto joint = [&] {
    zero_grads();
    (void)multi.SetRows(std::vector<int64_t>(static_cast<size_t>(k_count), rows));
    const Tensor hidden = lm->Hidden(ids, positions, Tensor());
    auto sums = multi.LossSums(*lm, hidden, targets);
    Tensor total = torch::zeros({}, hidden.options().dtype(torch::kFloat32));
    for (const Tensor& s : *sums) total = total + s / tokens_each;
    total.backward();
  };
  auto in_turn = [&] {
    zero_grads();
    for (int k = 0; k < k_count; ++k) {
      auto only = multi.Only(k);
      const Tensor hidden =
          lm->Hidden(ids.narrow(0, k * rows, rows), positions.narrow(0, k * rows, rows), Tensor());
      (lm->LossSum(hidden, targets.narrow(0, k * rows, rows)) / tokens_each).backward();
    }
  };
  joint();
  const std::vector<Tensor> g_joint = grads();
  in_turn();
  const std::vector<Tensor> g_turn = grads();
  double diff = 0, scale = 0;
  for (size_t i = 0; i < g_joint.size(); ++i) {
    diff = std::max(diff, (g_joint[i] - g_turn[i]).abs().max().item<double>());
    scale = std::max(scale, g_turn[i].abs().max().item<double>());
  }

  const int warmup = absl::GetFlag(FLAGS_warmup), reps = absl::GetFlag(FLAGS_reps);
  const double ms_joint = MedianMs(joint, cuda, warmup, reps);
  const double ms_turn = MedianMs(in_turn, cuda, warmup, reps);

  int64_t adapter_bytes = 0;
  for (int k = 0; k < k_count; ++k) {
    for (auto& [name, p] : multi.NamedParameters(k)) adapter_bytes += p.numel() * p.element_size();
  }
  const double base_mib = static_cast<double>(lm->BaseBytes()) / (1 << 20);
  std::printf(
      "device %s, %s; model hidden %lld, %lld layers, vocab %lld; %d adapters of rank "
      "%lld (all-linear), %lld row(s) of %lld tokens each\n",
      cuda ? "cuda" : "cpu", cuda ? "bf16" : "fp32", static_cast<long long>(c.hidden_size),
      static_cast<long long>(c.num_hidden_layers), static_cast<long long>(c.vocab_size), k_count,
      static_cast<long long>(absl::GetFlag(FLAGS_rank)), static_cast<long long>(rows),
      static_cast<long long>(t));
  std::printf("gradients: largest difference between the two ways %.3g (largest entry %.3g)\n",
              diff, scale);
  std::printf("%-34s %12s %16s\n", "step of all adapters", "median ms", "tokens/s");
  const double tokens = tokens_each * k_count;
  std::printf("%-34s %12.1f %16.0f\n", "together (MultiLora rows)", ms_joint,
              tokens / (ms_joint / 1000));
  std::printf("%-34s %12.1f %16.0f\n", "one adapter at a time (Only(k))", ms_turn,
              tokens / (ms_turn / 1000));
  std::printf("speed-up together: %.2fx\n", ms_turn / ms_joint);
  std::printf(
      "memory: base %.1f MiB held once; %d adapters %.2f MiB (+ AdamW 2x that); %d "
      "processes of one adapter each would hold the base %d times: %.1f MiB\n",
      base_mib, k_count, static_cast<double>(adapter_bytes) / (1 << 20), k_count, k_count,
      base_mib * k_count);
  return 0;
}

}  // namespace
}  // namespace fjord

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  return fjord::Run();
}

// Benchmark of generation (model/generation.h): prefill and decode tokens/s
// with the KV cache, against decoding without one (every step re-runs the
// whole sequence, what train::GreedyGenerate did before the cache).
//
//   bazel run -c opt //runtime/model:generation_bench            # CPU, fp32
//   build/cmake/generation_bench                                # GPU (bf16) when one is visible
//
// A random Llama-shaped model (--hidden, --layers, --heads, --kv_heads,
// --vocab), --batch prompts of --prompt tokens, --new greedy tokens each.
// Reports the median over --repeat runs of: prefill tokens/s (B·P over the
// prefill forward), decode tokens/s (B·N over the decode steps), and the
// uncached decode's tokens/s; the ids of the two are checked equal.
#include <torch/cuda.h>
#include <torch/types.h>
#include <torch/utils.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "runtime/model/generation.h"
#include "runtime/model/model.h"

ABSL_FLAG(std::string, device, "auto", "cpu, cuda, or auto (cuda when a device is visible).");
ABSL_FLAG(int64_t, hidden, 512, "Hidden size C.");
ABSL_FLAG(int64_t, layers, 8, "Decoder layers.");
ABSL_FLAG(int64_t, heads, 8, "Query heads.");
ABSL_FLAG(int64_t, kv_heads, 2, "Key/value heads.");
ABSL_FLAG(int64_t, vocab, 32000, "Vocabulary V.");
ABSL_FLAG(int64_t, batch, 4, "Prompts B.");
ABSL_FLAG(int64_t, prompt, 128, "Tokens per prompt P.");
ABSL_FLAG(int64_t, new_tokens, 64, "New tokens N per prompt.");
ABSL_FLAG(int, repeat, 3, "Runs; the median is reported.");

namespace fjord::model {
namespace {

double Seconds(std::chrono::steady_clock::time_point since) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - since).count();
}

int Main() {
  const bool cuda = absl::GetFlag(FLAGS_device) == "cuda" ||
                    (absl::GetFlag(FLAGS_device) == "auto" && torch::cuda::is_available());
  const torch::Device device = cuda ? torch::Device(torch::kCUDA, 0) : torch::Device(torch::kCPU);
  const torch::Dtype dtype = cuda ? torch::kBFloat16 : torch::kFloat32;
  ModelConfig c;
  c.architecture = "LlamaForCausalLM";
  c.model_type = "llama";
  c.hidden_size = absl::GetFlag(FLAGS_hidden);
  c.intermediate_size = c.hidden_size * 8 / 3;
  c.num_hidden_layers = absl::GetFlag(FLAGS_layers);
  c.num_attention_heads = absl::GetFlag(FLAGS_heads);
  c.num_key_value_heads = absl::GetFlag(FLAGS_kv_heads);
  c.head_dim = c.hidden_size / c.num_attention_heads;
  c.vocab_size = absl::GetFlag(FLAGS_vocab);
  c.max_position_embeddings = 4096;
  auto lm = CausalLM::RandomInit(c, dtype, device, 1);
  lm->eval();
  const int64_t b = absl::GetFlag(FLAGS_batch), p = absl::GetFlag(FLAGS_prompt),
                n = absl::GetFlag(FLAGS_new_tokens);
  torch::manual_seed(2);
  const torch::Tensor ids = torch::randint(c.vocab_size, {b, p}, torch::kInt64);
  std::vector<std::vector<int32_t>> prompts(static_cast<size_t>(b));
  for (int64_t r = 0; r < b; ++r) {
    for (int64_t j = 0; j < p; ++j)
      prompts[r].push_back(static_cast<int32_t>(ids[r][j].item<int64_t>()));
  }
  auto sync = [&] {
    if (cuda) torch::cuda::synchronize();
  };
  torch::NoGradGuard no_grad;
  std::vector<double> prefill, decode, uncached;
  for (int run = 0; run < absl::GetFlag(FLAGS_repeat); ++run) {
    // Prefill alone: one cached forward of the prompts.
    sync();
    auto t0 = std::chrono::steady_clock::now();
    {
      KvCache cache;
      torch::Tensor pos = torch::arange(p, torch::kInt64).unsqueeze(0).expand({b, p}).contiguous();
      torch::Tensor h = lm->HiddenWithCache(ids.to(device), pos.to(device), cache);
      lm->Logits(h.narrow(1, p - 1, 1));
    }
    sync();
    const double t_prefill = Seconds(t0);
    // The whole generation; decode = total - prefill.
    GenerationOptions opt;
    opt.max_new_tokens = n;
    t0 = std::chrono::steady_clock::now();
    std::vector<Generated> out = *Generate(*lm, prompts, opt);
    sync();
    const double t_total = Seconds(t0);
    // Without a cache: every step runs the whole (B, P + i) batch.
    t0 = std::chrono::steady_clock::now();
    torch::Tensor seq = ids.to(device);
    for (int64_t i = 0; i < n; ++i) {
      const int64_t t = seq.size(1);
      torch::Tensor pos =
          torch::arange(t, torch::kInt64).unsqueeze(0).expand({b, t}).contiguous().to(device);
      torch::Tensor next = lm->Logits(lm->Hidden(seq, pos, torch::Tensor()).narrow(1, t - 1, 1))
                               .argmax(-1);  // (B, 1)
      seq = torch::cat({seq, next}, 1);
    }
    sync();
    const double t_uncached = Seconds(t0) - t_prefill;
    for (int64_t r = 0; r < b; ++r) {
      torch::Tensor mine =
          torch::tensor(std::vector<int64_t>(out[r].ids.begin(), out[r].ids.end()));
      if (!torch::equal(mine, seq[r].narrow(0, p, n).cpu())) {
        std::fprintf(stderr, "generation_bench: cached and uncached ids differ in row %ld\n",
                     static_cast<long>(r));
        return 1;
      }
    }
    prefill.push_back(static_cast<double>(b * p) / t_prefill);
    decode.push_back(static_cast<double>(b * n) / std::max(1e-9, t_total - t_prefill));
    uncached.push_back(static_cast<double>(b * n) / std::max(1e-9, t_uncached));
  }
  auto median = [](std::vector<double> v) {
    std::sort(v.begin(), v.end());
    return v[v.size() / 2];
  };
  std::printf(
      "generation_bench: %s %s, C %ld, %ld layers, %ld/%ld heads, V %ld; B %ld, prompt %ld, new "
      "%ld\n"
      "  prefill           %10.1f tokens/s\n"
      "  decode (cache)    %10.1f tokens/s\n"
      "  decode (no cache) %10.1f tokens/s   (ids equal)\n",
      cuda ? "cuda" : "cpu", cuda ? "bf16" : "fp32", static_cast<long>(c.hidden_size),
      static_cast<long>(c.num_hidden_layers), static_cast<long>(c.num_attention_heads),
      static_cast<long>(c.num_key_value_heads), static_cast<long>(c.vocab_size),
      static_cast<long>(b), static_cast<long>(p), static_cast<long>(n), median(prefill),
      median(decode), median(uncached));
  return 0;
}

}  // namespace
}  // namespace fjord::model

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  return fjord::model::Main();
}

// train_bench: fjord's side of tools/bench/train_bench.py. LoRA fine-tuning
// steps on random token batches, timed, with the same setup as the script's
// transformers + peft side: LoRA (r, alpha 2r, no dropout) on every linear
// layer but lm_head, AdamW (lr 1e-4) over the adapters, batches drawn once
// (2 of them, alternating), next-token loss over the whole row.
//
//   train_bench --model DIR [--batch 8] [--seq 256] [--rank 16] [--steps 6]
//       [--warmup 2] [--device cpu|cuda] [--dtype float32|bfloat16]
//       [--threads N] [--checkpointing] [--kernels auto|fused|reference]
//       [--quantization none|nf4]   (nf4: the base's decoder linear weights in 4 bits)
//       [--segments K]   (packed rows: K sequences per row, attention per sequence)
//       [--lm_head]   (LoRA on lm_head too: the chunked adapted-head loss)
//       [--init_from DIR]   (start from this PEFT adapter's A and B: the
//                            harness's, which every side loads)
//       [--profile]   (per-phase times on stderr)
//
// Prints one JSON line: {"tokens_per_s", "tokens_per_cpu_s", "peak_bytes",
// "loss", "step_s": [...], "threads", "lora_params", "base_bytes",
// "load_peak_bytes", "start_peak_bytes"} (base_bytes: what the frozen base
// holds, 4-bit weights as stored; load_peak_bytes and start_peak_bytes:
// peak_bytes's measure right after and right before loading). tokens_per_s counts
// batch·seq tokens per second over the steps after the warm-up ones
// (tokens_per_cpu_s: per second of the process's user + system CPU time);
// peak_bytes is the CUDA caching allocator's peak allocated bytes over the
// timed and warm-up steps on a GPU (reset after loading, as the Python side
// does), the process's peak RSS on CPU.
// Exit status: 0 ok, 1 error, 2 bad usage.
#include <ATen/CPUGeneratorImpl.h>
#include <sys/resource.h>
#include <torch/cuda.h>
#include <torch/types.h>

#include <chrono>
#include <cstdio>
#include <iostream>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "lora/adapter.h"
#include "runtime/kernels/fused.h"
#include "runtime/kernels/ops.h"
#include "runtime/kernels/self_test.h"
#include "runtime/model/model.h"
#include "runtime/train/optimizer.h"

#if FJORD_KERNELS_FUSED
#include <c10/cuda/CUDACachingAllocator.h>
#endif

namespace fjord::lora {
namespace {

int64_t PeakBytes(const torch::Device& device) {
#if FJORD_KERNELS_FUSED
  if (device.is_cuda()) {
    return c10::cuda::CUDACachingAllocator::getDeviceStats(device.index()).allocated_bytes[0].peak;
  }
#else
  (void)device;
#endif
  struct rusage usage {};
  getrusage(RUSAGE_SELF, &usage);
  return static_cast<int64_t>(usage.ru_maxrss) * 1024;
}

// User + system CPU time of the process so far.
double CpuSeconds() {
  struct rusage usage {};
  getrusage(RUSAGE_SELF, &usage);
  return static_cast<double>(usage.ru_utime.tv_sec + usage.ru_stime.tv_sec) +
         1e-6 * static_cast<double>(usage.ru_utime.tv_usec + usage.ru_stime.tv_usec);
}

int Fail(const std::string& message) {
  std::cerr << "train_bench: " << message << "\n";
  return 1;
}

int Main(int argc, char** argv) {
  std::map<std::string, std::string> flags = {
      {"batch", "8"},      {"seq", "256"},           {"rank", "16"},       {"steps", "6"},
      {"warmup", "2"},     {"device", "cpu"},        {"dtype", "float32"}, {"threads", "0"},
      {"kernels", "auto"}, {"quantization", "none"}, {"segments", "1"},    {"init_from", ""}};
  bool checkpointing = false, profile = false, lm_head = false;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--checkpointing" || a == "--profile" || a == "--lm_head") {
      (a == "--profile" ? profile : a == "--lm_head" ? lm_head : checkpointing) = true;
      continue;
    }
    if (a.rfind("--", 0) != 0 || i + 1 >= argc || (a != "--model" && !flags.count(a.substr(2)))) {
      std::cerr << "train_bench: bad argument '" << a << "'\n";
      return 2;
    }
    flags[a.substr(2)] = argv[++i];
  }
  if (!flags.count("model")) {
    std::cerr << "train_bench: --model is required\n";
    return 2;
  }
  int64_t batch = 0, seq = 0, rank = 0, steps = 0, warmup = 0, threads = 0, segments = 1;
  for (auto [name, out] : {std::pair{"batch", &batch},
                           {"segments", &segments},
                           {"seq", &seq},
                           {"rank", &rank},
                           {"steps", &steps},
                           {"warmup", &warmup},
                           {"threads", &threads}}) {
    if (!absl::SimpleAtoi(flags[name], out) || *out < 0) {
      std::cerr << "train_bench: --" << name << " must be a non-negative integer\n";
      return 2;
    }
  }
  if (segments < 1 || segments > seq) {
    std::cerr << "train_bench: --segments must be in [1, --seq]\n";
    return 2;
  }
  if (threads > 0) torch::set_num_threads(static_cast<int>(threads));
  const bool cuda = flags["device"] == "cuda";
  if (cuda && !torch::cuda::is_available()) return Fail("--device cuda: no CUDA device");
  const torch::Device device = cuda ? torch::Device(torch::kCUDA, 0) : torch::Device(torch::kCPU);
  const torch::Dtype dtype = flags["dtype"] == "bfloat16" ? torch::kBFloat16 : torch::kFloat32;
  kernels::SetBackend(flags["kernels"] == "fused"       ? kernels::Backend::kFused
                      : flags["kernels"] == "reference" ? kernels::Backend::kReference
                                                        : kernels::Backend::kAuto);
  if (cuda) {
    std::string report;
    if (absl::Status s = kernels::RunKernelSelfTest(&report); !s.ok())
      return Fail(std::string(s.message()));
    std::cerr << "kernel self-test: " << report << "\n";
  }

  if (flags["quantization"] != "none" && flags["quantization"] != "nf4") {
    std::cerr << "train_bench: --quantization must be none or nf4\n";
    return 2;
  }
  const int64_t start_peak_bytes = PeakBytes(device);
  model::LoadOptions load;
  load.dtype = dtype;
  load.device = device;
  load.quantization = flags["quantization"] == "nf4" ? "nf4" : "";
  absl::StatusOr<std::shared_ptr<CausalLM>> lm = CausalLM::FromPretrained(flags["model"], load);
  if (!lm.ok()) return Fail(std::string(lm.status().message()));
  const int64_t base_bytes = (*lm)->BaseBytes();
  const int64_t load_peak_bytes = PeakBytes(device);
  LoraConfig config;
  config.r = rank;
  config.alpha = 2.0 * static_cast<double>(rank);
  config.dropout = 0;
  if (lm_head) {
    // Every linear layer, as all-linear, and lm_head (PEFT's names; Phi-3's
    // fused ones included).
    config.target_modules =
        TargetModules::Names({"q_proj", "k_proj", "v_proj", "o_proj", "qkv_proj", "gate_proj",
                              "up_proj", "down_proj", "gate_up_proj", "lm_head"});
  }
  absl::StatusOr<std::unique_ptr<LoraAdapter>> adapter = LoraAdapter::Inject(**lm, config, 0);
  if (!adapter.ok()) return Fail(std::string(adapter.status().message()));
  if (!flags["init_from"].empty()) {
    if (absl::Status s = (*adapter)->LoadWeights(flags["init_from"]); !s.ok()) {
      return Fail(absl::StrCat("--init_from: ", s.message()));
    }
  }
  (*lm)->train();
  (*lm)->SetGradientCheckpointing(checkpointing);
  const auto params = (*adapter)->NamedParameters();
  train::AdamW optimizer(params, {});

  // The same two batches the Python side draws (torch.randint with a
  // generator seeded 1), as next-token targets. With --segments K each row
  // packs K sequences (K-1 of seq / K tokens, the last takes the rest): the
  // positions restart and attention stays within each, and the last token of
  // each predicts nothing, as the Python side's labels say.
  at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(1);
  const int64_t vocab = (*lm)->config().vocab_size;
  torch::Tensor seg = torch::empty({seq}, torch::kInt64);
  for (int64_t t = 0; t < seq; ++t) seg[t] = std::min(t / (seq / segments), segments - 1) + 1;
  seg = seg.unsqueeze(0).expand({batch, seq}).contiguous();  // (B, T), 1-based
  torch::Tensor ends = torch::cat({seg.narrow(1, 1, seq - 1) != seg.narrow(1, 0, seq - 1),
                                   torch::ones({batch, 1}, torch::kBool)},
                                  1);  // (B, T): true at each sequence's last token
  std::vector<std::pair<torch::Tensor, torch::Tensor>> batches;
  for (int i = 0; i < 2; ++i) {
    torch::Tensor x = at::randint(0, vocab, {batch, seq}, gen, torch::kInt64);  // (B, T)
    torch::Tensor y =
        torch::cat({x.narrow(1, 1, seq - 1), torch::zeros({batch, 1}, torch::kInt64)}, 1)
            .masked_fill(ends, -100);
    batches.emplace_back(x.to(device), y.to(device));
  }
  torch::Tensor pos = model::PositionsFromSegments(seg).to(device);
  // Undefined for one sequence per row: the plain causal path, as before.
  const torch::Tensor segment_ids = segments > 1 ? seg : torch::Tensor();
  const double trained = static_cast<double>(batch * (seq - segments));
#if FJORD_KERNELS_FUSED
  // As the Python side: the peak of the training steps (weights, adapters,
  // batches and what the steps allocate), not of loading or the self-test.
  if (cuda) {
    torch::cuda::synchronize();
    c10::cuda::CUDACachingAllocator::resetPeakStats(device.index());
  }
#endif

  std::vector<double> times;
  double last_loss = 0;
  double cpu_start = 0;
  for (int64_t step = 0; step < warmup + steps; ++step) {
    if (step == warmup) cpu_start = CpuSeconds();
    const auto& [x, y] = batches[step % 2];
    if (cuda) torch::cuda::synchronize();
    const auto t0 = std::chrono::steady_clock::now();
    auto lap = [&, last = t0]() mutable {
      if (cuda) torch::cuda::synchronize();
      const auto now = std::chrono::steady_clock::now();
      const double s = std::chrono::duration<double>(now - last).count();
      last = now;
      return s;
    };
    torch::Tensor hidden = (*lm)->Hidden(x, pos, segment_ids);  // (B, T, C)
    const double t_forward = lap();
    torch::Tensor loss = (*lm)->LossSum(hidden, y) / trained;
    const double t_loss = lap();
    loss.backward();
    const double t_backward = lap();
    optimizer.Step(1e-4);
    optimizer.ZeroGrad();
    const double t_step = lap();
    last_loss = loss.item<double>();
    if (cuda) torch::cuda::synchronize();
    const double dt = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (profile) {
      std::cerr << "  forward " << t_forward << " s, loss (+its gradient) " << t_loss
                << " s, backward " << t_backward << " s, optimizer " << t_step << " s\n";
    }
    if (step >= warmup) times.push_back(dt);
    std::cerr << "step " << step << ": " << dt << " s, loss " << last_loss << "\n";
  }
  const double cpu = CpuSeconds() - cpu_start;
  double total = 0;
  for (double t : times) total += t;
  nlohmann::json out = {
      {"tokens_per_s",
       total > 0 ? static_cast<double>(batch * seq) * static_cast<double>(times.size()) / total
                 : 0.0},
      {"tokens_per_cpu_s",
       cpu > 0 ? static_cast<double>(batch * seq) * static_cast<double>(times.size()) / cpu : 0.0},
      {"peak_bytes", PeakBytes(device)},
      {"loss", last_loss},
      {"step_s", times},
      {"threads", torch::get_num_threads()},
      {"lora_params", (*adapter)->num_parameters()},
      {"base_bytes", base_bytes},
      {"load_peak_bytes", load_peak_bytes},
      {"start_peak_bytes", start_peak_bytes},
  };
  std::printf("%s\n", out.dump().c_str());
  return 0;
}

}  // namespace
}  // namespace fjord::lora

int main(int argc, char** argv) { return fjord::lora::Main(argc, argv); }

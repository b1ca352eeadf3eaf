// A training loop of your own: the model, the LoRA layers and the optimizer
// used directly, without RunTraining. One forward, loss, backward and step
// per batch, written out so that each piece can be changed (another loss, a
// second model, a different schedule): the runtime's trainer
// (runtime/train/trainer.cc) is the same loop with gradient accumulation,
// evaluation, checkpoints and resume around it.
//
//   custom_loop MODEL_DIR TRAIN.jsonl OUT_DIR [STEPS]
//
// With the demo model, from the repository root:
//
//   bazel build //tools/demo //examples:custom_loop
//   d=bazel-bin/tools/demo/out
//   bazel-bin/examples/custom_loop $d/model $d/data/train.jsonl /tmp/custom 30
//
// Walked through in docs/embedding.md.
//
// Shape legend: B batch rows, T tokens per row, C hidden.
#include <ATen/Context.h>
#include <torch/cuda.h>
#include <torch/types.h>
#include <torch/utils.h>

#include <cstdio>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/numbers.h"
#include "lora/adapter.h"
#include "runtime/data/dataset.h"
#include "runtime/data/loader.h"
#include "runtime/data/tokenizer_adapter.h"
#include "runtime/data/torch_batch.h"
#include "runtime/kernels/self_test.h"
#include "runtime/model/model.h"
#include "runtime/tokenizer/tokenizer.h"
#include "runtime/train/optimizer.h"
#include "runtime/util/status_macros.h"
#include "runtime/util/torch_status.h"

namespace fjord {

constexpr int64_t kRows = 4;      // B
constexpr int64_t kSeqLen = 128;  // T
constexpr double kPeakLr = 2e-3;

absl::Status Train(const std::string& model_dir, const std::string& train_jsonl,
                   const std::string& out_dir, int64_t steps) {
  // ---- The process: your program's to set (RunTraining's choices: trainer.h).
  const bool cuda = torch::cuda::is_available();
  const torch::Device device = cuda ? torch::Device(torch::kCUDA, 0) : torch::Device(torch::kCPU);
  if (cuda) {
    // The fused CUDA kernels run (under the default kernels::Backend::kAuto)
    // only once they have passed this check on this GPU.
    std::string report;
    FJORD_RETURN_IF_ERROR(kernels::RunKernelSelfTest(&report));
  } else {
    at::globalContext().setFlushDenormal(true);  // subnormal floats are ~100x slower on x86
  }
  torch::manual_seed(0);  // the generator LoRA dropout draws from

  // ---- The base model: frozen (every weight has requires_grad false).
  FJORD_ASSIGN_OR_RETURN(
      std::shared_ptr<CausalLM> model,
      CausalLM::FromPretrained(model_dir, cuda ? torch::kBFloat16 : torch::kFloat32, device));

  // ---- The data: JSONL -> chat template -> token ids and labels -> packed rows.
  FJORD_ASSIGN_OR_RETURN(std::unique_ptr<tokenizer::Tokenizer> tokenizer,
                         tokenizer::Tokenizer::FromFile(model_dir + "/tokenizer.json"));
  data::TokenizerAdapter data_tokenizer(*tokenizer);
  data::DataOptions data_options;  // chat template: picked from the tokenizer's special tokens
  data_options.max_length = kSeqLen;
  data_options.truncate = true;
  FJORD_ASSIGN_OR_RETURN(data::Dataset dataset,
                         data::LoadJsonl(train_jsonl, data_tokenizer, data_options));
  data::LoaderOptions loader_options;
  loader_options.seq_len = kSeqLen;
  loader_options.seed = 0;
  FJORD_ASSIGN_OR_RETURN(
      std::unique_ptr<data::DataLoader> loader,
      data::DataLoader::Create(
          std::make_shared<const std::vector<data::Example>>(std::move(dataset.examples)),
          loader_options));

  // ---- LoRA layers on the attention's q_proj and v_proj (fp32, on the model's device).
  lora::LoraConfig lora_config;
  lora_config.r = 8;
  lora_config.alpha = 16;
  lora_config.dropout = 0.05;
  lora_config.target_modules = lora::TargetModules::Names({"q_proj", "v_proj"});
  lora_config.base_model_name_or_path = model_dir;
  FJORD_ASSIGN_OR_RETURN(std::unique_ptr<lora::LoraAdapter> adapter,
                         lora::LoraAdapter::Inject(*model, lora_config, /*seed=*/0));
  std::printf("%lld trainable parameters in %zu LoRA layers\n",
              static_cast<long long>(adapter->num_parameters()), adapter->layers().size());

  // ---- AdamW over the adapter's parameters only.
  const std::vector<std::pair<std::string, torch::Tensor>> named = adapter->NamedParameters();
  std::vector<torch::Tensor> params;
  for (const auto& [name, p] : named) params.push_back(p);
  train::AdamW optimizer(named, train::AdamWOptions{});

  // ---- The loop.
  model->train();  // LoRA dropout on
  for (int64_t step = 0; step < steps; ++step) {
    FJORD_ASSIGN_OR_RETURN(data::PackedBatch packed, loader->NextBatch(kRows));
    FJORD_ASSIGN_OR_RETURN(data::TorchBatch batch, data::ToTorch(packed));  // on the host
    const double lr =
        train::LearningRate("cosine", kPeakLr, step, steps, /*warmup=*/2, /*min_ratio=*/0.1);
    // LibTorch reports errors by throwing; TorchCall turns them into a Status.
    FJORD_ASSIGN_OR_RETURN(
        double loss, TorchCall("training step", [&] {
          optimizer.ZeroGrad();
          // Segment ids stay on the host: the model lays out attention from them
          // (one causal block per packed example) without a device sync.
          torch::Tensor hidden =
              model->Hidden(batch.input_ids.to(device), batch.position_ids.to(device),
                            batch.segment_ids);  // (B, T, C)
          torch::Tensor loss =
              model->LossSum(hidden, batch.targets.to(device)) /
              static_cast<double>(batch.trained_tokens);  // mean CE per trained token
          loss.backward();
          train::ClipGradNorm(params, /*max_norm=*/1.0);
          optimizer.Step(lr);
          return loss.item<double>();
        }));
    std::printf("step %lld/%lld  loss %.4f  lr %.2e\n", static_cast<long long>(step + 1),
                static_cast<long long>(steps), loss, lr);
  }

  // ---- The adapter in PEFT's format (LoraAdapter::FromPretrained and peft read it).
  FJORD_RETURN_IF_ERROR(adapter->Save(out_dir + "/adapter"));
  std::printf("PEFT adapter: %s/adapter\n", out_dir.c_str());
  return absl::OkStatus();
}

}  // namespace fjord

int main(int argc, char** argv) {
  int64_t steps = 30;
  if (argc < 4 || argc > 5 || (argc == 5 && (!absl::SimpleAtoi(argv[4], &steps) || steps < 1))) {
    std::fprintf(stderr, "usage: custom_loop MODEL_DIR TRAIN.jsonl OUT_DIR [STEPS]\n");
    return 2;
  }
  const absl::Status status = fjord::Train(argv[1], argv[2], argv[3], steps);
  if (!status.ok()) {
    std::fprintf(stderr, "custom_loop: %s\n", status.ToString().c_str());
    return 1;
  }
  return 0;
}

// Fine-tune a causal LM with LoRA in one call: the runtime's trainer
// (train::RunTraining) with LoRA as its adapter method. It loads the model,
// the tokenizer and the data, injects the LoRA layers, trains, and writes a
// PEFT adapter (peft's PeftModel.from_pretrained and vLLM load it as it is);
// then a merged Hugging Face checkpoint for tools that know no adapters.
//
//   finetune_lora MODEL_DIR TRAIN.jsonl VALID.jsonl OUT_DIR [STEPS]
//
// MODEL_DIR is a Hugging Face checkpoint (config.json, safetensors,
// tokenizer.json): Llama 2/3 or Qwen2. With the demo model, from the
// repository root:
//
//   bazel build //tools/demo //examples:finetune_lora
//   d=bazel-bin/tools/demo/out
//   bazel-bin/examples/finetune_lora $d/model $d/data/train.jsonl $d/data/valid.jsonl /tmp/finetune
//   20
//
// Walked through in docs/embedding.md.
#include <cstdio>
#include <string>

#include "absl/strings/numbers.h"
#include "lora/export.h"
#include "lora/lora_method.h"
#include "runtime/train/trainer.h"
#include "runtime/util/status_macros.h"

namespace fjord {

absl::Status FineTune(const std::string& model_dir, const std::string& train_jsonl,
                      const std::string& valid_jsonl, const std::string& out_dir, int64_t steps) {
  // What to train on, and how: every field not set here has a default
  // (runtime/train/training_config.h).
  train::TrainingConfig config;
  config.model.path = model_dir;
  config.data.train = train_jsonl;       // chat or prompt/completion records, one per line
  config.data.validation = valid_jsonl;  // evaluated before and after training
  config.data.max_length = 128;          // tokens per packed row
  config.training.max_steps = steps;
  config.training.learning_rate = 1e-3;
  config.output.dir = out_dir;  // checkpoints/ and adapter/ go here

  // What to train: LoRA on every linear layer but lm_head (lora/lora_config.h).
  lora::LoraConfig lora_config;
  lora_config.r = 8;
  lora_config.alpha = 16;
  lora_config.base_model_name_or_path = model_dir;  // recorded in adapter_config.json
  lora::LoraMethod method(lora_config);

  train::TrainOptions options;
  options.adapter = &method;
  options.on_event = [](const train::TrainEvent& e) {
    if (e.type == train::TrainEvent::Type::kStep) {
      std::printf("step %lld/%lld  loss %.4f\n", static_cast<long long>(e.step),
                  static_cast<long long>(e.total_steps), e.loss);
    }
  };
  FJORD_ASSIGN_OR_RETURN(train::TrainResult result, train::RunTraining(config, options));
  std::printf("eval loss %.4f -> %.4f\n", result.initial_eval_loss, result.final_eval_loss);
  std::printf("PEFT adapter: %s\n", result.adapter_dir.c_str());

  // The base weights with the adapter merged in (W + scale * B A).
  FJORD_RETURN_IF_ERROR(lora::ExportMerged(model_dir, result.adapter_dir, out_dir + "/merged"));
  std::printf("merged model: %s/merged\n", out_dir.c_str());
  return absl::OkStatus();
}

}  // namespace fjord

int main(int argc, char** argv) {
  int64_t steps = 20;
  if (argc < 5 || argc > 6 || (argc == 6 && (!absl::SimpleAtoi(argv[5], &steps) || steps < 1))) {
    std::fprintf(stderr,
                 "usage: finetune_lora MODEL_DIR TRAIN.jsonl VALID.jsonl OUT_DIR [STEPS]\n");
    return 2;
  }
  const absl::Status status = fjord::FineTune(argv[1], argv[2], argv[3], argv[4], steps);
  if (!status.ok()) {
    std::fprintf(stderr, "finetune_lora: %s\n", status.ToString().c_str());
    return 1;
  }
  return 0;
}

// What RunTraining (trainer.h) needs to run: the base model, the data, the
// training hyperparameters, evaluation, checkpoints and the output directory.
// Nothing about the parameter-efficient method: that is the AdapterMethod
// handed to RunTraining (adapter_method.h), configured on its own
// (lora::LoraConfig; fjord-train's YAML job config, lora::JobConfig in
// lora/job_config.h, is this config plus a `lora:` section).
//
//   train::TrainingConfig config;
//   config.model.path = "models/llama-3.2-1b";
//   config.data.train = "data/train.jsonl";
//   config.training.max_steps = 100;
//   config.output.dir = "runs/1";
//   FJORD_RETURN_IF_ERROR(config.Validate());
//
// Every field has a default except model.path, data.train and output.dir.
// Plain values; copy freely.
#ifndef FJORD_RUNTIME_TRAIN_TRAINING_CONFIG_H_
#define FJORD_RUNTIME_TRAIN_TRAINING_CONFIG_H_

#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace fjord::train {

struct TrainingConfig {
  struct Model {
    std::string path;            // HF checkpoint directory (required)
    std::string dtype = "auto";  // auto (bf16 on GPU, fp32 on CPU) | float32 | bfloat16 | float16
    // none | nf4: the decoder's linear weights held in 4 bits (QLoRA;
    // runtime/quant). A checkpoint bitsandbytes saved in 4-bit nf4 is nf4
    // whatever this says.
    std::string quantization = "none";
    // Data-parallel runs: each rank holds 1/N of the frozen base (every
    // linear weight, the embeddings and lm_head, by rows) and gathers a
    // layer's weights just before it runs (runtime/model/shard.h), instead
    // of the whole base. No effect on one rank; with nf4, the linear
    // weights' rows are held and gathered in 4 bits.
    bool shard_base = false;
  } model;
  struct Data {
    std::string train;                   // JSONL (required)
    std::string validation;              // JSONL; empty: no evaluation
    std::string tokenizer;               // tokenizer.json; default <model.path>/tokenizer.json
    std::string chat_template = "auto";  // auto | model | llama3 | chatml | none (model_template.h)
    int64_t max_length = 1024;           // tokens per packed row (and longest example)
    bool packing = true;                 // several examples per row with block-diagonal attention
    bool train_on_inputs = false;        // true: prompts carry loss too
    bool truncate = true;                // false: an over-long example is an error
    bool shuffle = true;
  } data;
  struct Training {
    // sft (default): next-token cross-entropy on the data's trained tokens.
    // dpo | orpo | simpo: preference tuning on preference pairs
    // (runtime/data/preference.h; options in `preference` below).
    std::string method = "sft";
    int64_t epochs = 1;
    int64_t max_steps = 0;         // > 0 overrides epochs
    int64_t micro_batch_size = 4;  // rows of max_length tokens per forward
    int64_t gradient_accumulation_steps = 1;
    double learning_rate = 2e-4;
    double weight_decay = 0.0;
    double adam_beta1 = 0.9;
    double adam_beta2 = 0.999;
    double adam_epsilon = 1e-8;
    std::string lr_scheduler = "cosine";  // cosine | linear | constant
    int64_t warmup_steps = 0;
    double warmup_ratio = 0.0;            // used when warmup_steps == 0
    double min_lr_ratio = 0.0;            // final lr as a fraction of learning_rate
    double max_grad_norm = 1.0;           // <= 0: no clipping
    uint64_t seed = 42;                   // adapter init, data order, dropout (torch::manual_seed)
    bool gradient_checkpointing = false;  // less activation memory, ~30% more compute
    std::string device = "auto";          // auto (cuda:0 when available) | cpu | cuda (cuda:0)
    std::string kernels = "auto";  // auto | fused | reference (process-wide: kernels::SetBackend)
    int64_t threads =
        0;  // CPU threads, process-wide (torch::set_num_threads); 0: LibTorch's default
  } training;
  // training.method dpo | orpo | simpo (runtime/train/preference_loss.h has
  // the formulas). Names as TRL's DPOConfig / ORPOConfig / CPOConfig. A
  // micro-batch is micro_batch_size rows of 2 x data.max_length tokens, each
  // holding whole pairs (chosen and rejected as separate sequences).
  struct Preference {
    double beta = 0.1;  // dpo: higher stays closer to the base; orpo: λ; simpo: reward scale
    std::string loss_type = "sigmoid";  // dpo: sigmoid | robust | hinge | ipo
    double label_smoothing = 0.0;       // dpo sigmoid (cDPO) / robust, simpo; [0, 0.5)
    double simpo_gamma = 0.5;           // simpo: target reward margin
    double cpo_alpha = 0.0;             // simpo: weight of an NLL term on chosen responses
    // dpo: true (default): the reference log-probs (adapter off) are
    // computed once for the whole training file before step 1 (and for the
    // validation file; again on a resume), then reused every epoch; false:
    // in each step. Measured (docs/benchmarks.md): a step with them
    // precomputed costs 4.40 s against 5.63 s, and the one pass before
    // step 1 is one no-grad forward per pair, what every epoch's steps
    // would otherwise add.
    bool precompute_ref = true;
  } preference;
  struct Eval {
    int64_t every_steps = 0;  // 0: only at the end
    int64_t max_batches = 0;  // 0: the whole validation file
    std::string heldout;      // JSONL of {"prompt","answer"}: greedy-answer accuracy
    int64_t max_new_tokens = 24;
  } eval;
  struct Checkpoint {
    int64_t every_steps = 0;  // 0: only at the end
    int64_t keep_last = 3;    // older step checkpoints are deleted
  } checkpoint;
  struct Output {
    std::string dir;  // required: checkpoints/ and adapter/ go here
  } output;

  // OK when the config could have come from a YAML file: InvalidArgument
  // "training config: field 'training.micro_batch_size': 0 is out of range
  // [1, 65536]" for a value out of its range or not one of its names, and
  // "training config: field 'model.path' is required" for a missing
  // model.path, data.train or output.dir. RunTraining calls it first.
  absl::Status Validate() const;
  // The config as YAML (every field, defaults included; sections model, data,
  // training, eval, checkpoint, output). RunTraining writes it as config.yaml
  // in each checkpoint unless TrainOptions::config_yaml says otherwise.
  std::string ToYaml() const;
};

// Parses YAML text with the sections above (and no others: a `lora:` section
// is lora::ParseJobConfig's). InvalidArgument naming `name`, the line and the
// field for a malformed document, an unknown section or key, a wrong type, an
// out-of-range value or a missing required field.
absl::StatusOr<TrainingConfig> ParseTrainingConfig(absl::string_view yaml, absl::string_view name);
// Reads and parses a file (NotFound if it cannot be opened).
absl::StatusOr<TrainingConfig> LoadTrainingConfig(const std::string& path);

}  // namespace fjord::train

#endif  // FJORD_RUNTIME_TRAIN_TRAINING_CONFIG_H_

// Several LoRA adapters trained together on one frozen base: a small sweep
// (rank, targets, learning rate) in one process, one forward and one
// backward per step for all of them (lora::MultiLora). Each adapter reads
// the data in its own order, takes its own rows of the batch, and has its
// own loss mean, optimizer and PEFT adapter; the base is held once.
//
//   multi_lora MODEL_DIR TRAIN.jsonl OUT_DIR [STEPS]
//
// With the demo model, from the repository root:
//
//   bazel build //tools/demo //examples:multi_lora
//   d=bazel-bin/tools/demo/out
//   bazel-bin/examples/multi_lora $d/model $d/data/train.jsonl /tmp/multi 30
//
// Walked through in docs/embedding.md (custom_loop.cc is the same loop for
// one adapter).
//
// Shape legend: B batch rows (every adapter's), T tokens per row, C hidden.
#include <ATen/Context.h>
#include <torch/types.h>
#include <torch/utils.h>

#include <cstdio>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "lora/multi_lora.h"
#include "runtime/data/dataset.h"
#include "runtime/data/loader.h"
#include "runtime/data/tokenizer_adapter.h"
#include "runtime/data/torch_batch.h"
#include "runtime/model/model.h"
#include "runtime/tokenizer/tokenizer.h"
#include "runtime/train/optimizer.h"
#include "runtime/util/status_macros.h"
#include "runtime/util/torch_status.h"

namespace fjord {

constexpr int64_t kRowsEach = 2;  // rows of every adapter in a step
constexpr int64_t kSeqLen = 128;  // T

// The sweep: what differs from one adapter to the next.
struct Setting {
  int64_t r;
  std::vector<std::string> targets;  // empty: all-linear
  double peak_lr;
};

absl::Status Train(const std::string& model_dir, const std::string& train_jsonl,
                   const std::string& out_dir, int64_t steps) {
  // CPU, fp32 (on a GPU: bf16, as custom_loop.cc does).
  at::globalContext().setFlushDenormal(true);
  torch::manual_seed(0);
  FJORD_ASSIGN_OR_RETURN(std::shared_ptr<CausalLM> model,
                         CausalLM::FromPretrained(model_dir, torch::kFloat32, torch::kCPU));

  FJORD_ASSIGN_OR_RETURN(std::unique_ptr<tokenizer::Tokenizer> tokenizer,
                         tokenizer::Tokenizer::FromFile(model_dir + "/tokenizer.json"));
  data::TokenizerAdapter data_tokenizer(*tokenizer);
  data::DataOptions data_options;
  data_options.max_length = kSeqLen;
  data_options.truncate = true;
  FJORD_ASSIGN_OR_RETURN(data::Dataset dataset,
                         data::LoadJsonl(train_jsonl, data_tokenizer, data_options));
  auto examples = std::make_shared<const std::vector<data::Example>>(std::move(dataset.examples));

  const std::vector<Setting> sweep = {
      {8, {"q_proj", "v_proj"}, 2e-3},
      {16, {}, 1e-3},
      {4, {}, 4e-3},
  };
  const int k_count = static_cast<int>(sweep.size());
  std::vector<lora::MultiLora::Member> members(sweep.size());
  std::vector<std::unique_ptr<data::DataLoader>> loaders;
  for (int k = 0; k < k_count; ++k) {
    lora::LoraConfig& c = members[k].config;
    c.r = sweep[k].r;
    c.alpha = 2.0 * static_cast<double>(sweep[k].r);
    if (!sweep[k].targets.empty()) c.target_modules = lora::TargetModules::Names(sweep[k].targets);
    c.base_model_name_or_path = model_dir;
    members[k].seed = static_cast<uint64_t>(k);
    data::LoaderOptions loader_options;  // each adapter its own order of the data
    loader_options.seq_len = kSeqLen;
    loader_options.seed = static_cast<uint64_t>(k);
    FJORD_ASSIGN_OR_RETURN(std::unique_ptr<data::DataLoader> loader,
                           data::DataLoader::Create(examples, loader_options));
    loaders.push_back(std::move(loader));
  }

  // ---- The adapters, side by side on the one base.
  FJORD_ASSIGN_OR_RETURN(std::unique_ptr<lora::MultiLora> multi,
                         lora::MultiLora::Attach(*model, members));
  std::vector<train::AdamW> optimizers;
  std::vector<std::vector<torch::Tensor>> params(sweep.size());
  for (int k = 0; k < k_count; ++k) {
    optimizers.emplace_back(multi->NamedParameters(k), train::AdamWOptions{});
    for (const auto& [name, p] : multi->NamedParameters(k)) params[k].push_back(p);
    std::printf("adapter %d: r %lld, %zu LoRA layers, peak lr %.0e\n", k,
                static_cast<long long>(sweep[k].r), multi->adapter(k).layers().size(),
                sweep[k].peak_lr);
  }
  // Every step: kRowsEach consecutive rows per adapter, in adapter order.
  FJORD_RETURN_IF_ERROR(multi->SetRows(std::vector<int64_t>(sweep.size(), kRowsEach)));

  model->train();
  for (int64_t step = 0; step < steps; ++step) {
    std::vector<data::TorchBatch> batches;
    for (auto& loader : loaders) {
      FJORD_ASSIGN_OR_RETURN(data::PackedBatch packed, loader->NextBatch(kRowsEach));
      FJORD_ASSIGN_OR_RETURN(data::TorchBatch batch, data::ToTorch(packed));
      batches.push_back(std::move(batch));
    }
    FJORD_ASSIGN_OR_RETURN(
        std::vector<double> losses, TorchCall("training step", [&] {
          // The adapters' rows one after another: (B, T) with B = kRowsEach · K.
          std::vector<torch::Tensor> ids, targets, positions, segments;
          for (const data::TorchBatch& b : batches) {
            ids.push_back(b.input_ids);
            targets.push_back(b.targets);
            positions.push_back(b.position_ids);
            segments.push_back(b.segment_ids);
          }
          torch::Tensor hidden =
              model->Hidden(torch::cat(ids), torch::cat(positions), torch::cat(segments));
          // Each adapter's summed cross-entropy over its own rows, divided by
          // its own trained tokens: every adapter's mean is what a step of its
          // own would give, and so are its gradients.
          auto sums = multi->LossSums(*model, hidden, torch::cat(targets));
          TORCH_CHECK(sums.ok(), sums.status().ToString());
          torch::Tensor total = torch::zeros({});
          std::vector<double> means;
          for (int k = 0; k < k_count; ++k) {
            torch::Tensor mean = (*sums)[k] / static_cast<double>(batches[k].trained_tokens);
            total = total + mean;
            means.push_back(mean.item<double>());
          }
          total.backward();
          for (int k = 0; k < k_count; ++k) {
            train::ClipGradNorm(params[k], /*max_norm=*/1.0);
            optimizers[k].Step(train::LearningRate("cosine", sweep[k].peak_lr, step, steps,
                                                   /*warmup=*/2, /*min_ratio=*/0.1));
            optimizers[k].ZeroGrad();
          }
          return means;
        }));
    std::string line = absl::StrCat("step ", step + 1, "/", steps, "  losses");
    for (double l : losses) absl::StrAppend(&line, " ", absl::StrFormat("%.4f", l));
    std::printf("%s\n", line.c_str());
  }

  // ---- Each adapter in PEFT's format, a directory of its own.
  for (int k = 0; k < k_count; ++k) {
    const std::string dir = absl::StrCat(out_dir, "/adapter-", k);
    FJORD_RETURN_IF_ERROR(multi->Save(k, dir));
    std::printf("PEFT adapter: %s\n", dir.c_str());
  }
  return absl::OkStatus();
}

}  // namespace fjord

int main(int argc, char** argv) {
  int64_t steps = 30;
  if (argc < 4 || argc > 5 || (argc == 5 && (!absl::SimpleAtoi(argv[4], &steps) || steps < 1))) {
    std::fprintf(stderr, "usage: multi_lora MODEL_DIR TRAIN.jsonl OUT_DIR [STEPS]\n");
    return 2;
  }
  const absl::Status status = fjord::Train(argv[1], argv[2], argv[3], steps);
  if (!status.ok()) {
    std::fprintf(stderr, "multi_lora: %s\n", status.ToString().c_str());
    return 1;
  }
  return 0;
}

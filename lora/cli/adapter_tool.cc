// adapter_tool: fjord's LoRA adapters from the command line (the interop
// tests against peft use it; so can people).
//
//   adapter_tool logits --model DIR --adapter DIR --ids 1,2,3[;4,5,6] --out FILE.safetensors
//       [--merged]               logits (B, T, V) fp32 of the base + adapter
//                                (--merged: after merging into the weights)
//   adapter_tool check --model DIR --adapter DIR
//                                loads the adapter onto the model: "ok: N
//                                modules, P parameters" or the error
//   adapter_tool export --model DIR --adapter DIR --out DIR [--dtype auto|float32|bfloat16|float16]
//                                the merged Hugging Face checkpoint
//   adapter_tool generate --model DIR [--adapter DIR] --ids 1,2[;3,4,5] [--max-new N]
//       [--temperature T] [--top-k K] [--top-p P] [--seed S] [--stop-ids 2,7]
//                                new tokens per prompt (model/generation.h:
//                                KV cache, left-padded batch), one JSON line
//                                {"ids": [...], "finish_reason": ...} each
//
// Rows of --ids are separated by ';' and must have equal length (generate:
// any lengths); each is one causal sequence at positions 0..T-1. The model runs in fp32 on CPU;
// logits and check take --quantization nf4 (the base's decoder linear
// weights in 4 bits; a checkpoint bitsandbytes saved in 4-bit nf4 is read
// as stored without it).
//
// Exit status: 0 ok; 1 an error (the message, on stderr, names the file,
// field or key); 2 bad usage.
#include <torch/types.h>
#include <torch/utils.h>

#include <cstdint>
#include <iostream>
#include <map>
#include <set>
#include <string>
#include <type_traits>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "lora/adapter.h"
#include "lora/export.h"
#include "runtime/io/safetensors.h"
#include "runtime/model/generation.h"
#include "runtime/model/model.h"
#include "runtime/util/status_macros.h"
#include "runtime/util/torch_status.h"

namespace fjord::lora {
namespace {

constexpr char kUsage[] =
    "usage: adapter_tool logits --model DIR --adapter DIR --ids 1,2,3[;4,5,6] --out FILE "
    "[--merged] [--quantization nf4]\n"
    "       adapter_tool check --model DIR --adapter DIR\n"
    "       adapter_tool export --model DIR --adapter DIR --out DIR [--dtype "
    "auto|float32|bfloat16|float16]\n"
    "       adapter_tool generate --model DIR [--adapter DIR] --ids 1,2[;3,4,5] [--max-new N] "
    "[--temperature T] [--top-k K] [--top-p P] [--seed S] [--stop-ids 2,7]\n";

absl::StatusOr<torch::Tensor> ParseRows(const std::string& text) {
  std::vector<std::vector<int64_t>> rows;
  for (absl::string_view row : absl::StrSplit(text, ';')) {
    std::vector<int64_t> values;
    for (absl::string_view item : absl::StrSplit(row, ',')) {
      int64_t v = 0;
      if (!absl::SimpleAtoi(item, &v))
        return absl::InvalidArgumentError(absl::StrCat("--ids: '", item, "' is not an integer"));
      values.push_back(v);
    }
    if (!rows.empty() && values.size() != rows[0].size()) {
      return absl::InvalidArgumentError("--ids: rows must have equal length");
    }
    rows.push_back(std::move(values));
  }
  torch::Tensor out = torch::empty(
      {static_cast<int64_t>(rows.size()), static_cast<int64_t>(rows[0].size())}, torch::kInt64);
  for (size_t i = 0; i < rows.size(); ++i) {
    for (size_t j = 0; j < rows[i].size(); ++j) out[i][j] = rows[i][j];
  }
  return out;
}

absl::Status Require(const std::map<std::string, std::string>& flags,
                     std::initializer_list<const char*> names) {
  for (const char* n : names) {
    if (!flags.count(n)) return absl::InvalidArgumentError(absl::StrCat("--", n, " is required"));
  }
  return absl::OkStatus();
}

// The base in fp32 on CPU (--quantization nf4: its linear weights in 4 bits).
absl::StatusOr<std::shared_ptr<CausalLM>> LoadModel(
    const std::map<std::string, std::string>& flags) {
  model::LoadOptions load;
  if (auto it = flags.find("quantization"); it != flags.end()) load.quantization = it->second;
  return CausalLM::FromPretrained(flags.at("model"), load);
}

absl::Status Logits(const std::map<std::string, std::string>& flags) {
  FJORD_RETURN_IF_ERROR(Require(flags, {"model", "adapter", "ids", "out"}));
  FJORD_ASSIGN_OR_RETURN(torch::Tensor ids, ParseRows(flags.at("ids")));
  FJORD_ASSIGN_OR_RETURN(std::shared_ptr<CausalLM> lm, LoadModel(flags));
  FJORD_ASSIGN_OR_RETURN(std::unique_ptr<LoraAdapter> adapter,
                         LoraAdapter::FromPretrained(*lm, flags.at("adapter")));
  if (flags.count("merged")) FJORD_RETURN_IF_ERROR(adapter->Merge());
  lm->eval();
  FJORD_ASSIGN_OR_RETURN(
      torch::Tensor logits, TorchCall("forward", [&]() {
        torch::NoGradGuard no_grad;
        torch::Tensor pos =
            torch::arange(ids.size(1), torch::kInt64).unsqueeze(0).expand_as(ids).contiguous();
        return lm->Logits(lm->Hidden(ids, pos, torch::Tensor()));  // (B, T, V)
      }));
  return io::WriteSafetensors(flags.at("out"), {{"logits", logits}});
}

absl::Status Check(const std::map<std::string, std::string>& flags) {
  FJORD_RETURN_IF_ERROR(Require(flags, {"model", "adapter"}));
  FJORD_ASSIGN_OR_RETURN(std::shared_ptr<CausalLM> lm, LoadModel(flags));
  FJORD_ASSIGN_OR_RETURN(std::unique_ptr<LoraAdapter> adapter,
                         LoraAdapter::FromPretrained(*lm, flags.at("adapter")));
  std::cout << "ok: " << adapter->modules().size() << " modules, " << adapter->num_parameters()
            << " parameters\n";
  return absl::OkStatus();
}

absl::Status GenerateCmd(const std::map<std::string, std::string>& flags) {
  FJORD_RETURN_IF_ERROR(Require(flags, {"model", "ids"}));
  std::vector<std::vector<int32_t>> prompts;
  for (absl::string_view row : absl::StrSplit(flags.at("ids"), ';')) {
    std::vector<int32_t> ids;
    for (absl::string_view item : absl::StrSplit(row, ',')) {
      int32_t v = 0;
      if (!absl::SimpleAtoi(item, &v))
        return absl::InvalidArgumentError(absl::StrCat("--ids: '", item, "' is not an integer"));
      ids.push_back(v);
    }
    prompts.push_back(std::move(ids));
  }
  model::GenerationOptions opt;
  auto number = [&](const char* name, auto* out) -> absl::Status {
    auto it = flags.find(name);
    if (it == flags.end()) return absl::OkStatus();
    bool ok = false;
    if constexpr (std::is_same_v<std::remove_pointer_t<decltype(out)>, double>) {
      ok = absl::SimpleAtod(it->second, out);
    } else {
      ok = absl::SimpleAtoi(it->second, out);
    }
    if (!ok) return absl::InvalidArgumentError(absl::StrCat("--", name, ": '", it->second, "'"));
    return absl::OkStatus();
  };
  FJORD_RETURN_IF_ERROR(number("max-new", &opt.max_new_tokens));
  FJORD_RETURN_IF_ERROR(number("temperature", &opt.temperature));
  FJORD_RETURN_IF_ERROR(number("top-k", &opt.top_k));
  FJORD_RETURN_IF_ERROR(number("top-p", &opt.top_p));
  FJORD_RETURN_IF_ERROR(number("seed", &opt.seed));
  if (auto it = flags.find("stop-ids"); it != flags.end()) {
    for (absl::string_view item : absl::StrSplit(it->second, ',')) {
      int32_t v = 0;
      if (!absl::SimpleAtoi(item, &v))
        return absl::InvalidArgumentError(absl::StrCat("--stop-ids: '", item, "'"));
      opt.stop_ids.push_back(v);
    }
  }
  FJORD_ASSIGN_OR_RETURN(std::shared_ptr<CausalLM> lm, LoadModel(flags));
  std::unique_ptr<LoraAdapter> adapter;
  if (flags.count("adapter")) {
    FJORD_ASSIGN_OR_RETURN(adapter, LoraAdapter::FromPretrained(*lm, flags.at("adapter")));
  }
  lm->eval();
  FJORD_ASSIGN_OR_RETURN(std::vector<model::Generated> out, model::Generate(*lm, prompts, opt));
  for (const model::Generated& g : out) {
    std::cout << "{\"ids\": [" << absl::StrJoin(g.ids, ", ") << "], \"finish_reason\": \""
              << g.finish_reason << "\"}\n";
  }
  return absl::OkStatus();
}

absl::Status Export(const std::map<std::string, std::string>& flags) {
  FJORD_RETURN_IF_ERROR(Require(flags, {"model", "adapter", "out"}));
  ExportOptions options;
  if (flags.count("dtype")) options.dtype = flags.at("dtype");
  return ExportMerged(flags.at("model"), flags.at("adapter"), flags.at("out"), options);
}

int Main(int argc, char** argv) {
  if (argc < 2) {
    std::cerr << kUsage;
    return 2;
  }
  const std::string command = argv[1];
  std::map<std::string, std::string> flags;
  for (int i = 2; i < argc; ++i) {
    const std::string key = argv[i];
    if (key.rfind("--", 0) != 0) {
      std::cerr << "adapter_tool: bad argument '" << key << "'\n" << kUsage;
      return 2;
    }
    const std::string name = key.substr(2);
    if (name == "merged") {
      flags[name] = "1";
      continue;
    }
    static const std::set<std::string> kNames = {"model", "adapter",      "ids",     "out",
                                                 "dtype", "quantization", "max-new", "temperature",
                                                 "top-k", "top-p",        "seed",    "stop-ids"};
    if (!kNames.count(name)) {
      std::cerr << "adapter_tool: unknown flag '" << key << "'\n" << kUsage;
      return 2;
    }
    if (i + 1 >= argc) {
      std::cerr << "adapter_tool: " << key << " needs a value\n";
      return 2;
    }
    flags[name] = argv[++i];
  }
  absl::Status s;
  if (command == "logits") {
    s = Logits(flags);
  } else if (command == "check") {
    s = Check(flags);
  } else if (command == "export") {
    s = Export(flags);
  } else if (command == "generate") {
    s = GenerateCmd(flags);
  } else {
    std::cerr << kUsage;
    return 2;
  }
  if (!s.ok()) {
    std::cerr << "adapter_tool: " << s << "\n";
    return absl::StartsWith(s.message(), "--") ? 2 : 1;
  }
  return 0;
}

}  // namespace
}  // namespace fjord::lora

int main(int argc, char** argv) { return fjord::lora::Main(argc, argv); }

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
//
// Rows of --ids are separated by ';' and must have equal length; each is one
// causal sequence at positions 0..T-1. The model runs in fp32 on CPU;
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
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "lora/adapter.h"
#include "lora/export.h"
#include "runtime/io/safetensors.h"
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
    "auto|float32|bfloat16|float16]\n";

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
  if (flags.count("merged")) adapter->Merge();
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
    if (name != "model" && name != "adapter" && name != "ids" && name != "out" && name != "dtype" &&
        name != "quantization") {
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

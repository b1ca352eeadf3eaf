// model_tool: runs fjord's CausalLM on given token ids (used by the interop
// tests against transformers).
//
//   model_tool logits --model DIR --ids 1,2,3[;4,5,6] --out FILE.safetensors
//       [--segments 1,1,2[;1,1,1]] [--dtype float32|bfloat16|float16]
//       [--device cpu|cuda] [--quantization nf4]
//
// Rows are separated by ';' and must have equal length. Without --segments
// each row is one causal sequence at positions 0..T-1; with it (same shape as
// --ids) rows are packed: attention stays within a segment id and positions
// restart at each change of segment id. Writes "logits" (B, T, V) float32 to
// --out. Defaults: --dtype float32, --device cpu. --quantization nf4 holds
// the decoder's linear weights in 4 bits (a checkpoint bitsandbytes saved in
// 4-bit nf4 is read as stored without it).
//
// Exit status 0 on success, 1 on an error (message on stderr naming the file,
// field or tensor), 2 on bad usage.
#include <torch/cuda.h>
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
#include "runtime/io/safetensors.h"
#include "runtime/model/model.h"
#include "runtime/util/status_macros.h"
#include "runtime/util/torch_status.h"

namespace fjord::model {
namespace {

constexpr char kUsage[] =
    "usage: model_tool logits --model DIR --ids 1,2,3[;4,5,6] --out FILE.safetensors\n"
    "           [--segments 1,1,2[;...]] [--dtype float32|bfloat16|float16] [--device cpu|cuda]\n"
    "           [--quantization nf4]\n";

// "1,2,3;4,5,6" -> (B, T) int64. InvalidArgument naming `flag`.
absl::StatusOr<torch::Tensor> ParseRows(const std::string& text, absl::string_view flag) {
  std::vector<std::vector<int64_t>> rows;
  for (absl::string_view row : absl::StrSplit(text, ';')) {
    std::vector<int64_t> values;
    for (absl::string_view item : absl::StrSplit(row, ',')) {
      int64_t v = 0;
      if (!absl::SimpleAtoi(item, &v)) {
        return absl::InvalidArgumentError(
            absl::StrCat("--", flag, ": '", item, "' is not an integer"));
      }
      values.push_back(v);
    }
    if (!rows.empty() && values.size() != rows[0].size()) {
      return absl::InvalidArgumentError(absl::StrCat("--", flag, ": rows must have equal length (",
                                                     rows[0].size(), " vs ", values.size(), ")"));
    }
    rows.push_back(std::move(values));
  }
  const int64_t b = static_cast<int64_t>(rows.size());
  const int64_t t = static_cast<int64_t>(rows[0].size());
  torch::Tensor out = torch::empty({b, t}, torch::kInt64);
  auto acc = out.accessor<int64_t, 2>();
  for (int64_t i = 0; i < b; ++i) {
    for (int64_t j = 0; j < t; ++j) acc[i][j] = rows[i][j];
  }
  return out;
}

absl::Status Logits(const std::map<std::string, std::string>& flags) {
  for (const char* required : {"model", "ids", "out"}) {
    if (flags.count(required) == 0) {
      return absl::InvalidArgumentError(absl::StrCat("--", required, " is required"));
    }
  }
  const auto get = [&](const std::string& key, const std::string& fallback) {
    auto it = flags.find(key);
    return it == flags.end() ? fallback : it->second;
  };
  const std::string dtype_name = get("dtype", "float32");
  torch::Dtype dtype;
  if (dtype_name == "float32") {
    dtype = torch::kFloat32;
  } else if (dtype_name == "bfloat16") {
    dtype = torch::kBFloat16;
  } else if (dtype_name == "float16") {
    dtype = torch::kFloat16;
  } else {
    return absl::InvalidArgumentError(
        absl::StrCat("--dtype: '", dtype_name, "' is not one of float32, bfloat16, float16"));
  }
  const std::string device_name = get("device", "cpu");
  if (device_name != "cpu" && device_name != "cuda") {
    return absl::InvalidArgumentError(
        absl::StrCat("--device: '", device_name, "' is not cpu or cuda"));
  }
  if (device_name == "cuda" && !torch::cuda::is_available()) {
    return absl::FailedPreconditionError("--device cuda: no CUDA device is available");
  }
  const torch::Device device(device_name == "cuda" ? torch::kCUDA : torch::kCPU);

  FJORD_ASSIGN_OR_RETURN(torch::Tensor ids, ParseRows(flags.at("ids"), "ids"));
  torch::Tensor segments;
  torch::Tensor positions;
  if (flags.count("segments") > 0) {
    FJORD_ASSIGN_OR_RETURN(torch::Tensor seg, ParseRows(flags.at("segments"), "segments"));
    if (seg.sizes() != ids.sizes()) {
      return absl::InvalidArgumentError("--segments must have the shape of --ids");
    }
    segments = seg;
    positions = PositionsFromSegments(segments);
  } else {
    positions = torch::arange(ids.size(1), torch::kInt64).unsqueeze(0).expand_as(ids).contiguous();
  }

  LoadOptions load;
  load.dtype = dtype;
  load.device = device;
  load.quantization = get("quantization", "");
  FJORD_ASSIGN_OR_RETURN(std::shared_ptr<CausalLM> lm,
                         CausalLM::FromPretrained(flags.at("model"), load));
  lm->eval();
  FJORD_ASSIGN_OR_RETURN(
      torch::Tensor logits, TorchCall("forward", [&]() {
        torch::NoGradGuard no_grad;
        torch::Tensor seg = segments.defined() ? segments.to(device) : torch::Tensor();
        torch::Tensor hidden = lm->Hidden(ids.to(device), positions.to(device), seg);  // (B, T, C)
        return lm->Logits(hidden).cpu();                                               // (B, T, V)
      }));
  return io::WriteSafetensors(flags.at("out"), {{"logits", logits}},
                              {{"model", flags.at("model")}, {"dtype", dtype_name}});
}

int Main(int argc, char** argv) {
  if (argc < 2 || std::string(argv[1]) != "logits") {
    std::cerr << kUsage;
    return 2;
  }
  std::map<std::string, std::string> flags;
  for (int i = 2; i < argc; i += 2) {
    const std::string key = argv[i];
    if (key.rfind("--", 0) != 0 || i + 1 >= argc) {
      std::cerr << "model_tool: bad argument '" << key << "'\n" << kUsage;
      return 2;
    }
    const std::string name = key.substr(2);
    if (name != "model" && name != "ids" && name != "out" && name != "segments" &&
        name != "dtype" && name != "device" && name != "quantization") {
      std::cerr << "model_tool: unknown flag '" << key << "'\n" << kUsage;
      return 2;
    }
    flags[name] = argv[i + 1];
  }
  const absl::Status s = Logits(flags);
  if (!s.ok()) {
    std::cerr << "model_tool: " << s << "\n";
    return s.code() == absl::StatusCode::kInvalidArgument && absl::StartsWith(s.message(), "--")
               ? 2
               : 1;
  }
  return 0;
}

}  // namespace
}  // namespace fjord::model

int main(int argc, char** argv) { return fjord::model::Main(argc, argv); }

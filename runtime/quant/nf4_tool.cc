// nf4_tool: fjord's NF4 quantization from the command line (the interop
// test against bitsandbytes uses it).
//
//   nf4_tool quantize --in A.safetensors --out B.safetensors [--double-quant 0|1]
//       every tensor of A quantized to NF4 (blocks of 64; double
//       quantization of the absmax values unless --double-quant 0), written
//       in bitsandbytes' serialized form: NAME (packed uint8), NAME.absmax,
//       NAME.quant_map, [NAME.nested_absmax, NAME.nested_quant_map],
//       NAME.quant_state.bitsandbytes__nf4
//   nf4_tool dequantize --in B.safetensors --out C.safetensors
//       every 4-bit weight of B (that form) dequantized to fp32, by name
//
// Exit status: 0 ok; 1 an error (the message names the file and tensor);
// 2 bad usage.
#include <torch/types.h>

#include <iostream>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "runtime/io/safetensors.h"
#include "runtime/quant/nf4.h"
#include "runtime/util/status_macros.h"
#include "runtime/util/torch_status.h"

namespace fjord::quant {
namespace {

constexpr char kUsage[] =
    "usage: nf4_tool quantize --in A.safetensors --out B.safetensors [--double-quant 0|1]\n"
    "       nf4_tool dequantize --in B.safetensors --out C.safetensors\n";

absl::Status Quantize(const std::string& in, const std::string& out, bool double_quant) {
  FJORD_ASSIGN_OR_RETURN(std::unique_ptr<io::SafetensorsFile> file, io::SafetensorsFile::Open(in));
  std::vector<std::pair<std::string, torch::Tensor>> tensors;
  for (const std::string& name : file->Names()) {
    FJORD_ASSIGN_OR_RETURN(torch::Tensor t, file->Get(name));
    FJORD_ASSIGN_OR_RETURN(Nf4Tensor q, TorchCall(absl::StrCat(in, ": ", name),
                                                  [&]() { return QuantizeNf4(t, double_quant); }));
    for (auto& [suffix, part] : ToBitsandbytes(q)) tensors.emplace_back(name + suffix, part);
  }
  return io::WriteSafetensors(out, tensors);
}

absl::Status Dequantize(const std::string& in, const std::string& out) {
  FJORD_ASSIGN_OR_RETURN(std::unique_ptr<io::SafetensorsFile> file, io::SafetensorsFile::Open(in));
  std::vector<std::pair<std::string, torch::Tensor>> tensors;
  for (const std::string& name : file->Names()) {
    if (!absl::EndsWith(name, ".quant_state.bitsandbytes__nf4")) continue;
    const std::string weight =
        name.substr(0, name.size() - std::string(".quant_state.bitsandbytes__nf4").size());
    absl::StatusOr<Nf4Tensor> q = ReadBitsandbytes(*file, weight);
    if (!q.ok()) return absl::InvalidArgumentError(absl::StrCat(in, ": ", q.status().message()));
    FJORD_ASSIGN_OR_RETURN(torch::Tensor w, TorchCall(absl::StrCat(in, ": ", weight), [&]() {
                             return DequantizeNf4(*q, torch::kFloat32);
                           }));
    tensors.emplace_back(weight, w);
  }
  return io::WriteSafetensors(out, tensors);
}

int Main(int argc, char** argv) {
  if (argc < 2) {
    std::cerr << kUsage;
    return 2;
  }
  const std::string command = argv[1];
  std::map<std::string, std::string> flags;
  for (int i = 2; i + 1 < argc; i += 2) {
    const std::string key = argv[i];
    if (key != "--in" && key != "--out" && key != "--double-quant") {
      std::cerr << "nf4_tool: unknown flag '" << key << "'\n" << kUsage;
      return 2;
    }
    flags[key.substr(2)] = argv[i + 1];
  }
  if ((argc - 2) % 2 != 0 || flags.count("in") == 0 || flags.count("out") == 0) {
    std::cerr << kUsage;
    return 2;
  }
  absl::Status s;
  if (command == "quantize") {
    s = Quantize(flags.at("in"), flags.at("out"),
                 flags.count("double-quant") == 0 || flags.at("double-quant") != "0");
  } else if (command == "dequantize") {
    s = Dequantize(flags.at("in"), flags.at("out"));
  } else {
    std::cerr << kUsage;
    return 2;
  }
  if (!s.ok()) {
    std::cerr << "nf4_tool: " << s.message() << "\n";
    return 1;
  }
  return 0;
}

}  // namespace
}  // namespace fjord::quant

int main(int argc, char** argv) { return fjord::quant::Main(argc, argv); }

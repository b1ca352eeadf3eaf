// safetensors_tool: inspect and rewrite safetensors files with fjord's reader
// and writer.
//
//   safetensors_tool info FILE        JSON on stdout:
//     {"file": ..., "data_offset": ..., "metadata": {...},
//      "tensors": [{"name", "dtype", "shape", "data_offsets"}, ...]}
//     (tensors in file order)
//   safetensors_tool roundtrip IN OUT reads every tensor of IN and writes them
//     (same order, same metadata) to OUT
//
// Exit status 0 on success, 1 on an error (message on stderr, naming the
// file), 2 on bad usage.
#include <torch/types.h>

#include <iostream>
#include <nlohmann/json.hpp>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "runtime/io/safetensors.h"
#include "runtime/util/status_macros.h"

namespace fjord::io {
namespace {

absl::Status Info(const std::string& path) {
  FJORD_ASSIGN_OR_RETURN(std::unique_ptr<SafetensorsFile> file, SafetensorsFile::Open(path));
  nlohmann::ordered_json out;
  out["file"] = path;
  out["data_offset"] = file->header().data_offset;
  out["metadata"] = file->metadata();
  out["tensors"] = nlohmann::ordered_json::array();
  for (const TensorEntry& e : file->header().tensors) {
    out["tensors"].push_back({{"name", e.name},
                              {"dtype", e.dtype},
                              {"shape", e.shape},
                              {"data_offsets", {e.begin, e.end}}});
  }
  std::cout << out.dump(2, ' ', false, nlohmann::ordered_json::error_handler_t::replace) << "\n";
  return absl::OkStatus();
}

absl::Status Roundtrip(const std::string& in, const std::string& out) {
  FJORD_ASSIGN_OR_RETURN(std::unique_ptr<SafetensorsFile> file, SafetensorsFile::Open(in));
  std::vector<std::pair<std::string, torch::Tensor>> tensors;
  for (const std::string& name : file->Names()) {
    FJORD_ASSIGN_OR_RETURN(torch::Tensor t, file->Get(name));
    tensors.emplace_back(name, std::move(t));
  }
  return WriteSafetensors(out, tensors, file->metadata());
}

int Main(int argc, char** argv) {
  const std::string usage =
      "usage: safetensors_tool info FILE\n"
      "       safetensors_tool roundtrip IN OUT\n";
  if (argc < 2) {
    std::cerr << usage;
    return 2;
  }
  const std::string command = argv[1];
  absl::Status status;
  if (command == "info" && argc == 3) {
    status = Info(argv[2]);
  } else if (command == "roundtrip" && argc == 4) {
    status = Roundtrip(argv[2], argv[3]);
  } else {
    std::cerr << usage;
    return 2;
  }
  if (!status.ok()) {
    std::cerr << "safetensors_tool: " << status << "\n";
    return 1;
  }
  return 0;
}

}  // namespace
}  // namespace fjord::io

int main(int argc, char** argv) { return fjord::io::Main(argc, argv); }

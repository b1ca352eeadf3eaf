// Hugging Face model directories: the weights of a checkpoint as one
// model.safetensors, or sharded as model-0000i-of-0000N.safetensors plus
// model.safetensors.index.json ({"metadata": {"total_size": ...},
// "weight_map": {tensor name: shard file}}), as transformers writes them.
#ifndef FJORD_RUNTIME_IO_MODEL_DIR_H_
#define FJORD_RUNTIME_IO_MODEL_DIR_H_

#include <torch/types.h>

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "runtime/io/safetensors.h"
#include "runtime/util/env.h"

namespace fjord::io {

inline constexpr char kSafetensorsWeightsName[] = "model.safetensors";
inline constexpr char kSafetensorsIndexName[] = "model.safetensors.index.json";

// The tensors of a model directory. Immutable after Open: thread-safe.
class ModelDirReader {
 public:
  // Opens dir/model.safetensors if present (transformers' preference), else
  // dir/model.safetensors.index.json and every shard it names (all mapped
  // and validated now, so later Gets fail only for absent names). Errors
  // (messages name dir and file):
  //  - NotFound: neither file exists; a shard the index names is missing;
  //  - DataLoss: malformed index JSON, weight_map not name -> file string,
  //    a shard path that is absolute or escapes dir (".."), a name the index
  //    maps to a shard that lacks it, a corrupt safetensors file;
  //  - the Env's errors otherwise.
  static absl::StatusOr<std::unique_ptr<ModelDirReader>> Open(const std::string& dir,
                                                              Env* env = nullptr);

  // Tensor names: shard by shard (shard files sorted), in file order within a
  // shard. For a sharded checkpoint only the names in the index.
  std::vector<std::string> Names() const;
  bool Contains(absl::string_view name) const;
  // The header entry of name (nullptr if absent) and the file holding it.
  const TensorEntry* Find(absl::string_view name) const;
  // SafetensorsFile::Get on the file holding name. NotFound names the tensor
  // and dir.
  absl::StatusOr<torch::Tensor> Get(absl::string_view name) const;

  const std::string& dir() const { return dir_; }
  // The files opened (1 for an unsharded checkpoint).
  const std::vector<std::unique_ptr<SafetensorsFile>>& files() const { return files_; }

 private:
  ModelDirReader() = default;

  std::string dir_;
  std::vector<std::unique_ptr<SafetensorsFile>> files_;
  std::vector<std::string> names_;
  std::map<std::string, const SafetensorsFile*, std::less<>> where_;
};

// Writes tensors as a Hugging Face checkpoint into dir (created if missing):
// one model.safetensors if their total size fits max_shard_bytes, else shards
// model-00001-of-0000N.safetensors filled in the given order (a new shard
// starts when the next tensor would push the current one past
// max_shard_bytes; a single tensor larger than the limit gets a shard of its
// own; an empty tensor never starts a shard) plus
// model.safetensors.index.json with metadata.total_size and a sorted
// weight_map. Each file is written atomically; the index is written
// after all shards. Files of a previous layout in dir (model.safetensors, the
// index, old model-*-of-*.safetensors shards) are removed afterwards.
// Errors: InvalidArgument (max_shard_bytes <= 0, duplicate names, bad
// tensors), the Env's errors naming the path.
absl::Status WriteModelDirTensors(const std::string& dir,
                                  const std::vector<std::pair<std::string, torch::Tensor>>& tensors,
                                  int64_t max_shard_bytes, Env* env = nullptr);

}  // namespace fjord::io

#endif  // FJORD_RUNTIME_IO_MODEL_DIR_H_

// Reading and writing safetensors files as LibTorch tensors.
//
//   FJORD_ASSIGN_OR_RETURN(auto file, io::SafetensorsFile::Open(path));
//   FJORD_ASSIGN_OR_RETURN(torch::Tensor w, file->Get("lm_head.weight"));
//   FJORD_RETURN_IF_ERROR(io::WriteSafetensors(out, {{"w", w}}, {{"step", "10"}}));
//
// The header checks live in safetensors_header.h (no LibTorch).
#ifndef FJORD_RUNTIME_IO_SAFETENSORS_H_
#define FJORD_RUNTIME_IO_SAFETENSORS_H_

#include <torch/types.h>

#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "runtime/io/safetensors_header.h"
#include "runtime/util/env.h"

namespace fjord::io {

// A validated, read-only safetensors file mapped into memory. Immutable after
// Open, so every method is thread-safe. Tensors from Get may outlive the
// SafetensorsFile (they keep the mapping alive).
class SafetensorsFile {
 public:
  // Maps the file read-only (through env, default Env::Default()) and
  // validates the header (see safetensors_header.h). Errors: the Env's
  // (NotFound, PermissionDenied... naming the path), DataLoss for a corrupt
  // file naming the file and tensor.
  static absl::StatusOr<std::unique_ptr<SafetensorsFile>> Open(const std::string& path,
                                                               Env* env = nullptr);

  // Tensor names in file order (by data offset).
  std::vector<std::string> Names() const;

  // The header entry for name; nullptr if absent. Valid while *this lives.
  const TensorEntry* Find(absl::string_view name) const;

  // A CPU tensor with the entry's dtype and shape. Zero-copy when the data is
  // aligned for its dtype: the tensor views the mapping (and keeps it alive);
  // tensors returned for the same name then share memory, and in-place
  // changes stay private to this process (copy-on-write mapping), never
  // reaching the file. Unaligned data is copied. Errors: NotFound naming the
  // tensor and file; Unimplemented for dtypes LibTorch lacks (F4, F6_*).
  absl::StatusOr<torch::Tensor> Get(absl::string_view name) const;

  // The header's "__metadata__" (empty if none).
  const std::map<std::string, std::string>& metadata() const { return header_.metadata; }
  const std::string& path() const { return path_; }
  const SafetensorsHeader& header() const { return header_; }

 private:
  SafetensorsFile(std::string path, std::shared_ptr<ReadOnlyRegion> region,
                  SafetensorsHeader header);

  std::string path_;
  std::shared_ptr<ReadOnlyRegion> region_;
  SafetensorsHeader header_;
  std::map<std::string, size_t, std::less<>> index_;  // name -> header_.tensors index
};

// The safetensors dtype name for a LibTorch dtype; InvalidArgument if the
// format has none (e.g. complex128).
absl::StatusOr<std::string> SafetensorsDtypeName(torch::ScalarType dtype);

// The LibTorch dtype for a safetensors dtype name; Unimplemented for F4 and
// F6_*, InvalidArgument for unknown names.
absl::StatusOr<torch::ScalarType> TorchDtypeFromSafetensors(absl::string_view dtype);

// Writes tensors in the given order (each made contiguous and copied to CPU;
// any device) with metadata plus {"format": "pt"} (a caller's own "format"
// entry wins). Atomic: a temp file beside path, fsync, rename over path,
// fsync of the directory; on failure path is untouched. The parent directory
// must exist. Errors: InvalidArgument for duplicate/reserved names, undefined
// tensors or unsupported dtypes (message names the tensor); the Env's errors
// (ResourceExhausted for a full disk, ...) naming the path.
absl::Status WriteSafetensors(const std::string& path,
                              const std::vector<std::pair<std::string, torch::Tensor>>& tensors,
                              const std::map<std::string, std::string>& metadata = {},
                              Env* env = nullptr);

}  // namespace fjord::io

#endif  // FJORD_RUNTIME_IO_SAFETENSORS_H_

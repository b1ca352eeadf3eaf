// The safetensors header: parsing and validation, and encoding. Plain C++ (no
// LibTorch) so it can be fuzzed and sanitizer-tested cheaply.
//
// File layout (https://huggingface.co/docs/safetensors):
//   [8 bytes: N, little-endian u64][N bytes: JSON header][data buffer]
// The JSON header is an object mapping tensor names to
//   {"dtype": "F32", "shape": [2, 3], "data_offsets": [begin, end]}
// (offsets relative to the data buffer) plus an optional "__metadata__"
// object of string -> string.
//
// ParseSafetensorsHeader applies every check of the reference (Rust)
// implementation, plus a refusal of duplicate names, so a file it accepts
// can be read without further bounds checks:
//  - file >= 8 bytes; N <= kMaxSafetensorsHeaderSize; 8 + N <= file size;
//  - the header is UTF-8, starts with '{' and is a JSON object;
//  - "__metadata__" (optional, may be null) maps strings to strings;
//  - each tensor has a known dtype, a shape of non-negative integers and
//    data_offsets [begin, end] with begin <= end;
//  - product(shape) * dtype bits is computed without overflow, is a whole
//    number of bytes, and equals end - begin;
//  - sorted by offset, tensors are contiguous and non-overlapping from 0 and
//    the last end equals the data buffer size (file size - 8 - N) exactly;
//  - names are unique (JSON keys at every level are unique).
// Every failure is absl::DataLoss naming the file (and the tensor when one is
// at fault); misuse of the API (a too-short prefix) is InvalidArgument.
#ifndef FJORD_RUNTIME_IO_SAFETENSORS_HEADER_H_
#define FJORD_RUNTIME_IO_SAFETENSORS_HEADER_H_

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace fjord::io {

// Upper bound on N, as in the reference implementation.
inline constexpr uint64_t kMaxSafetensorsHeaderSize = 100'000'000;

struct TensorEntry {
  std::string name;
  // "F32", "BF16", "F16", "F64", "I64", "I32", "I16", "I8", "U8", "U16",
  // "U32", "U64", "BOOL", "C64", "F8_E4M3", "F8_E5M2", "F8_E4M3FNUZ",
  // "F8_E5M2FNUZ", "F8_E8M0", "F4", "F6_E2M3", "F6_E3M2".
  std::string dtype;
  std::vector<int64_t> shape;
  uint64_t begin = 0;  // byte offsets into the data buffer, [begin, end)
  uint64_t end = 0;

  uint64_t num_bytes() const { return end - begin; }
};

struct SafetensorsHeader {
  std::vector<TensorEntry> tensors;  // sorted by begin offset (file order)
  std::map<std::string, std::string> metadata;
  uint64_t data_offset = 0;  // 8 + N: where the data buffer starts in the file
};

// Bits per element of a safetensors dtype name; 0 if the name is unknown.
int SafetensorsDtypeBits(absl::string_view dtype);

// Parses and validates the header of a whole file held in memory
// (file_bytes, typically a mapping). file_name is used in messages only.
absl::StatusOr<SafetensorsHeader> ParseSafetensorsHeader(absl::string_view file_bytes,
                                                         absl::string_view file_name);

// Same, when only the start of the file is in memory: prefix holds the first
// bytes of a file of file_size bytes. InvalidArgument if prefix is shorter
// than 8 + N bytes (read more and call again) or longer than file_size.
absl::StatusOr<SafetensorsHeader> ParseSafetensorsHeaderPrefix(absl::string_view prefix,
                                                               uint64_t file_size,
                                                               absl::string_view file_name);

// Encodes the 8 + N header bytes for tensors laid out contiguously in the
// given order: fills each entry's begin/end (ignoring their old values) from
// dtype and shape. The JSON lists "__metadata__" first (omitted when
// metadata is empty), then the tensors in order; it is padded with spaces so
// the data buffer starts at a multiple of 8. InvalidArgument for an unknown
// dtype, a negative dimension, a size overflow, a sub-byte dtype whose size
// is not whole bytes, a duplicate or reserved ("__metadata__") name, or
// non-UTF-8 strings.
absl::StatusOr<std::string> EncodeSafetensorsHeader(
    std::vector<TensorEntry>* tensors, const std::map<std::string, std::string>& metadata);

}  // namespace fjord::io

#endif  // FJORD_RUNTIME_IO_SAFETENSORS_HEADER_H_

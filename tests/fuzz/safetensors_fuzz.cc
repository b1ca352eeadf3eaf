// libFuzzer target: the safetensors header parser (runtime/io/
// safetensors_header.h), whole-file and prefix forms. Any bytes must parse or
// give DataLoss/InvalidArgument, never a crash, hang or sanitizer report; an
// accepted header must agree between the two forms, describe tensors inside
// the file, and survive EncodeSafetensorsHeader + parse again unchanged.
// Seeds: tests/fuzz/safetensors/ (files written by the Python safetensors
// library, tests/fuzz/make_safetensors_seeds.py).
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "runtime/io/safetensors_header.h"

namespace {

void Check(bool ok) {
  if (!ok) __builtin_trap();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace fjord::io;
  const std::string file(reinterpret_cast<const char*>(data), size);
  absl::StatusOr<SafetensorsHeader> h = ParseSafetensorsHeader(file, "fuzz.safetensors");
  absl::StatusOr<SafetensorsHeader> p =
      ParseSafetensorsHeaderPrefix(file, file.size(), "fuzz.safetensors");
  Check(h.ok() == p.ok());
  if (!h.ok()) {
    Check(h.status().code() == absl::StatusCode::kDataLoss ||
          h.status().code() == absl::StatusCode::kInvalidArgument);
    return 0;
  }
  Check(h->data_offset == p->data_offset && h->tensors.size() == p->tensors.size());
  for (const TensorEntry& t : h->tensors) {
    Check(t.begin <= t.end && h->data_offset + t.end <= file.size());
    Check(SafetensorsDtypeBits(t.dtype) > 0);
  }
  std::vector<TensorEntry> again = h->tensors;
  absl::StatusOr<std::string> header = EncodeSafetensorsHeader(&again, h->metadata);
  if (!header.ok()) return 0;  // e.g. names the encoder refuses; parsing was still safe
  std::string rebuilt = *header;
  rebuilt.append(file, h->data_offset, std::string::npos);
  absl::StatusOr<SafetensorsHeader> r = ParseSafetensorsHeader(rebuilt, "rebuilt");
  Check(r.ok());
  Check(r->tensors.size() == h->tensors.size() && r->metadata == h->metadata);
  for (size_t i = 0; i < r->tensors.size(); ++i) {
    Check(r->tensors[i].name == h->tensors[i].name && r->tensors[i].shape == h->tensors[i].shape &&
          r->tensors[i].dtype == h->tensors[i].dtype &&
          r->tensors[i].num_bytes() == h->tensors[i].num_bytes());
  }
  return 0;
}

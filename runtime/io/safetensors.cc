#include "runtime/io/safetensors.h"

#include <torch/types.h>

#include <cstdint>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "runtime/util/status_macros.h"
#include "runtime/util/torch_status.h"

namespace fjord::io {
namespace {

static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__,
              "safetensors data is little-endian; fjord reads it in place");

struct DtypePair {
  const char* name;
  torch::ScalarType type;
};

constexpr DtypePair kDtypePairs[] = {
    {"F32", torch::kFloat32},
    {"F64", torch::kFloat64},
    {"F16", torch::kFloat16},
    {"BF16", torch::kBFloat16},
    {"I64", torch::kInt64},
    {"I32", torch::kInt32},
    {"I16", torch::kInt16},
    {"I8", torch::kInt8},
    {"U8", torch::kUInt8},
    {"U16", torch::kUInt16},
    {"U32", torch::kUInt32},
    {"U64", torch::kUInt64},
    {"BOOL", torch::kBool},
    {"C64", torch::kComplexFloat},
    {"F8_E4M3", torch::kFloat8_e4m3fn},
    {"F8_E5M2", torch::kFloat8_e5m2},
    {"F8_E4M3FNUZ", torch::kFloat8_e4m3fnuz},
    {"F8_E5M2FNUZ", torch::kFloat8_e5m2fnuz},
    {"F8_E8M0", torch::kFloat8_e8m0fnu},
};

}  // namespace

absl::StatusOr<std::string> SafetensorsDtypeName(torch::ScalarType dtype) {
  for (const DtypePair& p : kDtypePairs) {
    if (p.type == dtype) return std::string(p.name);
  }
  return absl::InvalidArgumentError(
      absl::StrCat("dtype ", c10::toString(dtype), " has no safetensors equivalent"));
}

absl::StatusOr<torch::ScalarType> TorchDtypeFromSafetensors(absl::string_view dtype) {
  for (const DtypePair& p : kDtypePairs) {
    if (dtype == p.name) return p.type;
  }
  if (SafetensorsDtypeBits(dtype) != 0) {
    return absl::UnimplementedError(
        absl::StrCat("safetensors dtype ", dtype, " has no LibTorch equivalent"));
  }
  return absl::InvalidArgumentError(absl::StrCat("unknown safetensors dtype \"", dtype, "\""));
}

SafetensorsFile::SafetensorsFile(std::string path, std::shared_ptr<ReadOnlyRegion> region,
                                 SafetensorsHeader header)
    : path_(std::move(path)), region_(std::move(region)), header_(std::move(header)) {
  for (size_t i = 0; i < header_.tensors.size(); ++i) index_.emplace(header_.tensors[i].name, i);
}

absl::StatusOr<std::unique_ptr<SafetensorsFile>> SafetensorsFile::Open(const std::string& path,
                                                                       Env* env) {
  if (env == nullptr) env = Env::Default();
  FJORD_ASSIGN_OR_RETURN(std::shared_ptr<ReadOnlyRegion> region, env->MapReadOnly(path));
  const absl::string_view bytes =
      region->size() == 0 ? absl::string_view() : absl::string_view(region->data(), region->size());
  FJORD_ASSIGN_OR_RETURN(SafetensorsHeader header, ParseSafetensorsHeader(bytes, path));
  return std::unique_ptr<SafetensorsFile>(
      new SafetensorsFile(path, std::move(region), std::move(header)));
}

std::vector<std::string> SafetensorsFile::Names() const {
  std::vector<std::string> names;
  names.reserve(header_.tensors.size());
  for (const TensorEntry& e : header_.tensors) names.push_back(e.name);
  return names;
}

const TensorEntry* SafetensorsFile::Find(absl::string_view name) const {
  auto it = index_.find(name);
  return it == index_.end() ? nullptr : &header_.tensors[it->second];
}

absl::StatusOr<torch::Tensor> SafetensorsFile::Get(absl::string_view name) const {
  const TensorEntry* e = Find(name);
  if (e == nullptr) {
    return absl::NotFoundError(absl::StrCat("tensor '", name, "' not found in ", path_));
  }
  absl::StatusOr<torch::ScalarType> dtype = TorchDtypeFromSafetensors(e->dtype);
  if (!dtype.ok()) {
    return absl::Status(dtype.status().code(), absl::StrCat("tensor '", name, "' in ", path_, ": ",
                                                            dtype.status().message()));
  }
  const char* data = region_->data() + header_.data_offset + e->begin;
  const size_t element_size = c10::elementSize(*dtype);
  const bool aligned = reinterpret_cast<uintptr_t>(data) % element_size == 0;
  return TorchCall(absl::StrCat("reading tensor '", name, "' from ", path_), [&] {
    const auto options = torch::TensorOptions().dtype(*dtype).device(torch::kCPU);
    if (e->num_bytes() == 0) return torch::empty(e->shape, options);
    if (aligned) {
      // The deleter holds the mapping until the tensor's storage dies.
      std::shared_ptr<ReadOnlyRegion> keep = region_;
      return torch::from_blob(
          const_cast<char*>(data), e->shape, [keep](void*) mutable { keep.reset(); }, options);
    }
    torch::Tensor t = torch::empty(e->shape, options);
    std::memcpy(t.data_ptr(), data, e->num_bytes());
    return t;
  });
}

absl::Status WriteSafetensors(const std::string& path,
                              const std::vector<std::pair<std::string, torch::Tensor>>& tensors,
                              const std::map<std::string, std::string>& metadata, Env* env) {
  std::vector<TensorEntry> entries;
  std::vector<torch::Tensor> cpu;
  entries.reserve(tensors.size());
  cpu.reserve(tensors.size());
  for (const auto& [name, tensor] : tensors) {
    if (!tensor.defined()) {
      return absl::InvalidArgumentError(
          absl::StrCat("writing ", path, ": tensor '", name, "' is undefined"));
    }
    absl::StatusOr<std::string> dtype = SafetensorsDtypeName(tensor.scalar_type());
    if (!dtype.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat("writing ", path, ": tensor '", name, "': ", dtype.status().message()));
    }
    FJORD_ASSIGN_OR_RETURN(
        torch::Tensor t,
        TorchCall(absl::StrCat("writing ", path, ": moving tensor '", name, "' to CPU"), [&] {
          return tensor.detach().to(torch::kCPU).resolve_conj().resolve_neg().contiguous();
        }));
    entries.push_back(TensorEntry{name, *dtype, t.sizes().vec(), 0, 0});
    cpu.push_back(std::move(t));
  }
  std::map<std::string, std::string> meta = metadata;
  meta.emplace("format", "pt");
  absl::StatusOr<std::string> header = EncodeSafetensorsHeader(&entries, meta);
  if (!header.ok()) {
    return absl::Status(header.status().code(),
                        absl::StrCat("writing ", path, ": ", header.status().message()));
  }
  return WriteFileAtomicWith(env, path, [&](WritableFile* f) -> absl::Status {
    FJORD_RETURN_IF_ERROR(f->Append(*header));
    for (size_t i = 0; i < cpu.size(); ++i) {
      const size_t bytes = cpu[i].numel() * cpu[i].element_size();
      if (bytes != entries[i].num_bytes()) {
        return absl::InternalError(absl::StrCat("writing ", path, ": tensor '", entries[i].name,
                                                "' has ", bytes, " bytes, header says ",
                                                entries[i].num_bytes()));
      }
      if (bytes == 0) continue;
      FJORD_RETURN_IF_ERROR(
          f->Append(absl::string_view(static_cast<const char*>(cpu[i].data_ptr()), bytes)));
    }
    return absl::OkStatus();
  });
}

}  // namespace fjord::io

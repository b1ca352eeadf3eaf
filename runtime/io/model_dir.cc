#include "runtime/io/model_dir.h"

#include <torch/types.h>

#include <nlohmann/json.hpp>
#include <set>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "runtime/util/status_macros.h"

namespace fjord::io {
namespace {

// A shard path from the index is a relative path inside dir: not empty, not
// absolute, no ".." component, no NUL.
bool SafeRelativePath(const std::string& p) {
  if (p.empty() || p[0] == '/' || p.find('\0') != std::string::npos) return false;
  for (absl::string_view part : absl::StrSplit(p, '/')) {
    if (part == "..") return false;
  }
  return true;
}

// "model-00001-of-00003.safetensors" -> true.
bool IsShardName(absl::string_view name) {
  constexpr absl::string_view kPattern = "model-#####-of-#####.safetensors";
  if (name.size() != kPattern.size()) return false;
  for (size_t i = 0; i < name.size(); ++i) {
    if (kPattern[i] == '#' ? !absl::ascii_isdigit(static_cast<unsigned char>(name[i]))
                           : name[i] != kPattern[i]) {
      return false;
    }
  }
  return true;
}

std::string ShardName(size_t i, size_t n) {
  return absl::StrFormat("model-%05d-of-%05d.safetensors", i, n);
}

}  // namespace

absl::StatusOr<std::unique_ptr<ModelDirReader>> ModelDirReader::Open(const std::string& dir,
                                                                     Env* env) {
  if (env == nullptr) env = Env::Default();
  std::unique_ptr<ModelDirReader> reader(new ModelDirReader());
  reader->dir_ = dir;
  const std::string single = JoinPath(dir, kSafetensorsWeightsName);
  const std::string index_path = JoinPath(dir, kSafetensorsIndexName);

  if (env->FileExists(single)) {
    FJORD_ASSIGN_OR_RETURN(std::unique_ptr<SafetensorsFile> file,
                           SafetensorsFile::Open(single, env));
    for (const TensorEntry& e : file->header().tensors) {
      reader->names_.push_back(e.name);
      reader->where_.emplace(e.name, file.get());
    }
    reader->files_.push_back(std::move(file));
    return reader;
  }
  if (!env->FileExists(index_path)) {
    if (!env->IsDirectory(dir)) {
      return absl::NotFoundError(absl::StrCat("checkpoint directory ", dir, " does not exist"));
    }
    return absl::NotFoundError(
        absl::StrCat("no ", kSafetensorsWeightsName, " or ", kSafetensorsIndexName, " in ", dir));
  }

  FJORD_ASSIGN_OR_RETURN(std::string text, env->ReadFileToString(index_path));
  const nlohmann::json index = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (index.is_discarded() || !index.is_object()) {
    return absl::DataLossError(absl::StrCat(index_path, ": not a JSON object"));
  }
  const auto weight_map = index.find("weight_map");
  if (weight_map == index.end() || !weight_map->is_object()) {
    return absl::DataLossError(absl::StrCat(index_path, ": missing object \"weight_map\""));
  }
  // shard file -> names the index puts there.
  std::map<std::string, std::set<std::string>> by_shard;
  for (const auto& [name, shard] : weight_map->items()) {
    if (!shard.is_string()) {
      return absl::DataLossError(
          absl::StrCat(index_path, ": weight_map[\"", name, "\"] is not a file name string"));
    }
    const std::string file = shard.get<std::string>();
    if (!SafeRelativePath(file)) {
      return absl::DataLossError(absl::StrCat(index_path, ": weight_map[\"", name, "\"] = \"", file,
                                              "\" is not a relative path inside ", dir));
    }
    by_shard[file].insert(name);
  }
  for (const auto& [file, names] : by_shard) {
    const std::string shard_path = JoinPath(dir, file);
    if (!env->FileExists(shard_path)) {
      return absl::NotFoundError(absl::StrCat(index_path, " names shard ", file, " (for tensor '",
                                              *names.begin(), "'), but ", shard_path,
                                              " does not exist"));
    }
    FJORD_ASSIGN_OR_RETURN(std::unique_ptr<SafetensorsFile> shard,
                           SafetensorsFile::Open(shard_path, env));
    for (const std::string& name : names) {
      if (shard->Find(name) == nullptr) {
        return absl::DataLossError(absl::StrCat(index_path, " maps tensor '", name, "' to ", file,
                                                ", but ", shard_path, " has no such tensor"));
      }
    }
    for (const TensorEntry& e : shard->header().tensors) {
      if (names.count(e.name) == 0) continue;
      reader->names_.push_back(e.name);
      reader->where_.emplace(e.name, shard.get());
    }
    reader->files_.push_back(std::move(shard));
  }
  return reader;
}

std::vector<std::string> ModelDirReader::Names() const { return names_; }

bool ModelDirReader::Contains(absl::string_view name) const {
  return where_.find(name) != where_.end();
}

const TensorEntry* ModelDirReader::Find(absl::string_view name) const {
  auto it = where_.find(name);
  return it == where_.end() ? nullptr : it->second->Find(name);
}

absl::StatusOr<torch::Tensor> ModelDirReader::Get(absl::string_view name) const {
  auto it = where_.find(name);
  if (it == where_.end()) {
    return absl::NotFoundError(absl::StrCat("tensor '", name, "' not found in checkpoint ", dir_));
  }
  return it->second->Get(name);
}

absl::Status WriteModelDirTensors(const std::string& dir,
                                  const std::vector<std::pair<std::string, torch::Tensor>>& tensors,
                                  int64_t max_shard_bytes, Env* env) {
  if (env == nullptr) env = Env::Default();
  if (max_shard_bytes <= 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "writing checkpoint ", dir, ": max_shard_bytes must be > 0, got ", max_shard_bytes));
  }
  std::set<std::string> seen;
  uint64_t total = 0;
  std::vector<std::vector<std::pair<std::string, torch::Tensor>>> shards(1);
  uint64_t current = 0;
  for (const auto& entry : tensors) {
    const auto& [name, t] = entry;
    if (!seen.insert(name).second) {
      return absl::InvalidArgumentError(
          absl::StrCat("writing checkpoint ", dir, ": tensor '", name, "' appears twice"));
    }
    if (!t.defined()) {
      return absl::InvalidArgumentError(
          absl::StrCat("writing checkpoint ", dir, ": tensor '", name, "' is undefined"));
    }
    const uint64_t bytes = static_cast<uint64_t>(t.numel()) * t.element_size();
    if (!shards.back().empty() && bytes > 0 &&
        current + bytes > static_cast<uint64_t>(max_shard_bytes)) {
      shards.emplace_back();
      current = 0;
    }
    shards.back().push_back(entry);
    current += bytes;
    total += bytes;
  }

  FJORD_RETURN_IF_ERROR(env->CreateDirs(dir));
  const std::string single = JoinPath(dir, kSafetensorsWeightsName);
  const std::string index_path = JoinPath(dir, kSafetensorsIndexName);
  std::set<std::string> written;
  if (shards.size() == 1) {
    FJORD_RETURN_IF_ERROR(WriteSafetensors(single, shards[0], {}, env));
    written.insert(kSafetensorsWeightsName);
    if (env->FileExists(index_path)) FJORD_RETURN_IF_ERROR(env->DeleteFile(index_path));
  } else {
    nlohmann::json weight_map = nlohmann::json::object();
    for (size_t i = 0; i < shards.size(); ++i) {
      const std::string name = ShardName(i + 1, shards.size());
      FJORD_RETURN_IF_ERROR(WriteSafetensors(JoinPath(dir, name), shards[i], {}, env));
      for (const auto& entry : shards[i]) weight_map[entry.first] = name;
      written.insert(name);
    }
    // Remove a stale single file first: readers prefer it over the index.
    if (env->FileExists(single)) FJORD_RETURN_IF_ERROR(env->DeleteFile(single));
    const nlohmann::json index = {{"metadata", {{"total_size", total}}},
                                  {"weight_map", std::move(weight_map)}};
    FJORD_RETURN_IF_ERROR(env->WriteFileAtomic(index_path, index.dump(2) + "\n"));
  }
  // Shards of an earlier, differently sharded save.
  FJORD_ASSIGN_OR_RETURN(std::vector<std::string> entries, env->ListDir(dir));
  for (const std::string& name : entries) {
    if (IsShardName(name) && written.count(name) == 0) {
      FJORD_RETURN_IF_ERROR(env->DeleteFile(JoinPath(dir, name)));
    }
  }
  return env->SyncDir(dir);
}

}  // namespace fjord::io

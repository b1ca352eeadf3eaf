#include "runtime/data/loader.h"

#include <exception>
#include <numeric>
#include <utility>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "nlohmann/json.hpp"
#include "runtime/util/status_macros.h"

namespace fjord::data {
namespace {

constexpr absl::string_view kStateKind = "fjord.data.DataLoader";
constexpr int kStateVersion = 1;

// SplitMix64 (Steele, Lea, Flood 2014): small, fast, fully specified.
class SplitMix64 {
 public:
  explicit SplitMix64(uint64_t seed) : state_(seed) {}
  uint64_t Next() {
    uint64_t z = (state_ += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  }
  // Uniform in [0, n), n > 0, without modulo bias.
  uint64_t Below(uint64_t n) {
    const uint64_t threshold = (0 - n) % n;
    while (true) {
      const uint64_t r = Next();
      if (r >= threshold) return r % n;
    }
  }

 private:
  uint64_t state_;
};

// FNV-1a over the examples' lengths, ids and targets.
uint64_t Fingerprint(const std::vector<Example>& examples) {
  uint64_t h = 0xCBF29CE484222325ull;
  auto mix = [&h](uint64_t v) {
    for (int i = 0; i < 8; ++i) {
      h ^= (v >> (8 * i)) & 0xFF;
      h *= 0x100000001B3ull;
    }
  };
  mix(examples.size());
  for (const Example& e : examples) {
    mix(e.input_ids.size());
    for (int32_t id : e.input_ids) mix(static_cast<uint32_t>(id));
    for (int32_t t : e.targets) mix(static_cast<uint32_t>(t));
  }
  return h;
}

}  // namespace

DataLoader::DataLoader(std::shared_ptr<const std::vector<Example>> examples, LoaderOptions options)
    : examples_(std::move(examples)), options_(options) {}

absl::StatusOr<std::unique_ptr<DataLoader>> DataLoader::Create(
    std::shared_ptr<const std::vector<Example>> examples, LoaderOptions options) {
  if (examples == nullptr || examples->empty()) {
    return absl::InvalidArgumentError("DataLoader needs at least one example");
  }
  if (options.seq_len <= 0) {
    return absl::InvalidArgumentError(absl::StrCat("seq_len must be > 0, got ", options.seq_len));
  }
  if (!options.truncate) {
    for (size_t i = 0; i < examples->size(); ++i) {
      const int64_t length = static_cast<int64_t>((*examples)[i].input_ids.size());
      if (length > options.seq_len) {
        return absl::InvalidArgumentError(absl::StrCat(
            "example ", i, " (line ", (*examples)[i].line, ") has ", length,
            " tokens, more than seq_len ", options.seq_len, ", and truncation is off"));
      }
    }
  }
  std::unique_ptr<DataLoader> loader(new DataLoader(std::move(examples), options));
  loader->fingerprint_ = Fingerprint(*loader->examples_);
  loader->SetPosition(0, 0);
  return loader;
}

std::vector<int64_t> DataLoader::EpochOrder(int64_t epoch) const {
  std::vector<int64_t> order(examples_->size());
  std::iota(order.begin(), order.end(), 0);
  if (!options_.shuffle) return order;
  // Seed from (seed, epoch) through one SplitMix64 step so neighbouring
  // epochs get unrelated streams.
  SplitMix64 seeder(options_.seed ^ (static_cast<uint64_t>(epoch) * 0xD1B54A32D192ED03ull));
  SplitMix64 rng(seeder.Next());
  for (size_t i = order.size() - 1; i > 0; --i) {
    const size_t j = static_cast<size_t>(rng.Below(i + 1));
    std::swap(order[i], order[j]);
  }
  return order;
}

void DataLoader::SetPosition(int64_t epoch, int64_t index) {
  if (order_.empty() || epoch != epoch_) order_ = EpochOrder(epoch);
  epoch_ = epoch;
  index_ = index;
}

absl::StatusOr<PackedBatch> DataLoader::NextBatch(int64_t batch_rows) {
  if (batch_rows <= 0) {
    return absl::InvalidArgumentError(absl::StrCat("batch_rows must be > 0, got ", batch_rows));
  }
  PackOptions pack;
  pack.seq_len = options_.seq_len;
  pack.packing = options_.packing;
  pack.truncate = options_.truncate;
  pack.pad_id = options_.pad_id;
  PackedBatch batch;
  const absl::Span<const int64_t> rest = absl::MakeConstSpan(order_).subspan(index_);
  FJORD_ASSIGN_OR_RETURN(int64_t consumed, PackBatch(*examples_, rest, batch_rows, pack, batch));
  batch.epoch = epoch_;
  if (index_ + consumed >= num_examples()) {
    batch.end_of_epoch = true;
    SetPosition(epoch_ + 1, 0);
  } else {
    index_ += consumed;
  }
  return batch;
}

std::string DataLoader::SaveState() const {
  nlohmann::json j;
  j["kind"] = std::string(kStateKind);
  j["version"] = kStateVersion;
  j["epoch"] = epoch_;
  j["index"] = index_;
  j["seed"] = options_.seed;
  j["shuffle"] = options_.shuffle;
  j["num_examples"] = num_examples();
  j["fingerprint"] = absl::StrFormat("%016x", fingerprint_);
  return j.dump();
}

absl::Status DataLoader::RestoreState(absl::string_view state) {
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(state.begin(), state.end());
  } catch (const std::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat("loader state is not JSON: ", e.what()));
  }
  auto bad = [](absl::string_view what) {
    return absl::InvalidArgumentError(absl::StrCat("loader state: ", what));
  };
  if (!j.is_object() || j.value("kind", "") != kStateKind) return bad("not a DataLoader state");
  auto integer = [&j](const char* key) -> const nlohmann::json* {
    auto it = j.find(key);
    return it != j.end() && it->is_number_integer() ? &*it : nullptr;
  };
  const nlohmann::json* version = integer("version");
  if (version == nullptr || version->get<int64_t>() != kStateVersion) {
    return bad(absl::StrCat("unsupported version (this build reads ", kStateVersion, ")"));
  }
  const nlohmann::json* epoch = integer("epoch");
  const nlohmann::json* index = integer("index");
  const nlohmann::json* seed = integer("seed");
  const nlohmann::json* count = integer("num_examples");
  auto shuffle = j.find("shuffle");
  auto fingerprint = j.find("fingerprint");
  if (!epoch || !index || !seed || !count || shuffle == j.end() || !shuffle->is_boolean() ||
      fingerprint == j.end() || !fingerprint->is_string()) {
    return bad(
        "missing or mistyped field (epoch, index, seed, shuffle, num_examples, "
        "fingerprint)");
  }
  if (count->get<int64_t>() != num_examples()) {
    return absl::FailedPreconditionError(
        absl::StrCat("loader state was saved for ", count->get<int64_t>(),
                     " examples, this dataset has ", num_examples()));
  }
  if (fingerprint->get<std::string>() != absl::StrFormat("%016x", fingerprint_)) {
    return absl::FailedPreconditionError(
        "loader state was saved for different data (fingerprint differs): the dataset, "
        "tokenizer or template changed");
  }
  if (seed->get<uint64_t>() != options_.seed || shuffle->get<bool>() != options_.shuffle) {
    return absl::FailedPreconditionError(
        absl::StrCat("loader state was saved with seed ", seed->get<uint64_t>(), " shuffle ",
                     shuffle->get<bool>(), ", this loader has seed ", options_.seed, " shuffle ",
                     options_.shuffle));
  }
  const int64_t e = epoch->get<int64_t>();
  const int64_t i = index->get<int64_t>();
  if (e < 0 || i < 0 || i >= num_examples()) {
    return bad(absl::StrCat("position (epoch ", e, ", index ", i, ") out of range"));
  }
  SetPosition(e, i);
  return absl::OkStatus();
}

}  // namespace fjord::data

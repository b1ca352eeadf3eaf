#include "runtime/train/training_state.h"

#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <utility>
#include <vector>

#include <ATen/Context.h>

#include "absl/strings/str_cat.h"
#include "runtime/io/safetensors.h"
#include "runtime/util/status_macros.h"

namespace fjord::train::internal {
namespace fs = std::filesystem;
namespace {

// The generator states dropout draws from: "rng.cpu" and, on a GPU, "rng.cuda".
std::vector<std::pair<std::string, torch::Tensor>> RngStates(const torch::Device& device) {
  std::vector<std::pair<std::string, torch::Tensor>> out;
  {
    at::Generator gen = at::detail::getDefaultCPUGenerator();
    std::lock_guard<std::mutex> lock(gen.mutex());
    out.emplace_back("rng.cpu", gen.get_state());
  }
  if (device.is_cuda()) {
    at::Generator gen = at::globalContext().defaultGenerator(device);
    std::lock_guard<std::mutex> lock(gen.mutex());
    out.emplace_back("rng.cuda", gen.get_state());
  }
  return out;
}

void RestoreRng(const std::string& name, const torch::Tensor& state, const torch::Device& device) {
  at::Generator gen = name == "rng.cuda" ? at::globalContext().defaultGenerator(device)
                                         : at::detail::getDefaultCPUGenerator();
  std::lock_guard<std::mutex> lock(gen.mutex());
  gen.set_state(state);
}

absl::Status WriteText(const std::string& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << text;
  out.close();
  if (!out)
    return absl::ResourceExhaustedError(
        absl::StrCat("cannot write ", path, " (disk full or unwritable?)"));
  return absl::OkStatus();
}

}  // namespace

absl::Status SaveTrainingState(const std::string& dir, const AdamW& opt,
                               const data::DataLoader& loader, int64_t step, int64_t trained_tokens,
                               int64_t epoch, int64_t total_steps, int64_t warmup,
                               int64_t micro_per_step, int world_size, const TrainingConfig& cfg,
                               const std::string& config_yaml, const torch::Device& device) {
  std::vector<std::pair<std::string, torch::Tensor>> tensors;
  for (auto& [name, t] : opt.StateTensors()) tensors.emplace_back("optimizer." + name, t);
  for (auto& [name, t] : RngStates(device)) tensors.emplace_back(name, t);
  FJORD_RETURN_IF_ERROR(io::WriteSafetensors(dir + "/training_state.safetensors", tensors));
  nlohmann::json state = {
      {"format", "fjord.trainer_state"},
      {"version", 1},
      {"step", step},
      {"epoch", epoch},
      {"trained_tokens", trained_tokens},
      // The global batch in micro-batches (gradient accumulation x ranks at
      // the start): a resume on another number of ranks keeps it.
      {"micro_batches_per_step", micro_per_step},
      {"world_size", world_size},
      {"loader", nlohmann::json::parse(loader.SaveState())},
      {"schedule",
       {{"name", cfg.training.lr_scheduler},
        {"peak_lr", cfg.training.learning_rate},
        {"total_steps", total_steps},
        {"warmup_steps", warmup},
        {"min_lr_ratio", cfg.training.min_lr_ratio},
        {"next_lr", LearningRate(cfg.training.lr_scheduler, cfg.training.learning_rate, step,
                                 total_steps, warmup, cfg.training.min_lr_ratio)}}},
  };
  FJORD_RETURN_IF_ERROR(WriteText(dir + "/trainer_state.json", state.dump(2) + "\n"));
  return WriteText(dir + "/config.yaml", config_yaml + "\n");
}

absl::StatusOr<RestoredState> LoadTrainingState(const std::string& dir, AdamW& opt,
                                                data::DataLoader& loader, AdapterMethod& adapter,
                                                const torch::Device& device, Env* env) {
  std::ifstream in(dir + "/trainer_state.json");
  nlohmann::json state = nlohmann::json::parse(in, nullptr, /*allow_exceptions=*/false);
  if (!state.is_object() || !state.contains("step") || !state["step"].is_number_integer() ||
      !state.contains("loader") || !state["loader"].is_object()) {
    return absl::DataLossError(
        absl::StrCat(dir, "/trainer_state.json: malformed (no step or loader position)"));
  }
  FJORD_ASSIGN_OR_RETURN(auto file, io::SafetensorsFile::Open(dir + "/training_state.safetensors"));
  std::map<std::string, torch::Tensor> opt_state;
  std::vector<std::pair<std::string, torch::Tensor>> rng;
  for (const std::string& name : file->Names()) {
    FJORD_ASSIGN_OR_RETURN(torch::Tensor t, file->Get(name));
    if (name.rfind("optimizer.", 0) == 0) opt_state[name.substr(10)] = t.clone();
    if (name == "rng.cpu" || (name == "rng.cuda" && device.is_cuda()))
      rng.emplace_back(name, t.clone());
  }
  FJORD_RETURN_IF_ERROR(adapter.LoadFrom(dir + "/adapter", env));
  FJORD_RETURN_IF_ERROR(opt.LoadStateTensors(opt_state));
  FJORD_RETURN_IF_ERROR(loader.RestoreState(state["loader"].dump()));
  for (const auto& [name, t] : rng) RestoreRng(name, t, device);
  RestoredState r;
  r.step = state.value("step", int64_t{0});
  r.trained_tokens = state.value("trained_tokens", int64_t{0});
  r.epoch = state.value("epoch", int64_t{0});
  return r;
}

std::optional<int64_t> MicroBatchesPerStep(const std::string& dir) {
  std::ifstream in(dir + "/trainer_state.json");
  nlohmann::json state = nlohmann::json::parse(in, nullptr, /*allow_exceptions=*/false);
  if (!state.is_object() || !state.contains("micro_batches_per_step") ||
      !state["micro_batches_per_step"].is_number_integer()) {
    return std::nullopt;
  }
  const int64_t g = state["micro_batches_per_step"].get<int64_t>();
  if (g < 1) return std::nullopt;
  return g;
}

absl::Status SaveFinalAdapter(AdapterMethod& adapter, const std::string& dir) {
  const std::string tmp = dir + ".tmp";
  std::error_code ec;
  fs::remove_all(tmp, ec);
  // Not create_directories: the output directory must still be there.
  if (!fs::create_directory(tmp, ec) && ec) {
    return absl::UnavailableError(absl::StrCat("cannot create ", tmp, ": ", ec.message()));
  }
  FJORD_RETURN_IF_ERROR(adapter.Save(tmp));
  fs::remove_all(dir, ec);
  fs::rename(tmp, dir, ec);
  if (ec)
    return absl::InternalError(
        absl::StrCat("cannot rename ", tmp, " to ", dir, ": ", ec.message()));
  return absl::OkStatus();
}

}  // namespace fjord::train::internal

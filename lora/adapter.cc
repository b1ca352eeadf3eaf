// LoraAdapter: injection through CausalLM::LinearSlots, PEFT files through
// runtime/io's safetensors reader/writer and lora/peft_format.
#include "lora/adapter.h"

#include <ATen/CPUGeneratorImpl.h>
#include <torch/utils.h>

#include <map>

#include "absl/strings/str_cat.h"
#include "lora/peft_format.h"
#include "runtime/io/safetensors.h"
#include "runtime/util/status_macros.h"
#include "runtime/util/torch_status.h"

namespace fjord::lora {
namespace {

std::map<std::string, LinearSlot> SlotsByName(CausalLM& model) {
  std::map<std::string, LinearSlot> out;
  for (LinearSlot& s : model.LinearSlots()) out.emplace(s.name, s);
  return out;
}

bool Wide(torch::ScalarType t) { return t == torch::kFloat32 || t == torch::kFloat64; }

}  // namespace

absl::Status CheckBaseLayerCopy(const std::string& file, const std::string& key,
                                const torch::Tensor& copy, const torch::Tensor& base) {
  return TorchCall(absl::StrCat(file, ": ", key), [&]() -> absl::Status {
    torch::NoGradGuard no_grad;
    // On the host: a vocabulary-sized copy need not fit beside the model on
    // its GPU.
    const torch::Tensor c = copy.cpu(), b = base.cpu();
    const auto ct = c.scalar_type(), bt = b.scalar_type();
    bool same = false;
    if (ct == bt || Wide(ct) || Wide(bt)) {
      const auto narrow = Wide(ct) ? (Wide(bt) ? torch::kFloat32 : bt) : ct;
      same = torch::equal(c.to(narrow), b.to(narrow));
    } else {  // fp16 against bf16
      const torch::Tensor b32 = b.to(torch::kFloat32);
      same = (c.to(torch::kFloat32) - b32).abs().max().item<double>() <=
             0.01 * b32.abs().max().item<double>();
    }
    if (same) return absl::OkStatus();
    const double diff = (c.to(torch::kFloat32) - b.to(torch::kFloat32)).abs().max().item<double>();
    return absl::InvalidArgumentError(absl::StrCat(
        file, ": tensor '", key,
        "' (peft's copy of the base layer, written when lm_head is a target) differs from this "
        "base model's weight (largest difference ",
        diff,
        "): the adapter was trained on other base weights (a resized or retrained vocabulary?); "
        "fjord keeps the base model as it is"));
  });
}

std::vector<ModuleInfo> ModulesOf(CausalLM& model) {
  std::vector<ModuleInfo> out;
  for (const LinearSlot& s : model.LinearSlots()) {
    const LinearBase& layer = **s.layer;
    out.push_back({s.name, layer.in_features(), layer.out_features(), s.layer_index < 0});
  }
  return out;
}

absl::StatusOr<std::unique_ptr<LoraAdapter>> LoraAdapter::Inject(CausalLM& model, LoraConfig config,
                                                                 uint64_t seed) {
  FJORD_ASSIGN_OR_RETURN(std::vector<AdaptedModule> modules,
                         ResolveTargets(config, ModulesOf(model)));
  std::map<std::string, LinearSlot> slots = SlotsByName(model);
  for (const AdaptedModule& m : modules) {
    // A layer that wraps another (a LoraLinear, a MultiLoraLinear) is adapted.
    LinearBase* layer = slots.at(m.path).layer->get();
    if (layer->frozen_base() != layer) {
      return absl::FailedPreconditionError(
          absl::StrCat(m.path, " already has a LoRA layer; cannot inject another"));
    }
  }
  std::unique_ptr<LoraAdapter> adapter(new LoraAdapter());
  adapter->model_ = &model;
  adapter->config_ = std::move(config);
  FJORD_RETURN_IF_ERROR(TorchCall("injecting LoRA layers", [&]() {
    at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(seed);
    std::vector<std::shared_ptr<LoraLinear>> layers;
    for (const AdaptedModule& m : modules) {
      std::shared_ptr<LinearBase> base = *slots.at(m.path).layer;
      LoraLinear::Options o;
      o.r = m.r;
      o.scale = m.scale;
      o.dropout = adapter->config_.dropout;
      layers.push_back(std::make_shared<LoraLinear>(base, o, gen, model.device()));
    }
    // Swap only once every layer was built, so an error leaves the model as it was.
    for (size_t i = 0; i < modules.size(); ++i) {
      layers[i]->train(model.is_training());
      slots.at(modules[i].path).Replace(layers[i]);
    }
    adapter->layers_ = std::move(layers);
  }));
  adapter->modules_ = std::move(modules);
  return adapter;
}

absl::StatusOr<std::vector<torch::Tensor>> LoraAdapter::ReadWeights(
    const std::string& dir, const std::vector<AdaptedModule>& modules, Env* env,
    const std::function<torch::Tensor(size_t)>& base_weight) {
  const std::string path = JoinPath(dir, kAdapterWeightsName);
  FJORD_ASSIGN_OR_RETURN(std::unique_ptr<io::SafetensorsFile> file,
                         io::SafetensorsFile::Open(path, env));
  FJORD_RETURN_IF_ERROR(CheckAdapterTensors(file->header(), modules, path));
  for (size_t i : BaseLayerCopies(file->header(), modules)) {
    const std::string key = BaseLayerCopyKey(modules[i].path);
    FJORD_ASSIGN_OR_RETURN(torch::Tensor copy, file->Get(key));
    FJORD_ASSIGN_OR_RETURN(torch::Tensor base, TorchCall(absl::StrCat(path, ": ", key), [&]() {
                             torch::NoGradGuard no_grad;
                             return base_weight(i);
                           }));
    FJORD_RETURN_IF_ERROR(CheckBaseLayerCopy(path, key, copy, base));
  }
  std::vector<torch::Tensor> out;
  for (const AdaptedModule& m : modules) {
    for (const std::string& key : {LoraAKey(m.path), LoraBKey(m.path)}) {
      FJORD_ASSIGN_OR_RETURN(torch::Tensor t, file->Get(key));
      FJORD_ASSIGN_OR_RETURN(torch::Tensor f, TorchCall(absl::StrCat(path, ": ", key), [&]() {
                               return t.to(torch::kFloat32).contiguous().clone();
                             }));
      if (!torch::isfinite(f).all().item<bool>()) {
        return absl::InvalidArgumentError(
            absl::StrCat(path, ": tensor '", key, "' holds NaN or infinite values"));
      }
      out.push_back(std::move(f));
    }
  }
  return out;
}

absl::StatusOr<std::unique_ptr<LoraAdapter>> LoraAdapter::FromPretrained(CausalLM& model,
                                                                         const std::string& dir,
                                                                         Env* env) {
  if (env == nullptr) env = Env::Default();
  const std::string config_path = JoinPath(dir, kAdapterConfigName);
  FJORD_ASSIGN_OR_RETURN(std::string text, env->ReadFileToString(config_path));
  FJORD_ASSIGN_OR_RETURN(LoraConfig config, ParseAdapterConfig(text, config_path));
  absl::StatusOr<std::vector<AdaptedModule>> modules = ResolveTargets(config, ModulesOf(model));
  if (!modules.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(config_path, ": ", modules.status().message()));
  }
  std::map<std::string, LinearSlot> slots = SlotsByName(model);
  FJORD_ASSIGN_OR_RETURN(std::vector<torch::Tensor> weights,
                         ReadWeights(dir, *modules, env, [&](size_t i) {
                           return (*slots.at((*modules)[i].path).layer)->base_weight();
                         }));
  FJORD_ASSIGN_OR_RETURN(std::unique_ptr<LoraAdapter> adapter, Inject(model, std::move(config), 0));
  torch::NoGradGuard no_grad;
  for (size_t i = 0; i < adapter->layers_.size(); ++i) {
    adapter->layers_[i]->lora_A().copy_(weights[2 * i]);
    adapter->layers_[i]->lora_B().copy_(weights[2 * i + 1]);
  }
  return adapter;
}

absl::Status LoraAdapter::Save(const std::string& dir, Env* env) const {
  if (env == nullptr) env = Env::Default();
  FJORD_RETURN_IF_ERROR(env->CreateDirs(dir));
  std::vector<std::pair<std::string, torch::Tensor>> tensors;
  for (size_t i = 0; i < layers_.size(); ++i) {
    tensors.emplace_back(LoraAKey(modules_[i].path), layers_[i]->lora_A().detach());
    tensors.emplace_back(LoraBKey(modules_[i].path), layers_[i]->lora_B().detach());
  }
  FJORD_RETURN_IF_ERROR(
      io::WriteSafetensors(JoinPath(dir, kAdapterWeightsName), tensors, {{"format", "pt"}}, env));
  return env->WriteFileAtomic(JoinPath(dir, kAdapterConfigName),
                              AdapterConfigJson(config_, modules_));
}

absl::Status LoraAdapter::LoadWeights(const std::string& dir, Env* env) {
  if (env == nullptr) env = Env::Default();
  const std::string config_path = JoinPath(dir, kAdapterConfigName);
  FJORD_ASSIGN_OR_RETURN(std::string text, env->ReadFileToString(config_path));
  FJORD_ASSIGN_OR_RETURN(LoraConfig config, ParseAdapterConfig(text, config_path));
  FJORD_ASSIGN_OR_RETURN(std::vector<AdaptedModule> modules,
                         ResolveTargets(config, ModulesOf(*model_)));
  if (modules.size() != modules_.size()) {
    return absl::FailedPreconditionError(absl::StrCat(config_path, ": adapts ", modules.size(),
                                                      " modules, this adapter ", modules_.size()));
  }
  for (size_t i = 0; i < modules.size(); ++i) {
    const AdaptedModule& a = modules[i];
    const AdaptedModule& b = modules_[i];
    if (a.path != b.path || a.r != b.r || a.scale != b.scale) {
      return absl::FailedPreconditionError(absl::StrCat(
          config_path, ": module ", a.path, " (r ", a.r, ", scale ", a.scale,
          ") differs from this adapter's ", b.path, " (r ", b.r, ", scale ", b.scale, ")"));
    }
  }
  FJORD_ASSIGN_OR_RETURN(
      std::vector<torch::Tensor> weights,
      ReadWeights(dir, modules_, env, [&](size_t i) { return layers_[i]->base_weight(); }));
  torch::NoGradGuard no_grad;
  for (size_t i = 0; i < layers_.size(); ++i) {
    layers_[i]->lora_A().copy_(weights[2 * i]);
    layers_[i]->lora_B().copy_(weights[2 * i + 1]);
  }
  return absl::OkStatus();
}

std::vector<std::pair<std::string, torch::Tensor>> LoraAdapter::NamedParameters() const {
  std::vector<std::pair<std::string, torch::Tensor>> out;
  for (size_t i = 0; i < layers_.size(); ++i) {
    out.emplace_back(modules_[i].path + ".lora_A.weight", layers_[i]->lora_A());
    out.emplace_back(modules_[i].path + ".lora_B.weight", layers_[i]->lora_B());
  }
  return out;
}

absl::Status LoraAdapter::Merge() {
  for (size_t i = 0; i < layers_.size(); ++i) {
    if (!layers_[i]->merged() && modules_[i].path == "lm_head" &&
        model_->config().tie_word_embeddings) {
      return absl::FailedPreconditionError(absl::StrCat(
          "cannot merge the adapter: it changes ", modules_[i].path,
          ", which shares its matrix with the embeddings (tie_word_embeddings); merging would "
          "change the embeddings too"));
    }
  }
  for (auto& l : layers_) l->Merge();
  return absl::OkStatus();
}

void LoraAdapter::Unmerge() {
  for (auto& l : layers_) l->Unmerge();
}

absl::Status LoraAdapter::SetEnabled(bool enabled) {
  for (auto& l : layers_) {
    if (!enabled && l->merged()) {
      return absl::FailedPreconditionError("cannot switch a merged LoRA adapter off");
    }
  }
  for (auto& l : layers_) l->set_enabled(enabled);
  return absl::OkStatus();
}

void LoraAdapter::Detach() {
  Unmerge();
  std::map<std::string, LinearSlot> slots = SlotsByName(*model_);
  for (size_t i = 0; i < layers_.size(); ++i) {
    const LinearSlot& slot = slots.at(modules_[i].path);
    if (slot.layer->get() == layers_[i].get()) slot.Replace(layers_[i]->base_layer());
  }
}

int64_t LoraAdapter::num_parameters() const {
  int64_t n = 0;
  for (const auto& l : layers_) n += l->lora_A().numel() + l->lora_B().numel();
  return n;
}

}  // namespace fjord::lora

// LoraAdapter on tiny random CausalLMs (CPU): injection, PEFT save/load and
// the refusals of bad adapter files, merge/unmerge, merged export,
// LoraMethod, gradient checkpointing through LoRA layers.
//
// Shape legend: B batch, T tokens, V vocab.
#include "lora/adapter.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <stdlib.h>
#include <torch/types.h>
#include <torch/utils.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>

#include "lora/adapter_test_util.h"
#include "lora/export.h"
#include "lora/job_config.h"
#include "lora/lora_linear.h"
#include "lora/lora_method.h"
#include "lora/peft_format.h"
#include "runtime/io/model_dir.h"
#include "runtime/io/safetensors.h"
#include "runtime/util/env.h"

namespace fjord::lora {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;
using torch::Tensor;

using namespace test_util;  // NOLINT(build/namespaces)

TEST(InjectTest, AllLinearLeavesTheHeadAndStartsAsTheBase) {
  auto lm = CausalLM::RandomInit(TinyLlama(false), torch::kFloat32, torch::kCPU, 1);
  const Tensor before = Logits(*lm);
  LoraConfig c;
  c.r = 4;
  c.alpha = 8;
  absl::StatusOr<std::unique_ptr<LoraAdapter>> a = LoraAdapter::Inject(*lm, c, 7);
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_EQ((*a)->modules().size(), 14u);
  EXPECT_EQ((*a)->layers().size(), 14u);
  EXPECT_NE(std::dynamic_pointer_cast<LoraLinear>(lm->model->layers[1]->mlp->down_proj), nullptr);
  EXPECT_EQ(std::dynamic_pointer_cast<LoraLinear>(lm->lm_head), nullptr);
  EXPECT_TRUE(torch::equal(Logits(*lm), before));  // B = 0
  auto named = (*a)->NamedParameters();
  ASSERT_EQ(named.size(), 28u);
  EXPECT_EQ(named[0].first, "model.layers.0.self_attn.q_proj.lora_A.weight");
  EXPECT_EQ(named[1].first, "model.layers.0.self_attn.q_proj.lora_B.weight");
  // The model's own parameter list shows the adapters under the same names.
  int64_t trainable = 0;
  for (const auto& p : lm->named_parameters()) {
    if (p.value().requires_grad()) ++trainable;
  }
  EXPECT_EQ(trainable, 28);
  EXPECT_EQ((*a)->num_parameters(), 2 * (4 * (32 + 32) + 2 * 4 * (32 + 16) + 4 * (32 + 32) +
                                         2 * 4 * (32 + 48) + 4 * (48 + 32)));

  // A second injection over adapted layers is refused.
  absl::StatusOr<std::unique_ptr<LoraAdapter>> again = LoraAdapter::Inject(*lm, c, 7);
  EXPECT_EQ(again.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(again.status().message(),
              HasSubstr("model.layers.0.self_attn.q_proj already has a LoRA layer"));

  // Detach restores the base layers.
  RandomizeB(**a, 3);
  EXPECT_FALSE(torch::allclose(Logits(*lm), before));
  (*a)->Detach();
  EXPECT_TRUE(torch::equal(Logits(*lm), before));
}

TEST(InjectTest, NoMatchIsInvalidArgument) {
  auto lm = CausalLM::RandomInit(TinyLlama(false), torch::kFloat32, torch::kCPU, 1);
  LoraConfig c;
  c.target_modules = TargetModules::Names({"c_attn"});
  absl::Status s = LoraAdapter::Inject(*lm, c, 0).status();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(), HasSubstr("target_modules [c_attn] matched no linear layer"));
  EXPECT_NE(std::dynamic_pointer_cast<DenseLinear>(lm->model->layers[0]->self_attn->q_proj),
            nullptr);
}

TEST(SaveLoadTest, RoundTripInPeftFormat) {
  const std::string dir = TempDir();
  auto lm = CausalLM::RandomInit(TinyQwen2(), torch::kFloat32, torch::kCPU, 2);
  LoraConfig c;
  c.r = 4;
  c.alpha = 6;
  c.target_modules = TargetModules::Names({"q_proj", "v_proj", "down_proj"});
  c.rank_pattern = {{"down_proj", 2}};
  c.base_model_name_or_path = "tiny-qwen2";
  auto a = LoraAdapter::Inject(*lm, c, 5);
  ASSERT_TRUE(a.ok()) << a.status();
  RandomizeB(**a, 6);
  const Tensor logits = Logits(*lm);
  ASSERT_TRUE((*a)->Save(dir + "/adapter").ok());

  // The files as PEFT has them.
  absl::StatusOr<std::unique_ptr<io::SafetensorsFile>> f =
      io::SafetensorsFile::Open(dir + "/adapter/adapter_model.safetensors");
  ASSERT_TRUE(f.ok()) << f.status();
  EXPECT_EQ((*f)->metadata().at("format"), "pt");
  EXPECT_EQ((*f)->Names().size(), 12u);
  const io::TensorEntry* e =
      (*f)->Find("base_model.model.model.layers.1.mlp.down_proj.lora_A.weight");
  ASSERT_NE(e, nullptr);
  EXPECT_EQ(e->shape, (std::vector<int64_t>{2, 48}));
  EXPECT_EQ(e->dtype, "F32");
  nlohmann::json j = nlohmann::json::parse(std::ifstream(dir + "/adapter/adapter_config.json"));
  EXPECT_EQ(j["r"], 4);
  EXPECT_EQ(j["rank_pattern"]["down_proj"], 2);
  EXPECT_EQ(j["base_model_name_or_path"], "tiny-qwen2");

  auto lm2 = CausalLM::RandomInit(TinyQwen2(), torch::kFloat32, torch::kCPU, 2);
  absl::StatusOr<std::unique_ptr<LoraAdapter>> b =
      LoraAdapter::FromPretrained(*lm2, dir + "/adapter");
  ASSERT_TRUE(b.ok()) << b.status();
  EXPECT_TRUE(torch::equal(Logits(*lm2), logits));
  EXPECT_EQ((*b)->modules()[2].r, 2);

  // LoadWeights into an adapter of the same config (resume).
  auto lm3 = CausalLM::RandomInit(TinyQwen2(), torch::kFloat32, torch::kCPU, 2);
  auto fresh = LoraAdapter::Inject(*lm3, c, 99);
  ASSERT_TRUE(fresh.ok());
  ASSERT_TRUE((*fresh)->LoadWeights(dir + "/adapter").ok());
  EXPECT_TRUE(torch::equal(Logits(*lm3), logits));
  // ... and refused for another config.
  LoraConfig other = c;
  other.rank_pattern.clear();
  auto lm4 = CausalLM::RandomInit(TinyQwen2(), torch::kFloat32, torch::kCPU, 2);
  auto mismatched = LoraAdapter::Inject(*lm4, other, 1);
  ASSERT_TRUE(mismatched.ok());
  absl::Status s = (*mismatched)->LoadWeights(dir + "/adapter");
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(s.message(), HasSubstr("module model.layers.0.mlp.down_proj (r 2, scale 3) differs"));
}

// A saved adapter whose files a test then spoils.
class BadAdapterTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = TempDir() + "/adapter";
    lm_ = CausalLM::RandomInit(TinyLlama(false), torch::kFloat32, torch::kCPU, 3);
    LoraConfig c;
    c.r = 4;
    c.target_modules = TargetModules::Names({"q_proj", "v_proj"});
    auto a = LoraAdapter::Inject(*lm_, c, 1);
    ASSERT_TRUE(a.ok());
    RandomizeB(**a, 2);
    ASSERT_TRUE((*a)->Save(dir_).ok());
    (*a)->Detach();
    for (const std::string& n :
         io::SafetensorsFile::Open(dir_ + "/adapter_model.safetensors").value()->Names()) {
      tensors_.emplace_back(n, io::SafetensorsFile::Open(dir_ + "/adapter_model.safetensors")
                                   .value()
                                   ->Get(n)
                                   .value()
                                   .clone());
    }
  }
  void EditConfig(const std::string& key, const nlohmann::json& value) {
    nlohmann::json j = nlohmann::json::parse(std::ifstream(dir_ + "/adapter_config.json"));
    j[key] = value;
    std::ofstream(dir_ + "/adapter_config.json") << j.dump(2);
  }
  void WriteTensors() {
    ASSERT_TRUE(io::WriteSafetensors(dir_ + "/adapter_model.safetensors", tensors_).ok());
  }
  absl::Status Load() {
    absl::StatusOr<std::unique_ptr<LoraAdapter>> a = LoraAdapter::FromPretrained(*lm_, dir_);
    if (a.ok()) {
      (*a)->Detach();
      return absl::OkStatus();
    }
    // Whatever failed, the model is unchanged.
    for (const LinearSlot& slot : lm_->LinearSlots()) {
      EXPECT_NE(std::dynamic_pointer_cast<DenseLinear>(*slot.layer), nullptr) << slot.name;
    }
    return a.status();
  }

  std::string dir_;
  std::shared_ptr<CausalLM> lm_;
  std::vector<std::pair<std::string, Tensor>> tensors_;
};

TEST_F(BadAdapterTest, Intact) { EXPECT_TRUE(Load().ok()); }

TEST_F(BadAdapterTest, MissingFiles) {
  fs::remove(dir_ + "/adapter_model.safetensors");
  absl::Status s = Load();
  EXPECT_EQ(s.code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(s.message(), HasSubstr(dir_ + "/adapter_model.safetensors"));
  fs::remove(dir_ + "/adapter_config.json");
  s = Load();
  EXPECT_EQ(s.code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(s.message(), HasSubstr(dir_ + "/adapter_config.json"));
}

TEST_F(BadAdapterTest, UnsupportedOptions) {
  EditConfig("use_dora", true);
  absl::Status s = Load();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(),
              HasSubstr(dir_ + "/adapter_config.json: field 'use_dora' is true (DoRA adapters)"));
  EditConfig("use_dora", false);
  EditConfig("fan_in_fan_out", true);
  EXPECT_THAT(Load().message(), HasSubstr("field 'fan_in_fan_out' is true"));
  EditConfig("fan_in_fan_out", false);
  EditConfig("bias", "all");
  EXPECT_THAT(Load().message(), HasSubstr("field 'bias' is \"all\""));
}

TEST_F(BadAdapterTest, MissingKey) {
  tensors_.pop_back();
  WriteTensors();
  absl::Status s = Load();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(
      s.message(),
      HasSubstr(dir_ +
                "/adapter_model.safetensors: missing 1 tensor(s) adapter_config.json requires: "
                "base_model.model.model.layers.1.self_attn.v_proj.lora_"));
}

TEST_F(BadAdapterTest, ExtraKey) {
  tensors_.emplace_back("base_model.model.model.layers.0.mlp.up_proj.lora_A.weight",
                        torch::zeros({4, 32}));
  WriteTensors();
  absl::Status s = Load();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(),
              HasSubstr("1 unexpected tensor(s) the adapter config does not account for: "
                        "base_model.model.model.layers.0.mlp.up_proj.lora_A.weight"));
}

TEST_F(BadAdapterTest, WrongShapeNamesKeyAndBothShapes) {
  for (auto& [name, t] : tensors_) {
    if (name == "base_model.model.model.layers.0.self_attn.v_proj.lora_B.weight")
      t = torch::zeros({32, 4});
  }
  WriteTensors();
  EXPECT_THAT(Load().message(),
              HasSubstr("tensor 'base_model.model.model.layers.0.self_attn.v_proj.lora_B.weight' "
                        "has shape [32, 4], "
                        "expected [16, 4]"));
}

TEST_F(BadAdapterTest, RankDisagreesWithConfig) {
  EditConfig("r", 8);
  absl::Status s = Load();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.message(),
              HasSubstr("tensor 'base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight' "
                        "has shape [4, 32], "
                        "expected [8, 32] (rank 8 from adapter_config.json)"));
}

TEST_F(BadAdapterTest, CorruptSafetensorsIsDataLoss) {
  const std::string path = dir_ + "/adapter_model.safetensors";
  fs::resize_file(path, fs::file_size(path) - 7);
  absl::Status s = Load();
  EXPECT_EQ(s.code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(s.message(), HasSubstr(path));
}

TEST_F(BadAdapterTest, NonFiniteValues) {
  tensors_[0].second[0][0] = std::nan("");
  WriteTensors();
  EXPECT_THAT(Load().message(), HasSubstr("holds NaN or infinite values"));
}

TEST(MergeTest, MergedModelGivesTheSameLogits) {
  auto lm = CausalLM::RandomInit(TinyLlama(true), torch::kFloat32, torch::kCPU, 4);
  auto a = LoraAdapter::Inject(*lm, LoraConfig{}, 1);
  ASSERT_TRUE(a.ok());
  RandomizeB(**a, 2);
  const Tensor adapted = Logits(*lm);
  ASSERT_TRUE((*a)->Merge().ok());
  EXPECT_TRUE(torch::allclose(Logits(*lm), adapted, 1e-5, 1e-5));
  (*a)->Unmerge();
  EXPECT_TRUE(torch::allclose(Logits(*lm), adapted, 1e-5, 1e-5));
}

TEST(ExportTest, MergedCheckpointLoadsAndMatches) {
  const std::string root = TempDir();
  auto base = CausalLM::RandomInit(TinyQwen2(), torch::kFloat32, torch::kCPU, 5);
  SaveBase(*base, root + "/base");
  std::ofstream(root + "/base/tokenizer.json") << "{\"model\": {}}";
  auto lm = CausalLM::FromPretrained(root + "/base", torch::kFloat32, torch::kCPU);
  ASSERT_TRUE(lm.ok()) << lm.status();
  auto a = LoraAdapter::Inject(**lm, LoraConfig{}, 1);
  ASSERT_TRUE(a.ok());
  RandomizeB(**a, 2);
  ASSERT_TRUE((*a)->Save(root + "/adapter").ok());
  const Tensor adapted = Logits(**lm);

  ASSERT_TRUE(ExportMerged(root + "/base", root + "/adapter", root + "/merged").ok());
  EXPECT_TRUE(fs::exists(root + "/merged/tokenizer.json"));
  EXPECT_TRUE(fs::exists(root + "/merged/model.safetensors"));
  auto merged = CausalLM::FromPretrained(root + "/merged", torch::kFloat32, torch::kCPU);
  ASSERT_TRUE(merged.ok()) << merged.status();
  EXPECT_TRUE(torch::allclose(Logits(**merged), adapted, 1e-5, 1e-5));
  EXPECT_FALSE(torch::allclose(Logits(**merged), Logits(*base), 1e-3, 1e-3));

  ASSERT_TRUE(
      ExportMerged(root + "/base", root + "/adapter", root + "/merged16", {"bfloat16"}).ok());
  auto reader = io::ModelDirReader::Open(root + "/merged16");
  ASSERT_TRUE(reader.ok());
  EXPECT_EQ((*reader)->Find("model.layers.0.self_attn.q_proj.weight")->dtype, "BF16");
  EXPECT_THAT(ExportMerged(root + "/base", root + "/adapter", root + "/x", {"int8"}).message(),
              HasSubstr("export dtype 'int8'"));
  EXPECT_EQ(ExportMerged(root + "/base", root + "/adapter", root + "/base").code(),
            absl::StatusCode::kFailedPrecondition);
}

TEST(ExportTest, AdaptedTiedHeadIsRefused) {
  const std::string root = TempDir();
  auto lm = CausalLM::RandomInit(TinyLlama(true), torch::kFloat32, torch::kCPU, 6);
  SaveBase(*lm, root + "/base");
  LoraConfig c;
  c.target_modules = TargetModules::Names({"lm_head"});
  auto a = LoraAdapter::Inject(*lm, c, 1);
  ASSERT_TRUE(a.ok()) << a.status();
  ASSERT_TRUE((*a)->Save(root + "/adapter").ok());
  absl::Status s = ExportMerged(root + "/base", root + "/adapter", root + "/merged");
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(s.message(), HasSubstr("shares its matrix with the embeddings"));
}

TEST(LoraMethodTest, FromJobConfig) {
  absl::StatusOr<JobConfig> job = ParseJobConfig(R"(
model: {path: /m}
data: {train: /t.jsonl}
output: {dir: /o}
lora:
  r: 4
  alpha: 16
  target_modules: '.*\.(q|o)_proj'
  rank_pattern: {o_proj: 2}
)",
                                                 "job.yaml");
  ASSERT_TRUE(job.ok()) << job.status();
  LoraConfig c = LoraConfigFromJob(*job);
  EXPECT_EQ(c.target_modules.kind, TargetModules::Kind::kRegex);
  EXPECT_EQ(c.base_model_name_or_path, "/m");
  LoraMethod method(*job);
  EXPECT_TRUE(method.TrainableParameters().empty());
  EXPECT_EQ(method.Save("/nonexistent").code(), absl::StatusCode::kFailedPrecondition);
  auto lm = CausalLM::RandomInit(TinyLlama(false), torch::kFloat32, torch::kCPU, 1);
  ASSERT_TRUE(method.Attach(*lm, 3).ok());
  auto params = method.TrainableParameters();
  ASSERT_EQ(params.size(), 8u);
  EXPECT_EQ(params[2].first, "model.layers.0.self_attn.o_proj.lora_A.weight");
  EXPECT_EQ(params[2].second.size(0), 2);
  EXPECT_EQ(method.Attach(*lm, 3).code(), absl::StatusCode::kFailedPrecondition);

  // target_modules as a list, and all-linear.
  ASSERT_TRUE(ApplyOverride(*job, "lora.target_modules=[q_proj]").ok());
  EXPECT_EQ(LoraConfigFromJob(*job).target_modules.kind, TargetModules::Kind::kNames);
  ASSERT_TRUE(ApplyOverride(*job, "lora.target_modules=all-linear").ok());
  EXPECT_EQ(LoraConfigFromJob(*job).target_modules.kind, TargetModules::Kind::kAllLinear);
}

// The trainer's seam writes and reads the adapter through an Env: a MemEnv
// round trip, and a full disk failing naming the file.
TEST(LoraMethodTest, SaveToAndLoadFromAnEnv) {
  LoraConfig c;
  c.r = 4;
  LoraMethod method(c);
  auto lm = CausalLM::RandomInit(TinyLlama(false), torch::kFloat32, torch::kCPU, 1);
  ASSERT_TRUE(method.Attach(*lm, 3).ok());
  RandomizeB(*method.adapter(), 10);
  std::unique_ptr<Env> mem = NewMemEnv();
  ASSERT_TRUE(mem->CreateDirs("/ckpt").ok());
  train::AdapterMethod& seam = method;
  ASSERT_TRUE(seam.SaveTo("/ckpt/adapter", mem.get()).ok());
  EXPECT_TRUE(mem->FileExists("/ckpt/adapter/adapter_model.safetensors"));
  EXPECT_TRUE(mem->FileExists("/ckpt/adapter/adapter_config.json"));
  EXPECT_FALSE(fs::exists("/ckpt/adapter"));

  FaultInjectionEnv full(mem.get());
  full.FailWritesAfterBytes(100);
  const absl::Status s = seam.SaveTo("/ckpt/other", &full);
  EXPECT_EQ(s.code(), absl::StatusCode::kResourceExhausted) << s;
  EXPECT_THAT(std::string(s.message()),
              HasSubstr("write /ckpt/other/adapter_model.safetensors.tmp."));
  EXPECT_FALSE(mem->FileExists("/ckpt/other/adapter_model.safetensors"));

  LoraMethod other(c);
  auto lm2 = CausalLM::RandomInit(TinyLlama(false), torch::kFloat32, torch::kCPU, 2);
  ASSERT_TRUE(other.Attach(*lm2, 7).ok());
  const absl::Status loaded =
      static_cast<train::AdapterMethod&>(other).LoadFrom("/ckpt/adapter", mem.get());
  ASSERT_TRUE(loaded.ok()) << loaded;
  const auto want = method.TrainableParameters(), got = other.TrainableParameters();
  ASSERT_EQ(want.size(), got.size());
  for (size_t i = 0; i < want.size(); ++i) {
    EXPECT_EQ(want[i].first, got[i].first);
    EXPECT_TRUE(torch::equal(want[i].second, got[i].second)) << want[i].first;
  }
  EXPECT_EQ(other.LoadFrom("/ckpt/missing", mem.get()).code(), absl::StatusCode::kNotFound);
}

TEST(CheckpointingTest, LoraGradientsEqualWithAndWithoutRecompute) {
  std::vector<std::vector<Tensor>> grads;
  for (bool checkpoint : {false, true}) {
    auto lm = CausalLM::RandomInit(TinyLlama(false), torch::kFloat32, torch::kCPU, 8);
    LoraConfig c;
    c.dropout = 0.3;
    auto a = LoraAdapter::Inject(*lm, c, 9);
    ASSERT_TRUE(a.ok());
    RandomizeB(**a, 10);
    lm->train();
    lm->SetGradientCheckpointing(checkpoint);
    torch::manual_seed(11);
    Tensor ids = torch::randint(0, 40, {2, 6}, torch::kInt64);
    Tensor pos = torch::arange(6, torch::kInt64).view({1, 6}).expand({2, 6}).contiguous();
    Tensor loss = lm->LossSum(lm->Hidden(ids, pos, Tensor()), ids);
    loss.backward();
    std::vector<Tensor> g;
    for (const auto& [name, p] : (*a)->NamedParameters()) g.push_back(p.grad().clone());
    grads.push_back(g);
  }
  for (size_t i = 0; i < grads[0].size(); ++i) {
    EXPECT_TRUE(torch::allclose(grads[0][i], grads[1][i], 1e-5, 1e-6)) << i;
  }
}

}  // namespace
}  // namespace fjord::lora

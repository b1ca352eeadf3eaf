// LoRA on lm_head (CPU): the chunked loss through an adapted head, peft's
// copy of lm_head's base weight in an adapter file, and the refusal to merge
// into a tied head.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <torch/nn/functional/loss.h>
#include <torch/types.h>

#include <filesystem>
#include <string>
#include <utility>
#include <vector>

#include "lora/adapter.h"
#include "lora/adapter_test_util.h"
#include "lora/export.h"
#include "lora/lora_linear.h"
#include "runtime/io/safetensors.h"

namespace fjord::lora {
namespace {

using namespace test_util;  // NOLINT(build/namespaces)
using ::testing::HasSubstr;
using torch::Tensor;

// peft saves a copy of lm_head's base weight when lm_head is a target
// (save_embedding_layers): accepted when it is the base model's (also in
// another dtype), refused with the largest difference when it is not, by
// FromPretrained, LoadWeights (lora.init_from) and export.
TEST(SaveLoadTest, ACopyOfTheHeadsBaseWeightMustBeTheBaseModels) {
  const std::string dir = TempDir();
  auto lm = CausalLM::RandomInit(TinyQwen2(), torch::kFloat32, torch::kCPU, 2);
  SaveBase(*lm, dir + "/base");
  LoraConfig c;
  c.target_modules = TargetModules::Names({"q_proj", "lm_head"});
  auto a = LoraAdapter::Inject(*lm, c, 5);
  ASSERT_TRUE(a.ok()) << a.status();
  RandomizeB(**a, 6);
  const Tensor logits = Logits(*lm);
  ASSERT_TRUE((*a)->Save(dir + "/adapter").ok());
  const std::string file = dir + "/adapter/adapter_model.safetensors";
  std::vector<std::pair<std::string, Tensor>> tensors;
  {
    auto f = io::SafetensorsFile::Open(file);
    ASSERT_TRUE(f.ok()) << f.status();
    for (const std::string& name : (*f)->Names())
      tensors.emplace_back(name, (*f)->Get(name)->clone());
  }
  const std::string key = "base_model.model.lm_head.base_layer.weight";
  const Tensor head = lm->lm_head->base_weight().detach().clone();
  auto with_copy = [&](const Tensor& copy) {
    auto t = tensors;
    t.emplace_back(key, copy);
    EXPECT_TRUE(io::WriteSafetensors(file, t, {{"format", "pt"}}).ok());
  };
  auto from_pretrained = [&]() {
    auto lm2 = CausalLM::RandomInit(TinyQwen2(), torch::kFloat32, torch::kCPU, 2);
    auto b = LoraAdapter::FromPretrained(*lm2, dir + "/adapter");
    if (b.ok()) {
      EXPECT_TRUE(torch::equal(Logits(*lm2), logits));
    }
    return b.status();
  };
  auto load_weights = [&]() {
    auto lm3 = CausalLM::RandomInit(TinyQwen2(), torch::kFloat32, torch::kCPU, 2);
    auto fresh = LoraAdapter::Inject(*lm3, c, 99);
    EXPECT_TRUE(fresh.ok());
    return (*fresh)->LoadWeights(dir + "/adapter");
  };
  auto exported = [&]() {
    std::filesystem::remove_all(dir + "/merged");
    return ExportMerged(dir + "/base", dir + "/adapter", dir + "/merged");
  };
  for (const Tensor& same : {head, head.to(torch::kBFloat16)}) {
    with_copy(same);
    EXPECT_TRUE(from_pretrained().ok()) << from_pretrained();
    EXPECT_TRUE(load_weights().ok()) << load_weights();
    EXPECT_TRUE(exported().ok()) << exported();
  }
  Tensor other = head.clone();
  other[7][3] += 0.5;
  with_copy(other);
  for (const absl::Status& s : {from_pretrained(), load_weights(), exported()}) {
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(s.message(), HasSubstr(file + ": tensor '" + key));
    EXPECT_THAT(s.message(),
                HasSubstr("differs from this base model's weight (largest difference 0.5"));
  }
  with_copy(head.narrow(0, 0, 10));
  EXPECT_THAT(from_pretrained().message(),
              HasSubstr("has shape [10, 32], expected [40, 32] (the base model's lm_head weight, "
                        "which it copies)"));
}

TEST(MergeTest, AnAdaptedTiedHeadIsNotMerged) {
  for (bool tied : {true, false}) {
    auto lm = CausalLM::RandomInit(TinyLlama(tied), torch::kFloat32, torch::kCPU, 4);
    LoraConfig c;
    c.target_modules = TargetModules::Names({"q_proj", "lm_head"});
    auto a = LoraAdapter::Inject(*lm, c, 1);
    ASSERT_TRUE(a.ok());
    RandomizeB(**a, 2);
    const Tensor embed = lm->model->embed_weight.clone();
    const Tensor adapted = Logits(*lm);
    const absl::Status s = (*a)->Merge();
    if (tied) {
      EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition);
      EXPECT_THAT(s.message(), HasSubstr("it changes lm_head, which shares its matrix with the "
                                         "embeddings (tie_word_embeddings)"));
      EXPECT_FALSE((*a)->layers()[0]->merged());  // nothing merged
    } else {
      ASSERT_TRUE(s.ok()) << s;
    }
    EXPECT_TRUE(torch::equal(lm->model->embed_weight, embed));
    EXPECT_TRUE(torch::allclose(Logits(*lm), adapted, 1e-5, 1e-5));
  }
}

// lm_head among the targets: LossSum runs the chunked head loss
// (model::HeadCrossEntropySum through LoraLinear::Parts) and gives what the
// adapted head's full logits give, loss and adapter gradients.
TEST(AdaptedHeadTest, LossAndGradientsEqualTheFullLogits) {
  for (bool tied : {false, true}) {
    auto lm = CausalLM::RandomInit(TinyLlama(tied), torch::kFloat32, torch::kCPU, 4);
    LoraConfig c;
    c.target_modules = TargetModules::Names({"lm_head", "q_proj"});
    c.dropout = 0;  // both runs see the same adapters
    auto a = LoraAdapter::Inject(*lm, c, 1);
    ASSERT_TRUE(a.ok()) << a.status();
    RandomizeB(**a, 2);
    auto head = std::dynamic_pointer_cast<LoraLinear>(lm->lm_head);
    ASSERT_NE(head, nullptr);
    ASSERT_TRUE(head->Parts().has_value());
    EXPECT_TRUE(head->Parts()->a.defined());
    lm->train();
    const Tensor ids = torch::tensor({3, 1, 4, 1, 5, 9, 2, 6, 5, 3}, torch::kInt64).view({2, 5});
    const Tensor pos = torch::arange(5, torch::kInt64).view({1, 5}).expand({2, 5}).contiguous();
    const Tensor targets =
        torch::tensor({1, 4, 1, 5, -100, 2, 6, -100, 3, 7}, torch::kInt64).view({2, 5});
    auto run = [&](bool full) {
      for (const auto& [name, p] : (*a)->NamedParameters()) p.mutable_grad() = Tensor();
      const Tensor h = lm->Hidden(ids, pos, Tensor());
      const Tensor loss =
          full ? torch::nn::functional::cross_entropy(
                     lm->Logits(h).view({10, -1}), targets.view({-1}),
                     torch::nn::functional::CrossEntropyFuncOptions().ignore_index(-100).reduction(
                         torch::kSum))
               : lm->LossSum(h, targets);
      loss.backward();
      std::vector<Tensor> grads = {loss.detach()};
      for (const auto& [name, p] : (*a)->NamedParameters()) grads.push_back(p.grad().clone());
      return grads;
    };
    const std::vector<Tensor> got = run(false), want = run(true);
    ASSERT_EQ(got.size(), want.size());
    for (size_t i = 0; i < got.size(); ++i) {
      EXPECT_TRUE(torch::allclose(got[i], want[i], 1e-4, 1e-5)) << "tied " << tied << " #" << i;
    }
    // Merged or switched off, the head is its base matrix alone.
    head->set_enabled(false);
    EXPECT_FALSE(head->Parts()->a.defined());
    head->set_enabled(true);
    lm->eval();
    EXPECT_EQ(head->Parts()->dropout, 0.0);
  }
}

}  // namespace
}  // namespace fjord::lora

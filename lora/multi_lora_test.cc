// MultiLora against each adapter on a model of its own: the same logits row
// for row, the same losses and adapters after several joint AdamW steps
// (with and without gradient checkpointing), no gradient for an adapter
// without rows, PEFT files both ways, and the refusals.
#include "lora/multi_lora.h"

#include <torch/torch.h>

#include <cmath>
#include <filesystem>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "lora/adapter.h"
#include "lora/adapter_test_util.h"
#include "runtime/model/generation.h"
#include "runtime/model/model.h"
#include "runtime/model/thread_shard_group.h"
#include "runtime/train/optimizer.h"

namespace fjord::lora {
namespace {

using ::testing::HasSubstr;
using torch::Tensor;

constexpr uint64_t kBaseSeed = 7;

// Three adapters unlike each other: rank, alpha, targets (lm_head too), seed.
std::vector<MultiLora::Member> ThreeMembers() {
  std::vector<MultiLora::Member> m(3);
  m[0].config.r = 4;
  m[0].config.alpha = 8;
  m[0].config.target_modules = TargetModules::Names({"q_proj", "v_proj"});
  m[0].seed = 1;
  m[1].config.r = 8;
  m[1].config.alpha = 16;
  m[1].seed = 2;  // all-linear
  m[2].config.r = 2;
  m[2].config.alpha = 2;
  m[2].config.target_modules = TargetModules::Names({"down_proj", "lm_head"});
  m[2].seed = 3;
  return m;
}

std::shared_ptr<CausalLM> Base(const ModelConfig& config) {
  return CausalLM::RandomInit(config, torch::kFloat32, torch::kCPU, kBaseSeed);
}

// Every B of every adapter random, so each changes the output.
void RandomizeB(MultiLora& multi) {
  torch::NoGradGuard g;
  torch::manual_seed(11);
  for (int k = 0; k < multi.size(); ++k) {
    for (auto& [name, p] : multi.NamedParameters(k)) {
      if (absl::StrContains(name, "lora_B")) p.copy_(torch::randn(p.sizes()) * 0.3);
    }
  }
}

// Adapter k of `multi` on a model of its own (the same base, the same weights).
struct Alone {
  std::shared_ptr<CausalLM> lm;
  std::unique_ptr<LoraAdapter> adapter;
};
Alone AloneCopy(const ModelConfig& config, const MultiLora& multi, int k,
                const MultiLora::Member& member) {
  Alone a;
  a.lm = Base(config);
  auto adapter = LoraAdapter::Inject(*a.lm, member.config, member.seed);
  EXPECT_TRUE(adapter.ok()) << adapter.status();
  a.adapter = std::move(*adapter);
  torch::NoGradGuard g;
  auto mine = multi.NamedParameters(k);
  auto theirs = a.adapter->NamedParameters();
  EXPECT_EQ(mine.size(), theirs.size());
  for (size_t i = 0; i < mine.size() && i < theirs.size(); ++i) {
    EXPECT_EQ(mine[i].first, theirs[i].first);
    theirs[i].second.copy_(mine[i].second);
  }
  return a;
}

Tensor Positions(int64_t b, int64_t t) {
  return torch::arange(t, torch::kInt64).view({1, t}).expand({b, t}).contiguous();
}

Tensor LogitsOf(CausalLM& lm, const Tensor& ids) {
  torch::NoGradGuard g;
  return lm.Logits(lm.Hidden(ids, Positions(ids.size(0), ids.size(1)), Tensor()));
}

double MaxDiff(const Tensor& a, const Tensor& b) { return (a - b).abs().max().item<double>(); }

class MultiLoraTest : public ::testing::TestWithParam<int> {
 protected:
  ModelConfig Config() const {
    switch (GetParam()) {
      case 0:
        return test_util::TinyLlama(/*tied=*/false);
      case 1:
        return test_util::TinyLlama(/*tied=*/true);
      default:
        return test_util::TinyQwen2();
    }
  }
};

TEST_P(MultiLoraTest, EachAdaptersRowsGetTheLogitsOfThatAdapterAlone) {
  const ModelConfig config = Config();
  auto lm = Base(config);
  lm->eval();
  const Tensor base_logits_ids = torch::randint(0, config.vocab_size, {5, 6}, torch::kInt64);
  const Tensor base_logits = LogitsOf(*lm, base_logits_ids);
  const auto members = ThreeMembers();
  auto multi = MultiLora::Attach(*lm, members);
  ASSERT_TRUE(multi.ok()) << multi.status();
  RandomizeB(**multi);
  std::vector<Alone> alone;
  for (int k = 0; k < 3; ++k) alone.push_back(AloneCopy(config, **multi, k, members[k]));
  for (auto& a : alone) a.lm->eval();

  torch::manual_seed(5);
  const Tensor ids = torch::randint(0, config.vocab_size, {5, 6}, torch::kInt64);
  const Tensor base_of_ids = LogitsOf(*Base(config), ids);
  for (const std::vector<int64_t>& rows :
       std::vector<std::vector<int64_t>>{{2, 1, 2}, {2, 0, 3}, {0, 5, 0}}) {
    ASSERT_TRUE((*multi)->SetRows(rows).ok());
    const Tensor joint = LogitsOf(*lm, ids);
    int64_t start = 0;
    for (int k = 0; k < 3; ++k) {
      const int64_t n = rows[static_cast<size_t>(k)];
      if (n == 0) continue;
      const Tensor mine = joint.narrow(0, start, n);
      const Tensor theirs = LogitsOf(*alone[static_cast<size_t>(k)].lm, ids.narrow(0, start, n));
      EXPECT_LT(MaxDiff(mine, theirs), 1e-5)
          << "adapter " << k << ", rows " << rows[0] << "," << rows[1] << "," << rows[2];
      // The adapter changed something (its B is random).
      EXPECT_GT(MaxDiff(mine, base_of_ids.narrow(0, start, n)), 1e-3) << "adapter " << k;
      start += n;
    }
  }
  // Only(k): every row to adapter k; Only(kBase): the base alone.
  for (int k = 0; k < 3; ++k) {
    auto only = (*multi)->Only(k);
    EXPECT_LT(MaxDiff(LogitsOf(*lm, ids), LogitsOf(*alone[static_cast<size_t>(k)].lm, ids)), 1e-5)
        << "Only(" << k << ")";
  }
  {
    auto only = (*multi)->Only(MultiLora::kBase);
    EXPECT_LT(MaxDiff(LogitsOf(*lm, base_logits_ids), base_logits), 1e-6);
  }
  // Detach puts the base back.
  (*multi)->Detach();
  EXPECT_LT(MaxDiff(LogitsOf(*lm, base_logits_ids), base_logits), 1e-6);
  for (const LinearSlot& s : lm->LinearSlots()) {
    EXPECT_EQ((*s.layer)->frozen_base(), s.layer->get()) << s.name;
  }
}

// A joint step per batch (every adapter its own mean over its own trained
// tokens, its own AdamW and learning rate) against each adapter stepping on
// its rows alone.
void TrainJointAndAlone(const ModelConfig& config, bool checkpointing) {
  auto lm = Base(config);
  lm->train();
  lm->SetGradientCheckpointing(checkpointing);
  const auto members = ThreeMembers();
  auto multi = MultiLora::Attach(*lm, members);
  ASSERT_TRUE(multi.ok()) << multi.status();
  RandomizeB(**multi);
  std::vector<Alone> alone;
  for (int k = 0; k < 3; ++k) {
    alone.push_back(AloneCopy(config, **multi, k, members[k]));
    alone.back().lm->train();
    alone.back().lm->SetGradientCheckpointing(checkpointing);
  }
  const std::vector<double> lr = {1e-2, 3e-3, 2e-2};
  std::vector<train::AdamW> joint_opt, alone_opt;
  for (int k = 0; k < 3; ++k) {
    joint_opt.emplace_back((*multi)->NamedParameters(k), train::AdamWOptions{});
    alone_opt.emplace_back(alone[static_cast<size_t>(k)].adapter->NamedParameters(),
                           train::AdamWOptions{});
  }
  const std::vector<int64_t> rows = {2, 3, 1};
  const int64_t b = 6, t = 7;
  torch::manual_seed(9);
  for (int step = 0; step < 4; ++step) {
    const Tensor ids = torch::randint(0, config.vocab_size, {b, t}, torch::kInt64);
    Tensor targets = torch::randint(0, config.vocab_size, {b, t}, torch::kInt64);
    targets.masked_fill_(torch::rand({b, t}) < 0.3, -100);  // prompt tokens
    ASSERT_TRUE((*multi)->SetRows(rows).ok());
    const Tensor hidden = lm->Hidden(ids, Positions(b, t), Tensor());
    auto sums = (*multi)->LossSums(*lm, hidden, targets);
    ASSERT_TRUE(sums.ok()) << sums.status();
    Tensor total = torch::zeros({});
    std::vector<double> joint_loss, alone_loss;
    int64_t start = 0;
    for (int k = 0; k < 3; ++k) {
      const int64_t n = rows[static_cast<size_t>(k)];
      const double tokens = (targets.narrow(0, start, n) != -100).sum().item<double>();
      ASSERT_GT(tokens, 0);
      const Tensor mean = (*sums)[static_cast<size_t>(k)] / tokens;
      total = total + mean;
      joint_loss.push_back(mean.item<double>());
      Alone& a = alone[static_cast<size_t>(k)];
      const Tensor h = a.lm->Hidden(ids.narrow(0, start, n), Positions(n, t), Tensor());
      const Tensor own = a.lm->LossSum(h, targets.narrow(0, start, n)) / tokens;
      own.backward();
      alone_loss.push_back(own.item<double>());
      alone_opt[static_cast<size_t>(k)].Step(lr[static_cast<size_t>(k)]);
      alone_opt[static_cast<size_t>(k)].ZeroGrad();
      start += n;
    }
    total.backward();
    for (int k = 0; k < 3; ++k) {
      joint_opt[static_cast<size_t>(k)].Step(lr[static_cast<size_t>(k)]);
      joint_opt[static_cast<size_t>(k)].ZeroGrad();
      EXPECT_NEAR(joint_loss[static_cast<size_t>(k)], alone_loss[static_cast<size_t>(k)], 1e-5)
          << "step " << step << ", adapter " << k;
    }
  }
  for (int k = 0; k < 3; ++k) {
    auto mine = (*multi)->NamedParameters(k);
    auto theirs = alone[static_cast<size_t>(k)].adapter->NamedParameters();
    ASSERT_EQ(mine.size(), theirs.size());
    for (size_t i = 0; i < mine.size(); ++i) {
      EXPECT_LT(MaxDiff(mine[i].second, theirs[i].second), 2e-5)
          << "adapter " << k << " " << mine[i].first;
    }
  }
  // Training moved the adapters (B from its random start, A from its seed's).
  auto fresh = LoraAdapter::Inject(*Base(config), members[0].config, members[0].seed);
  ASSERT_TRUE(fresh.ok());
  EXPECT_GT(MaxDiff((*multi)->NamedParameters(0)[0].second, (*fresh)->NamedParameters()[0].second),
            1e-4);
}

TEST_P(MultiLoraTest, JointTrainingEqualsEachAdapterTrainedAlone) {
  TrainJointAndAlone(Config(), /*checkpointing=*/false);
}

TEST_P(MultiLoraTest, JointTrainingEqualsEachAdapterTrainedAloneWithCheckpointing) {
  TrainJointAndAlone(Config(), /*checkpointing=*/true);
}

INSTANTIATE_TEST_SUITE_P(Models, MultiLoraTest, ::testing::Values(0, 1, 2),
                         [](const ::testing::TestParamInfo<int>& info) {
                           return std::string(info.param == 0   ? "Llama"
                                              : info.param == 1 ? "LlamaTied"
                                                                : "Qwen2");
                         });

TEST(MultiLoraAloneTest, AnAdapterWithoutRowsGetsNoGradient) {
  auto lm = Base(test_util::TinyLlama(false));
  lm->train();
  auto multi = MultiLora::Attach(*lm, ThreeMembers());
  ASSERT_TRUE(multi.ok()) << multi.status();
  RandomizeB(**multi);
  ASSERT_TRUE((*multi)->SetRows({3, 0, 2}).ok());
  const Tensor ids = torch::randint(0, 40, {5, 4}, torch::kInt64);
  const Tensor hidden = lm->Hidden(ids, Positions(5, 4), Tensor());
  auto sums = (*multi)->LossSums(*lm, hidden, ids);
  ASSERT_TRUE(sums.ok()) << sums.status();
  EXPECT_EQ((*sums)[1].item<double>(), 0.0);
  ((*sums)[0] + (*sums)[1] + (*sums)[2]).backward();
  for (int k = 0; k < 3; ++k) {
    for (const auto& [name, p] : (*multi)->NamedParameters(k)) {
      const bool has = p.grad().defined() && p.grad().abs().sum().item<double>() > 0;
      EXPECT_EQ(has, k != 1) << "adapter " << k << " " << name;
    }
  }
}

// One Generate call over prompts of several adapters (rows routed through
// the prefill, the cached decode steps and the logits) writes what each
// adapter writes alone.
TEST(MultiLoraAloneTest, OneBatchedGenerationServesEveryAdapter) {
  const ModelConfig config = test_util::TinyLlama(false);
  auto lm = Base(config);
  lm->eval();
  const auto members = ThreeMembers();
  auto multi = MultiLora::Attach(*lm, members);
  ASSERT_TRUE(multi.ok()) << multi.status();
  RandomizeB(**multi);
  const std::vector<std::vector<int32_t>> prompts = {{3, 1, 4}, {1, 5, 9, 2, 6}, {5, 3}, {5, 8, 9}};
  const std::vector<int64_t> rows = {2, 1, 1};
  model::GenerationOptions options;
  options.max_new_tokens = 8;
  ASSERT_TRUE((*multi)->SetRows(rows).ok());
  auto together = model::Generate(*lm, prompts, options);
  ASSERT_TRUE(together.ok()) << together.status();
  size_t row = 0;
  int differ = 0;
  for (int k = 0; k < 3; ++k) {
    Alone alone = AloneCopy(config, **multi, k, members[k]);
    alone.lm->eval();
    std::vector<std::vector<int32_t>> mine(prompts.begin() + static_cast<int64_t>(row),
                                           prompts.begin() + static_cast<int64_t>(row) + rows[k]);
    auto by_itself = model::Generate(*alone.lm, mine, options);
    ASSERT_TRUE(by_itself.ok()) << by_itself.status();
    auto base = model::Generate(*Base(config), mine, options);
    ASSERT_TRUE(base.ok());
    for (size_t i = 0; i < mine.size(); ++i, ++row) {
      EXPECT_EQ((*together)[row].ids, (*by_itself)[i].ids) << "adapter " << k << ", prompt " << row;
      differ += (*base)[i].ids != (*by_itself)[i].ids;
    }
  }
  EXPECT_GT(differ, 0);  // the adapters change what is written
}

TEST(MultiLoraAloneTest, AdaptersSaveAsPeftAndLoadBack) {
  const ModelConfig config = test_util::TinyLlama(false);
  auto lm = Base(config);
  lm->eval();
  auto multi = MultiLora::Attach(*lm, ThreeMembers());
  ASSERT_TRUE(multi.ok()) << multi.status();
  RandomizeB(**multi);
  const std::string dir = test_util::TempDir();
  const Tensor ids = torch::randint(0, config.vocab_size, {2, 5}, torch::kInt64);
  std::vector<Tensor> expected;
  for (int k = 0; k < 3; ++k) {
    ASSERT_TRUE((*multi)->Save(k, dir + "/a" + std::to_string(k)).ok());
    auto only = (*multi)->Only(k);
    expected.push_back(LogitsOf(*lm, ids));
  }
  // Each file is a PEFT adapter of its own: LoraAdapter reads it on a fresh base.
  for (int k = 0; k < 3; ++k) {
    auto fresh = Base(config);
    fresh->eval();
    auto a = LoraAdapter::FromPretrained(*fresh, dir + "/a" + std::to_string(k));
    ASSERT_TRUE(a.ok()) << a.status();
    EXPECT_LT(MaxDiff(LogitsOf(*fresh, ids), expected[static_cast<size_t>(k)]), 1e-6);
  }
  // Members from PEFT directories, in another order, beside a new one.
  std::vector<MultiLora::Member> members(3);
  members[0].peft_dir = dir + "/a2";
  members[1].config.r = 2;
  members[2].peft_dir = dir + "/a0";
  auto lm2 = Base(config);
  lm2->eval();
  auto loaded = MultiLora::Attach(*lm2, members);
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  ASSERT_TRUE((*loaded)->SetRows({1, 0, 1}).ok());
  const Tensor joint = LogitsOf(*lm2, ids);
  EXPECT_LT(MaxDiff(joint.narrow(0, 0, 1), expected[2].narrow(0, 0, 1)), 1e-5);
  EXPECT_LT(MaxDiff(joint.narrow(0, 1, 1), expected[0].narrow(0, 1, 1)), 1e-5);
  // Resume: adapter 1 takes adapter 1's weights back after they changed.
  {
    torch::NoGradGuard g;
    for (auto& [name, p] : (*multi)->NamedParameters(1)) p.add_(1.0);
  }
  ASSERT_TRUE((*multi)->LoadWeights(1, dir + "/a1").ok());
  {
    auto only = (*multi)->Only(1);
    EXPECT_LT(MaxDiff(LogitsOf(*lm, ids), expected[1]), 1e-6);
  }
  // Another adapter's files do not fit adapter 0 (other modules).
  absl::Status wrong = (*multi)->LoadWeights(0, dir + "/a1");
  EXPECT_EQ(wrong.code(), absl::StatusCode::kFailedPrecondition) << wrong;
  std::filesystem::remove_all(dir);
}

// A 4-bit base (QLoRA): the routed update goes through LoraLinear::AddUpdate
// on each adapter's rows, as a single adapter's forward does on the whole.
TEST(MultiLoraAloneTest, OnANf4BaseEachAdaptersRowsAreThatAdapterAlone) {
  const ModelConfig config = test_util::TinyLlama(false);
  const std::string dir = test_util::TempDir();
  test_util::SaveBase(*Base(config), dir);
  model::LoadOptions nf4;
  nf4.quantization = "nf4";
  auto load = [&] {
    auto lm = CausalLM::FromPretrained(dir, nf4);
    EXPECT_TRUE(lm.ok()) << lm.status();
    return *lm;
  };
  auto lm = load();
  ASSERT_EQ(lm->quantization(), "nf4");
  lm->train();
  const auto members = ThreeMembers();
  auto multi = MultiLora::Attach(*lm, members);
  ASSERT_TRUE(multi.ok()) << multi.status();
  RandomizeB(**multi);
  const std::vector<int64_t> rows = {1, 2, 1};
  torch::manual_seed(3);
  const Tensor ids = torch::randint(0, config.vocab_size, {4, 6}, torch::kInt64);
  ASSERT_TRUE((*multi)->SetRows(rows).ok());
  auto sums = (*multi)->LossSums(*lm, lm->Hidden(ids, Positions(4, 6), Tensor()), ids);
  ASSERT_TRUE(sums.ok()) << sums.status();
  ((*sums)[0] + (*sums)[1] + (*sums)[2]).backward();
  int64_t start = 0;
  for (int k = 0; k < 3; ++k) {
    const int64_t n = rows[static_cast<size_t>(k)];
    auto alone_lm = load();
    alone_lm->train();
    auto alone = LoraAdapter::Inject(*alone_lm, members[k].config, members[k].seed);
    ASSERT_TRUE(alone.ok()) << alone.status();
    auto mine = (*multi)->NamedParameters(k);
    auto theirs = (*alone)->NamedParameters();
    ASSERT_EQ(mine.size(), theirs.size());
    {
      torch::NoGradGuard g;
      for (size_t i = 0; i < mine.size(); ++i) theirs[i].second.copy_(mine[i].second);
    }
    const Tensor own =
        alone_lm->LossSum(alone_lm->Hidden(ids.narrow(0, start, n), Positions(n, 6), Tensor()),
                          ids.narrow(0, start, n));
    own.backward();
    EXPECT_NEAR((*sums)[static_cast<size_t>(k)].item<double>(), own.item<double>(),
                1e-5 * std::abs(own.item<double>()))
        << "adapter " << k;
    for (size_t i = 0; i < mine.size(); ++i) {
      EXPECT_LT(MaxDiff(mine[i].second.grad(), theirs[i].second.grad()), 1e-5)
          << "adapter " << k << " " << mine[i].first;
    }
    start += n;
  }
  std::filesystem::remove_all(dir);
}

TEST(MultiLoraAloneTest, Refusals) {
  const ModelConfig config = test_util::TinyLlama(false);
  auto lm = Base(config);
  lm->eval();
  const Tensor ids = torch::randint(0, config.vocab_size, {3, 4}, torch::kInt64);
  const Tensor base_logits = LogitsOf(*lm, ids);

  EXPECT_EQ(MultiLora::Attach(*lm, {}).status().code(), absl::StatusCode::kInvalidArgument);
  // A member that matches nothing: named, and the model is left as it was.
  auto members = ThreeMembers();
  members[1].config.target_modules = TargetModules::Names({"no_such_proj"});
  auto bad = MultiLora::Attach(*lm, members);
  ASSERT_FALSE(bad.ok());
  EXPECT_THAT(bad.status().message(), HasSubstr("MultiLora adapter 1: "));
  for (const LinearSlot& s : lm->LinearSlots()) {
    EXPECT_EQ((*s.layer)->frozen_base(), s.layer->get()) << s.name;
  }
  EXPECT_LT(MaxDiff(LogitsOf(*lm, ids), base_logits), 1e-7);

  auto multi = MultiLora::Attach(*lm, ThreeMembers());
  ASSERT_TRUE(multi.ok()) << multi.status();
  // Neither a second MultiLora nor a plain adapter goes on top.
  EXPECT_EQ(MultiLora::Attach(*lm, ThreeMembers()).status().code(),
            absl::StatusCode::kFailedPrecondition);
  auto plain = LoraAdapter::Inject(*lm, LoraConfig{}, 1);
  EXPECT_EQ(plain.status().code(), absl::StatusCode::kFailedPrecondition) << plain.status();

  EXPECT_THAT((*multi)->SetRows({1, 2}).message(), HasSubstr("2 row counts for 3 adapters"));
  EXPECT_THAT((*multi)->SetRows({1, -1, 3}).message(), HasSubstr("adapter 1 has -1 rows"));
  EXPECT_THAT((*multi)->SetRows({0, 0, 0}).message(), HasSubstr("no row at all"));
  ASSERT_TRUE((*multi)->SetRows({1, 1, 2}).ok());
  try {
    LogitsOf(*lm, ids);  // 3 rows, the routing says 4
    ADD_FAILURE() << "a forward with the wrong row count ran";
  } catch (const c10::Error& e) {
    EXPECT_THAT(e.what_without_backtrace(),
                HasSubstr("the input has 3 rows but the adapters' routing gives 4"));
  }
  const Tensor hidden = torch::zeros({3, 4, config.hidden_size});
  EXPECT_EQ((*multi)->LossSums(*lm, hidden, ids).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_THROW((void)(*multi)->Only(3), c10::Error);

  // A base sharded across ranks (2 ranks as threads), before any collective.
  const std::string dir = test_util::TempDir();
  test_util::SaveBase(*Base(config), dir);
  auto shared = std::make_shared<model::ThreadShardGroup::Shared>(2);
  std::vector<absl::Status> sharded(2);
  model::RunRanks(2, shared, [&](int r, std::shared_ptr<model::ThreadShardGroup> group) {
    model::LoadOptions o;
    o.shard_group = std::move(group);
    auto lm_r = CausalLM::FromPretrained(dir, o);
    sharded[static_cast<size_t>(r)] =
        lm_r.ok() ? MultiLora::Attach(**lm_r, ThreeMembers()).status() : lm_r.status();
  });
  for (const absl::Status& s : sharded) {
    EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition) << s;
    EXPECT_THAT(s.message(), HasSubstr("sharded across ranks is not supported"));
  }
  std::filesystem::remove_all(dir);
  EXPECT_EQ((*multi)->Save(3, "/nonexistent").code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace fjord::lora

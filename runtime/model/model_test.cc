// CausalLM on CPU with tiny configs: parameter names, slots, tying, packed
// attention, gradient checkpointing, loss, RoPE tables, loading.
// (config.json parsing is tested in config_test.cc.)
#include "runtime/model/model.h"

#include <ATen/ops/scaled_dot_product_attention.h>
#include <torch/autograd.h>
#include <torch/nn/functional/linear.h>
#include <torch/nn/functional/loss.h>
#include <torch/types.h>
#include <torch/utils.h>

#include <cmath>
#include <memory>
#include <string>
#include <thread>
#include <tuple>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "runtime/io/model_dir.h"
#include "runtime/model/config.h"
#include "runtime/model/thread_shard_group.h"
#include "runtime/quant/nf4.h"
#include "runtime/util/env.h"

namespace fjord::model {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using torch::Tensor;

ModelConfig TinyLlama() {
  ModelConfig c;
  c.family = ModelFamily::kLlama;
  c.architecture = "LlamaForCausalLM";
  c.model_type = "llama";
  c.vocab_size = 50;
  c.hidden_size = 32;
  c.intermediate_size = 40;
  c.num_hidden_layers = 2;
  c.num_attention_heads = 4;
  c.num_key_value_heads = 2;  // GQA
  c.head_dim = 8;
  c.max_position_embeddings = 128;
  return c;
}

ModelConfig TinyQwen2() {
  ModelConfig c = TinyLlama();
  c.family = ModelFamily::kQwen2;
  c.architecture = "Qwen2ForCausalLM";
  c.model_type = "qwen2";
  c.qkv_bias = true;
  return c;
}

ModelConfig TinyQwen3() {
  ModelConfig c = TinyLlama();
  c.family = ModelFamily::kQwen3;
  c.architecture = "Qwen3ForCausalLM";
  c.model_type = "qwen3";
  c.qk_norm = true;
  c.head_dim = 12;  // explicit, not hidden / heads (8)
  return c;
}

// Phi3's layout with TinyLlama's sizes: fused qkv_proj and gate_up_proj.
ModelConfig TinyPhi3() {
  ModelConfig c = TinyLlama();
  c.family = ModelFamily::kPhi3;
  c.architecture = "Phi3ForCausalLM";
  c.model_type = "phi3";
  c.fused_projections = true;
  return c;
}

// Gemma 3's layout with TinyLlama's sizes: layer 0 local (window 3), layer
// 1 global.
ModelConfig TinyGemma3() {
  ModelConfig c = TinyLlama();
  c.family = ModelFamily::kGemma3;
  c.architecture = "Gemma3ForCausalLM";
  c.model_type = "gemma3_text";
  c.qk_norm = c.gemma_norms = c.gelu_mlp = true;
  c.embedding_scale = std::sqrt(32.0);
  c.query_pre_attn_scalar = 12;
  c.local_rope_theta = 10000;
  c.rope_theta = 1e6;
  c.sliding_window = 3;
  c.sliding_layers = {true, false};
  return c;
}

Tensor Ids(std::vector<std::vector<int64_t>> rows) {
  const int64_t b = static_cast<int64_t>(rows.size());
  const int64_t t = static_cast<int64_t>(rows[0].size());
  Tensor out = torch::empty({b, t}, torch::kInt64);
  for (int64_t i = 0; i < b; ++i) {
    for (int64_t j = 0; j < t; ++j) out[i][j] = rows[i][j];
  }
  return out;
}

Tensor Positions(const Tensor& ids) {
  return torch::arange(ids.size(1), torch::kInt64).unsqueeze(0).expand_as(ids).contiguous();
}

// A LoRA-like adapter standing in for lora/'s: trainable A, B and dropout on
// its input (so gradient checkpointing must replay the RNG).
class TestAdapter : public LinearBase {
 public:
  TestAdapter(std::shared_ptr<LinearBase> base, int64_t rank, double dropout)
      : base_(std::move(base)), dropout_(dropout) {
    register_module("base_layer", base_);
    a_ = register_parameter("lora_A", torch::randn({rank, base_->in_features()}) * 0.2);
    b_ = register_parameter("lora_B", torch::randn({base_->out_features(), rank}) * 0.2);
  }
  Tensor forward(const Tensor& x) override {
    ++forward_calls;
    Tensor d = torch::dropout(x, dropout_, is_training());
    return base_->forward(x) +
           torch::nn::functional::linear(torch::nn::functional::linear(d, a_), b_);
  }
  Tensor base_weight() const override { return base_->base_weight(); }
  Tensor base_bias() const override { return base_->base_bias(); }

  int forward_calls = 0;

 private:
  std::shared_ptr<LinearBase> base_;
  Tensor a_, b_;
  double dropout_;
};

TEST(CausalLMTest, ParameterNamesMatchHuggingFaceAndAreFrozen) {
  auto lm = CausalLM::RandomInit(TinyLlama(), torch::kFloat32, torch::kCPU, 1);
  std::vector<std::string> names;
  for (const auto& p : lm->named_parameters()) {
    names.push_back(p.key());
    EXPECT_FALSE(p.value().requires_grad()) << p.key();
  }
  std::vector<std::string> expected;
  for (const auto& [name, shape] : ExpectedTensors(lm->config())) expected.push_back(name);
  EXPECT_EQ(names, expected);
  EXPECT_EQ(names.front(), "model.embed_tokens.weight");
  EXPECT_EQ(names[1], "model.layers.0.self_attn.q_proj.weight");
  EXPECT_EQ(names.back(), "lm_head.weight");
  const auto params = lm->named_parameters();
  EXPECT_THAT(params["model.layers.1.self_attn.k_proj.weight"].sizes(), ElementsAre(16, 32));
  EXPECT_THAT(params["model.layers.1.self_attn.o_proj.weight"].sizes(), ElementsAre(32, 32));
  EXPECT_THAT(params["model.layers.1.mlp.down_proj.weight"].sizes(), ElementsAre(32, 40));
  EXPECT_THAT(params["model.norm.weight"].sizes(), ElementsAre(32));
  EXPECT_TRUE(torch::equal(params["model.norm.weight"], torch::ones({32})));
}

TEST(CausalLMTest, Qwen2HasQkvBiasesOnly) {
  auto lm = CausalLM::RandomInit(TinyQwen2(), torch::kFloat32, torch::kCPU, 1);
  const auto params = lm->named_parameters();
  EXPECT_TRUE(params.contains("model.layers.0.self_attn.q_proj.bias"));
  EXPECT_TRUE(params.contains("model.layers.0.self_attn.k_proj.bias"));
  EXPECT_TRUE(params.contains("model.layers.0.self_attn.v_proj.bias"));
  EXPECT_FALSE(params.contains("model.layers.0.self_attn.o_proj.bias"));
  EXPECT_FALSE(params.contains("model.layers.0.mlp.up_proj.bias"));
  EXPECT_THAT(params["model.layers.0.self_attn.k_proj.bias"].sizes(), ElementsAre(16));
}

TEST(CausalLMTest, Qwen3NormsEachHeadsQueryAndKey) {
  const ModelConfig c = TinyQwen3();
  auto lm = CausalLM::RandomInit(c, torch::kFloat32, torch::kCPU, 1);
  auto params = lm->named_parameters();
  EXPECT_THAT(params["model.layers.1.self_attn.q_norm.weight"].sizes(), ElementsAre(12));
  EXPECT_THAT(params["model.layers.1.self_attn.k_norm.weight"].sizes(), ElementsAre(12));
  EXPECT_FALSE(params["model.layers.1.self_attn.q_norm.weight"].requires_grad());  // frozen
  EXPECT_THAT(params["model.layers.0.self_attn.q_proj.weight"].sizes(), ElementsAre(48, 32));
  EXPECT_FALSE(params.contains("model.layers.0.self_attn.q_proj.bias"));
  // The norms act: doubling k_norm's scale changes the hidden states (q's and k's
  // scale enters the attention scores).
  const Tensor ids = Ids({{3, 7, 1, 9, 4}});
  torch::NoGradGuard g;
  const Tensor before = lm->Hidden(ids, Positions(ids), Tensor());
  params["model.layers.0.self_attn.k_norm.weight"].mul_(2.0);
  const Tensor after = lm->Hidden(ids, Positions(ids), Tensor());
  EXPECT_GT((after - before).abs().max().item<double>(), 1e-4);
}

TEST(SlidingWindowTest, ATokenSeesItselfAndTheWindowMinusOneBeforeIt) {
  // Causal rows of 5, window 2.
  Tensor m = SlidingWindowMask(1, 5, AttentionLayout{}, 2, torch::kCPU);
  ASSERT_THAT(m.sizes(), ElementsAre(1, 1, 5, 5));
  EXPECT_TRUE(
      torch::equal(m[0][0][4].to(torch::kInt64), torch::tensor({0, 0, 0, 1, 1}, torch::kInt64)));
  EXPECT_TRUE(
      torch::equal(m[0][0][0].to(torch::kInt64), torch::tensor({1, 0, 0, 0, 0}, torch::kInt64)));
  // Runs of 3 and 2 in one row, window 2: nothing across the runs.
  AttentionLayout runs;
  runs.segment_lengths = {{3, 2}};
  Tensor r = SlidingWindowMask(1, 5, runs, 2, torch::kCPU);
  EXPECT_TRUE(
      torch::equal(r[0][0][2].to(torch::kInt64), torch::tensor({0, 1, 1, 0, 0}, torch::kInt64)));
  EXPECT_TRUE(
      torch::equal(r[0][0][3].to(torch::kInt64), torch::tensor({0, 0, 0, 1, 0}, torch::kInt64)));
}

TEST(SlidingWindowTest, BlockedAttentionEqualsTheFullMaskForwardAndBackward) {
  // T from below the window to several blocks with a ragged end, GQA, and
  // packed runs of which some exceed the window.
  torch::manual_seed(4);
  for (int64_t t : {5, 12, 13, 31}) {
    for (int64_t window : {1, 4, 7}) {
      Tensor q = torch::randn({2, 4, t, 8}, torch::kFloat64).requires_grad_(true);
      Tensor k = torch::randn({2, 2, t, 8}, torch::kFloat64).requires_grad_(true);
      Tensor v = torch::randn({2, 2, t, 8}, torch::kFloat64).requires_grad_(true);
      Tensor mask = SlidingWindowMask(2, t, AttentionLayout{}, window, torch::kCPU);
      Tensor want = at::scaled_dot_product_attention(q, k, v, mask, 0.0, false, 0.3, true);
      Tensor got = WindowedCausalAttention(q, k, v, window, 0.0, 0.3);
      ASSERT_TRUE(torch::allclose(got, want, 1e-10, 1e-10)) << t << " " << window;
      Tensor g = torch::randn_like(want);
      auto grads = [&](const Tensor& y) { return torch::autograd::grad({y}, {q, k, v}, {g}); };
      const auto gw = grads(want);
      const auto gg = grads(got);
      for (size_t i = 0; i < 3; ++i) {
        EXPECT_TRUE(torch::allclose(gg[i], gw[i], 1e-10, 1e-10)) << t << " " << window << " " << i;
      }
      if (t >= 12) {
        AttentionLayout runs;
        runs.segment_lengths = {{t - 9, 9}, {3, t - 3}};
        Tensor pmask = SlidingWindowMask(2, t, runs, window, torch::kCPU);
        Tensor pwant = at::scaled_dot_product_attention(q, k, v, pmask, 0.0, false, 0.3, true);
        Tensor pgot = SegmentedCausalAttention(q, k, v, runs.segment_lengths, 0.0, 0.3, window);
        EXPECT_TRUE(torch::allclose(pgot, pwant, 1e-10, 1e-10)) << t << " " << window;
      }
    }
  }
}

TEST(CausalLMTest, LlamaAttentionAndMlpBias) {
  ModelConfig c = TinyLlama();
  c.qkv_bias = c.o_proj_bias = c.mlp_bias = true;
  auto lm = CausalLM::RandomInit(c, torch::kFloat32, torch::kCPU, 1);
  const auto params = lm->named_parameters();
  for (const char* n : {"q_proj", "k_proj", "v_proj", "o_proj"}) {
    EXPECT_TRUE(params.contains(std::string("model.layers.1.self_attn.") + n + ".bias")) << n;
  }
  for (const char* n : {"gate_proj", "up_proj", "down_proj"}) {
    EXPECT_TRUE(params.contains(std::string("model.layers.1.mlp.") + n + ".bias")) << n;
  }
}

TEST(CausalLMTest, TiedEmbeddingsShareStorage) {
  ModelConfig c = TinyLlama();
  c.tie_word_embeddings = true;
  auto lm = CausalLM::RandomInit(c, torch::kFloat32, torch::kCPU, 1);
  Tensor embed = lm->named_parameters()["model.embed_tokens.weight"];
  EXPECT_EQ(lm->lm_head->base_weight().data_ptr(), embed.data_ptr());
  {
    torch::NoGradGuard g;
    embed[3].fill_(0.5);
  }
  EXPECT_TRUE(torch::equal(lm->lm_head->base_weight()[3], torch::full({32}, 0.5)));
  for (const auto& [name, shape] : ExpectedTensors(c)) EXPECT_NE(name, "lm_head.weight");
}

TEST(CausalLMTest, ConfigParameterCountsEqualTheCheckpointsTensors) {
  for (ModelConfig c : {TinyLlama(), TinyQwen2(), TinyQwen3(), TinyPhi3(), TinyGemma3()}) {
    for (bool tied : {false, true}) {
      c.tie_word_embeddings = tied;
      int64_t linear = 0, total = 0;
      for (const auto& [name, shape] : ExpectedTensors(c)) {
        int64_t n = 1;
        for (int64_t d : shape) n *= d;
        total += n;
        if (absl::StartsWith(name, "model.layers.") && absl::EndsWith(name, "_proj.weight")) {
          linear += n;
        }
      }
      EXPECT_EQ(c.CountParameters().decoder_linear, linear) << c.architecture << tied;
      EXPECT_EQ(c.CountParameters().total(), total) << c.architecture << tied;
    }
  }
}

TEST(CausalLMTest, LinearSlotsListEveryLinearInHuggingFaceNames) {
  auto lm = CausalLM::RandomInit(TinyLlama(), torch::kFloat32, torch::kCPU, 1);
  std::vector<LinearSlot> slots = lm->LinearSlots();
  ASSERT_EQ(slots.size(), 2u * 7 + 1);
  EXPECT_EQ(slots[0].name, "model.layers.0.self_attn.q_proj");
  EXPECT_EQ(slots[0].kind, "q_proj");
  EXPECT_EQ(slots[0].layer_index, 0);
  EXPECT_EQ(slots[6].name, "model.layers.0.mlp.down_proj");
  EXPECT_EQ(slots[10].name, "model.layers.1.self_attn.o_proj");
  EXPECT_EQ(slots[10].layer_index, 1);
  EXPECT_EQ(slots.back().name, "lm_head");
  EXPECT_EQ(slots.back().kind, "lm_head");
  EXPECT_EQ(slots.back().layer_index, -1);
  const auto params = lm->named_parameters();
  for (const LinearSlot& s : slots) {
    EXPECT_EQ((*s.layer)->base_weight().data_ptr(), params[s.name + ".weight"].data_ptr())
        << s.name;
  }

  // Replacing a slot swaps both the member and the registered module.
  auto adapter = std::make_shared<TestAdapter>(*slots[1].layer, 2, 0.0);
  slots[1].Replace(adapter);
  EXPECT_EQ(lm->model->layers[0]->self_attn->k_proj.get(), adapter.get());
  const auto after = lm->named_parameters();
  EXPECT_TRUE(after.contains("model.layers.0.self_attn.k_proj.lora_A"));
  EXPECT_TRUE(after.contains("model.layers.0.self_attn.k_proj.base_layer.weight"));
  EXPECT_FALSE(after.contains("model.layers.0.self_attn.k_proj.weight"));
}

TEST(CausalLMTest, PackedSequencesMatchSeparateRuns) {
  for (const ModelConfig& c : {TinyLlama(), TinyQwen2()}) {
    auto lm = CausalLM::RandomInit(c, torch::kFloat32, torch::kCPU, 7);
    lm->eval();
    torch::NoGradGuard g;
    Tensor a = Ids({{5, 9, 2}});
    Tensor b = Ids({{7, 1, 3, 3, 8}});
    Tensor ha = lm->Hidden(a, Positions(a), Tensor());  // (1, 3, C)
    Tensor hb = lm->Hidden(b, Positions(b), Tensor());  // (1, 5, C)

    // Row 0: a, b, two padding tokens (segment 0); row 1: b, a, padding.
    Tensor packed = Ids({{5, 9, 2, 7, 1, 3, 3, 8, 0, 0}, {7, 1, 3, 3, 8, 5, 9, 2, 0, 0}});
    Tensor seg =
        Ids({{1, 1, 1, 2, 2, 2, 2, 2, 0, 0}, {1, 1, 1, 1, 1, 2, 2, 2, 0, 0}}).to(torch::kInt32);
    Tensor pos = PositionsFromSegments(seg);
    EXPECT_TRUE(torch::equal(pos[0], Ids({{0, 1, 2, 0, 1, 2, 3, 4, 0, 1}})[0]));
    Tensor h = lm->Hidden(packed, pos, seg);  // (2, 10, C)
    ASSERT_THAT(h.sizes(), ElementsAre(2, 10, 32));
    EXPECT_TRUE(torch::allclose(h[0].narrow(0, 0, 3), ha[0], 1e-5, 1e-5));
    EXPECT_TRUE(torch::allclose(h[0].narrow(0, 3, 5), hb[0], 1e-5, 1e-5));
    EXPECT_TRUE(torch::allclose(h[1].narrow(0, 0, 5), hb[0], 1e-5, 1e-5));
    EXPECT_TRUE(torch::allclose(h[1].narrow(0, 5, 3), ha[0], 1e-5, 1e-5));
    EXPECT_TRUE(torch::isfinite(h).all().item<bool>());

    // Unpacked causal equals one segment covering the row.
    Tensor one = torch::ones({1, 5}, torch::kInt64);
    EXPECT_TRUE(torch::allclose(lm->Hidden(b, Positions(b), one), hb, 1e-5, 1e-5));
    // Without segments the packed row is one sequence: different results.
    Tensor flat = lm->Hidden(packed, Positions(packed), Tensor());
    EXPECT_FALSE(torch::allclose(flat[0].narrow(0, 3, 5), hb[0], 1e-3, 1e-3));
  }
}

// The block-diagonal causal mask (B, 1, T, T) of per-row run lengths.
Tensor MaskOf(const std::vector<std::vector<int64_t>>& lengths, int64_t t) {
  Tensor seg = torch::zeros({static_cast<int64_t>(lengths.size()), t}, torch::kInt64);
  for (size_t r = 0; r < lengths.size(); ++r) {
    int64_t at = 0, id = 1;
    for (int64_t n : lengths[r]) {
      seg[static_cast<int64_t>(r)].narrow(0, at, n).fill_(id++);
      at += n;
    }
  }
  Tensor causal = torch::ones({t, t}, torch::kBool).tril();
  return ((seg.unsqueeze(2) == seg.unsqueeze(1)) & causal).unsqueeze(1);
}

// Per-segment causal attention is the masked call, forward and every
// gradient, for GQA and plain multi-head shapes, odd lengths, single-token
// segments and a row that is one segment.
TEST(SegmentedAttentionTest, EqualsTheBlockDiagonalMaskForwardAndBackward) {
  torch::manual_seed(5);
  const std::vector<std::vector<int64_t>> lengths = {{10, 20, 7}, {37}, {1, 1, 35}, {18, 1, 18}};
  for (int64_t hk : {2, 4}) {
    SCOPED_TRACE(hk);
    auto opts = torch::TensorOptions(torch::kFloat64);
    Tensor q = torch::randn({4, 4, 37, 8}, opts).requires_grad_(true);
    Tensor k = torch::randn({4, hk, 37, 8}, opts).requires_grad_(true);
    Tensor v = torch::randn({4, hk, 37, 8}, opts).requires_grad_(true);
    Tensor up = torch::randn({4, 4, 37, 8}, opts);
    Tensor got = SegmentedCausalAttention(q, k, v, lengths, 0.0);
    auto [gq, gk, gv] = [&] {
      auto g = torch::autograd::grad({(got * up).sum()}, {q, k, v});
      return std::make_tuple(g[0], g[1], g[2]);
    }();
    Tensor want = at::scaled_dot_product_attention(q, k, v, MaskOf(lengths, 37), 0.0, false,
                                                   std::nullopt, hk != 4);
    auto w = torch::autograd::grad({(want * up).sum()}, {q, k, v});
    EXPECT_LE((got - want).abs().max().item<double>(), 1e-12);
    EXPECT_LE((gq - w[0]).abs().max().item<double>(), 1e-12);
    EXPECT_LE((gk - w[1]).abs().max().item<double>(), 1e-12);
    EXPECT_LE((gv - w[2]).abs().max().item<double>(), 1e-12);
  }
  // Lengths that do not cover the row are an error, not a wrong answer.
  Tensor q = torch::randn({1, 2, 5, 4});
  EXPECT_THROW(SegmentedCausalAttention(q, q, q, {{2, 2}}, 0.0), c10::Error);
  EXPECT_THROW(SegmentedCausalAttention(q, q, q, {{2, 3}, {5}}, 0.0), c10::Error);
}

TEST(SegmentedAttentionTest, LayoutFromSegmentIds) {
  auto layout = [](std::vector<std::vector<int64_t>> rows) {
    return AttentionLayout::FromSegments(Ids(std::move(rows)).to(torch::kInt32), torch::kCPU);
  };
  std::vector<int64_t> a(20, 1), b(12, 2), pad(8, 0);
  std::vector<int64_t> row0 = a;
  row0.insert(row0.end(), b.begin(), b.end());
  row0.insert(row0.end(), pad.begin(), pad.end());  // 20 + 12 + 8 padding
  std::vector<int64_t> row1(40, 1);                 // one example filling the row
  AttentionLayout l = layout({row0, row1});
  EXPECT_FALSE(l.mask.defined());
  ASSERT_EQ(l.segment_lengths.size(), 2u);
  EXPECT_THAT(l.segment_lengths[0], ElementsAre(20, 12, 8));
  EXPECT_THAT(l.segment_lengths[1], ElementsAre(40));
  // Every row one run: plain causal rows, neither set.
  l = layout({row1, row1});
  EXPECT_TRUE(l.segment_lengths.empty());
  EXPECT_FALSE(l.mask.defined());
  // An id that comes back after another one: only the mask says that.
  std::vector<int64_t> back = row0;
  std::fill(back.begin() + 32, back.end(), 1);
  l = layout({back, row1});
  EXPECT_TRUE(l.segment_lengths.empty());
  ASSERT_TRUE(l.mask.defined());
  EXPECT_THAT(l.mask.sizes(), ElementsAre(2, 1, 40, 40));
  EXPECT_TRUE(l.mask[0][0][35][5].item<bool>());    // back to segment 1: sees its first run
  EXPECT_FALSE(l.mask[0][0][35][25].item<bool>());  // not segment 2
  // Runs of a few tokens: one masked call instead of a call per run.
  l = layout({{1, 1, 2, 2, 3, 3, 4, 4}});
  EXPECT_TRUE(l.segment_lengths.empty());
  EXPECT_TRUE(l.mask.defined());
  // No segment ids, or an empty batch: causal rows.
  EXPECT_FALSE(AttentionLayout::FromSegments(Tensor(), torch::kCPU).mask.defined());
  EXPECT_TRUE(AttentionLayout::FromSegments(torch::zeros({0, 4}, torch::kInt64), torch::kCPU)
                  .segment_lengths.empty());
}

// Rows packed with examples long enough for the per-segment path: the
// hidden states are the separate runs', and so are the loss (a sum) and the
// gradients of every trainable parameter, with gradient checkpointing too.
TEST(CausalLMTest, PackedLongSegmentsMatchSeparateRunsInLossAndGradients) {
  ModelConfig c = TinyLlama();
  auto lm = CausalLM::RandomInit(c, torch::kFloat64, torch::kCPU, 11);
  lm->train();  // no dropout configured: deterministic
  auto params = lm->named_parameters();
  params["model.layers.0.self_attn.q_proj.weight"].requires_grad_(true);
  params["model.layers.1.self_attn.v_proj.weight"].requires_grad_(true);
  params["model.layers.1.mlp.down_proj.weight"].requires_grad_(true);
  torch::manual_seed(2);
  Tensor a = torch::randint(1, c.vocab_size, {1, 21}, torch::kInt64);
  Tensor b = torch::randint(1, c.vocab_size, {1, 27}, torch::kInt64);
  auto shifted = [](const Tensor& ids) {  // next-token targets, -100 on the last
    Tensor t = torch::full_like(ids, -100);
    t.narrow(1, 0, ids.size(1) - 1).copy_(ids.narrow(1, 1, ids.size(1) - 1));
    return t;
  };
  auto loss_and_grads = [&](const Tensor& ids, const Tensor& targets, const Tensor& seg,
                            const Tensor& pos) {
    for (auto& p : lm->parameters()) p.mutable_grad() = Tensor();
    Tensor hidden = lm->Hidden(ids, pos, seg);
    Tensor loss = lm->LossSum(hidden, targets);
    loss.backward();
    std::vector<Tensor> grads;
    for (const auto& p : lm->parameters()) {
      if (p.requires_grad()) grads.push_back(p.grad().clone());
    }
    return std::make_tuple(hidden.detach(), loss.detach(), grads);
  };
  auto [ha, la, ga] = loss_and_grads(a, shifted(a), Tensor(), Positions(a));
  auto [hb, lb, gb] = loss_and_grads(b, shifted(b), Tensor(), Positions(b));
  // Row: a, b, 16 padding tokens (segment 0, no loss).
  Tensor ids = torch::cat({a, b, torch::zeros({1, 16}, torch::kInt64)}, 1);
  Tensor targets =
      torch::cat({shifted(a), shifted(b), torch::full({1, 16}, -100, torch::kInt64)}, 1);
  Tensor seg =
      torch::cat({torch::full({1, 21}, 1, torch::kInt32), torch::full({1, 27}, 2, torch::kInt32),
                  torch::zeros({1, 16}, torch::kInt32)},
                 1);
  ASSERT_EQ(AttentionLayout::FromSegments(seg, torch::kCPU).segment_lengths.size(),
            1u);  // the segmented path
  for (bool checkpointing : {false, true}) {
    SCOPED_TRACE(checkpointing);
    lm->SetGradientCheckpointing(checkpointing);
    auto [h, l, g] = loss_and_grads(ids, targets, seg, PositionsFromSegments(seg));
    EXPECT_LE((h[0].narrow(0, 0, 21) - ha[0]).abs().max().item<double>(), 1e-10);
    EXPECT_LE((h[0].narrow(0, 21, 27) - hb[0]).abs().max().item<double>(), 1e-10);
    // The loss is accumulated in fp32 whatever the model dtype.
    EXPECT_NEAR(l.item<double>(), la.item<double>() + lb.item<double>(),
                1e-6 * std::abs(l.item<double>()));
    ASSERT_EQ(g.size(), 3u);
    for (size_t i = 0; i < g.size(); ++i) {
      EXPECT_LE((g[i] - ga[i] - gb[i]).abs().max().item<double>(), 1e-9) << "param " << i;
      EXPECT_GT(g[i].abs().max().item<double>(), 0.0) << "param " << i;
    }
  }
}

// Loss and gradients of `lm` on a fixed batch (packed when `packed`).
std::pair<Tensor, std::vector<Tensor>> LossAndGrads(CausalLM& lm, bool packed, uint64_t seed) {
  torch::manual_seed(seed);
  Tensor ids = Ids({{5, 9, 2, 7, 1, 3, 3, 8}, {4, 4, 1, 0, 6, 2, 9, 11}});
  Tensor targets = Ids({{9, 2, -100, 1, 3, 3, 8, -100}, {4, 1, 0, 6, 2, 9, 11, 12}});
  Tensor seg = packed ? Ids({{1, 1, 1, 2, 2, 2, 2, 2}, {1, 1, 1, 1, 1, 1, 1, 1}}) : Tensor();
  Tensor pos = packed ? PositionsFromSegments(seg) : Positions(ids);
  for (auto& p : lm.parameters()) p.mutable_grad() = Tensor();
  Tensor loss = lm.LossSum(lm.Hidden(ids, pos, seg), targets);
  loss.backward();
  std::vector<Tensor> grads;
  for (const auto& p : lm.parameters()) {
    if (p.requires_grad()) grads.push_back(p.grad().defined() ? p.grad().clone() : Tensor());
  }
  return {loss.detach(), grads};
}

TEST(CausalLMTest, Phi3FusedProjectionsComputeWhatSeparateOnesDo) {
  // A Phi3 model whose qkv_proj is [q; k; v] and gate_up_proj [gate; up] of a
  // Llama model's weights computes the Llama model's logits and gradients.
  auto llama = CausalLM::RandomInit(TinyLlama(), torch::kFloat32, torch::kCPU, 5);
  auto params = llama->named_parameters();
  auto weight = [&](const std::string& name, const std::vector<int64_t>& shape) {
    auto swap = [&](const std::string& from, std::vector<std::string> parts) {
      const std::string prefix = name.substr(0, name.size() - from.size());
      std::vector<Tensor> ws;
      for (const std::string& p : parts) ws.push_back(params[prefix + p].clone());
      return torch::cat(ws, 0);
    };
    Tensor w;
    if (absl::EndsWith(name, "qkv_proj.weight")) {
      w = swap("qkv_proj.weight", {"q_proj.weight", "k_proj.weight", "v_proj.weight"});
    } else if (absl::EndsWith(name, "gate_up_proj.weight")) {
      w = swap("gate_up_proj.weight", {"gate_proj.weight", "up_proj.weight"});
    } else {
      w = params[name].clone();
    }
    EXPECT_EQ(w.sizes(), c10::IntArrayRef(shape)) << name;
    return w;
  };
  auto phi3 = std::make_shared<CausalLM>(TinyPhi3(), torch::kFloat32, torch::kCPU, weight);
  std::vector<LinearSlot> slots = phi3->LinearSlots();
  ASSERT_EQ(slots.size(), 2u * 4 + 1);
  EXPECT_EQ(slots[0].name, "model.layers.0.self_attn.qkv_proj");
  EXPECT_EQ(slots[0].kind, "qkv_proj");
  EXPECT_EQ(slots[2].name, "model.layers.0.mlp.gate_up_proj");
  EXPECT_EQ(slots[3].name, "model.layers.0.mlp.down_proj");
  const auto names = phi3->named_parameters();
  EXPECT_TRUE(names.contains("model.layers.1.self_attn.qkv_proj.weight"));
  EXPECT_FALSE(names.contains("model.layers.1.self_attn.q_proj.weight"));
  for (const auto& [name, shape] : ExpectedTensors(TinyPhi3())) {
    EXPECT_TRUE(names.contains(name)) << name;
  }

  const Tensor ids = Ids({{1, 5, 9, 2, 44, 3, 7}, {8, 8, 0, 31, 12, 6, 49}});
  const Tensor seg = Ids({{1, 1, 1, 2, 2, 2, 2}, {1, 1, 1, 1, 1, 2, 2}});
  for (bool packed : {false, true}) {
    const Tensor pos = packed ? PositionsFromSegments(seg) : Positions(ids);
    const Tensor segments = packed ? seg : Tensor();
    // Gradients through the input of the first layer: make embeddings trainable.
    for (auto& lm : {llama, phi3})
      lm->named_parameters()["model.embed_tokens.weight"].requires_grad_(true);
    Tensor a = llama->LossSum(llama->Hidden(ids, pos, segments), ids);
    Tensor b = phi3->LossSum(phi3->Hidden(ids, pos, segments), ids);
    EXPECT_NEAR(a.item<double>(), b.item<double>(), 1e-5 * std::abs(a.item<double>()));
    a.backward();
    b.backward();
    Tensor ga = llama->named_parameters()["model.embed_tokens.weight"].grad();
    Tensor gb = phi3->named_parameters()["model.embed_tokens.weight"].grad();
    EXPECT_TRUE(torch::allclose(ga, gb, 1e-5, 1e-6)) << (ga - gb).abs().max();
    for (auto& lm : {llama, phi3}) {
      lm->named_parameters()["model.embed_tokens.weight"].mutable_grad().reset();
      lm->named_parameters()["model.embed_tokens.weight"].requires_grad_(false);
    }
  }
  // Gradient checkpointing through the fused layers: the same loss and the
  // same gradient of a fused weight.
  Tensor w = phi3->named_parameters()["model.layers.0.self_attn.qkv_proj.weight"];
  w.requires_grad_(true);
  std::vector<Tensor> grads;
  for (bool ck : {false, true}) {
    phi3->SetGradientCheckpointing(ck);
    phi3->LossSum(phi3->Hidden(ids, Positions(ids), Tensor()), ids).backward();
    grads.push_back(w.grad().clone());
    w.mutable_grad().reset();
  }
  EXPECT_TRUE(torch::allclose(grads[0], grads[1], 1e-5, 1e-6));
  EXPECT_GT(grads[0].abs().sum().item<double>(), 0.0);
}

TEST(CausalLMTest, Gemma3NormsAroundBothBlocksAndCheckpointing) {
  auto lm = CausalLM::RandomInit(TinyGemma3(), torch::kFloat32, torch::kCPU, 4);
  const auto names = lm->named_parameters();
  for (const char* n : {"model.layers.1.pre_feedforward_layernorm.weight",
                        "model.layers.1.post_feedforward_layernorm.weight",
                        "model.layers.0.self_attn.q_norm.weight"}) {
    EXPECT_TRUE(names.contains(n)) << n;
  }
  EXPECT_EQ(lm->LinearSlots().size(), 2u * 7 + 1);  // the same projections as Llama
  // Gradient checkpointing replays each layer with its own RoPE table and
  // window: same loss and adapter-free input gradients.
  const Tensor ids = Ids({{1, 5, 9, 2, 44, 3, 7, 30}, {8, 8, 0, 31, 12, 6, 49, 11}});
  auto run = [&](bool ck) {
    lm->SetGradientCheckpointing(ck);
    Tensor w = lm->named_parameters()["model.layers.0.input_layernorm.weight"];
    w.requires_grad_(true);
    Tensor loss = lm->LossSum(lm->Hidden(ids, Positions(ids), Tensor()), ids);
    loss.backward();
    Tensor g = w.grad().clone();
    w.mutable_grad().reset();
    w.requires_grad_(false);
    return std::pair(loss.detach(), g);
  };
  auto [l0, g0] = run(false);
  auto [l1, g1] = run(true);
  EXPECT_TRUE(torch::allclose(l0, l1, 1e-6, 1e-6));
  EXPECT_TRUE(torch::allclose(g0, g1, 1e-5, 1e-6)) << (g0 - g1).abs().max();
  EXPECT_GT(g0.abs().sum().item<double>(), 0.0);
  // Soft-capped logits stay within the cap, and the loss follows them.
  ModelConfig capped = TinyGemma3();
  capped.final_logit_softcapping = 0.5;
  auto small = CausalLM::RandomInit(capped, torch::kFloat32, torch::kCPU, 4);
  torch::NoGradGuard no_grad;
  Tensor h = small->Hidden(ids, Positions(ids), Tensor());
  Tensor logits = small->Logits(h);
  EXPECT_LE(logits.abs().max().item<double>(), 0.5);
  Tensor want = torch::nn::functional::cross_entropy(
      logits.reshape({-1, 50}), ids.reshape({-1}),
      torch::nn::functional::CrossEntropyFuncOptions().reduction(torch::kSum));
  EXPECT_NEAR(small->LossSum(h, ids).item<double>(), want.item<double>(), 1e-4);
}

TEST(CausalLMTest, LongRopeAndPartialRotary) {
  ModelConfig c = TinyPhi3();     // D = 8
  c.partial_rotary_factor = 0.5;  // 4 dimensions turn: 2 frequencies
  c.rope_scaling.type = RopeType::kLongRope;
  c.rope_scaling.short_factor = {1.0, 2.0};
  c.rope_scaling.long_factor = {3.0, 5.0};
  c.rope_scaling.original_max_position_embeddings = 6;
  c.rope_scaling.attention_factor = 1.25;
  ASSERT_TRUE(c.Validate().ok()) << c.Validate();
  Tensor s = RopeInvFreq(c);
  Tensor l = RopeInvFreq(c, /*long_factors=*/true);
  ASSERT_THAT(s.sizes(), ElementsAre(2));
  EXPECT_NEAR(s[0].item<double>(), 1.0, 1e-7);
  EXPECT_NEAR(s[1].item<double>(), 1.0 / (2.0 * std::pow(10000.0, 0.5)), 1e-9);
  EXPECT_NEAR(l[0].item<double>(), 1.0 / 3.0, 1e-7);
  EXPECT_NEAR(l[1].item<double>(), 1.0 / (5.0 * std::pow(10000.0, 0.5)), 1e-9);

  // The last 4 dimensions of each head never turn: with q and k weights
  // zero on the first 4, attention does not depend on positions at all,
  // whatever the factors. And a forward whose positions pass 6 takes the
  // long factors: the same tokens at positions 0..6 and 1..7 differ in their
  // first tokens' outputs only through that switch and the positions.
  auto lm = CausalLM::RandomInit(c, torch::kFloat32, torch::kCPU, 2);
  torch::NoGradGuard no_grad;
  const Tensor ids = Ids({{3, 1, 4, 1, 5, 9}});
  const Tensor h0 = lm->Hidden(ids, Positions(ids), Tensor());
  const Tensor h_shift = lm->Hidden(ids, Positions(ids) + 10, Tensor());  // beyond 6: long factors
  EXPECT_FALSE(torch::allclose(h0, h_shift, 1e-4, 1e-5));
  for (auto& layer : lm->model->layers) {
    Tensor w = layer->self_attn->qkv_proj->base_weight();  // (q 32 + k 16 + v 16, C)
    for (int64_t head = 0; head < 4 + 2; ++head) w.narrow(0, head * 8, 4).zero_();
  }
  const Tensor a = lm->Hidden(ids, Positions(ids), Tensor());
  const Tensor b = lm->Hidden(ids, Positions(ids) + 10, Tensor());
  EXPECT_TRUE(torch::allclose(a, b, 1e-5, 1e-6)) << (a - b).abs().max();
}

TEST(CausalLMTest, GradientCheckpointingGivesSameGradients) {
  ModelConfig c = TinyQwen2();
  c.attention_dropout = 0.2;  // dropout in training mode: the RNG must replay
  auto lm = CausalLM::RandomInit(c, torch::kFloat32, torch::kCPU, 3);
  lm->train();
  // Some base parameters trainable, plus adapters injected after construction.
  auto params = lm->named_parameters();
  params["model.embed_tokens.weight"].requires_grad_(true);
  params["model.layers.0.self_attn.q_proj.weight"].requires_grad_(true);
  params["model.layers.1.post_attention_layernorm.weight"].requires_grad_(true);
  params["model.layers.1.self_attn.k_proj.bias"].requires_grad_(true);
  torch::manual_seed(0);
  std::vector<LinearSlot> slots = lm->LinearSlots();
  std::vector<std::shared_ptr<TestAdapter>> adapters;
  for (LinearSlot& s : slots) {
    if (s.kind == "v_proj" || s.kind == "down_proj") {
      adapters.push_back(std::make_shared<TestAdapter>(*s.layer, 2, 0.3));
      s.Replace(adapters.back());
    }
  }
  for (bool packed : {false, true}) {
    lm->SetGradientCheckpointing(false);
    auto [loss_ref, grads_ref] = LossAndGrads(*lm, packed, 42);
    EXPECT_EQ(adapters[0]->forward_calls, 1);
    adapters[0]->forward_calls = 0;
    lm->SetGradientCheckpointing(true);
    auto [loss_ck, grads_ck] = LossAndGrads(*lm, packed, 42);
    EXPECT_EQ(adapters[0]->forward_calls, 2);  // forward + recompute in backward
    adapters[0]->forward_calls = 0;
    EXPECT_TRUE(torch::allclose(loss_ref, loss_ck, 1e-6, 1e-6)) << loss_ref << " vs " << loss_ck;
    ASSERT_EQ(grads_ref.size(), grads_ck.size());
    ASSERT_EQ(grads_ref.size(), 4u + 2 * 2 * 2);
    for (size_t i = 0; i < grads_ref.size(); ++i) {
      ASSERT_TRUE(grads_ref[i].defined() && grads_ck[i].defined()) << i;
      EXPECT_GT(grads_ref[i].abs().sum().item<double>(), 0.0) << i;
      EXPECT_TRUE(torch::allclose(grads_ref[i], grads_ck[i], 1e-5, 1e-6))
          << "param " << i << " packed=" << packed << " max diff "
          << (grads_ref[i] - grads_ck[i]).abs().max().item<double>();
    }
    // A different seed draws other dropout masks: the comparison is not vacuous.
    auto [loss_other, grads_other] = LossAndGrads(*lm, packed, 43);
    EXPECT_FALSE(torch::allclose(loss_ref, loss_other, 1e-6, 1e-6));
    adapters[0]->forward_calls = 0;
  }

  // Frozen embeddings: the first layer's input needs no gradient, only its
  // parameters do.
  params["model.embed_tokens.weight"].requires_grad_(false);
  lm->SetGradientCheckpointing(false);
  auto [loss_ref, grads_ref] = LossAndGrads(*lm, true, 44);
  lm->SetGradientCheckpointing(true);
  auto [loss_ck, grads_ck] = LossAndGrads(*lm, true, 44);
  ASSERT_EQ(grads_ref.size(), 3u + 2 * 2 * 2);
  for (size_t i = 0; i < grads_ref.size(); ++i) {
    ASSERT_TRUE(grads_ref[i].defined() && grads_ck[i].defined()) << i;
    EXPECT_TRUE(torch::allclose(grads_ref[i], grads_ck[i], 1e-5, 1e-6)) << "param " << i;
  }
}

TEST(CausalLMTest, GradientCheckpointingOffUnderNoGrad) {
  auto lm = CausalLM::RandomInit(TinyLlama(), torch::kFloat32, torch::kCPU, 3);
  lm->SetGradientCheckpointing(true);
  lm->named_parameters()["model.layers.0.self_attn.q_proj.weight"].requires_grad_(true);
  Tensor ids = Ids({{1, 2, 3}});
  Tensor with_grad = lm->Hidden(ids, Positions(ids), Tensor());
  EXPECT_TRUE(with_grad.requires_grad());
  torch::NoGradGuard g;
  Tensor h = lm->Hidden(ids, Positions(ids), Tensor());
  EXPECT_FALSE(h.requires_grad());
  EXPECT_TRUE(torch::allclose(h, with_grad.detach(), 1e-6, 1e-6));
}

TEST(CausalLMTest, LossSumIsSummedCrossEntropyOverUnignoredTargets) {
  auto lm = CausalLM::RandomInit(TinyLlama(), torch::kFloat32, torch::kCPU, 5);
  torch::NoGradGuard g;
  Tensor ids = Ids({{1, 2, 3, 4}, {5, 6, 7, 8}});
  Tensor targets = Ids({{2, 3, 4, -100}, {6, -100, 8, 9}});
  Tensor h = lm->Hidden(ids, Positions(ids), Tensor());
  Tensor loss = lm->LossSum(h, targets);
  EXPECT_EQ(loss.dim(), 0);
  EXPECT_EQ(loss.scalar_type(), torch::kFloat32);
  Tensor logits = lm->Logits(h);  // (2, 4, V)
  EXPECT_THAT(logits.sizes(), ElementsAre(2, 4, 50));
  Tensor expected = torch::nn::functional::cross_entropy(
      logits.reshape({-1, 50}), targets.reshape({-1}),
      torch::nn::functional::CrossEntropyFuncOptions().ignore_index(-100).reduction(torch::kSum));
  EXPECT_NEAR(loss.item<double>(), expected.item<double>(), 1e-4);

  // An adapted lm_head goes through Logits: same value with a zero adapter.
  LinearSlot head = lm->LinearSlots().back();
  auto adapter = std::make_shared<TestAdapter>(*head.layer, 2, 0.0);
  for (auto& p : adapter->parameters(false)) p.zero_();
  head.Replace(adapter);
  EXPECT_NEAR(lm->LossSum(h, targets).item<double>(), expected.item<double>(), 1e-4);
}

TEST(CausalLMTest, HiddenRejectsBadInputs) {
  auto lm = CausalLM::RandomInit(TinyLlama(), torch::kFloat32, torch::kCPU, 5);
  torch::NoGradGuard g;
  Tensor ids = Ids({{1, 2, 50}});
  try {
    lm->Hidden(ids, Positions(ids), Tensor());
    FAIL() << "out-of-range id accepted";
  } catch (const c10::IndexError& e) {
    EXPECT_THAT(e.what(), HasSubstr("token ids must be in [0, 50)"));
  }
  EXPECT_THROW(
      lm->Hidden(torch::ones({3}, torch::kInt64), torch::zeros({3}, torch::kInt64), Tensor()),
      c10::Error);
  Tensor ok = Ids({{1, 2}});
  EXPECT_THROW(lm->Hidden(ok, Positions(ok).to(torch::kInt32), Tensor()), c10::Error);
  EXPECT_THROW(lm->Hidden(ok, Positions(ok), torch::ones({1, 3}, torch::kInt64)), c10::Error);
  EXPECT_THROW(lm->Hidden(ok.to(torch::kFloat32), Positions(ok), Tensor()), c10::Error);
}

TEST(CausalLMTest, RopeInvFreqScaling) {
  ModelConfig c = TinyLlama();  // D = 8
  c.rope_theta = 10000.0;
  Tensor base = RopeInvFreq(c);
  ASSERT_THAT(base.sizes(), ElementsAre(4));
  for (int i = 0; i < 4; ++i) {
    EXPECT_NEAR(base[i].item<double>(), std::pow(10000.0, -2.0 * i / 8), 1e-7);
  }
  c.rope_scaling.type = RopeType::kLinear;
  c.rope_scaling.factor = 4.0;
  EXPECT_TRUE(torch::allclose(RopeInvFreq(c), base / 4.0));

  // llama3: wavelengths 2π/inv_freq = 6.3, 62.8, 628, 6283. With an original
  // context of 1024, low/high factors 1/4: wavelen < 256 unchanged, > 1024
  // divided by the factor, between: smoothed.
  c.rope_scaling.type = RopeType::kLlama3;
  c.rope_scaling.factor = 8.0;
  c.rope_scaling.low_freq_factor = 1.0;
  c.rope_scaling.high_freq_factor = 4.0;
  c.rope_scaling.original_max_position_embeddings = 1024;
  Tensor l3 = RopeInvFreq(c);
  EXPECT_FLOAT_EQ(l3[0].item<float>(), base[0].item<float>());
  EXPECT_FLOAT_EQ(l3[1].item<float>(), base[1].item<float>());
  EXPECT_FLOAT_EQ(l3[3].item<float>(), base[3].item<float>() / 8.0f);
  const double wavelen = 2 * M_PI / base[2].item<double>();
  const double smooth = (1024.0 / wavelen - 1.0) / (4.0 - 1.0);
  const double expected =
      (1 - smooth) * base[2].item<double>() / 8.0 + smooth * base[2].item<double>();
  EXPECT_NEAR(l3[2].item<double>(), expected, 1e-6 * expected);
}

TEST(CausalLMTest, Bfloat16ForwardKeepsDtypeAndTracksFloat32) {
  auto f32 = CausalLM::RandomInit(TinyLlama(), torch::kFloat32, torch::kCPU, 9);
  auto bf16 = CausalLM::RandomInit(TinyLlama(), torch::kBFloat16, torch::kCPU, 9);
  torch::NoGradGuard g;
  Tensor ids = Ids({{1, 2, 3, 4, 5}});
  Tensor h32 = f32->Hidden(ids, Positions(ids), Tensor());
  Tensor h16 = bf16->Hidden(ids, Positions(ids), Tensor());
  EXPECT_EQ(h16.scalar_type(), torch::kBFloat16);
  EXPECT_EQ(bf16->Logits(h16).scalar_type(), torch::kFloat32);
  EXPECT_LT((h16.to(torch::kFloat32) - h32).abs().max().item<double>(), 0.1);
}

// ---- Loading ----

class FromPretrainedTest : public ::testing::Test {
 protected:
  void SetUp() override {
    env_ = NewMemEnv();
    ASSERT_TRUE(env_->CreateDirs("/m").ok());
  }

  // Writes `lm`'s config and weights (HF names) to dir, optionally editing
  // the tensor list first.
  void Save(CausalLM& lm, const std::string& dir,
            std::vector<std::pair<std::string, Tensor>>* tensors_out = nullptr) {
    std::vector<std::pair<std::string, Tensor>> tensors;
    for (const auto& [name, shape] : ExpectedTensors(lm.config())) {
      tensors.emplace_back(name, lm.named_parameters()[name].detach());
    }
    if (tensors_out != nullptr) {
      *tensors_out = tensors;
      return;
    }
    Write(lm.config(), dir, tensors, 1 << 20);
  }

  void Write(const ModelConfig& c, const std::string& dir,
             const std::vector<std::pair<std::string, Tensor>>& tensors, int64_t shard_bytes) {
    ASSERT_TRUE(env_->CreateDirs(dir).ok());
    ASSERT_TRUE(env_->WriteFileAtomic(dir + "/config.json", c.ToJson()).ok());
    const absl::Status s = io::WriteModelDirTensors(dir, tensors, shard_bytes, env_.get());
    ASSERT_TRUE(s.ok()) << s;
  }

  absl::StatusOr<std::shared_ptr<CausalLM>> Load(const std::string& dir,
                                                 torch::Dtype dtype = torch::kFloat32) {
    return CausalLM::FromPretrained(dir, dtype, torch::kCPU, env_.get());
  }

  // What each of n ranks (threads) computes with `dir` loaded as `options`
  // sharded over them, each on its own batch (rank r the rows of ids and
  // targets rolled by r; its outputs rolled back).
  struct RankOutputs {
    std::vector<Tensor> logits, loss, hidden, token_losses;
    std::vector<int64_t> base_bytes;
    std::vector<std::string> errors;
  };
  RankOutputs RunSharded(const std::string& dir, const LoadOptions& options,
                         const std::shared_ptr<ThreadShardGroup::Shared>& shared, const Tensor& ids,
                         const Tensor& targets) {
    const int n = static_cast<int>(shared->slots.size());
    RankOutputs out;
    out.logits.resize(n);
    out.loss.resize(n);
    out.hidden.resize(n);
    out.token_losses.resize(n);
    out.base_bytes.resize(n);
    out.errors.resize(n);
    RunRanks(n, shared, [&](int r, std::shared_ptr<ThreadShardGroup> group) {
      LoadOptions o = options;
      o.shard_group = std::move(group);
      auto got = CausalLM::FromPretrained(dir, o);
      if (!got.ok()) {
        out.errors[r] = got.status().ToString();
        return;
      }
      torch::NoGradGuard g;
      Tensor mine = ids.roll(r, 0), mine_t = targets.roll(r, 0);
      Tensor h = (*got)->Hidden(mine, Positions(mine), Tensor());
      out.logits[r] = (*got)->Logits(h).roll(-r, 0);
      out.loss[r] = (*got)->LossSum(h, mine_t);
      out.base_bytes[r] = (*got)->BaseBytes();
      out.hidden[r] = h.roll(-r, 0);
      out.token_losses[r] = (*got)->TokenLosses(h, mine_t).view(mine_t.sizes()).roll(-r, 0);
    });
    return out;
  }

  std::unique_ptr<Env> env_;
};

TEST_F(FromPretrainedTest, RoundTripsSingleAndSharded) {
  ModelConfig c = TinyQwen2();
  c.tie_word_embeddings = true;
  auto lm = CausalLM::RandomInit(c, torch::kFloat32, torch::kCPU, 11);
  std::vector<std::pair<std::string, Tensor>> tensors;
  Save(*lm, "", &tensors);
  Write(c, "/m/single", tensors, 1 << 20);
  Write(c, "/m/sharded", tensors, 8 << 10);
  Tensor ids = Ids({{3, 1, 4, 1, 5}});
  torch::NoGradGuard g;
  Tensor want = lm->Logits(lm->Hidden(ids, Positions(ids), Tensor()));
  for (const char* dir : {"/m/single", "/m/sharded"}) {
    absl::StatusOr<std::shared_ptr<CausalLM>> got = Load(dir);
    ASSERT_TRUE(got.ok()) << got.status();
    EXPECT_TRUE((*got)->config().tie_word_embeddings);
    EXPECT_EQ((*got)->lm_head->base_weight().data_ptr(),
              (*got)->named_parameters()["model.embed_tokens.weight"].data_ptr());
    for (const auto& p : (*got)->named_parameters()) EXPECT_FALSE(p.value().requires_grad());
    Tensor logits = (*got)->Logits((*got)->Hidden(ids, Positions(ids), Tensor()));
    EXPECT_TRUE(torch::equal(logits, want)) << dir;
  }
  absl::StatusOr<std::vector<std::string>> files = env_->ListDir("/m/sharded");
  ASSERT_TRUE(files.ok());
  EXPECT_THAT(*files, ::testing::Contains("model.safetensors.index.json"));

  // Converting on load: bf16.
  absl::StatusOr<std::shared_ptr<CausalLM>> bf = Load("/m/single", torch::kBFloat16);
  ASSERT_TRUE(bf.ok()) << bf.status();
  EXPECT_EQ((*bf)->named_parameters()["model.norm.weight"].scalar_type(), torch::kBFloat16);
}

TEST_F(FromPretrainedTest, IgnoresRotaryBuffersAndTiedHeadCopy) {
  ModelConfig c = TinyLlama();
  c.tie_word_embeddings = true;
  auto lm = CausalLM::RandomInit(c, torch::kFloat32, torch::kCPU, 11);
  std::vector<std::pair<std::string, Tensor>> tensors;
  Save(*lm, "", &tensors);
  tensors.emplace_back("model.layers.0.self_attn.rotary_emb.inv_freq", torch::ones({4}));
  tensors.emplace_back("lm_head.weight", tensors[0].second.clone());
  Write(c, "/m/extra", tensors, 1 << 20);
  absl::StatusOr<std::shared_ptr<CausalLM>> got = Load("/m/extra");
  ASSERT_TRUE(got.ok()) << got.status();
}

TEST_F(FromPretrainedTest, MissingTensorIsNotFoundNamingIt) {
  auto lm = CausalLM::RandomInit(TinyLlama(), torch::kFloat32, torch::kCPU, 11);
  std::vector<std::pair<std::string, Tensor>> tensors;
  Save(*lm, "", &tensors);
  std::vector<std::pair<std::string, Tensor>> kept;
  for (auto& t : tensors) {
    if (t.first != "model.layers.1.mlp.up_proj.weight" && t.first != "lm_head.weight")
      kept.push_back(t);
  }
  Write(lm->config(), "/m/missing", kept, 1 << 20);
  absl::StatusOr<std::shared_ptr<CausalLM>> got = Load("/m/missing");
  EXPECT_EQ(got.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(got.status().message(), HasSubstr("/m/missing"));
  EXPECT_THAT(got.status().message(),
              HasSubstr("lacks 2 tensor(s) the config requires: model.layers.1.mlp.up_proj.weight, "
                        "lm_head.weight"));
}

TEST_F(FromPretrainedTest, WrongShapeIsInvalidArgumentWithBothShapes) {
  auto lm = CausalLM::RandomInit(TinyLlama(), torch::kFloat32, torch::kCPU, 11);
  std::vector<std::pair<std::string, Tensor>> tensors;
  Save(*lm, "", &tensors);
  for (auto& t : tensors) {
    if (t.first == "model.layers.0.self_attn.k_proj.weight") t.second = torch::zeros({32, 32});
  }
  Write(lm->config(), "/m/shape", tensors, 1 << 20);
  absl::StatusOr<std::shared_ptr<CausalLM>> got = Load("/m/shape");
  EXPECT_EQ(got.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(got.status().message(),
              HasSubstr("tensor 'model.layers.0.self_attn.k_proj.weight' has shape [32, 32], "
                        "expected [16, 32]"));
}

TEST_F(FromPretrainedTest, UnexpectedTensorIsRefused) {
  auto lm = CausalLM::RandomInit(TinyLlama(), torch::kFloat32, torch::kCPU, 11);
  std::vector<std::pair<std::string, Tensor>> tensors;
  Save(*lm, "", &tensors);
  tensors.emplace_back("model.layers.0.self_attn.q_proj.bias", torch::zeros({32}));
  Write(lm->config(), "/m/extra", tensors, 1 << 20);
  absl::StatusOr<std::shared_ptr<CausalLM>> got = Load("/m/extra");
  EXPECT_EQ(got.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(got.status().message(),
              HasSubstr("does not use: model.layers.0.self_attn.q_proj.bias"));
}

TEST_F(FromPretrainedTest, IntegerTensorIsRefused) {
  auto lm = CausalLM::RandomInit(TinyLlama(), torch::kFloat32, torch::kCPU, 11);
  std::vector<std::pair<std::string, Tensor>> tensors;
  Save(*lm, "", &tensors);
  tensors[0].second = tensors[0].second.to(torch::kInt32);
  Write(lm->config(), "/m/int", tensors, 1 << 20);
  absl::StatusOr<std::shared_ptr<CausalLM>> got = Load("/m/int");
  EXPECT_EQ(got.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(got.status().message(), HasSubstr("'model.embed_tokens.weight' has dtype I32"));
}

TEST_F(FromPretrainedTest, ConfigAndCheckpointErrorsPassThrough) {
  absl::StatusOr<std::shared_ptr<CausalLM>> got = Load("/m/none");
  EXPECT_EQ(got.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(got.status().message(), HasSubstr("/m/none/config.json"));

  ASSERT_TRUE(env_->CreateDirs("/m/mixtral").ok());
  ASSERT_TRUE(env_->WriteFileAtomic("/m/mixtral/config.json",
                                    R"({"architectures": ["MixtralForCausalLM"], "vocab_size": 8})")
                  .ok());
  got = Load("/m/mixtral");
  EXPECT_EQ(got.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(got.status().message(), HasSubstr("'MixtralForCausalLM' is not supported"));

  ModelConfig c = TinyLlama();
  ASSERT_TRUE(env_->CreateDirs("/m/noweights").ok());
  ASSERT_TRUE(env_->WriteFileAtomic("/m/noweights/config.json", c.ToJson()).ok());
  got = Load("/m/noweights");
  EXPECT_EQ(got.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(got.status().message(), HasSubstr("/m/noweights"));

  got = CausalLM::FromPretrained("/m/noweights", torch::kInt64, torch::kCPU, env_.get());
  EXPECT_EQ(got.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(got.status().message(), HasSubstr("model dtype"));
}

TEST_F(FromPretrainedTest, AShardedBaseComputesWhatTheWholeBaseDoes) {
  for (bool tied : {true, false}) {
    ModelConfig c = TinyQwen2();  // biases on q, k, v
    c.tie_word_embeddings = tied;
    auto lm = CausalLM::RandomInit(c, torch::kFloat32, torch::kCPU, 5);
    Save(*lm, "/m/whole");
    Tensor ids = Ids({{3, 1, 4, 1, 5}, {9, 2, 6, 5, 3}});
    Tensor targets = Ids({{1, 4, 1, 5, 9}, {2, 6, 5, 3, 5}});
    Tensor want_logits, want_loss, want_hidden, want_token_losses;
    {
      torch::NoGradGuard g;
      Tensor h = lm->Hidden(ids, Positions(ids), Tensor());
      want_hidden = h;
      want_logits = lm->Logits(h);
      want_loss = lm->LossSum(h, targets);
      want_token_losses = lm->TokenLosses(h, targets).view(targets.sizes());
      EXPECT_NEAR(want_token_losses.sum().item<double>(), want_loss.item<double>(), 1e-4);
    }
    for (int n : {2, 3}) {
      auto shared = std::make_shared<ThreadShardGroup::Shared>(n);
      LoadOptions o;
      o.env = env_.get();
      // Data parallel: each rank its own batch.
      const RankOutputs got = RunSharded("/m/whole", o, shared, ids, targets);
      const auto& logits = got.logits;
      const auto& loss = got.loss;
      const auto& hidden = got.hidden;
      const std::vector<int64_t>& bytes = got.base_bytes;
      for (int r = 0; r < n; ++r) {
        ASSERT_TRUE(got.errors[r].empty()) << got.errors[r];
        EXPECT_TRUE(torch::allclose(logits[r], want_logits, 1e-5, 1e-6))
            << "tied " << tied << " ranks " << n << " rank " << r << ": "
            << (logits[r] - want_logits).abs().max().item<float>();
        EXPECT_NEAR(loss[r].item<double>(), want_loss.item<double>(), 1e-4);
        EXPECT_LT(bytes[r], lm->BaseBytes() / n + lm->BaseBytes() / 10);
        EXPECT_TRUE(torch::allclose(hidden[r], want_hidden, 1e-5, 1e-6)) << r;
        EXPECT_TRUE(torch::allclose(got.token_losses[r], want_token_losses, 1e-5, 1e-5)) << r;
      }
      // No rank ever held the embeddings or lm_head whole: the largest
      // gather is a decoder layer's weight (intermediate 40 < vocab 50) or
      // a piece of the vocab.
      EXPECT_LT(shared->most_rows.load(), c.vocab_size) << "tied " << tied << " ranks " << n;
    }
  }
}

// A base both sharded and in NF4: every linear weight's rows end on a
// block of 64, so without double quantization each rank's rows quantized on
// their own are the whole weight's NF4 rows, and the sharded model computes
// what the whole NF4 model does. Each rank holds about 1/N of it, and a
// layer's gather carries 4-bit rows, not fp32 ones.
TEST_F(FromPretrainedTest, AShardedNf4BaseComputesWhatTheWholeNf4BaseDoes) {
  ModelConfig c = TinyLlama();
  c.hidden_size = 64;
  c.intermediate_size = 128;
  c.head_dim = 16;  // q: 64 rows, k and v: 32
  auto lm = CausalLM::RandomInit(c, torch::kFloat32, torch::kCPU, 8);
  Save(*lm, "/m/whole");
  LoadOptions whole_options;
  whole_options.env = env_.get();
  whole_options.quantization = "nf4";
  whole_options.double_quant = false;
  absl::StatusOr<std::shared_ptr<CausalLM>> whole =
      CausalLM::FromPretrained("/m/whole", whole_options);
  ASSERT_TRUE(whole.ok()) << whole.status();
  Tensor ids = Ids({{3, 1, 4, 1, 5}, {9, 2, 6, 5, 3}});
  Tensor targets = Ids({{1, 4, 1, 5, 9}, {2, 6, 5, 3, 5}});
  Tensor want_logits, want_loss;
  {
    torch::NoGradGuard g;
    Tensor h = (*whole)->Hidden(ids, Positions(ids), Tensor());
    want_logits = (*whole)->Logits(h);
    want_loss = (*whole)->LossSum(h, targets);
  }
  ASSERT_FALSE(torch::allclose(want_logits, [&] {
    torch::NoGradGuard g;
    return lm->Logits(lm->Hidden(ids, Positions(ids), Tensor()));
  }()));  // 4 bits do change the logits
  const int n = 2;
  auto shared = std::make_shared<ThreadShardGroup::Shared>(n);
  const RankOutputs got = RunSharded("/m/whole", whole_options, shared, ids, targets);
  const auto& logits = got.logits;
  const auto& loss = got.loss;
  const std::vector<int64_t>& bytes = got.base_bytes;
  for (int r = 0; r < n; ++r) {
    ASSERT_TRUE(got.errors[r].empty()) << got.errors[r];
    EXPECT_TRUE(torch::allclose(logits[r], want_logits, 1e-5, 1e-6))
        << r << ": " << (logits[r] - want_logits).abs().max().item<float>();
    EXPECT_NEAR(loss[r].item<double>(), want_loss.item<double>(), 1e-4);
    EXPECT_LT(bytes[r], (*whole)->BaseBytes() / n + (*whole)->BaseBytes() / 10) << r;
  }
  // The largest gather: the MLP's 4-bit rows (128 x 64 weights at 0.5625
  // bytes), not the 128 rows of an fp32 weight.
  EXPECT_EQ(shared->most_rows.load(), 128 * 64 * 9 / 16);
}

// A checkpoint stored in 4 bits is sharded by slicing its rows as stored,
// so each row must end on a block of 64: TinyLlama's rows of 32 do not. The
// sharded load is refused, naming the tensor; whole, it loads.
TEST_F(FromPretrainedTest, AStored4BitBaseWhoseRowsEndMidBlockIsNotSharded) {
  const ModelConfig c = TinyLlama();
  auto lm = CausalLM::RandomInit(c, torch::kFloat32, torch::kCPU, 9);
  std::vector<std::pair<std::string, Tensor>> tensors, stored;
  Save(*lm, "", &tensors);
  for (const auto& [name, t] : tensors) {
    if (!absl::StartsWith(name, "model.layers.") || !absl::EndsWith(name, "_proj.weight")) {
      stored.emplace_back(name, t);
      continue;
    }
    for (const auto& [suffix, part] : quant::ToBitsandbytes(quant::QuantizeNf4(t, true))) {
      stored.emplace_back(name + suffix, part);
    }
  }
  std::string config = c.ToJson();
  config = config.substr(0, config.rfind('}')) +
           R"(, "quantization_config": {"quant_method": "bitsandbytes", "load_in_4bit": true,
              "bnb_4bit_quant_type": "nf4"}})";
  ASSERT_TRUE(env_->CreateDirs("/m/bnb").ok());
  ASSERT_TRUE(env_->WriteFileAtomic("/m/bnb/config.json", config).ok());
  ASSERT_TRUE(io::WriteModelDirTensors("/m/bnb", stored, 1 << 20, env_.get()).ok());
  LoadOptions o;
  o.env = env_.get();
  absl::StatusOr<std::shared_ptr<CausalLM>> whole = CausalLM::FromPretrained("/m/bnb", o);
  ASSERT_TRUE(whole.ok()) << whole.status();
  EXPECT_EQ((*whole)->quantization(), "nf4");
  // Rank 0 of 2 (the refusal comes while reading, before any gather).
  o.shard_group =
      std::make_shared<ThreadShardGroup>(std::make_shared<ThreadShardGroup::Shared>(2), 0);
  absl::StatusOr<std::shared_ptr<CausalLM>> sharded = CausalLM::FromPretrained("/m/bnb", o);
  EXPECT_EQ(sharded.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(sharded.status().message(),
              HasSubstr("/m/bnb: 4-bit tensor 'model.layers.0.self_attn.q_proj.weight' cannot be "
                        "sharded across the ranks: its rows of 32 weights do not end on a block "
                        "of 64 (leave shard_base out)"));
}

}  // namespace
}  // namespace fjord::model

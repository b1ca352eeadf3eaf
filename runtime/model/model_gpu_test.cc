// CausalLM on a CUDA device, with the fused kernels when their self-test
// passes: CUDA against CPU (fp32 and bf16), packed rows against separate runs
// (the masked SDPA path), gradient checkpointing with dropout (CUDA RNG
// replay), and the fused loss. Skipped, with the reason, without a CUDA
// device. The last test prints a forward+backward timing at a ~1B-parameter
// shape (no assertion on speed).
//
// Tolerances (max |a - b| over the tensor): CUDA fp32 vs CPU fp32 logits
// 2e-3 (TF32 is off by default in LibTorch; the fused kernels sum in another
// order); bf16 CUDA vs fp32 CPU logits 0.25 at |logits| ~ 1-5; packed vs
// separate bf16 hidden 0.06 (different SDPA kernels round differently);
// checkpointed vs plain grads fp32 1e-4 (recompute is the same arithmetic,
// but cuDNN/mem-efficient backward kernels may accumulate in another order).
//
// Shape legend: B batch, T tokens, C hidden, V vocab.
#include <torch/cuda.h>
#include <torch/nn/functional/loss.h>
#include <torch/types.h>
#include <torch/utils.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "runtime/kernels/ops.h"
#include "runtime/kernels/self_test.h"
#include "runtime/model/head_loss.h"
#include "runtime/model/model.h"
#include "runtime/model/thread_shard_group.h"
#include "runtime/quant/nf4.h"
#include "runtime/quant/nf4_linear.h"

namespace fjord::model {
namespace {

using torch::Tensor;

ModelConfig SmallConfig(ModelFamily family) {
  ModelConfig c;
  c.family = family;
  c.architecture = family == ModelFamily::kLlama    ? "LlamaForCausalLM"
                   : family == ModelFamily::kQwen2  ? "Qwen2ForCausalLM"
                   : family == ModelFamily::kPhi3   ? "Phi3ForCausalLM"
                   : family == ModelFamily::kGemma3 ? "Gemma3ForCausalLM"
                                                    : "Qwen3ForCausalLM";
  c.model_type = family == ModelFamily::kLlama    ? "llama"
                 : family == ModelFamily::kQwen2  ? "qwen2"
                 : family == ModelFamily::kPhi3   ? "phi3"
                 : family == ModelFamily::kGemma3 ? "gemma3_text"
                                                  : "qwen3";
  // Phi3: fused qkv_proj / gate_up_proj (the SwiGLU kernel on views of one
  // product), partial rotary (the RoPE kernel on the first 24 of 32).
  c.fused_projections = family == ModelFamily::kPhi3;
  c.qkv_bias = family == ModelFamily::kQwen2;
  c.qk_norm = family == ModelFamily::kQwen3 || family == ModelFamily::kGemma3;  // over each head
  if (family == ModelFamily::kGemma3) {  // local (window 64 over rows of 200) and global layers
    c.gemma_norms = c.gelu_mlp = true;
    c.embedding_scale = 16.0;
    c.query_pre_attn_scalar = 48;
    c.local_rope_theta = 10000;
    c.sliding_window = 64;
    c.sliding_layers = {true, false, true};
  }
  c.vocab_size = 1000;
  c.hidden_size = 256;
  c.intermediate_size = 512;
  c.num_hidden_layers = 3;
  c.num_attention_heads = 8;
  c.num_key_value_heads = 2;
  c.head_dim = 32;
  c.rope_scaling.type = RopeType::kLlama3;
  c.rope_scaling.factor = 8.0;
  c.rope_scaling.low_freq_factor = 1.0;
  c.rope_scaling.high_freq_factor = 4.0;
  c.rope_scaling.original_max_position_embeddings = 64;
  if (family == ModelFamily::kPhi3) {  // LongRoPE; rows of 200 take the long factors
    c.partial_rotary_factor = 0.75;
    c.rope_scaling = {};
    c.rope_scaling.type = RopeType::kLongRope;
    c.rope_scaling.original_max_position_embeddings = 64;
    c.rope_scaling.attention_factor = 1.2;
    for (int i = 0; i < 12; ++i) {
      c.rope_scaling.short_factor.push_back(1.0 + 0.1 * i);
      c.rope_scaling.long_factor.push_back(1.0 + i);
    }
  }
  return c;
}

class ModelGpuTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    if (!torch::cuda::is_available()) return;
    std::string report;
    const absl::Status s = kernels::RunKernelSelfTest(&report);
    std::printf("kernel self-test: %s\n%s", s.ToString().c_str(), report.c_str());
  }
  void SetUp() override {
    if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device";
  }
};

Tensor RandomIds(int64_t b, int64_t t, int64_t vocab, uint64_t seed) {
  torch::manual_seed(seed);
  return torch::randint(vocab, {b, t}, torch::kInt64);
}

Tensor Positions(const Tensor& ids) {
  return torch::arange(ids.size(1), torch::kInt64).unsqueeze(0).expand_as(ids).contiguous();
}

TEST_F(ModelGpuTest, CudaMatchesCpu) {
  for (ModelFamily f : {ModelFamily::kLlama, ModelFamily::kQwen2, ModelFamily::kQwen3,
                        ModelFamily::kPhi3, ModelFamily::kGemma3}) {
    const ModelConfig c = SmallConfig(f);
    auto cpu = CausalLM::RandomInit(c, torch::kFloat32, torch::kCPU, 1);
    auto gpu = CausalLM::RandomInit(c, torch::kFloat32, torch::kCUDA, 1);
    auto gpu16 = CausalLM::RandomInit(c, torch::kBFloat16, torch::kCUDA, 1);
    torch::NoGradGuard g;
    Tensor ids = RandomIds(2, 200, c.vocab_size, 2);
    Tensor want = cpu->Logits(cpu->Hidden(ids, Positions(ids), Tensor()));
    Tensor got = gpu->Logits(gpu->Hidden(ids.cuda(), Positions(ids).cuda(), Tensor())).cpu();
    Tensor got16 = gpu16->Logits(gpu16->Hidden(ids.cuda(), Positions(ids).cuda(), Tensor())).cpu();
    const double d32 = (got - want).abs().max().item<double>();
    const double d16 = (got16 - want).abs().max().item<double>();
    std::printf("family %d: max|logit| %.3f, fp32 cuda-cpu %.2e, bf16 cuda-cpu(fp32) %.2e\n",
                static_cast<int>(f), want.abs().max().item<double>(), d32, d16);
    EXPECT_LE(d32, 2e-3);
    EXPECT_LE(d16, 0.25);
  }
}

TEST_F(ModelGpuTest, PackedMatchesSeparateOnCuda) {
  for (torch::Dtype dtype : {torch::kFloat32, torch::kBFloat16}) {
    const ModelConfig c = SmallConfig(ModelFamily::kLlama);
    auto lm = CausalLM::RandomInit(c, dtype, torch::kCUDA, 3);
    lm->eval();
    torch::NoGradGuard g;
    Tensor a = RandomIds(1, 70, c.vocab_size, 4).cuda();
    Tensor b = RandomIds(1, 50, c.vocab_size, 5).cuda();
    Tensor ha = lm->Hidden(a, Positions(a).cuda(), Tensor()).to(torch::kFloat32);
    Tensor hb = lm->Hidden(b, Positions(b).cuda(), Tensor()).to(torch::kFloat32);
    Tensor packed = torch::cat({a, b, torch::zeros({1, 8}, a.options())}, 1);  // (1, 128)
    Tensor seg =
        torch::cat({torch::full({1, 70}, 1, torch::kInt32), torch::full({1, 50}, 2, torch::kInt32),
                    torch::zeros({1, 8}, torch::kInt32)},
                   1)
            .cuda();
    Tensor h = lm->Hidden(packed, PositionsFromSegments(seg), seg).to(torch::kFloat32);
    const double da = (h.narrow(1, 0, 70) - ha).abs().max().item<double>();
    const double db = (h.narrow(1, 70, 50) - hb).abs().max().item<double>();
    std::printf("%s packed vs separate: %.2e %.2e (max|h| %.2f)\n", c10::toString(dtype), da, db,
                ha.abs().max().item<double>());
    const double tol =
        dtype == torch::kFloat32 ? 1e-4 : 0.06 * std::max(1.0, ha.abs().max().item<double>());
    EXPECT_LE(da, tol);
    EXPECT_LE(db, tol);
    EXPECT_TRUE(torch::isfinite(h).all().item<bool>());
  }
}

std::vector<Tensor> Grads(CausalLM& lm, const Tensor& ids, const Tensor& targets, const Tensor& seg,
                          uint64_t seed, Tensor* loss_out) {
  torch::manual_seed(seed);  // seeds the CUDA generators too
  for (auto& p : lm.parameters()) p.mutable_grad() = Tensor();
  Tensor pos = seg.defined() ? PositionsFromSegments(seg) : Positions(ids).cuda();
  Tensor loss = lm.LossSum(lm.Hidden(ids, pos, seg), targets);
  loss.backward();
  *loss_out = loss.detach().cpu();
  std::vector<Tensor> out;
  for (const auto& p : lm.parameters()) {
    if (p.requires_grad()) out.push_back(p.grad().cpu());
  }
  return out;
}

TEST_F(ModelGpuTest, CheckpointingReplaysCudaDropout) {
  ModelConfig c = SmallConfig(ModelFamily::kQwen2);
  c.attention_dropout = 0.2;
  auto lm = CausalLM::RandomInit(c, torch::kFloat32, torch::kCUDA, 6);
  lm->train();
  auto params = lm->named_parameters();
  for (const char* n :
       {"model.embed_tokens.weight", "model.layers.0.self_attn.q_proj.weight",
        "model.layers.2.mlp.down_proj.weight", "model.layers.1.input_layernorm.weight",
        "model.layers.1.self_attn.v_proj.bias"}) {
    params[n].requires_grad_(true);
  }
  Tensor ids = RandomIds(2, 96, c.vocab_size, 7).cuda();
  Tensor targets = torch::roll(ids, -1, 1);
  targets.select(1, 95).fill_(-100);
  for (bool packed : {false, true}) {
    Tensor seg;
    if (packed) {
      seg = torch::cat(
                {torch::ones({2, 40}, torch::kInt64), torch::full({2, 56}, 2, torch::kInt64)}, 1)
                .cuda();
    }
    Tensor l_ref, l_ck, l_other;
    lm->SetGradientCheckpointing(false);
    std::vector<Tensor> ref = Grads(*lm, ids, targets, seg, 11, &l_ref);
    lm->SetGradientCheckpointing(true);
    std::vector<Tensor> ck = Grads(*lm, ids, targets, seg, 11, &l_ck);
    Grads(*lm, ids, targets, seg, 12, &l_other);
    EXPECT_NEAR(l_ref.item<double>(), l_ck.item<double>(), 1e-4 * std::abs(l_ref.item<double>()));
    EXPECT_GT(std::abs(l_ref.item<double>() - l_other.item<double>()), 1e-3);  // dropout is live
    ASSERT_EQ(ref.size(), ck.size());
    for (size_t i = 0; i < ref.size(); ++i) {
      const double scale = std::max(1.0, ref[i].abs().max().item<double>());
      const double d = (ref[i] - ck[i]).abs().max().item<double>();
      EXPECT_LE(d, 1e-4 * scale) << "param " << i << " packed " << packed;
    }
  }
}

TEST_F(ModelGpuTest, FusedLossMatchesCpu) {
  const ModelConfig c = SmallConfig(ModelFamily::kLlama);
  auto cpu = CausalLM::RandomInit(c, torch::kFloat32, torch::kCPU, 8);
  auto gpu = CausalLM::RandomInit(c, torch::kFloat32, torch::kCUDA, 8);
  torch::NoGradGuard g;
  Tensor ids = RandomIds(2, 64, c.vocab_size, 9);
  Tensor targets = torch::roll(ids, -1, 1);
  targets.select(1, 63).fill_(-100);
  const double want =
      cpu->LossSum(cpu->Hidden(ids, Positions(ids), Tensor()), targets).item<double>();
  const double got =
      gpu->LossSum(gpu->Hidden(ids.cuda(), Positions(ids).cuda(), Tensor()), targets.cuda())
          .item<double>();
  EXPECT_NEAR(got, want, 1e-4 * std::abs(want));
}

// The chunked loss over an adapted, biased, soft-capped lm_head on CUDA in
// bf16 and fp32 (A and B fp32, as LoRA keeps them) against fp32 on the CPU:
// loss and the gradients of hidden, A and B.
TEST_F(ModelGpuTest, HeadLossOnCudaMatchesCpu) {
  torch::manual_seed(21);
  const int64_t n = 300, c = 64, v = 1000, r = 8;
  const Tensor hidden = torch::randn({n, c}), labels = torch::randint(v, {n}, torch::kInt64);
  labels.narrow(0, 0, 10).fill_(-100);
  LinearParts head{torch::randn({v, c}) * 0.1,
                   torch::randn({v}) * 0.1,
                   torch::randn({r, c}) * 0.1,
                   torch::randn({v, r}) * 0.1,
                   2.0,
                   0.0};
  auto run = [&](torch::Device device, torch::Dtype dtype) {
    const Tensor h = hidden.to(device, dtype).requires_grad_(true);
    LinearParts p = head;
    p.weight = head.weight.to(device, dtype);
    p.bias = head.bias.to(device, dtype);
    p.a = head.a.to(device).requires_grad_(true);
    p.b = head.b.to(device).requires_grad_(true);
    const Tensor loss = HeadCrossEntropySum(h, p, labels.to(device), 128, 30.0);
    loss.backward();
    return std::vector<Tensor>{loss.detach().cpu(), h.grad().cpu().to(torch::kFloat32),
                               p.a.grad().cpu(), p.b.grad().cpu()};
  };
  const std::vector<Tensor> want = run(torch::kCPU, torch::kFloat32);
  for (auto [dtype, tol] : {std::pair{torch::kFloat32, 1e-4}, std::pair{torch::kBFloat16, 3e-2}}) {
    const std::vector<Tensor> got = run(torch::kCUDA, dtype);
    EXPECT_NEAR(got[0].item<double>(), want[0].item<double>(), tol * want[0].item<double>());
    for (size_t i = 1; i < got.size(); ++i) {
      const double err = ((got[i] - want[i]).norm() / want[i].norm()).item<double>();
      EXPECT_LT(err, tol) << "gradient " << i << " in " << dtype;
    }
  }
}

// The sharded base's piecewise embedding lookup and loss on CUDA (2 ranks
// as threads on one GPU), bf16 and fp32, against the whole-matrix ops.
TEST_F(ModelGpuTest, ShardedEmbeddingAndLossOnCuda) {
  const int64_t vocab = 1000, c = 256, n = 300;
  for (torch::Dtype dtype : {torch::kFloat32, torch::kBFloat16}) {
    for (double cap : {0.0, 30.0}) {
      torch::manual_seed(4);
      const auto opts = torch::TensorOptions().dtype(dtype).device(torch::kCUDA);
      Tensor w = torch::randn({vocab, c}, opts) * 0.05;
      Tensor h = torch::randn({n, c}, opts);
      Tensor y = torch::randint(vocab, {n}, torch::kInt64).cuda();
      y.narrow(0, 0, 20).fill_(-100);
      Tensor ids = torch::randint(vocab, {3, 100}, torch::kInt64).cuda();
      Tensor hd = h.clone().requires_grad_(true);
      Tensor l = torch::matmul(hd, w.t()).to(torch::kFloat32);
      if (cap > 0) l = torch::tanh(l / cap) * cap;
      Tensor want = torch::nn::functional::cross_entropy(
          l, y,
          torch::nn::functional::CrossEntropyFuncOptions().ignore_index(-100).reduction(
              torch::kSum));
      want.backward();
      auto shared = std::make_shared<ThreadShardGroup::Shared>(2);
      std::vector<Tensor> loss(2), grad(2), embedded(2);
      RunRanks(2, shared, [&](int r, std::shared_ptr<ThreadShardGroup> group) {
        torch::cuda::synchronize();
        ShardedLinear head(ShardRows(w, *group), vocab, Tensor(), group, LargeMatrixPieces(2));
        Tensor hs = h.clone().requires_grad_(true);
        loss[r] = ShardedLinearCrossEntropySum(hs, head, y, 4096, cap);
        loss[r].backward();
        grad[r] = hs.grad();
        embedded[r] = ShardedEmbedding(head.shard(), vocab, ids, *group, LargeMatrixPieces(2));
        torch::cuda::synchronize();
      });
      const double tol = dtype == torch::kBFloat16 ? 2e-3 : 1e-5;
      for (int r = 0; r < 2; ++r) {
        EXPECT_NEAR(loss[r].item<double>(), want.item<double>(),
                    tol * std::abs(want.item<double>()))
            << "dtype " << dtype << " cap " << cap;
        const double dg = (grad[r].to(torch::kFloat32) - hd.grad().to(torch::kFloat32))
                              .abs()
                              .max()
                              .item<double>();
        const double scale = hd.grad().to(torch::kFloat32).abs().max().item<double>();
        EXPECT_LE(dg, (dtype == torch::kBFloat16 ? 2e-2 : 1e-5) * scale)
            << "dtype " << dtype << " cap " << cap;
        EXPECT_TRUE(torch::equal(embedded[r], torch::embedding(w, ids)));
      }
      EXPECT_LT(shared->most_rows.load(), vocab);
    }
  }
}

// A 4-bit sharded linear layer on CUDA (2 ranks as threads on one GPU):
// each rank quantizes its rows on the GPU, a forward gathers the 4-bit rows
// and fp32 absmax and dequantizes them with the CUDA kernel. Rows of 256
// end on blocks and double quantization is off, so it computes what
// Nf4Linear of the whole weight does on CUDA (the same dequantized bf16
// weight and matmul).
TEST_F(ModelGpuTest, ShardedNf4LinearOnCuda) {
  torch::manual_seed(12);
  const auto opts = torch::TensorOptions().dtype(torch::kBFloat16).device(torch::kCUDA);
  Tensor w = torch::randn({384, 256}, opts) * 0.05;
  Tensor x = torch::randn({4, 50, 256}, opts), up = torch::randn({4, 50, 384}, opts);
  quant::Nf4Linear whole(quant::QuantizeNf4(w, false), Tensor(), torch::kBFloat16);
  Tensor xd = x.clone().requires_grad_(true);
  Tensor want = whole.forward(xd);
  (want.to(torch::kFloat32) * up.to(torch::kFloat32)).sum().backward();
  auto shared = std::make_shared<ThreadShardGroup::Shared>(2);
  std::vector<Tensor> ys(2), gs(2);
  RunRanks(2, shared, [&](int r, std::shared_ptr<ThreadShardGroup> group) {
    torch::cuda::synchronize();
    ShardedLinear layer(quant::QuantizeNf4(ShardRows(w, *group), false), 384, Tensor(), group,
                        torch::kBFloat16);
    Tensor xs = x.clone().requires_grad_(true);
    ys[r] = layer.forward(xs);
    (ys[r].to(torch::kFloat32) * up.to(torch::kFloat32)).sum().backward();
    gs[r] = xs.grad();
    torch::cuda::synchronize();
  });
  for (int r = 0; r < 2; ++r) {
    EXPECT_TRUE(ys[r].is_cuda());
    // The same bf16 weight and GEMM shapes: equal but for cuBLAS's choices.
    EXPECT_TRUE(torch::allclose(ys[r], want, 1e-2, 1e-3)) << r;
    EXPECT_TRUE(torch::allclose(gs[r], xd.grad(), 1e-2, 1e-3)) << r;
  }
  EXPECT_EQ(shared->most_rows.load(), 384 * 256 * 9 / 16);  // the 4-bit bytes
}

}  // namespace
}  // namespace fjord::model

// LoRA on a GPU (skips without one): fp32 adapters on a bf16 base through
// the fused kernels (after their self-test) against the fp32 CPU reference,
// the grouped q/k/v path, and a bf16 model's LoRA gradients.
//
// Shape legend: N tokens, in, out features, r rank.
#include <ATen/CPUGeneratorImpl.h>
#include <gtest/gtest.h>
#include <torch/cuda.h>
#include <torch/types.h>
#include <torch/utils.h>

#include <string>

#include "lora/adapter.h"
#include "lora/lora_linear.h"
#include "runtime/kernels/fused_policy.h"
#include "runtime/kernels/ops.h"
#include "runtime/kernels/self_test.h"

namespace fjord::lora {
namespace {

using torch::Tensor;

class LoraGpuTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device";
    std::string report;
    ASSERT_TRUE(kernels::RunKernelSelfTest(&report).ok()) << report;
    std::cerr << report << "\n";
  }
};

// max |a - b| relative to max |b|.
double RelErr(const Tensor& a, const Tensor& b) {
  return (a.to(torch::kCPU, torch::kFloat32) - b.to(torch::kCPU, torch::kFloat32))
             .abs()
             .max()
             .item<double>() /
         std::max(1e-12, b.abs().max().item<double>());
}

TEST_F(LoraGpuTest, Bf16BaseFp32AdaptersMatchTheCpuReference) {
  EXPECT_TRUE(kernels::FusedAllowed("lora_linear"));
  torch::manual_seed(1);
  const int64_t in = 256, out = 384, r = 16;
  Tensor w = torch::randn({out, in}) * 0.05;
  Tensor bias = torch::randn({out});
  auto cpu = std::make_shared<DenseLinear>(w.clone(), bias.clone());
  auto gpu = std::make_shared<DenseLinear>(w.to(torch::kCUDA, torch::kBFloat16),
                                           bias.to(torch::kCUDA, torch::kBFloat16));
  LoraLinear lc(cpu, {r, 2.0, 0.0}, at::make_generator<at::CPUGeneratorImpl>(3));
  LoraLinear lg(gpu, {r, 2.0, 0.0}, at::make_generator<at::CPUGeneratorImpl>(3));
  {
    torch::NoGradGuard g;
    Tensor b = torch::randn({out, r}) * 0.1;
    lc.lora_B().copy_(b);
    lg.lora_B().copy_(b);
  }
  EXPECT_EQ(lg.lora_A().scalar_type(), torch::kFloat32);
  EXPECT_TRUE(lg.lora_A().is_cuda());
  Tensor x = torch::randn({4, 32, in});
  Tensor xc = x.clone().requires_grad_(true);
  Tensor xg = x.to(torch::kCUDA, torch::kBFloat16).requires_grad_(true);
  Tensor go = torch::randn({4, 32, out});
  lc.forward(xc).backward(go);
  Tensor yg = lg.forward(xg);
  EXPECT_EQ(yg.scalar_type(), torch::kBFloat16);
  yg.backward(go.to(torch::kCUDA, torch::kBFloat16));
  EXPECT_LT(RelErr(yg, lc.forward(xc)), 2e-2);
  EXPECT_EQ(lg.lora_A().grad().scalar_type(), torch::kFloat32);
  EXPECT_LT(RelErr(lg.lora_A().grad(), lc.lora_A().grad()), 3e-2);
  EXPECT_LT(RelErr(lg.lora_B().grad(), lc.lora_B().grad()), 3e-2);
  EXPECT_LT(RelErr(xg.grad(), xc.grad()), 3e-2);
}

TEST_F(LoraGpuTest, GroupedEqualsSeparateOnCuda) {
  torch::manual_seed(2);
  auto mk = [](int64_t out) {
    return std::make_shared<DenseLinear>(
        (torch::randn({out, 128}) * 0.05).to(torch::kCUDA, torch::kBFloat16), Tensor());
  };
  LoraLinear q(mk(128), {8, 2.0, 0.0}, at::make_generator<at::CPUGeneratorImpl>(1));
  LoraLinear k(mk(32), {8, 2.0, 0.0}, at::make_generator<at::CPUGeneratorImpl>(2));
  {
    torch::NoGradGuard g;
    q.lora_B().normal_(0, 0.1);
    k.lora_B().normal_(0, 0.1);
  }
  Tensor x = torch::randn({64, 128}).to(torch::kCUDA, torch::kBFloat16);
  std::vector<Tensor> ys = ForwardShared({&q, &k}, x);
  EXPECT_LT(RelErr(ys[0], q.forward(x)), 1e-2);
  EXPECT_LT(RelErr(ys[1], k.forward(x)), 1e-2);
}

TEST_F(LoraGpuTest, Bf16ModelLossAndFp32Gradients) {
  ModelConfig c;
  c.family = model::ModelFamily::kLlama;
  c.architecture = "LlamaForCausalLM";
  c.model_type = "llama";
  c.vocab_size = 512;
  c.hidden_size = 128;
  c.intermediate_size = 256;
  c.num_hidden_layers = 2;
  c.num_attention_heads = 4;
  c.num_key_value_heads = 2;
  c.head_dim = 32;
  auto cpu = CausalLM::RandomInit(c, torch::kFloat32, torch::kCPU, 5);
  auto gpu = CausalLM::RandomInit(c, torch::kBFloat16, torch::kCUDA, 5);
  auto ac = LoraAdapter::Inject(*cpu, LoraConfig{}, 7);
  auto ag = LoraAdapter::Inject(*gpu, LoraConfig{}, 7);
  ASSERT_TRUE(ac.ok() && ag.ok());
  for (size_t i = 0; i < (*ac)->layers().size(); ++i) {
    torch::NoGradGuard g;
    Tensor b = torch::randn((*ac)->layers()[i]->lora_B().sizes()) * 0.05;
    (*ac)->layers()[i]->lora_B().copy_(b);
    (*ag)->layers()[i]->lora_B().copy_(b);
  }
  torch::manual_seed(9);
  Tensor ids = torch::randint(0, 512, {2, 64}, torch::kInt64);
  Tensor pos = torch::arange(64, torch::kInt64).view({1, 64}).expand({2, 64}).contiguous();
  cpu->eval();
  gpu->eval();
  Tensor lc = cpu->LossSum(cpu->Hidden(ids, pos, Tensor()), ids);
  Tensor lg = gpu->LossSum(gpu->Hidden(ids.cuda(), pos.cuda(), Tensor()), ids.cuda());
  EXPECT_EQ(lg.scalar_type(), torch::kFloat32);
  EXPECT_NEAR(lg.item<double>(), lc.item<double>(), 0.02 * lc.item<double>());
  lc.backward();
  lg.backward();
  for (size_t i = 0; i < (*ac)->layers().size(); ++i) {
    const Tensor& gb = (*ag)->layers()[i]->lora_B().grad();
    ASSERT_TRUE(gb.defined());
    EXPECT_EQ(gb.scalar_type(), torch::kFloat32);
    EXPECT_LT(RelErr(gb, (*ac)->layers()[i]->lora_B().grad()), 0.1) << (*ac)->modules()[i].path;
  }
}

}  // namespace
}  // namespace fjord::lora

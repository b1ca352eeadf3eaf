// NF4 on CPU: the code tables, the packing order, quantization error within
// half a code step, exact round trips of values on the code, double
// quantization of the absmax values, bitsandbytes' serialized form both
// ways and its errors, and Nf4Linear's forward and input gradient against a
// dense layer with the dequantized weight. (Parity with bitsandbytes itself:
// tests/interop/test_nf4_bitsandbytes.py.)
#include "runtime/quant/nf4.h"

#include <torch/autograd.h>
#include <torch/nn/functional/linear.h>
#include <torch/types.h>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "runtime/quant/nf4_linear.h"

namespace fjord::quant {
namespace {

using ::testing::HasSubstr;

TEST(Nf4Test, TheCodeIsSixteenAscendingValuesFromMinusOneToOneWithZero) {
  const auto& c = Nf4Code();
  EXPECT_EQ(c.front(), -1.0f);
  EXPECT_EQ(c.back(), 1.0f);
  EXPECT_EQ(c[7], 0.0f);
  for (size_t i = 1; i < c.size(); ++i) EXPECT_LT(c[i - 1], c[i]);
}

TEST(Nf4Test, TheDynamicCodeHasTheLevelsOfBitsandbytes) {
  torch::Tensor d = DynamicCode();
  ASSERT_EQ(d.numel(), 256);
  EXPECT_TRUE(torch::equal(d, std::get<0>(d.sort())));
  EXPECT_EQ(d[255].item<float>(), 1.0f);
  EXPECT_NEAR(d[254].item<float>(), 0.99296875, 1e-7);  // the mean of 0.9859375 and 1
  EXPECT_NEAR(d[128].item<float>(), 5.5e-7, 1e-12);     // 0.55 x 10^-6
  EXPECT_EQ(d[127].item<float>(), 0.0f);
  EXPECT_NEAR(d[0].item<float>(), -0.99296875, 1e-7);
}

TEST(Nf4Test, TwoIndicesPerByteTheFirstInTheHighNibble) {
  torch::Tensor w = torch::zeros({64});
  w[0] = -1.0f;                // index 0
  w[1] = 1.0f;                 // index 15
  w[2] = 0.0f;                 // index 7
  w[3] = 0.5626170039176941f;  // index 13
  Nf4Tensor q = QuantizeNf4(w, /*double_quant=*/false);
  EXPECT_EQ(q.packed.numel(), 32);
  EXPECT_EQ(q.packed[0].item<uint8_t>(), 0x0F);
  EXPECT_EQ(q.packed[1].item<uint8_t>(), 0x7D);
  EXPECT_EQ(q.packed[2].item<uint8_t>(), 0x77);
  EXPECT_FLOAT_EQ(q.absmax[0].item<float>(), 1.0f);
}

TEST(Nf4Test, ValuesOnTheCodeRoundTripExactly) {
  // Each block: absmax times code values (the absmax itself among them).
  torch::Tensor code = torch::tensor(std::vector<float>(Nf4Code().begin(), Nf4Code().end()));
  torch::Tensor idx = torch::randint(0, 16, {3, 64}, torch::kLong);
  idx.select(1, 0).fill_(15);
  torch::Tensor scale = torch::tensor({0.5f, 3.0f, 0.001f}).unsqueeze(1);
  torch::Tensor w = code.index_select(0, idx.reshape({-1})).reshape({3, 64}) * scale;
  Nf4Tensor q = QuantizeNf4(w, false);
  EXPECT_TRUE(torch::equal(DequantizeNf4(q, torch::kFloat32), w));
}

TEST(Nf4Test, TheErrorIsAtMostHalfTheWidestCodeStepOfTheBlockAbsmax) {
  torch::manual_seed(1);
  torch::Tensor w = torch::randn({96, 130});  // 12480 elements: not a multiple of 64 per row
  for (bool dq : {false, true}) {
    Nf4Tensor q = QuantizeNf4(w, dq);
    EXPECT_EQ(q.shape, (std::vector<int64_t>{96, 130}));
    EXPECT_EQ(q.blocks(), 195);
    torch::Tensor back = DequantizeNf4(q, torch::kFloat32);
    ASSERT_EQ(back.sizes(), w.sizes());
    // Widest step: -1 to -0.696. Double quantization adds the absmax's own
    // error (8 bits over the blocks' spread).
    torch::Tensor absmax = w.reshape({-1}).abs();
    const double bound = (1 - 0.6961928009986877) / 2 * absmax.max().item<double>();
    EXPECT_LE((back - w).abs().max().item<double>(), bound * (dq ? 1.05 : 1.0 + 1e-6)) << dq;
    EXPECT_EQ(back.dtype(), torch::kFloat32);
  }
}

TEST(Nf4Test, DoubleQuantizationKeepsTheAbsmaxWithinItsEightBitStep) {
  torch::manual_seed(2);
  torch::Tensor w = torch::randn({512, 64}) * torch::rand({512, 1});  // varied block scales
  Nf4Tensor plain = QuantizeNf4(w, false);
  Nf4Tensor nested = QuantizeNf4(w, true);
  ASSERT_TRUE(nested.nested);
  EXPECT_EQ(nested.absmax.scalar_type(), torch::kUInt8);
  EXPECT_EQ(nested.nested_absmax.numel(), 2);  // 512 blocks / 256
  torch::Tensor a = BlockAbsmax(nested), b = BlockAbsmax(plain);
  // The dynamic code's widest step near 1 is 0.0140625: half of it, scaled.
  const double spread = (b - b.mean()).abs().max().item<double>();
  EXPECT_LE((a - b).abs().max().item<double>(), 0.0140625 / 2 * spread * 1.0001);
  EXPECT_EQ(nested.packed.numel(), plain.packed.numel());
  EXPECT_TRUE(torch::equal(nested.packed, plain.packed));  // the 4-bit indices use the exact absmax
  EXPECT_LT(nested.bytes(), plain.bytes());
  // 0.5 B + 1/64 B per element, plus the tables.
  EXPECT_EQ(nested.bytes(), 512 * 64 / 2 + 512 + 2 * 4 + 16 * 4 + 256 * 4);
}

TEST(Nf4Test, BitsandbytesFormRoundTrips) {
  torch::manual_seed(3);
  torch::Tensor w = torch::randn({32, 96}).to(torch::kBFloat16);
  for (bool dq : {false, true}) {
    Nf4Tensor q = QuantizeNf4(w, dq);
    std::map<std::string, torch::Tensor> parts = ToBitsandbytes(q);
    EXPECT_EQ(parts.at("").sizes(), (std::vector<int64_t>{32 * 96 / 2, 1}));
    const torch::Tensor& s = parts.at(".quant_state.bitsandbytes__nf4");
    const std::string state(reinterpret_cast<const char*>(s.data_ptr<uint8_t>()), s.numel());
    EXPECT_THAT(state, HasSubstr("\"quant_type\":\"nf4\""));
    EXPECT_THAT(state, HasSubstr("\"dtype\":\"bfloat16\""));
    EXPECT_THAT(state, HasSubstr("\"shape\":[32,96]"));
    auto back = FromBitsandbytes("w", parts);
    ASSERT_TRUE(back.ok()) << back.status();
    EXPECT_EQ(back->nested, dq);
    EXPECT_EQ(back->dtype, torch::kBFloat16);
    EXPECT_TRUE(
        torch::equal(DequantizeNf4(*back, torch::kFloat32), DequantizeNf4(q, torch::kFloat32)));
  }
}

TEST(Nf4Test, BadBitsandbytesTensorsAreNamed) {
  Nf4Tensor q = QuantizeNf4(torch::randn({8, 64}), true);
  auto parts = ToBitsandbytes(q);
  auto without = parts;
  without.erase(".absmax");
  EXPECT_THAT(
      std::string(
          FromBitsandbytes("model.layers.0.mlp.up_proj.weight", without).status().message()),
      HasSubstr("'model.layers.0.mlp.up_proj.weight.absmax' is missing"));
  auto fp4 = parts;
  fp4[".quant_state.bitsandbytes__fp4"] = fp4.at(".quant_state.bitsandbytes__nf4");
  EXPECT_THAT(std::string(FromBitsandbytes("w", fp4).status().message()),
              HasSubstr("quant_type fp4 is not supported"));
  auto shorter = parts;
  shorter[""] = shorter[""].narrow(0, 0, 100);
  EXPECT_THAT(std::string(FromBitsandbytes("w", shorter).status().message()),
              HasSubstr("the packed weight has 100 bytes; shape [8, 64] needs 256"));
  auto garbage = parts;
  garbage[".quant_state.bitsandbytes__nf4"] = torch::full({5}, 'x', torch::kUInt8);
  EXPECT_THAT(std::string(FromBitsandbytes("w", garbage).status().message()),
              HasSubstr("not a JSON object"));
}

TEST(Nf4Test, Nf4LinearIsADenseLayerOfTheDequantizedWeightWithInputGradientsOnly) {
  torch::manual_seed(4);
  torch::Tensor w = torch::randn({48, 64}), bias = torch::randn({48});
  Nf4Tensor q = QuantizeNf4(w, true);
  torch::Tensor wq = DequantizeNf4(q, torch::kFloat32);
  Nf4Linear layer(q, bias, torch::kFloat32);
  EXPECT_EQ(layer.in_features(), 64);
  EXPECT_EQ(layer.out_features(), 48);
  EXPECT_TRUE(torch::equal(layer.base_weight(), wq));
  torch::Tensor x = torch::randn({2, 5, 64}, torch::requires_grad());
  torch::Tensor y = layer.forward(x);
  torch::Tensor want = torch::nn::functional::linear(x, wq, bias);
  EXPECT_TRUE(torch::allclose(y, want, 1e-6, 1e-6));
  torch::Tensor up = torch::randn_like(y);
  torch::Tensor gx = torch::autograd::grad({y}, {x}, {up})[0];
  torch::Tensor x2 = x.detach().requires_grad_(true);
  torch::Tensor gwant =
      torch::autograd::grad({torch::nn::functional::linear(x2, wq, bias)}, {x2}, {up})[0];
  EXPECT_TRUE(torch::allclose(gx, gwant, 1e-5, 1e-6));
  // Nothing of the layer trains; its 4-bit parts are buffers.
  for (const auto& p : layer.named_parameters()) EXPECT_FALSE(p.value().requires_grad());
  EXPECT_EQ(layer.named_buffers().size(), 5u);
  // Without a bias, in bf16.
  Nf4Linear plain(QuantizeNf4(w, false), torch::Tensor(), torch::kBFloat16);
  torch::Tensor xb = torch::randn({3, 64}).to(torch::kBFloat16).requires_grad_(true);
  torch::Tensor yb = plain.forward(xb);
  EXPECT_EQ(yb.scalar_type(), torch::kBFloat16);
  yb.sum().backward();
  EXPECT_EQ(xb.grad().scalar_type(), torch::kBFloat16);
  EXPECT_EQ(plain.named_buffers().size(), 3u);
}

}  // namespace
}  // namespace fjord::quant

// What lora/'s adapter tests share: tiny random CausalLM configs, a
// temporary directory, fixed-id logits, random B, and a base model written
// as a Hugging Face checkpoint.
#ifndef FJORD_LORA_ADAPTER_TEST_UTIL_H_
#define FJORD_LORA_ADAPTER_TEST_UTIL_H_

#include <gtest/gtest.h>
#include <stdlib.h>
#include <torch/types.h>
#include <torch/utils.h>

#include <fstream>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "lora/adapter.h"
#include "runtime/io/model_dir.h"

namespace fjord::lora::test_util {

using torch::Tensor;

inline std::string TempDir() {
  std::string tmpl = ::testing::TempDir() + "/lora_XXXXXX";
  EXPECT_NE(::mkdtemp(tmpl.data()), nullptr);
  return tmpl;
}

inline ModelConfig TinyLlama(bool tied) {
  ModelConfig c;
  c.family = model::ModelFamily::kLlama;
  c.architecture = "LlamaForCausalLM";
  c.model_type = "llama";
  c.vocab_size = 40;
  c.hidden_size = 32;
  c.intermediate_size = 48;
  c.num_hidden_layers = 2;
  c.num_attention_heads = 4;
  c.num_key_value_heads = 2;
  c.head_dim = 8;
  c.max_position_embeddings = 64;
  c.tie_word_embeddings = tied;
  return c;
}

inline ModelConfig TinyQwen2() {
  ModelConfig c = TinyLlama(false);
  c.family = model::ModelFamily::kQwen2;
  c.architecture = "Qwen2ForCausalLM";
  c.model_type = "qwen2";
  c.qkv_bias = true;
  return c;
}

// Logits (B, T, V) of fixed ids, eval mode, no grad.
inline Tensor Logits(CausalLM& lm) {
  torch::NoGradGuard g;
  lm.eval();
  Tensor ids = torch::tensor({3, 1, 4, 1, 5, 9, 2, 6, 5, 3}, torch::kInt64).view({2, 5});
  Tensor pos = torch::arange(5, torch::kInt64).view({1, 5}).expand({2, 5}).contiguous();
  return lm.Logits(lm.Hidden(ids, pos, Tensor()));
}

// Gives every B a random value so adapters change the output.
inline void RandomizeB(LoraAdapter& a, uint64_t seed) {
  torch::NoGradGuard g;
  torch::manual_seed(seed);
  for (auto& l : a.layers()) l->lora_B().copy_(torch::randn(l->lora_B().sizes()) * 0.3);
}

// Writes `lm` as a Hugging Face checkpoint (config.json + model.safetensors).
inline void SaveBase(CausalLM& lm, const std::string& dir) {
  std::map<std::string, Tensor> params;
  for (const auto& p : lm.named_parameters()) params[p.key()] = p.value();
  std::vector<std::pair<std::string, Tensor>> tensors;
  for (const auto& [name, shape] : model::ExpectedTensors(lm.config()))
    tensors.emplace_back(name, params.at(name));
  ASSERT_TRUE(io::WriteModelDirTensors(dir, tensors, int64_t{1} << 30).ok());
  std::ofstream(dir + "/config.json") << lm.config().ToJson();
}

}  // namespace fjord::lora::test_util

#endif  // FJORD_LORA_ADAPTER_TEST_UTIL_H_

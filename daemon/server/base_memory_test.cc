#include "daemon/server/base_memory.h"

#include <string>

#include "daemon/protocol/errors.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace fjord::daemon {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

// Llama-3.1-8B's config.json (the fields that size it): 8,030,261,248
// parameters, 6,979,321,856 of them in the decoder's linear layers.
constexpr char kLlama8B[] = R"({
  "architectures": ["LlamaForCausalLM"], "model_type": "llama",
  "vocab_size": 128256, "hidden_size": 4096, "intermediate_size": 14336,
  "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 8,
  "tie_word_embeddings": false, "torch_dtype": "bfloat16"})";

// Llama-3.1-70B's: 70,553,706,496 parameters, 68,451,041,280 in the decoder's
// linear layers.
constexpr char kLlama70B[] = R"({
  "architectures": ["LlamaForCausalLM"], "model_type": "llama",
  "vocab_size": 128256, "hidden_size": 8192, "intermediate_size": 28672,
  "num_hidden_layers": 80, "num_attention_heads": 64, "num_key_value_heads": 8,
  "tie_word_embeddings": false, "torch_dtype": "bfloat16"})";

// The 8B as transformers + bitsandbytes save it in 4-bit nf4 (QLoRA).
constexpr char kLlama8BStored4Bit[] = R"({
  "architectures": ["LlamaForCausalLM"], "model_type": "llama",
  "vocab_size": 128256, "hidden_size": 4096, "intermediate_size": 14336,
  "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 8,
  "tie_word_embeddings": false, "torch_dtype": "bfloat16",
  "quantization_config": {"quant_method": "bitsandbytes", "load_in_4bit": true,
                          "bnb_4bit_quant_type": "nf4"}})";

model::ModelConfig Parse(const char* json) {
  absl::StatusOr<model::ModelConfig> c = model::ModelConfig::FromJson(json, "config.json");
  EXPECT_TRUE(c.ok()) << c.status();
  return c.ok() ? *c : model::ModelConfig{};
}

// The bytes, worked by hand: bf16 is 2 x 8,030,261,248; nf4 is
// 6,979,321,856 x (0.5 + 1/64 + 4/(64 x 256)) = 3,600,416,768 (exact: the
// count is a multiple of 16384) + 2 x 1,050,939,392 others.
TEST(BaseMemoryTest, FrozenBaseBytes) {
  const model::ModelConfig::ParameterCount n = Parse(kLlama8B).CountParameters();
  ASSERT_EQ(n.total(), 8030261248);
  ASSERT_EQ(n.decoder_linear, 6979321856);
  EXPECT_DOUBLE_EQ(FrozenBaseBytes(n, /*nf4=*/false), 16060522496.0);
  EXPECT_DOUBLE_EQ(FrozenBaseBytes(n, /*nf4=*/true), 3600416768.0 + 2 * 1050939392.0);
  const model::ModelConfig::ParameterCount big = Parse(kLlama70B).CountParameters();
  ASSERT_EQ(big.total(), 70553706496);
  EXPECT_DOUBLE_EQ(FrozenBaseBytes(big, false), 141107412992.0);
  EXPECT_DOUBLE_EQ(FrozenBaseBytes(big, true), 35311779840.0 + 2 * 2102665216.0);
}

// 16 GB GPUs (14.4 GB usable): the 8B's 16.1 GB bf16 base does not fit, its
// 5.7 GB nf4 base does; the refusal shows the arithmetic and points at the
// field that fixes it.
TEST(BaseMemoryTest, An8BOn16GbNeedsNf4) {
  const model::ModelConfig c = Parse(kLlama8B);
  absl::Status s = CheckBaseFitsOnGpu("llama-3.1-8b", c, "none", false, 1, 1, 16);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(protocol::ParamOf(s), "quantization");
  EXPECT_EQ(s.message(),
            "model 'llama-3.1-8b' (8.0 B parameters) needs 16.1 GB for its frozen base in bf16 "
            "alone (2 B x 8,030,261,248); this node's GPUs have 16 GB each (14.4 GB usable after "
            "10% for the CUDA context, activations and the adapter); with quantization: nf4 it "
            "needs 5.7 GB");
  EXPECT_TRUE(CheckBaseFitsOnGpu("llama-3.1-8b", c, "nf4", false, 1, 1, 16).ok());
  EXPECT_TRUE(CheckBaseFitsOnGpu("llama-3.1-8b", c, "none", false, 1, 1, 80).ok());
  EXPECT_TRUE(CheckBaseFitsOnGpu("llama-3.1-8b", c, "nf4", false, 1, 1, 80).ok());
  // 0: the GPUs' memory is unknown, nothing is checked.
  EXPECT_TRUE(CheckBaseFitsOnGpu("llama-3.1-8b", c, "none", false, 1, 1, 0).ok());
}

// Data parallel without shard_base: every one of the job's GPUs holds the
// whole base, so more GPUs alone never make it fit; the message says so, and
// what shard_base over them would need.
TEST(BaseMemoryTest, MoreGpusDoNotShareTheBaseUnlessSharded) {
  const model::ModelConfig c = Parse(kLlama8B);
  absl::Status s = CheckBaseFitsOnGpu("llama-3.1-8b", c, "none", false, 4, 4, 16);
  EXPECT_EQ(protocol::ParamOf(s), "quantization");
  EXPECT_THAT(s.message(),
              HasSubstr(", and each of the job's 4 GPUs holds the whole base (data parallel); "
                        "with quantization: nf4 it needs 5.7 GB; with shard_base over the job's "
                        "4 GPUs it needs 4.7 GB on each"));
  EXPECT_TRUE(CheckBaseFitsOnGpu("llama-3.1-8b", c, "none", true, 4, 4, 16).ok());
}

TEST(BaseMemoryTest, A70BThatDoesNotFitEvenInNf4) {
  const model::ModelConfig c = Parse(kLlama70B);
  // 80 GB: 141.1 GB in bf16, 39.5 GB in nf4.
  absl::Status s = CheckBaseFitsOnGpu("llama-70b", c, "none", false, 1, 1, 80);
  EXPECT_EQ(protocol::ParamOf(s), "quantization");
  EXPECT_THAT(s.message(),
              HasSubstr("model 'llama-70b' (70.6 B parameters) needs 141.1 GB for its frozen base "
                        "in bf16 alone (2 B x 70,553,706,496); this node's GPUs have 80 GB each "
                        "(72 GB usable after 10%"));
  EXPECT_THAT(s.message(), HasSubstr("; with quantization: nf4 it needs 39.5 GB"));
  EXPECT_TRUE(CheckBaseFitsOnGpu("llama-70b", c, "nf4", false, 1, 1, 80).ok());
  // 40 GB (36 usable): neither fits.
  s = CheckBaseFitsOnGpu("llama-70b", c, "none", false, 1, 1, 40);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(protocol::ParamOf(s), "model");
  EXPECT_THAT(s.message(),
              HasSubstr("(36 GB usable after 10% for the CUDA context, activations and the "
                        "adapter); even with quantization: nf4 it needs 39.5 GB, which does not "
                        "fit either: choose a smaller model or a node with larger GPUs"));
  // nf4 asked for, and still too big.
  s = CheckBaseFitsOnGpu("llama-70b", c, "nf4", false, 1, 1, 24);
  EXPECT_EQ(protocol::ParamOf(s), "model");
  EXPECT_EQ(s.message(),
            "model 'llama-70b' (70.6 B parameters) needs 39.5 GB for its frozen base in nf4 "
            "alone (0.5159 B x 68,451,041,280 decoder linear weights + 2 B x 2,102,665,216 "
            "others); this node's GPUs have 24 GB each (21.6 GB usable after 10% for the CUDA "
            "context, activations and the adapter); it does not fit even in nf4: choose a "
            "smaller model or a node with larger GPUs");
}

// Sharded over N GPUs, each holds 2 B x ceil(parameters / N), and gathers
// two pieces of lm_head at a time (2 B x ceil(vocab / N) x hidden: it is
// gathered in 2N pieces, never whole) and one decoder layer's linear weights
// (2 B x 855,638,016 for the 70B: 68,451,041,280 / 80 layers).
TEST(BaseMemoryTest, ShardedFrozenBaseBytes) {
  const model::ModelConfig big = Parse(kLlama70B);
  ASSERT_EQ(big.CountParameters().total(), 70553706496);
  const ShardedBaseBytes b = ShardedFrozenBaseBytes(big, 8);
  EXPECT_DOUBLE_EQ(b.held, 2 * 8819213312.0);       // 70,553,706,496 / 8
  EXPECT_DOUBLE_EQ(b.lm_head, 2 * 16032.0 * 8192);  // 128,256 / 8
  EXPECT_DOUBLE_EQ(b.layer, 2 * 855638016.0);
  EXPECT_DOUBLE_EQ(b.total(), 19612370944.0);
  // Not a multiple: the shard is rounded up.
  EXPECT_DOUBLE_EQ(ShardedFrozenBaseBytes(Parse(kLlama8B), 3).held, 2 * 2676753750.0);
  // One rank holds it all (and still counts its gathers).
  EXPECT_DOUBLE_EQ(ShardedFrozenBaseBytes(big, 1).held, 2 * 70553706496.0);
}

// Llama-3.3-70B on a node of eight 80 GB GPUs (72 GB usable), a job of 8
// GPUs: in bf16 each GPU would hold the whole base (141.1 GB), refused with
// what nf4 and what shard_base would need; with shard_base each holds 1/8
// (17.6 GB) plus two pieces of lm_head (0.3 GB) and one layer (1.7 GB)
// gathered: accepted.
TEST(BaseMemoryTest, A70BInBf16OnEight80GbGpusNeedsShardBase) {
  const model::ModelConfig c = Parse(kLlama70B);
  absl::Status s = CheckBaseFitsOnGpu("llama-3.3-70b", c, "none", false, 8, 8, 80);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(protocol::ParamOf(s), "quantization");
  EXPECT_EQ(s.message(),
            "model 'llama-3.3-70b' (70.6 B parameters) needs 141.1 GB for its frozen base in "
            "bf16 alone (2 B x 70,553,706,496); this node's GPUs have 80 GB each (72 GB usable "
            "after 10% for the CUDA context, activations and the adapter), and each of the job's "
            "8 GPUs holds the whole base (data parallel); with quantization: nf4 it needs 39.5 GB; "
            "with shard_base over the job's 8 GPUs it needs 19.6 GB on each");
  EXPECT_TRUE(CheckBaseFitsOnGpu("llama-3.3-70b", c, "none", true, 8, 8, 80).ok());
  EXPECT_TRUE(CheckBaseFitsOnGpu("llama-3.3-70b", c, "nf4", false, 8, 8, 80).ok());
  // A job of one GPU: shard_base has no effect; the message says over how
  // many of the node's GPUs it would fit (2: 73.3 GB each; 3: 49.4 GB).
  s = CheckBaseFitsOnGpu("llama-3.3-70b", c, "none", true, 1, 8, 80);
  EXPECT_EQ(protocol::ParamOf(s), "quantization");
  EXPECT_THAT(s.message(),
              HasSubstr("(72 GB usable after 10% for the CUDA context, activations and the "
                        "adapter), and shard_base has no effect with one GPU; with quantization: "
                        "nf4 it needs 39.5 GB; with shard_base over 3 GPUs (gpus: 3) it needs "
                        "49.4 GB on each"));
  EXPECT_TRUE(CheckBaseFitsOnGpu("llama-3.3-70b", c, "none", true, 3, 8, 80).ok());
}

// A sharded base that does not fit shows the sharded arithmetic and the
// fewest of the node's GPUs over which it would (param gpus), else nf4
// instead (param quantization), else nothing (param model).
TEST(BaseMemoryTest, AShardedBaseThatDoesNotFit) {
  const model::ModelConfig c = Parse(kLlama70B);
  // 40 GB (36 usable): over 2 GPUs 73.3 GB each, over 4 37.5, over 5 30.4.
  absl::Status s = CheckBaseFitsOnGpu("llama-70b", c, "none", true, 2, 8, 40);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(protocol::ParamOf(s), "gpus");
  EXPECT_EQ(s.message(),
            "model 'llama-70b' (70.6 B parameters) needs 73.3 GB on each GPU for its frozen base "
            "in bf16 sharded over the job's 2 GPUs (2 B x 70,553,706,496 / 2 = 70.6 GB held + "
            "2 B x 128,256 / 2 x 8,192 = 1.1 GB for two pieces of lm_head, gathered 1/4 at a "
            "time for the loss + 2 B x "
            "855,638,016 = 1.7 GB for one decoder layer's linear weights, gathered as it runs; "
            "norms and biases are held whole, too small to count); this node's GPUs have 40 GB "
            "each (36 GB usable after 10% for the CUDA context, activations and the adapter); "
            "with shard_base over 5 GPUs (gpus: 5) it needs 30.4 GB on each");
  EXPECT_TRUE(CheckBaseFitsOnGpu("llama-70b", c, "none", true, 5, 8, 40).ok());
  // A node of two 48 GB GPUs (43.2 usable): nf4 (39.5 GB) fits, unsharded.
  s = CheckBaseFitsOnGpu("llama-70b", c, "none", true, 2, 2, 48);
  EXPECT_EQ(protocol::ParamOf(s), "quantization");
  EXPECT_THAT(s.message(),
              HasSubstr("; it does not fit even sharded over all of this node's 2 GPUs; with "
                        "quantization: nf4 instead of shard_base it needs 39.5 GB"));
  // Two 40 GB GPUs: neither bf16 sharded (73.3 GB each) nor nf4 whole
  // (39.5 GB) fits, nf4 sharded over both (23.0 GB each) does.
  s = CheckBaseFitsOnGpu("llama-70b", c, "none", true, 2, 2, 40);
  EXPECT_EQ(protocol::ParamOf(s), "quantization");
  EXPECT_THAT(std::string(s.message()),
              HasSubstr("; it does not fit even sharded over all of this node's 2 GPUs; with "
                        "quantization: nf4 and shard_base over the job's 2 GPUs it needs 23.0 GB "
                        "on each"));
  EXPECT_TRUE(CheckBaseFitsOnGpu("llama-70b", c, "nf4", true, 2, 2, 40).ok());
  // Two 16 GB GPUs: nothing fits.
  s = CheckBaseFitsOnGpu("llama-70b", c, "none", true, 2, 2, 16);
  EXPECT_EQ(protocol::ParamOf(s), "model");
  EXPECT_THAT(std::string(s.message()),
              HasSubstr("; it does not fit even sharded over all of this node's 2 GPUs, nor in "
                        "nf4 (39.5 GB, or 23.0 GB on each sharded over them): choose a smaller "
                        "model or a node with larger GPUs"));
}

// 24 GB GPUs (21.6 usable): the 70B does not fit in nf4 (39.5 GB), but in
// bf16 sharded over 8 (19.6 GB each) it does: the refusals point at
// shard_base. Where no sharding fits either, the message says so.
TEST(BaseMemoryTest, WhereOnlyShardBaseFits) {
  const model::ModelConfig c = Parse(kLlama70B);
  absl::Status s = CheckBaseFitsOnGpu("llama-70b", c, "none", false, 8, 8, 24);
  EXPECT_EQ(protocol::ParamOf(s), "shard_base");
  EXPECT_THAT(s.message(),
              HasSubstr("; even with quantization: nf4 it needs 39.5 GB, which does not fit "
                        "either; with shard_base over the job's 8 GPUs it needs 19.6 GB on each"));
  // In nf4 it is sharded in nf4 (7.4 GB each over the job's 8).
  s = CheckBaseFitsOnGpu("llama-70b", c, "nf4", false, 8, 8, 24);
  EXPECT_EQ(protocol::ParamOf(s), "shard_base");
  EXPECT_THAT(std::string(s.message()),
              HasSubstr("; it does not fit even in nf4; with shard_base over the job's 8 GPUs it "
                        "needs 7.4 GB on each"));
  EXPECT_TRUE(CheckBaseFitsOnGpu("llama-70b", c, "none", true, 8, 8, 24).ok());
  EXPECT_TRUE(CheckBaseFitsOnGpu("llama-70b", c, "nf4", true, 8, 8, 24).ok());
  // A node of two 40 GB GPUs: bf16 sharded over both needs 73.3 GB each,
  // nf4 39.5 GB, nf4 sharded over both 23.0 GB each: that.
  s = CheckBaseFitsOnGpu("llama-70b", c, "none", false, 1, 2, 40);
  EXPECT_EQ(protocol::ParamOf(s), "shard_base");
  EXPECT_THAT(std::string(s.message()),
              HasSubstr("; even with quantization: nf4 it needs 39.5 GB, which does not fit "
                        "either; with quantization: nf4 and shard_base over 2 GPUs (gpus: 2) it "
                        "needs 23.0 GB on each"));
  // Two 16 GB GPUs: nothing fits.
  s = CheckBaseFitsOnGpu("llama-70b", c, "none", false, 1, 2, 16);
  EXPECT_EQ(protocol::ParamOf(s), "model");
  EXPECT_THAT(std::string(s.message()),
              HasSubstr("; even with quantization: nf4 it needs 39.5 GB, which does not fit "
                        "either (nor does shard_base over all of this node's 2 GPUs: 73.3 GB on "
                        "each in bf16, 23.0 GB in nf4): choose a smaller model or a node with "
                        "larger GPUs"));
}

// Sharded in nf4 over N GPUs, each holds 0.5159 B x ceil(decoder linear
// weights / N) + 2 B x ceil(others / N), gathers two pieces of lm_head, and
// one layer's linear weights in 4 bits (0.5625 B each) dequantized to bf16
// (2 B): for the 70B over 2, 17,655,889,920 + 2,102,665,216 held +
// 1,050,673,152 + 2.5625 x 855,638,016.
TEST(BaseMemoryTest, ShardedNf4BaseBytes) {
  const model::ModelConfig big = Parse(kLlama70B);
  const ShardedBaseBytes b = ShardedFrozenBaseBytes(big, 2, /*nf4=*/true);
  EXPECT_DOUBLE_EQ(b.held, 17655889920.0 + 2102665216.0);
  EXPECT_DOUBLE_EQ(b.lm_head, 2 * 64128.0 * 8192);
  EXPECT_DOUBLE_EQ(b.layer, 2.5625 * 855638016.0);
  // A checkpoint stored in 4 bits keeps its rows' absmax in fp32: 0.5625 B.
  EXPECT_DOUBLE_EQ(ShardedFrozenBaseBytes(big, 2, true, /*stored_4bit=*/true).held,
                   0.5625 * 34225520640.0 + 2102665216.0);
  // Two 24 GB GPUs (21.6 usable): 23.0 GB each is too much; the message
  // shows the arithmetic.
  absl::Status s = CheckBaseFitsOnGpu("llama-70b", big, "nf4", true, 2, 2, 24);
  EXPECT_EQ(protocol::ParamOf(s), "model");
  EXPECT_EQ(std::string(s.message()),
            "model 'llama-70b' (70.6 B parameters) needs 23.0 GB on each GPU for its frozen base "
            "in nf4 sharded over the job's 2 GPUs (0.5159 B x 68,451,041,280 / 2 decoder linear "
            "weights + 2 B x 2,102,665,216 / 2 others = 19.8 GB held + 2 B x 128,256 / 2 x 8,192 "
            "= 1.1 GB for two pieces of lm_head, gathered 1/4 at a time for the loss + 2.5625 B "
            "x 855,638,016 = 2.2 GB for one decoder layer's linear weights, gathered in 4 bits "
            "and dequantized to bf16 as it runs; norms and biases are held whole, too small to "
            "count); this node's GPUs have 24 GB each (21.6 GB usable after 10% for the CUDA "
            "context, activations and the adapter); it does not fit even sharded over all of "
            "this node's 2 GPUs: choose a smaller model or a node with larger GPUs");
  // Three of them: 16.1 GB each.
  s = CheckBaseFitsOnGpu("llama-70b", big, "nf4", true, 2, 3, 24);
  EXPECT_EQ(protocol::ParamOf(s), "gpus");
  EXPECT_THAT(std::string(s.message()),
              HasSubstr("; with shard_base over 3 GPUs (gpus: 3) it needs 16.1 GB on each"));
  EXPECT_TRUE(CheckBaseFitsOnGpu("llama-70b", big, "nf4", true, 3, 3, 24).ok());
}

// Llama-3.1-405B on one node of eight 80 GB GPUs: in bf16 not even sharded
// over all eight (108.4 GB each); in nf4 whole 215.6 GB; in nf4 sharded
// over 4 of them 63.1 GB each (over 8: 35.6).
TEST(BaseMemoryTest, A405BFitsOneNodeOnlyInNf4Sharded) {
  const model::ModelConfig c = Parse(R"({
    "architectures": ["LlamaForCausalLM"], "model_type": "llama",
    "vocab_size": 128256, "hidden_size": 16384, "intermediate_size": 53248,
    "num_hidden_layers": 126, "num_attention_heads": 128, "num_key_value_heads": 8,
    "tie_word_embeddings": false, "torch_dtype": "bfloat16"})");
  ASSERT_EQ(c.CountParameters().total(), 405853388800);
  absl::Status s = CheckBaseFitsOnGpu("llama-3.1-405b", c, "none", true, 8, 8, 80);
  EXPECT_EQ(protocol::ParamOf(s), "quantization");
  EXPECT_THAT(std::string(s.message()),
              HasSubstr("needs 108.4 GB on each GPU for its frozen base in bf16 sharded over the "
                        "job's 8 GPUs"));
  EXPECT_THAT(std::string(s.message()),
              HasSubstr("; it does not fit even sharded over all of this node's 8 GPUs; with "
                        "quantization: nf4 and shard_base over the job's 8 GPUs it needs 35.6 GB "
                        "on each"));
  s = CheckBaseFitsOnGpu("llama-3.1-405b", c, "nf4", false, 4, 8, 80);
  EXPECT_EQ(protocol::ParamOf(s), "shard_base");
  EXPECT_THAT(std::string(s.message()),
              HasSubstr("needs 215.6 GB for its frozen base in nf4 alone"));
  EXPECT_THAT(std::string(s.message()),
              HasSubstr("; with shard_base over the job's 4 GPUs it needs 63.1 GB on each"));
  EXPECT_TRUE(CheckBaseFitsOnGpu("llama-3.1-405b", c, "nf4", true, 4, 8, 80).ok());
  s = CheckBaseFitsOnGpu("llama-3.1-405b", c, "nf4", true, 2, 8, 80);
  EXPECT_EQ(protocol::ParamOf(s), "gpus");
  EXPECT_THAT(std::string(s.message()),
              HasSubstr("; with shard_base over 4 GPUs (gpus: 4) it needs 63.1 GB on each"));
}

// A checkpoint stored in bitsandbytes 4-bit is sharded by slicing its rows
// as stored (their absmax in fp32: 0.5625 B a weight); one whose rows do
// not end on a block of 64 cannot be, refused whether or not the GPUs'
// memory is known.
TEST(BaseMemoryTest, ACheckpointStoredIn4BitIsShardedAsStored) {
  const model::ModelConfig c = Parse(kLlama8BStored4Bit);
  EXPECT_TRUE(CheckBaseFitsOnGpu("llama-3.1-8b-bnb", c, "none", true, 2, 8, 80).ok());
  EXPECT_TRUE(CheckBaseFitsOnGpu("llama-3.1-8b-bnb", c, "none", true, 2, 8, 0).ok());
  // 4 GB GPUs (3.6 usable): 5.7 GB whole; sharded over 2, 4.1 GB each; over
  // 3, 2.9 GB.
  absl::Status s = CheckBaseFitsOnGpu("llama-3.1-8b-bnb", c, "none", false, 1, 8, 4);
  EXPECT_EQ(protocol::ParamOf(s), "shard_base");
  EXPECT_THAT(std::string(s.message()),
              HasSubstr("; it does not fit even in nf4; with shard_base over 3 GPUs (gpus: 3) it "
                        "needs 2.9 GB on each"));
  model::ModelConfig odd = c;
  odd.intermediate_size = 14340;  // down_proj's rows end mid-block
  for (double gb : {0.0, 80.0}) {
    s = CheckBaseFitsOnGpu("odd-bnb", odd, "none", true, 2, 8, gb);
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
    EXPECT_EQ(protocol::ParamOf(s), "shard_base");
    EXPECT_EQ(std::string(s.message()),
              "model 'odd-bnb' is stored in bitsandbytes 4-bit (nf4) with rows that do not end on "
              "a block of 64 weights (hidden_size 4096, intermediate_size 14340), so its base "
              "cannot be sharded across the job's GPUs: leave shard_base out");
  }
  EXPECT_TRUE(CheckBaseFitsOnGpu("odd-bnb", odd, "none", true, 1, 8, 80).ok());
  // Too big in 4-bit on 4 GB GPUs: no sharding suggested (it cannot be).
  s = CheckBaseFitsOnGpu("odd-bnb", odd, "none", false, 1, 8, 4);
  EXPECT_EQ(protocol::ParamOf(s), "model");
  EXPECT_THAT(std::string(s.message()), Not(HasSubstr("shard_base")));
}

// A checkpoint stored in bitsandbytes 4-bit is an nf4 base whatever the job
// says.
TEST(BaseMemoryTest, ACheckpointStoredIn4BitCountsAsNf4) {
  const model::ModelConfig c = Parse(kLlama8BStored4Bit);
  ASSERT_EQ(c.quantization, "bitsandbytes-nf4");
  EXPECT_TRUE(CheckBaseFitsOnGpu("llama-3.1-8b-bnb", c, "none", false, 1, 1, 16).ok());
  absl::Status s = CheckBaseFitsOnGpu("llama-3.1-8b-bnb", c, "none", false, 1, 1, 4);
  EXPECT_EQ(protocol::ParamOf(s), "model");
  EXPECT_THAT(s.message(),
              HasSubstr("needs 5.7 GB for its frozen base in nf4 (its checkpoint is stored in "
                        "bitsandbytes 4-bit) alone (0.5159 B x 6,979,321,856 decoder linear "
                        "weights + 2 B x 1,050,939,392 others); this node's GPUs have 4 GB each "
                        "(3.6 GB usable"));
  EXPECT_THAT(s.message(), HasSubstr("it does not fit even in nf4"));
}

}  // namespace
}  // namespace fjord::daemon

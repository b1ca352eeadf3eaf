// CausalLM::FromPretrained: a Hugging Face checkpoint (config.json and
// safetensors, single or sharded) into a CausalLM, whole, with its decoder
// linear weights in 4 bits (runtime/quant), or sharded across ranks
// (shard.h); and the tensors a checkpoint must hold (ExpectedTensors).
#include <map>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "runtime/io/model_dir.h"
#include "runtime/model/model.h"
#include "runtime/model/shard.h"
#include "runtime/quant/nf4.h"
#include "runtime/quant/nf4_linear.h"
#include "runtime/util/status_macros.h"
#include "runtime/util/torch_status.h"

namespace fjord::model {
namespace {

using torch::Tensor;

std::string ShapeString(const std::vector<int64_t>& shape) {
  return absl::StrCat("[", absl::StrJoin(shape, ", "), "]");
}

std::string DtypeName(torch::Dtype dtype) {
  switch (dtype) {
    case torch::kFloat32:
      return "float32";
    case torch::kBFloat16:
      return "bfloat16";
    case torch::kFloat16:
      return "float16";
    default:
      return std::string(c10::toString(dtype));
  }
}

}  // namespace

absl::StatusOr<std::shared_ptr<CausalLM>> CausalLM::FromPretrained(const std::string& dir,
                                                                   torch::Dtype dtype,
                                                                   torch::Device device, Env* env) {
  LoadOptions o;
  o.dtype = dtype;
  o.device = device;
  o.env = env;
  return FromPretrained(dir, o);
}

namespace {

// Whether `name` is the weight of a decoder linear layer (what 4-bit bases
// hold in 4 bits): model.layers.N.{self_attn,mlp}.*_proj.weight.
bool IsDecoderLinearWeight(const std::string& name) {
  return absl::StartsWith(name, "model.layers.") && absl::EndsWith(name, "_proj.weight");
}

}  // namespace

absl::StatusOr<std::shared_ptr<CausalLM>> CausalLM::FromPretrained(const std::string& dir,
                                                                   const LoadOptions& options) {
  const torch::Dtype dtype = options.dtype;
  const torch::Device device = options.device;
  Env* env = options.env;
  if (dtype != torch::kFloat32 && dtype != torch::kBFloat16 && dtype != torch::kFloat16) {
    return absl::InvalidArgumentError(
        absl::StrCat(dir, ": model dtype ", DtypeName(dtype),
                     " is not supported; use float32, bfloat16 or float16"));
  }
  if (!options.quantization.empty() && options.quantization != "nf4") {
    return absl::InvalidArgumentError(absl::StrCat(dir, ": quantization '", options.quantization,
                                                   "' is not supported (nf4, or none)"));
  }
  FJORD_ASSIGN_OR_RETURN(ModelConfig config, ModelConfig::FromFile(dir + "/config.json", env));
  FJORD_ASSIGN_OR_RETURN(std::unique_ptr<io::ModelDirReader> reader,
                         io::ModelDirReader::Open(dir, env));
  // A checkpoint bitsandbytes saved in 4 bits: its decoder linear weights
  // are uint8 with the parts of their quantization state beside them.
  const bool stored_4bit = config.quantization == "bitsandbytes-nf4";
  const bool nf4 = stored_4bit || options.quantization == "nf4";
  const std::shared_ptr<ShardGroup> group =
      options.shard_group != nullptr && options.shard_group->size() > 1 ? options.shard_group
                                                                        : nullptr;
  // With a shard group, this rank keeps its rows of these (the rest whole);
  // with nf4 as well, the decoder's linear weights in 4 bits.
  auto sharded = [&](const std::string& name) {
    return group != nullptr && (IsDecoderLinearWeight(name) ||
                                name == "model.embed_tokens.weight" || name == "lm_head.weight");
  };
  auto stored_quantized = [&](const std::string& name) {
    if (!stored_4bit || !IsDecoderLinearWeight(name)) return false;
    const io::TensorEntry* e = reader->Find(name);
    return e != nullptr && e->dtype == "U8";
  };

  const auto expected = ExpectedTensors(config);
  std::set<std::string> expected_names;
  std::vector<std::string> missing;
  for (const auto& [name, shape] : expected) {
    expected_names.insert(name);
    const io::TensorEntry* entry = reader->Find(name);
    if (entry == nullptr) {
      missing.push_back(name);
      continue;
    }
    if (stored_quantized(name)) {
      for (const std::string& suffix : quant::BitsandbytesSuffixes()) {
        expected_names.insert(name + suffix);
      }
      continue;  // its shape is in its quant_state, checked below
    }
    if (entry->shape != shape) {
      return absl::InvalidArgumentError(absl::StrCat(dir, ": tensor '", name, "' has shape ",
                                                     ShapeString(entry->shape), ", expected ",
                                                     ShapeString(shape), " from config.json"));
    }
    if (entry->dtype != "F32" && entry->dtype != "BF16" && entry->dtype != "F16" &&
        entry->dtype != "F64") {
      return absl::InvalidArgumentError(absl::StrCat(dir, ": tensor '", name, "' has dtype ",
                                                     entry->dtype, ", expected a float type"));
    }
  }
  if (!missing.empty()) {
    return absl::NotFoundError(
        absl::StrCat(dir, ": checkpoint lacks ", missing.size(),
                     " tensor(s) the config requires: ", absl::StrJoin(missing, ", ")));
  }
  std::vector<std::string> unexpected;
  for (const std::string& name : reader->Names()) {
    if (expected_names.count(name) > 0) continue;
    if (absl::EndsWith(name, "rotary_emb.inv_freq")) continue;  // old non-persistent buffer
    if (config.tie_word_embeddings && name == "lm_head.weight") continue;  // tied copy
    unexpected.push_back(name);
  }
  if (!unexpected.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(
        dir, ": checkpoint has ", unexpected.size(), " tensor(s) a ", config.architecture,
        " with this config.json does not use: ", absl::StrJoin(unexpected, ", ")));
  }

  // Full-precision tensors are read first (CPU), 4-bit weights become their
  // quantized form on the device as they are read, so a 4-bit base never
  // holds its full-precision weights all at once.
  std::map<std::string, Tensor> loaded;
  std::map<std::string, quant::Nf4Tensor> quantized;
  std::map<std::string, Tensor> shards;  // this rank's rows, on the device
  for (const auto& [name, shape] : expected) {
    if (stored_quantized(name)) {
      absl::StatusOr<quant::Nf4Tensor> q = quant::ReadBitsandbytes(*reader, name);
      if (!q.ok()) return absl::InvalidArgumentError(absl::StrCat(dir, ": ", q.status().message()));
      if (q->shape != shape) {
        return absl::InvalidArgumentError(
            absl::StrCat(dir, ": 4-bit tensor '", name, "' has shape ", ShapeString(q->shape),
                         ", expected ", ShapeString(shape), " from config.json"));
      }
      if (group != nullptr) {
        // Its 4-bit rows are sliced as they are stored, so a row must end
        // on a block of absmax.
        if (q->shape[1] % q->blocksize != 0 || q->blocksize % 2 != 0) {
          return absl::InvalidArgumentError(absl::StrCat(
              dir, ": 4-bit tensor '", name, "' cannot be sharded across the ranks: its rows of ",
              q->shape[1], " weights do not end on a block of ", q->blocksize,
              " (leave shard_base out)"));
        }
        FJORD_ASSIGN_OR_RETURN(quantized[name],
                               TorchCall(absl::StrCat(dir, ": sharding ", name),
                                         [&]() { return ShardNf4Rows(*q, *group).To(device); }));
        continue;
      }
      FJORD_ASSIGN_OR_RETURN(quantized[name], TorchCall(absl::StrCat(dir, ": ", name),
                                                        [&]() { return q->To(device); }));
      continue;
    }
    FJORD_ASSIGN_OR_RETURN(Tensor t, reader->Get(name));
    if (sharded(name) && nf4 && IsDecoderLinearWeight(name)) {
      // This rank's rows, quantized on their own on the device.
      FJORD_ASSIGN_OR_RETURN(
          quantized[name],
          TorchCall(absl::StrCat(dir, ": sharding ", name, " and quantizing it to nf4"), [&]() {
            return quant::QuantizeNf4(ShardRows(t, *group).to(device), options.double_quant);
          }));
      continue;
    }
    if (sharded(name)) {
      // Only this rank's rows are read (the file is mapped: the others'
      // pages are never touched) and kept, on the device, in the dtype.
      FJORD_ASSIGN_OR_RETURN(shards[name], TorchCall(absl::StrCat(dir, ": sharding ", name), [&]() {
                               return ShardRows(t, *group).to(device, dtype);
                             }));
      continue;
    }
    if (nf4 && !stored_4bit && IsDecoderLinearWeight(name)) {
      FJORD_ASSIGN_OR_RETURN(quantized[name],
                             TorchCall(absl::StrCat(dir, ": quantizing ", name, " to nf4"), [&]() {
                               return quant::QuantizeNf4(t.to(device), options.double_quant);
                             }));
      continue;
    }
    loaded.emplace(name, std::move(t));
  }
  return TorchCall(absl::StrCat(dir, ": loading weights"), [&]() {
    auto weight = [&](const std::string& name, const std::vector<int64_t>&) {
      if (auto it = shards.find(name); it != shards.end()) return it->second;  // the embeddings
      Tensor t = loaded.at(name).to(device, dtype);
      loaded.erase(name);  // release the CPU copy early
      return t;
    };
    LinearMaker make_linear;
    if (group != nullptr) {
      make_linear = [&](const std::string& prefix, int64_t out, int64_t in,
                        bool bias) -> std::shared_ptr<LinearBase> {
        (void)in;
        Tensor b = bias ? weight(prefix + ".bias", {out}) : Tensor();
        if (auto it = quantized.find(prefix + ".weight"); it != quantized.end()) {
          auto layer = std::make_shared<ShardedLinear>(std::move(it->second), out, b, group, dtype);
          quantized.erase(it);
          return layer;
        }
        Tensor shard = shards.at(prefix + ".weight");
        shards.erase(prefix + ".weight");
        // lm_head, the largest matrix, is gathered in pieces, never whole.
        return std::make_shared<ShardedLinear>(
            shard, out, b, group, prefix == "lm_head" ? LargeMatrixPieces(group->size()) : 1);
      };
    }
    if (nf4 && group == nullptr) {
      make_linear = [&](const std::string& prefix, int64_t out, int64_t in,
                        bool bias) -> std::shared_ptr<LinearBase> {
        Tensor b = bias ? weight(prefix + ".bias", {out}) : Tensor();
        auto it = quantized.find(prefix + ".weight");
        if (it == quantized.end()) {
          return std::make_shared<DenseLinear>(weight(prefix + ".weight", {out, in}), b);
        }
        auto layer = std::make_shared<quant::Nf4Linear>(std::move(it->second), b, dtype);
        quantized.erase(it);
        return layer;
      };
    }
    return std::make_shared<CausalLM>(std::move(config), dtype, device, weight, make_linear,
                                      nf4 ? "nf4" : "", group);
  });
}

std::vector<std::pair<std::string, std::vector<int64_t>>> ExpectedTensors(const ModelConfig& c) {
  std::vector<std::pair<std::string, std::vector<int64_t>>> out;
  out.push_back({"model.embed_tokens.weight", {c.vocab_size, c.hidden_size}});
  auto linear = [&](const std::string& prefix, int64_t o, int64_t i, bool bias) {
    out.push_back({prefix + ".weight", {o, i}});
    if (bias) out.push_back({prefix + ".bias", {o}});
  };
  for (int64_t l = 0; l < c.num_hidden_layers; ++l) {
    const std::string p = absl::StrCat("model.layers.", l);
    if (c.fused_projections) {  // Phi3: HF's order
      linear(p + ".self_attn.o_proj", c.hidden_size, c.q_size(), c.o_proj_bias);
      linear(p + ".self_attn.qkv_proj", c.q_size() + 2 * c.kv_size(), c.hidden_size, c.qkv_bias);
      linear(p + ".mlp.gate_up_proj", 2 * c.intermediate_size, c.hidden_size, c.mlp_bias);
      linear(p + ".mlp.down_proj", c.hidden_size, c.intermediate_size, c.mlp_bias);
      out.push_back({p + ".input_layernorm.weight", {c.hidden_size}});
      out.push_back({p + ".post_attention_layernorm.weight", {c.hidden_size}});
      continue;
    }
    linear(p + ".self_attn.q_proj", c.q_size(), c.hidden_size, c.qkv_bias);
    linear(p + ".self_attn.k_proj", c.kv_size(), c.hidden_size, c.qkv_bias);
    linear(p + ".self_attn.v_proj", c.kv_size(), c.hidden_size, c.qkv_bias);
    linear(p + ".self_attn.o_proj", c.hidden_size, c.q_size(), c.o_proj_bias);
    if (c.qk_norm) {
      out.push_back({p + ".self_attn.q_norm.weight", {c.head_dim}});
      out.push_back({p + ".self_attn.k_norm.weight", {c.head_dim}});
    }
    linear(p + ".mlp.gate_proj", c.intermediate_size, c.hidden_size, c.mlp_bias);
    linear(p + ".mlp.up_proj", c.intermediate_size, c.hidden_size, c.mlp_bias);
    linear(p + ".mlp.down_proj", c.hidden_size, c.intermediate_size, c.mlp_bias);
    out.push_back({p + ".input_layernorm.weight", {c.hidden_size}});
    out.push_back({p + ".post_attention_layernorm.weight", {c.hidden_size}});
    if (c.gemma_norms) {
      out.push_back({p + ".pre_feedforward_layernorm.weight", {c.hidden_size}});
      out.push_back({p + ".post_feedforward_layernorm.weight", {c.hidden_size}});
    }
  }
  out.push_back({"model.norm.weight", {c.hidden_size}});
  if (!c.tie_word_embeddings) out.push_back({"lm_head.weight", {c.vocab_size, c.hidden_size}});
  return out;
}

}  // namespace fjord::model

#include "daemon/server/base_memory.h"

#include <algorithm>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "daemon/protocol/errors.h"

namespace fjord::daemon {
namespace {

constexpr double kGB = 1e9;
// nf4: 4 bits per weight, an 8-bit absmax per 64 weights, an fp32 scale per
// 256 absmaxes (bitsandbytes' double quantization).
constexpr double kNf4BytesPerWeight = 0.5 + 1.0 / 64 + 4.0 / (64 * 256);
// A checkpoint stored in 4 bits, sharded: its rows as stored, with each
// block's absmax in fp32 (double quantization undone).
constexpr double kNf4StoredShardBytesPerWeight = 0.5 + 4.0 / 64;
// What a sharded nf4 layer's gather moves and holds per weight: the 4-bit
// index and the block's fp32 absmax.
constexpr double kNf4GatheredBytesPerWeight = 0.5 + 4.0 / 64;

// 8030261248 -> "8,030,261,248".
std::string WithCommas(int64_t n) {
  const std::string digits = absl::StrCat(n < 0 ? -n : n);
  std::string out = n < 0 ? "-" : "";
  for (size_t i = 0; i < digits.size(); ++i) {
    if (i > 0 && (digits.size() - i) % 3 == 0) out += ',';
    out += digits[i];
  }
  return out;
}

std::string Gb(double bytes) { return absl::StrFormat("%.1f GB", bytes / kGB); }

// As an operator writes it: 80, 14.4.
std::string Plain(double v) { return absl::StrFormat("%g", v); }

std::string Parameters(int64_t n) {
  if (n >= 1000000000) return absl::StrFormat("%.1f B parameters", n / 1e9);
  return absl::StrFormat("%.0f M parameters", n / 1e6);
}

}  // namespace

double FrozenBaseBytes(const model::ModelConfig::ParameterCount& count, bool nf4) {
  if (!nf4) return 2.0 * static_cast<double>(count.total());
  return kNf4BytesPerWeight * static_cast<double>(count.decoder_linear) +
         2.0 * static_cast<double>(count.other);
}

namespace {

// The linear weights of one decoder layer (they are all alike).
int64_t LayerLinearParameters(const model::ModelConfig& config,
                              const model::ModelConfig::ParameterCount& count) {
  return config.num_hidden_layers > 0 ? count.decoder_linear / config.num_hidden_layers : 0;
}

}  // namespace

ShardedBaseBytes ShardedFrozenBaseBytes(const model::ModelConfig& config, int ranks, bool nf4,
                                        bool stored_4bit) {
  const model::ModelConfig::ParameterCount count = config.CountParameters();
  const int64_t n = ranks > 0 ? ranks : 1;
  auto per_rank = [n](int64_t v) { return static_cast<double>((v + n - 1) / n); };
  ShardedBaseBytes b;
  const double layer = static_cast<double>(LayerLinearParameters(config, count));
  if (nf4) {
    b.held = (stored_4bit ? kNf4StoredShardBytesPerWeight : kNf4BytesPerWeight) *
                 per_rank(count.decoder_linear) +
             2.0 * per_rank(count.other);
    b.layer = (2.0 + kNf4GatheredBytesPerWeight) * layer;
  } else {
    b.held = 2.0 * per_rank(count.total());
    b.layer = 2.0 * layer;
  }
  b.lm_head = 2.0 * per_rank(config.vocab_size) * static_cast<double>(config.hidden_size);
  return b;
}

namespace {

// The sharded arithmetic, as the refusal shows it.
std::string ShardedArithmetic(const model::ModelConfig& config, int ranks, bool nf4,
                              bool stored_4bit) {
  const model::ModelConfig::ParameterCount count = config.CountParameters();
  const ShardedBaseBytes b = ShardedFrozenBaseBytes(config, ranks, nf4, stored_4bit);
  const std::string lm_head =
      absl::StrCat("2 B x ", WithCommas(config.vocab_size), " / ", ranks, " x ",
                   WithCommas(config.hidden_size), " = ", Gb(b.lm_head),
                   " for two pieces of lm_head, gathered 1/", 2 * ranks, " at a time for the loss");
  const int64_t layer = LayerLinearParameters(config, count);
  const std::string tail = "; norms and biases are held whole, too small to count";
  if (!nf4) {
    return absl::StrCat("2 B x ", WithCommas(count.total()), " / ", ranks, " = ", Gb(b.held),
                        " held + ", lm_head, " + 2 B x ", WithCommas(layer), " = ", Gb(b.layer),
                        " for one decoder layer's linear weights, gathered as it runs", tail);
  }
  const double per_weight = stored_4bit ? kNf4StoredShardBytesPerWeight : kNf4BytesPerWeight;
  return absl::StrCat(
      absl::StrFormat("%.4f", per_weight), " B x ", WithCommas(count.decoder_linear), " / ", ranks,
      " decoder linear weights + 2 B x ", WithCommas(count.other), " / ", ranks,
      " others = ", Gb(b.held), " held + ", lm_head, " + ",
      absl::StrFormat("%.4f", 2 + kNf4GatheredBytesPerWeight), " B x ", WithCommas(layer), " = ",
      Gb(b.layer),
      " for one decoder layer's linear weights, gathered in 4 bits and dequantized to bf16 as it "
      "runs",
      tail);
}

// Can a checkpoint stored in bitsandbytes 4-bit be sharded by rows? Each
// row of every decoder linear weight must end on a block of 64 (its rows
// are sliced as stored).
bool RowsEndOnBlocks(const model::ModelConfig& c) {
  for (int64_t in : {c.hidden_size, c.q_size(), c.intermediate_size}) {
    if (in % 64 != 0) return false;
  }
  return true;
}

}  // namespace

absl::Status CheckBaseFitsOnGpu(absl::string_view model_name, const model::ModelConfig& config,
                                absl::string_view quantization, bool shard_base, int gpus,
                                int node_gpus, double gpu_memory_gb) {
  const bool stored_4bit = config.quantization == "bitsandbytes-nf4";
  const bool shardable = !stored_4bit || RowsEndOnBlocks(config);
  if (!shardable && shard_base && gpus > 1) {
    return protocol::InvalidArgument(
        absl::StrCat("model '", model_name,
                     "' is stored in bitsandbytes 4-bit (nf4) with rows that do not end on a "
                     "block of 64 weights (hidden_size ",
                     config.hidden_size, ", intermediate_size ", config.intermediate_size,
                     "), so its base cannot be sharded across the job's GPUs: leave shard_base "
                     "out"),
        "shard_base");
  }
  if (!(gpu_memory_gb > 0)) return absl::OkStatus();  // unknown: no check
  const model::ModelConfig::ParameterCount count = config.CountParameters();
  const bool nf4 = stored_4bit || quantization == "nf4";
  const double usable = kBaseMemoryFraction * gpu_memory_gb * kGB;
  const std::string room =
      absl::StrCat("; this node's GPUs have ", Plain(gpu_memory_gb), " GB each (",
                   Plain(usable / kGB), " GB usable after ", Plain(100 * (1 - kBaseMemoryFraction)),
                   "% for the CUDA context, activations and the adapter)");
  auto sharded_total = [&](int k, bool in_nf4) {
    return ShardedFrozenBaseBytes(config, k, in_nf4, stored_4bit).total();
  };
  // The fewest GPUs, from `from` up to the node's, over which the base
  // sharded (in nf4 when `in_nf4`) fits; 0 when none.
  auto fewest_sharded = [&](int from, bool in_nf4) {
    if (!shardable) return 0;
    for (int k = std::max(from, 2); k <= node_gpus; ++k) {
      if (sharded_total(k, in_nf4) <= usable) return k;
    }
    return 0;
  };
  auto over = [&](int k) {
    return k == gpus ? absl::StrCat("the job's ", k, " GPUs")
                     : absl::StrCat(k, " GPUs (gpus: ", k, ")");
  };
  // "with shard_base over ... it needs X on each", in bf16 or nf4; `also_nf4`
  // says the job must ask for nf4 as well.
  auto with_sharding = [&](int k, bool in_nf4, bool also_nf4) {
    return absl::StrCat("with ", also_nf4 ? "quantization: nf4 and " : "", "shard_base over ",
                        over(k), " it needs ", Gb(sharded_total(k, in_nf4)), " on each");
  };
  const double needed_nf4 = FrozenBaseBytes(count, /*nf4=*/true);
  const std::string choose = ": choose a smaller model or a node with larger GPUs";

  if (shard_base && gpus > 1) {
    const double total = sharded_total(gpus, nf4);
    if (total <= usable) return absl::OkStatus();
    std::string message = absl::StrCat(
        "model '", model_name, "' (", Parameters(count.total()), ") needs ", Gb(total),
        " on each GPU for its frozen base in ", nf4 ? "nf4" : "bf16", " sharded over the job's ",
        gpus, " GPUs (", ShardedArithmetic(config, gpus, nf4, stored_4bit), ")", room);
    if (const int k = fewest_sharded(gpus + 1, nf4); k > 0) {
      absl::StrAppend(&message, "; with shard_base over ", over(k), " it needs ",
                      Gb(sharded_total(k, nf4)), " on each");
      return protocol::InvalidArgument(message, "gpus");
    }
    absl::StrAppend(&message, "; it does not fit even sharded over all of this node's ", node_gpus,
                    " GPUs");
    if (nf4) {
      absl::StrAppend(&message, choose);
      return protocol::InvalidArgument(message, "model");
    }
    if (needed_nf4 <= usable) {
      absl::StrAppend(&message, "; with quantization: nf4 instead of shard_base it needs ",
                      Gb(needed_nf4));
      return protocol::InvalidArgument(message, "quantization");
    }
    if (const int k = fewest_sharded(gpus, true); k > 0) {
      absl::StrAppend(&message, "; ", with_sharding(k, true, true));
      return protocol::InvalidArgument(message, "quantization");
    }
    absl::StrAppend(&message, ", nor in nf4 (", Gb(needed_nf4), ", or ",
                    Gb(sharded_total(std::max(node_gpus, 2), true)), " on each sharded over them)",
                    choose);
    return protocol::InvalidArgument(message, "model");
  }

  const double needed = FrozenBaseBytes(count, nf4);
  if (needed <= usable) return absl::OkStatus();
  std::string message = absl::StrCat("model '", model_name, "' (", Parameters(count.total()),
                                     ") needs ", Gb(needed), " for its frozen base ");
  if (nf4) {
    absl::StrAppend(&message, "in nf4",
                    stored_4bit ? " (its checkpoint is stored in bitsandbytes 4-bit)" : "",
                    " alone (", absl::StrFormat("%.4f", kNf4BytesPerWeight), " B x ",
                    WithCommas(count.decoder_linear), " decoder linear weights + 2 B x ",
                    WithCommas(count.other), " others)");
  } else {
    absl::StrAppend(&message, "in bf16 alone (2 B x ", WithCommas(count.total()), ")");
  }
  absl::StrAppend(&message, room);
  if (gpus > 1) {
    absl::StrAppend(&message, ", and each of the job's ", gpus,
                    " GPUs holds the whole base (data parallel)");
  } else if (shard_base) {
    absl::StrAppend(&message, ", and shard_base has no effect with one GPU");
  }
  // Not enough room in nf4: sharding it is what remains.
  if (nf4) {
    absl::StrAppend(&message, "; it does not fit even in nf4");
    if (const int k = fewest_sharded(gpus, true); k > 0) {
      absl::StrAppend(&message, "; ", with_sharding(k, true, false));
      return protocol::InvalidArgument(message, "shard_base");
    }
    if (node_gpus >= 2 && shardable) {
      absl::StrAppend(&message, " (nor sharded over all of this node's ", node_gpus,
                      " GPUs: ", Gb(sharded_total(node_gpus, true)), " on each)");
    }
    absl::StrAppend(&message, choose);
    return protocol::InvalidArgument(message, "model");
  }
  const int k = fewest_sharded(gpus, false);  // a bf16 base sharded over the job's GPUs, or more
  if (needed_nf4 <= usable) {
    absl::StrAppend(&message, "; with quantization: nf4 it needs ", Gb(needed_nf4));
    if (k > 0) absl::StrAppend(&message, "; ", with_sharding(k, false, false));
    return protocol::InvalidArgument(message, "quantization");
  }
  absl::StrAppend(&message, "; even with quantization: nf4 it needs ", Gb(needed_nf4),
                  ", which does not fit either");
  if (k > 0) {
    absl::StrAppend(&message, "; ", with_sharding(k, false, false));
    return protocol::InvalidArgument(message, "shard_base");
  }
  if (const int k4 = fewest_sharded(gpus, true); k4 > 0) {
    absl::StrAppend(&message, "; ", with_sharding(k4, true, true));
    return protocol::InvalidArgument(message, "shard_base");
  }
  if (node_gpus >= 2) {
    absl::StrAppend(&message, " (nor does shard_base over all of this node's ", node_gpus,
                    " GPUs: ", Gb(sharded_total(node_gpus, false)), " on each in bf16, ",
                    Gb(sharded_total(node_gpus, true)), " in nf4)");
  }
  absl::StrAppend(&message, choose);
  return protocol::InvalidArgument(message, "model");
}

}  // namespace fjord::daemon

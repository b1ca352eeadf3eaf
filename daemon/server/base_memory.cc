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

ShardedBaseBytes ShardedFrozenBaseBytes(const model::ModelConfig& config, int ranks) {
  const model::ModelConfig::ParameterCount count = config.CountParameters();
  const int64_t n = ranks > 0 ? ranks : 1;
  ShardedBaseBytes b;
  b.held = 2.0 * static_cast<double>((count.total() + n - 1) / n);
  b.lm_head = 2.0 * static_cast<double>(((config.vocab_size + n - 1) / n) * config.hidden_size);
  b.layer = 2.0 * static_cast<double>(LayerLinearParameters(config, count));
  return b;
}

absl::Status CheckBaseFitsOnGpu(absl::string_view model_name, const model::ModelConfig& config,
                                absl::string_view quantization, bool shard_base, int gpus,
                                int node_gpus, double gpu_memory_gb) {
  const bool stored_4bit = config.quantization == "bitsandbytes-nf4";
  if (stored_4bit && shard_base && gpus > 1) {
    return protocol::InvalidArgument(
        absl::StrCat("model '", model_name,
                     "' is stored in bitsandbytes 4-bit (nf4), and a base sharded across the "
                     "job's GPUs cannot be held in 4 bits as well (yet): leave shard_base out"),
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
  // The fewest GPUs, from `from` up to the node's, over which a bf16 base
  // sharded fits; 0 when none (or the checkpoint cannot be sharded).
  auto fewest_sharded = [&](int from) {
    if (stored_4bit) return 0;
    for (int k = std::max(from, 2); k <= node_gpus; ++k) {
      if (ShardedFrozenBaseBytes(config, k).total() <= usable) return k;
    }
    return 0;
  };
  auto with_sharding = [&](int k) {
    return absl::StrCat("with shard_base over ",
                        k == gpus ? absl::StrCat("the job's ", k, " GPUs")
                                  : absl::StrCat(k, " GPUs (gpus: ", k, ")"),
                        " it needs ", Gb(ShardedFrozenBaseBytes(config, k).total()), " on each");
  };
  const double needed_nf4 = FrozenBaseBytes(count, /*nf4=*/true);
  const std::string choose = ": choose a smaller model or a node with larger GPUs";

  if (shard_base && gpus > 1 && !nf4) {
    const ShardedBaseBytes b = ShardedFrozenBaseBytes(config, gpus);
    if (b.total() <= usable) return absl::OkStatus();
    std::string message = absl::StrCat(
        "model '", model_name, "' (", Parameters(count.total()), ") needs ", Gb(b.total()),
        " on each GPU for its frozen base in bf16 sharded over the job's ", gpus, " GPUs (2 B x ",
        WithCommas(count.total()), " / ", gpus, " = ", Gb(b.held), " held + 2 B x ",
        WithCommas(config.vocab_size), " / ", gpus, " x ", WithCommas(config.hidden_size), " = ",
        Gb(b.lm_head), " for two pieces of lm_head, gathered 1/", 2 * gpus,
        " at a time for the loss + 2 B x ", WithCommas(LayerLinearParameters(config, count)), " = ",
        Gb(b.layer),
        " for one decoder layer's linear weights, gathered as it runs; norms and biases are held "
        "whole, too small to count)",
        room);
    if (const int k = fewest_sharded(gpus + 1); k > 0) {
      absl::StrAppend(&message, "; ", with_sharding(k));
      return protocol::InvalidArgument(message, "gpus");
    }
    absl::StrAppend(&message, "; it does not fit even sharded over all of this node's ", node_gpus,
                    " GPUs");
    if (needed_nf4 <= usable) {
      absl::StrAppend(&message, "; with quantization: nf4 instead of shard_base it needs ",
                      Gb(needed_nf4));
      return protocol::InvalidArgument(message, "quantization");
    }
    absl::StrAppend(&message, ", nor in nf4 (", Gb(needed_nf4), ")", choose);
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
  const int k = fewest_sharded(gpus);  // a bf16 base sharded over the job's GPUs, or more
  if (nf4) {
    absl::StrAppend(&message, "; it does not fit even in nf4");
    if (k > 0) {
      absl::StrAppend(&message, "; in bf16 ", with_sharding(k), " (instead of quantization: nf4)");
      return protocol::InvalidArgument(message, "shard_base");
    }
    absl::StrAppend(&message, choose);
    return protocol::InvalidArgument(message, "model");
  }
  if (needed_nf4 <= usable) {
    absl::StrAppend(&message, "; with quantization: nf4 it needs ", Gb(needed_nf4));
    if (k > 0) absl::StrAppend(&message, "; ", with_sharding(k));
    return protocol::InvalidArgument(message, "quantization");
  }
  absl::StrAppend(&message, "; even with quantization: nf4 it needs ", Gb(needed_nf4),
                  ", which does not fit either");
  if (k > 0) {
    absl::StrAppend(&message, "; ", with_sharding(k));
    return protocol::InvalidArgument(message, "shard_base");
  }
  if (node_gpus >= 2 && !stored_4bit) {
    absl::StrAppend(&message, " (nor does shard_base over all of this node's ", node_gpus,
                    " GPUs: ", Gb(ShardedFrozenBaseBytes(config, node_gpus).total()), " on each)");
  }
  absl::StrAppend(&message, choose);
  return protocol::InvalidArgument(message, "model");
}

}  // namespace fjord::daemon

#include "runtime/model/generation.h"

#include <ATen/CPUGeneratorImpl.h>
#include <torch/types.h>
#include <torch/utils.h>

#include <algorithm>
#include <chrono>

#include "absl/strings/str_cat.h"
#include "runtime/util/torch_status.h"

namespace fjord::model {

using torch::Tensor;

std::vector<int64_t> ChooseNext(const Tensor& logits, const GenerationOptions& options,
                                at::Generator& gen) {
  Tensor l = logits.to(torch::kCPU).to(torch::kFloat32);  // (B, V)
  if (options.temperature <= 0.0) {
    Tensor best = l.argmax(-1);  // the first maximum: the lowest id on ties
    return std::vector<int64_t>(best.data_ptr<int64_t>(), best.data_ptr<int64_t>() + best.numel());
  }
  l = l / options.temperature;
  const int64_t v = l.size(1);
  if (options.top_k > 0 && options.top_k < v) {
    // Below the k-th largest: out.
    Tensor kth = std::get<0>(l.topk(options.top_k, -1)).narrow(1, options.top_k - 1, 1);  // (B, 1)
    l = l.masked_fill(l < kth, -std::numeric_limits<float>::infinity());
  }
  if (options.top_p < 1.0) {
    // Keep the most likely tokens until their probability reaches top_p (the
    // token that crosses it included, and always at least one).
    auto [sorted, order] = l.sort(-1, /*descending=*/true);  // (B, V)
    Tensor probs = sorted.softmax(-1);
    Tensor before = probs.cumsum(-1) - probs;  // mass of the tokens ranked above
    Tensor drop_sorted = before >= options.top_p;
    Tensor drop = torch::zeros_like(drop_sorted).scatter(1, order, drop_sorted);
    l = l.masked_fill(drop, -std::numeric_limits<float>::infinity());
  }
  Tensor next = l.softmax(-1).multinomial(1, /*replacement=*/false, gen).view({-1});  // (B)
  return std::vector<int64_t>(next.data_ptr<int64_t>(), next.data_ptr<int64_t>() + next.numel());
}

absl::StatusOr<std::vector<Generated>> Generate(CausalLM& model,
                                                const std::vector<std::vector<int32_t>>& prompts,
                                                const GenerationOptions& options) {
  if (options.temperature < 0.0) {
    return absl::InvalidArgumentError(
        absl::StrCat("generation: temperature must be >= 0, got ", options.temperature));
  }
  if (!(options.top_p > 0.0 && options.top_p <= 1.0)) {
    return absl::InvalidArgumentError(
        absl::StrCat("generation: top_p must be in (0, 1], got ", options.top_p));
  }
  if (options.top_k < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("generation: top_k must be >= 0, got ", options.top_k));
  }
  if (!options.stop_strings.empty() && !options.decode) {
    return absl::InvalidArgumentError("generation: stop strings need a decode function");
  }
  const int64_t vocab = model.config().vocab_size;
  int64_t longest = 0;
  for (size_t r = 0; r < prompts.size(); ++r) {
    if (prompts[r].empty()) {
      return absl::InvalidArgumentError(absl::StrCat("generation: prompt ", r, " is empty"));
    }
    for (int32_t id : prompts[r]) {
      if (id < 0 || id >= vocab) {
        return absl::InvalidArgumentError(
            absl::StrCat("generation: prompt ", r, " has token ", id, ", not in [0, ", vocab, ")"));
      }
    }
    longest = std::max<int64_t>(longest, static_cast<int64_t>(prompts[r].size()));
  }
  std::vector<Generated> out(prompts.size());
  if (prompts.empty() || options.max_new_tokens <= 0) {
    for (Generated& g : out) g.finish_reason = "length";
    return out;
  }
  return TorchCall("generate", [&]() {
    torch::NoGradGuard no_grad;
    const int64_t b = static_cast<int64_t>(prompts.size());
    const torch::Device device = model.device();
    // Left-padded prompts: (B, L) ids, positions from 0 at each first token.
    Tensor ids = torch::zeros({b, longest}, torch::kInt64);
    Tensor pos = torch::zeros({b, longest}, torch::kInt64);
    Tensor valid = torch::zeros({b, longest}, torch::kBool);
    std::vector<int64_t> next_pos(static_cast<size_t>(b));
    for (int64_t r = 0; r < b; ++r) {
      const auto& p = prompts[static_cast<size_t>(r)];
      const int64_t n = static_cast<int64_t>(p.size()), pad = longest - n;
      for (int64_t j = 0; j < n; ++j) {
        ids[r][pad + j] = p[static_cast<size_t>(j)];
        pos[r][pad + j] = j;
        valid[r][pad + j] = true;
      }
      next_pos[static_cast<size_t>(r)] = n;
    }
    const auto t0 = std::chrono::steady_clock::now();
    auto since = [](std::chrono::steady_clock::time_point t) {
      return std::chrono::duration<double>(std::chrono::steady_clock::now() - t).count();
    };
    auto decode_t0 = t0;
    KvCache cache;
    Tensor hidden = model.HiddenWithCache(ids.to(device), pos.to(device), cache,
                                          valid.to(device));                    // (B, L, C)
    Tensor logits = model.Logits(hidden.narrow(1, longest - 1, 1)).squeeze(1);  // (B, V)

    at::Generator gen = at::make_generator<at::CPUGeneratorImpl>(options.seed);
    std::vector<bool> done(static_cast<size_t>(b), false);
    int64_t remaining = b;
    for (int64_t step = 0; step < options.max_new_tokens && remaining > 0; ++step) {
      std::vector<int64_t> next = ChooseNext(logits, options, gen);
      if (options.stats != nullptr && step == 0) {
        options.stats->prefill_s += since(t0);
        for (const auto& p : prompts)
          options.stats->prefill_tokens += static_cast<int64_t>(p.size());
        decode_t0 = std::chrono::steady_clock::now();
      }
      if (const auto& group = model.shard_group(); group != nullptr) {
        // A sharded base: every rank must make the same forwards, so rank 0's
        // tokens decide for all.
        Tensor mine = torch::tensor(next, torch::kInt64);
        Tensor all = group->AllGather(mine);
        for (int64_t r = 0; r < b; ++r) next[static_cast<size_t>(r)] = all[r].item<int64_t>();
      }
      Tensor step_ids = torch::zeros({b, 1}, torch::kInt64);
      Tensor step_pos = torch::zeros({b, 1}, torch::kInt64);
      Tensor step_valid = torch::zeros({b, 1}, torch::kBool);
      for (int64_t r = 0; r < b; ++r) {
        const size_t ri = static_cast<size_t>(r);
        if (done[ri]) continue;
        const int32_t token = static_cast<int32_t>(next[ri]);
        Generated& g = out[ri];
        if (std::find(options.stop_ids.begin(), options.stop_ids.end(), token) !=
            options.stop_ids.end()) {
          g.finish_reason = "stop_token";
          done[ri] = true;
          --remaining;
          continue;
        }
        g.ids.push_back(token);
        if (!options.stop_strings.empty()) {
          const std::string text = options.decode(g.ids);
          for (const std::string& stop : options.stop_strings) {
            if (!stop.empty() && text.find(stop) != std::string::npos) {
              g.finish_reason = "stop_string";
              done[ri] = true;
            }
          }
          if (done[ri]) {
            --remaining;
            continue;
          }
        }
        step_ids[r][0] = token;
        step_pos[r][0] = next_pos[ri]++;
        step_valid[r][0] = true;
      }
      if (remaining == 0 || step + 1 == options.max_new_tokens) break;
      hidden = model.HiddenWithCache(step_ids.to(device), step_pos.to(device), cache,
                                     step_valid.to(device));  // (B, 1, C)
      logits = model.Logits(hidden).squeeze(1);               // (B, V)
      if (options.stats != nullptr) options.stats->decode_tokens += remaining;
    }
    if (options.stats != nullptr) {
      options.stats->decode_s += since(decode_t0);
    }
    for (Generated& g : out) {
      if (g.finish_reason.empty()) g.finish_reason = "length";
    }
    return out;
  });
}

}  // namespace fjord::model

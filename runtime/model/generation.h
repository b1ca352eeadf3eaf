// Batched text generation with a key/value cache: greedy or sampled
// (temperature, top-k, top-p, seeded), stop tokens and stop strings, prompts
// of different lengths left-padded into one batch.
//
//   model::GenerationOptions opt;
//   opt.max_new_tokens = 64;
//   opt.stop_ids = {eos};
//   FJORD_ASSIGN_OR_RETURN(std::vector<model::Generated> out,
//                          model::Generate(*lm, {prompt_a, prompt_b}, opt));
//
// How it runs: one prefill of the left-padded prompts (positions start at 0
// at each prompt's first token; padding is never attended to), then one
// token per row per step through CausalLM::HiddenWithCache. A finished row
// keeps stepping with masked-out padding until every row has finished.
// The same ids come out as from re-running the whole sequence every step
// (tested), and greedy ids equal transformers' generate (tests/interop).
//
// Shape legend: B rows, L longest prompt, V vocab.
#ifndef FJORD_RUNTIME_MODEL_GENERATION_H_
#define FJORD_RUNTIME_MODEL_GENERATION_H_

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "runtime/model/model.h"

namespace fjord::model {

// Where Generate's time goes, accumulated over calls (CPU clock; on CUDA the
// choice of each token waits for its logits, so the phases are measured to
// their end).
struct GenerationStats {
  double prefill_s = 0;        // the prompts' forward, to the first tokens chosen
  double decode_s = 0;         // every later step
  int64_t prefill_tokens = 0;  // prompt tokens (padding not counted)
  int64_t decode_tokens = 0;   // tokens fed through the decode steps
};

struct GenerationOptions {
  int64_t max_new_tokens = 128;  // default 128; 0 generates nothing
  // 0 (default): greedy, the most likely token (ties: the lowest id).
  // Else logits / temperature are sampled, after top_k and top_p.
  double temperature = 0.0;
  int64_t top_k = 0;   // default 0: off; else only the k most likely tokens
  double top_p = 1.0;  // default 1: off; else the smallest set of tokens whose
                       // probability reaches top_p (nucleus sampling)
  uint64_t seed = 0;   // the sampling generator's seed (a CPU generator)
  // A row ends at any of these tokens (not included in its ids).
  std::vector<int32_t> stop_ids;
  // A row ends once its decoded text contains one of these (the ids that
  // completed it are kept, as transformers' stop_strings does). Needs decode.
  std::vector<std::string> stop_strings;
  std::function<std::string(const std::vector<int32_t>&)> decode;
  GenerationStats* stats = nullptr;  // when set, Generate adds its timings
};

struct Generated {
  std::vector<int32_t> ids;  // the new tokens, without the prompt
  // "stop_token", "stop_string" or "length" (max_new_tokens reached).
  std::string finish_reason;
};

// One result per prompt, in order. InvalidArgument for an empty prompt,
// ids out of the vocabulary, temperature < 0, top_p not in (0, 1], top_k <
// 0, or stop strings without decode. Runs under no_grad in the model's mode
// (call eval() first: dropout would otherwise apply). With a sharded base
// every rank must call it with the same prompts; rank 0's tokens are
// everyone's.
absl::StatusOr<std::vector<Generated>> Generate(CausalLM& model,
                                                const std::vector<std::vector<int32_t>>& prompts,
                                                const GenerationOptions& options);

// The next token of each row of `logits` (B, V) fp32 under `options`
// (greedy, or sampled with `gen`). For tests.
std::vector<int64_t> ChooseNext(const torch::Tensor& logits, const GenerationOptions& options,
                                at::Generator& gen);

}  // namespace fjord::model

#endif  // FJORD_RUNTIME_MODEL_GENERATION_H_

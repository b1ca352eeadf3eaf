// Greedy generation and the held-out answer-accuracy check.
#ifndef FJORD_RUNTIME_TRAIN_GENERATE_H_
#define FJORD_RUNTIME_TRAIN_GENERATE_H_

#include <torch/types.h>

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "runtime/model/model.h"
#include "runtime/tokenizer/tokenizer.h"

namespace fjord::train {

// Token ids of a one-turn chat prompt ending with the assistant header, in
// `chat_template` ("auto", "model", "llama3", "chatml", "none"; resolved
// against the model folder `model_dir` as runtime/data/model_template.h says:
// auto prefers the model's own template, else picks from the tokenizer's
// special tokens), rendered by runtime/data's ExampleRenderer exactly as
// training examples are (for "none": BOS and the prompt; for the model's
// template: its add_generation_prompt rendering). An empty model_dir never
// reads the model's template. InvalidArgument for an unknown template name or
// a template error; FailedPrecondition when the template needs special tokens
// the tokenizer lacks, or "model" finds no template.
absl::StatusOr<std::vector<int32_t>> ChatPromptIds(const tokenizer::Tokenizer& tok,
                                                   const std::string& chat_template,
                                                   const std::string& user_message,
                                                   const std::string& model_dir = "");

// The ids of the end-of-turn and end-of-text tokens the tokenizer has
// (<|eot_id|>, <|end_of_text|>, <|im_end|>, <|endoftext|>, </s>,
// <end_of_turn>, <|end|>): where a reply stops.
std::vector<int32_t> EndOfTurnIds(const tokenizer::Tokenizer& tok);

// Greedy continuation of `prompt` (no sampling), at most max_new_tokens,
// stopping at an end-of-turn/end-of-text token (not included). With a
// sharded base every rank of its group must call it with the same prompt;
// rank 0's choice of each token is every rank's.
std::vector<int32_t> GreedyGenerate(CausalLM& model, const tokenizer::Tokenizer& tok,
                                    const std::vector<int32_t>& prompt, int64_t max_new_tokens,
                                    const torch::Device& device);

// Fraction of the questions of `path` (JSONL of {"prompt": ..., "answer": ...};
// runtime/data/heldout.h) whose greedy reply to the prompt contains the
// answer. The file is checked whole first: InvalidArgument naming the file,
// the line and the field for a malformed line (no question is asked then),
// NotFound when it cannot be opened.
// The questions i with i % shards == shard (data-parallel ranks share them
// out): how many were asked and how many replies contained the answer.
struct HeldoutCounts {
  int64_t asked = 0;
  int64_t right = 0;
};
// `model_dir` as for ChatPromptIds.
absl::StatusOr<HeldoutCounts> HeldoutShard(CausalLM& model, const tokenizer::Tokenizer& tok,
                                           const std::string& path,
                                           const std::string& chat_template, int64_t max_new_tokens,
                                           const torch::Device& device, int shard, int shards,
                                           const std::string& model_dir = "");

absl::StatusOr<double> HeldoutAccuracy(CausalLM& model, const tokenizer::Tokenizer& tok,
                                       const std::string& path, const std::string& chat_template,
                                       int64_t max_new_tokens, const torch::Device& device,
                                       const std::string& model_dir = "");

}  // namespace fjord::train

#endif  // FJORD_RUNTIME_TRAIN_GENERATE_H_

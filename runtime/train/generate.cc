#include "runtime/train/generate.h"

#include <torch/utils.h>

#include "absl/strings/str_cat.h"
#include "runtime/data/chat_template.h"
#include "runtime/data/heldout.h"
#include "runtime/data/model_template.h"
#include "runtime/data/tokenizer_adapter.h"
#include "runtime/model/generation.h"
#include "runtime/util/status_macros.h"

namespace fjord::train {
absl::StatusOr<std::vector<int32_t>> ChatPromptIds(const tokenizer::Tokenizer& tok,
                                                   const std::string& chat_template,
                                                   const std::string& user_message,
                                                   const std::string& model_dir) {
  // The training data's own renderer, so that prompts are tokenized exactly
  // as the examples were: a user turn and an empty assistant turn, cut
  // before the first trained token (the assistant's content).
  data::TokenizerAdapter adapter(tok);
  data::RenderOptions options;
  if (model_dir.empty()) {
    FJORD_ASSIGN_OR_RETURN(options.chat_template, data::ParseChatTemplate(chat_template));
  } else {
    FJORD_RETURN_IF_ERROR(data::ResolveChatTemplate(chat_template, model_dir, &options));
  }
  FJORD_ASSIGN_OR_RETURN(data::ExampleRenderer renderer,
                         data::ExampleRenderer::Create(adapter, options));
  if (renderer.chat_template() == data::ChatTemplate::kModel) {
    return renderer.GenerationPromptIds(user_message);
  }
  data::Record record;
  if (renderer.chat_template() == data::ChatTemplate::kNone) {
    record.format = data::Format::kPromptCompletion;
    record.prompt = user_message;
  } else {
    record.format = data::Format::kChat;
    record.messages = {{data::Role::kUser, user_message, -1}, {data::Role::kAssistant, "", -1}};
  }
  FJORD_ASSIGN_OR_RETURN(data::RenderedTokens rendered, renderer.Render(record));
  std::vector<int32_t> ids;
  for (size_t i = 0; i < rendered.ids.size() && !rendered.trained[i]; ++i)
    ids.push_back(rendered.ids[i]);
  return ids;
}

std::vector<int32_t> EndOfTurnIds(const tokenizer::Tokenizer& tok) {
  std::vector<int32_t> ids;
  for (const char* s : {"<|eot_id|>", "<|end_of_text|>", "<|im_end|>", "<|endoftext|>", "</s>",
                        "<end_of_turn>", "<|end|>"}) {
    if (std::optional<int32_t> id = tok.TokenToId(s)) ids.push_back(*id);
  }
  return ids;
}

std::vector<int32_t> GreedyGenerate(CausalLM& model, const tokenizer::Tokenizer& tok,
                                    const std::vector<int32_t>& prompt, int64_t max_new_tokens,
                                    const torch::Device& device) {
  (void)device;  // the model's own: model::Generate runs where the model is
  model::GenerationOptions options;
  options.max_new_tokens = max_new_tokens;
  options.stop_ids = EndOfTurnIds(tok);
  // Greedy on a KV cache (model/generation.h); a sharded base's ranks take
  // rank 0's tokens there.
  absl::StatusOr<std::vector<model::Generated>> out = model::Generate(model, {prompt}, options);
  TORCH_CHECK(out.ok(), "GreedyGenerate: ", out.status().ToString());
  return (*out)[0].ids;
}

absl::StatusOr<HeldoutCounts> HeldoutShard(CausalLM& model, const tokenizer::Tokenizer& tok,
                                           const std::string& path,
                                           const std::string& chat_template, int64_t max_new_tokens,
                                           const torch::Device& device, int shard, int shards,
                                           const std::string& model_dir) {
  // The whole file is checked before the first question is asked.
  FJORD_ASSIGN_OR_RETURN(data::HeldoutSet set, data::LoadHeldoutJsonl(path));
  HeldoutCounts counts;
  for (size_t i = 0; i < set.questions.size(); ++i) {
    if (static_cast<int>(i % static_cast<size_t>(shards)) != shard) continue;
    const data::HeldoutQuestion& q = set.questions[i];
    FJORD_ASSIGN_OR_RETURN(std::vector<int32_t> prompt,
                           ChatPromptIds(tok, chat_template, q.prompt, model_dir));
    const std::string reply =
        tok.Decode(GreedyGenerate(model, tok, prompt, max_new_tokens, device), true);
    if (reply.find(q.answer) != std::string::npos) ++counts.right;
    ++counts.asked;
  }
  return counts;
}

absl::StatusOr<double> HeldoutAccuracy(CausalLM& model, const tokenizer::Tokenizer& tok,
                                       const std::string& path, const std::string& chat_template,
                                       int64_t max_new_tokens, const torch::Device& device,
                                       const std::string& model_dir) {
  FJORD_ASSIGN_OR_RETURN(HeldoutCounts c, HeldoutShard(model, tok, path, chat_template,
                                                       max_new_tokens, device, 0, 1, model_dir));
  return static_cast<double>(c.right) / static_cast<double>(c.asked);
}

}  // namespace fjord::train

// Chat templates: turning a parsed Record into token ids and trained flags.
//
// Templates (the exact strings Hugging Face chat templates produce):
//   llama3  (Meta-Llama-3-*-Instruct):
//     <|begin_of_text|>{for each message:
//       <|start_header_id|>{role}<|end_header_id|>\n\n{content | trim}<|eot_id|>}
//     Content is stripped of leading/trailing whitespace like the HF template's
//     `trim`. Llama 3.1's template additionally injects a "Cutting Knowledge
//     Date" system message; fjord does not (set default_system_prompt to get a
//     system message).
//   chatml  (Qwen2 / Qwen2.5, generic ChatML):
//     {for each message: <|im_start|>{role}\n{content}<|im_end|>\n}
//     No default system prompt unless RenderOptions::default_system_prompt is
//     set; Qwen2's own template injects "You are a helpful assistant." — set
//     that string to reproduce it exactly.
//   none    (base models): [BOS] text [EOS] for the text format and
//     [BOS] prompt completion [EOS] (plain concatenation, no separator) for
//     prompt/completion; chat messages need a chat template. BOS is the
//     tokenizer's bos_id() if any; EOS is RenderOptions::eos_token, else the
//     first special token among <|end_of_text|>, <|endoftext|>, </s>, <eos>.
//   model   (the model's own Jinja template, RenderOptions::model_template,
//     found by model_template.h in the model folder): rendered with jinja.h
//     exactly as transformers' apply_chat_template(messages,
//     add_generation_prompt=False) renders it, with `messages` ({role,
//     content}), `bos_token` and `eos_token` (from tokenizer_config.json, when
//     set), `tools` and `documents` none, `enable_thinking` unset. Rendering
//     errors (a raise_exception of the template, e.g. Mistral's "roles must
//     alternate") are InvalidArgument naming the template file and line.
// With a chat template, prompt/completion renders as one user turn and one
// assistant turn, and the text format renders like `none`.
//
// Model templates: the rendered text is tokenized as HF does
// (DataTokenizer::EncodeWithSpecialTokens over the whole text: special tokens
// the template writes become those tokens, no BOS is added beyond what the
// template writes), except when message text itself spells a special token:
// then only the template's own text is split at special tokens and the rest
// is encoded as ordinary text (no injection; ids then differ from HF's).
// Labels come from provenance, not token patterns: the renderer knows which
// output bytes came from which message (jinja.h origins). A message's span is
// its bytes from the first to the last (content, reasoning, tool calls; not
// role or name), extended over the template text right after it up to and
// including the first end-of-turn special token (<|im_end|>, <end_of_turn>,
// <|end|>, </s>, <|eot_id|>, <|endoftext|>, <|end_of_text|>, <eos>, the
// model's eos_token) when only template text lies between. An assistant
// message's span is trained unless its weight is 0; train_on_inputs trains
// everything else too. A template with {% generation %} blocks (transformers'
// assistant-token markers) decides instead: what those blocks render is
// trained (as HF's return_assistant_tokens_mask), except a block holding text
// of a weight-0 message. A token is trained when its bytes overlap a trained
// span (a token straddling a span's edge is trained). When a template drops
// or rewrites earlier turns (Qwen3 strips <think> reasoning from assistant
// turns before the last user message), those turns are trained on what is
// rendered: dropped text is simply not there, and a turn rendering none of
// its message's text has no span.
//
// Special tokens are emitted by id, and content is encoded with
// DataTokenizer::EncodeOrdinary, so user text spelling "<|eot_id|>" stays
// ordinary text (HF's apply_chat_template would match it as the special token:
// the only intended difference from HF). Text between two special tokens is
// encoded as one piece, as HF does, so ids match HF for ordinary content.
//
// Labels: by default only assistant content and its end-of-turn token
// (<|eot_id|> / <|im_end|>) are trained, and for `none` the completion (or the
// whole text) and EOS. An assistant message with weight 0 is never trained.
// train_on_inputs trains every token except those of weight-0 assistant
// messages (the per-message weight wins). When the header text and the content
// share a BPE token across their boundary, that token counts as content.
#ifndef FJORD_RUNTIME_DATA_CHAT_TEMPLATE_H_
#define FJORD_RUNTIME_DATA_CHAT_TEMPLATE_H_

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "runtime/data/jinja.h"
#include "runtime/data/jsonl.h"
#include "runtime/data/tokenizer_view.h"

namespace fjord::data {

enum class ChatTemplate { kAuto, kLlama3, kChatML, kNone, kModel };

// "auto", "llama3", "chatml", "none", "model" <-> ChatTemplate. Parse returns
// InvalidArgument for any other name.
absl::StatusOr<ChatTemplate> ParseChatTemplate(absl::string_view name);
absl::string_view ChatTemplateName(ChatTemplate chat_template);

// A model's own chat template (model_template.h finds it).
struct ModelChatTemplate {
  std::string source;     // the Jinja source
  std::string file;       // where it came from, for messages ("DIR/chat_template.jinja")
  std::string bos_token;  // tokenizer_config.json's; empty: not given to the template
  std::string eos_token;  // tokenizer_config.json's; empty: not given to the template
};

struct RenderOptions {
  // kAuto (default): the model's template when model_template is set, else
  // llama3 when the tokenizer has <|start_header_id|>, else chatml when it has
  // <|im_start|>, else none. kModel needs model_template.
  ChatTemplate chat_template = ChatTemplate::kAuto;
  // Default unset. The model's own template, for kModel and kAuto.
  std::optional<ModelChatTemplate> model_template;
  // Default false: only assistant/completion tokens are trained.
  bool train_on_inputs = false;
  // Default empty: none. When set, chat renders a system message with this
  // content first unless the conversation already starts with one.
  std::string default_system_prompt;
  // Default empty: the first special token among <|end_of_text|>,
  // <|endoftext|>, </s>, <eos> (or no EOS). Used by the `none` rendering.
  std::string eos_token;
};

// A rendered example before labels: ids and whether each is trained.
struct RenderedTokens {
  std::vector<int32_t> ids;
  std::vector<bool> trained;
};

// Renders records with one tokenizer and one resolved template. Immutable
// after Create; const methods are thread-safe if the tokenizer's are.
class ExampleRenderer {
 public:
  // Resolves the template against `tokenizer`, which must outlive the
  // renderer. FailedPrecondition when an explicit template's special tokens
  // (or an explicit eos_token) are missing from the tokenizer, or kModel has
  // no model_template; InvalidArgument "FILE: line L, column C: ..." when the
  // model template does not parse.
  static absl::StatusOr<ExampleRenderer> Create(const DataTokenizer& tokenizer,
                                                RenderOptions options);

  // The resolved template (never kAuto).
  ChatTemplate chat_template() const { return template_; }

  // Tokenizes one record. InvalidArgument when the record cannot be rendered
  // with this template (chat messages with template none; a model template's
  // error, naming the template file and line).
  absl::StatusOr<RenderedTokens> Render(const Record& record) const;

  // kModel only: the ids of a one-turn prompt for generation, as HF's
  // apply_chat_template([{"role": "user", "content": user_message}],
  // add_generation_prompt=True, tokenize=True) gives them (with
  // default_system_prompt first when set). FailedPrecondition for other
  // templates; InvalidArgument as Render.
  absl::StatusOr<std::vector<int32_t>> GenerationPromptIds(absl::string_view user_message) const;

  // The ids of a prompt before its answer (preference data, preference.h):
  // with a chat template, `record` (kChat) followed by the start of an
  // assistant turn, as HF's apply_chat_template(messages,
  // add_generation_prompt=True, tokenize=True) gives them; with template
  // none, `record` (kPromptCompletion) as Render lays out its prompt:
  // [BOS] prompt. InvalidArgument for the other format, or as Render.
  absl::StatusOr<std::vector<int32_t>> PromptIds(const Record& record) const;

  // The rendered text as HF's apply_chat_template(tokenize=False) would give
  // it, special tokens spelled out. For debugging and interop tests.
  absl::StatusOr<std::string> RenderText(const Record& record) const;

 private:
  struct Piece {
    bool special = false;
    int32_t id = 0;    // special
    std::string text;  // special: its spelling; else the text
    bool trained = false;
  };

  ExampleRenderer(const DataTokenizer& tokenizer, RenderOptions options)
      : tokenizer_(&tokenizer), options_(std::move(options)) {}

  absl::StatusOr<std::vector<Piece>> Pieces(const Record& record) const;
  // Special pieces by id, runs of text pieces encoded together (EncodeTextRun).
  RenderedTokens EncodePieces(const std::vector<Piece>& pieces) const;
  // kModel, chat and prompt/completion records.
  absl::StatusOr<JinjaOutput> RenderModel(const Record& record, bool add_generation_prompt,
                                          std::vector<int>* message_weights) const;
  absl::StatusOr<RenderedTokens> RenderModelTokens(const Record& record,
                                                   bool add_generation_prompt) const;
  void AppendTurn(Role role, absl::string_view content, bool trained_content,
                  std::vector<Piece>& pieces) const;
  // Encodes consecutive text pieces [begin, end) as one string, assigning each
  // token to the piece it came from.
  void EncodeTextRun(const std::vector<Piece>& pieces, size_t begin, size_t end,
                     RenderedTokens& out) const;

  const DataTokenizer* tokenizer_;
  RenderOptions options_;
  ChatTemplate template_ = ChatTemplate::kNone;
  // Special tokens of the resolved template, in the order
  // llama3: begin_of_text, start_header, end_header, eot; chatml: im_start, im_end.
  std::vector<std::pair<std::string, int32_t>> specials_;
  std::optional<std::pair<std::string, int32_t>> bos_;
  std::optional<std::pair<std::string, int32_t>> eos_;
  std::optional<JinjaTemplate> jinja_;       // kModel
  std::vector<std::string> end_of_turn_;     // kModel: end-of-turn spellings the tokenizer has
  std::vector<std::string> special_tokens_;  // kModel: every special token's spelling
};

}  // namespace fjord::data

#endif  // FJORD_RUNTIME_DATA_CHAT_TEMPLATE_H_

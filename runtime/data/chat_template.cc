#include "runtime/data/chat_template.h"

#include <algorithm>
#include <string>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"
#include "runtime/util/status_macros.h"

namespace fjord::data {
namespace {

constexpr absl::string_view kBeginOfText = "<|begin_of_text|>";
constexpr absl::string_view kStartHeader = "<|start_header_id|>";
constexpr absl::string_view kEndHeader = "<|end_header_id|>";
constexpr absl::string_view kEotId = "<|eot_id|>";
constexpr absl::string_view kImStart = "<|im_start|>";
constexpr absl::string_view kImEnd = "<|im_end|>";
constexpr absl::string_view kEosCandidates[] = {"<|end_of_text|>", "<|endoftext|>", "</s>",
                                                "<eos>"};
// Special tokens that end a turn in the models' own templates.
constexpr absl::string_view kEndOfTurn[] = {
    "<|im_end|>", "<end_of_turn>", "<|end|>",         "</s>",
    "<|eot_id|>", "<|endoftext|>", "<|end_of_text|>", "<eos>"};

size_t CommonPrefix(const std::vector<int32_t>& a, const std::vector<int32_t>& b) {
  const size_t n = std::min(a.size(), b.size());
  size_t i = 0;
  while (i < n && a[i] == b[i]) ++i;
  return i;
}

// A byte range [begin, end).
struct Interval {
  size_t begin = 0;
  size_t end = 0;
};

// Sorted, merged, non-empty.
std::vector<Interval> Merge(std::vector<Interval> in) {
  std::sort(in.begin(), in.end(),
            [](const Interval& a, const Interval& b) { return a.begin < b.begin; });
  std::vector<Interval> out;
  for (const Interval& i : in) {
    if (i.begin >= i.end) continue;
    if (!out.empty() && i.begin <= out.back().end) {
      out.back().end = std::max(out.back().end, i.end);
    } else {
      out.push_back(i);
    }
  }
  return out;
}

// Marks trained[k] for every token of `ids` (the encoding of `run`) whose
// bytes overlap one of `spans` (relative to run). A token's extent is found
// from encodings of prefixes: the prefix run[0, b) shares the first k tokens
// with the whole; when it has more than k, token k straddles b.
template <typename Encode>
void FlagOverlaps(absl::string_view run, const std::vector<int32_t>& ids,
                  const std::vector<Interval>& spans, const Encode& encode,
                  std::vector<bool>& trained) {
  auto boundary = [&](size_t b, bool is_end) -> size_t {
    if (b == 0) return 0;
    if (b >= run.size()) return ids.size();
    const std::vector<int32_t> prefix = encode(run.substr(0, b));
    const size_t k = CommonPrefix(prefix, ids);
    return std::min(ids.size(), k + (is_end && prefix.size() > k ? 1 : 0));
  };
  for (const Interval& span : spans) {
    const size_t first = boundary(span.begin, false);
    const size_t last = boundary(span.end, true);
    for (size_t k = first; k < last; ++k) trained[k] = true;
  }
}

}  // namespace

absl::StatusOr<ChatTemplate> ParseChatTemplate(absl::string_view name) {
  if (name == "auto") return ChatTemplate::kAuto;
  if (name == "llama3") return ChatTemplate::kLlama3;
  if (name == "chatml") return ChatTemplate::kChatML;
  if (name == "none") return ChatTemplate::kNone;
  if (name == "model") return ChatTemplate::kModel;
  return absl::InvalidArgumentError(absl::StrCat(
      "unknown chat template \"", name, "\"; expected auto, model, llama3, chatml or none"));
}

absl::string_view ChatTemplateName(ChatTemplate chat_template) {
  switch (chat_template) {
    case ChatTemplate::kAuto:
      return "auto";
    case ChatTemplate::kLlama3:
      return "llama3";
    case ChatTemplate::kChatML:
      return "chatml";
    case ChatTemplate::kNone:
      return "none";
    case ChatTemplate::kModel:
      return "model";
  }
  return "?";
}

absl::StatusOr<ExampleRenderer> ExampleRenderer::Create(const DataTokenizer& tokenizer,
                                                        RenderOptions options) {
  ExampleRenderer renderer(tokenizer, std::move(options));
  ChatTemplate chosen = renderer.options_.chat_template;
  const std::optional<ModelChatTemplate>& model = renderer.options_.model_template;
  if (chosen == ChatTemplate::kAuto && model) chosen = ChatTemplate::kModel;
  if (chosen == ChatTemplate::kModel) {
    if (!model) {
      return absl::FailedPreconditionError(
          "chat template model: the model has no chat template (none was given)");
    }
    absl::StatusOr<JinjaTemplate> parsed = JinjaTemplate::Parse(model->source);
    if (!parsed.ok()) {
      return absl::InvalidArgumentError(absl::StrCat(model->file, ": ", parsed.status().message()));
    }
    renderer.jinja_.emplace(std::move(*parsed));
    std::vector<absl::string_view> ends(std::begin(kEndOfTurn), std::end(kEndOfTurn));
    if (!model->eos_token.empty()) ends.push_back(model->eos_token);
    for (absl::string_view end : ends) {
      if (tokenizer.SpecialTokenId(end)) renderer.end_of_turn_.emplace_back(end);
    }
    renderer.special_tokens_ = tokenizer.SpecialTokens();
  } else if (chosen == ChatTemplate::kAuto) {
    if (tokenizer.SpecialTokenId(kStartHeader)) {
      chosen = ChatTemplate::kLlama3;
    } else if (tokenizer.SpecialTokenId(kImStart)) {
      chosen = ChatTemplate::kChatML;
    } else {
      chosen = ChatTemplate::kNone;
    }
  }
  renderer.template_ = chosen;
  std::vector<absl::string_view> needed;
  if (chosen == ChatTemplate::kLlama3) needed = {kBeginOfText, kStartHeader, kEndHeader, kEotId};
  if (chosen == ChatTemplate::kChatML) needed = {kImStart, kImEnd};
  for (absl::string_view token : needed) {
    std::optional<int32_t> id = tokenizer.SpecialTokenId(token);
    if (!id) {
      return absl::FailedPreconditionError(absl::StrCat("chat template ", ChatTemplateName(chosen),
                                                        " needs the special token ", token,
                                                        ", which the tokenizer does not have"));
    }
    renderer.specials_.emplace_back(std::string(token), *id);
  }
  if (std::optional<int32_t> bos = tokenizer.bos_id()) {
    renderer.bos_.emplace(tokenizer.IdToToken(*bos).value_or(""), *bos);
  }
  const std::string& eos = renderer.options_.eos_token;
  if (!eos.empty()) {
    std::optional<int32_t> id = tokenizer.SpecialTokenId(eos);
    if (!id) {
      return absl::FailedPreconditionError(
          absl::StrCat("eos_token ", eos, " is not a special token of the tokenizer"));
    }
    renderer.eos_.emplace(eos, *id);
  } else {
    for (absl::string_view candidate : kEosCandidates) {
      if (std::optional<int32_t> id = tokenizer.SpecialTokenId(candidate)) {
        renderer.eos_.emplace(std::string(candidate), *id);
        break;
      }
    }
  }
  return renderer;
}

void ExampleRenderer::AppendTurn(Role role, absl::string_view content, bool trained_content,
                                 std::vector<Piece>& pieces) const {
  const bool header = options_.train_on_inputs;
  auto special = [&](size_t k, bool trained) {
    pieces.push_back(Piece{true, specials_[k].second, specials_[k].first, trained});
  };
  auto text = [&](std::string s, bool trained) {
    pieces.push_back(Piece{false, 0, std::move(s), trained});
  };
  if (template_ == ChatTemplate::kLlama3) {
    special(1, header);
    text(std::string(RoleName(role)), header);
    special(2, header);
    text("\n\n", header);
    text(std::string(StripWhitespace(content)), trained_content);
    special(3, trained_content);
  } else {  // kChatML
    special(0, header);
    text(absl::StrCat(RoleName(role), "\n"), header);
    text(std::string(content), trained_content);
    special(1, trained_content);
    text("\n", header);
  }
}

absl::StatusOr<std::vector<ExampleRenderer::Piece>> ExampleRenderer::Pieces(
    const Record& record) const {
  const bool inputs = options_.train_on_inputs;
  std::vector<Piece> pieces;
  const bool chat = template_ == ChatTemplate::kLlama3 || template_ == ChatTemplate::kChatML;
  if (record.format == Format::kText || (record.format == Format::kPromptCompletion && !chat)) {
    if (bos_) pieces.push_back(Piece{true, bos_->second, bos_->first, inputs});
    if (record.format == Format::kText) {
      pieces.push_back(Piece{false, 0, record.text, true});
    } else {
      pieces.push_back(Piece{false, 0, record.prompt, inputs});
      pieces.push_back(Piece{false, 0, record.completion, true});
    }
    if (eos_) pieces.push_back(Piece{true, eos_->second, eos_->first, true});
    return pieces;
  }
  if (!chat) {
    return absl::InvalidArgumentError(
        "chat messages need a chat template, and the tokenizer has neither <|start_header_id|> "
        "(llama3) nor <|im_start|> (chatml); set the template explicitly or use the "
        "prompt/completion or text format");
  }
  if (template_ == ChatTemplate::kLlama3) {
    pieces.push_back(Piece{true, specials_[0].second, specials_[0].first, inputs});
  }
  if (record.format == Format::kPromptCompletion) {
    if (!options_.default_system_prompt.empty()) {
      AppendTurn(Role::kSystem, options_.default_system_prompt, inputs, pieces);
    }
    AppendTurn(Role::kUser, record.prompt, inputs, pieces);
    AppendTurn(Role::kAssistant, record.completion, true, pieces);
    return pieces;
  }
  for (size_t i = 0; i < record.messages.size(); ++i) {
    if (record.messages[i].reasoning_content) {
      return absl::InvalidArgumentError(absl::StrCat(
          "messages[", i,
          "].reasoning_content: only the model's own chat template renders "
          "reasoning, and this one is ",
          ChatTemplateName(template_),
          " (set data.chat_template to model or auto, with a model that has a template)"));
    }
  }
  if (!options_.default_system_prompt.empty() &&
      (record.messages.empty() || record.messages.front().role != Role::kSystem)) {
    AppendTurn(Role::kSystem, options_.default_system_prompt, inputs, pieces);
  }
  for (const Message& message : record.messages) {
    const bool trained = message.role == Role::kAssistant ? message.weight != 0 : inputs;
    AppendTurn(message.role, message.content, trained, pieces);
  }
  return pieces;
}

void ExampleRenderer::EncodeTextRun(const std::vector<Piece>& pieces, size_t begin, size_t end,
                                    RenderedTokens& out) const {
  std::string joined;
  bool uniform = true;
  for (size_t i = begin; i < end; ++i) {
    joined += pieces[i].text;
    uniform = uniform && pieces[i].trained == pieces[begin].trained;
  }
  const std::vector<int32_t> ids = tokenizer_->EncodeOrdinary(joined);
  out.ids.insert(out.ids.end(), ids.begin(), ids.end());
  if (uniform) {
    out.trained.insert(out.trained.end(), ids.size(), pieces[begin].trained);
    return;
  }
  // Token k belongs to piece j when it lies past the common prefix of the ids
  // of pieces [begin, j) encoded alone and the ids of the whole run: a token
  // straddling a boundary goes to the later piece.
  std::string prefix;
  size_t start = 0;
  for (size_t j = begin; j < end; ++j) {
    size_t stop = ids.size();
    if (j + 1 < end) {
      prefix += pieces[j].text;
      if (pieces[j + 1].trained == pieces[j].trained) continue;  // no boundary to find
      stop = std::max(start, CommonPrefix(tokenizer_->EncodeOrdinary(prefix), ids));
    }
    out.trained.insert(out.trained.end(), stop - start, pieces[j].trained);
    start = stop;
  }
}

absl::StatusOr<JinjaOutput> ExampleRenderer::RenderModel(const Record& record,
                                                         bool add_generation_prompt,
                                                         std::vector<int>* message_weights) const {
  const ModelChatTemplate& model = *options_.model_template;
  nlohmann::ordered_json messages = nlohmann::ordered_json::array();
  auto add = [&](Role role, absl::string_view content, int weight,
                 const std::optional<std::string>& reasoning = std::nullopt) {
    messages.push_back({{"role", std::string(RoleName(role))}, {"content", std::string(content)}});
    // As transformers: the reasoning under its older name too, for templates
    // that read `thinking`.
    if (reasoning) {
      messages.back()["thinking"] = *reasoning;
      messages.back()["reasoning_content"] = *reasoning;
    }
    message_weights->push_back(role == Role::kAssistant ? (weight == 0 ? 0 : 1) : -1);
  };
  const bool has_system = record.format == Format::kChat && !record.messages.empty() &&
                          record.messages.front().role == Role::kSystem;
  if (!options_.default_system_prompt.empty() && !has_system) {
    add(Role::kSystem, options_.default_system_prompt, -1);
  }
  if (record.format == Format::kPromptCompletion) {
    add(Role::kUser, record.prompt, -1);
    add(Role::kAssistant, record.completion, -1);
  } else {
    for (const Message& m : record.messages) add(m.role, m.content, m.weight, m.reasoning_content);
  }
  nlohmann::ordered_json context = {{"messages", std::move(messages)},
                                    {"tools", nullptr},
                                    {"documents", nullptr},
                                    {"add_generation_prompt", add_generation_prompt}};
  if (!model.bos_token.empty()) context["bos_token"] = model.bos_token;
  if (!model.eos_token.empty()) context["eos_token"] = model.eos_token;
  absl::StatusOr<JinjaOutput> out = jinja_->RenderWithOrigins(context);
  if (!out.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("chat template ", model.file, ": ", out.status().message()));
  }
  return out;
}

absl::StatusOr<RenderedTokens> ExampleRenderer::RenderModelTokens(
    const Record& record, bool add_generation_prompt) const {
  std::vector<int> weights;  // per message: -1 not assistant, 0 / 1 assistant weight
  FJORD_ASSIGN_OR_RETURN(JinjaOutput out, RenderModel(record, add_generation_prompt, &weights));
  const std::string& text = out.text;
  // Each message's span: first to last byte of its text (when no other
  // message's text lies between), extended over template text up to and
  // including the first end-of-turn token.
  std::vector<Interval> trained_spans, untrained_spans;
  for (size_t m = 0; m < weights.size(); ++m) {
    std::vector<Interval> own;
    for (const OriginSpan& o : out.origins) {
      if (o.message == static_cast<int64_t>(m)) own.push_back({o.begin, o.end});
    }
    if (own.empty()) continue;
    size_t next_tagged = text.size();
    for (const OriginSpan& o : out.origins) {
      if (o.begin >= own.back().end) {
        next_tagged = std::min(next_tagged, o.begin);
      }
    }
    bool others_inside = false;
    for (const OriginSpan& o : out.origins) {
      if (o.message != static_cast<int64_t>(m) && o.begin >= own.front().begin &&
          o.end <= own.back().end) {
        others_inside = true;
      }
    }
    if (!others_inside) own = {{own.front().begin, own.back().end}};
    size_t end_of_turn = std::string::npos;
    for (const std::string& eot : end_of_turn_) {
      const size_t at = text.find(eot, own.back().end);
      if (at != std::string::npos && at + eot.size() <= next_tagged) {
        end_of_turn = std::min(end_of_turn, at + eot.size());
      }
    }
    if (end_of_turn != std::string::npos) own.back().end = end_of_turn;
    const bool trained = weights[m] == 1 || (weights[m] == -1 && options_.train_on_inputs);
    for (const Interval& i : own) (trained ? trained_spans : untrained_spans).push_back(i);
  }
  if (jinja_->has_generation()) {
    // The template marks what the assistant generates, as for transformers'
    // return_assistant_tokens_mask: those blocks are the spans, untrained
    // when they hold text of a weight-0 message.
    trained_spans.clear();
    untrained_spans.clear();
    for (const auto& [begin, end] : out.generation) {
      bool weight_zero = false;
      for (const OriginSpan& o : out.origins) {
        if (o.begin < end && begin < o.end && o.message >= 0 &&
            o.message < static_cast<int64_t>(weights.size()) && weights[o.message] == 0) {
          weight_zero = true;
        }
      }
      (weight_zero ? untrained_spans : trained_spans).push_back({begin, end});
    }
  }
  trained_spans = Merge(std::move(trained_spans));
  if (options_.train_on_inputs) {
    // Everything but the weight-0 assistant spans.
    std::vector<Interval> excluded = Merge(std::move(untrained_spans));
    trained_spans.clear();
    size_t at = 0;
    for (const Interval& e : excluded) {
      trained_spans.push_back({at, e.begin});
      at = e.end;
    }
    trained_spans.push_back({at, text.size()});
    trained_spans = Merge(std::move(trained_spans));
  }

  // Would a special token's spelling match over any byte of message text
  // (inside it, or across its edge with template text)?
  std::vector<size_t> tagged_before(text.size() + 1, 0);  // tagged bytes in [0, k)
  {
    std::vector<bool> is_tagged(text.size(), false);
    for (const OriginSpan& o : out.origins) {
      for (size_t k = o.begin; k < o.end; ++k) is_tagged[k] = true;
    }
    for (size_t k = 0; k < text.size(); ++k) tagged_before[k + 1] = tagged_before[k] + is_tagged[k];
  }
  bool injected = false;
  for (const std::string& special : special_tokens_) {
    if (special.empty() || injected) continue;
    for (size_t at = text.find(special); at != std::string::npos && !injected;
         at = text.find(special, at + 1)) {
      injected = tagged_before[at + special.size()] > tagged_before[at];
    }
  }
  RenderedTokens rendered;
  if (!injected) {
    rendered.ids = tokenizer_->EncodeWithSpecialTokens(text);
    rendered.trained.assign(rendered.ids.size(), false);
    FlagOverlaps(
        text, rendered.ids, trained_spans,
        [&](absl::string_view s) { return tokenizer_->EncodeWithSpecialTokens(s); },
        rendered.trained);
    return rendered;
  }
  // Split only the template's own text at special tokens; message text is
  // ordinary text.
  auto tagged = [&](size_t k) { return tagged_before[k + 1] > tagged_before[k]; };
  auto encode_run = [&](size_t begin, size_t end) {
    if (begin >= end) return;
    const absl::string_view run = absl::string_view(text).substr(begin, end - begin);
    std::vector<Interval> spans;
    for (const Interval& s : trained_spans) {
      const size_t lo = std::max(s.begin, begin), hi = std::min(s.end, end);
      if (lo < hi) spans.push_back({lo - begin, hi - begin});
    }
    const std::vector<int32_t> ids = tokenizer_->EncodeOrdinary(run);
    std::vector<bool> flags(ids.size(), false);
    FlagOverlaps(
        run, ids, spans, [&](absl::string_view s) { return tokenizer_->EncodeOrdinary(s); }, flags);
    rendered.ids.insert(rendered.ids.end(), ids.begin(), ids.end());
    rendered.trained.insert(rendered.trained.end(), flags.begin(), flags.end());
  };
  size_t run_begin = 0, i = 0;
  while (i < text.size()) {
    size_t best = 0;
    const std::string* match = nullptr;
    if (!tagged(i)) {
      for (const std::string& special : special_tokens_) {
        if (special.size() <= best || text.compare(i, special.size(), special) != 0) continue;
        bool untagged = true;
        for (size_t k = i; k < i + special.size(); ++k) untagged = untagged && !tagged(k);
        if (untagged) {
          best = special.size();
          match = &special;
        }
      }
    }
    if (match == nullptr) {
      ++i;
      continue;
    }
    encode_run(run_begin, i);
    rendered.ids.push_back(*tokenizer_->SpecialTokenId(*match));
    bool trained = false;
    for (const Interval& s : trained_spans) trained = trained || (s.begin < i + best && i < s.end);
    rendered.trained.push_back(trained);
    i += best;
    run_begin = i;
  }
  encode_run(run_begin, text.size());
  return rendered;
}

absl::StatusOr<RenderedTokens> ExampleRenderer::Render(const Record& record) const {
  if (template_ == ChatTemplate::kModel && record.format != Format::kText) {
    return RenderModelTokens(record, /*add_generation_prompt=*/false);
  }
  FJORD_ASSIGN_OR_RETURN(std::vector<Piece> pieces, Pieces(record));
  return EncodePieces(pieces);
}

RenderedTokens ExampleRenderer::EncodePieces(const std::vector<Piece>& pieces) const {
  RenderedTokens out;
  size_t i = 0;
  while (i < pieces.size()) {
    const Piece& piece = pieces[i];
    if (piece.special) {
      out.ids.push_back(piece.id);
      out.trained.push_back(piece.trained);
      ++i;
      continue;
    }
    size_t end = i;
    while (end < pieces.size() && !pieces[end].special) ++end;
    EncodeTextRun(pieces, i, end, out);
    i = end;
  }
  return out;
}

absl::StatusOr<std::vector<int32_t>> ExampleRenderer::PromptIds(const Record& record) const {
  const bool chat = template_ != ChatTemplate::kNone;
  if (chat != (record.format == Format::kChat)) {
    return absl::InvalidArgumentError(
        chat ? "PromptIds: a chat template takes the prompt as messages"
             : "PromptIds: template none takes the prompt as prompt/completion text");
  }
  if (template_ == ChatTemplate::kModel) {
    FJORD_ASSIGN_OR_RETURN(RenderedTokens rendered,
                           RenderModelTokens(record, /*add_generation_prompt=*/true));
    return std::move(rendered.ids);
  }
  std::vector<Piece> pieces;
  if (template_ == ChatTemplate::kNone) {
    if (bos_) pieces.push_back(Piece{true, bos_->second, bos_->first, false});
    pieces.push_back(Piece{false, 0, record.prompt, false});
  } else {
    FJORD_ASSIGN_OR_RETURN(pieces, Pieces(record));
    // The start of an assistant turn: AppendTurn's header without content.
    auto special = [&](size_t k) {
      pieces.push_back(Piece{true, specials_[k].second, specials_[k].first, false});
    };
    if (template_ == ChatTemplate::kLlama3) {
      special(1);
      pieces.push_back(Piece{false, 0, "assistant", false});
      special(2);
      pieces.push_back(Piece{false, 0, "\n\n", false});
    } else {
      special(0);
      pieces.push_back(Piece{false, 0, "assistant\n", false});
    }
  }
  return EncodePieces(pieces).ids;
}

absl::StatusOr<std::string> ExampleRenderer::RenderText(const Record& record) const {
  if (template_ == ChatTemplate::kModel && record.format != Format::kText) {
    std::vector<int> weights;
    FJORD_ASSIGN_OR_RETURN(JinjaOutput out, RenderModel(record, false, &weights));
    return std::move(out.text);
  }
  FJORD_ASSIGN_OR_RETURN(std::vector<Piece> pieces, Pieces(record));
  std::string text;
  for (const Piece& piece : pieces) text += piece.text;
  return text;
}

absl::StatusOr<std::vector<int32_t>> ExampleRenderer::GenerationPromptIds(
    absl::string_view user_message) const {
  if (template_ != ChatTemplate::kModel) {
    return absl::FailedPreconditionError("GenerationPromptIds needs the model's own template");
  }
  Record record;
  record.format = Format::kChat;
  record.messages = {{Role::kUser, std::string(user_message), -1}};
  FJORD_ASSIGN_OR_RETURN(RenderedTokens rendered,
                         RenderModelTokens(record, /*add_generation_prompt=*/true));
  return std::move(rendered.ids);
}

}  // namespace fjord::data

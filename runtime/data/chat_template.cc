#include "runtime/data/chat_template.h"

#include <algorithm>
#include <string>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
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

size_t CommonPrefix(const std::vector<int32_t>& a, const std::vector<int32_t>& b) {
  const size_t n = std::min(a.size(), b.size());
  size_t i = 0;
  while (i < n && a[i] == b[i]) ++i;
  return i;
}

}  // namespace

absl::StatusOr<ChatTemplate> ParseChatTemplate(absl::string_view name) {
  if (name == "auto") return ChatTemplate::kAuto;
  if (name == "llama3") return ChatTemplate::kLlama3;
  if (name == "chatml") return ChatTemplate::kChatML;
  if (name == "none") return ChatTemplate::kNone;
  return absl::InvalidArgumentError(
      absl::StrCat("unknown chat template \"", name, "\"; expected auto, llama3, chatml or none"));
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
  }
  return "?";
}

absl::StatusOr<ExampleRenderer> ExampleRenderer::Create(const DataTokenizer& tokenizer,
                                                        RenderOptions options) {
  ExampleRenderer renderer(tokenizer, std::move(options));
  ChatTemplate chosen = renderer.options_.chat_template;
  if (chosen == ChatTemplate::kAuto) {
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

absl::StatusOr<RenderedTokens> ExampleRenderer::Render(const Record& record) const {
  FJORD_ASSIGN_OR_RETURN(std::vector<Piece> pieces, Pieces(record));
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

absl::StatusOr<std::string> ExampleRenderer::RenderText(const Record& record) const {
  FJORD_ASSIGN_OR_RETURN(std::vector<Piece> pieces, Pieces(record));
  std::string text;
  for (const Piece& piece : pieces) text += piece.text;
  return text;
}

}  // namespace fjord::data

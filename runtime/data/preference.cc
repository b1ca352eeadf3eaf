#include "runtime/data/preference.h"

#include <algorithm>
#include <fstream>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"
#include "runtime/util/status_macros.h"

namespace fjord::data {
namespace {

using Json = nlohmann::json;

// One line before rendering. A prompt or response is either messages or text.
struct Side {
  std::vector<Message> messages;
  std::optional<std::string> text;
};
struct PreferenceRecord {
  PreferenceFormat format = PreferenceFormat::kTrl;
  Side prompt, chosen, rejected;
};

struct LineResult {
  std::optional<PreferenceRecord> record;
  LineError error;
};

LineResult Fail(int64_t line, std::string field, std::string message) {
  return LineResult{std::nullopt, LineError{line, std::move(field), std::move(message)}};
}

// A prompt or response: a non-blank string or an array of messages.
std::optional<LineError> ReadSide(const Json& obj, const std::string& key, int64_t line,
                                  bool response, Side& out) {
  auto it = obj.find(key);
  if (it == obj.end()) return LineError{line, key, absl::StrCat("missing \"", key, "\"")};
  if (it->is_string()) {
    const std::string& s = it->get_ref<const std::string&>();
    if (IsBlank(s)) {
      return LineError{line, key,
                       absl::StrCat("\"", key, s.empty() ? "\" is empty" : "\" is only whitespace",
                                    response ? " (an empty response)" : "")};
    }
    out.text = s;
    return std::nullopt;
  }
  if (!it->is_array()) {
    return LineError{line, key,
                     absl::StrCat("\"", key, "\" must be a string or an array of messages, got ",
                                  it->type_name())};
  }
  if (std::optional<LineError> e = ParseMessageArray(*it, key, line, out.messages)) return e;
  if (response && out.messages.back().role != Role::kAssistant) {
    return LineError{line, absl::StrCat(key, "[", out.messages.size() - 1, "].role"),
                     "a response must end with an assistant message"};
  }
  return std::nullopt;
}

LineResult ParseLine(absl::string_view text, int64_t line) {
  ObjectLine parsed =
      ParseObjectLine(text, line, R"( {"prompt": ..., "chosen": ..., "rejected": ...})");
  if (!parsed.object) return LineResult{std::nullopt, std::move(parsed.error)};
  const Json& obj = *parsed.object;
  PreferenceRecord r;
  const bool openai = obj.contains("input") || obj.contains("preferred_output") ||
                      obj.contains("non_preferred_output");
  if (openai) {
    r.format = PreferenceFormat::kOpenAI;
    auto input = obj.find("input");
    if (input == obj.end()) return Fail(line, "input", "missing \"input\"");
    if (!input->is_object() || !input->contains("messages")) {
      return Fail(line, "input", "\"input\" must be an object with \"messages\"");
    }
    if (auto e =
            ParseMessageArray(input->at("messages"), "input.messages", line, r.prompt.messages)) {
      return LineResult{std::nullopt, *std::move(e)};
    }
    if (auto e = ReadSide(obj, "preferred_output", line, true, r.chosen))
      return LineResult{std::nullopt, *std::move(e)};
    if (auto e = ReadSide(obj, "non_preferred_output", line, true, r.rejected))
      return LineResult{std::nullopt, *std::move(e)};
    return LineResult{std::move(r), {}};
  }
  if (obj.contains("prompt") && obj.contains("messages")) {
    return Fail(line, "messages", "both \"prompt\" and \"messages\": give the prompt once");
  }
  if (auto e = ReadSide(obj, "chosen", line, true, r.chosen))
    return LineResult{std::nullopt, *std::move(e)};
  if (auto e = ReadSide(obj, "rejected", line, true, r.rejected))
    return LineResult{std::nullopt, *std::move(e)};
  const char* prompt_key = obj.contains("messages") ? "messages" : "prompt";
  if (obj.contains(prompt_key)) {
    if (auto e = ReadSide(obj, prompt_key, line, false, r.prompt))
      return LineResult{std::nullopt, *std::move(e)};
    return LineResult{std::move(r), {}};
  }
  // Implicit prompt: the leading messages chosen and rejected share.
  if (r.chosen.text || r.rejected.text) {
    return Fail(line, "prompt", "missing \"prompt\" (or \"messages\")");
  }
  size_t shared = 0;
  const auto& c = r.chosen.messages;
  const auto& j = r.rejected.messages;
  while (shared < c.size() && shared < j.size() && c[shared].role == j[shared].role &&
         c[shared].content == j[shared].content) {
    ++shared;
  }
  if (shared == 0) {
    return Fail(line, "prompt",
                "missing \"prompt\", and chosen and rejected share no leading messages to take "
                "it from");
  }
  if (shared == c.size() || shared == j.size()) {
    return Fail(line, shared == c.size() ? "chosen" : "rejected",
                "the response is empty: every message is shared with the other response");
  }
  r.prompt.messages.assign(c.begin(), c.begin() + static_cast<std::ptrdiff_t>(shared));
  r.chosen.messages.erase(r.chosen.messages.begin(),
                          r.chosen.messages.begin() + static_cast<std::ptrdiff_t>(shared));
  r.rejected.messages.erase(r.rejected.messages.begin(),
                            r.rejected.messages.begin() + static_cast<std::ptrdiff_t>(shared));
  return LineResult{std::move(r), {}};
}

std::vector<Message> AsMessages(const Side& side, Role role) {
  if (!side.text) return side.messages;
  return {Message{role, *side.text, -1, std::nullopt}};
}

size_t CommonPrefix(const std::vector<int32_t>& a, const std::vector<int32_t>& b) {
  size_t n = 0;
  while (n < a.size() && n < b.size() && a[n] == b[n]) ++n;
  return n;
}

// Tokenizes one record into a pair (before length checks).
absl::StatusOr<PreferencePair> Tokenize(const ExampleRenderer& renderer,
                                        const PreferenceRecord& r) {
  std::vector<int32_t> prompt, chosen, rejected;
  if (renderer.chat_template() == ChatTemplate::kNone) {
    if (!r.prompt.text || !r.chosen.text || !r.rejected.text) {
      return absl::InvalidArgumentError(
          "chat messages need a chat template, and this model has none (template none): give "
          "prompt, chosen and rejected as strings, or set data.chat_template");
    }
    Record pc;
    pc.format = Format::kPromptCompletion;
    pc.prompt = *r.prompt.text;
    FJORD_ASSIGN_OR_RETURN(prompt, renderer.PromptIds(pc));
    pc.completion = *r.chosen.text;
    FJORD_ASSIGN_OR_RETURN(RenderedTokens c, renderer.Render(pc));
    pc.completion = *r.rejected.text;
    FJORD_ASSIGN_OR_RETURN(RenderedTokens j, renderer.Render(pc));
    chosen = std::move(c.ids);
    rejected = std::move(j.ids);
  } else {
    Record conversation;
    conversation.format = Format::kChat;
    conversation.messages = AsMessages(r.prompt, Role::kUser);
    const size_t prompt_messages = conversation.messages.size();
    FJORD_ASSIGN_OR_RETURN(prompt, renderer.PromptIds(conversation));
    for (const Side* side : {&r.chosen, &r.rejected}) {
      conversation.messages.resize(prompt_messages);
      for (Message& m : AsMessages(*side, Role::kAssistant))
        conversation.messages.push_back(std::move(m));
      FJORD_ASSIGN_OR_RETURN(RenderedTokens rendered, renderer.Render(conversation));
      (side == &r.chosen ? chosen : rejected) = std::move(rendered.ids);
    }
  }
  const size_t shared = std::min(CommonPrefix(prompt, chosen), CommonPrefix(prompt, rejected));
  PreferencePair pair;
  pair.prompt.assign(prompt.begin(), prompt.begin() + static_cast<std::ptrdiff_t>(shared));
  pair.chosen.assign(chosen.begin() + static_cast<std::ptrdiff_t>(shared), chosen.end());
  pair.rejected.assign(rejected.begin() + static_cast<std::ptrdiff_t>(shared), rejected.end());
  return pair;
}

void AddError(PreferenceReport& report, const PreferenceOptions& options, LineError error) {
  ++report.error_count;
  if (static_cast<int64_t>(report.errors.size()) < options.max_errors) {
    report.errors.push_back(std::move(error));
  }
}

absl::StatusOr<PreferenceReport> Process(std::istream& in, absl::string_view name,
                                         const DataTokenizer& tokenizer,
                                         const PreferenceOptions& options,
                                         std::vector<PreferencePair>* pairs) {
  if (options.max_length < 0 || options.max_line_bytes <= 0 || options.max_errors < 0) {
    return absl::InvalidArgumentError(
        "max_length must be >= 0, max_line_bytes > 0 and max_errors >= 0");
  }
  FJORD_ASSIGN_OR_RETURN(ExampleRenderer renderer,
                         ExampleRenderer::Create(tokenizer, options.render));
  PreferenceReport report;
  report.chat_template = renderer.chat_template();
  int64_t format_line = 0;
  auto read_line = [&](const std::string& line, int64_t n) {
    LineResult parsed = ParseLine(line, n);
    if (!parsed.record) {
      AddError(report, options, std::move(parsed.error));
      return;
    }
    if (!report.format) {
      report.format = parsed.record->format;
      format_line = n;
    } else if (*report.format != parsed.record->format) {
      AddError(
          report, options,
          {n, "",
           absl::StrCat("format ", PreferenceFormatName(parsed.record->format),
                        " differs from the file's format ", PreferenceFormatName(*report.format),
                        " (set by line ", format_line, "); a file must use one format")});
      return;
    }
    absl::StatusOr<PreferencePair> pair = Tokenize(renderer, *parsed.record);
    if (!pair.ok()) {
      AddError(report, options, {n, "", std::string(pair.status().message())});
      return;
    }
    pair->line = n;
    if (pair->chosen.empty() || pair->rejected.empty()) {
      AddError(report, options,
               {n, pair->chosen.empty() ? "chosen" : "rejected",
                "the response renders to no tokens after the prompt"});
      return;
    }
    if (pair->chosen == pair->rejected) {
      AddError(report, options,
               {n, "rejected", "identical to chosen (after tokenization): nothing to prefer"});
      return;
    }
    const int64_t prompt_len = static_cast<int64_t>(pair->prompt.size());
    const int64_t longest =
        prompt_len + static_cast<int64_t>(std::max(pair->chosen.size(), pair->rejected.size()));
    const int64_t max_length = options.max_length;
    if (max_length > 0 && longest > max_length) {
      if (!options.truncate) {
        AddError(report, options,
                 {n, "",
                  absl::StrCat(longest, " tokens (prompt ", prompt_len,
                               " + response) after tokenization, over max_length ", max_length,
                               " (enable truncation to cut the end of the response)")});
        return;
      }
      if (prompt_len >= max_length) {
        AddError(
            report, options,
            {n, "prompt",
             absl::StrCat("the prompt alone has ", prompt_len, " tokens, max_length is ",
                          max_length, ": truncation (keep_start) would leave no response tokens")});
        return;
      }
      const size_t keep = static_cast<size_t>(max_length - prompt_len);
      if (pair->chosen.size() > keep) pair->chosen.resize(keep);
      if (pair->rejected.size() > keep) pair->rejected.resize(keep);
      ++report.truncated;
      if (pair->chosen == pair->rejected) {
        AddError(report, options,
                 {n, "rejected",
                  absl::StrCat("identical to chosen after truncation to max_length ", max_length,
                               ": the responses differ only past it")});
        return;
      }
    }
    ++report.pairs;
    report.tokens += 2 * prompt_len + static_cast<int64_t>(pair->chosen.size()) +
                     static_cast<int64_t>(pair->rejected.size());
    if (pairs != nullptr) pairs->push_back(*std::move(pair));
  };
  FJORD_ASSIGN_OR_RETURN(
      report.lines,
      ForEachJsonlLine(
          in, name, options.max_line_bytes,
          [&](LineError error) { AddError(report, options, std::move(error)); }, read_line));
  if (report.pairs == 0 && report.error_count == 0) {
    AddError(report, options, {0, "", "no examples in the file"});
  }
  return report;
}

absl::StatusOr<std::ifstream> Open(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in.is_open()) {
    return absl::NotFoundError(absl::StrCat("cannot open preference dataset file ", path));
  }
  return in;
}

}  // namespace

absl::string_view PreferenceFormatName(PreferenceFormat format) {
  return format == PreferenceFormat::kOpenAI ? "openai" : "trl";
}

std::string PreferenceReport::Summary() const {
  std::string out;
  if (ok()) {
    absl::StrAppend(&out, "valid: ", pairs, " preference pairs, ", tokens, " tokens");
  } else {
    absl::StrAppend(&out, "invalid: ", error_count, error_count == 1 ? " error" : " errors", " in ",
                    lines, " lines (", pairs, " valid preference pairs)");
  }
  if (truncated > 0) absl::StrAppend(&out, ", ", truncated, " truncated");
  if (format) absl::StrAppend(&out, "; format ", PreferenceFormatName(*format));
  absl::StrAppend(&out, "; template ", ChatTemplateName(chat_template));
  AppendErrorLines(&out, errors, error_count);
  return out;
}

std::string PreferenceReport::ToJson() const {
  Json j;
  j["valid"] = ok();
  j["kind"] = "preference";
  j["lines"] = lines;
  j["examples"] = pairs;
  j["tokens"] = tokens;
  j["truncated"] = truncated;
  j["error_count"] = error_count;
  j["errors"] = ErrorsJson(errors);
  j["format"] = format ? Json(std::string(PreferenceFormatName(*format))) : Json();
  j["template"] = std::string(ChatTemplateName(chat_template));
  j["summary"] = Summary();
  return j.dump(2, ' ', false, Json::error_handler_t::replace);
}

absl::StatusOr<PreferenceReport> ValidatePreferenceJsonl(const std::string& path,
                                                         const DataTokenizer& tokenizer,
                                                         const PreferenceOptions& options) {
  FJORD_ASSIGN_OR_RETURN(std::ifstream in, Open(path));
  return Process(in, path, tokenizer, options, nullptr);
}

absl::StatusOr<PreferenceDataset> LoadPreferenceJsonlStream(std::istream& in,
                                                            absl::string_view name,
                                                            const DataTokenizer& tokenizer,
                                                            const PreferenceOptions& options) {
  PreferenceDataset dataset;
  FJORD_ASSIGN_OR_RETURN(dataset.report, Process(in, name, tokenizer, options, &dataset.pairs));
  if (!dataset.report.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(name, ": ", dataset.report.Summary()));
  }
  return dataset;
}

absl::StatusOr<PreferenceDataset> LoadPreferenceJsonl(const std::string& path,
                                                      const DataTokenizer& tokenizer,
                                                      const PreferenceOptions& options) {
  FJORD_ASSIGN_OR_RETURN(std::ifstream in, Open(path));
  return LoadPreferenceJsonlStream(in, path, tokenizer, options);
}

Example PairAsExample(const PreferencePair& pair) {
  Example example;
  example.line = pair.line;
  for (const std::vector<int32_t>* response : {&pair.chosen, &pair.rejected}) {
    const size_t begin = example.input_ids.size();
    example.input_ids.insert(example.input_ids.end(), pair.prompt.begin(), pair.prompt.end());
    example.input_ids.insert(example.input_ids.end(), response->begin(), response->end());
    for (size_t t = begin; t + 1 < example.input_ids.size(); ++t) {
      example.targets.push_back(example.input_ids[t + 1]);
    }
    example.targets.push_back(kIgnoreIndex);
  }
  return example;
}

std::vector<PairSpans> SplitPairs(const std::vector<PreferencePair>& pairs, PackedBatch& batch) {
  std::vector<PairSpans> spans;
  spans.reserve(batch.placements.size());
  std::vector<int32_t> next_segment(static_cast<size_t>(batch.batch), 0);
  for (const PackedBatch::Placement& p : batch.placements) {
    const PreferencePair& pair = pairs[static_cast<size_t>(p.example)];
    const int64_t prompt = static_cast<int64_t>(pair.prompt.size());
    const int64_t chosen_len = prompt + static_cast<int64_t>(pair.chosen.size());
    PairSpans s;
    s.pair = p.example;
    const int64_t offset = p.row * batch.seq_len + p.start;
    s.chosen = {offset, chosen_len, prompt};
    s.rejected = {offset + chosen_len, p.length - chosen_len, prompt};
    for (const SequenceSpan* seq : {&s.chosen, &s.rejected}) {
      const int32_t segment = ++next_segment[static_cast<size_t>(p.row)];
      for (int64_t t = 0; t < seq->length; ++t) {
        batch.position_ids[static_cast<size_t>(seq->offset + t)] = static_cast<int32_t>(t);
        batch.segment_ids[static_cast<size_t>(seq->offset + t)] = segment;
      }
    }
    spans.push_back(s);
  }
  return spans;
}

}  // namespace fjord::data

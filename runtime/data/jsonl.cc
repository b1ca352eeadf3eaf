#include "runtime/data/jsonl.h"

#include <algorithm>
#include <exception>
#include <string>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "nlohmann/json.hpp"

namespace fjord::data {
namespace {

using Json = nlohmann::json;

constexpr size_t kChunkBytes = 64 << 10;
// User-supplied values quoted in error messages are cut to this many bytes.
constexpr size_t kMaxQuotedBytes = 40;

bool IsContinuation(unsigned char c) { return (c & 0xC0) == 0x80; }

// Decodes the code point at text[i] (valid UTF-8 assumed; invalid bytes come
// back as themselves with length 1). Sets `length`.
uint32_t DecodeAt(absl::string_view text, size_t i, size_t& length) {
  const auto b0 = static_cast<unsigned char>(text[i]);
  auto cont = [&](size_t k) { return static_cast<unsigned char>(text[i + k]) & 0x3Fu; };
  if (b0 < 0x80) {
    length = 1;
    return b0;
  }
  if ((b0 & 0xE0) == 0xC0 && i + 1 < text.size()) {
    length = 2;
    return ((b0 & 0x1Fu) << 6) | cont(1);
  }
  if ((b0 & 0xF0) == 0xE0 && i + 2 < text.size()) {
    length = 3;
    return ((b0 & 0x0Fu) << 12) | (cont(1) << 6) | cont(2);
  }
  if ((b0 & 0xF8) == 0xF0 && i + 3 < text.size()) {
    length = 4;
    return ((b0 & 0x07u) << 18) | (cont(1) << 12) | (cont(2) << 6) | cont(3);
  }
  length = 1;
  return b0;
}

// Python's str.isspace() set.
bool IsSpaceCodePoint(uint32_t c) {
  if (c == 0x20 || (c >= 0x09 && c <= 0x0D) || (c >= 0x1C && c <= 0x1F)) return true;
  if (c < 0x85) return false;
  return c == 0x85 || c == 0xA0 || c == 0x1680 || (c >= 0x2000 && c <= 0x200A) || c == 0x2028 ||
         c == 0x2029 || c == 0x202F || c == 0x205F || c == 0x3000;
}

// `value` cut to at most kMaxQuotedBytes (at a character boundary) and quoted.
std::string Quote(absl::string_view value) {
  if (value.size() <= kMaxQuotedBytes) return absl::StrCat("\"", value, "\"");
  size_t end = kMaxQuotedBytes;
  while (end > 0 && IsContinuation(static_cast<unsigned char>(value[end]))) --end;
  return absl::StrCat("\"", value.substr(0, end), "...\"");
}

std::string TypeName(const Json& value) {
  if (value.is_number()) return "number";
  return value.type_name();
}

ParseResult Fail(int64_t line, std::string field, std::string message) {
  ParseResult result;
  result.error = LineError{line, std::move(field), std::move(message)};
  return result;
}

// Checks that obj[key] is a non-blank string; on success stores it in `out`.
// Returns an error message ("" on success).
std::string ReadContent(const Json& obj, const char* key, std::string& out) {
  auto it = obj.find(key);
  if (it == obj.end()) return absl::StrCat("missing \"", key, "\"");
  if (!it->is_string()) return absl::StrCat("\"", key, "\" must be a string, got ", TypeName(*it));
  out = it->get<std::string>();
  if (out.empty()) return absl::StrCat("\"", key, "\" is empty");
  if (IsBlank(out)) return absl::StrCat("\"", key, "\" is only whitespace");
  return "";
}

ParseResult ParseChat(const Json& obj, int64_t line) {
  Record record;
  record.format = Format::kChat;
  if (std::optional<LineError> error =
          ParseMessageArray(obj.at("messages"), "messages", line, record.messages)) {
    return ParseResult{std::nullopt, *std::move(error)};
  }
  bool has_assistant = false;
  for (const Message& m : record.messages) has_assistant |= m.role == Role::kAssistant;
  if (!has_assistant) return Fail(line, "messages", "no assistant message");
  ParseResult result;
  result.record = std::move(record);
  return result;
}

}  // namespace

std::optional<LineError> ParseMessageArray(const nlohmann::json& messages, absl::string_view field,
                                           int64_t line, std::vector<Message>& out) {
  auto fail = [&](std::string where, std::string message) -> std::optional<LineError> {
    return LineError{line, std::move(where), std::move(message)};
  };
  if (!messages.is_array()) {
    return fail(std::string(field),
                absl::StrCat("\"", field, "\" must be an array, got ", TypeName(messages)));
  }
  if (messages.empty()) return fail(std::string(field), absl::StrCat("\"", field, "\" is empty"));
  out.clear();
  out.reserve(messages.size());
  for (size_t i = 0; i < messages.size(); ++i) {
    const Json& m = messages[i];
    const std::string base = absl::StrCat(field, "[", i, "]");
    if (!m.is_object()) {
      return fail(base, absl::StrCat("message must be an object, got ", TypeName(m)));
    }
    Message message;
    auto role = m.find("role");
    if (role == m.end()) return fail(base + ".role", "missing \"role\"");
    if (!role->is_string()) {
      return fail(base + ".role", absl::StrCat("\"role\" must be a string, got ", TypeName(*role)));
    }
    const std::string& role_name = role->get_ref<const std::string&>();
    if (role_name == "system") {
      message.role = Role::kSystem;
    } else if (role_name == "user") {
      message.role = Role::kUser;
    } else if (role_name == "assistant") {
      message.role = Role::kAssistant;
    } else {
      return fail(base + ".role", absl::StrCat("unknown role ", Quote(role_name),
                                               "; expected \"system\", \"user\" or \"assistant\""));
    }
    if (std::string error = ReadContent(m, "content", message.content); !error.empty()) {
      return fail(base + ".content", std::move(error));
    }
    if (auto weight = m.find("weight"); weight != m.end()) {
      if (message.role != Role::kAssistant) {
        return fail(base + ".weight",
                    absl::StrCat("\"weight\" is only allowed on assistant messages, not on a ",
                                 role_name, " message"));
      }
      const bool is_zero = weight->is_number() && weight->get<double>() == 0.0;
      const bool is_one = weight->is_number() && weight->get<double>() == 1.0;
      if (!is_zero && !is_one) {
        return fail(base + ".weight",
                    absl::StrCat("\"weight\" must be 0 or 1, got ",
                                 weight->is_number() ? weight->dump() : TypeName(*weight)));
      }
      message.weight = is_one ? 1 : 0;
    }
    if (auto reasoning = m.find("reasoning_content"); reasoning != m.end()) {
      if (message.role != Role::kAssistant) {
        return fail(base + ".reasoning_content",
                    absl::StrCat("\"reasoning_content\" is only allowed on assistant messages, "
                                 "not on a ",
                                 role_name, " message"));
      }
      if (!reasoning->is_string()) {
        return fail(
            base + ".reasoning_content",
            absl::StrCat("\"reasoning_content\" must be a string, got ", TypeName(*reasoning)));
      }
      message.reasoning_content = reasoning->get<std::string>();
    }
    out.push_back(std::move(message));
  }
  return std::nullopt;
}

absl::string_view FormatName(Format format) {
  switch (format) {
    case Format::kChat:
      return "chat";
    case Format::kPromptCompletion:
      return "prompt_completion";
    case Format::kText:
      return "text";
  }
  return "?";
}

absl::string_view RoleName(Role role) {
  switch (role) {
    case Role::kSystem:
      return "system";
    case Role::kUser:
      return "user";
    case Role::kAssistant:
      return "assistant";
  }
  return "?";
}

std::optional<size_t> FindInvalidUtf8(absl::string_view text) {
  const auto* s = reinterpret_cast<const unsigned char*>(text.data());
  const size_t n = text.size();
  size_t i = 0;
  while (i < n) {
    const unsigned char c = s[i];
    if (c < 0x80) {
      ++i;
      continue;
    }
    size_t extra;
    unsigned char lo = 0x80, hi = 0xBF;  // allowed range of the second byte
    if (c >= 0xC2 && c <= 0xDF) {
      extra = 1;
    } else if (c >= 0xE0 && c <= 0xEF) {
      extra = 2;
      if (c == 0xE0) lo = 0xA0;  // overlong
      if (c == 0xED) hi = 0x9F;  // surrogates
    } else if (c >= 0xF0 && c <= 0xF4) {
      extra = 3;
      if (c == 0xF0) lo = 0x90;  // overlong
      if (c == 0xF4) hi = 0x8F;  // above U+10FFFF
    } else {
      return i;
    }
    if (i + extra >= n) return i;  // truncated sequence
    if (s[i + 1] < lo || s[i + 1] > hi) return i;
    for (size_t k = 2; k <= extra; ++k) {
      if (!IsContinuation(s[i + k])) return i;
    }
    i += extra + 1;
  }
  return std::nullopt;
}

bool IsBlank(absl::string_view text) { return StripWhitespace(text).empty(); }

absl::string_view StripWhitespace(absl::string_view text) {
  size_t begin = 0;
  while (begin < text.size()) {
    size_t length;
    if (!IsSpaceCodePoint(DecodeAt(text, begin, length))) break;
    begin += length;
  }
  // Scan backwards to the start of each code point.
  size_t end = text.size();
  while (end > begin) {
    size_t start = end - 1;
    while (start > begin && IsContinuation(static_cast<unsigned char>(text[start]))) --start;
    size_t length;
    const uint32_t c = DecodeAt(text, start, length);
    if (start + length != end || !IsSpaceCodePoint(c)) break;
    end = start;
  }
  return text.substr(begin, end - begin);
}

void AppendErrorLines(std::string* out, const std::vector<LineError>& errors, int64_t error_count) {
  constexpr int64_t kShown = 5;
  for (size_t i = 0; i < errors.size() && static_cast<int64_t>(i) < kShown; ++i) {
    const LineError& e = errors[i];
    absl::StrAppend(out, "\n  line ", e.line,
                    e.field.empty() ? "" : absl::StrCat(" (", e.field, ")"), ": ", e.message);
  }
  if (error_count > kShown && !errors.empty()) {
    absl::StrAppend(out, "\n  ... and ",
                    error_count - std::min<int64_t>(static_cast<int64_t>(errors.size()), kShown),
                    " more");
  }
}

Json ErrorsJson(const std::vector<LineError>& errors) {
  Json out = Json::array();
  for (const LineError& e : errors) {
    out.push_back({{"line", e.line}, {"field", e.field}, {"message", e.message}});
  }
  return out;
}

ObjectLine ParseObjectLine(absl::string_view line, int64_t line_number, absl::string_view shape) {
  ObjectLine result;
  auto fail = [&](std::string message) {
    result.error = LineError{line_number, "", std::move(message)};
    return result;
  };
  if (auto bad = FindInvalidUtf8(line)) {
    return fail(absl::StrFormat("invalid UTF-8 at byte %d (0x%02x)", *bad + 1,
                                static_cast<unsigned char>(line[*bad])));
  }
  Json obj;
  try {
    obj = Json::parse(line.begin(), line.end());
  } catch (const Json::parse_error& e) {
    // e.what(): "[json.exception.parse_error.101] parse error at line 1,
    // column 7: syntax error while parsing value - ..."; keep the part after
    // the position, which we restate as a byte offset within the line.
    absl::string_view what = e.what();
    absl::string_view detail = what;
    if (size_t column = what.find("column "); column != absl::string_view::npos) {
      if (size_t colon = what.find(": ", column); colon != absl::string_view::npos) {
        detail = what.substr(colon + 2);
      }
    }
    return fail(absl::StrCat("not valid JSON at byte ", e.byte, ": ", detail));
  } catch (const std::exception& e) {
    return fail(absl::StrCat("not valid JSON: ", e.what()));
  }
  if (!obj.is_object()) {
    return fail(absl::StrCat("line is a JSON ", TypeName(obj), ", expected an object", shape));
  }
  result.object = std::move(obj);
  return result;
}

ParseResult ParseRecordLine(absl::string_view line, int64_t line_number) {
  ObjectLine parsed = ParseObjectLine(line, line_number);
  if (!parsed.object) {
    ParseResult result;
    result.error = std::move(parsed.error);
    return result;
  }
  const Json& obj = *parsed.object;
  const bool chat = obj.contains("messages");
  const bool pc = obj.contains("prompt") || obj.contains("completion");
  const bool text = obj.contains("text");
  if (static_cast<int>(chat) + static_cast<int>(pc) + static_cast<int>(text) != 1) {
    if (!chat && !pc && !text) {
      return Fail(line_number, "",
                  "unknown format: expected a \"messages\", \"prompt\"/\"completion\" or "
                  "\"text\" key");
    }
    std::string keys;
    if (chat) keys += "\"messages\"";
    if (pc) absl::StrAppend(&keys, keys.empty() ? "" : " and ", "\"prompt\"/\"completion\"");
    if (text) absl::StrAppend(&keys, " and \"text\"");
    return Fail(line_number, "", absl::StrCat("ambiguous format: object has ", keys, " keys"));
  }
  if (chat) return ParseChat(obj, line_number);
  Record record;
  if (pc) {
    record.format = Format::kPromptCompletion;
    if (std::string error = ReadContent(obj, "prompt", record.prompt); !error.empty()) {
      return Fail(line_number, "prompt", std::move(error));
    }
    if (std::string error = ReadContent(obj, "completion", record.completion); !error.empty()) {
      return Fail(line_number, "completion", std::move(error));
    }
  } else {
    record.format = Format::kText;
    if (std::string error = ReadContent(obj, "text", record.text); !error.empty()) {
      return Fail(line_number, "text", std::move(error));
    }
  }
  ParseResult result;
  result.record = std::move(record);
  return result;
}

LineReader::LineReader(std::istream& in, int64_t max_line_bytes)
    : in_(in), max_line_bytes_(max_line_bytes) {}

bool LineReader::Fill() {
  if (eof_ || read_error_) return false;
  buffer_.resize(kChunkBytes);
  in_.read(buffer_.data(), static_cast<std::streamsize>(buffer_.size()));
  const auto got = static_cast<size_t>(in_.gcount());
  buffer_.resize(got);
  pos_ = 0;
  if (in_.bad()) {
    read_error_ = true;
    return false;
  }
  if (got < kChunkBytes) eof_ = true;
  return got > 0;
}

LineReader::Result LineReader::Next(std::string& line) {
  line.clear();
  bool too_long = false;
  bool any_bytes = false;
  while (true) {
    if (pos_ >= buffer_.size() && !Fill()) {
      if (read_error_) return Result::kReadError;
      if (!any_bytes) return Result::kEnd;
      break;  // last line without a trailing newline
    }
    any_bytes = true;
    const size_t newline = buffer_.find('\n', pos_);
    const size_t end = newline == std::string::npos ? buffer_.size() : newline;
    if (!too_long) {
      if (static_cast<int64_t>(line.size() + (end - pos_)) > max_line_bytes_) {
        too_long = true;
        line.clear();
        line.shrink_to_fit();
      } else {
        line.append(buffer_, pos_, end - pos_);
      }
    }
    pos_ = end;
    if (newline != std::string::npos) {
      ++pos_;
      break;
    }
  }
  ++line_number_;
  if (too_long) return Result::kTooLong;
  if (!line.empty() && line.back() == '\r') line.pop_back();
  if (line_number_ == 1 && absl::string_view(line).substr(0, 3) == "\xEF\xBB\xBF") line.erase(0, 3);
  return Result::kLine;
}

absl::StatusOr<int64_t> ForEachJsonlLine(
    std::istream& in, absl::string_view name, int64_t max_line_bytes,
    const std::function<void(LineError error)>& on_too_long,
    const std::function<void(const std::string& line, int64_t n)>& on_line) {
  LineReader reader(in, max_line_bytes);
  std::string line;
  while (true) {
    const LineReader::Result result = reader.Next(line);
    if (result == LineReader::Result::kEnd) break;
    if (result == LineReader::Result::kReadError) {
      return absl::DataLossError(
          absl::StrCat(name, ": read error after line ", reader.line_number()));
    }
    if (result == LineReader::Result::kTooLong) {
      on_too_long({reader.line_number(), "",
                   absl::StrCat("line is longer than ", max_line_bytes, " bytes")});
      continue;
    }
    if (IsBlank(line)) continue;
    on_line(line, reader.line_number());
  }
  return reader.line_number();
}

}  // namespace fjord::data

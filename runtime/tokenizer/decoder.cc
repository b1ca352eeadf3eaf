#include "runtime/tokenizer/decoder.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_replace.h"
#include "runtime/tokenizer/byte_level.h"
#include "runtime/tokenizer/regex.h"
#include "runtime/tokenizer/unicode.h"
#include "runtime/util/status_macros.h"

namespace fjord::tokenizer::internal {
namespace {

// Byte-level characters back to bytes; a token with any other character
// keeps its own bytes. Everything joined, invalid UTF-8 -> U+FFFD (HF's
// from_utf8_lossy).
class ByteLevelDecoder : public Decoder {
 public:
  void DecodeChain(std::vector<std::string>* tokens) const override {
    std::string bytes;
    std::string mapped;
    for (const std::string& t : *tokens) {
      mapped.clear();
      bool all = true;
      size_t pos = 0;
      while (pos < t.size()) {
        const int b = CharToByte(DecodeUtf8(t, &pos));
        if (b < 0) {
          all = false;
          break;
        }
        mapped.push_back(static_cast<char>(b));
      }
      bytes.append(all ? mapped : t);
    }
    tokens->assign(1, ToValidUtf8(bytes));
  }
};

class MetaspaceDecoder : public Decoder {
 public:
  MetaspaceDecoder(std::string replacement, bool strip_first)
      : replacement_(std::move(replacement)), strip_first_(strip_first) {}
  void DecodeChain(std::vector<std::string>* tokens) const override {
    for (size_t i = 0; i < tokens->size(); ++i) {
      // HF drops every replacement character of the first token.
      (*tokens)[i] =
          absl::StrReplaceAll((*tokens)[i], {{replacement_, i == 0 && strip_first_ ? "" : " "}});
    }
  }

 private:
  std::string replacement_;
  bool strip_first_;
};

class ReplaceDecoder : public Decoder {
 public:
  ReplaceDecoder(Pattern pattern, std::string content)
      : pattern_(std::move(pattern)), content_(std::move(content)) {}
  void DecodeChain(std::vector<std::string>* tokens) const override {
    std::vector<Span> matches;
    for (std::string& t : *tokens) {
      matches.clear();
      pattern_.FindAll(t, &matches);
      if (matches.empty()) continue;
      std::string out;
      size_t prev = 0;
      for (const Span& m : matches) {
        out.append(t, prev, m.first - prev);
        out.append(content_);
        prev = m.second;
      }
      out.append(t, prev, std::string::npos);
      t = std::move(out);
    }
  }

 private:
  Pattern pattern_;
  std::string content_;
};

// Runs of <0xNN> tokens become the text of their bytes, or one U+FFFD per byte
// when the bytes are not valid UTF-8.
class ByteFallbackDecoder : public Decoder {
 public:
  void DecodeChain(std::vector<std::string>* tokens) const override {
    std::vector<std::string> out;
    out.reserve(tokens->size());
    std::string bytes;
    size_t count = 0;
    auto flush = [&]() {
      if (count == 0) return;
      if (!FindInvalidUtf8(bytes)) {
        out.push_back(bytes);
      } else {
        for (size_t i = 0; i < count; ++i) out.emplace_back("\xEF\xBF\xBD");
      }
      bytes.clear();
      count = 0;
    };
    for (std::string& t : *tokens) {
      int byte = -1;
      if (t.size() == 6 && t[0] == '<' && t[1] == '0' && t[2] == 'x' && t[5] == '>') {
        const int hi = HexValue(t[3]), lo = HexValue(t[4]);
        if (hi >= 0 && lo >= 0) byte = hi * 16 + lo;
      }
      if (byte >= 0) {
        bytes.push_back(static_cast<char>(byte));
        ++count;
      } else {
        flush();
        out.push_back(std::move(t));
      }
    }
    flush();
    *tokens = std::move(out);
  }

 private:
  static int HexValue(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
  }
};

class FuseDecoder : public Decoder {
 public:
  void DecodeChain(std::vector<std::string>* tokens) const override {
    tokens->assign(1, absl::StrJoin(*tokens, ""));
  }
};

// Removes up to `start` leading and `stop` trailing `content` characters of
// each token.
class StripDecoder : public Decoder {
 public:
  StripDecoder(uint32_t content, size_t start, size_t stop)
      : content_(content), start_(start), stop_(stop) {}
  void DecodeChain(std::vector<std::string>* tokens) const override {
    for (std::string& t : *tokens) {
      size_t begin = 0;
      for (size_t k = 0; k < start_ && begin < t.size(); ++k) {
        size_t next = begin;
        if (DecodeUtf8(t, &next) != content_) break;
        begin = next;
      }
      size_t end = t.size();
      for (size_t k = 0; k < stop_ && end > begin; ++k) {
        size_t s = end - 1;
        while (s > begin && (static_cast<unsigned char>(t[s]) & 0xC0) == 0x80) --s;
        size_t pos = s;
        if (DecodeUtf8(t, &pos) != content_) break;
        end = s;
      }
      t = t.substr(begin, end - begin);
    }
  }

 private:
  uint32_t content_;
  size_t start_, stop_;
};

// end_of_word_suffix back to spaces (none after the last token).
class BpeDecoder : public Decoder {
 public:
  explicit BpeDecoder(std::string suffix) : suffix_(std::move(suffix)) {}
  void DecodeChain(std::vector<std::string>* tokens) const override {
    if (suffix_.empty()) return;
    for (size_t i = 0; i < tokens->size(); ++i) {
      (*tokens)[i] =
          absl::StrReplaceAll((*tokens)[i], {{suffix_, i + 1 == tokens->size() ? "" : " "}});
    }
  }

 private:
  std::string suffix_;
};

class SequenceDecoder : public Decoder {
 public:
  explicit SequenceDecoder(std::vector<std::unique_ptr<Decoder>> parts)
      : parts_(std::move(parts)) {}
  void DecodeChain(std::vector<std::string>* tokens) const override {
    for (const auto& p : parts_) p->DecodeChain(tokens);
  }

 private:
  std::vector<std::unique_ptr<Decoder>> parts_;
};

absl::StatusOr<uint32_t> SingleChar(const std::string& s, absl::string_view path) {
  size_t pos = 0;
  if (s.empty()) return FieldError(path, "expected a single character, got \"\"");
  const uint32_t cp = DecodeUtf8(s, &pos);
  if (pos != s.size()) {
    return FieldError(path, absl::StrCat("expected a single character, got \"", s, "\""));
  }
  return cp;
}

}  // namespace

absl::StatusOr<std::unique_ptr<Decoder>> ParseDecoder(const Json& value, absl::string_view path,
                                                      int depth) {
  FJORD_RETURN_IF_ERROR(CheckDepth(path, depth));
  FJORD_ASSIGN_OR_RETURN(std::string type, GetType(value, path));
  if (type == "ByteLevel") return std::make_unique<ByteLevelDecoder>();
  if (type == "Metaspace") {
    FJORD_ASSIGN_OR_RETURN(std::string replacement, GetString(value, path, "replacement"));
    FJORD_RETURN_IF_ERROR(SingleChar(replacement, JoinPath(path, "replacement")).status());
    FJORD_ASSIGN_OR_RETURN(const bool legacy_prefix,
                           GetBool(value, path, "add_prefix_space", true));
    FJORD_ASSIGN_OR_RETURN(std::optional<std::string> scheme,
                           GetOptionalString(value, path, "prepend_scheme"));
    bool strip_first = legacy_prefix;
    if (scheme) {
      if (*scheme != "always" && *scheme != "first" && *scheme != "never") {
        return FieldError(JoinPath(path, "prepend_scheme"),
                          absl::StrCat("unknown prepend_scheme \"", *scheme,
                                       "\" (expected always, first or never)"));
      }
      strip_first = *scheme != "never";
    }
    return std::make_unique<MetaspaceDecoder>(std::move(replacement), strip_first);
  }
  if (type == "Replace") {
    const Json* pattern = FindField(value, "pattern");
    if (pattern == nullptr) return FieldError(JoinPath(path, "pattern"), "missing");
    FJORD_ASSIGN_OR_RETURN(Pattern parsed, Pattern::Parse(*pattern, JoinPath(path, "pattern")));
    FJORD_ASSIGN_OR_RETURN(std::string content, GetString(value, path, "content"));
    return std::make_unique<ReplaceDecoder>(std::move(parsed), std::move(content));
  }
  if (type == "ByteFallback") return std::make_unique<ByteFallbackDecoder>();
  if (type == "Fuse") return std::make_unique<FuseDecoder>();
  if (type == "Strip") {
    FJORD_ASSIGN_OR_RETURN(std::string content, GetString(value, path, "content"));
    FJORD_ASSIGN_OR_RETURN(const uint32_t cp, SingleChar(content, JoinPath(path, "content")));
    FJORD_ASSIGN_OR_RETURN(const int64_t start, GetUint(value, path, "start", 0, 1 << 20));
    FJORD_ASSIGN_OR_RETURN(const int64_t stop, GetUint(value, path, "stop", 0, 1 << 20));
    return std::make_unique<StripDecoder>(cp, static_cast<size_t>(start),
                                          static_cast<size_t>(stop));
  }
  if (type == "BPEDecoder") {
    FJORD_ASSIGN_OR_RETURN(std::optional<std::string> suffix,
                           GetOptionalString(value, path, "suffix"));
    return std::make_unique<BpeDecoder>(suffix.value_or("</w>"));
  }
  if (type == "Sequence") {
    const std::string field = JoinPath(path, "decoders");
    const Json* list = FindField(value, "decoders");
    if (list == nullptr) return FieldError(field, "missing");
    if (!list->is_array()) {
      return FieldError(field, absl::StrCat("expected an array, got ", JsonTypeName(*list)));
    }
    std::vector<std::unique_ptr<Decoder>> parts;
    for (size_t i = 0; i < list->size(); ++i) {
      FJORD_ASSIGN_OR_RETURN(auto part, ParseDecoder((*list)[i], IndexPath(field, i), depth + 1));
      parts.push_back(std::move(part));
    }
    return std::make_unique<SequenceDecoder>(std::move(parts));
  }
  return FieldError(JoinPath(path, "type"),
                    absl::StrCat("unsupported decoder \"", type,
                                 "\" (fjord supports ByteLevel, Metaspace, Replace, ByteFallback, "
                                 "Fuse, Strip, BPEDecoder, Sequence)"));
}

}  // namespace fjord::tokenizer::internal

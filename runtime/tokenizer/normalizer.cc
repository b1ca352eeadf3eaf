#include "runtime/tokenizer/normalizer.h"

#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "runtime/tokenizer/regex.h"
#include "runtime/tokenizer/unicode.h"
#include "runtime/util/status_macros.h"

namespace fjord::tokenizer::internal {
namespace {

class UnicodeNormalizer : public Normalizer {
 public:
  explicit UnicodeNormalizer(NormalForm form) : form_(form) {}
  void Apply(std::string* text) const override { *text = Normalize(*text, form_); }

 private:
  NormalForm form_;
};

// Prepends `prepend` to non-empty text.
class PrependNormalizer : public Normalizer {
 public:
  explicit PrependNormalizer(std::string prepend) : prepend_(std::move(prepend)) {}
  void Apply(std::string* text) const override {
    if (!text->empty()) text->insert(0, prepend_);
  }

 private:
  std::string prepend_;
};

// Replaces every match of `pattern` with `content`.
class ReplaceNormalizer : public Normalizer {
 public:
  ReplaceNormalizer(Pattern pattern, std::string content)
      : pattern_(std::move(pattern)), content_(std::move(content)) {}
  void Apply(std::string* text) const override {
    std::vector<Span> matches;
    pattern_.FindAll(*text, &matches);
    if (matches.empty()) return;
    std::string out;
    out.reserve(text->size());
    size_t prev = 0;
    for (const Span& m : matches) {
      out.append(*text, prev, m.first - prev);
      out.append(content_);
      prev = m.second;
    }
    out.append(*text, prev, std::string::npos);
    *text = std::move(out);
  }

 private:
  Pattern pattern_;
  std::string content_;
};

// Removes leading and/or trailing White_Space.
class StripNormalizer : public Normalizer {
 public:
  StripNormalizer(bool left, bool right) : left_(left), right_(right) {}
  void Apply(std::string* text) const override {
    size_t begin = 0, end = text->size();
    if (left_) {
      while (begin < end) {
        size_t pos = begin;
        if (!IsWhiteSpace(DecodeUtf8(*text, &pos))) break;
        begin = pos;
      }
    }
    if (right_) {
      while (end > begin) {
        size_t start = end - 1;
        while (start > begin && (static_cast<unsigned char>((*text)[start]) & 0xC0) == 0x80)
          --start;
        size_t pos = start;
        if (!IsWhiteSpace(DecodeUtf8(*text, &pos))) break;
        end = start;
      }
    }
    if (begin != 0 || end != text->size()) *text = text->substr(begin, end - begin);
  }

 private:
  bool left_, right_;
};

class SequenceNormalizer : public Normalizer {
 public:
  explicit SequenceNormalizer(std::vector<std::unique_ptr<Normalizer>> parts)
      : parts_(std::move(parts)) {}
  void Apply(std::string* text) const override {
    for (const auto& p : parts_) p->Apply(text);
  }

 private:
  std::vector<std::unique_ptr<Normalizer>> parts_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<Normalizer>> ParseNormalizer(const Json& value,
                                                            absl::string_view path, int depth) {
  FJORD_RETURN_IF_ERROR(CheckDepth(path, depth));
  FJORD_ASSIGN_OR_RETURN(std::string type, GetType(value, path));
  if (type == "NFC") return std::make_unique<UnicodeNormalizer>(NormalForm::kNfc);
  if (type == "NFD") return std::make_unique<UnicodeNormalizer>(NormalForm::kNfd);
  if (type == "NFKC") return std::make_unique<UnicodeNormalizer>(NormalForm::kNfkc);
  if (type == "NFKD") return std::make_unique<UnicodeNormalizer>(NormalForm::kNfkd);
  if (type == "Prepend") {
    FJORD_ASSIGN_OR_RETURN(std::string prepend, GetString(value, path, "prepend"));
    return std::make_unique<PrependNormalizer>(std::move(prepend));
  }
  if (type == "Replace") {
    const Json* pattern = FindField(value, "pattern");
    if (pattern == nullptr) return FieldError(JoinPath(path, "pattern"), "missing");
    FJORD_ASSIGN_OR_RETURN(Pattern parsed, Pattern::Parse(*pattern, JoinPath(path, "pattern")));
    FJORD_ASSIGN_OR_RETURN(std::string content, GetString(value, path, "content"));
    return std::make_unique<ReplaceNormalizer>(std::move(parsed), std::move(content));
  }
  if (type == "Strip") {
    FJORD_ASSIGN_OR_RETURN(const bool left, GetBool(value, path, "strip_left", true));
    FJORD_ASSIGN_OR_RETURN(const bool right, GetBool(value, path, "strip_right", true));
    return std::make_unique<StripNormalizer>(left, right);
  }
  if (type == "Sequence") {
    const std::string field = JoinPath(path, "normalizers");
    const Json* list = FindField(value, "normalizers");
    if (list == nullptr) return FieldError(field, "missing");
    if (!list->is_array()) {
      return FieldError(field, absl::StrCat("expected an array, got ", JsonTypeName(*list)));
    }
    std::vector<std::unique_ptr<Normalizer>> parts;
    for (size_t i = 0; i < list->size(); ++i) {
      const Json& item = (*list)[i];
      if (item.is_null()) continue;
      FJORD_ASSIGN_OR_RETURN(auto part, ParseNormalizer(item, IndexPath(field, i), depth + 1));
      parts.push_back(std::move(part));
    }
    return std::make_unique<SequenceNormalizer>(std::move(parts));
  }
  return FieldError(JoinPath(path, "type"),
                    absl::StrCat("unsupported normalizer \"", type,
                                 "\" (fjord supports NFC, NFD, NFKC, NFKD, Prepend, Replace, "
                                 "Strip, Sequence)"));
}

}  // namespace fjord::tokenizer::internal

#include "runtime/tokenizer/post_processor.h"

#include <utility>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_cat.h"
#include "runtime/util/status_macros.h"

namespace fjord::tokenizer::internal {
namespace {

// A template: fixed ids, with kSequence where the text goes.
constexpr int32_t kSequence = -1;

class TemplatePostProcessor : public PostProcessor {
 public:
  explicit TemplatePostProcessor(std::vector<int32_t> pieces) : pieces_(std::move(pieces)) {}
  void Apply(std::vector<int32_t>* ids) const override {
    std::vector<int32_t> out;
    out.reserve(ids->size() + pieces_.size());
    for (int32_t p : pieces_) {
      if (p == kSequence) {
        out.insert(out.end(), ids->begin(), ids->end());
      } else {
        out.push_back(p);
      }
    }
    *ids = std::move(out);
  }

 private:
  std::vector<int32_t> pieces_;
};

class NoOpPostProcessor : public PostProcessor {
 public:
  void Apply(std::vector<int32_t>*) const override {}
};

class SequencePostProcessor : public PostProcessor {
 public:
  explicit SequencePostProcessor(std::vector<std::unique_ptr<PostProcessor>> parts)
      : parts_(std::move(parts)) {}
  void Apply(std::vector<int32_t>* ids) const override {
    for (const auto& p : parts_) p->Apply(ids);
  }

 private:
  std::vector<std::unique_ptr<PostProcessor>> parts_;
};

absl::StatusOr<int32_t> CheckId(const Json& value, absl::string_view path, int32_t vocab_size) {
  FJORD_ASSIGN_OR_RETURN(const int64_t id, AsUint(value, path, int64_t{1} << 31));
  if (id >= vocab_size) {
    return FieldError(
        path, absl::StrCat("id ", id, " is not a token (the vocabulary has ", vocab_size, " ids)"));
  }
  return static_cast<int32_t>(id);
}

// Bert's [CLS] / Roberta's <s>: ["token", id].
absl::StatusOr<int32_t> TokenPairId(const Json& value, absl::string_view path, const char* key,
                                    int32_t vocab_size) {
  const std::string field = JoinPath(path, key);
  const Json* pair = FindField(value, key);
  if (pair == nullptr) return FieldError(field, "missing");
  if (!pair->is_array() || pair->size() != 2 || !(*pair)[0].is_string()) {
    return FieldError(field, absl::StrCat("expected [\"TOKEN\", ID], got ", Describe(*pair)));
  }
  return CheckId((*pair)[1], IndexPath(field, 1), vocab_size);
}

absl::StatusOr<std::vector<int32_t>> ParseTemplate(
    const Json& value, absl::string_view path, const char* key, bool single,
    const absl::flat_hash_map<std::string, std::vector<int32_t>>& specials) {
  const std::string field = JoinPath(path, key);
  const Json* list = FindField(value, key);
  if (list == nullptr) return FieldError(field, "missing");
  if (!list->is_array()) {
    return FieldError(field, absl::StrCat("expected an array, got ", JsonTypeName(*list)));
  }
  std::vector<int32_t> pieces;
  bool have_a = false;
  for (size_t i = 0; i < list->size(); ++i) {
    const Json& item = (*list)[i];
    const std::string item_path = IndexPath(field, i);
    if (!item.is_object() || item.size() != 1) {
      return FieldError(item_path, "expected {\"SpecialToken\": ...} or {\"Sequence\": ...}");
    }
    if (const Json* special = FindField(item, "SpecialToken")) {
      const std::string sp = JoinPath(item_path, "SpecialToken");
      if (!special->is_object()) return FieldError(sp, "expected an object");
      FJORD_ASSIGN_OR_RETURN(std::string name, GetString(*special, sp, "id"));
      auto it = specials.find(name);
      if (it == specials.end()) {
        return FieldError(JoinPath(sp, "id"),
                          absl::StrCat("\"", name, "\" is not in special_tokens"));
      }
      pieces.insert(pieces.end(), it->second.begin(), it->second.end());
    } else if (const Json* sequence = FindField(item, "Sequence")) {
      const std::string sp = JoinPath(item_path, "Sequence");
      if (!sequence->is_object()) return FieldError(sp, "expected an object");
      absl::StatusOr<std::string> id = GetString(*sequence, sp, "id");
      if (!id.ok()) return id.status();
      const bool is_a = *id == "A";
      if (!is_a && *id != "B") {
        return FieldError(JoinPath(sp, "id"),
                          absl::StrCat("expected \"A\" or \"B\", got \"", *id, "\""));
      }
      if (single && !is_a) return FieldError(JoinPath(sp, "id"), "a single template has no B");
      if (is_a) {
        if (single && have_a) return FieldError(item_path, "a single template has one A");
        have_a = true;
        pieces.push_back(kSequence);
      }
    } else {
      return FieldError(item_path, "expected {\"SpecialToken\": ...} or {\"Sequence\": ...}");
    }
  }
  if (single && !have_a) return FieldError(field, "the template has no Sequence A");
  return pieces;
}

}  // namespace

absl::StatusOr<std::unique_ptr<PostProcessor>> ParsePostProcessor(const Json& value,
                                                                  absl::string_view path,
                                                                  int32_t vocab_size, int depth) {
  FJORD_RETURN_IF_ERROR(CheckDepth(path, depth));
  FJORD_ASSIGN_OR_RETURN(std::string type, GetType(value, path));
  if (type == "ByteLevel") return std::make_unique<NoOpPostProcessor>();  // offsets only
  if (type == "TemplateProcessing") {
    const std::string sp = JoinPath(path, "special_tokens");
    const Json* specials_json = FindField(value, "special_tokens");
    absl::flat_hash_map<std::string, std::vector<int32_t>> specials;
    if (specials_json != nullptr) {
      if (!specials_json->is_object()) {
        return FieldError(sp,
                          absl::StrCat("expected an object, got ", JsonTypeName(*specials_json)));
      }
      for (auto it = specials_json->begin(); it != specials_json->end(); ++it) {
        const std::string entry = JoinPath(sp, it.key());
        if (!it.value().is_object()) return FieldError(entry, "expected an object");
        const std::string ids_path = JoinPath(entry, "ids");
        const Json* ids = FindField(it.value(), "ids");
        if (ids == nullptr) return FieldError(ids_path, "missing");
        if (!ids->is_array()) return FieldError(ids_path, "expected an array of ids");
        std::vector<int32_t>& out = specials[it.key()];
        for (size_t i = 0; i < ids->size(); ++i) {
          FJORD_ASSIGN_OR_RETURN(const int32_t id,
                                 CheckId((*ids)[i], IndexPath(ids_path, i), vocab_size));
          out.push_back(id);
        }
      }
    }
    FJORD_ASSIGN_OR_RETURN(std::vector<int32_t> single,
                           ParseTemplate(value, path, "single", true, specials));
    if (FindField(value, "pair") != nullptr) {
      FJORD_RETURN_IF_ERROR(ParseTemplate(value, path, "pair", false, specials).status());
    }
    return std::make_unique<TemplatePostProcessor>(std::move(single));
  }
  if (type == "BertProcessing" || type == "RobertaProcessing") {
    FJORD_ASSIGN_OR_RETURN(const int32_t cls, TokenPairId(value, path, "cls", vocab_size));
    FJORD_ASSIGN_OR_RETURN(const int32_t sep, TokenPairId(value, path, "sep", vocab_size));
    return std::make_unique<TemplatePostProcessor>(std::vector<int32_t>{cls, kSequence, sep});
  }
  if (type == "Sequence") {
    const std::string field = JoinPath(path, "processors");
    const Json* list = FindField(value, "processors");
    if (list == nullptr) return FieldError(field, "missing");
    if (!list->is_array()) {
      return FieldError(field, absl::StrCat("expected an array, got ", JsonTypeName(*list)));
    }
    std::vector<std::unique_ptr<PostProcessor>> parts;
    for (size_t i = 0; i < list->size(); ++i) {
      FJORD_ASSIGN_OR_RETURN(
          auto part, ParsePostProcessor((*list)[i], IndexPath(field, i), vocab_size, depth + 1));
      parts.push_back(std::move(part));
    }
    return std::make_unique<SequencePostProcessor>(std::move(parts));
  }
  return FieldError(JoinPath(path, "type"),
                    absl::StrCat("unsupported post_processor \"", type,
                                 "\" (fjord supports TemplateProcessing, ByteLevel, "
                                 "BertProcessing, RobertaProcessing, Sequence)"));
}

}  // namespace fjord::tokenizer::internal

#include "runtime/tokenizer/tokenizer.h"

#include <algorithm>
#include <utility>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "nlohmann/json.hpp"
#include "runtime/tokenizer/added_vocabulary.h"
#include "runtime/tokenizer/bpe.h"
#include "runtime/tokenizer/decoder.h"
#include "runtime/tokenizer/json_fields.h"
#include "runtime/tokenizer/normalizer.h"
#include "runtime/tokenizer/post_processor.h"
#include "runtime/tokenizer/pre_tokenizer.h"
#include "runtime/tokenizer/unicode.h"
#include "runtime/util/env.h"
#include "runtime/util/status_macros.h"

namespace fjord::tokenizer {

using internal::AddedToken;
using internal::AddedVocabulary;
using internal::BpeModel;
using internal::Decoder;
using internal::FieldError;
using internal::FindField;
using internal::GetBool;
using internal::GetString;
using internal::IndexPath;
using internal::Json;
using internal::JsonTypeName;
using internal::Normalizer;
using internal::Pieces;
using internal::PostProcessor;
using internal::PreTokenizer;
using internal::Segment;

struct Tokenizer::Impl {
  std::unique_ptr<Normalizer> normalizer;       // may be null
  std::unique_ptr<PreTokenizer> pre_tokenizer;  // may be null
  std::unique_ptr<BpeModel> model;
  std::unique_ptr<AddedVocabulary> added;
  std::unique_ptr<PostProcessor> post_processor;        // may be null
  std::unique_ptr<Decoder> decoder;                     // may be null
  absl::flat_hash_map<std::string, int32_t> added_ids;  // content -> id
  // The spelling of each added token's id, as HF's id_to_token: the content,
  // or for normalized=true tokens the content through the normalizer.
  absl::flat_hash_map<int32_t, std::string> added_strings;
  std::vector<bool> special;  // by id
  // Ids that Decode(skip_special_tokens) drops: as HF, those spelled as the
  // content of a special token (a normalized=true special spelled otherwise,
  // e.g. "▁<s>", is kept).
  std::vector<bool> skipped_in_decode;
  int32_t vocab_size = 0;
  std::optional<int32_t> bos;

  const std::string& Token(int32_t id) const {
    if (!added_strings.empty()) {
      auto it = added_strings.find(id);
      if (it != added_strings.end()) return it->second;
    }
    return model->IdToToken(id);
  }
  void EncodeText(absl::string_view text, bool at_start, std::vector<int32_t>* ids) const;
};

namespace {

absl::Status WithName(absl::string_view name, const absl::Status& status) {
  return absl::Status(status.code(), absl::StrCat(name, ": ", status.message()));
}

absl::StatusOr<std::vector<AddedToken>> ParseAddedTokens(const Json& root, const BpeModel& model) {
  std::vector<AddedToken> tokens;
  const Json* list = FindField(root, "added_tokens");
  if (list == nullptr) return tokens;
  if (!list->is_array()) {
    return FieldError("added_tokens", absl::StrCat("expected an array, got ", JsonTypeName(*list)));
  }
  absl::flat_hash_map<std::string, size_t> seen;  // content -> index
  int64_t max_added = -1;
  for (size_t i = 0; i < list->size(); ++i) {
    const Json& item = (*list)[i];
    const std::string path = IndexPath("added_tokens", i);
    if (!item.is_object()) {
      return FieldError(path, absl::StrCat("expected an object, got ", JsonTypeName(item)));
    }
    AddedToken t;
    FJORD_ASSIGN_OR_RETURN(t.content, GetString(item, path, "content"));
    const Json* id_json = FindField(item, "id");
    if (id_json == nullptr) return FieldError(internal::JoinPath(path, "id"), "missing");
    FJORD_ASSIGN_OR_RETURN(
        const int64_t id,
        internal::AsUint(*id_json, internal::JoinPath(path, "id"), (int64_t{1} << 31) - 2));
    FJORD_ASSIGN_OR_RETURN(t.special, GetBool(item, path, "special", false));
    FJORD_ASSIGN_OR_RETURN(t.single_word, GetBool(item, path, "single_word", false));
    FJORD_ASSIGN_OR_RETURN(t.lstrip, GetBool(item, path, "lstrip", false));
    FJORD_ASSIGN_OR_RETURN(t.rstrip, GetBool(item, path, "rstrip", false));
    FJORD_ASSIGN_OR_RETURN(t.normalized, GetBool(item, path, "normalized", !t.special));
    if (t.content.empty()) continue;  // HF ignores empty added tokens
    if (auto it = seen.find(t.content); it != seen.end()) {
      return FieldError(
          internal::JoinPath(path, "content"),
          absl::StrCat("\"", t.content, "\" is already added_tokens[", it->second, "]"));
    }
    seen[t.content] = i;
    // The id HF gives it: its vocabulary id, else the next one after the
    // vocabulary and the added tokens so far.
    std::optional<int32_t> expected = model.TokenToId(t.content);
    if (!expected) expected = static_cast<int32_t>(std::max<int64_t>(model.size(), max_added + 1));
    if (id != *expected) {
      return FieldError(
          internal::JoinPath(path, "id"),
          absl::StrCat(id, " for \"", t.content, "\", but Hugging Face tokenizers gives it id ",
                       *expected,
                       model.TokenToId(t.content)
                           ? " (its id in model.vocab)"
                           : " (added tokens that are not in model.vocab take the ids "
                             "right after it, in order)"));
    }
    t.id = *expected;
    max_added = std::max<int64_t>(max_added, t.id);
    tokens.push_back(std::move(t));
  }
  return tokens;
}

}  // namespace

Tokenizer::Tokenizer(std::unique_ptr<const Impl> impl) : impl_(std::move(impl)) {}
Tokenizer::~Tokenizer() = default;

absl::StatusOr<std::unique_ptr<Tokenizer>> Tokenizer::FromFile(const std::string& path, Env* env) {
  if (env == nullptr) env = Env::Default();
  FJORD_ASSIGN_OR_RETURN(std::string text, env->ReadFileToString(path));
  return FromJson(text, path);
}

absl::StatusOr<std::unique_ptr<Tokenizer>> Tokenizer::FromJson(absl::string_view json,
                                                               absl::string_view name) {
  if (std::optional<size_t> bad = internal::FindInvalidUtf8(json)) {
    return absl::InvalidArgumentError(
        absl::StrCat(name, ": not valid UTF-8 (byte offset ", *bad, ")"));
  }
  Json root;
  try {
    root = Json::parse(json.begin(), json.end());
  } catch (const Json::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat(name, ": not valid JSON: ", e.what()));
  }
  if (!root.is_object()) {
    return absl::InvalidArgumentError(
        absl::StrCat(name, ": expected a JSON object, got ", JsonTypeName(root)));
  }
  auto impl = std::make_unique<Impl>();
  absl::Status status = [&]() -> absl::Status {
    if (const Json* version = FindField(root, "version")) {
      if (!version->is_string() || version->get<std::string>() != "1.0") {
        return FieldError("version",
                          absl::StrCat("unsupported tokenizer.json version ",
                                       internal::Describe(*version), " (expected \"1.0\")"));
      }
    }
    const Json* model = FindField(root, "model");
    if (model == nullptr) return FieldError("model", "missing");
    FJORD_ASSIGN_OR_RETURN(impl->model, BpeModel::Parse(*model, "model"));
    if (const Json* n = FindField(root, "normalizer")) {
      FJORD_ASSIGN_OR_RETURN(impl->normalizer, internal::ParseNormalizer(*n, "normalizer"));
    }
    if (const Json* p = FindField(root, "pre_tokenizer")) {
      FJORD_ASSIGN_OR_RETURN(impl->pre_tokenizer, internal::ParsePreTokenizer(*p, "pre_tokenizer"));
    }
    FJORD_ASSIGN_OR_RETURN(std::vector<AddedToken> added, ParseAddedTokens(root, *impl->model));
    impl->vocab_size = impl->model->size();
    for (const AddedToken& t : added) {
      impl->vocab_size = std::max(impl->vocab_size, t.id + 1);
      impl->added_ids[t.content] = t.id;
    }
    impl->special.assign(static_cast<size_t>(impl->vocab_size), false);
    for (const AddedToken& t : added) {
      std::string spelling = t.content;
      if (t.normalized && impl->normalizer != nullptr) impl->normalizer->Apply(&spelling);
      impl->added_strings[t.id] = std::move(spelling);
      if (t.special) impl->special[static_cast<size_t>(t.id)] = true;
    }
    absl::flat_hash_set<std::string> special_contents;
    for (const AddedToken& t : added) {
      if (t.special) special_contents.insert(t.content);
    }
    impl->skipped_in_decode.assign(static_cast<size_t>(impl->vocab_size), false);
    if (!special_contents.empty()) {
      for (int32_t id = 0; id < impl->vocab_size; ++id) {
        impl->skipped_in_decode[static_cast<size_t>(id)] =
            special_contents.contains(impl->Token(id));
      }
    }
    impl->added = std::make_unique<AddedVocabulary>(std::move(added), impl->normalizer.get());
    if (const Json* p = FindField(root, "post_processor")) {
      FJORD_ASSIGN_OR_RETURN(impl->post_processor,
                             internal::ParsePostProcessor(*p, "post_processor", impl->vocab_size));
    }
    if (const Json* d = FindField(root, "decoder")) {
      FJORD_ASSIGN_OR_RETURN(impl->decoder, internal::ParseDecoder(*d, "decoder"));
    }
    return absl::OkStatus();
  }();
  if (!status.ok()) return WithName(name, status);

  // BOS: what the post-processor puts in front, else a conventional spelling.
  if (impl->post_processor != nullptr) {
    constexpr int32_t kSentinel = -7;
    std::vector<int32_t> probe = {kSentinel};
    impl->post_processor->Apply(&probe);
    if (!probe.empty() && probe[0] != kSentinel) impl->bos = probe[0];
  } else {
    for (const char* spelling : {"<|begin_of_text|>", "<s>", "<bos>"}) {
      auto it = impl->added_ids.find(spelling);
      if (it != impl->added_ids.end() && impl->special[static_cast<size_t>(it->second)]) {
        impl->bos = it->second;
        break;
      }
    }
  }
  return std::unique_ptr<Tokenizer>(new Tokenizer(std::move(impl)));
}

void Tokenizer::Impl::EncodeText(absl::string_view text, bool at_start,
                                 std::vector<int32_t>* ids) const {
  if (pre_tokenizer == nullptr) {
    model->Tokenize(text, ids);
    return;
  }
  thread_local Pieces in, out;
  in.clear();
  out.clear();
  in.Add(text, at_start);
  pre_tokenizer->Apply(in, &out);
  for (size_t i = 0; i < out.size(); ++i) model->Tokenize(out[i], ids);
  in.Trim(size_t{16} << 20);
  out.Trim(size_t{16} << 20);
}

std::vector<int32_t> Tokenizer::Encode(absl::string_view text, bool add_special_tokens) const {
  EncodeOptions options;
  options.add_special_tokens = add_special_tokens;
  return Encode(text, options);
}

std::vector<int32_t> Tokenizer::Encode(absl::string_view raw, const EncodeOptions& options) const {
  const Impl& m = *impl_;
  std::string repaired;
  absl::string_view text = raw;
  if (internal::FindInvalidUtf8(raw)) {
    repaired = internal::ToValidUtf8(raw);
    text = repaired;
  }
  std::vector<int32_t> ids;
  ids.reserve(text.size() / 3 + 4);
  // 1. Added tokens that match the raw text; 2. the normalizer on the text
  // between them; 3. added tokens that match the normalized text; 4. the
  // pre-tokenizer and the model on what is left.
  std::vector<Segment> raw_segments, norm_segments;
  m.added->Split(text, /*normalized=*/false, options.split_special_tokens, &raw_segments);
  std::string normalized;
  for (const Segment& s : raw_segments) {
    if (s.token_id >= 0) {
      ids.push_back(s.token_id);
      continue;
    }
    normalized.assign(text.data() + s.start, s.end - s.start);
    if (m.normalizer != nullptr) m.normalizer->Apply(&normalized);
    norm_segments.clear();
    m.added->Split(normalized, /*normalized=*/true, options.split_special_tokens, &norm_segments);
    for (const Segment& n : norm_segments) {
      if (n.token_id >= 0) {
        ids.push_back(n.token_id);
      } else {
        m.EncodeText(absl::string_view(normalized).substr(n.start, n.end - n.start),
                     s.start == 0 && n.start == 0, &ids);
      }
    }
  }
  if (options.add_special_tokens && m.post_processor != nullptr) m.post_processor->Apply(&ids);
  return ids;
}

std::string Tokenizer::Decode(const std::vector<int32_t>& ids, bool skip_special_tokens) const {
  const Impl& m = *impl_;
  std::vector<std::string> tokens;
  tokens.reserve(ids.size());
  for (int32_t id : ids) {
    if (id < 0 || id >= m.vocab_size) continue;
    if (skip_special_tokens && m.skipped_in_decode[static_cast<size_t>(id)]) continue;
    tokens.push_back(m.Token(id));
  }
  if (m.decoder == nullptr) return absl::StrJoin(tokens, " ");
  m.decoder->DecodeChain(&tokens);
  return absl::StrJoin(tokens, "");
}

int32_t Tokenizer::vocab_size() const { return impl_->vocab_size; }

bool Tokenizer::IsSpecial(int32_t id) const {
  return id >= 0 && id < impl_->vocab_size && impl_->special[static_cast<size_t>(id)];
}

std::optional<int32_t> Tokenizer::TokenToId(absl::string_view token) const {
  auto it = impl_->added_ids.find(token);
  if (it != impl_->added_ids.end()) return it->second;
  return impl_->model->TokenToId(token);
}

std::optional<std::string> Tokenizer::IdToToken(int32_t id) const {
  if (id < 0 || id >= impl_->vocab_size) return std::nullopt;
  return impl_->Token(id);
}

std::optional<int32_t> Tokenizer::bos_id() const { return impl_->bos; }

std::vector<int32_t> Tokenizer::SpecialIds() const {
  std::vector<int32_t> out;
  for (int32_t id = 0; id < impl_->vocab_size; ++id) {
    if (impl_->special[static_cast<size_t>(id)]) out.push_back(id);
  }
  return out;
}

}  // namespace fjord::tokenizer

// Test helpers for runtime/tokenizer: StatusIs (runtime/util) and builders of small
// tokenizer.json documents (byte-level and SentencePiece-style BPE).
#ifndef FJORD_RUNTIME_TOKENIZER_TEST_UTIL_H_
#define FJORD_RUNTIME_TOKENIZER_TEST_UTIL_H_

#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_format.h"
#include "gmock/gmock.h"
#include "nlohmann/json.hpp"
#include "runtime/tokenizer/byte_level.h"
#include "runtime/util/status_matchers.h"

namespace fjord::tokenizer::testing {

using Json = nlohmann::json;

using ::fjord::status_testing::StatusIs;  // runtime/util/status_matchers.h

constexpr char kLlama3Pattern[] =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
constexpr char kQwen2Pattern[] =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";

// The byte-level spelling of `bytes` ("Ġthe" for " the").
inline std::string ByteLevel(const std::string& bytes) {
  std::string out;
  internal::AppendByteLevel(bytes, &out);
  return out;
}

// A BPE model: `base` tokens first (ids 0..), then the merges that build each
// word of `words` left to right (each merged token added to the vocabulary).
struct BpeBuilder {
  Json vocab = Json::object();
  Json merges = Json::array();
  void AddToken(const std::string& token) {
    if (!vocab.contains(token)) vocab[token] = static_cast<int>(vocab.size());
  }
  // Adds merges building `pieces` (already-spelled symbols) left to right.
  void AddWord(const std::vector<std::string>& pieces) {
    std::string left = pieces[0];
    for (size_t i = 1; i < pieces.size(); ++i) {
      const std::string merged = left + pieces[i];
      if (!vocab.contains(merged)) {
        merges.push_back(left + " " + pieces[i]);
        AddToken(merged);
      }
      left = merged;
    }
  }
};

// Byte-level BPE: the 256 byte characters, then merges building `words`
// (given as raw text, e.g. " the").
inline BpeBuilder ByteLevelBpe(const std::vector<std::string>& words) {
  BpeBuilder b;
  for (int c = 0; c < 256; ++c) b.AddToken(std::string(internal::ByteToChar(c)));
  for (const std::string& w : words) {
    std::vector<std::string> pieces;
    for (unsigned char c : w) pieces.emplace_back(internal::ByteToChar(c));
    b.AddWord(pieces);
  }
  return b;
}

inline Json Model(const BpeBuilder& b, Json extra = Json::object()) {
  Json m = {{"type", "BPE"},
            {"dropout", nullptr},
            {"unk_token", nullptr},
            {"continuing_subword_prefix", nullptr},
            {"end_of_word_suffix", nullptr},
            {"fuse_unk", false},
            {"byte_fallback", false},
            {"ignore_merges", false},
            {"vocab", b.vocab},
            {"merges", b.merges}};
  for (auto it = extra.begin(); it != extra.end(); ++it) m[it.key()] = it.value();
  return m;
}

inline Json AddedToken(int id, const std::string& content, bool special = true,
                       bool normalized = false) {
  return {{"id", id},        {"content", content},       {"single_word", false}, {"lstrip", false},
          {"rstrip", false}, {"normalized", normalized}, {"special", special}};
}

// A whole tokenizer.json.
inline Json Document(Json model, Json normalizer = nullptr, Json pre_tokenizer = nullptr,
                     Json decoder = nullptr, Json post_processor = nullptr,
                     Json added_tokens = Json::array()) {
  return {{"version", "1.0"},
          {"truncation", nullptr},
          {"padding", nullptr},
          {"added_tokens", std::move(added_tokens)},
          {"normalizer", std::move(normalizer)},
          {"pre_tokenizer", std::move(pre_tokenizer)},
          {"post_processor", std::move(post_processor)},
          {"decoder", std::move(decoder)},
          {"model", std::move(model)}};
}

inline Json SplitPreTokenizer(const std::string& regex, const std::string& behavior = "Isolated",
                              bool invert = false) {
  return {{"type", "Split"},
          {"pattern", {{"Regex", regex}}},
          {"behavior", behavior},
          {"invert", invert}};
}

inline Json ByteLevelPreTokenizer(bool add_prefix_space, bool use_regex) {
  return {{"type", "ByteLevel"},
          {"add_prefix_space", add_prefix_space},
          {"trim_offsets", true},
          {"use_regex", use_regex}};
}

// Llama 3's pre-tokenizer: its split regex, then bytes to characters.
inline Json Llama3PreTokenizer() {
  return {
      {"type", "Sequence"},
      {"pretokenizers", {SplitPreTokenizer(kLlama3Pattern), ByteLevelPreTokenizer(false, false)}}};
}

inline Json ByteLevelDecoder() {
  return {{"type", "ByteLevel"},
          {"add_prefix_space", true},
          {"trim_offsets", true},
          {"use_regex", true}};
}

// Llama 3's post-processor: <|begin_of_text|> (id `bos`) in front.
inline Json BosTemplate(const std::string& bos_token, int bos) {
  return {{"type", "TemplateProcessing"},
          {"single",
           {{{"SpecialToken", {{"id", bos_token}, {"type_id", 0}}}},
            {{"Sequence", {{"id", "A"}, {"type_id", 0}}}}}},
          {"pair",
           {{{"SpecialToken", {{"id", bos_token}, {"type_id", 0}}}},
            {{"Sequence", {{"id", "A"}, {"type_id", 0}}}},
            {{"Sequence", {{"id", "B"}, {"type_id", 1}}}}}},
          {"special_tokens",
           {{bos_token, {{"id", bos_token}, {"ids", {bos}}, {"tokens", {bos_token}}}}}}};
}

// A SentencePiece-style (Llama 2) BPE: <unk> <s> </s>, the 256 <0xNN> byte
// tokens, "▁" and the characters of `alphabet` (UTF-8), then merges building
// `words` (spelled with "▁" for spaces).
inline BpeBuilder SentencePieceBpe(const std::string& alphabet,
                                   const std::vector<std::string>& words) {
  BpeBuilder b;
  b.AddToken("<unk>");
  b.AddToken("<s>");
  b.AddToken("</s>");
  for (int c = 0; c < 256; ++c) b.AddToken(absl::StrFormat("<0x%02X>", c));
  b.AddToken("\xE2\x96\x81");
  auto chars = [](const std::string& s) {
    std::vector<std::string> out;
    for (size_t i = 0; i < s.size();) {
      size_t n = 1;
      const unsigned char c = static_cast<unsigned char>(s[i]);
      if (c >= 0xF0)
        n = 4;
      else if (c >= 0xE0)
        n = 3;
      else if (c >= 0xC0)
        n = 2;
      out.push_back(s.substr(i, n));
      i += n;
    }
    return out;
  };
  for (const std::string& c : chars(alphabet)) b.AddToken(c);
  for (const std::string& w : words) b.AddWord(chars(w));
  return b;
}

}  // namespace fjord::tokenizer::testing

#endif  // FJORD_RUNTIME_TOKENIZER_TEST_UTIL_H_

// fjord's tokenizer: Hugging Face tokenizer.json (BPE models) loaded in C++,
// with ids exactly equal to those of the Hugging Face `tokenizers` library.
// Target //runtime/tokenizer.
//
//   FJORD_ASSIGN_OR_RETURN(std::unique_ptr<Tokenizer> tok,
//                          Tokenizer::FromFile(model_dir + "/tokenizer.json"));
//   std::vector<int32_t> ids = tok->Encode("Hello", /*add_special_tokens=*/true);
//   std::string text = tok->Decode(ids, /*skip_special_tokens=*/true);
//
// Supported (what Llama 2/3, Qwen2/2.5 and most BPE tokenizers ship):
//   model          BPE: vocab, merges ("a b" strings or ["a", "b"] pairs),
//                  unk_token, fuse_unk, byte_fallback, ignore_merges,
//                  continuing_subword_prefix, end_of_word_suffix
//   normalizer     NFC, NFD, NFKC, NFKD, Prepend, Replace, Strip, Sequence
//   pre_tokenizer  Split (String or Regex pattern, every behavior, invert),
//                  ByteLevel, Metaspace, Digits, Whitespace, WhitespaceSplit,
//                  Sequence
//   post_processor TemplateProcessing, ByteLevel, BertProcessing,
//                  RobertaProcessing, Sequence
//   decoder        ByteLevel, Metaspace, Replace, ByteFallback, Fuse, Strip,
//                  BPEDecoder, Sequence
//   added_tokens   matched before the model, longest first, with their flags
//                  (special, normalized, lstrip, rstrip, single_word)
// Anything else is refused at load time (see FromJson). "truncation" and
// "padding" are ignored: fjord truncates and packs in runtime/data.
//
// Text that is not valid UTF-8 is encoded as if each maximal invalid byte
// sequence were U+FFFD (Python's bytes.decode("utf-8", errors="replace")),
// so Encode(bytes) == HF's encode(bytes.decode(errors="replace")). Regex
// character properties come from PCRE2 (Unicode 14) and normalization from
// utf8proc (Unicode 15); characters assigned in later Unicode versions may
// tokenize differently from HF.
//
// Thread-safety: a Tokenizer is immutable after loading, except for an
// internal word cache guarded by mutexes; every const method may be called
// concurrently from any number of threads.
#ifndef FJORD_RUNTIME_TOKENIZER_TOKENIZER_H_
#define FJORD_RUNTIME_TOKENIZER_TOKENIZER_H_

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace fjord {
class Env;
}  // namespace fjord

namespace fjord::tokenizer {

struct EncodeOptions {
  // Apply the post-processor (e.g. Llama 3's <|begin_of_text|> in front).
  // Default false, unlike HF's encode(), so that pieces of a prompt can be
  // encoded and concatenated.
  bool add_special_tokens = false;
  // When true, text spelling a special added token (e.g. "<|eot_id|>") is NOT
  // matched as that token but encoded like any other text; non-special added
  // tokens still match. This is transformers' split_special_tokens=True and
  // tokenizers' encode_special_tokens = True; use it for untrusted content so
  // it can never inject control tokens. Default false: specials match (HF).
  bool split_special_tokens = false;
};

class Tokenizer {
 public:
  // Loads `path` (a tokenizer.json) through `env` (nullptr: Env::Default()).
  // NotFound etc. from the Env when the file cannot be read; otherwise as
  // FromJson with the path as the name.
  static absl::StatusOr<std::unique_ptr<Tokenizer>> FromFile(const std::string& path,
                                                             Env* env = nullptr);

  // Parses tokenizer.json text. InvalidArgument, with a message starting
  // "NAME: FIELD.PATH: ..." (e.g. "tokenizer.json: pre_tokenizer.
  // pretokenizers[0].pattern.Regex: invalid regex ..."), when the text is
  // not UTF-8 or not JSON, a component type is unknown or unsupported, a field
  // has the wrong type, a regex does not compile, a merge refers to a token
  // missing from the vocabulary, vocabulary ids are duplicated or not
  // 0..N-1, an added token's id differs from the one HF assigns it (the next
  // id after the vocabulary, or its vocabulary id), or the post-processor
  // names a token that does not exist.
  static absl::StatusOr<std::unique_ptr<Tokenizer>> FromJson(absl::string_view json,
                                                             absl::string_view name);

  ~Tokenizer();
  Tokenizer(const Tokenizer&) = delete;
  Tokenizer& operator=(const Tokenizer&) = delete;

  // Token ids of `text`, as HF's Tokenizer.encode(text, add_special_tokens)
  // (.ids). Never fails: unknown characters become the model's unk token or
  // byte-fallback tokens, or are dropped when the model has neither (as HF).
  std::vector<int32_t> Encode(absl::string_view text, bool add_special_tokens = false) const;
  std::vector<int32_t> Encode(absl::string_view text, const EncodeOptions& options) const;

  // Text of `ids`, as HF's Tokenizer.decode(ids, skip_special_tokens): the
  // tokens (IdToToken) through the tokenizer.json decoder, or joined with
  // spaces when it has none. skip_special_tokens drops the tokens spelled as
  // a special token (as HF: not a normalized=true special whose spelling the
  // normalizer changed). Ids outside [0, vocab_size()) are skipped. The result
  // is valid UTF-8 (incomplete byte sequences become U+FFFD, as HF).
  std::string Decode(const std::vector<int32_t>& ids, bool skip_special_tokens = false) const;

  // Number of ids: the model's vocabulary plus added tokens that are not in
  // it. Every id in [0, vocab_size()) has a token.
  int32_t vocab_size() const;

  // Whether `id` is an added token marked "special" (<|eot_id|>, <s>, ...).
  // False for ids out of range.
  bool IsSpecial(int32_t id) const;

  // The token spelled `token` (added tokens first, then the vocabulary, as HF
  // token_to_id), or nullopt.
  std::optional<int32_t> TokenToId(absl::string_view token) const;

  // The spelling of `id` (byte-level tokens as stored, e.g. "Ġthe"), or
  // nullopt when out of range. As HF's id_to_token, an added token with
  // normalized=true is spelled as the normalizer rewrites it (Llama 2's
  // Prepend normalizer: "▁<s>"); Decode uses these spellings too.
  std::optional<std::string> IdToToken(int32_t id) const;

  // The beginning-of-sequence token: the special token the post-processor
  // puts in front of the text (Llama 2's <s>, Llama 3's <|begin_of_text|>);
  // without such a post-processor, a special added token spelled
  // <|begin_of_text|>, <s> or <bos>. nullopt otherwise (Qwen2 has none).
  std::optional<int32_t> bos_id() const;

  // Ids of every special added token, ascending.
  std::vector<int32_t> SpecialIds() const;

 private:
  struct Impl;
  explicit Tokenizer(std::unique_ptr<const Impl> impl);
  std::unique_ptr<const Impl> impl_;
};

}  // namespace fjord::tokenizer

#endif  // FJORD_RUNTIME_TOKENIZER_TOKENIZER_H_

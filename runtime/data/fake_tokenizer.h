// Test-only DataTokenizer: a byte tokenizer with two merges, so tests can
// predict ids by hand.
//   special tokens: ids 0..N-1 in the order given to the constructor
//   "\n\n" -> 2000, "\n " -> 2001 (greedy, left to right)
//   any other byte b -> 100 + b
// EncodeOrdinary never matches special tokens, as the contract requires.
#ifndef FJORD_RUNTIME_DATA_FAKE_TOKENIZER_H_
#define FJORD_RUNTIME_DATA_FAKE_TOKENIZER_H_

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/strings/string_view.h"
#include "runtime/data/tokenizer_view.h"

namespace fjord::data {

class FakeTokenizer : public DataTokenizer {
 public:
  static constexpr int32_t kNewlineNewline = 2000;
  static constexpr int32_t kNewlineSpace = 2001;

  explicit FakeTokenizer(std::vector<std::string> specials, bool has_bos = false)
      : specials_(std::move(specials)), has_bos_(has_bos) {}

  // Llama 3's special tokens (bos = <|begin_of_text|> = 0).
  static FakeTokenizer Llama3() {
    return FakeTokenizer({"<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>",
                          "<|eot_id|>", "<|end_of_text|>"},
                         /*has_bos=*/true);
  }
  // Qwen2's: no BOS.
  static FakeTokenizer ChatML() {
    return FakeTokenizer({"<|endoftext|>", "<|im_start|>", "<|im_end|>"});
  }

  static int32_t Byte(char c) { return 100 + static_cast<unsigned char>(c); }

  std::vector<int32_t> EncodeOrdinary(absl::string_view text) const override {
    std::vector<int32_t> ids;
    for (size_t i = 0; i < text.size(); ++i) {
      if (i + 1 < text.size() && text[i] == '\n' && text[i + 1] == '\n') {
        ids.push_back(kNewlineNewline);
        ++i;
      } else if (i + 1 < text.size() && text[i] == '\n' && text[i + 1] == ' ') {
        ids.push_back(kNewlineSpace);
        ++i;
      } else {
        ids.push_back(Byte(text[i]));
      }
    }
    return ids;
  }
  std::optional<int32_t> SpecialTokenId(absl::string_view token) const override {
    for (size_t i = 0; i < specials_.size(); ++i) {
      if (specials_[i] == token) return static_cast<int32_t>(i);
    }
    return std::nullopt;
  }
  std::optional<std::string> IdToToken(int32_t id) const override {
    if (id >= 0 && id < static_cast<int32_t>(specials_.size())) return specials_[id];
    if (id >= 100 && id < 356) return std::string(1, static_cast<char>(id - 100));
    return std::nullopt;
  }
  std::optional<int32_t> bos_id() const override {
    return has_bos_ ? std::optional<int32_t>(0) : std::nullopt;
  }
  // Special tokens match (longest first) between ordinary runs.
  std::vector<int32_t> EncodeWithSpecialTokens(absl::string_view text) const override {
    std::vector<int32_t> ids;
    size_t run = 0, i = 0;
    while (i < text.size()) {
      int32_t best = -1;
      size_t best_len = 0;
      for (size_t k = 0; k < specials_.size(); ++k) {
        if (specials_[k].size() > best_len && text.substr(i, specials_[k].size()) == specials_[k]) {
          best = static_cast<int32_t>(k);
          best_len = specials_[k].size();
        }
      }
      if (best < 0) {
        ++i;
        continue;
      }
      std::vector<int32_t> ordinary = EncodeOrdinary(text.substr(run, i - run));
      ids.insert(ids.end(), ordinary.begin(), ordinary.end());
      ids.push_back(best);
      i += best_len;
      run = i;
    }
    std::vector<int32_t> ordinary = EncodeOrdinary(text.substr(run));
    ids.insert(ids.end(), ordinary.begin(), ordinary.end());
    return ids;
  }
  std::vector<std::string> SpecialTokens() const override { return specials_; }

  // Ids of `text` encoded as ordinary text (shorthand for tests).
  std::vector<int32_t> Ids(absl::string_view text) const { return EncodeOrdinary(text); }

 private:
  std::vector<std::string> specials_;
  bool has_bos_;
};

}  // namespace fjord::data

#endif  // FJORD_RUNTIME_DATA_FAKE_TOKENIZER_H_

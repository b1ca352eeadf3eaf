// Post-processors of tokenizer.json ("post_processor"): the special tokens
// added around an encoded text when add_special_tokens is set, as Hugging
// Face tokenizers does for a single sequence. Internal to runtime/tokenizer;
// implementations are immutable and thread-safe.
#ifndef FJORD_RUNTIME_TOKENIZER_POST_PROCESSOR_H_
#define FJORD_RUNTIME_TOKENIZER_POST_PROCESSOR_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "runtime/tokenizer/json_fields.h"

namespace fjord::tokenizer::internal {

class PostProcessor {
 public:
  virtual ~PostProcessor() = default;
  // *ids (one encoded sequence) with the special tokens added.
  virtual void Apply(std::vector<int32_t>* ids) const = 0;
};

// Parses a non-null "post_processor" value at `path`: TemplateProcessing,
// ByteLevel, BertProcessing, RobertaProcessing, Sequence. Every id it adds
// must be below `vocab_size`. InvalidArgument naming the field otherwise, for
// other types, or when a template names a special token it does not define.
absl::StatusOr<std::unique_ptr<PostProcessor>> ParsePostProcessor(const Json& value,
                                                                  absl::string_view path,
                                                                  int32_t vocab_size,
                                                                  int depth = 0);

}  // namespace fjord::tokenizer::internal

#endif  // FJORD_RUNTIME_TOKENIZER_POST_PROCESSOR_H_

// The model's own chat template, found in a model folder the way transformers
// finds it, and the `data.chat_template` setting resolved against it.
#ifndef FJORD_RUNTIME_DATA_MODEL_TEMPLATE_H_
#define FJORD_RUNTIME_DATA_MODEL_TEMPLATE_H_

#include <optional>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "runtime/data/chat_template.h"

namespace fjord::data {

// Looks in `model_dir`, in this order, for:
//   chat_template.jinja                     the template as a file
//   tokenizer_config.json  "chat_template"  a string, or a list of
//                                           {"name", "template"} (the one named
//                                           "default" is used)
//   chat_template.json     "chat_template"  a string
// bos_token and eos_token come from tokenizer_config.json when it has them
// (strings or {"content": ...} objects). Returns nullopt when none of the
// files has a template (missing files are not errors); InvalidArgument naming
// the file and field when a file is not valid JSON or its chat_template has
// the wrong shape; other errors when a file exists but cannot be read.
absl::StatusOr<std::optional<ModelChatTemplate>> FindModelChatTemplate(
    const std::string& model_dir);

// Resolves the config value `name` (data.chat_template) for the model in
// `model_dir` into options->chat_template and options->model_template:
//   "model"  the model's own template; FailedPrecondition naming the three
//            files looked at when the model has none.
//   "auto"   the model's own template when it has one, else kAuto (llama3 or
//            chatml by the tokenizer's special tokens, else none).
//   "llama3", "chatml", "none"  that template; the model's is not read.
// InvalidArgument for any other name, and as FindModelChatTemplate.
absl::Status ResolveChatTemplate(absl::string_view name, const std::string& model_dir,
                                 RenderOptions* options);

}  // namespace fjord::data

#endif  // FJORD_RUNTIME_DATA_MODEL_TEMPLATE_H_

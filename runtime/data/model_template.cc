#include "runtime/data/model_template.h"

#include <fstream>
#include <sstream>
#include <utility>

#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"
#include "runtime/util/status_macros.h"

namespace fjord::data {
namespace {

// The file's bytes, nullopt when it does not exist.
absl::StatusOr<std::optional<std::string>> ReadIfExists(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    std::ifstream probe(path);
    if (!probe.good()) return std::optional<std::string>();
    return absl::PermissionDeniedError(absl::StrCat(path, ": cannot be read"));
  }
  std::ostringstream text;
  text << in.rdbuf();
  if (in.bad()) return absl::DataLossError(absl::StrCat(path, ": read error"));
  return std::optional<std::string>(text.str());
}

absl::StatusOr<std::optional<nlohmann::json>> ReadJsonIfExists(const std::string& path) {
  FJORD_ASSIGN_OR_RETURN(std::optional<std::string> text, ReadIfExists(path));
  if (!text) return std::optional<nlohmann::json>();
  nlohmann::json j = nlohmann::json::parse(*text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": not a JSON object"));
  }
  return std::optional<nlohmann::json>(std::move(j));
}

// A token field: a string, an {"content": ...} object, or absent/null.
std::string TokenText(const nlohmann::json& config, const char* field) {
  auto it = config.find(field);
  if (it == config.end()) return "";
  if (it->is_string()) return it->get<std::string>();
  if (it->is_object()) {
    auto content = it->find("content");
    if (content != it->end() && content->is_string()) return content->get<std::string>();
  }
  return "";
}

}  // namespace

absl::StatusOr<std::optional<ModelChatTemplate>> FindModelChatTemplate(
    const std::string& model_dir) {
  const std::string dir = model_dir.empty() ? "." : model_dir;
  ModelChatTemplate found;
  const std::string config_path = dir + "/tokenizer_config.json";
  FJORD_ASSIGN_OR_RETURN(std::optional<nlohmann::json> config, ReadJsonIfExists(config_path));
  if (config) {
    found.bos_token = TokenText(*config, "bos_token");
    found.eos_token = TokenText(*config, "eos_token");
  }
  const std::string jinja_path = dir + "/chat_template.jinja";
  FJORD_ASSIGN_OR_RETURN(std::optional<std::string> jinja, ReadIfExists(jinja_path));
  if (jinja) {
    found.source = std::move(*jinja);
    found.file = jinja_path;
    return std::optional<ModelChatTemplate>(std::move(found));
  }
  if (config && config->contains("chat_template") && !(*config)["chat_template"].is_null()) {
    const nlohmann::json& t = (*config)["chat_template"];
    found.file = config_path + " (chat_template)";
    if (t.is_string()) {
      found.source = t.get<std::string>();
      return std::optional<ModelChatTemplate>(std::move(found));
    }
    if (t.is_array()) {
      for (const nlohmann::json& named : t) {
        if (named.is_object() && named.value("name", "") == "default" &&
            named.contains("template") && named["template"].is_string()) {
          found.source = named["template"].get<std::string>();
          found.file = config_path + " (chat_template, \"default\")";
          return std::optional<ModelChatTemplate>(std::move(found));
        }
      }
      return absl::InvalidArgumentError(absl::StrCat(
          config_path, ": chat_template is a list without an entry named \"default\""));
    }
    return absl::InvalidArgumentError(absl::StrCat(
        config_path, ": chat_template must be a string or a list of {name, template}"));
  }
  const std::string json_path = dir + "/chat_template.json";
  FJORD_ASSIGN_OR_RETURN(std::optional<nlohmann::json> json, ReadJsonIfExists(json_path));
  if (json && json->contains("chat_template")) {
    const nlohmann::json& t = (*json)["chat_template"];
    if (!t.is_string()) {
      return absl::InvalidArgumentError(
          absl::StrCat(json_path, ": chat_template must be a string"));
    }
    found.source = t.get<std::string>();
    found.file = json_path + " (chat_template)";
    return std::optional<ModelChatTemplate>(std::move(found));
  }
  return std::optional<ModelChatTemplate>();
}

absl::Status ResolveChatTemplate(absl::string_view name, const std::string& model_dir,
                                 RenderOptions* options) {
  FJORD_ASSIGN_OR_RETURN(ChatTemplate chosen, ParseChatTemplate(name));
  options->chat_template = chosen;
  options->model_template.reset();
  if (chosen != ChatTemplate::kAuto && chosen != ChatTemplate::kModel) return absl::OkStatus();
  FJORD_ASSIGN_OR_RETURN(std::optional<ModelChatTemplate> found, FindModelChatTemplate(model_dir));
  if (found) {
    options->chat_template = ChatTemplate::kModel;
    options->model_template = std::move(found);
    return absl::OkStatus();
  }
  if (chosen == ChatTemplate::kModel) {
    const std::string dir = model_dir.empty() ? "." : model_dir;
    return absl::FailedPreconditionError(absl::StrCat(
        "data.chat_template: model, but the model has no chat template (looked at ", dir,
        "/chat_template.jinja, ", dir, "/tokenizer_config.json (chat_template) and ", dir,
        "/chat_template.json); choose llama3, chatml or none, or add the model's template"));
  }
  return absl::OkStatus();
}

}  // namespace fjord::data

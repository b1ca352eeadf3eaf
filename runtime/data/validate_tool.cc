// validate_tool: checks a JSONL dataset against a tokenizer before training.
//
//   validate_tool TOKENIZER_JSON DATA.jsonl [--max-length N] [--truncate]
//       [--template auto|model|llama3|chatml|none] [--model-dir DIR]
//       [--train-on-inputs] [--system-prompt TEXT] [--eos-token TOKEN]
//       [--max-errors N] [--examples-out FILE]
//
// auto and model look for the model's own chat template in --model-dir
// (default: the folder of TOKENIZER_JSON), as model_template.h says.
// Prints the ValidationReport as JSON on stdout (dataset.h ToJson). Exit
// status: 0 valid, 2 invalid data, 1 anything else (bad arguments, unreadable
// tokenizer or dataset; stdout then has {"valid": false, "error": {...}}).
// --examples-out writes the tokenized examples of a valid file as JSONL
// ({"line", "input_ids", "targets"}), for inspection and interop tests.
// Flags take "--name VALUE" or "--name=VALUE"; "_" and "-" are equivalent.
#include <cstdio>
#include <fstream>
#include <iostream>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "nlohmann/json.hpp"
#include "runtime/data/dataset.h"
#include "runtime/data/model_template.h"
#include "runtime/data/tokenizer_adapter.h"
#include "runtime/tokenizer/tokenizer.h"
#include "runtime/util/status_macros.h"

namespace fjord::data {
namespace {

constexpr char kUsage[] =
    "usage: validate_tool TOKENIZER_JSON DATA.jsonl [--max-length N] [--truncate]\n"
    "    [--template auto|model|llama3|chatml|none] [--model-dir DIR] [--train-on-inputs]\n"
    "    [--system-prompt TEXT] [--eos-token TOKEN] [--max-errors N] [--examples-out FILE]\n";

struct Args {
  std::string tokenizer_path;
  std::string data_path;
  DataOptions options;
  std::string template_name = "auto";
  std::optional<std::string> model_dir;
  std::string examples_out;
};

int Fail(const absl::Status& status) {
  nlohmann::json j;
  j["valid"] = false;
  j["error"] = {{"code", absl::StatusCodeToString(status.code())},
                {"message", std::string(status.message())}};
  std::cout << j.dump(2, ' ', false, nlohmann::json::error_handler_t::replace) << "\n";
  std::cerr << "validate_tool: " << status.message() << "\n";
  return 1;
}

absl::StatusOr<Args> ParseArgs(int argc, char** argv) {
  Args args;
  std::vector<std::string> positional;
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    if (arg.rfind("--", 0) != 0) {
      positional.push_back(arg);
      continue;
    }
    std::string name = absl::StrReplaceAll(arg.substr(2), {{"_", "-"}});
    std::optional<std::string> value;
    if (size_t eq = name.find('='); eq != std::string::npos) {
      value = arg.substr(2 + eq + 1);
      name = name.substr(0, eq);
    }
    auto take = [&]() -> absl::StatusOr<std::string> {
      if (value) return *value;
      if (i + 1 >= argc)
        return absl::InvalidArgumentError(absl::StrCat("--", name, " needs a value"));
      return std::string(argv[++i]);
    };
    auto take_int = [&]() -> absl::StatusOr<int64_t> {
      FJORD_ASSIGN_OR_RETURN(std::string text, take());
      int64_t n;
      if (!absl::SimpleAtoi(text, &n) || n < 0) {
        return absl::InvalidArgumentError(
            absl::StrCat("--", name, " needs a non-negative integer, got \"", text, "\""));
      }
      return n;
    };
    if (name == "max-length") {
      FJORD_ASSIGN_OR_RETURN(int64_t n, take_int());
      args.options.max_length = n;
    } else if (name == "max-errors") {
      FJORD_ASSIGN_OR_RETURN(int64_t n, take_int());
      args.options.max_errors = n;
    } else if (name == "truncate" && !value) {
      args.options.truncate = true;
    } else if (name == "train-on-inputs" && !value) {
      args.options.render.train_on_inputs = true;
    } else if (name == "template") {
      FJORD_ASSIGN_OR_RETURN(std::string text, take());
      FJORD_RETURN_IF_ERROR(ParseChatTemplate(text).status());
      args.template_name = text;
    } else if (name == "model-dir") {
      FJORD_ASSIGN_OR_RETURN(std::string text, take());
      args.model_dir = text;
    } else if (name == "system-prompt") {
      FJORD_ASSIGN_OR_RETURN(std::string text, take());
      args.options.render.default_system_prompt = text;
    } else if (name == "eos-token") {
      FJORD_ASSIGN_OR_RETURN(std::string text, take());
      args.options.render.eos_token = text;
    } else if (name == "examples-out") {
      FJORD_ASSIGN_OR_RETURN(std::string text, take());
      args.examples_out = text;
    } else {
      return absl::InvalidArgumentError(absl::StrCat("unknown flag ", arg, "\n", kUsage));
    }
  }
  if (positional.size() != 2) {
    return absl::InvalidArgumentError(absl::StrCat("expected TOKENIZER_JSON and DATA.jsonl, got ",
                                                   positional.size(), " positional arguments\n",
                                                   kUsage));
  }
  args.tokenizer_path = positional[0];
  args.data_path = positional[1];
  if (!args.model_dir) {
    const size_t slash = args.tokenizer_path.rfind('/');
    args.model_dir = slash == std::string::npos ? "." : args.tokenizer_path.substr(0, slash);
  }
  FJORD_RETURN_IF_ERROR(
      ResolveChatTemplate(args.template_name, *args.model_dir, &args.options.render));
  return args;
}

absl::Status WriteExamples(const std::string& path, const std::vector<Example>& examples) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  if (!out) return absl::PermissionDeniedError(absl::StrCat("cannot write ", path));
  for (const Example& e : examples) {
    nlohmann::json j = {{"line", e.line}, {"input_ids", e.input_ids}, {"targets", e.targets}};
    out << j.dump() << "\n";
  }
  out.close();
  if (!out) return absl::DataLossError(absl::StrCat("error writing ", path));
  return absl::OkStatus();
}

int Run(int argc, char** argv) {
  absl::StatusOr<Args> args = ParseArgs(argc, argv);
  if (!args.ok()) return Fail(args.status());
  absl::StatusOr<std::unique_ptr<tokenizer::Tokenizer>> tok =
      tokenizer::Tokenizer::FromFile(args->tokenizer_path);
  if (!tok.ok()) return Fail(tok.status());
  const TokenizerAdapter adapter(**tok);
  absl::StatusOr<ValidationReport> report = ValidateJsonl(args->data_path, adapter, args->options);
  if (!report.ok()) return Fail(report.status());
  if (report->ok() && !args->examples_out.empty()) {
    absl::StatusOr<Dataset> dataset = LoadJsonl(args->data_path, adapter, args->options);
    if (!dataset.ok()) return Fail(dataset.status());
    if (absl::Status s = WriteExamples(args->examples_out, dataset->examples); !s.ok()) {
      return Fail(s);
    }
  }
  std::cout << report->ToJson() << "\n";
  return report->ok() ? 0 : 2;
}

}  // namespace
}  // namespace fjord::data

int main(int argc, char** argv) { return fjord::data::Run(argc, argv); }

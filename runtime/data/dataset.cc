#include "runtime/data/dataset.h"

#include <fstream>
#include <string>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"
#include "runtime/util/status_macros.h"

namespace fjord::data {
namespace {

void AddError(ValidationReport& report, const DataOptions& options, LineError error) {
  ++report.error_count;
  if (static_cast<int64_t>(report.errors.size()) < options.max_errors) {
    report.errors.push_back(std::move(error));
  }
}

// One streaming pass; keeps examples in `examples` when it is not null.
absl::StatusOr<ValidationReport> Process(std::istream& in, absl::string_view name,
                                         const DataTokenizer& tokenizer, const DataOptions& options,
                                         std::vector<Example>* examples) {
  if (options.max_length < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("max_length must be >= 0, got ", options.max_length));
  }
  if (options.max_line_bytes <= 0 || options.max_errors < 0) {
    return absl::InvalidArgumentError("max_line_bytes must be > 0 and max_errors >= 0");
  }
  FJORD_ASSIGN_OR_RETURN(ExampleRenderer renderer,
                         ExampleRenderer::Create(tokenizer, options.render));
  ValidationReport report;
  report.chat_template = renderer.chat_template();
  int64_t format_line = 0;
  auto read_line = [&](const std::string& line, int64_t n) {
    ParseResult parsed = ParseRecordLine(line, n);
    if (!parsed.record) {
      AddError(report, options, std::move(parsed.error));
      return;
    }
    const Record& record = *parsed.record;
    if (!report.format) {
      report.format = record.format;
      format_line = n;
    } else if (*report.format != record.format) {
      AddError(report, options,
               {n, "",
                absl::StrCat("format ", FormatName(record.format),
                             " differs from the file's format ", FormatName(*report.format),
                             " (set by line ", format_line, "); a file must use one format")});
      return;
    }
    absl::StatusOr<RenderedTokens> rendered = renderer.Render(record);
    if (!rendered.ok()) {
      AddError(report, options, {n, "", std::string(rendered.status().message())});
      return;
    }
    const int64_t length = static_cast<int64_t>(rendered->ids.size());
    const bool over = options.max_length > 0 && length > options.max_length;
    if (over && !options.truncate) {
      AddError(report, options,
               {n, "",
                absl::StrCat(length, " tokens after tokenization, over max_length ",
                             options.max_length, " (enable truncation to cut it)")});
      return;
    }
    Example example = MakeExample(rendered->ids, rendered->trained, options.max_length);
    example.line = n;
    const int64_t trained = CountTrained(example.targets);
    if (trained == 0) {
      AddError(report, options,
               {n, "",
                over ? absl::StrCat("no trained tokens left after truncation to ",
                                    options.max_length, " tokens (from ", length, ")")
                     : std::string("no trained tokens (every assistant message has weight 0, "
                                   "or the text is a single token)")});
      return;
    }
    ++report.examples;
    report.tokens += static_cast<int64_t>(example.input_ids.size());
    report.trained_tokens += trained;
    if (over) ++report.truncated;
    if (examples != nullptr) examples->push_back(std::move(example));
  };
  FJORD_ASSIGN_OR_RETURN(
      report.lines,
      ForEachJsonlLine(
          in, name, options.max_line_bytes,
          [&](LineError error) { AddError(report, options, std::move(error)); }, read_line));
  if (report.examples == 0 && report.error_count == 0) {
    AddError(report, options, {0, "", "no examples in the file"});
  }
  return report;
}

absl::StatusOr<std::ifstream> Open(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in.is_open()) {
    return absl::NotFoundError(absl::StrCat("cannot open dataset file ", path));
  }
  return in;
}

}  // namespace

std::string ValidationReport::Summary() const {
  std::string out;
  if (ok()) {
    absl::StrAppend(&out, "valid: ", examples, " examples, ", tokens, " tokens (", trained_tokens,
                    " trained)");
  } else {
    absl::StrAppend(&out, "invalid: ", error_count, error_count == 1 ? " error" : " errors", " in ",
                    lines, " lines (", examples, " valid examples, ", tokens, " tokens)");
  }
  if (truncated > 0) absl::StrAppend(&out, ", ", truncated, " truncated");
  if (format) absl::StrAppend(&out, "; format ", FormatName(*format));
  absl::StrAppend(&out, "; template ", ChatTemplateName(chat_template));
  AppendErrorLines(&out, errors, error_count);
  return out;
}

std::string ValidationReport::ToJson() const {
  nlohmann::json j;
  j["valid"] = ok();
  j["lines"] = lines;
  j["examples"] = examples;
  j["tokens"] = tokens;
  j["trained_tokens"] = trained_tokens;
  j["truncated"] = truncated;
  j["error_count"] = error_count;
  j["errors"] = ErrorsJson(errors);
  j["format"] = format ? nlohmann::json(std::string(FormatName(*format))) : nlohmann::json();
  j["template"] = std::string(ChatTemplateName(chat_template));
  j["summary"] = Summary();
  return j.dump(2, ' ', false, nlohmann::json::error_handler_t::replace);
}

absl::StatusOr<ValidationReport> ValidateJsonlStream(std::istream& in, absl::string_view name,
                                                     const DataTokenizer& tokenizer,
                                                     const DataOptions& options) {
  return Process(in, name, tokenizer, options, nullptr);
}

absl::StatusOr<ValidationReport> ValidateJsonl(const std::string& path,
                                               const DataTokenizer& tokenizer,
                                               const DataOptions& options) {
  FJORD_ASSIGN_OR_RETURN(std::ifstream in, Open(path));
  return Process(in, path, tokenizer, options, nullptr);
}

absl::StatusOr<Dataset> LoadJsonlStream(std::istream& in, absl::string_view name,
                                        const DataTokenizer& tokenizer,
                                        const DataOptions& options) {
  Dataset dataset;
  FJORD_ASSIGN_OR_RETURN(dataset.report, Process(in, name, tokenizer, options, &dataset.examples));
  if (!dataset.report.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(name, ": ", dataset.report.Summary()));
  }
  return dataset;
}

absl::StatusOr<Dataset> LoadJsonl(const std::string& path, const DataTokenizer& tokenizer,
                                  const DataOptions& options) {
  FJORD_ASSIGN_OR_RETURN(std::ifstream in, Open(path));
  return LoadJsonlStream(in, path, tokenizer, options);
}

}  // namespace fjord::data

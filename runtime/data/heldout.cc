#include "runtime/data/heldout.h"

#include <algorithm>
#include <fstream>
#include <optional>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "nlohmann/json.hpp"
#include "runtime/util/status_macros.h"

namespace fjord::data {
namespace {

constexpr int64_t kMaxLineBytes = int64_t{1} << 20;  // a question and its answer

void AddError(HeldoutReport& report, int64_t max_errors, LineError error) {
  ++report.error_count;
  if (static_cast<int64_t>(report.errors.size()) < max_errors)
    report.errors.push_back(std::move(error));
}

// A non-blank string field of `object`, or the error naming it.
bool ReadText(const nlohmann::json& object, const char* key, int64_t line, std::string* out,
              LineError* error) {
  auto it = object.find(key);
  if (it == object.end()) {
    *error = {line, key, absl::StrCat("missing field '", key, "'")};
    return false;
  }
  if (!it->is_string()) {
    *error = {line, key, absl::StrCat("must be a string, got ", it->type_name())};
    return false;
  }
  if (IsBlank(it->get_ref<const std::string&>())) {
    *error = {
        line, key,
        std::string(key) == "answer" ? "is empty (every reply would contain it)" : "is empty"};
    return false;
  }
  *out = it->get<std::string>();
  return true;
}

// One streaming pass; keeps the questions in `questions` when it is not null.
absl::StatusOr<HeldoutReport> Process(std::istream& in, absl::string_view name, int64_t max_errors,
                                      std::vector<HeldoutQuestion>* questions) {
  if (max_errors < 0) return absl::InvalidArgumentError("max_errors must be >= 0");
  HeldoutReport report;
  auto read_line = [&](const std::string& line, int64_t n) {
    ObjectLine parsed = ParseObjectLine(line, n, " {\"prompt\": ..., \"answer\": ...}");
    if (!parsed.object) {
      AddError(report, max_errors, std::move(parsed.error));
      return;
    }
    const nlohmann::json& j = *parsed.object;
    HeldoutQuestion q;
    q.line = n;
    LineError error;
    if (!ReadText(j, "prompt", n, &q.prompt, &error) ||
        !ReadText(j, "answer", n, &q.answer, &error)) {
      AddError(report, max_errors, std::move(error));
      return;
    }
    ++report.questions;
    if (questions != nullptr) questions->push_back(std::move(q));
  };
  FJORD_ASSIGN_OR_RETURN(
      report.lines,
      ForEachJsonlLine(
          in, name, kMaxLineBytes,
          [&](LineError error) { AddError(report, max_errors, std::move(error)); }, read_line));
  if (report.questions == 0 && report.error_count == 0) {
    AddError(report, max_errors, {0, "", "no questions in the file"});
  }
  return report;
}

absl::StatusOr<std::ifstream> Open(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in.is_open()) return absl::NotFoundError(absl::StrCat("cannot open held-out file ", path));
  return in;
}

}  // namespace

std::string HeldoutReport::Summary() const {
  std::string out;
  if (ok()) {
    absl::StrAppend(&out, "valid: ", questions, questions == 1 ? " question" : " questions");
  } else {
    absl::StrAppend(&out, "invalid: ", error_count, error_count == 1 ? " error" : " errors", " in ",
                    lines, " lines (", questions, " valid questions)");
  }
  AppendErrorLines(&out, errors, error_count);
  return out;
}

std::string HeldoutReport::ToJson() const {
  nlohmann::json j;
  j["valid"] = ok();
  j["lines"] = lines;
  j["questions"] = questions;
  j["error_count"] = error_count;
  j["errors"] = ErrorsJson(errors);
  j["summary"] = Summary();
  return j.dump(2, ' ', false, nlohmann::json::error_handler_t::replace);
}

absl::StatusOr<HeldoutReport> ValidateHeldoutStream(std::istream& in, absl::string_view name,
                                                    int64_t max_errors) {
  return Process(in, name, max_errors, nullptr);
}

absl::StatusOr<HeldoutReport> ValidateHeldoutJsonl(const std::string& path, int64_t max_errors) {
  FJORD_ASSIGN_OR_RETURN(std::ifstream in, Open(path));
  return Process(in, path, max_errors, nullptr);
}

absl::StatusOr<HeldoutSet> LoadHeldoutStream(std::istream& in, absl::string_view name) {
  HeldoutSet set;
  FJORD_ASSIGN_OR_RETURN(set.report, Process(in, name, 100, &set.questions));
  if (!set.report.ok())
    return absl::InvalidArgumentError(absl::StrCat(name, ": ", set.report.Summary()));
  return set;
}

absl::StatusOr<HeldoutSet> LoadHeldoutJsonl(const std::string& path) {
  FJORD_ASSIGN_OR_RETURN(std::ifstream in, Open(path));
  return LoadHeldoutStream(in, path);
}

}  // namespace fjord::data

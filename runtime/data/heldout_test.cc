#include "runtime/data/heldout.h"

#include <sstream>
#include <string>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"

namespace fjord::data {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

MATCHER_P3(ErrorAt, line, field, substring, "") {
  return arg.line == line && arg.field == field && arg.message.find(substring) != std::string::npos;
}

HeldoutReport Validate(const std::string& data, int64_t max_errors = 100) {
  std::istringstream in(data);
  absl::StatusOr<HeldoutReport> report = ValidateHeldoutStream(in, "heldout.jsonl", max_errors);
  EXPECT_TRUE(report.ok()) << report.status();
  return report.ok() ? *report : HeldoutReport();
}

TEST(HeldoutTest, GoodFileIsReadInOrder) {
  std::istringstream in(
      "\xEF\xBB\xBF{\"prompt\": \"Capital of Peru?\", \"answer\": \"Lima\", \"id\": 7}\r\n"
      "\n"
      "{\"answer\": \"Oslo\", \"prompt\": \"Capital of Norway?\"}\n");
  absl::StatusOr<HeldoutSet> set = LoadHeldoutStream(in, "heldout.jsonl");
  ASSERT_TRUE(set.ok()) << set.status();
  ASSERT_EQ(set->questions.size(), 2u);
  EXPECT_EQ(set->questions[0].prompt, "Capital of Peru?");
  EXPECT_EQ(set->questions[0].answer, "Lima");
  EXPECT_EQ(set->questions[0].line, 1);
  EXPECT_EQ(set->questions[1].answer, "Oslo");
  EXPECT_EQ(set->questions[1].line, 3);
  EXPECT_EQ(set->report.lines, 3);
  EXPECT_EQ(set->report.Summary(), "valid: 2 questions");
}

// Every rule of heldout.h, one line each; the good lines are still counted.
TEST(HeldoutTest, BadLinesNameTheLineAndField) {
  const HeldoutReport r = Validate(
      "{\"prompt\": \"a?\", \"answer\": \"b\"}\n"        // 1 good
      "{\"prompt\": \"a?\"\n"                            // 2 not JSON
      "[1, 2]\n"                                         // 3 not an object
      "{\"answer\": \"b\"}\n"                            // 4 no prompt
      "{\"prompt\": \"a?\", \"answer\": 3}\n"            // 5 answer not a string
      "{\"prompt\": \"a?\", \"answer\": \" \"}\n"        // 6 blank answer
      "{\"prompt\": \"\", \"answer\": \"b\"}\n"          // 7 empty prompt
      "{\"prompt\": \"\xC3\x28\", \"answer\": \"b\"}\n"  // 8 bad UTF-8
      "{\"messages\": []}\n");                           // 9 a training line
  EXPECT_FALSE(r.ok());
  EXPECT_EQ(r.lines, 9);
  EXPECT_EQ(r.questions, 1);
  EXPECT_EQ(r.error_count, 8);
  EXPECT_THAT(r.errors, ElementsAre(ErrorAt(2, "", "not valid JSON at byte"),
                                    ErrorAt(3, "", "line is a JSON array, expected an object"),
                                    ErrorAt(4, "prompt", "missing field 'prompt'"),
                                    ErrorAt(5, "answer", "must be a string, got number"),
                                    ErrorAt(6, "answer", "is empty (every reply would contain it)"),
                                    ErrorAt(7, "prompt", "is empty"),
                                    ErrorAt(8, "", "invalid UTF-8 at byte 13 (0xc3)"),
                                    ErrorAt(9, "prompt", "missing field 'prompt'")));
  EXPECT_THAT(r.Summary(), HasSubstr("invalid: 8 errors in 9 lines (1 valid questions)"));
  EXPECT_THAT(r.Summary(), HasSubstr("\n  line 4 (prompt): missing field 'prompt'"));
  EXPECT_THAT(r.Summary(), HasSubstr("... and 3 more"));
}

TEST(HeldoutTest, EmptyFileHasNoQuestionsAndErrorsAreCapped) {
  EXPECT_THAT(Validate("\n  \n").errors, ElementsAre(ErrorAt(0, "", "no questions in the file")));
  std::string many;
  for (int i = 0; i < 10; ++i) many += "{}\n";
  const HeldoutReport r = Validate(many, 3);
  EXPECT_EQ(r.error_count, 10);
  EXPECT_EQ(r.errors.size(), 3u);
}

TEST(HeldoutTest, LoadRefusesAFileWithABadLineAndMissingFileIsNotFound) {
  std::istringstream in("{\"prompt\": \"a?\", \"answer\": \"b\"}\n{\"prompt\": \"a?\"}\n");
  absl::StatusOr<HeldoutSet> set = LoadHeldoutStream(in, "h.jsonl");
  EXPECT_EQ(set.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(set.status().message(), HasSubstr("h.jsonl: invalid: 1 error in 2 lines"));
  EXPECT_THAT(set.status().message(), HasSubstr("line 2 (answer): missing field 'answer'"));
  absl::StatusOr<HeldoutSet> missing = LoadHeldoutJsonl("/nonexistent/heldout.jsonl");
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(missing.status().message(),
              HasSubstr("cannot open held-out file /nonexistent/heldout.jsonl"));
  std::istringstream empty("");
  EXPECT_EQ(ValidateHeldoutStream(empty, "x", -1).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(HeldoutTest, ReportAsJson) {
  const nlohmann::json j = nlohmann::json::parse(Validate("{\"prompt\": \"a?\"}\n").ToJson());
  EXPECT_EQ(j["valid"], false);
  EXPECT_EQ(j["lines"], 1);
  EXPECT_EQ(j["questions"], 0);
  EXPECT_EQ(j["error_count"], 1);
  EXPECT_EQ(j["errors"][0]["line"], 1);
  EXPECT_EQ(j["errors"][0]["field"], "answer");
  EXPECT_THAT(j["summary"].get<std::string>(), HasSubstr("line 1 (answer)"));
}

}  // namespace
}  // namespace fjord::data

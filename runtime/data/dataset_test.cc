#include "runtime/data/dataset.h"

#include <cstdio>
#include <fstream>
#include <sstream>
#include <string>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "runtime/data/fake_tokenizer.h"

namespace fjord::data {
namespace {

using ::testing::AllOf;
using ::testing::ElementsAre;
using ::testing::Field;
using ::testing::HasSubstr;

const char kGood[] =
    R"({"messages":[{"role":"user","content":"hi"},{"role":"assistant","content":"yo"}]})";

MATCHER_P2(ErrorAt, line, substring, "") {
  return arg.line == line && arg.message.find(substring) != std::string::npos;
}

ValidationReport Validate(const std::string& data, const DataOptions& options = {},
                          const FakeTokenizer& tok = FakeTokenizer::Llama3()) {
  std::istringstream in(data);
  absl::StatusOr<ValidationReport> report = ValidateJsonlStream(in, "test.jsonl", tok, options);
  EXPECT_TRUE(report.ok()) << report.status();
  return report.ok() ? *report : ValidationReport();
}

TEST(ValidateTest, GoodFileCountsTokens) {
  // Llama 3: bos + 2 x (<sh> role <eh> \n\n content <eot>).
  // user turn: 1 + 4 + 1 + 1 + 2 + 1 = 10; assistant turn: 1 + 9 + 1 + 1 + 2 + 1 = 15.
  const ValidationReport r = Validate(absl::StrCat(kGood, "\n", kGood, "\n"));
  EXPECT_TRUE(r.ok()) << r.Summary();
  EXPECT_EQ(r.lines, 2);
  EXPECT_EQ(r.examples, 2);
  EXPECT_EQ(r.tokens, 2 * 26);
  EXPECT_EQ(r.trained_tokens, 2 * 3);  // "y", "o", <|eot_id|>
  EXPECT_EQ(r.truncated, 0);
  EXPECT_EQ(r.format, Format::kChat);
  EXPECT_EQ(r.chat_template, ChatTemplate::kLlama3);
  EXPECT_THAT(r.Summary(), HasSubstr("valid: 2 examples, 52 tokens (6 trained)"));
}

TEST(ValidateTest, MixedFileReportsBadLinesAndCountsGoodOnes) {
  const std::string data = absl::StrCat(
      kGood, "\n",                                             // 1
      "\n",                                                    // 2 blank: skipped
      "{\"messages\": [\n",                                    // 3 not JSON
      kGood, "\r\n",                                           // 4 CRLF is fine
      R"({"messages":[{"role":"bot","content":"x"}]})", "\n",  // 5 unknown role
      "   \t \n",                                              // 6 blank
      "{\"text\":\"\xC3\x28\"}\n",                             // 7 bad UTF-8
      R"({"text":"plain"})", "\n",                             // 8 other format
      R"({"messages":[{"role":"user","content":"x"},{"role":"assistant","content":"y","weight":0}]})",
      "\n",    // 9 nothing trained
      kGood);  // 10 no final newline
  const ValidationReport r = Validate(data);
  EXPECT_FALSE(r.ok());
  EXPECT_EQ(r.lines, 10);
  EXPECT_EQ(r.examples, 3);
  EXPECT_EQ(r.error_count, 5);
  EXPECT_THAT(
      r.errors,
      ElementsAre(ErrorAt(3, "not valid JSON at byte 15"), ErrorAt(5, "unknown role \"bot\""),
                  ErrorAt(7, "invalid UTF-8 at byte 10"),
                  ErrorAt(8, "format text differs from the file's format chat (set by line 1)"),
                  ErrorAt(9, "no trained tokens")));
  EXPECT_EQ(r.errors[1].field, "messages[0].role");
  EXPECT_THAT(r.Summary(), HasSubstr("invalid: 5 errors in 10 lines (3 valid examples"));
  EXPECT_THAT(r.Summary(), HasSubstr("line 5 (messages[0].role): unknown role"));
}

TEST(ValidateTest, FormatIsSetByFirstValidLine) {
  const ValidationReport r =
      Validate(absl::StrCat("nope\n", R"({"text":"a b"})", "\n", kGood, "\n"));
  EXPECT_EQ(r.format, Format::kText);
  EXPECT_THAT(r.errors, ElementsAre(ErrorAt(1, "not valid JSON"),
                                    ErrorAt(3,
                                            "format chat differs from the file's format text "
                                            "(set by line 2)")));
}

TEST(ValidateTest, MaxLengthErrorOrTruncation) {
  const std::string data = absl::StrCat(kGood, "\n", R"({"prompt":"p","completion":"c"})", "\n");
  DataOptions options;
  options.max_length = 20;  // kGood is 26 tokens
  ValidationReport r = Validate(kGood, options);
  EXPECT_THAT(r.errors,
              ElementsAre(ErrorAt(1, "26 tokens after tokenization, over max_length 20")));

  // Truncation: a long completion keeps some trained tokens; a long prompt
  // leaves none, which is an error.
  options.truncate = true;
  options.max_length = 30;
  const std::string long_answer =
      absl::StrCat(R"({"messages":[{"role":"user","content":"q"},{"role":"assistant","content":")",
                   std::string(40, 'a'), R"("}]})");
  const std::string long_question =
      absl::StrCat(R"({"messages":[{"role":"user","content":")", std::string(40, 'q'),
                   R"("},{"role":"assistant","content":"a"}]})");
  r = Validate(absl::StrCat(long_answer, "\n", long_question, "\n"), options);
  EXPECT_EQ(r.examples, 1);
  EXPECT_EQ(r.truncated, 1);
  EXPECT_EQ(r.tokens, 30);
  // Tokens 0..29: bos + user turn (9) + <sh> assistant <eh> \n\n (12) = 22, then 8
  // "a"s at 22..29: targets of positions 21..28 are trained; the last one's is not.
  EXPECT_EQ(r.trained_tokens, 8);
  EXPECT_THAT(r.errors, ElementsAre(ErrorAt(2,
                                            "no trained tokens left after truncation to 30 "
                                            "tokens (from ")));
}

TEST(ValidateTest, ErrorsAreCappedButCounted) {
  std::string data;
  for (int i = 0; i < 250; ++i) data += "garbage\n";
  data += kGood;
  DataOptions options;
  options.max_errors = 100;
  const ValidationReport r = Validate(data, options);
  EXPECT_EQ(r.error_count, 250);
  ASSERT_EQ(r.errors.size(), 100u);
  EXPECT_EQ(r.errors.front().line, 1);
  EXPECT_EQ(r.errors.back().line, 100);
  EXPECT_EQ(r.examples, 1);
  EXPECT_THAT(r.Summary(), HasSubstr("... and 245 more"));
}

TEST(ValidateTest, OverlongLineIsAnError) {
  DataOptions options;
  options.max_line_bytes = 100;
  const ValidationReport r =
      Validate(absl::StrCat(R"({"text":")", std::string(200, 'x'), "\"}\n", R"({"text":"ok"})"),
               options, FakeTokenizer({"</s>"}));
  EXPECT_THAT(r.errors, ElementsAre(ErrorAt(1, "line is longer than 100 bytes")));
  EXPECT_EQ(r.examples, 1);
}

TEST(ValidateTest, EmptyFileHasNoExamples) {
  const ValidationReport r = Validate("\n\n  \n");
  EXPECT_FALSE(r.ok());
  EXPECT_THAT(r.errors, ElementsAre(ErrorAt(0, "no examples in the file")));
}

TEST(ValidateTest, ChatWithoutTemplateIsReportedPerLine) {
  const ValidationReport r =
      Validate(absl::StrCat(kGood, "\n", kGood), {}, FakeTokenizer({"</s>"}));
  EXPECT_EQ(r.chat_template, ChatTemplate::kNone);
  EXPECT_THAT(r.errors, ElementsAre(ErrorAt(1, "chat messages need a chat template"),
                                    ErrorAt(2, "chat messages need a chat template")));
}

TEST(ValidateTest, BadOptionsAndMissingFileAreStatuses) {
  const FakeTokenizer tok = FakeTokenizer::ChatML();
  DataOptions options;
  options.render.chat_template = ChatTemplate::kLlama3;
  std::istringstream in(kGood);
  absl::StatusOr<ValidationReport> r = ValidateJsonlStream(in, "x", tok, options);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kFailedPrecondition);

  r = ValidateJsonl("/nonexistent/data.jsonl", tok, DataOptions());
  EXPECT_EQ(r.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(r.status().message(), HasSubstr("/nonexistent/data.jsonl"));

  DataOptions negative;
  negative.max_length = -1;
  std::istringstream in2(kGood);
  r = ValidateJsonlStream(in2, "x", tok, negative);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(ValidateTest, ReportAsJson) {
  const ValidationReport r = Validate(absl::StrCat(kGood, "\n{bad\n"));
  const nlohmann::json j = nlohmann::json::parse(r.ToJson());
  EXPECT_EQ(j["valid"], false);
  EXPECT_EQ(j["examples"], 1);
  EXPECT_EQ(j["error_count"], 1);
  EXPECT_EQ(j["errors"][0]["line"], 2);
  EXPECT_EQ(j["errors"][0]["field"], "");
  EXPECT_EQ(j["format"], "chat");
  EXPECT_EQ(j["template"], "llama3");
  EXPECT_EQ(j["tokens"], 26);
}

TEST(LoadTest, LoadsExamplesWithLinesAndTargets) {
  const std::string path = absl::StrCat(::testing::TempDir(), "/load.jsonl");
  {
    std::ofstream out(path);
    out << R"({"text":"ab"})"
        << "\n\n"
        << R"({"text":"cd"})"
        << "\n";
  }
  const FakeTokenizer tok({"<s>", "</s>"}, /*has_bos=*/true);
  absl::StatusOr<Dataset> d = LoadJsonl(path, tok, DataOptions());
  ASSERT_TRUE(d.ok()) << d.status();
  ASSERT_EQ(d->examples.size(), 2u);
  EXPECT_EQ(d->examples[1].line, 3);
  EXPECT_THAT(d->examples[0].input_ids,
              ElementsAre(0, FakeTokenizer::Byte('a'), FakeTokenizer::Byte('b'), 1));
  EXPECT_THAT(d->examples[0].targets,
              ElementsAre(FakeTokenizer::Byte('a'), FakeTokenizer::Byte('b'), 1, kIgnoreIndex));
  EXPECT_EQ(d->report.examples, 2);
}

TEST(LoadTest, RefusesPartlyBadFile) {
  std::istringstream in(absl::StrCat(kGood, "\n", kGood, "\n[]\n"));
  absl::StatusOr<Dataset> d =
      LoadJsonlStream(in, "train.jsonl", FakeTokenizer::Llama3(), DataOptions());
  EXPECT_EQ(d.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(d.status().message(), HasSubstr("train.jsonl: invalid: 1 error"));
  EXPECT_THAT(d.status().message(), HasSubstr("line 3: line is a JSON array"));
}

}  // namespace
}  // namespace fjord::data

#include "runtime/data/preference.h"

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

using ::testing::ElementsAre;
using ::testing::ElementsAreArray;
using ::testing::HasSubstr;

MATCHER_P3(ErrorAt, line, field, substring, "") {
  return arg.line == line && arg.field == field && arg.message.find(substring) != std::string::npos;
}

PreferencePair Load(const std::string& line, const FakeTokenizer& tok = FakeTokenizer::ChatML(),
                    PreferenceOptions options = {}) {
  std::istringstream in(line);
  absl::StatusOr<PreferenceDataset> d = LoadPreferenceJsonlStream(in, "p.jsonl", tok, options);
  EXPECT_TRUE(d.ok()) << d.status();
  return d.ok() && !d->pairs.empty() ? d->pairs[0] : PreferencePair();
}

std::vector<int32_t> Cat(std::vector<std::vector<int32_t>> parts) {
  std::vector<int32_t> out;
  for (auto& p : parts) out.insert(out.end(), p.begin(), p.end());
  return out;
}

// ChatML: <|im_start|>=1, <|im_end|>=2. The prompt ends with the assistant
// header; each response is content, <|im_end|> and the template's "\n".
TEST(PreferenceTest, ConversationalPromptAndResponses) {
  const FakeTokenizer tok = FakeTokenizer::ChatML();
  const std::vector<int32_t> want_prompt =
      Cat({{1}, tok.Ids("user\nhi"), {2}, tok.Ids("\n"), {1}, tok.Ids("assistant\n")});
  for (
      const char* line : {
          R"({"prompt":[{"role":"user","content":"hi"}],"chosen":[{"role":"assistant","content":"yes"}],"rejected":[{"role":"assistant","content":"no"}]})",
          R"({"messages":[{"role":"user","content":"hi"}],"chosen":"yes","rejected":"no"})",
          R"({"prompt":"hi","chosen":"yes","rejected":"no"})",
          R"({"chosen":[{"role":"user","content":"hi"},{"role":"assistant","content":"yes"}],"rejected":[{"role":"user","content":"hi"},{"role":"assistant","content":"no"}]})",
          R"({"input":{"messages":[{"role":"user","content":"hi"}]},"preferred_output":[{"role":"assistant","content":"yes"}],"non_preferred_output":[{"role":"assistant","content":"no"}]})",
      }) {
    SCOPED_TRACE(line);
    const PreferencePair p = Load(line);
    EXPECT_THAT(p.prompt, ElementsAreArray(want_prompt));
    EXPECT_THAT(p.chosen, ElementsAreArray(Cat({tok.Ids("yes"), {2}, tok.Ids("\n")})));
    EXPECT_THAT(p.rejected, ElementsAreArray(Cat({tok.Ids("no"), {2}, tok.Ids("\n")})));
    EXPECT_EQ(p.line, 1);
  }
}

TEST(PreferenceTest, TemplateNoneIsBosPromptThenResponseAndEos) {
  // FakeTokenizer: no BOS for these specials; EOS = <|endoftext|> (0).
  const FakeTokenizer tok({"<|endoftext|>"});
  PreferenceOptions options;
  options.render.chat_template = ChatTemplate::kNone;
  const PreferencePair p = Load(R"({"prompt":"Q:","chosen":"ab","rejected":"c"})", tok, options);
  EXPECT_THAT(p.prompt, ElementsAreArray(tok.Ids("Q:")));
  EXPECT_THAT(p.chosen, ElementsAreArray(Cat({tok.Ids("ab"), {0}})));
  EXPECT_THAT(p.rejected, ElementsAreArray(Cat({tok.Ids("c"), {0}})));
}

TEST(PreferenceTest, BadLinesNameLineAndField) {
  const std::string data = absl::StrCat(
      R"({"prompt":"hi","chosen":"yes","rejected":"no"})", "\n",     // 1 good
      R"({"prompt":"hi","rejected":"no"})", "\n",                    // 2 missing
      R"({"prompt":"hi","chosen":"  ","rejected":"no"})", "\n",      // 3 blank
      R"({"prompt":"hi","chosen":"same","rejected":"same"})", "\n",  // 4 identical
      R"({"prompt":"hi","chosen":[{"role":"user","content":"x"}],"rejected":"no"})", "\n",  // 5
      R"({"chosen":"a","rejected":"b"})", "\n",  // 6 no prompt
      R"({"input":{"messages":[{"role":"user","content":"hi"}]},"preferred_output":"a","non_preferred_output":"b"})",
      "\n",  // 7 other format
      R"({"prompt":"hi","chosen":"yes","rejected":[{"role":"robot","content":"n"}]})");  // 8
  {
    const FakeTokenizer tok = FakeTokenizer::ChatML();
    std::istringstream stream(data);
    absl::StatusOr<PreferenceDataset> d = LoadPreferenceJsonlStream(stream, "p.jsonl", tok, {});
    ASSERT_FALSE(d.ok());
    EXPECT_THAT(std::string(d.status().message()), HasSubstr("p.jsonl: invalid: 7 errors"));
  }
  // The report itself, from a file.
  const std::string path = ::testing::TempDir() + "/p.jsonl";
  {
    std::ofstream out(path);
    out << data;
  }
  const FakeTokenizer tok = FakeTokenizer::ChatML();
  absl::StatusOr<PreferenceReport> report = ValidatePreferenceJsonl(path, tok, {});
  ASSERT_TRUE(report.ok()) << report.status();
  EXPECT_EQ(report->pairs, 1);
  EXPECT_EQ(report->error_count, 7);
  EXPECT_THAT(report->errors,
              ElementsAre(ErrorAt(2, "chosen", "missing \"chosen\""),
                          ErrorAt(3, "chosen", "only whitespace (an empty response)"),
                          ErrorAt(4, "rejected", "identical to chosen"),
                          ErrorAt(5, "chosen[0].role", "must end with an assistant message"),
                          ErrorAt(6, "prompt", "missing \"prompt\""),
                          ErrorAt(7, "", "format openai differs from the file's format trl"),
                          ErrorAt(8, "rejected[0].role", "unknown role \"robot\"")));
  const nlohmann::json j = nlohmann::json::parse(report->ToJson());
  EXPECT_EQ(j["valid"], false);
  EXPECT_EQ(j["kind"], "preference");
  EXPECT_EQ(j["errors"][0]["line"], 2);
}

TEST(PreferenceTest, TruncationKeepsThePromptAndCutsResponses) {
  const FakeTokenizer tok = FakeTokenizer::ChatML();
  const std::string line = R"({"prompt":"hi","chosen":"yes yes yes","rejected":"no"})";
  const int64_t prompt_len = static_cast<int64_t>(Load(line).prompt.size());
  PreferenceOptions options;
  options.max_length = prompt_len + 4;
  const PreferencePair p = Load(line, tok, options);
  EXPECT_EQ(static_cast<int64_t>(p.prompt.size()), prompt_len);
  EXPECT_THAT(p.chosen, ElementsAreArray(tok.Ids("yes ")));
  EXPECT_THAT(p.rejected, ElementsAreArray(Cat({tok.Ids("no"), {2}, tok.Ids("\n")})));

  const std::string path = ::testing::TempDir() + "/t.jsonl";
  {
    std::ofstream out(path);
    out << line << "\n";
  }
  options.truncate = false;
  absl::StatusOr<PreferenceReport> r = ValidatePreferenceJsonl(path, tok, options);
  ASSERT_TRUE(r.ok());
  EXPECT_THAT(r->errors,
              ElementsAre(ErrorAt(1, "", absl::StrCat("over max_length ", prompt_len + 4))));
  options.truncate = true;
  options.max_length = prompt_len;
  r = ValidatePreferenceJsonl(path, tok, options);
  ASSERT_TRUE(r.ok());
  EXPECT_THAT(r->errors, ElementsAre(ErrorAt(1, "prompt", "would leave no response tokens")));
}

TEST(PreferenceTest, PairsPackAsTwoSequencesThatNeverSeeEachOther) {
  std::vector<PreferencePair> pairs(2);
  pairs[0] = {{10, 11}, {20, 21, 22}, {30}, 1};
  pairs[1] = {{12}, {23}, {31, 32}, 2};
  std::vector<Example> examples = {PairAsExample(pairs[0]), PairAsExample(pairs[1])};
  EXPECT_THAT(examples[0].input_ids, ElementsAre(10, 11, 20, 21, 22, 10, 11, 30));
  EXPECT_THAT(examples[0].targets, ElementsAre(11, 20, 21, 22, kIgnoreIndex, 11, 30, kIgnoreIndex));
  PackOptions po;
  po.seq_len = 16;
  PackedBatch batch;
  const std::vector<int64_t> order = {1, 0};
  ASSERT_TRUE(PackBatch(examples, order, 1, po, batch).ok());
  const std::vector<PairSpans> spans = SplitPairs(pairs, batch);
  ASSERT_EQ(spans.size(), 2u);
  EXPECT_EQ(spans[0].pair, 1);
  EXPECT_EQ(spans[0].chosen.offset, 0);
  EXPECT_EQ(spans[0].chosen.length, 2);
  EXPECT_EQ(spans[0].rejected.offset, 2);
  EXPECT_EQ(spans[0].rejected.length, 3);
  EXPECT_EQ(spans[1].chosen.offset, 5);
  EXPECT_EQ(spans[1].chosen.response_length(), 3);
  EXPECT_EQ(spans[1].rejected.offset, 10);
  const std::vector<int32_t> want_segments = {1, 1, 2, 2, 2, 3, 3, 3, 3, 3, 4, 4, 4, 0, 0, 0};
  const std::vector<int32_t> want_positions = {0, 1, 0, 1, 2, 0, 1, 2, 3, 4, 0, 1, 2, 0, 0, 0};
  EXPECT_THAT(batch.segment_ids, ElementsAreArray(want_segments));
  EXPECT_THAT(batch.position_ids, ElementsAreArray(want_positions));
}

}  // namespace
}  // namespace fjord::data

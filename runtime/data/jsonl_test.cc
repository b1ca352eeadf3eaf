#include "runtime/data/jsonl.h"

#include <sstream>
#include <string>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace fjord::data {
namespace {

using ::testing::HasSubstr;

LineError ErrorOf(absl::string_view line) {
  ParseResult r = ParseRecordLine(line, 7);
  EXPECT_FALSE(r.record.has_value()) << line;
  EXPECT_EQ(r.error.line, 7);
  return r.error;
}

TEST(Utf8Test, AcceptsValidAndFindsFirstBadByte) {
  EXPECT_EQ(FindInvalidUtf8("plain ascii"), std::nullopt);
  EXPECT_EQ(FindInvalidUtf8("h\xC3\xA9llo \xE2\x82\xAC \xF0\x9F\x98\x80"), std::nullopt);
  EXPECT_EQ(FindInvalidUtf8("ab\xFF"), 2u);
  EXPECT_EQ(FindInvalidUtf8("a\xC0\x80"), 1u);         // overlong NUL
  EXPECT_EQ(FindInvalidUtf8("\xE0\x80\x80"), 0u);      // overlong 3-byte
  EXPECT_EQ(FindInvalidUtf8("x\xED\xA0\x80"), 1u);     // surrogate U+D800
  EXPECT_EQ(FindInvalidUtf8("\xF4\x90\x80\x80"), 0u);  // above U+10FFFF
  EXPECT_EQ(FindInvalidUtf8("abc\xE2\x82"), 3u);       // truncated at end
  EXPECT_EQ(FindInvalidUtf8("\xE2\x28\xA1"), 0u);      // bad continuation
}

TEST(StripWhitespaceTest, MatchesPythonStrip) {
  EXPECT_EQ(StripWhitespace("  hi there \n\t"), "hi there");
  EXPECT_EQ(StripWhitespace("\xC2\xA0hi\xE3\x80\x80"), "hi");  // NBSP, ideographic space
  EXPECT_EQ(StripWhitespace("\x1Chi\x1F"), "hi");
  EXPECT_EQ(StripWhitespace("h\xC3\xA9"), "h\xC3\xA9");
  EXPECT_EQ(StripWhitespace(" \n "), "");
  EXPECT_TRUE(IsBlank(" \xE2\x80\x83 "));  // em space
  EXPECT_FALSE(IsBlank(" . "));
}

TEST(ParseRecordLineTest, ParsesTheThreeFormats) {
  ParseResult chat = ParseRecordLine(
      R"({"messages":[{"role":"system","content":"s"},{"role":"user","content":"u"},)"
      R"({"role":"assistant","content":"a","weight":0},{"role":"assistant","content":"b","weight":1.0}],"id":"x"})",
      1);
  ASSERT_TRUE(chat.record) << chat.error.message;
  EXPECT_EQ(chat.record->format, Format::kChat);
  ASSERT_EQ(chat.record->messages.size(), 4u);
  EXPECT_EQ(chat.record->messages[0].role, Role::kSystem);
  EXPECT_EQ(chat.record->messages[1].content, "u");
  EXPECT_EQ(chat.record->messages[1].weight, -1);
  EXPECT_EQ(chat.record->messages[2].weight, 0);
  EXPECT_EQ(chat.record->messages[3].weight, 1);
  EXPECT_FALSE(chat.record->messages[3].reasoning_content.has_value());

  ParseResult pc = ParseRecordLine(R"({"prompt":"p","completion":"c"})", 1);
  ASSERT_TRUE(pc.record);
  EXPECT_EQ(pc.record->format, Format::kPromptCompletion);
  EXPECT_EQ(pc.record->prompt, "p");
  EXPECT_EQ(pc.record->completion, "c");

  ParseResult text = ParseRecordLine(R"({"text":"hello \u00e9"})", 1);
  ASSERT_TRUE(text.record);
  EXPECT_EQ(text.record->format, Format::kText);
  EXPECT_EQ(text.record->text, "hello \xC3\xA9");
}

TEST(ParseRecordLineTest, ReportsEachErrorClass) {
  struct Case {
    std::string line, field, message;
  };
  const Case cases[] = {
      {"{\"text\": \"a\xFF\"}", "", "invalid UTF-8 at byte 12 (0xff)"},
      {R"({"text": "a",})", "", "not valid JSON at byte 14"},
      {R"({"text": "a")", "", "not valid JSON at byte 13"},
      {R"(["text"])", "", "line is a JSON array, expected an object"},
      {R"(42)", "", "line is a JSON number, expected an object"},
      {R"({"input":"x"})", "", "unknown format"},
      {R"({"text":"x","prompt":"p","completion":"c"})", "",
       "ambiguous format: object has \"prompt\"/\"completion\" and \"text\" keys"},
      {R"({"messages":"hi"})", "messages", "\"messages\" must be an array, got string"},
      {R"({"messages":[]})", "messages", "\"messages\" is empty"},
      {R"({"messages":[5]})", "messages[0]", "message must be an object, got number"},
      {R"({"messages":[{"content":"x"}]})", "messages[0].role", "missing \"role\""},
      {R"({"messages":[{"role":1,"content":"x"}]})", "messages[0].role",
       "\"role\" must be a string, got number"},
      {R"({"messages":[{"role":"user","content":"x"},{"role":"tool","content":"x"}]})",
       "messages[1].role", "unknown role \"tool\""},
      {R"({"messages":[{"role":"user"}]})", "messages[0].content", "missing \"content\""},
      {R"({"messages":[{"role":"user","content":null}]})", "messages[0].content",
       "\"content\" must be a string, got null"},
      {R"({"messages":[{"role":"user","content":[{"type":"text"}]}]})", "messages[0].content",
       "\"content\" must be a string, got array"},
      {R"({"messages":[{"role":"user","content":""}]})", "messages[0].content",
       "\"content\" is empty"},
      {R"({"messages":[{"role":"user","content":" \n "}]})", "messages[0].content",
       "\"content\" is only whitespace"},
      {R"({"messages":[{"role":"user","content":"x"}]})", "messages", "no assistant message"},
      {R"({"messages":[{"role":"user","content":"x","weight":1},{"role":"assistant","content":"y"}]})",
       "messages[0].weight", "only allowed on assistant messages, not on a user message"},
      {R"({"messages":[{"role":"assistant","content":"y","weight":2}]})", "messages[0].weight",
       "\"weight\" must be 0 or 1, got 2"},
      {R"({"messages":[{"role":"assistant","content":"y","weight":0.5}]})", "messages[0].weight",
       "\"weight\" must be 0 or 1, got 0.5"},
      {R"({"messages":[{"role":"assistant","content":"y","weight":true}]})", "messages[0].weight",
       "\"weight\" must be 0 or 1, got boolean"},
      {R"({"prompt":"p"})", "completion", "missing \"completion\""},
      {R"({"completion":"c"})", "prompt", "missing \"prompt\""},
      {R"({"prompt":"","completion":"c"})", "prompt", "\"prompt\" is empty"},
      {R"({"prompt":"p","completion":3})", "completion", "\"completion\" must be a string"},
      {R"({"text":""})", "text", "\"text\" is empty"},
      {R"({"text":{}})", "text", "\"text\" must be a string, got object"},
  };
  for (const Case& c : cases) {
    LineError e = ErrorOf(c.line);
    EXPECT_EQ(e.field, c.field) << c.line;
    EXPECT_THAT(e.message, HasSubstr(c.message)) << c.line;
  }
}

TEST(ParseRecordLineTest, QuotesLongValuesShortened) {
  const std::string role(1000, 'r');
  LineError e = ErrorOf(absl::StrCat(R"({"messages":[{"role":")", role, R"(","content":"x"}]})"));
  EXPECT_THAT(e.message, HasSubstr("unknown role \"rrrr"));
  EXPECT_THAT(e.message, HasSubstr("...\""));
  EXPECT_LT(e.message.size(), 150u);
}

TEST(ParseRecordLineTest, SurvivesHostileInput) {
  // Deep nesting, lone surrogates, NUL bytes: errors, never a crash.
  EXPECT_THAT(ErrorOf(std::string(100000, '[')).message, HasSubstr("not valid JSON"));
  EXPECT_THAT(ErrorOf(R"({"text":"\ud800"})").message, HasSubstr("not valid JSON"));
  EXPECT_THAT(ErrorOf(std::string("{\"text\":\"a\0b\"}", 14)).message, HasSubstr("not valid JSON"));
}

std::vector<std::pair<LineReader::Result, std::string>> ReadAll(const std::string& data,
                                                                int64_t max_line_bytes) {
  std::istringstream in(data);
  LineReader reader(in, max_line_bytes);
  std::vector<std::pair<LineReader::Result, std::string>> out;
  std::string line;
  int64_t expected_line = 0;
  while (true) {
    LineReader::Result r = reader.Next(line);
    if (r == LineReader::Result::kEnd) break;
    EXPECT_EQ(reader.line_number(), ++expected_line);
    out.emplace_back(r, r == LineReader::Result::kLine ? line : "");
  }
  return out;
}

TEST(LineReaderTest, SplitsLinesStripsCrAndBom) {
  using R = LineReader::Result;
  auto lines = ReadAll("\xEF\xBB\xBF{\"a\":1}\r\n\nlast", 100);
  ASSERT_EQ(lines.size(), 3u);
  EXPECT_EQ(lines[0], std::make_pair(R::kLine, std::string("{\"a\":1}")));
  EXPECT_EQ(lines[1], std::make_pair(R::kLine, std::string("")));
  EXPECT_EQ(lines[2], std::make_pair(R::kLine, std::string("last")));
  EXPECT_EQ(ReadAll("a\n", 100).size(), 1u);
  EXPECT_EQ(ReadAll("", 100).size(), 0u);
}

TEST(LineReaderTest, SkipsOverlongLinesAcrossChunks) {
  using R = LineReader::Result;
  // A 3 MiB line spans many read chunks.
  const std::string data = "ok\n" + std::string(3 << 20, 'x') + "\nafter\n";
  auto lines = ReadAll(data, 1 << 20);
  ASSERT_EQ(lines.size(), 3u);
  EXPECT_EQ(lines[0].second, "ok");
  EXPECT_EQ(lines[1].first, R::kTooLong);
  EXPECT_EQ(lines[2], std::make_pair(R::kLine, std::string("after")));
  // A line just at the limit is kept.
  auto exact = ReadAll(std::string(10, 'y') + "\n", 10);
  ASSERT_EQ(exact.size(), 1u);
  EXPECT_EQ(exact[0].first, R::kLine);
}

TEST(ParseRecordLineTest, ReasoningContentOnAssistantMessagesOnly) {
  ParseResult ok =
      ParseRecordLine(R"({"messages":[{"role":"user","content":"q"},)"
                      R"({"role":"assistant","content":"a","reasoning_content":"think"}]})",
                      1);
  ASSERT_TRUE(ok.record) << ok.error.message;
  EXPECT_EQ(ok.record->messages[1].reasoning_content, "think");
  ParseResult on_user =
      ParseRecordLine(R"({"messages":[{"role":"user","content":"q","reasoning_content":"x"},)"
                      R"({"role":"assistant","content":"a"}]})",
                      3);
  ASSERT_FALSE(on_user.record);
  EXPECT_EQ(on_user.error.field, "messages[0].reasoning_content");
  EXPECT_THAT(on_user.error.message, HasSubstr("only allowed on assistant messages"));
  ParseResult not_string =
      ParseRecordLine(R"({"messages":[{"role":"user","content":"q"},)"
                      R"({"role":"assistant","content":"a","reasoning_content":7}]})",
                      4);
  ASSERT_FALSE(not_string.record);
  EXPECT_EQ(not_string.error.field, "messages[1].reasoning_content");
  EXPECT_THAT(not_string.error.message, HasSubstr("must be a string, got number"));
}

}  // namespace
}  // namespace fjord::data

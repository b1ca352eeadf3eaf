// Post-processors (post_processor.h): the ids added around one sequence.
#include "runtime/tokenizer/post_processor.h"

#include <memory>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "runtime/tokenizer/test_util.h"

namespace fjord::tokenizer::internal {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using testing::Json;
using testing::StatusIs;

std::vector<int32_t> Apply(const Json& j, std::vector<int32_t> ids) {
  absl::StatusOr<std::unique_ptr<PostProcessor>> p = ParsePostProcessor(j, "post_processor", 100);
  EXPECT_TRUE(p.ok()) << p.status();
  if (p.ok()) (*p)->Apply(&ids);
  return ids;
}

Json Template(Json single, Json specials) {
  return {{"type", "TemplateProcessing"},
          {"single", std::move(single)},
          {"special_tokens", std::move(specials)}};
}

Json Special(const std::string& name) { return {{"SpecialToken", {{"id", name}, {"type_id", 0}}}}; }
Json Seq(const std::string& id) { return {{"Sequence", {{"id", id}, {"type_id", 0}}}}; }

TEST(PostProcessorTest, Templates) {
  const Json specials = {{"<s>", {{"id", "<s>"}, {"ids", {1}}, {"tokens", {"<s>"}}}},
                         {"</s>", {{"id", "</s>"}, {"ids", {2}}, {"tokens", {"</s>"}}}},
                         {"[X]", {{"id", "[X]"}, {"ids", {7, 8}}, {"tokens", {"[", "X]"}}}}};
  EXPECT_THAT(Apply(testing::BosTemplate("<|begin_of_text|>", 99), {5, 6}), ElementsAre(99, 5, 6));
  EXPECT_THAT(Apply(Template({Special("<s>"), Seq("A"), Special("</s>")}, specials), {5}),
              ElementsAre(1, 5, 2));
  EXPECT_THAT(Apply(Template({Special("[X]"), Seq("A")}, specials), {}), ElementsAre(7, 8));
  EXPECT_THAT(
      Apply({{"type", "BertProcessing"}, {"sep", {"[SEP]", 3}}, {"cls", {"[CLS]", 4}}}, {9}),
      ElementsAre(4, 9, 3));
  EXPECT_THAT(Apply({{"type", "RobertaProcessing"},
                     {"sep", {"</s>", 2}},
                     {"cls", {"<s>", 0}},
                     {"trim_offsets", true},
                     {"add_prefix_space", true}},
                    {9}),
              ElementsAre(0, 9, 2));
  EXPECT_THAT(
      Apply({{"type", "Sequence"},
             {"processors",
              {{{"type", "ByteLevel"}, {"trim_offsets", false}}, testing::BosTemplate("<s>", 1)}}},
            {5}),
      ElementsAre(1, 5));
  EXPECT_THAT(Apply({{"type", "ByteLevel"}}, {5}), ElementsAre(5));
}

TEST(PostProcessorTest, Errors) {
  constexpr auto kInvalid = absl::StatusCode::kInvalidArgument;
  const Json specials = {{"<s>", {{"id", "<s>"}, {"ids", {1}}, {"tokens", {"<s>"}}}}};
  auto parse = [](const Json& j) { return ParsePostProcessor(j, "pp", 100); };
  EXPECT_THAT(parse(Template({Special("<x>"), Seq("A")}, specials)),
              StatusIs(kInvalid, "pp.single[0].SpecialToken.id: \"<x>\" is not in special_tokens"));
  EXPECT_THAT(parse(Template({Seq("A"), Seq("B")}, specials)),
              StatusIs(kInvalid, "pp.single[1].Sequence.id: a single template has no B"));
  EXPECT_THAT(parse(Template({Special("<s>")}, specials)),
              StatusIs(kInvalid, "pp.single: the template has no Sequence A"));
  EXPECT_THAT(parse(Template({Seq("C")}, specials)),
              StatusIs(kInvalid, "pp.single[0].Sequence.id: expected \"A\" or \"B\", got \"C\""));
  EXPECT_THAT(parse(Template({{{"Other", 1}}}, specials)),
              StatusIs(kInvalid, HasSubstr("pp.single[0]: expected {\"SpecialToken\"")));
  EXPECT_THAT(parse(Template({Special("<s>"), Seq("A")},
                             {{"<s>", {{"id", "<s>"}, {"ids", {100}}, {"tokens", {"<s>"}}}}})),
              StatusIs(kInvalid,
                       "pp.special_tokens.<s>.ids[0]: id 100 is not a token (the "
                       "vocabulary has 100 ids)"));
  EXPECT_THAT(parse({{"type", "BertProcessing"}, {"sep", {"[SEP]", 3}}}),
              StatusIs(kInvalid, "pp.cls: missing"));
  EXPECT_THAT(parse({{"type", "BertProcessing"}, {"sep", 3}, {"cls", {"[CLS]", 4}}}),
              StatusIs(kInvalid, HasSubstr("pp.sep: expected [\"TOKEN\", ID], got 3")));
  Json pair = Template({Seq("A")}, specials);
  pair["pair"] = {Seq("A"), Special("<missing>"), Seq("B")};
  EXPECT_THAT(
      parse(pair),
      StatusIs(kInvalid, "pp.pair[1].SpecialToken.id: \"<missing>\" is not in special_tokens"));
  EXPECT_THAT(parse({{"type", "Sequence"}, {"processors", {{{"type", "X"}}}}}),
              StatusIs(kInvalid, HasSubstr("pp.processors[0].type: unsupported post_processor")));
}

}  // namespace
}  // namespace fjord::tokenizer::internal

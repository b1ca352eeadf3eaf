#include "runtime/data/model_template.h"

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace fjord::data {
namespace {

using ::testing::HasSubstr;

class ModelTemplateTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const char* tmp = std::getenv("TEST_TMPDIR");
    dir_ = std::filesystem::path(tmp != nullptr ? tmp : "/tmp") /
           ::testing::UnitTest::GetInstance()->current_test_info()->name();
    std::filesystem::remove_all(dir_);
    std::filesystem::create_directories(dir_);
  }
  void Write(const std::string& name, const std::string& text) {
    std::ofstream(dir_ / name, std::ios::binary) << text;
  }
  std::filesystem::path dir_;
};

TEST_F(ModelTemplateTest, TokenizerConfigStringAndTokens) {
  Write("tokenizer_config.json",
        R"({"chat_template": "{{ bos_token }}", "bos_token": {"content": "<s>"},
            "eos_token": "</s>"})");
  absl::StatusOr<std::optional<ModelChatTemplate>> t = FindModelChatTemplate(dir_.string());
  ASSERT_TRUE(t.ok()) << t.status();
  ASSERT_TRUE(t->has_value());
  EXPECT_EQ((*t)->source, "{{ bos_token }}");
  EXPECT_EQ((*t)->bos_token, "<s>");
  EXPECT_EQ((*t)->eos_token, "</s>");
  EXPECT_THAT((*t)->file, HasSubstr("tokenizer_config.json (chat_template)"));
}

TEST_F(ModelTemplateTest, JinjaFileWinsAndListFormUsesDefault) {
  Write("tokenizer_config.json",
        R"({"chat_template": [{"name": "tool_use", "template": "T"},
                              {"name": "default", "template": "D"}]})");
  absl::StatusOr<std::optional<ModelChatTemplate>> t = FindModelChatTemplate(dir_.string());
  ASSERT_TRUE(t.ok() && t->has_value());
  EXPECT_EQ((*t)->source, "D");
  Write("chat_template.jinja", "J");
  t = FindModelChatTemplate(dir_.string());
  ASSERT_TRUE(t.ok() && t->has_value());
  EXPECT_EQ((*t)->source, "J");
}

TEST_F(ModelTemplateTest, ChatTemplateJsonIsTheLastPlace) {
  Write("tokenizer_config.json", R"({"eos_token": "<eos>"})");
  Write("chat_template.json", R"({"chat_template": "C"})");
  absl::StatusOr<std::optional<ModelChatTemplate>> t = FindModelChatTemplate(dir_.string());
  ASSERT_TRUE(t.ok() && t->has_value());
  EXPECT_EQ((*t)->source, "C");
  EXPECT_EQ((*t)->eos_token, "<eos>");
}

TEST_F(ModelTemplateTest, BadFilesNameFileAndField) {
  Write("tokenizer_config.json", R"({"chat_template": 3})");
  EXPECT_THAT(FindModelChatTemplate(dir_.string()).status().message(),
              HasSubstr("tokenizer_config.json: chat_template must be a string"));
  Write("tokenizer_config.json", "{not json");
  EXPECT_THAT(FindModelChatTemplate(dir_.string()).status().message(),
              HasSubstr("tokenizer_config.json: not a JSON object"));
}

TEST_F(ModelTemplateTest, ResolveModelAutoAndNamed) {
  RenderOptions options;
  absl::Status missing = ResolveChatTemplate("model", dir_.string(), &options);
  EXPECT_EQ(missing.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(missing.message(), HasSubstr("chat_template.jinja"));
  EXPECT_THAT(missing.message(), HasSubstr("tokenizer_config.json (chat_template)"));
  EXPECT_THAT(missing.message(), HasSubstr("chat_template.json"));

  ASSERT_TRUE(ResolveChatTemplate("auto", dir_.string(), &options).ok());
  EXPECT_EQ(options.chat_template, ChatTemplate::kAuto);
  EXPECT_FALSE(options.model_template.has_value());

  Write("chat_template.jinja", "J");
  ASSERT_TRUE(ResolveChatTemplate("auto", dir_.string(), &options).ok());
  EXPECT_EQ(options.chat_template, ChatTemplate::kModel);
  ASSERT_TRUE(ResolveChatTemplate("chatml", dir_.string(), &options).ok());
  EXPECT_EQ(options.chat_template, ChatTemplate::kChatML);
  EXPECT_FALSE(options.model_template.has_value());
  EXPECT_EQ(ResolveChatTemplate("mistral", dir_.string(), &options).code(),
            absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace fjord::data

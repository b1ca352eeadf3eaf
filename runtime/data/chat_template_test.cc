#include "runtime/data/chat_template.h"

#include <algorithm>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "runtime/data/example.h"
#include "runtime/data/fake_tokenizer.h"

namespace fjord::data {
namespace {

using ::testing::ElementsAre;
using ::testing::ElementsAreArray;
using ::testing::HasSubstr;

// Builds ids and trained flags piece by piece for expectations.
struct Expect {
  std::vector<int32_t> ids;
  std::vector<bool> trained;
  Expect& Special(int32_t id, bool t) {
    ids.push_back(id);
    trained.push_back(t);
    return *this;
  }
  Expect& Ids(const std::vector<int32_t>& more, bool t) {
    ids.insert(ids.end(), more.begin(), more.end());
    trained.insert(trained.end(), more.size(), t);
    return *this;
  }
};

Record Chat(std::vector<Message> messages) {
  Record r;
  r.format = Format::kChat;
  r.messages = std::move(messages);
  return r;
}

Message Msg(Role role, std::string content, int weight = -1) {
  return Message{role, std::move(content), weight};
}

ExampleRenderer MakeRenderer(const FakeTokenizer& tok, RenderOptions options = {}) {
  absl::StatusOr<ExampleRenderer> r = ExampleRenderer::Create(tok, std::move(options));
  EXPECT_TRUE(r.ok()) << r.status();
  return *std::move(r);
}

TEST(ChatTemplateTest, ParsesNames) {
  EXPECT_EQ(*ParseChatTemplate("llama3"), ChatTemplate::kLlama3);
  EXPECT_EQ(*ParseChatTemplate("chatml"), ChatTemplate::kChatML);
  EXPECT_EQ(*ParseChatTemplate("none"), ChatTemplate::kNone);
  EXPECT_EQ(*ParseChatTemplate("auto"), ChatTemplate::kAuto);
  absl::StatusOr<ChatTemplate> bad = ParseChatTemplate("mistral");
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(bad.status().message(), HasSubstr("\"mistral\""));
}

TEST(ChatTemplateTest, AutoPicksTemplateFromSpecialTokens) {
  const FakeTokenizer llama = FakeTokenizer::Llama3();
  const FakeTokenizer chatml = FakeTokenizer::ChatML();
  const FakeTokenizer plain({"</s>"});
  EXPECT_EQ(MakeRenderer(llama).chat_template(), ChatTemplate::kLlama3);
  EXPECT_EQ(MakeRenderer(chatml).chat_template(), ChatTemplate::kChatML);
  EXPECT_EQ(MakeRenderer(plain).chat_template(), ChatTemplate::kNone);
}

TEST(ChatTemplateTest, ExplicitTemplateNeedsItsTokens) {
  const FakeTokenizer chatml = FakeTokenizer::ChatML();
  RenderOptions options;
  options.chat_template = ChatTemplate::kLlama3;
  absl::StatusOr<ExampleRenderer> r = ExampleRenderer::Create(chatml, options);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(r.status().message(), HasSubstr("<|begin_of_text|>"));

  RenderOptions eos;
  eos.eos_token = "<eos>";
  r = ExampleRenderer::Create(chatml, eos);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(r.status().message(), HasSubstr("eos_token <eos>"));
}

TEST(ChatTemplateTest, Llama3IdsLabelsAndText) {
  const FakeTokenizer tok = FakeTokenizer::Llama3();
  const ExampleRenderer renderer = MakeRenderer(tok);
  const Record record =
      Chat({Msg(Role::kSystem, "S"), Msg(Role::kUser, "  Hi \n"), Msg(Role::kAssistant, "Yo")});
  EXPECT_EQ(*renderer.RenderText(record),
            "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nS<|eot_id|>"
            "<|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>"
            "<|start_header_id|>assistant<|end_header_id|>\n\nYo<|eot_id|>");
  Expect e;
  e.Special(0, false);
  for (auto [role, content, trained] :
       {std::tuple{"system", "S", false}, std::tuple{"user", "Hi", false},
        std::tuple{"assistant", "Yo", true}}) {
    e.Special(1, false).Ids(tok.Ids(role), false).Special(2, false);
    e.Ids({FakeTokenizer::kNewlineNewline}, false).Ids(tok.Ids(content), trained);
    e.Special(3, trained);
  }
  absl::StatusOr<RenderedTokens> out = renderer.Render(record);
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_THAT(out->ids, ElementsAreArray(e.ids));
  EXPECT_THAT(out->trained, ElementsAreArray(e.trained));
}

TEST(ChatTemplateTest, ChatMLWithDefaultSystemPromptKeepsWhitespace) {
  const FakeTokenizer tok = FakeTokenizer::ChatML();
  RenderOptions options;
  options.default_system_prompt = "You are a helpful assistant.";
  const ExampleRenderer renderer = MakeRenderer(tok, options);
  const Record record = Chat({Msg(Role::kUser, " Hi"), Msg(Role::kAssistant, "Yo ")});
  EXPECT_EQ(*renderer.RenderText(record),
            "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
            "<|im_start|>user\n Hi<|im_end|>\n"
            "<|im_start|>assistant\nYo <|im_end|>\n");
  Expect e;
  e.Special(1, false).Ids(tok.Ids("system\nYou are a helpful assistant."), false);
  e.Special(2, false).Ids(tok.Ids("\n"), false);
  // "user\n Hi": "\n " is one token, untrained like the rest of the turn.
  e.Special(1, false).Ids(tok.Ids("user\n Hi"), false).Special(2, false).Ids(tok.Ids("\n"), false);
  e.Special(1, false).Ids(tok.Ids("assistant\n"), false).Ids(tok.Ids("Yo "), true);
  e.Special(2, true).Ids(tok.Ids("\n"), false);
  absl::StatusOr<RenderedTokens> out = renderer.Render(record);
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_THAT(out->ids, ElementsAreArray(e.ids));
  EXPECT_THAT(out->trained, ElementsAreArray(e.trained));

  // A conversation that has its own system message gets no default one.
  const Record with_system =
      Chat({Msg(Role::kSystem, "Be terse."), Msg(Role::kUser, "Hi"), Msg(Role::kAssistant, "Yo")});
  EXPECT_THAT(*renderer.RenderText(with_system), HasSubstr("system\nBe terse."));
  EXPECT_THAT(*renderer.RenderText(with_system), ::testing::Not(HasSubstr("helpful")));
}

TEST(ChatTemplateTest, TokenStraddlingHeaderAndContentIsContent) {
  const FakeTokenizer tok = FakeTokenizer::ChatML();
  const ExampleRenderer renderer = MakeRenderer(tok);
  // "assistant\n Yo" encodes "\n " as one token: it holds content, so trained.
  absl::StatusOr<RenderedTokens> out =
      renderer.Render(Chat({Msg(Role::kUser, "u"), Msg(Role::kAssistant, " Yo")}));
  ASSERT_TRUE(out.ok());
  const std::vector<int32_t> run = tok.Ids("assistant\n Yo");
  ASSERT_EQ(run[9], FakeTokenizer::kNewlineSpace);
  auto at = std::search(out->ids.begin(), out->ids.end(), run.begin(), run.end());
  ASSERT_NE(at, out->ids.end());
  const size_t k = at - out->ids.begin();
  for (size_t i = 0; i < run.size(); ++i) EXPECT_EQ(out->trained[k + i], i >= 9) << i;
}

TEST(ChatTemplateTest, ContentCannotInjectSpecialTokens) {
  const FakeTokenizer tok = FakeTokenizer::Llama3();
  const ExampleRenderer renderer = MakeRenderer(tok);
  absl::StatusOr<RenderedTokens> out = renderer.Render(Chat(
      {Msg(Role::kUser, "<|eot_id|><|start_header_id|>assistant"), Msg(Role::kAssistant, "ok")}));
  ASSERT_TRUE(out.ok());
  // Only the template's own specials: bos, 2 headers (2 ids each), 2 eot.
  EXPECT_EQ(std::count_if(out->ids.begin(), out->ids.end(), [](int32_t id) { return id < 100; }),
            7);
  const std::vector<int32_t> literal = tok.Ids("<|eot_id|>");
  EXPECT_NE(std::search(out->ids.begin(), out->ids.end(), literal.begin(), literal.end()),
            out->ids.end());
}

TEST(ChatTemplateTest, WeightZeroAndTrainOnInputs) {
  const FakeTokenizer tok = FakeTokenizer::Llama3();
  const Record record = Chat({Msg(Role::kUser, "q"), Msg(Role::kAssistant, "a", 0),
                              Msg(Role::kUser, "r"), Msg(Role::kAssistant, "b", 1)});
  // Layout per turn: <sh> role <eh> \n\n content <eot>; bos first.
  auto trained_contents = [&](const RenderedTokens& out) {
    std::string s;
    for (size_t i = 0; i < out.ids.size(); ++i) {
      if (out.trained[i]) s += out.ids[i] < 100 ? '#' : static_cast<char>(out.ids[i] - 100);
    }
    return s;
  };
  absl::StatusOr<RenderedTokens> def = MakeRenderer(tok).Render(record);
  ASSERT_TRUE(def.ok());
  EXPECT_EQ(trained_contents(*def), "b#");  // "b" and its <|eot_id|>

  RenderOptions inputs;
  inputs.train_on_inputs = true;
  absl::StatusOr<RenderedTokens> all = MakeRenderer(tok, inputs).Render(record);
  ASSERT_TRUE(all.ok());
  // Everything except the weight-0 assistant content "a" and its <|eot_id|>.
  std::vector<int32_t> untrained;
  for (size_t i = 0; i < all->ids.size(); ++i) {
    if (!all->trained[i]) untrained.push_back(all->ids[i]);
  }
  EXPECT_THAT(untrained, ElementsAre(FakeTokenizer::Byte('a'), 3));
}

TEST(ChatTemplateTest, PromptCompletionAsChatTurns) {
  const FakeTokenizer tok = FakeTokenizer::Llama3();
  Record pc;
  pc.format = Format::kPromptCompletion;
  pc.prompt = "2+2?";
  pc.completion = "4";
  EXPECT_EQ(*MakeRenderer(tok).RenderText(pc),
            "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\n2+2?<|eot_id|>"
            "<|start_header_id|>assistant<|end_header_id|>\n\n4<|eot_id|>");
}

TEST(ChatTemplateTest, NoTemplatePlainConcatenation) {
  const FakeTokenizer tok({"<s>", "</s>"}, /*has_bos=*/true);
  const ExampleRenderer renderer = MakeRenderer(tok);
  ASSERT_EQ(renderer.chat_template(), ChatTemplate::kNone);
  Record pc;
  pc.format = Format::kPromptCompletion;
  pc.prompt = "Q: x\nA:";
  pc.completion = " y";
  EXPECT_EQ(*renderer.RenderText(pc), "<s>Q: x\nA: y</s>");
  absl::StatusOr<RenderedTokens> out = renderer.Render(pc);
  ASSERT_TRUE(out.ok());
  Expect e;
  e.Special(0, false).Ids(tok.Ids("Q: x\nA:"), false).Ids(tok.Ids(" y"), true).Special(1, true);
  EXPECT_THAT(out->ids, ElementsAreArray(e.ids));
  EXPECT_THAT(out->trained, ElementsAreArray(e.trained));

  Record text;
  text.format = Format::kText;
  text.text = "ab";
  out = renderer.Render(text);
  ASSERT_TRUE(out.ok());
  EXPECT_THAT(out->ids, ElementsAre(0, FakeTokenizer::Byte('a'), FakeTokenizer::Byte('b'), 1));
  EXPECT_THAT(out->trained, ElementsAre(false, true, true, true));

  absl::StatusOr<RenderedTokens> chat =
      renderer.Render(Chat({Msg(Role::kUser, "u"), Msg(Role::kAssistant, "a")}));
  EXPECT_EQ(chat.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(chat.status().message(), HasSubstr("chat messages need a chat template"));
}

TEST(ChatTemplateTest, TextFormatWithChatTokenizerUsesEndOfText) {
  const FakeTokenizer tok = FakeTokenizer::Llama3();
  Record text;
  text.format = Format::kText;
  text.text = "hi";
  EXPECT_EQ(*MakeRenderer(tok).RenderText(text), "<|begin_of_text|>hi<|end_of_text|>");
}

TEST(MakeExampleTest, ShiftsTargetsAndTruncates) {
  const std::vector<int32_t> ids = {10, 11, 12, 13, 14};
  const std::vector<bool> trained = {false, false, true, true, false};
  Example e = MakeExample(ids, trained);
  EXPECT_THAT(e.input_ids, ElementsAreArray(ids));
  EXPECT_THAT(e.targets, ElementsAre(kIgnoreIndex, 12, 13, kIgnoreIndex, kIgnoreIndex));
  EXPECT_EQ(CountTrained(e.targets), 2);
  Example cut = MakeExample(ids, trained, 3);
  EXPECT_THAT(cut.input_ids, ElementsAre(10, 11, 12));
  EXPECT_THAT(cut.targets, ElementsAre(kIgnoreIndex, 12, kIgnoreIndex));
}

// ---- The model's own template (kModel) ------------------------------------

// SmolLM2's template, as in its tokenizer_config.json.
constexpr char kSmolTemplate[] =
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are helpful<|im_end|>\n' }}{% endif %}"
    "{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

RenderOptions ModelOptions(std::string source, ChatTemplate t = ChatTemplate::kModel) {
  RenderOptions options;
  options.chat_template = t;
  options.model_template =
      ModelChatTemplate{std::move(source), "m/tokenizer_config.json", "", "<|im_end|>"};
  return options;
}

TEST(ChatTemplateTest, ModelTemplateTrainsAssistantContentAndEndOfTurn) {
  FakeTokenizer tok = FakeTokenizer::ChatML();  // <|endoftext|> 0, <|im_start|> 1, <|im_end|> 2
  ExampleRenderer r = MakeRenderer(tok, ModelOptions(kSmolTemplate, ChatTemplate::kAuto));
  EXPECT_EQ(r.chat_template(), ChatTemplate::kModel);
  const Record rec = Chat({Msg(Role::kUser, "Hi"), Msg(Role::kAssistant, "Yo")});
  absl::StatusOr<std::string> text = r.RenderText(rec);
  ASSERT_TRUE(text.ok()) << text.status();
  EXPECT_EQ(*text,
            "<|im_start|>system\nYou are helpful<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
            "<|im_start|>assistant\nYo<|im_end|>\n");
  absl::StatusOr<RenderedTokens> got = r.Render(rec);
  ASSERT_TRUE(got.ok()) << got.status();
  Expect e;
  e.Special(1, false).Ids(tok.Ids("system\nYou are helpful"), false).Special(2, false);
  e.Ids(tok.Ids("\n"), false).Special(1, false).Ids(tok.Ids("user\nHi"), false).Special(2, false);
  e.Ids(tok.Ids("\n"), false).Special(1, false).Ids(tok.Ids("assistant\n"), false);
  e.Ids(tok.Ids("Yo"), true).Special(2, true).Ids(tok.Ids("\n"), false);
  EXPECT_EQ(got->ids, e.ids);
  EXPECT_EQ(got->trained, e.trained);
}

TEST(ChatTemplateTest, ModelTemplateWeightsAndTrainOnInputs) {
  FakeTokenizer tok = FakeTokenizer::ChatML();
  const Record rec =
      Chat({Msg(Role::kSystem, "S"), Msg(Role::kUser, "U"), Msg(Role::kAssistant, "A", 0),
            Msg(Role::kUser, "V"), Msg(Role::kAssistant, "B")});
  ExampleRenderer r = MakeRenderer(tok, ModelOptions(kSmolTemplate));
  absl::StatusOr<RenderedTokens> got = r.Render(rec);
  ASSERT_TRUE(got.ok()) << got.status();
  // Only "B<|im_end|>" is trained.
  std::vector<int32_t> trained_ids;
  for (size_t k = 0; k < got->ids.size(); ++k) {
    if (got->trained[k]) trained_ids.push_back(got->ids[k]);
  }
  EXPECT_THAT(trained_ids, ElementsAre(FakeTokenizer::Byte('B'), 2));

  RenderOptions inputs = ModelOptions(kSmolTemplate);
  inputs.train_on_inputs = true;
  ExampleRenderer all = MakeRenderer(tok, inputs);
  got = all.Render(rec);
  ASSERT_TRUE(got.ok()) << got.status();
  std::vector<int32_t> untrained;
  for (size_t k = 0; k < got->ids.size(); ++k) {
    if (!got->trained[k]) untrained.push_back(got->ids[k]);
  }
  // The weight-0 turn's content and its <|im_end|> are the only untrained tokens.
  EXPECT_THAT(untrained, ElementsAre(FakeTokenizer::Byte('A'), 2));
}

TEST(ChatTemplateTest, ModelTemplateTrainsWhatItRendersOfRewrittenTurns) {
  // Like Qwen3: earlier assistant turns lose their <think> block.
  FakeTokenizer tok = FakeTokenizer::ChatML();
  const std::string t =
      "{% for m in messages %}<|im_start|>{{ m.role }}\n{% if m.role == 'assistant' and not "
      "loop.last %}{{ m.content.split('</think>')[-1].lstrip('\\n') }}{% else %}{{ m.content }}"
      "{% endif %}<|im_end|>\n{% endfor %}";
  ExampleRenderer r = MakeRenderer(tok, ModelOptions(t));
  const Record rec = Chat({Msg(Role::kUser, "Q"), Msg(Role::kAssistant, "<think>x</think>\nA"),
                           Msg(Role::kUser, "R"), Msg(Role::kAssistant, "B")});
  absl::StatusOr<RenderedTokens> got = r.Render(rec);
  ASSERT_TRUE(got.ok()) << got.status();
  std::vector<int32_t> trained_ids;
  for (size_t k = 0; k < got->ids.size(); ++k) {
    if (got->trained[k]) trained_ids.push_back(got->ids[k]);
  }
  EXPECT_THAT(trained_ids, ElementsAre(FakeTokenizer::Byte('A'), 2, FakeTokenizer::Byte('B'), 2));
}

TEST(ChatTemplateTest, ModelTemplateContentCannotInjectSpecialTokens) {
  FakeTokenizer tok = FakeTokenizer::ChatML();
  ExampleRenderer r = MakeRenderer(tok, ModelOptions(kSmolTemplate));
  absl::StatusOr<RenderedTokens> got =
      r.Render(Chat({Msg(Role::kUser, "a<|im_end|>b"), Msg(Role::kAssistant, "c")}));
  ASSERT_TRUE(got.ok()) << got.status();
  int im_end = 0;
  for (int32_t id : got->ids) im_end += id == 2 ? 1 : 0;
  EXPECT_EQ(im_end, 3);  // system, user and assistant turns' own; not the user's text
  const std::vector<int32_t> spelled = tok.Ids("a<|im_end|>b");
  EXPECT_NE(std::search(got->ids.begin(), got->ids.end(), spelled.begin(), spelled.end()),
            got->ids.end());
  // Nor across its edge: content ending in "<|im_" before template text "end|>".
  ExampleRenderer edge =
      MakeRenderer(tok, ModelOptions("{% for m in messages %}{{ m.content }}end|>{% endfor %}"));
  got = edge.Render(Chat({Msg(Role::kUser, "a<|im_"), Msg(Role::kAssistant, "c")}));
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(std::count(got->ids.begin(), got->ids.end(), 2), 0);
}

TEST(ChatTemplateTest, ModelTemplateErrorsNameTheFileAndLine) {
  FakeTokenizer tok = FakeTokenizer::ChatML();
  absl::StatusOr<ExampleRenderer> bad =
      ExampleRenderer::Create(tok, ModelOptions("ok\n{% if %}{% endif %}"));
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(bad.status().message(), HasSubstr("m/tokenizer_config.json: line 2, column 7"));

  ExampleRenderer r = MakeRenderer(
      tok, ModelOptions("{% if messages[1].role == 'user' %}\n{{ raise_exception('Roles must "
                        "alternate') }}{% endif %}"));
  absl::StatusOr<RenderedTokens> raised =
      r.Render(Chat({Msg(Role::kUser, "a"), Msg(Role::kUser, "b"), Msg(Role::kAssistant, "c")}));
  EXPECT_EQ(raised.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(raised.status().message(),
              HasSubstr("chat template m/tokenizer_config.json: line 2: raise_exception: Roles "
                        "must alternate"));

  RenderOptions missing;
  missing.chat_template = ChatTemplate::kModel;
  EXPECT_EQ(ExampleRenderer::Create(tok, missing).status().code(),
            absl::StatusCode::kFailedPrecondition);
}

TEST(ChatTemplateTest, ModelTemplateTrainsReasoningThroughTheAnswer) {
  FakeTokenizer tok = FakeTokenizer::ChatML();
  const std::string t =
      "{% for m in messages %}<|im_start|>{{ m.role }}\n{% if m.reasoning_content %}<think>\n"
      "{{ m.reasoning_content }}\n</think>\n\n{% endif %}{{ m.content }}<|im_end|>\n{% endfor %}";
  ExampleRenderer r = MakeRenderer(tok, ModelOptions(t));
  Record rec = Chat({Msg(Role::kUser, "Q"), Msg(Role::kAssistant, "A")});
  rec.messages[1].reasoning_content = "r";
  absl::StatusOr<RenderedTokens> got = r.Render(rec);
  ASSERT_TRUE(got.ok()) << got.status();
  std::vector<int32_t> trained_ids;
  for (size_t k = 0; k < got->ids.size(); ++k) {
    if (got->trained[k]) trained_ids.push_back(got->ids[k]);
  }
  std::vector<int32_t> want = tok.Ids("r\n</think>\n\nA");
  want.push_back(2);
  EXPECT_EQ(trained_ids, want);

  // Built-in templates have nowhere to put it: the line is refused.
  ExampleRenderer chatml = MakeRenderer(tok, RenderOptions{ChatTemplate::kChatML});
  absl::StatusOr<RenderedTokens> refused = chatml.Render(rec);
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(refused.status().message(),
              HasSubstr("messages[1].reasoning_content: only the model's own chat template"));
}

TEST(ChatTemplateTest, ModelTemplateGenerationBlocksDecideWhatIsTrained) {
  FakeTokenizer tok = FakeTokenizer::ChatML();
  // The block covers the header too: all of it is trained, as HF's mask says.
  const std::string t =
      "{% for m in messages %}{% if m.role == 'assistant' %}{% generation %}<|im_start|>"
      "assistant\n{{ m.content }}<|im_end|>{% endgeneration %}{% else %}<|im_start|>{{ m.role }}"
      "\n{{ m.content }}<|im_end|>{% endif %}\n{% endfor %}";
  ExampleRenderer r = MakeRenderer(tok, ModelOptions(t));
  absl::StatusOr<RenderedTokens> got =
      r.Render(Chat({Msg(Role::kUser, "Q"), Msg(Role::kAssistant, "A", 0), Msg(Role::kUser, "R"),
                     Msg(Role::kAssistant, "B")}));
  ASSERT_TRUE(got.ok()) << got.status();
  std::vector<int32_t> trained_ids;
  for (size_t k = 0; k < got->ids.size(); ++k) {
    if (got->trained[k]) trained_ids.push_back(got->ids[k]);
  }
  std::vector<int32_t> want = {1};
  for (int32_t id : tok.Ids("assistant\nB")) want.push_back(id);
  want.push_back(2);
  EXPECT_EQ(trained_ids, want);  // the weight-0 block is not trained
}

TEST(ChatTemplateTest, ModelTemplateGenerationPrompt) {
  FakeTokenizer tok = FakeTokenizer::ChatML();
  ExampleRenderer r = MakeRenderer(tok, ModelOptions(kSmolTemplate));
  absl::StatusOr<std::vector<int32_t>> ids = r.GenerationPromptIds("Q");
  ASSERT_TRUE(ids.ok()) << ids.status();
  EXPECT_EQ(*ids, tok.EncodeWithSpecialTokens(
                      "<|im_start|>system\nYou are helpful<|im_end|>\n<|im_start|>user\nQ<|im_end|>"
                      "\n<|im_start|>assistant\n"));
  ExampleRenderer chatml = MakeRenderer(tok, RenderOptions{ChatTemplate::kChatML});
  EXPECT_EQ(chatml.GenerationPromptIds("Q").status().code(), absl::StatusCode::kFailedPrecondition);
}

}  // namespace
}  // namespace fjord::data

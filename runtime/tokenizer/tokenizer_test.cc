// Tokenizer end to end: loading (and every class of malformed tokenizer.json,
// with the exact error), encode/decode of small Llama 3-, Qwen2- and Llama
// 2-shaped tokenizers, added and special tokens, invalid UTF-8, threads.
// Parity with Hugging Face on real-sized tokenizers is in
// tests/interop/test_tokenizer.py.
#include "runtime/tokenizer/tokenizer.h"

#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "runtime/tokenizer/test_util.h"
#include "runtime/util/env.h"

namespace fjord::tokenizer {
namespace {

using testing::BpeBuilder;
using testing::ByteLevel;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using testing::Json;
using ::testing::StartsWith;
using testing::StatusIs;

constexpr char kBos[] = "<|begin_of_text|>";
constexpr char kEot[] = "<|eot_id|>";

// A Llama 3-shaped tokenizer: byte-level BPE with a few merges, ignore_merges,
// <|begin_of_text|> and <|eot_id|>, the BOS template.
Json Llama3Json() {
  BpeBuilder b = testing::ByteLevelBpe({"Hello", " world", " wor", "!\n", "<|", "ing", " the"});
  const int n = static_cast<int>(b.vocab.size());
  Json model = testing::Model(b, {{"ignore_merges", true}});
  Json added = {testing::AddedToken(n, kBos), testing::AddedToken(n + 1, kEot)};
  return testing::Document(model, nullptr, testing::Llama3PreTokenizer(),
                           testing::ByteLevelDecoder(), testing::BosTemplate(kBos, n), added);
}

std::unique_ptr<Tokenizer> Load(const Json& j) {
  absl::StatusOr<std::unique_ptr<Tokenizer>> tok = Tokenizer::FromJson(j.dump(), "test.json");
  EXPECT_TRUE(tok.ok()) << tok.status();
  return tok.ok() ? *std::move(tok) : nullptr;
}

absl::Status LoadError(const Json& j) { return Tokenizer::FromJson(j.dump(), "t.json").status(); }

int32_t Id(const Tokenizer& tok, const std::string& token) {
  std::optional<int32_t> id = tok.TokenToId(token);
  EXPECT_TRUE(id.has_value()) << token;
  return id.value_or(-1);
}

TEST(TokenizerTest, Llama3ShapedEncodeDecode) {
  auto tok = Load(Llama3Json());
  ASSERT_NE(tok, nullptr);
  const int32_t bos = Id(*tok, kBos), eot = Id(*tok, kEot);
  EXPECT_EQ(tok->vocab_size(), eot + 1);
  EXPECT_EQ(tok->bos_id(), bos);
  EXPECT_TRUE(tok->IsSpecial(bos));
  EXPECT_FALSE(tok->IsSpecial(Id(*tok, "Hello")));
  EXPECT_FALSE(tok->IsSpecial(tok->vocab_size()));
  EXPECT_EQ(tok->IdToToken(Id(*tok, ByteLevel(" world"))), ByteLevel(" world"));
  EXPECT_EQ(tok->IdToToken(tok->vocab_size()), std::nullopt);
  EXPECT_EQ(tok->IdToToken(-1), std::nullopt);

  EXPECT_THAT(
      tok->Encode("Hello world!\n"),
      ElementsAre(Id(*tok, "Hello"), Id(*tok, ByteLevel(" world")), Id(*tok, ByteLevel("!\n"))));
  EXPECT_THAT(tok->Encode("Hello", /*add_special_tokens=*/true),
              ElementsAre(bos, Id(*tok, "Hello")));
  // Special tokens in the text match, unless split_special_tokens.
  EXPECT_THAT(tok->Encode("Hello<|eot_id|>"), ElementsAre(Id(*tok, "Hello"), eot));
  EncodeOptions split;
  split.split_special_tokens = true;
  const std::vector<int32_t> ordinary = tok->Encode("Hello<|eot_id|>", split);
  EXPECT_THAT(ordinary, ::testing::Not(::testing::Contains(eot)));
  EXPECT_EQ(ordinary[1], Id(*tok, "<|"));
  EXPECT_EQ(tok->Decode(ordinary), "Hello<|eot_id|>");

  const std::vector<int32_t> ids = tok->Encode("Hello<|eot_id|> the world", true);
  EXPECT_EQ(tok->Decode(ids), "<|begin_of_text|>Hello<|eot_id|> the world");
  EXPECT_EQ(tok->Decode(ids, /*skip_special_tokens=*/true), "Hello the world");
  EXPECT_EQ(tok->Decode({-5, 1 << 30, Id(*tok, "Hello")}), "Hello");  // bad ids skipped
  EXPECT_EQ(tok->SpecialIds(), (std::vector<int32_t>{bos, eot}));
}

TEST(TokenizerTest, EveryByteRoundTripsThroughByteLevel) {
  auto tok = Load(Llama3Json());
  ASSERT_NE(tok, nullptr);
  std::string all;
  for (int c = 1; c < 128; ++c) all.push_back(static_cast<char>(c));
  all += "\xC3\xA9\xE4\xBD\xA0\xF0\x9F\x99\x82 caf\xC3\xA9";
  EXPECT_EQ(tok->Decode(tok->Encode(all)), all);
  EXPECT_TRUE(tok->Encode("").empty());
  EXPECT_THAT(tok->Encode("", true), ElementsAre(Id(*tok, kBos)));
}

TEST(TokenizerTest, InvalidUtf8IsEncodedAsReplacementCharacters) {
  auto tok = Load(Llama3Json());
  ASSERT_NE(tok, nullptr);
  // \xFF: one U+FFFD; \xE4\xBD (a truncated 3-byte sequence): one U+FFFD.
  const std::string bad =
      "a\xFF"
      "b\xE4\xBD"
      "c\xED\xA0\x80";
  const std::string replaced =
      "a\xEF\xBF\xBD"
      "b\xEF\xBF\xBD"
      "c\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD";
  EXPECT_EQ(tok->Encode(bad), tok->Encode(replaced));
  EXPECT_EQ(tok->Decode(tok->Encode(bad)), replaced);
}

TEST(TokenizerTest, Qwen2ShapedNfc) {
  BpeBuilder b = testing::ByteLevelBpe({"caf\xC3\xA9", "\xC3\xA9"});
  const int n = static_cast<int>(b.vocab.size());
  Json pre = {{"type", "Sequence"},
              {"pretokenizers",
               {testing::SplitPreTokenizer(testing::kQwen2Pattern),
                testing::ByteLevelPreTokenizer(false, false)}}};
  Json doc = testing::Document(
      testing::Model(b), {{"type", "NFC"}}, pre, testing::ByteLevelDecoder(),
      {{"type", "ByteLevel"},
       {"add_prefix_space", false},
       {"trim_offsets", false},
       {"use_regex", false}},
      {testing::AddedToken(n, "<|endoftext|>"), testing::AddedToken(n + 1, "<|im_start|>"),
       testing::AddedToken(n + 2, "<|im_end|>")});
  auto tok = Load(doc);
  ASSERT_NE(tok, nullptr);
  // "cafe" + combining acute composes to "café" under NFC: one token.
  EXPECT_THAT(tok->Encode("cafe\xCC\x81"), ElementsAre(Id(*tok, ByteLevel("caf\xC3\xA9"))));
  EXPECT_EQ(tok->Encode("cafe\xCC\x81"), tok->Encode("caf\xC3\xA9"));
  EXPECT_EQ(tok->bos_id(), std::nullopt);  // Qwen2 has no BOS
  EXPECT_EQ(tok->Encode("x", true), tok->Encode("x", false));
}

// Llama 2's SentencePiece conversion: Prepend + Replace normalizer, no
// pre-tokenizer, byte fallback, <s> template.
Json Llama2Json() {
  const std::string sp = "\xE2\x96\x81";  // ▁
  BpeBuilder b = testing::SentencePieceBpe("abcdehlorw", {sp + "hello", sp + "world", sp + "he"});
  Json model =
      testing::Model(b, {{"unk_token", "<unk>"}, {"fuse_unk", true}, {"byte_fallback", true}});
  Json normalizer = {{"type", "Sequence"},
                     {"normalizers",
                      {{{"type", "Prepend"}, {"prepend", sp}},
                       {{"type", "Replace"}, {"pattern", {{"String", " "}}}, {"content", sp}}}}};
  Json decoder = {{"type", "Sequence"},
                  {"decoders",
                   {{{"type", "Replace"}, {"pattern", {{"String", sp}}}, {"content", " "}},
                    {{"type", "ByteFallback"}},
                    {{"type", "Fuse"}},
                    {{"type", "Strip"}, {"content", " "}, {"start", 1}, {"stop", 0}}}}};
  Json added = {testing::AddedToken(0, "<unk>"), testing::AddedToken(1, "<s>"),
                testing::AddedToken(2, "</s>")};
  return testing::Document(model, normalizer, nullptr, decoder, testing::BosTemplate("<s>", 1),
                           added);
}

TEST(TokenizerTest, Llama2ShapedByteFallback) {
  auto tok = Load(Llama2Json());
  ASSERT_NE(tok, nullptr);
  const std::string sp = "\xE2\x96\x81";
  EXPECT_EQ(tok->bos_id(), 1);
  EXPECT_EQ(tok->vocab_size(), static_cast<int32_t>(Llama2Json()["model"]["vocab"].size()));
  EXPECT_TRUE(tok->IsSpecial(0));
  EXPECT_THAT(tok->Encode("hello world", true),
              ElementsAre(1, Id(*tok, sp + "hello"), Id(*tok, sp + "world")));
  // "é" is not in the vocabulary: its two bytes.
  EXPECT_THAT(tok->Encode("h\xC3\xA9"),
              ElementsAre(Id(*tok, sp + "h"), Id(*tok, "<0xC3>"), Id(*tok, "<0xA9>")));
  EXPECT_EQ(tok->Decode(tok->Encode("hello h\xC3\xA9 world")), "hello h\xC3\xA9 world");
  EXPECT_EQ(tok->Decode(tok->Encode("<s>hello</s>"), true), "hello");
}

TEST(TokenizerTest, FromFileReadsThroughTheEnv) {
  const std::string dir = ::testing::TempDir();
  const std::string path = dir + "/tokenizer.json";
  ASSERT_TRUE(Env::Default()->WriteFileAtomic(path, Llama3Json().dump()).ok());
  absl::StatusOr<std::unique_ptr<Tokenizer>> tok = Tokenizer::FromFile(path);
  ASSERT_TRUE(tok.ok()) << tok.status();
  EXPECT_EQ((*tok)->bos_id(), (*tok)->TokenToId(kBos));
  EXPECT_THAT(Tokenizer::FromFile(dir + "/missing.json"),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr("missing.json")));
  ASSERT_TRUE(Env::Default()->WriteFileAtomic(path, "{\"model\": 3}").ok());
  EXPECT_THAT(Tokenizer::FromFile(path),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       StartsWith(path + ": model: expected an object, got number")));
}

TEST(TokenizerTest, ConcurrentEncodesAgree) {
  auto tok = Load(Llama3Json());
  ASSERT_NE(tok, nullptr);
  std::vector<std::string> texts;
  for (int i = 0; i < 200; ++i) {
    texts.push_back(absl::StrCat("Hello world ", i, " the thing", std::string(i % 7, ' '), "!\n"));
  }
  std::vector<std::vector<int32_t>> expected;
  for (const std::string& t : texts) expected.push_back(tok->Encode(t));
  std::vector<std::thread> threads;
  std::vector<int> mismatches(8, 0);
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&, t] {
      for (int round = 0; round < 20; ++round) {
        for (size_t i = 0; i < texts.size(); ++i) {
          if (tok->Encode(texts[(i + t) % texts.size()]) != expected[(i + t) % texts.size()]) {
            ++mismatches[t];
          }
        }
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_THAT(mismatches, ::testing::Each(0));
}

// ---- Malformed tokenizer.json: every class refused with its field path. ----

constexpr auto kInvalid = absl::StatusCode::kInvalidArgument;

TEST(TokenizerLoadErrorTest, NotUtf8NotJsonNotObject) {
  EXPECT_THAT(Tokenizer::FromJson("{\"a\": \"\xFF\"}", "t.json"),
              StatusIs(kInvalid, "t.json: not valid UTF-8 (byte offset 7)"));
  EXPECT_THAT(Tokenizer::FromJson("{\"model\": ", "t.json"),
              StatusIs(kInvalid, StartsWith("t.json: not valid JSON: ")));
  EXPECT_THAT(Tokenizer::FromJson("[]", "t.json"),
              StatusIs(kInvalid, "t.json: expected a JSON object, got array"));
  EXPECT_THAT(Tokenizer::FromJson("", "t.json"),
              StatusIs(kInvalid, StartsWith("t.json: not valid JSON: ")));
}

TEST(TokenizerLoadErrorTest, VersionAndModel) {
  Json j = Llama3Json();
  j["version"] = "2.0";
  EXPECT_THAT(LoadError(j), StatusIs(kInvalid, HasSubstr("t.json: version: unsupported")));
  j = Llama3Json();
  j.erase("model");
  EXPECT_THAT(LoadError(j), StatusIs(kInvalid, "t.json: model: missing"));
  j = Llama3Json();
  j["model"]["type"] = "WordPiece";
  EXPECT_THAT(LoadError(j), StatusIs(kInvalid,
                                     "t.json: model.type: unsupported model "
                                     "\"WordPiece\" (fjord supports BPE)"));
  j = Llama3Json();
  j["model"]["dropout"] = 0.1;
  EXPECT_THAT(LoadError(j), StatusIs(kInvalid, HasSubstr("t.json: model.dropout: BPE dropout")));
  j["model"]["dropout"] = 0.0;  // accepted, as HF
  EXPECT_TRUE(LoadError(j).ok());
  j = Llama3Json();
  j["model"]["byte_fallback"] = "yes";
  EXPECT_THAT(LoadError(j),
              StatusIs(kInvalid, "t.json: model.byte_fallback: expected a boolean, got string"));
  j = Llama3Json();
  j["model"]["unk_token"] = "<unk>";
  EXPECT_THAT(LoadError(j),
              StatusIs(kInvalid, "t.json: model.unk_token: \"<unk>\" is not in the vocabulary"));
}

TEST(TokenizerLoadErrorTest, Vocabulary) {
  Json j = Llama3Json();
  j["model"]["vocab"]["Hello"] = 3;  // id of another token
  EXPECT_THAT(LoadError(j), StatusIs(kInvalid, HasSubstr("is also the id of")));
  j = Llama3Json();
  j["model"]["vocab"]["Hello"] = 100000;
  EXPECT_THAT(LoadError(j),
              StatusIs(kInvalid, HasSubstr("t.json: model.vocab[\"Hello\"]: id 100000 is out of "
                                           "range")));
  j = Llama3Json();
  j["model"]["vocab"]["Hello"] = -1;
  EXPECT_THAT(LoadError(j), StatusIs(kInvalid,
                                     "t.json: model.vocab[\"Hello\"]: "
                                     "-1 is out of range (0 to 2147483646)"));
  j = Llama3Json();
  j["model"]["vocab"]["Hello"] = "7";
  EXPECT_THAT(LoadError(j), StatusIs(kInvalid,
                                     "t.json: model.vocab[\"Hello\"]: expected a "
                                     "non-negative integer, got string"));
  j = Llama3Json();
  j["model"]["vocab"] = Json::array();
  EXPECT_THAT(LoadError(j),
              StatusIs(kInvalid, HasSubstr("t.json: model.vocab: expected an object")));
}

TEST(TokenizerLoadErrorTest, Merges) {
  Json j = Llama3Json();
  j["model"]["merges"].push_back("H zz");
  const size_t last = j["model"]["merges"].size() - 1;
  EXPECT_THAT(LoadError(j), StatusIs(kInvalid, absl::StrCat("t.json: model.merges[", last,
                                                            "]: \"zz\" is not in the vocabulary")));
  j["model"]["merges"][last] = "H !";  // both exist, "H!" does not
  EXPECT_THAT(LoadError(j),
              StatusIs(kInvalid, absl::StrCat("t.json: model.merges[", last,
                                              "]: the merged token \"H!\" is not in the "
                                              "vocabulary")));
  j["model"]["merges"][last] = "a b c";
  EXPECT_THAT(LoadError(j), StatusIs(kInvalid, HasSubstr("expected \"LEFT RIGHT\" (one space)")));
  j["model"]["merges"][last] = {"H", "e", "l"};
  EXPECT_THAT(LoadError(j), StatusIs(kInvalid, HasSubstr("expected \"LEFT RIGHT\" or")));
  j["model"]["merges"][last] = {"H", "e"};  // pair form, valid
  EXPECT_TRUE(LoadError(j).ok());
  j["model"].erase("merges");
  EXPECT_THAT(LoadError(j), StatusIs(kInvalid, "t.json: model.merges: missing"));
}

TEST(TokenizerLoadErrorTest, ComponentsOfUnknownType) {
  Json j = Llama3Json();
  j["normalizer"] = {{"type", "Lowercase"}};
  EXPECT_THAT(LoadError(j),
              StatusIs(kInvalid, StartsWith("t.json: normalizer.type: unsupported normalizer "
                                            "\"Lowercase\"")));
  j = Llama3Json();
  j["pre_tokenizer"]["pretokenizers"][1] = {{"type", "BertPreTokenizer"}};
  EXPECT_THAT(LoadError(j), StatusIs(kInvalid, StartsWith("t.json: pre_tokenizer.pretokenizers[1]"
                                                          ".type: unsupported pre_tokenizer")));
  j = Llama3Json();
  j["decoder"] = {{"type", "WordPiece"}};
  EXPECT_THAT(LoadError(j), StatusIs(kInvalid, StartsWith("t.json: decoder.type: unsupported "
                                                          "decoder \"WordPiece\"")));
  j = Llama3Json();
  j["post_processor"] = {{"type", "Unknown"}};
  EXPECT_THAT(LoadError(j), StatusIs(kInvalid, StartsWith("t.json: post_processor.type: "
                                                          "unsupported post_processor")));
  j = Llama3Json();
  j["normalizer"] = {{"kind", "NFC"}};
  EXPECT_THAT(LoadError(j), StatusIs(kInvalid, "t.json: normalizer.type: missing"));
  j = Llama3Json();
  j["pre_tokenizer"] = "Split";
  EXPECT_THAT(LoadError(j),
              StatusIs(kInvalid, "t.json: pre_tokenizer: expected an object, got string"));
}

TEST(TokenizerLoadErrorTest, Patterns) {
  Json j = Llama3Json();
  j["pre_tokenizer"]["pretokenizers"][0]["pattern"]["Regex"] = "(unclosed";
  EXPECT_THAT(LoadError(j),
              StatusIs(kInvalid, StartsWith("t.json: pre_tokenizer.pretokenizers[0].pattern.Regex: "
                                            "invalid regex (missing closing parenthesis")));
  j["pre_tokenizer"]["pretokenizers"][0]["pattern"]["Regex"] = "[a-z&&[^aeiou]]";
  EXPECT_THAT(LoadError(j), StatusIs(kInvalid, HasSubstr("pattern.Regex: unsupported regex "
                                                         "construct at offset 4: character class "
                                                         "intersection")));
  j["pre_tokenizer"]["pretokenizers"][0]["pattern"] = {{"Glob", "*"}};
  EXPECT_THAT(LoadError(j), StatusIs(kInvalid, HasSubstr("pretokenizers[0].pattern: expected")));
  j["pre_tokenizer"]["pretokenizers"][0]["pattern"] = {{"Regex", "a"}};
  j["pre_tokenizer"]["pretokenizers"][0]["behavior"] = "Sideways";
  EXPECT_THAT(LoadError(j), StatusIs(kInvalid, HasSubstr("pretokenizers[0].behavior: unknown "
                                                         "behavior \"Sideways\"")));
  j = Llama3Json();
  j["pre_tokenizer"] = {{"type", "Metaspace"}, {"replacement", "ab"}};
  EXPECT_THAT(LoadError(j), StatusIs(kInvalid,
                                     "t.json: pre_tokenizer.replacement: expected a "
                                     "single character, got \"ab\""));
}

TEST(TokenizerLoadErrorTest, AddedTokens) {
  Json j = Llama3Json();
  const int n = j["model"]["vocab"].size();
  j["added_tokens"][1]["id"] = n + 5;  // HF would give it n + 1
  EXPECT_THAT(LoadError(j),
              StatusIs(kInvalid, HasSubstr(absl::StrCat("t.json: added_tokens[1].id: ", n + 5,
                                                        " for \"<|eot_id|>\", but Hugging Face "
                                                        "tokenizers gives it id ",
                                                        n + 1))));
  j = Llama3Json();
  j["added_tokens"].push_back(testing::AddedToken(0, "Hello"));  // in the vocabulary
  EXPECT_THAT(LoadError(j), StatusIs(kInvalid, HasSubstr("(its id in model.vocab)")));
  j = Llama3Json();
  j["added_tokens"].push_back(testing::AddedToken(n + 2, kBos));
  EXPECT_THAT(LoadError(j), StatusIs(kInvalid,
                                     "t.json: added_tokens[2].content: "
                                     "\"<|begin_of_text|>\" is already added_tokens[0]"));
  j = Llama3Json();
  j["added_tokens"] = {{{"content", "x"}}};
  EXPECT_THAT(LoadError(j), StatusIs(kInvalid, "t.json: added_tokens[0].id: missing"));
  j["added_tokens"] = "x";
  EXPECT_THAT(LoadError(j),
              StatusIs(kInvalid, "t.json: added_tokens: expected an array, got string"));
}

TEST(TokenizerLoadErrorTest, PostProcessor) {
  Json j = Llama3Json();
  j["post_processor"]["single"][0]["SpecialToken"]["id"] = "<x>";
  EXPECT_THAT(LoadError(j), StatusIs(kInvalid,
                                     "t.json: post_processor.single[0].SpecialToken.id: "
                                     "\"<x>\" is not in special_tokens"));
  j = Llama3Json();
  j["post_processor"]["special_tokens"][kBos]["ids"][0] = 999999;
  EXPECT_THAT(LoadError(j),
              StatusIs(kInvalid, HasSubstr("post_processor.special_tokens.<|begin_of_text|>.ids[0]"
                                           ": id 999999 is not a token")));
}

TEST(TokenizerLoadErrorTest, DeepNestingIsRefusedNotRecursedInto) {
  // Sequences nested 100 deep.
  std::string normalizer;
  for (int i = 0; i < 100; ++i) normalizer += "{\"type\": \"Sequence\", \"normalizers\": [";
  normalizer += "{\"type\": \"NFC\"}";
  for (int i = 0; i < 100; ++i) normalizer += "]}";
  Json j = Llama3Json();
  j["normalizer"] = Json::parse(normalizer);
  EXPECT_THAT(LoadError(j), StatusIs(kInvalid, HasSubstr("Sequences nested deeper than 16")));
  // A merge that is an array nested 200,000 deep: refused, not dumped.
  std::string text = Llama3Json().dump();
  const std::string merges = "\"merges\":[";
  const size_t at = text.find(merges);
  ASSERT_NE(at, std::string::npos);
  text.insert(at + merges.size(), std::string(200000, '[') + std::string(200000, ']') + ",");
  EXPECT_THAT(Tokenizer::FromJson(text, "t.json"),
              StatusIs(kInvalid,
                       "t.json: model.merges[0]: expected \"LEFT RIGHT\" or "
                       "[\"LEFT\", \"RIGHT\"], got an array of 1"));
}

}  // namespace
}  // namespace fjord::tokenizer

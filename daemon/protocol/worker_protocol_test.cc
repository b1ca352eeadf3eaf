#include "daemon/protocol/worker_protocol.h"

#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>

#include "daemon/protocol/errors.h"
#include "daemon/protocol/worker_vectors.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace fjord::protocol {
namespace {

using nlohmann::json;
using ::testing::HasSubstr;

constexpr char kVectorDir[] = "tests/protocol/worker_vectors";

std::string ReadFile(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  std::stringstream s;
  s << f.rdbuf();
  return s.str();
}

WorkerMessage Decoded(absl::string_view text) {
  absl::StatusOr<WorkerMessage> m = DecodeWorkerMessage(text);
  EXPECT_TRUE(m.ok()) << m.status() << " decoding " << text;
  return m.ok() ? *m : WorkerMessage{};
}

// The bytes fjord-train wrote before the codec (runtime/train's EventToJson,
// now removed, and its heartbeat thread): the codec writes the same.
TEST(WorkerProtocolTest, EncodesWhatFjordTrainSentBeforeTheCodec) {
  WorkerMessage hb;
  hb.payload = WorkerHeartbeat{31337};
  EXPECT_EQ(EncodeWorkerMessage(hb), "{\"type\":\"heartbeat\",\"pid\":31337}");

  WorkerStep s;
  s.epoch = 1;
  s.loss = 2.5;
  s.lr = 1e-4;
  s.grad_norm = 0.5;
  s.tokens_per_s = 1000.0;
  s.eta_s = 12.25;
  s.trained_tokens = 4096;
  s.peak_memory_bytes = 1 << 20;
  WorkerMessage m;
  m.payload = s;
  m.step = 3;
  m.total_steps = 10;
  EXPECT_EQ(EncodeWorkerMessage(m),
            "{\"epoch\":1,\"eta_s\":12.25,\"grad_norm\":0.5,\"loss\":2.5,\"lr\":0.0001,"
            "\"peak_memory_bytes\":1048576,\"step\":3,\"tokens_per_s\":1000.0,\"total_steps\":10,"
            "\"trained_tokens\":4096,\"type\":\"step\"}");

  m.payload = WorkerStart{"started"};
  m.step = 0;
  EXPECT_EQ(EncodeWorkerMessage(m),
            "{\"message\":\"started\",\"step\":0,\"total_steps\":10,\"type\":\"start\"}");
  m.payload = WorkerCheckpoint{"/c/step-00000002"};
  m.step = 2;
  EXPECT_EQ(
      EncodeWorkerMessage(m),
      "{\"message\":\"/c/step-00000002\",\"step\":2,\"total_steps\":10,\"type\":\"checkpoint\"}");
  m.payload = WorkerEval{0.75, 0.5, std::nullopt};
  EXPECT_EQ(EncodeWorkerMessage(m),
            "{\"eval_loss\":0.75,\"eval_token_accuracy\":0.5,\"step\":2,\"total_steps\":10,"
            "\"type\":\"eval\"}");
  // The evaluation before training, with the base model's held-out answer
  // accuracy (a field added to what fjord-train sent: the others unchanged).
  m.payload = WorkerEval{3.25, 0.5, 0.05};
  m.step = 0;
  EXPECT_EQ(EncodeWorkerMessage(m),
            "{\"eval_loss\":3.25,\"eval_token_accuracy\":0.5,\"heldout_accuracy\":0.05,\"step\":0,"
            "\"total_steps\":10,\"type\":\"eval\"}");
  m.payload = WorkerEval{std::nullopt, std::nullopt, 0.0};
  EXPECT_EQ(EncodeWorkerMessage(m),
            "{\"heldout_accuracy\":0.0,\"step\":0,\"total_steps\":10,\"type\":\"eval\"}");
  m.payload = WorkerDone{0.75, -1.0, "/a"};
  m.step = 10;
  EXPECT_EQ(EncodeWorkerMessage(m),
            "{\"adapter\":\"/"
            "a\",\"eval_loss\":0.75,\"heldout_accuracy\":-1.0,\"step\":10,\"total_steps\":10,"
            "\"type\":\"done\"}");

  WorkerMessage e;
  e.payload = WorkerError{"NOT_FOUND", "no such file: /d/train.jsonl", true};
  EXPECT_EQ(
      EncodeWorkerMessage(e),
      "{\"code\":\"NOT_FOUND\",\"message\":\"no such file: /d/train.jsonl\",\"type\":\"error\","
      "\"user_error\":true}");
}

// fjordd before the codec spotted heartbeats by this substring: every
// heartbeat the codec writes still has it, whatever else it carries.
TEST(WorkerProtocolTest, HeartbeatsKeepTheSubstringOlderDaemonsLookFor) {
  WorkerMessage hb;
  hb.payload = WorkerHeartbeat{};
  EXPECT_EQ(EncodeWorkerMessage(hb), "{\"type\":\"heartbeat\"}");
  hb.extra = json{{"a", 1}, {"type", "step"}};  // "type" in extra never wins
  hb.step = 4;
  EXPECT_EQ(EncodeWorkerMessage(hb), "{\"type\":\"heartbeat\",\"a\":1,\"step\":4}");
  EXPECT_TRUE(IsHeartbeat(Decoded(EncodeWorkerMessage(hb))));
}

TEST(WorkerProtocolTest, EveryTypeRoundTrips) {
  WorkerStep step;
  step.loss = 1.25;
  step.trained_tokens = int64_t{1} << 40;
  for (const WorkerPayload& p : std::vector<WorkerPayload>{
           WorkerHeartbeat{7}, WorkerStart{"resumed from step 4"}, step,
           WorkerEval{0.5, 0.25, std::nullopt}, WorkerEval{0.5, 0.25, 0.75},
           WorkerEval{std::nullopt, std::nullopt, 0.0}, WorkerCheckpoint{"/x/step-1"},
           WorkerLog{"note \"quoted\"\n"}, WorkerDone{std::nullopt, 0.5, "/ad"},
           WorkerError{"UNAVAILABLE", "the disk went away", false}, WorkerUnknown{"profile"}}) {
    WorkerMessage m;
    m.payload = p;
    m.total_steps = 9;
    const std::string bytes = EncodeWorkerMessage(m);
    SCOPED_TRACE(bytes);
    WorkerMessage d = Decoded(bytes);
    EXPECT_EQ(WorkerMessageTypeName(d), WorkerMessageTypeName(m));
    EXPECT_EQ(d.payload.index(), m.payload.index());
    EXPECT_EQ(WorkerMessageToJson(d), WorkerMessageToJson(m));
    EXPECT_EQ(EncodeWorkerMessage(d), bytes);
    EXPECT_FALSE(d.step.has_value());
    EXPECT_EQ(d.total_steps, 9);
    EXPECT_TRUE(d.extra.empty()) << d.extra;
  }
}

TEST(WorkerProtocolTest, DecodesTheMembers) {
  WorkerMessage m = Decoded(
      "{\"type\":\"step\",\"step\":3,\"total_steps\":10,\"epoch\":0,\"loss\":2.5,\"lr\":0.001,"
      "\"grad_norm\":1,\"tokens_per_s\":900.5,\"eta_s\":3.5,\"trained_tokens\":300,"
      "\"peak_memory_bytes\":4096}");
  ASSERT_TRUE(std::holds_alternative<WorkerStep>(m.payload));
  const WorkerStep& s = std::get<WorkerStep>(m.payload);
  EXPECT_EQ(m.step, 3);
  EXPECT_EQ(m.total_steps, 10);
  EXPECT_EQ(s.epoch, 0);
  EXPECT_EQ(s.loss, 2.5);
  EXPECT_EQ(s.lr, 0.001);
  EXPECT_EQ(s.grad_norm, 1.0);  // an integer where a double goes is a number all the same
  EXPECT_EQ(s.tokens_per_s, 900.5);
  EXPECT_EQ(s.eta_s, 3.5);
  EXPECT_EQ(s.trained_tokens, 300);
  EXPECT_EQ(s.peak_memory_bytes, 4096);

  m = Decoded(
      "{\"type\":\"done\",\"adapter\":\"/j/adapter\",\"eval_loss\":0.5,\"heldout_accuracy\":0.75}");
  ASSERT_TRUE(std::holds_alternative<WorkerDone>(m.payload));
  EXPECT_EQ(std::get<WorkerDone>(m.payload).adapter, "/j/adapter");
  EXPECT_EQ(std::get<WorkerDone>(m.payload).eval_loss, 0.5);
  EXPECT_EQ(std::get<WorkerDone>(m.payload).heldout_accuracy, 0.75);

  m = Decoded(
      "{\"type\":\"eval\",\"step\":0,\"eval_loss\":3.5,\"eval_token_accuracy\":0.5,\"heldout_"
      "accuracy\":0.1}");
  ASSERT_TRUE(std::holds_alternative<WorkerEval>(m.payload));
  EXPECT_EQ(std::get<WorkerEval>(m.payload).eval_loss, 3.5);
  EXPECT_EQ(std::get<WorkerEval>(m.payload).eval_token_accuracy, 0.5);
  EXPECT_EQ(std::get<WorkerEval>(m.payload).heldout_accuracy, 0.1);
  EXPECT_TRUE(m.extra.empty()) << m.extra;
  m = Decoded("{\"type\":\"eval\",\"step\":5,\"eval_loss\":1.5}");
  EXPECT_FALSE(std::get<WorkerEval>(m.payload).heldout_accuracy.has_value());

  m = Decoded("{\"type\":\"checkpoint\",\"step\":2,\"message\":\"/j/checkpoints/step-00000002\"}");
  ASSERT_TRUE(std::holds_alternative<WorkerCheckpoint>(m.payload));
  EXPECT_EQ(std::get<WorkerCheckpoint>(m.payload).path, "/j/checkpoints/step-00000002");
  EXPECT_EQ(WorkerEventText(m), "/j/checkpoints/step-00000002");

  m = Decoded("{\"type\":\"heartbeat\",\"pid\":123}");
  ASSERT_TRUE(IsHeartbeat(m));
  EXPECT_EQ(std::get<WorkerHeartbeat>(m.payload).pid, 123);
}

// Missing numbers stay unset; numbers of another type stay unset and travel
// in extra, as fjordd forwarded every field the worker sent.
TEST(WorkerProtocolTest, MissingAndMistypedNumbersStayUnset) {
  WorkerMessage m = Decoded("{\"type\":\"step\",\"step\":1}");
  const WorkerStep& s = std::get<WorkerStep>(m.payload);
  EXPECT_FALSE(s.loss.has_value());
  EXPECT_FALSE(s.trained_tokens.has_value());
  EXPECT_FALSE(m.total_steps.has_value());
  EXPECT_EQ(EncodeWorkerMessage(m), "{\"step\":1,\"type\":\"step\"}");

  m = Decoded(
      "{\"type\":\"step\",\"loss\":null,\"lr\":\"fast\",\"step\":18446744073709551615,"
      "\"total_steps\":1e300,\"trained_tokens\":-2.9}");
  const WorkerStep& t = std::get<WorkerStep>(m.payload);
  EXPECT_FALSE(t.loss.has_value());
  EXPECT_FALSE(t.lr.has_value());
  EXPECT_FALSE(m.step.has_value());         // beyond int64
  EXPECT_FALSE(m.total_steps.has_value());  // a float beyond int64
  EXPECT_EQ(t.trained_tokens, -2);          // truncated, as fjordd's static_cast did
  EXPECT_EQ(m.extra["loss"], nullptr);
  EXPECT_EQ(m.extra["lr"], "fast");
  EXPECT_EQ(m.extra["step"], json(uint64_t{18446744073709551615u}));
  EXPECT_FALSE(m.extra.contains("trained_tokens"));
  // A number beyond double is not JSON nlohmann reads (nor was it before).
  EXPECT_THAT(DecodeWorkerMessage("{\"type\":\"step\",\"eta_s\":1e400}").status().message(),
              HasSubstr("not valid JSON"));
  // The canonical form is stable: decoding what was encoded gives it again.
  const std::string once = EncodeWorkerMessage(m);
  EXPECT_EQ(EncodeWorkerMessage(Decoded(once)), once);
}

TEST(WorkerProtocolTest, UnknownTypesAndFieldsAreKept) {
  WorkerMessage m =
      Decoded("{\"type\":\"profile\",\"step\":4,\"message\":\"hot loop\",\"ms\":[1,2]}");
  ASSERT_TRUE(std::holds_alternative<WorkerUnknown>(m.payload));
  EXPECT_EQ(WorkerMessageTypeName(m), "profile");
  EXPECT_EQ(m.step, 4);
  EXPECT_EQ(m.extra, (json{{"message", "hot loop"}, {"ms", {1, 2}}}));
  EXPECT_EQ(WorkerEventText(m), "hot loop");

  m = Decoded("{\"type\":\"eval\",\"eval_loss\":0.5,\"perplexity\":1.65}");
  EXPECT_EQ(std::get<WorkerEval>(m.payload).eval_loss, 0.5);
  EXPECT_EQ(m.extra, (json{{"perplexity", 1.65}}));
  EXPECT_EQ(WorkerEventText(m), "");
  json j = WorkerMessageToJson(m);
  EXPECT_EQ(j, (json{{"type", "eval"}, {"eval_loss", 0.5}, {"perplexity", 1.65}}));
}

TEST(WorkerProtocolTest, ErrorCodesOutsideTheTableAreInternal) {
  for (const auto& [sent, decoded] : std::vector<std::pair<std::string, std::string>>{
           {"\"INVALID_ARGUMENT\"", "INVALID_ARGUMENT"},
           {"\"RESOURCE_EXHAUSTED\"", "RESOURCE_EXHAUSTED"},
           {"\"DATA_LOSS\"", "INTERNAL"},
           {"\"OK\"", "INTERNAL"},
           {"\"invalid_argument\"", "INTERNAL"},
           {"3", "INTERNAL"},
           {"null", "INTERNAL"}}) {
    SCOPED_TRACE(sent);
    WorkerMessage m = Decoded("{\"type\":\"error\",\"code\":" + sent + ",\"message\":\"m\"}");
    ASSERT_TRUE(std::holds_alternative<WorkerError>(m.payload));
    EXPECT_EQ(std::get<WorkerError>(m.payload).code, decoded);
    EXPECT_TRUE(m.extra.empty());
  }
  WorkerMessage m = Decoded("{\"type\":\"error\"}");
  const WorkerError& e = std::get<WorkerError>(m.payload);
  EXPECT_EQ(e.code, "INTERNAL");
  EXPECT_EQ(e.message, "");
  EXPECT_FALSE(e.user_error);
  m = Decoded("{\"type\":\"error\",\"code\":\"NOT_FOUND\",\"message\":5,\"user_error\":1}");
  EXPECT_EQ(std::get<WorkerError>(m.payload).message, "");
  EXPECT_FALSE(std::get<WorkerError>(m.payload).user_error);
  EXPECT_TRUE(m.extra.empty());
}

TEST(WorkerProtocolTest, RefusesWhatIsNotAMessage) {
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"", "not valid JSON"},
      {"{\"type\":\"step\"", "not valid JSON"},
      {"{\"type\":\"log\",\"message\":\"\xff\"}", "not valid JSON"},
      {"[]", "must be a JSON object, got array"},
      {"\"heartbeat\"", "must be a JSON object, got string"},
      {"null", "must be a JSON object, got null"},
      {"{}", "no \"type\""},
      {"{\"Type\":\"step\"}", "no \"type\""},
      {"{\"type\":null}", "\"type\" must be a string, got null"},
      {"{\"type\":[\"step\"]}", "\"type\" must be a string, got array"},
      {"{\"type\":\"\"}", "\"type\" is empty"},
      {"{\"type\":\"log\",\"x\":" + std::string(33, '[') + std::string(33, ']') + "}",
       "nests deeper than 32 levels"},
  };
  for (const auto& [text, why] : cases) {
    SCOPED_TRACE(text);
    absl::StatusOr<WorkerMessage> m = DecodeWorkerMessage(text);
    EXPECT_EQ(m.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(m.status().message(), HasSubstr("worker message: "));
    EXPECT_THAT(m.status().message(), HasSubstr(why));
  }
  // 32 levels are fine.
  EXPECT_TRUE(DecodeWorkerMessage("{\"type\":\"log\",\"x\":" + std::string(31, '[') +
                                  std::string(31, ']') + "}")
                  .ok());
}

TEST(WorkerProtocolTest, SizeIsBounded) {
  const std::string head = "{\"type\":\"log\",\"message\":\"";
  std::string at_limit = head + std::string(kMaxWorkerMessageBytes - head.size() - 2, 'a') + "\"}";
  ASSERT_EQ(at_limit.size(), kMaxWorkerMessageBytes);
  EXPECT_TRUE(DecodeWorkerMessage(at_limit).ok());
  absl::StatusOr<WorkerMessage> over = DecodeWorkerMessage(at_limit + " ");
  EXPECT_EQ(over.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(over.status().message(), HasSubstr("1048577 bytes, limit 1048576"));
  over = DecodeWorkerMessage("{\"type\":\"log\"}", 10);
  EXPECT_EQ(over.status().code(), absl::StatusCode::kResourceExhausted);
}

// A path or a LibTorch message with invalid UTF-8 must not throw (the old
// EventToJson's dump() did): it is replaced, and the result decodes.
TEST(WorkerProtocolTest, EncodingInvalidUtf8NeverThrows) {
  WorkerMessage m;
  m.payload = WorkerLog{"bad \xff byte"};
  m.extra = json{{"k\xfe", "v\xfd"}};
  std::string bytes;
  ASSERT_NO_THROW(bytes = EncodeWorkerMessage(m));
  WorkerMessage d = Decoded(bytes);
  EXPECT_EQ(std::get<WorkerLog>(d.payload).message, "bad \xEF\xBF\xBD byte");
  m.payload = WorkerHeartbeat{};
  ASSERT_NO_THROW(bytes = EncodeWorkerMessage(m));
  EXPECT_TRUE(IsHeartbeat(Decoded(bytes)));
}

// extra never overrides what the members say.
TEST(WorkerProtocolTest, MembersWinOverExtra) {
  WorkerMessage m;
  m.payload = WorkerCheckpoint{"/real"};
  m.step = 5;
  m.extra = json{{"message", "/fake"}, {"step", 6}, {"type", "done"}, {"note", "kept"}};
  EXPECT_EQ(EncodeWorkerMessage(m),
            "{\"message\":\"/real\",\"note\":\"kept\",\"step\":5,\"type\":\"checkpoint\"}");
  m.extra = json::array();  // not an object: ignored
  EXPECT_EQ(EncodeWorkerMessage(m), "{\"message\":\"/real\",\"step\":5,\"type\":\"checkpoint\"}");
}

TEST(WorkerProtocolTest, ExitCodes) {
  EXPECT_EQ(kWorkerExitOk, 0);
  EXPECT_EQ(kWorkerExitUserError, 2);
  EXPECT_EQ(kWorkerExitSystemError, 3);
  EXPECT_EQ(kWorkerExitStopped, 75);
  EXPECT_EQ(WorkerExitCodeFor(absl::OkStatus()), kWorkerExitOk);
  for (const absl::Status& s : {absl::InvalidArgumentError("x"), absl::NotFoundError("x"),
                                absl::FailedPreconditionError("x"), absl::OutOfRangeError("x")}) {
    EXPECT_EQ(WorkerExitCodeFor(s), kWorkerExitUserError) << s;
    EXPECT_TRUE(IsUserErrorCode(s.code()));
  }
  for (const absl::Status& s :
       {absl::InternalError("x"), absl::DataLossError("x"), absl::ResourceExhaustedError("x"),
        absl::UnavailableError("x"), absl::UnknownError("x"), absl::PermissionDeniedError("x")}) {
    EXPECT_EQ(WorkerExitCodeFor(s), kWorkerExitSystemError) << s;
    EXPECT_FALSE(IsUserErrorCode(s.code()));
  }
}

TEST(WorkerVectorsTest, CheckedInFilesMatchTheCodec) {
  int checked = 0;
  for (const auto& entry : std::filesystem::directory_iterator(kVectorDir)) {
    if (entry.path().extension() != ".json") continue;
    const std::string stem = entry.path().stem().string();
    SCOPED_TRACE(stem);
    const json manifest = json::parse(ReadFile(entry.path().string()));
    const std::string bytes = ReadFile(std::string(kVectorDir) + "/" + stem + ".msg");
    const size_t max_bytes = manifest.value("max_bytes", kMaxWorkerMessageBytes);
    absl::StatusOr<WorkerMessage> m = DecodeWorkerMessage(bytes, max_bytes);
    const std::string kind = manifest["kind"];
    if (kind == "message" || kind == "tolerated") {
      ASSERT_TRUE(m.ok()) << m.status();
      EXPECT_EQ(DescribeWorkerMessage(*m), manifest["decoded"]);
      EXPECT_EQ(EncodeWorkerMessage(*m),
                kind == "message" ? bytes : manifest["encoded"].get<std::string>());
    } else {
      ASSERT_EQ(kind, "invalid");
      const json& e = manifest["error"];
      EXPECT_EQ(absl::StatusCodeToString(m.status().code()), e["code"].get<std::string>())
          << m.status();
      EXPECT_THAT(m.status().message(), HasSubstr(e["message_contains"].get<std::string>()));
    }
    ++checked;
  }
  EXPECT_GE(checked, 25);
}

// The files are exactly what the generator makes today (no drift).
TEST(WorkerVectorsTest, FilesAreUpToDate) {
  std::set<std::string> on_disk;
  for (const auto& entry : std::filesystem::directory_iterator(kVectorDir)) {
    on_disk.insert(entry.path().filename().string());
  }
  std::set<std::string> expected;
  for (const WorkerTestVector& v : BuildWorkerTestVectors()) {
    SCOPED_TRACE(v.name);
    expected.insert(v.name + ".msg");
    expected.insert(v.name + ".json");
    EXPECT_EQ(ReadFile(std::string(kVectorDir) + "/" + v.name + ".msg"), v.bytes)
        << "run: bazel run //daemon/protocol:make_worker_vectors -- "
           "$PWD/tests/protocol/worker_vectors";
    EXPECT_EQ(json::parse(ReadFile(std::string(kVectorDir) + "/" + v.name + ".json")), v.manifest);
    EXPECT_FALSE(v.manifest.contains("decode_failed")) << v.manifest;
  }
  EXPECT_EQ(on_disk, expected);
}

}  // namespace
}  // namespace fjord::protocol

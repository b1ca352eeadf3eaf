#include "daemon/protocol/codec.h"

#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>

#include "absl/strings/escaping.h"
#include "daemon/protocol/errors.h"
#include "daemon/protocol/vectors.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace fjord::protocol {
namespace {

using nlohmann::json;
using ::testing::HasSubstr;

constexpr char kVectorDir[] = "tests/protocol/vectors";

std::string ReadFile(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  std::stringstream s;
  s << f.rdbuf();
  return s.str();
}

TEST(CodecTest, RequestRoundTrip) {
  ClientMessage m;
  m.request_id = "abc-1";
  m.command = "job.get";
  m.body = json{{"job_id", "job-1"}};
  Frames f = EncodeClientMessage(m);
  ASSERT_EQ(f.size(), 6u);
  EXPECT_EQ(f[0], "");
  EXPECT_EQ(f[1], "FJD01");
  EXPECT_EQ(f[2], std::string(1, '\x01'));
  EXPECT_EQ(f[5], "{\"job_id\":\"job-1\"}");
  absl::StatusOr<ClientMessage> d = DecodeClientMessage(f);
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_EQ(d->request_id, "abc-1");
  EXPECT_EQ(d->command, "job.get");
  EXPECT_EQ(d->body, m.body);
  EXPECT_FALSE(d->data.has_value());
}

TEST(CodecTest, RequestWithBinaryData) {
  ClientMessage m;
  m.request_id = "u";
  m.command = "file.upload.chunk";
  m.data = std::string("\0\1\2\xff", 4);
  absl::StatusOr<ClientMessage> d = DecodeClientMessage(EncodeClientMessage(m));
  ASSERT_TRUE(d.ok()) << d.status();
  ASSERT_TRUE(d->data.has_value());
  EXPECT_EQ(*d->data, std::string("\0\1\2\xff", 4));
}

TEST(CodecTest, EmptyBodyMeansEmptyObject) {
  absl::StatusOr<ClientMessage> d = DecodeClientMessage({"", "FJD01", "\x01", "r", "ping", ""});
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_TRUE(d->body.is_object());
  EXPECT_TRUE(d->body.empty());
}

TEST(CodecTest, ReplyRoundTripAndErrors) {
  ServerMessage e = ErrorReply("r9", Error(absl::StatusCode::kNotFound, "no job 'x'", "job_id"));
  absl::StatusOr<ServerMessage> d = DecodeServerMessage(EncodeServerMessage(e));
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_EQ(d->status, "NOT_FOUND");
  absl::Status s = StatusFromReply(d->status, d->body);
  EXPECT_EQ(s.code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(s.message(), "no job 'x'");
  EXPECT_EQ(ParamOf(s), "job_id");
}

TEST(CodecTest, CodesOutsideTheTableTravelAsInternal) {
  ServerMessage e = ErrorReply("r", absl::DataLossError("torn"));
  EXPECT_EQ(e.status, "INTERNAL");
  EXPECT_EQ(e.body["error"]["message"], "torn");
}

TEST(CodecTest, LimitsAreChecked) {
  DecodeLimits limits;
  limits.max_body_bytes = 10;
  limits.max_data_bytes = 3;
  absl::StatusOr<ClientMessage> d =
      DecodeClientMessage({"", "FJD01", "\x01", "r", "ping", "{\"aaaaaaaaaaaa\":1}"}, limits);
  EXPECT_EQ(d.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(ParamOf(d.status()), "body");
  d = DecodeClientMessage({"", "FJD01", "\x01", "r", "file.upload.chunk", "{}", "abcd"}, limits);
  EXPECT_EQ(d.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(ParamOf(d.status()), "data");
  EXPECT_THAT(d.status().message(), HasSubstr("frame 6"));
}

// A BOM is not part of a JSON text (RFC 8259 §8.1); nlohmann::json would
// skip it, the codec refuses it, in requests and replies alike.
TEST(CodecTest, RefusesUtf8ByteOrderMarkBeforeTheBody) {
  const std::string bom = "\xEF\xBB\xBF";
  for (const std::string& body : {bom + "{}", bom + "{\"job_id\":\"job-1\"}", bom, bom + " {}"}) {
    SCOPED_TRACE(absl::CHexEscape(body));
    absl::StatusOr<ClientMessage> d =
        DecodeClientMessage({"", "FJD01", "\x01", "r", "job.get", body});
    EXPECT_EQ(d.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_EQ(ParamOf(d.status()), "body");
    EXPECT_THAT(d.status().message(),
                HasSubstr("frame 5: body starts with a UTF-8 byte order mark"));
    absl::StatusOr<ServerMessage> r = DecodeServerMessage({"", "FJD01", "\x03", "r", "OK", body});
    EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_EQ(ParamOf(r.status()), "body");
  }
  // Elsewhere the same bytes are ordinary text: inside a string, or after
  // leading whitespace (then the JSON parser refuses them as it would any
  // stray bytes).
  absl::StatusOr<ClientMessage> d =
      DecodeClientMessage({"", "FJD01", "\x01", "r", "job.get", "{\"job_id\":\"" + bom + "\"}"});
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_EQ(d->body["job_id"], bom);
  d = DecodeClientMessage({"", "FJD01", "\x01", "r", "job.get", " " + bom + "{}"});
  EXPECT_EQ(ParamOf(d.status()), "body");
  EXPECT_THAT(d.status().message(), HasSubstr("not valid JSON"));
}

// Frame 6 only where a command says so: file.upload.chunk requests.
TEST(CodecTest, RefusesDataFrameOnCommandsThatTakeNone) {
  for (const std::string command : {"ping", "job.get", "file.upload.begin", "file.upload.finish",
                                    "adapter.download", "no.such.command"}) {
    for (const std::string& data : {std::string("x"), std::string()}) {  // empty is present too
      SCOPED_TRACE(command + " with " + std::to_string(data.size()) + " bytes of data");
      absl::StatusOr<ClientMessage> d =
          DecodeClientMessage({"", "FJD01", "\x01", "r", command, "{}", data});
      EXPECT_EQ(d.status().code(), absl::StatusCode::kInvalidArgument);
      EXPECT_EQ(ParamOf(d.status()), "data");
      EXPECT_THAT(d.status().message(),
                  HasSubstr("frame 6: command '" + command + "' takes no data frame"));
    }
  }
  // Refused before its size is looked at: no retry makes it right.
  DecodeLimits limits;
  limits.max_data_bytes = 1;
  const absl::Status big =
      DecodeClientMessage({"", "FJD01", "\x01", "r", "ping", "{}", "abcd"}, limits).status();
  EXPECT_EQ(big.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ParamOf(big), "data");
  // An upload chunk keeps its data, an empty one included.
  absl::StatusOr<ClientMessage> chunk =
      DecodeClientMessage({"", "FJD01", "\x01", "r", "file.upload.chunk", "{}", ""});
  ASSERT_TRUE(chunk.ok()) << chunk.status();
  ASSERT_TRUE(chunk->data.has_value());
  EXPECT_EQ(*chunk->data, "");
  // Replies are not the codec's to check (adapter.download carries data; the
  // client knows which request a reply answers).
  EXPECT_TRUE(DecodeServerMessage({"", "FJD01", "\x03", "r", "OK", "{}", "x"}).ok());
}

TEST(CodecTest, RequestIdForReply) {
  EXPECT_EQ(RequestIdForReply({"", "FJD01", "\x01", "ok-1", ""}), "ok-1");
  EXPECT_EQ(RequestIdForReply({"", "FJD01", "\x01", "bad id"}), "-");
  EXPECT_EQ(RequestIdForReply({"", "FJD02", "\x01", "ok-1"}), "-");
  EXPECT_EQ(RequestIdForReply({}), "-");
  EXPECT_FALSE(ValidRequestId(std::string(65, 'a')));
  EXPECT_TRUE(ValidRequestId(std::string(64, 'a')));
}

TEST(CodecTest, FrameFileRoundTripAndTruncation) {
  Frames f = {"", "FJD01", std::string(1, '\0'), std::string(300, 'x')};
  std::string bytes = EncodeFrameFile(f);
  absl::StatusOr<Frames> back = DecodeFrameFile(bytes);
  ASSERT_TRUE(back.ok());
  EXPECT_EQ(*back, f);
  EXPECT_THAT(DecodeFrameFile(bytes.substr(0, bytes.size() - 1)).status().message(),
              HasSubstr("frame 3 needs 300 bytes"));
  EXPECT_THAT(DecodeFrameFile(std::string("\0\0", 2)).status().message(),
              HasSubstr("truncated length"));
}

// Each checked-in vector decodes as its manifest says, and valid ones encode
// back to the same bytes.
TEST(VectorsTest, CheckedInFilesMatchTheCodec) {
  int checked = 0;
  for (const auto& entry : std::filesystem::directory_iterator(kVectorDir)) {
    if (entry.path().extension() != ".json") continue;
    const std::string stem = entry.path().stem().string();
    SCOPED_TRACE(stem);
    json manifest = json::parse(ReadFile(entry.path().string()));
    absl::StatusOr<Frames> frames =
        DecodeFrameFile(ReadFile(std::string(kVectorDir) + "/" + stem + ".frames"));
    ASSERT_TRUE(frames.ok()) << frames.status();
    DecodeLimits limits;
    if (manifest.contains("limits")) {
      limits.max_message_bytes = manifest["limits"]["max_message_bytes"].get<size_t>();
    }
    const std::string kind = manifest["kind"];
    if (kind == "request") {
      absl::StatusOr<ClientMessage> m = DecodeClientMessage(*frames, limits);
      ASSERT_TRUE(m.ok()) << m.status();
      EXPECT_EQ(DescribeClientMessage(*m), manifest["decoded"]);
      EXPECT_EQ(EncodeClientMessage(*m), *frames);
    } else if (kind == "reply") {
      absl::StatusOr<ServerMessage> m = DecodeServerMessage(*frames, limits);
      ASSERT_TRUE(m.ok()) << m.status();
      EXPECT_EQ(DescribeServerMessage(*m), manifest["decoded"]);
      EXPECT_EQ(EncodeServerMessage(*m), *frames);
    } else {
      absl::Status s = kind == "invalid_request" ? DecodeClientMessage(*frames, limits).status()
                                                 : DecodeServerMessage(*frames, limits).status();
      const json& e = manifest["error"];
      EXPECT_EQ(CodeName(s.code()), e["code"].get<std::string>()) << s;
      EXPECT_EQ(ParamOf(s), e["param"].is_null() ? "" : e["param"].get<std::string>());
      EXPECT_THAT(s.message(), HasSubstr(e["message_contains"].get<std::string>()));
    }
    ++checked;
  }
  EXPECT_GE(checked, 30);
}

// The files are exactly what the generator makes today (no drift).
TEST(VectorsTest, FilesAreUpToDate) {
  std::set<std::string> on_disk;
  for (const auto& entry : std::filesystem::directory_iterator(kVectorDir)) {
    on_disk.insert(entry.path().filename().string());
  }
  std::set<std::string> expected;
  for (const TestVector& v : BuildTestVectors()) {
    SCOPED_TRACE(v.name);
    expected.insert(v.name + ".frames");
    expected.insert(v.name + ".json");
    EXPECT_EQ(ReadFile(std::string(kVectorDir) + "/" + v.name + ".frames"),
              EncodeFrameFile(v.frames))
        << "run: bazel run //daemon/protocol:make_vectors -- $PWD/tests/protocol/vectors";
    EXPECT_EQ(json::parse(ReadFile(std::string(kVectorDir) + "/" + v.name + ".json")), v.manifest);
  }
  EXPECT_EQ(on_disk, expected);
}

}  // namespace
}  // namespace fjord::protocol

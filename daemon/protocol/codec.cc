#include "daemon/protocol/codec.h"

#include <cstdint>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "daemon/protocol/errors.h"
#include "daemon/protocol/json_reader.h"
#include "runtime/util/status_macros.h"

namespace fjord::protocol {
namespace {

constexpr absl::string_view kUtf8Bom = "\xEF\xBB\xBF";

size_t TotalBytes(const Frames& frames) {
  size_t n = 0;
  for (const std::string& f : frames) n += f.size();
  return n;
}

absl::StatusOr<nlohmann::json> ParseBody(const std::string& text, const DecodeLimits& limits,
                                         bool empty_is_object) {
  if (text.size() > limits.max_body_bytes) {
    return Error(
        absl::StatusCode::kResourceExhausted,
        absl::StrCat("frame 5: body is ", text.size(), " bytes, limit ", limits.max_body_bytes),
        "body");
  }
  if (text.empty() && empty_is_object) return nlohmann::json::object();
  // nlohmann::json skips a leading BOM; RFC 8259 forbids sending one and the
  // body is a JSON object, nothing before it.
  if (absl::StartsWith(text, kUtf8Bom)) {
    return InvalidArgument(
        "frame 5: body starts with a UTF-8 byte order mark (EF BB BF); send the JSON object "
        "without it",
        "body");
  }
  if (JsonNestingDepth(text) > limits.max_json_depth) {
    return InvalidArgument(
        absl::StrCat("frame 5: body nests deeper than ", limits.max_json_depth, " levels"), "body");
  }
  nlohmann::json body = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (body.is_discarded()) {
    // Re-parse with exceptions for the position and reason of the error.
    std::string why = "not valid JSON";
    try {
      nlohmann::json again = nlohmann::json::parse(text);
      (void)again;
    } catch (const nlohmann::json::exception& e) {
      why = e.what();
    }
    return InvalidArgument(absl::StrCat("frame 5: body is not valid JSON: ", why), "body");
  }
  if (!body.is_object()) {
    return InvalidArgument(
        absl::StrCat("frame 5: body must be a JSON object, got ", body.type_name()), "body");
  }
  return body;
}

// Frames 0..2: delimiter, signature, type byte.
absl::StatusOr<MessageType> DecodeEnvelope(const Frames& frames, const DecodeLimits& limits) {
  const size_t total = TotalBytes(frames);
  if (total > limits.max_message_bytes) {
    return Error(absl::StatusCode::kResourceExhausted,
                 absl::StrCat("message is ", total, " bytes, limit ", limits.max_message_bytes),
                 "message");
  }
  if (frames.size() < 3) {
    return InvalidArgument(
        absl::StrCat("message has ", frames.size(), " frames; at least 3 expected (\"\", \"",
                     kSignature, "\", type)"),
        "frames");
  }
  if (!frames[0].empty()) {
    return InvalidArgument("frame 0: expected the empty delimiter frame", "frames");
  }
  if (frames[1] != kSignature) {
    return InvalidArgument(absl::StrCat("frame 1: expected protocol signature '", kSignature, "'"),
                           "frames");
  }
  if (frames[2].size() != 1) {
    return InvalidArgument(
        absl::StrCat("frame 2: message type must be 1 byte, got ", frames[2].size()), "frames");
  }
  const uint8_t t = static_cast<uint8_t>(frames[2][0]);
  if (t < 0x01 || t > 0x06) {
    return InvalidArgument(absl::StrFormat("frame 2: unknown message type 0x%02x", t), "frames");
  }
  return static_cast<MessageType>(t);
}

absl::Status ExpectFrames(const Frames& frames, size_t min, size_t max, absl::string_view what) {
  if (frames.size() < min || frames.size() > max) {
    if (min == max) {
      return InvalidArgument(absl::StrCat(what, " has ", frames.size(), " frames, expected ", min),
                             "frames");
    }
    return InvalidArgument(
        absl::StrCat(what, " has ", frames.size(), " frames, expected ", min, " to ", max),
        "frames");
  }
  return absl::OkStatus();
}

absl::Status CheckRequestId(const std::string& id) {
  if (ValidRequestId(id)) return absl::OkStatus();
  if (id.empty()) return InvalidArgument("frame 3: request id is empty", "request_id");
  if (id.size() > kMaxRequestIdBytes) {
    return InvalidArgument(
        absl::StrCat("frame 3: request id is ", id.size(), " bytes, limit ", kMaxRequestIdBytes),
        "request_id");
  }
  return InvalidArgument("frame 3: request id must be printable ASCII (0x21-0x7E)", "request_id");
}

absl::Status CheckData(const std::string& data, const DecodeLimits& limits) {
  if (data.size() > limits.max_data_bytes) {
    return Error(
        absl::StatusCode::kResourceExhausted,
        absl::StrCat("frame 6: data is ", data.size(), " bytes, limit ", limits.max_data_bytes),
        "data");
  }
  return absl::OkStatus();
}

Frames Envelope(MessageType type) {
  return Frames{"", kSignature, std::string(1, static_cast<char>(type))};
}

}  // namespace

bool ValidRequestId(absl::string_view id) {
  if (id.empty() || id.size() > kMaxRequestIdBytes) return false;
  for (char c : id) {
    if (c < 0x21 || c > 0x7e) return false;
  }
  return true;
}

bool ValidCommandName(absl::string_view command) {
  if (command.empty() || command.size() > 64) return false;
  for (char c : command) {
    if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' || c == '_')) return false;
  }
  return true;
}

Frames EncodeClientMessage(const ClientMessage& m) {
  Frames f = Envelope(m.type);
  switch (m.type) {
    case MessageType::kRequest:
      f.push_back(m.request_id);
      f.push_back(m.command);
      f.push_back(DumpJson(m.body.is_object() ? m.body : nlohmann::json::object()));
      if (m.data) f.push_back(*m.data);
      break;
    case MessageType::kCancel:
      f.push_back(m.request_id);
      break;
    default:
      break;
  }
  return f;
}

Frames EncodeServerMessage(const ServerMessage& m) {
  Frames f = Envelope(m.type);
  if (m.type == MessageType::kPartial || m.type == MessageType::kFinal) {
    f.push_back(m.request_id);
    f.push_back(m.status);
    f.push_back(DumpJson(m.body.is_object() ? m.body : nlohmann::json::object()));
    if (m.data) f.push_back(*m.data);
  }
  return f;
}

absl::StatusOr<ClientMessage> DecodeClientMessage(const Frames& frames,
                                                  const DecodeLimits& limits) {
  FJORD_ASSIGN_OR_RETURN(const MessageType type, DecodeEnvelope(frames, limits));
  ClientMessage m;
  m.type = type;
  switch (type) {
    case MessageType::kRequest: {
      if (frames.size() < 6 || frames.size() > 7) {
        return InvalidArgument(
            absl::StrCat("REQUEST has ", frames.size(),
                         " frames, expected 6 or 7 (\"\", signature, type, request id, command, "
                         "body[, data])"),
            frames.size() >= 4 && ValidRequestId(frames[3]) ? "frames" : "request_id");
      }
      FJORD_RETURN_IF_ERROR(CheckRequestId(frames[3]));
      m.request_id = frames[3];
      if (!ValidCommandName(frames[4])) {
        return InvalidArgument(
            frames[4].empty()
                ? std::string("frame 4: command is empty")
                : absl::StrCat("frame 4: command must be 1-64 bytes of [a-z0-9._], got ",
                               frames[4].size(), " bytes"),
            "command");
      }
      m.command = frames[4];
      FJORD_ASSIGN_OR_RETURN(m.body, ParseBody(frames[5], limits, /*empty_is_object=*/true));
      if (frames.size() == 7) {
        // Only an upload chunk carries data (§2); an empty frame 6 is a data
        // frame too (6 or 7 frames is what the protocol counts).
        if (m.command != kFileUploadChunk) {
          return InvalidArgument(
              absl::StrCat("frame 6: command '", m.command, "' takes no data frame (only ",
                           kFileUploadChunk, " requests carry one)"),
              "data");
        }
        FJORD_RETURN_IF_ERROR(CheckData(frames[6], limits));
        m.data = frames[6];
      }
      return m;
    }
    case MessageType::kHeartbeat:
    case MessageType::kDisconnect:
      if (absl::Status s = ExpectFrames(
              frames, 3, 3, type == MessageType::kHeartbeat ? "HEARTBEAT" : "DISCONNECT");
          !s.ok()) {
        return s;
      }
      return m;
    case MessageType::kCancel:
      FJORD_RETURN_IF_ERROR(ExpectFrames(frames, 4, 4, "CANCEL"));
      FJORD_RETURN_IF_ERROR(CheckRequestId(frames[3]));
      m.request_id = frames[3];
      return m;
    default:
      return InvalidArgument(
          absl::StrFormat("frame 2: message type 0x%02x is not one a client sends",
                          static_cast<int>(type)),
          "frames");
  }
}

absl::StatusOr<ServerMessage> DecodeServerMessage(const Frames& frames,
                                                  const DecodeLimits& limits) {
  FJORD_ASSIGN_OR_RETURN(const MessageType type, DecodeEnvelope(frames, limits));
  ServerMessage m;
  m.type = type;
  switch (type) {
    case MessageType::kPartial:
    case MessageType::kFinal: {
      FJORD_RETURN_IF_ERROR(ExpectFrames(frames, 6, 7, "reply"));
      FJORD_RETURN_IF_ERROR(CheckRequestId(frames[3]));
      m.request_id = frames[3];
      absl::StatusCode code;
      if (!CodeFromName(frames[4], &code)) {
        return InvalidArgument("frame 4: unknown status code", "status");
      }
      m.status = frames[4];
      FJORD_ASSIGN_OR_RETURN(m.body, ParseBody(frames[5], limits, /*empty_is_object=*/true));
      if (frames.size() == 7) {
        FJORD_RETURN_IF_ERROR(CheckData(frames[6], limits));
        m.data = frames[6];
      }
      return m;
    }
    case MessageType::kHeartbeat:
      FJORD_RETURN_IF_ERROR(ExpectFrames(frames, 3, 3, "HEARTBEAT"));
      return m;
    default:
      return InvalidArgument(
          absl::StrFormat("frame 2: message type 0x%02x is not one the daemon sends",
                          static_cast<int>(type)),
          "frames");
  }
}

std::string RequestIdForReply(const Frames& frames) {
  if (frames.size() >= 4 && frames[0].empty() && frames[1] == kSignature && frames[2].size() == 1 &&
      (frames[2][0] == static_cast<char>(MessageType::kRequest) ||
       frames[2][0] == static_cast<char>(MessageType::kCancel)) &&
      ValidRequestId(frames[3])) {
    return frames[3];
  }
  return kUnknownRequestId;
}

ServerMessage OkReply(absl::string_view request_id, nlohmann::json body, MessageType type) {
  ServerMessage m;
  m.type = type;
  m.request_id = std::string(request_id);
  m.status = kStatusOk;
  m.body = std::move(body);
  return m;
}

ServerMessage ErrorReply(absl::string_view request_id, const absl::Status& status) {
  ServerMessage m;
  m.type = MessageType::kFinal;
  m.request_id = std::string(request_id);
  nlohmann::json e = ErrorToJson(status);
  m.status = e["code"].get<std::string>();
  m.body = nlohmann::json{{"error", std::move(e)}};
  return m;
}

std::string EncodeFrameFile(const Frames& frames) {
  std::string out;
  for (const std::string& f : frames) {
    const uint32_t n = static_cast<uint32_t>(f.size());
    out.push_back(static_cast<char>((n >> 24) & 0xff));
    out.push_back(static_cast<char>((n >> 16) & 0xff));
    out.push_back(static_cast<char>((n >> 8) & 0xff));
    out.push_back(static_cast<char>(n & 0xff));
    out += f;
  }
  return out;
}

absl::StatusOr<Frames> DecodeFrameFile(absl::string_view bytes) {
  Frames frames;
  size_t pos = 0;
  while (pos < bytes.size()) {
    if (frames.size() >= 64) return absl::InvalidArgumentError("frame file: more than 64 frames");
    if (bytes.size() - pos < 4) {
      return absl::InvalidArgumentError(absl::StrCat("frame file: truncated length at byte ", pos));
    }
    const auto b = [&](size_t i) {
      return static_cast<uint32_t>(static_cast<uint8_t>(bytes[pos + i]));
    };
    const uint32_t n = (b(0) << 24) | (b(1) << 16) | (b(2) << 8) | b(3);
    pos += 4;
    if (bytes.size() - pos < n) {
      return absl::InvalidArgumentError(absl::StrCat("frame file: frame ", frames.size(), " needs ",
                                                     n, " bytes, ", bytes.size() - pos, " left"));
    }
    frames.emplace_back(bytes.substr(pos, n));
    pos += n;
  }
  return frames;
}

}  // namespace fjord::protocol

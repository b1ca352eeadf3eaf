// The FJD01 codec: message structs <-> ZeroMQ frames (docs/protocol.md §2).
// Pure functions over bytes: no sockets, no I/O, no global state; every
// function is thread-safe. Decoders never crash on any input (fuzzed by
// tests/fuzz/protocol_fuzz.cc) and return InvalidArgument (with a param) or
// ResourceExhausted naming the frame and what is wrong with it.
//
// Frames are the message as the client's DEALER sees it: frame 0 is the empty
// delimiter. The daemon's ROUTER strips and prepends the routing id itself.
#ifndef FJORD_DAEMON_PROTOCOL_CODEC_H_
#define FJORD_DAEMON_PROTOCOL_CODEC_H_

#include <cstddef>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "daemon/protocol/protocol.h"

namespace fjord::protocol {

using Frames = std::vector<std::string>;

// What a client sends: REQUEST, HEARTBEAT, DISCONNECT or CANCEL.
struct ClientMessage {
  MessageType type = MessageType::kRequest;
  std::string request_id;                          // REQUEST; CANCEL: the stream's id
  std::string command;                             // REQUEST
  nlohmann::json body = nlohmann::json::object();  // REQUEST: always an object
  std::optional<std::string> data;                 // REQUEST: frame 6 when present
};

// What the daemon sends: PARTIAL, FINAL or HEARTBEAT.
struct ServerMessage {
  MessageType type = MessageType::kFinal;
  std::string request_id;          // PARTIAL, FINAL
  std::string status = kStatusOk;  // PARTIAL, FINAL: "OK" or an error code name
  nlohmann::json body = nlohmann::json::object();
  std::optional<std::string> data;

  bool ok() const { return status == kStatusOk; }
};

struct DecodeLimits {
  size_t max_message_bytes = kDefaultMaxMessageBytes;  // all frames together
  size_t max_body_bytes = kDefaultMaxBodyBytes;        // frame 5
  size_t max_data_bytes = kDefaultUploadChunkBytes;    // frame 6
  int max_json_depth = 32;                             // nesting of the body
};

// True for 1..64 printable ASCII bytes (0x21..0x7E).
bool ValidRequestId(absl::string_view id);
// True for lower-case ASCII letters, digits, '.', '_' (1..64 bytes).
bool ValidCommandName(absl::string_view command);

// Encoders. Bodies are written as compact JSON with sorted keys; invalid
// UTF-8 inside strings is replaced (never throws). The caller guarantees the
// fields are valid (a request id per ValidRequestId, ...).
Frames EncodeClientMessage(const ClientMessage& message);
Frames EncodeServerMessage(const ServerMessage& message);

// Decoders. Errors:
//  - ResourceExhausted (param "message") when the frames add up to more than
//    max_message_bytes; (param "data") when frame 6 exceeds max_data_bytes;
//    (param "body") when the body exceeds max_body_bytes.
//  - InvalidArgument naming the frame otherwise (param "request_id",
//    "command", "body", "frames" or "" for the envelope).
absl::StatusOr<ClientMessage> DecodeClientMessage(const Frames& frames,
                                                  const DecodeLimits& limits = {});
absl::StatusOr<ServerMessage> DecodeServerMessage(const Frames& frames,
                                                  const DecodeLimits& limits = {});

// The request id to put on an error reply to `frames`: frame 3 of a REQUEST
// or CANCEL when it is a valid id, else kUnknownRequestId ("-").
std::string RequestIdForReply(const Frames& frames);

// A FINAL reply: OK with body, or the error {"error": ErrorToJson(status)}.
ServerMessage OkReply(absl::string_view request_id, nlohmann::json body,
                      MessageType type = MessageType::kFinal);
ServerMessage ErrorReply(absl::string_view request_id, const absl::Status& status);

// Test-vector files (docs/protocol.md §9): each frame as a 4-byte big-endian
// length, then its bytes. Decoding fails with InvalidArgument on a truncated
// file or more than 64 frames.
std::string EncodeFrameFile(const Frames& frames);
absl::StatusOr<Frames> DecodeFrameFile(absl::string_view bytes);

}  // namespace fjord::protocol

#endif  // FJORD_DAEMON_PROTOCOL_CODEC_H_

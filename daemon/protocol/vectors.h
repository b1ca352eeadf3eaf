// The shared test vectors of docs/protocol.md §9, built in code: the
// generator (make_vectors) writes them under tests/protocol/vectors/ and
// codec_test checks the files against the codec (and against this list, so the
// checked-in files never drift from the code that made them).
#ifndef FJORD_DAEMON_PROTOCOL_VECTORS_H_
#define FJORD_DAEMON_PROTOCOL_VECTORS_H_

#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "daemon/protocol/codec.h"

namespace fjord::protocol {

struct TestVector {
  std::string name;         // file stem
  Frames frames;            // NAME.frames
  nlohmann::json manifest;  // NAME.json
};

std::vector<TestVector> BuildTestVectors();

// The "decoded" object of a manifest for a message, and back.
nlohmann::json DescribeClientMessage(const ClientMessage& m);
nlohmann::json DescribeServerMessage(const ServerMessage& m);
const char* MessageTypeName(MessageType type);

}  // namespace fjord::protocol

#endif  // FJORD_DAEMON_PROTOCOL_VECTORS_H_

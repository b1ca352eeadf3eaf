// The worker protocol's test vectors (docs/protocol.md §10), built in code:
// make_worker_vectors writes them under tests/protocol/worker_vectors/ and
// worker_protocol_test checks the files against the codec and against this
// list, so the checked-in files never drift from the code that made them.
#ifndef FJORD_DAEMON_PROTOCOL_WORKER_VECTORS_H_
#define FJORD_DAEMON_PROTOCOL_WORKER_VECTORS_H_

#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "daemon/protocol/worker_protocol.h"

namespace fjord::protocol {

struct WorkerTestVector {
  std::string name;         // file stem
  std::string bytes;        // NAME.msg: one message exactly as sent
  nlohmann::json manifest;  // NAME.json: what it decodes to
};

std::vector<WorkerTestVector> BuildWorkerTestVectors();

// The "decoded" object of a manifest: {"type", the members that are set,
// "extra": {...}}, plus "unknown_type": true for a WorkerUnknown.
nlohmann::json DescribeWorkerMessage(const WorkerMessage& message);

}  // namespace fjord::protocol

#endif  // FJORD_DAEMON_PROTOCOL_WORKER_VECTORS_H_

// libFuzzer target for the worker protocol's decoder (daemon/protocol/
// worker_protocol.h): the input is one message as a worker sends it.
// Decoding must never crash; what decodes must encode (never throwing) to
// bytes that decode to a message which encodes to the same bytes again (one
// canonical form), keep its type and heartbeat-ness, and a heartbeat must
// keep the substring older daemons look for.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>

#include "daemon/protocol/worker_protocol.h"

using namespace fjord::protocol;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const absl::string_view text(reinterpret_cast<const char*>(data), size);
  absl::StatusOr<WorkerMessage> m = DecodeWorkerMessage(text, /*max_bytes=*/1 << 16);
  if (!m.ok()) {
    if (m.status().code() != absl::StatusCode::kInvalidArgument &&
        m.status().code() != absl::StatusCode::kResourceExhausted) {
      std::abort();
    }
    return 0;
  }
  (void)WorkerEventText(*m);
  const std::string once = EncodeWorkerMessage(*m);
  absl::StatusOr<WorkerMessage> again = DecodeWorkerMessage(once);
  if (!again.ok()) std::abort();
  if (EncodeWorkerMessage(*again) != once) std::abort();
  if (WorkerMessageTypeName(*again) != WorkerMessageTypeName(*m)) std::abort();
  if (again->payload.index() != m->payload.index()) std::abort();
  if (again->step != m->step || again->total_steps != m->total_steps) std::abort();
  if (IsHeartbeat(*m) && once.rfind("{\"type\":\"heartbeat\"", 0) != 0) std::abort();
  return 0;
}

// libFuzzer target for the FJD01 decoder (daemon/protocol): the input is a
// frame file (docs/protocol.md §9: 4-byte big-endian length + bytes per
// frame). Decoding must never crash; what decodes must re-encode to frames
// that decode to the same message; a decoded request body goes through the
// strict job-spec reader too.
#include <cstddef>
#include <cstdint>
#include <cstdlib>

#include "daemon/protocol/codec.h"
#include "daemon/protocol/errors.h"
#include "daemon/protocol/messages.h"

using namespace fjord::protocol;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  absl::StatusOr<Frames> frames =
      DecodeFrameFile(absl::string_view(reinterpret_cast<const char*>(data), size));
  if (!frames.ok()) return 0;
  DecodeLimits limits;
  limits.max_message_bytes = 1 << 16;
  (void)RequestIdForReply(*frames);
  absl::StatusOr<ClientMessage> c = DecodeClientMessage(*frames, limits);
  if (c.ok()) {
    absl::StatusOr<ClientMessage> again = DecodeClientMessage(EncodeClientMessage(*c), limits);
    if (!again.ok() || again->body != c->body || again->request_id != c->request_id ||
        again->command != c->command || again->data != c->data) {
      std::abort();
    }
    absl::StatusOr<JobSpec> spec = JobSpecFromJson(c->body);
    if (spec.ok()) {
      absl::StatusOr<JobSpec> back = JobSpecFromJson(JobSpecToJson(*spec));
      if (!back.ok() || JobSpecFingerprint(*back) != JobSpecFingerprint(*spec)) std::abort();
    }
  }
  absl::StatusOr<ServerMessage> s = DecodeServerMessage(*frames, limits);
  if (s.ok()) {
    absl::StatusOr<ServerMessage> again = DecodeServerMessage(EncodeServerMessage(*s), limits);
    if (!again.ok() || again->body != s->body || again->status != s->status) std::abort();
    if (s->body.contains("id")) (void)JobFromJson(s->body);
    if (s->body.contains("error")) (void)StatusFromReply(s->status, s->body);
  }
  return 0;
}

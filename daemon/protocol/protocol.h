// FJD01 protocol constants, in one place (docs/protocol.md is the source of
// truth; this header mirrors it). Shared by the daemon and the C++ SDK.
#ifndef FJORD_DAEMON_PROTOCOL_PROTOCOL_H_
#define FJORD_DAEMON_PROTOCOL_PROTOCOL_H_

#include <cstddef>
#include <cstdint>

namespace fjord::protocol {

// Frame 1 of every message.
inline constexpr char kSignature[] = "FJD01";
inline constexpr int kProtocolVersion = 1;

// Frame 2: one byte.
enum class MessageType : uint8_t {
  kRequest = 0x01,     // client -> daemon
  kPartial = 0x02,     // daemon -> client: one of several replies (streams)
  kFinal = 0x03,       // daemon -> client: the last (or only) reply
  kHeartbeat = 0x04,   // both directions
  kDisconnect = 0x05,  // client -> daemon
  kCancel = 0x06,      // client -> daemon: end a stream
};

// The request id the daemon uses when it cannot tell the request's own.
inline constexpr char kUnknownRequestId[] = "-";
inline constexpr size_t kMaxRequestIdBytes = 64;
inline constexpr size_t kMaxIdempotencyKeyBytes = 128;

// Commands (frame 4 of a REQUEST).
inline constexpr char kPing[] = "ping";
inline constexpr char kModelList[] = "model.list";
inline constexpr char kJobCreate[] = "job.create";
inline constexpr char kJobGet[] = "job.get";
inline constexpr char kJobList[] = "job.list";
inline constexpr char kJobCancel[] = "job.cancel";
inline constexpr char kJobPause[] = "job.pause";
inline constexpr char kJobResume[] = "job.resume";
inline constexpr char kJobEvents[] = "job.events";
inline constexpr char kJobSubscribe[] = "job.subscribe";
inline constexpr char kJobCheckpoints[] = "job.checkpoints";
inline constexpr char kJobDelete[] = "job.delete";
inline constexpr char kFileUploadBegin[] = "file.upload.begin";
inline constexpr char kFileUploadChunk[] = "file.upload.chunk";
inline constexpr char kFileUploadFinish[] = "file.upload.finish";
inline constexpr char kFileList[] = "file.list";
inline constexpr char kFileDelete[] = "file.delete";
inline constexpr char kAdapterFiles[] = "adapter.files";
inline constexpr char kAdapterDownload[] = "adapter.download";
inline constexpr char kReportFiles[] = "report.files";
inline constexpr char kReportDownload[] = "report.download";

// Status frame of a successful reply.
inline constexpr char kStatusOk[] = "OK";

// Default limits (the daemon's config may change them; `ping` reports them).
inline constexpr size_t kDefaultMaxMessageBytes = size_t{8} << 20;
inline constexpr size_t kDefaultMaxBodyBytes = size_t{1} << 20;
inline constexpr size_t kDefaultUploadChunkBytes = size_t{4} << 20;
inline constexpr uint64_t kDefaultMaxUploadBytes = uint64_t{1} << 30;
inline constexpr int kDefaultMaxPeers = 1024;
inline constexpr int kDefaultMaxStreamsPerPeer = 16;
inline constexpr int64_t kDefaultHeartbeatIntervalMs = 2000;
inline constexpr int kHeartbeatLiveness = 3;
inline constexpr int kMaxListLimit = 100;
inline constexpr int kDefaultListLimit = 20;
inline constexpr int kMaxEventsLimit = 1000;

}  // namespace fjord::protocol

#endif  // FJORD_DAEMON_PROTOCOL_PROTOCOL_H_

// The worker protocol (docs/protocol.md §10): what a worker (fjord-train, or
// daemon/worker/fake_worker in tests) tells fjordd about the job it runs.
//
// Each message is one ZeroMQ frame on the worker's PUSH socket (connected to
// the ipc endpoint fjordd passes as --report), holding one compact JSON
// object {"type": NAME, ...}. fjord-train also writes the same lines to
// --events FILE. The worker ends with one of the exit codes below.
//
// Pure functions over bytes: no sockets, no I/O, no LibTorch; thread-safe.
// The decoder never crashes on any input (tests/fuzz/worker_protocol_fuzz.cc).
// It is strict about the envelope (a JSON object with a non-empty string
// "type", at most kMaxWorkerMessageBytes) and tolerant inside it, as fjordd
// always was: an unknown type decodes to WorkerUnknown; a number that is
// missing, null or of another type leaves its member unset (the value, if
// any, is kept in WorkerMessage::extra); a string or bool of another type
// leaves its member at its default; fields the codec does not know are kept
// in `extra`; an error code outside docs/protocol.md §4 becomes "INTERNAL".
#ifndef FJORD_DAEMON_PROTOCOL_WORKER_PROTOCOL_H_
#define FJORD_DAEMON_PROTOCOL_WORKER_PROTOCOL_H_

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <variant>

#include <nlohmann/json.hpp>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace fjord::protocol {

// ---- exit codes -------------------------------------------------------------
// How a worker's process ends, and what fjordd does with it (see
// docs/protocol.md §10 for the whole table; death by a signal is a crash).
//
// Finished: the adapter is written. fjordd verifies it, then the job
// succeeds (an unusable adapter counts as a crash). `validate`: the data and
// config are valid.
inline constexpr int kWorkerExitOk = 0;
// The job's config or data is wrong (the user's to fix; an "error" message
// with user_error: true says what). The job fails with user_error, never
// retried. `validate`: the report names the first bad line.
inline constexpr int kWorkerExitUserError = 2;
// A system failure (I/O, out of memory, a LibTorch error). The job is
// requeued and resumes from its newest checkpoint while restarts are left.
inline constexpr int kWorkerExitSystemError = 3;
// Stopped on SIGTERM/SIGINT after writing a checkpoint (EX_TEMPFAIL): the
// job pauses or is cancelled when fjordd asked, and is requeued (restart not
// counted) when it did not.
inline constexpr int kWorkerExitStopped = 75;

// True for the codes that mean the user's input is at fault:
// InvalidArgument, NotFound, FailedPrecondition, OutOfRange.
bool IsUserErrorCode(absl::StatusCode code);
// kWorkerExitOk for OK, kWorkerExitUserError for IsUserErrorCode, else
// kWorkerExitSystemError.
int WorkerExitCodeFor(const absl::Status& status);

// ---- limits and timing --------------------------------------------------------
// fjordd's socket refuses bigger messages (ZMQ_MAXMSGSIZE: the worker's
// connection is dropped), and DecodeWorkerMessage refuses them too.
inline constexpr size_t kMaxWorkerMessageBytes = size_t{1} << 20;
// JSON nesting the decoder accepts (the messages are flat; extras may nest).
inline constexpr int kMaxWorkerJsonDepth = 32;
// fjord-train sends a heartbeat this often; fjordd kills a worker that sent
// nothing for worker.heartbeat_timeout_s (daemon config, default 30 s).
inline constexpr int64_t kWorkerHeartbeatIntervalMs = 2000;

// ---- messages -------------------------------------------------------------------
// One struct per "type". Numbers are optional: unset when the worker did not
// send them (or sent null, which is how JSON writers spell NaN and infinity).

// "heartbeat": I am alive. fjordd only notes the time; never an event.
struct WorkerHeartbeat {
  std::optional<int64_t> pid;  // fjord-train sends it; older fakes do not
};

// "start": training (re)started. message: "started" or "resumed from step N".
struct WorkerStart {
  std::string message;  // wire: "message"
};

// "step": one optimizer step done.
struct WorkerStep {
  std::optional<int64_t> epoch;
  std::optional<double> loss;  // mean cross-entropy per trained token
  std::optional<double> lr;
  std::optional<double> grad_norm;     // before clipping
  std::optional<double> tokens_per_s;  // non-padding tokens per second of training
  std::optional<double> eta_s;
  std::optional<int64_t> trained_tokens;     // cumulative tokens that carried loss
  std::optional<int64_t> peak_memory_bytes;  // GPU memory on CUDA, RSS on CPU
};

// "eval": a pass over the validation data; the one at step 0 (before
// training) also carries the held-out answer accuracy when the job has
// held-out prompts (and only that, when it has no validation data).
struct WorkerEval {
  std::optional<double> eval_loss;
  std::optional<double> eval_token_accuracy;  // 0..1
  std::optional<double> heldout_accuracy;     // 0..1; the base model's, at step 0
};

// "checkpoint": a checkpoint was written.
struct WorkerCheckpoint {
  std::string path;  // wire: "message"; the checkpoint's directory
};

// "log": a line for people (warnings, notes).
struct WorkerLog {
  std::string message;  // wire: "message"
};

// "done": the adapter is written; the exit code follows.
struct WorkerDone {
  std::optional<double> eval_loss;         // final; fjord-train sends -1 without validation data
  std::optional<double> heldout_accuracy;  // -1: not measured
  std::string adapter;                     // the PEFT adapter's directory
};

// "error": why the worker is about to exit 2 or 3.
struct WorkerError {
  // A code name. Encoded as set (fjord-train sends absl::StatusCodeToString,
  // e.g. "DATA_LOSS"); decoded as a name of docs/protocol.md §4 other than
  // "OK", anything else (or a missing code) as "INTERNAL".
  std::string code = "INTERNAL";
  std::string message;
  bool user_error = false;  // true with exit code 2
};

// Any other type: a newer worker's message this codec does not know.
struct WorkerUnknown {
  std::string type;  // as sent (non-empty)
};

using WorkerPayload =
    std::variant<WorkerHeartbeat, WorkerStart, WorkerStep, WorkerEval, WorkerCheckpoint, WorkerLog,
                 WorkerDone, WorkerError, WorkerUnknown>;

struct WorkerMessage {
  WorkerPayload payload;
  // Progress, on every message of fjord-train's trainer (start, step, eval,
  // checkpoint, log, done): optimizer steps done, and in total.
  std::optional<int64_t> step;
  std::optional<int64_t> total_steps;
  // Fields this codec did not read, as sent: unknown keys, and numbers whose
  // value had another type (e.g. "loss": null). An object; the encoder writes
  // them too (never "type", and never over a member it writes).
  nlohmann::json extra = nlohmann::json::object();
};

// The wire "type": "heartbeat", "step", ...; WorkerUnknown's own type.
std::string WorkerMessageTypeName(const WorkerMessage& message);
inline bool IsHeartbeat(const WorkerMessage& message) {
  return std::holds_alternative<WorkerHeartbeat>(message.payload);
}

// ---- encode / decode ------------------------------------------------------------
// The JSON object of a message: "type", the set members, `extra`.
nlohmann::json WorkerMessageToJson(const WorkerMessage& message);

// One message as sent: compact JSON, no newline, keys in sorted order, except
// a heartbeat, which starts {"type":"heartbeat","pid":N (what fjord-train
// always sent; fjordd before this codec looked for the substring
// "type":"heartbeat"). Byte for byte what fjord-train sent before the codec
// (tests/protocol/worker_vectors). Invalid UTF-8 in strings becomes U+FFFD;
// never throws.
std::string EncodeWorkerMessage(const WorkerMessage& message);

// Errors: ResourceExhausted when `text` is over max_bytes; InvalidArgument
// when it is not JSON (or nests deeper than kMaxWorkerJsonDepth), not an
// object, has no "type", or a "type" that is not a non-empty string. The
// message says which ("worker message: ...").
absl::StatusOr<WorkerMessage> DecodeWorkerMessage(absl::string_view text,
                                                  size_t max_bytes = kMaxWorkerMessageBytes);

// The text fjordd shows as a job event's message: the "message" field when
// the message has a string one (start, checkpoint, log, error; or in
// `extra`), else "".
std::string WorkerEventText(const WorkerMessage& message);

}  // namespace fjord::protocol

#endif  // FJORD_DAEMON_PROTOCOL_WORKER_PROTOCOL_H_

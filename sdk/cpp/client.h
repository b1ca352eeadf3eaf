// fjord::Client: the C++ SDK for fjordd (docs/protocol.md). One Client holds
// one ZeroMQ DEALER connection to one daemon.
//
//   fjord::ClientOptions o;
//   o.endpoint = "tcp://gpu-node-7:7700";
//   o.server_public_key = "<daemon's Z85 public key>";
//   o.client_keys = *fjord::LoadCurveSecretKeyFile("/home/me/.fjord/me.key");
//   auto client = fjord::Client::Connect(o);
//   auto file = (*client)->UploadFile("train.jsonl");
//   fjord::protocol::JobSpec spec;
//   spec.model = "llama-3.2-1b";
//   spec.training_file = file->id;
//   auto job = (*client)->CreateJob(spec);
//   auto final_job = (*client)->StreamEvents(job->id, 0, [](const auto& e) { ...; return true; });
//
// Errors: every call returns absl::Status / StatusOr and never throws. A
// daemon error keeps its code, message and param (protocol::ParamOf(status));
// no reply within timeout_ms after all retries is DeadlineExceeded; nothing
// answering at the endpoint at all (no handshake within timeout_ms: fjordd is
// not running there) is Unavailable after one timeout, without retries ("no
// reply from tcp://... within 5 s: is fjordd running?"); a daemon that refuses
// this client's key (CURVE/ZAP handshake failure) is Unauthenticated.
//
// Retries (lazy pirate): after a timeout the Client closes its socket, opens a
// new one and sends the same request again, at most `retries` times. Every
// command is safe to repeat: CreateJob always carries an idempotency key (a
// random one when the spec has none) that is reused on retries, so a retry
// never makes a second job. A DeleteFile or DeleteJob whose reply was lost ends
// NotFound on the retry: the file or job is gone all the same.
//
// Thread-safety: none. Use one Client per thread (they may share a process).
// Does not link LibTorch.
#ifndef FJORD_SDK_CPP_CLIENT_H_
#define FJORD_SDK_CPP_CLIENT_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "daemon/protocol/codec.h"
#include "daemon/protocol/curve_keys.h"
#include "daemon/protocol/messages.h"

namespace fjord {

struct ClientOptions {
  std::string endpoint;  // tcp://HOST:PORT or ipc:///PATH (required)
  // The daemon's CURVE public key (Z85). Empty: plain connection, which only a
  // daemon configured with allow_plaintext accepts.
  std::string server_public_key;
  // This client's key pair; required with server_public_key.
  CurveKeyPair client_keys;
  int timeout_ms = 10000;  // per attempt, for one reply
  int retries = 2;         // extra attempts after a timeout
  // Streams: heartbeat period; the daemon is presumed gone after
  // heartbeat_liveness periods of silence.
  int heartbeat_interval_ms = 2000;
  int heartbeat_liveness = 3;
  // Before its first stream, ask the daemon (ping) for its heartbeat interval
  // and liveness: the stream then heartbeats at the smaller interval and
  // presumes the daemon gone after the daemon's liveness x interval (a daemon
  // configured with a shorter interval than ours would otherwise drop our
  // streams as silent). false: use the two fields above as they are.
  bool learn_heartbeat = true;
};

struct PingInfo {
  int protocol = 0;
  std::string version;
  std::string node;
  std::string tenant;  // the principal this client is
  std::string role;
  int64_t heartbeat_interval_ms = 0;
  nlohmann::json raw;  // the whole reply body
};

struct ListJobsOptions {
  std::vector<protocol::JobStatus> statuses;  // empty: all
  int limit = 20;
  std::string after;   // job id to continue after ("" = from the newest)
  std::string tenant;  // admin only; "" = own tenant (admin: all)
};

struct JobPage {
  std::vector<protocol::Job> jobs;
  bool has_more = false;
};

struct EventPage {
  std::vector<protocol::JobEvent> events;
  bool has_more = false;
};

// file.list, every page, with the tenant's storage use. A number the daemon
// does not report is nullopt (unknown), not 0: a daemon older than the
// storage quota reports none of the four, one older than file.list paging
// only the two byte counts.
struct FileListing {
  std::vector<protocol::FileInfo> files;  // newest first, all of them
  // What the tenant's area on the storage root holds: files, uploads in
  // progress, its jobs' checkpoints, adapters and logs. The four numbers are
  // those of the last page's reply.
  std::optional<uint64_t> usage_bytes;
  // The daemon's limits.max_tenant_storage_bytes; 0 = no quota.
  std::optional<uint64_t> quota_bytes;
  // How many files and directories the same area holds (directories
  // included).
  std::optional<uint64_t> usage_files;
  // The daemon's limits.max_tenant_files; 0 = no limit.
  std::optional<uint64_t> quota_files;
};

class Client {
 public:
  // Validates the options and opens the socket (connecting is asynchronous:
  // an unreachable daemon shows at the first call). InvalidArgument for a
  // bad endpoint or malformed keys.
  static absl::StatusOr<std::unique_ptr<Client>> Connect(ClientOptions options);
  ~Client();
  Client(const Client&) = delete;
  Client& operator=(const Client&) = delete;

  absl::StatusOr<PingInfo> Ping();
  absl::StatusOr<std::vector<std::string>> ListModels();

  // job.create. The spec's idempotency_key is filled in with a random one
  // when empty (and reused on retries).
  absl::StatusOr<protocol::Job> CreateJob(const protocol::JobSpec& spec);
  absl::StatusOr<protocol::Job> GetJob(const std::string& job_id);
  absl::StatusOr<JobPage> ListJobs(const ListJobsOptions& options = {});
  absl::StatusOr<protocol::Job> CancelJob(const std::string& job_id);
  absl::StatusOr<protocol::Job> PauseJob(const std::string& job_id);
  absl::StatusOr<protocol::Job> ResumeJob(const std::string& job_id);
  // job.delete: removes an ended job (succeeded, failed or cancelled) with its
  // directory on the daemon's storage (checkpoints, adapter, logs: download
  // the adapter first) and its events; returns the job as it was. NotFound
  // (param job_id) when there is no such job, which includes another tenant's
  // and one deleted already: a retry after a lost reply ends NotFound although
  // the job is gone. FailedPrecondition (param job_id) while the job has not
  // ended (cancel it and wait for cancelled).
  absl::StatusOr<protocol::Job> DeleteJob(const std::string& job_id);
  absl::StatusOr<EventPage> ListEvents(const std::string& job_id, int64_t after_seq = 0,
                                       int limit = 100);

  // job.subscribe: blocks, calling on_event for each event with seq >
  // after_seq as it arrives, until the job is final; returns the final job.
  // on_event returning false ends the stream early (CANCEL) and returns the
  // job as it is then. If the daemon falls silent (no heartbeat) or the
  // connection is replaced, re-subscribes from the last seq seen, up to
  // `retries` times, then Unavailable. It also re-subscribes (uncounted) when
  // ZeroMQ reconnected to a restarted daemon, or when on_event kept the
  // stream silent past the daemon's peer timeout: in both cases the daemon
  // has dropped the stream while it still answers heartbeats.
  absl::StatusOr<protocol::Job> StreamEvents(
      const std::string& job_id, int64_t after_seq,
      const std::function<bool(const protocol::JobEvent&)>& on_event);

  absl::StatusOr<std::vector<protocol::CheckpointInfo>> ListCheckpoints(const std::string& job_id);

  // Uploads a local file (or bytes) in chunks, checked with SHA-256.
  // `filename` "" = the local file's base name.
  absl::StatusOr<protocol::FileInfo> UploadFile(const std::string& local_path,
                                                const std::string& filename = "");
  absl::StatusOr<protocol::FileInfo> UploadBytes(const std::string& bytes,
                                                 const std::string& filename);
  // file.list: every one of the tenant's files, newest first, asked for page
  // by page (up to 1000 files each) while the daemon says has_more, each page
  // after the last file of the one before (a daemon older than paging sends
  // one page and no has_more). InternalError naming the malformed reply when
  // a page that says has_more is empty or a file id comes twice (so a
  // confused daemon cannot keep it asking); the daemon's error otherwise, e.g.
  // NotFound param `after` when the last file of a page was deleted before
  // the next page was asked for.
  absl::StatusOr<std::vector<protocol::FileInfo>> ListFiles();
  // The same, with the usage and quota the daemon reports. InternalError
  // when one of them is there but not a non-negative integer.
  absl::StatusOr<FileListing> ListFilesWithUsage();
  // file.delete: removes one of the tenant's files from the daemon (and its
  // storage); returns the file as it was. NotFound (param file_id) when there
  // is no such file, which includes one deleted already: a retry after a lost
  // reply ends NotFound although the file is gone. FailedPrecondition (param
  // file_id) while a job that has not ended uses it.
  absl::StatusOr<protocol::FileInfo> DeleteFile(const std::string& file_id);

  absl::StatusOr<std::vector<protocol::AdapterFile>> ListAdapterFiles(const std::string& job_id);
  // Downloads every adapter file into local_dir (created if missing), each
  // checked against its SHA-256 (DataLoss on a mismatch). Returns the files.
  absl::StatusOr<std::vector<protocol::AdapterFile>> DownloadAdapter(const std::string& job_id,
                                                                     const std::string& local_dir);

  // job.create of an evaluation job (docs/protocol.md §5, "Evaluation jobs"):
  // CreateJob for a spec with type "evaluation" (candidates, datasets,
  // evaluation; their files already uploaded: ids or tenant paths).
  // InvalidArgument, before asking the daemon, for a spec of another type.
  absl::StatusOr<protocol::Job> CreateEvaluation(const protocol::JobSpec& spec);
  // report.files: the files of a succeeded evaluation job's report
  // (report.json, report.html). FailedPrecondition (param job_id) for any
  // other job.
  absl::StatusOr<std::vector<protocol::AdapterFile>> ReportFiles(const std::string& job_id);
  // Downloads the report's files into local_dir (created if missing), each
  // checked against its size and SHA-256 (DataLoss on a mismatch; no file is
  // left half-written under its name), as DownloadAdapter does. Returns the
  // files.
  absl::StatusOr<std::vector<protocol::AdapterFile>> DownloadReport(const std::string& job_id,
                                                                    const std::string& local_dir);

  // One request, one FINAL reply (retried on timeout). The reply's error
  // status becomes the returned Status. For commands this class does not
  // wrap yet.
  absl::StatusOr<protocol::ServerMessage> Call(const std::string& command, nlohmann::json body,
                                               std::optional<std::string> data = std::nullopt);

 private:
  struct Impl;
  explicit Client(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace fjord

#endif  // FJORD_SDK_CPP_CLIENT_H_

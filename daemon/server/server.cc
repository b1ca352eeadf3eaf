#include "daemon/server/server.h"

#include <fcntl.h>
#include <pwd.h>
#include <sodium.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>
#include <zmq.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <map>
#include <optional>
#include <set>
#include <vector>
#include <zmq.hpp>

#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "daemon/auth/keys.h"
#include "daemon/auth/zap.h"
#include "daemon/jobs/state_machine.h"
#include "daemon/jobs/store.h"
#include "daemon/metrics/metrics.h"
#include "daemon/metrics/nvml.h"
#include "daemon/protocol/codec.h"
#include "daemon/protocol/errors.h"
#include "daemon/protocol/json_reader.h"
#include "daemon/protocol/messages.h"
#include "daemon/protocol/protocol.h"
#include "daemon/scheduler/scheduler.h"
#include "daemon/storage/storage.h"
#include "daemon/storage/tenant_ids.h"
#include "daemon/util/log.h"
#include "daemon/worker/supervisor.h"
#include "runtime/train/job_config.h"
#include "runtime/util/env.h"
#include "runtime/util/sha256.h"
#include "runtime/util/status_macros.h"
#include "sdk/cpp/curve_keys.h"

namespace fjord::daemon {

using nlohmann::json;
using protocol::ClientMessage;
using protocol::FieldReader;
using protocol::Frames;
using protocol::Job;
using protocol::JobEvent;
using protocol::JobStatus;
using protocol::MessageType;
using protocol::ServerMessage;

namespace {

constexpr char kVersion[] = "0.1.0";
constexpr int kWorkerPollMs = 50;
constexpr int kMaxDrainPerIteration = 2000;

std::string RandomId(const char* prefix) {
  uint8_t raw[8];
  randombytes_buf(raw, sizeof(raw));
  return absl::StrCat(prefix, absl::BytesToHexString(absl::string_view(reinterpret_cast<char*>(raw), 8)));
}

bool IsWaiting(JobStatus s) { return s == JobStatus::kQueued || s == JobStatus::kRequeued; }
bool HasTrainer(JobStatus s) {
  return s == JobStatus::kRunning || s == JobStatus::kPausing || s == JobStatus::kCancelling;
}

// "step-<digits>": a checkpoint directory's name (runtime/train/checkpoint.h).
bool IsStepName(const std::string& name, int64_t* step) {
  if (name.size() <= 5 || name.size() > 24 || name.compare(0, 5, "step-") != 0) return false;
  int64_t v = 0;
  for (size_t i = 5; i < name.size(); ++i) {
    if (name[i] < '0' || name[i] > '9') return false;
    v = v * 10 + (name[i] - '0');
  }
  *step = v;
  return true;
}

// The most parts of a client message the daemon copies: ROUTER's routing id,
// the protocol's frames 0-6 (a REQUEST with data) and one more, so that the
// codec names a message one frame too long. Parts beyond are dropped as they
// are received, without being copied.
constexpr size_t kMaxClientParts = 9;

// Adapter download replies waiting in ZeroMQ's send queue: at most this many
// chunks per connection (a client that asks for chunks and never reads them
// is refused, not buffered without end). The SDKs ask for one at a time.
constexpr int64_t kMaxQueuedChunksPerPeer = 4;

// How often a running job's directory is walked again for the storage
// usage (and the job paused when its tenant is over quota), and how often a
// tenant's whole area is (other nodes on the same storage root write there
// too).
constexpr int64_t kJobUsageRefreshMs = 10000;
constexpr int64_t kTenantUsageRescanMs = 60000;

// file.list pages: at most this many files each.
constexpr int kMaxFileListLimit = 1000;

// An adapter directory holding more entries than this is refused (a PEFT
// adapter has two or three files).
constexpr uint64_t kMaxAdapterFiles = 1000;

}  // namespace

struct Server::Impl {
  // ---- state -------------------------------------------------------------
  struct Stream {
    std::string job_id;
    int64_t last_seq = 0;
  };
  struct Peer {
    std::string key;  // the client's public key ("plaintext" without CURVE)
    int64_t last_heard_ms = 0;
    int64_t last_sent_ms = 0;
    std::map<std::string, Stream> streams;  // by request id
    // Download chunks sent to this peer that ZeroMQ has not yet handed to the
    // kernel (decremented by ZeroMQ's I/O thread when it frees them).
    std::shared_ptr<std::atomic<int64_t>> queued_chunks = std::make_shared<std::atomic<int64_t>>(0);
  };
  struct Request {
    std::string identity;
    std::string request_id;
    Principal principal;
    const json* body = nullptr;
    const std::optional<std::string>* data = nullptr;
  };
  struct WorkerRun {
    bool validator = false;
    std::map<int, uint64_t> energy_start_mj;
    std::optional<protocol::JobError> reported_error;
    std::string lost_reason;  // heartbeat timeout, deadline...
  };
  struct Upload {
    std::string tenant;
    std::string filename;
    uint64_t bytes = 0;
    std::string sha256;
    uint64_t received = 0;
    Sha256 hasher;
    UniqueFd fd;
    std::string path;
    int64_t last_ms = 0;
  };

  DaemonConfig config;
  Clock* clock = nullptr;
  zmq::context_t ctx;
  std::unique_ptr<ZapHandler> zap;
  std::shared_ptr<const KeyRing> keys;
  std::unique_ptr<zmq::socket_t> router;
  CurveKeyPair server_keys;
  std::unique_ptr<JobStore> store;
  std::unique_ptr<Storage> storage;
  std::unique_ptr<WorkerSupervisor> supervisor;
  Metrics metrics;
  std::unique_ptr<MetricsHttpServer> http;
  std::unique_ptr<Nvml> nvml;
  UniqueFd lock_fd;
  int stop_pipe[2] = {-1, -1};  // a byte per request: kReloadByte reloads the keys, any other stops
  static constexpr char kReloadByte = 'r';

  // SIGHUP: the keys file read again, as at start (owner, mode, every entry
  // valid). Keys removed from it are refused from the next request on, by
  // connections already open too; a file with any problem changes nothing.
  void ReloadKeys() {
    if (!config.security.curve) return;
    absl::StatusOr<std::shared_ptr<const KeyRing>> next = LoadKeysFile(config.security.keys_file);
    if (!next.ok()) {
      metrics.Add("fjord_key_reloads_total", "result=\"error\"");
      LogError("keys file not reloaded: the keys in use are unchanged",
               {{"file", config.security.keys_file}, {"error", std::string(next.status().message())}});
      return;
    }
    keys = *next;
    if (zap) zap->Reload(keys);
    metrics.Add("fjord_key_reloads_total", "result=\"ok\"");
    LogInfo("keys file reloaded", {{"file", config.security.keys_file}, {"clients", keys->size()}});
  }
  std::optional<uid_t> worker_uid;  // worker.user: one user for every tenant
  std::optional<gid_t> worker_gid;
  std::string worker_home;
  std::unique_ptr<TenantIds> tenant_ids;  // worker.tenant_uid_range: a uid per tenant

  std::map<std::string, Peer> peers;
  std::map<std::string, int> peers_per_key;
  std::map<std::string, Job> live;                      // non-final jobs
  std::map<std::string, WorkerRun> runs;                // by job id
  std::map<std::string, std::vector<JobEvent>> dirty;   // progress not yet committed
  std::map<std::string, int> queue_position;
  std::map<std::string, Upload> uploads;
  std::map<std::string, std::vector<protocol::AdapterFile>> adapter_cache;
  bool reschedule = true;
  bool stopping = false;
  // "" while the storage root is a writable directory; otherwise why not.
  // While it is not, new jobs and uploads are refused (UNAVAILABLE) and no
  // worker starts: waiting jobs wait, they do not fail.
  std::string storage_problem;
  int64_t next_tick_ms = 0;
  int64_t next_usage_refresh_ms = 0;
  int64_t order_counter = 0;
  std::set<std::string> events_file_refused;  // jobs whose events.jsonl was refused (logged once)
  std::map<std::string, int64_t> order;  // job id -> FIFO order

  // ---- sending ------------------------------------------------------------
  void SendFrames(const std::string& identity, const Frames& frames) {
    try {
      router->send(zmq::buffer(identity), zmq::send_flags::sndmore | zmq::send_flags::dontwait);
      for (size_t i = 0; i < frames.size(); ++i) {
        router->send(zmq::buffer(frames[i]),
                     (i + 1 < frames.size() ? zmq::send_flags::sndmore : zmq::send_flags::none) |
                         zmq::send_flags::dontwait);
      }
    } catch (const zmq::error_t& e) {
      LogWarning("send failed", {{"error", e.what()}});
    }
    auto it = peers.find(identity);
    if (it != peers.end()) it->second.last_sent_ms = clock->NowMs();
  }
  void Send(const std::string& identity, const ServerMessage& m) {
    SendFrames(identity, protocol::EncodeServerMessage(m));
  }

  // A download chunk is handed to ZeroMQ without a copy, counted in the
  // peer's queued_chunks until ZeroMQ frees it (sent, or dropped).
  struct QueuedChunk {
    std::string bytes;
    std::shared_ptr<std::atomic<int64_t>> counter;
  };
  static void FreeQueuedChunk(void*, void* hint) {
    std::unique_ptr<QueuedChunk> chunk(static_cast<QueuedChunk*>(hint));
    chunk->counter->fetch_sub(1);
  }
  void SendChunk(const std::string& identity, const ServerMessage& m) {
    auto peer = peers.find(identity);
    Frames frames = protocol::EncodeServerMessage(m);
    if (peer == peers.end() || frames.empty()) return SendFrames(identity, frames);
    auto chunk = std::make_unique<QueuedChunk>(QueuedChunk{std::move(frames.back()), peer->second.queued_chunks});
    frames.pop_back();
    chunk->counter->fetch_add(1);
    QueuedChunk* raw = chunk.release();
    zmq::message_t last(raw->bytes.data(), raw->bytes.size(), &FreeQueuedChunk, raw);
    try {
      router->send(zmq::buffer(identity), zmq::send_flags::sndmore | zmq::send_flags::dontwait);
      for (const std::string& f : frames) router->send(zmq::buffer(f), zmq::send_flags::sndmore | zmq::send_flags::dontwait);
      router->send(last, zmq::send_flags::dontwait);
    } catch (const zmq::error_t& e) {
      LogWarning("send failed", {{"error", e.what()}});
    }
    peer->second.last_sent_ms = clock->NowMs();
  }

  // ---- storage ownership --------------------------------------------------
  // When workers run as another user (the daemon is root), they must read the
  // tenant's files and write their job directory: the tenant's directories
  // and files get the workers' group (root stays the owner), a job directory
  // belongs to the worker's uid. With worker.tenant_uid_range that uid and
  // group are the tenant's own, and the area (0750) is closed to every other
  // tenant's workers.
  struct WorkerIds {
    std::optional<uid_t> uid;
    std::optional<gid_t> gid;
  };
  absl::StatusOr<WorkerIds> IdsFor(const std::string& tenant) {
    if (!tenant_ids) return WorkerIds{worker_uid, worker_gid};
    FJORD_ASSIGN_OR_RETURN(uint32_t id, tenant_ids->Resolve(tenant));
    return WorkerIds{static_cast<uid_t>(id), static_cast<gid_t>(id)};
  }
  // An area made for other ids (before worker.user changed, or before
  // worker.tenant_uid_range was set) is given to the tenant's ids, job
  // directories included, so a requeued job can read and rotate its
  // checkpoints; so is one whose files/ or jobs/ was made again. A missing
  // area is left missing (JobDirPresent says so).
  absl::Status OwnTenantArea(const std::string& tenant, const WorkerIds& ids) {
    if (!ids.gid) return absl::OkStatus();
    const std::string area = storage->TenantDir(tenant);
    struct stat st {};
    if (::lstat(area.c_str(), &st) != 0) return absl::OkStatus();
    bool owned = st.st_gid == *ids.gid;
    for (const std::string& d : {storage->FilesDir(tenant), area + "/jobs"}) {
      struct stat sub {};
      if (::lstat(d.c_str(), &sub) == 0 && sub.st_gid != *ids.gid) owned = false;
    }
    if (owned) return absl::OkStatus();
    LogInfo("giving a tenant's storage area to its workers' ids",
            {{"tenant", tenant}, {"uid", static_cast<int64_t>(*ids.uid)}, {"gid", static_cast<int64_t>(*ids.gid)},
             {"was_gid", static_cast<int64_t>(st.st_gid)}});
    return storage->ReownTenantArea(tenant, *ids.uid, *ids.gid);
  }
  absl::Status EnsureTenant(const std::string& tenant) {
    FJORD_RETURN_IF_ERROR(storage->EnsureTenant(tenant));
    FJORD_ASSIGN_OR_RETURN(WorkerIds ids, IdsFor(tenant));
    return OwnTenantArea(tenant, ids);
  }
  // A new job's directory is made by root and filled (job.yaml,
  // events.jsonl) before this hands it to the worker's uid: what fjordd
  // creates there exists before a worker could plant anything in its place.
  absl::Status HandJobDirToWorker(const SafeDir& dir, const std::string& tenant) {
    FJORD_ASSIGN_OR_RETURN(WorkerIds ids, IdsFor(tenant));
    if (!ids.uid) return absl::OkStatus();
    FJORD_RETURN_IF_ERROR(dir.ChownEntry("checkpoints", ids.uid, ids.gid));
    return dir.Chown(ids.uid, ids.gid);
  }

  // Removes a job's directory as fjordd's one way of deleting below a
  // worker's directory: SafeDir::RemoveTree, relative to the tenant's jobs/
  // (root's), walking descriptors, never following what a worker planted.
  absl::Status RemoveJobDir(const std::string& tenant, const std::string& job_id) {
    absl::StatusOr<SafeDir> area = storage->OpenTenantDir(tenant);
    if (!area.ok()) return absl::IsNotFound(area.status()) ? absl::OkStatus() : area.status();
    absl::StatusOr<SafeDir> jobs = area->OpenDir("jobs");
    if (!jobs.ok()) return absl::IsNotFound(jobs.status()) ? absl::OkStatus() : jobs.status();
    FJORD_RETURN_IF_ERROR(jobs->RemoveTree(job_id));
    (void)jobs->Sync();
    return absl::OkStatus();
  }

  // ---- storage health -----------------------------------------------------
  std::string StorageRootProblem() const {
    const std::string& root = storage->root();
    struct stat st {};
    if (::stat(root.c_str(), &st) != 0) {
      return absl::StrCat("storage root ", root, " is not accessible: ", std::strerror(errno));
    }
    if (!S_ISDIR(st.st_mode)) return absl::StrCat("storage root ", root, " is not a directory");
    struct statvfs vfs {};
    if (::statvfs(root.c_str(), &vfs) == 0 && (vfs.f_flag & ST_RDONLY) != 0) {
      return absl::StrCat("storage root ", root, " is on a read-only file system");
    }
    if (::access(root.c_str(), W_OK | X_OK) != 0) {
      return absl::StrCat("storage root ", root, " is not writable: ", std::strerror(errno));
    }
    return "";
  }

  // Re-checks the storage root; logs and exports a change.
  void UpdateStorageHealth() {
    std::string problem = StorageRootProblem();
    if (problem == storage_problem) return;
    if (problem.empty()) {
      LogInfo("storage root is available again: workers start again", {{"storage_root", storage->root()}});
      reschedule = true;
    } else {
      LogError("storage root unavailable: new jobs and uploads are refused and no worker starts until it is back",
               {{"problem", problem}});
    }
    storage_problem = std::move(problem);
    metrics.Set("fjord_storage_available", "", storage_problem.empty() ? 1 : 0);
    metrics.SetHealthProblem(storage_problem);
  }

  absl::Status StorageAvailable() {
    UpdateStorageHealth();
    if (storage_problem.empty()) return absl::OkStatus();
    return absl::UnavailableError(absl::StrCat(storage_problem, "; retry when the operator has restored it"));
  }

  // ---- jobs ---------------------------------------------------------------
  json JobJson(const Job& job) {
    Job j = job;
    auto it = queue_position.find(job.id);
    if (IsWaiting(job.status) && it != queue_position.end()) j.queue_position = it->second;
    else j.queue_position.reset();
    return protocol::JobToJson(j);
  }

  absl::StatusOr<Job> LoadJob(const std::string& id) {
    auto it = live.find(id);
    if (it != live.end()) return it->second;
    return store->GetJob(id);
  }

  // The job if the principal may see it; NotFound otherwise (no probing).
  absl::StatusOr<Job> JobFor(const Principal& p, const std::string& id) {
    absl::StatusOr<Job> j = LoadJob(id);
    if (!j.ok() || (!p.admin && j->tenant != p.tenant)) {
      return protocol::Error(absl::StatusCode::kNotFound, absl::StrCat("no job '", id, "'"), "job_id");
    }
    return j;
  }

  // events.jsonl in the job's directory: a copy of the job's events for
  // people reading the storage root (the store is the record). Opened as
  // SafeDir::OpenAppend: a link a worker put in its place is refused (logged
  // once per job) and nothing is written anywhere else.
  void AppendEventsFile(const Job& job, const std::vector<JobEvent>& events) {
    if (events.empty()) return;
    std::string text;
    for (const JobEvent& e : events) absl::StrAppend(&text, protocol::DumpJson(protocol::JobEventToJson(e)), "\n");
    absl::Status s = [&]() -> absl::Status {
      FJORD_ASSIGN_OR_RETURN(SafeDir dir, storage->OpenJobDir(job.tenant, job.id));
      FJORD_ASSIGN_OR_RETURN(UniqueFd fd, dir.OpenAppend("events.jsonl", 0640));
      for (size_t done = 0; done < text.size();) {
        const ssize_t n = ::write(fd.get(), text.data() + done, text.size() - done);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) return absl::UnavailableError(absl::StrCat("write events.jsonl: ", std::strerror(errno)));
        done += static_cast<size_t>(n);
      }
      return absl::OkStatus();
    }();
    if (!s.ok() && events_file_refused.insert(job.id).second) {
      LogWarning("events.jsonl not written (the job's events stay in the store)",
                 {{"job", job.id}, {"error", std::string(s.message())}});
    }
  }

  // Commits the job and events (fsynced), then tells subscribers.
  absl::Status Commit(const Job& job, std::vector<JobEvent> events) {
    auto d = dirty.find(job.id);
    if (d != dirty.end()) {
      events.insert(events.begin(), d->second.begin(), d->second.end());
      dirty.erase(d);
    }
    absl::Status s = store->UpdateJob(job, &events);
    if (!s.ok()) {
      LogError("job store update failed", {{"job", job.id}, {"error", std::string(s.message())}});
      return s;
    }
    AppendEventsFile(job, events);
    if (protocol::IsFinal(job.status)) {
      live.erase(job.id);
      metrics.Add("fjord_jobs_finished_total", absl::StrCat("status=\"", protocol::JobStatusName(job.status), "\""));
    } else {
      live[job.id] = job;
    }
    PumpStreamsFor(job.id);
    return absl::OkStatus();
  }

  JobEvent StatusEvent(JobStatus from, JobStatus to, const std::string& message) {
    JobEvent e;
    e.time_ms = clock->WallMs();
    e.type = "status";
    e.message = message;
    e.data = {{"status", protocol::JobStatusName(to)}, {"previous", protocol::JobStatusName(from)}};
    return e;
  }

  // The one path for status changes: the state machine decides, Commit
  // persists. A no-op transition (same status) commits nothing.
  absl::StatusOr<Job> Apply(Job job, Trigger trigger, const std::string& message,
                            const std::function<void(Job&)>& edit = nullptr) {
    FJORD_ASSIGN_OR_RETURN(JobStatus next, NextStatus(job.status, trigger));
    if (next == job.status && !edit) return job;
    const JobStatus from = job.status;
    job.status = next;
    if (edit) edit(job);
    if (next == JobStatus::kRunning && !job.started_at_ms) job.started_at_ms = clock->WallMs();
    if (protocol::IsFinal(next)) job.finished_at_ms = clock->WallMs();
    if (!HasTrainer(next)) job.gpu_ids.clear();
    std::vector<JobEvent> events;
    if (next != from) {
      events.push_back(StatusEvent(from, next, message));
      LogInfo("job status", {{"job", job.id}, {"tenant", job.tenant}, {"from", protocol::JobStatusName(from)},
                             {"to", protocol::JobStatusName(next)}, {"why", message}});
    }
    reschedule = true;
    FJORD_RETURN_IF_ERROR(Commit(job, std::move(events)));
    return job;
  }

  void FlushDirty() {
    std::vector<std::string> ids;
    for (const auto& [id, ev] : dirty) ids.push_back(id);
    for (const std::string& id : ids) {
      auto it = live.find(id);
      if (it == live.end()) {
        dirty.erase(id);
        continue;
      }
      (void)Commit(it->second, {});
    }
  }

  // ---- streams ------------------------------------------------------------
  void PumpStream(const std::string& identity, const std::string& request_id, Stream& st) {
    while (true) {
      absl::StatusOr<std::vector<JobEvent>> events = store->ListEvents(st.job_id, st.last_seq, 500);
      if (!events.ok() || events->empty()) break;
      for (const JobEvent& e : *events) {
        Send(identity, protocol::OkReply(request_id, json{{"event", protocol::JobEventToJson(e)}}, MessageType::kPartial));
        st.last_seq = e.seq;
      }
      if (events->size() < 500) break;
    }
  }

  void PumpStreamsFor(const std::string& job_id) {
    std::optional<Job> final_job;
    for (auto& [identity, peer] : peers) {
      for (auto it = peer.streams.begin(); it != peer.streams.end();) {
        if (it->second.job_id != job_id) {
          ++it;
          continue;
        }
        PumpStream(identity, it->first, it->second);
        if (!live.count(job_id)) {
          if (!final_job) {
            absl::StatusOr<Job> j = store->GetJob(job_id);
            if (j.ok()) final_job = *j;
          }
          if (final_job) {
            Send(identity, protocol::OkReply(it->first, json{{"job", JobJson(*final_job)}}));
            it = peer.streams.erase(it);
            continue;
          }
        }
        ++it;
      }
    }
  }

  // ---- start-up -----------------------------------------------------------
  absl::Status Recover() {
    FJORD_ASSIGN_OR_RETURN(std::vector<Job> jobs, store->LiveJobs());
    for (Job& job : jobs) {
      order[job.id] = ++order_counter;
      if (job.status == JobStatus::kRunning) {
        if (job.restarts >= job.spec.max_restarts) {
          absl::StatusOr<Job> j = Apply(job, Trigger::kWorkerLostFinal,
                                        "the daemon or node died while the job ran: no restarts left", [](Job& x) {
                                          x.error = protocol::JobError{
                                              "INTERNAL",
                                              absl::StrCat("the node or daemon died while the job ran, after ",
                                                           x.restarts, " restarts"),
                                              "", false};
                                        });
          if (!j.ok()) return j.status();
          continue;
        }
        absl::StatusOr<Job> j = Apply(job, Trigger::kRecover,
                                      "the daemon restarted while the job ran: resuming from the newest checkpoint",
                                      [](Job& x) {
                                        ++x.restarts;
                                        x.error = protocol::JobError{"UNAVAILABLE", "the daemon or node died", "", false};
                                      });
        if (!j.ok()) return j.status();
        metrics.Add("fjord_worker_restarts_total", "");
      } else {
        absl::StatusOr<Job> j = Apply(job, Trigger::kRecover, "the daemon restarted");
        if (!j.ok()) return j.status();
        if (!protocol::IsFinal(j->status)) live[j->id] = *j;
      }
    }
    LogInfo("recovered jobs", {{"live", live.size()}});
    return absl::OkStatus();
  }

  // ---- worker launch ------------------------------------------------------
  // Written into the job's directory before it is handed to the worker
  // (HandJobDirToWorker): root's, readable by the worker's group.
  absl::StatusOr<std::string> WriteJobYaml(const Job& job, const SafeDir& dir) {
    train::JobConfig c;
    auto model = config.models.find(job.spec.model);
    if (model == config.models.end()) {
      return protocol::InvalidArgument(absl::StrCat("unknown model '", job.spec.model, "'"), "model");
    }
    c.model.path = model->second;
    FJORD_ASSIGN_OR_RETURN(c.data.train, ResolveDataFile(job.tenant, job.spec.training_file, "training_file"));
    if (!job.spec.validation_file.empty()) {
      FJORD_ASSIGN_OR_RETURN(c.data.validation,
                             ResolveDataFile(job.tenant, job.spec.validation_file, "validation_file"));
    }
    const protocol::Hyperparameters& h = job.spec.hyperparameters;
    c.data.max_length = h.max_length;
    c.lora.r = job.spec.lora.r;
    c.lora.alpha = job.spec.lora.alpha;
    c.lora.dropout = job.spec.lora.dropout;
    c.lora.target_modules = job.spec.lora.target_modules;
    c.training.epochs = h.epochs;
    c.training.max_steps = h.max_steps;
    c.training.micro_batch_size = h.batch_size;
    c.training.gradient_accumulation_steps = h.gradient_accumulation_steps;
    c.training.learning_rate = h.learning_rate;
    c.training.weight_decay = h.weight_decay;
    c.training.lr_scheduler = h.lr_scheduler;
    c.training.warmup_steps = h.warmup_steps;
    c.training.max_grad_norm = h.max_grad_norm;
    c.training.seed = static_cast<uint64_t>(h.seed);
    c.eval.every_steps = h.eval_every_steps;
    c.checkpoint.every_steps = h.checkpoint_every_steps;
    c.output.dir = storage->JobDir(job.tenant, job.id);
    const std::string yaml = c.ToYaml();
    // The worker's own parser is the last word on the config: check with it.
    if (absl::StatusOr<train::JobConfig> back = train::ParseJobConfig(yaml, "job.yaml"); !back.ok()) {
      return protocol::InvalidArgument(absl::StrCat("the job's config is invalid: ", back.status().message()),
                                       "hyperparameters");
    }
    FJORD_ASSIGN_OR_RETURN(WorkerIds ids, IdsFor(job.tenant));
    FJORD_RETURN_IF_ERROR(dir.WriteFileAtomic("job.yaml", yaml, 0640, ids.gid));
    return c.output.dir + "/job.yaml";
  }

  absl::StatusOr<std::string> ResolveDataFile(const std::string& tenant, const std::string& name,
                                              const char* param) {
    if (absl::StartsWith(name, "file-")) {
      absl::StatusOr<protocol::FileInfo> f = store->GetFile(tenant, name);
      if (!f.ok()) {
        return protocol::InvalidArgument(absl::StrCat(param, ": no uploaded file '", name, "'"), param);
      }
      return storage->ResolveTenantFile(tenant, f->path, param);
    }
    return storage->ResolveTenantFile(tenant, name, param);
  }

  // Also makes sure the tenant's area belongs to the ids the worker will
  // run as (a job requeued after a restart with other ids).
  absl::StatusOr<WorkerSpec> BaseSpec(const Job& job) {
    FJORD_ASSIGN_OR_RETURN(WorkerIds ids, IdsFor(job.tenant));
    FJORD_RETURN_IF_ERROR(OwnTenantArea(job.tenant, ids));
    FJORD_RETURN_IF_ERROR(GiveWorkerItsLogs(job, ids));
    WorkerSpec spec;
    spec.program = config.worker.program;
    spec.env = {{"PATH", "/usr/local/bin:/usr/bin:/bin"}, {"CUDA_DEVICE_ORDER", "PCI_BUS_ID"}};
    // A tenant's uid has no passwd entry: its home is the job directory.
    if (tenant_ids) {
      spec.env["HOME"] = storage->JobDir(job.tenant, job.id);
    } else if (!worker_home.empty()) {
      spec.env["HOME"] = worker_home;
    }
    for (const auto& [k, v] : config.worker.env) spec.env[k] = v;
    spec.log_path = storage->JobDir(job.tenant, job.id) + "/worker.log";
    spec.working_dir = storage->JobDir(job.tenant, job.id);
    spec.uid = ids.uid;
    spec.gid = ids.gid;
    spec.no_new_privs = config.worker.no_new_privs;
    return spec;
  }

  // The worker opens worker.log and validation.json itself, as its uid
  // (daemon/worker/worker_process.h); earlier fjordd versions created them
  // as root. Such a file (a regular file with one link, another owner) is given
  // to the worker's ids through SafeDir::ChownEntry before the launch.
  absl::Status GiveWorkerItsLogs(const Job& job, const WorkerIds& ids) {
    if (!ids.uid) return absl::OkStatus();
    FJORD_ASSIGN_OR_RETURN(SafeDir dir, storage->OpenJobDir(job.tenant, job.id));
    for (const char* name : {"worker.log", "validation.json"}) {
      struct stat st {};
      if (::fstatat(dir.fd(), name, &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISREG(st.st_mode) && st.st_uid != *ids.uid) {
        FJORD_RETURN_IF_ERROR(dir.ChownEntry(name, ids.uid, ids.gid));
      }
    }
    return absl::OkStatus();
  }

  void LaunchValidator(Job job) {
    const std::string dir = storage->JobDir(job.tenant, job.id);
    LaunchOptions lo;
    lo.expect_heartbeats = false;
    lo.deadline_ms = config.worker.validation_timeout_ms;
    const absl::Status s = [&]() -> absl::Status {
      FJORD_RETURN_IF_ERROR(JobDirPresent(job));
      FJORD_ASSIGN_OR_RETURN(WorkerSpec spec, BaseSpec(job));
      spec.args = {"validate", "--config", dir + "/job.yaml"};
      spec.stdout_path = dir + "/validation.json";
      return supervisor->Launch(job.id, spec, lo);
    }();
    if (!s.ok()) {
      (void)Apply(job, Trigger::kValidatorCrashed, "cannot start the validator", [&](Job& j) {
        j.error = protocol::JobError{"INTERNAL", absl::StrCat("cannot start the validator: ", s.message()), "", false};
      });
      return;
    }
    runs[job.id] = WorkerRun{true, {}, std::nullopt, ""};
  }

  // The job's directory can be lost with its storage (a root that came back
  // without it): say so instead of failing to open the worker's log.
  absl::Status JobDirPresent(const Job& job) {
    absl::Status s = [&]() -> absl::Status {
      FJORD_ASSIGN_OR_RETURN(SafeDir dir, storage->OpenJobDir(job.tenant, job.id));
      return dir.OpenRead("job.yaml").status();
    }();
    if (s.ok()) return s;
    return absl::FailedPreconditionError(absl::StrCat("the job's directory ", storage->JobDir(job.tenant, job.id),
                                                      " is gone from the storage root or damaged (", s.message(), ")"));
  }

  absl::Status LaunchTrainer(Job job, const std::vector<int>& gpus) {
    const std::string dir = storage->JobDir(job.tenant, job.id);
    FJORD_RETURN_IF_ERROR(JobDirPresent(job));
    FJORD_ASSIGN_OR_RETURN(WorkerSpec spec, BaseSpec(job));
    spec.args = {"--config", dir + "/job.yaml", "--report", supervisor->EndpointFor(job.id), "--progress", "none"};
    spec.args.insert(spec.args.end(), config.worker.args.begin(), config.worker.args.end());
    std::string devices;
    for (int g : gpus) absl::StrAppend(&devices, devices.empty() ? "" : ",", g);
    spec.cuda_visible_devices = devices;
    FJORD_RETURN_IF_ERROR(supervisor->Launch(job.id, spec));
    WorkerRun run;
    if (nvml) {
      for (int g : gpus) {
        if (auto e = nvml->TotalEnergyMillijoules(g)) run.energy_start_mj[g] = *e;
      }
    }
    runs[job.id] = std::move(run);
    absl::StatusOr<Job> j = Apply(job, Trigger::kSchedule,
                                  devices.empty() ? "started on CPU" : absl::StrCat("started on GPU ", devices),
                                  [&](Job& x) {
                                    x.gpu_ids = gpus;
                                    x.node = config.node_name;
                                  });
    return j.status();
  }

  void Reconcile() {
    if (stopping) return;
    if (!storage_problem.empty()) return;  // jobs wait for the storage (reschedule stays set)
    // Validators for the jobs that need one, oldest first, at most
    // scheduler.max_validators on the node and max_validators_per_tenant per
    // tenant (each parses a whole dataset: one tenant's burst of job.create
    // must not start a hundred at once); the others wait in `validating`.
    int validators = 0;
    std::map<std::string, int> tenant_validators;
    std::vector<std::pair<int64_t, const Job*>> to_validate;
    for (const auto& [id, job] : live) {
      if (job.status != JobStatus::kValidating) continue;
      if (supervisor->Running(id)) {
        ++validators;
        ++tenant_validators[job.tenant];
      } else {
        to_validate.push_back({order[id], &job});
      }
    }
    std::sort(to_validate.begin(), to_validate.end());
    std::vector<Job> launch;
    for (const auto& [n, job] : to_validate) {
      if (validators >= config.scheduler.max_validators) break;
      if (tenant_validators[job->tenant] >= config.scheduler.max_validators_per_tenant) continue;
      ++validators;
      ++tenant_validators[job->tenant];
      launch.push_back(*job);
    }
    for (Job& j : launch) LaunchValidator(j);
    metrics.Set("fjord_validators_running", "", validators);
    if (!reschedule) return;
    reschedule = false;
    SchedulerConfig sc;
    sc.gpus = config.scheduler.gpus;
    sc.cpu_slots = config.scheduler.cpu_slots;
    sc.max_running_per_tenant = config.scheduler.max_running_per_tenant;
    std::vector<RunningJob> running;
    std::vector<WaitingJob> waiting;
    for (const auto& [id, job] : live) {
      if (HasTrainer(job.status)) running.push_back({id, job.tenant, job.gpu_ids, job.spec.gpus});
      else if (IsWaiting(job.status)) waiting.push_back({id, job.tenant, job.spec.priority, order[id], job.spec.gpus});
    }
    SchedulePlan plan = Schedule(sc, running, waiting);
    queue_position = plan.queue_position;
    for (const Assignment& a : plan.start) {
      auto it = live.find(a.job_id);
      if (it == live.end()) continue;
      Job job = it->second;
      if (absl::Status s = LaunchTrainer(job, a.gpu_ids); !s.ok()) {
        LogError("cannot start a worker", {{"job", job.id}, {"error", std::string(s.message())}});
        (void)Apply(job, Trigger::kWorkerLostFinal, "the worker could not start", [&](Job& x) {
          x.error = protocol::JobError{"INTERNAL", absl::StrCat("cannot start the worker: ", s.message()), "", false};
        });
      }
    }
    metrics.Set("fjord_queue_depth", "", static_cast<double>(waiting.size() - std::min(waiting.size(), plan.start.size())));
  }

  // ---- worker updates -----------------------------------------------------
  void OnWorkerEvent(const std::string& job_id, const std::string& text) {
    auto it = live.find(job_id);
    auto run = runs.find(job_id);
    if (it == live.end() || run == runs.end() || run->second.validator) return;
    json e = json::parse(text, nullptr, false);
    if (!e.is_object() || !e.contains("type") || !e["type"].is_string()) return;
    Job& job = it->second;
    const std::string type = e["type"];
    auto num = [&](const char* k) -> std::optional<double> {
      if (e.contains(k) && e[k].is_number()) return e[k].get<double>();
      return std::nullopt;
    };
    if (auto v = num("step")) job.step = static_cast<int64_t>(*v);
    if (auto v = num("total_steps"); v && *v > 0) job.total_steps = static_cast<int64_t>(*v);
    JobEvent ev;
    ev.time_ms = clock->WallMs();
    ev.type = type;
    ev.data = e;
    ev.data.erase("type");
    if (e.contains("message") && e["message"].is_string()) ev.message = e["message"];
    if (type == "step") {
      if (auto v = num("trained_tokens")) {
        const int64_t t = static_cast<int64_t>(*v);
        if (t > job.trained_tokens) metrics.Add("fjord_tokens_trained_total", "", static_cast<double>(t - job.trained_tokens));
        job.trained_tokens = std::max(job.trained_tokens, t);
      }
      for (const char* k : {"loss", "lr", "grad_norm", "tokens_per_s", "eta_s", "peak_memory_bytes"}) {
        if (auto v = num(k)) job.metrics[k] = *v;
      }
    } else if (type == "eval" || type == "done") {
      for (const char* k : {"eval_loss", "eval_token_accuracy", "heldout_accuracy"}) {
        if (auto v = num(k); v && *v >= 0) job.metrics[k] = *v;
      }
    } else if (type == "checkpoint") {
      if (!ev.message.empty()) job.latest_checkpoint = protocol::CheckpointInfo{job.step, ev.message};
    } else if (type == "error") {
      protocol::JobError err;
      err.code = e.value("code", "INTERNAL");
      absl::StatusCode unused;
      if (!protocol::CodeFromName(err.code, &unused)) err.code = "INTERNAL";
      err.message = e.value("message", "");
      err.user_error = e.value("user_error", false);
      if (err.user_error) err.param = "training_file";
      run->second.reported_error = err;
    }
    dirty[job_id].push_back(std::move(ev));
    if (type == "checkpoint") {
      RefreshJobUsage(job.tenant, job.id);
      PauseIfOverQuota(job);
    }
  }

  // A running job whose checkpoint took its tenant past
  // limits.max_tenant_storage_bytes is paused (SIGTERM: it checkpoints once
  // more and stops), not failed: nothing trained is lost, and the job
  // resumes where it stopped once the tenant has freed space (job.resume is
  // refused until then). Its error says why.
  void PauseIfOverQuota(const Job& job) {
    if (job.status != JobStatus::kRunning) return;
    absl::Status over = CheckQuota(job.tenant, 0, 0, "tenant", "");
    if (over.ok()) return;
    const std::string why = absl::StrCat("paused: ", over.message(), ", then resume the job");
    absl::StatusOr<Job> paused = Apply(job, Trigger::kPause, why, [&](Job& j) {
      j.error = protocol::JobError{"RESOURCE_EXHAUSTED", why, "tenant", true};
    });
    if (!paused.ok()) return;
    metrics.Add("fjord_jobs_paused_over_quota_total", "");
    supervisor->Stop(job.id);
  }

  void AddEnergy(Job& job, WorkerRun& run) {
    if (!nvml || run.energy_start_mj.empty()) return;
    double joules = 0;
    for (const auto& [g, start] : run.energy_start_mj) {
      if (auto now = nvml->TotalEnergyMillijoules(g); now && *now >= start) joules += static_cast<double>(*now - start) / 1000.0;
    }
    const double before = job.metrics.value("gpu_energy_joules", 0.0);
    job.metrics["gpu_energy_joules"] = before + joules;
    metrics.Add("fjord_gpu_energy_joules_total", "", joules);
  }

  // What the validator left in the job's directory (the worker's: read as
  // SafeDir, bounded): its report, or the end of its log.
  absl::StatusOr<std::string> ReadFromJobDir(const Job& job, const char* name, size_t max_bytes, bool tail) {
    FJORD_ASSIGN_OR_RETURN(SafeDir dir, storage->OpenJobDir(job.tenant, job.id));
    if (tail) return dir.ReadTail(name, max_bytes);
    uint64_t size = 0;
    FJORD_ASSIGN_OR_RETURN(std::string head, dir.ReadHead(name, max_bytes, &size));
    if (size > head.size()) {
      return absl::ResourceExhaustedError(absl::StrCat(name, " is ", size, " bytes; at most ", max_bytes, " are read"));
    }
    return head;
  }

  void OnValidatorExit(Job job, const WorkerExit& exit, const WorkerRun& run) {
    absl::StatusOr<std::string> out = ReadFromJobDir(job, "validation.json", size_t{1} << 20, /*tail=*/false);
    json report = out.ok() ? json::parse(*out, nullptr, false) : json();
    if (stopping && exit.signal != 0) {
      (void)Apply(job, Trigger::kShutdown, "validation interrupted by the daemon's shutdown");
      return;
    }
    if (exit.normal() && exit.exit_code == 0) {
      JobEvent e;
      e.time_ms = clock->WallMs();
      e.type = "validation";
      e.message = "data and config are valid";
      if (report.is_object()) e.data = report;
      dirty[job.id].push_back(e);
      (void)Apply(job, Trigger::kValidationPassed, "validated");
      return;
    }
    if (exit.normal() && exit.exit_code == 2) {
      std::string message = "the job's data or config is invalid";
      std::string param = "training_file";
      if (report.is_object()) {
        for (const char* part : {"train", "validation"}) {
          if (!report.contains(part) || !report[part].is_object()) continue;
          const json& r = report[part];
          const bool bad = r.value("valid", true) == false || r.contains("error") ||
                           r.value("error_count", 0) > 0;
          if (!bad) continue;
          param = std::string(part) == "train" ? "training_file" : "validation_file";
          if (r.contains("error") && r["error"].is_string()) message = r["error"];
          else if (r.contains("summary") && r["summary"].is_string()) message = r["summary"];
          break;
        }
        if (report.contains("error") && report["error"].is_string()) message = report["error"], param = "";
      } else {
        absl::StatusOr<std::string> log = ReadFromJobDir(job, "worker.log", 2000, /*tail=*/true);
        if (log.ok() && !log->empty()) message = *log;
      }
      JobEvent e;
      e.time_ms = clock->WallMs();
      e.type = "validation";
      e.message = message;
      if (report.is_object()) e.data = report;
      dirty[job.id].push_back(e);
      (void)Apply(job, Trigger::kValidationFailed, "validation failed", [&](Job& j) {
        j.error = protocol::JobError{"INVALID_ARGUMENT", message, param, true};
      });
      return;
    }
    // Crashed, killed (the OOM killer, an operator) or timed out: validate
    // again, counted against max_restarts like a lost trainer, so a file
    // that crashes the validator every time still fails the job.
    const std::string why = run.lost_reason.empty() ? absl::StrCat("the validator ", exit.Describe()) : run.lost_reason;
    if (job.restarts < job.spec.max_restarts) {
      metrics.Add("fjord_worker_restarts_total", "");
      JobEvent e;
      e.time_ms = clock->WallMs();
      e.type = "validation";
      e.message = absl::StrCat(why, ": validating again (restart ", job.restarts + 1, " of ", job.spec.max_restarts, ")");
      dirty[job.id].push_back(e);
      (void)Apply(job, Trigger::kValidatorLost, e.message, [&](Job& j) {
        ++j.restarts;
        j.error = protocol::JobError{"INTERNAL", why, "", false};
      });
      return;
    }
    (void)Apply(job, Trigger::kValidatorCrashed, absl::StrCat(why, ": no restarts left"), [&](Job& j) {
      j.error = protocol::JobError{"INTERNAL", why, "", false};
    });
  }

  void OnTrainerExit(Job job, const WorkerExit& exit, WorkerRun& run) {
    AddEnergy(job, run);
    const bool ok = exit.normal() && exit.exit_code == 0;
    const bool user = exit.normal() && exit.exit_code == 2;
    const bool stopped = exit.normal() && exit.exit_code == 75;
    if (ok) {
      // Never report an adapter that is missing or torn (a full disk, a
      // buggy or hostile worker): check it first, like a crash otherwise.
      const std::string adapter = storage->JobDir(job.tenant, job.id) + "/adapter";
      const absl::Status valid = [&]() -> absl::Status {
        FJORD_ASSIGN_OR_RETURN(SafeDir dir, OpenAdapterDir(job));
        return VerifyAdapterDir(dir);
      }();
      if (valid.ok()) {
        (void)Apply(job, Trigger::kWorkerSucceeded, "training finished", [&](Job& j) {
          j.result_adapter_path = adapter;
          j.error.reset();
        });
        return;
      }
      LogError("the worker's adapter is unusable", {{"job", job.id}, {"error", std::string(valid.message())}});
      run.lost_reason = absl::StrCat("the worker exited 0 but its adapter is unusable: ", valid.message());
    }
    if (user) {
      protocol::JobError err = run.reported_error.value_or(
          protocol::JobError{"INVALID_ARGUMENT", "the worker refused the job's data or config (exit code 2)", "", true});
      err.user_error = true;
      (void)Apply(job, Trigger::kWorkerUserError, "the job's data or config is invalid", [&](Job& j) { j.error = err; });
      return;
    }
    if (stopping) {
      (void)Apply(job, Trigger::kShutdown, "the daemon shut down: requeued", [&](Job&) {});
      return;
    }
    if (stopped && job.status == JobStatus::kRunning) {
      (void)Apply(job, Trigger::kWorkerStopped, "the worker stopped on a signal it was not sent by fjordd: requeued");
      return;
    }
    if (job.status == JobStatus::kPausing || job.status == JobStatus::kCancelling) {
      (void)Apply(job, Trigger::kWorkerStopped,
                  job.status == JobStatus::kPausing ? "paused after a checkpoint" : "cancelled");
      return;
    }
    std::string why = run.lost_reason;
    if (why.empty()) why = absl::StrCat("the worker ", exit.Describe());
    protocol::JobError err = run.reported_error.value_or(protocol::JobError{"INTERNAL", why, "", false});
    if (run.reported_error) err.message = absl::StrCat(err.message, " (", why, ")");
    err.user_error = false;
    if (job.restarts < job.spec.max_restarts) {
      metrics.Add("fjord_worker_restarts_total", "");
      (void)Apply(job, Trigger::kWorkerLost, absl::StrCat(why, ": requeued, resuming from the newest checkpoint"),
                  [&](Job& j) {
                    ++j.restarts;
                    j.error = err;
                  });
    } else {
      (void)Apply(job, Trigger::kWorkerLostFinal, absl::StrCat(why, ": no restarts left"), [&](Job& j) { j.error = err; });
    }
  }

  void OnWorkerUpdates(std::vector<WorkerUpdate> updates) {
    for (WorkerUpdate& u : updates) {
      switch (u.kind) {
        case WorkerUpdate::Kind::kEvent:
          OnWorkerEvent(u.job_id, u.json);
          break;
        case WorkerUpdate::Kind::kHeartbeatTimeout:
          runs[u.job_id].lost_reason = absl::StrCat("the worker sent no heartbeat for ",
                                                    config.worker.heartbeat_timeout_ms / 1000.0, " s and was killed");
          break;
        case WorkerUpdate::Kind::kStopTimeout:
          runs[u.job_id].lost_reason = absl::StrCat("the worker did not exit within ", config.worker.stop_grace_ms / 1000.0,
                                                    " s of SIGTERM and was killed");
          break;
        case WorkerUpdate::Kind::kDeadline:
          runs[u.job_id].lost_reason = absl::StrCat("the validator ran longer than ",
                                                    config.worker.validation_timeout_ms / 1000.0, " s and was killed");
          break;
        case WorkerUpdate::Kind::kExited: {
          WorkerRun run = runs[u.job_id];
          runs.erase(u.job_id);
          FlushDirty();
          auto it = live.find(u.job_id);
          if (it == live.end()) break;  // cancelled while validating, etc.
          const std::string tenant = it->second.tenant;
          LogInfo("worker exited", {{"job", u.job_id}, {"exit", u.exit.Describe()}, {"validator", run.validator}});
          if (run.validator) {
            if (it->second.status == JobStatus::kValidating) OnValidatorExit(it->second, u.exit, run);
          } else {
            OnTrainerExit(it->second, u.exit, run);
          }
          RefreshJobUsage(tenant, u.job_id);  // after the exit's events reached events.jsonl
          break;
        }
      }
    }
  }

  // ---- requests -----------------------------------------------------------
  absl::StatusOr<std::string> ActingTenant(const Principal& p, FieldReader& r) {
    std::string tenant;
    FJORD_RETURN_IF_ERROR(r.String("tenant", &tenant, false, 64));
    if (tenant.empty()) return p.tenant;
    if (!protocol::ValidTenantName(tenant)) return protocol::InvalidArgument("tenant is not a valid tenant name", "tenant");
    if (tenant != p.tenant && !p.admin) {
      return protocol::Error(absl::StatusCode::kPermissionDenied,
                             absl::StrCat("principal '", p.key_name, "' may act only for tenant '", p.tenant, "'"),
                             "tenant");
    }
    return tenant;
  }

  absl::StatusOr<json> HandlePing(const Request& rq) {
    FJORD_ASSIGN_OR_RETURN(FieldReader r, FieldReader::Make(*rq.body, ""));
    FJORD_RETURN_IF_ERROR(r.Finish());
    return json{{"protocol", protocol::kProtocolVersion},
                {"daemon", "fjordd"},
                {"version", kVersion},
                {"node", config.node_name},
                {"time_ms", clock->WallMs()},
                {"heartbeat_interval_ms", config.limits.heartbeat_interval_ms},
                {"liveness", protocol::kHeartbeatLiveness},
                {"principal", {{"tenant", rq.principal.tenant}, {"role", rq.principal.role()}, {"key_name", rq.principal.key_name}}},
                {"limits", {{"max_message_bytes", config.limits.max_message_bytes},
                            {"max_body_bytes", config.limits.max_body_bytes},
                            {"upload_chunk_bytes", config.limits.upload_chunk_bytes},
                            {"max_upload_bytes", config.limits.max_upload_bytes}}}};
  }

  absl::StatusOr<json> HandleModelList(const Request& rq) {
    FJORD_ASSIGN_OR_RETURN(FieldReader r, FieldReader::Make(*rq.body, ""));
    FJORD_RETURN_IF_ERROR(r.Finish());
    json models = json::array();
    for (const auto& [name, path] : config.models) models.push_back({{"name", name}});
    return json{{"models", models}};
  }

  absl::StatusOr<json> HandleCreate(const Request& rq) {
    FJORD_ASSIGN_OR_RETURN(protocol::JobSpec spec, protocol::JobSpecFromJson(*rq.body));
    const Principal& p = rq.principal;
    std::string tenant = spec.tenant.empty() ? p.tenant : spec.tenant;
    if (tenant != p.tenant && !p.admin) {
      return protocol::Error(absl::StatusCode::kPermissionDenied,
                             absl::StrCat("principal '", p.key_name, "' may submit only for tenant '", p.tenant, "'"),
                             "tenant");
    }
    if (spec.priority > 0 && !p.admin) {
      return protocol::Error(absl::StatusCode::kPermissionDenied, "priority above 0 needs the admin role", "priority");
    }
    spec.tenant = tenant;
    if (spec.max_restarts < 0) spec.max_restarts = config.worker.max_restarts;
    if (!config.models.count(spec.model)) {
      std::string known;
      for (const auto& [name, path] : config.models) absl::StrAppend(&known, known.empty() ? "" : ", ", name);
      return protocol::InvalidArgument(absl::StrCat("unknown model '", spec.model, "' (this node has: ", known, ")"), "model");
    }
    const int slots = config.scheduler.gpus.empty() ? config.scheduler.cpu_slots : static_cast<int>(config.scheduler.gpus.size());
    if (spec.gpus > slots) {
      return protocol::InvalidArgument(absl::StrCat("gpus is ", spec.gpus, " but this node has ", slots,
                                                    config.scheduler.gpus.empty() ? " CPU slots" : " GPUs"),
                                       "gpus");
    }
    const std::string fingerprint = protocol::JobSpecFingerprint(spec);
    // A retry with a known key returns its job before any limit applies.
    if (!spec.idempotency_key.empty()) {
      FJORD_ASSIGN_OR_RETURN(std::optional<Job> replay,
                             store->FindIdempotent(tenant, spec.idempotency_key, fingerprint));
      if (replay) {
        absl::StatusOr<Job> current = LoadJob(replay->id);
        return JobJson(current.ok() ? *current : *replay);
      }
    }
    FJORD_RETURN_IF_ERROR(StorageAvailable());
    FJORD_RETURN_IF_ERROR(EnsureTenant(tenant));
    FJORD_RETURN_IF_ERROR(CheckQuota(tenant, 1, 1, "tenant", ", and a job writes checkpoints"));
    FJORD_ASSIGN_OR_RETURN(std::string train, ResolveDataFile(tenant, spec.training_file, "training_file"));
    (void)train;
    if (!spec.validation_file.empty()) {
      FJORD_RETURN_IF_ERROR(ResolveDataFile(tenant, spec.validation_file, "validation_file").status());
    }
    int waiting = 0;
    for (const auto& [id, job] : live) {
      if (job.tenant == tenant && (IsWaiting(job.status) || job.status == JobStatus::kValidating ||
                                   job.status == JobStatus::kPaused)) {
        ++waiting;
      }
    }
    Job job;
    job.id = RandomId("job-");
    job.tenant = tenant;
    job.spec = spec;
    job.status = config.worker.validate ? JobStatus::kValidating : JobStatus::kQueued;
    job.created_at_ms = clock->WallMs();
    job.node = config.node_name;
    if (waiting >= config.scheduler.max_queued_per_tenant) {
      return protocol::Error(absl::StatusCode::kResourceExhausted,
                             absl::StrCat("tenant '", tenant, "' has ", waiting, " jobs waiting, the limit is ",
                                          config.scheduler.max_queued_per_tenant),
                             "tenant");
    }
    // The directory is root's until job.yaml and events.jsonl are in it;
    // then it is the worker's.
    FJORD_ASSIGN_OR_RETURN(SafeDir dir, storage->EnsureJobDir(tenant, job.id));
    absl::Status prepared = [&]() -> absl::Status {
      FJORD_RETURN_IF_ERROR(WriteJobYaml(job, dir).status());
      FJORD_RETURN_IF_ERROR(dir.OpenAppend("events.jsonl", 0640).status());
      return HandJobDirToWorker(dir, tenant);
    }();
    if (!prepared.ok()) {
      (void)RemoveJobDir(tenant, job.id);
      return prepared;
    }
    std::vector<JobEvent> events = {StatusEvent(JobStatus::kValidating, job.status, "accepted")};
    events[0].data["previous"] = nullptr;
    absl::StatusOr<CreateResult> created = store->CreateJob(job, fingerprint, &events);
    if (!created.ok() || !created->created) {
      (void)RemoveJobDir(tenant, job.id);
      if (!created.ok()) return created.status();
      LogInfo("idempotent replay of job.create", {{"job", created->job.id}, {"tenant", tenant}});
      absl::StatusOr<Job> current = LoadJob(created->job.id);
      return JobJson(current.ok() ? *current : created->job);
    }
    AppendEventsFile(job, events);
    RefreshJobUsage(tenant, job.id);
    live[job.id] = job;
    order[job.id] = ++order_counter;
    reschedule = true;
    metrics.Add("fjord_jobs_accepted_total", "");
    LogInfo("job accepted", {{"job", job.id}, {"tenant", tenant}, {"model", spec.model}, {"key", rq.principal.key_name}});
    return JobJson(job);
  }

  absl::StatusOr<std::string> ReadJobId(FieldReader& r) {
    std::string id;
    FJORD_RETURN_IF_ERROR(r.String("job_id", &id, /*required=*/true, 64));
    return id;
  }

  absl::StatusOr<json> HandleGet(const Request& rq) {
    FJORD_ASSIGN_OR_RETURN(FieldReader r, FieldReader::Make(*rq.body, ""));
    FJORD_ASSIGN_OR_RETURN(std::string id, ReadJobId(r));
    FJORD_RETURN_IF_ERROR(ActingTenant(rq.principal, r).status());
    FJORD_RETURN_IF_ERROR(r.Finish());
    FJORD_ASSIGN_OR_RETURN(Job job, JobFor(rq.principal, id));
    return JobJson(job);
  }

  absl::StatusOr<json> HandleList(const Request& rq) {
    FJORD_ASSIGN_OR_RETURN(FieldReader r, FieldReader::Make(*rq.body, ""));
    JobFilter f;
    std::vector<std::string> statuses;
    FJORD_RETURN_IF_ERROR(r.StringList("status", &statuses, 16, 32));
    for (const std::string& s : statuses) {
      std::optional<JobStatus> st = protocol::ParseJobStatus(s);
      if (!st) return protocol::InvalidArgument(absl::StrCat("status: unknown job status '", s, "'"), "status");
      f.statuses.push_back(*st);
    }
    FJORD_RETURN_IF_ERROR(r.Int("limit", &f.limit, 1, protocol::kMaxListLimit));
    FJORD_RETURN_IF_ERROR(r.String("after", &f.after, false, 64));
    const bool named_tenant = r.Has("tenant");
    FJORD_ASSIGN_OR_RETURN(std::string tenant, ActingTenant(rq.principal, r));
    FJORD_RETURN_IF_ERROR(r.Finish());
    f.tenant = rq.principal.admin && !named_tenant ? "" : tenant;
    if (!f.after.empty() && !JobFor(rq.principal, f.after).ok()) {
      return protocol::Error(absl::StatusCode::kNotFound, absl::StrCat("no job '", f.after, "'"), "after");
    }
    FlushDirty();
    FJORD_ASSIGN_OR_RETURN(std::vector<Job> jobs, store->ListJobs(f));
    const bool has_more = static_cast<int>(jobs.size()) > f.limit;
    if (has_more) jobs.resize(static_cast<size_t>(f.limit));
    json out = json::array();
    for (const Job& j : jobs) {
      auto it = live.find(j.id);
      out.push_back(JobJson(it != live.end() ? it->second : j));
    }
    return json{{"jobs", out}, {"has_more", has_more}};
  }

  absl::StatusOr<json> HandleControl(const Request& rq, Trigger trigger) {
    FJORD_ASSIGN_OR_RETURN(FieldReader r, FieldReader::Make(*rq.body, ""));
    FJORD_ASSIGN_OR_RETURN(std::string id, ReadJobId(r));
    FJORD_RETURN_IF_ERROR(ActingTenant(rq.principal, r).status());
    FJORD_RETURN_IF_ERROR(r.Finish());
    FJORD_ASSIGN_OR_RETURN(Job job, JobFor(rq.principal, id));
    const JobStatus before = job.status;
    FJORD_ASSIGN_OR_RETURN(JobStatus after, NextStatus(before, trigger));
    if (after == before) return JobJson(job);
    if (trigger == Trigger::kResume) {
      FJORD_RETURN_IF_ERROR(CheckQuota(job.tenant, 1, 1, "tenant", ", and a resumed job writes checkpoints"));
    }
    const char* verb = trigger == Trigger::kCancel ? "cancel" : trigger == Trigger::kPause ? "pause" : "resume";
    FJORD_ASSIGN_OR_RETURN(Job updated, Apply(job, trigger, absl::StrCat(verb, " requested by ", rq.principal.key_name),
                                               [&](Job& j) {
                                                 if (trigger == Trigger::kResume) j.error.reset();
                                               }));
    if (after == JobStatus::kPausing || after == JobStatus::kCancelling) {
      supervisor->Stop(id);  // SIGTERM: checkpoint and exit; SIGKILL after the grace period
    } else if (before == JobStatus::kValidating && after == JobStatus::kCancelled) {
      supervisor->Kill(id);
    }
    if (trigger == Trigger::kResume) order[id] = ++order_counter;
    return JobJson(updated);
  }

  absl::StatusOr<json> HandleEvents(const Request& rq) {
    FJORD_ASSIGN_OR_RETURN(FieldReader r, FieldReader::Make(*rq.body, ""));
    FJORD_ASSIGN_OR_RETURN(std::string id, ReadJobId(r));
    int64_t after = 0;
    int limit = 100;
    FJORD_RETURN_IF_ERROR(r.Int("after_seq", &after, 0, INT64_MAX));
    FJORD_RETURN_IF_ERROR(r.Int("limit", &limit, 1, protocol::kMaxEventsLimit));
    FJORD_RETURN_IF_ERROR(ActingTenant(rq.principal, r).status());
    FJORD_RETURN_IF_ERROR(r.Finish());
    FJORD_RETURN_IF_ERROR(JobFor(rq.principal, id).status());
    FlushDirty();
    FJORD_ASSIGN_OR_RETURN(std::vector<JobEvent> events, store->ListEvents(id, after, limit + 1));
    const bool has_more = static_cast<int>(events.size()) > limit;
    if (has_more) events.resize(static_cast<size_t>(limit));
    json out = json::array();
    for (const JobEvent& e : events) out.push_back(protocol::JobEventToJson(e));
    return json{{"events", out}, {"has_more", has_more}};
  }

  // Streams reply by themselves; returns a status only on a refusal.
  absl::Status HandleSubscribe(const Request& rq) {
    FJORD_ASSIGN_OR_RETURN(FieldReader r, FieldReader::Make(*rq.body, ""));
    FJORD_ASSIGN_OR_RETURN(std::string id, ReadJobId(r));
    int64_t after = 0;
    FJORD_RETURN_IF_ERROR(r.Int("after_seq", &after, 0, INT64_MAX));
    FJORD_RETURN_IF_ERROR(ActingTenant(rq.principal, r).status());
    FJORD_RETURN_IF_ERROR(r.Finish());
    FJORD_RETURN_IF_ERROR(JobFor(rq.principal, id).status());
    Peer& peer = peers[rq.identity];
    if (static_cast<int>(peer.streams.size()) >= config.limits.max_streams_per_peer) {
      return protocol::Error(absl::StatusCode::kResourceExhausted,
                             absl::StrCat("at most ", config.limits.max_streams_per_peer, " streams per connection"),
                             "streams");
    }
    if (peer.streams.count(rq.request_id)) {
      return protocol::InvalidArgument("a stream with this request id is already open", "request_id");
    }
    FlushDirty();
    peer.streams[rq.request_id] = Stream{id, after};
    PumpStreamsFor(id);
    return absl::OkStatus();
  }

  absl::StatusOr<json> HandleCheckpoints(const Request& rq) {
    FJORD_ASSIGN_OR_RETURN(FieldReader r, FieldReader::Make(*rq.body, ""));
    FJORD_ASSIGN_OR_RETURN(std::string id, ReadJobId(r));
    FJORD_RETURN_IF_ERROR(ActingTenant(rq.principal, r).status());
    FJORD_RETURN_IF_ERROR(r.Finish());
    FJORD_ASSIGN_OR_RETURN(Job job, JobFor(rq.principal, id));
    // The step-* directories of the job's checkpoints/ (the worker's: listed
    // through SafeDir; a link in place of checkpoints/ or of a step is not
    // followed and not listed).
    std::vector<std::pair<int64_t, std::string>> steps;
    absl::StatusOr<SafeDir> dir = storage->OpenJobDir(job.tenant, job.id);
    absl::StatusOr<SafeDir> checkpoints = dir.ok() ? dir->OpenDir("checkpoints") : dir.status();
    if (checkpoints.ok()) {
      FJORD_ASSIGN_OR_RETURN(std::vector<SafeDir::Entry> entries, checkpoints->List(WalkBound()));
      for (const SafeDir::Entry& e : entries) {
        int64_t step = 0;
        if (e.type == SafeDir::Entry::Type::kDir && IsStepName(e.name, &step)) steps.push_back({step, e.name});
      }
    }
    std::sort(steps.begin(), steps.end());
    json out = json::array();
    const std::string root = storage->JobDir(job.tenant, job.id) + "/checkpoints/";
    for (const auto& [step, name] : steps) out.push_back(protocol::CheckpointToJson({step, root + name}));
    return json{{"checkpoints", out}};
  }

  absl::StatusOr<json> HandleDelete(const Request& rq) {
    FJORD_ASSIGN_OR_RETURN(FieldReader r, FieldReader::Make(*rq.body, ""));
    FJORD_ASSIGN_OR_RETURN(std::string id, ReadJobId(r));
    FJORD_RETURN_IF_ERROR(ActingTenant(rq.principal, r).status());
    FJORD_RETURN_IF_ERROR(r.Finish());
    FJORD_ASSIGN_OR_RETURN(Job job, JobFor(rq.principal, id));
    if (!protocol::IsFinal(job.status)) {
      return protocol::Error(absl::StatusCode::kFailedPrecondition,
                             absl::StrCat("job ", id, " is ", protocol::JobStatusName(job.status),
                                          "; only a job that has ended can be deleted (cancel it first)"),
                             "job_id");
    }
    FJORD_RETURN_IF_ERROR(StorageAvailable());
    // The directory goes before the record: a crash in between leaves a
    // record whose delete can be repeated, never bytes with no record.
    if (absl::Status s = RemoveJobDir(job.tenant, job.id); !s.ok()) {
      return absl::UnavailableError(absl::StrCat("cannot delete the job's directory: ", s.message()));
    }
    FJORD_RETURN_IF_ERROR(store->DeleteJob(job.id));
    ForgetJobUsage(job.tenant, job.id);
    events_file_refused.erase(job.id);
    adapter_cache.erase(job.id);
    order.erase(job.id);
    dirty.erase(job.id);
    LogInfo("job deleted", {{"job", job.id}, {"tenant", job.tenant}, {"key", rq.principal.key_name}});
    return JobJson(job);
  }

  absl::StatusOr<json> HandleUploadBegin(const Request& rq) {
    FJORD_ASSIGN_OR_RETURN(FieldReader r, FieldReader::Make(*rq.body, ""));
    Upload u;
    int64_t bytes = 0;
    FJORD_RETURN_IF_ERROR(r.String("filename", &u.filename, true, 255));
    FJORD_RETURN_IF_ERROR(r.Int("bytes", &bytes, 0, INT64_MAX, /*required=*/true));
    FJORD_RETURN_IF_ERROR(r.String("sha256", &u.sha256, true, 64));
    FJORD_ASSIGN_OR_RETURN(u.tenant, ActingTenant(rq.principal, r));
    FJORD_RETURN_IF_ERROR(r.Finish());
    if (!ValidUploadFilename(u.filename)) {
      return protocol::InvalidArgument("filename must be 1-255 bytes without '/', control characters, '.' or '..'",
                                       "filename");
    }
    if (static_cast<uint64_t>(bytes) > config.limits.max_upload_bytes) {
      return protocol::Error(absl::StatusCode::kResourceExhausted,
                             absl::StrCat("the file is ", bytes, " bytes, the limit is ", config.limits.max_upload_bytes),
                             "bytes");
    }
    if (u.sha256.size() != 64 || u.sha256.find_first_not_of("0123456789abcdef") != std::string::npos) {
      return protocol::InvalidArgument("sha256 must be 64 lower-case hex digits", "sha256");
    }
    int per_tenant = 0;
    for (const auto& [id, x] : uploads) per_tenant += x.tenant == u.tenant;
    if (per_tenant >= config.limits.max_uploads_per_tenant) {
      return protocol::Error(absl::StatusCode::kResourceExhausted,
                             absl::StrCat("at most ", config.limits.max_uploads_per_tenant,
                                          " uploads in progress per tenant"),
                             "upload_id");
    }
    u.bytes = static_cast<uint64_t>(bytes);
    FJORD_RETURN_IF_ERROR(StorageAvailable());
    FJORD_RETURN_IF_ERROR(EnsureTenant(u.tenant));
    FJORD_RETURN_IF_ERROR(
        CheckQuota(u.tenant, u.bytes, 1, "bytes", absl::StrCat("; this file needs ", u.bytes, " more")));
    const std::string id = RandomId("upl-");
    u.path = absl::StrCat(storage->FilesDir(u.tenant), "/", UploadFileName(id));
    u.fd = UniqueFd(::open(u.path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0640));
    if (u.fd.get() < 0) return absl::UnavailableError(absl::StrCat("cannot create the upload: ", std::strerror(errno)));
    u.last_ms = clock->NowMs();
    uploads.emplace(id, std::move(u));
    return json{{"upload_id", id}, {"chunk_bytes", config.limits.upload_chunk_bytes}};
  }

  // An upload in progress is files/.upload-<node tag>-<upload id>: the tag
  // (the first 12 hex digits of SHA-256(node_name)) tells this node's own
  // from other nodes' on a shared storage root.
  std::string NodeTag() const { return Sha256Hex(config.node_name).substr(0, 12); }
  std::string UploadFileName(const std::string& id) const { return absl::StrCat(".upload-", NodeTag(), "-", id); }

  // Uploads nobody can finish any more (their state was in a daemon's
  // memory) are removed from each tenant's files/: at start, every one this
  // node made (it was killed mid-upload) and, at start and with each area
  // rescan, any node's that has not been written to for twice
  // limits.upload_idle_s (its daemon would have dropped it by then). Returns
  // how many; each is logged.
  int DropUnfinishedUploads(const std::string& tenant, bool at_start) {
    absl::StatusOr<SafeDir> area = storage->OpenTenantDir(tenant);
    absl::StatusOr<SafeDir> files = area.ok() ? area->OpenDir("files") : area.status();
    absl::StatusOr<std::vector<SafeDir::Entry>> entries = files.ok() ? files->List() : files.status();
    if (!entries.ok()) return 0;
    const std::string mine = absl::StrCat(".upload-", NodeTag(), "-");
    std::set<std::string> live_uploads;
    for (const auto& [id, u] : uploads) live_uploads.insert(u.path.substr(u.path.rfind('/') + 1));
    const int64_t now_s = clock->WallMs() / 1000;
    int dropped = 0;
    for (const SafeDir::Entry& e : *entries) {
      if (!absl::StartsWith(e.name, ".upload-") || live_uploads.count(e.name)) continue;
      struct stat st {};
      if (::fstatat(files->fd(), e.name.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) continue;
      const bool idle = now_s - static_cast<int64_t>(st.st_mtime) > 2 * config.limits.upload_idle_ms / 1000;
      if (!(at_start && absl::StartsWith(e.name, mine)) && !idle) continue;
      if (::unlinkat(files->fd(), e.name.c_str(), 0) != 0) continue;
      ++dropped;
      LogInfo("removed an unfinished upload", {{"tenant", tenant}, {"file", e.name}, {"bytes", static_cast<int64_t>(st.st_size)},
                                                 {"why", idle ? "idle" : "left by this node before its restart"}});
    }
    if (dropped > 0) (void)files->Sync();
    return dropped;
  }
  void DropUnfinishedUploadsAtStart() {
    absl::StatusOr<SafeDir> root = storage->OpenRoot();
    absl::StatusOr<std::vector<SafeDir::Entry>> tenants = root.ok() ? root->List() : root.status();
    if (!tenants.ok()) return;
    for (const SafeDir::Entry& t : *tenants) {
      if (t.type == SafeDir::Entry::Type::kDir && protocol::ValidTenantName(t.name)) {
        DropUnfinishedUploads(t.name, /*at_start=*/true);
      }
    }
  }

  absl::StatusOr<Upload*> FindUpload(const Request& rq, const std::string& id) {
    auto it = uploads.find(id);
    if (it == uploads.end() || (it->second.tenant != rq.principal.tenant && !rq.principal.admin)) {
      return protocol::Error(absl::StatusCode::kNotFound, absl::StrCat("no upload '", id, "' in progress"), "upload_id");
    }
    return &it->second;
  }

  void DropUpload(const std::string& id) {
    auto it = uploads.find(id);
    if (it == uploads.end()) return;
    ::unlink(it->second.path.c_str());
    uploads.erase(it);
  }

  absl::StatusOr<json> HandleUploadChunk(const Request& rq) {
    FJORD_ASSIGN_OR_RETURN(FieldReader r, FieldReader::Make(*rq.body, ""));
    std::string id;
    int64_t offset = 0;
    FJORD_RETURN_IF_ERROR(r.String("upload_id", &id, true, 64));
    FJORD_RETURN_IF_ERROR(r.Int("offset", &offset, 0, INT64_MAX, /*required=*/true));
    FJORD_RETURN_IF_ERROR(ActingTenant(rq.principal, r).status());
    FJORD_RETURN_IF_ERROR(r.Finish());
    if (!rq.data->has_value()) return protocol::InvalidArgument("file.upload.chunk needs the chunk in frame 6", "data");
    const std::string& data = **rq.data;
    if (data.size() > config.limits.upload_chunk_bytes) {
      return protocol::Error(absl::StatusCode::kResourceExhausted,
                             absl::StrCat("chunk is ", data.size(), " bytes, limit ", config.limits.upload_chunk_bytes),
                             "data");
    }
    FJORD_ASSIGN_OR_RETURN(Upload * u, FindUpload(rq, id));
    const uint64_t off = static_cast<uint64_t>(offset);
    u->last_ms = clock->NowMs();
    if (off + data.size() <= u->received && off < u->received) return json{{"received", u->received}};  // a repeat
    if (off != u->received) {
      return protocol::InvalidArgument(absl::StrCat("offset is ", off, ", expected ", u->received), "offset");
    }
    if (u->received + data.size() > u->bytes) {
      return protocol::InvalidArgument(absl::StrCat("the chunk goes past the announced size of ", u->bytes, " bytes"),
                                       "offset");
    }
    size_t done = 0;
    while (done < data.size()) {
      const ssize_t n = ::write(u->fd.get(), data.data() + done, data.size() - done);
      if (n < 0) {
        if (errno == EINTR) continue;
        const std::string e = std::strerror(errno);
        DropUpload(id);
        return absl::UnavailableError(absl::StrCat("storage write failed: ", e));
      }
      done += static_cast<size_t>(n);
    }
    u->hasher.Update(data);
    u->received += data.size();
    return json{{"received", u->received}};
  }

  absl::StatusOr<json> HandleUploadFinish(const Request& rq) {
    FJORD_ASSIGN_OR_RETURN(FieldReader r, FieldReader::Make(*rq.body, ""));
    std::string id;
    FJORD_RETURN_IF_ERROR(r.String("upload_id", &id, true, 64));
    FJORD_ASSIGN_OR_RETURN(std::string tenant, ActingTenant(rq.principal, r));
    FJORD_RETURN_IF_ERROR(r.Finish());
    if (!uploads.count(id)) {
      // Finished already (a retry after a lost reply)?
      absl::StatusOr<protocol::FileInfo> f = store->GetFileByUpload(tenant, id);
      if (f.ok()) return protocol::FileInfoToJson(*f);
    }
    FJORD_ASSIGN_OR_RETURN(Upload * u, FindUpload(rq, id));
    if (u->received != u->bytes) {
      return protocol::Error(absl::StatusCode::kFailedPrecondition,
                             absl::StrCat("received ", u->received, " of ", u->bytes, " bytes"), "upload_id");
    }
    const std::string got = u->hasher.FinalHex();
    if (got != u->sha256) {
      const std::string want = u->sha256;
      DropUpload(id);
      return protocol::InvalidArgument(
          absl::StrCat("the data's SHA-256 is ", got, ", the request said ", want, "; the upload was dropped"), "sha256");
    }
    absl::StatusOr<WorkerIds> ids = IdsFor(u->tenant);
    if (!ids.ok() || (ids->gid && ::fchown(u->fd.get(), static_cast<uid_t>(-1), *ids->gid) != 0)) {
      const std::string why = ids.ok() ? std::strerror(errno) : std::string(ids.status().message());
      DropUpload(id);
      return absl::UnavailableError(absl::StrCat("chown of the upload failed: ", why));
    }
    if (::fsync(u->fd.get()) != 0) {
      DropUpload(id);
      return absl::UnavailableError("storage fsync failed");
    }
    u->fd.reset();
    protocol::FileInfo f;
    f.id = RandomId("file-");
    f.filename = u->filename;
    f.bytes = u->bytes;
    f.sha256 = got;
    f.created_at_ms = clock->WallMs();
    f.path = "files/" + f.id;
    const std::string final_path = absl::StrCat(storage->FilesDir(u->tenant), "/", f.id);
    if (::rename(u->path.c_str(), final_path.c_str()) != 0) {
      DropUpload(id);
      return absl::UnavailableError(absl::StrCat("storage rename failed: ", std::strerror(errno)));
    }
    (void)Env::Default()->SyncDir(storage->FilesDir(u->tenant));
    const std::string file_tenant = u->tenant;
    uploads.erase(id);
    UsageAddFile(file_tenant, f.bytes, +1);
    FJORD_RETURN_IF_ERROR(store->AddFile(file_tenant, f, id));
    LogInfo("file uploaded", {{"file", f.id}, {"tenant", file_tenant}, {"bytes", f.bytes}});
    return protocol::FileInfoToJson(f);
  }

  absl::StatusOr<json> HandleFileList(const Request& rq) {
    FJORD_ASSIGN_OR_RETURN(FieldReader r, FieldReader::Make(*rq.body, ""));
    int limit = kMaxFileListLimit;
    std::string after;
    FJORD_RETURN_IF_ERROR(r.Int("limit", &limit, 1, kMaxFileListLimit));
    FJORD_RETURN_IF_ERROR(r.String("after", &after, false, 64));
    FJORD_ASSIGN_OR_RETURN(std::string tenant, ActingTenant(rq.principal, r));
    FJORD_RETURN_IF_ERROR(r.Finish());
    absl::StatusOr<std::vector<protocol::FileInfo>> files = store->ListFiles(tenant, limit + 1, after);
    if (!files.ok() && absl::IsNotFound(files.status())) {
      return protocol::Error(absl::StatusCode::kNotFound, absl::StrCat("no file '", after, "'"), "after");
    }
    FJORD_RETURN_IF_ERROR(files.status());
    const bool has_more = static_cast<int>(files->size()) > limit;
    if (has_more) files->resize(static_cast<size_t>(limit));
    json out = json::array();
    for (const protocol::FileInfo& f : *files) out.push_back(protocol::FileInfoToJson(f));
    const Usage used = TenantUsage(tenant);
    return json{{"files", out},
                {"has_more", has_more},
                {"usage_bytes", used.bytes},
                {"quota_bytes", config.limits.max_tenant_storage_bytes},
                {"usage_files", used.entries},
                {"quota_files", config.limits.max_tenant_files}};
  }

  // ---- storage usage ------------------------------------------------------
  // What a tenant's area holds, kept without walking the whole area on every
  // request: the part outside jobs/ (files/ and whatever an operator put
  // there) is walked when the tenant is first seen and every
  // kTenantUsageRescanMs (other nodes on the same storage root upload there
  // too), and changed by uploads and deletes in between; each job directory
  // is walked on its own (SafeDir::TreeUsage, bounded) when the job is
  // created, at each checkpoint, when its worker exits, every
  // kJobUsageRefreshMs while its worker runs, and forgotten by job.delete.
  // Uploads in progress count at their announced size, as one file each.
  struct Usage {
    uint64_t bytes = 0;
    uint64_t entries = 0;
  };
  struct TenantArea {
    int64_t walked_ms = 0;
    Usage outside_jobs;
    std::map<std::string, Usage> jobs;
  };
  std::map<std::string, TenantArea> areas;

  // The most entries one walk counts before it stops: the tenant's file
  // quota (a tree past it is over quota whatever else it holds).
  uint64_t WalkBound() const {
    return config.limits.max_tenant_files > 0 ? config.limits.max_tenant_files + 1 : uint64_t{10'000'000};
  }

  Usage WalkJobDir(const std::string& tenant, const std::string& job_id, const Usage& before) {
    absl::StatusOr<SafeDir> dir = storage->OpenJobDir(tenant, job_id);
    if (!dir.ok()) return Usage{};
    absl::StatusOr<SafeDir::Usage> u = dir->TreeUsage(WalkBound());
    if (absl::IsResourceExhausted(u.status())) return Usage{before.bytes, WalkBound()};
    if (!u.ok()) return before;
    return Usage{u->bytes, u->entries + 1};
  }

  // Walks a tenant's whole area (its job directories one by one).
  void WalkArea(const std::string& tenant, TenantArea& area) {
    TenantArea fresh;
    fresh.walked_ms = clock->NowMs();
    absl::StatusOr<SafeDir> dir = storage->OpenTenantDir(tenant);
    absl::StatusOr<std::vector<SafeDir::Entry>> entries = dir.ok() ? dir->List() : dir.status();
    if (entries.ok()) {
      for (const SafeDir::Entry& e : *entries) {
        const bool is_dir = e.type == SafeDir::Entry::Type::kDir;
        absl::StatusOr<SafeDir> sub = is_dir ? dir->OpenDir(e.name) : absl::NotFoundError("");
        if (e.name == "jobs" && sub.ok()) {
          absl::StatusOr<std::vector<SafeDir::Entry>> jobs = sub->List();
          if (!jobs.ok()) continue;
          for (const SafeDir::Entry& j : *jobs) {
            if (j.type != SafeDir::Entry::Type::kDir) {
              fresh.outside_jobs.bytes += j.bytes;
              ++fresh.outside_jobs.entries;
              continue;
            }
            auto old = area.jobs.find(j.name);
            fresh.jobs[j.name] = WalkJobDir(tenant, j.name, old != area.jobs.end() ? old->second : Usage{});
          }
        } else if (e.name == "files" && sub.ok()) {
          // Uploads in progress (.upload-*) count at their announced size.
          absl::StatusOr<std::vector<SafeDir::Entry>> files = sub->List();
          if (!files.ok()) continue;
          for (const SafeDir::Entry& f : *files) {
            if (absl::StartsWith(f.name, ".upload-")) continue;
            fresh.outside_jobs.bytes += f.bytes;
            ++fresh.outside_jobs.entries;
          }
        } else if (sub.ok()) {
          absl::StatusOr<SafeDir::Usage> u = sub->TreeUsage(WalkBound());
          fresh.outside_jobs.bytes += u.ok() ? u->bytes : 0;
          fresh.outside_jobs.entries += 1 + (u.ok() ? u->entries : WalkBound());
        } else {
          fresh.outside_jobs.bytes += e.bytes;
          ++fresh.outside_jobs.entries;
        }
      }
    }
    area = std::move(fresh);
  }

  TenantArea& Area(const std::string& tenant) {
    auto [it, inserted] = areas.try_emplace(tenant);
    if (inserted) WalkArea(tenant, it->second);
    return it->second;
  }

  void RefreshJobUsage(const std::string& tenant, const std::string& job_id) {
    TenantArea& area = Area(tenant);
    area.jobs[job_id] = WalkJobDir(tenant, job_id, area.jobs[job_id]);
  }
  void ForgetJobUsage(const std::string& tenant, const std::string& job_id) { Area(tenant).jobs.erase(job_id); }
  void UsageAddFile(const std::string& tenant, uint64_t bytes, int sign) {
    Usage& u = Area(tenant).outside_jobs;
    if (sign > 0) {
      u.bytes += bytes;
      ++u.entries;
    } else {
      u.bytes -= std::min(u.bytes, bytes);
      u.entries -= std::min<uint64_t>(u.entries, 1);
    }
  }

  Usage TenantUsage(const std::string& tenant) {
    const TenantArea& area = Area(tenant);
    Usage used = area.outside_jobs;
    for (const auto& [id, u] : area.jobs) {
      used.bytes += u.bytes;
      used.entries += u.entries;
    }
    for (const auto& [id, u] : uploads) {
      if (u.tenant != tenant) continue;
      used.bytes += u.bytes;
      ++used.entries;
    }
    return used;
  }

  // Timer: the directories of jobs whose worker runs are walked again (and
  // such a job paused when its tenant is over quota: a worker that fills
  // the disk without checkpointing is stopped too), and the area of the
  // tenant walked longest ago, when that was over kTenantUsageRescanMs ago.
  void RefreshUsage() {
    const int64_t now = clock->NowMs();
    if (now < next_usage_refresh_ms) return;
    next_usage_refresh_ms = now + kJobUsageRefreshMs;
    std::vector<Job> running;
    for (const auto& [id, job] : live) {
      if (supervisor->Running(id)) running.push_back(job);
    }
    for (const Job& job : running) RefreshJobUsage(job.tenant, job.id);
    for (const Job& job : running) PauseIfOverQuota(job);
    auto oldest = std::min_element(areas.begin(), areas.end(), [](const auto& a, const auto& b) {
      return a.second.walked_ms < b.second.walked_ms;
    });
    if (oldest != areas.end() && now - oldest->second.walked_ms >= kTenantUsageRescanMs) {
      DropUnfinishedUploads(oldest->first, /*at_start=*/false);
      WalkArea(oldest->first, oldest->second);
    }
  }

  // RESOURCE_EXHAUSTED when `bytes` and `files` more would take the tenant
  // past limits.max_tenant_storage_bytes (refused with `param`; `why` ends
  // the usage part of the message) or limits.max_tenant_files (param
  // "tenant").
  absl::Status CheckQuota(const std::string& tenant, uint64_t bytes, uint64_t files, const char* param,
                          const std::string& why) {
    const uint64_t quota = config.limits.max_tenant_storage_bytes;
    const uint64_t file_quota = config.limits.max_tenant_files;
    if (quota == 0 && file_quota == 0) return absl::OkStatus();
    const Usage used = TenantUsage(tenant);
    if (quota > 0 && (used.bytes > quota || bytes > quota - used.bytes)) {
      return protocol::Error(absl::StatusCode::kResourceExhausted,
                             absl::StrCat("tenant '", tenant, "' uses ", used.bytes, " of its ", quota,
                                          " bytes of storage", why,
                                          ": delete files or ended jobs (file.delete, job.delete) first"),
                             param);
    }
    if (file_quota > 0 && (used.entries > file_quota || files > file_quota - used.entries)) {
      return protocol::Error(absl::StatusCode::kResourceExhausted,
                             absl::StrCat("tenant '", tenant, "' has ", used.entries, " of its ", file_quota,
                                          " files and directories in storage: delete files or ended jobs "
                                          "(file.delete, job.delete) first"),
                             "tenant");
    }
    return absl::OkStatus();
  }

  absl::StatusOr<json> HandleFileDelete(const Request& rq) {
    FJORD_ASSIGN_OR_RETURN(FieldReader r, FieldReader::Make(*rq.body, ""));
    std::string id;
    FJORD_RETURN_IF_ERROR(r.String("file_id", &id, /*required=*/true, 64));
    FJORD_ASSIGN_OR_RETURN(std::string tenant, ActingTenant(rq.principal, r));
    FJORD_RETURN_IF_ERROR(r.Finish());
    FJORD_ASSIGN_OR_RETURN(protocol::FileInfo f, store->GetFile(tenant, id));
    const std::string as_path = "files/" + f.id;
    for (const auto& [job_id, job] : live) {  // the jobs that have not ended
      if (job.tenant != tenant) continue;
      for (const auto& [field, value] : {std::pair{"training_file", &job.spec.training_file},
                                         std::pair{"validation_file", &job.spec.validation_file}}) {
        if (*value == f.id || *value == as_path) {
          return protocol::Error(absl::StatusCode::kFailedPrecondition,
                                 absl::StrCat("file ", f.id, " is the ", field, " of job ", job_id, ", which is ",
                                              protocol::JobStatusName(job.status),
                                              ": cancel the job or wait until it ends"),
                                 "file_id");
        }
      }
    }
    FJORD_RETURN_IF_ERROR(StorageAvailable());
    // The file goes before its record: a crash in between leaves a record
    // whose delete can be repeated, never bytes that count against the quota
    // with no record to delete them by.
    const std::string path = absl::StrCat(storage->FilesDir(tenant), "/", f.id);
    if (::unlink(path.c_str()) != 0 && errno != ENOENT) {
      return absl::UnavailableError(absl::StrCat("cannot delete the file: ", std::strerror(errno)));
    }
    (void)Env::Default()->SyncDir(storage->FilesDir(tenant));
    UsageAddFile(tenant, f.bytes, -1);
    FJORD_RETURN_IF_ERROR(store->DeleteFile(tenant, f.id));
    LogInfo("file deleted", {{"file", f.id}, {"tenant", tenant}, {"key", rq.principal.key_name}});
    return protocol::FileInfoToJson(f);
  }

  absl::StatusOr<std::vector<protocol::AdapterFile>> AdapterFiles(const Job& job) {
    if (job.status != JobStatus::kSucceeded || job.result_adapter_path.empty()) {
      return protocol::Error(absl::StatusCode::kFailedPrecondition,
                             absl::StrCat("job ", job.id, " is ", protocol::JobStatusName(job.status),
                                          "; only a succeeded job has an adapter"),
                             "job_id");
    }
    auto cached = adapter_cache.find(job.id);
    if (cached != adapter_cache.end()) return cached->second;
    FJORD_ASSIGN_OR_RETURN(SafeDir dir, OpenAdapterDir(job));
    FJORD_ASSIGN_OR_RETURN(std::vector<SafeDir::Entry> entries, dir.List(kMaxAdapterFiles));
    std::vector<protocol::AdapterFile> files;
    for (const SafeDir::Entry& e : entries) {
      if (e.type != SafeDir::Entry::Type::kFile) continue;
      FJORD_ASSIGN_OR_RETURN(UniqueFd fd, dir.OpenRead(e.name));
      Sha256 h;
      uint64_t bytes = 0;
      std::string buf(1 << 16, '\0');
      while (true) {
        const ssize_t n = ::read(fd.get(), buf.data(), buf.size());
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) return absl::UnavailableError(absl::StrCat("read ", dir.path(), "/", e.name, ": ", std::strerror(errno)));
        if (n == 0) break;
        h.Update(absl::string_view(buf.data(), static_cast<size_t>(n)));
        bytes += static_cast<uint64_t>(n);
      }
      files.push_back({e.name, bytes, h.FinalHex()});
    }
    adapter_cache[job.id] = files;
    return files;
  }

  // The job's adapter/ as SafeDir, opened from the storage root down: a
  // link a worker put in place of adapter/ (or of any file in it) is an
  // error, never a way to another tenant's adapter.
  absl::StatusOr<SafeDir> OpenAdapterDir(const Job& job) {
    FJORD_ASSIGN_OR_RETURN(SafeDir dir, storage->OpenJobDir(job.tenant, job.id));
    return dir.OpenDir("adapter");
  }

  absl::StatusOr<json> HandleAdapterFiles(const Request& rq) {
    FJORD_ASSIGN_OR_RETURN(FieldReader r, FieldReader::Make(*rq.body, ""));
    FJORD_ASSIGN_OR_RETURN(std::string id, ReadJobId(r));
    FJORD_RETURN_IF_ERROR(ActingTenant(rq.principal, r).status());
    FJORD_RETURN_IF_ERROR(r.Finish());
    FJORD_ASSIGN_OR_RETURN(Job job, JobFor(rq.principal, id));
    FJORD_ASSIGN_OR_RETURN(std::vector<protocol::AdapterFile> files, AdapterFiles(job));
    json out = json::array();
    for (const auto& f : files) out.push_back({{"name", f.name}, {"bytes", f.bytes}, {"sha256", f.sha256}});
    return json{{"files", out}, {"path", job.result_adapter_path}};
  }

  absl::StatusOr<ServerMessage> HandleAdapterDownload(const Request& rq) {
    FJORD_ASSIGN_OR_RETURN(FieldReader r, FieldReader::Make(*rq.body, ""));
    FJORD_ASSIGN_OR_RETURN(std::string id, ReadJobId(r));
    std::string name;
    int64_t offset = 0, length = static_cast<int64_t>(config.limits.upload_chunk_bytes);
    FJORD_RETURN_IF_ERROR(r.String("name", &name, true, 255));
    FJORD_RETURN_IF_ERROR(r.Int("offset", &offset, 0, INT64_MAX));
    FJORD_RETURN_IF_ERROR(r.Int("length", &length, 1, INT64_MAX));
    FJORD_RETURN_IF_ERROR(ActingTenant(rq.principal, r).status());
    FJORD_RETURN_IF_ERROR(r.Finish());
    length = std::min<int64_t>(length, static_cast<int64_t>(config.limits.upload_chunk_bytes));
    FJORD_ASSIGN_OR_RETURN(Job job, JobFor(rq.principal, id));
    FJORD_ASSIGN_OR_RETURN(std::vector<protocol::AdapterFile> files, AdapterFiles(job));
    auto f = std::find_if(files.begin(), files.end(), [&](const auto& x) { return x.name == name; });
    if (f == files.end()) {
      return protocol::Error(absl::StatusCode::kNotFound, absl::StrCat("the adapter has no file '", name, "'"), "name");
    }
    auto peer = peers.find(rq.identity);
    if (peer != peers.end() && peer->second.queued_chunks->load() >= kMaxQueuedChunksPerPeer) {
      return protocol::Error(absl::StatusCode::kResourceExhausted,
                             absl::StrCat("this connection has ", kMaxQueuedChunksPerPeer,
                                          " download chunks waiting to be sent; read them before asking for more"),
                             "offset");
    }
    absl::StatusOr<SafeDir> dir = OpenAdapterDir(job);
    absl::StatusOr<UniqueFd> opened = dir.ok() ? dir->OpenRead(name) : dir.status();
    if (!opened.ok()) {
      return absl::UnavailableError(absl::StrCat("cannot open the adapter file: ", opened.status().message()));
    }
    const UniqueFd fd = std::move(*opened);
    const uint64_t off = std::min<uint64_t>(static_cast<uint64_t>(offset), f->bytes);
    std::string data(std::min<uint64_t>(static_cast<uint64_t>(length), f->bytes - off), '\0');
    size_t got = 0;
    while (got < data.size()) {
      const ssize_t n = ::pread(fd.get(), data.data() + got, data.size() - got, static_cast<off_t>(off + got));
      if (n <= 0) {
        if (n < 0 && errno == EINTR) continue;
        return absl::UnavailableError("the adapter file changed while it was read");
      }
      got += static_cast<size_t>(n);
    }
    ServerMessage m = protocol::OkReply(rq.request_id, json{{"name", name}, {"offset", off}, {"bytes", data.size()},
                                                            {"total_bytes", f->bytes}, {"eof", off + data.size() >= f->bytes}});
    m.data = std::move(data);
    return m;
  }

  void HandleRequest(const Request& rq, const std::string& command) {
    absl::StatusOr<json> body = absl::InternalError("unset");
    if (command == protocol::kPing) body = HandlePing(rq);
    else if (command == protocol::kModelList) body = HandleModelList(rq);
    else if (command == protocol::kJobCreate) body = HandleCreate(rq);
    else if (command == protocol::kJobGet) body = HandleGet(rq);
    else if (command == protocol::kJobList) body = HandleList(rq);
    else if (command == protocol::kJobCancel) body = HandleControl(rq, Trigger::kCancel);
    else if (command == protocol::kJobPause) body = HandleControl(rq, Trigger::kPause);
    else if (command == protocol::kJobResume) body = HandleControl(rq, Trigger::kResume);
    else if (command == protocol::kJobEvents) body = HandleEvents(rq);
    else if (command == protocol::kJobCheckpoints) body = HandleCheckpoints(rq);
    else if (command == protocol::kJobDelete) body = HandleDelete(rq);
    else if (command == protocol::kFileUploadBegin) body = HandleUploadBegin(rq);
    else if (command == protocol::kFileUploadChunk) body = HandleUploadChunk(rq);
    else if (command == protocol::kFileUploadFinish) body = HandleUploadFinish(rq);
    else if (command == protocol::kFileList) body = HandleFileList(rq);
    else if (command == protocol::kFileDelete) body = HandleFileDelete(rq);
    else if (command == protocol::kAdapterFiles) body = HandleAdapterFiles(rq);
    else if (command == protocol::kAdapterDownload) {
      absl::StatusOr<ServerMessage> m = HandleAdapterDownload(rq);
      if (m.ok()) {
        SendChunk(rq.identity, *m);
        metrics.Add("fjord_requests_total", absl::StrCat("command=\"", command, "\",code=\"OK\""));
        return;
      }
      body = m.status();
    } else if (command == protocol::kJobSubscribe) {
      absl::Status s = HandleSubscribe(rq);
      if (s.ok()) {
        metrics.Add("fjord_requests_total", absl::StrCat("command=\"", command, "\",code=\"OK\""));
        return;
      }
      body = s;
    } else {
      body = protocol::Error(absl::StatusCode::kUnimplemented, absl::StrCat("unknown command '", command, "'"), "command");
    }
    if (body.ok()) {
      Send(rq.identity, protocol::OkReply(rq.request_id, std::move(*body)));
      metrics.Add("fjord_requests_total", absl::StrCat("command=\"", command, "\",code=\"OK\""));
    } else {
      if (body.status().code() == absl::StatusCode::kInternal) {
        LogError("request failed", {{"command", command}, {"error", std::string(body.status().message())}});
      }
      Send(rq.identity, protocol::ErrorReply(rq.request_id, body.status()));
      metrics.Add("fjord_requests_total", absl::StrCat("command=\"", command, "\",code=\"",
                                                       protocol::CodeName(body.status().code()), "\""));
    }
  }

  // A new peer is tracked unless that would pass limits.max_peers, the
  // slots kept for admins (limits.admin_reserved_peers) or its key's share
  // (limits.max_peers_per_key): one tenant's connections cannot lock the
  // others, or the operators, out. The refusal, or "" when it is tracked.
  std::string AdmitPeer(const std::string& identity, const std::string& key, const Principal& p) {
    const int total = static_cast<int>(peers.size());
    const int reserved = std::min(config.limits.admin_reserved_peers, config.limits.max_peers - 1);
    if (total >= config.limits.max_peers || (!p.admin && total >= config.limits.max_peers - reserved)) {
      return absl::StrCat("the daemon serves at most ", config.limits.max_peers, " connections (",
                          reserved, " of them kept for admins); try later");
    }
    int& of_key = peers_per_key[key];
    if (of_key >= config.limits.max_peers_per_key) {
      return absl::StrCat("client key '", p.key_name, "' has ", of_key, " connections open, the most one key may hold (",
                          "at most ", config.limits.max_peers_per_key, " connections per key); close some or try later");
    }
    ++of_key;
    Peer peer;
    peer.key = key;
    peers.emplace(identity, std::move(peer));
    return "";
  }
  std::map<std::string, Peer>::iterator ErasePeer(std::map<std::string, Peer>::iterator it) {
    auto k = peers_per_key.find(it->second.key);
    if (k != peers_per_key.end() && --k->second <= 0) peers_per_key.erase(k);
    return peers.erase(it);
  }

  // `parts`: the routing id and at most kMaxClientParts - 1 frames, as
  // received (PollOnce copies nothing beyond that); `bytes` and `count` are
  // the whole message's, dropped parts included.
  void OnMessage(std::vector<zmq::message_t>& parts, uint64_t bytes, size_t count) {
    const int64_t start = clock->NowMs();
    const auto t0 = std::chrono::steady_clock::now();
    const std::string identity = parts[0].to_string();
    // Connection metadata rides on the peer's own frames, not on the routing id ROUTER adds.
    const char* user = zmq_msg_gets(parts[1].handle(), "User-Id");
    Frames frames;
    frames.reserve(parts.size() - 1);
    const bool oversize = bytes - parts[0].size() > config.limits.max_message_bytes;
    for (size_t i = 1; i < parts.size(); ++i) {
      // Over the limit, only the small frames that carry the request id are
      // copied, to say which request was refused.
      frames.push_back(oversize && parts[i].size() > 256 ? std::string() : parts[i].to_string());
    }
    std::optional<Principal> principal;
    if (!config.security.curve) {
      principal = Principal{"plaintext", config.security.plaintext_tenant, config.security.plaintext_admin};
    } else if (user != nullptr) {
      principal = keys->Find(user);
    }
    auto peer = peers.find(identity);
    if (peer == peers.end() && principal) {
      const std::string refusal = AdmitPeer(identity, user ? user : "plaintext", *principal);
      if (!refusal.empty()) {
        Send(identity, protocol::ErrorReply(protocol::RequestIdForReply(frames),
                                            protocol::Error(absl::StatusCode::kResourceExhausted, refusal, "peers")));
        metrics.Add("fjord_peers_refused_total", "");
        return;
      }
      peer = peers.find(identity);
    }
    if (peer != peers.end()) peer->second.last_heard_ms = start;
    if (oversize || count > kMaxClientParts) {
      const absl::Status refused =
          oversize ? protocol::Error(absl::StatusCode::kResourceExhausted,
                                     absl::StrCat("message is ", bytes - parts[0].size(), " bytes, limit ",
                                                  config.limits.max_message_bytes),
                                     "message")
                   : protocol::InvalidArgument(absl::StrCat("message has ", count - 1,
                                                            " frames; expected 6 or 7 (a REQUEST), fewer for others"),
                                               "frames");
      Send(identity, protocol::ErrorReply(protocol::RequestIdForReply(frames), refused));
      metrics.Add("fjord_requests_total", absl::StrCat("command=\"-\",code=\"", protocol::CodeName(refused.code()), "\""));
      return;
    }
    protocol::DecodeLimits limits;
    limits.max_message_bytes = config.limits.max_message_bytes;
    limits.max_body_bytes = config.limits.max_body_bytes;
    limits.max_data_bytes = config.limits.upload_chunk_bytes;
    absl::StatusOr<ClientMessage> msg = protocol::DecodeClientMessage(frames, limits);
    if (!msg.ok()) {
      Send(identity, protocol::ErrorReply(protocol::RequestIdForReply(frames), msg.status()));
      metrics.Add("fjord_requests_total",
                  absl::StrCat("command=\"-\",code=\"", protocol::CodeName(msg.status().code()), "\""));
      return;
    }
    Request rq;
    rq.identity = identity;
    rq.request_id = msg->request_id;
    if (!principal || peer == peers.end()) {
      Send(identity, protocol::ErrorReply(msg->request_id.empty() ? "-" : msg->request_id,
                                          protocol::Error(absl::StatusCode::kUnauthenticated,
                                                          "this client's key is not (or no longer) in the keys file")));
      return;
    }
    rq.principal = *principal;
    switch (msg->type) {
      case MessageType::kHeartbeat: {
        ServerMessage hb;
        hb.type = MessageType::kHeartbeat;
        Send(identity, hb);
        return;
      }
      case MessageType::kDisconnect:
        ErasePeer(peer);
        return;
      case MessageType::kCancel: {
        auto s = peer->second.streams.find(msg->request_id);
        if (s == peer->second.streams.end()) {
          Send(identity, protocol::ErrorReply(msg->request_id,
                                              protocol::Error(absl::StatusCode::kNotFound,
                                                              absl::StrCat("no stream '", msg->request_id,
                                                                           "' is open on this connection"),
                                                              "request_id")));
          return;
        }
        absl::StatusOr<Job> j = LoadJob(s->second.job_id);
        peer->second.streams.erase(s);
        Send(identity, j.ok() ? protocol::OkReply(msg->request_id, json{{"job", JobJson(*j)}})
                              : protocol::ErrorReply(msg->request_id, j.status()));
        return;
      }
      default:
        break;
    }
    if (stopping) {
      Send(identity, protocol::ErrorReply(msg->request_id, absl::UnavailableError("fjordd is shutting down; retry later")));
      return;
    }
    rq.body = &msg->body;
    rq.data = &msg->data;
    HandleRequest(rq, msg->command);
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    metrics.ObserveLatency(msg->command, seconds);
  }

  // ---- timers -------------------------------------------------------------
  void Tick() {
    const int64_t now = clock->NowMs();
    const int64_t interval = config.limits.heartbeat_interval_ms;
    const int64_t expiry = interval * protocol::kHeartbeatLiveness;
    ServerMessage hb;
    hb.type = MessageType::kHeartbeat;
    for (auto it = peers.begin(); it != peers.end();) {
      if (now - it->second.last_heard_ms > expiry) {
        if (!it->second.streams.empty()) {
          LogInfo("peer expired", {{"streams", it->second.streams.size()}});
        }
        it = ErasePeer(it);
        continue;
      }
      if (!it->second.streams.empty() && now - it->second.last_sent_ms >= interval) Send(it->first, hb);
      ++it;
    }
    for (auto it = uploads.begin(); it != uploads.end();) {
      if (now - it->second.last_ms > config.limits.upload_idle_ms) {
        ::unlink(it->second.path.c_str());
        it = uploads.erase(it);
      } else {
        ++it;
      }
    }
    int running = 0, validating = 0;
    for (const auto& [id, job] : live) {
      running += HasTrainer(job.status);
      validating += job.status == JobStatus::kValidating;
    }
    metrics.Set("fjord_running_jobs", "", running);
    metrics.Set("fjord_validating_jobs", "", validating);
    metrics.Set("fjord_peers", "", static_cast<double>(peers.size()));
    if (zap) metrics.Set("fjord_handshakes_refused_total", "", static_cast<double>(zap->refused()));
    UpdateStorageHealth();
    if (storage_problem.empty()) RefreshUsage();
    next_tick_ms = now + interval;
  }

  void PollOnce(int max_wait_ms) {
    std::vector<zmq::pollitem_t> items = {{router->handle(), 0, ZMQ_POLLIN, 0}, {nullptr, stop_pipe[0], ZMQ_POLLIN, 0}};
    supervisor->AddPollItems(&items);
    int64_t wait = std::max<int64_t>(0, std::min<int64_t>(max_wait_ms, next_tick_ms - clock->NowMs()));
    if (supervisor->size() > 0) wait = std::min<int64_t>(wait, kWorkerPollMs);
    try {
      zmq::poll(items.data(), items.size(), std::chrono::milliseconds(wait));
    } catch (const zmq::error_t& e) {
      if (e.num() != EINTR) LogError("poll failed", {{"error", e.what()}});
    }
    if (items[1].revents & ZMQ_POLLIN) {
      char buf[16];
      bool reload = false;
      ssize_t n = 0;
      while ((n = ::read(stop_pipe[0], buf, sizeof(buf))) > 0) {
        for (ssize_t i = 0; i < n; ++i) (buf[i] == kReloadByte ? reload : stop_requested) = true;
      }
      if (reload) ReloadKeys();
    }
    for (int n = 0; n < kMaxDrainPerIteration; ++n) {
      // ZeroMQ hands over a message only once all its frames have arrived
      // (ZMQ_MAXMSGSIZE bounds each frame); parts past kMaxClientParts are
      // received and dropped at once, never copied or kept.
      std::vector<zmq::message_t> parts;
      uint64_t bytes = 0;
      size_t count = 0;
      try {
        zmq::message_t first;
        if (!router->recv(first, zmq::recv_flags::dontwait)) break;
        bool more = first.more();
        bytes += first.size();
        ++count;
        parts.push_back(std::move(first));
        while (more) {
          zmq::message_t m;
          (void)router->recv(m, zmq::recv_flags::none);
          more = m.more();
          bytes += m.size();
          ++count;
          if (parts.size() < kMaxClientParts) parts.push_back(std::move(m));
        }
      } catch (const zmq::error_t& e) {
        LogError("recv failed", {{"error", e.what()}});
        break;
      }
      if (parts.size() >= 2) OnMessage(parts, bytes, count);
    }
    OnWorkerUpdates(supervisor->Collect());
    FlushDirty();
    Reconcile();
    if (clock->NowMs() >= next_tick_ms) Tick();
  }

  bool stop_requested = false;
};

// ---------------------------------------------------------------------------

Server::Server(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

Server::~Server() {
  if (impl_->stop_pipe[0] >= 0) ::close(impl_->stop_pipe[0]);
  if (impl_->stop_pipe[1] >= 0) ::close(impl_->stop_pipe[1]);
  impl_->http.reset();
  impl_->supervisor.reset();  // kills any worker still running
  if (impl_->router) impl_->router->close();
  impl_->zap.reset();
}

absl::StatusOr<std::unique_ptr<Server>> Server::Create(DaemonConfig config, Clock* clock) {
  if (sodium_init() < 0) return absl::InternalError("libsodium failed to initialise");
  auto impl = std::make_unique<Impl>();
  impl->clock = clock ? clock : Clock::Real();
  Impl& s = *impl;
  s.config = std::move(config);
  const DaemonConfig& c = s.config;
  LogLevel level;
  if (ParseLogLevel(c.logging.level, &level)) SetLogLevel(level);
  if (!c.logging.file.empty() && !SetLogOutput(c.logging.file)) {
    return absl::PermissionDeniedError(absl::StrCat("cannot open log file ", c.logging.file));
  }
  FJORD_RETURN_IF_ERROR(Env::Default()->CreateDirs(c.state_dir));
  const std::string run_dir = c.state_dir + "/run";
  FJORD_RETURN_IF_ERROR(Env::Default()->CreateDirs(run_dir));
  if (run_dir.size() + 32 > 100) {
    return absl::InvalidArgumentError(absl::StrCat("state_dir ", c.state_dir,
                                                   " is too long: worker ipc socket paths must stay under ~100 bytes"));
  }
  s.lock_fd = UniqueFd(::open((c.state_dir + "/fjordd.lock").c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600));
  if (!s.lock_fd.valid() || ::flock(s.lock_fd.get(), LOCK_EX | LOCK_NB) != 0) {
    return absl::FailedPreconditionError(absl::StrCat("another fjordd is using ", c.state_dir, " (", c.state_dir,
                                                      "/fjordd.lock is locked)"));
  }
  struct stat st {};
  if (::stat(c.storage_root.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) {
    return absl::FailedPreconditionError(absl::StrCat("storage_root ", c.storage_root, " is not a directory"));
  }
  FJORD_ASSIGN_OR_RETURN(s.store, JobStore::Open(c.state_dir + "/fjordd.db"));
  // The store holds every tenant's jobs and events: the daemon's alone (the
  // workers' user must not read it). SQLite gives its -wal and -shm files the
  // database file's mode; older ones are fixed here too.
  for (const char* suffix : {"", "-wal", "-shm"}) {
    const std::string f = c.state_dir + "/fjordd.db" + suffix;
    if (::chmod(f.c_str(), 0600) != 0 && errno != ENOENT) {
      return absl::PermissionDeniedError(absl::StrCat("chmod 600 ", f, ": ", std::strerror(errno)));
    }
  }
  s.storage = std::make_unique<Storage>(c.storage_root);
  if (c.security.curve) {
    FJORD_RETURN_IF_ERROR(CheckKeyFileOwner(c.security.server_secret_key_file, "server secret key file"));
    FJORD_ASSIGN_OR_RETURN(s.server_keys, LoadCurveSecretKeyFile(c.security.server_secret_key_file));
    FJORD_ASSIGN_OR_RETURN(s.keys, LoadKeysFile(c.security.keys_file));
  } else {
    s.keys = std::make_shared<const KeyRing>(std::map<std::string, Principal>{});
  }
  if (c.worker.tenant_uid_count > 0) {
    if (::geteuid() != 0) {
      return absl::FailedPreconditionError(
          "worker.tenant_uid_range: fjordd must run as root to start workers as the tenants' uids");
    }
    FJORD_RETURN_IF_ERROR(CheckTenantUidRange(c));
    s.tenant_ids = std::make_unique<TenantIds>(c.storage_root, c.worker.tenant_uid_first, c.worker.tenant_uid_count);
  } else if (c.worker.user.empty() && ::geteuid() == 0) {
    LogWarning("fjordd runs as root and worker.user is not set: workers (and the tenants' data they parse) run as root",
               {{"fix", "set worker.tenant_uid_range (a uid per tenant) or worker.user (docs/security.md)"}});
  }
  if (!c.worker.user.empty() && ::geteuid() == 0) {
    struct passwd* pw = ::getpwnam(c.worker.user.c_str());
    if (pw == nullptr) return absl::InvalidArgumentError(absl::StrCat("worker.user: no such user '", c.worker.user, "'"));
    s.worker_uid = pw->pw_uid;
    s.worker_gid = pw->pw_gid;
    s.worker_home = pw->pw_dir;
  }
  if (::pipe2(s.stop_pipe, O_NONBLOCK | O_CLOEXEC) != 0) return absl::InternalError("pipe2 failed");
  SupervisorOptions so;
  so.socket_dir = run_dir;
  so.heartbeat_timeout_ms = c.worker.heartbeat_timeout_ms;
  so.stop_grace_ms = c.worker.stop_grace_ms;
  Clock* ck = s.clock;
  so.now_ms = [ck] { return ck->NowMs(); };
  s.supervisor = std::make_unique<WorkerSupervisor>(so);
  std::string why;
  s.nvml = Nvml::Load(&why);
  if (!s.nvml) LogInfo("NVML unavailable", {{"why", why}});
  // Seed the finished-jobs counters from the store.
  if (auto counts = s.store->CountByStatus(); counts.ok()) {
    for (const auto& [status, n] : *counts) {
      if (status == "succeeded" || status == "failed" || status == "cancelled") {
        s.metrics.Set("fjord_jobs_finished_total", absl::StrCat("status=\"", status, "\""), static_cast<double>(n));
      }
    }
  }
  return std::unique_ptr<Server>(new Server(std::move(impl)));
}

absl::Status Server::Start() {
  Impl& s = *impl_;
  const DaemonConfig& c = s.config;
  if (c.security.curve) {
    FJORD_ASSIGN_OR_RETURN(s.zap, ZapHandler::Start(s.ctx, s.keys, /*allow_null=*/false));
  }
  try {
    s.router = std::make_unique<zmq::socket_t>(s.ctx, zmq::socket_type::router);
    s.router->set(zmq::sockopt::linger, 0);
    // A frame larger than a whole message may be is refused by ZeroMQ as it
    // arrives (the peer is disconnected before the frame is allocated).
    s.router->set(zmq::sockopt::maxmsgsize, static_cast<int64_t>(c.limits.max_message_bytes));
    s.router->set(zmq::sockopt::sndhwm, 100000);
    // Whole messages queued per connection before ZeroMQ stops reading it
    // (back-pressure, nothing lost): the daemon drains them every poll, and a
    // client has a handful of requests in flight.
    s.router->set(zmq::sockopt::rcvhwm, 64);
    if (c.security.curve) {
      s.router->set(zmq::sockopt::curve_server, 1);
      s.router->set(zmq::sockopt::curve_secretkey, s.server_keys.secret_key);
      s.router->set(zmq::sockopt::zap_domain, "fjordd");
    }
    for (const std::string& e : c.listen) {
      if (absl::StartsWith(e, "ipc://")) ::unlink(e.substr(6).c_str());
      s.router->bind(e);
    }
  } catch (const zmq::error_t& e) {
    return absl::UnavailableError(absl::StrCat("cannot listen: ", e.what()));
  }
  FJORD_RETURN_IF_ERROR(s.Recover());
  s.DropUnfinishedUploadsAtStart();
  if (!c.metrics.listen.empty()) {
    Nvml* nvml = s.nvml.get();
    s.metrics.SetCollector([nvml](Metrics& m) {
      if (!nvml) return;
      for (int g = 0; g < nvml->device_count(); ++g) {
        if (auto used = nvml->MemoryUsedBytes(g)) m.Set("fjord_gpu_memory_used_bytes", absl::StrCat("gpu=\"", g, "\""), static_cast<double>(*used));
      }
    });
    std::string token;
    if (!c.metrics.bearer_token_file.empty()) {
      FJORD_ASSIGN_OR_RETURN(token, LoadBearerTokenFile(c.metrics.bearer_token_file));
    } else if (!IsLoopbackOrIpc("tcp://" + c.metrics.listen)) {
      LogWarning("metrics.listen is not a loopback address and metrics.bearer_token_file is not set: "
                 "anyone who can reach it can read /metrics",
                 {{"listen", c.metrics.listen}});
    }
    FJORD_ASSIGN_OR_RETURN(s.http, MetricsHttpServer::Start(c.metrics.listen, &s.metrics, std::move(token)));
  }
  s.next_tick_ms = s.clock->NowMs();
  s.metrics.Set("fjord_storage_available", "", 1);
  s.UpdateStorageHealth();
  LogInfo("fjordd listening", {{"endpoints", c.listen}, {"node", c.node_name}, {"curve", c.security.curve},
                               {"public_key", s.server_keys.public_key}, {"metrics_port", metrics_port()},
                               {"slots", c.scheduler.gpus.empty() ? c.scheduler.cpu_slots : static_cast<int>(c.scheduler.gpus.size())}});
  return absl::OkStatus();
}

void Server::PollOnce(int max_wait_ms) { impl_->PollOnce(max_wait_ms); }

absl::Status Server::Run() {
  Impl& s = *impl_;
  while (!s.stop_requested) s.PollOnce(1000);
  LogInfo("shutting down: stopping workers", {{"workers", s.supervisor->size()}});
  s.stopping = true;
  for (const auto& [id, job] : s.live) {
    if (!s.supervisor->Running(id)) continue;
    if (job.status == JobStatus::kValidating) s.supervisor->Kill(id);
    else s.supervisor->Stop(id);
  }
  const int64_t deadline = s.clock->NowMs() + s.config.worker.stop_grace_ms + 5000;
  while (s.supervisor->size() > 0 && s.clock->NowMs() < deadline) s.PollOnce(100);
  s.FlushDirty();
  std::vector<Job> left;
  for (const auto& [id, job] : s.live) {
    if (HasTrainer(job.status)) left.push_back(job);
  }
  for (Job& j : left) (void)s.Apply(j, Trigger::kShutdown, "the daemon shut down");
  for (auto& [identity, peer] : s.peers) {
    for (const auto& [rid, st] : peer.streams) {
      s.Send(identity, protocol::ErrorReply(rid, absl::UnavailableError("fjordd shut down; re-subscribe later")));
    }
  }
  s.peers.clear();
  LogInfo("fjordd stopped");
  return absl::OkStatus();
}

void Server::RequestStop() {
  const char b = 1;
  if (impl_->stop_pipe[1] >= 0) (void)!::write(impl_->stop_pipe[1], &b, 1);
}

void Server::RequestKeyReload() {
  const char b = Impl::kReloadByte;
  if (impl_->stop_pipe[1] >= 0) (void)!::write(impl_->stop_pipe[1], &b, 1);
}

std::string Server::public_key() const { return impl_->server_keys.public_key; }
int Server::metrics_port() const { return impl_->http ? impl_->http->port() : 0; }

}  // namespace fjord::daemon

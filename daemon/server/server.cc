// fjordd's loop: sockets, peers' messages in, workers' updates, timers. What
// a request does is in the handlers (handlers.h, by resource), what happens
// to jobs in JobLifecycle, JobRunner and TenantAreas; this file wires them.
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
#include <cerrno>
#include <chrono>
#include <cstring>
#include <map>
#include <optional>
#include <vector>
#include <zmq.hpp>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "daemon/auth/keys.h"
#include "daemon/auth/zap.h"
#include "daemon/jobs/lifecycle.h"
#include "daemon/jobs/store.h"
#include "daemon/metrics/metrics.h"
#include "daemon/protocol/codec.h"
#include "daemon/protocol/curve_keys.h"
#include "daemon/protocol/errors.h"
#include "daemon/protocol/protocol.h"
#include "daemon/server/commands.h"
#include "daemon/server/handlers.h"
#include "daemon/server/job_runner.h"
#include "daemon/server/sessions.h"
#include "daemon/server/uploads.h"
#include "daemon/slurm/slurm_workers.h"
#include "daemon/storage/storage.h"
#include "daemon/storage/tenant_areas.h"
#include "daemon/storage/tenant_ids.h"
#include "daemon/util/log.h"
#include "daemon/worker/routed_workers.h"
#include "daemon/worker/supervisor.h"
#include "runtime/util/env.h"
#include "runtime/util/nvml.h"
#include "runtime/util/status_macros.h"

namespace fjord::daemon {

using nlohmann::json;
using protocol::ClientMessage;
using protocol::Frames;
using protocol::Job;
using protocol::JobStatus;
using protocol::MessageType;
using protocol::ServerMessage;

namespace {

constexpr int kWorkerPollMs = 50;
constexpr int kMaxDrainPerIteration = 2000;

// The most parts of a client message the daemon copies: ROUTER's routing id,
// the protocol's frames 0-6 (a REQUEST with data) and one more, so that the
// codec names a message one frame too long. Parts beyond are dropped as they
// are received, without being copied.
constexpr size_t kMaxClientParts = 9;

// How often a tenant's whole area is walked again for its storage usage
// (other nodes on the same storage root write there too): the area walked
// longest ago, once over this age, at most one per timer tick.
constexpr int64_t kTenantUsageRescanMs = 60000;

}  // namespace

struct Server::Impl {
  DaemonConfig config;
  Clock* clock = nullptr;
  zmq::context_t ctx;
  std::unique_ptr<ZapHandler> zap;
  std::shared_ptr<const KeyRing> keys;
  std::unique_ptr<zmq::socket_t> router;
  CurveKeyPair server_keys;
  std::unique_ptr<JobStore> store;
  std::unique_ptr<Storage> storage;
  std::unique_ptr<TenantIds> tenant_ids;  // worker.tenant_uid_range: a uid per tenant
  std::unique_ptr<WorkerSupervisor> supervisor;
  // executor.kind slurm: trainers run as Slurm jobs, validators here.
  std::unique_ptr<SlurmWorkers> slurm;
  std::unique_ptr<RoutedWorkers> routed;
  Metrics metrics;
  std::unique_ptr<MetricsHttpServer> http;
  std::unique_ptr<Nvml> nvml;
  UniqueFd lock_fd;
  int stop_pipe[2] = {-1, -1};  // a byte per request: kReloadByte reloads the keys, any other stops
  static constexpr char kReloadByte = 'r';

  std::unique_ptr<JobLifecycle> jobs;
  std::unique_ptr<TenantAreas> tenants;
  Uploads uploads;
  std::unique_ptr<Sessions> sessions;
  std::map<std::string, std::vector<protocol::AdapterFile>> adapter_cache;
  DaemonContext context;
  std::unique_ptr<JobRunner> runner;

  bool stopping = false;
  bool stop_requested = false;
  // "" while the storage root is a writable directory; otherwise why not.
  // While it is not, new jobs and uploads are refused (UNAVAILABLE) and no
  // worker starts: waiting jobs wait, they do not fail.
  std::string storage_problem;
  int64_t next_tick_ms = 0;

  // SIGHUP: the keys file read again, as at start (owner, mode, every entry
  // valid). Keys removed from it are refused from the next request on, by
  // connections already open too; a file with any problem changes nothing.
  void ReloadKeys() {
    if (!config.security.curve) return;
    absl::StatusOr<std::shared_ptr<const KeyRing>> next = LoadKeysFile(config.security.keys_file);
    if (!next.ok()) {
      metrics.Add("fjord_key_reloads_total", "result=\"error\"");
      LogError(
          "keys file not reloaded: the keys in use are unchanged",
          {{"file", config.security.keys_file}, {"error", std::string(next.status().message())}});
      return;
    }
    keys = *next;
    if (zap) zap->Reload(keys);
    metrics.Add("fjord_key_reloads_total", "result=\"ok\"");
    LogInfo("keys file reloaded", {{"file", config.security.keys_file}, {"clients", keys->size()}});
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
      LogInfo("storage root is available again: workers start again",
              {{"storage_root", storage->root()}});
      jobs->RequestReschedule();
    } else {
      LogError(
          "storage root unavailable: new jobs and uploads are refused and no worker starts until "
          "it is back",
          {{"problem", problem}});
    }
    storage_problem = std::move(problem);
    metrics.Set("fjord_storage_available", "", storage_problem.empty() ? 1 : 0);
    metrics.SetHealthProblem(storage_problem);
  }

  absl::Status StorageAvailable() {
    UpdateStorageHealth();
    if (storage_problem.empty()) return absl::OkStatus();
    return absl::UnavailableError(
        absl::StrCat(storage_problem, "; retry when the operator has restored it"));
  }

  // ---- wiring -------------------------------------------------------------
  // The components, once the store, the storage, the router and the
  // supervisor exist.
  void Wire(std::optional<uid_t> worker_uid, std::optional<gid_t> worker_gid) {
    jobs = std::make_unique<JobLifecycle>(
        store.get(), clock, &metrics,
        [this](const Job& job, const std::vector<protocol::JobEvent>& events) {
          tenants->AppendJobEvents(job, events);
          sessions->PumpFor(job.id);
        });
    TenantAreas::Options to;
    to.tenant_ids = tenant_ids.get();
    to.quota_bytes = config.limits.max_tenant_storage_bytes;
    to.quota_files = config.limits.max_tenant_files;
    to.upload_idle_ms = config.limits.upload_idle_ms;
    to.node_name = config.node_name;
    to.worker_uid = worker_uid;
    to.worker_gid = worker_gid;
    tenants = std::make_unique<TenantAreas>(
        storage.get(), clock, to, [this](const std::string& t) { return uploads.InFlight(t); });
    sessions =
        std::make_unique<Sessions>(router.get(), clock, &config.limits, store.get(), jobs.get());
    context.config = &config;
    context.clock = clock;
    context.store = store.get();
    context.storage = storage.get();
    context.tenants = tenants.get();
    context.jobs = jobs.get();
    context.workers = routed ? static_cast<Workers*>(routed.get()) : supervisor.get();
    context.metrics = &metrics;
    context.uploads = &uploads;
    context.sessions = sessions.get();
    context.adapter_cache = &adapter_cache;
    context.storage_available = [this] { return StorageAvailable(); };
    runner = std::make_unique<JobRunner>(&context, nvml.get());
  }

  // ---- messages -------------------------------------------------------------
  // `parts`: the routing id and at most kMaxClientParts - 1 frames, as
  // received (PollOnce copies nothing beyond that); `bytes` and `count` are
  // the whole message's, dropped parts included.
  void OnMessage(std::vector<zmq::message_t>& parts, uint64_t bytes, size_t count) {
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
      principal =
          Principal{"plaintext", config.security.plaintext_tenant, config.security.plaintext_admin};
    } else if (user != nullptr) {
      principal = keys->Find(user);
    }
    if (!sessions->Tracked(identity) && principal) {
      const std::string refusal = sessions->Admit(identity, user ? user : "plaintext", *principal);
      if (!refusal.empty()) {
        sessions->Send(
            identity, protocol::ErrorReply(
                          protocol::RequestIdForReply(frames),
                          protocol::Error(absl::StatusCode::kResourceExhausted, refusal, "peers")));
        metrics.Add("fjord_peers_refused_total", "");
        return;
      }
    }
    sessions->Heard(identity);
    if (oversize || count > kMaxClientParts) {
      const absl::Status refused =
          oversize
              ? protocol::Error(absl::StatusCode::kResourceExhausted,
                                absl::StrCat("message is ", bytes - parts[0].size(),
                                             " bytes, limit ", config.limits.max_message_bytes),
                                "message")
              : protocol::InvalidArgument(
                    absl::StrCat("message has ", count - 1,
                                 " frames; expected 6 or 7 (a REQUEST), fewer for others"),
                    "frames");
      sessions->Send(identity, protocol::ErrorReply(protocol::RequestIdForReply(frames), refused));
      metrics.Add("fjord_requests_total",
                  absl::StrCat("command=\"-\",code=\"", protocol::CodeName(refused.code()), "\""));
      return;
    }
    protocol::DecodeLimits limits;
    limits.max_message_bytes = config.limits.max_message_bytes;
    limits.max_body_bytes = config.limits.max_body_bytes;
    limits.max_data_bytes = config.limits.upload_chunk_bytes;
    absl::StatusOr<ClientMessage> msg = protocol::DecodeClientMessage(frames, limits);
    if (!msg.ok()) {
      sessions->Send(identity,
                     protocol::ErrorReply(protocol::RequestIdForReply(frames), msg.status()));
      metrics.Add(
          "fjord_requests_total",
          absl::StrCat("command=\"-\",code=\"", protocol::CodeName(msg.status().code()), "\""));
      return;
    }
    if (!principal || !sessions->Tracked(identity)) {
      sessions->Send(
          identity,
          protocol::ErrorReply(
              msg->request_id.empty() ? "-" : msg->request_id,
              protocol::Error(absl::StatusCode::kUnauthenticated,
                              "this client's key is not (or no longer) in the keys file")));
      return;
    }
    switch (msg->type) {
      case MessageType::kHeartbeat: {
        ServerMessage hb;
        hb.type = MessageType::kHeartbeat;
        sessions->Send(identity, hb);
        return;
      }
      case MessageType::kDisconnect:
        sessions->Forget(identity);
        return;
      case MessageType::kCancel:
        sessions->Cancel(identity, msg->request_id);
        return;
      default:
        break;
    }
    if (stopping) {
      sessions->Send(identity, protocol::ErrorReply(
                                   msg->request_id,
                                   absl::UnavailableError("fjordd is shutting down; retry later")));
      return;
    }
    Request rq;
    rq.identity = identity;
    rq.request_id = msg->request_id;
    rq.principal = *principal;
    rq.body = &msg->body;
    rq.data = &msg->data;
    Dispatch(context, rq, msg->command);
    const double seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    metrics.ObserveLatency(msg->command, seconds);
  }

  // ---- timers ----------------------------------------------------------------
  void Tick() {
    const int64_t now = clock->NowMs();
    sessions->Tick();
    uploads.ExpireIdle(now, config.limits.upload_idle_ms);
    int running = 0, validating = 0;
    for (const auto& [id, job] : jobs->live()) {
      running += HasTrainer(job.status);
      validating += job.status == JobStatus::kValidating;
    }
    metrics.Set("fjord_running_jobs", "", running);
    metrics.Set("fjord_validating_jobs", "", validating);
    metrics.Set("fjord_peers", "", static_cast<double>(sessions->size()));
    if (zap) metrics.Set("fjord_handshakes_refused_total", "", static_cast<double>(zap->refused()));
    UpdateStorageHealth();
    if (storage_problem.empty()) {
      runner->RefreshUsage();
      tenants->RescanOldest(kTenantUsageRescanMs);
    }
    next_tick_ms = now + config.limits.heartbeat_interval_ms;
  }

  void PollOnce(int max_wait_ms) {
    std::vector<zmq::pollitem_t> items = {{router->handle(), 0, ZMQ_POLLIN, 0},
                                          {nullptr, stop_pipe[0], ZMQ_POLLIN, 0}};
    supervisor->AddPollItems(&items);
    if (slurm) slurm->AddPollItems(&items);
    int64_t wait =
        std::max<int64_t>(0, std::min<int64_t>(max_wait_ms, next_tick_ms - clock->NowMs()));
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
    runner->OnUpdates(supervisor->Collect(), stopping);
    if (slurm) runner->OnUpdates(slurm->Collect(), stopping);
    jobs->FlushDirty();
    runner->Reconcile(stopping, storage_problem.empty());
    if (clock->NowMs() >= next_tick_ms) Tick();
  }
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
    return absl::InvalidArgumentError(
        absl::StrCat("state_dir ", c.state_dir,
                     " is too long: worker ipc socket paths must stay under ~100 bytes"));
  }
  s.lock_fd =
      UniqueFd(::open((c.state_dir + "/fjordd.lock").c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600));
  if (!s.lock_fd.valid() || ::flock(s.lock_fd.get(), LOCK_EX | LOCK_NB) != 0) {
    return absl::FailedPreconditionError(absl::StrCat("another fjordd is using ", c.state_dir, " (",
                                                      c.state_dir, "/fjordd.lock is locked)"));
  }
  struct stat st {};
  if (::stat(c.storage_root.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) {
    return absl::FailedPreconditionError(
        absl::StrCat("storage_root ", c.storage_root, " is not a directory"));
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
    FJORD_RETURN_IF_ERROR(
        CheckKeyFileOwner(c.security.server_secret_key_file, "server secret key file"));
    FJORD_ASSIGN_OR_RETURN(s.server_keys,
                           LoadCurveSecretKeyFile(c.security.server_secret_key_file));
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
    s.tenant_ids = std::make_unique<TenantIds>(c.storage_root, c.worker.tenant_uid_first,
                                               c.worker.tenant_uid_count);
  } else if (c.worker.user.empty() && ::geteuid() == 0) {
    LogWarning(
        "fjordd runs as root and worker.user is not set: workers (and the tenants' data they "
        "parse) run as root",
        {{"fix",
          "set worker.tenant_uid_range (a uid per tenant) or worker.user (docs/security.md)"}});
  }
  std::optional<uid_t> worker_uid;  // worker.user: one user for every tenant
  std::optional<gid_t> worker_gid;
  if (!c.worker.user.empty() && ::geteuid() == 0) {
    struct passwd* pw = ::getpwnam(c.worker.user.c_str());
    if (pw == nullptr)
      return absl::InvalidArgumentError(
          absl::StrCat("worker.user: no such user '", c.worker.user, "'"));
    worker_uid = pw->pw_uid;
    worker_gid = pw->pw_gid;
  }
  if (::pipe2(s.stop_pipe, O_NONBLOCK | O_CLOEXEC) != 0) return absl::InternalError("pipe2 failed");
  SupervisorOptions so;
  so.socket_dir = run_dir;
  so.heartbeat_timeout_ms = c.worker.heartbeat_timeout_ms;
  so.stop_grace_ms = c.worker.stop_grace_ms;
  Clock* ck = s.clock;
  so.now_ms = [ck] { return ck->NowMs(); };
  s.supervisor = std::make_unique<WorkerSupervisor>(so);
  if (c.executor.kind == "slurm") {
    SlurmWorkersOptions wo;
    wo.slurm = c.executor.slurm;
    wo.state_dir = c.state_dir;
    wo.heartbeat_timeout_ms = c.worker.heartbeat_timeout_ms;
    wo.stop_grace_ms = c.worker.stop_grace_ms;
    wo.now_ms = so.now_ms;
    FJORD_ASSIGN_OR_RETURN(s.slurm, SlurmWorkers::Start(std::move(wo)));
    s.routed = std::make_unique<RoutedWorkers>(s.supervisor.get(), s.slurm.get());
  }
  std::string why;
  s.nvml = Nvml::Load(&why);
  if (!s.nvml) LogInfo("NVML unavailable", {{"why", why}});
  // Seed the finished-jobs counters from the store.
  if (auto counts = s.store->CountByStatus(); counts.ok()) {
    for (const auto& [status, n] : *counts) {
      if (status == "succeeded" || status == "failed" || status == "cancelled") {
        s.metrics.Set("fjord_jobs_finished_total", absl::StrCat("status=\"", status, "\""),
                      static_cast<double>(n));
      }
    }
  }
  try {
    s.router = std::make_unique<zmq::socket_t>(s.ctx, zmq::socket_type::router);
  } catch (const zmq::error_t& e) {
    return absl::InternalError(absl::StrCat("cannot create the ROUTER socket: ", e.what()));
  }
  s.Wire(worker_uid, worker_gid);
  return std::unique_ptr<Server>(new Server(std::move(impl)));
}

absl::Status Server::Start() {
  Impl& s = *impl_;
  const DaemonConfig& c = s.config;
  if (c.security.curve) {
    FJORD_ASSIGN_OR_RETURN(s.zap, ZapHandler::Start(s.ctx, s.keys, /*allow_null=*/false));
  }
  try {
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
  // Jobs whose Slurm job an earlier fjordd submitted are adopted as they
  // are (Slurm kept running them); squeue says what became of each.
  FJORD_RETURN_IF_ERROR(s.jobs->Recover([&s](const Job& j) {
    if (!s.slurm) return false;
    s.slurm->Adopt(j.id, j.slurm_job_id, HasTrainer(j.status));
    s.runner->Adopted(j.id);
    LogInfo("adopted a running Slurm job", {{"job", j.id}, {"slurm_job", j.slurm_job_id}});
    return true;
  }));
  s.tenants->DropUnfinishedUploadsAtStart();
  if (!c.metrics.listen.empty()) {
    Nvml* nvml = s.nvml.get();
    s.metrics.SetCollector([nvml](Metrics& m) {
      if (!nvml) return;
      for (int g = 0; g < nvml->device_count(); ++g) {
        if (auto used = nvml->MemoryUsedBytes(g))
          m.Set("fjord_gpu_memory_used_bytes", absl::StrCat("gpu=\"", g, "\""),
                static_cast<double>(*used));
      }
    });
    std::string token;
    if (!c.metrics.bearer_token_file.empty()) {
      FJORD_ASSIGN_OR_RETURN(token, LoadBearerTokenFile(c.metrics.bearer_token_file));
    } else if (!IsLoopbackOrIpc("tcp://" + c.metrics.listen)) {
      LogWarning(
          "metrics.listen is not a loopback address and metrics.bearer_token_file is not set: "
          "anyone who can reach it can read /metrics",
          {{"listen", c.metrics.listen}});
    }
    FJORD_ASSIGN_OR_RETURN(
        s.http, MetricsHttpServer::Start(c.metrics.listen, &s.metrics, std::move(token)));
  }
  s.next_tick_ms = s.clock->NowMs();
  s.metrics.Set("fjord_storage_available", "", 1);
  s.UpdateStorageHealth();
  LogInfo("fjordd listening",
          {{"endpoints", c.listen},
           {"node", c.node_name},
           {"curve", c.security.curve},
           {"public_key", s.server_keys.public_key},
           {"metrics_port", metrics_port()},
           {"slots", c.scheduler.gpus.empty() ? c.scheduler.cpu_slots
                                              : static_cast<int>(c.scheduler.gpus.size())}});
  return absl::OkStatus();
}

void Server::PollOnce(int max_wait_ms) { impl_->PollOnce(max_wait_ms); }

absl::Status Server::Run() {
  Impl& s = *impl_;
  while (!s.stop_requested) s.PollOnce(1000);
  LogInfo("shutting down: stopping workers", {{"workers", s.supervisor->size()}});
  s.stopping = true;
  for (const auto& [id, job] : s.jobs->live()) {
    if (!s.supervisor->Running(id)) continue;
    if (job.status == JobStatus::kValidating)
      s.supervisor->Kill(id);
    else
      s.supervisor->Stop(id);
  }
  const int64_t deadline = s.clock->NowMs() + s.config.worker.stop_grace_ms + 5000;
  while (s.supervisor->size() > 0 && s.clock->NowMs() < deadline) s.PollOnce(100);
  s.jobs->FlushDirty();
  std::vector<Job> left;
  for (const auto& [id, job] : s.jobs->live()) {
    // Slurm jobs run on: the next fjordd adopts them.
    if (HasTrainer(job.status) && !(s.slurm && s.slurm->Running(id))) left.push_back(job);
  }
  for (Job& j : left) (void)s.jobs->Apply(j, Trigger::kShutdown, "the daemon shut down");
  s.sessions->EndAll(absl::UnavailableError("fjordd shut down; re-subscribe later"));
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

#include "daemon/slurm/slurm_workers.h"

#include <fcntl.h>
#include <signal.h>
#include <sodium.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "daemon/protocol/curve_keys.h"
#include "daemon/protocol/worker_protocol.h"
#include "daemon/util/log.h"
#include "runtime/util/status_macros.h"

namespace fjord::daemon {
namespace {

constexpr char kZapEndpoint[] = "inproc://zeromq.zap.01";
constexpr char kReportDomain[] = "fjord-report";
constexpr int64_t kErrorLogIntervalMs = 60000;

// Words of sbatch/squeue that say slurmctld could not be reached (the job
// is not refused: it waits).
bool Unreachable(const CommandResult& r) {
  return r.timed_out || absl::StrContains(r.err, "Unable to contact slurm controller") ||
         absl::StrContains(r.err, "Socket timed out") ||
         absl::StrContains(r.err, "Connection refused");
}

}  // namespace

SlurmWorkers::SlurmWorkers(SlurmWorkersOptions options) : options_(std::move(options)) {}

absl::StatusOr<std::unique_ptr<SlurmWorkers>> SlurmWorkers::Start(SlurmWorkersOptions options) {
  std::unique_ptr<SlurmWorkers> w(new SlurmWorkers(std::move(options)));
  FJORD_RETURN_IF_ERROR(w->Init());
  return w;
}

absl::Status SlurmWorkers::Init() {
  if (sodium_init() < 0) return absl::InternalError("libsodium cannot initialise");
  const std::string prefix = options_.state_dir + "/report";
  struct stat st {};
  if (::stat((prefix + ".key").c_str(), &st) != 0) {
    FJORD_ASSIGN_OR_RETURN(CurveKeyPair fresh, GenerateCurveKeyPair());
    FJORD_RETURN_IF_ERROR(WriteCurveKeyFiles(prefix, fresh));
  }
  FJORD_ASSIGN_OR_RETURN(CurveKeyPair keys, LoadCurveSecretKeyFile(prefix + ".key"));
  server_public_ = keys.public_key;
  server_secret_ = keys.secret_key;
  raw_secret_.resize(32);
  if (zmq_z85_decode(reinterpret_cast<uint8_t*>(raw_secret_.data()), server_secret_.c_str()) ==
      nullptr) {
    return absl::InternalError(absl::StrCat(prefix, ".key: not a Z85 key"));
  }
  if (::pipe2(wake_pipe_, O_NONBLOCK | O_CLOEXEC) != 0) {
    return absl::InternalError("pipe2 failed");
  }
  const SlurmConfig& c = options_.slurm;
  try {
    zap_ = std::make_unique<zmq::socket_t>(context_, zmq::socket_type::rep);
    zap_->set(zmq::sockopt::linger, 0);
    zap_->bind(kZapEndpoint);
    report_ = std::make_unique<zmq::socket_t>(context_, zmq::socket_type::pull);
    report_->set(zmq::sockopt::linger, 0);
    report_->set(zmq::sockopt::maxmsgsize, static_cast<int64_t>(protocol::kMaxWorkerMessageBytes));
    report_->set(zmq::sockopt::rcvhwm, 100000);
    report_->set(zmq::sockopt::curve_server, 1);
    report_->set(zmq::sockopt::curve_secretkey, server_secret_);
    report_->set(zmq::sockopt::zap_domain, kReportDomain);
    report_->bind(c.report_listen);
  } catch (const zmq::error_t& e) {
    return absl::UnavailableError(absl::StrCat("executor.slurm.report_listen: cannot bind ",
                                               c.report_listen, ": ", e.what()));
  }
  thread_ = std::thread([this] { PollThread(); });
  LogInfo("Slurm executor ready", {{"report_listen", c.report_listen},
                                   {"report_endpoint", EndpointFor("")},
                                   {"partition", c.partition},
                                   {"report_public_key", server_public_}});
  return absl::OkStatus();
}

SlurmWorkers::~SlurmWorkers() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    quit_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
  for (int fd : wake_pipe_) {
    if (fd >= 0) ::close(fd);
  }
}

int64_t SlurmWorkers::Now() const {
  if (options_.now_ms) return options_.now_ms();
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

std::map<std::string, std::string> SlurmWorkers::CommandEnv() const {
  std::map<std::string, std::string> env = {
      {"PATH", absl::StrCat(options_.slurm.bin_dir, ":/usr/local/bin:/usr/bin:/bin")}};
  if (!options_.slurm.slurm_conf.empty()) env["SLURM_CONF"] = options_.slurm.slurm_conf;
  return env;
}

absl::StatusOr<CommandResult> SlurmWorkers::Run(const std::string& program,
                                                const std::vector<std::string>& args,
                                                const std::string& stdin_data) const {
  std::vector<std::string> argv = {absl::StrCat(options_.slurm.bin_dir, "/", program)};
  argv.insert(argv.end(), args.begin(), args.end());
  if (options_.run) return options_.run(argv, stdin_data);
  return RunCommand(argv, CommandEnv(), stdin_data, options_.slurm.command_timeout_ms);
}

std::string SlurmWorkers::EndpointFor(const std::string& /*job_id*/) const {
  return options_.slurm.report_endpoint.empty() ? options_.slurm.report_listen
                                                : options_.slurm.report_endpoint;
}

std::string SlurmWorkers::JobSecretKey(const std::string& job_id) const {
  const std::string message = absl::StrCat("fjord-report-job:", job_id);
  unsigned char mac[crypto_auth_hmacsha256_BYTES];
  crypto_auth_hmacsha256_state st;
  crypto_auth_hmacsha256_init(&st, reinterpret_cast<const unsigned char*>(raw_secret_.data()),
                              raw_secret_.size());
  crypto_auth_hmacsha256_update(&st, reinterpret_cast<const unsigned char*>(message.data()),
                                message.size());
  crypto_auth_hmacsha256_final(&st, mac);
  char z85[41] = {};
  zmq_z85_encode(z85, mac, 32);
  sodium_memzero(mac, sizeof(mac));
  return std::string(z85, 40);
}

std::string SlurmWorkers::JobPublicKey(const std::string& job_id) const {
  absl::StatusOr<std::string> pub = CurvePublicKey(JobSecretKey(job_id));
  return pub.ok() ? *pub : "";
}

std::optional<std::string> SlurmWorkers::ReportKeysFor(const std::string& job_id) const {
  return absl::StrCat(
      "# fjordd's report keys for job ", job_id,
      " (fjord-train --report-keys): private to the job\n", "server_public_key=", server_public_,
      "\n", "public_key=", JobPublicKey(job_id), "\n", "secret_key=", JobSecretKey(job_id), "\n");
}

std::string SlurmWorkers::ClusterJobId(const std::string& job_id) const {
  auto it = jobs_.find(job_id);
  return it == jobs_.end() ? "" : it->second.slurm_id;
}

absl::Status SlurmWorkers::CheckFits(const std::string& job_id, const WorkerSpec& spec, int ranks) {
  FJORD_ASSIGN_OR_RETURN(SlurmShape shape, ShapeFor(ranks, options_.slurm));
  FJORD_ASSIGN_OR_RETURN(
      CommandResult r,
      Run("sbatch", SbatchArgs(options_.slurm, shape, job_id, spec, /*test_only=*/true),
          BatchScript(spec)));
  if (r.ok()) return absl::OkStatus();
  if (Unreachable(r)) {
    return absl::UnavailableError(
        absl::StrCat("cannot reach Slurm to check the job: ", r.Describe("sbatch --test-only")));
  }
  const std::string first_line = r.err.substr(0, r.err.find('\n'));
  absl::string_view why = first_line;
  absl::ConsumePrefix(&why, "sbatch: error: ");
  return absl::FailedPreconditionError(absl::StrCat(
      "Slurm would refuse the job (", shape.nodes, " node(s) x ", shape.tasks_per_node, " rank(s)",
      options_.slurm.partition.empty() ? "" : " in partition ", options_.slurm.partition,
      "): ", why.empty() ? r.Describe("sbatch --test-only") : std::string(why)));
}

absl::Status SlurmWorkers::Launch(const std::string& job_id, const WorkerSpec& spec,
                                  const LaunchOptions& launch) {
  if (jobs_.count(job_id)) {
    return absl::AlreadyExistsError(absl::StrCat("job ", job_id, " already has a Slurm job"));
  }
  FJORD_ASSIGN_OR_RETURN(SlurmShape shape, ShapeFor(launch.ranks, options_.slurm));
  FJORD_ASSIGN_OR_RETURN(
      CommandResult r,
      Run("sbatch", SbatchArgs(options_.slurm, shape, job_id, spec, /*test_only=*/false),
          BatchScript(spec)));
  if (!r.ok()) {
    if (Unreachable(r)) return absl::UnavailableError(r.Describe("sbatch"));
    return absl::FailedPreconditionError(r.Describe("sbatch"));
  }
  // --parsable: "ID" or "ID;CLUSTER".
  std::string id(absl::StripAsciiWhitespace(r.out.substr(0, r.out.find_first_of(";\n"))));
  uint64_t n = 0;
  if (!absl::SimpleAtoi(id, &n)) {
    return absl::InternalError(
        absl::StrCat("sbatch printed no job id: '", r.out.substr(0, 200), "'"));
  }
  Adopt(job_id, id, /*running=*/false);
  LogInfo("submitted to Slurm", {{"job", job_id},
                                 {"slurm_job", id},
                                 {"nodes", shape.nodes},
                                 {"ranks_per_node", shape.tasks_per_node}});
  return absl::OkStatus();
}

void SlurmWorkers::Adopt(const std::string& job_id, const std::string& slurm_id, bool running) {
  Tracked t;
  t.slurm_id = slurm_id;
  t.last_heard_ms = Now();
  // Known to run (fjordd's record says so): a pause right after a restart
  // still checkpoints first, before squeue has answered.
  if (running) t.running_since_ms = t.last_heard_ms;
  jobs_[job_id] = std::move(t);
  job_by_public_key_[JobPublicKey(job_id)] = job_id;
  {
    std::lock_guard<std::mutex> lock(mu_);
    watch_.insert(slurm_id);
    poll_now_ = true;
  }
  cv_.notify_all();
}

void SlurmWorkers::Scancel(const std::string& job_id, Tracked& t, bool term) {
  std::vector<std::string> args;
  if (term) args.push_back("--signal=TERM");
  args.push_back(t.slurm_id);
  absl::StatusOr<CommandResult> r = Run("scancel", args);
  if (!r.ok() || !r->ok()) {
    LogWarning("scancel failed",
               {{"job", job_id},
                {"slurm_job", t.slurm_id},
                {"error", r.ok() ? r->Describe("scancel") : std::string(r.status().message())}});
  }
  {
    std::lock_guard<std::mutex> lock(mu_);
    poll_now_ = true;
  }
  cv_.notify_all();
}

void SlurmWorkers::Stop(const std::string& job_id) {
  auto it = jobs_.find(job_id);
  if (it == jobs_.end()) return;
  Tracked& t = it->second;
  if (!t.running_since_ms) {  // pending: nothing to checkpoint
    Kill(job_id);
    return;
  }
  t.stop_requested = true;
  if (!t.stop_deadline_ms) t.stop_deadline_ms = Now() + options_.stop_grace_ms;
  Scancel(job_id, t, /*term=*/true);
}

void SlurmWorkers::Kill(const std::string& job_id) {
  auto it = jobs_.find(job_id);
  if (it == jobs_.end()) return;
  it->second.stop_requested = true;
  it->second.stop_deadline_ms.reset();
  Scancel(job_id, it->second, /*term=*/false);
}

void SlurmWorkers::AddPollItems(std::vector<zmq::pollitem_t>* items) const {
  items->push_back({zap_->handle(), 0, ZMQ_POLLIN, 0});
  items->push_back({report_->handle(), 0, ZMQ_POLLIN, 0});
  items->push_back({nullptr, wake_pipe_[0], ZMQ_POLLIN, 0});
}

void SlurmWorkers::AnswerZap() {
  for (int n = 0; n < 1000; ++n) {
    std::vector<std::string> frames;
    zmq::message_t m;
    if (!zap_->recv(m, zmq::recv_flags::dontwait)) return;
    frames.push_back(m.to_string());
    while (m.more()) {
      (void)zap_->recv(m, zmq::recv_flags::none);
      frames.push_back(m.to_string());
    }
    std::string code = "400", text = "unknown key", user;
    if (frames.size() >= 7 && frames[0] == "1.0" && frames[2] == kReportDomain &&
        frames[5] == "CURVE" && frames[6].size() == 32) {
      char z85[41] = {};
      zmq_z85_encode(z85, reinterpret_cast<const uint8_t*>(frames[6].data()), 32);
      auto it = job_by_public_key_.find(std::string(z85, 40));
      if (it != job_by_public_key_.end() && jobs_.count(it->second)) {
        code = "200";
        text = "OK";
        user = it->second;
      } else if (last_refusal_log_ms_ < 0 || Now() - last_refusal_log_ms_ > kErrorLogIntervalMs) {
        // At most one line a minute: a stranger can try a new key every time.
        LogWarning("a report connection with an unknown key was refused", {{"address", frames[3]}});
        last_refusal_log_ms_ = Now();
      }
    } else if (frames.size() < 2) {
      frames.resize(2);
    }
    const std::vector<std::string> reply = {"1.0", frames[1], code, text, user, ""};
    for (size_t i = 0; i < reply.size(); ++i) {
      zap_->send(zmq::buffer(reply[i]),
                 i + 1 < reply.size() ? zmq::send_flags::sndmore : zmq::send_flags::none);
    }
  }
}

std::vector<WorkerUpdate> SlurmWorkers::Collect() {
  std::vector<WorkerUpdate> updates;
  AnswerZap();
  const int64_t now = Now();
  // Reports: each connection speaks for the job its key belongs to.
  for (int n = 0; n < 10000; ++n) {
    zmq::message_t msg;
    if (!report_->recv(msg, zmq::recv_flags::dontwait)) break;
    const char* user = zmq_msg_gets(msg.handle(), "User-Id");
    if (user == nullptr) continue;
    auto it = jobs_.find(user);
    if (it == jobs_.end()) continue;
    it->second.last_heard_ms = now;
    std::string body = msg.to_string();
    absl::StatusOr<protocol::WorkerMessage> m = protocol::DecodeWorkerMessage(body);
    if (m.ok() && protocol::IsHeartbeat(*m)) continue;
    WorkerUpdate u{WorkerUpdate::Kind::kEvent, it->first, std::move(body), {}};
    u.message = std::move(m);
    updates.push_back(std::move(u));
  }
  // The squeue thread's newest snapshot.
  char buf[64];
  while (::read(wake_pipe_[0], buf, sizeof(buf)) > 0) {
  }
  Snapshot snap;
  bool fresh = false;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (snapshot_.generation > applied_generation_) {
      snap = snapshot_;
      applied_generation_ = snap.generation;
      fresh = true;
    }
  }
  if (fresh && !snap.error.empty()) {
    if (last_error_log_ms_ < 0 || now - last_error_log_ms_ > kErrorLogIntervalMs) {
      LogWarning("cannot read Slurm's queue: jobs keep their states until it answers",
                 {{"error", snap.error}});
      last_error_log_ms_ = now;
    }
  } else if (fresh) {
    std::vector<std::string> ended;
    for (auto& [job_id, t] : jobs_) {
      auto info = snap.jobs.find(t.slurm_id);
      if (info == snap.jobs.end()) {
        if (!snap.unknown.count(t.slurm_id)) continue;
        WorkerUpdate u{WorkerUpdate::Kind::kExited, job_id, "", WorkerExit{-1, SIGKILL}};
        u.detail = absl::StrCat("Slurm no longer knows job ", t.slurm_id,
                                " (it ended while fjordd was not watching)");
        updates.push_back(std::move(u));
        ended.push_back(job_id);
        continue;
      }
      const SlurmJobInfo& i = info->second;
      switch (PhaseOf(i.state)) {
        case SlurmPhase::kPending: {
          const std::string seen = absl::StrCat("pending:", i.state, ":", i.reason);
          t.running_since_ms.reset();
          if (seen == t.phase_seen) break;
          t.phase_seen = seen;
          WorkerUpdate u{WorkerUpdate::Kind::kPending, job_id, "", {}};
          u.detail = absl::StrCat(
              "Slurm job ", t.slurm_id, " ", absl::AsciiStrToLower(i.state),
              i.reason.empty() || i.reason == "None" ? "" : absl::StrCat(": ", i.reason));
          updates.push_back(std::move(u));
          break;
        }
        case SlurmPhase::kRunning: {
          if (!t.running_since_ms) {
            t.running_since_ms = now;
            t.last_heard_ms = std::max(t.last_heard_ms, now);
          }
          const std::string seen = absl::StrCat("running:", i.nodes);
          if (seen == t.phase_seen) break;
          t.phase_seen = seen;
          WorkerUpdate u{WorkerUpdate::Kind::kStarted, job_id, "", {}};
          u.detail = i.nodes;
          updates.push_back(std::move(u));
          break;
        }
        case SlurmPhase::kEnded: {
          const SlurmEnd end = EndOf(i, t.stop_requested);
          WorkerUpdate u{WorkerUpdate::Kind::kExited, job_id, "", end.exit};
          u.detail = end.cause;
          u.final = end.final;
          updates.push_back(std::move(u));
          ended.push_back(job_id);
          break;
        }
      }
    }
    for (const std::string& job_id : ended) {
      const std::string slurm_id = jobs_[job_id].slurm_id;
      job_by_public_key_.erase(JobPublicKey(job_id));
      jobs_.erase(job_id);
      std::lock_guard<std::mutex> lock(mu_);
      watch_.erase(slurm_id);
    }
  }
  // Timers: a stop past its grace period, a running job gone silent.
  for (auto& [job_id, t] : jobs_) {
    if (t.stop_deadline_ms && now >= *t.stop_deadline_ms) {
      t.stop_deadline_ms.reset();
      updates.push_back({WorkerUpdate::Kind::kStopTimeout, job_id, "", {}});
      Kill(job_id);
    } else if (t.running_since_ms && !t.stop_requested &&
               now - std::max(*t.running_since_ms, t.last_heard_ms) >
                   options_.heartbeat_timeout_ms) {
      updates.push_back({WorkerUpdate::Kind::kHeartbeatTimeout, job_id, "", {}});
      Kill(job_id);
    }
  }
  return updates;
}

void SlurmWorkers::PollThread() {
  uint64_t generation = 0;
  while (true) {
    std::set<std::string> ids;
    {
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait_for(lock, std::chrono::milliseconds(options_.slurm.poll_interval_ms),
                   [this] { return quit_ || poll_now_; });
      if (quit_) return;
      poll_now_ = false;
      ids = watch_;
    }
    if (ids.empty()) continue;
    Snapshot s;
    absl::StatusOr<CommandResult> r = Run("squeue", SqueueArgs());
    if (!r.ok() || !r->ok()) {
      s.error = r.ok() ? r->Describe("squeue") : std::string(r.status().message());
    } else if (absl::StatusOr<std::map<std::string, SlurmJobInfo>> all = ParseSqueue(r->out);
               !all.ok()) {
      s.error = std::string(all.status().message());
    } else {
      for (const std::string& id : ids) {
        auto it = all->find(id);
        const bool listed = it != all->end();
        if (listed && PhaseOf(it->second.state) != SlurmPhase::kEnded) {
          s.jobs[id] = it->second;
          continue;
        }
        // Ended, or not listed (purged past MinJobAge, or squeue raced its
        // submission): scontrol says how it ended, or that Slurm forgot it.
        absl::StatusOr<CommandResult> sc = Run("scontrol", ScontrolShowJobArgs(id));
        if (sc.ok() && sc->ok()) {
          if (absl::StatusOr<SlurmJobInfo> info = ParseScontrolJob(sc->out); info.ok()) {
            s.jobs[id] = *info;
            continue;
          }
        }
        if (sc.ok() && absl::StrContains(sc->err, "Invalid job id")) {
          s.unknown.insert(id);
        } else if (listed) {
          s.jobs[id] = it->second;  // ended, exit code unknown: squeue's state stands
        }
      }
    }
    {
      std::lock_guard<std::mutex> lock(mu_);
      s.generation = ++generation;
      snapshot_ = std::move(s);
    }
    (void)!::write(wake_pipe_[1], "x", 1);
  }
}

}  // namespace fjord::daemon

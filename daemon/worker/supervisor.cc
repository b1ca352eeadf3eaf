#include "daemon/worker/supervisor.h"

#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include <chrono>
#include <thread>

#include "absl/strings/str_cat.h"

namespace fjord::daemon {

// How long the socket of an exited worker is still drained (real time).
constexpr int kExitDrainMs = 100;

namespace {

// Receives every message waiting on `socket` without blocking and appends
// those that are not heartbeats to `updates` as kEvent. Returns how many
// messages (heartbeats included) it received.
int DrainEvents(const std::string& job_id, zmq::socket_t& socket,
                std::vector<WorkerUpdate>* updates) {
  int received = 0;
  zmq::message_t msg;
  while (socket.recv(msg, zmq::recv_flags::dontwait)) {
    ++received;
    std::string body = msg.to_string();
    absl::StatusOr<protocol::WorkerMessage> m = protocol::DecodeWorkerMessage(body);
    if (m.ok() && protocol::IsHeartbeat(*m)) continue;
    WorkerUpdate u{WorkerUpdate::Kind::kEvent, job_id, std::move(body), {}};
    u.message = std::move(m);
    updates->push_back(std::move(u));
  }
  return received;
}

}  // namespace

WorkerSupervisor::WorkerSupervisor(SupervisorOptions options) : options_(std::move(options)) {}

WorkerSupervisor::~WorkerSupervisor() {
  for (auto& [id, w] : workers_) {
    w.process->Kill();
    w.process->Wait(5000);
    w.socket->close();
    ::unlink(w.socket_path.c_str());
  }
}

int64_t WorkerSupervisor::Now() const {
  if (options_.now_ms) return options_.now_ms();
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

std::string WorkerSupervisor::EndpointFor(const std::string& job_id) const {
  return absl::StrCat("ipc://", options_.socket_dir, "/", job_id, ".sock");
}

pid_t WorkerSupervisor::Pid(const std::string& job_id) const {
  auto it = workers_.find(job_id);
  return it == workers_.end() ? 0 : it->second.process->pid();
}

absl::Status WorkerSupervisor::Launch(const std::string& job_id, const WorkerSpec& spec,
                                      const LaunchOptions& launch) {
  if (workers_.count(job_id))
    return absl::AlreadyExistsError(absl::StrCat("job ", job_id, " already has a worker"));
  Worker w;
  w.socket_path = absl::StrCat(options_.socket_dir, "/", job_id, ".sock");
  ::unlink(w.socket_path.c_str());  // left over from a crashed daemon
  w.socket = std::make_unique<zmq::socket_t>(context_, zmq::socket_type::pull);
  w.socket->set(zmq::sockopt::linger, 0);
  // Events are small; refuse floods (a bigger message drops the connection).
  w.socket->set(zmq::sockopt::maxmsgsize, static_cast<int64_t>(protocol::kMaxWorkerMessageBytes));
  try {
    w.socket->bind(EndpointFor(job_id));
  } catch (const zmq::error_t& e) {
    return absl::InternalError(absl::StrCat("cannot bind ", EndpointFor(job_id), ": ", e.what()));
  }
  // A worker running as another user must be able to connect to the socket,
  // and no other user (another tenant's worker) may: connecting needs write
  // permission, and only the owner has it.
  if ((spec.uid &&
       ::chown(w.socket_path.c_str(), *spec.uid, spec.gid.value_or(static_cast<gid_t>(-1))) != 0) ||
      ::chmod(w.socket_path.c_str(), 0600) != 0) {
    const int err = errno;
    w.socket->close();
    ::unlink(w.socket_path.c_str());
    return absl::InternalError(
        absl::StrCat("chown/chmod ", w.socket_path, ": ", std::strerror(err)));
  }
  absl::StatusOr<std::unique_ptr<WorkerProcess>> p = WorkerProcess::Start(spec);
  if (!p.ok()) {
    w.socket->close();
    ::unlink(w.socket_path.c_str());
    return p.status();
  }
  w.process = std::move(*p);
  w.last_heard_ms = Now();
  w.started_ms = w.last_heard_ms;
  w.launch = launch;
  workers_.emplace(job_id, std::move(w));
  return absl::OkStatus();
}

void WorkerSupervisor::Stop(const std::string& job_id) {
  auto it = workers_.find(job_id);
  if (it == workers_.end() || it->second.stop_deadline_ms) return;
  it->second.process->Terminate();
  it->second.stop_deadline_ms = Now() + options_.stop_grace_ms;
}

void WorkerSupervisor::Kill(const std::string& job_id) {
  auto it = workers_.find(job_id);
  if (it != workers_.end()) it->second.process->Kill();
}

void WorkerSupervisor::AddPollItems(std::vector<zmq::pollitem_t>* items) const {
  for (const auto& [id, w] : workers_) items->push_back({w.socket->handle(), 0, ZMQ_POLLIN, 0});
}

std::vector<WorkerUpdate> WorkerSupervisor::Poll(int timeout_ms) {
  std::vector<zmq::pollitem_t> items;
  AddPollItems(&items);
  if (!items.empty()) {
    zmq::poll(items.data(), items.size(), std::chrono::milliseconds(timeout_ms));
  } else if (timeout_ms > 0) {
    std::this_thread::sleep_for(std::chrono::milliseconds(std::min(timeout_ms, 50)));
  }
  return Collect();
}

std::vector<WorkerUpdate> WorkerSupervisor::Collect() {
  std::vector<WorkerUpdate> updates;
  const int64_t now = Now();
  for (auto& [id, w] : workers_) {
    if (DrainEvents(id, *w.socket, &updates) > 0) w.last_heard_ms = now;
  }
  for (auto it = workers_.begin(); it != workers_.end();) {
    Worker& w = it->second;
    if (!w.exit) {
      if (std::optional<WorkerExit> e = w.process->Poll()) {
        w.exit = *e;
        w.exit_seen = std::chrono::steady_clock::now();
      }
    }
    if (w.exit) {
      // Events sent just before the exit may still be on their way.
      DrainEvents(it->first, *w.socket, &updates);
      if (std::chrono::steady_clock::now() - w.exit_seen <
          std::chrono::milliseconds(kExitDrainMs)) {
        ++it;
        continue;
      }
      updates.push_back({WorkerUpdate::Kind::kExited, it->first, "", *w.exit});
      w.socket->close();
      ::unlink(w.socket_path.c_str());
      it = workers_.erase(it);
      continue;
    }
    if (w.stop_deadline_ms && now >= *w.stop_deadline_ms) {
      updates.push_back({WorkerUpdate::Kind::kStopTimeout, it->first, "", {}});
      w.process->Kill();
      w.stop_deadline_ms.reset();
    } else if (w.launch.deadline_ms > 0 && !w.deadline_reported &&
               now - w.started_ms > w.launch.deadline_ms) {
      updates.push_back({WorkerUpdate::Kind::kDeadline, it->first, "", {}});
      w.process->Kill();
      w.deadline_reported = true;
    } else if (w.launch.expect_heartbeats && !w.stop_deadline_ms &&
               now - w.last_heard_ms > options_.heartbeat_timeout_ms) {
      updates.push_back({WorkerUpdate::Kind::kHeartbeatTimeout, it->first, "", {}});
      w.process->Kill();
      w.last_heard_ms = now;  // report once
    }
    ++it;
  }
  return updates;
}

}  // namespace fjord::daemon

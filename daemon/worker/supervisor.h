// WorkerSupervisor: the daemon's side of the worker protocol.
//
// Each running job has one worker process (WorkerProcess) and one ZeroMQ
// PULL socket bound at ipc://<socket_dir>/<job_id>.sock; the worker
// (fjord-train --report ...) PUSHes the worker protocol's messages to it
// (daemon/protocol/worker_protocol.h: JSON events, and a heartbeat every 2 s;
// at most protocol::kMaxWorkerMessageBytes each, a bigger one drops the
// worker's connection). Poll() drains every ready socket, reaps exited workers, and kills
// workers that have been silent longer than the heartbeat timeout. Stop()
// asks a worker to checkpoint and exit (SIGTERM) and SIGKILLs it when the
// grace period runs out.
//
// Not thread-safe: called from the server loop only. Time comes from `now_ms`
// so tests drive timeouts without sleeping.
#ifndef FJORD_DAEMON_WORKER_SUPERVISOR_H_
#define FJORD_DAEMON_WORKER_SUPERVISOR_H_

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>
#include <zmq.hpp>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "daemon/protocol/worker_protocol.h"
#include "daemon/worker/worker_process.h"
#include "daemon/worker/workers.h"

namespace fjord::daemon {

struct SupervisorOptions {
  std::string
      socket_dir;  // ipc sockets live here (short path: ipc paths are limited to ~100 bytes)
  int64_t heartbeat_timeout_ms = 30000;  // silence after which a worker is killed
  int64_t stop_grace_ms = 60000;         // SIGTERM -> SIGKILL
  std::function<int64_t()> now_ms;       // default: steady clock
};

// A worker past LaunchOptions::deadline_ms is killed and reported as
// kDeadline.
class WorkerSupervisor : public Workers {
 public:
  explicit WorkerSupervisor(SupervisorOptions options);
  ~WorkerSupervisor() override;  // kills every worker still running

  // The endpoint a job's worker must report to (pass it as --report).
  std::string EndpointFor(const std::string& job_id) const override;
  // Binds the job's socket and starts the worker. AlreadyExists when the job
  // already has a worker; errors of WorkerProcess::Start otherwise.
  absl::Status Launch(const std::string& job_id, const WorkerSpec& spec,
                      const LaunchOptions& launch = {}) override;
  // SIGTERM now, SIGKILL after stop_grace_ms (reported as kStopTimeout).
  void Stop(const std::string& job_id) override;
  // SIGKILL now.
  void Kill(const std::string& job_id) override;
  bool Running(const std::string& job_id) const override { return workers_.count(job_id) > 0; }
  // The worker's pid (0 when none).
  pid_t Pid(const std::string& job_id) const;
  size_t size() const override { return workers_.size(); }

  // Waits up to timeout_ms for worker messages, then returns everything that
  // happened: events, exits, timeouts. A job whose worker exited is removed
  // after its kExited update.
  std::vector<WorkerUpdate> Poll(int timeout_ms);

  // The same in two halves, for a caller that polls other sockets too:
  // AddPollItems appends one item per worker socket; Collect (after the
  // caller's zmq::poll) drains them without blocking, reaps exits and
  // applies timeouts.
  void AddPollItems(std::vector<zmq::pollitem_t>* items) const;
  std::vector<WorkerUpdate> Collect();

 private:
  struct Worker {
    std::unique_ptr<WorkerProcess> process;
    std::unique_ptr<zmq::socket_t> socket;
    std::string socket_path;
    int64_t last_heard_ms = 0;
    std::optional<int64_t> stop_deadline_ms;
    LaunchOptions launch;
    int64_t started_ms = 0;
    bool deadline_reported = false;
    // Set when the process has been reaped: its last messages may still be
    // in ZeroMQ's queues, so the socket is drained for a short real-time
    // window before kExited is reported.
    std::optional<WorkerExit> exit;
    std::chrono::steady_clock::time_point exit_seen;
  };
  int64_t Now() const;

  SupervisorOptions options_;
  zmq::context_t context_;
  std::map<std::string, Worker> workers_;
};

}  // namespace fjord::daemon

#endif  // FJORD_DAEMON_WORKER_SUPERVISOR_H_

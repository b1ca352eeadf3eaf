// WorkerSupervisor: the daemon's side of the worker protocol.
//
// Each running job has one worker process (WorkerProcess) and one ZeroMQ
// PULL socket bound at ipc://<socket_dir>/<job_id>.sock; the worker
// (fjord-train --report ...) PUSHes JSON events to it and a heartbeat every
// 2 s. Poll() drains every ready socket, reaps exited workers, and kills
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
#include "daemon/worker/worker_process.h"

namespace fjord::daemon {

struct WorkerUpdate {
  enum class Kind {
    kEvent,             // json holds one event the worker sent (heartbeats are not reported)
    kExited,            // the worker ended; exit holds how
    kHeartbeatTimeout,  // the worker went silent and was killed; an kExited follows
    kStopTimeout,       // the worker ignored SIGTERM for the grace period and was killed
    kDeadline,          // the worker ran past LaunchOptions::deadline_ms and was killed; an kExited follows
  };
  Kind kind;
  std::string job_id;
  std::string json;
  WorkerExit exit;
};

struct SupervisorOptions {
  std::string socket_dir;                // ipc sockets live here (short path: ipc paths are limited to ~100 bytes)
  int64_t heartbeat_timeout_ms = 30000;  // silence after which a worker is killed
  int64_t stop_grace_ms = 60000;         // SIGTERM -> SIGKILL
  std::function<int64_t()> now_ms;       // default: steady clock
};

struct LaunchOptions {
  // False for workers that do not report (fjord-train validate): no
  // heartbeat timeout; bound them with deadline_ms instead.
  bool expect_heartbeats = true;
  int64_t deadline_ms = 0;  // > 0: killed this long after launch (kDeadline)
};

class WorkerSupervisor {
 public:
  explicit WorkerSupervisor(SupervisorOptions options);
  ~WorkerSupervisor();  // kills every worker still running

  // The endpoint a job's worker must report to (pass it as --report).
  std::string EndpointFor(const std::string& job_id) const;
  // Binds the job's socket and starts the worker. AlreadyExists when the job
  // already has a worker; errors of WorkerProcess::Start otherwise.
  absl::Status Launch(const std::string& job_id, const WorkerSpec& spec,
                      const LaunchOptions& launch = {});
  // SIGTERM now, SIGKILL after stop_grace_ms (reported as kStopTimeout).
  void Stop(const std::string& job_id);
  // SIGKILL now.
  void Kill(const std::string& job_id);
  bool Running(const std::string& job_id) const { return workers_.count(job_id) > 0; }
  // The worker's pid (0 when none).
  pid_t Pid(const std::string& job_id) const;
  size_t size() const { return workers_.size(); }

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

// Workers: what fjordd needs of its worker processes, as an interface so
// the daemon's handlers and job runner can be tested against a fake that
// launches nothing. WorkerSupervisor (supervisor.h) is the real one.
#ifndef FJORD_DAEMON_WORKER_WORKERS_H_
#define FJORD_DAEMON_WORKER_WORKERS_H_

#include <cstddef>
#include <string>

#include "absl/status/status.h"
#include "daemon/worker/worker_process.h"

namespace fjord::daemon {

struct LaunchOptions {
  // False for workers that do not report (fjord-train validate): no
  // heartbeat timeout; bound them with deadline_ms instead.
  bool expect_heartbeats = true;
  int64_t deadline_ms = 0;  // > 0: killed this long after launch
};

class Workers {
 public:
  virtual ~Workers() = default;
  // The endpoint a job's worker must report to (its --report).
  virtual std::string EndpointFor(const std::string& job_id) const = 0;
  // Starts the job's worker. AlreadyExists when it has one.
  virtual absl::Status Launch(const std::string& job_id, const WorkerSpec& spec,
                              const LaunchOptions& launch = {}) = 0;
  // SIGTERM now (checkpoint and exit), SIGKILL after the grace period.
  virtual void Stop(const std::string& job_id) = 0;
  // SIGKILL now.
  virtual void Kill(const std::string& job_id) = 0;
  virtual bool Running(const std::string& job_id) const = 0;
  // How many workers run.
  virtual size_t size() const = 0;
};

}  // namespace fjord::daemon

#endif  // FJORD_DAEMON_WORKER_WORKERS_H_

// Workers: what fjordd needs of its worker processes, as an interface so
// the daemon's handlers and job runner can be tested against a fake that
// launches nothing. WorkerSupervisor (supervisor.h) is the real one.
#ifndef FJORD_DAEMON_WORKER_WORKERS_H_
#define FJORD_DAEMON_WORKER_WORKERS_H_

#include <cstddef>
#include <string>

#include <optional>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "daemon/protocol/worker_protocol.h"
#include "daemon/worker/worker_process.h"

namespace fjord::daemon {

struct LaunchOptions {
  // False for workers that do not report (fjord-train validate): no
  // heartbeat timeout; bound them with deadline_ms instead.
  bool expect_heartbeats = true;
  int64_t deadline_ms = 0;  // > 0: killed this long after launch
  // A trainer that may run on the cluster (the Slurm executor), as `ranks`
  // data-parallel ranks there. Validators always run on fjordd's node.
  bool cluster = false;
  int ranks = 1;
};

struct WorkerUpdate {
  enum class Kind {
    kEvent,             // one message the worker sent, heartbeats aside: message (and json)
    kExited,            // the worker ended; exit holds how
    kHeartbeatTimeout,  // the worker went silent and was killed; an kExited follows
    kStopTimeout,       // the worker ignored SIGTERM for the grace period and was killed
    kDeadline,  // the worker ran past LaunchOptions::deadline_ms and was killed; an kExited follows
    // A cluster's worker (Slurm): it waits in the cluster's queue (detail:
    // why), or it started (detail: its nodes). Local workers never wait.
    kPending,
    kStarted,
  };
  Kind kind;
  std::string job_id;
  std::string json;  // kEvent: the message's bytes as received
  WorkerExit exit;
  // kEvent: the decoded message, never a heartbeat (those only keep the
  // worker alive), or why the bytes are not a worker message (any message,
  // even one that does not decode, counts as a sign of life). Other kinds:
  // an error.
  absl::StatusOr<protocol::WorkerMessage> message = absl::FailedPreconditionError("not an event");
  // kPending/kStarted: see above. kExited of a cluster's worker: a sentence
  // saying how the cluster ended it ("" for a plain exit), and whether
  // retrying cannot help (DecideTrainerEnd then fails the job).
  std::string detail;
  bool final = false;
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

  // ---- a cluster's workers (the Slurm executor); local ones have none --------
  // The cluster's id of the job's worker ("" when none or local).
  virtual std::string ClusterJobId(const std::string& /*job_id*/) const { return ""; }
  // What the job's worker needs to report over the network, written into its
  // private directory as report.keys (fjord-train --report-keys); nullopt
  // when it reports locally.
  virtual std::optional<std::string> ReportKeysFor(const std::string& /*job_id*/) const {
    return std::nullopt;
  }
  // Would the cluster take a trainer of `ranks` ranks? FailedPrecondition
  // with the cluster's reason when it would refuse it (over a partition's
  // limits); OK for local workers.
  virtual absl::Status CheckFits(const std::string& /*job_id*/, const WorkerSpec& /*spec*/,
                                 int /*ranks*/) {
    return absl::OkStatus();
  }
};

}  // namespace fjord::daemon

#endif  // FJORD_DAEMON_WORKER_WORKERS_H_

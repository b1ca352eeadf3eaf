// The node's scheduler: a pure function from (slots, running jobs, waiting
// jobs) to the jobs to start now, their devices, and every waiting job's
// queue position. No I/O, no clock; thread-safe.
//
// Order (docs/protocol.md §7): higher priority first; then the tenant with
// fewer running jobs (fair share, counting the jobs this plan starts); then
// the older job (FIFO). A tenant at max_running_per_tenant is passed over.
// No backfill: when the next job in order does not fit in the free slots,
// nothing behind it starts either (so a job needing many GPUs is not starved
// by a stream of small ones).
#ifndef FJORD_DAEMON_SCHEDULER_SCHEDULER_H_
#define FJORD_DAEMON_SCHEDULER_SCHEDULER_H_

#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace fjord::daemon {

struct SchedulerConfig {
  std::vector<int> gpus;  // device ids; empty: a CPU node
  int cpu_slots = 1;      // slots on a CPU node
  int max_running_per_tenant = 1000000;
  int slots() const { return gpus.empty() ? cpu_slots : static_cast<int>(gpus.size()); }
};

struct WaitingJob {
  std::string id;
  std::string tenant;
  int priority = 0;
  int64_t order = 0;  // creation order (smaller = older)
  int slots = 1;      // GPUs (or CPU slots) needed
};

struct RunningJob {
  std::string id;
  std::string tenant;
  std::vector<int> gpu_ids;  // on a GPU node
  int slots = 1;
};

struct Assignment {
  std::string job_id;
  std::vector<int> gpu_ids;  // empty on a CPU node
};

struct SchedulePlan {
  std::vector<Assignment> start;
  // 1-based positions of the jobs still waiting after `start`.
  std::map<std::string, int> queue_position;
};

SchedulePlan Schedule(const SchedulerConfig& config, const std::vector<RunningJob>& running,
                      const std::vector<WaitingJob>& waiting);

}  // namespace fjord::daemon

#endif  // FJORD_DAEMON_SCHEDULER_SCHEDULER_H_

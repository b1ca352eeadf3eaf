#include "daemon/scheduler/scheduler.h"

#include <algorithm>
#include <set>
#include <tuple>

namespace fjord::daemon {

SchedulePlan Schedule(const SchedulerConfig& config, const std::vector<RunningJob>& running,
                      const std::vector<WaitingJob>& waiting) {
  SchedulePlan plan;
  std::map<std::string, int> running_per_tenant;  // actual + started by this plan
  std::set<int> free_gpus(config.gpus.begin(), config.gpus.end());
  int free_slots = config.slots();
  for (const RunningJob& r : running) {
    ++running_per_tenant[r.tenant];
    for (int g : r.gpu_ids) free_gpus.erase(g);
    free_slots -= config.gpus.empty() ? r.slots : static_cast<int>(r.gpu_ids.size());
  }
  if (!config.gpus.empty()) free_slots = static_cast<int>(free_gpus.size());

  // Order the waiting jobs by repeated choice of the best one: fair share
  // depends on what was chosen before it. `virtual_running` counts each
  // tenant's running jobs plus those ahead in the order.
  std::map<std::string, int> virtual_running = running_per_tenant;
  std::vector<const WaitingJob*> left;
  for (const WaitingJob& w : waiting) left.push_back(&w);
  std::vector<const WaitingJob*> order;
  while (!left.empty()) {
    auto best =
        std::min_element(left.begin(), left.end(), [&](const WaitingJob* a, const WaitingJob* b) {
          return std::make_tuple(-a->priority, virtual_running[a->tenant], a->order, a->id) <
                 std::make_tuple(-b->priority, virtual_running[b->tenant], b->order, b->id);
        });
    order.push_back(*best);
    ++virtual_running[(*best)->tenant];
    left.erase(best);
  }

  bool blocked = false;
  int position = 0;
  for (const WaitingJob* w : order) {
    const bool tenant_full = running_per_tenant[w->tenant] >= config.max_running_per_tenant;
    if (!blocked && !tenant_full && w->slots <= free_slots) {
      Assignment a;
      a.job_id = w->id;
      for (int i = 0; i < w->slots && !config.gpus.empty(); ++i) {
        a.gpu_ids.push_back(*free_gpus.begin());
        free_gpus.erase(free_gpus.begin());
      }
      free_slots -= w->slots;
      ++running_per_tenant[w->tenant];
      plan.start.push_back(std::move(a));
      continue;
    }
    if (!tenant_full) blocked = true;  // the head does not fit: no backfill
    plan.queue_position[w->id] = ++position;
  }
  return plan;
}

}  // namespace fjord::daemon

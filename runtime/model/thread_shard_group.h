// A ShardGroup for tests: N ranks as N threads of one process. It records
// the most rows any one gather returned, so a test can check that a matrix
// is never gathered whole.
#ifndef FJORD_RUNTIME_MODEL_THREAD_SHARD_GROUP_H_
#define FJORD_RUNTIME_MODEL_THREAD_SHARD_GROUP_H_

#include <torch/torch.h>

#include <algorithm>
#include <atomic>
#include <barrier>
#include <memory>
#include <thread>
#include <utility>
#include <vector>

#include "runtime/model/shard.h"

namespace fjord::model {

class ThreadShardGroup : public ShardGroup {
 public:
  struct Shared {
    explicit Shared(int n) : slots(n), sync(n) {}
    std::vector<torch::Tensor> slots;
    std::barrier<> sync;
    std::atomic<int64_t> most_rows{0};  // the most rows one gather returned
  };
  ThreadShardGroup(std::shared_ptr<Shared> shared, int rank)
      : shared_(std::move(shared)), rank_(rank) {}
  int rank() const override { return rank_; }
  int size() const override { return static_cast<int>(shared_->slots.size()); }
  torch::Tensor AllGather(const torch::Tensor& shard) override {
    shared_->slots[rank_] = shard;
    shared_->sync.arrive_and_wait();
    torch::Tensor all = torch::cat(shared_->slots, 0);
    shared_->sync.arrive_and_wait();
    int64_t seen = shared_->most_rows.load();
    while (all.size(0) > seen && !shared_->most_rows.compare_exchange_weak(seen, all.size(0))) {
    }
    return all;
  }

 private:
  std::shared_ptr<Shared> shared_;
  int rank_;
};

// Runs body(rank, group) on n threads, one per rank, and joins them.
template <typename Body>
void RunRanks(int n, const std::shared_ptr<ThreadShardGroup::Shared>& shared, Body body) {
  std::vector<std::thread> ranks;
  for (int r = 0; r < n; ++r) {
    ranks.emplace_back([&, r] { body(r, std::make_shared<ThreadShardGroup>(shared, r)); });
  }
  for (auto& t : ranks) t.join();
}

}  // namespace fjord::model

#endif  // FJORD_RUNTIME_MODEL_THREAD_SHARD_GROUP_H_

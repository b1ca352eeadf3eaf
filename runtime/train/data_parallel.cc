#include "runtime/train/data_parallel.h"

#include <ATen/Context.h>

#include <torch/csrc/autograd/function_hook.h>
#include <torch/csrc/autograd/variable.h>

#include <algorithm>
#include <chrono>
#include <functional>
#include <memory>
#include <mutex>
#include <utility>

#include "absl/strings/str_cat.h"
#include "runtime/util/status_macros.h"

namespace fjord::train::internal {

void SeedMicroBatch(int64_t seed, int64_t step, int64_t index, const torch::Device& device) {
  uint64_t x = static_cast<uint64_t>(seed) * 0x9E3779B97F4A7C15ull ^
               (static_cast<uint64_t>(step) << 20) ^ static_cast<uint64_t>(index);
  // splitmix64's finaliser: nearby (step, index) pairs get unrelated seeds.
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  x ^= x >> 31;
  {
    at::Generator gen = at::detail::getDefaultCPUGenerator();
    std::lock_guard<std::mutex> lock(gen.mutex());
    gen.set_current_seed(x);
  }
  if (device.is_cuda()) {
    at::Generator gen = at::globalContext().defaultGenerator(device);
    std::lock_guard<std::mutex> lock(gen.mutex());
    gen.set_current_seed(x);
  }
}

torch::Tensor WorldShardGroup::AllGather(const torch::Tensor& shard) {
  return StartAllGather(shard)();
}

std::function<torch::Tensor()> WorldShardGroup::StartAllGather(const torch::Tensor& shard) {
  auto wait = world_.StartAllGather(shard, "gathering a sharded base weight");
  return [this, wait = std::move(wait), own = shard.nbytes()]() {
    absl::StatusOr<torch::Tensor> all = wait();
    TORCH_CHECK(all.ok(), std::string(all.status().message()));
    received_bytes_ += all->nbytes() - own;
    return *all;
  };
}

absl::Status BroadcastParameters(dist::World& world, const std::vector<torch::Tensor>& params) {
  if (world.size() == 1 || params.empty()) return absl::OkStatus();
  torch::NoGradGuard no_grad;
  std::vector<torch::Tensor> flat;
  for (const torch::Tensor& p : params)
    flat.push_back(p.detach().reshape({-1}).to(torch::kFloat32));
  torch::Tensor all = torch::cat(flat);
  FJORD_RETURN_IF_ERROR(world.Broadcast(all, 0, "the adapter weights' broadcast from rank 0"));
  int64_t at = 0;
  for (const torch::Tensor& p : params) {
    p.detach().copy_(all.narrow(0, at, p.numel()).view(p.sizes()));
    at += p.numel();
  }
  return absl::OkStatus();
}

namespace {

// Autograd calls it after it accumulated a step's gradient into .grad().
class ReadyHook : public torch::autograd::PostAccumulateGradHook {
 public:
  explicit ReadyHook(std::function<void()> on_ready) : on_ready_(std::move(on_ready)) {}
  void operator()(const torch::autograd::Variable& /*tensor*/) override { on_ready_(); }

 private:
  std::function<void()> on_ready_;
};

}  // namespace

GradientReducer::GradientReducer(dist::World& world, std::vector<torch::Tensor> params,
                                 int64_t bucket_bytes)
    : world_(world), params_(std::move(params)) {
  bucket_of_.assign(params_.size(), 0);
  seen_.assign(params_.size(), 0);
  for (size_t k = params_.size(); k-- > 0;) {
    const int64_t bytes = params_[k].numel() * 4;
    if (buckets_.empty() || (bucket_bytes > 0 && buckets_.back().numel > 0 &&
                             buckets_.back().numel * 4 + bytes > bucket_bytes)) {
      buckets_.emplace_back();
    }
    Bucket& b = buckets_.back();
    b.params.push_back(k);
    b.offsets.push_back(b.numel);
    b.numel += params_[k].numel();
    bucket_of_[k] = buckets_.size() - 1;
    bytes_ += bytes;
  }
  for (size_t k = 0; k < params_.size(); ++k) {
    torch::autograd::impl::set_post_acc_grad_hooks(
        params_[k], std::make_unique<ReadyHook>([this, k] { OnGradient(k); }));
  }
}

GradientReducer::~GradientReducer() {
  for (torch::Tensor& p : params_) torch::autograd::impl::set_post_acc_grad_hooks(p, nullptr);
}

void GradientReducer::Arm(int64_t step) {
  armed_ = true;
  step_ = step;
}

void GradientReducer::OnGradient(size_t param) {
  if (!armed_ || seen_[param]) return;
  seen_[param] = 1;
  ++buckets_[bucket_of_[param]].ready;
  // Start the ready buckets in order: a bucket waits for the ones before it.
  while (next_ < buckets_.size() &&
         buckets_[next_].ready == static_cast<int64_t>(buckets_[next_].params.size())) {
    Start(buckets_[next_++]);
    ++started_in_backward_;
  }
}

void GradientReducer::Start(Bucket& b) {
  torch::NoGradGuard no_grad;
  std::vector<torch::Tensor> flat;
  flat.reserve(b.params.size());
  for (size_t k : b.params) {
    const torch::Tensor& p = params_[k];
    flat.push_back(p.grad().defined()
                       ? p.grad().reshape({-1}).to(torch::kFloat32)
                       : torch::zeros({p.numel()}, p.options().dtype(torch::kFloat32)));
  }
  b.flat = torch::cat(flat);
  b.pending = world_.StartAllReduceSum(
      b.flat, absl::StrCat("the gradients of step ", step_ + 1, " (bucket ",
                           &b - buckets_.data() + 1, " of ", buckets_.size(), ")"));
}

absl::Status GradientReducer::Finish(int64_t step) {
  const auto t0 = std::chrono::steady_clock::now();
  step_ = step;
  armed_ = false;
  while (next_ < buckets_.size()) Start(buckets_[next_++]);
  absl::Status status;
  for (Bucket& b : buckets_) {
    absl::Status s = b.pending.Wait();
    if (status.ok() && !s.ok()) status = s;
  }
  if (status.ok()) {
    torch::NoGradGuard no_grad;
    for (Bucket& b : buckets_) {
      for (size_t i = 0; i < b.params.size(); ++i) {
        torch::Tensor& p = params_[b.params[i]];
        if (!p.grad().defined()) p.mutable_grad() = torch::zeros_like(p);
        p.grad().copy_(b.flat.narrow(0, b.offsets[i], p.numel()).view(p.sizes()));
      }
    }
  }
  for (Bucket& b : buckets_) {
    b.ready = 0;
    b.flat = torch::Tensor();
  }
  std::fill(seen_.begin(), seen_.end(), 0);
  next_ = 0;
  finish_seconds_ += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return status;
}

}  // namespace fjord::train::internal

// A data-parallel world on PyTorch's c10d: the ranks of one job, met through
// a TCPStore at the rendezvous (rank 0 serves it), talking through Gloo on
// CPU (NCCL on CUDA where fjord is built with it). What the trainer needs and
// no more: sum a tensor over the ranks, copy one from a rank to all, wait for
// all. Every call is bounded by the world's timeout: a rank that never
// arrives, or leaves, ends every other rank's call in an error that says so,
// never a hang.
//
//   FJORD_ASSIGN_OR_RETURN(std::optional<dist::WorldSpec> spec,
//                          dist::WorldSpecFromEnv(dist::ProcessEnv()));
//   FJORD_ASSIGN_OR_RETURN(std::unique_ptr<dist::World> world,
//                          dist::World::Join(spec.value_or(dist::WorldSpec{}), {}));
//   FJORD_RETURN_IF_ERROR(world->AllReduceSum(grads, "gradients of step 3"));
//
// A world of one (no launcher) opens no socket and its calls do nothing,
// unless WorldOptions::backend names one (then a process group of one on an
// in-process store: how the NCCL path is tested on one GPU).
// Process-wide: at most one world per process at a time. Not thread-safe:
// one thread makes the calls, in the same order on every rank.
#ifndef FJORD_RUNTIME_DIST_WORLD_H_
#define FJORD_RUNTIME_DIST_WORLD_H_

#include <torch/types.h>

#include <chrono>
#include <functional>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "runtime/dist/world_spec.h"

namespace fjord::dist {

struct WorldOptions {
  // Bounds joining (every rank must arrive within it) and every collective.
  std::chrono::milliseconds timeout{std::chrono::minutes(5)};
  // "gloo" (CPU tensors) or "nccl" (CUDA tensors; only where fjord is built
  // with NCCL: World::HasNccl()). Empty: nccl for a CUDA device, else gloo.
  std::string backend;
  // The device collectives run on (the trainer's: cuda:<local rank> or cpu).
  torch::Device device{torch::kCPU};
};

class World {
 public:
  // Joins the world `spec` describes: rank 0 serves the rendezvous (a
  // TCPStore at master_addr:master_port), every rank registers, and each
  // waits until all have, naming the ranks still missing when the timeout
  // passes (DeadlineExceeded). Unavailable when the rendezvous cannot be
  // reached or served (port taken, host unknown); InvalidArgument for an
  // unknown backend or NCCL without CUDA. A world of more than one rank sets
  // SIGPIPE to ignored when it is at its default (so a peer that stops is
  // an error from the next collective, not a silent death by signal).
  static absl::StatusOr<std::unique_ptr<World>> Join(const WorldSpec& spec,
                                                     const WorldOptions& options);
  ~World();
  World(const World&) = delete;
  World& operator=(const World&) = delete;

  int rank() const { return spec_.rank; }
  int size() const { return spec_.world_size; }
  const WorldSpec& spec() const { return spec_; }
  const std::string& backend() const { return backend_; }
  bool is_main() const { return spec_.rank == 0; }

  // In place: `t` becomes the sum of every rank's `t` (same shape and dtype
  // on every rank, contiguous, on the world's device). `what` names the
  // call in errors ("the gradients of step 12").
  absl::Status AllReduceSum(torch::Tensor& t, const std::string& what);
  // A collective started and not yet waited for (StartAllReduceSum).
  class Pending {
   public:
    Pending();
    ~Pending();
    Pending(Pending&&) noexcept;
    Pending& operator=(Pending&&) noexcept;
    // Blocks until the collective is done (the tensor it was started on then
    // holds the result) or the world's timeout passes. Once only.
    absl::Status Wait();

   private:
    friend class World;
    struct Work;
    std::unique_ptr<Work> work_;
  };
  // AllReduceSum without waiting: the sum runs while the caller goes on
  // (gradients reduced during backward). `t` must not be touched until
  // Wait() returns. Collectives must be started in the same order on every
  // rank. A failure to start is returned by Wait().
  Pending StartAllReduceSum(torch::Tensor t, std::string what);
  // Every rank's `t` (the same shape and dtype on every rank), concatenated
  // along dim 0 in rank order, on t's device.
  absl::StatusOr<torch::Tensor> AllGather(const torch::Tensor& t, const std::string& what);
  // AllGather without waiting: the returned function waits (once) and
  // gives the result. `t` must not change until then; collectives must be
  // started in the same order on every rank.
  std::function<absl::StatusOr<torch::Tensor>()> StartAllGather(const torch::Tensor& t,
                                                                const std::string& what);
  // In place: every rank's `t` becomes rank `root`'s.
  absl::Status Broadcast(torch::Tensor& t, int root, const std::string& what);
  // Returns when every rank has called it.
  absl::Status Barrier(const std::string& what);

  // Whether this build has the NCCL backend (CUDA builds with NCCL headers).
  static bool HasNccl();

 private:
  struct Impl;
  World(WorldSpec spec, std::string backend, std::unique_ptr<Impl> impl);
  absl::Status Failed(const std::string& what, const std::string& error) const;
  torch::Tensor Staged(const torch::Tensor& t) const;

  WorldSpec spec_;
  std::string backend_;
  std::unique_ptr<Impl> impl_;
};

}  // namespace fjord::dist

#endif  // FJORD_RUNTIME_DIST_WORLD_H_

// Gloo's process group header needs USE_C10D_GLOO and gloo's own headers,
// which the torch wheel does not ship: Debian's libgloo-dev provides them.
// Only the constructor, the static device factories and the virtual
// collectives of ProcessGroupGloo are used here (all compiled inside
// libtorch_cpu), never its inline code that touches gloo's types, so the
// header version of Debian's gloo does not have to match the wheel's
// (world_test checks the calls work).
#ifndef USE_C10D_GLOO
#define USE_C10D_GLOO
#endif
#if FJORD_WITH_NCCL
// NCCL: c10d's header (with NCCL's, from the torch wheel's nvidia-nccl) and
// the CUDA toolkit's; the code is libtorch_cuda's.
#ifndef USE_C10D_NCCL
#define USE_C10D_NCCL
#endif
#ifndef USE_CUDA
#define USE_CUDA
#endif
#endif
#include "runtime/dist/world.h"

#if FJORD_WITH_NCCL
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>
#endif
#include <torch/csrc/distributed/c10d/HashStore.hpp>
#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>

#include <signal.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <exception>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace fjord::dist {

using Clock = std::chrono::steady_clock;

struct World::Impl {
  c10::intrusive_ptr<c10d::Store> store;
  c10::intrusive_ptr<c10d::Backend> backend;
  std::chrono::milliseconds timeout{0};
  torch::Device device{torch::kCPU};
};

namespace {

double Seconds(std::chrono::milliseconds ms) { return static_cast<double>(ms.count()) / 1000.0; }

bool IsLoopback(const std::string& host) {
  return host == "localhost" || absl::StartsWith(host, "127.") || host == "::1";
}

// The network device Gloo's connections use: the interface named by
// GLOO_SOCKET_IFNAME (as in PyTorch); loopback when the rendezvous is on
// this host's loopback (a single-node world); else the address this host's
// name resolves to.
std::shared_ptr<::gloo::transport::Device> GlooDevice(const WorldSpec& spec) {
  if (const char* ifname = std::getenv("GLOO_SOCKET_IFNAME"); ifname != nullptr && *ifname) {
    return c10d::ProcessGroupGloo::createDeviceForInterface(ifname);
  }
  if (IsLoopback(spec.master_addr)) {
    return c10d::ProcessGroupGloo::createDeviceForHostname("127.0.0.1");
  }
  return c10d::ProcessGroupGloo::createDefaultDevice();
}

}  // namespace

World::World(WorldSpec spec, std::string backend, std::unique_ptr<Impl> impl)
    : spec_(std::move(spec)), backend_(std::move(backend)), impl_(std::move(impl)) {}

World::~World() = default;

bool World::HasNccl() {
#if FJORD_WITH_NCCL
  return true;
#else
  return false;
#endif
}

namespace {

// The process group of `backend` on `store`.
c10::intrusive_ptr<c10d::Backend> MakeBackend(const std::string& backend,
                                              const c10::intrusive_ptr<c10d::Store>& store,
                                              const WorldSpec& spec, const WorldOptions& options) {
#if FJORD_WITH_NCCL
  if (backend == "nccl") {
    // Collectives block the caller until done, and fail after the timeout
    // (not only the watchdog's abort): a lost rank is an error, not a hang.
    ::setenv("TORCH_NCCL_BLOCKING_WAIT", "1", /*overwrite=*/0);
    auto opts = c10d::ProcessGroupNCCL::Options::create();
    opts->timeout = options.timeout;
    return c10::make_intrusive<c10d::ProcessGroupNCCL>(store, spec.rank, spec.world_size, opts);
  }
#endif
  // The options' timeout bounds connecting the ranks and every collective.
  auto opts = c10d::ProcessGroupGloo::Options::create(options.timeout);
  opts->devices.push_back(GlooDevice(spec));
  return c10::make_intrusive<c10d::ProcessGroupGloo>(store, spec.rank, spec.world_size, opts);
}

}  // namespace

absl::StatusOr<std::unique_ptr<World>> World::Join(const WorldSpec& spec,
                                                   const WorldOptions& options) {
  if (spec.world_size < 1 || spec.rank < 0 || spec.rank >= spec.world_size) {
    return absl::InvalidArgumentError(
        absl::StrCat("rank ", spec.rank, " of a world of ", spec.world_size));
  }
  std::string backend = options.backend;
  if (backend.empty()) backend = options.device.is_cuda() && HasNccl() ? "nccl" : "gloo";
  if (backend != "gloo" && backend != "nccl") {
    return absl::InvalidArgumentError(
        absl::StrCat("unknown distributed backend '", backend, "' (gloo or nccl)"));
  }
  if (backend == "nccl" && !HasNccl()) {
    return absl::InvalidArgumentError(
        "the nccl backend is not in this build of fjord (built without NCCL headers); use gloo");
  }
  auto impl = std::make_unique<Impl>();
  impl->timeout = options.timeout;
  impl->device = options.device;
  if (spec.world_size == 1) {
    // Nothing to talk to. A backend named explicitly still gets a process
    // group (on an in-process store): tests of the NCCL path on one GPU.
    if (!options.backend.empty()) {
      try {
        impl->store = c10::make_intrusive<c10d::HashStore>();
        impl->backend = MakeBackend(backend, impl->store, spec, options);
      } catch (const std::exception& e) {
        const std::string msg = e.what();
        return absl::UnavailableError(absl::StrCat(
            "cannot make a ", backend, " world of one: ", msg.substr(0, msg.find('\n'))));
      }
    }
    return std::unique_ptr<World>(new World(spec, backend, std::move(impl)));
  }

  // A rank that stops closes its sockets; the next write to one of them by
  // a survivor raises SIGPIPE, whose default action kills the survivor
  // silently (exit 141) before c10d can report the lost peer. Ignored, the
  // write fails with EPIPE and the collective returns the error below. A
  // handler the embedding program installed is left as it is.
  struct sigaction pipe_action {};
  if (::sigaction(SIGPIPE, nullptr, &pipe_action) == 0 && pipe_action.sa_handler == SIG_DFL) {
    ::signal(SIGPIPE, SIG_IGN);
  }

  const std::string where = absl::StrCat(spec.master_addr, ":", spec.master_port);
  const auto deadline = Clock::now() + options.timeout;
  // 1. The rendezvous: rank 0 serves the store, the others connect to it.
  try {
    c10d::TCPStoreOptions so;
    so.port = static_cast<std::uint16_t>(spec.master_port);
    so.isServer = spec.rank == 0;
    so.numWorkers = spec.world_size;
    so.waitWorkers = false;  // the wait below names the ranks that are missing
    so.timeout = options.timeout;
    impl->store = c10::make_intrusive<c10d::TCPStore>(spec.master_addr, so);
  } catch (const std::exception& e) {
    const std::string msg = e.what();
    if (spec.rank == 0) {
      return absl::UnavailableError(
          absl::StrCat("rank 0 cannot serve the rendezvous at ", where,
                       " (port taken? not this host's address?): ", msg.substr(0, msg.find('\n'))));
    }
    return absl::DeadlineExceededError(absl::StrCat(
        "rank ", spec.rank, " could not reach the rendezvous at ", where, " within ",
        Seconds(options.timeout), " s: is rank 0 running, and is ", where,
        " its address and port (MASTER_ADDR, MASTER_PORT)? ", msg.substr(0, msg.find('\n'))));
  }

  // 2. Every rank says it arrived; all wait for all. When the time is up,
  // rank 0 (which serves the store) names the missing ranks under a key the
  // others read, and waits a moment for them to read it before it leaves.
  std::vector<std::string> keys;
  for (int r = 0; r < spec.world_size; ++r) keys.push_back(absl::StrCat("fjord/joined/", r));
  const std::string failed_key = "fjord/join_failed";
  auto first_line = [](const std::string& m) { return m.substr(0, m.find('\n')); };
  try {
    impl->store->set(keys[spec.rank], std::vector<uint8_t>{'1'});
    while (!impl->store->check(keys)) {
      if (impl->store->check({failed_key})) {
        const std::vector<uint8_t> v = impl->store->get(failed_key);
        impl->store->set(absl::StrCat("fjord/join_failed_seen/", spec.rank),
                         std::vector<uint8_t>{'1'});
        return absl::DeadlineExceededError(
            absl::StrCat("rank ", spec.rank, ": ", std::string(v.begin(), v.end())));
      }
      if (spec.rank == 0 && Clock::now() >= deadline) {
        std::vector<int> missing, present;
        for (int r = 0; r < spec.world_size; ++r) {
          (impl->store->check({keys[r]}) ? present : missing).push_back(r);
        }
        const std::string why =
            absl::StrCat("rank", missing.size() > 1 ? "s " : " ", absl::StrJoin(missing, ", "),
                         " of ", spec.world_size, " did not join within ", Seconds(options.timeout),
                         " s (rendezvous ", where, ")");
        impl->store->set(failed_key, std::vector<uint8_t>(why.begin(), why.end()));
        const auto linger = Clock::now() + std::chrono::seconds(2);
        for (int r : present) {
          if (r == 0) continue;
          const std::string seen = absl::StrCat("fjord/join_failed_seen/", r);
          while (!impl->store->check({seen}) && Clock::now() < linger) {
            std::this_thread::sleep_for(std::chrono::milliseconds(10));
          }
        }
        return absl::DeadlineExceededError(absl::StrCat("rank 0: ", why));
      }
      if (spec.rank != 0 && Clock::now() >= deadline + std::chrono::seconds(5)) {
        return absl::DeadlineExceededError(
            absl::StrCat("rank ", spec.rank, ": the ranks did not all join within ",
                         Seconds(options.timeout), " s (rendezvous ", where, ")"));
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
  } catch (const std::exception& e) {
    return absl::UnavailableError(
        absl::StrCat("rank ", spec.rank, ": the rendezvous at ", where,
                     " failed while the ranks joined (rank 0 gone?): ", first_line(e.what())));
  }

  // 3. The process group, on its own prefix of the store.
  try {
    auto prefixed = c10::make_intrusive<c10d::PrefixStore>("fjord/pg", impl->store);
    impl->backend = MakeBackend(backend, prefixed, spec, options);
  } catch (const std::exception& e) {
    return absl::UnavailableError(absl::StrCat("rank ", spec.rank,
                                               ": cannot connect the ranks with ", backend, ": ",
                                               first_line(e.what())));
  }
  return std::unique_ptr<World>(new World(spec, backend, std::move(impl)));
}

absl::Status World::Failed(const std::string& what, const std::string& error) const {
  return absl::UnavailableError(absl::StrCat(
      "rank ", spec_.rank, " of ", spec_.world_size, ": ", what,
      " failed: another rank has stopped (failed, killed, or its node is down) or cannot be "
      "reached within ",
      Seconds(impl_->timeout), " s; its log says why. (", error.substr(0, error.find('\n')), ")"));
}

// The tensor a collective runs on: Gloo reduces CPU tensors (a CUDA tensor
// goes through a host copy), NCCL device tensors on the world's device.
torch::Tensor World::Staged(const torch::Tensor& t) const {
  if (backend_ == "nccl") return t.to(impl_->device).contiguous();
  return t.device().is_cpu() ? t.contiguous() : t.to(torch::kCPU).contiguous();
}

absl::Status World::AllReduceSum(torch::Tensor& t, const std::string& what) {
  return StartAllReduceSum(t, what).Wait();
}

struct World::Pending::Work {
  const World* world = nullptr;
  c10::intrusive_ptr<c10d::Work> work;
  torch::Tensor buf, target;
  std::string what;
  std::string start_error;  // set when the collective could not start
};

World::Pending::Pending() = default;
World::Pending::~Pending() = default;
World::Pending::Pending(Pending&&) noexcept = default;
World::Pending& World::Pending::operator=(Pending&&) noexcept = default;

absl::Status World::Pending::Wait() {
  if (work_ == nullptr) return absl::OkStatus();
  std::unique_ptr<Work> w = std::move(work_);
  if (!w->start_error.empty()) return w->world->Failed(w->what, w->start_error);
  if (w->work.get() == nullptr) return absl::OkStatus();
  try {
    w->work->wait(w->world->impl_->timeout);
    if (!w->buf.is_same(w->target)) w->target.copy_(w->buf);
  } catch (const std::exception& e) {
    return w->world->Failed(w->what, e.what());
  }
  return absl::OkStatus();
}

World::Pending World::StartAllReduceSum(torch::Tensor t, std::string what) {
  Pending p;
  p.work_ = std::make_unique<Pending::Work>();
  Pending::Work& w = *p.work_;
  w.world = this;
  w.what = std::move(what);
  w.target = std::move(t);
  if (impl_->backend.get() == nullptr) return p;
  try {
    w.buf = Staged(w.target);
    std::vector<at::Tensor> v{w.buf};
    c10d::AllreduceOptions opts;
    opts.reduceOp = c10d::ReduceOp::SUM;
    opts.timeout = impl_->timeout;
    w.work = impl_->backend->allreduce(v, opts);
  } catch (const std::exception& e) {
    w.start_error = e.what();
    if (w.start_error.empty()) w.start_error = "unknown error";
  }
  return p;
}

std::function<absl::StatusOr<torch::Tensor>()> World::StartAllGather(const torch::Tensor& t,
                                                                     const std::string& what) {
  if (impl_->backend.get() == nullptr) return [t]() -> absl::StatusOr<torch::Tensor> { return t; };
  struct Started {
    c10::intrusive_ptr<c10d::Work> work;
    torch::Tensor in, out;
    torch::Device device{torch::kCPU};
    std::string error;
  };
  auto s = std::make_shared<Started>();
  s->device = t.device();
  try {
    // Into one tensor of every rank's rows (no per-rank outputs to
    // concatenate: the gathered bytes are allocated once).
    s->in = Staged(t);
    std::vector<int64_t> shape = s->in.sizes().vec();
    if (shape.empty()) shape.push_back(1);
    shape[0] *= spec_.world_size;
    s->out = torch::empty(shape, s->in.options());
    c10d::AllgatherOptions opts;
    opts.timeout = impl_->timeout;
    s->work = impl_->backend->all_gather_single(s->out, s->in, opts);
  } catch (const std::exception& e) {
    s->error = e.what();
  }
  return [this, s, what]() -> absl::StatusOr<torch::Tensor> {
    if (!s->error.empty()) return Failed(what, s->error);
    try {
      s->work->wait(impl_->timeout);
      s->in = torch::Tensor();
      torch::Tensor out = std::move(s->out);
      return out.to(s->device);
    } catch (const std::exception& e) {
      return Failed(what, e.what());
    }
  };
}

absl::StatusOr<torch::Tensor> World::AllGather(const torch::Tensor& t, const std::string& what) {
  return StartAllGather(t, what)();
}

absl::Status World::Broadcast(torch::Tensor& t, int root, const std::string& what) {
  if (impl_->backend.get() == nullptr) return absl::OkStatus();
  try {
    torch::Tensor buf = Staged(t);
    std::vector<at::Tensor> v{buf};
    c10d::BroadcastOptions opts;
    opts.rootRank = root;
    opts.timeout = impl_->timeout;
    impl_->backend->broadcast(v, opts)->wait(impl_->timeout);
    if (!buf.is_same(t)) t.copy_(buf);
  } catch (const std::exception& e) {
    return Failed(what, e.what());
  }
  return absl::OkStatus();
}

absl::Status World::Barrier(const std::string& what) {
  if (impl_->backend.get() == nullptr) return absl::OkStatus();
  torch::Tensor one = torch::ones({1}, torch::kFloat32);
  return AllReduceSum(one, what);
}

}  // namespace fjord::dist

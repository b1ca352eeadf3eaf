// world_probe: one rank of a test world (world_test starts several): joins the world the
// environment describes (torchrun's or Slurm's variables) and runs
//   world_probe sum     all-reduce [r+1, 10(r+1)], broadcast [r] from the last
//                       rank, barrier; prints "sum A B" and "broadcast X"
//   world_probe leave   the rank in FJORD_PROBE_LEAVER exits right after
//                       joining; the others all-reduce (and must fail)
// FJORD_PROBE_TIMEOUT_MS bounds joining and each call (default 20000).
// Exit 0 on success, 3 with the error on stderr when a call fails.
#include <torch/types.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "runtime/dist/world.h"
#include "runtime/dist/world_spec.h"

namespace {

int Fail(const absl::Status& s) {
  std::fprintf(stderr, "%s\n", std::string(s.message()).c_str());
  return 3;
}

}  // namespace

int main(int argc, char** argv) {
  using fjord::dist::World;
  const std::string mode = argc > 1 ? argv[1] : "";
  auto spec = fjord::dist::WorldSpecFromEnv(fjord::dist::ProcessEnv());
  if (!spec.ok()) return Fail(spec.status());
  fjord::dist::WorldOptions options;
  const char* t = std::getenv("FJORD_PROBE_TIMEOUT_MS");
  options.timeout = std::chrono::milliseconds(t != nullptr ? std::atoi(t) : 20000);
  auto world = World::Join(spec->value_or(fjord::dist::WorldSpec{}), options);
  if (!world.ok()) return Fail(world.status());
  World& w = **world;
  if (mode == "sum") {
    torch::Tensor x = torch::tensor({1.0f * (w.rank() + 1), 10.0f * (w.rank() + 1)});
    if (auto s = w.AllReduceSum(x, "the probe's sum"); !s.ok()) return Fail(s);
    torch::Tensor b = torch::full({1}, static_cast<double>(w.rank()), torch::kFloat64);
    if (auto s = w.Broadcast(b, w.size() - 1, "the probe's broadcast"); !s.ok()) return Fail(s);
    if (auto s = w.Barrier("the probe's barrier"); !s.ok()) return Fail(s);
    std::printf("sum %g %g\nbroadcast %g\n", x[0].item<double>(), x[1].item<double>(),
                b[0].item<double>());
    return 0;
  }
  if (mode == "leave") {
    const char* leaver = std::getenv("FJORD_PROBE_LEAVER");
    if (leaver != nullptr && std::atoi(leaver) == w.rank()) return 0;
    torch::Tensor x = torch::ones({4});
    if (auto s = w.AllReduceSum(x, "the probe's sum"); !s.ok()) return Fail(s);
    std::printf("unexpected: the sum succeeded\n");
    return 0;
  }
  std::fprintf(stderr, "usage: world_probe sum|leave\n");
  return 2;
}

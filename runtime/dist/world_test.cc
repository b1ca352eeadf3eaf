// Real worlds of real processes (world_probe), on loopback, with Gloo: sums
// and broadcasts are right for 2 and 3 ranks; a rank that never arrives and
// a rank that leaves end the others' calls in clear errors within the
// timeout, never a hang. Every process is stopped and reaped by its PID.
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "runtime/util/net.h"

extern char** environ;

namespace {

using ::testing::HasSubstr;
using Clock = std::chrono::steady_clock;

// Bazel: in the runfiles; CMake: beside this test's binary.
std::string Probe() {
  const char* srcdir = std::getenv("TEST_SRCDIR");
  const char* workspace = std::getenv("TEST_WORKSPACE");
  if (srcdir != nullptr) {
    return std::string(srcdir) + "/" + (workspace ? workspace : "fjord") +
           "/runtime/dist/world_probe";
  }
  char self[4096] = {};
  const ssize_t n = ::readlink("/proc/self/exe", self, sizeof self - 1);
  std::string dir = n > 0 ? std::string(self, static_cast<size_t>(n)) : std::string("./x");
  return dir.substr(0, dir.rfind('/')) + "/world_probe";
}

struct Rank {
  pid_t pid = -1;
  std::string out, err;  // file paths
  int status = -1;
};

std::string Read(const std::string& path) {
  std::ifstream in(path);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

class WorldTest : public ::testing::Test {
 protected:
  void TearDown() override {
    for (Rank& r : ranks_) {
      if (r.pid > 0 && r.status == -1) {
        ::kill(r.pid, SIGKILL);
        ::waitpid(r.pid, nullptr, 0);
      }
    }
  }

  // Starts rank `rank` of `size` with the probe in `mode`.
  void Start(int rank, int size, int port, const std::string& mode,
             std::map<std::string, std::string> extra = {}) {
    Rank r;
    const std::string base = absl::StrCat(::testing::TempDir(), "/rank", rank, "_", port);
    r.out = base + ".out";
    r.err = base + ".err";
    std::map<std::string, std::string> vars = {
        {"RANK", std::to_string(rank)},       {"WORLD_SIZE", std::to_string(size)},
        {"LOCAL_RANK", std::to_string(rank)}, {"LOCAL_WORLD_SIZE", std::to_string(size)},
        {"MASTER_ADDR", "127.0.0.1"},         {"MASTER_PORT", std::to_string(port)},
        {"FJORD_PROBE_TIMEOUT_MS", "8000"},   {"OMP_NUM_THREADS", "1"}};
    for (auto& [k, v] : extra) vars[k] = v;
    std::vector<std::string> env;
    for (char** e = environ; *e != nullptr; ++e) {
      const std::string kv = *e;
      if (vars.count(kv.substr(0, kv.find('='))) == 0) env.push_back(kv);
    }
    for (auto& [k, v] : vars) env.push_back(k + "=" + v);
    std::vector<char*> envp;
    for (std::string& s : env) envp.push_back(s.data());
    envp.push_back(nullptr);
    std::string prog = Probe();
    std::vector<char*> argv = {prog.data(), const_cast<char*>(mode.c_str()), nullptr};
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 1, r.out.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
    posix_spawn_file_actions_addopen(&fa, 2, r.err.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
    ASSERT_EQ(posix_spawn(&r.pid, prog.c_str(), &fa, nullptr, argv.data(), envp.data()), 0);
    posix_spawn_file_actions_destroy(&fa);
    ranks_.push_back(r);
  }

  // Waits for every rank, at most `limit`; a rank still running then is
  // killed and the test fails (a hang).
  void WaitAll(std::chrono::seconds limit) {
    const auto deadline = Clock::now() + limit;
    for (Rank& r : ranks_) {
      while (r.status == -1) {
        int st = 0;
        const pid_t got = ::waitpid(r.pid, &st, WNOHANG);
        if (got == r.pid) {
          r.status = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
          break;
        }
        if (Clock::now() > deadline) {
          ADD_FAILURE() << "rank with pid " << r.pid << " still running after " << limit.count()
                        << " s (a hang)";
          ::kill(r.pid, SIGKILL);
          ::waitpid(r.pid, nullptr, 0);
          r.status = 137;
          break;
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
      }
    }
  }

  std::vector<Rank> ranks_;
};

TEST_F(WorldTest, TwoAndThreeRanksSumAndBroadcast) {
  for (int size : {2, 3}) {
    ranks_.clear();
    const int port = fjord::FreeLoopbackPort();
    for (int r = 0; r < size; ++r) Start(r, size, port, "sum");
    WaitAll(std::chrono::seconds(60));
    // sum over r of (r+1) and 10(r+1); the last rank's id broadcast.
    const int s = size * (size + 1) / 2;
    for (const Rank& r : ranks_) {
      EXPECT_EQ(r.status, 0) << Read(r.err);
      EXPECT_EQ(Read(r.out), absl::StrCat("sum ", s, " ", 10 * s, "\nbroadcast ", size - 1, "\n"))
          << "world of " << size;
    }
  }
}

TEST_F(WorldTest, ARankThatNeverArrivesIsNamedWithinTheTimeout) {
  const int port = fjord::FreeLoopbackPort();
  const auto t0 = Clock::now();
  Start(0, 3, port, "sum", {{"FJORD_PROBE_TIMEOUT_MS", "2000"}});
  Start(2, 3, port, "sum", {{"FJORD_PROBE_TIMEOUT_MS", "2000"}});
  WaitAll(std::chrono::seconds(30));
  const double s = std::chrono::duration<double>(Clock::now() - t0).count();
  EXPECT_LT(s, 15.0);
  for (const Rank& r : ranks_) {
    EXPECT_EQ(r.status, 3);
    EXPECT_THAT(Read(r.err), HasSubstr("rank 1 of 3 did not join within 2 s"));
  }
}

TEST_F(WorldTest, WithoutRankZeroTheOthersSayTheRendezvousIsUnreachable) {
  const int port = fjord::FreeLoopbackPort();
  Start(1, 2, port, "sum", {{"FJORD_PROBE_TIMEOUT_MS", "2000"}});
  WaitAll(std::chrono::seconds(30));
  EXPECT_EQ(ranks_[0].status, 3);
  EXPECT_THAT(Read(ranks_[0].err),
              HasSubstr(absl::StrCat("rank 1 could not reach the rendezvous at 127.0.0.1:", port)));
}

TEST_F(WorldTest, ARankThatLeavesFailsTheOthersCallsWithinTheTimeout) {
  const int port = fjord::FreeLoopbackPort();
  const auto t0 = Clock::now();
  for (int r = 0; r < 3; ++r) {
    Start(r, 3, port, "leave", {{"FJORD_PROBE_LEAVER", "1"}, {"FJORD_PROBE_TIMEOUT_MS", "3000"}});
  }
  WaitAll(std::chrono::seconds(30));
  const double s = std::chrono::duration<double>(Clock::now() - t0).count();
  EXPECT_LT(s, 20.0);
  EXPECT_EQ(ranks_[1].status, 0);
  for (int r : {0, 2}) {
    EXPECT_EQ(ranks_[r].status, 3) << Read(ranks_[r].out);
    EXPECT_THAT(Read(ranks_[r].err),
                HasSubstr(absl::StrCat("rank ", r,
                                       " of 3: the probe's sum failed: another rank "
                                       "has stopped")));
  }
}

}  // namespace

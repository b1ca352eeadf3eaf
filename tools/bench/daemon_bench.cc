// Request latency of fjordd over CURVE on loopback: C clients (one thread and
// one connection each) send R requests each, back to back, against a real
// fjordd (the integration harness's setup, fake worker), and the program
// prints p50/p90/p99/max latency and throughput per request kind.
//
//   bazel run -c opt //tools/bench:daemon_bench -- [--clients 100] [--requests 100]
//
// Bounded (C x R requests), loopback only; it stops the daemon when done.
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "tests/integration/daemon_harness.h"

namespace {

double Percentile(std::vector<double>& v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const size_t i = std::min(v.size() - 1, static_cast<size_t>(p * static_cast<double>(v.size())));
  return v[i];
}

}  // namespace

int main(int argc, char** argv) {
  int clients = 100, requests = 100;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string a = argv[i];
    if (a == "--clients")
      clients = std::atoi(argv[i + 1]);
    else if (a == "--requests")
      requests = std::atoi(argv[i + 1]);
  }
  fjord::testing::DaemonHarness h;
  h.Start();
  std::string job_id;
  {
    auto acme = h.Acme();
    fjord::protocol::JobSpec spec = fjord::testing::SpecWithData(
        *acme, fjord::testing::FakeData(R"({"steps": 2, "step_ms": 5})"));
    auto job = acme->CreateJob(spec);
    if (!job.ok()) {
      std::fprintf(stderr, "create failed: %s\n", std::string(job.status().message()).c_str());
      return 1;
    }
    job_id = job->id;
    (void)h.WaitForFinal(*acme, job_id);
  }
  std::mutex mu;
  std::map<std::string, std::vector<double>> latency_ms;
  std::atomic<int> errors{0};
  const auto t0 = std::chrono::steady_clock::now();
  std::vector<std::thread> threads;
  for (int t = 0; t < clients; ++t) {
    threads.emplace_back([&, t] {
      auto c = h.Connect(h.acme_keys(), 30000, 0);
      std::map<std::string, std::vector<double>> mine;
      for (int i = 0; i < requests; ++i) {
        const char* kind = i % 3 == 0 ? "ping" : i % 3 == 1 ? "job.get" : "job.list";
        const auto s0 = std::chrono::steady_clock::now();
        absl::Status s = i % 3 == 0   ? c->Ping().status()
                         : i % 3 == 1 ? c->GetJob(job_id).status()
                                      : c->ListJobs().status();
        const double ms =
            std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - s0)
                .count();
        if (!s.ok()) ++errors;
        mine[kind].push_back(ms);
        mine["all"].push_back(ms);
      }
      std::lock_guard<std::mutex> l(mu);
      for (auto& [k, v] : mine) latency_ms[k].insert(latency_ms[k].end(), v.begin(), v.end());
    });
  }
  for (std::thread& t : threads) t.join();
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::printf("clients=%d requests/client=%d total=%d errors=%d wall=%.2fs throughput=%.0f req/s\n",
              clients, requests, clients * requests, errors.load(), secs,
              clients * requests / secs);
  std::printf(
      "| request | count | p50 ms | p90 ms | p99 ms | max ms |\n|---|---|---|---|---|---|\n");
  for (auto& [k, v] : latency_ms) {
    const size_t n = v.size();
    std::printf("| %s | %zu | %.2f | %.2f | %.2f | %.2f |\n", k.c_str(), n, Percentile(v, 0.50),
                Percentile(v, 0.90), Percentile(v, 0.99), Percentile(v, 1.0));
  }
  h.Terminate();
  return errors.load() == 0 ? 0 : 1;
}

// The daemon's Prometheus metrics: a small registry of counters, gauges and
// one latency histogram, rendered in the text exposition format (0.0.4), and
// an HTTP exporter (cpp-httplib) serving GET /metrics and GET /healthz.
//
// Thread-safe: the server loop updates, the HTTP thread renders.
#ifndef FJORD_DAEMON_METRICS_METRICS_H_
#define FJORD_DAEMON_METRICS_METRICS_H_

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"

namespace httplib {
class Server;
}

namespace fjord::daemon {

class Metrics {
 public:
  Metrics();
  // name{labels} += v. `labels` is the inside of the braces: command="job.get".
  void Add(const std::string& name, const std::string& labels, double v = 1);
  void Set(const std::string& name, const std::string& labels, double v);
  // Request latency histogram (fjord_request_duration_seconds) by command.
  void ObserveLatency(const std::string& command, double seconds);
  // Called at each render to refresh gauges that are read, not pushed
  // (GPU memory from NVML).
  void SetCollector(std::function<void(Metrics&)> collect);
  std::string Render();
  // "" when healthy (GET /healthz answers 200 "ok"); otherwise why not (503
  // with this text), e.g. the storage root is missing or read-only.
  void SetHealthProblem(const std::string& problem);
  std::string HealthProblem();

 private:
  struct Histogram {
    std::vector<uint64_t> buckets;
    uint64_t count = 0;
    double sum = 0;
  };
  std::mutex mu_;
  std::map<std::string, std::string> help_;  // name -> "TYPE help"
  std::map<std::string, std::map<std::string, double>> values_;
  std::map<std::string, Histogram> latency_;
  std::vector<double> bounds_;
  std::function<void(Metrics&)> collect_;
  std::string health_problem_;
};

class MetricsHttpServer {
 public:
  // Listens on "HOST:PORT" (port 0: any free one) and serves /metrics and
  // /healthz. With a non-empty `bearer_token`, /metrics answers only a
  // request with "Authorization: Bearer <token>" (401 otherwise); /healthz,
  // which shows no data, stays open for load balancers and probes.
  static absl::StatusOr<std::unique_ptr<MetricsHttpServer>> Start(const std::string& listen,
                                                                  Metrics* metrics,
                                                                  std::string bearer_token = "");
  ~MetricsHttpServer();
  int port() const { return port_; }

 private:
  MetricsHttpServer() = default;
  std::unique_ptr<httplib::Server> server_;
  std::thread thread_;
  int port_ = 0;
};

}  // namespace fjord::daemon

#endif  // FJORD_DAEMON_METRICS_METRICS_H_

#include "daemon/metrics/metrics.h"

#include <httplib.h>
#include <sodium.h>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace fjord::daemon {

namespace {
struct MetricInfo {
  const char* name;
  const char* type;
  const char* help;
};
constexpr MetricInfo kInfo[] = {
    {"fjord_queue_depth", "gauge", "Jobs waiting to run (queued and requeued)."},
    {"fjord_running_jobs", "gauge", "Jobs with a training worker (running, pausing, cancelling)."},
    {"fjord_validating_jobs", "gauge", "Jobs whose data is being validated."},
    {"fjord_jobs_finished_total", "counter", "Jobs that reached a final status, by status."},
    {"fjord_jobs_accepted_total", "counter", "Jobs accepted by job.create."},
    {"fjord_tokens_trained_total", "counter", "Tokens that carried loss, over all jobs."},
    {"fjord_worker_restarts_total", "counter", "Jobs requeued after a worker or node failure."},
    {"fjord_requests_total", "counter", "Requests answered, by command and status code."},
    {"fjord_jobs_paused_over_quota_total", "counter",
     "Running jobs paused because their tenant went past its storage quota."},
    {"fjord_key_reloads_total", "counter", "Keys file reloads on SIGHUP, by result (ok, error)."},
    {"fjord_peers", "gauge", "Client peers the daemon tracks."},
    {"fjord_peers_refused_total", "counter",
     "New connections refused by limits.max_peers, admin_reserved_peers or max_peers_per_key."},
    {"fjord_handshakes_refused_total", "counter",
     "CURVE handshakes refused (unknown client key or mechanism)."},
    {"fjord_validators_running", "gauge",
     "Validators (fjord-train validate) running, at most scheduler.max_validators."},
    {"fjord_storage_available", "gauge",
     "1 while the storage root is a writable directory, else 0."},
    {"fjord_gpu_memory_used_bytes", "gauge", "GPU memory in use (NVML), by GPU index."},
    {"fjord_gpu_energy_joules_total", "counter", "GPU energy drawn by finished job runs (NVML)."},
    {"fjord_request_duration_seconds", "histogram",
     "Time from receiving a request to sending its reply."},
};
}  // namespace

Metrics::Metrics() {
  bounds_ = {0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025,
             0.05,   0.1,     0.25,   0.5,   1,      2.5,   5};
  for (const MetricInfo& m : kInfo) help_[m.name] = absl::StrCat(m.type, " ", m.help);
}

void Metrics::Add(const std::string& name, const std::string& labels, double v) {
  std::lock_guard<std::mutex> l(mu_);
  values_[name][labels] += v;
}

void Metrics::Set(const std::string& name, const std::string& labels, double v) {
  std::lock_guard<std::mutex> l(mu_);
  values_[name][labels] = v;
}

void Metrics::SetHealthProblem(const std::string& problem) {
  std::lock_guard<std::mutex> l(mu_);
  health_problem_ = problem;
}

std::string Metrics::HealthProblem() {
  std::lock_guard<std::mutex> l(mu_);
  return health_problem_;
}

void Metrics::ObserveLatency(const std::string& command, double seconds) {
  std::lock_guard<std::mutex> l(mu_);
  Histogram& h = latency_[command];
  if (h.buckets.empty()) h.buckets.assign(bounds_.size(), 0);
  for (size_t i = 0; i < bounds_.size(); ++i) {
    if (seconds <= bounds_[i]) ++h.buckets[i];
  }
  ++h.count;
  h.sum += seconds;
}

void Metrics::SetCollector(std::function<void(Metrics&)> collect) {
  std::lock_guard<std::mutex> l(mu_);
  collect_ = std::move(collect);
}

std::string Metrics::Render() {
  std::function<void(Metrics&)> collect;
  {
    std::lock_guard<std::mutex> l(mu_);
    collect = collect_;
  }
  if (collect) collect(*this);
  std::lock_guard<std::mutex> l(mu_);
  std::string out;
  auto header = [&](const std::string& name) {
    auto it = help_.find(name);
    if (it == help_.end()) return;
    const size_t sp = it->second.find(' ');
    absl::StrAppend(&out, "# HELP ", name, " ", it->second.substr(sp + 1), "\n# TYPE ", name, " ",
                    it->second.substr(0, sp), "\n");
  };
  for (const auto& [name, series] : values_) {
    header(name);
    for (const auto& [labels, v] : series) {
      absl::StrAppend(&out, name, labels.empty() ? "" : absl::StrCat("{", labels, "}"), " ",
                      absl::StrFormat("%.17g", v), "\n");
    }
  }
  const std::string h = "fjord_request_duration_seconds";
  header(h);
  for (const auto& [command, hist] : latency_) {
    for (size_t i = 0; i < bounds_.size(); ++i) {
      absl::StrAppend(&out, h, "_bucket{command=\"", command, "\",le=\"",
                      absl::StrFormat("%g", bounds_[i]), "\"} ", hist.buckets[i], "\n");
    }
    absl::StrAppend(&out, h, "_bucket{command=\"", command, "\",le=\"+Inf\"} ", hist.count, "\n");
    absl::StrAppend(&out, h, "_sum{command=\"", command, "\"} ", absl::StrFormat("%.9g", hist.sum),
                    "\n");
    absl::StrAppend(&out, h, "_count{command=\"", command, "\"} ", hist.count, "\n");
  }
  return out;
}

absl::StatusOr<std::unique_ptr<MetricsHttpServer>> MetricsHttpServer::Start(
    const std::string& listen, Metrics* metrics, std::string bearer_token) {
  const size_t colon = listen.rfind(':');
  int port = 0;
  if (colon == std::string::npos || !absl::SimpleAtoi(listen.substr(colon + 1), &port) ||
      port < 0 || port > 65535) {
    return absl::InvalidArgumentError(
        absl::StrCat("metrics.listen must be HOST:PORT, got '", listen, "'"));
  }
  std::string host = listen.substr(0, colon);
  if (host.size() > 2 && host.front() == '[' && host.back() == ']')
    host = host.substr(1, host.size() - 2);
  std::unique_ptr<MetricsHttpServer> s(new MetricsHttpServer());
  s->server_ = std::make_unique<httplib::Server>();
  s->server_->Get("/metrics", [metrics,
                               expected = bearer_token.empty() ? "" : "Bearer " + bearer_token](
                                  const httplib::Request& req, httplib::Response& res) {
    // libsodium's comparison takes the same time wherever the strings differ.
    const std::string given = req.get_header_value("Authorization");
    if (!expected.empty() && (given.size() != expected.size() ||
                              sodium_memcmp(given.data(), expected.data(), expected.size()) != 0)) {
      res.status = 401;
      res.set_header("WWW-Authenticate", "Bearer realm=\"fjordd metrics\"");
      res.set_content("a bearer token is required (metrics.bearer_token_file)\n", "text/plain");
      return;
    }
    res.set_content(metrics->Render(), "text/plain; version=0.0.4");
  });
  s->server_->Get("/healthz", [metrics](const httplib::Request&, httplib::Response& res) {
    const std::string problem = metrics->HealthProblem();
    if (problem.empty()) {
      res.set_content("ok\n", "text/plain");
    } else {
      res.status = 503;
      res.set_content(problem + "\n", "text/plain");
    }
  });
  if (port == 0) {
    s->port_ = s->server_->bind_to_any_port(host.c_str());
  } else {
    s->port_ = s->server_->bind_to_port(host.c_str(), port) ? port : -1;
  }
  if (s->port_ <= 0) {
    return absl::UnavailableError(absl::StrCat("metrics: cannot listen on ", listen));
  }
  s->thread_ = std::thread([srv = s->server_.get()] { srv->listen_after_bind(); });
  return s;
}

MetricsHttpServer::~MetricsHttpServer() {
  if (server_) server_->stop();
  if (thread_.joinable()) thread_.join();
}

}  // namespace fjord::daemon

// fjord-train: runs one LoRA fine-tuning job in this process.
//
//   fjord-train --config job.yaml [--set section.field=value]... [--no-resume]
//               [--events FILE|-] [--report ENDPOINT [--report-keys FILE]]
//               [--progress auto|bar|lines|none] [--nproc-per-node N] [--dist-timeout SECONDS]
//               [--bucket-mb MB]
//   fjord-train validate --config job.yaml    (config + data checks only: the training,
//               validation and held-out files; JSON report)
//   fjord-train export --model DIR --adapter DIR --out DIR [--dtype auto|float32|bfloat16|float16]
//               (the base model with the adapter merged in, as a Hugging Face checkpoint)
//
// The daemon launches one fjord-train per job (--report points at its ipc
// socket: the worker protocol of docs/protocol.md §10, JSON events and
// heartbeats over a ZeroMQ PUSH socket, encoded by
// daemon/protocol/worker_protocol.h; --events writes the same lines). Under
// fjordd's Slurm executor --report is a tcp:// endpoint on fjordd's host and
// --report-keys names the job's CURVE keys (server_public_key=, public_key=,
// secret_key= lines, in the job's private directory).
// SIGTERM or SIGINT: checkpoint after the current step, then exit 75.
//
// Data-parallel training (runtime/dist): under a launcher that sets
// torchrun's variables (RANK, WORLD_SIZE, MASTER_ADDR, ...) or Slurm's
// (srun: SLURM_PROCID, ...), fjord-train is one rank of the job's world;
// --nproc-per-node N makes it the launcher of N local ranks itself (a free
// loopback port, the variables, the group stopped together: runtime/dist/
// launcher.h). Rank 0 alone writes events, reports and checkpoints.
// --dist-timeout bounds joining and each collective (default 300 s).
// --bucket-mb sizes the buckets of the gradients' all-reduce, which start
// while backward runs (default 25; 0: one all-reduce after backward).
//
// Exit codes (protocol::kWorkerExit*): 0 done; 2 bad config or data (the
// user's to fix); 3 system error (I/O, out of memory, internal); 75 stopped on
// request after a checkpoint (resume by running the same command again).
#include <signal.h>
#include <sys/prctl.h>
#include <unistd.h>

#include <torch/cuda.h>
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <thread>
#include <vector>
#include <zmq.hpp>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "daemon/protocol/worker_protocol.h"
#include "lora/compare.h"
#include "lora/export.h"
#include "lora/job_config.h"
#include "lora/lora_method.h"
#include "runtime/data/dataset.h"
#include "runtime/data/heldout.h"
#include "runtime/data/model_template.h"
#include "runtime/data/preference.h"
#include "runtime/data/tokenizer_adapter.h"
#include "runtime/dist/launcher.h"
#include "runtime/dist/world.h"
#include "runtime/dist/world_spec.h"
#include "runtime/tokenizer/tokenizer.h"
#include "runtime/train/trainer.h"
#include "runtime/util/env.h"
#include "runtime/util/status_macros.h"

namespace fjord {
namespace {

using protocol::kWorkerExitOk;
using protocol::kWorkerExitStopped;
using protocol::kWorkerExitSystemError;
using protocol::kWorkerExitUserError;
using protocol::WorkerExitCodeFor;

std::atomic<bool> g_stop{false};

void OnSignal(int) { g_stop.store(true); }

// The worker protocol's message for a trainer event (runtime/ knows nothing
// of the daemon: the mapping lives here).
protocol::WorkerMessage ToWorkerMessage(const train::TrainEvent& e) {
  using T = train::TrainEvent::Type;
  protocol::WorkerMessage m;
  m.step = e.step;
  m.total_steps = e.total_steps;
  switch (e.type) {
    case T::kStart:
      m.payload = protocol::WorkerStart{e.message};
      break;
    case T::kStep: {
      protocol::WorkerStep s;
      s.epoch = e.epoch;
      s.loss = e.loss;
      s.lr = e.lr;
      s.grad_norm = e.grad_norm;
      s.tokens_per_s = e.tokens_per_s;
      s.eta_s = e.eta_s;
      s.trained_tokens = e.trained_tokens;
      s.peak_memory_bytes = e.peak_memory_bytes;
      m.payload = s;
      break;
    }
    case T::kEval: {
      // -1: not measured (no validation data; the held-out accuracy outside
      // step 0). A NaN loss is sent, as null.
      protocol::WorkerEval ev;
      if (!(e.eval_loss < 0)) ev.eval_loss = e.eval_loss;
      if (!(e.eval_token_accuracy < 0)) ev.eval_token_accuracy = e.eval_token_accuracy;
      if (e.heldout_accuracy >= 0) ev.heldout_accuracy = e.heldout_accuracy;
      m.payload = ev;
      break;
    }
    case T::kCheckpoint:
      m.payload = protocol::WorkerCheckpoint{e.message};
      break;
    case T::kLog:
      m.payload = protocol::WorkerLog{e.message};
      break;
    case T::kDone:
      m.payload = protocol::WorkerDone{e.eval_loss, e.heldout_accuracy, e.message};
      break;
  }
  // Preference methods: TRL's metric names ("rewards/accuracies", ...) as
  // extra members of step and eval messages (the protocol keeps them).
  for (const auto& [name, value] : e.metrics) m.extra[name] = value;
  return m;
}

std::string Duration(double s) {
  if (!std::isfinite(s) || s < 0) return "?";
  const int64_t t = static_cast<int64_t>(s + 0.5);
  if (t >= 3600) return absl::StrFormat("%dh%02dm", t / 3600, (t / 60) % 60);
  if (t >= 60) return absl::StrFormat("%dm%02ds", t / 60, t % 60);
  return absl::StrFormat("%ds", t);
}

// Renders trainer events for people: a one-line bar on a terminal, a line
// every few percent otherwise.
class Progress {
 public:
  enum class Mode { kBar, kLines, kNone };
  explicit Progress(Mode mode) : mode_(mode) {}

  void On(const train::TrainEvent& e) {
    using T = train::TrainEvent::Type;
    // kNone drops the progress display, not the log (warnings, resume notes).
    if (mode_ == Mode::kNone && e.type != T::kLog) return;
    switch (e.type) {
      case T::kStart:
        Line(absl::StrCat("fjord-train: ", e.message));
        break;
      case T::kLog:
        Line(e.message);
        break;
      case T::kEval: {
        std::string line = absl::StrFormat("eval  step %d/%d", e.step, e.total_steps);
        if (!(e.eval_loss < 0)) {  // -1: no validation data
          last_eval_ = e.eval_loss;
          absl::StrAppend(&line, absl::StrFormat("  loss %.4f", e.eval_loss));
          if (e.eval_token_accuracy >= 0) {
            absl::StrAppend(
                &line, absl::StrFormat("  token accuracy %.1f%%", 100 * e.eval_token_accuracy));
          }
        }
        if (e.heldout_accuracy >= 0) {
          absl::StrAppend(&line,
                          absl::StrFormat("  held-out answers %.1f%%", 100 * e.heldout_accuracy));
        }
        for (const auto& [name, value] : e.metrics) {
          if (name == "eval_rewards/accuracies") {
            absl::StrAppend(&line, absl::StrFormat("  reward accuracy %.1f%%", 100 * value));
          }
        }
        Line(line);
        break;
      }
      case T::kCheckpoint:
        Line(absl::StrCat("checkpoint ", e.message));
        break;
      case T::kStep: {
        std::string stats = absl::StrFormat(
            "step %d/%d  loss %.4f%s  lr %.2e  %.0f tok/s  ETA %s", e.step, e.total_steps, e.loss,
            last_eval_ >= 0 ? absl::StrFormat("  eval %.4f", last_eval_) : "", e.lr, e.tokens_per_s,
            Duration(e.eta_s));
        for (const auto& [name, value] : e.metrics) {
          if (name == "rewards/accuracies") absl::StrAppend(&stats, "  reward acc ", value);
        }
        if (mode_ == Mode::kBar) {
          const int width = 24;
          const int filled =
              e.total_steps > 0 ? static_cast<int>(width * e.step / e.total_steps) : 0;
          std::string bar(filled, '#');
          bar.resize(width, '.');
          std::fprintf(stderr, "\r[%s] %s\033[K", bar.c_str(), stats.c_str());
          bar_open_ = true;
        } else {
          const int64_t every = std::max<int64_t>(1, e.total_steps / 20);
          if (e.step % every == 0 || e.step == e.total_steps || e.step == 1) Line(stats);
        }
        break;
      }
      case T::kDone:
        Line(absl::StrCat("done: adapter at ", e.message));
        break;
    }
  }

 private:
  void Line(const std::string& s) {
    if (bar_open_) std::fputc('\n', stderr);
    bar_open_ = false;
    std::fprintf(stderr, "%s\n", s.c_str());
  }
  Mode mode_;
  bool bar_open_ = false;
  double last_eval_ = -1;
};

// Sends events and heartbeats to the daemon over a ZeroMQ PUSH socket.
// --report-keys: the CURVE keys a job reports over the network with.
struct ReportKeys {
  std::string server_public_key, public_key, secret_key;
};

absl::StatusOr<ReportKeys> LoadReportKeys(const std::string& path) {
  std::ifstream in(path);
  if (!in) return absl::NotFoundError(absl::StrCat("--report-keys: cannot read ", path));
  ReportKeys k;
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty() || line[0] == '#') continue;
    const size_t eq = line.find('=');
    if (eq == std::string::npos) continue;
    const std::string key = line.substr(0, eq), value = line.substr(eq + 1);
    if (key == "server_public_key") k.server_public_key = value;
    if (key == "public_key") k.public_key = value;
    if (key == "secret_key") k.secret_key = value;
  }
  for (const std::string* v : {&k.server_public_key, &k.public_key, &k.secret_key}) {
    if (v->size() != 40) {
      return absl::InvalidArgumentError(absl::StrCat(
          "--report-keys: ", path,
          " needs server_public_key=, public_key= and secret_key= lines of 40 Z85 characters"));
    }
  }
  return k;
}

class Reporter {
 public:
  Reporter(const std::string& endpoint, const std::optional<ReportKeys>& keys)
      : socket_(context_, zmq::socket_type::push) {
    socket_.set(zmq::sockopt::linger, 2000);
    socket_.set(zmq::sockopt::sndhwm, 10000);
    if (keys) {
      socket_.set(zmq::sockopt::curve_serverkey, keys->server_public_key);
      socket_.set(zmq::sockopt::curve_publickey, keys->public_key);
      socket_.set(zmq::sockopt::curve_secretkey, keys->secret_key);
    }
    socket_.connect(endpoint);
    heartbeat_ = std::thread([this] {
      while (!done_.load()) {
        protocol::WorkerMessage beat;
        beat.payload = protocol::WorkerHeartbeat{::getpid()};
        Send(protocol::EncodeWorkerMessage(beat));
        for (int64_t ms = 0; ms < protocol::kWorkerHeartbeatIntervalMs && !done_.load();
             ms += 100) {
          std::this_thread::sleep_for(std::chrono::milliseconds(100));
        }
      }
    });
  }
  ~Reporter() {
    done_.store(true);
    heartbeat_.join();
  }
  // One encoded worker message (protocol::EncodeWorkerMessage).
  void Send(const std::string& message) {
    std::lock_guard<std::mutex> lock(mu_);
    socket_.send(zmq::buffer(message), zmq::send_flags::dontwait);
  }

 private:
  zmq::context_t context_;
  std::mutex mu_;
  zmq::socket_t socket_;
  std::atomic<bool> done_{false};
  std::thread heartbeat_;
};

void Usage() {
  std::fprintf(stderr,
               "usage: fjord-train --config JOB.yaml [--set section.field=value]... [--no-resume] "
               "[--stop-after-steps N]\n"
               "                   [--events FILE|-] [--report ENDPOINT [--report-keys FILE]]\n"
               "                   [--progress auto|bar|lines|none]\n"
               "                   [--nproc-per-node N] [--dist-timeout SECONDS] [--bucket-mb MB]\n"
               "       fjord-train validate --config JOB.yaml [--set ...]\n"
               "       fjord-train export --model DIR --adapter DIR --out DIR [--dtype "
               "auto|float32|bfloat16|float16]\n");
}

int Validate(const lora::JobConfig& cfg) {
  const std::string tok_path =
      cfg.data.tokenizer.empty() ? cfg.model.path + "/tokenizer.json" : cfg.data.tokenizer;
  absl::StatusOr<std::unique_ptr<tokenizer::Tokenizer>> tok =
      tokenizer::Tokenizer::FromFile(tok_path);
  if (!tok.ok()) {
    std::printf("{\"valid\": false, \"error\": %s}\n",
                nlohmann::json(std::string(tok.status().message())).dump().c_str());
    return WorkerExitCodeFor(tok.status());
  }
  data::TokenizerAdapter adapter(**tok);
  data::DataOptions dopt;
  // auto / model read the model's own chat template from its folder.
  absl::Status tmpl =
      data::ResolveChatTemplate(cfg.data.chat_template, cfg.model.path, &dopt.render);
  if (!tmpl.ok()) {
    std::printf("{\"valid\": false, \"error\": %s}\n",
                nlohmann::json(std::string(tmpl.message())).dump().c_str());
    return kWorkerExitUserError;
  }
  dopt.render.train_on_inputs = cfg.data.train_on_inputs;
  dopt.max_length = cfg.data.max_length;
  dopt.truncate = cfg.data.truncate;
  nlohmann::json out = {{"valid", true}};
  // Preference methods read preference pairs (runtime/data/preference.h).
  data::PreferenceOptions popt;
  popt.render = dopt.render;
  popt.max_length = cfg.data.max_length;
  popt.truncate = cfg.data.truncate;
  for (const auto& [name, path] : {std::pair<std::string, std::string>{"train", cfg.data.train},
                                   {"validation", cfg.data.validation}}) {
    if (path.empty()) continue;
    if (cfg.training.method != "sft") {
      absl::StatusOr<data::PreferenceReport> r = data::ValidatePreferenceJsonl(path, adapter, popt);
      if (!r.ok()) {
        out["valid"] = false;
        out[name] = {{"error", std::string(r.status().message())}};
        continue;
      }
      out[name] = nlohmann::json::parse(r->ToJson());
      if (!r->ok()) out["valid"] = false;
      continue;
    }
    absl::StatusOr<data::ValidationReport> r = data::ValidateJsonl(path, adapter, dopt);
    if (!r.ok()) {
      out["valid"] = false;
      out[name] = {{"error", std::string(r.status().message())}};
      continue;
    }
    out[name] = nlohmann::json::parse(r->ToJson());
    if (!r->ok()) out["valid"] = false;
  }
  // The held-out prompts (eval.heldout): {"prompt", "answer"} lines.
  if (!cfg.eval.heldout.empty()) {
    absl::StatusOr<data::HeldoutReport> r = data::ValidateHeldoutJsonl(cfg.eval.heldout);
    if (!r.ok()) {
      out["valid"] = false;
      out["heldout"] = {{"error", std::string(r.status().message())}};
    } else {
      out["heldout"] = nlohmann::json::parse(r->ToJson());
      if (!r->ok()) out["valid"] = false;
    }
  }
  std::printf("%s\n", out.dump(2).c_str());
  return out["valid"].get<bool>() ? kWorkerExitOk : kWorkerExitUserError;
}

// An evaluation job (lora/compare.h): `validate` checks its datasets line by
// line, its models and adapters; a run compares the candidates, reporting a
// "log" message with step/total_steps after each pass, and writes
// <output_dir>/report/ (report.json, report.html). SIGTERM/SIGINT: exit 75
// between batches (a later run starts again; the passes are deterministic).
int Evaluate(const std::string& text, const std::string& path, bool validate,
             const std::string& events_path, const std::string& report_endpoint,
             const std::string& report_keys_path) {
  absl::StatusOr<lora::EvaluationConfig> cfg = lora::ParseEvaluationConfig(text, path);
  if (!cfg.ok()) {
    if (validate) {
      std::printf("{\"valid\": false, \"error\": %s}\n",
                  nlohmann::json(std::string(cfg.status().message())).dump().c_str());
    }
    std::fprintf(stderr, "fjord-train: %s\n", std::string(cfg.status().message()).c_str());
    return kWorkerExitUserError;
  }
  if (validate) {
    const nlohmann::json report = lora::ValidateEvaluation(*cfg);
    std::printf("%s\n", report.dump(2).c_str());
    return report["valid"].get<bool>() ? kWorkerExitOk : kWorkerExitUserError;
  }
  std::unique_ptr<Reporter> reporter;
  if (!report_endpoint.empty()) {
    std::optional<ReportKeys> keys;
    if (!report_keys_path.empty()) {
      absl::StatusOr<ReportKeys> loaded = LoadReportKeys(report_keys_path);
      if (!loaded.ok()) {
        std::fprintf(stderr, "fjord-train: %s\n", std::string(loaded.status().message()).c_str());
        return kWorkerExitSystemError;
      }
      keys = *loaded;
    }
    reporter = std::make_unique<Reporter>(report_endpoint, keys);
  }
  std::unique_ptr<std::ofstream> events_file;
  if (!events_path.empty() && events_path != "-")
    events_file = std::make_unique<std::ofstream>(events_path, std::ios::app);
  auto send = [&](const protocol::WorkerMessage& m) {
    const std::string line = protocol::EncodeWorkerMessage(m);
    if (events_path == "-") std::printf("%s\n", line.c_str()), std::fflush(stdout);
    if (events_file) *events_file << line << "\n" << std::flush;
    if (reporter) reporter->Send(line);
  };
  struct sigaction sa {};
  sa.sa_handler = OnSignal;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGTERM, &sa, nullptr);
  sigaction(SIGINT, &sa, nullptr);
  protocol::WorkerMessage start;
  start.payload = protocol::WorkerStart{"evaluation started"};
  send(start);
  lora::EvaluationOptions options;
  options.stop_requested = &g_stop;
  options.on_progress = [&](const lora::EvaluationProgress& p) {
    std::fprintf(stderr, "[%lld/%lld] %s\n", static_cast<long long>(p.done),
                 static_cast<long long>(p.total), p.message.c_str());
    protocol::WorkerMessage m;
    m.payload = protocol::WorkerLog{p.message};
    m.step = p.done;
    m.total_steps = p.total;
    send(m);
  };
  absl::Status s = [&]() -> absl::Status {
    FJORD_ASSIGN_OR_RETURN(std::vector<nlohmann::ordered_json> reports,
                           lora::RunEvaluation(*cfg, options));
    return lora::WriteEvaluationReport(cfg->output_dir, lora::EvaluationReport(*cfg, reports));
  }();
  if (g_stop.load() && absl::IsAborted(s)) {
    std::fprintf(stderr, "fjord-train: evaluation stopped\n");
    return kWorkerExitStopped;
  }
  if (!s.ok()) {
    std::fprintf(stderr, "fjord-train: %s\n", std::string(s.message()).c_str());
    protocol::WorkerMessage error;
    error.payload =
        protocol::WorkerError{absl::StatusCodeToString(s.code()), std::string(s.message()),
                              protocol::IsUserErrorCode(s.code())};
    send(error);
    return WorkerExitCodeFor(s);
  }
  protocol::WorkerMessage done;
  done.payload = protocol::WorkerDone{std::nullopt, std::nullopt, cfg->output_dir + "/report"};
  send(done);
  std::fprintf(stderr, "report: %s/report/report.json\n", cfg->output_dir.c_str());
  return kWorkerExitOk;
}

// fjord-train export --model DIR --adapter DIR --out DIR [--dtype D]
int Export(int argc, char** argv) {
  std::string model, adapter, out;
  lora::ExportOptions options;
  for (int i = 2; i < argc; ++i) {
    const std::string a = argv[i];
    if (i + 1 >= argc) {
      std::fprintf(stderr, "fjord-train export: %s needs a value\n", a.c_str());
      return kWorkerExitUserError;
    }
    const std::string v = argv[++i];
    if (a == "--model")
      model = v;
    else if (a == "--adapter")
      adapter = v;
    else if (a == "--out")
      out = v;
    else if (a == "--dtype")
      options.dtype = v;
    else {
      std::fprintf(stderr, "fjord-train export: unknown argument '%s'\n", a.c_str());
      return kWorkerExitUserError;
    }
  }
  if (model.empty() || adapter.empty() || out.empty()) {
    Usage();
    return kWorkerExitUserError;
  }
  const absl::Status s = lora::ExportMerged(model, adapter, out, options);
  if (!s.ok()) {
    std::fprintf(stderr, "fjord-train export: %s\n", std::string(s.message()).c_str());
    return WorkerExitCodeFor(s);
  }
  std::fprintf(stderr, "merged model written to %s\n", out.c_str());
  return kWorkerExitOk;
}

int Main(int argc, char** argv) {
  if (argc >= 2 && std::string(argv[1]) == "export") return Export(argc, argv);
  std::string config_path, events_path, report_endpoint, report_keys_path, progress = "auto";
  std::vector<std::string> sets;
  bool resume = true, validate = false;
  int64_t stop_after = 0, nproc = 0, dist_timeout_s = 300;
  double bucket_mb = 25;
  std::vector<std::string> rank_args = {
      "/proc/self/exe"};  // argv for the ranks of --nproc-per-node
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto value = [&](const char* flag) -> std::string {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "fjord-train: %s needs a value\n", flag);
        std::exit(kWorkerExitUserError);
      }
      if (a != "--nproc-per-node") rank_args.insert(rank_args.end(), {argv[i], argv[i + 1]});
      return argv[++i];
    };
    auto count = [&](const char* flag, int64_t min, int64_t* out) {
      const std::string v = value(flag);
      if (!absl::SimpleAtoi(v, out) || *out < min) {
        std::fprintf(stderr, "fjord-train: %s: '%s' is not an integer >= %lld\n", flag, v.c_str(),
                     static_cast<long long>(min));
        std::exit(kWorkerExitUserError);
      }
    };
    if (a != "validate" && a.rfind("--", 0) == 0 && a != "--config" && a != "--set" &&
        a != "--events" && a != "--report" && a != "--report-keys" && a != "--progress" &&
        a != "--stop-after-steps" && a != "--nproc-per-node" && a != "--dist-timeout" &&
        a != "--bucket-mb") {
      rank_args.push_back(a);  // a flag without a value
    }
    if (a == "--nproc-per-node")
      count("--nproc-per-node", 1, &nproc);
    else if (a == "--dist-timeout")
      count("--dist-timeout", 1, &dist_timeout_s);
    else if (a == "--bucket-mb") {
      const std::string v = value("--bucket-mb");
      if (!absl::SimpleAtod(v, &bucket_mb) || !(bucket_mb >= 0) || bucket_mb > 1e6) {
        std::fprintf(stderr, "fjord-train: --bucket-mb: '%s' is not a number of MB >= 0\n",
                     v.c_str());
        return kWorkerExitUserError;
      }
    } else if (a == "validate" && i == 1)
      validate = true;
    else if (a == "--config")
      config_path = value("--config");
    else if (a == "--set")
      sets.push_back(value("--set"));
    else if (a == "--no-resume")
      resume = false;
    else if (a == "--events")
      events_path = value("--events");
    else if (a == "--report")
      report_endpoint = value("--report");
    else if (a == "--report-keys")
      report_keys_path = value("--report-keys");
    else if (a == "--progress")
      progress = value("--progress");
    else if (a == "--stop-after-steps") {
      const std::string v = value("--stop-after-steps");
      if (!absl::SimpleAtoi(v, &stop_after) || stop_after < 0) {
        std::fprintf(stderr,
                     "fjord-train: --stop-after-steps: '%s' is not a non-negative integer\n",
                     v.c_str());
        return kWorkerExitUserError;
      }
    } else if (a == "-h" || a == "--help") {
      Usage();
      return 0;
    } else {
      std::fprintf(stderr, "fjord-train: unknown argument '%s'\n", a.c_str());
      Usage();
      return kWorkerExitUserError;
    }
  }
  if (config_path.empty()) {
    Usage();
    return kWorkerExitUserError;
  }
  if (absl::StatusOr<std::string> text = Env::Default()->ReadFileToString(config_path);
      text.ok() && lora::IsEvaluationYaml(*text)) {
    if (!sets.empty() || nproc > 0) {
      std::fprintf(stderr, "fjord-train: --set and --nproc-per-node are for training jobs\n");
      return kWorkerExitUserError;
    }
    return Evaluate(*text, config_path, validate, events_path, report_endpoint, report_keys_path);
  }
  absl::StatusOr<lora::JobConfig> cfg = lora::LoadJobConfig(config_path);
  if (!cfg.ok()) {
    std::fprintf(stderr, "fjord-train: %s\n", std::string(cfg.status().message()).c_str());
    return kWorkerExitUserError;
  }
  for (const std::string& s : sets) {
    if (absl::Status st = lora::ApplyOverride(*cfg, s); !st.ok()) {
      std::fprintf(stderr, "fjord-train: %s\n", std::string(st.message()).c_str());
      return kWorkerExitUserError;
    }
  }
  if (validate) return Validate(*cfg);
  if (nproc > 0) {
    // The launcher: N ranks of this same command, without --nproc-per-node.
    dist::LaunchOptions lo;
    lo.nproc = static_cast<int>(nproc);
    lo.program = "/proc/self/exe";
    char self[4096] = {};
    const ssize_t n = ::readlink("/proc/self/exe", self, sizeof self - 1);
    if (n > 0) rank_args[0] = std::string(self, static_cast<size_t>(n));
    lo.stop_code = kWorkerExitStopped;
    return dist::LaunchLocalRanks(rank_args, lo);
  }
  // One rank of a world when a launcher says so.
  absl::StatusOr<std::optional<dist::WorldSpec>> spec = dist::WorldSpecFromEnv(dist::ProcessEnv());
  if (!spec.ok()) {
    std::fprintf(stderr, "fjord-train: %s\n", std::string(spec.status().message()).c_str());
    return kWorkerExitUserError;
  }
  std::unique_ptr<dist::World> world;
  std::string who = "fjord-train";
  if (const char* launcher = std::getenv("FJORD_LAUNCHER_PID"); launcher != nullptr) {
    // A rank of --nproc-per-node dies with its launcher (checked after the
    // call: the launcher may already be gone).
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (std::to_string(::getppid()) != launcher) return kWorkerExitSystemError;
  }
  // Rank 0 speaks for the job: the others send no events and no reports.
  if (spec->has_value() && (*spec)->rank != 0) {
    who = absl::StrCat("fjord-train (rank ", (*spec)->rank, ")");
    events_path.clear();
    report_endpoint.clear();
    progress = "none";
  }
  // Before the rendezvous: rank 0 heartbeats while it waits for the others.
  std::unique_ptr<Reporter> reporter;
  if (!report_endpoint.empty()) {
    std::optional<ReportKeys> keys;
    if (!report_keys_path.empty()) {
      absl::StatusOr<ReportKeys> loaded = LoadReportKeys(report_keys_path);
      if (!loaded.ok()) {
        std::fprintf(stderr, "%s: %s\n", who.c_str(),
                     std::string(loaded.status().message()).c_str());
        return kWorkerExitSystemError;
      }
      keys = *loaded;
    }
    reporter = std::make_unique<Reporter>(report_endpoint, keys);
  }
  if (spec->has_value()) {
    dist::WorldOptions wo;
    wo.timeout = std::chrono::seconds(dist_timeout_s);
    const bool cuda = cfg->training.device == "cuda" ||
                      (cfg->training.device == "auto" && torch::cuda::is_available());
    wo.device =
        cuda ? torch::Device(torch::kCUDA, static_cast<c10::DeviceIndex>((*spec)->local_rank))
             : torch::Device(torch::kCPU);
    absl::StatusOr<std::unique_ptr<dist::World>> joined = dist::World::Join(**spec, wo);
    if (!joined.ok()) {
      std::fprintf(stderr, "fjord-train: %s\n", std::string(joined.status().message()).c_str());
      if (reporter) {  // the job's error says why, not only the worker's log
        protocol::WorkerMessage error;
        error.payload = protocol::WorkerError{absl::StatusCodeToString(joined.status().code()),
                                              std::string(joined.status().message()), false};
        reporter->Send(protocol::EncodeWorkerMessage(error));
      }
      return kWorkerExitSystemError;
    }
    world = *std::move(joined);
  }

  struct sigaction sa {};
  sa.sa_handler = OnSignal;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGTERM, &sa, nullptr);
  sigaction(SIGINT, &sa, nullptr);

  Progress::Mode mode = progress == "bar"       ? Progress::Mode::kBar
                        : progress == "lines"   ? Progress::Mode::kLines
                        : progress == "none"    ? Progress::Mode::kNone
                        : isatty(STDERR_FILENO) ? Progress::Mode::kBar
                                                : Progress::Mode::kLines;
  Progress bar(mode);
  std::unique_ptr<std::ofstream> events_file;
  if (!events_path.empty() && events_path != "-")
    events_file = std::make_unique<std::ofstream>(events_path, std::ios::app);
  lora::LoraMethod method(*cfg);
  train::TrainOptions options;
  options.adapter = &method;
  options.resume = resume;
  options.stop_requested = &g_stop;
  options.stop_after_steps = stop_after;
  options.config_yaml = cfg->ToYaml();  // checkpoints record the whole job, lora included
  options.world = world.get();
  options.gradient_bucket_bytes = static_cast<int64_t>(bucket_mb * (1 << 20));
  options.on_event = [&](const train::TrainEvent& e) {
    bar.On(e);
    const std::string line = protocol::EncodeWorkerMessage(ToWorkerMessage(e));
    if (events_path == "-") std::printf("%s\n", line.c_str()), std::fflush(stdout);
    if (events_file) *events_file << line << "\n" << std::flush;
    if (reporter) reporter->Send(line);
  };
  absl::StatusOr<train::TrainResult> result = train::RunTraining(*cfg, options);
  if (!result.ok()) {
    std::fprintf(stderr, "%s: %s\n", who.c_str(), std::string(result.status().message()).c_str());
    if (reporter) {
      protocol::WorkerMessage error;
      error.payload = protocol::WorkerError{absl::StatusCodeToString(result.status().code()),
                                            std::string(result.status().message()),
                                            protocol::IsUserErrorCode(result.status().code())};
      reporter->Send(protocol::EncodeWorkerMessage(error));
    }
    return WorkerExitCodeFor(result.status());
  }
  if (result->stopped) {
    if (world == nullptr || world->is_main()) {
      std::fprintf(stderr, "fjord-train: stopped at step %lld after checkpoint %s\n",
                   static_cast<long long>(result->steps), result->last_checkpoint.c_str());
    }
    return kWorkerExitStopped;
  }
  if (world != nullptr && !world->is_main()) return kWorkerExitOk;
  std::fprintf(stderr, "\nPEFT adapter: %s\n", result->adapter_dir.c_str());
  if (result->gradient_buckets > 0) {
    const int64_t steps =
        result->steps - std::max<int64_t>(result->resumed_from_step, 0);  // in this run
    std::fprintf(
        stderr,
        "gradient all-reduce: %d bucket(s), %lld bytes per step; %lld of %lld started "
        "during backward; %.2f ms per step waited after backward\n",
        result->gradient_buckets, static_cast<long long>(result->gradient_bytes_per_step),
        static_cast<long long>(result->gradient_buckets_started_in_backward),
        static_cast<long long>(steps * result->gradient_buckets),
        steps > 0 ? 1000 * result->gradient_wait_seconds / static_cast<double>(steps) : 0.0);
  }
  if (result->initial_eval_loss > 0 && result->final_eval_loss >= 0) {
    std::fprintf(stderr, "eval loss: %.4f -> %.4f (%.0f%% lower)\n", result->initial_eval_loss,
                 result->final_eval_loss,
                 100 * (1 - result->final_eval_loss / result->initial_eval_loss));
  }
  if (result->final_heldout_accuracy >= 0 && result->initial_heldout_accuracy >= 0) {
    std::fprintf(stderr, "held-out answer accuracy: %.0f%% -> %.0f%%\n",
                 100 * result->initial_heldout_accuracy, 100 * result->final_heldout_accuracy);
  }
  return kWorkerExitOk;
}

}  // namespace
}  // namespace fjord

int main(int argc, char** argv) { return fjord::Main(argc, argv); }

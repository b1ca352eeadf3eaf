// A stand-in for fjord-train in daemon tests: speaks the worker protocol
// (docs/protocol.md §10, daemon/protocol/worker_protocol.h: JSON events and
// heartbeats over a ZeroMQ PUSH socket, the same exit codes) without
// training.
//
// Supervisor-test mode (no --config):
//   fake_worker --report ENDPOINT [--events N] [--exit-code C] [--silent]
//               [--hang] [--ignore-sigterm]
// --silent: no heartbeats; --hang: never exit on its own; on SIGTERM (unless
// --ignore-sigterm) it sends a checkpoint event and exits 75, like fjord-train.
// Its heartbeats carry no pid (as older workers' did).
//
// fjord-train mode (what fjordd launches):
//   fake_worker validate --config JOB.yaml          (JSON report on stdout; exit 0 or 2)
//   fake_worker --config JOB.yaml --report ENDPOINT [--report-keys FILE] --progress none
//               [--set k=v]...
// The job's training file (data.train) is JSONL; every line must be a JSON
// object. A first line {"fake_worker": {...}} scripts the run:
//   "steps": 6            optimizer steps in total
//   "step_ms": 50         time per step
//   "checkpoint_every": 2 a real checkpoint (runtime/train/checkpoint) every N steps
//   "checkpoint_ms": 0    extra time a checkpoint takes (slow checkpoint)
//   "checkpoint_bytes": 0 size of the weights file each checkpoint holds
//   "mode": "succeed" | "fail_user" (error event, exit 2) | "exit3" (error, exit 3)
//         | "crash" (SIGKILL at crash_at_step) | "crash_once" (the same, only on
//           the first run: a marker file in output.dir remembers)
//         | "hang" (stops reporting and sleeps) | "ignore_sigterm"
//   "crash_at_step": 3
//   "validate": "ok" | "crash" (SIGKILL while validating) | "hang"
//             | "no_report" (a line on stderr, nothing on stdout, exit 2)
//   "validate_ms": 0      time validation takes
//   "adapter": "ok" | "truncated" (a torn adapter_model.safetensors, exit 0)
//   "adapter_bytes": 0    size of the adapter's one tensor (F32, zeros)
// Resumes from the newest valid checkpoint under <output.dir>/checkpoints and
// writes a PEFT-format adapter (adapter_config.json + an empty but valid
// adapter_model.safetensors) to <output.dir>/adapter when done.
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <thread>
#include <vector>
#include <zmq.hpp>

#include "absl/status/status.h"
#include "daemon/protocol/worker_protocol.h"
#include "lora/job_config.h"
#include "runtime/train/checkpoint.h"

namespace {

using fjord::protocol::EncodeWorkerMessage;
using fjord::protocol::kWorkerExitOk;
using fjord::protocol::kWorkerExitStopped;
using fjord::protocol::kWorkerExitSystemError;
using fjord::protocol::kWorkerExitUserError;
using fjord::protocol::WorkerMessage;
using nlohmann::json;

// A message with progress (what fjord-train's trainer events carry).
WorkerMessage At(fjord::protocol::WorkerPayload payload, int64_t step, int64_t total_steps) {
  WorkerMessage m;
  m.payload = std::move(payload);
  m.step = step;
  m.total_steps = total_steps;
  return m;
}

WorkerMessage ErrorMessage(const std::string& code, const std::string& message, bool user_error) {
  WorkerMessage m;
  m.payload = fjord::protocol::WorkerError{code, message, user_error};
  return m;
}

std::atomic<bool> g_term{false};
void OnTerm(int) { g_term.store(true); }

void SleepMs(int64_t ms) { std::this_thread::sleep_for(std::chrono::milliseconds(ms)); }

int SupervisorTestMode(int argc, char** argv) {
  std::string endpoint;
  int events = 0, exit_code = 0;
  bool silent = false, hang = false, ignore_term = false;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--report" && i + 1 < argc)
      endpoint = argv[++i];
    else if (a == "--events" && i + 1 < argc)
      events = std::stoi(argv[++i]);
    else if (a == "--exit-code" && i + 1 < argc)
      exit_code = std::stoi(argv[++i]);
    else if (a == "--silent")
      silent = true;
    else if (a == "--hang")
      hang = true;
    else if (a == "--ignore-sigterm")
      ignore_term = true;
  }
  signal(SIGTERM, ignore_term ? SIG_IGN : OnTerm);
  zmq::context_t ctx;
  zmq::socket_t push(ctx, zmq::socket_type::push);
  push.set(zmq::sockopt::linger, 2000);
  push.connect(endpoint);
  auto send = [&](const WorkerMessage& m) {
    const std::string s = EncodeWorkerMessage(m);
    push.send(zmq::buffer(s), zmq::send_flags::none);
  };
  for (int i = 1; i <= events; ++i) send(At(fjord::protocol::WorkerStep{}, i, events));
  auto last_beat = std::chrono::steady_clock::now() - std::chrono::seconds(10);
  while (hang || g_term.load()) {
    if (g_term.load()) {
      WorkerMessage checkpoint;
      checkpoint.payload = fjord::protocol::WorkerCheckpoint{};
      checkpoint.step = 1;
      send(checkpoint);
      return kWorkerExitStopped;
    }
    if (!silent && std::chrono::steady_clock::now() - last_beat > std::chrono::milliseconds(200)) {
      send(WorkerMessage{fjord::protocol::WorkerHeartbeat{}});
      last_beat = std::chrono::steady_clock::now();
    }
    SleepMs(20);
  }
  return exit_code;
}

// Reads the JSONL file: the script (first line's "fake_worker") and the
// first bad line, if any.
struct Data {
  json script = json::object();
  int64_t lines = 0;
  int64_t bad_line = 0;
  std::string error;
};

Data ReadData(const std::string& path) {
  Data d;
  std::ifstream f(path);
  if (!f) {
    d.bad_line = -1;
    d.error = "cannot open " + path;
    return d;
  }
  std::string line;
  while (std::getline(f, line)) {
    ++d.lines;
    if (line.empty()) continue;
    json j = json::parse(line, nullptr, false);
    if (j.is_discarded() || !j.is_object()) {
      if (d.bad_line == 0) {
        d.bad_line = d.lines;
        d.error = "line " + std::to_string(d.lines) + ": not a JSON object";
      }
      continue;
    }
    if (d.lines == 1 && j.contains("fake_worker") && j["fake_worker"].is_object())
      d.script = j["fake_worker"];
  }
  return d;
}

int Validate(const fjord::lora::JobConfig& cfg) {
  Data d = ReadData(cfg.data.train);
  const std::string mode = d.script.value("validate", "ok");
  SleepMs(d.script.value("validate_ms", int64_t{0}));
  if (mode == "crash") ::raise(SIGKILL);
  if (mode == "hang") SleepMs(3600 * 1000);
  if (mode == "no_report") {
    std::fprintf(stderr, "fake validator: refusing this data without a report\n");
    return kWorkerExitUserError;
  }
  json out = {{"valid", d.bad_line == 0}};
  if (d.bad_line == 0) {
    out["train"] = {{"valid", true}, {"lines", d.lines}, {"examples", d.lines}, {"summary", "ok"}};
  } else {
    out["train"] = {
        {"valid", false},
        {"error_count", 1},
        {"summary", d.error},
        {"errors", json::array({{{"line", d.bad_line}, {"field", ""}, {"message", d.error}}})}};
  }
  if (!cfg.data.validation.empty()) {
    Data v = ReadData(cfg.data.validation);
    out["validation"] = {{"valid", v.bad_line == 0}, {"summary", v.bad_line == 0 ? "ok" : v.error}};
    if (v.bad_line != 0) out["valid"] = false;
  }
  std::printf("%s\n", out.dump(2).c_str());
  return out["valid"].get<bool>() ? kWorkerExitOk : kWorkerExitUserError;
}

class Reporter {
 public:
  // keys: fjord-train's --report-keys file (server_public_key=, public_key=,
  // secret_key= lines): CURVE to fjordd's Slurm report socket.
  Reporter(const std::string& endpoint, const std::string& keys_path)
      : push_(ctx_, zmq::socket_type::push) {
    push_.set(zmq::sockopt::linger, 2000);
    if (!keys_path.empty()) {
      std::ifstream in(keys_path);
      std::string line;
      std::map<std::string, std::string> k;
      while (std::getline(in, line)) {
        const size_t eq = line.find('=');
        if (line.empty() || line[0] == '#' || eq == std::string::npos) continue;
        k[line.substr(0, eq)] = line.substr(eq + 1);
      }
      push_.set(zmq::sockopt::curve_serverkey, k["server_public_key"]);
      push_.set(zmq::sockopt::curve_publickey, k["public_key"]);
      push_.set(zmq::sockopt::curve_secretkey, k["secret_key"]);
    }
    push_.connect(endpoint);
    beat_ = std::thread([this] {
      while (!done_.load()) {
        if (!paused_.load()) Send(WorkerMessage{fjord::protocol::WorkerHeartbeat{::getpid()}});
        for (int i = 0; i < 10 && !done_.load(); ++i) SleepMs(20);
      }
    });
  }
  ~Reporter() {
    done_ = true;
    beat_.join();
  }
  void Send(const WorkerMessage& m) {
    const std::string s = EncodeWorkerMessage(m);
    std::lock_guard<std::mutex> l(mu_);
    push_.send(zmq::buffer(s), zmq::send_flags::none);
  }
  void StopHeartbeats() { paused_ = true; }

 private:
  zmq::context_t ctx_;
  std::mutex mu_;
  zmq::socket_t push_;
  std::atomic<bool> done_{false}, paused_{false};
  std::thread beat_;
};

int Train(const fjord::lora::JobConfig& cfg, const std::string& endpoint,
          const std::string& keys_path) {
  Data d = ReadData(cfg.data.train);
  const json& s = d.script;
  const int64_t steps = s.value("steps", 6);
  const int64_t step_ms = s.value("step_ms", 50);
  const int64_t every = s.value("checkpoint_every", 2);
  const int64_t ckpt_ms = s.value("checkpoint_ms", 0);
  const size_t ckpt_bytes =
      static_cast<size_t>(std::max<int64_t>(0, s.value("checkpoint_bytes", int64_t{0})));
  const int64_t crash_at = s.value("crash_at_step", 3);
  const std::string mode = s.value("mode", "succeed");
  signal(SIGTERM, mode == "ignore_sigterm" ? SIG_IGN : OnTerm);
  signal(SIGINT, mode == "ignore_sigterm" ? SIG_IGN : OnTerm);
  Reporter r(endpoint, keys_path);
  const std::string ckpt_root = cfg.output.dir + "/checkpoints";
  int64_t step = 0;
  std::vector<std::string> skipped;
  if (auto found = fjord::train::FindLatestCheckpoint(ckpt_root, &skipped); found.ok())
    step = found->step;
  r.Send(At(fjord::protocol::WorkerStart{step > 0 ? "resumed from step " + std::to_string(step)
                                                  : "started"},
            step, steps));
  auto checkpoint = [&](int64_t at) -> bool {
    if (ckpt_ms > 0) SleepMs(ckpt_ms);
    auto path = fjord::train::WriteCheckpoint(ckpt_root, at, 3, [&](const std::string& dir) {
      std::ofstream(dir + "/trainer_state.json") << json{{"step", at}}.dump();
      if (ckpt_bytes > 0) std::ofstream(dir + "/weights.bin") << std::string(ckpt_bytes, 'w');
      return absl::OkStatus();
    });
    if (!path.ok()) {
      r.Send(ErrorMessage(absl::StatusCodeToString(path.status().code()),
                          std::string(path.status().message()),
                          /*user_error=*/false));
      return false;
    }
    r.Send(At(fjord::protocol::WorkerCheckpoint{*path}, at, steps));
    return true;
  };
  while (step < steps) {
    if (g_term.load()) {
      if (step > 0 && !checkpoint(step)) return kWorkerExitSystemError;
      return kWorkerExitStopped;
    }
    SleepMs(step_ms);
    ++step;
    const std::string marker = cfg.output.dir + "/.fake-crashed";
    if ((mode == "crash" || (mode == "crash_once" && ::access(marker.c_str(), F_OK) != 0)) &&
        step == crash_at) {
      std::ofstream(marker) << "1";
      ::raise(SIGKILL);  // like the OOM killer or kill -9 (and no sanitizer can catch it)
    }
    if (mode == "hang" && step == crash_at) {
      r.StopHeartbeats();
      SleepMs(3600 * 1000);
    }
    fjord::protocol::WorkerStep progress;
    progress.loss = 2.0 / static_cast<double>(step);
    progress.lr = 1e-3;
    progress.grad_norm = 0.5;
    progress.tokens_per_s = 1000.0;
    progress.eta_s = 0.05 * static_cast<double>(steps - step);
    progress.trained_tokens = step * 100;
    progress.peak_memory_bytes = 1 << 20;
    r.Send(At(progress, step, steps));
    if (mode == "fail_user" && step == crash_at) {
      r.Send(ErrorMessage("INVALID_ARGUMENT", "line 2 (messages[0].role): unknown role 'robot'",
                          /*user_error=*/true));
      return kWorkerExitUserError;
    }
    if (mode == "exit3" && step == crash_at) {
      r.Send(ErrorMessage("RESOURCE_EXHAUSTED", "CUDA out of memory", /*user_error=*/false));
      return kWorkerExitSystemError;
    }
    if (every > 0 && step % every == 0 && step < steps && !checkpoint(step))
      return kWorkerExitSystemError;
  }
  const std::string adapter = cfg.output.dir + "/adapter";
  ::mkdir(adapter.c_str(), 0755);
  std::ofstream(adapter + "/adapter_config.json") << json{
      {"peft_type", "LORA"},
      {"task_type", "CAUSAL_LM"},
      {"r", cfg.lora.r},
      {"lora_alpha", cfg.lora.alpha},
      {"lora_dropout", cfg.lora.dropout},
      {"target_modules", cfg.lora.target_modules},
      {"base_model_name_or_path", cfg.model.path}}.dump(2);
  // "adapter": "truncated" leaves a torn adapter_model.safetensors (a tensor
  // the header promises but the file lacks) and still exits 0.
  const bool truncated = s.value("adapter", "ok") == "truncated";
  const int64_t floats = s.value("adapter_bytes", int64_t{0}) / 4;
  const std::string header =
      truncated    ? "{\"w\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]}}"
      : floats > 0 ? "{\"w\":{\"dtype\":\"F32\",\"shape\":[" + std::to_string(floats) +
                         "],\"data_offsets\":[0," + std::to_string(floats * 4) + "]}}"
                   : "{\"__metadata__\":{\"format\":\"pt\"}}";
  std::string st(8, '\0');
  for (int i = 0; i < 8; ++i) st[i] = static_cast<char>((header.size() >> (8 * i)) & 0xff);
  std::ofstream(adapter + "/adapter_model.safetensors", std::ios::binary)
      << st << header << (truncated ? "abc" : "")
      << std::string(static_cast<size_t>(floats * 4), '\0');
  r.Send(At(fjord::protocol::WorkerEval{0.5, 0.9}, step, steps));
  r.Send(At(fjord::protocol::WorkerDone{std::nullopt, std::nullopt, adapter}, step, steps));
  return kWorkerExitOk;
}

}  // namespace

int main(int argc, char** argv) {
  std::string config, endpoint, keys_path;
  std::vector<std::string> sets;
  bool validate = false;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "validate" && i == 1)
      validate = true;
    else if (a == "--config" && i + 1 < argc)
      config = argv[++i];
    else if (a == "--report" && i + 1 < argc)
      endpoint = argv[++i];
    else if (a == "--report-keys" && i + 1 < argc)
      keys_path = argv[++i];
    else if (a == "--set" && i + 1 < argc)
      sets.push_back(argv[++i]);
    else if (a == "--progress" && i + 1 < argc)
      ++i;
  }
  if (config.empty()) return SupervisorTestMode(argc, argv);
  auto cfg = fjord::lora::LoadJobConfig(config);
  if (!cfg.ok()) {
    std::fprintf(stderr, "fake_worker: %s\n", std::string(cfg.status().message()).c_str());
    return kWorkerExitUserError;
  }
  for (const std::string& s : sets) {
    if (auto st = fjord::lora::ApplyOverride(*cfg, s); !st.ok()) return kWorkerExitUserError;
  }
  if (validate) return Validate(*cfg);
  if (endpoint.empty()) return kWorkerExitUserError;
  return Train(*cfg, endpoint, keys_path);
}

#include "sdk/cpp/cli/quickstart.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <climits>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <memory>
#include <sstream>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "daemon/protocol/curve_keys.h"
#include "daemon/protocol/errors.h"
#include "runtime/util/net.h"
#include "runtime/util/status_macros.h"
#include "sdk/cpp/cli/compare.h"
#include "sdk/cpp/cli/job_file.h"
#include "sdk/cpp/cli/render.h"
#include "sdk/cpp/client.h"

namespace fjord::cli {
namespace {

using nlohmann::json;
namespace fs = std::filesystem;

// The demo's recipe, in the customer's job.yaml format: configs/quickstart.yaml's
// training (which runs fjord-train directly), 5 epochs (175 steps, ~30 s on 2
// CPU cores). Fewer do not do: the fine-tune first learns the answer's form,
// and only later (from ~step 50 to ~step 120, depending on the seed and the
// base model) to answer for countries it was not trained on; stopped in the
// middle, the result swings with the smallest change (after 2 epochs, 0% to
// 100% of the held-out answers right with seeds 1..4).
constexpr char kJobYaml[] =
    R"(# The quickstart's fine-tune of the demo model (tools/demo), as a customer submits it:
#   fjord jobs create -f job.yaml --wait
model: demo
training_file: train.jsonl         # local files are uploaded first
validation_file: valid.jsonl       # the eval loss and token accuracy
heldout_file: heldout.jsonl        # questions asked before and after: held-out answer accuracy
suffix: capitals
hyperparameters:
  epochs: 5                        # the eval loss has levelled off by then (~120 of 175 steps)
  batch_size: 1                    # rows of max_length tokens per micro-batch
  gradient_accumulation_steps: 1
  learning_rate: 2.0e-3            # high for a tiny model; 1e-4..3e-4 for real 1B-8B models
  lr_scheduler: cosine
  warmup_steps: 10
  max_grad_norm: 1.0
  max_length: 256                  # tokens per packed row
  seed: 42
  eval_every_steps: 25
  checkpoint_every_steps: 25
lora:
  r: 16                            # higher: more capacity, more memory
  alpha: 32
  dropout: 0.05
  target_modules: [all-linear]
)";

std::atomic<bool> g_interrupted{false};
void OnSignal(int) { g_interrupted.store(true); }

bool IsExecutable(const std::string& p) {
  return !p.empty() && ::access(p.c_str(), X_OK) == 0 && !fs::is_directory(p);
}

std::string RealPath(const std::string& p) {
  char buf[PATH_MAX];
  return ::realpath(p.c_str(), buf) ? std::string(buf) : p;
}

// The Bazel output tree fjord runs from ("" when not built by Bazel).
std::string BinRoot(const QuickstartOptions& o) {
  if (auto b = o.env("FJORD_BIN_DIR")) return *b;
  const std::string self = RealPath(o.self_path);
  const std::string tail = "/sdk/cpp/cli/fjord";
  if (absl::EndsWith(self, tail)) return self.substr(0, self.size() - tail.size());
  return "";
}

absl::StatusOr<std::string> FindProgram(const QuickstartOptions& o, const char* name,
                                        const char* env_var, const char* bazel_path,
                                        const char* target) {
  std::vector<std::string> tried;
  if (auto e = o.env(env_var)) {
    if (IsExecutable(*e)) return *e;
    return absl::FailedPreconditionError(absl::StrCat(env_var, "=", *e, " is not an executable"));
  }
  const std::string bin = BinRoot(o);
  if (!bin.empty()) tried.push_back(absl::StrCat(bin, "/", bazel_path));
  const std::string self = RealPath(o.self_path);
  if (self.find('/') != std::string::npos)
    tried.push_back(absl::StrCat(self.substr(0, self.rfind('/')), "/", name));
  for (const std::string& t : tried) {
    if (IsExecutable(t)) return t;
  }
  if (auto path = o.env("PATH")) {
    for (absl::string_view d : absl::StrSplit(*path, ':', absl::SkipEmpty())) {
      const std::string t = absl::StrCat(d, "/", name);
      if (IsExecutable(t)) return t;
    }
    tried.push_back("$PATH");
  }
  return absl::FailedPreconditionError(
      absl::StrCat(name, " not found (looked at ", absl::StrJoin(tried, ", "),
                   "): build it with `bazel build ", target, "` or set ", env_var));
}

absl::StatusOr<std::string> FindDemo(const QuickstartOptions& o) {
  std::string dir;
  if (auto d = o.env("FJORD_DEMO_DIR"))
    dir = *d;
  else if (!BinRoot(o).empty())
    dir = BinRoot(o) + "/tools/demo/out";
  for (const char* f : {"model/config.json", "model/model.safetensors", "model/tokenizer.json",
                        "data/train.jsonl", "data/valid.jsonl", "data/heldout.jsonl"}) {
    if (dir.empty() || !fs::exists(absl::StrCat(dir, "/", f))) {
      return absl::FailedPreconditionError(absl::StrCat(
          "the demo model and data are missing",
          dir.empty() ? "" : absl::StrCat(" (no ", dir, "/", f, ")"),
          ": generate them with `bazel build //tools/demo:demo` or set FJORD_DEMO_DIR"));
    }
  }
  return RealPath(dir);
}

absl::StatusOr<int> FreeLoopbackPort() {
  const int port = fjord::FreeLoopbackPort();
  if (port == 0) return absl::UnavailableError("no free port on 127.0.0.1");
  return port;
}

absl::Status WriteFile(const std::string& path, const std::string& text, mode_t mode = 0644) {
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
  if (fd < 0)
    return absl::PermissionDeniedError(
        absl::StrCat("cannot write ", path, ": ", std::strerror(errno)));
  const bool ok = ::write(fd, text.data(), text.size()) == static_cast<ssize_t>(text.size());
  ::close(fd);
  if (!ok) return absl::InternalError(absl::StrCat("cannot write ", path));
  return absl::OkStatus();
}

std::string Tail(const std::string& path, size_t max_lines) {
  std::ifstream f(path);
  std::vector<std::string> lines;
  for (std::string l; std::getline(f, l);) lines.push_back(l);
  const size_t from = lines.size() > max_lines ? lines.size() - max_lines : 0;
  std::string out;
  for (size_t i = from; i < lines.size(); ++i) absl::StrAppend(&out, "    ", lines[i], "\n");
  return out;
}

bool HasNvidiaGpu() { return fs::exists("/dev/nvidia0") && fs::exists("/proc/driver/nvidia/gpus"); }

// fjordd as a child process: SIGTERM and a wait on destruction (SIGKILL if it
// does not stop); it also gets SIGTERM if this process dies (PR_SET_PDEATHSIG).
class DaemonProcess {
 public:
  static absl::StatusOr<std::unique_ptr<DaemonProcess>> Start(const std::string& program,
                                                              const std::string& config,
                                                              const std::string& log_path) {
    const int log = ::open(log_path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (log < 0) return absl::PermissionDeniedError(absl::StrCat("cannot write ", log_path));
    const pid_t parent = ::getpid();
    const pid_t pid = ::fork();
    if (pid < 0) {
      ::close(log);
      return absl::InternalError(absl::StrCat("fork: ", std::strerror(errno)));
    }
    if (pid == 0) {
      ::prctl(PR_SET_PDEATHSIG, SIGTERM);
      if (::getppid() != parent) ::_exit(127);
      ::dup2(log, 1);
      ::dup2(log, 2);
      const int null = ::open("/dev/null", O_RDONLY);
      if (null >= 0) ::dup2(null, 0);
      ::setpgid(0, 0);  // its own group: a Ctrl-C reaches fjord, which stops it in order
      std::vector<std::string> args = {program, "--config", config};
      std::vector<char*> argv;
      for (std::string& a : args) argv.push_back(a.data());
      argv.push_back(nullptr);
      ::execv(program.c_str(), argv.data());
      std::fprintf(stderr, "exec %s: %s\n", program.c_str(), std::strerror(errno));
      ::_exit(127);
    }
    ::close(log);
    return std::unique_ptr<DaemonProcess>(new DaemonProcess(pid));
  }
  ~DaemonProcess() { Stop(30000); }

  // The exit status once it has exited (non-blocking).
  std::optional<int> Exited() {
    if (done_) return status_;
    int st = 0;
    if (::waitpid(pid_, &st, WNOHANG) == pid_) {
      done_ = true;
      status_ = st;
      return st;
    }
    return std::nullopt;
  }

  // SIGTERM, then SIGKILL after grace_ms. Returns true for a clean exit 0.
  bool Stop(int grace_ms) {
    if (Exited()) return WIFEXITED(status_) && WEXITSTATUS(status_) == 0;
    ::kill(pid_, SIGTERM);
    for (int waited = 0; waited < grace_ms; waited += 50) {
      if (Exited()) return WIFEXITED(status_) && WEXITSTATUS(status_) == 0;
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    ::kill(pid_, SIGKILL);
    ::waitpid(pid_, &status_, 0);
    done_ = true;
    return false;
  }

 private:
  explicit DaemonProcess(pid_t pid) : pid_(pid) {}
  pid_t pid_;
  bool done_ = false;
  int status_ = 0;
};

std::string Describe(int wait_status) {
  if (WIFEXITED(wait_status)) return absl::StrCat("exit code ", WEXITSTATUS(wait_status));
  if (WIFSIGNALED(wait_status)) return absl::StrCat("killed by signal ", WTERMSIG(wait_status));
  return "stopped";
}

// Restores the signal dispositions it replaced.
class SignalGuard {
 public:
  SignalGuard() {
    g_interrupted.store(false);
    struct sigaction sa {};
    sa.sa_handler = OnSignal;
    sigemptyset(&sa.sa_mask);
    ::sigaction(SIGINT, &sa, &old_int_);
    ::sigaction(SIGTERM, &sa, &old_term_);
  }
  ~SignalGuard() {
    ::sigaction(SIGINT, &old_int_, nullptr);
    ::sigaction(SIGTERM, &old_term_, nullptr);
  }

 private:
  struct sigaction old_int_ {
  }, old_term_{};
};

int64_t CountLines(const std::string& path) {
  std::ifstream f(path);
  int64_t n = 0;
  for (std::string l; std::getline(f, l);) n += l.empty() ? 0 : 1;
  return n;
}

std::optional<double> Number(const json& data, const char* key) {
  if (!data.is_object() || !data.contains(key) || !data[key].is_number()) return std::nullopt;
  return data[key].get<double>();
}

}  // namespace

const char* QuickstartJobYaml() { return kJobYaml; }

void RecordEvalEvent(const protocol::JobEvent& e, QuickstartResult* result) {
  // heldout_accuracy: -1 or absent when not measured.
  auto heldout = [&]() -> std::optional<double> {
    std::optional<double> acc = Number(e.data, "heldout_accuracy");
    return acc && *acc >= 0 ? acc : std::nullopt;
  };
  if (e.type == "eval") {
    std::optional<double> loss = Number(e.data, "eval_loss");
    if (!loss) loss = Number(e.data, "loss");
    if (loss) {
      if (!result->first_eval_loss) result->first_eval_loss = loss;
      result->last_eval_loss = loss;
    }
    if (std::optional<double> acc = Number(e.data, "eval_token_accuracy")) {
      if (!result->first_eval_token_accuracy) result->first_eval_token_accuracy = acc;
      result->last_eval_token_accuracy = acc;
    }
    // Before training: the step-0 evaluation's.
    if (std::optional<double> acc = heldout(); acc && !result->first_heldout_accuracy) {
      result->first_heldout_accuracy = acc;
    }
  } else if (e.type == "done") {
    if (std::optional<double> acc = heldout()) result->last_heldout_accuracy = acc;
  }
}

std::vector<std::string> EvalSummaryLines(const QuickstartResult& r,
                                          const std::string& heldout_what) {
  std::vector<std::string> lines;
  if (r.first_eval_loss && r.last_eval_loss) {
    const double a = *r.first_eval_loss, b = *r.last_eval_loss;
    lines.push_back(absl::StrFormat("  eval loss: %.4f -> %.4f (%+.1f%%)", a, b,
                                    a != 0 ? 100 * (b - a) / a : 0.0));
  }
  if (r.first_eval_token_accuracy && r.last_eval_token_accuracy) {
    lines.push_back(
        absl::StrFormat("  eval token accuracy: %.1f%% -> %.1f%% (answer tokens predicted right)",
                        100 * *r.first_eval_token_accuracy, 100 * *r.last_eval_token_accuracy));
  }
  if (r.first_heldout_accuracy || r.last_heldout_accuracy) {
    auto percent = [](const std::optional<double>& v) {
      return v ? absl::StrFormat("%.0f%%", 100 * *v) : "?";
    };
    lines.push_back(
        absl::StrCat("  held-out answers: ", percent(r.first_heldout_accuracy), " -> ",
                     percent(r.last_heldout_accuracy),
                     heldout_what.empty() ? "" : absl::StrCat(" (", heldout_what, ")")));
  }
  return lines;
}

namespace {

// An evaluation job comparing the base with the fine-tune `job_id` on the
// job's held-out questions: followed to its end, its report downloaded to
// <results>/comparison/ and shown as a table. Returns that directory.
absl::StatusOr<std::string> CompareBaseAndFineTune(
    Client& client, const protocol::JobSpec& trained, const std::string& job_id,
    const std::string& results, const QuickstartOptions& o, FILE* out,
    const std::function<void(const std::string&)>& say) {
  protocol::JobSpec spec;
  spec.type = "evaluation";
  spec.model = trained.model;
  spec.candidates = {{"base", "", "", ""}, {"fine-tune", job_id, "", ""}};
  spec.datasets = {trained.heldout_file};
  spec.evaluation.samples = 3;
  FJORD_ASSIGN_OR_RETURN(protocol::Job ev, client.CreateEvaluation(spec));
  say("");
  say(absl::StrCat("comparing the base with the fine-tune: ", ev.id));
  absl::StatusOr<protocol::Job> done =
      client.StreamEvents(ev.id, 0, [&](const protocol::JobEvent& e) {
        if (o.json) {
          std::fprintf(out, "%s\n",
                       protocol::DumpJson(json{{"event", protocol::JobEventToJson(e)}}).c_str());
        } else if (e.type == "log" && !e.message.empty()) {
          say(absl::StrCat("  ", e.message));
        }
        return !g_interrupted.load();
      });
  if (!done.ok()) return done.status();
  if (done->status != protocol::JobStatus::kSucceeded) {
    return absl::InternalError(
        absl::StrCat("the comparison ", ev.id, " ended ", protocol::JobStatusName(done->status),
                     done->error ? absl::StrCat(": ", done->error->message) : ""));
  }
  const std::string dir = results + "/comparison";
  FJORD_RETURN_IF_ERROR(client.DownloadReport(ev.id, dir).status());
  std::ifstream in(dir + "/report.json");
  const json report = json::parse(in, nullptr, /*allow_exceptions=*/false);
  FJORD_ASSIGN_OR_RETURN(std::string table, RenderEvaluationReport(report));
  if (!o.json) std::fprintf(out, "%s", table.c_str());
  say(absl::StrCat("  report: ", dir, "/report.html (open it in a browser), ", dir,
                   "/report.json"));
  return dir;
}

}  // namespace

absl::StatusOr<QuickstartResult> RunQuickstart(const QuickstartOptions& o, FILE* out, FILE* err) {
  auto say = [&](const std::string& s) {
    if (!o.json) std::fprintf(out, "%s\n", s.c_str()), std::fflush(out);
  };
  // ---- what it needs ---------------------------------------------------------
  FJORD_ASSIGN_OR_RETURN(
      const std::string fjordd,
      FindProgram(o, "fjordd", "FJORD_FJORDD", "daemon/server/fjordd", "//daemon/server:fjordd"));
  FJORD_ASSIGN_OR_RETURN(const std::string trainer,
                         FindProgram(o, "fjord-train", "FJORD_TRAIN", "lora/cli/fjord-train",
                                     "//lora/cli:fjord-train"));
  FJORD_ASSIGN_OR_RETURN(const std::string demo, FindDemo(o));
  JobDocument job_doc;
  if (!o.job_file.empty()) {
    FJORD_ASSIGN_OR_RETURN(job_doc, LoadJobFile(o.job_file));
  } else {
    FJORD_ASSIGN_OR_RETURN(job_doc, ParseJobYaml(kJobYaml, "the quickstart job", demo + "/data"));
  }
  FJORD_RETURN_IF_ERROR(NormalizeSuffix(job_doc));
  FJORD_ASSIGN_OR_RETURN(protocol::JobSpec spec, ValidateJob(job_doc));

  // ---- directories and keys ----------------------------------------------------
  std::string results = o.state_dir;
  if (results.empty()) {
    const std::string home = o.env("HOME").value_or("/tmp");
    results = absl::StrCat(home, "/.cache/fjord/quickstart/",
                           absl::FormatTime("%Y%m%d-%H%M%S", absl::Now(), absl::LocalTimeZone()));
  }
  std::error_code ec;
  fs::create_directories(results, ec);
  if (ec)
    return absl::PermissionDeniedError(absl::StrCat("cannot create ", results, ": ", ec.message()));
  results = RealPath(results);
  // The daemon's state: a short path (worker ipc sockets live there).
  char tmpl[] = "/tmp/fjord-quickstart-XXXXXX";
  if (::mkdtemp(tmpl) == nullptr)
    return absl::InternalError(absl::StrCat("mkdtemp: ", std::strerror(errno)));
  const std::string run = tmpl;
  struct Cleanup {
    std::string dir;
    bool keep;
    ~Cleanup() {
      if (!keep) {
        std::error_code e;
        fs::remove_all(dir, e);
      }
    }
  } cleanup{run, o.keep};
  for (const char* d : {"state", "storage", "keys"})
    fs::create_directories(absl::StrCat(run, "/", d), ec);
  FJORD_ASSIGN_OR_RETURN(CurveKeyPair server_keys, GenerateCurveKeyPair());
  FJORD_ASSIGN_OR_RETURN(CurveKeyPair client_keys, GenerateCurveKeyPair());
  FJORD_RETURN_IF_ERROR(WriteCurveKeyFiles(run + "/keys/server", server_keys));
  FJORD_RETURN_IF_ERROR(WriteCurveKeyFiles(run + "/keys/quickstart", client_keys));
  FJORD_RETURN_IF_ERROR(
      WriteFile(run + "/keys/clients.yaml",
                absl::StrCat("clients:\n  - name: quickstart\n    public_key: \"",
                             client_keys.public_key, "\"\n    tenant: demo\n    role: tenant\n"),
                0600));
  FJORD_ASSIGN_OR_RETURN(const int port, FreeLoopbackPort());
  const std::string endpoint = absl::StrCat("tcp://127.0.0.1:", port);
  const bool gpu = HasNvidiaGpu();
  const std::string config = absl::StrCat(
      "# written by `fjord quickstart`\n", "node_name: quickstart\n", "state_dir: ", run,
      "/state\n", "storage_root: ", run, "/storage\n", "listen:\n  - ", endpoint, "\n",
      "security:\n  curve: true\n", "  server_secret_key_file: ", run, "/keys/server.key\n",
      "  keys_file: ", run, "/keys/clients.yaml\n", "models:\n  ", spec.model, ": ", demo,
      "/model\n", "worker:\n  program: ", trainer, "\n", "scheduler:\n  gpus: [", gpu ? "0" : "",
      "]\n  cpu_slots: 1\n", "metrics:\n  listen: \"\"\n", "logging:\n  level: info\n  file: ", run,
      "/fjordd.log\n");
  FJORD_RETURN_IF_ERROR(WriteFile(run + "/fjordd.yaml", config));

  // ---- the daemon --------------------------------------------------------------
  SignalGuard signals;
  say(absl::StrCat("quickstart: starting fjordd on ", endpoint, " (state in ", run, ", ",
                   gpu ? "GPU 0" : "CPU", ")"));
  FJORD_ASSIGN_OR_RETURN(std::unique_ptr<DaemonProcess> daemon,
                         DaemonProcess::Start(fjordd, run + "/fjordd.yaml", run + "/fjordd.out"));
  ClientOptions co;
  co.endpoint = endpoint;
  co.server_public_key = server_keys.public_key;
  co.client_keys = client_keys;
  co.timeout_ms = 10000;
  std::unique_ptr<Client> client;
  const auto start_wait = std::chrono::steady_clock::now();
  while (true) {
    if (std::optional<int> st = daemon->Exited()) {
      return absl::UnavailableError(
          absl::StrCat("fjordd exited (", Describe(*st), ") before answering; its output:\n",
                       Tail(run + "/fjordd.out", 20), Tail(run + "/fjordd.log", 20)));
    }
    ClientOptions probe = co;
    probe.timeout_ms = 300;
    probe.retries = 0;
    FJORD_ASSIGN_OR_RETURN(std::unique_ptr<Client> c, Client::Connect(probe));
    if ((c)->Ping().ok()) break;
    if (std::chrono::steady_clock::now() - start_wait > std::chrono::seconds(30) ||
        g_interrupted.load()) {
      return absl::UnavailableError(absl::StrCat("fjordd did not answer on ", endpoint,
                                                 " within 30 s; its log:\n",
                                                 Tail(run + "/fjordd.log", 20)));
    }
  }
  FJORD_ASSIGN_OR_RETURN(client, Client::Connect(co));

  // ---- the fine-tune -------------------------------------------------------------
  for (std::string* ref : {&spec.training_file, &spec.validation_file, &spec.heldout_file}) {
    if (ref->empty()) continue;
    const std::string local = (*ref)[0] == '/' ? *ref : absl::StrCat(job_doc.base_dir, "/", *ref);
    if (!fs::is_regular_file(local)) continue;
    FJORD_ASSIGN_OR_RETURN(protocol::FileInfo f, client->UploadFile(local));
    say(absl::StrCat("uploaded ", local, " as ", f.id, " (", f.bytes, " bytes)"));
    *ref = f.id;
  }
  FJORD_ASSIGN_OR_RETURN(protocol::Job job, client->CreateJob(spec));
  say(absl::StrCat("created ", job.id, ": LoRA r=", spec.lora.r, " on ", spec.model, ", ",
                   spec.hyperparameters.epochs, " epochs"));
  if (o.json)
    std::fprintf(out, "%s\n",
                 protocol::DumpJson(json{{"created", protocol::JobToJson(job)}}).c_str());
  QuickstartResult result;
  result.job_id = job.id;
  result.base_model_dir = demo + "/model";
  Progress progress(out, ::isatty(::fileno(out)) == 1);
  const auto submitted = std::chrono::steady_clock::now();
  bool timed_out = false;
  absl::StatusOr<protocol::Job> final_job =
      client->StreamEvents(job.id, 0, [&](const protocol::JobEvent& e) {
        if (o.json)
          std::fprintf(out, "%s\n",
                       protocol::DumpJson(json{{"event", protocol::JobEventToJson(e)}}).c_str());
        else
          progress.OnEvent(e);
        RecordEvalEvent(e, &result);
        const double elapsed =
            std::chrono::duration<double>(std::chrono::steady_clock::now() - submitted).count();
        if (elapsed > o.max_seconds) timed_out = true;
        return !g_interrupted.load() && !timed_out;
      });
  if (!final_job.ok()) return final_job.status();
  if (!protocol::IsFinal(final_job->status)) {
    say(g_interrupted.load() ? "interrupted: cancelling the job"
                             : "time is up: cancelling the job");
    absl::StatusOr<protocol::Job> c = client->CancelJob(job.id);
    if (c.ok()) final_job = c;
    if (timed_out) {
      return absl::DeadlineExceededError(absl::StrCat("the quickstart job did not finish within ",
                                                      o.max_seconds / 60,
                                                      " minutes; cancelled it"));
    }
  }
  result.seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - submitted).count();
  result.job_status = final_job->status;
  if (!o.json) progress.Finish(*final_job);
  if (final_job->status == protocol::JobStatus::kSucceeded) {
    result.adapter_dir = results + "/adapter";
    FJORD_ASSIGN_OR_RETURN(std::vector<protocol::AdapterFile> files,
                           client->DownloadAdapter(job.id, result.adapter_dir));
    std::vector<std::string> names;
    for (const auto& f : files) names.push_back(f.name);
    say("");
    say(absl::StrCat("quickstart: ", job.id, " succeeded in ", FormatDuration(result.seconds), " (",
                     final_job->step, " steps)"));
    if (o.job_file.empty()) {
      say(absl::StrCat("  validation: ", CountLines(demo + "/data/valid.jsonl"),
                       " questions about countries left out of the training data"));
    }
    const std::string heldout_what =
        o.job_file.empty() ? absl::StrCat(CountLines(demo + "/data/heldout.jsonl"),
                                          " questions about countries the model never saw")
                           : "";
    for (const std::string& line : EvalSummaryLines(result, heldout_what)) say(line);
    say(absl::StrCat("  PEFT adapter: ", result.adapter_dir, "/ (", absl::StrJoin(names, ", "),
                     ")"));
    say(absl::StrCat("  load it: PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(\"",
                     demo, "/model\"), \"", result.adapter_dir, "\")"));
    // The second step: the base against the fine-tune on the held-out
    // questions, as an evaluation job (docs/comparison.md).
    if (!spec.heldout_file.empty()) {
      absl::StatusOr<std::string> compared =
          CompareBaseAndFineTune(*client, spec, job.id, results, o, out, say);
      if (!compared.ok()) return compared.status();
      result.comparison_dir = *compared;
    }
  } else {
    say(absl::StrCat("quickstart: ", job.id, " ended ", protocol::JobStatusName(final_job->status),
                     final_job->error ? absl::StrCat(": ", final_job->error->message) : ""));
    say(absl::StrCat("  the worker's log: ", run, "/storage/", final_job->tenant, "/jobs/", job.id,
                     "/worker.log", o.keep ? "" : " (rerun with --keep to keep it)"));
  }
  client.reset();
  const bool clean = daemon->Stop(60000);
  say(absl::StrCat("quickstart: stopped fjordd", clean ? "" : " (it did not exit cleanly)",
                   o.keep ? absl::StrCat("; its state and logs are in ", run) : ""));
  if (o.json) {
    auto opt = [](const std::optional<double>& v) { return v ? json(*v) : json(nullptr); };
    json summary{
        {"job", protocol::JobToJson(*final_job)},
        {"adapter", result.adapter_dir.empty() ? json(nullptr) : json(result.adapter_dir)},
        {"base_model", result.base_model_dir},
        {"eval_loss_first", result.first_eval_loss ? json(*result.first_eval_loss) : json(nullptr)},
        {"eval_loss_last", result.last_eval_loss ? json(*result.last_eval_loss) : json(nullptr)},
        {"eval_token_accuracy_first", opt(result.first_eval_token_accuracy)},
        {"eval_token_accuracy_last", opt(result.last_eval_token_accuracy)},
        {"heldout_accuracy_first", opt(result.first_heldout_accuracy)},
        {"heldout_accuracy_last", opt(result.last_heldout_accuracy)},
        {"comparison", result.comparison_dir.empty() ? json(nullptr) : json(result.comparison_dir)},
        {"seconds", result.seconds},
        {"state_dir", o.keep ? json(run) : json(nullptr)}};
    std::fprintf(out, "%s\n", protocol::DumpJson(summary).c_str());
  }
  (void)err;
  return result;
}

}  // namespace fjord::cli

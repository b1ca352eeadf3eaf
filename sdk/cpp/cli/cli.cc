#include "sdk/cpp/cli/cli.h"

#include <sys/stat.h>
#include <unistd.h>

#include <fstream>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <utility>

#include <nlohmann/json.hpp>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "daemon/protocol/curve_keys.h"
#include "daemon/protocol/errors.h"
#include "daemon/protocol/messages.h"
#include "runtime/util/status_macros.h"
#include "sdk/cpp/cli/args.h"
#include "sdk/cpp/cli/compare.h"
#include "sdk/cpp/cli/context.h"
#include "sdk/cpp/cli/exit_codes.h"
#include "sdk/cpp/cli/job_file.h"
#include "sdk/cpp/cli/quickstart.h"
#include "sdk/cpp/cli/render.h"
#include "sdk/cpp/cli/svg_plot.h"
#include "sdk/cpp/client.h"

namespace fjord::cli {
namespace {

using nlohmann::json;

constexpr char kVersion[] = "0.1.0";

const std::vector<OptionSpec>& GlobalOptions() {
  static const auto* specs = new std::vector<OptionSpec>{
      {"endpoint", 0, true, false, "URL",
       "the daemon: tcp://HOST:PORT or ipc:///PATH (FJORD_ENDPOINT)"},
      {"server-key", 0, true, false, "KEY|FILE",
       "the daemon's CURVE public key, or its .pub file (FJORD_SERVER_KEY)"},
      {"keys", 0, true, false, "FILE", "this client's secret key file PREFIX.key (FJORD_KEYS)"},
      {"config", 0, true, false, "FILE",
       "client config file (FJORD_CONFIG; default ~/.config/fjord/client.yaml)"},
      {"timeout", 0, true, false, "SECONDS", "per-reply timeout (FJORD_TIMEOUT; default 10)"},
      {"json", 0, false, false, "", "machine-readable output on stdout"},
      {"help", 'h', false, false, "", "show help"},
  };
  return *specs;
}

// positionals[i], or nullopt after reporting what is missing.
std::optional<std::string> Positional(Ctx& c, size_t i, const char* what, int* exit_code) {
  if (c.args.positionals.size() <= i) {
    *exit_code = UsageFail(c, absl::StrCat("missing ", what));
    return std::nullopt;
  }
  if (c.args.positionals.size() > i + 1) {
    *exit_code =
        UsageFail(c, absl::StrCat("unexpected argument '", c.args.positionals[i + 1], "'"));
    return std::nullopt;
  }
  return c.args.positionals[i];
}

// The job id (the one positional argument) and a connected client, for the
// commands that act on one job. On failure the error has been reported and
// *exit_code says how to exit.
struct JobTarget {
  std::string id;
  Client* client = nullptr;
};

std::optional<JobTarget> JobAndClient(Ctx& c, int* exit_code) {
  std::optional<std::string> id = Positional(c, 0, "the job id", exit_code);
  if (!id) return std::nullopt;
  absl::StatusOr<Client*> cl = c.GetClient();
  if (!cl.ok()) {
    *exit_code = Fail(c, cl.status());
    return std::nullopt;
  }
  return JobTarget{*std::move(id), *cl};
}

json AdapterFilesJson(const std::vector<protocol::AdapterFile>& files) {
  json arr = json::array();
  for (const auto& f : files)
    arr.push_back(json{{"name", f.name}, {"bytes", f.bytes}, {"sha256", f.sha256}});
  return arr;
}

// ---------------------------------------------------------------- commands --

int CmdVersion(Ctx& c) {
  if (c.json_out)
    c.PrintJson(json{{"fjord", kVersion}, {"protocol", protocol::kProtocolVersion}});
  else
    c.Print(absl::StrCat("fjord ", kVersion, " (protocol ", protocol::kSignature, ")\n"));
  return kExitOk;
}

int CmdPing(Ctx& c) {
  absl::StatusOr<Client*> cl = c.GetClient();
  if (!cl.ok()) return Fail(c, cl.status());
  absl::StatusOr<PingInfo> p = (*cl)->Ping();
  if (!p.ok()) return Fail(c, p.status());
  if (c.json_out) {
    c.PrintJson(p->raw);
  } else {
    std::string key_name;
    if (p->raw.contains("principal") && p->raw["principal"].is_object()) {
      key_name = p->raw["principal"].value("key_name", "");
    }
    c.Print(absl::StrCat(p->raw.value("daemon", "fjordd"), " ", p->version, " at ",
                         c.settings->options.endpoint, " (node ", p->node, ", protocol ",
                         p->protocol, ")\n", "you are tenant ", p->tenant, " (role ", p->role,
                         key_name.empty() ? "" : absl::StrCat(", key ", key_name), ")\n"));
  }
  return kExitOk;
}

int CmdModelsList(Ctx& c) {
  absl::StatusOr<Client*> cl = c.GetClient();
  if (!cl.ok()) return Fail(c, cl.status());
  absl::StatusOr<std::vector<std::string>> m = (*cl)->ListModels();
  if (!m.ok()) return Fail(c, m.status());
  if (c.json_out) {
    json arr = json::array();
    for (const std::string& n : *m) arr.push_back(json{{"name", n}});
    c.PrintJson(json{{"models", arr}});
  } else {
    for (const std::string& n : *m) c.Print(n + "\n");
  }
  return kExitOk;
}

int CmdFilesUpload(Ctx& c) {
  int rc = kExitUsage;
  const std::optional<std::string> path_arg =
      Positional(c, 0, "the file to upload (fjord files upload PATH)", &rc);
  if (!path_arg) return rc;
  const std::string& path = *path_arg;
  absl::StatusOr<Client*> cl = c.GetClient();
  if (!cl.ok()) return Fail(c, cl.status());
  absl::StatusOr<protocol::FileInfo> f = (*cl)->UploadFile(path, c.args.Get("name").value_or(""));
  if (!f.ok()) return Fail(c, f.status());
  if (c.json_out) {
    c.PrintJson(protocol::FileInfoToJson(*f));
  } else {
    c.Print(absl::StrCat("uploaded ", path, " as ", f->id, " (", f->filename, ", ", f->bytes,
                         " bytes, sha256 ", f->sha256.substr(0, 12), "…)\n",
                         "use it as training_file: ", f->id, "\n"));
  }
  return kExitOk;
}

// Every file (the client asks for page after page), then (when the daemon
// reports it) the tenant's storage usage. --json: {"files": [...],
// "usage_bytes": N, "quota_bytes": Q, "usage_files": F, "quota_files": G},
// each number only when the daemon sent it.
int CmdFilesList(Ctx& c) {
  absl::StatusOr<Client*> cl = c.GetClient();
  if (!cl.ok()) return Fail(c, cl.status());
  absl::StatusOr<FileListing> listing = (*cl)->ListFilesWithUsage();
  if (!listing.ok()) return Fail(c, listing.status());
  if (c.json_out) {
    json arr = json::array();
    for (const auto& f : listing->files) arr.push_back(protocol::FileInfoToJson(f));
    json doc{{"files", arr}};
    if (listing->usage_bytes) doc["usage_bytes"] = *listing->usage_bytes;
    if (listing->quota_bytes) doc["quota_bytes"] = *listing->quota_bytes;
    if (listing->usage_files) doc["usage_files"] = *listing->usage_files;
    if (listing->quota_files) doc["quota_files"] = *listing->quota_files;
    c.PrintJson(doc);
    return kExitOk;
  }
  std::vector<std::vector<std::string>> rows;
  for (const auto& f : listing->files) {
    rows.push_back({f.id, f.filename, absl::StrCat(f.bytes), FormatTimeMs(f.created_at_ms)});
  }
  c.Print(Table({"ID", "FILENAME", "BYTES", "CREATED"}, rows));
  if (listing->usage_bytes) {
    c.Print(StorageUsageLine(*listing->usage_bytes, listing->quota_bytes.value_or(0),
                             listing->usage_files, listing->quota_files.value_or(0)) +
            "\n");
  }
  return kExitOk;
}

int CmdFilesDelete(Ctx& c) {
  int rc = kExitUsage;
  const std::optional<std::string> id =
      Positional(c, 0, "the file id (fjord files delete FILE_ID)", &rc);
  if (!id) return rc;
  absl::StatusOr<Client*> cl = c.GetClient();
  if (!cl.ok()) return Fail(c, cl.status());
  absl::StatusOr<protocol::FileInfo> f = (*cl)->DeleteFile(*id);
  if (!f.ok()) return Fail(c, f.status());
  if (c.json_out) {
    c.PrintJson(protocol::FileInfoToJson(*f));
  } else {
    c.Print(absl::StrCat("deleted ", f->id, " (", f->filename, ", ", f->bytes, " bytes)\n"));
  }
  return kExitOk;
}

// Flags of `jobs create` -> fields of the job body.
struct SpecFlag {
  const char* flag;
  const char* field;
  char type;  // 's' string, 'i' int, 'n' number, 'l' comma list, 'b' boolean flag (no value: true)
  const char* help;
};
constexpr SpecFlag kSpecFlags[] = {
    {"model", "model", 's', "base model name (fjord models list)"},
    {"training-file", "training_file", 's',
     "file id, tenant path, or a local file (uploaded first)"},
    {"validation-file", "validation_file", 's', "same, for evaluation"},
    {"heldout-file", "heldout_file", 's',
     "same: {\"prompt\",\"answer\"} lines, asked before and after (held-out accuracy)"},
    {"epochs", "hyperparameters.epochs", 'i', "passes over the data (default 1)"},
    {"max-steps", "hyperparameters.max_steps", 'i', "> 0 overrides epochs (default 0)"},
    {"batch-size", "hyperparameters.batch_size", 'i', "rows per micro-batch (default 4)"},
    {"gradient-accumulation-steps", "hyperparameters.gradient_accumulation_steps", 'i',
     "micro-batches per step (default 1)"},
    {"learning-rate", "hyperparameters.learning_rate", 'n', "peak learning rate (default 2e-4)"},
    {"lr-scheduler", "hyperparameters.lr_scheduler", 's',
     "cosine | linear | constant (default cosine)"},
    {"warmup-steps", "hyperparameters.warmup_steps", 'i', "linear warmup steps (default 0)"},
    {"weight-decay", "hyperparameters.weight_decay", 'n', "AdamW weight decay (default 0)"},
    {"max-grad-norm", "hyperparameters.max_grad_norm", 'n',
     "clip gradients at this norm; <= 0: no clipping (default 1)"},
    {"max-length", "hyperparameters.max_length", 'i', "tokens per packed row (default 1024)"},
    {"seed", "hyperparameters.seed", 'i', "random seed (default 42)"},
    {"checkpoint-every-steps", "hyperparameters.checkpoint_every_steps", 'i', "0: only at the end"},
    {"eval-every-steps", "hyperparameters.eval_every_steps", 'i', "0: only at the end"},
    {"lora-r", "lora.r", 'i', "LoRA rank (default 16)"},
    {"lora-alpha", "lora.alpha", 'n', "LoRA alpha (default 32)"},
    {"lora-dropout", "lora.dropout", 'n', "LoRA dropout (default 0.05)"},
    {"target-modules", "lora.target_modules", 'l', "comma list, or all-linear (default)"},
    {"priority", "priority", 'i', "-10..10; > 0 needs the admin role (default 0)"},
    {"gpus", "gpus", 'i', "GPUs the job needs (default 1)"},
    {"quantization", "quantization", 's',
     "none | nf4: the frozen base in 4-bit NF4 (QLoRA), about a quarter of its memory "
     "(default none)"},
    {"shard-base", "shard_base", 'b',
     "each of the job's GPUs holds 1/gpus of the frozen base instead of all of it (in 4 bits "
     "with nf4; no effect with one GPU)"},
    {"method", "method", 's',
     "sft | dpo | orpo | simpo: supervised, or preference tuning on preference pairs "
     "(default sft)"},
    {"beta", "preference.beta", 'n', "preference methods: dpo's KL weight, orpo's lambda (0.1)"},
    {"loss-type", "preference.loss_type", 's', "dpo: sigmoid | robust | hinge | ipo (sigmoid)"},
    {"label-smoothing", "preference.label_smoothing", 'n', "dpo / simpo, below 0.5 (default 0)"},
    {"simpo-gamma", "preference.simpo_gamma", 'n', "simpo's target reward margin (default 0.5)"},
    {"max-restarts", "max_restarts", 'i', "restarts after system failures (default: the daemon's)"},
    {"suffix", "suffix", 's', "a name for the result (metadata.suffix)"},
    {"idempotency-key", "idempotency_key", 's', "repeat a create safely (default: random)"},
    {"tenant", "tenant", 's', "act for this tenant (admin only)"},
};

std::vector<OptionSpec> CreateOptions() {
  std::vector<OptionSpec> o = {
      {"file", 'f', true, false, "job.yaml", "the job, as YAML (flags override its fields)"}};
  for (const SpecFlag& f : kSpecFlags)
    o.push_back({f.flag, 0, f.type != 'b', false,
                 f.type == 'i'   ? "N"
                 : f.type == 'n' ? "X"
                                 : "VALUE",
                 f.help});
  o.push_back({"metadata", 0, true, true, "KEY=VALUE", "a metadata entry (repeatable)"});
  o.push_back({"wait", 'w', false, false, "",
               "follow the job until it ends, with progress (exit 2 unless it succeeds)"});
  o.push_back({"follow", 0, false, false, "", "same as --wait"});
  return o;
}

int CmdJobsCreate(Ctx& c) {
  JobDocument doc;
  if (auto f = c.args.Get("file")) {
    absl::StatusOr<JobDocument> d = LoadJobFile(*f);
    if (!d.ok()) return Fail(c, d.status());
    doc = std::move(*d);
  }
  if (!c.args.positionals.empty()) {
    return UsageFail(c, absl::StrCat("unexpected argument '", c.args.positionals[0],
                                     "' (the job comes from -f job.yaml and flags)"));
  }
  std::set<std::string>
      from_flags;  // fields given on the command line (local paths relative to the cwd)
  for (const SpecFlag& f : kSpecFlags) {
    std::optional<std::string> v = c.args.Get(f.flag);
    if (!v) continue;
    json value;
    switch (f.type) {
      case 'i': {
        absl::StatusOr<int64_t> i = ParseIntOption(f.flag, *v);
        if (!i.ok()) return UsageFail(c, std::string(i.status().message()));
        value = *i;
        break;
      }
      case 'n': {
        absl::StatusOr<double> n = ParseNumberOption(f.flag, *v);
        if (!n.ok()) return UsageFail(c, std::string(n.status().message()));
        value = *n;
        break;
      }
      case 'b':
        value = true;
        break;
      case 'l':
        value = json::array();
        for (absl::string_view p : absl::StrSplit(*v, ',', absl::SkipEmpty()))
          value.push_back(std::string(p));
        break;
      default:
        value = *v;
    }
    SetField(doc, f.field, value);
    from_flags.insert(f.field);
  }
  for (const std::string& kv : c.args.All("metadata")) {
    const size_t eq = kv.find('=');
    if (eq == std::string::npos || eq == 0) {
      return UsageFail(c, absl::StrCat("--metadata takes KEY=VALUE, got '", kv, "'"));
    }
    SetField(doc, absl::StrCat("metadata.", kv.substr(0, eq)), kv.substr(eq + 1));
  }
  if (absl::Status s = NormalizeSuffix(doc); !s.ok()) return Fail(c, s);
  // Validate before touching the daemon: the same rules and messages it applies.
  absl::StatusOr<protocol::JobSpec> spec = ValidateJob(doc);
  if (!spec.ok()) return Fail(c, spec.status());
  absl::StatusOr<Client*> cl = c.GetClient();
  if (!cl.ok()) return Fail(c, cl.status());
  // Local data files are uploaded first and replaced by their file ids.
  for (auto [field, ref] :
       {std::pair<const char*, std::string*>{"training_file", &spec->training_file},
        std::pair<const char*, std::string*>{"validation_file", &spec->validation_file},
        std::pair<const char*, std::string*>{"heldout_file", &spec->heldout_file}}) {
    if (ref->empty() || absl::StartsWith(*ref, "file-")) continue;
    const std::string base = from_flags.count(field) ? std::string(".") : doc.base_dir;
    const std::string local = (*ref)[0] == '/' ? *ref : absl::StrCat(base, "/", *ref);
    if (!IsRegularFile(local)) continue;
    absl::StatusOr<protocol::FileInfo> f = (*cl)->UploadFile(local);
    if (!f.ok()) return Fail(c, f.status());
    if (!c.json_out) c.Print(absl::StrCat("uploaded ", local, " as ", f->id, "\n"));
    *ref = f->id;
  }
  absl::StatusOr<protocol::Job> job = (*cl)->CreateJob(*spec);
  if (!job.ok()) return Fail(c, Locate(job.status(), doc));
  const bool follow = c.args.Has("wait") || c.args.Has("follow");
  if (c.json_out)
    c.PrintJson(follow ? json{{"created", protocol::JobToJson(*job)}} : protocol::JobToJson(*job));
  else
    c.Print(absl::StrCat("created ", job->id, " (", protocol::JobStatusName(job->status), ")\n"));
  if (!follow) return kExitOk;
  return FollowJob(c, **cl, job->id, 0);
}

int CmdJobsList(Ctx& c) {
  ListJobsOptions o;
  if (auto s = c.args.Get("status")) {
    for (absl::string_view name : absl::StrSplit(*s, ',', absl::SkipEmpty())) {
      std::optional<protocol::JobStatus> st = protocol::ParseJobStatus(name);
      if (!st) {
        std::vector<std::string> all;
        for (protocol::JobStatus x : protocol::kAllJobStatuses)
          all.push_back(protocol::JobStatusName(x));
        return UsageFail(c, absl::StrCat("unknown job status '", name, "' (one of ",
                                         absl::StrJoin(all, ", "), ")"));
      }
      o.statuses.push_back(*st);
    }
  }
  if (auto l = c.args.Get("limit")) {
    absl::StatusOr<int64_t> n = ParseIntOption("limit", *l);
    if (!n.ok()) return UsageFail(c, std::string(n.status().message()));
    o.limit = static_cast<int>(*n);
  }
  o.after = c.args.Get("after").value_or("");
  o.tenant = c.args.Get("tenant").value_or("");
  absl::StatusOr<Client*> cl = c.GetClient();
  if (!cl.ok()) return Fail(c, cl.status());
  std::vector<protocol::Job> jobs;
  bool has_more = false;
  while (true) {
    absl::StatusOr<JobPage> page = (*cl)->ListJobs(o);
    if (!page.ok()) return Fail(c, page.status());
    for (auto& j : page->jobs) jobs.push_back(std::move(j));
    has_more = page->has_more;
    if (!c.args.Has("all") || !has_more || jobs.empty()) break;
    o.after = jobs.back().id;
  }
  if (c.json_out) {
    json arr = json::array();
    for (const auto& j : jobs) arr.push_back(protocol::JobToJson(j));
    c.PrintJson(json{{"jobs", arr}, {"has_more", has_more}});
    return kExitOk;
  }
  std::vector<std::vector<std::string>> rows;
  for (const auto& j : jobs) rows.push_back(JobRow(j));
  c.Print(Table(JobHeader(), rows));
  if (has_more) c.Print(absl::StrCat("(more: --after ", jobs.back().id, ", or --all)\n"));
  return kExitOk;
}

using JobCall = absl::StatusOr<protocol::Job> (Client::*)(const std::string&);

int CmdJobAction(Ctx& c, JobCall call, bool describe) {
  int rc = kExitUsage;
  const std::optional<JobTarget> t = JobAndClient(c, &rc);
  if (!t) return rc;
  const std::string& id = t->id;
  Client& client = *t->client;
  absl::StatusOr<protocol::Job> job = (client.*call)(id);
  if (!job.ok()) return Fail(c, job.status());
  if (c.json_out)
    c.PrintJson(protocol::JobToJson(*job));
  else if (describe)
    c.Print(DescribeJob(*job));
  else
    c.Print(absl::StrCat(job->id, " ", protocol::JobStatusName(job->status), "\n"));
  return kExitOk;
}

// job.delete: the job as it was, then its directory, record and events are
// gone. --json: the JOB object.
int CmdJobsDelete(Ctx& c) {
  int rc = kExitUsage;
  const std::optional<JobTarget> t = JobAndClient(c, &rc);
  if (!t) return rc;
  absl::StatusOr<protocol::Job> job = t->client->DeleteJob(t->id);
  if (!job.ok()) return Fail(c, job.status());
  if (c.json_out) {
    c.PrintJson(protocol::JobToJson(*job));
  } else {
    const char* gone =
        job->result_adapter_path.empty() ? "checkpoints and logs" : "checkpoints, adapter and logs";
    c.Print(absl::StrCat("deleted ", job->id, " (", protocol::JobStatusName(job->status), "; its ",
                         gone, " are gone)\n"));
  }
  return kExitOk;
}

absl::StatusOr<std::vector<protocol::JobEvent>> AllEvents(Client& client, const std::string& id,
                                                          int64_t after) {
  std::vector<protocol::JobEvent> all;
  while (true) {
    FJORD_ASSIGN_OR_RETURN(EventPage page, client.ListEvents(id, after, protocol::kMaxEventsLimit));
    for (auto& e : page.events) {
      after = std::max(after, e.seq);
      all.push_back(std::move(e));
    }
    if (!page.has_more || page.events.empty()) return all;
  }
}

int CmdJobsEvents(Ctx& c) {
  int64_t after = 0;
  if (auto a = c.args.Get("after")) {
    absl::StatusOr<int64_t> n = ParseIntOption("after", *a);
    if (!n.ok()) return UsageFail(c, std::string(n.status().message()));
    after = *n;
  }
  int rc = kExitUsage;
  const std::optional<JobTarget> t = JobAndClient(c, &rc);
  if (!t) return rc;
  const std::string& id = t->id;
  Client& client = *t->client;
  if (c.args.Has("follow")) return FollowJob(c, client, id, after);
  absl::StatusOr<std::vector<protocol::JobEvent>> events = AllEvents(client, id, after);
  if (!events.ok()) return Fail(c, events.status());
  for (const auto& e : *events) {
    if (c.json_out)
      c.PrintJson(json{{"event", protocol::JobEventToJson(e)}});
    else
      c.Print(EventLine(e) + "\n");
  }
  return kExitOk;
}

int CmdJobsCheckpoints(Ctx& c) {
  int rc = kExitUsage;
  const std::optional<JobTarget> t = JobAndClient(c, &rc);
  if (!t) return rc;
  const std::string& id = t->id;
  Client& client = *t->client;
  absl::StatusOr<std::vector<protocol::CheckpointInfo>> cps = client.ListCheckpoints(id);
  if (!cps.ok()) return Fail(c, cps.status());
  if (c.json_out) {
    json arr = json::array();
    for (const auto& cp : *cps) arr.push_back(protocol::CheckpointToJson(cp));
    c.PrintJson(json{{"checkpoints", arr}});
    return kExitOk;
  }
  std::vector<std::vector<std::string>> rows;
  for (const auto& cp : *cps) rows.push_back({absl::StrCat(cp.step), cp.path});
  c.Print(Table({"STEP", "PATH"}, rows));
  return kExitOk;
}

int CmdJobsPlot(Ctx& c) {
  int rc = kExitUsage;
  const std::optional<JobTarget> t = JobAndClient(c, &rc);
  if (!t) return rc;
  const std::string& id = t->id;
  Client& client = *t->client;
  const std::string path = c.args.Get("output").value_or(absl::StrCat(id, "-loss.svg"));
  absl::StatusOr<std::vector<protocol::JobEvent>> events = AllEvents(client, id, 0);
  if (!events.ok()) return Fail(c, events.status());
  std::vector<Series> series = LossSeriesFromEvents(*events);
  if (series[0].points.empty() && series[1].points.empty()) {
    return Fail(c, absl::FailedPreconditionError(absl::StrCat(
                       "job ", id, " has no loss values yet (no step or eval events)")));
  }
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  f << LossCurveSvg(absl::StrCat(id, ": loss"), series);
  f.close();
  if (!f) return Fail(c, absl::PermissionDeniedError(absl::StrCat("cannot write ", path)));
  if (c.json_out) {
    c.PrintJson(json{{"path", path},
                     {"loss_points", series[0].points.size()},
                     {"eval_points", series[1].points.size()}});
  } else {
    c.Print(absl::StrCat("wrote ", path, " (", series[0].points.size(), " training-loss points, ",
                         series[1].points.size(), " eval-loss points)\n"));
  }
  return kExitOk;
}

int CmdAdaptersDownload(Ctx& c) {
  int rc = kExitUsage;
  const std::optional<JobTarget> t = JobAndClient(c, &rc);
  if (!t) return rc;
  const std::string& id = t->id;
  Client& client = *t->client;
  const std::string dir = c.args.Get("output").value_or(absl::StrCat(id, "-adapter"));
  absl::StatusOr<std::vector<protocol::AdapterFile>> files = client.DownloadAdapter(id, dir);
  if (!files.ok()) return Fail(c, files.status());
  if (c.json_out) {
    c.PrintJson(json{{"path", dir}, {"files", AdapterFilesJson(*files)}});
    return kExitOk;
  }
  uint64_t total = 0;
  std::vector<std::string> names;
  for (const auto& f : *files) total += f.bytes, names.push_back(f.name);
  c.Print(absl::StrCat("downloaded the adapter of ", id, " to ", dir, "/ (",
                       absl::StrJoin(names, ", "), "; ", total, " bytes, SHA-256 checked)\n",
                       "load it with: PeftModel.from_pretrained(base_model, \"", dir, "\")\n"));
  return kExitOk;
}

int CmdAdaptersFiles(Ctx& c) {
  int rc = kExitUsage;
  const std::optional<JobTarget> t = JobAndClient(c, &rc);
  if (!t) return rc;
  const std::string& id = t->id;
  Client& client = *t->client;
  absl::StatusOr<std::vector<protocol::AdapterFile>> files = client.ListAdapterFiles(id);
  if (!files.ok()) return Fail(c, files.status());
  if (c.json_out) {
    c.PrintJson(json{{"files", AdapterFilesJson(*files)}});
    return kExitOk;
  }
  std::vector<std::vector<std::string>> rows;
  for (const auto& f : *files) rows.push_back({f.name, absl::StrCat(f.bytes), f.sha256});
  c.Print(Table({"NAME", "BYTES", "SHA256"}, rows));
  return kExitOk;
}

int CmdKeysGenerate(Ctx& c) {
  int rc = kExitUsage;
  const std::optional<std::string> prefix_arg =
      Positional(c, 0, "the key file prefix (fjord keys generate PREFIX)", &rc);
  if (!prefix_arg) return rc;
  const std::string& prefix = *prefix_arg;
  const std::string role = c.args.Get("role").value_or("tenant");
  if (role != "tenant" && role != "admin") {
    return UsageFail(c, absl::StrCat("--role must be tenant or admin, got '", role, "'"));
  }
  const std::string tenant = c.args.Get("tenant").value_or("TENANT");
  if (c.args.Has("tenant") && !protocol::ValidTenantName(tenant)) {
    return Fail(
        c, absl::InvalidArgumentError(absl::StrCat(
               "--tenant '", tenant, "' is not a valid tenant name ([a-z0-9][a-z0-9_-]{0,63})")));
  }
  absl::StatusOr<CurveKeyPair> keys = GenerateCurveKeyPair();
  if (!keys.ok()) return Fail(c, keys.status());
  if (absl::Status s = WriteCurveKeyFiles(prefix, *keys); !s.ok()) return Fail(c, s);
  const size_t slash = prefix.find_last_of('/');
  const std::string name =
      c.args.Get("name").value_or(slash == std::string::npos ? prefix : prefix.substr(slash + 1));
  if (c.json_out) {
    c.PrintJson(json{
        {"public_key", keys->public_key},
        {"secret_key_file", prefix + ".key"},
        {"public_key_file", prefix + ".pub"},
        {"keys_file_entry",
         {{"name", name}, {"public_key", keys->public_key}, {"tenant", tenant}, {"role", role}}}});
    return kExitOk;
  }
  c.Print(absl::StrCat(
      "wrote ", prefix, ".key (secret key, mode 0600: keep it private) and ", prefix,
      ".pub\npublic key: ", keys->public_key, "\n\n",
      "For a client: give the operator this entry for the daemon's keys file (clients:):\n",
      "  - name: ", name, "\n    public_key: \"", keys->public_key, "\"\n    tenant: ", tenant,
      "\n    role: ", role, "\n", "and use it with: fjord --keys ", prefix,
      ".key --server-key DAEMON.pub ...  (or FJORD_KEYS / keys: in ~/.config/fjord/client.yaml)\n",
      "For a daemon: point its config's server secret key at ", prefix, ".key and give clients ",
      prefix, ".pub.\n"));
  return kExitOk;
}

int CmdQuickstart(Ctx& c) {
  QuickstartOptions o;
  o.self_path = c.self_path;
  o.env = c.env;
  o.state_dir = c.args.Get("dir").value_or("");
  o.keep = c.args.Has("keep");
  o.json = c.json_out;
  o.job_file = c.args.Get("job").value_or("");
  if (auto t = c.args.Get("max-minutes")) {
    absl::StatusOr<double> m = ParseNumberOption("max-minutes", *t);
    if (!m.ok()) return UsageFail(c, std::string(m.status().message()));
    o.max_seconds = *m * 60;
  }
  absl::StatusOr<QuickstartResult> r = RunQuickstart(o, c.out, c.err);
  if (!r.ok()) return Fail(c, r.status());
  return r->job_status == protocol::JobStatus::kSucceeded ? kExitOk : kExitJobNotSucceeded;
}

// ------------------------------------------------------------ the table --

struct Command {
  std::string name;   // "jobs create"
  std::string usage;  // after the name
  std::string summary;
  std::vector<OptionSpec> options;
  std::function<int(Ctx&)> run;
};

const std::vector<Command>& Commands() {
  static const auto* cmds = new std::vector<Command>{
      {"ping", "", "check the connection: daemon version, node, who you are", {}, CmdPing},
      {"models list", "", "the base models the daemon offers", {}, CmdModelsList},
      {"files upload",
       "PATH",
       "upload a data file (JSONL), checked with SHA-256",
       {{"name", 0, true, false, "NAME", "the name the daemon records (default: the file's)"}},
       CmdFilesUpload},
      {"files list", "", "your uploaded files and your storage usage", {}, CmdFilesList},
      {"files delete", "FILE_ID", "delete a file no unfinished job uses", {}, CmdFilesDelete},
      {"jobs create", "[-f job.yaml] [OPTIONS]", "submit a fine-tune", CreateOptions(),
       CmdJobsCreate},
      {"jobs list",
       "[OPTIONS]",
       "your jobs, newest first",
       {{"status", 0, true, false, "S[,S]", "only these statuses (queued,running,...)"},
        {"limit", 0, true, false, "N", "jobs per page, 1..100 (default 20)"},
        {"after", 0, true, false, "JOB_ID", "the page after this job"},
        {"all", 'a', false, false, "", "every page"},
        {"tenant", 0, true, false, "NAME", "another tenant's jobs (admin only)"}},
       CmdJobsList},
      {"jobs get",
       "JOB_ID",
       "one job in detail",
       {},
       [](Ctx& c) { return CmdJobAction(c, &Client::GetJob, true); }},
      {"jobs cancel",
       "JOB_ID",
       "cancel a job (a running one checkpoints first)",
       {},
       [](Ctx& c) { return CmdJobAction(c, &Client::CancelJob, false); }},
      {"jobs pause",
       "JOB_ID",
       "pause a job (it checkpoints; resume continues from there)",
       {},
       [](Ctx& c) { return CmdJobAction(c, &Client::PauseJob, false); }},
      {"jobs resume",
       "JOB_ID",
       "queue a paused job again",
       {},
       [](Ctx& c) { return CmdJobAction(c, &Client::ResumeJob, false); }},
      {"jobs delete",
       "JOB_ID",
       "delete an ended job with its checkpoints, adapter and logs",
       {},
       CmdJobsDelete},
      {"jobs events",
       "JOB_ID [-f]",
       "the job's events; -f follows them with a progress bar until the job ends",
       {{"follow", 'f', false, false, "", "follow until the job ends (exit 2 unless it succeeds)"},
        {"after", 0, true, false, "SEQ", "only events after this sequence number"}},
       CmdJobsEvents},
      {"jobs checkpoints", "JOB_ID", "the job's checkpoints", {}, CmdJobsCheckpoints},
      {"jobs plot",
       "JOB_ID [-o FILE.svg]",
       "the loss and eval-loss curves as an SVG",
       {{"output", 'o', true, false, "FILE", "where to write (default JOB_ID-loss.svg)"}},
       CmdJobsPlot},
      {"adapters download",
       "JOB_ID [-o DIR]",
       "download a finished job's PEFT adapter",
       {{"output", 'o', true, false, "DIR", "where to put it (default JOB_ID-adapter)"}},
       CmdAdaptersDownload},
      {"adapters files", "JOB_ID", "the files of a finished job's adapter", {}, CmdAdaptersFiles},
      {"compare",
       "--model M --candidate NAME[=job-…|=model:M|=DIR] ... --data FILE|ID ... [OPTIONS]",
       "compare the base model and adapters on prompt/answer files (an evaluation job)",
       CompareOptions(), CmdCompare},
      {"compare show", "JOB_ID [--out DIR] [--html FILE]",
       "the report of a finished evaluation job", CompareShowOptions(), CmdCompareShow},
      {"keys generate",
       "PREFIX [OPTIONS]",
       "a CURVE key pair: PREFIX.key (0600) and PREFIX.pub",
       {{"tenant", 0, true, false, "NAME", "the tenant for the keys-file entry printed"},
        {"name", 0, true, false, "NAME",
         "the key's name in the keys file (default: PREFIX's base name)"},
        {"role", 0, true, false, "ROLE", "tenant (default) or admin"}},
       CmdKeysGenerate},
      {"quickstart",
       "[OPTIONS]",
       "start a local fjordd, fine-tune the demo model on the demo data, download the adapter",
       {{"dir", 0, true, false, "DIR",
         "where the adapter goes (default: a new directory under ~/.cache/fjord/quickstart)"},
        {"job", 0, true, false, "job.yaml",
         "fine-tune this job instead of the demo's (model: demo)"},
        {"keep", 0, false, false, "",
         "keep the daemon's state directory (store, logs, checkpoints) at the end"},
        {"max-minutes", 0, true, false, "M", "give up after M minutes (default 15)"}},
       CmdQuickstart},
      {"version", "", "the CLI's version", {}, CmdVersion},
  };
  return *cmds;
}

std::string MainHelp() {
  std::string out =
      "fjord: submit, watch and collect LoRA fine-tunes on a fjordd daemon\n\n"
      "usage: fjord [GLOBAL OPTIONS] COMMAND [ARGS]\n\ncommands:\n";
  for (const Command& c : Commands()) {
    std::string left = absl::StrCat("  ", c.name, c.usage.empty() ? "" : " ", c.usage);
    if (left.size() < 40)
      left.resize(40, ' ');
    else
      left += "  ";
    absl::StrAppend(&out, left, c.summary, "\n");
  }
  absl::StrAppend(
      &out, "\nglobal options (anywhere on the line):\n", OptionHelp(GlobalOptions()),
      "\nSettings come from flags, then FJORD_* variables, then the client config file\n"
      "($FJORD_CONFIG or ~/.config/fjord/client.yaml: endpoint:, server_public_key:, keys:, "
      "timeout_s:).\n\n",
      ExitCodeHelp());
  return out;
}

std::string CommandHelp(const Command& c) {
  return absl::StrCat("usage: fjord ", c.name, c.usage.empty() ? "" : " ", c.usage, "\n\n",
                      c.summary, "\n",
                      c.options.empty() ? "" : absl::StrCat("\noptions:\n", OptionHelp(c.options)),
                      "\nglobal options:\n", OptionHelp(GlobalOptions()));
}

bool TakesValue(const std::string& token) {
  for (const OptionSpec& s : GlobalOptions()) {
    if (token == "--" + s.name) return s.takes_value;
  }
  return false;
}

}  // namespace

int Main(const std::vector<std::string>& args, FILE* out, FILE* err, const EnvGetter& env,
         const std::string& self_path) {
  // The command words are the first non-option tokens (skipping global
  // options' values).
  std::vector<size_t> word_at;
  for (size_t i = 0; i < args.size() && word_at.size() < 2; ++i) {
    const std::string& a = args[i];
    if (a == "--") break;
    if (!a.empty() && a[0] == '-') {
      if (a.find('=') == std::string::npos && TakesValue(a)) ++i;
      continue;
    }
    word_at.push_back(i);
  }
  const Command* cmd = nullptr;
  size_t words = 0;
  for (const Command& c : Commands()) {
    std::vector<std::string> parts = absl::StrSplit(c.name, ' ');
    if (parts.size() > word_at.size()) continue;
    bool match = true;
    for (size_t k = 0; k < parts.size(); ++k) match = match && args[word_at[k]] == parts[k];
    if (match && parts.size() > words) cmd = &c, words = parts.size();
  }
  const bool wants_help = std::find(args.begin(), args.end(), "--help") != args.end() ||
                          std::find(args.begin(), args.end(), "-h") != args.end();
  if (cmd == nullptr) {
    if (word_at.empty()) {
      std::fputs(MainHelp().c_str(), wants_help ? out : err);
      return wants_help ? kExitOk : kExitUsage;
    }
    const std::string first = args[word_at[0]];
    std::vector<std::string> group;
    for (const Command& c : Commands()) {
      if (absl::StartsWith(c.name, first + " "))
        group.push_back(absl::StrCat("  fjord ", c.name, " ", c.usage));
    }
    if (!group.empty()) {
      if (wants_help) {
        std::fprintf(out, "%s commands:\n%s\n", first.c_str(), absl::StrJoin(group, "\n").c_str());
        return kExitOk;
      }
      std::fprintf(
          err, "fjord: '%s' needs a subcommand%s:\n%s\n", first.c_str(),
          word_at.size() > 1 ? absl::StrCat(" ('", args[word_at[1]], "' is not one)").c_str() : "",
          absl::StrJoin(group, "\n").c_str());
      return kExitUsage;
    }
    std::fprintf(err, "fjord: unknown command '%s' (see fjord --help)\n", first.c_str());
    return kExitUsage;
  }
  std::vector<std::string> rest;
  for (size_t i = 0; i < args.size(); ++i) {
    if (std::find(word_at.begin(), word_at.begin() + static_cast<long>(words), i) ==
        word_at.begin() + static_cast<long>(words)) {
      rest.push_back(args[i]);
    }
  }
  std::vector<OptionSpec> specs = GlobalOptions();
  specs.insert(specs.end(), cmd->options.begin(), cmd->options.end());
  absl::StatusOr<ParsedArgs> parsed = ParseArgs(rest, specs);
  if (!parsed.ok()) {
    std::fprintf(err, "fjord %s: %s\n(see fjord %s --help)\n", cmd->name.c_str(),
                 std::string(parsed.status().message()).c_str(), cmd->name.c_str());
    return kExitUsage;
  }
  if (parsed->Has("help")) {
    std::fputs(CommandHelp(*cmd).c_str(), out);
    return kExitOk;
  }
  Ctx c;
  c.args = std::move(*parsed);
  c.out = out;
  c.err = err;
  c.env = env;
  c.self_path = self_path;
  c.command = cmd->name;
  c.json_out = c.args.Has("json");
  return cmd->run(c);
}

}  // namespace fjord::cli

#include "daemon/server/config.h"

#include <grp.h>
#include <pwd.h>
#include <sys/stat.h>
#include <unistd.h>
#include <yaml-cpp/yaml.h>

#include <fstream>
#include <functional>
#include <set>
#include <sstream>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "daemon/auth/keys.h"
#include "daemon/protocol/curve_keys.h"
#include "daemon/protocol/messages.h"
#include "daemon/util/log.h"
#include "runtime/util/status_macros.h"

namespace fjord::daemon {
namespace {

class Reader {
 public:
  Reader(std::string name) : name_(std::move(name)) {}

  std::string Where(const YAML::Node& n, const std::string& field) const {
    const YAML::Mark m = n.Mark();
    if (m.line >= 0) return absl::StrCat(name_, ":", m.line + 1, ": ", field);
    return absl::StrCat(name_, ": ", field);
  }

  // Calls `fields[key]` for each key of map `n` (at `path`); unknown keys fail.
  absl::Status Map(
      const YAML::Node& n, const std::string& path,
      const std::map<std::string,
                     std::function<absl::Status(const YAML::Node&, const std::string&)>>& fields) {
    if (n.IsNull() && !path.empty())
      return absl::OkStatus();  // a section with every field commented out
    if (!n.IsMap())
      return absl::InvalidArgumentError(
          absl::StrCat(Where(n, path.empty() ? "config" : path), ": expected a mapping"));
    for (auto it = n.begin(); it != n.end(); ++it) {
      if (!it->first.IsScalar()) {
        return absl::InvalidArgumentError(
            absl::StrCat(Where(it->first, path.empty() ? "config" : path),
                         ": field names must be plain strings"));
      }
      const std::string key = it->first.as<std::string>();
      const std::string p = path.empty() ? key : absl::StrCat(path, ".", key);
      auto f = fields.find(key);
      if (f == fields.end()) {
        std::vector<std::string> known;
        for (const auto& [k, v] : fields) known.push_back(k);
        return absl::InvalidArgumentError(absl::StrCat(
            Where(it->first, p), ": unknown field (known: ", absl::StrJoin(known, ", "), ")"));
      }
      FJORD_RETURN_IF_ERROR(f->second(it->second, p));
    }
    return absl::OkStatus();
  }

  template <class T>
  absl::Status Scalar(const YAML::Node& n, const std::string& path, const char* type, T* out) {
    if (!n.IsScalar())
      return absl::InvalidArgumentError(absl::StrCat(Where(n, path), ": expected ", type));
    try {
      *out = n.as<T>();
    } catch (const YAML::Exception&) {
      return absl::InvalidArgumentError(
          absl::StrCat(Where(n, path), ": expected ", type, ", got '", n.Scalar(), "'"));
    }
    return absl::OkStatus();
  }
  auto Str(std::string* out) {
    return [this, out](const YAML::Node& n, const std::string& p) {
      return Scalar(n, p, "a string", out);
    };
  }
  auto Bool(bool* out) {
    return [this, out](const YAML::Node& n, const std::string& p) {
      return Scalar(n, p, "true or false", out);
    };
  }
  template <class T>
  auto Int(T* out, int64_t min, int64_t max) {
    return [this, out, min, max](const YAML::Node& n, const std::string& p) -> absl::Status {
      int64_t v = 0;
      FJORD_RETURN_IF_ERROR(Scalar(n, p, "an integer", &v));
      if (v < min || v > max) {
        return absl::InvalidArgumentError(
            absl::StrCat(Where(n, p), ": must be in [", min, ", ", max, "], got ", v));
      }
      *out = static_cast<T>(v);
      return absl::OkStatus();
    };
  }
  // Seconds in the file, milliseconds in the struct.
  auto Seconds(int64_t* out_ms) {
    return [this, out_ms](const YAML::Node& n, const std::string& p) -> absl::Status {
      double v = 0;
      FJORD_RETURN_IF_ERROR(Scalar(n, p, "a number of seconds", &v));
      if (!(v > 0) || v > 86400 * 30) {
        return absl::InvalidArgumentError(absl::StrCat(Where(n, p), ": must be > 0 seconds"));
      }
      *out_ms = static_cast<int64_t>(v * 1000);
      return absl::OkStatus();
    };
  }
  auto StrList(std::vector<std::string>* out) {
    return [this, out](const YAML::Node& n, const std::string& p) -> absl::Status {
      if (!n.IsSequence())
        return absl::InvalidArgumentError(absl::StrCat(Where(n, p), ": expected a list"));
      out->clear();
      for (const YAML::Node& e : n) {
        std::string v;
        FJORD_RETURN_IF_ERROR(Scalar(e, p, "a string", &v));
        out->push_back(v);
      }
      return absl::OkStatus();
    };
  }
  auto StrMap(std::map<std::string, std::string>* out) {
    return [this, out](const YAML::Node& n, const std::string& p) -> absl::Status {
      if (!n.IsMap())
        return absl::InvalidArgumentError(absl::StrCat(Where(n, p), ": expected a mapping"));
      for (auto it = n.begin(); it != n.end(); ++it) {
        if (!it->first.IsScalar()) {
          return absl::InvalidArgumentError(
              absl::StrCat(Where(it->first, p), ": keys must be plain strings"));
        }
        std::string v;
        if (absl::Status s = Scalar(it->second, absl::StrCat(p, ".", it->first.as<std::string>()),
                                    "a string", &v);
            !s.ok()) {
          return s;
        }
        (*out)[it->first.as<std::string>()] = v;
      }
      return absl::OkStatus();
    };
  }

 private:
  std::string name_;
};

bool IsAbsolute(const std::string& p) { return !p.empty() && p[0] == '/'; }

}  // namespace

bool IsLoopbackOrIpc(absl::string_view e) {
  if (absl::StartsWith(e, "ipc://")) return true;
  if (!absl::StartsWith(e, "tcp://")) return false;
  absl::string_view host = e.substr(6);
  const size_t colon = host.rfind(':');
  if (colon == absl::string_view::npos) return false;
  host = host.substr(0, colon);
  return absl::StartsWith(host, "127.") || host == "[::1]" || host == "localhost";
}

absl::StatusOr<DaemonConfig> ParseDaemonConfig(absl::string_view yaml, absl::string_view name) {
  YAML::Node root;
  try {
    root = YAML::Load(std::string(yaml));
  } catch (const YAML::Exception& e) {
    return absl::InvalidArgumentError(absl::StrCat(name, ": not valid YAML: ", e.what()));
  }
  DaemonConfig c;
  Reader r{std::string(name)};
  auto sub = [&r](auto fields) {
    return [&r, fields](const YAML::Node& n, const std::string& p) { return r.Map(n, p, fields); };
  };
  using Fields =
      std::map<std::string, std::function<absl::Status(const YAML::Node&, const std::string&)>>;
  Fields security = {{"curve", r.Bool(&c.security.curve)},
                     {"server_secret_key_file", r.Str(&c.security.server_secret_key_file)},
                     {"keys_file", r.Str(&c.security.keys_file)},
                     {"allow_plaintext", r.Bool(&c.security.allow_plaintext)},
                     {"plaintext_tenant", r.Str(&c.security.plaintext_tenant)},
                     {"plaintext_admin", r.Bool(&c.security.plaintext_admin)}};
  Fields worker = {
      {"program", r.Str(&c.worker.program)},
      {"args", r.StrList(&c.worker.args)},
      {"user", r.Str(&c.worker.user)},
      {"tenant_uid_range",
       [&](const YAML::Node& n, const std::string& p) -> absl::Status {
         std::string v;
         FJORD_RETURN_IF_ERROR(r.Str(&v)(n, p));
         const std::vector<std::string> ends = absl::StrSplit(v, '-');
         uint64_t first = 0, last = 0;
         // Not root, not the kernel's overflow ids (65534), under 2^31.
         if (ends.size() != 2 || !absl::SimpleAtoi(ends[0], &first) ||
             !absl::SimpleAtoi(ends[1], &last) || first < 1000 || last < first ||
             last >= (uint64_t{1} << 31)) {
           return absl::InvalidArgumentError(absl::StrCat(
               r.Where(n, p),
               ": expected FIRST-LAST, two uids with 1000 <= FIRST <= LAST < 2147483648, got '", v,
               "'"));
         }
         if (last - first + 1 > (uint64_t{1} << 20)) {
           return absl::InvalidArgumentError(
               absl::StrCat(r.Where(n, p), ": ", last - first + 1, " ids; at most 1048576"));
         }
         if (first <= 65534 && 65534 <= last) {
           return absl::InvalidArgumentError(
               absl::StrCat(r.Where(n, p), ": '", v, "' contains 65534 (nobody)"));
         }
         c.worker.tenant_uid_first = static_cast<uint32_t>(first);
         c.worker.tenant_uid_count = static_cast<uint32_t>(last - first + 1);
         return absl::OkStatus();
       }},
      {"env", r.StrMap(&c.worker.env)},
      {"validate", r.Bool(&c.worker.validate)},
      {"heartbeat_timeout_s", r.Seconds(&c.worker.heartbeat_timeout_ms)},
      {"stop_grace_s", r.Seconds(&c.worker.stop_grace_ms)},
      {"validation_timeout_s", r.Seconds(&c.worker.validation_timeout_ms)},
      {"max_restarts", r.Int(&c.worker.max_restarts, 0, 100)},
      {"no_new_privs", r.Bool(&c.worker.no_new_privs)}};
  Fields scheduler = {
      {"gpus",
       [&](const YAML::Node& n, const std::string& p) -> absl::Status {
         if (!n.IsSequence())
           return absl::InvalidArgumentError(
               absl::StrCat(r.Where(n, p), ": expected a list of GPU indices"));
         std::set<int> seen;
         for (const YAML::Node& e : n) {
           int g = 0;
           FJORD_RETURN_IF_ERROR(r.Int(&g, 0, 1023)(e, p));
           if (!seen.insert(g).second)
             return absl::InvalidArgumentError(
                 absl::StrCat(r.Where(e, p), ": GPU ", g, " listed twice"));
           c.scheduler.gpus.push_back(g);
         }
         return absl::OkStatus();
       }},
      {"gpu_memory_gb",
       [&](const YAML::Node& n, const std::string& p) -> absl::Status {
         double gb = 0;
         FJORD_RETURN_IF_ERROR(r.Scalar(n, p, "a number of GB", &gb));
         // 0: unknown (the default, written out); NaN fails both comparisons.
         if (!(gb >= 0 && gb <= 1e6)) {
           return absl::InvalidArgumentError(
               absl::StrCat(r.Where(n, p),
                            ": must be a number of GB > 0 (each GPU's memory; 0: unknown, no "
                            "check), got '",
                            n.Scalar(), "'"));
         }
         c.scheduler.gpu_memory_gb = gb;
         return absl::OkStatus();
       }},
      {"cpu_slots", r.Int(&c.scheduler.cpu_slots, 1, 1024)},
      {"max_running_per_tenant", r.Int(&c.scheduler.max_running_per_tenant, 1, 100000)},
      {"max_queued_per_tenant", r.Int(&c.scheduler.max_queued_per_tenant, 1, 1000000)},
      {"max_validators", r.Int(&c.scheduler.max_validators, 1, 1024)},
      {"max_validators_per_tenant", r.Int(&c.scheduler.max_validators_per_tenant, 1, 1024)}};
  Fields limits = {
      {"max_message_bytes", r.Int(&c.limits.max_message_bytes, 4096, int64_t{1} << 30)},
      {"max_body_bytes", r.Int(&c.limits.max_body_bytes, 1024, int64_t{1} << 28)},
      {"upload_chunk_bytes", r.Int(&c.limits.upload_chunk_bytes, 1024, int64_t{1} << 28)},
      {"max_upload_bytes", r.Int(&c.limits.max_upload_bytes, 1, int64_t{1} << 42)},
      {"max_peers", r.Int(&c.limits.max_peers, 1, 1000000)},
      {"max_peers_per_key", r.Int(&c.limits.max_peers_per_key, 1, 1000000)},
      {"admin_reserved_peers", r.Int(&c.limits.admin_reserved_peers, 0, 1000000)},
      {"max_streams_per_peer", r.Int(&c.limits.max_streams_per_peer, 1, 10000)},
      {"heartbeat_interval_ms", r.Int(&c.limits.heartbeat_interval_ms, 10, 600000)},
      {"upload_idle_s", r.Seconds(&c.limits.upload_idle_ms)},
      {"max_uploads_per_tenant", r.Int(&c.limits.max_uploads_per_tenant, 1, 10000)},
      {"max_tenant_storage_bytes", r.Int(&c.limits.max_tenant_storage_bytes, 0, int64_t{1} << 60)},
      {"max_tenant_files", r.Int(&c.limits.max_tenant_files, 0, int64_t{1} << 40)}};
  SlurmConfig& sl = c.executor.slurm;
  Fields slurm = {{"partition", r.Str(&sl.partition)},
                  {"account", r.Str(&sl.account)},
                  {"qos", r.Str(&sl.qos)},
                  {"time_limit", r.Str(&sl.time_limit)},
                  {"gpus_per_node", r.Int(&sl.gpus_per_node, 0, 1024)},
                  {"ranks_per_node", r.Int(&sl.ranks_per_node, 1, 1024)},
                  {"cpus_per_task", r.Int(&sl.cpus_per_task, 0, 100000)},
                  {"sbatch_args", r.StrList(&sl.sbatch_args)},
                  {"bin_dir", r.Str(&sl.bin_dir)},
                  {"slurm_conf", r.Str(&sl.slurm_conf)},
                  {"report_listen", r.Str(&sl.report_listen)},
                  {"report_endpoint", r.Str(&sl.report_endpoint)},
                  {"poll_interval_s", r.Seconds(&sl.poll_interval_ms)},
                  {"signal_before_limit_s", r.Int(&sl.signal_before_limit_s, 0, 86400)},
                  {"max_jobs", r.Int(&sl.max_jobs, 1, 1000000)},
                  {"command_timeout_s", r.Seconds(&sl.command_timeout_ms)}};
  Fields executor = {{"kind", r.Str(&c.executor.kind)}, {"slurm", sub(slurm)}};
  Fields top = {
      {"node_name", r.Str(&c.node_name)},
      {"state_dir", r.Str(&c.state_dir)},
      {"storage_root", r.Str(&c.storage_root)},
      {"listen", r.StrList(&c.listen)},
      {"security", sub(security)},
      {"models", r.StrMap(&c.models)},
      {"worker", sub(worker)},
      {"scheduler", sub(scheduler)},
      {"executor", sub(executor)},
      {"limits", sub(limits)},
      {"metrics", sub(Fields{{"listen", r.Str(&c.metrics.listen)},
                             {"bearer_token_file", r.Str(&c.metrics.bearer_token_file)}})},
      {"logging",
       sub(Fields{{"level", r.Str(&c.logging.level)}, {"file", r.Str(&c.logging.file)}})}};
  // yaml-cpp throws on conversions the readers do not foresee: never let one
  // escape (fjordd would abort on a bad config).
  try {
    FJORD_RETURN_IF_ERROR(r.Map(root, "", top));
  } catch (const YAML::Exception& e) {
    return absl::InvalidArgumentError(absl::StrCat(name, ": ", e.what()));
  }

  auto missing = [&](const char* field) {
    return absl::InvalidArgumentError(absl::StrCat(name, ": ", field, " is required"));
  };
  if (c.state_dir.empty()) return missing("state_dir");
  if (c.storage_root.empty()) return missing("storage_root");
  if (c.listen.empty()) return missing("listen");
  if (c.worker.program.empty()) return missing("worker.program");
  if (!c.worker.user.empty() && c.worker.tenant_uid_count > 0) {
    return absl::InvalidArgumentError(
        absl::StrCat(name,
                     ": worker.user and worker.tenant_uid_range are both set: workers run either "
                     "as one user for every "
                     "tenant or as one uid per tenant; keep one"));
  }
  for (const auto& [field, path] : {std::pair<const char*, std::string*>{"state_dir", &c.state_dir},
                                    {"storage_root", &c.storage_root},
                                    {"worker.program", &c.worker.program}}) {
    if (!IsAbsolute(*path))
      return absl::InvalidArgumentError(
          absl::StrCat(name, ": ", field, " must be an absolute path, got '", *path, "'"));
  }
  for (const std::string& e : c.listen) {
    if (!absl::StartsWith(e, "tcp://") && !absl::StartsWith(e, "ipc://")) {
      return absl::InvalidArgumentError(
          absl::StrCat(name, ": listen: '", e, "' is not tcp://HOST:PORT or ipc:///PATH"));
    }
  }
  if (c.executor.kind != "local" && c.executor.kind != "slurm") {
    return absl::InvalidArgumentError(absl::StrCat(
        name, ": executor.kind: expected local or slurm, got '", c.executor.kind, "'"));
  }
  if (c.executor.kind == "slurm") {
    if (!absl::StartsWith(sl.report_listen, "tcp://")) {
      return absl::InvalidArgumentError(
          absl::StrCat(name,
                       ": executor.slurm.report_listen: required with executor.kind slurm, as "
                       "tcp://ADDRESS:PORT (the ranks on the compute nodes report there), got '",
                       sl.report_listen, "'"));
    }
    if (!sl.report_endpoint.empty() && !absl::StartsWith(sl.report_endpoint, "tcp://")) {
      return absl::InvalidArgumentError(
          absl::StrCat(name, ": executor.slurm.report_endpoint: expected tcp://HOST:PORT, got '",
                       sl.report_endpoint, "'"));
    }
    if (!IsAbsolute(sl.bin_dir)) {
      return absl::InvalidArgumentError(absl::StrCat(
          name, ": executor.slurm.bin_dir must be an absolute path, got '", sl.bin_dir, "'"));
    }
    // fjordd sets these itself: the job's shape, user, files and signals.
    static const char* const kOwn[] = {
        "--uid",           "--gid",       "--output",    "--error",
        "--input",         "--chdir",     "--export",    "--wrap",
        "--job-name",      "--nodes",     "--ntasks",    "--ntasks-per-node",
        "--gpus-per-node", "--parsable",  "--requeue",   "--no-requeue",
        "--signal",        "--open-mode", "--test-only", "--array"};
    for (const std::string& a : sl.sbatch_args) {
      if (!absl::StartsWith(a, "--")) {
        return absl::InvalidArgumentError(absl::StrCat(name, ": executor.slurm.sbatch_args: '", a,
                                                       "' is not a long option (--name=value)"));
      }
      const std::string opt = a.substr(0, a.find('='));
      for (const char* own : kOwn) {
        if (opt == own) {
          return absl::InvalidArgumentError(absl::StrCat(
              name, ": executor.slurm.sbatch_args: '", opt,
              "' is set by fjordd for every job (its shape, user, files and signals)"));
        }
      }
    }
  }
  if (c.security.curve) {
    if (c.security.server_secret_key_file.empty())
      return missing("security.server_secret_key_file (with curve: true)");
    if (c.security.keys_file.empty()) return missing("security.keys_file (with curve: true)");
  } else {
    if (!c.security.allow_plaintext) {
      return absl::InvalidArgumentError(
          absl::StrCat(name,
                       ": security.curve is false but security.allow_plaintext is not true: plain "
                       "connections must be asked for explicitly"));
    }
    for (const std::string& e : c.listen) {
      if (!IsLoopbackOrIpc(e)) {
        return absl::InvalidArgumentError(
            absl::StrCat(name, ": listen: '", e,
                         "' is not loopback; plaintext (curve: false) is allowed only on "
                         "127.0.0.0/8, [::1] and ipc://"));
      }
    }
    if (!protocol::ValidTenantName(c.security.plaintext_tenant)) {
      return absl::InvalidArgumentError(
          absl::StrCat(name, ": security.plaintext_tenant is not a valid tenant name"));
    }
  }
  for (const auto& [model, path] : c.models) {
    if (model.empty() || model.size() > 128 || !IsAbsolute(path)) {
      return absl::InvalidArgumentError(
          absl::StrCat(name, ": models.", model, ": must map a name to an absolute directory"));
    }
  }
  LogLevel level;
  if (!ParseLogLevel(c.logging.level, &level)) {
    return absl::InvalidArgumentError(
        absl::StrCat(name, ": logging.level must be debug, info, warning or error"));
  }
  if (c.node_name.empty()) {
    char host[256] = {};
    ::gethostname(host, sizeof(host) - 1);
    c.node_name = host;
  }
  if (c.limits.max_body_bytes > c.limits.max_message_bytes ||
      c.limits.upload_chunk_bytes + c.limits.max_body_bytes > c.limits.max_message_bytes) {
    return absl::InvalidArgumentError(absl::StrCat(
        name, ": limits: max_body_bytes + upload_chunk_bytes must fit in max_message_bytes"));
  }
  return c;
}

absl::StatusOr<DaemonConfig> LoadDaemonConfig(const std::string& path) {
  std::ifstream f(path);
  if (!f) return absl::NotFoundError(absl::StrCat("config file ", path, " cannot be read"));
  std::stringstream s;
  s << f.rdbuf();
  return ParseDaemonConfig(s.str(), path);
}

absl::Status CheckConfig(const DaemonConfig& c) {
  std::vector<std::string> problems;
  auto is_dir = [](const std::string& p) {
    struct stat st {};
    return ::stat(p.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
  };
  if (c.security.curve) {
    if (auto k = LoadCurveSecretKeyFile(c.security.server_secret_key_file); !k.ok()) {
      problems.push_back(std::string(k.status().message()));
    } else if (absl::Status o =
                   CheckKeyFileOwner(c.security.server_secret_key_file, "server secret key file");
               !o.ok()) {
      problems.push_back(std::string(o.message()));
    }
    if (auto k = LoadKeysFile(c.security.keys_file); !k.ok())
      problems.push_back(std::string(k.status().message()));
  }
  if (!c.metrics.bearer_token_file.empty()) {
    if (auto t = LoadBearerTokenFile(c.metrics.bearer_token_file); !t.ok()) {
      problems.push_back(std::string(t.status().message()));
    }
  }
  for (const auto& [model, path] : c.models) {
    struct stat st {};
    if (::stat((path + "/config.json").c_str(), &st) != 0) {
      problems.push_back(absl::StrCat("models.", model, ": ", path, "/config.json does not exist"));
    }
  }
  if (c.models.empty()) problems.push_back("models: none configured; every job.create would fail");
  if (::access(c.worker.program.c_str(), X_OK) != 0) {
    problems.push_back(absl::StrCat("worker.program: ", c.worker.program, " is not executable"));
  }
  if (!c.worker.user.empty() && ::getpwnam(c.worker.user.c_str()) == nullptr) {
    problems.push_back(absl::StrCat("worker.user: no such user '", c.worker.user, "'"));
  }
  if (absl::Status s = CheckTenantUidRange(c); !s.ok())
    problems.push_back(std::string(s.message()));
  if (c.worker.tenant_uid_count > 0 && ::geteuid() != 0) {
    problems.push_back(
        "worker.tenant_uid_range: fjordd must run as root to start workers as the tenants' uids");
  }
  if (!is_dir(c.storage_root))
    problems.push_back(absl::StrCat("storage_root: ", c.storage_root, " is not a directory"));
  if (!is_dir(c.state_dir))
    problems.push_back(absl::StrCat("state_dir: ", c.state_dir, " is not a directory"));
  if (problems.empty()) return absl::OkStatus();
  return absl::FailedPreconditionError(absl::StrJoin(problems, "\n"));
}

absl::Status CheckTenantUidRange(const DaemonConfig& c) {
  if (c.worker.tenant_uid_count == 0) return absl::OkStatus();
  const uint64_t first = c.worker.tenant_uid_first, last = first + c.worker.tenant_uid_count - 1;
  const std::string range = absl::StrCat(first, "-", last);
  std::string clash;
  ::setpwent();
  while (struct passwd* pw = ::getpwent()) {
    if (pw->pw_uid >= first && pw->pw_uid <= last) {
      clash = absl::StrCat("user '", pw->pw_name, "' has uid ", pw->pw_uid);
      break;
    }
  }
  ::endpwent();
  if (clash.empty()) {
    ::setgrent();
    while (struct group* gr = ::getgrent()) {
      if (gr->gr_gid >= first && gr->gr_gid <= last) {
        clash = absl::StrCat("group '", gr->gr_name, "' has gid ", gr->gr_gid);
        break;
      }
    }
    ::endgrent();
  }
  if (clash.empty()) return absl::OkStatus();
  return absl::FailedPreconditionError(absl::StrCat(
      "worker.tenant_uid_range ", range, " must be reserved for fjordd's tenants, but ", clash,
      ": a tenant given that id would share its files; choose a range no user or group of the node "
      "uses"));
}

}  // namespace fjord::daemon

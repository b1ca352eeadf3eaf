#include "runtime/dist/world_spec.h"

#include <algorithm>
#include <cstdlib>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "runtime/util/status_macros.h"

namespace fjord::dist {
namespace {

absl::Status Bad(const std::string& name, const std::string& value, absl::string_view why) {
  return absl::InvalidArgumentError(absl::StrCat(name, "=\"", value, "\": ", why));
}

// A non-negative integer (or >= `min`) from the variable `name`.
absl::StatusOr<int> IntVar(const EnvLookup& env, const std::string& name, int min) {
  const std::optional<std::string> v = env(name);
  if (!v) return absl::InvalidArgumentError(absl::StrCat(name, " is not set"));
  int n = 0;
  if (!absl::SimpleAtoi(*v, &n)) return Bad(name, *v, "not an integer");
  if (n < min) return Bad(name, *v, absl::StrCat("must be at least ", min));
  return n;
}

absl::StatusOr<int> PortVar(const EnvLookup& env, const std::string& name) {
  FJORD_ASSIGN_OR_RETURN(const int port, IntVar(env, name, 1));
  if (port > 65535) return Bad(name, *env(name), "not a TCP port (1-65535)");
  return port;
}

absl::Status CheckRanks(const WorldSpec& w, const char* rank_var, const char* size_var,
                        const char* local_var) {
  if (w.rank >= w.world_size) {
    return absl::InvalidArgumentError(
        absl::StrCat(rank_var, "=", w.rank, " is not below ", size_var, "=", w.world_size));
  }
  if (w.local_rank >= w.local_world_size) {
    return absl::InvalidArgumentError(absl::StrCat(local_var, "=", w.local_rank,
                                                   " is not below the ranks on this node (",
                                                   w.local_world_size, ")"));
  }
  if (w.local_world_size > w.world_size) {
    return absl::InvalidArgumentError(absl::StrCat("ranks on this node (", w.local_world_size,
                                                   ") exceed ", size_var, "=", w.world_size));
  }
  return absl::OkStatus();
}

absl::StatusOr<WorldSpec> FromTorchrun(const EnvLookup& env) {
  WorldSpec w;
  w.source = "torchrun";
  FJORD_ASSIGN_OR_RETURN(w.rank, IntVar(env, "RANK", 0));
  FJORD_ASSIGN_OR_RETURN(w.world_size, IntVar(env, "WORLD_SIZE", 1));
  w.local_rank = w.rank;
  w.local_world_size = w.world_size;
  if (env("LOCAL_RANK")) {
    FJORD_ASSIGN_OR_RETURN(w.local_rank, IntVar(env, "LOCAL_RANK", 0));
  }
  if (env("LOCAL_WORLD_SIZE")) {
    FJORD_ASSIGN_OR_RETURN(w.local_world_size, IntVar(env, "LOCAL_WORLD_SIZE", 1));
  } else if (env("LOCAL_RANK")) {
    // Without LOCAL_WORLD_SIZE the node's share is unknown: at least this rank's.
    w.local_world_size = std::max(w.local_rank + 1, 1);
  }
  if (w.world_size > 1) {
    const std::optional<std::string> addr = env("MASTER_ADDR");
    if (!addr || addr->empty()) {
      return absl::InvalidArgumentError(
          "MASTER_ADDR is not set: a world of several ranks needs the rendezvous host (rank 0's)");
    }
    w.master_addr = *addr;
    FJORD_ASSIGN_OR_RETURN(w.master_port, PortVar(env, "MASTER_PORT"));
  } else {
    if (const auto addr = env("MASTER_ADDR"); addr && !addr->empty()) w.master_addr = *addr;
    if (env("MASTER_PORT")) {
      FJORD_ASSIGN_OR_RETURN(w.master_port, PortVar(env, "MASTER_PORT"));
    }
  }
  FJORD_RETURN_IF_ERROR(CheckRanks(w, "RANK", "WORLD_SIZE", "LOCAL_RANK"));
  return w;
}

absl::StatusOr<WorldSpec> FromSlurm(const EnvLookup& env) {
  WorldSpec w;
  w.source = "slurm";
  FJORD_ASSIGN_OR_RETURN(w.rank, IntVar(env, "SLURM_PROCID", 0));
  FJORD_ASSIGN_OR_RETURN(w.world_size, IntVar(env, "SLURM_NTASKS", 1));
  w.local_rank = 0;
  if (env("SLURM_LOCALID")) {
    FJORD_ASSIGN_OR_RETURN(w.local_rank, IntVar(env, "SLURM_LOCALID", 0));
  }
  w.local_world_size = w.local_rank + 1;
  if (env("SLURM_NTASKS_PER_NODE")) {
    FJORD_ASSIGN_OR_RETURN(w.local_world_size, IntVar(env, "SLURM_NTASKS_PER_NODE", 1));
  } else if (const auto tpn = env("SLURM_TASKS_PER_NODE")) {
    absl::StatusOr<int> n = FirstSlurmTasksPerNode(*tpn);
    if (!n.ok()) return Bad("SLURM_TASKS_PER_NODE", *tpn, n.status().message());
    w.local_world_size = std::max(*n, w.local_rank + 1);
  }
  w.local_world_size = std::min(w.local_world_size, w.world_size);
  if (const auto addr = env("MASTER_ADDR"); addr && !addr->empty()) {
    w.master_addr = *addr;
  } else if (w.world_size > 1) {
    const char* var = env("SLURM_JOB_NODELIST") ? "SLURM_JOB_NODELIST" : "SLURM_NODELIST";
    const std::optional<std::string> list = env(var);
    if (!list) {
      return absl::InvalidArgumentError(
          "SLURM_JOB_NODELIST is not set (and no MASTER_ADDR): the rendezvous host is unknown");
    }
    absl::StatusOr<std::string> host = FirstSlurmHost(*list);
    if (!host.ok()) return Bad(var, *list, host.status().message());
    w.master_addr = *host;
  }
  if (env("MASTER_PORT")) {
    FJORD_ASSIGN_OR_RETURN(w.master_port, PortVar(env, "MASTER_PORT"));
  } else if (w.world_size > 1) {
    FJORD_ASSIGN_OR_RETURN(const int job, IntVar(env, "SLURM_JOB_ID", 0));
    w.master_port = kSlurmPortBase + job % kSlurmPortSpan;
  }
  FJORD_RETURN_IF_ERROR(CheckRanks(w, "SLURM_PROCID", "SLURM_NTASKS", "SLURM_LOCALID"));
  return w;
}

}  // namespace

std::string WorldSpec::ToString() const {
  return absl::StrCat("rank ", rank, " of ", world_size, " (local ", local_rank, " of ",
                      local_world_size, "), rendezvous ", master_addr, ":", master_port, ", from ",
                      source, "'s variables");
}

EnvLookup ProcessEnv() {
  return [](const std::string& name) -> std::optional<std::string> {
    const char* v = std::getenv(name.c_str());
    if (v == nullptr) return std::nullopt;
    return std::string(v);
  };
}

absl::StatusOr<std::optional<WorldSpec>> WorldSpecFromEnv(const EnvLookup& env) {
  if (env("RANK") || env("WORLD_SIZE")) {
    FJORD_ASSIGN_OR_RETURN(WorldSpec w, FromTorchrun(env));
    return std::optional<WorldSpec>(std::move(w));
  }
  if (env("SLURM_PROCID")) {
    FJORD_ASSIGN_OR_RETURN(WorldSpec w, FromSlurm(env));
    return std::optional<WorldSpec>(std::move(w));
  }
  return std::optional<WorldSpec>();
}

absl::StatusOr<std::string> FirstSlurmHost(absl::string_view nodelist) {
  if (nodelist.empty()) return absl::InvalidArgumentError("the node list is empty");
  // The first entry ends at the first comma outside brackets.
  size_t end = 0;
  int depth = 0;
  for (; end < nodelist.size(); ++end) {
    const char c = nodelist[end];
    if (c == '[') ++depth;
    if (c == ']' && --depth < 0) return absl::InvalidArgumentError("unbalanced ']'");
    if (c == ',' && depth == 0) break;
  }
  if (depth != 0) return absl::InvalidArgumentError("unbalanced '['");
  const absl::string_view first = nodelist.substr(0, end);
  const size_t open = first.find('[');
  if (open == absl::string_view::npos) {
    if (first.empty()) return absl::InvalidArgumentError("the first host is empty");
    return std::string(first);
  }
  const size_t close = first.find(']', open);
  const absl::string_view prefix = first.substr(0, open);
  const absl::string_view ranges = first.substr(open + 1, close - open - 1);
  const absl::string_view suffix = first.substr(close + 1);
  // The first value of the first range: "03-05" -> "03" (zero padding kept).
  const absl::string_view range = ranges.substr(0, std::min(ranges.find(','), ranges.size()));
  const absl::string_view lo = range.substr(0, std::min(range.find('-'), range.size()));
  if (lo.empty() || lo.find_first_not_of("0123456789") != absl::string_view::npos) {
    return absl::InvalidArgumentError(absl::StrCat("malformed range \"[", ranges, "]\""));
  }
  return absl::StrCat(prefix, lo, suffix);
}

absl::StatusOr<int> FirstSlurmTasksPerNode(absl::string_view tasks_per_node) {
  const absl::string_view first =
      tasks_per_node.substr(0, std::min(tasks_per_node.find(','), tasks_per_node.size()));
  const absl::string_view count = first.substr(0, std::min(first.find('('), first.size()));
  int n = 0;
  if (!absl::SimpleAtoi(count, &n) || n < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("expected a task count such as \"4\" or \"4(x2)\", got \"", first, "\""));
  }
  return n;
}

}  // namespace fjord::dist

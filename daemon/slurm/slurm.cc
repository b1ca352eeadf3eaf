#include "daemon/slurm/slurm.h"

#include <csignal>
#include <cstring>

#include "absl/status/status.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"

namespace fjord::daemon {

absl::StatusOr<SlurmShape> ShapeFor(int ranks, const SlurmConfig& config) {
  if (ranks < 1) ranks = 1;
  const int per_node = config.gpus_per_node > 0 ? config.gpus_per_node : config.ranks_per_node;
  SlurmShape shape;
  shape.gpus_per_node = 0;
  if (ranks <= per_node) {
    shape.nodes = 1;
    shape.tasks_per_node = ranks;
  } else {
    if (ranks % per_node != 0) {
      return absl::InvalidArgumentError(absl::StrCat(
          "gpus: ", ranks, " ranks do not fill whole nodes of ", per_node,
          config.gpus_per_node > 0 ? " GPUs" : " ranks", " (the cluster's nodes each take ",
          per_node, "): ask for at most ", per_node, " or a multiple of it"));
    }
    shape.nodes = ranks / per_node;
    shape.tasks_per_node = per_node;
  }
  if (config.gpus_per_node > 0) shape.gpus_per_node = shape.tasks_per_node;
  return shape;
}

std::string SlurmJobName(const std::string& job_id) { return absl::StrCat("fjord-", job_id); }

std::vector<std::string> SbatchArgs(const SlurmConfig& config, const SlurmShape& shape,
                                    const std::string& job_id, const WorkerSpec& spec,
                                    bool test_only) {
  std::vector<std::string> a = {"--parsable", absl::StrCat("--job-name=", SlurmJobName(job_id)),
                                absl::StrCat("--nodes=", shape.nodes),
                                absl::StrCat("--ntasks-per-node=", shape.tasks_per_node)};
  if (shape.gpus_per_node > 0) a.push_back(absl::StrCat("--gpus-per-node=", shape.gpus_per_node));
  if (config.cpus_per_task > 0) a.push_back(absl::StrCat("--cpus-per-task=", config.cpus_per_task));
  if (!config.partition.empty()) a.push_back(absl::StrCat("--partition=", config.partition));
  if (!config.account.empty()) a.push_back(absl::StrCat("--account=", config.account));
  if (!config.qos.empty()) a.push_back(absl::StrCat("--qos=", config.qos));
  if (!config.time_limit.empty()) a.push_back(absl::StrCat("--time=", config.time_limit));
  if (spec.uid) a.push_back(absl::StrCat("--uid=", *spec.uid));
  if (spec.gid) a.push_back(absl::StrCat("--gid=", *spec.gid));
  if (!spec.working_dir.empty()) a.push_back(absl::StrCat("--chdir=", spec.working_dir));
  const std::string log = spec.log_path.empty() ? "/dev/null" : spec.log_path;
  a.push_back(absl::StrCat("--output=", log));
  a.push_back("--open-mode=append");
  a.push_back("--export=NONE");
  // Node failure or preemption: Slurm runs the same job again; its ranks
  // resume from the newest checkpoint.
  a.push_back("--requeue");
  if (config.signal_before_limit_s > 0) {
    a.push_back(absl::StrCat("--signal=TERM@", config.signal_before_limit_s));
  }
  for (const std::string& s : config.sbatch_args) a.push_back(s);
  if (test_only) a.push_back("--test-only");
  return a;
}

std::string ShellQuote(absl::string_view word) {
  std::string out = "'";
  for (char c : word) {
    if (c == '\'')
      out += "'\\''";
    else
      out += c;
  }
  out += "'";
  return out;
}

std::string BatchScript(const WorkerSpec& spec) {
  std::string s = "#!/bin/bash\n# fjordd: one fjord job, its ranks started by srun\n";
  for (const auto& [k, v] : spec.env) {
    absl::StrAppend(&s, "export ", k, "=", ShellQuote(v), "\n");
  }
  if (!spec.cuda_visible_devices.empty()) {
    absl::StrAppend(&s, "export CUDA_VISIBLE_DEVICES=", ShellQuote(spec.cuda_visible_devices),
                    "\n");
  }
  // --kill-on-bad-exit: one rank failing ends the others at once (they
  // would fail at their next collective anyway, after its timeout).
  absl::StrAppend(&s, "exec srun --export=ALL --kill-on-bad-exit=1 ", ShellQuote(spec.program));
  for (const std::string& a : spec.args) absl::StrAppend(&s, " ", ShellQuote(a));
  s += "\n";
  return s;
}

std::vector<std::string> SqueueArgs() {
  return {"--noheader", "--states=all", "--format=%i|%T|%r|%N"};
}

absl::StatusOr<std::map<std::string, SlurmJobInfo>> ParseSqueue(absl::string_view out) {
  std::map<std::string, SlurmJobInfo> jobs;
  int line_no = 0;
  for (absl::string_view line : absl::StrSplit(out, '\n')) {
    ++line_no;
    line = absl::StripAsciiWhitespace(line);
    if (line.empty()) continue;
    std::vector<absl::string_view> f = absl::StrSplit(line, '|');
    if (f.size() < 4 || f[0].empty() || f[1].empty()) {
      return absl::InvalidArgumentError(absl::StrCat("squeue output, line ", line_no,
                                                     ": expected ID|STATE|REASON|NODES, got '",
                                                     line.substr(0, 200), "'"));
    }
    SlurmJobInfo info;
    info.id = std::string(f[0]);
    // "CANCELLED by 0" in some versions' extended state.
    info.state = std::string(f[1].substr(0, f[1].find(' ')));
    info.reason = std::string(f[2]);
    info.nodes = f[3] == "(null)" ? "" : std::string(f[3]);
    // An array or het job prints ids like 12_3 or 12+1: not fjord's (fjord
    // submits plain jobs), kept under their own id all the same.
    jobs[info.id] = std::move(info);
  }
  return jobs;
}

std::vector<std::string> ScontrolShowJobArgs(const std::string& slurm_id) {
  return {"show", "job", "--oneliner", slurm_id};
}

absl::StatusOr<SlurmJobInfo> ParseScontrolJob(absl::string_view out) {
  SlurmJobInfo info;
  bool state = false;
  for (absl::string_view word : absl::StrSplit(out, absl::ByAnyChar(" \n"), absl::SkipEmpty())) {
    const size_t eq = word.find('=');
    if (eq == absl::string_view::npos) continue;
    const absl::string_view key = word.substr(0, eq), value = word.substr(eq + 1);
    if (key == "JobId") {
      info.id = std::string(value);
    } else if (key == "JobState") {
      info.state = std::string(value);
      state = true;
    } else if (key == "Reason") {
      info.reason = std::string(value);
    } else if (key == "NodeList") {
      info.nodes = value == "(null)" ? "" : std::string(value);
    } else if (key == "ExitCode") {
      std::vector<absl::string_view> cs = absl::StrSplit(value, ':');
      if (cs.size() != 2 || !absl::SimpleAtoi(cs[0], &info.exit_code) ||
          !absl::SimpleAtoi(cs[1], &info.signal)) {
        return absl::InvalidArgumentError(
            absl::StrCat("scontrol: ExitCode '", value, "' is not CODE:SIGNAL"));
      }
    }
  }
  if (info.id.empty() || !state) {
    return absl::InvalidArgumentError(
        absl::StrCat("scontrol: no JobId and JobState in '", out.substr(0, 200), "'"));
  }
  return info;
}

SlurmPhase PhaseOf(absl::string_view state) {
  if (state == "RUNNING" || state == "COMPLETING" || state == "STAGE_OUT" || state == "SIGNALING")
    return SlurmPhase::kRunning;
  if (state == "COMPLETED" || state == "FAILED" || state == "CANCELLED" || state == "TIMEOUT" ||
      state == "NODE_FAIL" || state == "PREEMPTED" || state == "OUT_OF_MEMORY" ||
      state == "BOOT_FAIL" || state == "DEADLINE" || state == "SPECIAL_EXIT" || state == "REVOKED")
    return SlurmPhase::kEnded;
  return SlurmPhase::kPending;
}

SlurmEnd EndOf(const SlurmJobInfo& info, bool stop_requested) {
  SlurmEnd end;
  const std::string job = absl::StrCat("Slurm job ", info.id);
  if (info.state == "COMPLETED" || info.state == "FAILED") {
    // The batch script execs srun: its status is the highest of the ranks'.
    end.exit.exit_code = info.exit_code;
    end.exit.signal = info.signal;
    if (info.signal != 0 || info.exit_code < 0) {
      end.cause = absl::StrCat(job, " ", info.state == "FAILED" ? "failed" : "ended", " (",
                               end.exit.Describe(), ")");
    }
    return end;
  }
  end.exit.exit_code = -1;
  end.exit.signal = info.signal != 0 ? info.signal : SIGKILL;
  if (info.state == "CANCELLED") {
    if (stop_requested) {
      end.cause = absl::StrCat(job, " was cancelled by fjordd");
    } else {
      end.cause = absl::StrCat(job, " was cancelled outside fjord (scancel or an operator)");
      end.final = true;
    }
  } else if (info.state == "TIMEOUT") {
    end.cause = absl::StrCat(job, " reached its time limit");
    end.final = true;
  } else if (info.state == "DEADLINE") {
    end.cause = absl::StrCat(job, " reached its deadline");
    end.final = true;
  } else if (info.state == "NODE_FAIL") {
    end.cause = absl::StrCat(job, " lost a node (", info.nodes.empty() ? "?" : info.nodes, ")");
  } else if (info.state == "PREEMPTED") {
    end.cause = absl::StrCat(job, " was preempted");
  } else if (info.state == "OUT_OF_MEMORY") {
    end.cause = absl::StrCat(job, " ran out of memory");
  } else if (info.state == "BOOT_FAIL") {
    end.cause = absl::StrCat(job, " could not boot its nodes");
  } else {
    end.cause = absl::StrCat(job, " ended ", info.state);
  }
  return end;
}

}  // namespace fjord::daemon

// Jobs: job.create, job.get, job.list, job.cancel/pause/resume, job.events,
// job.subscribe, job.checkpoints, job.delete (docs/protocol.md §5).
#include <sodium.h>

#include <algorithm>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "daemon/jobs/job_yaml.h"
#include "daemon/protocol/errors.h"
#include "daemon/protocol/protocol.h"
#include "daemon/server/base_memory.h"
#include "daemon/server/handlers.h"
#include "daemon/server/sessions.h"
#include "daemon/util/log.h"
#include "runtime/model/config.h"
#include "runtime/util/status_macros.h"

namespace fjord::daemon {

using nlohmann::json;
using protocol::FieldReader;
using protocol::Job;
using protocol::JobEvent;
using protocol::JobStatus;

namespace {

std::string RandomJobId() {
  uint8_t raw[8];
  randombytes_buf(raw, sizeof(raw));
  return absl::StrCat("job-",
                      absl::BytesToHexString(absl::string_view(reinterpret_cast<char*>(raw), 8)));
}

// "step-<digits>": a checkpoint directory's name (runtime/train/checkpoint.h).
bool IsStepName(const std::string& name, int64_t* step) {
  if (name.size() <= 5 || name.size() > 24 || name.compare(0, 5, "step-") != 0) return false;
  int64_t v = 0;
  for (size_t i = 5; i < name.size(); ++i) {
    if (name[i] < '0' || name[i] > '9') return false;
    v = v * 10 + (name[i] - '0');
  }
  *step = v;
  return true;
}

// The spec's tenant, priority, restarts, GPUs and base model checked against
// the principal and the node.
absl::Status CheckSpec(DaemonContext& ctx, const Principal& p, protocol::JobSpec& spec) {
  const DaemonConfig& config = *ctx.config;
  const std::string tenant = spec.tenant.empty() ? p.tenant : spec.tenant;
  if (tenant != p.tenant && !p.admin) {
    return protocol::Error(
        absl::StatusCode::kPermissionDenied,
        absl::StrCat("principal '", p.key_name, "' may submit only for tenant '", p.tenant, "'"),
        "tenant");
  }
  if (spec.priority > 0 && !p.admin) {
    return protocol::Error(absl::StatusCode::kPermissionDenied,
                           "priority above 0 needs the admin role", "priority");
  }
  spec.tenant = tenant;
  if (spec.max_restarts < 0) spec.max_restarts = config.worker.max_restarts;
  if (!config.models.count(spec.model)) {
    std::string known;
    for (const auto& [name, path] : config.models)
      absl::StrAppend(&known, known.empty() ? "" : ", ", name);
    return protocol::InvalidArgument(
        absl::StrCat("unknown model '", spec.model, "' (this node has: ", known, ")"), "model");
  }
  if (config.executor.kind == "slurm") {
    // The cluster decides: its shape (slurm/slurm.h) and Slurm's own limits
    // (sbatch --test-only), before anything is stored.
    WorkerSpec probe;
    probe.program = config.worker.program;
    if (absl::Status s = ctx.workers->CheckFits("job-create-check", probe, std::max(1, spec.gpus));
        !s.ok()) {
      return protocol::Error(s.code(), std::string(s.message()), "gpus");
    }
    return absl::OkStatus();
  }
  const int slots = config.scheduler.gpus.empty() ? config.scheduler.cpu_slots
                                                  : static_cast<int>(config.scheduler.gpus.size());
  if (spec.gpus > slots) {
    return protocol::InvalidArgument(
        absl::StrCat("gpus is ", spec.gpus, " but this node has ", slots,
                     config.scheduler.gpus.empty() ? " CPU slots" : " GPUs"),
        "gpus");
  }
  // The frozen base must fit on each of the job's GPUs (each rank holds all
  // of it, or 1/gpus with shard_base), and a base stored in 4-bit cannot be
  // sharded. A config.json that cannot be read is the trainer's to report,
  // not this check's.
  if (!config.scheduler.gpus.empty() &&
      (config.scheduler.gpu_memory_gb > 0 || (spec.shard_base && spec.gpus > 1))) {
    absl::StatusOr<model::ModelConfig> model_config =
        model::ModelConfig::FromFile(config.models.at(spec.model) + "/config.json");
    if (model_config.ok()) {
      FJORD_RETURN_IF_ERROR(CheckBaseFitsOnGpu(
          spec.model, *model_config, spec.quantization, spec.shard_base, spec.gpus,
          static_cast<int>(config.scheduler.gpus.size()), config.scheduler.gpu_memory_gb));
    }
  }
  return absl::OkStatus();
}

// An evaluation job's candidates, datasets and judge, resolved to paths on
// this node; errors name the field (candidates[i].job, datasets[i], ...).
absl::StatusOr<EvaluationPaths> ResolveEvaluation(DaemonContext& ctx, const Principal& p,
                                                  const std::string& tenant,
                                                  const protocol::JobSpec& spec) {
  const DaemonConfig& config = *ctx.config;
  EvaluationPaths out;
  out.model = config.models.at(spec.model);
  if (!spec.evaluation.judge.empty()) {
    auto judge = config.models.find(spec.evaluation.judge);
    if (judge == config.models.end()) {
      std::string known;
      for (const auto& [name, path] : config.models)
        absl::StrAppend(&known, known.empty() ? "" : ", ", name);
      return protocol::InvalidArgument(
          absl::StrCat("evaluation.judge: unknown model '", spec.evaluation.judge,
                       "' (this node has: ", known, ")"),
          "evaluation.judge");
    }
    out.judge = judge->second;
  }
  for (size_t i = 0; i < spec.datasets.size(); ++i) {
    const std::string param = absl::StrCat("datasets[", i, "]");
    FJORD_ASSIGN_OR_RETURN(std::string path,
                           ResolveDataFile(ctx, tenant, spec.datasets[i], param.c_str()));
    out.datasets.push_back(std::move(path));
  }
  for (size_t i = 0; i < spec.candidates.size(); ++i) {
    const protocol::EvalCandidate& c = spec.candidates[i];
    const std::string param = absl::StrCat("candidates[", i, "]");
    lora::EvaluationConfig::Candidate resolved{c.name, "", "", "", "", ""};
    // Its base: the job's model, or another of the node's.
    const std::string& base = c.model.empty() ? spec.model : c.model;
    if (!c.model.empty()) {
      auto m = config.models.find(c.model);
      if (m == config.models.end()) {
        return protocol::InvalidArgument(
            absl::StrCat(param, ".model: unknown model '", c.model, "'"), param + ".model");
      }
      resolved.model = m->second;
      resolved.model_name = c.model;
    }
    if (!c.job.empty()) {
      const std::string field = param + ".job";
      absl::StatusOr<Job> job = JobFor(ctx, p, c.job);
      if (!job.ok() || job->tenant != tenant) {
        return protocol::Error(absl::StatusCode::kNotFound, absl::StrCat("no job '", c.job, "'"),
                               field);
      }
      if (job->spec.is_evaluation()) {
        return protocol::InvalidArgument(
            absl::StrCat("job ", c.job, " is an evaluation; a candidate's job is a fine-tune"),
            field);
      }
      if (job->status != JobStatus::kSucceeded || job->result_adapter_path.empty()) {
        return protocol::Error(
            absl::StatusCode::kFailedPrecondition,
            absl::StrCat("job ", c.job, " is ", protocol::JobStatusName(job->status),
                         "; only a succeeded job has an adapter"),
            field);
      }
      if (job->spec.model != base) {
        return protocol::InvalidArgument(
            absl::StrCat("job ", c.job, " fine-tuned model '", job->spec.model, "', not '", base,
                         "': an adapter runs on its own base (set the candidate's model)"),
            field);
      }
      resolved.adapter = job->result_adapter_path;
    } else if (!c.adapter_config.empty()) {
      const std::string config_param = param + ".adapter_config",
                        model_param = param + ".adapter_model";
      FJORD_ASSIGN_OR_RETURN(resolved.adapter_config,
                             ResolveDataFile(ctx, tenant, c.adapter_config, config_param.c_str()));
      FJORD_ASSIGN_OR_RETURN(resolved.adapter_model,
                             ResolveDataFile(ctx, tenant, c.adapter_model, model_param.c_str()));
    }
    out.candidates.push_back(std::move(resolved));
  }
  return out;
}

absl::StatusOr<Reply> Control(DaemonContext& ctx, const Request& rq, Trigger trigger) {
  FJORD_ASSIGN_OR_RETURN(Job job, ReadJobRequest(ctx, rq));
  const JobStatus before = job.status;
  FJORD_ASSIGN_OR_RETURN(JobStatus after, NextStatus(before, trigger));
  if (after == before) return Reply::Body(ctx.jobs->ToJson(job));
  if (trigger == Trigger::kResume) {
    FJORD_RETURN_IF_ERROR(ctx.tenants->CheckQuota(job.tenant, 1, 1, "tenant",
                                                  ", and a resumed job writes checkpoints"));
  }
  const char* verb = trigger == Trigger::kCancel  ? "cancel"
                     : trigger == Trigger::kPause ? "pause"
                                                  : "resume";
  FJORD_ASSIGN_OR_RETURN(
      Job updated,
      ctx.jobs->Apply(job, trigger, absl::StrCat(verb, " requested by ", rq.principal.key_name),
                      [&](Job& j) {
                        if (trigger == Trigger::kResume) j.error.reset();
                        if (IsWaiting(before) && !IsWaiting(after)) {
                          j.slurm_job_id.clear();  // its Slurm job is cancelled below
                          j.queue_detail.clear();
                        }
                      }));
  if (after == JobStatus::kPausing || after == JobStatus::kCancelling) {
    ctx.workers->Stop(job.id);  // SIGTERM: checkpoint and exit; SIGKILL after the grace period
  } else if (before == JobStatus::kValidating && after == JobStatus::kCancelled) {
    ctx.workers->Kill(job.id);
  } else if (IsWaiting(before) && ctx.workers->Running(job.id)) {
    // Waiting in Slurm's queue: its Slurm job goes (a resumed job gets a new one).
    ctx.workers->Kill(job.id);
  }
  if (trigger == Trigger::kResume) ctx.jobs->Requeue(job.id);
  return Reply::Body(ctx.jobs->ToJson(updated));
}

}  // namespace

absl::StatusOr<Reply> HandleJobCreate(DaemonContext& ctx, const Request& rq) {
  FJORD_ASSIGN_OR_RETURN(protocol::JobSpec spec, protocol::JobSpecFromJson(*rq.body));
  FJORD_RETURN_IF_ERROR(CheckSpec(ctx, rq.principal, spec));
  const std::string tenant = spec.tenant;
  const std::string fingerprint = protocol::JobSpecFingerprint(spec);
  // A retry with a known key returns its job before any limit applies.
  if (!spec.idempotency_key.empty()) {
    FJORD_ASSIGN_OR_RETURN(std::optional<Job> replay,
                           ctx.store->FindIdempotent(tenant, spec.idempotency_key, fingerprint));
    if (replay) {
      absl::StatusOr<Job> current = ctx.jobs->Load(replay->id);
      return Reply::Body(ctx.jobs->ToJson(current.ok() ? *current : *replay));
    }
  }
  FJORD_RETURN_IF_ERROR(ctx.storage_available());
  FJORD_RETURN_IF_ERROR(ctx.tenants->EnsureTenant(tenant));
  FJORD_RETURN_IF_ERROR(
      ctx.tenants->CheckQuota(tenant, 1, 1, "tenant", ", and a job writes checkpoints"));
  JobPaths paths;
  EvaluationPaths evaluation;
  if (spec.is_evaluation()) {
    FJORD_ASSIGN_OR_RETURN(evaluation, ResolveEvaluation(ctx, rq.principal, tenant, spec));
  } else {
    paths.model = ctx.config->models.at(spec.model);
    FJORD_ASSIGN_OR_RETURN(paths.train,
                           ResolveDataFile(ctx, tenant, spec.training_file, "training_file"));
    if (!spec.validation_file.empty()) {
      FJORD_ASSIGN_OR_RETURN(paths.validation,
                             ResolveDataFile(ctx, tenant, spec.validation_file, "validation_file"));
    }
    if (!spec.heldout_file.empty()) {
      FJORD_ASSIGN_OR_RETURN(paths.heldout,
                             ResolveDataFile(ctx, tenant, spec.heldout_file, "heldout_file"));
    }
  }
  int waiting = 0;
  for (const auto& [id, job] : ctx.jobs->live()) {
    if (job.tenant == tenant && (IsWaiting(job.status) || job.status == JobStatus::kValidating ||
                                 job.status == JobStatus::kPaused)) {
      ++waiting;
    }
  }
  if (waiting >= ctx.config->scheduler.max_queued_per_tenant) {
    return protocol::Error(
        absl::StatusCode::kResourceExhausted,
        absl::StrCat("tenant '", tenant, "' has ", waiting, " jobs waiting, the limit is ",
                     ctx.config->scheduler.max_queued_per_tenant),
        "tenant");
  }
  Job job;
  job.id = RandomJobId();
  job.tenant = tenant;
  job.spec = spec;
  job.status = ctx.config->worker.validate ? JobStatus::kValidating : JobStatus::kQueued;
  job.created_at_ms = ctx.clock->WallMs();
  job.node = ctx.config->node_name;
  paths.output_dir = evaluation.output_dir = ctx.storage->JobDir(tenant, job.id);
  // The directory is root's until job.yaml and events.jsonl are in it;
  // then it is the worker's.
  FJORD_ASSIGN_OR_RETURN(SafeDir dir, ctx.storage->EnsureJobDir(tenant, job.id));
  absl::Status prepared = [&]() -> absl::Status {
    FJORD_ASSIGN_OR_RETURN(std::string yaml, spec.is_evaluation()
                                                 ? EvaluationYamlFor(spec, evaluation, job.id)
                                                 : TrainYamlFor(spec, paths));
    FJORD_ASSIGN_OR_RETURN(WorkerIds ids, ctx.tenants->IdsFor(tenant));
    FJORD_RETURN_IF_ERROR(dir.WriteFileAtomic("job.yaml", yaml, 0640, ids.gid));
    FJORD_RETURN_IF_ERROR(dir.OpenAppend("events.jsonl", 0640).status());
    return ctx.tenants->HandJobDirToWorker(dir, tenant);
  }();
  if (!prepared.ok()) {
    (void)ctx.tenants->RemoveJobDir(tenant, job.id);
    return prepared;
  }
  JobEvent accepted;
  accepted.time_ms = ctx.clock->WallMs();
  accepted.type = "status";
  accepted.message = "accepted";
  accepted.data = {{"status", protocol::JobStatusName(job.status)}, {"previous", nullptr}};
  std::vector<JobEvent> events = {accepted};
  absl::StatusOr<CreateResult> created = ctx.jobs->Create(job, fingerprint, &events);
  if (!created.ok() || !created->created) {
    (void)ctx.tenants->RemoveJobDir(tenant, job.id);
    if (!created.ok()) return created.status();
    LogInfo("idempotent replay of job.create", {{"job", created->job.id}, {"tenant", tenant}});
    absl::StatusOr<Job> current = ctx.jobs->Load(created->job.id);
    return Reply::Body(ctx.jobs->ToJson(current.ok() ? *current : created->job));
  }
  ctx.tenants->RefreshJob(tenant, job.id);
  ctx.metrics->Add("fjord_jobs_accepted_total", "");
  LogInfo(
      "job accepted",
      {{"job", job.id}, {"tenant", tenant}, {"model", spec.model}, {"key", rq.principal.key_name}});
  return Reply::Body(ctx.jobs->ToJson(job));
}

absl::StatusOr<Reply> HandleJobGet(DaemonContext& ctx, const Request& rq) {
  FJORD_ASSIGN_OR_RETURN(Job job, ReadJobRequest(ctx, rq));
  return Reply::Body(ctx.jobs->ToJson(job));
}

absl::StatusOr<Reply> HandleJobList(DaemonContext& ctx, const Request& rq) {
  FJORD_ASSIGN_OR_RETURN(FieldReader r, FieldReader::Make(*rq.body, ""));
  JobFilter f;
  std::vector<std::string> statuses;
  FJORD_RETURN_IF_ERROR(r.StringList("status", &statuses, 16, 32));
  for (const std::string& s : statuses) {
    std::optional<JobStatus> st = protocol::ParseJobStatus(s);
    if (!st)
      return protocol::InvalidArgument(absl::StrCat("status: unknown job status '", s, "'"),
                                       "status");
    f.statuses.push_back(*st);
  }
  FJORD_RETURN_IF_ERROR(r.Int("limit", &f.limit, 1, protocol::kMaxListLimit));
  FJORD_RETURN_IF_ERROR(r.String("after", &f.after, false, 64));
  const bool named_tenant = r.Has("tenant");
  FJORD_ASSIGN_OR_RETURN(std::string tenant, ActingTenant(rq.principal, r));
  FJORD_RETURN_IF_ERROR(r.Finish());
  f.tenant = rq.principal.admin && !named_tenant ? "" : tenant;
  if (!f.after.empty() && !JobFor(ctx, rq.principal, f.after).ok()) {
    return protocol::Error(absl::StatusCode::kNotFound, absl::StrCat("no job '", f.after, "'"),
                           "after");
  }
  ctx.jobs->FlushDirty();
  FJORD_ASSIGN_OR_RETURN(std::vector<Job> jobs, ctx.store->ListJobs(f));
  const bool has_more = static_cast<int>(jobs.size()) > f.limit;
  if (has_more) jobs.resize(static_cast<size_t>(f.limit));
  json out = json::array();
  for (const Job& j : jobs) {
    const Job* live = ctx.jobs->FindLive(j.id);
    out.push_back(ctx.jobs->ToJson(live ? *live : j));
  }
  return Reply::Body(json{{"jobs", out}, {"has_more", has_more}});
}

absl::StatusOr<Reply> HandleJobCancel(DaemonContext& ctx, const Request& rq) {
  return Control(ctx, rq, Trigger::kCancel);
}
absl::StatusOr<Reply> HandleJobPause(DaemonContext& ctx, const Request& rq) {
  return Control(ctx, rq, Trigger::kPause);
}
absl::StatusOr<Reply> HandleJobResume(DaemonContext& ctx, const Request& rq) {
  return Control(ctx, rq, Trigger::kResume);
}

absl::StatusOr<Reply> HandleJobEvents(DaemonContext& ctx, const Request& rq) {
  int64_t after = 0;
  int limit = 100;
  FJORD_ASSIGN_OR_RETURN(Job job, ReadJobRequest(ctx, rq, [&](FieldReader& r) -> absl::Status {
                           FJORD_RETURN_IF_ERROR(r.Int("after_seq", &after, 0, INT64_MAX));
                           return r.Int("limit", &limit, 1, protocol::kMaxEventsLimit);
                         }));
  ctx.jobs->FlushDirty();
  FJORD_ASSIGN_OR_RETURN(std::vector<JobEvent> events,
                         ctx.store->ListEvents(job.id, after, limit + 1));
  const bool has_more = static_cast<int>(events.size()) > limit;
  if (has_more) events.resize(static_cast<size_t>(limit));
  json out = json::array();
  for (const JobEvent& e : events) out.push_back(protocol::JobEventToJson(e));
  return Reply::Body(json{{"events", out}, {"has_more", has_more}});
}

absl::StatusOr<Reply> HandleJobSubscribe(DaemonContext& ctx, const Request& rq) {
  int64_t after = 0;
  FJORD_ASSIGN_OR_RETURN(Job job, ReadJobRequest(ctx, rq, [&](FieldReader& r) {
                           return r.Int("after_seq", &after, 0, INT64_MAX);
                         }));
  ctx.jobs->FlushDirty();
  FJORD_RETURN_IF_ERROR(ctx.sessions->Subscribe(rq.identity, rq.request_id, job.id, after));
  return Reply::Streaming();
}

absl::StatusOr<Reply> HandleJobCheckpoints(DaemonContext& ctx, const Request& rq) {
  FJORD_ASSIGN_OR_RETURN(Job job, ReadJobRequest(ctx, rq));
  // The step-* directories of the job's checkpoints/ (the worker's: listed
  // through SafeDir; a link in place of checkpoints/ or of a step is not
  // followed and not listed).
  std::vector<std::pair<int64_t, std::string>> steps;
  absl::StatusOr<SafeDir> dir = ctx.storage->OpenJobDir(job.tenant, job.id);
  absl::StatusOr<SafeDir> checkpoints = dir.ok() ? dir->OpenDir("checkpoints") : dir.status();
  if (checkpoints.ok()) {
    FJORD_ASSIGN_OR_RETURN(std::vector<SafeDir::Entry> entries,
                           checkpoints->List(ctx.tenants->WalkBound()));
    for (const SafeDir::Entry& e : entries) {
      int64_t step = 0;
      if (e.type == SafeDir::Entry::Type::kDir && IsStepName(e.name, &step))
        steps.push_back({step, e.name});
    }
  }
  std::sort(steps.begin(), steps.end());
  json out = json::array();
  const std::string root = ctx.storage->JobDir(job.tenant, job.id) + "/checkpoints/";
  for (const auto& [step, name] : steps)
    out.push_back(protocol::CheckpointToJson({step, root + name}));
  return Reply::Body(json{{"checkpoints", out}});
}

absl::StatusOr<Reply> HandleJobDelete(DaemonContext& ctx, const Request& rq) {
  FJORD_ASSIGN_OR_RETURN(Job job, ReadJobRequest(ctx, rq));
  if (!protocol::IsFinal(job.status)) {
    return protocol::Error(
        absl::StatusCode::kFailedPrecondition,
        absl::StrCat("job ", job.id, " is ", protocol::JobStatusName(job.status),
                     "; only a job that has ended can be deleted (cancel it first)"),
        "job_id");
  }
  // A live evaluation that compares this job's adapter still needs it.
  for (const auto& [id, live] : ctx.jobs->live()) {
    for (const protocol::EvalCandidate& c : live.spec.candidates) {
      if (live.tenant == job.tenant && c.job == job.id) {
        return protocol::Error(
            absl::StatusCode::kFailedPrecondition,
            absl::StrCat("job ", job.id, "'s adapter is candidate '", c.name, "' of evaluation ",
                         id, ", which is ", protocol::JobStatusName(live.status),
                         ": cancel it or wait until it ends"),
            "job_id");
      }
    }
  }
  FJORD_RETURN_IF_ERROR(ctx.storage_available());
  // The directory goes before the record: a crash in between leaves a
  // record whose delete can be repeated, never bytes with no record.
  if (absl::Status s = ctx.tenants->RemoveJobDir(job.tenant, job.id); !s.ok()) {
    return absl::UnavailableError(absl::StrCat("cannot delete the job's directory: ", s.message()));
  }
  FJORD_RETURN_IF_ERROR(ctx.jobs->Delete(job.id));
  ctx.tenants->ForgetJob(job.tenant, job.id);
  ctx.adapter_cache->erase(job.id);
  LogInfo("job deleted", {{"job", job.id}, {"tenant", job.tenant}, {"key", rq.principal.key_name}});
  return Reply::Body(ctx.jobs->ToJson(job));
}

}  // namespace fjord::daemon

#include "daemon/server/job_runner.h"

#include <pwd.h>

#include <algorithm>
#include <cmath>
#include <utility>
#include <variant>

#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "daemon/protocol/worker_protocol.h"
#include "daemon/scheduler/scheduler.h"
#include "daemon/storage/storage.h"
#include "daemon/util/log.h"
#include "daemon/worker/exit_policy.h"
#include "runtime/util/status_macros.h"

namespace fjord::daemon {

using nlohmann::json;
using protocol::Job;
using protocol::JobEvent;
using protocol::JobStatus;

JobRunner::JobRunner(DaemonContext* ctx, const Nvml* nvml) : ctx_(ctx), nvml_(nvml) {}

// ---- launching ------------------------------------------------------------------

// Also makes sure the tenant's area belongs to the ids the worker will run
// as (a job requeued after a restart with other ids).
absl::StatusOr<WorkerSpec> JobRunner::BaseSpec(const Job& job) {
  const DaemonConfig& config = *ctx_->config;
  FJORD_ASSIGN_OR_RETURN(WorkerIds ids, ctx_->tenants->IdsFor(job.tenant));
  FJORD_RETURN_IF_ERROR(ctx_->tenants->OwnArea(job.tenant, ids));
  FJORD_RETURN_IF_ERROR(ctx_->tenants->GiveWorkerItsLogs(job.tenant, job.id, ids));
  const std::string dir = ctx_->storage->JobDir(job.tenant, job.id);
  WorkerSpec spec;
  spec.program = config.worker.program;
  spec.env = {{"PATH", "/usr/local/bin:/usr/bin:/bin"}, {"CUDA_DEVICE_ORDER", "PCI_BUS_ID"}};
  // A tenant's uid has no passwd entry: its home is the job directory.
  if (config.worker.tenant_uid_count > 0) {
    spec.env["HOME"] = dir;
  } else if (!config.worker.user.empty() && ids.uid) {
    if (const struct passwd* pw = ::getpwuid(*ids.uid)) spec.env["HOME"] = pw->pw_dir;
  }
  for (const auto& [k, v] : config.worker.env) spec.env[k] = v;
  spec.log_path = dir + "/worker.log";
  spec.working_dir = dir;
  spec.uid = ids.uid;
  spec.gid = ids.gid;
  spec.no_new_privs = config.worker.no_new_privs;
  return spec;
}

// The job's directory can be lost with its storage (a root that came back
// without it): say so instead of failing to open the worker's log.
absl::Status JobRunner::JobDirPresent(const Job& job) {
  absl::Status s = [&]() -> absl::Status {
    FJORD_ASSIGN_OR_RETURN(SafeDir dir, ctx_->storage->OpenJobDir(job.tenant, job.id));
    return dir.OpenRead("job.yaml").status();
  }();
  if (s.ok()) return s;
  return absl::FailedPreconditionError(
      absl::StrCat("the job's directory ", ctx_->storage->JobDir(job.tenant, job.id),
                   " is gone from the storage root or damaged (", s.message(), ")"));
}

void JobRunner::LaunchValidator(const Job& job) {
  const std::string dir = ctx_->storage->JobDir(job.tenant, job.id);
  LaunchOptions lo;
  lo.expect_heartbeats = false;
  lo.deadline_ms = ctx_->config->worker.validation_timeout_ms;
  const absl::Status s = [&]() -> absl::Status {
    FJORD_RETURN_IF_ERROR(JobDirPresent(job));
    FJORD_ASSIGN_OR_RETURN(WorkerSpec spec, BaseSpec(job));
    spec.args = {"validate", "--config", dir + "/job.yaml"};
    spec.stdout_path = dir + "/validation.json";
    return ctx_->workers->Launch(job.id, spec, lo);
  }();
  if (!s.ok()) {
    (void)ctx_->jobs->Apply(
        job, Trigger::kValidatorCrashed, "cannot start the validator", [&](Job& j) {
          j.error = protocol::JobError{
              "INTERNAL", absl::StrCat("cannot start the validator: ", s.message()), "", false};
        });
    return;
  }
  runs_[job.id] = WorkerRun{true, {}, std::nullopt, ""};
}

absl::StatusOr<WorkerSpec> JobRunner::TrainerSpec(const Job& job, const std::vector<int>& gpus) {
  const DaemonConfig& config = *ctx_->config;
  const std::string dir = ctx_->storage->JobDir(job.tenant, job.id);
  FJORD_ASSIGN_OR_RETURN(WorkerSpec spec, BaseSpec(job));
  spec.args = {"--config",   dir + "/job.yaml",
               "--report",   ctx_->workers->EndpointFor(job.id),
               "--progress", "none"};
  // A worker that reports over the network gets its keys in its own
  // directory (0600, its uid), never on its command line.
  if (std::optional<std::string> keys = ctx_->workers->ReportKeysFor(job.id)) {
    FJORD_ASSIGN_OR_RETURN(SafeDir d, ctx_->storage->OpenJobDir(job.tenant, job.id));
    FJORD_RETURN_IF_ERROR(d.WriteFileAtomic("report.keys", *keys, 0600, spec.gid));
    if (spec.uid) FJORD_RETURN_IF_ERROR(d.ChownEntry("report.keys", spec.uid, spec.gid));
    spec.args.insert(spec.args.end(), {"--report-keys", dir + "/report.keys"});
  }
  spec.args.insert(spec.args.end(), config.worker.args.begin(), config.worker.args.end());
  // One data-parallel rank per GPU (per CPU slot on a CPU node): fjord-train
  // launches and keeps them together (docs/distributed.md); rank 0 reports.
  // On Slurm, srun starts the ranks (slurm/slurm.h lays them out).
  if (!Cluster() && RanksOf(job, gpus) > 1) {
    spec.args.insert(spec.args.end(), {"--nproc-per-node", std::to_string(RanksOf(job, gpus))});
  }
  std::string devices;
  for (int g : gpus) absl::StrAppend(&devices, devices.empty() ? "" : ",", g);
  spec.cuda_visible_devices = devices;
  return spec;
}

int JobRunner::RanksOf(const Job& job, const std::vector<int>& gpus) {
  return gpus.empty() ? std::max(1, job.spec.gpus) : static_cast<int>(gpus.size());
}

bool JobRunner::Cluster() const { return ctx_->config->executor.kind == "slurm"; }

absl::Status JobRunner::LaunchTrainer(const Job& job, const std::vector<int>& gpus) {
  const DaemonConfig& config = *ctx_->config;
  FJORD_RETURN_IF_ERROR(JobDirPresent(job));
  FJORD_ASSIGN_OR_RETURN(WorkerSpec spec, TrainerSpec(job, gpus));
  LaunchOptions lo;
  lo.cluster = Cluster();
  lo.ranks = RanksOf(job, gpus);
  FJORD_RETURN_IF_ERROR(ctx_->workers->Launch(job.id, spec, lo));
  if (lo.cluster) {
    // It waits in Slurm's queue now; kStarted moves it to running.
    runs_[job.id] = WorkerRun{};
    const std::string slurm_id = ctx_->workers->ClusterJobId(job.id);
    JobEvent ev;
    ev.time_ms = ctx_->clock->WallMs();
    ev.type = "log";
    ev.message = absl::StrCat("submitted to Slurm as job ", slurm_id);
    ev.data = {{"slurm_job_id", slurm_id}};
    ctx_->jobs->AddProgress(job.id, std::move(ev));
    return ctx_->jobs
        ->Apply(job, Trigger::kSubmitted, "",
                [&](Job& x) {
                  x.slurm_job_id = slurm_id;
                  x.queue_detail = absl::StrCat("Slurm job ", slurm_id, " submitted");
                })
        .status();
  }
  WorkerRun run;
  if (nvml_) {
    for (int g : gpus) {
      if (auto e = nvml_->TotalEnergyMillijoules(g)) run.energy_start_mj[g] = *e;
    }
  }
  runs_[job.id] = std::move(run);
  return ctx_->jobs
      ->Apply(job, Trigger::kSchedule,
              spec.cuda_visible_devices.empty()
                  ? "started on CPU"
                  : absl::StrCat("started on GPU ", spec.cuda_visible_devices),
              [&](Job& x) {
                x.gpu_ids = gpus;
                x.node = config.node_name;
              })
      .status();
}

void JobRunner::Reconcile(bool stopping, bool storage_ok) {
  if (stopping || !storage_ok) return;  // jobs wait (the reschedule request stays)
  const DaemonConfig& config = *ctx_->config;
  JobLifecycle& jobs = *ctx_->jobs;
  // Validators for the jobs that need one, oldest first, at most
  // scheduler.max_validators on the node and max_validators_per_tenant per
  // tenant (each parses a whole dataset: one tenant's burst of job.create
  // must not start a hundred at once); the others wait in `validating`.
  int validators = 0;
  std::map<std::string, int> tenant_validators;
  std::vector<std::pair<int64_t, const Job*>> to_validate;
  for (const auto& [id, job] : jobs.live()) {
    if (job.status != JobStatus::kValidating) continue;
    if (ctx_->workers->Running(id)) {
      ++validators;
      ++tenant_validators[job.tenant];
    } else {
      to_validate.push_back({jobs.order(id), &job});
    }
  }
  std::sort(to_validate.begin(), to_validate.end());
  std::vector<Job> launch;
  for (const auto& [n, job] : to_validate) {
    if (validators >= config.scheduler.max_validators) break;
    if (tenant_validators[job->tenant] >= config.scheduler.max_validators_per_tenant) continue;
    ++validators;
    ++tenant_validators[job->tenant];
    launch.push_back(*job);
  }
  for (const Job& j : launch) LaunchValidator(j);
  ctx_->metrics->Set("fjord_validators_running", "", validators);
  if (Cluster() && retry_submit_at_ms_ > 0 && ctx_->clock->NowMs() >= retry_submit_at_ms_) {
    retry_submit_at_ms_ = 0;
    jobs.RequestReschedule();
  }
  if (!jobs.TakeReschedule()) return;
  if (Cluster()) {
    SubmitToCluster();
    return;
  }
  SchedulerConfig sc;
  sc.gpus = config.scheduler.gpus;
  sc.cpu_slots = config.scheduler.cpu_slots;
  sc.max_running_per_tenant = config.scheduler.max_running_per_tenant;
  std::vector<RunningJob> running;
  std::vector<WaitingJob> waiting;
  for (const auto& [id, job] : jobs.live()) {
    if (HasTrainer(job.status))
      running.push_back({id, job.tenant, job.gpu_ids, job.spec.gpus});
    else if (IsWaiting(job.status))
      waiting.push_back({id, job.tenant, job.spec.priority, jobs.order(id), job.spec.gpus});
  }
  SchedulePlan plan = Schedule(sc, running, waiting);
  jobs.set_queue_positions(plan.queue_position);
  for (const Assignment& a : plan.start) {
    const Job* live = jobs.FindLive(a.job_id);
    if (live == nullptr) continue;
    const Job job = *live;
    if (absl::Status s = LaunchTrainer(job, a.gpu_ids); !s.ok()) {
      LogError("cannot start a worker", {{"job", job.id}, {"error", std::string(s.message())}});
      (void)jobs.Apply(job, Trigger::kWorkerLostFinal, "the worker could not start", [&](Job& x) {
        x.error = protocol::JobError{
            "INTERNAL", absl::StrCat("cannot start the worker: ", s.message()), "", false};
      });
    }
  }
  ctx_->metrics->Set(
      "fjord_queue_depth", "",
      static_cast<double>(waiting.size() - std::min(waiting.size(), plan.start.size())));
}

// ---- what workers report ----------------------------------------------------------

namespace {

// A preference-tuning worker's metrics (TRL's names, sent as extra members
// of "step" and "eval": rewards/chosen, rewards/accuracies, logps/rejected,
// ...; ORPO's nll_loss, log_odds_ratio, log_odds_chosen), each prefixed
// with `prefix` ("eval_" in eval messages), copied into the job's metrics
// when they are finite numbers.
void PreferenceMetrics(const json& extra, const std::string& prefix, json& metrics) {
  if (!extra.is_object()) return;
  for (auto it = extra.begin(); it != extra.end(); ++it) {
    const std::string& key = it.key();
    if (key.compare(0, prefix.size(), prefix) != 0) continue;
    const std::string name = key.substr(prefix.size());
    const bool known = name.rfind("rewards/", 0) == 0 || name.rfind("logps/", 0) == 0 ||
                       name == "nll_loss" || name == "log_odds_ratio" || name == "log_odds_chosen";
    if (!known || key.size() > 64 || !it->is_number()) continue;
    const double v = it->get<double>();
    if (std::isfinite(v)) metrics[key] = v;
  }
}

}  // namespace

void JobRunner::OnEvent(const std::string& job_id, const protocol::WorkerMessage& message) {
  Job* job = ctx_->jobs->FindLive(job_id);
  auto run = runs_.find(job_id);
  if (job == nullptr || run == runs_.end() || run->second.validator) return;
  // A type the codec does not know is dropped: a worker must not add events
  // that look like the daemon's own ("status", "validation").
  if (protocol::IsHeartbeat(message) ||
      std::holds_alternative<protocol::WorkerUnknown>(message.payload))
    return;
  const protocol::WorkerMessage* m = &message;
  if (m->step) job->step = *m->step;
  if (m->total_steps && *m->total_steps > 0) job->total_steps = *m->total_steps;
  JobEvent ev;
  ev.time_ms = ctx_->clock->WallMs();
  ev.type = protocol::WorkerMessageTypeName(*m);
  ev.data = protocol::WorkerMessageToJson(*m);
  ev.data.erase("type");
  ev.message = protocol::WorkerEventText(*m);
  auto metric = [&](const char* name, const std::optional<double>& v, bool non_negative) {
    if (v && (!non_negative || *v >= 0)) job->metrics[name] = *v;
  };
  if (const auto* step = std::get_if<protocol::WorkerStep>(&m->payload)) {
    if (step->trained_tokens) {
      const int64_t t = *step->trained_tokens;
      if (t > job->trained_tokens) {
        ctx_->metrics->Add("fjord_tokens_trained_total", "",
                           static_cast<double>(t - job->trained_tokens));
      }
      job->trained_tokens = std::max(job->trained_tokens, t);
    }
    metric("loss", step->loss, false);
    metric("lr", step->lr, false);
    metric("grad_norm", step->grad_norm, false);
    metric("tokens_per_s", step->tokens_per_s, false);
    metric("eta_s", step->eta_s, false);
    if (step->peak_memory_bytes)
      job->metrics["peak_memory_bytes"] = static_cast<double>(*step->peak_memory_bytes);
    // A base sharded across the ranks: what rank 0 received in its gathers
    // during the step.
    if (m->extra.is_object()) {
      auto gathered = m->extra.find("base_gather_bytes");
      if (gathered != m->extra.end() && gathered->is_number()) {
        metric("base_gather_bytes", gathered->get<double>(), true);
      }
    }
    PreferenceMetrics(m->extra, "", job->metrics);
  } else if (const auto* eval = std::get_if<protocol::WorkerEval>(&m->payload)) {
    metric("eval_loss", eval->eval_loss, true);
    metric("eval_token_accuracy", eval->eval_token_accuracy, true);
    // The base model's, at step 0; "done" brings the value after training.
    metric("heldout_accuracy", eval->heldout_accuracy, true);
    PreferenceMetrics(m->extra, "eval_", job->metrics);
  } else if (const auto* done = std::get_if<protocol::WorkerDone>(&m->payload)) {
    metric("eval_loss", done->eval_loss, true);
    metric("heldout_accuracy", done->heldout_accuracy, true);
  } else if (const auto* checkpoint = std::get_if<protocol::WorkerCheckpoint>(&m->payload)) {
    if (!checkpoint->path.empty())
      job->latest_checkpoint = protocol::CheckpointInfo{job->step, checkpoint->path};
  } else if (const auto* error = std::get_if<protocol::WorkerError>(&m->payload)) {
    run->second.reported_error = protocol::JobError{
        error->code, error->message, error->user_error ? "training_file" : "", error->user_error};
  }
  const bool checkpointed = std::holds_alternative<protocol::WorkerCheckpoint>(m->payload);
  ctx_->jobs->AddProgress(job_id, std::move(ev));
  if (checkpointed) {
    ctx_->tenants->RefreshJob(job->tenant, job->id);
    PauseIfOverQuota(*job);
  }
}

void JobRunner::PauseIfOverQuota(const Job& job) {
  if (job.status != JobStatus::kRunning) return;
  absl::Status over = ctx_->tenants->CheckQuota(job.tenant, 0, 0, "tenant", "");
  if (over.ok()) return;
  const std::string why = absl::StrCat("paused: ", over.message(), ", then resume the job");
  absl::StatusOr<Job> paused = ctx_->jobs->Apply(job, Trigger::kPause, why, [&](Job& j) {
    j.error = protocol::JobError{"RESOURCE_EXHAUSTED", why, "tenant", true};
  });
  if (!paused.ok()) return;
  ctx_->metrics->Add("fjord_jobs_paused_over_quota_total", "");
  ctx_->workers->Stop(job.id);
}

void JobRunner::RefreshUsage() {
  const int64_t now = ctx_->clock->NowMs();
  if (now < next_usage_refresh_ms_) return;
  next_usage_refresh_ms_ = now + kJobUsageRefreshMs;
  std::vector<Job> running;
  for (const auto& [id, job] : ctx_->jobs->live()) {
    if (ctx_->workers->Running(id)) running.push_back(job);
  }
  for (const Job& job : running) ctx_->tenants->RefreshJob(job.tenant, job.id);
  for (const Job& job : running) PauseIfOverQuota(job);
}

void JobRunner::AddEnergy(Job& job, const WorkerRun& run) {
  if (!nvml_ || run.energy_start_mj.empty()) return;
  double joules = 0;
  for (const auto& [g, start] : run.energy_start_mj) {
    if (auto now = nvml_->TotalEnergyMillijoules(g); now && *now >= start) {
      joules += static_cast<double>(*now - start) / 1000.0;
    }
  }
  job.metrics["gpu_energy_joules"] = job.metrics.value("gpu_energy_joules", 0.0) + joules;
  ctx_->metrics->Add("fjord_gpu_energy_joules_total", "", joules);
}

// ---- how workers end -----------------------------------------------------------------

namespace {

// Applies an exit decision: its event first, then the status change with its
// edits to the job.
void ApplyDecision(DaemonContext& ctx, const Job& job, const ExitDecision& d,
                   bool cluster_ended = false) {
  if (d.event) {
    JobEvent e = *d.event;
    e.time_ms = ctx.clock->WallMs();
    ctx.jobs->AddProgress(job.id, std::move(e));
  }
  if (d.count_restart) ctx.metrics->Add("fjord_worker_restarts_total", "");
  const bool edits = d.error || d.clear_error || d.count_restart ||
                     !d.result_adapter_path.empty() || cluster_ended;
  auto edit = [&](Job& j) {
    // Its Slurm job has ended: a restarted fjordd must not adopt it again
    // (a job that ended for good keeps the id, for its admins' records).
    if (cluster_ended && !protocol::IsFinal(j.status)) {
      j.slurm_job_id.clear();
      j.queue_detail.clear();
    }
    if (d.count_restart) ++j.restarts;
    if (d.clear_error) j.error.reset();
    if (d.error) j.error = d.error;
    if (!d.result_adapter_path.empty()) j.result_adapter_path = d.result_adapter_path;
  };
  (void)ctx.jobs->Apply(job, d.trigger, d.message,
                        edits ? std::function<void(Job&)>(edit) : nullptr);
}

}  // namespace

void JobRunner::OnValidatorEnd(const Job& job, const WorkerExit& exit, const WorkerRun& run,
                               bool stopping) {
  ValidatorEnd end;
  end.exit = exit;
  end.daemon_stopping = stopping;
  absl::StatusOr<std::string> out = ctx_->tenants->ReadJobFile(
      job.tenant, job.id, "validation.json", size_t{1} << 20, /*tail=*/false);
  if (out.ok()) {
    json report = json::parse(*out, nullptr, false);
    if (report.is_object()) end.report = std::move(report);
  }
  if (!end.report && exit.normal() && exit.exit_code == protocol::kWorkerExitUserError) {
    absl::StatusOr<std::string> log =
        ctx_->tenants->ReadJobFile(job.tenant, job.id, "worker.log", 2000, /*tail=*/true);
    if (log.ok()) end.log_tail = *log;
  }
  end.lost_reason = run.lost_reason;
  end.restarts = job.restarts;
  end.max_restarts = job.spec.max_restarts;
  ApplyDecision(*ctx_, job, DecideValidatorEnd(end));
}

void JobRunner::OnTrainerEnd(Job job, const WorkerExit& exit, const WorkerRun& run, bool stopping,
                             bool final_loss) {
  AddEnergy(job, run);
  TrainerEnd end;
  end.final_loss = final_loss;
  end.status = job.status;
  end.exit = exit;
  end.daemon_stopping = stopping;
  end.reported_error = run.reported_error;
  end.lost_reason = run.lost_reason;
  end.evaluation = job.spec.is_evaluation();
  end.adapter_path =
      ctx_->storage->JobDir(job.tenant, job.id) + (end.evaluation ? "/report" : "/adapter");
  end.restarts = job.restarts;
  end.max_restarts = job.spec.max_restarts;
  if (exit.normal() && exit.exit_code == protocol::kWorkerExitOk) {
    end.adapter = [&]() -> absl::Status {
      if (end.evaluation) {
        FJORD_ASSIGN_OR_RETURN(SafeDir dir, ctx_->tenants->OpenReportDir(job.tenant, job.id));
        return VerifyReportDir(dir);
      }
      FJORD_ASSIGN_OR_RETURN(SafeDir dir, ctx_->tenants->OpenAdapterDir(job.tenant, job.id));
      return VerifyAdapterDir(dir);
    }();
    if (!end.adapter.ok()) {
      LogError(
          end.evaluation ? "the worker's report is unusable" : "the worker's adapter is unusable",
          {{"job", job.id}, {"error", std::string(end.adapter.message())}});
    }
  }
  ApplyDecision(*ctx_, job, DecideTrainerEnd(end), !job.slurm_job_id.empty());
}

void JobRunner::OnUpdates(std::vector<WorkerUpdate> updates, bool stopping) {
  const DaemonConfig& config = *ctx_->config;
  for (WorkerUpdate& u : updates) {
    switch (u.kind) {
      case WorkerUpdate::Kind::kEvent:
        // Bytes that are not a worker message are dropped (the supervisor
        // decoded them; any message still counts as a sign of life).
        if (u.message.ok()) OnEvent(u.job_id, *u.message);
        break;
      case WorkerUpdate::Kind::kHeartbeatTimeout:
        runs_[u.job_id].lost_reason =
            absl::StrCat("the worker sent no heartbeat for ",
                         config.worker.heartbeat_timeout_ms / 1000.0, " s and was killed");
        break;
      case WorkerUpdate::Kind::kStopTimeout:
        runs_[u.job_id].lost_reason =
            absl::StrCat("the worker did not exit within ", config.worker.stop_grace_ms / 1000.0,
                         " s of SIGTERM and was killed");
        break;
      case WorkerUpdate::Kind::kDeadline:
        runs_[u.job_id].lost_reason =
            absl::StrCat("the validator ran longer than ",
                         config.worker.validation_timeout_ms / 1000.0, " s and was killed");
        break;
      case WorkerUpdate::Kind::kPending:
        OnClusterPending(u.job_id, u.detail);
        break;
      case WorkerUpdate::Kind::kStarted:
        OnClusterStarted(u.job_id, u.detail);
        break;
      case WorkerUpdate::Kind::kExited: {
        WorkerRun run = runs_[u.job_id];
        runs_.erase(u.job_id);
        if (!u.detail.empty() && run.lost_reason.empty()) run.lost_reason = u.detail;
        ctx_->jobs->FlushDirty();
        const Job* live = ctx_->jobs->FindLive(u.job_id);
        if (live == nullptr) break;  // cancelled while validating, etc.
        const Job job = *live;
        LogInfo("worker exited",
                {{"job", u.job_id}, {"exit", u.exit.Describe()}, {"validator", run.validator}});
        if (run.validator) {
          if (job.status == JobStatus::kValidating) OnValidatorEnd(job, u.exit, run, stopping);
        } else if (HasTrainer(job.status)) {
          OnTrainerEnd(job, u.exit, run, stopping, u.final);
        } else if (IsWaiting(job.status) && !job.slurm_job_id.empty()) {
          OnClusterEndWhileWaiting(job, u.exit, run.lost_reason, u.final);
        }  // else: paused or cancelled while it waited; fjordd ended its worker
        ctx_->tenants->RefreshJob(job.tenant,
                                  u.job_id);  // after the end's events reached events.jsonl
        break;
      }
    }
  }
}

}  // namespace fjord::daemon

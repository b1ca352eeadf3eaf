#include "sdk/cpp/cli/render.h"

#include <algorithm>
#include <cmath>
#include <iterator>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/time/time.h"

namespace fjord::cli {
namespace {

using nlohmann::json;

constexpr int kBarWidth = 24;

std::optional<double> Num(const json& d, const char* key) {
  if (!d.is_object()) return std::nullopt;
  auto it = d.find(key);
  if (it == d.end() || !it->is_number()) return std::nullopt;
  return it->get<double>();
}

int64_t Int(const json& d, const char* key) {
  return static_cast<int64_t>(Num(d, key).value_or(0));
}

std::string Str(const json& d, const char* key) {
  if (!d.is_object()) return "";
  auto it = d.find(key);
  return it != d.end() && it->is_string() ? it->get<std::string>() : "";
}

std::string Metric(const json& metrics, const char* key) {
  std::optional<double> v = Num(metrics, key);
  return v ? absl::StrFormat("%.4f", *v) : "-";
}

}  // namespace

std::string FormatDuration(double seconds) {
  if (!std::isfinite(seconds) || seconds < 0) return "?";
  const int64_t t = static_cast<int64_t>(seconds + 0.5);
  if (t >= 3600) return absl::StrFormat("%dh%02dm", t / 3600, (t / 60) % 60);
  if (t >= 60) return absl::StrFormat("%dm%02ds", t / 60, t % 60);
  return absl::StrFormat("%ds", t);
}

std::string FormatTimeMs(int64_t ms) {
  if (ms <= 0) return "-";
  return absl::FormatTime("%Y-%m-%d %H:%M:%SZ", absl::FromUnixMillis(ms), absl::UTCTimeZone());
}

std::string FormatBytes(uint64_t bytes) {
  if (bytes < 1024) return absl::StrCat(bytes, " B");
  static constexpr const char* kUnits[] = {"KiB", "MiB", "GiB", "TiB", "PiB", "EiB"};
  double v = static_cast<double>(bytes) / 1024;
  size_t unit = 0;
  // Move up while the value would print as 1024 or more ("1023.96 KiB" is "1 MiB").
  while (unit + 1 < std::size(kUnits) && std::round(v * 10) / 10 >= 1024) v /= 1024, ++unit;
  std::string s = absl::StrFormat("%.1f", v);
  if (absl::EndsWith(s, ".0")) s.resize(s.size() - 2);
  return absl::StrCat(s, " ", kUnits[unit]);
}

std::string StorageUsageLine(uint64_t usage_bytes, uint64_t quota_bytes,
                             std::optional<uint64_t> usage_files, uint64_t quota_files) {
  std::string line = quota_bytes == 0
                         ? absl::StrCat("usage ", FormatBytes(usage_bytes), " (no quota)")
                         : absl::StrCat("usage ", FormatBytes(usage_bytes), " of ",
                                        FormatBytes(quota_bytes), " quota");
  if (usage_files) {
    if (quota_files == 0) {
      absl::StrAppend(&line, ", ", *usage_files, *usage_files == 1 ? " file" : " files",
                      " (no limit)");
    } else {
      absl::StrAppend(&line, ", ", *usage_files, " of ", quota_files, " files");
    }
  }
  const char* full = nullptr;
  if (quota_bytes != 0 && usage_bytes >= quota_bytes) {
    full = "full";
  } else if (usage_files && quota_files != 0 && *usage_files >= quota_files) {
    full = "file limit reached";
  }
  if (full != nullptr) {
    absl::StrAppend(&line, " (", full,
                    ": new uploads and jobs are refused until files or ended jobs are deleted)");
  }
  return line;
}

std::string Table(const std::vector<std::string>& header,
                  const std::vector<std::vector<std::string>>& rows) {
  std::vector<size_t> width(header.size(), 0);
  auto measure = [&](const std::vector<std::string>& r) {
    for (size_t i = 0; i < r.size() && i < width.size(); ++i)
      width[i] = std::max(width[i], r[i].size());
  };
  measure(header);
  for (const auto& r : rows) measure(r);
  std::string out;
  auto emit = [&](const std::vector<std::string>& r) {
    std::string line;
    for (size_t i = 0; i < r.size() && i < width.size(); ++i) {
      std::string cell = r[i];
      if (i + 1 < r.size()) cell.resize(width[i] + 2, ' ');
      line += cell;
    }
    absl::StrAppend(&out, line, "\n");
  };
  emit(header);
  for (const auto& r : rows) emit(r);
  return out;
}

std::vector<std::string> JobHeader() {
  return {"ID", "STATUS", "MODEL", "STEP", "LOSS", "EVAL LOSS", "CREATED"};
}

std::vector<std::string> JobRow(const protocol::Job& job) {
  std::string status = protocol::JobStatusName(job.status);
  if (job.queue_position) absl::StrAppend(&status, " #", *job.queue_position);
  return {
      job.id,
      status,
      job.spec.model,
      job.total_steps > 0 ? absl::StrCat(job.step, "/", job.total_steps) : absl::StrCat(job.step),
      Metric(job.metrics, "loss"),
      Metric(job.metrics, "eval_loss"),
      FormatTimeMs(job.created_at_ms)};
}

std::string DescribeJob(const protocol::Job& job) {
  const protocol::Hyperparameters& h = job.spec.hyperparameters;
  std::string out = absl::StrCat("job ", job.id, "  ", protocol::JobStatusName(job.status));
  if (job.queue_position) absl::StrAppend(&out, " (queue position ", *job.queue_position, ")");
  if (!job.queue_detail.empty()) absl::StrAppend(&out, " (", job.queue_detail, ")");
  absl::StrAppend(&out, "\n");
  auto row = [&](const char* k, const std::string& v) {
    absl::StrAppend(&out, absl::StrFormat("  %-16s %s\n", k, v));
  };
  row("tenant", job.tenant);
  std::string model = job.spec.model;
  if (job.spec.quantization != "none")
    absl::StrAppend(&model, " (", job.spec.quantization, " base)");
  if (job.spec.shard_base) {
    absl::StrAppend(&model, job.spec.gpus > 1
                                ? absl::StrCat(" (base sharded over ", job.spec.gpus, " GPUs)")
                                : " (shard_base: no effect on one GPU)");
  }
  row("model", model);
  if (job.spec.is_evaluation()) {
    std::vector<std::string> cands;
    for (const protocol::EvalCandidate& cand : job.spec.candidates) {
      cands.push_back(
          !cand.job.empty() ? absl::StrCat(cand.name, "=", cand.job)
          : !cand.adapter_model.empty()
              ? absl::StrCat(cand.name, "=", cand.adapter_config, "+", cand.adapter_model)
              : cand.name);
    }
    row("type", "evaluation");
    row("candidates", absl::StrJoin(cands, ", "));
    row("datasets", absl::StrJoin(job.spec.datasets, ", "));
    const protocol::EvalSettings& e = job.spec.evaluation;
    row("evaluation",
        absl::StrFormat("metrics %s, max_new_tokens %d, samples %d, bootstrap %d, seed %d%s",
                        e.metrics.empty() ? "all" : absl::StrJoin(e.metrics, ","), e.max_new_tokens,
                        e.samples, e.bootstrap, e.seed,
                        e.judge.empty() ? "" : absl::StrCat(", judge ", e.judge)));
  } else {
    row("training file", job.spec.training_file);
  }
  if (!job.spec.validation_file.empty()) row("validation file", job.spec.validation_file);
  if (!job.spec.heldout_file.empty()) row("held-out file", job.spec.heldout_file);
  if (!job.spec.is_evaluation()) {
    row("hyperparameters",
        absl::StrFormat(
            "epochs %d, max_steps %d, batch %d x %d, lr %g (%s, warmup %d), max_length %d, seed %d",
            h.epochs, h.max_steps, h.batch_size, h.gradient_accumulation_steps, h.learning_rate,
            h.lr_scheduler, h.warmup_steps, h.max_length, h.seed));
    row("lora", absl::StrFormat("r %d, alpha %g, dropout %g, modules %s", job.spec.lora.r,
                                job.spec.lora.alpha, job.spec.lora.dropout,
                                absl::StrJoin(job.spec.lora.target_modules, ",")));
  }
  if (!job.spec.metadata.empty()) {
    std::vector<std::string> kv;
    for (const auto& [k, v] : job.spec.metadata) kv.push_back(absl::StrCat(k, "=", v));
    row("metadata", absl::StrJoin(kv, ", "));
  }
  row("created", FormatTimeMs(job.created_at_ms));
  if (job.started_at_ms) row("started", FormatTimeMs(*job.started_at_ms));
  if (job.finished_at_ms) row("finished", FormatTimeMs(*job.finished_at_ms));
  if (job.total_steps > 0 || job.step > 0) {
    row("progress",
        absl::StrCat(job.step, "/", job.total_steps, " steps, ", job.trained_tokens, " tokens"));
  }
  if (job.metrics.is_object() && !job.metrics.empty()) {
    std::vector<std::string> m;
    for (auto it = job.metrics.begin(); it != job.metrics.end(); ++it) {
      m.push_back(it->is_number_float() ? absl::StrFormat("%s %.4g", it.key(), it->get<double>())
                                        : absl::StrCat(it.key(), " ", it->dump()));
    }
    row("metrics", absl::StrJoin(m, ", "));
  }
  if (job.latest_checkpoint) {
    row("checkpoint",
        absl::StrCat("step ", job.latest_checkpoint->step, ": ", job.latest_checkpoint->path));
  }
  if (!job.result_adapter_path.empty())
    row(job.spec.is_evaluation() ? "report" : "adapter", job.result_adapter_path);
  if (job.error) {
    // The hint is for a failed job; a paused one's error (over the storage
    // quota) says in its message what to do before resuming.
    const char* hint = job.status != protocol::JobStatus::kFailed ? ""
                       : job.error->user_error                    ? " [fix the input and resubmit]"
                                                                  : " [system error]";
    row("error",
        absl::StrCat(job.error->code, ": ", job.error->message,
                     job.error->param.empty() ? "" : absl::StrCat(" (", job.error->param, ")"),
                     hint));
  }
  if (job.restarts > 0) row("restarts", absl::StrCat(job.restarts, " of ", job.spec.max_restarts));
  if (!job.node.empty()) row("node", job.node);
  if (!job.slurm_job_id.empty()) row("slurm job", job.slurm_job_id);
  return out;
}

std::string EventLine(const protocol::JobEvent& e) {
  std::string what = e.message;
  if (e.type == "status") {
    what = absl::StrCat(Str(e.data, "previous").empty() ? "-" : Str(e.data, "previous"), " -> ",
                        Str(e.data, "status"),
                        e.message.empty() ? "" : absl::StrCat(" (", e.message, ")"));
  } else if (e.type == "step") {
    what = absl::StrFormat("step %d/%d  loss %.4f", Int(e.data, "step"), Int(e.data, "total_steps"),
                           Num(e.data, "loss").value_or(NAN));
  } else if (e.type == "eval") {
    std::optional<double> loss = Num(e.data, "eval_loss");
    if (!loss) loss = Num(e.data, "loss");
    const double heldout = Num(e.data, "heldout_accuracy").value_or(-1);  // -1: not measured
    what = absl::StrFormat("step %d/%d", Int(e.data, "step"), Int(e.data, "total_steps"));
    if (loss || heldout < 0)
      absl::StrAppend(&what, absl::StrFormat("  eval loss %.4f", loss.value_or(NAN)));
    if (heldout >= 0)
      absl::StrAppend(&what, absl::StrFormat("  held-out answers %.1f%%", 100 * heldout));
  } else if (what.empty() && e.data.is_object() && !e.data.empty()) {
    what = e.data.dump();
  }
  return absl::StrFormat("%5d  %s  %-10s %s", e.seq, FormatTimeMs(e.time_ms), e.type, what);
}

std::string Progress::StatusLine(const json& d) const {
  const int64_t step = Int(d, "step"), total = Int(d, "total_steps");
  std::vector<std::string> parts;
  parts.push_back(total > 0 ? absl::StrCat(step, "/", total) : absl::StrCat("step ", step));
  if (auto loss = Num(d, "loss")) parts.push_back(absl::StrFormat("loss %.4f", *loss));
  if (eval_loss_) parts.push_back(absl::StrFormat("eval %.4f", *eval_loss_));
  if (auto tps = Num(d, "tokens_per_s")) parts.push_back(absl::StrFormat("%.0f tok/s", *tps));
  parts.push_back(absl::StrCat("ETA ", FormatDuration(Num(d, "eta_s").value_or(-1))));
  return absl::StrJoin(parts, "  ");
}

void Progress::Line(const std::string& text) {
  if (bar_open_) std::fputc('\n', out_);
  bar_open_ = false;
  std::fprintf(out_, "%s\n", text.c_str());
  std::fflush(out_);
}

void Progress::OnEvent(const protocol::JobEvent& e) {
  const json& d = e.data;
  if (e.type == "status") {
    Line(absl::StrCat("status: ", Str(d, "previous").empty() ? "-" : Str(d, "previous"), " -> ",
                      Str(d, "status"),
                      e.message.empty() ? "" : absl::StrCat(" (", e.message, ")")));
  } else if (e.type == "step") {
    const int64_t step = Int(d, "step"), total = Int(d, "total_steps");
    if (bar_) {
      int filled = total > 0 ? static_cast<int>(kBarWidth * step / total) : 0;
      filled = std::clamp(filled, 0, kBarWidth);
      const std::string bar = std::string(filled, '#') + std::string(kBarWidth - filled, '.');
      std::fprintf(out_, "\r[%s] %s\033[K", bar.c_str(), StatusLine(d).c_str());
      std::fflush(out_);
      bar_open_ = true;
    } else {
      const int64_t every = std::max<int64_t>(1, total / 20);
      if (step == 1 || step % every == 0 || step == total) Line(StatusLine(d));
    }
  } else if (e.type == "eval") {
    std::optional<double> loss = Num(d, "eval_loss");
    if (!loss) loss = Num(d, "loss");
    if (loss) {
      eval_loss_ = loss;
      if (!first_eval_loss_) first_eval_loss_ = loss;
    }
    std::optional<double> acc = Num(d, "eval_token_accuracy");
    // The step-0 eval of a job with held-out prompts: the base model's
    // answers (alone when the job has no validation data).
    const double heldout = Num(d, "heldout_accuracy").value_or(-1);  // -1: not measured
    Line(absl::StrCat(
        "eval  step ", Int(d, "step"), "/", Int(d, "total_steps"),
        loss || heldout < 0 ? absl::StrCat("  loss ", loss ? absl::StrFormat("%.4f", *loss) : "?")
                            : "",
        acc ? absl::StrFormat("  token accuracy %.1f%%", 100 * *acc) : "",
        heldout >= 0 ? absl::StrFormat("  held-out answers %.1f%%", 100 * heldout) : ""));
  } else if (e.type == "checkpoint") {
    Line(absl::StrCat("checkpoint at step ", Int(d, "step"),
                      e.message.empty() ? "" : absl::StrCat(": ", e.message)));
  } else if (e.type == "log" || e.type == "start" || e.type == "validation") {
    std::string text = e.message.empty() ? Str(d, "message") : e.message;
    if (!text.empty()) Line(absl::StrCat(e.type, ": ", text));
  } else if (e.type == "error") {
    std::string text = e.message.empty() ? Str(d, "message") : e.message;
    Line(absl::StrCat("error: ", text.empty() ? d.dump() : text));
  } else if (e.type == "done") {
    if (auto loss = Num(d, "eval_loss")) eval_loss_ = loss;
    Line(absl::StrCat("done", e.message.empty() ? "" : absl::StrCat(": ", e.message)));
  }
}

void Progress::Finish(const protocol::Job& job) {
  if (job.status == protocol::JobStatus::kSucceeded) {
    Line(
        absl::StrCat("job ", job.id, " succeeded",
                     job.result_adapter_path.empty()
                         ? ""
                         : absl::StrCat(job.spec.is_evaluation() ? ": report at " : ": adapter at ",
                                        job.result_adapter_path)));
  } else if (job.status == protocol::JobStatus::kFailed && job.error) {
    Line(absl::StrCat("job ", job.id, " failed: ", job.error->code, ": ", job.error->message));
  } else {
    Line(absl::StrCat("job ", job.id, " ", protocol::JobStatusName(job.status)));
  }
}

}  // namespace fjord::cli

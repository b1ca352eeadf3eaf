// The JSON bodies of FJD01 (docs/protocol.md §5-§6) as structs: the job spec
// a client submits, the job object, events, files, checkpoints.
//
// *FromJson of a request body (JobSpecFromJson) is strict: types, ranges and
// unknown fields are checked, errors are InvalidArgument with the field's
// dotted path as param. *FromJson of a daemon reply (JobFromJson, ...) is
// lenient about fields it does not know (forward compatibility) and fails
// with Internal("malformed reply: ...") on a wrong type.
#ifndef FJORD_DAEMON_PROTOCOL_MESSAGES_H_
#define FJORD_DAEMON_PROTOCOL_MESSAGES_H_

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace fjord::protocol {

enum class JobStatus {
  kValidating,
  kQueued,
  kRunning,
  kPausing,
  kPaused,
  kCancelling,
  kRequeued,
  kSucceeded,
  kFailed,
  kCancelled,
};
inline constexpr JobStatus kAllJobStatuses[] = {
    JobStatus::kValidating, JobStatus::kQueued,     JobStatus::kRunning,  JobStatus::kPausing,
    JobStatus::kPaused,     JobStatus::kCancelling, JobStatus::kRequeued, JobStatus::kSucceeded,
    JobStatus::kFailed,     JobStatus::kCancelled,
};
// "validating", "queued", ...
const char* JobStatusName(JobStatus status);
std::optional<JobStatus> ParseJobStatus(absl::string_view name);
// succeeded, failed, cancelled.
bool IsFinal(JobStatus status);

struct Hyperparameters {
  int64_t epochs = 1;
  int64_t max_steps = 0;
  int64_t batch_size = 4;
  int64_t gradient_accumulation_steps = 1;
  double learning_rate = 2e-4;
  std::string lr_scheduler = "cosine";
  int64_t warmup_steps = 0;
  double weight_decay = 0.0;
  double max_grad_norm = 1.0;
  int64_t max_length = 1024;
  int64_t seed = 42;
  int64_t checkpoint_every_steps = 0;
  int64_t eval_every_steps = 0;
};

struct LoraSettings {
  int64_t r = 16;
  double alpha = 32;
  double dropout = 0.05;
  std::vector<std::string> target_modules = {"all-linear"};
};

// A preference-tuning job's settings (method dpo, orpo or simpo; fjord-train's
// `preference:` section, runtime/train/training_config.h; names as TRL's).
struct PreferenceSettings {
  double beta = 0.1;
  std::string loss_type = "sigmoid";  // dpo: sigmoid | robust | hinge | ipo
  double label_smoothing = 0.0;
  double simpo_gamma = 0.5;
  double cpo_alpha = 0.0;
  bool precompute_ref = true;
};

// An evaluation job's candidate (docs/protocol.md §5, "Evaluation jobs"):
// the job's base model alone (job and adapter files empty), the base with the
// adapter of one of the tenant's succeeded fine-tune jobs on the same model,
// or the base with an uploaded PEFT adapter (its two files).
struct EvalCandidate {
  std::string name;            // 1..64 bytes of [A-Za-z0-9._-], unique in the job
  std::string job;             // "" or "job-…"
  std::string adapter_config;  // "" or a file: adapter_config.json
  std::string adapter_model;   // "" or a file: adapter_model.safetensors
  // "" (the job's model) or another model name of the node: the base this
  // candidate runs on (alone, or under its adapter).
  std::string model;
};

// How an evaluation job scores its candidates (fjord-compare's options).
struct EvalSettings {
  std::vector<std::string> metrics;  // empty = all (eval::kComparisonMetrics)
  int64_t max_new_tokens = 64;
  int64_t batch_size = 8;
  int64_t samples = 5;
  int64_t bootstrap = 2000;
  int64_t seed = 0;
  std::string chat_template = "auto";
  std::string judge;  // "" = none; a model name of the node
};

// The metric names an evaluation reports (fjord-compare's report).
inline constexpr const char* kEvalMetricNames[] = {
    "loss",     "perplexity", "token_accuracy", "exact_match", "normalized_exact_match",
    "contains", "token_f1"};

// What a client submits (job.create). max_restarts < 0: the daemon's default.
// type "fine_tune" (the default) uses the training fields; "evaluation" uses
// candidates, datasets and evaluation instead (docs/protocol.md §5).
struct JobSpec {
  std::string type = "fine_tune";
  std::string model;
  // Fine-tuning: "sft" (the default) or a preference method, "dpo", "orpo" or
  // "simpo" (training and validation files of preference pairs), with its
  // settings.
  std::string method = "sft";
  PreferenceSettings preference;
  std::string training_file;
  std::string validation_file;  // "" = none
  std::string heldout_file;     // "" = none; {"prompt", "answer"} lines: held-out answer accuracy
  Hyperparameters hyperparameters;
  LoraSettings lora;
  int priority = 0;
  int gpus = 1;
  // The frozen base's weights: "none" (bf16, the default) or "nf4" (its
  // decoder linear layers in 4-bit NF4, QLoRA: about a quarter of the memory).
  std::string quantization = "none";
  // Each of the job's `gpus` ranks holds 1/gpus of the frozen base (the rows
  // of every decoder linear weight, the embeddings and lm_head) instead of
  // all of it (fjord-train's model.shard_base). No effect with one GPU; not
  // with nf4 (refused). Default false.
  bool shard_base = false;
  int max_restarts = -1;
  std::map<std::string, std::string> metadata;
  std::string idempotency_key;  // "" = none
  std::string tenant;           // "" = the principal's (admin may name another)
  // type "evaluation" only:
  std::vector<EvalCandidate> candidates;
  std::vector<std::string> datasets;  // files (ids or tenant paths) of {"prompt", "answer"} lines
  EvalSettings evaluation;

  bool is_evaluation() const { return type == "evaluation"; }
};

// Strict parse of a job.create body (docs/protocol.md §5 table).
absl::StatusOr<JobSpec> JobSpecFromJson(const nlohmann::json& body);
// The body a client sends: every field, defaults included, except empty
// validation_file / heldout_file / idempotency_key / tenant,
// max_restarts < 0, quantization "none" and shard_base false (so the bodies
// and fingerprints of jobs without them are the ones they had before the
// fields existed).
nlohmann::json JobSpecToJson(const JobSpec& spec);
// Canonical JSON of the spec without idempotency_key and tenant: two
// requests with the same key must have equal fingerprints.
std::string JobSpecFingerprint(const JobSpec& spec);

struct JobError {
  std::string code;  // an error code name (§4)
  std::string message;
  std::string param;  // "" = none
  bool user_error = false;
};

struct CheckpointInfo {
  int64_t step = 0;
  std::string path;
};

struct Job {
  std::string id;
  std::string tenant;
  JobSpec spec;  // spec.tenant == tenant; spec.max_restarts resolved (>= 0)
  JobStatus status = JobStatus::kValidating;
  std::optional<int64_t> queue_position;
  int64_t created_at_ms = 0;
  std::optional<int64_t> started_at_ms;
  std::optional<int64_t> finished_at_ms;
  int64_t step = 0;
  int64_t total_steps = 0;
  int64_t trained_tokens = 0;
  nlohmann::json metrics = nlohmann::json::object();
  std::optional<JobError> error;
  std::optional<CheckpointInfo> latest_checkpoint;
  // "" until succeeded: the adapter's directory, or an evaluation job's
  // report directory (report.json, report.html).
  std::string result_adapter_path;
  int restarts = 0;
  std::string node;  // the node it runs on (a Slurm job's node list)
  std::vector<int> gpu_ids;
  // With fjordd's Slurm executor: the Slurm job that runs it ("" for none),
  // and, while it waits, what Slurm says ("Slurm job 12 pending: Resources").
  std::string slurm_job_id;
  std::string queue_detail;
};

nlohmann::json JobToJson(const Job& job);
absl::StatusOr<Job> JobFromJson(const nlohmann::json& value);

struct JobEvent {
  int64_t seq = 0;
  int64_t time_ms = 0;
  std::string type;  // "status", "step", "eval", "checkpoint", "log", "done", "error",
                     // "validation", "start"
  std::string message;
  nlohmann::json data = nlohmann::json::object();
};
nlohmann::json JobEventToJson(const JobEvent& event);
absl::StatusOr<JobEvent> JobEventFromJson(const nlohmann::json& value);

struct FileInfo {
  std::string id;
  std::string filename;
  uint64_t bytes = 0;
  std::string sha256;
  int64_t created_at_ms = 0;
  std::string path;  // relative to the tenant's area: "files/<id>"
};
nlohmann::json FileInfoToJson(const FileInfo& file);
absl::StatusOr<FileInfo> FileInfoFromJson(const nlohmann::json& value);

nlohmann::json CheckpointToJson(const CheckpointInfo& checkpoint);
absl::StatusOr<CheckpointInfo> CheckpointFromJson(const nlohmann::json& value);

struct AdapterFile {
  std::string name;
  uint64_t bytes = 0;
  std::string sha256;
};

// True for [a-z0-9][a-z0-9_-]{0,63} (tenant names, model names are looser).
bool ValidTenantName(absl::string_view name);
// True for 1..128 printable ASCII bytes.
bool ValidIdempotencyKey(absl::string_view key);

}  // namespace fjord::protocol

#endif  // FJORD_DAEMON_PROTOCOL_MESSAGES_H_

#include "daemon/protocol/messages.h"

#include <limits>
#include <set>
#include <utility>

#include "absl/strings/str_cat.h"
#include "daemon/protocol/errors.h"
#include "daemon/protocol/json_reader.h"
#include "daemon/protocol/protocol.h"
#include "runtime/util/status_macros.h"

namespace fjord::protocol {

using nlohmann::json;

namespace {

constexpr const char* kStatusNames[] = {"validating", "queued",     "running",  "pausing",
                                        "paused",     "cancelling", "requeued", "succeeded",
                                        "failed",     "cancelled"};

absl::Status Malformed(absl::string_view what, absl::string_view field, const json& v) {
  return absl::InternalError(
      absl::StrCat("malformed reply: ", what, ".", field, " is ", v.type_name()));
}

// Lenient getters for replies: absent or null leaves *out as it is.
absl::Status GetStr(const json& j, const char* what, const char* key, std::string* out) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return absl::OkStatus();
  if (!it->is_string()) return Malformed(what, key, *it);
  *out = it->get<std::string>();
  return absl::OkStatus();
}

// A JSON number as Int: Malformed when it is not a number or lies outside
// Int's range (a float such as 1.7e22 must not be cast: undefined behaviour).
template <class Int>
absl::Status NumberAs(const json& v, const char* what, const char* key, Int* out) {
  if (!v.is_number()) return Malformed(what, key, v);
  if (v.is_number_float()) {
    const double d = v.get<double>();
    if (!(d >= static_cast<double>(std::numeric_limits<Int>::min()) &&
          d < static_cast<double>(std::numeric_limits<Int>::max()))) {
      return Malformed(what, key, v);
    }
    *out = static_cast<Int>(d);
    return absl::OkStatus();
  }
  if (v.is_number_unsigned()) {
    const uint64_t u = v.get<uint64_t>();
    if (u > static_cast<uint64_t>(std::numeric_limits<Int>::max())) return Malformed(what, key, v);
    *out = static_cast<Int>(u);
    return absl::OkStatus();
  }
  const int64_t i = v.get<int64_t>();
  if (i < static_cast<int64_t>(std::numeric_limits<Int>::min()) ||
      i > static_cast<int64_t>(std::numeric_limits<Int>::max())) {
    return Malformed(what, key, v);
  }
  *out = static_cast<Int>(i);
  return absl::OkStatus();
}

template <class Int>
absl::Status GetInt(const json& j, const char* what, const char* key, Int* out) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return absl::OkStatus();
  return NumberAs(*it, what, key, out);
}

absl::Status GetOptInt(const json& j, const char* what, const char* key,
                       std::optional<int64_t>* out) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return absl::OkStatus();
  int64_t v = 0;
  FJORD_RETURN_IF_ERROR(NumberAs(*it, what, key, &v));
  *out = v;
  return absl::OkStatus();
}

absl::Status GetNum(const json& j, const char* what, const char* key, double* out) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return absl::OkStatus();
  if (!it->is_number()) return Malformed(what, key, *it);
  *out = it->get<double>();
  return absl::OkStatus();
}

absl::Status GetBool(const json& j, const char* what, const char* key, bool* out) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return absl::OkStatus();
  if (!it->is_boolean()) return Malformed(what, key, *it);
  *out = it->get<bool>();
  return absl::OkStatus();
}

json OptInt(const std::optional<int64_t>& v) { return v ? json(*v) : json(nullptr); }

absl::Status ReadHyperparameters(const json& j, Hyperparameters* h) {
  FJORD_ASSIGN_OR_RETURN(FieldReader r, FieldReader::Make(j, "hyperparameters"));
  FJORD_RETURN_IF_ERROR(r.Int("epochs", &h->epochs, 1, 1000));
  FJORD_RETURN_IF_ERROR(r.Int("max_steps", &h->max_steps, 0, 100000000));
  FJORD_RETURN_IF_ERROR(r.Int("batch_size", &h->batch_size, 1, 4096));
  FJORD_RETURN_IF_ERROR(
      r.Int("gradient_accumulation_steps", &h->gradient_accumulation_steps, 1, 4096));
  FJORD_RETURN_IF_ERROR(r.Number("learning_rate", &h->learning_rate, 0, 1, /*min_exclusive=*/true));
  FJORD_RETURN_IF_ERROR(r.String("lr_scheduler", &h->lr_scheduler, false, 16));
  if (h->lr_scheduler != "cosine" && h->lr_scheduler != "linear" && h->lr_scheduler != "constant") {
    return InvalidArgument(
        absl::StrCat("hyperparameters.lr_scheduler must be cosine, linear or constant, got '",
                     h->lr_scheduler, "'"),
        "hyperparameters.lr_scheduler");
  }
  FJORD_RETURN_IF_ERROR(r.Int("warmup_steps", &h->warmup_steps, 0, 100000000));
  FJORD_RETURN_IF_ERROR(r.Number("weight_decay", &h->weight_decay, 0, 10));
  FJORD_RETURN_IF_ERROR(r.Number("max_grad_norm", &h->max_grad_norm, -1e9, 1e9));
  FJORD_RETURN_IF_ERROR(r.Int("max_length", &h->max_length, 16, 131072));
  FJORD_RETURN_IF_ERROR(r.Int("seed", &h->seed, 0, INT64_MAX));
  FJORD_RETURN_IF_ERROR(r.Int("checkpoint_every_steps", &h->checkpoint_every_steps, 0, 100000000));
  FJORD_RETURN_IF_ERROR(r.Int("eval_every_steps", &h->eval_every_steps, 0, 100000000));
  return r.Finish();
}

absl::Status ReadLora(const json& j, LoraSettings* l) {
  FJORD_ASSIGN_OR_RETURN(FieldReader r, FieldReader::Make(j, "lora"));
  FJORD_RETURN_IF_ERROR(r.Int("r", &l->r, 1, 1024));
  FJORD_RETURN_IF_ERROR(r.Number("alpha", &l->alpha, 0, 1e6, /*min_exclusive=*/true));
  FJORD_RETURN_IF_ERROR(r.Number("dropout", &l->dropout, 0, 1, false, /*max_exclusive=*/true));
  if (r.Has("target_modules")) {
    FJORD_RETURN_IF_ERROR(r.StringList("target_modules", &l->target_modules, 64, 256));
    if (l->target_modules.empty()) {
      return InvalidArgument("lora.target_modules must not be empty", "lora.target_modules");
    }
  } else {
    r.Accept("target_modules");
  }
  return r.Finish();
}

json HyperparametersToJson(const Hyperparameters& h) {
  return json{{"epochs", h.epochs},
              {"max_steps", h.max_steps},
              {"batch_size", h.batch_size},
              {"gradient_accumulation_steps", h.gradient_accumulation_steps},
              {"learning_rate", h.learning_rate},
              {"lr_scheduler", h.lr_scheduler},
              {"warmup_steps", h.warmup_steps},
              {"weight_decay", h.weight_decay},
              {"max_grad_norm", h.max_grad_norm},
              {"max_length", h.max_length},
              {"seed", h.seed},
              {"checkpoint_every_steps", h.checkpoint_every_steps},
              {"eval_every_steps", h.eval_every_steps}};
}

json LoraToJson(const LoraSettings& l) {
  return json{
      {"r", l.r}, {"alpha", l.alpha}, {"dropout", l.dropout}, {"target_modules", l.target_modules}};
}

absl::Status ReadHyperparametersLenient(const json& j, Hyperparameters* h) {
  if (!j.is_object()) return Malformed("job", "hyperparameters", j);
  const char* w = "hyperparameters";
  FJORD_RETURN_IF_ERROR(GetInt(j, w, "epochs", &h->epochs));
  FJORD_RETURN_IF_ERROR(GetInt(j, w, "max_steps", &h->max_steps));
  FJORD_RETURN_IF_ERROR(GetInt(j, w, "batch_size", &h->batch_size));
  FJORD_RETURN_IF_ERROR(
      GetInt(j, w, "gradient_accumulation_steps", &h->gradient_accumulation_steps));
  FJORD_RETURN_IF_ERROR(GetNum(j, w, "learning_rate", &h->learning_rate));
  FJORD_RETURN_IF_ERROR(GetStr(j, w, "lr_scheduler", &h->lr_scheduler));
  FJORD_RETURN_IF_ERROR(GetInt(j, w, "warmup_steps", &h->warmup_steps));
  FJORD_RETURN_IF_ERROR(GetNum(j, w, "weight_decay", &h->weight_decay));
  FJORD_RETURN_IF_ERROR(GetNum(j, w, "max_grad_norm", &h->max_grad_norm));
  FJORD_RETURN_IF_ERROR(GetInt(j, w, "max_length", &h->max_length));
  FJORD_RETURN_IF_ERROR(GetInt(j, w, "seed", &h->seed));
  FJORD_RETURN_IF_ERROR(GetInt(j, w, "checkpoint_every_steps", &h->checkpoint_every_steps));
  return GetInt(j, w, "eval_every_steps", &h->eval_every_steps);
}

absl::Status ReadLoraLenient(const json& j, LoraSettings* l) {
  if (!j.is_object()) return Malformed("job", "lora", j);
  FJORD_RETURN_IF_ERROR(GetInt(j, "lora", "r", &l->r));
  FJORD_RETURN_IF_ERROR(GetNum(j, "lora", "alpha", &l->alpha));
  FJORD_RETURN_IF_ERROR(GetNum(j, "lora", "dropout", &l->dropout));
  auto it = j.find("target_modules");
  if (it != j.end() && it->is_array()) {
    l->target_modules.clear();
    for (const json& m : *it) {
      if (!m.is_string()) return Malformed("lora", "target_modules[]", m);
      l->target_modules.push_back(m.get<std::string>());
    }
  }
  return absl::OkStatus();
}

// method and preference (a fine-tune job's).
absl::Status ReadMethod(FieldReader& r, JobSpec* spec) {
  FJORD_RETURN_IF_ERROR(r.String("method", &spec->method, false, 16));
  if (spec->method != "sft" && spec->method != "dpo" && spec->method != "orpo" &&
      spec->method != "simpo") {
    return InvalidArgument(
        absl::StrCat("method must be sft, dpo, orpo or simpo, got '", spec->method, "'"), "method");
  }
  FJORD_ASSIGN_OR_RETURN(const json* pj, r.Object("preference"));
  if (pj == nullptr) return absl::OkStatus();
  if (spec->method == "sft") {
    return InvalidArgument(
        "preference settings need a preference method (method: dpo, orpo or simpo)", "preference");
  }
  PreferenceSettings& p = spec->preference;
  FJORD_ASSIGN_OR_RETURN(FieldReader pr, FieldReader::Make(*pj, "preference"));
  FJORD_RETURN_IF_ERROR(pr.Number("beta", &p.beta, 0, 1000, /*min_exclusive=*/true));
  FJORD_RETURN_IF_ERROR(pr.String("loss_type", &p.loss_type, false, 16));
  if (p.loss_type != "sigmoid" && p.loss_type != "robust" && p.loss_type != "hinge" &&
      p.loss_type != "ipo") {
    return InvalidArgument(absl::StrCat("preference.loss_type must be sigmoid, robust, hinge or "
                                        "ipo, got '",
                                        p.loss_type, "'"),
                           "preference.loss_type");
  }
  FJORD_RETURN_IF_ERROR(
      pr.Number("label_smoothing", &p.label_smoothing, 0, 0.5, false, /*max_exclusive=*/true));
  FJORD_RETURN_IF_ERROR(pr.Number("simpo_gamma", &p.simpo_gamma, 0, 100));
  FJORD_RETURN_IF_ERROR(pr.Number("cpo_alpha", &p.cpo_alpha, 0, 100));
  FJORD_RETURN_IF_ERROR(pr.Bool("precompute_ref", &p.precompute_ref));
  return pr.Finish();
}

json PreferenceToJson(const PreferenceSettings& p) {
  return json{{"beta", p.beta},
              {"loss_type", p.loss_type},
              {"label_smoothing", p.label_smoothing},
              {"simpo_gamma", p.simpo_gamma},
              {"cpo_alpha", p.cpo_alpha},
              {"precompute_ref", p.precompute_ref}};
}

absl::Status ReadPreferenceLenient(const json& j, PreferenceSettings* p) {
  if (!j.is_object()) return Malformed("job", "preference", j);
  const char* w = "preference";
  FJORD_RETURN_IF_ERROR(GetNum(j, w, "beta", &p->beta));
  FJORD_RETURN_IF_ERROR(GetStr(j, w, "loss_type", &p->loss_type));
  FJORD_RETURN_IF_ERROR(GetNum(j, w, "label_smoothing", &p->label_smoothing));
  FJORD_RETURN_IF_ERROR(GetNum(j, w, "simpo_gamma", &p->simpo_gamma));
  FJORD_RETURN_IF_ERROR(GetNum(j, w, "cpo_alpha", &p->cpo_alpha));
  return GetBool(j, w, "precompute_ref", &p->precompute_ref);
}

bool ValidCandidateName(absl::string_view name) {
  if (name.empty() || name.size() > 64) return false;
  for (char c : name) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                    c == '.' || c == '_' || c == '-';
    if (!ok) return false;
  }
  return true;
}

bool KnownEvalMetric(const std::string& name) {
  for (const char* m : kEvalMetricNames) {
    if (name == m) return true;
  }
  return false;
}

// The fields of an evaluation job (type "evaluation"): candidates, datasets,
// evaluation.
absl::Status ReadEvaluationFields(FieldReader& r, const json& body, JobSpec* spec) {
  r.Accept("candidates");
  auto cs = body.find("candidates");
  if (cs == body.end() || cs->is_null()) {
    return InvalidArgument("an evaluation job needs candidates (1..16)", "candidates");
  }
  if (!cs->is_array() || cs->empty() || cs->size() > 16) {
    return InvalidArgument("candidates must be an array of 1..16 objects", "candidates");
  }
  std::set<std::string> names;
  for (size_t i = 0; i < cs->size(); ++i) {
    const std::string path = absl::StrCat("candidates[", i, "]");
    FJORD_ASSIGN_OR_RETURN(FieldReader c, FieldReader::Make((*cs)[i], path));
    EvalCandidate cand;
    FJORD_RETURN_IF_ERROR(c.String("name", &cand.name, /*required=*/true, 64));
    if (!ValidCandidateName(cand.name)) {
      return InvalidArgument(absl::StrCat(path, ".name '", cand.name,
                                          "' must be 1..64 bytes of letters, digits, '.', '_', "
                                          "'-'"),
                             path + ".name");
    }
    if (!names.insert(cand.name).second) {
      return InvalidArgument(
          absl::StrCat(path, ".name '", cand.name, "' is the name of an earlier candidate"),
          path + ".name");
    }
    FJORD_RETURN_IF_ERROR(c.String("job", &cand.job, false, 64));
    FJORD_RETURN_IF_ERROR(c.String("adapter_config", &cand.adapter_config, false, 1024));
    FJORD_RETURN_IF_ERROR(c.String("adapter_model", &cand.adapter_model, false, 1024));
    FJORD_RETURN_IF_ERROR(c.String("model", &cand.model, false, 256));
    FJORD_RETURN_IF_ERROR(c.Finish());
    if (cand.adapter_config.empty() != cand.adapter_model.empty()) {
      return InvalidArgument(
          absl::StrCat(path,
                       ": an uploaded adapter needs both adapter_config "
                       "(adapter_config.json) and adapter_model "
                       "(adapter_model.safetensors)"),
          path + (cand.adapter_config.empty() ? ".adapter_config" : ".adapter_model"));
    }
    if (!cand.job.empty() && !cand.adapter_config.empty()) {
      return InvalidArgument(absl::StrCat(path,
                                          ": a candidate is a fine-tune job's adapter or an "
                                          "uploaded adapter, not both"),
                             path + ".job");
    }
    spec->candidates.push_back(std::move(cand));
  }
  if (!r.Has("datasets")) {
    return InvalidArgument("an evaluation job needs datasets (1..8 files of prompt/answer lines)",
                           "datasets");
  }
  FJORD_RETURN_IF_ERROR(r.StringList("datasets", &spec->datasets, 8, 1024));
  if (spec->datasets.empty()) {
    return InvalidArgument("datasets must name 1..8 files", "datasets");
  }
  FJORD_ASSIGN_OR_RETURN(const json* ev, r.Object("evaluation"));
  if (ev != nullptr) {
    EvalSettings& e = spec->evaluation;
    FJORD_ASSIGN_OR_RETURN(FieldReader er, FieldReader::Make(*ev, "evaluation"));
    FJORD_RETURN_IF_ERROR(er.StringList("metrics", &e.metrics, 16, 64));
    for (size_t i = 0; i < e.metrics.size(); ++i) {
      if (!KnownEvalMetric(e.metrics[i])) {
        std::string known;
        for (const char* m : kEvalMetricNames)
          absl::StrAppend(&known, known.empty() ? "" : ", ", m);
        return InvalidArgument(absl::StrCat("evaluation.metrics[", i, "]: unknown metric '",
                                            e.metrics[i], "' (known: ", known, ")"),
                               "evaluation.metrics");
      }
    }
    FJORD_RETURN_IF_ERROR(er.Int("max_new_tokens", &e.max_new_tokens, 1, 4096));
    FJORD_RETURN_IF_ERROR(er.Int("batch_size", &e.batch_size, 1, 256));
    FJORD_RETURN_IF_ERROR(er.Int("samples", &e.samples, 0, 100));
    FJORD_RETURN_IF_ERROR(er.Int("bootstrap", &e.bootstrap, 100, 100000));
    FJORD_RETURN_IF_ERROR(er.Int("seed", &e.seed, 0, INT64_MAX));
    FJORD_RETURN_IF_ERROR(er.String("chat_template", &e.chat_template, false, 64));
    FJORD_RETURN_IF_ERROR(er.String("judge", &e.judge, false, 256));
    FJORD_RETURN_IF_ERROR(er.Finish());
  }
  return absl::OkStatus();
}

json EvalCandidateToJson(const EvalCandidate& c) {
  json j{{"name", c.name}};
  if (!c.job.empty()) j["job"] = c.job;
  if (!c.adapter_config.empty()) j["adapter_config"] = c.adapter_config;
  if (!c.adapter_model.empty()) j["adapter_model"] = c.adapter_model;
  if (!c.model.empty()) j["model"] = c.model;
  return j;
}

json EvalSettingsToJson(const EvalSettings& e) {
  json j{{"metrics", e.metrics},
         {"max_new_tokens", e.max_new_tokens},
         {"batch_size", e.batch_size},
         {"samples", e.samples},
         {"bootstrap", e.bootstrap},
         {"seed", e.seed},
         {"chat_template", e.chat_template}};
  if (!e.judge.empty()) j["judge"] = e.judge;
  return j;
}

// The evaluation fields of a job object (lenient, as every *FromJson of a
// reply).
absl::Status ReadEvaluationLenient(const json& j, JobSpec* spec) {
  if (auto cs = j.find("candidates"); cs != j.end() && cs->is_array()) {
    for (const json& c : *cs) {
      if (!c.is_object()) return Malformed("job", "candidates[]", c);
      EvalCandidate cand;
      FJORD_RETURN_IF_ERROR(GetStr(c, "candidate", "name", &cand.name));
      FJORD_RETURN_IF_ERROR(GetStr(c, "candidate", "job", &cand.job));
      FJORD_RETURN_IF_ERROR(GetStr(c, "candidate", "adapter_config", &cand.adapter_config));
      FJORD_RETURN_IF_ERROR(GetStr(c, "candidate", "adapter_model", &cand.adapter_model));
      FJORD_RETURN_IF_ERROR(GetStr(c, "candidate", "model", &cand.model));
      spec->candidates.push_back(std::move(cand));
    }
  }
  if (auto ds = j.find("datasets"); ds != j.end() && ds->is_array()) {
    for (const json& d : *ds) {
      if (!d.is_string()) return Malformed("job", "datasets[]", d);
      spec->datasets.push_back(d.get<std::string>());
    }
  }
  if (auto ev = j.find("evaluation"); ev != j.end() && ev->is_object()) {
    EvalSettings& e = spec->evaluation;
    const char* w = "evaluation";
    if (auto ms = ev->find("metrics"); ms != ev->end() && ms->is_array()) {
      for (const json& m : *ms) {
        if (m.is_string()) e.metrics.push_back(m.get<std::string>());
      }
    }
    FJORD_RETURN_IF_ERROR(GetInt(*ev, w, "max_new_tokens", &e.max_new_tokens));
    FJORD_RETURN_IF_ERROR(GetInt(*ev, w, "batch_size", &e.batch_size));
    FJORD_RETURN_IF_ERROR(GetInt(*ev, w, "samples", &e.samples));
    FJORD_RETURN_IF_ERROR(GetInt(*ev, w, "bootstrap", &e.bootstrap));
    FJORD_RETURN_IF_ERROR(GetInt(*ev, w, "seed", &e.seed));
    FJORD_RETURN_IF_ERROR(GetStr(*ev, w, "chat_template", &e.chat_template));
    FJORD_RETURN_IF_ERROR(GetStr(*ev, w, "judge", &e.judge));
  }
  return absl::OkStatus();
}

}  // namespace

const char* JobStatusName(JobStatus status) { return kStatusNames[static_cast<int>(status)]; }

std::optional<JobStatus> ParseJobStatus(absl::string_view name) {
  for (JobStatus s : kAllJobStatuses) {
    if (name == JobStatusName(s)) return s;
  }
  return std::nullopt;
}

bool IsFinal(JobStatus status) {
  return status == JobStatus::kSucceeded || status == JobStatus::kFailed ||
         status == JobStatus::kCancelled;
}

bool ValidTenantName(absl::string_view name) {
  if (name.empty() || name.size() > 64) return false;
  for (size_t i = 0; i < name.size(); ++i) {
    const char c = name[i];
    const bool alnum = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
    if (!alnum && (i == 0 || (c != '-' && c != '_'))) return false;
  }
  return true;
}

bool ValidIdempotencyKey(absl::string_view key) {
  if (key.empty() || key.size() > kMaxIdempotencyKeyBytes) return false;
  for (char c : key) {
    if (c < 0x20 || c > 0x7e) return false;
  }
  return true;
}

absl::StatusOr<JobSpec> JobSpecFromJson(const json& body) {
  JobSpec spec;
  FJORD_ASSIGN_OR_RETURN(FieldReader r, FieldReader::Make(body, ""));
  FJORD_RETURN_IF_ERROR(r.String("type", &spec.type, false, 32));
  if (spec.type != "fine_tune" && spec.type != "evaluation") {
    return InvalidArgument(
        absl::StrCat("type must be fine_tune or evaluation, got '", spec.type, "'"), "type");
  }
  FJORD_RETURN_IF_ERROR(r.String("model", &spec.model, /*required=*/true, 256));
  if (spec.is_evaluation()) {
    // The fine-tuning fields have no meaning here: refused by name, not
    // silently ignored.
    for (const char* f : {"training_file", "validation_file", "heldout_file", "hyperparameters",
                          "lora", "quantization", "shard_base", "method", "preference"}) {
      if (r.Has(f)) {
        return InvalidArgument(
            absl::StrCat(f,
                         " is a fine-tuning field; an evaluation job takes candidates, "
                         "datasets and evaluation"),
            f);
      }
    }
    FJORD_RETURN_IF_ERROR(ReadEvaluationFields(r, body, &spec));
  } else {
    for (const char* f : {"candidates", "datasets", "evaluation"}) {
      if (r.Has(f)) {
        return InvalidArgument(
            absl::StrCat(f, " is a field of evaluation jobs (\"type\": \"evaluation\")"), f);
      }
    }
    FJORD_RETURN_IF_ERROR(r.String("training_file", &spec.training_file, /*required=*/true, 1024));
    FJORD_RETURN_IF_ERROR(r.String("validation_file", &spec.validation_file, false, 1024));
    FJORD_RETURN_IF_ERROR(r.String("heldout_file", &spec.heldout_file, false, 1024));
    FJORD_ASSIGN_OR_RETURN(const json* hp, r.Object("hyperparameters"));
    if (hp != nullptr) FJORD_RETURN_IF_ERROR(ReadHyperparameters(*hp, &spec.hyperparameters));
    FJORD_ASSIGN_OR_RETURN(const json* lora, r.Object("lora"));
    if (lora != nullptr) FJORD_RETURN_IF_ERROR(ReadLora(*lora, &spec.lora));
    FJORD_RETURN_IF_ERROR(ReadMethod(r, &spec));
  }
  FJORD_RETURN_IF_ERROR(r.Int("priority", &spec.priority, -10, 10));
  FJORD_RETURN_IF_ERROR(r.Int("gpus", &spec.gpus, 1, 64));
  if (spec.is_evaluation() && spec.gpus != 1) {
    return InvalidArgument(
        absl::StrCat("gpus is ", spec.gpus, "; an evaluation job runs on one GPU (gpus: 1)"),
        "gpus");
  }
  FJORD_RETURN_IF_ERROR(
      r.String("quantization", &spec.quantization, false, 64, /*allow_empty=*/true));
  if (spec.quantization != "none" && spec.quantization != "nf4") {
    return InvalidArgument(
        absl::StrCat("quantization must be none or nf4, got '", spec.quantization, "'"),
        "quantization");
  }
  FJORD_RETURN_IF_ERROR(r.Bool("shard_base", &spec.shard_base));
  if (spec.method != "sft" && !spec.heldout_file.empty()) {
    return InvalidArgument(
        absl::StrCat("heldout_file (greedy answers to held-out prompts) is for sft jobs; a ",
                     spec.method, " job is measured by its reward accuracy on validation_file"),
        "heldout_file");
  }
  FJORD_RETURN_IF_ERROR(r.Int("max_restarts", &spec.max_restarts, 0, 100));
  FJORD_ASSIGN_OR_RETURN(const json* md, r.Object("metadata"));
  if (md != nullptr) {
    if (md->size() > 16) {
      return InvalidArgument(absl::StrCat("metadata has ", md->size(), " entries, limit 16"),
                             "metadata");
    }
    for (auto it = md->begin(); it != md->end(); ++it) {
      const std::string p = absl::StrCat("metadata.", it.key());
      if (it.key().empty() || it.key().size() > 64) {
        return InvalidArgument("metadata keys must be 1..64 bytes", "metadata");
      }
      if (!it->is_string() || it->get_ref<const std::string&>().size() > 512) {
        return InvalidArgument(absl::StrCat(p, " must be a string of at most 512 bytes"), p);
      }
      spec.metadata[it.key()] = it->get<std::string>();
    }
  }
  FJORD_RETURN_IF_ERROR(
      r.String("idempotency_key", &spec.idempotency_key, false, kMaxIdempotencyKeyBytes));
  if (!spec.idempotency_key.empty() && !ValidIdempotencyKey(spec.idempotency_key)) {
    return InvalidArgument("idempotency_key must be printable ASCII", "idempotency_key");
  }
  FJORD_RETURN_IF_ERROR(r.String("tenant", &spec.tenant, false, 64));
  if (!spec.tenant.empty() && !ValidTenantName(spec.tenant)) {
    return InvalidArgument(absl::StrCat("tenant '", spec.tenant, "' is not a valid tenant name"),
                           "tenant");
  }
  FJORD_RETURN_IF_ERROR(r.Finish());
  return spec;
}

json JobSpecToJson(const JobSpec& spec) {
  json j{{"model", spec.model},
         {"priority", spec.priority},
         {"gpus", spec.gpus},
         {"metadata", spec.metadata}};
  if (spec.is_evaluation()) {
    j["type"] = spec.type;
    json cs = json::array();
    for (const EvalCandidate& c : spec.candidates) cs.push_back(EvalCandidateToJson(c));
    j["candidates"] = cs;
    j["datasets"] = spec.datasets;
    j["evaluation"] = EvalSettingsToJson(spec.evaluation);
  } else {
    j["training_file"] = spec.training_file;
    j["hyperparameters"] = HyperparametersToJson(spec.hyperparameters);
    j["lora"] = LoraToJson(spec.lora);
    // Only for a preference method: the bodies and fingerprints of SFT jobs
    // stay as they were before the fields existed.
    if (spec.method != "sft") {
      j["method"] = spec.method;
      j["preference"] = PreferenceToJson(spec.preference);
    }
  }
  if (!spec.validation_file.empty()) j["validation_file"] = spec.validation_file;
  if (!spec.heldout_file.empty()) j["heldout_file"] = spec.heldout_file;
  if (spec.max_restarts >= 0) j["max_restarts"] = spec.max_restarts;
  if (spec.quantization != "none") j["quantization"] = spec.quantization;
  if (spec.shard_base) j["shard_base"] = true;
  if (!spec.idempotency_key.empty()) j["idempotency_key"] = spec.idempotency_key;
  if (!spec.tenant.empty()) j["tenant"] = spec.tenant;
  return j;
}

std::string JobSpecFingerprint(const JobSpec& spec) {
  JobSpec s = spec;
  s.idempotency_key.clear();
  s.tenant.clear();
  return DumpJson(JobSpecToJson(s));
}

json JobToJson(const Job& job) {
  json j{
      {"id", job.id},
      {"tenant", job.tenant},
      {"model", job.spec.model},
      {"training_file", job.spec.training_file},
      {"validation_file",
       job.spec.validation_file.empty() ? json(nullptr) : json(job.spec.validation_file)},
      {"heldout_file", job.spec.heldout_file.empty() ? json(nullptr) : json(job.spec.heldout_file)},
      {"hyperparameters", HyperparametersToJson(job.spec.hyperparameters)},
      {"lora", LoraToJson(job.spec.lora)},
      {"priority", job.spec.priority},
      {"gpus", job.spec.gpus},
      {"max_restarts", job.spec.max_restarts},
      {"metadata", job.spec.metadata},
      {"idempotency_key",
       job.spec.idempotency_key.empty() ? json(nullptr) : json(job.spec.idempotency_key)},
      {"status", JobStatusName(job.status)},
      {"queue_position", OptInt(job.queue_position)},
      {"created_at_ms", job.created_at_ms},
      {"started_at_ms", OptInt(job.started_at_ms)},
      {"finished_at_ms", OptInt(job.finished_at_ms)},
      {"step", job.step},
      {"total_steps", job.total_steps},
      {"trained_tokens", job.trained_tokens},
      {"metrics", job.metrics.is_object() ? job.metrics : json::object()},
      {"error", nullptr},
      {"latest_checkpoint", nullptr},
      {"result_adapter", nullptr},
      {"restarts", job.restarts},
      {"node", job.node},
      {"gpu_ids", job.gpu_ids}};
  // Only with the Slurm executor: clients written before it see nothing new.
  if (!job.slurm_job_id.empty()) j["slurm_job_id"] = job.slurm_job_id;
  if (!job.queue_detail.empty()) j["queue_detail"] = job.queue_detail;
  if (job.error) {
    j["error"] = {{"code", job.error->code},
                  {"message", job.error->message},
                  {"param", job.error->param.empty() ? json(nullptr) : json(job.error->param)},
                  {"user_error", job.error->user_error}};
  }
  if (job.latest_checkpoint) j["latest_checkpoint"] = CheckpointToJson(*job.latest_checkpoint);
  if (job.spec.is_evaluation()) {
    // An evaluation job: its own fields instead of the fine-tuning ones, and
    // a report instead of an adapter.
    for (const char* f : {"hyperparameters", "lora", "result_adapter"}) j.erase(f);
    j["training_file"] = nullptr;
    j["type"] = job.spec.type;
    json cs = json::array();
    for (const EvalCandidate& c : job.spec.candidates) cs.push_back(EvalCandidateToJson(c));
    j["candidates"] = cs;
    j["datasets"] = job.spec.datasets;
    j["evaluation"] = EvalSettingsToJson(job.spec.evaluation);
    j["result_report"] = nullptr;
    if (!job.result_adapter_path.empty()) {
      j["result_report"] = {{"path", job.result_adapter_path},
                            {"files", {"report.json", "report.html"}}};
    }
    return j;
  }
  if (!job.result_adapter_path.empty()) j["result_adapter"] = {{"path", job.result_adapter_path}};
  // Only when set: job objects (and the records in the store) of jobs without
  // them stay as they were before the fields existed.
  if (job.spec.quantization != "none") j["quantization"] = job.spec.quantization;
  if (job.spec.shard_base) j["shard_base"] = true;
  if (job.spec.method != "sft") {
    j["method"] = job.spec.method;
    j["preference"] = PreferenceToJson(job.spec.preference);
  }
  return j;
}

absl::StatusOr<Job> JobFromJson(const json& j) {
  if (!j.is_object()) return absl::InternalError("malformed reply: job is not an object");
  Job job;
  const char* w = "job";
  FJORD_RETURN_IF_ERROR(GetStr(j, w, "id", &job.id));
  if (job.id.empty()) return absl::InternalError("malformed reply: job has no id");
  FJORD_RETURN_IF_ERROR(GetStr(j, w, "tenant", &job.tenant));
  job.spec.tenant = job.tenant;
  FJORD_RETURN_IF_ERROR(GetStr(j, w, "type", &job.spec.type));      // absent: "fine_tune"
  FJORD_RETURN_IF_ERROR(GetStr(j, w, "method", &job.spec.method));  // absent: "sft"
  if (auto it = j.find("preference"); it != j.end() && it->is_object()) {
    FJORD_RETURN_IF_ERROR(ReadPreferenceLenient(*it, &job.spec.preference));
  }
  FJORD_RETURN_IF_ERROR(GetStr(j, w, "model", &job.spec.model));
  FJORD_RETURN_IF_ERROR(ReadEvaluationLenient(j, &job.spec));
  if (auto it = j.find("result_report"); it != j.end() && it->is_object()) {
    FJORD_RETURN_IF_ERROR(GetStr(*it, "result_report", "path", &job.result_adapter_path));
  }
  FJORD_RETURN_IF_ERROR(GetStr(j, w, "training_file", &job.spec.training_file));
  FJORD_RETURN_IF_ERROR(GetStr(j, w, "validation_file", &job.spec.validation_file));
  FJORD_RETURN_IF_ERROR(GetStr(j, w, "heldout_file", &job.spec.heldout_file));
  if (auto it = j.find("hyperparameters"); it != j.end() && !it->is_null()) {
    FJORD_RETURN_IF_ERROR(ReadHyperparametersLenient(*it, &job.spec.hyperparameters));
  }
  if (auto it = j.find("lora"); it != j.end() && !it->is_null()) {
    FJORD_RETURN_IF_ERROR(ReadLoraLenient(*it, &job.spec.lora));
  }
  FJORD_RETURN_IF_ERROR(GetInt(j, w, "priority", &job.spec.priority));
  FJORD_RETURN_IF_ERROR(GetInt(j, w, "gpus", &job.spec.gpus));
  FJORD_RETURN_IF_ERROR(GetStr(j, w, "quantization", &job.spec.quantization));  // absent: "none"
  FJORD_RETURN_IF_ERROR(GetBool(j, w, "shard_base", &job.spec.shard_base));     // absent: false
  FJORD_RETURN_IF_ERROR(GetInt(j, w, "max_restarts", &job.spec.max_restarts));
  if (auto it = j.find("metadata"); it != j.end() && it->is_object()) {
    for (auto m = it->begin(); m != it->end(); ++m) {
      if (m->is_string()) job.spec.metadata[m.key()] = m->get<std::string>();
    }
  }
  FJORD_RETURN_IF_ERROR(GetStr(j, w, "idempotency_key", &job.spec.idempotency_key));
  std::string status;
  FJORD_RETURN_IF_ERROR(GetStr(j, w, "status", &status));
  std::optional<JobStatus> st = ParseJobStatus(status);
  if (!st)
    return absl::InternalError(absl::StrCat("malformed reply: unknown job status '", status, "'"));
  job.status = *st;
  FJORD_RETURN_IF_ERROR(GetOptInt(j, w, "queue_position", &job.queue_position));
  FJORD_RETURN_IF_ERROR(GetInt(j, w, "created_at_ms", &job.created_at_ms));
  FJORD_RETURN_IF_ERROR(GetOptInt(j, w, "started_at_ms", &job.started_at_ms));
  FJORD_RETURN_IF_ERROR(GetOptInt(j, w, "finished_at_ms", &job.finished_at_ms));
  FJORD_RETURN_IF_ERROR(GetInt(j, w, "step", &job.step));
  FJORD_RETURN_IF_ERROR(GetInt(j, w, "total_steps", &job.total_steps));
  FJORD_RETURN_IF_ERROR(GetInt(j, w, "trained_tokens", &job.trained_tokens));
  if (auto it = j.find("metrics"); it != j.end() && it->is_object()) job.metrics = *it;
  if (auto it = j.find("error"); it != j.end() && it->is_object()) {
    JobError e;
    FJORD_RETURN_IF_ERROR(GetStr(*it, "error", "code", &e.code));
    FJORD_RETURN_IF_ERROR(GetStr(*it, "error", "message", &e.message));
    FJORD_RETURN_IF_ERROR(GetStr(*it, "error", "param", &e.param));
    FJORD_RETURN_IF_ERROR(GetBool(*it, "error", "user_error", &e.user_error));
    job.error = e;
  }
  if (auto it = j.find("latest_checkpoint"); it != j.end() && it->is_object()) {
    FJORD_ASSIGN_OR_RETURN(CheckpointInfo c, CheckpointFromJson(*it));
    job.latest_checkpoint = c;
  }
  if (auto it = j.find("result_adapter"); it != j.end() && it->is_object()) {
    FJORD_RETURN_IF_ERROR(GetStr(*it, "result_adapter", "path", &job.result_adapter_path));
  }
  FJORD_RETURN_IF_ERROR(GetInt(j, w, "restarts", &job.restarts));
  FJORD_RETURN_IF_ERROR(GetStr(j, w, "node", &job.node));
  FJORD_RETURN_IF_ERROR(GetStr(j, w, "slurm_job_id", &job.slurm_job_id));
  FJORD_RETURN_IF_ERROR(GetStr(j, w, "queue_detail", &job.queue_detail));
  if (auto it = j.find("gpu_ids"); it != j.end() && it->is_array()) {
    for (const json& g : *it) {
      if (!g.is_number_integer()) return Malformed("job", "gpu_ids[]", g);
      job.gpu_ids.push_back(g.get<int>());
    }
  }
  return job;
}

json JobEventToJson(const JobEvent& e) {
  return json{{"seq", e.seq},
              {"time_ms", e.time_ms},
              {"type", e.type},
              {"message", e.message},
              {"data", e.data.is_object() ? e.data : json::object()}};
}

absl::StatusOr<JobEvent> JobEventFromJson(const json& j) {
  if (!j.is_object()) return absl::InternalError("malformed reply: event is not an object");
  JobEvent e;
  FJORD_RETURN_IF_ERROR(GetInt(j, "event", "seq", &e.seq));
  FJORD_RETURN_IF_ERROR(GetInt(j, "event", "time_ms", &e.time_ms));
  FJORD_RETURN_IF_ERROR(GetStr(j, "event", "type", &e.type));
  FJORD_RETURN_IF_ERROR(GetStr(j, "event", "message", &e.message));
  if (auto it = j.find("data"); it != j.end() && it->is_object()) e.data = *it;
  return e;
}

json FileInfoToJson(const FileInfo& f) {
  return json{{"id", f.id},         {"filename", f.filename},           {"bytes", f.bytes},
              {"sha256", f.sha256}, {"created_at_ms", f.created_at_ms}, {"path", f.path}};
}

absl::StatusOr<FileInfo> FileInfoFromJson(const json& j) {
  if (!j.is_object()) return absl::InternalError("malformed reply: file is not an object");
  FileInfo f;
  FJORD_RETURN_IF_ERROR(GetStr(j, "file", "id", &f.id));
  FJORD_RETURN_IF_ERROR(GetStr(j, "file", "filename", &f.filename));
  FJORD_RETURN_IF_ERROR(GetInt(j, "file", "bytes", &f.bytes));
  FJORD_RETURN_IF_ERROR(GetStr(j, "file", "sha256", &f.sha256));
  FJORD_RETURN_IF_ERROR(GetInt(j, "file", "created_at_ms", &f.created_at_ms));
  FJORD_RETURN_IF_ERROR(GetStr(j, "file", "path", &f.path));
  return f;
}

json CheckpointToJson(const CheckpointInfo& c) { return json{{"step", c.step}, {"path", c.path}}; }

absl::StatusOr<CheckpointInfo> CheckpointFromJson(const json& j) {
  if (!j.is_object()) return absl::InternalError("malformed reply: checkpoint is not an object");
  CheckpointInfo c;
  FJORD_RETURN_IF_ERROR(GetInt(j, "checkpoint", "step", &c.step));
  FJORD_RETURN_IF_ERROR(GetStr(j, "checkpoint", "path", &c.path));
  return c;
}

}  // namespace fjord::protocol

#include "daemon/protocol/worker_protocol.h"

#include <cmath>
#include <set>
#include <utility>

#include "absl/strings/str_cat.h"
#include "daemon/protocol/errors.h"
#include "daemon/protocol/json_reader.h"

namespace fjord::protocol {
namespace {

using nlohmann::json;

// Type names on the wire.
constexpr char kHeartbeat[] = "heartbeat";
constexpr char kStart[] = "start";
constexpr char kStep[] = "step";
constexpr char kEval[] = "eval";
constexpr char kCheckpoint[] = "checkpoint";
constexpr char kLog[] = "log";
constexpr char kDone[] = "done";
constexpr char kError[] = "error";

// Reads the known fields of one message, tolerantly: a field of the expected
// type fills its member, one that is absent leaves it as it is. A number of
// another type (null included, and a non-finite one) leaves its optional
// member unset and stays in `extra`, like every key nobody read; a string or
// bool member of another type keeps its default and the value is dropped
// (the encoder always writes those members, so `extra` could not keep it).
class Fields {
 public:
  explicit Fields(const json& object) : object_(object) {}

  void Int(const char* key, std::optional<int64_t>* out) {
    const json* v = Find(key);
    if (v == nullptr) return;
    if (v->is_number_integer()) {  // signed, or unsigned (nlohmann counts both)
      if (v->is_number_unsigned() && v->get<uint64_t>() > static_cast<uint64_t>(INT64_MAX)) return;
      *out = v->get<int64_t>();
    } else if (v->is_number_float()) {
      // fjordd always took a float for a count, truncated; beyond int64 it is
      // not a count.
      const double d = v->get<double>();
      if (!std::isfinite(d) || d < -9223372036854775808.0 || d >= 9223372036854775808.0) return;
      *out = static_cast<int64_t>(d);
    } else {
      return;
    }
    read_.insert(key);
  }
  void Number(const char* key, std::optional<double>* out) {
    const json* v = Find(key);
    if (v == nullptr || !v->is_number() || !std::isfinite(v->get<double>())) return;
    *out = v->get<double>();
    read_.insert(key);
  }
  void String(const char* key, std::string* out) {
    const json* v = Find(key);
    if (v == nullptr) return;
    if (v->is_string()) *out = v->get<std::string>();
    read_.insert(key);
  }
  void Bool(const char* key, bool* out) {
    const json* v = Find(key);
    if (v == nullptr) return;
    if (v->is_boolean()) *out = v->get<bool>();
    read_.insert(key);
  }
  // The keys nobody read, "type" aside, with their values.
  json Rest() const {
    json rest = json::object();
    for (const auto& [key, value] : object_.items()) {
      if (key != "type" && read_.count(key) == 0) rest[key] = value;
    }
    return rest;
  }

 private:
  const json* Find(const char* key) const {
    auto it = object_.find(key);
    return it == object_.end() ? nullptr : &*it;
  }
  const json& object_;
  std::set<std::string> read_;
};

// The payload for a wire type, its fields read from `f`.
WorkerPayload ReadPayload(const std::string& type, Fields& f) {
  if (type == kHeartbeat) {
    WorkerHeartbeat h;
    f.Int("pid", &h.pid);
    return h;
  }
  if (type == kStart) {
    WorkerStart s;
    f.String("message", &s.message);
    return s;
  }
  if (type == kStep) {
    WorkerStep s;
    f.Int("epoch", &s.epoch);
    f.Number("loss", &s.loss);
    f.Number("lr", &s.lr);
    f.Number("grad_norm", &s.grad_norm);
    f.Number("tokens_per_s", &s.tokens_per_s);
    f.Number("eta_s", &s.eta_s);
    f.Int("trained_tokens", &s.trained_tokens);
    f.Int("peak_memory_bytes", &s.peak_memory_bytes);
    return s;
  }
  if (type == kEval) {
    WorkerEval e;
    f.Number("eval_loss", &e.eval_loss);
    f.Number("eval_token_accuracy", &e.eval_token_accuracy);
    f.Number("heldout_accuracy", &e.heldout_accuracy);
    return e;
  }
  if (type == kCheckpoint) {
    WorkerCheckpoint c;
    f.String("message", &c.path);
    return c;
  }
  if (type == kLog) {
    WorkerLog l;
    f.String("message", &l.message);
    return l;
  }
  if (type == kDone) {
    WorkerDone d;
    f.Number("eval_loss", &d.eval_loss);
    f.Number("heldout_accuracy", &d.heldout_accuracy);
    f.String("adapter", &d.adapter);
    return d;
  }
  if (type == kError) {
    WorkerError e;
    f.String("code", &e.code);
    absl::StatusCode code;
    if (!CodeFromName(e.code, &code) || code == absl::StatusCode::kOk) e.code = "INTERNAL";
    f.String("message", &e.message);
    f.Bool("user_error", &e.user_error);
    return e;
  }
  return WorkerUnknown{type};
}

// Sets the payload's members in `j`.
struct PayloadWriter {
  json& j;
  void operator()(const WorkerHeartbeat& h) const {
    if (h.pid) j["pid"] = *h.pid;
  }
  void operator()(const WorkerStart& s) const { j["message"] = s.message; }
  void operator()(const WorkerStep& s) const {
    if (s.epoch) j["epoch"] = *s.epoch;
    if (s.loss) j["loss"] = *s.loss;
    if (s.lr) j["lr"] = *s.lr;
    if (s.grad_norm) j["grad_norm"] = *s.grad_norm;
    if (s.tokens_per_s) j["tokens_per_s"] = *s.tokens_per_s;
    if (s.eta_s) j["eta_s"] = *s.eta_s;
    if (s.trained_tokens) j["trained_tokens"] = *s.trained_tokens;
    if (s.peak_memory_bytes) j["peak_memory_bytes"] = *s.peak_memory_bytes;
  }
  void operator()(const WorkerEval& e) const {
    if (e.eval_loss) j["eval_loss"] = *e.eval_loss;
    if (e.eval_token_accuracy) j["eval_token_accuracy"] = *e.eval_token_accuracy;
    if (e.heldout_accuracy) j["heldout_accuracy"] = *e.heldout_accuracy;
  }
  void operator()(const WorkerCheckpoint& c) const { j["message"] = c.path; }
  void operator()(const WorkerLog& l) const { j["message"] = l.message; }
  void operator()(const WorkerDone& d) const {
    if (d.eval_loss) j["eval_loss"] = *d.eval_loss;
    if (d.heldout_accuracy) j["heldout_accuracy"] = *d.heldout_accuracy;
    j["adapter"] = d.adapter;
  }
  void operator()(const WorkerError& e) const {
    j["code"] = e.code;
    j["message"] = e.message;
    j["user_error"] = e.user_error;
  }
  void operator()(const WorkerUnknown&) const {}
};

struct TypeNamer {
  std::string operator()(const WorkerHeartbeat&) const { return kHeartbeat; }
  std::string operator()(const WorkerStart&) const { return kStart; }
  std::string operator()(const WorkerStep&) const { return kStep; }
  std::string operator()(const WorkerEval&) const { return kEval; }
  std::string operator()(const WorkerCheckpoint&) const { return kCheckpoint; }
  std::string operator()(const WorkerLog&) const { return kLog; }
  std::string operator()(const WorkerDone&) const { return kDone; }
  std::string operator()(const WorkerError&) const { return kError; }
  std::string operator()(const WorkerUnknown& u) const { return u.type; }
};

}  // namespace

bool IsUserErrorCode(absl::StatusCode code) {
  switch (code) {
    case absl::StatusCode::kInvalidArgument:
    case absl::StatusCode::kNotFound:
    case absl::StatusCode::kFailedPrecondition:
    case absl::StatusCode::kOutOfRange:
      return true;
    default:
      return false;
  }
}

int WorkerExitCodeFor(const absl::Status& status) {
  if (status.ok()) return kWorkerExitOk;
  return IsUserErrorCode(status.code()) ? kWorkerExitUserError : kWorkerExitSystemError;
}

std::string WorkerMessageTypeName(const WorkerMessage& message) {
  return std::visit(TypeNamer{}, message.payload);
}

json WorkerMessageToJson(const WorkerMessage& message) {
  json j = message.extra.is_object() ? message.extra : json::object();
  j["type"] = WorkerMessageTypeName(message);
  if (message.step) j["step"] = *message.step;
  if (message.total_steps) j["total_steps"] = *message.total_steps;
  std::visit(PayloadWriter{j}, message.payload);
  return j;
}

std::string EncodeWorkerMessage(const WorkerMessage& message) {
  const json j = WorkerMessageToJson(message);
  if (!IsHeartbeat(message)) return DumpJson(j);
  // {"type":"heartbeat","pid":N, then the rest in key order.
  std::string out = "{\"type\":\"heartbeat\"";
  if (auto pid = j.find("pid"); pid != j.end()) absl::StrAppend(&out, ",\"pid\":", DumpJson(*pid));
  for (const auto& [key, value] : j.items()) {
    if (key == "type" || key == "pid") continue;
    absl::StrAppend(&out, ",", DumpJson(json(key)), ":", DumpJson(value));
  }
  out += "}";
  return out;
}

absl::StatusOr<WorkerMessage> DecodeWorkerMessage(absl::string_view text, size_t max_bytes) {
  if (text.size() > max_bytes) {
    return absl::ResourceExhaustedError(
        absl::StrCat("worker message: ", text.size(), " bytes, limit ", max_bytes));
  }
  if (JsonNestingDepth(text) > kMaxWorkerJsonDepth) {
    return absl::InvalidArgumentError(
        absl::StrCat("worker message: nests deeper than ", kMaxWorkerJsonDepth, " levels"));
  }
  const json j = json::parse(text.begin(), text.end(), nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) {
    // Again with exceptions, for the position and the reason.
    std::string why = "not valid JSON";
    try {
      const json again = json::parse(text.begin(), text.end());
      (void)again;
    } catch (const json::exception& e) {
      why = e.what();
    }
    return absl::InvalidArgumentError(absl::StrCat("worker message: not valid JSON: ", why));
  }
  if (!j.is_object()) {
    return absl::InvalidArgumentError(
        absl::StrCat("worker message: must be a JSON object, got ", j.type_name()));
  }
  auto type = j.find("type");
  if (type == j.end()) return absl::InvalidArgumentError("worker message: no \"type\"");
  if (!type->is_string()) {
    return absl::InvalidArgumentError(
        absl::StrCat("worker message: \"type\" must be a string, got ", type->type_name()));
  }
  const std::string& name = type->get_ref<const std::string&>();
  if (name.empty()) return absl::InvalidArgumentError("worker message: \"type\" is empty");

  WorkerMessage m;
  Fields f(j);
  f.Int("step", &m.step);
  f.Int("total_steps", &m.total_steps);
  m.payload = ReadPayload(name, f);
  m.extra = f.Rest();
  return m;
}

std::string WorkerEventText(const WorkerMessage& message) {
  const json j = WorkerMessageToJson(message);
  auto it = j.find("message");
  return it != j.end() && it->is_string() ? it->get<std::string>() : std::string();
}

}  // namespace fjord::protocol

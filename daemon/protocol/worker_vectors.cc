#include "daemon/protocol/worker_vectors.h"

#include <utility>

namespace fjord::protocol {

using nlohmann::json;

json DescribeWorkerMessage(const WorkerMessage& message) {
  WorkerMessage members = message;
  members.extra = json::object();
  json d = WorkerMessageToJson(members);
  d["extra"] = message.extra;
  if (std::holds_alternative<WorkerUnknown>(message.payload)) d["unknown_type"] = true;
  return d;
}

namespace {

constexpr char kJobDir[] = "/mnt/fjord/acme/jobs/job-3f9a1c0d2b4e6f81";

// What fjord-train sends: encoding `m` gives the bytes.
WorkerTestVector Sent(std::string name, const WorkerMessage& m, std::string note) {
  return {
      std::move(name), EncodeWorkerMessage(m),
      json{{"kind", "message"}, {"note", std::move(note)}, {"decoded", DescribeWorkerMessage(m)}}};
}

// Bytes another writer may send: they decode to `decoded`, and encoding that
// gives `encoded` (not the same bytes).
WorkerTestVector Tolerated(std::string name, std::string bytes, std::string note) {
  absl::StatusOr<WorkerMessage> m = DecodeWorkerMessage(bytes);
  json manifest{{"kind", "tolerated"}, {"note", std::move(note)}};
  // A vector that does not decode fails worker_protocol_test (the manifest
  // says so instead of "decoded").
  if (m.ok()) {
    manifest["decoded"] = DescribeWorkerMessage(*m);
    manifest["encoded"] = EncodeWorkerMessage(*m);
  } else {
    manifest["decode_failed"] = std::string(m.status().message());
  }
  return {std::move(name), std::move(bytes), std::move(manifest)};
}

WorkerTestVector Invalid(std::string name, std::string bytes, std::string code,
                         std::string contains, size_t max_bytes = 0) {
  json manifest{{"kind", "invalid"},
                {"error", {{"code", std::move(code)}, {"message_contains", std::move(contains)}}}};
  if (max_bytes > 0) manifest["max_bytes"] = max_bytes;
  return {std::move(name), std::move(bytes), std::move(manifest)};
}

WorkerMessage Progress(WorkerPayload payload, int64_t step, int64_t total_steps) {
  WorkerMessage m;
  m.payload = std::move(payload);
  m.step = step;
  m.total_steps = total_steps;
  return m;
}

}  // namespace

std::vector<WorkerTestVector> BuildWorkerTestVectors() {
  std::vector<WorkerTestVector> v;

  // What fjord-train sends (byte for byte as before the codec).
  {
    WorkerMessage m;
    m.payload = WorkerHeartbeat{4242};
    v.push_back(Sent("heartbeat", m, "every 2 s from a thread of its own; \"type\" comes first"));
  }
  v.push_back(Sent("start", Progress(WorkerStart{"started"}, 0, 100), "a fresh start"));
  v.push_back(Sent("start_resumed", Progress(WorkerStart{"resumed from step 40"}, 40, 100),
                   "after a restart: from the newest checkpoint"));
  {
    WorkerStep s;
    s.epoch = 0;
    s.loss = 1.8342;
    s.lr = 0.0002;
    s.grad_norm = 0.731;
    s.tokens_per_s = 5231.7;
    s.eta_s = 95.4;
    s.trained_tokens = 40960;
    s.peak_memory_bytes = int64_t{2147483648};
    v.push_back(Sent("step", Progress(s, 10, 100), "one optimizer step, every field"));
  }
  {
    WorkerEval e;
    e.eval_loss = 1.2034;
    e.eval_token_accuracy = 0.6125;
    v.push_back(Sent("eval", Progress(e, 50, 100), "a pass over the validation data"));
  }
  {
    WorkerEval e;
    e.eval_loss = 3.2066;
    e.eval_token_accuracy = 0.537;
    e.heldout_accuracy = 0.05;
    v.push_back(
        Sent("eval_heldout", Progress(e, 0, 175),
             "the evaluation before training, with the base model's held-out answer accuracy"));
    WorkerEval only;
    only.heldout_accuracy = 0.0;
    v.push_back(Sent("eval_heldout_only", Progress(only, 0, 175),
                     "the same for a job with held-out prompts and no validation data"));
  }
  v.push_back(
      Sent("checkpoint",
           Progress(WorkerCheckpoint{std::string(kJobDir) + "/checkpoints/step-00000050"}, 50, 100),
           "the path travels as \"message\""));
  v.push_back(
      Sent("log",
           Progress(WorkerLog{"skipped checkpoint step-00000060: trainer_state.json is missing"},
                    60, 100),
           "a line for people"));
  {
    WorkerDone d;
    d.eval_loss = 0.9871;
    d.heldout_accuracy = -1.0;
    d.adapter = std::string(kJobDir) + "/adapter";
    v.push_back(Sent("done", Progress(d, 100, 100), "heldout_accuracy -1: not measured"));
  }
  {
    WorkerMessage m;
    m.payload = WorkerError{"INVALID_ARGUMENT",
                            "train.jsonl line 3 (messages[1].role): unknown role 'robot'", true};
    v.push_back(Sent("error_user", m, "before exit 2; no step"));
    m.payload = WorkerError{"RESOURCE_EXHAUSTED", "CUDA out of memory", false};
    v.push_back(Sent("error_system", m, "before exit 3"));
  }

  // What other writers send, and what the decoder makes of it.
  v.push_back(Tolerated("heartbeat_without_pid", "{\"type\":\"heartbeat\"}",
                        "fake_worker's supervisor-test mode"));
  v.push_back(Tolerated("heartbeat_sorted", "{\"pid\":4242,\"type\":\"heartbeat\"}",
                        "keys in another order; whitespace too is any JSON's"));
  v.push_back(Tolerated("step_minimal", "{\"type\":\"step\",\"step\":3,\"total_steps\":3}",
                        "numbers not sent stay unset"));
  v.push_back(
      Tolerated("step_null_loss",
                "{\"loss\":null,\"lr\":0.0002,\"step\":7,\"total_steps\":10,\"type\":\"step\"}",
                "a NaN loss, as JSON writers spell it: unset, kept in extra"));
  v.push_back(Tolerated("step_float_counts",
                        "{\"type\":\"step\",\"step\":5.0,\"trained_tokens\":1.5e3}",
                        "a count sent as a float is truncated, as fjordd always did"));
  v.push_back(
      Tolerated("step_new_field",
                "{\"loss\":1.5,\"mfu\":0.41,\"step\":2,\"total_steps\":4,\"type\":\"step\"}",
                "a field a newer worker adds: kept in extra"));
  v.push_back(Tolerated("error_code_outside_table",
                        "{\"code\":\"DATA_LOSS\",\"message\":\"checkpoint step-00000040 is torn\","
                        "\"type\":\"error\",\"user_error\":false}",
                        "what fjord-train sends for DataLoss: INTERNAL on the daemon's side"));
  v.push_back(
      Tolerated("error_wrong_types",
                "{\"type\":\"error\",\"code\":13,\"message\":\"x\",\"user_error\":\"yes\"}",
                "a code that is not a string is INTERNAL; user_error that is not a bool is false"));
  v.push_back(Tolerated("unknown_type",
                        "{\"type\":\"gradient_histogram\",\"step\":4,\"bins\":[1,2,3]}",
                        "a type this codec does not know: WorkerUnknown, its fields in extra"));

  // What the decoder refuses.
  v.push_back(Invalid("invalid_json", "{\"type\":\"step\",", "INVALID_ARGUMENT", "not valid JSON"));
  v.push_back(Invalid("invalid_utf8", "{\"type\":\"log\",\"message\":\"\xc3\x28\"}",
                      "INVALID_ARGUMENT", "not valid JSON"));
  v.push_back(Invalid("invalid_array", "[{\"type\":\"step\"}]", "INVALID_ARGUMENT",
                      "must be a JSON object, got array"));
  v.push_back(Invalid("invalid_no_type", "{\"step\":1}", "INVALID_ARGUMENT", "no \"type\""));
  v.push_back(Invalid("invalid_type_not_string", "{\"type\":7}", "INVALID_ARGUMENT",
                      "\"type\" must be a string, got number"));
  v.push_back(
      Invalid("invalid_empty_type", "{\"type\":\"\"}", "INVALID_ARGUMENT", "\"type\" is empty"));
  v.push_back(
      Invalid("invalid_deep",
              "{\"type\":\"log\",\"x\":" + std::string(40, '[') + std::string(40, ']') + "}",
              "INVALID_ARGUMENT", "nests deeper than 32 levels"));
  v.push_back(Invalid("invalid_oversize",
                      "{\"type\":\"log\",\"message\":\"" + std::string(100, 'a') + "\"}",
                      "RESOURCE_EXHAUSTED", "limit 64", /*max_bytes=*/64));
  return v;
}

}  // namespace fjord::protocol

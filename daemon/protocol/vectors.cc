#include "daemon/protocol/vectors.h"

#include "absl/strings/escaping.h"
#include "daemon/protocol/errors.h"
#include "daemon/protocol/messages.h"

namespace fjord::protocol {

using nlohmann::json;

const char* MessageTypeName(MessageType type) {
  switch (type) {
    case MessageType::kRequest:
      return "REQUEST";
    case MessageType::kPartial:
      return "PARTIAL";
    case MessageType::kFinal:
      return "FINAL";
    case MessageType::kHeartbeat:
      return "HEARTBEAT";
    case MessageType::kDisconnect:
      return "DISCONNECT";
    case MessageType::kCancel:
      return "CANCEL";
  }
  return "?";
}

json DescribeClientMessage(const ClientMessage& m) {
  json d{{"type", MessageTypeName(m.type)}};
  if (m.type == MessageType::kRequest || m.type == MessageType::kCancel)
    d["request_id"] = m.request_id;
  if (m.type == MessageType::kRequest) {
    d["command"] = m.command;
    d["body"] = m.body;
    d["data_hex"] = m.data ? json(absl::BytesToHexString(*m.data)) : json(nullptr);
  }
  return d;
}

json DescribeServerMessage(const ServerMessage& m) {
  json d{{"type", MessageTypeName(m.type)}};
  if (m.type == MessageType::kPartial || m.type == MessageType::kFinal) {
    d["request_id"] = m.request_id;
    d["status"] = m.status;
    d["body"] = m.body;
    d["data_hex"] = m.data ? json(absl::BytesToHexString(*m.data)) : json(nullptr);
  }
  return d;
}

namespace {

TestVector Request(std::string name, const ClientMessage& m, std::string note) {
  return {std::move(name), EncodeClientMessage(m),
          json{{"kind", "request"},
               {"direction", "to_daemon"},
               {"note", note},
               {"decoded", DescribeClientMessage(m)}}};
}

TestVector Reply(std::string name, const ServerMessage& m, std::string note) {
  return {std::move(name), EncodeServerMessage(m),
          json{{"kind", "reply"},
               {"direction", "to_client"},
               {"note", note},
               {"decoded", DescribeServerMessage(m)}}};
}

TestVector Invalid(std::string name, bool to_daemon, Frames frames, std::string code,
                   std::string param, std::string contains, json limits = nullptr) {
  json m{{"kind", to_daemon ? "invalid_request" : "invalid_reply"},
         {"direction", to_daemon ? "to_daemon" : "to_client"},
         {"error",
          {{"code", code},
           {"param", param.empty() ? json(nullptr) : json(param)},
           {"message_contains", contains}}}};
  if (!limits.is_null()) m["limits"] = limits;
  return {std::move(name), std::move(frames), m};
}

ClientMessage Req(std::string id, std::string command, json body) {
  ClientMessage m;
  m.request_id = std::move(id);
  m.command = std::move(command);
  m.body = std::move(body);
  return m;
}

}  // namespace

std::vector<TestVector> BuildTestVectors() {
  std::vector<TestVector> v;
  const std::string sig = kSignature;
  const std::string req(1, '\x01');

  v.push_back(Request("request_ping", Req("r-1", kPing, json::object()), "the smallest request"));
  JobSpec spec;
  spec.model = "tiny-llama";
  spec.training_file = "file-0123456789abcdef";
  spec.validation_file = "files/valid.jsonl";
  spec.heldout_file = "files/heldout.jsonl";
  spec.hyperparameters.epochs = 3;
  spec.hyperparameters.learning_rate = 0.001;
  spec.lora.r = 8;
  spec.lora.target_modules = {"q_proj", "v_proj"};
  spec.priority = 1;
  spec.metadata = {{"team", "search"}};
  spec.idempotency_key = "3b1f5c2e-1d2c-4f7a-9a49-6c1a2f0d9e11";
  v.push_back(Request("request_job_create", Req("c7", kJobCreate, JobSpecToJson(spec)),
                      "a job.create with every field"));
  {
    JobSpec nf4;
    nf4.model = "llama-3.1-8b";
    nf4.training_file = "file-0123456789abcdef";
    nf4.quantization = "nf4";
    nf4.idempotency_key = "7d0c2b1e-5f3a-4c8e-b6d1-2e9f0a4c3b57";
    v.push_back(Request("request_job_create_nf4", Req("c9", kJobCreate, JobSpecToJson(nf4)),
                        "a job.create on a 4-bit NF4 base (QLoRA); quantization is sent only "
                        "when it is not none"));
  }
  {
    JobSpec sharded;
    sharded.model = "llama-3.3-70b";
    sharded.training_file = "file-0123456789abcdef";
    sharded.gpus = 8;
    sharded.shard_base = true;
    sharded.idempotency_key = "2e6a9d4c-8b1f-4f0e-a3c5-9d7b1e0f6a28";
    v.push_back(Request("request_job_create_shard_base",
                        Req("ca", kJobCreate, JobSpecToJson(sharded)),
                        "a job.create whose frozen base is sharded across its 8 GPUs; shard_base "
                        "is sent only when true"));
  }
  v.push_back(Request("request_job_get",
                      Req("42", kJobGet, json{{"job_id", "job-3f9a1c0d2b4e6f81"}}),
                      "a short call"));
  v.push_back(Request(
      "request_job_list",
      Req("list/1", kJobList, json{{"status", json::array({"queued", "running"})}, {"limit", 50}}),
      "a status filter"));
  {
    ClientMessage m = Req("up-3", kFileUploadChunk, json{{"upload_id", "upl-00ff"}, {"offset", 4}});
    m.data = std::string("{\"a\":\x00\xff\n", 9);
    v.push_back(
        Request("request_upload_chunk", m, "binary data in frame 6, NUL and 0xff included"));
  }
  v.push_back(
      Request("request_subscribe",
              Req("s1", kJobSubscribe, json{{"job_id", "job-3f9a1c0d2b4e6f81"}, {"after_seq", 0}}),
              "opens a stream"));
  {
    ClientMessage m;
    m.type = MessageType::kHeartbeat;
    v.push_back(Request("heartbeat_from_client", m, "3 frames only"));
    m.type = MessageType::kDisconnect;
    v.push_back(Request("disconnect", m, "the client is leaving"));
    m.type = MessageType::kCancel;
    m.request_id = "s1";
    v.push_back(Request("cancel_stream", m, "ends stream s1"));
  }
  {
    Job job;
    job.id = "job-3f9a1c0d2b4e6f81";
    job.tenant = "acme";
    job.spec = spec;
    job.spec.tenant = "acme";
    job.spec.max_restarts = 3;
    job.status = JobStatus::kQueued;
    job.queue_position = 2;
    job.created_at_ms = 1700000000000;
    job.node = "node-1";
    v.push_back(Reply("reply_job", OkReply("c7", JobToJson(job)), "a FINAL OK with a job object"));
  }
  v.push_back(Reply(
      "reply_error",
      ErrorReply("c8", Error(absl::StatusCode::kInvalidArgument, "unknown model 'gpt-9'", "model")),
      "an error reply with a param"));
  v.push_back(
      Reply("reply_error_no_param",
            ErrorReply("-", InvalidArgument("frame 1: expected protocol signature 'FJD01'")),
            "the reply to a message whose request id is unknown"));
  {
    JobEvent e;
    e.seq = 7;
    e.time_ms = 1700000000500;
    e.type = "step";
    e.data = json{{"step", 10}, {"total_steps", 100}, {"loss", 1.5}};
    v.push_back(Reply("reply_partial_event",
                      OkReply("s1", json{{"event", JobEventToJson(e)}}, MessageType::kPartial),
                      "one event of a stream"));
  }
  {
    ServerMessage m = OkReply("dl-1", json{{"name", "adapter_model.safetensors"},
                                           {"offset", 0},
                                           {"bytes", 4},
                                           {"total_bytes", 4},
                                           {"eof", true}});
    m.data = std::string("\x08\x00\x00\x00", 4);
    v.push_back(Reply("reply_download_chunk", m, "data in frame 6"));
  }
  {
    ServerMessage m;
    m.type = MessageType::kHeartbeat;
    v.push_back(Reply("heartbeat_from_daemon", m, "3 frames only"));
  }

  v.push_back(Invalid("invalid_signature", true, {"", "FJD00", req, "r", "ping", "{}"},
                      "INVALID_ARGUMENT", "frames", "frame 1"));
  v.push_back(Invalid("invalid_no_delimiter", true, {sig, req, "r", "ping", "{}"},
                      "INVALID_ARGUMENT", "frames", "frame 0"));
  v.push_back(Invalid("invalid_type", true, {"", sig, std::string(1, '\x09'), "r", "ping", "{}"},
                      "INVALID_ARGUMENT", "frames", "unknown message type 0x09"));
  v.push_back(Invalid("invalid_reply_type_from_client", true,
                      {"", sig, std::string(1, '\x03'), "r", "OK", "{}"}, "INVALID_ARGUMENT",
                      "frames", "not one a client sends"));
  v.push_back(Invalid("invalid_request_id", true, {"", sig, req, "has space", "ping", "{}"},
                      "INVALID_ARGUMENT", "request_id", "printable ASCII"));
  v.push_back(Invalid("invalid_empty_command", true, {"", sig, req, "r", "", "{}"},
                      "INVALID_ARGUMENT", "command", "command is empty"));
  v.push_back(Invalid("invalid_command_chars", true, {"", sig, req, "r", "Job Create", "{}"},
                      "INVALID_ARGUMENT", "command", "[a-z0-9._]"));
  v.push_back(Invalid("invalid_body_json", true, {"", sig, req, "r", "job.get", "{\"job_id\": "},
                      "INVALID_ARGUMENT", "body", "not valid JSON"));
  v.push_back(Invalid("invalid_body_array", true, {"", sig, req, "r", "job.get", "[1,2]"},
                      "INVALID_ARGUMENT", "body", "must be a JSON object"));
  v.push_back(Invalid("invalid_body_utf8", true,
                      {"", sig, req, "r", "job.get", "{\"job_id\":\"\xc3\x28\"}"},
                      "INVALID_ARGUMENT", "body", "not valid JSON"));
  v.push_back(Invalid("invalid_body_bom", true, {"", sig, req, "r", "ping", "\xEF\xBB\xBF{}"},
                      "INVALID_ARGUMENT", "body", "starts with a UTF-8 byte order mark"));
  v.push_back(Invalid("invalid_body_deep", true,
                      {"", sig, req, "r", "job.get", std::string(100, '[') + std::string(100, ']')},
                      "INVALID_ARGUMENT", "body", "nests deeper"));
  v.push_back(Invalid("invalid_too_few_frames", true, {"", sig, req, "r", "ping"},
                      "INVALID_ARGUMENT", "frames", "expected 6 or 7"));
  v.push_back(Invalid("invalid_extra_frames", true, {"", sig, req, "r", "ping", "{}", "x", "y"},
                      "INVALID_ARGUMENT", "frames", "expected 6 or 7"));
  v.push_back(Invalid("invalid_data_on_ping", true, {"", sig, req, "r", "ping", "{}", "x"},
                      "INVALID_ARGUMENT", "data", "takes no data frame"));
  v.push_back(Invalid("invalid_heartbeat_frames", true, {"", sig, std::string(1, '\x04'), "x"},
                      "INVALID_ARGUMENT", "frames", "HEARTBEAT has 4 frames"));
  v.push_back(Invalid("invalid_oversize", true, {"", sig, req, "r", "ping", std::string(100, ' ')},
                      "RESOURCE_EXHAUSTED", "message", "limit 64",
                      json{{"max_message_bytes", 64}}));
  v.push_back(Invalid("invalid_reply_status", false,
                      {"", sig, std::string(1, '\x03'), "r", "MAYBE", "{}"}, "INVALID_ARGUMENT",
                      "status", "unknown status"));
  return v;
}

}  // namespace fjord::protocol

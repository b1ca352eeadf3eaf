#include "sdk/cpp/cli/context.h"

#include <sys/stat.h>
#include <unistd.h>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "daemon/protocol/errors.h"
#include "runtime/util/status_macros.h"
#include "sdk/cpp/cli/exit_codes.h"
#include "sdk/cpp/cli/render.h"

namespace fjord::cli {

using nlohmann::json;

absl::StatusOr<Client*> Ctx::GetClient() {
  if (client) return client.get();
  ConnectionFlags f;
  f.endpoint = args.Get("endpoint");
  f.server_key = args.Get("server-key");
  f.keys = args.Get("keys");
  f.timeout = args.Get("timeout");
  f.config = args.Get("config");
  FJORD_ASSIGN_OR_RETURN(ConnectionSettings s, ResolveConnection(f, env));
  settings = s;
  FJORD_ASSIGN_OR_RETURN(client, Client::Connect(s.options));
  return client.get();
}

bool Ctx::Tty() const { return ::isatty(::fileno(out)) == 1; }

namespace {

// The wire name of a status code; codes outside the protocol's table (a
// client-side DATA_LOSS) keep their own name.
std::string CodeNameOf(const absl::Status& s) { return absl::StatusCodeToString(s.code()); }

}  // namespace

int Fail(Ctx& c, const absl::Status& s) {
  const std::string code = CodeNameOf(s);
  if (c.json_out) {
    const std::string p = protocol::ParamOf(s);
    c.PrintJson(json{{"error",
                      {{"code", code},
                       {"message", std::string(s.message())},
                       {"param", p.empty() ? json(nullptr) : json(p)}}}});
  }
  std::string msg = absl::StrCat("fjord: ", code, ": ", s.message());
  const std::string param = protocol::ParamOf(s);
  if (!param.empty() && !absl::StrContains(s.message(), param))
    absl::StrAppend(&msg, " (field ", param, ")");
  std::fprintf(c.err, "%s\n", msg.c_str());
  if (c.settings) {
    const auto& src = c.settings->source;
    auto from = [&](const char* key) {
      auto it = src.find(key);
      return it == src.end() ? std::string() : absl::StrCat(" (from ", it->second, ")");
    };
    if (s.code() == absl::StatusCode::kUnavailable ||
        s.code() == absl::StatusCode::kDeadlineExceeded) {
      std::fprintf(c.err, "  endpoint: %s%s\n", c.settings->options.endpoint.c_str(),
                   from("endpoint").c_str());
    } else if (s.code() == absl::StatusCode::kUnauthenticated) {
      std::fprintf(c.err,
                   "  endpoint: %s%s\n  client key: %s%s\n  server key: %s%s\n"
                   "  The operator must add this client's public key to the daemon's keys file "
                   "(see `fjord keys generate`).\n",
                   c.settings->options.endpoint.c_str(), from("endpoint").c_str(),
                   c.settings->options.client_keys.public_key.empty()
                       ? "(none: plain connection)"
                       : c.settings->options.client_keys.public_key.c_str(),
                   from("keys").c_str(),
                   c.settings->options.server_public_key.empty()
                       ? "(none)"
                       : c.settings->options.server_public_key.c_str(),
                   from("server_public_key").c_str());
    }
  }
  return ExitCodeFor(s);
}

// A bad command line: says so and returns kExitUsage.
int UsageFail(Ctx& c, const std::string& message) {
  if (c.json_out)
    c.PrintJson(json{{"error", {{"code", "USAGE"}, {"message", message}, {"param", nullptr}}}});
  std::fprintf(c.err, "fjord %s: %s\n(see fjord %s --help)\n", c.command.c_str(), message.c_str(),
               c.command.c_str());
  return kExitUsage;
}

// Follows a job with progress (or JSON lines); exit 0 when it succeeded, 2 otherwise.
int FollowJob(Ctx& c, Client& client, const std::string& job_id, int64_t after_seq,
              protocol::Job* final_job) {
  Progress progress(c.out, c.Tty());
  absl::StatusOr<protocol::Job> job =
      client.StreamEvents(job_id, after_seq, [&](const protocol::JobEvent& e) {
        if (c.json_out)
          c.PrintJson(json{{"event", protocol::JobEventToJson(e)}});
        else
          progress.OnEvent(e);
        return true;
      });
  if (!job.ok()) return Fail(c, job.status());
  if (c.json_out)
    c.PrintJson(json{{"job", protocol::JobToJson(*job)}});
  else
    progress.Finish(*job);
  if (final_job != nullptr) *final_job = *job;
  return job->status == protocol::JobStatus::kSucceeded ? kExitOk : kExitJobNotSucceeded;
}

bool IsRegularFile(const std::string& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode);
}

}  // namespace fjord::cli

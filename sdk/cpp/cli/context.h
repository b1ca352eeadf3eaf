// What the `fjord` CLI's commands share (private to sdk/cpp/cli): the state
// of one invocation, and how a command reports an error, a bad command line
// and a followed job. cli.cc holds the command table; commands that grew
// their own file (compare.cc) use this.
#ifndef FJORD_SDK_CPP_CLI_CONTEXT_H_
#define FJORD_SDK_CPP_CLI_CONTEXT_H_

#include <cstdint>
#include <cstdio>
#include <memory>
#include <optional>
#include <string>

#include <nlohmann/json.hpp>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "daemon/protocol/errors.h"
#include "daemon/protocol/messages.h"
#include "sdk/cpp/cli/args.h"
#include "sdk/cpp/cli/settings.h"
#include "sdk/cpp/client.h"

namespace fjord::cli {

// The state of one invocation.
struct Ctx {
  ParsedArgs args;
  FILE* out = nullptr;
  FILE* err = nullptr;
  EnvGetter env;
  std::string self_path;
  std::string command;    // "jobs create"
  bool json_out = false;  // --json
  std::optional<ConnectionSettings> settings;
  std::unique_ptr<Client> client;

  // The client, connected on first use with the settings of the flags, the
  // environment and the config file.
  absl::StatusOr<Client*> GetClient();

  void Print(const std::string& text) { std::fputs(text.c_str(), out); }
  void PrintJson(const nlohmann::json& j) {
    std::fprintf(out, "%s\n", protocol::DumpJson(j).c_str());
  }
  bool Tty() const;
};

// Prints an error (with --json also as {"error": {...}} on stdout; with
// where the settings came from for a connection or key problem) and returns
// its exit code (exit_codes.h).
int Fail(Ctx& c, const absl::Status& s);

// A bad command line: says so and returns kExitUsage.
int UsageFail(Ctx& c, const std::string& message);

// Follows a job with progress (or JSON lines); returns kExitOk when it
// succeeded, kExitJobNotSucceeded otherwise (or the error's exit code).
// `final_job`, when given, receives the final job.
int FollowJob(Ctx& c, Client& client, const std::string& job_id, int64_t after_seq,
              protocol::Job* final_job = nullptr);

// True when `path` is a regular file (following links).
bool IsRegularFile(const std::string& path);

}  // namespace fjord::cli

#endif  // FJORD_SDK_CPP_CLI_CONTEXT_H_

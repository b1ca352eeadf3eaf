// The `fjord` command line: customers submit, watch and collect fine-tunes
// from the shell. Built on fjord::Client (sdk/cpp/client.h); no LibTorch.
//
//   fjord [--endpoint URL] [--server-key KEY|FILE] [--keys FILE] [--config FILE]
//         [--timeout S] [--json] COMMAND ...
//
// `fjord --help` lists the commands, `fjord COMMAND --help` their options.
// Every command takes --json (machine-readable output on stdout: the daemon's
// objects, one JSON document per line; errors as {"error": {...}}). Exit codes
// are in exit_codes.h. Connection settings: settings.h.
#ifndef FJORD_SDK_CPP_CLI_CLI_H_
#define FJORD_SDK_CPP_CLI_CLI_H_

#include <cstdio>
#include <string>
#include <vector>

#include "sdk/cpp/cli/settings.h"

namespace fjord::cli {

// Runs one command line (args without the program name), writing to out/err.
// Returns the exit code. `self_path` is the fjord executable's path (for
// quickstart, which finds fjordd and fjord-train next to it).
int Main(const std::vector<std::string>& args, FILE* out, FILE* err, const EnvGetter& env,
         const std::string& self_path = "");

}  // namespace fjord::cli

#endif  // FJORD_SDK_CPP_CLI_CLI_H_

// Command-line parsing for the `fjord` CLI: options declared per command,
// GNU style (--name VALUE, --name=VALUE, -n VALUE, boolean --flag, "--" ends
// options). Pure functions; no global state (no absl flags: the CLI has
// subcommands with different options).
#ifndef FJORD_SDK_CPP_CLI_ARGS_H_
#define FJORD_SDK_CPP_CLI_ARGS_H_

#include <map>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace fjord::cli {

struct OptionSpec {
  std::string name;         // "endpoint" for --endpoint
  char short_name = 0;      // 'f' for -f; 0: none
  bool takes_value = true;  // false: a boolean flag
  bool repeated = false;    // may be given several times (--metadata k=v --metadata ...)
  std::string value_name;   // for help: "URL"
  std::string help;
};

struct ParsedArgs {
  std::vector<std::string> positionals;
  std::map<std::string, std::vector<std::string>> values;  // option -> values ("" for flags)

  bool Has(const std::string& name) const { return values.count(name) > 0; }
  // The last value given, or nullopt.
  std::optional<std::string> Get(const std::string& name) const;
  std::vector<std::string> All(const std::string& name) const;
};

// Parses `args` (no program name, no command words) against `specs`.
// InvalidArgument naming the option for an unknown option, a missing value,
// a value given to a flag, or a non-repeated option given twice.
absl::StatusOr<ParsedArgs> ParseArgs(const std::vector<std::string>& args,
                                     const std::vector<OptionSpec>& specs);

// Help lines for the options: "  -f, --file FILE   what it does".
std::string OptionHelp(const std::vector<OptionSpec>& specs);

// Typed values. InvalidArgument naming the option ("--limit must be an
// integer, got 'x'").
absl::StatusOr<int64_t> ParseIntOption(const std::string& name, const std::string& value);
absl::StatusOr<double> ParseNumberOption(const std::string& name, const std::string& value);

}  // namespace fjord::cli

#endif  // FJORD_SDK_CPP_CLI_ARGS_H_

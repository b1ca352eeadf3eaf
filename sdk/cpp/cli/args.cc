#include "sdk/cpp/cli/args.h"

#include <cerrno>
#include <cmath>
#include <cstdlib>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"

namespace fjord::cli {

std::optional<std::string> ParsedArgs::Get(const std::string& name) const {
  auto it = values.find(name);
  if (it == values.end() || it->second.empty()) return std::nullopt;
  return it->second.back();
}

std::vector<std::string> ParsedArgs::All(const std::string& name) const {
  auto it = values.find(name);
  return it == values.end() ? std::vector<std::string>{} : it->second;
}

absl::StatusOr<ParsedArgs> ParseArgs(const std::vector<std::string>& args,
                                     const std::vector<OptionSpec>& specs) {
  ParsedArgs out;
  auto find_long = [&](const std::string& n) -> const OptionSpec* {
    for (const OptionSpec& s : specs) {
      if (s.name == n) return &s;
    }
    return nullptr;
  };
  auto find_short = [&](char c) -> const OptionSpec* {
    for (const OptionSpec& s : specs) {
      if (s.short_name != 0 && s.short_name == c) return &s;
    }
    return nullptr;
  };
  bool options_done = false;
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& a = args[i];
    if (options_done || a == "-" || a.empty() || a[0] != '-') {
      out.positionals.push_back(a);
      continue;
    }
    if (a == "--") {
      options_done = true;
      continue;
    }
    const OptionSpec* spec = nullptr;
    std::string shown;
    std::optional<std::string> inline_value;
    if (absl::StartsWith(a, "--")) {
      std::string name = a.substr(2);
      const size_t eq = name.find('=');
      if (eq != std::string::npos) {
        inline_value = name.substr(eq + 1);
        name = name.substr(0, eq);
      }
      spec = find_long(name);
      shown = "--" + name;
    } else {
      if (a.size() != 2) {
        return absl::InvalidArgumentError(
            absl::StrCat("unknown option '", a, "' (short options take one letter: -f VALUE)"));
      }
      spec = find_short(a[1]);
      shown = a;
    }
    if (spec == nullptr) return absl::InvalidArgumentError(absl::StrCat("unknown option ", shown));
    std::string value;
    if (spec->takes_value) {
      if (inline_value) {
        value = *inline_value;
      } else {
        if (i + 1 >= args.size()) {
          return absl::InvalidArgumentError(
              absl::StrCat("option ", shown, " needs a value (", shown, " ",
                           spec->value_name.empty() ? "VALUE" : spec->value_name, ")"));
        }
        value = args[++i];
      }
    } else if (inline_value) {
      return absl::InvalidArgumentError(absl::StrCat("option ", shown, " takes no value"));
    }
    std::vector<std::string>& slot = out.values[spec->name];
    if (!slot.empty() && !spec->repeated) {
      return absl::InvalidArgumentError(absl::StrCat("option --", spec->name, " given twice"));
    }
    slot.push_back(value);
  }
  return out;
}

std::string OptionHelp(const std::vector<OptionSpec>& specs) {
  std::string out;
  for (const OptionSpec& s : specs) {
    std::string left = s.short_name
                           ? absl::StrCat("  -", std::string(1, s.short_name), ", --", s.name)
                           : absl::StrCat("      --", s.name);
    if (s.takes_value) absl::StrAppend(&left, " ", s.value_name.empty() ? "VALUE" : s.value_name);
    if (left.size() < 30)
      left.resize(30, ' ');
    else
      left += "  ";
    absl::StrAppend(&out, left, s.help, "\n");
  }
  return out;
}

absl::StatusOr<int64_t> ParseIntOption(const std::string& name, const std::string& value) {
  errno = 0;
  char* end = nullptr;
  const long long v = std::strtoll(value.c_str(), &end, 10);
  if (value.empty() || end == nullptr || *end != '\0' || errno == ERANGE) {
    return absl::InvalidArgumentError(
        absl::StrCat("--", name, " must be an integer, got '", value, "'"));
  }
  return static_cast<int64_t>(v);
}

absl::StatusOr<double> ParseNumberOption(const std::string& name, const std::string& value) {
  errno = 0;
  char* end = nullptr;
  const double v = std::strtod(value.c_str(), &end);
  if (value.empty() || end == nullptr || *end != '\0' || errno == ERANGE || !std::isfinite(v)) {
    return absl::InvalidArgumentError(
        absl::StrCat("--", name, " must be a number, got '", value, "'"));
  }
  return v;
}

}  // namespace fjord::cli

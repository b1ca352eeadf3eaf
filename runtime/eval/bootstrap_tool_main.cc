// bootstrap_tool: runs the bootstrap of stats.h on data read from stdin, a
// test seam for reimplementations (tests/interop/test_bootstrap_reference.py).
//
//   echo '{"a": [1, 0, 1], "b": [0, 0, 1], "iterations": 2000,
//          "confidence": 0.95, "seed": 7, "higher_is_better": true}' |
//     bazel-bin/runtime/eval/bootstrap_tool
//
// Input: one JSON object. "a" (required): numbers. "b" (optional): numbers,
// as many as "a"; when present the paired bootstrap of a - b
// (PairedBootstrap), else the bootstrap of a's mean (MeanBootstrap).
// "iterations", "confidence", "seed" (an unsigned 64-bit integer),
// "higher_is_better": optional, BootstrapOptions' defaults when absent.
// Output: one JSON object on stdout, {"n", "mean", "low", "high"} and, for a
// pair, "verdict" ("better", "worse", "tie"); reals printed with 17
// significant digits (they read back as the same doubles).
// Exit 0 on success; 1 with the error on stderr.
#include <cstdio>
#include <iostream>
#include <sstream>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "nlohmann/json.hpp"
#include "runtime/eval/stats.h"

namespace {

using ::fjord::eval::BootstrapOptions;

absl::Status ReadNumbers(const nlohmann::json& in, const char* field, std::vector<double>* out) {
  const nlohmann::json& v = in.at(field);
  if (!v.is_array())
    return absl::InvalidArgumentError(absl::StrCat("\"", field, "\": not an array"));
  for (size_t i = 0; i < v.size(); ++i) {
    if (!v[i].is_number()) {
      return absl::InvalidArgumentError(absl::StrCat("\"", field, "\"[", i, "]: not a number"));
    }
    out->push_back(v[i].get<double>());
  }
  return absl::OkStatus();
}

absl::Status ReadOptions(const nlohmann::json& in, BootstrapOptions* options) {
  if (in.contains("iterations")) {
    if (!in["iterations"].is_number_integer()) {
      return absl::InvalidArgumentError("\"iterations\": not an integer");
    }
    options->iterations = in["iterations"].get<int>();
  }
  if (in.contains("confidence")) {
    if (!in["confidence"].is_number()) {
      return absl::InvalidArgumentError("\"confidence\": not a number");
    }
    options->confidence = in["confidence"].get<double>();
  }
  if (in.contains("seed")) {
    if (!in["seed"].is_number_unsigned()) {
      return absl::InvalidArgumentError("\"seed\": not an unsigned 64-bit integer");
    }
    options->seed = in["seed"].get<uint64_t>();
  }
  if (in.contains("higher_is_better")) {
    if (!in["higher_is_better"].is_boolean()) {
      return absl::InvalidArgumentError("\"higher_is_better\": not a boolean");
    }
    options->higher_is_better = in["higher_is_better"].get<bool>();
  }
  return absl::OkStatus();
}

std::string Real(double v) { return absl::StrFormat("%.17g", v); }

int Fail(const absl::Status& s) {
  std::cerr << "bootstrap_tool: " << s.message() << "\n";
  return 1;
}

}  // namespace

int main() {
  std::ostringstream text;
  text << std::cin.rdbuf();
  nlohmann::json in = nlohmann::json::parse(text.str(), nullptr, /*allow_exceptions=*/false);
  if (in.is_discarded() || !in.is_object()) {
    return Fail(absl::InvalidArgumentError("stdin: not one JSON object"));
  }
  if (!in.contains("a")) return Fail(absl::InvalidArgumentError("\"a\": missing"));
  std::vector<double> a, b;
  if (absl::Status s = ReadNumbers(in, "a", &a); !s.ok()) return Fail(s);
  BootstrapOptions options;
  if (absl::Status s = ReadOptions(in, &options); !s.ok()) return Fail(s);
  std::string out;
  if (in.contains("b")) {
    if (absl::Status s = ReadNumbers(in, "b", &b); !s.ok()) return Fail(s);
    absl::StatusOr<fjord::eval::PairedDifference> d = fjord::eval::PairedBootstrap(a, b, options);
    if (!d.ok()) return Fail(d.status());
    out = absl::StrCat("{\"n\": ", d->n, ", \"mean\": ", Real(d->mean), ", \"low\": ", Real(d->low),
                       ", \"high\": ", Real(d->high), ", \"verdict\": \"",
                       fjord::eval::VerdictName(d->verdict), "\"}");
  } else {
    absl::StatusOr<fjord::eval::MeanInterval> m = fjord::eval::MeanBootstrap(a, options);
    if (!m.ok()) return Fail(m.status());
    out = absl::StrCat("{\"n\": ", m->n, ", \"mean\": ", Real(m->mean), ", \"low\": ", Real(m->low),
                       ", \"high\": ", Real(m->high), "}");
  }
  std::printf("%s\n", out.c_str());
  return 0;
}

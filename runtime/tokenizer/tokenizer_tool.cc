// tokenizer_tool: fjord's tokenizer from the command line.
//
//   tokenizer_tool info TOKENIZER_JSON
//   tokenizer_tool encode TOKENIZER_JSON TEXTS.jsonl [--add-special-tokens]
//       [--split-special-tokens]
//   tokenizer_tool decode TOKENIZER_JSON IDS.jsonl [--skip-special-tokens]
//   tokenizer_tool bench TOKENIZER_JSON TEXTS.jsonl [--repeat N]
//       [--add-special-tokens]
//
// TEXTS.jsonl has one text per line: a JSON string, or {"hex": "..."} for
// bytes that need not be UTF-8. IDS.jsonl has one JSON array of ids per line.
// encode writes one JSON array of ids per input line to stdout, decode one
// JSON string per line; info writes {"vocab_size", "bos_id", "special_ids"};
// bench encodes every text --repeat times (default 3) on one thread after a
// warm-up pass and writes {"bytes", "tokens", "seconds", "mb_per_s",
// "tokens_per_s", "load_seconds"} for the timed passes.
// Exit status 0; 1 on bad arguments or input, with {"error": {"code",
// "message"}} on stdout and the message on stderr.
#include <chrono>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"
#include "runtime/tokenizer/tokenizer.h"
#include "runtime/util/status_macros.h"

namespace fjord::tokenizer {
namespace {

using Json = nlohmann::json;

constexpr char kUsage[] =
    "usage: tokenizer_tool info TOKENIZER_JSON\n"
    "       tokenizer_tool encode TOKENIZER_JSON TEXTS.jsonl [--add-special-tokens] "
    "[--split-special-tokens]\n"
    "       tokenizer_tool decode TOKENIZER_JSON IDS.jsonl [--skip-special-tokens]\n"
    "       tokenizer_tool bench TOKENIZER_JSON TEXTS.jsonl [--repeat N] "
    "[--add-special-tokens]\n";

int Fail(const absl::Status& status) {
  Json j;
  j["error"] = {{"code", absl::StatusCodeToString(status.code())},
                {"message", std::string(status.message())}};
  std::cout << j.dump(-1, ' ', false, Json::error_handler_t::replace) << "\n";
  std::cerr << "tokenizer_tool: " << status.message() << "\n";
  return 1;
}

std::string Dump(const Json& j) { return j.dump(-1, ' ', false, Json::error_handler_t::replace); }

int HexDigit(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// The JSON values of a JSONL file, one per non-empty line.
absl::StatusOr<std::vector<Json>> ReadJsonl(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot open ", path));
  std::vector<Json> out;
  std::string line;
  int64_t lineno = 0;
  while (std::getline(in, line)) {
    ++lineno;
    if (line.empty()) continue;
    try {
      out.push_back(Json::parse(line));
    } catch (const Json::exception& e) {
      return absl::InvalidArgumentError(absl::StrCat(path, ":", lineno, ": ", e.what()));
    }
  }
  return out;
}

absl::StatusOr<std::vector<std::string>> ReadTexts(const std::string& path) {
  FJORD_ASSIGN_OR_RETURN(std::vector<Json> values, ReadJsonl(path));
  std::vector<std::string> texts;
  for (size_t i = 0; i < values.size(); ++i) {
    const Json& v = values[i];
    if (v.is_string()) {
      texts.push_back(v.get<std::string>());
      continue;
    }
    if (v.is_object() && v.contains("hex") && v["hex"].is_string()) {
      const std::string hex = v["hex"].get<std::string>();
      std::string bytes;
      for (size_t k = 0; k + 1 < hex.size(); k += 2) {
        const int hi = HexDigit(hex[k]), lo = HexDigit(hex[k + 1]);
        if (hi < 0 || lo < 0) break;
        bytes.push_back(static_cast<char>(hi * 16 + lo));
      }
      if (bytes.size() * 2 != hex.size()) {
        return absl::InvalidArgumentError(absl::StrCat(path, ": item ", i + 1, ": bad hex"));
      }
      texts.push_back(std::move(bytes));
      continue;
    }
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": item ", i + 1, ": expected a string or {\"hex\": ...}"));
  }
  return texts;
}

int Run(int argc, char** argv) {
  if (argc < 3) {
    std::cerr << kUsage;
    return 1;
  }
  const std::string command = argv[1];
  std::vector<std::string> positional;
  bool add_special = false, split_special = false, skip_special = false;
  int repeat = 3;
  for (int i = 2; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "--add-special-tokens") {
      add_special = true;
    } else if (arg == "--split-special-tokens") {
      split_special = true;
    } else if (arg == "--skip-special-tokens") {
      skip_special = true;
    } else if (arg == "--repeat" && i + 1 < argc) {
      if (!absl::SimpleAtoi(argv[++i], &repeat) || repeat < 1) {
        return Fail(absl::InvalidArgumentError("--repeat needs a positive integer"));
      }
    } else if (arg.rfind("--", 0) == 0) {
      std::cerr << kUsage;
      return Fail(absl::InvalidArgumentError(absl::StrCat("unknown flag ", arg)));
    } else {
      positional.push_back(arg);
    }
  }
  const size_t want = command == "info" ? 1 : 2;
  if (positional.size() != want) {
    std::cerr << kUsage;
    return Fail(absl::InvalidArgumentError("wrong number of arguments"));
  }
  const auto load_start = std::chrono::steady_clock::now();
  absl::StatusOr<std::unique_ptr<Tokenizer>> tok = Tokenizer::FromFile(positional[0]);
  if (!tok.ok()) return Fail(tok.status());
  const double load_seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - load_start).count();

  if (command == "info") {
    Json j;
    j["vocab_size"] = (*tok)->vocab_size();
    j["bos_id"] = (*tok)->bos_id() ? Json((*tok)->bos_id().value()) : Json();
    j["special_ids"] = (*tok)->SpecialIds();
    j["load_seconds"] = load_seconds;
    std::cout << Dump(j) << "\n";
    return 0;
  }
  if (command == "encode" || command == "bench") {
    absl::StatusOr<std::vector<std::string>> texts = ReadTexts(positional[1]);
    if (!texts.ok()) return Fail(texts.status());
    EncodeOptions options;
    options.add_special_tokens = add_special;
    options.split_special_tokens = split_special;
    if (command == "encode") {
      std::string out;
      for (const std::string& text : *texts) {
        absl::StrAppend(&out, Dump(Json((*tok)->Encode(text, options))), "\n");
      }
      std::fwrite(out.data(), 1, out.size(), stdout);
      return 0;
    }
    int64_t bytes = 0, tokens = 0;
    for (const std::string& text : *texts) (*tok)->Encode(text, options);  // warm-up
    const auto start = std::chrono::steady_clock::now();
    for (int r = 0; r < repeat; ++r) {
      for (const std::string& text : *texts) {
        bytes += static_cast<int64_t>(text.size());
        tokens += static_cast<int64_t>((*tok)->Encode(text, options).size());
      }
    }
    const double seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    Json j;
    j["bytes"] = bytes;
    j["tokens"] = tokens;
    j["seconds"] = seconds;
    j["mb_per_s"] = static_cast<double>(bytes) / 1e6 / seconds;
    j["tokens_per_s"] = static_cast<double>(tokens) / seconds;
    j["load_seconds"] = load_seconds;
    std::cout << Dump(j) << "\n";
    return 0;
  }
  if (command == "decode") {
    absl::StatusOr<std::vector<Json>> lists = ReadJsonl(positional[1]);
    if (!lists.ok()) return Fail(lists.status());
    std::string out;
    for (size_t i = 0; i < lists->size(); ++i) {
      const Json& v = (*lists)[i];
      std::vector<int32_t> ids;
      bool ok = v.is_array();
      for (size_t k = 0; ok && k < v.size(); ++k) {
        ok = v[k].is_number_integer();
        if (ok) ids.push_back(v[k].get<int32_t>());
      }
      if (!ok) {
        return Fail(absl::InvalidArgumentError(
            absl::StrCat(positional[1], ": item ", i + 1, ": expected an array of ids")));
      }
      absl::StrAppend(&out, Dump(Json((*tok)->Decode(ids, skip_special))), "\n");
    }
    std::fwrite(out.data(), 1, out.size(), stdout);
    return 0;
  }
  std::cerr << kUsage;
  return Fail(absl::InvalidArgumentError(absl::StrCat("unknown command ", command)));
}

}  // namespace
}  // namespace fjord::tokenizer

int main(int argc, char** argv) { return fjord::tokenizer::Run(argc, argv); }

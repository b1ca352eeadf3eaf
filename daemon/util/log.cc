#include "daemon/util/log.h"

#include <cstdio>
#include <mutex>

#include "absl/time/clock.h"
#include "absl/time/time.h"

namespace fjord::daemon {
namespace {

std::mutex g_mu;
FILE* g_out = nullptr;
LogLevel g_level = LogLevel::kInfo;
const char* kNames[] = {"debug", "info", "warning", "error"};

}  // namespace

bool SetLogOutput(const std::string& path) {
  std::lock_guard<std::mutex> l(g_mu);
  if (path.empty()) {
    g_out = nullptr;
    return true;
  }
  FILE* f = std::fopen(path.c_str(), "a");
  if (f == nullptr) return false;
  g_out = f;
  return true;
}

void SetLogLevel(LogLevel level) { g_level = level; }

bool ParseLogLevel(absl::string_view name, LogLevel* level) {
  for (int i = 0; i < 4; ++i) {
    if (name == kNames[i]) {
      *level = static_cast<LogLevel>(i);
      return true;
    }
  }
  return false;
}

void Log(LogLevel level, absl::string_view message, const nlohmann::json& fields) {
  if (level < g_level) return;
  nlohmann::json line = fields.is_object() ? fields : nlohmann::json::object();
  line["ts"] = absl::FormatTime("%Y-%m-%dT%H:%M:%E3SZ", absl::Now(), absl::UTCTimeZone());
  line["level"] = kNames[static_cast<int>(level)];
  line["msg"] = std::string(message);
  const std::string text = line.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  std::lock_guard<std::mutex> l(g_mu);
  FILE* out = g_out ? g_out : stderr;
  std::fprintf(out, "%s\n", text.c_str());
  std::fflush(out);
}

}  // namespace fjord::daemon

// Structured JSON logs, one object per line on stderr (or a file):
//   {"ts":"2024-01-02T03:04:05.678Z","level":"info","msg":"job
//   accepted","job":"job-…","tenant":"acme"}
// Never pass secrets (CURVE secret keys) as fields. Thread-safe.
#ifndef FJORD_DAEMON_UTIL_LOG_H_
#define FJORD_DAEMON_UTIL_LOG_H_

#include <string>

#include <nlohmann/json.hpp>

#include "absl/strings/string_view.h"

namespace fjord::daemon {

enum class LogLevel { kDebug = 0, kInfo = 1, kWarning = 2, kError = 3 };

// Sets the minimum level and the output ("" = stderr). Not thread-safe with
// concurrent Log calls: call at start-up.
bool SetLogOutput(const std::string& path);
void SetLogLevel(LogLevel level);
bool ParseLogLevel(absl::string_view name, LogLevel* level);

void Log(LogLevel level, absl::string_view message,
         const nlohmann::json& fields = nlohmann::json::object());
inline void LogInfo(absl::string_view m, const nlohmann::json& f = nlohmann::json::object()) {
  Log(LogLevel::kInfo, m, f);
}
inline void LogWarning(absl::string_view m, const nlohmann::json& f = nlohmann::json::object()) {
  Log(LogLevel::kWarning, m, f);
}
inline void LogError(absl::string_view m, const nlohmann::json& f = nlohmann::json::object()) {
  Log(LogLevel::kError, m, f);
}

}  // namespace fjord::daemon

#endif  // FJORD_DAEMON_UTIL_LOG_H_

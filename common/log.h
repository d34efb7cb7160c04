// Structured logging: one JSON object per line on stderr, e.g.
//   {"ts":"2026-11-24T22:15:57.123Z","level":"info","msg":"listening","address":"127.0.0.1:50051"}
// Thread-safe: a line is written with one write(2).
#ifndef PULSESYNC_COMMON_LOG_H_
#define PULSESYNC_COMMON_LOG_H_

#include <cstdint>
#include <initializer_list>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"

namespace pulsesync {

enum class LogLevel { kDebug = 0, kInfo = 1, kWarning = 2, kError = 3 };

// One key/value of a log line; the value keeps its JSON type.
struct LogField {
  LogField(absl::string_view k, absl::string_view v);
  LogField(absl::string_view k, const char* v);
  LogField(absl::string_view k, const std::string& v);
  LogField(absl::string_view k, int64_t v);
  LogField(absl::string_view k, int v);
  LogField(absl::string_view k, uint64_t v);
  LogField(absl::string_view k, unsigned v);
  LogField(absl::string_view k, double v);
  LogField(absl::string_view k, bool v);
  LogField(absl::string_view k, const absl::Status& v);

  std::string key;
  std::string json_value;  // already encoded
};

// Lines below this level are dropped. Default kInfo; PULSESYNC_LOG_LEVEL
// (debug|info|warning|error) sets it at start-up.
void SetMinLogLevel(LogLevel level);
bool LogEnabled(LogLevel level);

void Log(LogLevel level, absl::string_view msg,
         std::initializer_list<LogField> fields = {});

inline void LogDebug(absl::string_view msg, std::initializer_list<LogField> f = {}) {
  if (LogEnabled(LogLevel::kDebug)) Log(LogLevel::kDebug, msg, f);
}
inline void LogInfo(absl::string_view msg, std::initializer_list<LogField> f = {}) {
  Log(LogLevel::kInfo, msg, f);
}
inline void LogWarning(absl::string_view msg, std::initializer_list<LogField> f = {}) {
  Log(LogLevel::kWarning, msg, f);
}
inline void LogError(absl::string_view msg, std::initializer_list<LogField> f = {}) {
  Log(LogLevel::kError, msg, f);
}

// While it lives, every line this thread logs carries "request_id": the id of
// the call a worker or gRPC thread is serving. Scopes nest (the inner one
// wins until it ends). Not copyable; create and destroy on one thread.
class LogRequestScope {
 public:
  explicit LogRequestScope(std::string request_id);
  ~LogRequestScope();
  LogRequestScope(const LogRequestScope&) = delete;
  LogRequestScope& operator=(const LogRequestScope&) = delete;

 private:
  std::string request_id_;
  const std::string* previous_;
};

}  // namespace pulsesync

#endif  // PULSESYNC_COMMON_LOG_H_

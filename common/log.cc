#include "common/log.h"

#include <unistd.h>

#include <atomic>
#include <cstdlib>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "common/json.h"

namespace pulsesync {
namespace {

LogLevel LevelFromEnv() {
  const char* env = std::getenv("PULSESYNC_LOG_LEVEL");
  if (env == nullptr) return LogLevel::kInfo;
  absl::string_view v(env);
  if (v == "debug") return LogLevel::kDebug;
  if (v == "warning") return LogLevel::kWarning;
  if (v == "error") return LogLevel::kError;
  return LogLevel::kInfo;
}

thread_local const std::string* current_request_id = nullptr;

std::atomic<int>& MinLevel() {
  static std::atomic<int> level{static_cast<int>(LevelFromEnv())};
  return level;
}

const char* LevelName(LogLevel level) {
  switch (level) {
    case LogLevel::kDebug: return "debug";
    case LogLevel::kInfo: return "info";
    case LogLevel::kWarning: return "warning";
    case LogLevel::kError: return "error";
  }
  return "info";
}

}  // namespace

LogField::LogField(absl::string_view k, absl::string_view v)
    : key(k), json_value(JsonQuote(v)) {}
LogField::LogField(absl::string_view k, const char* v)
    : LogField(k, absl::string_view(v == nullptr ? "" : v)) {}
LogField::LogField(absl::string_view k, const std::string& v)
    : LogField(k, absl::string_view(v)) {}
LogField::LogField(absl::string_view k, int64_t v) : key(k), json_value(absl::StrCat(v)) {}
LogField::LogField(absl::string_view k, int v) : key(k), json_value(absl::StrCat(v)) {}
LogField::LogField(absl::string_view k, uint64_t v) : key(k), json_value(absl::StrCat(v)) {}
LogField::LogField(absl::string_view k, unsigned v) : key(k), json_value(absl::StrCat(v)) {}
LogField::LogField(absl::string_view k, double v) : key(k), json_value(absl::StrCat(v)) {}
LogField::LogField(absl::string_view k, bool v) : key(k), json_value(v ? "true" : "false") {}
LogField::LogField(absl::string_view k, const absl::Status& v)
    : LogField(k, absl::string_view(v.ToString())) {}

LogRequestScope::LogRequestScope(std::string request_id)
    : request_id_(std::move(request_id)), previous_(current_request_id) {
  current_request_id = &request_id_;
}

LogRequestScope::~LogRequestScope() { current_request_id = previous_; }

void SetMinLogLevel(LogLevel level) { MinLevel().store(static_cast<int>(level)); }

bool LogEnabled(LogLevel level) { return static_cast<int>(level) >= MinLevel().load(); }

void Log(LogLevel level, absl::string_view msg, std::initializer_list<LogField> fields) {
  if (!LogEnabled(level)) return;
  std::string line = absl::StrCat(
      "{\"ts\":\"",
      absl::FormatTime("%Y-%m-%dT%H:%M:%E3SZ", absl::Now(), absl::UTCTimeZone()),
      "\",\"level\":\"", LevelName(level), "\",\"msg\":", JsonQuote(msg));
  for (const LogField& f : fields) {
    absl::StrAppend(&line, ",", JsonQuote(f.key), ":", f.json_value);
  }
  if (current_request_id != nullptr) {
    absl::StrAppend(&line, ",\"request_id\":", JsonQuote(*current_request_id));
  }
  line += "}\n";
  // One write keeps concurrent lines whole.
  ssize_t ignored = ::write(STDERR_FILENO, line.data(), line.size());
  (void)ignored;
}

}  // namespace pulsesync

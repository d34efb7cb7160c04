#include "client/cli/token_command.h"

#include <stdio.h>
#include <sys/wait.h>

#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "common/json.h"

namespace pulsesync {

int64_t UnverifiedJwtExpiry(const std::string& token) {
  std::vector<absl::string_view> parts = absl::StrSplit(token, '.');
  if (parts.size() != 3) return 0;
  std::string claims;
  if (!absl::WebSafeBase64Unescape(parts[1], &claims)) return 0;
  absl::StatusOr<JsonValue> json = ParseJson(claims, 16);
  if (!json.ok()) return 0;
  const JsonValue* exp = json->Find("exp");
  if (exp == nullptr) return 0;
  std::optional<int64_t> seconds = exp->AsInt64();
  return seconds.has_value() && *seconds > 0 ? *seconds : 0;
}

TokenCommand::TokenCommand(std::string command, const WallClock* clock,
                           absl::Duration refresh_before)
    : command_(std::move(command)), clock_(clock), refresh_before_(refresh_before) {}

int TokenCommand::runs() const {
  absl::MutexLock lock(&mu_);
  return runs_;
}

absl::StatusOr<std::string> TokenCommand::Get() {
  absl::MutexLock lock(&mu_);
  if (!token_.empty() && clock_->NowMs() < reuse_until_ms_) return token_;
  token_.clear();
  ++runs_;
  FILE* pipe = popen(command_.c_str(), "re");
  if (pipe == nullptr) {
    return absl::UnauthenticatedError(absl::StrCat("token command: cannot run \"", command_, "\""));
  }
  std::string out;
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof(buf), pipe)) > 0 && out.size() < (1 << 20)) out.append(buf, n);
  const int status = pclose(pipe);
  if (status == -1 || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    return absl::UnauthenticatedError(absl::StrCat(
        "token command \"", command_, "\" failed (",
        WIFEXITED(status) ? absl::StrCat("exit status ", WEXITSTATUS(status)) : "killed", ")"));
  }
  std::string token(absl::StripAsciiWhitespace(out));
  if (token.empty()) {
    return absl::UnauthenticatedError(
        absl::StrCat("token command \"", command_, "\" printed no token"));
  }
  const int64_t exp = UnverifiedJwtExpiry(token);
  token_ = token;
  reuse_until_ms_ = exp > 0 ? exp * 1000 - absl::ToInt64Milliseconds(refresh_before_) : 0;
  return token;
}

}  // namespace pulsesync

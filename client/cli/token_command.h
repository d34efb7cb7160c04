// Bearer tokens from a command (`pulsesync --token-command=CMD`): the CLI's
// token provider (GrpcTransportOptions::token_provider) for tokens that
// expire, e.g. `supabase`-style scripts that print a fresh access token.
#ifndef PULSESYNC_CLIENT_CLI_TOKEN_COMMAND_H_
#define PULSESYNC_CLIENT_CLI_TOKEN_COMMAND_H_

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "common/clock.h"

namespace pulsesync {

// Runs `/bin/sh -c command` for a token: its standard output, trimmed of
// surrounding whitespace (its standard error goes to ours). The token is
// reused until `refresh_before` before the `exp` claim it carries (read
// without verification: only the server can verify it), so a long `sync
// --follow` asks again before the server would end its stream; a token
// without a readable `exp` is not reused.
//
// Thread-safe: concurrent callers wait for one run of the command.
class TokenCommand {
 public:
  explicit TokenCommand(std::string command, const WallClock* clock = &WallClock::Real(),
                        absl::Duration refresh_before = absl::Seconds(60));

  // The current token. kUnauthenticated when the command cannot run, exits
  // with a non-zero status, or prints nothing (the message says which).
  absl::StatusOr<std::string> Get();

  // Times the command ran (for tests).
  int runs() const;

 private:
  const std::string command_;
  const WallClock* const clock_;
  const absl::Duration refresh_before_;
  mutable absl::Mutex mu_;
  std::string token_ ABSL_GUARDED_BY(mu_);
  int64_t reuse_until_ms_ ABSL_GUARDED_BY(mu_) = 0;
  int runs_ ABSL_GUARDED_BY(mu_) = 0;
};

// The `exp` claim of a JWT, read without verifying anything; 0 when there
// is none or the token is not a JWT.
int64_t UnverifiedJwtExpiry(const std::string& token);

}  // namespace pulsesync

#endif  // PULSESYNC_CLIENT_CLI_TOKEN_COMMAND_H_

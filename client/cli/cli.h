// The `pulsesync` command-line client, as a library: main.cc only supplies
// the real environment and a GrpcTransport factory, so tests can run every
// command against a fake transport.
//
//   pulsesync [--db=PATH] [--server=HOST:PORT] [--token=JWT] COMMAND [ARGS]
//
// Output formats (stdout), for scripts:
//   init                          the origin id
//   create TYPE f=v ...           the new object's id
//   update TYPE ID f=v ...        nothing
//   delete TYPE ID                nothing
//   get [--deleted] TYPE ID       the row as one JSON object
//   list [--deleted] TYPE         one JSON object per line, by created_at, id
//   sync                          "pushed N (applied A, duplicate D, rejected R),
//                                  pulled P (applied X, skipped Y)"
//   status                        "key: value" lines: origin_id, pending,
//                                 cursor, server
// Errors: one line "error: ..." on stderr, exit 1; usage problems print the
// usage on stderr and exit 2.
#ifndef PULSESYNC_CLIENT_CLI_CLI_H_
#define PULSESYNC_CLIENT_CLI_CLI_H_

#include <functional>
#include <memory>
#include <ostream>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "client/core/transport.h"
#include "client/store/object_types.h"
#include "common/clock.h"
#include "common/json.h"

namespace pulsesync {

inline constexpr char kDefaultDbPath[] = "pulsesync.db";
inline constexpr char kDefaultServerAddress[] = "127.0.0.1:50051";

struct CliEnvironment {
  // Values of PULSESYNC_DB, PULSESYNC_SERVER, PULSESYNC_TOKEN ("" = unset).
  std::string db_env;
  std::string server_env;
  std::string token_env;
  // Makes the transport for `sync`; required for that command only.
  std::function<std::unique_ptr<Transport>(const std::string& address, const std::string& token)>
      make_transport;
  // nullptr = WallClock::Real().
  const WallClock* clock = nullptr;
};

// Runs one command line (`args` excludes argv[0]); returns the exit code.
int RunCli(const std::vector<std::string>& args, const CliEnvironment& env, std::ostream& out,
           std::ostream& err);

// Parses `field=value` / `field:=json` arguments into a JSON object, typing
// `field=value` by the column: integer columns take an integer, boolean
// columns true/false, text columns the text as is; `null` is null for any
// column. `field:=json` takes any JSON value as written.
// kInvalidArgument naming the bad argument.
absl::StatusOr<JsonValue> ParseFieldArgs(const ObjectTypeDef& type,
                                         const std::vector<std::string>& args);

// The `field=value` typing of one value for `column`.
absl::StatusOr<JsonValue> TypeFieldValue(const ColumnDef& column, absl::string_view text);

}  // namespace pulsesync

#endif  // PULSESYNC_CLIENT_CLI_CLI_H_

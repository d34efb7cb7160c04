// The `pulsesync` command-line client, as a library: main.cc only supplies
// the real environment and a GrpcTransport factory, so tests can run every
// command against a fake transport.
//
//   pulsesync [--db=PATH] [--key-file=PATH]... [--server=HOST:PORT]
//             [--token=JWT | --token-command=CMD]
//             [--user=ID] [--tls-ca=PATH [--tls-cert=PATH --tls-key=PATH]]
//             [--tls-server-name=NAME] [--plaintext] COMMAND [ARGS]
//
// TLS: with --tls-ca (or PULSESYNC_TLS_CA) the connection to the server is
// TLS, verified against that CA; --tls-cert/--tls-key (PULSESYNC_TLS_CERT,
// PULSESYNC_TLS_KEY) add a client certificate for servers that require one.
// Without --tls-ca the connection is plaintext, which is allowed to a
// loopback server, and to any other only with --plaintext (or
// PULSESYNC_PLAINTEXT=1); see GrpcTransportOptions::plaintext.
//
// Encryption at rest: with --key-file (repeatable; the first encrypts, all
// decrypt) or else PULSESYNC_DB_KEY, revision payloads are stored
// AES-256-GCM encrypted (client/store/payload_crypto.h); a database with
// encrypted payloads needs the key for sync. `keygen` makes a key file.
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
//                                  [", conflicts C"] when pushes made some
//   conflicts [--all]             one JSON object per open conflict record
//                                 (--all: resolved ones too): id, object_type,
//                                 object_id, kind, field, local_value,
//                                 winning_value, loser_origin_id,
//                                 winner_origin_id, created_at, mine, resolved
//   resolve ID theirs|mine        nothing; closes the conflict (mine: writes
//                                 the losing value again first)
//   status                        "key: value" lines: origin_id, pending,
//                                 cursor, server, and payload_key (the
//                                 current key id) when a key is configured
//   keygen --out=PATH             the new key's id (the key goes to PATH,
//                                 mode 0600; an existing PATH is an error)
//   watch [--table=T]... [--event=insert|update|delete]... [--filter=COL=OP.VAL]...
//         [--from-now | --cursor=C] [--checkpoints]
//                                 follows the feed without a database; one
//                                 JSON object per event, flushed per line:
//     {"event":"UPDATE","table":"tasks","object_type":"task","id":"<uuid>",
//      "version":3,"origin_id":"...","revision_id":"...",
//      "commit_timestamp_ms":1700000000000,"new":{...},"old":{...},
//      "cursor":"..."}
//                                 ("new"/"old" are null when the server sent
//                                 none); with --checkpoints also
//                                 {"checkpoint":"<cursor>"}. Each --table
//                                 is one subscription with the --event and
//                                 --filter options; no --table = all tables.
//   sync --follow [--no-snapshot] runs a Subscriber on the database; lines:
//                                 "connected to HOST:PORT"
//                                 "disconnected: <status>; retrying in <duration>"
//                                 "snapshot: applied A, skipped S, removed R, kept K"
//                                 "applied <EVENT> <type> <id> version <v>"
//                                 ("... (this device)" for echoes of local writes)
// watch and sync --follow run until SIGINT/SIGTERM (exit 0). watch exits 1
// when the stream ends otherwise: "error: feed ended: <status>" plus
// "; resume with --cursor=<c>" when it had a cursor.
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
#include "absl/base/thread_annotations.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "client/core/transport.h"
#include "client/store/object_types.h"
#include "common/clock.h"
#include "common/json.h"

namespace pulsesync {

inline constexpr char kDefaultDbPath[] = "pulsesync.db";
inline constexpr char kDefaultServerAddress[] = "127.0.0.1:50051";

// An interrupt request (SIGINT/SIGTERM in main.cc, a test's call in tests)
// for the commands that run until interrupted (watch, sync --follow).
//
// Thread safety: thread-safe. The handler runs on the thread that calls
// Trigger (or, if Trigger came first, on the thread that sets it).
class InterruptSignal {
 public:
  // Records the interrupt and runs the handler, if any. Returns false when
  // no handler was set: then nobody is listening (main.cc then lets the
  // signal terminate the process as usual).
  bool Trigger();
  bool triggered() const;
  // Sets `handler` (replacing any), running it at once if already triggered.
  // The handler must be quick and must not call back into this object.
  void SetHandler(std::function<void()> handler);
  // Removes the handler, waiting for a call of it in progress.
  void ClearHandler();
  // Blocks until triggered.
  void Wait() const;

 private:
  mutable absl::Mutex mu_;
  bool triggered_ ABSL_GUARDED_BY(mu_) = false;
  std::function<void()> handler_ ABSL_GUARDED_BY(mu_);
};

// How to reach the server.
struct TransportConfig {
  std::string address;  // host:port
  std::string token;    // bearer token; "" = none
  // A command printing a bearer token, run for each call (see TokenCommand);
  // "" = none. Excludes `token`.
  std::string token_command;
  std::string user_id;  // x-pulsesync-user-id; "" = none
  // PEM files; a CA file turns TLS on (see GrpcTransportOptions). "" = none.
  std::string tls_ca_file;
  std::string tls_cert_file;
  std::string tls_key_file;
  std::string tls_server_name;  // "" = the address's host
  // Plaintext to a non-loopback address asked for (--plaintext).
  bool plaintext = false;
};

struct CliEnvironment {
  // Values of PULSESYNC_DB, PULSESYNC_SERVER, PULSESYNC_TOKEN,
  // PULSESYNC_USER_ID ("" = unset).
  std::string db_env;
  std::string server_env;
  std::string token_env;
  std::string user_env;
  // Value of PULSESYNC_TOKEN_COMMAND ("" = unset).
  std::string token_command_env;
  // Values of PULSESYNC_TLS_CA, PULSESYNC_TLS_CERT, PULSESYNC_TLS_KEY,
  // PULSESYNC_TLS_SERVER_NAME ("" = unset).
  std::string tls_ca_env;
  std::string tls_cert_env;
  std::string tls_key_env;
  std::string tls_server_name_env;
  // Value of PULSESYNC_PLAINTEXT ("" = unset; "1", "true", "yes" = on).
  std::string plaintext_env;
  // Value of PULSESYNC_DB_KEY ("" = unset): payload keys, used when no
  // --key-file is given.
  std::string db_key_env;
  // Makes the transport for `sync` and `watch`; required for those only.
  std::function<std::unique_ptr<Transport>(const TransportConfig& config)> make_transport;
  // Ends `watch` and `sync --follow`; required for those only.
  InterruptSignal* interrupt = nullptr;
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

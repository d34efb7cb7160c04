#include "client/cli/cli.h"

#include <set>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "client/core/subscriber.h"
#include "client/core/sync_engine.h"
#include "client/store/local_store.h"
#include "client/store/payload_crypto.h"
#include "common/status_macros.h"

namespace pulsesync {
namespace {

constexpr char kUsage[] =
    R"(usage: pulsesync [--db=PATH] [--key-file=PATH]... [--server=HOST:PORT]
                 [--token=JWT | --token-command=CMD] [--user=ID]
                 [--tls-ca=PATH [--tls-cert=PATH --tls-key=PATH]] [--plaintext] COMMAND [ARGS]

commands:
  init                          create the database (idempotent); print the origin id
  create TYPE FIELD=VALUE...    create an object; print its id
  update TYPE ID FIELD=VALUE... set some fields of an object
  delete TYPE ID                delete an object (tombstone)
  get [--deleted] TYPE ID       print an object as JSON
  list [--deleted] TYPE         print all objects of a type, one JSON per line
  sync                          push pending revisions, then pull changes
  sync --follow [--no-snapshot] keep the database in sync (live feed, pushes)
                                until SIGINT/SIGTERM; print what happens
  status                        print origin id, pending count, cursor, server
                                (and payload_key when payloads are encrypted)
  conflicts [--all]             print open conflict records (--all: resolved
                                too), one JSON per line (docs/CONFLICTS.md)
  resolve ID theirs|mine        close a conflict record; mine writes the
                                losing value again first
  keygen --out=PATH             write a new random payload key to PATH (mode
                                0600, never overwritten); print its key id
  audit [OPTIONS] TYPE ID       print an object's history from the server's
                                audit trail as a timeline, oldest first:
        --newest-first          newest first
        --limit=N               at most N entries
  watch [OPTIONS]               print the server's change feed as JSON lines
                                until SIGINT/SIGTERM (no database needed):
        --table=T               only this table (repeatable)
        --event=E               insert, update or delete (repeatable)
        --filter=COL=OP.VAL     eq, neq, lt, lte, gt, gte, in.(a,b) (repeatable)
        --from-now              only changes committed from now on
        --cursor=C              resume after this cursor
        --checkpoints           also print {"checkpoint":C} lines

TYPE: team, user, team_member, project, task, conflict (or the plural table name).
FIELD=VALUE is typed by the column (integer, true/false, text; null = null);
FIELD:=JSON takes a raw JSON value, e.g. title:='"null"'.

flags (before the command):
  --db=PATH          database file (env PULSESYNC_DB, default pulsesync.db)
  --key-file=PATH    encrypt revision payloads at rest (AES-256-GCM) with the
                     key in PATH (owner-only permissions; from `keygen`).
                     Repeat to rotate: the first encrypts, all decrypt, and
                     opening the database re-encrypts old payloads with the
                     first. Without it: env PULSESYNC_DB_KEY (hex or base64;
                     several keys separated by ',', the first encrypts).
  --server=HOST:PORT server address (env PULSESYNC_SERVER, else the last one
                     used by this database, else 127.0.0.1:50051)
  --token=JWT        bearer token for the server (env PULSESYNC_TOKEN)
  --token-command=CMD
                     get the bearer token from CMD (run with /bin/sh -c; its
                     stdout is the token), asked again for each call once the
                     token is within 60 s of its exp (env PULSESYNC_TOKEN_COMMAND)
  --user=ID          user id sent as x-pulsesync-user-id (env PULSESYNC_USER_ID)
  --tls-ca=PATH      connect with TLS, trusting the CA certificates in PATH (PEM)
                     (env PULSESYNC_TLS_CA); without it the connection is
                     plaintext, which needs --plaintext unless the server is on
                     loopback (127.0.0.1, ::1, localhost)
  --tls-cert=PATH    client certificate (PEM) for servers that require one (mTLS)
  --tls-key=PATH     its private key (PEM) (env PULSESYNC_TLS_CERT, PULSESYNC_TLS_KEY)
  --tls-server-name=NAME
                     name to verify the server certificate against instead of
                     the server's host (env PULSESYNC_TLS_SERVER_NAME)
  --plaintext        talk to a non-loopback server without TLS: tokens and data
                     cross the network unencrypted (env PULSESYNC_PLAINTEXT=1)
)";

// Exit codes.
constexpr int kExitOk = 0;
constexpr int kExitError = 1;
constexpr int kExitUsage = 2;

struct GlobalFlags {
  std::string db;
  std::vector<std::string> key_files;  // the first is current
  std::string server;  // empty = not given by flag or env
  std::string token;
  std::string token_command;
  std::string user_id;
  std::string tls_ca_file;
  std::string tls_cert_file;
  std::string tls_key_file;
  std::string tls_server_name;
  bool plaintext = false;
};

TransportConfig MakeTransportConfig(const GlobalFlags& flags, const std::string& address) {
  TransportConfig config;
  config.address = address;
  config.token = flags.token;
  config.token_command = flags.token_command;
  config.user_id = flags.user_id;
  config.tls_ca_file = flags.tls_ca_file;
  config.tls_cert_file = flags.tls_cert_file;
  config.tls_key_file = flags.tls_key_file;
  config.tls_server_name = flags.tls_server_name;
  config.plaintext = flags.plaintext;
  return config;
}

int Fail(std::ostream& err, const absl::Status& status) {
  err << "error: " << status.message() << "\n";
  return kExitError;
}

int Usage(std::ostream& err, absl::string_view problem) {
  if (!problem.empty()) err << "error: " << problem << "\n";
  err << kUsage;
  return kExitUsage;
}

absl::StatusOr<const ObjectTypeDef*> ResolveType(absl::string_view name) {
  const ObjectTypeDef* def = FindObjectType(name);
  if (def == nullptr) {
    return absl::InvalidArgumentError(
        absl::StrCat("unknown object type \"", name, "\" (known: ", KnownObjectTypeNames(), ")"));
  }
  return def;
}

absl::StatusOr<std::unique_ptr<LocalStore>> OpenStore(const GlobalFlags& flags,
                                                      const CliEnvironment& env, bool create) {
  LocalStoreOptions options;
  options.create_if_missing = create;
  options.clock = env.clock;
  PS_ASSIGN_OR_RETURN(Keyring keyring, LoadKeyring(flags.key_files, env.db_key_env));
  if (!keyring.empty()) options.keyring = std::make_shared<const Keyring>(std::move(keyring));
  absl::StatusOr<std::unique_ptr<LocalStore>> store = LocalStore::Open(flags.db, options);
  if (!create && store.status().code() == absl::StatusCode::kNotFound) {
    return absl::NotFoundError(
        absl::StrCat("database ", flags.db, " does not exist; run `pulsesync init` first"));
  }
  return store;
}

// Splits off a leading --deleted option.
bool TakeDeletedFlag(std::vector<std::string>* args) {
  if (!args->empty() && ((*args)[0] == "--deleted" || (*args)[0] == "--include-deleted")) {
    args->erase(args->begin());
    return true;
  }
  return false;
}

std::string ShortCursor(const std::string& cursor) {
  if (cursor.empty()) return "(start)";
  if (cursor.size() <= 16) return cursor;
  return cursor.substr(0, 16) + "...";
}

bool IsUnreachable(const absl::Status& st) {
  return st.code() == absl::StatusCode::kUnavailable ||
         st.code() == absl::StatusCode::kDeadlineExceeded;
}

int RunSync(const GlobalFlags& flags, const CliEnvironment& env, LocalStore* store,
            std::ostream& out, std::ostream& err) {
  absl::StatusOr<SyncState> state = store->GetSyncState();
  if (!state.ok()) return Fail(err, state.status());
  std::string address = flags.server;
  if (address.empty()) address = state->server_address;
  if (address.empty()) address = kDefaultServerAddress;
  if (!env.make_transport) return Fail(err, absl::InternalError("no transport configured"));
  std::unique_ptr<Transport> transport =
      env.make_transport(MakeTransportConfig(flags, address));
  SyncEngineOptions engine_options;
  // A long catch-up (a client offline for days) says how far it is, at most
  // once a second; a quick sync prints nothing extra.
  absl::Time last_report = absl::Now();
  engine_options.on_progress = [&](const SyncProgress& p) {
    const absl::Time now = absl::Now();
    if (now - last_report < absl::Seconds(1)) return;
    last_report = now;
    if (p.phase == SyncProgress::Phase::kPush) {
      err << "pushing: " << p.done << " of " << p.total << " revision(s) sent\n";
    } else {
      err << "pulling: " << p.done << " change(s) received\n";
    }
  };
  SyncEngine engine(store, transport.get(), engine_options);
  absl::StatusOr<SyncSummary> summary = engine.Sync();
  if (!summary.ok()) {
    const int64_t pending = store->PendingCount().value_or(-1);
    if (IsUnreachable(summary.status())) {
      err << "error: cannot reach server at " << address << ": " << summary.status().message()
          << " (" << pending << " revision(s) still pending)\n";
    } else {
      err << "error: sync with " << address << " failed: " << summary.status() << " (" << pending
          << " revision(s) still pending)\n";
    }
    return kExitError;
  }
  if (address != state->server_address) {
    absl::Status st = store->SetServerAddress(address);
    if (!st.ok()) return Fail(err, st);
  }
  for (const RejectedRevision& r : summary->push.rejections) {
    err << "rejected: " << r.object_type << " " << r.object_id << " (revision " << r.revision_id
        << "): " << r.reason << "\n";
  }
  const PushSummary& p = summary->push;
  const PullSummary& q = summary->pull;
  out << "pushed " << p.pushed << " (applied " << p.applied << ", duplicate " << p.duplicate
      << ", rejected " << p.rejected << "), pulled " << q.pulled << " (applied " << q.applied
      << ", skipped " << q.skipped << ")";
  if (p.conflicts > 0) out << ", conflicts " << p.conflicts;
  if (q.snapshotted) {
    // The server no longer had the log from our cursor (or from the start).
    out << ", snapshot: applied " << q.snapshot.rows.applied << ", removed "
        << q.snapshot.rows.removed;
  }
  out << "\n";
  return kExitOk;
}

const char* EventName(v1::EventType event) {
  switch (event) {
    case v1::EVENT_TYPE_INSERT:
      return "INSERT";
    case v1::EVENT_TYPE_UPDATE:
      return "UPDATE";
    case v1::EVENT_TYPE_DELETE:
      return "DELETE";
    default:
      return "UNSPECIFIED";
  }
}

const char* EventName(ChangeEvent event) {
  switch (event) {
    case ChangeEvent::kInsert:
      return "INSERT";
    case ChangeEvent::kDelete:
      return "DELETE";
    default:
      return "UPDATE";
  }
}

// A record from the wire as JSON: the object itself, null when absent, the
// text as a string if it is not JSON (never invalid output).
JsonValue RecordJson(const std::string& text) {
  if (text.empty()) return JsonValue();
  absl::StatusOr<JsonValue> parsed = ParseJson(text);
  return parsed.ok() ? *std::move(parsed) : JsonValue::String(text);
}

std::string ChangeLine(const v1::Change& c) {
  JsonValue line = JsonValue::Object();
  line.Set("event", JsonValue::String(EventName(c.event())));
  line.Set("table", JsonValue::String(c.table()));
  line.Set("object_type", JsonValue::String(c.object_type()));
  line.Set("id", JsonValue::String(c.object_id()));
  line.Set("version", JsonValue::Number(c.version()));
  line.Set("origin_id", JsonValue::String(c.origin_id()));
  line.Set("revision_id", JsonValue::String(c.revision_id()));
  line.Set("commit_timestamp_ms", JsonValue::Number(c.commit_timestamp_ms()));
  line.Set("new", RecordJson(c.new_record()));
  line.Set("old", RecordJson(c.old_record()));
  line.Set("cursor", JsonValue::String(c.cursor()));
  return line.Serialize();
}

absl::StatusOr<v1::EventType> ParseEvent(absl::string_view text) {
  const std::string lower = absl::AsciiStrToLower(text);
  if (lower == "insert") return v1::EVENT_TYPE_INSERT;
  if (lower == "update") return v1::EVENT_TYPE_UPDATE;
  if (lower == "delete") return v1::EVENT_TYPE_DELETE;
  return absl::InvalidArgumentError(
      absl::StrCat("--event expects insert, update or delete, got \"", text, "\""));
}

// Installs `handler` on an InterruptSignal for a scope; when the scope ends
// the handler is removed and no call of it is in progress.
class ScopedInterruptHandler {
 public:
  ScopedInterruptHandler(InterruptSignal* signal, std::function<void()> handler)
      : signal_(signal) {
    signal_->SetHandler(std::move(handler));
  }
  ~ScopedInterruptHandler() { signal_->ClearHandler(); }

 private:
  InterruptSignal* signal_;
};

std::string ServerAddress(const GlobalFlags& flags, const std::string& stored) {
  if (!flags.server.empty()) return flags.server;
  if (!stored.empty()) return stored;
  return kDefaultServerAddress;
}

const char* AuditOutcomeName(v1::AuditOutcome outcome) {
  switch (outcome) {
    case v1::AUDIT_OUTCOME_APPLIED: return "applied";
    case v1::AUDIT_OUTCOME_MERGED: return "merged";
    case v1::AUDIT_OUTCOME_CONFLICT: return "conflict";
    case v1::AUDIT_OUTCOME_RECOVERED: return "recovered";
    case v1::AUDIT_OUTCOME_SUPERSEDED: return "superseded";
    case v1::AUDIT_OUTCOME_TOMBSTONED: return "tombstoned";
    case v1::AUDIT_OUTCOME_DIRECT: return "direct";
    case v1::AUDIT_OUTCOME_DUPLICATE: return "duplicate";
    case v1::AUDIT_OUTCOME_REJECTED: return "rejected";
    case v1::AUDIT_OUTCOME_OUT_OF_ORDER: return "out_of_order";
    default: return "unknown";
  }
}

// The fields a timeline shows: data, not the engine's bookkeeping.
bool IsBookkeeping(absl::string_view field) {
  static const std::set<std::string, std::less<>> kFields = {
      "version", "updated_at", "hlc", "last_origin_id", "last_revision_id", "live_hlc",
      "deleted_hlc", "field_clocks"};
  return kFields.count(field) > 0;
}

// `field: old -> new` for what an entry changed (every field of an insert).
std::vector<std::string> ChangedFields(const v1::AuditEntry& e) {
  std::vector<std::string> lines;
  const JsonValue now = RecordJson(e.new_record());
  const JsonValue before = RecordJson(e.old_record());
  if (!now.is_object()) return lines;
  for (const auto& [field, value] : now.members()) {
    if (IsBookkeeping(field) || field == "id") continue;
    const JsonValue* old = before.is_object() ? before.Find(field) : nullptr;
    if (old == nullptr) {
      if (e.event() == v1::EVENT_TYPE_INSERT && !value.is_null()) {
        lines.push_back(absl::StrCat(field, ": ", value.Serialize()));
      }
    } else if (*old != value) {
      lines.push_back(absl::StrCat(field, ": ", old->Serialize(), " -> ", value.Serialize()));
    }
  }
  return lines;
}

// One entry of `pulsesync audit`, e.g.
//   2026-05-01 12:00:03.123 UTC  UPDATE v12  merged  by <sub> (authenticated) from device-a #3
//       title: "Draft" -> "Final"
std::string TimelineEntry(const v1::AuditEntry& e) {
  std::string s = absl::FormatTime("%Y-%m-%d %H:%M:%E3S UTC", absl::FromUnixMillis(e.timestamp_ms()),
                                   absl::UTCTimeZone());
  if (e.kind() == v1::AuditEntry::KIND_CHANGE) {
    absl::StrAppend(&s, "  ", EventName(e.event()), " v", e.version());
  } else {
    absl::StrAppend(&s, "  revision (no change)");
  }
  absl::StrAppend(&s, "  ", AuditOutcomeName(e.outcome()));
  if (e.conflicts() > 0) absl::StrAppend(&s, " (", e.conflicts(), " conflict records)");
  absl::StrAppend(&s, "  by ", e.actor().empty() ? "-" : e.actor());
  if (!e.actor_role().empty()) absl::StrAppend(&s, " (", e.actor_role(), ")");
  if (!e.origin_id().empty()) {
    absl::StrAppend(&s, " from ", e.origin_id());
    if (e.seq() > 0) absl::StrAppend(&s, " #", e.seq());
  }
  if (!e.revision_id().empty()) absl::StrAppend(&s, " revision ", e.revision_id());
  if (e.chain_seq() > 0) absl::StrAppend(&s, "  [sealed #", e.chain_seq(), "]");
  if (!e.reason().empty()) absl::StrAppend(&s, "\n    reason: ", e.reason());
  for (const std::string& line : ChangedFields(e)) absl::StrAppend(&s, "\n    ", line);
  if (e.excluded_fields_size() > 0) {
    absl::StrAppend(&s, "\n    excluded from the trail: ", absl::StrJoin(e.excluded_fields(), ", "));
  }
  return s;
}

int RunAudit(const GlobalFlags& flags, const CliEnvironment& env,
             const std::vector<std::string>& args, std::ostream& out, std::ostream& err) {
  v1::GetAuditTrailRequest request;
  request.set_oldest_first(true);
  std::vector<std::string> positional;
  for (const std::string& a : args) {
    if (a == "--newest-first") {
      request.set_oldest_first(false);
    } else if (absl::StartsWith(a, "--limit=")) {
      uint32_t limit;
      if (!absl::SimpleAtoi(a.substr(8), &limit) || limit == 0) {
        return Usage(err, absl::StrCat("--limit expects a positive number, got \"", a.substr(8), "\""));
      }
      request.set_limit(limit);
    } else if (absl::StartsWith(a, "--")) {
      return Usage(err, absl::StrCat("unknown audit option \"", a, "\""));
    } else {
      positional.push_back(a);
    }
  }
  if (positional.size() != 2) return Usage(err, "audit takes a TYPE and an ID");
  absl::StatusOr<const ObjectTypeDef*> def = ResolveType(positional[0]);
  if (!def.ok()) return Fail(err, def.status());
  request.set_object_type((*def)->object_type);
  request.set_object_id(positional[1]);
  if (!env.make_transport) return Fail(err, absl::InternalError("no transport configured"));
  std::unique_ptr<Transport> transport =
      env.make_transport(MakeTransportConfig(flags, ServerAddress(flags, "")));
  absl::StatusOr<std::unique_ptr<AuditStream>> opened = transport->GetAuditTrail(request);
  if (!opened.ok()) return Fail(err, opened.status());
  std::unique_ptr<AuditStream> stream = *std::move(opened);
  v1::GetAuditTrailResponse page;
  int64_t shown = 0;
  bool more = false;
  while (stream->Read(&page)) {
    for (const v1::AuditEntry& e : page.entries()) {
      out << TimelineEntry(e) << "\n";
      ++shown;
    }
    more = page.has_more();
  }
  const absl::Status status = stream->Finish();
  if (!status.ok()) return Fail(err, status);
  if (shown == 0) out << "no audit entries for " << request.object_type() << " " << request.object_id() << " (or not in your teams)\n";
  if (more) out << "(more entries: raise --limit)\n";
  return kExitOk;
}

int RunWatch(const GlobalFlags& flags, const CliEnvironment& env,
             const std::vector<std::string>& args, std::ostream& out, std::ostream& err) {
  if (env.interrupt == nullptr) return Fail(err, absl::InternalError("no interrupt source"));
  // Listen for the interrupt from the start (so a signal during start-up
  // also ends the command cleanly); it cancels the stream once there is one.
  absl::Mutex stream_mu;
  ChangeStream* active = nullptr;  // guarded by stream_mu
  ScopedInterruptHandler on_interrupt(env.interrupt, [&stream_mu, &active] {
    absl::MutexLock lock(&stream_mu);
    if (active != nullptr) active->Cancel();
  });
  std::vector<std::string> tables;
  std::vector<v1::EventType> events;
  std::vector<std::string> filters;
  bool from_now = false;
  bool checkpoints = false;
  std::string cursor;
  bool cursor_given = false;
  for (const std::string& a : args) {
    if (absl::StartsWith(a, "--table=")) {
      tables.push_back(a.substr(8));
    } else if (absl::StartsWith(a, "--event=")) {
      absl::StatusOr<v1::EventType> e = ParseEvent(a.substr(8));
      if (!e.ok()) return Usage(err, e.status().message());
      events.push_back(*e);
    } else if (absl::StartsWith(a, "--filter=")) {
      const std::string f = a.substr(9);
      if (f.find('=') == std::string::npos || f.front() == '=') {
        return Usage(err, absl::StrCat("--filter expects COLUMN=OP.VALUE, got \"", f, "\""));
      }
      filters.push_back(f);
    } else if (a == "--from-now") {
      from_now = true;
    } else if (absl::StartsWith(a, "--cursor=")) {
      cursor = a.substr(9);
      cursor_given = true;
    } else if (a == "--checkpoints") {
      checkpoints = true;
    } else {
      return Usage(err, absl::StrCat("unknown watch option \"", a, "\""));
    }
  }
  if (from_now && cursor_given) return Usage(err, "--from-now and --cursor exclude each other");
  if (!env.make_transport) return Fail(err, absl::InternalError("no transport configured"));

  v1::StreamChangesRequest request;
  request.set_cursor(cursor);
  request.set_from_now(from_now);
  if (!tables.empty() || !events.empty() || !filters.empty()) {
    if (tables.empty()) tables.push_back("");
    for (const std::string& t : tables) {
      v1::Subscription* s = request.add_subscriptions();
      s->set_table(t);
      for (v1::EventType e : events) s->add_events(e);
      for (const std::string& f : filters) s->add_filters(f);
    }
  }

  const std::string address = ServerAddress(flags, "");
  std::unique_ptr<Transport> transport =
      env.make_transport(MakeTransportConfig(flags, address));
  absl::StatusOr<std::unique_ptr<ChangeStream>> opened = transport->StreamChanges(request);
  if (!opened.ok()) return Fail(err, opened.status());
  std::unique_ptr<ChangeStream> stream = *std::move(opened);
  {
    absl::MutexLock lock(&stream_mu);
    active = stream.get();
  }
  if (env.interrupt->triggered()) stream->Cancel();
  {
    v1::StreamChangesResponse message;
    while (stream->Read(&message)) {
      // One line per change (a message may carry several), flushed per
      // message; the cursor to resume from is the last change's.
      for (const v1::Change& change : message.changes()) {
        if (!change.cursor().empty()) cursor = change.cursor();
        out << ChangeLine(change) << '\n';
      }
      if (message.changes_size() > 0) {
        out.flush();
      } else if (!message.checkpoint().empty()) {
        cursor = message.checkpoint();
        if (checkpoints) {
          JsonValue line = JsonValue::Object();
          line.Set("checkpoint", JsonValue::String(message.checkpoint()));
          out << line.Serialize() << std::endl;
        }
      }
    }
  }
  {
    absl::MutexLock lock(&stream_mu);
    active = nullptr;  // no Cancel from the handler after this point
  }
  absl::Status status = stream->Finish();
  stream.reset();
  if (env.interrupt->triggered()) return kExitOk;
  if (status.ok()) status = absl::UnavailableError("the server ended the stream");
  err << "error: feed ended: " << absl::StatusCodeToString(status.code()) << ": "
      << status.message();
  if (!cursor.empty()) err << "; resume with --cursor=" << cursor;
  err << "\n";
  return kExitError;
}

int RunFollow(const GlobalFlags& flags, const CliEnvironment& env, LocalStore* store,
              bool snapshot, std::ostream& out, std::ostream& err) {
  if (env.interrupt == nullptr) return Fail(err, absl::InternalError("no interrupt source"));
  // The main thread waits for the interrupt itself; the handler only marks
  // it as taken (so main.cc does not let the signal kill the process).
  ScopedInterruptHandler on_interrupt(env.interrupt, [] {});
  absl::StatusOr<SyncState> state = store->GetSyncState();
  if (!state.ok()) return Fail(err, state.status());
  const std::string address = ServerAddress(flags, state->server_address);
  if (!env.make_transport) return Fail(err, absl::InternalError("no transport configured"));
  if (address != state->server_address) {
    absl::Status st = store->SetServerAddress(address);
    if (!st.ok()) return Fail(err, st);
  }
  std::unique_ptr<Transport> transport =
      env.make_transport(MakeTransportConfig(flags, address));
  SyncEngine engine(store, transport.get());
  SubscriberOptions options;
  options.initial_sync = snapshot ? InitialSync::kSnapshot : InitialSync::kLogStart;
  // All callbacks run on the subscriber thread, one at a time; the main
  // thread writes nothing while the subscriber runs.
  options.on_connection = [&out, address](const ConnectionEvent& e) {
    if (e.state == ConnectionEvent::State::kConnected) {
      out << "connected to " << address << std::endl;
    } else if (e.status.code() == absl::StatusCode::kCancelled) {
      out << "disconnected: stopped" << std::endl;
    } else {
      out << "disconnected: " << absl::StatusCodeToString(e.status.code()) << ": "
          << e.status.message() << "; retrying in " << absl::FormatDuration(absl::Trunc(e.retry_in, absl::Milliseconds(1))) << std::endl;
    }
  };
  options.on_snapshot = [&out](const SnapshotNotification& n) {
    out << "snapshot: applied " << n.summary.applied << ", skipped " << n.summary.skipped
        << ", removed " << n.summary.removed << ", kept " << n.summary.kept << std::endl;
  };
  options.on_change = [&out](const ChangeNotification& n) {
    out << "applied " << EventName(n.event) << " "
        << (n.object_type.empty() ? n.table : n.object_type) << " " << n.object_id
        << " version " << n.version << (n.from_this_device ? " (this device)" : "") << std::endl;
  };
  Subscriber subscriber(store, transport.get(), &engine, options);
  subscriber.Start();
  env.interrupt->Wait();
  subscriber.Stop();
  return kExitOk;
}

// keygen --out=PATH: a new key, written owner-only; stdout gets its key id
// (the id stored with every payload it encrypts), never the key.
int RunKeygen(const std::vector<std::string>& args, std::ostream& out, std::ostream& err) {
  std::string path;
  for (const std::string& a : args) {
    if (absl::StartsWith(a, "--out=") && path.empty()) {
      path = a.substr(6);
    } else {
      return Usage(err, absl::StrCat("keygen: unexpected argument \"", a, "\""));
    }
  }
  if (path.empty()) return Usage(err, "keygen needs --out=PATH");
  absl::StatusOr<SecretKey> key = SecretKey::Generate();
  if (!key.ok()) return Fail(err, key.status());
  absl::Status st = WriteNewKeyFile(path, *key);
  if (!st.ok()) return Fail(err, st);
  out << DeriveKeyId(*key) << "\n";
  return kExitOk;
}

int RunCommand(const GlobalFlags& flags, const CliEnvironment& env, const std::string& command,
               std::vector<std::string> args, std::ostream& out, std::ostream& err) {
  if (command == "watch") return RunWatch(flags, env, args, out, err);
  if (command == "audit") return RunAudit(flags, env, args, out, err);
  if (command == "keygen") return RunKeygen(args, out, err);
  bool follow = false;
  bool follow_snapshot = true;
  if (command == "sync") {
    for (auto it = args.begin(); it != args.end();) {
      if (*it == "--follow") {
        follow = true;
      } else if (*it == "--no-snapshot") {
        follow_snapshot = false;
      } else {
        ++it;
        continue;
      }
      it = args.erase(it);
    }
    if (!follow_snapshot && !follow) return Usage(err, "--no-snapshot needs --follow");
  }
  if (command == "init") {
    if (!args.empty()) return Usage(err, "init takes no arguments");
    absl::StatusOr<std::unique_ptr<LocalStore>> store = OpenStore(flags, env, true);
    if (!store.ok()) return Fail(err, store.status());
    out << (*store)->origin_id() << "\n";
    return kExitOk;
  }

  bool include_deleted = false;
  size_t min_args = 0;
  bool exact = true;
  if (command == "create") {
    min_args = 1;
    exact = false;
  } else if (command == "update") {
    min_args = 3;
    exact = false;
  } else if (command == "delete") {
    min_args = 2;
  } else if (command == "get") {
    include_deleted = TakeDeletedFlag(&args);
    min_args = 2;
  } else if (command == "list") {
    include_deleted = TakeDeletedFlag(&args);
    min_args = 1;
  } else if (command == "sync" || command == "status") {
    min_args = 0;
  } else if (command == "conflicts") {
    include_deleted = !args.empty() && args[0] == "--all";  // resolved ones too
    if (include_deleted) args.erase(args.begin());
    if (!args.empty()) return Usage(err, "conflicts takes no arguments besides --all");
  } else if (command == "resolve") {
    if (args.size() != 2 || (args[1] != "theirs" && args[1] != "mine")) {
      return Usage(err, "resolve takes a conflict id and \"theirs\" or \"mine\"");
    }
    min_args = 2;
  } else {
    return Usage(err, absl::StrCat("unknown command \"", command, "\""));
  }
  if (args.size() < min_args || (exact && args.size() != min_args)) {
    return Usage(err, absl::StrCat("wrong number of arguments for ", command));
  }

  // Validate the type and fields before touching the database.
  const ObjectTypeDef* type = nullptr;
  JsonValue fields;
  if (min_args > 0 && command != "resolve") {
    absl::StatusOr<const ObjectTypeDef*> t = ResolveType(args[0]);
    if (!t.ok()) return Fail(err, t.status());
    type = *t;
  }
  if (command == "create" || command == "update") {
    const size_t first = command == "create" ? 1 : 2;
    absl::StatusOr<JsonValue> parsed = ParseFieldArgs(
        *type, std::vector<std::string>(args.begin() + static_cast<long>(first), args.end()));
    if (!parsed.ok()) return Fail(err, parsed.status());
    fields = *std::move(parsed);
  }

  absl::StatusOr<std::unique_ptr<LocalStore>> opened = OpenStore(flags, env, false);
  if (!opened.ok()) return Fail(err, opened.status());
  LocalStore* store = opened->get();

  if (command == "create") {
    absl::StatusOr<std::string> id = store->Create(type->object_type, fields);
    if (!id.ok()) return Fail(err, id.status());
    out << *id << "\n";
  } else if (command == "update") {
    absl::Status st = store->Update(type->object_type, args[1], fields);
    if (!st.ok()) return Fail(err, st);
  } else if (command == "delete") {
    absl::Status st = store->Delete(type->object_type, args[1]);
    if (!st.ok()) return Fail(err, st);
  } else if (command == "get") {
    absl::StatusOr<std::optional<JsonValue>> row =
        store->Get(type->object_type, args[1], ReadOptions{include_deleted});
    if (!row.ok()) return Fail(err, row.status());
    if (!row->has_value()) {
      return Fail(err,
                  absl::NotFoundError(absl::StrCat(type->object_type, " ", args[1], " not found")));
    }
    out << (*row)->Serialize() << "\n";
  } else if (command == "list") {
    absl::StatusOr<std::vector<JsonValue>> rows =
        store->List(type->object_type, ReadOptions{include_deleted});
    if (!rows.ok()) return Fail(err, rows.status());
    for (const JsonValue& row : *rows) out << row.Serialize() << "\n";
  } else if (command == "conflicts") {
    absl::StatusOr<std::vector<Conflict>> conflicts = store->ListConflicts(include_deleted);
    if (!conflicts.ok()) return Fail(err, conflicts.status());
    for (const Conflict& c : *conflicts) {
      JsonValue line = JsonValue::Object();
      line.Set("id", JsonValue::String(c.id));
      line.Set("object_type", JsonValue::String(c.object_type));
      line.Set("object_id", JsonValue::String(c.object_id));
      line.Set("kind", JsonValue::String(c.kind));
      line.Set("field", c.field.empty() ? JsonValue() : JsonValue::String(c.field));
      line.Set("local_value", c.local_value);
      line.Set("winning_value", c.winning_value);
      line.Set("loser_origin_id", JsonValue::String(c.loser_origin_id));
      line.Set("winner_origin_id", JsonValue::String(c.winner_origin_id));
      line.Set("created_at", JsonValue::String(c.created_at));
      line.Set("mine", JsonValue::Bool(c.mine));
      line.Set("resolved", JsonValue::Bool(c.resolved));
      if (c.resolved) line.Set("resolution", JsonValue::String(c.resolution));
      out << line.Serialize() << "\n";
    }
  } else if (command == "resolve") {
    absl::Status st = store->ResolveConflict(
        args[0], args[1] == "mine" ? ConflictChoice::kKeepMine : ConflictChoice::kKeepTheirs);
    if (!st.ok()) return Fail(err, st);
  } else if (command == "sync") {
    if (follow) return RunFollow(flags, env, store, follow_snapshot, out, err);
    return RunSync(flags, env, store, out, err);
  } else if (command == "status") {
    absl::StatusOr<SyncState> s = store->GetSyncState();
    if (!s.ok()) return Fail(err, s.status());
    std::string server = flags.server;
    if (server.empty()) server = s->server_address;
    if (server.empty()) server = kDefaultServerAddress;
    out << "origin_id: " << s->origin_id << "\n"
        << "pending: " << s->pending_revisions << "\n"
        << "cursor: " << ShortCursor(s->cursor) << "\n"
        << "server: " << server << "\n";
    if (!store->payload_key_id().empty()) out << "payload_key: " << store->payload_key_id() << "\n";
  }
  return kExitOk;
}

}  // namespace

bool InterruptSignal::Trigger() {
  absl::MutexLock lock(&mu_);
  triggered_ = true;
  if (!handler_) return false;
  handler_();  // under mu_, so that ClearHandler waits for it
  return true;
}

bool InterruptSignal::triggered() const {
  absl::MutexLock lock(&mu_);
  return triggered_;
}

void InterruptSignal::SetHandler(std::function<void()> handler) {
  absl::MutexLock lock(&mu_);
  handler_ = std::move(handler);
  if (triggered_ && handler_) handler_();
}

void InterruptSignal::ClearHandler() {
  absl::MutexLock lock(&mu_);
  handler_ = nullptr;
}

void InterruptSignal::Wait() const {
  absl::MutexLock lock(&mu_);
  mu_.Await(absl::Condition(&triggered_));
}

absl::StatusOr<JsonValue> TypeFieldValue(const ColumnDef& column, absl::string_view text) {
  if (text == "null") return JsonValue();
  switch (column.type) {
    case ColumnType::kInteger: {
      int64_t n = 0;
      if (!absl::SimpleAtoi(text, &n)) {
        return absl::InvalidArgumentError(
            absl::StrCat("field \"", column.name, "\" expects an integer, got \"", text, "\""));
      }
      return JsonValue::Number(n);
    }
    case ColumnType::kBoolean:
      if (text == "true") return JsonValue::Bool(true);
      if (text == "false") return JsonValue::Bool(false);
      return absl::InvalidArgumentError(
          absl::StrCat("field \"", column.name, "\" expects true or false, got \"", text, "\""));
    default:
      return JsonValue::String(text);
  }
}

absl::StatusOr<JsonValue> ParseFieldArgs(const ObjectTypeDef& type,
                                         const std::vector<std::string>& args) {
  JsonValue fields = JsonValue::Object();
  std::set<std::string> seen;
  for (const std::string& arg : args) {
    const size_t eq = arg.find('=');
    if (eq == std::string::npos || eq == 0 || (eq == 1 && arg[0] == ':')) {
      return absl::InvalidArgumentError(
          absl::StrCat("expected FIELD=VALUE or FIELD:=JSON, got \"", arg, "\""));
    }
    const bool raw = arg[eq - 1] == ':';
    const std::string name = arg.substr(0, raw ? eq - 1 : eq);
    const absl::string_view value = absl::string_view(arg).substr(eq + 1);
    if (!seen.insert(name).second) {
      return absl::InvalidArgumentError(absl::StrCat("field \"", name, "\" given twice"));
    }
    const ColumnDef* column = type.FindColumn(name);
    if (column == nullptr) {
      return absl::InvalidArgumentError(
          absl::StrCat("unknown field \"", name, "\" for object type \"", type.object_type, "\""));
    }
    if (raw) {
      absl::StatusOr<JsonValue> json = ParseJson(value);
      if (!json.ok()) {
        return absl::InvalidArgumentError(
            absl::StrCat("field \"", name, "\": ", json.status().message()));
      }
      fields.Set(name, *std::move(json));
    } else {
      PS_ASSIGN_OR_RETURN(JsonValue typed, TypeFieldValue(*column, value));
      fields.Set(name, std::move(typed));
    }
  }
  return fields;
}

int RunCli(const std::vector<std::string>& args, const CliEnvironment& env, std::ostream& out,
           std::ostream& err) {
  GlobalFlags flags;
  flags.db = env.db_env.empty() ? kDefaultDbPath : env.db_env;
  flags.server = env.server_env;
  flags.token = env.token_env;
  flags.token_command = env.token_command_env;
  flags.user_id = env.user_env;
  flags.tls_ca_file = env.tls_ca_env;
  flags.tls_cert_file = env.tls_cert_env;
  flags.tls_key_file = env.tls_key_env;
  flags.tls_server_name = env.tls_server_name_env;
  if (!env.plaintext_env.empty() && !absl::SimpleAtob(env.plaintext_env, &flags.plaintext)) {
    return Usage(err, absl::StrCat("PULSESYNC_PLAINTEXT=", env.plaintext_env,
                                   ": want 1/true/yes or 0/false/no"));
  }
  bool token_flag = false, token_command_flag = false;
  size_t i = 0;
  for (; i < args.size() && absl::StartsWith(args[i], "-"); ++i) {
    const std::string& a = args[i];
    if (a == "-h" || a == "--help") {
      out << kUsage;
      return kExitOk;
    }
    if (absl::StartsWith(a, "--db=")) {
      flags.db = a.substr(5);
    } else if (absl::StartsWith(a, "--key-file=")) {
      flags.key_files.push_back(a.substr(11));
      if (flags.key_files.back().empty()) return Usage(err, "--key-file must not be empty");
    } else if (absl::StartsWith(a, "--server=")) {
      flags.server = a.substr(9);
    } else if (absl::StartsWith(a, "--token=")) {
      flags.token = a.substr(8);
      token_flag = true;
    } else if (absl::StartsWith(a, "--token-command=")) {
      flags.token_command = a.substr(16);
      token_command_flag = true;
    } else if (absl::StartsWith(a, "--user=")) {
      flags.user_id = a.substr(7);
    } else if (absl::StartsWith(a, "--tls-ca=")) {
      flags.tls_ca_file = a.substr(9);
    } else if (absl::StartsWith(a, "--tls-cert=")) {
      flags.tls_cert_file = a.substr(11);
    } else if (absl::StartsWith(a, "--tls-key=")) {
      flags.tls_key_file = a.substr(10);
    } else if (absl::StartsWith(a, "--tls-server-name=")) {
      flags.tls_server_name = a.substr(18);
    } else if (a == "--plaintext") {
      flags.plaintext = true;
    } else {
      return Usage(err, absl::StrCat("unknown flag \"", a, "\""));
    }
  }
  if (flags.db.empty()) return Usage(err, "--db must not be empty");
  if (flags.tls_cert_file.empty() != flags.tls_key_file.empty()) {
    return Usage(err, "--tls-cert and --tls-key go together");
  }
  if (flags.tls_ca_file.empty() &&
      (!flags.tls_cert_file.empty() || !flags.tls_server_name.empty())) {
    return Usage(err, "--tls-cert, --tls-key and --tls-server-name need --tls-ca");
  }
  // A flag wins over the other's environment variable.
  if (token_flag && !token_command_flag) flags.token_command.clear();
  if (token_command_flag && !token_flag) flags.token.clear();
  if (!flags.token.empty() && !flags.token_command.empty()) {
    return Usage(err, "--token and --token-command exclude each other");
  }
  if (flags.plaintext && !flags.tls_ca_file.empty()) {
    return Usage(err, "--plaintext and --tls-ca contradict each other");
  }
  if (i == args.size()) return Usage(err, "");
  const std::string command = args[i];
  return RunCommand(flags, env, command,
                    std::vector<std::string>(args.begin() + static_cast<long>(i) + 1, args.end()),
                    out, err);
}

}  // namespace pulsesync

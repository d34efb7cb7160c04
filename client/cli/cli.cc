#include "client/cli/cli.h"

#include <set>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "client/core/sync_engine.h"
#include "client/store/local_store.h"
#include "common/status_macros.h"

namespace pulsesync {
namespace {

constexpr char kUsage[] =
    R"(usage: pulsesync [--db=PATH] [--server=HOST:PORT] [--token=JWT] COMMAND [ARGS]

commands:
  init                          create the database (idempotent); print the origin id
  create TYPE FIELD=VALUE...    create an object; print its id
  update TYPE ID FIELD=VALUE... set some fields of an object
  delete TYPE ID                delete an object (tombstone)
  get [--deleted] TYPE ID       print an object as JSON
  list [--deleted] TYPE         print all objects of a type, one JSON per line
  sync                          push pending revisions, then pull changes
  status                        print origin id, pending count, cursor, server

TYPE: team, user, team_member, project, task (or the plural table name).
FIELD=VALUE is typed by the column (integer, true/false, text; null = null);
FIELD:=JSON takes a raw JSON value, e.g. title:='"null"'.

flags (before the command):
  --db=PATH          database file (env PULSESYNC_DB, default pulsesync.db)
  --server=HOST:PORT server address (env PULSESYNC_SERVER, else the last one
                     used by this database, else 127.0.0.1:50051)
  --token=JWT        bearer token for the server (env PULSESYNC_TOKEN)
)";

// Exit codes.
constexpr int kExitOk = 0;
constexpr int kExitError = 1;
constexpr int kExitUsage = 2;

struct GlobalFlags {
  std::string db;
  std::string server;  // empty = not given by flag or env
  std::string token;
};

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
  std::unique_ptr<Transport> transport = env.make_transport(address, flags.token);
  SyncEngine engine(store, transport.get());
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
      << ", skipped " << q.skipped << ")\n";
  return kExitOk;
}

int RunCommand(const GlobalFlags& flags, const CliEnvironment& env, const std::string& command,
               std::vector<std::string> args, std::ostream& out, std::ostream& err) {
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
  } else {
    return Usage(err, absl::StrCat("unknown command \"", command, "\""));
  }
  if (args.size() < min_args || (exact && args.size() != min_args)) {
    return Usage(err, absl::StrCat("wrong number of arguments for ", command));
  }

  // Validate the type and fields before touching the database.
  const ObjectTypeDef* type = nullptr;
  JsonValue fields;
  if (min_args > 0) {
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
  } else if (command == "sync") {
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
  }
  return kExitOk;
}

}  // namespace

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
  size_t i = 0;
  for (; i < args.size() && absl::StartsWith(args[i], "-"); ++i) {
    const std::string& a = args[i];
    if (a == "-h" || a == "--help") {
      out << kUsage;
      return kExitOk;
    }
    if (absl::StartsWith(a, "--db=")) {
      flags.db = a.substr(5);
    } else if (absl::StartsWith(a, "--server=")) {
      flags.server = a.substr(9);
    } else if (absl::StartsWith(a, "--token=")) {
      flags.token = a.substr(8);
    } else {
      return Usage(err, absl::StrCat("unknown flag \"", a, "\""));
    }
  }
  if (flags.db.empty()) return Usage(err, "--db must not be empty");
  if (i == args.size()) return Usage(err, "");
  const std::string command = args[i];
  return RunCommand(flags, env, command,
                    std::vector<std::string>(args.begin() + static_cast<long>(i) + 1, args.end()),
                    out, err);
}

}  // namespace pulsesync

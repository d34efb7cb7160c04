#include "client/store/local_store.h"

#include <algorithm>
#include <cstring>
#include <map>
#include <optional>
#include <set>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/time.h"
#include "common/log.h"
#include "common/status_macros.h"
#include "common/uuid.h"

namespace pulsesync {

using sqlite::SqliteDb;
using sqlite::Statement;
using sqlite::Transaction;

// sync_state's single row, as loaded inside a transaction.
struct LocalStore::StateRow {
  std::string origin_id;
  int64_t next_seq = 1;
  std::string cursor;
  HlcTimestamp hlc;
  std::string server_address;
};

namespace {

const char* const kOpUpsert = "upsert";
const char* const kOpDelete = "delete";

// --- Schema ---

// The local database's layout (PRAGMA user_version). 2: the _extra column,
// revisions.resolution, the conflicts table. 3: server_rows (invariant 13).
// 4: revisions are indexed by object only while pending (kPendingIndexDdl).
// Independent of the schema
// version the store acts as (LocalStoreOptions::schema_version): tables gain
// the columns of a newer schema when opened as it (EnsureCatalog).
constexpr int kLocalLayoutVersion = 4;
// SQLite page cache per connection, KiB.
constexpr int kCacheKiB = 16384;

// Per row, the fields the server sent that this client's schema does not
// have (a newer schema's columns), as a JSON object: kept, not dropped, and
// returned by Get and List beside the known ones.
constexpr char kExtraColumn[] = "_extra";

// Server columns that are the merge's bookkeeping, never stored here.
bool IsServerInternal(absl::string_view name) {
  return name == "live_hlc" || name == "deleted_hlc" || name == "field_clocks";
}

std::string ColumnDdl(const ColumnDef& c) {
  std::string col = absl::StrCat(
      c.name, " ",
      c.type == ColumnType::kInteger || c.type == ColumnType::kBoolean ? "INTEGER" : "TEXT");
  if (c.system && !c.default_sql.empty()) absl::StrAppend(&col, " NOT NULL");
  if (!c.default_sql.empty()) absl::StrAppend(&col, " DEFAULT ", c.default_sql);
  return col;
}

// The one column of a synced table indexed besides its id (TableDdl's
// <table>_created_idx). An UPDATE that assigns it rewrites that index's
// entry even to the same value (SQLite goes by the columns assigned), so a
// pulled row leaves it out when unchanged (ApplyRecord).
constexpr char kIndexedColumn[] = "created_at";

std::string TableDdl(const ObjectTypeDef& def) {
  std::vector<std::string> cols;
  for (const ColumnDef& c : def.columns) {
    std::string col = ColumnDdl(c);
    if (c.name == "id") absl::StrAppend(&col, " PRIMARY KEY NOT NULL");
    cols.push_back(std::move(col));
  }
  cols.push_back(absl::StrCat(kExtraColumn, " TEXT"));
  // No foreign keys: remote changes may arrive in any order.
  return absl::StrCat("CREATE TABLE ", def.table, " (\n  ", absl::StrJoin(cols, ",\n  "),
                      "\n);\nCREATE INDEX ", def.table, "_created_idx ON ", def.table, " (",
                      kIndexedColumn, ", id);\n");
}

constexpr absl::string_view kSyncTablesDdl = R"sql(
CREATE TABLE revisions (
  id TEXT PRIMARY KEY NOT NULL,
  object_type TEXT NOT NULL,
  object_id TEXT NOT NULL,
  origin_id TEXT NOT NULL,
  seq INTEGER NOT NULL,
  payload TEXT NOT NULL,
  created_at INTEGER NOT NULL,
  synced INTEGER NOT NULL DEFAULT 0,
  op TEXT NOT NULL CHECK (op IN ('upsert', 'delete')),
  base_version INTEGER NOT NULL DEFAULT 0,
  schema_version INTEGER NOT NULL,
  hlc_ms INTEGER NOT NULL,
  hlc_counter INTEGER NOT NULL,
  server_version INTEGER,
  outcome TEXT,
  reject_reason TEXT,
  superseded INTEGER NOT NULL DEFAULT 0,
  resolution TEXT
);
CREATE INDEX revisions_synced_seq_idx ON revisions (synced, seq);
CREATE TABLE sync_state (
  id INTEGER PRIMARY KEY CHECK (id = 1),
  origin_id TEXT NOT NULL,
  next_seq INTEGER NOT NULL,
  cursor TEXT NOT NULL DEFAULT '',
  hlc_ms INTEGER NOT NULL DEFAULT 0,
  hlc_counter INTEGER NOT NULL DEFAULT 0,
  server_address TEXT,
  schema_version INTEGER
);
)sql";

// Revisions are looked up by object only among the pending ones (a remote
// change merges with them; an answer keeps server_rows while one is left).
// Indexed only while pending, the index holds what is not yet pushed, not
// every revision ever written: layout 3's index over all of them put each
// local write and each pulled change's pending check on a random page of an
// index as big as the history (client_bench growth: at 100k rows, ~1 in 2
// of them missed SQLite's cache).
constexpr absl::string_view kPendingIndexDdl = R"sql(
CREATE INDEX IF NOT EXISTS revisions_pending_object_idx ON revisions (object_type, object_id)
  WHERE synced = 0;
)sql";

// Invariant 13: the server's row behind fields that pending revisions keep.
// `record` is the row as the server sent it (JSON); NULL = hard-deleted.
constexpr absl::string_view kServerRowsDdl = R"sql(
CREATE TABLE server_rows (
  object_type TEXT NOT NULL,
  object_id TEXT NOT NULL,
  version INTEGER NOT NULL,
  record TEXT,
  PRIMARY KEY (object_type, object_id)
) WITHOUT ROWID;
)sql";

// The catalog's columns, then _extra (RowToJson reads it last).
std::string SelectColumns(const ObjectTypeDef& def) {
  std::vector<std::string> names;
  for (const ColumnDef& c : def.columns) names.push_back(c.name);
  names.push_back(kExtraColumn);
  return absl::StrJoin(names, ", ");
}

// --- Values ---

absl::StatusOr<const ObjectTypeDef*> LookupType(absl::string_view object_type,
                                                int schema_version) {
  const ObjectTypeDef* def = FindObjectType(object_type, schema_version);
  if (def == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat("unknown object type \"", object_type,
                                                   "\" (known: ", KnownObjectTypeNames(), ")"));
  }
  return def;
}

// Checks one user-supplied field against the catalog.
absl::Status ValidateField(const ObjectTypeDef& def, const std::string& name,
                           const JsonValue& value) {
  const ColumnDef* col = def.FindColumn(name);
  if (col == nullptr) {
    return absl::InvalidArgumentError(
        absl::StrCat("unknown field \"", name, "\" for object type \"", def.object_type, "\""));
  }
  if (col->system) {
    return absl::InvalidArgumentError(
        absl::StrCat("field \"", name, "\" is set by the server and cannot be written"));
  }
  if (value.is_null()) {
    if (col->required || col->name == "id") {
      return absl::InvalidArgumentError(absl::StrCat("field \"", name, "\" of object type \"",
                                                     def.object_type, "\" cannot be null"));
    }
    return absl::OkStatus();
  }
  bool ok = false;
  switch (col->type) {
    case ColumnType::kText:
    case ColumnType::kTimestamp:
      ok = value.is_string();
      break;
    case ColumnType::kUuid:
      ok = value.is_string() && IsUuid(value.text());
      break;
    case ColumnType::kInteger:
      ok = value.type() == JsonValue::Type::kNumber && value.AsInt64().has_value();
      break;
    case ColumnType::kBoolean:
      ok = value.type() == JsonValue::Type::kBool;
      break;
    case ColumnType::kJson:
      ok = true;
      break;
  }
  if (!ok) {
    return absl::InvalidArgumentError(
        absl::StrCat("field \"", name, "\" of object type \"", def.object_type, "\" expects ",
                     ColumnTypeName(col->type), ", got ", value.Serialize()));
  }
  return absl::OkStatus();
}

absl::Status ValidateFields(const ObjectTypeDef& def, const JsonValue& fields) {
  if (!fields.is_object()) {
    return absl::InvalidArgumentError("fields must be a JSON object");
  }
  for (const JsonValue::Member& m : fields.members()) {
    PS_RETURN_IF_ERROR(ValidateField(def, m.first, m.second));
  }
  return absl::OkStatus();
}

// Binds a validated local value.
absl::Status BindLocal(Statement* stmt, int index, const ColumnDef& col, const JsonValue& v) {
  if (v.is_null()) return stmt->BindNull(index);
  switch (col.type) {
    case ColumnType::kBoolean:
      return stmt->BindInt64(index, v.bool_value() ? 1 : 0);
    case ColumnType::kInteger:
      return stmt->BindInt64(index, *v.AsInt64());
    case ColumnType::kUuid:
      return stmt->BindText(index, absl::AsciiStrToLower(v.text()));
    case ColumnType::kJson:
      return stmt->BindText(index, v.Serialize());
    default:
      return stmt->BindText(index, v.text());
  }
}

// Binds a value from the server, leniently: the server's row is the truth
// even where it does not match our column type.
absl::Status BindRemote(Statement* stmt, int index, const ColumnDef& col, const JsonValue& v) {
  if (col.type == ColumnType::kJson) {
    return v.is_null() ? stmt->BindNull(index) : stmt->BindText(index, v.Serialize());
  }
  switch (v.type()) {
    case JsonValue::Type::kNull:
      return stmt->BindNull(index);
    case JsonValue::Type::kBool:
      return stmt->BindInt64(index, v.bool_value() ? 1 : 0);
    case JsonValue::Type::kNumber:
      if (auto n = v.AsInt64(); n.has_value()) return stmt->BindInt64(index, *n);
      return stmt->BindText(index, v.text());
    case JsonValue::Type::kString:
      return stmt->BindText(index, v.text());
    default:
      return stmt->BindText(index, v.Serialize());
  }
}

JsonValue RowToJson(const ObjectTypeDef& def, const Statement& stmt) {
  std::vector<JsonValue::Member> members;
  for (int i = 0; i < static_cast<int>(def.columns.size()); ++i) {
    const ColumnDef& col = def.columns[i];
    JsonValue v;
    switch (stmt.column_kind(i)) {
      case Statement::ColumnKind::kNull:
        break;
      case Statement::ColumnKind::kInteger:
        v = col.type == ColumnType::kBoolean ? JsonValue::Bool(stmt.ColumnInt64(i) != 0)
                                             : JsonValue::Number(stmt.ColumnInt64(i));
        break;
      case Statement::ColumnKind::kFloat: {
        std::string text = absl::StrCat(stmt.ColumnDouble(i));
        v = IsJsonNumber(text) ? JsonValue::Number(text) : JsonValue::String(text);
        break;
      }
      default:
        if (col.type == ColumnType::kJson) {
          absl::StatusOr<JsonValue> parsed = ParseJson(stmt.ColumnText(i));
          v = parsed.ok() ? *std::move(parsed) : JsonValue::String(stmt.ColumnText(i));
        } else {
          v = JsonValue::String(stmt.ColumnText(i));
        }
        break;
    }
    members.emplace_back(col.name, std::move(v));
  }
  // Fields of a newer schema, after the known ones.
  const int extra = static_cast<int>(def.columns.size());
  if (stmt.column_kind(extra) != Statement::ColumnKind::kNull) {
    absl::StatusOr<JsonValue> fields = ParseJson(stmt.ColumnText(extra));
    if (fields.ok() && fields->is_object()) {
      for (const JsonValue::Member& m : fields->members()) {
        if (def.FindColumn(m.first) == nullptr) members.push_back(m);
      }
    }
  }
  return JsonValue::Object(std::move(members));
}

absl::StatusOr<std::string> NormalizeId(absl::string_view id) {
  if (!IsUuid(id)) {
    return absl::InvalidArgumentError(absl::StrCat("\"", id, "\" is not a UUID"));
  }
  return absl::AsciiStrToLower(id);
}

absl::Status NotFound(const ObjectTypeDef& def, absl::string_view id) {
  return absl::NotFoundError(absl::StrCat(def.object_type, " ", id, " not found"));
}

// Moves fields kept in _extra into the columns `schema_version` has for them.
absl::Status MoveKeptFields(SqliteDb& db, int schema_version) {
  for (const ObjectTypeDef& def : AllObjectTypes(schema_version)) {
    for (const ColumnDef& c : def.columns) {
      if (c.name == "id" || c.name == "version") continue;
      const std::string path = absl::StrCat("'$.", c.name, "'");
      PS_RETURN_IF_ERROR(db.Exec(absl::StrCat(
          "UPDATE ", def.table, " SET ", c.name, " = json_extract(", kExtraColumn, ", ", path,
          "), ", kExtraColumn, " = nullif(json_remove(", kExtraColumn, ", ", path,
          "), '{}') WHERE ", kExtraColumn, " IS NOT NULL AND json_type(", kExtraColumn, ", ",
          path, ") IS NOT NULL;")));
    }
  }
  return absl::OkStatus();
}

// Creates the tables and adds the columns of `schema_version` that the
// database lacks (a store first opened as an older schema, or before a type
// existed); MoveKeptFields then fills them from the rows' _extra fields,
// where an older schema kept them.
absl::Status EnsureCatalog(SqliteDb& db, int schema_version) {
  for (const ObjectTypeDef& def : AllObjectTypes(schema_version)) {
    std::set<std::string> have;
    {
      PS_ASSIGN_OR_RETURN(Statement info,
                          db.Prepare(absl::StrCat("SELECT name FROM pragma_table_info('",
                                                  def.table, "')")));
      while (true) {
        PS_ASSIGN_OR_RETURN(bool row, info.Step());
        if (!row) break;
        have.insert(info.ColumnText(0));
      }
    }
    if (have.empty()) {
      PS_RETURN_IF_ERROR(db.Exec(TableDdl(def)));
      continue;
    }
    for (const ColumnDef& c : def.columns) {
      if (have.count(c.name) > 0) continue;
      PS_RETURN_IF_ERROR(
          db.Exec(absl::StrCat("ALTER TABLE ", def.table, " ADD COLUMN ", ColumnDdl(c), ";")));
    }
  }
  return absl::OkStatus();
}

}  // namespace

// What absl::FormatTime("%Y-%m-%dT%H:%M:%E*S+00:00", UTC) prints (fraction
// without trailing zeros, none for a whole second), by hand: cctz's general
// formatter took a twentieth of a batched local write, which stamps two.
// Years 1000-9999; others (never a clock reading) go to absl.
std::string FormatTimestamp(int64_t unix_ms) {
  constexpr int64_t kMsPerDay = 86'400'000;
  int64_t days = unix_ms / kMsPerDay;
  int64_t ms_of_day = unix_ms % kMsPerDay;
  if (ms_of_day < 0) {
    ms_of_day += kMsPerDay;
    --days;
  }
  // Days since 1970-01-01 to a civil date (H. Hinnant's days_from_civil, inverted).
  const int64_t z = days + 719468;
  const int64_t era = (z >= 0 ? z : z - 146096) / 146097;
  const int64_t doe = z - era * 146097;
  const int64_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
  const int64_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
  const int64_t mp = (5 * doy + 2) / 153;
  const int64_t day = doy - (153 * mp + 2) / 5 + 1;
  const int64_t month = mp < 10 ? mp + 3 : mp - 9;
  const int64_t year = yoe + era * 400 + (month <= 2 ? 1 : 0);
  if (year < 1000 || year > 9999) {
    return absl::FormatTime("%Y-%m-%dT%H:%M:%E*S+00:00", absl::FromUnixMillis(unix_ms),
                            absl::UTCTimeZone());
  }
  char buf[40];
  auto two = [](char* p, int64_t v) {
    p[0] = static_cast<char>('0' + v / 10);
    p[1] = static_cast<char>('0' + v % 10);
  };
  two(buf, year / 100);
  two(buf + 2, year % 100);
  buf[4] = '-';
  two(buf + 5, month);
  buf[7] = '-';
  two(buf + 8, day);
  buf[10] = 'T';
  two(buf + 11, ms_of_day / 3'600'000);
  buf[13] = ':';
  two(buf + 14, ms_of_day / 60'000 % 60);
  buf[16] = ':';
  two(buf + 17, ms_of_day / 1000 % 60);
  size_t n = 19;
  if (int64_t frac = ms_of_day % 1000; frac != 0) {
    buf[n++] = '.';
    buf[n++] = static_cast<char>('0' + frac / 100);
    if (frac % 100 != 0) {
      buf[n++] = static_cast<char>('0' + frac / 10 % 10);
      if (frac % 10 != 0) buf[n++] = static_cast<char>('0' + frac % 10);
    }
  }
  std::memcpy(buf + n, "+00:00", 6);
  return std::string(buf, n + 6);
}

// --- Open ---

absl::StatusOr<std::unique_ptr<LocalStore>> LocalStore::Open(const std::string& path,
                                                             LocalStoreOptions options) {
  const WallClock& clock = options.clock != nullptr ? *options.clock : WallClock::Real();
  PS_ASSIGN_OR_RETURN(SqliteDb db, SqliteDb::Open(path, options.create_if_missing));
  PS_RETURN_IF_ERROR(db.Exec(absl::StrCat("PRAGMA busy_timeout = ", options.busy_timeout_ms)));
  PS_RETURN_IF_ERROR(db.Exec("PRAGMA foreign_keys = OFF"));
  // Page cache: SQLite's default (2 MB) spills a big write transaction to the
  // WAL and reads its pages back (batched writes, snapshots).
  PS_RETURN_IF_ERROR(db.Exec(absl::StrCat("PRAGMA cache_size = -", kCacheKiB)));
  if (options.max_size_bytes > 0) {
    PS_ASSIGN_OR_RETURN(Statement ps, db.Prepare("PRAGMA page_size"));
    PS_ASSIGN_OR_RETURN(bool row, ps.Step());
    const int64_t page_size = row && ps.ColumnInt64(0) > 0 ? ps.ColumnInt64(0) : 4096;
    PS_ASSIGN_OR_RETURN(Statement max, db.Prepare(absl::StrCat(
                                           "PRAGMA max_page_count = ",
                                           std::max<int64_t>(1, options.max_size_bytes / page_size))));
    PS_RETURN_IF_ERROR(max.Step().status());
  }
  {
    PS_ASSIGN_OR_RETURN(Statement wal, db.Prepare("PRAGMA journal_mode = WAL"));
    PS_ASSIGN_OR_RETURN(bool row, wal.Step());
    if (!row || absl::AsciiStrToLower(wal.ColumnText(0)) != "wal") {
      return absl::FailedPreconditionError(
          absl::StrCat("cannot put database ", path, " in WAL mode"));
    }
  }

  bool created = false;
  {
    PS_ASSIGN_OR_RETURN(Transaction txn, Transaction::BeginImmediate(&db));
    int64_t version = 0;
    {
      PS_ASSIGN_OR_RETURN(Statement uv, db.Prepare("PRAGMA user_version"));
      PS_ASSIGN_OR_RETURN(bool row, uv.Step());
      if (row) version = uv.ColumnInt64(0);
    }
    if (version > kLocalLayoutVersion) {
      return absl::FailedPreconditionError(
          absl::StrCat("database ", path, " has layout version ", version,
                       ", newer than this client's ", kLocalLayoutVersion, "; upgrade pulsesync"));
    }
    if (options.schema_version < 1 || options.schema_version > kClientSchemaVersion) {
      return absl::InvalidArgumentError(absl::StrCat("schema version ", options.schema_version,
                                                     " is not one this client knows (1..",
                                                     kClientSchemaVersion, ")"));
    }
    if (version == 0) {
      std::string ddl;
      for (const ObjectTypeDef& def : AllObjectTypes(options.schema_version)) {
        absl::StrAppend(&ddl, TableDdl(def));
      }
      absl::StrAppend(&ddl, kSyncTablesDdl, kPendingIndexDdl, kServerRowsDdl);
      PS_RETURN_IF_ERROR(db.Exec(ddl));
      PS_ASSIGN_OR_RETURN(Statement ins,
                          db.Prepare("INSERT INTO sync_state (id, origin_id, next_seq) "
                                     "VALUES (1, ?, 1)"));
      PS_RETURN_IF_ERROR(
          ins.BindText(1, options.origin_id.empty() ? NewUuid() : options.origin_id));
      PS_RETURN_IF_ERROR(ins.Run());
      created = true;
    } else if (version == 1) {
      std::string ddl =
          "ALTER TABLE revisions ADD COLUMN resolution TEXT;\n"
          "ALTER TABLE sync_state ADD COLUMN schema_version INTEGER;\n";
      for (const ObjectTypeDef& def : AllObjectTypes(1)) {
        if (def.object_type == "conflict") continue;  // new in layout 2
        absl::StrAppend(&ddl, "ALTER TABLE ", def.table, " ADD COLUMN ", kExtraColumn, " TEXT;\n");
      }
      PS_RETURN_IF_ERROR(db.Exec(ddl));
    }
    if (version == 1 || version == 2) PS_RETURN_IF_ERROR(db.Exec(kServerRowsDdl));
    if (version >= 1 && version <= 3) {
      PS_RETURN_IF_ERROR(
          db.Exec(absl::StrCat("DROP INDEX IF EXISTS revisions_object_idx;", kPendingIndexDdl)));
    }
    PS_RETURN_IF_ERROR(db.Exec(absl::StrCat("PRAGMA user_version = ", kLocalLayoutVersion)));
    PS_RETURN_IF_ERROR(EnsureCatalog(db, options.schema_version));
    // Rows kept by another schema version may hold, beside the row, fields
    // this version has columns for: move them in, once per change of version.
    {
      PS_ASSIGN_OR_RETURN(Statement last,
                          db.Prepare("SELECT schema_version FROM sync_state WHERE id = 1"));
      PS_ASSIGN_OR_RETURN(bool row, last.Step());
      const bool changed = !row || last.column_kind(0) == Statement::ColumnKind::kNull ||
                           last.ColumnInt64(0) != options.schema_version;
      last.Reset();
      if (changed) {
        PS_RETURN_IF_ERROR(MoveKeptFields(db, options.schema_version));
        PS_ASSIGN_OR_RETURN(Statement set,
                            db.Prepare("UPDATE sync_state SET schema_version = ? WHERE id = 1"));
        PS_RETURN_IF_ERROR(set.BindInt64(1, options.schema_version));
        PS_RETURN_IF_ERROR(set.Run());
      }
    }
    PS_RETURN_IF_ERROR(txn.Commit());
  }

  std::string origin;
  {
    PS_ASSIGN_OR_RETURN(Statement sel, db.Prepare("SELECT origin_id FROM sync_state WHERE id = 1"));
    PS_ASSIGN_OR_RETURN(bool row, sel.Step());
    if (!row) {
      return absl::DataLossError(absl::StrCat("database ", path, " has no sync_state row"));
    }
    origin = sel.ColumnText(0);
  }
  std::shared_ptr<const Keyring> keyring = std::move(options.keyring);
  if (keyring != nullptr && keyring->empty()) keyring.reset();
  std::unique_ptr<LocalStore> store(new LocalStore(std::move(db), clock, origin, created,
                                                   std::move(keyring), options.schema_version));
  if (store->keyring_ != nullptr && options.reencrypt_on_open) {
    PS_ASSIGN_OR_RETURN(ReencryptSummary summary, store->ReencryptPayloads());
    if (summary.rewritten > 0 || summary.failed > 0) {
      LogInfo("re-encrypted revision payloads",
              {{"key_id", store->keyring_->current_key_id()},
               {"rewritten", summary.rewritten},
               {"failed", summary.failed}});
    }
  }
  return store;
}

LocalStore::LocalStore(SqliteDb db, const WallClock& clock, std::string origin_id,
                       bool newly_created, std::shared_ptr<const Keyring> keyring,
                       int schema_version)
    : schema_version_(schema_version),
      db_(std::move(db)),
      clock_(clock),
      keyring_(std::move(keyring)),
      origin_id_(std::move(origin_id)),
      newly_created_(newly_created) {}

// --- Encryption at rest (invariants 10-12) ---

absl::StatusOr<std::string> LocalStore::SealPayload(absl::string_view revision_id,
                                                    absl::string_view object_type,
                                                    absl::string_view object_id,
                                                    absl::string_view plaintext) const {
  if (keyring_ == nullptr) return std::string(plaintext);
  return keyring_->Encrypt(plaintext, PayloadAad(revision_id, object_type, object_id));
}

absl::StatusOr<std::string> LocalStore::OpenPayload(absl::string_view revision_id,
                                                    absl::string_view object_type,
                                                    absl::string_view object_id,
                                                    std::string stored) const {
  if (!IsEncryptedPayload(stored)) return stored;  // written before encryption was on
  if (keyring_ == nullptr) {
    return absl::FailedPreconditionError(absl::StrCat(
        "the payload of revision ", revision_id, " is encrypted (key id \"",
        EnvelopeKeyId(stored), "\") and no key is configured (--key-file or ", kDbKeyEnvVar,
        ")"));
  }
  absl::StatusOr<std::string> plain =
      keyring_->Decrypt(stored, PayloadAad(revision_id, object_type, object_id));
  if (!plain.ok()) {
    return absl::Status(plain.status().code(),
                        absl::StrCat("revision ", revision_id, " (", object_type, " ", object_id,
                                     "): ", plain.status().message()));
  }
  return plain;
}

std::string LocalStore::payload_key_id() const {
  return keyring_ != nullptr ? keyring_->current_key_id() : std::string();
}

absl::StatusOr<ReencryptSummary> LocalStore::ReencryptPayloads() {
  ReencryptSummary summary;
  if (keyring_ == nullptr) return summary;
  const std::string current_prefix =
      absl::StrCat(kPayloadEnvelopePrefix, keyring_->current_key_id(), ":");
  const std::string stale = "FROM revisions WHERE substr(payload, 1, ?1) != ?2";
  absl::MutexLock lock(&mu_);
  {
    // Most opens find nothing to do: only then take the write lock.
    PS_ASSIGN_OR_RETURN(Statement count, db_.Prepare(absl::StrCat("SELECT count(*) ", stale)));
    PS_RETURN_IF_ERROR(count.BindInt64(1, static_cast<int64_t>(current_prefix.size())));
    PS_RETURN_IF_ERROR(count.BindText(2, current_prefix));
    PS_ASSIGN_OR_RETURN(bool row, count.Step());
    if (!row || count.ColumnInt64(0) == 0) return summary;
  }
  PS_ASSIGN_OR_RETURN(Transaction txn, Transaction::BeginImmediate(&db_));
  PS_ASSIGN_OR_RETURN(Statement sel, db_.Prepare(absl::StrCat(
                                         "SELECT id, object_type, object_id, payload ", stale)));
  PS_RETURN_IF_ERROR(sel.BindInt64(1, static_cast<int64_t>(current_prefix.size())));
  PS_RETURN_IF_ERROR(sel.BindText(2, current_prefix));
  std::vector<std::pair<std::string, std::string>> rewrites;  // revision id, new payload
  while (true) {
    PS_ASSIGN_OR_RETURN(bool row, sel.Step());
    if (!row) break;
    const std::string id = sel.ColumnText(0);
    const std::string type = sel.ColumnText(1);
    const std::string object = sel.ColumnText(2);
    absl::StatusOr<std::string> plain = OpenPayload(id, type, object, sel.ColumnText(3));
    if (!plain.ok()) {
      LogWarning("cannot re-encrypt a revision payload", {{"status", plain.status()}});
      ++summary.failed;
      continue;
    }
    PS_ASSIGN_OR_RETURN(std::string sealed, SealPayload(id, type, object, *plain));
    rewrites.emplace_back(id, std::move(sealed));
  }
  PS_ASSIGN_OR_RETURN(Statement upd, db_.Prepare("UPDATE revisions SET payload = ? WHERE id = ?"));
  for (const auto& [id, payload] : rewrites) {
    upd.Reset();
    PS_RETURN_IF_ERROR(upd.BindText(1, payload));
    PS_RETURN_IF_ERROR(upd.BindText(2, id));
    PS_RETURN_IF_ERROR(upd.Run());
  }
  PS_RETURN_IF_ERROR(txn.Commit());
  summary.rewritten = static_cast<int64_t>(rewrites.size());
  return summary;
}

LocalStore::~LocalStore() = default;

// --- State helpers ---

absl::StatusOr<std::optional<LocalStore::RowState>> LocalStore::ReadRowState(
    const ObjectTypeDef& def, const std::string& id) {
  PS_ASSIGN_OR_RETURN(Statement * sel, db_.Cached(absl::StrCat("SELECT version, deleted FROM ",
                                                               def.table, " WHERE id = ?")));
  PS_RETURN_IF_ERROR(sel->BindText(1, id));
  PS_ASSIGN_OR_RETURN(bool found, sel->Step());
  std::optional<RowState> row;
  if (found) row = RowState{sel->ColumnInt64(0), sel->ColumnInt64(1) != 0};
  sel->Reset();
  return row;
}

absl::StatusOr<LocalStore::StateRow> LocalStore::LoadState() {
  PS_ASSIGN_OR_RETURN(Statement * st,
                      db_.Cached("SELECT origin_id, next_seq, cursor, hlc_ms, hlc_counter, "
                                 "coalesce(server_address, '') FROM sync_state WHERE id = 1"));
  PS_ASSIGN_OR_RETURN(bool row, st->Step());
  if (!row) return absl::DataLossError("sync_state row is missing");
  StateRow s;
  s.origin_id = st->ColumnText(0);
  s.next_seq = st->ColumnInt64(1);
  s.cursor = st->ColumnText(2);
  s.hlc = HlcTimestamp{st->ColumnInt64(3), static_cast<uint32_t>(st->ColumnInt64(4))};
  s.server_address = st->ColumnText(5);
  st->Reset();
  return s;
}

absl::Status LocalStore::SaveState(const StateRow& s) {
  PS_ASSIGN_OR_RETURN(Statement * st,
                      db_.Cached("UPDATE sync_state SET next_seq = ?, cursor = ?, hlc_ms = ?, "
                                 "hlc_counter = ? WHERE id = 1"));
  PS_RETURN_IF_ERROR(st->BindInt64(1, s.next_seq));
  PS_RETURN_IF_ERROR(st->BindText(2, s.cursor));
  PS_RETURN_IF_ERROR(st->BindInt64(3, s.hlc.physical_ms));
  PS_RETURN_IF_ERROR(st->BindInt64(4, s.hlc.counter));
  return st->Run();
}

absl::Status LocalStore::WriteRevision(StateRow* state, const ObjectTypeDef& type,
                                       absl::string_view object_id, RevisionOp op,
                                       const std::string& payload, int64_t base_version,
                                       const std::string& revision_id, HlcTimestamp ts) {
  PS_ASSIGN_OR_RETURN(
      Statement * cached,
      db_.Cached("INSERT INTO revisions (id, object_type, object_id, origin_id, seq, payload, "
                 "created_at, synced, op, base_version, schema_version, hlc_ms, hlc_counter) "
                 "VALUES (?, ?, ?, ?, ?, ?, ?, 0, ?, ?, ?, ?, ?)"));
  Statement& st = *cached;
  PS_RETURN_IF_ERROR(st.BindText(1, revision_id));
  PS_RETURN_IF_ERROR(st.BindText(2, type.object_type));
  PS_RETURN_IF_ERROR(st.BindText(3, object_id));
  PS_RETURN_IF_ERROR(st.BindText(4, origin_id_));
  PS_RETURN_IF_ERROR(st.BindInt64(5, state->next_seq));
  PS_ASSIGN_OR_RETURN(std::string stored,
                      SealPayload(revision_id, type.object_type, object_id, payload));
  PS_RETURN_IF_ERROR(st.BindText(6, stored));
  PS_RETURN_IF_ERROR(st.BindInt64(7, clock_.NowMs()));
  PS_RETURN_IF_ERROR(st.BindText(8, op == RevisionOp::kDelete ? kOpDelete : kOpUpsert));
  PS_RETURN_IF_ERROR(st.BindInt64(9, base_version));
  PS_RETURN_IF_ERROR(st.BindInt64(10, schema_version_));
  PS_RETURN_IF_ERROR(st.BindInt64(11, ts.physical_ms));
  PS_RETURN_IF_ERROR(st.BindInt64(12, ts.counter));
  PS_RETURN_IF_ERROR(st.Run());
  ++state->next_seq;
  return absl::OkStatus();
}

absl::StatusOr<std::optional<JsonValue>> LocalStore::ReadRow(const ObjectTypeDef& def,
                                                             absl::string_view id) {
  PS_ASSIGN_OR_RETURN(Statement st,
                      db_.Prepare(absl::StrCat("SELECT ", SelectColumns(def), " FROM ", def.table,
                                               " WHERE id = ?")));
  PS_RETURN_IF_ERROR(st.BindText(1, id));
  PS_ASSIGN_OR_RETURN(bool row, st.Step());
  if (!row) return std::optional<JsonValue>();
  return std::optional<JsonValue>(RowToJson(def, st));
}

// --- Local writes ---

absl::StatusOr<std::string> LocalStore::Create(absl::string_view object_type,
                                               const JsonValue& fields) {
  PS_ASSIGN_OR_RETURN(std::vector<std::string> ids,
                      WriteImpl({LocalWrite::Create(std::string(object_type), fields)},
                                /*name_index=*/false));
  return ids[0];
}

absl::Status LocalStore::Update(absl::string_view object_type, absl::string_view id,
                                const JsonValue& fields) {
  return WriteImpl({LocalWrite::Update(std::string(object_type), std::string(id), fields)},
                   /*name_index=*/false)
      .status();
}

absl::Status LocalStore::Delete(absl::string_view object_type, absl::string_view id) {
  return WriteImpl({LocalWrite::Delete(std::string(object_type), std::string(id))},
                   /*name_index=*/false)
      .status();
}

absl::StatusOr<std::vector<std::string>> LocalStore::Apply(const std::vector<LocalWrite>& writes) {
  if (writes.empty()) return std::vector<std::string>();  // no transaction, no notification
  return WriteImpl(writes, /*name_index=*/true);
}

void LocalStore::SetLocalWriteListener(std::function<void()> listener) {
  absl::MutexLock lock(&listener_mu_);
  listener_ = std::move(listener);
}

void LocalStore::NotifyLocalWrite() {
  // A reader lock: writers run concurrently, and SetLocalWriteListener
  // waits for calls in progress, so a listener is never called after it
  // was replaced.
  absl::ReaderMutexLock lock(&listener_mu_);
  if (listener_) listener_();
}

absl::StatusOr<std::vector<std::string>> LocalStore::WriteImpl(
    const std::vector<LocalWrite>& writes, bool name_index) {
  auto at = [&](size_t i, const absl::Status& st) {
    if (!name_index) return st;
    return absl::Status(st.code(), absl::StrCat("write ", i, ": ", st.message()));
  };
  std::vector<PlannedWrite> planned;
  planned.reserve(writes.size());
  for (size_t i = 0; i < writes.size(); ++i) {
    absl::StatusOr<PlannedWrite> p = PlanWrite(writes[i]);
    if (!p.ok()) return at(i, p.status());
    planned.push_back(*std::move(p));
  }
  std::vector<std::string> ids;
  ids.reserve(planned.size());
  {
    absl::MutexLock lock(&mu_);
    PS_ASSIGN_OR_RETURN(Transaction txn, Transaction::BeginImmediate(&db_));
    PS_ASSIGN_OR_RETURN(StateRow state, LoadState());
    for (size_t i = 0; i < planned.size(); ++i) {
      if (absl::Status st = WriteLocked(&state, planned[i]); !st.ok()) return at(i, st);
      ids.push_back(planned[i].id);
    }
    PS_RETURN_IF_ERROR(SaveState(state));
    PS_RETURN_IF_ERROR(txn.Commit());
  }
  NotifyLocalWrite();
  return ids;
}

absl::StatusOr<LocalStore::PlannedWrite> LocalStore::PlanWrite(const LocalWrite& write) const {
  PS_ASSIGN_OR_RETURN(const ObjectTypeDef* def, LookupType(write.object_type, schema_version_));
  PlannedWrite p{write.kind, def, "", JsonValue::Object(), clock_.NowMs()};
  if (write.kind == LocalWrite::Kind::kDelete) {
    PS_ASSIGN_OR_RETURN(p.id, NormalizeId(write.id));
    return p;
  }
  PS_RETURN_IF_ERROR(ValidateFields(*def, write.fields));
  if (write.kind == LocalWrite::Kind::kUpdate) {
    PS_ASSIGN_OR_RETURN(p.id, NormalizeId(write.id));
    for (const JsonValue::Member& m : write.fields.members()) {
      if (m.first == "id") {
        if (absl::AsciiStrToLower(m.second.text()) != p.id) {
          return absl::InvalidArgumentError("field \"id\" cannot be changed");
        }
        continue;
      }
      p.payload.Set(m.first, m.second);
    }
    if (p.payload.members().empty()) {
      return absl::InvalidArgumentError("no fields to update");
    }
    return p;
  }
  std::vector<std::string> missing;
  for (const ColumnDef& c : def->columns) {
    if (c.required && write.fields.Find(c.name) == nullptr)
      missing.push_back(absl::StrCat("\"", c.name, "\""));
  }
  if (!missing.empty()) {
    return absl::InvalidArgumentError(absl::StrCat("missing required field(s) ",
                                                   absl::StrJoin(missing, ", "),
                                                   " for object type \"", def->object_type, "\""));
  }
  if (const JsonValue* given = write.fields.Find("id"); given != nullptr) {
    p.id = absl::AsciiStrToLower(given->text());
  } else {
    p.id = NewTimeOrderedUuid();
  }
  // The payload: the fields set, without id (it travels as object_id) and
  // with created_at, so the server and this database agree on it.
  for (const JsonValue::Member& m : write.fields.members()) {
    if (m.first != "id") p.payload.Set(m.first, m.second);
  }
  if (p.payload.Find("created_at") == nullptr) {
    p.payload.Set("created_at", JsonValue::String(FormatTimestamp(p.now_ms)));
  }
  return p;
}

absl::Status LocalStore::WriteLocked(StateRow* state, const PlannedWrite& write) {
  const ObjectTypeDef& def = *write.def;
  const std::string& id = write.id;
  if (write.kind == LocalWrite::Kind::kUpdate) {
    return UpsertLocked(state, def, id, write.payload, /*revive=*/false);
  }
  if (write.kind == LocalWrite::Kind::kDelete) {
    PS_ASSIGN_OR_RETURN(std::optional<RowState> row, ReadRowState(def, id));
    if (!row.has_value()) return NotFound(def, id);
    if (row->deleted) return absl::OkStatus();  // already a tombstone
    HybridLogicalClock hlc(clock_, state->hlc);
    const HlcTimestamp ts = hlc.Now();
    state->hlc = hlc.last();
    const std::string revision_id = NewTimeOrderedUuid();
    PS_ASSIGN_OR_RETURN(Statement * upd,
                        db_.Cached(absl::StrCat("UPDATE ", def.table,
                                                " SET deleted = 1, updated_at = ?, "
                                                "last_origin_id = ?, last_revision_id = ?, "
                                                "hlc = ? WHERE id = ?")));
    PS_RETURN_IF_ERROR(upd->BindText(1, FormatTimestamp(clock_.NowMs())));
    PS_RETURN_IF_ERROR(upd->BindText(2, origin_id_));
    PS_RETURN_IF_ERROR(upd->BindText(3, revision_id));
    PS_RETURN_IF_ERROR(upd->BindText(4, FormatHlc(ts, origin_id_)));
    PS_RETURN_IF_ERROR(upd->BindText(5, id));
    PS_RETURN_IF_ERROR(upd->Run());
    return WriteRevision(state, def, id, RevisionOp::kDelete, "{}", row->version, revision_id,
                         ts);
  }
  // An id already taken fails the INSERT below (primary key): no read first.
  HybridLogicalClock hlc(clock_, state->hlc);
  const HlcTimestamp ts = hlc.Now();
  state->hlc = hlc.last();
  const std::string revision_id = NewTimeOrderedUuid();

  std::vector<std::string> cols = {"id", "updated_at", "last_origin_id", "last_revision_id", "hlc"};
  for (const JsonValue::Member& m : write.payload.members()) cols.push_back(m.first);
  std::vector<std::string> marks(cols.size(), "?");
  PS_ASSIGN_OR_RETURN(
      Statement * ins,
      db_.Cached(absl::StrCat("INSERT INTO ", def.table, " (", absl::StrJoin(cols, ", "),
                              ") VALUES (", absl::StrJoin(marks, ", "), ")")));
  PS_RETURN_IF_ERROR(ins->BindText(1, id));
  PS_RETURN_IF_ERROR(ins->BindText(2, FormatTimestamp(write.now_ms)));
  PS_RETURN_IF_ERROR(ins->BindText(3, origin_id_));
  PS_RETURN_IF_ERROR(ins->BindText(4, revision_id));
  PS_RETURN_IF_ERROR(ins->BindText(5, FormatHlc(ts, origin_id_)));
  int index = 6;
  for (const JsonValue::Member& m : write.payload.members()) {
    PS_RETURN_IF_ERROR(BindLocal(ins, index++, *def.FindColumn(m.first), m.second));
  }
  if (absl::Status inserted = ins->Run(); !inserted.ok()) {
    // The id's constraint, not another unique column's.
    if (absl::IsAlreadyExists(inserted) && db_.primary_key_refused()) {
      return absl::AlreadyExistsError(absl::StrCat(def.object_type, " ", id, " already exists"));
    }
    return inserted;
  }
  return WriteRevision(state, def, id, RevisionOp::kUpsert, write.payload.Serialize(),
                       /*base_version=*/0, revision_id, ts);
}

absl::Status LocalStore::UpsertLocked(StateRow* state, const ObjectTypeDef& def,
                                      const std::string& id, const JsonValue& payload,
                                      bool revive) {
  PS_ASSIGN_OR_RETURN(std::optional<RowState> row, ReadRowState(def, id));
  if (!row.has_value() || (row->deleted && !revive)) return NotFound(def, id);
  const int64_t base_version = row->version;

  HybridLogicalClock hlc(clock_, state->hlc);
  const HlcTimestamp ts = hlc.Now();
  state->hlc = hlc.last();
  const std::string revision_id = NewTimeOrderedUuid();

  std::vector<std::string> sets = {"updated_at = ?", "last_origin_id = ?", "last_revision_id = ?",
                                   "hlc = ?"};
  if (revive) sets.push_back("deleted = 0");
  for (const JsonValue::Member& m : payload.members()) sets.push_back(m.first + " = ?");
  PS_ASSIGN_OR_RETURN(Statement * cached,
                      db_.Cached(absl::StrCat("UPDATE ", def.table, " SET ",
                                              absl::StrJoin(sets, ", "), " WHERE id = ?")));
  Statement& upd = *cached;
  PS_RETURN_IF_ERROR(upd.BindText(1, FormatTimestamp(clock_.NowMs())));
  PS_RETURN_IF_ERROR(upd.BindText(2, origin_id_));
  PS_RETURN_IF_ERROR(upd.BindText(3, revision_id));
  PS_RETURN_IF_ERROR(upd.BindText(4, FormatHlc(ts, origin_id_)));
  int index = 5;
  for (const JsonValue::Member& m : payload.members()) {
    PS_RETURN_IF_ERROR(BindLocal(&upd, index++, *def.FindColumn(m.first), m.second));
  }
  PS_RETURN_IF_ERROR(upd.BindText(index, id));
  PS_RETURN_IF_ERROR(upd.Run());
  return WriteRevision(state, def, id, RevisionOp::kUpsert, payload.Serialize(), base_version,
                       revision_id, ts);
}

// --- Reads ---

absl::StatusOr<std::optional<JsonValue>> LocalStore::Get(absl::string_view object_type,
                                                         absl::string_view raw_id,
                                                         ReadOptions options) {
  PS_ASSIGN_OR_RETURN(const ObjectTypeDef* def, LookupType(object_type, schema_version_));
  PS_ASSIGN_OR_RETURN(std::string id, NormalizeId(raw_id));
  absl::MutexLock lock(&mu_);
  PS_ASSIGN_OR_RETURN(std::optional<JsonValue> row, ReadRow(*def, id));
  if (row.has_value() && !options.include_deleted) {
    const JsonValue* deleted = row->Find("deleted");
    if (deleted != nullptr && deleted->bool_value()) return std::optional<JsonValue>();
  }
  return row;
}

absl::StatusOr<std::vector<JsonValue>> LocalStore::List(absl::string_view object_type,
                                                        ReadOptions options) {
  PS_ASSIGN_OR_RETURN(const ObjectTypeDef* def, LookupType(object_type, schema_version_));
  absl::MutexLock lock(&mu_);
  PS_ASSIGN_OR_RETURN(Statement st,
                      db_.Prepare(absl::StrCat("SELECT ", SelectColumns(*def), " FROM ", def->table,
                                               options.include_deleted ? "" : " WHERE deleted = 0",
                                               " ORDER BY created_at, id")));
  std::vector<JsonValue> rows;
  while (true) {
    PS_ASSIGN_OR_RETURN(bool row, st.Step());
    if (!row) break;
    rows.push_back(RowToJson(*def, st));
  }
  return rows;
}

// --- Push side ---

absl::StatusOr<std::vector<PendingRevision>> LocalStore::PendingRevisions(int limit,
                                                                         int64_t after_seq) {
  absl::MutexLock lock(&mu_);
  PS_ASSIGN_OR_RETURN(
      Statement st,
      db_.Prepare("SELECT id, object_type, object_id, origin_id, seq, op, payload, created_at, "
                  "base_version, schema_version, hlc_ms, hlc_counter FROM revisions "
                  "WHERE synced = 0 AND seq > ? ORDER BY seq LIMIT ?"));
  PS_RETURN_IF_ERROR(st.BindInt64(1, after_seq));
  PS_RETURN_IF_ERROR(st.BindInt64(2, limit));
  std::vector<PendingRevision> out;
  while (true) {
    PS_ASSIGN_OR_RETURN(bool row, st.Step());
    if (!row) break;
    PendingRevision r;
    r.id = st.ColumnText(0);
    r.object_type = st.ColumnText(1);
    r.object_id = st.ColumnText(2);
    r.origin_id = st.ColumnText(3);
    r.seq = st.ColumnInt64(4);
    r.op = st.ColumnText(5) == kOpDelete ? RevisionOp::kDelete : RevisionOp::kUpsert;
    PS_ASSIGN_OR_RETURN(r.payload,
                        OpenPayload(r.id, r.object_type, r.object_id, st.ColumnText(6)));
    r.created_at_ms = st.ColumnInt64(7);
    r.base_version = st.ColumnInt64(8);
    r.schema_version = static_cast<int>(st.ColumnInt64(9));
    r.clock = HlcTimestamp{st.ColumnInt64(10), static_cast<uint32_t>(st.ColumnInt64(11))};
    out.push_back(std::move(r));
  }
  return out;
}

absl::StatusOr<int64_t> LocalStore::PendingCount() {
  absl::MutexLock lock(&mu_);
  PS_ASSIGN_OR_RETURN(Statement st, db_.Prepare("SELECT count(*) FROM revisions WHERE synced = 0"));
  PS_ASSIGN_OR_RETURN(bool row, st.Step());
  return row ? st.ColumnInt64(0) : 0;
}

absl::StatusOr<int64_t> LocalStore::ResendFrom(int64_t seq) {
  absl::MutexLock lock(&mu_);
  PS_ASSIGN_OR_RETURN(Transaction txn, Transaction::BeginImmediate(&db_));
  PS_ASSIGN_OR_RETURN(Statement st,
                      db_.Prepare("UPDATE revisions SET synced = 0, outcome = NULL, "
                                  "reject_reason = NULL, server_version = NULL, superseded = 0, "
                                  "resolution = NULL WHERE origin_id = ? AND seq >= ? AND seq > 0 "
                                  "AND synced = 1"));
  PS_RETURN_IF_ERROR(st.BindText(1, origin_id_));
  PS_RETURN_IF_ERROR(st.BindInt64(2, seq));
  PS_RETURN_IF_ERROR(st.Run());
  const int64_t reopened = db_.changes();
  PS_RETURN_IF_ERROR(txn.Commit());
  return reopened;
}

absl::Status LocalStore::RecordPushResults(const std::vector<PushOutcome>& outcomes) {
  absl::MutexLock lock(&mu_);
  PS_ASSIGN_OR_RETURN(Transaction txn, Transaction::BeginImmediate(&db_));
  PS_ASSIGN_OR_RETURN(Statement st,
                      db_.Prepare("UPDATE revisions SET synced = 1, server_version = ?, "
                                  "outcome = ?, reject_reason = ?, superseded = ?, resolution = ? "
                                  "WHERE id = ?"));
  for (const PushOutcome& o : outcomes) {
    st.Reset();
    PS_RETURN_IF_ERROR(st.BindInt64(1, o.server_version));
    const char* outcome = o.kind == PushOutcome::Kind::kApplied     ? "applied"
                          : o.kind == PushOutcome::Kind::kDuplicate ? "duplicate"
                                                                    : "rejected";
    PS_RETURN_IF_ERROR(st.BindText(2, outcome));
    if (o.kind == PushOutcome::Kind::kRejected) {
      PS_RETURN_IF_ERROR(st.BindText(3, o.reject_reason));
    } else {
      PS_RETURN_IF_ERROR(st.BindNull(3));
    }
    PS_RETURN_IF_ERROR(st.BindInt64(4, o.superseded ? 1 : 0));
    if (o.resolution.empty()) {
      PS_RETURN_IF_ERROR(st.BindNull(5));
    } else {
      PS_RETURN_IF_ERROR(st.BindText(5, o.resolution));
    }
    PS_RETURN_IF_ERROR(st.BindText(6, o.revision_id));
    PS_RETURN_IF_ERROR(st.Run());
    if (db_.changes() == 0) {
      return absl::NotFoundError(absl::StrCat("no revision ", o.revision_id));
    }
  }
  // Superseded revisions: the server's row replaces what they set locally
  // (after they left the pending set, so their fields are not kept).
  std::optional<HybridLogicalClock> hlc;
  std::optional<StateRow> state;
  auto clock = [&]() -> absl::StatusOr<HybridLogicalClock*> {
    if (!state.has_value()) {
      PS_ASSIGN_OR_RETURN(StateRow loaded, LoadState());
      state = std::move(loaded);
      hlc.emplace(clock_, state->hlc);
    }
    return &*hlc;
  };
  PS_ASSIGN_OR_RETURN(Statement type_of,
                      db_.Prepare("SELECT object_type FROM revisions WHERE id = ?"));
  for (const PushOutcome& o : outcomes) {
    if (o.record.empty()) continue;
    absl::StatusOr<JsonValue> record = ParseJson(o.record);
    const JsonValue* id = record.ok() ? record->Find("id") : nullptr;
    const JsonValue* version = record.ok() ? record->Find("version") : nullptr;
    if (id == nullptr || !id->is_string() || version == nullptr || !version->AsInt64()) {
      LogWarning("server sent an unusable row for a superseded revision",
                 {{"revision_id", o.revision_id}});
      continue;
    }
    type_of.Reset();
    PS_RETURN_IF_ERROR(type_of.BindText(1, o.revision_id));
    PS_ASSIGN_OR_RETURN(bool found, type_of.Step());
    if (!found) continue;
    const ObjectTypeDef* def = FindObjectType(type_of.ColumnText(0), schema_version_);
    if (def == nullptr) continue;
    PS_ASSIGN_OR_RETURN(HybridLogicalClock * c, clock());
    PS_RETURN_IF_ERROR(ApplyRecord(def, absl::AsciiStrToLower(id->text()), *version->AsInt64(),
                                   /*hard_delete=*/false, *record, c, /*same_version=*/true)
                           .status());
  }
  PS_RETURN_IF_ERROR(ReapplyServerRows(outcomes, clock));
  if (state.has_value()) {
    state->hlc = hlc->last();
    PS_RETURN_IF_ERROR(SaveState(*state));
  }
  return txn.Commit();
}

absl::Status LocalStore::ReapplyServerRows(
    const std::vector<PushOutcome>& outcomes,
    absl::FunctionRef<absl::StatusOr<HybridLogicalClock*>()> clock) {
  {
    // Nearly always empty: nothing to do.
    PS_ASSIGN_OR_RETURN(Statement * any, db_.Cached("SELECT EXISTS (SELECT 1 FROM server_rows)"));
    PS_ASSIGN_OR_RETURN(bool row, any->Step());
    const bool empty = !row || any->ColumnInt64(0) == 0;
    any->Reset();
    if (empty) return absl::OkStatus();
  }
  // Per object answered: the newest version an answer names (0 for a
  // rejection, which wrote nothing).
  std::map<std::pair<std::string, std::string>, int64_t> answered;
  {
    PS_ASSIGN_OR_RETURN(Statement of,
                        db_.Prepare("SELECT object_type, object_id FROM revisions WHERE id = ?"));
    for (const PushOutcome& o : outcomes) {
      of.Reset();
      PS_RETURN_IF_ERROR(of.BindText(1, o.revision_id));
      PS_ASSIGN_OR_RETURN(bool found, of.Step());
      if (!found) continue;
      int64_t& newest = answered[{of.ColumnText(0), of.ColumnText(1)}];
      if (o.kind != PushOutcome::Kind::kRejected) newest = std::max(newest, o.server_version);
    }
  }
  PS_ASSIGN_OR_RETURN(Statement get,
                      db_.Prepare("SELECT version, record FROM server_rows "
                                  "WHERE object_type = ? AND object_id = ?"));
  PS_ASSIGN_OR_RETURN(Statement drop,
                      db_.Prepare("DELETE FROM server_rows WHERE object_type = ?1 AND "
                                  "object_id = ?2 AND NOT EXISTS (SELECT 1 FROM revisions "
                                  "WHERE object_type = ?1 AND object_id = ?2 AND synced = 0)"));
  for (const auto& [object, newest] : answered) {
    const auto& [object_type, object_id] = object;
    const ObjectTypeDef* def = FindObjectType(object_type, schema_version_);
    if (def == nullptr) continue;
    get.Reset();
    PS_RETURN_IF_ERROR(get.BindText(1, object_type));
    PS_RETURN_IF_ERROR(get.BindText(2, object_id));
    PS_ASSIGN_OR_RETURN(bool found, get.Step());
    if (!found) continue;
    const int64_t version = get.ColumnInt64(0);
    const bool hard_delete = get.column_kind(1) == Statement::ColumnKind::kNull;
    const std::string text = hard_delete ? "" : get.ColumnText(1);
    get.Reset();
    // Newer answers: the feed brings their version, which replaces the row.
    if (newest <= version) {
      JsonValue record = JsonValue::Object();
      if (!hard_delete) {
        absl::StatusOr<JsonValue> parsed = ParseJson(text);
        if (!parsed.ok() || !parsed->is_object()) {
          return absl::DataLossError(
              absl::StrCat("kept server row of ", object_type, " ", object_id, " is not JSON"));
        }
        record = *std::move(parsed);
      }
      PS_ASSIGN_OR_RETURN(HybridLogicalClock * hlc, clock());
      // ApplyRecord skips it if the local row is newer (a stale kept row).
      PS_RETURN_IF_ERROR(ApplyRecord(def, object_id, version, hard_delete, record, hlc,
                                     /*same_version=*/true)
                             .status());
    }
    drop.Reset();
    PS_RETURN_IF_ERROR(drop.BindText(1, object_type));
    PS_RETURN_IF_ERROR(drop.BindText(2, object_id));
    PS_RETURN_IF_ERROR(drop.Run());
  }
  return absl::OkStatus();
}

// --- Pull side ---

absl::StatusOr<LocalStore::RecordResult> LocalStore::ApplyRecord(const ObjectTypeDef* def,
                                                                 const std::string& id,
                                                                 int64_t version, bool hard_delete,
                                                                 const JsonValue& record,
                                                                 HybridLogicalClock* hlc,
                                                                 bool same_version,
                                                                 bool may_have_pending) {
  RecordResult result;
  // Invariant 5: newer versions only.
  // Statements run per pulled row are prepared once (SqliteDb::Cached).
  PS_ASSIGN_OR_RETURN(Statement * sel,
                      db_.Cached(absl::StrCat("SELECT version, ", kIndexedColumn, " FROM ",
                                              def->table, " WHERE id = ?")));
  PS_RETURN_IF_ERROR(sel->BindText(1, id));
  PS_ASSIGN_OR_RETURN(bool exists, sel->Step());
  const int64_t local_version = exists ? sel->ColumnInt64(0) : 0;
  const std::optional<std::string> local_indexed =
      exists && !sel->IsNull(1) ? std::optional<std::string>(sel->ColumnText(1)) : std::nullopt;
  sel->Reset();
  result.local_version = local_version;
  if (exists && (local_version > version || (local_version == version && !same_version))) {
    return result;
  }

  // Fields the object's pending revisions own.
  std::set<std::string> kept;
  bool has_pending = false;
  if (may_have_pending) {
    PS_ASSIGN_OR_RETURN(Statement * pend,
                        db_.Cached("SELECT id, payload FROM revisions WHERE object_type = ? AND "
                                   "object_id = ? AND synced = 0"));
    PS_RETURN_IF_ERROR(pend->BindText(1, def->object_type));
    PS_RETURN_IF_ERROR(pend->BindText(2, id));
    while (true) {
      PS_ASSIGN_OR_RETURN(bool row, pend->Step());
      if (!row) break;
      has_pending = true;
      // Invariant 11: a payload that does not decrypt fails the whole page.
      PS_ASSIGN_OR_RETURN(std::string text, OpenPayload(pend->ColumnText(0), def->object_type, id,
                                                        pend->ColumnText(1)));
      absl::StatusOr<JsonValue> payload = ParseJson(text);
      if (payload.ok()) {
        for (const JsonValue::Member& m : payload->members()) kept.insert(m.first);
      }
    }
  }
  // A pending write (or delete) also decides whether the object exists.
  if (has_pending) kept.insert("deleted");
  // Invariant 13: what is held back here is applied when the pending
  // revisions are answered.
  if (has_pending) {
    PS_ASSIGN_OR_RETURN(Statement * put,
                        db_.Cached("INSERT OR REPLACE INTO server_rows (object_type, object_id, "
                                    "version, record) VALUES (?, ?, ?, ?)"));
    PS_RETURN_IF_ERROR(put->BindText(1, def->object_type));
    PS_RETURN_IF_ERROR(put->BindText(2, id));
    PS_RETURN_IF_ERROR(put->BindInt64(3, version));
    if (hard_delete) {
      PS_RETURN_IF_ERROR(put->BindNull(4));
    } else {
      PS_RETURN_IF_ERROR(put->BindText(4, record.Serialize()));
    }
    PS_RETURN_IF_ERROR(put->Run());
  }

  if (const JsonValue* h = record.Find("hlc"); h != nullptr && h->is_string()) {
    if (absl::StatusOr<HlcTimestamp> ts = ParseHlc(h->text()); ts.ok()) {
      result.remote_ts = *ts;
      hlc->Observe(*ts);
    }
  }

  bool changed = false;
  if (hard_delete) {
    if (has_pending) {
      // The pending write will recreate the object on the server.
      return result;
    }
    PS_ASSIGN_OR_RETURN(Statement del,
                        db_.Prepare(absl::StrCat("DELETE FROM ", def->table, " WHERE id = ?")));
    PS_RETURN_IF_ERROR(del.BindText(1, id));
    PS_RETURN_IF_ERROR(del.Run());
    changed = db_.changes() > 0;
  } else {
    std::vector<const ColumnDef*> cols;
    std::vector<const JsonValue*> values;
    JsonValue extra = JsonValue::Object();  // fields this schema does not have
    for (const JsonValue::Member& m : record.members()) {
      const ColumnDef* col = def->FindColumn(m.first);
      if (col == nullptr) {
        if (!IsServerInternal(m.first)) extra.Set(m.first, m.second);
        continue;
      }
      if (col->name == "id" || col->name == "version") continue;
      if (exists && kept.count(col->name) > 0) continue;
      // Unchanged, the indexed column is left out: assigned, every pulled
      // edit would also write a random page of its index.
      if (exists && col->name == kIndexedColumn && m.second.is_string() &&
          local_indexed == m.second.text()) {
        continue;
      }
      cols.push_back(col);
      values.push_back(&m.second);
    }
    // Built in one string: this runs for every pulled or snapshot row.
    std::string sql;
    if (exists) {
      sql = absl::StrCat("UPDATE ", def->table, " SET version = ?, ", kExtraColumn, " = ?");
      for (const ColumnDef* c : cols) absl::StrAppend(&sql, ", ", c->name, " = ?");
      sql += " WHERE id = ?";
    } else {
      sql = absl::StrCat("INSERT INTO ", def->table, " (version, ", kExtraColumn);
      for (const ColumnDef* c : cols) absl::StrAppend(&sql, ", ", c->name);
      sql += ", id) VALUES (?, ?";
      for (size_t i = 0; i < cols.size(); ++i) sql += ", ?";
      sql += ", ?)";
    }
    PS_ASSIGN_OR_RETURN(Statement * up, db_.Cached(sql));
    PS_RETURN_IF_ERROR(up->BindInt64(1, version));
    if (extra.members().empty()) {
      PS_RETURN_IF_ERROR(up->BindNull(2));
    } else {
      PS_RETURN_IF_ERROR(up->BindText(2, extra.Serialize()));
    }
    int index = 3;
    for (size_t i = 0; i < cols.size(); ++i) {
      PS_RETURN_IF_ERROR(BindRemote(up, index++, *cols[i], *values[i]));
    }
    PS_RETURN_IF_ERROR(up->BindText(index, id));
    PS_RETURN_IF_ERROR(up->Run());
    changed = true;
  }

  result.taken = true;
  result.changed = changed;
  return result;
}

absl::StatusOr<bool> LocalStore::ApplyOneChange(const RemoteChange& change,
                                                HybridLogicalClock* hlc) {
  const ObjectTypeDef* def =
      FindObjectType(change.object_type.empty() ? change.table : change.object_type,
                     schema_version_);
  if (def == nullptr) {
    LogDebug("skipping change of unknown object type",
             {{"object_type", change.object_type}, {"table", change.table}});
    return false;
  }
  const bool hard_delete = change.new_record.empty() || change.new_record == "{}";
  JsonValue record = JsonValue::Object();
  if (!hard_delete) {
    absl::StatusOr<JsonValue> parsed = ParseJson(change.new_record);
    if (!parsed.ok() || !parsed->is_object()) {
      LogWarning("skipping change with a malformed new_record", {{"object_type", def->object_type},
                                                                 {"object_id", change.object_id},
                                                                 {"version", change.version}});
      return false;
    }
    record = *std::move(parsed);
  }
  std::string id = change.object_id;
  if (id.empty()) {
    if (const JsonValue* rid = record.Find("id"); rid != nullptr) id = rid->text();
  }
  if (!IsUuid(id)) {
    LogWarning("skipping change without a valid object id", {{"object_id", id}});
    return false;
  }
  id = absl::AsciiStrToLower(id);

  PS_ASSIGN_OR_RETURN(RecordResult applied,
                      ApplyRecord(def, id, change.version, hard_delete, record, hlc));
  if (!applied.taken) return false;
  const int64_t local_version = applied.local_version;
  const HlcTimestamp remote_ts = applied.remote_ts;
  const bool changed = applied.changed;

  // Record it as a synced revision (once per revision id).
  PS_ASSIGN_OR_RETURN(
      Statement rev,
      db_.Prepare("INSERT OR IGNORE INTO revisions (id, object_type, object_id, origin_id, seq, "
                  "payload, created_at, synced, op, base_version, schema_version, hlc_ms, "
                  "hlc_counter, server_version, outcome) "
                  "VALUES (?, ?, ?, ?, 0, ?, ?, 1, ?, ?, ?, ?, ?, ?, 'remote')"));
  const std::string revision_id = change.revision_id.empty() ? NewTimeOrderedUuid() : change.revision_id;
  PS_ASSIGN_OR_RETURN(std::string stored,
                      SealPayload(revision_id, def->object_type, id,
                                  hard_delete ? absl::string_view("{}") : absl::string_view(change.new_record)));
  PS_RETURN_IF_ERROR(rev.BindText(1, revision_id));
  PS_RETURN_IF_ERROR(rev.BindText(2, def->object_type));
  PS_RETURN_IF_ERROR(rev.BindText(3, id));
  PS_RETURN_IF_ERROR(rev.BindText(4, change.origin_id));
  PS_RETURN_IF_ERROR(rev.BindText(5, stored));
  PS_RETURN_IF_ERROR(rev.BindInt64(
      6, change.commit_timestamp_ms != 0 ? change.commit_timestamp_ms : clock_.NowMs()));
  const bool is_delete = change.event == ChangeEvent::kDelete;
  PS_RETURN_IF_ERROR(rev.BindText(7, is_delete ? kOpDelete : kOpUpsert));
  PS_RETURN_IF_ERROR(rev.BindInt64(8, local_version));
  PS_RETURN_IF_ERROR(rev.BindInt64(9, schema_version_));
  PS_RETURN_IF_ERROR(rev.BindInt64(10, remote_ts.physical_ms));
  PS_RETURN_IF_ERROR(rev.BindInt64(11, remote_ts.counter));
  PS_RETURN_IF_ERROR(rev.BindInt64(12, change.version));
  PS_RETURN_IF_ERROR(rev.Run());
  return changed;
}

absl::StatusOr<ApplyChangesSummary> LocalStore::ApplyRemoteChanges(
    const std::vector<RemoteChange>& changes, absl::string_view next_cursor) {
  absl::MutexLock lock(&mu_);
  PS_ASSIGN_OR_RETURN(Transaction txn, Transaction::BeginImmediate(&db_));
  PS_ASSIGN_OR_RETURN(StateRow state, LoadState());
  HybridLogicalClock hlc(clock_, state.hlc);
  ApplyChangesSummary summary;
  summary.applied_each.reserve(changes.size());
  for (const RemoteChange& change : changes) {
    PS_ASSIGN_OR_RETURN(bool applied, ApplyOneChange(change, &hlc));
    ++(applied ? summary.applied : summary.skipped);
    summary.applied_each.push_back(applied);
  }
  state.hlc = hlc.last();
  state.cursor = std::string(next_cursor);
  PS_RETURN_IF_ERROR(SaveState(state));
  PS_RETURN_IF_ERROR(txn.Commit());
  return summary;
}

// --- Snapshot ---
//
// A snapshot is applied as Begin, Rows..., Finish. The ids the snapshot
// holds are collected in a TEMP table (private to this connection and gone
// with it, so a snapshot interrupted by a crash leaves nothing behind);
// Finish removes the rows of the covered types that the snapshot did not
// hold, unless pending revisions own them, and stores the cursor. Rows
// applied by earlier chunks are ahead of the stored cursor until Finish:
// harmless, because a change is applied only when newer (invariant 5).

absl::Status LocalStore::BeginSnapshotLocked(const std::vector<std::string>& tables) {
  std::set<std::string> covered;
  if (tables.empty()) {
    for (const ObjectTypeDef& def : AllObjectTypes(schema_version_)) covered.insert(def.object_type);
  } else {
    for (const std::string& t : tables) {
      PS_ASSIGN_OR_RETURN(const ObjectTypeDef* def, LookupType(t, schema_version_));
      covered.insert(def->object_type);
    }
  }
  PS_RETURN_IF_ERROR(
      db_.Exec("CREATE TEMP TABLE IF NOT EXISTS snapshot_seen (object_type TEXT NOT NULL, "
               "object_id TEXT NOT NULL, PRIMARY KEY (object_type, object_id)) WITHOUT ROWID;"
               "DELETE FROM temp.snapshot_seen;"));
  // Invariant 8: a table empty now has no row the snapshot could lack.
  snapshot_untracked_.clear();
  for (const std::string& type : covered) {
    const ObjectTypeDef* def = FindObjectType(type, schema_version_);
    PS_ASSIGN_OR_RETURN(Statement any,
                        db_.Prepare(absl::StrCat("SELECT 1 FROM ", def->table, " LIMIT 1")));
    PS_ASSIGN_OR_RETURN(bool has_rows, any.Step());
    if (!has_rows) snapshot_untracked_.insert(type);
  }
  snapshot_types_ = std::move(covered);
  return absl::OkStatus();
}

absl::Status LocalStore::ApplySnapshotRowsLocked(const std::vector<SnapshotRows>& rows,
                                                 HybridLogicalClock* hlc,
                                                 ApplySnapshotSummary* summary) {
  if (!snapshot_types_.has_value()) {
    return absl::FailedPreconditionError("no snapshot in progress (call BeginSnapshot first)");
  }
  PS_ASSIGN_OR_RETURN(
      Statement seen,
      db_.Prepare("INSERT OR IGNORE INTO temp.snapshot_seen (object_type, object_id) VALUES (?, ?)"));
  for (const SnapshotRows& group : rows) {
    const ObjectTypeDef* def =
        FindObjectType(group.object_type.empty() ? group.table : group.object_type,
                     schema_version_);
    if (def == nullptr || snapshot_types_->count(def->object_type) == 0) {
      LogDebug("skipping snapshot rows of an unknown or uncovered type",
               {{"object_type", group.object_type}, {"table", group.table}});
      summary->skipped += static_cast<int64_t>(group.records.size());
      continue;
    }
    const bool tracked = snapshot_untracked_.count(def->object_type) == 0;
    // Whether any object of the type has a pending revision: asked once
    // here, not per row (nothing else writes during this transaction).
    PS_ASSIGN_OR_RETURN(Statement * any_pending,
                        db_.Cached("SELECT EXISTS (SELECT 1 FROM revisions "
                                   "WHERE object_type = ? AND synced = 0)"));
    PS_RETURN_IF_ERROR(any_pending->BindText(1, def->object_type));
    PS_ASSIGN_OR_RETURN(bool answered, any_pending->Step());
    const bool may_have_pending = !answered || any_pending->ColumnInt64(0) != 0;
    any_pending->Reset();
    for (const std::string& text : group.records) {
      absl::StatusOr<JsonValue> record = ParseJson(text);
      const JsonValue* id_value = record.ok() ? record->Find("id") : nullptr;
      const JsonValue* version_value = record.ok() ? record->Find("version") : nullptr;
      std::optional<int64_t> version =
          version_value != nullptr ? version_value->AsInt64() : std::nullopt;
      if (!record.ok() || !record->is_object() || id_value == nullptr ||
          !IsUuid(id_value->text()) || !version.has_value()) {
        LogWarning("skipping a malformed snapshot row", {{"object_type", def->object_type}});
        ++summary->skipped;
        continue;
      }
      const std::string id = absl::AsciiStrToLower(id_value->text());
      // Seen even when not newer: the server has it, so Finish keeps it.
      if (tracked) {
        seen.Reset();
        PS_RETURN_IF_ERROR(seen.BindText(1, def->object_type));
        PS_RETURN_IF_ERROR(seen.BindText(2, id));
        PS_RETURN_IF_ERROR(seen.Run());
      }
      PS_ASSIGN_OR_RETURN(RecordResult applied,
                          ApplyRecord(def, id, *version, /*hard_delete=*/false, *record, hlc,
                                      /*same_version=*/false, may_have_pending));
      ++(applied.taken && applied.changed ? summary->applied : summary->skipped);
    }
  }
  return absl::OkStatus();
}

absl::Status LocalStore::FinishSnapshotLocked(StateRow* state, absl::string_view cursor,
                                              ApplySnapshotSummary* summary) {
  if (!snapshot_types_.has_value()) {
    return absl::FailedPreconditionError("no snapshot in progress (call BeginSnapshot first)");
  }
  for (const std::string& type : *snapshot_types_) {
    if (snapshot_untracked_.count(type) > 0) continue;  // nothing predates the snapshot
    const ObjectTypeDef* def = FindObjectType(type, schema_version_);
    const std::string absent = absl::StrCat(
        " FROM ", def->table,
        " WHERE id NOT IN (SELECT object_id FROM temp.snapshot_seen WHERE object_type = ?1)"
        " AND id ");
    const std::string pending =
        "IN (SELECT object_id FROM revisions WHERE object_type = ?1 AND synced = 0)";
    PS_ASSIGN_OR_RETURN(Statement count,
                        db_.Prepare(absl::StrCat("SELECT count(*)", absent, pending)));
    PS_RETURN_IF_ERROR(count.BindText(1, def->object_type));
    PS_ASSIGN_OR_RETURN(bool row, count.Step());
    if (row) summary->kept += count.ColumnInt64(0);
    PS_ASSIGN_OR_RETURN(Statement del,
                        db_.Prepare(absl::StrCat("DELETE", absent, "NOT ", pending)));
    PS_RETURN_IF_ERROR(del.BindText(1, def->object_type));
    PS_RETURN_IF_ERROR(del.Run());
    summary->removed += db_.changes();
  }
  state->cursor = std::string(cursor);
  PS_RETURN_IF_ERROR(SaveState(*state));
  return absl::OkStatus();
}

absl::Status LocalStore::BeginSnapshot(const std::vector<std::string>& tables) {
  absl::MutexLock lock(&mu_);
  snapshot_types_.reset();
  return BeginSnapshotLocked(tables);
}

absl::StatusOr<ApplySnapshotSummary> LocalStore::ApplySnapshotChunk(
    const std::vector<SnapshotRows>& rows) {
  absl::MutexLock lock(&mu_);
  PS_ASSIGN_OR_RETURN(Transaction txn, Transaction::BeginImmediate(&db_));
  PS_ASSIGN_OR_RETURN(StateRow state, LoadState());
  HybridLogicalClock hlc(clock_, state.hlc);
  ApplySnapshotSummary summary;
  PS_RETURN_IF_ERROR(ApplySnapshotRowsLocked(rows, &hlc, &summary));
  state.hlc = hlc.last();
  PS_RETURN_IF_ERROR(SaveState(state));  // the HLC only; the cursor is unchanged
  PS_RETURN_IF_ERROR(txn.Commit());
  return summary;
}

absl::StatusOr<ApplySnapshotSummary> LocalStore::FinishSnapshot(absl::string_view cursor) {
  absl::MutexLock lock(&mu_);
  PS_ASSIGN_OR_RETURN(Transaction txn, Transaction::BeginImmediate(&db_));
  PS_ASSIGN_OR_RETURN(StateRow state, LoadState());
  ApplySnapshotSummary summary;
  PS_RETURN_IF_ERROR(FinishSnapshotLocked(&state, cursor, &summary));
  PS_RETURN_IF_ERROR(txn.Commit());
  snapshot_types_.reset();
  return summary;
}

void LocalStore::AbortSnapshot() {
  absl::MutexLock lock(&mu_);
  snapshot_types_.reset();
  (void)db_.Exec("DELETE FROM temp.snapshot_seen");  // absent if never begun: fine
}

absl::StatusOr<ApplySnapshotSummary> LocalStore::ApplySnapshot(
    const std::vector<SnapshotRows>& rows, absl::string_view cursor,
    const std::vector<std::string>& tables) {
  absl::MutexLock lock(&mu_);
  PS_ASSIGN_OR_RETURN(Transaction txn, Transaction::BeginImmediate(&db_));
  PS_RETURN_IF_ERROR(BeginSnapshotLocked(tables));
  PS_ASSIGN_OR_RETURN(StateRow state, LoadState());
  HybridLogicalClock hlc(clock_, state.hlc);
  ApplySnapshotSummary summary;
  absl::Status st = ApplySnapshotRowsLocked(rows, &hlc, &summary);
  if (st.ok()) {
    state.hlc = hlc.last();
    st = FinishSnapshotLocked(&state, cursor, &summary);
  }
  snapshot_types_.reset();
  PS_RETURN_IF_ERROR(st);
  PS_RETURN_IF_ERROR(txn.Commit());
  return summary;
}

absl::Status LocalStore::ResetCursor() {
  absl::MutexLock lock(&mu_);
  return db_.Exec("UPDATE sync_state SET cursor = '' WHERE id = 1");
}

// --- State ---

// --- Conflicts ---

absl::StatusOr<std::vector<Conflict>> LocalStore::ListConflicts(bool include_resolved) {
  PS_ASSIGN_OR_RETURN(const ObjectTypeDef* def, LookupType("conflict", schema_version_));
  absl::MutexLock lock(&mu_);
  PS_ASSIGN_OR_RETURN(
      Statement st,
      db_.Prepare(absl::StrCat("SELECT ", SelectColumns(*def), " FROM ", def->table,
                               " WHERE deleted = 0", include_resolved ? "" : " AND resolved = 0",
                               " ORDER BY created_at, id")));
  std::vector<Conflict> out;
  while (true) {
    PS_ASSIGN_OR_RETURN(bool row, st.Step());
    if (!row) break;
    const JsonValue r = RowToJson(*def, st);
    auto text = [&](const char* name) {
      const JsonValue* v = r.Find(name);
      return v != nullptr && v->is_string() ? v->text() : std::string();
    };
    Conflict c;
    c.id = text("id");
    c.object_type = text("object_type");
    c.object_id = text("object_id");
    c.kind = text("kind");
    c.field = text("field");
    if (const JsonValue* v = r.Find("local_value")) c.local_value = *v;
    if (const JsonValue* v = r.Find("winning_value")) c.winning_value = *v;
    c.loser_origin_id = text("loser_origin_id");
    c.winner_origin_id = text("winner_origin_id");
    c.created_at = text("created_at");
    c.mine = c.loser_origin_id == origin_id_;
    const JsonValue* resolved = r.Find("resolved");
    c.resolved = resolved != nullptr && resolved->type() == JsonValue::Type::kBool &&
                 resolved->bool_value();
    c.resolution = text("resolution");
    out.push_back(std::move(c));
  }
  return out;
}

absl::Status LocalStore::ResolveConflict(absl::string_view conflict_id, ConflictChoice choice) {
  PS_ASSIGN_OR_RETURN(const ObjectTypeDef* def, LookupType("conflict", schema_version_));
  PS_ASSIGN_OR_RETURN(std::string id, NormalizeId(conflict_id));
  {
    absl::MutexLock lock(&mu_);
    PS_ASSIGN_OR_RETURN(Transaction txn, Transaction::BeginImmediate(&db_));
    PS_ASSIGN_OR_RETURN(StateRow state, LoadState());
    PS_ASSIGN_OR_RETURN(std::optional<JsonValue> record, ReadRow(*def, id));
    const JsonValue* resolved = record.has_value() ? record->Find("resolved") : nullptr;
    if (!record.has_value() ||
        (resolved != nullptr && resolved->type() == JsonValue::Type::kBool &&
         resolved->bool_value())) {
      return absl::NotFoundError(absl::StrCat("no open conflict ", id));
    }
    if (choice == ConflictChoice::kKeepMine) {
      auto text = [&](const char* name) {
        const JsonValue* v = record->Find(name);
        return v != nullptr && v->is_string() ? v->text() : std::string();
      };
      const std::string object_type = text("object_type");
      const std::string object_id = text("object_id");
      const std::string kind = text("kind");
      const ObjectTypeDef* target = FindObjectType(object_type, schema_version_);
      if (target == nullptr) {
        return absl::FailedPreconditionError(
            absl::StrCat("conflict ", id, " is about object type \"", object_type,
                         "\", which this client does not know"));
      }
      const JsonValue* local = record->Find("local_value");
      JsonValue payload = JsonValue::Object();
      if (kind == "deleted") {
        if (local != nullptr && local->is_object()) {
          for (const JsonValue::Member& m : local->members()) {
            const ColumnDef* col = target->FindColumn(m.first);
            if (col != nullptr && !col->system && col->name != "id") payload.Set(m.first, m.second);
          }
        }
      } else {
        const std::string field = text("field");
        const ColumnDef* col = target->FindColumn(field);
        if (col == nullptr || col->system) {
          return absl::FailedPreconditionError(absl::StrCat(
              "conflict ", id, " is about field \"", field, "\", which this client cannot write"));
        }
        payload.Set(field, local != nullptr ? *local : JsonValue());
      }
      PS_RETURN_IF_ERROR(ValidateFields(*target, payload));
      // (An empty payload for "deleted" still brings the object back.)
      absl::Status st = UpsertLocked(&state, *target, object_id, payload, kind == "deleted");
      if (absl::IsNotFound(st)) {
        return absl::FailedPreconditionError(absl::StrCat(
            "conflict ", id, ": ", object_type, " ", object_id, " is not in this database"));
      }
      PS_RETURN_IF_ERROR(st);
    }
    JsonValue close = JsonValue::Object();
    close.Set("resolved", JsonValue::Bool(true));
    close.Set("resolution",
              JsonValue::String(choice == ConflictChoice::kKeepMine ? "mine" : "theirs"));
    PS_RETURN_IF_ERROR(UpsertLocked(&state, *def, id, close, /*revive=*/false));
    PS_RETURN_IF_ERROR(SaveState(state));
    PS_RETURN_IF_ERROR(txn.Commit());
  }
  NotifyLocalWrite();
  return absl::OkStatus();
}

absl::StatusOr<SyncState> LocalStore::GetSyncState() {
  absl::MutexLock lock(&mu_);
  PS_ASSIGN_OR_RETURN(Transaction txn, Transaction::BeginRead(&db_));
  PS_ASSIGN_OR_RETURN(StateRow row, LoadState());
  SyncState s;
  s.origin_id = row.origin_id;
  s.next_seq = row.next_seq;
  s.cursor = row.cursor;
  s.hlc = row.hlc;
  s.server_address = row.server_address;
  {
    PS_ASSIGN_OR_RETURN(Statement st,
                        db_.Prepare("SELECT count(*) FROM revisions WHERE synced = 0"));
    PS_ASSIGN_OR_RETURN(bool r, st.Step());
    s.pending_revisions = r ? st.ColumnInt64(0) : 0;
  }
  PS_RETURN_IF_ERROR(txn.Commit());
  return s;
}

absl::Status LocalStore::SetServerAddress(absl::string_view address) {
  absl::MutexLock lock(&mu_);
  PS_ASSIGN_OR_RETURN(Statement st,
                      db_.Prepare("UPDATE sync_state SET server_address = ? WHERE id = 1"));
  PS_RETURN_IF_ERROR(st.BindText(1, address));
  return st.Run();
}

}  // namespace pulsesync

// LocalStore: the client's SQLite database, the offline-first half of sync.
//
// Design note.
// Tables: the five synced tables (same columns as the server, see
// object_types.h), `revisions` (the spec's revision log plus what the wire
// needs), `sync_state` (one row: origin id, next seq, cursor, HLC, server
// address). Schema version is PRAGMA user_version.
//
// Invariants:
//  1. A local write (create/update/delete) and its `revisions` row
//     (synced = 0, the next seq, a fresh HLC timestamp) commit in one
//     BEGIN IMMEDIATE transaction, or neither does.
//  2. seq numbers of this origin's revisions are strictly increasing in
//     commit order; pending revisions are pushed in seq order.
//  3. A revision leaves synced = 0 only through RecordPushResults, i.e. only
//     after the server answered for it.
//  4. A page of remote changes, the revisions rows recording them, the HLC
//     advance, and the cursor that covers them commit in one transaction;
//     the cursor never gets ahead of the data.
//  5. A remote change is applied only if its version is greater than the
//     local row's; redelivery is harmless. Fields named by the object's
//     still-pending revisions keep their local values (the pending write will
//     reach the server and come back).
//  6. Local writes never change a row's `version`: it is the last server
//     version this database has seen for the row, and becomes the
//     base_version of the next local revision.
// 13. What invariant 5 holds back is not thrown away: while an object has
//     pending revisions, the last server row applied to it is kept in
//     `server_rows` (at the local row's version). When revisions leave the
//     pending set (RecordPushResults) and the server's answers are no newer
//     than that row, the row is applied again, so fields no longer owned by
//     a pending revision take the server's values. Without it, a change
//     pulled after the server applied a revision but before its answer was
//     recorded (a live stream racing the push, or a lost answer retried as
//     DUPLICATE) left the optimistic value in place at the server's version
//     for ever. An answer newer than the kept row needs nothing: the feed
//     still has that version to deliver.
//
// Revision lifecycle (column values):
//   local write           -> synced=0, outcome NULL            (WriteRevision)
//   server APPLIED        -> synced=1, outcome 'applied'       (RecordPushResults)
//   server DUPLICATE      -> synced=1, outcome 'duplicate'     (RecordPushResults)
//   server REJECTED       -> synced=1, outcome 'rejected', reject_reason
//   remote change pulled  -> synced=1, outcome 'remote', seq 0 (ApplyRemoteChanges)
//   snapshot row          -> nothing: a snapshot is state, not an edit, so
//                            it records no revision (ApplySnapshot)
//
// Snapshots (initial sync, re-snapshot after the server compacted its log):
//  7. A snapshot row is applied with the rules of a remote change
//     (invariant 5: newer versions only, pending fields kept).
//  8. Rows of the covered types that the snapshot does not hold are removed
//     (they were deleted on the server, or left the caller's scope), except
//     rows with pending revisions, which the push will bring back. Only rows
//     that were there when the snapshot began can be such rows: a type whose
//     table was empty then (a new client's initial sync) removes nothing, and
//     which ids the snapshot held is not recorded for it.
//  9. The snapshot's cursor is stored only in the transaction that performs
//     8, i.e. with the last chunk; earlier chunks may commit before it
//     (safe by invariant 5).
//
// Encryption at rest (LocalStoreOptions::keyring; payload_crypto.h):
// 10. With a keyring, every revisions.payload this store writes (local
//     writes in WriteRevision, pulled changes in ApplyOneChange) is an
//     AES-256-GCM envelope bound to its row (revision id, object type,
//     object id); it is decrypted only where it is used (PendingRevisions
//     for the push, ApplyRecord for the fields of pending writes).
// 11. A payload that does not decrypt (tampered, moved to another row,
//     unknown key) fails the whole call with kDataLoss: nothing is pushed,
//     nothing of the page is applied, no cursor moves. A ciphertext is never
//     handed out as a payload: without a keyring, an encrypted payload is
//     kFailedPrecondition.
// 12. Plaintext payloads (written before encryption was turned on) stay
//     readable. Open re-encrypts them, and payloads under a non-current key,
//     with the current key (ReencryptPayloads), so that after one open with
//     the new key first and the old one still present, the old key may be
//     dropped. A payload that cannot be decrypted is left as it is (and
//     reported when it is needed). Limitation: a plaintext payload planted
//     by someone who can write the file cannot be told from a legacy one;
//     such a writer could as well edit the (plaintext) synced tables. The
//     envelopes protect the payloads' confidentiality and the integrity of
//     each encrypted payload.
// Only the payloads are encrypted, as the spec asks: the synced tables
// (teams, tasks, ...), sync_state and the other revisions columns (ids,
// types, clocks, outcomes, reject reasons) stay plaintext so that reads and
// queries work; an app that must hide the rows themselves needs an
// encrypted file system or database (e.g. SQLCipher) beneath.
//
// Thread safety: thread-safe; calls are serialized by an internal mutex.
// The local-write listener is called on the thread that made the write.
// Several processes may share one database file (WAL, busy timeout, write
// transactions take the lock up front); a write that cannot get the lock in
// time fails with kUnavailable.
#ifndef PULSESYNC_CLIENT_STORE_LOCAL_STORE_H_
#define PULSESYNC_CLIENT_STORE_LOCAL_STORE_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/functional/function_ref.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "client/store/hlc.h"
#include "client/store/object_types.h"
#include "client/store/payload_crypto.h"
#include "client/store/sqlite.h"
#include "common/clock.h"
#include "common/json.h"

namespace pulsesync {

struct LocalStoreOptions {
  // Create the file (and a new origin id) if it does not exist.
  bool create_if_missing = true;
  // The schema version the app is built for (object_types.h): the columns it
  // reads and writes, sent with every revision so that the server upgrades
  // an older version's payloads. Fields of a newer schema that arrive from
  // the server are kept beside the row and returned by Get and List; opening
  // the store later as the newer version moves them into their columns.
  int schema_version = kClientSchemaVersion;
  // The origin id of a database created now; empty = a new random UUID.
  // For tools and tests that need reproducible origins (the origin id breaks
  // ties of equal clocks). Ignored for an existing database.
  std::string origin_id;
  int busy_timeout_ms = 5000;
  // Largest size of the database file in bytes (PRAGMA max_page_count,
  // rounded down to whole pages; the WAL file comes on top until a
  // checkpoint); 0 = no limit but the disk's. A write that would grow the
  // database past it, like one on a full disk, fails with
  // kResourceExhausted and stores nothing; what is stored stays intact.
  // Never below the file's current size.
  int64_t max_size_bytes = 0;
  // Time source for HLC, created_at and updated_at; must outlive the store.
  // nullptr = WallClock::Real().
  const WallClock* clock = nullptr;
  // Encrypts revision payloads at rest (invariants 10-12); nullptr or an
  // empty keyring = payloads are written as plaintext JSON.
  std::shared_ptr<const Keyring> keyring;
  // With a keyring: Open calls ReencryptPayloads (invariant 12).
  bool reencrypt_on_open = true;
};

struct ReencryptSummary {
  int64_t rewritten = 0;  // plaintext or old-key payloads now under the current key
  int64_t failed = 0;     // could not be decrypted; left unchanged (see the log)
};

enum class RevisionOp { kUpsert, kDelete };

// One write of a batch (LocalStore::Apply): what Create, Update or Delete
// would do with the same arguments.
struct LocalWrite {
  enum class Kind { kCreate, kUpdate, kDelete };
  Kind kind = Kind::kCreate;
  std::string object_type;
  std::string id;     // kUpdate, kDelete (kCreate: "id" in `fields`, or a new UUID)
  JsonValue fields;   // kCreate, kUpdate

  static LocalWrite Create(std::string object_type, JsonValue fields) {
    return {Kind::kCreate, std::move(object_type), "", std::move(fields)};
  }
  static LocalWrite Update(std::string object_type, std::string id, JsonValue fields) {
    return {Kind::kUpdate, std::move(object_type), std::move(id), std::move(fields)};
  }
  static LocalWrite Delete(std::string object_type, std::string id) {
    return {Kind::kDelete, std::move(object_type), std::move(id), JsonValue::Object()};
  }
};

// A revision waiting to be pushed (synced = 0).
struct PendingRevision {
  std::string id;
  std::string object_type;
  std::string object_id;
  std::string origin_id;
  int64_t seq = 0;
  RevisionOp op = RevisionOp::kUpsert;
  std::string payload;  // JSON object text; "{}" for deletes
  int64_t created_at_ms = 0;
  int64_t base_version = 0;
  int schema_version = kClientSchemaVersion;
  HlcTimestamp clock;
};

// What the server said about one pushed revision.
struct PushOutcome {
  enum class Kind { kApplied, kDuplicate, kRejected };
  std::string revision_id;
  Kind kind = Kind::kApplied;
  int64_t server_version = 0;
  bool superseded = false;
  std::string reject_reason;
  // How the server merged it: "applied", "merged", "conflict", "recovered",
  // "superseded", "tombstoned" (sync.proto, RevisionResult.Resolution).
  std::string resolution;
  // Superseded revisions: the object's current server row (JSON); it
  // replaces the local values this revision had set (RecordPushResults).
  std::string record;
};

// A conflict record (docs/CONFLICTS.md): a value that lost to a concurrent
// edit of the same field, or an edit that lost to a later delete. The
// server makes them; they reach every client that sees the object.
struct Conflict {
  std::string id;
  std::string object_type;
  std::string object_id;
  std::string kind;       // "field" or "deleted"
  std::string field;      // kind "field": the field; empty for "deleted"
  JsonValue local_value;  // the losing value ("deleted": the edit's fields)
  JsonValue winning_value;  // the value the object holds (null for "deleted")
  std::string loser_origin_id;   // the device whose value lost
  std::string winner_origin_id;  // the device (or "" for SQL) whose value won
  std::string created_at;
  bool mine = false;      // the losing value was this device's
  bool resolved = false;
  std::string resolution;  // "theirs" or "mine" once resolved
};

enum class ConflictChoice {
  kKeepTheirs,  // the winning value stays; the record is closed
  kKeepMine,    // the losing value is written again (a new revision), then closed
};

enum class ChangeEvent { kInsert, kUpdate, kDelete };

// One committed server write, as PullChanges delivers it (wire-independent).
struct RemoteChange {
  std::string object_type;  // e.g. "task"; if empty, `table` is used
  std::string table;        // e.g. "tasks"
  ChangeEvent event = ChangeEvent::kUpdate;
  std::string object_id;
  int64_t version = 0;
  std::string new_record;  // JSON object; empty for a hard SQL delete
  std::string origin_id;
  std::string revision_id;  // empty for writes made directly in SQL
  int64_t commit_timestamp_ms = 0;
};

struct ApplyChangesSummary {
  int64_t applied = 0;  // changed a local row
  int64_t skipped = 0;  // not newer than the local row, or unknown type
  // Per change, in the order given: true if it was counted in `applied`.
  std::vector<bool> applied_each;
};

// Rows of one table from a Snapshot (wire-independent).
struct SnapshotRows {
  std::string object_type;  // e.g. "task"; if empty, `table` is used
  std::string table;        // e.g. "tasks"
  // JSON objects: whole rows with their system columns ("id" and "version"
  // are required; a row without them is skipped).
  std::vector<std::string> records;
};

struct ApplySnapshotSummary {
  int64_t applied = 0;  // inserted or updated a local row
  int64_t skipped = 0;  // not newer than the local row, unknown type, malformed
  int64_t removed = 0;  // local rows the snapshot no longer holds, deleted
  int64_t kept = 0;     // rows the snapshot does not hold, kept for pending revisions
};

struct SyncState {
  std::string origin_id;
  int64_t next_seq = 1;
  std::string cursor;  // empty = start of the log
  HlcTimestamp hlc;
  std::string server_address;  // empty when never recorded
  int64_t pending_revisions = 0;
};

struct ReadOptions {
  bool include_deleted = false;
};

class LocalStore {
 public:
  // Opens the database at `path`, creating or upgrading its schema.
  // Errors: kNotFound if missing and !create_if_missing; kFailedPrecondition
  // if the file was written by a newer client (higher user_version); other
  // SQLite errors as translated by sqlite::StatusFromSqlite.
  [[nodiscard]] static absl::StatusOr<std::unique_ptr<LocalStore>> Open(
      const std::string& path, LocalStoreOptions options = {});

  LocalStore(const LocalStore&) = delete;
  LocalStore& operator=(const LocalStore&) = delete;
  ~LocalStore();

  // This database's origin id (chosen when the file was created; stable).
  const std::string& origin_id() const { return origin_id_; }
  // True if Open created the database (and the origin id) just now.
  bool newly_created() const { return newly_created_; }

  // --- Local writes (invariant 1) ---

  // Creates an object from `fields` (a JSON object of non-system columns;
  // "id" may be given, else a new UUID is chosen) and records an UPSERT
  // revision whose payload is the fields set (plus created_at when not given).
  // Returns the object id.
  // Errors: kInvalidArgument for an unknown type, unknown or system field,
  // a value of the wrong JSON type, a missing required field (each message
  // names the bad part); kAlreadyExists if the id is taken. Nothing is
  // written on error.
  [[nodiscard]] absl::StatusOr<std::string> Create(absl::string_view object_type,
                                                   const JsonValue& fields);

  // Sets some fields of an existing, not deleted object and records an
  // UPSERT revision with exactly those fields.
  // Errors: as Create; kNotFound if there is no such live object.
  [[nodiscard]] absl::Status Update(absl::string_view object_type, absl::string_view id,
                                    const JsonValue& fields);

  // Tombstones an object (deleted = 1) and records a DELETE revision.
  // Deleting an already deleted object is a no-op.
  // Errors: kInvalidArgument for an unknown type; kNotFound if no such row.
  [[nodiscard]] absl::Status Delete(absl::string_view object_type, absl::string_view id);

  // Many writes in one transaction (invariant 1 for all of them): each
  // writes its row and records its revision as Create, Update or Delete
  // would, in order (a later write sees the earlier ones: create, then
  // update the same object), with consecutive seqs. Returns the object id
  // of each write. Errors: those of Create, Update and Delete, the message
  // prefixed with the failing write's index ("write 3: ..."); nothing of the
  // batch is written then. The local-write listener is called once.
  [[nodiscard]] absl::StatusOr<std::vector<std::string>> Apply(
      const std::vector<LocalWrite>& writes);

  // --- Reads (see local writes at once) ---

  // The row as a JSON object (all columns, system ones included, typed by
  // column), or nullopt when absent (or a tombstone, unless asked).
  [[nodiscard]] absl::StatusOr<std::optional<JsonValue>> Get(absl::string_view object_type,
                                                             absl::string_view id,
                                                             ReadOptions options = {});
  // All rows of a type ordered by created_at, then id.
  [[nodiscard]] absl::StatusOr<std::vector<JsonValue>> List(absl::string_view object_type,
                                                            ReadOptions options = {});

  // --- Push side ---

  // Up to `limit` pending revisions in seq order (invariant 2), payloads
  // decrypted. Errors: kDataLoss if a payload does not decrypt (invariant
  // 11; the message names the revision); kFailedPrecondition if a payload is
  // encrypted and the store has no keyring.
  // `after_seq`: only revisions with a greater seq (the batch after one
  // that is on its way to the server).
  [[nodiscard]] absl::StatusOr<std::vector<PendingRevision>> PendingRevisions(
      int limit, int64_t after_seq = 0);
  [[nodiscard]] absl::StatusOr<int64_t> PendingCount();

  // Marks each revision synced and stores the server's answer, all in one
  // transaction. A superseded revision's `record` is applied like a remote
  // change, also at the version the row already has (the server wrote
  // nothing new, but the row holds this revision's optimistic values).
  // Unknown revision ids are kNotFound and nothing is recorded.
  [[nodiscard]] absl::Status RecordPushResults(const std::vector<PushOutcome>& outcomes);

  // Makes this origin's answered revisions from `seq` on pending again, in
  // one transaction, for a server that lost them (it answered OUT_OF_ORDER
  // expecting `seq`). Their outcomes are cleared; returns how many.
  [[nodiscard]] absl::StatusOr<int64_t> ResendFrom(int64_t seq);

  // --- Pull side ---

  // Applies one page of remote changes and stores `next_cursor`, in one
  // transaction (invariants 4, 5). On error nothing is applied and the
  // cursor is unchanged; kDataLoss if the payload of a pending revision of
  // a changed object does not decrypt (invariant 11).
  [[nodiscard]] absl::StatusOr<ApplyChangesSummary> ApplyRemoteChanges(
      const std::vector<RemoteChange>& changes, absl::string_view next_cursor);

  // --- Snapshot (invariants 7-9) ---

  // Applies a whole snapshot and stores `cursor`, in one transaction.
  // `tables`: the object types or table names the snapshot covers (as in
  // SnapshotRequest.tables); empty = all. Only covered types lose rows the
  // snapshot lacks; rows of other types in `rows` are skipped.
  // Errors: kInvalidArgument for an unknown name in `tables`; SQLite errors.
  // On error nothing is applied and the cursor is unchanged.
  [[nodiscard]] absl::StatusOr<ApplySnapshotSummary> ApplySnapshot(
      const std::vector<SnapshotRows>& rows, absl::string_view cursor,
      const std::vector<std::string>& tables = {});

  // The same in chunks, for a snapshot too big to hold: BeginSnapshot, then
  // ApplySnapshotChunk (one transaction each; removed/kept stay 0), then
  // FinishSnapshot (removes absent rows and stores the cursor, one
  // transaction). Beginning again discards an unfinished snapshot;
  // AbortSnapshot discards it without starting another. Chunk or Finish
  // without Begin is kFailedPrecondition. A failed Finish leaves the
  // snapshot open (it may be retried or aborted).
  [[nodiscard]] absl::Status BeginSnapshot(const std::vector<std::string>& tables = {});
  [[nodiscard]] absl::StatusOr<ApplySnapshotSummary> ApplySnapshotChunk(
      const std::vector<SnapshotRows>& rows);
  [[nodiscard]] absl::StatusOr<ApplySnapshotSummary> FinishSnapshot(absl::string_view cursor);
  void AbortSnapshot();

  // Forgets the cursor, so the next pull starts from the beginning of the
  // log (after the server refused the cursor; invariant 5 makes it safe).
  [[nodiscard]] absl::Status ResetCursor();

  // --- Encryption at rest ---

  // Rewrites, in one transaction, every payload that is plaintext or under
  // another key than the keyring's current one, encrypted with the current
  // key (invariant 12). Without a keyring: nothing to do. Payloads that do
  // not decrypt are counted in `failed` and left unchanged.
  [[nodiscard]] absl::StatusOr<ReencryptSummary> ReencryptPayloads();
  // The key id new payloads are encrypted with; "" = plaintext.
  std::string payload_key_id() const;

  // --- Conflicts (docs/CONFLICTS.md) ---

  // Conflict records of objects this database holds, oldest first; open
  // ones only unless `include_resolved`.
  [[nodiscard]] absl::StatusOr<std::vector<Conflict>> ListConflicts(bool include_resolved = false);

  // Resolves a conflict record, in one transaction: kKeepTheirs closes it;
  // kKeepMine also writes its losing value again as a new revision of the
  // object (whose later clock wins), bringing a deleted object back for
  // kind "deleted". The record's close is itself a revision that syncs.
  // Errors: kNotFound (no such open record), kFailedPrecondition (kKeepMine
  // and the object is not in this database), as Update for the object.
  [[nodiscard]] absl::Status ResolveConflict(absl::string_view conflict_id, ConflictChoice choice);

  // The schema version this store acts as (LocalStoreOptions).
  int schema_version() const { return schema_version_; }

  // --- State ---

  [[nodiscard]] absl::StatusOr<SyncState> GetSyncState();
  [[nodiscard]] absl::Status SetServerAddress(absl::string_view address);

  // --- Notifications ---

  // Sets the function called after each successful Create, Update or Delete
  // (after its transaction committed; rarely also after one that changed
  // nothing, e.g. deleting a tombstone), on the thread that made the write,
  // with no store lock held. Replaces the previous listener; nullptr clears
  // it. Returns only when no call of the previous listener is in progress,
  // so its owner may be destroyed afterwards. The listener must be quick
  // and must not write to this store or call SetLocalWriteListener.
  void SetLocalWriteListener(std::function<void()> listener);

 private:
  LocalStore(sqlite::SqliteDb db, const WallClock& clock, std::string origin_id,
             bool newly_created, std::shared_ptr<const Keyring> keyring, int schema_version);


  // The payload as stored: an envelope with a keyring, else `plaintext`.
  absl::StatusOr<std::string> SealPayload(absl::string_view revision_id,
                                          absl::string_view object_type,
                                          absl::string_view object_id,
                                          absl::string_view plaintext) const;
  // The plaintext of a stored payload (invariant 11 for the errors).
  absl::StatusOr<std::string> OpenPayload(absl::string_view revision_id,
                                          absl::string_view object_type,
                                          absl::string_view object_id,
                                          std::string stored) const;

  struct StateRow;
  absl::StatusOr<StateRow> LoadState() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // A local row's server version and tombstone flag; nullopt if absent.
  struct RowState {
    int64_t version = 0;
    bool deleted = false;
  };
  absl::StatusOr<std::optional<RowState>> ReadRowState(const ObjectTypeDef& def,
                                                       const std::string& id)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status SaveState(const StateRow& state) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Sets `payload`'s fields (validated, no "id") of object `id` and records
  // the upsert revision, in the caller's transaction. A tombstone is
  // kNotFound unless `revive`, which brings it back (deleted = 0).
  absl::Status UpsertLocked(StateRow* state, const ObjectTypeDef& def, const std::string& id,
                            const JsonValue& payload, bool revive)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Inserts the pending revision for a local write; `state` is advanced.
  absl::Status WriteRevision(StateRow* state, const ObjectTypeDef& type,
                             absl::string_view object_id, RevisionOp op, const std::string& payload,
                             int64_t base_version, const std::string& revision_id, HlcTimestamp ts)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::StatusOr<std::optional<JsonValue>> ReadRow(const ObjectTypeDef& type, absl::string_view id)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::StatusOr<bool> ApplyOneChange(const RemoteChange& change, HybridLogicalClock* hlc)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  // What ApplyRecord did with one server row.
  struct RecordResult {
    bool taken = false;    // newer than the local row, and not held back by a pending write
    bool changed = false;  // a local row was written
    int64_t local_version = 0;  // the local row's version before (0 = none)
    HlcTimestamp remote_ts;     // the row's clock, if it had one
  };
  // Invariant 5 for one row of `def` at `version` (`record` the whole row,
  // ignored for a hard delete).
  // `same_version`: also when the local row has `version` already.
  // `may_have_pending`: false when the caller knows that no object of the
  // type has a pending revision (in this transaction): none is looked up.
  absl::StatusOr<RecordResult> ApplyRecord(const ObjectTypeDef* def, const std::string& id,
                                           int64_t version, bool hard_delete,
                                           const JsonValue& record, HybridLogicalClock* hlc,
                                           bool same_version = false,
                                           bool may_have_pending = true)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  // Invariant 13, after `outcomes` were recorded. `clock` gives the HLC
  // that observes the rows' clocks.
  absl::Status ReapplyServerRows(const std::vector<PushOutcome>& outcomes,
                                 absl::FunctionRef<absl::StatusOr<HybridLogicalClock*>()> clock)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  absl::Status BeginSnapshotLocked(const std::vector<std::string>& tables)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status ApplySnapshotRowsLocked(const std::vector<SnapshotRows>& rows,
                                       HybridLogicalClock* hlc, ApplySnapshotSummary* summary)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status FinishSnapshotLocked(StateRow* state, absl::string_view cursor,
                                    ApplySnapshotSummary* summary)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  // A local write checked against the schema (no lock, no transaction).
  struct PlannedWrite {
    LocalWrite::Kind kind;
    const ObjectTypeDef* def;
    std::string id;
    JsonValue payload;  // the revision's fields (kCreate: with created_at)
    int64_t now_ms = 0;  // when it was planned: created_at and updated_at of a create
  };
  absl::StatusOr<PlannedWrite> PlanWrite(const LocalWrite& write) const;
  // Writes the row and its revision in the caller's transaction.
  absl::Status WriteLocked(StateRow* state, const PlannedWrite& write)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Plans, then writes `writes` in one transaction; the object ids.
  absl::StatusOr<std::vector<std::string>> WriteImpl(const std::vector<LocalWrite>& writes,
                                                     bool name_index);
  void NotifyLocalWrite() ABSL_LOCKS_EXCLUDED(listener_mu_);

  const int schema_version_;
  absl::Mutex mu_;
  sqlite::SqliteDb db_ ABSL_GUARDED_BY(mu_);
  // The types of the snapshot in progress (Begin..Finish); nullopt = none.
  std::optional<std::set<std::string>> snapshot_types_ ABSL_GUARDED_BY(mu_);
  // Of those, the types whose tables were empty when it began (invariant 8).
  std::set<std::string> snapshot_untracked_ ABSL_GUARDED_BY(mu_);
  absl::Mutex listener_mu_;
  std::function<void()> listener_ ABSL_GUARDED_BY(listener_mu_);
  const WallClock& clock_;
  // Immutable; nullptr = payloads in plaintext.
  const std::shared_ptr<const Keyring> keyring_;
  const std::string origin_id_;
  const bool newly_created_;
};

// Formats ms since the epoch as PostgreSQL prints a timestamptz in UTC
// ("2026-11-24T22:15:57.123+00:00"), so locally made and pulled timestamps
// compare alike.
std::string FormatTimestamp(int64_t unix_ms);

}  // namespace pulsesync

#endif  // PULSESYNC_CLIENT_STORE_LOCAL_STORE_H_

// SyncEngine: moves revisions between a LocalStore and a server.
//
// Design note (the upload and download state machines).
//  Push: pending := store.PendingRevisions(batch_size) in seq order
//        -> ApplyRevisions(batch) -> store.RecordPushResults(answers)
//        -> repeat until no revision is pending (pipelined: invariant 6).
//  Pull: cursor := store cursor -> PullChanges(cursor) ->
//        store.ApplyRemoteChanges(page, next_cursor) -> repeat while has_more.
//  Snapshot: Snapshot(request) -> rows, then the snapshot's cursor ->
//        store.ApplySnapshot (or BeginSnapshot, ApplySnapshotChunk...,
//        FinishSnapshot(cursor) when big).
// Invariants:
//  1. A revision is marked synced only after the server answered for it.
//     A failed call (or a lost answer) leaves the batch pending; sending it
//     again is harmless because the server is idempotent by revision id.
//  2. REJECTED revisions are marked synced (with the reason kept) because
//     resending cannot make them valid; they are reported in PushSummary.
//  3. A page of changes and the cursor after it are stored together
//     (LocalStore invariant 4), so an interrupted pull resumes correctly.
//  4. If the server answers a pull with re-snapshot (IsResnapshot: the
//     cursor is older than the retained log, from another database, or
//     empty once the log was compacted), Pull takes a Snapshot of every
//     table and pulls on from the snapshot's cursor; at most once per Pull,
//     so a server that keeps asking cannot loop it. Any other
//     FAILED_PRECONDITION is returned as is.
//  5. A snapshot stores its cursor only with its last rows (LocalStore
//     invariant 9): a failed or cancelled snapshot leaves the old cursor,
//     and rows with pending revisions survive it (LocalStore invariant 8),
//     so local edits made offline are still pushed afterwards.
//  6. A push keeps one batch on its way to the server at a time, and
//     overlaps the rest: the next batch is read from the store while the
//     server applies one, and sent as soon as its answer is in, before that
//     answer is recorded (unless the server held revisions back). The calls
//     are the same, in the same order, as one batch after the other.
//
// State table (Pull):
//   state        event                                next (function)
//   pulling      page, has_more                       pulling (PullLocked)
//   pulling      page, !has_more                      done
//   pulling      re-snapshot, none taken yet          snapshot (SnapshotLocked)
//   snapshot     applied                              pulling from its cursor
//   pulling      re-snapshot, one taken already       failed (answer returned as is)
//   any          other error                          failed (returned as is)
//
// Thread safety: thread-safe. Pushes are serialized with each other, and
// pulls and snapshots (the writers of the cursor) with each other, by two
// internal mutexes; a push may run while a pull or snapshot runs (the store
// is thread-safe; a row whose revision a snapshot sees pushed before it
// finishes may be removed, and comes back from the log after the snapshot's
// cursor). Sync holds both. Callbacks (CancelRegistrar) run on the calling
// thread with the pull mutex held.
// Store and transport are not owned and must outlive the engine.
#ifndef PULSESYNC_CLIENT_CORE_SYNC_ENGINE_H_
#define PULSESYNC_CLIENT_CORE_SYNC_ENGINE_H_

#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "client/core/transport.h"
#include "client/store/local_store.h"
#include "pulsesync/v1/sync.pb.h"

namespace pulsesync {

// True for the server's "start over" answer to a cursor it cannot continue
// from: FAILED_PRECONDITION with a message that starts with "re-snapshot"
// (sync.proto). The client must then Snapshot and follow from its cursor.
bool IsResnapshot(const absl::Status& status);

// How a database with an empty cursor (never synced, or reset) catches up.
enum class InitialSync {
  // A Snapshot first, then the log from its cursor.
  kSnapshot,
  // The log from its start (cheap while the server's log is complete). The
  // server answers re-snapshot once it compacted the log, and the client
  // snapshots then.
  kLogStart,
};

// What a Snapshot asks for and how it is applied (SnapshotRequest fields).
struct SnapshotRequestOptions {
  // Object types or table names; empty = all. Only these lose local rows
  // the snapshot lacks.
  std::vector<std::string> tables;
  bool include_deleted = false;
  uint32_t rows_per_message = 0;  // 0 = the server's default
  // A snapshot bigger than this many rows is applied in chunks (one
  // transaction each; the cursor goes with the last), else in one.
  int64_t chunk_rows = 5000;
};

struct SnapshotSummary {
  ApplySnapshotSummary rows;  // what applying it did to the local rows
  std::string cursor;         // the snapshot's cursor, now stored
};

// Receives the function that cancels a call in flight (thread-safe; it may
// be called from any thread, any number of times, until it is withdrawn),
// and later an empty function that withdraws it. Both on the thread making
// the call; the empty one comes before the call's stream is destroyed.
using CancelRegistrar = std::function<void(std::function<void()> cancel)>;

// How far a Push or Pull has come (SyncEngineOptions::on_progress).
struct SyncProgress {
  enum class Phase { kPush, kPull };
  Phase phase = Phase::kPush;
  // Push: revisions the server answered for so far in this Push. Pull:
  // changes received (and applied with their cursor) so far in this Pull.
  int64_t done = 0;
  // Push: revisions pending when the Push started (local writes made during
  // it are pushed too, so `done` may pass it). Pull: 0 (unknown: the log
  // does not say how much is left).
  int64_t total = 0;
  int64_t batches = 0;  // push batches answered, or pull pages applied
};

struct SyncEngineOptions {
  // Revisions per ApplyRevisions call (the spec's 100).
  int push_batch_size = 100;
  // Send batches Brotli-compressed (PAYLOAD_ENCODING_BROTLI) where it pays:
  // a batch smaller than compress_min_bytes serialized, or one that
  // compresses by less than a tenth, goes plain. bench/micro_bench measured,
  // on TeamPulse batches: 1 revision saves ~12%, 10 ~57%, 100 ~67% at quality
  // 3 (0.15 ms per 100) against ~69% at 5 (0.4 ms); see docs/PERFORMANCE.md.
  bool compress_push = true;
  size_t compress_min_bytes = 1024;
  int compress_quality = 3;
  // Ask for Brotli-compressed pull pages.
  bool accept_compressed_pull = true;
  // Changes per PullChanges page; 0 = the server's default.
  uint32_t pull_page_limit = 0;
  // Largest decompressed pull page accepted.
  size_t max_decompressed_page_bytes = 256u << 20;
  // A Pull with an empty cursor starts from the log (default) or with a
  // snapshot. Either way a re-snapshot answer takes one (invariant 4).
  InitialSync pull_initial_sync = InitialSync::kLogStart;
  // The snapshots Pull takes (always of every table, without tombstones).
  uint32_t snapshot_rows_per_message = 0;  // 0 = the server's default
  int64_t snapshot_chunk_rows = 5000;
  // Called after each push batch is recorded and each pull page is applied,
  // on the thread running the Push or Pull, with that engine mutex held (it
  // must not call the engine; it may read the store). For progress bars
  // and logs of a long catch-up. Costs one count of pending revisions per
  // Push when set.
  std::function<void(const SyncProgress&)> on_progress;
};

struct RejectedRevision {
  std::string revision_id;
  std::string object_type;
  std::string object_id;
  std::string reason;
};

struct PushSummary {
  int64_t pushed = 0;      // revisions the server answered for
  int64_t applied = 0;     // of which APPLIED (superseded included)
  int64_t superseded = 0;  // APPLIED but a later edit already held the object
  int64_t duplicate = 0;
  int64_t rejected = 0;
  // APPLIED or DUPLICATE with RESOLUTION_CONFLICT: a conflict record was
  // made (LocalStore::ListConflicts shows it once pulled).
  int64_t conflicts = 0;
  // Revisions this database counted as answered but the server had lost
  // (it expected an earlier seq): sent again.
  int64_t resent = 0;
  int64_t batches = 0;
  std::vector<RejectedRevision> rejections;
};

struct PullSummary {
  int64_t pulled = 0;   // changes received
  int64_t applied = 0;  // changed a local row
  int64_t skipped = 0;  // already had that version (or newer), or unknown type
  int64_t pages = 0;
  // A snapshot was taken (re-snapshot answer, or kSnapshot on an empty
  // cursor) and the pull went on from its cursor; `snapshot` says what it
  // did. Pages counted above include those pulled before it.
  bool snapshotted = false;
  SnapshotSummary snapshot;
};

struct SyncSummary {
  PushSummary push;
  PullSummary pull;
};

class SyncEngine {
 public:
  SyncEngine(LocalStore* store, Transport* transport, SyncEngineOptions options = {});
  SyncEngine(const SyncEngine&) = delete;
  SyncEngine& operator=(const SyncEngine&) = delete;

  // Sends every pending revision, in seq order, a batch at a time.
  // On error (transport or store), returns it; batches answered before the
  // error stay recorded, the failed batch and later ones stay pending.
  [[nodiscard]] absl::StatusOr<PushSummary> Push();

  // Pulls and applies changes from the stored cursor until has_more is false.
  // A re-snapshot answer takes a snapshot and pulls on from its cursor, once
  // (invariant 4). On error, pages (and a snapshot) applied before it stay
  // applied with their cursor. Errors: the transport's or the store's; a
  // second re-snapshot answer in the same Pull comes back as is
  // (FAILED_PRECONDITION "re-snapshot: ..."), as does any other
  // FAILED_PRECONDITION.
  [[nodiscard]] absl::StatusOr<PullSummary> Pull();

  // Downloads a snapshot and applies it to the store with its cursor
  // (invariant 5): the database then holds the server's state at that
  // cursor (for the covered tables), except rows with pending revisions.
  // `register_cancel`, if set, receives the means to cancel the download
  // from another thread (see CancelRegistrar).
  // Errors: the transport's (kCancelled after a cancel); kDataLoss for rows
  // after the cursor; kUnavailable if the stream ended without a cursor; the
  // store's. On error the stored cursor is unchanged; rows of a big
  // snapshot's earlier chunks may stay applied (harmless: newer versions
  // only).
  [[nodiscard]] absl::StatusOr<SnapshotSummary> Snapshot(
      const SnapshotRequestOptions& options, const CancelRegistrar& register_cancel = {});

  // Push, then Pull (so the pull brings back the server's view of what was
  // just pushed). Stops at the first error.
  [[nodiscard]] absl::StatusOr<SyncSummary> Sync();

 private:
  absl::StatusOr<PushSummary> PushLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(push_mu_);
  absl::StatusOr<PullSummary> PullLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(pull_mu_);
  absl::StatusOr<SnapshotSummary> SnapshotLocked(const SnapshotRequestOptions& options,
                                                 const CancelRegistrar& register_cancel)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(pull_mu_);

  // Lock order: push_mu_ before pull_mu_ (Sync takes both).
  absl::Mutex push_mu_ ABSL_ACQUIRED_BEFORE(pull_mu_);
  absl::Mutex pull_mu_;
  LocalStore* const store_;
  Transport* const transport_;
  const SyncEngineOptions options_;
};

// Conversions between the store's types and the wire's (exposed for tests).
v1::Revision ToProto(const PendingRevision& revision);
RemoteChange FromProto(const v1::Change& change);

}  // namespace pulsesync

#endif  // PULSESYNC_CLIENT_CORE_SYNC_ENGINE_H_

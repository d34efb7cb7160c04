// SyncEngine: moves revisions between a LocalStore and a server.
//
// Design note (the upload and download state machines).
//  Push: pending := store.PendingRevisions(batch_size) in seq order
//        -> ApplyRevisions(batch) -> store.RecordPushResults(answers)
//        -> repeat until no revision is pending.
//  Pull: cursor := store cursor -> PullChanges(cursor) ->
//        store.ApplyRemoteChanges(page, next_cursor) -> repeat while has_more.
// Invariants:
//  1. A revision is marked synced only after the server answered for it.
//     A failed call (or a lost answer) leaves the batch pending; sending it
//     again is harmless because the server is idempotent by revision id.
//  2. REJECTED revisions are marked synced (with the reason kept) because
//     resending cannot make them valid; they are reported in PushSummary.
//  3. A page of changes and the cursor after it are stored together
//     (LocalStore invariant 4), so an interrupted pull resumes correctly.
//  4. If the server refuses the cursor as belonging to another database
//     (FAILED_PRECONDITION), the cursor is reset and the pull restarts from
//     the beginning once (applying only newer versions makes that safe).
//
// Thread safety: thread-safe; Push, Pull and Sync are serialized by an
// internal mutex (one sync at a time per engine). Store and transport are
// not owned and must outlive the engine.
#ifndef PULSESYNC_CLIENT_CORE_SYNC_ENGINE_H_
#define PULSESYNC_CLIENT_CORE_SYNC_ENGINE_H_

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "client/core/transport.h"
#include "client/store/local_store.h"
#include "pulsesync/v1/sync.pb.h"

namespace pulsesync {

struct SyncEngineOptions {
  // Revisions per ApplyRevisions call (the spec's 100).
  int push_batch_size = 100;
  // Send batches Brotli-compressed (PAYLOAD_ENCODING_BROTLI).
  bool compress_push = true;
  // Ask for Brotli-compressed pull pages.
  bool accept_compressed_pull = true;
  // Changes per PullChanges page; 0 = the server's default.
  uint32_t pull_page_limit = 0;
  // Largest decompressed pull page accepted.
  size_t max_decompressed_page_bytes = 256u << 20;
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
  int64_t batches = 0;
  std::vector<RejectedRevision> rejections;
};

struct PullSummary {
  int64_t pulled = 0;   // changes received
  int64_t applied = 0;  // changed a local row
  int64_t skipped = 0;  // already had that version (or newer), or unknown type
  int64_t pages = 0;
  bool cursor_reset = false;  // the server refused the cursor; pulled from the start
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
  // On error, pages applied before it stay applied with their cursor.
  [[nodiscard]] absl::StatusOr<PullSummary> Pull();

  // Push, then Pull (so the pull brings back the server's view of what was
  // just pushed). Stops at the first error.
  [[nodiscard]] absl::StatusOr<SyncSummary> Sync();

 private:
  absl::StatusOr<PushSummary> PushLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::StatusOr<PullSummary> PullLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  absl::Mutex mu_;
  LocalStore* const store_;
  Transport* const transport_;
  const SyncEngineOptions options_;
};

// Conversions between the store's types and the wire's (exposed for tests).
v1::Revision ToProto(const PendingRevision& revision);
RemoteChange FromProto(const v1::Change& change);

}  // namespace pulsesync

#endif  // PULSESYNC_CLIENT_CORE_SYNC_ENGINE_H_

// Applying client revisions: request decoding and validation here, the merge
// itself in SQL (pulsesync.apply_revision, migrations/0002_sync_engine.sql),
// so that the gRPC path and PostgREST share one implementation.
//
// A batch is one PostgreSQL transaction: set-based when it is plain
// (migrations/0013), else through the per-revision merge, revision by
// revision in subtransactions if one of them fails (0012): an invalid one is
// rejected with a reason and writes nothing; the others still apply. A
// revision id seen before is a duplicate and changes nothing.
#ifndef PULSESYNC_SERVER_CORE_REVISION_APPLIER_H_
#define PULSESYNC_SERVER_CORE_REVISION_APPLIER_H_

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "pulsesync/v1/sync.pb.h"
#include "server/storage/pg_session.h"

namespace pulsesync {



struct ApplyLimits {
  uint32_t max_batch_revisions = 1000;
  size_t max_payload_bytes = 1 << 20;         // one revision's payload
  size_t max_decompressed_bytes = 64 << 20;   // a Brotli batch, decompressed
};

// The revisions of a request, decompressed if needed.
// kInvalidArgument: unknown encoding, undecodable or oversized compressed
// batch, more revisions than the limit, or an empty batch.
absl::StatusOr<std::vector<v1::Revision>> DecodeRevisions(const v1::ApplyRevisionsRequest& request,
                                                          const ApplyLimits& limits);

// Checks what can be checked without the database. Returns "" when the
// revision may be sent to the merge, otherwise the reason to reject it.
std::string ValidateRevision(const v1::Revision& revision, const ApplyLimits& limits);

// The clock of a revision as sortable text; must match SQL's
// pulsesync.hlc_text. A zero clock falls back to created_at.
std::string HlcText(int64_t physical_ms, uint32_t counter, absl::string_view origin_id);

// Applies `revisions` in one transaction and returns one result per
// revision, in order. kUnavailable / kAborted / kUnknown from the database
// mean nothing is known to have been applied; the call may be retried as is.
// `identity` is who the merge runs as: the caller's role and claims, so the
// synced tables' Row Level Security decides what it may write (an empty
// identity runs as the server's own role).
absl::StatusOr<std::vector<v1::RevisionResult>> ApplyRevisionBatch(
    PgSession& session, const std::vector<v1::Revision>& revisions, const ApplyLimits& limits,
    const TxIdentity& identity = {});

// Statements this module prepares on every connection.
std::vector<PreparedStatement> RevisionApplierStatements();

}  // namespace pulsesync

#endif  // PULSESYNC_SERVER_CORE_REVISION_APPLIER_H_

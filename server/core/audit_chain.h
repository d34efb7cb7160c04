// The audit trail's tamper evidence: a SHA-256 chain over every entry of the
// change log and of pulsesync.revision_events (migrations/0009_audit_trail.sql).
//
// Design note.
// Appending to one chain inside every writing transaction would serialize
// all writers for the length of their transactions. Instead entries are
// sealed after they commit, by one sealer at a time (a transaction-level
// advisory lock; any replica may hold it), in a deterministic order:
//
// 1. The sealing key of an entry is (txid, position). A round seals, in key
//    order, the entries after the last sealed key whose txid is below the
//    xmin of the current snapshot: their transactions are all finished, so
//    no entry with a smaller key can appear later (cf. the feed's commit
//    safety, change_feed.h). An open transaction delays sealing of entries
//    after it, never the writers.
// 2. hash(n) = SHA-256(hash(n-1) || decimal(n) || "\n" || canonical(n)),
//    hash(0) = 32 zero bytes, or the hash of the newest checkpoint once audit
//    retention has removed the front of the chain. canonical(n) is built by
//    SQL (audit_canonical_change / _event) from the entry as stored, with
//    the excluded fields that were recorded with the seal redacted.
// 3. pulsesync.audit_chain holds (seq, entry position, hash, excluded) per
//    entry; an entry edited, deleted, moved, or one inserted inside the sealed
//    range later, no longer matches: VerifyAuditChain names the first.
//
// The chain proves that history was not changed after sealing, by anyone
// without the means to recompute every later hash; an operator who records
// the head (seq, hash) elsewhere (`pulsesyncd audit verify` prints it) can
// also detect a recomputed chain.
#ifndef PULSESYNC_SERVER_CORE_AUDIT_CHAIN_H_
#define PULSESYNC_SERVER_CORE_AUDIT_CHAIN_H_

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"

namespace pulsesync {

class PgSession;

// hash(n) from hash(n-1) (32 raw bytes) and canonical(n).
std::string AuditChainHash(absl::string_view previous, int64_t seq, absl::string_view canonical);

// Seals up to `max_entries` committed entries (one transaction). Returns how
// many it sealed; 0 when there is nothing to seal or another sealer holds the
// lock. kUnavailable when PostgreSQL is down.
absl::StatusOr<int64_t> SealAuditEntries(PgSession& session, int64_t max_entries = 5000);

// Seals every committed entry now, a round of `batch` at a time, until a
// round seals less than that (`pulsesyncd audit seal`). Returns how many.
absl::StatusOr<int64_t> SealAllAuditEntries(PgSession& session, int64_t batch = 5000);

// Audit retention: removes up to `max_entries` sealed entries older than
// `max_age` from the front of the chain, leaving a checkpoint (under the
// sealer's lock; 0 if another sealer holds it). Returns how many it removed.
absl::StatusOr<int64_t> ExpireAuditEntries(PgSession& session, absl::Duration max_age,
                                           int64_t max_entries = 10000);

struct AuditVerifyReport {
  bool ok = true;
  int64_t verified = 0;       // seals checked
  int64_t checkpoint_seq = 0;  // where the walk began (0: the genesis)
  int64_t head_seq = 0;        // the last sealed entry
  std::string head_hash_hex;
  int64_t unsealed = 0;        // committed entries the sealer has yet to seal
  // When !ok: the first broken link, e.g. "seq 12 (change at position 40):
  // the entry differs from what was sealed (edited or moved)".
  std::string broken;
  int64_t broken_seq = 0;
};

// Walks the whole chain in pages and recomputes every hash. A broken link is
// a report with ok = false, not an error; errors are database errors.
absl::StatusOr<AuditVerifyReport> VerifyAuditChain(PgSession& session);

}  // namespace pulsesync

#endif  // PULSESYNC_SERVER_CORE_AUDIT_CHAIN_H_

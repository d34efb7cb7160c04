#include "server/core/audit_chain.h"

#include <openssl/sha.h>

#include <pqxx/pqxx>
#include <string>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "common/json.h"
#include "common/status_macros.h"
#include "server/storage/pg_session.h"

namespace pulsesync {
namespace {

// pg_try_advisory_xact_lock key of the one sealer ("pulsaudt").
constexpr int64_t kSealerLock = 0x70756c7361756474;

struct ChainHead {
  int64_t seq = 0;
  std::string hash = std::string(SHA256_DIGEST_LENGTH, '\0');
  std::string txid = "0";
  int64_t position = 0;
  bool from_checkpoint = false;
};

std::string Unescape(const pqxx::field& f) {
  return pqxx::binarystring(f).str();
}

// The newest seal, else the newest checkpoint, else the genesis.
ChainHead ReadHead(pqxx::transaction_base& tx) {
  ChainHead head;
  pqxx::result r = tx.exec(
      "SELECT seq, hash, txid::text, entry_position FROM pulsesync.audit_chain "
      "ORDER BY seq DESC LIMIT 1");
  if (r.empty()) {
    r = tx.exec(
        "SELECT seq, hash, txid::text, entry_position FROM pulsesync.audit_checkpoints "
        "ORDER BY seq DESC LIMIT 1");
    head.from_checkpoint = !r.empty();
  }
  if (!r.empty()) {
    head.seq = r[0][0].as<int64_t>();
    head.hash = Unescape(r[0][1]);
    head.txid = r[0][2].as<std::string>();
    head.position = r[0][3].as<int64_t>();
  }
  return head;
}

// The checkpoint the chain currently starts after (the genesis if none).
ChainHead ReadStart(pqxx::transaction_base& tx) {
  ChainHead start;
  const pqxx::result r = tx.exec(
      "SELECT seq, hash, txid::text, entry_position FROM pulsesync.audit_checkpoints "
      "ORDER BY seq DESC LIMIT 1");
  if (!r.empty()) {
    start.seq = r[0][0].as<int64_t>();
    start.hash = Unescape(r[0][1]);
    start.txid = r[0][2].as<std::string>();
    start.position = r[0][3].as<int64_t>();
    start.from_checkpoint = true;
  }
  return start;
}

}  // namespace

std::string AuditChainHash(absl::string_view previous, int64_t seq, absl::string_view canonical) {
  const std::string input = absl::StrCat(previous, seq, "\n", canonical);
  unsigned char digest[SHA256_DIGEST_LENGTH];
  SHA256(reinterpret_cast<const unsigned char*>(input.data()), input.size(), digest);
  return std::string(reinterpret_cast<const char*>(digest), sizeof(digest));
}

absl::StatusOr<int64_t> SealAuditEntries(PgSession& session, int64_t max_entries) {
  int64_t sealed = 0;
  PS_RETURN_IF_ERROR(session.RunTransaction(
      TxMode::kReadWrite, [&](pqxx::transaction_base& tx) -> absl::Status {
        sealed = 0;
        if (!tx.exec_params1("SELECT pg_try_advisory_xact_lock($1)", kSealerLock)[0].as<bool>()) {
          return absl::OkStatus();
        }
        const ChainHead head = ReadHead(tx);
        const pqxx::result rows = tx.exec_params(
            "SELECT source, entry_position, txid::text, entry_at::text, "
            "coalesce(to_jsonb(excluded)::text, 'null'), canonical "
            "FROM pulsesync.audit_unsealed($1::xid8, $2, $3)",
            head.txid, head.position, max_entries);
        if (rows.empty()) return absl::OkStatus();
        std::string batch = "[";
        std::string previous = head.hash;
        int64_t seq = head.seq;
        for (const pqxx::row& row : rows) {
          ++seq;
          const std::string canonical = row[5].as<std::string>();
          previous = AuditChainHash(previous, seq, canonical);
          if (batch.size() > 1) batch += ',';
          absl::StrAppend(&batch, "{\"seq\":", seq, ",\"entry_position\":", row[1].as<int64_t>(),
                          ",\"source\":", JsonQuote(row[0].as<std::string>()),
                          ",\"txid\":", JsonQuote(row[2].as<std::string>()),
                          ",\"entry_at\":", JsonQuote(row[3].as<std::string>()),
                          ",\"excluded\":", row[4].as<std::string>(),
                          ",\"hash\":", JsonQuote(absl::BytesToHexString(previous)), "}");
        }
        batch += "]";
        tx.exec_params(
            "INSERT INTO pulsesync.audit_chain "
            "(seq, entry_position, source, txid, entry_at, excluded, hash) "
            "SELECT seq, entry_position, source, txid::xid8, entry_at, excluded, "
            "decode(hash, 'hex') FROM jsonb_to_recordset($1::jsonb) AS r(seq bigint, "
            "entry_position bigint, source text, txid text, entry_at timestamptz, "
            "excluded text[], hash text)",
            batch);
        sealed = static_cast<int64_t>(rows.size());
        return absl::OkStatus();
      }));
  return sealed;
}

absl::StatusOr<int64_t> SealAllAuditEntries(PgSession& session, int64_t batch) {
  int64_t total = 0;
  while (true) {
    PS_ASSIGN_OR_RETURN(int64_t n, SealAuditEntries(session, batch));
    total += n;
    if (n < batch) return total;
  }
}

absl::StatusOr<int64_t> ExpireAuditEntries(PgSession& session, absl::Duration max_age,
                                           int64_t max_entries) {
  int64_t removed = 0;
  PS_RETURN_IF_ERROR(session.RunTransaction(
      TxMode::kReadWrite, [&](pqxx::transaction_base& tx) -> absl::Status {
        removed = 0;
        if (!tx.exec_params1("SELECT pg_try_advisory_xact_lock($1)", kSealerLock)[0].as<bool>()) {
          return absl::OkStatus();
        }
        removed = tx.exec_params1("SELECT pulsesync.expire_audit($1::interval, $2)",
                                  absl::StrCat(absl::ToInt64Seconds(max_age), " seconds"),
                                  max_entries)[0]
                      .as<int64_t>();
        return absl::OkStatus();
      }));
  return removed;
}

absl::StatusOr<AuditVerifyReport> VerifyAuditChain(PgSession& session) {
  AuditVerifyReport report;
  // One REPEATABLE READ snapshot: the sealer may go on meanwhile.
  PS_RETURN_IF_ERROR(session.RunTransaction(
      TxMode::kRepeatableReadOnly, [&](pqxx::transaction_base& tx) -> absl::Status {
        report = AuditVerifyReport();
        const ChainHead start = ReadStart(tx);
        report.checkpoint_seq = start.seq;
        std::string previous = start.hash;
        int64_t expected = start.seq + 1;
        std::string last_txid = start.txid;
        int64_t last_position = start.position;
        constexpr int kPage = 2000;
        auto fail = [&](int64_t seq, std::string what) {
          report.ok = false;
          report.broken_seq = seq;
          report.broken = std::move(what);
        };
        while (report.ok) {
          const pqxx::result rows =
              tx.exec_params("SELECT seq, source, entry_position, txid::text, hash, canonical "
                             "FROM pulsesync.audit_chain_page($1, $2)",
                             expected - 1, kPage);
          for (const pqxx::row& row : rows) {
            const int64_t seq = row[0].as<int64_t>();
            const std::string what = absl::StrCat("seq ", seq, " (", row[1].as<std::string>(),
                                                  " at position ", row[2].as<int64_t>(), ")");
            if (seq != expected) {
              fail(expected, absl::StrCat("seals ", expected, " to ", seq - 1,
                                          " are missing (deleted from the chain)"));
              break;
            }
            if (row[5].is_null()) {
              fail(seq, absl::StrCat(what, ": the entry is gone (deleted)"));
              break;
            }
            const std::string stored = Unescape(row[4]);
            const std::string computed =
                AuditChainHash(previous, seq, row[5].as<std::string>());
            if (computed != stored) {
              // Whether the seal itself was rewritten (it no longer follows
              // from the previous one) or the entry changed under it.
              fail(seq, absl::StrCat(what,
                                     ": the entry differs from what was sealed (edited, moved "
                                     "or its seal rewritten)"));
              break;
            }
            previous = stored;
            last_txid = row[3].as<std::string>();
            last_position = row[2].as<int64_t>();
            report.head_seq = seq;
            ++report.verified;
            ++expected;
          }
          if (rows.size() < static_cast<size_t>(kPage)) break;
        }
        if (report.ok && report.head_seq == 0) report.head_seq = start.seq;
        report.head_hash_hex = absl::BytesToHexString(previous);
        if (report.ok) {
          const pqxx::result behind = tx.exec_params(
              "SELECT source, entry_position FROM pulsesync.audit_unsealed_behind($1::xid8, $2, 1)",
              last_txid, last_position);
          if (!behind.empty()) {
            fail(report.head_seq,
                 absl::StrCat(behind[0][0].as<std::string>(), " at position ",
                              behind[0][1].as<int64_t>(),
                              " is inside the sealed range but has no seal (inserted later)"));
          }
        }
        report.unsealed =
            tx.exec_params1(
                  "SELECT (SELECT count(*) FROM pulsesync.change_log "
                  "        WHERE (txid, position) > ($1::xid8, $2)) + "
                  "       (SELECT count(*) FROM pulsesync.revision_events "
                  "        WHERE (txid, position) > ($1::xid8, $2))",
                  last_txid, last_position)[0]
                .as<int64_t>();
        return absl::OkStatus();
      }));
  return report;
}

}  // namespace pulsesync

#include "server/core/revision_applier.h"

#include <algorithm>
#include <pqxx/pqxx>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/brotli_codec.h"
#include "common/json.h"
#include "common/status_macros.h"
#include "common/uuid.h"
#include "server/storage/pg_session.h"

namespace pulsesync {
namespace {

constexpr char kApplyStatement[] = "pulsesync_apply_revisions";
constexpr size_t kMaxOriginIdLength = 200;
constexpr size_t kMaxObjectTypeLength = 63;
constexpr int64_t kMaxClockMs = 1'000'000'000'000'000;  // 10^15 ms: year 33658

std::string RevisionJson(const v1::Revision& r) {
  const bool upsert = r.op() == v1::OPERATION_UPSERT;
  const int64_t physical = r.clock().physical_ms() != 0 ? r.clock().physical_ms() : r.created_at();
  return absl::StrCat(
      "{\"id\":", JsonQuote(r.id()), ",\"object_type\":", JsonQuote(r.object_type()),
      ",\"object_id\":", JsonQuote(r.object_id()), ",\"origin_id\":", JsonQuote(r.origin_id()),
      ",\"seq\":", r.seq(), ",\"op\":\"", upsert ? "upsert" : "delete",
      "\",\"payload\":", upsert ? JsonQuote(r.payload()) : "null",
      ",\"created_at\":", r.created_at(), ",\"base_version\":", r.base_version(),
      ",\"schema_version\":", r.schema_version(),
      ",\"hlc\":", JsonQuote(HlcText(physical, r.clock().counter(), r.origin_id())), "}");
}

// A revision refused before it reaches SQL still goes to apply_revisions,
// so that its seq is used up there (the origin's later revisions then apply)
// and the refusal is on record. Only when its origin and seq are usable.
std::string RefusedJson(const v1::Revision& r, absl::string_view reason) {
  return absl::StrCat("{\"id\":", IsUuid(r.id()) ? JsonQuote(r.id()) : "null",
                      ",\"origin_id\":", JsonQuote(r.origin_id()), ",\"seq\":", r.seq(),
                      ",\"object_type\":", JsonQuote(r.object_type()),
                      ",\"object_id\":", IsUuid(r.object_id()) ? JsonQuote(r.object_id()) : "null",
                      ",\"refused\":", JsonQuote(reason), "}");
}

bool OriginUsable(const v1::Revision& r) {
  return !r.origin_id().empty() && r.origin_id().size() <= kMaxOriginIdLength && r.seq() > 0 &&
         std::none_of(r.origin_id().begin(), r.origin_id().end(),
                      [](char c) { return static_cast<unsigned char>(c) < 0x20; }) &&
         std::none_of(r.object_type().begin(), r.object_type().end(),
                      [](char c) { return static_cast<unsigned char>(c) < 0x20; });
}

v1::RevisionResult::Outcome OutcomeFromSql(absl::string_view s) {
  if (s == "applied") return v1::RevisionResult::OUTCOME_APPLIED;
  if (s == "duplicate") return v1::RevisionResult::OUTCOME_DUPLICATE;
  if (s == "rejected") return v1::RevisionResult::OUTCOME_REJECTED;
  if (s == "out_of_order") return v1::RevisionResult::OUTCOME_OUT_OF_ORDER;
  return v1::RevisionResult::OUTCOME_UNSPECIFIED;
}

v1::RevisionResult::Resolution ResolutionFromSql(absl::string_view s) {
  if (s == "applied") return v1::RevisionResult::RESOLUTION_APPLIED;
  if (s == "merged") return v1::RevisionResult::RESOLUTION_MERGED;
  if (s == "conflict") return v1::RevisionResult::RESOLUTION_CONFLICT;
  if (s == "recovered") return v1::RevisionResult::RESOLUTION_RECOVERED;
  if (s == "superseded") return v1::RevisionResult::RESOLUTION_SUPERSEDED;
  if (s == "tombstoned") return v1::RevisionResult::RESOLUTION_TOMBSTONED;
  return v1::RevisionResult::RESOLUTION_UNSPECIFIED;
}

}  // namespace

absl::StatusOr<std::vector<v1::Revision>> DecodeRevisions(const v1::ApplyRevisionsRequest& request,
                                                          const ApplyLimits& limits) {
  std::vector<v1::Revision> out;
  switch (request.encoding()) {
    case v1::PAYLOAD_ENCODING_IDENTITY:
      if (!request.compressed_batch().empty()) {
        return absl::InvalidArgumentError(
            "compressed_batch is set but encoding is PAYLOAD_ENCODING_IDENTITY");
      }
      out.assign(request.revisions().begin(), request.revisions().end());
      break;
    case v1::PAYLOAD_ENCODING_BROTLI: {
      if (request.revisions_size() != 0) {
        return absl::InvalidArgumentError(
            "encoding is PAYLOAD_ENCODING_BROTLI but revisions are sent uncompressed");
      }
      absl::StatusOr<std::string> raw =
          BrotliDecompress(request.compressed_batch(), limits.max_decompressed_bytes);
      if (!raw.ok()) {
        return absl::InvalidArgumentError(
            absl::StrCat("compressed_batch: ", raw.status().message()));
      }
      v1::RevisionBatch batch;
      if (!batch.ParseFromString(*raw)) {
        return absl::InvalidArgumentError(
            "compressed_batch does not decompress to a pulsesync.v1.RevisionBatch");
      }
      out.assign(batch.revisions().begin(), batch.revisions().end());
      break;
    }
    default:
      return absl::InvalidArgumentError(
          absl::StrCat("unknown payload encoding ", static_cast<int>(request.encoding())));
  }
  if (out.empty()) return absl::InvalidArgumentError("the batch has no revisions");
  if (out.size() > limits.max_batch_revisions) {
    return absl::InvalidArgumentError(absl::StrCat("the batch has ", out.size(),
                                                   " revisions; the limit is ",
                                                   limits.max_batch_revisions));
  }
  return out;
}

std::string ValidateRevision(const v1::Revision& r, const ApplyLimits& limits) {
  if (!IsUuid(r.id())) return absl::StrCat("id \"", r.id(), "\" is not a UUID");
  if (r.object_type().empty()) return "object_type is missing";
  if (r.object_type().size() > kMaxObjectTypeLength) return "object_type is too long";
  if (!IsUuid(r.object_id())) return absl::StrCat("object_id \"", r.object_id(), "\" is not a UUID");
  if (r.origin_id().empty()) return "origin_id is missing";
  // These travel inside the batch's JSON text, where PostgreSQL refuses
  // U+0000; a control character would fail the whole batch, not just this
  // revision.
  auto has_control = [](absl::string_view s) {
    return std::any_of(s.begin(), s.end(), [](char c) { return static_cast<unsigned char>(c) < 0x20; });
  };
  if (has_control(r.object_type())) return "object_type contains a control character";
  if (has_control(r.origin_id())) return "origin_id contains a control character";
  if (r.origin_id().size() > kMaxOriginIdLength) {
    return absl::StrCat("origin_id is longer than ", kMaxOriginIdLength, " bytes");
  }
  if (r.seq() < 1) return "seq must be 1 or more (an origin numbers its revisions 1, 2, 3, ...)";
  if (r.created_at() < 0) return "created_at is negative";
  if (r.base_version() < 0) return "base_version is negative";
  if (r.clock().physical_ms() < 0) return "clock.physical_ms is negative";
  // HlcText orders clocks in a fixed 15-digit field; a larger reading (e.g.
  // microseconds sent by mistake) would sort wrongly and win forever.
  const int64_t physical = r.clock().physical_ms() != 0 ? r.clock().physical_ms() : r.created_at();
  if (physical >= kMaxClockMs) {
    return absl::StrCat("clock ", physical, " is not a time in milliseconds since the epoch");
  }
  switch (r.op()) {
    case v1::OPERATION_UPSERT: {
      if (r.payload().size() > limits.max_payload_bytes) {
        return absl::StrCat("payload is ", r.payload().size(), " bytes; the limit is ",
                            limits.max_payload_bytes);
      }
      absl::StatusOr<JsonValue> payload = ParseJson(r.payload());
      if (!payload.ok()) return absl::StrCat("payload: ", payload.status().message());
      if (!payload->is_object()) return "payload must be a JSON object";
      return "";
    }
    case v1::OPERATION_DELETE:
      return "";
    default:
      return "op is missing (OPERATION_UPSERT or OPERATION_DELETE)";
  }
}

std::string HlcText(int64_t physical_ms, uint32_t counter, absl::string_view origin_id) {
  return absl::StrFormat("%015d-%010d-%s", physical_ms, counter, origin_id);
}

std::vector<PreparedStatement> RevisionApplierStatements() {
  return {{kApplyStatement,
           "SELECT idx, outcome, reason, version, superseded, resolution, conflicts, record "
           "FROM pulsesync.apply_revisions($1::jsonb)"}};
}

absl::StatusOr<std::vector<v1::RevisionResult>> ApplyRevisionBatch(
    PgSession& session, const std::vector<v1::Revision>& revisions, const ApplyLimits& limits,
    const TxIdentity& identity) {
  std::vector<v1::RevisionResult> results(revisions.size());
  std::vector<size_t> sent;  // index into `revisions` of each batch element
  std::string batch = "[";
  for (size_t i = 0; i < revisions.size(); ++i) {
    results[i].set_revision_id(revisions[i].id());
    std::string reason = ValidateRevision(revisions[i], limits);
    if (!reason.empty()) {
      results[i].set_outcome(v1::RevisionResult::OUTCOME_REJECTED);
      if (!OriginUsable(revisions[i])) {
        results[i].set_reason(std::move(reason));
        continue;
      }
    }
    if (!sent.empty()) batch += ",";
    batch += reason.empty() ? RevisionJson(revisions[i]) : RefusedJson(revisions[i], reason);
    sent.push_back(i);
  }
  batch += "]";
  if (sent.empty()) return results;

  PS_RETURN_IF_ERROR(session.RunTransaction(
      TxMode::kReadWrite, identity, [&](pqxx::transaction_base& tx) -> absl::Status {
        const pqxx::result rows = tx.exec_prepared(kApplyStatement, batch);
        if (rows.size() != sent.size()) {
          return absl::InternalError(absl::StrCat("apply_revisions answered ", rows.size(),
                                                  " results for ", sent.size(), " revisions"));
        }
        for (const auto& row : rows) {
          const int idx = row[0].as<int>();
          if (idx < 0 || static_cast<size_t>(idx) >= sent.size()) {
            return absl::InternalError("apply_revisions answered an unknown index");
          }
          v1::RevisionResult& res = results[sent[idx]];
          res.set_outcome(OutcomeFromSql(row[1].as<std::string>()));
          if (!row[2].is_null()) res.set_reason(row[2].as<std::string>());
          if (!row[3].is_null()) res.set_version(row[3].as<int64_t>());
          if (!row[4].is_null()) res.set_superseded(row[4].as<bool>());
          if (!row[5].is_null()) res.set_resolution(ResolutionFromSql(row[5].as<std::string>()));
          if (!row[6].is_null()) res.set_conflicts(row[6].as<uint32_t>());
          if (!row[7].is_null()) res.set_record(row[7].as<std::string>());
        }
        // Where each held-back origin must resume (RevisionResult.expected_seq).
        for (size_t k = 0; k < sent.size(); ++k) {
          v1::RevisionResult& res = results[sent[k]];
          if (res.outcome() != v1::RevisionResult::OUTCOME_OUT_OF_ORDER) continue;
          res.set_expected_seq(tx.exec_params1("SELECT pulsesync.origin_next_seq($1)",
                                               revisions[sent[k]].origin_id())[0]
                                   .as<int64_t>());
        }
        return absl::OkStatus();
      }));
  return results;
}

}  // namespace pulsesync

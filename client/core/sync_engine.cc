#include "client/core/sync_engine.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "common/brotli_codec.h"
#include "common/log.h"
#include "common/status_macros.h"

namespace pulsesync {

v1::Revision ToProto(const PendingRevision& r) {
  v1::Revision p;
  p.set_id(r.id);
  p.set_object_type(r.object_type);
  p.set_object_id(r.object_id);
  p.set_origin_id(r.origin_id);
  p.set_seq(r.seq);
  p.set_op(r.op == RevisionOp::kDelete ? v1::OPERATION_DELETE : v1::OPERATION_UPSERT);
  p.set_payload(r.payload);
  p.set_created_at(r.created_at_ms);
  p.set_base_version(r.base_version);
  p.set_schema_version(static_cast<uint32_t>(r.schema_version));
  p.mutable_clock()->set_physical_ms(r.clock.physical_ms);
  p.mutable_clock()->set_counter(r.clock.counter);
  return p;
}

RemoteChange FromProto(const v1::Change& c) {
  RemoteChange r;
  r.object_type = c.object_type();
  r.table = c.table();
  switch (c.event()) {
    case v1::EVENT_TYPE_INSERT:
      r.event = ChangeEvent::kInsert;
      break;
    case v1::EVENT_TYPE_DELETE:
      r.event = ChangeEvent::kDelete;
      break;
    default:
      r.event = ChangeEvent::kUpdate;
      break;
  }
  r.object_id = c.object_id();
  r.version = c.version();
  r.new_record = c.new_record();
  r.origin_id = c.origin_id();
  r.revision_id = c.revision_id();
  r.commit_timestamp_ms = c.commit_timestamp_ms();
  return r;
}

namespace {

absl::StatusOr<v1::ApplyRevisionsRequest> BuildPushRequest(
    const std::vector<PendingRevision>& batch, bool compress) {
  v1::ApplyRevisionsRequest request;
  if (compress) {
    v1::RevisionBatch plain;
    for (const PendingRevision& r : batch) *plain.add_revisions() = ToProto(r);
    std::string bytes;
    if (!plain.SerializeToString(&bytes)) {
      return absl::InternalError("cannot serialize a revision batch");
    }
    request.set_encoding(v1::PAYLOAD_ENCODING_BROTLI);
    request.set_compressed_batch(BrotliCompress(bytes));
  } else {
    request.set_encoding(v1::PAYLOAD_ENCODING_IDENTITY);
    for (const PendingRevision& r : batch) *request.add_revisions() = ToProto(r);
  }
  return request;
}

absl::StatusOr<std::vector<RemoteChange>> DecodePage(const v1::PullChangesResponse& response,
                                                     size_t max_bytes) {
  std::vector<RemoteChange> out;
  if (response.encoding() == v1::PAYLOAD_ENCODING_BROTLI) {
    PS_ASSIGN_OR_RETURN(std::string bytes,
                        BrotliDecompress(response.compressed_changes(), max_bytes));
    v1::ChangeBatch batch;
    if (!batch.ParseFromString(bytes)) {
      return absl::DataLossError("server sent a compressed change batch that does not parse");
    }
    out.reserve(batch.changes_size());
    for (const v1::Change& c : batch.changes()) out.push_back(FromProto(c));
  } else if (response.encoding() == v1::PAYLOAD_ENCODING_IDENTITY) {
    out.reserve(response.changes_size());
    for (const v1::Change& c : response.changes()) out.push_back(FromProto(c));
  } else {
    return absl::UnimplementedError(
        absl::StrCat("server answered with unknown payload encoding ", response.encoding()));
  }
  return out;
}

}  // namespace

SyncEngine::SyncEngine(LocalStore* store, Transport* transport, SyncEngineOptions options)
    : store_(store), transport_(transport), options_(options) {}

absl::StatusOr<PushSummary> SyncEngine::Push() {
  absl::MutexLock lock(&mu_);
  return PushLocked();
}

absl::StatusOr<PullSummary> SyncEngine::Pull() {
  absl::MutexLock lock(&mu_);
  return PullLocked();
}

absl::StatusOr<SyncSummary> SyncEngine::Sync() {
  absl::MutexLock lock(&mu_);
  SyncSummary summary;
  PS_ASSIGN_OR_RETURN(summary.push, PushLocked());
  PS_ASSIGN_OR_RETURN(summary.pull, PullLocked());
  return summary;
}

absl::StatusOr<PushSummary> SyncEngine::PushLocked() {
  PushSummary summary;
  const int batch_size = options_.push_batch_size > 0 ? options_.push_batch_size : 100;
  while (true) {
    PS_ASSIGN_OR_RETURN(std::vector<PendingRevision> batch, store_->PendingRevisions(batch_size));
    if (batch.empty()) break;
    PS_ASSIGN_OR_RETURN(v1::ApplyRevisionsRequest request,
                        BuildPushRequest(batch, options_.compress_push));
    absl::StatusOr<v1::ApplyRevisionsResponse> response = transport_->ApplyRevisions(request);
    if (!response.ok()) {
      // Invariant 1: nothing is marked; the batch stays pending.
      LogWarning("push failed", {{"revisions", static_cast<int64_t>(batch.size())},
                                 {"status", response.status()}});
      return response.status();
    }
    if (response->results_size() != static_cast<int>(batch.size())) {
      return absl::InternalError(absl::StrCat("server answered ", response->results_size(),
                                              " results for ", batch.size(), " revisions"));
    }
    std::vector<PushOutcome> outcomes;
    outcomes.reserve(batch.size());
    PushSummary page;
    for (size_t i = 0; i < batch.size(); ++i) {
      const v1::RevisionResult& result = response->results(static_cast<int>(i));
      const PendingRevision& rev = batch[i];
      if (!result.revision_id().empty() && result.revision_id() != rev.id) {
        return absl::InternalError(absl::StrCat("server answered for revision ",
                                                result.revision_id(), " where ", rev.id,
                                                " was expected"));
      }
      PushOutcome o;
      o.revision_id = rev.id;
      o.server_version = result.version();
      o.superseded = result.superseded();
      switch (result.outcome()) {
        case v1::RevisionResult::OUTCOME_APPLIED:
          o.kind = PushOutcome::Kind::kApplied;
          ++page.applied;
          if (result.superseded()) ++page.superseded;
          break;
        case v1::RevisionResult::OUTCOME_DUPLICATE:
          o.kind = PushOutcome::Kind::kDuplicate;
          ++page.duplicate;
          break;
        case v1::RevisionResult::OUTCOME_REJECTED:
          o.kind = PushOutcome::Kind::kRejected;
          o.reject_reason = result.reason();
          ++page.rejected;
          page.rejections.push_back(
              RejectedRevision{rev.id, rev.object_type, rev.object_id, result.reason()});
          break;
        default:
          return absl::InternalError(
              absl::StrCat("server answered outcome ", result.outcome(), " for revision ", rev.id));
      }
      outcomes.push_back(std::move(o));
    }
    PS_RETURN_IF_ERROR(store_->RecordPushResults(outcomes));
    for (const RejectedRevision& r : page.rejections) {
      LogWarning("revision rejected", {{"revision_id", r.revision_id},
                                       {"object_type", r.object_type},
                                       {"object_id", r.object_id},
                                       {"reason", r.reason}});
    }
    summary.pushed += static_cast<int64_t>(batch.size());
    summary.applied += page.applied;
    summary.superseded += page.superseded;
    summary.duplicate += page.duplicate;
    summary.rejected += page.rejected;
    ++summary.batches;
    for (RejectedRevision& r : page.rejections) summary.rejections.push_back(std::move(r));
  }
  return summary;
}

absl::StatusOr<PullSummary> SyncEngine::PullLocked() {
  PullSummary summary;
  PS_ASSIGN_OR_RETURN(SyncState state, store_->GetSyncState());
  std::string cursor = state.cursor;
  while (true) {
    v1::PullChangesRequest request;
    request.set_cursor(cursor);
    request.set_limit(options_.pull_page_limit);
    request.set_accept_encoding(options_.accept_compressed_pull ? v1::PAYLOAD_ENCODING_BROTLI
                                                                : v1::PAYLOAD_ENCODING_IDENTITY);
    absl::StatusOr<v1::PullChangesResponse> response = transport_->PullChanges(request);
    if (!response.ok()) {
      if (response.status().code() == absl::StatusCode::kFailedPrecondition &&
          !summary.cursor_reset && !cursor.empty()) {
        // Invariant 4: the cursor is from another database; re-snapshot.
        LogWarning("server refused the cursor; pulling from the start",
                   {{"status", response.status()}});
        PS_RETURN_IF_ERROR(store_->ResetCursor());
        cursor.clear();
        summary.cursor_reset = true;
        continue;
      }
      return response.status();
    }
    PS_ASSIGN_OR_RETURN(std::vector<RemoteChange> changes,
                        DecodePage(*response, options_.max_decompressed_page_bytes));
    PS_ASSIGN_OR_RETURN(ApplyChangesSummary applied,
                        store_->ApplyRemoteChanges(changes, response->next_cursor()));
    ++summary.pages;
    summary.pulled += static_cast<int64_t>(changes.size());
    summary.applied += applied.applied;
    summary.skipped += applied.skipped;
    if (!response->has_more()) break;
    if (changes.empty() && response->next_cursor() == cursor) {
      return absl::InternalError("server reported has_more without advancing the cursor");
    }
    cursor = response->next_cursor();
  }
  return summary;
}

}  // namespace pulsesync

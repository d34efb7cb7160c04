#include "client/core/sync_engine.h"

#include <future>
#include <memory>
#include <optional>
#include <system_error>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/brotli_codec.h"
#include "common/log.h"
#include "common/status_macros.h"

namespace pulsesync {

bool IsResnapshot(const absl::Status& status) {
  return status.code() == absl::StatusCode::kFailedPrecondition &&
         absl::StartsWith(status.message(), "re-snapshot");
}

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
    const std::vector<PendingRevision>& batch, const SyncEngineOptions& options) {
  v1::ApplyRevisionsRequest request;
  if (options.compress_push) {
    v1::RevisionBatch plain;
    for (const PendingRevision& r : batch) *plain.add_revisions() = ToProto(r);
    std::string bytes;
    if (!plain.SerializeToString(&bytes)) {
      return absl::InternalError("cannot serialize a revision batch");
    }
    if (bytes.size() >= options.compress_min_bytes) {
      std::string packed = BrotliCompress(bytes, options.compress_quality);
      if (packed.size() < bytes.size() - bytes.size() / 10) {
        request.set_encoding(v1::PAYLOAD_ENCODING_BROTLI);
        request.set_compressed_batch(std::move(packed));
        return request;
      }
    }
    // Too small to pay: the same revisions, plain.
    request.set_encoding(v1::PAYLOAD_ENCODING_IDENTITY);
    request.mutable_revisions()->Swap(plain.mutable_revisions());
    return request;
  }
  request.set_encoding(v1::PAYLOAD_ENCODING_IDENTITY);
  for (const PendingRevision& r : batch) *request.add_revisions() = ToProto(r);
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
  absl::MutexLock lock(&push_mu_);
  return PushLocked();
}

absl::StatusOr<PullSummary> SyncEngine::Pull() {
  absl::MutexLock lock(&pull_mu_);
  return PullLocked();
}

absl::StatusOr<SnapshotSummary> SyncEngine::Snapshot(const SnapshotRequestOptions& options,
                                                     const CancelRegistrar& register_cancel) {
  absl::MutexLock lock(&pull_mu_);
  return SnapshotLocked(options, register_cancel);
}

absl::StatusOr<SyncSummary> SyncEngine::Sync() {
  absl::MutexLock push_lock(&push_mu_);
  SyncSummary summary;
  PS_ASSIGN_OR_RETURN(summary.push, PushLocked());
  absl::MutexLock pull_lock(&pull_mu_);
  PS_ASSIGN_OR_RETURN(summary.pull, PullLocked());
  return summary;
}

namespace {

const char* ResolutionName(v1::RevisionResult::Resolution r) {
  switch (r) {
    case v1::RevisionResult::RESOLUTION_APPLIED:
      return "applied";
    case v1::RevisionResult::RESOLUTION_MERGED:
      return "merged";
    case v1::RevisionResult::RESOLUTION_CONFLICT:
      return "conflict";
    case v1::RevisionResult::RESOLUTION_RECOVERED:
      return "recovered";
    case v1::RevisionResult::RESOLUTION_SUPERSEDED:
      return "superseded";
    case v1::RevisionResult::RESOLUTION_TOMBSTONED:
      return "tombstoned";
    default:
      return "";
  }
}

}  // namespace

absl::StatusOr<PushSummary> SyncEngine::PushLocked() {
  PushSummary summary;
  const int batch_size = options_.push_batch_size > 0 ? options_.push_batch_size : 100;
  int64_t total = 0;
  if (options_.on_progress) {
    PS_ASSIGN_OR_RETURN(total, store_->PendingCount());
  }
  bool resent = false;
  // Invariant 6: one batch on its way at a time; the next one is read while
  // it is, and sent when its answer is in, before that answer is recorded.
  // (A std::async future waits for its call when destroyed: no early
  // return leaves a call running.)
  struct InFlight {
    std::vector<PendingRevision> batch;
    std::future<absl::StatusOr<v1::ApplyRevisionsResponse>> answer;
  };
  auto send = [this](std::vector<PendingRevision> batch) -> absl::StatusOr<InFlight> {
    PS_ASSIGN_OR_RETURN(v1::ApplyRevisionsRequest request, BuildPushRequest(batch, options_));
    InFlight call{std::move(batch), {}};
    try {
      call.answer = std::async(std::launch::async, [this, request = std::move(request)] {
        return transport_->ApplyRevisions(request);
      });
    } catch (const std::system_error& e) {
      return absl::ResourceExhaustedError(
          absl::StrCat("cannot start a thread for the push: ", e.what()));
    }
    return call;
  };
  std::optional<InFlight> next_call;
  while (true) {
    if (!next_call.has_value()) {
      PS_ASSIGN_OR_RETURN(std::vector<PendingRevision> first,
                          store_->PendingRevisions(batch_size));
      if (first.empty()) break;
      PS_ASSIGN_OR_RETURN(next_call, send(std::move(first)));
    }
    InFlight call = *std::move(next_call);
    next_call.reset();
    PS_ASSIGN_OR_RETURN(std::vector<PendingRevision> following,
                        store_->PendingRevisions(batch_size, call.batch.back().seq));
    const std::vector<PendingRevision>& batch = call.batch;
    absl::StatusOr<v1::ApplyRevisionsResponse> response = call.answer.get();
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
    std::string out_of_order;  // the server's reason, if it held revisions back
    int64_t expected_seq = 0;  // and the seq it expects next from this origin
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
      o.resolution = ResolutionName(result.resolution());
      if (result.superseded()) o.record = result.record();
      if (result.resolution() == v1::RevisionResult::RESOLUTION_CONFLICT) ++page.conflicts;
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
        case v1::RevisionResult::OUTCOME_OUT_OF_ORDER:
          // Not applied, nothing recorded: it stays pending and goes again
          // (in seq order) next time.
          if (out_of_order.empty()) {
            out_of_order = result.reason();
            expected_seq = result.expected_seq();
          }
          continue;
        default:
          return absl::InternalError(
              absl::StrCat("server answered outcome ", result.outcome(), " for revision ", rev.id));
      }
      outcomes.push_back(std::move(o));
    }
    // The server held nothing back: the next batch may go before this
    // answer is recorded (invariant 1 holds: each is marked only after its
    // own answer).
    absl::Status sent = absl::OkStatus();
    if (out_of_order.empty() && !following.empty()) {
      absl::StatusOr<InFlight> started = send(std::move(following));
      if (started.ok()) {
        next_call = *std::move(started);
      } else {
        sent = started.status();  // after this answer is recorded
      }
    }
    PS_RETURN_IF_ERROR(store_->RecordPushResults(outcomes));
    PS_RETURN_IF_ERROR(sent);
    if (!out_of_order.empty() && expected_seq > 0 && !resent) {
      // The server expects a seq this database counts as answered: it lost
      // acknowledged revisions (restored from an older backup, or commits
      // lost in a crash). Send them again from there, once per push.
      PS_ASSIGN_OR_RETURN(int64_t reopened, store_->ResendFrom(expected_seq));
      if (reopened > 0) {
        LogWarning("server lost acknowledged revisions; sending them again",
                   {{"from_seq", expected_seq}, {"revisions", reopened}});
        resent = true;
        summary.resent += reopened;
        if (options_.on_progress) total += reopened;
        continue;
      }
    }
    if (!out_of_order.empty()) {
      // Pushing again now would meet the same gap: report it and stop.
      LogWarning("server held revisions back", {{"reason", out_of_order}});
      return absl::FailedPreconditionError(
          absl::StrCat("the server held revisions back: ", out_of_order));
    }
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
    summary.conflicts += page.conflicts;
    ++summary.batches;
    for (RejectedRevision& r : page.rejections) summary.rejections.push_back(std::move(r));
    if (options_.on_progress) {
      options_.on_progress(
          SyncProgress{SyncProgress::Phase::kPush, summary.pushed, total, summary.batches});
    }
  }
  return summary;
}

absl::StatusOr<PullSummary> SyncEngine::PullLocked() {
  PullSummary summary;
  PS_ASSIGN_OR_RETURN(SyncState state, store_->GetSyncState());
  std::string cursor = state.cursor;
  // Pull's snapshots cover every table: the log it follows afterwards does.
  SnapshotRequestOptions snapshot_options;
  snapshot_options.rows_per_message = options_.snapshot_rows_per_message;
  snapshot_options.chunk_rows = options_.snapshot_chunk_rows;
  bool snapshot_due = cursor.empty() && options_.pull_initial_sync == InitialSync::kSnapshot;
  while (true) {
    if (snapshot_due) {
      // Invariant 4: one snapshot per Pull at most (snapshotted is set).
      PS_ASSIGN_OR_RETURN(summary.snapshot, SnapshotLocked(snapshot_options, {}));
      summary.snapshotted = true;
      snapshot_due = false;
      cursor = summary.snapshot.cursor;
    }
    v1::PullChangesRequest request;
    request.set_cursor(cursor);
    request.set_limit(options_.pull_page_limit);
    request.set_accept_encoding(options_.accept_compressed_pull ? v1::PAYLOAD_ENCODING_BROTLI
                                                                : v1::PAYLOAD_ENCODING_IDENTITY);
    absl::StatusOr<v1::PullChangesResponse> response = transport_->PullChanges(request);
    if (!response.ok()) {
      if (IsResnapshot(response.status()) && !summary.snapshotted) {
        LogWarning("server asked for a re-snapshot; taking one",
                   {{"status", response.status()}});
        snapshot_due = true;
        continue;
      }
      if (IsResnapshot(response.status())) {
        LogWarning("server asked for a re-snapshot again right after one; giving up this pull",
                   {{"status", response.status()}});
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
    if (options_.on_progress) {
      options_.on_progress(
          SyncProgress{SyncProgress::Phase::kPull, summary.pulled, 0, summary.pages});
    }
    if (!response->has_more()) break;
    if (changes.empty() && response->next_cursor() == cursor) {
      return absl::InternalError("server reported has_more without advancing the cursor");
    }
    cursor = response->next_cursor();
  }
  return summary;
}

absl::StatusOr<SnapshotSummary> SyncEngine::SnapshotLocked(const SnapshotRequestOptions& options,
                                                           const CancelRegistrar& register_cancel) {
  v1::SnapshotRequest request;
  for (const std::string& t : options.tables) request.add_tables(t);
  request.set_rows_per_message(options.rows_per_message);
  request.set_include_deleted(options.include_deleted);
  PS_ASSIGN_OR_RETURN(std::unique_ptr<SnapshotStream> stream, transport_->Snapshot(request));
  if (register_cancel) register_cancel([s = stream.get()] { s->Cancel(); });

  std::vector<SnapshotRows> buffer;
  int64_t buffered = 0;
  bool chunked = false;  // BeginSnapshot was called: too big for one transaction
  SnapshotSummary summary;
  bool have_cursor = false;
  absl::Status apply_status;
  v1::SnapshotResponse message;
  while (stream->Read(&message)) {
    if (message.has_rows()) {
      if (have_cursor) {
        apply_status = absl::DataLossError("snapshot rows after the snapshot's cursor");
        break;
      }
      SnapshotRows rows;
      rows.table = message.rows().table();
      rows.object_type = message.rows().object_type();
      rows.records.assign(message.rows().records().begin(), message.rows().records().end());
      buffered += static_cast<int64_t>(rows.records.size());
      buffer.push_back(std::move(rows));
      if (buffered >= options.chunk_rows) {
        if (!chunked) {
          apply_status = store_->BeginSnapshot(options.tables);
          if (!apply_status.ok()) break;
          chunked = true;
        }
        absl::StatusOr<ApplySnapshotSummary> part = store_->ApplySnapshotChunk(buffer);
        if (!part.ok()) {
          apply_status = part.status();
          break;
        }
        summary.rows.applied += part->applied;
        summary.rows.skipped += part->skipped;
        buffer.clear();
        buffered = 0;
      }
    } else if (message.part_case() == v1::SnapshotResponse::kCursor) {
      summary.cursor = message.cursor();
      have_cursor = true;
    }
  }
  if (!apply_status.ok()) stream->Cancel();
  if (register_cancel) register_cancel(nullptr);
  absl::Status status = stream->Finish();
  stream.reset();
  if (apply_status.ok() && status.ok() && !have_cursor) {
    apply_status = absl::UnavailableError("the snapshot stream ended without a cursor");
  }
  if (!apply_status.ok() || !status.ok()) {
    if (chunked) store_->AbortSnapshot();
    return !apply_status.ok() ? apply_status : status;
  }

  if (chunked) {
    absl::StatusOr<ApplySnapshotSummary> part = store_->ApplySnapshotChunk(buffer);
    absl::StatusOr<ApplySnapshotSummary> finish =
        part.ok() ? store_->FinishSnapshot(summary.cursor) : part;
    if (!finish.ok()) {
      store_->AbortSnapshot();
      return finish.status();
    }
    summary.rows.applied += part->applied;
    summary.rows.skipped += part->skipped;
    summary.rows.removed += finish->removed;
    summary.rows.kept += finish->kept;
  } else {
    PS_ASSIGN_OR_RETURN(summary.rows,
                        store_->ApplySnapshot(buffer, summary.cursor, options.tables));
  }
  LogInfo("snapshot applied", {{"applied", summary.rows.applied},
                               {"skipped", summary.rows.skipped},
                               {"removed", summary.rows.removed},
                               {"kept", summary.rows.kept}});
  return summary;
}

}  // namespace pulsesync

#include "server/service/change_stream.h"

#include <cstring>
#include <utility>

#include <grpc/slice.h>

#include "absl/strings/str_cat.h"
#include "common/log.h"
#include "server/core/change_feed.h"
#include "server/core/database_info.h"
#include "server/service/sync_service.h"
#include "server/storage/worker_pool.h"

namespace pulsesync {
namespace {

// One slice holding `parts` side by side: a copy of the shared encodings,
// one allocation per message (referencing each part from the message
// instead cost an allocation and a contended reference count per change
// per stream, more than copying its few hundred bytes).
grpc::Slice Concatenate(const std::vector<const std::string*>& parts, size_t bytes) {
  grpc_slice slice = grpc_slice_malloc(bytes);
  uint8_t* out = GRPC_SLICE_START_PTR(slice);
  for (const std::string* part : parts) {
    std::memcpy(out, part->data(), part->size());
    out += part->size();
  }
  return grpc::Slice(slice, grpc::Slice::STEAL_REF);
}

}  // namespace

ChangeStreamReactor::ChangeStreamReactor(const v1::StreamChangesRequest* request,
                                         WorkerPool* pool, FeedHub* hub,
                                         absl::StatusOr<Principal> principal,
                                         std::unique_ptr<PrincipalLimits::StreamLease> lease,
                                         ChangeStreamOptions options)
    : pool_(pool),
      hub_(hub),
      options_(options),
      request_(*request),
      principal_(std::move(principal)),
      lease_(std::move(lease)) {
  listening_ = hub_->AddListener(this);

  absl::StatusOr<Cursor> cursor = DecodeCursor(request_.cursor());
  bool start = false;
  {
    absl::MutexLock lock(&mu_);
    if (!listening_) {
      FinishWith(grpc::Status(grpc::StatusCode::UNAVAILABLE,
                              "server shutting down: resume from your last cursor"));
    } else if (!principal_.ok()) {
      FinishWith(ToGrpcStatus(principal_.status()));
    } else if (!cursor.ok()) {
      FinishWith(ToGrpcStatus(cursor.status()));
    } else {
      cursor_ = request_.cursor();
      start = true;
    }
  }
  if (start) {
    StartJob();
  } else {
    Pump();
  }
}

// Runs outside mu_. Each action other than kNone keeps the reactor alive
// by itself (a write in flight, Finish not yet called, or a counted job);
// after kNone the caller must not touch `this`.
void ChangeStreamReactor::Execute(Action action, const grpc::Status& status) {
  switch (action) {
    case Action::kNone:
      return;
    case Action::kWrite:
      StartWrite(&message_);  // message_ stays untouched until OnWriteDone
      return;
    case Action::kFinish:
      Finish(status);
      return;
    case Action::kReadLog:
      ReadLogPage();  // Decide counted the job
      return;
  }
}

ChangeStreamReactor::Action ChangeStreamReactor::Decide(grpc::Status* status) {
  const Action action = NextAction();
  if (action == Action::kFinish) {
    finished_ = true;
    *status = *finish_;
  }
  return action;
}

void ChangeStreamReactor::FinishWith(grpc::Status status) {
  if (!finish_.has_value()) finish_ = std::move(status);
}

bool ChangeStreamReactor::EndJob() {
  --jobs_;
  return done_ && jobs_ == 0;
}

void ChangeStreamReactor::StartJob() {
  {
    absl::MutexLock lock(&mu_);
    ++jobs_;
  }
  const absl::Status queued = pool_->Submit([this](PgSession& session) {
    absl::Status status;
    std::optional<ChangeFilter> filter;
    std::optional<TeamScope> scope;
    absl::StatusOr<DatabaseInfo> info = DescribeDatabase(session);
    status = info.status();
    if (status.ok()) {
      absl::StatusOr<ChangeFilter> compiled =
          ChangeFilter::Compile(request_.subscriptions(), info->table_names);
      status = compiled.status();
      if (compiled.ok()) filter = std::move(*compiled);
    }
    if (status.ok()) {
      absl::StatusOr<TeamScope> s = TeamScope::For(session, *principal_);
      status = s.status();
      if (s.ok()) scope = std::move(*s);
    }
    FeedHub* const hub = hub_;  // outlives the reactor, which may be gone below
    CompleteJob([&] {
      if (!status.ok()) {
        FinishWith(ToGrpcStatus(status));
        return;
      }
      filter_ = std::move(filter);
      scope_ = std::move(scope);
      mode_ = Mode::kJoining;
    });
    hub->Wake();  // joining waits for the hub's next poll: make it now
  });
  if (!queued.ok()) SubmitFailed(queued);
}

void ChangeStreamReactor::SubmitFailed(const absl::Status& why) {
  CompleteJob([&] { FinishWith(ToGrpcStatus(why)); });
}

void ChangeStreamReactor::CompleteJob(const std::function<void()>& apply) {
  bool delete_now;
  Action action = Action::kNone;
  grpc::Status finish_status;
  {
    absl::MutexLock lock(&mu_);
    delete_now = EndJob();
    if (!delete_now) {
      apply();
      action = Decide(&finish_status);
    }
  }
  if (delete_now) {
    delete this;
    return;
  }
  Execute(action, finish_status);
}

void ChangeStreamReactor::ReadLogPage() {
  std::string from;
  Cursor join;
  {
    absl::MutexLock lock(&mu_);
    from = cursor_;
    join = join_;
  }
  const absl::Status queued = pool_->Submit([this, from, join](PgSession& session) {
    ReadOptions read;
    read.limit = options_.catch_up_page;
    read.event_cursors = true;
    read.upper_bound = join.delivered;
    absl::StatusOr<PullPage> page = ReadChanges(session, from, read);
    std::shared_ptr<FeedBatch> batch;
    if (page.ok()) batch = MakeFeedBatch(std::move(page->changes), page->next_cursor);
    CompleteJob([&] {
      if (!page.ok()) {
        FinishWith(ToGrpcStatus(page.status()));
        return;
      }
      source_ = std::move(batch);
      source_live_ = false;
      index_ = 0;
      caught_up_ = !page->has_more && page->next.batch_upper.empty() &&
                   page->next.delivered == join.delivered;
    });
  });
  if (!queued.ok()) SubmitFailed(queued);
}

void ChangeStreamReactor::OnFeedAdvanced(bool closing) {
  {
    absl::MutexLock lock(&mu_);
    if (finished_ || done_) return;
    if (closing) {
      FinishWith(grpc::Status(grpc::StatusCode::UNAVAILABLE,
                              "server shutting down: resume from your last cursor"));
    } else if (mode_ == Mode::kJoining) {
      const FeedHub::Position head = hub_->Head();
      if (!head.ready) return;
      if (request_.from_now() && cursor_.empty() && last_sent_cursor_.empty()) {
        cursor_ = EncodeCursor(head.cursor);
        next_seq_ = head.next_seq;
        mode_ = Mode::kLive;
        announce_live_ = true;
      } else {
        // Join only where a batch ends: mid-batch, the head's cursor covers
        // rows of pages already in the ring that catching up to its
        // `delivered` would skip. The hub notifies again after the last page.
        if (!head.cursor.batch_upper.empty()) return;
        // And only at a point that includes everything the stream's cursor
        // has (a poll that began before the client's cursor was issued, e.g.
        // by PullChanges or another replica, is behind it): joining there
        // would deliver again what the client already has. Wait for a later
        // poll, and ask for one.
        if (!cursor_.empty()) {
          absl::StatusOr<Cursor> mine = DecodeCursor(cursor_);
          const std::string& covered =
              !mine.ok() ? std::string()
                         : (!mine->batch_upper.empty() ? mine->batch_upper : mine->delivered);
          // Snapshots of two incarnations of the database do not compare
          // (change_feed.h, point 8); catching up rewinds the older cursor.
          const bool same_incarnation =
              mine.ok() && (mine->incarnation == 0 || mine->incarnation == head.cursor.incarnation);
          if (!covered.empty() && same_incarnation &&
              !SnapshotIncludes(head.cursor.delivered, covered)) {
            hub_->Wake();
            return;
          }
        }
        join_ = head.cursor;
        join_seq_ = head.next_seq;
        caught_up_ = false;
        mode_ = Mode::kCatchingUp;
      }
    } else if (mode_ != Mode::kLive) {
      return;
    }
  }
  Pump();
}

bool ChangeStreamReactor::NextFromSource() {
  // Pack the matching changes that are ready into one message, across
  // batches while they keep coming: per-message costs (gRPC framing, a write
  // round trip, the client's parse and local transaction) dominate the
  // fan-out, not the bytes, so a stream whose client is slower than the
  // writes gets fewer, fuller messages instead of falling further behind.
  while (index_ < source_->events.size()) {
    const FeedEvent& event = source_->events[index_++];
    const bool in_scope = scope_->Admit(event);
    // The record is parsed (once, for all streams) only if a filter reads it.
    if (!in_scope ||
        !filter_->Matches(event.change,
                          filter_->has_column_filters() ? event.filter_record() : nullptr)) {
      continue;
    }
    const std::string& wire = event.wire();
    parts_.push_back(&wire);
    parts_bytes_ += wire.size();
    cursor_ = event.change.cursor();
    packed_cursor_ = cursor_;
    if (parts_.size() >= static_cast<size_t>(options_.max_changes_per_message) ||
        parts_bytes_ >= options_.max_message_bytes) {
      WritePacked();
      return true;
    }
  }
  cursor_ = source_->end_cursor;
  if (source_live_) next_seq_ = source_->seq + 1;
  if (!parts_.empty()) held_.push_back(std::move(source_));  // parts_ point into it
  source_.reset();
  return false;
}

void ChangeStreamReactor::WritePacked() {
  grpc::Slice changes = Concatenate(parts_, parts_bytes_);
  message_ = grpc::ByteBuffer(&changes, 1);
  parts_.clear();
  parts_bytes_ = 0;
  held_.clear();
  // What the client has: the last change's cursor. The stream's own may be
  // past it (changes filtered out after it); a checkpoint tells it later.
  last_sent_cursor_ = packed_cursor_;
  last_write_ = absl::Now();
  write_in_flight_ = true;
}

void ChangeStreamReactor::WriteCheckpoint() {
  v1::StreamChangesResponse m;
  m.set_checkpoint(cursor_);
  grpc::Slice checkpoint(m.SerializeAsString());
  message_ = grpc::ByteBuffer(&checkpoint, 1);
  last_sent_cursor_ = cursor_;
  last_write_ = absl::Now();
  write_in_flight_ = true;
}

bool ChangeStreamReactor::WriteCheckpointIfDue() {
  if (cursor_ == last_sent_cursor_ ||
      absl::Now() - last_write_ < options_.checkpoint_interval) {
    return false;
  }
  WriteCheckpoint();
  return true;
}

ChangeStreamReactor::Action ChangeStreamReactor::NextAction() {
  if (finished_ || write_in_flight_) return Action::kNone;
  // A stream outlives no token: it ends when the caller's credentials
  // expire (the hub's polls re-check idle streams), and the client resumes
  // from its cursor with a fresh token.
  if (principal_.ok() && absl::Now() >= principal_->expires) {
    FinishWith(grpc::Status(grpc::StatusCode::UNAUTHENTICATED,
                            "token expired: resume from your last cursor with a fresh token"));
  }
  if (finish_.has_value()) return Action::kFinish;
  if (jobs_ > 0) return Action::kNone;
  while (true) {
    if (source_ != nullptr) {
      if (NextFromSource()) return Action::kWrite;
      // A page read from the log goes out before the next is read.
      if (!source_live_ || mode_ != Mode::kLive) {
        if (!parts_.empty()) {
          WritePacked();
          return Action::kWrite;
        }
        if (WriteCheckpointIfDue()) return Action::kWrite;
      }
      continue;
    }
    switch (mode_) {
      case Mode::kLive: {
        if (announce_live_) {
          announce_live_ = false;
          if (cursor_ != last_sent_cursor_) {
            WriteCheckpoint();
            return Action::kWrite;
          }
        }
        std::shared_ptr<const FeedBatch> batch = hub_->Get(next_seq_);
        if (batch != nullptr) {
          source_ = std::move(batch);
          source_live_ = true;
          index_ = 0;
          continue;
        }
        // Nothing more is ready: what was packed goes now.
        if (!parts_.empty()) {
          WritePacked();
          return Action::kWrite;
        }
        if (WriteCheckpointIfDue()) return Action::kWrite;
        if (next_seq_ < hub_->oldest_seq()) {
          // Fell out of the ring: catch up from the log by our own cursor.
          mode_ = Mode::kJoining;
          hub_->Wake();
        }
        return Action::kNone;
      }
      case Mode::kCatchingUp:
        if (caught_up_) {
          mode_ = Mode::kLive;
          next_seq_ = join_seq_;
          announce_live_ = true;
          continue;
        }
        ++jobs_;
        return Action::kReadLog;
      case Mode::kStarting:
      case Mode::kJoining:
        return Action::kNone;
    }
  }
}

void ChangeStreamReactor::Pump() {
  Action action;
  grpc::Status status;
  {
    absl::MutexLock lock(&mu_);
    action = Decide(&status);
  }
  Execute(action, status);
}

void ChangeStreamReactor::OnWriteDone(bool ok) {
  {
    absl::MutexLock lock(&mu_);
    write_in_flight_ = false;
    message_.Clear();  // an idle stream holds no message
    if (!ok) FinishWith(grpc::Status(grpc::StatusCode::CANCELLED, "client went away"));
  }
  Pump();
}

void ChangeStreamReactor::OnCancel() {
  {
    absl::MutexLock lock(&mu_);
    FinishWith(grpc::Status(grpc::StatusCode::CANCELLED, "cancelled by the client"));
  }
  Pump();
}

void ChangeStreamReactor::OnDone() {
  if (listening_) hub_->RemoveListener(this);
  bool delete_now;
  {
    absl::MutexLock lock(&mu_);
    done_ = true;
    delete_now = jobs_ == 0;
  }
  if (delete_now) delete this;
}

}  // namespace pulsesync

#include "server/core/feed_hub.h"

#include <poll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <algorithm>
#include <utility>

#include "common/log.h"
#include "google/protobuf/io/coded_stream.h"
#include "google/protobuf/wire_format_lite.h"
#include "server/core/change_feed.h"
#include "server/core/change_filter.h"

namespace pulsesync {

const JsonValue* FeedEvent::filter_record() const {
  absl::call_once(lazy_->once, [this] {
    absl::StatusOr<JsonValue> record = ParseJson(ChangeFilter::FilterRecord(change));
    if (record.ok()) lazy_->record = *std::move(record);
  });
  return lazy_->record.has_value() ? &*lazy_->record : nullptr;
}

void FeedEvent::set_filter_record(JsonValue record) {
  absl::call_once(lazy_->once, [&] { lazy_->record = std::move(record); });
}

const std::string& FeedEvent::wire() const {
  absl::call_once(lazy_->wire_once, [this] {
    using google::protobuf::internal::WireFormatLite;
    const size_t size = change.ByteSizeLong();
    std::string& out = lazy_->wire;
    out.resize(size + 16);  // tag and length take at most 1 + 10 bytes
    auto* const start = reinterpret_cast<uint8_t*>(out.data());
    uint8_t* p = WireFormatLite::WriteTagToArray(v1::StreamChangesResponse::kChangesFieldNumber,
                                                 WireFormatLite::WIRETYPE_LENGTH_DELIMITED, start);
    p = google::protobuf::io::CodedOutputStream::WriteVarint32ToArray(static_cast<uint32_t>(size),
                                                                      p);
    p = change.SerializeWithCachedSizesToArray(p);
    out.resize(static_cast<size_t>(p - start));
  });
  return lazy_->wire;
}

std::shared_ptr<FeedBatch> MakeFeedBatch(std::vector<v1::Change> changes,
                                         std::string end_cursor) {
  auto batch = std::make_shared<FeedBatch>();
  batch->end_cursor = std::move(end_cursor);
  batch->events.reserve(changes.size());
  for (v1::Change& c : changes) {
    FeedEvent e;
    e.change = std::move(c);
    batch->events.push_back(std::move(e));
  }
  return batch;
}

FeedHub::FeedHub(PgSessionOptions session_options, FeedHubOptions options)
    : options_(std::move(options)), session_(std::move(session_options)) {
  wake_fd_ = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
}

FeedHub::~FeedHub() {
  Stop();
  if (wake_fd_ >= 0) ::close(wake_fd_);
}

void FeedHub::Start() {
  thread_ = std::thread([this] { Loop(); });
}

void FeedHub::Stop() {
  {
    absl::MutexLock lock(&mu_);
    if (stopping_) return;
    stopping_ = true;
  }
  Wake();
  if (thread_.joinable()) thread_.join();
  NotifyListeners(/*closing=*/true);
}

void FeedHub::Wake() {
  if (wake_fd_ < 0) return;
  const uint64_t one = 1;
  ssize_t ignored = ::write(wake_fd_, &one, sizeof(one));
  (void)ignored;
}

bool FeedHub::AddListener(Listener* listener) {
  absl::MutexLock lock(&listeners_mu_);
  if (closing()) return false;  // Stop() notifies under listeners_mu_ after this
  listeners_.push_back(listener);
  return true;
}

void FeedHub::RemoveListener(Listener* listener) {
  absl::MutexLock lock(&listeners_mu_);
  listeners_.erase(std::remove(listeners_.begin(), listeners_.end(), listener), listeners_.end());
}

FeedHub::Position FeedHub::Head() const {
  absl::MutexLock lock(&mu_);
  return head_;
}

std::shared_ptr<const FeedBatch> FeedHub::Get(uint64_t seq) const {
  absl::MutexLock lock(&mu_);
  if (ring_.empty() || seq < ring_.front()->seq || seq > ring_.back()->seq) return nullptr;
  return ring_[seq - ring_.front()->seq];
}

uint64_t FeedHub::oldest_seq() const {
  absl::MutexLock lock(&mu_);
  return ring_.empty() ? head_.next_seq : ring_.front()->seq;
}

FeedHub::Stats FeedHub::stats() const {
  absl::MutexLock lock(&mu_);
  return Stats{caught_up_at_, ring_.size(), ring_events_};
}

bool FeedHub::closing() const {
  absl::MutexLock lock(&mu_);
  return stopping_;
}

void FeedHub::NotifyListeners(bool closing) {
  absl::MutexLock lock(&listeners_mu_);
  for (Listener* l : listeners_) l->OnFeedAdvanced(closing);
}

bool FeedHub::PollOnce() {
  Cursor start;
  const absl::Time started = absl::Now();
  {
    absl::MutexLock lock(&mu_);
    start = head_.cursor;
  }
  ReadOptions read;
  read.limit = options_.page_limit;
  read.event_cursors = true;
  absl::StatusOr<PullPage> page = ReadChanges(session_, EncodeCursor(start), read);
  if (!page.ok()) {
    LogWarning("feed poll failed", {{"status", page.status()}});
    if (page.status().code() == absl::StatusCode::kFailedPrecondition) {
      // The database is not the one the hub followed (restored?), or the
      // log was compacted past the hub: start over from its present. The
      // ring is dropped and a sequence number skipped, so every live stream
      // finds itself evicted and catches up by its own cursor, which the
      // reader then accepts or refuses ("re-snapshot") on its own merits.
      absl::MutexLock lock(&mu_);
      head_.ready = false;
      ring_.clear();
      ring_events_ = 0;
      ++head_.next_seq;
    }
    return false;
  }
  std::shared_ptr<FeedBatch> batch;
  if (!page->changes.empty()) {
    batch = MakeFeedBatch(std::move(page->changes), page->next_cursor);
    if (options_.on_batch) options_.on_batch(*batch);
  }
  {
    absl::MutexLock lock(&mu_);
    if (batch != nullptr) {
      batch->seq = head_.next_seq++;
      ring_events_ += batch->events.size();
      ring_.push_back(std::move(batch));
      while (ring_.size() > 1 &&
             (ring_.size() > options_.max_batches || ring_events_ > options_.max_events)) {
        ring_events_ -= ring_.front()->events.size();
        ring_.pop_front();
      }
    }
    head_.cursor = std::move(page->next);
    if (!page->has_more) caught_up_at_ = started;
  }
  NotifyListeners(/*closing=*/false);
  return page->has_more;
}

void FeedHub::MaybeCompact() {
  if (options_.log_retention <= absl::ZeroDuration() || absl::Now() < next_compaction_) return;
  next_compaction_ = absl::Now() + options_.compaction_interval;
  constexpr int64_t kBatch = 10000;
  int64_t total = 0;
  // Runs on the hub thread, so delivery pauses meanwhile: a few batches per
  // interval, and a backlog is worked off over several intervals.
  for (int round = 0; round < 5; ++round) {
    absl::StatusOr<int64_t> deleted = CompactChangeLog(session_, options_.log_retention, kBatch);
    if (!deleted.ok()) {
      LogWarning("change log compaction failed", {{"status", deleted.status()}});
      return;
    }
    total += *deleted;
    if (*deleted < kBatch) break;
  }
  if (total > 0) {
    LogInfo("compacted the change log",
            {{"rows", total},
             {"older_than_s", static_cast<int64_t>(absl::ToInt64Seconds(options_.log_retention))}});
  }
}

void FeedHub::Loop() {
  (void)session_.Listen(options_.notify_channel);
  absl::Duration backoff = absl::Milliseconds(100);
  while (true) {
    bool ready;
    {
      absl::MutexLock lock(&mu_);
      if (stopping_) return;
      ready = head_.ready;
    }
    // Drain wake-ups before polling: one that arrives during the poll then
    // makes the next wait return at once instead of being lost.
    uint64_t drained;
    while (::read(wake_fd_, &drained, sizeof(drained)) > 0) {
    }
    if (!ready) {
      absl::StatusOr<Cursor> now = CurrentCursor(session_);
      if (now.ok()) {
        {
          absl::MutexLock lock(&mu_);
          head_.cursor = std::move(*now);
          head_.ready = true;
        }
        backoff = absl::Milliseconds(100);
        LogInfo("feed hub following the change log");
        NotifyListeners(false);
      } else {
        LogWarning("feed hub cannot start", {{"status", now.status()}});
      }
    } else {
      while (PollOnce()) {
        absl::MutexLock lock(&mu_);
        if (stopping_) return;
      }
      MaybeCompact();
    }
    absl::StatusOr<int> waited = session_.WaitForNotification(
        ready ? options_.poll_interval : backoff, wake_fd_);
    if (!waited.ok()) {
      // The database is away: wait (still wakeable) before trying again.
      pollfd p{wake_fd_, POLLIN, 0};
      ::poll(&p, 1, static_cast<int>(absl::ToInt64Milliseconds(backoff)));
      backoff = std::min(backoff * 2, absl::Seconds(5));
    }
  }
}

}  // namespace pulsesync

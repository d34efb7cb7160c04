// FeedHub: one reader of the change log per server process, shared by every
// stream (fan-out in the server, not per subscriber in the database).
//
// Design note.
// The hub follows the log with the commit-safe reader (change_feed.h) from
// "now", one page at a time, and keeps the pages it read as a ring of
// FeedBatches in memory. Streams read batches from the ring by sequence
// number and filter them in memory; a stream that falls behind the ring is
// not buffered for: it goes back to reading the log by its own cursor
// (catch-up), so memory stays bounded and nothing is dropped.
//
// Invariants:
// 1. Batches chain: batch N+1 starts at the cursor where batch N ended, or
//    at a later cursor with no change in between (an empty poll advances the
//    head without a batch).
// 2. Each event carries the cursor right after it (Change.cursor); the last
//    event of a batch carries the batch's end cursor.
// 3. Head() is the cursor where the next batch will start. A stream that
//    has delivered everything up to Head().cursor continues, without gap or
//    overlap, with batch Head().next_seq.
// 4. Listeners are told after every poll (even an empty one) and at
//    shutdown; they are never called after RemoveListener returns.
//
// Wake-ups: a NOTIFY on the channel (sent by any replica after it applies
// revisions), a local Wake(), or the poll interval, whichever comes first.
// A lost notification only delays delivery until the next poll.
//
// Thread safety: all public methods are thread-safe. Listener callbacks run
// on the hub thread and must not block.
#ifndef PULSESYNC_SERVER_CORE_FEED_HUB_H_
#define PULSESYNC_SERVER_CORE_FEED_HUB_H_

#include <cstddef>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/call_once.h"
#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "common/json.h"
#include "pulsesync/v1/sync.pb.h"
#include "server/core/cursor.h"
#include "server/storage/pg_session.h"

namespace pulsesync {

struct FeedEvent {
  v1::Change change;  // change.cursor is set

  // The record that subscription filters and team scopes read (old row for
  // DELETE), parsed on first use and then shared by every stream; nullptr
  // if absent or unparsable. Most events are never parsed: a team-scoped
  // stream without column filters reads only the change's team, and a hub
  // with no such stream reads nothing (parsing every change cost a third of
  // the server's CPU while it followed a bulk write). Thread-safe.
  const JsonValue* filter_record() const;
  // Sets the record (before any filter_record call), e.g. in tests.
  void set_filter_record(JsonValue record);

  // The change encoded as one entry of StreamChangesResponse.changes (field
  // tag, length, the serialized Change), made on first use and then shared
  // by every stream that sends it: a stream's message is such entries side
  // by side (copying the message's changes and serializing them again for
  // each stream was 40% of the server's CPU in a 1,000-stream fan-out).
  // Thread-safe; `change` must not change after the first call.
  const std::string& wire() const;

 private:
  struct Lazy {
    absl::once_flag once;
    std::optional<JsonValue> record;
    absl::once_flag wire_once;
    std::string wire;
  };
  std::unique_ptr<Lazy> lazy_ = std::make_unique<Lazy>();
};

struct FeedBatch {
  uint64_t seq = 0;
  std::string end_cursor;  // encoded cursor after the last event
  std::vector<FeedEvent> events;
};

// The changes of a page as a batch (filter records parsed when first
// read). (seq is left 0: the hub numbers the batches it keeps.)
std::shared_ptr<FeedBatch> MakeFeedBatch(std::vector<v1::Change> changes, std::string end_cursor);

struct FeedHubOptions {
  absl::Duration poll_interval = absl::Milliseconds(500);
  uint32_t page_limit = 1000;
  size_t max_batches = 1024;   // ring bounds: whichever is reached first
  size_t max_events = 200000;
  // Also the channel migration 0017's trigger notifies for writes made
  // with SQL: with another one, those are found by the poll only.
  std::string notify_channel = "pulsesync_feed";
  // Log rows older than this are compacted (deleted) by the hub, checked
  // every compaction_interval; zero keeps the log forever.
  absl::Duration log_retention = absl::ZeroDuration();
  absl::Duration compaction_interval = absl::Minutes(1);
  // Called on the hub thread with each batch it read, before streams see
  // it (for metrics); must not block.
  std::function<void(const FeedBatch&)> on_batch;
};

class FeedHub {
 public:
  class Listener {
   public:
    virtual ~Listener() = default;
    // After each poll (closing=false) and once at shutdown (closing=true).
    // Runs on the hub thread; must not block.
    virtual void OnFeedAdvanced(bool closing) = 0;
  };

  struct Position {
    bool ready = false;  // false until the hub has taken its first snapshot
    Cursor cursor;       // where batch next_seq starts
    uint64_t next_seq = 0;
  };

  FeedHub(PgSessionOptions session_options, FeedHubOptions options);
  ~FeedHub();  // Stop()
  FeedHub(const FeedHub&) = delete;
  FeedHub& operator=(const FeedHub&) = delete;

  void Start();
  // Tells listeners closing=true, stops the thread. Idempotent.
  void Stop();
  // Poll now (e.g. this process just committed revisions).
  void Wake();

  // False (and not added) once the hub is stopping.
  [[nodiscard]] bool AddListener(Listener* listener);
  // After it returns, `listener` is not called again.
  void RemoveListener(Listener* listener);

  Position Head() const;
  // The batch with this sequence number; nullptr if not produced yet or
  // already evicted (compare with oldest_seq()).
  std::shared_ptr<const FeedBatch> Get(uint64_t seq) const;
  uint64_t oldest_seq() const;
  bool closing() const;

  struct Stats {
    // When the last poll that reached the end of the log began: every change
    // committed before then has been read (InfinitePast until the first).
    absl::Time caught_up_at = absl::InfinitePast();
    size_t ring_batches = 0;
    size_t ring_events = 0;
  };
  Stats stats() const;

 private:
  void Loop();
  bool PollOnce();  // true if more pages are ready right away
  void MaybeCompact();
  void NotifyListeners(bool closing);

  const FeedHubOptions options_;
  PgSession session_;  // hub thread only
  int wake_fd_ = -1;
  std::thread thread_;
  absl::Time next_compaction_ = absl::InfinitePast();  // hub thread only

  mutable absl::Mutex mu_;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  Position head_ ABSL_GUARDED_BY(mu_);
  std::deque<std::shared_ptr<const FeedBatch>> ring_ ABSL_GUARDED_BY(mu_);
  size_t ring_events_ ABSL_GUARDED_BY(mu_) = 0;
  absl::Time caught_up_at_ ABSL_GUARDED_BY(mu_) = absl::InfinitePast();

  absl::Mutex listeners_mu_;  // held while callbacks run
  std::vector<Listener*> listeners_ ABSL_GUARDED_BY(listeners_mu_);
};

}  // namespace pulsesync

#endif  // PULSESYNC_SERVER_CORE_FEED_HUB_H_

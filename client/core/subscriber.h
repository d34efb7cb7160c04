// Subscriber: keeps a LocalStore following the server's live change feed
// (StreamChanges), and pushes local revisions while it does.
//
// Design note.
// Two background threads, both owned by the Subscriber:
//  - the *subscriber thread* runs connections, one after another:
//      GetServerInfo (is the server there?) -> Push (everything pending)
//      -> [Snapshot, if the store has no cursor] -> StreamChanges(cursor)
//      -> apply each message as it arrives ... until the stream fails
//      -> wait out a backoff -> next connection.
//    It makes every store write of the feed and calls every app callback.
//  - the *push thread* pushes (SyncEngine::Push) on a timer and shortly
//    after local writes, while connected. SyncEngine serializes pushes (a
//    push may run during a snapshot: they take different engine locks).
//
// Invariants:
//  1. The changes of one stream message, their revisions rows and the
//     cursor after the last of them commit in one transaction
//     (LocalStore::ApplyRemoteChanges): all or none. A checkpoint stores
//     its cursor alone. So the stored cursor never gets ahead of the data,
//     and a restart resumes exactly after the last message applied.
//  2. Changes not newer than the local row are skipped by the store, so a
//     change delivered twice (a resumed stream, a snapshot that already had
//     it) changes nothing and is not reported to the app.
//  3. App callbacks run on the subscriber thread, after the transaction that
//     they report committed (one on_change per applied change of a message,
//     in log order), with no lock of the Subscriber or the store
//     held: a callback may read the store (and write to it).
//  4. An empty stored cursor means "never synced" (or the cursor was reset):
//     with InitialSync::kSnapshot the connection starts with a Snapshot and
//     follows from its cursor. FAILED_PRECONDITION "re-snapshot: ..." from
//     the stream does the same in the middle of a connection, once per
//     connection unless the stream made progress in between.
//  5. Any other end of a stream (error, server shutdown, dead connection
//     found by keepalive, even an OK end) is a disconnect: the next
//     connection starts after a delay drawn uniformly from
//     [0, min(max_backoff, initial_backoff * 2^failures)) ("full jitter").
//     `failures` goes back to 0 after a healthy connection: one whose stream
//     moved the cursor, or stayed open for healthy_stream_after.
//  5a. An end with kUnauthenticated (the server ends a stream when its
//     token expires, and refuses calls with an expired one) reconnects at
//     once instead, so that the transport asks its token provider for a
//     fresh token (GrpcTransportOptions::token_provider) and the stream
//     resumes from the stored cursor with no gap. Only once without a
//     healthy connection in between: a provider that keeps returning bad
//     tokens gets the backoff of invariant 5, not a hot loop. The
//     disconnect is reported to on_connection like any other (retry_in
//     zero).
//  6. Stop() cancels the open stream, wakes both threads from any wait, and
//     joins them. It waits only for a unary call in flight (GetServerInfo or
//     a push), which the transport's deadline bounds.
//
// State table (subscriber thread):
//   state          event                               next (function)
//   backoff        delay passed                        probing (RunConnection)
//   probing        GetServerInfo + Push OK             connected (on_connection)
//   probing        error                               backoff (Run)
//   connected      no cursor & kSnapshot               snapshot (RunSnapshot)
//   snapshot       cursor received, applied            streaming
//   connected      cursor                              streaming (RunConnection)
//   streaming      changes / checkpoint                streaming (ApplyStreamMessage)
//   streaming      "re-snapshot:"                      snapshot
//   streaming      other end                           backoff (on_connection)
//   streaming      kUnauthenticated (5a)               probing, no delay (Run)
//   any            Stop()                              stopped
//
// Thread safety: Start, Stop and the destructor are for the owner's thread
// (not for a callback: Stop from a callback would wait for itself);
// PushSoon and connected() are thread-safe. The store, transport and engine
// are not owned and must outlive the Subscriber; the transport must be safe
// for two threads (GrpcTransport is). The Subscriber sets the store's local
// write listener while it runs (and clears it in Stop).
#ifndef PULSESYNC_CLIENT_CORE_SUBSCRIBER_H_
#define PULSESYNC_CLIENT_CORE_SUBSCRIBER_H_

#include <cstdint>
#include <functional>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "client/core/sync_engine.h"
#include "client/core/transport.h"
#include "client/store/local_store.h"
#include "pulsesync/v1/sync.pb.h"

namespace pulsesync {

// Time and waiting, injectable so that tests control backoff and timers.
// Implementations are thread-safe.
class SubscriberClock {
 public:
  virtual ~SubscriberClock() = default;
  virtual absl::Time Now() = 0;
  // REQUIRES: `mu` held (it is held again on return). Waits until `cond`
  // holds (true) or Now() reaches `deadline` (false); `cond` is evaluated
  // with `mu` held.
  virtual bool AwaitWithDeadline(absl::Mutex* mu, const absl::Condition& cond,
                                 absl::Time deadline) = 0;
  // absl::Now() and absl::Mutex::AwaitWithDeadline.
  static SubscriberClock* Real();
};

// One remote change that changed the local database.
struct ChangeNotification {
  std::string table;        // e.g. "tasks"
  std::string object_type;  // e.g. "task"
  std::string object_id;
  ChangeEvent event = ChangeEvent::kUpdate;
  int64_t version = 0;      // the object's version now
  std::string origin_id;    // who wrote it; empty for writes made in SQL
  // The write came from this database (origin_id is the store's): the
  // server's echo of a local write, now with its server version.
  bool from_this_device = false;
  // The cursor after this change. The store holds the cursor after the
  // last change of its message (invariant 1), which may be further on.
  std::string cursor;
};

// A snapshot was applied (initial sync or re-snapshot). The app should
// reload what it shows: snapshots are not reported row by row.
struct SnapshotNotification {
  ApplySnapshotSummary summary;
  bool resnapshot = false;  // the server refused the cursor (vs. initial sync)
  std::string cursor;
};

struct ConnectionEvent {
  enum class State { kConnected, kDisconnected };
  State state = State::kDisconnected;
  // kDisconnected: why (kCancelled once Stop() was called).
  absl::Status status;
  // kDisconnected: how long until the next attempt (zero when stopping).
  absl::Duration retry_in;
  // kDisconnected: connection attempts that failed in a row, this one
  // included (0 after a healthy connection, see invariant 5).
  int failures = 0;
};

struct SubscriberOptions {
  // What to follow; empty = every change in the caller's scope. The cursor
  // moves past what is filtered out, so a database that follows a subset
  // never receives the rest later: use filters for a partial replica only.
  std::vector<v1::Subscription> subscriptions;
  // kSnapshot: an empty cursor starts with a Snapshot (invariant 4).
  // kLogStart: it streams from the start of the log instead, and still
  // re-snapshots when the server says so.
  InitialSync initial_sync = InitialSync::kSnapshot;
  // What this Subscriber's snapshots ask for and how they are applied.
  SnapshotRequestOptions snapshot;

  // Reconnection (invariant 5).
  absl::Duration initial_backoff = absl::Milliseconds(200);
  absl::Duration max_backoff = absl::Seconds(30);
  absl::Duration healthy_stream_after = absl::Seconds(10);
  // Pushes besides the one at each (re)connection.
  absl::Duration push_interval = absl::Minutes(2);
  // After a local write, push this long after the first write not yet
  // pushed (later writes in the window go with it).
  absl::Duration push_debounce = absl::Milliseconds(300);

  // Seeds the backoff jitter; 0 = from std::random_device.
  uint64_t random_seed = 0;
  // nullptr = SubscriberClock::Real(). Must outlive the Subscriber.
  SubscriberClock* clock = nullptr;

  // Callbacks, all on the subscriber thread (invariant 3); any may be empty.
  std::function<void(const ChangeNotification&)> on_change;
  std::function<void(const SnapshotNotification&)> on_snapshot;
  std::function<void(const ConnectionEvent&)> on_connection;
};

class Subscriber {
 public:
  Subscriber(LocalStore* store, Transport* transport, SyncEngine* engine,
             SubscriberOptions options = {});
  Subscriber(const Subscriber&) = delete;
  Subscriber& operator=(const Subscriber&) = delete;
  // Stops (see Stop).
  ~Subscriber();

  // Starts both threads; the first connection attempt starts at once.
  // No-op if running. May be called again after Stop (resumes from the
  // stored cursor).
  void Start();

  // Cancels the stream, wakes and joins both threads (invariant 6). After
  // it returns no callback runs. If connected, on_connection reports a
  // kDisconnected with kCancelled before Stop returns. No-op if not running.
  void Stop();

  // Asks the push thread to push now (if connected; a disconnected
  // subscriber pushes when it reconnects anyway).
  void PushSoon();

  // Whether the current connection is up (GetServerInfo and push succeeded
  // and the stream has not ended).
  bool connected() const;

 private:
  void RunSubscriberThread();
  void RunPushThread();
  // One connection, until its stream ends. *healthy: see invariant 5.
  absl::Status RunConnection(bool* healthy);
  // Takes a snapshot (SyncEngine::Snapshot, cancellable by Stop) and
  // reports it; `resnapshot` only for reporting.
  absl::Status RunSnapshot(bool resnapshot);
  // Applies one stream message (all its changes in one transaction);
  // `cursor` is the stored cursor, updated.
  absl::Status ApplyStreamMessage(const v1::StreamChangesResponse& message, std::string* cursor,
                                  bool* progress);
  absl::Duration NextBackoff(int failures);
  void SetConnected(bool connected, const absl::Status& status, absl::Duration retry_in,
                    int failures);
  bool stop_requested() const;
  void OnLocalWrite();

  LocalStore* const store_;
  Transport* const transport_;
  SyncEngine* const engine_;
  const SubscriberOptions options_;
  SubscriberClock* const clock_;
  std::mt19937_64 rng_;  // subscriber thread only

  mutable absl::Mutex mu_;
  bool running_ ABSL_GUARDED_BY(mu_) = false;
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  bool connected_ ABSL_GUARDED_BY(mu_) = false;
  // Cancels the stream (change feed or snapshot) the subscriber thread has
  // open; empty when none.
  std::function<void()> cancel_stream_ ABSL_GUARDED_BY(mu_);
  bool push_now_ ABSL_GUARDED_BY(mu_) = false;
  uint64_t local_writes_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t writes_at_start_ ABSL_GUARDED_BY(mu_) = 0;

  std::thread subscriber_thread_;
  std::thread push_thread_;
};

}  // namespace pulsesync

#endif  // PULSESYNC_CLIENT_CORE_SUBSCRIBER_H_

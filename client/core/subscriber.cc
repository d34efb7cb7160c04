#include "client/core/subscriber.h"

#include <algorithm>
#include <utility>
#include <vector>

#include "common/log.h"
#include "common/status_macros.h"

namespace pulsesync {
namespace {

class RealSubscriberClock final : public SubscriberClock {
 public:
  absl::Time Now() override { return absl::Now(); }
  bool AwaitWithDeadline(absl::Mutex* mu, const absl::Condition& cond,
                         absl::Time deadline) override {
    return mu->AwaitWithDeadline(cond, deadline);
  }
};

// The server or the network, as opposed to a problem with our request.
bool IsConnectivity(const absl::Status& status) {
  return status.code() == absl::StatusCode::kUnavailable ||
         status.code() == absl::StatusCode::kDeadlineExceeded;
}

}  // namespace

SubscriberClock* SubscriberClock::Real() {
  static RealSubscriberClock* const clock = new RealSubscriberClock();
  return clock;
}

Subscriber::Subscriber(LocalStore* store, Transport* transport, SyncEngine* engine,
                       SubscriberOptions options)
    : store_(store),
      transport_(transport),
      engine_(engine),
      options_(std::move(options)),
      clock_(options_.clock != nullptr ? options_.clock : SubscriberClock::Real()),
      rng_(options_.random_seed != 0 ? options_.random_seed : std::random_device{}()) {}

Subscriber::~Subscriber() { Stop(); }

void Subscriber::Start() {
  {
    absl::MutexLock lock(&mu_);
    if (running_) return;
    running_ = true;
    stop_ = false;
    push_now_ = false;
    // Writes from now on are the push thread's, even those made before the
    // thread gets to run.
    writes_at_start_ = local_writes_;
  }
  store_->SetLocalWriteListener([this] { OnLocalWrite(); });
  subscriber_thread_ = std::thread([this] { RunSubscriberThread(); });
  push_thread_ = std::thread([this] { RunPushThread(); });
}

void Subscriber::Stop() {
  {
    absl::MutexLock lock(&mu_);
    if (!running_) return;
    stop_ = true;
    if (cancel_stream_) cancel_stream_();
  }
  // Not under mu_: the listener takes mu_ (lock order: store listener, then
  // mu_). After this returns the listener is not running and never will.
  store_->SetLocalWriteListener(nullptr);
  if (subscriber_thread_.joinable()) subscriber_thread_.join();
  if (push_thread_.joinable()) push_thread_.join();
  absl::MutexLock lock(&mu_);
  running_ = false;
}

void Subscriber::PushSoon() {
  absl::MutexLock lock(&mu_);
  push_now_ = true;
}

bool Subscriber::connected() const {
  absl::MutexLock lock(&mu_);
  return connected_;
}

bool Subscriber::stop_requested() const {
  absl::MutexLock lock(&mu_);
  return stop_;
}

void Subscriber::OnLocalWrite() {
  absl::MutexLock lock(&mu_);
  ++local_writes_;
}

absl::Duration Subscriber::NextBackoff(int failures) {
  absl::Duration cap = std::max(options_.initial_backoff, absl::Milliseconds(1));
  for (int i = 0; i < failures && cap < options_.max_backoff; ++i) cap *= 2;
  cap = std::min(cap, options_.max_backoff);
  std::uniform_int_distribution<int64_t> jitter(0, absl::ToInt64Microseconds(cap));
  return absl::Microseconds(jitter(rng_));
}

void Subscriber::SetConnected(bool connected, const absl::Status& status, absl::Duration retry_in,
                              int failures) {
  {
    absl::MutexLock lock(&mu_);
    connected_ = connected;
  }
  if (!options_.on_connection) return;
  ConnectionEvent event;
  event.state = connected ? ConnectionEvent::State::kConnected
                          : ConnectionEvent::State::kDisconnected;
  event.status = status;
  event.retry_in = retry_in;
  event.failures = failures;
  options_.on_connection(event);
}

void Subscriber::RunSubscriberThread() {
  int failures = 0;
  // The prompt reconnection after kUnauthenticated was used, and no healthy
  // connection came since (invariant 5a).
  bool auth_retry_used = false;
  while (!stop_requested()) {
    bool healthy = false;
    absl::Status status = RunConnection(&healthy);
    const bool connected_now = connected();
    if (stop_requested()) {
      if (connected_now) {
        SetConnected(false, absl::CancelledError("subscriber stopped"), absl::ZeroDuration(),
                     0);
      }
      break;
    }
    failures = healthy ? 1 : failures + 1;
    if (healthy) auth_retry_used = false;
    absl::Duration delay;
    if (status.code() == absl::StatusCode::kUnauthenticated && !auth_retry_used) {
      // An expired token, most likely: the next connection's calls get a
      // fresh one from the transport's provider (invariant 5a).
      auth_retry_used = true;
      delay = absl::ZeroDuration();
      LogInfo("feed unauthenticated; reconnecting with a fresh token",
              {{"status", status}, {"failures", failures}});
    } else {
      // The first failure after a healthy connection waits up to
      // initial_backoff, the next up to twice that, and so on.
      delay = NextBackoff(failures - 1);
      LogWarning("feed disconnected", {{"status", status},
                                       {"retry_in_ms", absl::ToInt64Milliseconds(delay)},
                                       {"failures", failures}});
    }
    // Reported on every failed attempt, also when never connected, so the
    // app sees each retry and its status.
    SetConnected(false, status, delay, failures);
    absl::MutexLock lock(&mu_);
    clock_->AwaitWithDeadline(&mu_, absl::Condition(&stop_), clock_->Now() + delay);
  }
}

absl::Status Subscriber::RunConnection(bool* healthy) {
  *healthy = false;
  {
    absl::StatusOr<v1::GetServerInfoResponse> info = transport_->GetServerInfo({});
    if (!info.ok()) return info.status();
  }
  {
    absl::StatusOr<PushSummary> pushed = engine_->Push();
    if (!pushed.ok()) {
      // kUnauthenticated: the token expired; reconnect with a fresh one
      // (invariant 5a) rather than stream with the stale one.
      if (IsConnectivity(pushed.status()) ||
          pushed.status().code() == absl::StatusCode::kUnauthenticated) {
        return pushed.status();
      }
      // A push the server refuses as a whole (or a local store problem)
      // must not keep remote changes away; the next push retries it.
      LogWarning("push on connect failed; following the feed anyway",
                 {{"status", pushed.status()}});
    }
  }
  if (stop_requested()) return absl::CancelledError("subscriber stopped");
  SetConnected(true, absl::OkStatus(), absl::ZeroDuration(), 0);

  bool resnapshot = false;       // the server asked for one on this connection
  bool resnapshot_used = false;  // ... and one was done without progress since
  while (true) {
    PS_ASSIGN_OR_RETURN(SyncState state, store_->GetSyncState());
    std::string cursor = state.cursor;
    if (resnapshot || (cursor.empty() && options_.initial_sync == InitialSync::kSnapshot)) {
      PS_RETURN_IF_ERROR(RunSnapshot(resnapshot));
      PS_ASSIGN_OR_RETURN(state, store_->GetSyncState());
      cursor = state.cursor;
      resnapshot = false;
    }

    v1::StreamChangesRequest request;
    request.set_cursor(cursor);
    for (const v1::Subscription& s : options_.subscriptions) *request.add_subscriptions() = s;
    const absl::Time opened = clock_->Now();
    PS_ASSIGN_OR_RETURN(std::unique_ptr<ChangeStream> stream, transport_->StreamChanges(request));
    {
      absl::MutexLock lock(&mu_);
      cancel_stream_ = [s = stream.get()] { s->Cancel(); };
      if (stop_) stream->Cancel();
    }
    absl::Status apply_status;
    v1::StreamChangesResponse message;
    while (stream->Read(&message)) {
      bool progress = false;
      apply_status = ApplyStreamMessage(message, &cursor, &progress);
      if (!apply_status.ok()) {
        stream->Cancel();
        break;
      }
      if (progress) {
        *healthy = true;
        resnapshot_used = false;
      }
    }
    {
      absl::MutexLock lock(&mu_);
      cancel_stream_ = nullptr;
    }
    absl::Status status = stream->Finish();
    stream.reset();
    if (!apply_status.ok()) return apply_status;
    if (stop_requested()) return absl::CancelledError("subscriber stopped");
    if (clock_->Now() - opened >= options_.healthy_stream_after) *healthy = true;
    if (IsResnapshot(status) && !resnapshot_used) {
      LogWarning("server asked for a re-snapshot", {{"status", status}});
      resnapshot = true;
      resnapshot_used = true;
      continue;
    }
    if (status.ok()) return absl::UnavailableError("the server ended the change stream");
    return status;
  }
}

absl::Status Subscriber::ApplyStreamMessage(const v1::StreamChangesResponse& message,
                                            std::string* cursor, bool* progress) {
  if (message.changes_size() > 0) {
    // All changes of the message and the cursor after the last one, in one
    // transaction (invariant 1). A message with changes carries no
    // checkpoint (see StreamChangesResponse); one that did would only leave
    // the cursor behind, which is safe.
    std::vector<RemoteChange> changes;
    std::vector<std::string> cursors;  // after each change
    changes.reserve(message.changes_size());
    cursors.reserve(message.changes_size());
    std::string next = *cursor;
    for (const v1::Change& change : message.changes()) {
      // A change without a cursor (not expected) keeps the one before it
      // rather than resetting it to the start of the log.
      if (!change.cursor().empty()) next = change.cursor();
      changes.push_back(FromProto(change));
      cursors.push_back(next);
    }
    PS_ASSIGN_OR_RETURN(ApplyChangesSummary summary, store_->ApplyRemoteChanges(changes, next));
    *progress = next != *cursor || summary.applied > 0;
    *cursor = next;
    if (summary.applied == 0 || !options_.on_change) return absl::OkStatus();
    // After the commit, one callback per applied change, in log order
    // (invariants 2, 3).
    const std::string& own_origin = store_->origin_id();
    for (int i = 0; i < message.changes_size(); ++i) {
      if (!summary.applied_each[i]) continue;
      const v1::Change& change = message.changes(i);
      ChangeNotification n;
      n.table = change.table();
      n.object_type = change.object_type();
      n.object_id = change.object_id();
      n.event = changes[i].event;
      n.version = change.version();
      n.origin_id = change.origin_id();
      n.from_this_device = !change.origin_id().empty() && change.origin_id() == own_origin;
      n.cursor = std::move(cursors[i]);
      options_.on_change(n);
    }
    return absl::OkStatus();
  }
  if (!message.checkpoint().empty() && message.checkpoint() != *cursor) {
    PS_RETURN_IF_ERROR(store_->ApplyRemoteChanges({}, message.checkpoint()).status());
    *cursor = message.checkpoint();
    *progress = true;
  }
  return absl::OkStatus();
}

absl::Status Subscriber::RunSnapshot(bool resnapshot) {
  // Stop() cancels the download through cancel_stream_, as it does the
  // change stream; a Stop() that came first cancels it at once.
  auto register_cancel = [this](std::function<void()> cancel) {
    absl::MutexLock lock(&mu_);
    cancel_stream_ = std::move(cancel);
    if (stop_ && cancel_stream_) cancel_stream_();
  };
  PS_ASSIGN_OR_RETURN(SnapshotSummary snapshot,
                      engine_->Snapshot(options_.snapshot, register_cancel));
  if (options_.on_snapshot) {
    SnapshotNotification n;
    n.summary = snapshot.rows;
    n.resnapshot = resnapshot;
    n.cursor = snapshot.cursor;
    options_.on_snapshot(n);
  }
  return absl::OkStatus();
}

void Subscriber::RunPushThread() {
  absl::MutexLock lock(&mu_);
  absl::Time next_timer = clock_->Now() + options_.push_interval;
  uint64_t seen_writes = writes_at_start_;
  bool due = false;  // a local write waits for its debounced push
  absl::Time due_at = absl::InfiniteFuture();
  while (!stop_) {
    const uint64_t writes_at_wait = seen_writes;
    // Evaluated with mu_ held.
    auto woken = [this, writes_at_wait]() ABSL_NO_THREAD_SAFETY_ANALYSIS {
      return stop_ || push_now_ || local_writes_ != writes_at_wait;
    };
    clock_->AwaitWithDeadline(&mu_, absl::Condition(&woken),
                              due ? std::min(next_timer, due_at) : next_timer);
    if (stop_) break;
    const absl::Time now = clock_->Now();
    if (local_writes_ != seen_writes) {
      seen_writes = local_writes_;
      if (!due) {
        due = true;
        due_at = now + options_.push_debounce;
      }
    }
    if (!(push_now_ || now >= next_timer || (due && now >= due_at))) continue;
    push_now_ = false;
    due = false;
    next_timer = now + options_.push_interval;
    // Disconnected: the reconnection pushes everything pending anyway.
    if (!connected_) continue;
    mu_.Unlock();
    absl::StatusOr<PushSummary> pushed = engine_->Push();
    if (!pushed.ok()) {
      LogWarning("push failed; retrying on the next trigger", {{"status", pushed.status()}});
    }
    mu_.Lock();
  }
}

}  // namespace pulsesync

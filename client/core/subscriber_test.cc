#include "client/core/subscriber.h"

#include <unistd.h>

#include <cstdio>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "client/core/fake_feed_transport.h"
#include "common/uuid.h"
#include "gtest/gtest.h"

namespace pulsesync {
namespace {

using testing::ChangeCall;
using testing::FakeFeedServer;
using testing::FakeSubscriberClock;

constexpr absl::Duration kWait = absl::Seconds(10);

const char kTeam[] = "11111111-1111-4111-8111-111111111111";

v1::StreamChangesResponse TaskChange(const std::string& id, int64_t version,
                                     const std::string& title, const std::string& cursor,
                                     const std::string& origin = "other-device",
                                     v1::EventType event = v1::EVENT_TYPE_UPDATE) {
  v1::StreamChangesResponse r;
  v1::Change* c = r.add_changes();
  c->set_schema("public");
  c->set_table("tasks");
  c->set_object_type("task");
  c->set_event(event);
  c->set_object_id(id);
  c->set_version(version);
  c->set_new_record(R"({"id":")" + id + R"(","team_id":")" + kTeam + R"(","title":")" + title +
                    R"(","version":)" + std::to_string(version) + "}");
  c->set_origin_id(origin);
  c->set_revision_id(NewUuid());
  c->set_cursor(cursor);
  return r;
}

// The changes of `messages`, in order, in one message.
v1::StreamChangesResponse Packed(const std::vector<v1::StreamChangesResponse>& messages) {
  v1::StreamChangesResponse r;
  for (const v1::StreamChangesResponse& m : messages) {
    for (const v1::Change& c : m.changes()) *r.add_changes() = c;
  }
  return r;
}

v1::StreamChangesResponse Checkpoint(const std::string& cursor) {
  v1::StreamChangesResponse r;
  r.set_checkpoint(cursor);
  return r;
}

v1::SnapshotResponse SnapshotTasks(std::vector<std::pair<std::string, int64_t>> rows) {
  v1::SnapshotResponse r;
  r.mutable_rows()->set_table("tasks");
  r.mutable_rows()->set_object_type("task");
  for (const auto& [id, version] : rows) {
    r.mutable_rows()->add_records(R"({"id":")" + id + R"(","team_id":")" + kTeam +
                                  R"(","title":"snap","version":)" + std::to_string(version) +
                                  "}");
  }
  return r;
}

v1::SnapshotResponse SnapshotCursor(const std::string& cursor) {
  v1::SnapshotResponse r;
  r.set_cursor(cursor);
  return r;
}

// What the callbacks saw, and on which thread. Thread-safe.
class Recorder {
 public:
  void Change(const ChangeNotification& n) {
    absl::MutexLock lock(&mu_);
    changes_.push_back(n);
    threads_.push_back(std::this_thread::get_id());
  }
  void Connection(const ConnectionEvent& e) {
    absl::MutexLock lock(&mu_);
    connections_.push_back(e);
    threads_.push_back(std::this_thread::get_id());
  }
  void Snapshot(const SnapshotNotification& n) {
    absl::MutexLock lock(&mu_);
    snapshots_.push_back(n);
    threads_.push_back(std::this_thread::get_id());
  }
  bool WaitForChanges(size_t n) { return WaitFor([&] { return changes_.size() >= n; }); }
  bool WaitForConnections(size_t n) { return WaitFor([&] { return connections_.size() >= n; }); }
  bool WaitForSnapshots(size_t n) { return WaitFor([&] { return snapshots_.size() >= n; }); }
  std::vector<ChangeNotification> changes() {
    absl::MutexLock lock(&mu_);
    return changes_;
  }
  std::vector<ConnectionEvent> connections() {
    absl::MutexLock lock(&mu_);
    return connections_;
  }
  std::vector<SnapshotNotification> snapshots() {
    absl::MutexLock lock(&mu_);
    return snapshots_;
  }
  std::vector<std::thread::id> threads() {
    absl::MutexLock lock(&mu_);
    return threads_;
  }

 private:
  template <typename F>
  bool WaitFor(F f) {
    absl::MutexLock lock(&mu_);
    auto cond = [&]() ABSL_NO_THREAD_SAFETY_ANALYSIS { return f(); };
    return mu_.AwaitWithTimeout(absl::Condition(&cond), kWait);
  }

  absl::Mutex mu_;
  std::vector<ChangeNotification> changes_ ABSL_GUARDED_BY(mu_);
  std::vector<ConnectionEvent> connections_ ABSL_GUARDED_BY(mu_);
  std::vector<SnapshotNotification> snapshots_ ABSL_GUARDED_BY(mu_);
  std::vector<std::thread::id> threads_ ABSL_GUARDED_BY(mu_);
};

// Polls a condition (real time, bounded); never a fixed sleep.
template <typename F>
bool Eventually(F f, absl::Duration timeout = kWait) {
  const absl::Time deadline = absl::Now() + timeout;
  while (!f()) {
    if (absl::Now() > deadline) return false;
    absl::SleepFor(absl::Milliseconds(1));
  }
  return true;
}

class SubscriberTest : public ::testing::Test {
 protected:
  void SetUp() override {
    static int counter = 0;
    path_ = ::testing::TempDir() + "/subscriber_test_" + std::to_string(getpid()) + "_" +
            std::to_string(counter++) + ".db";
    Remove();
    store_ = *LocalStore::Open(path_);
    engine_ = std::make_unique<SyncEngine>(store_.get(), &server_);
    options_.clock = &clock_;
    options_.random_seed = 42;
    options_.on_change = [this](const ChangeNotification& n) { recorder_.Change(n); };
    options_.on_connection = [this](const ConnectionEvent& e) { recorder_.Connection(e); };
    options_.on_snapshot = [this](const SnapshotNotification& n) { recorder_.Snapshot(n); };
  }
  void TearDown() override {
    subscriber_.reset();
    engine_.reset();
    store_.reset();
    Remove();
  }
  void Remove() {
    for (const char* s : {"", "-wal", "-shm"}) std::remove((path_ + s).c_str());
  }
  void StartSubscriber() {
    subscriber_ = std::make_unique<Subscriber>(store_.get(), &server_, engine_.get(), options_);
    subscriber_->Start();
  }
  // Marks the database as synced before, so no snapshot is taken.
  void SetCursor(const std::string& cursor) {
    ASSERT_TRUE(store_->ApplyRemoteChanges({}, cursor).ok());
  }
  std::string StoredCursor() { return store_->GetSyncState()->cursor; }
  std::string Title(const std::string& id) {
    absl::StatusOr<std::optional<JsonValue>> row = store_->Get("task", id);
    if (!row.ok() || !row->has_value()) return "(none)";
    return (*row)->Find("title")->text();
  }
  int64_t CountRemoteRevisions(const std::string& id) {
    // Remote changes are recorded as synced revisions; count via the
    // pending view's complement: all revisions minus pending ones.
    sqlite::SqliteDb db = *sqlite::SqliteDb::Open(path_, false);
    sqlite::Statement st = *db.Prepare(
        "SELECT count(*) FROM revisions WHERE object_id = ? AND synced = 1 AND outcome = "
        "'remote'");
    EXPECT_TRUE(st.BindText(1, id).ok());
    EXPECT_TRUE(*st.Step());
    return st.ColumnInt64(0);
  }

  std::string path_;
  FakeFeedServer server_;
  FakeSubscriberClock clock_;
  std::unique_ptr<LocalStore> store_;
  std::unique_ptr<SyncEngine> engine_;
  SubscriberOptions options_;
  Recorder recorder_;
  std::unique_ptr<Subscriber> subscriber_;
};

TEST_F(SubscriberTest, AppliesChangesWithTheirCursorsAndResumesAfterRestart) {
  SetCursor("c0");
  const std::string a = NewUuid(), b = NewUuid();
  StartSubscriber();
  std::shared_ptr<ChangeCall> stream = server_.WaitForStream(0);
  ASSERT_NE(stream, nullptr);
  EXPECT_EQ(server_.stream_request(0).cursor(), "c0");
  EXPECT_FALSE(server_.stream_request(0).from_now());
  stream->Send(TaskChange(a, 1, "first", "c1", "other", v1::EVENT_TYPE_INSERT));
  stream->Send(TaskChange(b, 1, "second", "c2"));
  ASSERT_TRUE(recorder_.WaitForChanges(2));
  EXPECT_EQ(StoredCursor(), "c2");
  EXPECT_EQ(Title(a), "first");
  EXPECT_EQ(Title(b), "second");
  EXPECT_EQ(CountRemoteRevisions(a), 1);
  EXPECT_EQ(server_.snapshot_count(), 0u);

  subscriber_->Stop();
  EXPECT_TRUE(stream->cancelled());
  // Restarted (a new Subscriber on the same store): resumes after c2, and a
  // redelivered change is skipped and not reported.
  StartSubscriber();
  stream = server_.WaitForStream(1);
  ASSERT_NE(stream, nullptr);
  EXPECT_EQ(server_.stream_request(1).cursor(), "c2");
  stream->Send(TaskChange(b, 1, "second (again)", "c3"));
  stream->Send(TaskChange(a, 2, "first v2", "c4"));
  ASSERT_TRUE(recorder_.WaitForChanges(3));
  ASSERT_TRUE(Eventually([&] { return StoredCursor() == "c4"; }));
  std::vector<ChangeNotification> changes = recorder_.changes();
  ASSERT_EQ(changes.size(), 3u);
  EXPECT_EQ(changes[0].object_id, a);
  EXPECT_EQ(changes[0].event, ChangeEvent::kInsert);
  EXPECT_EQ(changes[0].table, "tasks");
  EXPECT_EQ(changes[0].cursor, "c1");
  EXPECT_EQ(changes[2].object_id, a);
  EXPECT_EQ(changes[2].version, 2);
  EXPECT_EQ(Title(b), "second");
  EXPECT_EQ(Title(a), "first v2");
  EXPECT_EQ(CountRemoteRevisions(b), 1);
}

TEST_F(SubscriberTest, AMessageOfSeveralChangesIsAppliedInOneTransaction) {
  SetCursor("c0");
  const std::string a = NewUuid(), b = NewUuid(), c = NewUuid();
  std::vector<std::string> seen_in_first_callback;
  options_.on_change = [&](const ChangeNotification& n) {
    // Already at the first callback, every row of the message and the
    // cursor after its last change are visible: they committed together.
    if (seen_in_first_callback.empty()) {
      seen_in_first_callback = {Title(a), Title(b), Title(c), StoredCursor()};
    }
    recorder_.Change(n);
  };
  StartSubscriber();
  std::shared_ptr<ChangeCall> stream = server_.WaitForStream(0);
  ASSERT_NE(stream, nullptr);
  stream->Send(Packed({TaskChange(a, 1, "one", "c1"), TaskChange(b, 1, "two", "c2"),
                       TaskChange(c, 1, "three", "c3")}));
  ASSERT_TRUE(recorder_.WaitForChanges(3));
  EXPECT_EQ(seen_in_first_callback, (std::vector<std::string>{"one", "two", "three", "c3"}));
  std::vector<ChangeNotification> changes = recorder_.changes();
  ASSERT_EQ(changes.size(), 3u);
  EXPECT_EQ(changes[0].object_id, a);
  EXPECT_EQ(changes[0].cursor, "c1");
  EXPECT_EQ(changes[1].object_id, b);
  EXPECT_EQ(changes[1].cursor, "c2");
  EXPECT_EQ(changes[2].object_id, c);
  EXPECT_EQ(changes[2].cursor, "c3");

  // A message whose second change cannot be applied (a trigger makes its
  // insert fail) leaves nothing: not the change before it, not the cursor.
  {
    sqlite::SqliteDb other = *sqlite::SqliteDb::Open(path_, false);
    ASSERT_TRUE(other
                    .Exec("CREATE TRIGGER fail_boom BEFORE INSERT ON tasks "
                          "WHEN NEW.title = 'boom' BEGIN SELECT RAISE(ABORT, 'boom'); END;")
                    .ok());
  }
  const std::string d = NewUuid(), e = NewUuid(), f = NewUuid();
  stream->Send(Packed({TaskChange(d, 1, "four", "c4"), TaskChange(e, 1, "boom", "c5"),
                       TaskChange(f, 1, "six", "c6")}));
  ASSERT_TRUE(Eventually([&] { return stream->cancelled(); }));
  EXPECT_EQ(Title(d), "(none)");
  EXPECT_EQ(Title(e), "(none)");
  EXPECT_EQ(Title(f), "(none)");
  EXPECT_EQ(CountRemoteRevisions(d), 0);
  EXPECT_EQ(StoredCursor(), "c3");
  EXPECT_EQ(recorder_.changes().size(), 3u);
  // ... and the next connection resumes after the last message applied.
  ASSERT_TRUE(recorder_.WaitForConnections(2));
  const ConnectionEvent lost = recorder_.connections()[1];
  ASSERT_TRUE(clock_.WaitForWaiter(clock_.Now() + lost.retry_in));
  clock_.Advance(lost.retry_in);
  ASSERT_NE(server_.WaitForStream(1), nullptr);
  EXPECT_EQ(server_.stream_request(1).cursor(), "c3");
}

TEST_F(SubscriberTest, ChangesAlreadyAppliedAreNotReportedWithinAMessage) {
  SetCursor("c0");
  const std::string a = NewUuid(), b = NewUuid();
  ASSERT_TRUE(store_->ApplyRemoteChanges({FromProto(TaskChange(a, 2, "newer", "").changes(0))}, "c0")
                  .ok());
  StartSubscriber();
  std::shared_ptr<ChangeCall> stream = server_.WaitForStream(0);
  ASSERT_NE(stream, nullptr);
  stream->Send(Packed({TaskChange(a, 1, "older", "c1"), TaskChange(b, 1, "new", "c2")}));
  ASSERT_TRUE(recorder_.WaitForChanges(1));
  ASSERT_TRUE(Eventually([&] { return StoredCursor() == "c2"; }));
  std::vector<ChangeNotification> changes = recorder_.changes();
  ASSERT_EQ(changes.size(), 1u);
  EXPECT_EQ(changes[0].object_id, b);
  EXPECT_EQ(changes[0].cursor, "c2");
  EXPECT_EQ(Title(a), "newer");
}

TEST_F(SubscriberTest, CheckpointsMoveTheStoredCursor) {
  SetCursor("c0");
  StartSubscriber();
  std::shared_ptr<ChangeCall> stream = server_.WaitForStream(0);
  ASSERT_NE(stream, nullptr);
  stream->Send(Checkpoint("k1"));
  ASSERT_TRUE(Eventually([&] { return StoredCursor() == "k1"; }));
  stream->Send(Checkpoint("k2"));
  ASSERT_TRUE(Eventually([&] { return StoredCursor() == "k2"; }));
  EXPECT_TRUE(recorder_.changes().empty());
}

TEST_F(SubscriberTest, SubscriptionsAreSentWithTheRequest) {
  SetCursor("c0");
  v1::Subscription s;
  s.set_table("tasks");
  s.add_filters("priority=gt.1");
  options_.subscriptions = {s};
  StartSubscriber();
  ASSERT_NE(server_.WaitForStream(0), nullptr);
  ASSERT_EQ(server_.stream_request(0).subscriptions_size(), 1);
  EXPECT_EQ(server_.stream_request(0).subscriptions(0).filters(0), "priority=gt.1");
}

TEST_F(SubscriberTest, ANeverSyncedDatabaseStartsWithASnapshot) {
  const std::string a = NewUuid(), b = NewUuid();
  server_.ScriptSnapshot({SnapshotTasks({{a, 3}}), SnapshotTasks({{b, 1}}), SnapshotCursor("s1")});
  StartSubscriber();
  std::shared_ptr<ChangeCall> stream = server_.WaitForStream(0);
  ASSERT_NE(stream, nullptr);
  EXPECT_EQ(server_.stream_request(0).cursor(), "s1");
  EXPECT_EQ(server_.snapshot_count(), 1u);
  EXPECT_EQ(Title(a), "snap");
  EXPECT_EQ(Title(b), "snap");
  ASSERT_TRUE(recorder_.WaitForSnapshots(1));
  EXPECT_EQ(recorder_.snapshots()[0].summary.applied, 2);
  EXPECT_FALSE(recorder_.snapshots()[0].resnapshot);
  // The stream continues from there; an older version is skipped.
  stream->Send(TaskChange(a, 3, "old", "s2"));
  stream->Send(TaskChange(a, 4, "new", "s3"));
  ASSERT_TRUE(recorder_.WaitForChanges(1));
  ASSERT_TRUE(Eventually([&] { return StoredCursor() == "s3"; }));
  EXPECT_EQ(Title(a), "new");
  EXPECT_EQ(recorder_.changes().size(), 1u);
}

TEST_F(SubscriberTest, LogStartOptionStreamsFromTheBeginningInstead) {
  options_.initial_sync = InitialSync::kLogStart;
  StartSubscriber();
  ASSERT_NE(server_.WaitForStream(0), nullptr);
  EXPECT_EQ(server_.stream_request(0).cursor(), "");
  EXPECT_EQ(server_.snapshot_count(), 0u);
}

TEST_F(SubscriberTest, ABigSnapshotIsAppliedInChunksWithTheCursorLast) {
  options_.snapshot.chunk_rows = 2;
  const std::string gone = NewUuid();
  ASSERT_TRUE(store_->ApplyRemoteChanges({FromProto(TaskChange(gone, 1, "x", "").changes(0))}, "")
                  .ok());
  std::vector<std::string> ids;
  std::vector<v1::SnapshotResponse> messages;
  for (int i = 0; i < 5; ++i) {
    ids.push_back(NewUuid());
    messages.push_back(SnapshotTasks({{ids.back(), 1}}));
  }
  messages.push_back(SnapshotCursor("big"));
  server_.ScriptSnapshot(messages);
  StartSubscriber();
  ASSERT_NE(server_.WaitForStream(0), nullptr);
  EXPECT_EQ(server_.stream_request(0).cursor(), "big");
  for (const std::string& id : ids) EXPECT_EQ(Title(id), "snap");
  EXPECT_EQ(Title(gone), "(none)");
  ASSERT_TRUE(recorder_.WaitForSnapshots(1));
  EXPECT_EQ(recorder_.snapshots()[0].summary.applied, 5);
  EXPECT_EQ(recorder_.snapshots()[0].summary.removed, 1);
}

TEST_F(SubscriberTest, ReSnapshotsWhenTheServerRefusesTheCursor) {
  SetCursor("ancient");
  const std::string kept = NewUuid(), deleted_meanwhile = NewUuid();
  ASSERT_TRUE(store_
                  ->ApplyRemoteChanges({FromProto(TaskChange(kept, 1, "k", "").changes(0)),
                                        FromProto(TaskChange(deleted_meanwhile, 1, "d", "").changes(0))},
                                       "ancient")
                  .ok());
  const std::string mine = *store_->Create(
      "task", *ParseJson(R"({"team_id":")" + std::string(kTeam) + R"(","title":"offline"})"));
  // The server refuses the push as a whole: the feed is followed anyway,
  // and the revision stays pending.
  server_.SetPushStatus(absl::InvalidArgumentError("batch too large"));
  server_.ScriptSnapshot({SnapshotTasks({{kept, 2}}), SnapshotCursor("fresh")});
  StartSubscriber();
  std::shared_ptr<ChangeCall> stream = server_.WaitForStream(0);
  ASSERT_NE(stream, nullptr);
  EXPECT_EQ(server_.stream_request(0).cursor(), "ancient");
  stream->End(absl::FailedPreconditionError("re-snapshot: cursor older than the retained log"));
  stream = server_.WaitForStream(1);
  ASSERT_NE(stream, nullptr);
  EXPECT_EQ(server_.stream_request(1).cursor(), "fresh");
  EXPECT_EQ(StoredCursor(), "fresh");
  EXPECT_EQ(Title(kept), "snap");
  EXPECT_EQ(Title(deleted_meanwhile), "(none)");
  ASSERT_TRUE(recorder_.WaitForSnapshots(1));
  EXPECT_TRUE(recorder_.snapshots()[0].resnapshot);
  // The row the snapshot lacks is kept: its revision is still pending.
  EXPECT_EQ(Title(mine), "offline");
  EXPECT_EQ(*store_->PendingCount(), 1);
  EXPECT_EQ(recorder_.snapshots()[0].summary.kept, 1);
  EXPECT_EQ(recorder_.snapshots()[0].summary.removed, 1);
  // Re-snapshot happened within the connection: no disconnect reported.
  for (const ConnectionEvent& e : recorder_.connections()) {
    EXPECT_EQ(e.state, ConnectionEvent::State::kConnected);
  }
}

TEST_F(SubscriberTest, ReSnapshotsAgainOnlyAfterProgress) {
  SetCursor("ancient");
  server_.ScriptSnapshot({SnapshotCursor("fresh")});
  StartSubscriber();
  std::shared_ptr<ChangeCall> stream = server_.WaitForStream(0);
  ASSERT_NE(stream, nullptr);
  stream->End(absl::FailedPreconditionError("re-snapshot: compacted"));
  stream = server_.WaitForStream(1);
  ASSERT_NE(stream, nullptr);
  EXPECT_EQ(server_.stream_request(1).cursor(), "fresh");
  // Refused again without progress: a disconnect, not a second snapshot.
  stream->End(absl::FailedPreconditionError("re-snapshot: compacted"));
  ASSERT_TRUE(recorder_.WaitForConnections(2));
  const ConnectionEvent e = recorder_.connections()[1];
  EXPECT_EQ(e.state, ConnectionEvent::State::kDisconnected);
  EXPECT_EQ(e.status.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(server_.snapshot_count(), 1u);
}

TEST_F(SubscriberTest, StopCancelsASnapshotInFlight) {
  // No script: the snapshot call stays open until cancelled.
  StartSubscriber();
  std::shared_ptr<testing::SnapshotCall> snapshot = server_.WaitForSnapshot(0);
  ASSERT_NE(snapshot, nullptr);
  snapshot->Send(SnapshotTasks({{NewUuid(), 1}}));
  subscriber_->Stop();
  EXPECT_TRUE(snapshot->cancelled());
  EXPECT_EQ(server_.stream_count(), 0u);
  EXPECT_EQ(StoredCursor(), "");
  EXPECT_TRUE(recorder_.snapshots().empty());
  std::vector<ConnectionEvent> events = recorder_.connections();
  ASSERT_EQ(events.size(), 2u);
  EXPECT_EQ(events[1].status.code(), absl::StatusCode::kCancelled);
}

TEST_F(SubscriberTest, ReconnectsWithJitteredExponentialBackoff) {
  SetCursor("c0");
  options_.initial_backoff = absl::Milliseconds(200);
  options_.max_backoff = absl::Seconds(1);
  for (int i = 0; i < 5; ++i) server_.FailInfo(absl::UnavailableError("connection refused"));
  StartSubscriber();
  const absl::Duration caps[] = {absl::Milliseconds(200), absl::Milliseconds(400),
                                 absl::Milliseconds(800), absl::Seconds(1), absl::Seconds(1)};
  std::vector<absl::Duration> delays;
  for (int i = 0; i < 5; ++i) {
    ASSERT_TRUE(recorder_.WaitForConnections(i + 1));
    const ConnectionEvent e = recorder_.connections()[i];
    EXPECT_EQ(e.state, ConnectionEvent::State::kDisconnected);
    EXPECT_EQ(e.status.code(), absl::StatusCode::kUnavailable);
    EXPECT_EQ(e.failures, i + 1);
    EXPECT_GE(e.retry_in, absl::ZeroDuration());
    EXPECT_LE(e.retry_in, caps[i]) << "attempt " << i;
    delays.push_back(e.retry_in);
    // It waits for the fake clock: no new attempt until time passes.
    ASSERT_TRUE(clock_.WaitForWaiter(clock_.Now() + e.retry_in));
    EXPECT_EQ(server_.info_calls(), i + 1);
    clock_.Advance(e.retry_in);
  }
  // Jittered, not a fixed schedule.
  EXPECT_NE(delays[3], delays[4]);
  // Connected at last; then a healthy stream (it made progress) resets the
  // failure count.
  std::shared_ptr<ChangeCall> stream = server_.WaitForStream(0);
  ASSERT_NE(stream, nullptr);
  ASSERT_TRUE(recorder_.WaitForConnections(6));
  EXPECT_EQ(recorder_.connections()[5].state, ConnectionEvent::State::kConnected);
  stream->Send(Checkpoint("c1"));
  ASSERT_TRUE(Eventually([&] { return StoredCursor() == "c1"; }));
  stream->End(absl::UnavailableError("server going away"));
  ASSERT_TRUE(recorder_.WaitForConnections(7));
  ConnectionEvent e = recorder_.connections()[6];
  EXPECT_EQ(e.state, ConnectionEvent::State::kDisconnected);
  EXPECT_EQ(e.failures, 1);
  EXPECT_EQ(e.status.message(), "server going away");
  EXPECT_LE(e.retry_in, absl::Milliseconds(200));
  ASSERT_TRUE(clock_.WaitForWaiter(clock_.Now() + e.retry_in));
  clock_.Advance(e.retry_in);
  stream = server_.WaitForStream(1);
  ASSERT_NE(stream, nullptr);
  EXPECT_EQ(server_.stream_request(1).cursor(), "c1");
  // A stream that ends without progress counts as a failure.
  stream->End(absl::UnavailableError("again"));
  ASSERT_TRUE(recorder_.WaitForConnections(9));
  EXPECT_EQ(recorder_.connections()[8].failures, 2);
}

TEST_F(SubscriberTest, AStreamOpenForLongIsHealthyEvenWithoutMessages) {
  SetCursor("c0");
  options_.healthy_stream_after = absl::Seconds(10);
  server_.FailInfo(absl::UnavailableError("down"));
  StartSubscriber();
  ASSERT_TRUE(recorder_.WaitForConnections(1));
  ConnectionEvent e = recorder_.connections()[0];
  ASSERT_TRUE(clock_.WaitForWaiter(clock_.Now() + e.retry_in));
  clock_.Advance(e.retry_in);
  std::shared_ptr<ChangeCall> stream = server_.WaitForStream(0);
  ASSERT_NE(stream, nullptr);
  clock_.Advance(absl::Seconds(11));
  stream->End(absl::UnavailableError("keepalive timeout"));
  ASSERT_TRUE(recorder_.WaitForConnections(3));
  EXPECT_EQ(recorder_.connections()[2].failures, 1);
}

TEST_F(SubscriberTest, PushesOnConnectBeforeStreamingAndAgainOnReconnect) {
  SetCursor("c0");
  const std::string first = *store_->Create("team", *ParseJson(R"({"name":"before start"})"));
  StartSubscriber();
  std::shared_ptr<ChangeCall> stream = server_.WaitForStream(0);
  ASSERT_NE(stream, nullptr);
  std::vector<std::string> log = server_.log();
  ASSERT_EQ(log.size(), 3u);
  EXPECT_EQ(log[0], "info");
  EXPECT_EQ(log[1], "push");
  EXPECT_EQ(log[2], "stream");
  ASSERT_EQ(server_.pushes().size(), 1u);
  EXPECT_EQ(server_.pushes()[0].size(), 1u);
  EXPECT_EQ(*store_->PendingCount(), 0);

  // Offline: the stream drops, a write is made (the push thread does not
  // push while disconnected), then the reconnection pushes it.
  server_.SetPushStatus(absl::UnavailableError("down"));
  stream->End(absl::UnavailableError("down"));
  ASSERT_TRUE(recorder_.WaitForConnections(2));
  ASSERT_TRUE(Eventually([&] { return !subscriber_->connected(); }));
  ASSERT_TRUE(store_->Create("team", *ParseJson(R"({"name":"offline"})")).ok());
  server_.SetPushStatus(absl::OkStatus());
  const ConnectionEvent e = recorder_.connections()[1];
  ASSERT_TRUE(clock_.WaitForWaiter(clock_.Now() + e.retry_in));
  clock_.Advance(e.retry_in);
  ASSERT_NE(server_.WaitForStream(1), nullptr);
  log = server_.log();
  ASSERT_GE(log.size(), 6u);
  EXPECT_EQ(log[log.size() - 2], "push");
  EXPECT_EQ(log.back(), "stream");
  EXPECT_EQ(*store_->PendingCount(), 0);
  (void)first;
}

TEST_F(SubscriberTest, PushesShortlyAfterLocalWritesDebounced) {
  SetCursor("c0");
  options_.push_debounce = absl::Milliseconds(300);
  StartSubscriber();
  ASSERT_NE(server_.WaitForStream(0), nullptr);
  ASSERT_TRUE(recorder_.WaitForConnections(1));
  EXPECT_TRUE(server_.pushes().empty());  // nothing was pending on connect
  const absl::Time t0 = clock_.Now();
  for (const char* name : {"a", "b", "c"}) {
    ASSERT_TRUE(store_->Create("team", *ParseJson(std::string(R"({"name":")") + name + "\"}"))
                    .ok());
  }
  // The push thread now waits for the debounce deadline, not pushing yet.
  ASSERT_TRUE(clock_.WaitForWaiter(t0 + absl::Milliseconds(300)));
  EXPECT_TRUE(server_.pushes().empty());
  clock_.Advance(absl::Milliseconds(300));
  ASSERT_TRUE(Eventually([&] { return server_.pushes().size() == 1; }));
  EXPECT_EQ(server_.pushes()[0].size(), 3u);  // one push for the three writes
  ASSERT_TRUE(Eventually([&] { return *store_->PendingCount() == 0; }));
}

TEST_F(SubscriberTest, PushesOnTheTimerAndOnRequest) {
  SetCursor("c0");
  options_.push_interval = absl::Minutes(2);
  StartSubscriber();
  ASSERT_NE(server_.WaitForStream(0), nullptr);
  ASSERT_TRUE(Eventually([&] { return subscriber_->connected(); }));
  // A revision written by another process (another connection to the file:
  // this store's listener does not see it).
  {
    std::unique_ptr<LocalStore> other = *LocalStore::Open(path_);
    ASSERT_TRUE(other->Create("team", *ParseJson(R"({"name":"elsewhere"})")).ok());
  }
  ASSERT_TRUE(clock_.WaitForWaiter(clock_.Now() + absl::Minutes(2)));
  EXPECT_TRUE(server_.pushes().empty());
  clock_.Advance(absl::Minutes(2));
  ASSERT_TRUE(Eventually([&] { return server_.pushes().size() == 1; }));

  {
    std::unique_ptr<LocalStore> other = *LocalStore::Open(path_);
    ASSERT_TRUE(other->Create("team", *ParseJson(R"({"name":"elsewhere 2"})")).ok());
  }
  subscriber_->PushSoon();
  ASSERT_TRUE(Eventually([&] { return server_.pushes().size() == 2; }));
}

TEST_F(SubscriberTest, CallbacksRunAfterCommitOnTheSubscriberThread) {
  SetCursor("c0");
  const std::string a = NewUuid();
  std::string title_in_callback, cursor_in_callback;
  options_.on_change = [&](const ChangeNotification& n) {
    // The transaction has committed: the row and its cursor are readable
    // (also from the store itself: no lock is held).
    title_in_callback = Title(n.object_id);
    cursor_in_callback = StoredCursor();
    recorder_.Change(n);
  };
  StartSubscriber();
  std::shared_ptr<ChangeCall> stream = server_.WaitForStream(0);
  ASSERT_NE(stream, nullptr);
  stream->Send(TaskChange(a, 1, "hello", "c1", store_->origin_id()));
  ASSERT_TRUE(recorder_.WaitForChanges(1));
  EXPECT_EQ(title_in_callback, "hello");
  EXPECT_EQ(cursor_in_callback, "c1");
  EXPECT_TRUE(recorder_.changes()[0].from_this_device);
  // Every callback (connection and change) ran on one thread, not this one.
  std::vector<std::thread::id> threads = recorder_.threads();
  ASSERT_GE(threads.size(), 2u);
  for (const std::thread::id& t : threads) {
    EXPECT_EQ(t, threads[0]);
    EXPECT_NE(t, std::this_thread::get_id());
  }
}

TEST_F(SubscriberTest, StopCancelsTheStreamAndReportsTheDisconnect) {
  SetCursor("c0");
  StartSubscriber();
  std::shared_ptr<ChangeCall> stream = server_.WaitForStream(0);
  ASSERT_NE(stream, nullptr);
  ASSERT_TRUE(recorder_.WaitForConnections(1));
  subscriber_->Stop();
  EXPECT_TRUE(stream->cancelled());
  std::vector<ConnectionEvent> events = recorder_.connections();
  ASSERT_EQ(events.size(), 2u);
  EXPECT_EQ(events[1].state, ConnectionEvent::State::kDisconnected);
  EXPECT_EQ(events[1].status.code(), absl::StatusCode::kCancelled);
  EXPECT_FALSE(subscriber_->connected());
  // After Stop, local writes reach no listener and nothing else runs.
  ASSERT_TRUE(store_->Create("team", *ParseJson(R"({"name":"after"})")).ok());
  EXPECT_EQ(server_.stream_count(), 1u);
}

TEST_F(SubscriberTest, StopIsPromptDuringAnHourLongBackoff) {
  SetCursor("c0");
  options_.clock = nullptr;  // the real clock: Stop must not wait it out
  options_.initial_backoff = absl::Hours(1);
  options_.max_backoff = absl::Hours(1);
  server_.FailInfo(absl::UnavailableError("down"));
  StartSubscriber();
  ASSERT_TRUE(recorder_.WaitForConnections(1));
  // Seeded jitter: this delay is the same on every run.
  ASSERT_GT(recorder_.connections()[0].retry_in, absl::Minutes(1));
  const absl::Time before = absl::Now();
  subscriber_->Stop();
  EXPECT_LT(absl::Now() - before, absl::Seconds(2));
  EXPECT_EQ(server_.info_calls(), 1);
}

TEST_F(SubscriberTest, AnApplyErrorReconnectsFromTheStoredCursor) {
  engine_.reset();
  store_.reset();
  LocalStoreOptions store_options;
  store_options.busy_timeout_ms = 20;
  store_ = *LocalStore::Open(path_, store_options);
  engine_ = std::make_unique<SyncEngine>(store_.get(), &server_);
  SetCursor("c0");
  StartSubscriber();
  std::shared_ptr<ChangeCall> stream = server_.WaitForStream(0);
  ASSERT_NE(stream, nullptr);
  stream->Send(TaskChange(NewUuid(), 1, "ok", "c1"));
  ASSERT_TRUE(recorder_.WaitForChanges(1));
  // Another connection holds the write lock past the busy timeout: the
  // next change cannot be applied; the stream is dropped and resumed.
  {
    sqlite::SqliteDb other = *sqlite::SqliteDb::Open(path_, false);
    ASSERT_TRUE(other.Exec("BEGIN IMMEDIATE").ok());
    stream->Send(TaskChange(NewUuid(), 1, "blocked", "c2"));
    ASSERT_TRUE(Eventually([&] { return stream->cancelled(); }, absl::Seconds(30)));
    ASSERT_TRUE(other.Exec("ROLLBACK").ok());
  }
  ASSERT_TRUE(recorder_.WaitForConnections(2));
  const ConnectionEvent e = recorder_.connections()[1];
  EXPECT_EQ(e.state, ConnectionEvent::State::kDisconnected);
  EXPECT_EQ(e.status.code(), absl::StatusCode::kUnavailable);  // SQLITE_BUSY
  ASSERT_TRUE(clock_.WaitForWaiter(clock_.Now() + e.retry_in));
  clock_.Advance(e.retry_in);
  ASSERT_NE(server_.WaitForStream(1), nullptr);
  EXPECT_EQ(server_.stream_request(1).cursor(), "c1");
}


// Asks a token provider for each call, as GrpcTransport does with
// GrpcTransportOptions::token_provider, and records which token each call
// carried; the FakeFeedServer behind it answers. Thread-safe.
class TokenTransport final : public Transport {
 public:
  explicit TokenTransport(FakeFeedServer* server) : server_(server) {}

  absl::StatusOr<v1::ApplyRevisionsResponse> ApplyRevisions(
      const v1::ApplyRevisionsRequest& request) override {
    Token("push");
    return server_->ApplyRevisions(request);
  }
  absl::StatusOr<v1::PullChangesResponse> PullChanges(
      const v1::PullChangesRequest& request) override {
    Token("pull");
    return server_->PullChanges(request);
  }
  absl::StatusOr<v1::GetServerInfoResponse> GetServerInfo(
      const v1::GetServerInfoRequest& request) override {
    Token("info");
    return server_->GetServerInfo(request);
  }
  absl::StatusOr<std::unique_ptr<ChangeStream>> StreamChanges(
      const v1::StreamChangesRequest& request) override {
    Token("stream");
    return server_->StreamChanges(request);
  }
  absl::StatusOr<std::unique_ptr<SnapshotStream>> Snapshot(
      const v1::SnapshotRequest& request) override {
    Token("snapshot");
    return server_->Snapshot(request);
  }

  int provider_calls() {
    absl::MutexLock lock(&mu_);
    return minted_;
  }
  // The token each StreamChanges call carried, in order.
  std::vector<std::string> stream_tokens() {
    absl::MutexLock lock(&mu_);
    return stream_tokens_;
  }

 private:
  // The provider: a new token each time.
  void Token(const std::string& method) {
    absl::MutexLock lock(&mu_);
    const std::string token = "token-" + std::to_string(++minted_);
    if (method == "stream") stream_tokens_.push_back(token);
  }

  FakeFeedServer* const server_;
  absl::Mutex mu_;
  int minted_ ABSL_GUARDED_BY(mu_) = 0;
  std::vector<std::string> stream_tokens_ ABSL_GUARDED_BY(mu_);
};

TEST_F(SubscriberTest, AnExpiredTokenReconnectsAtOnceAndResumesFromTheCursor) {
  TokenTransport transport(&server_);
  engine_ = std::make_unique<SyncEngine>(store_.get(), &transport);
  SetCursor("c0");
  const std::string a = NewUuid(), b = NewUuid(), c = NewUuid();
  subscriber_ = std::make_unique<Subscriber>(store_.get(), &transport, engine_.get(), options_);
  subscriber_->Start();
  std::shared_ptr<ChangeCall> stream = server_.WaitForStream(0);
  ASSERT_NE(stream, nullptr);
  stream->Send(TaskChange(a, 1, "first", "c1"));
  stream->Send(TaskChange(b, 1, "second", "c2"));
  ASSERT_TRUE(recorder_.WaitForChanges(2));
  ASSERT_TRUE(Eventually([&] { return StoredCursor() == "c2"; }));
  const int calls_before = transport.provider_calls();

  // The token expires: the server ends the stream. The fake clock stands
  // still, so the next stream opening proves there was no backoff wait.
  stream->End(absl::UnauthenticatedError("token expired"));
  stream = server_.WaitForStream(1);
  ASSERT_NE(stream, nullptr);
  EXPECT_EQ(server_.stream_request(1).cursor(), "c2");
  EXPECT_GT(transport.provider_calls(), calls_before);
  ASSERT_EQ(transport.stream_tokens().size(), 2u);
  EXPECT_NE(transport.stream_tokens()[0], transport.stream_tokens()[1]);
  // Reported like any disconnect: connected, disconnected (no delay),
  // connected again.
  ASSERT_TRUE(recorder_.WaitForConnections(3));
  std::vector<ConnectionEvent> events = recorder_.connections();
  EXPECT_EQ(events[1].state, ConnectionEvent::State::kDisconnected);
  EXPECT_EQ(events[1].status.code(), absl::StatusCode::kUnauthenticated);
  EXPECT_EQ(events[1].retry_in, absl::ZeroDuration());
  EXPECT_EQ(events[2].state, ConnectionEvent::State::kConnected);

  // The server resends from the cursor; a change seen twice is not applied
  // or reported twice, and nothing is lost.
  stream->Send(TaskChange(b, 1, "second", "c2"));
  stream->Send(TaskChange(c, 1, "third", "c3"));
  ASSERT_TRUE(recorder_.WaitForChanges(3));
  ASSERT_TRUE(Eventually([&] { return StoredCursor() == "c3"; }));
  std::vector<ChangeNotification> changes = recorder_.changes();
  ASSERT_EQ(changes.size(), 3u);
  EXPECT_EQ(changes[0].object_id, a);
  EXPECT_EQ(changes[1].object_id, b);
  EXPECT_EQ(changes[2].object_id, c);
  EXPECT_EQ(CountRemoteRevisions(a), 1);
  EXPECT_EQ(CountRemoteRevisions(b), 1);
  EXPECT_EQ(CountRemoteRevisions(c), 1);

  // That stream made progress, so its expiry reconnects at once too.
  stream->End(absl::UnauthenticatedError("token expired"));
  stream = server_.WaitForStream(2);
  ASSERT_NE(stream, nullptr);
  EXPECT_EQ(server_.stream_request(2).cursor(), "c3");
  // A token refused again without progress in between (a provider that
  // keeps returning bad tokens) waits out the normal backoff: no hot loop.
  stream->End(absl::UnauthenticatedError("token expired"));
  ASSERT_TRUE(recorder_.WaitForConnections(6));
  const ConnectionEvent e = recorder_.connections()[5];
  EXPECT_EQ(e.state, ConnectionEvent::State::kDisconnected);
  EXPECT_EQ(e.status.code(), absl::StatusCode::kUnauthenticated);
  EXPECT_EQ(e.failures, 2);
  ASSERT_TRUE(clock_.WaitForWaiter(clock_.Now() + e.retry_in));
  EXPECT_EQ(server_.stream_count(), 3u);
  clock_.Advance(e.retry_in);
  ASSERT_NE(server_.WaitForStream(3), nullptr);
  EXPECT_EQ(server_.stream_request(3).cursor(), "c3");

  subscriber_.reset();  // before `transport` goes
  engine_.reset();
}

}  // namespace
}  // namespace pulsesync

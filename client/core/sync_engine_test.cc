#include "client/core/sync_engine.h"

#include <unistd.h>

#include <cstdio>
#include <deque>
#include <functional>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/synchronization/notification.h"
#include "client/core/fake_feed_transport.h"
#include "client/store/payload_crypto.h"
#include "client/store/sqlite.h"
#include "common/brotli_codec.h"
#include "common/uuid.h"
#include "gtest/gtest.h"

namespace pulsesync {
namespace {

// A scripted server: records every request, answers from handlers.
class FakeTransport : public Transport {
 public:
  using ApplyHandler =
      std::function<absl::StatusOr<v1::ApplyRevisionsResponse>(const std::vector<v1::Revision>&)>;

  FakeTransport() {
    // Default: the server applies everything and remembers revision ids.
    apply_handler = [this](const std::vector<v1::Revision>& revs) {
      v1::ApplyRevisionsResponse response;
      for (const v1::Revision& r : revs) {
        v1::RevisionResult* result = response.add_results();
        result->set_revision_id(r.id());
        if (seen_.insert(r.id()).second) {
          result->set_outcome(v1::RevisionResult::OUTCOME_APPLIED);
        } else {
          result->set_outcome(v1::RevisionResult::OUTCOME_DUPLICATE);
        }
        result->set_version(++version_);
      }
      return response;
    };
  }

  absl::StatusOr<v1::ApplyRevisionsResponse> ApplyRevisions(
      const v1::ApplyRevisionsRequest& request) override {
    std::vector<v1::Revision> revs;
    if (request.encoding() == v1::PAYLOAD_ENCODING_BROTLI) {
      EXPECT_EQ(request.revisions_size(), 0);
      absl::StatusOr<std::string> bytes = BrotliDecompress(request.compressed_batch(), 1 << 26);
      EXPECT_TRUE(bytes.ok()) << bytes.status();
      v1::RevisionBatch batch;
      EXPECT_TRUE(batch.ParseFromString(*bytes));
      revs.assign(batch.revisions().begin(), batch.revisions().end());
    } else {
      revs.assign(request.revisions().begin(), request.revisions().end());
    }
    encodings.push_back(request.encoding());
    pushed_batches.push_back(revs);
    return apply_handler(revs);
  }

  absl::StatusOr<v1::PullChangesResponse> PullChanges(
      const v1::PullChangesRequest& request) override {
    pull_cursors.push_back(request.cursor());
    if (pull_pages.empty()) {
      v1::PullChangesResponse empty;
      empty.set_next_cursor(request.cursor());
      return empty;
    }
    absl::StatusOr<v1::PullChangesResponse> page = pull_pages.front();
    pull_pages.pop_front();
    return page;
  }

  absl::StatusOr<v1::GetServerInfoResponse> GetServerInfo(
      const v1::GetServerInfoRequest&) override {
    return v1::GetServerInfoResponse();
  }

  // Streams the next of `snapshots` (messages, then its end status); with
  // none left, the call stays open until cancelled.
  absl::StatusOr<std::unique_ptr<SnapshotStream>> Snapshot(
      const v1::SnapshotRequest& request) override {
    snapshot_requests.push_back(request);
    auto call = std::make_shared<testing::SnapshotCall>();
    if (!snapshots.empty()) {
      for (const v1::SnapshotResponse& m : snapshots.front().first) call->Send(m);
      call->End(snapshots.front().second);
      snapshots.pop_front();
    }
    snapshot_calls.push_back(call);
    return std::unique_ptr<SnapshotStream>(
        new testing::ScriptedStream<v1::SnapshotResponse>(call));
  }

  ApplyHandler apply_handler;
  std::vector<std::vector<v1::Revision>> pushed_batches;
  std::vector<v1::PayloadEncoding> encodings;
  std::deque<absl::StatusOr<v1::PullChangesResponse>> pull_pages;
  std::vector<std::string> pull_cursors;
  std::deque<std::pair<std::vector<v1::SnapshotResponse>, absl::Status>> snapshots;
  std::vector<v1::SnapshotRequest> snapshot_requests;
  std::vector<std::shared_ptr<testing::SnapshotCall>> snapshot_calls;

 private:
  std::set<std::string> seen_;
  int64_t version_ = 0;
};

v1::Change TeamChange(const std::string& id, int64_t version, const std::string& name) {
  v1::Change c;
  c.set_object_type("team");
  c.set_table("teams");
  c.set_event(v1::EVENT_TYPE_INSERT);
  c.set_object_id(id);
  c.set_version(version);
  c.set_new_record(R"({"id":")" + id + R"(","name":")" + name + R"(","version":)" +
                   std::to_string(version) + R"(,"deleted":false})");
  c.set_revision_id(NewUuid());
  c.set_origin_id("other-device");
  return c;
}

v1::SnapshotResponse SnapshotTeams(std::vector<std::pair<std::string, int64_t>> rows) {
  v1::SnapshotResponse r;
  r.mutable_rows()->set_table("teams");
  r.mutable_rows()->set_object_type("team");
  for (const auto& [id, version] : rows) {
    r.mutable_rows()->add_records(R"({"id":")" + id + R"(","name":"snap","version":)" +
                                  std::to_string(version) + R"(,"deleted":false})");
  }
  return r;
}

v1::SnapshotResponse SnapshotCursor(const std::string& cursor) {
  v1::SnapshotResponse r;
  r.set_cursor(cursor);
  return r;
}

absl::Status Resnapshot() {
  return absl::FailedPreconditionError(
      "re-snapshot: the change log was compacted past this cursor");
}

class SyncEngineTest : public ::testing::Test {
 protected:
  void SetUp() override {
    static int counter = 0;
    path_ = ::testing::TempDir() + "/sync_engine_test_" + std::to_string(getpid()) + "_" +
            std::to_string(counter++) + ".db";
    Remove();
    absl::StatusOr<std::unique_ptr<LocalStore>> store = LocalStore::Open(path_);
    ASSERT_TRUE(store.ok()) << store.status();
    store_ = *std::move(store);
  }
  void TearDown() override {
    store_.reset();
    Remove();
  }
  void Remove() {
    for (const char* s : {"", "-wal", "-shm"}) std::remove((path_ + s).c_str());
  }
  void CreateTeams(int n) {
    // One transaction each; fine for a few hundred.
    for (int i = 0; i < n; ++i) {
      JsonValue fields = JsonValue::Object();
      fields.Set("name", JsonValue::String("team " + std::to_string(i)));
      ASSERT_TRUE(store_->Create("team", fields).ok());
    }
  }
  int64_t Pending() { return store_->PendingCount().value_or(-1); }
  // The team's name, or "(none)" when the row is gone (or a tombstone).
  std::string Name(const std::string& id) {
    absl::StatusOr<std::optional<JsonValue>> row = store_->Get("team", id);
    if (!row.ok() || !row->has_value()) return "(none)";
    return (*row)->Find("name")->text();
  }

  std::string path_;
  std::unique_ptr<LocalStore> store_;
  FakeTransport transport_;
};

TEST_F(SyncEngineTest, PushSendsPendingRevisionsInSeqOrderInCompressedBatchesOf100) {
  CreateTeams(250);
  SyncEngine engine(store_.get(), &transport_);
  absl::StatusOr<PushSummary> summary = engine.Push();
  ASSERT_TRUE(summary.ok()) << summary.status();
  EXPECT_EQ(summary->pushed, 250);
  EXPECT_EQ(summary->applied, 250);
  EXPECT_EQ(summary->batches, 3);
  ASSERT_EQ(transport_.pushed_batches.size(), 3u);
  EXPECT_EQ(transport_.pushed_batches[0].size(), 100u);
  EXPECT_EQ(transport_.pushed_batches[1].size(), 100u);
  EXPECT_EQ(transport_.pushed_batches[2].size(), 50u);
  int64_t expected_seq = 1;
  for (const auto& batch : transport_.pushed_batches) {
    for (const v1::Revision& r : batch) {
      EXPECT_EQ(r.seq(), expected_seq++);
      EXPECT_EQ(r.origin_id(), store_->origin_id());
      EXPECT_EQ(r.op(), v1::OPERATION_UPSERT);
      EXPECT_EQ(r.object_type(), "team");
      EXPECT_GT(r.clock().physical_ms(), 0);
      EXPECT_EQ(r.schema_version(), static_cast<uint32_t>(kClientSchemaVersion));
    }
  }
  // Batches of 100 and 50 teams pay for compression.
  for (v1::PayloadEncoding e : transport_.encodings) EXPECT_EQ(e, v1::PAYLOAD_ENCODING_BROTLI);
  EXPECT_EQ(Pending(), 0);
  // Nothing left: a second push sends nothing.
  ASSERT_TRUE(engine.Push().ok());
  EXPECT_EQ(transport_.pushed_batches.size(), 3u);
}

TEST_F(SyncEngineTest, ASmallBatchGoesUncompressed) {
  CreateTeams(2);  // ~400 bytes: compression would save little and cost a round of CPU
  SyncEngine engine(store_.get(), &transport_);
  ASSERT_TRUE(engine.Push().ok());
  ASSERT_EQ(transport_.encodings.size(), 1u);
  EXPECT_EQ(transport_.encodings[0], v1::PAYLOAD_ENCODING_IDENTITY);
  ASSERT_EQ(transport_.pushed_batches.size(), 1u);
  EXPECT_EQ(transport_.pushed_batches[0].size(), 2u);
  EXPECT_EQ(Pending(), 0);
}

TEST_F(SyncEngineTest, ProgressIsReportedAfterEachBatchAndPage) {
  CreateTeams(250);
  std::vector<SyncProgress> seen;
  SyncEngineOptions options;
  options.on_progress = [&](const SyncProgress& p) {
    // Each report comes after its batch was recorded.
    EXPECT_EQ(Pending(), p.total - p.done);
    seen.push_back(p);
  };
  SyncEngine engine(store_.get(), &transport_, options);
  ASSERT_TRUE(engine.Push().ok());
  ASSERT_EQ(seen.size(), 3u);
  EXPECT_EQ(seen[0].phase, SyncProgress::Phase::kPush);
  EXPECT_EQ(seen[0].done, 100);
  EXPECT_EQ(seen[1].done, 200);
  EXPECT_EQ(seen[2].done, 250);
  EXPECT_EQ(seen[2].total, 250);
  EXPECT_EQ(seen[2].batches, 3);

  seen.clear();
  v1::PullChangesResponse p1;
  *p1.add_changes() = TeamChange(NewUuid(), 1, "A");
  p1.set_next_cursor("c1");
  p1.set_has_more(true);
  v1::PullChangesResponse p2;
  *p2.add_changes() = TeamChange(NewUuid(), 2, "B");
  *p2.add_changes() = TeamChange(NewUuid(), 3, "C");
  p2.set_next_cursor("c2");
  transport_.pull_pages = {p1, p2};
  options.on_progress = [&](const SyncProgress& p) { seen.push_back(p); };
  SyncEngine puller(store_.get(), &transport_, options);
  ASSERT_TRUE(puller.Pull().ok());
  ASSERT_EQ(seen.size(), 2u);
  EXPECT_EQ(seen[1].phase, SyncProgress::Phase::kPull);
  EXPECT_EQ(seen[1].done, 3);
  EXPECT_EQ(seen[1].batches, 2);
}

TEST_F(SyncEngineTest, PushWithoutCompressionUsesPlainFields) {
  CreateTeams(3);
  SyncEngineOptions options;
  options.compress_push = false;
  options.push_batch_size = 2;
  SyncEngine engine(store_.get(), &transport_, options);
  ASSERT_TRUE(engine.Push().ok());
  ASSERT_EQ(transport_.pushed_batches.size(), 2u);
  EXPECT_EQ(transport_.encodings[0], v1::PAYLOAD_ENCODING_IDENTITY);
}

TEST_F(SyncEngineTest, RevisionsAreMarkedSyncedOnlyAfterTheAnswer) {
  CreateTeams(5);
  FakeTransport::ApplyHandler inner = transport_.apply_handler;
  int64_t pending_during_call = -1;
  transport_.apply_handler = [&](const std::vector<v1::Revision>& revs) {
    pending_during_call = Pending();
    return inner(revs);
  };
  SyncEngine engine(store_.get(), &transport_);
  ASSERT_TRUE(engine.Push().ok());
  EXPECT_EQ(pending_during_call, 5);
  EXPECT_EQ(Pending(), 0);
}

TEST_F(SyncEngineTest, AFailedCallLeavesItsBatchAndLaterOnesPending) {
  CreateTeams(250);
  FakeTransport::ApplyHandler inner = transport_.apply_handler;
  int calls = 0;
  transport_.apply_handler =
      [&](const std::vector<v1::Revision>& revs) -> absl::StatusOr<v1::ApplyRevisionsResponse> {
    if (++calls == 2) return absl::UnavailableError("connection refused");
    return inner(revs);
  };
  SyncEngine engine(store_.get(), &transport_);
  absl::StatusOr<PushSummary> summary = engine.Push();
  EXPECT_EQ(summary.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(Pending(), 150);

  transport_.apply_handler =
      [&](const std::vector<v1::Revision>&) -> absl::StatusOr<v1::ApplyRevisionsResponse> {
    return absl::UnavailableError("still down");
  };
  EXPECT_FALSE(engine.Sync().ok());
  EXPECT_EQ(Pending(), 150);
  EXPECT_TRUE(transport_.pull_cursors.empty());  // Sync stops at the failed push
}

TEST_F(SyncEngineTest, RetryAfterALostAnswerIsHarmless) {
  CreateTeams(3);
  FakeTransport::ApplyHandler inner = transport_.apply_handler;
  bool lose_answer = true;
  transport_.apply_handler =
      [&](const std::vector<v1::Revision>& revs) -> absl::StatusOr<v1::ApplyRevisionsResponse> {
    absl::StatusOr<v1::ApplyRevisionsResponse> r = inner(revs);  // the server applied...
    if (lose_answer) {
      lose_answer = false;
      return absl::DeadlineExceededError("answer lost");  // ...but we never heard
    }
    return r;
  };
  SyncEngine engine(store_.get(), &transport_);
  EXPECT_EQ(engine.Push().status().code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_EQ(Pending(), 3);
  absl::StatusOr<PushSummary> summary = engine.Push();
  ASSERT_TRUE(summary.ok()) << summary.status();
  EXPECT_EQ(summary->duplicate, 3);
  EXPECT_EQ(Pending(), 0);
  EXPECT_EQ(transport_.pushed_batches[0][0].id(), transport_.pushed_batches[1][0].id());
}

TEST_F(SyncEngineTest, RejectedRevisionsAreMarkedSyncedAndReported) {
  CreateTeams(3);
  transport_.apply_handler = [](const std::vector<v1::Revision>& revs) {
    v1::ApplyRevisionsResponse response;
    for (size_t i = 0; i < revs.size(); ++i) {
      v1::RevisionResult* r = response.add_results();
      r->set_revision_id(revs[i].id());
      if (i == 1) {
        r->set_outcome(v1::RevisionResult::OUTCOME_REJECTED);
        r->set_reason("unknown field(s) \"x\"");
      } else {
        r->set_outcome(v1::RevisionResult::OUTCOME_APPLIED);
        r->set_superseded(i == 2);
        r->set_version(10 + static_cast<int64_t>(i));
      }
    }
    return response;
  };
  SyncEngine engine(store_.get(), &transport_);
  absl::StatusOr<PushSummary> summary = engine.Push();
  ASSERT_TRUE(summary.ok()) << summary.status();
  EXPECT_EQ(summary->applied, 2);
  EXPECT_EQ(summary->superseded, 1);
  EXPECT_EQ(summary->rejected, 1);
  ASSERT_EQ(summary->rejections.size(), 1u);
  EXPECT_EQ(summary->rejections[0].revision_id, transport_.pushed_batches[0][1].id());
  EXPECT_EQ(summary->rejections[0].object_type, "team");
  EXPECT_EQ(summary->rejections[0].reason, "unknown field(s) \"x\"");
  EXPECT_EQ(Pending(), 0);
}

TEST_F(SyncEngineTest, AMalformedAnswerMarksNothing) {
  CreateTeams(3);
  transport_.apply_handler = [](const std::vector<v1::Revision>& revs) {
    v1::ApplyRevisionsResponse response;
    response.add_results()->set_outcome(v1::RevisionResult::OUTCOME_APPLIED);
    return response;  // one result for three revisions
  };
  SyncEngine engine(store_.get(), &transport_);
  EXPECT_EQ(engine.Push().status().code(), absl::StatusCode::kInternal);
  EXPECT_EQ(Pending(), 3);
}

TEST_F(SyncEngineTest, PullFollowsHasMoreAndStoresTheLastCursor) {
  const std::string a = NewUuid(), b = NewUuid(), c = NewUuid();
  v1::PullChangesResponse p1;
  *p1.add_changes() = TeamChange(a, 1, "A");
  *p1.add_changes() = TeamChange(b, 2, "B");
  p1.set_next_cursor("c1");
  p1.set_has_more(true);
  // The second page arrives Brotli-compressed.
  v1::ChangeBatch batch;
  *batch.add_changes() = TeamChange(c, 3, "C");
  *batch.add_changes() = TeamChange(a, 1, "A again");  // redelivery: skipped
  v1::PullChangesResponse p2;
  p2.set_encoding(v1::PAYLOAD_ENCODING_BROTLI);
  p2.set_compressed_changes(BrotliCompress(batch.SerializeAsString()));
  p2.set_next_cursor("c2");
  transport_.pull_pages = {p1, p2};

  SyncEngine engine(store_.get(), &transport_);
  absl::StatusOr<PullSummary> summary = engine.Pull();
  ASSERT_TRUE(summary.ok()) << summary.status();
  EXPECT_EQ(summary->pages, 2);
  EXPECT_EQ(summary->pulled, 4);
  EXPECT_EQ(summary->applied, 3);
  EXPECT_EQ(summary->skipped, 1);
  EXPECT_EQ(transport_.pull_cursors, (std::vector<std::string>{"", "c1"}));
  EXPECT_EQ(store_->GetSyncState()->cursor, "c2");
  EXPECT_EQ((*store_->Get("team", a))->Find("name")->text(), "A");
  EXPECT_EQ(store_->List("team")->size(), 3u);

  // The next pull starts from the stored cursor.
  ASSERT_TRUE(engine.Pull().ok());
  EXPECT_EQ(transport_.pull_cursors.back(), "c2");
}

TEST_F(SyncEngineTest, AFailedPullKeepsPagesAppliedBeforeIt) {
  v1::PullChangesResponse p1;
  *p1.add_changes() = TeamChange(NewUuid(), 1, "A");
  p1.set_next_cursor("c1");
  p1.set_has_more(true);
  transport_.pull_pages = {p1, absl::UnavailableError("gone")};
  SyncEngine engine(store_.get(), &transport_);
  EXPECT_EQ(engine.Pull().status().code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(store_->GetSyncState()->cursor, "c1");
  EXPECT_EQ(store_->List("team")->size(), 1u);
}

TEST_F(SyncEngineTest, ReSnapshotsWhenTheLogWasCompactedAndConverges) {
  // Synced long ago: four teams at version 1, then edits made offline.
  const std::string updated = NewUuid(), deleted = NewUuid(), edited = NewUuid(),
                    unchanged = NewUuid();
  ASSERT_TRUE(store_
                  ->ApplyRemoteChanges({FromProto(TeamChange(updated, 1, "u")),
                                        FromProto(TeamChange(deleted, 1, "d")),
                                        FromProto(TeamChange(edited, 1, "e")),
                                        FromProto(TeamChange(unchanged, 1, "x"))},
                                       "ancient")
                  .ok());
  JsonValue rename = JsonValue::Object();
  rename.Set("name", JsonValue::String("offline edit"));
  ASSERT_TRUE(store_->Update("team", edited, rename).ok());
  JsonValue fields = JsonValue::Object();
  fields.Set("name", JsonValue::String("created offline"));
  const std::string created = *store_->Create("team", fields);
  ASSERT_EQ(Pending(), 2);

  // Meanwhile on the server: `updated` moved on, `deleted` and `edited`
  // were deleted, the log was compacted; one change follows the snapshot.
  const std::string later = NewUuid();
  v1::PullChangesResponse after;
  *after.add_changes() = TeamChange(later, 1, "later");
  after.set_next_cursor("after");
  transport_.pull_pages = {Resnapshot(), after};
  transport_.snapshots.push_back(
      {{SnapshotTeams({{updated, 2}, {unchanged, 1}}), SnapshotCursor("snap")}, {}});

  SyncEngine engine(store_.get(), &transport_);
  absl::StatusOr<PullSummary> summary = engine.Pull();
  ASSERT_TRUE(summary.ok()) << summary.status();
  EXPECT_TRUE(summary->snapshotted);
  EXPECT_EQ(summary->snapshot.cursor, "snap");
  EXPECT_EQ(summary->snapshot.rows.applied, 1);  // `updated`; `unchanged` is not newer
  EXPECT_EQ(summary->snapshot.rows.skipped, 1);
  EXPECT_EQ(summary->snapshot.rows.removed, 1);  // `deleted`
  EXPECT_EQ(summary->snapshot.rows.kept, 2);     // `edited`, `created`: pending revisions
  EXPECT_EQ(summary->pulled, 1);
  EXPECT_EQ(summary->applied, 1);
  EXPECT_EQ(transport_.pull_cursors, (std::vector<std::string>{"ancient", "snap"}));
  ASSERT_EQ(transport_.snapshot_requests.size(), 1u);
  EXPECT_EQ(transport_.snapshot_requests[0].tables_size(), 0);  // every table
  EXPECT_FALSE(transport_.snapshot_requests[0].include_deleted());
  EXPECT_EQ(store_->GetSyncState()->cursor, "after");

  EXPECT_EQ(Name(updated), "snap");
  EXPECT_EQ(Name(unchanged), "x");
  EXPECT_EQ(Name(deleted), "(none)");
  EXPECT_EQ(Name(edited), "offline edit");
  EXPECT_EQ(Name(created), "created offline");
  EXPECT_EQ(Name(later), "later");

  // The offline edits survived and are still pushed.
  ASSERT_EQ(Pending(), 2);
  absl::StatusOr<PushSummary> pushed = engine.Push();
  ASSERT_TRUE(pushed.ok()) << pushed.status();
  EXPECT_EQ(pushed->pushed, 2);
  ASSERT_EQ(transport_.pushed_batches.size(), 1u);
  std::set<std::string> objects;
  for (const v1::Revision& r : transport_.pushed_batches[0]) objects.insert(r.object_id());
  EXPECT_EQ(objects, (std::set<std::string>{edited, created}));
  EXPECT_EQ(Pending(), 0);
}

TEST_F(SyncEngineTest, ANeverSyncedDatabasePullsFromTheLogStartAndSnapshotsIfCompacted) {
  const std::string a = NewUuid();
  transport_.pull_pages = {Resnapshot()};
  transport_.snapshots.push_back({{SnapshotTeams({{a, 3}}), SnapshotCursor("s1")}, {}});
  SyncEngine engine(store_.get(), &transport_);
  absl::StatusOr<PullSummary> summary = engine.Pull();
  ASSERT_TRUE(summary.ok()) << summary.status();
  EXPECT_TRUE(summary->snapshotted);
  EXPECT_EQ(summary->snapshot.rows.applied, 1);
  EXPECT_EQ(transport_.pull_cursors, (std::vector<std::string>{"", "s1"}));
  EXPECT_EQ(store_->GetSyncState()->cursor, "s1");
  EXPECT_EQ(Name(a), "snap");
}

TEST_F(SyncEngineTest, ACompleteLogNeedsNoSnapshot) {
  v1::PullChangesResponse p;
  *p.add_changes() = TeamChange(NewUuid(), 1, "A");
  p.set_next_cursor("c1");
  transport_.pull_pages = {p};
  SyncEngine engine(store_.get(), &transport_);
  absl::StatusOr<PullSummary> summary = engine.Pull();
  ASSERT_TRUE(summary.ok()) << summary.status();
  EXPECT_FALSE(summary->snapshotted);
  EXPECT_TRUE(transport_.snapshot_requests.empty());
  EXPECT_EQ(transport_.pull_cursors, (std::vector<std::string>{""}));
}

TEST_F(SyncEngineTest, SnapshotInitialSyncStartsAnEmptyCursorWithASnapshot) {
  const std::string a = NewUuid();
  transport_.snapshots.push_back({{SnapshotTeams({{a, 1}}), SnapshotCursor("s1")}, {}});
  SyncEngineOptions options;
  options.pull_initial_sync = InitialSync::kSnapshot;
  SyncEngine engine(store_.get(), &transport_, options);
  absl::StatusOr<PullSummary> summary = engine.Pull();
  ASSERT_TRUE(summary.ok()) << summary.status();
  EXPECT_TRUE(summary->snapshotted);
  EXPECT_EQ(transport_.pull_cursors, (std::vector<std::string>{"s1"}));
  // With a cursor, the next pull follows the log.
  ASSERT_TRUE(engine.Pull().ok());
  EXPECT_EQ(transport_.snapshot_requests.size(), 1u);
  EXPECT_EQ(transport_.pull_cursors, (std::vector<std::string>{"s1", "s1"}));
}

TEST_F(SyncEngineTest, AnotherFailedPreconditionIsReturnedAsIs) {
  ASSERT_TRUE(store_->ApplyRemoteChanges({}, "c0").ok());
  transport_.pull_pages = {absl::FailedPreconditionError("schema version 3 is not supported")};
  SyncEngine engine(store_.get(), &transport_);
  absl::StatusOr<PullSummary> summary = engine.Pull();
  EXPECT_EQ(summary.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(summary.status().message(), "schema version 3 is not supported");
  EXPECT_TRUE(transport_.snapshot_requests.empty());
  EXPECT_EQ(transport_.pull_cursors, (std::vector<std::string>{"c0"}));
  EXPECT_EQ(store_->GetSyncState()->cursor, "c0");
}

TEST_F(SyncEngineTest, AtMostOneSnapshotPerPull) {
  ASSERT_TRUE(store_->ApplyRemoteChanges({}, "ancient").ok());
  // The server refuses even the snapshot's own cursor (say, compacting
  // aggressively): the second answer is returned, not looped on.
  transport_.pull_pages = {Resnapshot(), Resnapshot()};
  transport_.snapshots.push_back({{SnapshotTeams({{NewUuid(), 1}}), SnapshotCursor("s1")}, {}});
  transport_.snapshots.push_back({{SnapshotCursor("s2")}, {}});
  SyncEngine engine(store_.get(), &transport_);
  absl::StatusOr<PullSummary> summary = engine.Pull();
  EXPECT_TRUE(IsResnapshot(summary.status())) << summary.status();
  EXPECT_EQ(transport_.snapshot_requests.size(), 1u);
  EXPECT_EQ(transport_.pull_cursors, (std::vector<std::string>{"ancient", "s1"}));
  // The snapshot itself stays applied with its cursor.
  EXPECT_EQ(store_->GetSyncState()->cursor, "s1");
  EXPECT_EQ(store_->List("team")->size(), 1u);

  // The limit is per call: the next Pull may snapshot again.
  transport_.pull_pages = {Resnapshot()};
  absl::StatusOr<PullSummary> again = engine.Pull();
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_TRUE(again->snapshotted);
  EXPECT_EQ(transport_.snapshot_requests.size(), 2u);
  EXPECT_EQ(store_->GetSyncState()->cursor, "s2");
}

TEST_F(SyncEngineTest, AFailedSnapshotKeepsTheOldCursor) {
  ASSERT_TRUE(store_->ApplyRemoteChanges({FromProto(TeamChange(NewUuid(), 1, "A"))}, "ancient")
                  .ok());
  transport_.pull_pages = {Resnapshot()};
  transport_.snapshots.push_back(
      {{SnapshotTeams({{NewUuid(), 1}})}, absl::UnavailableError("connection reset")});
  SyncEngine engine(store_.get(), &transport_);
  EXPECT_EQ(engine.Pull().status().code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(store_->GetSyncState()->cursor, "ancient");
  EXPECT_EQ(store_->List("team")->size(), 1u);

  // A stream that ends "OK" without a cursor is not a snapshot either.
  transport_.pull_pages = {Resnapshot()};
  transport_.snapshots.push_back({{SnapshotTeams({{NewUuid(), 1}})}, {}});
  EXPECT_EQ(engine.Pull().status().code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(store_->GetSyncState()->cursor, "ancient");
}

TEST_F(SyncEngineTest, ASnapshotInFlightCanBeCancelledFromAnotherThread) {
  ASSERT_TRUE(store_->ApplyRemoteChanges({}, "c0").ok());
  SyncEngine engine(store_.get(), &transport_);
  // No script: the call stays open until cancelled.
  absl::Mutex mu;
  std::vector<std::function<void()>> registered;
  absl::Notification cancel_registered;
  absl::StatusOr<SnapshotSummary> result;
  std::thread caller([&] {
    result = engine.Snapshot({}, [&](std::function<void()> cancel) {
      absl::MutexLock lock(&mu);
      registered.push_back(cancel);
      if (registered.size() == 1) cancel_registered.Notify();
    });
  });
  ASSERT_TRUE(cancel_registered.WaitForNotificationWithTimeout(absl::Seconds(10)));
  {
    absl::MutexLock lock(&mu);
    ASSERT_TRUE(registered[0]);
    registered[0]();
  }
  caller.join();
  EXPECT_EQ(result.status().code(), absl::StatusCode::kCancelled);
  ASSERT_EQ(transport_.snapshot_calls.size(), 1u);
  EXPECT_TRUE(transport_.snapshot_calls[0]->cancelled());
  // Withdrawn before the stream went away.
  ASSERT_EQ(registered.size(), 2u);
  EXPECT_FALSE(registered[1]);
  EXPECT_EQ(store_->GetSyncState()->cursor, "c0");
}

TEST_F(SyncEngineTest, SnapshotAppliesTheRequestedTablesOnly) {
  const std::string team = NewUuid();
  ASSERT_TRUE(store_->ApplyRemoteChanges({FromProto(TeamChange(team, 1, "A"))}, "c0").ok());
  transport_.snapshots.push_back({{SnapshotCursor("s1")}, {}});
  SyncEngine engine(store_.get(), &transport_);
  SnapshotRequestOptions options;
  options.tables = {"tasks"};
  options.include_deleted = true;
  options.rows_per_message = 7;
  absl::StatusOr<SnapshotSummary> summary = engine.Snapshot(options);
  ASSERT_TRUE(summary.ok()) << summary.status();
  EXPECT_EQ(summary->cursor, "s1");
  EXPECT_EQ(summary->rows.removed, 0);  // teams are not covered
  ASSERT_EQ(transport_.snapshot_requests.size(), 1u);
  EXPECT_EQ(transport_.snapshot_requests[0].tables(0), "tasks");
  EXPECT_TRUE(transport_.snapshot_requests[0].include_deleted());
  EXPECT_EQ(transport_.snapshot_requests[0].rows_per_message(), 7u);
  EXPECT_EQ(Name(team), "A");
  EXPECT_EQ(store_->GetSyncState()->cursor, "s1");
}

TEST(IsResnapshotTest, NeedsFailedPreconditionAndThePrefix) {
  EXPECT_TRUE(IsResnapshot(absl::FailedPreconditionError("re-snapshot: compacted")));
  EXPECT_FALSE(IsResnapshot(absl::FailedPreconditionError("schema too new")));
  EXPECT_FALSE(IsResnapshot(absl::InvalidArgumentError("re-snapshot: compacted")));
  EXPECT_FALSE(IsResnapshot(absl::OkStatus()));
}

TEST_F(SyncEngineTest, AStuckServerDoesNotLoopForever) {
  v1::PullChangesResponse p;
  p.set_has_more(true);
  transport_.pull_pages = {p};
  SyncEngine engine(store_.get(), &transport_);
  EXPECT_EQ(engine.Pull().status().code(), absl::StatusCode::kInternal);
}

TEST_F(SyncEngineTest, SyncPushesThenPulls) {
  CreateTeams(2);
  v1::PullChangesResponse p;
  *p.add_changes() = TeamChange(NewUuid(), 1, "Remote");
  p.set_next_cursor("c1");
  transport_.pull_pages = {p};
  SyncEngine engine(store_.get(), &transport_);
  absl::StatusOr<SyncSummary> summary = engine.Sync();
  ASSERT_TRUE(summary.ok()) << summary.status();
  EXPECT_EQ(summary->push.pushed, 2);
  EXPECT_EQ(summary->pull.applied, 1);
  EXPECT_EQ(Pending(), 0);
  EXPECT_EQ(store_->List("team")->size(), 3u);
}

TEST(SyncEngineConversionTest, DeleteRevisionsAndChangesRoundTrip) {
  PendingRevision r;
  r.id = "rid";
  r.op = RevisionOp::kDelete;
  r.payload = "{}";
  r.base_version = 7;
  r.clock = HlcTimestamp{123, 4};
  v1::Revision p = ToProto(r);
  EXPECT_EQ(p.op(), v1::OPERATION_DELETE);
  EXPECT_EQ(p.base_version(), 7);
  EXPECT_EQ(p.clock().physical_ms(), 123);
  EXPECT_EQ(p.clock().counter(), 4u);

  v1::Change c;
  c.set_event(v1::EVENT_TYPE_DELETE);
  c.set_table("tasks");
  EXPECT_EQ(FromProto(c).event, ChangeEvent::kDelete);
  EXPECT_EQ(FromProto(c).table, "tasks");
}

}  // namespace
}  // namespace pulsesync

namespace pulsesync {
namespace {

// Encryption at rest: the server gets plaintext JSON, never ciphertext, and
// a payload that does not decrypt stops the push before anything is sent.
class EncryptedSyncEngineTest : public SyncEngineTest {
 protected:
  void SetUp() override {
    SyncEngineTest::SetUp();
    auto ring = std::make_shared<Keyring>();
    ASSERT_TRUE(ring->AddKey("k1", *SecretKey::FromBytes(std::string(kPayloadKeyBytes, 'k'))).ok());
    store_.reset();
    LocalStoreOptions options;
    options.keyring = ring;
    absl::StatusOr<std::unique_ptr<LocalStore>> store = LocalStore::Open(path_, options);
    ASSERT_TRUE(store.ok()) << store.status();
    store_ = *std::move(store);
  }
  sqlite::SqliteDb Raw() {
    absl::StatusOr<sqlite::SqliteDb> db = sqlite::SqliteDb::Open(path_, false);
    EXPECT_TRUE(db.ok());
    EXPECT_TRUE(db->Exec("PRAGMA busy_timeout = 1000").ok());
    return *std::move(db);
  }
};

TEST_F(EncryptedSyncEngineTest, PushSendsPlaintextJsonWhileTheDiskHoldsCiphertext) {
  JsonValue fields = JsonValue::Object();
  fields.Set("name", JsonValue::String("Project Nightjar"));
  absl::StatusOr<std::string> id = store_->Create("team", fields);
  ASSERT_TRUE(id.ok()) << id.status();
  {
    sqlite::SqliteDb db = Raw();
    absl::StatusOr<sqlite::Statement> st = db.Prepare("SELECT payload FROM revisions");
    ASSERT_TRUE(st.ok() && st->Step().value_or(false));
    EXPECT_TRUE(IsEncryptedPayload(st->ColumnText(0))) << st->ColumnText(0);
    EXPECT_EQ(st->ColumnText(0).find("Nightjar"), std::string::npos);
  }
  SyncEngine engine(store_.get(), &transport_);
  absl::StatusOr<PushSummary> summary = engine.Push();
  ASSERT_TRUE(summary.ok()) << summary.status();
  ASSERT_EQ(transport_.pushed_batches.size(), 1u);
  ASSERT_EQ(transport_.pushed_batches[0].size(), 1u);
  const std::string& payload = transport_.pushed_batches[0][0].payload();
  EXPECT_FALSE(IsEncryptedPayload(payload)) << payload;
  absl::StatusOr<JsonValue> json = ParseJson(payload);
  ASSERT_TRUE(json.ok()) << payload;
  EXPECT_EQ(json->Find("name")->text(), "Project Nightjar");
  EXPECT_EQ(Pending(), 0);
}

TEST_F(EncryptedSyncEngineTest, ATamperedPayloadFailsThePushAndMarksNothingSynced) {
  CreateTeams(3);
  {
    sqlite::SqliteDb db = Raw();
    // Flip one base64 character of the second revision's ciphertext.
    ASSERT_TRUE(db.Exec("UPDATE revisions SET payload = substr(payload, 1, length(payload) - 5) || "
                        "CASE substr(payload, length(payload) - 4, 1) WHEN 'A' THEN 'B' ELSE 'A' "
                        "END || substr(payload, length(payload) - 3) WHERE seq = 2")
                    .ok());
  }
  SyncEngine engine(store_.get(), &transport_);
  absl::StatusOr<PushSummary> summary = engine.Push();
  EXPECT_EQ(summary.status().code(), absl::StatusCode::kDataLoss) << summary.status();
  EXPECT_NE(summary.status().message().find("failed authentication"), std::string::npos)
      << summary.status();
  EXPECT_TRUE(transport_.pushed_batches.empty());  // nothing, not even the good ones
  EXPECT_EQ(Pending(), 3);
  {
    sqlite::SqliteDb db = Raw();
    absl::StatusOr<sqlite::Statement> st =
        db.Prepare("SELECT count(*) FROM revisions WHERE synced = 1 OR outcome IS NOT NULL");
    ASSERT_TRUE(st.ok() && st->Step().value_or(false));
    EXPECT_EQ(st->ColumnInt64(0), 0);
  }
  // Sync (push, then pull) fails the same way.
  EXPECT_EQ(engine.Sync().status().code(), absl::StatusCode::kDataLoss);
  EXPECT_TRUE(transport_.pushed_batches.empty());
}

}  // namespace
}  // namespace pulsesync

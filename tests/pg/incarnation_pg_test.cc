// Cursors across a PostgreSQL crash (server/core/change_feed.h, point 8;
// migrations/0011_db_incarnations.sql), on a private cluster that the test
// crashes (immediate stop: recovery at the next start) and restarts.
//
// A crash makes PostgreSQL hand out again the transaction ids that never
// reached the WAL. That cannot be forced on cue (the WAL writer flushes
// within 200 ms), so the test plays the cursor such a crash leaves: a real
// cursor taken before the crash whose xmax is raised past ids that the next
// incarnation then hands out again. Without the rewind, those ids count as
// delivered and their changes are never read.
#include <signal.h>

#include <memory>
#include <set>
#include <string>
#include <vector>

#include <pqxx/pqxx>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "common/uuid.h"
#include "gtest/gtest.h"
#include "pulsesync/v1/sync.pb.h"
#include "server/core/change_feed.h"
#include "server/core/cursor.h"
#include "server/storage/pg_session.h"
#include "tests/testing/pg_cluster.h"
#include "tests/testing/status_matchers.h"
#include "tests/testing/subprocess.h"
#include "tests/testing/test_database.h"

namespace pulsesync {
namespace {

using ::pulsesync::testing::PgCluster;
using ::pulsesync::testing::StatusIs;
using ::pulsesync::testing::TestDatabase;
using ::testing::HasSubstr;

class IncarnationPgTest : public ::testing::Test {
 protected:
  void SetUp() override {
    PS_REQUIRE_POSTGRES();
    ASSERT_OK_AND_ASSIGN(cluster_, PgCluster::Create(/*durable=*/true));
    ASSERT_OK_AND_ASSIGN(db_, TestDatabase::Create(/*migrated=*/true, cluster_->url()));
    PgSessionOptions options;
    options.database_url = db_->url();
    options.statements = ChangeFeedStatements();
    session_ = std::make_unique<PgSession>(options);
    team_ = NewUuid();
    ASSERT_OK(db_->Execute(
        absl::StrCat("INSERT INTO public.teams (id, name) VALUES ('", team_, "', 'Core')")));
  }

  // Inserts `n` tasks, each in its own transaction; returns their ids.
  std::set<std::string> InsertTasks(int n) {
    std::set<std::string> ids;
    for (int i = 0; i < n; ++i) {
      const std::string id = NewUuid();
      EXPECT_OK(db_->Execute(absl::StrCat("INSERT INTO public.tasks (id, team_id, title) VALUES ('",
                                          id, "', '", team_, "', 't", i, "')")));
      ids.insert(id);
    }
    return ids;
  }

  // The task ids of every change after `cursor`, to the end of the log.
  absl::StatusOr<std::set<std::string>> TasksAfter(std::string cursor) {
    std::set<std::string> ids;
    for (int pages = 0; pages < 1000; ++pages) {
      absl::StatusOr<PullPage> page = ReadChanges(*session_, cursor, 100);
      if (!page.ok()) return page.status();
      for (const v1::Change& c : page->changes) {
        if (c.object_type() == "task") ids.insert(c.object_id());
      }
      cursor = page->next_cursor;
      if (!page->has_more) return ids;
    }
    return absl::InternalError("the feed never ended");
  }

  // `cursor` with xmax raised by `ahead`: what a reader's snapshot looked
  // like when ids past the last one the WAL kept were handed out.
  static std::string RaiseXmax(const Cursor& cursor, uint64_t ahead) {
    std::vector<std::string> parts = absl::StrSplit(cursor.delivered, ':');
    uint64_t xmax = 0;
    EXPECT_TRUE(absl::SimpleAtoi(parts[1], &xmax));
    Cursor raised = cursor;
    raised.delivered = absl::StrCat(parts[0], ":", xmax + ahead, ":", parts[2]);
    return EncodeCursor(raised);
  }

  std::string Query(const std::string& sql) { return db_->QueryValue(sql).value_or("<error>"); }

  std::unique_ptr<PgCluster> cluster_;
  std::unique_ptr<TestDatabase> db_;
  std::unique_ptr<PgSession> session_;
  std::string team_;
};

TEST_F(IncarnationPgTest, ACursorFromBeforeACrashIsRewoundAndMissesNothing) {
  ASSERT_OK_AND_ASSIGN(const Cursor before, CurrentCursor(*session_));
  EXPECT_GT(before.incarnation, 0);
  const std::string plain = EncodeCursor(before);
  const std::string reused = RaiseXmax(before, 5);

  ASSERT_OK(cluster_->Stop(/*immediate=*/true));
  ASSERT_OK(cluster_->Start());
  // Ten transactions, the first five with ids the raised cursor counts as
  // finished.
  const std::set<std::string> written = InsertTasks(10);

  ASSERT_OK_AND_ASSIGN(const std::set<std::string> got, TasksAfter(reused));
  EXPECT_EQ(got, written) << "every change of the new incarnation, ids reused or not";
  ASSERT_OK_AND_ASSIGN(const std::set<std::string> got_plain, TasksAfter(plain));
  EXPECT_EQ(got_plain, written);

  // The end-of-recovery checkpoint was seen: both incarnations have a first id.
  EXPECT_EQ(Query("SELECT count(*) FROM pulsesync.db_incarnations WHERE first_xid IS NOT NULL"),
            "2");
  // The rewound cursor is of the new incarnation: read again, nothing new.
  ASSERT_OK_AND_ASSIGN(PullPage page, ReadChanges(*session_, reused, 1000));
  ASSERT_OK_AND_ASSIGN(const Cursor next, DecodeCursor(page.next_cursor));
  EXPECT_NE(next.incarnation, before.incarnation);
  ASSERT_OK_AND_ASSIGN(const std::set<std::string> again, TasksAfter(page.next_cursor));
  EXPECT_TRUE(again.empty());
}

// One backend killed: PostgreSQL (restart_after_crash, the default) ends
// every session and runs crash recovery in place; the postmaster, and its
// start time, stay. It is a new incarnation all the same.
TEST_F(IncarnationPgTest, ABackendCrashIsANewIncarnationToo) {
  ASSERT_OK_AND_ASSIGN(const Cursor before, CurrentCursor(*session_));
  const std::string reused = RaiseXmax(before, 5);
  const std::string postmaster = Query("SELECT pg_postmaster_start_time()");
  pqxx::connection victim(db_->url());
  const int backend = victim.backendpid();
  ASSERT_GT(backend, 0);
  ASSERT_EQ(::kill(backend, SIGKILL), 0) << "kill " << backend;
  // Wait for a session that sees the reinitialized server (a new checkpointer).
  std::string started;
  ASSERT_TRUE(testing::WaitFor(
      [&] {
        absl::StatusOr<std::string> s =
            db_->QueryValue("SELECT (extract(epoch FROM pulsesync.db_started_at()) * 1000000)::bigint");
        if (!s.ok()) return false;
        started = *s;
        return started != std::to_string(before.incarnation);
      },
      absl::Seconds(60)));
  EXPECT_EQ(Query("SELECT pg_postmaster_start_time()"), postmaster) << "the postmaster stayed";

  const std::set<std::string> written = InsertTasks(10);
  ASSERT_OK_AND_ASSIGN(const std::set<std::string> got, TasksAfter(reused));
  EXPECT_EQ(got, written) << "every change of the new incarnation, ids reused or not";
  EXPECT_EQ(Query("SELECT count(*) FROM pulsesync.db_incarnations WHERE first_xid IS NOT NULL"),
            "2");
}

TEST_F(IncarnationPgTest, ACleanRestartRewindsNothing) {
  const std::set<std::string> first = InsertTasks(3);
  ASSERT_OK_AND_ASSIGN(const Cursor before, CurrentCursor(*session_));
  ASSERT_OK(cluster_->Stop(/*immediate=*/false));
  ASSERT_OK(cluster_->Start());
  const std::set<std::string> second = InsertTasks(3);
  // The shutdown checkpoint's next id is past every id of the old
  // incarnation: what the cursor had does not come again.
  ASSERT_OK_AND_ASSIGN(const std::set<std::string> got, TasksAfter(EncodeCursor(before)));
  EXPECT_EQ(got, second);
}

TEST_F(IncarnationPgTest, AnIncarnationWhoseFirstIdIsUnknownAsksForAReSnapshot) {
  ASSERT_OK_AND_ASSIGN(const Cursor before, CurrentCursor(*session_));
  ASSERT_OK(cluster_->Stop(/*immediate=*/true));
  ASSERT_OK(cluster_->Start());
  InsertTasks(1);
  ASSERT_OK(CurrentCursor(*session_).status());  // notes the new incarnation
  ASSERT_OK(db_->Execute("UPDATE pulsesync.db_incarnations SET first_xid = NULL "
                         "WHERE started_at = pulsesync.db_started_at()"));
  EXPECT_THAT(ReadChanges(*session_, EncodeCursor(before), 100),
              StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("re-snapshot")));
  // A cursor of the running incarnation is not affected.
  ASSERT_OK_AND_ASSIGN(const Cursor now, CurrentCursor(*session_));
  EXPECT_OK(ReadChanges(*session_, EncodeCursor(now), 100).status());
}

}  // namespace
}  // namespace pulsesync

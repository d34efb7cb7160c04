// Change-log retention: compaction moves the feed's horizon past old rows
// (which stay for the audit trail until audit retention removes them, see
// audit_pg_test), and cursors from before it are refused with "re-snapshot"
// rather than silently missing changes.
#include <memory>
#include <pqxx/pqxx>
#include <string>

#include "absl/strings/str_cat.h"
#include "common/uuid.h"
#include "gtest/gtest.h"
#include "server/core/change_feed.h"
#include "server/storage/pg_session.h"
#include "tests/testing/status_matchers.h"
#include "tests/testing/subprocess.h"
#include "tests/testing/test_database.h"

namespace pulsesync {
namespace {

using ::pulsesync::testing::StatusIs;
using ::pulsesync::testing::TestDatabase;
using ::testing::HasSubstr;

class RetentionPgTest : public ::testing::Test {
 protected:
  void SetUp() override {
    PS_REQUIRE_POSTGRES();
    ASSERT_OK_AND_ASSIGN(db_, TestDatabase::Create());
    PgSessionOptions o;
    o.database_url = db_->url();
    for (auto& s : ChangeFeedStatements()) o.statements.push_back(s);
    session_ = std::make_unique<PgSession>(o);
    team_ = NewUuid();
    ASSERT_OK(db_->Execute(absl::StrCat("INSERT INTO teams (id, name) VALUES ('", team_, "','t')")));
  }

  void AddTasks(int n) {
    ASSERT_OK(db_->Execute(absl::StrCat(
        "INSERT INTO tasks (id, team_id, title) SELECT gen_random_uuid(), '", team_,
        "', 'x' || i FROM generate_series(1, ", n, ") i")));
  }

  std::string Drain(std::string cursor, int* count) {
    for (int i = 0; i < 100; ++i) {
      absl::StatusOr<PullPage> page = ReadChanges(*session_, cursor, 1000u);
      EXPECT_OK(page);
      if (!page.ok()) break;
      *count += static_cast<int>(page->changes.size());
      cursor = page->next_cursor;
      if (!page->has_more) break;
    }
    return cursor;
  }

  // Compacts until `want` rows are gone. Compaction only takes rows of
  // transactions older than every running one in the cluster, and other
  // tests' transactions (other databases, same cluster) may briefly hold it
  // back: wait for them, with a deadline.
  int64_t CompactUntil(absl::Duration max_age, int64_t want) {
    int64_t total = 0;
    testing::WaitFor(
        [&] {
          absl::StatusOr<int64_t> n = CompactChangeLog(*session_, max_age);
          EXPECT_OK(n);
          if (n.ok()) total += *n;
          return !n.ok() || total >= want;
        },
        absl::Seconds(30));
    return total;
  }

  std::unique_ptr<TestDatabase> db_;
  std::unique_ptr<PgSession> session_;
  std::string team_;
};

TEST_F(RetentionPgTest, CompactionPassesOnlyOldRowsRaisesTheHorizonAndKeepsThem) {
  AddTasks(5);
  ASSERT_OK(db_->Execute("UPDATE pulsesync.change_log SET changed_at = now() - interval '2 days'"));
  AddTasks(3);  // recent
  EXPECT_EQ(CompactUntil(absl::Hours(24), 6), 6);  // the team row and 5 tasks
  EXPECT_EQ(*db_->QueryValue("SELECT count(*) FROM pulsesync.change_log"), "9");  // all kept
  EXPECT_NE(*db_->QueryValue("SELECT horizon::text FROM pulsesync.feed_horizon"), "0");
  ASSERT_OK_AND_ASSIGN(int64_t again, CompactChangeLog(*session_, absl::Hours(24)));
  EXPECT_EQ(again, 0);
}

TEST_F(RetentionPgTest, CursorsFromBeforeTheHorizonMustReSnapshot) {
  AddTasks(4);
  int seen = 0;
  const std::string old_cursor = Drain("", &seen);
  EXPECT_EQ(seen, 5);
  AddTasks(2);  // the old cursor has not seen these
  ASSERT_OK(db_->Execute("UPDATE pulsesync.change_log SET changed_at = now() - interval '2 days'"));
  EXPECT_EQ(CompactUntil(absl::Hours(1), 7), 7);

  EXPECT_THAT(ReadChanges(*session_, old_cursor, 100u),
              StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("re-snapshot")));
  EXPECT_THAT(ReadChanges(*session_, "", 100u),
              StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("re-snapshot")));

  // A cursor from after the compaction works, and sees new changes.
  ASSERT_OK_AND_ASSIGN(Cursor now, CurrentCursor(*session_));
  AddTasks(1);
  int fresh = 0;
  Drain(EncodeCursor(now), &fresh);
  EXPECT_EQ(fresh, 1);
}

TEST_F(RetentionPgTest, RunningTransactionsAreNeverCompacted) {
  pqxx::connection conn(db_->url());
  pqxx::work open_tx(conn);
  open_tx.exec(absl::StrCat("INSERT INTO tasks (id, team_id, title) VALUES (gen_random_uuid(), '",
                            team_, "', 'open')"));
  // Committed rows, backdated; the open transaction's row is not visible to
  // the backdating and not finished, so it must survive.
  ASSERT_OK(db_->Execute("UPDATE pulsesync.change_log SET changed_at = now() - interval '2 days'"));
  EXPECT_EQ(CompactUntil(absl::Hours(1), 1), 1);  // the team row only
  ASSERT_OK_AND_ASSIGN(int64_t more, CompactChangeLog(*session_, absl::Hours(1)));
  EXPECT_EQ(more, 0);  // never the open transaction's row
  open_tx.commit();
  EXPECT_EQ(*db_->QueryValue("SELECT count(*) FROM pulsesync.change_log"), "2");
  // The horizon stays below the open transaction's row.
  EXPECT_EQ(*db_->QueryValue("SELECT (SELECT horizon FROM pulsesync.feed_horizon) < "
                             "(SELECT max(txid) FROM pulsesync.change_log)"),
            "t");
}

}  // namespace
}  // namespace pulsesync

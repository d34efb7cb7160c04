// ReadChanges against a real PostgreSQL, including the property the feed
// exists for (server/core/change_feed.h): commit safety with transactions
// that take their log positions early and commit late, or roll back.
#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <iostream>
#include <map>
#include <memory>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include <pqxx/pqxx>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "common/uuid.h"
#include "gtest/gtest.h"
#include "pulsesync/v1/sync.pb.h"
#include "server/core/change_feed.h"
#include "server/core/cursor.h"
#include "server/storage/pg_session.h"
#include "tests/testing/status_matchers.h"
#include "tests/testing/test_database.h"

namespace pulsesync {
namespace {

using ::pulsesync::testing::StatusIs;
using ::pulsesync::testing::TestDatabase;
using ::testing::AllOf;
using ::testing::HasSubstr;

class ChangeFeedPgTest : public ::testing::Test {
 protected:
  void SetUp() override {
    PS_REQUIRE_POSTGRES();
    ASSERT_OK_AND_ASSIGN(db_, TestDatabase::Create());
    PgSessionOptions options;
    options.database_url = db_->url();
    options.statements = ChangeFeedStatements();
    session_ = std::make_unique<PgSession>(options);
    team_ = NewUuid();
    ASSERT_OK(db_->Execute(
        absl::StrCat("INSERT INTO public.teams (id, name) VALUES ('", team_, "', 'Core')")));
  }

  std::string InsertTaskSql(const std::string& id, const std::string& title = "t") const {
    return absl::StrCat("INSERT INTO public.tasks (id, team_id, title) VALUES ('", id, "', '",
                        team_, "', '", title, "')");
  }

  // Inserts a task in its own committed transaction; returns its id.
  std::string InsertTask(const std::string& title = "t") {
    const std::string id = NewUuid();
    EXPECT_OK(db_->Execute(InsertTaskSql(id, title)));
    return id;
  }

  std::string Query(const std::string& sql) {
    absl::StatusOr<std::string> v = db_->QueryValue(sql);
    EXPECT_OK(v) << sql;
    return v.ok() ? *v : "<error>";
  }

  // Pulls pages until has_more is false; returns every change and the final
  // cursor through `cursor`. Fails the test after too many pages.
  std::vector<v1::Change> Drain(std::string& cursor, uint32_t limit = 1000) {
    std::vector<v1::Change> all;
    for (int pages = 0; pages < 10000; ++pages) {
      absl::StatusOr<PullPage> page = ReadChanges(*session_, cursor, limit);
      EXPECT_OK(page.status());
      if (!page.ok()) return all;
      EXPECT_LE(page->changes.size(), limit);
      all.insert(all.end(), page->changes.begin(), page->changes.end());
      cursor = page->next_cursor;
      if (!page->has_more) return all;
    }
    ADD_FAILURE() << "the feed never ran out of pages";
    return all;
  }

  static std::vector<std::string> ObjectIds(const std::vector<v1::Change>& changes) {
    std::vector<std::string> ids;
    for (const v1::Change& c : changes) ids.push_back(c.object_id());
    return ids;
  }

  uint64_t SystemId() {
    uint64_t id = 0;
    EXPECT_TRUE(absl::SimpleAtoi(
        Query("SELECT system_identifier::text FROM pg_control_system()"), &id));
    return id;
  }

  std::unique_ptr<TestDatabase> db_;
  std::unique_ptr<PgSession> session_;
  std::string team_;
};

TEST_F(ChangeFeedPgTest, ReturnsEveryChangeFromTheStartInPositionOrder) {
  const std::string a = InsertTask("a");
  const std::string b = InsertTask("b");
  ASSERT_OK(db_->Execute(absl::StrCat("UPDATE public.tasks SET status = 'done' WHERE id = '", a,
                                      "'")));
  ASSERT_OK(db_->Execute(absl::StrCat("DELETE FROM public.tasks WHERE id = '", b, "'")));

  ASSERT_OK_AND_ASSIGN(PullPage page, ReadChanges(*session_, "", 1000));
  EXPECT_FALSE(page.has_more);
  ASSERT_EQ(page.changes.size(), 5u);  // team, a, b, update a, delete b
  std::string positions;
  for (size_t i = 0; i < page.changes.size(); ++i) {
    if (i > 0) {
      EXPECT_GT(page.changes[i].position(), page.changes[i - 1].position());
      positions += ",";
    }
    positions += std::to_string(page.changes[i].position());
  }
  EXPECT_EQ(positions,
            Query("SELECT string_agg(position::text, ',' ORDER BY position) FROM "
                  "pulsesync.change_log"));
  EXPECT_EQ(ObjectIds(page.changes), (std::vector<std::string>{team_, a, b, a, b}));

  const v1::Change& team = page.changes[0];
  EXPECT_EQ(team.table(), "teams");
  EXPECT_EQ(team.object_type(), "team");
  EXPECT_EQ(team.team_id(), team_);  // a team is in its own scope

  const v1::Change& insert = page.changes[1];
  EXPECT_EQ(insert.schema(), "public");
  EXPECT_EQ(insert.table(), "tasks");
  EXPECT_EQ(insert.object_type(), "task");
  EXPECT_EQ(insert.event(), v1::EVENT_TYPE_INSERT);
  EXPECT_EQ(insert.team_id(), team_);
  EXPECT_THAT(insert.new_record(), AllOf(HasSubstr("\"title\": \"a\""), HasSubstr(a)));
  EXPECT_EQ(insert.old_record(), "");
  EXPECT_EQ(insert.origin_id(), "");
  EXPECT_EQ(insert.revision_id(), "");
  EXPECT_EQ(std::to_string(insert.version()),
            Query(absl::StrCat("SELECT version FROM pulsesync.change_log WHERE position = ",
                               insert.position())));
  EXPECT_GT(insert.commit_timestamp_ms(), 1600000000000);

  EXPECT_EQ(page.changes[3].event(), v1::EVENT_TYPE_UPDATE);
  EXPECT_THAT(page.changes[3].old_record(), HasSubstr("\"status\": \"todo\""));
  EXPECT_EQ(page.changes[4].event(), v1::EVENT_TYPE_DELETE);
  EXPECT_EQ(page.changes[4].new_record(), "");
  EXPECT_THAT(page.changes[4].old_record(), HasSubstr("\"title\": \"b\""));
  EXPECT_GT(page.changes[4].version(), page.changes[2].version());

  ASSERT_OK_AND_ASSIGN(Cursor next, DecodeCursor(page.next_cursor));
  EXPECT_EQ(next.system_id, SystemId());
  EXPECT_TRUE(next.batch_upper.empty());
}

// The log is written per statement (0014's transition tables): a statement
// of many rows logs each row once, with its own old row, origin and claims.
TEST_F(ChangeFeedPgTest, MultiRowStatementsLogEveryRowWithItsOwnOldRow) {
  std::string cursor;
  Drain(cursor);  // the team
  const std::string a = NewUuid(), b = NewUuid(), c = NewUuid();
  ASSERT_OK(db_->Execute(absl::StrCat(
      "SELECT set_config('request.jwt.claims', '{\"sub\": \"someone\"}', true);"
      "INSERT INTO public.tasks (id, team_id, title) VALUES ('", a, "', '", team_, "', 'a'), ('",
      b, "', '", team_, "', 'b'), ('", c, "', '", team_, "', 'c')")));
  ASSERT_OK(db_->Execute(absl::StrCat("UPDATE public.tasks SET title = title || '2' WHERE id IN ('",
                                      a, "', '", b, "')")));
  ASSERT_OK(db_->Execute(absl::StrCat("UPDATE public.tasks SET deleted = true WHERE id = '", c,
                                      "'")));
  ASSERT_OK(db_->Execute(absl::StrCat("DELETE FROM public.tasks WHERE id IN ('", a, "', '", b,
                                      "')")));
  const std::vector<v1::Change> changes = Drain(cursor);
  ASSERT_EQ(changes.size(), 8u);
  std::map<std::string, std::vector<const v1::Change*>> by_object;
  for (const v1::Change& ch : changes) by_object[ch.object_id()].push_back(&ch);
  for (const std::string& id : {a, b}) {
    const std::string title = id == a ? "a" : "b";
    ASSERT_EQ(by_object[id].size(), 3u);
    const v1::Change& insert = *by_object[id][0];
    EXPECT_EQ(insert.event(), v1::EVENT_TYPE_INSERT);
    EXPECT_THAT(insert.new_record(), HasSubstr(absl::StrCat("\"title\": \"", title, "\"")));
    const v1::Change& update = *by_object[id][1];
    EXPECT_EQ(update.event(), v1::EVENT_TYPE_UPDATE);
    EXPECT_THAT(update.new_record(), HasSubstr(absl::StrCat("\"title\": \"", title, "2\"")));
    EXPECT_THAT(update.old_record(), HasSubstr(absl::StrCat("\"title\": \"", title, "\"")));
    EXPECT_THAT(update.old_record(), HasSubstr(id));
    const v1::Change& del = *by_object[id][2];
    EXPECT_EQ(del.event(), v1::EVENT_TYPE_DELETE);
    EXPECT_THAT(del.old_record(), HasSubstr(absl::StrCat("\"title\": \"", title, "2\"")));
    EXPECT_GT(del.version(), update.version());
    EXPECT_GT(update.version(), insert.version());
  }
  ASSERT_EQ(by_object[c].size(), 2u);
  EXPECT_EQ(by_object[c][1]->event(), v1::EVENT_TYPE_DELETE);  // a soft delete
  EXPECT_THAT(by_object[c][1]->new_record(), HasSubstr("\"deleted\": true"));
  // The claims of the multi-row insert's transaction, on each of its rows.
  EXPECT_EQ(Query(absl::StrCat("SELECT count(*) FROM pulsesync.change_log WHERE op = 'INSERT' "
                               "AND claims ->> 'sub' = 'someone' AND object_id IN ('",
                               a, "', '", b, "', '", c, "')")),
            "3");
  EXPECT_EQ(Query(absl::StrCat("SELECT count(DISTINCT version) FROM pulsesync.change_log "
                               "WHERE object_id IN ('", a, "', '", b, "', '", c, "')")),
            "8");
}

// One statement that writes a row twice (a writable CTE, then the foreign-key
// cascade of the statement's DELETE): each write is logged once, with its own
// predecessor as the old row.
TEST_F(ChangeFeedPgTest, ARowWrittenTwiceByOneStatementIsLoggedOncePerWrite) {
  const std::string project = NewUuid();
  ASSERT_OK(db_->Execute(absl::StrCat("INSERT INTO public.projects (id, team_id, name) VALUES ('",
                                      project, "', '", team_, "', 'P')")));
  const std::string task = NewUuid();
  ASSERT_OK(db_->Execute(absl::StrCat("INSERT INTO public.tasks (id, team_id, title, project_id) "
                                      "VALUES ('", task, "', '", team_, "', 'before', '", project,
                                      "')")));
  std::string cursor;
  Drain(cursor);
  ASSERT_OK(db_->Execute(absl::StrCat("WITH a AS (UPDATE public.tasks SET title = 'renamed' WHERE id = '",
                                      task, "' RETURNING id) DELETE FROM public.projects WHERE id = '",
                                      project, "'")));
  std::vector<const v1::Change*> writes;
  const std::vector<v1::Change> changes = Drain(cursor);
  for (const v1::Change& ch : changes) {
    if (ch.object_id() == task) writes.push_back(&ch);
  }
  ASSERT_EQ(writes.size(), 2u);  // not one per pairing of two old and two new rows
  EXPECT_EQ(writes[0]->event(), v1::EVENT_TYPE_UPDATE);
  EXPECT_THAT(writes[0]->old_record(), HasSubstr("\"title\": \"before\""));
  EXPECT_THAT(writes[0]->new_record(), HasSubstr("\"title\": \"renamed\""));
  EXPECT_THAT(writes[0]->new_record(), HasSubstr(project));
  EXPECT_THAT(writes[1]->old_record(), HasSubstr("\"title\": \"renamed\""));
  EXPECT_THAT(writes[1]->old_record(), HasSubstr(project));
  EXPECT_THAT(writes[1]->new_record(), HasSubstr("\"project_id\": null"));
  EXPECT_GT(writes[1]->version(), writes[0]->version());
}

// An update's old and new rows are paired by id, and a synced row's id is
// its identity on every device: changing it is refused, and nothing of the
// statement is written.
TEST_F(ChangeFeedPgTest, ChangingTheIdOfASyncedRowIsRefused) {
  const std::string a = InsertTask("a");
  const std::string log_before = Query("SELECT count(*) FROM pulsesync.change_log");
  const absl::Status refused = db_->Execute(
      absl::StrCat("UPDATE public.tasks SET id = '", NewUuid(), "' WHERE id = '", a, "'"));
  EXPECT_FALSE(refused.ok());
  EXPECT_THAT(std::string(refused.message()), HasSubstr("cannot change"));
  EXPECT_EQ(Query(absl::StrCat("SELECT count(*) FROM public.tasks WHERE id = '", a, "'")), "1");
  EXPECT_EQ(Query("SELECT count(*) FROM pulsesync.change_log"), log_before);
}

TEST_F(ChangeFeedPgTest, PagingDeliversEveryChangeExactlyOnce) {
  for (int i = 0; i < 22; ++i) InsertTask(absl::StrCat("t", i));  // 23 changes with the team
  std::string cursor;
  std::vector<int64_t> positions;
  std::vector<size_t> page_sizes;
  bool wrote_between_pages = false;
  std::string late;
  for (int pages = 0; pages < 100; ++pages) {
    ASSERT_OK_AND_ASSIGN(PullPage page, ReadChanges(*session_, cursor, 5));
    page_sizes.push_back(page.changes.size());
    for (const v1::Change& c : page.changes) positions.push_back(c.position());
    cursor = page.next_cursor;
    if (!page.has_more) break;
    if (!wrote_between_pages) {
      // A write committed while a batch is being paged belongs to a later batch.
      late = InsertTask("late");
      wrote_between_pages = true;
    }
  }
  // The batch's last page says there is more (the late write, committed
  // after the batch's snapshot), and the late write comes next, alone.
  EXPECT_EQ(page_sizes, (std::vector<size_t>{5, 5, 5, 5, 3, 1}));
  ASSERT_EQ(positions.size(), 24u);
  for (size_t i = 1; i + 1 < positions.size(); ++i) EXPECT_GT(positions[i], positions[i - 1]);
  EXPECT_EQ(Query(absl::StrCat("SELECT position FROM pulsesync.change_log WHERE object_id = '",
                               late, "'")),
            std::to_string(positions.back()));
  ASSERT_OK_AND_ASSIGN(PullPage next, ReadChanges(*session_, cursor, 5));
  EXPECT_FALSE(next.has_more);
  EXPECT_TRUE(next.changes.empty());
  EXPECT_EQ(Query("SELECT count(*) FROM pulsesync.change_log"), std::to_string(positions.size()));
  EXPECT_EQ(std::set<int64_t>(positions.begin(), positions.end()).size(), positions.size());
}

TEST_F(ChangeFeedPgTest, PagingEndsCleanlyWhenTheBatchFillsTheLastPage) {
  for (int i = 0; i < 9; ++i) InsertTask();  // 10 changes
  std::string cursor;
  std::vector<bool> has_more;
  size_t total = 0;
  for (int pages = 0; pages < 10; ++pages) {
    ASSERT_OK_AND_ASSIGN(PullPage page, ReadChanges(*session_, cursor, 5));
    total += page.changes.size();
    has_more.push_back(page.has_more);
    cursor = page.next_cursor;
    if (!page.has_more) break;
  }
  EXPECT_EQ(total, 10u);
  // Two pages of five; the second may still say has_more when transactions
  // of other databases (tests running beside this one on the cluster) moved
  // the snapshot since the first page: then one more, empty, page ends it.
  ASSERT_GE(has_more.size(), 2u);
  ASSERT_LE(has_more.size(), 3u);
  EXPECT_TRUE(has_more.front());
  EXPECT_FALSE(has_more.back());
  ASSERT_OK_AND_ASSIGN(PullPage after, ReadChanges(*session_, cursor, 5));
  EXPECT_TRUE(after.changes.empty());
}

TEST_F(ChangeFeedPgTest, FinalCursorReturnsNothingThenOnlyNewWrites) {
  InsertTask();
  std::string cursor;
  ASSERT_EQ(Drain(cursor).size(), 2u);
  for (int i = 0; i < 2; ++i) {
    ASSERT_OK_AND_ASSIGN(PullPage empty, ReadChanges(*session_, cursor, 100));
    EXPECT_TRUE(empty.changes.empty());
    EXPECT_FALSE(empty.has_more);
    cursor = empty.next_cursor;
  }
  const std::string x = InsertTask("x");
  const std::string y = InsertTask("y");
  ASSERT_OK_AND_ASSIGN(PullPage page, ReadChanges(*session_, cursor, 100));
  EXPECT_EQ(ObjectIds(page.changes), (std::vector<std::string>{x, y}));
  ASSERT_OK_AND_ASSIGN(PullPage again, ReadChanges(*session_, page.next_cursor, 100));
  EXPECT_TRUE(again.changes.empty());
}


// A worker's session reads for every client. After it has paged one client
// through a backlog (a batch with later writes behind it, so each page's
// plan is costly), a read of the newest changes must still be bounded by
// the cursor. PostgreSQL plans a prepared statement generically from its
// sixth run when its custom plans cost more than the generic one, and the
// generic plan of the read cannot use the cursor's snapshot to bound the
// scan: it walks the log from its first row (15 ms for 1,000 of 42,000 rows
// here, and linear in the log). The read is planned with its values.
TEST_F(ChangeFeedPgTest, ReadsStayBoundedByTheCursorAfterACatchUp) {
  std::string cursor;
  Drain(cursor);
  const std::string backlog_start = cursor;
  auto insert_many = [&](int n) {
    ASSERT_OK(db_->Execute(absl::StrCat(
        "INSERT INTO public.tasks (id, team_id, title) SELECT gen_random_uuid(), '", team_,
        "', 'bulk ' || g FROM generate_series(1, ", n, ") g")));
  };
  insert_many(3000);
  for (int i = 0; i < 4; ++i) insert_many(2000);  // later writes behind the first batch
  ASSERT_OK(db_->Execute("ANALYZE pulsesync.change_log"));
  cursor = backlog_start;
  EXPECT_EQ(Drain(cursor, 300).size(), 11000u);
  const std::string x = InsertTask("x");
  ASSERT_OK_AND_ASSIGN(PullPage page, ReadChanges(*session_, cursor, 100));
  EXPECT_EQ(ObjectIds(page.changes), (std::vector<std::string>{x}));
  // No statement of this session that reads the log runs a generic plan.
  std::string generic;
  ASSERT_OK(session_->RunTransaction(TxMode::kRepeatableReadOnly, [&](pqxx::transaction_base& tx) {
    generic = tx.exec1("SELECT count(*) FROM pg_prepared_statements WHERE generic_plans > 0 "
                       "AND statement LIKE '%change_log%'")[0]
                  .as<std::string>();
    return absl::OkStatus();
  }));
  EXPECT_EQ(generic, "0");
}
TEST_F(ChangeFeedPgTest, DeliversALongTransactionAfterItCommits) {
  std::string cursor;
  Drain(cursor);

  pqxx::connection c1(db_->url());
  pqxx::work t1(c1);
  const std::string early = NewUuid();
  t1.exec(InsertTaskSql(early, "early"));  // takes the lower position, commits late
  const std::string late = InsertTask("late");

  ASSERT_OK_AND_ASSIGN(PullPage first, ReadChanges(*session_, cursor, 100));
  EXPECT_EQ(ObjectIds(first.changes), std::vector<std::string>{late});
  EXPECT_FALSE(first.has_more);
  cursor = first.next_cursor;

  t1.commit();
  EXPECT_LT(std::stoll(Query(absl::StrCat(
                "SELECT position FROM pulsesync.change_log WHERE object_id = '", early, "'"))),
            first.changes.empty() ? 0 : first.changes[0].position());

  ASSERT_OK_AND_ASSIGN(PullPage second, ReadChanges(*session_, cursor, 100));
  EXPECT_EQ(ObjectIds(second.changes), std::vector<std::string>{early});
  ASSERT_OK_AND_ASSIGN(PullPage third, ReadChanges(*session_, second.next_cursor, 100));
  EXPECT_TRUE(third.changes.empty()) << "delivered twice: " << third.changes[0].object_id();
}

TEST_F(ChangeFeedPgTest, DeliversALongTransactionThatGotItsIdAfterTheCursor) {
  // T1 begins before the reader's snapshot but takes its xid only after it:
  // its txid is then >= xmax of the cursor and in no xip list.
  std::string cursor;
  Drain(cursor);
  pqxx::connection c1(db_->url());
  pqxx::work t1(c1);
  t1.exec("SELECT 1");
  ASSERT_OK_AND_ASSIGN(PullPage empty, ReadChanges(*session_, cursor, 100));
  EXPECT_TRUE(empty.changes.empty());
  cursor = empty.next_cursor;
  const std::string late = InsertTask("other");  // a committed neighbour, higher xid
  const std::string mine = NewUuid();
  t1.exec(InsertTaskSql(mine, "mine"));
  ASSERT_OK_AND_ASSIGN(PullPage first, ReadChanges(*session_, cursor, 100));
  EXPECT_EQ(ObjectIds(first.changes), std::vector<std::string>{late});
  t1.commit();
  ASSERT_OK_AND_ASSIGN(PullPage second, ReadChanges(*session_, first.next_cursor, 100));
  EXPECT_EQ(ObjectIds(second.changes), std::vector<std::string>{mine});
}

TEST_F(ChangeFeedPgTest, RolledBackTransactionIsNeverDeliveredAndBlocksNobody) {
  std::string cursor;
  Drain(cursor);
  pqxx::connection c1(db_->url());
  auto t1 = std::make_unique<pqxx::work>(c1);
  const std::string doomed = NewUuid();
  t1->exec(InsertTaskSql(doomed, "doomed"));
  const std::string kept = InsertTask("kept");

  ASSERT_OK_AND_ASSIGN(PullPage first, ReadChanges(*session_, cursor, 100));
  EXPECT_EQ(ObjectIds(first.changes), std::vector<std::string>{kept});

  t1->abort();
  t1.reset();
  const std::string after = InsertTask("after");
  std::string next = first.next_cursor;
  const std::vector<v1::Change> rest = Drain(next);
  EXPECT_EQ(ObjectIds(rest), std::vector<std::string>{after});
  EXPECT_EQ(Query(absl::StrCat("SELECT count(*) FROM pulsesync.change_log WHERE object_id = '",
                               doomed, "'")),
            "0");
}

TEST_F(ChangeFeedPgTest, IdleOpenTransactionsHoldBackNobody) {
  std::string cursor;
  Drain(cursor);
  // One open transaction without an xid, one with an xid that wrote nothing.
  pqxx::connection c1(db_->url());
  pqxx::work idle(c1);
  idle.exec("SELECT count(*) FROM public.tasks");
  pqxx::connection c2(db_->url());
  pqxx::work with_xid(c2);
  with_xid.exec("SELECT pg_current_xact_id()");

  const std::string a = InsertTask("a");
  ASSERT_OK_AND_ASSIGN(PullPage first, ReadChanges(*session_, cursor, 100));
  EXPECT_EQ(ObjectIds(first.changes), std::vector<std::string>{a});
  const std::string b = InsertTask("b");
  ASSERT_OK_AND_ASSIGN(PullPage second, ReadChanges(*session_, first.next_cursor, 100));
  EXPECT_EQ(ObjectIds(second.changes), std::vector<std::string>{b});

  idle.commit();
  with_xid.commit();
  ASSERT_OK_AND_ASSIGN(PullPage third, ReadChanges(*session_, second.next_cursor, 100));
  EXPECT_TRUE(third.changes.empty());
}

TEST_F(ChangeFeedPgTest, SavepointRolledBackInsideACommittedTransactionIsNotDelivered) {
  std::string cursor;
  Drain(cursor);
  const std::string kept = NewUuid();
  const std::string undone = NewUuid();
  {
    pqxx::connection c(db_->url());
    pqxx::work t(c);
    t.exec("SAVEPOINT s1");
    t.exec(InsertTaskSql(kept, "kept"));
    t.exec("RELEASE SAVEPOINT s1");
    t.exec("SAVEPOINT s2");
    t.exec(InsertTaskSql(undone, "undone"));
    t.exec("ROLLBACK TO SAVEPOINT s2");
    t.commit();
  }
  EXPECT_EQ(ObjectIds(Drain(cursor)), std::vector<std::string>{kept});
}

// Four writers commit, roll back and hold transactions open while a reader
// follows the feed; every committed row must arrive exactly once, no
// rolled-back row ever. The writers' choices come from a printed seed
// (PULSESYNC_TEST_SEED reproduces a run).
TEST_F(ChangeFeedPgTest, ConcurrentWritersLoseAndDoubleNothing) {
  uint64_t seed = static_cast<uint64_t>(absl::ToUnixNanos(absl::Now()));
  if (const char* s = std::getenv("PULSESYNC_TEST_SEED")) {
    ASSERT_TRUE(absl::SimpleAtoi(s, &seed)) << s;
  }
  std::cout << "PULSESYNC_TEST_SEED=" << seed << std::endl;
  RecordProperty("seed", std::to_string(seed));

  constexpr int kWriters = 4;
  constexpr int kTransactionsPerWriter = 200;
  struct WriterLog {
    std::vector<std::string> committed;
    std::vector<std::string> rolled_back;
    std::string error;
  };
  std::vector<WriterLog> logs(kWriters);
  std::atomic<int> writers_running{kWriters};

  std::vector<std::thread> writers;
  for (int w = 0; w < kWriters; ++w) {
    writers.emplace_back([&, w] {
      WriterLog& log = logs[w];
      try {
        std::mt19937_64 rng(seed + w);
        pqxx::connection conn(db_->url());
        {
          pqxx::nontransaction nt(conn);
          nt.exec("SET synchronous_commit = off");
        }
        for (int i = 0; i < kTransactionsPerWriter; ++i) {
          const int kind = static_cast<int>(rng() % 100);
          const int rows = 1 + static_cast<int>(rng() % 3);
          pqxx::work tx(conn);
          std::vector<std::string> ids;
          std::vector<std::string> undone;
          for (int r = 0; r < rows; ++r) {
            ids.push_back(NewUuid());
            tx.exec(InsertTaskSql(ids.back(), "s"));
          }
          if (kind < 15) {  // a long transaction: others commit meanwhile
            tx.exec(absl::StrCat("SELECT pg_sleep(", 0.001 * (1 + rng() % 8), ")"));
          } else if (kind < 25) {  // part of it undone by a savepoint
            tx.exec("SAVEPOINT s");
            undone.push_back(NewUuid());
            tx.exec(InsertTaskSql(undone.back(), "undone"));
            tx.exec("ROLLBACK TO SAVEPOINT s");
          }
          if (kind >= 85) {  // rolled back, sometimes after holding it open
            if (kind >= 93) tx.exec("SELECT pg_sleep(0.003)");
            tx.abort();
            log.rolled_back.insert(log.rolled_back.end(), ids.begin(), ids.end());
          } else {
            tx.commit();
            log.committed.insert(log.committed.end(), ids.begin(), ids.end());
          }
          log.rolled_back.insert(log.rolled_back.end(), undone.begin(), undone.end());
        }
      } catch (const std::exception& e) {
        log.error = e.what();
      }
      --writers_running;
    });
  }

  std::map<std::string, int> delivered;  // task id -> times delivered
  std::set<int64_t> positions;
  int duplicate_positions = 0;
  int pulls = 0;
  std::string reader_error;
  std::string cursor;
  std::thread reader([&] {
    PgSessionOptions options;
    options.database_url = db_->url();
    options.statements = ChangeFeedStatements();
    PgSession session(options);
    const absl::Time deadline = absl::Now() + absl::Seconds(60);
    while (absl::Now() < deadline) {
      const bool writers_done = writers_running.load() == 0;
      absl::StatusOr<PullPage> page = ReadChanges(session, cursor, 50);
      ++pulls;
      if (!page.ok()) {
        reader_error = page.status().ToString();
        return;
      }
      for (const v1::Change& c : page->changes) {
        if (!positions.insert(c.position()).second) ++duplicate_positions;
        if (c.object_type() == "task") ++delivered[c.object_id()];
      }
      cursor = page->next_cursor;
      // The pull that started after every writer finished, read to its end,
      // has seen everything.
      if (writers_done && !page->has_more) return;
    }
    reader_error = "reader did not finish before its deadline";
  });
  for (std::thread& t : writers) t.join();
  reader.join();

  ASSERT_EQ(reader_error, "");
  size_t committed = 0;
  for (int w = 0; w < kWriters; ++w) {
    ASSERT_EQ(logs[w].error, "") << "writer " << w;
    committed += logs[w].committed.size();
    for (const std::string& id : logs[w].committed) {
      auto it = delivered.find(id);
      EXPECT_TRUE(it != delivered.end() && it->second == 1)
          << "committed task " << id << " delivered "
          << (it == delivered.end() ? 0 : it->second) << " times (seed " << seed << ")";
    }
    for (const std::string& id : logs[w].rolled_back) {
      EXPECT_EQ(delivered.count(id), 0u) << "rolled-back task " << id << " delivered (seed "
                                         << seed << ")";
    }
  }
  EXPECT_EQ(duplicate_positions, 0);
  EXPECT_EQ(delivered.size(), committed);
  EXPECT_EQ(std::to_string(positions.size()), Query("SELECT count(*) FROM pulsesync.change_log"));
  EXPECT_GT(pulls, 2) << "the reader never overlapped the writers";
  std::cout << "committed " << committed << " tasks, " << pulls << " pulls" << std::endl;
}

TEST_F(ChangeFeedPgTest, RefusesACursorOfAnotherDatabase) {
  InsertTask();
  ASSERT_OK_AND_ASSIGN(PullPage page, ReadChanges(*session_, "", 100));
  ASSERT_OK_AND_ASSIGN(Cursor c, DecodeCursor(page.next_cursor));
  c.system_id += 1;
  EXPECT_THAT(ReadChanges(*session_, EncodeCursor(c), 100),
              StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("re-snapshot")));
}

TEST_F(ChangeFeedPgTest, RefusesAMalformedCursor) {
  EXPECT_THAT(ReadChanges(*session_, "not-a-cursor", 100),
              StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(ReadChanges(*session_, "c1.@@@", 100),
              StatusIs(absl::StatusCode::kInvalidArgument));
  // Snapshot-shaped, but not a snapshot PostgreSQL accepts (xmin > xmax).
  Cursor c;
  c.system_id = SystemId();
  c.delivered = "20:10:";
  EXPECT_THAT(ReadChanges(*session_, EncodeCursor(c), 100),
              StatusIs(absl::StatusCode::kInvalidArgument));
}

TEST_F(ChangeFeedPgTest, RefusesACursorFromTheFuture) {
  Cursor c;
  c.system_id = SystemId();
  c.delivered = "4000000000:4000000000:";
  EXPECT_THAT(ReadChanges(*session_, EncodeCursor(c), 100),
              StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("re-snapshot")));
  // A batch being paged whose bound is in the future, too.
  Cursor paging;
  paging.system_id = c.system_id;
  paging.delivered = "3:3:";
  paging.batch_upper = "4000000000:4000000000:";
  paging.batch_after_position = 1;
  EXPECT_THAT(ReadChanges(*session_, EncodeCursor(paging), 100),
              StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("re-snapshot")));
}

// Migration 0017: the log's INSERT notifies pulsesync_feed when the rows are
// a SQL write's, once per transaction; not when they are a revision's
// (pulsesync.revision set: pulsesyncd notifies after answering), nor when
// pulsesync.notify_sql_writes is off. Notifications arrive in commit order,
// so a marker sent after the writes bounds what they sent.
TEST_F(ChangeFeedPgTest, SqlWritesNotifyTheFeedOncePerTransactionAndRevisionsDoNot) {
  struct Receiver final : pqxx::notification_receiver {
    explicit Receiver(pqxx::connection_base& c) : pqxx::notification_receiver(c, "pulsesync_feed") {}
    void operator()(const std::string& payload, int) override { payloads.push_back(payload); }
    std::vector<std::string> payloads;
  };
  pqxx::connection listener(db_->url());
  Receiver receiver(listener);
  pqxx::connection writer(db_->url());
  auto notify_and_receive = [&](const std::string& marker) {
    pqxx::nontransaction(writer).exec(absl::StrCat("NOTIFY pulsesync_feed, '", marker, "'"));
    for (int i = 0; i < 30; ++i) {
      if (std::find(receiver.payloads.begin(), receiver.payloads.end(), marker) !=
          receiver.payloads.end()) {
        return;
      }
      listener.await_notification(1, 0);
    }
    ADD_FAILURE() << "no " << marker << " within 30 s";
  };

  {
    pqxx::work tx(writer);
    tx.exec("SELECT set_config('pulsesync.revision', gen_random_uuid()::text, true)");
    tx.exec(InsertTaskSql(NewUuid(), "by a revision"));
    tx.commit();
  }
  {
    pqxx::work tx(writer);
    tx.exec("SET LOCAL pulsesync.notify_sql_writes = 'off'");
    tx.exec(InsertTaskSql(NewUuid(), "notifications off"));
    tx.commit();
  }
  notify_and_receive("marker 1");
  EXPECT_EQ(receiver.payloads, std::vector<std::string>({"marker 1"}));

  // Two statements of a SQL transaction, 3 rows: one notification.
  {
    pqxx::work tx(writer);
    tx.exec(absl::StrCat("INSERT INTO public.tasks (id, team_id, title) SELECT gen_random_uuid(), '",
                         team_, "', 'bulk' FROM generate_series(1, 2)"));
    tx.exec(InsertTaskSql(NewUuid(), "and one more"));
    tx.commit();
  }
  notify_and_receive("marker 2");
  EXPECT_EQ(receiver.payloads, std::vector<std::string>({"marker 1", "", "marker 2"}));
  EXPECT_EQ(Query("SELECT count(*) FROM pulsesync.change_log WHERE table_name = 'tasks'"), "5");
}

}  // namespace
}  // namespace pulsesync

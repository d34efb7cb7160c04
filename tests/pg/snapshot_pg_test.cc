// ReadSnapshot against a real database: a member's snapshot of a team table
// (every live row of their teams, none of another team's, in id order
// across pages), and what it reads (PostgreSQL's count of the table's rows
// fetched: their teams' rows through the (team column, id) index of
// migration 0018, not a walk of the whole table).
#include "server/core/snapshot.h"

#include <algorithm>
#include <memory>
#include <string>
#include <vector>

#include <pqxx/pqxx>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/json.h"
#include "gtest/gtest.h"
#include "server/storage/pg_session.h"
#include "tests/testing/status_matchers.h"
#include "tests/testing/test_database.h"

namespace pulsesync {
namespace {

using ::pulsesync::testing::TestDatabase;

std::string Team(int n) {
  return absl::StrCat("10000000-0000-4000-8000-", absl::Dec(n, absl::kZeroPad12));
}

class SnapshotPgTest : public ::testing::Test {
 protected:
  void SetUp() override {
    PS_REQUIRE_POSTGRES();
    ASSERT_OK_AND_ASSIGN(db_, TestDatabase::Create());
    PgSessionOptions options;
    options.database_url = db_->url();
    session_ = std::make_unique<PgSession>(options);
  }

  // `per_team` tasks in each of teams 1..teams, with random ids (so the
  // teams' rows interleave in id order); a tenth of each team's deleted.
  void AddTasks(int teams, int per_team) {
    ASSERT_OK(db_->Execute(absl::StrCat(
        "INSERT INTO teams (id, name) SELECT ('10000000-0000-4000-8000-' || lpad(g::text, 12, "
        "'0'))::uuid, 'team ' || g FROM generate_series(1, ", teams, ") g;",
        "INSERT INTO tasks (id, team_id, title, deleted) SELECT gen_random_uuid(), "
        "('10000000-0000-4000-8000-' || lpad((1 + g % ", teams, ")::text, 12, '0'))::uuid, "
        "'t' || g, g / ", teams, " % 10 = 0 FROM generate_series(1, ", teams * per_team, ") g;",
        "ANALYZE tasks")));
  }

  // The ids of `options`' snapshot in the order emitted, joined by ','; the
  // largest chunk's size in `*largest_chunk` if given.
  std::string Snapshot(const SnapshotOptions& options, size_t* largest_chunk = nullptr) {
    std::vector<std::string> ids;
    size_t largest = 0;
    EXPECT_OK(ReadSnapshot(*session_, options, [&](SnapshotChunk chunk) -> absl::Status {
                largest = std::max(largest, chunk.records.size());
                for (const std::string& record : chunk.records) {
                  absl::StatusOr<JsonValue> row = ParseJson(record);
                  if (!row.ok()) return row.status();
                  ids.push_back(row->Find("id")->text());
                }
                return absl::OkStatus();
              }).status());
    if (largest_chunk != nullptr) *largest_chunk = largest;
    return absl::StrJoin(ids, ",");
  }

  // A member's snapshot of the tasks of `teams`.
  static SnapshotOptions MemberOf(const std::vector<int>& teams, uint32_t rows_per_chunk,
                                  bool include_deleted) {
    SnapshotOptions options;
    options.tables = {"task"};
    options.rows_per_chunk = rows_per_chunk;
    options.include_deleted = include_deleted;
    options.restricted = true;
    for (int t : teams) options.teams.insert(Team(t));
    return options;
  }

  // A one-value query's answer ("<error>" if it failed).
  std::string Query(const std::string& sql) {
    absl::StatusOr<std::string> v = db_->QueryValue(sql);
    EXPECT_OK(v.status()) << sql;
    return v.value_or("<error>");
  }

  // What SQL says the same snapshot holds, in id order, joined by ','.
  std::string SqlIds(const std::vector<int>& teams, bool include_deleted) {
    std::vector<std::string> quoted;
    for (int t : teams) quoted.push_back(absl::StrCat("'", Team(t), "'"));
    return Query(absl::StrCat(
        "SELECT coalesce(string_agg(id::text, ',' ORDER BY id), '') FROM tasks WHERE team_id IN (",
        absl::StrJoin(quoted, ","), ")", include_deleted ? "" : " AND NOT deleted"));
  }

  // The rows of tasks the session's scans have fetched so far, as
  // PostgreSQL counts them. The session's counts are sent at the end of its
  // transaction that asked for it (pg_stat_force_next_flush), before the
  // transaction's answer: read after it, they are complete.
  int64_t TasksFetched() {
    EXPECT_OK(session_->RunTransaction(TxMode::kReadWrite, [](pqxx::transaction_base& tx) {
      tx.exec("SELECT pg_stat_force_next_flush()");
      return absl::OkStatus();
    }));
    int64_t fetched = -1;
    EXPECT_TRUE(absl::SimpleAtoi(
        Query("SELECT coalesce(idx_tup_fetch, 0) + coalesce(seq_tup_read, 0) "
              "FROM pg_stat_user_tables WHERE relid = 'public.tasks'::regclass"),
        &fetched));
    return fetched;
  }

  std::unique_ptr<TestDatabase> db_;
  std::unique_ptr<PgSession> session_;
};

TEST_F(SnapshotPgTest, AMembersSnapshotHasEveryRowOfTheirTeamsInIdOrderAcrossPages) {
  // 3 teams (merged pages) and 66 (more than kMaxMergedTeams: the primary
  // key filtered by team), of 5 and of 70.
  std::vector<int> many;
  for (int t = 1; t <= 66; ++t) many.push_back(t);
  ASSERT_GT(many.size(), kMaxMergedTeams);
  AddTasks(/*teams=*/70, /*per_team=*/40);
  for (const std::vector<int>& mine : {std::vector<int>{1, 3, 4}, many}) {
    for (bool include_deleted : {false, true}) {
      SCOPED_TRACE(absl::StrCat(mine.size(), " teams, ", include_deleted ? "with deleted" : "live"));
      const std::string want = SqlIds(mine, include_deleted);
      // 4 of each team's 40 deleted.
      ASSERT_EQ(std::count(want.begin(), want.end(), ',') + 1,
                mine.size() * (include_deleted ? 40 : 36));
      size_t largest = 0;
      // Pages of 7 end inside a team's run and resume after the last id.
      EXPECT_EQ(Snapshot(MemberOf(mine, 7, include_deleted), &largest), want);
      EXPECT_EQ(largest, 7u);
    }
  }
  // A team not in the database changes nothing; no team, no rows.
  EXPECT_EQ(Snapshot(MemberOf({1, 3, 4, 99}, 50, false)), SqlIds({1, 3, 4}, false));
  EXPECT_EQ(Snapshot(MemberOf({}, 50, false)), "");
}

TEST_F(SnapshotPgTest, AMembersSnapshotReadsTheirTeamsRowsNotTheTableNorEachTeamsPage) {
  // 40 teams of 500 tasks, pages of 100. Through the primary key filtered
  // by team, a member of 2 teams read the whole table (20,000 rows);
  // one team's page after another, a member of 30 read 30 x 100 rows a
  // page (about 450,000). Merged, each page reads its rows and the deleted
  // ones among them, and per team the row after its last one with the
  // deleted rows before that (read again by the next page): about one.
  AddTasks(/*teams=*/40, /*per_team=*/500);
  for (const int member_of : {2, 30}) {
    SCOPED_TRACE(absl::StrCat("a member of ", member_of, " teams"));
    std::vector<int> teams;
    for (int t = 1; t <= member_of; ++t) teams.push_back(t * 40 / member_of);
    const int64_t before = TasksFetched();
    const std::string ids = Snapshot(MemberOf(teams, 100, false));
    const int64_t fetched = TasksFetched() - before;
    const int64_t sent = std::count(ids.begin(), ids.end(), ',') + 1;
    EXPECT_EQ(sent, member_of * 450);  // a tenth of each team's 500 deleted
    const int64_t theirs = member_of * 500;
    const int64_t pages = sent / 100 + 1;
    EXPECT_GE(fetched, sent);
    EXPECT_LE(fetched, theirs + 2 * pages * member_of);
  }
}

// Conflict records: a member sees their teams' and, of users rows (no
// team), those of the users they see; merged by the indexes of 0018, or by
// the walk without them.
TEST_F(SnapshotPgTest, AMembersConflictRecordsAreTheirTeamsAndTheirUsersRows) {
  const std::string me = "30000000-0000-4000-8000-000000000001";
  const std::string mate = "30000000-0000-4000-8000-000000000002";
  const std::string stranger = "30000000-0000-4000-8000-000000000003";
  ASSERT_OK(db_->Execute(absl::StrCat(
      "INSERT INTO pulsesync.conflicts (id, team_id, user_id, object_type, object_id, kind) "
      "SELECT gen_random_uuid(), CASE WHEN g % 4 < 3 THEN ('10000000-0000-4000-8000-' || "
      "lpad((1 + g % 3)::text, 12, '0'))::uuid END, CASE WHEN g % 4 = 3 THEN (ARRAY['", me,
      "', '", mate, "', '", stranger, "'])[1 + g % 3]::uuid END, 'task', gen_random_uuid(), "
      "'field' FROM generate_series(1, 120) g")));
  auto want = [&](const std::string& teams) {
    return Query(absl::StrCat(
        "SELECT coalesce(string_agg(id::text, ',' ORDER BY id), '') FROM pulsesync.conflicts "
        "WHERE team_id IN (", teams, ") OR (team_id IS NULL AND user_id IN ('", me, "', '", mate,
        "'))"));
  };
  auto snapshot = [&](absl::flat_hash_set<std::string> teams) {
    SnapshotOptions options;
    options.tables = {"conflict"};
    options.rows_per_chunk = 3;
    options.restricted = true;
    options.teams = std::move(teams);
    options.visible_users = {me, mate};
    return Snapshot(options);
  };
  const std::string mine = absl::StrCat("'", Team(1), "', '", Team(3), "'");
  for (const char* how : {"merged", "walked"}) {
    SCOPED_TRACE(how);
    const std::string expected = want(mine);
    EXPECT_EQ(std::count(expected.begin(), expected.end(), ','), 60 + 20 - 1);
    EXPECT_EQ(snapshot({Team(1), Team(3)}), expected);
    EXPECT_EQ(snapshot({}), want("NULL"));  // a member of no team: the users rows'
    ASSERT_OK(db_->Execute("DROP INDEX IF EXISTS pulsesync.conflicts_team_id_id_idx"));
  }
}

// The scope indexes of migration 0018: on every team table, replacing the
// single-column team indexes, and on a table registered later.
TEST_F(SnapshotPgTest, TeamTablesHaveAScopeIndexAndRegisteringOneAddsIt) {
  auto indexes = [&](const std::string& table) {
    return Query(absl::StrCat(
        "SELECT string_agg(d, ' ' ORDER BY d COLLATE \"C\") FROM (SELECT regexp_replace("
        "indexdef, '.* USING btree ', '') d FROM pg_indexes WHERE tablename = '", table, "') i"));
  };
  EXPECT_EQ(indexes("tasks"),
            "(assignee_id) WHERE (assignee_id IS NOT NULL) (id) (project_id) (team_id, id)");
  EXPECT_EQ(indexes("projects"), "(id) (team_id, id)");
  EXPECT_EQ(indexes("conflicts"),
            "(id) (id) WHERE (team_id IS NULL) (loser_origin_id) WHERE ((NOT resolved) AND (NOT "
            "deleted)) (object_type, object_id) (team_id, id)");
  EXPECT_EQ(indexes("teams"), "(id)");  // its team column is its id

  // A team column that needs quoting, registered twice; a table with an
  // index of its own led by (team column, id).
  ASSERT_OK(db_->Execute(
      "CREATE TABLE public.notes (id uuid PRIMARY KEY, \"Squad\" uuid, body text);"
      "CREATE TABLE public.pins (id uuid PRIMARY KEY, team_id uuid, at int);"
      "CREATE INDEX pins_by_team ON public.pins (team_id, id, at);"
      "SELECT pulsesync.register_table('public.notes', 'note', 'Squad');"
      "SELECT pulsesync.register_table('public.notes', 'note', 'Squad');"
      "SELECT pulsesync.register_table('public.pins', 'pin', 'team_id');"));
  EXPECT_EQ(indexes("notes"), "(\"Squad\", id) (id)");  // once
  EXPECT_EQ(indexes("pins"), "(id) (team_id, id, at)");  // its own index serves

  // A member's snapshot of it: their squads' rows, through the merge.
  ASSERT_OK(db_->Execute(absl::StrCat(
      "INSERT INTO public.notes (id, \"Squad\", body) SELECT gen_random_uuid(), "
      "(ARRAY['", Team(1), "', '", Team(2), "', '", Team(3), "'])[1 + g % 3]::uuid, 'n' || g "
      "FROM generate_series(1, 30) g")));
  SnapshotOptions options;
  options.tables = {"note"};
  options.rows_per_chunk = 4;
  options.restricted = true;
  options.teams = {Team(1), Team(3)};
  auto snapshot = [&] { return Snapshot(options); };
  const std::string want =
      Query(absl::StrCat("SELECT string_agg(id::text, ',' ORDER BY id) FROM public.notes WHERE "
                         "\"Squad\" IN ('", Team(1), "', '", Team(3), "')"));
  EXPECT_EQ(std::count(want.begin(), want.end(), ','), 19);  // 20 of the 30
  EXPECT_EQ(snapshot(), want);
  // Without the index, the same rows (by the walk of the primary key).
  ASSERT_OK(db_->Execute("DROP INDEX \"notes_Squad_id_idx\""));
  EXPECT_EQ(indexes("notes"), "(id)");
  EXPECT_EQ(snapshot(), want);
}

}  // namespace
}  // namespace pulsesync

// ReadSnapshot against a real database: a member's snapshot of a team table
// (every live row of their teams, none of another team's, in id order
// across pages), and what one of its pages reads (the rows of the caller's
// teams through the (team column, id) index of migration 0018, not a walk
// of the whole table).
#include "server/core/snapshot.h"

#include <algorithm>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
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

  // The ids of a snapshot of the tasks of `teams`, in the order emitted.
  std::vector<std::string> SnapshotIds(const std::vector<int>& teams, uint32_t rows_per_chunk,
                                       bool include_deleted, size_t* largest_chunk) {
    SnapshotOptions options;
    options.tables = {"task"};
    options.rows_per_chunk = rows_per_chunk;
    options.include_deleted = include_deleted;
    options.restricted = true;
    for (int t : teams) options.teams.insert(Team(t));
    std::vector<std::string> ids;
    *largest_chunk = 0;
    absl::StatusOr<std::string> cursor =
        ReadSnapshot(*session_, options, [&](SnapshotChunk chunk) -> absl::Status {
          *largest_chunk = std::max(*largest_chunk, chunk.records.size());
          for (const std::string& record : chunk.records) {
            absl::StatusOr<JsonValue> row = ParseJson(record);
            if (!row.ok()) return row.status();
            ids.push_back(row->Find("id")->text());
          }
          return absl::OkStatus();
        });
    EXPECT_OK(cursor.status());
    return ids;
  }

  // What SQL says the same snapshot holds, in id order.
  std::vector<std::string> SqlIds(const std::vector<int>& teams, bool include_deleted) {
    std::vector<std::string> quoted;
    for (int t : teams) quoted.push_back(absl::StrCat("'", Team(t), "'"));
    absl::StatusOr<std::string> ids = db_->QueryValue(absl::StrCat(
        "SELECT coalesce(string_agg(id::text, ',' ORDER BY id), '') FROM tasks WHERE team_id IN (",
        absl::StrJoin(quoted, ","), ")", include_deleted ? "" : " AND NOT deleted"));
    EXPECT_OK(ids.status());
    return ids.ok() ? absl::StrSplit(*ids, ',', absl::SkipEmpty()) : std::vector<std::string>{};
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
      const std::vector<std::string> want = SqlIds(mine, include_deleted);
      // 4 of each team's 40 deleted.
      ASSERT_EQ(want.size(), mine.size() * (include_deleted ? 40 : 36));
      size_t largest = 0;
      // Pages of 7 end inside a team's run and resume after the last id.
      EXPECT_EQ(SnapshotIds(mine, 7, include_deleted, &largest), want);
      EXPECT_EQ(largest, 7u);
    }
  }
  // A team not in the database changes nothing; no team, no rows.
  size_t largest = 0;
  EXPECT_EQ(SnapshotIds({1, 3, 4, 99}, 50, false, &largest), SqlIds({1, 3, 4}, false));
  EXPECT_EQ(SnapshotIds({}, 50, false, &largest), std::vector<std::string>{});
}

// What a plan's nodes that read `relation` read (EXPLAIN's per-loop
// averages times loops).
struct Reads {
  double returned = 0;  // rows the scans passed on
  double removed = 0;   // rows their filters dropped (deleted ones)
  bool seq_scan = false;
};

void AddReads(const JsonValue& node, const std::string& relation, Reads* reads) {
  const JsonValue* name = node.Find("Relation Name");
  if (name != nullptr && name->text() == relation) {
    auto number = [&](const char* key) {
      const JsonValue* v = node.Find(key);
      double d = 0;
      return v != nullptr && absl::SimpleAtod(v->text(), &d) ? d : 0.0;
    };
    reads->returned += number("Actual Rows") * number("Actual Loops");
    reads->removed += number("Rows Removed by Filter") * number("Actual Loops");
    if (node.Find("Node Type")->text() == "Seq Scan") reads->seq_scan = true;
  }
  if (const JsonValue* children = node.Find("Plans")) {
    for (const JsonValue& child : children->items()) AddReads(child, relation, reads);
  }
}

TEST_F(SnapshotPgTest, AMembersPageReadsItsRowsNotTheTableNorEachTeamsPage) {
  // 40 teams of 500 tasks. Through the primary key filtered by team, a
  // member of 2 made a page of 100 read about 20 x 100 rows; one team's
  // page after another, a member of 30 read 30 x 100. Merged, a page reads
  // its rows, one more per team, and the deleted ones among them.
  AddTasks(/*teams=*/40, /*per_team=*/500);
  for (const size_t member_of : {2, 30}) {
    std::vector<std::string> teams;
    for (size_t t = 1; t <= member_of; ++t) {
      teams.push_back(Team(static_cast<int>(t * 40 / member_of)));
    }
    for (bool first_page : {true, false}) {
      SCOPED_TRACE(absl::StrCat(member_of, " teams, ", first_page ? "first page" : "a later page"));
      const std::string sql =
          SnapshotPageSql("public.tasks", "team_id", SnapshotScope::kTeams, teams.size(),
                          /*merged=*/true, /*include_deleted=*/false, first_page);
      absl::StatusOr<std::string> plan = db_->QueryValue(absl::StrCat(
          "PREPARE page(uuid, bigint, uuid[]) AS ", sql, ";",
          "EXPLAIN (ANALYZE, FORMAT JSON) EXECUTE page('", first_page ? "00000000" : "80000000",
          "-0000-0000-0000-000000000000', 100, '{", absl::StrJoin(teams, ","), "}')"));
      ASSERT_OK(plan.status());
      ASSERT_OK_AND_ASSIGN(JsonValue parsed, ParseJson(*plan));
      ASSERT_FALSE(parsed.items().empty());
      const JsonValue& top = *parsed.items()[0].Find("Plan");
      EXPECT_EQ(top.Find("Actual Rows")->text(), "100");
      Reads reads;
      AddReads(top, "tasks", &reads);
      EXPECT_FALSE(reads.seq_scan) << *plan;
      EXPECT_GE(reads.returned, 100);
      EXPECT_LE(reads.returned, 100 + member_of) << *plan;
      // (A tenth of the rows read are deleted; the walk removed ~2,000.)
      EXPECT_LE(reads.removed, 100 + member_of) << *plan;
    }
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
    return *db_->QueryValue(absl::StrCat(
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
    std::vector<std::string> got;
    EXPECT_OK(ReadSnapshot(*session_, options, [&](SnapshotChunk chunk) {
                for (const std::string& record : chunk.records) {
                  absl::StatusOr<JsonValue> row = ParseJson(record);
                  if (!row.ok()) return row.status();
                  got.push_back(row->Find("id")->text());
                }
                return absl::OkStatus();
              }).status());
    return absl::StrJoin(got, ",");
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
    absl::StatusOr<std::string> defs = db_->QueryValue(absl::StrCat(
        "SELECT string_agg(d, ' ' ORDER BY d COLLATE \"C\") FROM (SELECT regexp_replace("
        "indexdef, '.* USING btree ', '') d FROM pg_indexes WHERE tablename = '", table, "') i"));
    EXPECT_OK(defs.status());
    return defs.value_or("");
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
  auto snapshot = [&] {
    std::vector<std::string> got;
    EXPECT_OK(ReadSnapshot(*session_, options, [&](SnapshotChunk chunk) {
                for (const std::string& record : chunk.records) {
                  absl::StatusOr<JsonValue> row = ParseJson(record);
                  if (!row.ok()) return row.status();
                  got.push_back(row->Find("id")->text());
                }
                return absl::OkStatus();
              }).status());
    return absl::StrJoin(got, ",");
  };
  const std::string want = *db_->QueryValue(
      absl::StrCat("SELECT string_agg(id::text, ',' ORDER BY id) FROM public.notes WHERE "
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

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
#include "absl/strings/str_split.h"
#include "common/json.h"
#include "gtest/gtest.h"
#include "server/storage/pg_session.h"
#include "tests/testing/status_matchers.h"
#include "tests/testing/test_database.h"

namespace pulsesync {
namespace {

using ::pulsesync::testing::TestDatabase;

std::string Team(int n) { return absl::StrCat("10000000-0000-4000-8000-", absl::Dec(n, absl::kZeroPad12)); }

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
  std::vector<std::string> SqlIds(const std::string& team_list, bool include_deleted) {
    absl::StatusOr<std::string> ids = db_->QueryValue(absl::StrCat(
        "SELECT coalesce(string_agg(id::text, ',' ORDER BY id), '') FROM tasks WHERE team_id IN (",
        team_list, ")", include_deleted ? "" : " AND NOT deleted"));
    EXPECT_OK(ids.status());
    return ids.ok() ? absl::StrSplit(*ids, ',', absl::SkipEmpty()) : std::vector<std::string>{};
  }

  std::unique_ptr<TestDatabase> db_;
  std::unique_ptr<PgSession> session_;
};

TEST_F(SnapshotPgTest, AMembersSnapshotHasEveryRowOfTheirTeamsInIdOrderAcrossPages) {
  AddTasks(/*teams=*/5, /*per_team=*/40);
  const std::string mine = absl::StrCat("'", Team(1), "','", Team(3), "','", Team(4), "'");
  for (bool include_deleted : {false, true}) {
    SCOPED_TRACE(include_deleted ? "with deleted rows" : "live rows");
    const std::vector<std::string> want = SqlIds(mine, include_deleted);
    ASSERT_EQ(want.size(), include_deleted ? 120u : 108u);  // 4 of each team's 40 deleted
    size_t largest = 0;
    // Pages of 7: each team's rows are merged into pages that end inside
    // a team's run and resume after the last id sent.
    EXPECT_EQ(SnapshotIds({1, 3, 4}, 7, include_deleted, &largest), want);
    EXPECT_EQ(largest, 7u);
  }
  // A team of no rows and a team not in the database change nothing.
  size_t largest = 0;
  EXPECT_EQ(SnapshotIds({1, 3, 4, 6, 99}, 50, false, &largest), SqlIds(mine, false));
  EXPECT_EQ(SnapshotIds({}, 50, false, &largest), std::vector<std::string>{});
}

// Sums, over the plan's nodes that read `relation`, the rows they read:
// returned plus removed by a filter, times loops.
double RowsRead(const JsonValue& node, const std::string& relation, bool* seq_scan) {
  double rows = 0;
  const JsonValue* name = node.Find("Relation Name");
  if (name != nullptr && name->text() == relation) {
    auto number = [&](const char* key) {
      const JsonValue* v = node.Find(key);
      double d = 0;
      return v != nullptr && absl::SimpleAtod(v->text(), &d) ? d : 0.0;
    };
    rows += (number("Actual Rows") + number("Rows Removed by Filter")) * number("Actual Loops");
    if (node.Find("Node Type")->text() == "Seq Scan") *seq_scan = true;
  }
  if (const JsonValue* children = node.Find("Plans")) {
    for (const JsonValue& child : children->items()) rows += RowsRead(child, relation, seq_scan);
  }
  return rows;
}

TEST_F(SnapshotPgTest, AMembersPageReadsTheirTeamsRowsNotTheTable) {
  // 40 teams of 500 tasks; a member of 2 of them. Through the primary key
  // filtered by team, a page of 100 read about 20 x 100 rows; the table
  // grows, the page's reads do not.
  AddTasks(/*teams=*/40, /*per_team=*/500);
  for (bool first_page : {true, false}) {
    SCOPED_TRACE(first_page ? "first page" : "a later page");
    const std::string sql = SnapshotPageSql("public.tasks", "team_id", SnapshotScope::kTeams,
                                            /*include_deleted=*/false, first_page);
    absl::StatusOr<std::string> plan = db_->QueryValue(absl::StrCat(
        "PREPARE page(uuid, bigint, uuid[]) AS ", sql, ";",
        "EXPLAIN (ANALYZE, FORMAT JSON) EXECUTE page('", first_page ? "00000000" : "80000000",
        "-0000-0000-0000-000000000000', 100, '{", Team(7), ",", Team(21), "}')"));
    ASSERT_OK(plan.status());
    ASSERT_OK_AND_ASSIGN(JsonValue parsed, ParseJson(*plan));
    ASSERT_FALSE(parsed.items().empty());
    const JsonValue& top = *parsed.items()[0].Find("Plan");
    EXPECT_EQ(top.Find("Actual Rows")->text(), "100");
    bool seq_scan = false;
    const double read = RowsRead(top, "tasks", &seq_scan);
    EXPECT_FALSE(seq_scan) << *plan;
    // Each team's first 100 live rows after $1 and the deleted ones among
    // them: at most 2 x 100 + the two teams' 2 x 50 deleted rows (the walk
    // of the primary key read about 2,000).
    EXPECT_LE(read, 2 * 100 + 2 * 50) << *plan;
    EXPECT_GE(read, 100);
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
            "(id) (loser_origin_id) WHERE ((NOT resolved) AND (NOT deleted)) "
            "(object_type, object_id) (team_id, id)");
  EXPECT_EQ(indexes("teams"), "(id)");  // its team column is its id

  ASSERT_OK(db_->Execute(
      "CREATE TABLE public.notes (id uuid PRIMARY KEY, squad uuid, body text);"
      "CREATE TABLE public.pins (id uuid PRIMARY KEY, team_id uuid, at int);"
      "CREATE INDEX pins_by_team ON public.pins (team_id, id, at);"
      "SELECT pulsesync.register_table('public.notes', 'note', 'squad');"
      "SELECT pulsesync.register_table('public.notes', 'note', 'squad');"
      "SELECT pulsesync.register_table('public.pins', 'pin', 'team_id');"));
  EXPECT_EQ(indexes("notes"), "(id) (squad, id)");  // once, registered twice
  EXPECT_EQ(indexes("pins"), "(id) (team_id, id, at)");  // its own index serves
  // And it is still a synced table: its writes reach the log.
  ASSERT_OK(db_->Execute("INSERT INTO public.notes (id, squad, body) VALUES "
                         "(gen_random_uuid(), gen_random_uuid(), 'n')"));
  EXPECT_EQ(*db_->QueryValue("SELECT count(*) FROM pulsesync.change_log WHERE object_type = 'note'"),
            "1");
}

}  // namespace
}  // namespace pulsesync

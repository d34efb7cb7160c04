// growth_bench: do push and pull cost grow with the changes, or with the
// data? The same work measured at two sizes of data, 10x apart (issue 7:
// 1M rows server-side, 100k in a client), in the same run.
//
//   PULSESYNC_TEST_DATABASE_URL=postgresql://postgres@127.0.0.1:5432/postgres
//     build/bench/growth_bench [--server_rows=1000000]
//
// Server (PostgreSQL, through the server's own code, no gRPC):
//   apply   batches of 100 revisions (half new tasks, half edits of random
//           existing ones, based on their versions) through
//           ApplyRevisionBatch, ms for the median batch
//   follow  each batch's changes read right after it by a follower on its
//           own session, as the feed hub reads, ms for the median read
//   pull    the changes those batches made, read with ReadChanges from the
//           cursor before them, pages of 1,000, ms per 1,000 changes
//   member  a member's snapshot of tasks (ReadSnapshot restricted to 2 of
//           the 100 teams the tasks are spread over; pages of 500), ms per
//           1,000 rows, median of 5; at the larger size also in rows/s
//           beside one SELECT of the same rows in id order (the ceiling),
//           and the same for a member of 30 teams (one run)
// at --server_rows / 10 and at --server_rows tasks, each with a change-log
// row, as if every task had been written through the engine.
// The client's side (SQLite at 10k and 100k rows) is in client_bench.
//
// Each figure: value = the cost at the larger size, ceiling = the same cost
// at the smaller one, so ratio = growth (1 = none). Printed, never asserted.
#include <pqxx/pqxx>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "bench/figures.h"
#include "common/status_macros.h"
#include "common/uuid.h"
#include "server/core/change_feed.h"
#include "server/core/cursor.h"
#include "server/core/revision_applier.h"
#include "server/core/snapshot.h"
#include "server/storage/pg_session.h"
#include "tests/testing/test_database.h"

ABSL_FLAG(int, server_rows, 1000000, "tasks in PostgreSQL at the larger size");
ABSL_FLAG(int, batches, 50, "batches of 100 revisions applied at each size");

namespace pulsesync {
namespace {

using Clock = std::chrono::steady_clock;
constexpr char kTeam[] = "10000000-0000-4000-8000-000000000001";  // the applies'
// The tasks are spread over 100 teams, 10000000-0000-4000-8000-000000000001
// to ...064 (in hex); team n, as SQL and as text:
std::string TeamSql(const std::string& n_expression) {
  return absl::StrCat("('10000000-0000-4000-8000-' || lpad(to_hex(", n_expression,
                      "), 12, '0'))::uuid");
}
std::string Team(int n) {
  return absl::StrCat("10000000-0000-4000-8000-", absl::Hex(n, absl::kZeroPad12));
}

std::string Rows(int n) {
  return n >= 1000000 && n % 1000000 == 0 ? absl::StrCat(n / 1000000, "M")
                                          : absl::StrCat(n / 1000, "k");
}

double MsSince(Clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
}

// A member's snapshot of tasks: ms per 1,000 rows and rows/s (median of
// the runs), and one SELECT of the same rows in id order, rows/s.
struct MemberSnapshot {
  double ms_per_1000 = 0;
  double rows_per_s = 0;
  double select_rows_per_s = 0;
};

absl::StatusOr<MemberSnapshot> MeasureMember(PgSession& session, int first_team, int teams,
                                             int runs) {
  SnapshotOptions member;
  member.tables = {"task"};
  member.restricted = true;
  std::vector<std::string> quoted;
  for (int t = first_team; t < first_team + teams; ++t) {
    member.teams.insert(Team(t));
    quoted.push_back(absl::StrCat("'", Team(t), "'"));
  }
  const std::string select_member = absl::StrCat(
      "SELECT count(*), sum(length(r)) FROM (SELECT (to_jsonb(t) - "
      "pulsesync.internal_columns())::text r FROM tasks t WHERE t.team_id IN (",
      absl::StrJoin(quoted, ", "), ") AND NOT t.deleted ORDER BY t.id) s");
  std::vector<double> snapshot_ms, select_ms;
  size_t rows = 0;
  for (int i = 0; i < runs; ++i) {
    rows = 0;
    const auto s0 = Clock::now();
    PS_RETURN_IF_ERROR(ReadSnapshot(session, member, [&](SnapshotChunk chunk) {
                         rows += chunk.records.size();
                         return absl::OkStatus();
                       }).status());
    snapshot_ms.push_back(MsSince(s0));
    const auto q0 = Clock::now();
    int64_t selected = 0;
    PS_RETURN_IF_ERROR(
        session.RunTransaction(TxMode::kRepeatableReadOnly, [&](pqxx::transaction_base& tx) {
          selected = tx.exec1(select_member)[0].as<int64_t>();
          return absl::OkStatus();
        }));
    select_ms.push_back(MsSince(q0));
    if (rows == 0 || static_cast<int64_t>(rows) != selected) {
      return absl::InternalError(
          absl::StrCat("the member's snapshot held ", rows, " tasks; SQL says ", selected));
    }
  }
  MemberSnapshot m;
  m.ms_per_1000 = bench::Median(snapshot_ms) * 1000.0 / rows;
  m.rows_per_s = rows * 1000.0 / bench::Median(snapshot_ms);
  m.select_rows_per_s = rows * 1000.0 / bench::Median(select_ms);
  return m;
}

struct ServerCost {
  double apply_ms_per_batch = 0;
  double pull_ms_per_1000 = 0;
  double follow_ms_per_batch = 0;
  MemberSnapshot member2;   // a member of 2 teams (99 and 100)
  MemberSnapshot member30;  // a member of 30 (71 to 100); the larger size only
};

// Grows `tasks` (and the change log) to `rows`, set-based: the rows and log
// rows the engine would have written, without its per-row triggers.
bool GrowServer(const std::string& url, int rows) {
  try {
    pqxx::connection conn(url);
    pqxx::work tx(conn);
    const int have = tx.exec1("SELECT count(*) FROM tasks")[0].as<int>();
    if (have >= rows) return true;
    tx.exec("SET LOCAL session_replication_role = replica");
    tx.exec(absl::StrCat(
        "WITH t AS (INSERT INTO tasks (id, team_id, title, description, priority, version) "
        "SELECT gen_random_uuid(), ", TeamSql("1 + g % 100"), ", 'task ' || g, 'bulk row', g % 5, "
        "nextval('pulsesync.version_seq') FROM generate_series(", have + 1, ", ", rows,
        ") g RETURNING *) "
        "INSERT INTO pulsesync.change_log (schema_name, table_name, object_type, object_id, "
        "team_id, op, version, new_row) "
        "SELECT 'public', 'tasks', 'task', t.id, t.team_id, 'INSERT', t.version, "
        "to_jsonb(t) - ARRAY['live_hlc', 'deleted_hlc', 'field_clocks'] FROM t"));
    tx.commit();
    pqxx::nontransaction vacuum(conn);
    vacuum.exec("VACUUM ANALYZE tasks");
    vacuum.exec("VACUUM ANALYZE pulsesync.change_log");
    // The bulk insert's dirty pages written back now, not by the
    // checkpointer while the next figure is measured.
    vacuum.exec("CHECKPOINT");
    return true;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "growing the server's data: %s\n", e.what());
    return false;
  }
}

absl::StatusOr<ServerCost> MeasureServer(const std::string& url, int batches, int round) {
  // Existing tasks to edit, each with the version a client that synced it
  // holds: the edits are based on what they change, as a client's are. (An
  // edit based on version 0 of a row another device wrote is a concurrent
  // edit, and takes the per-revision path to record its conflict: in the
  // second round, the first round's rows made a sixth of the batches 3.5x
  // slower, and the figure measured how often a random pick met them.)
  std::vector<std::pair<std::string, int64_t>> existing;
  {
    pqxx::connection conn(url);
    pqxx::work tx(conn);
    for (const auto& row : tx.exec(absl::StrCat(
             "SELECT id::text, version FROM tasks ORDER BY random() LIMIT ", (batches + 1) * 50))) {
      existing.emplace_back(row[0].as<std::string>(), row[1].as<int64_t>());
    }
  }
  PgSessionOptions options;
  options.database_url = url;
  options.statements = RevisionApplierStatements();
  for (PreparedStatement& s : ChangeFeedStatements()) options.statements.push_back(s);
  PgSession session(options);
  PS_ASSIGN_OR_RETURN(Cursor now, CurrentCursor(session));
  std::string cursor = EncodeCursor(now);

  ApplyLimits limits;
  auto batch_of = [&](int b) {
    std::vector<v1::Revision> revs(100);
    for (int i = 0; i < 100; ++i) {
      v1::Revision& r = revs[i];
      r.set_id(NewTimeOrderedUuid());
      r.set_object_type("task");
      // Edits: each existing task at most once per run (one revision per
      // object in a batch keeps it on the set-based path).
      const size_t pick = static_cast<size_t>(b) * 50 + i / 2;
      const bool edit = i % 2 == 1 && pick < existing.size();
      r.set_object_id(edit ? existing[pick].first : NewTimeOrderedUuid());
      if (edit) r.set_base_version(existing[pick].second);
      r.set_origin_id(absl::StrCat("growth-", round));
      r.set_seq(b * 100 + i + 1);
      r.set_op(v1::OPERATION_UPSERT);
      r.set_payload(edit ? absl::StrCat(R"({"title":"edited )", b, "-", i, R"("})")
                         : absl::StrCat(R"({"team_id":")", kTeam, R"(","title":"new )", b, "-",
                                        i, R"(","priority":1})"));
      const int64_t now = 1800000000000 + round * 1000000 + b * 1000 + i;
      r.set_created_at(now);
      r.mutable_clock()->set_physical_ms(now);
    }
    return revs;
  };
  // One batch first (PL/pgSQL plans are made once per connection).
  PS_RETURN_IF_ERROR(ApplyRevisionBatch(session, batch_of(0), limits).status());
  // A follower on a session of its own, as the feed hub reads the log: each
  // batch's changes right after it commits, for as long as the server runs
  // (PostgreSQL may switch a prepared statement to a generic plan after its
  // fifth execution: what that plan reads must not grow with the log).
  PgSession follower(options);
  PS_ASSIGN_OR_RETURN(Cursor follow_from, CurrentCursor(follower));
  std::string follow_cursor = EncodeCursor(follow_from);
  std::vector<double> follow_ms;
  // The median batch: one batch that meets a checkpoint or an autovacuum
  // of the big table must not stand for all of them (these machines are
  // shared; the mean moved 2x between runs at 1M tasks).
  std::vector<double> batch_ms;
  for (int b = 1; b <= batches; ++b) {
    std::vector<v1::Revision> revs = batch_of(b);
    const auto a0 = Clock::now();
    PS_RETURN_IF_ERROR(ApplyRevisionBatch(session, revs, limits).status());
    batch_ms.push_back(MsSince(a0));
    const auto f0 = Clock::now();
    PS_ASSIGN_OR_RETURN(PullPage followed, ReadChanges(follower, follow_cursor, 1000));
    follow_ms.push_back(MsSince(f0));
    follow_cursor = followed.next_cursor;
  }
  ServerCost cost;
  cost.apply_ms_per_batch = bench::Median(batch_ms);
  cost.follow_ms_per_batch = bench::Median(follow_ms);

  const auto p0 = Clock::now();
  size_t changes = 0;
  for (int pages = 0; pages < 10000; ++pages) {
    PS_ASSIGN_OR_RETURN(PullPage page, ReadChanges(session, cursor, 1000));
    changes += page.changes.size();
    cursor = page.next_cursor;
    if (!page.has_more) break;
  }
  cost.pull_ms_per_1000 = changes > 0 ? MsSince(p0) * 1000.0 / changes : 0;

  PS_ASSIGN_OR_RETURN(cost.member2, MeasureMember(session, 99, 2, 5));
  if (round == 2) {
    PS_ASSIGN_OR_RETURN(cost.member30, MeasureMember(session, 71, 30, 1));
  }
  return cost;
}

int Main() {
  const int server_rows = absl::GetFlag(FLAGS_server_rows);
  const int batches = absl::GetFlag(FLAGS_batches);
  std::printf("growth_bench: the same work at 1x and 10x the data\n");
  bench::GrowthFigures growth;  // the server's; client_bench has the client's

  if (testing::AdminDatabaseUrl().empty()) {
    std::printf("  server: skipped (PULSESYNC_TEST_DATABASE_URL is not set)\n");
  } else {
    auto db = testing::TestDatabase::Create();
    if (!db.ok()) {
      std::fprintf(stderr, "%s\n", db.status().ToString().c_str());
      return 1;
    }
    const std::string url = (*db)->url();
    if (!(*db)->Execute(absl::StrCat("INSERT INTO teams (id, name) SELECT ", TeamSql("g"),
                                     ", 'growth ' || g FROM generate_series(1, 100) g"))
             .ok()) {
      return 1;
    }
    const std::string server_small = Rows(server_rows / 10) + " tasks";
    const std::string server_big = Rows(server_rows) + " tasks";
    ServerCost s1, s10;
    for (int round = 1; round <= 2; ++round) {
      const int rows = round == 1 ? server_rows / 10 : server_rows;
      const auto g0 = Clock::now();
      if (!GrowServer(url, rows)) return 1;
      std::printf("  (server data grown to %d tasks in %.1f s)\n", rows, MsSince(g0) / 1000);
      std::fflush(stdout);
      absl::StatusOr<ServerCost> cost = MeasureServer(url, batches, round);
      if (!cost.ok()) {
        std::fprintf(stderr, "server: %s\n", cost.status().ToString().c_str());
        return 1;
      }
      (round == 1 ? s1 : s10) = *cost;
    }
    growth.Add("server: apply a batch of 100 (half edits)", s1.apply_ms_per_batch, server_small,
               s10.apply_ms_per_batch, server_big);
    growth.Add("server: pull 1,000 changes", s1.pull_ms_per_1000, server_small,
               s10.pull_ms_per_1000, server_big);
    growth.Add("server: follow the log, a batch's 100 changes (median)", s1.follow_ms_per_batch,
               server_small, s10.follow_ms_per_batch, server_big);
    growth.Add("server: a member's snapshot (2 of 100 teams), per 1,000 rows",
               s1.member2.ms_per_1000, server_small, s10.member2.ms_per_1000, server_big);
    for (const auto& [teams, m] : {std::pair{2, s10.member2}, std::pair{30, s10.member30}}) {
      std::printf("  %-52s %9.0f rows/s, one SELECT of them %.0f rows/s\n",
                  absl::StrCat("a member of ", teams, " teams' snapshot at ", server_big).c_str(),
                  m.rows_per_s, m.select_rows_per_s);
      bench::PrintFigure(absl::StrCat("server: a member's snapshot, ", teams, " of 100 teams, at ",
                                      server_big, " (vs one SELECT of the same rows)"),
                         m.rows_per_s, "rows/s", m.select_rows_per_s, "");
    }
  }
  growth.Worst("growth: worst server cost ratio, 10x the data (1 = no growth)");
  return 0;
}

}  // namespace
}  // namespace pulsesync

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  return pulsesync::Main();
}

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
//           cursor before them, pages of 1,000, ms per 1,000 changes,
//           median of 3
//   member  a member's snapshot of tasks (ReadSnapshot restricted to 2 of
//           the 100 teams the tasks are spread over; pages of 500), ms per
//           1,000 rows, median of 5; at the larger size also in rows/s
//           beside one SELECT of the same rows in id order (the ceiling),
//           and the same for a member of 30 teams (one run)
// on two databases of --server_rows / 10 and --server_rows tasks, each task
// with a change-log row as if written through the engine, measured in
// turns: a batch on one, a batch on the other (and so for each figure).
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

// One member's snapshot of tasks (ReadSnapshot restricted to teams
// first_team .. first_team + teams - 1), and one SELECT of the same rows in
// id order: the rows and the ms of each.
struct MemberRun {
  size_t rows = 0;
  double snapshot_ms = 0;
  double select_ms = 0;
};

absl::StatusOr<MemberRun> MemberSnapshot(PgSession& session, int first_team, int teams) {
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
  MemberRun run;
  const auto s0 = Clock::now();
  PS_RETURN_IF_ERROR(ReadSnapshot(session, member, [&](SnapshotChunk chunk) {
                       run.rows += chunk.records.size();
                       return absl::OkStatus();
                     }).status());
  run.snapshot_ms = MsSince(s0);
  const auto q0 = Clock::now();
  int64_t selected = 0;
  PS_RETURN_IF_ERROR(
      session.RunTransaction(TxMode::kRepeatableReadOnly, [&](pqxx::transaction_base& tx) {
        selected = tx.exec1(select_member)[0].as<int64_t>();
        return absl::OkStatus();
      }));
  run.select_ms = MsSince(q0);
  if (run.rows == 0 || static_cast<int64_t>(run.rows) != selected) {
    return absl::InternalError(
        absl::StrCat("the member's snapshot held ", run.rows, " tasks; SQL says ", selected));
  }
  return run;
}

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

// One database at one size and the work measured on it, a step at a time:
// the two sizes' steps interleave, so that both meet the machine as it is
// at that moment (measured one size after the other, the worst ratio moved
// between 0.75 and 1.54 from run to run with the same code).
class ServerSide {
 public:
  static absl::StatusOr<std::unique_ptr<ServerSide>> Create(const std::string& url, int batches,
                                                           int side) {
    std::unique_ptr<ServerSide> s(new ServerSide(url, side));
    PS_RETURN_IF_ERROR(s->Start(batches));
    return s;
  }

  // Applies the next batch of 100 revisions, then reads its changes as a
  // follower; keeps the ms of each.
  absl::Status ApplyNext() {
    ++batch_;
    std::vector<v1::Revision> revs = BatchOf(batch_);
    const auto a0 = Clock::now();
    PS_RETURN_IF_ERROR(ApplyRevisionBatch(session_, revs, limits_).status());
    apply_ms_.push_back(MsSince(a0));
    const auto f0 = Clock::now();
    PS_ASSIGN_OR_RETURN(PullPage followed, ReadChanges(follower_, follow_cursor_, 1000));
    follow_ms_.push_back(MsSince(f0));
    follow_cursor_ = followed.next_cursor;
    return absl::OkStatus();
  }

  // Pulls every change the batches made, from the cursor before them, in
  // pages of 1,000; keeps the ms per 1,000 changes.
  absl::Status Pull() {
    std::string cursor = pull_from_;
    size_t changes = 0;
    const auto p0 = Clock::now();
    for (int pages = 0; pages < 10000; ++pages) {
      PS_ASSIGN_OR_RETURN(PullPage page, ReadChanges(session_, cursor, 1000));
      changes += page.changes.size();
      cursor = page.next_cursor;
      if (!page.has_more) break;
    }
    if (changes == 0) return absl::InternalError("the pull read no changes");
    pull_ms_per_1000_.push_back(MsSince(p0) * 1000.0 / changes);
    return absl::OkStatus();
  }

  absl::StatusOr<MemberRun> Member(int first_team, int teams) {
    return MemberSnapshot(session_, first_team, teams);
  }

  double apply_ms() const { return bench::Median(apply_ms_); }
  double follow_ms() const { return bench::Median(follow_ms_); }
  double pull_ms_per_1000() const { return bench::Median(pull_ms_per_1000_); }

 private:
  ServerSide(const std::string& url, int side) : url_(url), side_(side), session_(Options(url)),
                                                 follower_(Options(url)) {}

  static PgSessionOptions Options(const std::string& url) {
    PgSessionOptions options;
    options.database_url = url;
    options.statements = RevisionApplierStatements();
    for (PreparedStatement& s : ChangeFeedStatements()) options.statements.push_back(s);
    return options;
  }

  absl::Status Start(int batches) {
    // Existing tasks to edit, each with the version a client that synced it
    // holds: the edits are based on what they change, as a client's are.
    // (An edit based on version 0 of a row another device wrote is a
    // concurrent edit, and takes the per-revision path to record its
    // conflict: a sixth of the batches were then 3.5x slower, and the
    // figure measured how often a random pick met such a row.)
    try {
      pqxx::connection conn(url_);
      pqxx::work tx(conn);
      for (const auto& row : tx.exec(absl::StrCat("SELECT id::text, version FROM tasks "
                                                  "ORDER BY random() LIMIT ",
                                                  (batches + 1) * 50))) {
        existing_.emplace_back(row[0].as<std::string>(), row[1].as<int64_t>());
      }
    } catch (const std::exception& e) {
      return absl::UnavailableError(e.what());
    }
    PS_ASSIGN_OR_RETURN(Cursor now, CurrentCursor(session_));
    pull_from_ = EncodeCursor(now);
    // One batch first (PL/pgSQL plans are made once per connection).
    PS_RETURN_IF_ERROR(ApplyRevisionBatch(session_, BatchOf(0), limits_).status());
    // A follower on a session of its own, as the feed hub reads the log:
    // each batch's changes right after it commits, for as long as the
    // server runs (PostgreSQL may switch a prepared statement to a generic
    // plan after its fifth execution: what that plan reads must not grow
    // with the log).
    PS_ASSIGN_OR_RETURN(Cursor follow_from, CurrentCursor(follower_));
    follow_cursor_ = EncodeCursor(follow_from);
    return absl::OkStatus();
  }

  std::vector<v1::Revision> BatchOf(int b) const {
    std::vector<v1::Revision> revs(100);
    for (int i = 0; i < 100; ++i) {
      v1::Revision& r = revs[i];
      r.set_id(NewTimeOrderedUuid());
      r.set_object_type("task");
      // Edits: each existing task at most once per run (one revision per
      // object in a batch keeps it on the set-based path).
      const size_t pick = static_cast<size_t>(b) * 50 + i / 2;
      const bool edit = i % 2 == 1 && pick < existing_.size();
      r.set_object_id(edit ? existing_[pick].first : NewTimeOrderedUuid());
      if (edit) r.set_base_version(existing_[pick].second);
      r.set_origin_id(absl::StrCat("growth-", side_));
      r.set_seq(b * 100 + i + 1);
      r.set_op(v1::OPERATION_UPSERT);
      r.set_payload(edit ? absl::StrCat(R"({"title":"edited )", b, "-", i, R"("})")
                         : absl::StrCat(R"({"team_id":")", kTeam, R"(","title":"new )", b, "-",
                                        i, R"(","priority":1})"));
      const int64_t now = 1800000000000 + side_ * 1000000 + b * 1000 + i;
      r.set_created_at(now);
      r.mutable_clock()->set_physical_ms(now);
    }
    return revs;
  }

  const std::string url_;
  const int side_;
  PgSession session_;
  PgSession follower_;
  ApplyLimits limits_;
  std::vector<std::pair<std::string, int64_t>> existing_;
  std::string pull_from_, follow_cursor_;
  int batch_ = 0;
  // The medians: one batch that meets a checkpoint or an autovacuum must
  // not stand for all of them.
  std::vector<double> apply_ms_, follow_ms_, pull_ms_per_1000_;
};

int Main() {
  const int server_rows = absl::GetFlag(FLAGS_server_rows);
  const int batches = absl::GetFlag(FLAGS_batches);
  std::printf("growth_bench: the same work at 1x and 10x the data\n");
  bench::GrowthFigures growth;  // the server's; client_bench has the client's

  if (testing::AdminDatabaseUrl().empty()) {
    std::printf("  server: skipped (PULSESYNC_TEST_DATABASE_URL is not set)\n");
  } else {
    // Two databases, one at each size, measured in turns.
    const int sizes[2] = {server_rows / 10, server_rows};
    std::unique_ptr<testing::TestDatabase> dbs[2];
    std::unique_ptr<ServerSide> sides[2];
    for (int i = 0; i < 2; ++i) {
      absl::StatusOr<std::unique_ptr<testing::TestDatabase>> db = testing::TestDatabase::Create();
      if (!db.ok()) {
        std::fprintf(stderr, "%s\n", db.status().ToString().c_str());
        return 1;
      }
      dbs[i] = *std::move(db);
      const auto g0 = Clock::now();
      const absl::Status teams = dbs[i]->Execute(absl::StrCat(
          "INSERT INTO teams (id, name) SELECT ", TeamSql("g"),
          ", 'growth ' || g FROM generate_series(1, 100) g"));
      if (!teams.ok()) {
        std::fprintf(stderr, "teams: %s\n", teams.ToString().c_str());
        return 1;
      }
      if (!GrowServer(dbs[i]->url(), sizes[i])) return 1;
      std::printf("  (a database of %d tasks in %.1f s)\n", sizes[i], MsSince(g0) / 1000);
      std::fflush(stdout);
    }
    auto check = [](const absl::Status& status) {
      if (!status.ok()) std::fprintf(stderr, "server: %s\n", status.ToString().c_str());
      return status.ok();
    };
    for (int i = 0; i < 2; ++i) {
      absl::StatusOr<std::unique_ptr<ServerSide>> side =
          ServerSide::Create(dbs[i]->url(), batches, i + 1);
      if (!check(side.status())) return 1;
      sides[i] = *std::move(side);
    }
    for (int b = 0; b < batches; ++b) {
      for (auto& side : sides) {
        if (!check(side->ApplyNext())) return 1;
      }
    }
    for (int round = 0; round < 3; ++round) {
      for (auto& side : sides) {
        if (!check(side->Pull())) return 1;
      }
    }
    // A member of 2 teams, 5 runs at each size in turns; of 30, at the
    // larger size, once.
    std::vector<double> member_ms[2], member_rows_per_s, select_rows_per_s;
    for (int run = 0; run < 5; ++run) {
      for (int i = 0; i < 2; ++i) {
        absl::StatusOr<MemberRun> m = sides[i]->Member(99, 2);
        if (!check(m.status())) return 1;
        member_ms[i].push_back(m->snapshot_ms * 1000.0 / m->rows);
        if (i == 1) {
          member_rows_per_s.push_back(m->rows * 1000.0 / m->snapshot_ms);
          select_rows_per_s.push_back(m->rows * 1000.0 / m->select_ms);
        }
      }
    }
    absl::StatusOr<MemberRun> member30 = sides[1]->Member(71, 30);
    if (!check(member30.status())) return 1;

    const std::string server_small = Rows(sizes[0]) + " tasks";
    const std::string server_big = Rows(sizes[1]) + " tasks";
    growth.Add("server: apply a batch of 100 (half edits)", sides[0]->apply_ms(), server_small,
               sides[1]->apply_ms(), server_big);
    growth.Add("server: pull 1,000 changes", sides[0]->pull_ms_per_1000(), server_small,
               sides[1]->pull_ms_per_1000(), server_big);
    growth.Add("server: follow the log, a batch's 100 changes (median)", sides[0]->follow_ms(),
               server_small, sides[1]->follow_ms(), server_big);
    growth.Add("server: a member's snapshot (2 of 100 teams), per 1,000 rows",
               bench::Median(member_ms[0]), server_small, bench::Median(member_ms[1]),
               server_big);
    const std::pair<int, std::pair<double, double>> members[] = {
        {2, {bench::Median(member_rows_per_s), bench::Median(select_rows_per_s)}},
        {30,
         {member30->rows * 1000.0 / member30->snapshot_ms,
          member30->rows * 1000.0 / member30->select_ms}}};
    for (const auto& [teams, rates] : members) {
      std::printf("  %-52s %9.0f rows/s, one SELECT of them %.0f rows/s\n",
                  absl::StrCat("a member of ", teams, " teams' snapshot at ", server_big).c_str(),
                  rates.first, rates.second);
      bench::PrintFigure(absl::StrCat("server: a member's snapshot, ", teams, " of 100 teams, at ",
                                      server_big, " (vs one SELECT of the same rows)"),
                         rates.first, "rows/s", rates.second, "");
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

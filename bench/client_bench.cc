// client_bench: the client library's local writes and its push, beside raw
// SQLite on the same file system in the same run.
//
//   PULSESYNC_TEST_DATABASE_URL=postgresql://postgres@127.0.0.1:5432/postgres
//     build/bench/client_bench [--writes=2000] [--pending=10000]
//
// Figures (printed, never asserted):
//   local write   LocalStore::Create: the row and its revision in one
//                 BEGIN IMMEDIATE transaction (WAL), latency p50/p99
//   ceiling       raw SQLite: one INSERT of a similar row per transaction
//   batched       LocalStore::Apply: --batch creates (row + revision each)
//                 per transaction, writes/s; ceiling: raw SQLite, the same
//                 two INSERTs per write (a row and a revision-sized row),
//                 --batch writes per transaction
//   push          --pending revisions pushed by SyncEngine::Push to a real
//                 pulsesyncd over loopback (batches of 100)
//   growth        1,000 local writes, recording 1,000 push answers and
//                 applying 1,000 pulled changes, at --growth_rows / 10 and
//                 at --growth_rows rows (value: the larger; ceiling: the
//                 smaller; ratio 1 = the cost follows the changes only),
//                 each the median of --growth_rounds rounds
//   initial sync  --snapshot_rows tasks written server-side, the table
//                 vacuumed and pulsesyncd quiet again, then a new client's
//                 SyncEngine::Snapshot into its SQLite file; ceiling: the
//                 same rows read with one SELECT through libpqxx and
//                 inserted into SQLite in one transaction
#include <sqlite3.h>

#include <pqxx/pqxx>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/str_cat.h"
#include "bench/figures.h"
#include "bench/process.h"
#include "client/core/sync_engine.h"
#include "client/store/local_store.h"
#include "client/transport/grpc_transport.h"
#include "common/json.h"
#include "common/status_macros.h"
#include "common/uuid.h"
#include "tests/testing/subprocess.h"
#include "tests/testing/test_database.h"

ABSL_FLAG(int, writes, 2000, "local writes timed one by one");
ABSL_FLAG(int, pending, 10000, "pending revisions pushed at once");
ABSL_FLAG(int, batched_writes, 50000, "local writes made through LocalStore::Apply");
ABSL_FLAG(int, batch, 1000, "writes per LocalStore::Apply call");
ABSL_FLAG(int, growth_rows, 100000, "client rows at the larger size of the growth figures (0: skip)");
ABSL_FLAG(int, growth_rounds, 5, "rounds of each growth measurement (the median is printed)");
ABSL_FLAG(int, snapshot_rows, 100000, "tasks a new client snapshots (initial sync)");

namespace pulsesync {
namespace {

using Clock = std::chrono::steady_clock;
constexpr char kTeam[] = "10000000-0000-4000-8000-000000000001";

double MsSince(Clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
}

double Percentile(std::vector<double> v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v[std::min(v.size() - 1, static_cast<size_t>(p * v.size()))];
}

std::vector<double> RawSqlite(const std::string& path, int n) {
  sqlite3* db = nullptr;
  sqlite3_open(path.c_str(), &db);
  sqlite3_exec(db,
               "PRAGMA journal_mode=WAL; CREATE TABLE t (id TEXT PRIMARY KEY, team_id TEXT, "
               "title TEXT, priority INTEGER, payload TEXT)",
               nullptr, nullptr, nullptr);
  sqlite3_stmt* st = nullptr;
  sqlite3_prepare_v2(db, "INSERT INTO t VALUES (?, ?, 'task', 1, ?)", -1, &st, nullptr);
  std::vector<double> ms;
  for (int i = 0; i < n; ++i) {
    const std::string id = NewUuid();
    const auto t0 = Clock::now();
    sqlite3_exec(db, "BEGIN IMMEDIATE", nullptr, nullptr, nullptr);
    sqlite3_bind_text(st, 1, id.c_str(), -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(st, 2, id.c_str(), -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(st, 3, "{\"title\":\"task\"}", -1, SQLITE_STATIC);
    sqlite3_step(st);
    sqlite3_reset(st);
    sqlite3_exec(db, "COMMIT", nullptr, nullptr, nullptr);
    ms.push_back(std::chrono::duration<double, std::milli>(Clock::now() - t0).count());
  }
  sqlite3_finalize(st);
  sqlite3_close(db);
  return ms;
}

// Raw SQLite doing what a batched local write does: a row and a revision
// row per write, `batch` writes per transaction. Writes a second.
double RawSqliteBatched(const std::string& path, int n, int batch) {
  sqlite3* db = nullptr;
  sqlite3_open(path.c_str(), &db);
  sqlite3_exec(db,
               "PRAGMA journal_mode=WAL; PRAGMA cache_size=-16384;"  // as LocalStore
               "CREATE TABLE t (id TEXT PRIMARY KEY, team_id TEXT, title TEXT, priority INTEGER, "
               "created_at TEXT, updated_at TEXT, hlc TEXT);"
               "CREATE TABLE r (id TEXT PRIMARY KEY, object_id TEXT, seq INTEGER, payload TEXT,"
               " hlc_ms INTEGER);",
               nullptr, nullptr, nullptr);
  sqlite3_stmt* row = nullptr;
  sqlite3_stmt* rev = nullptr;
  sqlite3_prepare_v2(db, "INSERT INTO t VALUES (?, ?, 'task', 1, ?, ?, ?)", -1, &row, nullptr);
  sqlite3_prepare_v2(db, "INSERT INTO r VALUES (?, ?, ?, ?, ?)", -1, &rev, nullptr);
  const auto t0 = Clock::now();
  for (int i = 0; i < n; ++i) {
    if (i % batch == 0) sqlite3_exec(db, "BEGIN IMMEDIATE", nullptr, nullptr, nullptr);
    const std::string id = NewTimeOrderedUuid();  // as LocalStore makes them
    const std::string rid = NewTimeOrderedUuid();
    sqlite3_bind_text(row, 1, id.c_str(), -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(row, 2, id.c_str(), -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(row, 3, "2026-12-06T00:00:00+00:00", -1, SQLITE_STATIC);
    sqlite3_bind_text(row, 4, "2026-12-06T00:00:00+00:00", -1, SQLITE_STATIC);
    sqlite3_bind_text(row, 5, "0001700000000000-0000-origin", -1, SQLITE_STATIC);
    sqlite3_step(row);
    sqlite3_reset(row);
    sqlite3_bind_text(rev, 1, rid.c_str(), -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(rev, 2, id.c_str(), -1, SQLITE_TRANSIENT);
    sqlite3_bind_int64(rev, 3, i + 1);
    sqlite3_bind_text(rev, 4, "{\"title\":\"task\",\"priority\":1,\"team_id\":\"x\"}", -1,
                      SQLITE_STATIC);
    sqlite3_bind_int64(rev, 5, 1700000000000 + i);
    sqlite3_step(rev);
    sqlite3_reset(rev);
    if ((i + 1) % batch == 0 || i + 1 == n) sqlite3_exec(db, "COMMIT", nullptr, nullptr, nullptr);
  }
  const double secs = std::chrono::duration<double>(Clock::now() - t0).count();
  sqlite3_finalize(row);
  sqlite3_finalize(rev);
  sqlite3_close(db);
  return n / secs;
}

struct ClientCost {
  double write_ms = 0;   // 1,000 local writes, Apply in batches of 100
  double answer_ms = 0;  // PendingRevisions + RecordPushResults of those 1,000
  double pull_ms = 0;    // ApplyRemoteChanges of 1,000 changes of existing rows
};

absl::StatusOr<ClientCost> MeasureClient(const std::string& path, int rows) {
  PS_ASSIGN_OR_RETURN(std::unique_ptr<LocalStore> store, LocalStore::Open(path));
  JsonValue fields = JsonValue::Object();
  fields.Set("team_id", JsonValue::String(kTeam));
  fields.Set("title", JsonValue::String("task"));
  fields.Set("priority", JsonValue::Number(1));
  std::vector<std::string> ids;
  std::vector<LocalWrite> writes;
  // The data: `rows` tasks, their revisions answered as a push would.
  for (int done = 0; done < rows; done += 1000) {
    writes.assign(std::min(1000, rows - done), LocalWrite::Create("task", fields));
    PS_ASSIGN_OR_RETURN(std::vector<std::string> made, store->Apply(writes));
    ids.insert(ids.end(), made.begin(), made.end());
    PS_ASSIGN_OR_RETURN(std::vector<PendingRevision> pending, store->PendingRevisions(1000));
    std::vector<PushOutcome> outcomes(pending.size());
    for (size_t i = 0; i < pending.size(); ++i) {
      outcomes[i].revision_id = pending[i].id;
      outcomes[i].server_version = done + static_cast<int64_t>(i) + 1;
      outcomes[i].resolution = "applied";
    }
    PS_RETURN_IF_ERROR(store->RecordPushResults(outcomes));
  }
  // The setup's pages go back from the WAL to the file now, not during the
  // measured writes (an automatic checkpoint would charge them to those).
  {
    sqlite3* raw = nullptr;
    sqlite3_open(path.c_str(), &raw);
    sqlite3_exec(raw, "PRAGMA wal_checkpoint(TRUNCATE)", nullptr, nullptr, nullptr);
    sqlite3_close(raw);
  }
  // Each part --growth_rounds times on the same data; the median of each
  // (one run was at the mercy of a single slow fsync or a neighbour's burst).
  std::vector<double> write_ms, answer_ms, pull_ms;
  std::mt19937 rng(rows);
  for (int round = 0; round < std::max(1, absl::GetFlag(FLAGS_growth_rounds)); ++round) {
    const auto w0 = Clock::now();
    for (int b = 0; b < 10; ++b) {
      writes.clear();
      for (int i = 0; i < 100; ++i) {
        JsonValue edit = JsonValue::Object();
        edit.Set("title", JsonValue::String(absl::StrCat("edit ", round, "-", b, "-", i)));
        writes.push_back(LocalWrite::Update("task", ids[rng() % ids.size()], edit));
      }
      PS_RETURN_IF_ERROR(store->Apply(writes).status());
    }
    write_ms.push_back(MsSince(w0));

    const auto a0 = Clock::now();
    PS_ASSIGN_OR_RETURN(std::vector<PendingRevision> pending, store->PendingRevisions(1000));
    std::vector<PushOutcome> outcomes(pending.size());
    for (size_t i = 0; i < pending.size(); ++i) {
      outcomes[i].revision_id = pending[i].id;
      outcomes[i].server_version = 10000000 + round * 1000 + static_cast<int64_t>(i);
      outcomes[i].resolution = "applied";
    }
    PS_RETURN_IF_ERROR(store->RecordPushResults(outcomes));
    answer_ms.push_back(MsSince(a0));

    // Another device's edits of random tasks, as the server sends them: the
    // whole row, its created_at the one the task has. Read untimed, on a
    // connection of its own: through the store, the read would have put
    // the very pages the pull then writes in the store's page cache.
    std::vector<RemoteChange> changes(1000);
    sqlite3* raw = nullptr;
    sqlite3_stmt* created = nullptr;
    sqlite3_open(path.c_str(), &raw);
    sqlite3_prepare_v2(raw, "SELECT created_at FROM tasks WHERE id = ?", -1, &created, nullptr);
    for (int i = 0; i < 1000; ++i) {
      RemoteChange& c = changes[i];
      c.object_type = "task";
      c.event = ChangeEvent::kUpdate;
      c.object_id = ids[rng() % ids.size()];
      c.version = 20000000 + round * 1000 + i;
      sqlite3_bind_text(created, 1, c.object_id.c_str(), -1, SQLITE_TRANSIENT);
      std::string created_at = "2026-01-01T00:00:00+00:00";
      if (sqlite3_step(created) == SQLITE_ROW && sqlite3_column_text(created, 0) != nullptr) {
        created_at = reinterpret_cast<const char*>(sqlite3_column_text(created, 0));
      }
      sqlite3_reset(created);
      c.new_record = absl::StrCat(
          R"({"id":")", c.object_id, R"(","team_id":")", kTeam, R"(","title":"remote )", i,
          R"(","priority":2,"created_at":")", created_at, R"(","version":)", c.version,
          R"(,"updated_at":"2026-01-02T00:00:00+00:00","deleted":false,"recovered":false,)",
          R"("last_origin_id":"another-device","last_revision_id":null,)",
          R"("hlc":"001800000000000-0000000000-another-device"})");
      c.origin_id = "another-device";
      c.revision_id = NewTimeOrderedUuid();
    }
    sqlite3_finalize(created);
    sqlite3_close(raw);
    const auto p0 = Clock::now();
    PS_RETURN_IF_ERROR(store->ApplyRemoteChanges(changes, "").status());
    pull_ms.push_back(MsSince(p0));
  }
  ClientCost cost;
  cost.write_ms = bench::Median(write_ms);
  cost.answer_ms = bench::Median(answer_ms);
  cost.pull_ms = bench::Median(pull_ms);
  return cost;
}

// Client cost at 1x and 10x the rows (issue 7's growth figures).
int Growth(const std::string& dir) {
  const int client_rows = absl::GetFlag(FLAGS_growth_rows);
  if (client_rows <= 0) return 0;
  const std::string client_small = absl::StrCat(client_rows / 10000, "k rows");
  const std::string client_big = absl::StrCat(client_rows / 1000, "k rows");
  absl::StatusOr<ClientCost> c1 = MeasureClient(dir + "/growth_small.db", client_rows / 10);
  absl::StatusOr<ClientCost> c10 = MeasureClient(dir + "/growth_big.db", client_rows);
  if (!c1.ok() || !c10.ok()) {
    std::fprintf(stderr, "client growth: %s\n",
                 (c1.ok() ? c10.status() : c1.status()).ToString().c_str());
    return 1;
  }
  bench::GrowthFigures growth;
  growth.Add("client: 1,000 local writes (Apply, batches of 100)", c1->write_ms, client_small,
             c10->write_ms, client_big);
  growth.Add("client: recording 1,000 push answers", c1->answer_ms, client_small, c10->answer_ms,
             client_big);
  growth.Add("client: applying 1,000 pulled changes", c1->pull_ms, client_small, c10->pull_ms,
             client_big);
  growth.Worst("growth: worst client cost ratio, 10x the rows (1 = no growth)");
  return 0;
}

int Main() {
  const int writes = absl::GetFlag(FLAGS_writes);
  const int pending = absl::GetFlag(FLAGS_pending);
  const std::string dir = testing::MakeTempDir("client_bench");
  const std::string team = NewUuid();
  JsonValue fields = JsonValue::Object();
  fields.Set("team_id", JsonValue::String(team));
  fields.Set("title", JsonValue::String("task"));
  fields.Set("priority", JsonValue::Number(1));

  const std::vector<double> raw = RawSqlite(dir + "/raw.db", writes);
  std::vector<double> local;
  {
    absl::StatusOr<std::unique_ptr<LocalStore>> store = LocalStore::Open(dir + "/local.db");
    if (!store.ok()) return 1;
    for (int i = 0; i < writes; ++i) {
      const auto t0 = Clock::now();
      if (!(*store)->Create("task", fields).ok()) return 1;
      local.push_back(std::chrono::duration<double, std::milli>(Clock::now() - t0).count());
    }
  }
  double total_local = 0;
  for (double v : local) total_local += v;
  std::printf("client_bench: %d writes, WAL on %s\n", writes, dir.c_str());
  std::printf("  %-46s p50 %.3f ms  p99 %.3f ms\n", "ceiling: raw SQLite, 1 INSERT per transaction",
              Percentile(raw, 0.5), Percentile(raw, 0.99));
  std::printf("  %-46s p50 %.3f ms  p99 %.3f ms  (%.0f writes/s)  goal: p99 < 2 ms\n",
              "local write: row + revision, 1 transaction", Percentile(local, 0.5),
              Percentile(local, 0.99), 1000.0 * writes / total_local);
  bench::PrintFigure("client local write p99 (vs raw SQLite INSERT)", Percentile(local, 0.99),
                     "ms", Percentile(raw, 0.99), "<=2");

  // Batched local writes.
  {
    const int n = absl::GetFlag(FLAGS_batched_writes);
    const int batch = std::max(1, absl::GetFlag(FLAGS_batch));
    absl::StatusOr<std::unique_ptr<LocalStore>> store = LocalStore::Open(dir + "/batched.db");
    if (!store.ok()) return 1;
    std::vector<LocalWrite> writes;
    const auto t0 = Clock::now();
    for (int done = 0; done < n; done += batch) {
      writes.clear();
      for (int i = done; i < std::min(n, done + batch); ++i) {
        writes.push_back(LocalWrite::Create("task", fields));
      }
      if (!(*store)->Apply(writes).ok()) return 1;
    }
    const double rate = n / std::chrono::duration<double>(Clock::now() - t0).count();
    const double raw_rate = RawSqliteBatched(dir + "/raw_batched.db", n, batch);
    std::printf("  %-46s %.0f writes/s\n",
                absl::StrCat("ceiling: raw SQLite, 2 INSERTs x ", batch, " per transaction").c_str(),
                raw_rate);
    std::printf("  %-46s %.0f writes/s  goal: >= 100,000\n",
                absl::StrCat("batched local writes, ", batch, " per Apply").c_str(), rate);
    bench::PrintFigure(absl::StrCat("client batched local writes, ", batch,
                                    " per transaction (vs raw SQLite, same INSERTs)"),
                       rate, "writes/s", raw_rate, ">=100000");
  }

  if (Growth(dir) != 0) return 1;

  if (std::getenv("PULSESYNC_TEST_DATABASE_URL") == nullptr) {
    std::printf("  push: skipped (PULSESYNC_TEST_DATABASE_URL is not set)\n");
    return 0;
  }
  absl::StatusOr<std::unique_ptr<testing::TestDatabase>> db = testing::TestDatabase::Create();
  if (!db.ok()) return 1;
  if (!(*db)->Execute(absl::StrCat("INSERT INTO teams (id, name) VALUES ('", team, "', 'T')")).ok()) {
    return 1;
  }
  testing::ServerProcess server((*db)->url(), dir + "/pulsesyncd.log");
  if (!server.Start().ok()) return 1;
  absl::StatusOr<std::unique_ptr<LocalStore>> store = LocalStore::Open(dir + "/push.db");
  if (!store.ok()) return 1;
  for (int i = 0; i < pending; ++i) {
    if (!(*store)->Create("task", fields).ok()) return 1;
  }
  std::unique_ptr<GrpcTransport> transport = GrpcTransport::Create(server.address());
  SyncEngine engine(store->get(), transport.get());
  const auto t0 = Clock::now();
  absl::StatusOr<PushSummary> pushed = engine.Push();
  const double secs = std::chrono::duration<double>(Clock::now() - t0).count();
  if (!pushed.ok() || pushed->applied != pending) {
    std::fprintf(stderr, "push failed\n");
    return 1;
  }
  std::printf("  %-46s %.2f s (%.0f revisions/s)  goal: < 1 s for 10,000\n",
              absl::StrCat("push of ", pending, " pending revisions").c_str(), secs,
              pending / secs);
  bench::PrintFigure(absl::StrCat("client push of ", pending, " pending revisions"), secs, "s", 0,
                     pending == 10000 ? "<=1" : "");

  // Initial sync.
  const int snapshot_rows = absl::GetFlag(FLAGS_snapshot_rows);
  if (!(*db)->Execute(absl::StrCat(
                         "INSERT INTO tasks (id, team_id, title, description, priority) "
                         "SELECT gen_random_uuid(), '", team, "', 'task ' || g, 'benchmark row', "
                         "g % 5 FROM generate_series(1, ", snapshot_rows, ") g"))
           .ok()) {
    return 1;
  }
  // What a new client meets is a server at rest, not one still digesting a
  // bulk insert: the table vacuumed (its rows' hint bits set, which the
  // first reader would otherwise write), and pulsesyncd's feed hub and stats
  // done reading the 100,000 changes just written (its CPU quiet). The
  // ceiling below reads the same rows in the same state.
  try {
    pqxx::connection conn((*db)->url());
    pqxx::nontransaction outside(conn);  // VACUUM runs outside a transaction
    outside.exec("VACUUM (ANALYZE) tasks");
  } catch (const std::exception& e) {
    std::fprintf(stderr, "vacuum failed: %s\n", e.what());
    return 1;
  }
  const double waited = bench::WaitUntilQuiet(server.pid());
  std::printf("  %-46s %s\n", "initial sync: server at rest after",
              waited < 0 ? "60 s (still busy; measured anyway)"
                         : absl::StrCat(absl::SixDigits(waited), " s").c_str());
  absl::StatusOr<std::unique_ptr<LocalStore>> fresh = LocalStore::Open(dir + "/snapshot.db");
  if (!fresh.ok()) return 1;
  SyncEngine snapshot_engine(fresh->get(), transport.get());
  const auto s0 = Clock::now();
  absl::StatusOr<SnapshotSummary> snap = snapshot_engine.Snapshot(SnapshotRequestOptions());
  const double snap_secs = std::chrono::duration<double>(Clock::now() - s0).count();
  if (!snap.ok()) {
    std::fprintf(stderr, "snapshot failed: %s\n", snap.status().ToString().c_str());
    return 1;
  }
  const double snapshot_rate = snap->rows.applied / snap_secs;
  // The ceiling: the same rows, one SELECT, one SQLite transaction.
  double raw_rate = 0;
  {
    const auto r0 = Clock::now();
    pqxx::connection conn((*db)->url());
    pqxx::work tx(conn);
    const pqxx::result rows = tx.exec(
        "SELECT t.id::text, (to_jsonb(t) - ARRAY['live_hlc', 'deleted_hlc', 'field_clocks'])::text "
        "FROM tasks t WHERE NOT t.deleted");
    sqlite3* out = nullptr;
    sqlite3_open((dir + "/raw_snapshot.db").c_str(), &out);
    sqlite3_exec(out,
                 "PRAGMA journal_mode=WAL; CREATE TABLE t (id TEXT PRIMARY KEY, record TEXT); "
                 "BEGIN IMMEDIATE",
                 nullptr, nullptr, nullptr);
    sqlite3_stmt* ins = nullptr;
    sqlite3_prepare_v2(out, "INSERT INTO t VALUES (?, ?)", -1, &ins, nullptr);
    for (const pqxx::row& row : rows) {
      sqlite3_bind_text(ins, 1, row[0].c_str(), -1, SQLITE_TRANSIENT);
      sqlite3_bind_text(ins, 2, row[1].c_str(), -1, SQLITE_TRANSIENT);
      sqlite3_step(ins);
      sqlite3_reset(ins);
    }
    sqlite3_finalize(ins);
    sqlite3_exec(out, "COMMIT", nullptr, nullptr, nullptr);
    sqlite3_close(out);
    raw_rate = rows.size() / std::chrono::duration<double>(Clock::now() - r0).count();
  }
  std::printf("  %-46s %lld rows in %.2f s (%.0f rows/s)  ceiling %.0f rows/s  goal: >= 150,000/s\n",
              "initial sync: Snapshot into a new client", static_cast<long long>(snap->rows.applied),
              snap_secs, snapshot_rate, raw_rate);
  bench::PrintFigure(absl::StrCat("initial sync of ", snap->rows.applied,
                                  " rows (vs SELECT + SQLite INSERT)"),
                     snapshot_rate, "rows/s", raw_rate, ">=150000");
  return 0;
}

}  // namespace
}  // namespace pulsesync

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  return pulsesync::Main();
}

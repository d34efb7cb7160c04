// apply_bench: revisions applied per second, beside the ceiling measured in
// the same run on the same PostgreSQL.
//
//   PULSESYNC_TEST_DATABASE_URL=postgresql://postgres@127.0.0.1:5432/postgres
//     build/bench/apply_bench [--writers=4] [--batches=50] [--batch=100]
//
// Object and revision ids are time-ordered (UUID v7), as the client library
// makes them (NewTimeOrderedUuid).
//
// Figures (rows/s, printed, never asserted):
//   ceiling   one set-based INSERT ... SELECT FROM jsonb_populate_recordset per
//             batch into a copy of `tasks` with no triggers (raw PostgreSQL)
//   capture   the same into `tasks` itself: the cost of the change-capture
//             triggers alone
//   apply     ApplyRevisionBatch (validation, apply_revisions, merge,
//             triggers): what pulsesyncd does per ApplyRevisions call, minus gRPC
//   sealer    the audit sealer (audit_chain.h) sealing every entry the runs
//             above wrote, one connection: whether it keeps up with apply
//   audit     (--audit) apply again, each on a fresh database: without the
//             audit's write-path additions of migration 0009 (the change
//             log's object index, the db_role default), as migrated, and as
//             migrated with the background sealer (audit_sealer.h) sealing
//             every 50 ms meanwhile
#include <atomic>
#include <chrono>
#include <memory>
#include <cstdio>
#include <pqxx/pqxx>
#include <string>
#include <thread>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/str_cat.h"
#include "bench/figures.h"
#include "common/uuid.h"
#include "server/core/audit_chain.h"
#include "server/core/audit_sealer.h"
#include "server/core/migrator.h"
#include "server/core/revision_applier.h"
#include "server/service/server.h"
#include "server/storage/pg_session.h"
#include "tests/testing/test_database.h"

ABSL_FLAG(int, writers, 4, "concurrent writer threads");
ABSL_FLAG(int, batches, 50, "batches per writer");
ABSL_FLAG(int, batch, 100, "revisions per batch");
ABSL_FLAG(bool, audit, false, "also measure the audit trail's cost on apply");

namespace pulsesync {
namespace {

constexpr char kTeam[] = "10000000-0000-4000-8000-000000000001";

std::string TaskPayload(int i) {
  return absl::StrCat(R"({"team_id":")", kTeam, R"(","title":"Task )", i,
                      R"(","description":"benchmark row","priority":)", i % 5, "}");
}

template <typename Fn>
double RowsPerSecond(int writers, int rows_per_writer, Fn fn) {
  const auto start = std::chrono::steady_clock::now();
  std::vector<std::thread> threads;
  for (int w = 0; w < writers; ++w) threads.emplace_back([&, w] { fn(w); });
  for (auto& t : threads) t.join();
  const double secs =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return writers * static_cast<double>(rows_per_writer) / secs;
}

int Main() {
  const int writers = absl::GetFlag(FLAGS_writers);
  const int batches = absl::GetFlag(FLAGS_batches);
  const int batch = absl::GetFlag(FLAGS_batch);
  if (testing::AdminDatabaseUrl().empty()) {
    std::fprintf(stderr, "set PULSESYNC_TEST_DATABASE_URL to a PostgreSQL superuser URL\n");
    return 2;
  }
  auto db = testing::TestDatabase::Create();
  if (!db.ok()) {
    std::fprintf(stderr, "%s\n", db.status().ToString().c_str());
    return 1;
  }
  const std::string url = (*db)->url();
  (void)(*db)->Execute(absl::StrCat(
      "INSERT INTO teams (id, name) VALUES ('", kTeam, "', 'bench');"
      "CREATE TABLE raw_tasks (LIKE tasks INCLUDING DEFAULTS INCLUDING CONSTRAINTS);"
      "ALTER TABLE raw_tasks ADD PRIMARY KEY (id);"));
  const int rows = batches * batch;

  auto set_based = [&](const std::string& table) {
    return [&, table](int) {
      pqxx::connection conn(url);
      for (int b = 0; b < batches; ++b) {
        std::string json = "[";
        for (int i = 0; i < batch; ++i) {
          if (i > 0) json += ",";
          json += TaskPayload(i);
          json.insert(json.size() - 1, absl::StrCat(R"(,"id":")", NewTimeOrderedUuid(), "\""));
        }
        json += "]";
        pqxx::work tx(conn);
        tx.exec_params(absl::StrCat(
                           "INSERT INTO ", table,
                           " (id, team_id, title, description, priority) "
                           "SELECT id, team_id, title, description, priority "
                           "FROM jsonb_populate_recordset(NULL::", table, ", $1::jsonb)"),
                       json);
        tx.commit();
      }
    };
  };
  const double ceiling = RowsPerSecond(writers, rows, set_based("raw_tasks"));
  const double capture = RowsPerSecond(writers, rows, set_based("tasks"));

  ApplyLimits limits;
  limits.max_batch_revisions = static_cast<uint32_t>(batch);
  std::atomic<int> failures{0};
  // Each writer's session is connected and has run one batch before the
  // clock starts: PostgreSQL compiles and plans the merge's PL/pgSQL once per
  // connection (about half a second here), which pulsesyncd's long-lived pool
  // pays once, not per batch.
  auto apply_into = [&](const std::string& url) {
   std::vector<std::unique_ptr<PgSession>> sessions;
   for (int w = 0; w < writers; ++w) {
    PgSessionOptions options;
    options.database_url = url;
    options.statements = RevisionApplierStatements();
    sessions.push_back(std::make_unique<PgSession>(options));
   }
   auto run = [&](int w, int first_batch, int end_batch) {
    PgSession& session = *sessions[w];
    for (int b = first_batch; b < end_batch; ++b) {
      std::vector<v1::Revision> revs(batch);
      for (int i = 0; i < batch; ++i) {
        v1::Revision& r = revs[i];
        r.set_id(NewTimeOrderedUuid());
        r.set_object_type("task");
        r.set_object_id(NewTimeOrderedUuid());
        r.set_origin_id(absl::StrCat("bench-", w));
        r.set_seq(b * batch + i + 1);  // an origin numbers from 1
        r.set_op(v1::OPERATION_UPSERT);
        r.set_payload(TaskPayload(i));
        r.set_created_at(1700000000000);
        r.mutable_clock()->set_physical_ms(1700000000000);
      }
      auto results = ApplyRevisionBatch(session, revs, limits);
      if (!results.ok()) {
        failures++;
        continue;
      }
      for (const v1::RevisionResult& r : *results) {
        if (r.outcome() != v1::RevisionResult::OUTCOME_APPLIED) {
          if (failures++ == 0) std::fprintf(stderr, "not applied: %s\n", r.reason().c_str());
        }
      }
    }
   };
   RowsPerSecond(writers, batch, [&](int w) { run(w, 0, 1); });  // warm-up, not counted
   return RowsPerSecond(writers, rows, [&](int w) { run(w, 1, batches + 1); });
  };
  const double apply = apply_into(url);

  std::printf("apply_bench: %d writers x %d batches x %d rows, PostgreSQL on loopback\n", writers,
              batches, batch);
  std::printf("  %-44s %10.0f rows/s\n", "ceiling: set-based insert, no capture", ceiling);
  std::printf("  %-44s %10.0f rows/s  (%.0f%% of ceiling)\n", "set-based insert + capture triggers",
              capture, 100 * capture / ceiling);
  std::printf("  %-44s %10.0f rows/s  (%.0f%% of ceiling)%s\n", "pulsesync apply (merge + capture)",
              apply, 100 * apply / ceiling, failures ? "  SOME BATCHES FAILED" : "");
  bench::PrintFigure(absl::StrCat("apply: ", writers, " writers, batches of ", batch,
                                  " (vs set-based INSERT, no triggers)"),
                     apply, "rows/s", ceiling, ">=60000");
  bench::PrintFigure("set-based INSERT with the capture triggers (vs no triggers)", capture,
                     "rows/s", ceiling, "");
  // The audit sealer hashes every entry a write made, behind the writers, on
  // one connection: its rate beside apply's says whether it keeps up. Here
  // it seals what the runs above wrote (capture and apply), all at once.
  {
    PgSessionOptions options;
    options.database_url = url;
    PgSession sealer(options);
    const auto start = std::chrono::steady_clock::now();
    const absl::StatusOr<int64_t> all = SealAllAuditEntries(sealer);
    if (!all.ok()) {
      std::fprintf(stderr, "sealing: %s\n", all.status().ToString().c_str());
      return 1;
    }
    const int64_t sealed = *all;
    const double secs =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    const double rate = secs > 0 ? sealed / secs : 0;
    std::printf("  %-44s %10.0f entries/s  (%lld entries; %.1fx apply's rate)\n",
                "audit sealer, one connection", rate, static_cast<long long>(sealed),
                apply > 0 ? rate / apply : 0.0);
    bench::PrintFigure("audit sealer: entries sealed, one connection", rate, "entries/s", 0, "");
  }
  if (absl::GetFlag(FLAGS_audit)) {
    auto fresh = [&](const char* setup) -> std::unique_ptr<testing::TestDatabase> {
      auto d = testing::TestDatabase::Create();
      if (!d.ok()) return nullptr;
      (void)(*d)->Execute(absl::StrCat("INSERT INTO teams (id, name) VALUES ('", kTeam,
                                       "', 'bench');", setup));
      return *std::move(d);
    };
    auto lean = fresh(
        "DROP INDEX pulsesync.change_log_object_idx;"
        "ALTER TABLE pulsesync.change_log ALTER COLUMN db_role DROP DEFAULT;");
    auto plain = fresh("");
    auto sealed = fresh("");
    if (lean == nullptr || plain == nullptr || sealed == nullptr) return 1;
    const double without = apply_into(lean->url());
    const double with_trail = apply_into(plain->url());
    PgSessionOptions sealer_session;
    sealer_session.database_url = sealed->url();
    AuditSealerOptions sealer_options;
    sealer_options.interval = absl::Milliseconds(50);
    AuditSealer sealer(sealer_session, sealer_options);
    sealer.Start();
    const double with_sealer = apply_into(sealed->url());
    const auto start = std::chrono::steady_clock::now();
    PgSession catch_up(sealer_session);
    (void)SealAllAuditEntries(catch_up);  // what the sealer has left when the writers stop
    const double lag =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    sealer.Stop();
    std::printf("  %-44s %10.0f rows/s\n", "apply, no audit write-path additions", without);
    std::printf("  %-44s %10.0f rows/s  (%.0f%%)\n", "apply, audit trail (0009)", with_trail,
                100 * with_trail / without);
    std::printf("  %-44s %10.0f rows/s  (%.0f%%); sealed %lld in the run, rest in %.2f s\n",
                "apply, audit trail + sealer running", with_sealer, 100 * with_sealer / without,
                static_cast<long long>(sealer.sealed()), lag);
  }
  return failures ? 1 : 0;
}

}  // namespace
}  // namespace pulsesync

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  return pulsesync::Main();
}

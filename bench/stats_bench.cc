// stats_bench: GetStats's in-memory task counters against the SQL aggregate
// a server would otherwise run per request, on the same PostgreSQL.
//
//   PULSESYNC_TEST_DATABASE_URL=postgresql://postgres@127.0.0.1:5432/postgres
//     build/bench/stats_bench [--tasks=1000000] [--projects=1000] [--queries=2000]
//
// Loads --tasks tasks over --projects projects (bulk, capture triggers off),
// then prints, per request for one project's counts by status and assignee:
//   sql      the GROUP BY over that project's tasks (tasks_project_idx)
//   counters TaskStats::CatchUp (an empty read of the change log) + Get
// and the one-time cost of TaskStats::Load over all tasks.
#include <chrono>
#include <cstdio>
#include <memory>
#include <pqxx/pqxx>
#include <random>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/str_cat.h"
#include "bench/figures.h"
#include "server/core/change_feed.h"
#include "server/core/task_stats.h"
#include "server/storage/pg_session.h"
#include "tests/testing/test_database.h"

ABSL_FLAG(int, tasks, 1000000, "tasks to load");
ABSL_FLAG(int, projects, 1000, "projects they belong to");
ABSL_FLAG(int, queries, 2000, "requests measured per method");

namespace pulsesync {
namespace {

double Seconds(std::chrono::steady_clock::time_point since) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - since).count();
}

int Main() {
  const int tasks = absl::GetFlag(FLAGS_tasks);
  const int projects = absl::GetFlag(FLAGS_projects);
  const int queries = absl::GetFlag(FLAGS_queries);
  absl::StatusOr<std::unique_ptr<testing::TestDatabase>> db = testing::TestDatabase::Create();
  if (!db.ok()) {
    std::fprintf(stderr, "stats_bench: %s\n", std::string(db.status().message()).c_str());
    return 1;
  }
  const std::string url = (*db)->url();
  {
    pqxx::connection c(url);
    pqxx::work w(c);
    auto t0 = std::chrono::steady_clock::now();
    w.exec("ALTER TABLE public.tasks DISABLE TRIGGER USER");
    w.exec("INSERT INTO teams (id, name) VALUES ('10000000-0000-4000-8000-000000000001', 'T')");
    w.exec_params(
        "INSERT INTO projects (id, team_id, name) SELECT "
        "('20000000-0000-4000-8000-' || lpad(to_hex(g), 12, '0'))::uuid, "
        "'10000000-0000-4000-8000-000000000001', 'p' || g FROM generate_series(1, $1) g",
        projects);
    w.exec("INSERT INTO users (id) SELECT ('30000000-0000-4000-8000-' || lpad(to_hex(g), 12, "
           "'0'))::uuid FROM generate_series(0, 49) g");
    w.exec_params(
        "INSERT INTO tasks (id, team_id, project_id, title, status, assignee_id, deleted) "
        "SELECT gen_random_uuid(), '10000000-0000-4000-8000-000000000001', "
        "('20000000-0000-4000-8000-' || lpad(to_hex(1 + g % $2), 12, '0'))::uuid, 't' || g, "
        "(ARRAY['todo','doing','done'])[1 + g % 3], "
        "CASE WHEN g % 4 = 0 THEN NULL ELSE ('30000000-0000-4000-8000-' || "
        "lpad(to_hex(g % 50), 12, '0'))::uuid END, g % 20 = 0 "
        "FROM generate_series(1, $1) g",
        tasks, projects);
    w.exec("ALTER TABLE public.tasks ENABLE TRIGGER USER");
    w.commit();
    pqxx::nontransaction(c).exec("VACUUM ANALYZE public.tasks");
    std::printf("stats_bench: loaded %d tasks over %d projects in %.1f s\n", tasks, projects,
                Seconds(t0));
  }

  std::mt19937 rng(1);
  auto project = [&] {
    char buf[64];
    std::snprintf(buf, sizeof buf, "20000000-0000-4000-8000-%012x",
                  static_cast<unsigned>(1 + rng() % projects));
    return std::string(buf);
  };

  // SQL, per request.
  double sql_s = 0;
  {
    pqxx::connection c(url);
    c.prepare("stats",
              "SELECT status, coalesce(assignee_id::text, ''), count(*) FROM public.tasks "
              "WHERE project_id = $1 AND NOT deleted GROUP BY 1, 2");
    auto t0 = std::chrono::steady_clock::now();
    for (int i = 0; i < queries; ++i) {
      pqxx::work w(c);
      w.exec_prepared("stats", project());
      w.commit();
    }
    sql_s = Seconds(t0);
  }

  // The counters.
  PgSessionOptions options;
  options.database_url = url;
  options.statements = ChangeFeedStatements();
  PgSession session(options);
  TaskStats stats;
  auto t_load = std::chrono::steady_clock::now();
  if (absl::Status st = stats.Load(session); !st.ok()) {
    std::fprintf(stderr, "load: %s\n", std::string(st.message()).c_str());
    return 1;
  }
  const double load_s = Seconds(t_load);
  int64_t found = 0;
  auto t0 = std::chrono::steady_clock::now();
  for (int i = 0; i < queries; ++i) {
    if (!stats.CatchUp(session).ok()) return 1;
    if (stats.Get(project()).has_value()) ++found;
  }
  const double counters_s = Seconds(t0);
  auto t1 = std::chrono::steady_clock::now();
  for (int i = 0; i < queries; ++i) found += stats.Get(project()).has_value();
  const double get_s = Seconds(t1);

  std::printf("  %-52s %10.3f ms/request\n", "sql: GROUP BY one project's tasks (indexed)",
              1000 * sql_s / queries);
  std::printf("  %-52s %10.3f ms/request  (%.0fx faster)\n",
              "counters: catch up (empty log read) + Get", 1000 * counters_s / queries,
              sql_s / counters_s);
  std::printf("  %-52s %10.4f ms/request\n", "counters: Get alone (in memory)",
              1000 * get_s / queries);
  std::printf("  %-52s %10.1f s (once, at start)\n", "TaskStats::Load over all tasks", load_s);
  bench::PrintFigure(absl::StrCat("GetStats counters, ", tasks, " tasks (vs indexed SQL GROUP BY)"),
                     1000 * counters_s / queries, "ms", 1000 * sql_s / queries, "");
  return found > 0 ? 0 : 1;
}

}  // namespace
}  // namespace pulsesync

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  return pulsesync::Main();
}

// pulsesync_soak: many simulated clients against one or two replicas, with
// faults on a schedule, then a full agreement check (docs/RELIABILITY.md).
//
// Each client is a real client (its own SQLite file, SyncEngine, gRPC
// channel with its own TCP connection) and a user of one of --teams teams.
// A share of them (--streaming) follow the live feed with a Subscriber,
// which also pushes their writes; the others push and pull explicitly.
// --workers threads act for random clients until --duration passes: local
// writes (creates and updates of the team's tasks, then a push), local
// reads, and pulls. Each replica sits behind a TcpProxy, and a fault thread
// injects, every --fault_interval in turn: a replica SIGKILLed and
// restarted, a replica restarted with SIGTERM, a proxy cut for a second,
// every connection of a proxy reset, a proxy's latency raised for two
// seconds.
//
// Then the faults stop, every client pushes and pulls until nothing is
// pending (bounded), and the check runs:
//   1. every client's tasks equal PostgreSQL's for its team, field by field
//      (version included);
//   2. every replica's view (PullChanges from the start, as a member of
//      each team) ends at PostgreSQL's rows;
//   3. every revision a client holds as acknowledged is in
//      pulsesync.applied_revisions, none reached the change log twice, and
//      PostgreSQL applied no revision that no client holds as acknowledged.
// It prints throughput, latency percentiles (push, pull, local read), the
// faults injected, and PASS or FAIL (exit status 0 or 1; 77 when no
// PostgreSQL is configured outside CI).
//
// Every loop is bounded by a count or a deadline. Loopback only.
//   pulsesync_soak --clients=200 --replicas=2 --duration=60s
// The database: a throwaway one (dropped at the end) on the cluster named
// by --database_url or PULSESYNC_TEST_DATABASE_URL (a superuser URL).
#include <signal.h>
#include <sys/resource.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "client/transport/grpc_transport.h"
#include "common/json.h"
#include "common/log.h"
#include "common/uuid.h"
#include "tests/testing/subprocess.h"
#include "tests/testing/tcp_proxy.h"
#include "tests/testing/test_client.h"
#include "tests/testing/test_database.h"

ABSL_FLAG(std::string, database_url, "",
          "superuser URL of the PostgreSQL cluster (default: $PULSESYNC_TEST_DATABASE_URL)");
ABSL_FLAG(int, clients, 200, "simulated clients");
ABSL_FLAG(int, replicas, 2, "pulsesyncd replicas (1 or 2)");
ABSL_FLAG(int, teams, 10, "teams the clients are spread over");
ABSL_FLAG(double, streaming, 0.5, "share of clients that follow the live feed");
ABSL_FLAG(int, workers, 4, "threads acting for the clients");
ABSL_FLAG(absl::Duration, duration, absl::Seconds(60), "how long the load runs");
ABSL_FLAG(absl::Duration, fault_interval, absl::Seconds(5), "time between faults; 0 = none");
ABSL_FLAG(absl::Duration, settle_timeout, absl::Seconds(120),
          "how long the final push and pull of every client may take");
ABSL_FLAG(uint64_t, seed, 1, "seed of the clients' actions and the fault order");
ABSL_FLAG(std::string, dir, "", "working directory (default: a new temporary one)");

namespace pulsesync {
namespace {

using testing::ServerProcess;
using testing::TaskMap;
using testing::TcpProxy;
using testing::TestClient;
using testing::TestDatabase;

struct Latencies {
  absl::Mutex mu;
  std::map<std::string, std::vector<double>> ms ABSL_GUARDED_BY(mu);
  void Add(const std::string& what, absl::Duration d) {
    absl::MutexLock lock(&mu);
    ms[what].push_back(absl::ToDoubleMilliseconds(d));
  }
};

struct Sim {
  std::unique_ptr<TestClient> client;
  std::string team;
  std::string user;
  int replica = 0;
  bool streaming = false;
};

double Percentile(std::vector<double>& v, double p) {
  if (v.empty()) return 0;
  const size_t i = std::min(v.size() - 1, static_cast<size_t>(p * static_cast<double>(v.size())));
  std::nth_element(v.begin(), v.begin() + static_cast<std::ptrdiff_t>(i), v.end());
  return v[i];
}

// The latest row of each task of the log, as one replica serves it to a
// member of `team` (PullChanges from the start of the log).
absl::StatusOr<TaskMap> ReplicaView(const std::string& address, const std::string& user,
                                    const std::string& team) {
  GrpcTransportOptions o;
  o.user_id = user;
  o.deadline = absl::Seconds(30);
  std::unique_ptr<GrpcTransport> t = GrpcTransport::Create(address, o);
  TaskMap out;
  std::string cursor;
  for (int page = 0; page < 100000; ++page) {
    v1::PullChangesRequest req;
    req.set_cursor(cursor);
    req.set_limit(5000);
    absl::StatusOr<v1::PullChangesResponse> resp = t->PullChanges(req);
    if (!resp.ok()) return resp.status();
    for (const v1::Change& c : resp->changes()) {
      if (c.table() != "tasks") continue;
      absl::StatusOr<JsonValue> row = ParseJson(c.new_record());
      if (!row.ok() || row->Find("team_id") == nullptr || row->Find("team_id")->text() != team) {
        continue;
      }
      testing::TaskState s;
      s.version = c.version();
      s.title = row->Find("title")->text();
      const JsonValue* status = row->Find("status");
      s.status = status != nullptr && status->is_string() ? status->text() : "";
      s.deleted = row->Find("deleted") != nullptr && row->Find("deleted")->bool_value();
      auto it = out.find(c.object_id());
      if (it == out.end() || it->second.version < s.version) out[c.object_id()] = s;
    }
    cursor = resp->next_cursor();
    if (!resp->has_more()) return out;
  }
  return absl::DeadlineExceededError("the log did not end");
}

int Run() {
  std::string admin = absl::GetFlag(FLAGS_database_url);
  if (admin.empty()) admin = testing::AdminDatabaseUrl();
  if (admin.empty()) {
    std::fprintf(stderr, "no PostgreSQL: set --database_url or PULSESYNC_TEST_DATABASE_URL\n");
    return testing::RunningInCi() ? 1 : 77;
  }
  const int n_clients = std::max(1, absl::GetFlag(FLAGS_clients));
  const int n_replicas = std::clamp(absl::GetFlag(FLAGS_replicas), 1, 2);
  const int n_teams = std::clamp(absl::GetFlag(FLAGS_teams), 1, n_clients);
  const uint64_t seed = absl::GetFlag(FLAGS_seed);
  const absl::Duration duration = absl::GetFlag(FLAGS_duration);
  const absl::Duration fault_interval = absl::GetFlag(FLAGS_fault_interval);
  // Every client holds a SQLite file (3 descriptors) and a connection (2
  // more through the proxy in this process).
  rlimit nofile{};
  if (getrlimit(RLIMIT_NOFILE, &nofile) == 0 && nofile.rlim_cur < nofile.rlim_max) {
    nofile.rlim_cur = nofile.rlim_max;
    setrlimit(RLIMIT_NOFILE, &nofile);
  }
  SetMinLogLevel(LogLevel::kError);  // the clients' warnings during faults are expected

  const std::string dir =
      absl::GetFlag(FLAGS_dir).empty() ? testing::MakeTempDir("soak") : absl::GetFlag(FLAGS_dir);
  absl::StatusOr<std::unique_ptr<TestDatabase>> db = TestDatabase::Create(true, admin);
  if (!db.ok()) {
    std::fprintf(stderr, "cannot create the database: %s\n", db.status().ToString().c_str());
    return 1;
  }
  std::printf("soak: %d clients (%.0f%% streaming), %d replica(s), %d teams, %s, faults every %s, "
              "seed %llu, dir %s\n",
              n_clients, 100 * absl::GetFlag(FLAGS_streaming), n_replicas, n_teams,
              absl::FormatDuration(duration).c_str(), absl::FormatDuration(fault_interval).c_str(),
              static_cast<unsigned long long>(seed), dir.c_str());

  // Teams, users, memberships.
  std::vector<std::string> teams;
  std::string sql;
  for (int t = 0; t < n_teams; ++t) {
    teams.push_back(NewUuid());
    absl::StrAppend(&sql, "INSERT INTO teams (id, name) VALUES ('", teams[t], "', 'soak ", t,
                    "');");
  }
  std::vector<Sim> sims(n_clients);
  for (int i = 0; i < n_clients; ++i) {
    sims[i].team = teams[i % n_teams];
    sims[i].user = NewUuid();
    sims[i].replica = i % n_replicas;
    absl::StrAppend(&sql, "INSERT INTO users (id) VALUES ('", sims[i].user, "');",
                    "INSERT INTO team_members (id, team_id, user_id) VALUES ('", NewUuid(), "', '",
                    sims[i].team, "', '", sims[i].user, "');");
  }
  if (absl::Status st = (*db)->Execute(sql); !st.ok()) {
    std::fprintf(stderr, "setup: %s\n", st.ToString().c_str());
    return 1;
  }

  std::vector<std::unique_ptr<ServerProcess>> replicas;
  std::vector<std::unique_ptr<TcpProxy>> proxies;
  for (int r = 0; r < n_replicas; ++r) {
    replicas.push_back(std::make_unique<ServerProcess>(
        (*db)->url(), absl::StrCat(dir, "/replica", r, ".log"),
        std::vector<std::string>{"--feed_poll_ms=200", "--shutdown_grace=5s"}));
    if (absl::Status st = replicas[r]->Start(); !st.ok()) {
      std::fprintf(stderr, "replica %d: %s\n", r, st.ToString().c_str());
      return 1;
    }
    absl::StatusOr<std::unique_ptr<TcpProxy>> proxy =
        TcpProxy::Start("127.0.0.1", replicas[r]->port());
    if (!proxy.ok()) return 1;
    proxies.push_back(*std::move(proxy));
  }

  const int n_streaming = static_cast<int>(absl::GetFlag(FLAGS_streaming) * n_clients);
  for (int i = 0; i < n_clients; ++i) {
    testing::TestClientOptions o;
    o.user_id = sims[i].user;
    o.own_connection = true;
    o.deadline = absl::Seconds(5);
    o.subscribe = i < n_streaming;
    o.initial_sync = InitialSync::kSnapshot;
    sims[i].streaming = o.subscribe;
    absl::StatusOr<std::unique_ptr<TestClient>> c = TestClient::Open(
        absl::StrCat(dir, "/client", i, ".db"), proxies[sims[i].replica]->address(), o);
    if (!c.ok()) {
      std::fprintf(stderr, "client %d: %s\n", i, c.status().ToString().c_str());
      return 1;
    }
    sims[i].client = *std::move(c);
  }

  // --- Load ---
  Latencies latencies;
  std::atomic<int64_t> writes{0}, reads{0}, pulls{0}, pushes{0}, failed_calls{0};
  std::atomic<bool> stop{false};
  const absl::Time start = absl::Now();
  const absl::Time end = start + duration;
  std::vector<std::thread> workers;
  for (int w = 0; w < std::max(1, absl::GetFlag(FLAGS_workers)); ++w) {
    workers.emplace_back([&, w] {
      std::mt19937_64 rng(seed * 1000 + static_cast<uint64_t>(w));
      while (!stop && absl::Now() < end) {
        Sim& sim = sims[rng() % sims.size()];
        const int action = static_cast<int>(rng() % 100);
        if (action < 45) {
          absl::StatusOr<std::vector<JsonValue>> rows = sim.client->store()->List("task");
          absl::Status st;
          if (rows.ok() && !rows->empty() && rng() % 2 == 0) {
            const JsonValue& row = (*rows)[rng() % rows->size()];
            st = sim.client->store()->Update(
                "task", row.Find("id")->text(),
                JsonValue::Object({{"title", JsonValue::String(absl::StrCat("u", rng() % 100000))},
                                   {"status", JsonValue::String(rng() % 2 ? "todo" : "done")}}));
          } else {
            st = sim.client->CreateTask(sim.team, absl::StrCat("c", rng() % 100000)).status();
          }
          if (st.ok()) ++writes;
          if (!sim.streaming) {  // a streaming client's Subscriber pushes by itself
            const absl::Time t0 = absl::Now();
            absl::StatusOr<PushSummary> pushed = sim.client->engine()->Push();
            if (pushed.ok()) {
              latencies.Add("push", absl::Now() - t0);
              ++pushes;
            } else {
              ++failed_calls;
            }
          }
        } else if (action < 75 || sim.streaming) {
          const absl::Time t0 = absl::Now();
          absl::StatusOr<std::vector<JsonValue>> rows = sim.client->store()->List("task");
          if (rows.ok()) {
            latencies.Add("read", absl::Now() - t0);
            ++reads;
          }
        } else {
          const absl::Time t0 = absl::Now();
          absl::StatusOr<PullSummary> pulled = sim.client->engine()->Pull();
          if (pulled.ok()) {
            latencies.Add("pull", absl::Now() - t0);
            ++pulls;
          } else {
            ++failed_calls;
          }
        }
      }
    });
  }

  // --- Faults ---
  std::vector<std::string> faults;
  std::thread fault_thread([&] {
    if (fault_interval <= absl::ZeroDuration()) return;
    int k = static_cast<int>(seed % 5);
    // The waits below are the faults' durations, by design.
    while (!stop && absl::Now() + fault_interval < end) {
      absl::SleepFor(fault_interval);
      // Each kind of fault in turn, alternating between the replicas.
      const int r = k % n_replicas;
      const double at = absl::ToDoubleSeconds(absl::Now() - start);
      std::string what;
      switch (k++ % 5) {
        case 0:
          replicas[r]->Kill();
          what = absl::StrCat("replica ", r, " SIGKILLed and restarted");
          if (absl::Status st = replicas[r]->Restart(); !st.ok()) what += " (restart FAILED)";
          break;
        case 1:
          proxies[r]->SetUp(false);
          absl::SleepFor(absl::Seconds(1));
          proxies[r]->SetUp(true);
          what = absl::StrCat("network to replica ", r, " cut for 1 s");
          break;
        case 2:
          proxies[r]->ResetConnections();
          what = absl::StrCat("every connection to replica ", r, " reset");
          break;
        case 3:
          (void)replicas[r]->Stop();
          what = absl::StrCat("replica ", r, " stopped (SIGTERM) and restarted");
          if (absl::Status st = replicas[r]->Restart(); !st.ok()) what += " (restart FAILED)";
          break;
        case 4:
          proxies[r]->SetDelay(absl::Milliseconds(50));
          absl::SleepFor(absl::Seconds(2));
          proxies[r]->SetDelay(absl::ZeroDuration());
          what = absl::StrCat("network to replica ", r, " delayed 50 ms per chunk for 2 s");
          break;
      }
      faults.push_back(absl::StrFormat("%6.1f s  %s", at, what));
    }
  });
  for (std::thread& t : workers) t.join();
  stop = true;
  fault_thread.join();
  const absl::Duration ran = absl::Now() - start;

  // --- Settle: every client pushes, then pulls, until nothing is pending ---
  const absl::Time settle_start = absl::Now();
  std::atomic<int> unsettled{0};
  absl::Mutex unsettled_mu;
  std::vector<std::string> unsettled_why;  // the first few, with their last error
  absl::Duration slowest_stop, slowest_push, slowest_sync;  // of one client
  auto note_unsettled = [&](size_t i, const char* phase, const absl::Status& status) {
    ++unsettled;
    absl::MutexLock lock(&unsettled_mu);
    if (unsettled_why.size() < 5) {
      unsettled_why.push_back(absl::StrCat("client ", i,
                                           sims[i].client->subscriber() != nullptr ? " (streaming)" : "",
                                           " ", phase, ": ", status.ToString()));
    }
  };
  {
    std::vector<std::thread> settlers;
    std::atomic<size_t> next{0};
    for (int w = 0; w < 8; ++w) {
      settlers.emplace_back([&] {
        for (size_t i = next++; i < sims.size(); i = next++) {
          const absl::Time t0 = absl::Now();
          if (sims[i].client->subscriber() != nullptr) sims[i].client->subscriber()->Stop();
          const absl::Time t1 = absl::Now();
          const absl::Status pushed = sims[i].client->PushAll(absl::GetFlag(FLAGS_settle_timeout));
          {
            absl::MutexLock lock(&unsettled_mu);
            slowest_stop = std::max(slowest_stop, t1 - t0);
            slowest_push = std::max(slowest_push, absl::Now() - t1);
          }
          if (!pushed.ok()) note_unsettled(i, "push", pushed);
        }
      });
    }
    for (std::thread& t : settlers) t.join();
    settlers.clear();
    next = 0;
    for (int w = 0; w < 8; ++w) {
      settlers.emplace_back([&] {
        for (size_t i = next++; i < sims.size(); i = next++) {
          const absl::Time t0 = absl::Now();
          const absl::Status synced = sims[i].client->SyncAll(absl::GetFlag(FLAGS_settle_timeout));
          {
            absl::MutexLock lock(&unsettled_mu);
            slowest_sync = std::max(slowest_sync, absl::Now() - t0);
          }
          if (!synced.ok()) note_unsettled(i, "sync", synced);
        }
      });
    }
    for (std::thread& t : settlers) t.join();
  }
  const absl::Duration settle = absl::Now() - settle_start;

  // --- Check ---
  std::vector<std::string> problems;
  if (unsettled > 0) {
    problems.push_back(absl::StrCat(unsettled.load(), " client(s) did not settle: ",
                                    absl::StrJoin(unsettled_why, "; ")));
  }
  std::map<std::string, TaskMap> server_tasks;
  for (const std::string& team : teams) {
    absl::StatusOr<TaskMap> t = testing::ServerTasks(**db, team);
    if (!t.ok()) {
      problems.push_back(t.status().ToString());
      continue;
    }
    server_tasks[team] = *t;
  }
  int client_mismatches = 0;
  std::vector<std::string> acked;
  int64_t streams_resumed = 0;
  for (size_t i = 0; i < sims.size(); ++i) {
    const std::string diff = testing::DiffTasks(server_tasks[sims[i].team],
                                                sims[i].client->Tasks(sims[i].team), 3);
    if (!diff.empty()) {
      if (++client_mismatches <= 5) problems.push_back(absl::StrCat("client ", i, ": ", diff));
    }
    if (sims[i].client->Pending() != 0) {
      problems.push_back(absl::StrCat("client ", i, ": ", sims[i].client->Pending(), " pending"));
    }
    std::vector<std::string> ids = sims[i].client->AckedRevisionIds();
    acked.insert(acked.end(), ids.begin(), ids.end());
    streams_resumed += std::max(0, sims[i].client->connects() - 1);
  }
  if (client_mismatches > 0) {
    problems.push_back(absl::StrCat(client_mismatches, " client(s) disagree with PostgreSQL"));
  }
  for (int r = 0; r < n_replicas; ++r) {
    for (size_t t = 0; t < teams.size(); ++t) {
      absl::StatusOr<TaskMap> view =
          ReplicaView(replicas[r]->address(), sims[t].user, teams[t]);  // sims[t] is in team t
      if (!view.ok()) {
        problems.push_back(absl::StrCat("replica ", r, ": ", view.status().ToString()));
        continue;
      }
      const std::string diff = testing::DiffTasks(server_tasks[teams[t]], *view, 3);
      if (!diff.empty()) {
        problems.push_back(absl::StrCat("replica ", r, " team ", t, ": ", diff));
      }
    }
  }
  if (absl::Status st = testing::CheckAcknowledgedExactlyOnce(**db, acked); !st.ok()) {
    problems.push_back(st.ToString());
  }
  const std::string applied =
      (*db)->QueryValue("SELECT count(*) FROM pulsesync.applied_revisions").value_or("?");
  if (applied != std::to_string(acked.size())) {
    problems.push_back(absl::StrCat("PostgreSQL applied ", applied, " revisions, clients hold ",
                                    acked.size(), " as acknowledged"));
  }

  // --- Report ---
  const double secs = absl::ToDoubleSeconds(ran);
  std::printf("\nran %.1f s, settled in %.1f s (slowest client: stopping its subscriber %.1f s, "
              "pushing %.1f s, syncing %.1f s)\n",
              secs, absl::ToDoubleSeconds(settle), absl::ToDoubleSeconds(slowest_stop),
              absl::ToDoubleSeconds(slowest_push), absl::ToDoubleSeconds(slowest_sync));
  std::printf("operations: %lld local writes (%.0f/s), %lld explicit pushes, %lld pulls, %lld local "
              "reads; %lld calls failed during faults (retried)\n",
              static_cast<long long>(writes.load()), static_cast<double>(writes.load()) / secs,
              static_cast<long long>(pushes.load()), static_cast<long long>(pulls.load()),
              static_cast<long long>(reads.load()), static_cast<long long>(failed_calls.load()));
  std::printf("acknowledged revisions: %zu (%.0f/s over the run and the settling); streams "
              "resumed after a disconnect: %lld\n",
              acked.size(), static_cast<double>(acked.size()) / (secs + absl::ToDoubleSeconds(settle)),
              static_cast<long long>(streams_resumed));
  {
    absl::MutexLock lock(&latencies.mu);
    for (auto& [what, v] : latencies.ms) {
      std::printf("latency %-5s n=%-7zu p50 %7.1f ms  p95 %7.1f ms  p99 %7.1f ms  max %7.1f ms\n",
                  what.c_str(), v.size(), Percentile(v, 0.50), Percentile(v, 0.95),
                  Percentile(v, 0.99), Percentile(v, 1.0));
    }
  }
  std::printf("faults injected (%zu):\n", faults.size());
  for (const std::string& f : faults) std::printf("  %s\n", f.c_str());
  if (problems.empty()) {
    std::printf("PASS: %d clients, %d replica view(s) and PostgreSQL agree; every acknowledged "
                "revision applied exactly once\n",
                n_clients, n_replicas * n_teams);
  } else {
    std::printf("FAIL:\n");
    for (const std::string& p : problems) std::printf("  %s\n", p.c_str());
  }
  std::fflush(stdout);
  sims.clear();
  return problems.empty() ? 0 : 1;
}

}  // namespace
}  // namespace pulsesync

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  signal(SIGPIPE, SIG_IGN);
  return pulsesync::Run();
}

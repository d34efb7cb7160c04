// Server-side faults under load, on real processes (docs/RELIABILITY.md):
//  - pulsesyncd SIGKILLed while clients push batches through real gRPC:
//    PostgreSQL holds every acknowledged revision exactly once, and at each
//    crash no batch is half applied;
//  - PostgreSQL (a private cluster of this test) stopped, crashed and
//    restarted under load: calls answer UNAVAILABLE meanwhile, the servers
//    reconnect their pools and their LISTEN connections by themselves
//    (never restarted), streams resume from their cursors, nothing is lost.
#include <atomic>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "common/uuid.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "pulsesync/v1/sync.grpc.pb.h"
#include "tests/testing/pg_cluster.h"
#include "tests/testing/status_matchers.h"
#include "tests/testing/subprocess.h"
#include "tests/testing/test_client.h"
#include "tests/testing/test_database.h"

namespace pulsesync {
namespace {

using ::pulsesync::testing::PgCluster;
using ::pulsesync::testing::ServerProcess;
using ::pulsesync::testing::TestClient;
using ::pulsesync::testing::TestClientOptions;
using ::pulsesync::testing::TestDatabase;
using ::pulsesync::testing::WaitFor;

int64_t QueryInt(const TestDatabase& db, const std::string& sql) {
  absl::StatusOr<std::string> v = db.QueryValue(sql);
  int64_t n = -1;
  if (!v.ok() || !absl::SimpleAtoi(*v, &n)) return -1;
  return n;
}

// GetServerInfo straight over gRPC: the code a client would get now.
grpc::StatusCode ProbeCode(const std::string& address) {
  auto stub = v1::SyncService::NewStub(
      grpc::CreateChannel(address, grpc::InsecureChannelCredentials()));
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
  v1::GetServerInfoRequest req;
  v1::GetServerInfoResponse resp;
  return stub->GetServerInfo(&ctx, req, &resp).error_code();
}

TEST(ServerFaultsE2eTest, SigkillMidBatchLosesNoAcknowledgedRevisionAndHalfAppliesNoBatch) {
  PS_REQUIRE_POSTGRES();
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<TestDatabase> db, TestDatabase::Create());
  const std::string dir = testing::MakeTempDir("server-kill");
  ServerProcess server(db->url(), dir + "/pulsesyncd.log");
  ASSERT_OK(server.Start());
  const std::string team = NewUuid();
  ASSERT_OK(db->Execute(absl::StrCat("INSERT INTO teams (id, name) VALUES ('", team, "', 'K')")));

  // Clients with many pending revisions each (creates and updates), pushed
  // in batches of different sizes. Everything is written before the pushes
  // start, so each client's batches are fixed: seq 1..B, B+1..2B, ...
  const int kBatch[] = {7, 25, 50, 100};
  constexpr int kClients = 4;
  constexpr int kCreates = 300;
  std::vector<std::unique_ptr<TestClient>> clients;
  std::map<std::string, int> batch_of_origin;
  int64_t total = 0;
  for (int c = 0; c < kClients; ++c) {
    TestClientOptions o;
    o.wait_for_ready = true;  // across the restarts
    o.engine.push_batch_size = kBatch[c];
    ASSERT_OK_AND_ASSIGN(auto client,
                         TestClient::Open(absl::StrCat(dir, "/c", c, ".db"), server.address(), o));
    std::string previous;
    for (int i = 0; i < kCreates; ++i) {
      ASSERT_OK_AND_ASSIGN(std::string id, client->CreateTask(team, absl::StrCat("c", c, " ", i)));
      if (i % 3 == 2) {
        ASSERT_OK(client->store()->Update(
            "task", previous, JsonValue::Object({{"status", JsonValue::String("done")}})));
      }
      previous = id;
    }
    total += client->Pending();
    batch_of_origin[client->store()->origin_id()] = kBatch[c];
    clients.push_back(std::move(client));
  }

  // Every client pushes (and retries) until nothing is pending.
  std::atomic<int> push_errors{0};
  std::atomic<bool> stop{false};
  std::vector<std::thread> pushers;
  for (auto& client : clients) {
    pushers.emplace_back([&, c = client.get()] {
      const absl::Time deadline = absl::Now() + absl::Seconds(120);
      while (!stop && c->Pending() > 0 && absl::Now() < deadline) {
        if (!c->engine()->Push().ok()) ++push_errors;
      }
    });
  }
  // Whatever happens below, the pushers stop before the clients go.
  struct Joiner {
    std::atomic<bool>* stop;
    std::vector<std::thread>* threads;
    ~Joiner() {
      *stop = true;
      for (std::thread& t : *threads) {
        if (t.joinable()) t.join();
      }
    }
  } joiner{&stop, &pushers};

  // SIGKILL the server three times while batches are being applied, and
  // check PostgreSQL while it is down: per origin, the applied revisions
  // are exactly seq 1..n with n a whole number of batches.
  auto check_whole_batches = [&](int kill) {
    absl::StatusOr<std::string> rows = db->QueryValue(
        "SELECT coalesce(string_agg(origin_id || '|' || count || '|' || max_seq, ','), '') FROM "
        "(SELECT origin_id, count(*) AS count, max(seq) AS max_seq "
        "FROM pulsesync.applied_revisions GROUP BY origin_id) o");
    ASSERT_OK(rows.status());
    for (absl::string_view row : absl::StrSplit(*rows, ',', absl::SkipEmpty())) {
      std::vector<std::string> f = absl::StrSplit(row, '|');
      ASSERT_EQ(f.size(), 3u);
      const int64_t count = std::stoll(f[1]), max_seq = std::stoll(f[2]);
      const int batch = batch_of_origin[f[0]];
      EXPECT_EQ(count, max_seq) << "kill " << kill << ": origin " << f[0] << " has gaps";
      const int64_t own_total = kCreates + kCreates / 3;  // every client's revisions
      EXPECT_TRUE(max_seq % batch == 0 || max_seq == own_total)
          << "kill " << kill << ": origin " << f[0] << " (batches of " << batch
          << ") has a half-applied batch: seq 1.." << max_seq;
    }
  };
  int kills = 0;
  for (int k = 1; k <= 3; ++k) {
    const int64_t threshold = total * k / 4;
    ASSERT_TRUE(WaitFor(
        [&] {
          return QueryInt(*db, "SELECT count(*) FROM pulsesync.applied_revisions") >= threshold;
        },
        absl::Seconds(60), absl::Milliseconds(5)))
        << "pushes stalled before " << threshold << " revisions";
    server.Kill();
    ++kills;
    check_whole_batches(k);
    ASSERT_OK(server.Restart());
  }
  for (std::thread& t : pushers) t.join();

  // Everything pushed; everything acknowledged is in PostgreSQL once.
  std::vector<std::string> acked;
  for (auto& c : clients) {
    EXPECT_EQ(c->Pending(), 0);
    std::vector<std::string> ids = c->AckedRevisionIds();
    EXPECT_EQ(static_cast<int>(ids.size()), kCreates + kCreates / 3);
    acked.insert(acked.end(), ids.begin(), ids.end());
  }
  EXPECT_OK(testing::CheckAcknowledgedExactlyOnce(*db, acked));
  EXPECT_EQ(QueryInt(*db, "SELECT count(*) FROM pulsesync.applied_revisions"), total);
  EXPECT_EQ(QueryInt(*db, absl::StrCat("SELECT count(*) FROM tasks WHERE team_id = '", team, "'")),
            kClients * kCreates);
  EXPECT_EQ(QueryInt(*db, "SELECT count(*) FROM pulsesync.refused_revisions"), 0);
  // And every client pulls PostgreSQL's state back.
  ASSERT_OK_AND_ASSIGN(testing::TaskMap expected, testing::ServerTasks(*db, team));
  for (auto& c : clients) {
    ASSERT_OK(c->SyncAll(absl::Seconds(30)));
    EXPECT_EQ(testing::DiffTasks(expected, c->Tasks(team)), "");
  }
  EXPECT_EQ(kills, 3);
  EXPECT_GE(push_errors.load(), 1) << "no push was cut by a kill";
  std::printf("server killed %d times mid-push; %d push calls failed and were retried\n", kills,
              push_errors.load());
}

TEST(ServerFaultsE2eTest, PostgresRestartedUnderLoadIsUnavailableThenEverythingResumes) {
  PS_REQUIRE_POSTGRES();  // the shared cluster is not used, but CI must run this
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<PgCluster> cluster, PgCluster::Create());
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<TestDatabase> db,
                       TestDatabase::Create(/*migrated=*/true, cluster->url()));
  const std::string dir = testing::MakeTempDir("pg-restart");
  // Two replicas. The feed polls only once a minute: a change written through
  // one replica reaches the other's streams in time only by NOTIFY, i.e.
  // only if the LISTEN connection came back after each outage.
  const std::vector<std::string> flags = {"--feed_poll_ms=60000", "--pool_size=2"};
  ServerProcess writer_replica(db->url(), dir + "/a.log", flags);
  ServerProcess stream_replica(db->url(), dir + "/b.log", flags);
  ASSERT_OK(writer_replica.Start());
  ASSERT_OK(stream_replica.Start());
  const std::string team = NewUuid();
  ASSERT_OK(db->Execute(absl::StrCat("INSERT INTO teams (id, name) VALUES ('", team, "', 'P')")));

  TestClientOptions wo;
  wo.deadline = absl::Seconds(5);
  ASSERT_OK_AND_ASSIGN(auto writer,
                       TestClient::Open(dir + "/writer.db", writer_replica.address(), wo));
  TestClientOptions ro;
  ro.subscribe = true;
  ASSERT_OK_AND_ASSIGN(auto reader,
                       TestClient::Open(dir + "/reader.db", stream_replica.address(), ro));
  ASSERT_TRUE(WaitFor([&] { return reader->subscriber()->connected(); }, absl::Seconds(30)));

  // The writer writes and pushes all the time; pushes fail while the
  // database is away and the writes stay pending.
  std::atomic<bool> stop{false};
  std::atomic<int> written{0}, failed_pushes{0};
  absl::Mutex mu;
  absl::Status last_error;
  std::thread load([&] {
    const absl::Time deadline = absl::Now() + absl::Seconds(120);
    while (!stop && absl::Now() < deadline) {
      if (writer->CreateTask(team, absl::StrCat("w", written.load())).ok()) ++written;
      if (absl::StatusOr<PushSummary> p = writer->engine()->Push(); !p.ok()) {
        ++failed_pushes;
        absl::MutexLock lock(&mu);
        last_error = p.status();
      }
    }
  });
  // Whatever happens below, the load stops before the clients go.
  struct Joiner {
    std::atomic<bool>* stop;
    std::thread* t;
    ~Joiner() {
      *stop = true;
      if (t->joinable()) t->join();
    }
  } joiner{&stop, &load};
  auto last_push_error = [&] {
    absl::MutexLock lock(&mu);
    return last_error.ToString();
  };
  auto converged = [&] {
    absl::StatusOr<testing::TaskMap> server = testing::ServerTasks(*db, team);
    return server.ok() && !server->empty() && reader->Tasks(team) == *server;
  };

  for (int outage = 0; outage < 2; ++outage) {
    const int before = written.load();
    ASSERT_TRUE(WaitFor([&] { return written.load() >= before + 20; }, absl::Seconds(30)));
    // A fast shutdown, then a crash (immediate stop, recovery at start):
    // transaction ids that never reached the WAL are handed out again after
    // it, and cursors from before it are rewound (change_feed.h, point 8).
    ASSERT_OK(cluster->Stop(/*immediate=*/outage == 1));
    EXPECT_EQ(ProbeCode(writer_replica.address()), grpc::StatusCode::UNAVAILABLE);
    EXPECT_EQ(ProbeCode(stream_replica.address()), grpc::StatusCode::UNAVAILABLE);
    const int failed_before = failed_pushes.load();
    ASSERT_TRUE(WaitFor([&] { return failed_pushes.load() >= failed_before + 2; },
                        absl::Seconds(30)));
    EXPECT_GT(writer->Pending(), 0) << "local writes go on while the database is down";
    ASSERT_OK(cluster->Start());
    ASSERT_TRUE(WaitFor([&] { return writer->Pending() < 5; }, absl::Seconds(30)))
        << "the writer's pushes did not resume: " << writer->Pending()
        << " pending; last push error: " << last_push_error();
  }
  stop = true;
  load.join();
  ASSERT_OK(writer->SyncAll(absl::Seconds(30)));
  EXPECT_TRUE(WaitFor(converged, absl::Seconds(30)))
      << testing::DiffTasks(*testing::ServerTasks(*db, team), reader->Tasks(team));

  // The LISTEN connection is back: one more write is streamed by the other
  // replica long before its next poll.
  ASSERT_OK_AND_ASSIGN(std::string last, writer->CreateTask(team, "after the outages"));
  ASSERT_OK(writer->PushAll(absl::Seconds(10)));
  EXPECT_TRUE(WaitFor([&] { return reader->Tasks(team).count(last) > 0; }, absl::Seconds(15)))
      << "the stream replica did not hear NOTIFY after PostgreSQL restarted";

  EXPECT_OK(testing::CheckAcknowledgedExactlyOnce(*db, writer->AckedRevisionIds()));
  EXPECT_EQ(static_cast<int>(writer->AckedRevisionIds().size()), written.load() + 1);
  EXPECT_GE(reader->connects(), 1);
  // Neither replica was restarted: both recovered by themselves.
  EXPECT_EQ(writer_replica.WaitForExit(absl::ZeroDuration()).status().code(),
            absl::StatusCode::kDeadlineExceeded);
  EXPECT_EQ(stream_replica.WaitForExit(absl::ZeroDuration()).status().code(),
            absl::StatusCode::kDeadlineExceeded);
  EXPECT_EQ(ProbeCode(stream_replica.address()), grpc::StatusCode::OK);
  std::printf("2 PostgreSQL outages (a fast shutdown, a crash): %d writes, %d pushes failed meanwhile, reader reconnected %d "
              "time(s)\n",
              written.load(), failed_pushes.load(), reader->connects() - 1);
  reader.reset();
  writer.reset();
  EXPECT_OK(writer_replica.Stop().status());
  EXPECT_OK(stream_replica.Stop().status());
  db.reset();
}

}  // namespace
}  // namespace pulsesync

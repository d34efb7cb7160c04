// Two replicas behind the gRPC balancer (deploy/local/stack.sh: HAProxy over
// two pulsesyncd processes on one PostgreSQL), driven by two real clients
// (store, engine, subscriber). One replica is killed with SIGKILL while both
// clients stream and write: they carry on through the other, resuming their
// streams from their cursors, and nothing is lost.
//
// Against a deployment of your own: PULSESYNC_E2E_ADDRESS=host:port (and
// PULSESYNC_E2E_TOKEN=<JWT> when it authenticates) runs the tests that need
// no control over the replicas against that address instead of starting a
// stack; the replica-kill test is skipped there. Plaintext only.
#include <signal.h>

#include <atomic>
#include <cstdlib>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "client/core/subscriber.h"
#include "client/core/sync_engine.h"
#include "client/store/local_store.h"
#include "client/transport/grpc_transport.h"
#include "common/json.h"
#include "common/uuid.h"
#include "gtest/gtest.h"
#include "tests/testing/http_get.h"
#include "tests/testing/status_matchers.h"
#include "tests/testing/subprocess.h"
#include "tests/testing/test_database.h"

namespace pulsesync {
namespace {

using ::pulsesync::testing::RunCommand;
using ::pulsesync::testing::TestDatabase;
using ::pulsesync::testing::WaitFor;

constexpr absl::Duration kDeadline = absl::Seconds(60);

std::string Env(const char* name) {
  const char* v = std::getenv(name);
  return v == nullptr ? "" : v;
}

// One client: its SQLite file, transport, engine and subscriber.
struct Client {
  Client(const std::string& path, const std::string& address) {
    store = std::move(LocalStore::Open(path)).value();
    GrpcTransportOptions transport_options;
    transport_options.bearer_token = Env("PULSESYNC_E2E_TOKEN");
    transport = GrpcTransport::Create(address, transport_options);
    engine = std::make_unique<SyncEngine>(store.get(), transport.get());
    SubscriberOptions options;
    options.initial_backoff = absl::Milliseconds(50);
    options.max_backoff = absl::Milliseconds(500);
    options.push_debounce = absl::Milliseconds(20);
    options.on_connection = [this](const ConnectionEvent& e) {
      if (e.state == ConnectionEvent::State::kConnected) ++connections;
    };
    subscriber =
        std::make_unique<Subscriber>(store.get(), transport.get(), engine.get(), options);
  }
  ~Client() { subscriber->Stop(); }

  // id -> title of every live task of `team`.
  std::map<std::string, std::string> Tasks(const std::string& team) {
    std::map<std::string, std::string> out;
    auto rows = store->List("task");
    if (!rows.ok()) return out;
    for (const JsonValue& r : *rows) {
      if (r.Find("team_id")->text() == team) out[r.Find("id")->text()] = r.Find("title")->text();
    }
    return out;
  }

  std::string CreateTask(const std::string& team, const std::string& title) {
    absl::StatusOr<std::string> id =
        store->Create("task", JsonValue::Object({{"team_id", JsonValue::String(team)},
                                                 {"title", JsonValue::String(title)}}));
    EXPECT_OK(id);
    return id.ok() ? *id : "";
  }

  std::atomic<int> connections{0};
  std::unique_ptr<LocalStore> store;
  std::unique_ptr<GrpcTransport> transport;
  std::unique_ptr<SyncEngine> engine;
  std::unique_ptr<Subscriber> subscriber;
};

class StackE2eTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = testing::MakeTempDir("stack");
    address_ = Env("PULSESYNC_E2E_ADDRESS");
    if (!address_.empty()) return;  // someone else's stack
    PS_REQUIRE_POSTGRES();
    ASSERT_OK_AND_ASSIGN(db_, TestDatabase::Create(/*migrated=*/false));
    ASSERT_OK_AND_ASSIGN(testing::CommandResult up, Stack("up"));
    ASSERT_EQ(up.exit_code, 0) << up.output << up.errors;
    ASSERT_OK_AND_ASSIGN(testing::CommandResult env, Stack("env"));
    for (absl::string_view line : absl::StrSplit(env.output, '\n', absl::SkipEmpty())) {
      std::vector<std::string> kv = absl::StrSplit(line, absl::MaxSplits('=', 1));
      if (kv.size() == 2) stack_[kv[0]] = kv[1];
    }
    address_ = stack_["ADDRESS"];
    ASSERT_FALSE(address_.empty()) << env.output;
    local_ = true;
  }

  void TearDown() override {
    if (!local_) return;
    absl::StatusOr<testing::CommandResult> down = Stack("down");
    EXPECT_TRUE(down.ok() && down->exit_code == 0);
  }

  absl::StatusOr<testing::CommandResult> Stack(const std::string& command) {
    return RunCommand({"bash", testing::SourceDir() + "/deploy/local/stack.sh", command},
                      {"PULSESYNC_STACK_DIR=" + dir_ + "/stack", "DATABASE_URL=" + db_->url(),
                       "PULSESYNC_STACK_LISTEN=127.0.0.1:0", "PULSESYNC_STACK_METRICS_PORT=0",
                       "PULSESYNC_SKIP_DEPS=1", "PULSESYNCD=" + testing::PulsesyncdPath(),
                       "PULSESYNC_FEED_POLL_MS=100", "PULSESYNC_SHUTDOWN_GRACE=5s"},
                      absl::Seconds(120));
  }

  // id -> title of the team's live tasks, as PostgreSQL has them.
  std::map<std::string, std::string> ServerTasks(const std::string& team) {
    std::map<std::string, std::string> out;
    absl::StatusOr<std::string> all = db_->QueryValue(absl::StrCat(
        "SELECT coalesce(string_agg(id || '|' || title, E'\\n'), '') FROM tasks "
        "WHERE NOT deleted AND team_id = '", team, "'"));
    if (!all.ok()) return out;
    for (absl::string_view line : absl::StrSplit(*all, '\n', absl::SkipEmpty())) {
      std::vector<std::string> f = absl::StrSplit(line, absl::MaxSplits('|', 1));
      out[f[0]] = f[1];
    }
    return out;
  }

  std::string dir_;
  std::string address_;
  bool local_ = false;
  std::map<std::string, std::string> stack_;
  std::unique_ptr<TestDatabase> db_;
};

TEST_F(StackE2eTest, TwoClientsSyncThroughTheBalancer) {
  Client a(dir_ + "/a.db", address_);
  Client b(dir_ + "/b.db", address_);
  a.subscriber->Start();
  b.subscriber->Start();
  ASSERT_OK_AND_ASSIGN(std::string team,
                       a.store->Create("team", JsonValue::Object({{"name", JsonValue::String(
                                                                               "Stack")}})));
  const std::string task = a.CreateTask(team, "through the balancer");
  ASSERT_TRUE(WaitFor([&] { return b.Tasks(team).count(task) == 1; }, kDeadline));
  ASSERT_OK(b.store->Update("task", task,
                            JsonValue::Object({{"title", JsonValue::String("edited by b")}})));
  EXPECT_TRUE(WaitFor([&] { return a.Tasks(team)[task] == "edited by b"; }, kDeadline));
  if (local_) {
    EXPECT_EQ(ServerTasks(team), a.Tasks(team));
  }
}

TEST_F(StackE2eTest, ClientsCarryOnThroughTheOtherReplicaWhenOneIsKilled) {
  if (!local_) GTEST_SKIP() << "needs the local stack (PULSESYNC_E2E_ADDRESS is set)";
  Client a(dir_ + "/a.db", address_);
  Client b(dir_ + "/b.db", address_);
  a.subscriber->Start();
  b.subscriber->Start();
  ASSERT_OK_AND_ASSIGN(std::string team,
                       a.store->Create("team", JsonValue::Object({{"name", JsonValue::String(
                                                                               "Failover")}})));
  const std::string first = a.CreateTask(team, "before");
  ASSERT_TRUE(WaitFor([&] { return b.Tasks(team).count(first) == 1; }, kDeadline));
  const int a_connections = a.connections, b_connections = b.connections;

  // Both clients write while replica 1 dies.
  constexpr int kPerClient = 40;
  std::atomic<int> written{0};
  auto writer = [&](Client* c, const std::string& who) {
    for (int i = 0; i < kPerClient; ++i) {
      c->CreateTask(team, absl::StrCat(who, " ", i));
      ++written;
      absl::SleepFor(absl::Milliseconds(10));
    }
  };
  std::thread wa(writer, &a, "a"), wb(writer, &b, "b");
  ASSERT_TRUE(WaitFor([&] { return written >= kPerClient / 2; }, kDeadline));
  int pid = 0;
  ASSERT_TRUE(absl::SimpleAtoi(stack_["REPLICA1_PID"], &pid));
  ASSERT_EQ(::kill(pid, SIGKILL), 0);
  wa.join();
  wb.join();

  // Everything either client wrote reaches PostgreSQL and both clients.
  const auto converged = [&] {
    const auto want = ServerTasks(team);
    return want.size() == 2 * kPerClient + 1 && a.Tasks(team) == want && b.Tasks(team) == want;
  };
  EXPECT_TRUE(WaitFor(converged, kDeadline))
      << "server " << ServerTasks(team).size() << ", a " << a.Tasks(team).size() << ", b "
      << b.Tasks(team).size();

  // The survivor serves both; the balancer reports replica 1 down.
  ASSERT_OK_AND_ASSIGN(testing::CommandResult status, Stack("status"));
  EXPECT_NE(status.exit_code, 0);
  EXPECT_NE(status.output.find("replica 1"), std::string::npos);
  ASSERT_OK_AND_ASSIGN(
      testing::CommandResult health,
      RunCommand({testing::PulsesyncdPath(), "health", "--address=" + address_}));
  EXPECT_EQ(health.exit_code, 0) << health.errors;
  // At least one client lost its stream with the replica and resumed.
  EXPECT_GT(a.connections + b.connections, a_connections + b_connections);
  // The survivor's metrics show both clients' streams.
  const std::string metrics = stack_["REPLICA2_METRICS"];
  const int metrics_port = std::atoi(metrics.substr(metrics.rfind(':') + 1).c_str());
  ASSERT_OK_AND_ASSIGN(std::string text, testing::HttpGet(metrics_port, "/metrics"));
  EXPECT_EQ(testing::PrometheusSample(text, "pulsesync_streams_open",
                                      {{"grpc_method", "StreamChanges"}}),
            2);
}

}  // namespace
}  // namespace pulsesync

// Client-side faults on real processes (docs/RELIABILITY.md):
//  - the network between client and server delayed, reset mid-stream, cut,
//    and answers lost (a TcpProxy in between): the client goes offline,
//    keeps taking local writes, and converges after;
//  - the client process SIGKILLed mid-push and mid-pull at seeded points:
//    its SQLite stays consistent and the next sync loses and doubles nothing;
//  - the client's database full: writes fail with a clear
//    RESOURCE_EXHAUSTED, nothing stored is damaged, sync resumes with space.
//
//   PULSESYNC_CLIENT_CRASH_SEEDS=40   crash runs (CI: the default)
//   PULSESYNC_CLIENT_CRASH_SEED=N     the first seed
#include <signal.h>
#include <sqlite3.h>

#include <cstdlib>
#include <memory>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "common/json.h"
#include "common/uuid.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/core/cursor.h"
#include "tests/testing/status_matchers.h"
#include "tests/testing/subprocess.h"
#include "tests/testing/tcp_proxy.h"
#include "tests/testing/test_client.h"
#include "tests/testing/test_database.h"

namespace pulsesync {
namespace {

using ::pulsesync::testing::ServerProcess;
using ::pulsesync::testing::TcpProxy;
using ::pulsesync::testing::TestClient;
using ::pulsesync::testing::TestClientOptions;
using ::pulsesync::testing::TestDatabase;
using ::pulsesync::testing::WaitFor;
using ::testing::HasSubstr;

int64_t EnvInt(const char* name, int64_t fallback) {
  const char* v = std::getenv(name);
  return v != nullptr && *v != '\0' ? std::strtoll(v, nullptr, 10) : fallback;
}

class ClientFaultsE2eTest : public ::testing::Test {
 protected:
  void SetUp() override {
    PS_REQUIRE_POSTGRES();
    ASSERT_OK_AND_ASSIGN(db_, TestDatabase::Create());
    dir_ = testing::MakeTempDir("client-faults");
    team_ = NewUuid();
    ASSERT_OK(db_->Execute(absl::StrCat("INSERT INTO teams (id, name) VALUES ('", team_,
                                        "', 'F')")));
    server_ = std::make_unique<ServerProcess>(db_->url(), dir_ + "/pulsesyncd.log",
                                              std::vector<std::string>{"--feed_poll_ms=50"});
    ASSERT_OK(server_->Start());
  }

  testing::TaskMap ServerTasks() {
    absl::StatusOr<testing::TaskMap> t = testing::ServerTasks(*db_, team_);
    EXPECT_OK(t.status());
    return t.ok() ? *t : testing::TaskMap();
  }
  bool Converged(TestClient& c) {
    const testing::TaskMap s = ServerTasks();
    return c.Pending() == 0 && c.Tasks(team_) == s;
  }

  std::unique_ptr<TestDatabase> db_;
  std::string dir_;
  std::string team_;
  std::unique_ptr<ServerProcess> server_;
};

TEST_F(ClientFaultsE2eTest, DelayedResetAndCutNetworkGoesOfflineKeepsWritingAndConverges) {
  ASSERT_OK_AND_ASSIGN(auto proxy, TcpProxy::Start("127.0.0.1", server_->port()));
  TestClientOptions o;
  o.subscribe = true;
  o.deadline = absl::Seconds(5);
  ASSERT_OK_AND_ASSIGN(auto client, TestClient::Open(dir_ + "/a.db", proxy->address(), o));
  ASSERT_OK_AND_ASSIGN(auto other, TestClient::Open(dir_ + "/b.db", server_->address()));
  ASSERT_TRUE(WaitFor([&] { return client->subscriber()->connected(); }, absl::Seconds(30)));
  int n = 0;
  auto write_both = [&](int count) {
    for (int i = 0; i < count; ++i, ++n) {
      ASSERT_OK(client->CreateTask(team_, absl::StrCat("a", n)).status());
      ASSERT_OK(other->CreateTask(team_, absl::StrCat("b", n)).status());
    }
    ASSERT_OK(other->PushAll(absl::Seconds(20)));
  };

  // 1. 150 ms each way on every chunk: slow, but everything arrives.
  proxy->SetDelay(absl::Milliseconds(150));
  write_both(5);
  EXPECT_TRUE(WaitFor([&] { return Converged(*client); }, absl::Seconds(30)))
      << testing::DiffTasks(ServerTasks(), client->Tasks(team_));
  proxy->SetDelay(absl::ZeroDuration());

  // 2. Every connection reset (RST) mid-stream: the stream resumes from its
  // cursor on a new connection.
  const int64_t connections = proxy->connections();
  const int disconnects = client->disconnects();
  proxy->ResetConnections();
  write_both(5);
  EXPECT_TRUE(WaitFor([&] { return Converged(*client); }, absl::Seconds(30)))
      << testing::DiffTasks(ServerTasks(), client->Tasks(team_));
  EXPECT_GT(client->disconnects(), disconnects);
  EXPECT_GT(proxy->connections(), connections);

  // 3. Cut: the client goes offline and keeps taking local writes.
  proxy->SetUp(false);
  ASSERT_TRUE(WaitFor([&] { return !client->subscriber()->connected(); }, absl::Seconds(30)));
  write_both(10);
  EXPECT_GE(client->Pending(), 10);
  EXPECT_FALSE(client->subscriber()->connected());
  proxy->SetUp(true);
  EXPECT_TRUE(WaitFor([&] { return Converged(*client); }, absl::Seconds(30)))
      << testing::DiffTasks(ServerTasks(), client->Tasks(team_));
  ASSERT_OK(other->SyncAll(absl::Seconds(20)));
  EXPECT_EQ(testing::DiffTasks(ServerTasks(), other->Tasks(team_)), "");
  EXPECT_EQ(ServerTasks().size(), 40u);
  EXPECT_OK(testing::CheckAcknowledgedExactlyOnce(*db_, client->AckedRevisionIds()));
}

TEST_F(ClientFaultsE2eTest, ALostAnswerIsRetriedAsADuplicateAndAppliedOnce) {
  ASSERT_OK_AND_ASSIGN(auto proxy, TcpProxy::Start("127.0.0.1", server_->port()));
  TestClientOptions o;
  o.deadline = absl::Seconds(2);
  ASSERT_OK_AND_ASSIGN(auto client, TestClient::Open(dir_ + "/c.db", proxy->address(), o));
  ASSERT_OK(client->SyncAll(absl::Seconds(20)));  // connected once
  for (int i = 0; i < 3; ++i) ASSERT_OK(client->CreateTask(team_, absl::StrCat("t", i)).status());

  // The request reaches the server; its answer never comes back.
  proxy->SetStallReplies(true);
  absl::StatusOr<PushSummary> lost = client->engine()->Push();
  EXPECT_EQ(lost.status().code(), absl::StatusCode::kDeadlineExceeded) << lost.status();
  EXPECT_EQ(client->Pending(), 3);
  ASSERT_TRUE(WaitFor(
      [&] {
        return db_->QueryValue(absl::StrCat("SELECT count(*) FROM pulsesync.applied_revisions "
                                            "WHERE origin_id = '",
                                            client->store()->origin_id(), "'"))
                   .value_or("") == "3";
      },
      absl::Seconds(10)));
  proxy->SetStallReplies(false);
  proxy->ResetConnections();  // the held-back answer is gone with its connection

  absl::StatusOr<PushSummary> retried;
  ASSERT_TRUE(WaitFor([&] { return (retried = client->engine()->Push()).ok(); },
                      absl::Seconds(20), absl::Milliseconds(50)))
      << retried.status();
  EXPECT_EQ(retried->duplicate, 3);
  EXPECT_EQ(client->Pending(), 0);
  EXPECT_OK(testing::CheckAcknowledgedExactlyOnce(*db_, client->AckedRevisionIds()));
  EXPECT_EQ(ServerTasks().size(), 3u);
}

// SyncEngine invariant 6 against a real server: the next batch goes out
// before an answer is recorded. When recording fails, the server has applied
// both batches while the client still holds them pending (invariant 1); the
// next push sends them again and they are answered DUPLICATE, applied once.
TEST_F(ClientFaultsE2eTest, AFailedRecordAfterAPipelinedBatchLosesNothingAndAppliesNothingTwice) {
  const std::string path = dir_ + "/pipelined.db";
  ASSERT_OK_AND_ASSIGN(auto client, TestClient::Open(path, server_->address()));
  std::vector<LocalWrite> writes;
  for (int i = 0; i < 250; ++i) {
    JsonValue fields = JsonValue::Object();
    fields.Set("team_id", JsonValue::String(team_));
    fields.Set("title", JsonValue::String(absl::StrCat("t", i)));
    writes.push_back(LocalWrite::Create("task", fields));
  }
  ASSERT_OK(client->store()->Apply(writes).status());
  auto exec = [&](const char* sql) {
    sqlite3* db = nullptr;
    ASSERT_EQ(sqlite3_open(path.c_str(), &db), SQLITE_OK);
    sqlite3_busy_timeout(db, 5000);
    EXPECT_EQ(sqlite3_exec(db, sql, nullptr, nullptr, nullptr), SQLITE_OK) << sqlite3_errmsg(db);
    sqlite3_close(db);
  };
  exec("CREATE TRIGGER fail_record BEFORE UPDATE OF synced ON revisions "
       "BEGIN SELECT RAISE(ABORT, 'injected'); END;");
  const std::string applied_sql =
      absl::StrCat("SELECT count(*) FROM pulsesync.applied_revisions WHERE origin_id = '",
                   client->store()->origin_id(), "'");

  absl::StatusOr<PushSummary> failed = client->engine()->Push();
  EXPECT_THAT(failed.status().message(), HasSubstr("injected")) << failed.status();
  // Batch 2 was sent before batch 1's answer was recorded (which failed).
  EXPECT_EQ(db_->QueryValue(applied_sql).value_or(""), "200");
  EXPECT_EQ(client->Pending(), 250);

  exec("DROP TRIGGER fail_record");
  absl::StatusOr<PushSummary> again = client->engine()->Push();
  ASSERT_OK(again.status());
  EXPECT_EQ(again->duplicate, 200);
  EXPECT_EQ(again->applied, 50);
  EXPECT_EQ(client->Pending(), 0);
  EXPECT_EQ(db_->QueryValue(applied_sql).value_or(""), "250");
  EXPECT_OK(testing::CheckAcknowledgedExactlyOnce(*db_, client->AckedRevisionIds()));
  EXPECT_EQ(ServerTasks().size(), 250u);
}

// The soak's divergence (LocalStore invariant 13): the server applied an
// edit whose answer was lost; another device then edited the same field,
// and this client pulled both changes while its own edit was still pending
// (so it kept its value through them). The retry is answered DUPLICATE with
// nothing newer to come: the client must still end with the later edit.
TEST_F(ClientFaultsE2eTest, ALaterEditPulledBeforeALostAnswerIsRetriedIsNotLost) {
  ASSERT_OK_AND_ASSIGN(auto proxy, TcpProxy::Start("127.0.0.1", server_->port()));
  TestClientOptions o;
  o.deadline = absl::Seconds(2);
  ASSERT_OK_AND_ASSIGN(auto client, TestClient::Open(dir_ + "/c.db", proxy->address(), o));
  ASSERT_OK_AND_ASSIGN(auto other, TestClient::Open(dir_ + "/o.db", server_->address()));
  ASSERT_OK_AND_ASSIGN(const std::string task, client->CreateTask(team_, "first"));
  ASSERT_OK(client->SyncAll(absl::Seconds(20)));
  ASSERT_OK(other->SyncAll(absl::Seconds(20)));

  ASSERT_OK(client->store()->Update(
      "task", task, JsonValue::Object({{"title", JsonValue::String("mine")}})));
  proxy->SetStallReplies(true);
  EXPECT_FALSE(client->engine()->Push().ok());
  ASSERT_TRUE(WaitFor(
      [&] {
        return db_->QueryValue(absl::StrCat("SELECT title FROM tasks WHERE id = '", task, "'"))
                   .value_or("") == "mine";
      },
      absl::Seconds(10)));
  proxy->SetStallReplies(false);
  proxy->ResetConnections();

  ASSERT_OK(other->SyncAll(absl::Seconds(20)));
  ASSERT_OK(other->store()->Update(
      "task", task, JsonValue::Object({{"title", JsonValue::String("theirs, later")}})));
  ASSERT_OK(other->SyncAll(absl::Seconds(20)));

  absl::StatusOr<PullSummary> pulled;
  ASSERT_TRUE(WaitFor([&] { return (pulled = client->engine()->Pull()).ok(); },
                      absl::Seconds(20), absl::Milliseconds(50)))
      << pulled.status();
  EXPECT_EQ(client->Tasks(team_)[task].title, "mine") << "still pending: kept";
  EXPECT_EQ(client->Pending(), 1);
  absl::StatusOr<PushSummary> retried = client->engine()->Push();
  ASSERT_OK(retried.status());
  EXPECT_EQ(retried->duplicate, 1);
  EXPECT_EQ(ServerTasks()[task].title, "theirs, later");
  EXPECT_EQ(testing::DiffTasks(ServerTasks(), client->Tasks(team_)), "");
}

// --- The client process killed ---

struct SqliteFile {
  explicit SqliteFile(const std::string& path) {
    if (sqlite3_open_v2(path.c_str(), &db, SQLITE_OPEN_READONLY, nullptr) != SQLITE_OK) {
      ADD_FAILURE() << "cannot open " << path;
    }
    sqlite3_busy_timeout(db, 5000);
  }
  ~SqliteFile() { sqlite3_close(db); }
  std::string Text(const std::string& sql) {
    sqlite3_stmt* st = nullptr;
    std::string out;
    if (sqlite3_prepare_v2(db, sql.c_str(), -1, &st, nullptr) != SQLITE_OK) {
      ADD_FAILURE() << sql << ": " << sqlite3_errmsg(db);
    } else if (sqlite3_step(st) == SQLITE_ROW && sqlite3_column_text(st, 0) != nullptr) {
      out = reinterpret_cast<const char*>(sqlite3_column_text(st, 0));
    }
    sqlite3_finalize(st);
    return out;
  }
  std::set<std::string> Column(const std::string& sql) {
    sqlite3_stmt* st = nullptr;
    std::set<std::string> out;
    if (sqlite3_prepare_v2(db, sql.c_str(), -1, &st, nullptr) != SQLITE_OK) {
      ADD_FAILURE() << sql << ": " << sqlite3_errmsg(db);
    }
    while (st != nullptr && sqlite3_step(st) == SQLITE_ROW) {
      out.emplace(reinterpret_cast<const char*>(sqlite3_column_text(st, 0)));
    }
    sqlite3_finalize(st);
    return out;
  }
  sqlite3* db = nullptr;
};

// The revision ids of `origin`'s changes that PullChanges delivers after
// `cursor`, up to the end of the log.
std::set<std::string> RevisionsAfter(Transport& transport, std::string cursor,
                                     const std::string& origin) {
  std::set<std::string> out;
  for (int page = 0; page < 1000; ++page) {
    v1::PullChangesRequest req;
    req.set_cursor(cursor);
    absl::StatusOr<v1::PullChangesResponse> resp = transport.PullChanges(req);
    if (!resp.ok()) {
      ADD_FAILURE() << resp.status();
      break;
    }
    for (const v1::Change& c : resp->changes()) {
      if (c.origin_id() == origin) out.insert(c.revision_id());
    }
    cursor = resp->next_cursor();
    // A cursor stored mid-batch (a paged batch cut by the kill) finishes that
    // batch under its old snapshot; has_more then still says that later
    // commits are waiting (change_feed.cc), so this reaches the end.
    if (!resp->has_more()) break;
  }
  return out;
}

std::string DebugFeed(TestDatabase& db, const std::string& cursor_text,
                      const std::set<std::string>& neither, const std::set<std::string>& applied,
                      const std::set<std::string>& ahead) {
  std::string out;
  absl::StatusOr<Cursor> c = DecodeCursor(cursor_text);
  if (c.ok()) {
    absl::StrAppend(&out, "cursor delivered=", c->delivered, " upper=", c->batch_upper,
                    " after=", c->batch_after_position, "\n");
  }
  auto rows = [&](const std::set<std::string>& ids, const char* name) {
    if (ids.empty()) return;
    absl::StrAppend(&out, name, ": ",
                    db.QueryValue(absl::StrCat(
                                      "SELECT string_agg(position || '@' || txid, ' ' ORDER BY "
                                      "position) FROM pulsesync.change_log WHERE revision_id IN ('",
                                      absl::StrJoin(ids, "','"), "')"))
                        .value_or("?"),
                    "\n");
  };
  rows(neither, "neither");
  rows(applied, "applied");
  rows(ahead, "ahead");
  absl::StrAppend(&out, "all: ",
                  db.QueryValue("SELECT string_agg(position || '@' || txid || ':' || "
                                "coalesce(origin_id, ''), ' ' ORDER BY position) FROM "
                                "pulsesync.change_log")
                      .value_or("?"));
  return out;
}

TEST_F(ClientFaultsE2eTest, SigkilledMidPushAndMidPullTheDatabaseStaysConsistent) {
  const std::string path = dir_ + "/crash.db";
  ASSERT_OK_AND_ASSIGN(auto other, TestClient::Open(dir_ + "/other.db", server_->address()));
  const std::string other_origin = other->store()->origin_id();
  std::unique_ptr<GrpcTransport> probe = GrpcTransport::Create(server_->address());
  auto run_helper = [&](std::vector<std::string> args) -> absl::StatusOr<int> {
    args.insert(args.begin(), testing::FaultClientPath());
    testing::Subprocess::Options so;
    so.argv = args;
    so.output_path = dir_ + "/fault_client.log";
    absl::StatusOr<std::unique_ptr<testing::Subprocess>> p = testing::Subprocess::Start(so);
    if (!p.ok()) return p.status();
    return (*p)->Wait(absl::Seconds(60));
  };
  auto write = [&](int count) {
    absl::StatusOr<int> code =
        run_helper({"write", "--db=" + path, "--team=" + team_, absl::StrCat("--count=", count),
                    "--update_every=4"});
    ASSERT_OK(code.status());
    ASSERT_EQ(*code, 0);
  };
  write(40);

  const uint64_t first = static_cast<uint64_t>(EnvInt("PULSESYNC_CLIENT_CRASH_SEED", 1));
  const int seeds = static_cast<int>(EnvInt("PULSESYNC_CLIENT_CRASH_SEEDS", 40));
  int killed = 0, killed_from_outside = 0;
  for (int i = 0; i < seeds; ++i) {
    const uint64_t seed = first + static_cast<uint64_t>(i);
    SCOPED_TRACE(absl::StrCat("seed ", seed, " (rerun: PULSESYNC_CLIENT_CRASH_SEED=", seed,
                              " PULSESYNC_CLIENT_CRASH_SEEDS=1)"));
    std::mt19937_64 rng(seed);
    // More to push and more to pull each round.
    write(5 + static_cast<int>(rng() % 20));
    for (int k = 0; k < 8; ++k) {
      ASSERT_OK(other->CreateTask(team_, absl::StrCat("other ", seed, ".", k)).status());
    }
    ASSERT_OK(other->PushAll(absl::Seconds(20)));

    // Calls are numbered across push and pull (batches and pages of 6); the
    // kill comes before the chosen call or right after its answer; one run
    // in four is killed from outside at a random moment instead.
    std::vector<std::string> args = {"sync", "--db=" + path, "--server=" + server_->address(),
                                     "--batch=6", "--page=6"};
    absl::StatusOr<int> code;
    if (rng() % 4 == 0) {
      args.insert(args.begin(), testing::FaultClientPath());
      testing::Subprocess::Options so;
      so.argv = args;
      so.output_path = dir_ + "/fault_client.log";
      ASSERT_OK_AND_ASSIGN(auto p, testing::Subprocess::Start(so));
      // The fault's timing is the point here: a random moment of the run.
      absl::SleepFor(absl::Milliseconds(static_cast<int64_t>(rng() % 120)));
      (void)p->Signal(SIGKILL);
      code = p->Wait(absl::Seconds(60));
      ++killed_from_outside;
    } else {
      args.push_back(absl::StrCat("--crash_call=", 1 + rng() % 12));
      args.push_back(rng() % 2 == 0 ? "--crash_when=before" : "--crash_when=after");
      code = run_helper(args);
    }
    ASSERT_OK(code.status());
    ASSERT_TRUE(*code == 0 || *code == 128 + SIGKILL) << "exit " << *code;
    if (*code != 0) ++killed;

    // The file, as the killed process left it.
    SqliteFile f(path);
    EXPECT_EQ(f.Text("PRAGMA integrity_check"), "ok");
    // Every row has its revision.
    EXPECT_EQ(f.Text("SELECT count(*) FROM tasks t WHERE NOT EXISTS "
                     "(SELECT 1 FROM revisions r WHERE r.object_id = t.id)"),
              "0");
    // Own revisions: seq 1..next_seq-1, each once.
    EXPECT_EQ(f.Text("SELECT count(DISTINCT seq) || '/' || count(*) || '/' || max(seq) FROM "
                     "revisions WHERE seq > 0"),
              f.Text("SELECT (next_seq - 1) || '/' || (next_seq - 1) || '/' || (next_seq - 1) "
                     "FROM sync_state"));
    // The cursor matches the changes applied: each of the other client's
    // revisions is either applied here or still ahead of the cursor,
    // never both, never neither.
    const std::set<std::string> applied = f.Column(absl::StrCat(
        "SELECT id FROM revisions WHERE outcome = 'remote' AND origin_id = '", other_origin, "'"));
    const std::set<std::string> ahead =
        RevisionsAfter(*probe, f.Text("SELECT cursor FROM sync_state"), other_origin);
    const std::set<std::string> all = RevisionsAfter(*probe, "", other_origin);
    std::set<std::string> both, neither;
    for (const std::string& r : all) {
      if (applied.count(r) > 0 && ahead.count(r) > 0) both.insert(r);
      if (applied.count(r) == 0 && ahead.count(r) == 0) neither.insert(r);
    }
    EXPECT_TRUE(both.empty()) << both.size() << " change(s) applied and still ahead of the cursor";
    EXPECT_TRUE(neither.empty()) << neither.size() << " change(s) behind the cursor but not applied"
                                 << " (of " << all.size() << "; " << applied.size()
                                 << " applied, " << ahead.size() << " ahead), e.g. "
                                 << (neither.empty() ? "" : *neither.begin()) << "; run: "
                                 << absl::StrJoin(args, " ") << " exit " << *code << "\n"
                                 << DebugFeed(*db_, f.Text("SELECT cursor FROM sync_state"),
                                              neither, applied, ahead);
    // What the client marked acknowledged is in PostgreSQL.
    std::set<std::string> acked = f.Column(
        "SELECT id FROM revisions WHERE seq > 0 AND outcome IN ('applied', 'duplicate')");
    EXPECT_OK(testing::CheckAcknowledgedExactlyOnce(
        *db_, std::vector<std::string>(acked.begin(), acked.end())));
    if (HasFailure()) return;
  }

  // A last sync, not killed, completes; nothing lost, nothing doubled.
  ASSERT_OK_AND_ASSIGN(int code,
                       run_helper({"sync", "--db=" + path, "--server=" + server_->address()}));
  ASSERT_EQ(code, 0);
  ASSERT_OK_AND_ASSIGN(auto client, TestClient::Open(path, server_->address()));
  EXPECT_EQ(client->Pending(), 0);
  ASSERT_OK(other->SyncAll(absl::Seconds(20)));
  EXPECT_EQ(testing::DiffTasks(ServerTasks(), client->Tasks(team_)), "");
  EXPECT_EQ(testing::DiffTasks(ServerTasks(), other->Tasks(team_)), "");
  const std::vector<std::string> acked = client->AckedRevisionIds();
  EXPECT_OK(testing::CheckAcknowledgedExactlyOnce(*db_, acked));
  EXPECT_EQ(*db_->QueryValue(absl::StrCat("SELECT count(*) FROM pulsesync.applied_revisions "
                                          "WHERE origin_id = '",
                                          client->store()->origin_id(), "'")),
            std::to_string(acked.size()));
  SqliteFile f(path);
  EXPECT_EQ(f.Text("SELECT count(*) FROM revisions WHERE seq > 0"), std::to_string(acked.size()));
  EXPECT_GT(killed, seeds / 2) << "most runs should have been killed";
  std::printf("client killed in %d of %d sync runs (%d from outside at random moments)\n", killed,
              seeds, killed_from_outside);
}

// --- Disk full ---

TEST_F(ClientFaultsE2eTest, AFullDatabaseRefusesWritesClearlyAndSyncResumesWithSpace) {
  const std::string path = dir_ + "/full.db";
  TestClientOptions limited;
  limited.store.max_size_bytes = 256 * 1024;
  ASSERT_OK_AND_ASSIGN(auto client, TestClient::Open(path, server_->address(), limited));
  for (int i = 0; i < 5; ++i) ASSERT_OK(client->CreateTask(team_, absl::StrCat("t", i)).status());
  ASSERT_OK(client->SyncAll(absl::Seconds(20)));

  // Fill it up.
  const std::string padding(500, 'x');
  int written = 5;
  absl::Status full;
  for (int i = 0; i < 5000 && full.ok(); ++i) {
    absl::StatusOr<std::string> id = client->CreateTask(team_, absl::StrCat("f", i, padding));
    if (id.ok()) {
      ++written;
    } else {
      full = id.status();
    }
  }
  ASSERT_EQ(full.code(), absl::StatusCode::kResourceExhausted) << full;
  EXPECT_THAT(std::string(full.message()), HasSubstr("the local database is full"));
  const int64_t pending = client->Pending();
  EXPECT_EQ(pending, written - 5);

  // Another client's writes need room to be pulled: a pull fails the same
  // clear way (or fits), and never half-applies a page.
  ASSERT_OK_AND_ASSIGN(auto other, TestClient::Open(dir_ + "/other.db", server_->address()));
  for (int i = 0; i < 30; ++i) {
    ASSERT_OK(other->CreateTask(team_, absl::StrCat("o", i, padding)).status());
  }
  ASSERT_OK(other->PushAll(absl::Seconds(20)));
  absl::StatusOr<SyncSummary> synced = client->engine()->Sync();
  if (!synced.ok()) {
    EXPECT_EQ(synced.status().code(), absl::StatusCode::kResourceExhausted) << synced.status();
  }
  EXPECT_EQ(client->Tasks(team_).size() >= static_cast<size_t>(written), true);
  {
    SqliteFile f(path);
    EXPECT_EQ(f.Text("PRAGMA integrity_check"), "ok");
    EXPECT_EQ(f.Text("SELECT count(*) FROM tasks t WHERE NOT EXISTS "
                     "(SELECT 1 FROM revisions r WHERE r.object_id = t.id)"),
              "0");
  }

  // Space comes back: the same file, no limit; sync completes.
  client.reset();
  ASSERT_OK_AND_ASSIGN(client, TestClient::Open(path, server_->address()));
  ASSERT_OK(client->CreateTask(team_, "after").status());
  ASSERT_OK(client->SyncAll(absl::Seconds(30)));
  EXPECT_EQ(testing::DiffTasks(ServerTasks(), client->Tasks(team_)), "");
  EXPECT_EQ(ServerTasks().size(), static_cast<size_t>(written + 30 + 1));
  EXPECT_OK(testing::CheckAcknowledgedExactlyOnce(*db_, client->AckedRevisionIds()));
  std::printf("database full after %d local writes: %s\n", written, std::string(full.message()).c_str());
}

}  // namespace
}  // namespace pulsesync

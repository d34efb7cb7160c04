// Randomized convergence (docs/CONFLICTS.md): several clients with their own
// SQLite databases and skewed clocks edit a shared set of tasks, go offline
// and online, push and pull in random orders, resolve conflicts, while the
// server is killed or restarted at random points. After a final sync every
// client's tasks equal PostgreSQL's field for field, every conflict record
// reached every client, and no write the server acknowledged was lost: each
// field it set holds its value or a later write's, which the log shows.
//
// Seeded and sequential (one client acts at a time, the server answers in
// that order), so a seed reruns exactly:
//   PULSESYNC_CONVERGENCE_SEED=1234        that seed only
//   PULSESYNC_CONVERGENCE_SEEDS=5000       how many seeds (CI: the default)
//   PULSESYNC_CONVERGENCE_STEPS=60         actions per seed
#include <sqlite3.h>

#include <cstdlib>
#include <map>
#include <memory>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "client/core/sync_engine.h"
#include "client/store/local_store.h"
#include "client/transport/grpc_transport.h"
#include "common/clock.h"
#include "common/json.h"
#include "gtest/gtest.h"
#include "server/core/revision_applier.h"
#include "tests/testing/status_matchers.h"
#include "tests/testing/subprocess.h"
#include "tests/testing/test_database.h"

namespace pulsesync {
namespace {

using ::pulsesync::testing::ServerProcess;
using ::pulsesync::testing::TestDatabase;

constexpr int kClients = 4;
constexpr int kObjects = 5;
constexpr int64_t kStartMs = 1'800'000'000'000;
// Compared between every client and PostgreSQL.
const char* const kColumns[] = {"id",     "title",    "description", "status",
                                "priority", "deleted", "recovered",   "version"};
// The fields clients edit.
const char* const kFields[] = {"title", "description", "status", "priority"};

int64_t EnvInt(const char* name, int64_t fallback) {
  const char* v = std::getenv(name);
  return v != nullptr && *v != '\0' ? std::strtoll(v, nullptr, 10) : fallback;
}

class FakeClock final : public WallClock {
 public:
  explicit FakeClock(int64_t ms) : ms_(ms) {}
  int64_t NowMs() const override { return ms_; }
  void Set(int64_t ms) { ms_ = ms; }

 private:
  int64_t ms_;
};

// A deterministic UUID for object `i` of `seed`.
std::string ObjectId(uint64_t seed, int i) {
  return absl::StrFormat("%08x-0000-4000-8000-%012x", static_cast<uint32_t>(i),
                         seed & 0xffffffffffffULL);
}

struct Client {
  std::string name;
  std::string user_id;
  std::unique_ptr<FakeClock> clock;
  int64_t skew_ms = 0;
  std::unique_ptr<LocalStore> store;
  std::unique_ptr<GrpcTransport> transport;
  std::unique_ptr<SyncEngine> engine;
  bool online = true;
  std::string db_path;
};

class ConvergenceE2eTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    if (std::getenv("PULSESYNC_TEST_DATABASE_URL") == nullptr) return;
    absl::StatusOr<std::unique_ptr<TestDatabase>> db = TestDatabase::Create();
    ASSERT_OK(db.status());
    db_ = db->release();
    dir_ = new std::string(testing::MakeTempDir("convergence"));
    server_ = new ServerProcess(db_->url(), *dir_ + "/pulsesyncd.log");
    ASSERT_OK(server_->Start());
  }
  static void TearDownTestSuite() {
    delete server_;
    delete db_;
    delete dir_;
    server_ = nullptr;
    db_ = nullptr;
  }
  void SetUp() override { PS_REQUIRE_POSTGRES(); }

  // Runs one seed; returns false (after recording failures) if it diverged.
  void RunSeed(uint64_t seed, int steps);
  // Acknowledged fields and deletes the no-lost-write check looked at.
  int64_t checked_ = 0;

  static TestDatabase* db_;
  static ServerProcess* server_;
  static std::string* dir_;
};

TestDatabase* ConvergenceE2eTest::db_ = nullptr;
ServerProcess* ConvergenceE2eTest::server_ = nullptr;
std::string* ConvergenceE2eTest::dir_ = nullptr;

std::string Query(TestDatabase& db, const std::string& sql) {
  absl::StatusOr<std::string> v = db.QueryValue(sql);
  EXPECT_OK(v) << sql;
  return v.ok() ? *v : "";
}

// Rows of a JSON-lines query result keyed by "id".
std::map<std::string, JsonValue> RowsById(const std::string& lines) {
  std::map<std::string, JsonValue> rows;
  for (absl::string_view line : absl::StrSplit(lines, '\n', absl::SkipEmpty())) {
    absl::StatusOr<JsonValue> row = ParseJson(line);
    EXPECT_OK(row) << line;
    if (row.ok()) rows[row->Find("id")->text()] = *std::move(row);
  }
  return rows;
}

JsonValue Field(const JsonValue& row, const char* name) {
  const JsonValue* v = row.Find(name);
  return v == nullptr ? JsonValue() : *v;
}

// A client's acknowledged revisions of tasks, read from its SQLite file.
struct AckedRevision {
  std::string id, object_id, op, payload, origin_id;
  int64_t hlc_ms = 0, hlc_counter = 0;
};

std::vector<AckedRevision> AckedRevisions(const std::string& path) {
  std::vector<AckedRevision> out;
  sqlite3* db = nullptr;
  if (sqlite3_open_v2(path.c_str(), &db, SQLITE_OPEN_READONLY, nullptr) != SQLITE_OK) {
    ADD_FAILURE() << "cannot open " << path;
    sqlite3_close(db);
    return out;
  }
  sqlite3_stmt* st = nullptr;
  sqlite3_prepare_v2(db,
                     "SELECT id, object_id, op, payload, origin_id, hlc_ms, hlc_counter "
                     "FROM revisions WHERE seq > 0 AND object_type = 'task' "
                     "AND outcome IN ('applied', 'duplicate')",
                     -1, &st, nullptr);
  auto text = [&](int i) {
    const unsigned char* t = sqlite3_column_text(st, i);
    return t == nullptr ? std::string() : std::string(reinterpret_cast<const char*>(t));
  };
  while (sqlite3_step(st) == SQLITE_ROW) {
    out.push_back(AckedRevision{text(0), text(1), text(2), text(3), text(4),
                                sqlite3_column_int64(st, 5), sqlite3_column_int64(st, 6)});
  }
  sqlite3_finalize(st);
  sqlite3_close(db);
  return out;
}

void ConvergenceE2eTest::RunSeed(uint64_t seed, int steps) {
  SCOPED_TRACE(absl::StrCat("seed ", seed, " (rerun: PULSESYNC_CONVERGENCE_SEED=", seed, ")"));
  std::mt19937_64 rng(seed);
  auto pick = [&](uint64_t n) { return static_cast<int>(rng() % n); };
  auto chance = [&](int percent) { return pick(100) < percent; };

  // A team of two users with two devices each (dev-mode identities: the
  // server scopes and applies Row Level Security as for these users).
  const std::string team = ObjectId(seed, 900);
  const std::string users[2] = {ObjectId(seed, 901), ObjectId(seed, 902)};
  ASSERT_OK(db_->Execute(absl::StrCat(
      "INSERT INTO teams (id, name) VALUES ('", team, "', 'seed ", seed, "');",
      "INSERT INTO users (id) VALUES ('", users[0], "'), ('", users[1], "');",
      "INSERT INTO team_members (id, team_id, user_id) VALUES ('", ObjectId(seed, 903), "', '",
      team, "', '", users[0], "'), ('", ObjectId(seed, 904), "', '", team, "', '", users[1],
      "');")));

  std::vector<Client> clients(kClients);
  for (int c = 0; c < kClients; ++c) {
    Client& cl = clients[c];
    cl.name = absl::StrCat("c", c);
    cl.user_id = users[c % 2];
    // Clock skews: one device an hour ahead, one half an hour behind.
    cl.skew_ms = c == 1 ? 3'600'000 : c == 2 ? -1'800'000 : pick(2000);
    cl.clock = std::make_unique<FakeClock>(kStartMs + cl.skew_ms);
    cl.db_path = absl::StrCat(*dir_, "/", seed, "-", cl.name, ".db");
    LocalStoreOptions options;
    options.clock = cl.clock.get();
    options.origin_id = absl::StrCat("s", seed, "-", cl.name);
    ASSERT_OK_AND_ASSIGN(cl.store, LocalStore::Open(cl.db_path, options));
    GrpcTransportOptions topts;
    topts.user_id = cl.user_id;
    topts.deadline = absl::Seconds(20);
    topts.wait_for_ready = true;  // across the server's restarts
    cl.transport = GrpcTransport::Create(server_->address(), topts);
    SyncEngineOptions eopts;
    eopts.pull_initial_sync = InitialSync::kSnapshot;
    eopts.push_batch_size = 1 + pick(8);  // small batches: more interleavings
    cl.engine = std::make_unique<SyncEngine>(cl.store.get(), cl.transport.get(), eopts);
  }

  int64_t now = kStartMs;
  int restarts = 0;
  for (int step = 0; step < steps; ++step) {
    now += 1 + pick(30);
    for (Client& cl : clients) cl.clock->Set(now + cl.skew_ms);
    Client& cl = clients[pick(kClients)];
    const int action = pick(100);
    if (action < 12) {  // create one of the shared objects
      JsonValue f = JsonValue::Object();
      f.Set("id", JsonValue::String(ObjectId(seed, pick(kObjects))));
      f.Set("team_id", JsonValue::String(team));
      f.Set("title", JsonValue::String(absl::StrCat("t", pick(1000))));
      f.Set("priority", JsonValue::Number(pick(5)));
      absl::StatusOr<std::string> id = cl.store->Create("task", f);
      if (!id.ok()) {
        ASSERT_TRUE(absl::IsAlreadyExists(id.status())) << id.status();
      }
    } else if (action < 40) {  // update some fields of a live local task
      absl::StatusOr<std::vector<JsonValue>> rows = cl.store->List("task");
      ASSERT_OK(rows.status());
      if (rows->empty()) continue;
      const JsonValue& row = (*rows)[pick(rows->size())];
      JsonValue f = JsonValue::Object();
      for (const char* name : kFields) {
        if (!chance(40)) continue;
        const std::string n = name;
        if (n == "priority") {
          f.Set(n, JsonValue::Number(pick(5)));
        } else if (n == "status") {
          const char* statuses[] = {"todo", "doing", "done"};
          f.Set(n, JsonValue::String(statuses[pick(3)]));
        } else {
          f.Set(n, JsonValue::String(absl::StrCat(n.substr(0, 1), pick(1000))));
        }
      }
      if (f.members().empty()) f.Set("title", JsonValue::String(absl::StrCat("t", pick(1000))));
      ASSERT_OK(cl.store->Update("task", row.Find("id")->text(), f));
    } else if (action < 48) {  // delete
      absl::StatusOr<std::vector<JsonValue>> rows = cl.store->List("task");
      ASSERT_OK(rows.status());
      if (rows->empty()) continue;
      ASSERT_OK(cl.store->Delete("task", (*rows)[pick(rows->size())].Find("id")->text()));
    } else if (action < 68) {  // push
      if (cl.online) (void)cl.engine->Push();  // errors: the server is down; stays pending
    } else if (action < 88) {  // pull
      if (cl.online) (void)cl.engine->Pull();
    } else if (action < 94) {  // go offline or online
      cl.online = !cl.online;
    } else if (action < 97) {  // resolve a conflict this client sees
      absl::StatusOr<std::vector<Conflict>> open = cl.store->ListConflicts();
      ASSERT_OK(open.status());
      if (open->empty()) continue;
      const Conflict& c = (*open)[pick(open->size())];
      const absl::Status st = cl.store->ResolveConflict(
          c.id, chance(50) ? ConflictChoice::kKeepMine : ConflictChoice::kKeepTheirs);
      // kKeepMine of an object this client no longer holds is refused.
      if (!st.ok()) {
        ASSERT_TRUE(absl::IsFailedPrecondition(st) || absl::IsNotFound(st)) << st;
      }
    } else if (restarts < 2) {  // the server crashes or restarts
      ++restarts;
      if (chance(50)) {
        server_->Kill();
      } else {
        ASSERT_OK(server_->Stop().status());
      }
      ASSERT_OK(server_->Start());
    }
  }

  // Final sync: everyone online; everything pushed, then everything pulled.
  // A call on a connection the restarted server closed fails UNAVAILABLE
  // once; a client retries that, as the Subscriber does.
  auto retrying = [](auto call) {
    auto result = call();
    for (int attempt = 0; attempt < 5 && absl::IsUnavailable(result.status()); ++attempt) {
      result = call();
    }
    return result;
  };
  for (int round = 0; round < 2; ++round) {
    for (Client& cl : clients) {
      cl.online = true;
      absl::StatusOr<PushSummary> pushed = retrying([&] { return cl.engine->Push(); });
      ASSERT_OK(pushed.status()) << cl.name;
      EXPECT_EQ(pushed->rejected, 0) << cl.name << ": "
                                     << (pushed->rejections.empty()
                                             ? ""
                                             : pushed->rejections[0].reason);
    }
    for (Client& cl : clients) {
      ASSERT_OK(retrying([&] { return cl.engine->Pull(); }).status()) << cl.name;
    }
  }

  // 1. Every client holds PostgreSQL's tasks, field for field.
  const std::map<std::string, JsonValue> server_rows = RowsById(Query(
      *db_, absl::StrCat("SELECT coalesce(string_agg(to_jsonb(t)::text, E'\\n'), '') FROM tasks t "
                         "WHERE team_id = '",
                         team, "'")));
  for (Client& cl : clients) {
    absl::StatusOr<std::vector<JsonValue>> rows = cl.store->List("task", ReadOptions{true});
    ASSERT_OK(rows.status());
    std::map<std::string, JsonValue> local;
    for (const JsonValue& r : *rows) local[r.Find("id")->text()] = r;
    ASSERT_OK_AND_ASSIGN(SyncState state, cl.store->GetSyncState());
    EXPECT_EQ(state.pending_revisions, 0) << cl.name;
    for (const auto& [id, row] : local) {
      EXPECT_TRUE(server_rows.count(id) > 0) << cl.name << " has task " << id
                                             << " that the server lacks";
    }
    for (const auto& [id, srow] : server_rows) {
      auto it = local.find(id);
      if (it == local.end()) {
        // A client may never have seen a task deleted before its first
        // snapshot (snapshots leave tombstones out); a live one it must hold.
        EXPECT_TRUE(Field(srow, "deleted").bool_value()) << cl.name << " lacks task " << id;
        continue;
      }
      for (const char* col : kColumns) {
        EXPECT_EQ(Field(it->second, col).Serialize(), Field(srow, col).Serialize())
            << cl.name << " task " << id << " column " << col
            << "\n local:  " << it->second.Serialize() << "\n server: " << srow.Serialize();
      }
    }
  }

  // 2. Every conflict record reached every client, resolved or not as in
  // PostgreSQL.
  const std::string server_conflicts = Query(
      *db_, absl::StrCat("SELECT coalesce(string_agg(id || ':' || resolved, ',' ORDER BY id), '') "
                         "FROM pulsesync.conflicts WHERE team_id = '",
                         team, "'"));
  for (Client& cl : clients) {
    ASSERT_OK_AND_ASSIGN(std::vector<Conflict> all, cl.store->ListConflicts(true));
    std::set<std::string> ids;
    for (const Conflict& c : all) ids.insert(absl::StrCat(c.id, ":", c.resolved ? "true" : "false"));
    std::vector<std::string> sorted(ids.begin(), ids.end());
    EXPECT_EQ(absl::StrJoin(sorted, ","), server_conflicts) << cl.name;
  }

  // 3. No acknowledged write is lost: each field an applied revision set
  // holds its value, or a later clock whose write the change log has.
  const std::map<std::string, JsonValue> clocks = RowsById(Query(
      *db_, absl::StrCat("SELECT coalesce(string_agg(jsonb_build_object('id', id, 'clocks', "
                         "field_clocks, 'deleted_hlc', deleted_hlc)::text, E'\\n'), '') "
                         "FROM tasks WHERE team_id = '",
                         team, "'")));
  const std::string logged = Query(
      *db_, absl::StrCat("SELECT coalesce(string_agg(object_id || '@' || version, ','), '') "
                         "FROM pulsesync.change_log WHERE team_id = '",
                         team, "'"));
  const std::set<std::string> log_versions = [&] {
    std::set<std::string> s;
    for (absl::string_view v : absl::StrSplit(logged, ',', absl::SkipEmpty())) s.emplace(v);
    return s;
  }();
  for (Client& cl : clients) {
    for (const AckedRevision& r : AckedRevisions(cl.db_path)) {
      const std::string hlc = HlcText(r.hlc_ms, static_cast<uint32_t>(r.hlc_counter), r.origin_id);
      auto srow = server_rows.find(r.object_id);
      auto crow = clocks.find(r.object_id);
      if (srow == server_rows.end() || crow == clocks.end()) {
        ADD_FAILURE() << "acknowledged revision " << r.id << " of a task the server lacks";
        continue;
      }
      if (r.op == "delete") {
        const JsonValue d = Field(crow->second, "deleted_hlc");
        EXPECT_TRUE(d.is_string() && d.text() >= hlc) << "delete " << r.id << " lost";
        ++checked_;
        continue;
      }
      absl::StatusOr<JsonValue> payload = ParseJson(r.payload);
      ASSERT_OK(payload.status());
      const JsonValue* fc = crow->second.Find("clocks");
      for (const char* name : kFields) {
        const JsonValue* value = payload->Find(name);
        if (value == nullptr) continue;
        const JsonValue* entry = fc != nullptr ? fc->Find(name) : nullptr;
        ASSERT_TRUE(entry != nullptr && entry->type() == JsonValue::Type::kArray && entry->items().size() == 2)
            << "no clock for " << name << " of " << r.object_id;
        const std::string field_hlc = entry->items()[1].text();
        ++checked_;
        if (field_hlc == hlc) {
          EXPECT_EQ(Field(srow->second, name).Serialize(), value->Serialize())
              << "revision " << r.id << " field " << name << " holds another value";
        } else {
          EXPECT_GT(field_hlc, hlc) << "revision " << r.id << " field " << name
                                    << " was overwritten by an older clock";
          EXPECT_TRUE(log_versions.count(absl::StrCat(r.object_id, "@",
                                                      entry->items()[0].Serialize())) > 0)
              << "the write that superseded revision " << r.id << " is not in the log";
        }
      }
    }
  }
  for (Client& cl : clients) {
    cl.engine.reset();
    cl.transport.reset();
    cl.store.reset();
    std::remove(cl.db_path.c_str());
    std::remove((cl.db_path + "-wal").c_str());
    std::remove((cl.db_path + "-shm").c_str());
  }
}

TEST_F(ConvergenceE2eTest, RandomEditsConvergeEverywhere) {
  const int steps = static_cast<int>(EnvInt("PULSESYNC_CONVERGENCE_STEPS", 30));
  if (const int64_t one = EnvInt("PULSESYNC_CONVERGENCE_SEED", -1); one >= 0) {
    RunSeed(static_cast<uint64_t>(one), steps);
    EXPECT_GT(checked_, 0) << "no acknowledged write was checked: the check proved nothing";
    return;
  }
  const int64_t seeds = EnvInt("PULSESYNC_CONVERGENCE_SEEDS", 300);
  const uint64_t base = static_cast<uint64_t>(EnvInt("PULSESYNC_CONVERGENCE_BASE_SEED", 1));
  for (int64_t i = 0; i < seeds; ++i) {
    RunSeed(base + static_cast<uint64_t>(i), steps);
    if (HasFailure()) {
      ADD_FAILURE() << "diverged at seed " << base + i
                    << "; rerun it alone with PULSESYNC_CONVERGENCE_SEED=" << base + i;
      return;
    }
  }
  EXPECT_GT(checked_, 0) << "no acknowledged write was checked: the check proved nothing";
  std::printf("converged: %lld seeds of %d steps; %lld acknowledged writes checked\n",
              static_cast<long long>(seeds), steps, static_cast<long long>(checked_));
}

}  // namespace
}  // namespace pulsesync

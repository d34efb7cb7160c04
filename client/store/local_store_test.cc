#include "client/store/local_store.h"

#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <random>
#include <string>

#include "absl/strings/match.h"
#include "absl/strings/str_replace.h"
#include "absl/time/time.h"
#include "client/store/payload_crypto.h"
#include "client/store/sqlite.h"
#include "common/uuid.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace pulsesync {
namespace {

class FakeClock : public WallClock {
 public:
  int64_t NowMs() const override { return ms_.load(); }
  void Set(int64_t ms) { ms_.store(ms); }

 private:
  std::atomic<int64_t> ms_{1'700'000'000'000};
};

JsonValue Json(const std::string& text) {
  absl::StatusOr<JsonValue> v = ParseJson(text);
  EXPECT_TRUE(v.ok()) << v.status() << " in " << text;
  return v.ok() ? *v : JsonValue();
}

class LocalStoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    static int counter = 0;
    path_ = ::testing::TempDir() + "/local_store_test_" + std::to_string(getpid()) + "_" +
            std::to_string(counter++) + ".db";
    RemoveFiles();
    Reopen();
  }
  void TearDown() override {
    store_.reset();
    RemoveFiles();
  }
  void RemoveFiles() {
    for (const char* suffix : {"", "-wal", "-shm"}) std::remove((path_ + suffix).c_str());
  }
  void Reopen() {
    store_.reset();
    LocalStoreOptions options;
    options.clock = &clock_;
    options.keyring = keyring_;
    options.reencrypt_on_open = reencrypt_on_open_;
    absl::StatusOr<std::unique_ptr<LocalStore>> store = LocalStore::Open(path_, options);
    ASSERT_TRUE(store.ok()) << store.status();
    store_ = *std::move(store);
  }
  // A second raw connection, for fault injection and inspection.
  sqlite::SqliteDb Raw() {
    absl::StatusOr<sqlite::SqliteDb> db = sqlite::SqliteDb::Open(path_, false);
    EXPECT_TRUE(db.ok());
    EXPECT_TRUE(db->Exec("PRAGMA busy_timeout = 1000").ok());
    return *std::move(db);
  }
  int64_t CountRows(const std::string& sql) {
    sqlite::SqliteDb db = Raw();
    absl::StatusOr<sqlite::Statement> st = db.Prepare(sql);
    EXPECT_TRUE(st.ok()) << st.status();
    absl::StatusOr<bool> row = st->Step();
    EXPECT_TRUE(row.ok() && *row);
    return st->ColumnInt64(0);
  }
  std::string CreateTeam(const std::string& name) {
    absl::StatusOr<std::string> id = store_->Create("team", Json("{\"name\":\"" + name + "\"}"));
    EXPECT_TRUE(id.ok()) << id.status();
    return id.value_or("");
  }
  JsonValue MustGet(const std::string& type, const std::string& id) {
    absl::StatusOr<std::optional<JsonValue>> row =
        store_->Get(type, id, ReadOptions{/*include_deleted=*/true});
    EXPECT_TRUE(row.ok()) << row.status();
    EXPECT_TRUE(row.ok() && row->has_value()) << type << " " << id << " missing";
    return row.ok() && row->has_value() ? **row : JsonValue();
  }
  static RemoteChange TeamChange(const std::string& id, int64_t version, const std::string& name,
                                 const std::string& revision_id = "") {
    RemoteChange c;
    c.object_type = "team";
    c.table = "teams";
    c.event = ChangeEvent::kUpdate;
    c.object_id = id;
    c.version = version;
    c.new_record =
        "{\"id\":\"" + id + "\",\"name\":\"" + name +
        "\",\"created_at\":\"2024-01-01T00:00:00+00:00\",\"version\":" + std::to_string(version) +
        ",\"updated_at\":\"2024-01-02T00:00:00+00:00\",\"deleted\":false,"
        "\"recovered\":false,\"last_origin_id\":\"other\",\"last_revision_id\":null,"
        "\"hlc\":\"001700000000000-0000000000-other\"}";
    c.origin_id = "other";
    c.revision_id = revision_id;
    return c;
  }

  // Raw revisions.payload of one revision.
  std::string RawPayload(const std::string& revision_id) {
    sqlite::SqliteDb db = Raw();
    absl::StatusOr<sqlite::Statement> st = db.Prepare("SELECT payload FROM revisions WHERE id = ?");
    EXPECT_TRUE(st.ok() && st->BindText(1, revision_id).ok());
    absl::StatusOr<bool> row = st->Step();
    EXPECT_TRUE(row.ok() && *row) << revision_id;
    return row.ok() && *row ? st->ColumnText(0) : "";
  }
  void SetRawPayload(const std::string& revision_id, const std::string& payload) {
    sqlite::SqliteDb db = Raw();
    absl::StatusOr<sqlite::Statement> st =
        db.Prepare("UPDATE revisions SET payload = ? WHERE id = ?");
    ASSERT_TRUE(st.ok());
    ASSERT_TRUE(st->BindText(1, payload).ok());
    ASSERT_TRUE(st->BindText(2, revision_id).ok());
    ASSERT_TRUE(st->Run().ok());
  }
  std::vector<std::string> AllRawPayloads() {
    sqlite::SqliteDb db = Raw();
    absl::StatusOr<sqlite::Statement> st = db.Prepare("SELECT payload FROM revisions ORDER BY id");
    std::vector<std::string> out;
    while (st.ok() && st->Step().value_or(false)) out.push_back(st->ColumnText(0));
    return out;
  }
  static std::shared_ptr<const Keyring> Ring(
      std::vector<std::pair<std::string, char>> keys) {  // id, fill byte; the first is current
    auto ring = std::make_shared<Keyring>();
    for (const auto& [id, fill] : keys) {
      EXPECT_TRUE(
          ring->AddKey(id, *SecretKey::FromBytes(std::string(kPayloadKeyBytes, fill))).ok());
    }
    return ring;
  }

  FakeClock clock_;
  std::string path_;
  std::shared_ptr<const Keyring> keyring_;
  bool reencrypt_on_open_ = true;
  std::unique_ptr<LocalStore> store_;
};

TEST_F(LocalStoreTest, OpenCreatesAnOriginThatSurvivesReopen) {
  EXPECT_TRUE(store_->newly_created());
  EXPECT_TRUE(IsUuid(store_->origin_id()));
  const std::string origin = store_->origin_id();
  Reopen();
  EXPECT_FALSE(store_->newly_created());
  EXPECT_EQ(store_->origin_id(), origin);
}

TEST_F(LocalStoreTest, AFullDatabaseRefusesWritesClearlyAndKeepsWhatItHolds) {
  // The size limit plays a full disk: SQLite reports both as SQLITE_FULL.
  store_.reset();
  LocalStoreOptions options;
  options.clock = &clock_;
  options.max_size_bytes = 192 * 1024;
  absl::StatusOr<std::unique_ptr<LocalStore>> limited = LocalStore::Open(path_, options);
  ASSERT_TRUE(limited.ok()) << limited.status();
  store_ = *std::move(limited);
  std::vector<std::string> ids;
  absl::Status full;
  const std::string padding(400, 'x');
  for (int i = 0; i < 1000 && full.ok(); ++i) {
    absl::StatusOr<std::string> id =
        store_->Create("team", Json("{\"name\":\"team " + std::to_string(i) + padding + "\"}"));
    if (id.ok()) {
      ids.push_back(*id);
    } else {
      full = id.status();
    }
  }
  ASSERT_FALSE(full.ok()) << "the limit was never reached";
  EXPECT_EQ(full.code(), absl::StatusCode::kResourceExhausted) << full;
  EXPECT_THAT(std::string(full.message()), ::testing::HasSubstr("the local database is full"));
  ASSERT_GT(ids.size(), 10u);
  // Nothing of the failed write, everything before it; reads still work.
  EXPECT_EQ(store_->List("team")->size(), ids.size());
  EXPECT_EQ(*store_->PendingCount(), static_cast<int64_t>(ids.size()));
  // Larger than any free space left in the file's pages.
  EXPECT_EQ(store_->Update("team", ids[0], Json("{\"name\":\"" + std::string(32 * 1024, 'y') + "\"}"))
                .code(),
            absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(MustGet("team", ids[0]).Find("name")->text(), "team 0" + padding);

  // Space comes back (no limit): the same store file takes writes again.
  store_.reset();
  {
    sqlite::SqliteDb raw = Raw();
    absl::StatusOr<sqlite::Statement> check = raw.Prepare("PRAGMA integrity_check");
    ASSERT_TRUE(check.ok());
    ASSERT_TRUE(*check->Step());
    EXPECT_EQ(check->ColumnText(0), "ok");
  }
  Reopen();
  EXPECT_EQ(store_->List("team")->size(), ids.size());
  CreateTeam("after");
  EXPECT_EQ(*store_->PendingCount(), static_cast<int64_t>(ids.size()) + 1);
}

TEST_F(LocalStoreTest, OpenWithoutCreateOfMissingFileIsNotFound) {
  LocalStoreOptions options;
  options.create_if_missing = false;
  EXPECT_EQ(LocalStore::Open(path_ + ".nope", options).status().code(),
            absl::StatusCode::kNotFound);
}

TEST_F(LocalStoreTest, OpenRefusesADatabaseFromANewerClient) {
  store_.reset();
  ASSERT_TRUE(Raw().Exec("PRAGMA user_version = 99").ok());
  LocalStoreOptions options;
  options.clock = &clock_;
  EXPECT_EQ(LocalStore::Open(path_, options).status().code(),
            absl::StatusCode::kFailedPrecondition);
}

// FormatTimestamp is hand-written for speed; it must print what absl's
// general formatter prints, to the millisecond, on both sides of the epoch.
TEST(FormatTimestampTest, PrintsWhatAbslFormatTimePrints) {
  auto reference = [](int64_t ms) {
    return absl::FormatTime("%Y-%m-%dT%H:%M:%E*S+00:00", absl::FromUnixMillis(ms),
                            absl::UTCTimeZone());
  };
  std::vector<int64_t> cases = {0,           1,           10,          100,
                                999,         1000,        -1,          -1000,
                                -1001,       951782400000 /* 2000-02-29 */,
                                1709164800123 /* 2024-02-29 */,
                                4102444799999 /* 2099-12-31 23:59:59.999 */,
                                253402300799999 /* 9999-12-31 */, -62135596800000 /* 0001 */};
  std::mt19937_64 rng(7);
  for (int i = 0; i < 20000; ++i) {
    cases.push_back(static_cast<int64_t>(rng() % 253402300800000) - 62135596800000);
  }
  for (int64_t ms : cases) ASSERT_EQ(FormatTimestamp(ms), reference(ms)) << ms;
  EXPECT_EQ(FormatTimestamp(1700000000120), "2023-11-14T22:13:20.12+00:00");
}

TEST_F(LocalStoreTest, CreateWritesRowAndPendingRevisionTogether) {
  const std::string id = CreateTeam("Core");
  ASSERT_TRUE(IsUuid(id));
  JsonValue row = MustGet("team", id);
  EXPECT_EQ(row.Find("name")->text(), "Core");
  EXPECT_FALSE(row.Find("deleted")->bool_value());
  EXPECT_EQ(*row.Find("version")->AsInt64(), 0);
  EXPECT_EQ(row.Find("created_at")->text(), "2023-11-14T22:13:20+00:00");

  absl::StatusOr<std::vector<PendingRevision>> pending = store_->PendingRevisions(10);
  ASSERT_TRUE(pending.ok()) << pending.status();
  ASSERT_EQ(pending->size(), 1u);
  const PendingRevision& rev = (*pending)[0];
  EXPECT_EQ(rev.object_type, "team");
  EXPECT_EQ(rev.object_id, id);
  EXPECT_EQ(rev.origin_id, store_->origin_id());
  EXPECT_EQ(rev.seq, 1);
  EXPECT_EQ(rev.op, RevisionOp::kUpsert);
  EXPECT_EQ(rev.base_version, 0);
  EXPECT_EQ(rev.clock.physical_ms, clock_.NowMs());
  EXPECT_EQ(Json(rev.payload), Json(R"({"name":"Core","created_at":"2023-11-14T22:13:20+00:00"})"));
  EXPECT_EQ(row.Find("last_revision_id")->text(), rev.id);
}

TEST_F(LocalStoreTest, CreateAcceptsAGivenIdAndRefusesATakenOne) {
  const std::string id = NewUuid();
  absl::StatusOr<std::string> got =
      store_->Create("teams", Json(R"({"id":")" + id + R"(","name":"A"})"));
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(*got, id);
  const absl::Status taken = store_->Create("team", Json(R"({"id":")" + id + R"(","name":"B"})")).status();
  EXPECT_EQ(taken.code(), absl::StatusCode::kAlreadyExists);
  EXPECT_EQ(taken.message(), "team " + id + " already exists");
  EXPECT_EQ(MustGet("team", id).Find("name")->text(), "A");
  EXPECT_EQ(*store_->PendingCount(), 1);
  // A deleted object's id stays taken (its tombstone is the row).
  ASSERT_TRUE(store_->Delete("team", id).ok());
  EXPECT_EQ(store_->Create("team", Json(R"({"id":")" + id + R"(","name":"C"})")).status().code(),
            absl::StatusCode::kAlreadyExists);
  EXPECT_EQ(*store_->PendingCount(), 2);
}

TEST_F(LocalStoreTest, LocalWriteAndRevisionAreAtomic) {
  // Make the revisions insert fail: the row write must roll back with it.
  ASSERT_TRUE(Raw()
                  .Exec("CREATE TRIGGER fail_rev BEFORE INSERT ON revisions "
                        "BEGIN SELECT RAISE(ABORT, 'injected'); END;")
                  .ok());
  absl::StatusOr<std::string> id = store_->Create("team", Json(R"({"name":"Core"})"));
  EXPECT_FALSE(id.ok());
  EXPECT_EQ(CountRows("SELECT count(*) FROM teams"), 0);
  EXPECT_EQ(CountRows("SELECT count(*) FROM revisions"), 0);
  EXPECT_EQ(CountRows("SELECT next_seq FROM sync_state"), 1);
}

TEST_F(LocalStoreTest, ApplyWritesABatchInOrderWithConsecutiveSeqs) {
  const std::string existing = CreateTeam("before");
  int notified = 0;
  store_->SetLocalWriteListener([&] { ++notified; });
  const std::string given = NewUuid();
  absl::StatusOr<std::vector<std::string>> ids = store_->Apply({
      LocalWrite::Create("team", Json(R"({"name":"A"})")),
      LocalWrite::Create("team", Json(R"({"id":")" + given + R"(","name":"B"})")),
      LocalWrite::Update("team", given, Json(R"({"name":"B2"})")),  // sees the create before it
      LocalWrite::Delete("team", existing),
  });
  store_->SetLocalWriteListener(nullptr);
  ASSERT_TRUE(ids.ok()) << ids.status();
  ASSERT_EQ(ids->size(), 4u);
  EXPECT_TRUE(IsUuid((*ids)[0]));
  EXPECT_EQ((*ids)[1], given);
  EXPECT_EQ((*ids)[2], given);
  EXPECT_EQ((*ids)[3], existing);
  EXPECT_EQ(notified, 1);
  EXPECT_EQ(MustGet("team", (*ids)[0]).Find("name")->text(), "A");
  EXPECT_EQ(MustGet("team", given).Find("name")->text(), "B2");
  EXPECT_TRUE(MustGet("team", existing).Find("deleted")->bool_value());

  absl::StatusOr<std::vector<PendingRevision>> pending = store_->PendingRevisions(10);
  ASSERT_TRUE(pending.ok()) << pending.status();
  ASSERT_EQ(pending->size(), 5u);
  const std::vector<std::string> objects = {existing, (*ids)[0], given, given, existing};
  for (size_t i = 0; i < pending->size(); ++i) {
    EXPECT_EQ((*pending)[i].seq, static_cast<int64_t>(i + 1));
    EXPECT_EQ((*pending)[i].object_id, objects[i]) << i;
    if (i > 0) EXPECT_GT((*pending)[i].clock, (*pending)[i - 1].clock);
  }
  EXPECT_EQ((*pending)[3].op, RevisionOp::kUpsert);
  EXPECT_EQ(Json((*pending)[3].payload), Json(R"({"name":"B2"})"));
  EXPECT_EQ((*pending)[4].op, RevisionOp::kDelete);
  EXPECT_EQ(MustGet("team", given).Find("last_revision_id")->text(), (*pending)[3].id);
}

TEST_F(LocalStoreTest, ApplyWritesNothingWhenOneWriteFails) {
  const std::string team = CreateTeam("Core");
  const std::string missing = NewUuid();
  // Refused while writing (no such object): the earlier writes roll back.
  absl::StatusOr<std::vector<std::string>> ids = store_->Apply({
      LocalWrite::Create("team", Json(R"({"name":"A"})")),
      LocalWrite::Update("team", team, Json(R"({"name":"Core2"})")),
      LocalWrite::Update("team", missing, Json(R"({"name":"X"})")),
  });
  EXPECT_EQ(ids.status().code(), absl::StatusCode::kNotFound);
  EXPECT_TRUE(absl::StartsWith(ids.status().message(), "write 2: ")) << ids.status();
  // Refused before writing (a field of the wrong type), named by its index.
  ids = store_->Apply({LocalWrite::Create("team", Json(R"({"name":"A"})")),
                       LocalWrite::Create("team", Json(R"({"name":7})"))});
  EXPECT_EQ(ids.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(absl::StartsWith(ids.status().message(), "write 1: ")) << ids.status();

  EXPECT_EQ(CountRows("SELECT count(*) FROM teams"), 1);
  EXPECT_EQ(MustGet("team", team).Find("name")->text(), "Core");
  EXPECT_EQ(CountRows("SELECT count(*) FROM revisions"), 1);
  EXPECT_EQ(CountRows("SELECT next_seq FROM sync_state"), 2);
  // An empty batch writes nothing and succeeds.
  ids = store_->Apply({});
  ASSERT_TRUE(ids.ok()) << ids.status();
  EXPECT_TRUE(ids->empty());
  EXPECT_EQ(*store_->PendingCount(), 1);
}

TEST_F(LocalStoreTest, InvalidWritesAreRefusedAndWriteNothing) {
  struct Case {
    std::string type, fields, expect_in_message;
  };
  const std::string team = NewUuid();
  const std::vector<Case> cases = {
      {"widget", R"({"name":"x"})", "unknown object type \"widget\""},
      {"team", R"({"name":"x","colour":"red"})", "unknown field \"colour\""},
      {"team", R"({"name":"x","version":3})", "field \"version\" is set by the server"},
      {"team", R"({"name":"x","deleted":true})", "field \"deleted\" is set by the server"},
      {"team", R"({})", "missing required field(s) \"name\""},
      {"team", R"({"name":null})", "\"name\" of object type \"team\" cannot be null"},
      {"task", R"({"team_id":")" + team + R"(","title":"t","priority":"high"})",
       "\"priority\" of object type \"task\" expects integer"},
      {"task", R"({"team_id":"not-a-uuid","title":"t"})", "expects uuid"},
      {"team", R"(["name"])", "fields must be a JSON object"},
  };
  for (const Case& c : cases) {
    absl::StatusOr<std::string> id = store_->Create(c.type, Json(c.fields));
    ASSERT_FALSE(id.ok()) << c.fields;
    EXPECT_EQ(id.status().code(), absl::StatusCode::kInvalidArgument) << c.fields;
    EXPECT_NE(id.status().message().find(c.expect_in_message), std::string::npos)
        << id.status() << " should mention " << c.expect_in_message;
  }
  EXPECT_EQ(CountRows("SELECT count(*) FROM revisions"), 0);
  EXPECT_EQ(CountRows("SELECT count(*) FROM teams"), 0);
  EXPECT_EQ(CountRows("SELECT count(*) FROM tasks"), 0);

  const std::string id = CreateTeam("Core");
  EXPECT_EQ(store_->Update("team", id, Json(R"({"hlc":"x"})")).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(store_->Update("team", id, Json(R"({"nope":1})")).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(store_->Update("team", id, Json(R"({})")).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(*store_->PendingCount(), 1);
  EXPECT_EQ(MustGet("team", id).Find("name")->text(), "Core");
}

TEST_F(LocalStoreTest, UpdateSetsOnlyTheGivenFields) {
  const std::string team = CreateTeam("Core");
  absl::StatusOr<std::string> task = store_->Create(
      "task", Json(R"({"team_id":")" + team + R"(","title":"Write docs","priority":2})"));
  ASSERT_TRUE(task.ok()) << task.status();
  JsonValue row = MustGet("task", *task);
  EXPECT_EQ(row.Find("status")->text(), "todo");  // local default, as on the server
  ASSERT_TRUE(store_->Update("task", *task, Json(R"({"status":"done","description":null})")).ok());
  row = MustGet("task", *task);
  EXPECT_EQ(row.Find("status")->text(), "done");
  EXPECT_TRUE(row.Find("description")->is_null());
  EXPECT_EQ(row.Find("title")->text(), "Write docs");
  EXPECT_EQ(*row.Find("priority")->AsInt64(), 2);

  absl::StatusOr<std::vector<PendingRevision>> pending = store_->PendingRevisions(10);
  ASSERT_EQ(pending->size(), 3u);
  EXPECT_EQ(Json(pending->back().payload), Json(R"({"status":"done","description":null})"));
}

TEST_F(LocalStoreTest, UpdateOrDeleteOfMissingObjectIsNotFound) {
  EXPECT_EQ(store_->Update("team", NewUuid(), Json(R"({"name":"x"})")).code(),
            absl::StatusCode::kNotFound);
  EXPECT_EQ(store_->Delete("team", NewUuid()).code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(store_->Delete("team", "junk").code(), absl::StatusCode::kInvalidArgument);
}

TEST_F(LocalStoreTest, DeleteTombstonesAndReadsHideTombstones) {
  const std::string a = CreateTeam("A");
  clock_.Set(clock_.NowMs() + 1000);
  const std::string b = CreateTeam("B");
  ASSERT_TRUE(store_->Delete("team", a).ok());
  ASSERT_TRUE(store_->Delete("team", a).ok());  // idempotent, no second revision

  EXPECT_FALSE(store_->Get("team", a)->has_value());
  EXPECT_TRUE(MustGet("team", a).Find("deleted")->bool_value());
  absl::StatusOr<std::vector<JsonValue>> live = store_->List("team");
  ASSERT_EQ(live->size(), 1u);
  EXPECT_EQ((*live)[0].Find("id")->text(), b);
  absl::StatusOr<std::vector<JsonValue>> all = store_->List("team", ReadOptions{true});
  ASSERT_EQ(all->size(), 2u);
  EXPECT_EQ((*all)[0].Find("id")->text(), a);  // created first

  EXPECT_EQ(store_->Update("team", a, Json(R"({"name":"x"})")).code(), absl::StatusCode::kNotFound);
  absl::StatusOr<std::vector<PendingRevision>> pending = store_->PendingRevisions(10);
  ASSERT_EQ(pending->size(), 3u);
  EXPECT_EQ(pending->back().op, RevisionOp::kDelete);
  EXPECT_EQ(pending->back().object_id, a);
}

TEST_F(LocalStoreTest, PendingRevisionsComeInSeqOrderAndRespectTheLimit) {
  const std::string id = CreateTeam("v0");
  for (int i = 1; i <= 9; ++i) {
    clock_.Set(clock_.NowMs() - 10);  // a wall clock running backwards changes nothing
    ASSERT_TRUE(store_->Update("team", id, Json(R"({"name":"v)" + std::to_string(i) + "\"}")).ok());
  }
  absl::StatusOr<std::vector<PendingRevision>> first = store_->PendingRevisions(4);
  ASSERT_EQ(first->size(), 4u);
  absl::StatusOr<std::vector<PendingRevision>> all = store_->PendingRevisions(100);
  ASSERT_EQ(all->size(), 10u);
  for (size_t i = 0; i < all->size(); ++i) {
    EXPECT_EQ((*all)[i].seq, static_cast<int64_t>(i + 1));
    if (i > 0) {
      EXPECT_GT((*all)[i].clock, (*all)[i - 1].clock);
    }
  }
  EXPECT_EQ((*first)[3].id, (*all)[3].id);
}

TEST_F(LocalStoreTest, RecordPushResultsMarksSyncedAndKeepsRejectReasons) {
  const std::string a = CreateTeam("A");
  const std::string b = CreateTeam("B");
  const std::string c = CreateTeam("C");
  absl::StatusOr<std::vector<PendingRevision>> pending = store_->PendingRevisions(10);
  ASSERT_EQ(pending->size(), 3u);
  std::vector<PushOutcome> outcomes = {
      {(*pending)[0].id, PushOutcome::Kind::kApplied, 11, false, "", "", ""},
      {(*pending)[1].id, PushOutcome::Kind::kRejected, 0, false, "bad team", "", ""},
  };
  ASSERT_TRUE(store_->RecordPushResults(outcomes).ok());
  pending = store_->PendingRevisions(10);
  ASSERT_EQ(pending->size(), 1u);
  EXPECT_EQ((*pending)[0].object_id, c);
  EXPECT_EQ(CountRows("SELECT count(*) FROM revisions WHERE synced = 1 AND outcome = 'rejected' "
                      "AND reject_reason = 'bad team'"),
            1);
  EXPECT_EQ(CountRows("SELECT server_version FROM revisions WHERE object_id = '" + a + "'"), 11);

  // An unknown id records nothing at all.
  std::vector<PushOutcome> bad = {{(*pending)[0].id, PushOutcome::Kind::kApplied, 12, false, "", "", ""},
                                  {NewUuid(), PushOutcome::Kind::kApplied, 1, false, "", "", ""}};
  EXPECT_EQ(store_->RecordPushResults(bad).code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(*store_->PendingCount(), 1);
}

TEST_F(LocalStoreTest, RemoteChangesInsertRowsRecordRevisionsAndSaveTheCursor) {
  const std::string id = NewUuid();
  const std::string rev = NewUuid();
  absl::StatusOr<ApplyChangesSummary> s =
      store_->ApplyRemoteChanges({TeamChange(id, 5, "Remote", rev)}, "cursor-1");
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_EQ(s->applied, 1);
  JsonValue row = MustGet("team", id);
  EXPECT_EQ(row.Find("name")->text(), "Remote");
  EXPECT_EQ(*row.Find("version")->AsInt64(), 5);
  EXPECT_EQ(row.Find("last_origin_id")->text(), "other");
  EXPECT_EQ(store_->GetSyncState()->cursor, "cursor-1");
  EXPECT_EQ(CountRows("SELECT count(*) FROM revisions WHERE id = '" + rev +
                      "' AND synced = 1 AND server_version = 5"),
            1);
  EXPECT_EQ(*store_->PendingCount(), 0);

  // Redelivery: skipped, and the revision is not recorded twice.
  s = store_->ApplyRemoteChanges({TeamChange(id, 5, "Remote", rev)}, "cursor-2");
  EXPECT_EQ(s->skipped, 1);
  EXPECT_EQ(CountRows("SELECT count(*) FROM revisions"), 1);
  EXPECT_EQ(store_->GetSyncState()->cursor, "cursor-2");
}

// An unchanged created_at is left out of the UPDATE (it would rewrite the
// created index's entry); a changed one is applied, and the index follows.
TEST_F(LocalStoreTest, RemoteChangesApplyCreatedAtOnlyWhenItChanged) {
  const std::string id = NewUuid();
  ASSERT_TRUE(store_->ApplyRemoteChanges({TeamChange(id, 5, "five")}, "c1").ok());
  // Counts the UPDATEs that assign created_at (as index maintenance goes).
  ASSERT_TRUE(Raw().Exec("CREATE TABLE created_at_updates (n INTEGER);"
                         "CREATE TRIGGER count_created_at AFTER UPDATE OF created_at ON teams "
                         "BEGIN INSERT INTO created_at_updates VALUES (1); END;")
                  .ok());
  ASSERT_TRUE(store_->ApplyRemoteChanges({TeamChange(id, 6, "six")}, "c2").ok());
  JsonValue row = MustGet("team", id);
  EXPECT_EQ(row.Find("name")->text(), "six");
  EXPECT_EQ(row.Find("created_at")->text(), "2024-01-01T00:00:00+00:00");
  EXPECT_EQ(CountRows("SELECT count(*) FROM created_at_updates"), 0);
  RemoteChange moved = TeamChange(id, 7, "seven");
  absl::StrReplaceAll({{"2024-01-01T00:00:00+00:00", "2023-05-05T00:00:00+00:00"}},
                      &moved.new_record);
  ASSERT_TRUE(store_->ApplyRemoteChanges({moved}, "c3").ok());
  row = MustGet("team", id);
  EXPECT_EQ(row.Find("name")->text(), "seven");
  EXPECT_EQ(row.Find("created_at")->text(), "2023-05-05T00:00:00+00:00");
  EXPECT_EQ(CountRows("SELECT count(*) FROM created_at_updates"), 1);
  EXPECT_EQ(CountRows("SELECT count(*) FROM teams INDEXED BY teams_created_idx "
                      "WHERE created_at = '2023-05-05T00:00:00+00:00'"),
            1);
}

TEST_F(LocalStoreTest, RemoteChangesOlderThanTheLocalVersionAreSkipped) {
  const std::string id = NewUuid();
  ASSERT_TRUE(store_->ApplyRemoteChanges({TeamChange(id, 7, "seven")}, "c1").ok());
  absl::StatusOr<ApplyChangesSummary> s = store_->ApplyRemoteChanges(
      {TeamChange(id, 6, "six"), TeamChange(id, 7, "seven again")}, "c2");
  ASSERT_TRUE(s.ok());
  EXPECT_EQ(s->skipped, 2);
  EXPECT_EQ(s->applied, 0);
  EXPECT_EQ(MustGet("team", id).Find("name")->text(), "seven");
  s = store_->ApplyRemoteChanges({TeamChange(id, 9, "nine")}, "c3");
  EXPECT_EQ(s->applied, 1);
  EXPECT_EQ(MustGet("team", id).Find("name")->text(), "nine");
}

TEST_F(LocalStoreTest, RemoteChangesKeepFieldsOfPendingLocalRevisions) {
  const std::string team = NewUuid();
  const std::string task = NewUuid();
  RemoteChange c;
  c.object_type = "task";
  c.object_id = task;
  c.version = 3;
  c.new_record = R"({"id":")" + task + R"(","team_id":")" + team +
                 R"(","title":"Remote title","status":"todo","priority":1,"deleted":false})";
  ASSERT_TRUE(store_->ApplyRemoteChanges({c}, "c1").ok());
  ASSERT_TRUE(store_->Update("task", task, Json(R"({"status":"doing"})")).ok());

  c.version = 4;
  c.new_record = R"({"id":")" + task + R"(","team_id":")" + team +
                 R"(","title":"Renamed","status":"blocked","priority":5,"deleted":false})";
  absl::StatusOr<ApplyChangesSummary> s = store_->ApplyRemoteChanges({c}, "c2");
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_EQ(s->applied, 1);
  JsonValue row = MustGet("task", task);
  EXPECT_EQ(row.Find("status")->text(), "doing");   // pending local edit wins locally
  EXPECT_EQ(row.Find("title")->text(), "Renamed");  // the rest merges
  EXPECT_EQ(*row.Find("priority")->AsInt64(), 5);
  EXPECT_EQ(*row.Find("version")->AsInt64(), 4);

  // Once the local revision is synced, the server's value applies.
  absl::StatusOr<std::vector<PendingRevision>> pending = store_->PendingRevisions(10);
  ASSERT_EQ(pending->size(), 1u);
  EXPECT_EQ(pending->front().base_version, 3);
  ASSERT_TRUE(
      store_->RecordPushResults({{pending->front().id, PushOutcome::Kind::kApplied, 5, false, "", "", ""}})
          .ok());
  c.version = 5;
  c.new_record = R"({"id":")" + task + R"(","title":"Renamed","status":"doing"})";
  ASSERT_TRUE(store_->ApplyRemoteChanges({c}, "c3").ok());
  EXPECT_EQ(MustGet("task", task).Find("status")->text(), "doing");
}

TEST_F(LocalStoreTest, RemoteChangeDoesNotUndoAPendingLocalDelete) {
  const std::string id = NewUuid();
  ASSERT_TRUE(store_->ApplyRemoteChanges({TeamChange(id, 1, "A")}, "c1").ok());
  ASSERT_TRUE(store_->Delete("team", id).ok());
  ASSERT_TRUE(store_->ApplyRemoteChanges({TeamChange(id, 2, "B")}, "c2").ok());
  JsonValue row = MustGet("team", id);
  EXPECT_TRUE(row.Find("deleted")->bool_value());
  EXPECT_EQ(row.Find("name")->text(), "B");
}

TEST_F(LocalStoreTest, RemoteTombstoneAndHardDelete) {
  const std::string a = NewUuid();
  const std::string b = NewUuid();
  ASSERT_TRUE(
      store_->ApplyRemoteChanges({TeamChange(a, 1, "A"), TeamChange(b, 2, "B")}, "c1").ok());

  RemoteChange tomb = TeamChange(a, 3, "A");
  tomb.event = ChangeEvent::kDelete;
  tomb.new_record.replace(tomb.new_record.find("\"deleted\":false"), 15, "\"deleted\":true");
  RemoteChange hard;
  hard.object_type = "team";
  hard.event = ChangeEvent::kDelete;
  hard.object_id = b;
  hard.version = 4;
  absl::StatusOr<ApplyChangesSummary> s = store_->ApplyRemoteChanges({tomb, hard}, "c2");
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_EQ(s->applied, 2);
  EXPECT_FALSE(store_->Get("team", a)->has_value());
  EXPECT_TRUE(MustGet("team", a).Find("deleted")->bool_value());
  EXPECT_FALSE(store_->Get("team", b, ReadOptions{true})->has_value());
  EXPECT_EQ(CountRows("SELECT count(*) FROM revisions WHERE op = 'delete'"), 2);
}

TEST_F(LocalStoreTest, AFailedPageAppliesNothingAndKeepsTheCursor) {
  const std::string a = NewUuid();
  const std::string b = NewUuid();
  ASSERT_TRUE(store_->ApplyRemoteChanges({TeamChange(a, 1, "A")}, "c1").ok());
  ASSERT_TRUE(Raw()
                  .Exec("CREATE TRIGGER fail_rev BEFORE INSERT ON revisions WHEN "
                        "NEW.object_id = '" +
                        b + "' BEGIN SELECT RAISE(ABORT, 'injected'); END;")
                  .ok());
  absl::StatusOr<ApplyChangesSummary> s =
      store_->ApplyRemoteChanges({TeamChange(a, 2, "A2"), TeamChange(b, 3, "B")}, "c2");
  EXPECT_FALSE(s.ok());
  EXPECT_EQ(MustGet("team", a).Find("name")->text(), "A");
  EXPECT_EQ(store_->GetSyncState()->cursor, "c1");
}

TEST_F(LocalStoreTest, UnknownObjectTypesAndMalformedRecordsAreSkipped) {
  RemoteChange unknown = TeamChange(NewUuid(), 1, "x");
  unknown.object_type = "invoice";
  unknown.table = "invoices";
  RemoteChange bad = TeamChange(NewUuid(), 1, "x");
  bad.new_record = "{not json";
  absl::StatusOr<ApplyChangesSummary> s = store_->ApplyRemoteChanges({unknown, bad}, "c1");
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_EQ(s->skipped, 2);
  EXPECT_EQ(store_->GetSyncState()->cursor, "c1");
}

TEST_F(LocalStoreTest, RemoteClocksAdvanceTheLocalClock) {
  const std::string id = NewUuid();
  RemoteChange c = TeamChange(id, 1, "A");
  const int64_t future = clock_.NowMs() + 3'600'000;
  c.new_record.replace(c.new_record.find("001700000000000-0000000000"), 26,
                       "00" + std::to_string(future) + "-0000000004");
  ASSERT_TRUE(store_->ApplyRemoteChanges({c}, "c1").ok());
  EXPECT_EQ(store_->GetSyncState()->hlc, (HlcTimestamp{future, 4}));
  ASSERT_TRUE(store_->Update("team", id, Json(R"({"name":"B"})")).ok());
  absl::StatusOr<std::vector<PendingRevision>> pending = store_->PendingRevisions(1);
  ASSERT_EQ(pending->size(), 1u);
  EXPECT_EQ(pending->front().clock, (HlcTimestamp{future, 5}));
}

TEST_F(LocalStoreTest, StateSurvivesReopen) {
  const std::string id = CreateTeam("A");
  ASSERT_TRUE(store_->ApplyRemoteChanges({}, "cur").ok());
  ASSERT_TRUE(store_->SetServerAddress("localhost:1").ok());
  Reopen();
  absl::StatusOr<SyncState> s = store_->GetSyncState();
  ASSERT_TRUE(s.ok());
  EXPECT_EQ(s->cursor, "cur");
  EXPECT_EQ(s->server_address, "localhost:1");
  EXPECT_EQ(s->next_seq, 2);
  EXPECT_EQ(s->pending_revisions, 1);
  ASSERT_TRUE(store_->ResetCursor().ok());
  EXPECT_EQ(store_->GetSyncState()->cursor, "");
  EXPECT_EQ(MustGet("team", id).Find("name")->text(), "A");
}

// --- Snapshots ---

std::string TeamRecord(const std::string& id, int64_t version, const std::string& name,
                       bool deleted = false) {
  return "{\"id\":\"" + id + "\",\"name\":\"" + name +
         "\",\"created_at\":\"2024-01-01T00:00:00+00:00\",\"version\":" +
         std::to_string(version) + ",\"deleted\":" + (deleted ? "true" : "false") +
         ",\"hlc\":\"001700000000000-0000000000-other\"}";
}

SnapshotRows Teams(std::vector<std::string> records) {
  SnapshotRows rows;
  rows.table = "teams";
  rows.object_type = "team";
  rows.records = std::move(records);
  return rows;
}

TEST_F(LocalStoreTest, SnapshotUpsertsNewerRowsRemovesAbsentOnesAndSavesTheCursor) {
  const std::string kept_newer = NewUuid();   // local version 9, snapshot 4: skipped
  const std::string updated = NewUuid();      // local 1, snapshot 2: updated
  const std::string gone = NewUuid();         // not in the snapshot: removed
  const std::string fresh = NewUuid();        // only in the snapshot: inserted
  const std::string task = NewUuid();         // another covered type, absent: removed
  ASSERT_TRUE(store_
                  ->ApplyRemoteChanges({TeamChange(kept_newer, 9, "nine"),
                                        TeamChange(updated, 1, "one"), TeamChange(gone, 3, "x")},
                                       "c1")
                  .ok());
  RemoteChange t;
  t.object_type = "task";
  t.object_id = task;
  t.version = 1;
  t.new_record = R"({"id":")" + task + R"(","team_id":")" + updated + R"(","title":"T"})";
  ASSERT_TRUE(store_->ApplyRemoteChanges({t}, "c2").ok());
  const int64_t revisions_before = CountRows("SELECT count(*) FROM revisions");

  absl::StatusOr<ApplySnapshotSummary> s = store_->ApplySnapshot(
      {Teams({TeamRecord(kept_newer, 4, "four"), TeamRecord(updated, 2, "two"),
              TeamRecord(fresh, 1, "new")})},
      "snap-cursor");
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_EQ(s->applied, 2);
  EXPECT_EQ(s->skipped, 1);
  EXPECT_EQ(s->removed, 2);
  EXPECT_EQ(s->kept, 0);
  EXPECT_EQ(MustGet("team", kept_newer).Find("name")->text(), "nine");
  EXPECT_EQ(MustGet("team", updated).Find("name")->text(), "two");
  EXPECT_EQ(*MustGet("team", updated).Find("version")->AsInt64(), 2);
  EXPECT_EQ(MustGet("team", fresh).Find("name")->text(), "new");
  EXPECT_FALSE(store_->Get("team", gone, ReadOptions{true})->has_value());
  EXPECT_FALSE(store_->Get("task", task, ReadOptions{true})->has_value());
  EXPECT_EQ(store_->GetSyncState()->cursor, "snap-cursor");
  // Snapshot rows record no revisions (documented choice).
  EXPECT_EQ(CountRows("SELECT count(*) FROM revisions"), revisions_before);
}

TEST_F(LocalStoreTest, SnapshotKeepsPendingFieldsAndRowsWithPendingRevisions) {
  const std::string edited = NewUuid();
  ASSERT_TRUE(store_->ApplyRemoteChanges({TeamChange(edited, 1, "one")}, "c1").ok());
  ASSERT_TRUE(store_->Update("team", edited, Json(R"({"name":"mine"})")).ok());
  const std::string created_here = CreateTeam("local only");  // never pushed

  absl::StatusOr<ApplySnapshotSummary> s =
      store_->ApplySnapshot({Teams({TeamRecord(edited, 5, "theirs")})}, "snap");
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_EQ(s->applied, 1);
  EXPECT_EQ(s->kept, 1);
  EXPECT_EQ(s->removed, 0);
  JsonValue row = MustGet("team", edited);
  EXPECT_EQ(row.Find("name")->text(), "mine");  // the pending field wins locally
  EXPECT_EQ(*row.Find("version")->AsInt64(), 5);
  EXPECT_EQ(MustGet("team", created_here).Find("name")->text(), "local only");
  EXPECT_EQ(*store_->PendingCount(), 2);

  // Once pushed (synced), a row the server no longer has goes away.
  std::vector<PushOutcome> outcomes;
  const std::vector<PendingRevision> pending = *store_->PendingRevisions(10);
  for (const PendingRevision& r : pending) {
    outcomes.push_back(PushOutcome{r.id, PushOutcome::Kind::kApplied, 6, false, "", "", ""});
  }
  ASSERT_TRUE(store_->RecordPushResults(outcomes).ok());
  s = store_->ApplySnapshot({Teams({TeamRecord(edited, 6, "mine")})}, "snap2");
  ASSERT_TRUE(s.ok());
  EXPECT_EQ(s->removed, 1);
  EXPECT_FALSE(store_->Get("team", created_here, ReadOptions{true})->has_value());
}

TEST_F(LocalStoreTest, SnapshotOfSomeTablesLeavesTheOthersAlone) {
  const std::string team = NewUuid();
  const std::string task = NewUuid();
  ASSERT_TRUE(store_->ApplyRemoteChanges({TeamChange(team, 1, "one")}, "c1").ok());
  RemoteChange t;
  t.object_type = "task";
  t.object_id = task;
  t.version = 1;
  t.new_record = R"({"id":")" + task + R"(","team_id":")" + team + R"(","title":"T"})";
  ASSERT_TRUE(store_->ApplyRemoteChanges({t}, "c2").ok());
  absl::StatusOr<ApplySnapshotSummary> s = store_->ApplySnapshot({}, "snap", {"tasks"});
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_EQ(s->removed, 1);
  EXPECT_TRUE(store_->Get("team", team)->has_value());
  EXPECT_FALSE(store_->Get("task", task, ReadOptions{true})->has_value());
  EXPECT_EQ(store_->ApplySnapshot({}, "x", {"widgets"}).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(store_->GetSyncState()->cursor, "snap");
}

TEST_F(LocalStoreTest, MalformedSnapshotRowsAreSkipped) {
  const std::string id = NewUuid();
  absl::StatusOr<ApplySnapshotSummary> s = store_->ApplySnapshot(
      {Teams({"not json", R"({"name":"no id","version":1})",
              R"({"id":")" + id + R"(","name":"no version"})", TeamRecord(id, 1, "ok")}),
       SnapshotRows{"widget", "widgets", {"{}"}}},
      "snap");
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_EQ(s->applied, 1);
  EXPECT_EQ(s->skipped, 4);
  EXPECT_EQ(MustGet("team", id).Find("name")->text(), "ok");
}

TEST_F(LocalStoreTest, ChunkedSnapshotStoresTheCursorOnlyWhenFinished) {
  const std::string old_row = NewUuid();
  ASSERT_TRUE(store_->ApplyRemoteChanges({TeamChange(old_row, 1, "old")}, "before").ok());
  const std::string a = NewUuid(), b = NewUuid();
  EXPECT_EQ(store_->ApplySnapshotChunk({}).status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(store_->FinishSnapshot("x").status().code(), absl::StatusCode::kFailedPrecondition);

  ASSERT_TRUE(store_->BeginSnapshot().ok());
  absl::StatusOr<ApplySnapshotSummary> s = store_->ApplySnapshotChunk({Teams({TeamRecord(a, 1, "a")})});
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_EQ(s->applied, 1);
  EXPECT_EQ(store_->GetSyncState()->cursor, "before");
  EXPECT_TRUE(store_->Get("team", old_row)->has_value());  // not removed before Finish
  ASSERT_TRUE(store_->ApplySnapshotChunk({Teams({TeamRecord(b, 2, "b")})}).ok());
  EXPECT_EQ(store_->GetSyncState()->cursor, "before");
  s = store_->FinishSnapshot("after");
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_EQ(s->removed, 1);
  EXPECT_EQ(store_->GetSyncState()->cursor, "after");
  EXPECT_TRUE(store_->Get("team", a)->has_value());
  EXPECT_TRUE(store_->Get("team", b)->has_value());
  EXPECT_FALSE(store_->Get("team", old_row, ReadOptions{true})->has_value());

  // An aborted snapshot stores nothing and removes nothing.
  ASSERT_TRUE(store_->BeginSnapshot().ok());
  ASSERT_TRUE(store_->ApplySnapshotChunk({Teams({TeamRecord(a, 3, "a3")})}).ok());
  store_->AbortSnapshot();
  EXPECT_EQ(store_->FinishSnapshot("never").status().code(),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(store_->GetSyncState()->cursor, "after");
  EXPECT_TRUE(store_->Get("team", b)->has_value());
}

// Invariant 8 for a new client: tables empty when the snapshot began hold no
// row the snapshot could lack, so Finish removes none of theirs, even one
// written and pushed between chunks (the snapshot predates it; the server
// has it). Once the tables have rows, absent ones are removed again.
TEST_F(LocalStoreTest, AnInitialSnapshotRemovesNothingWrittenWhileItRan) {
  const std::string a = NewUuid(), b = NewUuid();
  ASSERT_TRUE(store_->BeginSnapshot().ok());
  ASSERT_TRUE(store_->ApplySnapshotChunk({Teams({TeamRecord(a, 1, "a")})}).ok());
  const std::string pushed = CreateTeam("written during the snapshot");
  const std::vector<PendingRevision> pending = *store_->PendingRevisions(10);
  ASSERT_EQ(pending.size(), 1u);
  std::vector<PushOutcome> outcomes = {
      PushOutcome{pending[0].id, PushOutcome::Kind::kApplied, 7, false, "", "", ""}};
  ASSERT_TRUE(store_->RecordPushResults(outcomes).ok());
  ASSERT_TRUE(store_->ApplySnapshotChunk({Teams({TeamRecord(b, 2, "b")})}).ok());
  absl::StatusOr<ApplySnapshotSummary> s = store_->FinishSnapshot("initial");
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_EQ(s->removed, 0);
  EXPECT_EQ(MustGet("team", pushed).Find("name")->text(), "written during the snapshot");
  EXPECT_TRUE(store_->Get("team", a)->has_value());
  EXPECT_TRUE(store_->Get("team", b)->has_value());
  EXPECT_EQ(store_->GetSyncState()->cursor, "initial");

  // The next snapshot begins with rows: the ones it lacks go.
  s = store_->ApplySnapshot({Teams({TeamRecord(a, 3, "a3"), TeamRecord(pushed, 7, "p")})}, "again");
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_EQ(s->removed, 1);
  EXPECT_FALSE(store_->Get("team", b, ReadOptions{true})->has_value());
  EXPECT_EQ(MustGet("team", a).Find("name")->text(), "a3");
}

TEST_F(LocalStoreTest, ASnapshotThatCannotCommitAppliesNothing) {
  const std::string id = NewUuid();
  ASSERT_TRUE(store_->ApplyRemoteChanges({TeamChange(id, 1, "one")}, "c1").ok());
  store_.reset();
  LocalStoreOptions options;
  options.clock = &clock_;
  options.busy_timeout_ms = 20;
  store_ = *LocalStore::Open(path_, options);
  // Another connection holds the write lock.
  sqlite::SqliteDb other = Raw();
  ASSERT_TRUE(other.Exec("BEGIN IMMEDIATE").ok());
  absl::StatusOr<ApplySnapshotSummary> s =
      store_->ApplySnapshot({Teams({TeamRecord(id, 2, "two")})}, "snap");
  EXPECT_EQ(s.status().code(), absl::StatusCode::kUnavailable) << s.status();
  ASSERT_TRUE(other.Exec("ROLLBACK").ok());
  EXPECT_EQ(MustGet("team", id).Find("name")->text(), "one");
  EXPECT_EQ(store_->GetSyncState()->cursor, "c1");
}

TEST_F(LocalStoreTest, LocalWriteListenerRunsAfterEachCommittedWrite) {
  int calls = 0;
  int64_t pending_seen = -1;
  store_->SetLocalWriteListener([&] {
    ++calls;
    // Called after commit, with no store lock held: reads work.
    pending_seen = *store_->PendingCount();
  });
  const std::string id = CreateTeam("A");
  EXPECT_EQ(calls, 1);
  EXPECT_EQ(pending_seen, 1);
  ASSERT_TRUE(store_->Update("team", id, Json(R"({"name":"B"})")).ok());
  EXPECT_EQ(calls, 2);
  EXPECT_EQ(pending_seen, 2);
  EXPECT_FALSE(store_->Update("team", NewUuid(), Json(R"({"name":"B"})")).ok());
  EXPECT_FALSE(store_->Create("team", Json(R"({"nope":1})")).ok());
  EXPECT_EQ(calls, 2);  // failed writes are not reported
  ASSERT_TRUE(store_->Delete("team", id).ok());
  EXPECT_EQ(calls, 3);
  // Remote changes are not local writes.
  ASSERT_TRUE(store_->ApplyRemoteChanges({TeamChange(NewUuid(), 1, "r")}, "c").ok());
  EXPECT_EQ(calls, 3);
  store_->SetLocalWriteListener(nullptr);
  CreateTeam("C");
  EXPECT_EQ(calls, 3);
}

}  // namespace
}  // namespace pulsesync

namespace pulsesync {
namespace {

// --- Encryption at rest (invariants 10-12) ---

TEST_F(LocalStoreTest, EncryptedPayloadsOnDiskHoldNoFieldValues) {
  keyring_ = Ring({{"k1", 'a'}});
  Reopen();
  EXPECT_EQ(store_->payload_key_id(), "k1");
  const std::string team = CreateTeam("Zanzibar Heist Planning");
  ASSERT_TRUE(store_->Update("team", team, Json(R"({"name":"Operation Quokka"})")).ok());
  ASSERT_TRUE(store_->Delete("team", team).ok());

  std::vector<std::string> raw = AllRawPayloads();
  ASSERT_EQ(raw.size(), 3u);
  for (const std::string& p : raw) {
    EXPECT_TRUE(absl::StartsWith(p, "enc1:k1:")) << p;
    EXPECT_FALSE(absl::StrContains(p, "Zanzibar")) << p;
    EXPECT_FALSE(absl::StrContains(p, "Quokka")) << p;
    EXPECT_FALSE(absl::StrContains(p, "created_at")) << p;
    EXPECT_FALSE(absl::StrContains(p, "{")) << p;
  }
  // The push side sees the plaintext.
  absl::StatusOr<std::vector<PendingRevision>> pending = store_->PendingRevisions(10);
  ASSERT_TRUE(pending.ok()) << pending.status();
  ASSERT_EQ(pending->size(), 3u);
  EXPECT_EQ(Json((*pending)[0].payload).Find("name")->text(), "Zanzibar Heist Planning");
  EXPECT_EQ((*pending)[1].payload, R"({"name":"Operation Quokka"})");
  EXPECT_EQ((*pending)[2].payload, "{}");
  // The synced table itself stays plaintext (the spec encrypts payloads).
  EXPECT_EQ(MustGet("team", team).Find("name")->text(), "Operation Quokka");
}

TEST_F(LocalStoreTest, PulledRevisionsAreRecordedEncrypted) {
  keyring_ = Ring({{"k1", 'a'}});
  Reopen();
  const std::string team = NewUuid();
  const std::string rev = NewUuid();
  ASSERT_TRUE(store_->ApplyRemoteChanges({TeamChange(team, 2, "Remote Walrus", rev)}, "c1").ok());
  const std::string raw = RawPayload(rev);
  EXPECT_TRUE(absl::StartsWith(raw, "enc1:k1:")) << raw;
  EXPECT_FALSE(absl::StrContains(raw, "Walrus"));
  EXPECT_EQ(MustGet("team", team).Find("name")->text(), "Remote Walrus");
}

TEST_F(LocalStoreTest, ACiphertextMovedToAnotherRevisionRowDoesNotDecrypt) {
  keyring_ = Ring({{"k1", 'a'}});
  Reopen();
  CreateTeam("First");
  CreateTeam("Second");
  absl::StatusOr<std::vector<PendingRevision>> pending = store_->PendingRevisions(10);
  ASSERT_TRUE(pending.ok() && pending->size() == 2u);
  const std::string first = (*pending)[0].id;
  const std::string second = (*pending)[1].id;
  // Same key, valid ciphertext, wrong row: the associated data differs.
  SetRawPayload(second, RawPayload(first));
  pending = store_->PendingRevisions(10);
  EXPECT_EQ(pending.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_TRUE(absl::StrContains(pending.status().message(), "revision " + second))
      << pending.status();
  EXPECT_TRUE(absl::StrContains(pending.status().message(), "failed authentication"))
      << pending.status();
}

TEST_F(LocalStoreTest, ATamperedPayloadFailsThePushReadAndTheRemoteApply) {
  keyring_ = Ring({{"k1", 'a'}});
  Reopen();
  const std::string team = NewUuid();
  ASSERT_TRUE(store_->ApplyRemoteChanges({TeamChange(team, 1, "Original")}, "c1").ok());
  ASSERT_TRUE(store_->Update("team", team, Json(R"({"name":"Local edit"})")).ok());
  absl::StatusOr<std::vector<PendingRevision>> pending = store_->PendingRevisions(10);
  ASSERT_TRUE(pending.ok() && pending->size() == 1u);
  const std::string rev = pending->front().id;
  std::string raw = RawPayload(rev);
  raw[raw.size() - 6] = raw[raw.size() - 6] == 'A' ? 'B' : 'A';
  SetRawPayload(rev, raw);

  pending = store_->PendingRevisions(10);
  EXPECT_EQ(pending.status().code(), absl::StatusCode::kDataLoss) << pending.status();

  // A newer server version of that object must merge with the pending
  // fields, which cannot be read: the page fails and nothing moves.
  const std::string other = NewUuid();
  absl::StatusOr<ApplyChangesSummary> applied = store_->ApplyRemoteChanges(
      {TeamChange(other, 1, "Unrelated"), TeamChange(team, 2, "Server rename")}, "c2");
  EXPECT_EQ(applied.status().code(), absl::StatusCode::kDataLoss) << applied.status();
  EXPECT_EQ(MustGet("team", team).Find("name")->text(), "Local edit");
  EXPECT_FALSE(store_->Get("team", other)->has_value());
  EXPECT_EQ(store_->GetSyncState()->cursor, "c1");
  EXPECT_EQ(*store_->PendingCount(), 1);
}

TEST_F(LocalStoreTest, PlaintextPayloadsFromBeforeEncryptionStayReadable) {
  CreateTeam("Written in the clear");
  ASSERT_EQ(Json(AllRawPayloads().at(0)).Find("name")->text(), "Written in the clear");

  keyring_ = Ring({{"k1", 'a'}});
  reencrypt_on_open_ = false;
  Reopen();
  EXPECT_FALSE(IsEncryptedPayload(AllRawPayloads().at(0)));
  CreateTeam("Written encrypted");
  absl::StatusOr<std::vector<PendingRevision>> pending = store_->PendingRevisions(10);
  ASSERT_TRUE(pending.ok()) << pending.status();
  ASSERT_EQ(pending->size(), 2u);
  EXPECT_EQ(Json((*pending)[0].payload).Find("name")->text(), "Written in the clear");
  EXPECT_EQ(Json((*pending)[1].payload).Find("name")->text(), "Written encrypted");

  // Opening with re-encryption (the default) leaves no plaintext behind.
  reencrypt_on_open_ = true;
  Reopen();
  for (const std::string& p : AllRawPayloads()) EXPECT_TRUE(absl::StartsWith(p, "enc1:k1:")) << p;
  pending = store_->PendingRevisions(10);
  ASSERT_TRUE(pending.ok()) << pending.status();
  EXPECT_EQ(Json((*pending)[0].payload).Find("name")->text(), "Written in the clear");
}

TEST_F(LocalStoreTest, RotationReadsOldPayloadsAndMovesThemToTheNewKey) {
  keyring_ = Ring({{"old", '1'}});
  Reopen();
  CreateTeam("Before rotation");

  // New key first (current), old key kept: everything readable, and Open
  // moved the old payloads to the new key.
  keyring_ = Ring({{"new", '2'}, {"old", '1'}});
  Reopen();
  CreateTeam("After rotation");
  for (const std::string& p : AllRawPayloads()) EXPECT_TRUE(absl::StartsWith(p, "enc1:new:")) << p;

  // So the old key can now be dropped.
  keyring_ = Ring({{"new", '2'}});
  Reopen();
  absl::StatusOr<std::vector<PendingRevision>> pending = store_->PendingRevisions(10);
  ASSERT_TRUE(pending.ok()) << pending.status();
  ASSERT_EQ(pending->size(), 2u);
  EXPECT_EQ(Json((*pending)[0].payload).Find("name")->text(), "Before rotation");
}

TEST_F(LocalStoreTest, WithoutReencryptionOldKeyPayloadsNeedTheOldKey) {
  keyring_ = Ring({{"old", '1'}});
  Reopen();
  CreateTeam("Old key");
  reencrypt_on_open_ = false;
  keyring_ = Ring({{"new", '2'}, {"old", '1'}});
  Reopen();
  CreateTeam("New key");
  std::vector<std::string> raw = AllRawPayloads();
  int old_count = 0;
  for (const std::string& p : raw) old_count += EnvelopeKeyId(p) == "old" ? 1 : 0;
  EXPECT_EQ(old_count, 1);
  ASSERT_TRUE(store_->PendingRevisions(10).ok());

  keyring_ = Ring({{"new", '2'}});
  Reopen();
  absl::StatusOr<std::vector<PendingRevision>> pending = store_->PendingRevisions(10);
  EXPECT_EQ(pending.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_TRUE(absl::StrContains(pending.status().message(), "unknown key id \"old\""))
      << pending.status();
}

TEST_F(LocalStoreTest, EncryptedPayloadsAreNeverHandedOutWithoutAKey) {
  keyring_ = Ring({{"k1", 'a'}});
  Reopen();
  CreateTeam("Secret");
  keyring_ = nullptr;
  Reopen();
  absl::StatusOr<std::vector<PendingRevision>> pending = store_->PendingRevisions(10);
  EXPECT_EQ(pending.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_TRUE(absl::StrContains(pending.status().message(), "no key is configured"))
      << pending.status();
}

TEST_F(LocalStoreTest, ReencryptionLeavesPayloadsThatDoNotDecryptAlone) {
  keyring_ = Ring({{"old", '1'}});
  Reopen();
  CreateTeam("Good");
  CreateTeam("Doomed");
  absl::StatusOr<std::vector<PendingRevision>> pending = store_->PendingRevisions(10);
  ASSERT_TRUE(pending.ok() && pending->size() == 2u);
  const std::string doomed = (*pending)[1].id;
  std::string raw = RawPayload(doomed);
  raw[raw.size() - 3] = raw[raw.size() - 3] == 'A' ? 'B' : 'A';
  SetRawPayload(doomed, raw);

  keyring_ = Ring({{"new", '2'}, {"old", '1'}});
  Reopen();  // Open succeeds: the bad payload is reported when it is needed
  EXPECT_EQ(RawPayload(doomed), raw);
  EXPECT_TRUE(absl::StartsWith(RawPayload((*pending)[0].id), "enc1:new:"));
  absl::StatusOr<ReencryptSummary> again = store_->ReencryptPayloads();
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(again->rewritten, 0);
  EXPECT_EQ(again->failed, 1);
  EXPECT_EQ(store_->PendingRevisions(10).status().code(), absl::StatusCode::kDataLoss);
}

}  // namespace
}  // namespace pulsesync

namespace pulsesync {
namespace {

// --- Conflicts and schema versions (docs/CONFLICTS.md) ---

class LocalStoreConflictTest : public LocalStoreTest {
 protected:
  // A task at server version `version`, as the feed delivers it.
  RemoteChange TaskChange(const std::string& id, int64_t version, const std::string& fields) {
    RemoteChange c;
    c.object_type = "task";
    c.table = "tasks";
    c.event = ChangeEvent::kUpdate;
    c.object_id = id;
    c.version = version;
    c.new_record = "{\"id\":\"" + id + "\",\"team_id\":\"" + team_ + "\",\"version\":" +
                   std::to_string(version) + ",\"deleted\":false," + fields + "}";
    return c;
  }
  RemoteChange ConflictChange(const std::string& id, const std::string& task,
                              const std::string& kind, const std::string& extra) {
    RemoteChange c;
    c.object_type = "conflict";
    c.table = "conflicts";
    c.event = ChangeEvent::kInsert;
    c.object_id = id;
    c.version = 50;
    c.new_record = "{\"id\":\"" + id + "\",\"team_id\":\"" + team_ +
                   "\",\"object_type\":\"task\",\"object_id\":\"" + task + "\",\"kind\":\"" +
                   kind + "\",\"version\":50,\"deleted\":false,\"resolved\":false," +
                   "\"created_at\":\"2026-01-01T00:00:00+00:00\"," + extra + "}";
    return c;
  }
  std::string team_ = NewUuid();
};

TEST_F(LocalStoreConflictTest, ConflictRecordsArriveAndAreListed) {
  const std::string task = NewUuid(), conflict = NewUuid();
  ASSERT_TRUE(store_
                  ->ApplyRemoteChanges(
                      {TaskChange(task, 10, "\"title\":\"From B\""),
                       ConflictChange(conflict, task, "field",
                                      "\"field\":\"title\",\"local_value\":\"From A\","
                                      "\"winning_value\":\"From B\",\"loser_origin_id\":\"" +
                                          store_->origin_id() +
                                          "\",\"winner_origin_id\":\"device-b\"")},
                      "c1")
                  .ok());
  absl::StatusOr<std::vector<Conflict>> open = store_->ListConflicts();
  ASSERT_TRUE(open.ok()) << open.status();
  ASSERT_EQ(open->size(), 1u);
  const Conflict& c = (*open)[0];
  EXPECT_EQ(c.id, conflict);
  EXPECT_EQ(c.object_id, task);
  EXPECT_EQ(c.field, "title");
  EXPECT_EQ(c.local_value.Serialize(), "\"From A\"");
  EXPECT_EQ(c.winning_value.Serialize(), "\"From B\"");
  EXPECT_TRUE(c.mine);
  EXPECT_FALSE(c.resolved);
}

TEST_F(LocalStoreConflictTest, KeepMineWritesTheLosingValueAgainAndClosesTheRecord) {
  const std::string task = NewUuid(), conflict = NewUuid();
  ASSERT_TRUE(store_
                  ->ApplyRemoteChanges(
                      {TaskChange(task, 10, "\"title\":\"From B\",\"priority\":1"),
                       ConflictChange(conflict, task, "field",
                                      "\"field\":\"priority\",\"local_value\":4,"
                                      "\"winning_value\":1")},
                      "c1")
                  .ok());
  ASSERT_TRUE(store_->ResolveConflict(conflict, ConflictChoice::kKeepMine).ok());
  EXPECT_EQ(*MustGet("task", task).Find("priority")->AsInt64(), 4);
  // Two revisions, in one transaction: the field, then the record's close.
  absl::StatusOr<std::vector<PendingRevision>> pending = store_->PendingRevisions(10);
  ASSERT_TRUE(pending.ok());
  ASSERT_EQ(pending->size(), 2u);
  EXPECT_EQ((*pending)[0].object_id, task);
  EXPECT_EQ((*pending)[0].payload, "{\"priority\":4}");
  EXPECT_EQ((*pending)[0].base_version, 10);
  EXPECT_EQ((*pending)[1].object_type, "conflict");
  EXPECT_EQ((*pending)[1].payload, "{\"resolved\":true,\"resolution\":\"mine\"}");
  EXPECT_TRUE(store_->ListConflicts()->empty());
  EXPECT_EQ(store_->ListConflicts(/*include_resolved=*/true)->size(), 1u);
  // Closed once: a second resolution finds no open record.
  EXPECT_TRUE(absl::IsNotFound(store_->ResolveConflict(conflict, ConflictChoice::kKeepTheirs)));
}

TEST_F(LocalStoreConflictTest, KeepMineOfAnEditLostToADeleteBringsTheObjectBack) {
  const std::string task = NewUuid(), conflict = NewUuid();
  RemoteChange deleted = TaskChange(task, 12, "\"title\":\"Gone\"");
  deleted.new_record = "{\"id\":\"" + task + "\",\"team_id\":\"" + team_ +
                       "\",\"title\":\"Gone\",\"version\":12,\"deleted\":true}";
  ASSERT_TRUE(store_
                  ->ApplyRemoteChanges(
                      {deleted, ConflictChange(conflict, task, "deleted",
                                               "\"local_value\":{\"title\":\"Mine\"}")},
                      "c1")
                  .ok());
  EXPECT_FALSE(store_->Get("task", task)->has_value());
  ASSERT_TRUE(store_->ResolveConflict(conflict, ConflictChoice::kKeepMine).ok());
  absl::StatusOr<std::optional<JsonValue>> row = store_->Get("task", task);
  ASSERT_TRUE(row.ok() && row->has_value());
  EXPECT_EQ((**row).Find("title")->text(), "Mine");
}

TEST_F(LocalStoreConflictTest, KeepTheirsOnlyClosesTheRecord) {
  const std::string task = NewUuid(), conflict = NewUuid();
  ASSERT_TRUE(store_
                  ->ApplyRemoteChanges(
                      {TaskChange(task, 10, "\"title\":\"From B\""),
                       ConflictChange(conflict, task, "field",
                                      "\"field\":\"title\",\"local_value\":\"From A\"")},
                      "c1")
                  .ok());
  ASSERT_TRUE(store_->ResolveConflict(conflict, ConflictChoice::kKeepTheirs).ok());
  EXPECT_EQ(MustGet("task", task).Find("title")->text(), "From B");
  absl::StatusOr<std::vector<PendingRevision>> pending = store_->PendingRevisions(10);
  ASSERT_EQ(pending->size(), 1u);
  EXPECT_EQ((*pending)[0].payload, "{\"resolved\":true,\"resolution\":\"theirs\"}");
}

TEST_F(LocalStoreConflictTest, ASupersededPushRestoresTheServersRowAtTheSameVersion) {
  const std::string task = NewUuid();
  ASSERT_TRUE(
      store_->ApplyRemoteChanges({TaskChange(task, 10, "\"title\":\"Server\"")}, "c1").ok());
  ASSERT_TRUE(store_->Update("task", task, Json("{\"title\":\"Mine, but older\"}")).ok());
  EXPECT_EQ(MustGet("task", task).Find("title")->text(), "Mine, but older");
  absl::StatusOr<std::vector<PendingRevision>> pending = store_->PendingRevisions(10);
  ASSERT_EQ(pending->size(), 1u);
  PushOutcome o;
  o.revision_id = (*pending)[0].id;
  o.server_version = 10;
  o.superseded = true;
  o.resolution = "superseded";
  o.record = TaskChange(task, 10, "\"title\":\"Server\"").new_record;
  ASSERT_TRUE(store_->RecordPushResults({o}).ok());
  EXPECT_EQ(MustGet("task", task).Find("title")->text(), "Server");
  EXPECT_EQ(CountRows("SELECT count(*) FROM revisions WHERE resolution = 'superseded'"), 1);
}

// Invariant 13. The soak's divergence: the server applied the push, then a
// newer change of the same field (another device, later clock) reached this
// client before the push's answer did; the pending revision kept its value
// through that change, and nothing newer ever came to replace it.
TEST_F(LocalStoreConflictTest, AChangePulledBeforeThePushAnswerIsNotLostToTheOptimisticValue) {
  const std::string task = NewUuid();
  ASSERT_TRUE(store_->ApplyRemoteChanges(
                        {TaskChange(task, 10, "\"title\":\"Server\",\"status\":\"todo\"")}, "c1")
                  .ok());
  ASSERT_TRUE(store_->Update("task", task, Json("{\"title\":\"Mine\"}")).ok());
  absl::StatusOr<std::vector<PendingRevision>> pending = store_->PendingRevisions(10);
  ASSERT_TRUE(pending.ok() && pending->size() == 1u);
  // The feed, racing the answer: v11 is the push itself, v12 a later edit.
  ASSERT_TRUE(store_
                  ->ApplyRemoteChanges(
                      {TaskChange(task, 11, "\"title\":\"Mine\",\"status\":\"todo\""),
                       TaskChange(task, 12, "\"title\":\"Later\",\"status\":\"done\"")},
                      "c2")
                  .ok());
  EXPECT_EQ(MustGet("task", task).Find("title")->text(), "Mine") << "still pending: kept";
  EXPECT_EQ(MustGet("task", task).Find("status")->text(), "done");
  EXPECT_EQ(CountRows("SELECT count(*) FROM server_rows"), 1);
  PushOutcome o;
  o.revision_id = (*pending)[0].id;
  o.kind = PushOutcome::Kind::kDuplicate;  // e.g. the first answer was lost
  o.server_version = 11;
  o.resolution = "applied";
  ASSERT_TRUE(store_->RecordPushResults({o}).ok());
  EXPECT_EQ(MustGet("task", task).Find("title")->text(), "Later");
  EXPECT_EQ(*MustGet("task", task).Find("version")->AsInt64(), 12);
  EXPECT_EQ(CountRows("SELECT count(*) FROM server_rows"), 0) << "nothing pending: dropped";
}

TEST_F(LocalStoreConflictTest, AnAnswerNewerThanTheKeptRowWaitsForTheFeed) {
  const std::string task = NewUuid();
  ASSERT_TRUE(
      store_->ApplyRemoteChanges({TaskChange(task, 10, "\"title\":\"Server\"")}, "c1").ok());
  ASSERT_TRUE(store_->Update("task", task, Json("{\"title\":\"Mine\"}")).ok());
  absl::StatusOr<std::vector<PendingRevision>> pending = store_->PendingRevisions(10);
  ASSERT_TRUE(pending.ok() && pending->size() == 1u);
  ASSERT_TRUE(
      store_->ApplyRemoteChanges({TaskChange(task, 11, "\"title\":\"Other\"")}, "c2").ok());
  PushOutcome o;
  o.revision_id = (*pending)[0].id;
  o.server_version = 12;  // applied after v11: the feed has v12 to deliver
  o.resolution = "applied";
  ASSERT_TRUE(store_->RecordPushResults({o}).ok());
  EXPECT_EQ(MustGet("task", task).Find("title")->text(), "Mine")
      << "v11 is older than the write: not put back";
  ASSERT_TRUE(
      store_->ApplyRemoteChanges({TaskChange(task, 12, "\"title\":\"Mine\"")}, "c3").ok());
  EXPECT_EQ(*MustGet("task", task).Find("version")->AsInt64(), 12);
  EXPECT_EQ(CountRows("SELECT count(*) FROM server_rows"), 0);
}

TEST_F(LocalStoreConflictTest, ARejectedWriteTakesTheServersValuesKeptMeanwhile) {
  const std::string task = NewUuid();
  const std::string gone = NewUuid();
  ASSERT_TRUE(store_
                  ->ApplyRemoteChanges({TaskChange(task, 10, "\"title\":\"Server\""),
                                        TaskChange(gone, 10, "\"title\":\"Gone\"")},
                                       "c1")
                  .ok());
  ASSERT_TRUE(store_->Update("task", task, Json("{\"title\":\"Mine\",\"status\":\"done\"}")).ok());
  ASSERT_TRUE(store_->Update("task", gone, Json("{\"title\":\"Mine too\"}")).ok());
  // A second pending revision of `task`, answered later.
  ASSERT_TRUE(store_->Update("task", task, Json("{\"status\":\"doing\"}")).ok());
  absl::StatusOr<std::vector<PendingRevision>> pending = store_->PendingRevisions(10);
  ASSERT_TRUE(pending.ok() && pending->size() == 3u);
  RemoteChange hard;
  hard.object_type = "task";
  hard.event = ChangeEvent::kDelete;
  hard.object_id = gone;
  hard.version = 11;
  ASSERT_TRUE(store_
                  ->ApplyRemoteChanges(
                      {TaskChange(task, 11, "\"title\":\"Theirs\",\"status\":\"todo\""), hard},
                      "c2")
                  .ok());
  EXPECT_TRUE(store_->Get("task", gone)->has_value()) << "the pending write holds it";
  std::vector<PushOutcome> answers;
  for (int i : {0, 1}) {
    PushOutcome o;
    o.revision_id = (*pending)[i].id;
    o.kind = PushOutcome::Kind::kRejected;
    o.reject_reason = "not allowed";
    answers.push_back(o);
  }
  ASSERT_TRUE(store_->RecordPushResults(answers).ok());
  EXPECT_EQ(MustGet("task", task).Find("title")->text(), "Theirs");
  EXPECT_EQ(MustGet("task", task).Find("status")->text(), "doing")
      << "the revision still pending keeps its field";
  EXPECT_FALSE(store_->Get("task", gone, ReadOptions{true})->has_value())
      << "deleted on the server while the rejected write was pending";
  EXPECT_EQ(CountRows("SELECT count(*) FROM server_rows"), 1) << "task: one revision pending";
}

TEST_F(LocalStoreConflictTest, FieldsOfANewerSchemaAreKeptAndMoveIntoTheirColumnOnUpgrade) {
  store_.reset();
  {
    LocalStoreOptions v1;
    v1.clock = &clock_;
    v1.schema_version = 1;
    absl::StatusOr<std::unique_ptr<LocalStore>> old_app = LocalStore::Open(path_, v1);
    ASSERT_TRUE(old_app.ok()) << old_app.status();
    const std::string task = NewUuid();
    ASSERT_TRUE((*old_app)
                    ->ApplyRemoteChanges({TaskChange(task, 10,
                                                     "\"title\":\"T\",\"is_archived\":true,"
                                                     "\"field_clocks\":{}")},
                                         "c1")
                    .ok());
    absl::StatusOr<std::optional<JsonValue>> row = (*old_app)->Get("task", task);
    ASSERT_TRUE(row.ok() && row->has_value());
    EXPECT_EQ((**row).Find("is_archived")->Serialize(), "true") << "kept, not dropped";
    EXPECT_EQ((**row).Find("field_clocks"), nullptr) << "the server's bookkeeping is not kept";
    EXPECT_TRUE(absl::IsInvalidArgument(
        (*old_app)->Update("task", task, Json("{\"is_archived\":false}"))));
    // The revision says which schema the app was built for.
    ASSERT_TRUE((*old_app)->Update("task", task, Json("{\"status\":\"archived\"}")).ok());
    EXPECT_EQ((*(*old_app)->PendingRevisions(1))[0].schema_version, 1);
  }
  Reopen();  // the app's version 2 build
  absl::StatusOr<std::vector<JsonValue>> tasks = store_->List("task");
  ASSERT_TRUE(tasks.ok());
  ASSERT_EQ(tasks->size(), 1u);
  EXPECT_EQ((*tasks)[0].Find("is_archived")->Serialize(), "true");
  EXPECT_EQ(CountRows("SELECT count(*) FROM tasks WHERE is_archived = 1 AND _extra IS NULL"), 1);
}

TEST_F(LocalStoreConflictTest, ALayoutOneDatabaseIsUpgradedInPlace) {
  // Turn this database into what the previous release wrote (user_version
  // 1: no _extra columns, no revisions.resolution, no conflicts table, no
  // tasks.is_archived), with a row and a pending revision in it.
  const std::string team = CreateTeam("Old");
  store_.reset();
  {
    sqlite::SqliteDb raw = Raw();
    std::string ddl = "DROP TABLE conflicts; DROP TABLE server_rows; "
                      "ALTER TABLE revisions DROP COLUMN resolution; "
                      "ALTER TABLE tasks DROP COLUMN is_archived; PRAGMA user_version = 1;"
                      "ALTER TABLE sync_state DROP COLUMN schema_version;"
                      "DROP INDEX revisions_pending_object_idx;"
                      "CREATE INDEX revisions_object_idx ON revisions (object_type, object_id);";
    for (const char* t : {"teams", "users", "team_members", "projects", "tasks"}) {
      ddl += std::string("ALTER TABLE ") + t + " DROP COLUMN _extra;";
    }
    ASSERT_TRUE(raw.Exec(ddl).ok());
  }
  Reopen();
  EXPECT_EQ(MustGet("team", team).Find("name")->text(), "Old");
  EXPECT_EQ(*store_->PendingCount(), 1);
  EXPECT_TRUE(store_->ListConflicts().ok());
  EXPECT_EQ(CountRows("PRAGMA user_version"), 4);
  EXPECT_EQ(CountRows("SELECT count(*) FROM server_rows"), 0) << "layout 3's table exists";
  // Layout 4: the object index holds the pending revision only.
  EXPECT_EQ(CountRows("SELECT count(*) FROM sqlite_schema WHERE name = 'revisions_object_idx'"), 0);
  EXPECT_EQ(CountRows("SELECT count(*) FROM revisions INDEXED BY revisions_pending_object_idx "
                      "WHERE synced = 0 AND object_type = 'team'"),
            1);
  EXPECT_EQ(CountRows("SELECT count(*) FROM pragma_table_info('tasks') WHERE name IN "
                      "('is_archived', '_extra')"),
            2);
}

}  // namespace
}  // namespace pulsesync

// Schema drift (docs/CONFLICTS.md, case 5): an app built for TeamPulse schema
// version 1 (tasks.status includes "archived") and one built for version 2
// (status + is_archived, migrations/0007) sync through one real server. The
// old app keeps working: its edits are upgraded, it stores the new field it
// does not know, and nothing either app writes is lost.
#include <memory>
#include <string>

#include "absl/strings/str_cat.h"
#include "client/core/sync_engine.h"
#include "client/store/local_store.h"
#include "client/transport/grpc_transport.h"
#include "common/json.h"
#include "common/uuid.h"
#include "gtest/gtest.h"
#include "tests/testing/status_matchers.h"
#include "tests/testing/subprocess.h"
#include "tests/testing/test_database.h"

namespace pulsesync {
namespace {

using ::pulsesync::testing::ServerProcess;
using ::pulsesync::testing::TestDatabase;

struct App {
  std::unique_ptr<LocalStore> store;
  std::unique_ptr<GrpcTransport> transport;
  std::unique_ptr<SyncEngine> engine;
};

class SchemaDriftE2eTest : public ::testing::Test {
 protected:
  void SetUp() override {
    PS_REQUIRE_POSTGRES();
    ASSERT_OK_AND_ASSIGN(db_, TestDatabase::Create());
    dir_ = testing::MakeTempDir("drift");
    server_ = std::make_unique<ServerProcess>(db_->url(), dir_ + "/pulsesyncd.log");
    ASSERT_OK(server_->Start());
    team_ = NewUuid();
    ASSERT_OK(db_->Execute(absl::StrCat("INSERT INTO teams (id, name) VALUES ('", team_,
                                        "', 'Drift')")));
  }

  App Open(const std::string& name, int schema_version) {
    App app;
    LocalStoreOptions options;
    options.schema_version = schema_version;
    absl::StatusOr<std::unique_ptr<LocalStore>> store =
        LocalStore::Open(dir_ + "/" + name + ".db", options);
    EXPECT_OK(store.status());
    if (!store.ok()) return app;
    app.store = *std::move(store);
    GrpcTransportOptions topts;
    topts.wait_for_ready = true;
    app.transport = GrpcTransport::Create(server_->address(), topts);
    app.engine = std::make_unique<SyncEngine>(app.store.get(), app.transport.get());
    return app;
  }

  static void Sync(App& app) {
    absl::StatusOr<SyncSummary> s = app.engine->Sync();
    ASSERT_OK(s.status());
    EXPECT_EQ(s->push.rejected, 0)
        << (s->push.rejections.empty() ? "" : s->push.rejections[0].reason);
  }

  static std::string Field(App& app, const std::string& id, const char* name) {
    absl::StatusOr<std::optional<JsonValue>> row = app.store->Get("task", id);
    EXPECT_OK(row.status());
    if (!row.ok() || !row->has_value()) return "<no row>";
    const JsonValue* v = (*row)->Find(name);
    return v == nullptr ? "<absent>" : v->Serialize();
  }

  std::string Server(const std::string& id, const std::string& columns) {
    absl::StatusOr<std::string> v = db_->QueryValue(absl::StrCat(
        "SELECT concat_ws('|', ", columns, ") FROM tasks WHERE id = '", id, "'"));
    EXPECT_OK(v.status());
    return v.ok() ? *v : "";
  }

  std::unique_ptr<TestDatabase> db_;
  std::string dir_;
  std::unique_ptr<ServerProcess> server_;
  std::string team_;
};

TEST_F(SchemaDriftE2eTest, AnOldAndANewAppSyncTogetherAndLoseNothing) {
  App old_app = Open("v1", 1);
  App new_app = Open("v2", 2);
  ASSERT_NE(old_app.store, nullptr);
  ASSERT_NE(new_app.store, nullptr);

  // The new app creates a task; the old one receives it, is_archived too,
  // although its schema has no such column.
  JsonValue fields = JsonValue::Object();
  fields.Set("team_id", JsonValue::String(team_));
  fields.Set("title", JsonValue::String("Ship v2"));
  fields.Set("status", JsonValue::String("doing"));
  ASSERT_OK_AND_ASSIGN(const std::string id, new_app.store->Create("task", fields));
  Sync(new_app);
  Sync(old_app);
  EXPECT_EQ(Field(old_app, id, "title"), "\"Ship v2\"");
  EXPECT_EQ(Field(old_app, id, "is_archived"), "false") << "unknown fields are kept";

  // The old app cannot write the field it does not know...
  JsonValue unknown = JsonValue::Object();
  unknown.Set("is_archived", JsonValue::Bool(true));
  EXPECT_TRUE(absl::IsInvalidArgument(old_app.store->Update("task", id, unknown)));

  // ...but archives the version 1 way; the server upgrades the revision.
  JsonValue archive = JsonValue::Object();
  archive.Set("status", JsonValue::String("archived"));
  ASSERT_OK(old_app.store->Update("task", id, archive));
  Sync(old_app);
  EXPECT_EQ(Server(id, "status, is_archived"), "doing|t");
  Sync(new_app);
  EXPECT_EQ(Field(new_app, id, "status"), "\"doing\"");
  EXPECT_EQ(Field(new_app, id, "is_archived"), "true");
  // The old app now holds the server's row: the status it means is in the
  // field it does not know.
  Sync(old_app);
  EXPECT_EQ(Field(old_app, id, "status"), "\"doing\"");
  EXPECT_EQ(Field(old_app, id, "is_archived"), "true");

  // An old app's edit of another field leaves is_archived alone.
  JsonValue rename = JsonValue::Object();
  rename.Set("title", JsonValue::String("Ship v2 (renamed by v1)"));
  ASSERT_OK(old_app.store->Update("task", id, rename));
  Sync(old_app);
  EXPECT_EQ(Server(id, "title, status, is_archived"), "Ship v2 (renamed by v1)|doing|t");

  // The new app unarchives and finishes it; the old app sees both.
  JsonValue finish = JsonValue::Object();
  finish.Set("status", JsonValue::String("done"));
  finish.Set("is_archived", JsonValue::Bool(false));
  ASSERT_OK(new_app.store->Update("task", id, finish));
  Sync(new_app);
  Sync(old_app);
  EXPECT_EQ(Field(old_app, id, "status"), "\"done\"");
  EXPECT_EQ(Field(old_app, id, "is_archived"), "false");
  EXPECT_EQ(Field(old_app, id, "title"), "\"Ship v2 (renamed by v1)\"");

  // Every revision each app sent was applied (none rejected, none pending).
  for (App* app : {&old_app, &new_app}) {
    ASSERT_OK_AND_ASSIGN(SyncState state, app->store->GetSyncState());
    EXPECT_EQ(state.pending_revisions, 0);
  }
  EXPECT_EQ(*db_->QueryValue(absl::StrCat(
                "SELECT count(*) FROM pulsesync.refused_revisions")),
            "0");
}

TEST_F(SchemaDriftE2eTest, UpgradingTheAppMovesKeptFieldsIntoTheirColumn) {
  std::string id;
  {
    App new_app = Open("writer", 2);
    JsonValue fields = JsonValue::Object();
    fields.Set("team_id", JsonValue::String(team_));
    fields.Set("title", JsonValue::String("Archived already"));
    fields.Set("is_archived", JsonValue::Bool(true));
    ASSERT_OK_AND_ASSIGN(id, new_app.store->Create("task", fields));
    Sync(new_app);
  }
  {
    App old_app = Open("upgraded", 1);
    Sync(old_app);
    EXPECT_EQ(Field(old_app, id, "is_archived"), "true");
  }
  // The same database, opened by the app's version 2 build.
  App upgraded = Open("upgraded", 2);
  EXPECT_EQ(Field(upgraded, id, "is_archived"), "true");
  absl::StatusOr<std::vector<JsonValue>> archived = upgraded.store->List("task");
  ASSERT_OK(archived.status());
  ASSERT_EQ(archived->size(), 1u);
  // The value is in its column now (typed), not kept beside the row.
  JsonValue unarchive = JsonValue::Object();
  unarchive.Set("is_archived", JsonValue::Bool(false));
  ASSERT_OK(upgraded.store->Update("task", id, unarchive));
  Sync(upgraded);
  EXPECT_EQ(Server(id, "is_archived"), "f");
}

}  // namespace
}  // namespace pulsesync

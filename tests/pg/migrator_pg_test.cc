#include <algorithm>
#include <atomic>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include <pqxx/pqxx>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/core/migrator.h"
#include "server/service/server.h"
#include "server/storage/pg_session.h"
#include "tests/testing/status_matchers.h"
#include "tests/testing/subprocess.h"
#include "tests/testing/test_database.h"

namespace pulsesync {
namespace {

using ::pulsesync::testing::StatusIs;
using ::pulsesync::testing::TestDatabase;
using ::testing::AllOf;
using ::testing::HasSubstr;

// Every row of pulsesync.schema_migrations, as one text value.
constexpr char kMigrationRows[] =
    "SELECT coalesce(string_agg(name || '|' || checksum || '|' || applied_at::text, E'\\n' "
    "ORDER BY name), '') FROM pulsesync.schema_migrations";

class MigratorPgTest : public ::testing::Test {
 protected:
  void SetUp() override {
    PS_REQUIRE_POSTGRES();
    ASSERT_OK_AND_ASSIGN(db_, TestDatabase::Create(/*migrated=*/false));
    PgSessionOptions options;
    options.database_url = db_->url();
    session_ = std::make_unique<PgSession>(options);
    ASSERT_OK_AND_ASSIGN(real_, LoadMigrations(DefaultMigrationsDir()));
    ASSERT_GE(real_.size(), 3u);
  }

  void TearDown() override {
    if (!dir_.empty()) std::filesystem::remove_all(dir_);
  }

  // Copies migrations/ to a temporary directory the test may edit.
  std::string CopyMigrations() {
    dir_ = ::pulsesync::testing::MakeTempDir("migrator-pg");
    for (const auto& entry : std::filesystem::directory_iterator(DefaultMigrationsDir())) {
      std::filesystem::copy_file(entry.path(), dir_ + "/" + entry.path().filename().string());
    }
    return dir_;
  }

  std::string Query(const std::string& sql) {
    absl::StatusOr<std::string> v = db_->QueryValue(sql);
    EXPECT_OK(v) << sql;
    return v.ok() ? *v : "<error>";
  }

  std::unique_ptr<TestDatabase> db_;
  std::unique_ptr<PgSession> session_;
  std::vector<Migration> real_;
  std::string dir_;
};

TEST_F(MigratorPgTest, AppliesAllOnEmptyDatabaseThenNothing) {
  ASSERT_OK_AND_ASSIGN(int applied, ApplyMigrations(*session_, real_));
  EXPECT_EQ(applied, static_cast<int>(real_.size()));
  EXPECT_EQ(Query("SELECT count(*) FROM pulsesync.schema_migrations"),
            std::to_string(real_.size()));
  for (const Migration& m : real_) {
    EXPECT_EQ(Query(absl::StrCat("SELECT checksum FROM pulsesync.schema_migrations WHERE name = '",
                                 m.name, "'")),
              m.checksum);
  }
  // The objects of each migration exist.
  EXPECT_EQ(Query("SELECT to_regproc('auth.uid')::text"), "auth.uid");
  EXPECT_EQ(Query("SELECT to_regclass('pulsesync.change_log')::text"), "pulsesync.change_log");
  EXPECT_EQ(Query("SELECT count(*) FROM pulsesync.synced_tables"), "6");

  const std::string before = Query(kMigrationRows);
  ASSERT_OK_AND_ASSIGN(int again, ApplyMigrations(*session_, real_));
  EXPECT_EQ(again, 0);
  EXPECT_EQ(Query(kMigrationRows), before);
}

TEST_F(MigratorPgTest, SchemaIsCurrentOnlyAfterApplying) {
  EXPECT_THAT(CheckSchemaCurrent(*session_, real_),
              StatusIs(absl::StatusCode::kFailedPrecondition,
                       AllOf(HasSubstr("0001_supabase_compat"), HasSubstr("0002_sync_engine"),
                             HasSubstr("0003_teampulse"))));
  ASSERT_OK_AND_ASSIGN(MigrationPlan plan, PlanMigrations(*session_, real_));
  EXPECT_TRUE(plan.applied.empty());
  EXPECT_EQ(plan.pending.size(), real_.size());

  ASSERT_OK(ApplyMigrations(*session_, real_).status());
  EXPECT_OK(CheckSchemaCurrent(*session_, real_));
  ASSERT_OK_AND_ASSIGN(plan, PlanMigrations(*session_, real_));
  EXPECT_EQ(plan.applied.size(), real_.size());
  EXPECT_TRUE(plan.pending.empty());
}

TEST_F(MigratorPgTest, PartiallyAppliedSchemaNamesOnlyWhatIsPending) {
  const std::vector<Migration> first_two(real_.begin(), real_.begin() + 2);
  ASSERT_OK_AND_ASSIGN(int applied, ApplyMigrations(*session_, first_two));
  EXPECT_EQ(applied, 2);
  absl::Status s = CheckSchemaCurrent(*session_, real_);
  EXPECT_THAT(s, StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("0003_teampulse")));
  EXPECT_THAT(std::string(s.message()), ::testing::Not(HasSubstr("0002_sync_engine")));
}

TEST_F(MigratorPgTest, RefusesAnAppliedMigrationThatWasEdited) {
  const std::string dir = CopyMigrations();
  ASSERT_OK_AND_ASSIGN(std::vector<Migration> ms, LoadMigrations(dir));
  ASSERT_OK(ApplyMigrations(*session_, ms).status());
  const std::string rows = Query(kMigrationRows);
  {
    std::ofstream out(dir + "/0002_sync_engine.sql", std::ios::app);
    out << "\n-- an innocent-looking comment\n";
  }
  ASSERT_OK_AND_ASSIGN(std::vector<Migration> edited, LoadMigrations(dir));
  EXPECT_THAT(CheckSchemaCurrent(*session_, edited),
              StatusIs(absl::StatusCode::kFailedPrecondition,
                       AllOf(HasSubstr("0002_sync_engine"), HasSubstr("edited"))));
  EXPECT_THAT(PlanMigrations(*session_, edited),
              StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("edited")));
  EXPECT_THAT(ApplyMigrations(*session_, edited),
              StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("edited")));
  EXPECT_EQ(Query(kMigrationRows), rows);
}

TEST_F(MigratorPgTest, RefusesADatabaseWithAMigrationThisBuildDoesNotKnow) {
  ASSERT_OK(ApplyMigrations(*session_, real_).status());
  ASSERT_OK(db_->Execute(
      "INSERT INTO pulsesync.schema_migrations (name, checksum) VALUES ('0099_future', 'x')"));
  EXPECT_THAT(CheckSchemaCurrent(*session_, real_),
              StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("0099_future")));
  EXPECT_THAT(ApplyMigrations(*session_, real_),
              StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("0099_future")));
}

TEST_F(MigratorPgTest, FailingMigrationLeavesNothingBehind) {
  const std::string dir = CopyMigrations();
  {
    std::ofstream out(dir + "/9999_broken.sql");
    out << "CREATE TABLE public.half_done (id int);\n"
           "INSERT INTO public.half_done VALUES (1);\n"
           "SELECT * FROM public.no_such_table;\n";
  }
  ASSERT_OK_AND_ASSIGN(std::vector<Migration> ms, LoadMigrations(dir));
  ASSERT_EQ(ms.size(), real_.size() + 1);
  absl::StatusOr<int> applied = ApplyMigrations(*session_, ms);
  ASSERT_FALSE(applied.ok());
  EXPECT_THAT(std::string(applied.status().message()),
              AllOf(HasSubstr("9999_broken"), HasSubstr("no_such_table")));
  // The failing one: no objects, not recorded.
  EXPECT_EQ(Query("SELECT to_regclass('public.half_done')::text"), "NULL");
  EXPECT_EQ(Query("SELECT count(*) FROM pulsesync.schema_migrations WHERE name = '9999_broken'"),
            "0");
  // The ones before it: applied and recorded.
  std::vector<std::string> real_names;
  for (const Migration& m : real_) real_names.push_back(m.name);
  EXPECT_EQ(Query("SELECT string_agg(name, ',' ORDER BY name) FROM pulsesync.schema_migrations"),
            absl::StrJoin(real_names, ","));
  EXPECT_EQ(Query("SELECT to_regclass('public.tasks')::text"), "tasks");
  EXPECT_THAT(CheckSchemaCurrent(*session_, ms),
              StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("9999_broken")));

  // Fixed (the file was never applied, so editing it is allowed): applies.
  {
    std::ofstream out(dir + "/9999_broken.sql", std::ios::trunc);
    out << "CREATE TABLE public.half_done (id int);\n";
  }
  ASSERT_OK_AND_ASSIGN(ms, LoadMigrations(dir));
  ASSERT_OK_AND_ASSIGN(int fixed, ApplyMigrations(*session_, ms));
  EXPECT_EQ(fixed, 1);
  EXPECT_OK(CheckSchemaCurrent(*session_, ms));
}

TEST_F(MigratorPgTest, ConcurrentReplicasApplyEachMigrationOnce) {
  // Several rounds on fresh databases make an overlap of the two appliers
  // likely; the assertions hold for any interleaving.
  for (int round = 0; round < 3; ++round) {
    SCOPED_TRACE(absl::StrCat("round ", round));
    ASSERT_OK_AND_ASSIGN(std::unique_ptr<TestDatabase> db, TestDatabase::Create(false));
    std::atomic<int> ready{0};
    absl::StatusOr<int> results[2];
    std::vector<std::thread> threads;
    for (int t = 0; t < 2; ++t) {
      threads.emplace_back([&, t] {
        PgSessionOptions options;
        options.database_url = db->url();
        PgSession session(options);
        absl::Status connected = session.EnsureConnected();
        ++ready;
        while (ready.load() < 2) std::this_thread::yield();
        results[t] = connected.ok() ? ApplyMigrations(session, real_)
                                    : absl::StatusOr<int>(connected);
      });
    }
    for (std::thread& t : threads) t.join();
    ASSERT_OK(results[0].status());
    ASSERT_OK(results[1].status());
    EXPECT_EQ(*results[0] + *results[1], static_cast<int>(real_.size()));
    ASSERT_OK_AND_ASSIGN(std::string count,
                         db->QueryValue("SELECT count(*) FROM pulsesync.schema_migrations"));
    EXPECT_EQ(count, std::to_string(real_.size()));
    ASSERT_OK_AND_ASSIGN(std::string synced,
                         db->QueryValue("SELECT count(*) FROM pulsesync.synced_tables"));
    EXPECT_EQ(synced, "6");
  }
}

// 0016 restates what the audit sealer reads (audit_unsealed, audit_redact)
// to make it cheaper; entries written and read before it must read the same
// after it, byte for byte, or chains sealed before and after would disagree
// with `audit verify`. Covers entries of a type with excluded fields present
// (the redacted record), of a type whose excluded field is absent (no list),
// of a type with none; inserts, an update, a hard delete, with and without
// claims; and revision events.
TEST_F(MigratorPgTest, SealingReadsTheSameEntriesAfter0016) {
  auto it = std::find_if(real_.begin(), real_.end(),
                         [](const Migration& m) { return absl::StartsWith(m.name, "0016_"); });
  ASSERT_NE(it, real_.end());
  const std::vector<Migration> before(real_.begin(), it);
  ASSERT_OK(ApplyMigrations(*session_, before).status());
  ASSERT_OK(db_->Execute(
      "INSERT INTO pulsesync.audit_excluded_fields VALUES "
      "  ('task', 'status'), ('task', 'description'), ('project', 'no_such_column');"
      "INSERT INTO teams (id, name) VALUES ('20000000-0000-4000-8000-000000000002', 'T');"
      "SELECT set_config('request.jwt.claims', "
      "  '{\"sub\":\"10000000-0000-4000-8000-000000000001\",\"role\":\"authenticated\"}', false);"
      "INSERT INTO projects (id, team_id, name) VALUES "
      "  ('30000000-0000-4000-8000-000000000003', '20000000-0000-4000-8000-000000000002', 'P');"
      "INSERT INTO tasks (id, team_id, project_id, title, description) "
      "  SELECT ('40000000-0000-4000-8000-00000000000' || g)::uuid, "
      "         '20000000-0000-4000-8000-000000000002', '30000000-0000-4000-8000-000000000003', "
      "         'task ' || g, 'secret ' || g FROM generate_series(1, 5) g;"
      "UPDATE tasks SET status = 'doing', description = NULL "
      "  WHERE id = '40000000-0000-4000-8000-000000000002';"
      "SELECT set_config('request.jwt.claims', '', false);"
      "DELETE FROM tasks WHERE id = '40000000-0000-4000-8000-000000000003';"
      "SELECT pulsesync.record_revision_event('50000000-0000-4000-8000-000000000005', "
      "  'device-a', 7, 'task', '40000000-0000-4000-8000-000000000001', 'rejected', 'test');"));
  constexpr char kRead[] =
      "SELECT count(*)::text || E'\\n' || string_agg(concat_ws(' ', source, entry_position, "
      "txid, entry_at, coalesce(to_jsonb(excluded)::text, 'null'), canonical), E'\\n' "
      "ORDER BY txid, entry_position) FROM pulsesync.audit_unsealed('0', 0, 1000)";
  // audit_unsealed holds back entries of transactions that may still be
  // running anywhere in the cluster (their txid not below the snapshot's
  // xmin): another test's transaction open at the moment would hide them.
  // Read until all 10 are out, as the sealer would.
  auto read_all = [&] {
    std::string read;
    EXPECT_TRUE(::pulsesync::testing::WaitFor(
        [&] {
          read = Query(kRead);
          return absl::StartsWith(read, "10\n");
        },
        absl::Seconds(30)))
        << "the 10 entries never all became sealable: " << read;
    return read;
  };
  const std::string read_before = read_all();
  ASSERT_OK(ApplyMigrations(*session_, real_).status());
  ASSERT_EQ(Query("SELECT count(*) FROM pulsesync.schema_migrations WHERE name LIKE '0016_%'"),
            "1");
  EXPECT_EQ(read_all(), read_before);
  // What the comparison covered: 1 team, 1 project, 5 tasks, 1 update,
  // 1 delete, 1 event; the tasks' records redacted with both fields listed
  // in order, the project's with no list.
  EXPECT_THAT(read_before, ::testing::StartsWith("10\n"));
  EXPECT_THAT(read_before, HasSubstr(R"(["description", "status"])"));
  EXPECT_THAT(read_before, HasSubstr(R"("description": "[excluded]")"));
  EXPECT_THAT(read_before, ::testing::Not(HasSubstr("secret")));
  EXPECT_THAT(read_before, HasSubstr(R"("name": "P")"));
  EXPECT_THAT(read_before, HasSubstr(R"("rejected")"));
}

}  // namespace
}  // namespace pulsesync

#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "server/core/migrator.h"
#include "server/service/server.h"
#include "tests/testing/status_matchers.h"
#include "tests/testing/subprocess.h"

namespace pulsesync {
namespace {

using ::pulsesync::testing::MakeTempDir;
using ::pulsesync::testing::StatusIs;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

void WriteFile(const std::string& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << text;
  ASSERT_TRUE(out.good()) << path;
}

std::vector<std::string> Names(const std::vector<Migration>& ms) {
  std::vector<std::string> out;
  for (const Migration& m : ms) out.push_back(m.name);
  return out;
}

TEST(MigrationChecksumTest, IsLowercaseHexSha256) {
  EXPECT_EQ(MigrationChecksum(""),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  EXPECT_EQ(MigrationChecksum("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  // Every byte counts, including a trailing newline.
  EXPECT_NE(MigrationChecksum("SELECT 1;"), MigrationChecksum("SELECT 1;\n"));
}

TEST(LoadMigrationsTest, SortsByNameAndIgnoresOtherFiles) {
  const std::string dir = MakeTempDir("migrations");
  WriteFile(dir + "/0003_third.sql", "SELECT 3;");
  WriteFile(dir + "/0001_first.sql", "SELECT 1;");
  WriteFile(dir + "/0002_second.sql", "SELECT 2;\n");
  WriteFile(dir + "/README.md", "not a migration");
  WriteFile(dir + "/0004_notes.txt", "not a migration either");
  WriteFile(dir + "/0005_backup.sql.bak", "SELECT 5;");
  std::filesystem::create_directory(dir + "/0006_subdir.sql");  // not a regular file
  ASSERT_OK_AND_ASSIGN(std::vector<Migration> ms, LoadMigrations(dir));
  EXPECT_THAT(Names(ms), ElementsAre("0001_first", "0002_second", "0003_third"));
  EXPECT_EQ(ms[0].sql, "SELECT 1;");
  EXPECT_EQ(ms[1].sql, "SELECT 2;\n");
  EXPECT_EQ(ms[1].checksum, MigrationChecksum("SELECT 2;\n"));
  std::filesystem::remove_all(dir);
}

TEST(LoadMigrationsTest, EmptyDirectoryHasNoMigrations) {
  const std::string dir = MakeTempDir("migrations-empty");
  ASSERT_OK_AND_ASSIGN(std::vector<Migration> ms, LoadMigrations(dir));
  EXPECT_TRUE(ms.empty());
  std::filesystem::remove_all(dir);
}

TEST(LoadMigrationsTest, RefusesBadlyNamedSqlFiles) {
  for (const char* name : {"schema.sql", "_first.sql", "0001.sql", "0001_.sql", "v0001_x.sql",
                           "00a1_x.sql"}) {
    SCOPED_TRACE(name);
    const std::string dir = MakeTempDir("migrations-bad");
    WriteFile(dir + "/0001_ok.sql", "SELECT 1;");
    WriteFile(dir + "/" + name, "SELECT 2;");
    EXPECT_THAT(LoadMigrations(dir),
                StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr(name)));
    std::filesystem::remove_all(dir);
  }
}

TEST(LoadMigrationsTest, RefusesDuplicateNumbers) {
  const std::string dir = MakeTempDir("migrations-dup");
  WriteFile(dir + "/0001_first.sql", "SELECT 1;");
  WriteFile(dir + "/0002_second.sql", "SELECT 2;");
  WriteFile(dir + "/0002_other.sql", "SELECT 3;");
  EXPECT_THAT(LoadMigrations(dir),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("same number 0002")));
  std::filesystem::remove_all(dir);
}

// Migrations apply in name order, so the order of names must be the order of
// numbers: "NNNN_" with exactly four digits. A file numbered with another
// width sorts out of numeric order ("0003_c" < "2_b") or names the same number
// as another file ("2_b" and "0002_x"), so it must be refused.
TEST(LoadMigrationsTest, RefusesNumbersThatAreNotFourDigits) {
  const std::string dir = MakeTempDir("migrations-width");
  WriteFile(dir + "/0001_a.sql", "SELECT 1;");
  WriteFile(dir + "/2_b.sql", "SELECT 2;");
  WriteFile(dir + "/0003_c.sql", "SELECT 3;");
  absl::StatusOr<std::vector<Migration>> ms = LoadMigrations(dir);
  EXPECT_THAT(ms, StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("2_b.sql")))
      << (ms.ok() ? "loaded in the order " + ::testing::PrintToString(Names(*ms)) : "");
  std::filesystem::remove_all(dir);
}

TEST(LoadMigrationsTest, MissingDirectoryIsNotFound) {
  EXPECT_THAT(LoadMigrations("/nonexistent/pulsesync/migrations"),
              StatusIs(absl::StatusCode::kNotFound, HasSubstr("/nonexistent/pulsesync")));
}

TEST(LoadMigrationsTest, LoadsTheRealMigrations) {
  ASSERT_OK_AND_ASSIGN(std::vector<Migration> ms, LoadMigrations(DefaultMigrationsDir()));
  ASSERT_GE(ms.size(), 3u);
  EXPECT_EQ(ms[0].name, "0001_supabase_compat");
  EXPECT_EQ(ms[1].name, "0002_sync_engine");
  EXPECT_EQ(ms[2].name, "0003_teampulse");
  for (const Migration& m : ms) {
    EXPECT_FALSE(m.sql.empty()) << m.name;
    EXPECT_EQ(m.checksum, MigrationChecksum(m.sql)) << m.name;
    EXPECT_EQ(m.checksum.size(), 64u);
  }
  EXPECT_NE(ms[1].sql.find("apply_revisions"), std::string::npos);
}

}  // namespace
}  // namespace pulsesync

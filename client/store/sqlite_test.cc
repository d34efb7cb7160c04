#include "client/store/sqlite.h"

#include <sqlite3.h>
#include <unistd.h>

#include <cstdio>
#include <string>

#include "gtest/gtest.h"

namespace pulsesync {
namespace sqlite {
namespace {

TEST(StatusFromSqliteTest, TranslatesResultCodes) {
  EXPECT_TRUE(StatusFromSqlite(SQLITE_OK, "x").ok());
  EXPECT_TRUE(StatusFromSqlite(SQLITE_DONE, "x").ok());
  EXPECT_EQ(StatusFromSqlite(SQLITE_BUSY, "x").code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(StatusFromSqlite(SQLITE_BUSY_SNAPSHOT, "x").code(), absl::StatusCode::kAborted);
  EXPECT_EQ(StatusFromSqlite(SQLITE_CONSTRAINT_PRIMARYKEY, "x").code(),
            absl::StatusCode::kAlreadyExists);
  EXPECT_EQ(StatusFromSqlite(SQLITE_CONSTRAINT_UNIQUE, "x").code(),
            absl::StatusCode::kAlreadyExists);
  EXPECT_EQ(StatusFromSqlite(SQLITE_CONSTRAINT_CHECK, "x").code(),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(StatusFromSqlite(SQLITE_CORRUPT, "x").code(), absl::StatusCode::kDataLoss);
  EXPECT_EQ(StatusFromSqlite(SQLITE_FULL, "x").code(), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(StatusFromSqlite(SQLITE_READONLY, "x").code(), absl::StatusCode::kPermissionDenied);
  EXPECT_EQ(StatusFromSqlite(SQLITE_ERROR, "ctx").code(), absl::StatusCode::kInternal);
  EXPECT_NE(StatusFromSqlite(SQLITE_ERROR, "ctx").message().find("ctx: "), std::string::npos);
}

class SqliteTest : public ::testing::Test {
 protected:
  void SetUp() override {
    path_ = ::testing::TempDir() + "/sqlite_test_" + std::to_string(getpid()) + ".db";
    std::remove(path_.c_str());
    absl::StatusOr<SqliteDb> db = SqliteDb::Open(path_, /*create=*/true);
    ASSERT_TRUE(db.ok()) << db.status();
    db_ = std::make_unique<SqliteDb>(*std::move(db));
    ASSERT_TRUE(db_->Exec("CREATE TABLE t (k INTEGER PRIMARY KEY, v TEXT NOT NULL)").ok());
  }
  void TearDown() override {
    db_.reset();
    std::remove(path_.c_str());
  }
  int64_t Count() {
    absl::StatusOr<Statement> st = db_->Prepare("SELECT count(*) FROM t");
    EXPECT_TRUE(st.ok());
    EXPECT_TRUE(*st->Step());
    return st->ColumnInt64(0);
  }

  std::string path_;
  std::unique_ptr<SqliteDb> db_;
};

TEST_F(SqliteTest, OpenWithoutCreateOfMissingFileIsNotFound) {
  absl::StatusOr<SqliteDb> db = SqliteDb::Open(path_ + ".missing", /*create=*/false);
  EXPECT_EQ(db.status().code(), absl::StatusCode::kNotFound);
}

TEST_F(SqliteTest, TransactionRollsBackUnlessCommitted) {
  {
    absl::StatusOr<Transaction> txn = Transaction::BeginImmediate(db_.get());
    ASSERT_TRUE(txn.ok()) << txn.status();
    ASSERT_TRUE(db_->Exec("INSERT INTO t VALUES (1, 'a')").ok());
  }
  EXPECT_EQ(Count(), 0);
  {
    absl::StatusOr<Transaction> txn = Transaction::BeginImmediate(db_.get());
    ASSERT_TRUE(txn.ok());
    ASSERT_TRUE(db_->Exec("INSERT INTO t VALUES (1, 'a')").ok());
    ASSERT_TRUE(txn->Commit().ok());
  }
  EXPECT_EQ(Count(), 1);
}

TEST_F(SqliteTest, ConstraintViolationsAreTranslated) {
  ASSERT_TRUE(db_->Exec("INSERT INTO t VALUES (1, 'a')").ok());
  absl::StatusOr<Statement> st = db_->Prepare("INSERT INTO t VALUES (?, ?)");
  ASSERT_TRUE(st.ok());
  ASSERT_TRUE(st->BindInt64(1, 1).ok());
  ASSERT_TRUE(st->BindText(2, "b").ok());
  EXPECT_EQ(st->Run().code(), absl::StatusCode::kAlreadyExists);
  st->Reset();
  ASSERT_TRUE(st->BindInt64(1, 2).ok());
  ASSERT_TRUE(st->BindNull(2).ok());
  EXPECT_EQ(st->Run().code(), absl::StatusCode::kFailedPrecondition);
}

TEST_F(SqliteTest, APrimaryKeyRefusalIsToldFromAnotherUniqueOne) {
  ASSERT_TRUE(db_->Exec("CREATE TABLE u (id TEXT PRIMARY KEY, code TEXT UNIQUE);"
                        "INSERT INTO u VALUES ('a', 'x')")
                  .ok());
  absl::Status st = db_->Exec("INSERT INTO u VALUES ('a', 'y')");
  EXPECT_EQ(st.code(), absl::StatusCode::kAlreadyExists);
  EXPECT_TRUE(db_->primary_key_refused());
  st = db_->Exec("INSERT INTO u VALUES ('b', 'x')");
  EXPECT_EQ(st.code(), absl::StatusCode::kAlreadyExists);
  EXPECT_FALSE(db_->primary_key_refused());
}

TEST_F(SqliteTest, WriterBlockedPastBusyTimeoutIsUnavailable) {
  absl::StatusOr<SqliteDb> other = SqliteDb::Open(path_, /*create=*/false);
  ASSERT_TRUE(other.ok());
  ASSERT_TRUE(other->Exec("PRAGMA busy_timeout = 10").ok());
  absl::StatusOr<Transaction> holder = Transaction::BeginImmediate(db_.get());
  ASSERT_TRUE(holder.ok());
  absl::StatusOr<Transaction> blocked = Transaction::BeginImmediate(&*other);
  EXPECT_EQ(blocked.status().code(), absl::StatusCode::kUnavailable) << blocked.status();
}

TEST_F(SqliteTest, SyntaxErrorIsInternalWithTheSql) {
  absl::StatusOr<Statement> st = db_->Prepare("SELEKT 1");
  EXPECT_EQ(st.status().code(), absl::StatusCode::kInternal);
  EXPECT_NE(st.status().message().find("SELEKT"), std::string::npos);
}

}  // namespace
}  // namespace sqlite
}  // namespace pulsesync

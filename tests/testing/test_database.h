// A throwaway PostgreSQL database per test, on the cluster named by
// PULSESYNC_TEST_DATABASE_URL (a superuser URL; scripts/test.sh starts that
// cluster). Without it, tests fail when CI=true and skip elsewhere, saying so.
#ifndef PULSESYNC_TESTS_TESTING_TEST_DATABASE_H_
#define PULSESYNC_TESTS_TESTING_TEST_DATABASE_H_

#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "gtest/gtest.h"

namespace pulsesync::testing {

// The admin URL, or "" when none is configured.
std::string AdminDatabaseUrl();

// Call at the top of a test (or SetUp): skips or fails when there is no
// PostgreSQL. Use as: PS_REQUIRE_POSTGRES();
#define PS_REQUIRE_POSTGRES()                                                         \
  do {                                                                                \
    if (::pulsesync::testing::AdminDatabaseUrl().empty()) {                           \
      if (::pulsesync::testing::RunningInCi()) {                                      \
        FAIL() << "PULSESYNC_TEST_DATABASE_URL is not set; CI must provide PostgreSQL"; \
      }                                                                               \
      GTEST_SKIP() << "PULSESYNC_TEST_DATABASE_URL is not set: skipping a PostgreSQL " \
                      "test on a developer machine (scripts/test.sh sets it)";       \
    }                                                                                 \
  } while (0)

bool RunningInCi();

// Creates a database with a unique name; drops it (terminating leftover
// connections) on destruction.
class TestDatabase {
 public:
  // `migrated`: apply migrations/ with the server's migrator. `admin_url`:
  // the cluster to create it on; "" = AdminDatabaseUrl() (a PgCluster's
  // url() for a private one).
  static absl::StatusOr<std::unique_ptr<TestDatabase>> Create(bool migrated = true,
                                                              const std::string& admin_url = "");
  ~TestDatabase();

  const std::string& url() const { return url_; }
  const std::string& name() const { return name_; }

  // Runs SQL on a fresh connection and returns the first column of the first
  // row as text ("" for no row, "NULL" for null).
  absl::StatusOr<std::string> QueryValue(const std::string& sql) const;
  absl::Status Execute(const std::string& sql) const;

 private:
  TestDatabase(std::string name, std::string url, std::string admin_url)
      : name_(std::move(name)), url_(std::move(url)), admin_url_(std::move(admin_url)) {}
  std::string name_;
  std::string url_;
  std::string admin_url_;
};

// `base` with its database name replaced by `dbname`.
std::string WithDatabase(const std::string& base, const std::string& dbname);

}  // namespace pulsesync::testing

#endif  // PULSESYNC_TESTS_TESTING_TEST_DATABASE_H_

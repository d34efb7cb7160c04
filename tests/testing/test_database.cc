#include "tests/testing/test_database.h"

#include <cstdlib>
#include <pqxx/pqxx>

#include "absl/strings/str_cat.h"
#include "absl/strings/ascii.h"
#include "common/status_macros.h"
#include "common/uuid.h"
#include "server/core/migrator.h"
#include "server/service/server.h"
#include "server/storage/pg_session.h"

namespace pulsesync::testing {

std::string AdminDatabaseUrl() {
  const char* v = std::getenv("PULSESYNC_TEST_DATABASE_URL");
  return v == nullptr ? "" : v;
}

bool RunningInCi() {
  const char* v = std::getenv("CI");
  return v != nullptr && *v != '\0' && std::string(v) != "false" && std::string(v) != "0";
}

std::string WithDatabase(const std::string& base, const std::string& dbname) {
  // postgresql://user@host:port/db?params
  const size_t scheme = base.find("://");
  const size_t slash = base.find('/', scheme == std::string::npos ? 0 : scheme + 3);
  const size_t query = base.find('?');
  std::string prefix = slash == std::string::npos ? base.substr(0, query) : base.substr(0, slash);
  std::string suffix = query == std::string::npos ? "" : base.substr(query);
  return absl::StrCat(prefix, "/", dbname, suffix);
}

absl::StatusOr<std::unique_ptr<TestDatabase>> TestDatabase::Create(bool migrated,
                                                                   const std::string& admin_url) {
  const std::string admin = admin_url.empty() ? AdminDatabaseUrl() : admin_url;
  if (admin.empty()) return absl::FailedPreconditionError("PULSESYNC_TEST_DATABASE_URL is not set");
  std::string id = NewUuid().substr(0, 8) + NewUuid().substr(24, 12);
  const std::string name = absl::StrCat("pstest_", id);
  try {
    pqxx::connection conn(admin);
    pqxx::nontransaction tx(conn);
    tx.exec(absl::StrCat("CREATE DATABASE ", name));
  } catch (const std::exception& e) {
    return StatusFromException(e);
  }
  std::unique_ptr<TestDatabase> db(new TestDatabase(name, WithDatabase(admin, name), admin));
  if (migrated) {
    PS_ASSIGN_OR_RETURN(std::vector<Migration> migrations, LoadMigrations(DefaultMigrationsDir()));
    PgSessionOptions options;
    options.database_url = db->url();
    PgSession session(options);
    PS_RETURN_IF_ERROR(ApplyMigrations(session, migrations).status());
  }
  return db;
}

TestDatabase::~TestDatabase() {
  try {
    pqxx::connection conn(admin_url_);
    pqxx::nontransaction tx(conn);
    tx.exec(absl::StrCat("DROP DATABASE IF EXISTS ", name_, " WITH (FORCE)"));
  } catch (const std::exception&) {
    // Best effort: a leftover test database is harmless in a throwaway cluster.
  }
}

absl::StatusOr<std::string> TestDatabase::QueryValue(const std::string& sql) const {
  try {
    pqxx::connection conn(url_);
    pqxx::work tx(conn);
    const pqxx::result r = tx.exec(sql);
    tx.commit();
    if (r.empty() || r.columns() == 0) return std::string();
    return r[0][0].is_null() ? std::string("NULL") : r[0][0].as<std::string>();
  } catch (const std::exception& e) {
    return StatusFromException(e);
  }
}

absl::Status TestDatabase::Execute(const std::string& sql) const {
  return QueryValue(sql).status();
}

}  // namespace pulsesync::testing

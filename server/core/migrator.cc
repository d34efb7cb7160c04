#include "server/core/migrator.h"

#include <openssl/sha.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <map>
#include <pqxx/pqxx>
#include <sstream>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/log.h"
#include "common/status_macros.h"
#include "server/storage/pg_session.h"

namespace pulsesync {
namespace {

// Any constant will do; all replicas must agree on it.
constexpr int64_t kMigrationLockKey = 7270111402;

constexpr char kBootstrapSql[] = R"sql(
  CREATE SCHEMA IF NOT EXISTS pulsesync;
  CREATE TABLE IF NOT EXISTS pulsesync.schema_migrations (
    name text PRIMARY KEY,
    checksum text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
  );
)sql";

absl::StatusOr<std::map<std::string, std::string>> ReadApplied(pqxx::transaction_base& tx) {
  std::map<std::string, std::string> applied;
  const pqxx::result exists = tx.exec("SELECT to_regclass('pulsesync.schema_migrations')::text");
  if (exists[0][0].is_null()) return applied;
  for (const auto& row : tx.exec("SELECT name, checksum FROM pulsesync.schema_migrations")) {
    applied[row[0].as<std::string>()] = row[1].as<std::string>();
  }
  return applied;
}

absl::StatusOr<MigrationPlan> Plan(const std::map<std::string, std::string>& applied,
                                   const std::vector<Migration>& migrations) {
  MigrationPlan plan;
  std::map<std::string, const Migration*> known;
  for (const Migration& m : migrations) known[m.name] = &m;
  for (const auto& [name, checksum] : applied) {
    auto it = known.find(name);
    if (it == known.end()) {
      return absl::FailedPreconditionError(absl::StrCat(
          "the database has migration ", name,
          " that this build of pulsesyncd does not know: upgrade pulsesyncd"));
    }
    if (it->second->checksum != checksum) {
      return absl::FailedPreconditionError(absl::StrCat(
          "migration ", name, " was edited after it was applied (applied checksum ", checksum,
          ", file checksum ", it->second->checksum,
          "): add a new migration instead of editing an applied one"));
    }
  }
  for (const Migration& m : migrations) {
    (applied.count(m.name) ? plan.applied : plan.pending).push_back(m.name);
  }
  return plan;
}

}  // namespace

std::string MigrationChecksum(absl::string_view sql) {
  unsigned char digest[SHA256_DIGEST_LENGTH];
  SHA256(reinterpret_cast<const unsigned char*>(sql.data()), sql.size(), digest);
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out;
  for (unsigned char b : digest) {
    out.push_back(kHex[b >> 4]);
    out.push_back(kHex[b & 0xF]);
  }
  return out;
}

absl::StatusOr<std::vector<Migration>> LoadMigrations(const std::string& dir) {
  namespace fs = std::filesystem;
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) {
    return absl::NotFoundError(absl::StrCat("migrations directory not found: ", dir));
  }
  std::vector<Migration> out;
  std::map<std::string, std::string> numbers;
  for (const auto& entry : fs::directory_iterator(dir, ec)) {
    const std::string file = entry.path().filename().string();
    if (!entry.is_regular_file() || !absl::EndsWith(file, ".sql")) continue;
    const std::string name = file.substr(0, file.size() - 4);
    const size_t us = name.find('_');
    // Exactly four digits: names sort in number order only at one width.
    if (us != 4 || us + 1 == name.size() ||
        !std::all_of(name.begin(), name.begin() + us,
                     [](char c) { return absl::ascii_isdigit(static_cast<unsigned char>(c)); })) {
      return absl::InvalidArgumentError(
          absl::StrCat("migration file ", file, " is not named NNNN_description.sql (four digits)"));
    }
    const std::string number = name.substr(0, us);
    if (numbers.count(number)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "migrations ", numbers[number], " and ", name, " have the same number ", number));
    }
    numbers[number] = name;
    std::ifstream in(entry.path(), std::ios::binary);
    std::stringstream buf;
    buf << in.rdbuf();
    if (!in.good() && !in.eof()) {
      return absl::InternalError(absl::StrCat("cannot read ", entry.path().string()));
    }
    Migration m;
    m.name = name;
    m.sql = buf.str();
    m.checksum = MigrationChecksum(m.sql);
    out.push_back(std::move(m));
  }
  if (ec) return absl::InternalError(absl::StrCat("cannot list ", dir, ": ", ec.message()));
  std::sort(out.begin(), out.end(),
            [](const Migration& a, const Migration& b) { return a.name < b.name; });
  return out;
}

absl::StatusOr<MigrationPlan> PlanMigrations(PgSession& session,
                                             const std::vector<Migration>& migrations) {
  absl::StatusOr<MigrationPlan> plan;
  PS_RETURN_IF_ERROR(session.RunTransaction(
      TxMode::kRepeatableReadOnly, [&](pqxx::transaction_base& tx) -> absl::Status {
        PS_ASSIGN_OR_RETURN(auto applied, ReadApplied(tx));
        plan = Plan(applied, migrations);
        return absl::OkStatus();
      }));
  return plan;
}

absl::StatusOr<int> ApplyMigrations(PgSession& session, const std::vector<Migration>& migrations) {
  PS_RETURN_IF_ERROR(session.RunTransaction(TxMode::kReadWrite, [&](pqxx::transaction_base& tx) {
    tx.exec(absl::StrCat("SELECT pg_advisory_xact_lock(", kMigrationLockKey, ")"));
    tx.exec(kBootstrapSql);
    return absl::OkStatus();
  }));
  int applied_now = 0;
  for (const Migration& m : migrations) {
    bool applied_here = false;
    absl::Status s = session.RunTransaction(
        TxMode::kReadWrite, [&](pqxx::transaction_base& tx) -> absl::Status {
          applied_here = false;
          tx.exec(absl::StrCat("SELECT pg_advisory_xact_lock(", kMigrationLockKey, ")"));
          // Re-read under the lock: another replica may have applied it.
          PS_ASSIGN_OR_RETURN(auto applied, ReadApplied(tx));
          PS_RETURN_IF_ERROR(Plan(applied, migrations).status());
          if (applied.count(m.name)) return absl::OkStatus();
          LogInfo("applying migration", {{"name", m.name}});
          tx.exec(m.sql);
          tx.exec_params("INSERT INTO pulsesync.schema_migrations (name, checksum) VALUES ($1, $2)",
                         m.name, m.checksum);
          applied_here = true;
          return absl::OkStatus();
        });
    if (!s.ok()) {
      return absl::Status(s.code(), absl::StrCat("migration ", m.name, " failed: ", s.message()));
    }
    if (applied_here) ++applied_now;
  }
  return applied_now;
}

absl::Status CheckSchemaCurrent(PgSession& session, const std::vector<Migration>& migrations) {
  PS_ASSIGN_OR_RETURN(MigrationPlan plan, PlanMigrations(session, migrations));
  if (!plan.pending.empty()) {
    return absl::FailedPreconditionError(
        absl::StrCat("the database schema is not current: ", plan.pending.size(),
                     " pending migration(s) (", absl::StrJoin(plan.pending, ", "),
                     "); run `pulsesyncd migrate`"));
  }
  return absl::OkStatus();
}

}  // namespace pulsesync

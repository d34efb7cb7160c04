#include "server/core/database_info.h"

#include <pqxx/pqxx>

#include "common/status_macros.h"
#include "server/storage/pg_session.h"

namespace pulsesync {

absl::StatusOr<DatabaseInfo> DescribeDatabase(PgSession& session) {
  DatabaseInfo info;
  PS_RETURN_IF_ERROR(session.RunTransaction(
      TxMode::kRepeatableReadOnly, [&](pqxx::transaction_base& tx) {
        info = DatabaseInfo();
        const pqxx::row r = tx.exec1(
            "SELECT (SELECT system_identifier FROM pg_control_system())::text, "
            "(SELECT max(name) FROM pulsesync.schema_migrations), pulsesync.schema_version()");
        info.system_id = r[0].as<uint64_t>();
        if (!r[1].is_null()) info.latest_migration = r[1].as<std::string>();
        info.schema_version = r[2].as<int>();
        for (const auto& row : tx.exec(
                 "SELECT s.object_type, c.relname::text FROM pulsesync.synced_tables s "
                 "JOIN pg_class c ON c.oid = s.table_oid ORDER BY s.object_type")) {
          const std::string type = row[0].as<std::string>();
          const std::string table = row[1].as<std::string>();
          info.object_types.push_back(type);
          info.table_names[type] = table;
          info.table_names[table] = table;
        }
        return absl::OkStatus();
      }));
  return info;
}

}  // namespace pulsesync

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
            "(SELECT max(name) FROM pulsesync.schema_migrations)");
        info.system_id = r[0].as<uint64_t>();
        if (!r[1].is_null()) info.latest_migration = r[1].as<std::string>();
        for (const auto& row :
             tx.exec("SELECT object_type FROM pulsesync.synced_tables ORDER BY object_type")) {
          info.object_types.push_back(row[0].as<std::string>());
        }
        return absl::OkStatus();
      }));
  return info;
}

}  // namespace pulsesync

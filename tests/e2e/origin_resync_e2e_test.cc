// A server that lost revisions it had acknowledged (its database restored
// from an older backup, or commits lost in a crash with synchronous_commit
// off) answers the client's next push OUT_OF_ORDER with the seq it expects;
// the client sends the lost revisions again from there, and nothing is lost.
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

TEST(OriginResyncE2eTest, RevisionsTheServerLostAreSentAgain) {
  PS_REQUIRE_POSTGRES();
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<TestDatabase> db, TestDatabase::Create());
  const std::string dir = testing::MakeTempDir("resync");
  ServerProcess server(db->url(), dir + "/pulsesyncd.log");
  ASSERT_OK(server.Start());
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<LocalStore> store, LocalStore::Open(dir + "/c.db"));
  std::unique_ptr<GrpcTransport> transport = GrpcTransport::Create(server.address());
  SyncEngine engine(store.get(), transport.get());

  JsonValue team = JsonValue::Object();
  team.Set("name", JsonValue::String("T"));
  std::vector<std::string> teams;
  for (int i = 0; i < 5; ++i) {
    ASSERT_OK_AND_ASSIGN(std::string id, store->Create("team", team));
    teams.push_back(id);
  }
  ASSERT_OK(engine.Push().status());
  const std::string origin = store->origin_id();
  auto server_value = [&](const std::string& sql) {
    absl::StatusOr<std::string> v = db->QueryValue(sql);
    EXPECT_OK(v.status()) << sql;
    return v.ok() ? *v : "";
  };
  ASSERT_EQ(server_value(absl::StrCat("SELECT last_seq FROM pulsesync.origins WHERE origin_id = '",
                                      origin, "'")),
            "5");

  // The database forgets seqs 4 and 5 (and the teams they created), as a
  // restore from a backup taken after seq 3 would.
  ASSERT_OK(db->Execute(absl::StrCat(
      "DELETE FROM teams WHERE id IN ('", teams[3], "', '", teams[4], "');"
      "DELETE FROM pulsesync.applied_revisions WHERE origin_id = '", origin, "' AND seq > 3;"
      "UPDATE pulsesync.origins SET last_seq = 3 WHERE origin_id = '", origin, "';")));

  // The next write goes out as seq 6: the server expects 4, and the client
  // sends 4, 5 and 6.
  ASSERT_OK(store->Create("team", team).status());
  ASSERT_OK_AND_ASSIGN(PushSummary pushed, engine.Push());
  EXPECT_EQ(pushed.resent, 2);
  EXPECT_EQ(pushed.rejected, 0);
  EXPECT_EQ(*store->PendingCount(), 0);
  EXPECT_EQ(server_value(absl::StrCat("SELECT last_seq FROM pulsesync.origins WHERE origin_id = '",
                                      origin, "'")),
            "6");
  EXPECT_EQ(server_value(absl::StrCat("SELECT count(*) FROM teams WHERE id IN ('", teams[3],
                                      "', '", teams[4], "')")),
            "2")
      << "the lost creates are back";
  EXPECT_EQ(server_value(absl::StrCat(
                "SELECT string_agg(seq::text, ',' ORDER BY seq) FROM pulsesync.applied_revisions "
                "WHERE origin_id = '",
                origin, "'")),
            "1,2,3,4,5,6");
}

}  // namespace
}  // namespace pulsesync

// A client's channel reconnects as soon as its server can be reached again,
// though its calls fail fast while it cannot (GrpcTransport's
// ReconnectWatcher, client/transport/grpc_transport.cc).
//
// gRPC 1.51 handles a connection attempt's socket events only while some
// thread polls the channel. This binary runs with gRPC's backup poller off
// (GRPC_CLIENT_CHANNEL_BACKUP_POLL_INTERVAL_MS=0, tests/CMakeLists.txt): the
// case where nothing but the transport itself would poll it, which the soak
// met under load (pushes failing for up to 58 s after a replica restart)
// with the poller's 5 s period.
#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "client/transport/grpc_transport.h"
#include "gtest/gtest.h"
#include "pulsesync/v1/sync.pb.h"
#include "tests/testing/status_matchers.h"
#include "tests/testing/subprocess.h"
#include "tests/testing/tcp_proxy.h"
#include "tests/testing/test_database.h"

namespace pulsesync {
namespace {

using ::pulsesync::testing::ServerProcess;
using ::pulsesync::testing::TcpProxy;
using ::pulsesync::testing::TestDatabase;
using ::pulsesync::testing::WaitFor;

class ReconnectE2eTest : public ::testing::Test {
 protected:
  void SetUp() override {
    // Also set by ctest (tests/CMakeLists.txt); here for a binary run by
    // hand. gRPC reads it when first initialised, after this.
    setenv("GRPC_CLIENT_CHANNEL_BACKUP_POLL_INTERVAL_MS", "0", 1);
    PS_REQUIRE_POSTGRES();
    ASSERT_OK_AND_ASSIGN(db_, TestDatabase::Create());
    dir_ = testing::MakeTempDir("reconnect");
    server_ = std::make_unique<ServerProcess>(db_->url(), dir_ + "/pulsesyncd.log",
                                              std::vector<std::string>{});
    ASSERT_OK(server_->Start());
    ASSERT_OK_AND_ASSIGN(proxy_, TcpProxy::Start("127.0.0.1", server_->port()));
  }

  std::unique_ptr<GrpcTransport> Transport() {
    GrpcTransportOptions o;
    o.own_connection = true;
    o.deadline = absl::Seconds(5);
    o.max_reconnect_backoff = absl::Seconds(1);
    return GrpcTransport::Create(proxy_->address(), o);
  }

  std::unique_ptr<TestDatabase> db_;
  std::string dir_;
  std::unique_ptr<ServerProcess> server_;
  std::unique_ptr<TcpProxy> proxy_;
};

TEST_F(ReconnectE2eTest, CallsSucceedAgainOnceTheServerIsReachable) {
  std::unique_ptr<GrpcTransport> transport = Transport();
  ASSERT_OK(transport->GetServerInfo({}).status());

  // Cut: connections closed, new ones accepted and closed at once. The
  // channel gives up connecting and its calls fail at once.
  proxy_->SetUp(false);
  absl::Status last;
  ASSERT_TRUE(WaitFor(
      [&] {
        last = transport->GetServerInfo({}).status();
        return last.code() == absl::StatusCode::kUnavailable &&
               absl::StrContains(last.message(), "failed to connect");
      },
      absl::Seconds(30)))
      << last;

  // Back: the client retries as an app does, every 200 ms, and gets through
  // within a few reconnection backoffs (1 s at most here), not after gRPC's
  // 20 s connect timeout or never.
  proxy_->SetUp(true);
  EXPECT_TRUE(WaitFor(
      [&] {
        last = transport->GetServerInfo({}).status();
        return last.ok();
      },
      absl::Seconds(15), absl::Milliseconds(200)))
      << last;
}

}  // namespace
}  // namespace pulsesync

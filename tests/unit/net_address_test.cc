#include "common/net_address.h"

#include "gtest/gtest.h"

namespace pulsesync {
namespace {

TEST(NetAddressTest, LoopbackHostsAndUnixSocketsAreLocal) {
  EXPECT_TRUE(IsLoopbackAddress("127.0.0.1:50051"));
  EXPECT_TRUE(IsLoopbackAddress("127.1.2.3:0"));
  EXPECT_TRUE(IsLoopbackAddress("localhost:50051"));
  EXPECT_TRUE(IsLoopbackAddress("LOCALHOST:1"));
  EXPECT_TRUE(IsLoopbackAddress("[::1]:50051"));
  EXPECT_TRUE(IsLoopbackAddress("::1"));
  EXPECT_TRUE(IsLoopbackAddress("unix:/run/pulsesync.sock"));
  EXPECT_TRUE(IsLoopbackAddress("unix-abstract:pulsesync"));
}

TEST(NetAddressTest, WildcardsAndOtherHostsAreNotLocal) {
  EXPECT_FALSE(IsLoopbackAddress("0.0.0.0:50051"));
  EXPECT_FALSE(IsLoopbackAddress("[::]:50051"));
  EXPECT_FALSE(IsLoopbackAddress("10.0.0.5:50051"));
  EXPECT_FALSE(IsLoopbackAddress("128.0.0.1:50051"));
  EXPECT_FALSE(IsLoopbackAddress("sync.example.com:443"));
  EXPECT_FALSE(IsLoopbackAddress("localhost.example.com:443"));
  EXPECT_FALSE(IsLoopbackAddress(":50051"));
  EXPECT_FALSE(IsLoopbackAddress(""));
  EXPECT_FALSE(IsLoopbackAddress("[::1:50051"));
  EXPECT_FALSE(IsLoopbackAddress("[::ffff:10.0.0.1]:1"));
}

TEST(NetAddressTest, GrpcTargetSchemes) {
  EXPECT_TRUE(IsLoopbackAddress("dns:127.0.0.1:1"));
  EXPECT_TRUE(IsLoopbackAddress("dns:///localhost:1"));
  EXPECT_FALSE(IsLoopbackAddress("dns://8.8.8.8/localhost.example.com:1"));
  EXPECT_TRUE(IsLoopbackAddress("dns://8.8.8.8/127.0.0.1:1"));
  EXPECT_FALSE(IsLoopbackAddress("dns:///sync.example.com:443"));
  EXPECT_TRUE(IsLoopbackAddress("ipv4:127.0.0.1:1,127.0.0.2:1"));
  EXPECT_FALSE(IsLoopbackAddress("ipv4:127.0.0.1:1,10.0.0.1:1"));
  EXPECT_TRUE(IsLoopbackAddress("ipv6:[::1]:1"));
  EXPECT_FALSE(IsLoopbackAddress("ipv4:"));
}

}  // namespace
}  // namespace pulsesync

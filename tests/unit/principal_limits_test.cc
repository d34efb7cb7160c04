#include "server/service/principal_limits.h"

#include "gtest/gtest.h"
#include "tests/testing/status_matchers.h"

namespace pulsesync {
namespace {

using ::pulsesync::testing::StatusIs;
using ::testing::HasSubstr;

TEST(PrincipalLimitsTest, RevisionBucketRefusesBeyondTheBurstAndSaysWhenToRetry) {
  PrincipalLimitOptions o;
  o.revisions_per_second = 1;  // refill negligible within the test
  o.revisions_burst = 100;
  PrincipalLimits limits(o);
  const Principal alice = Principal::User("a0000000-0000-4000-8000-000000000001");
  const Principal bob = Principal::User("b0000000-0000-4000-8000-000000000002");
  EXPECT_OK(limits.ChargeRevisions(alice, 60));
  EXPECT_OK(limits.ChargeRevisions(alice, 40));
  EXPECT_THAT(limits.ChargeRevisions(alice, 10),
              StatusIs(absl::StatusCode::kResourceExhausted, HasSubstr("retry in")));
  EXPECT_OK(limits.ChargeRevisions(bob, 100));  // buckets are per principal
  EXPECT_THAT(limits.ChargeRevisions(bob, 101),
              StatusIs(absl::StatusCode::kResourceExhausted, HasSubstr("smaller batches")));
  // Trusted callers and service_role are not limited.
  EXPECT_OK(limits.ChargeRevisions(Principal::Trusted(), 1000000));
  Principal service;
  service.role = "service_role";
  EXPECT_OK(limits.ChargeRevisions(service, 1000000));
}

TEST(PrincipalLimitsTest, StreamSlotsAreReleasedWithTheLease) {
  PrincipalLimitOptions o;
  o.max_streams = 2;
  PrincipalLimits limits(o);
  const Principal alice = Principal::User("a0000000-0000-4000-8000-000000000001");
  ASSERT_OK_AND_ASSIGN(auto first, limits.AcquireStream(alice));
  ASSERT_OK_AND_ASSIGN(auto second, limits.AcquireStream(alice));
  EXPECT_THAT(limits.AcquireStream(alice), StatusIs(absl::StatusCode::kResourceExhausted));
  first.reset();
  EXPECT_OK(limits.AcquireStream(alice).status());
  ASSERT_OK_AND_ASSIGN(auto unlimited, limits.AcquireStream(Principal::Trusted()));
  EXPECT_EQ(unlimited, nullptr);
}

}  // namespace
}  // namespace pulsesync

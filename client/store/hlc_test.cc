#include "client/store/hlc.h"

#include <atomic>
#include <cstdint>
#include <limits>

#include "gtest/gtest.h"

namespace pulsesync {
namespace {

class FakeClock : public WallClock {
 public:
  explicit FakeClock(int64_t ms) : ms_(ms) {}
  int64_t NowMs() const override { return ms_.load(); }
  void Set(int64_t ms) { ms_.store(ms); }

 private:
  std::atomic<int64_t> ms_;
};

TEST(HybridLogicalClockTest, FollowsTheWallClockWhenItMovesForward) {
  FakeClock wall(1000);
  HybridLogicalClock hlc(wall);
  EXPECT_EQ(hlc.Now(), (HlcTimestamp{1000, 0}));
  wall.Set(1005);
  EXPECT_EQ(hlc.Now(), (HlcTimestamp{1005, 0}));
}

TEST(HybridLogicalClockTest, IsMonotonicWhenTheWallClockStandsStill) {
  FakeClock wall(1000);
  HybridLogicalClock hlc(wall);
  HlcTimestamp prev = hlc.Now();
  for (int i = 0; i < 100; ++i) {
    HlcTimestamp next = hlc.Now();
    EXPECT_GT(next, prev);
    EXPECT_EQ(next.physical_ms, 1000);
    prev = next;
  }
  EXPECT_EQ(prev.counter, 100u);
}

TEST(HybridLogicalClockTest, IsMonotonicWhenTheWallClockStepsBack) {
  FakeClock wall(5000);
  HybridLogicalClock hlc(wall);
  HlcTimestamp a = hlc.Now();
  wall.Set(1000);  // NTP step backwards
  HlcTimestamp b = hlc.Now();
  HlcTimestamp c = hlc.Now();
  EXPECT_GT(b, a);
  EXPECT_GT(c, b);
  EXPECT_EQ(c.physical_ms, 5000);
  wall.Set(6000);
  EXPECT_EQ(hlc.Now(), (HlcTimestamp{6000, 0}));
}

TEST(HybridLogicalClockTest, OrdersEditsAfterAnObservedClockFromAFastDevice) {
  // Device A's wall clock is an hour ahead of ours.
  FakeClock slow(1'000'000);
  HybridLogicalClock ours(slow);
  const HlcTimestamp remote{1'000'000 + 3'600'000, 7};
  ours.Observe(remote);
  HlcTimestamp next = ours.Now();
  EXPECT_GT(next, remote);
  EXPECT_EQ(next, (HlcTimestamp{remote.physical_ms, 8}));
  // Once our wall clock passes it, physical time takes over again.
  slow.Set(remote.physical_ms + 1);
  EXPECT_EQ(ours.Now(), (HlcTimestamp{remote.physical_ms + 1, 0}));
}

TEST(HybridLogicalClockTest, ObservingAnOlderClockChangesNothing) {
  FakeClock wall(2000);
  HybridLogicalClock hlc(wall);
  HlcTimestamp a = hlc.Now();
  hlc.Observe(HlcTimestamp{1000, 99});
  EXPECT_EQ(hlc.last(), a);
  EXPECT_EQ(hlc.Now(), (HlcTimestamp{2000, 1}));
}

TEST(HybridLogicalClockTest, TwoSkewedDevicesConvergeOnACausalOrder) {
  FakeClock wall_a(10'000), wall_b(4'000);  // B is 6 s behind
  HybridLogicalClock a(wall_a), b(wall_b);
  HlcTimestamp a1 = a.Now();
  b.Observe(a1);
  HlcTimestamp b1 = b.Now();  // B edits after seeing A's edit
  EXPECT_GT(b1, a1);
  a.Observe(b1);
  HlcTimestamp a2 = a.Now();
  EXPECT_GT(a2, b1);
}

TEST(HybridLogicalClockTest, StartsFromAPersistedReading) {
  FakeClock wall(100);
  HybridLogicalClock hlc(wall, HlcTimestamp{500, 3});
  EXPECT_EQ(hlc.Now(), (HlcTimestamp{500, 4}));
}

TEST(HybridLogicalClockTest, CounterOverflowBorrowsTheNextMillisecond) {
  FakeClock wall(100);
  HybridLogicalClock hlc(wall, HlcTimestamp{100, std::numeric_limits<uint32_t>::max()});
  EXPECT_EQ(hlc.Now(), (HlcTimestamp{101, 0}));
}

TEST(HlcTextTest, FormatsLikeTheServerAndSortsInClockOrder) {
  EXPECT_EQ(FormatHlc(HlcTimestamp{1732486557123, 2}, "dev"), "001732486557123-0000000002-dev");
  EXPECT_LT(FormatHlc(HlcTimestamp{999, 10}, "z"), FormatHlc(HlcTimestamp{1000, 0}, "a"));
  EXPECT_LT(FormatHlc(HlcTimestamp{1000, 9}, "z"), FormatHlc(HlcTimestamp{1000, 10}, "a"));
}

TEST(HlcTextTest, ParsesWhatItFormats) {
  std::string origin;
  absl::StatusOr<HlcTimestamp> ts = ParseHlc(FormatHlc(HlcTimestamp{42, 7}, "origin-1"), &origin);
  ASSERT_TRUE(ts.ok()) << ts.status();
  EXPECT_EQ(*ts, (HlcTimestamp{42, 7}));
  EXPECT_EQ(origin, "origin-1");
  ASSERT_TRUE(ParseHlc("000000000000042-0000000000-").ok());
}

TEST(HlcTextTest, RefusesMalformedText) {
  EXPECT_EQ(ParseHlc("").status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_FALSE(ParseHlc("12-3-x").ok());
  EXPECT_FALSE(ParseHlc("00000000000004x-0000000000-o").ok());
  EXPECT_FALSE(ParseHlc("000000000000042-9999999999-o").ok());  // > uint32
}

}  // namespace
}  // namespace pulsesync

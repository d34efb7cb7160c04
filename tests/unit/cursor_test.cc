#include "server/core/cursor.h"

#include <string>

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "pulsesync/internal/cursor.pb.h"
#include "tests/testing/status_matchers.h"

namespace pulsesync {
namespace {

using ::pulsesync::testing::StatusIs;
using ::testing::HasSubstr;

// A cursor as the server would encode it, but from raw CursorState fields, so
// that states EncodeCursor is never asked to produce can be tested too.
std::string RawCursor(uint64_t system_id, const std::string& delivered,
                      const std::string& batch_upper, int64_t after) {
  internal::CursorState state;
  state.set_system_id(system_id);
  state.set_delivered(delivered);
  state.set_batch_upper(batch_upper);
  state.set_batch_after_position(after);
  return "c1." + absl::WebSafeBase64Escape(state.SerializeAsString());
}

TEST(CursorTest, RoundTripsDeliveredSnapshot) {
  Cursor c;
  c.system_id = 7311234567890123456ULL;
  c.delivered = "812:815:812,814";
  c.incarnation = 1796520000123456;
  const std::string text = EncodeCursor(c);
  EXPECT_TRUE(absl::StartsWith(text, "c1."));
  ASSERT_OK_AND_ASSIGN(Cursor d, DecodeCursor(text));
  EXPECT_EQ(d.system_id, c.system_id);
  EXPECT_EQ(d.delivered, c.delivered);
  EXPECT_EQ(d.incarnation, c.incarnation);
  EXPECT_EQ(d.batch_upper, "");
  EXPECT_EQ(d.batch_after_position, 0);
  EXPECT_FALSE(d.at_start());
}

TEST(CursorTest, RoundTripsPagingFields) {
  Cursor c;
  c.system_id = 1;
  c.delivered = "100:100:";
  c.batch_upper = "120:125:121,123";
  c.batch_after_position = 9876543210;
  ASSERT_OK_AND_ASSIGN(Cursor d, DecodeCursor(EncodeCursor(c)));
  EXPECT_EQ(d.system_id, 1u);
  EXPECT_EQ(d.delivered, "100:100:");
  EXPECT_EQ(d.batch_upper, "120:125:121,123");
  EXPECT_EQ(d.batch_after_position, 9876543210);
}

TEST(CursorTest, RoundTripsFirstBatchBeingPagedFromTheStart) {
  // Paging the very first batch: nothing delivered yet, a batch bound set.
  Cursor c;
  c.system_id = 42;
  c.batch_upper = "5:9:6";
  c.batch_after_position = 3;
  ASSERT_OK_AND_ASSIGN(Cursor d, DecodeCursor(EncodeCursor(c)));
  EXPECT_EQ(d.delivered, "");
  EXPECT_EQ(d.batch_upper, "5:9:6");
  EXPECT_EQ(d.batch_after_position, 3);
  EXPECT_FALSE(d.at_start());
}

TEST(CursorTest, EncodedCursorIsUrlSafe) {
  Cursor c;
  c.system_id = ~uint64_t{0};
  c.delivered = "18446744073709551000:18446744073709551615:18446744073709551001";
  const std::string text = EncodeCursor(c);
  for (char ch : text) {
    EXPECT_TRUE(absl::ascii_isalnum(static_cast<unsigned char>(ch)) || ch == '-' || ch == '_' ||
                ch == '.')
        << "character '" << ch << "' in " << text;
  }
  ASSERT_OK_AND_ASSIGN(Cursor d, DecodeCursor(text));
  EXPECT_EQ(d.system_id, c.system_id);
  EXPECT_EQ(d.delivered, c.delivered);
}

TEST(CursorTest, EmptyTextIsTheStartOfTheLog) {
  ASSERT_OK_AND_ASSIGN(Cursor d, DecodeCursor(""));
  EXPECT_TRUE(d.at_start());
  EXPECT_EQ(d.system_id, 0u);
  EXPECT_EQ(d.batch_after_position, 0);
}

TEST(CursorTest, RejectsGarbage) {
  for (const char* text : {"garbage", "c2.AAAA", "C1.AAAA", " c1.CAE", "c1", "{}"}) {
    SCOPED_TRACE(text);
    EXPECT_THAT(DecodeCursor(text),
                StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("malformed cursor")));
  }
}

// A cursor comes back from clients: one with a huge in-progress list, valid
// in form, is refused before it is decoded or compared.
TEST(CursorTest, RejectsACursorLongerThanTheLimit) {
  Cursor c;
  c.system_id = 7;
  c.delivered = "100:200:";
  for (int x = 101; c.delivered.size() < kMaxCursorBytes; ++x) absl::StrAppend(&c.delivered, x, ",");
  c.delivered += "199";
  ASSERT_TRUE(IsSnapshotText(c.delivered));
  EXPECT_THAT(DecodeCursor(EncodeCursor(c)),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("longer than")));
  c.delivered = "100:200:150";
  EXPECT_OK(DecodeCursor(EncodeCursor(c)).status());
}

TEST(CursorTest, RejectsPrefixWithoutState) {
  // Decodes to an empty CursorState: no database identity.
  EXPECT_THAT(DecodeCursor("c1."), StatusIs(absl::StatusCode::kInvalidArgument));
}

TEST(CursorTest, RejectsBadBase64) {
  EXPECT_THAT(DecodeCursor("c1.!!!!"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("base64")));
  EXPECT_THAT(DecodeCursor("c1.ab$cd"), StatusIs(absl::StatusCode::kInvalidArgument));
}

TEST(CursorTest, RejectsBytesThatAreNotACursorState) {
  // Valid base64url of bytes that are not a parseable protobuf message
  // (a field with wire type 7 does not exist).
  const std::string text = "c1." + absl::WebSafeBase64Escape(std::string("\x0f\xff\xff", 3));
  EXPECT_THAT(DecodeCursor(text), StatusIs(absl::StatusCode::kInvalidArgument));
}

TEST(CursorTest, RejectsMissingSystemId) {
  EXPECT_THAT(DecodeCursor(RawCursor(0, "1:1:", "", 0)),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("identity")));
}

TEST(CursorTest, RejectsBadSnapshots) {
  for (const char* snap : {"1:2", "a:b:", "1:2:x", "1:2:3,", ":2:", "1::", "1:2:3:4"}) {
    SCOPED_TRACE(snap);
    EXPECT_THAT(DecodeCursor(RawCursor(5, snap, "", 0)),
                StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("snapshot")));
    EXPECT_THAT(DecodeCursor(RawCursor(5, "1:1:", snap, 1)),
                StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("batch bound")));
  }
}

TEST(CursorTest, RejectsPositionWithoutBatch) {
  EXPECT_THAT(DecodeCursor(RawCursor(5, "10:12:11", "", 17)),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("position without batch")));
}

TEST(CursorTest, RejectsNegativePosition) {
  EXPECT_THAT(DecodeCursor(RawCursor(5, "10:12:11", "12:12:", -1)),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("negative")));
}

TEST(CursorTest, RejectsIdentityWithoutAnyPosition) {
  // A system id but neither snapshot: not something the server issues.
  EXPECT_THAT(DecodeCursor(RawCursor(5, "", "", 0)),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("empty position")));
}

TEST(IsSnapshotTextTest, AcceptsPgSnapshotShapes) {
  EXPECT_TRUE(IsSnapshotText("1:1:"));
  EXPECT_TRUE(IsSnapshotText("812:815:"));
  EXPECT_TRUE(IsSnapshotText("812:815:812"));
  EXPECT_TRUE(IsSnapshotText("812:815:812,814"));
  EXPECT_TRUE(IsSnapshotText("18446744073709551615:18446744073709551615:"));  // 20 digits
}

TEST(IsSnapshotTextTest, RejectsOtherShapes) {
  EXPECT_FALSE(IsSnapshotText(""));
  EXPECT_FALSE(IsSnapshotText("::"));
  EXPECT_FALSE(IsSnapshotText("1:2"));
  EXPECT_FALSE(IsSnapshotText(":2:"));
  EXPECT_FALSE(IsSnapshotText("1::"));
  EXPECT_FALSE(IsSnapshotText("1:2:3:"));
  EXPECT_FALSE(IsSnapshotText("1:2:3,"));
  EXPECT_FALSE(IsSnapshotText("1:2:,3"));
  EXPECT_FALSE(IsSnapshotText("1:2:3;4"));
  EXPECT_FALSE(IsSnapshotText("-1:2:"));
  EXPECT_FALSE(IsSnapshotText("1:+2:"));
  EXPECT_FALSE(IsSnapshotText(" 1:2:"));
  EXPECT_FALSE(IsSnapshotText("0x1:2:"));
  EXPECT_FALSE(IsSnapshotText("123456789012345678901:2:"));  // 21 digits
  EXPECT_FALSE(IsSnapshotText("1:2:a"));
}

}  // namespace
}  // namespace pulsesync

namespace pulsesync {
namespace {

TEST(SnapshotIncludesTest, LaterSnapshotsIncludeEarlierOnes) {
  // inner taken first: 10 and 12 running; later 10 committed, 15 started.
  EXPECT_TRUE(SnapshotIncludes("11:16:12,15", "10:13:10,12"));
  EXPECT_TRUE(SnapshotIncludes("10:13:10,12", "10:13:10,12"));
  // outer older than inner: inner sees 10 committed, outer has it running.
  EXPECT_FALSE(SnapshotIncludes("10:13:10,12", "11:16:12,15"));
  // inner's xmax beyond outer's.
  EXPECT_FALSE(SnapshotIncludes("5:8:", "5:9:"));
  EXPECT_FALSE(SnapshotIncludes("garbage", "5:9:"));
}

TEST(RewindSnapshotTest, IdsFromTheFirstOnCountAsNotStarted) {
  // 10 and 14 were running; 11-13 and 15 finished; 12 and up are reused.
  EXPECT_EQ(*RewindSnapshot("10:16:10,14", 12), "10:12:10");
  // Everything at or past the first id: nothing of them visible.
  EXPECT_EQ(*RewindSnapshot("20:25:21", 12), "12:12:");
  // A snapshot already below the first id stays as it is.
  EXPECT_EQ(*RewindSnapshot("10:12:10", 12), "10:12:10");
  EXPECT_EQ(*RewindSnapshot("10:12:10", 40), "10:12:10");
  // The rewound snapshot sees exactly what the old one saw below the id.
  EXPECT_TRUE(SnapshotIncludes("10:16:10,14", *RewindSnapshot("10:16:10,14", 12)));
  EXPECT_FALSE(SnapshotIncludes(*RewindSnapshot("10:16:10,14", 12), "10:16:10,14"));
  EXPECT_EQ(RewindSnapshot("garbage", 12).status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace pulsesync

#include "common/json.h"

#include "gtest/gtest.h"
#include "tests/testing/status_matchers.h"

namespace pulsesync {
namespace {

using ::pulsesync::testing::StatusIs;
using ::testing::HasSubstr;

TEST(JsonTest, ParsesObjectAndKeepsNumberLiterals) {
  ASSERT_OK_AND_ASSIGN(JsonValue v, ParseJson(R"({"title":"a\"b","n":9007199254740993,"x":null})"));
  ASSERT_TRUE(v.is_object());
  EXPECT_EQ(v.Find("title")->text(), "a\"b");
  EXPECT_EQ(v.Find("n")->text(), "9007199254740993");
  EXPECT_EQ(*v.Find("n")->AsInt64(), 9007199254740993LL);
  EXPECT_TRUE(v.Find("x")->is_null());
  EXPECT_EQ(v.Find("missing"), nullptr);
}

TEST(JsonTest, RejectsMalformedInputWithOffset) {
  EXPECT_THAT(ParseJson("{\"a\":1,}"), StatusIs(absl::StatusCode::kInvalidArgument,
                                                 HasSubstr("offset 7")));
  EXPECT_THAT(ParseJson("{\"a\":1} x"), StatusIs(absl::StatusCode::kInvalidArgument,
                                                  HasSubstr("end of input")));
  EXPECT_THAT(ParseJson("{\"a\":1,\"a\":2}"),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("duplicate")));
  EXPECT_THAT(ParseJson("01"), StatusIs(absl::StatusCode::kInvalidArgument));
  EXPECT_THAT(ParseJson("\"\xff\""), StatusIs(absl::StatusCode::kInvalidArgument,
                                               HasSubstr("UTF-8")));
  EXPECT_THAT(ParseJson(std::string(100, '[')), StatusIs(absl::StatusCode::kInvalidArgument,
                                                         HasSubstr("nesting")));
}

TEST(JsonTest, QuoteRoundTripsAndEscapes) {
  const std::string raw = "line\nbreak \"q\" \\ \x01 é";
  ASSERT_OK_AND_ASSIGN(JsonValue v, ParseJson(JsonQuote(raw)));
  EXPECT_EQ(v.text(), raw);
  EXPECT_EQ(JsonQuote("\xff"), "\"\xEF\xBF\xBD\"");
}

TEST(JsonTest, DecodesSurrogatePairs) {
  ASSERT_OK_AND_ASSIGN(JsonValue v, ParseJson(R"("\ud83d\ude00")"));
  EXPECT_EQ(v.text(), "\xF0\x9F\x98\x80");
  EXPECT_THAT(ParseJson(R"("\ude00")"), StatusIs(absl::StatusCode::kInvalidArgument));
}

TEST(JsonTest, EqualityIgnoresMemberOrderAndNumberSpelling) {
  ASSERT_OK_AND_ASSIGN(JsonValue a, ParseJson(R"({"a":1,"b":[true,null]})"));
  ASSERT_OK_AND_ASSIGN(JsonValue b, ParseJson(R"({"b":[true,null],"a":1.0})"));
  EXPECT_EQ(a, b);
  ASSERT_OK_AND_ASSIGN(JsonValue c, ParseJson(R"({"b":[true,null],"a":2})"));
  EXPECT_NE(a, c);
  EXPECT_EQ(ParseJson(a.Serialize()).value(), a);
}

}  // namespace
}  // namespace pulsesync

#include "common/brotli_codec.h"

#include <cstdint>
#include <string>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "tests/testing/status_matchers.h"

namespace pulsesync {
namespace {

using ::pulsesync::testing::StatusIs;
using ::testing::HasSubstr;

constexpr size_t kNoLimit = size_t{1} << 30;

// Deterministic, poorly compressible bytes (xorshift64).
std::string PseudoRandomBytes(size_t n, uint64_t seed) {
  std::string out(n, '\0');
  uint64_t x = seed;
  for (size_t i = 0; i < n; ++i) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    out[i] = static_cast<char>(x & 0xFF);
  }
  return out;
}

std::string RepetitiveJson(int rows) {
  std::string out = "[";
  for (int i = 0; i < rows; ++i) {
    if (i > 0) out += ",";
    absl::StrAppend(&out, "{\"id\":\"2f1c0e5a-0000-4000-8000-", 100000000000 + i,
                    "\",\"object_type\":\"task\",\"title\":\"Write the quarterly report\","
                    "\"status\":\"todo\",\"priority\":",
                    i % 3, ",\"team_id\":\"7d3a9c10-1111-4222-8333-444455556666\"}");
  }
  return out + "]";
}

TEST(BrotliCodecTest, RoundTripsEmptyInput) {
  const std::string compressed = BrotliCompress("");
  EXPECT_FALSE(compressed.empty());  // a valid stream is never zero bytes
  ASSERT_OK_AND_ASSIGN(std::string out, BrotliDecompress(compressed, kNoLimit));
  EXPECT_EQ(out, "");
}

TEST(BrotliCodecTest, RoundTripsSmallInput) {
  const std::string in = "{\"title\":\"hello\"}";
  ASSERT_OK_AND_ASSIGN(std::string out, BrotliDecompress(BrotliCompress(in), kNoLimit));
  EXPECT_EQ(out, in);
}

TEST(BrotliCodecTest, RoundTripsOneMebibyteOfRandomBytesAtEveryQuality) {
  const std::string in = PseudoRandomBytes(1 << 20, 0x9E3779B97F4A7C15ULL);
  for (int quality : {0, 5, 9}) {
    SCOPED_TRACE(absl::StrCat("quality ", quality));
    const std::string compressed = BrotliCompress(in, quality);
    ASSERT_FALSE(compressed.empty());
    ASSERT_OK_AND_ASSIGN(std::string out, BrotliDecompress(compressed, kNoLimit));
    EXPECT_EQ(out.size(), in.size());
    EXPECT_TRUE(out == in);
  }
}

TEST(BrotliCodecTest, ShrinksRepetitiveJsonByAtLeastSeventyPercent) {
  const std::string in = RepetitiveJson(500);
  ASSERT_GT(in.size(), 50000u);
  const std::string compressed = BrotliCompress(in);
  EXPECT_LE(compressed.size() * 10, in.size() * 3)
      << "compressed " << in.size() << " bytes to " << compressed.size();
  ASSERT_OK_AND_ASSIGN(std::string out, BrotliDecompress(compressed, kNoLimit));
  EXPECT_EQ(out, in);
}

TEST(BrotliCodecTest, RejectsEmptyInputAsTruncated) {
  EXPECT_THAT(BrotliDecompress("", kNoLimit),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("truncated")));
}

TEST(BrotliCodecTest, RejectsTruncatedStream) {
  const std::string compressed = BrotliCompress(RepetitiveJson(200));
  ASSERT_GT(compressed.size(), 10u);
  for (size_t keep : {size_t{1}, compressed.size() / 2, compressed.size() - 1}) {
    SCOPED_TRACE(absl::StrCat("keeping ", keep, " of ", compressed.size(), " bytes"));
    EXPECT_THAT(BrotliDecompress(compressed.substr(0, keep), kNoLimit),
                StatusIs(absl::StatusCode::kInvalidArgument));
  }
}

TEST(BrotliCodecTest, RejectsCorruptBytes) {
  // Not Brotli at all.
  EXPECT_THAT(BrotliDecompress(std::string(64, '\xff'), kNoLimit),
              StatusIs(absl::StatusCode::kInvalidArgument));
  // A valid stream with bytes flipped in its header and first meta-block.
  std::string compressed = BrotliCompress(RepetitiveJson(200));
  ASSERT_GT(compressed.size(), 8u);
  for (size_t i = 0; i < 8; ++i) compressed[i] ^= 0x5A;
  EXPECT_THAT(BrotliDecompress(compressed, kNoLimit),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("brotli")));
}

TEST(BrotliCodecTest, RejectsTrailingGarbage) {
  const std::string in = "{\"a\":1}";
  const std::string compressed = BrotliCompress(in) + "garbage";
  EXPECT_THAT(BrotliDecompress(compressed, kNoLimit),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("trailing")));
  // Two concatenated streams are not one stream either.
  EXPECT_THAT(BrotliDecompress(BrotliCompress(in) + BrotliCompress(in), kNoLimit),
              StatusIs(absl::StatusCode::kInvalidArgument));
}

TEST(BrotliCodecTest, RefusesOutputPastTheLimitOfADecompressionBomb) {
  // 64 MiB of zeros compresses to a few hundred bytes.
  const std::string bomb = BrotliCompress(std::string(64 << 20, '\0'), 5);
  ASSERT_LT(bomb.size(), 100000u);
  EXPECT_THAT(BrotliDecompress(bomb, 1 << 20),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("limit")));
}

TEST(BrotliCodecTest, LimitIsInclusive) {
  const std::string in(100000, 'x');
  const std::string compressed = BrotliCompress(in);
  ASSERT_OK_AND_ASSIGN(std::string out, BrotliDecompress(compressed, in.size()));
  EXPECT_EQ(out, in);
  EXPECT_THAT(BrotliDecompress(compressed, in.size() - 1),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("limit")));
  EXPECT_THAT(BrotliDecompress(BrotliCompress("a"), 0),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("limit")));
}

}  // namespace
}  // namespace pulsesync

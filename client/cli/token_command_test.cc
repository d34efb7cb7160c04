#include "client/cli/token_command.h"

#include <atomic>
#include <fstream>
#include <string>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace pulsesync {
namespace {

using ::testing::HasSubstr;

class FakeClock final : public WallClock {
 public:
  int64_t NowMs() const override { return now_ms.load(); }
  std::atomic<int64_t> now_ms{1700000000000};
};

// An unsigned JWT-shaped token with these claims (only its exp is read).
std::string TokenWithClaims(const std::string& claims) {
  return absl::StrCat(absl::WebSafeBase64Escape(R"({"alg":"HS256"})"), ".",
                      absl::WebSafeBase64Escape(claims), ".c2ln");
}

class TokenCommandTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = ::testing::TempDir() + "/token_command_" + std::to_string(getpid());
    ASSERT_EQ(system(("mkdir -p " + dir_ + " && rm -f " + dir_ + "/*").c_str()), 0);
  }
  void WriteToken(const std::string& token) {
    std::ofstream(dir_ + "/token") << token << "\n";
  }
  // Prints the token file, counting its runs in another file.
  std::string Command() const {
    return absl::StrCat("echo run >> '", dir_, "/runs'; cat '", dir_, "/token'");
  }

  std::string dir_;
  FakeClock clock_;
};

TEST_F(TokenCommandTest, ReusesATokenUntilAMinuteBeforeItsExpiry) {
  const int64_t now = clock_.now_ms / 1000;
  const std::string first = TokenWithClaims(absl::StrCat(R"({"sub":"u","exp":)", now + 600, "}"));
  WriteToken(first);
  TokenCommand command(Command(), &clock_);
  EXPECT_EQ(*command.Get(), first);
  EXPECT_EQ(*command.Get(), first);
  EXPECT_EQ(command.runs(), 1);

  const std::string second = TokenWithClaims(absl::StrCat(R"({"exp":)", now + 1200, "}"));
  WriteToken(second);
  clock_.now_ms += (600 - 61) * 1000;
  EXPECT_EQ(*command.Get(), first);
  clock_.now_ms += 1000;  // 60 s before exp: ask again
  EXPECT_EQ(*command.Get(), second);
  EXPECT_EQ(command.runs(), 2);
}

TEST_F(TokenCommandTest, RunsEveryTimeForATokenWithoutExpiry) {
  WriteToken("opaque-token");
  TokenCommand command(Command(), &clock_);
  EXPECT_EQ(*command.Get(), "opaque-token");
  EXPECT_EQ(*command.Get(), "opaque-token");
  EXPECT_EQ(command.runs(), 2);
  EXPECT_EQ(UnverifiedJwtExpiry("opaque-token"), 0);
  EXPECT_EQ(UnverifiedJwtExpiry(TokenWithClaims(R"({"exp":"soon"})")), 0);
  EXPECT_EQ(UnverifiedJwtExpiry(TokenWithClaims(R"({"exp":42})")), 42);
}

TEST_F(TokenCommandTest, AFailingOrSilentCommandIsUnauthenticated) {
  TokenCommand failing("exit 3", &clock_);
  absl::StatusOr<std::string> r = failing.Get();
  EXPECT_EQ(r.status().code(), absl::StatusCode::kUnauthenticated);
  EXPECT_THAT(std::string(r.status().message()), HasSubstr("exit status 3"));

  TokenCommand silent("true", &clock_);
  r = silent.Get();
  EXPECT_EQ(r.status().code(), absl::StatusCode::kUnauthenticated);
  EXPECT_THAT(std::string(r.status().message()), HasSubstr("printed no token"));
}

}  // namespace
}  // namespace pulsesync

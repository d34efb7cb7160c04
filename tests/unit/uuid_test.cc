#include "common/uuid.h"

#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <set>
#include <string>

#include "gtest/gtest.h"

namespace pulsesync {
namespace {

TEST(UuidTest, RandomUuidsAreVersion4) {
  std::set<std::string> seen;
  for (int i = 0; i < 1000; ++i) {
    const std::string id = NewUuid();
    ASSERT_TRUE(IsUuid(id)) << id;
    // Canonical text: lowercase hex, as PostgreSQL prints a uuid.
    EXPECT_EQ(id.find_first_not_of("0123456789abcdef-"), std::string::npos) << id;
    EXPECT_EQ(id[14], '4') << id;
    EXPECT_NE(std::string("89ab").find(id[19]), std::string::npos) << id;
    EXPECT_TRUE(seen.insert(id).second) << id;
  }
}

TEST(UuidTest, TimeOrderedUuidsCarryTheTimeAndSortByIt) {
  const auto now_ms = [] {
    return std::chrono::duration_cast<std::chrono::milliseconds>(
               std::chrono::system_clock::now().time_since_epoch())
        .count();
  };
  const int64_t before = now_ms();
  std::string previous;
  std::set<std::string> seen;
  for (int i = 0; i < 1000; ++i) {
    const std::string id = NewTimeOrderedUuid();
    ASSERT_TRUE(IsUuid(id)) << id;
    EXPECT_EQ(id[14], '7') << id;
    EXPECT_NE(std::string("89ab").find(id[19]), std::string::npos) << id;
    EXPECT_TRUE(seen.insert(id).second) << id;
    // The first 48 bits: milliseconds since the epoch, so ids of later
    // milliseconds sort after earlier ones.
    const int64_t ms = std::stoll(id.substr(0, 8) + id.substr(9, 4), nullptr, 16);
    EXPECT_GE(ms, before);
    EXPECT_LE(ms, now_ms());
    if (!previous.empty() && previous.substr(0, 13) != id.substr(0, 13)) {
      EXPECT_LT(previous, id);
    }
    previous = id;
  }
}

// Random bytes are buffered per thread: a forked child must not hand out
// the ids its parent hands out next.
TEST(UuidTest, AForkedChildDoesNotRepeatItsParentsIds) {
  (void)NewUuid();  // the buffer is full now
  int fds[2];
  ASSERT_EQ(pipe(fds), 0);
  const pid_t child = fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    const std::string id = NewUuid() + NewTimeOrderedUuid();
    (void)!write(fds[1], id.data(), id.size());
    _exit(0);
  }
  close(fds[1]);
  const std::string mine = NewUuid() + NewTimeOrderedUuid();
  std::string theirs(72, '\0');
  size_t got = 0;
  while (got < theirs.size()) {
    const ssize_t n = read(fds[0], theirs.data() + got, theirs.size() - got);
    if (n <= 0) break;
    got += static_cast<size_t>(n);
  }
  close(fds[0]);
  int status = 0;
  waitpid(child, &status, 0);
  ASSERT_EQ(got, theirs.size());
  EXPECT_NE(theirs.substr(0, 36), mine.substr(0, 36));
  EXPECT_NE(theirs.substr(36 + 14), mine.substr(36 + 14));  // the random part of the v7 id
}

}  // namespace
}  // namespace pulsesync

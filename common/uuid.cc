#include "common/uuid.h"

#include <openssl/rand.h>
#include <pthread.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <cstdint>
#include <random>

namespace pulsesync {

namespace {

// Forks so far in this process's line: a child must not hand out the
// random bytes its parent buffered (the same ids twice).
std::atomic<uint64_t> fork_generation{0};

void FillFromCsprng(uint8_t* b, int n) {
  if (RAND_bytes(b, n) != 1) {
    // The CSPRNG failing is not expected; fall back rather than abort.
    std::random_device rd;
    for (int i = 0; i < n; ++i) b[i] = static_cast<uint8_t>(rd());
  }
}

// Random bytes from a per-thread buffer refilled from the CSPRNG 4 KiB at a
// time: one RAND_bytes call (and its fork check, a getpid system call) per
// about 250 ids instead of one per id.
void RandomBytes(uint8_t* b, int n) {
  static const bool registered = [] {
    pthread_atfork(nullptr, nullptr, [] { fork_generation.fetch_add(1); });
    return true;
  }();
  (void)registered;
  struct Buffer {
    uint8_t bytes[4096];
    size_t used = sizeof(bytes);
    uint64_t generation = 0;
  };
  thread_local Buffer buffer;
  const uint64_t generation = fork_generation.load(std::memory_order_relaxed);
  if (buffer.generation != generation) {
    buffer.used = sizeof(buffer.bytes);
    buffer.generation = generation;
  }
  if (buffer.used + static_cast<size_t>(n) > sizeof(buffer.bytes)) {
    FillFromCsprng(buffer.bytes, sizeof(buffer.bytes));
    buffer.used = 0;
  }
  std::memcpy(b, buffer.bytes + buffer.used, static_cast<size_t>(n));
  // Used bytes are not kept.
  std::memset(buffer.bytes + buffer.used, 0, static_cast<size_t>(n));
  buffer.used += static_cast<size_t>(n);
}

// 8-4-4-4-12 lowercase hex. By hand: absl::StrFormat with 16 arguments
// took a tenth of a batched local write (docs/PERFORMANCE.md).
std::string Format(const uint8_t* b) {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out(36, '-');
  char* p = out.data();
  for (int i = 0; i < 16; ++i) {
    if (i == 4 || i == 6 || i == 8 || i == 10) ++p;  // past a dash
    *p++ = kHex[b[i] >> 4];
    *p++ = kHex[b[i] & 0x0F];
  }
  return out;
}

}  // namespace

std::string NewUuid() {
  uint8_t b[16];
  RandomBytes(b, sizeof(b));
  b[6] = (b[6] & 0x0F) | 0x40;
  b[8] = (b[8] & 0x3F) | 0x80;
  return Format(b);
}

std::string NewTimeOrderedUuid() {
  uint8_t b[16];
  RandomBytes(b + 6, 10);
  const uint64_t ms = static_cast<uint64_t>(
      std::chrono::duration_cast<std::chrono::milliseconds>(
          std::chrono::system_clock::now().time_since_epoch())
          .count());
  for (int i = 0; i < 6; ++i) b[i] = static_cast<uint8_t>(ms >> (8 * (5 - i)));
  b[6] = (b[6] & 0x0F) | 0x70;
  b[8] = (b[8] & 0x3F) | 0x80;
  return Format(b);
}

bool IsUuid(absl::string_view s) {
  if (s.size() != 36) return false;
  for (size_t i = 0; i < s.size(); ++i) {
    const char c = s[i];
    if (i == 8 || i == 13 || i == 18 || i == 23) {
      if (c != '-') return false;
    } else if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F'))) {
      return false;
    }
  }
  return true;
}

}  // namespace pulsesync

#include "client/store/hlc.h"

#include <limits>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace pulsesync {

std::string FormatHlc(HlcTimestamp ts, absl::string_view origin_id) {
  return absl::StrFormat("%015d-%010d-%s", ts.physical_ms, ts.counter, origin_id);
}

absl::StatusOr<HlcTimestamp> ParseHlc(absl::string_view text, std::string* origin_id) {
  // 15 digits, '-', 10 digits, '-', origin (possibly empty).
  auto bad = [&] {
    return absl::InvalidArgumentError(absl::StrCat("malformed hlc \"", text, "\""));
  };
  if (text.size() < 27 || text[15] != '-' || text[26] != '-') return bad();
  int64_t physical = 0;
  uint64_t counter = 0;
  if (!absl::SimpleAtoi(text.substr(0, 15), &physical) || physical < 0) return bad();
  if (!absl::SimpleAtoi(text.substr(16, 10), &counter) ||
      counter > std::numeric_limits<uint32_t>::max()) {
    return bad();
  }
  if (origin_id != nullptr) *origin_id = std::string(text.substr(27));
  return HlcTimestamp{physical, static_cast<uint32_t>(counter)};
}

HlcTimestamp HybridLogicalClock::Now() {
  const int64_t wall = wall_.NowMs();
  if (wall > last_.physical_ms) {
    last_ = HlcTimestamp{wall, 0};
  } else if (last_.counter == std::numeric_limits<uint32_t>::max()) {
    // 4 billion events within one millisecond: borrow the next millisecond
    // rather than wrap (invariant 1 wins over invariant 3).
    last_ = HlcTimestamp{last_.physical_ms + 1, 0};
  } else {
    ++last_.counter;
  }
  return last_;
}

void HybridLogicalClock::Observe(HlcTimestamp remote) {
  if (remote > last_) last_ = remote;
}

}  // namespace pulsesync

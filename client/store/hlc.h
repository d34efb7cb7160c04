// Hybrid logical clock (Kulkarni et al., "Logical Physical Clocks", 2014),
// as the wire's Clock message carries it: (physical_ms, counter), with the
// origin id as the final tie-break on the server.
//
// Invariants:
//  1. Now() returns strictly increasing timestamps, whatever the wall clock
//     does (it may stand still or step back).
//  2. After Observe(t), every later Now() is greater than t, so an edit made
//     after seeing a remote edit orders after it even when the local wall
//     clock is behind the remote one.
//  3. physical_ms never runs behind the wall clock: when the wall clock is
//     ahead of everything seen, Now() is (wall, 0).
//
// The clock lives in the store layer because its state is persisted in
// sync_state and advanced inside the same transaction as the write it
// stamps (LocalStore reloads it per transaction, so two processes sharing a
// database file never hand out the same timestamp).
#ifndef PULSESYNC_CLIENT_STORE_HLC_H_
#define PULSESYNC_CLIENT_STORE_HLC_H_

#include <cstdint>
#include <string>
#include <tuple>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "common/clock.h"

namespace pulsesync {

struct HlcTimestamp {
  int64_t physical_ms = 0;
  uint32_t counter = 0;

  friend bool operator<(const HlcTimestamp& a, const HlcTimestamp& b) {
    return std::tie(a.physical_ms, a.counter) < std::tie(b.physical_ms, b.counter);
  }
  friend bool operator>(const HlcTimestamp& a, const HlcTimestamp& b) { return b < a; }
  friend bool operator<=(const HlcTimestamp& a, const HlcTimestamp& b) { return !(b < a); }
  friend bool operator>=(const HlcTimestamp& a, const HlcTimestamp& b) { return !(a < b); }
  friend bool operator==(const HlcTimestamp& a, const HlcTimestamp& b) {
    return a.physical_ms == b.physical_ms && a.counter == b.counter;
  }
  friend bool operator!=(const HlcTimestamp& a, const HlcTimestamp& b) { return !(a == b); }
};

// The server's text form, which sorts (bytewise) in clock order:
// "%015d-%010d-<origin>", e.g. "001732486557123-0000000002-<origin>".
std::string FormatHlc(HlcTimestamp ts, absl::string_view origin_id);

// Parses FormatHlc's output; `origin_id` may be null. kInvalidArgument when
// malformed.
absl::StatusOr<HlcTimestamp> ParseHlc(absl::string_view text, std::string* origin_id = nullptr);

// Not thread-safe; the owner serializes calls. `wall` must outlive it.
class HybridLogicalClock {
 public:
  explicit HybridLogicalClock(const WallClock& wall, HlcTimestamp last = {})
      : wall_(wall), last_(last) {}

  // A new timestamp, greater than every one returned or observed so far.
  HlcTimestamp Now();

  // Takes note of a remote timestamp (invariant 2). Does not tick.
  void Observe(HlcTimestamp remote);

  // The greatest timestamp issued or observed; what to persist.
  HlcTimestamp last() const { return last_; }

 private:
  const WallClock& wall_;
  HlcTimestamp last_;
};

}  // namespace pulsesync

#endif  // PULSESYNC_CLIENT_STORE_HLC_H_

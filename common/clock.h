// Time sources, behind an interface so tests can inject them.
#ifndef PULSESYNC_COMMON_CLOCK_H_
#define PULSESYNC_COMMON_CLOCK_H_

#include <cstdint>

namespace pulsesync {

// Thread-safe implementations only.
class WallClock {
 public:
  virtual ~WallClock() = default;
  // Milliseconds since the Unix epoch.
  virtual int64_t NowMs() const = 0;

  // The process-wide real clock.
  static const WallClock& Real();
};

}  // namespace pulsesync

#endif  // PULSESYNC_COMMON_CLOCK_H_

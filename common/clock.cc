#include "common/clock.h"

#include "absl/time/clock.h"

namespace pulsesync {
namespace {

class RealWallClock final : public WallClock {
 public:
  int64_t NowMs() const override { return absl::ToUnixMillis(absl::Now()); }
};

}  // namespace

const WallClock& WallClock::Real() {
  static const RealWallClock* const clock = new RealWallClock();
  return *clock;
}

}  // namespace pulsesync

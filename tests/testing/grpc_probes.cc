#include "tests/testing/grpc_probes.h"

#include "server/service/health_probe.h"

namespace pulsesync::testing {

absl::StatusOr<std::string> HealthCheck(const std::shared_ptr<grpc::Channel>& channel) {
  return HealthCheckResponseBytes(channel, absl::Seconds(20));
}

}  // namespace pulsesync::testing

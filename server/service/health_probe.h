// A client of the standard gRPC health service (grpc.health.v1.Health),
// over a generic stub: Debian's gRPC packages ship no generated health
// stubs. Used by `pulsesyncd health` and by tests.
#ifndef PULSESYNC_SERVER_SERVICE_HEALTH_PROBE_H_
#define PULSESYNC_SERVER_SERVICE_HEALTH_PROBE_H_

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "grpcpp/grpcpp.h"

namespace pulsesync {

// HealthCheckResponse.ServingStatus.
enum class HealthStatus { kUnknown = 0, kServing = 1, kNotServing = 2, kServiceUnknown = 3 };

// Health/Check for the whole server (empty service name); the raw
// HealthCheckResponse bytes ("\x08\x01" is SERVING). The call's error, with
// its code, when it fails; kDeadlineExceeded after `timeout`.
absl::StatusOr<std::string> HealthCheckResponseBytes(const std::shared_ptr<grpc::Channel>& channel,
                                                     absl::Duration timeout);

// The same, decoded.
absl::StatusOr<HealthStatus> CheckHealth(const std::shared_ptr<grpc::Channel>& channel,
                                         absl::Duration timeout);

}  // namespace pulsesync

#endif  // PULSESYNC_SERVER_SERVICE_HEALTH_PROBE_H_

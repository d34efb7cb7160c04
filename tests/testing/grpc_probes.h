// What standard tools ask a gRPC server, asked over a generic stub (the
// health and reflection protos are not shipped in Debian's gRPC packages).
#ifndef PULSESYNC_TESTS_TESTING_GRPC_PROBES_H_
#define PULSESYNC_TESTS_TESTING_GRPC_PROBES_H_

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "grpcpp/grpcpp.h"

namespace pulsesync::testing {

// grpc.health.v1.Health/Check for the whole server (empty service name).
// Returns the raw HealthCheckResponse bytes: "\x08\x01" is SERVING.
absl::StatusOr<std::string> HealthCheck(const std::shared_ptr<grpc::Channel>& channel);

}  // namespace pulsesync::testing

#endif  // PULSESYNC_TESTS_TESTING_GRPC_PROBES_H_

#include "server/service/health_probe.h"

#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "grpcpp/generic/generic_stub.h"

namespace pulsesync {

absl::StatusOr<std::string> HealthCheckResponseBytes(const std::shared_ptr<grpc::Channel>& channel,
                                                     absl::Duration timeout) {
  grpc::GenericStub generic(channel);
  grpc::Slice empty("");
  grpc::ByteBuffer request(&empty, 1);  // an empty HealthCheckRequest
  grpc::ByteBuffer response;
  grpc::ClientContext ctx;
  ctx.set_deadline(absl::ToChronoTime(absl::Now() + timeout));
  absl::Notification done;
  grpc::Status status;
  generic.UnaryCall(&ctx, "/grpc.health.v1.Health/Check", grpc::StubOptions(), &request, &response,
                    [&](grpc::Status s) {
                      status = s;
                      done.Notify();
                    });
  // gRPC ends the call at its deadline; the margin only guards against a hang.
  if (!done.WaitForNotificationWithTimeout(timeout + absl::Seconds(10))) {
    ctx.TryCancel();
    done.WaitForNotification();
    return absl::DeadlineExceededError("health check did not complete");
  }
  if (!status.ok()) {
    return absl::Status(static_cast<absl::StatusCode>(status.error_code()),
                        absl::StrCat("health check: ", status.error_message()));
  }
  std::vector<grpc::Slice> slices;
  if (!response.Dump(&slices).ok()) return absl::InternalError("unreadable health response");
  std::string bytes;
  for (const auto& s : slices) bytes.append(reinterpret_cast<const char*>(s.begin()), s.size());
  return bytes;
}

absl::StatusOr<HealthStatus> CheckHealth(const std::shared_ptr<grpc::Channel>& channel,
                                         absl::Duration timeout) {
  absl::StatusOr<std::string> bytes = HealthCheckResponseBytes(channel, timeout);
  if (!bytes.ok()) return bytes.status();
  // Field 1 (status), varint: tag 0x08. Absent means UNKNOWN (0).
  if (bytes->size() >= 2 && (*bytes)[0] == '\x08' && (*bytes)[1] >= 0 && (*bytes)[1] <= 3) {
    return static_cast<HealthStatus>((*bytes)[1]);
  }
  return HealthStatus::kUnknown;
}

}  // namespace pulsesync

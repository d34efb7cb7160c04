// The server interceptor every gRPC call passes through: it gives the call a
// request id, counts and times it in ServerMetrics, and logs its end.
//
// Request ids: a client (or a proxy) may send `x-request-id` (1-64 of
// [A-Za-z0-9._:-]); otherwise the server makes one (a UUID). The id is
// returned in the response's initial metadata, is visible to handlers
// through RequestIdOf(context), and is in the "call" log line and in every
// line a worker logs for the call (LogRequestScope).
//
// Call log: one line per finished call, {"msg":"call","method",...,"code",
// "ms","request_id"}; at debug level for OK, warning for INTERNAL, UNKNOWN
// and DATA_LOSS, info otherwise.
//
// Thread safety: interceptors run on gRPC's threads; the factory is
// stateless apart from `metrics`, which is thread-safe.
#ifndef PULSESYNC_SERVER_SERVICE_CALL_INTERCEPTOR_H_
#define PULSESYNC_SERVER_SERVICE_CALL_INTERCEPTOR_H_

#include <memory>
#include <string>

#include "grpcpp/grpcpp.h"
#include "grpcpp/support/server_interceptor.h"

namespace pulsesync {

class ServerMetrics;

inline constexpr char kRequestIdHeader[] = "x-request-id";

// `metrics` may be null (no counting) and must outlive the server.
std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface> NewCallInterceptorFactory(
    ServerMetrics* metrics);

// The call's request id ("" for a call that did not pass the interceptor).
std::string RequestIdOf(const grpc::ServerContextBase* context);

}  // namespace pulsesync

#endif  // PULSESYNC_SERVER_SERVICE_CALL_INTERCEPTOR_H_

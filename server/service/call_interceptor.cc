#include "server/service/call_interceptor.h"

#include <algorithm>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "common/log.h"
#include "common/uuid.h"
#include "server/service/metrics.h"

namespace pulsesync {
namespace {

using grpc::experimental::InterceptionHookPoints;
using grpc::experimental::InterceptorBatchMethods;
using grpc::experimental::ServerRpcInfo;

bool AcceptableRequestId(grpc::string_ref id) {
  return !id.empty() && id.size() <= 64 && std::all_of(id.begin(), id.end(), [](char c) {
    return absl::ascii_isalnum(c) || c == '.' || c == '_' || c == ':' || c == '-';
  });
}

ServerMetrics::CallType CallTypeOf(ServerRpcInfo::Type type) {
  switch (type) {
    case ServerRpcInfo::Type::UNARY: return ServerMetrics::CallType::kUnary;
    case ServerRpcInfo::Type::CLIENT_STREAMING: return ServerMetrics::CallType::kClientStream;
    case ServerRpcInfo::Type::SERVER_STREAMING: return ServerMetrics::CallType::kServerStream;
    case ServerRpcInfo::Type::BIDI_STREAMING: return ServerMetrics::CallType::kBidiStream;
  }
  return ServerMetrics::CallType::kUnary;
}

class CallInterceptor final : public grpc::experimental::Interceptor {
 public:
  CallInterceptor(ServerRpcInfo* info, ServerMetrics* metrics)
      : metrics_(metrics),
        method_(info->method() != nullptr ? info->method() : ""),
        type_(CallTypeOf(info->type())),
        started_(absl::Now()) {
    if (metrics_ != nullptr) metrics_->CallStarted(method_, type_);
  }

  ~CallInterceptor() override {
    // A call whose status was never sent was cancelled (client gone,
    // deadline, server shutdown).
    if (!finished_) Finish(absl::StatusCode::kCancelled, "call cancelled");
  }

  void Intercept(InterceptorBatchMethods* methods) override {
    if (methods->QueryInterceptionHookPoint(InterceptionHookPoints::POST_RECV_INITIAL_METADATA)) {
      auto* metadata = methods->GetRecvInitialMetadata();
      auto it = metadata->find(kRequestIdHeader);
      if (it != metadata->end() && AcceptableRequestId(it->second)) {
        request_id_.assign(it->second.data(), it->second.size());
      } else {
        if (it != metadata->end()) metadata->erase(it);
        request_id_ = NewUuid();
        // The map refers to this string, which lives as long as the call.
        metadata->emplace(grpc::string_ref(kRequestIdHeader), grpc::string_ref(request_id_));
      }
    }
    if (methods->QueryInterceptionHookPoint(InterceptionHookPoints::PRE_SEND_INITIAL_METADATA) &&
        !request_id_.empty()) {
      methods->GetSendInitialMetadata()->emplace(kRequestIdHeader, request_id_);
    }
    if (methods->QueryInterceptionHookPoint(InterceptionHookPoints::PRE_SEND_STATUS)) {
      const grpc::Status status = methods->GetSendStatus();
      Finish(static_cast<absl::StatusCode>(status.error_code()), status.error_message());
    }
    methods->Proceed();
  }

 private:
  void Finish(absl::StatusCode code, const std::string& message) {
    finished_ = true;
    const absl::Duration elapsed = absl::Now() - started_;
    if (metrics_ != nullptr) metrics_->CallFinished(method_, type_, code, elapsed);
    LogLevel level = LogLevel::kInfo;
    if (code == absl::StatusCode::kOk) {
      level = LogLevel::kDebug;
    } else if (code == absl::StatusCode::kInternal || code == absl::StatusCode::kUnknown ||
               code == absl::StatusCode::kDataLoss) {
      level = LogLevel::kWarning;
    }
    if (!LogEnabled(level)) return;
    LogRequestScope scope(request_id_);
    Log(level, "call",
        {{"method", method_},
         {"code", absl::StatusCodeToString(code)},
         {"ms", absl::ToDoubleMilliseconds(elapsed)},
         {"message", message}});
  }

  ServerMetrics* const metrics_;
  const std::string method_;
  const ServerMetrics::CallType type_;
  const absl::Time started_;
  std::string request_id_;
  bool finished_ = false;
};

class CallInterceptorFactory final
    : public grpc::experimental::ServerInterceptorFactoryInterface {
 public:
  explicit CallInterceptorFactory(ServerMetrics* metrics) : metrics_(metrics) {}
  grpc::experimental::Interceptor* CreateServerInterceptor(ServerRpcInfo* info) override {
    return new CallInterceptor(info, metrics_);
  }

 private:
  ServerMetrics* const metrics_;
};

}  // namespace

std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface> NewCallInterceptorFactory(
    ServerMetrics* metrics) {
  return std::make_unique<CallInterceptorFactory>(metrics);
}

std::string RequestIdOf(const grpc::ServerContextBase* context) {
  const auto& metadata = context->client_metadata();
  auto it = metadata.find(kRequestIdHeader);
  if (it == metadata.end()) return "";
  return std::string(it->second.data(), it->second.size());
}

}  // namespace pulsesync

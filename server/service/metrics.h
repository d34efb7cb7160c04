// ServerMetrics: what pulsesyncd counts and measures, in the Prometheus text
// format on an HTTP endpoint (GET /metrics), with prometheus-cpp kept out of
// this header.
//
// Exported (see docs/CONFIGURATION.md for the full list with meanings):
//   grpc_server_started_total, grpc_server_handled_total{grpc_code},
//   grpc_server_handling_seconds (unary calls), pulsesync_streams_open,
//   pulsesync_revisions_total{outcome}, pulsesync_database_errors_total{code},
//   pulsesync_feed_lag_seconds, pulsesync_feed_read_delay_seconds,
//   pulsesync_feed_changes_read_total, pulsesync_feed_ring_{batches,events},
//   pulsesync_pool_{workers,busy_workers,queued_jobs}.
// The gauges of the pool and the feed are read from them at scrape time.
//
// Thread safety: every method may be called from any thread.
#ifndef PULSESYNC_SERVER_SERVICE_METRICS_H_
#define PULSESYNC_SERVER_SERVICE_METRICS_H_

#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"

namespace pulsesync {

class FeedHub;
struct FeedBatch;
class WorkerPool;

class ServerMetrics {
 public:
  ServerMetrics();
  ~ServerMetrics();  // StopServing()
  ServerMetrics(const ServerMetrics&) = delete;
  ServerMetrics& operator=(const ServerMetrics&) = delete;

  // Serves GET /metrics on `address` ("host:port"; port 0 picks a free one).
  // kUnavailable when the address cannot be bound. At most once.
  [[nodiscard]] absl::Status Serve(const std::string& address);
  // Stops the HTTP endpoint (scrapes in progress finish first). Idempotent.
  void StopServing();
  int port() const;  // the bound port; 0 when not serving

  // The pool and hub whose gauges a scrape reads; either may be null. They
  // must stay alive until this is called again with null or StopServing().
  void Observe(const WorkerPool* pool, const FeedHub* hub);

  enum class CallType { kUnary, kClientStream, kServerStream, kBidiStream };
  // gRPC calls, by fully qualified method ("/pkg.Service/Method"; methods of
  // services this server does not know are counted as "unknown"). Calls that
  // are not unary count in pulsesync_streams_open until CallFinished.
  void CallStarted(absl::string_view full_method, CallType type);
  void CallFinished(absl::string_view full_method, CallType type, absl::StatusCode code,
                    absl::Duration elapsed);

  // One ApplyRevisions batch's outcomes.
  void RevisionsApplied(int64_t applied, int64_t duplicate, int64_t rejected);
  // An error raised by PostgreSQL or libpq (PgSessionOptions::on_database_error).
  void DatabaseError(const absl::Status& status);
  // A batch the feed hub read from the change log (FeedHubOptions::on_batch).
  void FeedBatchRead(const FeedBatch& batch);

  // The exposition text a scrape returns.
  std::string Render() const;

 private:
  struct Impl;
  std::shared_ptr<Impl> impl_;  // shared: the HTTP endpoint holds a weak reference
};

}  // namespace pulsesync

#endif  // PULSESYNC_SERVER_SERVICE_METRICS_H_

#include "server/service/metrics.h"

#include <algorithm>
#include <exception>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "prometheus/collectable.h"
#include "prometheus/counter.h"
#include "prometheus/exposer.h"
#include "prometheus/gauge.h"
#include "prometheus/histogram.h"
#include "prometheus/registry.h"
#include "prometheus/text_serializer.h"
#include "server/core/feed_hub.h"
#include "server/storage/worker_pool.h"

namespace pulsesync {
namespace {

using prometheus::Counter;
using prometheus::Family;
using prometheus::Gauge;
using prometheus::Histogram;

// Label values come from a fixed set: a client naming an arbitrary method
// must not create new time series.
struct MethodLabels {
  std::string service;
  std::string method;
};

MethodLabels SplitMethod(absl::string_view full_method) {
  static const char* const kServices[] = {
      "pulsesync.v1.SyncService", "grpc.health.v1.Health",
      "grpc.reflection.v1alpha.ServerReflection", "grpc.reflection.v1.ServerReflection"};
  absl::string_view name = absl::StripPrefix(full_method, "/");
  const size_t slash = name.find('/');
  if (slash != absl::string_view::npos) {
    const absl::string_view service = name.substr(0, slash);
    const absl::string_view method = name.substr(slash + 1);
    const bool known_method =
        !method.empty() && method.size() <= 64 &&
        std::all_of(method.begin(), method.end(), [](char c) { return absl::ascii_isalnum(c); });
    for (const char* known : kServices) {
      if (service == known && known_method) return {std::string(service), std::string(method)};
    }
  }
  return {"unknown", "unknown"};
}

const char* TypeName(ServerMetrics::CallType type) {
  switch (type) {
    case ServerMetrics::CallType::kUnary: return "unary";
    case ServerMetrics::CallType::kClientStream: return "client_stream";
    case ServerMetrics::CallType::kServerStream: return "server_stream";
    case ServerMetrics::CallType::kBidiStream: return "bidi_stream";
  }
  return "unary";
}

// "UNAVAILABLE", "OK", ...: gRPC's canonical code names.
std::string CodeName(absl::StatusCode code) { return absl::StatusCodeToString(code); }

std::vector<double> LatencyBuckets() {
  return {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30};
}

}  // namespace

struct ServerMetrics::Impl final : public prometheus::Collectable {
  Impl()
      : registry(std::make_shared<prometheus::Registry>()),
        started_at(absl::Now()),
        calls_started(prometheus::BuildCounter()
                          .Name("grpc_server_started_total")
                          .Help("gRPC calls started, by method")
                          .Register(*registry)),
        calls_handled(prometheus::BuildCounter()
                          .Name("grpc_server_handled_total")
                          .Help("gRPC calls finished, by method and status code")
                          .Register(*registry)),
        call_seconds(prometheus::BuildHistogram()
                         .Name("grpc_server_handling_seconds")
                         .Help("Time from a unary call's arrival to its status being sent")
                         .Register(*registry)),
        streams_open(prometheus::BuildGauge()
                         .Name("pulsesync_streams_open")
                         .Help("Streaming calls in progress, by method")
                         .Register(*registry)),
        revisions(prometheus::BuildCounter()
                      .Name("pulsesync_revisions_total")
                      .Help("Revisions answered by ApplyRevisions, by outcome "
                            "(applied, duplicate, rejected)")
                      .Register(*registry)),
        database_errors(prometheus::BuildCounter()
                            .Name("pulsesync_database_errors_total")
                            .Help("Errors raised by PostgreSQL or libpq (failed connects, "
                                  "statements, lost connections), by status code")
                            .Register(*registry)),
        feed_changes(prometheus::BuildCounter()
                         .Name("pulsesync_feed_changes_read_total")
                         .Help("Changes the feed hub read from the change log")
                         .Register(*registry)
                         .Add({})),
        feed_delay(prometheus::BuildHistogram()
                       .Name("pulsesync_feed_read_delay_seconds")
                       .Help("Per change: from the start of its writing transaction to the "
                             "feed hub reading it")
                       .Register(*registry)
                       .Add({}, LatencyBuckets())),
        feed_lag(prometheus::BuildGauge()
                     .Name("pulsesync_feed_lag_seconds")
                     .Help("Age of the oldest change the feed hub may not have read yet: time "
                           "since the start of its last poll that reached the end of the log")
                     .Register(*registry)
                     .Add({})),
        ring_batches(prometheus::BuildGauge()
                         .Name("pulsesync_feed_ring_batches")
                         .Help("Change batches held in memory for streams")
                         .Register(*registry)
                         .Add({})),
        ring_events(prometheus::BuildGauge()
                        .Name("pulsesync_feed_ring_events")
                        .Help("Changes held in memory for streams")
                        .Register(*registry)
                        .Add({})),
        pool_workers(prometheus::BuildGauge()
                         .Name("pulsesync_pool_workers")
                         .Help("Database workers (one connection each)")
                         .Register(*registry)
                         .Add({})),
        pool_busy(prometheus::BuildGauge()
                      .Name("pulsesync_pool_busy_workers")
                      .Help("Database workers running a job")
                      .Register(*registry)
                      .Add({})),
        pool_queued(prometheus::BuildGauge()
                        .Name("pulsesync_pool_queued_jobs")
                        .Help("Jobs waiting for a database worker")
                        .Register(*registry)
                        .Add({})) {
    prometheus::BuildGauge()
        .Name("pulsesync_start_time_seconds")
        .Help("When this pulsesyncd started, in seconds since the Unix epoch")
        .Register(*registry)
        .Add({})
        .Set(absl::ToDoubleSeconds(started_at - absl::UnixEpoch()));
    for (const char* outcome : {"applied", "duplicate", "rejected"}) {
      revisions.Add({{"outcome", outcome}});
    }
  }

  std::vector<prometheus::MetricFamily> Collect() const override {
    Refresh();
    return registry->Collect();
  }

  void Refresh() const {
    absl::MutexLock lock(&sources_mu);
    if (pool != nullptr) {
      const WorkerPool::Usage usage = pool->usage();
      pool_workers.Set(pool->size());
      pool_busy.Set(usage.busy);
      pool_queued.Set(static_cast<double>(usage.queued));
    }
    if (hub != nullptr) {
      const FeedHub::Stats stats = hub->stats();
      const absl::Time since =
          stats.caught_up_at == absl::InfinitePast() ? started_at : stats.caught_up_at;
      feed_lag.Set(std::max(0.0, absl::ToDoubleSeconds(absl::Now() - since)));
      ring_batches.Set(static_cast<double>(stats.ring_batches));
      ring_events.Set(static_cast<double>(stats.ring_events));
    }
  }

  std::shared_ptr<prometheus::Registry> registry;
  const absl::Time started_at;
  Family<Counter>& calls_started;
  Family<Counter>& calls_handled;
  Family<Histogram>& call_seconds;
  Family<Gauge>& streams_open;
  Family<Counter>& revisions;
  Family<Counter>& database_errors;
  Counter& feed_changes;
  Histogram& feed_delay;
  Gauge& feed_lag;
  Gauge& ring_batches;
  Gauge& ring_events;
  Gauge& pool_workers;
  Gauge& pool_busy;
  Gauge& pool_queued;

  mutable absl::Mutex sources_mu;
  const WorkerPool* pool ABSL_GUARDED_BY(sources_mu) = nullptr;
  const FeedHub* hub ABSL_GUARDED_BY(sources_mu) = nullptr;

  absl::Mutex exposer_mu;
  std::unique_ptr<prometheus::Exposer> exposer ABSL_GUARDED_BY(exposer_mu);
  int port = 0;  // written once, before Serve returns
};

ServerMetrics::ServerMetrics() : impl_(std::make_shared<Impl>()) {}

ServerMetrics::~ServerMetrics() { StopServing(); }

absl::Status ServerMetrics::Serve(const std::string& address) {
  absl::MutexLock lock(&impl_->exposer_mu);
  if (impl_->exposer != nullptr) return absl::FailedPreconditionError("metrics already served");
  try {
    auto exposer = std::make_unique<prometheus::Exposer>(address, /*num_threads=*/1);
    // The exposer holds a weak reference; impl_ outlives it.
    exposer->RegisterCollectable(impl_);
    const std::vector<int> ports = exposer->GetListeningPorts();
    impl_->port = ports.empty() ? 0 : ports.front();
    impl_->exposer = std::move(exposer);
    return absl::OkStatus();
  } catch (const std::exception& e) {
    return absl::UnavailableError(
        absl::StrCat("cannot serve metrics on ", address, ": ", e.what()));
  }
}

void ServerMetrics::StopServing() {
  std::unique_ptr<prometheus::Exposer> exposer;
  {
    absl::MutexLock lock(&impl_->exposer_mu);
    exposer = std::move(impl_->exposer);
  }
  exposer.reset();  // joins the HTTP threads
  Observe(nullptr, nullptr);
}

int ServerMetrics::port() const { return impl_->port; }

void ServerMetrics::Observe(const WorkerPool* pool, const FeedHub* hub) {
  absl::MutexLock lock(&impl_->sources_mu);
  impl_->pool = pool;
  impl_->hub = hub;
}

void ServerMetrics::CallStarted(absl::string_view full_method, CallType type) {
  const MethodLabels m = SplitMethod(full_method);
  impl_->calls_started
      .Add({{"grpc_service", m.service}, {"grpc_method", m.method}, {"grpc_type", TypeName(type)}})
      .Increment();
  if (type != CallType::kUnary) {
    impl_->streams_open.Add({{"grpc_method", m.method}}).Increment();
  }
}

void ServerMetrics::CallFinished(absl::string_view full_method, CallType type,
                                 absl::StatusCode code, absl::Duration elapsed) {
  const MethodLabels m = SplitMethod(full_method);
  impl_->calls_handled
      .Add({{"grpc_service", m.service},
            {"grpc_method", m.method},
            {"grpc_type", TypeName(type)},
            {"grpc_code", CodeName(code)}})
      .Increment();
  if (type == CallType::kUnary) {
    impl_->call_seconds
        .Add({{"grpc_service", m.service}, {"grpc_method", m.method}}, LatencyBuckets())
        .Observe(absl::ToDoubleSeconds(elapsed));
  } else {
    impl_->streams_open.Add({{"grpc_method", m.method}}).Decrement();
  }
}

void ServerMetrics::RevisionsApplied(int64_t applied, int64_t duplicate, int64_t rejected) {
  if (applied > 0) impl_->revisions.Add({{"outcome", "applied"}}).Increment(applied);
  if (duplicate > 0) impl_->revisions.Add({{"outcome", "duplicate"}}).Increment(duplicate);
  if (rejected > 0) impl_->revisions.Add({{"outcome", "rejected"}}).Increment(rejected);
}

void ServerMetrics::DatabaseError(const absl::Status& status) {
  impl_->database_errors.Add({{"code", CodeName(status.code())}}).Increment();
}

void ServerMetrics::FeedBatchRead(const FeedBatch& batch) {
  const int64_t now_ms = absl::ToUnixMillis(absl::Now());
  for (const FeedEvent& e : batch.events) {
    const int64_t at = e.change.commit_timestamp_ms();
    if (at > 0) impl_->feed_delay.Observe(std::max<int64_t>(0, now_ms - at) / 1000.0);
  }
  impl_->feed_changes.Increment(static_cast<double>(batch.events.size()));
}

std::string ServerMetrics::Render() const {
  return prometheus::TextSerializer().Serialize(impl_->Collect());
}

}  // namespace pulsesync

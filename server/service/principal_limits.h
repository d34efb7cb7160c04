// Per-principal limits against one caller starving the others: concurrent
// streams, and a token bucket on revisions applied per second. Trusted
// callers (development mode without a principal) and service_role are not
// limited. Thread-safe.
#ifndef PULSESYNC_SERVER_SERVICE_PRINCIPAL_LIMITS_H_
#define PULSESYNC_SERVER_SERVICE_PRINCIPAL_LIMITS_H_

#include <cstdint>
#include <memory>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "server/core/principal.h"

namespace pulsesync {

struct PrincipalLimitOptions {
  int max_streams = 32;                  // concurrent StreamChanges + Snapshot calls
  double revisions_per_second = 2000;    // sustained ApplyRevisions rate
  double revisions_burst = 10000;        // bucket size
};

class PrincipalLimits {
 public:
  // Held by a stream for its lifetime; releases its slot when destroyed.
  class StreamLease {
   public:
    ~StreamLease();
    StreamLease(const StreamLease&) = delete;
    StreamLease& operator=(const StreamLease&) = delete;

   private:
    friend class PrincipalLimits;
    StreamLease(PrincipalLimits* limits, std::string key) : limits_(limits), key_(std::move(key)) {}
    PrincipalLimits* limits_;
    std::string key_;
  };

  explicit PrincipalLimits(PrincipalLimitOptions options) : options_(options) {}

  // A stream slot, or kResourceExhausted naming the limit. nullptr lease
  // for unlimited callers.
  absl::StatusOr<std::unique_ptr<StreamLease>> AcquireStream(const Principal& principal);

  // Takes `revisions` tokens, or kResourceExhausted saying when to retry.
  absl::Status ChargeRevisions(const Principal& principal, int64_t revisions);

 private:
  struct Bucket {
    double tokens = 0;
    absl::Time refilled = absl::InfinitePast();
  };
  static bool Limited(const Principal& p) { return !p.trusted() && p.role != "service_role"; }
  static std::string Key(const Principal& p) { return p.role + ":" + p.user_id; }
  void ReleaseStream(const std::string& key);

  const PrincipalLimitOptions options_;
  absl::Mutex mu_;
  absl::flat_hash_map<std::string, int> streams_ ABSL_GUARDED_BY(mu_);
  absl::flat_hash_map<std::string, Bucket> buckets_ ABSL_GUARDED_BY(mu_);
};

}  // namespace pulsesync

#endif  // PULSESYNC_SERVER_SERVICE_PRINCIPAL_LIMITS_H_

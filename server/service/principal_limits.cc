#include "server/service/principal_limits.h"

#include <algorithm>
#include <cmath>

#include "absl/strings/str_cat.h"

namespace pulsesync {

PrincipalLimits::StreamLease::~StreamLease() { limits_->ReleaseStream(key_); }

absl::StatusOr<std::unique_ptr<PrincipalLimits::StreamLease>> PrincipalLimits::AcquireStream(
    const Principal& principal) {
  if (!Limited(principal)) return std::unique_ptr<StreamLease>();
  const std::string key = Key(principal);
  absl::MutexLock lock(&mu_);
  int& n = streams_[key];
  if (n >= options_.max_streams) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "too many open streams for this user (limit ", options_.max_streams,
        "): close one, or share one stream between subscriptions"));
  }
  ++n;
  return std::unique_ptr<StreamLease>(new StreamLease(this, key));
}

void PrincipalLimits::ReleaseStream(const std::string& key) {
  absl::MutexLock lock(&mu_);
  auto it = streams_.find(key);
  if (it != streams_.end() && --it->second <= 0) streams_.erase(it);
}

absl::Status PrincipalLimits::ChargeRevisions(const Principal& principal, int64_t revisions) {
  if (!Limited(principal)) return absl::OkStatus();
  const absl::Time now = absl::Now();
  absl::MutexLock lock(&mu_);
  Bucket& b = buckets_[Key(principal)];
  if (b.refilled == absl::InfinitePast()) {
    b.tokens = options_.revisions_burst;
  } else {
    b.tokens = std::min(options_.revisions_burst,
                        b.tokens + absl::ToDoubleSeconds(now - b.refilled) *
                                       options_.revisions_per_second);
  }
  b.refilled = now;
  const double need = static_cast<double>(revisions);
  if (need > options_.revisions_burst) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "a batch of ", revisions, " revisions exceeds this user's burst of ",
        static_cast<int64_t>(options_.revisions_burst), ": send smaller batches"));
  }
  if (b.tokens < need) {
    const double wait_s = (need - b.tokens) / options_.revisions_per_second;
    return absl::ResourceExhaustedError(absl::StrCat(
        "rate limit: this user may apply ", static_cast<int64_t>(options_.revisions_per_second),
        " revisions/s; retry in ", static_cast<int64_t>(std::ceil(wait_s * 1000)), " ms"));
  }
  b.tokens -= need;
  return absl::OkStatus();
}

}  // namespace pulsesync

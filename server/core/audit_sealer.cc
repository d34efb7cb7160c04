#include "server/core/audit_sealer.h"

#include <algorithm>
#include <utility>

#include "common/log.h"
#include "server/core/audit_chain.h"

namespace pulsesync {

AuditSealer::AuditSealer(PgSessionOptions session_options, AuditSealerOptions options)
    : options_(std::move(options)), session_(std::move(session_options)) {}

AuditSealer::~AuditSealer() { Stop(); }

void AuditSealer::Start() { thread_ = std::thread([this] { Loop(); }); }

void AuditSealer::Stop() {
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
  }
  if (thread_.joinable()) thread_.join();
}

int64_t AuditSealer::sealed() const {
  absl::MutexLock lock(&mu_);
  return sealed_;
}

void AuditSealer::MaybeExpire() {
  if (options_.retention <= absl::ZeroDuration() || absl::Now() < next_expiry_) return;
  next_expiry_ = absl::Now() + options_.retention_interval;
  absl::StatusOr<int64_t> removed = ExpireAuditEntries(session_, options_.retention);
  if (!removed.ok()) {
    LogWarning("audit retention failed", {{"status", removed.status()}});
  } else if (*removed > 0) {
    LogInfo("audit retention removed entries",
            {{"entries", *removed},
             {"older_than_s", static_cast<int64_t>(absl::ToInt64Seconds(options_.retention))}});
  }
}

void AuditSealer::Loop() {
  absl::Duration wait = options_.interval;
  while (true) {
    {
      absl::MutexLock lock(&mu_);
      if (mu_.AwaitWithTimeout(absl::Condition(&stopping_), wait)) return;
    }
    absl::StatusOr<int64_t> n = SealAuditEntries(session_, options_.batch);
    if (!n.ok()) {
      LogWarning("audit sealing failed", {{"status", n.status()}});
      wait = std::min(wait * 2, std::max(options_.interval, absl::Seconds(10)));
      continue;
    }
    {
      absl::MutexLock lock(&mu_);
      sealed_ += *n;
    }
    // A full batch: more is waiting.
    wait = *n >= options_.batch ? absl::ZeroDuration() : options_.interval;
    MaybeExpire();
  }
}

}  // namespace pulsesync

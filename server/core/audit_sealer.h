// AuditSealer: the background thread of pulsesyncd that seals committed
// audit entries into the chain (audit_chain.h) and applies audit retention.
// Every replica runs one; the advisory lock in SealAuditEntries lets one of
// them work at a time, and the others' rounds are cheap no-ops.
//
// Thread safety: Start/Stop/Wake are thread-safe; the session is the
// sealer thread's.
#ifndef PULSESYNC_SERVER_CORE_AUDIT_SEALER_H_
#define PULSESYNC_SERVER_CORE_AUDIT_SEALER_H_

#include <cstdint>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "server/storage/pg_session.h"

namespace pulsesync {

struct AuditSealerOptions {
  // Seal what committed, this often (a full batch goes on at once).
  absl::Duration interval = absl::Seconds(1);
  int64_t batch = 5000;
  // Entries older than this leave the trail (and the change log); zero keeps
  // them forever. Checked every retention_interval.
  absl::Duration retention = absl::ZeroDuration();
  absl::Duration retention_interval = absl::Minutes(1);
};

class AuditSealer {
 public:
  AuditSealer(PgSessionOptions session_options, AuditSealerOptions options);
  ~AuditSealer();  // Stop()
  AuditSealer(const AuditSealer&) = delete;
  AuditSealer& operator=(const AuditSealer&) = delete;

  void Start();
  void Stop();  // idempotent

  // Entries sealed by this process so far.
  int64_t sealed() const;

 private:
  void Loop();
  void MaybeExpire();

  const AuditSealerOptions options_;
  PgSession session_;  // sealer thread only
  absl::Time next_expiry_ = absl::InfinitePast();  // sealer thread only
  std::thread thread_;
  mutable absl::Mutex mu_;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  int64_t sealed_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace pulsesync

#endif  // PULSESYNC_SERVER_CORE_AUDIT_SEALER_H_

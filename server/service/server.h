// pulsesyncd's process-level pieces: configuration, the running server, and
// the two commands (`serve`, `migrate`).
#ifndef PULSESYNC_SERVER_SERVICE_SERVER_H_
#define PULSESYNC_SERVER_SERVICE_SERVER_H_

#include <cstddef>
#include <cstdint>
#include <memory>
#include <ostream>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "server/core/revision_applier.h"
#include "server/service/principal_limits.h"

namespace pulsesync {

struct ServerConfig {
  std::string database_url;                 // libpq URL or key=value string
  std::string listen_address = "127.0.0.1:50051";  // port 0 picks a free port
  std::string migrations_dir;               // "" = the built-in default
  int pool_size = 4;                        // database workers = connections
  size_t max_queued_calls = 4096;           // beyond: RESOURCE_EXHAUSTED
  ApplyLimits apply_limits;
  uint32_t default_pull_limit = 500;
  uint32_t max_pull_limit = 5000;
  int max_message_bytes = 64 << 20;
  std::string port_file;  // if set, the bound port is written here once serving
  absl::Duration feed_poll_interval = absl::Milliseconds(500);
  bool feed_notify = true;  // NOTIFY after applying, to wake every replica at once
  size_t feed_ring_batches = 1024;  // batches the hub keeps for streams
  uint32_t feed_page_limit = 1000;  // changes per hub read
  // Change-log rows older than this are deleted; cursors from before them
  // get "re-snapshot". Zero keeps the log forever.
  absl::Duration log_retention = absl::Hours(24 * 30);
  // Audit (docs/AUDIT.md). Committed entries are sealed into the hash chain
  // this often (zero: no sealing in this process). Entries older than
  // audit_retention leave the trail and the log (zero: kept forever; the
  // feed's log_retention never deletes them).
  absl::Duration audit_seal_interval = absl::Seconds(1);
  absl::Duration audit_retention = absl::ZeroDuration();
  // Authentication. With a JWT secret or a JWKS (file or URL), every call needs
  // "authorization: Bearer <JWT>" (Supabase compatible). With neither, the
  // server runs in development mode: x-pulsesync-user-id metadata names the
  // user, and a call without it is trusted.
  PrincipalLimitOptions principal_limits;  // per-user streams and write rate
  std::string jwt_secret;
  std::string jwks_file;
  // A JWKS fetched from a URL (https, or http to loopback) and re-read every
  // jwks_refresh, or sooner (at most every jwks_min_refetch_interval) when a
  // token names an unknown kid; see server/core/jwks_refresher.h. Not
  // together with jwks_file.
  std::string jwks_url;
  std::string jwks_ca_file;  // PEM roots for an https jwks_url; "" = system
  absl::Duration jwks_refresh = absl::Minutes(10);
  absl::Duration jwks_min_refetch_interval = absl::Seconds(30);
  std::string jwt_audience = "authenticated";
  std::string jwt_issuer;
  // TLS. With a certificate chain and its key (PEM files) the server speaks
  // only TLS; with a client CA bundle as well, every client must present a
  // certificate signed by it (mTLS). Plaintext only when `plaintext` is set
  // (and no TLS file is): a warning is logged unless listen_address is
  // loopback (IsLoopbackAddress). Neither TLS nor `plaintext`, both, or a
  // client CA without a certificate and key: Start fails.
  std::string tls_cert_file;
  std::string tls_key_file;
  std::string tls_client_ca_file;
  // Operations. Prometheus metrics on GET /metrics at this "host:port"
  // ("" = none; port 0 picks a free one, see SyncServer::metrics_port()).
  std::string metrics_listen;
  // `serve` on SIGTERM/SIGINT: how long in-flight calls may take to finish
  // before the process exits anyway (with status 1).
  absl::Duration shutdown_grace = absl::Seconds(10);
  bool plaintext = false;
};

// The migrations directory to use when none is configured: the source tree's
// for a build, else the installed share directory.
std::string DefaultMigrationsDir();

// A running pulsesyncd: gRPC server (SyncService, health, reflection) and its
// database workers. Thread-safe.
class SyncServer {
 public:
  // Loads the TLS files (kNotFound naming a file that cannot be read,
  // kInvalidArgument for one that does not parse, a key that does not match
  // its certificate, an incomplete TLS configuration, or neither TLS nor
  // plaintext asked for), loads the
  // migrations, checks the schema is current (refuses to start with
  // kFailedPrecondition if not; starts anyway, logging a warning, when
  // PostgreSQL is unreachable), and starts listening.
  static absl::StatusOr<std::unique_ptr<SyncServer>> Start(const ServerConfig& config);
  ~SyncServer();  // Shutdown(5s)

  int port() const;
  int metrics_port() const;  // 0 when metrics are not served

  // Graceful stop: health turns NOT_SERVING; streams end with UNAVAILABLE
  // (clients resume from their cursors elsewhere); new calls are refused
  // with UNAVAILABLE; the workers finish every job already accepted
  // (in-flight ApplyRevisions commit and are answered); then gRPC stops,
  // waiting at most `grace` (capped at 500 ms, as every call is answered by
  // then) for calls still open. The workers' drain itself is not bounded
  // here: RunServe bounds the whole shutdown. Idempotent.
  void Shutdown(absl::Duration grace);

 private:
  struct Impl;
  explicit SyncServer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// `pulsesyncd serve`: runs until SIGINT or SIGTERM, then shuts down cleanly
// (SyncServer::Shutdown). If that takes longer than config.shutdown_grace,
// it logs an error and exits the process with status 1 at once: PostgreSQL
// rolls back what was not committed, and clients retry (idempotently).
absl::Status RunServe(const ServerConfig& config);

// `pulsesyncd migrate`: applies pending migrations and exits.
absl::Status RunMigrate(const ServerConfig& config);

// `pulsesyncd audit verify`: walks the audit chain, prints what it checked
// and the head (seq, hash) to `out`; kDataLoss naming the first broken link.
// `pulsesyncd audit seal`: seals every committed entry now (what the
// server's sealer does in the background), printing how many.
absl::Status RunAuditVerify(const ServerConfig& config, std::ostream& out);
absl::Status RunAuditSeal(const ServerConfig& config, std::ostream& out);

// `pulsesyncd health`: asks grpc.health.v1.Health/Check at `address`
// (0.0.0.0 and [::] mean this machine) over plaintext, or over TLS trusting
// `tls_ca_file` when it is set. OK when the server answers SERVING;
// kUnavailable (with the reason) otherwise. For container HEALTHCHECKs and
// exec probes.
absl::Status RunHealthCheck(const std::string& address, const std::string& tls_ca_file,
                            absl::Duration timeout);

}  // namespace pulsesync

#endif  // PULSESYNC_SERVER_SERVICE_SERVER_H_

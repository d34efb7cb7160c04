// pulsesyncd: flags -> ServerConfig -> RunServe / RunMigrate.
#include <cstdlib>
#include <iostream>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "absl/strings/numbers.h"
#include "common/log.h"
#include "server/service/server.h"

namespace {

std::string EnvOr(const char* name, const char* fallback) {
  const char* v = std::getenv(name);
  return v != nullptr && *v != '\0' ? v : fallback;
}

int EnvIntOr(const char* name, int fallback) {
  int v;
  return absl::SimpleAtoi(EnvOr(name, ""), &v) ? v : fallback;
}

// "1", "true", "yes", ... (absl::SimpleAtob); anything else is the fallback.
bool EnvBoolOr(const char* name, bool fallback) {
  bool v;
  return absl::SimpleAtob(EnvOr(name, ""), &v) ? v : fallback;
}

}  // namespace

ABSL_FLAG(std::string, database_url, EnvOr("DATABASE_URL", ""),
          "PostgreSQL URL (env DATABASE_URL)");
ABSL_FLAG(std::string, listen, EnvOr("PULSESYNC_LISTEN", "127.0.0.1:50051"),
          "gRPC listen address; port 0 picks a free one (env PULSESYNC_LISTEN)");
ABSL_FLAG(std::string, migrations_dir, EnvOr("PULSESYNC_MIGRATIONS_DIR", ""),
          "directory of NNNN_name.sql migrations (env PULSESYNC_MIGRATIONS_DIR)");
ABSL_FLAG(int, pool_size, EnvIntOr("PULSESYNC_POOL_SIZE", 4),
          "database connections, one per worker (env PULSESYNC_POOL_SIZE)");
ABSL_FLAG(int, max_batch_revisions, EnvIntOr("PULSESYNC_MAX_BATCH_REVISIONS", 1000),
          "most revisions one ApplyRevisions call may carry");
ABSL_FLAG(int, default_pull_limit, 500, "PullChanges page size when the client sets none");
ABSL_FLAG(int, max_pull_limit, EnvIntOr("PULSESYNC_MAX_PULL_LIMIT", 5000),
          "largest PullChanges page");
ABSL_FLAG(int, max_payload_bytes, 1 << 20, "largest payload of one revision");
ABSL_FLAG(std::string, port_file, "", "write the bound port to this file once serving");
ABSL_FLAG(int, feed_poll_ms, EnvIntOr("PULSESYNC_FEED_POLL_MS", 500),
          "how often the change feed polls the log when no notification wakes it");
ABSL_FLAG(int, feed_ring_batches, 1024,
          "change batches kept in memory for streams; a stream further behind reads the log");
ABSL_FLAG(int, feed_page_limit, 1000, "changes per read of the change log by the feed");
ABSL_FLAG(absl::Duration, log_retention, absl::Hours(24 * 30),
          "delete change-log rows older than this (e.g. 720h; 0 keeps them forever); "
          "clients with older cursors re-snapshot");
ABSL_FLAG(absl::Duration, audit_retention, absl::ZeroDuration(),
          "remove audit entries (and their change-log rows) older than this, leaving a "
          "checkpoint so the chain still verifies (e.g. 8760h; 0 keeps them forever). "
          "Independent of --log_retention, which never deletes audit entries");
ABSL_FLAG(absl::Duration, audit_seal_interval, absl::Seconds(1),
          "how often committed audit entries are sealed into the hash chain (one replica at a "
          "time seals; 0 disables sealing in this process)");
ABSL_FLAG(std::string, jwt_secret,
          EnvOr("PULSESYNC_JWT_SECRET", EnvOr("SUPABASE_JWT_SECRET", "").c_str()),
          "HS256 secret of the Supabase project (env PULSESYNC_JWT_SECRET or SUPABASE_JWT_SECRET)");
ABSL_FLAG(std::string, jwks_file, EnvOr("PULSESYNC_JWKS_FILE", ""),
          "JWKS document with the public keys (RS256/ES256) tokens are verified with");
ABSL_FLAG(std::string, jwks_url, EnvOr("PULSESYNC_JWKS_URL", ""),
          "URL of the JWKS (https, or http to a loopback host), re-read every --jwks_refresh "
          "and sooner when a token names an unknown kid (env PULSESYNC_JWKS_URL)");
ABSL_FLAG(std::string, jwks_ca_file, EnvOr("PULSESYNC_JWKS_CA_FILE", ""),
          "PEM CA bundle an https --jwks_url must chain to (default: the system's roots)");
ABSL_FLAG(absl::Duration, jwks_refresh, absl::Minutes(10), "how often --jwks_url is re-read");
ABSL_FLAG(absl::Duration, jwks_min_refetch_interval, absl::Seconds(30),
          "least time between fetches of --jwks_url asked for by unknown kids, and before "
          "retrying a failed fetch");
ABSL_FLAG(std::string, jwt_audience, "authenticated", "required aud claim (empty: not checked)");
ABSL_FLAG(std::string, jwt_issuer, "", "required iss claim (empty: not checked)");
ABSL_FLAG(int, max_streams_per_user, 32,
          "concurrent StreamChanges and Snapshot calls one user may hold");
ABSL_FLAG(double, revisions_per_second_per_user, 2000,
          "sustained ApplyRevisions rate one user may use (token bucket)");
ABSL_FLAG(double, revisions_burst_per_user, 10000, "token bucket size for that rate");
ABSL_FLAG(std::string, tls_cert_file, EnvOr("PULSESYNC_TLS_CERT_FILE", ""),
          "PEM certificate chain; with --tls_key_file the server speaks TLS only "
          "(env PULSESYNC_TLS_CERT_FILE). Without both, --plaintext is required");
ABSL_FLAG(std::string, tls_key_file, EnvOr("PULSESYNC_TLS_KEY_FILE", ""),
          "PEM private key of --tls_cert_file (env PULSESYNC_TLS_KEY_FILE)");
ABSL_FLAG(std::string, tls_client_ca_file, EnvOr("PULSESYNC_TLS_CLIENT_CA_FILE", ""),
          "PEM CA bundle; when set, clients must present a certificate it signed (mTLS) "
          "(env PULSESYNC_TLS_CLIENT_CA_FILE)");
ABSL_FLAG(bool, plaintext, EnvBoolOr("PULSESYNC_PLAINTEXT", false),
          "serve unencrypted gRPC (env PULSESYNC_PLAINTEXT=1); without it the server needs "
          "--tls_cert_file and --tls_key_file. Logs a warning off loopback");
ABSL_FLAG(bool, feed_notify, true,
          "NOTIFY the other replicas after applying revisions (else they poll)");
ABSL_FLAG(std::string, metrics_listen, EnvOr("PULSESYNC_METRICS_LISTEN", ""),
          "serve Prometheus metrics on GET /metrics at this host:port (empty: off) "
          "(env PULSESYNC_METRICS_LISTEN)");
ABSL_FLAG(absl::Duration, shutdown_grace,
          [] {
            absl::Duration d;
            return absl::ParseDuration(EnvOr("PULSESYNC_SHUTDOWN_GRACE", "10s"), &d)
                       ? d
                       : absl::Seconds(10);
          }(),
          "on SIGTERM/SIGINT, how long accepted calls may take to finish before the process "
          "exits anyway (env PULSESYNC_SHUTDOWN_GRACE)");
ABSL_FLAG(std::string, address, "",
          "health: the server to check (default: the --listen address)");
ABSL_FLAG(std::string, tls_ca_file, "",
          "health: talk TLS and trust this PEM CA bundle (default: plaintext)");

int main(int argc, char** argv) {
  // Debian's Abseil builds with mutex deadlock detection on; it costs a few
  // percent of CPU on the feed's hot path (bench/feed_bench).
  absl::SetMutexDeadlockDetectionMode(absl::OnDeadlockCycle::kIgnore);
  absl::SetProgramUsageMessage(
      "pulsesyncd [serve|migrate|health|audit verify|audit seal] [flags]\n"
      "  serve         (default) serve the sync API until SIGINT/SIGTERM\n"
      "  migrate       apply pending database migrations and exit\n"
      "  health        exit 0 if the server at --address (default --listen) is SERVING, else 1\n"
      "  audit verify  walk the audit hash chain; exit 1 naming the first broken link\n"
      "  audit seal    seal every committed audit entry now");
  std::vector<char*> args = absl::ParseCommandLine(argc, argv);
  const std::string command = args.size() > 1 ? args[1] : "serve";
  const std::string subcommand = args.size() > 2 ? args[2] : "";
  const bool audit_ok = command == "audit" && args.size() == 3 &&
                        (subcommand == "verify" || subcommand == "seal");
  if ((command != "audit" && args.size() > 2) ||
      (command != "serve" && command != "migrate" && command != "health" && !audit_ok)) {
    std::cerr << "pulsesyncd: unknown command; usage: pulsesyncd "
                 "[serve|migrate|health|audit verify|audit seal] [flags]\n";
    return 2;
  }
  if (command == "health") {
    const std::string address = absl::GetFlag(FLAGS_address).empty()
                                    ? absl::GetFlag(FLAGS_listen)
                                    : absl::GetFlag(FLAGS_address);
    const absl::Status health =
        pulsesync::RunHealthCheck(address, absl::GetFlag(FLAGS_tls_ca_file), absl::Seconds(5));
    if (!health.ok()) {
      std::cerr << "pulsesyncd health: " << health << "\n";
      return 1;
    }
    std::cout << "SERVING\n";
    return 0;
  }

  pulsesync::ServerConfig config;
  config.database_url = absl::GetFlag(FLAGS_database_url);
  config.listen_address = absl::GetFlag(FLAGS_listen);
  config.migrations_dir = absl::GetFlag(FLAGS_migrations_dir);
  config.pool_size = absl::GetFlag(FLAGS_pool_size);
  config.apply_limits.max_batch_revisions =
      static_cast<uint32_t>(std::max(1, absl::GetFlag(FLAGS_max_batch_revisions)));
  config.apply_limits.max_payload_bytes =
      static_cast<size_t>(std::max(1, absl::GetFlag(FLAGS_max_payload_bytes)));
  config.default_pull_limit = static_cast<uint32_t>(std::max(1, absl::GetFlag(FLAGS_default_pull_limit)));
  config.max_pull_limit = static_cast<uint32_t>(std::max(1, absl::GetFlag(FLAGS_max_pull_limit)));
  config.port_file = absl::GetFlag(FLAGS_port_file);
  config.feed_poll_interval = absl::Milliseconds(std::max(10, absl::GetFlag(FLAGS_feed_poll_ms)));
  config.feed_notify = absl::GetFlag(FLAGS_feed_notify);
  config.log_retention = absl::GetFlag(FLAGS_log_retention);
  config.audit_retention = absl::GetFlag(FLAGS_audit_retention);
  config.audit_seal_interval = absl::GetFlag(FLAGS_audit_seal_interval);
  config.jwt_secret = absl::GetFlag(FLAGS_jwt_secret);
  config.jwks_file = absl::GetFlag(FLAGS_jwks_file);
  config.jwks_url = absl::GetFlag(FLAGS_jwks_url);
  config.jwks_ca_file = absl::GetFlag(FLAGS_jwks_ca_file);
  config.jwks_refresh = absl::GetFlag(FLAGS_jwks_refresh);
  config.jwks_min_refetch_interval = absl::GetFlag(FLAGS_jwks_min_refetch_interval);
  config.jwt_audience = absl::GetFlag(FLAGS_jwt_audience);
  config.jwt_issuer = absl::GetFlag(FLAGS_jwt_issuer);
  config.tls_cert_file = absl::GetFlag(FLAGS_tls_cert_file);
  config.tls_key_file = absl::GetFlag(FLAGS_tls_key_file);
  config.tls_client_ca_file = absl::GetFlag(FLAGS_tls_client_ca_file);
  config.plaintext = absl::GetFlag(FLAGS_plaintext);
  config.principal_limits.max_streams = std::max(1, absl::GetFlag(FLAGS_max_streams_per_user));
  config.principal_limits.revisions_per_second =
      std::max(1.0, absl::GetFlag(FLAGS_revisions_per_second_per_user));
  config.principal_limits.revisions_burst =
      std::max(1.0, absl::GetFlag(FLAGS_revisions_burst_per_user));
  config.feed_page_limit = static_cast<uint32_t>(std::max(1, absl::GetFlag(FLAGS_feed_page_limit)));
  config.feed_ring_batches = static_cast<size_t>(std::max(1, absl::GetFlag(FLAGS_feed_ring_batches)));
  config.metrics_listen = absl::GetFlag(FLAGS_metrics_listen);
  config.shutdown_grace = std::max(absl::Seconds(1), absl::GetFlag(FLAGS_shutdown_grace));

  if (command == "audit") {
    const absl::Status audit = subcommand == "verify" ? pulsesync::RunAuditVerify(config, std::cout)
                                                      : pulsesync::RunAuditSeal(config, std::cout);
    if (!audit.ok()) {
      std::cerr << "pulsesyncd audit " << subcommand << ": " << audit.message() << "\n";
      return 1;
    }
    return 0;
  }
  const absl::Status status = command == "migrate" ? pulsesync::RunMigrate(config)
                                                   : pulsesync::RunServe(config);
  if (!status.ok()) {
    pulsesync::LogError("pulsesyncd failed", {{"command", command}, {"status", status}});
    return 1;
  }
  return 0;
}

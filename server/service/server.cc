#include "server/service/server.h"

#include <signal.h>
#include <unistd.h>

#include <cstdio>
#include <atomic>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <thread>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
#include "common/log.h"
#include "common/net_address.h"
#include "common/status_macros.h"
#include "common/tls_files.h"
#include "server/core/task_stats.h"
#include "grpcpp/ext/proto_server_reflection_plugin.h"
#include "grpcpp/grpcpp.h"
#include "grpcpp/health_check_service_interface.h"
#include "server/core/audit_chain.h"
#include "server/core/audit_sealer.h"
#include "server/core/change_feed.h"
#include "server/core/feed_hub.h"
#include "server/core/jwks_refresher.h"
#include "server/core/jwt_authenticator.h"
#include "common/jwt.h"
#include "server/core/migrator.h"
#include "server/service/audit_service.h"
#include "server/service/call_interceptor.h"
#include "server/service/health_probe.h"
#include "server/service/metrics.h"
#include "server/service/sync_service.h"
#include "server/storage/pg_session.h"
#include "server/storage/worker_pool.h"

#ifndef PULSESYNC_SOURCE_MIGRATIONS_DIR
#define PULSESYNC_SOURCE_MIGRATIONS_DIR ""
#endif
#ifndef PULSESYNC_INSTALL_MIGRATIONS_DIR
#define PULSESYNC_INSTALL_MIGRATIONS_DIR "/usr/local/share/pulsesync/migrations"
#endif

namespace pulsesync {
namespace {

PgSessionOptions SessionOptions(const ServerConfig& config, ServerMetrics* metrics = nullptr) {
  PgSessionOptions o;
  o.database_url = config.database_url;
  if (metrics != nullptr) {
    o.on_database_error = [metrics](const absl::Status& s) { metrics->DatabaseError(s); };
  }
  for (auto& s : RevisionApplierStatements()) o.statements.push_back(std::move(s));
  for (auto& s : ChangeFeedStatements()) o.statements.push_back(std::move(s));
  return o;
}

absl::StatusOr<std::vector<Migration>> LoadConfiguredMigrations(const ServerConfig& config) {
  const std::string dir =
      config.migrations_dir.empty() ? DefaultMigrationsDir() : config.migrations_dir;
  return LoadMigrations(dir);
}

absl::Status WritePortFile(const std::string& path, int port) {
  const std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::trunc);
    out << port << "\n";
    if (!out) return absl::InternalError(absl::StrCat("cannot write ", tmp));
  }
  std::error_code ec;
  std::filesystem::rename(tmp, path, ec);
  if (ec) return absl::InternalError(absl::StrCat("cannot write ", path, ": ", ec.message()));
  return absl::OkStatus();
}

void SetDefaultConnectTimeout() {
  // A PostgreSQL that is down must not hang workers: libpq waits forever
  // by default. An explicit connect_timeout in the URL still wins.
  setenv("PGCONNECT_TIMEOUT", "5", /*overwrite=*/0);
}

// `jwks` receives the refresher when the keys come from a URL.
absl::StatusOr<std::unique_ptr<Authenticator>> MakeAuthenticator(
    const ServerConfig& config, std::unique_ptr<JwksRefresher>* jwks) {
  if (!config.jwks_url.empty() && !config.jwks_file.empty()) {
    return absl::InvalidArgumentError("--jwks_url and --jwks_file exclude each other");
  }
  if (config.jwt_secret.empty() && config.jwks_file.empty() && config.jwks_url.empty()) {
    LogWarning("no JWT secret or JWKS configured: development mode, calls are not authenticated "
               "(x-pulsesync-user-id names the user; without it a call is trusted)");
    return std::unique_ptr<Authenticator>(new MetadataAuthenticator());
  }
  JwtVerifierOptions options;
  if (!config.jwt_secret.empty()) options.hs256_secrets.push_back(config.jwt_secret);
  if (!config.jwks_file.empty()) {
    std::ifstream in(config.jwks_file);
    if (!in) return absl::NotFoundError(absl::StrCat("cannot read JWKS file ", config.jwks_file));
    options.jwks_json.assign(std::istreambuf_iterator<char>(in), {});
  }
  options.audiences.clear();
  if (!config.jwt_audience.empty()) options.audiences.push_back(config.jwt_audience);
  options.issuer = config.jwt_issuer;
  std::shared_ptr<const JwtVerifier> verifier;
  if (!config.jwks_url.empty()) {
    JwksRefresherOptions refresh;
    refresh.url = config.jwks_url;
    refresh.fetch.ca_file = config.jwks_ca_file;
    refresh.refresh_interval = std::max(config.jwks_refresh, absl::Seconds(1));
    refresh.min_refetch_interval = config.jwks_min_refetch_interval;
    PS_ASSIGN_OR_RETURN(*jwks, JwksRefresher::Start(std::move(refresh), std::move(options)));
    verifier = (*jwks)->verifier();
  } else {
    PS_ASSIGN_OR_RETURN(verifier, JwtVerifier::Create(options));
  }
  LogInfo("authenticating calls with JWTs",
          {{"hs256", !config.jwt_secret.empty()},
           {"jwks_keys", static_cast<int64_t>(verifier->jwks_key_count())},
           {"jwks_url", config.jwks_url},
           {"audience", config.jwt_audience}});
  return std::unique_ptr<Authenticator>(new JwtAuthenticator(std::move(verifier)));
}

// Plaintext, or TLS (optionally mTLS) from the configured PEM files. The
// files are read and checked here, once, so that a bad one stops start-up.
absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> MakeServerCredentials(
    const ServerConfig& config) {
  const bool has_cert = !config.tls_cert_file.empty();
  const bool has_key = !config.tls_key_file.empty();
  const bool has_client_ca = !config.tls_client_ca_file.empty();
  if (has_cert != has_key) {
    return absl::InvalidArgumentError(
        "TLS needs both --tls_cert_file and --tls_key_file (only one is set)");
  }
  if (has_cert && config.plaintext) {
    return absl::InvalidArgumentError(
        "--plaintext contradicts --tls_cert_file/--tls_key_file: choose one (is "
        "PULSESYNC_PLAINTEXT set?)");
  }
  if (!has_cert) {
    if (has_client_ca) {
      return absl::InvalidArgumentError(
          "--tls_client_ca_file needs --tls_cert_file and --tls_key_file");
    }
    if (!config.plaintext) {
      return absl::InvalidArgumentError(
          "no TLS configured: pass --tls_cert_file and --tls_key_file (env "
          "PULSESYNC_TLS_CERT_FILE, PULSESYNC_TLS_KEY_FILE) to serve TLS, or --plaintext "
          "(env PULSESYNC_PLAINTEXT=1) to serve unencrypted gRPC, e.g. on loopback or "
          "behind a TLS-terminating proxy");
    }
    if (!IsLoopbackAddress(config.listen_address)) {
      LogWarning("listening in plaintext on a non-loopback address: traffic, tokens included, "
                 "is unencrypted; set --tls_cert_file and --tls_key_file",
                 {{"address", config.listen_address}});
    }
    return grpc::InsecureServerCredentials();
  }
  PS_ASSIGN_OR_RETURN(PemKeyPair pair,
                      ReadPemKeyPair(config.tls_cert_file, config.tls_key_file));
  grpc::SslServerCredentialsOptions options(
      has_client_ca ? GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY
                    : GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE);
  if (has_client_ca) {
    PS_ASSIGN_OR_RETURN(options.pem_root_certs,
                        ReadPemCertificates(config.tls_client_ca_file, "TLS client CA file"));
  }
  options.pem_key_cert_pairs.push_back({std::move(pair.private_key), std::move(pair.cert_chain)});
  LogInfo("serving TLS", {{"cert", config.tls_cert_file},
                          {"client_certificates", has_client_ca ? "required" : "not requested"}});
  return grpc::SslServerCredentials(options);
}

}  // namespace

std::string DefaultMigrationsDir() {
  std::error_code ec;
  const std::string source = PULSESYNC_SOURCE_MIGRATIONS_DIR;
  if (!source.empty() && std::filesystem::is_directory(source, ec)) return source;
  return PULSESYNC_INSTALL_MIGRATIONS_DIR;
}

struct SyncServer::Impl {
  ~Impl() {
    // The metrics endpoint reads the pool and the hub: stop it first.
    if (metrics != nullptr) metrics->StopServing();
  }
  ServerConfig config;
  // GetStats's counters, refreshed on a worker after each feed batch (before
  // the pool and the hub: destroyed after them, whose jobs use it).
  std::unique_ptr<TaskStats> task_stats;
  std::shared_ptr<std::atomic<bool>> task_stats_queued = std::make_shared<std::atomic<bool>>(false);
  std::unique_ptr<ServerMetrics> metrics;
  std::unique_ptr<WorkerPool> pool;
  std::unique_ptr<FeedHub> hub;
  std::unique_ptr<JwksRefresher> jwks;  // with a JWKS URL
  std::unique_ptr<Authenticator> auth;
  std::unique_ptr<SyncServiceImpl> service;
  std::unique_ptr<AuditServiceImpl> audit_service;
  std::unique_ptr<AuditSealer> sealer;  // with an audit_seal_interval
  std::unique_ptr<grpc::Server> server;
  int port = 0;
  bool shut_down = false;
};

SyncServer::SyncServer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

SyncServer::~SyncServer() { Shutdown(absl::Seconds(5)); }

int SyncServer::port() const { return impl_->port; }

int SyncServer::metrics_port() const { return impl_->metrics->port(); }

absl::StatusOr<std::unique_ptr<SyncServer>> SyncServer::Start(const ServerConfig& config) {
  if (config.database_url.empty()) {
    return absl::InvalidArgumentError("no database configured: set --database_url or DATABASE_URL");
  }
  PS_ASSIGN_OR_RETURN(std::shared_ptr<grpc::ServerCredentials> credentials,
                      MakeServerCredentials(config));
  SetDefaultConnectTimeout();
  PS_ASSIGN_OR_RETURN(std::vector<Migration> migrations, LoadConfiguredMigrations(config));
  {
    PgSession session(SessionOptions(config));
    absl::Status schema = CheckSchemaCurrent(session, migrations);
    if (schema.code() == absl::StatusCode::kUnavailable) {
      LogWarning("database unavailable at start-up; serving anyway, calls fail with "
                 "UNAVAILABLE until it is back",
                 {{"status", schema}});
    } else if (!schema.ok()) {
      return schema;
    }
  }

  auto impl = std::make_unique<Impl>();
  impl->config = config;
  impl->metrics = std::make_unique<ServerMetrics>();
  ServerMetrics* const metrics = impl->metrics.get();
  impl->pool = std::make_unique<WorkerPool>(SessionOptions(config, metrics), config.pool_size,
                                            config.max_queued_calls);
  FeedHubOptions hub_options;
  hub_options.poll_interval = config.feed_poll_interval;
  hub_options.max_batches = config.feed_ring_batches;
  hub_options.page_limit = config.feed_page_limit;
  hub_options.log_retention = config.log_retention;
  impl->task_stats = std::make_unique<TaskStats>();
  // After each batch the hub reads, one catch-up of the task counters on a
  // worker (at most one queued at a time); GetStats also catches up itself.
  auto refresh_stats = [pool = impl->pool.get(), stats = impl->task_stats.get(),
                        queued = impl->task_stats_queued]() {
    if (queued->exchange(true)) return;
    const absl::Status submitted = pool->Submit([stats, queued](PgSession& s) {
      queued->store(false);
      absl::StatusOr<int64_t> read = stats->CatchUp(s);
      if (!read.ok()) LogWarning("task stats catch-up failed", {{"status", read.status()}});
    });
    if (!submitted.ok()) queued->store(false);
  };
  hub_options.on_batch = [metrics, refresh_stats](const FeedBatch& batch) {
    metrics->FeedBatchRead(batch);
    refresh_stats();
  };
  impl->hub = std::make_unique<FeedHub>(SessionOptions(config, metrics), hub_options);
  impl->hub->Start();
  metrics->Observe(impl->pool.get(), impl->hub.get());
  SyncServiceOptions options;
  options.apply_limits = config.apply_limits;
  options.default_pull_limit = config.default_pull_limit;
  options.max_pull_limit = config.max_pull_limit;
  options.notify_after_apply = config.feed_notify;
  options.notify_channel = hub_options.notify_channel;
  options.max_concurrent_snapshots = std::max(1, config.pool_size / 2);
  options.principal_limits = config.principal_limits;
  options.metrics = metrics;
  options.task_stats = impl->task_stats.get();
  PS_ASSIGN_OR_RETURN(impl->auth, MakeAuthenticator(config, &impl->jwks));
  impl->service = std::make_unique<SyncServiceImpl>(impl->pool.get(), impl->hub.get(),
                                                    impl->auth.get(), options);
  impl->audit_service = std::make_unique<AuditServiceImpl>(
      impl->pool.get(), impl->auth.get(), impl->service->principal_limits());
  if (config.audit_seal_interval > absl::ZeroDuration()) {
    AuditSealerOptions sealer_options;
    sealer_options.interval = config.audit_seal_interval;
    sealer_options.retention = config.audit_retention;
    impl->sealer = std::make_unique<AuditSealer>(SessionOptions(config, metrics), sealer_options);
    impl->sealer->Start();
  }

  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  // Health and reflection are services of this same server, so they are
  // served over TLS too when it is on.
  builder.AddListeningPort(config.listen_address, credentials, &impl->port);
  builder.RegisterService(impl->service.get());
  builder.RegisterService(impl->audit_service.get());
  std::vector<std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface>> interceptors;
  interceptors.push_back(NewCallInterceptorFactory(metrics));
  builder.experimental().SetInterceptorCreators(std::move(interceptors));
  // The health service is a sync service; its polling threads wake this
  // often, which bounds how long Shutdown waits for them.
  builder.SetSyncServerOption(grpc::ServerBuilder::SyncServerOption::CQ_TIMEOUT_MSEC, 200);
  // Subscribers keep quiet streams alive with pings (every 20 s); accept
  // them rather than answering "too many pings" and killing the stream.
  builder.AddChannelArgument(GRPC_ARG_HTTP2_MIN_RECV_PING_INTERVAL_WITHOUT_DATA_MS, 10000);
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1);
  builder.SetMaxReceiveMessageSize(config.max_message_bytes);
  builder.SetMaxSendMessageSize(config.max_message_bytes);
  impl->server = builder.BuildAndStart();
  if (impl->server == nullptr || impl->port == 0) {
    if (impl->sealer != nullptr) impl->sealer->Stop();
    impl->hub->Stop();
    impl->pool->Stop();
    return absl::UnavailableError(absl::StrCat("cannot listen on ", config.listen_address));
  }
  impl->server->GetHealthCheckService()->SetServingStatus(true);
  absl::Status s = absl::OkStatus();
  if (!config.metrics_listen.empty()) {
    s = metrics->Serve(config.metrics_listen);
    if (s.ok()) {
      LogInfo("serving metrics", {{"address", config.metrics_listen},
                                  {"port", metrics->port()},
                                  {"path", "/metrics"}});
    }
  }
  if (s.ok() && !config.port_file.empty()) s = WritePortFile(config.port_file, impl->port);
  {
    if (!s.ok()) {
      metrics->StopServing();
      if (impl->sealer != nullptr) impl->sealer->Stop();
      impl->hub->Stop();
      impl->server->Shutdown();
      impl->pool->Stop();
      return s;
    }
  }
  return std::unique_ptr<SyncServer>(new SyncServer(std::move(impl)));
}

void SyncServer::Shutdown(absl::Duration grace) {
  if (impl_ == nullptr || impl_->shut_down) return;
  impl_->shut_down = true;
  impl_->server->GetHealthCheckService()->SetServingStatus(false);
  // No new work from here on (UNAVAILABLE), before anyone is told to go
  // elsewhere; what is queued still runs.
  impl_->pool->Close();
  // Streams end first, with UNAVAILABLE: clients resume from their cursor
  // on another replica (or on this one when it is back). Then the workers
  // finish what is queued and refuse the rest (UNAVAILABLE). Every call is
  // answered by then, so gRPC need not wait for idle client connections,
  // which it would otherwise do until the deadline.
  if (impl_->sealer != nullptr) impl_->sealer->Stop();
  impl_->hub->Stop();
  impl_->service->CancelSnapshots();
  impl_->pool->Stop();
  impl_->server->Shutdown(absl::ToChronoTime(absl::Now() + std::min(grace, absl::Milliseconds(500))));
  impl_->server->Wait();
  impl_->metrics->StopServing();
}

absl::Status RunServe(const ServerConfig& config) {
  // Block the stop signals in every thread (they inherit the mask), and
  // take them synchronously below.
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGINT);
  sigaddset(&stop_signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);

  PS_ASSIGN_OR_RETURN(std::unique_ptr<SyncServer> server, SyncServer::Start(config));
  LogInfo("pulsesyncd serving",
          {{"address", config.listen_address},
           {"port", server->port()},
           {"pool_size", config.pool_size},
           {"pid", static_cast<int64_t>(getpid())},
           {"stop", "send SIGINT (Ctrl-C) or SIGTERM"}});
  int sig = 0;
  sigwait(&stop_signals, &sig);
  LogInfo("shutting down", {{"signal", sig == SIGINT ? "SIGINT" : "SIGTERM"},
                            {"grace_ms", absl::ToInt64Milliseconds(config.shutdown_grace)}});
  // The shutdown waits for accepted calls, and a call can wait on the
  // database (a lock, an outage): past the grace period, exit regardless,
  // as an orchestrator's SIGKILL would. Uncommitted work rolls back and
  // clients retry; revisions are idempotent.
  absl::Notification stopped;
  std::thread watchdog([&stopped, grace = config.shutdown_grace] {
    if (!stopped.WaitForNotificationWithTimeout(grace)) {
      LogError("shutdown grace period expired with calls still running; exiting now",
               {{"grace_ms", absl::ToInt64Milliseconds(grace)}});
      std::_Exit(1);
    }
  });
  server->Shutdown(config.shutdown_grace);
  stopped.Notify();
  watchdog.join();
  LogInfo("stopped");
  return absl::OkStatus();
}

absl::Status RunMigrate(const ServerConfig& config) {
  if (config.database_url.empty()) {
    return absl::InvalidArgumentError("no database configured: set --database_url or DATABASE_URL");
  }
  SetDefaultConnectTimeout();
  PS_ASSIGN_OR_RETURN(std::vector<Migration> migrations, LoadConfiguredMigrations(config));
  PgSession session(SessionOptions(config));
  PS_ASSIGN_OR_RETURN(int applied, ApplyMigrations(session, migrations));
  LogInfo("migrations done", {{"applied", applied},
                              {"total", static_cast<int64_t>(migrations.size())}});
  return absl::OkStatus();
}

absl::Status RunAuditVerify(const ServerConfig& config, std::ostream& out) {
  if (config.database_url.empty()) {
    return absl::InvalidArgumentError("no database configured: set --database_url or DATABASE_URL");
  }
  SetDefaultConnectTimeout();
  PgSession session(SessionOptions(config));
  PS_ASSIGN_OR_RETURN(AuditVerifyReport report, VerifyAuditChain(session));
  out << "checked " << report.verified << " sealed entries (seq " << report.checkpoint_seq + 1
      << " to " << report.head_seq << ")";
  if (report.checkpoint_seq > 0) out << " after the retention checkpoint at seq " << report.checkpoint_seq;
  out << "\n";
  if (!report.ok) {
    return absl::DataLossError(absl::StrCat("audit chain broken at ", report.broken));
  }
  out << "chain intact; head seq " << report.head_seq << " hash " << report.head_hash_hex << "\n"
      << report.unsealed << " committed entries not sealed yet\n";
  return absl::OkStatus();
}

absl::Status RunAuditSeal(const ServerConfig& config, std::ostream& out) {
  if (config.database_url.empty()) {
    return absl::InvalidArgumentError("no database configured: set --database_url or DATABASE_URL");
  }
  SetDefaultConnectTimeout();
  PgSession session(SessionOptions(config));
  PS_ASSIGN_OR_RETURN(int64_t total, SealAllAuditEntries(session));
  out << "sealed " << total << " entries\n";
  return absl::OkStatus();
}

}  // namespace pulsesync

namespace pulsesync {

absl::Status RunHealthCheck(const std::string& address, const std::string& tls_ca_file,
                            absl::Duration timeout) {
  // A wildcard listen address is reached through loopback.
  std::string target = address;
  if (absl::StartsWith(target, "0.0.0.0:")) target = absl::StrCat("127.0.0.1:", target.substr(8));
  if (absl::StartsWith(target, "[::]:")) target = absl::StrCat("[::1]:", target.substr(5));
  std::shared_ptr<grpc::ChannelCredentials> credentials = grpc::InsecureChannelCredentials();
  if (!tls_ca_file.empty()) {
    grpc::SslCredentialsOptions options;
    PS_ASSIGN_OR_RETURN(options.pem_root_certs, ReadPemCertificates(tls_ca_file, "TLS CA file"));
    credentials = grpc::SslCredentials(options);
  }
  PS_ASSIGN_OR_RETURN(HealthStatus status,
                      CheckHealth(grpc::CreateChannel(target, credentials), timeout));
  if (status != HealthStatus::kServing) {
    return absl::UnavailableError(absl::StrCat(target, " is not serving (health status ",
                                               static_cast<int>(status), ")"));
  }
  return absl::OkStatus();
}

}  // namespace pulsesync

// TLS end to end: pulsesyncd with a certificate (and optionally a client CA,
// for mTLS) talks only to clients that trust its CA (and present a
// certificate its client CA signed). The certificates are made at test time
// by the `openssl` command line, an implementation independent of the code
// under test.
#include <signal.h>

#include <fstream>
#include <iterator>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/match.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "absl/time/clock.h"
#include "absl/synchronization/notification.h"
#include "client/transport/grpc_transport.h"
#include "common/json.h"
#include "common/uuid.h"
#include "grpcpp/generic/generic_stub.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "pulsesync/v1/sync.pb.h"
#include "server/service/server.h"
#include "tests/testing/grpc_probes.h"
#include "tests/testing/openssl_jwt.h"
#include "tests/testing/status_matchers.h"
#include "tests/testing/subprocess.h"
#include "tests/testing/test_database.h"

namespace pulsesync {
namespace {

using ::pulsesync::testing::CommandResult;
using ::pulsesync::testing::ServerProcess;
using ::pulsesync::testing::TestDatabase;
using ::testing::HasSubstr;

// Extensions for the test PKI; `openssl req` and `openssl x509` read the
// section named by -extensions.
constexpr char kOpensslConfig[] = R"([req]
distinguished_name = dn
prompt = no
[dn]
CN = unused
[ca]
basicConstraints = critical,CA:TRUE
keyUsage = critical,keyCertSign,cRLSign
subjectKeyIdentifier = hash
[server]
basicConstraints = CA:FALSE
keyUsage = critical,digitalSignature,keyEncipherment
extendedKeyUsage = serverAuth
subjectAltName = IP:127.0.0.1,DNS:localhost
[client]
basicConstraints = CA:FALSE
keyUsage = critical,digitalSignature,keyEncipherment
extendedKeyUsage = clientAuth
)";

// The files of the test PKI, in one temporary directory: a CA, a server
// certificate and a client certificate it signed, and an unrelated CA.
struct Pki {
  std::string dir;
  std::string ca() const { return dir + "/ca.pem"; }
  std::string server_cert() const { return dir + "/server.pem"; }
  std::string server_key() const { return dir + "/server.key"; }
  std::string client_cert() const { return dir + "/client.pem"; }
  std::string client_key() const { return dir + "/client.key"; }
  std::string other_ca() const { return dir + "/other-ca.pem"; }
};

absl::Status Openssl(std::vector<std::string> args) {
  args.insert(args.begin(), "openssl");
  absl::StatusOr<CommandResult> r = testing::RunCommand(args);
  if (!r.ok()) return r.status();
  if (r->exit_code != 0) {
    return absl::InternalError(
        absl::StrCat(absl::StrJoin(args, " "), " failed: ", r->errors, r->output));
  }
  return absl::OkStatus();
}

// P-256 keys: quick to make, and what a real deployment would likely use.
absl::Status MakeCa(const std::string& dir, const std::string& name, const std::string& cnf) {
  return Openssl({"req", "-x509", "-config", cnf, "-extensions", "ca", "-newkey", "ec",
                  "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-keyout",
                  dir + "/" + name + ".key", "-out", dir + "/" + name + ".pem", "-days", "2",
                  "-subj", "/CN=pulsesync test " + name});
}

absl::Status MakeLeaf(const std::string& dir, const std::string& name, const std::string& ca,
                      const std::string& extensions, const std::string& serial,
                      const std::string& cnf) {
  const std::string base = dir + "/" + name;
  absl::Status s = Openssl({"req", "-new", "-config", cnf, "-newkey", "ec", "-pkeyopt",
                            "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", base + ".key",
                            "-out", base + ".csr", "-subj", "/CN=pulsesync test " + name});
  if (!s.ok()) return s;
  return Openssl({"x509", "-req", "-in", base + ".csr", "-CA", dir + "/" + ca + ".pem", "-CAkey",
                  dir + "/" + ca + ".key", "-set_serial", serial, "-days", "2", "-out",
                  base + ".pem", "-extfile", cnf, "-extensions", extensions});
}

absl::StatusOr<Pki> MakePki() {
  Pki pki;
  pki.dir = testing::MakeTempDir("tls-pki");
  const std::string cnf = pki.dir + "/openssl.cnf";
  {
    FILE* f = fopen(cnf.c_str(), "w");
    if (f == nullptr) return absl::InternalError("cannot write " + cnf);
    fputs(kOpensslConfig, f);
    fclose(f);
  }
  for (const absl::Status& s :
       {MakeCa(pki.dir, "ca", cnf), MakeCa(pki.dir, "other-ca", cnf),
        MakeLeaf(pki.dir, "server", "ca", "server", "2", cnf),
        MakeLeaf(pki.dir, "client", "ca", "client", "3", cnf)}) {
    if (!s.ok()) return s;
  }
  return pki;
}

class TlsE2eTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    absl::StatusOr<Pki> pki = MakePki();
    ASSERT_OK(pki);
    pki_ = new Pki(*pki);
  }
  static void TearDownTestSuite() {
    delete pki_;
    pki_ = nullptr;
  }

  void SetUp() override {
    PS_REQUIRE_POSTGRES();
    ASSERT_NE(pki_, nullptr);
    ASSERT_OK_AND_ASSIGN(db_, TestDatabase::Create());
    dir_ = testing::MakeTempDir("tls");
  }

  // Starts pulsesyncd with the server certificate, requiring client
  // certificates when `mtls`, plus `extra` flags.
  void StartServer(bool tls, bool mtls = false, std::vector<std::string> extra = {}) {
    std::vector<std::string> flags = {"--feed_poll_ms=100"};
    if (tls) {
      flags.push_back("--tls_cert_file=" + pki_->server_cert());
      flags.push_back("--tls_key_file=" + pki_->server_key());
    }
    if (mtls) flags.push_back("--tls_client_ca_file=" + pki_->ca());
    flags.insert(flags.end(), extra.begin(), extra.end());
    server_ = std::make_unique<ServerProcess>(db_->url(), dir_ + "/pulsesyncd.log", flags);
    ASSERT_OK(server_->Start());
  }

  std::unique_ptr<GrpcTransport> Client(const std::string& ca, const std::string& cert = "",
                                        const std::string& key = "") {
    GrpcTransportOptions options;
    options.deadline = absl::Seconds(10);
    options.tls_ca_file = ca;
    options.tls_cert_file = cert;
    options.tls_key_file = key;
    return GrpcTransport::Create(server_->address(), options);
  }

  // Applies one new team; returns the call's status.
  static absl::Status ApplyTeam(GrpcTransport* transport, std::string* team_id) {
    *team_id = NewUuid();
    v1::ApplyRevisionsRequest req;
    v1::Revision* r = req.add_revisions();
    r->set_id(NewUuid());
    r->set_object_type("team");
    r->set_object_id(*team_id);
    r->set_origin_id("tls-test");
    r->set_seq(1);
    r->set_op(v1::OPERATION_UPSERT);
    r->set_payload(R"({"name":"over TLS"})");
    r->set_created_at(1700000000000);
    absl::StatusOr<v1::ApplyRevisionsResponse> resp = transport->ApplyRevisions(req);
    if (!resp.ok()) return resp.status();
    if (resp->results_size() != 1 ||
        resp->results(0).outcome() != v1::RevisionResult::OUTCOME_APPLIED) {
      return absl::InternalError(absl::StrCat("not applied: ", resp->DebugString()));
    }
    return absl::OkStatus();
  }

  static Pki* pki_;
  std::unique_ptr<TestDatabase> db_;
  std::string dir_;
  std::unique_ptr<ServerProcess> server_;
};

Pki* TlsE2eTest::pki_ = nullptr;

TEST_F(TlsE2eTest, AClientTrustingTheCaAppliesAndPulls) {
  StartServer(/*tls=*/true);
  std::unique_ptr<GrpcTransport> client = Client(pki_->ca());
  std::string team;
  ASSERT_OK(ApplyTeam(client.get(), &team));
  v1::PullChangesRequest pull;
  ASSERT_OK_AND_ASSIGN(v1::PullChangesResponse changes, client->PullChanges(pull));
  ASSERT_EQ(changes.changes_size(), 1);
  EXPECT_EQ(changes.changes(0).object_id(), team);
  EXPECT_EQ(*db_->QueryValue("SELECT name FROM teams WHERE id = '" + team + "'"), "over TLS");
}

TEST_F(TlsE2eTest, HealthCheckWorksOverTls) {
  StartServer(/*tls=*/true);
  grpc::SslCredentialsOptions ssl;
  {
    std::ifstream in(pki_->ca());
    ssl.pem_root_certs.assign(std::istreambuf_iterator<char>(in), {});
    ASSERT_FALSE(ssl.pem_root_certs.empty());
  }
  ASSERT_OK_AND_ASSIGN(
      std::string response,
      testing::HealthCheck(grpc::CreateChannel(server_->address(), grpc::SslCredentials(ssl))));
  EXPECT_EQ(response, std::string("\x08\x01", 2));  // status: SERVING
}

// The certificate names 127.0.0.1 and localhost; an override replaces the
// address's host in the check.
TEST_F(TlsE2eTest, TheServerNameOverrideIsWhatTheCertificateMustName) {
  StartServer(/*tls=*/true);
  GrpcTransportOptions options;
  options.deadline = absl::Seconds(10);
  options.tls_ca_file = pki_->ca();
  options.tls_server_name = "localhost";
  std::string team;
  ASSERT_OK(ApplyTeam(GrpcTransport::Create(server_->address(), options).get(), &team));
  options.tls_server_name = "sync.example.com";
  absl::Status s = ApplyTeam(GrpcTransport::Create(server_->address(), options).get(), &team);
  EXPECT_EQ(s.code(), absl::StatusCode::kUnavailable) << s;
}

TEST_F(TlsE2eTest, APlaintextClientIsRefused) {
  StartServer(/*tls=*/true);
  std::unique_ptr<GrpcTransport> client = Client(/*ca=*/"");
  std::string team;
  absl::Status s = ApplyTeam(client.get(), &team);
  EXPECT_EQ(s.code(), absl::StatusCode::kUnavailable) << s;
  EXPECT_EQ(*db_->QueryValue("SELECT count(*) FROM teams"), "0");
}

TEST_F(TlsE2eTest, AClientTrustingAnotherCaIsRefused) {
  StartServer(/*tls=*/true);
  std::unique_ptr<GrpcTransport> client = Client(pki_->other_ca());
  std::string team;
  absl::Status s = ApplyTeam(client.get(), &team);
  EXPECT_EQ(s.code(), absl::StatusCode::kUnavailable) << s;
  EXPECT_EQ(*db_->QueryValue("SELECT count(*) FROM teams"), "0");
}

TEST_F(TlsE2eTest, WithAClientCaOnlyClientsWithACertificateItSignedGetIn) {
  StartServer(/*tls=*/true, /*mtls=*/true);
  std::string team;
  absl::Status without = ApplyTeam(Client(pki_->ca()).get(), &team);
  EXPECT_EQ(without.code(), absl::StatusCode::kUnavailable) << without;
  EXPECT_EQ(*db_->QueryValue("SELECT count(*) FROM teams"), "0");

  std::unique_ptr<GrpcTransport> with =
      Client(pki_->ca(), pki_->client_cert(), pki_->client_key());
  ASSERT_OK(ApplyTeam(with.get(), &team));
  EXPECT_EQ(*db_->QueryValue("SELECT count(*) FROM teams"), "1");
}

TEST_F(TlsE2eTest, AClientWithAnUnreadableCaFileGetsAnErrorNamingIt) {
  StartServer(/*tls=*/true);
  std::string team;
  absl::Status s = ApplyTeam(Client(dir_ + "/missing-ca.pem").get(), &team);
  EXPECT_EQ(s.code(), absl::StatusCode::kNotFound) << s;
  EXPECT_THAT(std::string(s.message()), HasSubstr("missing-ca.pem"));
}

TEST_F(TlsE2eTest, TheCliSyncsWithTlsCa) {
  StartServer(/*tls=*/true, /*mtls=*/true);
  auto cli = [&](std::vector<std::string> args) {
    std::vector<std::string> argv = {testing::PulsesyncCliPath(), "--db=" + dir_ + "/cli.db",
                                     "--server=" + server_->address()};
    argv.insert(argv.end(), args.begin(), args.end());
    absl::StatusOr<CommandResult> r = testing::RunCommand(argv);
    EXPECT_OK(r);
    if (!r.ok()) return CommandResult();
    r->output = std::string(absl::StripAsciiWhitespace(r->output));
    return *r;
  };
  ASSERT_EQ(cli({"init"}).exit_code, 0);
  const std::string team = cli({"create", "team", "name=Core"}).output;
  ASSERT_FALSE(team.empty());

  // The server requires TLS and a client certificate.
  CommandResult plaintext = cli({"sync"});
  EXPECT_EQ(plaintext.exit_code, 1);
  EXPECT_THAT(plaintext.errors, HasSubstr("cannot reach server"));
  CommandResult no_cert = cli({"--tls-ca=" + pki_->ca(), "sync"});
  EXPECT_EQ(no_cert.exit_code, 1);
  EXPECT_EQ(*db_->QueryValue("SELECT count(*) FROM teams"), "0");

  CommandResult synced = cli({"--tls-ca=" + pki_->ca(), "--tls-cert=" + pki_->client_cert(),
                              "--tls-key=" + pki_->client_key(), "sync"});
  EXPECT_EQ(synced.exit_code, 0) << synced.errors;
  EXPECT_THAT(synced.output, HasSubstr("applied 1"));
  EXPECT_EQ(*db_->QueryValue("SELECT name FROM teams WHERE id = '" + team + "'"), "Core");

  // The same files from the environment.
  ASSERT_OK_AND_ASSIGN(
      CommandResult from_env,
      testing::RunCommand({testing::PulsesyncCliPath(), "--db=" + dir_ + "/cli.db",
                           "--server=" + server_->address(), "sync"},
                          {"PULSESYNC_TLS_CA=" + pki_->ca(),
                           "PULSESYNC_TLS_CERT=" + pki_->client_cert(),
                           "PULSESYNC_TLS_KEY=" + pki_->client_key()}));
  EXPECT_EQ(from_env.exit_code, 0) << from_env.errors;

  CommandResult half = cli({"--tls-ca=" + pki_->ca(), "--tls-cert=" + pki_->client_cert(), "sync"});
  EXPECT_EQ(half.exit_code, 2);
  EXPECT_THAT(half.errors, HasSubstr("--tls-cert and --tls-key go together"));
}

// pulsesyncd refuses to start, naming the file, when a TLS file is missing
// or the key is not the certificate's.
TEST_F(TlsE2eTest, BadTlsFilesStopStartUpWithAClearError) {
  auto serve = [&](std::vector<std::string> flags) {
    std::vector<std::string> argv = {testing::PulsesyncdPath(), "serve",
                                     "--database_url=" + db_->url(), "--listen=127.0.0.1:0"};
    argv.insert(argv.end(), flags.begin(), flags.end());
    absl::StatusOr<CommandResult> r = testing::RunCommand(argv, {}, absl::Seconds(30));
    EXPECT_OK(r);
    return r.ok() ? *r : CommandResult();
  };
  CommandResult missing = serve({"--tls_cert_file=" + pki_->server_cert(),
                                 "--tls_key_file=" + dir_ + "/no-such.key"});
  EXPECT_EQ(missing.exit_code, 1);
  EXPECT_THAT(missing.errors, HasSubstr("no-such.key"));

  CommandResult mismatched = serve({"--tls_cert_file=" + pki_->server_cert(),
                                    "--tls_key_file=" + pki_->client_key()});
  EXPECT_EQ(mismatched.exit_code, 1);
  EXPECT_THAT(mismatched.errors, HasSubstr("does not match"));

  CommandResult half = serve({"--tls_cert_file=" + pki_->server_cert()});
  EXPECT_EQ(half.exit_code, 1);
  EXPECT_THAT(half.errors, HasSubstr("--tls_key_file"));

  CommandResult bad_client_ca =
      serve({"--tls_cert_file=" + pki_->server_cert(), "--tls_key_file=" + pki_->server_key(),
             "--tls_client_ca_file=" + pki_->server_key()});
  EXPECT_EQ(bad_client_ca.exit_code, 1);
  EXPECT_THAT(bad_client_ca.errors, HasSubstr("no PEM certificate"));
}

// The warning is one structured (JSON) log line at level "warning" naming
// the address.
bool HasPlaintextWarning(const std::string& log) {
  for (absl::string_view line : absl::StrSplit(log, '\n')) {
    absl::StatusOr<JsonValue> json = ParseJson(line);
    if (!json.ok() || !json->is_object()) continue;
    const JsonValue* level = json->Find("level");
    const JsonValue* msg = json->Find("msg");
    if (level != nullptr && level->text() == "warning" && msg != nullptr &&
        absl::StrContains(msg->text(), "plaintext on a non-loopback address") &&
        json->Find("address") != nullptr) {
      return true;
    }
  }
  return false;
}

TEST_F(TlsE2eTest, PlaintextOnANonLoopbackAddressLogsAWarning) {
  // The later --listen wins: all interfaces, so 127.0.0.1 still reaches it.
  StartServer(/*tls=*/false, /*mtls=*/false, {"--plaintext", "--listen=0.0.0.0:0"});
  EXPECT_TRUE(HasPlaintextWarning(server_->ReadLog())) << server_->ReadLog();
  // And it serves.
  std::string team;
  ASSERT_OK(ApplyTeam(Client(/*ca=*/"").get(), &team));
  ASSERT_OK(server_->Stop().status());

  ServerProcess loopback(db_->url(), dir_ + "/loopback.log", {"--plaintext"});
  ASSERT_OK(loopback.Start());
  EXPECT_FALSE(HasPlaintextWarning(loopback.ReadLog())) << loopback.ReadLog();
}

// Plaintext only when asked for: without TLS files and without --plaintext
// (or PULSESYNC_PLAINTEXT) pulsesyncd does not start, and says what to pass.
TEST_F(TlsE2eTest, WithoutTlsOrPlaintextTheServerRefusesToStart) {
  auto serve = [&](std::vector<std::string> flags, std::vector<std::string> env = {}) {
    std::vector<std::string> argv = {testing::PulsesyncdPath(), "serve",
                                     "--database_url=" + db_->url(), "--listen=127.0.0.1:0"};
    argv.insert(argv.end(), flags.begin(), flags.end());
    absl::StatusOr<CommandResult> r = testing::RunCommand(argv, env, absl::Seconds(30));
    EXPECT_OK(r);
    return r.ok() ? *r : CommandResult();
  };
  CommandResult neither = serve({});
  EXPECT_EQ(neither.exit_code, 1);
  EXPECT_THAT(neither.errors, HasSubstr("no TLS configured"));
  EXPECT_THAT(neither.errors, HasSubstr("--tls_cert_file"));
  EXPECT_THAT(neither.errors, HasSubstr("--plaintext"));
  // An environment value that is not a boolean turns nothing on.
  EXPECT_EQ(serve({}, {"PULSESYNC_PLAINTEXT=maybe"}).exit_code, 1);
  EXPECT_EQ(serve({"--plaintext=false"}, {"PULSESYNC_PLAINTEXT=1"}).exit_code, 1);

  CommandResult both = serve({"--plaintext", "--tls_cert_file=" + pki_->server_cert(),
                              "--tls_key_file=" + pki_->server_key()});
  EXPECT_EQ(both.exit_code, 1);
  EXPECT_THAT(both.errors, HasSubstr("contradicts"));

  // PULSESYNC_PLAINTEXT=1 is --plaintext.
  const std::string port_file = dir_ + "/env.port";
  testing::Subprocess::Options o;
  o.argv = {testing::PulsesyncdPath(), "serve", "--database_url=" + db_->url(),
            "--listen=127.0.0.1:0", "--port_file=" + port_file};
  o.extra_env = {"PULSESYNC_PLAINTEXT=true"};
  o.output_path = dir_ + "/env.log";
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<testing::Subprocess> server, testing::Subprocess::Start(o));
  int port = 0;
  ASSERT_TRUE(testing::WaitFor(
      [&] {
        std::ifstream in(port_file);
        return static_cast<bool>(in >> port) && port > 0;
      },
      absl::Seconds(30)));
  GrpcTransportOptions options;
  options.deadline = absl::Seconds(10);
  std::string team;
  ASSERT_OK(ApplyTeam(GrpcTransport::Create(absl::StrCat("127.0.0.1:", port), options).get(),
                      &team));
  ASSERT_OK(server->Signal(SIGTERM));
  ASSERT_OK_AND_ASSIGN(int code, server->Wait(absl::Seconds(30)));
  EXPECT_EQ(code, 0);
}

// A client without a TLS CA refuses to send anything to a server that is
// not on loopback unless plaintext was asked for; the CLI says what to pass.
TEST_F(TlsE2eTest, AClientRefusesPlaintextToANonLoopbackServerUnlessAsked) {
  // 192.0.2.1 (TEST-NET-1) is never routed: any attempt would time out.
  GrpcTransportOptions options;
  options.deadline = absl::Seconds(10);
  std::string team;
  absl::Status refused = ApplyTeam(GrpcTransport::Create("192.0.2.1:50051", options).get(), &team);
  EXPECT_EQ(refused.code(), absl::StatusCode::kFailedPrecondition) << refused;
  EXPECT_THAT(std::string(refused.message()), HasSubstr("plaintext"));

  ASSERT_OK_AND_ASSIGN(
      CommandResult cli,
      testing::RunCommand({testing::PulsesyncCliPath(), "--server=sync.example.com:443",
                           "watch"}));
  EXPECT_EQ(cli.exit_code, 1);
  EXPECT_THAT(cli.errors, HasSubstr("--plaintext"));
  EXPECT_THAT(cli.errors, HasSubstr("--tls-ca"));

  // A gRPC target listing a loopback and a non-loopback address is not
  // loopback; asked for, plaintext to it is allowed (and reaches the server
  // through the first address).
  StartServer(/*tls=*/false);
  const std::string mixed_target = absl::StrCat("ipv4:127.0.0.1:", server_->port(),
                                                ",192.0.2.1:", server_->port());
  absl::Status mixed = ApplyTeam(GrpcTransport::Create(mixed_target, options).get(), &team);
  EXPECT_EQ(mixed.code(), absl::StatusCode::kFailedPrecondition) << mixed;
  EXPECT_EQ(*db_->QueryValue("SELECT count(*) FROM teams"), "0");
  options.plaintext = true;
  ASSERT_OK(ApplyTeam(GrpcTransport::Create(mixed_target, options).get(), &team));
  EXPECT_EQ(*db_->QueryValue("SELECT count(*) FROM teams"), "1");

  // Plaintext and TLS at once is a contradiction.
  options.tls_ca_file = pki_->ca();
  absl::Status both = ApplyTeam(GrpcTransport::Create(server_->address(), options).get(), &team);
  EXPECT_EQ(both.code(), absl::StatusCode::kInvalidArgument) << both;
}

// --jwks_url over https: the key set is taken only from a server whose
// certificate chains to --jwks_ca_file (here `openssl s_server -WWW` with
// the test PKI's server certificate).
TEST_F(TlsE2eTest, AnHttpsJwksUrlIsTrustedOnlyThroughItsCa) {
  ASSERT_OK_AND_ASSIGN(testing::OpensslJwtKeys keys, testing::OpensslJwtKeys::Generate());
  const std::string www = dir_ + "/www";
  ASSERT_OK(Openssl({"version"}));  // the command exists
  {
    ASSERT_OK_AND_ASSIGN(CommandResult mk, testing::RunCommand({"mkdir", "-p", www}));
    ASSERT_EQ(mk.exit_code, 0);
    std::ofstream out(www + "/jwks.json");
    out << R"({"keys":[)" << keys.EcJwk("k1") << "]}";
  }
  testing::Subprocess::Options o;
  o.argv = {"/bin/sh", "-c",
            "cd \"$0\" && exec openssl s_server -accept 127.0.0.1:0 -cert \"$1\" -key \"$2\" -WWW",
            www, pki_->server_cert(), pki_->server_key()};
  o.output_path = dir_ + "/s_server.log";
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<testing::Subprocess> https, testing::Subprocess::Start(o));
  std::string port;
  ASSERT_TRUE(testing::WaitFor(
      [&] {
        std::ifstream in(o.output_path);
        std::string line;
        while (std::getline(in, line)) {
          if (absl::StartsWith(line, "ACCEPT ")) port = line.substr(line.rfind(':') + 1);
        }
        return !port.empty();
      },
      absl::Seconds(10)));
  const std::string url = absl::StrCat("https://127.0.0.1:", port, "/jwks.json");

  const int64_t now = absl::ToUnixSeconds(absl::Now());
  ASSERT_OK_AND_ASSIGN(
      std::string token,
      keys.Mint("ES256",
                absl::StrCat(R"({"aud":"authenticated","role":"service_role","exp":)", now + 600,
                             "}"),
                "k1"));
  auto pull = [&]() {
    GrpcTransportOptions options;
    options.deadline = absl::Seconds(10);
    options.bearer_token = token;
    v1::PullChangesRequest req;
    return GrpcTransport::Create(server_->address(), options)->PullChanges(req).status();
  };

  StartServer(/*tls=*/false, /*mtls=*/false,
              {"--jwks_url=" + url, "--jwks_ca_file=" + pki_->other_ca()});
  absl::Status untrusted = pull();
  EXPECT_EQ(untrusted.code(), absl::StatusCode::kUnauthenticated) << untrusted;
  EXPECT_THAT(server_->ReadLog(), HasSubstr("JWKS fetch failed"));
  EXPECT_THAT(server_->ReadLog(), HasSubstr("SSL certificate problem"));
  ASSERT_OK(server_->Stop().status());

  StartServer(/*tls=*/false, /*mtls=*/false, {"--jwks_url=" + url, "--jwks_ca_file=" + pki_->ca()});
  EXPECT_OK(pull());
}

}  // namespace
}  // namespace pulsesync

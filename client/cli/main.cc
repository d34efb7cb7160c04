// pulsesync: the command-line client. Everything but the environment lives in
// cli.cc.
#include <pthread.h>
#include <signal.h>

#include <cstdlib>
#include <iostream>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "client/cli/cli.h"
#include "client/cli/token_command.h"
#include "client/transport/grpc_transport.h"
#include "common/log.h"

namespace {

std::string Env(const char* name) {
  const char* v = std::getenv(name);
  return v != nullptr ? v : "";
}

// SIGINT and SIGTERM are blocked in every thread (before gRPC starts any)
// and taken by one thread with sigwait, which hands them to the command
// that is running (watch and sync --follow stop cleanly and exit 0). When
// no command listens, the signal gets its default action: the process ends
// as if it had not been blocked.
void StartSignalThread(pulsesync::InterruptSignal* interrupt) {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
  std::thread([set, interrupt] {
    while (true) {
      int sig = 0;
      if (sigwait(&set, &sig) != 0) continue;
      if (interrupt->Trigger()) continue;
      signal(sig, SIG_DFL);
      sigset_t one;
      sigemptyset(&one);
      sigaddset(&one, sig);
      pthread_sigmask(SIG_UNBLOCK, &one, nullptr);
      raise(sig);
    }
  }).detach();
}

}  // namespace

int main(int argc, char** argv) {
  static pulsesync::InterruptSignal interrupt;
  StartSignalThread(&interrupt);
  // A command reports its own errors in one line; library warnings (e.g. a
  // failed push) would only repeat them. PULSESYNC_LOG_LEVEL brings them back.
  if (Env("PULSESYNC_LOG_LEVEL").empty()) pulsesync::SetMinLogLevel(pulsesync::LogLevel::kError);
  pulsesync::CliEnvironment env;
  env.db_env = Env("PULSESYNC_DB");
  env.server_env = Env("PULSESYNC_SERVER");
  env.token_env = Env("PULSESYNC_TOKEN");
  env.token_command_env = Env("PULSESYNC_TOKEN_COMMAND");
  env.user_env = Env("PULSESYNC_USER_ID");
  env.db_key_env = Env("PULSESYNC_DB_KEY");
  env.tls_ca_env = Env("PULSESYNC_TLS_CA");
  env.tls_cert_env = Env("PULSESYNC_TLS_CERT");
  env.tls_key_env = Env("PULSESYNC_TLS_KEY");
  env.tls_server_name_env = Env("PULSESYNC_TLS_SERVER_NAME");
  env.plaintext_env = Env("PULSESYNC_PLAINTEXT");
  env.interrupt = &interrupt;
  env.make_transport = [](const pulsesync::TransportConfig& config) {
    pulsesync::GrpcTransportOptions options;
    options.bearer_token = config.token;
    if (!config.token_command.empty()) {
      auto command = std::make_shared<pulsesync::TokenCommand>(config.token_command);
      options.token_provider = [command] { return command->Get(); };
    }
    options.user_id = config.user_id;
    options.tls_ca_file = config.tls_ca_file;
    options.tls_cert_file = config.tls_cert_file;
    options.tls_key_file = config.tls_key_file;
    options.tls_server_name = config.tls_server_name;
    options.plaintext = config.plaintext;
    return std::unique_ptr<pulsesync::Transport>(
        pulsesync::GrpcTransport::Create(config.address, options));
  };
  std::vector<std::string> args(argv + 1, argv + argc);
  return pulsesync::RunCli(args, env, std::cout, std::cerr);
}

// pulsesync: the command-line client. Everything but the environment lives in
// cli.cc.
#include <cstdlib>
#include <iostream>
#include <string>
#include <vector>

#include "client/cli/cli.h"
#include "client/transport/grpc_transport.h"
#include "common/log.h"

namespace {

std::string Env(const char* name) {
  const char* v = std::getenv(name);
  return v != nullptr ? v : "";
}

}  // namespace

int main(int argc, char** argv) {
  // A command reports its own errors in one line; library warnings (e.g. a
  // failed push) would only repeat them. PULSESYNC_LOG_LEVEL brings them back.
  if (Env("PULSESYNC_LOG_LEVEL").empty()) pulsesync::SetMinLogLevel(pulsesync::LogLevel::kError);
  pulsesync::CliEnvironment env;
  env.db_env = Env("PULSESYNC_DB");
  env.server_env = Env("PULSESYNC_SERVER");
  env.token_env = Env("PULSESYNC_TOKEN");
  env.make_transport = [](const std::string& address, const std::string& token) {
    pulsesync::GrpcTransportOptions options;
    options.bearer_token = token;
    return std::unique_ptr<pulsesync::Transport>(
        pulsesync::GrpcTransport::Create(address, options));
  };
  std::vector<std::string> args(argv + 1, argv + argc);
  return pulsesync::RunCli(args, env, std::cout, std::cerr);
}

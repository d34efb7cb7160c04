// Real processes for end-to-end tests: pulsesyncd and the pulsesync CLI.
#ifndef PULSESYNC_TESTS_TESTING_SUBPROCESS_H_
#define PULSESYNC_TESTS_TESTING_SUBPROCESS_H_

#include <sys/types.h>

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace pulsesync::testing {

// Polls `condition` until it is true or `timeout` passes. Never a fixed sleep.
bool WaitFor(const std::function<bool()>& condition, absl::Duration timeout,
             absl::Duration poll = absl::Milliseconds(20));

// A child process. The destructor kills (SIGKILL) and reaps it if running.
class Subprocess {
 public:
  struct Options {
    std::vector<std::string> argv;
    std::vector<std::string> extra_env;  // "KEY=VALUE"
    std::string output_path;             // stdout and stderr; "" = inherit
  };
  static absl::StatusOr<std::unique_ptr<Subprocess>> Start(const Options& options);
  ~Subprocess();

  pid_t pid() const { return pid_; }
  bool running();
  absl::Status Signal(int sig);
  // The exit code, or 128 + signal number; kDeadlineExceeded if still running.
  absl::StatusOr<int> Wait(absl::Duration timeout);

 private:
  explicit Subprocess(pid_t pid) : pid_(pid) {}
  pid_t pid_;
  bool reaped_ = false;
  int exit_code_ = -1;
};

struct CommandResult {
  int exit_code = -1;
  std::string output;  // stdout
  std::string errors;  // stderr
};

// Runs a command to completion (killed after `timeout`).
absl::StatusOr<CommandResult> RunCommand(const std::vector<std::string>& argv,
                                         const std::vector<std::string>& extra_env = {},
                                         absl::Duration timeout = absl::Seconds(60));

// A pulsesyncd process on 127.0.0.1. Start() binds a free port; Restart()
// binds the same port again, so clients keep their address. It serves
// plaintext (--plaintext) unless `extra_flags` has --tls_cert_file or a
// --plaintext flag of its own.
class ServerProcess {
 public:
  ServerProcess(std::string database_url, std::string log_path,
                std::vector<std::string> extra_flags = {});
  ~ServerProcess();

  // Starts the server and waits (with a deadline) until it serves.
  absl::Status Start();
  // SIGTERM and wait for a clean exit; returns its exit code.
  absl::StatusOr<int> Stop();
  // SIGKILL: a crash.
  void Kill();
  absl::Status Restart() { return Start(); }
  // Sends `sig` and returns at once (e.g. SIGTERM, to watch a shutdown).
  absl::Status Signal(int sig);
  // Waits until the process exits; its exit code (as Subprocess::Wait),
  // kDeadlineExceeded if it is still running after `timeout`.
  absl::StatusOr<int> WaitForExit(absl::Duration timeout);

  int port() const { return port_; }
  std::string address() const;
  bool running() const { return process_ != nullptr; }
  // The server's process id; -1 when not running.
  pid_t pid() const { return process_ != nullptr ? process_->pid() : -1; }
  std::string ReadLog() const;

 private:
  std::string database_url_;
  std::string log_path_;
  std::vector<std::string> extra_flags_;
  int port_ = 0;
  std::unique_ptr<Subprocess> process_;
};

// Paths of the built binaries (set by CMake).
std::string PulsesyncdPath();
std::string PulsesyncCliPath();
// tests/testing/fault_client_main.cc: a client process for fault tests.
std::string FaultClientPath();
// The repository's root (for scripts such as deploy/local/stack.sh).
std::string SourceDir();

// A fresh directory under the test's temporary directory.
std::string MakeTempDir(const std::string& prefix);

}  // namespace pulsesync::testing

#endif  // PULSESYNC_TESTS_TESTING_SUBPROCESS_H_

#include "tests/testing/subprocess.h"

#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "absl/time/clock.h"
#include "common/uuid.h"

extern char** environ;

namespace pulsesync::testing {
namespace {

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream buf;
  buf << in.rdbuf();
  return buf.str();
}

}  // namespace

bool WaitFor(const std::function<bool()>& condition, absl::Duration timeout,
             absl::Duration poll) {
  const absl::Time deadline = absl::Now() + timeout;
  while (true) {
    if (condition()) return true;
    if (absl::Now() >= deadline) return false;
    absl::SleepFor(poll);
  }
}

absl::StatusOr<std::unique_ptr<Subprocess>> Subprocess::Start(const Options& options) {
  if (options.argv.empty()) return absl::InvalidArgumentError("no argv");
  std::vector<std::string> env_strings;
  for (char** e = environ; *e != nullptr; ++e) env_strings.emplace_back(*e);
  for (const std::string& e : options.extra_env) env_strings.push_back(e);
  std::vector<char*> envp;
  for (std::string& e : env_strings) envp.push_back(e.data());
  envp.push_back(nullptr);
  std::vector<std::string> argv_copy = options.argv;
  std::vector<char*> argv;
  for (std::string& a : argv_copy) argv.push_back(a.data());
  argv.push_back(nullptr);

  int out_fd = -1;
  if (!options.output_path.empty()) {
    out_fd = ::open(options.output_path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (out_fd < 0) {
      return absl::InternalError(absl::StrCat("open ", options.output_path, ": ", strerror(errno)));
    }
  }
  const pid_t pid = fork();
  if (pid < 0) return absl::InternalError(absl::StrCat("fork: ", strerror(errno)));
  if (pid == 0) {
    if (out_fd >= 0) {
      dup2(out_fd, STDOUT_FILENO);
      dup2(out_fd, STDERR_FILENO);
    }
    int devnull = ::open("/dev/null", O_RDONLY);
    if (devnull >= 0) dup2(devnull, STDIN_FILENO);
    // Unblock signals a test runner may have blocked.
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, nullptr);
    execve(argv[0], argv.data(), envp.data());
    _exit(127);
  }
  if (out_fd >= 0) ::close(out_fd);
  return std::unique_ptr<Subprocess>(new Subprocess(pid));
}

Subprocess::~Subprocess() {
  if (!reaped_) {
    ::kill(pid_, SIGKILL);
    (void)Wait(absl::Seconds(10));
  }
}

bool Subprocess::running() {
  if (reaped_) return false;
  int status;
  const pid_t r = waitpid(pid_, &status, WNOHANG);
  if (r == pid_) {
    reaped_ = true;
    exit_code_ = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    return false;
  }
  return true;
}

absl::Status Subprocess::Signal(int sig) {
  if (reaped_) return absl::FailedPreconditionError("process already exited");
  if (::kill(pid_, sig) != 0) return absl::InternalError(strerror(errno));
  return absl::OkStatus();
}

absl::StatusOr<int> Subprocess::Wait(absl::Duration timeout) {
  if (!WaitFor([this] { return !running(); }, timeout, absl::Milliseconds(5))) {
    return absl::DeadlineExceededError(absl::StrCat("pid ", pid_, " still running"));
  }
  return exit_code_;
}

absl::StatusOr<CommandResult> RunCommand(const std::vector<std::string>& argv,
                                         const std::vector<std::string>& extra_env,
                                         absl::Duration timeout) {
  const std::string dir = MakeTempDir("cmd");
  // stdout and stderr go to separate files so callers can parse stdout.
  std::vector<std::string> wrapped = {"/bin/sh", "-c", "exec \"$0\" \"$@\" 2>\"$PS_ERR_FILE\""};
  wrapped.insert(wrapped.end(), argv.begin(), argv.end());
  std::vector<std::string> env = extra_env;
  env.push_back("PS_ERR_FILE=" + dir + "/err");
  Subprocess::Options o;
  o.argv = wrapped;
  o.extra_env = env;
  o.output_path = dir + "/out";
  auto p = Subprocess::Start(o);
  if (!p.ok()) return p.status();
  absl::StatusOr<int> code = (*p)->Wait(timeout);
  if (!code.ok()) return code.status();
  CommandResult r;
  r.exit_code = *code;
  r.output = ReadFile(dir + "/out");
  r.errors = ReadFile(dir + "/err");
  return r;
}

std::string MakeTempDir(const std::string& prefix) {
  const char* base = std::getenv("TEST_TMPDIR");
  std::string dir = absl::StrCat(base != nullptr ? base : "/tmp", "/pulsesync-", prefix, "-",
                                 NewUuid().substr(0, 8));
  ::mkdir(dir.c_str(), 0755);
  return dir;
}

std::string PulsesyncdPath() { return PULSESYNCD_PATH; }
std::string PulsesyncCliPath() { return PULSESYNC_CLI_PATH; }
std::string FaultClientPath() { return PULSESYNC_FAULT_CLIENT_PATH; }
std::string SourceDir() { return PULSESYNC_SOURCE_DIR; }

ServerProcess::ServerProcess(std::string database_url, std::string log_path,
                             std::vector<std::string> extra_flags)
    : database_url_(std::move(database_url)),
      log_path_(std::move(log_path)),
      extra_flags_(std::move(extra_flags)) {}

ServerProcess::~ServerProcess() {
  if (process_ != nullptr) (void)Stop();
}

std::string ServerProcess::address() const { return absl::StrCat("127.0.0.1:", port_); }

std::string ServerProcess::ReadLog() const { return ReadFile(log_path_); }

absl::Status ServerProcess::Start() {
  if (process_ != nullptr) return absl::FailedPreconditionError("already running");
  const std::string port_file = log_path_ + ".port";
  ::unlink(port_file.c_str());
  Subprocess::Options o;
  o.argv = {PulsesyncdPath(), "serve", "--database_url=" + database_url_,
            absl::StrCat("--listen=127.0.0.1:", port_), "--port_file=" + port_file};
  bool transport_chosen = false;
  for (const std::string& f : extra_flags_) {
    if (absl::StartsWith(f, "--tls_cert_file") || absl::StartsWith(f, "--plaintext")) {
      transport_chosen = true;
    }
  }
  if (!transport_chosen) o.argv.push_back("--plaintext");
  o.argv.insert(o.argv.end(), extra_flags_.begin(), extra_flags_.end());
  o.output_path = log_path_;
  auto p = Subprocess::Start(o);
  if (!p.ok()) return p.status();
  process_ = std::move(*p);
  int port = 0;
  const bool up = WaitFor(
      [&] {
        std::string text(absl::StripAsciiWhitespace(ReadFile(port_file)));
        return absl::SimpleAtoi(text, &port) && port > 0;
      },
      absl::Seconds(30));
  if (!up) {
    const bool alive = process_->running();
    process_.reset();
    return absl::DeadlineExceededError(
        absl::StrCat("pulsesyncd did not start (", alive ? "still running" : "exited",
                     "); log:\n", ReadLog()));
  }
  port_ = port;
  return absl::OkStatus();
}

absl::StatusOr<int> ServerProcess::Stop() {
  if (process_ == nullptr) return absl::FailedPreconditionError("not running");
  (void)process_->Signal(SIGTERM);
  absl::StatusOr<int> code = process_->Wait(absl::Seconds(30));
  process_.reset();
  return code;
}

absl::Status ServerProcess::Signal(int sig) {
  if (process_ == nullptr) return absl::FailedPreconditionError("not running");
  return process_->Signal(sig);
}

absl::StatusOr<int> ServerProcess::WaitForExit(absl::Duration timeout) {
  if (process_ == nullptr) return absl::FailedPreconditionError("not running");
  absl::StatusOr<int> code = process_->Wait(timeout);
  if (code.ok()) process_.reset();
  return code;
}

void ServerProcess::Kill() {
  if (process_ == nullptr) return;
  (void)process_->Signal(SIGKILL);
  (void)process_->Wait(absl::Seconds(30));
  process_.reset();
}

}  // namespace pulsesync::testing

// A TCP proxy on 127.0.0.1 for fault tests: put it between pulsesyncd and
// PostgreSQL and "take the database down" (drop every connection and refuse
// new ones) and "bring it back", with the real PostgreSQL behind it.
//
// Thread-safe. Owns its threads; the destructor stops them.
#ifndef PULSESYNC_TESTS_TESTING_TCP_PROXY_H_
#define PULSESYNC_TESTS_TESTING_TCP_PROXY_H_

#include <atomic>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"

namespace pulsesync::testing {

class TcpProxy {
 public:
  static absl::StatusOr<std::unique_ptr<TcpProxy>> Start(const std::string& target_host,
                                                         int target_port);
  ~TcpProxy();

  int port() const { return port_; }

  // false: close every open connection and refuse new ones; true: accept.
  void SetUp(bool up);

 private:
  TcpProxy(int listen_fd, int port, std::string host, int target_port);
  void AcceptLoop();
  void Pump(int client_fd, int server_fd);

  const int listen_fd_;
  const int port_;
  const std::string host_;
  const int target_port_;
  std::atomic<bool> stopping_{false};
  std::atomic<bool> up_{true};
  std::atomic<int> generation_{0};  // bumped by SetUp(false): pumps of older generations end
  std::thread acceptor_;
  absl::Mutex mu_;
  std::vector<std::thread> pumps_ ABSL_GUARDED_BY(mu_);
};

}  // namespace pulsesync::testing

#endif  // PULSESYNC_TESTS_TESTING_TCP_PROXY_H_

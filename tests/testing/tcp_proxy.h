// A TCP proxy on 127.0.0.1 for fault tests. Put it between pulsesyncd and
// PostgreSQL, or between a client and pulsesyncd, and inject the faults a
// network has, with the real peers behind it:
//   SetUp(false)      a cut: every open connection is closed and new ones
//                     are refused (accepted and closed at once) until
//                     SetUp(true);
//   ResetConnections  every open connection is reset (RST, as a crashed
//                     middlebox or peer does); new ones are accepted;
//   SetDelay          each chunk is held this long before it is passed on
//                     (latency, per direction);
//   SetStallReplies   bytes from the target are held back (not read) while
//                     the client's still pass: a request reaches the
//                     server but its answer does not come back (a lost
//                     answer, once the connection is then reset or cut).
//
// Thread-safe. Owns its threads; the destructor stops them.
#ifndef PULSESYNC_TESTS_TESTING_TCP_PROXY_H_
#define PULSESYNC_TESTS_TESTING_TCP_PROXY_H_

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"

namespace pulsesync::testing {

class TcpProxy {
 public:
  static absl::StatusOr<std::unique_ptr<TcpProxy>> Start(const std::string& target_host,
                                                         int target_port);
  ~TcpProxy();

  int port() const { return port_; }
  std::string address() const;

  // false: close every open connection and refuse new ones; true: accept.
  void SetUp(bool up);
  // Resets (RST) every open connection; new connections are accepted.
  void ResetConnections();
  // Latency added to every chunk in each direction; zero (the default) for none.
  void SetDelay(absl::Duration delay);
  // true: stop passing bytes from the target to the client (see above).
  void SetStallReplies(bool stall);

  // Connections accepted and passed on to the target so far.
  int64_t connections() const { return connections_.load(); }
  // Connections open now.
  int64_t open_connections() const { return open_.load(); }

 private:
  TcpProxy(int listen_fd, int port, std::string host, int target_port);
  void AcceptLoop();
  void Pump(int client_fd, int server_fd);
  // Joins the pumps whose connection ended (so that a long run with many
  // reconnections does not pile up finished threads).
  void ReapPumps();

  struct PumpThread {
    std::thread thread;
    std::shared_ptr<std::atomic<bool>> done;
  };

  const int listen_fd_;
  const int port_;
  const std::string host_;
  const int target_port_;
  std::atomic<bool> stopping_{false};
  std::atomic<bool> up_{true};
  std::atomic<bool> stall_replies_{false};
  std::atomic<int64_t> delay_us_{0};
  // Bumped by SetUp(false) and ResetConnections: pumps of older generations
  // end; reset_generation_ says which of them end with a reset.
  std::atomic<int> generation_{0};
  std::atomic<int> reset_generation_{-1};
  std::atomic<int64_t> connections_{0};
  std::atomic<int64_t> open_{0};
  std::thread acceptor_;
  absl::Mutex mu_;
  std::vector<PumpThread> pumps_ ABSL_GUARDED_BY(mu_);
};

}  // namespace pulsesync::testing

#endif  // PULSESYNC_TESTS_TESTING_TCP_PROXY_H_

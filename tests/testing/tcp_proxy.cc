#include "tests/testing/tcp_proxy.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"

namespace pulsesync::testing {

absl::StatusOr<std::unique_ptr<TcpProxy>> TcpProxy::Start(const std::string& target_host,
                                                          int target_port) {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return absl::InternalError(strerror(errno));
  int one = 1;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  if (::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0 || ::listen(fd, 64) != 0) {
    ::close(fd);
    return absl::InternalError(absl::StrCat("proxy bind/listen: ", strerror(errno)));
  }
  socklen_t len = sizeof(addr);
  getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  return std::unique_ptr<TcpProxy>(
      new TcpProxy(fd, ntohs(addr.sin_port), target_host, target_port));
}

TcpProxy::TcpProxy(int listen_fd, int port, std::string host, int target_port)
    : listen_fd_(listen_fd), port_(port), host_(std::move(host)), target_port_(target_port) {
  acceptor_ = std::thread([this] { AcceptLoop(); });
}

TcpProxy::~TcpProxy() {
  stopping_ = true;
  generation_++;
  acceptor_.join();
  ::close(listen_fd_);
  std::vector<PumpThread> pumps;
  {
    absl::MutexLock lock(&mu_);
    pumps.swap(pumps_);
  }
  for (PumpThread& p : pumps) p.thread.join();
}

void TcpProxy::ReapPumps() {
  std::vector<PumpThread> finished;
  {
    absl::MutexLock lock(&mu_);
    for (auto it = pumps_.begin(); it != pumps_.end();) {
      if (it->done->load()) {
        finished.push_back(std::move(*it));
        it = pumps_.erase(it);
      } else {
        ++it;
      }
    }
  }
  for (PumpThread& p : finished) p.thread.join();
}

std::string TcpProxy::address() const { return absl::StrCat("127.0.0.1:", port_); }

void TcpProxy::SetUp(bool up) {
  up_ = up;
  if (!up) generation_++;
}

void TcpProxy::ResetConnections() {
  // The pumps compare their generation with reset_generation_ when they end.
  reset_generation_ = generation_.fetch_add(1);
}

void TcpProxy::SetDelay(absl::Duration delay) { delay_us_ = absl::ToInt64Microseconds(delay); }

void TcpProxy::SetStallReplies(bool stall) { stall_replies_ = stall; }

void TcpProxy::AcceptLoop() {
  while (!stopping_) {
    ReapPumps();
    pollfd p{listen_fd_, POLLIN, 0};
    if (::poll(&p, 1, 50) <= 0) continue;
    const int client = ::accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
    if (client < 0) continue;
    if (!up_) {
      ::close(client);  // the "network" is cut
      continue;
    }
    const int server = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(static_cast<uint16_t>(target_port_));
    inet_pton(AF_INET, host_ == "localhost" ? "127.0.0.1" : host_.c_str(), &addr.sin_addr);
    if (server < 0 || ::connect(server, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
      if (server >= 0) ::close(server);
      ::close(client);
      continue;
    }
    int one = 1;
    setsockopt(client, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    setsockopt(server, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    ++connections_;
    ++open_;
    auto done = std::make_shared<std::atomic<bool>>(false);
    absl::MutexLock lock(&mu_);
    pumps_.push_back(PumpThread{std::thread([this, client, server, done] {
                                  Pump(client, server);
                                  *done = true;
                                }),
                                done});
  }
}

void TcpProxy::Pump(int client_fd, int server_fd) {
  const int generation = generation_.load();
  char buf[65536];
  while (!stopping_ && generation_.load() == generation) {
    const bool stalled = stall_replies_.load();
    pollfd fds[2] = {{client_fd, POLLIN, 0}, {server_fd, static_cast<short>(stalled ? 0 : POLLIN), 0}};
    if (::poll(fds, 2, 20) <= 0) continue;
    bool closed = false;
    for (int i = 0; i < 2 && !closed; ++i) {
      if ((fds[i].revents & (POLLIN | POLLHUP | POLLERR)) == 0) continue;
      if (i == 1 && stalled) continue;
      const ssize_t n = ::read(fds[i].fd, buf, sizeof(buf));
      if (n <= 0) {
        closed = true;
        break;
      }
      if (const int64_t delay = delay_us_.load(); delay > 0) {
        absl::SleepFor(absl::Microseconds(delay));
      }
      const int out = i == 0 ? server_fd : client_fd;
      for (ssize_t off = 0; off < n;) {
        const ssize_t w = ::send(out, buf + off, static_cast<size_t>(n - off), MSG_NOSIGNAL);
        if (w <= 0) {
          closed = true;
          break;
        }
        off += w;
      }
    }
    if (closed) break;
  }
  if (reset_generation_.load() == generation) {
    // SO_LINGER with a zero timeout: close() sends RST instead of FIN.
    linger lin{1, 0};
    setsockopt(client_fd, SOL_SOCKET, SO_LINGER, &lin, sizeof(lin));
    setsockopt(server_fd, SOL_SOCKET, SO_LINGER, &lin, sizeof(lin));
  } else {
    ::shutdown(client_fd, SHUT_RDWR);
    ::shutdown(server_fd, SHUT_RDWR);
  }
  ::close(client_fd);
  ::close(server_fd);
  --open_;
}

}  // namespace pulsesync::testing

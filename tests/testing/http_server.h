// A minimal HTTP/1.1 server on 127.0.0.1 for tests of HTTP clients (the JWKS
// refresher): every GET, whatever its path, gets the response set last, and
// the connection is closed after it.
//
// Thread-safe. Owns its thread (one connection at a time); the destructor
// stops it.
#ifndef PULSESYNC_TESTS_TESTING_HTTP_SERVER_H_
#define PULSESYNC_TESTS_TESTING_HTTP_SERVER_H_

#include <atomic>
#include <memory>
#include <string>
#include <thread>

#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"

namespace pulsesync::testing {

class HttpServer {
 public:
  static absl::StatusOr<std::unique_ptr<HttpServer>> Start();
  ~HttpServer();

  int port() const { return port_; }
  std::string url(const std::string& path = "/") const;

  // What the next requests get (status 200 and an empty body at first).
  void SetResponse(int status, std::string body);
  // Requests answered so far.
  int requests() const;

 private:
  HttpServer(int listen_fd, int port);
  void Loop();
  void Serve(int fd);

  const int listen_fd_;
  const int port_;
  std::atomic<bool> stopping_{false};
  mutable absl::Mutex mu_;
  int status_ ABSL_GUARDED_BY(mu_) = 200;
  std::string body_ ABSL_GUARDED_BY(mu_);
  int requests_ ABSL_GUARDED_BY(mu_) = 0;
  std::thread thread_;
};

}  // namespace pulsesync::testing

#endif  // PULSESYNC_TESTS_TESTING_HTTP_SERVER_H_

// A private PostgreSQL 15 cluster for tests that stop, crash or restart
// PostgreSQL itself (the shared test cluster of scripts/test.sh must not be
// touched). Made with scripts/lib.sh's helpers (initdb as the `postgres` OS
// user under root, a port below the
// ephemeral range so that it is still free when the cluster restarts).
//
// Not thread-safe. The destructor stops the cluster and deletes its files.
#ifndef PULSESYNC_TESTS_TESTING_PG_CLUSTER_H_
#define PULSESYNC_TESTS_TESTING_PG_CLUSTER_H_

#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace pulsesync::testing {

class PgCluster {
 public:
  // initdb into a fresh temporary directory and start on a free port
  // (seconds; bounded by the helpers' own timeouts). `durable`: PostgreSQL's
  // defaults (fsync, synchronous_commit on), for tests that crash it and
  // expect every commit it acknowledged to survive; else the shared test
  // cluster's throwaway settings, with which a crash loses recent commits.
  static absl::StatusOr<std::unique_ptr<PgCluster>> Create(bool durable = true);
  ~PgCluster();

  // Stops PostgreSQL: `immediate` is a crash (no checkpoint, clients cut
  // at once; recovery runs at the next start), else a fast shutdown.
  absl::Status Stop(bool immediate = false);
  // Starts it again on the same port, waiting until it accepts connections.
  absl::Status Start();

  int port() const { return port_; }
  // A superuser URL to database `dbname`.
  std::string url(const std::string& dbname = "postgres") const;

 private:
  PgCluster(std::string dir, int port) : dir_(std::move(dir)), port_(port) {}
  // Runs `script` in bash with scripts/lib.sh sourced and $D (data
  // directory) and $P (port) set.
  absl::Status RunLibScript(const std::string& script) const;

  std::string dir_;
  int port_;
  bool running_ = false;
};

}  // namespace pulsesync::testing

#endif  // PULSESYNC_TESTS_TESTING_PG_CLUSTER_H_

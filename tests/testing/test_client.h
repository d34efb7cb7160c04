// A real client for end-to-end, fault and soak tests: its own SQLite file
// (LocalStore), a GrpcTransport, a SyncEngine and optionally a Subscriber,
// plus the checks those tests share (what a client holds against what
// PostgreSQL holds, and whether every revision the server acknowledged is
// in PostgreSQL exactly once).
//
// Thread safety: as the parts (store, engine, transport and subscriber are
// thread-safe); the counters are atomic.
#ifndef PULSESYNC_TESTS_TESTING_TEST_CLIENT_H_
#define PULSESYNC_TESTS_TESTING_TEST_CLIENT_H_

#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "client/core/subscriber.h"
#include "client/core/sync_engine.h"
#include "client/store/local_store.h"
#include "client/transport/grpc_transport.h"
#include "tests/testing/test_database.h"

namespace pulsesync::testing {

struct TestClientOptions {
  std::string user_id;  // x-pulsesync-user-id; "" = a trusted call (dev mode)
  absl::Duration deadline = absl::Seconds(10);  // per unary call
  bool wait_for_ready = false;
  // A channel of its own with its own TCP connection (gRPC otherwise shares
  // one connection between channels to the same address).
  bool own_connection = false;
  LocalStoreOptions store;
  SyncEngineOptions engine;
  // Start a Subscriber (live feed, pushes after local writes) at once, with
  // short backoffs fit for tests.
  bool subscribe = false;
  InitialSync initial_sync = InitialSync::kSnapshot;
};

// A task as both sides compare it.
struct TaskState {
  int64_t version = 0;
  std::string title;
  std::string status;
  bool deleted = false;
  bool operator==(const TaskState& o) const {
    return version == o.version && title == o.title && status == o.status && deleted == o.deleted;
  }
  bool operator!=(const TaskState& o) const { return !(*this == o); }
};
using TaskMap = std::map<std::string, TaskState>;

class TestClient {
 public:
  static absl::StatusOr<std::unique_ptr<TestClient>> Open(const std::string& path,
                                                          const std::string& address,
                                                          TestClientOptions options = {});
  ~TestClient();

  LocalStore* store() { return store_.get(); }
  SyncEngine* engine() { return engine_.get(); }
  Subscriber* subscriber() { return subscriber_.get(); }
  const std::string& path() const { return path_; }

  absl::StatusOr<std::string> CreateTask(const std::string& team, const std::string& title);
  int64_t Pending();
  // The team's tasks as this client holds them (tombstones included).
  TaskMap Tasks(const std::string& team);

  // Push (or Push then Pull) until nothing is pending and a pass succeeded,
  // retrying failures (a server or network that is down) until `timeout`.
  // Returns the last error when time runs out.
  absl::Status PushAll(absl::Duration timeout);
  absl::Status SyncAll(absl::Duration timeout);

  // Ids of this client's own revisions the server acknowledged (APPLIED or
  // DUPLICATE), read from the SQLite file.
  std::vector<std::string> AckedRevisionIds();

  // Subscriber connection events seen.
  int connects() const { return connects_.load(); }
  int disconnects() const { return disconnects_.load(); }

 private:
  TestClient() = default;
  std::string path_;
  std::unique_ptr<LocalStore> store_;
  std::unique_ptr<GrpcTransport> transport_;
  std::unique_ptr<SyncEngine> engine_;
  std::unique_ptr<Subscriber> subscriber_;
  std::atomic<int> connects_{0};
  std::atomic<int> disconnects_{0};
};

// The team's tasks as PostgreSQL holds them (tombstones included).
absl::StatusOr<TaskMap> ServerTasks(const TestDatabase& db, const std::string& team);

// Checks that each revision id is in pulsesync.applied_revisions (its
// primary key: at most once) and that no revision reached the change log
// twice for one object. OK, or
// kDataLoss naming what is missing or doubled.
absl::Status CheckAcknowledgedExactlyOnce(const TestDatabase& db,
                                          const std::vector<std::string>& revision_ids);

// "" when equal, else the first differences (for a test's failure message).
std::string DiffTasks(const TaskMap& expected, const TaskMap& actual, int max_lines = 5);

}  // namespace pulsesync::testing

#endif  // PULSESYNC_TESTS_TESTING_TEST_CLIENT_H_

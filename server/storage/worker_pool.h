// WorkerPool: the server's database workers. Each worker thread owns one
// PgSession (one connection, statements prepared once) and runs jobs from a
// shared, bounded queue. gRPC reactions never touch the database; they submit
// a job here and the job finishes the RPC.
//
// Thread safety: Submit and Stop may be called from any thread. Jobs run on
// worker threads, one at a time per worker.
#ifndef PULSESYNC_SERVER_STORAGE_WORKER_POOL_H_
#define PULSESYNC_SERVER_STORAGE_WORKER_POOL_H_

#include <cstddef>
#include <deque>
#include <functional>
#include <memory>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "server/storage/pg_session.h"

namespace pulsesync {

class WorkerPool {
 public:
  using Job = std::function<void(PgSession&)>;

  // Starts `size` workers. Connections are opened lazily, by the first job
  // (or Warm-up), so the pool starts even while PostgreSQL is down.
  WorkerPool(const PgSessionOptions& options, int size, size_t max_queue);
  ~WorkerPool();  // Stop()
  WorkerPool(const WorkerPool&) = delete;
  WorkerPool& operator=(const WorkerPool&) = delete;

  // Queues a job. The job is not run when this fails: kResourceExhausted
  // when the queue is full, kUnavailable when the pool is stopping.
  [[nodiscard]] absl::Status Submit(Job job);

  // Refuses new jobs, runs the jobs already queued, then joins the workers.
  // Idempotent.
  void Stop();
  // Refuses new jobs (Submit answers UNAVAILABLE) and lets the queued ones
  // run; Stop() then waits for them. The first step of a shutdown, so that
  // no call is accepted after streams were told to go elsewhere.
  void Close();

  int size() const { return static_cast<int>(threads_.size()); }

  struct Usage {
    int busy = 0;       // workers running a job
    size_t queued = 0;  // jobs waiting for a worker
  };
  Usage usage() const;

 private:
  void WorkerLoop(PgSession* session);

  const size_t max_queue_;
  mutable absl::Mutex mu_;
  std::deque<Job> queue_ ABSL_GUARDED_BY(mu_);
  int busy_ ABSL_GUARDED_BY(mu_) = 0;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  std::vector<std::unique_ptr<PgSession>> sessions_;
  std::vector<std::thread> threads_;
};

}  // namespace pulsesync

#endif  // PULSESYNC_SERVER_STORAGE_WORKER_POOL_H_

#include "server/storage/worker_pool.h"

#include <utility>

namespace pulsesync {

WorkerPool::WorkerPool(const PgSessionOptions& options, int size, size_t max_queue)
    : max_queue_(max_queue) {
  if (size < 1) size = 1;
  for (int i = 0; i < size; ++i) {
    sessions_.push_back(std::make_unique<PgSession>(options));
  }
  for (auto& s : sessions_) {
    threads_.emplace_back([this, session = s.get()] { WorkerLoop(session); });
  }
}

WorkerPool::~WorkerPool() { Stop(); }

absl::Status WorkerPool::Submit(Job job) {
  absl::MutexLock lock(&mu_);
  if (stopping_) return absl::UnavailableError("server shutting down: retry on another replica or later");
  if (queue_.size() >= max_queue_) {
    return absl::ResourceExhaustedError("server overloaded: retry with backoff");
  }
  queue_.push_back(std::move(job));
  return absl::OkStatus();
}

void WorkerPool::Close() {
  absl::MutexLock lock(&mu_);
  stopping_ = true;
}

void WorkerPool::Stop() {
  {
    absl::MutexLock lock(&mu_);
    if (stopping_ && threads_.empty()) return;
    stopping_ = true;
  }
  for (std::thread& t : threads_) {
    if (t.joinable()) t.join();
  }
  threads_.clear();
}

WorkerPool::Usage WorkerPool::usage() const {
  absl::MutexLock lock(&mu_);
  return Usage{busy_, queue_.size()};
}

void WorkerPool::WorkerLoop(PgSession* session) {
  bool ran_job = false;  // busy_ counts this worker until it is back here
  while (true) {
    Job job;
    {
      absl::MutexLock lock(&mu_);
      if (ran_job) --busy_;
      ran_job = false;
      mu_.Await(absl::Condition(
          +[](WorkerPool* p) {
            return p->stopping_ || !p->queue_.empty();
          },
          this));
      if (queue_.empty()) return;  // stopping, and nothing left to run
      job = std::move(queue_.front());
      queue_.pop_front();
      ++busy_;
      ran_job = true;
    }
    job(*session);
  }
}

}  // namespace pulsesync

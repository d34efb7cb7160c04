// Test support: a scripted Transport for the Subscriber and the CLI, and a
// fake SubscriberClock. Header-only; for tests.
#ifndef PULSESYNC_CLIENT_CORE_FAKE_FEED_TRANSPORT_H_
#define PULSESYNC_CLIENT_CORE_FAKE_FEED_TRANSPORT_H_

#include <algorithm>
#include <deque>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "client/core/subscriber.h"
#include "client/core/transport.h"
#include "common/brotli_codec.h"

namespace pulsesync::testing {

// One server-streaming call as the test drives it: Send messages, then End
// with a status. Thread-safe.
template <typename Response>
class ScriptedCall {
 public:
  void Send(Response r) {
    absl::MutexLock lock(&mu_);
    queue_.push_back(std::move(r));
  }
  void End(absl::Status status) {
    absl::MutexLock lock(&mu_);
    end_ = std::move(status);
  }
  bool cancelled() const {
    absl::MutexLock lock(&mu_);
    return cancelled_;
  }
  // Messages sent but not read yet.
  size_t unread() const {
    absl::MutexLock lock(&mu_);
    return queue_.size();
  }

  // The client side.
  bool Read(Response* r) {
    absl::MutexLock lock(&mu_);
    mu_.Await(absl::Condition(this, &ScriptedCall::Readable));
    if (cancelled_ || queue_.empty()) return false;
    *r = std::move(queue_.front());
    queue_.pop_front();
    return true;
  }
  absl::Status Finish() {
    absl::MutexLock lock(&mu_);
    if (cancelled_) return absl::CancelledError("cancelled by the client");
    return end_.value_or(absl::OkStatus());
  }
  void Cancel() {
    absl::MutexLock lock(&mu_);
    cancelled_ = true;
  }

 private:
  bool Readable() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return cancelled_ || !queue_.empty() || end_.has_value();
  }

  mutable absl::Mutex mu_;
  std::deque<Response> queue_ ABSL_GUARDED_BY(mu_);
  std::optional<absl::Status> end_ ABSL_GUARDED_BY(mu_);
  bool cancelled_ ABSL_GUARDED_BY(mu_) = false;
};

template <typename Response>
class ScriptedStream final : public ResponseStream<Response> {
 public:
  explicit ScriptedStream(std::shared_ptr<ScriptedCall<Response>> call) : call_(std::move(call)) {}
  bool Read(Response* r) override { return call_->Read(r); }
  absl::Status Finish() override { return call_->Finish(); }
  void Cancel() override { call_->Cancel(); }

 private:
  std::shared_ptr<ScriptedCall<Response>> call_;
};

using ChangeCall = ScriptedCall<v1::StreamChangesResponse>;
using SnapshotCall = ScriptedCall<v1::SnapshotResponse>;

// A server whose every answer the test scripts. Thread-safe. `log` records
// the calls in order ("info", "push", "snapshot", "stream").
class FakeFeedServer final : public Transport {
 public:
  absl::StatusOr<v1::ApplyRevisionsResponse> ApplyRevisions(
      const v1::ApplyRevisionsRequest& request) override {
    v1::RevisionBatch batch;
    if (request.encoding() == v1::PAYLOAD_ENCODING_BROTLI) {
      absl::StatusOr<std::string> bytes = BrotliDecompress(request.compressed_batch(), 1 << 26);
      if (!bytes.ok() || !batch.ParseFromString(*bytes)) {
        return absl::InvalidArgumentError("bad batch");
      }
    } else {
      *batch.mutable_revisions() = request.revisions();
    }
    absl::MutexLock lock(&mu_);
    log_.push_back("push");
    if (!push_status_.ok()) return push_status_;
    std::vector<std::string> ids;
    v1::ApplyRevisionsResponse response;
    for (const v1::Revision& r : batch.revisions()) {
      ids.push_back(r.id());
      v1::RevisionResult* res = response.add_results();
      res->set_revision_id(r.id());
      res->set_outcome(v1::RevisionResult::OUTCOME_APPLIED);
      res->set_version(1);
    }
    pushes_.push_back(std::move(ids));
    return response;
  }
  absl::StatusOr<v1::PullChangesResponse> PullChanges(const v1::PullChangesRequest&) override {
    return absl::UnimplementedError("not in this fake");
  }
  absl::StatusOr<v1::GetServerInfoResponse> GetServerInfo(
      const v1::GetServerInfoRequest&) override {
    absl::MutexLock lock(&mu_);
    log_.push_back("info");
    ++info_calls_;
    if (!info_failures_.empty()) {
      absl::Status st = info_failures_.front();
      info_failures_.pop_front();
      return st;
    }
    return v1::GetServerInfoResponse();
  }
  absl::StatusOr<std::unique_ptr<ChangeStream>> StreamChanges(
      const v1::StreamChangesRequest& request) override {
    absl::MutexLock lock(&mu_);
    log_.push_back("stream");
    stream_requests_.push_back(request);
    auto call = std::make_shared<ChangeCall>();
    streams_.push_back(call);
    return std::unique_ptr<ChangeStream>(new ScriptedStream<v1::StreamChangesResponse>(call));
  }
  absl::StatusOr<std::unique_ptr<SnapshotStream>> Snapshot(
      const v1::SnapshotRequest& request) override {
    absl::MutexLock lock(&mu_);
    log_.push_back("snapshot");
    snapshot_requests_.push_back(request);
    auto call = std::make_shared<SnapshotCall>();
    if (!snapshot_scripts_.empty()) {
      for (v1::SnapshotResponse& r : snapshot_scripts_.front().first) call->Send(std::move(r));
      call->End(snapshot_scripts_.front().second);
      snapshot_scripts_.pop_front();
    }
    snapshots_.push_back(call);
    return std::unique_ptr<SnapshotStream>(new ScriptedStream<v1::SnapshotResponse>(call));
  }

  // --- Scripting ---
  void FailInfo(absl::Status status) {
    absl::MutexLock lock(&mu_);
    info_failures_.push_back(std::move(status));
  }
  void SetPushStatus(absl::Status status) {
    absl::MutexLock lock(&mu_);
    push_status_ = std::move(status);
  }
  // The next Snapshot call streams these and ends with `end`; a Snapshot
  // without a script stays open until the test drives snapshots()[i].
  void ScriptSnapshot(std::vector<v1::SnapshotResponse> messages, absl::Status end = {}) {
    absl::MutexLock lock(&mu_);
    snapshot_scripts_.emplace_back(std::move(messages), std::move(end));
  }

  // --- Inspection (waits are bounded) ---
  // The n-th (0-based) stream, once opened; nullptr after `timeout`.
  std::shared_ptr<ChangeCall> WaitForStream(size_t n, absl::Duration timeout = absl::Seconds(10)) {
    absl::MutexLock lock(&mu_);
    auto opened = [this, n]() ABSL_NO_THREAD_SAFETY_ANALYSIS { return streams_.size() > n; };
    if (!mu_.AwaitWithTimeout(absl::Condition(&opened), timeout)) return nullptr;
    return streams_[n];
  }
  // The n-th (0-based) Snapshot call, once made; nullptr after `timeout`.
  std::shared_ptr<SnapshotCall> WaitForSnapshot(size_t n,
                                                absl::Duration timeout = absl::Seconds(10)) {
    absl::MutexLock lock(&mu_);
    auto made = [this, n]() ABSL_NO_THREAD_SAFETY_ANALYSIS { return snapshots_.size() > n; };
    if (!mu_.AwaitWithTimeout(absl::Condition(&made), timeout)) return nullptr;
    return snapshots_[n];
  }
  size_t stream_count() const {
    absl::MutexLock lock(&mu_);
    return streams_.size();
  }
  v1::StreamChangesRequest stream_request(size_t n) const {
    absl::MutexLock lock(&mu_);
    return stream_requests_.at(n);
  }
  std::vector<std::vector<std::string>> pushes() const {
    absl::MutexLock lock(&mu_);
    return pushes_;
  }
  std::vector<std::string> log() const {
    absl::MutexLock lock(&mu_);
    return log_;
  }
  int info_calls() const {
    absl::MutexLock lock(&mu_);
    return info_calls_;
  }
  // Polls `f` (real time, bounded); never a fixed sleep.
  template <typename F>
  static bool WaitUntil(F f, absl::Duration timeout = absl::Seconds(10)) {
    const absl::Time deadline = absl::Now() + timeout;
    while (!f()) {
      if (absl::Now() > deadline) return false;
      absl::SleepFor(absl::Milliseconds(1));
    }
    return true;
  }
  size_t snapshot_count() const {
    absl::MutexLock lock(&mu_);
    return snapshots_.size();
  }

 private:
  mutable absl::Mutex mu_;
  std::deque<absl::Status> info_failures_ ABSL_GUARDED_BY(mu_);
  absl::Status push_status_ ABSL_GUARDED_BY(mu_);
  std::deque<std::pair<std::vector<v1::SnapshotResponse>, absl::Status>> snapshot_scripts_
      ABSL_GUARDED_BY(mu_);
  std::vector<v1::StreamChangesRequest> stream_requests_ ABSL_GUARDED_BY(mu_);
  std::vector<std::shared_ptr<ChangeCall>> streams_ ABSL_GUARDED_BY(mu_);
  std::vector<v1::SnapshotRequest> snapshot_requests_ ABSL_GUARDED_BY(mu_);
  std::vector<std::shared_ptr<SnapshotCall>> snapshots_ ABSL_GUARDED_BY(mu_);
  std::vector<std::vector<std::string>> pushes_ ABSL_GUARDED_BY(mu_);
  std::vector<std::string> log_ ABSL_GUARDED_BY(mu_);
  int info_calls_ ABSL_GUARDED_BY(mu_) = 0;
};

// Time stands still until Advance. A waiter polls its condition every real
// millisecond, so it sees both its condition and Advance promptly.
class FakeSubscriberClock final : public SubscriberClock {
 public:
  absl::Time Now() override {
    absl::MutexLock lock(&mu_);
    return now_;
  }
  bool AwaitWithDeadline(absl::Mutex* mu, const absl::Condition& cond,
                         absl::Time deadline) override {
    {
      absl::MutexLock lock(&mu_);
      waiting_.push_back(deadline);
    }
    bool result = false;
    while (true) {
      if (cond.Eval()) {
        result = true;
        break;
      }
      if (Now() >= deadline) break;
      mu->AwaitWithTimeout(cond, absl::Milliseconds(1));
    }
    absl::MutexLock lock(&mu_);
    waiting_.erase(std::find(waiting_.begin(), waiting_.end(), deadline));
    return result;
  }
  void Advance(absl::Duration d) {
    absl::MutexLock lock(&mu_);
    now_ += d;
  }
  // Waits (real time, bounded) until some thread waits with this deadline.
  bool WaitForWaiter(absl::Time deadline, absl::Duration timeout = absl::Seconds(10)) {
    absl::MutexLock lock(&mu_);
    auto found = [this, deadline]() ABSL_NO_THREAD_SAFETY_ANALYSIS {
      return std::find(waiting_.begin(), waiting_.end(), deadline) != waiting_.end();
    };
    return mu_.AwaitWithTimeout(absl::Condition(&found), timeout);
  }

 private:
  absl::Mutex mu_;
  absl::Time now_ = absl::FromUnixSeconds(1'700'000'000);
  std::vector<absl::Time> waiting_ ABSL_GUARDED_BY(mu_);
};

}  // namespace pulsesync::testing

#endif  // PULSESYNC_CLIENT_CORE_FAKE_FEED_TRANSPORT_H_

// feed_bench: the realtime feed (StreamChanges) measured end to end against
// real pulsesyncd processes on real PostgreSQL, over gRPC on 127.0.0.1.
// Figures are printed beside their ceiling or reference, never asserted.
//
//   PULSESYNC_TEST_DATABASE_URL=postgresql://postgres@127.0.0.1:5432/postgres
//     build/bench/feed_bench [--subscribers=1000] [--rate=1000] [--seconds=10]
//
// A quick (CI-size) run:
//   build/bench/feed_bench --subscribers=50 --rate=200 --seconds=3
//     --idle_streams=200 --apply_batches=10 --s3_seconds=2
//
// Scenarios (--scenarios=1,2,3 picks them):
//   1  fan-out: N from_now streams (callback client, spread over --channels
//      connections), then a writer applies --rate writes/s for --seconds
//      through ApplyRevisions; each task title carries its send time
//      (steady clock, same process), so every subscriber measures
//      write-sent -> event-received per event. Prints writes/s, events/s
//      (ceiling: rate x N), latency percentiles, and events lost (must be 0).
//   2  memory per idle stream: pulsesyncd VmRSS with 0 and with N live,
//      idle streams.
//   3  NOTIFY: ApplyRevisions throughput (4 writers x 100-revision batches)
//      with --feed_notify=true vs false, alternating, same run; then
//      delivery latency for a few subscribers on a second replica (woken by
//      NOTIFY, or polling every --feed_poll_ms) and on the writing server
//      itself (woken locally either way).
//   4  a --txn_rows-row transaction (one SQL INSERT, as psql, PostgREST or
//      another app on the same database writes) reaching --txn_followers
//      from_now followers of one pulsesyncd: commit -> the last row at every
//      follower, --txn_rounds times (median and worst). Ceiling: the same
//      change-log rows read by one SELECT through libpqxx (what a follower
//      must at least do).
//
// The benchmark client, pulsesyncd and PostgreSQL share this machine's
// cores; the figures are a lower bound for a server with cores of its own.
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cinttypes>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <dirent.h>
#include <fstream>
#include <functional>
#include <map>
#include <memory>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "bench/figures.h"
#include "bench/process.h"
#include "common/uuid.h"
#include "grpcpp/grpcpp.h"
#include "pqxx/pqxx"
#include "pulsesync/v1/sync.grpc.pb.h"
#include "tests/testing/subprocess.h"
#include "tests/testing/test_database.h"

ABSL_FLAG(std::string, scenarios, "1,2,3,4", "which scenarios to run, comma-separated");
ABSL_FLAG(int, subscribers, 1000, "scenario 1: concurrent StreamChanges subscribers");
ABSL_FLAG(int, rate, 1000, "scenario 1: writes per second");
ABSL_FLAG(int, seconds, 10, "scenario 1: seconds of writing");
ABSL_FLAG(int, batch, 10, "writes per ApplyRevisions call while pacing (scenarios 1 and 3)");
ABSL_FLAG(int, writer_threads, 2,
          "paced writer threads (batch k goes to thread k mod n; absolute deadlines)");
ABSL_FLAG(int, channels, 8, "gRPC channels (connections) the subscribers are spread over");
ABSL_FLAG(int, live_timeout_s, 120, "deadline for all subscribers to receive their first checkpoint");
ABSL_FLAG(int, drain_timeout_s, 60, "deadline, after the last write, for every event to arrive");
ABSL_FLAG(std::string, server_flags, "",
          "extra pulsesyncd flags for scenarios 1 and 2, comma-separated "
          "(e.g. --pool_size=8,--feed_poll_ms=100)");
ABSL_FLAG(int, idle_streams, -1, "scenario 2: idle streams (-1 = --subscribers)");
ABSL_FLAG(int, apply_writers, 4, "scenario 3: writer threads for the throughput run");
ABSL_FLAG(int, apply_batches, 50, "scenario 3: batches per writer");
ABSL_FLAG(int, apply_batch, 100, "scenario 3: revisions per batch");
ABSL_FLAG(int, apply_rounds, 3, "scenario 3: rounds of (notify on, notify off)");
ABSL_FLAG(int, s3_subscribers, 5, "scenario 3: subscribers per server in the latency runs");
ABSL_FLAG(int, s3_rate, 200, "scenario 3: writes per second in the latency runs");
ABSL_FLAG(int, s3_seconds, 5, "scenario 3: seconds of writing per latency run");
ABSL_FLAG(std::string, s3_poll_ms, "500,50", "scenario 3: --feed_poll_ms values tried with notify off");
ABSL_FLAG(int, txn_rows, 10000, "scenario 4: rows written by the one transaction");
ABSL_FLAG(int, txn_followers, 1, "scenario 4: from_now followers");
ABSL_FLAG(int, txn_rounds, 5, "scenario 4: transactions, one after the other");
ABSL_FLAG(int, progress_ms, 1000, "interval of progress lines");

namespace pulsesync {
namespace {

using testing::ServerProcess;
using Steady = std::chrono::steady_clock;

constexpr char kTeam[] = "20000000-0000-4000-8000-000000000002";
constexpr char kMarker[] = "fb:";  // task title: fb:<write index>:<send ns>

int64_t NowNs() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(Steady::now().time_since_epoch())
      .count();
}
int64_t WallMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}
double SecondsSince(int64_t start_ns) { return (NowNs() - start_ns) / 1e9; }

void Progress(const std::string& line) {
  std::printf("  .. %s\n", line.c_str());
  std::fflush(stdout);
}

// Repeated measurements as "12, 15, 11" (whole numbers).
std::string Runs(const std::vector<double>& v) {
  return absl::StrJoin(v, ", ", [](std::string* out, double x) {
    absl::StrAppend(out, absl::StrFormat("%.0f", x));
  });
}

std::string Human(double v) {
  char buf[32];
  if (v >= 1e6) {
    std::snprintf(buf, sizeof buf, "%.2fM", v / 1e6);
  } else if (v >= 1e4) {
    std::snprintf(buf, sizeof buf, "%.1fk", v / 1e3);
  } else {
    std::snprintf(buf, sizeof buf, "%.0f", v);
  }
  return buf;
}

// ---------------------------------------------------------------- /proc

// The pid of the pulsesyncd whose command line names this log (ServerProcess
// passes --port_file=<log>.port), or -1.
pid_t FindServerPid(const std::string& log_path) {
  const std::string needle = "--port_file=" + log_path + ".port";
  DIR* dir = ::opendir("/proc");
  if (dir == nullptr) return -1;
  pid_t found = -1;
  while (dirent* e = ::readdir(dir)) {
    int pid;
    if (!absl::SimpleAtoi(e->d_name, &pid)) continue;
    std::ifstream in(absl::StrCat("/proc/", pid, "/cmdline"), std::ios::binary);
    std::string cmdline((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    for (absl::string_view arg : absl::StrSplit(cmdline, '\0')) {
      if (arg == needle) found = pid;
    }
    if (found > 0) break;
  }
  ::closedir(dir);
  return found;
}

// A field of /proc/PID/status in KiB (VmRSS, VmHWM), or -1.
int64_t StatusKib(pid_t pid, const std::string& field) {
  std::ifstream in(absl::StrCat("/proc/", pid, "/status"));
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind(field + ":", 0) == 0) {
      std::istringstream s(line.substr(field.size() + 1));
      int64_t kib = -1;
      s >> kib;
      return kib;
    }
  }
  return -1;
}

int64_t ThreadCount(pid_t pid) {
  std::ifstream in(absl::StrCat("/proc/", pid, "/status"));
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("Threads:", 0) == 0) return std::atoll(line.c_str() + 8);
  }
  return -1;
}

double SelfCpuSeconds() {
  rusage u{};
  ::getrusage(RUSAGE_SELF, &u);
  return u.ru_utime.tv_sec + u.ru_utime.tv_usec / 1e6 + u.ru_stime.tv_sec +
         u.ru_stime.tv_usec / 1e6;
}

// Busy CPU seconds of the whole machine (all cores).
double MachineBusySeconds() {
  std::ifstream in("/proc/stat");
  std::string cpu;
  int64_t v[10] = {};
  in >> cpu;
  for (int64_t& x : v) in >> x;
  const int64_t total = v[0] + v[1] + v[2] + v[3] + v[4] + v[5] + v[6] + v[7];
  return static_cast<double>(total - v[3] - v[4]) / ::sysconf(_SC_CLK_TCK);
}

struct CpuSample {
  double machine = 0, self = 0, server = 0;
  static CpuSample Take(pid_t server) {
    CpuSample s;
    s.machine = MachineBusySeconds();
    s.self = SelfCpuSeconds();
    s.server = server > 0 ? bench::ProcessCpuSeconds(server) : 0;
    return s;
  }
};

void PrintCpu(const CpuSample& a, const CpuSample& b, double wall) {
  const double machine = b.machine - a.machine, self = b.self - a.self,
               server = b.server - a.server;
  std::printf("  %-44s bench client %.2f, pulsesyncd %.2f, rest (PostgreSQL...) %.2f of %u cores\n",
              "CPU (cores busy, average over the run)", self / wall, server / wall,
              std::max(0.0, machine - self - server) / wall, std::thread::hardware_concurrency());
}

// Warning and error lines of a pulsesyncd log: count, and a few examples.
void PrintLogProblems(const std::string& label, const ServerProcess& server) {
  const std::string log = server.ReadLog();
  int warnings = 0, errors = 0;
  std::map<std::string, int> examples;
  for (absl::string_view line : absl::StrSplit(log, '\n')) {
    const bool warn = absl::StrContains(line, "\"level\":\"warning\"");
    const bool err = absl::StrContains(line, "\"level\":\"error\"");
    if (!warn && !err) continue;
    warn ? ++warnings : ++errors;
    // Group by msg.
    std::string key(line);
    const size_t m = line.find("\"msg\":");
    if (m != absl::string_view::npos) {
      const size_t end = line.find("\",", m);
      key = std::string(line.substr(m, end == absl::string_view::npos ? 80 : end - m + 1));
    }
    if (examples.emplace(key, 0).second && examples.size() <= 5) {
      std::printf("    %s log: %s\n", label.c_str(), std::string(line.substr(0, 400)).c_str());
    }
    examples[key]++;
  }
  std::printf("  %-44s %d warnings, %d errors%s\n", (label + " log").c_str(), warnings, errors,
              warnings + errors == 0 ? "" : "  (examples above)");
}

// ---------------------------------------------------------------- stats

struct Percentiles {
  size_t n = 0;
  double p50 = 0, p90 = 0, p95 = 0, p99 = 0, max = 0;  // ms
};

template <typename T>
Percentiles Compute(std::vector<T>& v, double unit_to_ms) {
  Percentiles p;
  p.n = v.size();
  if (v.empty()) return p;
  std::sort(v.begin(), v.end());
  auto at = [&](double q) {
    size_t i = static_cast<size_t>(q * static_cast<double>(v.size()));
    return static_cast<double>(v[std::min(i, v.size() - 1)]) * unit_to_ms;
  };
  p.p50 = at(0.50);
  p.p90 = at(0.90);
  p.p95 = at(0.95);
  p.p99 = at(0.99);
  p.max = static_cast<double>(v.back()) * unit_to_ms;
  return p;
}

std::string Format(const Percentiles& p) {
  if (p.n == 0) return "no samples";
  char buf[160];
  std::snprintf(buf, sizeof buf, "p50 %.1f  p90 %.1f  p95 %.1f  p99 %.1f  max %.1f ms", p.p50,
                p.p90, p.p95, p.p99, p.max);
  return buf;
}

// ---------------------------------------------------------------- gRPC

std::shared_ptr<grpc::Channel> MakeChannel(const std::string& address, int index) {
  grpc::ChannelArguments args;
  // Distinct arguments and a local subchannel pool: each channel gets its
  // own TCP connection instead of sharing one.
  args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
  args.SetInt("pulsesync.feed_bench.channel", index);
  args.SetMaxReceiveMessageSize(-1);
  return grpc::CreateCustomChannel(address, grpc::InsecureChannelCredentials(), args);
}

struct RunCounters {
  std::atomic<int64_t> events{0};         // marked events received, first time
  std::atomic<int64_t> first_event_ns{0}; // receive time of the first (0: none yet)
  std::atomic<int64_t> last_event_ns{0};  // receive time of the latest
};

// One StreamChanges subscriber on the callback API: many streams, a few threads.
class Subscriber final : public grpc::ClientReadReactor<v1::StreamChangesResponse> {
 public:
  Subscriber(size_t total_writes, RunCounters* counters, bool keep_latencies)
      : counters_(counters), keep_latencies_(keep_latencies), seen_(total_writes, 0) {}

  void Start(v1::SyncService::Stub* stub) {
    request_.set_from_now(true);
    stub->async()->StreamChanges(&context_, &request_, this);
    StartRead(&message_);
    StartCall();
  }
  void Cancel() {
    cancelled_.store(true);
    context_.TryCancel();
  }

  void OnReadDone(bool ok) override {
    if (!ok) return;  // OnDone follows
    const int64_t now = NowNs();
    // A message carries several changes, or none and a checkpoint.
    for (const v1::Change& change : message_.changes()) Record(change, now);
    if (!message_.checkpoint().empty()) {
      if (live_ns_.load(std::memory_order_relaxed) == 0) live_ns_.store(now);
      checkpoints_++;
    }
    StartRead(&message_);
  }

  void OnDone(const grpc::Status& status) override {
    status_ = status;
    ended_early_ = !cancelled_.load();
    done_.store(true);  // last: the owner may delete this once it sees it
  }

  bool live() const { return live_ns_.load() != 0; }
  bool done() const { return done_.load(); }
  bool ended_early() const { return ended_early_; }
  const grpc::Status& status() const { return status_; }
  int64_t unique() const { return unique_.load(); }
  int64_t duplicates() const { return duplicates_; }
  int64_t foreign() const { return foreign_; }
  const std::vector<uint8_t>& seen() const { return seen_; }
  std::vector<uint32_t>& latencies_us() { return latencies_us_; }

 private:
  void Record(const v1::Change& change, int64_t now) {
    const std::string& rec = change.new_record();
    const size_t m = rec.find(kMarker);
    if (m == std::string::npos) {
      foreign_++;
      return;
    }
    char* end = nullptr;
    const long long index = std::strtoll(rec.c_str() + m + 3, &end, 10);
    const long long sent = (end != nullptr && *end == ':') ? std::strtoll(end + 1, nullptr, 10) : 0;
    if (index < 0 || static_cast<size_t>(index) >= seen_.size() || sent <= 0) {
      foreign_++;
      return;
    }
    if (seen_[index]) {
      duplicates_++;
      return;
    }
    seen_[index] = 1;
    if (keep_latencies_) {
      latencies_us_.push_back(static_cast<uint32_t>(std::max<int64_t>(0, now - sent) / 1000));
    }
    unique_.fetch_add(1, std::memory_order_relaxed);
    counters_->events.fetch_add(1, std::memory_order_relaxed);
    int64_t none = 0;
    counters_->first_event_ns.compare_exchange_strong(none, now, std::memory_order_relaxed);
    int64_t prev = counters_->last_event_ns.load(std::memory_order_relaxed);
    while (prev < now &&
           !counters_->last_event_ns.compare_exchange_weak(prev, now, std::memory_order_relaxed)) {
    }
  }

  RunCounters* const counters_;
  const bool keep_latencies_;
  grpc::ClientContext context_;
  v1::StreamChangesRequest request_;
  v1::StreamChangesResponse message_;
  // Touched only by OnReadDone (one at a time per reactor), read once done.
  std::vector<uint8_t> seen_;
  std::vector<uint32_t> latencies_us_;
  int64_t duplicates_ = 0, foreign_ = 0, checkpoints_ = 0;
  std::atomic<int64_t> unique_{0};
  std::atomic<int64_t> live_ns_{0};
  std::atomic<bool> cancelled_{false};
  std::atomic<bool> done_{false};
  bool ended_early_ = false;
  grpc::Status status_;
};

// A set of subscribers on one server, spread over a few channels.
class SubscriberGroup {
 public:
  SubscriberGroup(std::string name, const std::string& address, int count, int channels,
                  size_t total_writes, RunCounters* counters, bool keep_latencies)
      : name_(std::move(name)) {
    channels = std::max(1, std::min(channels, count));
    for (int c = 0; c < channels; ++c) {
      stubs_.push_back(v1::SyncService::NewStub(MakeChannel(address, c)));
    }
    for (int i = 0; i < count; ++i) {
      subs_.push_back(std::make_unique<Subscriber>(total_writes, counters, keep_latencies));
    }
  }
  ~SubscriberGroup() { Shutdown(); }

  void Start() {
    for (size_t i = 0; i < subs_.size(); ++i) subs_[i]->Start(stubs_[i % stubs_.size()].get());
  }
  int Live() const {
    int n = 0;
    for (const auto& s : subs_) n += s->live() && !s->done();
    return n;
  }
  int Ended() const {
    int n = 0;
    for (const auto& s : subs_) n += s->done();
    return n;
  }
  // Cancels every stream and waits (bounded) for each to end. A stream that
  // does not end in time is leaked rather than freed under gRPC's feet.
  void Shutdown() {
    if (shut_down_) return;
    shut_down_ = true;
    for (auto& s : subs_) {
      if (!s->done()) s->Cancel();
    }
    testing::WaitFor([&] { return Ended() == static_cast<int>(subs_.size()); }, absl::Seconds(30));
    int stuck = 0;
    for (auto& s : subs_) {
      if (!s->done()) {
        (void)s.release();
        ++stuck;
      }
    }
    if (stuck > 0) std::printf("  !! %d %s streams did not end within 30 s of cancel\n", stuck,
                               name_.c_str());
  }
  const std::string& name() const { return name_; }
  std::vector<std::unique_ptr<Subscriber>>& subs() { return subs_; }

 private:
  std::string name_;
  std::vector<std::unique_ptr<v1::SyncService::Stub>> stubs_;
  std::vector<std::unique_ptr<Subscriber>> subs_;
  bool shut_down_ = false;
};

// Starts the groups' streams and waits until each has its first checkpoint.
bool WaitLive(std::vector<SubscriberGroup*> groups, absl::Duration timeout) {
  const int64_t start = NowNs();
  int total = 0;
  for (auto* g : groups) {
    total += static_cast<int>(g->subs().size());
    g->Start();
  }
  int64_t last_print = start;
  const absl::Duration progress = absl::Milliseconds(absl::GetFlag(FLAGS_progress_ms));
  bool all = testing::WaitFor(
      [&] {
        int live = 0, ended = 0;
        for (auto* g : groups) {
          live += g->Live();
          ended += g->Ended();
        }
        if (NowNs() - last_print >= absl::ToInt64Nanoseconds(progress)) {
          last_print = NowNs();
          Progress(absl::StrCat(live, "/", total, " streams live, ", ended, " ended, ",
                                absl::StrFormat("%.1f", SecondsSince(start)), " s"));
        }
        return live + ended >= total;
      },
      timeout, absl::Milliseconds(10));
  int live = 0;
  for (auto* g : groups) live += g->Live();
  Progress(absl::StrCat(live, "/", total, " streams live after ",
                        absl::StrFormat("%.2f", SecondsSince(start)), " s"));
  return all && live == total;
}

// ---------------------------------------------------------------- writer

std::string TaskPayload(size_t index, int64_t sent_ns) {
  return absl::StrCat(R"({"team_id":")", kTeam, R"(","title":")", kMarker, index, ":", sent_ns,
                      R"(","description":"feed benchmark row","priority":)", index % 5, "}");
}

void FillRevision(v1::Revision* r, const std::string& origin, int64_t seq, size_t index,
                  int64_t sent_ns) {
  const int64_t wall = WallMs();
  r->set_id(NewUuid());
  r->set_object_type("task");
  r->set_object_id(NewUuid());
  r->set_origin_id(origin);
  r->set_seq(seq);
  r->set_op(v1::OPERATION_UPSERT);
  r->set_payload(TaskPayload(index, sent_ns));
  r->set_created_at(wall);
  r->mutable_clock()->set_physical_ms(wall);
}

struct WriteResult {
  size_t planned = 0;
  int64_t applied = 0, rejected = 0, failed_calls = 0, late_batches = 0;
  double seconds = 0;  // first send to last answer
  std::vector<uint8_t> applied_flags;  // by write index
  std::vector<int64_t> call_us;        // ApplyRevisions latency per call
  std::string first_error;
};

// Paced writes: `total` writes in batches of `batch`, batch k sent at
// start + k * batch / rate (absolute deadlines), by `threads` threads.
WriteResult PacedWrites(const std::string& address, size_t total, int batch, int rate,
                        int threads, std::atomic<int64_t>* applied_counter) {
  WriteResult w;
  w.planned = total;
  w.applied_flags.assign(total, 0);
  const size_t batches = (total + batch - 1) / batch;
  const int64_t interval_ns = static_cast<int64_t>(1e9 * batch / rate);
  const int64_t start = NowNs() + 50'000'000;  // 50 ms to get every thread ready
  // Hard stop: a write phase that falls far behind ends anyway.
  const int64_t give_up = start + static_cast<int64_t>(batches) * interval_ns + 60'000'000'000LL;
  absl::Mutex mu;
  std::atomic<int64_t> last_answer{start};
  std::vector<std::thread> pool;
  for (int t = 0; t < threads; ++t) {
    pool.emplace_back([&, t] {
      auto stub = v1::SyncService::NewStub(MakeChannel(address, 1000 + t));
      const std::string origin = absl::StrCat("feed-bench-", t, "-", NewUuid().substr(0, 8));
      int64_t seq = 0;
      std::vector<int64_t> call_us;
      int64_t applied = 0, rejected = 0, failed = 0, late = 0;
      std::string error;
      for (size_t k = t; k < batches; k += threads) {
        const int64_t due = start + static_cast<int64_t>(k) * interval_ns;
        if (NowNs() > give_up) break;
        if (NowNs() < due) {
          std::this_thread::sleep_until(Steady::time_point(std::chrono::nanoseconds(due)));
        } else if (NowNs() - due > interval_ns) {
          ++late;
        }
        v1::ApplyRevisionsRequest req;
        const int64_t sent = NowNs();
        const size_t first = k * batch, last = std::min(total, first + batch);
        for (size_t i = first; i < last; ++i) FillRevision(req.add_revisions(), origin, ++seq, i, sent);
        grpc::ClientContext ctx;
        ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
        v1::ApplyRevisionsResponse resp;
        const grpc::Status s = stub->ApplyRevisions(&ctx, req, &resp);
        const int64_t answered = NowNs();
        call_us.push_back((answered - sent) / 1000);
        int64_t prev = last_answer.load();
        while (prev < answered && !last_answer.compare_exchange_weak(prev, answered)) {
        }
        if (!s.ok()) {
          ++failed;
          if (error.empty()) error = absl::StrCat(s.error_code(), ": ", s.error_message());
          continue;
        }
        for (int i = 0; i < resp.results_size(); ++i) {
          if (resp.results(i).outcome() == v1::RevisionResult::OUTCOME_APPLIED) {
            w.applied_flags[first + i] = 1;  // distinct indices per thread
            ++applied;
            if (applied_counter != nullptr) applied_counter->fetch_add(1);
          } else {
            ++rejected;
            if (error.empty()) error = resp.results(i).reason();
          }
        }
      }
      absl::MutexLock lock(&mu);
      w.applied += applied;
      w.rejected += rejected;
      w.failed_calls += failed;
      w.late_batches += late;
      w.call_us.insert(w.call_us.end(), call_us.begin(), call_us.end());
      if (w.first_error.empty()) w.first_error = error;
    });
  }
  for (auto& t : pool) t.join();
  // The planned span (batches x interval) unless the last answer came later.
  w.seconds = std::max(static_cast<double>(batches) * interval_ns,
                       static_cast<double>(last_answer.load() - start)) / 1e9;
  return w;
}

// ---------------------------------------------------------------- fan-out run

struct GroupSpec {
  std::string name;
  std::string address;
  int count = 0;
};

struct GroupResult {
  std::string name;
  int subscribers = 0, live = 0, ended_early = 0;
  int64_t expected = 0, received = 0, lost = 0, duplicates = 0, foreign = 0;
  Percentiles latency;
  std::string early_status;
};

struct FanoutResult {
  bool all_live = false;
  WriteResult writes;
  Percentiles call_latency;
  double events_per_s_window = 0;   // received during the write window / its length
  double events_per_s_overall = 0;  // all received / (first send .. last event)
  double drain_seconds = 0;         // after the last write answer
  bool drained = false;
  std::vector<GroupResult> groups;
};

FanoutResult RunFanout(const std::string& write_address, const std::vector<GroupSpec>& specs,
                       int rate, int seconds, bool progress,
                       const std::function<void()>& on_live = nullptr) {
  FanoutResult r;
  const size_t total = static_cast<size_t>(rate) * seconds;
  RunCounters counters;
  std::vector<std::unique_ptr<SubscriberGroup>> groups;
  std::vector<SubscriberGroup*> raw;
  for (const GroupSpec& s : specs) {
    groups.push_back(std::make_unique<SubscriberGroup>(
        s.name, s.address, s.count, absl::GetFlag(FLAGS_channels), total, &counters, true));
    raw.push_back(groups.back().get());
  }
  r.all_live = WaitLive(raw, absl::Seconds(absl::GetFlag(FLAGS_live_timeout_s)));
  if (on_live) on_live();
  int population = 0;
  for (auto* g : raw) population += g->Live();

  // Progress while writing and draining.
  std::atomic<int64_t> applied{0};
  std::atomic<bool> writing{true}, stop_monitor{false};
  const int64_t start = NowNs();
  std::thread monitor([&] {
    int64_t last_events = 0, last_applied = 0, last_t = start;
    while (!stop_monitor.load()) {
      std::this_thread::sleep_for(std::chrono::milliseconds(absl::GetFlag(FLAGS_progress_ms)));
      if (stop_monitor.load()) break;
      const int64_t now = NowNs(), ev = counters.events.load(), ap = applied.load();
      const double dt = (now - last_t) / 1e9;
      int ended = 0;
      for (auto* g : raw) ended += g->Ended();
      if (progress) {
        Progress(absl::StrFormat(
            "t=%5.1fs %s: writes applied %lld (%s/s), events %s (%s/s), expected so far %s%s",
            (now - start) / 1e9, writing.load() ? "writing" : "draining",
            static_cast<long long>(ap), Human((ap - last_applied) / dt), Human(ev),
            Human((ev - last_events) / dt), Human(static_cast<double>(ap) * population),
            ended > 0 ? absl::StrCat(", ", ended, " streams ENDED") : ""));
      }
      last_events = ev;
      last_applied = ap;
      last_t = now;
    }
  });

  r.writes = PacedWrites(write_address, total, absl::GetFlag(FLAGS_batch), rate,
                         absl::GetFlag(FLAGS_writer_threads), &applied);
  const int64_t write_end = NowNs();
  const int64_t events_at_write_end = counters.events.load();
  writing.store(false);
  const int64_t expected_total = r.writes.applied * population;
  r.drained = testing::WaitFor(
      [&] {
        int ended = 0;
        for (auto* g : raw) ended += g->Ended();
        return counters.events.load() >= expected_total || ended == population;
      },
      absl::Seconds(absl::GetFlag(FLAGS_drain_timeout_s)), absl::Milliseconds(5));
  r.drained = counters.events.load() >= expected_total;
  r.drain_seconds = (NowNs() - write_end) / 1e9;
  stop_monitor.store(true);
  monitor.join();

  const double window = (write_end - start) / 1e9;
  r.events_per_s_window = events_at_write_end / std::max(window, 1e-9);
  const int64_t last_ev = counters.last_event_ns.load();
  r.events_per_s_overall =
      counters.events.load() / std::max((std::max(last_ev, write_end) - start) / 1e9, 1e-9);
  r.call_latency = Compute(r.writes.call_us, 1e-3);

  for (auto& g : groups) g->Shutdown();
  for (auto& g : groups) {
    GroupResult gr;
    gr.name = g->name();
    gr.subscribers = static_cast<int>(g->subs().size());
    std::vector<uint32_t> all;
    for (auto& s : g->subs()) {
      if (s == nullptr) continue;
      if (!s->live()) continue;
      gr.live++;
      if (s->ended_early()) {
        gr.ended_early++;
        if (gr.early_status.empty()) {
          gr.early_status =
              absl::StrCat(s->status().error_code(), ": ", s->status().error_message());
        }
      }
      gr.received += s->unique();
      gr.duplicates += s->duplicates();
      gr.foreign += s->foreign();
      for (size_t i = 0; i < r.writes.applied_flags.size(); ++i) {
        if (r.writes.applied_flags[i]) {
          gr.expected++;
          if (!s->seen()[i]) gr.lost++;
        }
      }
      all.insert(all.end(), s->latencies_us().begin(), s->latencies_us().end());
      std::vector<uint32_t>().swap(s->latencies_us());
    }
    gr.latency = Compute(all, 1e-3);
    r.groups.push_back(std::move(gr));
  }
  return r;
}

void PrintWrites(const FanoutResult& r, int rate) {
  const WriteResult& w = r.writes;
  std::printf("  %-44s %10.0f /s   (target %d/s; %lld applied of %zu planned in %.2f s)\n",
              "writes applied", w.applied / std::max(w.seconds, 1e-9), rate,
              static_cast<long long>(w.applied), w.planned, w.seconds);
  std::printf("  %-44s %s\n", "ApplyRevisions call latency", Format(r.call_latency).c_str());
  if (w.rejected || w.failed_calls || w.late_batches) {
    std::printf("  !! %lld rejected revisions, %lld failed calls, %lld batches sent > 1 interval "
                "late; first error: %s\n",
                static_cast<long long>(w.rejected), static_cast<long long>(w.failed_calls),
                static_cast<long long>(w.late_batches), w.first_error.c_str());
  }
}

void PrintGroup(const GroupResult& g, int64_t applied) {
  std::printf("  [%s] %d/%d subscribers live; events expected %lld, received %lld\n",
              g.name.c_str(), g.live, g.subscribers, static_cast<long long>(g.expected),
              static_cast<long long>(g.received));
  std::printf("  [%s] %-39s %s\n", g.name.c_str(), "write-sent -> event-received latency",
              Format(g.latency).c_str());
  std::printf("  [%s] %-39s %lld%s\n", g.name.c_str(), "events lost (expected - received)",
              static_cast<long long>(g.lost), g.lost == 0 ? "" : "  !! within the drain deadline");
  if (g.duplicates || g.foreign || g.ended_early) {
    std::printf("  [%s] !! %lld duplicates, %lld unrecognised events, %d streams ended early (%s)\n",
                g.name.c_str(), static_cast<long long>(g.duplicates),
                static_cast<long long>(g.foreign), g.ended_early, g.early_status.c_str());
  }
}

std::vector<std::string> SplitFlags(const std::string& s) {
  std::vector<std::string> out;
  for (absl::string_view f : absl::StrSplit(s, ',', absl::SkipEmpty())) out.emplace_back(f);
  return out;
}

std::unique_ptr<ServerProcess> StartServer(const std::string& url, const std::string& dir,
                                           const std::string& name,
                                           std::vector<std::string> flags) {
  auto server = std::make_unique<ServerProcess>(url, dir + "/" + name + ".log", flags);
  absl::Status s = server->Start();
  if (!s.ok()) {
    std::fprintf(stderr, "cannot start pulsesyncd %s: %s\n", name.c_str(), s.ToString().c_str());
    return nullptr;
  }
  Progress(absl::StrCat("pulsesyncd ", name, " on ", server->address(), " (",
                        flags.empty() ? "default flags" : absl::StrJoin(flags, " "), ")"));
  return server;
}

// Stops a server with SIGTERM and reports how it went.
void StopServer(const std::string& name, std::unique_ptr<ServerProcess>& server) {
  if (server == nullptr) return;
  const int64_t t = NowNs();
  absl::StatusOr<int> code = server->Stop();
  if (!code.ok() || *code != 0) {
    std::printf("  !! pulsesyncd %s exit: %s (%.1f s)\n", name.c_str(),
                code.ok() ? absl::StrCat("code ", *code).c_str() : code.status().ToString().c_str(),
                SecondsSince(t));
  }
}

const testing::TestDatabase* g_db = nullptr;

// The database's state, printed at the start of each scenario: results
// depend on how much the log and the tasks table already hold.
void PrintDatabaseState() {
  if (g_db == nullptr) return;
  absl::StatusOr<std::string> log = g_db->QueryValue("SELECT count(*) FROM pulsesync.change_log");
  absl::StatusOr<std::string> tasks = g_db->QueryValue("SELECT count(*) FROM tasks");
  Progress(absl::StrCat("database holds ", log.ok() ? *log : "?", " change-log rows, ",
                        tasks.ok() ? *tasks : "?", " tasks"));
}

constexpr char kSupabase[] =
    "Supabase Realtime postgres_changes with RLS: 3,000-4,000 msgs/s total, p95 228-918 ms "
    "(Supabase's published benchmark)";

// ---------------------------------------------------------------- scenarios

int Scenario1(const std::string& url, const std::string& dir) {
  const int n = absl::GetFlag(FLAGS_subscribers), rate = absl::GetFlag(FLAGS_rate),
            seconds = absl::GetFlag(FLAGS_seconds);
  std::printf("\n== Scenario 1: fan-out, %d subscribers x %d writes/s for %d s "
              "(batches of %d, %d channels)\n",
              n, rate, seconds, absl::GetFlag(FLAGS_batch), absl::GetFlag(FLAGS_channels));
  PrintDatabaseState();
  auto server = StartServer(url, dir, "s1", SplitFlags(absl::GetFlag(FLAGS_server_flags)));
  if (server == nullptr) return 1;
  const pid_t pid = FindServerPid(dir + "/s1.log");
  const int64_t rss0 = pid > 0 ? StatusKib(pid, "VmRSS") : -1;
  int64_t rss_live = -1, threads_live = -1;
  CpuSample cpu0;
  int64_t t0 = 0;
  FanoutResult r = RunFanout(server->address(), {{"s1", server->address(), n}}, rate, seconds,
                             true, [&] {
                               if (pid > 0) {
                                 rss_live = StatusKib(pid, "VmRSS");
                                 threads_live = ThreadCount(pid);
                               }
                               cpu0 = CpuSample::Take(pid);
                               t0 = NowNs();
                             });
  const CpuSample cpu1 = CpuSample::Take(pid);
  const double wall = SecondsSince(t0);
  const int64_t hwm = pid > 0 ? StatusKib(pid, "VmHWM") : -1;
  const GroupResult& g = r.groups[0];
  std::printf("-- Scenario 1 results (%u cores shared by the bench client, pulsesyncd and "
              "PostgreSQL)\n",
              std::thread::hardware_concurrency());
  if (!r.all_live) std::printf("  !! not every subscriber went live before the writes\n");
  PrintWrites(r, rate);
  const double ceiling = static_cast<double>(rate) * g.live;
  std::printf("  %-44s %10s /s   (ceiling W x N = %s/s; %.0f%%)\n",
              "events delivered, during the write window", Human(r.events_per_s_window).c_str(),
              Human(ceiling).c_str(), 100 * r.events_per_s_window / std::max(ceiling, 1.0));
  std::printf("  %-44s %10s /s   (first write .. last event; drain took %.2f s after the last "
              "write%s)\n",
              "events delivered, overall", Human(r.events_per_s_overall).c_str(), r.drain_seconds,
              r.drained ? "" : ", NOT DRAINED");
  PrintGroup(g, r.writes.applied);
  bench::PrintFigure(absl::StrCat("feed: events delivered, ", g.live, " subscribers x ", rate,
                                  " writes/s (vs W x N)"),
                     r.events_per_s_window, "events/s", ceiling, ">=200000");
  bench::PrintFigure(absl::StrCat("feed: write-sent -> event-received p99, ", g.live,
                                  " subscribers x ", rate, " writes/s"),
                     g.latency.p99, "ms", 0, "<=50");
  std::printf("  %-44s p95 above vs %s\n", "reference", kSupabase);
  std::printf("  %-44s %lld KiB idle -> %lld KiB with %d streams live -> peak %lld KiB; "
              "%lld threads\n",
              "pulsesyncd memory (VmRSS)", static_cast<long long>(rss0),
              static_cast<long long>(rss_live), g.live, static_cast<long long>(hwm),
              static_cast<long long>(threads_live));
  PrintCpu(cpu0, cpu1, wall);
  // What the server spends, whatever the bench client (on the same cores)
  // manages to read: all of pulsesyncd's CPU over the run (the writes'
  // ApplyRevisions included) per event delivered.
  const double server_us_per_event =
      g.received > 0 ? 1e6 * (cpu1.server - cpu0.server) / static_cast<double>(g.received) : 0;
  std::printf("  %-44s %.2f us\n", "pulsesyncd CPU per delivered event", server_us_per_event);
  bench::PrintFigure(absl::StrCat("feed: pulsesyncd CPU per delivered event, ", g.live,
                                  " subscribers"),
                     server_us_per_event, "us", 0, "");
  StopServer("s1", server);
  PrintLogProblems("pulsesyncd s1", *server);
  std::fflush(stdout);
  return 0;
}

int Scenario2(const std::string& url, const std::string& dir) {
  int n = absl::GetFlag(FLAGS_idle_streams);
  if (n < 0) n = absl::GetFlag(FLAGS_subscribers);
  std::printf("\n== Scenario 2: memory per idle stream (%d streams, %d channels)\n", n,
              absl::GetFlag(FLAGS_channels));
  PrintDatabaseState();
  auto server = StartServer(url, dir, "s2", SplitFlags(absl::GetFlag(FLAGS_server_flags)));
  if (server == nullptr) return 1;
  const pid_t pid = FindServerPid(dir + "/s2.log");
  if (pid <= 0) {
    std::printf("  !! cannot find the pulsesyncd pid\n");
    return 1;
  }
  RunCounters counters;
  // Warm-up: one stream opened and closed, so that lazily created things
  // (worker connections, the hub's session, gRPC's first call) count in RSS_0.
  {
    SubscriberGroup warm("warm-up", server->address(), 4, 4, 0, &counters, false);
    WaitLive({&warm}, absl::Seconds(30));
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  const int64_t rss0 = StatusKib(pid, "VmRSS");
  const int64_t threads0 = ThreadCount(pid);
  SubscriberGroup group("idle", server->address(), n, absl::GetFlag(FLAGS_channels), 0, &counters,
                        false);
  const bool all = WaitLive({&group}, absl::Seconds(absl::GetFlag(FLAGS_live_timeout_s)));
  const int live = group.Live();
  std::this_thread::sleep_for(std::chrono::milliseconds(1500));  // a checkpoint period passes
  const int64_t rss_n = StatusKib(pid, "VmRSS");
  const int64_t threads_n = ThreadCount(pid);
  group.Shutdown();
  std::this_thread::sleep_for(std::chrono::milliseconds(1000));
  const int64_t rss_after = StatusKib(pid, "VmRSS");
  std::printf("-- Scenario 2 results\n");
  if (!all) std::printf("  !! only %d of %d streams went live\n", live, n);
  std::printf("  %-44s %lld KiB (%lld threads)\n", "pulsesyncd VmRSS, 0 streams",
              static_cast<long long>(rss0), static_cast<long long>(threads0));
  std::printf("  %-44s %lld KiB (%lld threads)\n",
              absl::StrCat("pulsesyncd VmRSS, ", live, " idle streams").c_str(),
              static_cast<long long>(rss_n), static_cast<long long>(threads_n));
  std::printf("  %-44s %.1f KiB per stream   (client side not counted)\n",
              "(RSS_N - RSS_0) / N", live > 0 ? static_cast<double>(rss_n - rss0) / live : 0.0);
  bench::PrintFigure(absl::StrCat("server memory per idle stream, ", live, " streams"),
                     live > 0 ? static_cast<double>(rss_n - rss0) / live : 0.0, "KiB", 0, "<=16");
  std::printf("  %-44s %lld KiB\n", "pulsesyncd VmRSS after the streams closed",
              static_cast<long long>(rss_after));
  StopServer("s2", server);
  PrintLogProblems("pulsesyncd s2", *server);
  std::fflush(stdout);
  return 0;
}

// Rows/s through ApplyRevisions: `writers` threads x `batches` x `batch`.
double ApplyThroughput(const std::string& address, int writers, int batches, int batch,
                       std::string* error) {
  std::atomic<int> ready{0};
  std::atomic<bool> go{false};
  std::atomic<int64_t> applied{0};
  absl::Mutex mu;
  int64_t start = 0;
  std::vector<std::thread> threads;
  for (int w = 0; w < writers; ++w) {
    threads.emplace_back([&, w] {
      auto stub = v1::SyncService::NewStub(MakeChannel(address, 2000 + w));
      const std::string origin = absl::StrCat("apply-bench-", w, "-", NewUuid().substr(0, 8));
      int64_t seq = 0;
      auto one = [&](int n) {
        v1::ApplyRevisionsRequest req;
        for (int i = 0; i < n; ++i) {
          FillRevision(req.add_revisions(), origin, ++seq, 0, 1);
          req.mutable_revisions(i)->set_payload(absl::StrCat(
              R"({"team_id":")", kTeam, R"(","title":"apply )", seq,
              R"(","description":"benchmark row","priority":)", i % 5, "}"));
        }
        grpc::ClientContext ctx;
        ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(60));
        v1::ApplyRevisionsResponse resp;
        grpc::Status s = stub->ApplyRevisions(&ctx, req, &resp);
        int64_t ok = 0;
        for (const auto& r : resp.results()) ok += r.outcome() == v1::RevisionResult::OUTCOME_APPLIED;
        if (!s.ok() || ok != n) {
          absl::MutexLock lock(&mu);
          if (error->empty()) {
            *error = s.ok() ? absl::StrCat(n - ok, " revisions not applied")
                            : absl::StrCat(s.error_code(), ": ", s.error_message());
          }
        }
        return ok;
      };
      one(batch);  // warm-up: connection, worker session, prepared statements
      ready++;
      while (!go.load()) std::this_thread::yield();
      int64_t mine = 0;
      for (int b = 0; b < batches; ++b) mine += one(batch);
      applied += mine;
    });
  }
  testing::WaitFor([&] { return ready.load() == writers; }, absl::Seconds(60));
  start = NowNs();
  go.store(true);
  for (auto& t : threads) t.join();
  return applied.load() / SecondsSince(start);
}

int Scenario3(const std::string& url, const std::string& dir) {
  const int writers = absl::GetFlag(FLAGS_apply_writers), batches = absl::GetFlag(FLAGS_apply_batches),
            batch = absl::GetFlag(FLAGS_apply_batch), rounds = absl::GetFlag(FLAGS_apply_rounds);
  std::printf("\n== Scenario 3: NOTIFY's cost: (b) delivery latency with notify on/off, then "
              "(a) ApplyRevisions throughput, %d writers x %d batches x %d revisions, notify "
              "on/off alternating, %d rounds\n",
              writers, batches, batch, rounds);
  std::fflush(stdout);
  // (b) delivery latency: writes through server A; subscribers on A (woken
  // locally after each apply, whatever the flags) and on replica B (woken by
  // A's NOTIFY, or by its own poll).
  const int subs = absl::GetFlag(FLAGS_s3_subscribers), rate = absl::GetFlag(FLAGS_s3_rate),
            seconds = absl::GetFlag(FLAGS_s3_seconds);
  std::printf("   (b) delivery latency: %d writes/s for %d s through replica A; %d subscribers on "
              "A and %d on replica B\n",
              rate, seconds, subs, subs);
  std::fflush(stdout);
  PrintDatabaseState();
  struct Config {
    bool notify;
    int poll_ms;
  };
  std::vector<Config> configs = {{true, 500}};
  for (const std::string& p : SplitFlags(absl::GetFlag(FLAGS_s3_poll_ms))) {
    configs.push_back({false, std::atoi(p.c_str())});
  }
  struct Row {
    Config c;
    FanoutResult r;
  };
  std::vector<Row> rows;
  for (const Config& c : configs) {
    const std::vector<std::string> flags = {absl::StrCat("--feed_notify=", c.notify),
                                            absl::StrCat("--feed_poll_ms=", c.poll_ms)};
    const std::string tag = absl::StrCat(c.notify ? "notify" : "poll", c.poll_ms);
    auto a = StartServer(url, dir, "s3b-A-" + tag, flags);
    auto b = StartServer(url, dir, "s3b-B-" + tag, flags);
    if (a == nullptr || b == nullptr) return 1;
    FanoutResult r = RunFanout(a->address(),
                               {{"A (writer's server)", a->address(), subs},
                                {"B (other replica)", b->address(), subs}},
                               rate, seconds, false);
    Progress(absl::StrFormat("notify=%s poll=%dms: writes %.0f/s (ApplyRevisions %s), A %s, B %s",
                             c.notify ? "true " : "false", c.poll_ms,
                             r.writes.applied / std::max(r.writes.seconds, 1e-9),
                             Format(r.call_latency), Format(r.groups[0].latency),
                             Format(r.groups[1].latency)));
    for (const GroupResult& g : r.groups) {
      if (g.lost || g.duplicates || g.ended_early || g.live != g.subscribers) PrintGroup(g, 0);
    }
    rows.push_back({c, std::move(r)});
    StopServer("A", a);
    StopServer("B", b);
    PrintLogProblems("pulsesyncd s3b-A-" + tag, *a);
    PrintLogProblems("pulsesyncd s3b-B-" + tag, *b);
  }

  PrintDatabaseState();
  std::printf("   (a) ApplyRevisions throughput\n");
  std::vector<double> on, off;
  int run = 0;
  for (int round = 0; round < rounds; ++round) {
    for (bool notify : {true, false}) {
      const std::string name = absl::StrCat("s3a-", run++, notify ? "-notify" : "-nonotify");
      auto server = StartServer(url, dir, name, {absl::StrCat("--feed_notify=", notify)});
      if (server == nullptr) return 1;
      std::string error;
      const double rows = ApplyThroughput(server->address(), writers, batches, batch, &error);
      Progress(absl::StrFormat("round %d notify=%s: %.0f rows/s%s", round + 1,
                               notify ? "true " : "false", rows,
                               error.empty() ? "" : absl::StrCat("  !! ", error)));
      (notify ? on : off).push_back(rows);
      StopServer(name, server);
      PrintLogProblems("pulsesyncd " + name, *server);
    }
  }
  const double m_on = bench::Median(on), m_off = bench::Median(off);

  std::printf("-- Scenario 3 results\n");
  std::printf("  (a) ApplyRevisions throughput through gRPC (rows/s):\n");
  std::printf("  %-44s %10.0f rows/s  (runs: %s)\n", "--feed_notify=true (NOTIFY after each batch)",
              m_on, Runs(on).c_str());
  std::printf("  %-44s %10.0f rows/s  (runs: %s)\n", "--feed_notify=false", m_off,
              Runs(off).c_str());
  std::printf("  %-44s %+9.1f%%   (median on vs median off; negative = NOTIFY costs)\n",
              "NOTIFY's effect on throughput", m_off > 0 ? 100 * (m_on - m_off) / m_off : 0.0);
  std::printf("  (b) write-sent -> event-received latency, %d writes/s:\n", rate);
  std::printf("  %-26s %-52s %s\n", "config", "A: subscribers on the writer's server",
              "B: subscribers on another replica");
  for (const Row& row : rows) {
    const auto& ga = row.r.groups[0];
    const auto& gb = row.r.groups[1];
    auto cell = [](const GroupResult& g) {
      return absl::StrFormat("p50 %7.1f p99 %7.1f max %7.1f ms%s", g.latency.p50, g.latency.p99,
                             g.latency.max, g.lost ? absl::StrCat(" LOST ", g.lost) : "");
    };
    std::printf("  %-26s %-52s %s\n",
                absl::StrFormat("notify=%s poll=%dms", row.c.notify ? "on " : "off", row.c.poll_ms)
                    .c_str(),
                cell(ga).c_str(), cell(gb).c_str());
  }
  std::printf("  (latency includes the ApplyRevisions call itself; its p50 per config: %s ms)\n",
              absl::StrJoin(rows, ", ", [](std::string* o, const Row& row) {
                absl::StrAppend(o, absl::StrFormat("%.1f", row.r.call_latency.p50));
              }).c_str());
  std::printf("  (A is woken in-process after each apply, so only B shows what NOTIFY buys.)\n");
  std::fflush(stdout);
  return 0;
}

int Scenario4(const std::string& url, const std::string& dir) {
  const int rows = std::max(1, absl::GetFlag(FLAGS_txn_rows));
  const int followers = std::max(1, absl::GetFlag(FLAGS_txn_followers));
  const int rounds = std::max(1, absl::GetFlag(FLAGS_txn_rounds));
  std::printf("\n== Scenario 4: a %d-row SQL transaction -> %d follower(s), %d rounds\n", rows,
              followers, rounds);
  PrintDatabaseState();
  auto server = StartServer(url, dir, "s4", SplitFlags(absl::GetFlag(FLAGS_server_flags)));
  if (server == nullptr) return 1;
  RunCounters counters;
  const size_t total = static_cast<size_t>(rows) * rounds;
  SubscriberGroup group("s4", server->address(), followers, std::min(followers, 4), total,
                        &counters, false);
  if (!WaitLive({&group}, absl::Seconds(absl::GetFlag(FLAGS_live_timeout_s)))) {
    std::printf("  !! not every follower went live\n");
    return 1;
  }
  std::vector<double> all_ms, first_ms, commit_ms;
  for (int round = 0; round < rounds; ++round) {
    counters.first_event_ns.store(0);
    const int64_t sent = NowNs();
    const absl::Status st = g_db->Execute(absl::StrCat(
        "INSERT INTO tasks (id, team_id, title, description, priority) "
        "SELECT gen_random_uuid(), '", kTeam, "', '", kMarker, "' || (", round * rows,
        " + i) || ':", sent, "', 'feed benchmark row', i % 5 FROM generate_series(0, ",
        rows - 1, ") AS i"));
    const int64_t committed = NowNs();
    if (!st.ok()) {
      std::printf("  !! the transaction failed: %s\n", st.ToString().c_str());
      return 1;
    }
    const int64_t expected = static_cast<int64_t>(round + 1) * rows * followers;
    const bool all = testing::WaitFor([&] { return counters.events.load() >= expected; },
                                      absl::Seconds(absl::GetFlag(FLAGS_drain_timeout_s)),
                                      absl::Milliseconds(1));
    if (!all) {
      std::printf("  !! round %d: %lld of %lld events within %d s\n", round + 1,
                  static_cast<long long>(counters.events.load() - expected +
                                         static_cast<int64_t>(rows) * followers),
                  static_cast<long long>(static_cast<int64_t>(rows) * followers),
                  absl::GetFlag(FLAGS_drain_timeout_s));
      return 1;
    }
    commit_ms.push_back((committed - sent) / 1e6);
    first_ms.push_back((counters.first_event_ns.load() - committed) / 1e6);
    all_ms.push_back((counters.last_event_ns.load() - committed) / 1e6);
    Progress(absl::StrFormat("round %d: transaction %.0f ms; after its commit: first row at a "
                             "follower %.0f ms, all %d rows at all %d followers %.0f ms",
                             round + 1, commit_ms.back(), first_ms.back(), rows, followers,
                             all_ms.back()));
  }
  group.Shutdown();
  StopServer("s4", server);
  PrintLogProblems("pulsesyncd s4", *server);

  // Ceiling: the last transaction's change-log rows, read by one SELECT.
  std::vector<double> read_ms;
  try {
    pqxx::connection conn(url);
    for (int i = 0; i < 3; ++i) {
      pqxx::nontransaction tx(conn);
      const int64_t t0 = NowNs();
      const pqxx::result r = tx.exec(absl::StrCat(
          "SELECT position, schema_name, table_name, object_type, op, object_id::text, version, "
          "new_row::text, old_row::text, origin_id, revision_id::text, changed_at, team_id::text "
          "FROM pulsesync.change_log ORDER BY position DESC LIMIT ", rows));
      if (r.size() != static_cast<size_t>(rows)) {
        std::printf("  !! ceiling: read %zu rows, not %d; sample dropped\n", r.size(), rows);
        continue;
      }
      read_ms.push_back((NowNs() - t0) / 1e6);
    }
  } catch (const std::exception& e) {
    std::printf("  !! ceiling: %s\n", e.what());
  }
  const double worst = *std::max_element(all_ms.begin(), all_ms.end());
  std::printf("-- Scenario 4 results\n");
  std::printf("  %-44s %.0f ms median (runs: %s)\n", "the transaction itself",
              bench::Median(commit_ms), Runs(commit_ms).c_str());
  std::printf("  %-44s %.0f ms median (runs: %s)\n", "commit -> first row at a follower",
              bench::Median(first_ms), Runs(first_ms).c_str());
  std::printf("  %-44s %.0f ms median, %.0f ms worst (runs: %s)\n",
              "commit -> all rows at every follower", bench::Median(all_ms), worst,
              Runs(all_ms).c_str());
  std::printf("  %-44s %.0f ms median\n", "ceiling: the rows read by one SELECT", bench::Median(read_ms));
  std::printf("  %-44s Rocicorp Zero 1.9, a 10,000-row transaction at a client: 3.8-4.9 s\n",
              "reference");
  bench::PrintFigure(absl::StrCat("feed: a ", rows, "-row SQL transaction, commit -> all at ",
                                  followers == 1 ? "a follower" : absl::StrCat(followers, " followers"),
                                  ", worst of ", rounds, " (vs one SELECT of its log rows)"),
                     worst / 1000, "s", bench::Median(read_ms) / 1000, "<=0.5");
  std::fflush(stdout);
  return 0;
}

int Main() {
  setvbuf(stdout, nullptr, _IOLBF, 0);
  if (testing::AdminDatabaseUrl().empty()) {
    std::fprintf(stderr, "set PULSESYNC_TEST_DATABASE_URL to a PostgreSQL superuser URL\n");
    return 2;
  }
  const std::string scenarios = absl::GetFlag(FLAGS_scenarios);
  auto wanted = [&](char c) { return scenarios.find(c) != std::string::npos; };
  std::printf("feed_bench: pulsesyncd %s, PostgreSQL at %s; all traffic on 127.0.0.1\n",
              testing::PulsesyncdPath().c_str(), testing::AdminDatabaseUrl().c_str());
  std::printf("  NOTE: %u cores, shared by this benchmark client (all subscriber streams and "
              "writers), pulsesyncd and PostgreSQL\n",
              std::thread::hardware_concurrency());
  auto db = testing::TestDatabase::Create();
  if (!db.ok()) {
    std::fprintf(stderr, "%s\n", db.status().ToString().c_str());
    return 1;
  }
  const absl::Status team = (*db)->Execute(
      absl::StrCat("INSERT INTO teams (id, name) VALUES ('", kTeam, "', 'feed bench')"));
  if (!team.ok()) {
    std::fprintf(stderr, "%s\n", team.ToString().c_str());
    return 1;
  }
  g_db = db->get();
  const std::string dir = testing::MakeTempDir("feed-bench");
  std::printf("  database %s; server logs in %s\n", (*db)->name().c_str(), dir.c_str());
  std::fflush(stdout);
  int rc = 0;
  if (wanted('1')) rc |= Scenario1((*db)->url(), dir);
  if (wanted('2')) rc |= Scenario2((*db)->url(), dir);
  if (wanted('3')) rc |= Scenario3((*db)->url(), dir);
  if (wanted('4')) rc |= Scenario4((*db)->url(), dir);
  std::printf("\nreference: %s\n", kSupabase);
  g_db = nullptr;
  return rc;
}

}  // namespace
}  // namespace pulsesync

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  return pulsesync::Main();
}

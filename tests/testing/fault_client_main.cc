// pulsesync_fault_client: a client process for fault tests, to be killed.
//
// The real client library (LocalStore, SyncEngine, GrpcTransport) in a
// process of its own, so that a test can SIGKILL it at a chosen point and
// then check what its SQLite file holds, or measure its peak memory.
//
//   pulsesync_fault_client write --db=PATH --team=ID --count=N [--update_every=K]
//       N local task creations in team ID (one transaction each); every
//       K-th one also updates the task created before it. Prints "wrote N".
//   pulsesync_fault_client sync --db=PATH --server=HOST:PORT [--user=ID]
//       [--batch=B] [--page=L] [--crash_call=N --crash_when=before|after]
//       [--progress]
//       Push, then Pull (SyncEngine::Sync). Calls to the server
//       (ApplyRevisions and PullChanges, counted together from 1) go
//       through a transport that kills this process with SIGKILL before
//       the N-th call is sent (`before`) or after its answer arrived and
//       before the engine sees it (`after`: a lost answer). --progress
//       prints "progress push|pull DONE TOTAL" per batch or page. At the
//       end prints "pushed=P pulled=Q batches=B pages=G peak_rss_kb=K".
// Exit status: 0 done, 1 error (the status on stderr), 2 usage.
#include <signal.h>
#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <iostream>
#include <map>
#include <memory>
#include <string>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "client/core/sync_engine.h"
#include "client/core/transport.h"
#include "client/store/local_store.h"
#include "client/transport/grpc_transport.h"
#include "common/json.h"

namespace pulsesync {
namespace {

// Kills the process at the chosen call (see the file comment).
class CrashingTransport final : public Transport {
 public:
  CrashingTransport(Transport* inner, int crash_call, bool after)
      : inner_(inner), crash_call_(crash_call), after_(after) {}

  // The call, with the kill before or after it when it is the chosen one.
  template <typename F>
  auto Call(F call) -> decltype(call()) {
    const bool here = ++calls_ == crash_call_;
    if (here && !after_) raise(SIGKILL);
    auto result = call();
    if (here && after_) raise(SIGKILL);
    return result;
  }

  absl::StatusOr<v1::ApplyRevisionsResponse> ApplyRevisions(
      const v1::ApplyRevisionsRequest& request) override {
    return Call([&] { return inner_->ApplyRevisions(request); });
  }
  absl::StatusOr<v1::PullChangesResponse> PullChanges(
      const v1::PullChangesRequest& request) override {
    return Call([&] { return inner_->PullChanges(request); });
  }
  absl::StatusOr<v1::GetServerInfoResponse> GetServerInfo(
      const v1::GetServerInfoRequest& request) override {
    return inner_->GetServerInfo(request);
  }
  absl::StatusOr<std::unique_ptr<ChangeStream>> StreamChanges(
      const v1::StreamChangesRequest& request) override {
    return inner_->StreamChanges(request);
  }
  absl::StatusOr<std::unique_ptr<SnapshotStream>> Snapshot(
      const v1::SnapshotRequest& request) override {
    return inner_->Snapshot(request);
  }

 private:

  Transport* const inner_;
  const int crash_call_;
  const bool after_;
  int calls_ = 0;
};

int64_t PeakRssKb() {
  std::ifstream in("/proc/self/status");
  std::string line;
  while (std::getline(in, line)) {
    if (absl::StartsWith(line, "VmHWM:")) {
      int64_t kb = 0;
      std::string digits;
      for (char c : line) {
        if (c >= '0' && c <= '9') digits.push_back(c);
      }
      if (absl::SimpleAtoi(digits, &kb)) return kb;
    }
  }
  return -1;
}

int Fail(const absl::Status& status) {
  std::cerr << "error: " << status << "\n";
  return 1;
}

int Write(const std::map<std::string, std::string>& flags) {
  int64_t count = 0, update_every = 0;
  if (!absl::SimpleAtoi(flags.count("count") ? flags.at("count") : "", &count)) return 2;
  if (flags.count("update_every") && !absl::SimpleAtoi(flags.at("update_every"), &update_every)) {
    return 2;
  }
  absl::StatusOr<std::unique_ptr<LocalStore>> store = LocalStore::Open(flags.at("db"));
  if (!store.ok()) return Fail(store.status());
  std::string previous;
  for (int64_t i = 0; i < count; ++i) {
    JsonValue fields = JsonValue::Object();
    fields.Set("team_id", JsonValue::String(flags.at("team")));
    fields.Set("title", JsonValue::String(absl::StrCat("task ", i)));
    absl::StatusOr<std::string> id = (*store)->Create("task", fields);
    if (!id.ok()) return Fail(id.status());
    if (update_every > 0 && i % update_every == update_every - 1 && !previous.empty()) {
      JsonValue update = JsonValue::Object();
      update.Set("status", JsonValue::String("done"));
      if (absl::Status st = (*store)->Update("task", previous, update); !st.ok()) return Fail(st);
    }
    previous = *id;
  }
  std::cout << "wrote " << count << std::endl;
  return 0;
}

int Sync(const std::map<std::string, std::string>& flags) {
  absl::StatusOr<std::unique_ptr<LocalStore>> store = LocalStore::Open(flags.at("db"));
  if (!store.ok()) return Fail(store.status());
  GrpcTransportOptions topts;
  if (flags.count("user")) topts.user_id = flags.at("user");
  topts.deadline = absl::Seconds(30);
  std::unique_ptr<GrpcTransport> grpc = GrpcTransport::Create(flags.at("server"), topts);
  int crash_call = 0;
  if (flags.count("crash_call") && !absl::SimpleAtoi(flags.at("crash_call"), &crash_call)) {
    return 2;
  }
  const bool after = flags.count("crash_when") && flags.at("crash_when") == "after";
  CrashingTransport transport(grpc.get(), crash_call, after);
  SyncEngineOptions options;
  if (flags.count("batch") && !absl::SimpleAtoi(flags.at("batch"), &options.push_batch_size)) {
    return 2;
  }
  if (flags.count("page") && !absl::SimpleAtoi(flags.at("page"), &options.pull_page_limit)) {
    return 2;
  }
  if (flags.count("progress")) {
    options.on_progress = [](const SyncProgress& p) {
      std::cout << "progress " << (p.phase == SyncProgress::Phase::kPush ? "push" : "pull") << " "
                << p.done << " " << p.total << "\n";
    };
  }
  SyncEngine engine(store->get(), &transport, options);
  absl::StatusOr<SyncSummary> summary = engine.Sync();
  if (!summary.ok()) return Fail(summary.status());
  std::cout << "pushed=" << summary->push.pushed << " pulled=" << summary->pull.pulled
            << " batches=" << summary->push.batches << " pages=" << summary->pull.pages
            << " peak_rss_kb=" << PeakRssKb() << std::endl;
  return 0;
}

}  // namespace
}  // namespace pulsesync

int main(int argc, char** argv) {
  if (argc < 2) return 2;
  const std::string command = argv[1];
  std::map<std::string, std::string> flags;
  for (int i = 2; i < argc; ++i) {
    std::string a = argv[i];
    if (!absl::StartsWith(a, "--")) return 2;
    const size_t eq = a.find('=');
    flags[a.substr(2, eq == std::string::npos ? std::string::npos : eq - 2)] =
        eq == std::string::npos ? "" : a.substr(eq + 1);
  }
  if (!flags.count("db")) return 2;
  if (command == "write" && flags.count("team")) return pulsesync::Write(flags);
  if (command == "sync" && flags.count("server")) return pulsesync::Sync(flags);
  return 2;
}

// The real `pulsesync` binary against an in-process fake gRPC server:
// watch and sync --follow stop cleanly, promptly, on SIGTERM and SIGINT.
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <grpcpp/grpcpp.h>

#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "gtest/gtest.h"
#include "pulsesync/v1/sync.grpc.pb.h"

namespace pulsesync {
namespace {

// Answers everything; a stream sends one change and then stays open until
// the client goes away.
class FeedService final : public v1::SyncService::Service {
 public:
  grpc::Status ApplyRevisions(grpc::ServerContext*, const v1::ApplyRevisionsRequest* request,
                              v1::ApplyRevisionsResponse* response) override {
    for (const v1::Revision& r : request->revisions()) {
      v1::RevisionResult* res = response->add_results();
      res->set_revision_id(r.id());
      res->set_outcome(v1::RevisionResult::OUTCOME_APPLIED);
      res->set_version(1);
    }
    return grpc::Status::OK;
  }
  grpc::Status GetServerInfo(grpc::ServerContext*, const v1::GetServerInfoRequest*,
                             v1::GetServerInfoResponse* response) override {
    response->set_protocol_version(1);
    return grpc::Status::OK;
  }
  grpc::Status Snapshot(grpc::ServerContext*, const v1::SnapshotRequest*,
                        grpc::ServerWriter<v1::SnapshotResponse>* writer) override {
    v1::SnapshotResponse cursor;
    cursor.set_cursor("snap");
    writer->Write(cursor);
    return grpc::Status::OK;
  }
  grpc::Status StreamChanges(grpc::ServerContext* context, const v1::StreamChangesRequest*,
                             grpc::ServerWriter<v1::StreamChangesResponse>* writer) override {
    {
      absl::MutexLock lock(&mu_);
      auto it = context->client_metadata().find("x-pulsesync-user-id");
      if (it != context->client_metadata().end()) {
        user_id_ = std::string(it->second.data(), it->second.size());
      }
    }
    v1::StreamChangesResponse r;
    v1::Change* c = r.add_changes();
    c->set_table("tasks");
    c->set_object_type("task");
    c->set_event(v1::EVENT_TYPE_INSERT);
    c->set_object_id("22222222-2222-4222-8222-222222222222");
    c->set_version(1);
    c->set_new_record(
        R"({"id":"22222222-2222-4222-8222-222222222222","team_id":"11111111-1111-4111-8111-111111111111","title":"hi","version":1})");
    c->set_cursor("k1");
    writer->Write(r);
    const absl::Time deadline = absl::Now() + absl::Seconds(60);
    while (!context->IsCancelled() && absl::Now() < deadline) absl::SleepFor(absl::Milliseconds(5));
    return grpc::Status::OK;
  }
  std::string user_id() {
    absl::MutexLock lock(&mu_);
    return user_id_;
  }

 private:
  absl::Mutex mu_;
  std::string user_id_;
};

// A child process with stdout (and stderr) on a pipe.
class Child {
 public:
  explicit Child(const std::vector<std::string>& args) {
    int fds[2];
    EXPECT_EQ(pipe(fds), 0);
    pid_ = fork();
    if (pid_ == 0) {
      dup2(fds[1], 1);
      dup2(fds[1], 2);
      close(fds[0]);
      close(fds[1]);
      std::vector<char*> argv;
      for (const std::string& a : args) argv.push_back(const_cast<char*>(a.c_str()));
      argv.push_back(nullptr);
      execv(argv[0], argv.data());
      _exit(127);
    }
    close(fds[1]);
    out_ = fds[0];
  }
  ~Child() {
    if (pid_ > 0 && exit_code_ < 0) {
      kill(pid_, SIGKILL);
      waitpid(pid_, nullptr, 0);
    }
    if (out_ >= 0) close(out_);
  }
  // Reads until `text` appears in the output or `timeout` passes.
  bool WaitForOutput(const std::string& text, absl::Duration timeout = absl::Seconds(20)) {
    const absl::Time deadline = absl::Now() + timeout;
    while (!absl::StrContains(output_, text)) {
      const absl::Duration left = deadline - absl::Now();
      if (left <= absl::ZeroDuration()) return false;
      pollfd p{out_, POLLIN, 0};
      if (poll(&p, 1, static_cast<int>(absl::ToInt64Milliseconds(left)) + 1) <= 0) continue;
      char buf[4096];
      const ssize_t n = read(out_, buf, sizeof buf);
      if (n <= 0) return absl::StrContains(output_, text);
      output_.append(buf, static_cast<size_t>(n));
    }
    return true;
  }
  // The exit code (128 + signal if killed), or -1 if still running after
  // `timeout`.
  int Wait(absl::Duration timeout) {
    const absl::Time deadline = absl::Now() + timeout;
    while (absl::Now() < deadline) {
      int status = 0;
      if (waitpid(pid_, &status, WNOHANG) == pid_) {
        exit_code_ = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
        return exit_code_;
      }
      absl::SleepFor(absl::Milliseconds(5));
    }
    return -1;
  }
  pid_t pid() const { return pid_; }
  const std::string& output() const { return output_; }

 private:
  pid_t pid_ = -1;
  int out_ = -1;
  int exit_code_ = -1;
  std::string output_;
};

class CliProcessTest : public ::testing::Test {
 protected:
  void SetUp() override {
    grpc::ServerBuilder builder;
    builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port_);
    builder.RegisterService(&service_);
    server_ = builder.BuildAndStart();
    ASSERT_NE(server_, nullptr);
    static int counter = 0;
    db_ = ::testing::TempDir() + "/cli_process_test_" + std::to_string(getpid()) + "_" +
          std::to_string(counter++) + ".db";
    Remove();
  }
  void TearDown() override {
    server_->Shutdown(std::chrono::system_clock::now());
    Remove();
  }
  void Remove() {
    for (const char* s : {"", "-wal", "-shm"}) std::remove((db_ + s).c_str());
  }
  std::vector<std::string> Command(std::vector<std::string> args) {
    std::vector<std::string> argv = {PULSESYNC_CLI_PATH, "--db=" + db_,
                                     "--server=127.0.0.1:" + std::to_string(port_)};
    argv.insert(argv.end(), args.begin(), args.end());
    return argv;
  }

  FeedService service_;
  std::unique_ptr<grpc::Server> server_;
  int port_ = 0;
  std::string db_;
};

TEST_F(CliProcessTest, WatchExitsZeroPromptlyOnSigterm) {
  Child child(Command({"--user=u-9", "watch"}));
  ASSERT_TRUE(child.WaitForOutput("\"cursor\":\"k1\"}\n")) << child.output();
  EXPECT_EQ(service_.user_id(), "u-9");
  const absl::Time sent = absl::Now();
  ASSERT_EQ(kill(child.pid(), SIGTERM), 0);
  EXPECT_EQ(child.Wait(absl::Seconds(10)), 0) << child.output();
  EXPECT_LT(absl::Now() - sent, absl::Seconds(1));
  EXPECT_TRUE(absl::StartsWith(child.output(), R"({"event":"INSERT","table":"tasks")"))
      << child.output();
}

TEST_F(CliProcessTest, WatchExitsZeroOnSigint) {
  Child child(Command({"watch"}));
  ASSERT_TRUE(child.WaitForOutput("\n")) << child.output();
  ASSERT_EQ(kill(child.pid(), SIGINT), 0);
  EXPECT_EQ(child.Wait(absl::Seconds(10)), 0) << child.output();
}

TEST_F(CliProcessTest, SyncFollowExitsZeroPromptlyOnSigterm) {
  {
    Child init(Command({"init"}));
    ASSERT_EQ(init.Wait(absl::Seconds(20)), 0);
  }
  Child child(Command({"sync", "--follow"}));
  ASSERT_TRUE(child.WaitForOutput("applied INSERT task 22222222-2222-4222-8222-222222222222")) << child.output();
  const absl::Time sent = absl::Now();
  ASSERT_EQ(kill(child.pid(), SIGTERM), 0);
  EXPECT_EQ(child.Wait(absl::Seconds(10)), 0) << child.output();
  EXPECT_LT(absl::Now() - sent, absl::Seconds(1));
  ASSERT_TRUE(child.WaitForOutput("disconnected: stopped\n")) << child.output();
  EXPECT_TRUE(absl::StartsWith(child.output(),
                               "connected to 127.0.0.1:" + std::to_string(port_) +
                                   "\nsnapshot: applied 0, skipped 0, removed 0, kept 0\n"))
      << child.output();
}

}  // namespace
}  // namespace pulsesync

#include "client/cli/cli.h"

#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <memory>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include <streambuf>
#include <thread>

#include "absl/strings/str_split.h"
#include "absl/synchronization/mutex.h"
#include "client/core/fake_feed_transport.h"
#include "absl/strings/match.h"
#include "client/store/local_store.h"
#include "client/store/payload_crypto.h"
#include "client/store/sqlite.h"
#include "common/brotli_codec.h"
#include "common/uuid.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace pulsesync {
namespace {

const ColumnDef& Column(const std::string& type, const std::string& name) {
  const ColumnDef* c = FindObjectType(type)->FindColumn(name);
  EXPECT_NE(c, nullptr);
  return *c;
}

TEST(TypeFieldValueTest, TypesValuesByColumn) {
  EXPECT_EQ(TypeFieldValue(Column("task", "priority"), "2")->Serialize(), "2");
  EXPECT_EQ(TypeFieldValue(Column("task", "priority"), "-7")->Serialize(), "-7");
  EXPECT_EQ(TypeFieldValue(Column("task", "title"), "2")->Serialize(), "\"2\"");
  EXPECT_EQ(TypeFieldValue(Column("task", "title"), "true")->Serialize(), "\"true\"");
  EXPECT_EQ(TypeFieldValue(Column("task", "title"), "")->Serialize(), "\"\"");
  EXPECT_EQ(TypeFieldValue(Column("task", "title"), "a=b c")->Serialize(), "\"a=b c\"");
  EXPECT_TRUE(TypeFieldValue(Column("task", "title"), "null")->is_null());
  EXPECT_TRUE(TypeFieldValue(Column("task", "priority"), "null")->is_null());
  EXPECT_EQ(TypeFieldValue(Column("team", "deleted"), "true")->Serialize(), "true");
  EXPECT_EQ(TypeFieldValue(Column("team", "deleted"), "false")->Serialize(), "false");
}

TEST(TypeFieldValueTest, RefusesValuesThatDoNotFitTheColumn) {
  absl::StatusOr<JsonValue> v = TypeFieldValue(Column("task", "priority"), "high");
  EXPECT_EQ(v.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(v.status().message(), "field \"priority\" expects an integer, got \"high\"");
  EXPECT_FALSE(TypeFieldValue(Column("task", "priority"), "1.5").ok());
  EXPECT_FALSE(TypeFieldValue(Column("team", "deleted"), "yes").ok());
}

TEST(ParseFieldArgsTest, MixesTypedAndRawJsonValues) {
  absl::StatusOr<JsonValue> f = ParseFieldArgs(
      *FindObjectType("task"), {"title=Write docs", "priority=3", "description:=\"null\"",
                                "due_at=null", "status:=\"done\""});
  ASSERT_TRUE(f.ok()) << f.status();
  EXPECT_EQ(f->Serialize(),
            R"({"title":"Write docs","priority":3,"description":"null","due_at":null,)"
            R"("status":"done"})");
}

TEST(ParseFieldArgsTest, RefusesBadArguments) {
  const ObjectTypeDef& task = *FindObjectType("task");
  EXPECT_EQ(ParseFieldArgs(task, {"colour=red"}).status().message(),
            "unknown field \"colour\" for object type \"task\"");
  EXPECT_EQ(ParseFieldArgs(task, {"title"}).status().message(),
            "expected FIELD=VALUE or FIELD:=JSON, got \"title\"");
  EXPECT_FALSE(ParseFieldArgs(task, {"=x"}).ok());
  EXPECT_FALSE(ParseFieldArgs(task, {":=1"}).ok());
  EXPECT_EQ(ParseFieldArgs(task, {"title=a", "title=b"}).status().message(),
            "field \"title\" given twice");
  EXPECT_NE(ParseFieldArgs(task, {"priority:={"}).status().message().find("field \"priority\""),
            std::string::npos);
}

// A server that applies everything and has no changes to send, or is down.
// `compacted`: it answers re-snapshot to any other cursor than its latest,
// and its snapshot holds `snapshot_teams` (id, name; all at version 1).
class FakeServer {
 public:
  static constexpr char kLatest[] = "cursor-after-everything-0123456789";
  bool down = false;
  bool compacted = false;
  std::vector<std::pair<std::string, std::string>> snapshot_teams;
  int apply_calls = 0;
  std::string last_address, last_token;
  std::vector<std::string> payloads;  // of every revision received

  class Conn : public Transport {
   public:
    explicit Conn(FakeServer* s) : s_(s) {}
    absl::StatusOr<v1::ApplyRevisionsResponse> ApplyRevisions(
        const v1::ApplyRevisionsRequest& request) override {
      if (s_->down) return absl::UnavailableError("connection refused");
      ++s_->apply_calls;
      v1::RevisionBatch batch;
      if (request.encoding() == v1::PAYLOAD_ENCODING_IDENTITY) {
        *batch.mutable_revisions() = request.revisions();
      } else {
        absl::StatusOr<std::string> bytes = BrotliDecompress(request.compressed_batch(), 1 << 24);
        EXPECT_TRUE(bytes.ok() && batch.ParseFromString(*bytes));
      }
      v1::ApplyRevisionsResponse response;
      for (const v1::Revision& r : batch.revisions()) {
        s_->payloads.push_back(r.payload());
        v1::RevisionResult* res = response.add_results();
        res->set_revision_id(r.id());
        res->set_outcome(v1::RevisionResult::OUTCOME_APPLIED);
        res->set_version(1);
      }
      return response;
    }
    absl::StatusOr<v1::PullChangesResponse> PullChanges(
        const v1::PullChangesRequest& request) override {
      if (s_->down) return absl::UnavailableError("connection refused");
      if (s_->compacted && request.cursor() != kLatest) {
        return absl::FailedPreconditionError("re-snapshot: the change log was compacted");
      }
      v1::PullChangesResponse r;
      r.set_next_cursor(kLatest);
      return r;
    }
    absl::StatusOr<std::unique_ptr<SnapshotStream>> Snapshot(
        const v1::SnapshotRequest&) override {
      auto call = std::make_shared<testing::SnapshotCall>();
      v1::SnapshotResponse rows;
      rows.mutable_rows()->set_table("teams");
      for (const auto& [id, name] : s_->snapshot_teams) {
        rows.mutable_rows()->add_records(R"({"id":")" + id + R"(","name":")" + name +
                                         R"(","version":1})");
      }
      call->Send(rows);
      v1::SnapshotResponse cursor;
      cursor.set_cursor(kLatest);
      call->Send(cursor);
      call->End(absl::OkStatus());
      return std::unique_ptr<SnapshotStream>(
          new testing::ScriptedStream<v1::SnapshotResponse>(call));
    }
    absl::StatusOr<v1::GetServerInfoResponse> GetServerInfo(
        const v1::GetServerInfoRequest&) override {
      return v1::GetServerInfoResponse();
    }

   private:
    FakeServer* s_;
  };
};

class CliTest : public ::testing::Test {
 protected:
  void SetUp() override {
    static int counter = 0;
    db_ = ::testing::TempDir() + "/cli_test_" + std::to_string(getpid()) + "_" +
          std::to_string(counter++) + ".db";
    Remove();
    env_.db_env = db_;
    env_.make_transport = [this](const TransportConfig& config) {
      server_.last_address = config.address;
      server_.last_token = config.token;
      return std::unique_ptr<Transport>(new FakeServer::Conn(&server_));
    };
  }
  void TearDown() override { Remove(); }
  void Remove() {
    for (const char* s : {"", "-wal", "-shm"}) std::remove((db_ + s).c_str());
  }

  struct Result {
    int code;
    std::string out, err;
  };
  Result Run(std::vector<std::string> args) {
    std::ostringstream out, err;
    int code = RunCli(args, env_, out, err);
    return {code, out.str(), err.str()};
  }
  std::string MustRun(std::vector<std::string> args) {
    Result r = Run(args);
    EXPECT_EQ(r.code, 0) << r.err;
    return r.out;
  }
  static std::string Line(const std::string& out) {
    EXPECT_FALSE(out.empty());
    EXPECT_EQ(out.back(), '\n');
    return out.substr(0, out.size() - 1);
  }

  std::string db_;
  CliEnvironment env_;
  FakeServer server_;
};

TEST_F(CliTest, InitPrintsTheOriginAndIsIdempotent) {
  const std::string origin = Line(MustRun({"init"}));
  EXPECT_TRUE(IsUuid(origin));
  EXPECT_EQ(Line(MustRun({"init"})), origin);
  EXPECT_EQ(Line(MustRun({"--db=" + db_, "init"})), origin);
}

TEST_F(CliTest, CommandsOtherThanInitNeedAnExistingDatabase) {
  Result r = Run({"create", "team", "name=Core"});
  EXPECT_EQ(r.code, 1);
  EXPECT_EQ(r.err, "error: database " + db_ + " does not exist; run `pulsesync init` first\n");
  EXPECT_TRUE(r.out.empty());
}

TEST_F(CliTest, CreatePrintsOnlyTheIdAndGetPrintsTheRow) {
  MustRun({"init"});
  const std::string team = Line(MustRun({"create", "teams", "name=Core"}));
  ASSERT_TRUE(IsUuid(team));
  const std::string task =
      Line(MustRun({"create", "task", "team_id=" + team, "title=Docs", "priority=2"}));
  MustRun({"update", "tasks", task, "status=done", "description=null"});
  absl::StatusOr<JsonValue> row = ParseJson(Line(MustRun({"get", "task", task})));
  ASSERT_TRUE(row.ok()) << row.status();
  EXPECT_EQ(row->Find("id")->text(), task);
  EXPECT_EQ(row->Find("title")->text(), "Docs");
  EXPECT_EQ(row->Find("status")->text(), "done");
  EXPECT_EQ(*row->Find("priority")->AsInt64(), 2);
  EXPECT_EQ(row->Find("deleted")->type(), JsonValue::Type::kBool);
}

TEST_F(CliTest, ListPrintsOneObjectPerLineAndHidesDeletedOnes) {
  MustRun({"init"});
  const std::string a = Line(MustRun({"create", "team", "name=A"}));
  const std::string b = Line(MustRun({"create", "team", "name=B"}));
  const std::string c = Line(MustRun({"create", "team", "name=C"}));
  MustRun({"delete", "team", b});
  std::vector<std::string> lines =
      absl::StrSplit(MustRun({"list", "team"}), '\n', absl::SkipEmpty());
  ASSERT_EQ(lines.size(), 2u);
  for (const std::string& l : lines) EXPECT_TRUE(ParseJson(l).ok()) << l;
  lines = absl::StrSplit(MustRun({"list", "--deleted", "teams"}), '\n', absl::SkipEmpty());
  EXPECT_EQ(lines.size(), 3u);

  Result r = Run({"get", "team", b});
  EXPECT_EQ(r.code, 1);
  EXPECT_EQ(r.err, "error: team " + b + " not found\n");
  EXPECT_EQ(Run({"get", "--deleted", "team", b}).code, 0);
}

TEST_F(CliTest, ErrorsAreOneLineAndWriteNothing) {
  MustRun({"init"});
  Result r = Run({"create", "widget", "name=x"});
  EXPECT_EQ(r.code, 1);
  EXPECT_EQ(r.err,
            "error: unknown object type \"widget\" (known: team, user, team_member, project, "
            "task, conflict)\n");
  r = Run({"create", "team", "version=3", "name=x"});
  EXPECT_EQ(r.code, 1);
  EXPECT_EQ(r.err, "error: field \"version\" is set by the server and cannot be written\n");
  r = Run({"create", "team"});
  EXPECT_EQ(r.err, "error: missing required field(s) \"name\" for object type \"team\"\n");
  r = Run({"update", "team", NewUuid(), "name=x"});
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.err.find("not found"), std::string::npos);
  EXPECT_NE(MustRun({"status"}).find("pending: 0\n"), std::string::npos);
}

TEST_F(CliTest, UsageOnNoOrUnknownCommand) {
  Result r = Run({});
  EXPECT_EQ(r.code, 2);
  EXPECT_NE(r.err.find("usage: pulsesync"), std::string::npos);
  r = Run({"frobnicate"});
  EXPECT_EQ(r.code, 2);
  EXPECT_NE(r.err.find("unknown command \"frobnicate\""), std::string::npos);
  r = Run({"--nope", "init"});
  EXPECT_EQ(r.code, 2);
  r = Run({"get", "team"});
  EXPECT_EQ(r.code, 2);
  EXPECT_EQ(Run({"--help"}).code, 0);
}

TEST_F(CliTest, SyncPrintsASummaryAndRemembersTheServer) {
  MustRun({"init"});
  MustRun({"create", "team", "name=A"});
  MustRun({"create", "team", "name=B"});
  EXPECT_EQ(MustRun({"--server=example:1234", "--token=jwt", "sync"}),
            "pushed 2 (applied 2, duplicate 0, rejected 0), pulled 0 (applied 0, skipped 0)\n");
  EXPECT_EQ(server_.last_address, "example:1234");
  EXPECT_EQ(server_.last_token, "jwt");
  EXPECT_EQ(MustRun({"status"}),
            "origin_id: " + Line(MustRun({"init"})) +
                "\npending: 0\ncursor: cursor-after-eve...\nserver: example:1234\n");
  MustRun({"sync"});
  EXPECT_EQ(server_.last_address, "example:1234");
}

TEST_F(CliTest, SyncReSnapshotsWhenTheServerCompactedItsLogAndSaysSo) {
  MustRun({"init"});
  const std::string mine = Line(MustRun({"create", "team", "name=A"}));
  server_.compacted = true;
  // The server holds the team just pushed (as a real one would) and another.
  const std::string other = NewUuid();
  server_.snapshot_teams = {{mine, "A"}, {other, "B"}};
  // Both applied: the pushed team comes back with its server version.
  EXPECT_EQ(MustRun({"sync"}),
            "pushed 1 (applied 1, duplicate 0, rejected 0), pulled 0 (applied 0, skipped 0), "
            "snapshot: applied 2, removed 0\n");
  EXPECT_NE(MustRun({"get", "team", other}).find(R"("name":"B")"), std::string::npos);
  EXPECT_NE(MustRun({"get", "team", mine}).find(R"("version":1)"), std::string::npos);
  EXPECT_NE(MustRun({"status"}).find("cursor: cursor-after-eve...\n"), std::string::npos);
  // Followed from the snapshot's cursor: no snapshot the next time.
  EXPECT_EQ(MustRun({"sync"}),
            "pushed 0 (applied 0, duplicate 0, rejected 0), pulled 0 (applied 0, skipped 0)\n");
}

TEST_F(CliTest, SyncWithTheServerDownFailsAndKeepsRevisionsPending) {
  env_.server_env = "127.0.0.1:9";
  MustRun({"init"});
  MustRun({"create", "team", "name=A"});
  server_.down = true;
  Result r = Run({"sync"});
  EXPECT_EQ(r.code, 1);
  EXPECT_TRUE(r.out.empty());
  EXPECT_EQ(r.err,
            "error: cannot reach server at 127.0.0.1:9: connection refused (1 revision(s) "
            "still pending)\n");
  EXPECT_NE(MustRun({"status"}).find("pending: 1\n"), std::string::npos);
  server_.down = false;
  MustRun({"sync"});
  EXPECT_NE(MustRun({"status"}).find("pending: 0\n"), std::string::npos);
}

// --- watch and sync --follow, against a scripted feed ---

// An ostream target that another thread may read while RunCli writes.
class SharedOutput : public std::streambuf {
 public:
  std::string text() {
    absl::MutexLock lock(&mu_);
    return text_;
  }
  std::vector<std::string> lines() {
    return absl::StrSplit(text(), '\n', absl::SkipEmpty());
  }
  // Waits (bounded) until `n` complete lines were written.
  bool WaitForLines(size_t n) {
    absl::MutexLock lock(&mu_);
    auto enough = [this, n]() ABSL_NO_THREAD_SAFETY_ANALYSIS {
      return static_cast<size_t>(std::count(text_.begin(), text_.end(), '\n')) >= n;
    };
    return mu_.AwaitWithTimeout(absl::Condition(&enough), absl::Seconds(10));
  }

 protected:
  int overflow(int c) override {
    if (c == EOF) return 0;
    absl::MutexLock lock(&mu_);
    text_.push_back(static_cast<char>(c));
    return c;
  }
  std::streamsize xsputn(const char* s, std::streamsize n) override {
    absl::MutexLock lock(&mu_);
    text_.append(s, static_cast<size_t>(n));
    return n;
  }

 private:
  absl::Mutex mu_;
  std::string text_ ABSL_GUARDED_BY(mu_);
};

// Hands RunCli a Transport that forwards to the test's FakeFeedServer.
class Forwarding : public Transport {
 public:
  explicit Forwarding(Transport* t) : t_(t) {}
  absl::StatusOr<v1::ApplyRevisionsResponse> ApplyRevisions(
      const v1::ApplyRevisionsRequest& r) override {
    return t_->ApplyRevisions(r);
  }
  absl::StatusOr<v1::PullChangesResponse> PullChanges(const v1::PullChangesRequest& r) override {
    return t_->PullChanges(r);
  }
  absl::StatusOr<v1::GetServerInfoResponse> GetServerInfo(
      const v1::GetServerInfoRequest& r) override {
    return t_->GetServerInfo(r);
  }
  absl::StatusOr<std::unique_ptr<ChangeStream>> StreamChanges(
      const v1::StreamChangesRequest& r) override {
    return t_->StreamChanges(r);
  }
  absl::StatusOr<std::unique_ptr<SnapshotStream>> Snapshot(const v1::SnapshotRequest& r) override {
    return t_->Snapshot(r);
  }

 private:
  Transport* t_;
};

class CliFeedTest : public CliTest {
 protected:
  void SetUp() override {
    CliTest::SetUp();
    env_.interrupt = &interrupt_;
    env_.make_transport = [this](const TransportConfig& config) {
      config_ = config;
      return std::unique_ptr<Transport>(new Forwarding(&feed_));
    };
  }
  // Runs a command in the background; Join returns its exit code.
  void RunInBackground(std::vector<std::string> args) {
    thread_ = std::thread([this, args] {
      std::ostream out(&out_), err(&err_);
      code_ = RunCli(args, env_, out, err);
    });
  }
  int Join() {
    thread_.join();
    return code_;
  }

  testing::FakeFeedServer feed_;
  InterruptSignal interrupt_;
  TransportConfig config_;
  SharedOutput out_, err_;
  std::thread thread_;
  int code_ = -1;
};

v1::StreamChangesResponse Update(const std::string& id, int64_t version, const std::string& cursor) {
  v1::StreamChangesResponse r;
  v1::Change* c = r.add_changes();
  c->set_table("tasks");
  c->set_object_type("task");
  c->set_event(v1::EVENT_TYPE_UPDATE);
  c->set_object_id(id);
  c->set_version(version);
  c->set_new_record(R"({"id":")" + id + R"(","team_id":"11111111-1111-4111-8111-111111111111","title":"new","version":)" +
                    std::to_string(version) + "}");
  c->set_old_record(R"({"title":"old"})");
  c->set_origin_id("device-9");
  c->set_revision_id("rev-1");
  c->set_commit_timestamp_ms(1700000000000);
  c->set_cursor(cursor);
  return r;
}

TEST_F(CliFeedTest, WatchPrintsOneJsonLinePerEventWithoutADatabase) {
  RunInBackground({"--server=feed:1", "--user=u-1", "watch", "--table=tasks", "--table=projects",
                   "--event=update", "--event=DELETE", "--filter=priority=gt.1", "--cursor=c0",
                   "--checkpoints"});
  std::shared_ptr<testing::ChangeCall> stream = feed_.WaitForStream(0);
  ASSERT_NE(stream, nullptr);
  const v1::StreamChangesRequest request = feed_.stream_request(0);
  EXPECT_EQ(request.cursor(), "c0");
  EXPECT_FALSE(request.from_now());
  ASSERT_EQ(request.subscriptions_size(), 2);
  EXPECT_EQ(request.subscriptions(0).table(), "tasks");
  EXPECT_EQ(request.subscriptions(1).table(), "projects");
  ASSERT_EQ(request.subscriptions(1).events_size(), 2);
  EXPECT_EQ(request.subscriptions(1).events(0), v1::EVENT_TYPE_UPDATE);
  EXPECT_EQ(request.subscriptions(1).events(1), v1::EVENT_TYPE_DELETE);
  EXPECT_EQ(request.subscriptions(1).filters(0), "priority=gt.1");
  EXPECT_EQ(config_.address, "feed:1");
  EXPECT_EQ(config_.user_id, "u-1");

  const std::string id = NewUuid();
  stream->Send(Update(id, 3, "c1"));
  v1::StreamChangesResponse checkpoint;
  checkpoint.set_checkpoint("c2");
  stream->Send(checkpoint);
  ASSERT_TRUE(out_.WaitForLines(2));
  std::vector<std::string> lines = out_.lines();
  EXPECT_EQ(lines[0], R"({"event":"UPDATE","table":"tasks","object_type":"task","id":")" + id +
                          R"(","version":3,"origin_id":"device-9","revision_id":"rev-1",)"
                          R"("commit_timestamp_ms":1700000000000,"new":{"id":")" +
                          id +
                          R"(","team_id":"11111111-1111-4111-8111-111111111111","title":"new",)"
                          R"("version":3},"old":{"title":"old"},"cursor":"c1"})");
  EXPECT_EQ(lines[1], R"({"checkpoint":"c2"})");

  interrupt_.Trigger();
  EXPECT_EQ(Join(), 0);
  EXPECT_TRUE(stream->cancelled());
  EXPECT_EQ(err_.text(), "");
  // No database was created or opened.
  EXPECT_NE(access(db_.c_str(), F_OK), 0);
}

TEST_F(CliFeedTest, WatchFromNowWithoutFiltersSubscribesToEverything) {
  RunInBackground({"watch", "--from-now"});
  std::shared_ptr<testing::ChangeCall> stream = feed_.WaitForStream(0);
  ASSERT_NE(stream, nullptr);
  EXPECT_TRUE(feed_.stream_request(0).from_now());
  EXPECT_EQ(feed_.stream_request(0).subscriptions_size(), 0);
  EXPECT_EQ(config_.address, kDefaultServerAddress);
  // A delete without records prints nulls; checkpoints are not printed.
  v1::StreamChangesResponse del;
  v1::Change* d = del.add_changes();
  d->set_event(v1::EVENT_TYPE_DELETE);
  d->set_table("tasks");
  d->set_cursor("d1");
  stream->Send(del);
  v1::StreamChangesResponse checkpoint;
  checkpoint.set_checkpoint("c2");
  stream->Send(checkpoint);
  ASSERT_TRUE(out_.WaitForLines(1));
  EXPECT_NE(out_.lines()[0].find(R"("event":"DELETE")"), std::string::npos);
  EXPECT_NE(out_.lines()[0].find(R"("new":null,"old":null)"), std::string::npos);
  ASSERT_TRUE(testing::FakeFeedServer::WaitUntil([&] { return stream->unread() == 0; }));
  interrupt_.Trigger();
  EXPECT_EQ(Join(), 0);
  EXPECT_EQ(out_.lines().size(), 1u);
}

TEST_F(CliFeedTest, WatchFailsWithOneLineNamingTheCursorToResumeFrom) {
  RunInBackground({"watch"});
  std::shared_ptr<testing::ChangeCall> stream = feed_.WaitForStream(0);
  ASSERT_NE(stream, nullptr);
  // Two changes in one message: a line each, and the cursor is the last's.
  const std::string a = NewUuid(), b = NewUuid();
  v1::StreamChangesResponse two = Update(a, 1, "c1");
  *two.add_changes() = Update(b, 1, "c2").changes(0);
  stream->Send(two);
  stream->End(absl::UnavailableError("server shutting down"));
  EXPECT_EQ(Join(), 1);
  std::vector<std::string> lines = out_.lines();
  ASSERT_EQ(lines.size(), 2u);
  EXPECT_NE(lines[0].find(a), std::string::npos);
  EXPECT_NE(lines[1].find(b), std::string::npos);
  EXPECT_EQ(err_.text(),
            "error: feed ended: UNAVAILABLE: server shutting down; resume with --cursor=c2\n");
}

TEST_F(CliFeedTest, WatchRefusesBadOptions) {
  Result r = Run({"watch", "--from-now", "--cursor=x"});
  EXPECT_EQ(r.code, 2);
  EXPECT_NE(r.err.find("--from-now and --cursor exclude each other"), std::string::npos);
  r = Run({"watch", "--event=upsert"});
  EXPECT_EQ(r.code, 2);
  EXPECT_NE(r.err.find("--event expects insert, update or delete, got \"upsert\""),
            std::string::npos);
  r = Run({"watch", "--filter=nonsense"});
  EXPECT_EQ(r.code, 2);
  r = Run({"watch", "--colour"});
  EXPECT_EQ(r.code, 2);
  EXPECT_EQ(feed_.stream_count(), 0u);
}

TEST_F(CliFeedTest, SyncFollowKeepsTheDatabaseInSyncUntilInterrupted) {
  MustRun({"init"});
  const std::string mine = Line(MustRun({"create", "team", "name=Mine"}));
  const std::string id = NewUuid();
  v1::SnapshotResponse rows;
  rows.mutable_rows()->set_table("tasks");
  rows.mutable_rows()->add_records(R"({"id":")" + id +
                                   R"(","team_id":"11111111-1111-4111-8111-111111111111",)"
                                   R"("title":"snap","version":1})");
  // The server has the team pushed on connect, as a real one would.
  v1::SnapshotResponse teams;
  teams.mutable_rows()->set_table("teams");
  teams.mutable_rows()->add_records(R"({"id":")" + mine + R"(","name":"Mine","version":1})");
  v1::SnapshotResponse cursor;
  cursor.set_cursor("s1");
  feed_.ScriptSnapshot({rows, teams, cursor});
  RunInBackground({"--server=feed:2", "sync", "--follow"});
  std::shared_ptr<testing::ChangeCall> stream = feed_.WaitForStream(0);
  ASSERT_NE(stream, nullptr);
  EXPECT_EQ(feed_.stream_request(0).cursor(), "s1");
  stream->Send(Update(id, 2, "s2"));
  ASSERT_TRUE(out_.WaitForLines(3));
  interrupt_.Trigger();
  EXPECT_EQ(Join(), 0);
  std::vector<std::string> lines = out_.lines();
  ASSERT_EQ(lines.size(), 4u) << out_.text();
  EXPECT_EQ(lines[0], "connected to feed:2");
  EXPECT_EQ(lines[1], "snapshot: applied 2, skipped 0, removed 0, kept 0");
  EXPECT_EQ(lines[2], "applied UPDATE task " + id + " version 2");
  EXPECT_EQ(lines[3], "disconnected: stopped");
  EXPECT_EQ(feed_.pushes().size(), 1u);  // the local team, pushed on connect
  EXPECT_NE(MustRun({"status"}).find("pending: 0\ncursor: s2\nserver: feed:2\n"),
            std::string::npos);
  absl::StatusOr<JsonValue> row = ParseJson(Line(MustRun({"get", "task", id})));
  ASSERT_TRUE(row.ok());
  EXPECT_EQ(row->Find("title")->text(), "new");
  EXPECT_NE(MustRun({"get", "team", mine}).find(R"("version":1)"), std::string::npos);
}

TEST_F(CliFeedTest, SyncFollowReportsDisconnectsWithTheRetryDelay) {
  MustRun({"init"});
  feed_.FailInfo(absl::UnavailableError("connection refused"));
  RunInBackground({"sync", "--follow", "--no-snapshot"});
  ASSERT_TRUE(out_.WaitForLines(1));
  EXPECT_TRUE(absl::StartsWith(out_.lines()[0],
                               "disconnected: UNAVAILABLE: connection refused; retrying in "))
      << out_.lines()[0];
  interrupt_.Trigger();
  EXPECT_EQ(Join(), 0);
}

}  // namespace
}  // namespace pulsesync

namespace pulsesync {
namespace {

// --- Encryption at rest: keygen, --key-file, PULSESYNC_DB_KEY ---

class CliKeyTest : public CliTest {
 protected:
  void SetUp() override {
    CliTest::SetUp();
    key_ = db_ + ".key";
    std::remove(key_.c_str());
  }
  void TearDown() override {
    std::remove(key_.c_str());
    CliTest::TearDown();
  }
  std::vector<std::string> RawPayloads() {
    absl::StatusOr<sqlite::SqliteDb> db = sqlite::SqliteDb::Open(db_, false);
    EXPECT_TRUE(db.ok());
    std::vector<std::string> out;
    if (!db.ok()) return out;
    absl::StatusOr<sqlite::Statement> st = db->Prepare("SELECT payload FROM revisions ORDER BY seq");
    while (st.ok() && st->Step().value_or(false)) out.push_back(st->ColumnText(0));
    return out;
  }
  std::string key_;
};

TEST_F(CliKeyTest, KeygenWritesAnOwnerOnlyKeyAndNeverOverwrites) {
  const std::string id = Line(MustRun({"keygen", "--out=" + key_}));
  EXPECT_EQ(id.size(), 17u);
  EXPECT_EQ(id[0], 'k');
  struct stat info;
  ASSERT_EQ(::stat(key_.c_str(), &info), 0);
  EXPECT_EQ(info.st_mode & 07777, 0600u);
  absl::StatusOr<SecretKey> key = ReadKeyFile(key_);
  ASSERT_TRUE(key.ok()) << key.status();
  EXPECT_EQ(DeriveKeyId(*key), id);

  Result again = Run({"keygen", "--out=" + key_});
  EXPECT_EQ(again.code, 1);
  EXPECT_EQ(again.err, "error: key file " + key_ + " already exists; refusing to overwrite it\n");
  EXPECT_EQ(DeriveKeyId(*ReadKeyFile(key_)), id);
  EXPECT_EQ(Run({"keygen"}).code, 2);
  EXPECT_EQ(Run({"keygen", "extra"}).code, 2);
}

TEST_F(CliKeyTest, AKeyFileEncryptsPayloadsAndSyncSendsPlaintext) {
  const std::string id = Line(MustRun({"keygen", "--out=" + key_}));
  const std::string flag = "--key-file=" + key_;
  MustRun({flag, "init"});
  const std::string team = Line(MustRun({flag, "create", "team", "name=Clandestine"}));
  for (const std::string& p : RawPayloads()) {
    EXPECT_TRUE(absl::StartsWith(p, "enc1:" + id + ":")) << p;
    EXPECT_FALSE(absl::StrContains(p, "Clandestine")) << p;
  }
  EXPECT_NE(MustRun({flag, "status"}).find("payload_key: " + id + "\n"), std::string::npos);
  // Reads of the synced tables need no key (they are not encrypted).
  EXPECT_TRUE(absl::StrContains(MustRun({"get", "team", team}), "Clandestine"));

  // Without the key the database cannot sync: nothing leaves, not even
  // ciphertext.
  Result no_key = Run({"sync"});
  EXPECT_EQ(no_key.code, 1);
  EXPECT_TRUE(absl::StrContains(no_key.err, "no key is configured")) << no_key.err;
  EXPECT_TRUE(absl::StrContains(no_key.err, "(1 revision(s) still pending)")) << no_key.err;
  EXPECT_TRUE(server_.payloads.empty());

  MustRun({flag, "sync"});
  ASSERT_EQ(server_.payloads.size(), 1u);
  absl::StatusOr<JsonValue> sent = ParseJson(server_.payloads[0]);
  ASSERT_TRUE(sent.ok()) << server_.payloads[0];
  EXPECT_EQ(sent->Find("name")->text(), "Clandestine");
}

TEST_F(CliKeyTest, TheEnvironmentKeyIsUsedWhenNoKeyFileIsGiven) {
  SecretKey key = *SecretKey::Generate();
  env_.db_key_env = key.ToHex();
  MustRun({"init"});
  MustRun({"create", "team", "name=FromEnv"});
  std::vector<std::string> raw = RawPayloads();
  ASSERT_EQ(raw.size(), 1u);
  EXPECT_EQ(EnvelopeKeyId(raw[0]), DeriveKeyId(key));
  MustRun({"sync"});
  ASSERT_EQ(server_.payloads.size(), 1u);
  EXPECT_TRUE(absl::StrContains(server_.payloads[0], "FromEnv"));

  env_.db_key_env = "not-a-key";
  Result bad = Run({"status"});
  EXPECT_EQ(bad.code, 1);
  EXPECT_TRUE(absl::StartsWith(bad.err, "error: PULSESYNC_DB_KEY (key 1): not a payload key"))
      << bad.err;
}

TEST_F(CliKeyTest, RotatingWithTwoKeyFilesReencryptsOldPayloads) {
  const std::string old_key = key_ + ".old";
  std::remove(old_key.c_str());
  const std::string old_id = Line(MustRun({"keygen", "--out=" + old_key}));
  const std::string new_id = Line(MustRun({"keygen", "--out=" + key_}));
  MustRun({"--key-file=" + old_key, "init"});
  MustRun({"--key-file=" + old_key, "create", "team", "name=Before"});
  EXPECT_EQ(EnvelopeKeyId(RawPayloads().at(0)), old_id);

  MustRun({"--key-file=" + key_, "--key-file=" + old_key, "create", "team", "name=After"});
  for (const std::string& p : RawPayloads()) EXPECT_EQ(EnvelopeKeyId(p), new_id) << p;
  MustRun({"--key-file=" + key_, "sync"});  // the old key is no longer needed
  ASSERT_EQ(server_.payloads.size(), 2u);
  EXPECT_TRUE(absl::StrContains(server_.payloads[0], "Before"));
  std::remove(old_key.c_str());
}

TEST_F(CliKeyTest, KeyFileProblemsAreOneLineErrors) {
  MustRun({"init"});
  Result missing = Run({"--key-file=" + key_, "status"});
  EXPECT_EQ(missing.code, 1);
  EXPECT_TRUE(absl::StartsWith(missing.err, "error: cannot open key file " + key_))
      << missing.err;

  MustRun({"keygen", "--out=" + key_});
  ASSERT_EQ(::chmod(key_.c_str(), 0644), 0);
  Result open = Run({"--key-file=" + key_, "status"});
  EXPECT_EQ(open.code, 1);
  EXPECT_EQ(open.err, "error: key file " + key_ +
                          " is accessible by group or others (mode 0644); it must be readable "
                          "by its owner only: chmod 600 " +
                          key_ + "\n");
  EXPECT_EQ(Run({"--key-file=", "status"}).code, 2);
}

// Plaintext to a non-loopback server is the transport's to refuse
// (GrpcTransportOptions::plaintext); the CLI passes on whether it was asked
// for, by flag or environment.
TEST_F(CliTest, PlaintextReachesTheTransportOnlyWhenAskedFor) {
  TransportConfig seen;
  env_.make_transport = [&](const TransportConfig& config) {
    seen = config;
    return std::unique_ptr<Transport>(new FakeServer::Conn(&server_));
  };
  MustRun({"init"});
  MustRun({"sync"});
  EXPECT_FALSE(seen.plaintext);
  MustRun({"--plaintext", "sync"});
  EXPECT_TRUE(seen.plaintext);
  env_.plaintext_env = "1";
  MustRun({"sync"});
  EXPECT_TRUE(seen.plaintext);
  env_.plaintext_env = "false";
  MustRun({"sync"});
  EXPECT_FALSE(seen.plaintext);

  env_.plaintext_env = "maybe";
  Result bad_env = Run({"sync"});
  EXPECT_EQ(bad_env.code, 2);
  EXPECT_NE(bad_env.err.find("PULSESYNC_PLAINTEXT=maybe"), std::string::npos) << bad_env.err;
  env_.plaintext_env = "";
  Result both = Run({"--plaintext", "--tls-ca=/nonexistent/ca.pem", "sync"});
  EXPECT_EQ(both.code, 2);
  EXPECT_NE(both.err.find("contradict"), std::string::npos) << both.err;
}

}  // namespace
}  // namespace pulsesync

namespace pulsesync {
namespace {

TEST_F(CliTest, ConflictsListsRecordsAndResolveClosesThem) {
  MustRun({"init"});
  const std::string task = NewUuid(), conflict = NewUuid(), team = NewUuid();
  {
    // A conflict record as the feed delivers it.
    absl::StatusOr<std::unique_ptr<LocalStore>> store = LocalStore::Open(db_);
    ASSERT_TRUE(store.ok()) << store.status();
    RemoteChange t;
    t.object_type = "task";
    t.object_id = task;
    t.version = 9;
    t.new_record = "{\"id\":\"" + task + "\",\"team_id\":\"" + team +
                   "\",\"title\":\"From B\",\"version\":9,\"deleted\":false}";
    RemoteChange c;
    c.object_type = "conflict";
    c.object_id = conflict;
    c.version = 10;
    c.new_record = "{\"id\":\"" + conflict + "\",\"team_id\":\"" + team +
                   "\",\"object_type\":\"task\",\"object_id\":\"" + task +
                   "\",\"kind\":\"field\",\"field\":\"title\",\"local_value\":\"From A\","
                   "\"winning_value\":\"From B\",\"loser_origin_id\":\"" +
                   (*store)->origin_id() +
                   "\",\"version\":10,\"deleted\":false,\"resolved\":false}";
    ASSERT_TRUE((*store)->ApplyRemoteChanges({t, c}, "").ok());
  }
  const std::string listed = Line(MustRun({"conflicts"}));
  EXPECT_THAT(listed, ::testing::HasSubstr("\"id\":\"" + conflict + "\""));
  EXPECT_THAT(listed, ::testing::HasSubstr("\"local_value\":\"From A\""));
  EXPECT_THAT(listed, ::testing::HasSubstr("\"mine\":true"));
  EXPECT_EQ(Run({"resolve", conflict, "maybe"}).code, 2);
  EXPECT_EQ(MustRun({"resolve", conflict, "mine"}), "");
  EXPECT_EQ(MustRun({"conflicts"}), "");
  EXPECT_THAT(MustRun({"conflicts", "--all"}), ::testing::HasSubstr("\"resolution\":\"mine\""));
  EXPECT_THAT(MustRun({"get", "task", task}), ::testing::HasSubstr("\"title\":\"From A\""));
  const Result again = Run({"resolve", conflict, "theirs"});
  EXPECT_EQ(again.code, 1);
  EXPECT_THAT(again.err, ::testing::HasSubstr("no open conflict"));
}

}  // namespace
}  // namespace pulsesync

#include "client/cli/cli.h"

#include <unistd.h>

#include <cstdio>
#include <sstream>
#include <string>

#include "absl/strings/str_split.h"
#include "client/store/local_store.h"
#include "common/brotli_codec.h"
#include "common/uuid.h"
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
class FakeServer {
 public:
  bool down = false;
  int apply_calls = 0;
  std::string last_address, last_token;

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
      v1::PullChangesResponse r;
      r.set_next_cursor("cursor-after-everything-0123456789");
      return r;
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
    env_.make_transport = [this](const std::string& address, const std::string& token) {
      server_.last_address = address;
      server_.last_token = token;
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
            "task)\n");
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

}  // namespace
}  // namespace pulsesync

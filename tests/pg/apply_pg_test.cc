// ApplyRevisionBatch against a real PostgreSQL: the merge in
// migrations/0002_sync_engine.sql as the gRPC path drives it. Every test
// asserts the rows PostgreSQL ends up with, not only the answers.
#include <cstdio>
#include <cstdlib>
#include <map>
#include <memory>
#include <random>
#include <set>
#include <string>
#include <vector>

#include <pqxx/pqxx>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_replace.h"
#include "common/json.h"
#include "common/uuid.h"
#include "gtest/gtest.h"
#include "pulsesync/v1/sync.pb.h"
#include "server/core/revision_applier.h"
#include "server/storage/pg_session.h"
#include "tests/testing/subprocess.h"
#include "tests/testing/status_matchers.h"
#include "tests/testing/test_database.h"

namespace pulsesync {
namespace {

using ::pulsesync::testing::TestDatabase;
using ::testing::AllOf;
using ::testing::HasSubstr;
using Outcome = v1::RevisionResult;

constexpr int64_t kT0 = 1700000000000;  // a clock reading, ms

// The synced columns of a task that must agree between replicas.
constexpr char kTaskState[] =
    "title, description, status, priority, team_id, project_id, assignee_id, due_at, deleted, "
    "recovered, last_origin_id, last_revision_id, hlc";

std::string TaskStateSql(const std::string& id, const std::string& columns = kTaskState) {
  return absl::StrCat("SELECT concat_ws('|', ", columns, ") FROM public.tasks WHERE id = '", id,
                      "'");
}

class ApplyPgTest : public ::testing::Test {
 protected:
  void SetUp() override {
    PS_REQUIRE_POSTGRES();
    ASSERT_OK_AND_ASSIGN(db_, TestDatabase::Create());
    session_ = NewSession(*db_);
    team_ = NewUuid();
    ASSERT_OK_AND_ASSIGN(auto r, Apply({Upsert("team", team_, R"({"name":"Core"})", kT0)}));
    ASSERT_EQ(r[0].outcome(), Outcome::OUTCOME_APPLIED) << r[0].reason();
  }

  static std::unique_ptr<PgSession> NewSession(const TestDatabase& db) {
    PgSessionOptions options;
    options.database_url = db.url();
    options.statements = RevisionApplierStatements();
    return std::make_unique<PgSession>(options);
  }

  v1::Revision Upsert(const std::string& type, const std::string& object_id,
                      const std::string& payload, int64_t ms, uint32_t counter = 0,
                      const std::string& origin = "device-a") {
    v1::Revision r;
    r.set_id(NewUuid());
    r.set_object_type(type);
    r.set_object_id(object_id);
    r.set_origin_id(origin);
    r.set_seq(++seqs_[origin]);
    r.set_op(v1::OPERATION_UPSERT);
    r.set_payload(payload);
    r.set_created_at(ms);
    r.mutable_clock()->set_physical_ms(ms);
    r.mutable_clock()->set_counter(counter);
    return r;
  }

  v1::Revision Delete(const std::string& type, const std::string& object_id, int64_t ms,
                      const std::string& origin = "device-a") {
    v1::Revision r = Upsert(type, object_id, "", ms, 0, origin);
    r.set_op(v1::OPERATION_DELETE);
    return r;
  }

  // A task payload in team_ with the given extra members (",\"k\":v...").
  std::string Task(const std::string& title, const std::string& extra = "") {
    return absl::StrCat("{\"team_id\":\"", team_, "\",\"title\":\"", title, "\"", extra, "}");
  }

  // Gives each origin's revisions in `batch` consecutive seqs in batch order,
  // from the lowest seq they had (the one the server expects next).
  static void NumberInBatchOrder(std::vector<v1::Revision>* batch) {
    std::map<std::string, int64_t> next;
    for (const v1::Revision& r : *batch) {
      auto [it, inserted] = next.emplace(r.origin_id(), r.seq());
      if (!inserted) it->second = std::min(it->second, r.seq());
    }
    for (v1::Revision& r : *batch) r.set_seq(next[r.origin_id()]++);
  }

  absl::StatusOr<std::vector<v1::RevisionResult>> Apply(const std::vector<v1::Revision>& revs) {
    return ApplyRevisionBatch(*session_, revs, ApplyLimits());
  }

  std::string Query(const std::string& sql) { return Query(*db_, sql); }
  static std::string Query(const TestDatabase& db, const std::string& sql) {
    absl::StatusOr<std::string> v = db.QueryValue(sql);
    EXPECT_OK(v) << sql;
    return v.ok() ? *v : "<error: " + v.status().ToString() + ">";
  }
  std::string TaskRow(const std::string& id) {
    return Query(absl::StrCat("SELECT row_to_json(t)::text FROM public.tasks t WHERE id = '", id,
                              "'"));
  }
  std::string LogCount(const std::string& object_id) {
    return Query(absl::StrCat("SELECT count(*) FROM pulsesync.change_log WHERE object_id = '",
                              object_id, "'"));
  }
  std::string TotalLogCount() { return Query("SELECT count(*) FROM pulsesync.change_log"); }
  std::string AppliedCount(const std::string& revision_id) {
    return Query(absl::StrCat("SELECT count(*) FROM pulsesync.applied_revisions WHERE id = '",
                              revision_id, "'"));
  }

  std::unique_ptr<TestDatabase> db_;
  std::unique_ptr<PgSession> session_;
  std::string team_;
  std::map<std::string, int64_t> seqs_;  // next seq per origin
};

TEST_F(ApplyPgTest, CreatesTeamAndTask) {
  const std::string task = NewUuid();
  const v1::Revision rev = Upsert("task", task, Task("Write tests", R"(,"priority":2)"), kT0 + 1);
  ASSERT_OK_AND_ASSIGN(auto results, Apply({rev}));
  ASSERT_EQ(results.size(), 1u);
  EXPECT_EQ(results[0].revision_id(), rev.id());
  ASSERT_EQ(results[0].outcome(), Outcome::OUTCOME_APPLIED) << results[0].reason();
  EXPECT_FALSE(results[0].superseded());
  EXPECT_GT(results[0].version(), 0);

  EXPECT_EQ(Query(absl::StrCat("SELECT name FROM public.teams WHERE id = '", team_, "'")), "Core");
  EXPECT_EQ(Query(absl::StrCat(
                "SELECT concat_ws('|', title, status, priority, team_id, deleted, recovered, "
                "last_origin_id, last_revision_id, version, hlc) FROM public.tasks WHERE id = '",
                task, "'")),
            absl::StrCat("Write tests|todo|2|", team_, "|f|f|device-a|", rev.id(), "|",
                         results[0].version(), "|", HlcText(kT0 + 1, 0, "device-a")));
  EXPECT_EQ(Query(absl::StrCat(
                "SELECT concat_ws('|', op, table_name, object_type, origin_id, revision_id, "
                "version, team_id, new_row->>'title', old_row IS NULL) "
                "FROM pulsesync.change_log WHERE object_id = '", task, "'")),
            absl::StrCat("INSERT|tasks|task|device-a|", rev.id(), "|", results[0].version(), "|",
                         team_, "|Write tests|t"));
  EXPECT_EQ(LogCount(task), "1");
  EXPECT_EQ(Query(absl::StrCat(
                "SELECT concat_ws('|', object_type, object_id, origin_id, seq, version, "
                "superseded) FROM pulsesync.applied_revisions WHERE id = '", rev.id(), "'")),
            absl::StrCat("task|", task, "|device-a|", rev.seq(), "|", results[0].version(),
                         "|f"));
}

TEST_F(ApplyPgTest, UpdateChangesOnlyTheFieldsItCarries) {
  const std::string task = NewUuid();
  ASSERT_OK_AND_ASSIGN(
      auto created,
      Apply({Upsert("task", task, Task("Title", R"(,"description":"keep me","priority":3)"),
                    kT0 + 1)}));
  ASSERT_EQ(created[0].outcome(), Outcome::OUTCOME_APPLIED) << created[0].reason();
  const v1::Revision update = Upsert("task", task, R"({"status":"doing"})", kT0 + 2);
  ASSERT_OK_AND_ASSIGN(auto updated, Apply({update}));
  ASSERT_EQ(updated[0].outcome(), Outcome::OUTCOME_APPLIED) << updated[0].reason();
  EXPECT_FALSE(updated[0].superseded());
  EXPECT_GT(updated[0].version(), created[0].version());

  EXPECT_EQ(Query(absl::StrCat("SELECT concat_ws('|', title, description, priority, status, "
                               "version, last_revision_id) FROM public.tasks WHERE id = '",
                               task, "'")),
            absl::StrCat("Title|keep me|3|doing|", updated[0].version(), "|", update.id()));
  EXPECT_EQ(LogCount(task), "2");
  EXPECT_EQ(Query(absl::StrCat("SELECT concat_ws('|', op, old_row->>'status', new_row->>'status', "
                               "version) FROM pulsesync.change_log WHERE object_id = '", task,
                               "' ORDER BY position DESC LIMIT 1")),
            absl::StrCat("UPDATE|todo|doing|", updated[0].version()));
}

TEST_F(ApplyPgTest, DeleteKeepsATombstone) {
  const std::string task = NewUuid();
  ASSERT_OK_AND_ASSIGN(auto created, Apply({Upsert("task", task, Task("Doomed"), kT0 + 1)}));
  ASSERT_EQ(created[0].outcome(), Outcome::OUTCOME_APPLIED);
  const v1::Revision del = Delete("task", task, kT0 + 2, "device-b");
  ASSERT_OK_AND_ASSIGN(auto deleted, Apply({del}));
  ASSERT_EQ(deleted[0].outcome(), Outcome::OUTCOME_APPLIED) << deleted[0].reason();
  EXPECT_FALSE(deleted[0].superseded());
  EXPECT_GT(deleted[0].version(), created[0].version());

  EXPECT_EQ(Query(absl::StrCat("SELECT concat_ws('|', title, deleted, recovered, version, "
                               "last_origin_id, last_revision_id) FROM public.tasks WHERE id = '",
                               task, "'")),
            absl::StrCat("Doomed|t|f|", deleted[0].version(), "|device-b|", del.id()));
  EXPECT_EQ(Query(absl::StrCat("SELECT concat_ws('|', op, origin_id, revision_id, version, "
                               "new_row->>'deleted') FROM pulsesync.change_log WHERE object_id = '",
                               task, "' ORDER BY position DESC LIMIT 1")),
            absl::StrCat("DELETE|device-b|", del.id(), "|", deleted[0].version(), "|true"));
}

TEST_F(ApplyPgTest, DeleteOfAnUnknownObjectIsRememberedButWritesNoRow) {
  const std::string task = NewUuid();
  const std::string log_before = TotalLogCount();
  ASSERT_OK_AND_ASSIGN(auto r, Apply({Delete("task", task, kT0 + 1)}));
  EXPECT_EQ(r[0].outcome(), Outcome::OUTCOME_APPLIED) << r[0].reason();
  EXPECT_EQ(r[0].resolution(), v1::RevisionResult::RESOLUTION_TOMBSTONED);
  EXPECT_EQ(r[0].version(), 0);
  EXPECT_EQ(Query(absl::StrCat("SELECT count(*) FROM public.tasks WHERE id = '", task, "'")), "0");
  EXPECT_EQ(TotalLogCount(), log_before);
  EXPECT_EQ(Query(absl::StrCat("SELECT deleted_hlc FROM pulsesync.tombstones WHERE object_id = '",
                               task, "'")),
            HlcText(kT0 + 1, 0, "device-a"));
}

TEST_F(ApplyPgTest, ResentRevisionIsADuplicateAndChangesNothing) {
  const std::string task = NewUuid();
  const v1::Revision create = Upsert("task", task, Task("Once"), kT0 + 1);
  const v1::Revision update = Upsert("task", task, R"({"title":"Twice"})", kT0 + 2);
  ASSERT_OK_AND_ASSIGN(auto first, Apply({create, update}));
  ASSERT_EQ(first[0].outcome(), Outcome::OUTCOME_APPLIED) << first[0].reason();
  ASSERT_EQ(first[1].outcome(), Outcome::OUTCOME_APPLIED) << first[1].reason();
  const std::string row = TaskRow(task);
  const std::string log = TotalLogCount();
  const std::string applied = Query("SELECT count(*) FROM pulsesync.applied_revisions");

  ASSERT_OK_AND_ASSIGN(auto again, Apply({create, update}));
  for (int i = 0; i < 2; ++i) {
    SCOPED_TRACE(i);
    EXPECT_EQ(again[i].outcome(), Outcome::OUTCOME_DUPLICATE) << again[i].reason();
    EXPECT_EQ(again[i].version(), first[i].version());
    EXPECT_EQ(again[i].superseded(), first[i].superseded());
    EXPECT_EQ(again[i].revision_id(), first[i].revision_id());
  }
  EXPECT_EQ(TaskRow(task), row);
  EXPECT_EQ(TotalLogCount(), log);
  EXPECT_EQ(Query("SELECT count(*) FROM pulsesync.applied_revisions"), applied);
}

TEST_F(ApplyPgTest, SameRevisionTwiceInOneBatchAppliesOnce) {
  const std::string task = NewUuid();
  const v1::Revision create = Upsert("task", task, Task("Once"), kT0 + 1);
  ASSERT_OK_AND_ASSIGN(auto r, Apply({create, create}));
  EXPECT_EQ(r[0].outcome(), Outcome::OUTCOME_APPLIED) << r[0].reason();
  EXPECT_EQ(r[1].outcome(), Outcome::OUTCOME_DUPLICATE) << r[1].reason();
  EXPECT_EQ(r[1].version(), r[0].version());
  EXPECT_EQ(LogCount(task), "1");
}

struct BadRevision {
  v1::Revision revision;
  std::vector<std::string> reason_mentions;
};

TEST_F(ApplyPgTest, RejectsInvalidRevisionsAndAppliesTheValidOnesOfTheSameBatch) {
  std::vector<BadRevision> bad;
  auto add = [&](v1::Revision r, std::vector<std::string> mentions) {
    bad.push_back({std::move(r), std::move(mentions)});
  };
  add(Upsert("widget", NewUuid(), R"({"name":"x"})", kT0 + 1), {"unknown object type", "widget"});
  add(Upsert("task", NewUuid(), Task("x", R"(,"colour":"red")"), kT0 + 1),
      {"unknown field", "colour"});
  add(Upsert("task", NewUuid(), Task("x", R"(,"version":99)"), kT0 + 1),
      {"set by the server", "version"});
  add(Upsert("task", NewUuid(), Task("x", R"(,"deleted":true)"), kT0 + 1),
      {"set by the server", "deleted"});
  add(Upsert("task", NewUuid(), Task("x", R"(,"priority":"high")"), kT0 + 1),
      {"integer", "high"});
  add(Upsert("task", NewUuid(), R"({"title":"x","team_id":)", kT0 + 1), {"payload"});
  add(Upsert("task", NewUuid(), R"(["not","an","object"])", kT0 + 1), {"JSON object"});
  add(Upsert("task", NewUuid(), absl::StrCat(R"({"title":"x","team_id":")", NewUuid(), "\"}"),
             kT0 + 1),
      {"foreign key", "team_id"});
  add(Upsert("task", NewUuid(), absl::StrCat(R"({"team_id":")", team_, "\"}"), kT0 + 1),
      {"null value", "title"});
  add(Upsert("task", NewUuid(), Task("x", absl::StrCat(R"(,"id":")", NewUuid(), "\"")), kT0 + 1),
      {"does not match"});
  {
    v1::Revision r = Upsert("task", NewUuid(), Task("x"), kT0 + 1);
    r.set_id("rev-1");
    add(r, {"id \"rev-1\" is not a UUID"});
  }
  {
    v1::Revision r = Upsert("task", "task-1", Task("x"), kT0 + 1);
    add(r, {"object_id \"task-1\" is not a UUID"});
  }
  {
    v1::Revision r = Upsert("task", NewUuid(), Task("x"), kT0 + 1);
    r.set_op(v1::OPERATION_UNSPECIFIED);
    add(r, {"op is missing"});
  }

  // Valid revisions before, between and after the invalid ones.
  std::vector<v1::Revision> batch;
  std::vector<std::string> valid_ids;
  auto add_valid = [&] {
    const std::string id = NewUuid();
    valid_ids.push_back(id);
    batch.push_back(Upsert("task", id, Task("valid"), kT0 + 1));
  };
  std::vector<size_t> bad_index;
  add_valid();
  for (const BadRevision& b : bad) {
    bad_index.push_back(batch.size());
    batch.push_back(b.revision);
    add_valid();
  }
  NumberInBatchOrder(&batch);
  const std::string log_before = TotalLogCount();
  ASSERT_OK_AND_ASSIGN(auto results, Apply(batch));
  ASSERT_EQ(results.size(), batch.size());

  for (size_t k = 0; k < bad.size(); ++k) {
    const v1::Revision& r = bad[k].revision;
    const v1::RevisionResult& res = results[bad_index[k]];
    SCOPED_TRACE(absl::StrCat("bad revision ", k, ": ", r.payload()));
    EXPECT_EQ(res.revision_id(), r.id());
    EXPECT_EQ(res.outcome(), Outcome::OUTCOME_REJECTED);
    for (const std::string& m : bad[k].reason_mentions) EXPECT_THAT(res.reason(), HasSubstr(m));
    if (!IsUuid(r.object_id())) continue;
    EXPECT_EQ(Query(absl::StrCat("SELECT count(*) FROM public.tasks WHERE id = '", r.object_id(),
                                 "'")),
              "0");
    EXPECT_EQ(LogCount(r.object_id()), "0");
    if (IsUuid(r.id())) {
      EXPECT_EQ(AppliedCount(r.id()), "0");
    }
  }
  for (size_t i = 0; i < batch.size(); ++i) {
    if (std::find(bad_index.begin(), bad_index.end(), i) != bad_index.end()) continue;
    EXPECT_EQ(results[i].outcome(), Outcome::OUTCOME_APPLIED) << i << ": " << results[i].reason();
  }
  for (const std::string& id : valid_ids) {
    EXPECT_EQ(Query(absl::StrCat("SELECT title FROM public.tasks WHERE id = '", id, "'")), "valid");
    EXPECT_EQ(LogCount(id), "1");
  }
  EXPECT_EQ(TotalLogCount(), std::to_string(std::stoi(log_before) + valid_ids.size()));
  EXPECT_EQ(Query("SELECT count(*) FROM public.tasks"), std::to_string(valid_ids.size()));
}

// migrations/0012: a batch whose revisions all apply runs in one
// subtransaction, not one per revision (each of which took its own foreign-key
// locks and made writers of one team queue on multixacts). A row's xmin is
// the (sub)transaction that wrote it, so it tells which path ran.
TEST_F(ApplyPgTest, AValidBatchAppliesInOneSubtransactionAndAFailingOneRevisionByRevision) {
  auto distinct_writers = [&](const std::vector<std::string>& ids) {
    return Query(absl::StrCat("SELECT count(DISTINCT xmin::text) FROM public.tasks WHERE id IN ('",
                              absl::StrJoin(ids, "', '"), "')"));
  };
  std::vector<v1::Revision> batch;
  std::vector<std::string> ids;
  for (int i = 0; i < 20; ++i) {
    ids.push_back(NewUuid());
    batch.push_back(Upsert("task", ids.back(), Task(absl::StrCat("fast ", i)), kT0 + 1));
  }
  ASSERT_OK_AND_ASSIGN(auto results, Apply(batch));
  for (const v1::RevisionResult& r : results) {
    EXPECT_EQ(r.outcome(), Outcome::OUTCOME_APPLIED) << r.reason();
  }
  EXPECT_EQ(distinct_writers(ids), "1");

  // One invalid revision in the middle: the batch is applied again, each
  // revision alone; the others are applied all the same, once.
  batch.clear();
  std::vector<std::string> good;
  for (int i = 0; i < 20; ++i) {
    if (i == 10) {
      batch.push_back(Upsert("task", NewUuid(), Task("bad", R"(,"colour":"red")"), kT0 + 2));
      continue;
    }
    good.push_back(NewUuid());
    batch.push_back(Upsert("task", good.back(), Task(absl::StrCat("slow ", i)), kT0 + 2));
  }
  const std::string log_before = TotalLogCount();
  ASSERT_OK_AND_ASSIGN(results, Apply(batch));
  ASSERT_EQ(results.size(), 20u);
  for (int i = 0; i < 20; ++i) {
    EXPECT_EQ(results[i].outcome(),
              i == 10 ? Outcome::OUTCOME_REJECTED : Outcome::OUTCOME_APPLIED)
        << i << ": " << results[i].reason();
  }
  EXPECT_THAT(results[10].reason(), HasSubstr("colour"));
  EXPECT_EQ(distinct_writers(good), "19");
  EXPECT_EQ(TotalLogCount(), std::to_string(std::stoi(log_before) + 19));
  EXPECT_EQ(Query(absl::StrCat("SELECT count(*) FROM pulsesync.applied_revisions WHERE id IN ('",
                               batch[0].id(), "', '", batch[19].id(), "')")),
            "2");
}

// migrations/0013: the set-based path against the per-revision merge it
// stands in for. The same random batches (creates, edits from several
// origins with and without a base version, deletes, older clocks,
// re-sent revisions) go to two databases, one with set-based apply turned
// off; the outcomes, the rows, the change log, the conflict records and the
// origins must agree. Versions come from each database's own sequence and
// the set-based path numbers a batch's rows in another order, so base
// versions are 0 ("saw nothing": every other origin's edit is concurrent)
// or above any version ("saw everything"), for which the order is moot.
TEST_F(ApplyPgTest, SetBasedAndPerRevisionApplyAgree) {
  ASSERT_OK_AND_ASSIGN(std::unique_ptr<TestDatabase> other, TestDatabase::Create());
  ASSERT_OK(other->Execute(absl::StrCat("ALTER DATABASE ", other->name(),
                                        " SET pulsesync.set_based = 'off'")));
  ASSERT_OK(db_->Execute(absl::StrCat("ALTER DATABASE ", db_->name(),
                                      " SET track_functions = 'all'")));
  session_ = NewSession(*db_);  // with the setting
  std::unique_ptr<PgSession> per_revision = NewSession(*other);
  {
    v1::Revision team = Upsert("team", team_, R"({"name":"Core"})", kT0);
    team.set_seq(1);
    ASSERT_OK_AND_ASSIGN(auto r, ApplyRevisionBatch(*per_revision, {team}, ApplyLimits()));
    ASSERT_EQ(r[0].outcome(), Outcome::OUTCOME_APPLIED) << r[0].reason();
  }

  // PULSESYNC_APPLY_SEED=N runs another seed.
  const char* seed = std::getenv("PULSESYNC_APPLY_SEED");
  std::mt19937 rng(seed != nullptr ? static_cast<unsigned>(std::atoi(seed)) : 20261206u);
  const std::vector<std::string> origins = {"device-a", "device-b", "device-c"};
  std::vector<std::string> objects;
  std::vector<v1::Revision> sent;
  std::map<std::string, int64_t> next_seq = {{"device-a", 1}};  // the team's revision
  int64_t clock = kT0 + 1000;
  for (int b = 0; b < 120; ++b) {
    SCOPED_TRACE(absl::StrCat("batch ", b));
    std::vector<v1::Revision> batch;
    std::set<std::string> in_batch;
    const int n = 1 + static_cast<int>(rng() % 12);
    const bool messy = rng() % 3 == 0;  // may repeat objects, go back in time, delete
    for (int i = 0; i < n; ++i) {
      const std::string& origin = origins[rng() % origins.size()];
      clock += 1 + static_cast<int64_t>(rng() % 5);
      const int64_t at = messy && rng() % 4 == 0 ? clock - 50 : clock;
      const bool create = objects.empty() || rng() % 3 == 0;
      std::string id = create ? NewUuid() : objects[rng() % objects.size()];
      if (!messy && in_batch.count(id) > 0) continue;
      in_batch.insert(id);
      v1::Revision r;
      if (messy && !create && rng() % 5 == 0) {
        r = Delete("task", id, at, origin);
      } else {
        std::string extra;
        if (rng() % 2) extra += absl::StrCat(R"(,"status":")", rng() % 2 ? "todo" : "done", "\"");
        if (rng() % 2) extra += absl::StrCat(R"(,"priority":)", rng() % 4);
        r = Upsert("task", id, Task(absl::StrCat("t", rng() % 3), extra), at, 0, origin);
      }
      r.set_base_version(rng() % 6 == 0 ? 0 : int64_t{1} << 40);
      r.set_seq(++next_seq[origin]);
      if (create) objects.push_back(id);
      batch.push_back(r);
    }
    if (messy && !sent.empty() && rng() % 2) batch.push_back(sent[rng() % sent.size()]);  // again
    ASSERT_OK_AND_ASSIGN(auto set_based, Apply(batch));
    ASSERT_OK_AND_ASSIGN(auto reference, ApplyRevisionBatch(*per_revision, batch, ApplyLimits()));
    ASSERT_EQ(set_based.size(), reference.size());
    for (size_t i = 0; i < batch.size(); ++i) {
      SCOPED_TRACE(absl::StrCat("revision ", i, " ", batch[i].payload()));
      EXPECT_EQ(set_based[i].outcome(), reference[i].outcome()) << reference[i].reason();
      EXPECT_EQ(set_based[i].reason(), reference[i].reason());
      EXPECT_EQ(set_based[i].resolution(), reference[i].resolution());
      EXPECT_EQ(set_based[i].superseded(), reference[i].superseded());
      EXPECT_EQ(set_based[i].conflicts(), reference[i].conflicts());
    }
    for (const v1::Revision& r : batch) sent.push_back(r);
  }

  // Everything but version numbers (and the clocks' version halves).
  const std::string rows =
      "SELECT string_agg(concat_ws('|', id, title, status, priority, deleted, recovered, "
      "last_origin_id, last_revision_id, hlc, live_hlc, deleted_hlc, "
      "(SELECT string_agg(key || '=' || (value ->> 1), ',' ORDER BY key) "
      " FROM jsonb_each(field_clocks))), E'\n' ORDER BY id) FROM public.tasks";
  const std::string log =
      "SELECT string_agg(concat_ws('|', object_id, team_id, op, origin_id, revision_id, "
      "new_row - 'version' - 'updated_at' - 'created_at', "
      "old_row - 'version' - 'updated_at' - 'created_at', claims, db_role), E'\n' "
      "ORDER BY object_id, revision_id, op) "
      "FROM pulsesync.change_log WHERE object_type = 'task'";
  const std::string applied =
      "SELECT string_agg(concat_ws('|', id, origin_id, seq, superseded, resolution, conflicts), "
      "E'\n' ORDER BY id) FROM pulsesync.applied_revisions WHERE object_type = 'task'";
  const std::string conflicts =
      "SELECT string_agg(concat_ws('|', object_id, kind, field, local_value, winning_value, "
      "loser_origin_id), E'\n' ORDER BY object_id, field, local_value::text) "
      "FROM pulsesync.conflicts";
  const std::string seqs =
      "SELECT string_agg(concat_ws('|', origin_id, last_seq, applied, refused), ',' "
      "ORDER BY origin_id) FROM pulsesync.origins";
  for (const std::string& sql : {rows, log, applied, conflicts, seqs}) {
    EXPECT_EQ(Query(sql), Query(*other, sql)) << sql;
  }
  EXPECT_NE(Query("SELECT count(*) FROM public.tasks"), "0");

  // Both paths ran: the set-based one for the plain batches, the per-revision
  // one for the others (a function that raised is not counted).
  ASSERT_OK(session_->RunTransaction(TxMode::kReadWrite, [](pqxx::transaction_base& tx) {
    tx.exec("SELECT pg_stat_force_next_flush()");
    return absl::OkStatus();
  }));
  std::string set_based_batches, fallback_batches;
  ASSERT_TRUE(testing::WaitFor(
      [&] {
        set_based_batches = Query(
            "SELECT coalesce(sum(calls), 0) FROM pg_stat_user_functions "
            "WHERE funcname = 'apply_set_based'");
        fallback_batches = Query(
            "SELECT coalesce(sum(calls), 0) FROM pg_stat_user_functions "
            "WHERE funcname = 'apply_batch'");
        return set_based_batches != "0";
      },
      absl::Seconds(10)))
      << Query("SELECT string_agg(funcname || '=' || calls, ', ') FROM pg_stat_user_functions");
  std::printf("%s batches set-based, %s through the per-revision merge\n",
              set_based_batches.c_str(), fallback_batches.c_str());
  EXPECT_GE(std::stoi(set_based_batches), 30);
  EXPECT_GE(std::stoi(fallback_batches), 10);
}

// A protocol string may carry U+0000 (valid UTF-8, so gRPC accepts it), which
// PostgreSQL text cannot hold. Like any other invalid revision it must be
// rejected alone; it must not fail the whole batch.
TEST_F(ApplyPgTest, NulCharacterInOriginRejectsOnlyThatRevision) {
  const std::string good = NewUuid();
  const v1::Revision good_revision = Upsert("task", good, Task("good"), kT0 + 1);
  v1::Revision nul = Upsert("task", NewUuid(), Task("x"), kT0 + 1, 0, "other");
  nul.set_origin_id(std::string("dev\0ice", 7));
  absl::StatusOr<std::vector<v1::RevisionResult>> results = Apply({good_revision, nul});
  ASSERT_OK(results.status()) << "one bad revision failed the whole batch";
  EXPECT_EQ((*results)[0].outcome(), Outcome::OUTCOME_APPLIED) << (*results)[0].reason();
  EXPECT_EQ((*results)[1].outcome(), Outcome::OUTCOME_REJECTED);
  EXPECT_EQ(Query(absl::StrCat("SELECT title FROM public.tasks WHERE id = '", good, "'")), "good");
}

TEST_F(ApplyPgTest, RevisionIdReusedForAnotherObjectIsRejected) {
  const std::string task = NewUuid();
  const v1::Revision create = Upsert("task", task, Task("First"), kT0 + 1);
  ASSERT_OK_AND_ASSIGN(auto r1, Apply({create}));
  ASSERT_EQ(r1[0].outcome(), Outcome::OUTCOME_APPLIED);

  const std::string other = NewUuid();
  v1::Revision reused = Upsert("task", other, Task("Second"), kT0 + 2);
  reused.set_id(create.id());
  v1::Revision other_origin = Upsert("task", task, Task("Third"), kT0 + 3, 0, "device-z");
  other_origin.set_id(create.id());
  ASSERT_OK_AND_ASSIGN(auto r2, Apply({reused, other_origin}));
  for (const auto& r : r2) {
    EXPECT_EQ(r.outcome(), Outcome::OUTCOME_REJECTED);
    EXPECT_THAT(r.reason(), HasSubstr("already used"));
  }
  EXPECT_EQ(Query(absl::StrCat("SELECT count(*) FROM public.tasks WHERE id = '", other, "'")), "0");
  EXPECT_EQ(Query(absl::StrCat("SELECT title FROM public.tasks WHERE id = '", task, "'")), "First");
  EXPECT_EQ(LogCount(task), "1");
}

TEST_F(ApplyPgTest, OlderClockIsSupersededAndChangesNothing) {
  const std::string task = NewUuid();
  const v1::Revision create = Upsert("task", task, Task("New"), kT0 + 100);
  const std::string created_id = create.id();
  ASSERT_OK_AND_ASSIGN(auto created, Apply({create}));
  ASSERT_EQ(created[0].outcome(), Outcome::OUTCOME_APPLIED);
  const std::string row = TaskRow(task);
  for (v1::Revision old :
       {Upsert("task", task, R"({"title":"Old"})", kT0 + 99),
        Upsert("task", task, R"({"title":"Old"})", kT0 + 100, 0, "device-0")}) {  // tie-break
    old.set_base_version(created[0].version());  // made after seeing the task: no conflict
    ASSERT_OK_AND_ASSIGN(auto r, Apply({old}));
    EXPECT_EQ(r[0].outcome(), Outcome::OUTCOME_APPLIED) << r[0].reason();
    EXPECT_TRUE(r[0].superseded());
    EXPECT_EQ(r[0].resolution(), v1::RevisionResult::RESOLUTION_SUPERSEDED);
    EXPECT_EQ(r[0].version(), created[0].version());
    EXPECT_EQ(AppliedCount(old.id()), "1");
  }
  EXPECT_EQ(TaskRow(task), row);
  EXPECT_EQ(LogCount(task), "1");

  // A delete older than the latest edit loses too, but it is remembered: the
  // task was deleted once and lives because of a later edit ("recovered"),
  // as it would be had the delete arrived first.
  const v1::Revision stale_delete = Delete("task", task, kT0 + 50, "device-b");
  ASSERT_OK_AND_ASSIGN(auto d, Apply({stale_delete}));
  EXPECT_TRUE(d[0].superseded());
  EXPECT_EQ(d[0].resolution(), v1::RevisionResult::RESOLUTION_SUPERSEDED);
  EXPECT_EQ(Query(TaskStateSql(task, "title, deleted, recovered, last_revision_id")),
            absl::StrCat("New|f|t|", created_id));
}

// Applies `revisions` in order into a fresh database (with the team) and
// returns the task's final synced state.
class ApplyOrderTest : public ApplyPgTest {
 protected:
  std::string FinalStateIn(const std::vector<v1::Revision>& revisions, const std::string& task,
                           const std::string& columns = kTaskState) {
    absl::StatusOr<std::unique_ptr<TestDatabase>> db = TestDatabase::Create();
    EXPECT_OK(db.status());
    if (!db.ok()) return "<no database>";
    std::unique_ptr<PgSession> session = NewSession(**db);
    std::vector<v1::Revision> all = {Upsert("team", team_, R"({"name":"Core"})", kT0)};
    all.insert(all.end(), revisions.begin(), revisions.end());
    // Each origin's seqs in this delivery order: the revisions stand for
    // edits of different devices whose arrival order varies.
    std::map<std::string, int64_t> seqs;
    for (v1::Revision r : all) {  // one batch each: separate deliveries
      r.set_seq(++seqs[r.origin_id()]);
      absl::StatusOr<std::vector<v1::RevisionResult>> res =
          ApplyRevisionBatch(*session, {r}, ApplyLimits());
      EXPECT_OK(res.status());
      if (res.ok()) {
        EXPECT_EQ((*res)[0].outcome(), Outcome::OUTCOME_APPLIED) << (*res)[0].reason();
      }
    }
    return Query(**db, TaskStateSql(task, columns));
  }

};

TEST_F(ApplyOrderTest, NewerClockWinsWhateverTheArrivalOrder) {
  const std::string task = NewUuid();
  const v1::Revision create = Upsert("task", task, Task("Created", R"(,"priority":1)"), kT0 + 1);
  const v1::Revision a = Upsert("task", task, R"({"title":"A","priority":2})", kT0 + 10, 5, "a");
  const v1::Revision b = Upsert("task", task, R"({"title":"B","priority":3})", kT0 + 10, 6, "a");
  const std::string forward = FinalStateIn({create, a, b}, task);
  const std::string backward = FinalStateIn({create, b, a}, task);
  EXPECT_EQ(forward, backward);
  EXPECT_THAT(forward, AllOf(HasSubstr("B|"), HasSubstr("|3|"), HasSubstr(b.id())));
}

TEST_F(ApplyOrderTest, OriginBreaksTiesOfEqualClocks) {
  const std::string task = NewUuid();
  const v1::Revision create = Upsert("task", task, Task("Created"), kT0 + 1);
  const v1::Revision a = Upsert("task", task, R"({"title":"from a"})", kT0 + 10, 0, "device-a");
  const v1::Revision b = Upsert("task", task, R"({"title":"from b"})", kT0 + 10, 0, "device-b");
  const std::string forward = FinalStateIn({create, a, b}, task);
  const std::string backward = FinalStateIn({create, b, a}, task);
  EXPECT_EQ(forward, backward);
  EXPECT_THAT(forward, HasSubstr("from b"));
}

TEST_F(ApplyOrderTest, DeleteAndLaterEditConvergeWhateverTheArrivalOrder) {
  const std::string task = NewUuid();
  const v1::Revision create = Upsert("task", task, Task("Created"), kT0 + 1);
  const v1::Revision del = Delete("task", task, kT0 + 10, "device-b");
  const v1::Revision edit = Upsert("task", task, R"({"title":"Edited"})", kT0 + 20);
  const std::string content =
      "title, status, deleted, last_origin_id, last_revision_id, hlc";
  const std::string forward = FinalStateIn({create, del, edit}, task, content);
  const std::string backward = FinalStateIn({create, edit, del}, task, content);
  EXPECT_EQ(forward, backward);
  EXPECT_EQ(forward, absl::StrCat("Edited|todo|f|device-a|", edit.id(), "|",
                                  HlcText(kT0 + 20, 0, "device-a")));
}

// The same two revisions: the edit is newer than the delete, so in clock
// order the task was deleted and then re-created by the edit ("recovered").
// Which of them reached the server first must not decide the flag.
TEST_F(ApplyOrderTest, RecoveredFlagDoesNotDependOnTheArrivalOrder) {
  const std::string task = NewUuid();
  const v1::Revision create = Upsert("task", task, Task("Created"), kT0 + 1);
  const v1::Revision del = Delete("task", task, kT0 + 10, "device-b");
  const v1::Revision edit = Upsert("task", task, R"({"title":"Edited"})", kT0 + 20);
  const std::string forward = FinalStateIn({create, del, edit}, task, "recovered");
  const std::string backward = FinalStateIn({create, edit, del}, task, "recovered");
  EXPECT_EQ(forward, "t");
  EXPECT_EQ(backward, forward) << "recovered is set only when the delete arrived first";
}

// DESIGN.md: "every client and the server reach the same state whatever the
// order of delivery". Two edits of different fields of one task, delivered in
// either order, must leave the same row.
TEST_F(ApplyOrderTest, EditsOfDifferentFieldsConvergeWhateverTheArrivalOrder) {
  const std::string task = NewUuid();
  const v1::Revision create = Upsert("task", task, Task("Created"), kT0 + 1);
  const v1::Revision title = Upsert("task", task, R"({"title":"Renamed"})", kT0 + 10, 0, "a");
  const v1::Revision status = Upsert("task", task, R"({"status":"done"})", kT0 + 20, 0, "b");
  const std::string forward = FinalStateIn({create, title, status}, task);
  const std::string backward = FinalStateIn({create, status, title}, task);
  EXPECT_EQ(forward, backward) << "the arrival order decided the final row";
}

// The same, for a delete that reaches the server before the object's
// (earlier) creation: the delete is newer and must win in both orders.
TEST_F(ApplyOrderTest, DeleteArrivingBeforeTheCreateStillWins) {
  const std::string task = NewUuid();
  const v1::Revision create = Upsert("task", task, Task("Created"), kT0 + 1);
  const v1::Revision del = Delete("task", task, kT0 + 10, "device-b");
  const std::string forward = FinalStateIn({create, del}, task);
  const std::string backward = FinalStateIn({del, create}, task);
  EXPECT_EQ(forward, backward) << "the arrival order decided whether the task exists";
  EXPECT_THAT(backward, HasSubstr("|t|f|device-b|"));  // deleted, by the delete
}

TEST_F(ApplyPgTest, UpsertLaterThanADeleteRecreatesItAsRecovered) {
  const std::string task = NewUuid();
  ASSERT_OK_AND_ASSIGN(auto r, Apply({Upsert("task", task, Task("Original", R"(,"priority":4)"),
                                             kT0 + 1),
                                      Delete("task", task, kT0 + 10, "device-b")}));
  ASSERT_EQ(r[1].outcome(), Outcome::OUTCOME_APPLIED);
  ASSERT_EQ(Query(absl::StrCat("SELECT deleted FROM public.tasks WHERE id = '", task, "'")), "t");

  // An edit made before the delete stays deleted; its title is the latest
  // title by clock, kept under the tombstone as if it had arrived in order.
  ASSERT_OK_AND_ASSIGN(auto older, Apply({Upsert("task", task, R"({"title":"Stale"})", kT0 + 5)}));
  EXPECT_TRUE(older[0].superseded());
  EXPECT_EQ(Query(absl::StrCat("SELECT concat_ws('|', title, deleted, recovered) FROM "
                               "public.tasks WHERE id = '", task, "'")),
            "Stale|t|f");

  // An edit made after it re-creates the task, flagged.
  ASSERT_OK_AND_ASSIGN(auto later, Apply({Upsert("task", task, R"({"title":"Back"})", kT0 + 20)}));
  EXPECT_EQ(later[0].outcome(), Outcome::OUTCOME_APPLIED);
  EXPECT_FALSE(later[0].superseded());
  EXPECT_GT(later[0].version(), r[1].version());
  EXPECT_EQ(Query(absl::StrCat("SELECT concat_ws('|', title, priority, deleted, recovered, version) "
                               "FROM public.tasks WHERE id = '", task, "'")),
            absl::StrCat("Back|4|f|t|", later[0].version()));
  EXPECT_EQ(later[0].resolution(), v1::RevisionResult::RESOLUTION_RECOVERED);
  EXPECT_EQ(Query(absl::StrCat("SELECT string_agg(op, ',' ORDER BY position) FROM "
                               "pulsesync.change_log WHERE object_id = '", task, "'")),
            "INSERT,DELETE,UPDATE,UPDATE");
}

TEST_F(ApplyPgTest, VersionsStrictlyIncreasePerObject) {
  const std::string task = NewUuid();
  const std::string other = NewUuid();
  int64_t last = 0;
  for (int i = 0; i < 6; ++i) {
    std::vector<v1::Revision> batch = {
        Upsert("task", task, Task(absl::StrCat("v", i)), kT0 + 1 + i),
        Upsert("task", other, Task(absl::StrCat("o", i)), kT0 + 1 + i)};
    if (i == 3) batch.push_back(Delete("task", task, kT0 + 1 + i, "device-z"));  // tie: z wins
    ASSERT_OK_AND_ASSIGN(auto r, Apply(batch));
    for (const auto& res : r) {
      ASSERT_EQ(res.outcome(), Outcome::OUTCOME_APPLIED) << res.reason();
      ASSERT_FALSE(res.superseded());
    }
    EXPECT_GT(r[0].version(), last);
    last = r[0].version();
    if (batch.size() == 3) {
      EXPECT_GT(r[2].version(), r[0].version());
      last = r[2].version();
    }
    EXPECT_EQ(Query(absl::StrCat("SELECT version FROM public.tasks WHERE id = '", task, "'")),
              std::to_string(last));
  }
  // In the log too, in position order.
  EXPECT_EQ(Query(absl::StrCat(
                "SELECT bool_and(d > 0) FROM (SELECT version - lag(version) OVER (ORDER BY "
                "position) AS d FROM pulsesync.change_log WHERE object_id = '", task,
                "') s WHERE d IS NOT NULL")),
            "t");
  EXPECT_EQ(LogCount(task), "7");
}

// stamp_row (0015): a revision's field clock entries at version 0 take the
// row's new version, others stay as written. Replaced in the clocks' text
// when that is safe; by a query when a key holds a quote (the text has a
// backslash) or an entry has no clock. Every path must give the same.
// A set-based INSERT builds new rows' field clocks with one
// jsonb_build_object of the field set; past 50 fields (a function takes at
// most 100 arguments) it aggregates them instead. Both must stay set-based
// and give every field its clock.
TEST_F(ApplyPgTest, ANewRowOfManyFieldsGetsAClockForEach) {
  std::string columns;
  for (int i = 1; i <= 55; ++i) absl::StrAppend(&columns, ", c", i, " int");
  ASSERT_OK(db_->Execute(absl::StrCat("CREATE TABLE public.wide (id uuid PRIMARY KEY", columns,
                                      "); SELECT pulsesync.register_table('public.wide', 'wide', "
                                      "NULL)")));
  for (const int fields : {3, 55}) {
    SCOPED_TRACE(fields);
    const std::string id = NewUuid();
    std::string body;
    for (int i = 1; i <= fields; ++i) absl::StrAppend(&body, i > 1 ? "," : "", "\"c", i, "\":", i);
    const std::string revision = absl::StrCat(
        R"([{"id":")", NewUuid(), R"(","object_type":"wide","object_id":")", id,
        R"(","origin_id":"wide-)", fields, R"(","seq":1,"op":"upsert","payload":)",
        JsonQuote("{" + body + "}"), R"(,"created_at":1700000000000,"base_version":0,)",
        R"("schema_version":0,"hlc":"001700000000000-0000000000-wide"}])");
    // Directly: a fallback to the per-revision path would hide a failure.
    EXPECT_EQ(Query(absl::StrCat("SELECT string_agg(outcome || '/' || resolution, ',') FROM "
                                 "pulsesync.apply_set_based($j$", revision, "$j$::jsonb)")),
              "applied/applied");
    EXPECT_EQ(Query(absl::StrCat("SELECT count(*) FILTER (WHERE (c.value ->> 0)::bigint = "
                                 "w.version) || '/' || count(*) FROM public.wide w, "
                                 "jsonb_each(w.field_clocks) c WHERE w.id = '", id, "'")),
              absl::StrCat(fields, "/", fields));
    EXPECT_EQ(Query(absl::StrCat("SELECT c", fields, " FROM public.wide WHERE id = '", id, "'")),
              std::to_string(fields));
  }
}

TEST_F(ApplyPgTest, ARevisionsZeroClockEntriesTakeTheRowsVersion) {
  struct Case {
    std::string clocks;  // as written
    std::string want;    // V = the row's version
  };
  for (const Case& c : std::vector<Case>{
           {R"({"name": [0, "h1"], "other": [7, "h0"]})",
            R"({"name": [V, "h1"], "other": [7, "h0"]})"},
           {R"({"na\"me": [0, "h2"], "name": [0, "h1"]})",
            R"({"na\"me": [V, "h2"], "name": [V, "h1"]})"},
           {R"({"name": [0], "x": [3, "h"]})", R"({"name": [V, null], "x": [3, "h"]})"},
           {R"({"name": [0, "a\": [0, b"]})", R"({"name": [V, "a\": [0, b"]})"},
       }) {
    SCOPED_TRACE(c.clocks);
    const std::string id = NewUuid();
    ASSERT_OK(db_->Execute(absl::StrCat(
        "SELECT set_config('pulsesync.revision', '", NewUuid(), "', true);"
        "INSERT INTO teams (id, name, field_clocks) VALUES ('", id, "', 't', $c$", c.clocks,
        "$c$::jsonb)")));
    const std::string where = absl::StrCat(" FROM teams WHERE id = '", id, "'");
    EXPECT_EQ(Query("SELECT field_clocks::text" + where),
              Query(absl::StrCat("SELECT replace($w$", c.want,
                                 "$w$, 'V', version::text)::jsonb::text", where)));
  }
}

TEST_F(ApplyPgTest, SqlHlcTextMatchesHlcText) {
  struct Clock {
    int64_t ms;
    uint32_t counter;
    std::string origin;
  };
  for (const Clock& c : std::vector<Clock>{{0, 0, ""},
                                           {1, 2, "a"},
                                           {kT0, 0, "device-a"},
                                           {kT0, 4294967295u, "dev-\xc3\xa9"},
                                           {999999999999999, 17, "z"}}) {
    SCOPED_TRACE(c.ms);
    EXPECT_EQ(Query(absl::StrCat("SELECT pulsesync.hlc_text(", c.ms, ", ", c.counter, ", '",
                                 c.origin, "')")),
              HlcText(c.ms, c.counter, c.origin));
  }
}

TEST_F(ApplyPgTest, PlainSqlWritesAreCapturedWithoutOrigin) {
  const std::string task = NewUuid();
  ASSERT_OK(db_->Execute(absl::StrCat("INSERT INTO public.tasks (id, team_id, title) VALUES ('",
                                      task, "', '", team_, "', 'by psql')")));
  ASSERT_OK(db_->Execute(
      absl::StrCat("UPDATE public.tasks SET status = 'doing' WHERE id = '", task, "'")));
  ASSERT_OK(db_->Execute(absl::StrCat("DELETE FROM public.tasks WHERE id = '", task, "'")));
  EXPECT_EQ(Query(absl::StrCat(
                "SELECT string_agg(concat_ws('|', op, coalesce(origin_id, '-'), "
                "coalesce(revision_id::text, '-'), new_row->>'status', old_row->>'status', "
                "team_id), ',' ORDER BY position) FROM pulsesync.change_log WHERE object_id = '",
                task, "'")),
            absl::StrCat("INSERT|-|-|todo|", team_, ",UPDATE|-|-|doing|todo|", team_,
                         ",DELETE|-|-|doing|", team_));
  // The hard DELETE carries the old row and no new row, and a new version.
  EXPECT_EQ(Query(absl::StrCat("SELECT concat_ws('|', new_row IS NULL, old_row->>'title') FROM "
                               "pulsesync.change_log WHERE object_id = '", task,
                               "' AND op = 'DELETE'")),
            "t|by psql");
  EXPECT_EQ(Query(absl::StrCat("SELECT bool_and(d > 0) FROM (SELECT version - lag(version) OVER "
                               "(ORDER BY position) AS d FROM pulsesync.change_log WHERE "
                               "object_id = '", task, "') s WHERE d IS NOT NULL")),
            "t");
}

TEST_F(ApplyPgTest, PlainSqlUpdateOfARevisionsRowClearsItsOrigin) {
  const std::string task = NewUuid();
  ASSERT_OK_AND_ASSIGN(auto r, Apply({Upsert("task", task, Task("From a device"), kT0 + 1)}));
  ASSERT_EQ(r[0].outcome(), Outcome::OUTCOME_APPLIED);
  ASSERT_OK(db_->Execute(
      absl::StrCat("UPDATE public.tasks SET title = 'by psql' WHERE id = '", task, "'")));
  EXPECT_EQ(Query(absl::StrCat("SELECT concat_ws('|', title, last_origin_id IS NULL, "
                               "last_revision_id IS NULL, hlc LIKE '%-0000000000-', version > ",
                               r[0].version(), ") FROM public.tasks WHERE id = '", task, "'")),
            "by psql|t|t|t|t");
  EXPECT_EQ(Query(absl::StrCat("SELECT concat_ws('|', op, origin_id IS NULL, revision_id IS NULL) "
                               "FROM pulsesync.change_log WHERE object_id = '", task,
                               "' ORDER BY position DESC LIMIT 1")),
            "UPDATE|t|t");
}

}  // namespace
}  // namespace pulsesync

// The conflict rules of docs/CONFLICTS.md, one test per rule, against a real
// PostgreSQL through the same entry point the server uses.
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/uuid.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "pulsesync/v1/sync.pb.h"
#include "server/core/revision_applier.h"
#include "server/storage/pg_session.h"
#include "tests/testing/status_matchers.h"
#include "tests/testing/test_database.h"

namespace pulsesync {
namespace {

using ::pulsesync::testing::TestDatabase;
using ::testing::HasSubstr;
using Outcome = v1::RevisionResult;
using Resolution = v1::RevisionResult;

constexpr int64_t kT0 = 1'700'000'000'000;

class ConflictsPgTest : public ::testing::Test {
 protected:
  void SetUp() override {
    PS_REQUIRE_POSTGRES();
    ASSERT_OK_AND_ASSIGN(db_, TestDatabase::Create());
    PgSessionOptions options;
    options.database_url = db_->url();
    options.statements = RevisionApplierStatements();
    session_ = std::make_unique<PgSession>(options);
    team_ = NewUuid();
    task_ = NewUuid();
    ASSERT_EQ(Apply1(Upsert("team", team_, R"({"name":"Core"})", kT0)).outcome(),
              Outcome::OUTCOME_APPLIED);
    const v1::RevisionResult created = Apply1(Upsert(
        "task", task_,
        absl::StrCat(R"({"team_id":")", team_, R"(","title":"Draft","priority":1})"), kT0 + 1));
    ASSERT_EQ(created.outcome(), Outcome::OUTCOME_APPLIED) << created.reason();
    base_ = created.version();
  }

  // A revision of `origin` with its next seq, based on `base`.
  v1::Revision Upsert(const std::string& type, const std::string& id, const std::string& payload,
                      int64_t ms, const std::string& origin = "device-a", int64_t base = 0) {
    v1::Revision r;
    r.set_id(NewUuid());
    r.set_object_type(type);
    r.set_object_id(id);
    r.set_origin_id(origin);
    r.set_seq(++seqs_[origin]);
    r.set_op(v1::OPERATION_UPSERT);
    r.set_payload(payload);
    r.set_created_at(ms);
    r.set_base_version(base);
    r.mutable_clock()->set_physical_ms(ms);
    return r;
  }
  v1::Revision Edit(const std::string& payload, int64_t ms, const std::string& origin,
                    int64_t base) {
    return Upsert("task", task_, payload, ms, origin, base);
  }
  v1::Revision Delete(int64_t ms, const std::string& origin, int64_t base) {
    v1::Revision r = Upsert("task", task_, "", ms, origin, base);
    r.set_op(v1::OPERATION_DELETE);
    return r;
  }

  std::vector<v1::RevisionResult> Apply(const std::vector<v1::Revision>& revisions,
                                        const TxIdentity& identity = {}) {
    absl::StatusOr<std::vector<v1::RevisionResult>> r =
        ApplyRevisionBatch(*session_, revisions, ApplyLimits(), identity);
    EXPECT_OK(r.status());
    return r.ok() ? *r : std::vector<v1::RevisionResult>(revisions.size());
  }
  v1::RevisionResult Apply1(const v1::Revision& r, const TxIdentity& identity = {}) {
    return Apply({r}, identity)[0];
  }

  std::string Query(const std::string& sql) {
    absl::StatusOr<std::string> v = db_->QueryValue(sql);
    EXPECT_OK(v) << sql;
    return v.ok() ? *v : "<error: " + v.status().ToString() + ">";
  }
  std::string Task(const std::string& columns) {
    return Query(absl::StrCat("SELECT concat_ws('|', ", columns, ") FROM public.tasks WHERE id = '",
                              task_, "'"));
  }
  std::string Conflicts(const std::string& columns) {
    return Query(absl::StrCat("SELECT coalesce(string_agg(concat_ws('|', ", columns,
                              "), E'\\n' ORDER BY field), '') FROM pulsesync.conflicts "
                              "WHERE object_id = '",
                              task_, "'"));
  }

  std::unique_ptr<TestDatabase> db_;
  std::unique_ptr<PgSession> session_;
  std::map<std::string, int64_t> seqs_;
  std::string team_;
  std::string task_;
  int64_t base_ = 0;  // the task's version after its creation
};

TEST_F(ConflictsPgTest, ConcurrentEditsOfDifferentFieldsAreBothKept) {
  const auto a = Apply1(Edit(R"({"title":"Renamed"})", kT0 + 10, "device-a", base_));
  const auto b = Apply1(Edit(R"({"priority":5})", kT0 + 5, "device-b", base_));
  EXPECT_EQ(a.resolution(), Resolution::RESOLUTION_APPLIED);
  // b is older by clock, but nobody else wrote its field: it applies.
  EXPECT_EQ(b.resolution(), Resolution::RESOLUTION_MERGED);
  EXPECT_FALSE(b.superseded());
  EXPECT_EQ(Task("title, priority"), "Renamed|5");
  EXPECT_EQ(Conflicts("field"), "");
}

TEST_F(ConflictsPgTest, OverlappingEditLaterByClockWinsAndTheLoserIsKept) {
  const v1::Revision a = Edit(R"({"title":"From A","priority":2})", kT0 + 10, "device-a", base_);
  const v1::Revision b = Edit(R"({"title":"From B"})", kT0 + 20, "device-b", base_);
  EXPECT_EQ(Apply1(a).resolution(), Resolution::RESOLUTION_APPLIED);
  const v1::RevisionResult rb = Apply1(b);
  EXPECT_EQ(rb.resolution(), Resolution::RESOLUTION_CONFLICT);
  EXPECT_EQ(rb.conflicts(), 1u);
  EXPECT_EQ(Task("title, priority"), "From B|2");
  EXPECT_EQ(Conflicts("kind, field, local_value, winning_value, loser_origin_id, "
                      "winner_origin_id, winner_revision_id, team_id, resolved"),
            absl::StrCat("field|title|\"From A\"|\"From B\"|device-a|device-b|", b.id(), "|", team_,
                         "|f"));
  // The record is a synced object like any other: in the change log, with the
  // object's team, for the team's clients.
  EXPECT_EQ(Query(absl::StrCat("SELECT concat_ws('|', op, team_id, revision_id) FROM "
                               "pulsesync.change_log WHERE object_type = 'conflict'")),
            absl::StrCat("INSERT|", team_, "|", b.id()));
}

TEST_F(ConflictsPgTest, OverlappingEditThatArrivesLateAndIsOlderLoses) {
  const v1::Revision a = Edit(R"({"title":"From A"})", kT0 + 20, "device-a", base_);
  const v1::Revision b = Edit(R"({"title":"From B"})", kT0 + 10, "device-b", base_);
  Apply1(a);
  const v1::RevisionResult rb = Apply1(b);
  EXPECT_EQ(rb.outcome(), Outcome::OUTCOME_APPLIED);
  EXPECT_EQ(rb.resolution(), Resolution::RESOLUTION_CONFLICT);
  EXPECT_TRUE(rb.superseded());
  EXPECT_EQ(Task("title"), "From A");
  EXPECT_EQ(Conflicts("field, local_value, winning_value, loser_origin_id, loser_revision_id"),
            absl::StrCat("title|\"From B\"|\"From A\"|device-b|", b.id()));
}

TEST_F(ConflictsPgTest, EqualClocksAreBrokenByOriginId) {
  Apply1(Edit(R"({"title":"From Z"})", kT0 + 10, "device-z", base_));
  Apply1(Edit(R"({"title":"From A"})", kT0 + 10, "device-a", base_));
  EXPECT_EQ(Task("title"), "From Z");
  EXPECT_EQ(Conflicts("loser_origin_id, winner_origin_id"), "device-a|device-z");
}

TEST_F(ConflictsPgTest, EditsBasedOnTheLatestVersionAreNoConflict) {
  const auto a = Apply1(Edit(R"({"title":"One"})", kT0 + 10, "device-a", base_));
  // b saw a's write (its base is a's version).
  const auto b = Apply1(Edit(R"({"title":"Two"})", kT0 + 20, "device-b", a.version()));
  EXPECT_EQ(b.resolution(), Resolution::RESOLUTION_APPLIED);
  EXPECT_EQ(Conflicts("field"), "");
  // Nor are a device's own successive edits from one old base.
  const auto c1 = Apply1(Edit(R"({"title":"Three"})", kT0 + 30, "device-c", base_));
  const auto c2 = Apply1(Edit(R"({"title":"Four"})", kT0 + 40, "device-c", base_));
  EXPECT_EQ(c2.conflicts(), 0u);
  EXPECT_EQ(Task("title"), "Four");
  EXPECT_EQ(Conflicts("field, local_value"), "title|\"Two\"") << "only c1 against b";
  (void)c1;
}

TEST_F(ConflictsPgTest, SameValueOnBothSidesIsNoConflict) {
  Apply1(Edit(R"({"title":"Same"})", kT0 + 10, "device-a", base_));
  const auto b = Apply1(Edit(R"({"title":"Same"})", kT0 + 20, "device-b", base_));
  EXPECT_EQ(b.conflicts(), 0u);
  EXPECT_EQ(Conflicts("field"), "");
}

TEST_F(ConflictsPgTest, DirectSqlWritesTakePartAndWinOverASkewedDeviceClock) {
  // A device whose clock runs an hour ahead writes the title...
  Apply1(Edit(R"({"title":"From the future"})", kT0 + 3'600'000, "device-a", base_));
  // ...then an operator fixes it in SQL: the later write, whatever the clocks.
  ASSERT_OK(db_->Execute(
      absl::StrCat("UPDATE public.tasks SET title = 'Fixed in SQL' WHERE id = '", task_, "'")));
  EXPECT_EQ(Task("title, last_origin_id IS NULL"), "Fixed in SQL|t");
  // A revision of the device that had not seen the fix loses (and is kept).
  const auto late = Apply1(Edit(R"({"title":"Again"})", kT0 + 3'600'000 - 1, "device-b", base_));
  EXPECT_TRUE(late.superseded());
  EXPECT_EQ(Task("title"), "Fixed in SQL");
  EXPECT_EQ(Conflicts("local_value, winning_value"), "\"Again\"|\"Fixed in SQL\"");
}

TEST_F(ConflictsPgTest, EditLaterThanARemoteDeleteRecreatesTheObjectAsRecovered) {
  const auto del = Apply1(Delete(kT0 + 10, "device-b", base_));
  ASSERT_EQ(Task("deleted"), "t");
  const auto edit = Apply1(Edit(R"({"priority":9})", kT0 + 20, "device-a", base_));
  EXPECT_EQ(edit.resolution(), Resolution::RESOLUTION_RECOVERED);
  EXPECT_EQ(Task("title, priority, deleted, recovered"), "Draft|9|f|t");
  EXPECT_GT(edit.version(), del.version());
}

TEST_F(ConflictsPgTest, DeleteLaterThanAConcurrentEditWinsAndKeepsTheEdit) {
  Apply1(Edit(R"({"priority":9})", kT0 + 10, "device-a", base_));
  const auto del = Apply1(Delete(kT0 + 20, "device-b", base_));
  EXPECT_EQ(del.resolution(), Resolution::RESOLUTION_CONFLICT);
  EXPECT_FALSE(del.superseded());
  EXPECT_EQ(Task("deleted, recovered"), "t|f");
  EXPECT_EQ(Conflicts("kind, local_value, loser_origin_id, winner_origin_id"),
            "deleted|{\"priority\": 9}|device-a|device-b");
}

TEST_F(ConflictsPgTest, EditOlderThanADeleteStaysDeletedAndIsKept) {
  Apply1(Delete(kT0 + 20, "device-b", base_));
  const auto edit = Apply1(Edit(R"({"priority":9})", kT0 + 10, "device-a", base_));
  EXPECT_TRUE(edit.superseded());
  EXPECT_EQ(Task("deleted, recovered"), "t|f");
  EXPECT_EQ(Conflicts("kind, local_value, loser_origin_id, winner_origin_id"),
            "deleted|{\"priority\": 9}|device-a|device-b");
}

TEST_F(ConflictsPgTest, RevisionsOfAnOriginApplyInSeqOrderOnly) {
  v1::Revision six = Edit(R"({"title":"Six"})", kT0 + 10, "device-a", base_);
  v1::Revision seven = Edit(R"({"title":"Seven"})", kT0 + 20, "device-a", base_);
  const auto early = Apply1(seven);
  EXPECT_EQ(early.outcome(), Outcome::OUTCOME_OUT_OF_ORDER);
  EXPECT_THAT(early.reason(), HasSubstr(absl::StrCat("arrived before seq ", six.seq())));
  EXPECT_EQ(Task("title"), "Draft") << "nothing of it applied";
  EXPECT_EQ(Query(absl::StrCat("SELECT count(*) FROM pulsesync.applied_revisions WHERE id = '",
                               seven.id(), "'")),
            "0");
  EXPECT_EQ(Query(absl::StrCat("SELECT outcome FROM pulsesync.refused_revisions WHERE id = '",
                               seven.id(), "'")),
            "out_of_order");
  // Once six is there, seven applies.
  const auto both = Apply({six, seven});
  EXPECT_EQ(both[0].outcome(), Outcome::OUTCOME_APPLIED);
  EXPECT_EQ(both[1].outcome(), Outcome::OUTCOME_APPLIED);
  EXPECT_EQ(Task("title"), "Seven");
}

TEST_F(ConflictsPgTest, ARejectedRevisionUsesUpItsSeqAndAnswersTheSameWhenResent) {
  const v1::Revision bad = Edit(R"({"colour":"red"})", kT0 + 10, "device-a", base_);
  const v1::Revision next = Edit(R"({"title":"Next"})", kT0 + 20, "device-a", base_);
  const auto r = Apply({bad, next});
  EXPECT_EQ(r[0].outcome(), Outcome::OUTCOME_REJECTED);
  EXPECT_THAT(r[0].reason(), HasSubstr("colour"));
  EXPECT_EQ(r[1].outcome(), Outcome::OUTCOME_APPLIED);
  const auto again = Apply({bad, next});
  EXPECT_EQ(again[0].outcome(), Outcome::OUTCOME_REJECTED);
  EXPECT_EQ(again[0].reason(), r[0].reason());
  EXPECT_EQ(again[1].outcome(), Outcome::OUTCOME_DUPLICATE);
  // A revision refused before SQL (a payload that is not JSON) too.
  const v1::Revision garbled = Edit("{not json", kT0 + 30, "device-a", base_);
  const v1::Revision after = Edit(R"({"title":"After"})", kT0 + 40, "device-a", base_);
  const auto r2 = Apply({garbled, after});
  EXPECT_EQ(r2[0].outcome(), Outcome::OUTCOME_REJECTED);
  EXPECT_EQ(r2[1].outcome(), Outcome::OUTCOME_APPLIED) << r2[1].reason();
  EXPECT_EQ(Query("SELECT concat_ws('|', last_seq, applied, refused) FROM pulsesync.origins "
                  "WHERE origin_id = 'device-a'"),
            absl::StrCat(after.seq(), "|", after.seq() - 2, "|2"));
}

TEST_F(ConflictsPgTest, AnOriginBelongsToTheUserWhoFirstUsedIt) {
  const std::string alice = NewUuid(), mallory = NewUuid();
  ASSERT_OK(db_->Execute(absl::StrCat(
      "INSERT INTO public.users (id) VALUES ('", alice, "'), ('", mallory, "');"
      "INSERT INTO public.team_members (id, team_id, user_id) VALUES (gen_random_uuid(), '",
      team_, "', '", alice, "'), (gen_random_uuid(), '", team_, "', '", mallory, "')")));
  auto as = [](const std::string& user) {
    return TxIdentity{"authenticated",
                      absl::StrCat(R"({"sub":")", user, R"(","role":"authenticated"})")};
  };
  const auto mine = Apply1(Edit(R"({"title":"Alice"})", kT0 + 10, "alice-laptop", base_), as(alice));
  ASSERT_EQ(mine.outcome(), Outcome::OUTCOME_APPLIED) << mine.reason();
  const v1::Revision spoof = Edit(R"({"title":"Mallory"})", kT0 + 20, "alice-laptop", base_);
  const auto r = Apply1(spoof, as(mallory));
  EXPECT_EQ(r.outcome(), Outcome::OUTCOME_REJECTED);
  EXPECT_THAT(r.reason(), HasSubstr("belongs to another user"));
  EXPECT_EQ(Task("title"), "Alice");
  // Alice's next seq is still hers to use.
  v1::Revision next = Edit(R"({"title":"Alice 2"})", kT0 + 30, "alice-laptop", base_);
  next.set_seq(spoof.seq());
  EXPECT_EQ(Apply1(next, as(alice)).outcome(), Outcome::OUTCOME_APPLIED);
  EXPECT_EQ(Task("title"), "Alice 2");
}

TEST_F(ConflictsPgTest, OldSchemaPayloadsAreUpgradedBeforeTheMerge) {
  EXPECT_EQ(Query("SELECT pulsesync.schema_version()"), "2");
  v1::Revision archive = Edit(R"({"status":"archived"})", kT0 + 10, "old-client", base_);
  archive.set_schema_version(1);
  const auto r = Apply1(archive);
  ASSERT_EQ(r.outcome(), Outcome::OUTCOME_APPLIED) << r.reason();
  EXPECT_EQ(Task("status, is_archived"), "todo|t");
  v1::Revision reopen = Edit(R"({"status":"doing"})", kT0 + 20, "old-client", base_);
  reopen.set_schema_version(1);
  Apply1(reopen);
  EXPECT_EQ(Task("status, is_archived"), "doing|f");
  // The same payload from a version 2 client is not rewritten: "archived" is
  // no status any more.
  v1::Revision v2 = Edit(R"({"status":"archived"})", kT0 + 30, "new-client", base_);
  v2.set_schema_version(2);
  const auto rejected = Apply1(v2);
  EXPECT_EQ(rejected.outcome(), Outcome::OUTCOME_REJECTED);
  EXPECT_THAT(rejected.reason(), HasSubstr("tasks_status_v2"));
  v1::Revision future = Edit(R"({"title":"x"})", kT0 + 40, "new-client", base_);
  future.set_schema_version(3);
  const auto too_new = Apply1(future);
  EXPECT_EQ(too_new.outcome(), Outcome::OUTCOME_REJECTED);
  EXPECT_THAT(too_new.reason(), HasSubstr("schema version 3 is newer"));
}

TEST_F(ConflictsPgTest, AConflictIsResolvedByARevisionOfTheRecord) {
  Apply1(Edit(R"({"title":"From A"})", kT0 + 10, "device-a", base_));
  Apply1(Edit(R"({"title":"From B"})", kT0 + 20, "device-b", base_));
  const std::string conflict = Query(
      absl::StrCat("SELECT id FROM pulsesync.conflicts WHERE object_id = '", task_, "'"));
  const std::string alice = NewUuid();
  ASSERT_OK(db_->Execute(absl::StrCat(
      "INSERT INTO public.users (id) VALUES ('", alice, "');"
      "INSERT INTO public.team_members (id, team_id, user_id) VALUES (gen_random_uuid(), '",
      team_, "', '", alice, "')")));
  const TxIdentity as_alice{"authenticated",
                            absl::StrCat(R"({"sub":")", alice, R"(","role":"authenticated"})")};
  const auto tamper = Apply1(Upsert("conflict", conflict, R"({"local_value":"\"evil\""})",
                                    kT0 + 25, "alice-phone"),
                             as_alice);
  EXPECT_EQ(tamper.outcome(), Outcome::OUTCOME_REJECTED);
  EXPECT_THAT(tamper.reason(), HasSubstr("permission denied"));
  const auto close = Apply1(Upsert("conflict", conflict,
                                   R"({"resolved":true,"resolution":"theirs"})", kT0 + 30,
                                   "alice-phone"),
                            as_alice);
  EXPECT_EQ(close.outcome(), Outcome::OUTCOME_APPLIED) << close.reason();
  EXPECT_EQ(Conflicts("resolved, resolution, local_value"), "t|theirs|\"From A\"");
}

TEST_F(ConflictsPgTest, DuplicateAnswersWithTheFirstResolution) {
  Apply1(Edit(R"({"title":"From A"})", kT0 + 10, "device-a", base_));
  const v1::Revision b = Edit(R"({"title":"From B"})", kT0 + 20, "device-b", base_);
  const auto first = Apply1(b);
  const auto again = Apply1(b);
  EXPECT_EQ(again.outcome(), Outcome::OUTCOME_DUPLICATE);
  EXPECT_EQ(again.resolution(), first.resolution());
  EXPECT_EQ(again.conflicts(), first.conflicts());
  EXPECT_EQ(Query(absl::StrCat("SELECT count(*) FROM pulsesync.conflicts WHERE object_id = '",
                               task_, "'")),
            "1");
}

}  // namespace
}  // namespace pulsesync

// The audit trail (docs/AUDIT.md) against a real PostgreSQL: an entry for
// every outcome, each fact once; excluded fields; feed compaction that keeps
// the trail and audit retention that leaves a checkpoint; the hash chain
// catching an edit, a deletion, a reordering and an insertion; the
// supa_audit-shaped view; the team scope of the reader.
#include <openssl/sha.h>

#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "common/uuid.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "pulsesync/v1/sync.pb.h"
#include "server/core/audit_chain.h"
#include "server/core/audit_trail.h"
#include "server/core/change_feed.h"
#include "server/core/revision_applier.h"
#include "server/storage/pg_session.h"
#include "tests/testing/status_matchers.h"
#include "tests/testing/subprocess.h"
#include "tests/testing/test_database.h"

namespace pulsesync {
namespace {

using ::pulsesync::testing::TestDatabase;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using Resolution = v1::RevisionResult;

constexpr int64_t kT0 = 1'700'000'000'000;

class AuditPgTest : public ::testing::Test {
 protected:
  void SetUp() override {
    PS_REQUIRE_POSTGRES();
    ASSERT_OK_AND_ASSIGN(db_, TestDatabase::Create());
    PgSessionOptions options;
    options.database_url = db_->url();
    options.statements = RevisionApplierStatements();
    for (auto& s : ChangeFeedStatements()) options.statements.push_back(s);
    session_ = std::make_unique<PgSession>(options);
    team_ = NewUuid();
    task_ = NewUuid();
    ASSERT_EQ(Apply1(Upsert("team", team_, R"({"name":"Core"})", kT0)).outcome(),
              v1::RevisionResult::OUTCOME_APPLIED);
    const v1::RevisionResult created = Apply1(Upsert(
        "task", task_,
        absl::StrCat(R"({"team_id":")", team_, R"(","title":"Draft","priority":1})"), kT0 + 1));
    ASSERT_EQ(created.outcome(), v1::RevisionResult::OUTCOME_APPLIED) << created.reason();
    base_ = created.version();
  }

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
  v1::Revision Delete(const std::string& id, int64_t ms, const std::string& origin, int64_t base) {
    v1::Revision r = Upsert("task", id, "", ms, origin, base);
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

  // The whole trail (unrestricted unless `scope` says otherwise), oldest first.
  std::vector<v1::AuditEntry> Trail(AuditQuery query = {}, const AuditScope& scope = {}) {
    query.oldest_first = true;
    std::vector<v1::AuditEntry> all;
    for (int i = 0; i < 100; ++i) {
      absl::StatusOr<std::vector<v1::AuditEntry>> page = ReadAuditPage(*session_, query, scope, 7);
      EXPECT_OK(page);
      if (!page.ok() || page->empty()) break;
      query.after_position = page->back().position();
      all.insert(all.end(), page->begin(), page->end());
    }
    return all;
  }

  void SealAll() {
    // Sealing takes only transactions older than every running one in the
    // cluster (other tests' databases share it): wait for them.
    testing::WaitFor(
        [&] {
          absl::StatusOr<int64_t> n = SealAuditEntries(*session_);
          EXPECT_OK(n);
          return !n.ok() ||
                 Query("SELECT count(*) FROM pulsesync.audit_trail a WHERE NOT EXISTS (SELECT 1 "
                       "FROM pulsesync.audit_chain c WHERE c.entry_position = a.position)") == "0";
        },
        absl::Seconds(30));
  }

  AuditVerifyReport Verify() {
    absl::StatusOr<AuditVerifyReport> r = VerifyAuditChain(*session_);
    EXPECT_OK(r);
    return r.ok() ? *r : AuditVerifyReport();
  }

  // Positions of the change-log entries of the task, oldest first.
  std::vector<int64_t> TaskPositions() {
    std::vector<int64_t> out;
    for (const v1::AuditEntry& e : Trail()) {
      if (e.kind() == v1::AuditEntry::KIND_CHANGE && e.object_id() == task_) {
        out.push_back(e.position());
      }
    }
    return out;
  }
  std::string ChainSeqOf(int64_t position) {
    return Query(absl::StrCat("SELECT seq FROM pulsesync.audit_chain WHERE entry_position = ",
                              position));
  }

  std::unique_ptr<TestDatabase> db_;
  std::unique_ptr<PgSession> session_;
  std::map<std::string, int64_t> seqs_;
  std::string team_;
  std::string task_;
  int64_t base_ = 0;
};

v1::AuditOutcome FromResolution(v1::RevisionResult::Resolution r) {
  switch (r) {
    case Resolution::RESOLUTION_APPLIED: return v1::AUDIT_OUTCOME_APPLIED;
    case Resolution::RESOLUTION_MERGED: return v1::AUDIT_OUTCOME_MERGED;
    case Resolution::RESOLUTION_CONFLICT: return v1::AUDIT_OUTCOME_CONFLICT;
    case Resolution::RESOLUTION_RECOVERED: return v1::AUDIT_OUTCOME_RECOVERED;
    case Resolution::RESOLUTION_SUPERSEDED: return v1::AUDIT_OUTCOME_SUPERSEDED;
    case Resolution::RESOLUTION_TOMBSTONED: return v1::AUDIT_OUTCOME_TOMBSTONED;
    default: return v1::AUDIT_OUTCOME_UNSPECIFIED;
  }
}

TEST_F(AuditPgTest, EveryOutcomeIsOnRecordAndNoFactTwice) {
  std::map<std::string, v1::RevisionResult> results;  // by revision id
  auto apply = [&](const v1::Revision& r, v1::RevisionResult::Resolution want) {
    const v1::RevisionResult got = Apply1(r);
    EXPECT_EQ(got.resolution(), want) << got.reason();
    results[r.id()] = got;
    return r;
  };
  // merged: device-b edits another field than device-a, both from base_.
  apply(Edit(R"({"title":"Renamed"})", kT0 + 10, "device-a", base_), Resolution::RESOLUTION_APPLIED);
  apply(Edit(R"({"priority":5})", kT0 + 5, "device-b", base_), Resolution::RESOLUTION_MERGED);
  // conflict: both set the title from base_; the later clock wins.
  apply(Edit(R"({"title":"From B"})", kT0 + 20, "device-b", base_),
        Resolution::RESOLUTION_CONFLICT);
  // superseded: an edit older than what the field holds, nothing written.
  const v1::Revision stale = apply(Edit(R"({"priority":2})", kT0 + 1, "device-c", base_ + 100),
                                   Resolution::RESOLUTION_SUPERSEDED);
  // recovered: an edit later than a delete it had not seen.
  apply(Delete(task_, kT0 + 30, "device-b", base_ + 100), Resolution::RESOLUTION_APPLIED);
  apply(Edit(R"({"description":"Back"})", kT0 + 40, "device-a", base_),
        Resolution::RESOLUTION_RECOVERED);
  // tombstoned: a delete of an object the server never had.
  const std::string ghost = NewUuid();
  apply(Delete(ghost, kT0 + 50, "device-a", 0), Resolution::RESOLUTION_TOMBSTONED);
  // duplicate: the stale revision again.
  EXPECT_EQ(Apply1(stale).outcome(), v1::RevisionResult::OUTCOME_DUPLICATE);
  // rejected: an unknown field.
  const v1::Revision bad = Edit(R"({"colour":"red"})", kT0 + 60, "device-a", base_);
  EXPECT_EQ(Apply1(bad).outcome(), v1::RevisionResult::OUTCOME_REJECTED);
  // out of order: device-a skips a seq.
  v1::Revision early = Edit(R"({"title":"Later"})", kT0 + 70, "device-a", base_);
  early.set_seq(early.seq() + 1);
  EXPECT_EQ(Apply1(early).outcome(), v1::RevisionResult::OUTCOME_OUT_OF_ORDER);
  // direct SQL.
  ASSERT_OK(db_->Execute(
      absl::StrCat("UPDATE tasks SET title = 'Fixed in SQL' WHERE id = '", task_, "'")));

  const std::vector<v1::AuditEntry> trail = Trail();
  std::set<v1::AuditOutcome> seen;
  std::map<std::string, std::set<v1::AuditEntry::Kind>> kinds;  // by revision id
  for (const v1::AuditEntry& e : trail) {
    seen.insert(e.outcome());
    if (e.outcome() != v1::AUDIT_OUTCOME_DUPLICATE) kinds[e.revision_id()].insert(e.kind());
    auto it = results.find(e.revision_id());
    if (it != results.end() && e.kind() == v1::AuditEntry::KIND_CHANGE) {
      EXPECT_EQ(e.outcome(), FromResolution(it->second.resolution())) << e.DebugString();
    }
  }
  EXPECT_EQ(seen, (std::set<v1::AuditOutcome>{
                      v1::AUDIT_OUTCOME_APPLIED, v1::AUDIT_OUTCOME_MERGED,
                      v1::AUDIT_OUTCOME_CONFLICT, v1::AUDIT_OUTCOME_RECOVERED,
                      v1::AUDIT_OUTCOME_SUPERSEDED, v1::AUDIT_OUTCOME_TOMBSTONED,
                      v1::AUDIT_OUTCOME_DIRECT, v1::AUDIT_OUTCOME_DUPLICATE,
                      v1::AUDIT_OUTCOME_REJECTED, v1::AUDIT_OUTCOME_OUT_OF_ORDER}));
  // A revision that wrote is on record by its writes, one that wrote
  // nothing by one entry of its own: never both.
  for (const auto& [revision, k] : kinds) {
    if (!revision.empty()) {
      EXPECT_EQ(k.size(), 1u) << revision;
    }
  }
  // The explicit entries, with their details.
  auto only = [&](v1::AuditOutcome o) {
    std::vector<v1::AuditEntry> out;
    for (const auto& e : trail) {
      if (e.outcome() == o) out.push_back(e);
    }
    return out;
  };
  ASSERT_EQ(only(v1::AUDIT_OUTCOME_DUPLICATE).size(), 1u);
  EXPECT_EQ(only(v1::AUDIT_OUTCOME_DUPLICATE)[0].revision_id(), stale.id());
  EXPECT_EQ(only(v1::AUDIT_OUTCOME_DUPLICATE)[0].kind(), v1::AuditEntry::KIND_REVISION);
  EXPECT_EQ(only(v1::AUDIT_OUTCOME_SUPERSEDED).at(0).revision_id(), stale.id());
  EXPECT_EQ(only(v1::AUDIT_OUTCOME_SUPERSEDED).at(0).origin_id(), "device-c");
  EXPECT_EQ(only(v1::AUDIT_OUTCOME_SUPERSEDED).at(0).table(), "tasks");
  ASSERT_EQ(only(v1::AUDIT_OUTCOME_REJECTED).size(), 1u);
  EXPECT_THAT(only(v1::AUDIT_OUTCOME_REJECTED)[0].reason(), HasSubstr("colour"));
  EXPECT_EQ(only(v1::AUDIT_OUTCOME_REJECTED)[0].team_id(), team_);
  ASSERT_EQ(only(v1::AUDIT_OUTCOME_OUT_OF_ORDER).size(), 1u);
  EXPECT_EQ(only(v1::AUDIT_OUTCOME_OUT_OF_ORDER)[0].revision_id(), early.id());
  EXPECT_EQ(only(v1::AUDIT_OUTCOME_CONFLICT).at(0).conflicts(), 1u);
  const v1::AuditEntry direct = only(v1::AUDIT_OUTCOME_DIRECT).back();
  EXPECT_EQ(direct.event(), v1::EVENT_TYPE_UPDATE);
  EXPECT_EQ(direct.actor(), "");
  EXPECT_EQ(direct.actor_role(), Query("SELECT session_user"));
  EXPECT_THAT(direct.new_record(), HasSubstr("Fixed in SQL"));
  EXPECT_THAT(direct.old_record(), HasSubstr("From B"));
}

TEST_F(AuditPgTest, WhoIsTheJwtSubAndRole) {
  const std::string user = NewUuid();
  const TxIdentity identity{"service_role",
                            absl::StrCat(R"({"sub":")", user, R"(","role":"service_role"})")};
  ASSERT_EQ(Apply1(Edit(R"({"title":"By a user"})", kT0 + 10, "device-u", base_), identity)
                .outcome(),
            v1::RevisionResult::OUTCOME_APPLIED);
  AuditQuery q;
  q.actor = user;
  const std::vector<v1::AuditEntry> mine = Trail(q);
  ASSERT_EQ(mine.size(), 1u);
  EXPECT_EQ(mine[0].actor_role(), "service_role");
  EXPECT_EQ(mine[0].origin_id(), "device-u");
  EXPECT_EQ(mine[0].seq(), 1);
  q = AuditQuery();
  q.origin_id = "device-u";
  EXPECT_EQ(Trail(q).size(), 1u);
}

TEST_F(AuditPgTest, ExcludedFieldsAreMarkedListedAndStillFeedClients) {
  ASSERT_OK(db_->Execute(
      "INSERT INTO pulsesync.audit_excluded_fields VALUES ('task', 'description')"));
  ASSERT_EQ(Apply1(Edit(R"({"description":"s3cret"})", kT0 + 10, "device-a", base_)).outcome(),
            v1::RevisionResult::OUTCOME_APPLIED);
  AuditQuery q;
  q.object_id = task_;
  const std::vector<v1::AuditEntry> trail = Trail(q);
  ASSERT_FALSE(trail.empty());
  const v1::AuditEntry& last = trail.back();
  EXPECT_THAT(last.new_record(), HasSubstr(R"("description": "[excluded]")"));
  EXPECT_THAT(last.new_record(), ::testing::Not(HasSubstr("s3cret")));
  EXPECT_THAT(last.excluded_fields(), ElementsAre("description"));
  // The feed still carries the value to clients...
  ASSERT_OK_AND_ASSIGN(PullPage page, ReadChanges(*session_, "", 100u));
  EXPECT_THAT(page.changes.back().new_record(), HasSubstr("s3cret"));
  // ...until the feed's compaction passes the sealed row: then the log
  // itself forgets it, and the chain still verifies.
  SealAll();
  testing::WaitFor(
      [&] {
        absl::StatusOr<int64_t> n = CompactChangeLog(*session_, absl::ZeroDuration());
        return !n.ok() ||
               Query("SELECT count(*) FROM pulsesync.change_log WHERE new_row::text LIKE "
                     "'%s3cret%'") == "0";
      },
      absl::Seconds(30));
  EXPECT_EQ(Query("SELECT count(*) FROM pulsesync.change_log WHERE new_row::text LIKE '%s3cret%'"),
            "0");
  const AuditVerifyReport report = Verify();
  EXPECT_TRUE(report.ok) << report.broken;
}

TEST_F(AuditPgTest, FeedCompactionKeepsTheTrailAndAuditRetentionLeavesACheckpoint) {
  ASSERT_OK(db_->Execute("UPDATE pulsesync.change_log SET changed_at = now() - interval '2 days'"));
  const std::string entries = Query("SELECT count(*) FROM pulsesync.audit_trail");
  testing::WaitFor(
      [&] {
        absl::StatusOr<int64_t> n = CompactChangeLog(*session_, absl::Hours(1));
        return !n.ok() || Query("SELECT horizon::text FROM pulsesync.feed_horizon") != "0";
      },
      absl::Seconds(30));
  EXPECT_NE(Query("SELECT horizon::text FROM pulsesync.feed_horizon"), "0");
  // The feed refuses old cursors, but the trail keeps everything.
  EXPECT_THAT(ReadChanges(*session_, "", 10u),
              testing::StatusIs(absl::StatusCode::kFailedPrecondition, HasSubstr("re-snapshot")));
  EXPECT_EQ(Query("SELECT count(*) FROM pulsesync.audit_trail"), entries);

  SealAll();
  ASSERT_EQ(Apply1(Edit(R"({"title":"Fresh"})", kT0 + 10, "device-a", base_)).outcome(),
            v1::RevisionResult::OUTCOME_APPLIED);
  SealAll();
  ASSERT_OK_AND_ASSIGN(int64_t removed, ExpireAuditEntries(*session_, absl::Hours(24)));
  EXPECT_EQ(std::to_string(removed), entries);
  EXPECT_EQ(Query("SELECT count(*) FROM pulsesync.audit_trail"), "1");
  EXPECT_EQ(Query("SELECT entries FROM pulsesync.audit_checkpoints"), entries);
  AuditVerifyReport report = Verify();
  EXPECT_TRUE(report.ok) << report.broken;
  EXPECT_EQ(std::to_string(report.checkpoint_seq), entries);
  EXPECT_EQ(report.verified, 1);
  // New entries chain on from the checkpoint.
  ASSERT_EQ(Apply1(Edit(R"({"title":"Fresher"})", kT0 + 20, "device-a", base_)).outcome(),
            v1::RevisionResult::OUTCOME_APPLIED);
  SealAll();
  report = Verify();
  EXPECT_TRUE(report.ok) << report.broken;
  EXPECT_EQ(report.verified, 2);
}

class AuditChainPgTest : public AuditPgTest {
 protected:
  void SetUp() override {
    AuditPgTest::SetUp();
    if (IsSkipped() || HasFatalFailure()) return;
    for (int i = 0; i < 4; ++i) {
      ASSERT_EQ(Apply1(Edit(absl::StrCat(R"({"priority":)", i + 2, "}"), kT0 + 10 + i,
                            "device-a", base_))
                    .outcome(),
                v1::RevisionResult::OUTCOME_APPLIED);
    }
    ASSERT_EQ(Apply1(Edit(R"({"nope":1})", kT0 + 20, "device-a", base_)).outcome(),
              v1::RevisionResult::OUTCOME_REJECTED);
    SealAll();
    const AuditVerifyReport report = Verify();
    ASSERT_TRUE(report.ok) << report.broken;
    ASSERT_EQ(report.verified, 7);  // the team, the task, 4 edits, a rejection
    positions_ = TaskPositions();
    ASSERT_EQ(positions_.size(), 5u);
  }
  std::vector<int64_t> positions_;
};

TEST_F(AuditChainPgTest, AnEditedEntryIsCaught) {
  ASSERT_OK(db_->Execute(absl::StrCat(
      "UPDATE pulsesync.change_log SET new_row = jsonb_set(new_row, '{priority}', '42') "
      "WHERE position = ",
      positions_[2])));
  const AuditVerifyReport report = Verify();
  EXPECT_FALSE(report.ok);
  EXPECT_EQ(std::to_string(report.broken_seq), ChainSeqOf(positions_[2]));
  EXPECT_THAT(report.broken, HasSubstr("differs"));
}

TEST_F(AuditChainPgTest, ADeletedEntryIsCaught) {
  const std::string seq = ChainSeqOf(positions_[1]);
  ASSERT_OK(db_->Execute(
      absl::StrCat("DELETE FROM pulsesync.change_log WHERE position = ", positions_[1])));
  AuditVerifyReport report = Verify();
  EXPECT_FALSE(report.ok);
  EXPECT_EQ(std::to_string(report.broken_seq), seq);
  EXPECT_THAT(report.broken, HasSubstr("gone"));
  // Deleting its seal too leaves a gap in the chain.
  ASSERT_OK(db_->Execute(absl::StrCat("DELETE FROM pulsesync.audit_chain WHERE seq = ", seq)));
  report = Verify();
  EXPECT_FALSE(report.ok);
  EXPECT_EQ(std::to_string(report.broken_seq), seq);
  EXPECT_THAT(report.broken, HasSubstr("missing"));
}

TEST_F(AuditChainPgTest, ReorderedEntriesAreCaught) {
  // Swap what two past entries say (their contents change places).
  ASSERT_OK(db_->Execute(absl::StrCat(
      "WITH a AS (SELECT * FROM pulsesync.change_log WHERE position = ", positions_[1], "), ",
      "b AS (SELECT * FROM pulsesync.change_log WHERE position = ", positions_[3], ") ",
      "UPDATE pulsesync.change_log c SET new_row = CASE c.position WHEN ", positions_[1],
      " THEN (SELECT new_row FROM b) ELSE (SELECT new_row FROM a) END, "
      "old_row = CASE c.position WHEN ",
      positions_[1], " THEN (SELECT old_row FROM b) ELSE (SELECT old_row FROM a) END, ",
      "version = CASE c.position WHEN ", positions_[1],
      " THEN (SELECT version FROM b) ELSE (SELECT version FROM a) END "
      "WHERE c.position IN (",
      positions_[1], ", ", positions_[3], ")")));
  const AuditVerifyReport report = Verify();
  EXPECT_FALSE(report.ok);
  EXPECT_EQ(std::to_string(report.broken_seq), ChainSeqOf(positions_[1]));
}

TEST_F(AuditChainPgTest, ReorderedSealsAreCaught) {
  const std::string a = ChainSeqOf(positions_[1]);
  const std::string b = ChainSeqOf(positions_[2]);
  ASSERT_OK(db_->Execute(absl::StrCat(
      "UPDATE pulsesync.audit_chain SET entry_position = -1 WHERE seq = ", a, ";",
      "UPDATE pulsesync.audit_chain SET entry_position = ", positions_[1], " WHERE seq = ", b, ";",
      "UPDATE pulsesync.audit_chain SET entry_position = ", positions_[2], " WHERE seq = ", a)));
  const AuditVerifyReport report = Verify();
  EXPECT_FALSE(report.ok);
  EXPECT_EQ(std::to_string(report.broken_seq), a);
}

TEST_F(AuditChainPgTest, AnEntryInsertedIntoThePastIsCaught) {
  ASSERT_OK(db_->Execute(absl::StrCat(
      "INSERT INTO pulsesync.change_log (txid, schema_name, table_name, object_type, object_id, "
      "team_id, op, version, new_row) SELECT txid, schema_name, table_name, object_type, "
      "object_id, team_id, 'UPDATE', version, new_row || '{\"title\":\"forged\"}' "
      "FROM pulsesync.change_log WHERE position = ",
      positions_[1])));
  const AuditVerifyReport report = Verify();
  EXPECT_FALSE(report.ok);
  EXPECT_THAT(report.broken, HasSubstr("no seal"));
}

TEST_F(AuditChainPgTest, PulsesyncdAuditVerifyExitsNonZeroAfterAnEditWithPsql) {
  ASSERT_OK_AND_ASSIGN(testing::CommandResult good,
                       testing::RunCommand({testing::PulsesyncdPath(), "audit", "verify",
                                            "--database_url=" + db_->url()},
                                           {}, absl::Seconds(60)));
  EXPECT_EQ(good.exit_code, 0) << good.output;
  EXPECT_THAT(good.output, HasSubstr("chain intact"));
  ASSERT_OK_AND_ASSIGN(
      testing::CommandResult edited,
      testing::RunCommand({"psql", "-X", "-q", db_->url(), "-c",
                           absl::StrCat("UPDATE pulsesync.change_log SET changed_at = changed_at "
                                        "+ interval '1 second' WHERE position = ",
                                        positions_[0])},
                          {}, absl::Seconds(60)));
  ASSERT_EQ(edited.exit_code, 0) << edited.output;
  ASSERT_OK_AND_ASSIGN(testing::CommandResult bad,
                       testing::RunCommand({testing::PulsesyncdPath(), "audit", "verify",
                                            "--database_url=" + db_->url()},
                                           {}, absl::Seconds(60)));
  EXPECT_EQ(bad.exit_code, 1) << bad.output;
  EXPECT_THAT(bad.errors, HasSubstr(absl::StrCat("seq ", ChainSeqOf(positions_[0]))));
}

// supa_audit derives record_id as uuid_generate_v5(namespace,
// (jsonb_build_array(to_jsonb(table_oid)) || jsonb_agg(<primary key values>))::text):
// a name-based (SHA-1) UUID of the JSON text ["<oid>", "<id>"]. Computed here
// independently of PostgreSQL.
std::string UuidV5(const std::string& namespace_uuid, const std::string& name) {
  const std::string ns_bytes =
      absl::HexStringToBytes(absl::StrReplaceAll(namespace_uuid, {{"-", ""}}));
  const std::string input = ns_bytes + name;
  unsigned char digest[SHA_DIGEST_LENGTH];
  SHA1(reinterpret_cast<const unsigned char*>(input.data()), input.size(), digest);
  digest[6] = static_cast<unsigned char>((digest[6] & 0x0f) | 0x50);
  digest[8] = static_cast<unsigned char>((digest[8] & 0x3f) | 0x80);
  const std::string hex =
      absl::BytesToHexString(std::string(reinterpret_cast<const char*>(digest), 16));
  return absl::StrCat(hex.substr(0, 8), "-", hex.substr(8, 4), "-", hex.substr(12, 4), "-",
                      hex.substr(16, 4), "-", hex.substr(20, 12));
}

TEST_F(AuditPgTest, RecordVersionViewAnswersAsSupaAuditWould) {
  // Its columns, as supa_audit's audit.record_version has them (op is text
  // here, its enum's labels).
  EXPECT_EQ(Query("SELECT string_agg(attname || ':' || format_type(atttypid, atttypmod), ',' "
                  "ORDER BY attnum) FROM pg_attribute WHERE attrelid = 'audit.record_version'::regclass "
                  "AND attnum > 0"),
            "id:bigint,record_id:uuid,old_record_id:uuid,op:text,ts:timestamp with time zone,"
            "table_oid:oid,table_schema:name,table_name:name,record:jsonb,old_record:jsonb,"
            "auth_uid:uuid,auth_role:text");
  const std::string oid = Query("SELECT 'public.tasks'::regclass::oid");
  const std::string expected =
      UuidV5("fd62bc3d-8d6e-43c2-919c-802ba3762271", absl::StrCat("[\"", oid, "\", \"", task_, "\"]"));
  const std::string user = NewUuid();
  const TxIdentity identity{"service_role",
                            absl::StrCat(R"({"sub":")", user, R"(","role":"service_role"})")};
  ASSERT_EQ(Apply1(Edit(R"({"title":"Edited"})", kT0 + 10, "device-a", base_), identity).outcome(),
            v1::RevisionResult::OUTCOME_APPLIED);
  ASSERT_OK(db_->Execute(absl::StrCat("DELETE FROM tasks WHERE id = '", task_, "'")));
  const std::string rows = Query(absl::StrCat(
      "SELECT string_agg(concat_ws('|', op, record_id, old_record_id, table_schema, table_name, "
      "table_oid, record ->> 'title', old_record ->> 'title', auth_uid, auth_role), E'\\n' "
      "ORDER BY id) FROM audit.record_version WHERE table_name = 'tasks'"));
  EXPECT_EQ(rows, absl::StrCat("INSERT|", expected, "|public|tasks|", oid, "|Draft\n",
                               "UPDATE|", expected, "|", expected, "|public|tasks|", oid,
                               "|Edited|Draft|", user, "|service_role\n",
                               "DELETE|", expected, "|public|tasks|", oid, "|Edited"));
  // Read-only, for its owner too.
  EXPECT_FALSE(db_->Execute("DELETE FROM audit.record_version").ok());
  EXPECT_FALSE(db_->Execute("UPDATE audit.record_version SET op = 'INSERT'").ok());
}

TEST_F(AuditPgTest, ARestrictedReaderSeesOnlyItsTeams) {
  const std::string other_team = NewUuid();
  const std::string other_task = NewUuid();
  ASSERT_EQ(Apply1(Upsert("team", other_team, R"({"name":"Other"})", kT0 + 5)).outcome(),
            v1::RevisionResult::OUTCOME_APPLIED);
  ASSERT_EQ(Apply1(Upsert("task", other_task,
                          absl::StrCat(R"({"team_id":")", other_team, R"(","title":"Theirs"})"),
                          kT0 + 6, "device-o"))
                .outcome(),
            v1::RevisionResult::OUTCOME_APPLIED);
  ASSERT_EQ(Apply1(Upsert("task", other_task, R"({"nope":1})", kT0 + 7, "device-o")).outcome(),
            v1::RevisionResult::OUTCOME_REJECTED);
  AuditScope mine;
  mine.restricted = true;
  mine.teams = {team_};
  const std::vector<v1::AuditEntry> all = Trail({}, mine);
  ASSERT_FALSE(all.empty());
  for (const v1::AuditEntry& e : all) {
    EXPECT_EQ(e.team_id(), team_) << e.DebugString();
    EXPECT_NE(e.object_id(), other_task);
  }
  AuditQuery q;
  q.object_id = other_task;
  EXPECT_TRUE(Trail(q, mine).empty());
  q = AuditQuery();
  q.origin_id = "device-o";
  EXPECT_TRUE(Trail(q, mine).empty());
  EXPECT_EQ(Trail(q).size(), 2u);  // unrestricted: the task and the rejection
  AuditScope none;
  none.restricted = true;
  EXPECT_TRUE(Trail({}, none).empty());
}

}  // namespace
}  // namespace pulsesync

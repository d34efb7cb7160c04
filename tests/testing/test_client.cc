#include "tests/testing/test_client.h"

#include <sqlite3.h>

#include <algorithm>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "common/json.h"

namespace pulsesync::testing {

absl::StatusOr<std::unique_ptr<TestClient>> TestClient::Open(const std::string& path,
                                                             const std::string& address,
                                                             TestClientOptions options) {
  std::unique_ptr<TestClient> c(new TestClient());
  c->path_ = path;
  absl::StatusOr<std::unique_ptr<LocalStore>> store = LocalStore::Open(path, options.store);
  if (!store.ok()) return store.status();
  c->store_ = *std::move(store);
  GrpcTransportOptions topts;
  topts.user_id = options.user_id;
  topts.deadline = options.deadline;
  topts.wait_for_ready = options.wait_for_ready;
  topts.own_connection = options.own_connection;
  c->transport_ = GrpcTransport::Create(address, topts);
  c->engine_ = std::make_unique<SyncEngine>(c->store_.get(), c->transport_.get(), options.engine);
  if (options.subscribe) {
    SubscriberOptions sopts;
    sopts.initial_sync = options.initial_sync;
    sopts.initial_backoff = absl::Milliseconds(50);
    sopts.max_backoff = absl::Milliseconds(500);
    sopts.push_debounce = absl::Milliseconds(30);
    TestClient* self = c.get();
    sopts.on_connection = [self](const ConnectionEvent& e) {
      if (e.state == ConnectionEvent::State::kConnected) {
        ++self->connects_;
      } else {
        ++self->disconnects_;
      }
    };
    c->subscriber_ = std::make_unique<Subscriber>(c->store_.get(), c->transport_.get(),
                                                  c->engine_.get(), sopts);
    c->subscriber_->Start();
  }
  return c;
}

TestClient::~TestClient() {
  if (subscriber_ != nullptr) subscriber_->Stop();
}

absl::StatusOr<std::string> TestClient::CreateTask(const std::string& team,
                                                   const std::string& title) {
  return store_->Create("task", JsonValue::Object({{"team_id", JsonValue::String(team)},
                                                   {"title", JsonValue::String(title)}}));
}

int64_t TestClient::Pending() { return store_->PendingCount().value_or(-1); }

TaskMap TestClient::Tasks(const std::string& team) {
  TaskMap out;
  absl::StatusOr<std::vector<JsonValue>> rows = store_->List("task", ReadOptions{true});
  if (!rows.ok()) return out;
  for (const JsonValue& r : *rows) {
    const JsonValue* t = r.Find("team_id");
    if (t == nullptr || t->text() != team) continue;
    TaskState s;
    s.version = r.Find("version")->AsInt64().value_or(-1);
    s.title = r.Find("title")->text();
    const JsonValue* status = r.Find("status");
    s.status = status != nullptr && status->is_string() ? status->text() : "";
    s.deleted = r.Find("deleted")->bool_value();
    out[r.Find("id")->text()] = s;
  }
  return out;
}

absl::Status TestClient::PushAll(absl::Duration timeout) {
  const absl::Time deadline = absl::Now() + timeout;
  absl::Status last = absl::DeadlineExceededError("no attempt");
  absl::Duration backoff = absl::Milliseconds(20);
  while (true) {
    absl::StatusOr<PushSummary> pushed = engine_->Push();
    last = pushed.status();
    if (last.ok() && Pending() == 0) return absl::OkStatus();
    if (absl::Now() + backoff >= deadline) return last.ok() ? absl::DeadlineExceededError(
                                                                  "revisions still pending")
                                                            : last;
    if (!last.ok()) {
      // A retry, as an app's client does: back off a little (bounded).
      absl::SleepFor(backoff);
      backoff = std::min(backoff * 2, absl::Milliseconds(500));
    }
  }
}

absl::Status TestClient::SyncAll(absl::Duration timeout) {
  const absl::Time deadline = absl::Now() + timeout;
  absl::Status last;
  absl::Duration backoff = absl::Milliseconds(20);
  while (true) {
    absl::StatusOr<SyncSummary> synced = engine_->Sync();
    last = synced.status();
    if (last.ok() && Pending() == 0) return absl::OkStatus();
    if (absl::Now() + backoff >= deadline) {
      return last.ok() ? absl::DeadlineExceededError("revisions still pending") : last;
    }
    if (!last.ok()) {
      absl::SleepFor(backoff);
      backoff = std::min(backoff * 2, absl::Milliseconds(500));
    }
  }
}

std::vector<std::string> TestClient::AckedRevisionIds() {
  std::vector<std::string> out;
  sqlite3* db = nullptr;
  if (sqlite3_open_v2(path_.c_str(), &db, SQLITE_OPEN_READONLY, nullptr) != SQLITE_OK) {
    sqlite3_close(db);
    return out;
  }
  sqlite3_busy_timeout(db, 5000);
  sqlite3_stmt* st = nullptr;
  if (sqlite3_prepare_v2(db,
                         "SELECT id FROM revisions WHERE seq > 0 "
                         "AND outcome IN ('applied', 'duplicate') ORDER BY seq",
                         -1, &st, nullptr) == SQLITE_OK) {
    while (sqlite3_step(st) == SQLITE_ROW) {
      out.emplace_back(reinterpret_cast<const char*>(sqlite3_column_text(st, 0)));
    }
  }
  sqlite3_finalize(st);
  sqlite3_close(db);
  return out;
}

absl::StatusOr<TaskMap> ServerTasks(const TestDatabase& db, const std::string& team) {
  absl::StatusOr<std::string> all = db.QueryValue(absl::StrCat(
      "SELECT coalesce(string_agg(id || '|' || version || '|' || deleted || '|' || "
      "coalesce(status, '') || '|' || title, E'\\n'), '') FROM tasks WHERE team_id = '",
      team, "'"));
  if (!all.ok()) return all.status();
  TaskMap out;
  for (absl::string_view line : absl::StrSplit(*all, '\n', absl::SkipEmpty())) {
    std::vector<std::string> f = absl::StrSplit(line, absl::MaxSplits('|', 4));
    if (f.size() != 5) return absl::InternalError(absl::StrCat("bad row: ", line));
    TaskState s;
    s.version = std::stoll(f[1]);
    s.deleted = f[2] == "true";
    s.status = f[3];
    s.title = f[4];
    out[f[0]] = s;
  }
  return out;
}

absl::Status CheckAcknowledgedExactlyOnce(const TestDatabase& db,
                                          const std::vector<std::string>& revision_ids) {
  if (!revision_ids.empty()) {
    // In slices, so that a big client does not make one huge statement.
    for (size_t start = 0; start < revision_ids.size(); start += 5000) {
      const size_t end = std::min(revision_ids.size(), start + 5000);
      std::vector<std::string> slice(revision_ids.begin() + start, revision_ids.begin() + end);
      absl::StatusOr<std::string> missing = db.QueryValue(absl::StrCat(
          "SELECT count(*) || ' of ' || ", slice.size(), " || ', e.g. ' || coalesce(min(w.id::text), '') "
          "FROM unnest(ARRAY['", absl::StrJoin(slice, "','"), "']::uuid[]) AS w(id) "
          "WHERE NOT EXISTS (SELECT 1 FROM pulsesync.applied_revisions a WHERE a.id = w.id)"));
      if (!missing.ok()) return missing.status();
      if (!absl::StartsWith(*missing, "0 of")) {
        return absl::DataLossError(
            absl::StrCat("acknowledged revisions missing from applied_revisions: ", *missing));
      }
    }
  }
  absl::StatusOr<std::string> doubled = db.QueryValue(
      "SELECT count(*) FROM (SELECT revision_id FROM pulsesync.change_log "
      "WHERE revision_id IS NOT NULL GROUP BY revision_id, object_id HAVING count(*) > 1) d");
  if (!doubled.ok()) return doubled.status();
  if (*doubled != "0") {
    return absl::DataLossError(
        absl::StrCat(*doubled, " revision(s) reached the change log more than once"));
  }
  return absl::OkStatus();
}

std::string DiffTasks(const TaskMap& expected, const TaskMap& actual, int max_lines) {
  std::vector<std::string> lines;
  auto show = [](const TaskState& s) {
    return absl::StrCat("v", s.version, " '", s.title, "' ", s.status, s.deleted ? " deleted" : "");
  };
  for (const auto& [id, e] : expected) {
    auto it = actual.find(id);
    if (it == actual.end()) {
      lines.push_back(absl::StrCat(id, ": missing (expected ", show(e), ")"));
    } else if (it->second != e) {
      lines.push_back(absl::StrCat(id, ": ", show(it->second), ", expected ", show(e)));
    }
  }
  for (const auto& [id, a] : actual) {
    if (expected.count(id) == 0) lines.push_back(absl::StrCat(id, ": unexpected ", show(a)));
  }
  if (lines.empty()) return "";
  const size_t n = lines.size();
  if (static_cast<int>(n) > max_lines) lines.resize(max_lines);
  return absl::StrCat(n, " difference(s): ", absl::StrJoin(lines, "; "));
}

}  // namespace pulsesync::testing

#include "server/core/task_stats.h"

#include <pqxx/pqxx>

#include "absl/strings/match.h"
#include "common/json.h"
#include "common/log.h"
#include "common/status_macros.h"
#include "server/core/change_feed.h"
#include "server/core/cursor.h"
#include "server/storage/pg_session.h"

namespace pulsesync {
namespace {

// One bucket of a map of counters: dropped at zero, so that an emptied
// status or assignee disappears.
void Add(std::map<std::string, int64_t>& counts, const std::string& key, int64_t n) {
  auto [it, inserted] = counts.emplace(key, 0);
  it->second += n;
  if (it->second == 0) counts.erase(it);
}

std::string TextOf(const JsonValue* v) {
  if (v == nullptr || v->is_null()) return "";
  if (v->type() == JsonValue::Type::kBool) return v->bool_value() ? "true" : "false";
  return v->is_string() ? v->text() : v->Serialize();
}

}  // namespace

absl::Status TaskStats::Load(PgSession& session) {
  absl::MutexLock serial(&catch_up_mu_);
  return LoadLocked(session);
}

absl::Status TaskStats::LoadLocked(PgSession& session) {
  absl::flat_hash_map<std::string, ProjectTaskStats> fresh;
  std::string cursor;
  PS_RETURN_IF_ERROR(session.RunTransaction(
      TxMode::kRepeatableReadOnly, [&](pqxx::transaction_base& tx) -> absl::Status {
        fresh.clear();
        // First statement: the snapshot the aggregate below sees.
        cursor = EncodeCursor(CursorOfTransaction(tx));
        // One pass over the live tasks, grouped in SQL.
        for (const auto& row : tx.exec(
                 "SELECT project_id::text, status, coalesce(assignee_id::text, ''), "
                 "is_archived::text, count(*) FROM public.tasks "
                 "WHERE NOT deleted AND project_id IS NOT NULL "
                 "GROUP BY 1, 2, 3, 4")) {
          ProjectTaskStats& p = fresh[row[0].as<std::string>()];
          const int64_t n = row[4].as<int64_t>();
          const std::string archived = row[3].as<std::string>() == "true" ? "true" : "false";
          p.total += n;
          Add(p.by_status, row[1].is_null() ? "" : row[1].as<std::string>(), n);
          Add(p.by_assignee, row[2].as<std::string>(), n);
          Add(p.archived, archived, n);
        }
        return absl::OkStatus();
      }));
  absl::MutexLock lock(&mu_);
  projects_ = std::move(fresh);
  cursor_ = std::move(cursor);
  loaded_ = true;
  return absl::OkStatus();
}

void TaskStats::ApplyRow(const std::string& row_json, int sign) {
  if (row_json.empty()) return;
  absl::StatusOr<JsonValue> row = ParseJson(row_json);
  if (!row.ok() || !row->is_object()) return;
  const JsonValue* deleted = row->Find("deleted");
  if (deleted != nullptr && deleted->type() == JsonValue::Type::kBool && deleted->bool_value()) {
    return;  // a tombstone is not a live task
  }
  const std::string project = TextOf(row->Find("project_id"));
  if (project.empty()) return;
  ProjectTaskStats& p = projects_[project];
  p.total += sign;
  Add(p.by_status, TextOf(row->Find("status")), sign);
  Add(p.by_assignee, TextOf(row->Find("assignee_id")), sign);
  const std::string archived = TextOf(row->Find("is_archived"));
  Add(p.archived, archived == "true" ? "true" : "false", sign);
  if (p.total == 0 && p.by_status.empty()) projects_.erase(project);
}

absl::StatusOr<int64_t> TaskStats::CatchUp(PgSession& session, uint32_t page_limit) {
  absl::MutexLock serial(&catch_up_mu_);
  std::string cursor;
  {
    absl::MutexLock lock(&mu_);
    cursor = cursor_;
    if (!loaded_) cursor.clear();
  }
  if (cursor.empty()) {
    PS_RETURN_IF_ERROR(LoadLocked(session));
    return 0;
  }
  int64_t read = 0;
  while (true) {
    absl::StatusOr<PullPage> page = ReadChanges(session, cursor, page_limit);
    if (absl::IsFailedPrecondition(page.status()) &&
        absl::StartsWith(page.status().message(), "re-snapshot")) {
      // The log was compacted past our cursor: count again.
      LogInfo("task stats: reloading", {{"reason", page.status()}});
      PS_RETURN_IF_ERROR(LoadLocked(session));
      return read;
    }
    if (!page.ok()) return page.status();
    {
      absl::MutexLock lock(&mu_);
      for (const v1::Change& c : page->changes) {
        if (c.object_type() != "task") continue;
        if (c.event() != v1::EVENT_TYPE_INSERT) ApplyRow(c.old_record(), -1);
        ApplyRow(c.new_record(), +1);
      }
      cursor_ = page->next_cursor;
    }
    read += static_cast<int64_t>(page->changes.size());
    cursor = page->next_cursor;
    if (!page->has_more) break;
  }
  return read;
}

std::optional<ProjectTaskStats> TaskStats::Get(const std::string& project_id) const {
  absl::ReaderMutexLock lock(&mu_);
  auto it = projects_.find(project_id);
  if (it == projects_.end()) return std::nullopt;
  return it->second;
}

std::string TaskStats::cursor() const {
  absl::ReaderMutexLock lock(&mu_);
  return cursor_;
}

}  // namespace pulsesync

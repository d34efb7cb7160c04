// TaskStats: per-project task counts (by status, by assignee) kept in memory
// and current from the change log, so that GetStats never scans tasks.
//
// Design note. Load() takes one aggregate over the live tasks and the cursor
// of the same snapshot (one REPEATABLE READ transaction whose first statement
// is pg_current_snapshot(), as Snapshot does), so the change log after that
// cursor is exactly what the aggregate has not seen. CatchUp() reads the log
// from there (change_feed's commit-safe pages) and applies each task change
// as a delta: the old row (UPDATE, DELETE) leaves its counts if it was live,
// the new row (INSERT, UPDATE) joins them if it is live. A tombstone is not
// live. A cursor the log no longer holds (retention) reloads.
//
// Memory: one entry per project with a task, a counter per status and per
// assignee in it; not per task.
//
// Thread safety: thread-safe. CatchUp calls are serialized; Get reads under a
// reader lock and may run beside a CatchUp.
#ifndef PULSESYNC_SERVER_CORE_TASK_STATS_H_
#define PULSESYNC_SERVER_CORE_TASK_STATS_H_

#include <cstdint>
#include <map>
#include <optional>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"

namespace pulsesync {

class PgSession;

struct ProjectTaskStats {
  int64_t total = 0;                        // live tasks
  std::map<std::string, int64_t> by_status;    // "todo" -> 3
  std::map<std::string, int64_t> by_assignee;  // user id ("" = unassigned) -> 2
  std::map<std::string, int64_t> archived;     // is_archived ("true"/"false") -> n
};

class TaskStats {
 public:
  // Loads the aggregate and its cursor; replaces what was held.
  absl::Status Load(PgSession& session) ABSL_LOCKS_EXCLUDED(catch_up_mu_, mu_);
  // Applies the task changes committed since the last Load or CatchUp (Load
  // first if never loaded). Returns how many changes it read.
  absl::StatusOr<int64_t> CatchUp(PgSession& session, uint32_t page_limit = 2000)
      ABSL_LOCKS_EXCLUDED(catch_up_mu_, mu_);

  // The counts of one project (nullopt: no live task in it, or never loaded).
  std::optional<ProjectTaskStats> Get(const std::string& project_id) const
      ABSL_LOCKS_EXCLUDED(mu_);
  // The cursor the counts are current to.
  std::string cursor() const ABSL_LOCKS_EXCLUDED(mu_);

 private:
  // Adds `sign` (+1/-1) of one task row (a JSON object) if it is live.
  void ApplyRow(const std::string& row_json, int sign) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status LoadLocked(PgSession& session) ABSL_EXCLUSIVE_LOCKS_REQUIRED(catch_up_mu_);

  absl::Mutex catch_up_mu_;  // one Load/CatchUp at a time; taken before mu_
  mutable absl::Mutex mu_;
  bool loaded_ ABSL_GUARDED_BY(mu_) = false;
  std::string cursor_ ABSL_GUARDED_BY(mu_);
  absl::flat_hash_map<std::string, ProjectTaskStats> projects_ ABSL_GUARDED_BY(mu_);
};

}  // namespace pulsesync

#endif  // PULSESYNC_SERVER_CORE_TASK_STATS_H_

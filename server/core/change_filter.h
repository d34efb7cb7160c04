// ChangeFilter: the subscriptions of one StreamChanges call, compiled once and
// then evaluated against every change the feed fans out to that stream.
//
// Semantics mirror Supabase Realtime `postgres_changes` and PostgREST filters:
// - A change is delivered when it matches ANY subscription; no subscriptions
//   at all match every change.
// - A subscription matches when its table matches (empty or "*" = every
//   table; otherwise a table name or object type from `known_tables`,
//   compared by canonical table name with Change.table), its event is listed
//   (no events = all), and EVERY one of its filters holds.
// - A filter is "column=op.value" with op one of eq, neq, lt, lte, gt, gte, or
//   "column=in.(a,b,c)". Column names match ^[a-z_][a-z0-9_]*$ (at most 63
//   bytes, PostgreSQL's identifier limit). The value is taken literally (it
//   may be empty: "title=eq." matches the empty string). In an in-list,
//   items are separated by commas and trimmed of surrounding whitespace; an
//   item in double quotes may contain commas, parentheses and whitespace, and
//   `\` escapes the next character inside quotes (PostgREST style). Unquoted
//   items may not contain `"`, `(` or `)`, and may not be empty (write "").
// - Filters apply to FilterRecord(change): the old row for DELETE, else the
//   new row.
// - Comparison, by the JSON type of the record's value:
//     number: numerically when the filter value is a number (digits, sign,
//             '.', exponent; e.g. "2", "-1.5", "1e3"); two integers that fit in
//             int64 compare exactly, an integer against a non-integer compares
//             exactly against the filter's double, two non-integers compare as
//             doubles. When the filter value is not a number, the number's
//             literal text is compared as text (the proto's "otherwise as
//             text").
//     string: byte-wise (so UTF-8 text, UUIDs and ISO timestamps written in
//             the same format order correctly), whatever the filter value.
//     bool:   eq/neq/in against the filter value "true" or "false" (exact);
//             lt/lte/gt/gte never match, nor does any other filter value.
//     null, array, object, or the column absent, or the record not a JSON
//             object: no operator matches, neq included (SQL's NULL rule).
//
// Limits (kInvalidArgument beyond them): kMaxSubscriptions subscriptions,
// kMaxFiltersPerSubscription filters each, filter values (everything after
// "op.") of at most kMaxFilterValueBytes bytes, kMaxInListItems items per
// in-list.
//
// Thread safety: a ChangeFilter is immutable once compiled; its const methods
// may be called from any number of threads at once.
#ifndef PULSESYNC_SERVER_CORE_CHANGE_FILTER_H_
#define PULSESYNC_SERVER_CORE_CHANGE_FILTER_H_

#include <cstddef>
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "pulsesync/v1/sync.pb.h"

namespace pulsesync {

class JsonValue;

class ChangeFilter {
 public:
  static constexpr int kMaxSubscriptions = 100;
  static constexpr int kMaxFiltersPerSubscription = 20;
  static constexpr size_t kMaxFilterValueBytes = 1024;
  static constexpr int kMaxInListItems = 100;

  // Matches every change (the same as compiling no subscriptions).
  ChangeFilter() = default;

  // Compiles StreamChangesRequest.subscriptions. `known_tables` maps every
  // accepted table name and object type to its canonical table name (e.g.
  // "tasks" -> "tasks", "task" -> "tasks"); it is not retained.
  //
  // kInvalidArgument names the bad part, subscriptions counted from 1, e.g.
  //   subscription 2: filter "priority=gt": missing value
  //   subscription 1: unknown operator "like" in "title=like.x" (use eq, neq, lt, lte, gt, gte, in)
  //   subscription 1: unknown table "widgets"
  //   subscription 3: filter "Title=eq.x": bad column name "Title" (want [a-z_][a-z0-9_]*, at most 63 bytes)
  //   subscription 1: filter "id=in.1,2": in.(...) needs parentheses
  //   subscription 1: EVENT_TYPE_UNSPECIFIED is not an event to subscribe to
  // Quoted input in messages is C-escaped and cut after 80 bytes.
  [[nodiscard]] static absl::StatusOr<ChangeFilter> Compile(
      const google::protobuf::RepeatedPtrField<v1::Subscription>& subs,
      const std::map<std::string, std::string>& known_tables);

  // True if `change` matches. Never fails: a FilterRecord that is not a JSON
  // object, or lacks a filtered column, does not match that subscription's
  // column filters. Parses FilterRecord(change) only when a subscription
  // whose table and event match has column filters.
  bool Matches(const v1::Change& change) const;

  // The same, for a caller that parsed FilterRecord(change) once for all
  // streams: `record` is that parse, or nullptr when it is not valid JSON.
  // Does not allocate.
  bool Matches(const v1::Change& change, const JsonValue* record) const;

  // The row filters apply to: old_record for a DELETE (a tombstoning UPDATE
  // carries the tombstone in new_record, which no longer describes the row a
  // subscriber filtered on), or new_record when old_record is empty; for
  // INSERT and UPDATE, new_record.
  static const std::string& FilterRecord(const v1::Change& change);

  // True if some subscription has a column filter, i.e. Matches may need the
  // record; when false, callers can skip parsing it.
  bool has_column_filters() const { return has_column_filters_; }

 private:
  enum class Op { kEq, kNeq, kLt, kLte, kGt, kGte, kIn };

  // A filter value with every interpretation precomputed.
  struct Operand {
    std::string text;
    bool is_number = false;
    bool is_integer = false;  // is_number and fits in int64
    int64_t integer = 0;
    double number = 0;
    enum class Bool : int8_t { kNone, kFalse, kTrue } boolean = Bool::kNone;
  };

  struct ColumnFilter {
    std::string column;
    Op op = Op::kEq;
    std::vector<Operand> operands;  // one, or the in-list's items
  };

  struct CompiledSubscription {
    bool all_tables = true;
    std::string table;        // canonical; when !all_tables
    uint32_t event_mask = 0;  // bit per EventType; 0 = all events
    std::vector<ColumnFilter> filters;
  };

  static absl::StatusOr<ColumnFilter> CompileFilter(const std::string& filter);
  static bool TableAndEventMatch(const CompiledSubscription& sub,
                                 const v1::Change& change);
  static bool FiltersMatch(const CompiledSubscription& sub, const JsonValue& record);
  static bool Holds(const ColumnFilter& filter, const JsonValue& value);

  std::vector<CompiledSubscription> subs_;
  bool has_column_filters_ = false;
};

}  // namespace pulsesync

#endif  // PULSESYNC_SERVER_CORE_CHANGE_FILTER_H_

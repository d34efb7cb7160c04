#include "server/core/change_filter.h"

#include <cmath>
#include <optional>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "common/json.h"

namespace pulsesync {
namespace {

constexpr size_t kMaxColumnNameBytes = 63;  // PostgreSQL's NAMEDATALEN - 1
constexpr size_t kMaxQuotedBytes = 80;

// `s` in double quotes for an error message: C-escaped (so control bytes and
// quotes cannot garble it) and cut after kMaxQuotedBytes.
std::string Quote(absl::string_view s) {
  const bool cut = s.size() > kMaxQuotedBytes;
  return absl::StrCat("\"", absl::CHexEscape(s.substr(0, kMaxQuotedBytes)),
                      cut ? "...\"" : "\"");
}

bool IsColumnName(absl::string_view s) {
  if (s.empty() || s.size() > kMaxColumnNameBytes) return false;
  if (!(absl::ascii_islower(s[0]) || s[0] == '_')) return false;
  for (char c : s) {
    if (!(absl::ascii_islower(c) || absl::ascii_isdigit(c) || c == '_')) return false;
  }
  return true;
}

// Numbers as a filter value: what SimpleAtod accepts, restricted to digits,
// signs, '.' and exponents (so no whitespace, "inf", "nan" or hex).
bool LooksNumeric(absl::string_view s) {
  if (s.empty()) return false;
  bool digit = false;
  for (char c : s) {
    if (absl::ascii_isdigit(c)) {
      digit = true;
    } else if (c != '+' && c != '-' && c != '.' && c != 'e' && c != 'E') {
      return false;
    }
  }
  return digit;
}

// -1, 0, 1 as i <, ==, > d, exactly (no rounding of i to double).
int CompareIntDouble(int64_t i, double d) {
  if (std::isnan(d)) return 0;  // unreachable: SimpleAtod never yields NaN here
  if (d >= 9223372036854775808.0) return -1;   // 2^63
  if (d < -9223372036854775808.0) return 1;    // below -2^63
  const double floor_d = std::floor(d);
  const int64_t f = static_cast<int64_t>(floor_d);  // in range, exact
  if (i < f) return -1;
  if (i > f) return 1;
  return floor_d == d ? 0 : -1;
}

int Sign(int c) { return (c > 0) - (c < 0); }

}  // namespace

const std::string& ChangeFilter::FilterRecord(const v1::Change& change) {
  if (change.event() == v1::EVENT_TYPE_DELETE && !change.old_record().empty()) {
    return change.old_record();
  }
  return change.new_record();
}

absl::StatusOr<ChangeFilter::ColumnFilter> ChangeFilter::CompileFilter(
    const std::string& filter) {
  auto bad = [&filter](absl::string_view what) {
    return absl::InvalidArgumentError(absl::StrCat("filter ", Quote(filter), ": ", what));
  };
  if (filter.empty()) return bad("empty filter (want column=op.value)");
  const size_t eq = filter.find('=');
  if (eq == std::string::npos) return bad("missing '=' (want column=op.value)");
  const absl::string_view column = absl::string_view(filter).substr(0, eq);
  if (!IsColumnName(column)) {
    return bad(absl::StrCat("bad column name ", Quote(column),
                            " (want [a-z_][a-z0-9_]*, at most 63 bytes)"));
  }
  const absl::string_view rest = absl::string_view(filter).substr(eq + 1);
  const size_t dot = rest.find('.');
  const absl::string_view op_name = rest.substr(0, dot);

  ColumnFilter out;
  out.column = std::string(column);
  if (op_name == "eq") out.op = Op::kEq;
  else if (op_name == "neq") out.op = Op::kNeq;
  else if (op_name == "lt") out.op = Op::kLt;
  else if (op_name == "lte") out.op = Op::kLte;
  else if (op_name == "gt") out.op = Op::kGt;
  else if (op_name == "gte") out.op = Op::kGte;
  else if (op_name == "in") out.op = Op::kIn;
  else {
    return absl::InvalidArgumentError(
        absl::StrCat("unknown operator ", Quote(op_name), " in ", Quote(filter),
                     " (use eq, neq, lt, lte, gt, gte, in)"));
  }
  if (dot == absl::string_view::npos) return bad("missing value");
  const absl::string_view value = rest.substr(dot + 1);
  if (value.size() > kMaxFilterValueBytes) {
    return bad(absl::StrCat("value longer than ", kMaxFilterValueBytes, " bytes"));
  }

  auto operand = [](std::string text) {
    Operand o;
    o.text = std::move(text);
    if (LooksNumeric(o.text) && absl::SimpleAtod(o.text, &o.number)) {
      o.is_number = true;
      o.is_integer = absl::SimpleAtoi(o.text, &o.integer);
    }
    if (o.text == "true") o.boolean = Operand::Bool::kTrue;
    if (o.text == "false") o.boolean = Operand::Bool::kFalse;
    return o;
  };

  if (out.op != Op::kIn) {
    out.operands.push_back(operand(std::string(value)));
    return out;
  }

  if (value.size() < 2 || value.front() != '(' || value.back() != ')') {
    return bad("in.(...) needs parentheses");
  }
  const absl::string_view list = value.substr(1, value.size() - 2);
  if (absl::StripAsciiWhitespace(list).empty()) return bad("empty list");
  const size_t n = list.size();
  size_t pos = 0;
  while (true) {
    while (pos < n && absl::ascii_isspace(list[pos])) ++pos;
    std::string item;
    if (pos < n && list[pos] == '"') {
      ++pos;
      bool closed = false;
      while (pos < n) {
        const char c = list[pos];
        if (c == '\\' && pos + 1 < n) {
          item.push_back(list[pos + 1]);
          pos += 2;
        } else if (c == '"') {
          closed = true;
          ++pos;
          break;
        } else {
          item.push_back(c);
          ++pos;
        }
      }
      if (!closed) return bad("unterminated quoted item in list");
      while (pos < n && absl::ascii_isspace(list[pos])) ++pos;
      if (pos < n && list[pos] != ',') return bad("text after a quoted item in list");
    } else {
      size_t end = list.find(',', pos);
      if (end == absl::string_view::npos) end = n;
      const absl::string_view raw =
          absl::StripTrailingAsciiWhitespace(list.substr(pos, end - pos));
      if (raw.empty()) return bad("empty item in list (write \"\" for an empty string)");
      if (raw.find_first_of("\"()") != absl::string_view::npos) {
        return bad(absl::StrCat("list item ", Quote(raw),
                                " contains a quote or parenthesis (double-quote it)"));
      }
      item = std::string(raw);
      pos = end;
    }
    if (static_cast<int>(out.operands.size()) == kMaxInListItems) {
      return bad(absl::StrCat("in-list has more than ", kMaxInListItems, " items"));
    }
    out.operands.push_back(operand(std::move(item)));
    if (pos >= n) break;
    ++pos;  // the comma
  }
  return out;
}

absl::StatusOr<ChangeFilter> ChangeFilter::Compile(
    const google::protobuf::RepeatedPtrField<v1::Subscription>& subs,
    const std::map<std::string, std::string>& known_tables) {
  if (subs.size() > kMaxSubscriptions) {
    return absl::InvalidArgumentError(absl::StrCat(
        "too many subscriptions (", subs.size(), ", at most ", kMaxSubscriptions, ")"));
  }
  ChangeFilter result;
  result.subs_.reserve(subs.size());
  for (int i = 0; i < subs.size(); ++i) {
    const v1::Subscription& sub = subs.Get(i);
    const std::string where = absl::StrCat("subscription ", i + 1, ": ");
    CompiledSubscription compiled;

    if (!sub.table().empty() && sub.table() != "*") {
      auto it = known_tables.find(sub.table());
      if (it == known_tables.end()) {
        return absl::InvalidArgumentError(
            absl::StrCat(where, "unknown table ", Quote(sub.table())));
      }
      compiled.all_tables = false;
      compiled.table = it->second;
    }

    for (int e : sub.events()) {
      if (e == v1::EVENT_TYPE_UNSPECIFIED) {
        return absl::InvalidArgumentError(
            absl::StrCat(where, "EVENT_TYPE_UNSPECIFIED is not an event to subscribe to"));
      }
      if (!v1::EventType_IsValid(e) || e >= 32) {
        return absl::InvalidArgumentError(absl::StrCat(where, "unknown event type ", e));
      }
      compiled.event_mask |= uint32_t{1} << e;
    }

    if (sub.filters_size() > kMaxFiltersPerSubscription) {
      return absl::InvalidArgumentError(
          absl::StrCat(where, "too many filters (", sub.filters_size(), ", at most ",
                       kMaxFiltersPerSubscription, ")"));
    }
    compiled.filters.reserve(sub.filters_size());
    for (const std::string& filter : sub.filters()) {
      absl::StatusOr<ColumnFilter> f = CompileFilter(filter);
      if (!f.ok()) {
        return absl::InvalidArgumentError(absl::StrCat(where, f.status().message()));
      }
      compiled.filters.push_back(*std::move(f));
    }
    if (!compiled.filters.empty()) result.has_column_filters_ = true;
    result.subs_.push_back(std::move(compiled));
  }
  return result;
}

bool ChangeFilter::TableAndEventMatch(const CompiledSubscription& sub,
                                      const v1::Change& change) {
  if (!sub.all_tables && sub.table != change.table()) return false;
  if (sub.event_mask == 0) return true;
  const int e = change.event();
  return e >= 0 && e < 32 && (sub.event_mask & (uint32_t{1} << e)) != 0;
}

bool ChangeFilter::Holds(const ColumnFilter& filter, const JsonValue& value) {
  // A number's interpretations, parsed once for all operands (an in-list).
  std::optional<int64_t> integer;
  double number = 0;
  bool number_ok = false;
  if (value.type() == JsonValue::Type::kNumber) {
    integer = value.AsInt64();
    number_ok = integer.has_value() || absl::SimpleAtod(value.text(), &number);
  }

  // The value compared with one operand: -1/0/1, or nullopt when the two are
  // not comparable (that way).
  auto compare = [&](const Operand& o, bool ordering) -> std::optional<int> {
    switch (value.type()) {
      case JsonValue::Type::kString:
        return Sign(value.text().compare(o.text));  // byte-wise (unsigned)
      case JsonValue::Type::kNumber:
        if (!o.is_number) return Sign(value.text().compare(o.text));
        if (!number_ok) return std::nullopt;
        if (integer.has_value()) {
          if (o.is_integer) return (*integer > o.integer) - (*integer < o.integer);
          return CompareIntDouble(*integer, o.number);
        }
        if (o.is_integer) return -CompareIntDouble(o.integer, number);
        return (number > o.number) - (number < o.number);
      case JsonValue::Type::kBool:
        if (ordering || o.boolean == Operand::Bool::kNone) return std::nullopt;
        return value.bool_value() == (o.boolean == Operand::Bool::kTrue) ? 0 : 1;
      default:  // null, array, object
        return std::nullopt;
    }
  };

  if (filter.op == Op::kIn) {
    for (const Operand& o : filter.operands) {
      const std::optional<int> c = compare(o, /*ordering=*/false);
      if (c.has_value() && *c == 0) return true;
    }
    return false;
  }
  const bool ordering = filter.op != Op::kEq && filter.op != Op::kNeq;
  const std::optional<int> c = compare(filter.operands.front(), ordering);
  if (!c.has_value()) return false;
  switch (filter.op) {
    case Op::kEq: return *c == 0;
    case Op::kNeq: return *c != 0;
    case Op::kLt: return *c < 0;
    case Op::kLte: return *c <= 0;
    case Op::kGt: return *c > 0;
    case Op::kGte: return *c >= 0;
    case Op::kIn: break;
  }
  return false;
}

bool ChangeFilter::FiltersMatch(const CompiledSubscription& sub, const JsonValue& record) {
  for (const ColumnFilter& filter : sub.filters) {
    const JsonValue* value = record.Find(filter.column);
    if (value == nullptr || !Holds(filter, *value)) return false;
  }
  return true;
}

bool ChangeFilter::Matches(const v1::Change& change, const JsonValue* record) const {
  if (subs_.empty()) return true;
  for (const CompiledSubscription& sub : subs_) {
    if (!TableAndEventMatch(sub, change)) continue;
    if (sub.filters.empty()) return true;
    if (record != nullptr && FiltersMatch(sub, *record)) return true;
  }
  return false;
}

bool ChangeFilter::Matches(const v1::Change& change) const {
  if (subs_.empty()) return true;
  std::optional<JsonValue> record;
  bool parsed = false;
  for (const CompiledSubscription& sub : subs_) {
    if (!TableAndEventMatch(sub, change)) continue;
    if (sub.filters.empty()) return true;
    if (!parsed) {
      parsed = true;
      absl::StatusOr<JsonValue> r = ParseJson(FilterRecord(change));
      if (r.ok()) record = *std::move(r);
    }
    if (record.has_value() && FiltersMatch(sub, *record)) return true;
  }
  return false;
}

}  // namespace pulsesync

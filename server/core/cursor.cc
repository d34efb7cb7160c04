#include "server/core/cursor.h"

#include <algorithm>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "pulsesync/internal/cursor.pb.h"

namespace pulsesync {
namespace {
constexpr absl::string_view kPrefix = "c1.";
}  // namespace

bool IsSnapshotText(absl::string_view s) {
  std::vector<absl::string_view> parts = absl::StrSplit(s, ':');
  if (parts.size() != 3 || parts[0].empty() || parts[1].empty()) return false;
  auto digits = [](absl::string_view d) {
    if (d.empty() || d.size() > 20) return false;
    for (char c : d) {
      if (!absl::ascii_isdigit(static_cast<unsigned char>(c))) return false;
    }
    return true;
  };
  if (!digits(parts[0]) || !digits(parts[1])) return false;
  if (parts[2].empty()) return true;
  for (absl::string_view x : absl::StrSplit(parts[2], ',')) {
    if (!digits(x)) return false;
  }
  return true;
}

namespace {

struct ParsedSnapshot {
  uint64_t xmin = 0, xmax = 0;
  std::vector<uint64_t> xip;
  bool Visible(uint64_t x) const {
    if (x >= xmax) return false;
    if (x < xmin) return true;
    return std::find(xip.begin(), xip.end(), x) == xip.end();
  }
};

bool ParseSnapshot(absl::string_view text, ParsedSnapshot* out) {
  if (!IsSnapshotText(text)) return false;
  std::vector<absl::string_view> parts = absl::StrSplit(text, ':');
  if (!absl::SimpleAtoi(parts[0], &out->xmin) || !absl::SimpleAtoi(parts[1], &out->xmax)) {
    return false;
  }
  if (!parts[2].empty()) {
    for (absl::string_view x : absl::StrSplit(parts[2], ',')) {
      uint64_t v;
      if (!absl::SimpleAtoi(x, &v)) return false;
      out->xip.push_back(v);
    }
  }
  return true;
}

}  // namespace

bool SnapshotIncludes(absl::string_view outer, absl::string_view inner) {
  ParsedSnapshot o, i;
  if (!ParseSnapshot(outer, &o) || !ParseSnapshot(inner, &i)) return false;
  // Everything visible in `inner` is below its xmax: below inner.xmin, or
  // between xmin and xmax and not in its xip.
  if (i.xmax > o.xmax) return false;
  if (i.xmin > o.xmin) {
    // Transactions in [o.xmin, i.xmin) are visible in inner: they must be
    // visible in outer too.
    for (uint64_t x : o.xip) {
      if (x < i.xmin) return false;
    }
  }
  for (uint64_t x : o.xip) {
    if (i.Visible(x)) return false;
  }
  return true;
}

absl::StatusOr<std::string> RewindSnapshot(absl::string_view snapshot, uint64_t first_xid) {
  ParsedSnapshot s;
  if (!ParseSnapshot(snapshot, &s)) {
    return absl::InvalidArgumentError(absl::StrCat("malformed snapshot \"", snapshot, "\""));
  }
  if (s.xmax <= first_xid) return std::string(snapshot);
  std::vector<std::string> xip;
  for (uint64_t x : s.xip) {
    if (x < first_xid) xip.push_back(absl::StrCat(x));
  }
  return absl::StrCat(std::min(s.xmin, first_xid), ":", first_xid, ":", absl::StrJoin(xip, ","));
}

std::string EncodeCursor(const Cursor& cursor) {
  internal::CursorState state;
  state.set_system_id(cursor.system_id);
  state.set_delivered(cursor.delivered);
  state.set_batch_upper(cursor.batch_upper);
  state.set_batch_after_position(cursor.batch_after_position);
  state.set_incarnation(cursor.incarnation);
  return absl::StrCat(kPrefix, absl::WebSafeBase64Escape(state.SerializeAsString()));
}

absl::StatusOr<Cursor> DecodeCursor(absl::string_view text) {
  if (text.empty()) return Cursor{};
  auto invalid = [](absl::string_view why) {
    return absl::InvalidArgumentError(absl::StrCat("malformed cursor: ", why));
  };
  if (text.size() > kMaxCursorBytes) {
    return invalid(absl::StrCat("longer than ", kMaxCursorBytes, " bytes"));
  }
  if (!absl::StartsWith(text, kPrefix)) return invalid("unknown format (expected \"c1.\" prefix)");
  std::string bytes;
  if (!absl::WebSafeBase64Unescape(text.substr(kPrefix.size()), &bytes)) {
    return invalid("not base64url");
  }
  internal::CursorState state;
  if (!state.ParseFromString(bytes)) return invalid("undecodable");
  Cursor c;
  c.system_id = state.system_id();
  c.delivered = state.delivered();
  c.batch_upper = state.batch_upper();
  c.batch_after_position = state.batch_after_position();
  c.incarnation = state.incarnation();
  if (c.system_id == 0) return invalid("no database identity");
  if (!c.delivered.empty() && !IsSnapshotText(c.delivered)) return invalid("bad snapshot");
  if (!c.batch_upper.empty() && !IsSnapshotText(c.batch_upper)) return invalid("bad batch bound");
  if (c.batch_upper.empty() && c.batch_after_position != 0) return invalid("position without batch");
  if (c.batch_after_position < 0) return invalid("negative position");
  if (c.incarnation < 0) return invalid("negative incarnation");
  if (c.delivered.empty() && c.batch_upper.empty()) return invalid("empty position");
  return c;
}

}  // namespace pulsesync

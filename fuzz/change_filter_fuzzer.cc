// libFuzzer harness: Supabase-style StreamChanges filters
// (server/core/change_filter.h), compiled from a client's subscriptions and
// evaluated against row JSON.
//
// Input: sections separated by a line "--". Every section but the last is
// one subscription: its first line the table ("" or "*" = all), its second
// line the events (one digit per event, 0-3 = EventType; other characters
// are ignored), each further line a filter ("column=op.value"). The last
// section is the change: its first line the event (a digit 0-3), the rest
// the row JSON (new_record; old_record too for a DELETE).
//
// Checked, beyond "no crash, no leak, no undefined behaviour": Matches gives
// the same answer whether it parses the record itself or is handed a parse;
// no subscriptions match everything.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <map>
#include <string>
#include <vector>

#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"
#include "common/json.h"
#include "pulsesync/v1/sync.pb.h"
#include "server/core/change_filter.h"

namespace {

const std::map<std::string, std::string>& KnownTables() {
  static const auto* tables = new std::map<std::string, std::string>{
      {"tasks", "tasks"}, {"task", "tasks"}, {"projects", "projects"}, {"project", "projects"}};
  return *tables;
}

pulsesync::v1::EventType EventOf(char c) {
  return static_cast<pulsesync::v1::EventType>((static_cast<unsigned char>(c) - '0') & 3);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const absl::string_view text(reinterpret_cast<const char*>(data), size);
  std::vector<absl::string_view> sections = absl::StrSplit(text, "\n--\n");
  google::protobuf::RepeatedPtrField<pulsesync::v1::Subscription> subs;
  for (size_t i = 0; i + 1 < sections.size(); ++i) {
    std::vector<absl::string_view> lines = absl::StrSplit(sections[i], '\n');
    pulsesync::v1::Subscription* sub = subs.Add();
    sub->set_table(std::string(lines[0]));
    if (lines.size() > 1) {
      for (char c : lines[1]) {
        if (c >= '0' && c <= '9') sub->add_events(EventOf(c));
      }
    }
    for (size_t k = 2; k < lines.size(); ++k) sub->add_filters(std::string(lines[k]));
  }
  auto filter = pulsesync::ChangeFilter::Compile(subs, KnownTables());
  if (!filter.ok()) return 0;

  const absl::string_view last = sections.back();
  const size_t newline = last.find('\n');
  pulsesync::v1::Change change;
  change.set_table(size % 2 == 0 ? "tasks" : "projects");
  change.set_object_type(size % 2 == 0 ? "task" : "project");
  change.set_event(last.empty() ? pulsesync::v1::EVENT_TYPE_INSERT : EventOf(last[0]));
  const std::string record(newline == absl::string_view::npos ? "" : last.substr(newline + 1));
  change.set_new_record(record);
  if (change.event() == pulsesync::v1::EVENT_TYPE_DELETE) change.set_old_record(record);

  const bool matches = filter->Matches(change);
  auto parsed = pulsesync::ParseJson(pulsesync::ChangeFilter::FilterRecord(change));
  if (filter->Matches(change, parsed.ok() ? &*parsed : nullptr) != matches) std::abort();
  if (subs.empty() && !matches) std::abort();
  return 0;
}

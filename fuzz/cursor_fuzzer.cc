// libFuzzer harness: cursor decoding (server/core/cursor.h). A cursor comes
// back from clients as an opaque string; the server decodes it and compares
// its snapshots with its own.
//
// Input: the first line is decoded as a cursor; the next two lines, when
// present, are compared as snapshots (SnapshotIncludes both ways).
// Checked, beyond "no crash, no leak, no undefined behaviour": a decoded
// cursor (other than the start, "") re-encodes to one that decodes to the
// same fields.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <vector>

#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"
#include "server/core/cursor.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const absl::string_view text(reinterpret_cast<const char*>(data), size);
  std::vector<absl::string_view> lines = absl::StrSplit(text, absl::MaxSplits('\n', 2));
  auto cursor = pulsesync::DecodeCursor(lines[0]);
  // The start of the log is "", never an encoded cursor.
  if (cursor.ok() && !cursor->at_start()) {
    auto again = pulsesync::DecodeCursor(pulsesync::EncodeCursor(*cursor));
    if (!again.ok() || again->system_id != cursor->system_id ||
        again->delivered != cursor->delivered || again->batch_upper != cursor->batch_upper ||
        again->batch_after_position != cursor->batch_after_position) {
      std::abort();
    }
    for (const std::string* s : {&cursor->delivered, &cursor->batch_upper}) {
      if (!s->empty()) (void)pulsesync::SnapshotIncludes(*s, *s);
    }
  }
  if (lines.size() == 3) {
    (void)pulsesync::SnapshotIncludes(lines[1], lines[2]);
    (void)pulsesync::SnapshotIncludes(lines[2], lines[1]);
  }
  return 0;
}

// libFuzzer harness: the JSON parser (common/json.h) that reads revision
// payloads, filter records and JWT headers and claims. Checked, beyond "no
// crash, no leak, no undefined behaviour":
//  - a document that parses serializes to text that parses to an equal
//    value and serializes to the same text again (Serialize is canonical);
//  - the nesting limit holds: a document that parses with limit 4 parses
//    with 64, and one refused with 64 is refused with 4;
//  - JsonQuote of any bytes is one valid JSON string;
//  - IsJsonNumber agrees with the parser.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>

#include "absl/strings/string_view.h"
#include "common/json.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const absl::string_view text(reinterpret_cast<const char*>(data), size);
  auto parsed = pulsesync::ParseJson(text);
  if (parsed.ok()) {
    const std::string once = parsed->Serialize();
    auto again = pulsesync::ParseJson(once);
    if (!again.ok() || !(*again == *parsed) || again->Serialize() != once) std::abort();
  }
  if (pulsesync::ParseJson(text, 4).ok() && !parsed.ok()) std::abort();

  auto quoted = pulsesync::ParseJson(pulsesync::JsonQuote(text));
  if (!quoted.ok() || !quoted->is_string()) std::abort();

  if (pulsesync::IsJsonNumber(text)) {
    if (!parsed.ok() || parsed->type() != pulsesync::JsonValue::Type::kNumber) std::abort();
  }
  return 0;
}

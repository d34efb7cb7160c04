// A small JSON reader and writer for payloads and records: strict RFC 8259,
// numbers kept as their literal text (so int64 values and decimals round-trip
// exactly), object members in document order, duplicate keys refused.
#ifndef PULSESYNC_COMMON_JSON_H_
#define PULSESYNC_COMMON_JSON_H_

#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace pulsesync {

class JsonValue {
 public:
  enum class Type { kNull, kBool, kNumber, kString, kArray, kObject };
  using Member = std::pair<std::string, JsonValue>;

  JsonValue() = default;  // null
  static JsonValue Bool(bool b);
  // `literal` must be a valid JSON number literal (see IsJsonNumber).
  static JsonValue Number(absl::string_view literal);
  static JsonValue Number(int64_t n);
  static JsonValue String(absl::string_view s);
  static JsonValue Array(std::vector<JsonValue> items = {});
  static JsonValue Object(std::vector<Member> members = {});

  Type type() const { return type_; }
  bool is_null() const { return type_ == Type::kNull; }
  bool is_object() const { return type_ == Type::kObject; }
  bool is_string() const { return type_ == Type::kString; }

  bool bool_value() const { return bool_; }
  // Number literal text or decoded string; empty for other types.
  const std::string& text() const { return text_; }
  // The number as an int64 if it is an integer in range.
  std::optional<int64_t> AsInt64() const;
  const std::vector<JsonValue>& items() const { return items_; }
  const std::vector<Member>& members() const { return members_; }

  // Object lookup; nullptr when absent or not an object.
  const JsonValue* Find(absl::string_view key) const;
  // Object: replaces the member or appends it.
  void Set(absl::string_view key, JsonValue value);

  // Compact serialization.
  std::string Serialize() const;

  friend bool operator==(const JsonValue& a, const JsonValue& b);
  friend bool operator!=(const JsonValue& a, const JsonValue& b) { return !(a == b); }

 private:
  Type type_ = Type::kNull;
  bool bool_ = false;
  std::string text_;
  std::vector<JsonValue> items_;
  std::vector<Member> members_;
};

// Parses one JSON document (surrounding whitespace allowed). Errors are
// kInvalidArgument with the byte offset and what was expected.
absl::StatusOr<JsonValue> ParseJson(absl::string_view text, int max_depth = 64);

// `s` as a JSON string literal, quotes included. Invalid UTF-8 bytes are
// replaced by U+FFFD so the output is always valid JSON.
std::string JsonQuote(absl::string_view s);

bool IsJsonNumber(absl::string_view s);

}  // namespace pulsesync

#endif  // PULSESYNC_COMMON_JSON_H_

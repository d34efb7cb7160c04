#include "common/json.h"

#include <cctype>
#include <cstdlib>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace pulsesync {
namespace {

// Length of the valid UTF-8 sequence at s[i], or 0 if invalid.
size_t Utf8SequenceLength(absl::string_view s, size_t i) {
  const auto b0 = static_cast<unsigned char>(s[i]);
  if (b0 < 0x80) return 1;
  size_t len;
  uint32_t cp;
  if ((b0 & 0xE0) == 0xC0) { len = 2; cp = b0 & 0x1F; }
  else if ((b0 & 0xF0) == 0xE0) { len = 3; cp = b0 & 0x0F; }
  else if ((b0 & 0xF8) == 0xF0) { len = 4; cp = b0 & 0x07; }
  else return 0;
  if (i + len > s.size()) return 0;
  for (size_t k = 1; k < len; ++k) {
    const auto b = static_cast<unsigned char>(s[i + k]);
    if ((b & 0xC0) != 0x80) return 0;
    cp = (cp << 6) | (b & 0x3F);
  }
  static constexpr uint32_t kMin[] = {0, 0, 0x80, 0x800, 0x10000};
  if (cp < kMin[len] || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return 0;
  return len;
}

void AppendUtf8(uint32_t cp, std::string* out) {
  if (cp < 0x80) {
    out->push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    out->push_back(static_cast<char>(0xC0 | (cp >> 6)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    out->push_back(static_cast<char>(0xE0 | (cp >> 12)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else {
    out->push_back(static_cast<char>(0xF0 | (cp >> 18)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
}

class Parser {
 public:
  Parser(absl::string_view text, int max_depth) : s_(text), max_depth_(max_depth) {}

  absl::StatusOr<JsonValue> ParseDocument() {
    SkipSpace();
    JsonValue v;
    if (!ParseValue(0, &v)) return error_;
    SkipSpace();
    if (pos_ != s_.size()) return Fail("end of input");
    return v;
  }

 private:
  absl::Status Fail(absl::string_view expected) {
    if (error_.ok()) {
      error_ = absl::InvalidArgumentError(absl::StrCat(
          "invalid JSON at offset ", pos_, ": expected ", expected,
          pos_ < s_.size() ? absl::StrFormat(", found '%c'", s_[pos_]) : ", found end of input"));
    }
    return error_;
  }
  bool FailB(absl::string_view expected) {
    (void)Fail(expected);
    return false;
  }

  void SkipSpace() {
    while (pos_ < s_.size() &&
           (s_[pos_] == ' ' || s_[pos_] == '\t' || s_[pos_] == '\n' || s_[pos_] == '\r')) {
      ++pos_;
    }
  }

  bool Literal(absl::string_view word) {
    if (s_.substr(pos_, word.size()) != word) return FailB(absl::StrCat("'", word, "'"));
    pos_ += word.size();
    return true;
  }

  bool ParseValue(int depth, JsonValue* out) {
    if (depth > max_depth_) return FailB(absl::StrCat("nesting of at most ", max_depth_));
    if (pos_ >= s_.size()) return FailB("a value");
    switch (s_[pos_]) {
      case 'n': if (!Literal("null")) return false; *out = JsonValue(); return true;
      case 't': if (!Literal("true")) return false; *out = JsonValue::Bool(true); return true;
      case 'f': if (!Literal("false")) return false; *out = JsonValue::Bool(false); return true;
      case '"': {
        std::string str;
        if (!ParseString(&str)) return false;
        *out = JsonValue::String(str);
        return true;
      }
      case '[': return ParseArray(depth, out);
      case '{': return ParseObject(depth, out);
      default: return ParseNumber(out);
    }
  }

  bool ParseNumber(JsonValue* out) {
    const size_t start = pos_;
    if (pos_ < s_.size() && s_[pos_] == '-') ++pos_;
    while (pos_ < s_.size() && (std::isdigit(static_cast<unsigned char>(s_[pos_])) ||
                                s_[pos_] == '.' || s_[pos_] == 'e' || s_[pos_] == 'E' ||
                                s_[pos_] == '+' || s_[pos_] == '-')) {
      ++pos_;
    }
    absl::string_view lit = s_.substr(start, pos_ - start);
    if (lit.empty() || !IsJsonNumber(lit)) {
      pos_ = start;
      return FailB("a value");
    }
    *out = JsonValue::Number(lit);
    return true;
  }

  bool ParseHex4(uint32_t* cp) {
    if (pos_ + 4 > s_.size()) return FailB("4 hex digits");
    uint32_t v = 0;
    for (int k = 0; k < 4; ++k) {
      const char c = s_[pos_++];
      v <<= 4;
      if (c >= '0' && c <= '9') v |= c - '0';
      else if (c >= 'a' && c <= 'f') v |= c - 'a' + 10;
      else if (c >= 'A' && c <= 'F') v |= c - 'A' + 10;
      else { --pos_; return FailB("a hex digit"); }
    }
    *cp = v;
    return true;
  }

  bool ParseString(std::string* out) {
    ++pos_;  // opening quote
    while (true) {
      if (pos_ >= s_.size()) return FailB("'\"'");
      const char c = s_[pos_];
      if (c == '"') { ++pos_; return true; }
      if (static_cast<unsigned char>(c) < 0x20) return FailB("no control character in a string");
      if (c == '\\') {
        ++pos_;
        if (pos_ >= s_.size()) return FailB("an escape");
        const char e = s_[pos_++];
        switch (e) {
          case '"': out->push_back('"'); break;
          case '\\': out->push_back('\\'); break;
          case '/': out->push_back('/'); break;
          case 'b': out->push_back('\b'); break;
          case 'f': out->push_back('\f'); break;
          case 'n': out->push_back('\n'); break;
          case 'r': out->push_back('\r'); break;
          case 't': out->push_back('\t'); break;
          case 'u': {
            uint32_t cp;
            if (!ParseHex4(&cp)) return false;
            if (cp >= 0xD800 && cp <= 0xDBFF) {
              uint32_t lo;
              if (s_.substr(pos_, 2) != "\\u") return FailB("a low surrogate");
              pos_ += 2;
              if (!ParseHex4(&lo)) return false;
              if (lo < 0xDC00 || lo > 0xDFFF) return FailB("a low surrogate");
              cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
            } else if (cp >= 0xDC00 && cp <= 0xDFFF) {
              return FailB("a high surrogate first");
            }
            AppendUtf8(cp, out);
            break;
          }
          default: --pos_; return FailB("a valid escape");
        }
        continue;
      }
      const size_t len = Utf8SequenceLength(s_, pos_);
      if (len == 0) return FailB("valid UTF-8");
      out->append(s_.data() + pos_, len);
      pos_ += len;
    }
  }

  bool ParseArray(int depth, JsonValue* out) {
    ++pos_;
    std::vector<JsonValue> items;
    SkipSpace();
    if (pos_ < s_.size() && s_[pos_] == ']') { ++pos_; *out = JsonValue::Array(); return true; }
    while (true) {
      SkipSpace();
      JsonValue v;
      if (!ParseValue(depth + 1, &v)) return false;
      items.push_back(std::move(v));
      SkipSpace();
      if (pos_ < s_.size() && s_[pos_] == ',') { ++pos_; continue; }
      if (pos_ < s_.size() && s_[pos_] == ']') { ++pos_; break; }
      return FailB("',' or ']'");
    }
    *out = JsonValue::Array(std::move(items));
    return true;
  }

  bool ParseObject(int depth, JsonValue* out) {
    ++pos_;
    // Members collected here and moved in once: each key is compared with
    // the earlier ones once (duplicates), not again by JsonValue::Set.
    std::vector<JsonValue::Member> members;
    SkipSpace();
    if (pos_ < s_.size() && s_[pos_] == '}') { ++pos_; *out = JsonValue::Object(); return true; }
    members.reserve(8);
    while (true) {
      SkipSpace();
      if (pos_ >= s_.size() || s_[pos_] != '"') return FailB("a member name");
      const size_t key_pos = pos_;
      std::string key;
      if (!ParseString(&key)) return false;
      for (const JsonValue::Member& m : members) {
        if (m.first == key) {
          pos_ = key_pos;
          return FailB(absl::StrCat("no duplicate member \"", key, "\""));
        }
      }
      SkipSpace();
      if (pos_ >= s_.size() || s_[pos_] != ':') return FailB("':'");
      ++pos_;
      SkipSpace();
      JsonValue v;
      if (!ParseValue(depth + 1, &v)) return false;
      members.emplace_back(std::move(key), std::move(v));
      SkipSpace();
      if (pos_ < s_.size() && s_[pos_] == ',') { ++pos_; continue; }
      if (pos_ < s_.size() && s_[pos_] == '}') { ++pos_; break; }
      return FailB("',' or '}'");
    }
    *out = JsonValue::Object(std::move(members));
    return true;
  }

  absl::string_view s_;
  int max_depth_;
  size_t pos_ = 0;
  absl::Status error_;
};

}  // namespace

JsonValue JsonValue::Bool(bool b) { JsonValue v; v.type_ = Type::kBool; v.bool_ = b; return v; }
JsonValue JsonValue::Number(absl::string_view literal) {
  JsonValue v; v.type_ = Type::kNumber; v.text_ = std::string(literal); return v;
}
JsonValue JsonValue::Number(int64_t n) { return Number(absl::StrCat(n)); }
JsonValue JsonValue::String(absl::string_view s) {
  JsonValue v; v.type_ = Type::kString; v.text_ = std::string(s); return v;
}
JsonValue JsonValue::Array(std::vector<JsonValue> items) {
  JsonValue v; v.type_ = Type::kArray; v.items_ = std::move(items); return v;
}
JsonValue JsonValue::Object(std::vector<Member> members) {
  JsonValue v; v.type_ = Type::kObject; v.members_ = std::move(members); return v;
}

std::optional<int64_t> JsonValue::AsInt64() const {
  int64_t n;
  if (type_ != Type::kNumber || !absl::SimpleAtoi(text_, &n)) return std::nullopt;
  return n;
}

const JsonValue* JsonValue::Find(absl::string_view key) const {
  if (type_ != Type::kObject) return nullptr;
  for (const Member& m : members_) {
    if (m.first == key) return &m.second;
  }
  return nullptr;
}

void JsonValue::Set(absl::string_view key, JsonValue value) {
  for (Member& m : members_) {
    if (m.first == key) { m.second = std::move(value); return; }
  }
  members_.emplace_back(std::string(key), std::move(value));
}

std::string JsonValue::Serialize() const {
  switch (type_) {
    case Type::kNull: return "null";
    case Type::kBool: return bool_ ? "true" : "false";
    case Type::kNumber: return text_;
    case Type::kString: return JsonQuote(text_);
    case Type::kArray: {
      std::string out = "[";
      for (size_t i = 0; i < items_.size(); ++i) {
        if (i > 0) out += ",";
        out += items_[i].Serialize();
      }
      return out + "]";
    }
    case Type::kObject: {
      std::string out = "{";
      for (size_t i = 0; i < members_.size(); ++i) {
        if (i > 0) out += ",";
        absl::StrAppend(&out, JsonQuote(members_[i].first), ":", members_[i].second.Serialize());
      }
      return out + "}";
    }
  }
  return "null";
}

bool operator==(const JsonValue& a, const JsonValue& b) {
  if (a.type_ != b.type_) return false;
  switch (a.type_) {
    case JsonValue::Type::kNull: return true;
    case JsonValue::Type::kBool: return a.bool_ == b.bool_;
    case JsonValue::Type::kNumber: {
      if (a.text_ == b.text_) return true;
      double x, y;  // 1.0 == 1, 1e2 == 100
      return absl::SimpleAtod(a.text_, &x) && absl::SimpleAtod(b.text_, &y) && x == y;
    }
    case JsonValue::Type::kString: return a.text_ == b.text_;
    case JsonValue::Type::kArray: return a.items_ == b.items_;
    case JsonValue::Type::kObject: {
      // Member order does not matter for equality.
      if (a.members_.size() != b.members_.size()) return false;
      for (const auto& m : a.members_) {
        const JsonValue* other = b.Find(m.first);
        if (other == nullptr || !(*other == m.second)) return false;
      }
      return true;
    }
  }
  return false;
}

absl::StatusOr<JsonValue> ParseJson(absl::string_view text, int max_depth) {
  return Parser(text, max_depth).ParseDocument();
}

bool IsJsonNumber(absl::string_view s) {
  size_t i = 0;
  auto digit = [&](size_t k) { return k < s.size() && s[k] >= '0' && s[k] <= '9'; };
  if (i < s.size() && s[i] == '-') ++i;
  if (!digit(i)) return false;
  if (s[i] == '0') {
    ++i;
  } else {
    while (digit(i)) ++i;
  }
  if (i < s.size() && s[i] == '.') {
    ++i;
    if (!digit(i)) return false;
    while (digit(i)) ++i;
  }
  if (i < s.size() && (s[i] == 'e' || s[i] == 'E')) {
    ++i;
    if (i < s.size() && (s[i] == '+' || s[i] == '-')) ++i;
    if (!digit(i)) return false;
    while (digit(i)) ++i;
  }
  return i == s.size();
}

std::string JsonQuote(absl::string_view s) {
  std::string out;
  out.reserve(s.size() + 2);
  out.push_back('"');
  for (size_t i = 0; i < s.size();) {
    const char c = s[i];
    switch (c) {
      case '"': out += "\\\""; ++i; continue;
      case '\\': out += "\\\\"; ++i; continue;
      case '\n': out += "\\n"; ++i; continue;
      case '\r': out += "\\r"; ++i; continue;
      case '\t': out += "\\t"; ++i; continue;
      default: break;
    }
    if (static_cast<unsigned char>(c) < 0x20) {
      out += absl::StrFormat("\\u%04x", static_cast<unsigned char>(c));
      ++i;
      continue;
    }
    const size_t len = Utf8SequenceLength(s, i);
    if (len == 0) {
      out += "\xEF\xBF\xBD";
      ++i;
    } else {
      out.append(s.data() + i, len);
      i += len;
    }
  }
  out.push_back('"');
  return out;
}

}  // namespace pulsesync

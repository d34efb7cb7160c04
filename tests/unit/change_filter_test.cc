#include "server/core/change_filter.h"

#include <atomic>
#include <cstdlib>
#include <map>
#include <new>
#include <ostream>
#include <string>
#include <vector>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "common/json.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "pulsesync/v1/sync.pb.h"
#include "tests/testing/status_matchers.h"

// Counts heap allocations in this test binary, so that the test can check
// that Matches on a parsed record does not allocate. GCC 12 takes the
// replaced operator delete's free() for a mismatch with operator new once it
// inlines both; they are a matching pair.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"
#endif
namespace {
std::atomic<long> g_allocations{0};
}  // namespace

void* operator new(std::size_t n) {
  g_allocations.fetch_add(1, std::memory_order_relaxed);
  if (void* p = std::malloc(n == 0 ? 1 : n)) return p;
  throw std::bad_alloc();
}
void operator delete(void* p) noexcept { std::free(p); }
void operator delete(void* p, std::size_t) noexcept { std::free(p); }

namespace pulsesync {
namespace {

using ::pulsesync::testing::StatusIs;
using ::testing::AllOf;
using ::testing::HasSubstr;

const std::map<std::string, std::string>& Tables() {
  static const auto* tables = new std::map<std::string, std::string>{
      {"tasks", "tasks"}, {"task", "tasks"}, {"projects", "projects"}, {"project", "projects"}};
  return *tables;
}

v1::Subscription Sub(const std::string& table, const std::vector<std::string>& filters,
                     const std::vector<v1::EventType>& events = {}) {
  v1::Subscription s;
  s.set_table(table);
  for (const std::string& f : filters) s.add_filters(f);
  for (v1::EventType e : events) s.add_events(e);
  return s;
}

absl::StatusOr<ChangeFilter> CompileSubs(const std::vector<v1::Subscription>& subs) {
  google::protobuf::RepeatedPtrField<v1::Subscription> field;
  for (const v1::Subscription& s : subs) *field.Add() = s;
  return ChangeFilter::Compile(field, Tables());
}

v1::Change MakeChange(const std::string& table, v1::EventType event,
                      const std::string& new_record, const std::string& old_record = "") {
  v1::Change c;
  c.set_schema("public");
  c.set_table(table);
  c.set_object_type(table == "tasks" ? "task" : "project");
  c.set_event(event);
  c.set_new_record(new_record);
  c.set_old_record(old_record);
  return c;
}

// Both Matches overloads, checked to agree.
bool Match(const ChangeFilter& filter, const v1::Change& change) {
  const bool lazy = filter.Matches(change);
  absl::StatusOr<JsonValue> record = ParseJson(ChangeFilter::FilterRecord(change));
  const bool parsed = filter.Matches(change, record.ok() ? &*record : nullptr);
  EXPECT_EQ(lazy, parsed) << "the two Matches overloads disagree";
  return lazy;
}

class ChangeFilterTest : public ::testing::Test {
 protected:
  // Does `filter` (one subscription, all tables) hold for `record`, the new
  // row of an UPDATE?
  bool Holds(const std::string& filter, const std::string& record) {
    absl::StatusOr<ChangeFilter> f = CompileSubs({Sub("", {filter})});
    EXPECT_OK(f) << filter;
    if (!f.ok()) return false;
    return Match(*f, MakeChange("tasks", v1::EVENT_TYPE_UPDATE, record));
  }

  // The error message Compile gives for one subscription with `filter`.
  std::string CompileError(const std::string& filter) {
    absl::StatusOr<ChangeFilter> f = CompileSubs({Sub("tasks", {filter})});
    EXPECT_THAT(f, StatusIs(absl::StatusCode::kInvalidArgument)) << filter;
    return f.ok() ? "" : std::string(f.status().message());
  }
};

// --- No subscriptions -------------------------------------------------------

TEST_F(ChangeFilterTest, NoSubscriptionsMatchEveryChange) {
  ASSERT_OK_AND_ASSIGN(ChangeFilter f, CompileSubs({}));
  EXPECT_FALSE(f.has_column_filters());
  EXPECT_TRUE(Match(f, MakeChange("tasks", v1::EVENT_TYPE_INSERT, "{}")));
  EXPECT_TRUE(Match(f, MakeChange("projects", v1::EVENT_TYPE_DELETE, "not json")));
  EXPECT_TRUE(ChangeFilter().Matches(MakeChange("tasks", v1::EVENT_TYPE_UPDATE, "")));
}

// --- Numbers ----------------------------------------------------------------

TEST_F(ChangeFilterTest, EveryOperatorOnIntegers) {
  const std::string r = R"({"priority":2})";
  EXPECT_TRUE(Holds("priority=eq.2", r));
  EXPECT_FALSE(Holds("priority=eq.3", r));
  EXPECT_TRUE(Holds("priority=neq.3", r));
  EXPECT_FALSE(Holds("priority=neq.2", r));
  EXPECT_TRUE(Holds("priority=lt.3", r));
  EXPECT_FALSE(Holds("priority=lt.2", r));
  EXPECT_TRUE(Holds("priority=lte.2", r));
  EXPECT_FALSE(Holds("priority=lte.1", r));
  EXPECT_TRUE(Holds("priority=gt.1", r));
  EXPECT_FALSE(Holds("priority=gt.2", r));
  EXPECT_TRUE(Holds("priority=gte.2", r));
  EXPECT_FALSE(Holds("priority=gte.3", r));
  EXPECT_TRUE(Holds("priority=in.(1,2,3)", r));
  EXPECT_FALSE(Holds("priority=in.(1,3)", r));
}

TEST_F(ChangeFilterTest, ComparesNumbersNumericallyNotAsText) {
  // As text "10" < "9"; as numbers it is greater.
  EXPECT_TRUE(Holds("priority=gt.9", R"({"priority":10})"));
  EXPECT_TRUE(Holds("priority=lt.10", R"({"priority":9})"));
  EXPECT_TRUE(Holds("priority=gt.-5", R"({"priority":-1})"));
  EXPECT_TRUE(Holds("priority=lt.0", R"({"priority":-1})"));
}

TEST_F(ChangeFilterTest, EveryOperatorOnDecimalsAndExponents) {
  const std::string r = R"({"score":2.5})";
  EXPECT_TRUE(Holds("score=eq.2.5", r));
  EXPECT_TRUE(Holds("score=eq.2.50", r));
  EXPECT_TRUE(Holds("score=eq.25e-1", r));
  EXPECT_TRUE(Holds("score=neq.2.4", r));
  EXPECT_TRUE(Holds("score=lt.3", r));
  EXPECT_TRUE(Holds("score=lte.2.5", r));
  EXPECT_TRUE(Holds("score=gt.2", r));
  EXPECT_TRUE(Holds("score=gte.2.5", r));
  EXPECT_FALSE(Holds("score=gt.2.5", r));
  EXPECT_TRUE(Holds("score=in.(1, 2.5)", r));
  // An integer-valued decimal equals the integer.
  EXPECT_TRUE(Holds("priority=eq.2", R"({"priority":2.0})"));
  EXPECT_TRUE(Holds("priority=eq.2.0", R"({"priority":2})"));
  EXPECT_TRUE(Holds("priority=eq.1000", R"({"priority":1e3})"));
  EXPECT_TRUE(Holds("priority=eq.+2", R"({"priority":2})"));
  EXPECT_TRUE(Holds("score=gt.-.5", R"({"score":0})"));
}

TEST_F(ChangeFilterTest, IntegersBeyondDoublePrecisionCompareExactly) {
  // 2^53 + 1 and 2^53 are the same double.
  const std::string r = R"({"big":9007199254740993})";
  EXPECT_FALSE(Holds("big=eq.9007199254740992", r));
  EXPECT_TRUE(Holds("big=eq.9007199254740993", r));
  EXPECT_TRUE(Holds("big=neq.9007199254740992", r));
  EXPECT_TRUE(Holds("big=gt.9007199254740992", r));
  EXPECT_FALSE(Holds("big=lt.9007199254740993", r));
  EXPECT_FALSE(Holds("big=in.(9007199254740992)", r));
  EXPECT_TRUE(Holds("big=in.(9007199254740993)", r));
  // Against a decimal filter the integer is not rounded either.
  EXPECT_TRUE(Holds("big=gt.9007199254740992.0", r));
  EXPECT_FALSE(Holds("big=eq.9007199254740992.0", r));
  // A limit: a non-integer filter value is a double, and 2^53 + 0.5 rounds
  // to 2^53.
  EXPECT_FALSE(Holds("big=lt.9007199254740992.5", R"({"big":9007199254740992})"));
  // int64 extremes.
  EXPECT_TRUE(Holds("n=eq.9223372036854775807", R"({"n":9223372036854775807})"));
  EXPECT_TRUE(Holds("n=lt.9223372036854775807", R"({"n":9223372036854775806})"));
  EXPECT_TRUE(Holds("n=eq.-9223372036854775808", R"({"n":-9223372036854775808})"));
  EXPECT_TRUE(Holds("n=lt.1e19", R"({"n":9223372036854775807})"));
  EXPECT_TRUE(Holds("n=gt.-1e19", R"({"n":-9223372036854775808})"));
  // Beyond int64 both sides fall back to doubles.
  EXPECT_TRUE(Holds("n=gt.9223372036854775807", R"({"n":1e300})"));
  EXPECT_TRUE(Holds("n=gt.1e300", R"({"n":1e400})"));
}

TEST_F(ChangeFilterTest, NumberAgainstNonNumericValueComparesAsText) {
  EXPECT_FALSE(Holds("priority=eq.high", R"({"priority":2})"));
  EXPECT_TRUE(Holds("priority=neq.high", R"({"priority":2})"));
  // "inf", "nan" and hex are not numbers here: as numbers these would hold.
  EXPECT_FALSE(Holds("n=eq.inf", R"({"n":1e400})"));
  EXPECT_FALSE(Holds("n=gte.inf", R"({"n":1e400})"));
  EXPECT_FALSE(Holds("n=eq.0x2", R"({"n":2})"));
  EXPECT_FALSE(Holds("n=eq. 2", R"({"n":2})"));
  EXPECT_TRUE(Holds("n=neq.nan", R"({"n":2})"));
  // Text order, since the value is not a number: "10" < "9x".
  EXPECT_TRUE(Holds("n=lt.9x", R"({"n":10})"));
  EXPECT_TRUE(Holds("priority=in.(high,2)", R"({"priority":2})"));
}

// --- Strings ----------------------------------------------------------------

TEST_F(ChangeFilterTest, EveryOperatorOnStrings) {
  const std::string r = R"({"status":"open"})";
  EXPECT_TRUE(Holds("status=eq.open", r));
  EXPECT_FALSE(Holds("status=eq.Open", r));
  EXPECT_TRUE(Holds("status=neq.done", r));
  EXPECT_FALSE(Holds("status=neq.open", r));
  EXPECT_TRUE(Holds("status=lt.pending", r));
  EXPECT_FALSE(Holds("status=lt.open", r));
  EXPECT_TRUE(Holds("status=lte.open", r));
  EXPECT_TRUE(Holds("status=gt.done", r));
  EXPECT_FALSE(Holds("status=gt.open", r));
  EXPECT_TRUE(Holds("status=gte.open", r));
  EXPECT_FALSE(Holds("status=gte.p", r));
  EXPECT_TRUE(Holds("status=in.(done,open)", r));
  EXPECT_FALSE(Holds("status=in.(done,closed)", r));
}

TEST_F(ChangeFilterTest, StringsCompareByteWise) {
  // Numeric-looking strings stay text: "10" < "9".
  EXPECT_FALSE(Holds("code=gt.9", R"({"code":"10"})"));
  EXPECT_TRUE(Holds("code=lt.9", R"({"code":"10"})"));
  EXPECT_FALSE(Holds("code=eq.1", R"({"code":"1.0"})"));
  // UTF-8 orders by code point: "é" (0xC3 0xA9) is after "z".
  EXPECT_TRUE(Holds("title=gt.z", R"({"title":"\u00e9t\u00e9"})"));
  EXPECT_TRUE(Holds("title=eq.\xc3\xa9t\xc3\xa9", R"({"title":"\u00e9t\u00e9"})"));
  // UUIDs and ISO timestamps in one format.
  const std::string id = "6f1c2a9e-0b7d-4c3e-9a51-2d8e7f6a4b10";
  EXPECT_TRUE(Holds("id=eq." + id, absl::StrCat(R"({"id":")", id, R"("})")));
  EXPECT_TRUE(Holds("id=lt.7", absl::StrCat(R"({"id":")", id, R"("})")));
  const std::string ts = R"({"updated_at":"2024-05-01T10:00:00.000Z"})";
  EXPECT_TRUE(Holds("updated_at=gt.2024-04-30T23:59:59.999Z", ts));
  EXPECT_TRUE(Holds("updated_at=gte.2024-05-01T10:00:00.000Z", ts));
  EXPECT_FALSE(Holds("updated_at=gt.2024-05-01T10:00:00.000Z", ts));
  EXPECT_TRUE(Holds("updated_at=lt.2024-05-01T10:00:00.001Z", ts));
}

TEST_F(ChangeFilterTest, EmptyValueMatchesTheEmptyString) {
  EXPECT_TRUE(Holds("title=eq.", R"({"title":""})"));
  EXPECT_FALSE(Holds("title=eq.", R"({"title":"x"})"));
  EXPECT_TRUE(Holds("title=neq.", R"({"title":"x"})"));
}

TEST_F(ChangeFilterTest, ValueIsTakenLiterally) {
  EXPECT_TRUE(Holds("title=eq.a=b.c", R"({"title":"a=b.c"})"));
  EXPECT_TRUE(Holds("title=eq.(x, y)", R"j({"title":"(x, y)"})j"));
  EXPECT_TRUE(Holds("title=eq. padded ", R"({"title":" padded "})"));
  EXPECT_TRUE(Holds(R"(title=eq."q")", R"({"title":"\"q\""})"));
}

// --- Booleans, null, missing, other types -------------------------------------

TEST_F(ChangeFilterTest, BooleansMatchTrueAndFalseWithEqualityOnly) {
  const std::string t = R"({"archived":true})";
  const std::string f = R"({"archived":false})";
  EXPECT_TRUE(Holds("archived=eq.true", t));
  EXPECT_FALSE(Holds("archived=eq.false", t));
  EXPECT_TRUE(Holds("archived=eq.false", f));
  EXPECT_TRUE(Holds("archived=neq.false", t));
  EXPECT_FALSE(Holds("archived=neq.true", t));
  EXPECT_TRUE(Holds("archived=in.(true)", t));
  EXPECT_FALSE(Holds("archived=in.(false)", t));
  EXPECT_TRUE(Holds("archived=in.(false, true)", f));
  for (const char* op : {"lt", "lte", "gt", "gte"}) {
    EXPECT_FALSE(Holds(absl::StrCat("archived=", op, ".true"), t)) << op;
    EXPECT_FALSE(Holds(absl::StrCat("archived=", op, ".false"), t)) << op;
    EXPECT_FALSE(Holds(absl::StrCat("archived=", op, ".true"), f)) << op;
    EXPECT_FALSE(Holds(absl::StrCat("archived=", op, ".false"), f)) << op;
  }
  // Any other value never matches a boolean, neq included.
  EXPECT_FALSE(Holds("archived=eq.1", t));
  EXPECT_FALSE(Holds("archived=neq.1", t));
  EXPECT_FALSE(Holds("archived=eq.TRUE", t));
  EXPECT_FALSE(Holds("archived=neq.yes", t));
}

TEST_F(ChangeFilterTest, NullAndMissingColumnsMatchNoOperator) {
  for (const char* filter :
       {"due=eq.1", "due=neq.1", "due=lt.1", "due=lte.1", "due=gt.1", "due=gte.1",
        "due=in.(1,2)", "due=eq.null", "due=neq.null", "due=eq.", "due=neq.x",
        "due=eq.true", "due=neq.false"}) {
    EXPECT_FALSE(Holds(filter, R"({"due":null})")) << filter;
    EXPECT_FALSE(Holds(filter, R"({"other":1})")) << filter;
  }
}

TEST_F(ChangeFilterTest, ArraysAndObjectsMatchNoOperator) {
  for (const char* filter : {"tags=eq.[]", "tags=neq.x", "tags=gt.a", "tags=in.(x)"}) {
    EXPECT_FALSE(Holds(filter, R"({"tags":[]})")) << filter;
    EXPECT_FALSE(Holds(filter, R"({"tags":{"a":1}})")) << filter;
  }
}

TEST_F(ChangeFilterTest, RecordThatIsNotAJsonObjectFailsColumnFiltersOnly) {
  ASSERT_OK_AND_ASSIGN(ChangeFilter with, CompileSubs({Sub("tasks", {"status=neq.x"})}));
  ASSERT_OK_AND_ASSIGN(ChangeFilter without, CompileSubs({Sub("tasks", {})}));
  for (const char* record : {"", "not json", "[1,2]", "\"status\"", "null", "{\"status\":"}) {
    const v1::Change c = MakeChange("tasks", v1::EVENT_TYPE_INSERT, record);
    EXPECT_FALSE(Match(with, c)) << record;
    EXPECT_TRUE(Match(without, c)) << record;
  }
  const v1::Change ok = MakeChange("tasks", v1::EVENT_TYPE_INSERT, R"({"status":"y"})");
  EXPECT_FALSE(with.Matches(ok, nullptr));  // caller could not parse it
}

// --- In-lists ---------------------------------------------------------------

TEST_F(ChangeFilterTest, InListItemsAreTrimmedAndMayBeQuoted) {
  EXPECT_TRUE(Holds("status=in.( open , done )", R"({"status":"done"})"));
  EXPECT_TRUE(Holds("status=in.(open)", R"({"status":"open"})"));
  EXPECT_TRUE(Holds(R"(title=in.(a,b,"c,d"))", R"({"title":"c,d"})"));
  EXPECT_FALSE(Holds(R"(title=in.(a,b,"c,d"))", R"({"title":"c"})"));
  EXPECT_FALSE(Holds(R"(title=in.(a,b,"c,d"))", R"({"title":"d"})"));
  EXPECT_TRUE(Holds(R"j(title=in.("x (draft)", y))j", R"j({"title":"x (draft)"})j"));
  EXPECT_TRUE(Holds(R"(title=in.(" padded ",y))", R"({"title":" padded "})"));
  EXPECT_TRUE(Holds(R"(title=in.("say \"hi\"",y))", R"({"title":"say \"hi\""})"));
  EXPECT_TRUE(Holds(R"(title=in.("back\\slash"))", R"({"title":"back\\slash"})"));
  EXPECT_TRUE(Holds(R"(title=in.("",x))", R"({"title":""})"));
  EXPECT_TRUE(Holds(R"(title=in.( "a" , "b" ))", R"({"title":"b"})"));
  EXPECT_TRUE(Holds("title=in.(a.b:c)", R"({"title":"a.b:c"})"));
  EXPECT_TRUE(Holds(R"(n=in.("7"))", R"({"n":7})"));  // quoted numbers are still numbers
}

TEST_F(ChangeFilterTest, InListAcceptsOneHundredItems) {
  std::string list;
  for (int i = 1; i <= ChangeFilter::kMaxInListItems; ++i) {
    absl::StrAppend(&list, i == 1 ? "" : ",", i);
  }
  EXPECT_TRUE(Holds("n=in.(" + list + ")", R"({"n":100})"));
  EXPECT_FALSE(Holds("n=in.(" + list + ")", R"({"n":101})"));
}

// --- Tables and events --------------------------------------------------------

TEST_F(ChangeFilterTest, TableByNameOrObjectType) {
  const v1::Change task = MakeChange("tasks", v1::EVENT_TYPE_INSERT, "{}");
  const v1::Change project = MakeChange("projects", v1::EVENT_TYPE_INSERT, "{}");
  for (const char* name : {"tasks", "task"}) {
    ASSERT_OK_AND_ASSIGN(ChangeFilter f, CompileSubs({Sub(name, {})}));
    EXPECT_TRUE(Match(f, task)) << name;
    EXPECT_FALSE(Match(f, project)) << name;
  }
  for (const char* all : {"", "*"}) {
    ASSERT_OK_AND_ASSIGN(ChangeFilter f, CompileSubs({Sub(all, {})}));
    EXPECT_TRUE(Match(f, task)) << all;
    EXPECT_TRUE(Match(f, project)) << all;
  }
}

TEST_F(ChangeFilterTest, EventsRestrictWhenListed) {
  const v1::Change ins = MakeChange("tasks", v1::EVENT_TYPE_INSERT, "{}");
  const v1::Change upd = MakeChange("tasks", v1::EVENT_TYPE_UPDATE, "{}");
  const v1::Change del = MakeChange("tasks", v1::EVENT_TYPE_DELETE, "{}", "{}");
  ASSERT_OK_AND_ASSIGN(ChangeFilter all, CompileSubs({Sub("tasks", {})}));
  EXPECT_TRUE(Match(all, ins));
  EXPECT_TRUE(Match(all, upd));
  EXPECT_TRUE(Match(all, del));
  ASSERT_OK_AND_ASSIGN(
      ChangeFilter some,
      CompileSubs({Sub("tasks", {}, {v1::EVENT_TYPE_INSERT, v1::EVENT_TYPE_DELETE})}));
  EXPECT_TRUE(Match(some, ins));
  EXPECT_FALSE(Match(some, upd));
  EXPECT_TRUE(Match(some, del));
  v1::Change odd = upd;
  odd.set_event(static_cast<v1::EventType>(40));  // from a newer peer; never listed
  EXPECT_FALSE(Match(some, odd));
  EXPECT_TRUE(Match(all, odd));
}

// --- DELETE matches the old row ------------------------------------------------

TEST_F(ChangeFilterTest, DeleteMatchesOnOldRecord) {
  ASSERT_OK_AND_ASSIGN(ChangeFilter f, CompileSubs({Sub("tasks", {"status=eq.done"})}));
  // Tombstone: the new row differs (and says deleted); the old row was done.
  const v1::Change tombstone =
      MakeChange("tasks", v1::EVENT_TYPE_DELETE, R"({"status":"open","deleted":true})",
                 R"({"status":"done","deleted":false})");
  EXPECT_EQ(ChangeFilter::FilterRecord(tombstone), tombstone.old_record());
  EXPECT_TRUE(Match(f, tombstone));
  // The reverse: the new row says done, the old did not.
  const v1::Change other =
      MakeChange("tasks", v1::EVENT_TYPE_DELETE, R"({"status":"done","deleted":true})",
                 R"({"status":"open","deleted":false})");
  EXPECT_FALSE(Match(f, other));
  // A hard delete (SQL DELETE) has only the old row.
  const v1::Change hard = MakeChange("tasks", v1::EVENT_TYPE_DELETE, "", R"({"status":"done"})");
  EXPECT_TRUE(Match(f, hard));
  // No old row: the new one is all there is.
  const v1::Change no_old = MakeChange("tasks", v1::EVENT_TYPE_DELETE, R"({"status":"done"})");
  EXPECT_EQ(ChangeFilter::FilterRecord(no_old), no_old.new_record());
  EXPECT_TRUE(Match(f, no_old));
}

TEST_F(ChangeFilterTest, InsertAndUpdateMatchOnNewRecord) {
  ASSERT_OK_AND_ASSIGN(ChangeFilter f, CompileSubs({Sub("tasks", {"status=eq.done"})}));
  const v1::Change done = MakeChange("tasks", v1::EVENT_TYPE_UPDATE, R"({"status":"done"})",
                                     R"({"status":"open"})");
  EXPECT_EQ(ChangeFilter::FilterRecord(done), done.new_record());
  EXPECT_TRUE(Match(f, done));
  const v1::Change reopened = MakeChange("tasks", v1::EVENT_TYPE_UPDATE,
                                         R"({"status":"open"})", R"({"status":"done"})");
  EXPECT_FALSE(Match(f, reopened));
  EXPECT_TRUE(Match(f, MakeChange("tasks", v1::EVENT_TYPE_INSERT, R"({"status":"done"})")));
}

// --- AND within, OR across -------------------------------------------------------

TEST_F(ChangeFilterTest, FiltersOfOneSubscriptionAreAnded) {
  ASSERT_OK_AND_ASSIGN(ChangeFilter f,
                       CompileSubs({Sub("tasks", {"status=eq.open", "priority=gte.2"})}));
  EXPECT_TRUE(f.has_column_filters());
  auto task = [](const std::string& r) { return MakeChange("tasks", v1::EVENT_TYPE_INSERT, r); };
  EXPECT_TRUE(Match(f, task(R"({"status":"open","priority":3})")));
  EXPECT_FALSE(Match(f, task(R"({"status":"open","priority":1})")));
  EXPECT_FALSE(Match(f, task(R"({"status":"done","priority":3})")));
  EXPECT_FALSE(Match(f, task(R"({"status":"open"})")));
}

TEST_F(ChangeFilterTest, SubscriptionsAreOred) {
  ASSERT_OK_AND_ASSIGN(
      ChangeFilter f,
      CompileSubs({Sub("tasks", {"status=eq.open"}, {v1::EVENT_TYPE_INSERT}),
                   Sub("project", {"name=eq.Docs"}),
                   Sub("tasks", {}, {v1::EVENT_TYPE_DELETE})}));
  EXPECT_TRUE(Match(f, MakeChange("tasks", v1::EVENT_TYPE_INSERT, R"({"status":"open"})")));
  EXPECT_FALSE(Match(f, MakeChange("tasks", v1::EVENT_TYPE_UPDATE, R"({"status":"open"})")));
  EXPECT_FALSE(Match(f, MakeChange("tasks", v1::EVENT_TYPE_INSERT, R"({"status":"done"})")));
  EXPECT_TRUE(Match(f, MakeChange("projects", v1::EVENT_TYPE_UPDATE, R"({"name":"Docs"})")));
  EXPECT_FALSE(Match(f, MakeChange("projects", v1::EVENT_TYPE_UPDATE, R"({"name":"Ops"})")));
  // The third subscription has no filters: any task DELETE, even unparsable.
  EXPECT_TRUE(Match(f, MakeChange("tasks", v1::EVENT_TYPE_DELETE, "", "garbage")));
  // A filter in one subscription does not leak into another on the same table.
  ASSERT_OK_AND_ASSIGN(ChangeFilter g, CompileSubs({Sub("tasks", {"status=eq.open"}),
                                                    Sub("tasks", {"priority=eq.1"})}));
  EXPECT_TRUE(Match(g, MakeChange("tasks", v1::EVENT_TYPE_INSERT, R"({"priority":1})")));
  EXPECT_TRUE(Match(g, MakeChange("tasks", v1::EVENT_TYPE_INSERT, R"({"status":"open"})")));
  EXPECT_FALSE(Match(g, MakeChange("tasks", v1::EVENT_TYPE_INSERT, R"({"priority":2})")));
}

TEST_F(ChangeFilterTest, HasColumnFiltersWhenAnySubscriptionHasOne) {
  ASSERT_OK_AND_ASSIGN(ChangeFilter none, CompileSubs({Sub("tasks", {}), Sub("", {})}));
  EXPECT_FALSE(none.has_column_filters());
  ASSERT_OK_AND_ASSIGN(ChangeFilter some, CompileSubs({Sub("tasks", {}), Sub("", {"a=eq.1"})}));
  EXPECT_TRUE(some.has_column_filters());
}

// --- Malformed input -------------------------------------------------------------

struct BadFilter {
  std::string filter;
  std::string message;  // part of the expected message
};

void PrintTo(const BadFilter& b, std::ostream* os) { *os << absl::CHexEscape(b.filter); }

class ChangeFilterBadFilterTest : public ::testing::TestWithParam<BadFilter> {};

TEST_P(ChangeFilterBadFilterTest, IsInvalidArgumentNamingSubscriptionAndFilter) {
  // The bad filter sits in the second subscription, after a good filter.
  absl::StatusOr<ChangeFilter> f =
      CompileSubs({Sub("tasks", {"a=eq.1"}), Sub("tasks", {"a=eq.1", GetParam().filter})});
  EXPECT_THAT(f, StatusIs(absl::StatusCode::kInvalidArgument,
                          AllOf(HasSubstr("subscription 2: "), HasSubstr(GetParam().message),
                                HasSubstr(absl::CHexEscape(GetParam().filter.substr(0, 80))))));
}

INSTANTIATE_TEST_SUITE_P(
    All, ChangeFilterBadFilterTest,
    ::testing::Values(
        BadFilter{"", R"(filter "": empty filter)"},
        BadFilter{"priority", R"(filter "priority": missing '=')"},
        BadFilter{"priority=gt", R"(filter "priority=gt": missing value)"},
        BadFilter{"priority=in", R"(filter "priority=in": missing value)"},
        BadFilter{"title=like.x",
                  R"(unknown operator "like" in "title=like.x" (use eq, neq, lt, lte, gt, gte, in))"},
        BadFilter{"title=EQ.x", R"(unknown operator "EQ" in "title=EQ.x")"},
        BadFilter{"title=is.null", R"(unknown operator "is")"},
        BadFilter{"title=", R"(unknown operator "" in "title=")"},
        BadFilter{"title=.x", R"(unknown operator "" in "title=.x")"},
        BadFilter{"=eq.1", R"(filter "=eq.1": bad column name "")"},
        BadFilter{"Title=eq.x", R"(filter "Title=eq.x": bad column name "Title")"},
        BadFilter{"1abc=eq.x", R"(bad column name "1abc")"},
        BadFilter{"a-b=eq.x", R"(bad column name "a-b")"},
        BadFilter{"a b=eq.x", R"(bad column name "a b")"},
        BadFilter{"a.b=eq.x", R"(bad column name "a.b")"},
        BadFilter{"\"a\"=eq.x", R"(bad column name "\"a\"")"},
        BadFilter{"t\xc3\xa9=eq.x", R"(bad column name "t\xc3\xa9")"},
        BadFilter{std::string(64, 'a') + "=eq.1", "bad column name"},
        BadFilter{"id=in.1,2", R"(filter "id=in.1,2": in.(...) needs parentheses)"},
        BadFilter{"id=in.(1,2", "in.(...) needs parentheses"},
        BadFilter{"id=in.1,2)", "in.(...) needs parentheses"},
        BadFilter{"id=in.", "in.(...) needs parentheses"},
        BadFilter{"id=in.()", R"j(filter "id=in.()": empty list)j"},
        BadFilter{"id=in.(  )", "empty list"},
        BadFilter{"id=in.(a,,b)", "empty item in list"},
        BadFilter{"id=in.(a,)", "empty item in list"},
        BadFilter{"id=in.(,a)", "empty item in list"},
        BadFilter{R"(id=in.("a,b))", "unterminated quoted item"},
        BadFilter{R"(id=in.("a\"))", "unterminated quoted item"},
        BadFilter{R"(id=in.("a"b))", "text after a quoted item"},
        BadFilter{R"(id=in.(a"b"))", R"(list item "a\"b\"" contains a quote)"},
        BadFilter{"id=in.(a(b))", R"j(list item "a(b)" contains a quote or parenthesis)j"},
        BadFilter{"t=eq." + std::string(1025, 'x'), "value longer than 1024 bytes"},
        BadFilter{"t=in.(" + std::string(1023, 'x') + ")", "value longer than 1024 bytes"}));

TEST(ChangeFilterLimitsTest, FilterValueOfExactly1KiBIsAccepted) {
  EXPECT_OK(CompileSubs({Sub("tasks", {"t=eq." + std::string(1024, 'x')})}));
  EXPECT_OK(CompileSubs({Sub("tasks", {"t=in.(" + std::string(1022, 'x') + ")"})}));
}

TEST(ChangeFilterLimitsTest, InListOfMoreThan100ItemsIsRefused) {
  std::string list;
  for (int i = 0; i <= ChangeFilter::kMaxInListItems; ++i) absl::StrAppend(&list, i, ",");
  list.pop_back();  // 101 items
  EXPECT_THAT(CompileSubs({Sub("tasks", {"n=in.(" + list + ")"})}),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       AllOf(HasSubstr("subscription 1: filter \"n=in.(0,1,2"),
                             HasSubstr("in-list has more than 100 items"))));
}

TEST(ChangeFilterLimitsTest, MoreThan20FiltersIsRefused) {
  std::vector<std::string> filters(ChangeFilter::kMaxFiltersPerSubscription, "a=eq.1");
  EXPECT_OK(CompileSubs({Sub("tasks", filters)}));
  filters.push_back("a=eq.1");
  EXPECT_THAT(CompileSubs({Sub("", {}), Sub("tasks", filters)}),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("subscription 2: too many filters (21, at most 20)")));
}

TEST(ChangeFilterLimitsTest, MoreThan100SubscriptionsIsRefused) {
  std::vector<v1::Subscription> subs(ChangeFilter::kMaxSubscriptions, Sub("tasks", {}));
  EXPECT_OK(CompileSubs(subs));
  subs.push_back(Sub("tasks", {}));
  EXPECT_THAT(CompileSubs(subs),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("too many subscriptions (101, at most 100)")));
}

TEST(ChangeFilterCompileTest, UnknownTableIsRefused) {
  EXPECT_THAT(CompileSubs({Sub("tasks", {}), Sub("widgets", {})}),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr(R"(subscription 2: unknown table "widgets")")));
  EXPECT_THAT(CompileSubs({Sub("Tasks", {})}),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr(R"(subscription 1: unknown table "Tasks")")));
  EXPECT_THAT(CompileSubs({Sub("public.tasks", {})}),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("unknown table")));
}

TEST(ChangeFilterCompileTest, UnspecifiedOrUnknownEventIsRefused) {
  EXPECT_THAT(CompileSubs({Sub("tasks", {}, {v1::EVENT_TYPE_INSERT, v1::EVENT_TYPE_UNSPECIFIED})}),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("subscription 1: EVENT_TYPE_UNSPECIFIED is not an event")));
  EXPECT_THAT(CompileSubs({Sub("tasks", {}), Sub("tasks", {}, {static_cast<v1::EventType>(9)})}),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("subscription 2: unknown event type 9")));
}

TEST(ChangeFilterCompileTest, ErrorMessagesEscapeAndShortenInput) {
  const std::string filter = "title=like." + std::string(2000, 'x') + "\n";
  absl::StatusOr<ChangeFilter> f = CompileSubs({Sub("tasks", {filter})});
  ASSERT_THAT(f, StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("...\"")));
  EXPECT_LT(f.status().message().size(), 300u);
  EXPECT_THAT(CompileSubs({Sub("tasks", {"a=eq"}), Sub("w\n\"x", {})}),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr(R"(subscription 1: filter "a=eq": missing value)")));
  EXPECT_THAT(CompileSubs({Sub("w\n\"x", {})}),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr(R"(unknown table "w\n\"x")")));
}

// --- The hot path ------------------------------------------------------------------

TEST(ChangeFilterHotPathTest, MatchesOnAParsedRecordDoesNotAllocate) {
  ASSERT_OK_AND_ASSIGN(
      ChangeFilter f,
      CompileSubs({Sub("projects", {"name=eq.x"}),
                   Sub("task", {"status=in.(open,\"in progress\")", "priority=gte.2",
                                "big=neq.9007199254740992", "score=lt.2.75",
                                "title=gt.a", "archived=eq.false"},
                       {v1::EVENT_TYPE_INSERT, v1::EVENT_TYPE_UPDATE})}));
  const v1::Change change = MakeChange(
      "tasks", v1::EVENT_TYPE_UPDATE,
      R"({"status":"in progress","priority":3,"big":9007199254740993,"score":2.5,)"
      R"("title":"b","archived":false})");
  ASSERT_OK_AND_ASSIGN(JsonValue record, ParseJson(ChangeFilter::FilterRecord(change)));
  const long before = g_allocations.load();
  bool all = true;
  for (int i = 0; i < 1000; ++i) all = all && f.Matches(change, &record);
  const long after = g_allocations.load();
  EXPECT_TRUE(all);
  EXPECT_EQ(after - before, 0);
  // The counter does count: the overload that parses allocates.
  EXPECT_TRUE(f.Matches(change));
  EXPECT_GT(g_allocations.load(), after);
}

}  // namespace
}  // namespace pulsesync

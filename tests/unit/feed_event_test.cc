// FeedEvent's filter record: parsed on first use, once, for every thread
// that asks (streams read the same batch from several threads); and its
// encoding, which streams send side by side as a StreamChangesResponse.
#include <string>
#include <thread>
#include <vector>

#include "gtest/gtest.h"
#include "pulsesync/v1/sync.pb.h"
#include "server/core/feed_hub.h"

namespace pulsesync {
namespace {

v1::Change TaskChange(v1::EventType event, const std::string& new_record,
                      const std::string& old_record) {
  v1::Change c;
  c.set_object_type("task");
  c.set_event(event);
  c.set_new_record(new_record);
  c.set_old_record(old_record);
  return c;
}

TEST(FeedEventTest, TheRecordIsParsedFromTheRowFiltersApplyTo) {
  std::vector<v1::Change> changes = {
      TaskChange(v1::EVENT_TYPE_INSERT, R"({"id":"a","status":"todo"})", ""),
      TaskChange(v1::EVENT_TYPE_DELETE, R"({"id":"b","deleted":true})",
                 R"({"id":"b","status":"done"})"),
      TaskChange(v1::EVENT_TYPE_UPDATE, "not json", "")};
  std::shared_ptr<FeedBatch> batch = MakeFeedBatch(std::move(changes), "end");
  ASSERT_EQ(batch->events.size(), 3u);
  ASSERT_NE(batch->events[0].filter_record(), nullptr);
  EXPECT_EQ(batch->events[0].filter_record()->Find("status")->text(), "todo");
  // A DELETE filters on the row as it was.
  ASSERT_NE(batch->events[1].filter_record(), nullptr);
  EXPECT_EQ(batch->events[1].filter_record()->Find("status")->text(), "done");
  EXPECT_EQ(batch->events[2].filter_record(), nullptr);
  EXPECT_EQ(batch->end_cursor, "end");
}

TEST(FeedEventTest, EveryThreadGetsTheSameParse) {
  std::shared_ptr<FeedBatch> batch = MakeFeedBatch(
      {TaskChange(v1::EVENT_TYPE_INSERT, R"({"id":"a","priority":3})", "")}, "end");
  const FeedEvent& event = batch->events[0];
  std::vector<const JsonValue*> seen(8, nullptr);
  std::vector<std::thread> threads;
  for (size_t i = 0; i < seen.size(); ++i) {
    threads.emplace_back([&, i] { seen[i] = event.filter_record(); });
  }
  for (std::thread& t : threads) t.join();
  ASSERT_NE(seen[0], nullptr);
  for (const JsonValue* r : seen) EXPECT_EQ(r, seen[0]);
  EXPECT_EQ(seen[0]->Find("priority")->text(), "3");
}

TEST(FeedEventTest, ARecordSetFirstIsTheOneReturned) {
  FeedEvent event;
  event.change = TaskChange(v1::EVENT_TYPE_INSERT, R"({"id":"a"})", "");
  event.set_filter_record(JsonValue::Object({{"id", JsonValue::String("given")}}));
  ASSERT_NE(event.filter_record(), nullptr);
  EXPECT_EQ(event.filter_record()->Find("id")->text(), "given");
}

// A stream's message is its events' encodings side by side
// (change_stream.h): that must be the StreamChangesResponse a client parses,
// byte for byte what serializing the message would have made.
TEST(FeedEventTest, EncodingsSideBySideAreAStreamChangesResponse) {
  std::vector<v1::Change> changes = {
      TaskChange(v1::EVENT_TYPE_INSERT, R"({"id":"a","title":"caf\u00e9 ☃"})", ""),
      TaskChange(v1::EVENT_TYPE_DELETE, std::string(300, 'x'), R"({"id":"b"})"),
      v1::Change()};  // all defaults: an empty encoding of its own
  changes[0].set_position(1);
  changes[0].set_cursor("c1");
  changes[1].set_position(1LL << 40);
  changes[1].set_cursor(std::string(200, 'c'));  // a length past one varint byte
  std::shared_ptr<FeedBatch> batch = MakeFeedBatch(changes, "end");
  v1::StreamChangesResponse expected;
  std::string side_by_side;
  for (size_t i = 0; i < changes.size(); ++i) {
    *expected.add_changes() = changes[i];
    side_by_side += batch->events[i].wire();
  }
  EXPECT_EQ(side_by_side, expected.SerializeAsString());
  v1::StreamChangesResponse parsed;
  ASSERT_TRUE(parsed.ParseFromString(side_by_side));
  ASSERT_EQ(parsed.changes_size(), 3);
  EXPECT_EQ(parsed.changes(0).new_record(), changes[0].new_record());
  EXPECT_EQ(parsed.changes(1).position(), 1LL << 40);
  EXPECT_EQ(parsed.changes(1).cursor(), changes[1].cursor());
}

}  // namespace
}  // namespace pulsesync

#include <algorithm>
#include <cstdint>
#include <string>
#include <tuple>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/brotli_codec.h"
#include "common/uuid.h"
#include "gtest/gtest.h"
#include "pulsesync/v1/sync.pb.h"
#include "server/core/revision_applier.h"
#include "tests/testing/status_matchers.h"

namespace pulsesync {
namespace {

using ::pulsesync::testing::StatusIs;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::Not;

v1::Revision ValidUpsert() {
  v1::Revision r;
  r.set_id(NewUuid());
  r.set_object_type("task");
  r.set_object_id(NewUuid());
  r.set_origin_id("device-a");
  r.set_seq(1);
  r.set_op(v1::OPERATION_UPSERT);
  r.set_payload(R"({"title":"Write tests","priority":2})");
  r.set_created_at(1700000000000);
  r.mutable_clock()->set_physical_ms(1700000000000);
  r.mutable_clock()->set_counter(0);
  return r;
}

// ----- DecodeRevisions -----

TEST(DecodeRevisionsTest, IdentityReturnsRevisionsInOrder) {
  v1::ApplyRevisionsRequest req;
  std::vector<std::string> ids;
  for (int i = 0; i < 3; ++i) {
    *req.add_revisions() = ValidUpsert();
    ids.push_back(req.revisions(i).id());
  }
  ASSERT_OK_AND_ASSIGN(auto revs, DecodeRevisions(req, ApplyLimits()));
  ASSERT_EQ(revs.size(), 3u);
  for (int i = 0; i < 3; ++i) EXPECT_EQ(revs[i].id(), ids[i]);
}

TEST(DecodeRevisionsTest, BrotliBatchRoundTrips) {
  v1::RevisionBatch batch;
  for (int i = 0; i < 50; ++i) {
    v1::Revision r = ValidUpsert();
    r.set_seq(i);
    *batch.add_revisions() = r;
  }
  v1::ApplyRevisionsRequest req;
  req.set_encoding(v1::PAYLOAD_ENCODING_BROTLI);
  req.set_compressed_batch(BrotliCompress(batch.SerializeAsString()));
  ASSERT_OK_AND_ASSIGN(auto revs, DecodeRevisions(req, ApplyLimits()));
  ASSERT_EQ(revs.size(), 50u);
  for (int i = 0; i < 50; ++i) {
    EXPECT_EQ(revs[i].SerializeAsString(), batch.revisions(i).SerializeAsString()) << i;
  }
}

TEST(DecodeRevisionsTest, RejectsCompressedBatchWithIdentityEncoding) {
  v1::ApplyRevisionsRequest req;
  *req.add_revisions() = ValidUpsert();
  req.set_compressed_batch("x");
  EXPECT_THAT(DecodeRevisions(req, ApplyLimits()),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("compressed_batch")));
}

TEST(DecodeRevisionsTest, RejectsPlainRevisionsWithBrotliEncoding) {
  v1::RevisionBatch batch;
  *batch.add_revisions() = ValidUpsert();
  v1::ApplyRevisionsRequest req;
  req.set_encoding(v1::PAYLOAD_ENCODING_BROTLI);
  req.set_compressed_batch(BrotliCompress(batch.SerializeAsString()));
  *req.add_revisions() = ValidUpsert();
  EXPECT_THAT(DecodeRevisions(req, ApplyLimits()),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("uncompressed")));
}

TEST(DecodeRevisionsTest, RejectsBadBrotli) {
  v1::ApplyRevisionsRequest req;
  req.set_encoding(v1::PAYLOAD_ENCODING_BROTLI);
  req.set_compressed_batch(std::string(40, '\xff'));
  EXPECT_THAT(DecodeRevisions(req, ApplyLimits()),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("compressed_batch")));
}

TEST(DecodeRevisionsTest, RejectsBrotliOfSomethingElse) {
  v1::ApplyRevisionsRequest req;
  req.set_encoding(v1::PAYLOAD_ENCODING_BROTLI);
  req.set_compressed_batch(BrotliCompress(std::string("\x0f\xff\xff", 3)));
  EXPECT_THAT(DecodeRevisions(req, ApplyLimits()),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("RevisionBatch")));
}

TEST(DecodeRevisionsTest, RejectsBrotliBatchPastTheDecompressedLimit) {
  v1::RevisionBatch batch;
  for (int i = 0; i < 20; ++i) *batch.add_revisions() = ValidUpsert();
  const std::string raw = batch.SerializeAsString();
  v1::ApplyRevisionsRequest req;
  req.set_encoding(v1::PAYLOAD_ENCODING_BROTLI);
  req.set_compressed_batch(BrotliCompress(raw));
  ApplyLimits limits;
  limits.max_decompressed_bytes = raw.size() - 1;
  EXPECT_THAT(DecodeRevisions(req, limits),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("limit")));
  limits.max_decompressed_bytes = raw.size();
  EXPECT_OK(DecodeRevisions(req, limits));
}

TEST(DecodeRevisionsTest, RejectsBatchOverTheRevisionLimit) {
  ApplyLimits limits;
  limits.max_batch_revisions = 3;
  v1::ApplyRevisionsRequest req;
  for (int i = 0; i < 3; ++i) *req.add_revisions() = ValidUpsert();
  EXPECT_OK(DecodeRevisions(req, limits));
  *req.add_revisions() = ValidUpsert();
  EXPECT_THAT(DecodeRevisions(req, limits),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("limit is 3")));

  // The same limit applies to a compressed batch.
  v1::RevisionBatch batch;
  for (int i = 0; i < 4; ++i) *batch.add_revisions() = ValidUpsert();
  v1::ApplyRevisionsRequest compressed;
  compressed.set_encoding(v1::PAYLOAD_ENCODING_BROTLI);
  compressed.set_compressed_batch(BrotliCompress(batch.SerializeAsString()));
  EXPECT_THAT(DecodeRevisions(compressed, limits),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("limit is 3")));
}

TEST(DecodeRevisionsTest, RejectsEmptyBatch) {
  v1::ApplyRevisionsRequest req;
  EXPECT_THAT(DecodeRevisions(req, ApplyLimits()),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("no revisions")));
  v1::ApplyRevisionsRequest compressed;
  compressed.set_encoding(v1::PAYLOAD_ENCODING_BROTLI);
  compressed.set_compressed_batch(BrotliCompress(v1::RevisionBatch().SerializeAsString()));
  EXPECT_THAT(DecodeRevisions(compressed, ApplyLimits()),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("no revisions")));
}

TEST(DecodeRevisionsTest, RejectsUnknownEncoding) {
  v1::ApplyRevisionsRequest req;
  req.set_encoding(static_cast<v1::PayloadEncoding>(7));
  *req.add_revisions() = ValidUpsert();
  EXPECT_THAT(DecodeRevisions(req, ApplyLimits()),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("encoding")));
}

// ----- ValidateRevision -----

TEST(ValidateRevisionTest, AcceptsValidUpsertAndDelete) {
  EXPECT_THAT(ValidateRevision(ValidUpsert(), ApplyLimits()), IsEmpty());
  v1::Revision del = ValidUpsert();
  del.set_op(v1::OPERATION_DELETE);
  del.clear_payload();
  EXPECT_THAT(ValidateRevision(del, ApplyLimits()), IsEmpty());
}

TEST(ValidateRevisionTest, AcceptsUppercaseUuids) {
  v1::Revision r = ValidUpsert();
  r.set_id("6F9619FF-8B86-D011-B42D-00C04FC964FF");
  EXPECT_THAT(ValidateRevision(r, ApplyLimits()), IsEmpty());
}

TEST(ValidateRevisionTest, RejectsNonUuidId) {
  for (const char* id : {"", "not-a-uuid", "6f9619ff8b86d011b42d00c04fc964ff",
                         "6f9619ff-8b86-d011-b42d-00c04fc964f", "6f9619ff-8b86-d011-b42d-00c04fc964fg",
                         "{6f9619ff-8b86-d011-b42d-00c04fc964ff}"}) {
    SCOPED_TRACE(id);
    v1::Revision r = ValidUpsert();
    r.set_id(id);
    EXPECT_THAT(ValidateRevision(r, ApplyLimits()), HasSubstr("id \""));
    EXPECT_THAT(ValidateRevision(r, ApplyLimits()), HasSubstr("is not a UUID"));
  }
}

TEST(ValidateRevisionTest, RejectsNonUuidObjectId) {
  v1::Revision r = ValidUpsert();
  r.set_object_id("task-17");
  EXPECT_THAT(ValidateRevision(r, ApplyLimits()), HasSubstr("object_id \"task-17\" is not a UUID"));
}

TEST(ValidateRevisionTest, RejectsMissingOrOverlongObjectType) {
  v1::Revision r = ValidUpsert();
  r.set_object_type("");
  EXPECT_THAT(ValidateRevision(r, ApplyLimits()), HasSubstr("object_type is missing"));
  r.set_object_type(std::string(64, 't'));
  EXPECT_THAT(ValidateRevision(r, ApplyLimits()), HasSubstr("object_type is too long"));
  r.set_object_type(std::string(63, 't'));
  EXPECT_THAT(ValidateRevision(r, ApplyLimits()), IsEmpty());
}

TEST(ValidateRevisionTest, RejectsMissingOrOverlongOrigin) {
  v1::Revision r = ValidUpsert();
  r.clear_origin_id();
  EXPECT_THAT(ValidateRevision(r, ApplyLimits()), HasSubstr("origin_id is missing"));
  r.set_origin_id(std::string(201, 'o'));
  EXPECT_THAT(ValidateRevision(r, ApplyLimits()), HasSubstr("origin_id is longer than 200"));
  r.set_origin_id(std::string(200, 'o'));
  EXPECT_THAT(ValidateRevision(r, ApplyLimits()), IsEmpty());
}

TEST(ValidateRevisionTest, RejectsNegativeNumbers) {
  v1::Revision r = ValidUpsert();
  r.set_seq(-1);
  EXPECT_THAT(ValidateRevision(r, ApplyLimits()), HasSubstr("seq must be 1 or more"));
  r = ValidUpsert();
  r.set_created_at(-1);
  EXPECT_THAT(ValidateRevision(r, ApplyLimits()), HasSubstr("created_at is negative"));
  r = ValidUpsert();
  r.set_base_version(-5);
  EXPECT_THAT(ValidateRevision(r, ApplyLimits()), HasSubstr("base_version is negative"));
  r = ValidUpsert();
  r.mutable_clock()->set_physical_ms(-1);
  EXPECT_THAT(ValidateRevision(r, ApplyLimits()), HasSubstr("physical_ms is negative"));
}

TEST(ValidateRevisionTest, RejectsUnspecifiedOp) {
  v1::Revision r = ValidUpsert();
  r.set_op(v1::OPERATION_UNSPECIFIED);
  EXPECT_THAT(ValidateRevision(r, ApplyLimits()), HasSubstr("op is missing"));
  r.set_op(static_cast<v1::Operation>(9));
  EXPECT_THAT(ValidateRevision(r, ApplyLimits()), HasSubstr("op is missing"));
}

TEST(ValidateRevisionTest, RejectsPayloadThatIsNotJson) {
  v1::Revision r = ValidUpsert();
  for (const char* payload : {"", "{", "{\"title\":}", "{'title':'x'}", "{\"a\":1,\"a\":2}"}) {
    SCOPED_TRACE(payload);
    r.set_payload(payload);
    EXPECT_THAT(ValidateRevision(r, ApplyLimits()), HasSubstr("payload: "));
  }
}

TEST(ValidateRevisionTest, RejectsPayloadThatIsNotAnObject) {
  v1::Revision r = ValidUpsert();
  for (const char* payload : {"[]", "[{\"title\":\"x\"}]", "\"title\"", "42", "null", "true"}) {
    SCOPED_TRACE(payload);
    r.set_payload(payload);
    EXPECT_EQ(ValidateRevision(r, ApplyLimits()), "payload must be a JSON object");
  }
}

TEST(ValidateRevisionTest, RejectsPayloadWithInvalidUtf8) {
  v1::Revision r = ValidUpsert();
  r.set_payload("{\"title\":\"caf\xe9\"}");  // Latin-1 e-acute
  EXPECT_THAT(ValidateRevision(r, ApplyLimits()), HasSubstr("UTF-8"));
  r.set_payload("{\"title\":\"\xed\xa0\x80\"}");  // an encoded surrogate
  EXPECT_THAT(ValidateRevision(r, ApplyLimits()), HasSubstr("UTF-8"));
  r.set_payload("{\"title\":\"caf\xc3\xa9\"}");  // the same in UTF-8
  EXPECT_THAT(ValidateRevision(r, ApplyLimits()), IsEmpty());
}

TEST(ValidateRevisionTest, RejectsPayloadOverTheSizeLimit) {
  ApplyLimits limits;
  limits.max_payload_bytes = 32;
  v1::Revision r = ValidUpsert();
  r.set_payload("{\"title\":\"" + std::string(32 - 12, 'x') + "\"}");
  ASSERT_EQ(r.payload().size(), 32u);
  EXPECT_THAT(ValidateRevision(r, limits), IsEmpty());
  r.set_payload("{\"title\":\"" + std::string(32 - 11, 'x') + "\"}");
  EXPECT_THAT(ValidateRevision(r, limits), HasSubstr("payload is 33 bytes; the limit is 32"));
}

TEST(ValidateRevisionTest, DeleteAcceptsAnyPayload) {
  ApplyLimits limits;
  limits.max_payload_bytes = 4;
  v1::Revision r = ValidUpsert();
  r.set_op(v1::OPERATION_DELETE);
  for (const std::string& payload : {std::string("not json"), std::string("[1,2]"),
                                    std::string("\xff\xfe"), std::string(100, '{')}) {
    r.set_payload(payload);
    EXPECT_THAT(ValidateRevision(r, limits), IsEmpty());
  }
}

// A clock the server cannot order must be refused before it is stored:
// HlcText's fixed 15-digit field only sorts correctly below 10^15 ms, and a
// client sending microseconds by mistake (1.7e15) would otherwise win every
// later conflict forever, and lose against clocks of 16+ digits in no order.
TEST(ValidateRevisionTest, RejectsClockThatHlcTextCannotOrder) {
  v1::Revision r = ValidUpsert();
  r.mutable_clock()->set_physical_ms(1700000000000000);  // microseconds, 16 digits
  EXPECT_THAT(ValidateRevision(r, ApplyLimits()), HasSubstr("clock"));
  r = ValidUpsert();
  r.mutable_clock()->set_physical_ms(0);
  r.set_created_at(1700000000000000);  // the fallback clock
  EXPECT_THAT(ValidateRevision(r, ApplyLimits()), Not(IsEmpty()));
}

// ----- HlcText -----

TEST(HlcTextTest, HasFixedWidthFields) {
  EXPECT_EQ(HlcText(1700000000000, 5, "dev"), "001700000000000-0000000005-dev");
  EXPECT_EQ(HlcText(0, 0, ""), "000000000000000-0000000000-");
  EXPECT_EQ(HlcText(999999999999999, 4294967295u, "z"), "999999999999999-4294967295-z");
}

TEST(HlcTextTest, OrdersByMillisecondsThenCounterThenOrigin) {
  EXPECT_LT(HlcText(1000, 9, "z"), HlcText(1001, 0, "a"));
  EXPECT_LT(HlcText(1000, 1, "z"), HlcText(1000, 2, "a"));
  EXPECT_LT(HlcText(1000, 1, "a"), HlcText(1000, 1, "b"));
  EXPECT_LT(HlcText(1000, 1, "dev"), HlcText(1000, 1, "dev-2"));
}

TEST(HlcTextTest, LexicographicOrderEqualsClockOrderAcrossDigitCounts) {
  // Values chosen around every power of ten, where a non-padded form breaks.
  std::vector<int64_t> ms = {0, 1, 9, 10, 99, 100, 999, 1000};
  for (int64_t p = 10000; p <= 100000000000000; p *= 10) {
    ms.push_back(p - 1);
    ms.push_back(p);
  }
  ms.push_back(999999999999999);
  const std::vector<uint32_t> counters = {0, 1, 9, 10, 99, 100, 65535, 65536, 4294967295u};
  const std::vector<std::string> origins = {"", "a", "b", "ba"};
  using Clock = std::tuple<int64_t, uint32_t, std::string>;
  std::vector<Clock> clocks;
  for (int64_t m : ms)
    for (uint32_t c : counters)
      for (const std::string& o : origins) clocks.emplace_back(m, c, o);
  for (size_t i = 0; i + 1 < clocks.size(); ++i) {
    const Clock& a = clocks[i];
    const Clock& b = clocks[i + 1];
    ASSERT_LT(a, b);
    ASSERT_LT(HlcText(std::get<0>(a), std::get<1>(a), std::get<2>(a)),
              HlcText(std::get<0>(b), std::get<1>(b), std::get<2>(b)))
        << std::get<0>(a) << "/" << std::get<1>(a) << " vs " << std::get<0>(b) << "/"
        << std::get<1>(b);
  }
  // And over every pair, not only neighbours, on a subset.
  std::vector<std::string> texts;
  for (int64_t m : ms) texts.push_back(HlcText(m, 7, "o"));
  EXPECT_TRUE(std::is_sorted(texts.begin(), texts.end()));
}

}  // namespace
}  // namespace pulsesync

// micro_bench: Google Benchmark micro-benchmarks of the hot pure code, and
// the Brotli figures the spec promises ("shrinks JSON payloads by ~70%").
//
//   build/bench/micro_bench                      # all, Google Benchmark's table
//   build/bench/micro_bench --benchmark_filter=Brotli
//
// Before the benchmarks it prints the compression ratio of realistic
// TeamPulse revision batches (the RevisionBatch a client pushes) per Brotli
// quality and batch size, with the CPU cost per batch: what
// SyncEngineOptions::compress_push pays and saves.
#include <benchmark/benchmark.h>

#include <chrono>
#include <cstdio>
#include <map>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "bench/figures.h"
#include "common/brotli_codec.h"
#include "common/json.h"
#include "common/uuid.h"
#include "pulsesync/v1/sync.pb.h"
#include "server/core/change_filter.h"
#include "server/core/revision_applier.h"

namespace pulsesync {
namespace {

constexpr int64_t kT0 = 1'800'000'000'000;

// A task edit as TeamPulse makes them: mostly small field updates, some
// creates with a description.
std::string TaskPayload(std::mt19937& rng, const std::string& team) {
  static const char* const kWords[] = {"review", "deploy", "fix", "login", "page", "docs",
                                       "api", "sync", "offline", "retry", "cache", "team"};
  auto words = [&](int n) {
    std::string s;
    for (int i = 0; i < n; ++i) absl::StrAppend(&s, i ? " " : "", kWords[rng() % 12]);
    return s;
  };
  switch (rng() % 4) {
    case 0:
      return absl::StrCat(R"({"team_id":")", team, R"(","title":")", words(4),
                          R"(","description":")", words(20), R"(","priority":)", rng() % 5,
                          R"(,"status":"todo","created_at":"2027-01-15T09:00:00.000+00:00"})");
    case 1:
      return absl::StrCat(R"({"status":")", (rng() % 2) ? "doing" : "done", R"("})");
    case 2:
      return absl::StrCat(R"({"title":")", words(5), R"("})");
    default:
      return absl::StrCat(R"({"priority":)", rng() % 5, R"(,"assignee_id":")", NewUuid(), "\"}");
  }
}

v1::RevisionBatch MakeBatch(int n, uint32_t seed) {
  std::mt19937 rng(seed);
  const std::string team = NewUuid(), origin = NewUuid();
  v1::RevisionBatch batch;
  for (int i = 0; i < n; ++i) {
    v1::Revision* r = batch.add_revisions();
    r->set_id(NewTimeOrderedUuid());  // as LocalStore makes revision ids
    r->set_object_type("task");
    r->set_object_id(NewUuid());  // objects of any age and device: random
    r->set_origin_id(origin);
    r->set_seq(i + 1);
    r->set_op(v1::OPERATION_UPSERT);
    r->set_payload(TaskPayload(rng, team));
    r->set_created_at(kT0 + i);
    r->set_base_version(1000 + i);
    r->set_schema_version(2);
    r->mutable_clock()->set_physical_ms(kT0 + i);
  }
  return batch;
}

void PrintBrotliTable() {
  std::printf("Brotli on TeamPulse revision batches (serialized RevisionBatch)\n");
  std::printf("%8s %8s %10s %10s %8s %12s %12s\n", "batch", "quality", "raw B", "brotli B",
              "saved", "compress", "decompress");
  for (int n : {1, 10, 100, 1000}) {
    const std::string raw = MakeBatch(n, 7).SerializeAsString();
    for (int q : {1, 3, 5, 7, 9, 11}) {
      const int reps = n >= 1000 ? 5 : 50;
      std::string packed;
      auto t0 = std::chrono::steady_clock::now();
      for (int i = 0; i < reps; ++i) packed = BrotliCompress(raw, q);
      auto t1 = std::chrono::steady_clock::now();
      for (int i = 0; i < reps; ++i) (void)BrotliDecompress(packed, raw.size() * 2);
      auto t2 = std::chrono::steady_clock::now();
      const double c_us = std::chrono::duration<double, std::micro>(t1 - t0).count() / reps;
      const double d_us = std::chrono::duration<double, std::micro>(t2 - t1).count() / reps;
      std::printf("%8d %8d %10zu %10zu %7.0f%% %9.0f us %9.0f us\n", n, q, raw.size(),
                  packed.size(), 100.0 * (1.0 - double(packed.size()) / raw.size()), c_us, d_us);
      if (n == 100 && q == 5) {
        bench::PrintFigure("Brotli: bytes saved on a batch of 100 revisions, quality 5",
                           100.0 * (1.0 - double(packed.size()) / raw.size()), "%", 0, ">=70");
        bench::PrintFigure("Brotli: compress a batch of 100 revisions, quality 5", c_us, "us", 0,
                           "");
      }
    }
  }
  std::printf("(the spec: ~70%%; the client compresses at quality 5 and skips batches "
              "where it does not pay)\n\n");
}

void BM_ParsePayload(benchmark::State& state) {
  std::mt19937 rng(1);
  const std::string team = NewUuid();
  std::vector<std::string> payloads;
  for (int i = 0; i < 64; ++i) payloads.push_back(TaskPayload(rng, team));
  size_t i = 0, bytes = 0;
  for (auto _ : state) {
    const std::string& p = payloads[i++ % payloads.size()];
    benchmark::DoNotOptimize(ParseJson(p));
    bytes += p.size();
  }
  state.SetBytesProcessed(static_cast<int64_t>(bytes));
}
BENCHMARK(BM_ParsePayload);

void BM_ValidateRevision(benchmark::State& state) {
  const v1::RevisionBatch batch = MakeBatch(64, 3);
  ApplyLimits limits;
  size_t i = 0;
  for (auto _ : state) {
    benchmark::DoNotOptimize(ValidateRevision(batch.revisions(i++ % 64), limits));
  }
}
BENCHMARK(BM_ValidateRevision);

void BM_BrotliCompressBatch(benchmark::State& state) {
  const std::string raw = MakeBatch(static_cast<int>(state.range(0)), 9).SerializeAsString();
  for (auto _ : state) benchmark::DoNotOptimize(BrotliCompress(raw, static_cast<int>(state.range(1))));
  state.SetBytesProcessed(static_cast<int64_t>(raw.size() * state.iterations()));
}
BENCHMARK(BM_BrotliCompressBatch)->Args({100, 1})->Args({100, 5})->Args({100, 9});

void BM_BrotliDecompressBatch(benchmark::State& state) {
  const std::string raw = MakeBatch(100, 9).SerializeAsString();
  const std::string packed = BrotliCompress(raw, 5);
  for (auto _ : state) benchmark::DoNotOptimize(BrotliDecompress(packed, raw.size() * 2));
  state.SetBytesProcessed(static_cast<int64_t>(raw.size() * state.iterations()));
}
BENCHMARK(BM_BrotliDecompressBatch);

v1::Change TaskChange(int i) {
  v1::Change c;
  c.set_table("tasks");
  c.set_object_type("task");
  c.set_event(v1::EVENT_TYPE_UPDATE);
  c.set_new_record(absl::StrFormat(
      R"({"id":"%s","team_id":"t","status":"%s","priority":%d,"title":"task %d"})", NewUuid(),
      i % 3 == 0 ? "done" : "todo", i % 5, i));
  return c;
}

void BM_FilterMatch(benchmark::State& state) {
  google::protobuf::RepeatedPtrField<v1::Subscription> subs;
  v1::Subscription* s = subs.Add();
  s->set_table("tasks");
  s->add_filters("status=eq.done");
  s->add_filters("priority=gte.2");
  const std::map<std::string, std::string> tables = {{"tasks", "tasks"}, {"task", "tasks"}};
  absl::StatusOr<ChangeFilter> filter = ChangeFilter::Compile(subs, tables);
  if (!filter.ok()) {
    state.SkipWithError("filter did not compile");
    return;
  }
  std::vector<v1::Change> changes;
  std::vector<JsonValue> records;
  for (int i = 0; i < 64; ++i) {
    changes.push_back(TaskChange(i));
    records.push_back(*ParseJson(changes.back().new_record()));
  }
  size_t i = 0;
  // As the feed hub does: each change's record parsed once, matched per stream.
  for (auto _ : state) {
    const size_t k = i++ % 64;
    benchmark::DoNotOptimize(filter->Matches(changes[k], &records[k]));
  }
}
BENCHMARK(BM_FilterMatch);

}  // namespace
}  // namespace pulsesync

int main(int argc, char** argv) {
  pulsesync::PrintBrotliTable();
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}

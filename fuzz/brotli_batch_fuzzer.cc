// libFuzzer harness: Brotli-compressed batches (common/brotli_codec.h), as
// ApplyRevisions decodes them (server/core/revision_applier.cc,
// DecodeRevisions): decompress under a limit, then parse a RevisionBatch.
// Checked, beyond "no crash, no leak, no undefined behaviour": the output
// limit holds, and compressing the input then decompressing it gives the
// input back.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>

#include "absl/strings/string_view.h"
#include "common/brotli_codec.h"
#include "pulsesync/v1/sync.pb.h"

namespace {
constexpr size_t kLimit = 1 << 20;
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const absl::string_view input(reinterpret_cast<const char*>(data), size);
  auto raw = pulsesync::BrotliDecompress(input, kLimit);
  if (raw.ok()) {
    if (raw->size() > kLimit) std::abort();
    pulsesync::v1::RevisionBatch batch;
    if (batch.ParseFromString(*raw)) {
      for (const auto& revision : batch.revisions()) (void)revision.ByteSizeLong();
    }
  }
  auto back = pulsesync::BrotliDecompress(pulsesync::BrotliCompress(input, 1), size);
  if (!back.ok() || *back != input) std::abort();
  return 0;
}

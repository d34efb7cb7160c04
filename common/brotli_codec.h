// Brotli compression of protocol batches (RevisionBatch, ChangeBatch).
// The framing is Brotli's own stream format; the decoder refuses output past a
// caller-given limit so a small hostile input cannot expand without bound.
#ifndef PULSESYNC_COMMON_BROTLI_CODEC_H_
#define PULSESYNC_COMMON_BROTLI_CODEC_H_

#include <cstddef>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace pulsesync {

// Quality 0..11; 5 is a good speed/ratio balance for JSON batches.
std::string BrotliCompress(absl::string_view data, int quality = 5);

// kInvalidArgument if `data` is not a complete Brotli stream or would
// decompress to more than `max_size` bytes.
absl::StatusOr<std::string> BrotliDecompress(absl::string_view data, size_t max_size);

}  // namespace pulsesync

#endif  // PULSESYNC_COMMON_BROTLI_CODEC_H_

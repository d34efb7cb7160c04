#include "common/brotli_codec.h"

#include <brotli/decode.h>
#include <brotli/encode.h>

#include <memory>

#include "absl/strings/str_cat.h"

namespace pulsesync {

std::string BrotliCompress(absl::string_view data, int quality) {
  size_t out_size = BrotliEncoderMaxCompressedSize(data.size());
  if (out_size == 0) out_size = data.size() + 1024;
  std::string out(out_size, '\0');
  if (!BrotliEncoderCompress(quality, BROTLI_DEFAULT_WINDOW, BROTLI_MODE_GENERIC, data.size(),
                             reinterpret_cast<const uint8_t*>(data.data()), &out_size,
                             reinterpret_cast<uint8_t*>(out.data()))) {
    // Only fails when the output buffer is too small, which MaxCompressedSize rules out.
    return std::string();
  }
  out.resize(out_size);
  return out;
}

absl::StatusOr<std::string> BrotliDecompress(absl::string_view data, size_t max_size) {
  std::unique_ptr<BrotliDecoderState, decltype(&BrotliDecoderDestroyInstance)> state(
      BrotliDecoderCreateInstance(nullptr, nullptr, nullptr), &BrotliDecoderDestroyInstance);
  if (state == nullptr) return absl::ResourceExhaustedError("brotli: cannot allocate decoder");
  std::string out;
  const uint8_t* next_in = reinterpret_cast<const uint8_t*>(data.data());
  size_t avail_in = data.size();
  uint8_t buffer[16384];
  while (true) {
    uint8_t* next_out = buffer;
    size_t avail_out = sizeof(buffer);
    const BrotliDecoderResult r = BrotliDecoderDecompressStream(
        state.get(), &avail_in, &next_in, &avail_out, &next_out, nullptr);
    const size_t produced = sizeof(buffer) - avail_out;
    if (out.size() + produced > max_size) {
      return absl::InvalidArgumentError(
          absl::StrCat("brotli: decompressed data exceeds the limit of ", max_size, " bytes"));
    }
    out.append(reinterpret_cast<const char*>(buffer), produced);
    switch (r) {
      case BROTLI_DECODER_RESULT_SUCCESS:
        if (avail_in != 0) {
          return absl::InvalidArgumentError("brotli: trailing bytes after the compressed stream");
        }
        return out;
      case BROTLI_DECODER_RESULT_NEEDS_MORE_OUTPUT:
        continue;
      case BROTLI_DECODER_RESULT_NEEDS_MORE_INPUT:
        return absl::InvalidArgumentError("brotli: compressed stream is truncated");
      case BROTLI_DECODER_RESULT_ERROR:
      default:
        return absl::InvalidArgumentError(absl::StrCat(
            "brotli: corrupt stream (",
            BrotliDecoderErrorString(BrotliDecoderGetErrorCode(state.get())), ")"));
    }
  }
}

}  // namespace pulsesync

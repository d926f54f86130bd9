#include "filters/gossip/lzw_decoder.h"

#include <cstring>

namespace sidecrypt::filters::gossip {

namespace {

constexpr uint16_t kClear = 256;
constexpr uint16_t kEof = 257;
constexpr uint16_t kInvalidCode = 0xffff;
constexpr uint32_t kLitWidth = 8;

}  // namespace

bool LzwDecoder::flush(LzwSink& sink) {
  if (out_len_ == 0) {
    return true;
  }
  const bool more = sink.write(std::span<const uint8_t>(output_.data(), out_len_));
  out_len_ = 0;
  return more;
}

// Expands a table code (<= hi_) into output_: Go reader.go decode(), "case code <= r.hi".
void LzwDecoder::emit(uint16_t code) {
  // The expansion is built backwards at the end of output_, as Go does, then moved into place.
  size_t i = output_.size() - 1;
  uint16_t c = code;
  if (code == hi_ && last_ != kInvalidCode) {
    // code == hi expands to the last expansion followed by its own first byte.
    c = last_;
    while (c >= kClear) {
      c = prefix_[c];
    }
    output_[i--] = static_cast<uint8_t>(c);
    c = last_;
  }
  while (c >= kClear) {
    output_[i--] = suffix_[c];
    c = prefix_[c];
  }
  output_[i] = static_cast<uint8_t>(c);
  const size_t n = output_.size() - i;
  std::memmove(output_.data() + out_len_, output_.data() + i, n);
  out_len_ += n;
  if (last_ != kInvalidCode) {
    suffix_[hi_] = static_cast<uint8_t>(c);
    prefix_[hi_] = last_;
  }
}

LzwStatus LzwDecoder::decode(std::span<const uint8_t> in, LzwSink& sink) {
  uint32_t width = kLitWidth + 1;
  uint32_t overflow = 1u << width;
  hi_ = kEof;
  last_ = kInvalidCode;
  out_len_ = 0;
  prefix_.fill(0);
  suffix_.fill(0);
  uint32_t bits = 0;
  uint32_t nbits = 0;
  size_t pos = 0;
  for (;;) {
    while (nbits < width) {
      if (pos == in.size()) {
        flush(sink);
        return LzwStatus::Corrupt;  // Go: io.ErrUnexpectedEOF
      }
      bits |= static_cast<uint32_t>(in[pos++]) << nbits;
      nbits += 8;
    }
    const auto code = static_cast<uint16_t>(bits & ((1u << width) - 1));
    bits >>= width;
    nbits -= width;
    if (code < kClear) {
      output_[out_len_++] = static_cast<uint8_t>(code);
      if (last_ != kInvalidCode) {
        suffix_[hi_] = static_cast<uint8_t>(code);
        prefix_[hi_] = last_;
      }
    } else if (code == kClear) {
      width = kLitWidth + 1;
      hi_ = kEof;
      overflow = 1u << width;
      last_ = kInvalidCode;
      continue;
    } else if (code == kEof) {
      return flush(sink) ? LzwStatus::Ok : LzwStatus::Stopped;
    } else if (code <= hi_) {
      emit(code);
    } else {
      flush(sink);
      return LzwStatus::Corrupt;  // Go: "lzw: invalid code"
    }
    last_ = code;
    ++hi_;
    if (hi_ >= overflow) {
      if (width == kMaxWidth) {
        last_ = kInvalidCode;
        --hi_;
      } else {
        ++width;
        overflow = 1u << width;
      }
    }
    if (out_len_ >= kFlushAt && !flush(sink)) {
      return LzwStatus::Stopped;
    }
  }
}

}  // namespace sidecrypt::filters::gossip

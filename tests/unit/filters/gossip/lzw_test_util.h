#pragma once

// Test-side LZW helpers: a literal-only encoder (valid Go compress/lzw LSB/8 output that never
// references the table, enough to build compress messages around crafted payloads) and a
// decompressor built on the production decoder.

#include <catch2/catch.hpp>

#include <cstdint>
#include <span>
#include <vector>

#include "filters/gossip/lzw_decoder.h"
#include "filters/gossip/message_inspector.h"

namespace sidecrypt::test::gossip {

inline std::vector<uint8_t> lzwLiterals(std::span<const uint8_t> in) {
  std::vector<uint8_t> out;
  uint32_t width = 9;
  uint32_t hi = 257;
  uint64_t bits = 0;
  uint32_t nbits = 0;
  auto put = [&](uint32_t code) {
    bits |= static_cast<uint64_t>(code) << nbits;
    nbits += width;
    while (nbits >= 8) {
      out.push_back(static_cast<uint8_t>(bits));
      bits >>= 8;
      nbits -= 8;
    }
  };
  for (uint8_t b : in) {
    put(b);
    // Mirror the decoder's code-width schedule (Go reader.go).
    if (++hi >= (1u << width)) {
      if (width == 12) {
        --hi;
      } else {
        ++width;
      }
    }
  }
  put(257);  // EOF
  if (nbits > 0) {
    out.push_back(static_cast<uint8_t>(bits));
  }
  return out;
}

// [9] + {"Algo": 0, "Buf": raw32(lzw)} around `plain`.
inline std::vector<uint8_t> compressMessage(std::span<const uint8_t> plain) {
  auto lzw = lzwLiterals(plain);
  std::vector<uint8_t> msg = {9, 0x82, 0xa4, 'A', 'l', 'g', 'o', 0x00, 0xa3, 'B', 'u', 'f', 0xdb};
  const auto n = static_cast<uint32_t>(lzw.size());
  for (int s = 24; s >= 0; s -= 8) {
    msg.push_back(static_cast<uint8_t>(n >> s));
  }
  msg.insert(msg.end(), lzw.begin(), lzw.end());
  return msg;
}

class VectorSink final : public filters::gossip::LzwSink {
 public:
  bool write(std::span<const uint8_t> b) override {
    out.insert(out.end(), b.begin(), b.end());
    return true;
  }
  std::vector<uint8_t> out;
};

// Undoes a compress message ([9]{Algo, Buf}) with the production decoder.
inline std::vector<uint8_t> decompressMessage(std::span<const uint8_t> msg) {
  REQUIRE(!msg.empty());
  REQUIRE(msg[0] == 9);
  std::span<const uint8_t> buf;
  REQUIRE(filters::gossip::parseCompress(msg.subspan(1), buf));
  filters::gossip::LzwDecoder d;
  VectorSink sink;
  REQUIRE(d.decode(buf, sink) == filters::gossip::LzwStatus::Ok);
  return sink.out;
}

}  // namespace sidecrypt::test::gossip

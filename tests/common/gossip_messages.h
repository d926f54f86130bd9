#pragma once

// Hand-built memberlist messages shared by the unit tests and the benchmarks.

#include <cstdint>
#include <span>
#include <vector>

namespace sidecrypt::test {

// The stream form of a user message (memberlist sendUserMsg): [8][msgpack {UserMsgLen: n}][n
// bytes], the length as a msgpack uint16 (uint32 from 64 KiB on), as go-msgpack writes it for
// these sizes.
inline std::vector<uint8_t> streamUserMessage(std::span<const uint8_t> payload) {
  std::vector<uint8_t> out = {8, 0x81, 0xaa, 'U', 's', 'e', 'r', 'M', 's', 'g', 'L', 'e', 'n'};
  const size_t n = payload.size();
  if (n <= 0xffff) {
    out.insert(out.end(), {0xcd, static_cast<uint8_t>(n >> 8), static_cast<uint8_t>(n)});
  } else {
    out.insert(out.end(), {0xce, static_cast<uint8_t>(n >> 24), static_cast<uint8_t>(n >> 16),
                           static_cast<uint8_t>(n >> 8), static_cast<uint8_t>(n)});
  }
  out.insert(out.end(), payload.begin(), payload.end());
  return out;
}

}  // namespace sidecrypt::test

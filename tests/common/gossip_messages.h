#pragma once

// Hand-built memberlist messages shared by the unit tests and the benchmarks.

#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

namespace sidecrypt::test {

// The stream form of a user message (memberlist sendUserMsg): [8][msgpack {UserMsgLen: n}][n
// bytes], the length as a msgpack uint16 (uint32 from 64 KiB on), as go-msgpack writes it for
// these sizes.
inline std::vector<uint8_t> streamUserMessage(std::span<const uint8_t> payload) {
  // Sized once and filled in place: inserting initializer lists into the growing vector made
  // gcc 12 at -O3 report a false -Warray-bounds on the reallocation path.
  static constexpr std::array<uint8_t, 13> kHeader = {8,   0x81, 0xaa, 'U', 's', 'e', 'r',
                                                      'M', 's',  'g',  'L', 'e', 'n'};
  const size_t n = payload.size();
  const size_t len_bytes = n <= 0xffff ? 2 : 4;
  std::vector<uint8_t> out(kHeader.size() + 1 + len_bytes + n);
  auto it = std::copy(kHeader.begin(), kHeader.end(), out.begin());
  *it++ = len_bytes == 2 ? 0xcd : 0xce;
  for (size_t i = len_bytes; i-- > 0;) {
    *it++ = static_cast<uint8_t>(n >> (8 * i));
  }
  std::copy(payload.begin(), payload.end(), it);
  return out;
}

}  // namespace sidecrypt::test

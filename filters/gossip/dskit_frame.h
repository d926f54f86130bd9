#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

namespace sidecrypt::filters::gossip {

// Grafana dskit's TCP-only memberlist transport (docs/spec/dskit-transport.md): every connection
// starts with a type byte; a packet connection then carries [n][address][payload][MD5(payload)]
// up to the dialler's FIN, a stream connection is a memberlist stream.
inline constexpr uint8_t kDskitPacket = 1;
inline constexpr uint8_t kDskitStream = 2;
inline constexpr size_t kDskitDigestBytes = 16;
inline constexpr size_t kDskitMaxAddressBytes = 255;

// dskit reads a packet with no limit (docs/spec/dskit-transport.md §3); sidecrypt bounds it. dskit
// packs up to memberlist's UDPBufferSize, 10 MiB: the default leaves room for the frame around it.
struct DskitLimits {
  uint64_t max_packet_bytes = uint64_t{16} * 1024 * 1024;  // the whole connection, header included
};

enum class DskitStatus : uint8_t {
  NeedMore,  // not decided yet: give more bytes (or the FIN)
  Stream,    // a stream: header_length bytes ([2]) precede a memberlist stream
  Packet,    // a complete packet (only once the dialler ended)
  Error,
};

enum class DskitError : uint8_t {
  None,
  UnknownType,   // the first byte is neither 1 nor 2 (dskit closes; 0x16 is dskit's own TLS)
  Truncated,     // the dialler ended inside the type byte or the address
  ShortPayload,  // fewer than 16 bytes after the address: dskit drops it
  TooLarge,      // over DskitLimits::max_packet_bytes
};
const char* describe(DskitError e);

struct DskitParse {
  DskitStatus status = DskitStatus::NeedMore;
  DskitError error = DskitError::None;
  size_t header_length = 0;  // Stream: 1; Packet (and NeedMore once known): 2 + address length
  // Packet only: views into the parsed input.
  std::span<const uint8_t> address;
  std::span<const uint8_t> payload;
  std::span<const uint8_t> digest;
  bool digest_ok = false;  // MD5(payload) == digest (dskit only logs a mismatch)
};

// Decides on everything the dialler sent so far (`in`, the whole connection from its first byte;
// `ended`: the dialler's FIN arrived). Before the FIN it only reads the header and checks the
// size, in O(1); the digest is computed once, when the packet is complete. Never reads past `in`.
DskitParse parseDskit(std::span<const uint8_t> in, bool ended, const DskitLimits& limits = {});

// MD5 as dskit appends it.
void dskitDigest(std::span<const uint8_t> payload, std::span<uint8_t, kDskitDigestBytes> out);

// Writes a packet connection's bytes as dskit's writeTo does: [1][n][address][payload][MD5].
// Returns false (and writes nothing) when the address is longer than 255 bytes.
bool appendDskitPacket(std::span<const uint8_t> address, std::span<const uint8_t> payload,
                       std::vector<uint8_t>& out);

}  // namespace sidecrypt::filters::gossip

// Names and small text helpers of the message walker (no socket headers: filters/ is
// socket-free, so IP addresses are formatted here rather than with inet_ntop).
#include <algorithm>
#include <array>
#include <cstdio>

#include "filters/gossip/message_walker.h"

namespace sidecrypt::filters::gossip {

namespace {

constexpr std::array<const char*, 10> kSerfNames = {
    "leave",       "join",          "pushPull",         "userEvent",
    "query",       "queryResponse", "conflictResponse", "keyRequest",
    "keyResponse", "relay",
};

constexpr std::array<uint32_t, 256> makeCrcTable() {
  std::array<uint32_t, 256> t{};
  for (uint32_t i = 0; i < 256; ++i) {
    uint32_t c = i;
    for (int k = 0; k < 8; ++k) {
      c = (c & 1) != 0 ? 0xedb88320u ^ (c >> 1) : c >> 1;
    }
    t[i] = c;
  }
  return t;
}
constexpr std::array<uint32_t, 256> kCrcTable = makeCrcTable();

class TextOut {
 public:
  explicit TextOut(IpText& t) : t_(t) {}
  void put(const char* fmt, unsigned v) {
    const size_t room = t_.buf.size() - t_.len;
    const int n = std::snprintf(t_.buf.data() + t_.len, room, fmt, v);
    if (n > 0) {
      t_.len += std::min(static_cast<size_t>(n), room - 1);
    }
  }
  void str(const char* s) {
    while (*s != '\0' && t_.len + 1 < t_.buf.size()) {
      t_.buf[t_.len++] = *s++;
    }
  }

 private:
  IpText& t_;
};

void dotted(TextOut& out, std::span<const uint8_t> a) {
  out.put("%u", a[0]);
  for (size_t i = 1; i < 4; ++i) {
    out.put(".%u", a[i]);
  }
}

void ipv6(TextOut& out, std::span<const uint8_t> a) {
  std::array<unsigned, 8> g{};
  for (size_t i = 0; i < 8; ++i) {
    g[i] = (static_cast<unsigned>(a[2 * i]) << 8) | a[2 * i + 1];
  }
  // RFC 5952: the longest run (>= 2) of zero groups becomes "::" (the first one on a tie).
  size_t best = 8;
  size_t best_len = 1;
  for (size_t i = 0; i < 8;) {
    size_t j = i;
    while (j < 8 && g[j] == 0) {
      ++j;
    }
    if (j - i > best_len) {
      best = i;
      best_len = j - i;
    }
    i = j == i ? i + 1 : j;
  }
  const bool mapped = best == 0 && best_len == 5 && g[5] == 0xffff;
  for (size_t i = 0; i < 8; ++i) {
    if (i == best) {
      out.str("::");
      i += best_len - 1;
      continue;
    }
    if (mapped && i == 6) {
      out.str(":");
      dotted(out, a.subspan(12));
      return;
    }
    out.put(i == 0 || i == best + best_len ? "%x" : ":%x", g[i]);
  }
}

}  // namespace

const char* serfTypeName(int type) {
  if (type >= 0 && static_cast<size_t>(type) < kSerfNames.size()) {
    return kSerfNames[static_cast<size_t>(type)];
  }
  return "unknown";
}

const char* nodeStateName(int64_t state) {
  switch (state) {
    case 0:
      return "alive";
    case 1:
      return "suspect";
    case 2:
      return "dead";
    case 3:
      return "left";
    default:
      return "unknown";
  }
}

IpText ipText(std::span<const uint8_t> addr) {
  IpText t;
  TextOut out(t);
  if (addr.size() == 4) {
    dotted(out, addr);
  } else if (addr.size() == 16) {
    ipv6(out, addr);
  } else {
    out.str(addr.empty() ? "-" : "hex:");
    for (size_t i = 0; i < addr.size() && t.len + 3 < t.buf.size(); ++i) {
      out.put("%02x", addr[i]);
    }
  }
  return t;
}

uint32_t crc32Ieee(std::span<const uint8_t> data) {
  uint32_t c = 0xffffffffu;
  for (const uint8_t b : data) {
    c = kCrcTable[(c ^ b) & 0xff] ^ (c >> 8);
  }
  return c ^ 0xffffffffu;
}

const char* describe(WalkError e) {
  switch (e) {
    case WalkError::None:
      return "ok";
    case WalkError::Empty:
      return "empty message";
    case WalkError::UnsupportedType:
      return "message type not supported here";
    case WalkError::BadCrc:
      return "invalid checksum";
    case WalkError::CompoundTable:
      return "compound: truncated length table";
    case WalkError::CompoundTruncated:
      return "compound: truncated parts dropped";
    case WalkError::CompoundEmptyPart:
      return "compound: empty part";
    case WalkError::BadCompress:
      return "compress: undecodable message or unknown algorithm";
    case WalkError::CorruptLzw:
      return "compress: corrupt LZW stream";
    case WalkError::DecompressedEmpty:
      return "compress: decodes to nothing";
    case WalkError::DecompressedTooLarge:
      return "compress: decompressed size over the limit";
    case WalkError::TooDeep:
      return "nesting too deep";
    case WalkError::TooManyMessages:
      return "too many messages";
    case WalkError::BadBody:
      return "undecodable msgpack body";
    case WalkError::TooManyNodes:
      return "push/pull: too many node states";
    case WalkError::TruncatedData:
      return "truncated raw data";
    case WalkError::BadFrame:
      return "encrypted frame length does not match";
  }
  return "unknown error";
}

}  // namespace sidecrypt::filters::gossip

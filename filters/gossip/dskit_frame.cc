#include "filters/gossip/dskit_frame.h"

#include "filters/common/boringssl.h"

#include <openssl/md5.h>

#include <algorithm>

namespace sidecrypt::filters::gossip {

const char* describe(DskitError e) {
  switch (e) {
    case DskitError::None:
      return "none";
    case DskitError::UnknownType:
      return "not a dskit connection (first byte is neither packet nor stream)";
    case DskitError::Truncated:
      return "dskit packet ended inside its header";
    case DskitError::ShortPayload:
      return "dskit packet shorter than its digest";
    case DskitError::TooLarge:
      return "dskit packet over the size limit";
  }
  return "unknown";
}

void dskitDigest(std::span<const uint8_t> payload, std::span<uint8_t, kDskitDigestBytes> out) {
  static_assert(kDskitDigestBytes == MD5_DIGEST_LENGTH);
  MD5(payload.data(), payload.size(), out.data());
}

DskitParse parseDskit(std::span<const uint8_t> in, bool ended, const DskitLimits& limits) {
  DskitParse r;
  auto fail = [&r](DskitError e) {
    r.status = DskitStatus::Error;
    r.error = e;
    return r;
  };
  if (in.empty()) {
    return ended ? fail(DskitError::Truncated) : r;
  }
  if (in[0] == kDskitStream) {
    r.status = DskitStatus::Stream;
    r.header_length = 1;
    return r;
  }
  if (in[0] != kDskitPacket) {
    return fail(DskitError::UnknownType);
  }
  if (in.size() > limits.max_packet_bytes) {
    return fail(DskitError::TooLarge);
  }
  if (in.size() < 2) {
    return ended ? fail(DskitError::Truncated) : r;
  }
  r.header_length = 2 + size_t{in[1]};
  if (in.size() < r.header_length) {
    return ended ? fail(DskitError::Truncated) : r;
  }
  if (!ended) {
    return r;
  }
  const auto rest = in.subspan(r.header_length);
  if (rest.size() < kDskitDigestBytes) {
    return fail(DskitError::ShortPayload);
  }
  r.status = DskitStatus::Packet;
  r.address = in.subspan(2, in[1]);
  r.payload = rest.first(rest.size() - kDskitDigestBytes);
  r.digest = rest.last(kDskitDigestBytes);
  uint8_t sum[kDskitDigestBytes];
  dskitDigest(r.payload, sum);
  r.digest_ok = std::equal(r.digest.begin(), r.digest.end(), sum);
  return r;
}

bool appendDskitPacket(std::span<const uint8_t> address, std::span<const uint8_t> payload,
                       std::vector<uint8_t>& out) {
  if (address.size() > kDskitMaxAddressBytes) {
    return false;
  }
  out.reserve(out.size() + 2 + address.size() + payload.size() + kDskitDigestBytes);
  out.push_back(kDskitPacket);
  out.push_back(static_cast<uint8_t>(address.size()));
  out.insert(out.end(), address.begin(), address.end());
  out.insert(out.end(), payload.begin(), payload.end());
  uint8_t sum[kDskitDigestBytes];
  dskitDigest(payload, sum);
  out.insert(out.end(), std::begin(sum), std::end(sum));
  return true;
}

}  // namespace sidecrypt::filters::gossip

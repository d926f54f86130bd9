#include "filters/gossip/gossip_codec.h"

#include <sodium.h>

#include <algorithm>
#include <array>
#include <cstdio>
#include <cstring>

#include "filters/common/secret_bytes.h"

namespace sidecrypt::filters::gossip {

namespace {

// AES block: PKCS#7 pads to a multiple of it (docs/spec/gossip-wire.md §3.3).
constexpr size_t kBlock = 16;

// Nonces from the system CSPRNG (getrandom through libsodium), fetched a pool at a time: one
// system call per 341 sealed packets instead of one per packet (the call cost more than sealing
// a small packet). Each byte of the pool is used once; the pool is per thread, so no two threads
// can hand out the same bytes.
class SodiumNonceSource final : public NonceSource {
 public:
  SodiumNonceSource() { ensureSodium(); }
  void fill(std::span<uint8_t, keyring::kNonceBytes> nonce) override {
    thread_local Pool pool;
    if (pool.used + nonce.size() > pool.bytes.size()) {
      randombytes_buf(pool.bytes.data(), pool.bytes.size());
      pool.used = 0;
    }
    std::memcpy(nonce.data(), pool.bytes.data() + pool.used, nonce.size());
    pool.used += nonce.size();
  }

 private:
  struct Pool {
    std::array<uint8_t, keyring::kNonceBytes * 341> bytes{};
    size_t used = sizeof(bytes);  // empty: the first fill() draws a full pool
  };
};

void putU32(uint8_t* p, uint32_t v) {
  p[0] = static_cast<uint8_t>(v >> 24);
  p[1] = static_cast<uint8_t>(v >> 16);
  p[2] = static_cast<uint8_t>(v >> 8);
  p[3] = static_cast<uint8_t>(v);
}

// PKCS#7 as memberlist writes it: 1..16 bytes, each equal to the count. 0.2.2's pkcs7decode
// trusts the last byte blindly; we require the exact shape a real sender produces.
bool validPadding(std::span<const uint8_t> plain, size_t& pad) {
  if (plain.empty()) {
    return false;
  }
  pad = plain.back();
  if (pad < 1 || pad > kBlock || pad > plain.size()) {
    return false;
  }
  uint8_t diff = 0;
  for (size_t i = plain.size() - pad; i < plain.size(); ++i) {
    diff |= static_cast<uint8_t>(plain[i] ^ plain.back());
  }
  return diff == 0;
}

}  // namespace

NonceSource& systemNonceSource() {
  static SodiumNonceSource source;
  return source;
}

size_t sealedLength(EncryptionVersion version, size_t plain_len) {
  if (version == EncryptionVersion::V1) {
    return kV1Overhead + plain_len;
  }
  return kV1Overhead + plain_len + (kBlock - plain_len % kBlock);
}

size_t sealPayload(const keyring::AeadKey& key, EncryptionVersion version, NonceSource& nonces,
                   std::span<const uint8_t> plain, std::span<const uint8_t> aad,
                   std::span<uint8_t> out) {
  const size_t total = sealedLength(version, plain.size());
  if (out.size() < total) {
    return 0;
  }
  uint8_t* body = out.data() + kSealHeaderBytes;
  if (plain.data() != body && !plain.empty()) {
    std::memmove(body, plain.data(), plain.size());
  }
  size_t body_len = plain.size();
  if (version == EncryptionVersion::V0) {
    const size_t pad = kBlock - body_len % kBlock;
    std::memset(body + body_len, static_cast<int>(pad), pad);
    body_len += pad;
  }
  out[0] = static_cast<uint8_t>(version);
  std::span<uint8_t, keyring::kNonceBytes> nonce(out.data() + 1, keyring::kNonceBytes);
  nonces.fill(nonce);
  // Sealing in place (in == out exactly) is supported by AeadKey::seal.
  const size_t n = key.seal(nonce, std::span<const uint8_t>(body, body_len), aad,
                            out.subspan(kSealHeaderBytes, body_len + keyring::kTagBytes));
  return n == 0 ? 0 : kSealHeaderBytes + n;
}

OpenResult openPayload(const keyring::KeySet& keys, std::span<const uint8_t> sealed,
                       std::span<const uint8_t> aad, std::span<uint8_t> out) {
  OpenResult r;
  if (sealed.empty()) {
    r.error = OpenError::Empty;
    return r;
  }
  r.version = sealed[0];
  if (r.version > 1) {
    r.error = OpenError::UnsupportedVersion;
    return r;
  }
  if (sealed.size() < (r.version == 1 ? kV1Overhead : kV0MinSealed)) {
    r.error = OpenError::TooSmall;
    return r;
  }
  const auto ciphertext = sealed.subspan(kSealHeaderBytes);
  const size_t plain_max = ciphertext.size() - keyring::kTagBytes;
  if (out.size() < plain_max) {
    r.error = OpenError::OutputTooSmall;
    return r;
  }
  std::span<const uint8_t, keyring::kNonceBytes> nonce(sealed.data() + 1, keyring::kNonceBytes);
  for (size_t i = 0; i < keys.size(); ++i) {
    const ptrdiff_t n = keys.at(i).open(nonce, ciphertext, aad, out.first(plain_max));
    if (n < 0) {
      continue;
    }
    r.key_index = static_cast<int>(i);
    r.length = static_cast<size_t>(n);
    size_t pad = 0;
    if (r.version == 0) {
      if (!validPadding(out.first(r.length), pad)) {
        r.error = OpenError::BadPadding;
        r.length = 0;
        return r;
      }
      r.length -= pad;
    }
    return r;
  }
  r.error = OpenError::NoKey;
  return r;
}

const char* describe(OpenError e) {
  switch (e) {
    case OpenError::None:
      return "ok";
    case OpenError::Empty:
      return "Cannot decrypt empty payload";
    case OpenError::UnsupportedVersion:
      return "Unsupported encryption version";
    case OpenError::TooSmall:
      return "Payload is too small to decrypt";
    case OpenError::NoKey:
      return "No installed keys could decrypt the message";
    case OpenError::BadPadding:
      return "invalid PKCS#7 padding after decryption";
    case OpenError::OutputTooSmall:
      return "output buffer too small for the plaintext";
  }
  return "unknown";
}

size_t formatOpenError(const OpenResult& r, size_t sealed_len, std::span<char> out) {
  int n = 0;
  switch (r.error) {
    case OpenError::UnsupportedVersion:
      n = std::snprintf(out.data(), out.size(), "%s %u", describe(r.error), r.version);
      break;
    case OpenError::TooSmall:
      n = std::snprintf(out.data(), out.size(), "%s: %zu", describe(r.error), sealed_len);
      break;
    default:
      n = std::snprintf(out.data(), out.size(), "%s", describe(r.error));
      break;
  }
  if (n < 0) {
    return 0;
  }
  return std::min(static_cast<size_t>(n), out.empty() ? 0 : out.size() - 1);
}

LabelHeader parseLabelHeader(std::span<const uint8_t> in) {
  LabelHeader h;
  if (in.empty() || in[0] != kHasLabelMsg) {
    return h;
  }
  if (in.size() < 2) {
    h.status = LabelHeader::Status::Incomplete;
    return h;
  }
  const size_t len = in[1];
  if (len == 0) {
    h.status = LabelHeader::Status::Malformed;  // HEAD: "label header cannot be empty"
    return h;
  }
  if (in.size() < 2 + len) {
    h.status = LabelHeader::Status::Incomplete;
    return h;
  }
  h.status = LabelHeader::Status::Present;
  h.label = in.subspan(2, len);
  h.header_len = 2 + len;
  return h;
}

size_t labelHeaderLength(std::string_view label) {
  return label.empty() ? 0 : 2 + std::min(label.size(), kMaxLabelBytes);
}

size_t writeLabelHeader(std::string_view label, std::span<uint8_t> out) {
  const size_t n = labelHeaderLength(label);
  if (n == 0 || out.size() < n) {
    return 0;
  }
  out[0] = kHasLabelMsg;
  out[1] = static_cast<uint8_t>(n - 2);
  std::memcpy(out.data() + 2, label.data(), n - 2);
  return n;
}

size_t frameLength(EncryptionVersion version, size_t plain_len) {
  return kFrameHeaderBytes + sealedLength(version, plain_len);
}

namespace {

// AAD for stream frames: the 5 header bytes, then the label (HEAD, docs/spec/gossip-wire.md §3.6).
// Labels are <= 255.
size_t frameAad(std::span<const uint8_t> header, std::string_view label,
                std::array<uint8_t, kFrameHeaderBytes + kMaxLabelBytes>& aad) {
  const size_t label_len = std::min(label.size(), kMaxLabelBytes);
  std::memcpy(aad.data(), header.data(), kFrameHeaderBytes);
  if (label_len > 0) {
    std::memcpy(aad.data() + kFrameHeaderBytes, label.data(), label_len);
  }
  return kFrameHeaderBytes + label_len;
}

}  // namespace

size_t sealFrame(const keyring::AeadKey& key, EncryptionVersion version, NonceSource& nonces,
                 std::span<const uint8_t> plain, std::string_view label, std::span<uint8_t> out) {
  const size_t sealed_len = sealedLength(version, plain.size());
  if (out.size() < kFrameHeaderBytes + sealed_len || sealed_len > kMaxFrameBytes) {
    return 0;
  }
  out[0] = kEncryptMsg;
  putU32(out.data() + 1, static_cast<uint32_t>(sealed_len));
  std::array<uint8_t, kFrameHeaderBytes + kMaxLabelBytes> aad{};
  const size_t aad_len = frameAad(out.first(kFrameHeaderBytes), label, aad);
  const size_t n = sealPayload(key, version, nonces, plain, std::span(aad).first(aad_len),
                               out.subspan(kFrameHeaderBytes));
  return n == 0 ? 0 : kFrameHeaderBytes + n;
}

OpenResult openFrame(const keyring::KeySet& keys, std::span<const uint8_t> frame,
                     std::string_view label, std::span<uint8_t> out) {
  if (frame.size() < kFrameHeaderBytes) {
    OpenResult r;
    r.error = OpenError::Empty;
    return r;
  }
  std::array<uint8_t, kFrameHeaderBytes + kMaxLabelBytes> aad{};
  const size_t aad_len = frameAad(frame.first(kFrameHeaderBytes), label, aad);
  return openPayload(keys, frame.subspan(kFrameHeaderBytes), std::span(aad).first(aad_len), out);
}

size_t encodeErrMsg(std::string_view text, std::span<uint8_t> out) {
  static constexpr uint8_t kPrefix[] = {kErrMsg, 0x81, 0xa5, 'E', 'r', 'r', 'o', 'r'};
  size_t hdr = 1;
  if (text.size() > 31) {
    hdr = text.size() <= 0xffff ? 3 : 5;
  }
  const size_t total = sizeof(kPrefix) + hdr + text.size();
  if (out.size() < total) {
    return 0;
  }
  std::memcpy(out.data(), kPrefix, sizeof(kPrefix));
  uint8_t* p = out.data() + sizeof(kPrefix);
  if (hdr == 1) {
    p[0] = static_cast<uint8_t>(0xa0 | text.size());
  } else if (hdr == 3) {
    p[0] = 0xda;
    p[1] = static_cast<uint8_t>(text.size() >> 8);
    p[2] = static_cast<uint8_t>(text.size());
  } else {
    p[0] = 0xdb;
    putU32(p + 1, static_cast<uint32_t>(text.size()));
  }
  if (!text.empty()) {
    std::memcpy(p + hdr, text.data(), text.size());
  }
  return total;
}

}  // namespace sidecrypt::filters::gossip
